/*
 * fuzz_config.c - the configuration parser (policy/parse.c, through
 * policy_load) on arbitrary text, and on what it accepts the queries the
 * daemon makes of a snapshot (policy_domain_by_name).
 *
 * Nothing may be looked up on the network while fuzzing: this program
 * defines getaddrinfo() itself, answering EAI_NONAME for every name, so
 * a "server" or "relay-host" given by name fails to load as it would
 * without DNS while numeric addresses load as usual.  The definition in
 * the executable takes the place of the C library's (and of the
 * sanitizer's interceptor, a weak symbol) for parse.c's call.
 */
#include <sys/socket.h>
#include <netdb.h>
#include <stdint.h>
#include <string.h>

#include "../../common/addr.h"
#include "../../policy/policy_local.h"
#include "fuzz.h"

int	getaddrinfo(const char *, const char *, const struct addrinfo *,
	    struct addrinfo **);

int
getaddrinfo(const char *node, const char *service,
    const struct addrinfo *hints, struct addrinfo **res)
{
	*res = NULL;
	return EAI_NONAME;
}

static char	conf[256];
static struct sockaddr_storage client, server;

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	char path[256];

	snprintf(conf, sizeof(conf), "%s/mxbridge.conf", fuzz_tmpdir());
	/* for "auth FILE" of relay-host, relative to the config's folder */
	snprintf(path, sizeof(path), "%s/relay.secret", fuzz_tmpdir());
	fuzz_write(path, "user secret\n", 12);
	if (addr_parse("192.0.2.101", 40000, &client) == -1 ||
	    addr_parse("2001:db8::25", 25, &server) == -1)
		abort();
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct policy *pol;
	char err[1024];
	struct policy_class cls;
	const char *msg;
	size_t i;

	if (size > 65536)
		return 0;
	fuzz_write(conf, data, size);
	err[0] = 'x';
	if ((pol = policy_load(conf, err, sizeof(err))) == NULL) {
		if (err[0] == '\0' || memchr(err, '\0', sizeof(err)) == NULL) {
			dprintf(fuzz_errfd, "fuzz_config: refused without a "
			    "reason\n");
			abort();
		}
		return 0;
	}
	for (i = 0; i < pol->ndomains; i++) {
		if (policy_domain_by_name(pol, pol->domains[i].name) == NULL)
			abort();
		if (pol->domains[i].naddr > 0) {
			(void)policy_domain_by_server(pol,
			    (struct sockaddr *)&pol->domains[i].addr[0]);
			(void)policy_classify(pol, (struct sockaddr *)&client,
			    (struct sockaddr *)&pol->domains[i].addr[0],
			    i < pol->nports ? pol->ports[i].name : "", &cls);
		}
		(void)policy_check_rcpt(pol, (struct sockaddr *)&client,
		    POLICY_DIR_IN, "a@example.org", "b@example.com", 0, &msg);
	}
	(void)policy_classify(pol, (struct sockaddr *)&client,
	    (struct sockaddr *)&server, "p0", &cls);
	(void)policy_classify_to_box(pol, "p1", &cls);
	(void)policy_route_rcpt(pol, POLICY_DIR_OUT, "example.com",
	    (struct sockaddr *)&server);
	policy_unref(pol);
	return 0;
}
