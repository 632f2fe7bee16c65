/*
 * dsn.c - delivery status notifications (RFC 3464, 3461, 3463).  It owns
 * the DSN message: its envelope (null sender, the original sender as the
 * one recipient, routed like any message) is made on the loop by
 * mta_dsn_new(); its body, a multipart/report with a human-readable part,
 * a message/delivery-status part and the original message or its
 * headers, is composed by mta_dsn_compose() on the threadpool, where the
 * original can be read from the spool without blocking the loop.
 *
 * Every value in it came from outside (addresses, ORCPT and ENVID from a
 * client, Diagnostic-Code from a server): each is written through
 * put_field/put_text, which turn every control and malformed UTF-8 into
 * '?' and fold long fields, so a DSN never carries a bare CR or LF and
 * nobody can add a field or a per-recipient group of their own.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../common/log.h"
#include "../common/smtp.h"
#include "../common/xmalloc.h"
#include "mta_local.h"

#define DSN_READ	(64 * 1024)
#define DSN_FOLD	78	/* fold a field's line past this column */
#define DSN_LINEMAX	998	/* RFC 5322 2.1.1: never longer */

struct dsn_rcpt {
	char		*addr;
	char		*orcpt;		/* decoded "rfc822;addr", or NULL */
	char		*status;
	char		*remote;
	char		*diag;
	time_t		 last;
};

/* everything compose needs, copied: the original may go meanwhile */
struct mta_dsnreq {
	enum mta_dsn_kind kind;
	char		 id[MTA_IDLEN + 1];	/* the DSN's */
	char		 orig[MTA_IDLEN + 1];	/* the original's */
	char		*path;			/* the original's file */
	uint64_t	 bodyoff;
	uint64_t	 bodylen;
	char		*received;
	char		*sender;
	char		*envid;
	char		*host;
	time_t		 arrival;
	time_t		 until;			/* delay: retried until */
	int		 full;			/* attach the whole message */
	struct dsn_rcpt	*rcpt;
	size_t		 nrcpt;
};

static char *
dup_or_null(const char *s)
{
	return s != NULL ? xstrdup(s) : NULL;
}

/* printable - every octet of s is printable US-ASCII */
static int
printable(const char *s)
{
	for (; *s != '\0'; s++)
		if (*s < 32 || *s > 126)
			return 0;
	return 1;
}

/*
 * orcpt_decode - "rfc822;a+2Bb@c" to "rfc822;a+b@c" (RFC 3461 xtext).
 * The door lets only printable decodings in; one that is not (a spool
 * file from before that check) stays encoded, which is printable.
 */
static char *
orcpt_decode(const char *orcpt)
{
	const char *semi;
	char *out;
	size_t n;

	if (orcpt == NULL || (semi = strchr(orcpt, ';')) == NULL)
		return dup_or_null(orcpt);
	n = strlen(orcpt) + 1;
	out = xmalloc(n);
	memcpy(out, orcpt, semi - orcpt + 1);
	if (smtp_xtext_decode(semi + 1, out + (semi - orcpt) + 1,
	    n - (semi - orcpt) - 1) == -1 || !printable(out))
		snprintf(out, n, "%s", orcpt);
	return out;
}

/* mta_dsn_route - how a DSN to addr travels; *ss set for ORIGINAL */
enum policy_route
mta_dsn_route(const char *addr, struct sockaddr_storage *ss)
{
	struct policy *p = policy_current();
	const struct policy_domain *d;

	d = policy_domain_by_name(p, mta_addr_domain(addr));
	if (d != NULL && d->naddr > 0) {
		*ss = d->addr[0];
		return POLICY_ROUTE_ORIGINAL;
	}
	return p->relay.host != NULL ? POLICY_ROUTE_RELAYHOST :
	    POLICY_ROUTE_MX;
}

/*
 * mta_dsn_new - the DSN for recipients idx[0..n) of orig: its envelope
 * (to be committed with mta_spool_dsn) and, in *reqp, what composes it.
 */
struct mta_env *
mta_dsn_new(const struct mta_env *orig, enum mta_dsn_kind kind,
    const size_t *idx, size_t n, struct mta_dsnreq **reqp)
{
	struct policy *p = policy_current();
	struct mta_dsnreq *req;
	struct mta_env *env;
	const struct mta_rcpt *r;
	struct dsn_rcpt *d;
	char path[PATH_MAX];
	size_t i;

	env = mta_env_new();
	mta_id_make(env->id);
	env->arrival_ms = env->queued_ms = mta_now_ms();
	env->arrival = (time_t)(env->arrival_ms / 1000);
	env->dir = POLICY_DIR_OUT;
	env->ret = MTA_RET_HDRS;
	env->body8 = orig->body8;
	env->smtputf8 = orig->smtputf8;
	mta_rcpt_add(env, orig->sender, NULL, MTA_NOTIFY_NEVER,
	    mta_dsn_route(orig->sender, &env->orig_dst));

	req = xcalloc(1, sizeof(*req));
	req->kind = kind;
	memcpy(req->id, env->id, sizeof(req->id));
	memcpy(req->orig, orig->id, sizeof(req->orig));
	if (mta_spool_path(path, sizeof(path), "queue", orig->id) == 0)
		req->path = xstrdup(path);
	req->bodyoff = orig->bodyoff;
	req->bodylen = orig->bodylen;
	req->received = dup_or_null(orig->received);
	req->sender = xstrdup(orig->sender);
	req->envid = dup_or_null(orig->envid);
	req->host = xstrdup(mta_hostname());
	req->arrival = orig->arrival;
	req->until = orig->arrival + (time_t)p->queue.lifetime;
	req->full = kind == MTA_DSN_FAILURE && orig->ret != MTA_RET_HDRS;
	req->rcpt = xcalloc(n, sizeof(*req->rcpt));
	for (i = 0; i < n; i++) {
		r = &orig->rcpt[idx[i]];
		d = &req->rcpt[req->nrcpt++];
		d->addr = xstrdup(r->addr);
		d->orcpt = orcpt_decode(r->orcpt);
		d->status = xstrdup(r->status != NULL ? r->status :
		    kind == MTA_DSN_SUCCESS ? "2.0.0" :
		    kind == MTA_DSN_DELAY ? "4.0.0" : "5.0.0");
		d->remote = dup_or_null(r->remote);
		d->diag = dup_or_null(r->diag);
		d->last = r->last;
	}
	if (!req->full)
		env->body8 = 0;	/* headers only: 7bit unless they are not */
	*reqp = req;
	return env;
}

void
mta_dsn_free(struct mta_dsnreq *req)
{
	size_t i;

	if (req == NULL)
		return;
	for (i = 0; i < req->nrcpt; i++) {
		free(req->rcpt[i].addr);
		free(req->rcpt[i].orcpt);
		free(req->rcpt[i].status);
		free(req->rcpt[i].remote);
		free(req->rcpt[i].diag);
	}
	free(req->rcpt);
	free(req->path);
	free(req->received);
	free(req->sender);
	free(req->envid);
	free(req->host);
	free(req);
}

/*
 * Composing (threadpool)
 */

/*
 * clean - s[0..n) with every control (CR and LF first of all) and every
 * octet that does not start a well-formed UTF-8 sequence as '?'
 */
static void
clean(struct buf *b, const char *s, size_t n)
{
	size_t i, u;

	for (i = 0; i < n; i++) {
		if ((unsigned char)s[i] >= 32 && s[i] != 127 &&
		    (unsigned char)s[i] < 128)
			buf_append(b, s + i, 1);
		else if ((unsigned char)s[i] >= 128 &&
		    (u = smtp_utf8_len(s + i)) > 0 && i + u <= n) {
			buf_append(b, s + i, u);
			i += u - 1;
		} else
			buf_append(b, "?", 1);
	}
}

/* put_text - "<addr>: text" in the human-readable part, cleaned */
static void
put_text(struct buf *b, const char *addr, const char *text)
{
	size_t n = strlen(text);

	buf_puts(b, "<");
	clean(b, addr, strlen(addr));
	buf_puts(b, ">: ");
	clean(b, text, n > DSN_LINEMAX / 2 ? DSN_LINEMAX / 2 : n);
	buf_puts(b, "\r\n");
}

/*
 * put_field - "Name: pre value" CRLF, the value cleaned and folded (RFC 5322
 * 2.2.3): before a space where the line would pass DSN_FOLD columns, and
 * by force (CRLF SP inside a word, never inside a UTF-8 sequence) where
 * a word would pass DSN_LINEMAX.  Whatever a server said, it stays in
 * this one field.
 */
static void
put_field(struct buf *b, const char *name, const char *pre,
    const char *value)
{
	struct buf v;
	size_t col, i, end, cut;

	buf_init(&v);
	buf_puts(&v, pre);
	clean(&v, value, strlen(value));
	buf_printf(b, "%s: ", name);
	col = strlen(name) + 2;
	for (i = 0; i < v.len; i = end) {
		/* a token: its leading spaces and one word */
		for (end = i; end < v.len && v.data[end] == ' '; end++)
			;
		for (; end < v.len && v.data[end] != ' '; end++)
			;
		if (col + (end - i) > DSN_FOLD && v.data[i] == ' ' &&
		    col > strlen(name) + 2) {
			buf_puts(b, "\r\n");
			col = 0;
		}
		while (col + (end - i) > DSN_LINEMAX) {
			cut = i + (DSN_LINEMAX - col);
			while (cut > i + 1 &&
			    ((unsigned char)v.data[cut] & 0xc0) == 0x80)
				cut--;
			buf_append(b, v.data + i, cut - i);
			buf_puts(b, "\r\n ");
			col = 1;
			i = cut;
		}
		buf_append(b, v.data + i, end - i);
		col += end - i;
	}
	buf_puts(b, "\r\n");
	buf_free(&v);
}

static const char *
action(enum mta_dsn_kind kind)
{
	return kind == MTA_DSN_FAILURE ? "failed" :
	    kind == MTA_DSN_DELAY ? "delayed" : "delivered";
}

/* remote_name - "name[addr]" or "[addr]" to the name for Remote-MTA */
static void
remote_name(const char *remote, char *out, size_t len)
{
	const char *br = strchr(remote, '[');

	if (br == NULL || br == remote)
		snprintf(out, len, "%s", remote);
	else
		snprintf(out, len, "%.*s", (int)(br - remote), remote);
}

static void
human_part(const struct mta_dsnreq *req, struct buf *b)
{
	size_t i;

	buf_printf(b, "This is the mail system at host %s.\r\n\r\n",
	    req->host);
	switch (req->kind) {
	case MTA_DSN_FAILURE:
		buf_puts(b, "I'm sorry to have to inform you that your "
		    "message could not\r\nbe delivered to one or more "
		    "recipients. It's attached below.\r\n");
		break;
	case MTA_DSN_DELAY:
		buf_puts(b, "Your message could not be delivered yet to one "
		    "or more recipients.\r\nIt will be tried again; you do "
		    "not need to resend it.\r\n");
		break;
	case MTA_DSN_SUCCESS:
		buf_puts(b, "Your message was successfully delivered to the "
		    "destination(s)\r\nlisted below.\r\n");
		break;
	}
	buf_puts(b, "\r\n");
	for (i = 0; i < req->nrcpt; i++)
		put_text(b, req->rcpt[i].addr,
		    req->rcpt[i].diag != NULL ? req->rcpt[i].diag :
		    req->kind == MTA_DSN_SUCCESS ? "delivery successful" :
		    "no reason given");
}

/* status_part - the message/delivery-status body */
static void
status_part(const struct mta_dsnreq *req, struct buf *b)
{
	const struct dsn_rcpt *r;
	char date[64], name[256];
	size_t i;

	put_field(b, "Reporting-MTA", "dns; ", req->host);
	put_field(b, "X-Mxbridge-Queue-ID", "", req->orig);
	if (req->envid != NULL)
		put_field(b, "Original-Envelope-Id", "", req->envid);
	put_field(b, "Arrival-Date", "", smtp_date(req->arrival,
	    date, sizeof(date)));
	for (i = 0; i < req->nrcpt; i++) {
		r = &req->rcpt[i];
		buf_puts(b, "\r\n");
		put_field(b, "Final-Recipient", "rfc822; ", r->addr);
		if (r->orcpt != NULL)
			put_field(b, "Original-Recipient", "", r->orcpt);
		put_field(b, "Action", "", action(req->kind));
		put_field(b, "Status", "", r->status);
		if (r->remote != NULL) {
			remote_name(r->remote, name, sizeof(name));
			put_field(b, "Remote-MTA", "dns; ", name);
		}
		if (r->diag != NULL && strlen(r->diag) >= 3 &&
		    strspn(r->diag, "0123456789") == 3)
			put_field(b, "Diagnostic-Code", "smtp; ", r->diag);
		else if (r->diag != NULL)
			put_field(b, "Diagnostic-Code", "X-mxbridge; ",
			    r->diag);
		if (r->last != 0)
			put_field(b, "Last-Attempt-Date", "",
			    smtp_date(r->last, date, sizeof(date)));
		if (req->kind == MTA_DSN_DELAY)
			put_field(b, "Will-Retry-Until", "",
			    smtp_date(req->until, date, sizeof(date)));
	}
}

/*
 * original_part - the original message (Received: first), or only its
 * header section; -1 if the spool file cannot be read.
 */
static int
original_part(const struct mta_dsnreq *req, struct buf *b)
{
	char *chunk, *end;
	uint64_t off = 0, want;
	ssize_t n;
	int fd, rc = -1;

	if (req->path == NULL ||
	    (fd = open(req->path, O_RDONLY | O_CLOEXEC)) == -1)
		return -1;
	chunk = xmalloc(DSN_READ + 1);
	if (req->received != NULL)
		buf_puts(b, req->received);
	while (off < req->bodylen) {
		want = req->bodylen - off < DSN_READ ? req->bodylen - off :
		    DSN_READ;
		n = pread(fd, chunk, want, (off_t)(req->bodyoff + off));
		if (n <= 0)
			goto done;
		chunk[n] = '\0';
		if (!req->full && (end = strstr(chunk, "\r\n\r\n")) != NULL) {
			buf_append(b, chunk, end - chunk + 2);
			break;
		}
		buf_append(b, chunk, (size_t)n);
		off += (uint64_t)n;
	}
	if (b->len >= 2 && memcmp(b->data + b->len - 2, "\r\n", 2) != 0)
		buf_puts(b, "\r\n");
	rc = 0;
done:
	free(chunk);
	close(fd);
	return rc;
}

static const char *
subject(enum mta_dsn_kind kind)
{
	return kind == MTA_DSN_FAILURE ? "Undelivered Mail Returned to Sender" :
	    kind == MTA_DSN_DELAY ? "Delayed Mail (still being retried)" :
	    "Successful Mail Delivery Report";
}

/*
 * mta_dsn_compose - the DSN's whole message into out.  Runs on the
 * threadpool: reads only req and the original's file.  0 always: an
 * unreadable original leaves its part out rather than lose the DSN.
 */
int
mta_dsn_compose(struct mta_dsnreq *req, struct buf *out)
{
	char date[64], boundary[128];
	struct buf orig;

	buf_init(&orig);
	snprintf(boundary, sizeof(boundary), "%s.%ld/%s", req->id,
	    (long)time(NULL), req->host);
	buf_printf(out, "From: Mail Delivery System <MAILER-DAEMON@%s>\r\n",
	    req->host);
	buf_puts(out, "To: <");
	clean(out, req->sender, strlen(req->sender));
	buf_puts(out, ">\r\n");
	buf_printf(out, "Subject: %s\r\n", subject(req->kind));
	buf_printf(out, "Date: %s\r\n", smtp_date(time(NULL), date,
	    sizeof(date)));
	buf_printf(out, "Message-ID: <%s@%s>\r\n", req->id, req->host);
	buf_puts(out, "Auto-Submitted: auto-replied\r\n");
	buf_puts(out, "MIME-Version: 1.0\r\n");
	buf_printf(out, "Content-Type: multipart/report; "
	    "report-type=delivery-status;\r\n\tboundary=\"%s\"\r\n", boundary);
	buf_puts(out, "\r\nThis is a MIME-encapsulated message.\r\n\r\n");

	buf_printf(out, "--%s\r\n", boundary);
	buf_puts(out, "Content-Description: Notification\r\n"
	    "Content-Type: text/plain; charset=utf-8\r\n\r\n");
	human_part(req, out);

	buf_printf(out, "\r\n--%s\r\n", boundary);
	buf_puts(out, "Content-Description: Delivery report\r\n"
	    "Content-Type: message/delivery-status\r\n\r\n");
	status_part(req, out);

	if (original_part(req, &orig) == 0) {
		buf_printf(out, "\r\n--%s\r\n", boundary);
		if (req->full)
			buf_puts(out, "Content-Description: Undelivered "
			    "Message\r\nContent-Type: message/rfc822\r\n\r\n");
		else
			buf_puts(out, "Content-Description: Message Headers\r\n"
			    "Content-Type: text/rfc822-headers\r\n\r\n");
		buf_append(out, orig.data, orig.len);
	}
	buf_printf(out, "\r\n--%s--\r\n", boundary);
	buf_free(&orig);
	return 0;
}
