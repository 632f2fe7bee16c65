/*
 * dsn.c - delivery status notifications (RFC 3464, 3461, 3463).  It owns
 * the DSN message: its envelope (null sender, the original sender as the
 * one recipient, routed like any message) is made on the loop by
 * mta_dsn_new(); its body, a multipart/report with a human-readable part,
 * a message/delivery-status part and the original message or its
 * headers, is composed by mta_dsn_compose() on the threadpool, where the
 * original can be read from the spool without blocking the loop.
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

/* orcpt_decode - "rfc822;a+2Bb@c" to "rfc822;a+b@c" (RFC 3461 xtext) */
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
	    n - (semi - orcpt) - 1) == -1)
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
	env->arrival = time(NULL);
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
		buf_printf(b, "<%s>: %s\r\n", req->rcpt[i].addr,
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

	buf_printf(b, "Reporting-MTA: dns; %s\r\n", req->host);
	buf_printf(b, "X-Mxbridge-Queue-ID: %s\r\n", req->orig);
	if (req->envid != NULL)
		buf_printf(b, "Original-Envelope-Id: %s\r\n", req->envid);
	buf_printf(b, "Arrival-Date: %s\r\n", mta_fmt_time(req->arrival,
	    date, sizeof(date)));
	for (i = 0; i < req->nrcpt; i++) {
		r = &req->rcpt[i];
		buf_puts(b, "\r\n");
		buf_printf(b, "Final-Recipient: rfc822; %s\r\n", r->addr);
		if (r->orcpt != NULL)
			buf_printf(b, "Original-Recipient: %s\r\n", r->orcpt);
		buf_printf(b, "Action: %s\r\n", action(req->kind));
		buf_printf(b, "Status: %s\r\n", r->status);
		if (r->remote != NULL) {
			remote_name(r->remote, name, sizeof(name));
			buf_printf(b, "Remote-MTA: dns; %s\r\n", name);
		}
		if (r->diag != NULL && strlen(r->diag) >= 3 &&
		    strspn(r->diag, "0123456789") == 3)
			buf_printf(b, "Diagnostic-Code: smtp; %s\r\n", r->diag);
		else if (r->diag != NULL)
			buf_printf(b, "Diagnostic-Code: X-mxbridge; %s\r\n",
			    r->diag);
		if (r->last != 0)
			buf_printf(b, "Last-Attempt-Date: %s\r\n",
			    mta_fmt_time(r->last, date, sizeof(date)));
		if (req->kind == MTA_DSN_DELAY)
			buf_printf(b, "Will-Retry-Until: %s\r\n",
			    mta_fmt_time(req->until, date, sizeof(date)));
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
	buf_printf(out, "To: <%s>\r\n", req->sender);
	buf_printf(out, "Subject: %s\r\n", subject(req->kind));
	buf_printf(out, "Date: %s\r\n", mta_fmt_time(time(NULL), date,
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
