/*
 * smtp.h - the SMTP line codec shared by every module: reading CRLF lines
 * with a length limit, parsing (multi-line) replies, the DATA terminator
 * and dot-(un)stuffing, and the strict syntax of paths and ESMTP
 * parameters.  No I/O here: callers feed bytes in and get lines out.
 *
 * Line reader
 *	struct smtp_reader r;
 *	smtp_reader_init(&r, 512);
 *	smtp_reader_feed(&r, bytes, n);		  // from a read callback
 *	while ((rc = smtp_reader_getline(&r, &l)) != SMTP_LINE_NONE)
 *		...				  // l.data/l.len, l.flags
 *	smtp_reader_free(&r);
 *    A line ends at LF.  l.data excludes the terminator, l.flags says
 *    whether it was CRLF or a bare LF and whether the line holds a bare CR
 *    or a NUL.  A line longer than the limit (terminator excluded) is not
 *    buffered: the reader drops its bytes as they arrive and returns
 *    SMTP_LINE_TOOLONG once, when its LF is finally seen, so the caller
 *    can answer it in its place in a pipelined stream.  Memory per reader
 *    is therefore the limit plus one fed chunk.
 *
 * Reply parser
 *	struct smtp_replyparser p;
 *	smtp_reply_init(&p, 512, 100);
 *	smtp_reply_feed(&p, bytes, n);
 *	while ((rc = smtp_reply_get(&p, &reply)) == 1)
 *		...				  // reply.code, reply.lines
 *	if (rc == -1) ...			  // protocol error: give up
 *    Each reply line must be "DDD", "DDD text" or "DDD-text" with CRLF,
 *    the same code on every line, no NUL, no bare CR or LF, at most the
 *    line limit long, at most the line count.  Anything else is -1 and
 *    the parser stays failed.
 *
 * DATA
 *	struct smtp_data d;
 *	smtp_data_init(&d);
 *	then for each line from the reader: smtp_data_line(&d, &l, &out, &n)
 *    returns 1 at the terminator (only the byte sequence CRLF "." CRLF),
 *    0 for a content line, un-stuffed in out/n.  Anomalies accumulate in
 *    d.flags; a line that carries one is still consumed, so the caller
 *    can refuse the message at the terminator and stay in step.
 *	smtp_dot_stuff(buf, line, len) appends one content line for the wire.
 *
 * DATA in runs (the fast path of a relay or a spool writer)
 *	while ((st = smtp_data_span(&r, &d, stuffed, &p, &n)) !=
 *	    SMTP_DATA_MORE) {
 *		if (st == SMTP_DATA_END) ...	  // terminator consumed
 *		else if (d.flags & ...) ...	  // refuse; p/n is empty
 *		else ...			  // forward p/n as it is
 *	}
 *    Reads the reader's buffer in place, with the same checks and counts
 *    as smtp_reader_getline + smtp_data_line, and returns runs of whole
 *    CRLF lines that need no rewriting: stuffed=1 gives the wire form
 *    (dot-stuffing kept; only the dot of a ".x" line the client did not
 *    stuff is dropped), stuffed=0 the un-stuffed content.  A run never
 *    holds a byte of a line with an anomaly: such a line comes back
 *    alone as an empty run once d.flags records it.  The run stays valid
 *    until the next smtp_reader_feed (it is already consumed).
 */
#ifndef MXB_SMTP_H
#define MXB_SMTP_H
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "buf.h"

/* smtp_line.flags */
#define SMTP_LF_CRLF	0x01	/* ended with CRLF (else a bare LF) */
#define SMTP_LF_BARECR	0x02	/* a CR not followed by LF inside the line */
#define SMTP_LF_NUL	0x04	/* a NUL inside the line */
#define SMTP_LF_TOOLONG	0x08	/* over the limit: data is empty */
#define SMTP_LF_BARELF	0x10	/* (smtp_data only) some line ended in bare LF */

/* the anomalies that make a line unacceptable on the wire */
#define SMTP_LF_BAD	(SMTP_LF_BARECR | SMTP_LF_NUL | SMTP_LF_BARELF)

enum smtp_line_status {
	SMTP_LINE_NONE = 0,	/* no complete line buffered */
	SMTP_LINE_OK,		/* a line within the limit */
	SMTP_LINE_TOOLONG	/* an over-long line ended; its bytes are gone */
};

struct smtp_line {
	const char	*data;		/* valid until the next reader call */
	size_t		 len;		/* terminator excluded */
	int		 flags;
};

struct smtp_reader {
	struct buf	 in;
	size_t		 max;		/* longest line, terminator excluded */
	size_t		 scanned;	/* bytes of the head line known LF-free */
	int		 skipping;	/* dropping the rest of a long line */
	int		 skipflags;	/* anomalies seen in the dropped part */
};

void	smtp_reader_init(struct smtp_reader *, size_t max);
void	smtp_reader_free(struct smtp_reader *);
void	smtp_reader_setmax(struct smtp_reader *, size_t max);
void	smtp_reader_feed(struct smtp_reader *, const void *, size_t);
enum smtp_line_status smtp_reader_getline(struct smtp_reader *,
	    struct smtp_line *);
/* bytes buffered and not yet returned as lines */
size_t	smtp_reader_pending(const struct smtp_reader *);
/* drop everything buffered (the bytes pipelined behind STARTTLS) */
void	smtp_reader_discard(struct smtp_reader *);

/* replies */
struct smtp_reply {
	int		 code;		/* 200..599 */
	unsigned	 nlines;
	struct buf	 text;		/* every line, CRLF-terminated, as sent */
};

struct smtp_replyparser {
	struct smtp_reader r;
	unsigned	 maxlines;
	unsigned	 nlines;
	int		 code;
	int		 failed;
	const char	*error;		/* why it failed, for logs */
	struct buf	 text;
};

void	smtp_reply_init(struct smtp_replyparser *, size_t maxline,
	    unsigned maxlines);
void	smtp_reply_free(struct smtp_replyparser *);
void	smtp_reply_feed(struct smtp_replyparser *, const void *, size_t);
/* 1: *out holds a reply (caller frees with smtp_reply_clear), 0: need
 * more, -1: protocol error (p->error) */
int	smtp_reply_get(struct smtp_replyparser *, struct smtp_reply *out);
size_t	smtp_reply_pending(const struct smtp_replyparser *);
void	smtp_reply_clear(struct smtp_reply *);
/* line i (0-based) of a reply: text after "DDD-", length in *len */
const char *smtp_reply_line(const struct smtp_reply *, unsigned i,
	    size_t *len);

/*
 * What a server's 250 to EHLO offers, as every SMTP client here reads it
 * (the live relay's leg, its sink, the MTA's delivery): one parser, so
 * the three agree on what a keyword is (RFC 5321 4.1.1.1: the word up to
 * a space; "AUTH=" of old servers counts as AUTH).
 */
struct smtp_ehlo {
	int		 pipelining;
	int		 size;		/* SIZE offered */
	uint64_t	 maxsize;	/* its value; 0: no limit given */
	int		 eightbit;
	int		 dsn;
	int		 smtputf8;
	int		 enhanced;	/* ENHANCEDSTATUSCODES */
	int		 starttls;
	int		 auth;		/* AUTH, whatever its mechanisms */
	int		 auth_plain;
	int		 auth_login;
};
/* the keyword of one EHLO line (a smtp_reply_line), upper-cased into kw
 * (cut to kwsize - 1); returns its parameters, or NULL if it has none */
const char *smtp_ehlo_keyword(const char *line, size_t len, char *kw,
	    size_t kwsize, size_t *paramlen);
/* every keyword of a 250 to EHLO (line 0, the server's name, skipped) */
void	smtp_ehlo_parse(const struct smtp_reply *, struct smtp_ehlo *);

/* DATA */
struct smtp_data {
	int		 crlf;		/* previous line ended in CRLF */
	int		 flags;		/* SMTP_LF_* seen in any line */
	uint64_t	 size;		/* un-stuffed octets incl. CRLFs */
	unsigned	 lines;
	int		 body;		/* past the header's empty line */
	unsigned	 received;	/* Received: fields in the header */
};

void	smtp_data_init(struct smtp_data *);
int	smtp_data_line(struct smtp_data *, const struct smtp_line *,
	    const char **out, size_t *outlen);
enum smtp_data_status {
	SMTP_DATA_MORE = 0,	/* no complete line buffered */
	SMTP_DATA_SPAN,		/* a run of content (maybe empty) */
	SMTP_DATA_END		/* the terminator, consumed */
};

enum smtp_data_status smtp_data_span(struct smtp_reader *,
	    struct smtp_data *, int stuffed, const char **out,
	    size_t *outlen);
/* append line + CRLF with the leading dot doubled */
void	smtp_dot_stuff(struct buf *, const char *, size_t);
/* the CRLF (or LF) lines of a buffer, each with smtp_dot_stuff; with
 * last the unterminated rest too; returns the bytes not taken */
size_t	smtp_dot_stuff_lines(struct buf *, const char *, size_t, int last);
/* a description of d.flags for logs and replies: "bare CR", ... */
const char *smtp_data_anomaly(int flags);

/* commands, paths and parameters */
/* the verb of a command line, upper-cased into verb (size >= 16); returns
 * a pointer to the argument text (after one space) or to the NUL */
const char *smtp_verb(const char *line, size_t len, char *verb,
	    size_t verbsz);

struct smtp_limits {
	size_t		 localpart;	/* octets */
	size_t		 domain;
	int		 utf8;		/* allow UTF-8 (SMTPUTF8 given) */
};

#define SMTP_MAXPARAMS	8

struct smtp_param {
	char		*key;		/* upper-cased */
	char		*value;		/* NULL if "KEY" alone */
};

/* a parsed "FROM:<path> params" / "TO:<path> params" argument */
struct smtp_path {
	char		*addr;		/* "" for <>; no brackets */
	char		*domain;	/* points into addr, or NULL */
	struct smtp_param params[SMTP_MAXPARAMS];
	int		 nparams;
};

/*
 * smtp_parse_path - parse what follows "MAIL " or "RCPT " (prefix is
 * "FROM:" or "TO:").  Strict RFC 5321: angle brackets, no spaces inside,
 * source routes are dropped, local-part dot-string or quoted-string,
 * domain or address literal.  Returns 0, or -1 with *why set to a
 * reply ("501 5.1.7 ..." style status code and text, no CRLF).  Free with
 * smtp_path_free.
 */
int	smtp_parse_path(const char *arg, const char *prefix, int allow_null,
	    const struct smtp_limits *, struct smtp_path *, const char **why);
void	smtp_path_free(struct smtp_path *);
const char *smtp_path_param(const struct smtp_path *, const char *key);

/* xtext (RFC 3461) check and decode; -1 on bad syntax */
int	smtp_xtext_valid(const char *);
int	smtp_xtext_decode(const char *, char *out, size_t outsz);
/* 0 if xtext decoding to at most max octets of printable US-ASCII */
int	smtp_xtext_printable(const char *, size_t max);
/* 0 if "addr-type;xtext" with a printable decoded address (ORCPT) */
int	smtp_orcpt_valid(const char *, size_t max);
/* the RFC 5321 Local-part at s, UTF-8 (RFC 6531) where utf8: bytes
 * taken, or 0; the Domain (LDH labels, U-labels where utf8) likewise */
size_t	smtp_local_part(const char *, int utf8);
size_t	smtp_domain_name(const char *, int utf8);
/* one well-formed, non-control UTF-8 sequence at s (RFC 3629): its
 * length, or 0 */
size_t	smtp_utf8_len(const char *);

/* trace fields */
/* the facts of this box's Received: field (RFC 5321 4.4) */
struct smtp_trace {
	const char	*helo;		/* as given, or NULL: the ip stands in */
	const char	*ip;		/* the client's, for the brackets */
	const char	*by;		/* this box's name */
	const char	*id;		/* the id that finds it in our logs */
	const char	*tls;		/* "TLSv1.3:cipher", or NULL */
	const char	*rcpt;		/* the one recipient, or NULL */
	int		 smtputf8;
	int		 auth;		/* the client authenticated */
	time_t		 when;
};
/* append the Received: field, CRLF ended, to b */
void	smtp_received(struct buf *, const struct smtp_trace *);
/* RFC 5322 date-time in the local zone, into out */
const char *smtp_date(time_t, char *out, size_t len);

#endif
