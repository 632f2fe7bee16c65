/*
 * admin.c - the queue as the administrator sees it through the control
 * socket: "queue list|show ID|flush [ID]|delete ID|bounce ID", and the
 * MTA's lines of "stats".  Answers are key=value lines.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "../common/addr.h"
#include "../common/log.h"
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

static void
list_rcpt(const struct mta_rcpt *r, int busy, struct buf *out)
{
	char t[32];

	buf_printf(out, "  to=<%s> state=%s route=%s attempts=%u", r->addr,
	    busy ? "delivering" : mta_rstate_name(r->state),
	    policy_route_name(r->route), r->attempts);
	if (r->state == MTA_RCPT_PENDING)
		buf_printf(out, " next=%s", iso_time(r->next, t, sizeof(t)));
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

	buf_printf(out, "%s arrival=%s from=<%s> size=%llu nrcpt=%zu%s\n",
	    env->id, iso_time(env->arrival, t, sizeof(t)), env->sender,
	    (unsigned long long)env->bodylen, env->nrcpt,
	    q->deleted ? " deleting" : "");
	for (i = 0; i < env->nrcpt; i++)
		list_rcpt(&env->rcpt[i], q->busy[i], out);
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
	char a[ADDR_STRLEN];

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
	buf_puts(out, "\n");
	if (mta_spool_read_headers(env, out, ADMIN_MAXHDRS) == -1)
		buf_puts(out, "(message file unreadable)\n");
	return 0;
}

/* cmd_queue - "queue SUBCOMMAND [ID]" */
static int
cmd_queue(int argc, char **argv, struct buf *out)
{
	const char *sub = argc > 1 ? argv[1] : "list";
	const char *id = argc > 2 ? argv[2] : NULL;
	int n;

	if (strcmp(sub, "list") == 0 && argc <= 2)
		return cmd_list(out);
	/* a queue id is 16 hex digits: nothing else is looked up */
	if (id != NULL && !mta_id_valid(id)) {
		buf_printf(out, "not a queue id: %s\n", log_word(id));
		log_warnx("control: queue %s refused: not a queue id: %s",
		    log_word(sub), log_word(id));
		return -1;
	}
	if (strcmp(sub, "flush") == 0 && argc <= 3) {
		if (id != NULL && mta_queue_find(id) == NULL) {
			buf_printf(out, "no such message: %s\n", id);
			return -1;
		}
		n = mta_queue_flush(id);
		buf_printf(out, "flushed=%d\n", n);
		log_info("queue: flush %s recipients=%d", id ? id : "all", n);
		return 0;
	}
	if (id == NULL || argc != 3) {
		buf_puts(out, "usage: queue list | show ID | flush [ID] | "
		    "delete ID | bounce ID\n");
		return -1;
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

static void
stats(struct buf *out)
{
	struct mta_qmsg *q;
	unsigned long long msgs = 0, rcpts = 0;
	uint64_t batches, ops;
	size_t i;

	TAILQ_FOREACH(q, mta_queue_all(), entry) {
		msgs++;
		for (i = 0; i < q->env->nrcpt; i++)
			rcpts += q->env->rcpt[i].state == MTA_RCPT_PENDING;
	}
	buf_printf(out, "queue_messages=%llu\n", msgs);
	buf_printf(out, "queue_recipients=%llu\n", rcpts);
	for (i = 0; i < sizeof(counters) / sizeof(counters[0]); i++)
		buf_printf(out, "%s=%llu\n", counters[i].key,
		    (unsigned long long)*counters[i].value);
	/* open ones: at work, and kept for the next job */
	buf_printf(out, "mta_connections=%u\n", mta_deliver_count() +
	    mta_deliver_idle());
	mta_spool_counts(&batches, &ops);
	buf_printf(out, "spool_batches=%llu\nspool_ops=%llu\n",
	    (unsigned long long)batches, (unsigned long long)ops);
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
