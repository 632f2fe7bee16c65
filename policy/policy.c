/*
 * policy.c - the life of a policy snapshot: its defaults, reference
 * counting, the process-wide current snapshot, freeing, and the printable
 * names of the policy enums.  Parsing lives in parse.c, decisions in
 * decide.c.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../common/log.h"
#include "../common/xmalloc.h"
#include "policy.h"
#include "policy_local.h"

static struct policy	*policy_cur;

/* policy_new - an empty snapshot holding every default, one reference */
struct policy *
policy_new(const char *path)
{
	struct policy *pol;

	pol = xcalloc(1, sizeof(*pol));
	pol->refcnt = 1;
	pol->path = xstrdup(path);
	pol->spool = xstrdup("/var/spool/mxbridge");
	pol->pidfile = xstrdup("/run/mxbridge.pid");
	pol->control = xstrdup("/run/mxbridge.sock");
	pol->user = xstrdup(POLICY_DEFAULT_USER);
	pol->control_gid = -1;
	pol->queue_num = 0;
	pol->workers = 0;	/* auto */
	pol->queue_buffer = 2 << 20;
	pol->listen_port[POLICY_DIR_IN] = 10025;
	pol->listen_port[POLICY_DIR_OUT] = 10026;
	pol->log_verbose = 0;
	pol->shutdown_grace = 30;
	pol->starttls[POLICY_DIR_IN] = POLICY_TLS_STRIP;
	pol->starttls[POLICY_DIR_OUT] = POLICY_TLS_STRIP;
	pol->default_action[POLICY_DIR_IN] = POLICY_PROXY;
	pol->default_action[POLICY_DIR_OUT] = POLICY_PROXY;
	pol->default_honour = 1;
	pol->cs_tls = POLICY_CSTLS_OPPORTUNISTIC;	/* finish() may change */
	pol->hide_box_out = 0;
	pol->relay.port = 25;
	pol->relay.tls = POLICY_UPTLS_OPPORTUNISTIC;
	pol->fbrelay.port = 25;
	pol->fbrelay.after = 3600;

	pol->queue.retry_min = 5 * 60;
	pol->queue.retry_max = 60 * 60;
	pol->queue.lifetime = 5 * 86400;
	pol->queue.warn = 4 * 3600;
	pol->queue.dsn_lifetime = 2 * 86400;
	pol->queue.dead_retention = 7 * 86400;
	pol->queue.min_free = 100ULL << 20;
	pol->queue.fsync = 1;
	pol->queue.concurrency = 10;
	pol->queue.msgs_per_conn = 100;
	pol->queue.rcpts_per_msg = 50;	/* Postfix's default */
	pol->queue.slow_after = 3;
	pol->queue.slow_retry = 3600;
	pol->queue.dns_timeout = 30;
	pol->queue.resolve_timeout = 90;
	pol->queue.max_addresses = 5;

	pol->limits.conn_per_client = 50;
	pol->limits.conn_rate = 0;
	pol->limits.conn_rate_window = 60;
	pol->limits.client_prefix4 = 32;
	pol->limits.client_prefix6 = 64;
	pol->limits.sessions = 0;		/* derived: proxy/listener.c */
	pol->limits.msgs_per_session = 100;
	pol->limits.rcpts = 100;
	pol->limits.size = 35ULL << 20;
	pol->limits.errors = 10;
	pol->limits.cmd_line = 512;
	pol->limits.text_line = 1000;
	pol->limits.localpart = 64;
	pol->limits.domain = 255;
	pol->limits.t_cmd = 5 * 60;
	pol->limits.t_data = 3 * 60;
	pol->limits.t_dot = 10 * 60;
	pol->limits.t_connect = 30;
	pol->limits.min_rate = 100;
	pol->limits.hops = 100;
	return pol;
}

/* policy_free_secret - wipe a secret before giving its memory back */
static void
policy_free_secret(char *s)
{
	if (s == NULL)
		return;
	explicit_bzero(s, strlen(s));
	free(s);
}

/* policy_free - release a snapshot and everything it owns */
void
policy_free(struct policy *pol)
{
	size_t i;
	int j;

	if (pol == NULL)
		return;
	free(pol->path);
	free(pol->hostname);
	free(pol->spool);
	free(pol->pidfile);
	free(pol->control);
	free(pol->user);
	free(pol->control_group);
	free(pol->tls_cert);
	free(pol->tls_key);
	free(pol->ports);
	for (i = 0; i < pol->ndomains; i++) {
		free(pol->domains[i].name);
		free(pol->domains[i].server);
		for (j = 0; j < pol->domains[i].naddr; j++)
			free(pol->domains[i].host[j]);
		free(pol->domains[i].fallback);
	}
	free(pol->domains);
	free(pol->relay.host);
	free(pol->relay.auth_file);
	free(pol->relay.ca_file);
	for (i = 0; i < pol->ntlspol; i++) {
		free(pol->tlspol[i].name);
		free(pol->tlspol[i].match);
	}
	free(pol->tlspol);
	free(pol->tlsdef.match);
	free(pol->tls_ca_file);
	free(pol->cs_match);
	free(pol->cs_ca_file);
	for (i = 0; i < pol->ncsmatch; i++)
		free(pol->csmatch[i].names);
	free(pol->csmatch);
	free(pol->fbrelay.host);
	for (i = 0; i < pol->nshapes; i++)
		free(pol->shapes[i].name);
	free(pol->shapes);
	for (i = 0; i < pol->nmilters; i++) {
		free(pol->milters[i].name);
		free(pol->milters[i].socket);
		free(pol->milters[i].path);
	}
	free(pol->milters);
	for (i = 0; i < pol->nmiltersets; i++)
		free(pol->miltersets[i].idx);
	free(pol->miltersets);
	free(pol->tls_ciphers);
	policy_free_secret(pol->relay.auth_user);
	policy_free_secret(pol->relay.auth_pass);
	for (i = 0; i < pol->nrules; i++) {
		free(pol->rules[i].from);
		free(pol->rules[i].to);
		free(pol->rules[i].message);
	}
	free(pol->rules);
	free(pol->honours);
	free(pol->bypass_client);
	free(pol->bypass_server);
	free(pol->metrics_allow);
	free(pol);
}

struct policy *
policy_ref(struct policy *pol)
{
	__atomic_add_fetch(&pol->refcnt, 1, __ATOMIC_RELAXED);
	return pol;
}

void
policy_unref(struct policy *pol)
{
	if (pol == NULL)
		return;
	if (__atomic_sub_fetch(&pol->refcnt, 1, __ATOMIC_ACQ_REL) == 0)
		policy_free(pol);
}

/*
 * policy_current - the snapshot new work starts with.  The pointer is
 * owned by the current-slot; a caller that keeps it beyond the current
 * event loop callback must take its own reference with policy_ref().
 *
 * A worker thread has a slot of its own (policy_thread_set), moved only
 * by that thread when the daemon's reload message reaches it: a loop
 * callback's snapshot cannot be freed under it by a reload on another
 * thread.  Other threads read the process's slot, which only the
 * daemon's thread sets.
 */
static _Thread_local struct policy	*policy_thr;

struct policy *
policy_current(void)
{
	if (policy_thr != NULL)
		return policy_thr;
	return __atomic_load_n(&policy_cur, __ATOMIC_ACQUIRE);
}

/* policy_set_current - install pol (taking over the caller's reference) */
void
policy_set_current(struct policy *pol)
{
	struct policy *old;

	old = __atomic_exchange_n(&policy_cur, pol, __ATOMIC_ACQ_REL);
	policy_unref(old);
}

/*
 * policy_thread_set - this thread's current snapshot (taking over the
 * caller's reference; NULL drops it): a worker's, handed over by the
 * daemon's thread with a reference taken there
 */
void
policy_thread_set(struct policy *pol)
{
	struct policy *old = policy_thr;

	policy_thr = pol;
	policy_unref(old);
}

/*
 * policy_hostname - this box's name in greetings, EHLO, Received: and
 * DSNs: the hostname statement, or the system's name that the loader put
 * there (finish() in parse.c, the one place it is looked up); "localhost"
 * only before any policy is loaded.
 */
const char *
policy_hostname(const struct policy *pol)
{
	if (pol == NULL || pol->hostname == NULL || pol->hostname[0] == '\0')
		return "localhost";
	return pol->hostname;
}

/*
 * policy_workers - the number of worker loops "workers" asks for: N, or
 * for auto the online cores (at least 1, at most POLICY_MAXWORKERS and
 * never past queue 65535). Read once at start; a reload cannot change it.
 */
unsigned
policy_workers(const struct policy *pol)
{
	long n;

	if (pol == NULL)
		return 1;
	if (pol->workers != 0)
		return pol->workers;
	n = sysconf(_SC_NPROCESSORS_ONLN);
	if (n < 1)
		n = 1;
	if (n > POLICY_MAXWORKERS)
		n = POLICY_MAXWORKERS;
	if ((unsigned long)n > 65536UL - pol->queue_num)
		n = (long)(65536UL - pol->queue_num);
	return (unsigned)n;
}

/*
 * Each enum's words in enum order, NULL ended: the configuration's
 * keywords (parse.c), the names in logs and control answers, and the
 * spool's fields (mta/envelope.c), from this one table each.
 */
const char *const policy_dir_names[] = { "incoming", "outgoing", NULL };
const char *const policy_action_names[] = { "proxy", "pass", "drop", NULL };
const char *const policy_starttls_names[] = { "offer", "require", "strip",
	NULL };
const char *const policy_uptls_names[] = { "opportunistic", "none",
	"starttls", "smtps", NULL };
const char *const policy_verdict_names[] = { "relay", "reject", "discard",
	"tempfail", NULL };
const char *const policy_cstls_names[] = { "none", "opportunistic",
	"require", "verify", NULL };
const char *const policy_route_names[] = { "original", "relayhost", "mx",
	"fallback", NULL };
const char *const policy_mact_names[] = { "tempfail", "accept", "reject",
	NULL };
const char *const policy_tlslevel_names[] = { "none", "may", "encrypt",
	"verify", "dane", "dane-only", NULL };
const char *const policy_trustad_names[] = { "loopback", "yes", "no", NULL };

/* policy_name - the word of value v in names, or "unknown" */
const char *
policy_name(const char *const *names, int v)
{
	int i;

	for (i = 0; names[i] != NULL; i++)
		if (i == v)
			return names[i];
	return "unknown";
}

/* policy_name_index - the value whose word is s, or -1 */
int
policy_name_index(const char *const *names, const char *s)
{
	int i;

	for (i = 0; names[i] != NULL; i++)
		if (strcmp(s, names[i]) == 0)
			return i;
	return -1;
}

const char *
policy_dir_name(enum policy_dir dir)
{
	return policy_name(policy_dir_names, dir);
}

const char *
policy_action_name(enum policy_action action)
{
	return policy_name(policy_action_names, action);
}

const char *
policy_verdict_name(enum policy_verdict verdict)
{
	return policy_name(policy_verdict_names, verdict);
}

const char *
policy_route_name(enum policy_route route)
{
	return policy_name(policy_route_names, route);
}

const char *
policy_starttls_name(enum policy_starttls mode)
{
	return policy_name(policy_starttls_names, mode);
}

const char *
policy_uptls_name(enum policy_uptls mode)
{
	return policy_name(policy_uptls_names, mode);
}

const char *
policy_cstls_name(enum policy_cstls mode)
{
	return policy_name(policy_cstls_names, mode);
}

const char *
policy_cs_match(const struct policy *pol, const struct sockaddr *dst)
{
	size_t i;

	for (i = 0; i < pol->ncsmatch; i++)
		if (addr_net_match(&pol->csmatch[i].net, dst))
			return pol->csmatch[i].names;
	return pol->cs_match;
}

const char *
policy_cs_ca_file(const struct policy *pol)
{
	return pol->cs_ca_file != NULL ? pol->cs_ca_file : pol->tls_ca_file;
}
