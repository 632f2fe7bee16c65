/*
 * envelope.c - the queued message's envelope in memory and on disk.
 * It owns the spool file's header format and the per-message state file
 * format, both line based and versioned:
 *
 *	MXBQ 1			(state file: MXBS 1)
 *	msg id=... arrival=... from=... bodylen=... bodysum=...
 *	rcpt addr=... route=mx state=pending attempts=0 next=...
 *	end sum=<FNV-1a of every byte above>
 *
 * Values are percent-encoded (bytes outside 0x21..0x7e, '%'), so a line
 * splits on spaces and a field on its first '='.  The message body
 * follows the end line; its length and checksum are in the msg line, so a
 * torn or truncated file never parses.
 *
 * A message on hold has "hold=1 holdsince=T holdreason=..." in its msg
 * line (held as it was queued) or its state line (held later), and
 * "heldfor=N" once it was released; a file without them is not held.
 * The state line, when there is a state file, says all of the hold.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>

#include "../common/addr.h"
#include "../common/hash.h"
#include "../common/log.h"
#include "../common/xmalloc.h"
#include "mta_local.h"

#define ENV_MAGIC	"MXBQ 1\n"
#define STATE_MAGIC	"MXBS 1\n"
#define ENV_MAXFIELDS	32

struct field {
	char	*key;
	char	*val;		/* decoded in place */
};

static uint64_t	env_mem_total;

struct mta_env *
mta_env_new(void)
{
	struct mta_env *env;

	env = xcalloc(1, sizeof(*env));
	env->sender = xstrdup("");
	buf_init(&env->mem);
	return env;
}

/*
 * mta_env_mem_take - keep the committed body (taken over from b) so the
 * first delivery sends it from memory instead of reading the file back;
 * over MTA_MEMBODIES in all, b is left alone and delivery reads the file.
 */
void
mta_env_mem_take(struct mta_env *env, struct buf *b)
{
	if (env->mem.data != NULL || b->len != env->bodylen ||
	    env_mem_total + b->cap > MTA_MEMBODIES)
		return;
	env->mem = *b;
	env_mem_total += env->mem.cap;
	buf_init(b);
}

/* mta_env_mem_drop - delivery reads the file from now on */
void
mta_env_mem_drop(struct mta_env *env)
{
	if (env->mem.data == NULL)
		return;
	env_mem_total -= env->mem.cap;
	buf_free(&env->mem);
}

static void
rcpt_clear(struct mta_rcpt *r)
{
	free(r->addr);
	free(r->orcpt);
	free(r->status);
	free(r->remote);
	free(r->diag);
}

void
mta_env_free(struct mta_env *env)
{
	size_t i;

	if (env == NULL)
		return;
	mta_env_mem_drop(env);
	for (i = 0; i < env->nrcpt; i++)
		rcpt_clear(&env->rcpt[i]);
	free(env->rcpt);
	free(env->helo);
	free(env->tls);
	free(env->auth);
	free(env->sender);
	free(env->envid);
	free(env->received);
	free(env->hold_reason);
	free(env);
}

void
mta_rcpt_add(struct mta_env *env, const char *addr, const char *orcpt,
    unsigned notify, enum policy_route route)
{
	struct mta_rcpt *r;

	env->rcpt = xreallocarray(env->rcpt, env->nrcpt + 1, sizeof(*r));
	r = &env->rcpt[env->nrcpt++];
	memset(r, 0, sizeof(*r));
	r->addr = xstrdup(addr);
	r->orcpt = orcpt != NULL && *orcpt != '\0' ? xstrdup(orcpt) : NULL;
	r->notify = notify;
	r->route = route;
	r->state = MTA_RCPT_PENDING;
}

unsigned
mta_rcpt_del(struct mta_env *env, const char *addr)
{
	size_t i = 0;
	unsigned n = 0;

	while (i < env->nrcpt) {
		if (strcasecmp(env->rcpt[i].addr, addr) != 0) {
			i++;
			continue;
		}
		rcpt_clear(&env->rcpt[i]);
		memmove(&env->rcpt[i], &env->rcpt[i + 1],
		    (env->nrcpt - i - 1) * sizeof(*env->rcpt));
		env->nrcpt--;
		n++;
	}
	return n;
}

int
mta_id_valid(const char *id)
{
	size_t i;

	for (i = 0; i < MTA_IDLEN; i++)
		if (!isxdigit((unsigned char)id[i]) || isupper((unsigned char)id[i]))
			return 0;
	return id[MTA_IDLEN] == '\0';
}

/*
 * mta_id_make - a new queue id: microseconds since the epoch shifted left
 * by 8, strictly increasing within the process, so ids sort by arrival
 * and do not repeat across restarts unless the clock goes back.  The
 * last id is shared by every thread that makes one (worker sessions
 * submit messages): taken with a compare-and-swap, so two threads never
 * get the same id.
 */
static _Atomic uint64_t	mta_id_last;

void
mta_id_make(char *out)
{
	struct timeval tv;
	uint64_t v, last;

	gettimeofday(&tv, NULL);
	v = ((uint64_t)tv.tv_sec * 1000000 + (uint64_t)tv.tv_usec) << 8;
	last = atomic_load_explicit(&mta_id_last, memory_order_relaxed);
	do {
		if (v <= last)
			v = last + 1;
	} while (!atomic_compare_exchange_weak_explicit(&mta_id_last, &last, v,
	    memory_order_relaxed, memory_order_relaxed));
	snprintf(out, MTA_IDLEN + 1, "%016llx", (unsigned long long)v);
}

/*
 * The words of the MTA's enums, in enum order, NULL ended: one table for
 * the spool files, "queue show" and the log lines.  RET also has its
 * ESMTP spelling, the parameter sent to the next hop.
 */
static const char *const rstate_names[] = { "pending", "delivered",
	"failed", NULL };
static const char *const ret_names[] = { "unset", "full", "hdrs", NULL };
static const char *const ret_params[] = { NULL, "FULL", "HDRS" };

const char *
mta_rstate_name(enum mta_rstate s)
{
	return policy_name(rstate_names, s);
}

const char *
mta_ret_name(enum mta_ret r)
{
	return policy_name(ret_names, r);
}

/* mta_ret_param - the RET= value to send, or NULL for none */
const char *
mta_ret_param(enum mta_ret r)
{
	return r == MTA_RET_FULL || r == MTA_RET_HDRS ? ret_params[r] : NULL;
}

/* mta_now_ms - the wall clock in unix milliseconds */
uint64_t
mta_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/*
 * mta_now - the queue's clock in seconds: the same clock as mta_now_ms,
 * which stamps a message's arrival.  Not time(2): it reads the coarse
 * clock, up to a tick behind, so a message made just after a second
 * turned looked a second younger than its arrival (an age of -1, and a
 * lifetime of 0 did not expire it).
 */
time_t
mta_now(void)
{
	return (time_t)(mta_now_ms() / 1000);
}

/* mta_addr_domain - the part after the last '@', or "" */
const char *
mta_addr_domain(const char *addr)
{
	const char *at = strrchr(addr, '@');

	return at != NULL ? at + 1 : "";
}

/*
 * mta_notify_wants - does a NOTIFY value ask for this kind of DSN?  With
 * no NOTIFY the default of RFC 3461 4.1 applies: FAILURE and DELAY.
 */
int
mta_notify_wants(unsigned notify, unsigned what)
{
	if (notify == 0)
		notify = MTA_NOTIFY_FAILURE | MTA_NOTIFY_DELAY;
	if (notify & MTA_NOTIFY_NEVER)
		return 0;
	return (notify & what) != 0;
}

/*
 * Encoding
 */

static void
put_enc(struct buf *b, const char *key, const char *val)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *s;
	char tmp[3];

	if (val == NULL)
		return;
	buf_printf(b, " %s=", key);
	for (s = (const unsigned char *)val; *s != '\0'; s++) {
		if (*s > 0x20 && *s < 0x7f && *s != '%') {
			buf_append(b, s, 1);
			continue;
		}
		tmp[0] = '%';
		tmp[1] = hex[*s >> 4];
		tmp[2] = hex[*s & 15];
		buf_append(b, tmp, 3);
	}
}

static void
put_num(struct buf *b, const char *key, unsigned long long v)
{
	buf_printf(b, " %s=%llu", key, v);
}

static void
put_addr(struct buf *b, const char *key, const struct sockaddr_storage *ss)
{
	char tmp[ADDR_STRLEN];

	if (ss->ss_family != AF_INET && ss->ss_family != AF_INET6)
		return;
	put_enc(b, key, addr_fmt((const struct sockaddr *)ss, tmp,
	    sizeof(tmp)));
}

static int
hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* decode - undo put_enc in place; -1 on a bad escape or a NUL */
static int
decode(char *s)
{
	char *o = s;
	int hi, lo;

	for (; *s != '\0'; s++) {
		if (*s != '%') {
			*o++ = *s;
			continue;
		}
		if ((hi = hexval(s[1])) == -1 || (lo = hexval(s[2])) == -1 ||
		    (hi == 0 && lo == 0))
			return -1;
		*o++ = (char)(hi << 4 | lo);
		s += 2;
	}
	*o = '\0';
	return 0;
}


static void
rcpt_serialize(const struct mta_rcpt *r, struct buf *b)
{
	buf_puts(b, "rcpt");
	put_enc(b, "addr", r->addr);
	put_enc(b, "orcpt", r->orcpt);
	put_num(b, "notify", r->notify);
	buf_printf(b, " route=%s state=%s", policy_route_name(r->route),
	    mta_rstate_name(r->state));
	put_num(b, "attempts", r->attempts);
	put_num(b, "next", (unsigned long long)r->next);
	put_num(b, "last", (unsigned long long)r->last);
	put_enc(b, "status", r->status);
	put_enc(b, "remote", r->remote);
	put_enc(b, "diag", r->diag);
	put_num(b, "notified", (unsigned)r->notified);
	put_num(b, "relayed", (unsigned)r->relayed);
	buf_puts(b, "\n");
}

/* hold_serialize - the hold fields, written only when there is
 * something to say: a message never held has the format of old */
static void
hold_serialize(const struct mta_env *env, struct buf *b)
{
	if (env->held) {
		put_num(b, "hold", 1);
		put_num(b, "holdsince", (unsigned long long)env->hold_since);
		put_enc(b, "holdreason", env->hold_reason);
	}
	if (env->held_for > 0)
		put_num(b, "heldfor", (unsigned long long)env->held_for);
}

static void
end_line(struct buf *b, size_t start)
{
	buf_printf(b, "end sum=%016llx\n", (unsigned long long)
	    hash_fnv(HASH_FNV_INIT, b->data + start, b->len - start));
}

/* mta_env_serialize - the whole header, ending with its end line */
void
mta_env_serialize(const struct mta_env *env, struct buf *b)
{
	size_t start = b->len, i;

	buf_puts(b, ENV_MAGIC);
	buf_printf(b, "msg id=%s", env->id);
	put_num(b, "arrival", (unsigned long long)env->arrival);
	put_num(b, "session", env->session);
	put_addr(b, "client", &env->client);
	put_addr(b, "origdst", &env->orig_dst);
	buf_printf(b, " dir=%s", env->dir == POLICY_DIR_IN ? "in" : "out");
	put_enc(b, "helo", env->helo);
	put_enc(b, "tls", env->tls);
	put_enc(b, "auth", env->auth);
	put_enc(b, "from", env->sender);
	put_enc(b, "envid", env->envid);
	buf_printf(b, " ret=%s", mta_ret_name(env->ret));
	put_num(b, "size", env->size);
	put_num(b, "body8", (unsigned)env->body8);
	put_num(b, "smtputf8", (unsigned)env->smtputf8);
	put_enc(b, "received", env->received);
	put_num(b, "bodylen", env->bodylen);
	buf_printf(b, " bodysum=%016llx", (unsigned long long)env->bodysum);
	put_num(b, "warned", (unsigned)env->warned);
	hold_serialize(env, b);
	/* newer fields only when known: a file without them reads as before */
	if (env->arrival_ms != 0)
		put_num(b, "arrivalms", env->arrival_ms);
	if (env->queued_ms != 0)
		put_num(b, "queuedms", env->queued_ms);
	buf_puts(b, "\n");
	for (i = 0; i < env->nrcpt; i++)
		rcpt_serialize(&env->rcpt[i], b);
	end_line(b, start);
}

/* mta_state_serialize - the state file: what changes after queuing */
void
mta_state_serialize(const struct mta_env *env, struct buf *b)
{
	size_t start = b->len, i;

	buf_puts(b, STATE_MAGIC);
	buf_printf(b, "state id=%s", env->id);
	put_num(b, "warned", (unsigned)env->warned);
	put_num(b, "nrcpt", env->nrcpt);
	hold_serialize(env, b);
	buf_puts(b, "\n");
	for (i = 0; i < env->nrcpt; i++)
		rcpt_serialize(&env->rcpt[i], b);
	end_line(b, start);
}

/*
 * Parsing
 */

/* split - "tag k=v k=v" into fields, decoding values; -1 if malformed */
static int
split(char *line, char **tag, struct field *f, size_t *nf)
{
	char *save = NULL, *w, *eq;

	*nf = 0;
	if ((*tag = strtok_r(line, " ", &save)) == NULL)
		return -1;
	while ((w = strtok_r(NULL, " ", &save)) != NULL) {
		if (*nf == ENV_MAXFIELDS || (eq = strchr(w, '=')) == NULL)
			return -1;
		*eq = '\0';
		f[*nf].key = w;
		f[*nf].val = eq + 1;
		if (decode(f[*nf].val) == -1)
			return -1;
		(*nf)++;
	}
	return 0;
}

static int
num(const char *s, unsigned long long *v)
{
	char *end;

	if (!isdigit((unsigned char)*s))
		return -1;
	*v = strtoull(s, &end, 10);
	return *end == '\0' ? 0 : -1;
}

static int
hexnum(const char *s, uint64_t *v)
{
	char *end;

	if (!isxdigit((unsigned char)*s))
		return -1;
	*v = strtoull(s, &end, 16);
	return *end == '\0' ? 0 : -1;
}

/* parse_addr - "a.b.c.d:port" or "[v6]:port" */
static int
parse_addr(const char *s, struct sockaddr_storage *ss)
{
	char tmp[ADDR_STRLEN];
	const char *colon = strrchr(s, ':');
	unsigned long long port;

	if (colon == NULL || (size_t)(colon - s) >= sizeof(tmp) ||
	    num(colon + 1, &port) == -1 || port > 65535)
		return -1;
	memcpy(tmp, s, colon - s);
	tmp[colon - s] = '\0';
	return addr_parse(tmp, (uint16_t)port, ss);
}

static void
set_str(char **dst, const char *v)
{
	free(*dst);
	*dst = xstrdup(v);
}

/*
 * hold_field - a hold field of the msg or the state line: 1 if f is one
 * (0 or -1 in *rc), 0 if it is not
 */
static int
hold_field(struct mta_env *env, const struct field *f, int *rc)
{
	unsigned long long v;
	const char *k = f->key;

	*rc = 0;
	if (strcmp(k, "holdreason") == 0) {
		set_str(&env->hold_reason, f->val);
		return 1;
	}
	if (strcmp(k, "hold") != 0 && strcmp(k, "holdsince") != 0 &&
	    strcmp(k, "heldfor") != 0)
		return 0;
	if (num(f->val, &v) == -1)
		*rc = -1;
	else if (strcmp(k, "hold") == 0)
		env->held = v != 0;
	else if (strcmp(k, "holdsince") == 0)
		env->hold_since = (time_t)v;
	else
		env->held_for = (time_t)v;
	return 1;
}

/* msg_field - one field of the msg line */
static int
msg_field(struct mta_env *env, const struct field *f)
{
	unsigned long long v = 0;
	int i;
	const char *k = f->key;

	if (hold_field(env, f, &i))
		return i;
	if (strcmp(k, "id") == 0) {
		if (!mta_id_valid(f->val))
			return -1;
		memcpy(env->id, f->val, MTA_IDLEN + 1);
	} else if (strcmp(k, "client") == 0)
		return parse_addr(f->val, &env->client);
	else if (strcmp(k, "origdst") == 0)
		return parse_addr(f->val, &env->orig_dst);
	else if (strcmp(k, "dir") == 0)
		env->dir = strcmp(f->val, "in") == 0 ? POLICY_DIR_IN :
		    POLICY_DIR_OUT;
	else if (strcmp(k, "helo") == 0)
		set_str(&env->helo, f->val);
	else if (strcmp(k, "tls") == 0)
		set_str(&env->tls, f->val);
	else if (strcmp(k, "auth") == 0)
		set_str(&env->auth, f->val);
	else if (strcmp(k, "from") == 0)
		set_str(&env->sender, f->val);
	else if (strcmp(k, "envid") == 0)
		set_str(&env->envid, f->val);
	else if (strcmp(k, "received") == 0)
		set_str(&env->received, f->val);
	else if (strcmp(k, "ret") == 0)
		env->ret = (i = policy_name_index(ret_names, f->val)) != -1 ?
		    (enum mta_ret)i : MTA_RET_UNSET;
	else if (strcmp(k, "bodysum") == 0)
		return hexnum(f->val, &env->bodysum);
	else {
		if (num(f->val, &v) == -1)
			return -1;
		if (strcmp(k, "arrival") == 0)
			env->arrival = (time_t)v;
		else if (strcmp(k, "session") == 0)
			env->session = v;
		else if (strcmp(k, "size") == 0)
			env->size = v;
		else if (strcmp(k, "body8") == 0)
			env->body8 = v != 0;
		else if (strcmp(k, "smtputf8") == 0)
			env->smtputf8 = v != 0;
		else if (strcmp(k, "bodylen") == 0)
			env->bodylen = v;
		else if (strcmp(k, "warned") == 0)
			env->warned = v != 0;
		else if (strcmp(k, "arrivalms") == 0)
			env->arrival_ms = v;
		else if (strcmp(k, "queuedms") == 0)
			env->queued_ms = v;
		/* unknown numeric fields are from a newer minor version */
	}
	return 0;
}

/* rcpt_field - one field of a rcpt line */
static int
rcpt_field(struct mta_rcpt *r, const struct field *f)
{
	unsigned long long v = 0;
	const char *k = f->key;
	int i;

	if (strcmp(k, "addr") == 0)
		set_str(&r->addr, f->val);
	else if (strcmp(k, "orcpt") == 0)
		set_str(&r->orcpt, f->val);
	else if (strcmp(k, "status") == 0)
		set_str(&r->status, f->val);
	else if (strcmp(k, "remote") == 0)
		set_str(&r->remote, f->val);
	else if (strcmp(k, "diag") == 0)
		set_str(&r->diag, f->val);
	else if (strcmp(k, "route") == 0) {
		if ((i = policy_name_index(policy_route_names, f->val)) == -1)
			return -1;
		r->route = (enum policy_route)i;
	} else if (strcmp(k, "state") == 0) {
		if ((i = policy_name_index(rstate_names, f->val)) == -1)
			return -1;
		r->state = (enum mta_rstate)i;
	} else {
		if (num(f->val, &v) == -1)
			return -1;
		if (strcmp(k, "notify") == 0)
			r->notify = (unsigned)v;
		else if (strcmp(k, "attempts") == 0)
			r->attempts = (unsigned)v;
		else if (strcmp(k, "next") == 0)
			r->next = (time_t)v;
		else if (strcmp(k, "last") == 0)
			r->last = (time_t)v;
		else if (strcmp(k, "notified") == 0)
			r->notified = v != 0;
		else if (strcmp(k, "relayed") == 0)
			r->relayed = v != 0;
	}
	return 0;
}

/* parse_rcpt - a rcpt line into a fresh struct */
static int
parse_rcpt(struct field *f, size_t nf, struct mta_rcpt *r)
{
	size_t i;

	memset(r, 0, sizeof(*r));
	for (i = 0; i < nf; i++)
		if (rcpt_field(r, &f[i]) == -1)
			return -1;
	return r->addr != NULL ? 0 : -1;
}

/*
 * header_end - check the magic and the end line of a header in buf;
 * returns the header length (the body offset) or 0 if it is not whole.
 */
static size_t
header_end(const char *buf, size_t len, const char *magic)
{
	const char *p = buf, *nl;
	uint64_t want;
	char sum[32];

	if (len < strlen(magic) || memcmp(buf, magic, strlen(magic)) != 0)
		return 0;
	while ((nl = memchr(p, '\n', len - (p - buf))) != NULL) {
		if (nl - p > 8 && memcmp(p, "end sum=", 8) == 0) {
			if ((size_t)(nl - p - 8) >= sizeof(sum))
				return 0;
			memcpy(sum, p + 8, nl - p - 8);
			sum[nl - p - 8] = '\0';
			if (hexnum(sum, &want) == -1 ||
			    want != hash_fnv(HASH_FNV_INIT, buf, p - buf))
				return 0;
			return (size_t)(nl - buf) + 1;
		}
		p = nl + 1;
	}
	return 0;
}

/* parse_lines - every line between the magic and the end line */
static int
parse_lines(char *text, struct mta_env *env, int state, size_t *nrcpt_want)
{
	struct field f[ENV_MAXFIELDS];
	struct mta_rcpt r;
	char *line, *save = NULL, *tag;
	size_t nf, i;
	unsigned long long v;
	int rc;

	for (line = strtok_r(text, "\n", &save); line != NULL;
	    line = strtok_r(NULL, "\n", &save)) {
		if (split(line, &tag, f, &nf) == -1)
			return -1;
		if (strcmp(tag, "rcpt") == 0) {
			if (parse_rcpt(f, nf, &r) == -1) {
				free(r.addr);
				free(r.orcpt);
				free(r.status);
				free(r.remote);
				free(r.diag);
				return -1;
			}
			env->rcpt = xreallocarray(env->rcpt, env->nrcpt + 1,
			    sizeof(r));
			env->rcpt[env->nrcpt++] = r;
		} else if (!state && strcmp(tag, "msg") == 0) {
			for (i = 0; i < nf; i++)
				if (msg_field(env, &f[i]) == -1)
					return -1;
		} else if (state && strcmp(tag, "state") == 0) {
			for (i = 0; i < nf; i++) {
				if (hold_field(env, &f[i], &rc)) {
					if (rc == -1)
						return -1;
				} else if (strcmp(f[i].key, "id") == 0)
					memcpy(env->id, f[i].val,
					    strnlen(f[i].val, MTA_IDLEN));
				else if (num(f[i].val, &v) == 0 &&
				    strcmp(f[i].key, "warned") == 0)
					env->warned = v != 0;
				else if (num(f[i].val, &v) == 0 &&
				    strcmp(f[i].key, "nrcpt") == 0)
					*nrcpt_want = v;
			}
		}
		/* other tags: a newer minor version; ignored */
	}
	return 0;
}

/*
 * mta_env_parse - the header at the start of buf into env (fresh from
 * mta_env_new); *why says what is wrong on -1.  env->bodyoff is set.
 */
int
mta_env_parse(const char *buf, size_t len, struct mta_env *env,
    const char **why)
{
	size_t hlen, dummy = 0;
	char *text;
	int rc = -1;

	if ((hlen = header_end(buf, len, ENV_MAGIC)) == 0) {
		*why = "no valid header (torn or not a queue file)";
		return -1;
	}
	text = xstrndup(buf + strlen(ENV_MAGIC), hlen - strlen(ENV_MAGIC));
	if (parse_lines(text, env, 0, &dummy) == -1) {
		*why = "malformed header line";
		goto done;
	}
	if (env->id[0] == '\0' || env->nrcpt == 0) {
		*why = "header without id or recipients";
		goto done;
	}
	env->bodyoff = hlen;
	rc = 0;
done:
	free(text);
	return rc;
}

/*
 * mta_state_parse - apply a state file to env: the recipients' states
 * replace those of the message file.  -1 (env unchanged) if it does not
 * match the message.
 */
int
mta_state_parse(const char *buf, size_t len, struct mta_env *env)
{
	struct mta_env *tmp;
	size_t hlen, i, want = 0;
	char *text = NULL;
	int rc = -1;

	if ((hlen = header_end(buf, len, STATE_MAGIC)) == 0)
		return -1;
	tmp = mta_env_new();
	text = xstrndup(buf + strlen(STATE_MAGIC), hlen - strlen(STATE_MAGIC));
	if (parse_lines(text, tmp, 1, &want) == -1 ||
	    strcmp(tmp->id, env->id) != 0 || tmp->nrcpt != env->nrcpt ||
	    want != env->nrcpt)
		goto done;
	for (i = 0; i < env->nrcpt; i++)
		if (strcmp(tmp->rcpt[i].addr, env->rcpt[i].addr) != 0)
			goto done;
	for (i = 0; i < env->nrcpt; i++) {
		rcpt_clear(&env->rcpt[i]);
		env->rcpt[i] = tmp->rcpt[i];
		memset(&tmp->rcpt[i], 0, sizeof(tmp->rcpt[i]));
	}
	env->warned = tmp->warned;
	/* the state file says all of the hold: none there, none held */
	env->held = tmp->held;
	env->hold_since = tmp->hold_since;
	env->held_for = tmp->held_for;
	free(env->hold_reason);
	env->hold_reason = tmp->hold_reason;
	tmp->hold_reason = NULL;
	rc = 0;
done:
	free(text);
	mta_env_free(tmp);
	return rc;
}
