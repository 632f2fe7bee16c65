/*
 * smtpd.c - the server side of every proxied SMTP session, on both
 * listeners: the RFC 5321 state machine toward the client, its limits and
 * timeouts, STARTTLS toward the client, AUTH toward the client,
 * pipelining (input is a stream, replies leave in command order), and
 * DATA read and checked.  Where the mail goes is a sink (sink.h), chosen
 * at accept:
 *
 *  - the live relay (sink_relay.c): outgoing, and policy honours the
 *    server the client dialled;
 *  - the queue (sink_queue.c): every other session, the MTA path.
 *
 * The core owes the client one reply per command, in order: its own, or
 * the one the sink gives for the command it was handed.
 *
 * Message content with a bare CR, a bare LF or a NUL, or a line over the
 * text line limit, is refused as a whole (550 5.6.0 at the final dot);
 * the sink drops it (sink->abort).  Commands must end in CRLF.
 */
#include <sys/queue.h>
#include <sys/socket.h>
#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <uv.h>

#include "../common/addr.h"
#include "../common/buf.h"
#include "../common/counter.h"
#include "../common/log.h"
#include "../common/smtp.h"
#include "../common/tls.h"
#include "../common/tls_count.h"
#include "../common/xmalloc.h"
#include "../mta/mta.h"
#include "../policy/policy.h"
#include "proxy.h"
#include "milter.h"
#include "sink.h"

#define SMTPD_AUTHLINE		12288	/* RFC 4954 4. */
#define SMTPD_MAXPIPE		100	/* replies owed before input stops */
#define SMTPD_OUT_HIWAT		(64 * 1024)
#define SMTPD_OUT_LOWAT		(16 * 1024)
#define SMTPD_RATE_GRACE	30	/* seconds of DATA before min_rate */
#define SMTPD_ENVID_MAX		100
#define SMTPD_ORCPT_MAX		500
#define SMTPD_LOG_RCPTS		5	/* recipients named in a log line */

enum smtpd_state {
	S_GREET = 0,	/* waiting for the sink's greeting */
	S_CMD,		/* reading commands */
	S_WAIT,		/* input held until a gating command's reply */
	S_AUTH,		/* the next line answers a 334 */
	S_DATA,		/* reading message content */
	S_TLS,		/* STARTTLS handshake with the client */
	S_QUIT,		/* last reply queued, shutting the client side */
	S_CLOSING,	/* the client side is done; the sink owes the answer
			   for the message (by id): close when it comes */
	S_CLOSED	/* handles closing */
};

static const char *smtpd_state_names[] = {
	"greet", "cmd", "wait", "auth", "data", "tls", "quit", "closing",
	"closed"
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
	int			 sink;		/* answered by the sink */
	int			 gate;		/* input waits for it */
	int			 silent;	/* the client does not see it */
	int			 ready;
	int			 code;
	struct buf		 text;		/* CRLF lines */
};

/* the current mail transaction, as the core counts it (the MAIL
 * command itself is env.mail: the sink reads it) */
struct txn {
	unsigned		 nsent;		/* RCPTs taken for a reply */
	struct buf		 tolog;		/* "<a>,<b>" for the log line */
	unsigned		 nlog;		/* recipients in tolog */
	uint64_t		 start;		/* uv_now at MAIL */
};

/*
 * One session.  Flags that stay flags: reading (whether libuv reads,
 * which follows from the state and the backlog, not a state of its own),
 * out_wait (the client's write backlog, in any state), rderr (an error
 * read ahead, kept until the input before it is taken), offer_tls and
 * authed (facts that hold across states), awaited (membership of
 * set->commits).
 */
struct session {
	enum smtpd_state	 state;
	struct sink_env		 env;		/* what the sink may read */
	const struct sink_ops	*ops;
	struct sink		*sink;		/* NULL before the greeting's
						   start and after close */
	struct proxy_sessions	*set;		/* that worker's sessions */
	uv_tcp_t		*client;	/* owned */
	uv_timer_t		 timer;
	uint64_t		 t_due;		/* timeout (loop ms), t_ms long */
	uint64_t		 t_ms;
	uv_shutdown_t		 sreq;
	int			 handles;	/* open handles; free at 0 */
	struct tls_cork		 out;		/* replies not yet written */
	SSL_CTX			*tls_ctx;	/* referenced, or NULL */
	struct buf		 plain;		/* decrypted input */
	struct smtp_reader	 in;
	TAILQ_HEAD(, pending)	 replies;
	unsigned		 npending;
	struct pending		*owed;		/* the reply owed to the command
						   being handed to the sink */
	int			 handing;	/* inside that sink op */
	int			 reading;
	int			 out_wait;	/* paused for the client */
	int			 rderr;		/* EOF or error, read while
						   input was held */
	const char		*disposition;	/* why the session ended */
	unsigned		 path;		/* proxy_session_path[] */
	unsigned		 errors;
	int			 offer_tls;
	struct sink_caps	 caps;		/* offered to the client */
	struct txn		 txn;
	/* DATA */
	struct smtp_data	 data;
	const char		*refuse;	/* reply at the dot, or NULL */
	const char		*refuse_why;	/* for the log */
	uint64_t		 rate_start;	/* min_rate window */
	uint64_t		 rate_bytes;	/* raw bytes read in it */
	int			 awaited;	/* in set->commits */
	TAILQ_ENTRY(session)	 entry;
	TAILQ_ENTRY(session)	 centry;	/* set->commits */
};

#define ENV_SESSION(e) ((struct session *)(void *)((char *)(e) - \
	offsetof(struct session, env)))

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
	/* counters: this worker moves them, "stats" reads them */
	counter_t		 started[2][PROXY_NPATH];
	counter_t		 ended[2][PROXY_NPATH];
	counter_t		 ended_by[PROXY_NDISP];
	counter_t		 refused_by[PROXY_NREASON];
};

/* the label values of the counters (proxy.h), each the word the log
 * says: a session's disposition=, a refused message's reason= made a
 * few kinds (a milter's reason is its own text) */
const char *const proxy_session_path[PROXY_NPATH] = { "relay", "mta" };
const char *const proxy_session_disp[PROXY_NDISP] = {
	"quit", "client-closed", "client-write-error", "output-stalled",
	"timeout", "tls-timeout", "tls-failed", "too-many-messages",
	"too-many-errors", "too-slow", "shutdown", "stop", "loop",
	"sessions", "connections-per-client", "connection-rate",
	"upstream-421", "upstream-error", "upstream-lost",
	"upstream-unreachable", "upstream-refused", "other"
};
const char *const proxy_session_reason[PROXY_NREASON] = {
	"too-big", "line-too-long", "bad-content", "too-many-hops",
	"spool-write", "milter", "server", "other"
};

/* kind - the index of word in names (n of them, the last "other") */
static unsigned
kind(const char *const *names, unsigned n, const char *word)
{
	unsigned i;

	for (i = 0; i + 1 < n; i++)
		if (strcmp(names[i], word) == 0)
			return i;
	return n - 1;
}

/*
 * refused_reason - the kind of a refused message's reason= (why it was
 * refused, or NULL: the sink passed on a reply of its own, the upstream
 * server's on the live relay)
 */
static unsigned
refused_reason(const char *why)
{
	if (why == NULL)
		return kind(proxy_session_reason, PROXY_NREASON, "server");
	if (strcmp(why, "too big to hold for the milters") == 0)
		why = "too-big";
	else if (strcmp(why, "line too long") == 0)
		why = "line-too-long";
	else if (strcmp(why, "bare CR") == 0 || strcmp(why, "bare LF") == 0 ||
	    strcmp(why, "NUL") == 0)
		why = "bad-content";
	else if (strstr(why, "milter") != NULL)
		why = "milter";
	return kind(proxy_session_reason, PROXY_NREASON, why);
}

void
proxy_sessions_sum(const struct proxy_sessions *ss,
    struct proxy_session_sums *sum)
{
	unsigned d, p, i;

	for (d = 0; d < 2; d++)
		for (p = 0; p < PROXY_NPATH; p++) {
			sum->started[d][p] += counter_get(&ss->started[d][p]);
			sum->ended[d][p] += counter_get(&ss->ended[d][p]);
		}
	for (i = 0; i < PROXY_NDISP; i++)
		sum->ended_by[i] += counter_get(&ss->ended_by[i]);
	for (i = 0; i < PROXY_NREASON; i++)
		sum->refused_by[i] += counter_get(&ss->refused_by[i]);
}

/*
 * proxy_session_sums_print - the lines FAMILY.LABEL...=N, which the
 * metrics endpoint exposes as labelled series (daemon/metrics.c).  The
 * open sessions are those started less those ended: read apart, an end
 * may be counted before its start, never below 0.
 */
void
proxy_session_sums_print(const struct proxy_session_sums *sum,
    struct buf *out)
{
	unsigned d, p, i;

	for (d = 0; d < 2; d++)
		for (p = 0; p < PROXY_NPATH; p++) {
			buf_printf(out, "sessions.%s.%s=%llu\n",
			    policy_dir_name(d), proxy_session_path[p],
			    (unsigned long long)sum->started[d][p]);
			buf_printf(out, "sessions_open.%s.%s=%llu\n",
			    policy_dir_name(d), proxy_session_path[p],
			    sum->started[d][p] > sum->ended[d][p] ?
			    (unsigned long long)(sum->started[d][p] -
			    sum->ended[d][p]) : 0ULL);
		}
	for (i = 0; i < PROXY_NDISP; i++)
		buf_printf(out, "sessions_ended.%s=%llu\n",
		    proxy_session_disp[i],
		    (unsigned long long)sum->ended_by[i]);
	for (i = 0; i < PROXY_NREASON; i++)
		buf_printf(out, "messages_refused.%s=%llu\n",
		    proxy_session_reason[i],
		    (unsigned long long)sum->refused_by[i]);
}

/*
 * The server TLS context, shared by every worker under smtpd_tls_mtx
 * (taken once per session, never per byte): made once per policy
 * snapshot (the snapshot held referenced so that its address is not
 * reused), and each session takes its own reference to it.  The client
 * one toward servers is common/tls.c's, shared by every SMTP client.
 */
static pthread_mutex_t		 smtpd_tls_mtx = PTHREAD_MUTEX_INITIALIZER;
static SSL_CTX			*srv_ctx;
static struct policy		*srv_ctx_pol;

static void	session_wake(struct session *);
static void	session_flush(struct session *);
static void	session_close(struct session *, const char *);
static void	session_arm(struct session *, unsigned);
static void	session_read_cb(uv_stream_t *, ssize_t, const uv_buf_t *);

/* ending - 1 once the session says no more to the client */
static int
ending(const struct session *s)
{
	return s->state == S_QUIT || s->state == S_CLOSING ||
	    s->state == S_CLOSED;
}

/* enter_state - the one place the session's state changes */
static void
enter_state(struct session *s, enum smtpd_state st)
{
	if (s->state == st)
		return;
	log_debug("session=%llu state %s -> %s",
	    (unsigned long long)s->env.conn.id, smtpd_state_names[s->state],
	    smtpd_state_names[st]);
	s->state = st;
}

/* ---------------------------------------------------------------- TLS */

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
	if (tls_cork_add(&s->out, s->env.tls, &b, 1) < 0)
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
pending_new(struct session *s, enum cmd cmd, int sink)
{
	struct pending *p;

	p = xcalloc(1, sizeof(*p));
	p->cmd = cmd;
	p->sink = sink;
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
	if (p == s->owed)
		s->owed = NULL;
	buf_free(&p->text);
	free(p);
}

/* pending_fill - set a reply's text from "DDD text" */
static void
pending_fill(struct session *s, struct pending *p, const char *line)
{
	char tmp[1024];

	snprintf(tmp, sizeof(tmp), "%s", line);
	if (!s->caps.enhanced)
		strip_enhanced(tmp);
	p->code = atoi(tmp);
	buf_reset(&p->text);
	buf_puts(&p->text, tmp);
	buf_append(&p->text, "\r\n", 2);
	p->ready = 1;
}

/* gate - a reply that input waits for: S_WAIT until it is written */
static struct pending *
gate(struct session *s, enum cmd cmd, int sink)
{
	struct pending *p;

	enter_state(s, S_WAIT);
	p = pending_new(s, cmd, sink);
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

/*
 * owe - cmd is handed to the sink, which answers it (smtpd_sink_reply),
 * from inside the op or later; handed() when the op returns
 */
static void
owe(struct session *s, enum cmd cmd, int gating)
{
	s->owed = gating ? gate(s, cmd, 1) : pending_new(s, cmd, 1);
	s->handing = 1;
}

static void
handed(struct session *s)
{
	s->owed = NULL;
	s->handing = 0;
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
	tls_conn_free(s->env.tls);
	SSL_CTX_free(s->tls_ctx);
	smtp_reader_free(&s->in);
	buf_free(&s->plain);
	free(s->env.helo);
	proxy_conn_done(&s->env.conn);
	policy_unref(s->env.pol);
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

/* session_close - log the end, close the sink, close both handles */
static void
session_close(struct session *s, const char *disposition)
{
	if (s->state == S_CLOSED)
		return;
	if (s->awaited && s->set->stopping) {
		/* the MTA answers by id: an answer for no session is dropped */
		TAILQ_REMOVE(&s->set->commits, s, centry);
		s->awaited = 0;
		log_info("session=%llu commit outstanding at stop",
		    (unsigned long long)s->env.conn.id);
	}
	if (s->awaited) {
		/* the sink still owes the answer: close when it comes */
		if (s->disposition == NULL)
			s->disposition = disposition;
		if (s->reading)
			uv_read_stop((uv_stream_t *)s->client);
		s->reading = 0;
		enter_state(s, S_CLOSING);
		return;
	}
	if (s->disposition != NULL)
		disposition = s->disposition;
	counter_inc(&s->set->ended[s->env.conn.dir][s->path]);
	counter_inc(&s->set->ended_by[kind(proxy_session_disp, PROXY_NDISP,
	    disposition)]);
	log_info("session=%llu client=%s orig_dst=%s dir=%s disposition=%s "
	    "messages=%u errors=%u", (unsigned long long)s->env.conn.id,
	    s->env.cstr, s->env.dstr, policy_dir_name(s->env.conn.dir),
	    disposition, s->env.msgs, s->errors);
	enter_state(s, S_CLOSED);
	txn_reset(s);
	if (s->sink != NULL) {
		s->ops->close(s->sink);
		s->sink = NULL;
	}
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
	    "connection reset", (unsigned long long)s->env.conn.id, s->env.cstr,
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
	if (ending(s))
		return;
	if (s->disposition == NULL)
		s->disposition = disposition;
	enter_state(s, S_QUIT);
	if (s->reading)
		uv_read_stop((uv_stream_t *)s->client);
	s->reading = 0;
	if (s->sink != NULL && s->ops->quit != NULL)
		s->ops->quit(s->sink);
	/* a client that reads nothing more must not hold us: see
	 * session_timeout_cb */
	session_arm(s, s->env.pol->limits.t_cmd);
	if (s->env.tls == NULL && tls_cork_finish(&s->out) == 1) {
		session_close(s, s->disposition);
		return;
	}
	tls_cork_flush(&s->out);	/* the last replies before the FIN */
	if (s->env.tls != NULL)
		tls_conn_close(s->env.tls);
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

	if (ending(s))
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
	if (!s->caps.enhanced)
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
	uint64_t now = uv_now(s->env.loop);

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
		    s->env.host);
		break;
	case S_DATA:
		if (!s->reading) {
			/* paused for a slow upstream: not the client's fault */
			uv_timer_again(&s->timer);
			return;
		}
		session_421(s, "timeout", "421 4.4.2 %s Error: timeout exceeded",
		    s->env.host);
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

	s->t_due = uv_now(s->env.loop) + ms;
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
	free(s->env.mail.from);
	free(s->env.mail.envid);
	memset(&s->env.mail, 0, sizeof(s->env.mail));
	buf_free(&s->txn.tolog);
	memset(&s->txn, 0, sizeof(s->txn));
	if (s->sink != NULL)
		s->ops->reset(s->sink);
}

/* log_message - the one line per message: what happened and why */
static void
log_message(struct session *s, const char *disposition, const char *replyl)
{
	char rbuf[256];
	size_t n;
	uint64_t now = uv_now(s->env.loop);

	if (strcmp(disposition, "rejected") == 0 ||
	    strcmp(disposition, "tempfail") == 0)
		counter_inc(&s->set->refused_by[refused_reason(s->refuse_why)]);
	snprintf(rbuf, sizeof(rbuf), "%s", replyl != NULL ? replyl : "");
	n = strcspn(rbuf, "\r\n");
	rbuf[n] = '\0';
	/* the reply may be a server's (the live relay): escaped, like
	 * every value from outside */
	log_info("session=%llu client=%s orig_dst=%s dir=%s from=<%s> "
	    "to=%s%s nrcpt=%u size=%llu disposition=%s delay=%.3fs%s%s "
	    "reply=\"%s\"",
	    (unsigned long long)s->env.conn.id, s->env.cstr, s->env.dstr,
	    policy_dir_name(s->env.conn.dir), log_word(s->env.mail.from),
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

/* ehlo_done - a 250 to EHLO: the sink's capability lines, and ours */
static void
ehlo_done(struct session *s, struct pending *p, const struct sink_caps *c,
    const struct buf *lines)
{
	s->caps = *c;
	buf_reset(&p->text);
	buf_append(&p->text, buf_head(lines), buf_avail(lines));
	if (s->offer_tls && s->env.tls == NULL)
		buf_puts(&p->text, "250-STARTTLS\r\n");
	ehlo_finish(&p->text);
	p->code = 250;
	p->ready = 1;
}

/* ---------------------------------------------------------------- flush */

static void	data_begin(struct session *);
static void	tls_begin(struct session *);

/* apply_sink - what a sink's reply does to the transaction */
static void
apply_sink(struct session *s, struct pending *p)
{
	int ok = p->code >= 200 && p->code < 300;

	switch (p->cmd) {
	case C_MAIL:
		if (!ok)
			txn_reset(s);
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
		log_message(s, p->code < 300 ? s->ops->accepted :
		    p->code < 500 ? "tempfail" : "rejected",
		    buf_head(&p->text));
		if (p->code < 300)
			s->env.msgs++;
		txn_reset(s);
		s->refuse = s->refuse_why = NULL;
		break;
	case C_AUTH:
		if (p->code == 334) {
			enter_state(s, S_AUTH);
			return;
		}
		if (p->code == 235) {
			s->env.authed = 1;
			log_info("session=%llu client=%s auth=ok",
			    (unsigned long long)s->env.conn.id, s->env.cstr);
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
	if (p->sink)
		apply_sink(s, p);
	if (p->code == 421) {
		session_quit(s, p->sink ? "upstream-421" : "421");
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
	    !ending(s)) {
		TAILQ_REMOVE(&s->replies, p, entry);
		s->npending--;
		if (p == s->owed)
			s->owed = NULL;
		session_apply(s, p, &p->text);
		buf_free(&p->text);
		free(p);
	}
}

/* ---------------------------------------------------------------- sink */

/* owed_reply - what a sink answers: the reply owed to the command being
 * handed over, else the oldest one it owes */
static struct pending *
owed_reply(struct session *s)
{
	struct pending *p;

	if (s->owed != NULL)
		return s->owed;
	TAILQ_FOREACH(p, &s->replies, entry)
		if (p->sink && !p->ready)
			return p;
	return NULL;
}

/* sink_replied - write what is ready; from outside a sink op, input
 * may go on */
static void
sink_replied(struct session *s)
{
	int handing = s->handing;

	session_flush(s);
	if (!handing)
		session_wake(s);
}

void
smtpd_sink_greeting(struct sink_env *e, const char *text, size_t len,
    const char *refused)
{
	struct session *s = ENV_SESSION(e);

	session_write(s, text, len);
	if (refused != NULL) {
		session_quit(s, refused);
		return;
	}
	enter_state(s, S_CMD);
	session_arm(s, s->env.pol->limits.t_cmd);
	session_wake(s);
}

/*
 * closing_answer - the answer for the message of a session that closed
 * meanwhile (S_CLOSING): logged, and the session goes
 */
static void
closing_answer(struct session *s, const char *line)
{
	struct pending *p = owed_reply(s);
	int code = atoi(line);

	log_message(s, code < 300 ? s->ops->accepted : "tempfail", line);
	if (code < 300)
		s->env.msgs++;
	if (p != NULL)
		pending_free(s, p);
	session_close(s, s->disposition);
}

int
smtpd_sink_reply(struct sink_env *e, const char *line)
{
	struct session *s = ENV_SESSION(e);
	struct pending *p;

	if (s->state == S_CLOSING) {
		closing_answer(s, line);
		return 0;
	}
	if (ending(s) || (p = owed_reply(s)) == NULL)
		return -1;
	pending_fill(s, p, line);
	sink_replied(s);
	return 0;
}

int
smtpd_sink_raw(struct sink_env *e, const struct smtp_reply *rep)
{
	struct session *s = ENV_SESSION(e);
	struct sink_caps c;
	struct pending *p;
	struct buf lines;

	if (ending(s))
		return -1;
	if ((p = owed_reply(s)) == NULL) {
		session_421(s, "upstream-error", "421 4.4.2 %s Error: "
		    "unexpected reply from upstream", s->env.host);
		return -1;
	}
	if (p->cmd == C_EHLO && rep->code == 250 && s->ops->ehlo != NULL) {
		buf_init(&lines);
		s->ops->ehlo(s->sink, rep, &lines, &c);
		ehlo_done(s, p, &c, &lines);
		buf_free(&lines);
	} else {
		p->code = rep->code;
		p->ready = 1;
		buf_append(&p->text, buf_head(&rep->text),
		    buf_avail(&rep->text));
	}
	sink_replied(s);
	return 0;
}

void
smtpd_sink_ehlo(struct sink_env *e, const struct sink_caps *c,
    const struct buf *lines)
{
	struct session *s = ENV_SESSION(e);
	struct pending *p;

	if (ending(s) || (p = owed_reply(s)) == NULL)
		return;
	ehlo_done(s, p, c, lines);
	sink_replied(s);
}

void
smtpd_sink_caps(struct sink_env *e, const struct sink_caps *c)
{
	ENV_SESSION(e)->caps = *c;
}

void
smtpd_sink_wait(struct sink_env *e)
{
	struct session *s = ENV_SESSION(e);

	if (s->owed == NULL)
		return;
	s->owed->gate = 1;
	enter_state(s, S_WAIT);
}

void
smtpd_sink_silent(struct sink_env *e)
{
	struct session *s = ENV_SESSION(e);
	struct pending *p;

	if (s->owed == NULL)
		return;
	p = xcalloc(1, sizeof(*p));
	p->cmd = C_NONE;
	p->sink = 1;
	p->silent = 1;
	buf_init(&p->text);
	TAILQ_INSERT_BEFORE(s->owed, p, entry);
	s->npending++;
}

struct milter_chain *
smtpd_sink_milters(struct sink_env *e, unsigned edits,
    void (*done)(void *, const struct milter_answer *),
    void (*wake)(void *), void *arg)
{
	struct milter_info mi;

	memset(&mi, 0, sizeof(mi));
	mi.session_id = e->conn.id;
	mi.client = e->conn.client;
	mi.orig_dst = e->conn.orig_dst;
	mi.hostname = e->host;
	mi.port = e->conn.port;
	mi.edits = edits;
	return milter_chain_new(e->loop, e->pol,
	    policy_milters(e->pol, e->conn.dir, e->conn.port), &mi,
	    done, wake, arg);
}

void
smtpd_sink_reason(struct sink_env *e, const char *why)
{
	ENV_SESSION(e)->refuse_why = why;
}

void
smtpd_sink_log_rcpt(struct sink_env *e, const char *addr)
{
	tolog_add(ENV_SESSION(e), addr);
}

/* smtpd_sink_rule_reply - a RCPT an explicit rule answers here: discard
 * 250 (taken, never delivered), tempfail 451, reject 550, with the rule's
 * text if it has one */
void
smtpd_sink_rule_reply(struct sink_env *e, enum policy_verdict v,
    const char *msg)
{
	char line[512];

	switch (v) {
	case POLICY_RELAY:
		return;
	case POLICY_DISCARD:
		smtpd_sink_reply(e, "250 2.1.5 Ok");
		return;
	case POLICY_TEMPFAIL:
		snprintf(line, sizeof(line), "451 %s",
		    msg ? msg : "4.7.1 Try again later");
		break;
	case POLICY_REJECT:
	default:
		snprintf(line, sizeof(line), "550 %s",
		    msg ? msg : "5.7.1 Rejected");
		break;
	}
	smtpd_sink_reply(e, line);
}

void
smtpd_sink_wake(struct sink_env *e)
{
	session_wake(ENV_SESSION(e));
}

void
smtpd_sink_lost(struct sink_env *e, const char *disposition,
    const char *line)
{
	struct session *s = ENV_SESSION(e);
	char tmp[512];

	/* the message's log line names the reply the client really gets */
	snprintf(tmp, sizeof(tmp), "%s", line);
	if (!s->caps.enhanced)
		strip_enhanced(tmp);
	if (s->state == S_DATA || s->env.mail.from != NULL)
		log_message(s, "tempfail", tmp);
	session_421(s, disposition, "%s", tmp);
}

void
smtpd_sink_421(struct sink_env *e, const char *disposition,
    const char *line)
{
	session_421(ENV_SESSION(e), disposition, "%s", line);
}

void
smtpd_sink_await(struct sink_env *e, int on)
{
	struct session *s = ENV_SESSION(e);

	if (on && !s->awaited)
		TAILQ_INSERT_TAIL(&s->set->commits, s, centry);
	else if (!on && s->awaited)
		TAILQ_REMOVE(&s->set->commits, s, centry);
	s->awaited = on;
}

/* ---------------------------------------------------------------- DATA */

/* cmd_max - the longest command line read: AUTH's, where it is carried */
static size_t
cmd_max(const struct session *s)
{
	return s->ops->auth != NULL ? SMTPD_AUTHLINE :
	    s->env.pol->limits.cmd_line - 2;
}

static void
data_begin(struct session *s)
{
	enter_state(s, S_DATA);
	smtp_data_init(&s->data);
	smtp_reader_setmax(&s->in, s->env.pol->limits.text_line - 2);
	s->refuse = s->refuse_why = NULL;
	s->rate_start = uv_now(s->env.loop);
	s->rate_bytes = 0;
	session_arm(s, s->env.pol->limits.t_data);
}

/* data_refuse - the message is refused (said at the dot); the sink drops
 * it, unless it is dropping it anyway */
static void
data_refuse(struct session *s, const char *replyl, const char *why)
{
	if (s->refuse != NULL || s->ops->abort(s->sink) == 0)
		return;
	s->refuse = replyl;
	s->refuse_why = why;
}

/* data_flush - the sink moves its batched content on, before the reader's
 * buffer is fed again */
static void
data_flush(struct session *s)
{
	const char *line, *why = NULL;

	if (s->refuse == NULL &&
	    (line = s->ops->flush(s->sink, &why)) != NULL)
		data_refuse(s, line, why);
}

/* data_end - the terminator: the refusal, or the sink's answer */
static void
data_end(struct session *s)
{
	smtp_reader_setmax(&s->in, cmd_max(s));
	session_arm(s, s->env.pol->limits.t_cmd);
	if (s->refuse != NULL) {
		reply_gate(s, C_DOT, "%s", s->refuse);
		return;
	}
	owe(s, C_DOT, 1);
	s->ops->end(s->sink);
	handed(s);
}

/* data_content - a run of content lines: refuse the message, or pass it on */
static void
data_content(struct session *s, const char *p, size_t n)
{
	const char *line, *why = NULL;

	if (s->refuse != NULL)
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
	if (s->data.size > s->env.pol->limits.size) {
		data_refuse(s, "552 5.3.4 Message size exceeds fixed limit",
		    "too-big");
		return;
	}
	/* a sink that adds a hop checks the count; a live relay's upstream
	 * counts its own */
	if ((s->ops->flags & SINK_F_HOP) &&
	    s->data.received >= s->env.pol->limits.hops) {
		data_refuse(s, "554 5.4.6 Message refused: too many hops "
		    "(Received: fields), a mail loop?", "too-many-hops");
		return;
	}
	if (n == 0)
		return;
	if ((line = s->ops->content(s->sink, p, n, &why)) != NULL)
		data_refuse(s, line, why);
}

/* data_input - take buffered content; 0 when a complete line is missing */
static int
data_input(struct session *s)
{
	const char *p;
	size_t n;

	switch (smtp_data_span(&s->in, &s->data,
	    (s->ops->flags & SINK_F_STUFFED) != 0, &p, &n)) {
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
			    != 0 && (!s->caps.eightbit ||
			    strcasecmp(pr->value, "8BITMIME") != 0)))
				return -1;
		} else if (mail && strcmp(pr->key, "SMTPUTF8") == 0 &&
		    s->caps.smtputf8) {
			if (pr->value != NULL)
				return -1;
		} else if (mail && strcmp(pr->key, "RET") == 0 && s->caps.dsn) {
			if (pr->value == NULL || (strcasecmp(pr->value, "FULL")
			    != 0 && strcasecmp(pr->value, "HDRS") != 0))
				return -1;
		} else if (mail && strcmp(pr->key, "ENVID") == 0 &&
		    s->caps.dsn) {
			/* RFC 3461 4.4: printable once decoded; a DSN
			 * carries it in a header field */
			*why = "501 5.5.4 Invalid ENVID: must be xtext of "
			    "printable US-ASCII";
			if (pr->value == NULL || strlen(pr->value) >
			    SMTPD_ENVID_MAX ||
			    smtp_xtext_printable(pr->value, SMTPD_ENVID_MAX)
			    == -1)
				return -1;
		} else if (mail && strcmp(pr->key, "AUTH") == 0 &&
		    s->caps.auth) {
			if (pr->value == NULL || (strcmp(pr->value, "<>") != 0 &&
			    smtp_xtext_valid(pr->value) == -1))
				return -1;
		} else if (!mail && strcmp(pr->key, "NOTIFY") == 0 &&
		    s->caps.dsn) {
			if (pr->value == NULL || (strcasecmp(pr->value, "NEVER")
			    != 0 && strspn(pr->value, "SUCCESFAILREDYLAsucces"
			    "failredyla,") != strlen(pr->value)))
				return -1;
		} else if (!mail && strcmp(pr->key, "ORCPT") == 0 &&
		    s->caps.dsn) {
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

static void
path_limits(struct session *s, struct smtp_limits *lim, int utf8)
{
	lim->localpart = s->env.pol->limits.localpart;
	lim->domain = s->env.pol->limits.domain;
	lim->utf8 = utf8;
}

/* ---------------------------------------------------------------- commands */

/* need_tls - 1 (and a 530 said) if policy requires STARTTLS first */
static int
need_tls(struct session *s, enum cmd cmd)
{
	if (s->env.pol->starttls[s->env.conn.dir] != POLICY_TLS_REQUIRE ||
	    s->env.tls != NULL)
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
	size_t n;

	if (!valid_helo(arg)) {
		reply(s, ehlo ? C_EHLO : C_HELO, "501 5.5.4 Syntax: %s hostname",
		    ehlo ? "EHLO" : "HELO");
		return;
	}
	n = strcspn(arg, " ");
	free(s->env.helo);
	s->env.helo = xstrndup(arg, n);
	owe(s, ehlo ? C_EHLO : C_HELO, 1);
	s->ops->helo(s->sink, ehlo, l);
	handed(s);
}

/* mail_params - record MAIL's parameters in the transaction */
static void
mail_params(struct session *s, const struct smtp_path *path)
{
	const char *v;

	if ((v = smtp_path_param(path, "SIZE")) != NULL)
		s->env.mail.size = strtoull(v, NULL, 10);
	if ((v = smtp_path_param(path, "BODY")) != NULL)
		s->env.mail.body8 = strcasecmp(v, "8BITMIME") == 0;
	s->env.mail.smtputf8 = smtp_path_param(path, "SMTPUTF8") != NULL;
	if ((v = smtp_path_param(path, "RET")) != NULL)
		s->env.mail.ret = strcasecmp(v, "FULL") == 0 ? MTA_RET_FULL :
		    MTA_RET_HDRS;
	if ((v = smtp_path_param(path, "ENVID")) != NULL)
		s->env.mail.envid = xstrdup(v);
}

static void
cmd_mail(struct session *s, const char *arg, const struct smtp_line *l)
{
	struct smtp_limits lim;
	struct smtp_path path;
	const char *why;

	if (need_tls(s, C_MAIL))
		return;
	if (s->env.helo == NULL) {
		reply(s, C_MAIL, "503 5.5.1 Error: send HELO/EHLO first");
		return;
	}
	if (!(s->ops->flags & SINK_F_SEQUENCE) && s->env.mail.from != NULL) {
		reply(s, C_MAIL, "503 5.5.1 Error: nested MAIL command");
		return;
	}
	if (s->env.msgs >= s->env.pol->limits.msgs_per_session) {
		session_421(s, "too-many-messages", "421 4.7.0 %s Error: too "
		    "many messages in one session", s->env.host);
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
	    smtp_path_param(&path, "SIZE"), NULL, 10) >
	    s->env.pol->limits.size) {
		why = "552 5.3.4 Message size exceeds fixed limit";
		goto refuse;
	}
	txn_reset(s);
	s->env.mail.from = xstrdup(path.addr);
	s->txn.start = uv_now(s->env.loop);
	mail_params(s, &path);
	smtp_path_free(&path);
	owe(s, C_MAIL, 0);
	s->ops->mail(s->sink, l);
	handed(s);
	return;
refuse:
	smtp_path_free(&path);
	reply(s, C_MAIL, "%s", why);
}

static void
cmd_rcpt(struct session *s, const char *arg, const struct smtp_line *l)
{
	struct smtp_limits lim;
	struct smtp_path path;
	const char *why;

	if (need_tls(s, C_RCPT))
		return;
	if (!(s->ops->flags & SINK_F_SEQUENCE) && s->env.mail.from == NULL) {
		reply(s, C_RCPT, "503 5.5.1 Error: need MAIL command");
		return;
	}
	if (s->txn.nsent >= s->env.pol->limits.rcpts) {
		reply(s, C_RCPT, "452 4.5.3 Error: too many recipients");
		return;
	}
	path_limits(s, &lim, s->env.mail.smtputf8);
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
	owe(s, C_RCPT, 0);
	s->ops->rcpt(s->sink, &path, l);
	handed(s);
	smtp_path_free(&path);
}

/* cmd_data - the sink says 354, or why not */
static void
cmd_data(struct session *s, const char *arg)
{
	if (need_tls(s, C_DATA))
		return;
	if (*arg != '\0') {
		reply(s, C_DATA, "501 5.5.4 Syntax: DATA");
		return;
	}
	owe(s, C_DATA, 1);
	s->ops->data(s->sink);
	handed(s);
}

static void
cmd_starttls(struct session *s, const char *arg)
{
	if (s->env.tls != NULL) {
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
	if (s->ops->auth == NULL || !s->caps.auth) {
		if (s->env.tls == NULL && s->ops->auth_tls != NULL &&
		    s->ops->auth_tls(s->sink))
			reply(s, C_AUTH, "538 5.7.11 Encryption required for "
			    "requested authentication mechanism");
		else
			reply(s, C_AUTH, "503 5.5.1 Error: authentication "
			    "not enabled");
		return;
	}
	if (s->env.authed) {
		reply(s, C_AUTH, "503 5.5.1 Error: already authenticated");
		return;
	}
	if (s->env.mail.from != NULL) {
		reply(s, C_AUTH, "503 5.5.1 Error: MAIL transaction in "
		    "progress");
		return;
	}
	owe(s, C_AUTH, 1);
	s->ops->auth(s->sink, l);
	handed(s);
}

/* cmd_local - the commands answered here when the sink does not take them */
static void
cmd_local(struct session *s, enum cmd cmd, const char *arg)
{
	switch (cmd) {
	case C_RSET:
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
	const char *lost;
	char line[512];

	if (s->ops->lost != NULL &&
	    (lost = s->ops->lost(s->sink, line, sizeof(line))) != NULL) {
		/* the sink is gone: QUIT is answered here, the rest is 421 */
		if (cmd == C_QUIT)
			reply_gate(s, cmd, "221 2.0.0 Bye");
		else
			session_421(s, lost, "%s", line);
		return;
	}
	switch (cmd) {
	case C_MAIL:
	case C_RCPT:
	case C_DATA:
	case C_AUTH:
	case C_VRFY:
	case C_EXPN:
		/* the sink's leg is negotiated (TLS) at the first EHLO */
		if ((s->ops->flags & SINK_F_HELO_FIRST) &&
		    s->env.helo == NULL) {
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
		txn_reset(s);
		break;
	default:
		break;
	}
	if (s->ops->verb == NULL) {
		cmd_local(s, cmd, arg);
		return;
	}
	/* passed on as it is */
	owe(s, cmd, cmd == C_QUIT);
	s->ops->verb(s->sink, l);
	handed(s);
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

	session_arm(s, s->env.pol->limits.t_cmd);
	if (s->set->shutting_down) {
		session_421(s, "shutdown", "421 4.3.2 %s Service shutting down",
		    s->env.host);
		return;
	}
	if (s->errors >= s->env.pol->limits.errors) {
		session_421(s, "too-many-errors", "421 4.7.0 %s Error: too "
		    "many errors", s->env.host);
		return;
	}
	arg = smtp_verb(l->data, l->len, verb, sizeof(verb));
	for (i = 0; verbs[i].verb != NULL; i++)
		if (strcmp(verb, verbs[i].verb) == 0)
			break;
	cmd = verbs[i].cmd;
	if (st == SMTP_LINE_TOOLONG ||
	    (l->len > s->env.pol->limits.cmd_line - 2 &&
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

/* auth_line - the client's answer to a 334, to the sink verbatim; a
 * malformed one cancels the exchange */
static void
auth_line(struct session *s, enum smtp_line_status st,
    const struct smtp_line *l)
{
	session_arm(s, s->env.pol->limits.t_cmd);
	owe(s, C_AUTH, 1);
	if (st == SMTP_LINE_TOOLONG || l->flags & (SMTP_LF_BARECR |
	    SMTP_LF_NUL) || !(l->flags & SMTP_LF_CRLF))
		s->ops->auth(s->sink, NULL);
	else
		s->ops->auth(s->sink, l);
	handed(s);
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
		/* a server without PIPELINING gets one command at a time */
		if (!s->caps.pipelining && s->npending > 0)
			return 1;
		break;
	case S_AUTH:
		break;
	case S_DATA:
		if (s->refuse == NULL && s->ops->busy != NULL &&
		    s->ops->busy(s->sink))
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
		data_flush(s);
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
	if (s->state == S_DATA || s->env.mail.from != NULL)
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
		s->rate_start = uv_now(s->env.loop);
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
		    "pipelined bytes", (unsigned long long)s->env.conn.id,
		    s->env.cstr, dropped);
	smtp_reader_discard(&s->in);
	tls_cork_flush(&s->out);	/* the 220 goes in the clear */
	s->env.tls = tls_conn_new(s->tls_ctx, (uv_stream_t *)s->client,
	    TLS_SERVER, NULL);
	enter_state(s, S_TLS);
	session_arm(s, s->env.pol->limits.t_cmd);
}

/* tls_input - ciphertext from the client */
static void
tls_input(struct session *s, const char *p, size_t n)
{
	enum tls_state st;

	st = tls_conn_feed(s->env.tls, p, n, &s->plain);
	if (st == TLS_FAILED) {
		log_info("session=%llu client=%s tls=failed error=\"%s\"",
		    (unsigned long long)s->env.conn.id, s->env.cstr,
		    log_vis(tls_conn_error(s->env.tls)));
		session_close(s, "tls-failed");
		return;
	}
	if (st == TLS_HANDSHAKE)
		return;
	if (s->state == S_TLS) {
		log_info("session=%llu client=%s dir=%s tls=%s",
		    (unsigned long long)s->env.conn.id, s->env.cstr,
		    policy_dir_name(s->env.conn.dir),
		    tls_conn_info(s->env.tls));
		tls_count(proxy_worker_tls(s->env.conn.worker,
		    PROXY_TLS_CLIENT), tls_conn_info(s->env.tls));
		/* RFC 3207 4.2: forget everything said before */
		free(s->env.helo);
		s->env.helo = NULL;
		txn_reset(s);
		enter_state(s, S_CMD);
		session_arm(s, s->env.pol->limits.t_cmd);
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
	unsigned min = s->env.pol->limits.min_rate;

	s->rate_bytes += n;
	session_arm(s, s->env.pol->limits.t_data);
	elapsed = uv_now(s->env.loop) - s->rate_start;
	if (min == 0 || elapsed < SMTPD_RATE_GRACE * 1000)
		return 0;
	bytes = s->rate_bytes;
	s->rate_start = uv_now(s->env.loop);
	s->rate_bytes = 0;
	if (bytes * 1000 / elapsed >= min)
		return 0;
	session_421(s, "too-slow", "421 4.4.2 %s Error: data rate too low",
	    s->env.host);
	return -1;
}

static void
session_read_cb(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
	struct session *s = st->data;
	struct tls_corks *corks = proxy_worker_corks(s->env.conn.worker);

	if (n == 0 || ending(s))
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
	if (s->env.tls != NULL)
		tls_input(s, b->base, (size_t)n);
	else
		smtp_reader_feed(&s->in, b->base, (size_t)n);
	session_wake(s);
	tls_cork_turn(corks);	/* replies and commands of this read, now */
}

/* ---------------------------------------------------------------- start */

/* choose_sink - the live relay where policy honours the server the
 * client dialled; the queue for the rest, and for mail addressed to the
 * gateway itself (accept-to-box) */
static const struct sink_ops *
choose_sink(const struct proxy_conn *conn)
{
	if (conn->dir == POLICY_DIR_OUT &&
	    !addr_is_self((const struct sockaddr *)&conn->orig_dst) &&
	    policy_honour_client_server(conn->policy,
	    (const struct sockaddr *)&conn->client, conn->port) == 1)
		return &sink_relay_ops;
	return &sink_queue_ops;
}

/* own_port - a connection to one of our own listening ports: a loop */
static int
own_port(const struct session *s)
{
	uint16_t port;

	port = addr_port((const struct sockaddr *)&s->env.conn.orig_dst);
	return port == s->env.pol->listen_port[POLICY_DIR_IN] ||
	    port == s->env.pol->listen_port[POLICY_DIR_OUT];
}

void
proxy_session_start(uv_tcp_t *client, struct proxy_conn *conn)
{
	struct session *s;
	enum policy_starttls tlsmode;

	s = xcalloc(1, sizeof(*s));
	s->env.conn = *conn;
	s->set = proxy_worker_sessions(conn->worker);
	s->env.pol = conn->policy;
	s->client = client;
	s->env.loop = client->loop;
	client->data = s;
	tls_cork_init(&s->out, proxy_worker_corks(conn->worker),
	    (uv_stream_t *)client, session_written, s);
	TAILQ_INIT(&s->replies);
	TAILQ_INSERT_TAIL(&s->set->list, s, entry);
	s->set->n++;
	uv_timer_init(s->env.loop, &s->timer);
	s->timer.data = s;
	s->handles = 2;
	buf_init(&s->plain);
	snprintf(s->env.host, sizeof(s->env.host), "%s",
	    policy_hostname(s->env.pol));
	addr_fmt((struct sockaddr *)&conn->client, s->env.cstr,
	    sizeof(s->env.cstr));
	addr_fmt((struct sockaddr *)&conn->orig_dst, s->env.dstr,
	    sizeof(s->env.dstr));
	/* TCP_NODELAY came with the socket from the listener */
	tlsmode = s->env.pol->starttls[conn->dir];
	if (tlsmode != POLICY_TLS_STRIP &&
	    (s->tls_ctx = tls_contexts(s->env.pol)) != NULL)
		s->offer_tls = 1;
	s->ops = choose_sink(conn);
	s->path = strcmp(s->ops->name, "relay") == 0 ? 0 : 1;
	counter_inc(&s->set->started[conn->dir][s->path]);
	s->caps.enhanced = 1;
	smtp_reader_init(&s->in, cmd_max(s));
	log_info("session=%llu client=%s orig_dst=%s dir=%s path=%s "
	    "starttls=%s", (unsigned long long)conn->id, s->env.cstr,
	    s->env.dstr, policy_dir_name(conn->dir), s->ops->name,
	    s->offer_tls ? policy_starttls_name(tlsmode) : "no");
	if (s->set->shutting_down) {
		session_421(s, "shutdown", "421 4.3.2 %s Service shutting down",
		    s->env.host);
		return;
	}
	if (own_port(s)) {
		session_421(s, "loop", "421 4.3.5 %s Error: connection to "
		    "the proxy itself", s->env.host);
		return;
	}
	if (conn->refuse != NULL && strcmp(conn->refuse, "sessions") == 0) {
		/* over the global session cap (listener.c) */
		session_421(s, conn->refuse, "421 4.3.2 %s Error: too many "
		    "connections, try again later", s->env.host);
		return;
	}
	if (conn->refuse != NULL) {
		/* over a connection limit (listener.c): before any upstream */
		session_421(s, conn->refuse, "421 4.7.0 %s Too many "
		    "connections from your address", s->env.host);
		return;
	}
	enter_state(s, S_GREET);
	s->sink = s->ops->open(&s->env);
	s->ops->greet(s->sink);
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
		if (s->env.conn.id == id && s->ops->answer != NULL) {
			s->ops->answer(s->sink, status, id_or_reason);
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
		    s->env.mail.from == NULL)
			session_421(s, "shutdown", "421 4.3.2 %s Service "
			    "shutting down", s->env.host);
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
