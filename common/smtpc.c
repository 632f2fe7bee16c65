/*
 * smtpc.c - the one SMTP client (smtpc.h).  It owns one connection to one
 * server: the marked (and optionally transparently bound) socket, the
 * greeting, STARTTLS (opportunistic, with a new plain-text connection
 * when the handshake fails; required; or TLS from the first byte), in own
 * mode its own EHLO/HELO and AUTH, and the in-order delivery of replies
 * to the owner with a deadline for each.  Replies are parsed strictly
 * (line length, line count, NUL, bare CR/LF); anything malformed,
 * unsolicited or late kills the connection.  Nothing is queued and
 * nothing is retried here: the owner decides (the live relay gives up,
 * delivery tries the next address and the queue later).
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

#include <openssl/evp.h>

#include "addr.h"
#include "buf.h"
#include "log.h"
#include "mark.h"
#include "smtp.h"
#include "tls.h"
#include "xmalloc.h"
#include "smtpc.h"

#define SMTPC_MAXLINE	512		/* reply line, CRLF included (RFC
					   5321 4.5.3.1.5), by default */
#define SMTPC_MAXLINES	100		/* lines in one reply */
#define SMTPC_MAXOUT	256		/* commands awaiting replies */
#define SMTPC_HIWAT	(256 * 1024)	/* write backlog: pause the client */
#define SMTPC_LOWAT	(64 * 1024)	/* ... and resume it */

enum smtpc_state {
	SC_CONNECT = 0,	/* TCP connect in progress */
	SC_GREETING,	/* waiting for the server's greeting */
	SC_READY,	/* session commands flow, replies go back */
	SC_EHLO,	/* our own EHLO, to see STARTTLS (and caps) */
	SC_HELO,	/* own mode: HELO, the server refused EHLO */
	SC_STARTTLS,	/* waiting for 220 to STARTTLS */
	SC_HANDSHAKE,	/* TLS handshake in progress */
	SC_AUTH,	/* own mode: the AUTH exchange */
	SC_REOPEN,	/* handshake failed: closing, to connect in plain */
	SC_DEAD,		/* failed, waiting for smtpc_close() */
	SC_CLOSED	/* handles closing */
};

static const char *smtpc_state_names[] = {
	"connect", "greeting", "ready", "ehlo", "helo", "starttls",
	"handshake", "auth", "reopen", "dead", "closed"
};

struct smtpc {
	enum smtpc_state	 state;
	struct smtpc_opts	 o;
	const struct smtpc_cb	*cb;
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
	uint8_t			 kinds[SMTPC_MAXOUT];	/* ring of kinds */
	unsigned		 khead, outstanding;
	int			 tls_tried;
	int			 plain_again;	/* reconnected after TLS failed */
	int			 quit_sent;
	int			 auth_clear;
	int			 want_drain;
	const char		*defer_why;	/* failure found in open */
	int			 defer_err;	/* its libuv error */
	char			*held;		/* client's EHLO/HELO line */
	int			 held_ehlo;
	struct smtp_ehlo	 caps;		/* own mode: the server's */
	int			 helo_sent;	/* own mode: EHLO was refused */
	int			 auth_step;	/* own mode: AUTH LOGIN's step */
	char			 why[256];	/* a failure's reason, built */
	char			 peer[320];	/* name[address], for logs */
};

static void	smtpc_read_cb(uv_stream_t *, ssize_t, const uv_buf_t *);
static void	smtpc_process(struct smtpc *);
static void	smtpc_alloc_cb(uv_handle_t *, size_t, uv_buf_t *);
static void	smtpc_written(void *, int);
static int	smtpc_fallback(struct smtpc *, const char *);
static void	smtpc_tls_start(struct smtpc *);
static void	smtpc_timeout_cb(uv_timer_t *);
static void	own_auth(struct smtpc *);
static void	smtpc_opts_free(struct smtpc_opts *);

static void
smtpc_enter_state(struct smtpc *r, enum smtpc_state st)
{
	if (r->state == st)
		return;
	log_debug("%s=%llu upstream=%s state %s -> %s",
	    r->o.logname, (unsigned long long)r->o.id, r->peer,
	    smtpc_state_names[r->state], smtpc_state_names[st]);
	r->state = st;
}

/* smtpc_fail - the connection is dead: tell the owner once */
static void
smtpc_fail(struct smtpc *r, enum smtpc_err err, int uverr, const char *why,
    const struct smtp_reply *rep)
{
	struct smtpc_error e;

	if (r->state == SC_DEAD || r->state == SC_CLOSED)
		return;
	if (r->state == SC_HANDSHAKE && smtpc_fallback(r, why) == 0)
		return;
	smtpc_enter_state(r, SC_DEAD);
	tls_cork_free(&r->out);		/* nothing more goes up */
	if (r->handles == 2) {
		uv_read_stop((uv_stream_t *)&r->tcp);
		uv_timer_stop(&r->timer);
	}
	e.err = err;
	e.why = why;
	e.rep = rep;
	e.uverr = uverr;
	r->cb->fail(r->arg, &e);
}

static void
smtpc_timeout_cb(uv_timer_t *t)
{
	struct smtpc *r = t->data;
	uint64_t now = uv_now(t->loop);

	if (r->defer_why != NULL) {
		smtpc_fail(r, SMTPC_E_CONNECT, r->defer_err, r->defer_why,
		    NULL);
		return;
	}
	if (r->state != SC_CONNECT && r->state != SC_GREETING) {
		if (r->t_due == 0)
			return;		/* nothing awaited any more */
		if (now < r->t_due) {
			/* re-armed since it was set: the rest of the time */
			uv_timer_start(&r->timer, smtpc_timeout_cb,
			    r->t_due - now, 0);
			return;
		}
	}
	switch (r->state) {
	case SC_CONNECT:
		smtpc_fail(r, SMTPC_E_CONNECT, UV_ETIMEDOUT,
		    "connect timeout", NULL);
		break;
	case SC_GREETING:
		smtpc_fail(r, SMTPC_E_LOST, 0, "greeting timeout", NULL);
		break;
	default:
		smtpc_fail(r, SMTPC_E_LOST, 0, "reply timeout", NULL);
		break;
	}
}

/*
 * smtpc_arm - the reply timer for what the client waits for now.  It runs
 * for every command and every reply, so it only notes the deadline; the
 * timer is moved only when it would fire too late (smtpc_timeout_cb sets
 * it again for what is left when it fires early).
 */
static void
smtpc_arm(struct smtpc *r)
{
	uint64_t ms;
	unsigned secs;

	switch (r->state) {
	case SC_CONNECT:
	case SC_GREETING:
		return;		/* one timer from open to greeting */
	case SC_EHLO:
	case SC_HELO:
	case SC_STARTTLS:
	case SC_HANDSHAKE:
	case SC_AUTH:
		secs = r->o.t_cmd;
		break;
	case SC_READY:
		if (r->outstanding == 0) {
			r->t_due = 0;
			return;
		}
		secs = r->kinds[r->khead] == SMTPC_DOT ? r->o.t_dot :
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
	uv_timer_start(&r->timer, smtpc_timeout_cb, ms, 0);
}

static void
smtpc_close_cb(uv_handle_t *h)
{
	struct smtpc *r = h->data;

	if (--r->handles > 0)
		return;
	tls_cork_free(&r->out);
	tls_conn_free(r->tls);
	smtp_reply_free(&r->rp);
	buf_free(&r->plain);
	free(r->held);
	smtpc_opts_free(&r->o);
	free(r);
}

/*
 * smtpc_socket - mark the handle's socket, and bind it transparently when
 * a source is given; 0 or -1.  libuv made the socket non-blocking
 * already, so nothing here costs a syscall that uv_tcp_open would repeat.
 */
static int
smtpc_socket(struct smtpc *r)
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
		memcpy(&ss, src, sizeof(ss));
		if (ss.ss_family == AF_INET)
			((struct sockaddr_in *)&ss)->sin_port = 0;
		else
			((struct sockaddr_in6 *)&ss)->sin6_port = 0;
		if (setsockopt(fd, src->sa_family == AF_INET6 ? SOL_IPV6 :
		    SOL_IP, src->sa_family == AF_INET6 ? IPV6_TRANSPARENT :
		    IP_TRANSPARENT, &one, sizeof(one)) == -1 ||
		    bind(fd, (struct sockaddr *)&ss, addr_len(src)) == -1) {
			if (!r->o.src_soft)
				return -1;
			/* delivery matters more than hiding: say so */
			log_warn("%s=%llu upstream=%s hide-box: bind",
			    r->o.logname, (unsigned long long)r->o.id,
			    r->peer);
		}
	}
	return 0;
}

/* smtpc_opts_free - the copies smtpc_open made */
static void
smtpc_opts_free(struct smtpc_opts *o)
{
	SSL_CTX_free(o->ctx);
	free((char *)(uintptr_t)o->sni);
	free((char *)(uintptr_t)o->expect_ip);
	free((char *)(uintptr_t)o->match);
	free((char *)(uintptr_t)o->dane);	/* one block, data too */
	free((char *)(uintptr_t)o->dane_names);
	free((char *)(uintptr_t)o->ciphers);
	free((char *)(uintptr_t)o->helo);
	free((char *)(uintptr_t)o->auth_user);
	if (o->auth_pass != NULL) {
		explicit_bzero((char *)(uintptr_t)o->auth_pass,
		    strlen(o->auth_pass));
		free((char *)(uintptr_t)o->auth_pass);
	}
}

/*
 * smtpc_connected - TCP is up: the greeting, or first the handshake
 * (smtps).  In own mode the greeting has a reply's time of its own.
 */
static void
smtpc_connected(struct smtpc *r)
{
	if (r->o.tls == SMTPC_TLS_SMTPS) {
		smtpc_tls_start(r);
		return;
	}
	smtpc_enter_state(r, SC_GREETING);
	if (r->o.helo != NULL)
		uv_timer_start(&r->timer, smtpc_timeout_cb,
		    (uint64_t)r->o.t_cmd * 1000, 0);
}

static void
smtpc_connect_cb(uv_connect_t *req, int status)
{
	struct smtpc *r = req->data;

	if (r->state != SC_CONNECT)
		return;		/* closed meanwhile: ECANCELED */
	if (status < 0) {
		log_debug("%s=%llu upstream=%s connect: %s",
		    r->o.logname, (unsigned long long)r->o.id, r->peer,
		    uv_strerror(status));
		smtpc_fail(r, SMTPC_E_CONNECT, status, uv_err_name(status),
		    NULL);
		return;
	}
	smtpc_connected(r);
}

/* smtpc_defer - a failure found while connecting, told from the timer */
static void
smtpc_defer(struct smtpc *r, const char *why, int uverr)
{
	r->defer_why = why;
	r->defer_err = uverr;
	uv_timer_start(&r->timer, smtpc_timeout_cb, 0, 0);
}

/*
 * smtpc_connect - a socket and its connect; a failure is reported from
 * the timer (cb->fail never runs inside smtpc_open)
 */
static void
smtpc_connect(struct smtpc *r, uv_loop_t *loop)
{
	int rc;

	smtpc_enter_state(r, SC_CONNECT);
	uv_timer_start(&r->timer, smtpc_timeout_cb,
	    (uint64_t)r->o.t_connect * 1000, 0);
	/* a failed uv_tcp_init_ex leaves no handle to close */
	if ((rc = uv_tcp_init_ex(loop, &r->tcp, r->o.dst.ss_family)) < 0) {
		log_warnx("%s=%llu upstream=%s socket: %s",
		    r->o.logname, (unsigned long long)r->o.id, r->peer,
		    uv_strerror(rc));
		smtpc_defer(r, "socket", rc);
		return;
	}
	r->tcp.data = r;
	r->handles = 2;
	if (smtpc_socket(r) == -1) {
		log_warn("%s=%llu upstream=%s socket",
		    r->o.logname, (unsigned long long)r->o.id, r->peer);
		smtpc_defer(r, "socket", uv_translate_sys_error(errno));
		return;
	}
	uv_tcp_nodelay(&r->tcp, 1);
	r->creq.data = r;
	if ((rc = uv_tcp_connect(&r->creq, &r->tcp,
	    (const struct sockaddr *)&r->o.dst, smtpc_connect_cb)) < 0) {
		smtpc_defer(r, uv_err_name(rc), rc);
		return;
	}
	/* reading from now on: one poll registration for connect and
	 * replies, none more per state change */
	uv_read_start((uv_stream_t *)&r->tcp, smtpc_alloc_cb, smtpc_read_cb);
}

/* dane_copy - the TLSA records and their data in one block */
static struct tls_tlsa *
dane_copy(const struct tls_tlsa *rr, size_t n)
{
	struct tls_tlsa *c;
	uint8_t *d;
	size_t i, sz = n * sizeof(*rr);

	for (i = 0; i < n; i++)
		sz += rr[i].len;
	c = xmalloc(sz);
	d = (uint8_t *)(c + n);
	for (i = 0; i < n; i++) {
		c[i] = rr[i];
		memcpy(d, rr[i].data, rr[i].len);
		c[i].data = d;
		d += rr[i].len;
	}
	return c;
}

/* smtpc_open - start connecting; failures come through cb->fail */
struct smtpc *
smtpc_open(uv_loop_t *loop, const struct smtpc_opts *o,
    const struct smtpc_cb *cb, void *arg)
{
	struct smtpc *r;

	r = xcalloc(1, sizeof(*r));
	r->o = *o;
	/* the owner's strings may go with a reload: copies */
	r->o.logname = o->logname != NULL ? o->logname : "session";
	r->o.peername = NULL;
	/* a reference: the owner's (a cached verifying one) may go first */
	if (o->ctx != NULL)
		SSL_CTX_up_ref(o->ctx);
	r->o.sni = o->sni != NULL ? xstrdup(o->sni) : NULL;
	r->o.expect_ip = o->expect_ip != NULL ? xstrdup(o->expect_ip) : NULL;
	r->o.match = o->match != NULL ? xstrdup(o->match) : NULL;
	r->o.dane = o->ndane > 0 ? dane_copy(o->dane, o->ndane) : NULL;
	r->o.dane_names = o->dane_names != NULL ? xstrdup(o->dane_names) :
	    NULL;
	r->o.ciphers = o->ciphers != NULL ? xstrdup(o->ciphers) : NULL;
	r->o.helo = o->helo != NULL ? xstrdup(o->helo) : NULL;
	r->o.auth_user = o->auth_user != NULL ? xstrdup(o->auth_user) : NULL;
	r->o.auth_pass = o->auth_pass != NULL ? xstrdup(o->auth_pass) : NULL;
	if (r->o.maxline == 0)
		r->o.maxline = SMTPC_MAXLINE;
	r->cb = cb;
	r->arg = arg;
	if (o->peername != NULL)
		snprintf(r->peer, sizeof(r->peer), "%s", o->peername);
	else
		addr_fmt((const struct sockaddr *)&o->dst, r->peer,
		    sizeof(r->peer));
	smtp_reply_init(&r->rp, r->o.maxline, SMTPC_MAXLINES);
	buf_init(&r->plain);
	tls_cork_init(&r->out, r->o.corks, (uv_stream_t *)&r->tcp,
	    smtpc_written, r);
	uv_timer_init(loop, &r->timer);
	r->timer.data = r;
	r->handles = 1;
	smtpc_connect(r, loop);
	return r;
}

/* smtpc_reopen_cb - the failed TLS connection is closed: connect again */
static void
smtpc_reopen_cb(uv_handle_t *h)
{
	struct smtpc *r = h->data;

	if (r->state != SC_REOPEN) {
		smtpc_close_cb(h);	/* failed or closed meanwhile */
		return;
	}
	r->handles = 1;
	tls_conn_free(r->tls);
	r->tls = NULL;
	buf_reset(&r->plain);
	smtp_reply_free(&r->rp);
	smtp_reply_init(&r->rp, r->o.maxline, SMTPC_MAXLINES);
	tls_cork_free(&r->out);
	tls_cork_init(&r->out, r->o.corks, (uv_stream_t *)&r->tcp,
	    smtpc_written, r);
	smtpc_connect(r, r->timer.loop);
}

/*
 * smtpc_fallback - an opportunistic handshake failed: as Postfix does
 * for "may", give up TLS and start over in plain text on a new
 * connection, once; the client, still waiting for its EHLO reply, sees
 * nothing but the delay.  0, or -1 when TLS was required or this is
 * the second try.
 */
static int
smtpc_fallback(struct smtpc *r, const char *why)
{
	if (r->o.tls != SMTPC_TLS_OPPORTUNISTIC || r->plain_again ||
	    r->handles != 2)
		return -1;
	log_info("%s=%llu upstream=%s tls=failed error=\"%s\" "
	    "fallback=plaintext", r->o.logname, (unsigned long long)r->o.id,
	    r->peer, log_vis(why));
	r->plain_again = 1;
	smtpc_enter_state(r, SC_REOPEN);
	uv_timer_stop(&r->timer);
	uv_close((uv_handle_t *)&r->tcp, smtpc_reopen_cb);
	return 0;
}

static void
smtpc_written(void *arg, int status)
{
	struct smtpc *r = arg;

	if (r->state == SC_CLOSED || r->state == SC_DEAD ||
	    r->state == SC_REOPEN)
		return;
	if (status < 0) {
		smtpc_fail(r, SMTPC_E_LOST, status, uv_err_name(status),
		    NULL);
		return;
	}
	if (r->want_drain && uv_stream_get_write_queue_size(
	    (uv_stream_t *)&r->tcp) < SMTPC_LOWAT) {
		r->want_drain = 0;
		r->cb->drained(r->arg);
	}
}

/*
 * smtpc_outv - bytes upstream; 0 or -1 (the leg is failed).  Commands
 * (cork) wait until the input that made them is handled, so a pipelined
 * group goes up in one write; content leaves at once, after them.
 */
static int
smtpc_outv(struct smtpc *r, const uv_buf_t *bufs, unsigned nbufs, int cork)
{
	int rc;

	if (r->state == SC_DEAD || r->state == SC_CLOSED || r->handles < 2)
		return -1;
	if (cork)
		rc = tls_cork_add(&r->out, r->tls, bufs, nbufs);
	else if ((rc = tls_cork_flush(&r->out)) >= 0)
		rc = tls_stream_send((uv_stream_t *)&r->tcp, r->tls, bufs,
		    nbufs, smtpc_written, r);
	if (rc < 0) {
		smtpc_fail(r, SMTPC_E_LOST, rc != -1 ? rc : 0, rc != -1 ?
		    uv_err_name(rc) : "TLS write", NULL);
		return -1;
	}
	return 0;
}

/* smtpc_line - a command line with CRLF, corked */
static int
smtpc_line(struct smtpc *r, const char *line, size_t len)
{
	uv_buf_t b[2];

	b[0] = uv_buf_init((char *)(uintptr_t)line, (unsigned int)len);
	b[1] = uv_buf_init((char *)(uintptr_t)"\r\n", 2);
	return smtpc_outv(r, b, 2, 1);
}

/* smtpc_expect - one more session command awaits a reply */
static int
smtpc_expect(struct smtpc *r, enum smtpc_kind kind)
{
	if (r->outstanding == SMTPC_MAXOUT) {
		smtpc_fail(r, SMTPC_E_PROTO, 0, "too many commands in flight",
		    NULL);
		return -1;
	}
	r->kinds[(r->khead + r->outstanding) % SMTPC_MAXOUT] = (uint8_t)kind;
	r->outstanding++;
	return 0;
}

int
smtpc_send(struct smtpc *r, const char *line, size_t len,
    enum smtpc_kind kind)
{
	if (r->state != SC_READY)
		return -1;
	if (len == 4 && strncasecmp(line, "QUIT", 4) == 0)
		r->quit_sent = 1;
	if (smtpc_expect(r, kind) == -1 || smtpc_line(r, line, len) == -1)
		return -1;
	smtpc_arm(r);
	return 0;
}

int
smtpc_writev(struct smtpc *r, const uv_buf_t *bufs, unsigned nbufs)
{
	if (r->state != SC_READY)
		return -1;
	return smtpc_outv(r, bufs, nbufs, 0);
}

/*
 * smtpc_dot - the last content and the terminator in one write: the
 * final dot does not cost a packet (and a wake-up upstream) of its own
 */
int
smtpc_dot(struct smtpc *r, const uv_buf_t *bufs, unsigned nbufs)
{
	uv_buf_t b[SMTPC_MAXBUFS + 1];

	if (r->state != SC_READY || nbufs > SMTPC_MAXBUFS)
		return -1;
	memcpy(b, bufs, nbufs * sizeof(*b));
	b[nbufs] = uv_buf_init((char *)(uintptr_t)".\r\n", 3);
	if (smtpc_expect(r, SMTPC_DOT) == -1 || smtpc_outv(r, b, nbufs + 1,
	    0) == -1)
		return -1;
	smtpc_arm(r);
	return 0;
}

int
smtpc_busy(struct smtpc *r)
{
	if (r->handles < 2 || uv_stream_get_write_queue_size(
	    (uv_stream_t *)&r->tcp) < SMTPC_HIWAT)
		return 0;
	r->want_drain = 1;
	return 1;
}

int
smtpc_helo(struct smtpc *r, int ehlo, const char *name, const char *line,
    size_t len)
{
	char cmd[SMTPC_MAXLINE];

	if (r->state != SC_READY)
		return -1;
	if (!r->tls_tried && r->o.tls == SMTPC_TLS_REQUIRE &&
	    r->o.ctx == NULL) {
		smtpc_fail(r, SMTPC_E_TLS, 0,
		    "TLS required but no TLS client context", NULL);
		return -1;
	}
	if (r->tls_tried || r->o.tls == SMTPC_TLS_NONE || r->o.ctx == NULL)
		return smtpc_send(r, line, len, SMTPC_CMD);
	r->tls_tried = 1;
	if (smtpc_expect(r, SMTPC_CMD) == -1)
		return -1;
	r->held = xstrndup(line, len);
	r->held_ehlo = ehlo;
	snprintf(cmd, sizeof(cmd), "EHLO %s", name);
	smtpc_enter_state(r, SC_EHLO);
	if (smtpc_line(r, cmd, strlen(cmd)) == -1)
		return -1;
	smtpc_arm(r);
	return 0;
}

/* smtpc_release - the STARTTLS detour is over: send the held line */
static void
smtpc_release(struct smtpc *r)
{
	char *line = r->held;

	r->held = NULL;
	smtpc_enter_state(r, SC_READY);
	if (line != NULL && smtpc_line(r, line, strlen(line)) == 0)
		smtpc_arm(r);
	free(line);
}


/* smtpc_deliver - hand the reply to the oldest session command */
static void
smtpc_deliver(struct smtpc *r, const struct smtp_reply *rep)
{
	if (r->outstanding == 0) {
		if (rep->code == 421)
			smtpc_fail(r, SMTPC_E_LOST, 0,
			    "closed by upstream (421)", rep);
		else
			smtpc_fail(r, SMTPC_E_PROTO, 0, "unsolicited reply",
			    NULL);
		return;
	}
	r->khead = (r->khead + 1) % SMTPC_MAXOUT;
	r->outstanding--;
	smtpc_arm(r);
	r->cb->reply(r->arg, rep);
}

/*
 * helo_answer - a HELO client's answer from our EHLO's 250: its first
 * line, which names the server as a HELO reply does.  The session upstream
 * is as fresh as after HELO, and the client is spared a second round trip.
 */
static void
helo_answer(struct smtpc *r, const struct smtp_reply *rep)
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
	smtpc_deliver(r, &h);
	smtp_reply_clear(&h);
}

/* on_ehlo - our own EHLO's reply: STARTTLS if offered and wanted */
static void
on_ehlo(struct smtpc *r, const struct smtp_reply *rep)
{
	struct smtp_ehlo caps;

	memset(&caps, 0, sizeof(caps));
	if (rep->code == 250)
		smtp_ehlo_parse(rep, &caps);
	if (caps.auth)
		r->auth_clear = 1;
	if (caps.starttls) {
		smtpc_enter_state(r, SC_STARTTLS);
		if (smtpc_line(r, "STARTTLS", 8) == 0)
			smtpc_arm(r);
		return;
	}
	if (r->o.tls == SMTPC_TLS_REQUIRE) {
		smtpc_fail(r, SMTPC_E_TLS, 0,
		    "upstream does not offer STARTTLS", NULL);
		return;
	}
	if (rep->code == 250) {
		/* nothing to negotiate: this is the answer to the client */
		free(r->held);
		r->held = NULL;
		smtpc_enter_state(r, SC_READY);
		if (r->held_ehlo)
			smtpc_deliver(r, rep);
		else
			helo_answer(r, rep);
		return;
	}
	smtpc_release(r);
}

/*
 * smtpc_tls_start - the handshake, after STARTTLS's 220 or at once
 * (smtps); the certificate must name expect_ip when one is given
 */
static void
smtpc_tls_start(struct smtpc *r)
{
	smtpc_enter_state(r, SC_HANDSHAKE);
	tls_cork_flush(&r->out);	/* nothing pending may go encrypted */
	smtp_reader_discard(&r->rp.r);
	if (r->o.ctx == NULL) {
		smtpc_fail(r, SMTPC_E_TLS, 0, "no TLS client context", NULL);
		return;
	}
	r->tls = tls_conn_new(r->o.ctx, (uv_stream_t *)&r->tcp, TLS_CLIENT,
	    r->o.sni);
	if (r->o.expect_ip != NULL &&
	    tls_conn_expect_ip(r->tls, r->o.expect_ip) == -1) {
		smtpc_fail(r, SMTPC_E_TLS, 0, "cannot check the address in "
		    "the certificate", NULL);
		return;
	}
	/* per connection: the context is shared by every client */
	if ((r->o.min_tls13 && SSL_set_min_proto_version(
	    tls_conn_ssl(r->tls), TLS1_3_VERSION) != 1) ||
	    (r->o.ciphers != NULL && SSL_set_cipher_list(
	    tls_conn_ssl(r->tls), r->o.ciphers) != 1)) {
		smtpc_fail(r, SMTPC_E_TLS, 0, "TLS protocol or cipher "
		    "settings refused", NULL);
		return;
	}
	if (r->o.ndane > 0 && tls_conn_dane(r->tls, r->o.sni,
	    r->o.dane_names, r->o.dane, r->o.ndane) <= 0) {
		smtpc_fail(r, SMTPC_E_TLS, 0, "no TLSA record usable by "
		    "OpenSSL", NULL);
		return;
	}
	if (r->o.match != NULL &&
	    tls_conn_expect_hosts(r->tls, r->o.match) == -1) {
		smtpc_fail(r, SMTPC_E_TLS, 0, "cannot check the names in "
		    "the certificate", NULL);
		return;
	}
	if (tls_conn_start(r->tls) == -1) {
		smtpc_fail(r, SMTPC_E_TLS, 0, "TLS start", NULL);
		return;
	}
	smtpc_arm(r);
}

/* on_starttls - 220: start the handshake; no byte may follow the 220 */
static void
on_starttls(struct smtpc *r, const struct smtp_reply *rep)
{
	if (rep->code != 220) {
		if (r->o.tls == SMTPC_TLS_REQUIRE)
			smtpc_fail(r, SMTPC_E_TLS, 0,
			    "upstream refused STARTTLS", rep);
		else if (r->o.helo != NULL)
			own_auth(r);	/* on in plain text */
		else
			smtpc_release(r);
		return;
	}
	if (smtp_reply_pending(&r->rp) > 0) {
		smtpc_fail(r, SMTPC_E_PROTO, 0,
		    "upstream sent data before the TLS handshake", NULL);
		return;
	}
	smtpc_tls_start(r);
}

/*
 * Own mode: the client's own greeting, STARTTLS and AUTH
 */

/* own_line - a command of the setup, in state st */
static void
own_line(struct smtpc *r, enum smtpc_state st, const char *line)
{
	smtpc_enter_state(r, st);
	if (smtpc_line(r, line, strlen(line)) == 0)
		smtpc_arm(r);
}

/* own_ehlo - EHLO (or HELO) with our name */
static void
own_ehlo(struct smtpc *r, int helo)
{
	char cmd[SMTPC_MAXLINE];

	memset(&r->caps, 0, sizeof(r->caps));
	snprintf(cmd, sizeof(cmd), "%s %s", helo ? "HELO" : "EHLO", r->o.helo);
	own_line(r, helo ? SC_HELO : SC_EHLO, cmd);
}

/* own_ready - set up: commands are the owner's from now on */
static void
own_ready(struct smtpc *r)
{
	smtpc_enter_state(r, SC_READY);
	r->t_due = 0;
	uv_timer_stop(&r->timer);
	r->cb->ready(r->arg, &r->caps);
}

/* own_b64 - base64 of n bytes into out (empty when it does not fit) */
static void
own_b64(const char *in, size_t n, char *out, size_t outlen)
{
	if (outlen < 4 * ((n + 2) / 3) + 1) {
		out[0] = '\0';
		return;
	}
	EVP_EncodeBlock((unsigned char *)out, (const unsigned char *)in,
	    (int)n);
}

/* own_auth_next - the next AUTH line (PLAIN, or LOGIN's steps) */
static void
own_auth_next(struct smtpc *r, const struct smtp_reply *rep)
{
	char tmp[1024], enc[1400];
	const char *u = r->o.auth_user, *pw = r->o.auth_pass;
	size_t ul = strlen(u), pl = strlen(pw);

	if (rep != NULL && rep->code / 100 == 2) {	/* 235; some say 250 */
		own_ready(r);
		return;
	}
	if (rep != NULL && rep->code != 334) {
		smtpc_fail(r, SMTPC_E_AUTH, 0, "authentication failed", rep);
		return;
	}
	if (ul + pl + 2 >= sizeof(tmp)) {
		smtpc_fail(r, SMTPC_E_AUTH, 0, "credentials too long", NULL);
		return;
	}
	enc[0] = '\0';
	if (r->auth_step == 0 && r->caps.auth_plain) {
		tmp[0] = '\0';
		memcpy(tmp + 1, u, ul);
		tmp[ul + 1] = '\0';
		memcpy(tmp + ul + 2, pw, pl);
		memcpy(enc, "AUTH PLAIN ", 11);
		own_b64(tmp, ul + pl + 2, enc + 11, sizeof(enc) - 11);
		r->auth_step = 10;
	} else if (r->auth_step == 0) {
		snprintf(enc, sizeof(enc), "AUTH LOGIN");
		r->auth_step = 1;
	} else if (r->auth_step == 1) {
		own_b64(u, ul, enc, sizeof(enc));
		r->auth_step = 2;
	} else if (r->auth_step == 2) {
		own_b64(pw, pl, enc, sizeof(enc));
		r->auth_step = 3;
	} else {
		smtpc_fail(r, SMTPC_E_AUTH, 0, "unexpected AUTH reply", rep);
		return;
	}
	own_line(r, SC_AUTH, enc);
	explicit_bzero(tmp, sizeof(tmp));
	explicit_bzero(enc, sizeof(enc));
}

/*
 * own_auth - AUTH when we have credentials and the server offers a
 * mechanism we speak, then ready.  The password goes out inside TLS only
 * (Postfix's noplaintext) unless auth_plaintext, and inside verified TLS
 * when auth_verified: otherwise the connection fails rather than send the
 * message unauthenticated, which the relay would most likely refuse.
 */
static void
own_auth(struct smtpc *r)
{
	if (r->o.auth_user == NULL || r->o.auth_pass == NULL ||
	    (!r->caps.auth_plain && !r->caps.auth_login)) {
		own_ready(r);
		return;
	}
	if (r->tls == NULL && !r->o.auth_plaintext) {
		smtpc_fail(r, SMTPC_E_AUTH, 0, "offers AUTH without TLS: "
		    "credentials not sent in plain text", NULL);
		return;
	}
	if (r->o.auth_verified && (r->tls == NULL ||
	    !tls_conn_verified(r->tls))) {
		smtpc_fail(r, SMTPC_E_AUTH, 0, "certificate not verified, "
		    "credentials not sent", NULL);
		return;
	}
	r->auth_step = 0;
	own_auth_next(r, NULL);
}

/* own_tls_wanted - STARTTLS now: wanted, possible, not failed before */
static int
own_tls_wanted(const struct smtpc *r)
{
	return r->tls == NULL && !r->plain_again && r->o.ctx != NULL &&
	    (r->o.tls == SMTPC_TLS_OPPORTUNISTIC ||
	    r->o.tls == SMTPC_TLS_REQUIRE);
}

/* on_own_ehlo - the reply to our EHLO or HELO */
static void
on_own_ehlo(struct smtpc *r, const struct smtp_reply *rep)
{
	if (rep->code / 100 != 2) {
		if (r->state == SC_EHLO) {
			own_ehlo(r, 1);
			return;
		}
		smtpc_fail(r, SMTPC_E_REFUSED, 0, "HELO refused", rep);
		return;
	}
	if (r->state == SC_EHLO)
		smtp_ehlo_parse(rep, &r->caps);
	if (r->tls == NULL && r->caps.auth)
		r->auth_clear = 1;
	if (own_tls_wanted(r) && r->caps.starttls) {
		own_line(r, SC_STARTTLS, "STARTTLS");
		return;
	}
	if (r->tls == NULL && r->o.tls == SMTPC_TLS_REQUIRE) {
		smtpc_fail(r, SMTPC_E_TLS, 0,
		    "upstream does not offer STARTTLS", NULL);
		return;
	}
	own_auth(r);
}

/* smtpc_greeted - the greeting: the owner's (relay mode), or ours */
static void
smtpc_greeted(struct smtpc *r, const struct smtp_reply *rep)
{
	uv_timer_stop(&r->timer);
	if (r->o.helo != NULL) {
		if (rep->code / 100 != 2)
			smtpc_fail(r, SMTPC_E_REFUSED, 0, "greeting refused",
			    rep);
		else
			own_ehlo(r, 0);
	} else if (!r->plain_again) {
		smtpc_enter_state(r, SC_READY);
		r->cb->greeting(r->arg, rep);
	} else if (rep->code == 220)
		smtpc_release(r);	/* the client had its greeting */
	else
		smtpc_fail(r, SMTPC_E_REFUSED, 0,
		    "greeting refused after TLS fallback", rep);
}

/* smtpc_reply - one reply, in the state that awaits it */
static void
smtpc_reply(struct smtpc *r, const struct smtp_reply *rep)
{
	switch (r->state) {
	case SC_GREETING:
		smtpc_greeted(r, rep);
		break;
	case SC_EHLO:
		if (r->o.helo != NULL)
			on_own_ehlo(r, rep);
		else
			on_ehlo(r, rep);
		break;
	case SC_HELO:
		on_own_ehlo(r, rep);
		break;
	case SC_STARTTLS:
		on_starttls(r, rep);
		break;
	case SC_AUTH:
		own_auth_next(r, rep);
		break;
	case SC_READY:
		smtpc_deliver(r, rep);
		break;
	case SC_HANDSHAKE:
		smtpc_fail(r, SMTPC_E_PROTO, 0,
		    "reply during the TLS handshake", rep);
		break;
	default:
		break;
	}
}

/* smtpc_process - every complete reply in the parser */
static void
smtpc_process(struct smtpc *r)
{
	struct smtp_reply rep;
	int rc;

	while (r->state != SC_DEAD && r->state != SC_CLOSED) {
		if ((rc = smtp_reply_get(&r->rp, &rep)) == 0)
			return;
		if (rc == -1) {
			smtpc_fail(r, SMTPC_E_PROTO, 0, r->rp.error, NULL);
			return;
		}
		smtpc_reply(r, &rep);
		smtp_reply_clear(&rep);
	}
}

/* smtpc_tls_input - ciphertext in; the handshake's end releases the line */
static void
smtpc_tls_input(struct smtpc *r, const char *p, size_t n)
{
	enum tls_state st;

	st = tls_conn_feed(r->tls, p, n, &r->plain);
	if (st == TLS_FAILED) {
		log_info("%s=%llu upstream=%s tls=failed error=\"%s\"",
		    r->o.logname, (unsigned long long)r->o.id, r->peer,
		    log_vis(tls_conn_error(r->tls)));
		snprintf(r->why, sizeof(r->why), "TLS handshake or read "
		    "failed: %s", tls_conn_error(r->tls));
		smtpc_fail(r, SMTPC_E_TLS, 0, r->why, NULL);
		return;
	}
	if (st == TLS_HANDSHAKE)
		return;
	if (r->state == SC_HANDSHAKE) {
		log_info("%s=%llu upstream=%s tls=%s verified=%s",
		    r->o.logname, (unsigned long long)r->o.id, r->peer,
		    tls_conn_info(r->tls), tls_conn_verified(r->tls) ?
		    "yes" : "no");
		if (r->o.tls_counts != NULL)
			tls_count(r->o.tls_counts, tls_conn_info(r->tls));
		if (r->o.helo == NULL)
			smtpc_release(r);
		else if (r->o.tls == SMTPC_TLS_SMTPS) {
			/* the greeting comes inside TLS */
			smtpc_enter_state(r, SC_GREETING);
			uv_timer_start(&r->timer, smtpc_timeout_cb,
			    (uint64_t)r->o.t_cmd * 1000, 0);
		} else
			own_ehlo(r, 0);
	}
	if (buf_avail(&r->plain) > 0) {
		smtp_reply_feed(&r->rp, buf_head(&r->plain),
		    buf_avail(&r->plain));
		buf_reset(&r->plain);
	}
	if (st == TLS_CLOSED && r->state != SC_DEAD) {
		smtpc_process(r);
		smtpc_fail(r, SMTPC_E_LOST, 0, "upstream closed TLS", NULL);
	}
}

static void
smtpc_alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
	/* scratch: read and used up in this callback, one per thread */
	static _Thread_local char rbuf[65536];

	*b = uv_buf_init(rbuf, sizeof(rbuf));
}

static void
smtpc_read_cb(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
	struct smtpc *r = st->data;

	if (n == 0 || r->state == SC_DEAD || r->state == SC_CLOSED)
		return;
	if (n < 0) {
		smtpc_process(r);
		smtpc_fail(r, SMTPC_E_LOST, (int)n, n == UV_EOF ?
		    "closed by upstream" : uv_err_name((int)n), NULL);
		return;
	}
	if (r->tls != NULL)
		smtpc_tls_input(r, b->base, (size_t)n);
	else
		smtp_reply_feed(&r->rp, b->base, (size_t)n);
	smtpc_process(r);
	/* what the owner made of these replies */
	tls_cork_turn(r->o.corks);
}

const char *
smtpc_tls_info(const struct smtpc *r)
{
	return r->tls != NULL ? tls_conn_info(r->tls) : NULL;
}

int
smtpc_tls_dane(const struct smtpc *r, char *out, size_t len)
{
	if (r->tls == NULL)
		return -1;
	return tls_conn_dane_info(r->tls, out, len);
}

int
smtpc_tls_verified(const struct smtpc *r)
{
	return r->tls != NULL && tls_conn_verified(r->tls);
}

int
smtpc_auth_in_clear(const struct smtpc *r)
{
	return r->auth_clear;
}

const char *
smtpc_peer(const struct smtpc *r)
{
	return r->peer;
}

/* smtpc_close - no more callbacks; QUIT if idle, then close the handles */
void
smtpc_close(struct smtpc *r)
{
	int tcp;

	if (r == NULL || r->state == SC_CLOSED)
		return;
	/* reopening: the tcp handle is closing, relay_reopen_cb ends it */
	tcp = r->handles == 2 && r->state != SC_REOPEN;
	if (tcp && r->state != SC_DEAD)
		tls_cork_flush(&r->out);	/* commands already made */
	tls_cork_free(&r->out);
	if (r->state == SC_READY && r->outstanding == 0 && !r->quit_sent)
		tls_stream_write((uv_stream_t *)&r->tcp, r->tls, "QUIT\r\n", 6,
		    NULL, NULL);
	smtpc_enter_state(r, SC_CLOSED);
	if (tcp) {
		if (r->tls != NULL)
			tls_conn_close(r->tls);
		uv_close((uv_handle_t *)&r->tcp, smtpc_close_cb);
	}
	uv_timer_stop(&r->timer);
	uv_close((uv_handle_t *)&r->timer, smtpc_close_cb);
}
