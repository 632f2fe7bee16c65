/*
 * sink_queue.c - the queue sink: every session that is not a live
 * relay.  It owns one session's transaction toward mta/: recipients
 * through policy (reject, tempfail, discard, the route of each, and the
 * verify-recipients callout), the message opened at the MTA when DATA
 * is accepted (the MTA adds the box's Received: field), the content
 * written to it in chunks, and the submission through the worker's door at the dot: 250
 * is said only when the MTA's answer for this session's id says queued.
 * With milters (milter.c), each step is theirs to answer after ours:
 * the session waits on the chain (mstep names the step it answers), and
 * at the dot their edits go into the message (header, body, sender and
 * recipients: the message is still ours to change) and a quarantine puts
 * it on hold, before it is submitted.
 */
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <uv.h>

#include "../common/addr.h"
#include "../common/buf.h"
#include "../common/log.h"
#include "../common/smtp.h"
#include "../common/tls.h"
#include "../common/xmalloc.h"
#include "../mta/mta.h"
#include "../policy/policy.h"
#include "callout.h"
#include "proxy.h"
#include "../common/smtpc.h"
#include "milter.h"
#include "sink.h"

#define QSINK_BODY_CHUNK	(64 * 1024)

enum qsink_state {
	Q_IDLE = 0,	/* no message open: MAIL and RCPT */
	Q_VERIFY,	/* a RCPT waits for the protected server's answer */
	Q_MSG,		/* a message open at the MTA, content going to it */
	Q_COMMIT,	/* submitted: the answer comes by session id */
	Q_CLOSED
};

static const char *qsink_state_names[] = {
	"idle", "verify", "msg", "commit", "closed"
};

/* the milter step the session waits on (the chain answers it) */
enum qsink_mstep { MS_NONE = 0, MS_CONNECT, MS_HELO, MS_MAIL, MS_RCPT,
	MS_DATA, MS_EOM };

struct rcpt {
	char			*addr;
	char			*orcpt;
	unsigned		 notify;
	enum policy_route	 route;
};

struct sink {
	enum qsink_state	 state;
	struct sink_env		*env;
	struct rcpt		*rcpts;		/* accepted */
	unsigned		 nok;
	unsigned		 ndiscard;	/* accepted by a discard rule */
	struct callout		*callout;	/* Q_VERIFY */
	struct rcpt		 vrcpt;		/* the RCPT it is about */
	struct mta_msg		*msg;		/* Q_MSG */
	struct buf		 body;		/* content not yet written */
	struct milter_chain	*milters;	/* NULL: none */
	enum qsink_mstep	 mstep;
	int			 mehlo;		/* MS_HELO: it was EHLO */
	struct rcpt		 mrcpt;		/* MS_RCPT: the RCPT */
	int			 mdiscard;	/* a milter discards it */
};

static void	verify_cancel(struct sink *);
static void	qsink_milter(void *, const struct milter_answer *);
static void	qsink_mwake(void *);
static void	rcpt_go(struct sink *, struct rcpt *);
static void	submit(struct sink *);
static void	greet(struct sink *);
static void	helo_reply(struct sink *, int);
static void	milter_step(struct sink *, enum qsink_mstep);

/* enter_state - the one place the queue sink changes state; leaving a
 * state lets go of what it held */
static void
enter_state(struct sink *q, enum qsink_state st)
{
	if (q->state == st)
		return;
	log_debug("session=%llu queue %s -> %s",
	    (unsigned long long)q->env->conn.id, qsink_state_names[q->state],
	    qsink_state_names[st]);
	if (q->state == Q_VERIFY)
		verify_cancel(q);
	if (q->state == Q_MSG && q->msg != NULL) {
		mta_msg_abort(q->msg);
		q->msg = NULL;
	}
	if (q->state == Q_MSG)
		buf_reset(&q->body);
	q->state = st;
}

/* ---------------------------------------------------------------- rcpts */

static void
rcpt_drop(struct rcpt *r)
{
	free(r->addr);
	free(r->orcpt);
	memset(r, 0, sizeof(*r));
}

static unsigned
notify_bits(const char *v)
{
	unsigned bits = 0;

	if (v == NULL)
		return 0;
	if (strcasecmp(v, "NEVER") == 0)
		return MTA_NOTIFY_NEVER;
	if (strcasestr(v, "SUCCESS") != NULL)
		bits |= MTA_NOTIFY_SUCCESS;
	if (strcasestr(v, "FAILURE") != NULL)
		bits |= MTA_NOTIFY_FAILURE;
	if (strcasestr(v, "DELAY") != NULL)
		bits |= MTA_NOTIFY_DELAY;
	return bits;
}

/* rcpt_make - a recipient from its RCPT */
static void
rcpt_make(struct sink *q, const struct smtp_path *path, struct rcpt *r)
{
	const char *orcpt;

	r->addr = xstrdup(path->addr);
	r->orcpt = (orcpt = smtp_path_param(path, "ORCPT")) != NULL ?
	    xstrdup(orcpt) : NULL;
	r->notify = notify_bits(smtp_path_param(path, "NOTIFY"));
	r->route = policy_route_rcpt(q->env->pol, q->env->conn.dir,
	    path->domain ? path->domain : "",
	    (struct sockaddr *)&q->env->conn.orig_dst);
}

/* rcpt_take - the transaction takes r over */
static void
rcpt_take(struct sink *q, struct rcpt *r)
{
	q->rcpts = xreallocarray(q->rcpts, q->nok + 1, sizeof(*q->rcpts));
	q->rcpts[q->nok++] = *r;
	smtpd_sink_log_rcpt(q->env, r->addr);
	memset(r, 0, sizeof(*r));
}

/* ---------------------------------------------------------------- verify */

/* verify_log - what the protected server said about a recipient */
static void
verify_log(struct sink *q, const char *rcpt, int code, const char *line,
    int cached)
{
	struct sink_env *e = q->env;

	log_info("session=%llu client=%s orig_dst=%s dir=%s verify=<%s> "
	    "result=%s cached=%s reply=\"%s\"", (unsigned long long)e->conn.id,
	    e->cstr, e->dstr, policy_dir_name(e->conn.dir), log_word(rcpt),
	    code >= 200 && code < 300 ? "accepted" : code >= 500 ? "refused" :
	    code >= 400 ? "tempfail" : "unavailable", cached ? "yes" : "no",
	    log_vis(line));
}

/*
 * verify_answer - the reply to a verified RCPT: 250 (r taken), the
 * server's own refusal, or 451 4.4.3 without an answer (r dropped)
 */
static void
verify_answer(struct sink *q, struct rcpt *r, int code, const char *line,
    char *out, size_t len)
{
	if (code >= 200 && code < 300) {
		rcpt_take(q, r);
		snprintf(out, len, "250 2.1.5 Ok");
		return;
	}
	rcpt_drop(r);
	if (code >= 400 && code < 600)
		snprintf(out, len, "%s", line);
	else
		snprintf(out, len, "451 4.4.3 Error: cannot verify the "
		    "recipient now, try again later");
}

/* verify_done - the callout's answer: the waiting RCPT's reply */
static void
verify_done(void *arg, int code, const char *line)
{
	struct sink *q = arg;
	char rl[CALLOUT_LINE + 64];

	q->callout = NULL;
	verify_log(q, q->vrcpt.addr, code, line, 0);
	verify_answer(q, &q->vrcpt, code, line, rl, sizeof(rl));
	enter_state(q, Q_IDLE);
	smtpd_sink_reply(q->env, rl);
}

/*
 * verify_rcpt - ask the protected server about r before answering: from
 * the cache at once, else input waits for a callout to the original
 * destination.  r is taken over.
 */
static void
verify_rcpt(struct sink *q, const struct policy_domain *d, struct rcpt *r)
{
	struct sink_env *e = q->env;
	struct callout_opts o;
	char line[CALLOUT_LINE], rl[CALLOUT_LINE + 64];
	int code;

	if (callout_cached(proxy_worker_callouts(e->conn.worker),
	    (struct sockaddr *)&e->conn.orig_dst, r->addr, &code, line,
	    sizeof(line))) {
		verify_log(q, r->addr, code, line, 1);
		verify_answer(q, r, code, line, rl, sizeof(rl));
		smtpd_sink_reply(e, rl);
		return;
	}
	memset(&o, 0, sizeof(o));
	o.id = e->conn.id;
	o.dst = e->conn.orig_dst;
	o.helo = e->host;
	o.tls = d->tls == POLICY_UPTLS_NONE ? SMTPC_TLS_NONE :
	    d->tls == POLICY_UPTLS_STARTTLS ? SMTPC_TLS_REQUIRE :
	    SMTPC_TLS_OPPORTUNISTIC;
	o.ctx = o.tls != SMTPC_TLS_NONE ? tls_ctx_client_shared() : NULL;
	o.corks = proxy_worker_corks(e->conn.worker);
	q->vrcpt = *r;
	memset(r, 0, sizeof(*r));
	smtpd_sink_wait(e);
	enter_state(q, Q_VERIFY);
	q->callout = callout_start(e->loop,
	    proxy_worker_callouts(e->conn.worker), &o, q->vrcpt.addr,
	    verify_done, q);
}

/* verify_cancel - no answer is waited for */
static void
verify_cancel(struct sink *q)
{
	callout_cancel(q->callout);
	q->callout = NULL;
	rcpt_drop(&q->vrcpt);
}

/* ---------------------------------------------------------------- message */

/* qsink_wake - the spill file caught up: the session may read on */
static void
qsink_wake(void *arg)
{
	smtpd_sink_wake(arg);
}

/* msg_open - the message at the MTA for the accepted recipients */
static int
msg_open(struct sink *q)
{
	struct sink_env *e = q->env;
	struct mta_info info;
	unsigned i;

	memset(&info, 0, sizeof(info));
	info.session_id = e->conn.id;
	info.client = e->conn.client;
	info.orig_dst = e->conn.orig_dst;
	info.dir = e->conn.dir;
	info.helo = e->helo;
	info.tls = e->tls ? tls_conn_info(e->tls) : NULL;
	info.sender = e->mail.from;
	info.envid = e->mail.envid;
	info.ret = e->mail.ret;
	info.size = e->mail.size;
	info.body_8bit = e->mail.body8;
	info.smtputf8 = e->mail.smtputf8;
	info.loop = e->loop;
	if ((q->msg = mta_msg_new(&info)) == NULL)
		return -1;
	mta_msg_set_wake(q->msg, qsink_wake, e);
	for (i = 0; i < q->nok; i++)
		mta_msg_add_rcpt(q->msg, q->rcpts[i].addr,
		    q->rcpts[i].orcpt, q->rcpts[i].notify,
		    q->rcpts[i].route);
	/* the box's Received: is the MTA's (mta.c, with the queue id) */
	return 0;
}

/* ---------------------------------------------------------------- milters */

/* qsink_mwake - the milters caught up: the session may read on */
static void
qsink_mwake(void *arg)
{
	struct sink *q = arg;

	smtpd_sink_wake(q->env);
}

/* milter_step - the session waits on the chain for step st */
static void
milter_step(struct sink *q, enum qsink_mstep st)
{
	q->mstep = st;
	if (st != MS_CONNECT)
		smtpd_sink_wait(q->env);
}

/* milter_refuse - the milters' reply (or the default of v's class) */
static void
milter_refuse(struct sink *q, const struct milter_answer *a,
    const char *dflt)
{
	if (a->why != NULL)
		smtpd_sink_reason(q->env, a->why);
	if (a->reply != NULL)
		smtpd_sink_raw(q->env, a->reply);
	else
		smtpd_sink_reply(q->env, dflt);
}

/*
 * milter_envelope - the milters' envelope changes, in the order asked,
 * one log line each: an added recipient is routed as a RCPT of its
 * domain would be in this session's direction.  -1 when none is left:
 * the message goes nowhere (answered here, as a discard is).
 */
static int
milter_envelope(struct sink *q)
{
	struct sink_env *e = q->env;
	const struct milter_envedit *ed;
	const char *by = NULL;
	enum policy_route route;
	size_t i, n;
	unsigned k;
	char why[128];

	n = milter_envedits(q->milters, &ed);
	for (i = 0; i < n; i++, ed++) {
		by = ed->milter;
		switch (ed->op) {
		case MILTER_CHGFROM:
			mta_msg_set_sender(q->msg, ed->addr);
			log_info("session=%llu msgid=%s milter=%s action=chgfrom "
			    "from=<%s>", (unsigned long long)e->conn.id,
			    mta_msg_id(q->msg), ed->milter, log_word(ed->addr));
			break;
		case MILTER_ADDRCPT:
			if (mta_msg_has_rcpt(q->msg, ed->addr)) {
				log_info("session=%llu msgid=%s milter=%s "
				    "action=addrcpt rcpt=<%s> already=yes",
				    (unsigned long long)e->conn.id,
				    mta_msg_id(q->msg), ed->milter,
				    log_word(ed->addr));
				break;
			}
			route = policy_route_rcpt(e->pol, e->conn.dir,
			    ed->domain ? ed->domain : "",
			    (struct sockaddr *)&e->conn.orig_dst);
			mta_msg_add_rcpt(q->msg, ed->addr, ed->orcpt,
			    notify_bits(ed->notify), route);
			log_info("session=%llu msgid=%s milter=%s action=addrcpt "
			    "rcpt=<%s> route=%s", (unsigned long long)e->conn.id,
			    mta_msg_id(q->msg), ed->milter, log_word(ed->addr),
			    policy_name(policy_route_names, (int)route));
			break;
		case MILTER_DELRCPT:
			k = mta_msg_del_rcpt(q->msg, ed->addr);
			log_info("session=%llu msgid=%s milter=%s action=delrcpt "
			    "rcpt=<%s> deleted=%u", (unsigned long long)e->conn.id,
			    mta_msg_id(q->msg), ed->milter, log_word(ed->addr), k);
			break;
		}
	}
	if (n == 0 || mta_msg_nrcpt(q->msg) > 0)
		return 0;
	log_info("session=%llu msgid=%s milter=%s discarded: every recipient "
	    "deleted", (unsigned long long)e->conn.id, mta_msg_id(q->msg), by);
	snprintf(why, sizeof(why), "every recipient deleted by milter %s", by);
	enter_state(q, Q_IDLE);
	smtpd_sink_reason(e, why);
	smtpd_sink_reply(e, "250 2.0.0 Ok: discarded");
	return -1;
}

/* milter_end - the milters' answer at the dot */
static void
milter_end(struct sink *q, const struct milter_answer *a)
{
	struct sink_env *e = q->env;
	struct buf head;
	uint64_t oldlen;
	const char *why, *by;
	size_t blen;
	int edited;

	switch (a->verdict) {
	case MILTER_CONTINUE:
		break;
	case MILTER_DISCARD:
		log_info("session=%llu msgid=%s milter=%s discarded",
		    (unsigned long long)e->conn.id,
		    q->msg ? mta_msg_id(q->msg) : "-", a->milter);
		enter_state(q, Q_IDLE);
		smtpd_sink_reason(e, a->why);
		smtpd_sink_reply(e, "250 2.0.0 Ok: discarded");
		return;
	case MILTER_REJECT:
	case MILTER_TEMPFAIL:
		enter_state(q, Q_IDLE);
		milter_refuse(q, a, a->verdict == MILTER_REJECT ?
		    "550 5.7.1 Command rejected" :
		    "451 4.7.1 Service unavailable - try again later");
		return;
	}
	if (q->msg != NULL) {
		buf_init(&head);
		edited = milter_edited_head(q->milters, &head, &oldlen);
		if (edited)
			log_info("session=%llu msgid=%s milter header edited",
			    (unsigned long long)e->conn.id, mta_msg_id(q->msg));
		/* a new body comes with the header as edited */
		if (milter_replaced_body(q->milters, &head, &by, &blen)) {
			mta_msg_replace(q->msg, &head);
			log_info("session=%llu msgid=%s milter=%s "
			    "action=replbody size=%zu",
			    (unsigned long long)e->conn.id, mta_msg_id(q->msg),
			    by, blen);
		} else if (edited)
			mta_msg_edit_head(q->msg, oldlen, head.data, head.len);
		buf_free(&head);
		if (milter_envelope(q) == -1)
			return;
		if ((why = milter_quarantine(q->milters)) != NULL) {
			log_info("session=%llu msgid=%s milter quarantine "
			    "reason=\"%s\"", (unsigned long long)e->conn.id,
			    mta_msg_id(q->msg), log_vis(why));
			mta_msg_hold(q->msg, why);
		}
	}
	submit(q);
}

/* qsink_milter - the chain answers the step the session waits on */
static void
qsink_milter(void *arg, const struct milter_answer *a)
{
	struct sink *q = arg;
	struct sink_env *e = q->env;
	enum qsink_mstep st = q->mstep;
	struct rcpt r;

	q->mstep = MS_NONE;
	switch (st) {
	case MS_NONE:
		return;
	case MS_CONNECT:
		/* refused or not, the greeting: the refusal answers the
		 * commands (milter.c keeps it) */
		if (a->verdict != MILTER_CONTINUE)
			log_info("session=%llu milter=%s refuses the "
			    "connection: %s", (unsigned long long)e->conn.id,
			    a->milter ? a->milter : "-", a->why ? a->why : "");
		greet(q);
		return;
	case MS_HELO:
		if (a->verdict == MILTER_CONTINUE)
			helo_reply(q, q->mehlo);
		else
			milter_refuse(q, a, "550 5.7.1 Command rejected");
		return;
	case MS_MAIL:
		if (a->verdict == MILTER_CONTINUE)
			smtpd_sink_reply(e, "250 2.1.0 Ok");
		else if (a->verdict == MILTER_DISCARD) {
			/* Sendmail's meaning: the message goes nowhere */
			q->mdiscard = 1;
			smtpd_sink_reply(e, "250 2.1.0 Ok");
		} else
			milter_refuse(q, a, "550 5.7.1 Command rejected");
		return;
	case MS_RCPT:
		r = q->mrcpt;
		memset(&q->mrcpt, 0, sizeof(q->mrcpt));
		if (a->verdict == MILTER_CONTINUE) {
			rcpt_go(q, &r);
			return;
		}
		if (a->verdict == MILTER_DISCARD) {
			q->mdiscard = 1;
			rcpt_go(q, &r);
			return;
		}
		rcpt_drop(&r);
		milter_refuse(q, a, "550 5.7.1 Command rejected");
		return;
	case MS_DATA:
		if (a->verdict == MILTER_CONTINUE ||
		    a->verdict == MILTER_DISCARD) {
			if (a->verdict == MILTER_DISCARD)
				q->mdiscard = 1;
			smtpd_sink_reply(e, "354 End data with "
			    "<CR><LF>.<CR><LF>");
			return;
		}
		enter_state(q, Q_IDLE);
		milter_refuse(q, a, "550 5.7.1 Command rejected");
		return;
	case MS_EOM:
		if (q->mdiscard && a->verdict == MILTER_CONTINUE) {
			struct milter_answer d = *a;

			d.verdict = MILTER_DISCARD;
			d.why = "discarded by a milter";
			milter_end(q, &d);
			return;
		}
		milter_end(q, a);
		return;
	}
}

/* ---------------------------------------------------------------- ops */

static struct sink *
qsink_open(struct sink_env *e)
{
	struct sink *q = xcalloc(1, sizeof(*q));
	struct sink_caps c;

	q->env = e;
	q->state = Q_IDLE;
	buf_init(&q->body);
	/* before any EHLO: the enhanced codes, and no lock step */
	memset(&c, 0, sizeof(c));
	c.enhanced = 1;
	c.pipelining = 1;
	smtpd_sink_caps(e, &c);
	return q;
}

static void
greet(struct sink *q)
{
	char greeting[300];

	snprintf(greeting, sizeof(greeting), "220 %s ESMTP\r\n",
	    q->env->host);
	smtpd_sink_greeting(q->env, greeting, strlen(greeting), NULL);
}

/* qsink_greet - after the milters heard of the connection: what they
 * say of it stands for the session's commands, as with Postfix */
static void
qsink_greet(struct sink *q)
{
	q->milters = smtpd_sink_milters(q->env,
	    MILTER_EDIT_BODY | MILTER_EDIT_ENVELOPE, qsink_milter, qsink_mwake,
	    q);
	if (q->milters == NULL) {
		greet(q);
		return;
	}
	q->mstep = MS_CONNECT;
	milter_connect(q->milters);
}

/* helo_reply - HELO/EHLO answered here: every extension mta/ takes */
static void
helo_reply(struct sink *q, int ehlo)
{
	struct sink_env *e = q->env;
	struct sink_caps c;
	struct buf b;
	char tmp[300];

	memset(&c, 0, sizeof(c));
	c.enhanced = c.pipelining = c.eightbit = c.dsn = c.smtputf8 = 1;
	if (!ehlo) {
		smtpd_sink_caps(e, &c);
		snprintf(tmp, sizeof(tmp), "250 %s", e->host);
		smtpd_sink_reply(e, tmp);
		return;
	}
	buf_init(&b);
	buf_printf(&b, "250-%s Hello %s [%s]\r\n", e->host, e->helo,
	    addr_fmt_ip((struct sockaddr *)&e->conn.client, tmp, sizeof(tmp)));
	buf_printf(&b, "250-PIPELINING\r\n");
	buf_printf(&b, "250-SIZE %llu\r\n",
	    (unsigned long long)e->pol->limits.size);
	buf_printf(&b, "250-8BITMIME\r\n");
	buf_printf(&b, "250-ENHANCEDSTATUSCODES\r\n");
	buf_printf(&b, "250-DSN\r\n");
	buf_printf(&b, "250-SMTPUTF8\r\n");
	smtpd_sink_ehlo(e, &c, &b);
	buf_free(&b);
}

static void
qsink_helo(struct sink *q, int ehlo, const struct smtp_line *l)
{
	struct sink_env *e = q->env;
	char v[64], *c;

	if (q->milters == NULL) {
		helo_reply(q, ehlo);
		return;
	}
	/* "TLSv1.3/TLS_AES_256_GCM_SHA384" */
	snprintf(v, sizeof(v), "%s", e->tls ? tls_conn_info(e->tls) : "");
	if ((c = strchr(v, '/')) != NULL)
		*c++ = '\0';
	q->mehlo = ehlo;
	milter_step(q, MS_HELO);
	milter_helo(q->milters, e->helo, e->tls ? v : NULL, e->tls ? c :
	    NULL);
}

static void
qsink_mail(struct sink *q, const struct smtp_line *l)
{
	struct sink_env *e = q->env;
	char *from, size[32], *ret = NULL, *envid = NULL;
	const char *argv[8];
	int argc = 0;

	if (mta_can_accept() == -1) {
		smtpd_sink_reply(e, "452 4.3.1 Insufficient system storage");
		return;
	}
	if (q->milters == NULL) {
		smtpd_sink_reply(e, "250 2.1.0 Ok");
		return;
	}
	from = xmalloc(strlen(e->mail.from) + 3);
	sprintf(from, "<%s>", e->mail.from);
	argv[argc++] = from;
	if (e->mail.size > 0) {
		snprintf(size, sizeof(size), "SIZE=%llu",
		    (unsigned long long)e->mail.size);
		argv[argc++] = size;
	}
	if (e->mail.body8)
		argv[argc++] = "BODY=8BITMIME";
	if (e->mail.smtputf8)
		argv[argc++] = "SMTPUTF8";
	if (e->mail.ret != MTA_RET_UNSET)
		argv[argc++] = ret = xstrdup(e->mail.ret == MTA_RET_FULL ?
		    "RET=FULL" : "RET=HDRS");
	if (e->mail.envid != NULL) {
		envid = xmalloc(strlen(e->mail.envid) + 7);
		sprintf(envid, "ENVID=%s", e->mail.envid);
		argv[argc++] = envid;
	}
	milter_step(q, MS_MAIL);
	milter_mail(q->milters, argv, argc, NULL);
	free(from);
	free(ret);
	free(envid);
}

/* qsink_rcpt - policy's decision on one recipient */
static void
qsink_rcpt(struct sink *q, const struct smtp_path *path,
    const struct smtp_line *l)
{
	struct sink_env *e = q->env;
	const char *msg = NULL;
	enum policy_verdict v;
	struct rcpt r;

	v = policy_check_rcpt(e->pol, (struct sockaddr *)&e->conn.client,
	    e->conn.dir, e->mail.from, path->addr, e->authed, &msg);
	if (v != POLICY_RELAY) {
		if (v == POLICY_DISCARD)
			q->ndiscard++;
		smtpd_sink_rule_reply(e, v, msg);
		return;
	}
	memset(&r, 0, sizeof(r));
	rcpt_make(q, path, &r);
	if (q->milters != NULL) {
		char *to = xmalloc(strlen(path->addr) + 3);
		const char *argv[1] = { to };

		sprintf(to, "<%s>", path->addr);
		q->mrcpt = r;
		milter_step(q, MS_RCPT);
		milter_rcpt(q->milters, argv, 1);
		free(to);
		return;
	}
	rcpt_go(q, &r);
}

/* rcpt_go - a recipient policy and the milters let through: verified
 * with its server if policy says so, else taken */
static void
rcpt_go(struct sink *q, struct rcpt *r)
{
	struct sink_env *e = q->env;
	const struct policy_domain *d;

	if ((d = policy_verify_rcpt(e->pol, e->conn.dir, r->addr)) != NULL) {
		verify_rcpt(q, d, r);
		return;
	}
	rcpt_take(q, r);
	smtpd_sink_reply(e, "250 2.1.5 Ok");
}

static void
qsink_data(struct sink *q)
{
	struct sink_env *e = q->env;

	buf_reset(&q->body);
	if (e->mail.from == NULL) {
		smtpd_sink_reply(e, "503 5.5.1 Error: need MAIL command");
		return;
	}
	if (q->nok == 0 && q->ndiscard == 0) {
		smtpd_sink_reply(e, "554 5.5.1 Error: no valid recipients");
		return;
	}
	/* only discards: nothing to queue, the text is dropped */
	if (q->nok > 0) {
		if (msg_open(q) == -1) {
			smtpd_sink_reply(e, "451 4.3.0 Error: cannot queue "
			    "the message");
			return;
		}
		enter_state(q, Q_MSG);
	}
	if (q->milters != NULL) {
		milter_step(q, MS_DATA);
		milter_data(q->milters, q->msg ? mta_msg_id(q->msg) : NULL);
		return;
	}
	smtpd_sink_reply(e, "354 End data with <CR><LF>.<CR><LF>");
}

/* qsink_flush - the batched content to the message */
static const char *
qsink_flush(struct sink *q, const char **why)
{
	if (buf_avail(&q->body) == 0)
		return NULL;
	if (q->msg != NULL && mta_msg_write(q->msg, buf_head(&q->body),
	    buf_avail(&q->body)) == -1) {
		buf_reset(&q->body);
		*why = "spool-write";
		return "451 4.3.0 Error: queue file write error";
	}
	buf_reset(&q->body);
	return NULL;
}

static const char *
qsink_content(struct sink *q, const char *p, size_t n, const char **why)
{
	if (q->milters != NULL)
		milter_content(q->milters, p, n);
	buf_append(&q->body, p, n);
	if (buf_avail(&q->body) >= QSINK_BODY_CHUNK)
		return qsink_flush(q, why);
	return NULL;
}

/* qsink_busy - 1 while the message's spill file lags behind the client */
static int
qsink_busy(struct sink *q)
{
	return (q->msg != NULL && mta_msg_busy(q->msg)) ||
	    (q->milters != NULL && milter_busy(q->milters));
}

/* qsink_end - the dot: submit through the worker's door */
static void
qsink_end(struct sink *q)
{
	struct sink_env *e = q->env;
	const char *line, *why = NULL;

	if ((line = qsink_flush(q, &why)) != NULL) {
		enter_state(q, Q_IDLE);
		smtpd_sink_reason(e, why);
		smtpd_sink_reply(e, line);
		return;
	}
	if (q->milters != NULL) {
		milter_step(q, MS_EOM);
		milter_eom(q->milters);
		return;
	}
	submit(q);
}

/* submit - the message to the MTA, through the worker's door */
static void
submit(struct sink *q)
{
	struct sink_env *e = q->env;
	struct mta_msg *msg;

	if (q->msg == NULL) {
		/* every recipient went to a discard rule */
		smtpd_sink_reply(e, "250 2.0.0 Ok: discarded");
		return;
	}
	msg = q->msg;
	q->msg = NULL;		/* the MTA owns it now */
	enter_state(q, Q_COMMIT);
	smtpd_sink_await(e, 1);
	mta_msg_submit(msg, proxy_worker_door(e->conn.worker), e->conn.id);
}

/* qsink_abort - a refused message: nothing of it reaches the MTA */
static int
qsink_abort(struct sink *q)
{
	milter_abort(q->milters);
	q->mstep = MS_NONE;
	buf_reset(&q->body);
	enter_state(q, Q_IDLE);
	return 1;
}

static void
qsink_reset(struct sink *q)
{
	unsigned i;

	if (q->state == Q_MSG || q->state == Q_VERIFY)
		enter_state(q, Q_IDLE);
	if (q->milters != NULL && q->state != Q_COMMIT) {
		milter_abort(q->milters);
		if (q->mstep == MS_RCPT)
			rcpt_drop(&q->mrcpt);
		q->mstep = MS_NONE;
	}
	for (i = 0; i < q->nok; i++) {
		free(q->rcpts[i].addr);
		free(q->rcpts[i].orcpt);
	}
	free(q->rcpts);
	q->rcpts = NULL;
	q->nok = 0;
	q->ndiscard = 0;
	q->mdiscard = 0;
}

/* qsink_answer - the MTA's answer for this session's message */
static void
qsink_answer(struct sink *q, int status, const char *id_or_reason)
{
	char line[512];

	enter_state(q, Q_IDLE);
	smtpd_sink_await(q->env, 0);
	if (status == 0)
		snprintf(line, sizeof(line), "250 2.0.0 Ok: queued as %s",
		    id_or_reason);
	else {
		snprintf(line, sizeof(line), "451 4.3.0 Error: queue file "
		    "write error");
		smtpd_sink_reason(q->env, id_or_reason);
	}
	smtpd_sink_reply(q->env, line);
}

static void
qsink_close(struct sink *q)
{
	qsink_reset(q);
	milter_chain_free(q->milters);
	q->milters = NULL;
	enter_state(q, Q_CLOSED);
	buf_free(&q->body);
	free(q);
}

const struct sink_ops sink_queue_ops = {
	.name = "mta",
	.accepted = "queued",
	.flags = SINK_F_HOP,
	.open = qsink_open,
	.greet = qsink_greet,
	.helo = qsink_helo,
	.ehlo = NULL,
	.mail = qsink_mail,
	.rcpt = qsink_rcpt,
	.data = qsink_data,
	.content = qsink_content,
	.flush = qsink_flush,
	.end = qsink_end,
	.abort = qsink_abort,
	.reset = qsink_reset,
	.verb = NULL,
	.auth = NULL,
	.auth_tls = NULL,
	.lost = NULL,
	.busy = qsink_busy,
	.answer = qsink_answer,
	.quit = NULL,
	.close = qsink_close,
};
