/*
 * deliver.c - the SMTP client of the MTA.  It owns the delivery
 * connection: finding the next hop (the original destination and its
 * fallback, the relay host, or the MX hosts), connecting with SO_MARK,
 * EHLO, STARTTLS (opportunistic or required), AUTH PLAIN/LOGIN to the
 * relay host (only inside TLS unless the config allows plain text, and
 * with a verified certificate when it asks for one), and transactions with PIPELINING, SIZE, 8BITMIME,
 * SMTPUTF8 and DSN parameters.  A connection takes jobs from its
 * destination until none is left, then waits a little for more (a burst
 * reuses one session instead of paying a new connection and EHLO per
 * message), then says QUIT.  With PIPELINING the next job's MAIL, RCPT
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

#include <openssl/evp.h>

#include "../common/addr.h"
#include "../common/log.h"
#include "../common/smtp.h"
#include "../common/tls.h"
#include "../common/xmalloc.h"
#include "mta_local.h"

#define CONN_CHUNK	(64 * 1024)	/* body bytes read at a time */
#define CONN_MAXLINE	2048		/* reply line limit */
#define CONN_MAXLINES	100
#define CONN_T_QUIT	5		/* seconds to wait for QUIT's reply */
#define CONN_T_IDLE	2		/* seconds kept open without a job */

enum conn_state {
	CS_INIT = 0,
	CS_RESOLVE,	/* waiting for DNS */
	CS_CONNECT,	/* TCP connect to hop[hopi] */
	CS_BANNER,	/* waiting for 220 */
	CS_EHLO,
	CS_HELO,
	CS_STARTTLS,	/* waiting for 220 to STARTTLS */
	CS_HANDSHAKE,	/* TLS handshake */
	CS_AUTH,	/* AUTH exchange */
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
	"init", "resolve", "connect", "banner", "ehlo", "helo", "starttls",
	"handshake", "auth", "mail", "rcpt", "data", "body", "dot", "rset",
	"idle", "quit", "closing"
};


/* one delivery connection to one destination */
struct conn {
	uint64_t	 id;
	enum conn_state	 state;
	uv_loop_t	*loop;
	struct mta_dest	*dest;
	struct mta_job	*job;		/* the transaction in progress */
	struct mta_job	*next;		/* pipelined behind job's dot */
	LIST_ENTRY(conn) entry;
	LIST_ENTRY(conn) idle_entry;	/* in CS_IDLE only */
	unsigned	 refs;		/* handles and requests outstanding */

	uv_tcp_t	 tcp;
	uv_timer_t	 timer;
	uv_connect_t	 creq;
	int		 tcp_open;
	int		 retry_hop;	/* reconnect when the tcp closes */

	struct mta_hop	 hop[MTA_MAXADDR];
	int		 nhop;
	int		 hopi;
	char		 remote[320];	/* "name[addr]" of the hop */
	enum policy_uptls tlsmode;
	int		 notls;		/* this hop failed TLS: plain now */
	const char	*auth_user;
	const char	*auth_pass;
	int		 auth_plaintext; /* AUTH allowed without TLS */
	int		 verify;	/* the relay's certificate must verify */
	SSL_CTX		*vctx;		/* its context (NULL: not built) */

	struct smtp_replyparser rp;
	struct tls_conn	*tls;
	struct buf	 plain;		/* decrypted input */
	struct buf	 cork;		/* pipelined commands, sent at once */
	int		 corked;
	struct smtp_ehlo caps;	/* the server's EHLO; zero: HELO */
	int		 auth_step;
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
	struct buf	 carry;		/* a partial line between chunks */
	struct buf	 out;
};

LIST_HEAD(connlist, conn);
static struct connlist	 conns = LIST_HEAD_INITIALIZER(conns);
static struct connlist	 idle = LIST_HEAD_INITIALIZER(idle);
static unsigned		 nconns;
static unsigned		 nidle;
static uint64_t		 conn_ids;
static SSL_CTX		*relay_ctx;	/* verifies the relay host */
static char		*relay_ctx_ca;	/* its CA file ("" for the system's) */
static int		 draining;

static void	conn_close(struct conn *);
static void	conn_connect(struct conn *);
static void	conn_hop_failed(struct conn *, int, const char *,
		    const char *, ...) __attribute__((format(printf, 4, 5)));
static void	txn_start(struct conn *);
static void	body_read(struct conn *);
static void	body_mem(struct conn *);
static void	requeue_next(struct conn *);

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
	smtp_reply_free(&c->rp);
	tls_conn_free(c->tls);
	SSL_CTX_free(c->vctx);
	buf_free(&c->plain);
	buf_free(&c->cork);
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

static void	conn_quit(struct conn *);

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
	if (c->state == CS_RESOLVE) {	/* waited for a thread, or slow */
		snprintf(c->remote, sizeof(c->remote), "%s", "dns");
		conn_hop_failed(c, 4, "4.4.3", "DNS resolution of %s took "
		    "longer than %u s", c->dest->key,
		    policy_current()->queue.resolve_timeout);
		return;
	}
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
	if (c->hopi + 1 < c->nhop) {
		c->hopi++;
		c->notls = 0;
		c->retry_hop = 1;
		conn_close(c);
		return;
	}
	fail_open(c, code, status, c->lasterr);
	job_finish(c);
	mta_queue_dest_fail(c->dest, code, status, c->remote, c->lasterr);
	conn_close(c);
}

static void
tcp_close_cb(uv_handle_t *h)
{
	struct conn *c = h->data;

	c->tcp_open = 0;
	tls_conn_free(c->tls);
	c->tls = NULL;
	if (c->retry_hop && c->job != NULL && !draining) {
		c->retry_hop = 0;
		conn_connect(c);
	} else
		conn_close(c);
	conn_unref(c);
}

/* conn_close - close the socket (or retry the next hop), then free */
static void
conn_close(struct conn *c)
{
	if (c->state == CS_IDLE)
		enter_state(c, CS_QUIT);	/* no job for it any more */
	if (c->tcp_open) {
		uv_timer_stop(&c->timer);
		if (!uv_is_closing((uv_handle_t *)&c->tcp))
			uv_close((uv_handle_t *)&c->tcp, tcp_close_cb);
		return;
	}
	if (c->state == CS_CLOSING)
		return;
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

/* alive - the socket can still be written to */
static int
alive(struct conn *c)
{
	return c->tcp_open && !uv_is_closing((uv_handle_t *)&c->tcp);
}

/* send_raw - n bytes to the next hop; cb(c) once they left, if given */
static int
send_raw(struct conn *c, const char *p, size_t n, tls_write_cb cb)
{
	int rc;

	if (!alive(c))
		return -1;
	if (c->corked && cb == NULL) {
		buf_append(&c->cork, p, n);
		return 0;
	}
	if ((rc = tls_stream_write((uv_stream_t *)&c->tcp, c->tls, p, n, cb,
	    c)) != 0) {
		conn_hop_failed(c, 4, "4.4.2", "write to %s failed: %s",
		    c->remote, c->tls ? tls_conn_error(c->tls) :
		    uv_strerror(rc));
		return -1;
	}
	if (cb != NULL && n > 0)
		c->refs++;
	return 0;
}

/* uncork - send the commands collected since corking, in one write */
static int
uncork(struct conn *c)
{
	int rc;

	c->corked = 0;
	rc = send_raw(c, c->cork.data, c->cork.len, NULL);
	buf_reset(&c->cork);
	return rc;
}

static int __attribute__((format(printf, 2, 3)))
send_cmd(struct conn *c, const char *fmt, ...)
{
	struct buf b;
	va_list ap;
	int n, rc;

	buf_init(&b);
	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	buf_reserve(&b, (size_t)n + 3);
	va_start(ap, fmt);
	vsnprintf(b.data, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b.len = (size_t)n;
	buf_append(&b, "\r\n", 2);
	rc = send_raw(c, b.data, b.len, NULL);
	buf_free(&b);
	return rc;
}

/*
 * Session setup
 */

static void
send_ehlo(struct conn *c, int helo)
{
	memset(&c->caps, 0, sizeof(c->caps));
	enter_state(c, helo ? CS_HELO : CS_EHLO);
	timeout(c, policy_current()->limits.t_cmd);
	send_cmd(c, "%s %s", helo ? "HELO" : "EHLO",
	    c->dest->helo != NULL ? c->dest->helo : mta_hostname());
}


/*
 * relay_vctx - the verifying context for the relay host (its ca-file, or
 * the system's CAs), one reference for the caller; NULL after logging
 * why.  Built once, again only when a reload names another CA file.
 */
static SSL_CTX *
relay_vctx(const struct policy_relayhost *r)
{
	const char *ca = r->ca_file != NULL ? r->ca_file : "";
	char err[256];

	if (relay_ctx != NULL && strcmp(relay_ctx_ca, ca) != 0) {
		SSL_CTX_free(relay_ctx);
		relay_ctx = NULL;
	}
	if (relay_ctx == NULL) {
		if ((relay_ctx = tls_ctx_client_ca(r->ca_file, err,
		    sizeof(err))) == NULL) {
			log_warnx("mta: relay host TLS context: ca_file=%s %s",
			    ca[0] != '\0' ? ca : "system", err);
			return NULL;
		}
		free(relay_ctx_ca);
		relay_ctx_ca = xstrdup(ca);
	}
	SSL_CTX_up_ref(relay_ctx);
	return relay_ctx;
}

/* tls_begin - start the handshake (after STARTTLS's 220, or at once) */
static void
tls_begin(struct conn *c)
{
	struct sockaddr_storage ss;
	const char *sni = c->hop[c->hopi].name;
	char a[ADDR_STRLEN];
	SSL_CTX *ctx;

	if ((ctx = c->verify ? c->vctx : tls_ctx_client_shared()) == NULL) {
		conn_hop_failed(c, 4, "4.7.5", "no TLS context");
		return;
	}
	if (addr_parse(sni, 0, &ss) == 0 || sni[0] == '[')
		sni = NULL;
	enter_state(c, CS_HANDSHAKE);
	smtp_reader_discard(&c->rp.r);
	c->tls = tls_conn_new(ctx, (uv_stream_t *)&c->tcp, TLS_CLIENT, sni);
	timeout(c, policy_current()->limits.t_cmd);
	/* a relay host given by address: its certificate names the address */
	if (c->verify && sni == NULL) {
		addr_fmt_ip((struct sockaddr *)&c->hop[c->hopi].addr, a,
		    sizeof(a));
		if (tls_conn_expect_ip(c->tls, a) == -1) {
			conn_hop_failed(c, 4, "4.7.5", "TLS with %s: cannot "
			    "check the address %s", c->remote, a);
			return;
		}
	}
	if (tls_conn_start(c->tls) == -1)
		conn_hop_failed(c, 4, "4.7.5", "TLS with %s failed: %s",
		    c->remote, tls_conn_error(c->tls));
}

/* tls_failed - opportunistic TLS falls back to plain on the same hop */
static void
tls_failed(struct conn *c)
{
	if (c->tlsmode == POLICY_UPTLS_OPPORTUNISTIC && !c->notls &&
	    c->msgs == 0) {
		log_info("mta: conn=%llu relay=%s TLS failed error=\"%s\", "
		    "retrying without", (unsigned long long)c->id,
		    log_word(c->remote), log_vis(tls_conn_error(c->tls)));
		c->notls = 1;
		c->retry_hop = 1;
		conn_close(c);
		return;
	}
	conn_hop_failed(c, 4, "4.7.5", "TLS with %s failed: %s", c->remote,
	    tls_conn_error(c->tls));
}

static void
b64(const char *in, size_t n, char *out, size_t outlen)
{
	if (outlen < 4 * ((n + 2) / 3) + 1) {
		out[0] = '\0';
		return;
	}
	EVP_EncodeBlock((unsigned char *)out, (const unsigned char *)in,
	    (int)n);
}

/* auth_next - the next AUTH line; 1 once authenticated */
static int
auth_next(struct conn *c, const struct smtp_reply *rep)
{
	char tmp[1024], enc[1400];
	size_t ul = strlen(c->auth_user), pl = strlen(c->auth_pass);
	int rc = 0;

	if (rep != NULL && rep->code / 100 == 2)	/* 235; some say 250 */
		return 1;
	if (rep != NULL && rep->code != 334) {
		reply_diag(rep, tmp, sizeof(tmp));
		conn_hop_failed(c, 4, "4.7.0", "authentication at %s "
		    "failed: %s", c->remote, tmp);
		return -1;
	}
	if (ul + pl + 2 >= sizeof(tmp)) {
		conn_hop_failed(c, 4, "4.7.0", "credentials too long");
		return -1;
	}
	if (c->auth_step == 0 && c->caps.auth_plain) {
		tmp[0] = '\0';
		memcpy(tmp + 1, c->auth_user, ul);
		tmp[ul + 1] = '\0';
		memcpy(tmp + ul + 2, c->auth_pass, pl);
		b64(tmp, ul + pl + 2, enc, sizeof(enc));
		rc = send_cmd(c, "AUTH PLAIN %s", enc);
		c->auth_step = 10;
	} else if (c->auth_step == 0) {
		rc = send_cmd(c, "AUTH LOGIN");
		c->auth_step = 1;
	} else if (c->auth_step == 1) {
		b64(c->auth_user, ul, enc, sizeof(enc));
		rc = send_cmd(c, "%s", enc);
		c->auth_step = 2;
	} else if (c->auth_step == 2) {
		b64(c->auth_pass, pl, enc, sizeof(enc));
		rc = send_cmd(c, "%s", enc);
		c->auth_step = 3;
	} else {
		conn_hop_failed(c, 4, "4.7.0", "unexpected AUTH reply");
		rc = -1;
	}
	explicit_bzero(tmp, sizeof(tmp));
	explicit_bzero(enc, sizeof(enc));
	return rc;
}

/* session_ready - after EHLO: STARTTLS, AUTH, or the first transaction */
static void
session_ready(struct conn *c)
{
	int tlsok = c->tlsmode != POLICY_UPTLS_NONE && !c->notls;

	if (c->tls == NULL && tlsok && c->caps.starttls) {
		enter_state(c, CS_STARTTLS);
		timeout(c, policy_current()->limits.t_cmd);
		send_cmd(c, "STARTTLS");
		return;
	}
	if (c->tls == NULL && c->tlsmode == POLICY_UPTLS_STARTTLS) {
		conn_hop_failed(c, 4, "4.7.5", "TLS is required but %s does "
		    "not offer STARTTLS", c->remote);
		return;
	}
	if (c->auth_user != NULL && c->auth_step == 0 &&
	    (c->caps.auth_plain || c->caps.auth_login)) {
		/*
		 * The password goes out inside TLS only (Postfix's
		 * noplaintext), and inside verified TLS when the relay host
		 * asks for it.  Otherwise the message waits: sent without
		 * AUTH the relay would most likely refuse to relay it.
		 */
		if (c->tls == NULL && !c->auth_plaintext) {
			conn_hop_failed(c, 4, "4.7.0", "%s offers AUTH without "
			    "TLS: credentials not sent in plain text "
			    "(relay-host auth-plaintext yes allows it)",
			    c->remote);
			return;
		}
		if (c->verify && !tls_conn_verified(c->tls)) {
			conn_hop_failed(c, 4, "4.7.0", "%s: certificate not "
			    "verified, credentials not sent", c->remote);
			return;
		}
		enter_state(c, CS_AUTH);
		timeout(c, policy_current()->limits.t_cmd);
		auth_next(c, NULL);
		return;
	}
	txn_start(c);
}

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
send_mail(struct conn *c, const struct mta_job *job)
{
	const struct mta_env *env = job->env;
	struct buf b;
	int rc;

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

static void
conn_quit(struct conn *c)
{
	enter_state(c, CS_QUIT);
	timeout(c, CONN_T_QUIT);
	send_cmd(c, "QUIT");
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
send_envelope(struct conn *c, const struct mta_job *job)
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
	timeout(c, policy_current()->limits.t_cmd);
}

/* txn_start - the next job's MAIL, RCPTs and DATA (pipelined if we may) */
static void
txn_start(struct conn *c)
{
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
	if (!c->caps.pipelining) {
		send_mail(c, c->job);
		return;
	}
	c->corked = 1;
	send_envelope(c, c->job);
	uncork(c);
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
	    (job = TAILQ_FIRST(&c->dest->jobs)) == NULL ||
	    txn_cannot(c, job) != NULL)
		return;
	c->next = mta_queue_next_job(c->dest);
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
	timeout(c, policy_current()->limits.t_cmd);
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
		send_cmd(c, ".");
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
	if (c->job->env->received == NULL ||
	    send_raw(c, c->job->env->received,
	    strlen(c->job->env->received), NULL) != -1) {
		timeout(c, policy_current()->limits.t_data);
		body_read(c);
	}
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

/*
 * stuff_lines - the complete lines of [p, p + n) to out, dot-stuffed, and
 * with last the unterminated rest too; the bytes not taken
 */
static size_t
stuff_lines(struct buf *out, const char *p, size_t n, int last)
{
	const char *nl;

	while ((nl = memchr(p, '\n', n)) != NULL) {
		smtp_dot_stuff(out, p, (size_t)(nl - p) -
		    (nl > p && nl[-1] == '\r'));
		n -= (size_t)(nl - p) + 1;
		p = nl + 1;
	}
	if (last && n > 0) {
		smtp_dot_stuff(out, p, n);
		n = 0;
	}
	return n;
}

/*
 * body_mem - the whole body from the message's memory copy, with our
 * Received: and the dot, in one write, made right in the cork.
 */
static void
body_mem(struct conn *c)
{
	const struct mta_env *env = c->job->env;
	size_t n = env->mem.len;

	c->corked = 1;
	buf_reserve(&c->cork, n + n / 32 + 64 +
	    (env->received ? strlen(env->received) : 0));
	if (env->received != NULL)
		buf_puts(&c->cork, env->received);
	stuff_lines(&c->cork, env->mem.data, n, 1);
	buf_append(&c->cork, ".\r\n", 3);
	enter_state(c, CS_DOT);
	timeout(c, policy_current()->limits.t_dot);
	pipeline_next(c);
	uncork(c);
	if (c->cork.cap > CONN_CHUNK)
		buf_free(&c->cork);	/* the write has its own copy */
}

/* stuff - complete lines of carry to out, dot-stuffed */
static void
stuff(struct conn *c, int last)
{
	size_t n = buf_avail(&c->carry);

	buf_consume(&c->carry, n - stuff_lines(&c->out, buf_head(&c->carry),
	    n, last));
}

/* body_sent - a chunk left: read the next one */
static void
body_sent(void *arg, int status)
{
	struct conn *c = arg;

	if (status == 0 && c->state == CS_BODY && c->job != NULL && alive(c))
		body_read(c);
	conn_unref(c);
}

/* body_end - the rest of the body and the terminating dot */
static void
body_end(struct conn *c)
{
	stuff(c, 1);
	buf_append(&c->out, ".\r\n", 3);
	enter_state(c, CS_DOT);
	timeout(c, policy_current()->limits.t_dot);
	c->corked = 1;
	send_raw(c, c->out.data, c->out.len, NULL);
	pipeline_next(c);
	uncork(c);
	if (c->fd != -1)
		close(c->fd);
	c->fd = -1;
}

static void
read_cb(uv_fs_t *req)
{
	struct conn *c = req->data;
	ssize_t n = req->result;

	uv_fs_req_cleanup(req);
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
	timeout(c, policy_current()->limits.t_data);
	if (c->off >= c->job->env->bodylen)
		body_end(c);
	else {
		stuff(c, 0);
		if (c->out.len == 0)
			body_read(c);
		else
			send_raw(c, c->out.data, c->out.len, body_sent);
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
	c->refs++;
}

/*
 * Input
 */

/* on_reply - one complete reply in the current state */
static void
on_reply(struct conn *c, const struct smtp_reply *rep)
{
	char diag[MTA_DIAGLEN], status[16];
	int cls = rep->code / 100;

	reply_diag(rep, diag, sizeof(diag));
	reply_status(rep, status, sizeof(status));
	if (rep->code == 421 && c->state != CS_QUIT) {
		conn_hop_failed(c, 4, status, "%s", diag);
		return;
	}
	c->replies++;
	switch (c->state) {
	case CS_BANNER:
		if (cls != 2)
			conn_hop_failed(c, 4, "4.4.2", "%s refused to talk to "
			    "me: %s", c->remote, diag);
		else
			send_ehlo(c, 0);
		break;
	case CS_EHLO:
		if (cls == 2) {
			smtp_ehlo_parse(rep, &c->caps);
			session_ready(c);
		} else
			send_ehlo(c, 1);
		break;
	case CS_HELO:
		if (cls == 2)
			session_ready(c);
		else
			conn_hop_failed(c, 4, "4.4.2", "%s refused HELO: %s",
			    c->remote, diag);
		break;
	case CS_STARTTLS:
		if (cls == 2)
			tls_begin(c);
		else if (c->tlsmode == POLICY_UPTLS_STARTTLS)
			conn_hop_failed(c, 4, "4.7.5", "%s refused STARTTLS: "
			    "%s", c->remote, diag);
		else {
			c->notls = 1;
			session_ready(c);
		}
		break;
	case CS_AUTH:
		if (auth_next(c, rep) == 1)
			txn_start(c);
		break;
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
	case CS_QUIT:
		conn_close(c);
		break;
	case CS_IDLE:
		conn_close(c);	/* nothing asked: no reply wanted */
		break;
	default:
		conn_hop_failed(c, 4, "4.5.0", "unexpected reply in state %s:"
		    " %s", conn_state_names[c->state], diag);
		break;
	}
}

static void
feed_replies(struct conn *c, const char *p, size_t n)
{
	struct smtp_reply rep;
	int rc;

	smtp_reply_feed(&c->rp, p, n);
	while (c->tcp_open && c->state != CS_CLOSING &&
	    !uv_is_closing((uv_handle_t *)&c->tcp) &&
	    (rc = smtp_reply_get(&c->rp, &rep)) != 0) {
		if (rc == -1) {
			conn_hop_failed(c, 4, "4.5.0", "bad reply from %s: %s",
			    c->remote, c->rp.error);
			return;
		}
		on_reply(c, &rep);
		smtp_reply_clear(&rep);
	}
}

/* on_tls_input - ciphertext in: handshake progress or plaintext */
static void
on_tls_input(struct conn *c, const char *p, size_t n)
{
	enum tls_state st;

	buf_reset(&c->plain);
	st = tls_conn_feed(c->tls, p, n, &c->plain);
	if (st == TLS_FAILED) {
		tls_failed(c);
		return;
	}
	if (st == TLS_CLOSED) {
		conn_hop_failed(c, 4, "4.4.2", "%s closed the TLS session",
		    c->remote);
		return;
	}
	if (c->state == CS_HANDSHAKE && st == TLS_OPEN) {
		log_debug("mta: conn=%llu relay=%s tls=%s",
		    (unsigned long long)c->id, log_word(c->remote),
		    tls_conn_info(c->tls));
		if (c->tlsmode == POLICY_UPTLS_SMTPS) {
			enter_state(c, CS_BANNER);
			timeout(c, policy_current()->limits.t_cmd);
		} else
			send_ehlo(c, 0);
	}
	if (c->plain.len > 0)
		feed_replies(c, c->plain.data, c->plain.len);
}

static void
alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
	static char in[64 * 1024];

	*b = uv_buf_init(in, sizeof(in));
}

static void
on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
	struct conn *c = s->data;

	if (n == 0)
		return;
	if (n < 0) {
		if (c->state == CS_QUIT)
			conn_close(c);
		else
			conn_hop_failed(c, 4, "4.4.2", "lost connection with "
			    "%s in state %s", c->remote,
			    conn_state_names[c->state]);
		return;
	}
	if (c->tls != NULL)
		on_tls_input(c, b->base, (size_t)n);
	else
		feed_replies(c, b->base, (size_t)n);
}

/*
 * Connecting
 */

static void
on_connect(uv_connect_t *req, int status)
{
	struct conn *c = req->data;

	if (status == UV_ECANCELED)
		return;
	if (status != 0) {
		conn_hop_failed(c, 4, "4.4.1", "connect to %s: %s", c->remote,
		    uv_strerror(status));
		return;
	}
	smtp_reply_free(&c->rp);
	smtp_reply_init(&c->rp, CONN_MAXLINE, CONN_MAXLINES);
	if (uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, on_read) != 0) {
		conn_hop_failed(c, 4, "4.4.1", "read from %s failed",
		    c->remote);
		return;
	}
	timeout(c, policy_current()->limits.t_cmd);
	if (c->tlsmode == POLICY_UPTLS_SMTPS)
		tls_begin(c);
	else
		enter_state(c, CS_BANNER);
}

/* set_mark - the upstream mark the netfilter rules exempt (DESIGN.md) */
static void
set_mark(struct conn *c)
{
	uv_os_fd_t fd;
	int mark = MTA_SO_MARK;

	if (uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0 &&
	    setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof(mark)) == -1)
		log_debug("mta: SO_MARK: %s", strerror(errno));
}

/*
 * set_bind - hide-box: connect from the client's own address.  The
 * netfilter rules send the replies to this socket (socket --transparent).
 * Without it the box connects from its own address: delivery matters
 * more than hiding, and the log says so.
 */
static void
set_bind(struct conn *c)
{
	struct sockaddr_storage ss = c->dest->bind;
	uv_os_fd_t fd;
	int one = 1, rc;

	if (ss.ss_family == 0 ||
	    ss.ss_family != c->hop[c->hopi].addr.ss_family)
		return;
	if (ss.ss_family == AF_INET)
		((struct sockaddr_in *)&ss)->sin_port = 0;
	else
		((struct sockaddr_in6 *)&ss)->sin6_port = 0;
	if (uv_fileno((uv_handle_t *)&c->tcp, &fd) != 0 ||
	    setsockopt(fd, ss.ss_family == AF_INET6 ? SOL_IPV6 : SOL_IP,
	    ss.ss_family == AF_INET6 ? IPV6_TRANSPARENT : IP_TRANSPARENT,
	    &one, sizeof(one)) == -1) {
		log_warnx("mta: conn=%llu hide-box: IP_TRANSPARENT: %s",
		    (unsigned long long)c->id, strerror(errno));
		return;
	}
	if ((rc = uv_tcp_bind(&c->tcp, (struct sockaddr *)&ss, 0)) != 0)
		log_warnx("mta: conn=%llu hide-box: bind: %s",
		    (unsigned long long)c->id, uv_strerror(rc));
}

/* conn_connect - a fresh socket to hop[hopi] */
static void
conn_connect(struct conn *c)
{
	struct mta_hop *h = &c->hop[c->hopi];
	char a[ADDR_STRLEN];
	int rc;

	enter_state(c, CS_CONNECT);
	addr_fmt_ip((struct sockaddr *)&h->addr, a, sizeof(a));
	if (h->name[0] != '\0' && h->name[0] != '[' && strcmp(h->name, a))
		snprintf(c->remote, sizeof(c->remote), "%s[%s]", h->name, a);
	else
		snprintf(c->remote, sizeof(c->remote), "[%s]", a);
	c->auth_step = 0;
	if ((rc = uv_tcp_init_ex(c->loop, &c->tcp, h->addr.ss_family)) != 0) {
		conn_hop_failed(c, 4, "4.4.1", "socket: %s", uv_strerror(rc));
		return;
	}
	c->tcp.data = c;
	c->tcp_open = 1;
	c->refs++;
	set_mark(c);
	set_bind(c);
	uv_tcp_nodelay(&c->tcp, 1);
	c->creq.data = c;
	timeout(c, policy_current()->limits.t_connect);
	if ((rc = uv_tcp_connect(&c->creq, &c->tcp,
	    (struct sockaddr *)&h->addr, on_connect)) != 0)
		conn_hop_failed(c, 4, "4.4.1", "connect to %s: %s", c->remote,
		    uv_strerror(rc));
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
	c->fd = -1;
	c->refs = 1;			/* the timer */
	buf_init(&c->plain);
	buf_init(&c->cork);
	buf_init(&c->carry);
	buf_init(&c->out);
	smtp_reply_init(&c->rp, CONN_MAXLINE, CONN_MAXLINES);
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
		c->auth_user = p->relay.auth_user;
		c->auth_pass = p->relay.auth_pass;
		c->auth_plaintext = p->relay.auth_plaintext;
		/* no context: tls_begin fails, never goes unverified */
		if ((c->verify = p->relay.verify))
			c->vctx = relay_vctx(&p->relay);
		enter_state(c, CS_RESOLVE);
		timeout(c, p->queue.resolve_timeout);
		c->refs++;
		mta_dns_host(loop, p->relay.host, p->relay.port, on_resolved,
		    c);
		break;
	case POLICY_ROUTE_MX:
		c->tlsmode = POLICY_UPTLS_OPPORTUNISTIC;
		enter_state(c, CS_RESOLVE);
		timeout(c, p->queue.resolve_timeout);
		c->refs++;
		mta_dns_mx(loop, d->domain, 25, on_resolved, c);
		break;
	}
	return 0;
}

void
mta_deliver_init(void)
{
	draining = 0;
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
	 * A connection still resolving has no transaction to finish: its
	 * job goes back untouched, the answer is ignored, and lookups stop
	 * soon, so that a slow resolver does not hold the shutdown.
	 */
	for (c = LIST_FIRST(&conns); c != NULL; c = next) {
		next = LIST_NEXT(c, entry);
		if (c->state != CS_RESOLVE)
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
		c->retry_hop = 0;
		if (c->state == CS_RESOLVE)
			enter_state(c, CS_INIT);	/* ignore the answer */
		snprintf(c->lasterr, sizeof(c->lasterr), "shutting down");
		conn_close(c);
	}
	mta_dns_stop();		/* lookups not started answer now */
	SSL_CTX_free(relay_ctx);
	relay_ctx = NULL;
	free(relay_ctx_ca);
	relay_ctx_ca = NULL;
}
