/*
 * sink_relay.c - the live relay sink: outgoing sessions where policy
 * honours the server the client dialled.  It owns the upstream leg
 * (common/smtpc.c) of one session: the client sees the upstream's own greeting
 * and replies, in order, with the EHLO capabilities cut down to what both
 * legs support.  AUTH passes through.  Content goes on as read (still
 * dot-stuffed) in runs that point into the session's reader, and with the
 * dot in one write; a refused message never ends upstream: the leg is
 * dropped instead.  An explicit rule's reject, tempfail or discard of a
 * recipient is answered here; a transaction whose every recipient was
 * discarded is taken and dropped here (the upstream gets a silent RSET).
 *
 * With milters (milter.c, "milters outgoing"), each command is theirs to
 * answer before it goes upstream (mstep: the step the session waits on):
 * a RCPT they refuse never goes up.  The content goes up as it comes
 * (or is held, below) and to the milters un-stuffed; the final dot is
 * held back until every milter has answered.  Refused, tempfailed or
 * discarded there, the client gets that answer and the upstream never
 * gets the dot: the leg is dropped (DATA cannot be taken back with RSET), so nothing is
 * delivered, and the session's next command gets 421.  When a milter was
 * granted header edits the whole message is held (held) until their end
 * and goes up with the edits applied (held_dot): nothing goes upstream
 * that differs from what they approved.  A quarantine is refused (550),
 * there being no queue to hold the message in.
 */
#include <sys/socket.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "../common/addr.h"
#include "../common/buf.h"
#include "../common/log.h"
#include "../common/smtp.h"
#include "../common/xmalloc.h"
#include "../policy/policy.h"
#include "proxy.h"
#include "../common/smtpc.h"
#include "milter.h"
#include "sink.h"

#define RSINK_BODY_CHUNK	(64 * 1024)
/* a message held back for the milters' header edits, without a size
 * limit: bigger is refused (552), never sent unedited */
#define RSINK_HOLD_MAX		(64ULL * 1024 * 1024)

enum rsink_state {
	R_CONNECT = 0,	/* waiting for the upstream greeting */
	R_OPEN,		/* the leg carries the session */
	R_DISCARD,	/* every recipient discarded: the text is dropped */
	R_LOST,		/* the leg is gone (a refused message, a failure) */
	R_CLOSED	/* closed by the session: no callback runs */
};

static const char *rsink_state_names[] = {
	"connect", "open", "discard", "lost", "closed"
};

/* the milter step the session waits on (the chain answers it) */
enum rsink_mstep { RM_NONE = 0, RM_CONNECT, RM_HELO, RM_MAIL, RM_RCPT,
	RM_DATA, RM_EOM };

struct sink {
	enum rsink_state	 state;
	struct sink_env		*env;
	struct smtpc		*relay;		/* NULL from R_LOST on */
	unsigned		 nfwd;		/* RCPTs passed upstream */
	unsigned		 ndiscard;	/* RCPTs a discard rule took */
	uint64_t		 size;		/* SIZE offered: both legs' */
	uv_buf_t		 run[SMTPC_MAXBUFS];	/* content runs still in
					   the session's reader, to send */
	unsigned		 nrun;
	size_t			 runlen;
	struct milter_chain	*milters;	/* NULL: none */
	enum rsink_mstep	 mstep;
	struct buf		 mline;		/* the command it holds back */
	int			 mehlo;
	char			*mrcpt;		/* RM_RCPT: the address */
	struct smtp_reply	 greeting;	/* the upstream's, while the
						   milters hear of the client */
	int			 have_greeting;
	int			 bol;		/* content: at a line's start */
	int			 mdiscard;	/* a milter discards it */
	struct buf		 unstuffed;
	int			 holdmsg;	/* the content is held (held)
						   until the milters' end */
	int			 heldover;	/* more than holdmax came */
	uint64_t		 holdmax;
	struct buf		 held;		/* as the client sent it */
	uint64_t		 dot_ns;	/* the client's dot went up */
};

static void	rsink_greeting_cb(void *, const struct smtp_reply *);
static void	rsink_reply_cb(void *, const struct smtp_reply *);
static void	rsink_fail_cb(void *, const struct smtpc_error *);
static void	rsink_drained_cb(void *);

static const struct smtpc_cb rsink_relay_cb = {
	.greeting = rsink_greeting_cb,
	.reply = rsink_reply_cb,
	.fail = rsink_fail_cb,
	.drained = rsink_drained_cb
};

/* enter_state - the one place the relay sink changes state; leaving the
 * leg (R_LOST, R_CLOSED) closes it */
static void
enter_state(struct sink *r, enum rsink_state st)
{
	if (r->state == st)
		return;
	log_debug("session=%llu relay %s -> %s",
	    (unsigned long long)r->env->conn.id, rsink_state_names[r->state],
	    rsink_state_names[st]);
	r->state = st;
	if (st == R_LOST || st == R_CLOSED) {
		smtpc_close(r->relay);
		r->relay = NULL;
		r->nrun = 0;
		r->runlen = 0;
	}
}

/* lost_line - the 421 of a leg that is gone */
static void
lost_line(struct sink *r, char *line, size_t len)
{
	snprintf(line, len, "421 4.4.2 %s Error: connection to upstream "
	    "server lost", r->env->host);
}

/* send_failed - a write to the leg failed at once: the session goes */
static void
send_failed(struct sink *r)
{
	char line[512];

	lost_line(r, line, sizeof(line));
	smtpd_sink_421(r->env, "upstream-lost", line);
}

/* ---------------------------------------------------------------- leg */

/* give_greeting - the upstream's greeting, as the client's */
static void
give_greeting(struct sink *r, const struct smtp_reply *rep)
{
	struct sink_env *e = r->env;

	if (rep->code != 220) {
		log_info("session=%llu client=%s orig_dst=%s dir=%s "
		    "disposition=upstream-refused greeting=%d",
		    (unsigned long long)e->conn.id, e->cstr, e->dstr,
		    policy_dir_name(e->conn.dir), rep->code);
		smtpd_sink_greeting(e, buf_head(&rep->text),
		    buf_avail(&rep->text), "upstream-refused");
		return;
	}
	enter_state(r, R_OPEN);
	smtpd_sink_greeting(e, buf_head(&rep->text), buf_avail(&rep->text),
	    NULL);
}

static void
rsink_greeting_cb(void *arg, const struct smtp_reply *rep)
{
	struct sink *r = arg;
	struct sink_env *e = r->env;
	char up[64];

	log_debug("session=%llu client=%s orig_dst=%s dir=%s upstream=%s "
	    "greeting=%d", (unsigned long long)e->conn.id, e->cstr, e->dstr,
	    policy_dir_name(e->conn.dir),
	    addr_fmt((struct sockaddr *)&e->conn.orig_dst, up, sizeof(up)),
	    rep->code);
	if (r->mstep == RM_CONNECT) {
		/* the milters are still hearing of the client */
		r->greeting.code = rep->code;
		r->greeting.nlines = rep->nlines;
		buf_reset(&r->greeting.text);
		buf_append(&r->greeting.text, buf_head(&rep->text),
		    buf_avail(&rep->text));
		r->have_greeting = 1;
		return;
	}
	give_greeting(r, rep);
}

static void
rsink_reply_cb(void *arg, const struct smtp_reply *rep)
{
	struct sink *r = arg;

	if (r->dot_ns != 0)	/* the first reply after the dot is its */
		proxy_relay_added(r->dot_ns);
	r->dot_ns = 0;
	smtpd_sink_raw(r->env, rep);
}

/*
 * rsink_fail_cb - the leg is dead: 421 to the client.  A TLS failure
 * (STARTTLS missing or refused, a handshake or a certificate that fails
 * "client-server tls require|verify") is 4.7.5 with the reason, before
 * anything but the greeting and EHLO went up.
 */
static void
rsink_fail_cb(void *arg, const struct smtpc_error *err)
{
	const char *why = err->why;
	const struct smtp_reply *rep = err->rep;
	struct sink *r = arg;
	struct sink_env *e = r->env;
	int connecting = r->state == R_CONNECT;
	const char *leg, *disposition;
	char up[64], line[512];

	/* the leg's failure is logged; the session ends by a 421 the
	 * upstream sent, if it sent one, else by that failure */
	leg = err->err == SMTPC_E_TLS ? "upstream-tls" : connecting ?
	    "upstream-unreachable" : "upstream-lost";
	disposition = rep != NULL && rep->code == 421 ? "upstream-421" : leg;
	log_info("session=%llu client=%s orig_dst=%s dir=%s upstream=%s "
	    "disposition=%s%s%s error=\"%s\"",
	    (unsigned long long)e->conn.id, e->cstr, e->dstr,
	    policy_dir_name(e->conn.dir),
	    addr_fmt((struct sockaddr *)&e->conn.orig_dst, up, sizeof(up)),
	    leg, err->err == SMTPC_E_TLS ? " level=" : "",
	    err->err == SMTPC_E_TLS ? policy_cstls_name(e->pol->cs_tls) : "",
	    log_vis(why));
	enter_state(r, R_LOST);
	if (rep != NULL && rep->code == 421)
		snprintf(line, sizeof(line), "%.*s",
		    (int)strcspn(buf_head(&rep->text), "\r\n"),
		    buf_head(&rep->text));
	else if (err->err == SMTPC_E_TLS)
		snprintf(line, sizeof(line), "421 4.7.5 %s Error: TLS with "
		    "upstream server failed (%s)", e->host, log_vis(why));
	else if (connecting)
		snprintf(line, sizeof(line), "421 4.4.1 %s Error: upstream "
		    "server unreachable (%s)", e->host, why);
	else
		lost_line(r, line, sizeof(line));
	smtpd_sink_lost(e, disposition, line);
}

static void
rsink_drained_cb(void *arg)
{
	struct sink *r = arg;

	smtpd_sink_wake(r->env);
}

/* ---------------------------------------------------------------- milters */

static void	rsink_milter(void *, const struct milter_answer *);

static void
rsink_mwake(void *arg)
{
	struct sink *r = arg;

	smtpd_sink_wake(r->env);
}

/* milters_open - the session's milters hear of the client while the
 * upstream leg connects; the greeting waits for both */
static void
milters_open(struct sink *r)
{
	/* no body or envelope change can be applied to a message relayed
	 * live, none is offered; header edits are (the message is then
	 * held back until the milters' end: held_dot) */
	r->milters = smtpd_sink_milters(r->env, 0, rsink_milter, rsink_mwake,
	    r);
	if (r->milters == NULL)
		return;
	r->mstep = RM_CONNECT;
	milter_connect(r->milters);
}

/* hold - the command waits for the milters (its line kept) */
static void
hold(struct sink *r, enum rsink_mstep st, const struct smtp_line *l)
{
	buf_reset(&r->mline);
	if (l != NULL)
		buf_append(&r->mline, l->data, l->len);
	r->mstep = st;
	smtpd_sink_wait(r->env);
}

/* milter_unstuffed - content to the milters as it will be delivered:
 * a line's leading dot of the transparency gone (RFC 5321 4.5.2) */
static void
milter_unstuffed(struct sink *r, const char *p, size_t n)
{
	const char *nl;
	size_t k;

	buf_reset(&r->unstuffed);
	while (n > 0) {
		if (r->bol && *p == '.') {
			p++;
			n--;
		}
		/* the rest of the line, or of the run, in one piece */
		nl = memchr(p, '\n', n);
		k = nl != NULL ? (size_t)(nl - p) + 1 : n;
		buf_append(&r->unstuffed, p, k);
		r->bol = nl != NULL;
		p += k;
		n -= k;
	}
	milter_content(r->milters, r->unstuffed.data, r->unstuffed.len);
}

/* milter_refused - the milters' reply (or the default of its class) */
static void
milter_refused(struct sink *r, const struct milter_answer *a)
{
	if (a->why != NULL)
		smtpd_sink_reason(r->env, a->why);
	if (a->reply != NULL)
		smtpd_sink_raw(r->env, a->reply);
	else
		smtpd_sink_reply(r->env, a->verdict == MILTER_TEMPFAIL ?
		    "451 4.7.1 Service unavailable - try again later" :
		    "550 5.7.1 Command rejected");
}

/* held_drop - the held message goes (a new one, a reset, the end) */
static void
held_drop(struct sink *r)
{
	buf_free(&r->held);
	r->holdmsg = 0;
	r->heldover = 0;
	r->holdmax = r->env->pol->limits.size > 0 ?
	    r->env->pol->limits.size : RSINK_HOLD_MAX;
}

/*
 * stuffed_at - where, in the content as the client sent it (dot-stuffed),
 * the first n bytes of the un-stuffed content end: the header section the
 * milters' edits replace is counted un-stuffed
 */
static size_t
stuffed_at(const struct buf *b, uint64_t n)
{
	size_t i;
	uint64_t got = 0;
	int bol = 1;

	for (i = 0; i < b->len && got < n; i++) {
		if (bol && b->data[i] == '.') {
			bol = 0;
			continue;
		}
		bol = b->data[i] == '\n';
		got++;
	}
	return i;
}

/*
 * held_dot - the held message goes up with the milters' header edits
 * applied (the new header section dot-stuffed, the rest as the client
 * sent it) and the dot, in one write; too big to have been held: 552,
 * and the leg goes without the dot
 */
static void
held_dot(struct sink *r)
{
	struct sink_env *e = r->env;
	struct buf head, stuffed;
	uint64_t oldlen = 0;
	uv_buf_t b[2];
	unsigned nb = 0;
	size_t off = 0;
	char line[512];

	if (r->heldover) {
		log_info("session=%llu milter hold: message over %llu bytes "
		    "refused on the live relay", (unsigned long long)e->conn.id,
		    (unsigned long long)r->holdmax);
		enter_state(r, R_LOST);
		smtpd_sink_reason(e, "too big to hold for the milters");
		smtpd_sink_reply(e, "552 5.3.4 Message too big to be "
		    "inspected here");
		held_drop(r);
		return;
	}
	buf_init(&head);
	buf_init(&stuffed);
	if (milter_edited_head(r->milters, &head, &oldlen)) {
		(void)smtp_dot_stuff_lines(&stuffed, head.data, head.len, 1);
		off = stuffed_at(&r->held, oldlen);
		b[nb++] = uv_buf_init(stuffed.data, (unsigned)stuffed.len);
		log_info("session=%llu milter header edits applied on the live "
		    "relay (held message, %zu bytes)",
		    (unsigned long long)e->conn.id, r->held.len);
	}
	if (r->held.len > off)
		b[nb++] = uv_buf_init(r->held.data + off,
		    (unsigned)(r->held.len - off));
	if (r->relay == NULL || smtpc_dot(r->relay, b, nb) == -1) {
		lost_line(r, line, sizeof(line));
		smtpd_sink_421(e, "upstream-lost", line);
	}
	buf_free(&head);
	buf_free(&stuffed);
	held_drop(r);
}

/* milter_dot - the milters' answer to the message: the dot goes up, or
 * the leg goes without it */
static void
milter_dot(struct sink *r, const struct milter_answer *a)
{
	struct sink_env *e = r->env;
	struct buf head;
	uint64_t oldlen;
	char line[512];

	if (a->verdict == MILTER_CONTINUE &&
	    milter_quarantine(r->milters) != NULL) {
		log_info("session=%llu milter quarantine refused on the live "
		    "relay reason=\"%s\"", (unsigned long long)e->conn.id,
		    log_vis(milter_quarantine(r->milters)));
		enter_state(r, R_LOST);
		smtpd_sink_reason(e, "quarantined by a milter");
		smtpd_sink_reply(e, "550 5.7.1 Message quarantined: not "
		    "accepted here");
		return;
	}
	if (a->verdict == MILTER_CONTINUE && r->holdmsg) {
		held_dot(r);
		return;
	}
	if (a->verdict == MILTER_CONTINUE) {
		/* no milter was granted edits: one that edits anyway is out
		 * of protocol, and its edits are not applied */
		buf_init(&head);
		if (milter_edited_head(r->milters, &head, &oldlen))
			log_info("session=%llu milter header edits not applied: "
			    "the live relay sent the header already",
			    (unsigned long long)e->conn.id);
		buf_free(&head);
		if (r->relay == NULL || smtpc_dot(r->relay, r->run, 0) == -1) {
			lost_line(r, line, sizeof(line));
			smtpd_sink_421(e, "upstream-lost", line);
		}
		return;
	}
	/* the upstream's DATA never ends: nothing is delivered */
	enter_state(r, R_LOST);
	held_drop(r);
	if (a->verdict == MILTER_DISCARD) {
		log_info("session=%llu milter=%s discarded",
		    (unsigned long long)e->conn.id, a->milter ? a->milter : "-");
		smtpd_sink_reason(e, a->why);
		smtpd_sink_reply(e, "250 2.0.0 Ok: discarded");
		return;
	}
	milter_refused(r, a);
}

/* rsink_milter - the chain answers the step the session waits on: what
 * it lets through goes upstream now */
static void
rsink_milter(void *arg, const struct milter_answer *a)
{
	struct sink *r = arg;
	struct sink_env *e = r->env;
	enum rsink_mstep st = r->mstep;
	int ok = a->verdict == MILTER_CONTINUE;

	r->mstep = RM_NONE;
	switch (st) {
	case RM_NONE:
		return;
	case RM_CONNECT:
		if (!ok)
			log_info("session=%llu milter=%s refuses the "
			    "connection: %s", (unsigned long long)e->conn.id,
			    a->milter ? a->milter : "-", a->why ? a->why : "");
		if (r->have_greeting)
			give_greeting(r, &r->greeting);
		return;
	case RM_HELO:
		if (!ok)
			milter_refused(r, a);
		else if (smtpc_helo(r->relay, r->mehlo, e->helo, r->mline.data,
		    r->mline.len) == -1)
			send_failed(r);
		return;
	case RM_MAIL:
		r->mdiscard |= a->verdict == MILTER_DISCARD;
		if (!ok && a->verdict != MILTER_DISCARD)
			milter_refused(r, a);
		else
			smtpc_send(r->relay, r->mline.data, r->mline.len,
			    SMTPC_CMD);
		return;
	case RM_RCPT:
		r->mdiscard |= a->verdict == MILTER_DISCARD;
		if (!ok && a->verdict != MILTER_DISCARD) {
			milter_refused(r, a);
			return;
		}
		smtpd_sink_log_rcpt(e, r->mrcpt);
		r->nfwd++;
		smtpc_send(r->relay, r->mline.data, r->mline.len, SMTPC_CMD);
		return;
	case RM_DATA:
		r->mdiscard |= a->verdict == MILTER_DISCARD;
		if (!ok && a->verdict != MILTER_DISCARD)
			milter_refused(r, a);
		else
			smtpc_send(r->relay, "DATA", 4, SMTPC_CMD);
		return;
	case RM_EOM:
		if (r->mdiscard && ok) {
			struct milter_answer d = *a;

			d.verdict = MILTER_DISCARD;
			d.why = "discarded by a milter";
			milter_dot(r, &d);
			return;
		}
		milter_dot(r, a);
		return;
	}
}

/* ---------------------------------------------------------------- ops */

static struct sink *
rsink_open(struct sink_env *e)
{
	struct sink *r = xcalloc(1, sizeof(*r));

	r->env = e;
	r->state = R_CONNECT;
	buf_init(&r->mline);
	buf_init(&r->greeting.text);
	buf_init(&r->unstuffed);
	buf_init(&r->held);
	return r;
}

/*
 * upstream_verify - "client-server tls verify": the verifying context
 * the MTA's verify level uses (common/tls.c, a reference for the
 * caller), and the names to check: the upstream's network's "match", the
 * global one, else the address dialled (formatted into dst).  NULL after
 * logging why: smtpc then fails the leg as TLS required without a
 * context, never unverified.
 */
static SSL_CTX *
upstream_verify(struct sink_env *e, struct smtpc_opts *o, char *dst,
    size_t dstlen)
{
	const char *ca = policy_cs_ca_file(e->pol);
	SSL_CTX *ctx;
	char err[256];

	o->match = policy_cs_match(e->pol,
	    (const struct sockaddr *)&e->conn.orig_dst);
	if (o->match == NULL) {
		addr_fmt_ip((const struct sockaddr *)&e->conn.orig_dst, dst,
		    dstlen);
		o->expect_ip = dst;
	} else {
		/* SNI: the first name, for a server with several certs */
		snprintf(dst, dstlen, "%.*s", (int)strcspn(o->match, " "),
		    o->match);
		o->sni = dst;
	}
	if ((ctx = tls_ctx_client_verify(ca, err, sizeof(err))) == NULL)
		log_warnx("session=%llu tls: verifying context: ca_file=%s %s",
		    (unsigned long long)e->conn.id, ca != NULL ? ca : "system",
		    err);
	return ctx;
}

/* rsink_greet - connect upstream; the client is greeted when it is */
static void
rsink_greet(struct sink *r)
{
	struct sink_env *e = r->env;
	const struct policy_limits *lim = &e->pol->limits;
	struct smtpc_opts o;
	char dst[ADDR_STRLEN];

	memset(&o, 0, sizeof(o));
	o.id = e->conn.id;
	o.dst = e->conn.orig_dst;
	o.src.ss_family = AF_UNSPEC;
	/* hide the box: from the client's address (IP_TRANSPARENT) */
	if (policy_hide_box_outgoing(e->pol, e->conn.port) &&
	    e->conn.client.ss_family == e->conn.orig_dst.ss_family)
		o.src = e->conn.client;
	switch (e->pol->cs_tls) {
	case POLICY_CSTLS_NONE:
		o.tls = SMTPC_TLS_NONE;
		break;
	case POLICY_CSTLS_REQUIRE:
	case POLICY_CSTLS_VERIFY:
		o.tls = SMTPC_TLS_REQUIRE;
		break;
	default:
		o.tls = SMTPC_TLS_OPPORTUNISTIC;
		break;
	}
	if (e->pol->cs_tls == POLICY_CSTLS_VERIFY)
		o.ctx = upstream_verify(e, &o, dst, sizeof(dst));
	else if (o.tls != SMTPC_TLS_NONE)
		o.ctx = tls_ctx_client_shared();
	o.corks = proxy_worker_corks(e->conn.worker);
	o.tls_counts = proxy_worker_tls(e->conn.worker, PROXY_TLS_SERVER);
	log_debug("session=%llu upstream tls=%s hide-box=%s",
	    (unsigned long long)e->conn.id, policy_cstls_name(e->pol->cs_tls),
	    o.src.ss_family != AF_UNSPEC ? "yes" : "no");
	if (o.ctx == NULL && o.tls == SMTPC_TLS_REQUIRE)
		log_warnx("session=%llu tls: required upstream but no client "
		    "context", (unsigned long long)e->conn.id);
	o.t_connect = lim->t_connect;
	o.t_cmd = lim->t_cmd;
	o.t_dot = lim->t_dot;
	r->relay = smtpc_open(e->loop, &o, &rsink_relay_cb, r);
	if (e->pol->cs_tls == POLICY_CSTLS_VERIFY)
		SSL_CTX_free(o.ctx);		/* smtpc holds its own */
	milters_open(r);
}

static void
rsink_helo(struct sink *r, int ehlo, const struct smtp_line *l)
{
	struct sink_env *e = r->env;
	char v[64], *c;

	if (r->milters != NULL) {
		snprintf(v, sizeof(v), "%s", e->tls ? tls_conn_info(e->tls) :
		    "");
		if ((c = strchr(v, '/')) != NULL)
			*c++ = '\0';
		r->mehlo = ehlo;
		hold(r, RM_HELO, l);
		milter_helo(r->milters, e->helo, e->tls ? v : NULL,
		    e->tls ? c : NULL);
		return;
	}
	if (smtpc_helo(r->relay, ehlo, r->env->helo, l->data, l->len) == -1)
		send_failed(r);
}

/* rsink_ehlo - the upstream's EHLO reply, cut to what both legs do: the
 * lines of the extensions the session core handles pass on as they came,
 * SIZE becomes the smaller of both limits, the rest is dropped */
static void
rsink_ehlo(struct sink *r, const struct smtp_reply *rep, struct buf *out,
    struct sink_caps *c)
{
	struct smtp_ehlo up;
	char kw[32], tmp[64];
	const char *line;
	size_t len, plen;
	unsigned i;
	int auth;

	smtp_ehlo_parse(rep, &up);
	memset(c, 0, sizeof(*c));
	c->pipelining = up.pipelining;
	c->enhanced = up.enhanced;
	c->eightbit = up.eightbit;
	c->dsn = up.dsn;
	c->smtputf8 = up.smtputf8;
	auth = up.auth && (r->env->tls != NULL ||
	    smtpc_auth_in_clear(r->relay));
	r->size = r->env->pol->limits.size;
	if (up.maxsize != 0 && up.maxsize < r->size)
		r->size = up.maxsize;
	line = smtp_reply_line(rep, 0, &len);
	buf_printf(out, "250-%.*s\r\n", (int)len, line);
	for (i = 1; i < rep->nlines; i++) {
		line = smtp_reply_line(rep, i, &len);
		(void)smtp_ehlo_keyword(line, len, kw, sizeof(kw), &plen);
		if ((strcmp(kw, "PIPELINING") == 0 && c->pipelining) ||
		    (strcmp(kw, "ENHANCEDSTATUSCODES") == 0 && c->enhanced) ||
		    (strcmp(kw, "8BITMIME") == 0 && c->eightbit) ||
		    (strcmp(kw, "DSN") == 0 && c->dsn) ||
		    (strcmp(kw, "SMTPUTF8") == 0 && c->smtputf8) ||
		    (strcmp(kw, "AUTH") == 0 && auth && len > 5 &&
		    line[4] == ' ')) {
			buf_printf(out, "250-%.*s\r\n", (int)len, line);
			if (strcmp(kw, "AUTH") == 0)
				c->auth = 1;
		}
		/* SIZE below, merged; CHUNKING, BDAT, STARTTLS, unknown
		 * ones dropped; so is the 'AUTH=' line of old servers: the
		 * client is offered AUTH in RFC 4954's form only, and only
		 * when the upstream offers it so */
	}
	snprintf(tmp, sizeof(tmp), "SIZE %llu", (unsigned long long)r->size);
	buf_printf(out, "250-%s\r\n", tmp);
}

static void
rsink_mail(struct sink *r, const struct smtp_line *l)
{
	struct sink_env *e = r->env;
	char *from;
	const char *argv[1];

	if (r->milters != NULL && e->mail.from != NULL) {
		from = xmalloc(strlen(e->mail.from) + 3);
		sprintf(from, "<%s>", e->mail.from);
		argv[0] = from;
		hold(r, RM_MAIL, l);
		milter_mail(r->milters, argv, 1, NULL);
		free(from);
		return;
	}
	smtpc_send(r->relay, l->data, l->len, SMTPC_CMD);
}

/*
 * rsink_rcpt - an explicit rule's reject, tempfail or discard is
 * answered here; the rest goes upstream, which decides
 */
static void
rsink_rcpt(struct sink *r, const struct smtp_path *path,
    const struct smtp_line *l)
{
	struct sink_env *e = r->env;
	enum policy_verdict v = POLICY_RELAY;
	const char *msg = NULL;

	if (e->mail.from != NULL)	/* without MAIL the upstream says 503 */
		v = policy_check_rcpt_live(e->pol,
		    (struct sockaddr *)&e->conn.client, e->mail.from,
		    path->addr, e->authed, &msg);
	if (v == POLICY_RELAY && r->milters != NULL && e->mail.from != NULL) {
		char *to = xmalloc(strlen(path->addr) + 3);
		const char *argv[1] = { to };

		sprintf(to, "<%s>", path->addr);
		free(r->mrcpt);
		r->mrcpt = xstrdup(path->addr);
		hold(r, RM_RCPT, l);
		milter_rcpt(r->milters, argv, 1);
		free(to);
		return;
	}
	if (v == POLICY_RELAY) {
		smtpd_sink_log_rcpt(e, path->addr);
		r->nfwd++;
		smtpc_send(r->relay, l->data, l->len, SMTPC_CMD);
		return;
	}
	r->ndiscard += v == POLICY_DISCARD;
	smtpd_sink_rule_reply(e, v, msg);
	log_info("session=%llu client=%s orig_dst=%s dir=%s rcpt=<%s> "
	    "verdict=%s", (unsigned long long)e->conn.id, e->cstr, e->dstr,
	    policy_dir_name(e->conn.dir), log_word(path->addr),
	    policy_verdict_name(v));
}

/*
 * rsink_data - DATA upstream; or, every recipient discarded, the
 * upstream forgets the MAIL (an RSET whose reply the client does not
 * see) and the text is taken here and dropped (R_DISCARD)
 */
static void
rsink_data(struct sink *r)
{
	r->nrun = 0;
	r->runlen = 0;
	if (r->nfwd == 0 && r->ndiscard > 0) {
		smtpd_sink_silent(r->env);
		if (smtpc_send(r->relay, "RSET", 4, SMTPC_CMD) == -1) {
			send_failed(r);
			return;
		}
		enter_state(r, R_DISCARD);
		smtpd_sink_reply(r->env, "354 End data with <CR><LF>.<CR><LF>");
		return;
	}
	if (r->milters != NULL) {
		r->bol = 1;
		held_drop(r);
		r->holdmsg = milter_may_edit_head(r->milters);
		hold(r, RM_DATA, NULL);
		milter_data(r->milters, NULL);
		return;
	}
	smtpc_send(r->relay, "DATA", 4, SMTPC_CMD);
}

/*
 * rsink_flush - the content runs, in one write.  They point into the
 * session's reader, so this happens before the next read feeds it (the
 * core flushes after each read) or with the dot (relay_dot).
 */
static const char *
rsink_flush(struct sink *r, const char **why)
{
	if (r->nrun > 0 && r->relay != NULL && r->state == R_OPEN)
		smtpc_writev(r->relay, r->run, r->nrun);
	r->nrun = 0;
	r->runlen = 0;
	return NULL;
}

/* rsink_content - sent from where it lies in the reader, no copy */
static const char *
rsink_content(struct sink *r, const char *p, size_t n, const char **why)
{
	if (r->state != R_OPEN)
		return NULL;
	if (r->milters != NULL)
		milter_unstuffed(r, p, n);
	if (r->holdmsg) {
		if (r->heldover || r->held.len + n > r->holdmax) {
			r->heldover = 1;
			buf_free(&r->held);
		} else
			buf_append(&r->held, p, n);
		return NULL;
	}
	r->run[r->nrun++] = uv_buf_init((char *)(uintptr_t)p,
	    (unsigned int)n);
	r->runlen += n;
	if (r->nrun == SMTPC_MAXBUFS || r->runlen >= RSINK_BODY_CHUNK)
		return rsink_flush(r, why);
	return NULL;
}

static void
rsink_end(struct sink *r)
{
	char line[512];

	if (r->state == R_DISCARD) {
		enter_state(r, R_OPEN);
		smtpd_sink_reply(r->env, "250 2.0.0 Ok: discarded");
		return;
	}
	r->dot_ns = uv_hrtime();
	if (r->milters != NULL && r->relay != NULL) {
		/* the content goes up now, the dot when the milters say */
		if (r->nrun > 0)
			smtpc_writev(r->relay, r->run, r->nrun);
		r->nrun = 0;
		r->runlen = 0;
		hold(r, RM_EOM, NULL);
		milter_eom(r->milters);
		return;
	}
	if (r->relay == NULL || smtpc_dot(r->relay, r->run, r->nrun) == -1) {
		lost_line(r, line, sizeof(line));
		smtpd_sink_421(r->env, "upstream-lost", line);
	}
	r->nrun = 0;
	r->runlen = 0;
}

/* rsink_abort - a refused message: the upstream DATA must never end,
 * so the leg goes; a discarded one is dropped here anyway */
static int
rsink_abort(struct sink *r)
{
	milter_abort(r->milters);
	r->mstep = RM_NONE;
	held_drop(r);
	if (r->state == R_DISCARD)
		return 0;
	enter_state(r, R_LOST);
	return 1;
}

static void
rsink_reset(struct sink *r)
{
	r->nfwd = 0;
	r->ndiscard = 0;
	r->mdiscard = 0;
	if (r->milters != NULL) {
		milter_abort(r->milters);
		r->mstep = RM_NONE;
		held_drop(r);
	}
}

/* rsink_verb - a command passed upstream as it is */
static void
rsink_verb(struct sink *r, const struct smtp_line *l)
{
	smtpc_send(r->relay, l->data, l->len, SMTPC_CMD);
}

/* rsink_auth - AUTH, or the client's answer to a 334, verbatim */
static void
rsink_auth(struct sink *r, const struct smtp_line *l)
{
	if (l == NULL)
		smtpc_send(r->relay, "*", 1, SMTPC_CMD);	/* cancel */
	else
		smtpc_send(r->relay, l->data, l->len, SMTPC_CMD);
}

static int
rsink_auth_tls(struct sink *r)
{
	return r->relay != NULL && !smtpc_auth_in_clear(r->relay);
}

static const char *
rsink_lost(struct sink *r, char *line, size_t len)
{
	if (r->state != R_LOST)
		return NULL;
	lost_line(r, line, len);
	return "upstream-lost";
}

static int
rsink_busy(struct sink *r)
{
	return (r->relay != NULL && smtpc_busy(r->relay)) ||
	    (r->milters != NULL && milter_busy(r->milters));
}

/* rsink_quit - the session says goodbye: the leg goes now */
static void
rsink_quit(struct sink *r)
{
	if (r->state != R_CLOSED)
		enter_state(r, R_LOST);
}

static void
rsink_close(struct sink *r)
{
	enter_state(r, R_CLOSED);
	milter_chain_free(r->milters);
	buf_free(&r->mline);
	buf_free(&r->greeting.text);
	buf_free(&r->unstuffed);
	buf_free(&r->held);
	free(r->mrcpt);
	free(r);
}

const struct sink_ops sink_relay_ops = {
	.name = "relay",
	.accepted = "relayed",
	.flags = SINK_F_HELO_FIRST | SINK_F_SEQUENCE | SINK_F_STUFFED,
	.open = rsink_open,
	.greet = rsink_greet,
	.helo = rsink_helo,
	.ehlo = rsink_ehlo,
	.mail = rsink_mail,
	.rcpt = rsink_rcpt,
	.data = rsink_data,
	.content = rsink_content,
	.flush = rsink_flush,
	.end = rsink_end,
	.abort = rsink_abort,
	.reset = rsink_reset,
	.verb = rsink_verb,
	.auth = rsink_auth,
	.auth_tls = rsink_auth_tls,
	.lost = rsink_lost,
	.busy = rsink_busy,
	.answer = NULL,
	.quit = rsink_quit,
	.close = rsink_close,
};
