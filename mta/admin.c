/*
 * admin.c - the queue as the administrator sees it through the control
 * socket: "queue list|show ID|flush [ID]|delete ID|bounce ID|hold ID
 * [reason]|release ID", the
 * qshape-style table of "queue summary [sender]", and the MTA's lines of
 * "stats".  Answers are key=value lines, but for the summary's table.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "../common/addr.h"
#include "../common/log.h"
#include "../common/xmalloc.h"
#include "../daemon/control.h"
#include "mta_local.h"

#define ADMIN_MAXHDRS	(64 * 1024)

static const char *
iso_time(time_t t, char *out, size_t len)
{
	struct tm tm;

	if (t == 0)
		return "now";
	localtime_r(&t, &tm);
	strftime(out, len, "%Y-%m-%dT%H:%M:%S", &tm);
	return out;
}

/* quoted - a diagnostic for a key="value" field: no quotes, no CR/LF */
static void
put_quoted(struct buf *out, const char *key, const char *val)
{
	const char *s;

	if (val == NULL)
		return;
	buf_printf(out, " %s=\"", key);
	for (s = val; *s != '\0'; s++)
		buf_append(out, *s == '"' ? "'" : (*s == '\r' || *s == '\n') ?
		    " " : s, 1);
	buf_puts(out, "\"");
}

const char *const mta_qnames[MTA_NQ] = {
	"active", "deferred", "slow", "hold"
};

int
mta_rcpt_queue(const struct mta_qmsg *q, size_t i)
{
	const struct mta_rcpt *r = &q->env->rcpt[i];

	if (r->state != MTA_RCPT_PENDING)
		return -1;
	return q->busy[i] ? MTA_Q_ACTIVE : q->env->held ? MTA_Q_HOLD :
	    mta_queue_rcpt_slow(r) ? MTA_Q_SLOW : MTA_Q_DEFERRED;
}

static void
list_rcpt(const struct mta_qmsg *q, size_t i, struct buf *out)
{
	const struct mta_rcpt *r = &q->env->rcpt[i];
	int busy = q->busy[i], k;
	char t[32];

	buf_printf(out, "  to=<%s> state=%s route=%s attempts=%u", r->addr,
	    busy ? "delivering" : mta_rstate_name(r->state),
	    policy_route_name(r->route), r->attempts);
	if ((k = mta_rcpt_queue(q, i)) != -1) {
		/* which queue: in a delivery now, on hold, waiting, or slow */
		buf_printf(out, " queue=%s", mta_qnames[k]);
		buf_printf(out, " next=%s", k == MTA_Q_HOLD ? "held" :
		    iso_time(r->next, t, sizeof(t)));
	}
	if (r->status != NULL)
		buf_printf(out, " status=%s", r->status);
	if (r->remote != NULL)
		buf_printf(out, " relay=%s", r->remote);
	put_quoted(out, "diag", r->diag);
	buf_puts(out, "\n");
}

static void
list_env(const struct mta_qmsg *q, struct buf *out)
{
	const struct mta_env *env = q->env;
	char t[32];
	size_t i;

	buf_printf(out, "%s arrival=%s from=<%s> size=%llu nrcpt=%zu%s",
	    env->id, iso_time(env->arrival, t, sizeof(t)), env->sender,
	    (unsigned long long)env->bodylen, env->nrcpt,
	    q->deleted ? " deleting" : "");
	if (env->held) {
		buf_puts(out, " hold=yes");
		put_quoted(out, "hold_reason", env->hold_reason);
	}
	buf_puts(out, "\n");
	for (i = 0; i < env->nrcpt; i++)
		list_rcpt(q, i, out);
}

static int
cmd_list(struct buf *out)
{
	struct mta_qmsg *q;

	TAILQ_FOREACH(q, mta_queue_all(), entry)
		list_env(q, out);
	return 0;
}

static int
cmd_show(const char *id, struct buf *out)
{
	struct mta_qmsg *q;
	struct mta_env *env;
	char a[ADDR_STRLEN], t[32];

	if ((q = mta_queue_lookup(id)) == NULL) {
		buf_printf(out, "no such message: %s\n", id);
		return -1;
	}
	env = q->env;
	list_env(q, out);
	buf_printf(out, "session=%llu dir=%s\n",
	    (unsigned long long)env->session, policy_dir_name(env->dir));
	if (env->client.ss_family != 0)
		buf_printf(out, "client=%s\n", addr_fmt((struct sockaddr *)
		    &env->client, a, sizeof(a)));
	if (env->orig_dst.ss_family != 0)
		buf_printf(out, "orig_dst=%s\n", addr_fmt((struct sockaddr *)
		    &env->orig_dst, a, sizeof(a)));
	buf_printf(out, "helo=%s\ntls=%s\nauth=%s\n",
	    env->helo ? env->helo : "", env->tls ? env->tls : "",
	    env->auth ? env->auth : "");
	buf_printf(out, "envid=%s\nret=%s\nsize_declared=%llu\nbody=%s\n"
	    "smtputf8=%s\nwarned=%s\n", env->envid ? env->envid : "",
	    mta_ret_name(env->ret), (unsigned long long)env->size,
	    env->body8 ? "8bitmime" : "7bit", env->smtputf8 ? "yes" : "no",
	    env->warned ? "yes" : "no");
	buf_printf(out, "hold=%s\n", env->held ? "yes" : "no");
	if (env->held)
		/* the reason may be a peer's text (a quarantine's):
		 * escaped as the log escapes it */
		buf_printf(out, "hold_since=%s\nhold_reason=%s\n",
		    iso_time(env->hold_since, t, sizeof(t)),
		    log_vis(env->hold_reason));
	if (env->held_for > 0)
		buf_printf(out, "held_before=%llds\n",
		    (long long)env->held_for);
	buf_puts(out, "\n");
	if (mta_spool_read_headers(env, out, ADMIN_MAXHDRS) == -1)
		buf_puts(out, "(message file unreadable)\n");
	return 0;
}

/*
 * Queue summary: Postfix's qshape.  A pending recipient that is in a
 * delivery job (q->busy) is "active", one of a message on hold "hold",
 * any other pending one "deferred"; its age is the message's, since
 * arrival (time on hold counted: it is how long the mail has been here).
 */

/* the upper bounds of the age columns, in minutes; the last is open */
static const unsigned shape_limits[MTA_AGE_BUCKETS - 1] = {
	5, 10, 20, 40, 80, 160, 320, 640, 1280
};

/* mta_age_bucket - the column of an age in seconds: the first whose
 * bound it is below, so 299 s is in "5" and 300 s in "10"; a future
 * arrival (the clock stepped back) counts as new */
int
mta_age_bucket(time_t age)
{
	int i;

	for (i = 0; i < MTA_AGE_BUCKETS - 1; i++)
		if (age < (time_t)shape_limits[i] * 60)
			return i;
	return MTA_AGE_BUCKETS - 1;
}

/* the null sender's row, as qshape names it (not lower-cased) */
static const char shape_null[] = "MAILER-DAEMON";

struct shape_ent {
	const char	*dom;		/* into the envelope, not owned */
	int		 bucket;
};

struct shape_row {
	char		 name[LOG_VIS_MAX];
	unsigned long long n[MTA_AGE_BUCKETS + 1];	/* [0]: the total */
};

static int
shape_ent_cmp(const void *a, const void *b)
{
	return strcasecmp(((const struct shape_ent *)a)->dom,
	    ((const struct shape_ent *)b)->dom);
}

/* the largest total first; equal totals by name, so the order is stable */
static int
shape_row_cmp(const void *a, const void *b)
{
	const struct shape_row *x = a, *y = b;

	if (x->n[0] != y->n[0])
		return x->n[0] < y->n[0] ? 1 : -1;
	return strcmp(x->name, y->name);
}

/* shape_name - a domain as a row name: lower case, escaped like a log
 * word so that no peer's byte reaches the administrator's terminal */
static void
shape_name(const char *dom, char *out, size_t len)
{
	char low[256];
	size_t i;

	if (dom == shape_null) {
		snprintf(out, len, "%s", dom);
		return;
	}
	for (i = 0; dom[i] != '\0' && i < sizeof(low) - 1; i++)
		low[i] = (char)tolower((unsigned char)dom[i]);
	low[i] = '\0';
	snprintf(out, len, "%s", i == 0 ? "(none)" : log_word(low));
}

/* shape_table - one queue's table from its entries (sorted here) */
static void
shape_table(const char *title, struct shape_ent *e, size_t ne,
    struct buf *out)
{
	static const char *labels[MTA_AGE_BUCKETS + 1] = { "T", "5", "10",
	    "20", "40", "80", "160", "320", "640", "1280", "1280+" };
	struct shape_row *rows, total;
	size_t i, j, nr = 0;
	int w[MTA_AGE_BUCKETS + 1], wname = 5, k;
	char num[24];

	qsort(e, ne, sizeof(*e), shape_ent_cmp);
	rows = xcalloc(ne + 1, sizeof(*rows));
	memset(&total, 0, sizeof(total));
	snprintf(total.name, sizeof(total.name), "TOTAL");
	for (i = 0; i < ne; i++) {
		if (i == 0 || strcasecmp(e[i].dom, e[i - 1].dom) != 0)
			shape_name(e[i].dom, rows[nr++].name,
			    sizeof(rows[0].name));
		rows[nr - 1].n[0]++;
		rows[nr - 1].n[e[i].bucket + 1]++;
		total.n[0]++;
		total.n[e[i].bucket + 1]++;
	}
	qsort(rows, nr, sizeof(*rows), shape_row_cmp);
	/* every column as wide as its label or its largest count (TOTAL's) */
	for (j = 0; j <= MTA_AGE_BUCKETS; j++) {
		k = snprintf(num, sizeof(num), "%llu", total.n[j]);
		w[j] = (int)strlen(labels[j]) > k ? (int)strlen(labels[j]) : k;
	}
	for (i = 0; i < nr; i++)
		if ((int)strlen(rows[i].name) > wname)
			wname = (int)strlen(rows[i].name);
	buf_printf(out, "%s\n%*s", title, wname, "");
	for (j = 0; j <= MTA_AGE_BUCKETS; j++)
		buf_printf(out, " %*s", w[j], labels[j]);
	buf_puts(out, "\n");
	for (i = 0; i <= nr; i++) {
		const struct shape_row *r = i == 0 ? &total : &rows[i - 1];

		buf_printf(out, "%*s", wname, r->name);
		for (j = 0; j <= MTA_AGE_BUCKETS; j++)
			buf_printf(out, " %*llu", w[j], r->n[j]);
		buf_puts(out, "\n");
	}
	free(rows);
}

/*
 * mta_queue_summary - the tables of the active and the deferred queue,
 * and of the hold queue when a message is on hold: per recipient domain,
 * pending recipients counted; per sender domain (by_sender), messages,
 * once in each queue where they have a recipient, the null sender as
 * MAILER-DAEMON (both as qshape counts them)
 */
void
mta_queue_summary(const struct mta_qmsgq *all, time_t now, int by_sender,
    struct buf *out)
{
	const struct mta_qmsg *q;
	const struct mta_env *env;
	struct shape_ent *e[3];
	size_t ne[3] = { 0, 0, 0 }, cap = 0, i;
	int has[3], b, k;

	TAILQ_FOREACH(q, all, entry)
		cap += q->env->nrcpt;
	for (k = 0; k < 3; k++)
		e[k] = xcalloc(cap + 1, sizeof(*e[k]));
	TAILQ_FOREACH(q, all, entry) {
		env = q->env;
		b = mta_age_bucket(now - env->arrival);
		has[0] = has[1] = has[2] = 0;
		for (i = 0; i < env->nrcpt; i++) {
			if ((k = mta_rcpt_queue(q, i)) == -1)
				continue;
			/* qshape's three tables: slow mail is deferred */
			k = k == MTA_Q_ACTIVE ? 0 : k == MTA_Q_HOLD ? 2 : 1;
			if (by_sender) {
				has[k] = 1;
				continue;
			}
			e[k][ne[k]].dom = mta_addr_domain(env->rcpt[i].addr);
			e[k][ne[k]++].bucket = b;
		}
		for (k = 0; k < 3; k++) {
			if (!has[k])
				continue;
			e[k][ne[k]].dom = env->sender[0] == '\0' ?
			    shape_null : mta_addr_domain(env->sender);
			e[k][ne[k]++].bucket = b;
		}
	}
	shape_table("active", e[0], ne[0], out);
	shape_table("deferred", e[1], ne[1], out);
	if (ne[2] > 0)
		shape_table("hold", e[2], ne[2], out);
	for (k = 0; k < 3; k++)
		free(e[k]);
}

/* cmd_hold - "queue hold ID [reason ...]": the words are the reason */
static int
cmd_hold(const char *id, int argc, char **argv, struct buf *out)
{
	struct buf reason;
	int i, n;

	buf_init(&reason);
	for (i = 0; i < argc; i++)
		buf_printf(&reason, "%s%s", i > 0 ? " " : "", argv[i]);
	buf_append(&reason, "", 1);
	n = mta_queue_hold(id, argc > 0 ? reason.data :
	    "held by the administrator");
	buf_free(&reason);
	if (n != 0) {
		buf_printf(out, "%s: %s\n", n == -1 ? "no such message" :
		    "already on hold", id);
		return -1;
	}
	buf_printf(out, "held %s\n", id);
	return 0;
}

/* cmd_queue - "queue SUBCOMMAND [ID]" */
static int
cmd_queue(int argc, char **argv, struct buf *out)
{
	const char *sub = argc > 1 ? argv[1] : "list";
	const char *id = argc > 2 ? argv[2] : NULL;
	struct mta_env *env;
	int n;

	if (strcmp(sub, "list") == 0 && argc <= 2)
		return cmd_list(out);
	if (strcmp(sub, "summary") == 0 && (argc == 2 || (argc == 3 &&
	    strcmp(argv[2], "sender") == 0))) {
		mta_queue_summary(mta_queue_all(), mta_now(), argc == 3, out);
		return 0;
	}
	if (strcmp(sub, "summary") == 0) {
		buf_puts(out, "usage: queue summary [sender]\n");
		return -1;
	}
	/* a queue id is 16 hex digits: nothing else is looked up */
	if (id != NULL && !mta_id_valid(id)) {
		buf_printf(out, "not a queue id: %s\n", log_word(id));
		log_warnx("control: queue %s refused: not a queue id: %s",
		    log_word(sub), log_word(id));
		return -1;
	}
	if (strcmp(sub, "flush") == 0 && argc <= 3) {
		if (id != NULL && (env = mta_queue_find(id)) == NULL) {
			buf_printf(out, "no such message: %s\n", id);
			return -1;
		}
		if (id != NULL && env->held) {
			buf_printf(out, "on hold: %s (queue release it)\n", id);
			return -1;
		}
		n = mta_queue_flush(id);
		buf_printf(out, "flushed=%d\n", n);
		log_info("queue: flush %s recipients=%d", id ? id : "all", n);
		return 0;
	}
	if (strcmp(sub, "hold") == 0 && id != NULL)
		return cmd_hold(id, argc - 3, argv + 3, out);
	if (id == NULL || argc != 3) {
		buf_puts(out, "usage: queue list | summary [sender] | show ID | "
		    "flush [ID] | delete ID | bounce ID | hold ID [reason] | "
		    "release ID\n");
		return -1;
	}
	if (strcmp(sub, "release") == 0) {
		if ((n = mta_queue_release(id)) != 0) {
			buf_printf(out, "%s: %s\n", n == -1 ?
			    "no such message" : "not on hold", id);
			return -1;
		}
		buf_printf(out, "released %s\n", id);
		return 0;
	}
	if (strcmp(sub, "show") == 0)
		return cmd_show(id, out);
	if (strcmp(sub, "delete") == 0 || strcmp(sub, "bounce") == 0) {
		n = sub[0] == 'd' ? mta_queue_delete(id) : mta_queue_bounce(id);
		if (n == -1) {
			buf_printf(out, "no such message: %s\n", id);
			return -1;
		}
		buf_printf(out, "%s %s\n", sub[0] == 'd' ? "deleted" :
		    "bounced", id);
		log_info("msgid=%s queue: %s by the administrator", id, sub);
		return 0;
	}
	buf_printf(out, "unknown queue command: %s\n", sub);
	return -1;
}

/* the counters "stats" shows, in its order */
static const struct {
	const char	*key;
	const uint64_t	*value;
} counters[] = {
	{ "queued", &mta_stats.received },
	{ "delivered", &mta_stats.delivered },
	{ "deferred", &mta_stats.deferred },
	{ "bounced", &mta_stats.bounced },
	{ "expired", &mta_stats.expired },
	{ "dsn_sent", &mta_stats.dsn_sent },
	{ "queue_corrupt", &mta_stats.corrupt },
};

/*
 * queue_shape - the stats lines of each queue (mta_rcpt_queue): its
 * messages (a message once in each queue where it has a recipient, as
 * qshape counts senders), pending recipients, and the age of its oldest
 * message since arrival (0 when empty); and spool_bytes, the message
 * files of the queue (envelope, headers and body)
 */
static void
queue_shape(struct buf *out)
{
	const struct mta_qmsg *q;
	unsigned long long msgs[MTA_NQ], rcpts[MTA_NQ], bytes = 0;
	time_t now = mta_now(), oldest[MTA_NQ], age;
	int has[MTA_NQ], k;
	size_t i;

	for (k = 0; k < MTA_NQ; k++) {
		msgs[k] = rcpts[k] = 0;
		oldest[k] = 0;
	}
	TAILQ_FOREACH(q, mta_queue_all(), entry) {
		bytes += q->env->bodyoff + q->env->bodylen;
		/* a future arrival (the clock stepped back) is new */
		age = now > q->env->arrival ? now - q->env->arrival : 0;
		memset(has, 0, sizeof(has));
		for (i = 0; i < q->env->nrcpt; i++)
			if ((k = mta_rcpt_queue(q, i)) != -1) {
				rcpts[k]++;
				has[k] = 1;
			}
		for (k = 0; k < MTA_NQ; k++) {
			if (!has[k])
				continue;
			msgs[k]++;
			if (age > oldest[k])
				oldest[k] = age;
		}
	}
	for (k = 0; k < MTA_NQ; k++)
		buf_printf(out, "queue_messages.%s=%llu\n"
		    "queue_recipients.%s=%llu\nqueue_oldest_seconds.%s=%lld\n",
		    mta_qnames[k], msgs[k], mta_qnames[k], rcpts[k],
		    mta_qnames[k], (long long)oldest[k]);
	buf_printf(out, "spool_bytes=%llu\n", bytes);
}

struct tls_counts mta_tls_delivery;

static void
stats(struct buf *out)
{
	struct mta_qmsg *q;
	unsigned long long msgs = 0, rcpts = 0, held = 0;
	uint64_t batches, ops, tls[TLS_NPROTO];
	size_t i;

	TAILQ_FOREACH(q, mta_queue_all(), entry) {
		msgs++;
		held += q->env->held != 0;
		for (i = 0; i < q->env->nrcpt; i++)
			rcpts += q->env->rcpt[i].state == MTA_RCPT_PENDING;
	}
	buf_printf(out, "queue_messages=%llu\n", msgs);
	buf_printf(out, "queue_recipients=%llu\n", rcpts);
	queue_shape(out);
	buf_printf(out, "queue_held=%llu\n", held);
	buf_printf(out, "queue_rate_held=%u\n", mta_queue_rate_waiting());
	for (i = 0; i < sizeof(counters) / sizeof(counters[0]); i++)
		buf_printf(out, "%s=%llu\n", counters[i].key,
		    (unsigned long long)*counters[i].value);
	/* open ones: at work, and kept for the next job */
	buf_printf(out, "mta_connections=%u\n", mta_deliver_count() +
	    mta_deliver_idle());
	mta_spool_counts(&batches, &ops);
	buf_printf(out, "spool_batches=%llu\nspool_ops=%llu\n",
	    (unsigned long long)batches, (unsigned long long)ops);
	histogram_stats(&mta_delay_hist, "delivery_delay_seconds", out);
	histogram_stats(mta_spool_fsync_hist(), "spool_fsync_seconds", out);
	histogram_stats(mta_spool_batch_hist(), "spool_batch_messages", out);
	memset(tls, 0, sizeof(tls));
	tls_counts_add(&mta_tls_delivery, tls);
	tls_counts_print(tls, "delivery", out);
	mta_dns_stats(out);
}

void
mta_admin_register(void)
{
	static int done;

	if (done++)
		return;
	control_register("queue", cmd_queue);
	control_register_stats(stats);
}
