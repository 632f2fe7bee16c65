/*
 * test_policy.c - unit tests of policy/: the parser (the shipped
 * examples, defaults, every error message and every range check) and
 * the decisions (classify, honour, route, relay check with the open-relay
 * battery), and that mxbridge.conf(5) documents every keyword and shows
 * the examples verbatim.  Table-driven: a failing row names itself.
 * Run from the source root, or set MXB_SRCDIR.
 */
#include <sys/socket.h>
#include <sys/stat.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "testutil.h"
#include "../../common/smtp.h"
#include "../../policy/policy.h"
#include "../../policy/policy_local.h"

#define N(a)	(sizeof(a) / sizeof((a)[0]))
#define UNUSED	__attribute__((unused))

/* write_tmp - text into a new temporary file; its name into path */
static void
write_tmp(const char *text, char *path, size_t len)
{
	int fd;

	snprintf(path, len, "/tmp/mxb-test-XXXXXX");
	fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
}

/* what the last load_text() logged (warnings), NUL-terminated */
static char load_log[4096];

/*
 * load_text - parse a config given as a string; err gets the message,
 * load_log what the parser logged (stderr is caught for the load)
 */
static struct policy *
load_text(const char *text, char *path, size_t pathlen, char *err,
    size_t errlen)
{
	struct policy *pol;
	char logpath[64];
	ssize_t n;
	int fd, saved;

	write_tmp("", logpath, sizeof(logpath));
	fd = open(logpath, O_RDWR);
	assert_true(fd >= 0);
	unlink(logpath);
	write_tmp(text, path, pathlen);
	fflush(stderr);
	saved = dup(2);
	assert_true(saved >= 0 && dup2(fd, 2) == 2);
	pol = policy_load(path, err, errlen);
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	unlink(path);
	n = pread(fd, load_log, sizeof(load_log) - 1, 0);
	load_log[n > 0 ? n : 0] = '\0';
	close(fd);
	return pol;
}

/* must_load - a config that has to parse */
static struct policy *
must_load(const char *text)
{
	char path[64], err[512];
	struct policy *pol;

	pol = load_text(text, path, sizeof(path), err, sizeof(err));
	if (pol == NULL)
		fail_msg("config did not parse: %s\n--\n%s", err, text);
	return pol;
}

/* sa - a socket address from "ip" and a port */
static struct sockaddr_storage
sa(const char *ip, uint16_t port)
{
	struct sockaddr_storage ss;
	struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

	memset(&ss, 0, sizeof(ss));
	if (inet_pton(AF_INET, ip, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
	} else if (inet_pton(AF_INET6, ip, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
	} else
		fail_msg("bad test address %s", ip);
	return ss;
}

#define SA(s)	((struct sockaddr *)&(s))

/*
 * The shipped examples
 */

static void
load_example(const char *name, struct policy **out)
{
	char path[1100], err[512];

	snprintf(path, sizeof(path), "%s/policy/examples/%s", srcdir(), name);
	*out = policy_load(path, err, sizeof(err));
	if (*out == NULL)
		fail_msg("%s: %s", name, err);
}

static void
test_example_minimal(void **state UNUSED)
{
	struct policy *pol;

	load_example("minimal.conf", &pol);
	assert_int_equal(pol->ndomains, 1);
	assert_string_equal(pol->domains[0].name, "example.com");
	assert_int_equal(pol->domains[0].naddr, 1);
	assert_int_equal(pol->domains[0].port, 25);
	assert_int_equal(pol->nrules, 2);
	assert_int_equal(pol->starttls[POLICY_DIR_IN], POLICY_TLS_STRIP);
	assert_null(pol->relay.host);
	policy_unref(pol);
}

static void
test_example_isp(void **state UNUSED)
{
	struct sockaddr_storage c = sa("192.0.2.5", 40000);
	struct sockaddr_storage bad = sa("192.0.2.200", 40000);
	struct policy *pol;

	load_example("isp.conf", &pol);
	assert_int_equal(pol->nports, 2);
	assert_int_equal(policy_honour_client_server(pol, SA(c), "p0"), 1);
	assert_int_equal(policy_honour_client_server(pol, SA(bad), "p0"), 0);
	assert_int_equal(pol->domains[0].hide_box, 1);
	assert_int_equal(pol->limits.conn_rate, 30);
	assert_int_equal(pol->limits.conn_rate_window, 60);
	assert_int_equal(pol->limits.size, 25 << 20);
	policy_unref(pol);
}

static void
test_example_failclosed(void **state UNUSED)
{
	struct sockaddr_storage c = sa("192.0.2.5", 40000);
	struct sockaddr_storage o = sa("203.0.113.5", 40000);
	struct policy *pol;
	const char *msg;

	load_example("failclosed-relayhost.conf", &pol);
	assert_string_equal(pol->relay.host, "192.0.2.30");
	assert_int_equal(pol->relay.port, 587);
	assert_int_equal(pol->relay.tls, POLICY_UPTLS_STARTTLS);
	assert_string_equal(pol->relay.auth_user, "mxbridge");
	assert_string_equal(pol->relay.auth_pass, "example-secret");
	assert_int_equal(pol->starttls[POLICY_DIR_OUT], POLICY_TLS_REQUIRE);
	assert_int_equal(pol->default_action[POLICY_DIR_IN], POLICY_DROP);
	assert_int_equal(pol->default_honour, 0);
	/* local networks relay out; anybody else only to protected domains */
	assert_int_equal(policy_check_rcpt(pol, SA(c), POLICY_DIR_OUT,
	    "alice@example.com", "bob@other.net", 0, &msg), POLICY_RELAY);
	assert_int_equal(policy_check_rcpt(pol, SA(o), POLICY_DIR_OUT,
	    "alice@example.com", "bob@other.net", 0, &msg), POLICY_REJECT);
	assert_string_equal(msg, "5.7.1 Relay access denied");
	assert_int_equal(policy_check_rcpt(pol, SA(o), POLICY_DIR_IN,
	    "bob@other.net", "alice@example.com", 0, &msg), POLICY_RELAY);
	assert_int_equal(policy_route_rcpt(pol, POLICY_DIR_OUT, "other.net",
	    NULL), POLICY_ROUTE_RELAYHOST);
	policy_unref(pol);
}

/*
 * Defaults and values
 */

/* policy_workers: N as written; auto the online cores, within the queues */
static void
test_workers(void **state UNUSED)
{
	struct policy *pol;
	long cores = sysconf(_SC_NPROCESSORS_ONLN);

	assert_int_equal(policy_workers(NULL), 1);
	pol = must_load("workers 5\n");
	assert_int_equal(policy_workers(pol), 5);
	policy_unref(pol);
	pol = must_load("workers auto\n");
	assert_int_equal(policy_workers(pol), cores < 1 ? 1 :
	    cores > POLICY_MAXWORKERS ? POLICY_MAXWORKERS : cores);
	policy_unref(pol);
	/* auto never reaches past queue 65535 */
	pol = must_load("workers auto\nqueue-number 65535\n");
	assert_int_equal(policy_workers(pol), 1);
	policy_unref(pol);
}

/* classifier: kernel (the default) or queue, nothing else */
static void
test_classifier(void **state UNUSED)
{
	struct policy *pol;
	char path[64], err[256];

	pol = must_load("# nothing\n");
	assert_int_equal(pol->classifier, POLICY_CLASSIFIER_KERNEL);
	policy_unref(pol);
	pol = must_load("classifier queue\n");
	assert_int_equal(pol->classifier, POLICY_CLASSIFIER_QUEUE);
	policy_unref(pol);
	pol = must_load("classifier kernel\n");
	assert_int_equal(pol->classifier, POLICY_CLASSIFIER_KERNEL);
	policy_unref(pol);
	assert_null(load_text("classifier nfqueue\n", path, sizeof(path), err,
	    sizeof(err)));
	assert_non_null(strstr(err, "classifier"));
}

static void
test_defaults(void **state UNUSED)
{
	struct policy *pol = must_load("# nothing\n");
	char host[256];

	assert_string_equal(pol->spool, "/var/spool/mxbridge");
	assert_string_equal(pol->pidfile, "/run/mxbridge.pid");
	assert_string_equal(pol->control, "/run/mxbridge.sock");
	assert_string_equal(pol->user, "_mxbridge");
	assert_non_null(pol->hostname);
	/* the system's name, looked up once by the loader for everyone */
	assert_int_equal(gethostname(host, sizeof(host)), 0);
	host[sizeof(host) - 1] = '\0';
	assert_string_equal(policy_hostname(pol), host[0] ? host :
	    "localhost");
	assert_string_equal(policy_hostname(NULL), "localhost");
	assert_int_equal(pol->queue_num, 0);
	assert_int_equal(pol->workers, 0);	/* auto: every core */
	assert_int_equal(pol->listen_port[POLICY_DIR_IN], 10025);
	assert_int_equal(pol->listen_port[POLICY_DIR_OUT], 10026);
	assert_int_equal(pol->log_verbose, 0);
	assert_int_equal(pol->shutdown_grace, 30);
	assert_null(pol->tls_cert);
	assert_int_equal(pol->starttls[POLICY_DIR_IN], POLICY_TLS_STRIP);
	assert_int_equal(pol->starttls[POLICY_DIR_OUT], POLICY_TLS_STRIP);
	assert_int_equal(pol->default_action[POLICY_DIR_IN], POLICY_PROXY);
	assert_int_equal(pol->default_action[POLICY_DIR_OUT], POLICY_PROXY);
	assert_int_equal(pol->default_honour, 1);
	assert_null(pol->relay.host);
	assert_int_equal(pol->queue.retry_min, 300);
	assert_int_equal(pol->queue.retry_max, 3600);
	assert_int_equal(pol->queue.lifetime, 5 * 86400);
	assert_int_equal(pol->queue.warn, 4 * 3600);
	assert_int_equal(pol->queue.dsn_lifetime, 2 * 86400);
	assert_int_equal(pol->queue.dead_retention, 7 * 86400);
	assert_int_equal(pol->queue.min_free, 100 << 20);
	assert_int_equal(pol->queue.fsync, 1);
	assert_int_equal(pol->queue.concurrency, 10);
	assert_int_equal(pol->queue.dns_timeout, 30);
	assert_int_equal(pol->queue.resolve_timeout, 90);
	assert_int_equal(pol->queue.max_addresses, 5);
	assert_int_equal(pol->limits.conn_per_client, 50);
	assert_int_equal(pol->limits.conn_rate, 0);
	assert_int_equal(pol->limits.client_prefix4, 32);
	assert_int_equal(pol->limits.client_prefix6, 64);
	assert_int_equal(pol->limits.sessions, 0);	/* from the fd limit */
	assert_int_equal(pol->limits.msgs_per_session, 100);
	assert_int_equal(pol->limits.rcpts, 100);
	assert_int_equal(pol->limits.size, 35 << 20);
	assert_int_equal(pol->limits.errors, 10);
	assert_int_equal(pol->limits.cmd_line, 512);
	assert_int_equal(pol->limits.text_line, 1000);
	assert_int_equal(pol->limits.localpart, 64);
	assert_int_equal(pol->limits.domain, 255);
	assert_int_equal(pol->limits.t_cmd, 300);
	assert_int_equal(pol->limits.t_data, 180);
	assert_int_equal(pol->limits.t_dot, 600);
	assert_int_equal(pol->limits.t_connect, 30);
	assert_int_equal(pol->limits.min_rate, 100);
	policy_unref(pol);
}

/* a value a statement has to leave in the snapshot */
static const struct value_case {
	const char	*text;
	size_t		 off;
	size_t		 size;		/* 4 or 8 */
	uint64_t	 want;
} value_cases[] = {
#define PO(f)	offsetof(struct policy, f)
	{ "queue-number 7", PO(queue_num), 4, 7 },
	{ "workers 3", PO(workers), 4, 3 },
	{ "workers auto", PO(workers), 4, 0 },
	{ "queue-number 65534\nworkers 2", PO(workers), 4, 2 },
	{ "queue-buffer 64K", PO(queue_buffer), 8, 64 * 1024 },
	{ "log verbose 3", PO(log_verbose), 4, 3 },
	{ "shutdown-grace 5m", PO(shutdown_grace), 4, 300 },
	{ "shutdown-grace 45", PO(shutdown_grace), 4, 45 },
	{ "queue { retry-min 90 }", PO(queue.retry_min), 4, 90 },
	{ "queue { retry-min 90s }", PO(queue.retry_min), 4, 90 },
	{ "queue { retry-max 2h }", PO(queue.retry_max), 4, 7200 },
	{ "queue { lifetime 3d }", PO(queue.lifetime), 4, 3 * 86400 },
	{ "queue { warn 0 }", PO(queue.warn), 4, 0 },
	{ "queue { dsn-lifetime 36h }", PO(queue.dsn_lifetime), 4, 36 * 3600 },
	{ "queue { dead-retention 0 }", PO(queue.dead_retention), 4, 0 },
	{ "queue { min-free 10K }", PO(queue.min_free), 8, 10240 },
	{ "queue { min-free 512M }", PO(queue.min_free), 8, 512ULL << 20 },
	{ "queue { min-free 2g }", PO(queue.min_free), 8, 2ULL << 30 },
	{ "queue { min-free 1T }", PO(queue.min_free), 8, 1ULL << 40 },
	{ "queue { min-free 0 }", PO(queue.min_free), 8, 0 },
	{ "queue { fsync no }", PO(queue.fsync), 4, 0 },
	{ "queue { fsync yes }", PO(queue.fsync), 4, 1 },
	{ "queue { concurrency 3 }", PO(queue.concurrency), 4, 3 },
	{ "queue { dns-timeout 10s }", PO(queue.dns_timeout), 4, 10 },
	{ "queue { resolve-timeout 2m }", PO(queue.resolve_timeout), 4, 120 },
	{ "queue { max-addresses 2 }", PO(queue.max_addresses), 4, 2 },
	{ "queue { rate 100 per 1h }", PO(queue.rate.n), 4, 100 },
	{ "queue { rate 100 per 1h }", PO(queue.rate.per), 4, 3600 },
	{ "queue { rate 10 per 90 }", PO(queue.rate.per), 4, 90 },
	{ "queue { rate none }", PO(queue.rate.n), 4, 0 },
	{ "queue { rate none }", PO(queue.rate.set), 4, 1 },
	{ "queue { }", PO(queue.rate.n), 4, 0 },
	{ "limits { connections-per-client 0 }", PO(limits.conn_per_client),
	    4, 0 },
	{ "limits { connection-rate 0 }", PO(limits.conn_rate), 4, 0 },
	{ "limits { client-ipv4-prefix 24 }", PO(limits.client_prefix4), 4,
	    24 },
	{ "limits { client-ipv6-prefix 128 }", PO(limits.client_prefix6), 4,
	    128 },
	{ "limits { sessions 3 }", PO(limits.sessions), 4, 3 },
	{ "limits { sessions auto }", PO(limits.sessions), 4, 0 },
	{ "limits { connection-rate 9 per 10s }", PO(limits.conn_rate), 4, 9 },
	{ "limits { connection-rate 9 per 10s }", PO(limits.conn_rate_window),
	    4, 10 },
	{ "limits { messages-per-session 5 }", PO(limits.msgs_per_session),
	    4, 5 },
	{ "limits { recipients 1000 }", PO(limits.rcpts), 4, 1000 },
	{ "limits { size 1k }", PO(limits.size), 8, 1024 },
	{ "limits { size 50000 }", PO(limits.size), 8, 50000 },
	{ "limits { errors 3 }", PO(limits.errors), 4, 3 },
	{ "limits { command-line 2048 }", PO(limits.cmd_line), 4, 2048 },
	{ "limits { text-line 2000 }", PO(limits.text_line), 4, 2000 },
	{ "limits { local-part 128 }", PO(limits.localpart), 4, 128 },
	{ "limits { domain 300 }", PO(limits.domain), 4, 300 },
	{ "limits { timeout command 1m }", PO(limits.t_cmd), 4, 60 },
	{ "limits { timeout data 2m }", PO(limits.t_data), 4, 120 },
	{ "limits { timeout dot 20m }", PO(limits.t_dot), 4, 1200 },
	{ "limits { timeout connect 10s }", PO(limits.t_connect), 4, 10 },
	{ "limits { min-data-rate 0 }", PO(limits.min_rate), 4, 0 },
	{ "", PO(limits.hops), 4, 100 },
	{ "limits { hops 30 }", PO(limits.hops), 4, 30 },
	{ "default incoming drop", PO(default_action[0]), 4, POLICY_DROP },
	{ "default outgoing pass", PO(default_action[1]), 4, POLICY_PASS },
	{ "client-server default ignore", PO(default_honour), 4, 0 },
	{ "", PO(cs_tls), 4, POLICY_CSTLS_OPPORTUNISTIC },
	{ "client-server tls none", PO(cs_tls), 4, POLICY_CSTLS_NONE },
	{ "client-server tls require\nclient-server default ignore",
	    PO(cs_tls), 4, POLICY_CSTLS_REQUIRE },
	{ "client-server tls verify", PO(cs_tls), 4, POLICY_CSTLS_VERIFY },
	{ "client-server tls encrypt", PO(cs_tls), 4, POLICY_CSTLS_REQUIRE },
	{ "client-server tls may", PO(cs_tls), 4, POLICY_CSTLS_OPPORTUNISTIC },
	{ "client-server tls opportunistic", PO(cs_tls), 4,
	    POLICY_CSTLS_OPPORTUNISTIC },
	/* unset, it follows the client side's STARTTLS */
	{ "tls certificate /c key /k; starttls outgoing require",
	    PO(cs_tls), 4, POLICY_CSTLS_REQUIRE },
	{ "tls certificate /c key /k; starttls outgoing require\n"
	    "client-server tls none", PO(cs_tls), 4, POLICY_CSTLS_NONE },
	{ "tls certificate /c key /k; starttls outgoing offer",
	    PO(cs_tls), 4, POLICY_CSTLS_OPPORTUNISTIC },
	{ "", PO(hide_box_out), 4, 0 },
	{ "hide-box outgoing yes", PO(hide_box_out), 4, 1 },
	{ "hide-box outgoing no", PO(hide_box_out), 4, 0 },
	{ "listen incoming port 25", PO(listen_port[0]), 2, 25 },
	{ "relay-host mx.example.net port 465 tls smtps", PO(relay.port), 2,
	    465 },
	{ "relay-host mx.example.net port 465 tls smtps", PO(relay.tls), 4,
	    POLICY_UPTLS_SMTPS },
	{ "relay-host mx.example.net", PO(relay.port), 2, 25 },
	{ "relay-host mx.example.net tls none", PO(relay.tls), 4,
	    POLICY_UPTLS_NONE },
	/* AUTH only inside TLS unless said; verify off unless said */
	{ "relay-host mx.example.net", PO(relay.auth_plaintext), 4, 0 },
	{ "relay-host mx.example.net auth-plaintext yes",
	    PO(relay.auth_plaintext), 4, 1 },
	{ "relay-host mx.example.net auth-plaintext no",
	    PO(relay.auth_plaintext), 4, 0 },
	{ "relay-host mx.example.net", PO(relay.verify), 4, 0 },
	{ "relay-host mx.example.net verify yes", PO(relay.verify), 4, 1 },
	/* a verified certificate needs TLS: opportunistic becomes required */
	{ "relay-host mx.example.net verify yes", PO(relay.tls), 4,
	    POLICY_UPTLS_STARTTLS },
	{ "relay-host mx.example.net verify yes tls smtps port 465",
	    PO(relay.tls), 4, POLICY_UPTLS_SMTPS },
	{ "relay-host mx.example.net verify no", PO(relay.tls), 4,
	    POLICY_UPTLS_OPPORTUNISTIC },
	{ "tls certificate /c key /k", PO(starttls[0]), 4, POLICY_TLS_OFFER },
	{ "tls key /k certificate /c\nstarttls outgoing strip",
	    PO(starttls[1]), 4, POLICY_TLS_STRIP },
	{ "tls certificate /c key /k; starttls incoming require",
	    PO(starttls[0]), 4, POLICY_TLS_REQUIRE },
#undef PO
};

static void
test_values(void **state UNUSED)
{
	const struct value_case *c;
	struct policy *pol;
	uint64_t got;
	uint32_t u32;
	uint16_t u16;
	size_t i;

	for (i = 0; i < N(value_cases); i++) {
		c = &value_cases[i];
		pol = must_load(c->text);
		if (c->size == 8)
			memcpy(&got, (char *)pol + c->off, 8);
		else if (c->size == 4) {
			memcpy(&u32, (char *)pol + c->off, 4);
			got = u32;
		} else {
			memcpy(&u16, (char *)pol + c->off, 2);
			got = u16;
		}
		if (got != c->want)
			fail_msg("\"%s\": got %llu, want %llu", c->text,
			    (unsigned long long)got,
			    (unsigned long long)c->want);
		policy_unref(pol);
	}
}

/* the lexical corners: quoting, separators, comments, braces */
static void
test_syntax(void **state UNUSED)
{
	struct policy *pol;

	pol = must_load(
	    "# comment\n"
	    "hostname gw.example.net   # trailing comment\n"
	    "spool \"/tmp/with space\" ; pidfile /tmp/p.pid;control /tmp/c\n"
	    "domain \"Example.COM.\"\n"
	    "{\n"
	    "\tserver \"192.0.2.10\" port 2525; fallback [2001:db8::1]\n"
	    "\ttls smtps; deliver-via-server no\n"
	    "\thide-box yes ; verify-recipients yes }\n"
	    "port p0{incoming pass}port p1 { }\n"
	    "match from <> \\\n"
	    "    to protected relay \"2.0.0 ok \\\"quoted\\\" \\\\\"\n"
	    ";;\n"
	    "\n");
	assert_string_equal(pol->hostname, "gw.example.net");
	assert_string_equal(policy_hostname(pol), "gw.example.net");
	assert_string_equal(pol->spool, "/tmp/with space");
	assert_string_equal(pol->control, "/tmp/c");
	assert_string_equal(pol->domains[0].name, "example.com");
	assert_string_equal(pol->domains[0].server, "192.0.2.10");
	assert_int_equal(pol->domains[0].port, 2525);
	assert_string_equal(pol->domains[0].fallback, "[2001:db8::1]");
	assert_int_equal(pol->domains[0].fbport, 25);
	assert_int_equal(pol->domains[0].nfbaddr, 1);
	assert_int_equal(pol->domains[0].tls, POLICY_UPTLS_SMTPS);
	assert_int_equal(pol->domains[0].deliver_via_server, 0);
	assert_int_equal(pol->domains[0].hide_box, 1);
	assert_int_equal(pol->domains[0].verify_recipients, 1);
	assert_int_equal(pol->nports, 2);
	assert_int_equal(pol->ports[0].action[POLICY_DIR_IN], POLICY_PASS);
	assert_int_equal(pol->ports[0].action[POLICY_DIR_OUT], POLICY_PROXY);
	assert_int_equal(pol->ports[1].honour, -1);
	assert_int_equal(pol->nrules, 1);
	assert_int_equal(pol->rules[0].line, 10);
	assert_int_equal(pol->rules[0].from_null, 1);
	assert_int_equal(pol->rules[0].to_protected, 1);
	assert_int_equal(pol->rules[0].auth, -1);
	assert_string_equal(pol->rules[0].message, "2.0.0 ok \"quoted\" \\");
	policy_unref(pol);

	/* a port's unset direction follows "default", wherever it is */
	pol = must_load("port p0 { incoming proxy }\ndefault outgoing drop\n"
	    "default incoming pass\n");
	assert_int_equal(pol->ports[0].action[POLICY_DIR_IN], POLICY_PROXY);
	assert_int_equal(pol->ports[0].action[POLICY_DIR_OUT], POLICY_DROP);
	policy_unref(pol);

	/* CRLF line ends, also after a continuation backslash */
	pol = must_load("hostname a.example\r\nmatch to any \\\r\n relay\r\n");
	assert_string_equal(pol->hostname, "a.example");
	assert_int_equal(pol->nrules, 1);
	assert_int_equal(pol->rules[0].verdict, POLICY_RELAY);
	policy_unref(pol);

	/* a host name server is resolved at load */
	pol = must_load("domain a.example { server localhost port 26 }");
	assert_true(pol->domains[0].naddr >= 1);
	assert_int_equal(pol->domains[0].port, 26);
	policy_unref(pol);
}

/* the match rule's parts as stored */
static void
test_rules_parsed(void **state UNUSED)
{
	struct policy *pol;
	const struct policy_rule *r;

	pol = must_load(
	    "match from Bob@Other.NET. to @Example.com client 192.0.2.0/24 "
	    "auth discard\n"
	    "match to @[192.0.2.9] noauth tempfail \"4.7.1 later\"\n"
	    "match from any to any reject\n");
	assert_int_equal(pol->nrules, 3);
	r = &pol->rules[0];
	assert_string_equal(r->from, "Bob@other.net");
	assert_string_equal(r->to, "@example.com");
	assert_int_equal(r->has_net, 1);
	assert_int_equal(r->auth, 1);
	assert_int_equal(r->verdict, POLICY_DISCARD);
	assert_null(r->message);
	r = &pol->rules[1];
	assert_string_equal(r->to, "@[192.0.2.9]");
	assert_int_equal(r->auth, 0);
	assert_int_equal(r->verdict, POLICY_TEMPFAIL);
	assert_string_equal(r->message, "4.7.1 later");
	r = &pol->rules[2];
	assert_null(r->from);
	assert_null(r->to);
	assert_int_equal(r->from_null, 0);
	assert_int_equal(r->to_protected, 0);
	assert_int_equal(r->verdict, POLICY_REJECT);
	policy_unref(pol);
}

/*
 * Parse errors: "FILE:" is the temporary file, the rest must match
 */
static const struct error_case {
	const char	*text;
	const char	*want;		/* after "FILE:" */
} error_cases[] = {
	{ "bogus 1\n", "1: unknown keyword \"bogus\"" },
	{ "user root\n", "1: user: the daemon does not run as root; name an "
	    "unprivileged user" },
	{ "user \"a/b\"\n", "1: user: bad user name \"a/b\"" },
	{ "user \"-x\"\n", "1: user: bad user name \"-x\"" },
	{ "\nhostname\n", "2: hostname: missing argument" },
	{ "hostname a.example c\n",
	    "1: hostname: unexpected argument \"c\"" },
	{ "hostname bad_name", "1: hostname: bad host name \"bad_name\"" },
	{ "hostname a.example\nhostname b.example",
	    "2: duplicate hostname (first at line 1)" },
	{ "queue-number x", "1: queue-number: bad number \"x\"" },
	{ "queue-number -1", "1: queue-number: bad number \"-1\"" },
	{ "queue-number 99999999999999999999999",
	    "1: queue-number: bad number \"99999999999999999999999\"" },
	{ "queue-number 65536", "1: queue-number: 65536 out of range "
	    "(0-65535)" },
	{ "queue-buffer 1K", "1: queue-buffer: 1K out of range (4K-256M)" },
	{ "workers x", "1: workers: bad number \"x\"" },
	{ "workers 2 3", "1: workers: unexpected argument \"3\"" },
	{ "workers 1\nworkers 2", "2: duplicate workers (first at line 1)" },
	{ "queue-number 65535\nworkers 2", "2: workers: queues 65535-65536 "
	    "run past 65535; lower queue-number" },
	{ "workers 16\nqueue-number 65530", "1: workers: queues "
	    "65530-65545 run past 65535; lower queue-number" },
	{ "queue-buffer abc", "1: queue-buffer: bad size \"abc\"" },
	{ "spool var/spool", "1: spool: \"var/spool\" is not an absolute "
	    "path" },
	{ "control /tmp/0123456789012345678901234567890123456789012345678901"
	    "23456789012345678901234567890123456789012345678901234567890",
	    "1: control: path longer than 107 bytes" },
	{ "listen incoming port 10026",
	    "1: listen: incoming and outgoing ports must differ" },
	{ "listen outgoing port 2525\n\nlisten incoming port 2525",
	    "3: listen: incoming and outgoing ports must differ" },
	{ "listen incoming port 1\nlisten incoming port 2",
	    "2: listen: duplicate incoming (first at line 1)" },
	{ "listen sideways port 25",
	    "1: listen: expected incoming or outgoing, got \"sideways\"" },
	{ "listen incoming prt 25",
	    "1: listen: expected \"port\", got \"prt\"" },
	{ "listen incoming port", "1: listen: missing argument" },
	{ "log debug 1", "1: log: expected \"verbose\", got \"debug\"" },
	{ "shutdown-grace 10x", "1: shutdown-grace: bad duration \"10x\"" },
	{ "shutdown-grace 10mm", "1: shutdown-grace: bad duration \"10mm\"" },
	{ "tls certificate /c", "1: tls: missing argument" },
	{ "tls certificate /c cert /k",
	    "1: tls: expected \"certificate\" or \"key\", got \"cert\"" },
	{ "tls certificate /c certificate /k", "1: tls: duplicate "
	    "certificate" },
	{ "tls certificate /c key /k key /x",
	    "1: tls: unexpected argument \"key\"" },
	{ "starttls incoming require",
	    "1: starttls: incoming require needs a tls certificate" },
	{ "starttls outgoing offer",
	    "1: starttls: outgoing offer needs a tls certificate" },
	{ "starttls outgoing maybe",
	    "1: starttls: expected offer, require or strip, got \"maybe\"" },
	{ "starttls incoming strip\nstarttls incoming strip",
	    "2: starttls: duplicate incoming (first at line 1)" },
	{ "default incoming reject",
	    "1: default: expected proxy, pass or drop, got \"reject\"" },
	{ "default outgoing pass; default outgoing drop",
	    "1: default: duplicate outgoing (first at line 1)" },
	{ "client-server default maybe",
	    "1: client-server: expected ignore or honour, got \"maybe\"" },
	{ "client-server always honour",
	    "1: client-server: expected \"default\", \"tls\" or \"match\", "
	    "got \"always\"" },
	{ "client-server default honour now",
	    "1: client-server default: one of honour or ignore expected" },
	{ "client-server tls require match \"a.example\"",
	    "1: client-server tls: match needs the level verify" },
	{ "client-server tls verify match \"a.example b_c\"",
	    "1: client-server tls match: bad name \"b_c\"" },
	{ "client-server tls verify match \" \"",
	    "1: client-server tls match: no name" },
	{ "client-server tls verify match",
	    "1: client-server tls: missing argument after \"match\"" },
	{ "client-server tls verify ca-file /nonexistent/ca.pem",
	    "1: client-server tls ca-file \"/nonexistent/ca.pem\": No such "
	    "file or directory" },
	{ "client-server tls verify match a.example match b.example",
	    "1: client-server tls: unexpected argument \"match\"" },
	{ "client-server tls verify name a.example",
	    "1: client-server tls: unexpected argument \"name\"" },
	{ "client-server match 192.0.2.0/24",
	    "1: client-server match: NETWORK \"NAMES\" expected" },
	{ "client-server tls verify\nclient-server match 192.0.2.0/33 a.example",
	    "2: client-server match: bad network \"192.0.2.0/33\"" },
	{ "client-server tls verify\nclient-server match 192.0.2.0/24 a*b",
	    "2: client-server match: bad name \"a*b\"" },
	{ "client-server tls require\n\nclient-server match 192.0.2.0/24 "
	    "a.example", "3: client-server match: needs client-server tls "
	    "verify" },
	{ "client-server default honour\nclient-server default ignore",
	    "2: client-server: duplicate default (first at line 1)" },
	{ "client-server tls none\n\nclient-server tls require",
	    "3: client-server: duplicate tls (first at line 1)" },
	{ "client-server tls starttls", "1: client-server tls: expected none, "
	    "opportunistic, require or verify, got \"starttls\"" },
	{ "client-server tls", "1: client-server: missing argument" },
	{ "hide-box outgoing maybe",
	    "1: hide-box: expected yes or no, got \"maybe\"" },
	{ "hide-box incoming yes",
	    "1: hide-box: incoming is set per domain, in its block" },
	{ "hide-box sideways yes",
	    "1: hide-box: expected \"outgoing\", got \"sideways\"" },
	{ "hide-box yes", "1: hide-box: missing argument" },
	{ "hide-box outgoing yes\nhide-box outgoing no",
	    "2: duplicate hide-box (first at line 1)" },
	{ "port p0 {\n hide-box yes\n}", "2: hide-box: missing argument" },
	{ "port p0 {\n hide-box outgoing 1\n}",
	    "2: hide-box: expected yes or no, got \"1\"" },
	{ "honour clientserver", "1: honour: expected \"client-server\", "
	    "got \"clientserver\"" },
	{ "honour client-server from 192.0.2.0/33",
	    "1: honour: bad network \"192.0.2.0/33\"" },
	{ "ignore client-server port", "1: ignore: missing argument after "
	    "\"port\"" },
	{ "ignore client-server port a/b", "1: ignore: bad port name "
	    "\"a/b\"" },
	{ "ignore client-server from 192.0.2.1 from 192.0.2.2",
	    "1: ignore: unexpected argument \"from\"" },
	{ "bypass middle 192.0.2.1",
	    "1: bypass: expected client or server, got \"middle\"" },
	{ "bypass client 300.1.1.1", "1: bypass: bad network "
	    "\"300.1.1.1\"" },
	{ "bypass server", "1: bypass: missing argument" },
	{ "metrics listen 127.0.0.1 9154\nmetrics allow 10.0.0.0/33",
	    "2: metrics allow: \"10.0.0.0/33\" is not an IPv4 or IPv6 "
	    "address or ADDRESS/PREFIX network" },
	{ "metrics listen 127.0.0.1 9154\nmetrics allow ::1 localhost",
	    "2: metrics allow: \"localhost\" is not an IPv4 or IPv6 address "
	    "or ADDRESS/PREFIX network" },
	{ "metrics allow", "1: metrics: missing argument" },
	{ "metrics listen 127.0.0.1", "1: metrics listen: expected ADDRESS "
	    "PORT" },
	{ "metrics listen ::1 9154\nmetrics listen ::1 9155",
	    "2: metrics listen: duplicate (first at line 1)" },
	{ "metrics deny 192.0.2.1",
	    "1: metrics: expected \"listen\" or \"allow\", got \"deny\"" },
	{ "metrics allow 127.0.0.1", "1: metrics allow: no \"metrics "
	    "listen\" to restrict" },
	{ "port p0 incoming pass", "1: port: missing '{'" },
	{ "port thisnameistoolong0 { }",
	    "1: port: bad port name \"thisnameistoolong0\"" },
	{ "port p0 { }\nport p0 { }", "2: duplicate port \"p0\"" },
	{ "port p0 { incoming forward }",
	    "1: incoming: expected proxy, pass or drop, got \"forward\"" },
	{ "port p0 {\n accept-to-box maybe\n}",
	    "2: accept-to-box: expected yes or no, got \"maybe\"" },
	{ "port p0 {\n client-server honour\n client-server ignore\n}",
	    "3: duplicate client-server (first at line 2)" },
	{ "port p0 { server 192.0.2.1 }",
	    "1: unknown keyword \"server\" in port block" },
	{ "domain a.example {\n tls none\n}",
	    "1: domain \"a.example\": missing server" },
	{ "domain a.example {\n server 192.0.2.1\n",
	    "2: unterminated domain block opened at line 1 (missing '}')" },
	{ "limits {\n\n", "2: unterminated limits block opened at line 1 "
	    "(missing '}')" },
	/* a missing '}' in the middle: the next top-level statement */
	{ "domain a.example { server 192.0.2.1 }\ndomain b.example {\n"
	    " server 192.0.2.2\n\ndomain c.example { server 192.0.2.3 }\n",
	    "5: unknown keyword \"domain\" in domain block opened at line 2 "
	    "(missing '}'?)" },
	{ "queue {\n retry-min 1m\nlimits { size 1M }\n",
	    "3: unknown keyword \"limits\" in queue block opened at line 1 "
	    "(missing '}'?)" },
	{ "port p0 {\n incoming pass\nrelay-host 192.0.2.30\n}",
	    "3: unknown keyword \"relay-host\" in port block opened at line 1 "
	    "(missing '}'?)" },
	{ "domain a.example { server 192.0.2.1 }\n"
	    "domain A.Example. { server 192.0.2.2 }",
	    "2: duplicate domain \"A.Example.\"" },
	{ "domain bad..name { server 192.0.2.1 }",
	    "1: domain: bad domain name \"bad..name\"" },
	{ "domain -a.example { server 192.0.2.1 }",
	    "1: domain: bad domain name \"-a.example\"" },
	{ "domain a.example { server -x }", "1: server: bad host \"-x\"" },
	{ "domain a.example { server 192.0.2.1 port }",
	    "1: server: missing argument after \"port\"" },
	{ "domain a.example { server 192.0.2.1 prt 25 }",
	    "1: server: malformed address \"25\"" },
	{ "domain a.example { server 192.0.2.1 port 25 port 26 }",
	    "1: server: unexpected argument \"port\"" },
	{ "domain a.example { server port 25 }", "1: server: missing host" },
	/* several addresses, but each once */
	{ "domain a.example { server 192.0.2.1 2001:db8::1 192.0.2.1 }",
	    "1: server: duplicate address \"192.0.2.1\"" },
	{ "domain a.example {\n server 2001:db8::1\n server [2001:DB8::1] "
	    "port 26\n}", "3: server: duplicate address \"[2001:DB8::1]\"" },
	{ "domain a.example { server 192.0.2.1 192.0.2.2 192.0.2.3 192.0.2.4 "
	    "192.0.2.5 192.0.2.6 192.0.2.7 192.0.2.8 192.0.2.9 }",
	    "1: server: more than 8 addresses" },
	{ "domain a.example { server 192.0.2.1; fallback 192.0.2.2 "
	    "192.0.2.3 }", "1: fallback: unexpected argument \"192.0.2.3\"" },
	/*
	 * a malformed numeric address is reported as such, never looked up:
	 * the resolver would call it a DNS failure, or take "192.0.2" for
	 * 192.0.0.2 (inet_aton) and "0x7f.1" for 127.0.0.1
	 */
	{ "domain a.example { server 192.0.2.300 }",
	    "1: server: malformed address \"192.0.2.300\"" },
	{ "domain a.example { server 192.0.2 }",
	    "1: server: malformed address \"192.0.2\"" },
	{ "domain a.example { server 0x7f.1 }",
	    "1: server: malformed address \"0x7f.1\"" },
	{ "domain a.example { server 192.0.2.1. }",
	    "1: server: malformed address \"192.0.2.1.\"" },
	{ "domain a.example { server 192.0.2.1 2001:db8::g }",
	    "1: server: malformed address \"2001:db8::g\"" },
	{ "domain a.example { server [192.0.2.1 }",
	    "1: server: malformed address \"[192.0.2.1\"" },
	{ "domain a.example { server 192.0.2.1; fallback 2001:db8::1::2 }",
	    "1: fallback: malformed address \"2001:db8::1::2\"" },
	{ "relay-host 198.51.100.256", "1: relay-host: malformed address "
	    "\"198.51.100.256\"" },
	{ "domain a.example { server 192.0.2.1; tls always }",
	    "1: tls: expected opportunistic, none, starttls or smtps, got "
	    "\"always\"" },
	{ "domain a.example { server 192.0.2.1; hide-box 1 }",
	    "1: hide-box: expected yes or no, got \"1\"" },
	{ "domain a.example server 192.0.2.1", "1: domain: missing '{'" },
	{ "relay-host bad_host", "1: relay-host: bad host \"bad_host\"" },
	{ "relay-host 192.0.2.30 port", "1: relay-host: missing argument "
	    "after \"port\"" },
	{ "relay-host 192.0.2.30 port 25 port 26",
	    "1: relay-host: unexpected argument \"port\"" },
	{ "relay-host 192.0.2.30 tls maybe",
	    "1: relay-host tls: expected opportunistic, none, starttls or "
	    "smtps, got \"maybe\"" },
	{ "relay-host 192.0.2.30 auth /nonexistent/secret",
	    "1: relay-host: auth file \"/nonexistent/secret\": No such file "
	    "or directory" },
	{ "relay-host 192.0.2.30 auth-plaintext maybe",
	    "1: relay-host auth-plaintext: expected yes or no, got \"maybe\"" },
	{ "relay-host 192.0.2.30 verify 1",
	    "1: relay-host verify: expected yes or no, got \"1\"" },
	{ "relay-host 192.0.2.30 verify yes tls none",
	    "1: relay-host: verify yes needs TLS, not tls none" },
	{ "relay-host 192.0.2.30 ca-file /etc/hostname",
	    "1: relay-host: ca-file without verify yes" },
	{ "relay-host 192.0.2.30 verify yes ca-file /nonexistent/ca.pem",
	    "1: relay-host: ca-file \"/nonexistent/ca.pem\": No such file "
	    "or directory" },
	{ "relay-host 192.0.2.30 verify yes verify no",
	    "1: relay-host: unexpected argument \"verify\"" },
	{ "relay-host 192.0.2.30 via x", "1: relay-host: unexpected argument "
	    "\"via\"" },
	{ "tls-policy domain a.example secure",
	    "1: tls-policy level: expected none, may, encrypt, verify, dane "
	    "or dane-only, got \"secure\"" },
	{ "tls-policy everything verify",
	    "1: tls-policy: default, domain, host, ca-file, min-protocol, "
	    "ciphers or trust-ad expected, not \"everything\"" },
	{ "tls-policy trust-ad maybe",
	    "1: tls-policy trust-ad: expected loopback, yes or no, got "
	    "\"maybe\"" },
	{ "tls-policy host a.example dane match \"b.example\"",
	    "1: tls-policy: match needs the level verify" },
	{ "fallback-relay bad_host", "1: fallback-relay: bad host "
	    "\"bad_host\"" },
	{ "fallback-relay relay.example.org after 0s",
	    "1: fallback-relay after: 0s out of range (1s-60d)" },
	{ "fallback-relay relay.example.org via x",
	    "1: fallback-relay: unexpected argument \"via\"" },
	{ "milter m { connect-timeout 5s }", "1: milter m: missing socket" },
	{ "milter m { socket tcp:1.2.3.4:5 }", "1: milter socket: expected "
	    "inet:ADDR:PORT, inet6:[ADDR]:PORT or unix:PATH, got "
	    "\"tcp:1.2.3.4:5\"" },
	{ "milter m { socket inet:rspamd.example:11332 }", "1: milter "
	    "socket: \"rspamd.example\" is not an IP address" },
	{ "milter m { socket inet:127.0.0.1 }", "1: milter socket: "
	    "\"inet:127.0.0.1\" has no port" },
	{ "milter m { socket unix:run/m.sock }", "1: milter socket: "
	    "\"run/m.sock\" is not an absolute path" },
	{ "milter m { socket inet:127.0.0.1:1; default-action drop }",
	    "1: default-action: expected tempfail, accept or reject, got "
	    "\"drop\"" },
	{ "milter m { socket inet:127.0.0.1:1 }\nmilter m { socket "
	    "inet:127.0.0.1:2 }", "2: duplicate milter \"m\"" },
	{ "milters incoming nosuch", "1: milters: no milter \"nosuch\"" },
	{ "milters sideways m", "1: milters: expected incoming or outgoing, "
	    "got \"sideways\"" },
	{ "milter m { socket inet:127.0.0.1:1 }\nmilters incoming none m",
	    "2: milters: \"none\" stands alone" },
	{ "milter m { socket inet:127.0.0.1:1 }\nmilters incoming m\n"
	    "milters incoming m", "3: duplicate milters incoming" },
	{ "destination bad_name { concurrency 1 }",
	    "1: destination: bad name \"bad_name\"" },
	{ "destination a.example { concurrency 0 }",
	    "1: concurrency: 0 out of range (1-1000)" },
	{ "destination a.example { }\ndestination A.example { }",
	    "2: duplicate destination \"A.example\"" },
	{ "destination a.example { rate 0 per 1m }",
	    "1: rate: 0 out of range (1-100000)" },
	{ "destination a.example { rate 10 }",
	    "1: rate: expected \"N per DURATION\" or \"none\"" },
	{ "destination a.example { rate 10 each 1m }",
	    "1: rate: expected \"per\", got \"each\"" },
	{ "destination a.example { rate 10 per 5x }",
	    "1: rate: bad duration \"5x\"" },
	{ "destination a.example { rate ten per 1m }",
	    "1: rate: bad number \"ten\"" },
	{ "queue { rate 10 per 1m per }",
	    "1: rate: unexpected argument \"per\"" },
	{ "queue { rate 1 per 1s; rate 2 per 1s }",
	    "1: duplicate rate (first at line 1)" },
	{ "tls-policy min-protocol SSLv3",
	    "1: tls-policy min-protocol: expected TLSv1.2 or TLSv1.3, got "
	    "\"SSLv3\"" },
	{ "tls-policy ciphers NOSUCHCIPHER",
	    "1: tls-policy ciphers: no cipher in \"NOSUCHCIPHER\"" },
	{ "tls-policy domain bad_name verify",
	    "1: tls-policy domain: bad name \"bad_name\"" },
	{ "tls-policy host a.example encrypt match \"b.example\"",
	    "1: tls-policy: match needs the level verify" },
	{ "tls-policy host a.example verify match \"b.example c_d\"",
	    "1: tls-policy match: bad name \"c_d\"" },
	{ "tls-policy host a.example verify match \" \"",
	    "1: tls-policy match: no name" },
	{ "tls-policy domain a.example verify on-failure retry",
	    "1: tls-policy on-failure: expected defer or bounce, got "
	    "\"retry\"" },
	{ "tls-policy domain a.example verify\ntls-policy domain A.example "
	    "may", "2: tls-policy domain \"A.example\": given twice" },
	{ "tls-policy default may\ntls-policy default none",
	    "2: tls-policy default: given twice" },
	{ "tls-policy ca-file /nonexistent/ca.pem",
	    "1: tls-policy ca-file \"/nonexistent/ca.pem\": No such file or "
	    "directory" },
	{ "tls-policy domain a.example verify on-failure",
	    "1: tls-policy: missing argument after \"on-failure\"" },
	{ "queue { }\nqueue { }", "2: duplicate queue (first at line 1)" },
	{ "queue {\n bogus 1\n}", "2: unknown keyword \"bogus\" in queue "
	    "block" },
	{ "queue { retry-min 5x }", "1: retry-min: bad duration \"5x\"" },
	{ "queue { retry-min 2h; retry-max 1h }",
	    "1: queue: retry-min must not exceed retry-max" },
	{ "queue {\n warn 5d\n}", "1: queue: warn must be shorter than "
	    "lifetime" },
	{ "queue { fsync maybe }", "1: fsync: expected yes or no, got "
	    "\"maybe\"" },
	{ "queue { min-free 10Q }", "1: min-free: bad size \"10Q\"" },
	{ "queue { min-free 10KB }", "1: min-free: bad size \"10KB\"" },
	{ "queue", "1: queue: missing '{'" },
	{ "queue x { }", "1: queue: unexpected argument \"x\"" },
	{ "limits { size 10Q }", "1: size: bad size \"10Q\"" },
	{ "limits { connection-rate 10 }",
	    "1: connection-rate: expected \"N per DURATION\"" },
	{ "limits { connection-rate 10 each 1m }",
	    "1: connection-rate: expected \"per\", got \"each\"" },
	{ "limits { timeout idle 5m }", "1: timeout: expected command, data, "
	    "dot or connect, got \"idle\"" },
	{ "limits { timeout dot 5m; timeout dot 6m }",
	    "1: timeout: duplicate dot (first at line 1)" },
	{ "limits { timeout dot }", "1: timeout: missing argument" },
	{ "match to any", "1: match: missing relay, reject, discard or "
	    "tempfail" },
	{ "match", "1: match: missing argument" },
	{ "match from x relay", "1: match: bad sender address \"x\"" },
	{ "match from a@ relay", "1: match: bad sender address \"a@\"" },
	{ "match to @bad_domain relay", "1: match: bad recipient address "
	    "\"@bad_domain\"" },
	{ "match to @[300.0.0.1] relay", "1: match: bad recipient address "
	    "\"@[300.0.0.1]\"" },
	{ "match to <> relay", "1: match: bad recipient address \"<>\"" },
	{ "match client 192.0.2.0/40 relay", "1: match: bad network "
	    "\"192.0.2.0/40\"" },
	{ "match client relay", "1: match: bad network \"relay\"" },
	{ "match from", "1: match: missing argument after \"from\"" },
	{ "match sender x@y.example relay",
	    "1: match: unexpected argument \"sender\"" },
	{ "match from <> from <> relay", "1: match: duplicate \"from\"" },
	{ "match auth noauth relay", "1: match: duplicate \"noauth\"" },
	{ "match relay \"550 no\"", "1: match: reply text must not start "
	    "with a reply code" },
	{ "match reject \"4.7.1 later\"",
	    "1: match: status code \"4.x.x\" does not fit reject" },
	{ "match tempfail \"5.7.1 no\"",
	    "1: match: status code \"5.x.x\" does not fit tempfail" },
	{ "match reject \"\"", "1: match: reply text must be 1-400 "
	    "characters" },
	{ "match reject \"a\tb\"", "1: match: reply text must be printable "
	    "ASCII" },
	{ "match relay foo bar", "1: match: unexpected argument \"bar\"" },
	{ "hostname \"abc", "1: unterminated string" },
	{ "hostname \"abc\ndef\"", "1: unterminated string" },
	{ "hostname \"a\\q\"", "1: invalid escape in string" },
	{ "hostname a\"b\"", "1: unexpected '\"' in word" },
	{ "hostname a\001", "1: invalid character 0x01" },
	{ "\n\n\001", "3: invalid character 0x01" },
	{ "}", "1: unexpected '}'" },
	{ "{", "1: unexpected '{'" },
	{ "hostname x.example {", "1: hostname: unexpected '{'" },
	{ "\"hostname\" a", "1: expected a keyword, got \"hostname\"" },
	{ "hostname \\\n  a.example\nbogus", "3: unknown keyword \"bogus\"" },
	{ "queue { retry-min 1m } }", "1: unexpected '}'" },
};

static void
test_errors(void **state UNUSED)
{
	const struct error_case *c;
	struct policy *pol;
	char path[64], err[512], want[600];
	size_t i;

	for (i = 0; i < N(error_cases); i++) {
		c = &error_cases[i];
		pol = load_text(c->text, path, sizeof(path), err, sizeof(err));
		if (pol != NULL) {
			policy_unref(pol);
			fail_msg("parsed, want error \"%s\":\n%s", c->want,
			    c->text);
		}
		snprintf(want, sizeof(want), "%s:%s", path, c->want);
		if (strcmp(err, want) != 0)
			fail_msg("config:\n%s\n got: %s\nwant: %s", c->text,
			    err, want);
	}
}

static void
test_error_nofile(void **state UNUSED)
{
	char err[256];

	assert_null(policy_load("/nonexistent/mxbridge.conf", err,
	    sizeof(err)));
	assert_string_equal(err, "/nonexistent/mxbridge.conf: No such file or "
	    "directory");
	assert_null(policy_load("/tmp", err, sizeof(err)));
	assert_string_equal(err, "/tmp: not a regular file of at most 1048576 "
	    "bytes");
}

/* the relay host's credentials file: format, relative name */
static void
test_auth_file(void **state UNUSED)
{
	char secret[64], conf[600], path[64], err[512];
	const char *base;
	struct policy *pol;

	write_tmp("# comment\n\n  user1   pass1  \n", secret, sizeof(secret));
	chmod(secret, 0600);
	base = strrchr(secret, '/') + 1;
	snprintf(conf, sizeof(conf), "relay-host 192.0.2.30 auth \"%s\"", base);
	pol = must_load(conf);
	assert_string_equal(pol->relay.auth_file, secret);
	assert_string_equal(pol->relay.auth_user, "user1");
	assert_string_equal(pol->relay.auth_pass, "pass1");
	policy_unref(pol);
	unlink(secret);

	write_tmp("# only a user\nuser1\n", secret, sizeof(secret));
	snprintf(conf, sizeof(conf), "relay-host 192.0.2.30 auth %s", secret);
	assert_null(load_text(conf, path, sizeof(path), err, sizeof(err)));
	snprintf(conf, sizeof(conf), "%s:1: relay-host: auth file \"%s\": "
	    "expected a line \"username password\"", path, secret);
	assert_string_equal(err, conf);
	unlink(secret);
}

/* every range: both ends accepted, one step outside refused */
static const struct range_case {
	const char	*fmt;		/* the statement, %s for the value */
	const char	*name;		/* as the error names it */
	const char	*lo, *hi;	/* accepted */
	const char	*below, *above;	/* refused; below NULL if lo is 0 */
	const char	*range;		/* as the error prints it */
} range_cases[] = {
	{ "queue-number %s", "queue-number", "0", "65535", NULL, "65536",
	    "0-65535" },
	{ "workers %s", "workers", "1", "256", "0", "257", "1-256" },
	{ "listen incoming port %s", "listen", "1", "65535", "0", "65536",
	    "1-65535" },
	{ "listen outgoing port %s", "listen", "1", "65535", "0", "65536",
	    "1-65535" },
	{ "log verbose %s", "log verbose", "0", "3", NULL, "4", "0-3" },
	{ "shutdown-grace %s", "shutdown-grace", "0", "1h", NULL, "3601",
	    "0s-1h" },
	{ "relay-host mx.example.net port %s", "relay-host port", "1",
	    "65535", "0", "65536", "1-65535" },
	{ "domain a.example { server 192.0.2.1 port %s }", "server", "1",
	    "65535", "0", "65536", "1-65535" },
	{ "domain a.example { server 192.0.2.1; fallback 192.0.2.2 port %s }",
	    "fallback", "1", "65535", "0", "65536", "1-65535" },
	{ "queue { retry-max 7d; retry-min %s }", "retry-min", "1s", "1d",
	    "0", "86401", "1s-1d" },
	{ "queue { retry-min 1s; retry-max %s }", "retry-max", "1m", "7d",
	    "59", "8d", "1m-7d" },
	{ "queue { warn 0; lifetime %s }", "lifetime", "1h", "60d", "59m",
	    "61d", "1h-60d" },
	{ "queue { lifetime 60d; warn %s }", "warn", "0", "30d", NULL, "31d",
	    "0s-30d" },
	{ "queue { dsn-lifetime %s }", "dsn-lifetime", "1h", "60d", "3599",
	    "61d", "1h-60d" },
	{ "queue { dead-retention %s }", "dead-retention", "0", "365d", NULL,
	    "366d", "0s-365d" },
	{ "queue { min-free %s }", "min-free", "0", "1T", NULL, "1025G",
	    "0-1T" },
	{ "queue { concurrency %s }", "concurrency", "1", "1000", "0", "1001",
	    "1-1000" },
	{ "queue { dns-timeout %s }", "dns-timeout", "1s", "10m", "0", "601",
	    "1s-10m" },
	{ "queue { resolve-timeout %s }", "resolve-timeout", "1s", "1h", "0",
	    "3601", "1s-1h" },
	{ "queue { max-addresses %s }", "max-addresses", "1", "16", "0", "17",
	    "1-16" },
	{ "queue { rate %s per 1m }", "rate", "1", "100000", "0", "100001",
	    "1-100000" },
	{ "destination a.example { rate 5 per %s }", "rate", "1", "1d", "0",
	    "25h", "1s-1d" },
	{ "limits { connections-per-client %s }", "connections-per-client",
	    "0", "100000", NULL, "100001", "0-100000" },
	{ "limits { connection-rate %s per 1m }", "connection-rate", "0",
	    "100000", NULL, "100001", "0-100000" },
	{ "limits { connection-rate 5 per %s }", "connection-rate", "1",
	    "1h", "0", "61m", "1s-1h" },
	{ "limits { client-ipv4-prefix %s }", "client-ipv4-prefix", "8",
	    "32", "7", "33", "8-32" },
	{ "limits { client-ipv6-prefix %s }", "client-ipv6-prefix", "32",
	    "128", "31", "129", "32-128" },
	{ "limits { sessions %s }", "sessions", "1", "1000000", "0",
	    "1000001", "1-1000000" },
	{ "limits { messages-per-session %s }", "messages-per-session", "1",
	    "100000", "0", "100001", "1-100000" },
	{ "limits { recipients %s }", "recipients", "1", "10000", "0",
	    "10001", "1-10000" },
	{ "limits { size %s }", "size", "1K", "4G", "1023", "4097M",
	    "1K-4G" },
	{ "limits { errors %s }", "errors", "1", "1000", "0", "1001",
	    "1-1000" },
	{ "limits { command-line %s }", "command-line", "512", "65536", "511",
	    "65537", "512-65536" },
	{ "limits { text-line %s }", "text-line", "1000", "65536", "999",
	    "65537", "1000-65536" },
	{ "limits { local-part %s }", "local-part", "64", "1024", "63",
	    "1025", "64-1024" },
	{ "limits { domain %s }", "domain", "255", "1024", "254", "1025",
	    "255-1024" },
	{ "limits { timeout command %s }", "timeout command", "1", "1h", "0",
	    "3601", "1s-1h" },
	{ "limits { timeout data %s }", "timeout data", "1", "1h", "0",
	    "61m", "1s-1h" },
	{ "limits { timeout dot %s }", "timeout dot", "1s", "1h", "0s",
	    "2h", "1s-1h" },
	{ "limits { timeout connect %s }", "timeout connect", "1", "10m", "0",
	    "601", "1s-10m" },
	{ "limits { min-data-rate %s }", "min-data-rate", "0", "1000000000",
	    NULL, "1000000001", "0-1000000000" },
	{ "limits { hops %s }", "hops", "1", "1000", "0", "1001", "1-1000" },
};

/* subst - fmt with its "%s" replaced by value (no printf: -Wformat=2) */
static void
subst(char *out, size_t len, const char *fmt, const char *value)
{
	const char *pct = strstr(fmt, "%s");

	assert_non_null(pct);
	snprintf(out, len, "%.*s%s%s", (int)(pct - fmt), fmt, value, pct + 2);
}

/* range_try - one value of a range row: ok, or refused as out of range */
static void
range_try(const struct range_case *c, const char *value, int ok)
{
	char text[256], path[64], err[512], want[700];
	struct policy *pol;

	subst(text, sizeof(text), c->fmt, value);
	pol = load_text(text, path, sizeof(path), err, sizeof(err));
	if (ok) {
		if (pol == NULL)
			fail_msg("\"%s\" refused: %s", text, err);
		policy_unref(pol);
		return;
	}
	if (pol != NULL) {
		policy_unref(pol);
		fail_msg("\"%s\" accepted", text);
	}
	snprintf(want, sizeof(want), "%s:1: %s: %s out of range (%s)", path,
	    c->name, value, c->range);
	if (strcmp(err, want) != 0)
		fail_msg("\"%s\"\n got: %s\nwant: %s", text, err, want);
}

static void
test_ranges(void **state UNUSED)
{
	const struct range_case *c;
	size_t i;

	for (i = 0; i < N(range_cases); i++) {
		c = &range_cases[i];
		range_try(c, c->lo, 1);
		range_try(c, c->hi, 1);
		if (c->below != NULL)
			range_try(c, c->below, 0);
		range_try(c, c->above, 0);
	}
}

/*
 * Decisions
 */

static const char classify_conf[] =
    "domain \"example.com\" { server 192.0.2.10; fallback 192.0.2.11 port "
    "2525 }\n"
    "domain \"example.org\" { server 2001:db8:1::10 }\n"
    "default outgoing pass\n"
    "port \"p0\" { incoming proxy; outgoing proxy }\n"
    "port \"p1\" { incoming drop }\n"
    "bypass client 192.0.2.99\n"
    "bypass server 198.51.100.0/24\n";

static const struct classify_case {
	const char	*src;
	const char	*dst;
	uint16_t	 dport;
	const char	*port;
	enum policy_dir	 dir;
	enum policy_action action;
	const char	*domain;
	const char	*reason;
} classify_cases[] = {
	{ "192.0.2.50", "192.0.2.10", 25, "p0", POLICY_DIR_IN, POLICY_PROXY,
	    "example.com", "port" },
	{ "192.0.2.50", "192.0.2.10", 587, "p0", POLICY_DIR_OUT, POLICY_PROXY,
	    NULL, "port" },
	{ "192.0.2.50", "192.0.2.11", 2525, "p1", POLICY_DIR_IN, POLICY_DROP,
	    "example.com", "port" },
	{ "192.0.2.50", "192.0.2.11", 25, "p1", POLICY_DIR_OUT, POLICY_PASS,
	    NULL, "port" },
	{ "2001:db8:2::5", "2001:db8:1::10", 25, NULL, POLICY_DIR_IN,
	    POLICY_PROXY, "example.org", "default" },
	{ "::ffff:192.0.2.50", "::ffff:192.0.2.10", 25, "p9", POLICY_DIR_IN,
	    POLICY_PROXY, "example.com", "default" },
	{ "192.0.2.50", "203.0.113.5", 25, "p9", POLICY_DIR_OUT, POLICY_PASS,
	    NULL, "default" },
	{ "192.0.2.99", "192.0.2.10", 25, "p0", POLICY_DIR_IN, POLICY_PASS,
	    "example.com", "bypass" },
	{ "192.0.2.50", "198.51.100.7", 25, "p0", POLICY_DIR_OUT, POLICY_PASS,
	    NULL, "bypass" },
};

static void
test_classify(void **state UNUSED)
{
	const struct classify_case *c;
	struct sockaddr_storage src, dst;
	struct policy_class cls;
	struct policy *pol = must_load(classify_conf);
	size_t i;

	for (i = 0; i < N(classify_cases); i++) {
		c = &classify_cases[i];
		src = sa(c->src, 40000);
		dst = sa(c->dst, c->dport);
		assert_int_equal(policy_classify(pol, SA(src), SA(dst), c->port,
		    &cls), 0);
		if (cls.dir != c->dir || cls.action != c->action ||
		    strcmp(cls.reason, c->reason) != 0 ||
		    (c->domain == NULL) != (cls.domain == NULL) ||
		    (c->domain != NULL && strcmp(cls.domain->name,
		    c->domain) != 0))
			fail_msg("row %zu %s -> %s:%u: got %s %s %s %s", i,
			    c->src, c->dst, c->dport, policy_dir_name(cls.dir),
			    policy_action_name(cls.action), cls.reason,
			    cls.domain ? cls.domain->name : "-");
	}
	memset(&src, 0, sizeof(src));
	src.ss_family = AF_UNIX;
	assert_int_equal(policy_classify(pol, SA(src), SA(dst), NULL, &cls),
	    -1);
	assert_null(policy_domain_by_name(pol, "sub.example.com"));
	assert_non_null(policy_domain_by_name(pol, "EXAMPLE.Com."));
	assert_null(policy_domain_by_name(pol, ""));
	assert_null(policy_domain_by_name(pol, NULL));
	assert_non_null(policy_port_by_name(pol, "p1"));
	assert_null(policy_port_by_name(pol, "p2"));
	policy_unref(pol);
}

/* "metrics allow": lines add up; none, anyone; v4-mapped peers match */
static void
test_metrics_allow(void **state UNUSED)
{
	struct sockaddr_storage a;
	struct policy *pol;

	pol = must_load("metrics listen :: 9154\n");
	a = sa("203.0.113.9", 1);
	assert_true(policy_metrics_allowed(pol, SA(a)));
	policy_unref(pol);
	pol = must_load("metrics listen :: 9154\nmetrics allow 127.0.0.1 "
	    "2001:db8:2::/64\nmetrics allow 192.0.2.128/25\n");
	assert_int_equal(pol->nmetrics_allow, 3);
	a = sa("127.0.0.1", 1);
	assert_true(policy_metrics_allowed(pol, SA(a)));
	a = sa("::ffff:127.0.0.1", 1);
	assert_true(policy_metrics_allowed(pol, SA(a)));
	a = sa("127.0.0.2", 1);
	assert_false(policy_metrics_allowed(pol, SA(a)));
	a = sa("2001:db8:2::101", 1);
	assert_true(policy_metrics_allowed(pol, SA(a)));
	a = sa("2001:db8:3::1", 1);
	assert_false(policy_metrics_allowed(pol, SA(a)));
	a = sa("192.0.2.200", 1);
	assert_true(policy_metrics_allowed(pol, SA(a)));
	a = sa("192.0.2.101", 1);
	assert_false(policy_metrics_allowed(pol, SA(a)));
	policy_unref(pol);
}

/*
 * a dual-stack server: several addresses in one statement or several
 * statements, each address with its port; a flow to any of them (either
 * family) is incoming for the domain, a DSN or a route to the domain
 * goes to the first
 */
static void
test_servers(void **state UNUSED)
{
	static const struct {
		const char	*dst;
		uint16_t	 port;
		int		 incoming;
	} rows[] = {
		{ "192.0.2.10", 25, 1 },
		{ "2001:db8:2::10", 25, 1 },
		{ "::ffff:192.0.2.10", 25, 1 },
		{ "2001:db8:2::11", 2525, 1 },
		{ "2001:db8:2::11", 25, 0 },	/* its own port only */
		{ "192.0.2.10", 2525, 0 },
		{ "192.0.2.11", 25, 0 },
		{ "2001:db8:2::12", 25, 0 },
	};
	struct sockaddr_storage src = sa("198.51.100.1", 40000), dst;
	const struct policy_domain *d;
	struct policy_class cls;
	struct policy *pol;
	size_t i;

	pol = must_load("domain example.com {\n"
	    " server 192.0.2.10 2001:db8:2::10\n"
	    " server [2001:db8:2::11] port 2525\n"
	    "}\n");
	d = &pol->domains[0];
	assert_int_equal(d->naddr, 3);
	assert_string_equal(d->server, "192.0.2.10 2001:db8:2::10 "
	    "[2001:db8:2::11]");
	assert_int_equal(d->port, 25);
	assert_int_equal(d->addr[0].ss_family, AF_INET);
	assert_int_equal(d->addr[1].ss_family, AF_INET6);
	assert_string_equal(d->host[1], "2001:db8:2::10");
	assert_string_equal(d->host[2], "[2001:db8:2::11]");
	for (i = 0; i < N(rows); i++) {
		dst = sa(rows[i].dst, rows[i].port);
		assert_int_equal(policy_classify(pol, SA(src), SA(dst), "p0",
		    &cls), 0);
		if ((cls.dir == POLICY_DIR_IN) != rows[i].incoming ||
		    (cls.domain == d) != rows[i].incoming)
			fail_msg("row %zu: [%s]:%u is %s", i, rows[i].dst,
			    rows[i].port, policy_dir_name(cls.dir));
		assert_int_equal(policy_route_rcpt(pol, POLICY_DIR_IN,
		    "example.net", SA(dst)), rows[i].incoming ?
		    POLICY_ROUTE_ORIGINAL : POLICY_ROUTE_MX);
	}
	assert_null(strstr(load_log, "no protected domain"));
	policy_unref(pol);

	/* the old single form; a name gives each of its addresses its name */
	pol = must_load("domain example.com { server 192.0.2.10 port 26 }");
	assert_int_equal(pol->domains[0].naddr, 1);
	assert_int_equal(pol->domains[0].port, 26);
	assert_string_equal(pol->domains[0].host[0], "192.0.2.10");
	policy_unref(pol);
	pol = must_load("domain example.com { server localhost 192.0.2.10 }");
	d = &pol->domains[0];
	assert_true(d->naddr >= 2);
	assert_string_equal(d->host[0], "localhost");
	assert_string_equal(d->host[d->naddr - 1], "192.0.2.10");
	policy_unref(pol);
}

/* a config that protects nothing loads, with a warning */
static void
test_warn_nodomain(void **state UNUSED)
{
	struct policy *pol;

	pol = must_load("");
	assert_non_null(strstr(load_log, ": no protected domain: every "
	    "connection is outgoing"));
	policy_unref(pol);
	pol = must_load("hostname gw.example.net\nport p0 { incoming pass }");
	assert_non_null(strstr(load_log, "no protected domain"));
	policy_unref(pol);
	pol = must_load("domain example.com { server 192.0.2.10 }");
	assert_null(strstr(load_log, "no protected domain"));
	policy_unref(pol);
}

/* connections to the gateway itself: the port's accept-to-box decides */
static void
test_classify_to_box(void **state UNUSED)
{
	static const struct {
		const char	*port;
		enum policy_action action;
	} rows[] = {
		{ "p0", POLICY_PROXY },		/* accept-to-box yes */
		{ "p1", POLICY_DROP },		/* block without it */
		{ "p9", POLICY_DROP },		/* no block */
		{ NULL, POLICY_DROP },		/* port unknown */
	};
	struct policy *pol = must_load(
	    "port \"p0\" { accept-to-box yes }\n"
	    "port \"p1\" { incoming proxy }\n");
	struct policy_class cls;
	size_t i;

	for (i = 0; i < N(rows); i++) {
		assert_int_equal(policy_classify_to_box(pol, rows[i].port,
		    &cls), 0);
		assert_int_equal(cls.dir, POLICY_DIR_OUT);
		assert_int_equal(cls.action, rows[i].action);
		assert_string_equal(cls.reason, "to-box");
	}
	policy_unref(pol);
}

static const struct honour_case {
	const char	*conf;
	const char	*client;
	const char	*port;
	int		 want;
} honour_cases[] = {
#define HC	"port p0 { client-server ignore }\n" \
		"port p1 { client-server honour }\n" \
		"port p2 { incoming proxy }\n" \
		"honour client-server from 192.0.2.0/28 port p0\n" \
		"ignore client-server from 192.0.2.0/24\n" \
		"ignore client-server port p3\n"
	{ HC, "192.0.2.5", "p0", 1 },		/* first rule */
	{ HC, "192.0.2.5", "p1", 0 },		/* second rule */
	{ HC, "192.0.2.100", "p0", 0 },
	{ HC, "198.51.100.1", "p1", 1 },	/* the port's own */
	{ HC, "198.51.100.1", "p0", 0 },
	{ HC, "198.51.100.1", "p2", 1 },	/* default */
	{ HC, "198.51.100.1", "p3", 0 },	/* third rule */
	{ HC, "198.51.100.1", NULL, 1 },
	{ HC "client-server default ignore", "198.51.100.1", NULL, 0 },
	{ HC "client-server default ignore", "198.51.100.1", "p2", 0 },
	{ HC "client-server default ignore", "198.51.100.1", "p1", 1 },
	{ "", "2001:db8:2::1", "p0", 1 },
	{ "ignore client-server from 2001:db8:2::/64", "2001:db8:2::1", "p0",
	    0 },
	{ "ignore client-server from 2001:db8:2::/64", "2001:db8:3::1", "p0",
	    1 },
#undef HC
};

static void
test_honour(void **state UNUSED)
{
	const struct honour_case *c;
	struct sockaddr_storage client;
	struct policy *pol;
	size_t i;
	int got;

	for (i = 0; i < N(honour_cases); i++) {
		c = &honour_cases[i];
		pol = must_load(c->conf);
		client = sa(c->client, 40000);
		got = policy_honour_client_server(pol, SA(client), c->port);
		if (got != c->want)
			fail_msg("row %zu %s port %s: got %d", i, c->client,
			    c->port ? c->port : "-", got);
		policy_unref(pol);
	}
}

static const struct route_case {
	int		 relay;		/* with a relay host */
	enum policy_dir	 dir;
	const char	*domain;
	const char	*dst;		/* port 25; NULL: none */
	enum policy_route want;
} route_cases[] = {
	{ 0, POLICY_DIR_IN, "example.com", "192.0.2.10", POLICY_ROUTE_ORIGINAL },
	{ 0, POLICY_DIR_IN, "EXAMPLE.COM.", "192.0.2.10",
	    POLICY_ROUTE_ORIGINAL },
	{ 0, POLICY_DIR_IN, "other.net", "192.0.2.10", POLICY_ROUTE_ORIGINAL },
	{ 0, POLICY_DIR_IN, "other.net", "192.0.2.20", POLICY_ROUTE_MX },
	{ 0, POLICY_DIR_IN, "sub.example.com", "192.0.2.20", POLICY_ROUTE_MX },
	{ 0, POLICY_DIR_IN, "example.com", "192.0.2.20",
	    POLICY_ROUTE_ORIGINAL },
	{ 0, POLICY_DIR_IN, "other.net", NULL, POLICY_ROUTE_MX },
	{ 0, POLICY_DIR_OUT, "example.com", "203.0.113.1", POLICY_ROUTE_MX },
	{ 0, POLICY_DIR_OUT, "other.net", "203.0.113.1", POLICY_ROUTE_MX },
	{ 1, POLICY_DIR_IN, "example.com", "192.0.2.10", POLICY_ROUTE_ORIGINAL },
	{ 1, POLICY_DIR_IN, "other.net", "192.0.2.10", POLICY_ROUTE_ORIGINAL },
	{ 1, POLICY_DIR_IN, "other.net", "192.0.2.20",
	    POLICY_ROUTE_RELAYHOST },
	{ 1, POLICY_DIR_OUT, "example.com", "203.0.113.1",
	    POLICY_ROUTE_RELAYHOST },
	{ 1, POLICY_DIR_OUT, "other.net", NULL, POLICY_ROUTE_RELAYHOST },
};

static void
test_route(void **state UNUSED)
{
	static const char conf[] =
	    "domain example.com { server 192.0.2.10 }\n"
	    "domain example.org { server 192.0.2.20; deliver-via-server no }\n";
	const struct route_case *c;
	struct sockaddr_storage dst;
	struct policy *pol[2];
	enum policy_route got;
	char text[256];
	size_t i;

	pol[0] = must_load(conf);
	snprintf(text, sizeof(text), "%srelay-host 192.0.2.30\n", conf);
	pol[1] = must_load(text);
	for (i = 0; i < N(route_cases); i++) {
		c = &route_cases[i];
		if (c->dst != NULL)
			dst = sa(c->dst, 25);
		got = policy_route_rcpt(pol[c->relay], c->dir, c->domain,
		    c->dst != NULL ? SA(dst) : NULL);
		if (got != c->want)
			fail_msg("row %zu: %s %s via %s: got %s, want %s", i,
			    policy_dir_name(c->dir), c->domain,
			    c->dst ? c->dst : "-", policy_route_name(got),
			    policy_route_name(c->want));
	}
	policy_unref(pol[0]);
	policy_unref(pol[1]);
}

static const char rcpt_conf[] =
    "domain \"example.com\" { server 192.0.2.10 }\n"
    "match from <> to @blocked.example reject\n"
    "match from @spammer.test reject \"5.7.1 Go away\"\n"
    "match client 192.0.2.0/24 auth relay\n"
    "match client 198.51.100.0/24 to @partner.net relay\n"
    "match to tempfail@example.com tempfail\n"
    "match to dropme@example.com discard\n"
    "match from carol@friend.example to any relay\n";

#define NORELAY	"5.7.1 Relay access denied"
#define BYRULE	"5.7.1 Recipient address rejected by policy"
#define SYNTAX	"5.1.3 Bad recipient address syntax"

static const struct rcpt_case {
	const char	*client;
	const char	*sender;
	const char	*rcpt;
	int		 authed;
	enum policy_verdict want;
	const char	*msg;
} rcpt_cases[] = {
	/* protected recipients, any spelling */
	{ "203.0.113.9", "bob@other.net", "alice@example.com", 0,
	    POLICY_RELAY, NULL },
	{ "203.0.113.9", "", "<alice@example.com>", 0, POLICY_RELAY, NULL },
	{ "203.0.113.9", "<>", "ALICE@EXAMPLE.COM.", 0, POLICY_RELAY, NULL },
	{ "203.0.113.9", "bob@other.net", "\"al ice\"@example.com", 0,
	    POLICY_RELAY, NULL },
	/* not protected, no rule */
	{ "203.0.113.9", "bob@other.net", "x@other.net", 0, POLICY_REJECT,
	    NORELAY },
	{ "203.0.113.9", "alice@example.com", "x@sub.example.com", 0,
	    POLICY_REJECT, NORELAY },
	{ "192.0.2.5", "alice@example.com", "x@other.net", 0, POLICY_REJECT,
	    NORELAY },
	/* rules */
	{ "192.0.2.5", "alice@example.com", "x@other.net", 1, POLICY_RELAY,
	    NULL },
	{ "2001:db8:2::5", "alice@example.com", "x@other.net", 1,
	    POLICY_REJECT, NORELAY },
	{ "198.51.100.7", "bob@other.net", "x@partner.net", 0, POLICY_RELAY,
	    NULL },
	{ "198.51.100.7", "bob@other.net", "x@PARTNER.net.", 0, POLICY_RELAY,
	    NULL },
	{ "198.51.100.7", "bob@other.net", "x%y@partner.net", 0,
	    POLICY_REJECT, NORELAY },
	{ "198.51.100.7", "bob@other.net", "x@sub.partner.net", 0,
	    POLICY_REJECT, NORELAY },
	{ "203.0.113.9", "bob@other.net", "x@partner.net", 0, POLICY_REJECT,
	    NORELAY },
	{ "203.0.113.9", "", "y@blocked.example", 0, POLICY_REJECT, BYRULE },
	{ "203.0.113.9", "bob@other.net", "y@blocked.example", 0,
	    POLICY_REJECT, NORELAY },
	{ "203.0.113.9", "mallory@spammer.test", "alice@example.com", 0,
	    POLICY_REJECT, "5.7.1 Go away" },
	{ "203.0.113.9", "<mallory@SPAMMER.test>", "alice@example.com", 0,
	    POLICY_REJECT, "5.7.1 Go away" },
	{ "203.0.113.9", "", "tempfail@example.com", 0, POLICY_TEMPFAIL,
	    "4.7.1 Recipient address deferred by policy, try again later" },
	{ "203.0.113.9", "", "DropMe@Example.com", 0, POLICY_DISCARD, NULL },
	{ "203.0.113.9", "carol@friend.example", "x@other.net", 0,
	    POLICY_RELAY, NULL },
	{ "203.0.113.9", "Carol@Friend.Example", "x@other.net", 0,
	    POLICY_RELAY, NULL },
	{ "203.0.113.9", "xcarol@friend.example", "x@other.net", 0,
	    POLICY_REJECT, NORELAY },
	/* not an address at all */
	{ "203.0.113.9", "bob@other.net", "", 0, POLICY_REJECT, SYNTAX },
	{ "203.0.113.9", "bob@other.net", "<>", 0, POLICY_REJECT, SYNTAX },
	{ "203.0.113.9", "bob@other.net", "@example.com", 0, POLICY_REJECT,
	    SYNTAX },
	{ "203.0.113.9", "bob@other.net", NULL, 0, POLICY_REJECT, SYNTAX },
};

/* check_live - policy_check_rcpt_live with the MTA path's signature */
static enum policy_verdict
check_live(const struct policy *pol, const struct sockaddr *client,
    enum policy_dir dir, const char *sender, const char *rcpt, int authed,
    const char **msg)
{
	return policy_check_rcpt_live(pol, client, sender, rcpt, authed, msg);
}

/* run_rcpt_cases - every row through check; the verdict and text must match */
static void
run_rcpt_cases(const struct policy *pol, const struct rcpt_case *cases,
    size_t n, enum policy_verdict (*check)(const struct policy *,
    const struct sockaddr *, enum policy_dir, const char *, const char *,
    int, const char **))
{
	const struct rcpt_case *c;
	struct sockaddr_storage client;
	enum policy_verdict got;
	const char *msg;
	size_t i;

	for (i = 0; i < n; i++) {
		c = &cases[i];
		client = sa(c->client, 40000);
		msg = "unset";
		got = check(pol, SA(client), POLICY_DIR_IN, c->sender, c->rcpt,
		    c->authed, &msg);
		if (got != c->want || (c->msg == NULL) != (msg == NULL) ||
		    (msg != NULL && strcmp(msg, c->msg) != 0))
			fail_msg("row %zu: %s from <%s> to <%s>: got %s \"%s\"",
			    i, c->client, c->sender ? c->sender : "(null)",
			    c->rcpt ? c->rcpt : "(null)",
			    policy_verdict_name(got), msg ? msg : "(null)");
	}
}

static void
test_check_rcpt(void **state UNUSED)
{
	struct sockaddr_storage client;
	struct policy *pol = must_load(rcpt_conf);

	run_rcpt_cases(pol, rcpt_cases, N(rcpt_cases), policy_check_rcpt);
	client = sa("203.0.113.9", 1);
	assert_int_equal(policy_check_rcpt(pol, SA(client), POLICY_DIR_OUT,
	    "", "alice@example.com", 0, NULL), POLICY_RELAY);
	policy_unref(pol);
}

/* the open-relay battery: none of these is a protected recipient */
static const char *const hostile_rcpts[] = {
	"x@other",
	"\"x@other\"",
	"\"x@other\"@example.com",
	"x%other@example.com",
	"\"x%other\"@example.com",
	"other!x",
	"other!x@example.com",
	"@example.com:x@other",
	"<@example.com:x@other>",
	"<@example.com,@example.com:x@example.com>",
	"@example.com:x@example.com",
	"x@[1.2.3.4]",
	"x@[192.0.2.10]",
	"x@[IPv6:2001:db8::1]",
	"x@example.com@other",
	"x@other@example.com",
	"x@example.com,y@other",
	"x@exa mple.com",
	"x",
	"postmaster",
	"@other:",
	"<x@example.com",
	"x>@example.com",
	"x y@example.com",
	"x,y@example.com",
	"x:y@example.com",
	"\"x\\@y\"@example.com",
	"\"open@example.com",
	"@example.com",
	"x@example.com..",
	"x@.example.com",
	"x@",
	"",
};
static const char *const hostile_senders[] = {
	"", "<>", "alice@example.com", "bob@other.net", "<bob@other.net>",
};
static const char *const hostile_clients[] = {
	"203.0.113.9", "192.0.2.5", "2001:db8:2::5", "::ffff:192.0.2.5",
};

static void
test_open_relay(void **state UNUSED)
{
	struct sockaddr_storage client;
	struct policy *pol[3];
	enum policy_verdict got;
	const char *msg;
	size_t r, s, c, k;

	/* no rules; a "to protected" rule; rules trusting some senders */
	pol[0] = must_load("domain example.com { server 192.0.2.10 }\n");
	pol[1] = must_load("domain example.com { server 192.0.2.10 }\n"
	    "match to protected relay\n");
	pol[2] = must_load("domain example.com { server 192.0.2.10 }\n"
	    "match from @example.com to protected relay\n"
	    "match from <> to protected relay\n"
	    "match client 192.0.2.0/24 noauth to protected relay\n");
	for (k = 0; k < N(pol); k++)
	for (r = 0; r < N(hostile_rcpts); r++)
	for (s = 0; s < N(hostile_senders); s++)
	for (c = 0; c < N(hostile_clients); c++) {
		client = sa(hostile_clients[c], 40000);
		msg = NULL;
		got = policy_check_rcpt(pol[k], SA(client), POLICY_DIR_IN,
		    hostile_senders[s], hostile_rcpts[r], 0, &msg);
		if (got != POLICY_REJECT || msg == NULL || msg[0] != '5')
			fail_msg("policy %zu: %s from <%s> to <%s>: %s", k,
			    hostile_clients[c], hostile_senders[s],
			    hostile_rcpts[r], policy_verdict_name(got));
		assert_int_equal(policy_rcpt_protected(pol[k],
		    hostile_rcpts[r]), 0);
	}
	for (k = 0; k < N(pol); k++)
		policy_unref(pol[k]);
}

/* the battery again: a rule that allows them explicitly does */
static void
test_open_relay_allowed(void **state UNUSED)
{
	struct sockaddr_storage in = sa("192.0.2.5", 1), out = sa("203.0.113.9",
	    1);
	struct policy *pol;
	size_t r;
	int syntax;

	pol = must_load("domain example.com { server 192.0.2.10 }\n"
	    "match client 192.0.2.0/24 auth relay\n"
	    "match to @[192.0.2.10] relay\n"
	    "match to \"\\\"x%other\\\"@example.com\" relay\n"
	    "match to @[IPv6:2001:DB8::1] relay\n");
	for (r = 0; r < N(hostile_rcpts); r++) {
		/* not an address at all: a syntax error for everybody */
		syntax = hostile_rcpts[r][0] == '\0' ||
		    strcmp(hostile_rcpts[r], "@example.com") == 0;
		if (policy_check_rcpt(pol, SA(in), POLICY_DIR_IN, "",
		    hostile_rcpts[r], 1, NULL) != (syntax ? POLICY_REJECT :
		    POLICY_RELAY)) {
			policy_unref(pol);
			fail_msg("authenticated, to <%s>: wrong verdict",
			    hostile_rcpts[r]);
		}
		assert_int_equal(policy_check_rcpt(pol, SA(in), POLICY_DIR_IN,
		    "", hostile_rcpts[r], 0, NULL),
		    strcmp(hostile_rcpts[r], "x@[192.0.2.10]") == 0 ||
		    strcmp(hostile_rcpts[r], "x@[IPv6:2001:db8::1]") == 0 ||
		    strcmp(hostile_rcpts[r], "\"x%other\"@example.com") == 0 ?
		    POLICY_RELAY : POLICY_REJECT);
	}
	assert_int_equal(policy_check_rcpt(pol, SA(out), POLICY_DIR_IN,
	    "", "x@[1.2.3.4]", 0, NULL), POLICY_REJECT);
	policy_unref(pol);
}

static void
test_rcpt_protected(void **state UNUSED)
{
	struct policy *pol = must_load("domain example.com { server 192.0.2.10 }"
	    "\ndomain example.org { server 192.0.2.11 }\n");

	assert_int_equal(policy_rcpt_protected(pol, "a@example.com"), 1);
	assert_int_equal(policy_rcpt_protected(pol, "<a@Example.ORG.>"), 1);
	assert_int_equal(policy_rcpt_protected(pol, "a@example.net"), 0);
	assert_int_equal(policy_rcpt_protected(pol, "a%b@example.com"), 0);
	assert_int_equal(policy_rcpt_protected(pol, ""), 0);
	assert_int_equal(policy_rcpt_protected(pol, NULL), 0);
	policy_unref(pol);
}

/* the live relay: explicit rules answer, no rule passes to the upstream */
static const struct rcpt_case live_cases[] = {
	/* no rule: the upstream decides, protected or not */
	{ "203.0.113.9", "bob@other.net", "x@other.net", 0, POLICY_RELAY,
	    NULL },
	{ "192.0.2.5", "alice@example.com", "x@other.net", 0, POLICY_RELAY,
	    NULL },
	{ "203.0.113.9", "bob@other.net", "alice@example.com", 0,
	    POLICY_RELAY, NULL },
	{ "203.0.113.9", "bob@other.net", "x%y@other.net", 0, POLICY_RELAY,
	    NULL },
	{ "203.0.113.9", "bob@other.net", "@a.example:x@other.net", 0,
	    POLICY_RELAY, NULL },
	/* every verdict of a rule */
	{ "203.0.113.9", "", "y@blocked.example", 0, POLICY_REJECT, BYRULE },
	{ "203.0.113.9", "bob@other.net", "y@blocked.example", 0,
	    POLICY_RELAY, NULL },
	{ "203.0.113.9", "mallory@spammer.test", "x@other.net", 0,
	    POLICY_REJECT, "5.7.1 Go away" },
	{ "203.0.113.9", "", "tempfail@example.com", 0, POLICY_TEMPFAIL,
	    "4.7.1 Recipient address deferred by policy, try again later" },
	{ "203.0.113.9", "", "DropMe@Example.com", 0, POLICY_DISCARD, NULL },
	{ "192.0.2.5", "alice@example.com", "x@other.net", 1, POLICY_RELAY,
	    NULL },
	/* bad syntax is still refused here */
	{ "203.0.113.9", "bob@other.net", "", 0, POLICY_REJECT, SYNTAX },
	{ "203.0.113.9", "bob@other.net", "<>", 0, POLICY_REJECT, SYNTAX },
	{ "203.0.113.9", "bob@other.net", NULL, 0, POLICY_REJECT, SYNTAX },
};

static void
test_check_rcpt_live(void **state UNUSED)
{
	struct sockaddr_storage client;
	struct policy *pol = must_load(rcpt_conf);

	run_rcpt_cases(pol, live_cases, N(live_cases), check_live);
	/* the MTA path keeps the no-open-relay default for the same one */
	client = sa("203.0.113.9", 1);
	assert_int_equal(policy_check_rcpt(pol, SA(client), POLICY_DIR_OUT,
	    "bob@other.net", "x@other.net", 0, NULL), POLICY_REJECT);
	assert_int_equal(policy_check_rcpt_live(pol, SA(client),
	    "bob@other.net", "x@other.net", 0, NULL), POLICY_RELAY);
	policy_unref(pol);
}

/* verify-recipients: which recipients are asked about, and where */
static void
test_verify_rcpt(void **state UNUSED)
{
	static const struct {
		enum policy_dir	 dir;
		const char	*rcpt;
		const char	*want;		/* domain, or NULL */
	} cases[] = {
		{ POLICY_DIR_IN, "alice@example.com", "example.com" },
		{ POLICY_DIR_IN, "<Nobody@EXAMPLE.com.>", "example.com" },
		{ POLICY_DIR_IN, "@relay.example:x@example.com", "example.com" },
		{ POLICY_DIR_IN, "x@example.org", NULL },	/* not asked */
		{ POLICY_DIR_IN, "x@other.net", NULL },
		{ POLICY_DIR_IN, "x@sub.example.com", NULL },
		{ POLICY_DIR_IN, "x@[192.0.2.10]", NULL },
		{ POLICY_DIR_IN, "x@", NULL },
		{ POLICY_DIR_IN, "", NULL },
		{ POLICY_DIR_IN, NULL, NULL },
		{ POLICY_DIR_OUT, "alice@example.com", NULL },
	};
	struct policy *pol = must_load(
	    "domain example.com { server 192.0.2.10; verify-recipients yes }\n"
	    "domain example.org { server 192.0.2.11 }\n");
	const struct policy_domain *d;
	size_t i;

	for (i = 0; i < N(cases); i++) {
		d = policy_verify_rcpt(pol, cases[i].dir, cases[i].rcpt);
		if ((d == NULL) != (cases[i].want == NULL) || (d != NULL &&
		    strcmp(d->name, cases[i].want) != 0))
			fail_msg("row %zu: %s <%s>: got %s", i,
			    policy_dir_name(cases[i].dir),
			    cases[i].rcpt ? cases[i].rcpt : "(null)",
			    d ? d->name : "-");
	}
	policy_unref(pol);
}

/* hide-box outgoing: the port's own setting, else the global one */
static void
test_hide_box(void **state UNUSED)
{
	struct policy *pol;

	pol = must_load("port p0 { hide-box outgoing yes }\n"
	    "port p1 { hide-box outgoing no }\nport p2 { incoming proxy }\n");
	assert_int_equal(pol->hide_box_out, 0);
	assert_int_equal(policy_hide_box_outgoing(pol, "p0"), 1);
	assert_int_equal(policy_hide_box_outgoing(pol, "p1"), 0);
	assert_int_equal(policy_hide_box_outgoing(pol, "p2"), 0);
	assert_int_equal(policy_hide_box_outgoing(pol, NULL), 0);
	policy_unref(pol);
	pol = must_load("hide-box outgoing yes\n"
	    "port p1 { hide-box outgoing no }\nport p2 { incoming proxy }\n"
	    "domain example.com { server 192.0.2.10; hide-box no }\n");
	assert_int_equal(policy_hide_box_outgoing(pol, "p1"), 0);
	assert_int_equal(policy_hide_box_outgoing(pol, "p2"), 1);
	assert_int_equal(policy_hide_box_outgoing(pol, "p9"), 1);
	assert_int_equal(policy_hide_box_outgoing(pol, NULL), 1);
	assert_int_equal(pol->domains[0].hide_box, 0);
	policy_unref(pol);
}

/* connection limits: concurrent, and the rate bucket over time */
static void
test_conn_admit(void **state UNUSED)
{
	struct policy *pol;
	struct policy_rate rt;
	const char *why;
	int i;

	memset(&rt, 0, sizeof(rt));
	pol = must_load("limits { connections-per-client 2 }");
	why = NULL;
	assert_int_equal(policy_conn_admit(pol, 0, &rt, 0, &why), 1);
	assert_int_equal(policy_conn_admit(pol, 1, &rt, 0, &why), 1);
	assert_null(why);
	assert_int_equal(policy_conn_admit(pol, 2, &rt, 0, &why), 0);
	assert_string_equal(why, "connections-per-client");
	for (i = 0; i < 1000; i++)	/* no rate limit by default */
		assert_int_equal(policy_conn_admit(pol, 0, &rt, 5, &why), 1);
	policy_unref(pol);

	/* 3 per 10s: a burst of 3, then one more every 3.33 s */
	memset(&rt, 0, sizeof(rt));
	pol = must_load("limits { connections-per-client 0; "
	    "connection-rate 3 per 10s }");
	why = NULL;
	for (i = 0; i < 3; i++)
		assert_int_equal(policy_conn_admit(pol, 100, &rt, 1000, &why),
		    1);
	assert_int_equal(policy_conn_admit(pol, 0, &rt, 1000, &why), 0);
	assert_string_equal(why, "connection-rate");
	assert_int_equal(policy_conn_admit(pol, 0, &rt, 4000, &why), 0);
	assert_int_equal(policy_conn_admit(pol, 0, &rt, 4334, &why), 1);
	assert_int_equal(policy_conn_admit(pol, 0, &rt, 4334, &why), 0);
	/* a long pause refills the bucket, never beyond its size */
	for (i = 0; i < 3; i++)
		assert_int_equal(policy_conn_admit(pol, 0, &rt, 900000, &why),
		    1);
	assert_int_equal(policy_conn_admit(pol, 0, &rt, 900000, &why), 0);
	/* a clock that went back starts over, full */
	assert_int_equal(policy_conn_admit(pol, 0, &rt, 10, &why), 1);
	policy_unref(pol);

	/* the concurrent limit is checked first and costs no rate credit */
	memset(&rt, 0, sizeof(rt));
	pol = must_load("limits { connections-per-client 1; "
	    "connection-rate 1 per 1h }");
	assert_int_equal(policy_conn_admit(pol, 1, &rt, 0, &why), 0);
	assert_string_equal(why, "connections-per-client");
	assert_int_equal(policy_conn_admit(pol, 0, &rt, 0, &why), 1);
	assert_int_equal(policy_conn_admit(pol, 0, &rt, 3599000, &why), 0);
	assert_string_equal(why, "connection-rate");
	assert_int_equal(policy_conn_admit(pol, 0, &rt, 3600000, &why), 1);
	policy_unref(pol);
}

/*
 * The manual: every keyword documented, the examples shown verbatim
 */

/* slurp - a whole file below the source root, NUL-terminated */
static char *
slurp(const char *rel)
{
	char path[1100], *buf;
	FILE *fp;
	long len;

	snprintf(path, sizeof(path), "%s/%s", srcdir(), rel);
	if ((fp = fopen(path, "r")) == NULL)
		fail_msg("%s: cannot open", path);
	assert_int_equal(fseek(fp, 0, SEEK_END), 0);
	len = ftell(fp);
	rewind(fp);
	buf = malloc((size_t)len + 1);
	assert_non_null(buf);
	assert_int_equal(fread(buf, 1, (size_t)len, fp), (size_t)len);
	buf[len] = '\0';
	fclose(fp);
	return buf;
}

static void
test_manpage(void **state UNUSED)
{
	static const char *const keywords[] = {
		"hostname", "spool", "pidfile", "control", "queue-number",
		"workers",
		"listen", "log verbose", "shutdown-grace", "tls certificate",
		"starttls", "default", "port", "domain", "relay-host",
		"honour | ignore", "client-server", "client-server tls",
		"client-server match",
		"hide-box outgoing", "queue", "limits", "match",
		"bypass client", "bypass server", "incoming", "outgoing",
		"accept-to-box", "server", "fallback", "tls",
		"deliver-via-server", "hide-box", "verify-recipients",
		"retry-min", "retry-max", "lifetime", "warn", "dsn-lifetime",
		"dead-retention", "min-free", "fsync", "concurrency",
		"dns-timeout", "resolve-timeout", "max-addresses",
		"connections-per-client", "connection-rate",
		"client-ipv4-prefix", "client-ipv6-prefix", "sessions",
		"messages-per-session", "recipients", "size", "errors",
		"command-line", "text-line", "local-part", "timeout command",
		"timeout data", "timeout dot", "timeout connect",
		"min-data-rate", "hops", "tls-policy", "destination",
		"messages-per-connection", "recipients-per-message", "rate",
		"fallback-relay", "slow-after", "slow-retry", "milter",
		"milters", "socket", "connect-timeout", "command-timeout",
		"content-timeout", "default-action",
	};
	static const char *const examples[] = {
		"policy/examples/minimal.conf", "policy/examples/isp.conf",
		"policy/examples/failclosed-relayhost.conf",
	};
	char *man = slurp("man/mxbridge.conf.5"), *ex, want[128], xo[128];
	size_t i;

	for (i = 0; i < N(keywords); i++) {
		snprintf(want, sizeof(want), ".It Ic %s", keywords[i]);
		snprintf(xo, sizeof(xo), ".It Xo\n.Ic %s", keywords[i]);
		if (strstr(man, want) == NULL && strstr(man, xo) == NULL) {
			free(man);
			fail_msg("mxbridge.conf.5 lacks \"%s\"", want);
		}
	}
	for (i = 0; i < N(examples); i++) {
		ex = slurp(examples[i]);
		if (strstr(man, ex) == NULL) {
			free(ex);
			free(man);
			fail_msg("mxbridge.conf.5 does not show %s verbatim",
			    examples[i]);
		}
		free(ex);
	}
	free(man);
}

/*
 * Snapshot life and names
 */

static void
test_refcount(void **state UNUSED)
{
	struct policy *a = must_load(""), *b = must_load("hostname b.example");

	assert_int_equal(a->refcnt, 1);
	assert_ptr_equal(policy_ref(a), a);
	assert_int_equal(a->refcnt, 2);
	policy_set_current(a);		/* takes one reference */
	assert_ptr_equal(policy_current(), a);
	policy_set_current(b);
	assert_ptr_equal(policy_current(), b);
	assert_int_equal(a->refcnt, 1);
	policy_unref(a);
	policy_set_current(NULL);
	assert_null(policy_current());
	policy_unref(NULL);
}

static void
test_names(void **state UNUSED)
{
	assert_string_equal(policy_dir_name(POLICY_DIR_IN), "incoming");
	assert_string_equal(policy_dir_name(POLICY_DIR_OUT), "outgoing");
	assert_string_equal(policy_action_name(POLICY_PROXY), "proxy");
	assert_string_equal(policy_action_name(POLICY_PASS), "pass");
	assert_string_equal(policy_action_name(POLICY_DROP), "drop");
	assert_string_equal(policy_verdict_name(POLICY_RELAY), "relay");
	assert_string_equal(policy_verdict_name(POLICY_REJECT), "reject");
	assert_string_equal(policy_verdict_name(POLICY_DISCARD), "discard");
	assert_string_equal(policy_verdict_name(POLICY_TEMPFAIL), "tempfail");
	assert_string_equal(policy_route_name(POLICY_ROUTE_ORIGINAL),
	    "original");
	assert_string_equal(policy_route_name(POLICY_ROUTE_RELAYHOST),
	    "relayhost");
	assert_string_equal(policy_route_name(POLICY_ROUTE_MX), "mx");
	assert_string_equal(policy_starttls_name(POLICY_TLS_REQUIRE),
	    "require");
	assert_string_equal(policy_uptls_name(POLICY_UPTLS_SMTPS), "smtps");
	assert_string_equal(policy_cstls_name(POLICY_CSTLS_NONE), "none");
	assert_string_equal(policy_cstls_name(POLICY_CSTLS_OPPORTUNISTIC),
	    "opportunistic");
	assert_string_equal(policy_cstls_name(POLICY_CSTLS_REQUIRE),
	    "require");
	assert_string_equal(policy_dir_name((enum policy_dir)7), "unknown");
}

/*
 * test_tls_policy - "tls-policy": a host's entry before its domain's, the
 * exact domain before a ".parent" one, the default last, names folded
 */
static void
test_tls_policy(void **state UNUSED)
{
	struct policy *pol;
	const struct policy_tlspol *t;

	pol = must_load("tls-policy default may\n"
	    "tls-policy domain example.net encrypt\n"
	    "tls-policy domain .example.net verify on-failure bounce\n"
	    "tls-policy domain Partner.Example verify match "
	    "\"mx1.partner.example mx2.partner.example\"\n"
	    "tls-policy host mx.example.net none\n"
	    "tls-policy ca-file /etc/hostname\n"
	    "tls-policy min-protocol TLSv1.3\n"
	    "tls-policy ciphers \"ECDHE+AESGCM\"\n"
	    "tls-policy domain dane.example dane\n"
	    "tls-policy host mx.dane.example dane-only on-failure bounce\n");
	assert_int_equal(pol->tls_min_tls13, 1);
	assert_int_equal(pol->tls_trust_ad, POLICY_TRUSTAD_LOOPBACK);
	assert_string_equal(pol->tls_ciphers, "ECDHE+AESGCM");
	assert_int_equal(pol->ntlspol, 6);
	assert_string_equal(pol->tls_ca_file, "/etc/hostname");
	t = policy_tls_lookup(pol, "dane.example", "mx2.dane.example");
	assert_int_equal(t->level, POLICY_TLSL_DANE);
	t = policy_tls_lookup(pol, "dane.example", "mx.dane.example");
	assert_int_equal(t->level, POLICY_TLSL_DANE_ONLY);
	assert_int_equal(t->bounce, 1);
	t = policy_tls_lookup(pol, "example.net", "other.example.org");
	assert_non_null(t);
	assert_int_equal(t->level, POLICY_TLSL_ENCRYPT);
	assert_int_equal(t->bounce, 0);
	t = policy_tls_lookup(pol, "sub.example.net", NULL);
	assert_int_equal(t->level, POLICY_TLSL_VERIFY);
	assert_int_equal(t->bounce, 1);
	/* the host's entry wins over the domain's */
	t = policy_tls_lookup(pol, "example.net", "MX.example.net");
	assert_int_equal(t->level, POLICY_TLSL_NONE);
	t = policy_tls_lookup(pol, "partner.example", "mx1.partner.example");
	assert_int_equal(t->level, POLICY_TLSL_VERIFY);
	assert_string_equal(t->match, "mx1.partner.example mx2.partner.example");
	/* nothing else matches: the default */
	t = policy_tls_lookup(pol, "example.org", "mx.example.org");
	assert_ptr_equal(t, &pol->tlsdef);
	assert_int_equal(t->level, POLICY_TLSL_MAY);
	t = policy_tls_lookup(pol, "notexample.net", NULL);
	assert_ptr_equal(t, &pol->tlsdef);
	policy_unref(pol);
	/* without a default: no entry, the route's own setting */
	pol = must_load("tls-policy host relay.example.org verify\n");
	assert_null(policy_tls_lookup(pol, "example.net", NULL));
	assert_non_null(policy_tls_lookup(pol, NULL, "relay.example.org"));
	policy_unref(pol);
}

/*
 * test_cs_verify - "client-server tls verify": the names of the dialled
 * address's network first, the global match next, else none (the
 * address is checked); its own CA file before tls-policy's
 */
static void
test_cs_verify(void **state UNUSED)
{
	struct policy *pol;
	struct sockaddr_storage a = sa("192.0.2.7", 25),
	    b = sa("198.51.100.1", 25), c = sa("2001:db8::25", 25);

	pol = must_load("client-server tls verify match \"mx.example.org "
	    "mx2.example.org\" ca-file /etc/hostname\n"
	    "client-server match 192.0.2.0/28 \"smtp.partner.example\"\n"
	    "client-server match 192.0.2.0/24 \"other.example\"\n"
	    "tls-policy ca-file /etc/passwd\n");
	assert_int_equal(pol->cs_tls, POLICY_CSTLS_VERIFY);
	assert_int_equal(pol->ncsmatch, 2);
	assert_string_equal(policy_cs_match(pol, (struct sockaddr *)&a),
	    "smtp.partner.example");
	assert_string_equal(policy_cs_match(pol, (struct sockaddr *)&b),
	    "mx.example.org mx2.example.org");
	assert_string_equal(policy_cs_ca_file(pol), "/etc/hostname");
	policy_unref(pol);
	pol = must_load("client-server tls verify\n"
	    "client-server match 2001:db8::/32 mx.example.net\n"
	    "tls-policy ca-file /etc/passwd\n");
	assert_string_equal(policy_cs_match(pol, (struct sockaddr *)&c),
	    "mx.example.net");
	assert_null(policy_cs_match(pol, (struct sockaddr *)&a));
	assert_string_equal(policy_cs_ca_file(pol), "/etc/passwd");
	policy_unref(pol);
	pol = must_load("client-server tls verify\n");
	assert_null(policy_cs_ca_file(pol));
	assert_null(policy_cs_match(pol, (struct sockaddr *)&b));
	policy_unref(pol);
}

/* test_destinations - "destination" blocks over the queue's values */
static void
test_destinations(void **state UNUSED)
{
	struct policy *pol;
	struct policy_shape l;

	pol = must_load("queue { concurrency 7; messages-per-connection 30 }\n"
	    "destination \"Big.Example\" { concurrency 2 }\n"
	    "destination \".big.example\" { recipients-per-message 5 }\n");
	policy_dest_limits(pol, "big.example", &l);
	assert_int_equal(l.concurrency, 2);
	assert_int_equal(l.msgs_per_conn, 30);
	assert_int_equal(l.rcpts_per_msg, 50);
	policy_dest_limits(pol, "mx.big.example", &l);
	assert_int_equal(l.concurrency, 7);
	assert_int_equal(l.rcpts_per_msg, 5);
	policy_dest_limits(pol, "other.example", &l);
	assert_int_equal(l.concurrency, 7);
	assert_int_equal(l.msgs_per_conn, 30);
	policy_dest_limits(pol, NULL, &l);
	assert_int_equal(l.concurrency, 7);
	policy_unref(pol);
	/* the rate: the queue's unless the destination sets its own,
	 * "none" included */
	pol = must_load("queue { rate 100 per 1h }\n"
	    "destination \"a.example\" { rate 5 per 2s }\n"
	    "destination \"b.example\" { rate none }\n"
	    "destination \"c.example\" { concurrency 3 }\n");
	policy_dest_limits(pol, "a.example", &l);
	assert_int_equal(l.rate.n, 5);
	assert_int_equal(l.rate.per, 2);
	policy_dest_limits(pol, "b.example", &l);
	assert_int_equal(l.rate.n, 0);
	policy_dest_limits(pol, "c.example", &l);
	assert_int_equal(l.rate.n, 100);
	assert_int_equal(l.rate.per, 3600);
	policy_dest_limits(pol, NULL, &l);
	assert_int_equal(l.rate.n, 100);
	policy_unref(pol);
	pol = must_load("destination \"a.example\" { concurrency 3 }\n");
	policy_dest_limits(pol, "a.example", &l);
	assert_int_equal(l.rate.n, 0);
	policy_unref(pol);
	pol = must_load("fallback-relay relay.example.org port 2525 "
	    "after 10m\n");
	assert_string_equal(pol->fbrelay.host, "relay.example.org");
	assert_int_equal(pol->fbrelay.port, 2525);
	assert_int_equal(pol->fbrelay.after, 600);
	policy_unref(pol);
}

/* milters: the blocks, their sockets and defaults, the lookup by
 * direction and bridge port */
static void
test_milters(void **state UNUSED)
{
	const struct policy_milterset *ms;
	struct policy *pol;

	pol = must_load("milters incoming rspamd clamav\n"
	    "milters incoming port eth9 none\n"
	    "milters outgoing port eth1 dkim\n"
	    "milter rspamd { socket inet:127.0.0.1:11332; default-action "
	    "accept; content-timeout 2m }\n"
	    "milter clamav { socket unix:/run/clamav/milter.sock }\n"
	    "milter dkim { socket inet6:[::1]:8891 }\n"
	    "milter old { socket inet:8892@192.0.2.1 }\n");
	assert_int_equal(pol->nmilters, 4);
	assert_int_equal(pol->milters[0].defact, POLICY_MACT_ACCEPT);
	assert_int_equal(pol->milters[0].t_content, 120);
	assert_int_equal(pol->milters[0].t_connect, 30);
	assert_int_equal(pol->milters[1].defact, POLICY_MACT_TEMPFAIL);
	assert_string_equal(pol->milters[1].path, "/run/clamav/milter.sock");
	assert_int_equal(pol->milters[2].addr.ss_family, AF_INET6);
	assert_int_equal(addr_port((struct sockaddr *)&pol->milters[3].addr),
	    8892);
	ms = policy_milters(pol, POLICY_DIR_IN, "eth0");
	assert_non_null(ms);
	assert_int_equal(ms->n, 2);
	assert_string_equal(pol->milters[ms->idx[0]].name, "rspamd");
	assert_string_equal(pol->milters[ms->idx[1]].name, "clamav");
	assert_null(policy_milters(pol, POLICY_DIR_IN, "eth9"));
	assert_null(policy_milters(pol, POLICY_DIR_OUT, "eth0"));
	ms = policy_milters(pol, POLICY_DIR_OUT, "eth1");
	assert_non_null(ms);
	assert_string_equal(pol->milters[ms->idx[0]].name, "dkim");
	policy_unref(pol);
}

/* one table per enum: the name functions, the parser and the spool agree */
static void
test_enum_names(void **state UNUSED)
{
	static const struct {
		const char *const *names;
		int		 n;
	} rows[] = {
#define R(t, n)	{ policy_##t##_names, n }
		R(dir, 2), R(action, 3), R(starttls, 3), R(uptls, 4),
		R(verdict, 4), R(cstls, 4), R(route, 4), R(tlslevel, 6),
		R(trustad, 3),
#undef R
	};
	size_t i;
	int v;

	for (i = 0; i < N(rows); i++) {
		for (v = 0; v < rows[i].n; v++) {
			assert_non_null(rows[i].names[v]);
			assert_string_equal(policy_name(rows[i].names, v),
			    rows[i].names[v]);
			assert_int_equal(policy_name_index(rows[i].names,
			    rows[i].names[v]), v);
		}
		assert_null(rows[i].names[rows[i].n]);
		assert_string_equal(policy_name(rows[i].names, rows[i].n),
		    "unknown");
		assert_string_equal(policy_name(rows[i].names, -1), "unknown");
		assert_int_equal(policy_name_index(rows[i].names, "bogus"), -1);
	}
	/* the words each name function prints: test_names */
}

/*
 * The policy reads a local part with the SMTP parser's grammar
 * (smtp_local_part): what smtp_parse_path() refuses is never a protected
 * mailbox, and what it takes is one unless it could route ('%', '!', '@').
 */
static void
test_local_part_grammar(void **state UNUSED)
{
	static const char *const locals[] = {
		"alice", "a.b", "\"al ice\"", "\"a\\\"b\"", "j\xc3\xb6rg",
		"a..b", ".a", "a.", "a\"b\"", "\"a\x01\"", "\"open",
		"x%y", "x!y", "\"x@y\"", "\"x\\@y\"", "a b", "a\\b",
	};
	struct smtp_limits lim = { 64, 255, 1 };
	struct smtp_path path;
	struct policy *pol;
	char rcpt[128], arg[140];
	const char *why;
	size_t i;
	int syntax, routes;

	pol = must_load("domain example.com { server 192.0.2.10 }\n");
	for (i = 0; i < N(locals); i++) {
		snprintf(rcpt, sizeof(rcpt), "%s@example.com", locals[i]);
		snprintf(arg, sizeof(arg), "TO:<%s>", rcpt);
		memset(&path, 0, sizeof(path));
		syntax = smtp_parse_path(arg, "TO:", 0, &lim, &path, &why) == 0;
		smtp_path_free(&path);
		routes = strpbrk(locals[i], "%!@") != NULL;
		if (policy_rcpt_protected(pol, rcpt) != (syntax && !routes))
			fail_msg("%s: smtp says %s, policy says %s", rcpt,
			    syntax ? "valid" : "invalid",
			    syntax && !routes ? "unprotected" : "protected");
	}
	assert_int_equal(policy_rcpt_protected(pol, "alice@example.com"), 1);
	assert_int_equal(policy_rcpt_protected(pol, "a..b@example.com"), 0);
	policy_unref(pol);

	/* host names: the same LDH grammar, one trailing dot, 253 bytes */
	assert_int_equal(policy_valid_domain("example.com"), 1);
	assert_int_equal(policy_valid_domain("example.com."), 1);
	assert_int_equal(policy_valid_domain("example.com.."), 0);
	assert_int_equal(policy_valid_domain("-a.example"), 0);
	assert_int_equal(policy_valid_domain("a-.example"), 0);
	assert_int_equal(policy_valid_domain("a_b.example"), 0);
	assert_int_equal(policy_valid_domain(""), 0);
	assert_int_equal(policy_valid_domain("."), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_example_minimal),
		cmocka_unit_test(test_example_isp),
		cmocka_unit_test(test_example_failclosed),
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_workers),
		cmocka_unit_test(test_classifier),
		cmocka_unit_test(test_tls_policy),
		cmocka_unit_test(test_cs_verify),
		cmocka_unit_test(test_destinations),
		cmocka_unit_test(test_milters),
		cmocka_unit_test(test_enum_names),
		cmocka_unit_test(test_local_part_grammar),
		cmocka_unit_test(test_values),
		cmocka_unit_test(test_syntax),
		cmocka_unit_test(test_rules_parsed),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_error_nofile),
		cmocka_unit_test(test_auth_file),
		cmocka_unit_test(test_ranges),
		cmocka_unit_test(test_classify),
		cmocka_unit_test(test_metrics_allow),
		cmocka_unit_test(test_classify_to_box),
		cmocka_unit_test(test_servers),
		cmocka_unit_test(test_warn_nodomain),
		cmocka_unit_test(test_honour),
		cmocka_unit_test(test_route),
		cmocka_unit_test(test_check_rcpt),
		cmocka_unit_test(test_open_relay),
		cmocka_unit_test(test_open_relay_allowed),
		cmocka_unit_test(test_rcpt_protected),
		cmocka_unit_test(test_check_rcpt_live),
		cmocka_unit_test(test_verify_rcpt),
		cmocka_unit_test(test_hide_box),
		cmocka_unit_test(test_conn_admit),
		cmocka_unit_test(test_manpage),
		cmocka_unit_test(test_refcount),
		cmocka_unit_test(test_names),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
