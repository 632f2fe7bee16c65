/*
 * milter.c - the milter client: owns one session's milter connections
 * (struct mconn, one per configured milter, opened when the session
 * starts as Postfix does), the step the session waits on, the header
 * section of the message being received (struct milter_head: what
 * milters are sent field by field, and what their edits apply to), and
 * what the milters decided about the message.
 *
 * The protocol is Sendmail's milter protocol, version 6: a packet is a
 * 32-bit length (network order, counting the command byte), a command
 * byte and its data.  We offer the steps and the "no reply" flags a
 * filter may ask for, and the actions the sink can apply: add, insert
 * and change header, and quarantine always; where the message is still
 * ours to change (the queue sink: MILTER_EDIT_*), replace the body and
 * add, delete recipients and change the sender too.  A milter that asks
 * for another action is not granted it; one that uses an action it was
 * not granted, or any edit before the end, is out of protocol: its
 * default-action.
 *
 * Steps go to the milters in order, one at a time; content goes to every
 * milter as it arrives (each milter's replies are counted in a ring of
 * what it owes), so a slow milter costs its own latency once, at the end.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <uv.h>

#include "../common/addr.h"
#include "../common/buf.h"
#include "../common/log.h"
#include "../common/smtp.h"
#include "../common/xmalloc.h"
#include "milter.h"

#define MILTER_VERSION	6
#define MILTER_CHUNK	65535		/* body bytes per packet */
#define MILTER_MAXPKT	(1024 * 1024 + 64)	/* a packet read: SMFIP_MDS_1M */
#define MILTER_HDRMAX	(256 * 1024)	/* header section kept */
#define MILTER_HIWAT	(1024 * 1024)	/* bytes waiting per milter */
#define MILTER_MAXLINES	64		/* of a custom reply */

/* commands (to the milter) */
#define SMFIC_ABORT	'A'
#define SMFIC_BODY	'B'
#define SMFIC_CONNECT	'C'
#define SMFIC_MACRO	'D'
#define SMFIC_BODYEOB	'E'
#define SMFIC_HELO	'H'
#define SMFIC_HEADER	'L'
#define SMFIC_MAIL	'M'
#define SMFIC_EOH	'N'
#define SMFIC_OPTNEG	'O'
#define SMFIC_QUIT	'Q'
#define SMFIC_RCPT	'R'
#define SMFIC_DATA	'T'

/* replies */
#define SMFIR_ADDRCPT	'+'
#define SMFIR_ADDRCPT_PAR '2'
#define SMFIR_DELRCPT	'-'
#define SMFIR_ACCEPT	'a'
#define SMFIR_REPLBODY	'b'
#define SMFIR_CONTINUE	'c'
#define SMFIR_DISCARD	'd'
#define SMFIR_CHGFROM	'e'
#define SMFIR_ADDHEADER	'h'
#define SMFIR_INSHEADER	'i'
#define SMFIR_CHGHEADER	'm'
#define SMFIR_PROGRESS	'p'
#define SMFIR_QUARANTINE 'q'
#define SMFIR_REJECT	'r'
#define SMFIR_SKIP	's'
#define SMFIR_TEMPFAIL	't'
#define SMFIR_REPLYCODE	'y'

/* actions */
#define SMFIF_ADDHDRS	0x01
#define SMFIF_CHGBODY	0x02
#define SMFIF_ADDRCPT	0x04
#define SMFIF_DELRCPT	0x08
#define SMFIF_CHGHDRS	0x10
#define SMFIF_QUARANTINE 0x20
#define SMFIF_CHGFROM	0x40
#define SMFIF_ADDRCPT_PAR 0x80
/* offered on every path: the live relay logs header edits, refuses a
 * quarantine; the rest only where the sink applies them */
#define MILTER_ACTIONS	(SMFIF_ADDHDRS | SMFIF_CHGHDRS | SMFIF_QUARANTINE)
#define MILTER_ENVACTS	(SMFIF_ADDRCPT | SMFIF_ADDRCPT_PAR | \
	SMFIF_DELRCPT | SMFIF_CHGFROM)
#define MILTER_REPLMAX	(64ULL * 1024 * 1024)	/* a replaced body, without
						   a size limit */
#define MILTER_MAXENV	10000		/* envelope changes per message */

/* protocol steps a filter may leave out or not answer */
#define SMFIP_NOCONNECT	0x000001
#define SMFIP_NOHELO	0x000002
#define SMFIP_NOMAIL	0x000004
#define SMFIP_NORCPT	0x000008
#define SMFIP_NOBODY	0x000010
#define SMFIP_NOHDRS	0x000020
#define SMFIP_NOEOH	0x000040
#define SMFIP_NR_HDR	0x000080
#define SMFIP_NOUNKNOWN	0x000100
#define SMFIP_NODATA	0x000200
#define SMFIP_SKIP	0x000400
#define SMFIP_NR_CONN	0x001000
#define SMFIP_NR_HELO	0x002000
#define SMFIP_NR_MAIL	0x004000
#define SMFIP_NR_RCPT	0x008000
#define SMFIP_NR_DATA	0x010000
#define SMFIP_NR_UNKN	0x020000
#define SMFIP_NR_EOH	0x040000
#define SMFIP_NR_BODY	0x080000
#define SMFIP_HDR_LEADSPC 0x100000
#define SMFIP_MDS_256K	0x10000000
#define SMFIP_MDS_1M	0x20000000
#define MILTER_PROTO	(SMFIP_NOCONNECT | SMFIP_NOHELO | SMFIP_NOMAIL | \
	SMFIP_NORCPT | SMFIP_NOBODY | SMFIP_NOHDRS | SMFIP_NOEOH | \
	SMFIP_NR_HDR | SMFIP_NOUNKNOWN | SMFIP_NODATA | SMFIP_SKIP | \
	SMFIP_NR_CONN | SMFIP_NR_HELO | SMFIP_NR_MAIL | SMFIP_NR_RCPT | \
	SMFIP_NR_DATA | SMFIP_NR_UNKN | SMFIP_NR_EOH | SMFIP_NR_BODY | \
	SMFIP_HDR_LEADSPC | SMFIP_MDS_256K | SMFIP_MDS_1M)

/* one milter connection's state */
enum mstate {
	M_CONNECTING = 0,	/* connect() in flight */
	M_OPTNEG,		/* our OPTNEG sent, its answer awaited */
	M_OPEN,			/* steps may go */
	M_FAILED,		/* gone: its default-action stands */
	M_CLOSED		/* the session said goodbye */
};

static const char *mstate_names[] = {
	"connecting", "optneg", "open", "failed", "closed"
};

/* the step the session waits on */
enum step { ST_NONE = 0, ST_CONNECT, ST_HELO, ST_MAIL, ST_RCPT, ST_DATA,
	ST_EOM };

static const struct {
	char		 cmd;
	char		 macro;		/* macro stage */
	uint32_t	 no;		/* SMFIP_NO* */
	uint32_t	 nr;		/* SMFIP_NR_* */
	int		 content;	/* its timeout: content's */
} steps[] = {
	[ST_NONE] = { 0, 0, 0, 0, 0 },
	[ST_CONNECT] = { SMFIC_CONNECT, 'C', SMFIP_NOCONNECT, SMFIP_NR_CONN,
	    0 },
	[ST_HELO] = { SMFIC_HELO, 'H', SMFIP_NOHELO, SMFIP_NR_HELO, 0 },
	[ST_MAIL] = { SMFIC_MAIL, 'M', SMFIP_NOMAIL, SMFIP_NR_MAIL, 0 },
	[ST_RCPT] = { SMFIC_RCPT, 'R', SMFIP_NORCPT, SMFIP_NR_RCPT, 0 },
	[ST_DATA] = { SMFIC_DATA, 'T', SMFIP_NODATA, SMFIP_NR_DATA, 0 },
	[ST_EOM] = { SMFIC_BODYEOB, 'E', 0, 0, 1 },
};

/* a reply owed: for which command, in which message */
struct owed {
	char		 cmd;
	unsigned	 gen;
};

struct mconn {
	struct milter_chain	*chain;
	const struct policy_milter *conf;
	enum mstate		 state;
	union {
		uv_tcp_t	 tcp;
		uv_pipe_t	 pipe;
		uv_stream_t	 s;
		uv_handle_t	 h;
	}			 u;
	int			 hopen;		/* u is initialized */
	uv_connect_t		 creq;
	uv_timer_t		 timer;
	uv_write_t		 wreq;
	int			 writing;
	struct buf		 wbuf;		/* being written */
	struct buf		 out;		/* waiting */
	struct buf		 rbuf;
	uint32_t		 actions;	/* granted */
	uint32_t		 proto;		/* its steps */
	struct owed		*owed;		/* ring */
	size_t			 owed_cap, owed_head, nowed;
	int			 sess_done;	/* accepted the session */
	int			 msg_done;	/* done with this message */
	int			 skip_body;
	int			 eoh_sent;
};

struct milter_chain {
	uv_loop_t		*loop;
	milter_cb		 cb;
	void			(*wake)(void *);
	void			*arg;
	struct mconn		*m;
	size_t			 n;
	struct milter_info	 info;
	uint32_t		 offer;		/* actions offered */
	struct smtp_limits	 lim;		/* of an address a milter gives */
	uint64_t		 replmax;	/* bytes of a replaced body */
	char			 hostname[256];
	char			 port[IF_NAMESIZE];
	char			 cstr[ADDR_STRLEN];
	unsigned		 refs;		/* handles open */
	int			 in_cb;
	int			 in_step;	/* inside step_next's loop */
	int			 freeing;
	int			 unowned;
	/* the step */
	enum step		 step;
	size_t			 cur;		/* the milter asked */
	struct buf		 stepmac;	/* its macros packet or empty */
	struct buf		 steppkt;	/* its packet */
	/* what stands for the rest of the session: a milter's failure, or
	 * its reject of the connection or HELO */
	enum milter_verdict	 sess_verdict;
	struct smtp_reply	 sess_reply;
	char			 sess_by[64];
	/* the message */
	unsigned		 gen;		/* of the message: owed replies
						   of an earlier one are
						   dropped */
	int			 in_msg;
	struct milter_head	*head;
	size_t			 hsent;		/* fields sent */
	int			 in_body;
	struct buf		 chunk;		/* body gathered */
	char			*queue_id;
	enum milter_verdict	 msg_verdict;
	struct smtp_reply	 msg_reply;
	char			 msg_by[64];
	char			 why[256];
	char			*quarantine;
	struct milter_envedit	*env;		/* envelope changes */
	size_t			 nenv;
	struct buf		 repl;		/* the replaced body */
	struct mconn		*repl_by;	/* NULL: not replaced */
	int			 repl_cr;	/* it ended on CR */
	int			 was_busy;
};

static void	m_fail(struct mconn *, const char *, ...)
		    __attribute__((format(printf, 2, 3)));
static void	step_next(struct milter_chain *);
static void	m_flush(struct mconn *);
static void	chain_release(struct milter_chain *);
static void	chain_unown(struct milter_chain *);
static void	m_timeout(uv_timer_t *);
static void	answer_msg(struct milter_chain *);

/* ---------------------------------------------------------------- packets */

static void
pkt_begin(struct buf *b, char cmd)
{
	char hdr[5] = { 0, 0, 0, 0, cmd };

	buf_append(b, hdr, sizeof(hdr));
}

/* pkt_end - the length of the packet begun at off */
static void
pkt_end(struct buf *b, size_t off)
{
	uint32_t len = htonl((uint32_t)(b->len - off - 4));

	memcpy(b->data + off, &len, 4);
}

static void
pkt_str(struct buf *b, const char *s)
{
	buf_append(b, s, strlen(s) + 1);
}

static void
pkt_u32(struct buf *b, uint32_t v)
{
	v = htonl(v);
	buf_append(b, &v, 4);
}

/* macro - one macro pair, if it has a value */
static void
macro(struct buf *b, const char *name, const char *value)
{
	if (value == NULL || value[0] == '\0')
		return;
	pkt_str(b, name);
	pkt_str(b, value);
}

/* ---------------------------------------------------------------- replies */

/* reply_set - a reply of one line */
static void
reply_set(struct smtp_reply *r, const char *line)
{
	buf_reset(&r->text);
	r->code = atoi(line);
	r->nlines = 1;
	buf_puts(&r->text, line);
	buf_puts(&r->text, "\r\n");
}

/*
 * reply_custom - SMFIR_REPLYCODE's text ("550 5.7.1 text", lines split
 * by CRLF or LF): every line must carry the same 4xx or 5xx code; the
 * separators are made right, anything else is refused (-1)
 */
static int
reply_custom(struct smtp_reply *r, const char *s, size_t len)
{
	const char *p = s, *end = s + len, *eol;
	size_t n;
	int code = 0;

	while (len > 0 && s[len - 1] == '\0')
		len--, end--;
	if (len < 3 || (s[0] != '4' && s[0] != '5'))
		return -1;
	buf_reset(&r->text);
	r->nlines = 0;
	while (p < end) {
		if ((eol = memchr(p, '\n', (size_t)(end - p))) == NULL)
			eol = end;
		n = (size_t)(eol - p);
		if (n > 0 && p[n - 1] == '\r')
			n--;
		if (n < 3 || !isdigit((unsigned char)p[0]) ||
		    !isdigit((unsigned char)p[1]) ||
		    !isdigit((unsigned char)p[2]) ||
		    (n > 3 && p[3] != ' ' && p[3] != '-') ||
		    ++r->nlines > MILTER_MAXLINES)
			return -1;
		if (code == 0)
			code = atoi(p);
		else if (atoi(p) != code)
			return -1;
		for (size_t i = 0; i < n; i++)
			if ((unsigned char)p[i] < 32 && p[i] != '\t')
				return -1;
		buf_append(&r->text, p, 3);
		buf_puts(&r->text, eol < end && eol + 1 < end ? "-" : " ");
		if (n > 4)
			buf_append(&r->text, p + 4, n - 4);
		buf_puts(&r->text, "\r\n");
		p = eol < end ? eol + 1 : end;
	}
	r->code = code;
	return r->nlines > 0 ? 0 : -1;
}

/* verdict_reply - the reply a verdict gives without a custom one */
static void
verdict_reply(struct smtp_reply *r, enum milter_verdict v)
{
	/* Postfix's words for the same */
	if (v == MILTER_TEMPFAIL)
		reply_set(r, "451 4.7.1 Service unavailable - try again later");
	else
		reply_set(r, "550 5.7.1 Command rejected");
}

/* ---------------------------------------------------------------- answer */

/*
 * answer - the step is answered: the chain waits on nothing.  The caller
 * returns right after: the callback may free the chain (deferred until
 * it returns).
 */
static void
answer(struct milter_chain *c, enum milter_verdict v,
    const struct smtp_reply *r, const char *by, const char *why)
{
	struct milter_answer a;

	c->step = ST_NONE;
	memset(&a, 0, sizeof(a));
	a.verdict = v;
	a.reply = r != NULL && r->nlines > 0 ? r : NULL;
	a.milter = by;
	a.why = why;
	c->in_cb++;
	c->cb(c->arg, &a);
	c->in_cb--;
	if (c->freeing && c->in_cb == 0)
		chain_unown(c);
}

/* ---------------------------------------------------------------- a milter */

static void
owe(struct mconn *m, char cmd)
{
	struct milter_chain *c = m->chain;
	const struct policy_milter *conf = m->conf;
	size_t i;

	if (m->nowed == m->owed_cap) {
		struct owed *n = xcalloc(m->owed_cap ? m->owed_cap * 2 : 16,
		    sizeof(*n));

		for (i = 0; i < m->nowed; i++)
			n[i] = m->owed[(m->owed_head + i) % m->owed_cap];
		free(m->owed);
		m->owed = n;
		m->owed_head = 0;
		m->owed_cap = m->owed_cap ? m->owed_cap * 2 : 16;
	}
	m->owed[(m->owed_head + m->nowed) % m->owed_cap].cmd = cmd;
	m->owed[(m->owed_head + m->nowed) % m->owed_cap].gen = c->gen;
	/* the clock runs while a reply is owed; every packet that comes
	 * restarts it (m_read) */
	if (m->nowed++ == 0)
		uv_timer_start(&m->timer, m_timeout, 1000ULL *
		    (cmd == SMFIC_HEADER || cmd == SMFIC_BODY ||
		    cmd == SMFIC_EOH || cmd == SMFIC_BODYEOB ?
		    conf->t_content : conf->t_command), 0);
}

static struct owed *
owed_front(struct mconn *m)
{
	return m->nowed > 0 ? &m->owed[m->owed_head] : NULL;
}

static void
owed_pop(struct mconn *m)
{
	m->owed_head = (m->owed_head + 1) % m->owed_cap;
	if (--m->nowed == 0)
		uv_timer_stop(&m->timer);
}

/* m_write_cb - a write done: the next, or the session may read on */
static void
m_write_cb(uv_write_t *req, int status)
{
	struct mconn *m = req->data;
	struct milter_chain *c = m->chain;

	m->writing = 0;
	buf_reset(&m->wbuf);
	if (m->state == M_FAILED || m->state == M_CLOSED)
		return;
	if (status < 0) {
		m_fail(m, "write: %s", uv_strerror(status));
		return;
	}
	m_flush(m);
	if (c->was_busy && !milter_busy(c) && c->wake != NULL) {
		c->was_busy = 0;
		c->wake(c->arg);
	}
}

/* m_flush - write what waits, one write at a time */
static void
m_flush(struct mconn *m)
{
	uv_buf_t b;
	struct buf t;
	int rc;

	if (m->writing || buf_avail(&m->out) == 0 || m->state == M_CONNECTING ||
	    m->state == M_FAILED || m->state == M_CLOSED)
		return;
	t = m->wbuf;
	m->wbuf = m->out;
	m->out = t;
	buf_reset(&m->out);
	b = uv_buf_init((char *)(uintptr_t)buf_head(&m->wbuf),
	    (unsigned)buf_avail(&m->wbuf));
	m->wreq.data = m;
	if ((rc = uv_write(&m->wreq, &m->u.s, &b, 1, m_write_cb)) < 0) {
		m_fail(m, "write: %s", uv_strerror(rc));
		return;
	}
	m->writing = 1;
}

/* m_send - a packet (or several) to the milter */
static void
m_send(struct mconn *m, const struct buf *pkt)
{
	if (m->state == M_FAILED || m->state == M_CLOSED)
		return;
	buf_append(&m->out, buf_head(pkt), buf_avail(pkt));
	m_flush(m);
}

static void
m_close_cb(uv_handle_t *h)
{
	struct mconn *m = h->data;

	chain_release(m->chain);
}

/* m_shut - close the connection and its timer */
static void
m_shut(struct mconn *m)
{
	if (!m->hopen)
		return;
	m->hopen = 0;
	uv_close(&m->u.h, m_close_cb);
	uv_close((uv_handle_t *)&m->timer, m_close_cb);
}

/*
 * m_fail - the milter is gone or out of protocol: its default-action
 * stands for the rest of the session.  With "accept" it is skipped;
 * with "tempfail" or "reject" every step from now on gets that.
 */
static void
m_fail(struct mconn *m, const char *fmt, ...)
{
	struct milter_chain *c = m->chain;
	enum milter_verdict v;
	char why[200];
	va_list ap;
	int waited;

	if (m->state == M_FAILED || m->state == M_CLOSED)
		return;
	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	/* why may carry a byte the milter sent ('%c'): it goes into the
	 * session's log line too (c->why) */
	for (char *p = why; *p != '\0'; p++)
		if ((unsigned char)*p < 32 || (unsigned char)*p > 126)
			*p = '?';
	/* inside step_next the loop moves on by itself */
	waited = c->step != ST_NONE && &c->m[c->cur] == m && !c->in_step;
	log_warnx("session=%llu milter=%s socket=%s state=%s failed: %s; "
	    "action=%s", (unsigned long long)c->info.session_id,
	    m->conf->name, m->conf->socket, mstate_names[m->state],
	    log_vis(why),
	    policy_mact_names[m->conf->defact]);
	m->state = M_FAILED;
	m->nowed = 0;
	m_shut(m);
	/* a body it was replacing may be cut short: the message keeps the
	 * one it had (its other edits stand, as a header edit does) */
	if (c->repl_by == m && c->step == ST_EOM) {
		log_warnx("session=%llu milter=%s body replacement dropped",
		    (unsigned long long)c->info.session_id, m->conf->name);
		c->repl_by = NULL;
		buf_reset(&c->repl);
		c->repl_cr = 0;
	}
	if (m->conf->defact != POLICY_MACT_ACCEPT &&
	    c->sess_verdict == MILTER_CONTINUE) {
		v = m->conf->defact == POLICY_MACT_REJECT ? MILTER_REJECT :
		    MILTER_TEMPFAIL;
		c->sess_verdict = v;
		verdict_reply(&c->sess_reply, v);
		snprintf(c->sess_by, sizeof(c->sess_by), "%s", m->conf->name);
		snprintf(c->why, sizeof(c->why), "milter %.60s failed: %.90s",
		    m->conf->name, why);
	}
	if (c->was_busy && !milter_busy(c) && c->wake != NULL) {
		c->was_busy = 0;
		c->wake(c->arg);
	}
	if (waited) {
		c->cur++;
		step_next(c);
	}
}

/* m_timeout - no answer in time */
static void
m_timeout(uv_timer_t *t)
{
	struct mconn *m = t->data;

	if (m->state == M_CONNECTING)
		m_fail(m, "connect timed out");
	else
		m_fail(m, "no answer in time");
}

/* ---------------------------------------------------------------- replies */

/*
 * refusal - a reject, tempfail or custom reply (SMFIR_REPLYCODE) into
 * c->msg_reply, and its verdict; -1 when the custom reply is out of
 * form: the milter failed
 */
static int
refusal(struct mconn *m, char cmd, const char *data, size_t len,
    enum milter_verdict *v)
{
	struct milter_chain *c = m->chain;

	*v = cmd == SMFIR_TEMPFAIL ? MILTER_TEMPFAIL : MILTER_REJECT;
	buf_reset(&c->msg_reply.text);
	c->msg_reply.nlines = 0;
	if (cmd != SMFIR_REPLYCODE) {
		verdict_reply(&c->msg_reply, *v);
		return 0;
	}
	if (reply_custom(&c->msg_reply, data, len) == -1) {
		m_fail(m, "bad reply text");
		return -1;
	}
	*v = c->msg_reply.code >= 500 ? MILTER_REJECT : MILTER_TEMPFAIL;
	return 0;
}

/* content_reply - a reply to a header, EOH or body packet */
static void
content_reply(struct mconn *m, char cmd, const char *data, size_t len)
{
	struct milter_chain *c = m->chain;
	enum milter_verdict v;

	switch (cmd) {
	case SMFIR_CONTINUE:
		return;
	case SMFIR_SKIP:
		m->skip_body = 1;
		return;
	case SMFIR_ACCEPT:
		m->msg_done = 1;
		return;
	case SMFIR_REJECT:
	case SMFIR_TEMPFAIL:
	case SMFIR_REPLYCODE:
	case SMFIR_DISCARD:
		m->msg_done = 1;
		if (c->msg_verdict != MILTER_CONTINUE)
			return;
		if (cmd == SMFIR_DISCARD) {
			v = MILTER_DISCARD;
			buf_reset(&c->msg_reply.text);
			c->msg_reply.nlines = 0;
		} else if (refusal(m, cmd, data, len, &v) == -1)
			return;
		c->msg_verdict = v;
		snprintf(c->msg_by, sizeof(c->msg_by), "%s", m->conf->name);
		return;
	default:
		m_fail(m, "unexpected reply '%c' to content", cmd);
	}
}

/* head_edit - an edit at the end of the message */
static int
head_edit(struct mconn *m, char cmd, const char *data, size_t len)
{
	struct milter_chain *c = m->chain;
	const char *name, *value, *end = data + len;
	uint32_t idx = 0;

	if (cmd == SMFIR_INSHEADER || cmd == SMFIR_CHGHEADER) {
		if (len < 4)
			return -1;
		memcpy(&idx, data, 4);
		idx = ntohl(idx);
		data += 4;
	}
	name = data;
	if ((value = memchr(name, '\0', (size_t)(end - name))) == NULL)
		return -1;
	value++;
	if (value >= end || memchr(value, '\0', (size_t)(end - value)) == NULL)
		return -1;
	if (c->head == NULL)
		c->head = milter_head_new();
	if (cmd == SMFIR_ADDHEADER)
		return milter_head_add(c->head, name, value);
	if (cmd == SMFIR_INSHEADER)
		return milter_head_insert(c->head, idx, name, value);
	return milter_head_change(c->head, idx, name, value);
}

/* is_edit - a reply at the end that is not its answer: the end waits on */
static int
is_edit(char cmd)
{
	switch (cmd) {
	case SMFIR_ADDHEADER:
	case SMFIR_INSHEADER:
	case SMFIR_CHGHEADER:
	case SMFIR_QUARANTINE:
	case SMFIR_REPLBODY:
	case SMFIR_ADDRCPT:
	case SMFIR_ADDRCPT_PAR:
	case SMFIR_DELRCPT:
	case SMFIR_CHGFROM:
		return 1;
	}
	return 0;
}

/* envact - the action an envelope change needs granted */
static uint32_t
envact(char cmd)
{
	switch (cmd) {
	case SMFIR_ADDRCPT:
		return SMFIF_ADDRCPT;
	case SMFIR_ADDRCPT_PAR:
		return SMFIF_ADDRCPT_PAR;
	case SMFIR_DELRCPT:
		return SMFIF_DELRCPT;
	case SMFIR_CHGFROM:
		return SMFIF_CHGFROM;
	}
	return 0;
}

uint32_t
milter_offer(unsigned edits)
{
	return MILTER_ACTIONS |
	    (edits & MILTER_EDIT_BODY ? SMFIF_CHGBODY : 0) |
	    (edits & MILTER_EDIT_ENVELOPE ? MILTER_ENVACTS : 0);
}

void
milter_body_crlf(struct buf *b, const char *p, size_t n, int *cr)
{
	const char *lf;

	while (n > 0) {
		if ((lf = memchr(p, '\n', n)) == NULL) {
			buf_append(b, p, n);
			*cr = p[n - 1] == '\r';
			return;
		}
		buf_append(b, p, (size_t)(lf - p));
		/* the CR before it may have ended the last packet */
		if ((lf > p && lf[-1] != '\r') || (lf == p && !*cr))
			buf_puts(b, "\r\n");
		else
			buf_puts(b, "\n");
		*cr = 0;
		n -= (size_t)(lf - p) + 1;
		p = lf + 1;
	}
}

/*
 * body_replace - a SMFIR_REPLBODY packet: the body from this milter,
 * packets joined; a later milter's replaces an earlier one's.  Held in
 * memory up to the message size limit (the original is in the spool's
 * hands already): more is the milter failing.
 */
static void
body_replace(struct mconn *m, const char *data, size_t len)
{
	struct milter_chain *c = m->chain;

	if (c->repl_by != m) {
		buf_reset(&c->repl);
		c->repl_cr = 0;
		c->repl_by = m;
	}
	if (c->repl.len + len > c->replmax) {
		m_fail(m, "replaced body over %llu bytes",
		    (unsigned long long)c->replmax);
		return;
	}
	milter_body_crlf(&c->repl, data, len, &c->repl_cr);
}

/* notify_valid - NEVER, or a list of SUCCESS, FAILURE, DELAY */
static int
notify_valid(const char *v)
{
	char *t, *w, *save = NULL;
	int rc = 0;

	if (strcasecmp(v, "NEVER") == 0)
		return 0;
	t = xstrdup(v);
	if (*t == '\0')
		rc = -1;
	for (w = strtok_r(t, ",", &save); w != NULL && rc == 0;
	    w = strtok_r(NULL, ",", &save))
		if (strcasecmp(w, "SUCCESS") != 0 &&
		    strcasecmp(w, "FAILURE") != 0 && strcasecmp(w, "DELAY") != 0)
			rc = -1;
	free(t);
	return rc;
}

/* path_check - s as a path: "<addr>" or a bare addr, nothing else */
static int
path_check(const char *s, int isfrom, const struct smtp_limits *lim,
    struct smtp_path *path)
{
	struct buf line;
	const char *why;
	int rc;

	if (strlen(s) > 1000)
		return -1;
	buf_init(&line);
	buf_puts(&line, isfrom ? "FROM:" : "TO:");
	if (s[0] != '<')
		buf_puts(&line, "<");
	buf_puts(&line, s);
	if (s[0] != '<')
		buf_puts(&line, ">");
	buf_append(&line, "", 1);
	rc = smtp_parse_path(line.data, isfrom ? "FROM:" : "TO:", isfrom, lim,
	    path, &why);
	buf_free(&line);
	/* parameters go in their own string, never after the address */
	if (rc == 0 && path->nparams > 0) {
		smtp_path_free(path);
		rc = -1;
	}
	return rc;
}

int
milter_envedit_parse(char cmd, const char *data, size_t len,
    const struct smtp_limits *lim, struct milter_envedit *e)
{
	const char *end = data + len, *nul, *args = NULL, *why, *v;
	struct smtp_path path, params;
	struct buf line;
	int isfrom = cmd == SMFIR_CHGFROM, rc = -1;

	memset(e, 0, sizeof(*e));
	memset(&path, 0, sizeof(path));
	memset(&params, 0, sizeof(params));
	buf_init(&line);
	e->op = isfrom ? MILTER_CHGFROM : cmd == SMFIR_DELRCPT ?
	    MILTER_DELRCPT : MILTER_ADDRCPT;
	if (envact(cmd) == 0 || (nul = memchr(data, '\0', len)) == NULL)
		goto out;
	if (nul + 1 < end) {
		/* the ESMTP arguments, one string: of these two only */
		if (cmd != SMFIR_ADDRCPT_PAR && !isfrom)
			goto out;
		args = nul + 1;
		if ((nul = memchr(args, '\0', (size_t)(end - args))) == NULL ||
		    nul + 1 != end)
			goto out;
	}
	if (path_check(data, isfrom, lim, &path) == -1)
		goto out;
	if (args != NULL && *args != '\0') {
		buf_puts(&line, "FROM:<> ");
		buf_puts(&line, args);
		buf_append(&line, "", 1);
		if (smtp_parse_path(line.data, "FROM:", 1, lim, &params,
		    &why) == -1)
			goto out;
	}
	/* kept where the envelope has them (a recipient's DSN request),
	 * any other parameter accepted and ignored */
	if (cmd == SMFIR_ADDRCPT_PAR) {
		if ((v = smtp_path_param(&params, "NOTIFY")) != NULL) {
			if (notify_valid(v) == -1)
				goto out;
			e->notify = xstrdup(v);
		}
		if ((v = smtp_path_param(&params, "ORCPT")) != NULL) {
			if (strlen(v) > 500 || smtp_orcpt_valid(v, 500) == -1)
				goto out;
			e->orcpt = xstrdup(v);
		}
	}
	e->addr = path.addr;
	e->domain = path.domain;
	path.addr = NULL;
	rc = 0;
out:
	if (rc == -1)
		milter_envedit_free(e);
	smtp_path_free(&path);
	smtp_path_free(&params);
	buf_free(&line);
	return rc;
}

void
milter_envedit_free(struct milter_envedit *e)
{
	free(e->addr);
	free(e->notify);
	free(e->orcpt);
	e->addr = e->notify = e->orcpt = NULL;
	e->domain = NULL;
}

/* env_edit - an envelope change, checked, kept for the sink in order */
static void
env_edit(struct mconn *m, char cmd, const char *data, size_t len)
{
	struct milter_chain *c = m->chain;
	struct milter_envedit e;

	if (c->nenv >= MILTER_MAXENV) {
		m_fail(m, "over %d envelope changes", MILTER_MAXENV);
		return;
	}
	if (milter_envedit_parse(cmd, data, len, &c->lim, &e) == -1) {
		m_fail(m, "bad envelope change '%c'", cmd);
		return;
	}
	e.milter = m->conf->name;
	c->env = xreallocarray(c->env, c->nenv + 1, sizeof(*c->env));
	c->env[c->nenv++] = e;
}

/* edits_clear - the envelope changes and a replaced body go (its
 * memory too: it may be big) */
static void
edits_clear(struct milter_chain *c)
{
	size_t i;

	for (i = 0; i < c->nenv; i++)
		milter_envedit_free(&c->env[i]);
	free(c->env);
	c->env = NULL;
	c->nenv = 0;
	buf_free(&c->repl);
	c->repl_by = NULL;
	c->repl_cr = 0;
}

/* step_reply - the answer to the step, from the milter asked */
static void
step_reply(struct mconn *m, char cmd, const char *data, size_t len)
{
	struct milter_chain *c = m->chain;
	enum step st = c->step;
	enum milter_verdict v;

	switch (cmd) {
	case SMFIR_CONTINUE:
		c->cur++;
		step_next(c);
		return;
	case SMFIR_ACCEPT:
		if (st == ST_CONNECT || st == ST_HELO)
			m->sess_done = 1;
		else
			m->msg_done = 1;
		c->cur++;
		step_next(c);
		return;
	case SMFIR_DISCARD:
		if (st == ST_CONNECT || st == ST_HELO) {
			m_fail(m, "discard before a message");
			return;
		}
		snprintf(c->why, sizeof(c->why), "discarded by milter %s",
		    m->conf->name);
		answer(c, MILTER_DISCARD, NULL, m->conf->name, c->why);
		return;
	case SMFIR_REJECT:
	case SMFIR_TEMPFAIL:
	case SMFIR_REPLYCODE:
		if (refusal(m, cmd, data, len, &v) == -1)
			return;
		snprintf(c->why, sizeof(c->why), "%s by milter %s",
		    v == MILTER_REJECT ? "rejected" : "tempfailed",
		    m->conf->name);
		if (st == ST_CONNECT || st == ST_HELO) {
			/* Postfix: every later command gets it */
			c->sess_verdict = v;
			buf_reset(&c->sess_reply.text);
			buf_append(&c->sess_reply.text,
			    buf_head(&c->msg_reply.text),
			    buf_avail(&c->msg_reply.text));
			c->sess_reply.code = c->msg_reply.code;
			c->sess_reply.nlines = c->msg_reply.nlines;
			snprintf(c->sess_by, sizeof(c->sess_by), "%s",
			    m->conf->name);
		}
		answer(c, v, &c->msg_reply, m->conf->name, c->why);
		return;
	case SMFIR_QUARANTINE:
		if (st != ST_EOM || !(m->actions & SMFIF_QUARANTINE) ||
		    len == 0 || memchr(data, '\0', len) == NULL) {
			m_fail(m, "quarantine out of place");
			return;
		}
		free(c->quarantine);
		c->quarantine = xstrdup(data[0] ? data : m->conf->name);
		return;
	case SMFIR_ADDHEADER:
	case SMFIR_INSHEADER:
	case SMFIR_CHGHEADER:
		if (st != ST_EOM || !(m->actions & (cmd == SMFIR_CHGHEADER ?
		    SMFIF_CHGHDRS : SMFIF_ADDHDRS))) {
			m_fail(m, "header edit '%c' not granted", cmd);
			return;
		}
		if (head_edit(m, cmd, data, len) == -1)
			m_fail(m, "bad header edit '%c'", cmd);
		return;
	case SMFIR_REPLBODY:
		if (st != ST_EOM || !(m->actions & SMFIF_CHGBODY)) {
			m_fail(m, "body replacement not granted");
			return;
		}
		body_replace(m, data, len);
		return;
	case SMFIR_ADDRCPT:
	case SMFIR_ADDRCPT_PAR:
	case SMFIR_DELRCPT:
	case SMFIR_CHGFROM:
		if (st != ST_EOM || !(m->actions & envact(cmd))) {
			m_fail(m, "envelope change '%c' not granted", cmd);
			return;
		}
		env_edit(m, cmd, data, len);
		return;
	case SMFIR_SKIP:
	default:
		m_fail(m, "unexpected reply '%c'", cmd);
	}
}

/* optneg - the milter's answer to our offer */
static void
optneg(struct mconn *m, char cmd, const char *data, size_t len)
{
	uint32_t v[3];

	if (cmd != SMFIC_OPTNEG || len < 12) {
		m_fail(m, "bad option negotiation");
		return;
	}
	memcpy(v, data, 12);
	v[0] = ntohl(v[0]);
	v[1] = ntohl(v[1]);
	v[2] = ntohl(v[2]);
	if (v[0] < 2 || v[0] > MILTER_VERSION) {
		m_fail(m, "protocol version %u", v[0]);
		return;
	}
	if (v[1] & ~m->chain->offer)
		log_debug("session=%llu milter=%s asks for actions 0x%x, "
		    "granted 0x%x", (unsigned long long)m->chain->info.session_id,
		    m->conf->name, v[1], v[1] & m->chain->offer);
	m->actions = v[1] & m->chain->offer;
	m->proto = v[2] & MILTER_PROTO;
	m->state = M_OPEN;
	owed_pop(m);
	/* the step that waited for it */
	if (m->chain->step != ST_NONE && &m->chain->m[m->chain->cur] == m)
		step_next(m->chain);
}

/* m_packet - one packet from the milter */
static void
m_packet(struct mconn *m, char cmd, const char *data, size_t len)
{
	struct milter_chain *c = m->chain;
	struct owed *o;

	if (cmd == SMFIR_PROGRESS)
		return;		/* the timer restarted already */
	if ((o = owed_front(m)) == NULL) {
		m_fail(m, "reply '%c' nobody asked for", cmd);
		return;
	}
	if (m->state == M_OPTNEG) {
		optneg(m, cmd, data, len);
		return;
	}
	/* an earlier message's replies: counted, dropped */
	if (o->gen != c->gen) {
		if (!is_edit(cmd))
			owed_pop(m);
		return;
	}
	if (o->cmd == SMFIC_HEADER || o->cmd == SMFIC_EOH ||
	    o->cmd == SMFIC_BODY) {
		owed_pop(m);
		content_reply(m, cmd, data, len);
		return;
	}
	if (c->step == ST_NONE || &c->m[c->cur] != m ||
	    o->cmd != steps[c->step].cmd) {
		m_fail(m, "reply '%c' out of turn", cmd);
		return;
	}
	/* an edit is not the answer: the step waits on */
	if (!(o->cmd == SMFIC_BODYEOB && is_edit(cmd)))
		owed_pop(m);
	step_reply(m, cmd, data, len);
}

static void
m_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
	struct mconn *m = h->data;

	buf_reserve(&m->rbuf, 64 * 1024);
	b->base = m->rbuf.data + m->rbuf.len;
	b->len = m->rbuf.cap - m->rbuf.len;
}

/* m_read - packets in: each handled whole, the size bounded */
/*
 * m_quickack - while replies are owed, ACK the milter's next segment at
 * once: a milter that writes each reply packet on its own (rspamd adds
 * headers one packet each) without TCP_NODELAY holds the next behind
 * Nagle until this side's delayed ACK, 40 ms a step.  Quick-ACK mode
 * ends by itself, so it is set again on each read.
 */
static void
m_quickack(struct mconn *m)
{
	uv_os_fd_t fd;
	int one = 1;

	if (m->conf->path == NULL && uv_fileno(&m->u.h, &fd) == 0)
		(void)setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof(one));
}

static void
m_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
	struct mconn *m = s->data;
	struct milter_chain *c = m->chain;
	uint32_t len;

	if (n == 0)
		return;
	if (n < 0) {
		m_fail(m, "%s", n == UV_EOF ? "closed the connection" :
		    uv_strerror((int)n));
		return;
	}
	m->rbuf.len += (size_t)n;
	if (m->nowed > 0) {
		m_quickack(m);
		uv_timer_stop(&m->timer);
		uv_timer_start(&m->timer, m_timeout, 1000ULL *
		    (c->step == ST_EOM || c->in_body ? m->conf->t_content :
		    m->conf->t_command), 0);
	}
	c->in_cb++;		/* a step answered below may free c */
	while (buf_avail(&m->rbuf) >= 4 && m->state != M_FAILED &&
	    m->state != M_CLOSED && !c->freeing) {
		memcpy(&len, buf_head(&m->rbuf), 4);
		len = ntohl(len);
		if (len == 0 || len > MILTER_MAXPKT) {
			m_fail(m, "packet of %u bytes", len);
			break;
		}
		if (buf_avail(&m->rbuf) < 4 + (size_t)len)
			break;
		{
			const char *p = buf_head(&m->rbuf) + 4;

			m_packet(m, p[0], p + 1, len - 1);
		}
		if (m->state == M_FAILED || m->state == M_CLOSED)
			break;
		buf_consume(&m->rbuf, 4 + (size_t)len);
	}
	if (buf_avail(&m->rbuf) == 0)
		buf_reset(&m->rbuf);
	c->in_cb--;
	if (c->freeing && c->in_cb == 0)
		chain_unown(c);
}

/* m_connected - connected: offer our options */
static void
m_connected(uv_connect_t *req, int status)
{
	struct mconn *m = req->data;
	struct buf b;
	size_t off;
	int rc;

	if (m->state != M_CONNECTING)
		return;
	if (status < 0) {
		m_fail(m, "connect: %s", uv_strerror(status));
		return;
	}
	if ((rc = uv_read_start(&m->u.s, m_alloc, m_read)) < 0) {
		m_fail(m, "read: %s", uv_strerror(rc));
		return;
	}
	m->state = M_OPTNEG;
	buf_init(&b);
	off = b.len;
	pkt_begin(&b, SMFIC_OPTNEG);
	pkt_u32(&b, MILTER_VERSION);
	pkt_u32(&b, m->chain->offer);
	pkt_u32(&b, MILTER_PROTO);
	pkt_end(&b, off);
	m_send(m, &b);
	buf_free(&b);
	owe(m, SMFIC_OPTNEG);
}

/* m_open - connect to one milter */
static void
m_open(struct milter_chain *c, struct mconn *m)
{
	const struct policy_milter *conf = m->conf;
	int rc;

	m->state = M_CONNECTING;
	uv_timer_init(c->loop, &m->timer);
	m->timer.data = m;
	m->timer.timer_cb = m_timeout;
	if (conf->path != NULL)
		uv_pipe_init(c->loop, &m->u.pipe, 0);
	else
		uv_tcp_init(c->loop, &m->u.tcp);
	m->u.h.data = m;
	m->hopen = 1;
	c->refs += 2;
	m->creq.data = m;
	uv_timer_start(&m->timer, m_timeout, 1000ULL * conf->t_connect, 0);
	if (conf->path != NULL) {
		uv_pipe_connect(&m->creq, &m->u.pipe, conf->path,
		    m_connected);
		return;
	}
	/* steps are small packets, each answered before the next: without
	 * TCP_NODELAY a packet written while the last is unacknowledged
	 * waits for the milter's delayed ACK (40 ms a step) */
	(void)uv_tcp_nodelay(&m->u.tcp, 1);
	if ((rc = uv_tcp_connect(&m->creq, &m->u.tcp,
	    (const struct sockaddr *)&conf->addr, m_connected)) < 0)
		m_fail(m, "connect: %s", uv_strerror(rc));
}

/* ---------------------------------------------------------------- steps */

/* usable - the milter takes part in the step st */
static int
usable(const struct mconn *m, enum step st)
{
	if (m->state == M_FAILED || m->state == M_CLOSED || m->sess_done)
		return 0;
	if (st >= ST_RCPT && m->msg_done)
		return 0;
	if (m->state == M_OPEN && (m->proto & steps[st].no))
		return 0;
	return 1;
}

/*
 * step_next - the one place a step moves on: the next milter that takes
 * part is sent the step (after its negotiation, if that is still going),
 * or, none left, the step is answered
 */
static void
step_next(struct milter_chain *c)
{
	struct mconn *m;
	enum step st = c->step;

	for (; c->cur < c->n; c->cur++) {
		m = &c->m[c->cur];
		if (!usable(m, st))
			continue;
		if (m->state != M_OPEN)
			return;		/* optneg() calls back */
		c->in_step = 1;
		if (buf_avail(&c->stepmac) > 0)
			m_send(m, &c->stepmac);
		m_send(m, &c->steppkt);
		c->in_step = 0;
		if (m->state == M_FAILED)
			continue;
		if (m->proto & steps[st].nr)
			continue;
		owe(m, steps[st].cmd);
		return;
	}
	if (c->sess_verdict != MILTER_CONTINUE) {
		answer(c, c->sess_verdict, &c->sess_reply, c->sess_by, c->why);
		return;
	}
	/* a reply to the content came after the end was sent */
	if (st == ST_EOM && c->msg_verdict != MILTER_CONTINUE) {
		answer_msg(c);
		return;
	}
	answer(c, MILTER_CONTINUE, NULL, NULL, NULL);
}

/* answer_msg - what a milter said of the content answers the end */
static void
answer_msg(struct milter_chain *c)
{
	if (c->msg_verdict == MILTER_DISCARD)
		snprintf(c->why, sizeof(c->why), "discarded by milter %s",
		    c->msg_by);
	else {
		snprintf(c->why, sizeof(c->why), "%s by milter %s",
		    c->msg_verdict == MILTER_REJECT ? "rejected" :
		    "tempfailed", c->msg_by);
		if (c->msg_reply.nlines == 0)
			verdict_reply(&c->msg_reply, c->msg_verdict);
	}
	answer(c, c->msg_verdict, &c->msg_reply, c->msg_by, c->why);
}

/* step_start - a new step, its packet in c->steppkt (macros: stepmac) */
static void
step_start(struct milter_chain *c, enum step st)
{
	c->step = st;
	c->cur = 0;
	if (c->sess_verdict != MILTER_CONTINUE) {
		/* a failed milter's action, or a refused connection */
		answer(c, c->sess_verdict, &c->sess_reply, c->sess_by, c->why);
		return;
	}
	step_next(c);
}

/* step_macros - begin the macro packet of stage */
static size_t
step_macros(struct milter_chain *c, char stage)
{
	size_t off;

	buf_reset(&c->stepmac);
	off = c->stepmac.len;
	pkt_begin(&c->stepmac, SMFIC_MACRO);
	buf_append(&c->stepmac, &stage, 1);
	return off;
}

/* step_macros_end - close it, or drop it if it names nothing */
static void
step_macros_end(struct milter_chain *c, size_t off)
{
	if (c->stepmac.len == off + 6)
		buf_reset(&c->stepmac);
	else
		pkt_end(&c->stepmac, off);
}

static size_t
step_packet(struct milter_chain *c, char cmd)
{
	buf_reset(&c->steppkt);
	pkt_begin(&c->steppkt, cmd);
	return 0;
}

struct milter_chain *
milter_chain_new(uv_loop_t *loop, const struct policy *pol,
    const struct policy_milterset *set, const struct milter_info *info,
    milter_cb cb, void (*wake)(void *), void *arg)
{
	struct milter_chain *c;
	size_t i;

	if (set == NULL || set->n == 0)
		return NULL;
	c = xcalloc(1, sizeof(*c));
	c->loop = loop;
	c->cb = cb;
	c->wake = wake;
	c->arg = arg;
	c->info = *info;
	snprintf(c->hostname, sizeof(c->hostname), "%s",
	    info->hostname ? info->hostname : "localhost");
	snprintf(c->port, sizeof(c->port), "%s", info->port ? info->port : "");
	c->info.hostname = c->hostname;
	c->info.port = c->port;
	c->offer = milter_offer(info->edits);
	c->lim.localpart = pol->limits.localpart;
	c->lim.domain = pol->limits.domain;
	c->lim.utf8 = 1;
	c->replmax = pol->limits.size > 0 ? pol->limits.size : MILTER_REPLMAX;
	buf_init(&c->repl);
	addr_fmt_ip((const struct sockaddr *)&info->client, c->cstr,
	    sizeof(c->cstr));
	buf_init(&c->stepmac);
	buf_init(&c->steppkt);
	buf_init(&c->chunk);
	buf_init(&c->sess_reply.text);
	buf_init(&c->msg_reply.text);
	c->refs = 1;		/* the chain's own */
	c->n = set->n;
	c->m = xcalloc(c->n, sizeof(*c->m));
	for (i = 0; i < c->n; i++) {
		c->m[i].chain = c;
		c->m[i].conf = &pol->milters[set->idx[i]];
		buf_init(&c->m[i].wbuf);
		buf_init(&c->m[i].out);
		buf_init(&c->m[i].rbuf);
		m_open(c, &c->m[i]);
	}
	return c;
}

void
milter_connect(struct milter_chain *c)
{
	const struct sockaddr *sa = (const struct sockaddr *)&c->info.client;
	char host[ADDR_STRLEN + 2], dst[ADDR_STRLEN], port[8], fam;
	size_t off;
	uint16_t pn;

	off = step_macros(c, 'C');
	macro(&c->stepmac, "j", c->hostname);
	snprintf(host, sizeof(host), "[%s]", c->cstr);
	{
		char u[2 * ADDR_STRLEN + 8];

		snprintf(u, sizeof(u), "%s %s", host, host);
		macro(&c->stepmac, "_", u);
	}
	macro(&c->stepmac, "{daemon_name}", "mxbridge");
	addr_fmt_ip((const struct sockaddr *)&c->info.orig_dst, dst,
	    sizeof(dst));
	macro(&c->stepmac, "{if_addr}", dst);
	macro(&c->stepmac, "{daemon_addr}", dst);
	macro(&c->stepmac, "{client_addr}", c->cstr);
	snprintf(port, sizeof(port), "%u", addr_port(sa));
	macro(&c->stepmac, "{client_port}", port);
	macro(&c->stepmac, "{client_name}", host);
	macro(&c->stepmac, "{if_name}", c->port);
	step_macros_end(c, off);
	off = step_packet(c, SMFIC_CONNECT);
	pkt_str(&c->steppkt, host);
	fam = sa->sa_family == AF_INET6 ? '6' : '4';
	buf_append(&c->steppkt, &fam, 1);
	pn = htons(addr_port(sa));
	buf_append(&c->steppkt, &pn, 2);
	pkt_str(&c->steppkt, c->cstr);
	pkt_end(&c->steppkt, off);
	step_start(c, ST_CONNECT);
}

void
milter_helo(struct milter_chain *c, const char *helo, const char *tlsv,
    const char *cipher)
{
	size_t off;

	off = step_macros(c, 'H');
	macro(&c->stepmac, "{tls_version}", tlsv);
	macro(&c->stepmac, "{cipher}", cipher);
	step_macros_end(c, off);
	off = step_packet(c, SMFIC_HELO);
	pkt_str(&c->steppkt, helo != NULL ? helo : "");
	pkt_end(&c->steppkt, off);
	step_start(c, ST_HELO);
}

/* msg_begin - a new message: what the last one left goes */
static void
msg_begin(struct milter_chain *c)
{
	size_t i;

	c->gen++;
	c->in_msg = 1;
	c->in_body = 0;
	c->hsent = 0;
	if (c->head != NULL)
		milter_head_free(c->head);
	c->head = NULL;
	buf_reset(&c->chunk);
	free(c->queue_id);
	c->queue_id = NULL;
	free(c->quarantine);
	c->quarantine = NULL;
	edits_clear(c);
	c->msg_verdict = MILTER_CONTINUE;
	for (i = 0; i < c->n; i++) {
		c->m[i].msg_done = 0;
		c->m[i].skip_body = 0;
		c->m[i].eoh_sent = 0;
	}
}

static void
args_packet(struct milter_chain *c, char cmd, const char *const *argv,
    int argc)
{
	size_t off;
	int i;

	off = step_packet(c, cmd);
	for (i = 0; i < argc; i++)
		pkt_str(&c->steppkt, argv[i]);
	pkt_end(&c->steppkt, off);
}

void
milter_mail(struct milter_chain *c, const char *const *argv, int argc,
    const char *auth)
{
	size_t off;

	msg_begin(c);
	off = step_macros(c, 'M');
	macro(&c->stepmac, "{mail_addr}", argc > 0 ? argv[0] : NULL);
	macro(&c->stepmac, "{auth_authen}", auth);
	step_macros_end(c, off);
	args_packet(c, SMFIC_MAIL, argv, argc);
	step_start(c, ST_MAIL);
}

void
milter_rcpt(struct milter_chain *c, const char *const *argv, int argc)
{
	size_t off;

	off = step_macros(c, 'R');
	macro(&c->stepmac, "{rcpt_addr}", argc > 0 ? argv[0] : NULL);
	step_macros_end(c, off);
	args_packet(c, SMFIC_RCPT, argv, argc);
	step_start(c, ST_RCPT);
}

void
milter_data(struct milter_chain *c, const char *queue_id)
{
	size_t off;

	free(c->queue_id);
	c->queue_id = queue_id != NULL ? xstrdup(queue_id) : NULL;
	off = step_macros(c, 'T');
	macro(&c->stepmac, "i", queue_id);
	step_macros_end(c, off);
	off = step_packet(c, SMFIC_DATA);
	pkt_end(&c->steppkt, off);
	step_start(c, ST_DATA);
}

/* to_content - one content packet to every milter still reading, of
 * the kind no (SMFIP_NO*), each owing a reply unless nr */
static void
to_content(struct milter_chain *c, const struct buf *pkt, char cmd,
    uint32_t no, uint32_t nr)
{
	struct mconn *m;
	size_t i;

	for (i = 0; i < c->n; i++) {
		m = &c->m[i];
		if (!usable(m, ST_EOM) || m->state != M_OPEN ||
		    (m->proto & no) || (cmd == SMFIC_BODY && m->skip_body) ||
		    (cmd == SMFIC_EOH && m->eoh_sent))
			continue;
		if (cmd == SMFIC_EOH)
			m->eoh_sent = 1;
		m_send(m, pkt);
		if (m->state == M_OPEN && !(m->proto & nr))
			owe(m, cmd);
		if (milter_busy(c))
			c->was_busy = 1;
	}
}

/* send_fields - the header fields complete so far */
static void
send_fields(struct milter_chain *c, size_t upto)
{
	struct buf pkt, val, name;
	size_t off, i;
	int lead;

	buf_init(&pkt);
	buf_init(&val);
	buf_init(&name);
	for (; c->hsent < upto; c->hsent++) {
		for (i = 0; i < c->n; i++) {
			struct mconn *m = &c->m[i];

			if (!usable(m, ST_EOM) || m->state != M_OPEN ||
			    (m->proto & SMFIP_NOHDRS))
				continue;
			lead = (m->proto & SMFIP_HDR_LEADSPC) != 0;
			buf_reset(&val);
			buf_reset(&name);
			milter_head_field(c->head, c->hsent, lead, &name,
			    &val);
			buf_reset(&pkt);
			off = 0;
			pkt_begin(&pkt, SMFIC_HEADER);
			buf_append(&pkt, name.data, name.len);
			buf_append(&pkt, val.data, val.len);
			buf_append(&pkt, "", 1);
			pkt_end(&pkt, off);
			m_send(m, &pkt);
			if (m->state == M_OPEN && !(m->proto & SMFIP_NR_HDR))
				owe(m, SMFIC_HEADER);
		}
	}
	if (milter_busy(c))
		c->was_busy = 1;
	buf_free(&pkt);
	buf_free(&val);
	buf_free(&name);
}

/* end_header - the header section is over: EOH (with the queue id) */
static void
end_header(struct milter_chain *c)
{
	struct buf pkt;
	size_t off;

	send_fields(c, milter_head_count(c->head));
	c->in_body = 1;
	buf_init(&pkt);
	off = 0;
	pkt_begin(&pkt, SMFIC_MACRO);
	buf_append(&pkt, "N", 1);
	macro(&pkt, "i", c->queue_id);
	pkt_end(&pkt, off);
	off = pkt.len;
	pkt_begin(&pkt, SMFIC_EOH);
	pkt_end(&pkt, off);
	to_content(c, &pkt, SMFIC_EOH, SMFIP_NOEOH, SMFIP_NR_EOH);
	buf_free(&pkt);
}

/* send_body - gathered body bytes in packets of MILTER_CHUNK, all of
 * them when last */
static void
send_body(struct milter_chain *c, int last)
{
	struct buf pkt;
	size_t n, off;

	buf_init(&pkt);
	while (buf_avail(&c->chunk) >= MILTER_CHUNK ||
	    (last && buf_avail(&c->chunk) > 0)) {
		n = buf_avail(&c->chunk);
		if (n > MILTER_CHUNK)
			n = MILTER_CHUNK;
		buf_reset(&pkt);
		off = 0;
		pkt_begin(&pkt, SMFIC_BODY);
		buf_append(&pkt, buf_head(&c->chunk), n);
		pkt_end(&pkt, off);
		to_content(c, &pkt, SMFIC_BODY, SMFIP_NOBODY, SMFIP_NR_BODY);
		buf_consume(&c->chunk, n);
	}
	if (buf_avail(&c->chunk) == 0)
		buf_reset(&c->chunk);
	buf_free(&pkt);
}

void
milter_content(struct milter_chain *c, const char *p, size_t n)
{
	const char *left;
	size_t used, nleft;
	int done = 0;

	if (!c->in_msg)
		return;
	if (!c->in_body) {
		if (c->head == NULL)
			c->head = milter_head_new();
		used = milter_head_feed(c->head, p, n, &done);
		/* the last field may go on on the next line: not yet */
		if (milter_head_count(c->head) > 1)
			send_fields(c, milter_head_count(c->head) - 1);
		if (!done)
			return;
		end_header(c);
		left = milter_head_leftover(c->head, &nleft);
		buf_append(&c->chunk, left, nleft);
		p += used;
		n -= used;
	}
	buf_append(&c->chunk, p, n);
	send_body(c, 0);
}

int
milter_busy(const struct milter_chain *c)
{
	size_t i;

	for (i = 0; c != NULL && i < c->n; i++)
		if (c->m[i].state == M_OPEN &&
		    buf_avail(&c->m[i].out) + buf_avail(&c->m[i].wbuf) >=
		    MILTER_HIWAT)
			return 1;
	return 0;
}

/* to_all - a packet of no reply to every milter in the message */
static void
to_all(struct milter_chain *c, char cmd)
{
	struct buf pkt;
	size_t i;

	buf_init(&pkt);
	pkt_begin(&pkt, cmd);
	pkt_end(&pkt, 0);
	for (i = 0; i < c->n; i++)
		if (c->m[i].state == M_OPEN)
			m_send(&c->m[i], &pkt);
	buf_free(&pkt);
}

void
milter_eom(struct milter_chain *c)
{
	const char *left;
	size_t off, nleft;
	int done;

	if (!c->in_body) {
		if (c->head == NULL)
			c->head = milter_head_new();
		milter_head_feed(c->head, NULL, 0, &done);
		end_header(c);
		left = milter_head_leftover(c->head, &nleft);
		buf_append(&c->chunk, left, nleft);
	}
	send_body(c, 1);
	if (c->msg_verdict != MILTER_CONTINUE) {
		/* a milter decided on the content already */
		to_all(c, SMFIC_ABORT);
		c->in_msg = 0;
		c->step = ST_EOM;
		answer_msg(c);
		return;
	}
	off = step_macros(c, 'E');
	macro(&c->stepmac, "i", c->queue_id);
	step_macros_end(c, off);
	off = step_packet(c, SMFIC_BODYEOB);
	pkt_end(&c->steppkt, off);
	c->in_msg = 0;
	step_start(c, ST_EOM);
}

void
milter_abort(struct milter_chain *c)
{
	if (c == NULL)
		return;
	if (c->in_msg)
		to_all(c, SMFIC_ABORT);
	c->step = ST_NONE;
	c->in_msg = 0;
	c->gen++;
	edits_clear(c);
}

int
milter_edited_head(struct milter_chain *c, struct buf *out, uint64_t *oldlen)
{
	if (c->head == NULL || !milter_head_edited(c->head))
		return 0;
	milter_head_render(c->head, out, oldlen);
	return 1;
}

int
milter_replaced_body(struct milter_chain *c, struct buf *out,
    const char **by, size_t *bodylen)
{
	struct buf t;
	uint64_t oldlen;

	if (c->repl_by == NULL)
		return 0;
	*by = c->repl_by->conf->name;
	/* the last line ends: the dot follows a CRLF */
	if (c->repl.len > 0 && c->repl.data[c->repl.len - 1] != '\n')
		buf_puts(&c->repl, c->repl_cr ? "\n" : "\r\n");
	*bodylen = c->repl.len;
	buf_reset(out);
	if (c->head != NULL)
		milter_head_render(c->head, out, &oldlen);
	buf_puts(out, "\r\n");
	if (out->len <= c->repl.len) {
		/* the body's buffer is the bigger: it takes the header in */
		buf_reserve(&c->repl, out->len);
		memmove(c->repl.data + out->len, c->repl.data, c->repl.len);
		memcpy(c->repl.data, out->data, out->len);
		c->repl.len += out->len;
		t = *out;
		*out = c->repl;
		c->repl = t;
	} else
		buf_append(out, c->repl.data, c->repl.len);
	buf_reset(&c->repl);
	c->repl_by = NULL;
	return 1;
}

size_t
milter_envedits(const struct milter_chain *c,
    const struct milter_envedit **e)
{
	*e = c->env;
	return c->nenv;
}

const char *
milter_quarantine(const struct milter_chain *c)
{
	return c->quarantine;
}

int
milter_may_edit_head(const struct milter_chain *c)
{
	size_t i;

	for (i = 0; i < c->n; i++)
		if (c->m[i].state != M_FAILED && c->m[i].state != M_CLOSED &&
		    !c->m[i].sess_done &&
		    (c->m[i].actions & (SMFIF_ADDHDRS | SMFIF_CHGHDRS)))
			return 1;
	return 0;
}

/* chain_unown - the chain's own reference goes, once */
static void
chain_unown(struct milter_chain *c)
{
	if (c->unowned)
		return;
	c->unowned = 1;
	chain_release(c);
}

/* chain_release - one reference less: the last frees the chain */
static void
chain_release(struct milter_chain *c)
{
	size_t i;

	if (--c->refs > 0)
		return;
	for (i = 0; i < c->n; i++) {
		buf_free(&c->m[i].wbuf);
		buf_free(&c->m[i].out);
		buf_free(&c->m[i].rbuf);
		free(c->m[i].owed);
	}
	free(c->m);
	buf_free(&c->stepmac);
	buf_free(&c->steppkt);
	buf_free(&c->chunk);
	buf_free(&c->sess_reply.text);
	buf_free(&c->msg_reply.text);
	if (c->head != NULL)
		milter_head_free(c->head);
	free(c->queue_id);
	free(c->quarantine);
	edits_clear(c);
	free(c);
}

void
milter_chain_free(struct milter_chain *c)
{
	static const char quit[5] = { 0, 0, 0, 1, SMFIC_QUIT };
	uv_buf_t b;
	size_t i;

	if (c == NULL || c->freeing)
		return;
	c->freeing = 1;
	for (i = 0; i < c->n; i++) {
		struct mconn *m = &c->m[i];

		if (m->state == M_OPEN && !m->writing &&
		    buf_avail(&m->out) == 0) {
			/* a goodbye the milter may log; never waited on */
			b = uv_buf_init((char *)(uintptr_t)quit, sizeof(quit));
			(void)uv_try_write(&m->u.s, &b, 1);
		}
		if (m->state != M_FAILED)
			m->state = M_CLOSED;
		m_shut(m);
	}
	if (c->in_cb == 0)
		chain_unown(c);
}

/* ---------------------------------------------------------------- header */

/* one field: as received (CRLF lines), or made by a milter */
struct hfield {
	char		*raw;
	size_t		 len;
	size_t		 namelen;
	int		 orig;
	int		 deleted;
};

struct milter_head {
	struct hfield	*f;
	size_t		 n, cap;
	struct buf	 line;		/* a line not yet ended */
	uint64_t	 origlen;	/* bytes of the original fields */
	int		 done;
	int		 left;		/* line: the body's first */
	int		 edited;
};

struct milter_head *
milter_head_new(void)
{
	struct milter_head *h = xcalloc(1, sizeof(*h));

	buf_init(&h->line);
	return h;
}

void
milter_head_free(struct milter_head *h)
{
	size_t i;

	for (i = 0; i < h->n; i++)
		free(h->f[i].raw);
	free(h->f);
	buf_free(&h->line);
	free(h);
}

/* field_namelen - the length of a valid field name before ':', or 0 */
static size_t
field_namelen(const char *s, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++) {
		if (s[i] == ':')
			return i;
		if ((unsigned char)s[i] <= 32 || (unsigned char)s[i] >= 127)
			return 0;
	}
	return 0;
}

static struct hfield *
field_new(struct milter_head *h, size_t at)
{
	if (h->n == h->cap) {
		h->cap = h->cap ? h->cap * 2 : 32;
		h->f = xreallocarray(h->f, h->cap, sizeof(*h->f));
	}
	memmove(&h->f[at + 1], &h->f[at], (h->n - at) * sizeof(*h->f));
	h->n++;
	memset(&h->f[at], 0, sizeof(h->f[at]));
	return &h->f[at];
}

/*
 * head_line - one whole line of the header section: a field, a fold of
 * the last one, or the end (the empty line, or a line that is neither:
 * the body begins with it).  1: taken, 0: the header ended (an empty
 * line is taken, another line is not).
 */
static int
head_line(struct milter_head *h, const char *s, size_t len, int *taken)
{
	struct hfield *f;
	size_t nl;

	*taken = 0;
	if (len == 2 && s[0] == '\r') {
		*taken = 1;
		return 0;
	}
	if ((s[0] == ' ' || s[0] == '\t') && h->n > 0) {
		f = &h->f[h->n - 1];
		f->raw = xreallocarray(f->raw, f->len + len + 1, 1);
		memcpy(f->raw + f->len, s, len);
		f->len += len;
		f->raw[f->len] = '\0';
		h->origlen += len;
		*taken = 1;
		return 1;
	}
	if ((nl = field_namelen(s, len)) == 0)
		return 0;
	f = field_new(h, h->n);
	f->raw = xstrndup(s, len);
	f->len = len;
	f->namelen = nl;
	f->orig = 1;
	h->origlen += len;
	*taken = 1;
	return 1;
}

size_t
milter_head_feed(struct milter_head *h, const char *p, size_t n, int *done)
{
	size_t used = 0, k;
	const char *eol;
	int taken, over;

	*done = h->done;
	if (h->done)
		return 0;
	if (p == NULL) {		/* the end of the message */
		h->done = *done = 1;
		h->left = h->line.len > 0;
		return 0;
	}
	while (used < n) {
		eol = memchr(p + used, '\n', n - used);
		k = eol != NULL ? (size_t)(eol - (p + used)) + 1 : n - used;
		buf_append(&h->line, p + used, k);
		used += k;
		over = h->origlen + h->line.len >= MILTER_HDRMAX;
		if (eol == NULL && !over)
			return used;	/* the line goes on */
		if (eol == NULL || over || h->line.len < 2 ||
		    h->line.data[h->line.len - 2] != '\r') {
			/* too long a header, or no CRLF: the body begins
			 * with this line */
			h->done = *done = 1;
			h->left = 1;
			return used;
		}
		if (head_line(h, h->line.data, h->line.len, &taken) == 0) {
			h->done = *done = 1;
			h->left = !taken;
			if (taken)
				buf_reset(&h->line);
			return used;
		}
		buf_reset(&h->line);
	}
	return used;
}

const char *
milter_head_leftover(const struct milter_head *h, size_t *len)
{
	*len = h->left ? h->line.len : 0;
	return h->line.data;
}

size_t
milter_head_count(const struct milter_head *h)
{
	return h->n;
}

void
milter_head_field(const struct milter_head *h, size_t i, int lead,
    struct buf *name, struct buf *out)
{
	const struct hfield *f = &h->f[i];
	size_t k = f->namelen + 1;

	buf_append(name, f->raw, f->namelen);
	buf_append(name, "", 1);
	if (!lead)
		while (k < f->len && (f->raw[k] == ' ' || f->raw[k] == '\t'))
			k++;
	for (; k < f->len; k++) {
		if (f->raw[k] == '\r')
			continue;
		if (f->raw[k] == '\n' && k + 1 == f->len)
			break;
		if (f->raw[k] != '\0')
			buf_append(out, &f->raw[k], 1);
	}
}

/* field_make - a field from a milter's name and value, as CRLF lines:
 * its LF folds made CRLF, a fold that does not begin with white space
 * given a tab (nothing a milter says starts a new field) */
static int
field_make(struct milter_head *h, size_t at, const char *name,
    const char *value)
{
	struct hfield *f;
	struct buf b;
	size_t nl = strlen(name);
	const char *v;

	if (nl == 0 || field_namelen(name, nl) != 0 || strchr(name, ':') ||
	    nl > 997)
		return -1;
	for (v = name; *v; v++)
		if ((unsigned char)*v <= 32 || (unsigned char)*v >= 127)
			return -1;
	buf_init(&b);
	buf_append(&b, name, nl);
	buf_puts(&b, value[0] == ' ' || value[0] == '\t' ? ":" : ": ");
	for (v = value; *v; v++) {
		if (*v == '\r')
			continue;
		if (*v == '\n') {
			buf_puts(&b, "\r\n");
			if (v[1] != ' ' && v[1] != '\t' && v[1] != '\0')
				buf_puts(&b, "\t");
			continue;
		}
		buf_append(&b, v, 1);
	}
	buf_puts(&b, "\r\n");
	f = field_new(h, at);
	f->raw = xstrndup(b.data, b.len);
	f->len = b.len;
	f->namelen = nl;
	buf_free(&b);
	h->edited = 1;
	return 0;
}

int
milter_head_add(struct milter_head *h, const char *name, const char *value)
{
	return field_make(h, h->n, name, value);
}

/* milter_head_insert - before the idx-th field there is (0: first) */
int
milter_head_insert(struct milter_head *h, uint32_t idx, const char *name,
    const char *value)
{
	size_t i, seen = 0;

	for (i = 0; i < h->n; i++) {
		if (h->f[i].deleted)
			continue;
		if (seen++ == idx)
			break;
	}
	return field_make(h, i, name, value);
}

/* milter_head_change - the idx-th (from 1) field named name: a new value,
 * or gone when the value is empty; a field not there is added */
int
milter_head_change(struct milter_head *h, uint32_t idx, const char *name,
    const char *value)
{
	size_t i, nl = strlen(name);
	uint32_t seen = 0;

	if (idx == 0)
		idx = 1;
	for (i = 0; i < h->n; i++) {
		struct hfield *f = &h->f[i];

		if (f->deleted || f->namelen != nl ||
		    strncasecmp(f->raw, name, nl) != 0 || ++seen != idx)
			continue;
		f->deleted = 1;
		h->edited = 1;
		if (value[0] == '\0')
			return 0;
		/* the field keeps its name as the message spelled it */
		{
			char *orig = xstrndup(f->raw, nl);
			int rc = field_make(h, i + 1, orig, value);

			free(orig);
			return rc;
		}
	}
	if (value[0] == '\0')
		return 0;
	return field_make(h, h->n, name, value);
}

void
milter_head_render(const struct milter_head *h, struct buf *out,
    uint64_t *oldlen)
{
	size_t i;

	for (i = 0; i < h->n; i++)
		if (!h->f[i].deleted)
			buf_append(out, h->f[i].raw, h->f[i].len);
	*oldlen = h->origlen;
}

int
milter_head_edited(const struct milter_head *h)
{
	return h->edited;
}
