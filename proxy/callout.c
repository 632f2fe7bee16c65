/*
 * callout.c - recipient verification for verify-recipients: ask the
 * protected server whether a recipient exists before the client's RCPT
 * is answered.  The conversation (EHLO, MAIL FROM:<>, RCPT TO:<rcpt>,
 * QUIT) runs over relay.c's upstream client, so it gets the same marked
 * socket, strict reply parser, timeouts and STARTTLS.  Definite answers
 * (2xx, 5xx) are kept in a small cache, the oldest going first.  The
 * cache is shared by every worker, under its mutex (taken once per
 * verified RCPT, never on the data path): a recipient verified in a
 * session on one core is a cache hit on every other, as an admin
 * expects, and the server is asked once.
 */
#include <pthread.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../common/addr.h"
#include "../common/log.h"
#include "../common/smtp.h"
#include "../common/xmalloc.h"
#include "callout.h"
#include "../common/smtpc.h"

#define CACHE_SIZE	1024
#define CACHE_OK_MS	(10 * 60 * 1000)	/* accepted recipients */
#define CACHE_BAD_MS	(2 * 60 * 1000)		/* refused recipients */

enum callout_step { CO_GREETING = 0, CO_EHLO, CO_MAIL, CO_RCPT };

struct callout {
	struct smtpc		*relay;
	struct callout_cache	*cache;
	struct sockaddr_storage	 dst;
	enum callout_step	 step;
	char			*rcpt;
	char			*helo;
	callout_cb		 cb;
	void			*arg;
	int			 sending;	/* inside a relay call */
	int			 failed;	/* ... which failed the leg */
	char			 why[128];
};

struct cache_entry {
	struct sockaddr_storage	 dst;
	char			*rcpt;		/* NULL: free slot */
	int			 code;
	uint64_t		 expires;	/* ms, monotonic */
	char			 line[CALLOUT_LINE];
};

struct callout_cache {
	pthread_mutex_t		 mtx;		/* e[] */
	struct cache_entry	 e[CACHE_SIZE];
};

static void	co_greeting(void *, const struct smtp_reply *);
static void	co_reply(void *, const struct smtp_reply *);
static void	co_fail(void *, const struct smtpc_error *);
static void	co_drained(void *);

static const struct smtpc_cb callout_relay_cb = {
	.greeting = co_greeting,
	.reply = co_reply,
	.fail = co_fail,
	.drained = co_drained
};

/* now_ms - the monotonic clock in milliseconds */
static uint64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* same_dst - the same server address and port */
static int
same_dst(const struct sockaddr *a, const struct sockaddr *b)
{
	return addr_equal_ip(a, b) && addr_port(a) == addr_port(b);
}

/* cache_find - the live entry for dst and rcpt, or NULL */
static struct cache_entry *
cache_find(struct callout_cache *k, const struct sockaddr *dst,
    const char *rcpt, uint64_t now)
{
	struct cache_entry *cache = k->e;
	size_t i;

	for (i = 0; i < CACHE_SIZE; i++)
		if (cache[i].rcpt != NULL && cache[i].expires > now &&
		    strcmp(cache[i].rcpt, rcpt) == 0 &&
		    same_dst((struct sockaddr *)&cache[i].dst, dst))
			return &cache[i];
	return NULL;
}

/* cache_put - keep a definite answer, in a free, stale or oldest slot */
static void
cache_put(struct callout_cache *k, const struct sockaddr_storage *dst,
    const char *rcpt, int code, const char *line)
{
	struct cache_entry *cache = k->e, *e, *victim = NULL;
	uint64_t now = now_ms();
	size_t i;

	if (code < 200 || (code >= 300 && code < 500) || code >= 600)
		return;
	pthread_mutex_lock(&k->mtx);
	if ((e = cache_find(k, (const struct sockaddr *)dst, rcpt,
	    now)) == NULL)
		for (i = 0; i < CACHE_SIZE; i++) {
			e = &cache[i];
			if (e->rcpt == NULL || e->expires <= now)
				break;
			if (victim == NULL || e->expires < victim->expires)
				victim = e;
			e = NULL;
		}
	if (e == NULL)
		e = victim;
	free(e->rcpt);
	e->dst = *dst;
	e->rcpt = xstrdup(rcpt);
	e->code = code;
	e->expires = now + (code < 300 ? CACHE_OK_MS : CACHE_BAD_MS);
	snprintf(e->line, sizeof(e->line), "%s", line);
	pthread_mutex_unlock(&k->mtx);
}

struct callout_cache *
callout_cache_new(void)
{
	struct callout_cache *k = xcalloc(1, sizeof(*k));

	pthread_mutex_init(&k->mtx, NULL);
	return k;
}

void
callout_cache_free(struct callout_cache *k)
{
	size_t i;

	if (k == NULL)
		return;
	for (i = 0; i < CACHE_SIZE; i++)
		free(k->e[i].rcpt);
	pthread_mutex_destroy(&k->mtx);
	free(k);
}

int
callout_cached(struct callout_cache *k, const struct sockaddr *dst,
    const char *rcpt, int *code, char *line, size_t len)
{
	struct cache_entry *e;
	int found = 0;

	pthread_mutex_lock(&k->mtx);
	if ((e = cache_find(k, dst, rcpt, now_ms())) != NULL) {
		*code = e->code;
		snprintf(line, len, "%s", e->line);
		found = 1;
	}
	pthread_mutex_unlock(&k->mtx);
	return found;
}

/* reply_first - "DDD text" of a reply's first line, printable only */
static void
reply_first(const struct smtp_reply *rep, char *out, size_t len)
{
	const char *text;
	size_t n, i, o;

	text = smtp_reply_line(rep, 0, &n);
	o = (size_t)snprintf(out, len, "%03d ", rep->code);
	for (i = 0; i < n && text != NULL && o + 1 < len; i++)
		out[o++] = isprint((unsigned char)text[i]) ? text[i] : '?';
	out[o < len ? o : len - 1] = '\0';
}

/* callout_free - the leg closed, the callout gone */
static void
callout_free(struct callout *c)
{
	smtpc_close(c->relay);
	free(c->rcpt);
	free(c->helo);
	free(c);
}

/* callout_finish - the answer is known: keep it, tell, free */
static void
callout_finish(struct callout *c, int code, const char *line)
{
	cache_put(c->cache, &c->dst, c->rcpt, code, line);
	c->cb(c->arg, code, line);	/* line may be c->why: free after */
	callout_free(c);
}

/* callout_unavailable - no answer to RCPT: why, for the log */
static void
callout_unavailable(struct callout *c, const char *what, int code)
{
	char why[128];

	snprintf(why, sizeof(why), "%s %d", what, code);
	callout_finish(c, 0, why);
}

/* co_send - one command (head arg tail); the leg fails if not sent */
static void
co_send(struct callout *c, enum callout_step step, const char *head,
    const char *arg, const char *tail)
{
	char *line;
	int rc;

	c->step = step;
	xasprintf(&line, "%s%s%s", head, arg, tail);
	c->sending = 1;
	if (step == CO_EHLO)
		rc = smtpc_helo(c->relay, 1, c->helo, line, strlen(line));
	else
		rc = smtpc_send(c->relay, line, strlen(line), SMTPC_CMD);
	c->sending = 0;
	free(line);
	if (c->failed || rc == -1)
		callout_finish(c, 0, c->failed ? c->why : "command not sent");
}

static void
co_greeting(void *arg, const struct smtp_reply *rep)
{
	struct callout *c = arg;

	if (rep->code != 220)
		callout_unavailable(c, "greeting", rep->code);
	else
		co_send(c, CO_EHLO, "EHLO ", c->helo, "");
}

static void
co_reply(void *arg, const struct smtp_reply *rep)
{
	struct callout *c = arg;
	char line[CALLOUT_LINE];
	int ok = rep->code >= 200 && rep->code < 300;

	switch (c->step) {
	case CO_EHLO:
		if (!ok)
			callout_unavailable(c, "EHLO refused", rep->code);
		else
			co_send(c, CO_MAIL, "MAIL FROM:<", "", ">");
		return;
	case CO_MAIL:
		if (!ok)
			callout_unavailable(c, "null sender refused", rep->code);
		else
			co_send(c, CO_RCPT, "RCPT TO:<", c->rcpt, ">");
		return;
	case CO_RCPT:
		reply_first(rep, line, sizeof(line));
		callout_finish(c, rep->code, line);
		return;
	default:
		callout_finish(c, 0, "unexpected reply");
		return;
	}
}

static void
co_fail(void *arg, const struct smtpc_error *err)
{
	const char *why = err->why;
	struct callout *c = arg;

	if (c->sending) {
		/* a relay call failed the leg: co_send finishes */
		c->failed = 1;
		snprintf(c->why, sizeof(c->why), "%s", why);
		return;
	}
	callout_finish(c, 0, why);
}

static void
co_drained(void *arg)
{
}

struct callout *
callout_start(uv_loop_t *loop, struct callout_cache *cache,
    const struct callout_opts *opts, const char *rcpt, callout_cb cb,
    void *arg)
{
	struct smtpc_opts o;
	struct callout *c;

	c = xcalloc(1, sizeof(*c));
	c->cache = cache;
	c->dst = opts->dst;
	c->rcpt = xstrdup(rcpt);
	c->helo = xstrdup(opts->helo);
	c->cb = cb;
	c->arg = arg;
	memset(&o, 0, sizeof(o));
	o.id = opts->id;
	o.dst = opts->dst;
	o.src.ss_family = AF_UNSPEC;
	o.tls = opts->tls;
	o.ctx = opts->ctx;
	o.corks = opts->corks;
	o.t_connect = CALLOUT_TIMEOUT;
	o.t_cmd = CALLOUT_TIMEOUT;
	o.t_dot = CALLOUT_TIMEOUT;
	c->relay = smtpc_open(loop, &o, &callout_relay_cb, c);
	return c;
}

void
callout_cancel(struct callout *c)
{
	if (c != NULL)
		callout_free(c);
}
