/*
 * deliver.c - the MTA's delivery connections.  It owns, per connection,
 * the next hops (the original destination and its fallback, the relay
 * host, or the MX hosts) and the transactions with PIPELINING, SIZE,
 * 8BITMIME, SMTPUTF8 and DSN parameters.  The connection itself -- the
 * marked socket, the greeting, EHLO, STARTTLS (opportunistic with the
 * plain-text fallback, required, or smtps) and AUTH PLAIN/LOGIN to the
 * relay host (only inside TLS unless the config allows plain text, and
 * with a verified certificate when it asks for one) -- is the daemon's
 * one SMTP client, common/smtpc.c, as for the live relay and the
 * callout; this file words its failures as delivery status codes.
 * "tls-policy ... dane|dane-only" (RFC 7672): a hop whose name and
 * address DNSSEC vouched for gets its TLSA records looked up first
 * (CS_TLSA, dns.c), and TLS that must match one of them.
 * A connection takes jobs from its destination until none is left,
 * then waits a little for more (a burst reuses one session instead of
 * paying a new connection and EHLO per message), then says QUIT.  With PIPELINING the next job's MAIL, RCPT
 * and DATA go out with the previous body's dot.  The first delivery of
 * a message sends the body from memory; later ones read the spool file.
 * Results go back per recipient through mta_queue_job_done().
 */
#include <sys/socket.h>
#include <netinet/in.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../common/addr.h"
#include "../common/log.h"
#include "../common/smtp.h"
#include "../common/smtpc.h"
#include "../common/tls.h"
#include "../common/xmalloc.h"
#include "mta_local.h"

#define CONN_CHUNK	(64 * 1024)	/* body bytes read at a time */
#define CONN_MAXLINE	2048		/* reply line limit: lenient, as
					   servers exceed RFC 5321's 512 */
#define CONN_T_IDLE	2		/* seconds kept open without a job */
#define CONN_T_QUIT	5		/* seconds to wait for QUIT's reply */

enum conn_state {
	CS_INIT = 0,
	CS_RESOLVE,	/* waiting for DNS */
	CS_TLSA,	/* waiting for the hop's TLSA records (DANE) */
	CS_SETUP,	/* smtpc: connect, greeting, EHLO, TLS, AUTH */
	CS_MAIL,	/* waiting for MAIL's reply */
	CS_RCPT,	/* waiting for RCPT replies */
	CS_DATA,	/* waiting for DATA's 354 */
	CS_BODY,	/* sending the body */
	CS_DOT,		/* waiting for the final reply */
	CS_RSET,
	CS_IDLE,	/* no job: kept open for the next one */
	CS_QUIT,
	CS_CLOSING
};

static const char *const conn_state_names[] = {
	"init", "resolve", "tlsa", "setup", "mail", "rcpt", "data", "body",
	"dot", "rset", "idle", "quit", "closing"
};


/* one delivery connection to one destination */
struct conn {
	uint64_t	 id;
	enum conn_state	 state;
	uv_loop_t	*loop;
	struct mta_dest	*dest;
	struct policy	*pol;		/* the snapshot it was opened under (a
					   reference): its hops, TLS and AUTH
					   came from it, so it takes another
					   job only while it is current */
	struct mta_job	*job;		/* the transaction in progress */
	struct mta_job	*next;		/* pipelined behind job's dot */
	LIST_ENTRY(conn) entry;
	LIST_ENTRY(conn) idle_entry;	/* in CS_IDLE only */
	unsigned	 refs;		/* handles and requests outstanding */

	uv_timer_t	 timer;		/* init, resolve, idle, body */
	struct smtpc	*sc;		/* the connection, or NULL */

	struct mta_hop	 hop[MTA_MAXADDR];
	int		 nhop;
	int		 hopi;
	char		 remote[320];	/* "name[addr]" of the hop */
	enum policy_uptls tlsmode;	/* the route's own setting */
	char		 tlsdomain[256]; /* the destination's domain, for
					   "tls-policy domain", or "" */
	int		 relayhost;	/* AUTH with the relay host's secrets */
	int		 verify;	/* the relay's certificate must verify */
	SSL_CTX		*vctx;		/* a verifying context (a reference) */
	enum policy_tlslevel level;	/* asked of this hop */
	int		 tls_bounce;	/* a TLS failure bounces */
	const char	*tlsres;	/* what the session got: "dane",
					   "verified", "anonymous", "none" */
	struct mta_tlsa	*tlsa;		/* DANE: the last TLSA answer (its
					   name says whose), or NULL */
	char		 danewhy[400];	/* DANE not applied: why */
	int		 trust_ad;	/* the resolver's AD was believed */

	struct smtp_ehlo caps;	/* the server's EHLO; zero: HELO */
	char		 lasterr[MTA_DIAGLEN];
	char		 laststatus[16];
	int		 lastcode;	/* class of lasterr: 4 or 5 */

	/* the transaction */
	int		*accepted;	/* per job recipient: RCPT got 2xx */
	size_t		 nsent;		/* RCPTs sent */
	size_t		 nreplied;	/* RCPT replies read */
	size_t		 nok;
	int		 mail_failed;
	int		 data_void;	/* DATA took, nobody to send to */
	unsigned	 msgs;		/* transactions done on this connection */
	unsigned	 replies;	/* replies to the current job */

	/* the body */
	int		 fd;
	uv_fs_t		 fsreq;
	char		*chunk;
	uint64_t	 off;
	int		 reading;	/* a read is in flight */
	struct buf	 carry;		/* a partial line between chunks */
	struct buf	 out;
};

LIST_HEAD(connlist, conn);
static struct connlist	 conns = LIST_HEAD_INITIALIZER(conns);
static struct connlist	 idle = LIST_HEAD_INITIALIZER(idle);
static unsigned		 nconns;
static unsigned		 nidle;
static uint64_t		 conn_ids;
static int		 draining;
static struct tls_corks	*corks;		/* of the MTA's loop */
static uv_loop_t	*corks_loop;

static void	conn_close(struct conn *);
static void	conn_connect(struct conn *);
static void	conn_hop_failed(struct conn *, int, const char *,
		    const char *, ...) __attribute__((format(printf, 4, 5)));
static void	txn_start(struct conn *);
static void	body_read(struct conn *);
static void	body_mem(struct conn *);
static void	requeue_next(struct conn *);
static void	conn_quit(struct conn *);
static int	body_write(struct conn *, const char *, size_t);

/* mta_deliver_count - connections at work (idle ones are not) */
unsigned
mta_deliver_count(void)
{
	return nconns - nidle;
}

/* mta_deliver_idle - connections kept open, waiting for a job */
unsigned
mta_deliver_idle(void)
{
	return nidle;
}

/*
 * enter_state - the one place a connection changes state, and so the
 * one place that keeps the idle list and the destination's count of it
 */
static void
enter_state(struct conn *c, enum conn_state st)
{
	if (c->state == st)
		return;
	log_debug("mta: conn=%llu dest=%s %s -> %s",
	    (unsigned long long)c->id, log_word(c->dest->key),
	    conn_state_names[c->state], conn_state_names[st]);
	/* the timer is a state's own: each one that needs it starts it */
	if (c->state != CS_CLOSING)
		uv_timer_stop(&c->timer);
	if (c->state == CS_IDLE) {
		LIST_REMOVE(c, idle_entry);
		nidle--;
		c->dest->nidle--;
	} else if (st == CS_IDLE) {
		LIST_INSERT_HEAD(&idle, c, idle_entry);
		nidle++;
		c->dest->nidle++;
	}
	c->state = st;
}

static void
conn_unref(struct conn *c)
{
	if (--c->refs > 0)
		return;
	LIST_REMOVE(c, entry);
	nconns--;
	mta_queue_conn_done(c->dest);
	policy_unref(c->pol);
	SSL_CTX_free(c->vctx);
	free(c->tlsa);
	buf_free(&c->carry);
	buf_free(&c->out);
	free(c->accepted);
	free(c->chunk);
	free(c);
}

static void
timer_close_cb(uv_handle_t *h)
{
	conn_unref(h->data);
}

static void
on_timeout(uv_timer_t *t)
{
	struct conn *c = t->data;

	if (c->state == CS_INIT) {	/* the deferred start */
		conn_connect(c);
		return;
	}
	if (c->state == CS_IDLE) {	/* no job came */
		conn_quit(c);
		return;
	}
	if (c->state == CS_QUIT) {	/* no 221: gone anyway */
		conn_close(c);
		return;
	}
	if (c->state == CS_TLSA) {	/* the hop is not usable: the next */
		conn_hop_failed(c, 4, "4.4.3", "TLSA lookup for %s took "
		    "longer than %u s", c->remote,
		    policy_current()->queue.resolve_timeout);
		return;
	}
	if (c->state == CS_RESOLVE) {	/* waited for a thread, or slow */
		snprintf(c->remote, sizeof(c->remote), "%s", "dns");
		conn_hop_failed(c, 4, "4.4.3", "DNS resolution of %s took "
		    "longer than %u s", c->dest->key,
		    policy_current()->queue.resolve_timeout);
		return;
	}
	/* the body: the next hop stopped taking it */
	conn_hop_failed(c, 4, "4.4.2", "timeout in state %s with %s",
	    conn_state_names[c->state], c->remote);
}

static void
timeout(struct conn *c, unsigned secs)
{
	uv_timer_start(&c->timer, on_timeout, (uint64_t)secs * 1000, 0);
}

/*
 * Results
 */

/* reply_status - the enhanced code of a reply, or one made from its class */
static void
reply_status(const struct smtp_reply *rep, char *out, size_t len)
{
	const char *t;
	size_t n;
	int a, b, c, k = 0;

	t = smtp_reply_line(rep, 0, &n);
	if (sscanf(t, "%1d.%3d.%3d%n", &a, &b, &c, &k) == 3 && k > 0 &&
	    (t[k] == ' ' || t[k] == '\r') && a == rep->code / 100) {
		snprintf(out, len, "%d.%d.%d", a, b, c);
		return;
	}
	snprintf(out, len, "%d.0.0", rep->code / 100);
}

/* reply_diag - the reply as one line, for logs and DSNs */
static void
reply_diag(const struct smtp_reply *rep, char *out, size_t len)
{
	size_t i, o = 0;
	const char *s = rep->text.data;

	for (i = 0; i < rep->text.len && o + 1 < len; i++) {
		if (s[i] == '\r')
			continue;
		if (s[i] == '\n') {
			if (i + 1 < rep->text.len)
				out[o++] = ' ';
			continue;
		}
		out[o++] = isprint((unsigned char)s[i]) ? s[i] : '?';
	}
	out[o] = '\0';
}

/* set_result - recipient i of the job gets this reply */
static void
set_result(struct conn *c, size_t i, const struct smtp_reply *rep)
{
	char status[16], diag[MTA_DIAGLEN];

	reply_status(rep, status, sizeof(status));
	reply_diag(rep, diag, sizeof(diag));
	mta_result_set(&c->job->res[i], rep->code / 100, status, c->remote,
	    diag);
	c->job->res[i].relayed = rep->code / 100 == 2 && c->caps.dsn;
	c->job->res[i].tls = c->tlsres;
}

/* fail_open - every recipient without a result gets this one */
static void
fail_open(struct conn *c, int code, const char *status, const char *diag)
{
	size_t i;

	for (i = 0; c->job != NULL && i < c->job->n; i++)
		if (c->job->res[i].code == 0)
			mta_result_set(&c->job->res[i], code, status,
			    c->nhop ? c->remote : NULL, diag);
}

/* job_detach - take the job off the connection, dropping its per-job state */
static struct mta_job *
job_detach(struct conn *c)
{
	struct mta_job *job = c->job;

	c->job = NULL;
	free(c->accepted);
	c->accepted = NULL;
	if (c->fd != -1) {
		close(c->fd);
		c->fd = -1;
	}
	return job;
}

/* job_finish - hand the job back to the scheduler */
static void
job_finish(struct conn *c)
{
	if (c->job != NULL)
		mta_queue_job_done(job_detach(c));
}

/* requeue - give the job back untouched, for another connection */
static void
requeue(struct conn *c)
{
	mta_queue_job_retry(job_detach(c));
}

/*
 * Connection-level failures
 */

/*
 * conn_hop_failed - this hop failed (code 4 or 5).  Before the first
 * transaction the next address is tried; after the last one, the job
 * and every job waiting for the destination fail with the reason.
 */
static void
conn_hop_failed(struct conn *c, int code, const char *status,
    const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(c->lasterr, sizeof(c->lasterr), fmt, ap);
	va_end(ap);
	snprintf(c->laststatus, sizeof(c->laststatus), "%s", status);
	c->lastcode = code;
	requeue_next(c);
	if (c->state == CS_IDLE) {
		log_debug("mta: conn=%llu relay=%s idle connection gone "
		    "error=\"%s\"", (unsigned long long)c->id,
		    log_word(c->remote), log_vis(c->lasterr));
		conn_close(c);
		return;
	}
	if (c->msgs > 0 && c->job != NULL && c->replies == 0) {
		/* the next hop closed a session that had worked: retry */
		log_debug("mta: conn=%llu relay=%s kept connection lost, job "
		    "requeued error=\"%s\"", (unsigned long long)c->id,
		    log_word(c->remote), log_vis(c->lasterr));
		requeue(c);
		conn_close(c);
		return;
	}
	if (c->state >= CS_MAIL || c->msgs > 0) {
		log_info("mta: conn=%llu relay=%s lost error=\"%s\"",
		    (unsigned long long)c->id, log_word(c->remote),
		    log_vis(c->lasterr));
		fail_open(c, 4, status, c->lasterr);
		job_finish(c);
		conn_close(c);
		return;
	}
	/* the reason holds the server's text: quoted and escaped */
	log_info("mta: conn=%llu dest=%s relay=%s failed error=\"%s\"",
	    (unsigned long long)c->id, log_word(c->dest->key),
	    log_word(c->remote), log_vis(c->lasterr));
	if (c->hopi + 1 < c->nhop && c->job != NULL && !draining) {
		c->hopi++;
		smtpc_close(c->sc);
		c->sc = NULL;
		conn_connect(c);
		return;
	}
	fail_open(c, code, status, c->lasterr);
	job_finish(c);
	mta_queue_dest_fail(c->dest, code, status, c->remote, c->lasterr);
	conn_close(c);
}

/* conn_close - close the connection, give back what it holds, then free */
static void
conn_close(struct conn *c)
{
	if (c->state == CS_CLOSING)
		return;
	if (c->state == CS_IDLE)
		enter_state(c, CS_QUIT);	/* no job for it any more */
	smtpc_close(c->sc);	/* QUIT first when nothing is awaited */
	c->sc = NULL;
	requeue_next(c);
	fail_open(c, 4, "4.4.2", c->lasterr[0] ? c->lasterr :
	    "connection closed");
	job_finish(c);
	enter_state(c, CS_CLOSING);
	if (!uv_is_closing((uv_handle_t *)&c->timer))
		uv_close((uv_handle_t *)&c->timer, timer_close_cb);
}

/*
 * Output
 */

/* alive - the connection can still be written to */
static int
alive(struct conn *c)
{
	return c->sc != NULL;
}

/* send_cmd - one command, corked with the others of this loop turn */
static int __attribute__((format(printf, 2, 3)))
send_cmd(struct conn *c, const char *fmt, ...)
{
	char line[CONN_MAXLINE];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(line) || !alive(c))
		return -1;
	return smtpc_send(c->sc, line, (size_t)n, SMTPC_CMD);
}

/*
 * verify_ctx - a verifying context for the CAs of ca_file (NULL: the
 * system's), one reference for the caller; NULL after logging why.
 * The contexts are common/tls.c's, shared with the live relay's verify.
 */
static SSL_CTX *
verify_ctx(const char *ca_file)
{
	SSL_CTX *ctx;
	char err[256];

	if ((ctx = tls_ctx_client_verify(ca_file, err, sizeof(err))) == NULL)
		log_warnx("mta: verifying TLS context: ca_file=%s %s",
		    ca_file != NULL ? ca_file : "system", err);
	return ctx;
}

/*
 * The connection's callbacks (common/smtpc.c)
 */

/* on_sc_ready - greeted, TLS and AUTH done: the first transaction */
static void
on_sc_ready(void *arg, const struct smtp_ehlo *caps)
{
	struct conn *c = arg;
	const char *info = smtpc_tls_info(c->sc);
	char dane[64], why[440];
	int isdane;

	c->caps = *caps;
	isdane = info != NULL && smtpc_tls_dane(c->sc, dane, sizeof(dane))
	    == 0;
	c->tlsres = info == NULL ? "none" : isdane ? "dane" :
	    smtpc_tls_verified(c->sc) ? "verified" : "anonymous";
	why[0] = '\0';
	if (c->danewhy[0] != '\0')
		snprintf(why, sizeof(why), " dane=\"%s\"",
		    log_vis(c->danewhy));
	/* as Postfix's "Verified TLS connection established to ..." */
	log_info("mta: conn=%llu relay=%s tls=%s level=%s%s%s%s%s%s",
	    (unsigned long long)c->id, log_word(c->remote), c->tlsres,
	    policy_name(policy_tlslevel_names, (int)c->level),
	    isdane ? " tlsa=" : "", isdane ? dane : "",
	    info != NULL ? " protocol=" : "", info != NULL ? info : "", why);
	txn_start(c);
}

/* on_sc_fail - the connection failed: a delivery status and a reason */
static void
on_sc_fail(void *arg, const struct smtpc_error *e)
{
	struct conn *c = arg;
	char diag[MTA_DIAGLEN], status[16];

	if (c->state == CS_QUIT) {	/* closed after our QUIT: done */
		conn_close(c);
		return;
	}
	diag[0] = '\0';
	if (e->rep != NULL) {
		reply_diag(e->rep, diag, sizeof(diag));
		reply_status(e->rep, status, sizeof(status));
	}
	switch (e->err) {
	case SMTPC_E_CONNECT:
		conn_hop_failed(c, 4, "4.4.1", "connect to %s: %s", c->remote,
		    e->uverr != 0 ? uv_strerror(e->uverr) : e->why);
		break;
	case SMTPC_E_REFUSED:
		/* a 421 says why in its own status (4.3.2 shutting down) */
		conn_hop_failed(c, 4, e->rep != NULL && e->rep->code == 421 ?
		    status : "4.4.2", "%s %s: %s", c->remote,
		    strcmp(e->why, "HELO refused") == 0 ? "refused HELO" :
		    "refused to talk to me", diag);
		break;
	case SMTPC_E_TLS:
		/* "tls-policy ... on-failure bounce": permanent */
		/* with DANE's own note: records left unused, say */
		conn_hop_failed(c, c->tls_bounce ? 5 : 4, c->tls_bounce ?
		    "5.7.5" : "4.7.5", "TLS with %s (%s): %s%s%s%s%s",
		    c->remote, policy_name(policy_tlslevel_names,
		    (int)c->level), e->why, diag[0] != '\0' ? ": " : "", diag,
		    c->danewhy[0] != '\0' ? "; DANE: " : "", c->danewhy);
		break;
	case SMTPC_E_AUTH:
		if (e->rep != NULL)
			conn_hop_failed(c, 4, "4.7.0", "authentication at %s "
			    "failed: %s", c->remote, diag);
		else
			conn_hop_failed(c, 4, "4.7.0", "%s %s%s", c->remote,
			    e->why, strncmp(e->why, "offers AUTH", 11) == 0 ?
			    " (relay-host auth-plaintext yes allows it)" : "");
		break;
	case SMTPC_E_LOST:
		if (e->rep != NULL && e->rep->code == 421)
			conn_hop_failed(c, 4, status, "%s", diag);
		else
			conn_hop_failed(c, 4, "4.4.2", "lost connection with "
			    "%s in state %s: %s", c->remote,
			    conn_state_names[c->state], e->why);
		break;
	case SMTPC_E_PROTO:
	default:
		conn_hop_failed(c, 4, "4.5.0", "bad reply from %s: %s",
		    c->remote, e->why);
		break;
	}
}

static void	on_reply(void *, const struct smtp_reply *);
static void	on_sc_drained(void *);

static const struct smtpc_cb deliver_smtpc_cb = {
	.ready = on_sc_ready,
	.reply = on_reply,
	.fail = on_sc_fail,
	.drained = on_sc_drained
};

/*
 * Transactions
 */

static int
is_ascii(const char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s >= 0x80)
			return 0;
	return 1;
}

/* txn_cannot - why the next hop cannot take job (5.x.x), or NULL */
static const char *
txn_cannot(const struct conn *c, const struct mta_job *job)
{
	const struct mta_env *env = job->env;
	uint64_t size = env->bodylen + (env->received ? strlen(env->received) :
	    0);
	size_t i;
	int ascii = is_ascii(env->sender);

	if (c->caps.maxsize > 0 && size > c->caps.maxsize)
		return "5.3.4 message too big for the next hop";
	for (i = 0; i < job->n; i++)
		ascii &= is_ascii(env->rcpt[job->idx[i]].addr);
	if (env->smtputf8 && !ascii && !c->caps.smtputf8)
		return "5.6.7 the next hop does not support SMTPUTF8";
	return NULL;
}

/* txn_check - what the next hop cannot take: a permanent failure */
static int
txn_check(struct conn *c)
{
	char status[8];
	const char *why;

	if ((why = txn_cannot(c, c->job)) == NULL)
		return 0;
	snprintf(status, sizeof(status), "%.5s", why);
	fail_open(c, 5, status, why + 6);
	return -1;
}

static int
send_mail(struct conn *c, struct mta_job *job)
{
	const struct mta_env *env = job->env;
	struct buf b;
	int rc;

	job->sent = uv_now(c->loop);	/* the "d" of delays= starts */
	buf_init(&b);
	buf_printf(&b, "MAIL FROM:<%s>", env->sender);
	if (c->caps.size)
		buf_printf(&b, " SIZE=%llu", (unsigned long long)(env->bodylen +
		    (env->received ? strlen(env->received) : 0)));
	if (env->body8 && c->caps.eightbit)
		buf_puts(&b, " BODY=8BITMIME");
	if (env->smtputf8 && c->caps.smtputf8)
		buf_puts(&b, " SMTPUTF8");
	if (c->caps.dsn && mta_ret_param(env->ret) != NULL)
		buf_printf(&b, " RET=%s", mta_ret_param(env->ret));
	if (c->caps.dsn && env->envid != NULL)
		buf_printf(&b, " ENVID=%s", env->envid);
	rc = send_cmd(c, "%s", b.data);
	buf_free(&b);
	return rc;
}

static int
send_rcpt(struct conn *c, const struct mta_job *job, size_t i)
{
	const struct mta_rcpt *r = &job->env->rcpt[job->idx[i]];
	struct buf b;
	int rc;

	buf_init(&b);
	buf_printf(&b, "RCPT TO:<%s>", r->addr);
	if (c->caps.dsn && r->notify != 0) {
		if (r->notify & MTA_NOTIFY_NEVER)
			buf_puts(&b, " NOTIFY=NEVER");
		else
			buf_printf(&b, " NOTIFY=%s%s%s%s%s",
			    r->notify & MTA_NOTIFY_SUCCESS ? "SUCCESS" : "",
			    (r->notify & MTA_NOTIFY_SUCCESS) &&
			    (r->notify & (MTA_NOTIFY_FAILURE |
			    MTA_NOTIFY_DELAY)) ? "," : "",
			    r->notify & MTA_NOTIFY_FAILURE ? "FAILURE" : "",
			    (r->notify & MTA_NOTIFY_FAILURE) &&
			    (r->notify & MTA_NOTIFY_DELAY) ? "," : "",
			    r->notify & MTA_NOTIFY_DELAY ? "DELAY" : "");
	}
	if (c->caps.dsn && r->orcpt != NULL)
		buf_printf(&b, " ORCPT=%s", r->orcpt);
	c->nsent++;
	rc = send_cmd(c, "%s", b.data);
	buf_free(&b);
	return rc;
}

/*
 * conn_quit - QUIT, and close at its reply (or CONN_T_QUIT later): the
 * connection counts against the destination's concurrency until the
 * next hop said goodbye, so that a new one never overlaps it there
 */
static void
conn_quit(struct conn *c)
{
	enter_state(c, CS_QUIT);
	if (!alive(c) || send_cmd(c, "QUIT") == -1) {
		conn_close(c);
		return;
	}
	timeout(c, CONN_T_QUIT);
}

/* conn_idle - no job now: keep the session for CONN_T_IDLE seconds */
static void
conn_idle(struct conn *c)
{
	if (draining) {
		conn_quit(c);
		return;
	}
	enter_state(c, CS_IDLE);
	timeout(c, CONN_T_IDLE);
}

/* send_envelope - MAIL, every RCPT and DATA of job, in one group */
static void
send_envelope(struct conn *c, struct mta_job *job)
{
	size_t i;

	send_mail(c, job);
	for (i = 0; i < job->n; i++)
		send_rcpt(c, job, i);
	send_cmd(c, "DATA");
}

/* txn_begin - c->job's transaction starts: its commands are out */
static void
txn_begin(struct conn *c)
{
	free(c->accepted);
	c->accepted = xcalloc(c->job->n, sizeof(*c->accepted));
	c->replies = 0;
	c->nsent = c->nreplied = c->nok = 0;
	c->mail_failed = c->data_void = 0;
	enter_state(c, CS_MAIL);
}

/* conn_used_up - c made its "messages-per-connection": a new one takes
 * over (the destination opens it when this one is gone) */
static int
conn_used_up(const struct conn *c, unsigned more)
{
	struct policy_shape lim;

	mta_queue_dest_limits(c->dest, &lim);
	return c->msgs + more > lim.msgs_per_conn;
}

/*
 * conn_stale - a reload came after the connection was opened: the hop,
 * its TLS level and AUTH may be other now (tls-policy, trust-ad, relay
 * host), so it takes no further job and a new connection decides again
 */
static int
conn_stale(const struct conn *c)
{
	return c->pol != policy_current();
}

/* txn_start - the next job's MAIL, RCPTs and DATA (pipelined if we may) */
static void
txn_start(struct conn *c)
{
	if (c->job == NULL && (conn_used_up(c, 1) || conn_stale(c))) {
		conn_quit(c);
		return;
	}
	for (;;) {
		if (c->job == NULL && (draining ||
		    (c->job = mta_queue_next_job(c->dest)) == NULL)) {
			conn_idle(c);
			return;
		}
		if (txn_check(c) == 0)
			break;
		job_finish(c);
	}
	txn_begin(c);
	/* with PIPELINING the group leaves in one write: smtpc corks
	 * commands until the loop turns */
	if (!c->caps.pipelining)
		send_mail(c, c->job);
	else
		send_envelope(c, c->job);
}

/*
 * pipeline_next - with the dot (corked), the next waiting job's envelope
 * (RFC 2920: the message content starts a group, DATA ends it), so the
 * next transaction costs no extra round trip.  A job the hop cannot take
 * stays in the queue for txn_start() to fail.
 */
static void
pipeline_next(struct conn *c)
{
	struct mta_job *job;

	if (!c->caps.pipelining || draining || c->next != NULL ||
	    conn_stale(c) || (job = TAILQ_FIRST(&c->dest->jobs)) == NULL ||
	    txn_cannot(c, job) != NULL || conn_used_up(c, 2))
		return;
	/* NULL: the destination's rate holds it back */
	if ((c->next = mta_queue_next_job(c->dest)) == NULL)
		return;
	send_envelope(c, c->next);
}

/* requeue_next - the pipelined job never got a reply: back it goes */
static void
requeue_next(struct conn *c)
{
	struct mta_job *job = c->next;

	if (job == NULL)
		return;
	c->next = NULL;
	mta_queue_job_retry(job);
}

/* txn_reset - RSET after a transaction that went nowhere */
static void
txn_reset(struct conn *c)
{
	fail_open(c, 4, "4.0.0", "transaction aborted");
	job_finish(c);
	enter_state(c, CS_RSET);
	send_cmd(c, "RSET");
}

static void
on_mail(struct conn *c, const struct smtp_reply *rep)
{
	size_t i;

	if (rep->code / 100 != 2) {
		c->mail_failed = 1;
		for (i = 0; i < c->job->n; i++)
			set_result(c, i, rep);
		if (!c->caps.pipelining) {
			txn_reset(c);
			return;
		}
	}
	enter_state(c, CS_RCPT);
	if (!c->caps.pipelining)
		send_rcpt(c, c->job, 0);
}

static void
on_rcpt(struct conn *c, const struct smtp_reply *rep)
{
	size_t i = c->nreplied++;

	if (!c->mail_failed) {
		if (rep->code / 100 == 2) {
			c->accepted[i] = 1;
			c->nok++;
		} else
			set_result(c, i, rep);
	}
	if (c->nreplied < c->job->n) {
		if (!c->caps.pipelining)
			send_rcpt(c, c->job, c->nreplied);
		return;
	}
	if (!c->caps.pipelining && c->nok == 0) {
		txn_reset(c);
		return;
	}
	enter_state(c, CS_DATA);
	if (!c->caps.pipelining)
		send_cmd(c, "DATA");
}

static void	body_open_cb(uv_fs_t *);

static void
on_data(struct conn *c, const struct smtp_reply *rep)
{
	char path[PATH_MAX];
	size_t i;
	int rc = 0;

	if (rep->code != 354) {
		for (i = 0; i < c->job->n; i++)
			if (c->accepted[i])
				set_result(c, i, rep);
		txn_reset(c);
		return;
	}
	enter_state(c, CS_BODY);
	if (c->nok == 0 || c->mail_failed) {
		c->data_void = 1;	/* nobody accepted: end it at once */
		enter_state(c, CS_DOT);
		smtpc_dot(c->sc, NULL, 0);
		return;
	}
	if (c->job->env->mem.data != NULL) {
		body_mem(c);
		return;
	}
	/* opened on the threadpool, as it is read: nothing waits on the
	 * disk on this loop */
	c->fsreq.data = c;
	if (mta_spool_path(path, sizeof(path), "queue", c->job->env->id) ==
	    -1 || (rc = uv_fs_open(c->loop, &c->fsreq, path,
	    O_RDONLY | O_CLOEXEC, 0, body_open_cb)) != 0) {
		conn_hop_failed(c, 4, "4.3.0", "cannot read the queue file: %s",
		    rc != 0 ? uv_strerror(rc) : "path too long");
		return;
	}
	c->refs++;
}

/* body_open_cb - the queue file is open (or not): send the body */
static void
body_open_cb(uv_fs_t *req)
{
	struct conn *c = req->data;
	ssize_t fd = req->result;

	uv_fs_req_cleanup(req);
	if (c->state != CS_BODY || c->job == NULL || !alive(c)) {
		if (fd >= 0)
			close((int)fd);		/* failed meanwhile */
		conn_unref(c);
		return;
	}
	if (fd < 0) {
		conn_hop_failed(c, 4, "4.3.0", "cannot read the queue file: %s",
		    uv_strerror((int)fd));
		conn_unref(c);
		return;
	}
	c->fd = (int)fd;
	c->off = 0;
	buf_reset(&c->carry);
	if (body_write(c, c->job->env->received, c->job->env->received ?
	    strlen(c->job->env->received) : 0) == 0)
		body_read(c);
	conn_unref(c);
}

static void
on_dot(struct conn *c, const struct smtp_reply *rep)
{
	size_t i;

	if (c->data_void) {
		txn_reset(c);
		return;
	}
	for (i = 0; i < c->job->n; i++)
		if (c->accepted[i])
			set_result(c, i, rep);
	c->msgs++;
	job_finish(c);
	if (c->next == NULL) {
		txn_start(c);
		return;
	}
	c->job = c->next;	/* its replies follow this one */
	c->next = NULL;
	txn_begin(c);
}

/*
 * The body: from memory, or read from the spool, dot-stuffed, with
 * flow control
 */

/* body_write - n body bytes to the next hop, the body timer re-armed */
static int
body_write(struct conn *c, const char *p, size_t n)
{
	uv_buf_t b = uv_buf_init((char *)(uintptr_t)p, (unsigned)n);

	timeout(c, policy_current()->limits.t_data);
	if (n == 0)
		return 0;
	return alive(c) ? smtpc_writev(c->sc, &b, 1) : -1;
}

/* body_dot - the last body bytes with the dot (its reply awaited by
 * smtpc, with the dot's time), then the next job's envelope */
static void
body_dot(struct conn *c, const uv_buf_t *b, unsigned nb)
{
	enter_state(c, CS_DOT);
	if (smtpc_dot(c->sc, b, nb) == -1)
		return;		/* failed: on_sc_fail ran */
	pipeline_next(c);
}

/*
 * body_mem - the whole body from the message's memory copy, with our
 * Received: and the dot, in one write.
 */
static void
body_mem(struct conn *c)
{
	const struct mta_env *env = c->job->env;
	size_t n = env->mem.len;
	uv_buf_t b[2];
	unsigned nb = 0;

	buf_reset(&c->out);
	buf_reserve(&c->out, n + n / 32 + 64);
	if (env->received != NULL)
		b[nb++] = uv_buf_init(env->received,
		    (unsigned)strlen(env->received));
	smtp_dot_stuff_lines(&c->out, env->mem.data, n, 1);
	b[nb++] = uv_buf_init(c->out.data, (unsigned)c->out.len);
	body_dot(c, b, nb);
	if (c->out.cap > CONN_CHUNK)
		buf_free(&c->out);	/* what was not sent was copied */
}

/* stuff - complete lines of carry to out, dot-stuffed */
static void
stuff(struct conn *c, int last)
{
	size_t n = buf_avail(&c->carry);

	buf_consume(&c->carry, n - smtp_dot_stuff_lines(&c->out, buf_head(&c->carry),
	    n, last));
}

/* on_sc_drained - the next hop took the backlog: read on */
static void
on_sc_drained(void *arg)
{
	struct conn *c = arg;

	if (c->state == CS_BODY && c->job != NULL && c->fd != -1 &&
	    !c->reading)
		body_read(c);
}

/* body_end - the rest of the body and the terminating dot */
static void
body_end(struct conn *c)
{
	uv_buf_t b;

	stuff(c, 1);
	b = uv_buf_init(c->out.data, (unsigned)c->out.len);
	if (c->fd != -1)
		close(c->fd);
	c->fd = -1;
	body_dot(c, &b, 1);
}

static void
read_cb(uv_fs_t *req)
{
	struct conn *c = req->data;
	ssize_t n = req->result;

	uv_fs_req_cleanup(req);
	c->reading = 0;
	if (c->state != CS_BODY || c->job == NULL || !alive(c)) {
		conn_unref(c);		/* failed meanwhile */
		return;
	}
	if (n <= 0) {
		conn_hop_failed(c, 4, "4.3.0", "queue file read error");
		conn_unref(c);
		return;
	}
	c->off += (uint64_t)n;
	buf_append(&c->carry, c->chunk, (size_t)n);
	buf_reset(&c->out);
	if (c->off >= c->job->env->bodylen)
		body_end(c);
	else {
		stuff(c, 0);
		/* on while the next hop keeps up; on_sc_drained when not */
		if (body_write(c, c->out.data, c->out.len) == 0 &&
		    alive(c) && !smtpc_busy(c->sc))
			body_read(c);
	}
	conn_unref(c);
}

/* body_read - the next chunk of the body, on the threadpool */
static void
body_read(struct conn *c)
{
	struct mta_env *env = c->job->env;
	uint64_t left = env->bodylen - c->off;
	uv_buf_t b;
	int rc;

	if (left == 0) {
		buf_reset(&c->out);
		body_end(c);
		return;
	}
	if (c->chunk == NULL)
		c->chunk = xmalloc(CONN_CHUNK);
	b = uv_buf_init(c->chunk, left < CONN_CHUNK ? (unsigned)left :
	    CONN_CHUNK);
	c->fsreq.data = c;
	if ((rc = uv_fs_read(c->loop, &c->fsreq, c->fd, &b, 1,
	    (int64_t)(env->bodyoff + c->off), read_cb)) != 0) {
		conn_hop_failed(c, 4, "4.3.0", "queue file read: %s",
		    uv_strerror(rc));
		return;
	}
	c->reading = 1;
	c->refs++;
}

/*
 * Input
 */

/* on_reply - the reply to the oldest command, in the current state */
static void
on_reply(void *arg, const struct smtp_reply *rep)
{
	struct conn *c = arg;
	char diag[MTA_DIAGLEN], status[16];
	int cls = rep->code / 100;

	if (c->state == CS_QUIT) {	/* 221 (or anything): goodbye */
		conn_close(c);
		return;
	}
	reply_diag(rep, diag, sizeof(diag));
	reply_status(rep, status, sizeof(status));
	if (rep->code == 421) {
		conn_hop_failed(c, 4, status, "%s", diag);
		return;
	}
	c->replies++;
	switch (c->state) {
	case CS_MAIL:
		on_mail(c, rep);
		break;
	case CS_RCPT:
		on_rcpt(c, rep);
		break;
	case CS_DATA:
		on_data(c, rep);
		break;
	case CS_DOT:
		on_dot(c, rep);
		break;
	case CS_RSET:
		if (cls != 2)
			conn_hop_failed(c, 4, status, "RSET failed: %s", diag);
		else
			txn_start(c);
		break;
	default:
		conn_hop_failed(c, 4, "4.5.0", "unexpected reply in state %s:"
		    " %s", conn_state_names[c->state], diag);
		break;
	}
}

/*
 * Connecting
 */

/*
 * conn_level - the TLS level this hop is asked for: the "tls-policy"
 * entry of its host name or of the destination's domain, else the
 * route's own setting (the domain's or the relay host's "tls" and
 * "verify"), else for MX routes "tls-policy default".  Sets c->level
 * and c->tls_bounce; the entry, or NULL.
 */
static const struct policy_tlspol *
conn_level(struct conn *c, const struct policy *p, const struct mta_hop *h)
{
	const struct policy_tlspol *tp;
	struct sockaddr_storage ss;
	const char *host;

	host = addr_parse(h->name, 0, &ss) == 0 || h->name[0] == '[' ||
	    h->name[0] == '\0' ? NULL : h->name;
	tp = policy_tls_lookup(p, c->tlsdomain, host);
	/* the default is for routes without a setting of their own */
	if (tp == &p->tlsdef && c->dest->route != POLICY_ROUTE_MX &&
	    c->dest->route != POLICY_ROUTE_FALLBACK)
		tp = NULL;
	c->tls_bounce = tp != NULL && tp->bounce;
	if (tp != NULL)
		c->level = tp->level;
	else if (c->verify)
		c->level = POLICY_TLSL_VERIFY;
	else
		c->level = c->tlsmode == POLICY_UPTLS_NONE ? POLICY_TLSL_NONE :
		    c->tlsmode == POLICY_UPTLS_OPPORTUNISTIC ?
		    POLICY_TLSL_MAY : POLICY_TLSL_ENCRYPT;
	return tp;
}

/* is_dane - a level that uses DANE */
static int
is_dane(enum policy_tlslevel l)
{
	return l == POLICY_TLSL_DANE || l == POLICY_TLSL_DANE_ONLY;
}

/* tlsa_name - the TLSA question of a hop: _PORT._tcp.NAME */
static void
tlsa_name(const struct mta_hop *h, char *out, size_t len)
{
	snprintf(out, len, "_%u._tcp.%s",
	    (unsigned)addr_port((const struct sockaddr *)&h->addr), h->name);
}

/* dane_tlsa - the hop's TLSA answer, if it was looked up */
static const struct mta_tlsa *
dane_tlsa(const struct conn *c, const struct mta_hop *h)
{
	char q[300];

	if (c->tlsa == NULL)
		return NULL;
	tlsa_name(h, q, sizeof(q));
	return strcasecmp(q, c->tlsa->name) == 0 ? c->tlsa : NULL;
}

/* dane_secure - DNSSEC vouched for the hop's name and address */
static int
dane_secure(const struct mta_hop *h)
{
	return (h->dnssec & (MTA_HOP_NAMESEC | MTA_HOP_ADDRSEC)) ==
	    (MTA_HOP_NAMESEC | MTA_HOP_ADDRSEC);
}

/* the TLSA records given to OpenSSL: delivery runs on one loop */
static struct tls_tlsa	 dane_rr[MTA_TLSA_MAX];

/*
 * conn_dane - TLS for the levels dane and dane-only (RFC 7672 2.2):
 * secure usable TLSA records: TLS that must match one of them (no CA,
 * DANE-EE checks no name); a secure RRset with none usable: TLS without
 * authentication (dane-only refuses); no secure TLSA (an unsigned zone,
 * an insecure MX or address answer, an untrusted resolver, a secure
 * "none"): "may" (dane-only refuses); the lookup failed (SERVFAIL, as a
 * validating resolver answers bogus data): the hop is not used, never
 * TLS downgraded.  0, -1 (no context), or -2 with *code, *status and
 * c->danewhy for the failure.
 */
static int
conn_dane(struct conn *c, const struct mta_hop *h, struct smtpc_opts *o,
    int *code, const char **status)
{
	const struct mta_tlsa *t = dane_tlsa(c, h);
	int only = c->level == POLICY_TLSL_DANE_ONLY;
	struct sockaddr_storage ss;
	size_t i;

	o->tls = c->tlsmode == POLICY_UPTLS_SMTPS ? SMTPC_TLS_SMTPS :
	    SMTPC_TLS_REQUIRE;
	if (t == NULL)
		snprintf(c->danewhy, sizeof(c->danewhy), "%s",
		    c->dest->route == POLICY_ROUTE_ORIGINAL ?
		    "the next hop was not looked up in DNS" :
		    addr_parse(h->name, 0, &ss) == 0 || h->name[0] == '[' ?
		    "the next hop is an address, not a name" :
		    !c->trust_ad ? "the resolver is not trusted for DNSSEC "
		    "(tls-policy trust-ad)" :
		    !(h->dnssec & MTA_HOP_NAMESEC) ? "the MX answer was not "
		    "DNSSEC-validated" : "the address answer was not "
		    "DNSSEC-validated");
	else if (t->status == MTA_TLSA_FAIL) {
		snprintf(c->danewhy, sizeof(c->danewhy), "%s", t->err);
		*code = 4;
		*status = "4.4.3";
		return -2;
	} else if (t->status != MTA_TLSA_SECURE)
		snprintf(c->danewhy, sizeof(c->danewhy), "%s", t->err);
	else if (t->n == 0) {
		snprintf(c->danewhy, sizeof(c->danewhy), "%zu TLSA records at "
		    "%s, none usable", t->total, t->name);
		if (!only) {
			o->ctx = tls_ctx_client_shared();
			return o->ctx != NULL ? 0 : -1;
		}
	} else {
		for (i = 0; i < t->n; i++) {
			dane_rr[i].usage = t->rr[i].usage;
			dane_rr[i].selector = t->rr[i].selector;
			dane_rr[i].mtype = t->rr[i].mtype;
			dane_rr[i].data = t->data + t->rr[i].off;
			dane_rr[i].len = t->rr[i].len;
		}
		o->dane = dane_rr;
		o->ndane = t->n;
		/* RFC 7672 3.2.2: a DANE-TA chain may name the next-hop
		 * domain too; the TLSA base domain is the sni */
		o->dane_names = c->tlsdomain[0] != '\0' ? c->tlsdomain : NULL;
		if (t->skipped > 0)
			snprintf(c->danewhy, sizeof(c->danewhy), "%zu TLSA "
			    "records over the limit of %d not used",
			    t->skipped, MTA_TLSA_MAX);
		o->ctx = tls_ctx_client_dane();
		return o->ctx != NULL ? 0 : -1;
	}
	if (only) {
		*code = c->tls_bounce ? 5 : 4;
		*status = c->tls_bounce ? "5.7.5" : "4.7.5";
		return -2;
	}
	o->tls = c->tlsmode == POLICY_UPTLS_SMTPS ? SMTPC_TLS_SMTPS :
	    SMTPC_TLS_OPPORTUNISTIC;
	o->ctx = tls_ctx_client_shared();
	return o->ctx != NULL ? 0 : -1;
}

/*
 * conn_tls - what TLS this hop gets at c->level (conn_level): the
 * client's mode, its context (a verifying one for verify: c->vctx; a
 * DANE one for dane), the names to check.  -1 when no context could be
 * made (never unverified instead); -2 when DANE refuses the hop
 * (*code, *status, c->danewhy).
 */
static int
conn_tls(struct conn *c, const struct policy *p, const struct mta_hop *h,
    const struct policy_tlspol *tp, struct smtpc_opts *o, int *code,
    const char **status)
{
	const char *ca = NULL;
	struct sockaddr_storage ss;
	int literal;

	literal = addr_parse(h->name, 0, &ss) == 0 || h->name[0] == '[' ||
	    h->name[0] == '\0';
	if (tp != NULL) {
		ca = p->tls_ca_file;
		o->match = tp->match;
	} else if (c->verify)
		ca = p->relay.ca_file;
	c->danewhy[0] = '\0';
	if (!literal)
		o->sni = h->name;
	o->min_tls13 = p->tls_min_tls13;
	o->ciphers = p->tls_ciphers;
	switch (c->level) {
	case POLICY_TLSL_NONE:
		o->tls = SMTPC_TLS_NONE;
		return 0;
	case POLICY_TLSL_MAY:
		o->tls = c->tlsmode == POLICY_UPTLS_SMTPS ? SMTPC_TLS_SMTPS :
		    SMTPC_TLS_OPPORTUNISTIC;
		break;
	case POLICY_TLSL_DANE:
	case POLICY_TLSL_DANE_ONLY:
		return conn_dane(c, h, o, code, status);
	default:
		o->tls = c->tlsmode == POLICY_UPTLS_SMTPS ? SMTPC_TLS_SMTPS :
		    SMTPC_TLS_REQUIRE;
		break;
	}
	if (c->level != POLICY_TLSL_VERIFY) {
		o->ctx = tls_ctx_client_shared();
		return o->ctx != NULL ? 0 : -1;
	}
	SSL_CTX_free(c->vctx);
	if ((c->vctx = verify_ctx(ca)) == NULL)
		return -1;
	o->ctx = c->vctx;
	return 0;
}

/* on_tlsa - the TLSA answer of the hop being connected to */
static void
on_tlsa(void *arg, const struct mta_tlsa *t)
{
	struct conn *c = arg;
	char q[300];

	tlsa_name(&c->hop[c->hopi], q, sizeof(q));
	/* a late answer for an earlier hop is dropped */
	if (c->state == CS_TLSA && strcasecmp(q, t->name) == 0) {
		if (c->tlsa == NULL)
			c->tlsa = xmalloc(sizeof(*c->tlsa));
		memcpy(c->tlsa, t, sizeof(*t));
		conn_connect(c);
	}
	conn_unref(c);
}

/*
 * conn_connect - a new connection to hop[hopi]: marked, from the client's
 * address when the box hides (a failed bind is logged and the box's own
 * address used: delivery matters more than hiding), SNI the hop's name,
 * and the relay host's secrets and certificate check where it is one.
 * A DANE level on a hop DNSSEC vouched for looks its TLSA records up
 * first (once per name and port).
 */
static void
conn_connect(struct conn *c)
{
	struct policy *p = policy_current();
	struct mta_hop *h = &c->hop[c->hopi];
	const struct policy_tlspol *tp;
	const char *status = "4.7.5";
	struct smtpc_opts o;
	char a[ADDR_STRLEN];
	int rc, code = 4;

	addr_fmt_ip((struct sockaddr *)&h->addr, a, sizeof(a));
	if (h->name[0] != '\0' && h->name[0] != '[' && strcmp(h->name, a))
		snprintf(c->remote, sizeof(c->remote), "%s[%s]", h->name, a);
	else
		snprintf(c->remote, sizeof(c->remote), "[%s]", a);
	tp = conn_level(c, p, h);
	if (is_dane(c->level) && dane_secure(h) && dane_tlsa(c, h) == NULL) {
		enter_state(c, CS_TLSA);
		timeout(c, p->queue.resolve_timeout);
		c->refs++;
		mta_dns_tlsa(c->loop, h->name, (uint16_t)addr_port(
		    (struct sockaddr *)&h->addr), on_tlsa, c);
		return;
	}
	enter_state(c, CS_SETUP);
	memset(&o, 0, sizeof(o));
	o.id = c->id;
	o.logname = "mta: conn";
	o.peername = c->remote;
	o.dst = h->addr;
	o.src.ss_family = AF_UNSPEC;
	if (c->dest->bind.ss_family == h->addr.ss_family)
		o.src = c->dest->bind;
	o.src_soft = 1;
	if ((rc = conn_tls(c, p, h, tp, &o, &code, &status)) == -2) {
		conn_hop_failed(c, code, status, "DANE (%s) for %s: %s",
		    policy_name(policy_tlslevel_names, (int)c->level),
		    c->remote, c->danewhy);
		return;
	}
	if (rc == -1) {
		conn_hop_failed(c, c->tls_bounce ? 5 : 4, c->tls_bounce ?
		    "5.7.5" : "4.7.5", "no TLS context");
		return;
	}
	/* verified, given by address: the certificate names the address */
	if (c->level == POLICY_TLSL_VERIFY && o.sni == NULL && o.match == NULL)
		o.expect_ip = a;
	o.corks = corks;
	o.tls_counts = &mta_tls_delivery;
	o.maxline = CONN_MAXLINE;
	o.t_connect = p->limits.t_connect;
	o.t_cmd = p->limits.t_cmd;
	o.t_dot = p->limits.t_dot;
	o.helo = c->dest->helo != NULL ? c->dest->helo : mta_hostname();
	if (c->relayhost) {
		o.auth_user = p->relay.auth_user;
		o.auth_pass = p->relay.auth_pass;
		o.auth_plaintext = p->relay.auth_plaintext;
		o.auth_verified = c->level == POLICY_TLSL_VERIFY;
	}
	c->sc = smtpc_open(c->loop, &o, &deliver_smtpc_cb, c);
}

/* on_resolved - the DNS answer for an MX or relay host destination */
static void
on_resolved(void *arg, struct mta_dnsres *res)
{
	struct conn *c = arg;

	if (c->state == CS_RESOLVE && res->status != 0) {
		snprintf(c->remote, sizeof(c->remote), "%s", "dns");
		conn_hop_failed(c, res->status, res->code, "%s", res->err);
	} else if (c->state == CS_RESOLVE) {
		memcpy(c->hop, res->hop, sizeof(c->hop));
		c->nhop = res->nhop;
		c->trust_ad = res->trust_ad;
		c->hopi = 0;
		conn_connect(c);
	}
	conn_unref(c);
}

/* same_hop - one address and port */
static int
same_hop(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
	return addr_equal_ip((const struct sockaddr *)a,
	    (const struct sockaddr *)b) &&
	    addr_port((const struct sockaddr *)a) ==
	    addr_port((const struct sockaddr *)b);
}

/* hop_add - one more next hop, unless the list has it (or is full) */
static void
hop_add(struct conn *c, const struct sockaddr_storage *ss, const char *name)
{
	int i;

	for (i = 0; i < c->nhop; i++)
		if (same_hop(ss, &c->hop[i].addr))
			return;
	if (c->nhop >= MTA_MAXADDR)
		return;
	c->hop[c->nhop].addr = *ss;
	snprintf(c->hop[c->nhop].name, sizeof(c->hop[0].name), "%s", name);
	c->nhop++;
}

/*
 * hops_original - the address the client dialled first (so a session
 * is delivered in the family it came in), then the domain's other server
 * addresses in the order written (a dual-stack server's other family
 * when the dialled one is down), then its fallback.  A hop's name is the
 * host as written, for SNI and the log.
 */
static void
hops_original(struct conn *c, const struct policy *p)
{
	const struct sockaddr_storage *dst = &c->dest->orig_dst;
	const struct policy_domain *d;
	const char *name;
	char a[ADDR_STRLEN];
	int i;

	d = policy_domain_by_server(p, (const struct sockaddr *)dst);
	addr_fmt_ip((const struct sockaddr *)dst, a, sizeof(a));
	name = a;
	for (i = 0; d != NULL && i < d->naddr; i++)
		if (same_hop(dst, &d->addr[i]))
			name = d->host[i];
	for (i = 0; d != NULL && name == a && i < d->nfbaddr; i++)
		if (same_hop(dst, &d->fbaddr[i]))
			name = d->fallback;
	c->nhop = 0;
	hop_add(c, dst, name);
	for (i = 0; d != NULL && i < d->naddr; i++)
		hop_add(c, &d->addr[i], d->host[i]);
	for (i = 0; d != NULL && i < d->nfbaddr; i++)
		hop_add(c, &d->fbaddr[i], d->fallback);
	c->tlsmode = d != NULL ? d->tls : POLICY_UPTLS_OPPORTUNISTIC;
	if (d != NULL)
		snprintf(c->tlsdomain, sizeof(c->tlsdomain), "%s", d->name);
}

/*
 * mta_deliver_open - a new connection for d, taking d's first waiting
 * job.  Everything happens later, from the loop: -1 only if no job.
 */
int
mta_deliver_open(uv_loop_t *loop, struct mta_dest *d)
{
	struct policy *p = policy_current();
	struct conn *c;

	c = xcalloc(1, sizeof(*c));
	if ((c->job = mta_queue_next_job(d)) == NULL) {
		free(c);
		return -1;
	}
	c->id = ++conn_ids;
	c->loop = loop;
	c->dest = d;
	c->pol = policy_ref(p);
	c->fd = -1;
	c->refs = 1;			/* the timer */
	buf_init(&c->carry);
	buf_init(&c->out);
	uv_timer_init(loop, &c->timer);
	c->timer.data = c;
	LIST_INSERT_HEAD(&conns, c, entry);
	nconns++;
	snprintf(c->remote, sizeof(c->remote), "%s", d->key);
	switch (d->route) {
	case POLICY_ROUTE_ORIGINAL:
		hops_original(c, p);
		uv_timer_start(&c->timer, on_timeout, 0, 0);	/* CS_INIT */
		break;
	case POLICY_ROUTE_RELAYHOST:
		c->tlsmode = p->relay.tls;
		c->relayhost = 1;
		c->verify = p->relay.verify;
		enter_state(c, CS_RESOLVE);
		timeout(c, p->queue.resolve_timeout);
		c->refs++;
		mta_dns_host(loop, p->relay.host, p->relay.port, on_resolved,
		    c);
		break;
	case POLICY_ROUTE_FALLBACK:
		/* no AUTH: a fallback relay takes the box's mail by address */
		c->tlsmode = POLICY_UPTLS_OPPORTUNISTIC;
		enter_state(c, CS_RESOLVE);
		timeout(c, p->queue.resolve_timeout);
		c->refs++;
		mta_dns_host(loop, p->fbrelay.host, p->fbrelay.port,
		    on_resolved, c);
		break;
	case POLICY_ROUTE_MX:
		c->tlsmode = POLICY_UPTLS_OPPORTUNISTIC;
		snprintf(c->tlsdomain, sizeof(c->tlsdomain), "%s", d->domain);
		enter_state(c, CS_RESOLVE);
		timeout(c, p->queue.resolve_timeout);
		c->refs++;
		mta_dns_mx(loop, d->domain, 25, on_resolved, c);
		break;
	}
	return 0;
}

void
mta_deliver_init(uv_loop_t *loop)
{
	draining = 0;
	/* the loop's write corks; a new loop (the tests start several)
	 * gets its own, the old one went with its loop's handles */
	if (corks_loop != loop) {
		(void)tls_corks_free(corks);
		corks = tls_corks_new(loop);
		corks_loop = loop;
	}
	mta_dns_init();
}

/*
 * mta_deliver_wake - an idle connection of d takes d's next job: 0, or
 * -1 if d has none idle
 */
int
mta_deliver_wake(struct mta_dest *d)
{
	struct conn *c;

	LIST_FOREACH(c, &idle, idle_entry)
		if (c->dest == d && alive(c))
			break;
	if (c == NULL)
		return -1;
	/* between transactions, off the idle list: txn_start decides */
	enter_state(c, CS_RSET);
	txn_start(c);
	return 0;
}

/* mta_deliver_shutdown - finish the current transactions, take no more */
void
mta_deliver_shutdown(void)
{
	struct conn *c, *next;

	draining = 1;
	while ((c = LIST_FIRST(&idle)) != NULL)
		conn_quit(c);
	/*
	 * A connection still resolving (the destination, or a hop's TLSA
	 * records) has no transaction to finish: its
	 * job goes back untouched, the answer is ignored, and lookups stop
	 * soon, so that a slow resolver does not hold the shutdown.
	 */
	for (c = LIST_FIRST(&conns); c != NULL; c = next) {
		next = LIST_NEXT(c, entry);
		if (c->state != CS_RESOLVE && c->state != CS_TLSA)
			continue;
		requeue(c);
		enter_state(c, CS_INIT);
		conn_close(c);
	}
	mta_dns_stop();
}

/* mta_deliver_stop - close every connection now */
void
mta_deliver_stop(void)
{
	struct conn *c, *next;

	draining = 1;
	for (c = LIST_FIRST(&conns); c != NULL; c = next) {
		next = LIST_NEXT(c, entry);
		if (c->state == CS_RESOLVE || c->state == CS_TLSA)
			enter_state(c, CS_INIT);	/* ignore the answer */
		snprintf(c->lasterr, sizeof(c->lasterr), "shutting down");
		conn_close(c);
	}
	mta_dns_stop();		/* lookups not started answer now */
}
