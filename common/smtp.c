/*
 * smtp.c - the SMTP line codec shared by the proxy and the MTA: a bounded
 * line reader that flags bare CR, bare LF and NUL, the reply parser for
 * multi-line replies, the DATA terminator (CRLF "." CRLF and nothing
 * else) with dot-(un)stuffing, and the strict RFC 5321 syntax of paths and
 * ESMTP parameters.  Pure functions over buffers; no I/O, no logging.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "smtp.h"
#include "xmalloc.h"

/* ---------------------------------------------------------------- lines */

void
smtp_reader_init(struct smtp_reader *r, size_t max)
{
	memset(r, 0, sizeof(*r));
	buf_init(&r->in);
	r->max = max;
}

void
smtp_reader_free(struct smtp_reader *r)
{
	buf_free(&r->in);
	memset(r, 0, sizeof(*r));
}

void
smtp_reader_setmax(struct smtp_reader *r, size_t max)
{
	r->max = max;
}

void
smtp_reader_feed(struct smtp_reader *r, const void *p, size_t n)
{
	buf_append(&r->in, p, n);
}

size_t
smtp_reader_pending(const struct smtp_reader *r)
{
	return buf_avail(&r->in);
}

void
smtp_reader_discard(struct smtp_reader *r)
{
	buf_reset(&r->in);
	r->scanned = 0;
	r->skipping = 0;
	r->skipflags = 0;
}

/* line_flags - the anomalies inside n bytes of line content */
static int
line_flags(const char *p, size_t n)
{
	int flags = 0;

	if (memchr(p, '\r', n) != NULL)
		flags |= SMTP_LF_BARECR;
	if (memchr(p, '\0', n) != NULL)
		flags |= SMTP_LF_NUL;
	return flags;
}

/* reader_skip - drop the rest of an over-long line up to its LF */
static enum smtp_line_status
reader_skip(struct smtp_reader *r, struct smtp_line *l)
{
	const char *head = buf_head(&r->in), *lf;
	size_t avail = buf_avail(&r->in);

	if ((lf = memchr(head, '\n', avail)) == NULL) {
		if (avail > 0)
			r->skipflags = head[avail - 1] == '\r' ?
			    SMTP_LF_CRLF : 0;
		buf_consume(&r->in, avail);
		return SMTP_LINE_NONE;
	}
	if (lf > head)
		r->skipflags = lf[-1] == '\r' ? SMTP_LF_CRLF : 0;
	buf_consume(&r->in, (size_t)(lf - head) + 1);
	r->skipping = 0;
	r->scanned = 0;
	l->data = "";
	l->len = 0;
	l->flags = SMTP_LF_TOOLONG | r->skipflags;
	r->skipflags = 0;
	return SMTP_LINE_TOOLONG;
}

/*
 * smtp_reader_getline - the next complete line.  The returned data is
 * NUL-terminated in place and stays valid until the next feed.
 */
enum smtp_line_status
smtp_reader_getline(struct smtp_reader *r, struct smtp_line *l)
{
	char *head, *lf;
	size_t avail, n, len;
	int crlf;

	if (r->skipping)
		return reader_skip(r, l);
	head = r->in.data + r->in.off;
	avail = buf_avail(&r->in);
	lf = avail > r->scanned ?
	    memchr(head + r->scanned, '\n', avail - r->scanned) : NULL;
	if (lf == NULL) {
		r->scanned = avail;
		/* max octets and a CR still waiting for its LF are fine */
		if (avail > r->max + 1) {
			r->skipping = 1;
			r->skipflags = head[avail - 1] == '\r' ?
			    SMTP_LF_CRLF : 0;
			buf_consume(&r->in, avail);
			r->scanned = 0;
		}
		return SMTP_LINE_NONE;
	}
	n = (size_t)(lf - head);
	crlf = n > 0 && head[n - 1] == '\r';
	len = crlf ? n - 1 : n;
	r->scanned = 0;
	if (len > r->max) {
		buf_consume(&r->in, n + 1);
		l->data = "";
		l->len = 0;
		l->flags = SMTP_LF_TOOLONG | (crlf ? SMTP_LF_CRLF : 0);
		return SMTP_LINE_TOOLONG;
	}
	l->flags = line_flags(head, len) | (crlf ? SMTP_LF_CRLF : 0);
	head[len] = '\0';
	l->data = head;
	l->len = len;
	buf_consume(&r->in, n + 1);
	return SMTP_LINE_OK;
}

/* ---------------------------------------------------------------- replies */

void
smtp_reply_init(struct smtp_replyparser *p, size_t maxline, unsigned maxlines)
{
	memset(p, 0, sizeof(*p));
	smtp_reader_init(&p->r, maxline > 2 ? maxline - 2 : 1);
	p->maxlines = maxlines;
	buf_init(&p->text);
}

void
smtp_reply_free(struct smtp_replyparser *p)
{
	smtp_reader_free(&p->r);
	buf_free(&p->text);
}

void
smtp_reply_feed(struct smtp_replyparser *p, const void *data, size_t n)
{
	if (!p->failed)
		smtp_reader_feed(&p->r, data, n);
}

size_t
smtp_reply_pending(const struct smtp_replyparser *p)
{
	return smtp_reader_pending(&p->r) + p->text.len;
}

void
smtp_reply_clear(struct smtp_reply *rep)
{
	buf_free(&rep->text);
	memset(rep, 0, sizeof(*rep));
}

static int
reply_fail(struct smtp_replyparser *p, const char *why)
{
	p->failed = 1;
	p->error = why;
	smtp_reader_discard(&p->r);
	buf_reset(&p->text);
	return -1;
}

/* reply_check - one reply line's syntax; its code or -1 */
static int
reply_check(struct smtp_replyparser *p, const struct smtp_line *l)
{
	const char *s = l->data;

	if (!(l->flags & SMTP_LF_CRLF))
		return reply_fail(p, "bare LF in reply");
	if (l->flags & SMTP_LF_BARECR)
		return reply_fail(p, "bare CR in reply");
	if (l->flags & SMTP_LF_NUL)
		return reply_fail(p, "NUL in reply");
	if (l->len < 3 || s[0] < '2' || s[0] > '5' || !isdigit((unsigned char)s[1]) ||
	    !isdigit((unsigned char)s[2]) ||
	    (l->len > 3 && s[3] != ' ' && s[3] != '-'))
		return reply_fail(p, "malformed reply line");
	return (s[0] - '0') * 100 + (s[1] - '0') * 10 + (s[2] - '0');
}

int
smtp_reply_get(struct smtp_replyparser *p, struct smtp_reply *out)
{
	struct smtp_line l;
	enum smtp_line_status st;
	int code;

	if (p->failed)
		return -1;
	for (;;) {
		st = smtp_reader_getline(&p->r, &l);
		if (st == SMTP_LINE_NONE)
			return 0;
		if (st == SMTP_LINE_TOOLONG)
			return reply_fail(p, "reply line too long");
		if ((code = reply_check(p, &l)) == -1)
			return -1;
		if (p->nlines > 0 && code != p->code)
			return reply_fail(p, "reply code changed between lines");
		if (++p->nlines > p->maxlines)
			return reply_fail(p, "too many reply lines");
		p->code = code;
		buf_append(&p->text, l.data, l.len);
		buf_append(&p->text, "\r\n", 2);
		if (l.len == 3 || l.data[3] == ' ')
			break;
	}
	out->code = p->code;
	out->nlines = p->nlines;
	out->text = p->text;
	buf_init(&p->text);
	p->nlines = 0;
	p->code = 0;
	return 1;
}

const char *
smtp_reply_line(const struct smtp_reply *rep, unsigned i, size_t *len)
{
	const char *s = buf_head(&rep->text), *end = s + buf_avail(&rep->text);
	const char *eol;

	for (;;) {
		if (s >= end || (eol = memchr(s, '\n', (size_t)(end - s))) ==
		    NULL)
			return NULL;
		if (i-- == 0)
			break;
		s = eol + 1;
	}
	/* "DDD-text\r\n" or "DDD\r\n" */
	if (eol - s < 5) {
		*len = 0;
		return eol - 1;
	}
	*len = (size_t)(eol - 1 - (s + 4));
	return s + 4;
}

const char *
smtp_ehlo_keyword(const char *line, size_t len, char *kw, size_t kwsize,
    size_t *paramlen)
{
	size_t k, n;

	for (n = 0; n < len && line[n] != ' ' && line[n] != '='; n++)
		;
	for (k = 0; k < n && k + 1 < kwsize; k++)
		kw[k] = (char)toupper((unsigned char)line[k]);
	kw[k] = '\0';
	if (n >= len) {
		*paramlen = 0;
		return NULL;
	}
	*paramlen = len - n - 1;
	return line + n + 1;
}

/* mech_listed - the AUTH parameters (space-separated) name mechanism m */
static int
mech_listed(const char *p, size_t len, const char *m)
{
	size_t ml = strlen(m), i = 0, j;

	while (i < len) {
		for (j = i; j < len && p[j] != ' '; j++)
			;
		if (j - i == ml && strncasecmp(p + i, m, ml) == 0)
			return 1;
		i = j + 1;
	}
	return 0;
}

void
smtp_ehlo_parse(const struct smtp_reply *rep, struct smtp_ehlo *e)
{
	char kw[32], num[24];
	const char *line, *par;
	size_t len, plen;
	unsigned i;

	memset(e, 0, sizeof(*e));
	for (i = 1; i < rep->nlines; i++) {
		if ((line = smtp_reply_line(rep, i, &len)) == NULL)
			break;
		par = smtp_ehlo_keyword(line, len, kw, sizeof(kw), &plen);
		if (strcmp(kw, "PIPELINING") == 0)
			e->pipelining = 1;
		else if (strcmp(kw, "SIZE") == 0) {
			e->size = 1;
			if (par != NULL && plen > 0 && plen < sizeof(num)) {
				memcpy(num, par, plen);
				num[plen] = '\0';
				e->maxsize = strtoull(num, NULL, 10);
			}
		} else if (strcmp(kw, "8BITMIME") == 0)
			e->eightbit = 1;
		else if (strcmp(kw, "DSN") == 0)
			e->dsn = 1;
		else if (strcmp(kw, "SMTPUTF8") == 0)
			e->smtputf8 = 1;
		else if (strcmp(kw, "ENHANCEDSTATUSCODES") == 0)
			e->enhanced = 1;
		else if (strcmp(kw, "STARTTLS") == 0)
			e->starttls = 1;
		else if (strcmp(kw, "AUTH") == 0) {
			e->auth = 1;
			if (par != NULL) {
				e->auth_plain |= mech_listed(par, plen,
				    "PLAIN");
				e->auth_login |= mech_listed(par, plen,
				    "LOGIN");
			}
		}
	}
}

/* ---------------------------------------------------------------- DATA */

void
smtp_data_init(struct smtp_data *d)
{
	memset(d, 0, sizeof(*d));
	d->crlf = 1;		/* the DATA command ended in CRLF */
}

/*
 * data_count - account one non-terminator line of content len (its
 * terminator excluded) with line flags f; the octets it stands for
 */
static size_t
data_count(struct smtp_data *d, const char *p, size_t len, int f)
{
	int crlf = (f & SMTP_LF_CRLF) != 0;

	d->flags |= f & (SMTP_LF_BARECR | SMTP_LF_NUL | SMTP_LF_TOOLONG);
	if (!crlf)
		d->flags |= SMTP_LF_BARELF;
	d->crlf = crlf;
	d->lines++;
	/* the hop count of loop detection (RFC 5321 6.3) */
	if (!d->body) {
		if (len == 0)
			d->body = 1;
		else if (len >= 9 && strncasecmp(p, "Received:", 9) == 0)
			d->received++;
	}
	if (len > 0 && p[0] == '.')
		len--;
	d->size += len + 2;
	return len;
}

/*
 * smtp_data_line - one line of DATA: 1 at the terminator, else 0 with the
 * un-stuffed content in out.  The terminator is a "." line that ends in
 * CRLF and follows a CRLF: LF "." LF, CR "." CR and the like are content
 * (flagged), never an end.
 */
int
smtp_data_line(struct smtp_data *d, const struct smtp_line *l,
    const char **out, size_t *outlen)
{
	if (!(l->flags & SMTP_LF_TOOLONG) && d->crlf &&
	    (l->flags & SMTP_LF_CRLF) && l->len == 1 && l->data[0] == '.')
		return 1;
	*outlen = data_count(d, l->data, l->len, l->flags);
	*out = l->data + (l->len - *outlen);
	return 0;
}

/*
 * span_skip - an over-long line being dropped: 1 once its LF is consumed
 * (the line is accounted), 0 if it goes on past the buffer
 */
static int
span_skip(struct smtp_reader *r, struct smtp_data *d)
{
	struct smtp_line l;

	if (reader_skip(r, &l) == SMTP_LINE_NONE)
		return 0;
	data_count(d, "", 0, l.flags);
	return 1;
}

/*
 * nul_next - the first NUL in [p, end), looked for in windows so that a
 * search serves many lines yet a run cut short never rescans much: the
 * NUL, or the end of the window (then not a NUL, or end)
 */
static const char *
nul_next(const char *p, const char *end)
{
	size_t n = (size_t)(end - p) < 2048 ? (size_t)(end - p) : 2048;
	const char *z = memchr(p, '\0', n);

	return z != NULL ? z : p + n;
}

/*
 * span_line - the flags of one complete line [p, lf) of DATA; nul is a
 * NUL at or after p, or a position before which there is none
 */
static int
span_line(const char *p, const char *lf, size_t max, const char *nul,
    size_t *len)
{
	size_t n = (size_t)(lf - p);
	int crlf = n > 0 && lf[-1] == '\r', f;

	*len = crlf ? n - 1 : n;
	f = crlf ? SMTP_LF_CRLF : 0;
	if (*len > max)
		return f | SMTP_LF_TOOLONG;
	if (memchr(p, '\r', *len) != NULL)
		f |= SMTP_LF_BARECR;
	if (nul < p + *len)
		f |= SMTP_LF_NUL;
	return f;
}

/*
 * smtp_data_span - the next run of DATA content, straight from the
 * reader's buffer: see smtp.h.  Lines are checked, counted and consumed
 * exactly as smtp_reader_getline + smtp_data_line would do them; a run
 * grows over whole lines while their bytes can go out as they came.
 */
enum smtp_data_status
smtp_data_span(struct smtp_reader *r, struct smtp_data *d, int stuffed,
    const char **out, size_t *outlen)
{
	char *head, *end, *p, *lf, *run = NULL;
	const char *nul;
	size_t len, from;
	int f, dot;

	*out = "";
	*outlen = 0;
	if (r->skipping) {
		if (!span_skip(r, d))
			return SMTP_DATA_MORE;
		return SMTP_DATA_SPAN;	/* empty: d->flags says why */
	}
	head = p = r->in.data + r->in.off;
	end = head + buf_avail(&r->in);
	from = r->scanned;
	nul = nul_next(p, end);
	while ((lf = from < (size_t)(end - p) ?
	    memchr(p + from, '\n', (size_t)(end - p) - from) : NULL) != NULL) {
		from = 0;
		while (nul < lf && *nul != '\0')
			nul = nul_next(nul, end);
		f = span_line(p, lf, r->max, nul, &len);
		if (!(f & SMTP_LF_TOOLONG) && d->crlf && (f & SMTP_LF_CRLF) &&
		    len == 1 && p[0] == '.') {
			if (run != NULL)
				break;
			buf_consume(&r->in, (size_t)(lf - head) + 1);
			r->scanned = 0;
			return SMTP_DATA_END;
		}
		/* a line with an anomaly is never part of a run */
		if (f & (SMTP_LF_TOOLONG | SMTP_LF_BARECR | SMTP_LF_NUL) ||
		    !(f & SMTP_LF_CRLF)) {
			if (run != NULL)
				break;
			if (f & SMTP_LF_TOOLONG)
				data_count(d, "", 0, f);
			else
				data_count(d, p, len, f);
			buf_consume(&r->in, (size_t)(lf - head) + 1);
			r->scanned = 0;
			return SMTP_DATA_SPAN;
		}
		/* the dot that the wire form drops starts a run of its own */
		dot = len > 0 && p[0] == '.' && (!stuffed || len == 1 ||
		    p[1] != '.');
		if (dot && run != NULL)
			break;
		if (run == NULL)
			run = dot ? p + 1 : p;
		data_count(d, p, len, f);
		p = lf + 1;
		if (nul < p)
			nul = nul_next(p, end);
	}
	if (run != NULL) {
		*out = run;
		*outlen = (size_t)(p - run);
		buf_consume(&r->in, (size_t)(p - head));
		r->scanned = 0;
		return SMTP_DATA_SPAN;
	}
	/* p is the head: an incomplete line, known LF-free so far */
	r->scanned = (size_t)(end - p);
	if (r->scanned > r->max + 1) {
		/* over-long before its LF: drop it as the line reader does */
		r->skipping = 1;
		r->skipflags = end[-1] == '\r' ? SMTP_LF_CRLF : 0;
		buf_consume(&r->in, r->scanned);
		r->scanned = 0;
	}
	return SMTP_DATA_MORE;
}

void
smtp_dot_stuff(struct buf *b, const char *p, size_t n)
{
	buf_reserve(b, n + 4);
	if (n > 0 && p[0] == '.')
		buf_append(b, ".", 1);
	buf_append(b, p, n);
	buf_append(b, "\r\n", 2);
}

/*
 * smtp_dot_stuff_lines - the complete lines of [p, p + n) to b,
 * dot-stuffed, and with last the unterminated rest too; the bytes not
 * taken
 */
size_t
smtp_dot_stuff_lines(struct buf *b, const char *p, size_t n, int last)
{
	const char *nl;

	while ((nl = memchr(p, '\n', n)) != NULL) {
		smtp_dot_stuff(b, p, (size_t)(nl - p) -
		    (nl > p && nl[-1] == '\r'));
		n -= (size_t)(nl - p) + 1;
		p = nl + 1;
	}
	if (last && n > 0) {
		smtp_dot_stuff(b, p, n);
		n = 0;
	}
	return n;
}

const char *
smtp_data_anomaly(int flags)
{
	if (flags & SMTP_LF_TOOLONG)
		return "line too long";
	if (flags & SMTP_LF_NUL)
		return "NUL";
	if (flags & SMTP_LF_BARECR)
		return "bare CR";
	if (flags & SMTP_LF_BARELF)
		return "bare LF";
	return "none";
}

/* ---------------------------------------------------------------- syntax */

const char *
smtp_verb(const char *line, size_t len, char *verb, size_t verbsz)
{
	size_t i;

	for (i = 0; i < len && line[i] != ' ' && i + 1 < verbsz; i++)
		verb[i] = (char)toupper((unsigned char)line[i]);
	verb[i] = '\0';
	while (i < len && line[i] != ' ')
		i++;
	if (i < len)
		i++;
	return line + i;
}

static int
is_atext(int c)
{
	return isalnum(c) || (c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c)
	    != NULL);
}

/*
 * smtp_utf8_len - the length of one well-formed UTF-8 sequence at s that
 * is not a control, or 0.  RFC 6531 takes UTF-8 as RFC 3629 defines it
 * (its table 4): no overlong forms, no surrogates, nothing over U+10FFFF,
 * no truncated sequence; and the C1 controls (U+0080..U+009F) have no
 * place in an address or a header field either.  A NUL ends a sequence,
 * so a terminated string is never read past.
 */
size_t
smtp_utf8_len(const char *str)
{
	const unsigned char *s = (const unsigned char *)str;
	unsigned char lo = 0x80, hi = 0xbf;
	size_t n, i;

	if (s[0] >= 0xc2 && s[0] <= 0xdf) {
		n = 2;
		if (s[0] == 0xc2)
			lo = 0xa0;		/* C2 80..9F: C1 controls */
	} else if (s[0] >= 0xe0 && s[0] <= 0xef) {
		n = 3;
		if (s[0] == 0xe0)
			lo = 0xa0;		/* overlong */
		else if (s[0] == 0xed)
			hi = 0x9f;		/* surrogates */
	} else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
		n = 4;
		if (s[0] == 0xf0)
			lo = 0x90;		/* overlong */
		else if (s[0] == 0xf4)
			hi = 0x8f;		/* over U+10FFFF */
	} else
		return 0;
	if (s[1] < lo || s[1] > hi)
		return 0;
	for (i = 2; i < n; i++)
		if ((s[i] & 0xc0) != 0x80)
			return 0;
	return n;
}

#define utf8_len(p)	smtp_utf8_len((const char *)(p))

/* dot_string - atoms separated by single dots; bytes taken or 0 */
static size_t
dot_string(const char *s, int utf8)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0, u;
	int atom = 0;

	for (;;) {
		if (is_atext(p[i])) {
			i++;
			atom = 1;
		} else if (p[i] >= 0x80 && utf8 && (u = utf8_len(p + i)) > 0) {
			i += u;
			atom = 1;
		} else if (p[i] == '.' && atom) {
			i++;
			atom = 0;
		} else
			break;
	}
	return atom ? i : 0;
}

/* quoted_string - RFC 5321 Quoted-string; bytes taken or 0 */
static size_t
quoted_string(const char *s, int utf8)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 1, u;

	if (p[0] != '"')
		return 0;
	for (;;) {
		if (p[i] == '"')
			return i + 1;
		if (p[i] == '\\' && p[i + 1] >= 32 && p[i + 1] <= 126)
			i += 2;
		else if (p[i] >= 32 && p[i] <= 126)
			i++;
		else if (p[i] >= 0x80 && utf8 && (u = utf8_len(p + i)) > 0)
			i += u;
		else
			return 0;
	}
}

/*
 * smtp_local_part - the RFC 5321 Local-part at s (Dot-string or
 * Quoted-string; UTF-8 where utf8, RFC 6531): bytes taken, or 0.  The one
 * grammar of it: the path parser below and the policy's matching
 * (policy/decide.c) both ask here.
 */
size_t
smtp_local_part(const char *s, int utf8)
{
	size_t n;

	if ((n = quoted_string(s, utf8)) == 0)
		n = dot_string(s, utf8);
	return n;
}

/*
 * domain_name - sub-domains joined by dots (LDH, or U-labels where
 * utf8); bytes taken or 0.  smtp_domain_name() for other modules.
 */
static size_t
domain_name(const char *s, int utf8)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0, label = 0, u;
	int last = 0;

	for (;;) {
		if (isalnum(p[i])) {
			i++;
			label++;
			last = p[i - 1];
		} else if (p[i] == '-' && label > 0) {
			i++;
			label++;
			last = '-';
		} else if (p[i] >= 0x80 && utf8 && (u = utf8_len(p + i)) > 0) {
			i += u;
			label += u;
			last = 'a';
		} else if (p[i] == '.' && label > 0 && last != '-') {
			i++;
			label = 0;
		} else
			break;
		if (label > 63)
			return 0;
	}
	if (label == 0 || last == '-')
		return 0;
	return i;
}

size_t
smtp_domain_name(const char *s, int utf8)
{
	return domain_name(s, utf8);
}

/* address_literal - "[1.2.3.4]" or "[IPv6:...]"; bytes taken or 0 */
static size_t
address_literal(const char *s)
{
	const char *end;
	char tmp[64];
	unsigned char bin[16];
	size_t n;

	if (s[0] != '[' || (end = strchr(s, ']')) == NULL)
		return 0;
	n = (size_t)(end - s - 1);
	if (n == 0 || n >= sizeof(tmp))
		return 0;
	memcpy(tmp, s + 1, n);
	tmp[n] = '\0';
	if (strncasecmp(tmp, "IPv6:", 5) == 0) {
		if (inet_pton(AF_INET6, tmp + 5, bin) != 1)
			return 0;
	} else if (inet_pton(AF_INET, tmp, bin) != 1)
		return 0;
	return n + 2;
}

/* source_route - skip "@a,@b:" before a mailbox; bytes taken, -1 bad */
static int
source_route(const char *s)
{
	size_t i = 0, n;

	if (s[0] != '@')
		return 0;
	for (;;) {
		if (s[i] != '@' || (n = domain_name(s + i + 1, 0)) == 0)
			return -1;
		i += n + 1;
		if (s[i] == ':')
			return (int)i + 1;
		if (s[i] != ',')
			return -1;
		i++;
	}
}

/* parse_mailbox - local@domain up to '>'; sets path->addr/domain */
static int
parse_mailbox(const char *s, const struct smtp_limits *lim,
    struct smtp_path *path, size_t *taken, const char **why)
{
	size_t lp, dl;
	int route;

	if ((route = source_route(s)) == -1)
		return -1;
	s += route;
	if ((lp = smtp_local_part(s, 1)) == 0)
		return -1;
	if (lp > lim->localpart) {
		*why = "local-part too long";
		return -1;
	}
	if (s[lp] != '@') {
		/* only <postmaster> may come without a domain */
		if (lp != 10 || strncasecmp(s, "postmaster", 10) != 0)
			return -1;
		path->addr = xstrndup(s, lp);
		*taken = (size_t)route + lp;
		return 0;
	}
	if ((dl = address_literal(s + lp + 1)) == 0 &&
	    (dl = domain_name(s + lp + 1, 1)) == 0)
		return -1;
	if (dl > lim->domain) {
		*why = "domain too long";
		return -1;
	}
	path->addr = xstrndup(s, lp + 1 + dl);
	path->domain = path->addr + lp + 1;
	*taken = (size_t)route + lp + 1 + dl;
	return 0;
}

/*
 * bad_utf8 - the path (up to the first space outside a quoted string)
 * holds an octet above 127 that does not start a well-formed UTF-8
 * sequence, or a C1 control.  Checked first so that such a path gets its
 * own reply, whether SMTPUTF8 was given or not.
 */
static int
bad_utf8(const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0, u;
	int quoted = 0;

	while (p[i] != '\0' && (quoted || p[i] != ' ')) {
		if (p[i] >= 0x80) {
			if ((u = utf8_len(p + i)) == 0)
				return 1;
			i += u;
			continue;
		}
		if (p[i] == '"')
			quoted = !quoted;
		else if (p[i] == '\\' && quoted && p[i + 1] != '\0')
			i++;
		i++;
	}
	return 0;
}

/* has_8bit - any octet above 127 */
static int
has_8bit(const char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s >= 0x80)
			return 1;
	return 0;
}

/* parse_params - "KEY[=VALUE]" words separated by single spaces */
static int
parse_params(const char *s, struct smtp_path *path)
{
	const char *end, *eq;
	int i;

	while (*s == ' ')
		s++;
	while (*s != '\0') {
		if (path->nparams == SMTP_MAXPARAMS)
			return -1;
		end = s + strcspn(s, " ");
		eq = memchr(s, '=', (size_t)(end - s));
		if (!isalnum((unsigned char)s[0]))
			return -1;
		for (i = 0; s + i < (eq ? eq : end); i++)
			if (!isalnum((unsigned char)s[i]) && s[i] != '-')
				return -1;
		if (eq != NULL && (eq + 1 == end || memchr(eq + 1, '=',
		    (size_t)(end - eq - 1)) != NULL))
			return -1;
		path->params[path->nparams].key = xstrndup(s,
		    (size_t)((eq ? eq : end) - s));
		for (i = 0; path->params[path->nparams].key[i]; i++)
			path->params[path->nparams].key[i] = (char)toupper(
			    (unsigned char)path->params[path->nparams].key[i]);
		path->params[path->nparams].value = eq ?
		    xstrndup(eq + 1, (size_t)(end - eq - 1)) : NULL;
		for (i = 0; i < path->nparams; i++)
			if (strcmp(path->params[i].key,
			    path->params[path->nparams].key) == 0) {
				path->nparams++;
				return -1;
			}
		path->nparams++;
		while (*end == ' ')
			end++;
		s = end;
	}
	return 0;
}

int
smtp_parse_path(const char *arg, const char *prefix, int allow_null,
    const struct smtp_limits *lim, struct smtp_path *path, const char **why)
{
	size_t plen = strlen(prefix), taken = 0;
	const char *s;
	int i, isfrom = strcasecmp(prefix, "FROM:") == 0;
	static const char *bad_from = "501 5.1.7 Bad sender address syntax";
	static const char *bad_to = "501 5.1.3 Bad recipient address syntax";
	const char *detail = NULL;

	memset(path, 0, sizeof(*path));
	*why = isfrom ? bad_from : bad_to;
	if (strncasecmp(arg, prefix, plen) != 0) {
		*why = isfrom ? "501 5.5.4 Syntax: MAIL FROM:<address>" :
		    "501 5.5.4 Syntax: RCPT TO:<address>";
		return -1;
	}
	s = arg + plen;
	while (*s == ' ')	/* "FROM: <a>" is common and harmless */
		s++;
	if (bad_utf8(s)) {
		*why = "553 5.6.7 Address is not valid UTF-8 or holds a "
		    "control character";
		return -1;
	}
	if (*s++ != '<')
		goto bad;
	if (*s == '>') {
		if (!allow_null)
			goto bad;
		path->addr = xstrdup("");
	} else if (parse_mailbox(s, lim, path, &taken, &detail) == -1)
		goto bad;
	s += taken;
	if (*s++ != '>')
		goto bad;
	if (*s != '\0' && *s != ' ')
		goto bad;
	if (parse_params(s, path) == -1) {
		*why = "555 5.5.4 Malformed parameters";
		goto fail;
	}
	for (i = 0; i < path->nparams; i++)
		if (path->params[i].value != NULL &&
		    has_8bit(path->params[i].value)) {
			*why = "555 5.5.4 Malformed parameters";
			goto fail;
		}
	if (!lim->utf8 && has_8bit(path->addr) &&
	    smtp_path_param(path, "SMTPUTF8") == NULL) {
		*why = "553 5.6.7 Non-ASCII address requires SMTPUTF8";
		goto fail;
	}
	return 0;
bad:
	if (detail != NULL)
		*why = isfrom ? "501 5.1.7 Sender address too long" :
		    "501 5.1.3 Recipient address too long";
fail:
	smtp_path_free(path);
	return -1;
}

void
smtp_path_free(struct smtp_path *path)
{
	int i;

	free(path->addr);
	for (i = 0; i < path->nparams; i++) {
		free(path->params[i].key);
		free(path->params[i].value);
	}
	memset(path, 0, sizeof(*path));
}

/* smtp_path_param - the parameter KEY: its value, "" if valueless, NULL */
const char *
smtp_path_param(const struct smtp_path *path, const char *key)
{
	int i;

	for (i = 0; i < path->nparams; i++)
		if (strcmp(path->params[i].key, key) == 0)
			return path->params[i].value ? path->params[i].value :
			    "";
	return NULL;
}

int
smtp_xtext_valid(const char *s)
{
	for (; *s != '\0'; s++) {
		if (*s == '+') {
			if (!isxdigit((unsigned char)s[1]) ||
			    !isxdigit((unsigned char)s[2]) ||
			    islower((unsigned char)s[1]) ||
			    islower((unsigned char)s[2]))
				return -1;
			s += 2;
		} else if (*s < 33 || *s > 126 || *s == '=')
			return -1;
	}
	return 0;
}

static int
hexval(int c)
{
	return isdigit(c) ? c - '0' : toupper(c) - 'A' + 10;
}

/*
 * smtp_xtext_printable - s is xtext (RFC 3461 4) whose decoded text is
 * printable US-ASCII (graphic characters and the space) and at most max
 * octets: what 4.2 and 4.4 ask of ORCPT's address and of ENVID.  Without
 * it a "+0D+0A" would come out of the decoder as a line break in a DSN.
 */
int
smtp_xtext_printable(const char *s, size_t max)
{
	size_t n = 0;
	int c;

	if (smtp_xtext_valid(s) == -1)
		return -1;
	for (; *s != '\0'; s++, n++) {
		c = (unsigned char)*s;
		if (*s == '+') {
			c = hexval((unsigned char)s[1]) * 16 +
			    hexval((unsigned char)s[2]);
			s += 2;
		}
		if (c < 32 || c > 126 || n >= max)
			return -1;
	}
	return 0;
}

/*
 * smtp_orcpt_valid - an ORCPT value, "addr-type;xtext": the type an atom,
 * the decoded address printable US-ASCII, not empty, at most max octets
 * (RFC 3461 4.2)
 */
int
smtp_orcpt_valid(const char *v, size_t max)
{
	const char *semi;
	const char *p;

	if (v == NULL || (semi = strchr(v, ';')) == NULL || semi == v ||
	    semi[1] == '\0')
		return -1;
	for (p = v; p < semi; p++)
		if (!is_atext((unsigned char)*p))
			return -1;
	return smtp_xtext_printable(semi + 1, max);
}

int
smtp_xtext_decode(const char *s, char *out, size_t outsz)
{
	size_t n = 0;

	if (smtp_xtext_valid(s) == -1 || outsz == 0)
		return -1;
	for (; *s != '\0'; s++) {
		if (n + 1 >= outsz)
			return -1;
		if (*s == '+') {
			out[n++] = (char)(hexval((unsigned char)s[1]) * 16 +
			    hexval((unsigned char)s[2]));
			s += 2;
		} else
			out[n++] = *s;
	}
	out[n] = '\0';
	return 0;
}

/* ---------------------------------------------------------------- trace */

const char *
smtp_date(time_t t, char *out, size_t len)
{
	struct tm tm;

	localtime_r(&t, &tm);
	if (strftime(out, len, "%a, %d %b %Y %H:%M:%S %z", &tm) == 0 &&
	    len > 0)
		out[0] = '\0';
	return out;
}

/*
 * smtp_received - the box's Received: field, the one builder of it: the
 * session writes it at the top of every message on the MTA path, the MTA
 * only for a message that arrives without it.  The with-protocol is RFC
 * 3848's (ESMTP, S for TLS, A for AUTH; UTF8SMTP of RFC 6531).
 */
void
smtp_received(struct buf *b, const struct smtp_trace *t)
{
	char date[64], lit[INET6_ADDRSTRLEN + 8];
	const char *with;

	if (t->smtputf8)
		with = t->tls ? (t->auth ? "UTF8SMTPSA" : "UTF8SMTPS") :
		    (t->auth ? "UTF8SMTPA" : "UTF8SMTP");
	else
		with = t->tls ? (t->auth ? "ESMTPSA" : "ESMTPS") :
		    (t->auth ? "ESMTPA" : "ESMTP");
	/* RFC 5321 4.1.3: an address literal, "IPv6:" before an IPv6 one;
	 * it also stands in for a missing HELO name */
	snprintf(lit, sizeof(lit), "[%s%s]", strchr(t->ip, ':') != NULL ?
	    "IPv6:" : "", t->ip);
	buf_printf(b, "Received: from %s (%s)\r\n\tby %s (mxbridge) with "
	    "%s id %s\r\n", t->helo != NULL && *t->helo != '\0' ? t->helo :
	    lit, lit, t->by, with, t->id);
	if (t->tls != NULL)
		buf_printf(b, "\t(using %s)\r\n", t->tls);
	/* the date always ends a folded line: column 0 would start a header */
	if (t->rcpt != NULL)
		buf_printf(b, "\tfor <%s>", t->rcpt);
	else
		buf_puts(b, "\t");
	buf_printf(b, "; %s\r\n", smtp_date(t->when, date, sizeof(date)));
}
