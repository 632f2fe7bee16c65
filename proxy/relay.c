/*
 * relay.c - the upstream leg of the outgoing live relay: the marked (and
 * optionally transparently bound) socket to the server the client
 * dialled, its greeting, opportunistic or required STARTTLS negotiated on
 * the first EHLO (a failed opportunistic handshake starts the connection
 * again in plain text), and the in-order delivery of its replies to the
 * session.  Replies are parsed strictly (line length, line count, NUL,
 * bare CR/LF); anything malformed, unsolicited or late kills the leg.
 * Nothing is queued and nothing is retried.
 */
#include <sys/types.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "../common/addr.h"
#include "../common/buf.h"
#include "../common/log.h"
#include "../common/mark.h"
#include "../common/smtp.h"
#include "../common/tls.h"
#include "../common/xmalloc.h"
#include "relay.h"

#define RELAY_MAXLINE	512		/* reply line, CRLF included */
#define RELAY_MAXLINES	100		/* lines in one reply */
#define RELAY_MAXOUT	256		/* commands awaiting replies */
#define RELAY_HIWAT	(256 * 1024)	/* write backlog: pause the client */
#define RELAY_LOWAT	(64 * 1024)	/* ... and resume it */

enum relay_state {
	R_CONNECT = 0,	/* TCP connect in progress */
	R_GREETING,	/* waiting for the server's greeting */
	R_READY,	/* session commands flow, replies go back */
	R_EHLO,		/* our own EHLO, to see STARTTLS */
	R_STARTTLS,	/* waiting for 220 to STARTTLS */
	R_HANDSHAKE,	/* TLS handshake in progress */
	R_REOPEN,	/* handshake failed: closing, to connect in plain */
	R_DEAD,		/* failed, waiting for relay_close() */
	R_CLOSED	/* handles closing */
};

static const char *relay_state_names[] = {
	"connect", "greeting", "ready", "ehlo", "starttls", "handshake",
	"reopen", "dead", "closed"
};

struct relay {
	enum relay_state	 state;
	struct relay_opts	 o;
	const struct relay_cb	*cb;
	void			*arg;
	uv_tcp_t		 tcp;
	uv_timer_t		 timer;
	uv_connect_t		 creq;
	int			 handles;	/* open handles; free at 0 */
	uint64_t		 t_due;		/* reply deadline (loop ms), 0:
						   none awaited */
	struct smtp_replyparser	 rp;
	struct tls_conn		*tls;
	struct tls_cork		 out;		/* commands not yet written */
	struct buf		 plain;		/* decrypted input */
	uint8_t			 kinds[RELAY_MAXOUT];	/* ring of kinds */
	unsigned		 khead, outstanding;
	int			 tls_tried;
	int			 plain_again;	/* reconnected after TLS failed */
	int			 quit_sent;
	int			 auth_clear;
	int			 want_drain;
	const char		*defer_why;	/* failure found in open */
	char			*held;		/* client's EHLO/HELO line */
	int			 held_ehlo;
	char			 peer[ADDR_STRLEN];
};

static void	relay_read_cb(uv_stream_t *, ssize_t, const uv_buf_t *);
static void	relay_process(struct relay *);
static void	relay_alloc_cb(uv_handle_t *, size_t, uv_buf_t *);
static void	relay_written(void *, int);
static int	relay_fallback(struct relay *, const char *);

static void
relay_enter_state(struct relay *r, enum relay_state st)
{
	if (r->state == st)
		return;
	log_debug("session=%llu upstream=%s state %s -> %s",
	    (unsigned long long)r->o.id, r->peer,
	    relay_state_names[r->state], relay_state_names[st]);
	r->state = st;
}

/* relay_fail - the leg is dead: tell the session once */
static void
relay_fail(struct relay *r, const char *why, const struct smtp_reply *rep)
{
	if (r->state == R_DEAD || r->state == R_CLOSED)
		return;
	if (r->state == R_HANDSHAKE && relay_fallback(r, why) == 0)
		return;
	relay_enter_state(r, R_DEAD);
	tls_cork_free(&r->out);		/* nothing more goes up */
	if (r->handles == 2) {
		uv_read_stop((uv_stream_t *)&r->tcp);
		uv_timer_stop(&r->timer);
	}
	r->cb->fail(r->arg, why, rep);
}

static void
relay_timeout_cb(uv_timer_t *t)
{
	struct relay *r = t->data;
	uint64_t now = uv_now(t->loop);

	if (r->defer_why != NULL) {
		relay_fail(r, r->defer_why, NULL);
		return;
	}
	if (r->state != R_CONNECT && r->state != R_GREETING) {
		if (r->t_due == 0)
			return;		/* nothing awaited any more */
		if (now < r->t_due) {
			/* re-armed since it was set: the rest of the time */
			uv_timer_start(&r->timer, relay_timeout_cb,
			    r->t_due - now, 0);
			return;
		}
	}
	switch (r->state) {
	case R_CONNECT:
		relay_fail(r, "connect timeout", NULL);
		break;
	case R_GREETING:
		relay_fail(r, "greeting timeout", NULL);
		break;
	default:
		relay_fail(r, "reply timeout", NULL);
		break;
	}
}

/*
 * relay_arm - the reply timer for what the relay waits for now.  It runs
 * for every command and every reply, so it only notes the deadline; the
 * timer is moved only when it would fire too late (relay_timeout_cb sets
 * it again for what is left when it fires early).
 */
static void
relay_arm(struct relay *r)
{
	uint64_t ms;
	unsigned secs;

	switch (r->state) {
	case R_CONNECT:
	case R_GREETING:
		return;		/* one timer from open to greeting */
	case R_EHLO:
	case R_STARTTLS:
	case R_HANDSHAKE:
		secs = r->o.t_cmd;
		break;
	case R_READY:
		if (r->outstanding == 0) {
			r->t_due = 0;
			return;
		}
		secs = r->kinds[r->khead] == RELAY_DOT ? r->o.t_dot :
		    r->o.t_cmd;
		break;
	default:
		return;
	}
	ms = (uint64_t)secs * 1000;
	r->t_due = uv_now(r->timer.loop) + ms;
	if (uv_is_active((uv_handle_t *)&r->timer) &&
	    uv_timer_get_due_in(&r->timer) <= ms)
		return;
	uv_timer_start(&r->timer, relay_timeout_cb, ms, 0);
}

static void
relay_close_cb(uv_handle_t *h)
{
	struct relay *r = h->data;

	if (--r->handles > 0)
		return;
	tls_cork_free(&r->out);
	tls_conn_free(r->tls);
	smtp_reply_free(&r->rp);
	buf_free(&r->plain);
	free(r->held);
	free(r);
}

/*
 * relay_socket - mark the handle's socket, and bind it transparently when
 * a source is given; 0 or -1.  libuv made the socket non-blocking
 * already, so nothing here costs a syscall that uv_tcp_open would repeat.
 */
static int
relay_socket(struct relay *r)
{
	/* every upstream socket: exempt from interception */
	int one = 1, mark = (int)MARK_OWN;
	uv_os_fd_t fd;
	const struct sockaddr *src = (const struct sockaddr *)&r->o.src;
	struct sockaddr_storage ss;

	if (uv_fileno((uv_handle_t *)&r->tcp, &fd) != 0)
		return -1;
	if (setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof(mark)) == -1)
		return -1;
	if (src->sa_family != AF_UNSPEC) {
		if (src->sa_family == AF_INET6) {
			if (setsockopt(fd, SOL_IPV6, IPV6_TRANSPARENT, &one,
			    sizeof(one)) == -1)
				return -1;
		} else if (setsockopt(fd, SOL_IP, IP_TRANSPARENT, &one,
		    sizeof(one)) == -1)
			return -1;
		memcpy(&ss, src, sizeof(ss));
		if (ss.ss_family == AF_INET)
			((struct sockaddr_in *)&ss)->sin_port = 0;
		else
			((struct sockaddr_in6 *)&ss)->sin6_port = 0;
		if (bind(fd, (struct sockaddr *)&ss, addr_len(src)) == -1)
			return -1;
	}
	return 0;
}

static void
relay_connect_cb(uv_connect_t *req, int status)
{
	struct relay *r = req->data;

	if (r->state != R_CONNECT)
		return;		/* closed meanwhile: ECANCELED */
	if (status < 0) {
		log_debug("session=%llu upstream=%s connect: %s",
		    (unsigned long long)r->o.id, r->peer, uv_strerror(status));
		relay_fail(r, uv_err_name(status), NULL);
		return;
	}
	relay_enter_state(r, R_GREETING);
}

/* relay_defer - a failure found while connecting, told from the timer */
static void
relay_defer(struct relay *r, const char *why)
{
	r->defer_why = why;
	uv_timer_start(&r->timer, relay_timeout_cb, 0, 0);
}

/*
 * relay_connect - a socket and its connect; a failure is reported from
 * the timer (cb->fail never runs inside relay_open)
 */
static void
relay_connect(struct relay *r, uv_loop_t *loop)
{
	int rc;

	relay_enter_state(r, R_CONNECT);
	uv_timer_start(&r->timer, relay_timeout_cb,
	    (uint64_t)r->o.t_connect * 1000, 0);
	/* a failed uv_tcp_init_ex leaves no handle to close */
	if ((rc = uv_tcp_init_ex(loop, &r->tcp, r->o.dst.ss_family)) < 0) {
		log_warnx("session=%llu upstream=%s socket: %s",
		    (unsigned long long)r->o.id, r->peer, uv_strerror(rc));
		relay_defer(r, "socket");
		return;
	}
	r->tcp.data = r;
	r->handles = 2;
	if (relay_socket(r) == -1) {
		log_warn("session=%llu upstream=%s socket",
		    (unsigned long long)r->o.id, r->peer);
		relay_defer(r, "socket");
		return;
	}
	uv_tcp_nodelay(&r->tcp, 1);
	r->creq.data = r;
	if ((rc = uv_tcp_connect(&r->creq, &r->tcp,
	    (const struct sockaddr *)&r->o.dst, relay_connect_cb)) < 0) {
		relay_defer(r, uv_err_name(rc));
		return;
	}
	/* reading from now on: one poll registration for connect and
	 * replies, none more per state change */
	uv_read_start((uv_stream_t *)&r->tcp, relay_alloc_cb, relay_read_cb);
}

/* relay_open - start connecting; failures come through cb->fail */
struct relay *
relay_open(uv_loop_t *loop, const struct relay_opts *o,
    const struct relay_cb *cb, void *arg)
{
	struct relay *r;

	r = xcalloc(1, sizeof(*r));
	r->o = *o;
	r->cb = cb;
	r->arg = arg;
	addr_fmt((const struct sockaddr *)&o->dst, r->peer, sizeof(r->peer));
	smtp_reply_init(&r->rp, RELAY_MAXLINE, RELAY_MAXLINES);
	buf_init(&r->plain);
	tls_cork_init(&r->out, r->o.corks, (uv_stream_t *)&r->tcp,
	    relay_written, r);
	uv_timer_init(loop, &r->timer);
	r->timer.data = r;
	r->handles = 1;
	relay_connect(r, loop);
	return r;
}

/* relay_reopen_cb - the failed TLS connection is closed: connect again */
static void
relay_reopen_cb(uv_handle_t *h)
{
	struct relay *r = h->data;

	if (r->state != R_REOPEN) {
		relay_close_cb(h);	/* failed or closed meanwhile */
		return;
	}
	r->handles = 1;
	tls_conn_free(r->tls);
	r->tls = NULL;
	buf_reset(&r->plain);
	smtp_reply_free(&r->rp);
	smtp_reply_init(&r->rp, RELAY_MAXLINE, RELAY_MAXLINES);
	tls_cork_free(&r->out);
	tls_cork_init(&r->out, r->o.corks, (uv_stream_t *)&r->tcp,
	    relay_written, r);
	relay_connect(r, r->timer.loop);
}

/*
 * relay_fallback - an opportunistic handshake failed: as Postfix does
 * for "may", give up TLS and start over in plain text on a new
 * connection, once; the client, still waiting for its EHLO reply, sees
 * nothing but the delay.  0, or -1 when TLS was required or this is
 * the second try.
 */
static int
relay_fallback(struct relay *r, const char *why)
{
	if (r->o.tls != RELAY_TLS_OPPORTUNISTIC || r->plain_again ||
	    r->handles != 2)
		return -1;
	log_info("session=%llu upstream=%s tls=failed error=\"%s\" "
	    "fallback=plaintext", (unsigned long long)r->o.id, r->peer,
	    log_vis(why));
	r->plain_again = 1;
	relay_enter_state(r, R_REOPEN);
	uv_timer_stop(&r->timer);
	uv_close((uv_handle_t *)&r->tcp, relay_reopen_cb);
	return 0;
}

static void
relay_written(void *arg, int status)
{
	struct relay *r = arg;

	if (r->state == R_CLOSED || r->state == R_DEAD || r->state == R_REOPEN)
		return;
	if (status < 0) {
		relay_fail(r, uv_err_name(status), NULL);
		return;
	}
	if (r->want_drain && uv_stream_get_write_queue_size(
	    (uv_stream_t *)&r->tcp) < RELAY_LOWAT) {
		r->want_drain = 0;
		r->cb->drained(r->arg);
	}
}

/*
 * relay_outv - bytes upstream; 0 or -1 (the leg is failed).  Commands
 * (cork) wait until the input that made them is handled, so a pipelined
 * group goes up in one write; content leaves at once, after them.
 */
static int
relay_outv(struct relay *r, const uv_buf_t *bufs, unsigned nbufs, int cork)
{
	int rc;

	if (r->state == R_DEAD || r->state == R_CLOSED || r->handles < 2)
		return -1;
	if (cork)
		rc = tls_cork_add(&r->out, r->tls, bufs, nbufs);
	else if ((rc = tls_cork_flush(&r->out)) >= 0)
		rc = tls_stream_send((uv_stream_t *)&r->tcp, r->tls, bufs,
		    nbufs, relay_written, r);
	if (rc < 0) {
		relay_fail(r, rc != -1 ? uv_err_name(rc) : "TLS write", NULL);
		return -1;
	}
	return 0;
}

/* relay_line - a command line with CRLF, corked */
static int
relay_line(struct relay *r, const char *line, size_t len)
{
	uv_buf_t b[2];

	b[0] = uv_buf_init((char *)(uintptr_t)line, (unsigned int)len);
	b[1] = uv_buf_init((char *)(uintptr_t)"\r\n", 2);
	return relay_outv(r, b, 2, 1);
}

/* relay_expect - one more session command awaits a reply */
static int
relay_expect(struct relay *r, enum relay_kind kind)
{
	if (r->outstanding == RELAY_MAXOUT) {
		relay_fail(r, "too many commands in flight", NULL);
		return -1;
	}
	r->kinds[(r->khead + r->outstanding) % RELAY_MAXOUT] = (uint8_t)kind;
	r->outstanding++;
	return 0;
}

int
relay_send(struct relay *r, const char *line, size_t len,
    enum relay_kind kind)
{
	if (r->state != R_READY)
		return -1;
	if (len == 4 && strncasecmp(line, "QUIT", 4) == 0)
		r->quit_sent = 1;
	if (relay_expect(r, kind) == -1 || relay_line(r, line, len) == -1)
		return -1;
	relay_arm(r);
	return 0;
}

int
relay_writev(struct relay *r, const uv_buf_t *bufs, unsigned nbufs)
{
	if (r->state != R_READY)
		return -1;
	return relay_outv(r, bufs, nbufs, 0);
}

/*
 * relay_dot - the last content and the terminator in one write: the
 * final dot does not cost a packet (and a wake-up upstream) of its own
 */
int
relay_dot(struct relay *r, const uv_buf_t *bufs, unsigned nbufs)
{
	uv_buf_t b[RELAY_MAXBUFS + 1];

	if (r->state != R_READY || nbufs > RELAY_MAXBUFS)
		return -1;
	memcpy(b, bufs, nbufs * sizeof(*b));
	b[nbufs] = uv_buf_init((char *)(uintptr_t)".\r\n", 3);
	if (relay_expect(r, RELAY_DOT) == -1 || relay_outv(r, b, nbufs + 1,
	    0) == -1)
		return -1;
	relay_arm(r);
	return 0;
}

int
relay_busy(struct relay *r)
{
	if (r->handles < 2 || uv_stream_get_write_queue_size(
	    (uv_stream_t *)&r->tcp) < RELAY_HIWAT)
		return 0;
	r->want_drain = 1;
	return 1;
}

int
relay_helo(struct relay *r, int ehlo, const char *name, const char *line,
    size_t len)
{
	char cmd[RELAY_MAXLINE];

	if (r->state != R_READY)
		return -1;
	if (!r->tls_tried && r->o.tls == RELAY_TLS_REQUIRE && r->o.ctx == NULL) {
		relay_fail(r, "TLS required but no TLS client context", NULL);
		return -1;
	}
	if (r->tls_tried || r->o.tls == RELAY_TLS_NONE || r->o.ctx == NULL)
		return relay_send(r, line, len, RELAY_CMD);
	r->tls_tried = 1;
	if (relay_expect(r, RELAY_CMD) == -1)
		return -1;
	r->held = xstrndup(line, len);
	r->held_ehlo = ehlo;
	snprintf(cmd, sizeof(cmd), "EHLO %s", name);
	relay_enter_state(r, R_EHLO);
	if (relay_line(r, cmd, strlen(cmd)) == -1)
		return -1;
	relay_arm(r);
	return 0;
}

/* relay_release - the STARTTLS detour is over: send the held line */
static void
relay_release(struct relay *r)
{
	char *line = r->held;

	r->held = NULL;
	relay_enter_state(r, R_READY);
	if (line != NULL && relay_line(r, line, strlen(line)) == 0)
		relay_arm(r);
	free(line);
}


/* relay_deliver - hand the reply to the oldest session command */
static void
relay_deliver(struct relay *r, const struct smtp_reply *rep)
{
	if (r->outstanding == 0) {
		if (rep->code == 421)
			relay_fail(r, "closed by upstream (421)", rep);
		else
			relay_fail(r, "unsolicited reply", NULL);
		return;
	}
	r->khead = (r->khead + 1) % RELAY_MAXOUT;
	r->outstanding--;
	relay_arm(r);
	r->cb->reply(r->arg, rep);
}

/*
 * helo_answer - a HELO client's answer from our EHLO's 250: its first
 * line, which names the server as a HELO reply does.  The session upstream
 * is as fresh as after HELO, and the client is spared a second round trip.
 */
static void
helo_answer(struct relay *r, const struct smtp_reply *rep)
{
	struct smtp_reply h;
	const char *line;
	size_t len;

	memset(&h, 0, sizeof(h));
	if ((line = smtp_reply_line(rep, 0, &len)) == NULL)
		len = 0;
	h.code = 250;
	h.nlines = 1;
	buf_init(&h.text);
	buf_printf(&h.text, "250%s%.*s\r\n", len > 0 ? " " : "", (int)len,
	    line != NULL ? line : "");
	relay_deliver(r, &h);
	smtp_reply_clear(&h);
}

/* on_ehlo - our own EHLO's reply: STARTTLS if offered and wanted */
static void
on_ehlo(struct relay *r, const struct smtp_reply *rep)
{
	struct smtp_ehlo caps;

	memset(&caps, 0, sizeof(caps));
	if (rep->code == 250)
		smtp_ehlo_parse(rep, &caps);
	if (caps.auth)
		r->auth_clear = 1;
	if (caps.starttls) {
		relay_enter_state(r, R_STARTTLS);
		if (relay_line(r, "STARTTLS", 8) == 0)
			relay_arm(r);
		return;
	}
	if (r->o.tls == RELAY_TLS_REQUIRE) {
		relay_fail(r, "upstream does not offer STARTTLS", NULL);
		return;
	}
	if (rep->code == 250) {
		/* nothing to negotiate: this is the answer to the client */
		free(r->held);
		r->held = NULL;
		relay_enter_state(r, R_READY);
		if (r->held_ehlo)
			relay_deliver(r, rep);
		else
			helo_answer(r, rep);
		return;
	}
	relay_release(r);
}

/* on_starttls - 220: start the handshake; no byte may follow the 220 */
static void
on_starttls(struct relay *r, const struct smtp_reply *rep)
{
	if (rep->code != 220) {
		if (r->o.tls == RELAY_TLS_REQUIRE)
			relay_fail(r, "upstream refused STARTTLS", NULL);
		else
			relay_release(r);
		return;
	}
	if (smtp_reply_pending(&r->rp) > 0) {
		relay_fail(r, "upstream sent data before the TLS handshake",
		    NULL);
		return;
	}
	relay_enter_state(r, R_HANDSHAKE);
	tls_cork_flush(&r->out);	/* nothing pending may go encrypted */
	r->tls = tls_conn_new(r->o.ctx, (uv_stream_t *)&r->tcp, TLS_CLIENT,
	    NULL);
	if (tls_conn_start(r->tls) == -1) {
		relay_fail(r, "TLS start", NULL);
		return;
	}
	relay_arm(r);
}

static void
relay_reply(struct relay *r, const struct smtp_reply *rep)
{
	switch (r->state) {
	case R_GREETING:
		uv_timer_stop(&r->timer);
		if (!r->plain_again) {
			relay_enter_state(r, R_READY);
			r->cb->greeting(r->arg, rep);
		} else if (rep->code == 220)
			relay_release(r);	/* the client had its greeting */
		else
			relay_fail(r, "greeting refused after TLS fallback", rep);
		break;
	case R_EHLO:
		on_ehlo(r, rep);
		break;
	case R_STARTTLS:
		on_starttls(r, rep);
		break;
	case R_READY:
		relay_deliver(r, rep);
		break;
	case R_HANDSHAKE:
		relay_fail(r, "reply during the TLS handshake", rep);
		break;
	default:
		break;
	}
}

/* relay_process - every complete reply in the parser */
static void
relay_process(struct relay *r)
{
	struct smtp_reply rep;
	int rc;

	while (r->state != R_DEAD && r->state != R_CLOSED) {
		if ((rc = smtp_reply_get(&r->rp, &rep)) == 0)
			return;
		if (rc == -1) {
			relay_fail(r, r->rp.error, NULL);
			return;
		}
		relay_reply(r, &rep);
		smtp_reply_clear(&rep);
	}
}

/* relay_tls_input - ciphertext in; the handshake's end releases the line */
static void
relay_tls_input(struct relay *r, const char *p, size_t n)
{
	enum tls_state st;

	st = tls_conn_feed(r->tls, p, n, &r->plain);
	if (st == TLS_FAILED) {
		log_info("session=%llu upstream=%s tls=failed error=\"%s\"",
		    (unsigned long long)r->o.id, r->peer,
		    log_vis(tls_conn_error(r->tls)));
		relay_fail(r, "TLS handshake or read failed", NULL);
		return;
	}
	if (st == TLS_HANDSHAKE)
		return;
	if (r->state == R_HANDSHAKE) {
		log_info("session=%llu upstream=%s tls=%s",
		    (unsigned long long)r->o.id, r->peer,
		    tls_conn_info(r->tls));
		relay_release(r);
	}
	if (buf_avail(&r->plain) > 0) {
		smtp_reply_feed(&r->rp, buf_head(&r->plain),
		    buf_avail(&r->plain));
		buf_reset(&r->plain);
	}
	if (st == TLS_CLOSED && r->state != R_DEAD) {
		relay_process(r);
		relay_fail(r, "upstream closed TLS", NULL);
	}
}

static void
relay_alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
	/* scratch: read and used up in this callback, one per thread */
	static _Thread_local char rbuf[65536];

	*b = uv_buf_init(rbuf, sizeof(rbuf));
}

static void
relay_read_cb(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
	struct relay *r = st->data;

	if (n == 0 || r->state == R_DEAD || r->state == R_CLOSED)
		return;
	if (n < 0) {
		relay_process(r);
		relay_fail(r, n == UV_EOF ? "closed by upstream" :
		    uv_err_name((int)n), NULL);
		return;
	}
	if (r->tls != NULL)
		relay_tls_input(r, b->base, (size_t)n);
	else
		smtp_reply_feed(&r->rp, b->base, (size_t)n);
	relay_process(r);
	tls_cork_turn(r->o.corks);	/* what the session made of these replies */
}

const char *
relay_tls_info(const struct relay *r)
{
	return r->tls != NULL ? tls_conn_info(r->tls) : NULL;
}

int
relay_auth_in_clear(const struct relay *r)
{
	return r->auth_clear;
}

const char *
relay_peer(const struct relay *r)
{
	return r->peer;
}

/* relay_close - no more callbacks; QUIT if idle, then close the handles */
void
relay_close(struct relay *r)
{
	int tcp;

	if (r == NULL || r->state == R_CLOSED)
		return;
	/* reopening: the tcp handle is closing, relay_reopen_cb ends it */
	tcp = r->handles == 2 && r->state != R_REOPEN;
	if (tcp && r->state != R_DEAD)
		tls_cork_flush(&r->out);	/* commands already made */
	tls_cork_free(&r->out);
	if (r->state == R_READY && r->outstanding == 0 && !r->quit_sent)
		tls_stream_write((uv_stream_t *)&r->tcp, r->tls, "QUIT\r\n", 6,
		    NULL, NULL);
	relay_enter_state(r, R_CLOSED);
	if (tcp) {
		if (r->tls != NULL)
			tls_conn_close(r->tls);
		uv_close((uv_handle_t *)&r->tcp, relay_close_cb);
	}
	uv_timer_stop(&r->timer);
	uv_close((uv_handle_t *)&r->timer, relay_close_cb);
}
