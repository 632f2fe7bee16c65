/*
 * queue.c - the scheduler.  It owns the in-memory queue (every queued
 * message's envelope, beside the scheduler's own state of it in struct
 * mta_qmsg, which never goes to disk), the destinations and their waiting
 * jobs, and every
 * decision about a recipient's life: when to try it, the backoff between
 * attempts, expiry after queue.lifetime, the delay warning after
 * queue.warn, the final notification, and the hold: a message on hold
 * stays in the spool and in memory but the scheduler leaves it alone (no
 * job, no expiry, no warning) until it is released.  Delivery connections
 * (deliver.c) take jobs from a destination, at most queue.concurrency
 * at a time, and report one result per recipient.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../common/addr.h"
#include "../common/log.h"
#include "../common/xmalloc.h"
#include "mta_local.h"

#define QUEUE_HOUSEKEEP	60		/* seconds between idle scans */
#define QUEUE_DEADSCAN	3600		/* seconds between dead/ sweeps */
#define MSG_DONE	"all recipients done"

static uv_loop_t	*queue_loop;
static uv_timer_t	 queue_timer;
static int		 queue_timer_open;
static struct mta_qmsgq	 queue_msgs = TAILQ_HEAD_INITIALIZER(queue_msgs);
static TAILQ_HEAD(, mta_dest) queue_dests =
    TAILQ_HEAD_INITIALIZER(queue_dests);
static time_t		 queue_armed;	/* when the timer fires, 0: idle */
static int		 queue_draining;	/* shutdown: no new jobs */
static int		 queue_stopped;
static time_t		 queue_dead_swept;
static uv_timer_t	 queue_rate_timer;	/* the next "rate" start */
static uint64_t		 queue_rate_due;	/* its time (rate_now), 0: idle */

static int	settle(struct mta_qmsg *);
static void	rate_arm(uint64_t);
static void	arm(time_t);
static time_t	next_event(const struct mta_qmsg *, time_t);

struct mta_qmsgq *
mta_queue_all(void)
{
	return &queue_msgs;
}

/* mta_queue_lookup - the queued message id with the scheduler's state */
struct mta_qmsg *
mta_queue_lookup(const char *id)
{
	struct mta_qmsg *q;

	TAILQ_FOREACH(q, &queue_msgs, entry)
		if (strcmp(q->env->id, id) == 0)
			return q;
	return NULL;
}

/* mta_queue_find - the envelope of queued message id */
struct mta_env *
mta_queue_find(const char *id)
{
	struct mta_qmsg *q = mta_queue_lookup(id);

	return q != NULL ? q->env : NULL;
}

static void
qmsg_free(struct mta_qmsg *q)
{
	mta_env_free(q->env);
	free(q->busy);
	free(q);
}

unsigned
mta_queue_busy(void)
{
	return mta_deliver_count() + mta_dns_busy();
}

/*
 * mta_queue_age - how long env has been queued at now, its time on hold
 * not counted: the lifetime, the delay warning and the fallback relay
 * go by this clock, which stops while the message is held and goes on
 * from there once it is released
 */
time_t
mta_queue_age(const struct mta_env *env, time_t now)
{
	if (env->held)
		now = env->hold_since;
	return now - env->arrival - env->held_for;
}

/* lifetime - how long a message may stay: DSNs get their own */
static time_t
lifetime(const struct mta_env *env)
{
	struct policy *p = policy_current();

	return env->sender[0] == '\0' ? p->queue.dsn_lifetime :
	    p->queue.lifetime;
}

/*
 * mta_queue_rcpt_slow - r failed queue.slow-after times: it is in the
 * slow queue, retried at most every slow-retry, behind fresh mail
 */
int
mta_queue_rcpt_slow(const struct mta_rcpt *r)
{
	const struct policy *p = policy_current();

	/* none yet (a unit test's summary): nothing is slow */
	return p != NULL && p->queue.slow_after > 0 &&
	    r->attempts >= p->queue.slow_after;
}

/* backoff - seconds until the next try after n attempts (slow-retry at
 * least once n reaches slow-after) */
static time_t
backoff(unsigned n)
{
	struct policy *p = policy_current();
	time_t d = p->queue.retry_min;
	unsigned i;

	for (i = n; i > 1 && d < (time_t)p->queue.retry_max; i--)
		d *= 2;
	if (d > (time_t)p->queue.retry_max)
		d = (time_t)p->queue.retry_max;
	if (p->queue.slow_after > 0 && n >= p->queue.slow_after &&
	    d < (time_t)p->queue.slow_retry)
		d = (time_t)p->queue.slow_retry;
	return d;
}

/*
 * job_queue - job waits for d: a fresh one before the slow ones (mail
 * that keeps failing does not hold up new mail to the same place), a
 * slow one last; head puts it first of its kind (a job given back)
 */
static void
job_queue(struct mta_dest *d, struct mta_job *job, int head)
{
	if (!job->slow) {
		if (head)
			TAILQ_INSERT_HEAD(&d->jobs, job, entry);
		else if (d->slow_head != NULL)
			TAILQ_INSERT_BEFORE(d->slow_head, job, entry);
		else
			TAILQ_INSERT_TAIL(&d->jobs, job, entry);
	} else if (head && d->slow_head != NULL) {
		TAILQ_INSERT_BEFORE(d->slow_head, job, entry);
		d->slow_head = job;
	} else {
		TAILQ_INSERT_TAIL(&d->jobs, job, entry);
		if (d->slow_head == NULL)
			d->slow_head = job;
	}
	d->njobs++;
}

/* job_unqueue - job leaves d's waiting list */
static void
job_unqueue(struct mta_dest *d, struct mta_job *job)
{
	if (d->slow_head == job)
		d->slow_head = TAILQ_NEXT(job, entry);
	TAILQ_REMOVE(&d->jobs, job, entry);
	if (--d->njobs == 0)
		d->rate_held = 0;	/* the backlog is gone: log the next */
}

static void
set_str(char **dst, const char *v)
{
	free(*dst);
	*dst = v != NULL ? xstrdup(v) : NULL;
}

/*
 * Destinations
 */

/*
 * hide_box - the protected domain wants its server to see the client:
 * connect from the client's address (IP_TRANSPARENT), one destination
 * per client address so that a connection never mixes clients.
 */
static int
hide_box(const struct policy *p, const struct mta_env *env)
{
	const struct policy_domain *d;

	d = policy_domain_by_server(p, (const struct sockaddr *)&env->orig_dst);
	return d != NULL && d->hide_box &&
	    env->client.ss_family == env->orig_dst.ss_family;
}

/* dest_key - route + target, and the route really used */
static enum policy_route
dest_key(const struct mta_env *env, const struct mta_rcpt *r, char *key,
    size_t len)
{
	struct policy *p = policy_current();
	char a[ADDR_STRLEN];
	enum policy_route route = r->route;
	const char *dom;
	size_t i, n;

	if (route == POLICY_ROUTE_RELAYHOST && p->relay.host == NULL)
		route = POLICY_ROUTE_MX;
	/* undelivered for too long on its own route: the fallback relay */
	if (route != POLICY_ROUTE_RELAYHOST && p->fbrelay.host != NULL &&
	    mta_queue_age(env, mta_now()) >= (time_t)p->fbrelay.after)
		route = POLICY_ROUTE_FALLBACK;
	if (route == POLICY_ROUTE_ORIGINAL &&
	    env->orig_dst.ss_family != AF_INET &&
	    env->orig_dst.ss_family != AF_INET6)
		route = POLICY_ROUTE_MX;
	switch (route) {
	case POLICY_ROUTE_ORIGINAL:
		snprintf(key, len, "original:%s", addr_fmt(
		    (const struct sockaddr *)&env->orig_dst, a, sizeof(a)));
		if (hide_box(p, env)) {
			n = strlen(key);
			snprintf(key + n, len - n, "/from:%s", addr_fmt_ip(
			    (const struct sockaddr *)&env->client, a,
			    sizeof(a)));
		}
		break;
	case POLICY_ROUTE_RELAYHOST:
		snprintf(key, len, "relayhost:%s:%u", p->relay.host,
		    p->relay.port);
		break;
	case POLICY_ROUTE_FALLBACK:
		snprintf(key, len, "fallback:%s:%u", p->fbrelay.host,
		    p->fbrelay.port);
		break;
	case POLICY_ROUTE_MX:
		dom = mta_addr_domain(r->addr);
		n = snprintf(key, len, "mx:%s", dom);
		for (i = 3; i < n && i < len; i++)
			key[i] = (char)tolower((unsigned char)key[i]);
		break;
	}
	return route;
}

static struct mta_dest *
dest_get(const struct mta_env *env, const struct mta_rcpt *r)
{
	struct mta_dest *d;
	enum policy_route route;
	char key[512];

	route = dest_key(env, r, key, sizeof(key));
	TAILQ_FOREACH(d, &queue_dests, entry)
		if (strcmp(d->key, key) == 0)
			return d;
	d = xcalloc(1, sizeof(*d));
	d->key = xstrdup(key);
	d->route = route;
	d->window = 1;
	TAILQ_INIT(&d->jobs);
	if (route == POLICY_ROUTE_MX) {
		d->domain = xstrdup(key + 3);
		d->shape = xstrdup(d->domain);
	} else if (route == POLICY_ROUTE_RELAYHOST)
		d->shape = xstrdup(policy_current()->relay.host);
	else if (route == POLICY_ROUTE_FALLBACK)
		d->shape = xstrdup(policy_current()->fbrelay.host);
	else if (route == POLICY_ROUTE_ORIGINAL) {
		const struct policy_domain *pd = policy_domain_by_server(
		    policy_current(), (const struct sockaddr *)&env->orig_dst);

		d->shape = pd != NULL ? xstrdup(pd->name) : NULL;
		d->orig_dst = env->orig_dst;
		if (strstr(key, "/from:") != NULL) {
			d->bind = env->client;
			d->helo = env->helo != NULL ? xstrdup(env->helo) : NULL;
		}
	}
	TAILQ_INSERT_TAIL(&queue_dests, d, entry);
	return d;
}

/*
 * Rate: "rate N per DURATION" of a destination, a sliding window of its
 * transactions' start times.  A job over the rate stays in the
 * destination's queue (no attempt counted, nothing deferred); one uv
 * timer for all destinations wakes the first one whose window opens.
 */

/* rate_now - the rate's clock: monotonic ms, read now (not the loop's
 * cached time, which lags behind the callbacks of one turn) */
static uint64_t
rate_now(void)
{
	return uv_hrtime() / 1000000;
}

/*
 * mta_rate_wait - ms until the window of r lets one more transaction
 * start under n per per_ms (0: now; n 0: no limit); the starts that
 * left the window are forgotten
 */
uint64_t
mta_rate_wait(struct mta_rate *r, unsigned n, uint64_t per_ms, uint64_t now)
{
	while (r->n > 0 && r->t[r->head] + per_ms <= now) {
		r->head = (r->head + 1) % r->cap;
		r->n--;
	}
	if (n == 0 || r->n < n)
		return 0;
	/* fewer than n are left once the (count - n)th oldest (0 the
	 * oldest) is out; more than n after a reload lowered it */
	return r->t[(r->head + r->n - n) % r->cap] + per_ms - now;
}

/* mta_rate_take - a transaction starts now: into r's window */
void
mta_rate_take(struct mta_rate *r, uint64_t now)
{
	uint64_t *t;
	size_t i, cap;

	if (r->n == r->cap) {
		cap = r->cap > 0 ? r->cap * 2 : 8;
		t = xcalloc(cap, sizeof(*t));
		for (i = 0; i < r->n; i++)
			t[i] = r->t[(r->head + i) % r->cap];
		free(r->t);
		r->t = t;
		r->cap = cap;
		r->head = 0;
	}
	r->t[(r->head + r->n) % r->cap] = now;
	r->n++;
}

void
mta_rate_free(struct mta_rate *r)
{
	free(r->t);
	memset(r, 0, sizeof(*r));
}

/* rate_per_fmt - a window's length as the configuration writes it */
static const char *
rate_per_fmt(unsigned per, char *buf, size_t len)
{
	if (per % 3600 == 0)
		snprintf(buf, len, "%uh", per / 3600);
	else if (per % 60 == 0)
		snprintf(buf, len, "%um", per / 60);
	else
		snprintf(buf, len, "%us", per);
	return buf;
}

/*
 * dest_rate_ok - d may start a transaction now under lim's rate.  If
 * not, the rate timer comes back when it may, and the hold is logged
 * once a backlog (rate_held clears when d has no job waiting).
 */
static int
dest_rate_ok(struct mta_dest *d, const struct policy_shape *lim)
{
	uint64_t wait, now;
	char per[32];

	if (lim->rate.n == 0)
		return 1;
	now = rate_now();
	wait = mta_rate_wait(&d->rate, lim->rate.n,
	    (uint64_t)lim->rate.per * 1000, now);
	if (wait == 0)
		return 1;
	if (!d->rate_held) {
		d->rate_held = 1;
		mta_stats.rate_held++;
		log_info("destination=%s rate=%u/%s held=%u next=%llums",
		    d->key, lim->rate.n,
		    rate_per_fmt(lim->rate.per, per, sizeof(per)), d->njobs,
		    (unsigned long long)wait);
	}
	rate_arm(now + wait);
	return 0;
}

/*
 * dest_rate_recent - idle d still has starts inside its rate window:
 * it stays (a new one would start with an empty window and let a second
 * burst through) until the window is empty, when the rate timer fires
 */
static int
dest_rate_recent(struct mta_dest *d)
{
	struct policy_shape lim;
	uint64_t per;

	if (d->rate.n == 0)
		return 0;
	mta_queue_dest_limits(d, &lim);
	if (lim.rate.n == 0)
		return 0;
	per = (uint64_t)lim.rate.per * 1000;
	(void)mta_rate_wait(&d->rate, 0, per, rate_now());
	if (d->rate.n == 0)
		return 0;
	rate_arm(d->rate.t[(d->rate.head + d->rate.n - 1) % d->rate.cap] +
	    per);
	return 1;
}

static void
dest_free_if_idle(struct mta_dest *d)
{
	if (d->nconn > 0 || !TAILQ_EMPTY(&d->jobs))
		return;
	if (!queue_stopped && dest_rate_recent(d))
		return;
	TAILQ_REMOVE(&queue_dests, d, entry);
	mta_rate_free(&d->rate);
	free(d->key);
	free(d->domain);
	free(d->helo);
	free(d->shape);
	free(d);
}

static void
job_free(struct mta_job *job)
{
	size_t i;

	for (i = 0; i < job->n; i++) {
		free(job->res[i].remote);
		free(job->res[i].diag);
	}
	free(job->idx);
	free(job->res);
	free(job);
}

static void	msg_drop(struct mta_qmsg *, const char *);

/*
 * job_drop - a job that was not tried goes, its recipients as they were
 * (not busy any more, no attempt counted)
 */
static void
job_drop(struct mta_job *job)
{
	struct mta_qmsg *q = job->msg;
	size_t i;

	for (i = 0; i < job->n; i++)
		q->busy[job->idx[i]] = 0;
	q->jobs--;
	job_free(job);
	if (q->jobs > 0)
		return;
	mta_env_mem_drop(q->env);
	if (q->deleted == 1)
		msg_drop(q, "deleted by the administrator");
}

/*
 * dest_pump - open connections while jobs wait and the limit allows.
 * The limit starts at one connection and grows by one with every
 * transaction the next hop answered, up to queue.concurrency (slow
 * start): a burst to one place reuses connections, and a dead next hop
 * costs one failed connection, not ten.
 */
static void
dest_pump(struct mta_dest *d)
{
	struct policy_shape lim;
	unsigned limit;

	mta_queue_dest_limits(d, &lim);
	limit = d->window < lim.concurrency ? d->window : lim.concurrency;

	/* connections kept open after their last job come first; none
	 * is woken or opened while the rate holds the jobs back */
	while (!queue_draining && !queue_stopped && d->njobs > 0 &&
	    d->nidle > 0 && dest_rate_ok(d, &lim) && mta_deliver_wake(d) == 0)
		;
	while (!queue_draining && !queue_stopped && d->njobs > 0 &&
	    d->nconn < limit && dest_rate_ok(d, &lim)) {
		d->nconn++;
		if (mta_deliver_open(queue_loop, d) == -1) {
			d->nconn--;
			break;
		}
	}
}

/* mta_queue_dest_limits - d's shaping under the current policy */
void
mta_queue_dest_limits(const struct mta_dest *d, struct policy_shape *lim)
{
	policy_dest_limits(policy_current(), d->shape, lim);
}

/* job_take - d's first waiting job leaves the queue, started now */
static struct mta_job *
job_take(struct mta_dest *d)
{
	struct mta_job *job;

	if (queue_draining || (job = TAILQ_FIRST(&d->jobs)) == NULL)
		return NULL;
	job_unqueue(d, job);
	job->started = uv_now(queue_loop);
	job->sent = 0;
	return job;
}

/*
 * mta_queue_next_job - the next waiting job of d for a connection, or
 * NULL: none waits, or d's rate holds it back (the rate timer pumps d
 * when its window opens)
 */
struct mta_job *
mta_queue_next_job(struct mta_dest *d)
{
	struct policy_shape lim;
	struct mta_job *job;

	if (queue_draining || TAILQ_EMPTY(&d->jobs))
		return NULL;
	mta_queue_dest_limits(d, &lim);
	if (!dest_rate_ok(d, &lim))
		return NULL;
	job = job_take(d);
	if (lim.rate.n > 0) {
		uint64_t now = rate_now();
		char per[32];

		mta_rate_take(&d->rate, now);
		/* the window's own clock, for whoever checks it */
		log_debug("msgid=%s destination=%s rate=%u/%s start=%llu",
		    job->env->id, d->key, lim.rate.n, rate_per_fmt(
		    lim.rate.per, per, sizeof(per)), (unsigned long long)now);
	}
	return job;
}

/*
 * mta_queue_job_retry - a connection died before the next hop said a
 * word about the job (a kept session the hop had closed, or a job sent
 * behind a dot): it goes back to the front, as if never taken.
 */
void
mta_queue_job_retry(struct mta_job *job)
{
	struct mta_dest *d = job->dest;
	size_t i;

	if (queue_stopped) {		/* nobody takes it: let it go */
		mta_queue_job_done(job);
		return;
	}
	if (job->msg->env->held) {	/* put on hold meanwhile */
		job_drop(job);
		return;
	}
	for (i = 0; i < job->n; i++) {
		free(job->res[i].remote);
		free(job->res[i].diag);
		memset(&job->res[i], 0, sizeof(job->res[i]));
	}
	job_queue(d, job, 1);
}

/* mta_queue_conn_done - a connection of d is gone */
void
mta_queue_conn_done(struct mta_dest *d)
{
	d->nconn--;
	if (!queue_stopped)
		dest_pump(d);
	dest_free_if_idle(d);
}

/*
 * Recipient outcomes
 */

void
mta_result_set(struct mta_result *res, int code, const char *status,
    const char *remote, const char *diag)
{
	res->code = code;
	snprintf(res->status, sizeof(res->status), "%s", status);
	set_str(&res->remote, remote);
	set_str(&res->diag, diag);
	res->tls = NULL;
}

/*
 * mta_delay_fmt - ms seconds as Postfix writes a delay: two significant
 * digits, at most two decimals, whole seconds from 10 on, rounded, no
 * trailing zeros ("0.12", "0.01", "0", "1.2", "5", "15", "312")
 */
const char *
mta_delay_fmt(uint64_t ms, char *buf, size_t len)
{
	uint64_t res = ms < 1000 ? 10 : ms < 10000 ? 100 : 1000, r, frac;
	int n;

	r = (ms + res / 2) / res * res;
	frac = r % 1000;
	n = snprintf(buf, len, "%llu", (unsigned long long)(r / 1000));
	if (frac != 0 && n > 0 && (size_t)n < len) {
		if (frac % 100 == 0)
			snprintf(buf + n, len - (size_t)n, ".%llu",
			    (unsigned long long)(frac / 100));
		else
			snprintf(buf + n, len - (size_t)n, ".%02llu",
			    (unsigned long long)(frac / 10));
	}
	return buf;
}

/* delay= of a delivered recipient (seconds): a second's fraction for a
 * relay next door up to the hour a deferred message may wait */
static const uint64_t delay_bounds[] = {
	5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000, 2500000,
	5000000, 10000000, 30000000, 60000000, 120000000, 300000000,
	600000000, 1800000000, 3600000000,
};
struct histogram	 mta_delay_hist = HISTOGRAM_INIT(delay_bounds);

/*
 * delays - Postfix's delay= and delays=a/b/c/d of an outcome now, in ms:
 * a receiving the message (its DATA to its queuing), b in the queue
 * (earlier attempts included), c this attempt's connection setup (DNS,
 * connect, greeting, EHLO, TLS; 0 on a connection kept from an earlier
 * job), d its transaction (MAIL to the reply that decided); without a
 * job (expiry, the administrator) c and d are 0.  b takes what is left,
 * so the four add up to the total.
 */
static void
delays(const struct mta_env *env, const struct mta_job *job, uint64_t *total,
    uint64_t v[4])
{
	uint64_t arr, q, now = mta_now_ms(), t;

	arr = env->arrival_ms ? env->arrival_ms : (uint64_t)env->arrival * 1000;
	q = env->queued_ms > arr ? env->queued_ms : arr;
	v[0] = q - arr;
	v[2] = v[3] = 0;
	if (job != NULL && job->started != 0 && queue_loop != NULL &&
	    (t = uv_now(queue_loop)) >= job->started) {
		if (job->sent >= job->started && t >= job->sent) {
			v[2] = job->sent - job->started;
			v[3] = t - job->sent;
		} else
			v[2] = t - job->started;
	}
	*total = now > arr ? now - arr : 0;
	if (*total < v[0] + v[2] + v[3])
		*total = v[0] + v[2] + v[3];	/* the clock stepped back */
	v[1] = *total - v[0] - v[2] - v[3];
}

/*
 * rcpt_log - the one message-level line per recipient outcome, with
 * Postfix's fields (delay=, delays=, dsn=, and status= last: its word,
 * then the reply or reason in parentheses, which may hold anything the
 * server said and so comes after every field of ours); its delay= in ms
 */
static uint64_t
rcpt_log(const struct mta_env *env, const struct mta_rcpt *r,
    const char *disposition, const struct mta_job *job)
{
	static const struct { const char *disp, *word; } words[] = {
		{ "delivered", "sent" }, { "deferred", "deferred" },
		{ "bounced", "bounced" }, { "expired", "expired" },
	};
	const char *word = disposition;
	char d[24], dv[4][24];
	uint64_t total, v[4];
	size_t i;

	for (i = 0; i < sizeof(words) / sizeof(words[0]); i++)
		if (strcmp(words[i].disp, disposition) == 0)
			word = words[i].word;
	delays(env, job, &total, v);
	for (i = 0; i < 4; i++)
		mta_delay_fmt(v[i], dv[i], sizeof(dv[i]));
	log_info("msgid=%s session=%llu to=<%s> from=<%s> relay=%s route=%s "
	    "delay=%s delays=%s/%s/%s/%s attempts=%u dsn=%s disposition=%s%s%s "
	    "status=%s (%s)",
	    env->id, (unsigned long long)env->session, log_word(r->addr),
	    log_word(env->sender), r->remote ? log_word(r->remote) : "none",
	    policy_route_name(r->via != 0 ? (enum policy_route)(r->via - 1) :
	    r->route), mta_delay_fmt(total, d, sizeof(d)), dv[0], dv[1], dv[2],
	    dv[3], r->attempts, r->status ? log_word(r->status) : "-",
	    disposition, r->tls != NULL ? " tls=" : "",
	    r->tls != NULL ? r->tls : "", word, log_vis(r->diag));
	return total;
}

/* rcpt_fail - permanent failure (or expiry) of one recipient; job: the
 * attempt that decided it, or NULL */
static void
rcpt_fail(const struct mta_env *env, struct mta_rcpt *r, int expired,
    const struct mta_job *job)
{
	r->state = MTA_RCPT_FAILED;
	if (expired) {
		mta_stats.expired++;
		if (r->diag == NULL)
			set_str(&r->diag, "delivery time expired");
		set_str(&r->status, "4.4.7");
		rcpt_log(env, r, "expired", job);
	} else {
		mta_stats.bounced++;
		rcpt_log(env, r, "bounced", job);
	}
}

/*
 * fallback_due - the fallback relay takes r once it is "after" old: its
 * next attempt is then at the latest, whatever the backoff or the slow
 * queue would say
 */
static void
fallback_due(const struct mta_env *env, struct mta_rcpt *r, time_t now)
{
	struct policy *p = policy_current();
	time_t due = env->arrival + env->held_for +
	    (time_t)p->fbrelay.after;

	if (p->fbrelay.host != NULL && r->route != POLICY_ROUTE_RELAYHOST &&
	    due > now && r->next > due)
		r->next = due;
}

/* apply - one recipient's result from a job */
static void
apply(struct mta_env *env, struct mta_rcpt *r, const struct mta_result *res,
    enum policy_route via, time_t now, const struct mta_job *job)
{
	r->via = (int)via + 1;
	r->attempts++;
	r->last = now;
	set_str(&r->status, res->status);
	set_str(&r->remote, res->remote);
	set_str(&r->diag, res->diag);
	r->tls = res->tls;
	if (res->code == 2) {
		r->state = MTA_RCPT_DELIVERED;
		r->relayed = res->relayed;
		mta_stats.delivered++;
		histogram_observe(&mta_delay_hist,
		    rcpt_log(env, r, "delivered", job) * 1000);
	} else if (res->code == 5)
		rcpt_fail(env, r, 0, job);
	else if (mta_queue_age(env, now) >= lifetime(env))
		rcpt_fail(env, r, 1, job);
	else {
		r->next = now + backoff(r->attempts);
		fallback_due(env, r, now);
		mta_stats.deferred++;
		rcpt_log(env, r, "deferred", job);
	}
}

/* msg_drop - the message leaves the queue (and the spool) */
static void
msg_drop(struct mta_qmsg *q, const char *why)
{
	struct mta_env *env = q->env;

	TAILQ_REMOVE(&queue_msgs, q, entry);
	if (q->dead) {
		log_info("msgid=%s removed to dead/: %s", env->id, why);
		mta_spool_move(env->id, "dead");
	} else {
		/* after the per-recipient lines a normal end says nothing new */
		if (strcmp(why, MSG_DONE) == 0)
			log_debug("msgid=%s removed: %s", env->id, why);
		else
			log_info("msgid=%s removed: %s", env->id, why);
		mta_spool_remove(env);
	}
	qmsg_free(q);
}

/*
 * mta_queue_job_done - a connection is done with a job, its results set
 * (a result left at code 0 counts as a temporary failure).  After
 * mta_queue_stop() the results are dropped: the spool keeps the state.
 */
void
mta_queue_job_done(struct mta_job *job)
{
	struct mta_qmsg *q = job->msg;
	struct mta_env *env = q->env;
	struct mta_dest *d = job->dest;
	time_t now = mta_now();
	size_t i;
	int answered = 0;

	q->jobs--;
	if (queue_stopped) {
		job_free(job);
		if (q->deleted == 2 && q->jobs == 0)
			qmsg_free(q);
		return;
	}
	for (i = 0; i < job->n; i++) {
		if (job->res[i].code == 0)
			mta_result_set(&job->res[i], 4, "4.4.2",
			    NULL, "delivery interrupted");
		q->busy[job->idx[i]] = 0;
		apply(env, &env->rcpt[job->idx[i]], &job->res[i], d->route,
		    now, job);
		answered |= job->res[i].code == 2 || (job->res[i].code == 5 &&
		    job->res[i].remote != NULL);
	}
	job_free(job);
	if (q->jobs == 0)
		mta_env_mem_drop(env);	/* retries read the file */
	if (answered) {
		struct policy_shape lim;

		mta_queue_dest_limits(d, &lim);
		if (d->window < lim.concurrency) {
			d->window++;
			dest_pump(d);
		}
	}
	if (q->deleted && q->jobs == 0)
		msg_drop(q, "deleted by the administrator");
	else if (!q->deleted && settle(q) == 0)
		arm(next_event(q, now + QUEUE_HOUSEKEEP));
}

/* mta_queue_dest_fail - every waiting job of d fails the same way */
void
mta_queue_dest_fail(struct mta_dest *d, int code, const char *status,
    const char *remote, const char *diag)
{
	struct mta_job *job;
	size_t i;

	d->window = 1;
	/* not through the rate: nothing starts, they fail here */
	while ((job = job_take(d)) != NULL) {
		for (i = 0; i < job->n; i++)
			mta_result_set(&job->res[i], code, status, remote,
			    diag);
		mta_queue_job_done(job);
	}
}

/*
 * Notifications and the end of a message
 */

static void
dsn_queued(void *arg, int status, const char *why)
{
	struct mta_env *dsn = arg;

	if (status != 0) {
		log_warnx("msgid=%s dsn not queued: %s", dsn->id, why);
		mta_env_free(dsn);
		return;
	}
	mta_stats.dsn_sent++;
	log_info("msgid=%s queued dsn to=<%s>", dsn->id,
	    log_word(dsn->rcpt[0].addr));
	mta_queue_add(dsn);
}

/* notify - queue a DSN of kind about the recipients in idx */
static void
notify(struct mta_env *env, enum mta_dsn_kind kind, size_t *idx, size_t n)
{
	struct mta_dsnreq *req;
	struct mta_env *dsn;

	if (n == 0)
		return;
	dsn = mta_dsn_new(env, kind, idx, n, &req);
	log_info("msgid=%s dsn=%s kind=%s nrcpt=%zu", env->id, dsn->id,
	    kind == MTA_DSN_FAILURE ? "failure" : kind == MTA_DSN_DELAY ?
	    "delay" : "success", n);
	mta_spool_dsn(dsn, req, dsn_queued, dsn);
}

/*
 * settle - after any change: send the final DSNs that are due, then
 * remove the message if nothing is pending (1), else save its state (0).
 */
static int
settle(struct mta_qmsg *q)
{
	struct mta_env *env = q->env;
	size_t *fail, *ok, nfail = 0, nok = 0, i, pending = 0;
	struct mta_rcpt *r;

	fail = xcalloc(env->nrcpt, sizeof(*fail));
	ok = xcalloc(env->nrcpt, sizeof(*ok));
	for (i = 0; i < env->nrcpt; i++) {
		r = &env->rcpt[i];
		if (r->state == MTA_RCPT_PENDING) {
			pending++;
			continue;
		}
		if (r->notified)
			continue;
		r->notified = 1;
		if (env->sender[0] == '\0') {
			if (r->state == MTA_RCPT_FAILED)
				q->dead = 1;	/* a bounce is not bounced */
		} else if (r->state == MTA_RCPT_FAILED &&
		    mta_notify_wants(r->notify, MTA_NOTIFY_FAILURE))
			fail[nfail++] = i;
		else if (r->state == MTA_RCPT_DELIVERED && !r->relayed &&
		    (r->notify & MTA_NOTIFY_SUCCESS) &&
		    !(r->notify & MTA_NOTIFY_NEVER))
			ok[nok++] = i;
	}
	notify(env, MTA_DSN_FAILURE, fail, nfail);
	notify(env, MTA_DSN_SUCCESS, ok, nok);
	free(fail);
	free(ok);
	if (pending == 0 && q->jobs == 0) {
		msg_drop(q, q->dead ? "undeliverable bounce" : MSG_DONE);
		return 1;
	}
	mta_spool_state(env);
	return 0;
}

/* warn - the delay DSN, once, for pending recipients that want it */
static int
warn(struct mta_env *env, time_t now)
{
	struct policy *p = policy_current();
	size_t *idx, n = 0, i;

	if (env->warned || env->held || p->queue.warn == 0 ||
	    env->sender[0] == '\0' ||
	    mta_queue_age(env, now) < (time_t)p->queue.warn)
		return 0;
	env->warned = 1;
	idx = xcalloc(env->nrcpt, sizeof(*idx));
	for (i = 0; i < env->nrcpt; i++)
		if (env->rcpt[i].state == MTA_RCPT_PENDING &&
		    mta_notify_wants(env->rcpt[i].notify, MTA_NOTIFY_DELAY))
			idx[n++] = i;
	notify(env, MTA_DSN_DELAY, idx, n);
	free(idx);
	return 1;
}

/*
 * Dispatch
 */

/*
 * dispatch - make jobs of the due recipients of q: one per dest, or
 * more when a dest takes fewer recipients per message
 * ("recipients-per-message")
 */
static void
dispatch(struct mta_qmsg *q, time_t now)
{
	struct mta_env *env = q->env;
	struct mta_dest *d, *dests[64];
	struct mta_job *jobs[64], *job;
	struct mta_rcpt *r;
	struct policy_shape lim;
	size_t i, k, nd = 0;

	if (env->held)
		return;
	for (i = 0; i < env->nrcpt; i++) {
		r = &env->rcpt[i];
		if (r->state != MTA_RCPT_PENDING || q->busy[i] || r->next > now)
			continue;
		d = dest_get(env, r);
		mta_queue_dest_limits(d, &lim);
		/* d's job with room left */
		for (k = 0; k < nd && (dests[k] != d ||
		    jobs[k]->n >= lim.rcpts_per_msg); k++)
			;
		if (k == nd) {
			if (nd == 64)
				continue;	/* the rest next round */
			dests[nd] = d;
			jobs[nd] = job = xcalloc(1, sizeof(*job));
			job->msg = q;
			job->env = env;
			job->dest = d;
			job->idx = xcalloc(env->nrcpt, sizeof(*job->idx));
			job->res = xcalloc(env->nrcpt, sizeof(*job->res));
			job->slow = 1;	/* until a fresh recipient joins */
			nd++;
		}
		job = jobs[k];
		job->slow &= mta_queue_rcpt_slow(r);
		job->idx[job->n++] = i;
		q->busy[i] = 1;
	}
	for (k = 0; k < nd; k++) {
		q->jobs++;
		job_queue(dests[k], jobs[k], 0);
		dest_pump(dests[k]);
	}
}

/* expire - pending recipients past the lifetime fail now */
static int
expire(struct mta_qmsg *q, time_t now)
{
	struct mta_env *env = q->env;
	size_t i;
	int n = 0;

	if (env->held || mta_queue_age(env, now) < lifetime(env))
		return 0;
	for (i = 0; i < env->nrcpt; i++)
		if (env->rcpt[i].state == MTA_RCPT_PENDING && !q->busy[i]) {
			rcpt_fail(env, &env->rcpt[i], 1, NULL);
			n++;
		}
	return n;
}

/* next_event - the earliest time q needs the scheduler again */
static time_t
next_event(const struct mta_qmsg *q, time_t t)
{
	const struct mta_env *env = q->env;
	struct policy *p = policy_current();
	time_t e;
	size_t i;

	if (env->held)
		return t;	/* nothing happens to it until released */
	for (i = 0; i < env->nrcpt; i++)
		if (env->rcpt[i].state == MTA_RCPT_PENDING && !q->busy[i] &&
		    env->rcpt[i].next < t)
			t = env->rcpt[i].next;
	e = env->arrival + env->held_for + lifetime(env);
	if (e < t)
		t = e;
	if (!env->warned && p->queue.warn > 0 && env->sender[0] != '\0') {
		e = env->arrival + env->held_for + (time_t)p->queue.warn;
		if (e < t)
			t = e;
	}
	return t;
}

/* scan - the timer: expiry, warnings and due attempts of every message */
static void
scan(uv_timer_t *t)
{
	struct policy *p = policy_current();
	struct mta_qmsg *q, *tmp;
	time_t now = mta_now(), next = now + QUEUE_HOUSEKEEP;

	if (queue_stopped)
		return;
	TAILQ_FOREACH_SAFE(q, &queue_msgs, entry, tmp) {
		if (q->deleted || q->env->held)
			continue;
		if ((expire(q, now) > 0 || warn(q->env, now)) && settle(q))
			continue;	/* removed */
		if (!queue_draining)
			dispatch(q, now);
		next = next_event(q, next);
	}
	if (now - queue_dead_swept >= QUEUE_DEADSCAN) {
		queue_dead_swept = now;
		mta_spool_expire_dead(p->queue.dead_retention);
	}
	queue_armed = 0;
	arm(next <= now ? now + 1 : next);
}

/* arm - make the timer fire at when, unless it fires sooner already */
static void
arm(time_t when)
{
	time_t now = mta_now();

	if (!queue_timer_open || queue_stopped)
		return;
	if (queue_armed != 0 && queue_armed <= when)
		return;
	queue_armed = when > now ? when : now;
	uv_timer_start(&queue_timer, scan,
	    when > now ? (uint64_t)(when - now) * 1000 : 0, 0);
}

/*
 * rate_tick - the rate timer: the destinations whose jobs the rate held
 * back try again (dest_pump re-arms for those still held), idle ones
 * whose window emptied go
 */
static void
rate_tick(uv_timer_t *t)
{
	struct mta_dest *d, *tmp;

	queue_rate_due = 0;
	if (queue_stopped)
		return;
	TAILQ_FOREACH_SAFE(d, &queue_dests, entry, tmp) {
		if (d->njobs > 0) {
			if (d->rate_held)
				dest_pump(d);
		} else
			dest_free_if_idle(d);
	}
}

/* rate_arm - the rate timer fires at due (rate_now), unless sooner */
static void
rate_arm(uint64_t due)
{
	uint64_t now = rate_now();

	if (!queue_timer_open || queue_stopped)
		return;
	if (queue_rate_due != 0 && queue_rate_due <= due)
		return;
	queue_rate_due = due;
	/* the loop's clock may lag ours: a ms more, not an early wake */
	uv_timer_start(&queue_rate_timer, rate_tick,
	    due > now ? due - now + 1 : 0, 0);
}

/* mta_queue_rate_waiting - transactions a destination's rate holds
 * back now ("stats" queue_rate_held) */
unsigned
mta_queue_rate_waiting(void)
{
	struct mta_dest *d;
	unsigned n = 0;

	TAILQ_FOREACH(d, &queue_dests, entry)
		if (d->rate_held)
			n += d->njobs;
	return n;
}

/*
 * mta_queue_reload - a new configuration: scan, and the destinations a
 * rate holds back look again at the next turn (a raised or lifted rate
 * lets them go at once; a lowered one holds them longer)
 */
void
mta_queue_reload(void)
{
	mta_queue_kick();
	if (!queue_timer_open || queue_stopped)
		return;
	queue_rate_due = 0;
	rate_arm(rate_now());
}

/* mta_queue_kick - scan at the next turn of the loop */
void
mta_queue_kick(void)
{
	if (!queue_timer_open || queue_stopped)
		return;
	queue_armed = mta_now();
	uv_timer_start(&queue_timer, scan, 0, 0);
}

/* unsettled - a loaded message with nothing pending or a DSN not sent */
static int
unsettled(const struct mta_env *env)
{
	size_t i, pending = 0;

	for (i = 0; i < env->nrcpt; i++) {
		if (env->rcpt[i].state == MTA_RCPT_PENDING)
			pending++;
		else if (!env->rcpt[i].notified)
			return 1;
	}
	return pending == 0;
}

/* mta_queue_add - a message is durable: queue it, try it at once */
void
mta_queue_add(struct mta_env *env)
{
	struct mta_qmsg *q;

	if (queue_stopped) {
		mta_env_free(env);
		return;
	}
	q = xcalloc(1, sizeof(*q));
	q->env = env;
	q->busy = xcalloc(env->nrcpt > 0 ? env->nrcpt : 1, sizeof(*q->busy));
	TAILQ_INSERT_TAIL(&queue_msgs, q, entry);
	if (unsettled(env) && settle(q))
		return;		/* loaded after a crash, already done */
	if (env->held)
		mta_env_mem_drop(env);	/* read back after the release */
	else if (queue_loop != NULL && !queue_draining)
		dispatch(q, mta_now());
}

/*
 * Admin
 */

/* mta_queue_flush - every pending recipient (of id, or all) is due now;
 * a message on hold stays as it is */
int
mta_queue_flush(const char *id)
{
	struct mta_qmsg *q;
	struct mta_env *env;
	size_t i;
	int n = 0;

	TAILQ_FOREACH(q, &queue_msgs, entry) {
		env = q->env;
		if ((id != NULL && strcmp(env->id, id) != 0) || env->held)
			continue;
		for (i = 0; i < env->nrcpt; i++)
			if (env->rcpt[i].state == MTA_RCPT_PENDING) {
				env->rcpt[i].next = 0;
				n++;
			}
	}
	mta_queue_kick();
	return n;
}

int
mta_queue_delete(const char *id)
{
	struct mta_qmsg *q;

	if ((q = mta_queue_lookup(id)) == NULL)
		return -1;
	if (q->jobs > 0) {
		q->deleted = 1;		/* when its connections let go */
		return 0;
	}
	msg_drop(q, "deleted by the administrator");
	return 0;
}

/* mta_queue_bounce - fail every pending recipient now, with a DSN */
int
mta_queue_bounce(const char *id)
{
	struct mta_qmsg *q;
	struct mta_env *env;
	struct mta_rcpt *r;
	size_t i;

	if ((q = mta_queue_lookup(id)) == NULL || q->deleted)
		return -1;
	env = q->env;
	for (i = 0; i < env->nrcpt; i++) {
		r = &env->rcpt[i];
		if (r->state != MTA_RCPT_PENDING || q->busy[i])
			continue;
		set_str(&r->status, "5.0.0");
		set_str(&r->diag, "bounced by the administrator");
		rcpt_fail(env, r, 0, NULL);
	}
	settle(q);
	return 0;
}

/*
 * unqueue_jobs - q's jobs that wait for a connection go, untried; those
 * on a connection already finish (what was sent cannot be called back)
 */
static void
unqueue_jobs(struct mta_qmsg *q)
{
	struct mta_dest *d, *dtmp;
	struct mta_job *job, *jtmp;

	TAILQ_FOREACH_SAFE(d, &queue_dests, entry, dtmp) {
		TAILQ_FOREACH_SAFE(job, &d->jobs, entry, jtmp) {
			if (job->msg != q)
				continue;
			job_unqueue(d, job);
			job_drop(job);
		}
		dest_free_if_idle(d);
	}
}

/*
 * mta_queue_hold - put message id on hold (the state file says so at
 * once): 0, 1 if it is on hold already, -1 if there is no such message
 */
int
mta_queue_hold(const char *id, const char *reason)
{
	struct mta_qmsg *q;
	struct mta_env *env;
	size_t i, n = 0;

	if ((q = mta_queue_lookup(id)) == NULL || q->deleted)
		return -1;
	env = q->env;
	if (env->held)
		return 1;
	env->held = 1;
	env->hold_since = mta_now();
	set_str(&env->hold_reason, reason);
	for (i = 0; i < env->nrcpt; i++)
		n += env->rcpt[i].state == MTA_RCPT_PENDING;
	log_info("msgid=%s held by=admin pending=%zu reason=\"%s\"", env->id,
	    n, log_vis(env->hold_reason));
	unqueue_jobs(q);
	mta_spool_state(env);
	return 0;
}

/*
 * mta_queue_release - message id leaves the hold, every pending
 * recipient due now: 0, 1 if it was not on hold, -1 if there is no such
 * message.  Its clocks go on from where the hold stopped them.
 */
int
mta_queue_release(const char *id)
{
	struct mta_qmsg *q;
	struct mta_env *env;
	time_t now = mta_now(), held;
	size_t i, n = 0;

	if ((q = mta_queue_lookup(id)) == NULL || q->deleted)
		return -1;
	env = q->env;
	if (!env->held)
		return 1;
	held = now > env->hold_since ? now - env->hold_since : 0;
	env->held = 0;
	env->hold_since = 0;
	env->held_for += held;
	for (i = 0; i < env->nrcpt; i++)
		if (env->rcpt[i].state == MTA_RCPT_PENDING) {
			env->rcpt[i].next = 0;
			n++;
		}
	log_info("msgid=%s released by=admin pending=%zu held=%llds "
	    "reason=\"%s\"", env->id, n, (long long)held,
	    log_vis(env->hold_reason));
	free(env->hold_reason);
	env->hold_reason = NULL;
	mta_spool_state(env);
	mta_queue_kick();
	return 0;
}

/*
 * Life cycle
 */

void
mta_queue_init(uv_loop_t *loop)
{
	queue_loop = loop;
	queue_stopped = 0;
	queue_draining = 0;
	queue_armed = 0;
	mta_deliver_init(loop);
	uv_timer_init(loop, &queue_timer);
	uv_timer_init(loop, &queue_rate_timer);
	queue_rate_due = 0;
	queue_timer_open = 1;
}

/* mta_queue_shutdown - finish what runs, start nothing new */
void
mta_queue_shutdown(void)
{
	queue_draining = 1;
	mta_deliver_shutdown();
}

/*
 * mta_queue_stop - close every connection; the messages stay on disk
 * and in memory until the connections are gone, then are freed.
 */
void
mta_queue_stop(void)
{
	struct mta_qmsg *q;
	struct mta_dest *d, *tmp;
	struct mta_job *job;

	queue_draining = 1;
	queue_stopped = 1;
	if (queue_timer_open) {
		uv_close((uv_handle_t *)&queue_timer, NULL);
		uv_close((uv_handle_t *)&queue_rate_timer, NULL);
		queue_timer_open = 0;
	}
	TAILQ_FOREACH_SAFE(d, &queue_dests, entry, tmp) {
		while ((job = TAILQ_FIRST(&d->jobs)) != NULL) {
			job_unqueue(d, job);
			job->msg->jobs--;
			job_free(job);
		}
		dest_free_if_idle(d);
	}
	mta_deliver_stop();
	while ((q = TAILQ_FIRST(&queue_msgs)) != NULL) {
		TAILQ_REMOVE(&queue_msgs, q, entry);
		if (q->jobs == 0)
			qmsg_free(q);
		else
			q->deleted = 2;		/* freed by its last job */
	}
}
