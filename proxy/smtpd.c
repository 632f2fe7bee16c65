/*
 * smtpd.c - the server side of every proxied SMTP session, on both
 * listeners: the RFC 5321 state machine toward the client, its limits and
 * timeouts, STARTTLS toward the client, pipelining (input is a stream,
 * replies leave in command order), and the path chosen at accept:
 *
 *  - live relay: outgoing, and policy honours the server the client
 *    dialled.  The upstream leg is relay.c; the client sees the upstream's
 *    own greeting and replies, with the EHLO capabilities cut down to
 *    what both legs support.  AUTH passes through.  DATA is parsed here
 *    and re-emitted dot-stuffed, so only CRLF "." CRLF ever ends it.
 *
 *  - MTA path: every other session.  Recipients go through policy, the
 *    message goes to mta/, and 250 is said only once it is queued.
 *
 * Message content with a bare CR, a bare LF or a NUL, or a line over the
 * text line limit, is refused as a whole (550 5.6.0 at the final dot);
 * nothing of it reaches the MTA, and the live relay drops its upstream
 * leg instead of ending the upstream DATA.  Commands must end in CRLF.
 */
#include <sys/queue.h>
#include <sys/socket.h>
#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

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
#include "relay.h"

#define SMTPD_AUTHLINE		12288	/* RFC 4954 4. */
#define SMTPD_MAXPIPE		100	/* replies owed before input stops */
#define SMTPD_OUT_HIWAT		(64 * 1024)
#define SMTPD_OUT_LOWAT		(16 * 1024)
#define SMTPD_BODY_CHUNK	(64 * 1024)
#define SMTPD_RATE_GRACE	30	/* seconds of DATA before min_rate */
#define SMTPD_ENVID_MAX		100
#define SMTPD_ORCPT_MAX		500
#define SMTPD_LOG_RCPTS		5	/* recipients named in a log line */

enum smtpd_state {
	S_CONNECT = 0,	/* live relay: waiting for the upstream greeting */
	S_CMD,		/* reading commands */
	S_WAIT,		/* input held until a gating command's reply */
	S_AUTH,		/* live relay: the next line answers a 334 */
	S_DATA,		/* reading message content */
	S_TLS,		/* STARTTLS handshake with the client */
	S_QUIT,		/* last reply queued, shutting the client side */
	S_CLOSED	/* handles closing */
};

static const char *smtpd_state_names[] = {
	"connect", "cmd", "wait", "auth", "data", "tls", "quit", "closed"
};

enum cmd {
	C_NONE = 0, C_GREETING, C_EHLO, C_HELO, C_MAIL, C_RCPT, C_DATA, C_DOT,
	C_RSET, C_NOOP, C_QUIT, C_VRFY, C_EXPN, C_HELP, C_AUTH, C_STARTTLS,
	C_UNKNOWN
};

/* one reply owed to the client, in command order */
struct pending {
	TAILQ_ENTRY(pending)	 entry;
	enum cmd		 cmd;
	int			 upstream;	/* answered by the relay */
	int			 gate;		/* input waits for it */
	int			 silent;	/* the client does not see it */
	int			 ready;
	int			 code;
	struct buf		 text;		/* CRLF lines */
};

struct rcpt {
	char			*addr;
	char			*orcpt;
	unsigned		 notify;
	enum policy_route	 route;
};

/* the current mail transaction */
struct txn {
	char			*from;		/* NULL: no MAIL yet */
	char			*envid;
	enum mta_ret		 ret;
	uint64_t		 size;
	int			 body8;
	int			 smtputf8;
	unsigned		 nsent;		/* RCPTs taken for a reply */
	unsigned		 nok;		/* RCPTs accepted */
	unsigned		 ndiscard;	/* accepted by a discard rule */
	unsigned		 nfwd;		/* live relay: passed upstream */
	struct rcpt		*rcpts;		/* MTA path */
	struct buf		 tolog;		/* "<a>,<b>" for the log line */
	unsigned		 nlog;		/* recipients in tolog */
	uint64_t		 start;		/* uv_now at MAIL */
};

struct session {
	enum smtpd_state	 state;
	struct proxy_conn	 conn;		/* conn.worker: its worker */
	struct proxy_sessions	*set;		/* that worker's sessions */
	struct policy		*pol;		/* conn.policy */
	uv_loop_t		*loop;
	uv_tcp_t		*client;	/* owned */
	uv_timer_t		 timer;
	uint64_t		 t_due;		/* timeout (loop ms), t_ms long */
	uint64_t		 t_ms;
	uv_shutdown_t		 sreq;
	int			 handles;	/* open handles; free at 0 */
	int			 relay_mode;
	struct relay		*relay;
	int			 relay_lost;	/* upstream leg dropped */
	struct tls_conn		*tls;
	struct tls_cork		 out;		/* replies not yet written */
	SSL_CTX			*tls_ctx;	/* referenced, or NULL */
	struct buf		 plain;		/* decrypted input */
	struct smtp_reader	 in;
	TAILQ_HEAD(, pending)	 replies;
	unsigned		 npending;
	int			 reading;
	int			 out_wait;	/* paused for the client */
	int			 rderr;		/* EOF or error, read while
						   input was held */
	const char		*disposition;	/* why the session ended */
	char			 host[256];
	char			 cstr[ADDR_STRLEN];
	char			 dstr[ADDR_STRLEN];
	char			*helo;
	int			 authed;
	unsigned		 errors;
	unsigned		 msgs;
	/* what the client was offered */
	int			 offer_tls;
	int			 cap_pipelining;
	int			 cap_enhanced;
	int			 cap_8bit;
	int			 cap_dsn;
	int			 cap_auth;
	int			 cap_smtputf8;
	uint64_t		 cap_size;
	struct txn		 txn;
	/* verify-recipients: the RCPT waiting for the server's answer */
	struct callout		*callout;
	struct rcpt		 vrcpt;
	/* live relay: every recipient discarded, the text is dropped here */
	int			 relay_sink;
	/* DATA */
	struct smtp_data	 data;
	const char		*refuse;	/* reply at the dot, or NULL */
	const char		*refuse_why;	/* for the log */
	struct buf		 body;		/* content waiting to go out */
	uv_buf_t		 run[RELAY_MAXBUFS];	/* live relay: content
					   runs still in s->in, to send */
	unsigned		 nrun;
	size_t			 runlen;
	uint64_t		 rate_start;	/* min_rate window */
	uint64_t		 rate_bytes;	/* raw bytes read in it */
	struct mta_msg		*msg;
	int			 committing;	/* in set->commits */
	int			 close_after_commit;
	TAILQ_ENTRY(session)	 entry;
	TAILQ_ENTRY(session)	 centry;	/* set->commits */
};

/*
 * The sessions of one worker, used by that worker's thread only (n is
 * read by the daemon's thread for its drain: atomic).  commits: the
 * sessions whose message is with the MTA, found again by id when its
 * answer comes through the worker's door.
 */
struct proxy_sessions {
	TAILQ_HEAD(, session)	 list;
	TAILQ_HEAD(, session)	 commits;
	atomic_uint		 n;
	int			 shutting_down;
	int			 stopping;	/* close now, even committing */
};

/*
 * TLS contexts, shared by every worker under smtpd_tls_mtx (taken once
 * per session, never per byte): the server one is made once per policy
 * snapshot (the snapshot held referenced so that its address is not
 * reused), and each session takes its own reference to it; the client
 * one is made once and kept.
 */
static pthread_mutex_t		 smtpd_tls_mtx = PTHREAD_MUTEX_INITIALIZER;
static SSL_CTX			*srv_ctx;
static SSL_CTX			*cli_ctx;
static struct policy		*srv_ctx_pol;

static void	session_wake(struct session *);
static void	session_flush(struct session *);
static void	session_close(struct session *, const char *);
static void	session_arm(struct session *, unsigned);
static void	session_read_cb(uv_stream_t *, ssize_t, const uv_buf_t *);
static void	relay_greeting_cb(void *, const struct smtp_reply *);
static void	relay_reply_cb(void *, const struct smtp_reply *);
static void	relay_fail_cb(void *, const char *, const struct smtp_reply *);
static void	relay_drained_cb(void *);

static const struct relay_cb session_relay_cb = {
	relay_greeting_cb, relay_reply_cb, relay_fail_cb, relay_drained_cb
};

static void
enter_state(struct session *s, enum smtpd_state st)
{
	if (s->state == st)
		return;
	log_debug("session=%llu state %s -> %s",
	    (unsigned long long)s->conn.id, smtpd_state_names[s->state],
	    smtpd_state_names[st]);
	s->state = st;
}

/* ---------------------------------------------------------------- TLS */

/* client_ctx - the TLS client context of the upstream legs, made once
 * and never freed (each connection holds its own reference anyway) */
static SSL_CTX *
client_ctx(void)
{
	SSL_CTX *ctx;
	char err[256];

	pthread_mutex_lock(&smtpd_tls_mtx);
	if (cli_ctx == NULL &&
	    (cli_ctx = tls_ctx_client(TLS_VERIFY_NONE, NULL, NULL, err,
	    sizeof(err))) == NULL)
		log_warnx("tls: client context: %s", err);
	ctx = cli_ctx;
	pthread_mutex_unlock(&smtpd_tls_mtx);
	return ctx;
}

/* tls_contexts - the server context for pol, referenced for the caller
 * (NULL: no STARTTLS) */
static SSL_CTX *
tls_contexts(struct policy *pol)
{
	SSL_CTX *ctx;
	char err[256];

	pthread_mutex_lock(&smtpd_tls_mtx);
	if (srv_ctx_pol != pol) {
		SSL_CTX_free(srv_ctx);
		srv_ctx = NULL;
		policy_unref(srv_ctx_pol);
		srv_ctx_pol = policy_ref(pol);
		if (pol->tls_cert != NULL && pol->tls_key != NULL &&
		    (srv_ctx = tls_ctx_server(pol->tls_cert, pol->tls_key,
		    err, sizeof(err))) == NULL)
			log_warnx("tls: no STARTTLS offered: %s", err);
	}
	if ((ctx = srv_ctx) != NULL)
		SSL_CTX_up_ref(ctx);
	pthread_mutex_unlock(&smtpd_tls_mtx);
	return ctx;
}

/* ---------------------------------------------------------------- output */

static void
session_written(void *arg, int status)
{
	struct session *s = arg;

	if (s->state == S_CLOSED)
		return;
	if (status < 0) {
		session_close(s, "client-write-error");
		return;
	}
	if (s->out_wait && uv_stream_get_write_queue_size(
	    (uv_stream_t *)s->client) < SMTPD_OUT_LOWAT) {
		s->out_wait = 0;
		session_wake(s);
	}
}

/*
 * session_write - to the client once the input being handled is done
 * with: the replies to a pipelined group leave in one write (tls_cork)
 */
static void
session_write(struct session *s, const void *p, size_t n)
{
	uv_buf_t b;

	if (s->state == S_CLOSED || n == 0)
		return;
	b = uv_buf_init((char *)(uintptr_t)p, (unsigned int)n);
	if (tls_cork_add(&s->out, s->tls, &b, 1) < 0)
		session_close(s, "client-write-error");
}

/* strip_enhanced - "250 2.1.0 Ok" to "250 Ok" when not offered */
static void
strip_enhanced(char *line)
{
	char *p = line + 4;
	size_t n;

	if (strlen(line) < 4 || !isdigit((unsigned char)p[0]) || p[1] != '.')
		return;
	n = strspn(p, "0123456789.");
	if (p[n] == ' ')
		memmove(p, p + n + 1, strlen(p + n + 1) + 1);
}

static struct pending *
pending_new(struct session *s, enum cmd cmd, int upstream)
{
	struct pending *p;

	p = xcalloc(1, sizeof(*p));
	p->cmd = cmd;
	p->upstream = upstream;
	buf_init(&p->text);
	TAILQ_INSERT_TAIL(&s->replies, p, entry);
	s->npending++;
	return p;
}

static void
pending_free(struct session *s, struct pending *p)
{
	TAILQ_REMOVE(&s->replies, p, entry);
	s->npending--;
	buf_free(&p->text);
	free(p);
}

/* pending_fill - set a reply's text from "DDD text" */
static void
pending_fill(struct session *s, struct pending *p, const char *line)
{
	char tmp[1024];

	snprintf(tmp, sizeof(tmp), "%s", line);
	if (!s->cap_enhanced && s->relay_mode)
		strip_enhanced(tmp);
	p->code = atoi(tmp);
	buf_reset(&p->text);
	buf_puts(&p->text, tmp);
	buf_append(&p->text, "\r\n", 2);
	p->ready = 1;
}

/* gate - a reply that input waits for: S_WAIT until it is written */
static struct pending *
gate(struct session *s, enum cmd cmd, int upstream)
{
	struct pending *p;

	enter_state(s, S_WAIT);
	p = pending_new(s, cmd, upstream);
	p->gate = 1;
	return p;
}

/* reply - a local reply to cmd, in its place among the owed ones */
static void PRINTF(3, 4)
reply(struct session *s, enum cmd cmd, const char *fmt, ...)
{
	char line[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	pending_fill(s, pending_new(s, cmd, 0), line);
	session_flush(s);
}

/* reply_gate - a local reply that input waits for */
static void PRINTF(3, 4)
reply_gate(struct session *s, enum cmd cmd, const char *fmt, ...)
{
	char line[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	pending_fill(s, gate(s, cmd, 0), line);
	session_flush(s);
}

/* ---------------------------------------------------------------- closing */

static void
session_free(struct session *s)
{
	struct pending *p;

	while ((p = TAILQ_FIRST(&s->replies)) != NULL)
		pending_free(s, p);
	TAILQ_REMOVE(&s->set->list, s, entry);
	s->set->n--;
	tls_cork_free(&s->out);
	tls_conn_free(s->tls);
	SSL_CTX_free(s->tls_ctx);
	smtp_reader_free(&s->in);
	buf_free(&s->plain);
	buf_free(&s->body);
	free(s->helo);
	proxy_conn_done(&s->conn);
	policy_unref(s->pol);
	free(s->client);
	free(s);
}

static void
session_close_cb(uv_handle_t *h)
{
	struct session *s = h->data;

	if (--s->handles == 0)
		session_free(s);
}

static void	txn_reset(struct session *);
static void	verify_cancel(struct session *);

/* session_close - log the end, drop the upstream, close both handles */
static void
session_close(struct session *s, const char *disposition)
{
	if (s->state == S_CLOSED)
		return;
	if (s->committing && s->set->stopping) {
		/* the MTA answers by id: an answer for no session is dropped */
		TAILQ_REMOVE(&s->set->commits, s, centry);
		s->committing = 0;
		log_info("session=%llu commit outstanding at stop",
		    (unsigned long long)s->conn.id);
	}
	if (s->committing) {
		/* the MTA still owes us the commit: close when it answers */
		s->close_after_commit = 1;
		if (s->disposition == NULL)
			s->disposition = disposition;
		if (s->reading)
			uv_read_stop((uv_stream_t *)s->client);
		s->reading = 0;
		return;
	}
	if (s->disposition != NULL)
		disposition = s->disposition;
	log_info("session=%llu client=%s orig_dst=%s dir=%s disposition=%s "
	    "messages=%u errors=%u", (unsigned long long)s->conn.id, s->cstr,
	    s->dstr, policy_dir_name(s->conn.dir), disposition, s->msgs,
	    s->errors);
	enter_state(s, S_CLOSED);
	if (s->msg != NULL) {
		mta_msg_abort(s->msg);
		s->msg = NULL;
	}
	txn_reset(s);
	verify_cancel(s);
	relay_close(s->relay);
	s->relay = NULL;
	tls_cork_flush(&s->out);	/* what libuv would have tried too */
	tls_cork_free(&s->out);
	/* the daemon's final walk may have closed them already */
	if (!uv_is_closing((uv_handle_t *)s->client))
		uv_close((uv_handle_t *)s->client, session_close_cb);
	if (!uv_is_closing((uv_handle_t *)&s->timer))
		uv_close((uv_handle_t *)&s->timer, session_close_cb);
}

/*
 * session_abort - the last replies did not get out within the command
 * timeout: the client reads nothing (its window stays shut).  Reset the
 * connection rather than leave the kernel an orphan socket to probe.
 */
static void
session_abort(struct session *s)
{
	struct linger lg = { 1, 0 };
	uv_os_fd_t fd;

	log_info("session=%llu client=%s output stalled: %zu bytes unread, "
	    "connection reset", (unsigned long long)s->conn.id, s->cstr,
	    uv_stream_get_write_queue_size((uv_stream_t *)s->client));
	if (uv_fileno((uv_handle_t *)s->client, &fd) == 0)
		(void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	session_close(s, "output-stalled");
}

static void
session_shutdown_cb(uv_shutdown_t *req, int status)
{
	struct session *s = req->data;

	session_close(s, s->disposition != NULL ? s->disposition : "quit");
}

/* session_quit - everything owed is written: shut down, then close */
static void
session_quit(struct session *s, const char *disposition)
{
	if (s->state == S_CLOSED || s->state == S_QUIT)
		return;
	if (s->disposition == NULL)
		s->disposition = disposition;
	enter_state(s, S_QUIT);
	if (s->reading)
		uv_read_stop((uv_stream_t *)s->client);
	s->reading = 0;
	relay_close(s->relay);
	s->relay = NULL;
	/* a client that reads nothing more must not hold us: see
	 * session_timeout_cb */
	session_arm(s, s->pol->limits.t_cmd);
	if (s->tls == NULL && tls_cork_finish(&s->out) == 1) {
		session_close(s, s->disposition);
		return;
	}
	tls_cork_flush(&s->out);	/* the last replies before the FIN */
	if (s->tls != NULL)
		tls_conn_close(s->tls);
	s->sreq.data = s;
	if (uv_shutdown(&s->sreq, (uv_stream_t *)s->client,
	    session_shutdown_cb) != 0)
		session_close(s, s->disposition);
}

/* session_421 - say 421 now (after what is ready) and go */
static void PRINTF(3, 4)
session_421(struct session *s, const char *disposition, const char *fmt, ...)
{
	struct pending *p, *next;
	char line[512];
	va_list ap;

	if (s->state == S_CLOSED || s->state == S_QUIT)
		return;
	/* replies already known go first; the unknown ones never come */
	for (p = TAILQ_FIRST(&s->replies); p != NULL && p->ready; p = next) {
		next = TAILQ_NEXT(p, entry);
		if (!p->silent)
			session_write(s, buf_head(&p->text),
			    buf_avail(&p->text));
		pending_free(s, p);
	}
	while ((p = TAILQ_FIRST(&s->replies)) != NULL)
		pending_free(s, p);
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (!s->cap_enhanced && s->relay_mode)
		strip_enhanced(line);
	session_write(s, line, strlen(line));
	session_write(s, "\r\n", 2);
	session_quit(s, disposition);
}

/* ---------------------------------------------------------------- timers */

static void
session_timeout_cb(uv_timer_t *t)
{
	struct session *s = t->data;
	uint64_t now = uv_now(s->loop);

	if (now < s->t_due) {
		/* re-armed since it was set: the rest of the time */
		uv_timer_start(&s->timer, session_timeout_cb, s->t_due - now,
		    s->t_ms);
		return;
	}
	switch (s->state) {
	case S_CMD:
	case S_AUTH:
	case S_WAIT:
		/* waiting on the upstream or the MTA is not idling */
		if (TAILQ_FIRST(&s->replies) != NULL) {
			uv_timer_again(&s->timer);
			return;
		}
		session_421(s, "timeout", "421 4.4.2 %s Error: timeout exceeded",
		    s->host);
		break;
	case S_DATA:
		if (!s->reading) {
			/* paused for a slow upstream: not the client's fault */
			uv_timer_again(&s->timer);
			return;
		}
		session_421(s, "timeout", "421 4.4.2 %s Error: timeout exceeded",
		    s->host);
		break;
	case S_TLS:
		session_close(s, "tls-timeout");
		break;
	case S_QUIT:
		session_abort(s);
		break;
	default:
		break;
	}
}

/*
 * session_arm - the timeout from now.  It runs for every command and
 * every read, so it only notes the deadline; the timer is moved only when
 * it would fire too late (session_timeout_cb sets it again for what is
 * left when it fires early).
 */
static void
session_arm(struct session *s, unsigned secs)
{
	uint64_t ms = (uint64_t)secs * 1000;

	s->t_due = uv_now(s->loop) + ms;
	s->t_ms = ms;
	if (uv_is_active((uv_handle_t *)&s->timer) &&
	    uv_timer_get_due_in(&s->timer) <= ms)
		return;
	uv_timer_start(&s->timer, session_timeout_cb, ms, ms);
}

/* ---------------------------------------------------------------- txn */

static void
txn_reset(struct session *s)
{
	struct txn *t = &s->txn;
	unsigned i;

	free(t->from);
	free(t->envid);
	for (i = 0; i < t->nok; i++) {
		if (t->rcpts == NULL)
			break;
		free(t->rcpts[i].addr);
		free(t->rcpts[i].orcpt);
	}
	free(t->rcpts);
	buf_free(&t->tolog);
	memset(t, 0, sizeof(*t));
}

/* log_message - the one line per message: what happened and why */
static void
log_message(struct session *s, const char *disposition, const char *replyl)
{
	char rbuf[256];
	size_t n;
	uint64_t now = uv_now(s->loop);

	snprintf(rbuf, sizeof(rbuf), "%s", replyl != NULL ? replyl : "");
	n = strcspn(rbuf, "\r\n");
	rbuf[n] = '\0';
	/* the reply is the upstream's on the live relay: escaped, like
	 * every value from outside */
	log_info("session=%llu client=%s orig_dst=%s dir=%s from=<%s> "
	    "to=%s%s nrcpt=%u size=%llu disposition=%s delay=%.3fs%s%s "
	    "reply=\"%s\"",
	    (unsigned long long)s->conn.id, s->cstr, s->dstr,
	    policy_dir_name(s->conn.dir), log_word(s->txn.from),
	    s->txn.tolog.len ? s->txn.tolog.data : "-",
	    s->txn.nlog > SMTPD_LOG_RCPTS ? ",..." : "", s->txn.nlog,
	    (unsigned long long)s->data.size, disposition,
	    (double)(now - s->txn.start) / 1000.0,
	    s->refuse_why ? " reason=" : "", s->refuse_why ? s->refuse_why : "",
	    log_vis(rbuf));
}

static void
tolog_add(struct session *s, const char *addr)
{
	if (s->txn.nlog++ >= SMTPD_LOG_RCPTS)
		return;
	if (s->txn.tolog.len > 0)
		buf_append(&s->txn.tolog, ",", 1);
	buf_printf(&s->txn.tolog, "<%s>", log_word(addr));
}

/* ---------------------------------------------------------------- EHLO */

/* cap_line - add one capability line to an EHLO reply being built */
static void
cap_line(struct buf *b, const char *s)
{
	buf_printf(b, "250-%s\r\n", s);
}

/* ehlo_finish - turn the last "250-" into "250 " */
static void
ehlo_finish(struct buf *b)
{
	char *last;

	b->data[b->len] = '\0';
	if (b->len < 2)
		return;
	b->data[b->len - 2] = '\0';
	last = strrchr(b->data, '\n');
	b->data[b->len - 2] = '\r';
	last = last == NULL ? b->data : last + 1;
	if (strncmp(last, "250-", 4) == 0)
		last[3] = ' ';
}

static void
ehlo_local(struct session *s, struct pending *p)
{
	char tmp[64];

	buf_printf(&p->text, "250-%s Hello %s [%s]\r\n", s->host, s->helo,
	    addr_fmt_ip((struct sockaddr *)&s->conn.client, tmp, sizeof(tmp)));
	cap_line(&p->text, "PIPELINING");
	snprintf(tmp, sizeof(tmp), "SIZE %llu", (unsigned long long)s->cap_size);
	cap_line(&p->text, tmp);
	cap_line(&p->text, "8BITMIME");
	cap_line(&p->text, "ENHANCEDSTATUSCODES");
	cap_line(&p->text, "DSN");
	cap_line(&p->text, "SMTPUTF8");
	if (s->offer_tls && s->tls == NULL)
		cap_line(&p->text, "STARTTLS");
	ehlo_finish(&p->text);
}

/* ehlo_filter - the upstream's EHLO reply, cut to what both legs do */
static void
ehlo_filter(struct session *s, const struct smtp_reply *rep, struct buf *out)
{
	char kw[32], tmp[64];
	const char *line;
	size_t len, k;
	unsigned i;
	uint64_t up;

	s->cap_pipelining = s->cap_enhanced = s->cap_8bit = s->cap_dsn = 0;
	s->cap_auth = s->cap_smtputf8 = 0;
	s->cap_size = s->pol->limits.size;
	line = smtp_reply_line(rep, 0, &len);
	buf_printf(out, "250-%.*s\r\n", (int)len, line);
	for (i = 1; i < rep->nlines; i++) {
		line = smtp_reply_line(rep, i, &len);
		for (k = 0; k < len && k + 1 < sizeof(kw) && line[k] != ' '; k++)
			kw[k] = (char)toupper((unsigned char)line[k]);
		kw[k] = '\0';
		if (strcmp(kw, "SIZE") == 0) {
			up = strtoull(line + k, NULL, 10);
			if (up != 0 && up < s->cap_size)
				s->cap_size = up;
			continue;	/* emitted below, merged */
		} else if (strcmp(kw, "PIPELINING") == 0)
			s->cap_pipelining = 1;
		else if (strcmp(kw, "ENHANCEDSTATUSCODES") == 0)
			s->cap_enhanced = 1;
		else if (strcmp(kw, "8BITMIME") == 0)
			s->cap_8bit = 1;
		else if (strcmp(kw, "DSN") == 0)
			s->cap_dsn = 1;
		else if (strcmp(kw, "SMTPUTF8") == 0)
			s->cap_smtputf8 = 1;
		else if (strcmp(kw, "AUTH") == 0 && (s->tls != NULL ||
		    relay_auth_in_clear(s->relay)))
			s->cap_auth = 1;
		else
			continue;	/* CHUNKING, BDAT, STARTTLS, unknown */
		buf_printf(out, "250-%.*s\r\n", (int)len, line);
	}
	snprintf(tmp, sizeof(tmp), "SIZE %llu", (unsigned long long)s->cap_size);
	cap_line(out, tmp);
	if (s->offer_tls && s->tls == NULL)
		cap_line(out, "STARTTLS");
	ehlo_finish(out);
}

/* ---------------------------------------------------------------- flush */

static void	data_begin(struct session *);
static void	tls_begin(struct session *);

/* apply_upstream - what an upstream reply does to our view of the session */
static void
apply_upstream(struct session *s, struct pending *p)
{
	int ok = p->code >= 200 && p->code < 300;

	switch (p->cmd) {
	case C_MAIL:
		if (!ok)
			txn_reset(s);
		break;
	case C_RCPT:
		if (ok && s->txn.from != NULL)
			s->txn.nok++;
		break;
	case C_RSET:
	case C_EHLO:
	case C_HELO:
		if (ok)
			txn_reset(s);
		break;
	default:
		break;
	}
}

/* apply_gate - the state after a gating command's reply */
static void
apply_gate(struct session *s, struct pending *p)
{
	switch (p->cmd) {
	case C_DATA:
		if (p->code == 354) {
			data_begin(s);
			return;
		}
		break;
	case C_DOT:
		log_message(s, p->code < 300 ? (s->relay_mode ? "relayed" :
		    "queued") : p->code < 500 ? "tempfail" : "rejected",
		    buf_head(&p->text));
		if (p->code < 300)
			s->msgs++;
		txn_reset(s);
		s->refuse = s->refuse_why = NULL;
		break;
	case C_AUTH:
		if (p->code == 334) {
			enter_state(s, S_AUTH);
			return;
		}
		if (p->code == 235) {
			s->authed = 1;
			log_info("session=%llu client=%s auth=ok",
			    (unsigned long long)s->conn.id, s->cstr);
		}
		break;
	case C_STARTTLS:
		if (p->code == 220) {
			tls_begin(s);
			return;
		}
		break;
	case C_QUIT:
		session_quit(s, "quit");
		return;
	default:
		break;
	}
	if (s->state == S_WAIT)
		enter_state(s, S_CMD);
}

/* session_apply - write one reply and act on it */
static void
session_apply(struct session *s, struct pending *p, const struct buf *text)
{
	if (p->silent) {
		/* a command of our own: the client never sees its reply */
		if (p->code == 421)
			session_quit(s, "upstream-421");
		return;
	}
	session_write(s, buf_head(text), buf_avail(text));
	if (p->code >= 500 && p->cmd != C_DOT)
		s->errors++;
	if (p->upstream)
		apply_upstream(s, p);
	if (p->code == 421) {
		session_quit(s, p->upstream ? "upstream-421" : "421");
		return;
	}
	if (p->gate)
		apply_gate(s, p);
}

/* session_flush - write every reply that is ready, in order */
static void
session_flush(struct session *s)
{
	struct pending *p;

	while ((p = TAILQ_FIRST(&s->replies)) != NULL && p->ready &&
	    s->state != S_CLOSED && s->state != S_QUIT) {
		TAILQ_REMOVE(&s->replies, p, entry);
		s->npending--;
		session_apply(s, p, &p->text);
		buf_free(&p->text);
		free(p);
	}
}

/* ---------------------------------------------------------------- relay */

static void
relay_greeting_cb(void *arg, const struct smtp_reply *rep)
{
	struct session *s = arg;
	char up[64];

	session_write(s, buf_head(&rep->text), buf_avail(&rep->text));
	log_debug("session=%llu client=%s orig_dst=%s dir=%s upstream=%s "
	    "greeting=%d", (unsigned long long)s->conn.id, s->cstr, s->dstr,
	    policy_dir_name(s->conn.dir),
	    addr_fmt((struct sockaddr *)&s->conn.orig_dst, up, sizeof(up)),
	    rep->code);
	if (rep->code != 220) {
		log_info("session=%llu client=%s orig_dst=%s dir=%s "
		    "disposition=upstream-refused greeting=%d",
		    (unsigned long long)s->conn.id, s->cstr, s->dstr,
		    policy_dir_name(s->conn.dir), rep->code);
		session_quit(s, "upstream-refused");
		return;
	}
	enter_state(s, S_CMD);
	session_arm(s, s->pol->limits.t_cmd);
	session_wake(s);
}

static void
relay_reply_cb(void *arg, const struct smtp_reply *rep)
{
	struct session *s = arg;
	struct pending *p;

	TAILQ_FOREACH(p, &s->replies, entry)
		if (p->upstream && !p->ready)
			break;
	if (p == NULL) {
		session_421(s, "upstream-error", "421 4.4.2 %s Error: "
		    "unexpected reply from upstream", s->host);
		return;
	}
	p->code = rep->code;
	p->ready = 1;
	if ((p->cmd == C_EHLO) && rep->code == 250)
		ehlo_filter(s, rep, &p->text);
	else
		buf_append(&p->text, buf_head(&rep->text),
		    buf_avail(&rep->text));
	session_flush(s);
	session_wake(s);
}

static void
relay_fail_cb(void *arg, const char *why, const struct smtp_reply *rep)
{
	struct session *s = arg;
	int connecting = s->state == S_CONNECT;
	const char *disposition;
	char up[64], line[512];

	log_info("session=%llu client=%s orig_dst=%s dir=%s upstream=%s "
	    "disposition=%s error=\"%s\"", (unsigned long long)s->conn.id,
	    s->cstr, s->dstr, policy_dir_name(s->conn.dir),
	    addr_fmt((struct sockaddr *)&s->conn.orig_dst, up, sizeof(up)),
	    connecting ? "upstream-unreachable" : "upstream-lost",
	    log_vis(why));
	relay_close(s->relay);
	s->relay = NULL;
	if (rep != NULL && rep->code == 421) {
		disposition = "upstream-421";
		snprintf(line, sizeof(line), "%.*s",
		    (int)strcspn(buf_head(&rep->text), "\r\n"),
		    buf_head(&rep->text));
	} else if (connecting) {
		disposition = "upstream-unreachable";
		snprintf(line, sizeof(line), "421 4.4.1 %s Error: upstream "
		    "server unreachable (%s)", s->host, why);
	} else {
		disposition = "upstream-lost";
		snprintf(line, sizeof(line), "421 4.4.2 %s Error: connection "
		    "to upstream server lost", s->host);
	}
	/* the message's log line names the reply the client really gets */
	if (!s->cap_enhanced && s->relay_mode)
		strip_enhanced(line);
	if (s->state == S_DATA || s->txn.from != NULL)
		log_message(s, "tempfail", line);
	session_421(s, disposition, "%s", line);
}

static void
relay_drained_cb(void *arg)
{
	session_wake(arg);
}

/* ---------------------------------------------------------------- DATA */

/* runs_drop - forget the live relay's content runs (sent or not) */
static void
runs_drop(struct session *s)
{
	s->nrun = 0;
	s->runlen = 0;
}

static void
data_begin(struct session *s)
{
	enter_state(s, S_DATA);
	smtp_data_init(&s->data);
	smtp_reader_setmax(&s->in, s->pol->limits.text_line - 2);
	s->refuse = s->refuse_why = NULL;
	s->rate_start = uv_now(s->loop);
	s->rate_bytes = 0;
	buf_reset(&s->body);
	runs_drop(s);
	session_arm(s, s->pol->limits.t_data);
}

/*
 * runs_flush - the live relay's content runs, in one write.  They point
 * into the reader's buffer, so this happens before the next read feeds
 * it (session_input ends with it) or with the dot (relay_dot).
 */
static void
runs_flush(struct session *s)
{
	if (s->nrun > 0 && s->refuse == NULL && s->relay != NULL)
		relay_writev(s->relay, s->run, s->nrun);
	runs_drop(s);
}

/* body_flush - move the batched content on: the relay's runs, or the
 * MTA path's body */
static void
body_flush(struct session *s)
{
	runs_flush(s);
	if (buf_avail(&s->body) == 0)
		return;
	if (s->refuse == NULL && s->msg != NULL && mta_msg_write(s->msg,
	    buf_head(&s->body), buf_avail(&s->body)) == -1) {
		s->refuse = "451 4.3.0 Error: queue file write error";
		s->refuse_why = "spool-write";
	}
	buf_reset(&s->body);
}

static void
data_refuse(struct session *s, const char *replyl, const char *why)
{
	if (s->refuse != NULL)
		return;
	s->refuse = replyl;
	s->refuse_why = why;
	buf_reset(&s->body);
	runs_drop(s);
}

/* mta_committed - the MTA's answer for s's message */
static void
mta_committed(struct session *s, int status, const char *id_or_reason)
{
	struct pending *p;
	char line[512];

	TAILQ_REMOVE(&s->set->commits, s, centry);
	s->committing = 0;
	s->msg = NULL;
	TAILQ_FOREACH(p, &s->replies, entry)
		if (p->cmd == C_DOT && !p->ready)
			break;
	if (status == 0)
		snprintf(line, sizeof(line), "250 2.0.0 Ok: queued as %s",
		    id_or_reason);
	else {
		snprintf(line, sizeof(line), "451 4.3.0 Error: queue file "
		    "write error");
		s->refuse_why = id_or_reason;
	}
	if (s->close_after_commit) {
		log_message(s, status == 0 ? "queued" : "tempfail", line);
		if (status == 0)
			s->msgs++;
		if (p != NULL)
			pending_free(s, p);
		s->close_after_commit = 0;
		session_close(s, s->disposition);
		return;
	}
	if (p != NULL)
		pending_fill(s, p, line);
	session_flush(s);
	session_wake(s);
}

/* data_end - the terminator: refuse, relay the dot, or commit */
static void
data_end(struct session *s)
{
	struct mta_msg *msg;

	if (s->refuse != NULL || !s->relay_mode)
		body_flush(s);	/* the relay's runs go with the dot */
	smtp_reader_setmax(&s->in, s->relay_mode ? SMTPD_AUTHLINE :
	    s->pol->limits.cmd_line - 2);
	session_arm(s, s->pol->limits.t_cmd);
	if (s->refuse != NULL) {
		if (s->msg != NULL) {
			mta_msg_abort(s->msg);
			s->msg = NULL;
		}
		if (s->relay_mode && s->relay != NULL) {
			/* the upstream DATA must never end: drop the leg */
			relay_close(s->relay);
			s->relay = NULL;
			s->relay_lost = 1;
		}
		reply_gate(s, C_DOT, "%s", s->refuse);
		return;
	}
	if (s->relay_sink) {
		/* live relay, every recipient discarded (data_sink) */
		s->relay_sink = 0;
		reply_gate(s, C_DOT, "250 2.0.0 Ok: discarded");
		return;
	}
	if (s->relay_mode) {
		gate(s, C_DOT, 1);
		if (s->relay == NULL || relay_dot(s->relay, s->run,
		    s->nrun) == -1)
			session_421(s, "upstream-lost", "421 4.4.2 %s Error: "
			    "connection to upstream server lost", s->host);
		runs_drop(s);
		return;
	}
	if (s->msg == NULL) {
		/* every recipient went to a discard rule */
		reply_gate(s, C_DOT, "250 2.0.0 Ok: discarded");
		return;
	}
	gate(s, C_DOT, 0);
	s->committing = 1;
	TAILQ_INSERT_TAIL(&s->set->commits, s, centry);
	msg = s->msg;
	s->msg = NULL;		/* the MTA owns it now */
	mta_msg_submit(msg, proxy_worker_door(s->conn.worker), s->conn.id);
}

/* data_content - a run of content lines: refuse the message, or pass it on */
static void
data_content(struct session *s, const char *p, size_t n)
{
	if (s->refuse != NULL || s->relay_sink)
		return;
	if (s->data.flags & SMTP_LF_TOOLONG) {
		data_refuse(s, "550 5.6.0 Message refused: line too long",
		    "line-too-long");
		return;
	}
	if (s->data.flags & SMTP_LF_BAD) {
		data_refuse(s, "550 5.6.0 Message refused: bare CR, bare LF "
		    "or NUL in content", smtp_data_anomaly(s->data.flags));
		return;
	}
	if (s->data.size > s->pol->limits.size) {
		data_refuse(s, "552 5.3.4 Message size exceeds fixed limit",
		    "too-big");
		return;
	}
	/* the MTA path adds a hop; a live relay's upstream counts its own */
	if (!s->relay_mode && s->data.received >= s->pol->limits.hops) {
		data_refuse(s, "554 5.4.6 Message refused: too many hops "
		    "(Received: fields), a mail loop?", "too-many-hops");
		return;
	}
	if (n == 0)
		return;
	if (s->relay_mode) {
		/* sent from where it lies in s->in, no copy */
		s->run[s->nrun++] = uv_buf_init((char *)(uintptr_t)p,
		    (unsigned int)n);
		s->runlen += n;
		if (s->nrun == RELAY_MAXBUFS || s->runlen >= SMTPD_BODY_CHUNK)
			runs_flush(s);
		return;
	}
	buf_append(&s->body, p, n);
	if (buf_avail(&s->body) >= SMTPD_BODY_CHUNK)
		body_flush(s);
}

/* data_input - take buffered content; 0 when a complete line is missing */
static int
data_input(struct session *s)
{
	const char *p;
	size_t n;

	switch (smtp_data_span(&s->in, &s->data, s->relay_mode, &p, &n)) {
	case SMTP_DATA_MORE:
		return 0;
	case SMTP_DATA_END:
		data_end(s);
		return 1;
	default:
		data_content(s, p, n);
		return 1;
	}
}

/* ---------------------------------------------------------------- params */

/* check_params - ESMTP parameters of MAIL (mail=1) or RCPT: 0, or -1 with
 * the reply in *why */
static int
check_params(struct session *s, const struct smtp_path *path, int mail,
    const char **why)
{
	const struct smtp_param *pr;
	int i;

	for (i = 0; i < path->nparams; i++) {
		pr = &path->params[i];
		*why = "501 5.5.4 Invalid parameter value";
		if (mail && strcmp(pr->key, "SIZE") == 0) {
			if (pr->value == NULL || strlen(pr->value) > 20 ||
			    strspn(pr->value, "0123456789") != strlen(pr->value))
				return -1;
		} else if (mail && strcmp(pr->key, "BODY") == 0) {
			if (pr->value == NULL || (strcasecmp(pr->value, "7BIT")
			    != 0 && (!s->cap_8bit ||
			    strcasecmp(pr->value, "8BITMIME") != 0)))
				return -1;
		} else if (mail && strcmp(pr->key, "SMTPUTF8") == 0 &&
		    s->cap_smtputf8) {
			if (pr->value != NULL)
				return -1;
		} else if (mail && strcmp(pr->key, "RET") == 0 && s->cap_dsn) {
			if (pr->value == NULL || (strcasecmp(pr->value, "FULL")
			    != 0 && strcasecmp(pr->value, "HDRS") != 0))
				return -1;
		} else if (mail && strcmp(pr->key, "ENVID") == 0 && s->cap_dsn) {
			/* RFC 3461 4.4: printable once decoded; a DSN
			 * carries it in a header field */
			*why = "501 5.5.4 Invalid ENVID: must be xtext of "
			    "printable US-ASCII";
			if (pr->value == NULL || strlen(pr->value) >
			    SMTPD_ENVID_MAX ||
			    smtp_xtext_printable(pr->value, SMTPD_ENVID_MAX)
			    == -1)
				return -1;
		} else if (mail && strcmp(pr->key, "AUTH") == 0 && s->cap_auth) {
			if (pr->value == NULL || (strcmp(pr->value, "<>") != 0 &&
			    smtp_xtext_valid(pr->value) == -1))
				return -1;
		} else if (!mail && strcmp(pr->key, "NOTIFY") == 0 &&
		    s->cap_dsn) {
			if (pr->value == NULL || (strcasecmp(pr->value, "NEVER")
			    != 0 && strspn(pr->value, "SUCCESFAILREDYLAsucces"
			    "failredyla,") != strlen(pr->value)))
				return -1;
		} else if (!mail && strcmp(pr->key, "ORCPT") == 0 &&
		    s->cap_dsn) {
			/* RFC 3461 4.2: the decoded address printable, no
			 * CTLs: it goes into a DSN's Original-Recipient: */
			*why = "501 5.5.4 Invalid ORCPT: must be addr-type;"
			    "xtext of printable US-ASCII";
			if (pr->value == NULL ||
			    strlen(pr->value) > SMTPD_ORCPT_MAX ||
			    smtp_orcpt_valid(pr->value, SMTPD_ORCPT_MAX) == -1)
				return -1;
		} else {
			*why = "555 5.5.4 Unsupported parameter";
			return -1;
		}
	}
	return 0;
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

static void
path_limits(struct session *s, struct smtp_limits *lim, int utf8)
{
	lim->localpart = s->pol->limits.localpart;
	lim->domain = s->pol->limits.domain;
	lim->utf8 = utf8;
}

/* ---------------------------------------------------------------- commands */

/* need_tls - 1 (and a 530 said) if policy requires STARTTLS first */
static int
need_tls(struct session *s, enum cmd cmd)
{
	if (s->pol->starttls[s->conn.dir] != POLICY_TLS_REQUIRE ||
	    s->tls != NULL)
		return 0;
	reply(s, cmd, "530 5.7.0 Must issue a STARTTLS command first");
	return 1;
}

/* valid_helo - one printable word */
static int
valid_helo(const char *arg)
{
	const char *p;

	if (*arg == '\0' || strlen(arg) > 255)
		return 0;
	for (p = arg; *p != '\0' && *p != ' '; p++)
		if (*p < 33 || *p > 126)
			return 0;
	return 1;
}

static void
cmd_helo(struct session *s, int ehlo, const char *arg, const struct
    smtp_line *l)
{
	struct pending *p;
	size_t n;

	if (!valid_helo(arg)) {
		reply(s, ehlo ? C_EHLO : C_HELO, "501 5.5.4 Syntax: %s hostname",
		    ehlo ? "EHLO" : "HELO");
		return;
	}
	n = strcspn(arg, " ");
	free(s->helo);
	s->helo = xstrndup(arg, n);
	if (s->relay_mode) {
		gate(s, ehlo ? C_EHLO : C_HELO, 1);
		if (relay_helo(s->relay, ehlo, s->helo, l->data, l->len) == -1)
			session_421(s, "upstream-lost", "421 4.4.2 %s Error: "
			    "connection to upstream server lost", s->host);
		return;
	}
	txn_reset(s);
	s->cap_enhanced = s->cap_pipelining = s->cap_8bit = s->cap_dsn = 1;
	s->cap_smtputf8 = 1;
	s->cap_size = s->pol->limits.size;
	p = gate(s, ehlo ? C_EHLO : C_HELO, 0);
	if (ehlo)
		ehlo_local(s, p);
	else
		buf_printf(&p->text, "250 %s\r\n", s->host);
	p->code = 250;
	p->ready = 1;
	session_flush(s);
}

/* mail_params - record MAIL's parameters in the transaction */
static void
mail_params(struct session *s, const struct smtp_path *path)
{
	const char *v;

	if ((v = smtp_path_param(path, "SIZE")) != NULL)
		s->txn.size = strtoull(v, NULL, 10);
	if ((v = smtp_path_param(path, "BODY")) != NULL)
		s->txn.body8 = strcasecmp(v, "8BITMIME") == 0;
	s->txn.smtputf8 = smtp_path_param(path, "SMTPUTF8") != NULL;
	if ((v = smtp_path_param(path, "RET")) != NULL)
		s->txn.ret = strcasecmp(v, "FULL") == 0 ? MTA_RET_FULL :
		    MTA_RET_HDRS;
	if ((v = smtp_path_param(path, "ENVID")) != NULL)
		s->txn.envid = xstrdup(v);
}

static void
cmd_mail(struct session *s, const char *arg, const struct smtp_line *l)
{
	struct smtp_limits lim;
	struct smtp_path path;
	const char *why;

	if (need_tls(s, C_MAIL))
		return;
	if (!s->relay_mode && s->helo == NULL) {
		reply(s, C_MAIL, "503 5.5.1 Error: send HELO/EHLO first");
		return;
	}
	if (!s->relay_mode && s->txn.from != NULL) {
		reply(s, C_MAIL, "503 5.5.1 Error: nested MAIL command");
		return;
	}
	if (s->msgs >= s->pol->limits.msgs_per_session) {
		session_421(s, "too-many-messages", "421 4.7.0 %s Error: too "
		    "many messages in one session", s->host);
		return;
	}
	path_limits(s, &lim, 0);
	if (smtp_parse_path(arg, "FROM:", 1, &lim, &path, &why) == -1) {
		reply(s, C_MAIL, "%s", why);
		return;
	}
	if (check_params(s, &path, 1, &why) == -1)
		goto refuse;
	if (smtp_path_param(&path, "SIZE") != NULL && strtoull(
	    smtp_path_param(&path, "SIZE"), NULL, 10) > s->pol->limits.size) {
		why = "552 5.3.4 Message size exceeds fixed limit";
		goto refuse;
	}
	if (!s->relay_mode && mta_can_accept() == -1) {
		why = "452 4.3.1 Insufficient system storage";
		goto refuse;
	}
	txn_reset(s);
	s->txn.from = xstrdup(path.addr);
	s->txn.start = uv_now(s->loop);
	mail_params(s, &path);
	smtp_path_free(&path);
	if (s->relay_mode) {
		pending_new(s, C_MAIL, 1);
		relay_send(s->relay, l->data, l->len, RELAY_CMD);
		return;
	}
	reply(s, C_MAIL, "250 2.1.0 Ok");
	return;
refuse:
	smtp_path_free(&path);
	reply(s, C_MAIL, "%s", why);
}

/* rcpt_make - an MTA path recipient from its RCPT */
static void
rcpt_make(struct session *s, const struct smtp_path *path, struct rcpt *r)
{
	const char *orcpt;

	r->addr = xstrdup(path->addr);
	r->orcpt = (orcpt = smtp_path_param(path, "ORCPT")) != NULL ?
	    xstrdup(orcpt) : NULL;
	r->notify = notify_bits(smtp_path_param(path, "NOTIFY"));
	r->route = policy_route_rcpt(s->pol, s->conn.dir,
	    path->domain ? path->domain : "",
	    (struct sockaddr *)&s->conn.orig_dst);
}

/* rcpt_take - the transaction takes r over */
static void
rcpt_take(struct session *s, struct rcpt *r)
{
	s->txn.rcpts = xreallocarray(s->txn.rcpts, s->txn.nok + 1,
	    sizeof(*s->txn.rcpts));
	s->txn.rcpts[s->txn.nok++] = *r;
	tolog_add(s, r->addr);
	memset(r, 0, sizeof(*r));
}

static void
rcpt_drop(struct rcpt *r)
{
	free(r->addr);
	free(r->orcpt);
	memset(r, 0, sizeof(*r));
}

/* verify_log - what the protected server said about a recipient */
static void
verify_log(struct session *s, const char *rcpt, int code, const char *line,
    int cached)
{
	log_info("session=%llu client=%s orig_dst=%s dir=%s verify=<%s> "
	    "result=%s cached=%s reply=\"%s\"", (unsigned long long)s->conn.id,
	    s->cstr, s->dstr, policy_dir_name(s->conn.dir), log_word(rcpt),
	    code >= 200 && code < 300 ? "accepted" : code >= 500 ? "refused" :
	    code >= 400 ? "tempfail" : "unavailable", cached ? "yes" : "no",
	    log_vis(line));
}

/*
 * verify_answer - the reply to a verified RCPT: 250 (r taken), the
 * server's own refusal, or 451 4.4.3 without an answer (r dropped)
 */
static void
verify_answer(struct session *s, struct rcpt *r, int code, const char *line,
    char *out, size_t len)
{
	if (code >= 200 && code < 300) {
		rcpt_take(s, r);
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

/* verify_done - the callout's answer: the gated RCPT's reply */
static void
verify_done(void *arg, int code, const char *line)
{
	struct session *s = arg;
	struct pending *p;
	char rl[CALLOUT_LINE + 64];

	s->callout = NULL;
	verify_log(s, s->vrcpt.addr, code, line, 0);
	TAILQ_FOREACH(p, &s->replies, entry)
		if (p->cmd == C_RCPT && !p->ready)
			break;
	if (p == NULL || s->state == S_CLOSED || s->state == S_QUIT) {
		rcpt_drop(&s->vrcpt);
		return;
	}
	verify_answer(s, &s->vrcpt, code, line, rl, sizeof(rl));
	pending_fill(s, p, rl);
	session_flush(s);
	session_wake(s);
}

/*
 * verify_rcpt - ask the protected server about r before answering: from
 * the cache at once, else input waits for a callout to the original
 * destination.  r is taken over.
 */
static void
verify_rcpt(struct session *s, const struct policy_domain *d, struct rcpt *r)
{
	struct callout_opts o;
	char line[CALLOUT_LINE], rl[CALLOUT_LINE + 64];
	int code;

	if (callout_cached(proxy_worker_callouts(s->conn.worker),
	    (struct sockaddr *)&s->conn.orig_dst, r->addr, &code, line,
	    sizeof(line))) {
		verify_log(s, r->addr, code, line, 1);
		verify_answer(s, r, code, line, rl, sizeof(rl));
		reply(s, C_RCPT, "%s", rl);
		return;
	}
	memset(&o, 0, sizeof(o));
	o.id = s->conn.id;
	o.dst = s->conn.orig_dst;
	o.helo = s->host;
	o.tls = d->tls == POLICY_UPTLS_NONE ? RELAY_TLS_NONE :
	    d->tls == POLICY_UPTLS_STARTTLS ? RELAY_TLS_REQUIRE :
	    RELAY_TLS_OPPORTUNISTIC;
	o.ctx = o.tls != RELAY_TLS_NONE ? client_ctx() : NULL;
	o.corks = proxy_worker_corks(s->conn.worker);
	s->vrcpt = *r;
	memset(r, 0, sizeof(*r));
	gate(s, C_RCPT, 0);
	s->callout = callout_start(s->loop,
	    proxy_worker_callouts(s->conn.worker), &o, s->vrcpt.addr,
	    verify_done, s);
}

/* verify_cancel - the session ends: no answer is waited for */
static void
verify_cancel(struct session *s)
{
	callout_cancel(s->callout);
	s->callout = NULL;
	rcpt_drop(&s->vrcpt);
}

/* rcpt_local - the MTA path's decision on one recipient */
static void
rcpt_local(struct session *s, const struct smtp_path *path)
{
	const struct policy_domain *d;
	const char *msg = NULL;
	enum policy_verdict v;
	struct rcpt r;

	v = policy_check_rcpt(s->pol, (struct sockaddr *)&s->conn.client,
	    s->conn.dir, s->txn.from, path->addr, s->authed, &msg);
	switch (v) {
	case POLICY_RELAY:
		break;
	case POLICY_DISCARD:
		s->txn.ndiscard++;
		reply(s, C_RCPT, "250 2.1.5 Ok");
		return;
	case POLICY_TEMPFAIL:
		reply(s, C_RCPT, "451 %s", msg ? msg : "4.7.1 Try again later");
		return;
	case POLICY_REJECT:
	default:
		reply(s, C_RCPT, "550 %s", msg ? msg : "5.7.1 Rejected");
		return;
	}
	memset(&r, 0, sizeof(r));
	rcpt_make(s, path, &r);
	if ((d = policy_verify_rcpt(s->pol, s->conn.dir, path->addr)) != NULL) {
		verify_rcpt(s, d, &r);
		return;
	}
	rcpt_take(s, &r);
	reply(s, C_RCPT, "250 2.1.5 Ok");
}

/*
 * rcpt_live - the live relay's RCPT: an explicit rule's reject, tempfail
 * or discard is answered here; the rest goes upstream, which decides
 */
static void
rcpt_live(struct session *s, const struct smtp_path *path,
    const struct smtp_line *l)
{
	enum policy_verdict v = POLICY_RELAY;
	const char *msg = NULL;

	if (s->txn.from != NULL)	/* without MAIL the upstream says 503 */
		v = policy_check_rcpt_live(s->pol,
		    (struct sockaddr *)&s->conn.client, s->txn.from,
		    path->addr, s->authed, &msg);
	switch (v) {
	case POLICY_RELAY:
		tolog_add(s, path->addr);
		s->txn.nfwd++;
		pending_new(s, C_RCPT, 1);
		relay_send(s->relay, l->data, l->len, RELAY_CMD);
		return;
	case POLICY_DISCARD:
		s->txn.ndiscard++;
		reply(s, C_RCPT, "250 2.1.5 Ok");
		break;
	case POLICY_TEMPFAIL:
		reply(s, C_RCPT, "451 %s", msg ? msg : "4.7.1 Try again later");
		break;
	case POLICY_REJECT:
	default:
		reply(s, C_RCPT, "550 %s", msg ? msg : "5.7.1 Rejected");
		break;
	}
	log_info("session=%llu client=%s orig_dst=%s dir=%s rcpt=<%s> "
	    "verdict=%s", (unsigned long long)s->conn.id, s->cstr, s->dstr,
	    policy_dir_name(s->conn.dir), log_word(path->addr),
	    policy_verdict_name(v));
}

static void
cmd_rcpt(struct session *s, const char *arg, const struct smtp_line *l)
{
	struct smtp_limits lim;
	struct smtp_path path;
	const char *why;

	if (need_tls(s, C_RCPT))
		return;
	if (!s->relay_mode && s->txn.from == NULL) {
		reply(s, C_RCPT, "503 5.5.1 Error: need MAIL command");
		return;
	}
	if (s->txn.nsent >= s->pol->limits.rcpts) {
		reply(s, C_RCPT, "452 4.5.3 Error: too many recipients");
		return;
	}
	path_limits(s, &lim, s->txn.smtputf8);
	if (smtp_parse_path(arg, "TO:", 0, &lim, &path, &why) == -1) {
		reply(s, C_RCPT, "%s", why);
		return;
	}
	if (check_params(s, &path, 0, &why) == -1) {
		smtp_path_free(&path);
		reply(s, C_RCPT, "%s", why);
		return;
	}
	s->txn.nsent++;
	if (s->relay_mode)
		rcpt_live(s, &path, l);
	else
		rcpt_local(s, &path);
	smtp_path_free(&path);
}

/* received - the Received: header of the MTA path (smtp_received) */
static void
received(struct session *s, struct buf *b)
{
	char ip[64], id[48];
	struct smtp_trace t;

	addr_fmt_ip((struct sockaddr *)&s->conn.client, ip, sizeof(ip));
	snprintf(id, sizeof(id), "%llu.%u", (unsigned long long)s->conn.id,
	    s->msgs + 1);
	memset(&t, 0, sizeof(t));
	t.helo = s->helo;
	t.ip = ip;
	t.by = s->host;
	t.id = id;
	t.tls = s->tls ? tls_conn_info(s->tls) : NULL;
	t.rcpt = s->txn.nok == 1 ? s->txn.rcpts[0].addr : NULL;
	t.smtputf8 = s->txn.smtputf8;
	t.when = time(NULL);
	smtp_received(b, &t);
}

/* data_mta - open the message at the MTA for the accepted recipients */
static int
data_mta(struct session *s)
{
	struct mta_info info;
	struct buf hdr;
	unsigned i;

	if (s->txn.nok == 0)
		return 0;	/* only discards: nothing to queue */
	memset(&info, 0, sizeof(info));
	info.session_id = s->conn.id;
	info.client = s->conn.client;
	info.orig_dst = s->conn.orig_dst;
	info.dir = s->conn.dir;
	info.helo = s->helo;
	info.tls = s->tls ? tls_conn_info(s->tls) : NULL;
	info.sender = s->txn.from;
	info.envid = s->txn.envid;
	info.ret = s->txn.ret;
	info.size = s->txn.size;
	info.body_8bit = s->txn.body8;
	info.smtputf8 = s->txn.smtputf8;
	if ((s->msg = mta_msg_new(&info)) == NULL)
		return -1;
	for (i = 0; i < s->txn.nok; i++)
		mta_msg_add_rcpt(s->msg, s->txn.rcpts[i].addr,
		    s->txn.rcpts[i].orcpt, s->txn.rcpts[i].notify,
		    s->txn.rcpts[i].route);
	buf_init(&hdr);
	received(s, &hdr);
	if (mta_msg_write(s->msg, hdr.data, hdr.len) == -1) {
		buf_free(&hdr);
		mta_msg_abort(s->msg);
		s->msg = NULL;
		return -1;
	}
	buf_free(&hdr);
	return 0;
}

/*
 * data_sink - live relay, every recipient went to a discard rule: the
 * upstream forgets the MAIL (an RSET whose reply the client does not
 * see), and the text is taken here and dropped (s->relay_sink)
 */
static void
data_sink(struct session *s)
{
	struct pending *p;

	p = pending_new(s, C_NONE, 1);
	p->silent = 1;
	if (relay_send(s->relay, "RSET", 4, RELAY_CMD) == -1) {
		session_421(s, "upstream-lost", "421 4.4.2 %s Error: "
		    "connection to upstream server lost", s->host);
		return;
	}
	s->relay_sink = 1;
	reply_gate(s, C_DATA, "354 End data with <CR><LF>.<CR><LF>");
}

static void
cmd_data(struct session *s, const char *arg)
{
	if (need_tls(s, C_DATA))
		return;
	if (*arg != '\0') {
		reply(s, C_DATA, "501 5.5.4 Syntax: DATA");
		return;
	}
	if (s->relay_mode) {
		if (s->relay_lost) {
			reply(s, C_DATA, "421 4.4.2 %s Error: connection to "
			    "upstream server lost", s->host);
			return;
		}
		if (s->txn.nfwd == 0 && s->txn.ndiscard > 0) {
			data_sink(s);
			return;
		}
		gate(s, C_DATA, 1);
		relay_send(s->relay, "DATA", 4, RELAY_CMD);
		return;
	}
	if (s->txn.from == NULL) {
		reply(s, C_DATA, "503 5.5.1 Error: need MAIL command");
		return;
	}
	if (s->txn.nok == 0 && s->txn.ndiscard == 0) {
		reply(s, C_DATA, "554 5.5.1 Error: no valid recipients");
		return;
	}
	if (data_mta(s) == -1) {
		reply(s, C_DATA, "451 4.3.0 Error: cannot queue the message");
		return;
	}
	reply_gate(s, C_DATA, "354 End data with <CR><LF>.<CR><LF>");
}

static void
cmd_starttls(struct session *s, const char *arg)
{
	if (s->tls != NULL) {
		reply(s, C_STARTTLS, "503 5.5.1 Error: TLS already active");
		return;
	}
	if (!s->offer_tls) {
		reply(s, C_STARTTLS, "502 5.5.1 Error: command not "
		    "implemented");
		return;
	}
	if (*arg != '\0') {
		reply(s, C_STARTTLS, "501 5.5.4 Syntax: STARTTLS");
		return;
	}
	reply_gate(s, C_STARTTLS, "220 2.0.0 Ready to start TLS");
}

static void
cmd_auth(struct session *s, const struct smtp_line *l)
{
	if (!s->relay_mode || !s->cap_auth) {
		if (s->relay_mode && s->tls == NULL && s->relay != NULL &&
		    !relay_auth_in_clear(s->relay))
			reply(s, C_AUTH, "538 5.7.11 Encryption required for "
			    "requested authentication mechanism");
		else
			reply(s, C_AUTH, "503 5.5.1 Error: authentication "
			    "not enabled");
		return;
	}
	if (s->authed) {
		reply(s, C_AUTH, "503 5.5.1 Error: already authenticated");
		return;
	}
	if (s->txn.from != NULL) {
		reply(s, C_AUTH, "503 5.5.1 Error: MAIL transaction in "
		    "progress");
		return;
	}
	gate(s, C_AUTH, 1);
	relay_send(s->relay, l->data, l->len, RELAY_CMD);
}

/* forward - a command passed upstream as it is (live relay) */
static void
forward(struct session *s, enum cmd cmd, const struct smtp_line *l)
{
	if (cmd == C_QUIT)
		gate(s, cmd, 1);
	else
		pending_new(s, cmd, 1);
	relay_send(s->relay, l->data, l->len, RELAY_CMD);
}

/* cmd_local - the commands the MTA path answers itself */
static void
cmd_local(struct session *s, enum cmd cmd, const char *arg)
{
	switch (cmd) {
	case C_RSET:
		txn_reset(s);
		reply(s, cmd, "250 2.0.0 Ok");
		break;
	case C_NOOP:
		reply(s, cmd, "250 2.0.0 Ok");
		break;
	case C_VRFY:
		if (*arg == '\0')
			reply(s, cmd, "501 5.5.4 Syntax: VRFY address");
		else
			reply(s, cmd, "252 2.0.0 Cannot VRFY user, but will "
			    "accept message and attempt delivery");
		break;
	case C_EXPN:
		reply(s, cmd, "502 5.5.1 Error: command not implemented");
		break;
	case C_HELP:
		reply(s, cmd, "214 2.0.0 See RFC 5321");
		break;
	case C_QUIT:
		reply_gate(s, cmd, "221 2.0.0 Bye");
		break;
	default:
		break;
	}
}

static const struct {
	const char	*verb;
	enum cmd	 cmd;
} verbs[] = {
	{ "EHLO", C_EHLO }, { "HELO", C_HELO }, { "MAIL", C_MAIL },
	{ "RCPT", C_RCPT }, { "DATA", C_DATA }, { "RSET", C_RSET },
	{ "NOOP", C_NOOP }, { "QUIT", C_QUIT }, { "VRFY", C_VRFY },
	{ "EXPN", C_EXPN }, { "HELP", C_HELP }, { "AUTH", C_AUTH },
	{ "STARTTLS", C_STARTTLS }, { NULL, C_UNKNOWN }
};

/* cmd_dispatch - one well-formed command line */
static void
cmd_dispatch(struct session *s, enum cmd cmd, const char *arg,
    const struct smtp_line *l)
{
	if (s->relay_mode && s->relay_lost && cmd != C_QUIT) {
		session_421(s, "upstream-lost", "421 4.4.2 %s Error: "
		    "connection to upstream server lost", s->host);
		return;
	}
	switch (cmd) {
	case C_MAIL:
	case C_RCPT:
	case C_DATA:
	case C_AUTH:
	case C_VRFY:
	case C_EXPN:
		/* the upstream leg is negotiated (TLS) at the first EHLO */
		if (s->relay_mode && s->helo == NULL) {
			reply(s, cmd, "503 5.5.1 Error: send HELO/EHLO first");
			return;
		}
		break;
	default:
		break;
	}
	switch (cmd) {
	case C_EHLO:
	case C_HELO:
		cmd_helo(s, cmd == C_EHLO, arg, l);
		return;
	case C_MAIL:
		cmd_mail(s, arg, l);
		return;
	case C_RCPT:
		cmd_rcpt(s, arg, l);
		return;
	case C_DATA:
		cmd_data(s, arg);
		return;
	case C_STARTTLS:
		cmd_starttls(s, arg);
		return;
	case C_AUTH:
		if (!need_tls(s, C_AUTH))
			cmd_auth(s, l);
		return;
	case C_RSET:
		if (s->relay_mode)
			txn_reset(s);
		break;
	case C_QUIT:
		if (s->relay_mode && s->relay_lost) {
			reply_gate(s, cmd, "221 2.0.0 Bye");
			return;
		}
		break;
	default:
		break;
	}
	if (s->relay_mode)
		forward(s, cmd, l);
	else
		cmd_local(s, cmd, arg);
}

/* cmd_line - one line read in S_CMD */
static void
cmd_line(struct session *s, enum smtp_line_status st,
    const struct smtp_line *l)
{
	char verb[16];
	const char *arg;
	enum cmd cmd = C_UNKNOWN;
	int i;

	session_arm(s, s->pol->limits.t_cmd);
	if (s->set->shutting_down) {
		session_421(s, "shutdown", "421 4.3.2 %s Service shutting down",
		    s->host);
		return;
	}
	if (s->errors >= s->pol->limits.errors) {
		session_421(s, "too-many-errors", "421 4.7.0 %s Error: too "
		    "many errors", s->host);
		return;
	}
	arg = smtp_verb(l->data, l->len, verb, sizeof(verb));
	for (i = 0; verbs[i].verb != NULL; i++)
		if (strcmp(verb, verbs[i].verb) == 0)
			break;
	cmd = verbs[i].cmd;
	if (st == SMTP_LINE_TOOLONG || (l->len > s->pol->limits.cmd_line - 2 &&
	    cmd != C_AUTH)) {
		reply(s, C_UNKNOWN, "500 5.5.2 Error: line too long");
		return;
	}
	if (l->flags & (SMTP_LF_BARECR | SMTP_LF_NUL) ||
	    !(l->flags & SMTP_LF_CRLF)) {
		reply(s, C_UNKNOWN, "500 5.5.2 Error: bare CR, bare LF or NUL "
		    "in command");
		return;
	}
	if (cmd == C_UNKNOWN) {
		reply(s, C_UNKNOWN, "500 5.5.2 Error: command not recognized");
		return;
	}
	cmd_dispatch(s, cmd, arg, l);
}

/* auth_line - the client's answer to a 334, passed on verbatim */
static void
auth_line(struct session *s, enum smtp_line_status st,
    const struct smtp_line *l)
{
	session_arm(s, s->pol->limits.t_cmd);
	gate(s, C_AUTH, 1);
	if (st == SMTP_LINE_TOOLONG || l->flags & (SMTP_LF_BARECR |
	    SMTP_LF_NUL) || !(l->flags & SMTP_LF_CRLF))
		relay_send(s->relay, "*", 1, RELAY_CMD);	/* cancel */
	else
		relay_send(s->relay, l->data, l->len, RELAY_CMD);
}

/* ---------------------------------------------------------------- input */

/* session_blocked - 1 while no more input may be taken */
static int
session_blocked(struct session *s)
{
	switch (s->state) {
	case S_CMD:
		if (s->npending >= SMTPD_MAXPIPE)
			return 1;
		/* an upstream without PIPELINING gets one command at a time */
		if (s->relay_mode && !s->cap_pipelining && s->npending > 0)
			return 1;
		break;
	case S_AUTH:
		break;
	case S_DATA:
		if (s->relay_mode && s->relay != NULL && s->refuse == NULL &&
		    relay_busy(s->relay))
			return 1;
		break;
	default:
		return 1;
	}
	if (uv_stream_get_write_queue_size((uv_stream_t *)s->client) >
	    SMTPD_OUT_HIWAT) {
		s->out_wait = 1;
		return 1;
	}
	return 0;
}

/* session_input - take buffered lines while the session may */
static void
session_input(struct session *s)
{
	struct smtp_line l;
	enum smtp_line_status st;

	while (!session_blocked(s)) {
		if (s->state == S_DATA) {
			/* content goes in runs, not line by line */
			if (data_input(s) == 0)
				break;
			continue;
		}
		if ((st = smtp_reader_getline(&s->in, &l)) == SMTP_LINE_NONE)
			break;
		switch (s->state) {
		case S_CMD:
			cmd_line(s, st, &l);
			break;
		case S_AUTH:
			auth_line(s, st, &l);
			break;
		default:
			break;
		}
	}
	if (s->state == S_DATA)
		body_flush(s);
}

/*
 * session_readahead - 1 if the client may be read while its input is
 * held (waiting for a reply, the upstream or the MTA): only into an empty
 * buffer, so a client that waits for its replies, as nearly all do,
 * costs no poll changes, and one that does not is held to one read
 */
static int
session_readahead(struct session *s)
{
	switch (s->state) {
	case S_CMD:
	case S_WAIT:
	case S_AUTH:
	case S_DATA:
		return s->rderr == 0 && smtp_reader_pending(&s->in) == 0;
	default:
		return 0;
	}
}

/* session_gone - the client closed or failed: the session ends */
static void
session_gone(struct session *s, int err)
{
	if (s->state == S_DATA || s->txn.from != NULL)
		log_message(s, "aborted", "client disconnected");
	session_close(s, err == UV_EOF ? "client-closed" : uv_err_name(err));
}

static void
session_alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
	/* scratch: read and used up in this callback, one per thread */
	static _Thread_local char rbuf[65536];

	*b = uv_buf_init(rbuf, sizeof(rbuf));
}

/* session_wake - process what is buffered; read only when it may go on */
static void
session_wake(struct session *s)
{
	int want;

	if (s->state == S_CLOSED || s->state == S_QUIT)
		return;
	session_input(s);
	if (s->state == S_CLOSED || s->state == S_QUIT)
		return;
	if (s->rderr != 0) {
		/* read ahead: it counts once the input it followed is taken */
		if (!session_blocked(s))
			session_gone(s, s->rderr);
		return;
	}
	want = s->state == S_TLS || !session_blocked(s) ||
	    session_readahead(s);
	if (want && !s->reading) {
		uv_read_start((uv_stream_t *)s->client, session_alloc_cb,
		    session_read_cb);
		s->rate_start = uv_now(s->loop);
		s->rate_bytes = 0;
	}
	else if (!want && s->reading)
		uv_read_stop((uv_stream_t *)s->client);
	s->reading = want;
}

/* tls_begin - the 220 to STARTTLS is out: drop what was pipelined behind
 * it and hand the stream to TLS */
static void
tls_begin(struct session *s)
{
	size_t dropped = smtp_reader_pending(&s->in);

	if (dropped > 0)
		log_info("session=%llu client=%s starttls: discarded %zu "
		    "pipelined bytes", (unsigned long long)s->conn.id, s->cstr,
		    dropped);
	smtp_reader_discard(&s->in);
	tls_cork_flush(&s->out);	/* the 220 goes in the clear */
	s->tls = tls_conn_new(s->tls_ctx, (uv_stream_t *)s->client,
	    TLS_SERVER, NULL);
	enter_state(s, S_TLS);
	session_arm(s, s->pol->limits.t_cmd);
}

/* tls_input - ciphertext from the client */
static void
tls_input(struct session *s, const char *p, size_t n)
{
	enum tls_state st;

	st = tls_conn_feed(s->tls, p, n, &s->plain);
	if (st == TLS_FAILED) {
		log_info("session=%llu client=%s tls=failed error=\"%s\"",
		    (unsigned long long)s->conn.id, s->cstr,
		    log_vis(tls_conn_error(s->tls)));
		session_close(s, "tls-failed");
		return;
	}
	if (st == TLS_HANDSHAKE)
		return;
	if (s->state == S_TLS) {
		log_info("session=%llu client=%s dir=%s tls=%s",
		    (unsigned long long)s->conn.id, s->cstr,
		    policy_dir_name(s->conn.dir), tls_conn_info(s->tls));
		/* RFC 3207 4.2: forget everything said before */
		free(s->helo);
		s->helo = NULL;
		txn_reset(s);
		enter_state(s, S_CMD);
		session_arm(s, s->pol->limits.t_cmd);
	}
	if (buf_avail(&s->plain) > 0) {
		smtp_reader_feed(&s->in, buf_head(&s->plain),
		    buf_avail(&s->plain));
		buf_reset(&s->plain);
	}
	if (st == TLS_CLOSED)
		session_close(s, "client-closed");
}

/*
 * data_rate - in DATA the timer restarts with every read, and a client
 * that sends less than min_rate bytes/s over a window is cut off.  The
 * window restarts whenever we paused reading for the upstream.
 */
static int
data_rate(struct session *s, size_t n)
{
	uint64_t elapsed, bytes;
	unsigned min = s->pol->limits.min_rate;

	s->rate_bytes += n;
	session_arm(s, s->pol->limits.t_data);
	elapsed = uv_now(s->loop) - s->rate_start;
	if (min == 0 || elapsed < SMTPD_RATE_GRACE * 1000)
		return 0;
	bytes = s->rate_bytes;
	s->rate_start = uv_now(s->loop);
	s->rate_bytes = 0;
	if (bytes * 1000 / elapsed >= min)
		return 0;
	session_421(s, "too-slow", "421 4.4.2 %s Error: data rate too low",
	    s->host);
	return -1;
}

static void
session_read_cb(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
	struct session *s = st->data;
	struct tls_corks *corks = proxy_worker_corks(s->conn.worker);

	if (n == 0 || s->state == S_CLOSED || s->state == S_QUIT)
		return;
	if (n < 0) {
		if (s->state != S_TLS && session_blocked(s)) {
			/* as if it had stayed unread until input goes on */
			s->rderr = (int)n;
			uv_read_stop(st);
			s->reading = 0;
			return;
		}
		session_gone(s, (int)n);
		return;
	}
	if (s->state == S_DATA && data_rate(s, (size_t)n) == -1)
		return;
	if (s->tls != NULL)
		tls_input(s, b->base, (size_t)n);
	else
		smtp_reader_feed(&s->in, b->base, (size_t)n);
	session_wake(s);
	tls_cork_turn(corks);	/* replies and commands of this read, now */
}

/* ---------------------------------------------------------------- start */

/* relay_start - the live relay: connect upstream, greet when it does */
static void
relay_start(struct session *s)
{
	struct relay_opts o;
	const struct policy_limits *lim = &s->pol->limits;

	memset(&o, 0, sizeof(o));
	o.id = s->conn.id;
	o.dst = s->conn.orig_dst;
	o.src.ss_family = AF_UNSPEC;
	/* hide the box: from the client's address (IP_TRANSPARENT) */
	if (policy_hide_box_outgoing(s->pol, s->conn.port) &&
	    s->conn.client.ss_family == s->conn.orig_dst.ss_family)
		o.src = s->conn.client;
	switch (s->pol->cs_tls) {
	case POLICY_CSTLS_NONE:
		o.tls = RELAY_TLS_NONE;
		break;
	case POLICY_CSTLS_REQUIRE:
		o.tls = RELAY_TLS_REQUIRE;
		break;
	default:
		o.tls = RELAY_TLS_OPPORTUNISTIC;
		break;
	}
	o.ctx = o.tls != RELAY_TLS_NONE ? client_ctx() : NULL;
	o.corks = proxy_worker_corks(s->conn.worker);
	log_debug("session=%llu upstream tls=%s hide-box=%s",
	    (unsigned long long)s->conn.id, policy_cstls_name(s->pol->cs_tls),
	    o.src.ss_family != AF_UNSPEC ? "yes" : "no");
	if (o.ctx == NULL && o.tls == RELAY_TLS_REQUIRE)
		log_warnx("session=%llu tls: required upstream but no client "
		    "context", (unsigned long long)s->conn.id);
	o.t_connect = lim->t_connect;
	o.t_cmd = lim->t_cmd;
	o.t_dot = lim->t_dot;
	s->relay = relay_open(s->loop, &o, &session_relay_cb, s);
}

/* own_port - a connection to one of our own listening ports: a loop */
static int
own_port(const struct session *s)
{
	uint16_t port = addr_port((const struct sockaddr *)&s->conn.orig_dst);

	return port == s->pol->listen_port[POLICY_DIR_IN] ||
	    port == s->pol->listen_port[POLICY_DIR_OUT];
}

void
proxy_session_start(uv_tcp_t *client, struct proxy_conn *conn)
{
	struct session *s;
	enum policy_starttls tlsmode;
	char greeting[300];

	s = xcalloc(1, sizeof(*s));
	s->conn = *conn;
	s->set = proxy_worker_sessions(conn->worker);
	s->pol = conn->policy;
	s->client = client;
	s->loop = client->loop;
	client->data = s;
	tls_cork_init(&s->out, proxy_worker_corks(conn->worker),
	    (uv_stream_t *)client, session_written, s);
	TAILQ_INIT(&s->replies);
	TAILQ_INSERT_TAIL(&s->set->list, s, entry);
	s->set->n++;
	uv_timer_init(s->loop, &s->timer);
	s->timer.data = s;
	s->handles = 2;
	buf_init(&s->plain);
	buf_init(&s->body);
	snprintf(s->host, sizeof(s->host), "%s", policy_hostname(s->pol));
	addr_fmt((struct sockaddr *)&conn->client, s->cstr, sizeof(s->cstr));
	addr_fmt((struct sockaddr *)&conn->orig_dst, s->dstr, sizeof(s->dstr));
	/* TCP_NODELAY came with the socket from the listener */
	tlsmode = s->pol->starttls[conn->dir];
	if (tlsmode != POLICY_TLS_STRIP &&
	    (s->tls_ctx = tls_contexts(s->pol)) != NULL)
		s->offer_tls = 1;
	/* mail addressed to the gateway itself is the MTA's (accept-to-box) */
	s->relay_mode = conn->dir == POLICY_DIR_OUT &&
	    !addr_is_self((struct sockaddr *)&conn->orig_dst) &&
	    policy_honour_client_server(s->pol,
	    (struct sockaddr *)&conn->client, conn->port) == 1;
	s->cap_size = s->pol->limits.size;
	s->cap_enhanced = 1;
	smtp_reader_init(&s->in, s->relay_mode ? SMTPD_AUTHLINE :
	    s->pol->limits.cmd_line - 2);
	log_info("session=%llu client=%s orig_dst=%s dir=%s path=%s "
	    "starttls=%s", (unsigned long long)conn->id, s->cstr, s->dstr,
	    policy_dir_name(conn->dir), s->relay_mode ? "relay" : "mta",
	    s->offer_tls ? policy_starttls_name(tlsmode) : "no");
	if (s->set->shutting_down) {
		session_421(s, "shutdown", "421 4.3.2 %s Service shutting down",
		    s->host);
		return;
	}
	if (own_port(s)) {
		session_421(s, "loop", "421 4.3.5 %s Error: connection to "
		    "the proxy itself", s->host);
		return;
	}
	if (conn->refuse != NULL && strcmp(conn->refuse, "sessions") == 0) {
		/* over the global session cap (listener.c) */
		session_421(s, conn->refuse, "421 4.3.2 %s Error: too many "
		    "connections, try again later", s->host);
		return;
	}
	if (conn->refuse != NULL) {
		/* over a connection limit (listener.c): before any upstream */
		session_421(s, conn->refuse, "421 4.7.0 %s Too many "
		    "connections from your address", s->host);
		return;
	}
	if (s->relay_mode) {
		enter_state(s, S_CONNECT);
		relay_start(s);
		return;
	}
	enter_state(s, S_CMD);
	snprintf(greeting, sizeof(greeting), "220 %s ESMTP\r\n", s->host);
	session_write(s, greeting, strlen(greeting));
	session_arm(s, s->pol->limits.t_cmd);
	session_wake(s);
}

struct proxy_sessions *
proxy_sessions_new(void)
{
	struct proxy_sessions *ss = xcalloc(1, sizeof(*ss));

	TAILQ_INIT(&ss->list);
	TAILQ_INIT(&ss->commits);
	return ss;
}

/* proxy_sessions_open - any thread: the worker's open sessions */
unsigned
proxy_sessions_open(const struct proxy_sessions *ss)
{
	return atomic_load_explicit(&ss->n, memory_order_relaxed);
}

/*
 * proxy_sessions_committed - the answer for session id's message: a
 * session that is gone (stopped) is not there to answer, and the
 * message, if queued, is delivered all the same
 */
void
proxy_sessions_committed(struct proxy_sessions *ss, uint64_t id, int status,
    const char *id_or_reason)
{
	struct session *s;

	TAILQ_FOREACH(s, &ss->commits, centry)
		if (s->conn.id == id) {
			mta_committed(s, status, id_or_reason);
			return;
		}
	log_info("session=%llu gone before its commit: status=%s %s",
	    (unsigned long long)id, status == 0 ? "queued" : "failed",
	    id_or_reason);
}

/* proxy_sessions_shutdown - idle sessions go now, busy ones at the next
 * command */
void
proxy_sessions_shutdown(struct proxy_sessions *ss)
{
	struct session *s, *next;

	ss->shutting_down = 1;
	for (s = TAILQ_FIRST(&ss->list); s != NULL; s = next) {
		next = TAILQ_NEXT(s, entry);
		if (s->state == S_CMD && s->npending == 0 &&
		    s->txn.from == NULL)
			session_421(s, "shutdown", "421 4.3.2 %s Service "
			    "shutting down", s->host);
	}
}

void
proxy_sessions_stop(struct proxy_sessions *ss)
{
	struct session *s, *next;

	ss->shutting_down = 1;
	ss->stopping = 1;
	for (s = TAILQ_FIRST(&ss->list); s != NULL; s = next) {
		next = TAILQ_NEXT(s, entry);
		session_close(s, "stop");
	}
}
