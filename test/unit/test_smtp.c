/*
 * test_smtp.c - unit tests of common/smtp.c: the bounded line reader
 * (split reads, over-long lines dropped without buffering, bare CR / bare
 * LF / NUL flags), the reply parser (multi-line, limits, malformed input),
 * the DATA terminator (the smuggling battery: only CRLF "." CRLF ends
 * DATA), dot-stuffing round trips, the run reader of DATA against the
 * line reader (randomised), the strict path and parameter syntax
 * (UTF-8 as RFC 3629 has it, no C1 controls; ORCPT and ENVID printable
 * once decoded), the escaping of outside values for log lines
 * (common/log.c), the one FNV-1a (common/hash.c) and the one builder of
 * the box's Received: field.  Table-driven: a failing row names itself.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../common/buf.h"
#include "../../common/hash.h"
#include "../../common/log.h"
#include "../../common/smtp.h"

#define N(a)	(sizeof(a) / sizeof((a)[0]))
#define UNUSED	__attribute__((unused))

/* ------------------------------------------------------------ reader */

static void
test_reader_basic(void **state UNUSED)
{
	struct smtp_reader r;
	struct smtp_line l;

	smtp_reader_init(&r, 510);
	smtp_reader_feed(&r, "EHLO a\r\nMAIL FROM:<>\r\nRC", 24);
	assert_int_equal(smtp_reader_getline(&r, &l), SMTP_LINE_OK);
	assert_int_equal(l.len, 6);
	assert_memory_equal(l.data, "EHLO a", 6);
	assert_int_equal(l.flags, SMTP_LF_CRLF);
	assert_int_equal(smtp_reader_getline(&r, &l), SMTP_LINE_OK);
	assert_string_equal(l.data, "MAIL FROM:<>");
	assert_int_equal(smtp_reader_getline(&r, &l), SMTP_LINE_NONE);
	assert_int_equal(smtp_reader_pending(&r), 2);
	/* the CR and LF in separate reads */
	smtp_reader_feed(&r, "PT TO:<a@b>\r", 12);
	assert_int_equal(smtp_reader_getline(&r, &l), SMTP_LINE_NONE);
	smtp_reader_feed(&r, "\n", 1);
	assert_int_equal(smtp_reader_getline(&r, &l), SMTP_LINE_OK);
	assert_string_equal(l.data, "RCPT TO:<a@b>");
	assert_int_equal(l.flags, SMTP_LF_CRLF);
	/* an empty line */
	smtp_reader_feed(&r, "\r\n", 2);
	assert_int_equal(smtp_reader_getline(&r, &l), SMTP_LINE_OK);
	assert_int_equal(l.len, 0);
	smtp_reader_free(&r);
}

static void
test_reader_flags(void **state UNUSED)
{
	static const struct {
		const char	*in;
		size_t		 len;
		size_t		 outlen;
		int		 flags;
	} rows[] = {
		{ "abc\r\n", 5, 3, SMTP_LF_CRLF },
		{ "abc\n", 4, 3, 0 },
		{ "a\rbc\r\n", 6, 4, SMTP_LF_CRLF | SMTP_LF_BARECR },
		{ "a\rb\n", 4, 3, SMTP_LF_BARECR },
		{ "a\0b\r\n", 5, 3, SMTP_LF_CRLF | SMTP_LF_NUL },
		{ "\r\r\n", 3, 1, SMTP_LF_CRLF | SMTP_LF_BARECR },
		{ ".\r\n", 3, 1, SMTP_LF_CRLF },
		{ "\n", 1, 0, 0 },
	};
	struct smtp_reader r;
	struct smtp_line l;
	size_t i;

	for (i = 0; i < N(rows); i++) {
		smtp_reader_init(&r, 100);
		smtp_reader_feed(&r, rows[i].in, rows[i].len);
		if (smtp_reader_getline(&r, &l) != SMTP_LINE_OK ||
		    l.len != rows[i].outlen || l.flags != rows[i].flags)
			fail_msg("row %zu: len %zu flags %#x", i, l.len, l.flags);
		smtp_reader_free(&r);
	}
}

/* an over-long line is dropped as it arrives and reported once, in place */
static void
test_reader_toolong(void **state UNUSED)
{
	struct smtp_reader r;
	struct smtp_line l;
	char chunk[4096];
	int i;

	memset(chunk, 'x', sizeof(chunk));
	smtp_reader_init(&r, 510);
	smtp_reader_feed(&r, "NOOP\r\n", 6);
	for (i = 0; i < 1000; i++) {
		smtp_reader_feed(&r, chunk, sizeof(chunk));
		if (i == 0)
			assert_int_equal(smtp_reader_getline(&r, &l),
			    SMTP_LINE_OK);
		assert_int_equal(smtp_reader_getline(&r, &l), SMTP_LINE_NONE);
		/* never more than the limit plus one chunk held */
		assert_true(r.in.cap <= 2 * (510 + sizeof(chunk)));
	}
	smtp_reader_feed(&r, "yyy\r\nQUIT\r\n", 11);
	assert_int_equal(smtp_reader_getline(&r, &l), SMTP_LINE_TOOLONG);
	assert_int_equal(l.len, 0);
	assert_true(l.flags & SMTP_LF_TOOLONG);
	assert_true(l.flags & SMTP_LF_CRLF);
	assert_int_equal(smtp_reader_getline(&r, &l), SMTP_LINE_OK);
	assert_string_equal(l.data, "QUIT");
	smtp_reader_free(&r);

	/* exactly the limit is fine, one more is not; CR split from LF */
	smtp_reader_init(&r, 4);
	smtp_reader_feed(&r, "abcd\r", 5);
	assert_int_equal(smtp_reader_getline(&r, &l), SMTP_LINE_NONE);
	smtp_reader_feed(&r, "\nabcde\r\n", 8);
	assert_int_equal(smtp_reader_getline(&r, &l), SMTP_LINE_OK);
	assert_string_equal(l.data, "abcd");
	assert_int_equal(smtp_reader_getline(&r, &l), SMTP_LINE_TOOLONG);
	/* a long line whose CR ends one read and LF starts the next */
	smtp_reader_feed(&r, "abcdefgh\r", 9);
	assert_int_equal(smtp_reader_getline(&r, &l), SMTP_LINE_NONE);
	smtp_reader_feed(&r, "\nok\n", 4);
	assert_int_equal(smtp_reader_getline(&r, &l), SMTP_LINE_TOOLONG);
	assert_true(l.flags & SMTP_LF_CRLF);
	assert_int_equal(smtp_reader_getline(&r, &l), SMTP_LINE_OK);
	assert_string_equal(l.data, "ok");
	assert_false(l.flags & SMTP_LF_CRLF);
	smtp_reader_free(&r);
}

static void
test_reader_discard(void **state UNUSED)
{
	struct smtp_reader r;
	struct smtp_line l;

	smtp_reader_init(&r, 100);
	smtp_reader_feed(&r, "STARTTLS\r\nMAIL FROM:<evil>\r\n", 28);
	assert_int_equal(smtp_reader_getline(&r, &l), SMTP_LINE_OK);
	assert_string_equal(l.data, "STARTTLS");
	assert_int_equal(smtp_reader_pending(&r), 18);
	smtp_reader_discard(&r);
	assert_int_equal(smtp_reader_pending(&r), 0);
	assert_int_equal(smtp_reader_getline(&r, &l), SMTP_LINE_NONE);
	smtp_reader_free(&r);
}

/* byte by byte gives the same lines as all at once */
static void
test_reader_bytewise(void **state UNUSED)
{
	static const char in[] = "A\r\nBB\nC\rC\r\n\r\nD\0D\r\n";
	struct smtp_reader r;
	struct smtp_line l;
	char got[256];
	size_t i, n = 0;

	smtp_reader_init(&r, 100);
	for (i = 0; i < sizeof(in) - 1; i++) {
		smtp_reader_feed(&r, in + i, 1);
		while (smtp_reader_getline(&r, &l) == SMTP_LINE_OK)
			n += (size_t)snprintf(got + n, sizeof(got) - n,
			    "[%zu:%d]", l.len, l.flags);
	}
	assert_string_equal(got, "[1:1][2:0][3:3][0:1][3:5]");
	smtp_reader_free(&r);
}

/* ------------------------------------------------------------ replies */

static int
parse_one(const char *in, size_t maxlines, struct smtp_reply *rep,
    const char **err)
{
	struct smtp_replyparser p;
	int rc;

	smtp_reply_init(&p, 512, (unsigned)maxlines);
	smtp_reply_feed(&p, in, strlen(in));
	rc = smtp_reply_get(&p, rep);
	*err = p.error;
	smtp_reply_free(&p);
	return rc;
}

static void
test_reply_good(void **state UNUSED)
{
	struct smtp_reply rep;
	const char *err, *s;
	size_t len;

	assert_int_equal(parse_one("250-mx.example ESMTP\r\n250-SIZE 10\r\n"
	    "250 PIPELINING\r\n", 10, &rep, &err), 1);
	assert_int_equal(rep.code, 250);
	assert_int_equal(rep.nlines, 3);
	s = smtp_reply_line(&rep, 0, &len);
	assert_int_equal(len, 16);
	assert_memory_equal(s, "mx.example ESMTP", 16);
	s = smtp_reply_line(&rep, 2, &len);
	assert_memory_equal(s, "PIPELINING", len);
	assert_null(smtp_reply_line(&rep, 3, &len));
	smtp_reply_clear(&rep);

	assert_int_equal(parse_one("354\r\n", 10, &rep, &err), 1);
	assert_int_equal(rep.code, 354);
	s = smtp_reply_line(&rep, 0, &len);
	assert_int_equal(len, 0);
	smtp_reply_clear(&rep);

	/* incomplete: needs more */
	assert_int_equal(parse_one("250-a\r\n250 b", 10, &rep, &err), 0);
}

/* the one EHLO parser every SMTP client here uses */
static void
test_ehlo_parse(void **state UNUSED)
{
	struct smtp_reply rep;
	struct smtp_ehlo e;
	const char *err, *par;
	char kw[16];
	size_t plen;

	assert_int_equal(parse_one("250-mx.example PIPELINING SIZE\r\n"
	    "250-size 35882577\r\n250-8bitmime\r\n250-AUTH=LOGIN\r\n"
	    "250-AUTH XPLAINX CRAM-MD5\r\n250-ENHANCEDSTATUSCODES\r\n"
	    "250-DSN\r\n250 STARTTLS\r\n", 20, &rep, &err), 1);
	smtp_ehlo_parse(&rep, &e);
	/* the server's name on line 0 is not a keyword */
	assert_int_equal(e.pipelining, 0);
	assert_int_equal(e.size, 1);
	assert_true(e.maxsize == 35882577);
	assert_int_equal(e.eightbit, 1);
	assert_int_equal(e.enhanced, 1);
	assert_int_equal(e.dsn, 1);
	assert_int_equal(e.starttls, 1);
	assert_int_equal(e.smtputf8, 0);
	/* "AUTH=LOGIN" of old servers is AUTH; a mechanism is a whole word */
	assert_int_equal(e.auth, 1);
	assert_int_equal(e.auth_login, 1);
	assert_int_equal(e.auth_plain, 0);
	smtp_reply_clear(&rep);

	assert_int_equal(parse_one("250-mx\r\n250-SIZE\r\n"
	    "250-SIZE99 1\r\n250 AUTH PLAIN\r\n", 20, &rep, &err), 1);
	smtp_ehlo_parse(&rep, &e);
	assert_int_equal(e.size, 1);
	assert_true(e.maxsize == 0);	/* SIZE without a limit */
	assert_int_equal(e.auth_plain, 1);
	assert_int_equal(e.pipelining, 0);
	smtp_reply_clear(&rep);

	/* a keyword longer than kw is cut, never overflows */
	par = smtp_ehlo_keyword("X-VERY-LONG-KEYWORD a b", 23, kw,
	    sizeof(kw), &plen);
	assert_string_equal(kw, "X-VERY-LONG-KEY");
	assert_non_null(par);
	assert_int_equal(plen, 3);
	assert_memory_equal(par, "a b", 3);
	assert_null(smtp_ehlo_keyword("dsn", 3, kw, sizeof(kw), &plen));
	assert_string_equal(kw, "DSN");
}

static void
test_reply_bad(void **state UNUSED)
{
	static const char *rows[] = {
		"250 ok\n",			/* bare LF */
		"250 o\rk\r\n",			/* bare CR */
		"25\r\n",			/* short */
		"2500 ok\r\n",			/* no separator */
		"abc ok\r\n",
		"150 ok\r\n",			/* not an SMTP code */
		"650 ok\r\n",
		"250-a\r\n251 b\r\n",		/* code changes */
		"250-a\r\n250-b\r\n250-c\r\n250-d\r\n250 e\r\n", /* > 4 */
	};
	struct smtp_reply rep;
	const char *err;
	char nul[] = "250 a\0b\r\n", *big;
	struct smtp_replyparser p;
	size_t i;

	for (i = 0; i < N(rows); i++)
		if (parse_one(rows[i], 4, &rep, &err) != -1)
			fail_msg("row %zu accepted", i);
	smtp_reply_init(&p, 512, 4);
	smtp_reply_feed(&p, nul, sizeof(nul) - 1);
	assert_int_equal(smtp_reply_get(&p, &rep), -1);
	assert_string_equal(p.error, "NUL in reply");
	/* once failed, always failed */
	smtp_reply_feed(&p, "250 ok\r\n", 8);
	assert_int_equal(smtp_reply_get(&p, &rep), -1);
	smtp_reply_free(&p);
	(void)rep;
	/* a line over 512 octets with its CRLF */
	big = malloc(600);
	memset(big, 'x', 600);
	memcpy(big, "250 ", 4);
	memcpy(big + 509, "\r\n", 3);	/* 511 octets: fine */
	assert_int_equal(parse_one(big, 4, &rep, &err), 1);
	smtp_reply_clear(&rep);
	big[509] = big[510] = 'x';
	memcpy(big + 511, "\r\n", 3);	/* 513: too long */
	assert_int_equal(parse_one(big, 4, &rep, &err), -1);
	assert_string_equal(err, "reply line too long");
	free(big);
}

/* thousands of continuation lines never grow memory past the limit */
static void
test_reply_flood(void **state UNUSED)
{
	struct smtp_replyparser p;
	struct smtp_reply rep;
	int i, rc = 0;

	smtp_reply_init(&p, 512, 100);
	for (i = 0; i < 10000 && rc == 0; i++) {
		smtp_reply_feed(&p, "250-more\r\n", 10);
		rc = smtp_reply_get(&p, &rep);
	}
	assert_int_equal(rc, -1);
	assert_int_equal(i, 101);
	assert_string_equal(p.error, "too many reply lines");
	smtp_reply_free(&p);
}

/* ------------------------------------------------------------ DATA */

/*
 * run_data - feed a DATA stream; return the un-stuffed content up to the
 * terminator, *ended, the rest left in the reader and the flags.
 */
static char *
run_data(const char *in, size_t len, int *ended, size_t *rest, int *flags)
{
	struct smtp_reader r;
	struct smtp_data d;
	struct smtp_line l;
	struct buf out;
	const char *p;
	size_t n;
	char *res;

	smtp_reader_init(&r, 998);
	smtp_data_init(&d);
	buf_init(&out);
	*ended = 0;
	smtp_reader_feed(&r, in, len);
	while (smtp_reader_getline(&r, &l) != SMTP_LINE_NONE) {
		if (smtp_data_line(&d, &l, &p, &n) == 1) {
			*ended = 1;
			break;
		}
		buf_append(&out, p, n);
		buf_append(&out, "\r\n", 2);
	}
	*rest = smtp_reader_pending(&r);
	*flags = d.flags;
	for (n = 0; n < out.len; n++)
		if (out.data[n] == '\0')
			out.data[n] = '@';	/* keep NUL lines comparable */
	buf_append(&out, "", 1);
	res = strdup(out.data ? out.data : "");
	buf_free(&out);
	smtp_reader_free(&r);
	return res;
}

/* the smuggling battery: none of these end DATA before the real end */
static void
test_data_smuggling(void **state UNUSED)
{
	static const struct {
		const char	*name;
		const char	*end;
		size_t		 len;
		int		 flag;
	} rows[] = {
		{ "\\n.\\n", "\n.\n", 3, SMTP_LF_BARELF },
		{ "\\r.\\r", "\r.\r", 3, SMTP_LF_BARECR },
		{ "\\r.\\n", "\r.\n", 3, SMTP_LF_BARECR },
		{ "\\n.\\r", "\n.\r", 3, SMTP_LF_BARELF },
		{ "\\n.\\r\\n", "\n.\r\n", 4, SMTP_LF_BARELF },
		{ "\\r\\n.\\n", "\r\n.\n", 4, SMTP_LF_BARELF },
		{ "\\r.\\r\\n", "\r.\r\n", 4, SMTP_LF_BARECR },
		{ "\\r\\n.\\r", "\r\n.\r", 4, SMTP_LF_BARECR },
		{ "\\r\\n\\0.\\r\\n", "\r\n\0.\r\n", 6, SMTP_LF_NUL },
	};
	static const char smuggle[] = "MAIL FROM:<evil@x>\r\nRCPT TO:<v@y>\r\n"
	    "DATA\r\nsmuggled\r\n";
	char in[512];
	size_t i, n, rest;
	int ended, flags;
	char *out;

	for (i = 0; i < N(rows); i++) {
		n = 0;
		memcpy(in + n, "Subject: t\r\n\r\nbody", 18);
		n += 18;
		memcpy(in + n, rows[i].end, rows[i].len);
		n += rows[i].len;
		memcpy(in + n, smuggle, sizeof(smuggle) - 1);
		n += sizeof(smuggle) - 1;
		memcpy(in + n, ".\r\nQUIT\r\n", 9);
		n += 9;
		out = run_data(in, n, &ended, &rest, &flags);
		if (!ended || rest != 6)
			fail_msg("%s: ended %d rest %zu", rows[i].name, ended,
			    rest);
		if (!(flags & rows[i].flag))
			fail_msg("%s: flags %#x", rows[i].name, flags);
		/* the smuggled commands are content, never commands */
		if (strstr(out, "MAIL FROM:<evil@x>") == NULL)
			fail_msg("%s: smuggled text lost", rows[i].name);
		free(out);
	}
}

static void
test_data_terminator(void **state UNUSED)
{
	static const struct {
		const char	*in;
		int		 ended;
		const char	*content;
	} rows[] = {
		{ ".\r\n", 1, "" },
		{ "a\r\n.\r\n", 1, "a\r\n" },
		{ "..\r\n.\r\n", 1, ".\r\n" },
		{ "..a\r\n.b\r\n.\r\n", 1, ".a\r\nb\r\n" },
		{ ". \r\n.\r\n", 1, " \r\n" },
		{ "a\r\n.", 0, "a\r\n" },
		{ "a\r\n.\r", 0, "a\r\n" },
		{ "a\r\n.\n", 0, "a\r\n\r\n" },
	};
	size_t i, rest;
	int ended, flags;
	char *out;

	for (i = 0; i < N(rows); i++) {
		out = run_data(rows[i].in, strlen(rows[i].in), &ended, &rest,
		    &flags);
		if (ended != rows[i].ended || strcmp(out, rows[i].content) != 0)
			fail_msg("row %zu: ended %d content '%s'", i, ended, out);
		free(out);
	}
}

static void
test_data_toolong(void **state UNUSED)
{
	char in[3000];
	size_t rest;
	int ended, flags;
	char *out;

	memset(in, 'x', 2000);
	memcpy(in + 2000, "\r\n.\r\n", 6);
	out = run_data(in, 2005, &ended, &rest, &flags);
	assert_int_equal(ended, 1);
	assert_true(flags & SMTP_LF_TOOLONG);
	free(out);
	/* an over-long "." line is no terminator */
	memset(in, '.', 2000);
	memcpy(in + 2000, "\r\nx\r\n.\r\n", 9);
	out = run_data(in, 2008, &ended, &rest, &flags);
	assert_int_equal(ended, 1);
	assert_string_equal(out, "\r\nx\r\n");
	free(out);
}

/* stuffing then un-stuffing gives the content back */
static void
test_dot_stuff(void **state UNUSED)
{
	static const char *lines[] = { ".", "..", ".a", "a.", "", "x", "..." };
	struct buf wire;
	size_t i, rest;
	int ended, flags;
	char *out, want[128] = "";

	buf_init(&wire);
	for (i = 0; i < N(lines); i++) {
		smtp_dot_stuff(&wire, lines[i], strlen(lines[i]));
		strcat(want, lines[i]);
		strcat(want, "\r\n");
	}
	assert_memory_equal(wire.data, "..\r\n...\r\n..a\r\na.\r\n\r\nx\r\n"
	    "....\r\n", wire.len);
	buf_append(&wire, ".\r\n", 3);
	out = run_data(wire.data, wire.len, &ended, &rest, &flags);
	assert_int_equal(ended, 1);
	assert_string_equal(out, want);
	assert_int_equal(flags, 0);
	free(out);
	buf_free(&wire);
}

/*
 * data_ref - the line-by-line reference of smtp_data_span: what the
 * relay (stuffed=1) or the spool (0) got from the clean lines, the
 * counts, and whether and where the terminator came
 */
struct data_res {
	struct buf	 out;
	struct smtp_data d;
	int		 ended;
	size_t		 rest;
};

/* ref_drain - what the reader holds, line by line; 1 at the terminator */
static int
ref_drain(struct smtp_reader *r, int stuffed, struct data_res *res)
{
	struct smtp_line l;
	const char *p;
	size_t n;
	int before;

	while (smtp_reader_getline(r, &l) != SMTP_LINE_NONE) {
		before = res->d.flags;
		res->d.flags = 0;
		if (smtp_data_line(&res->d, &l, &p, &n) == 1) {
			res->d.flags = before;
			return 1;
		}
		if (res->d.flags == 0) {
			if (stuffed)
				smtp_dot_stuff(&res->out, p, n);
			else {
				buf_append(&res->out, p, n);
				buf_append(&res->out, "\r\n", 2);
			}
		}
		res->d.flags |= before;
	}
	return 0;
}

/* run_drain - what the reader holds, through smtp_data_span */
static int
run_drain(struct smtp_reader *r, int stuffed, struct data_res *res)
{
	enum smtp_data_status st;
	const char *p;
	size_t n;

	while ((st = smtp_data_span(r, &res->d, stuffed, &p, &n)) !=
	    SMTP_DATA_MORE) {
		if (st == SMTP_DATA_END)
			return 1;
		buf_append(&res->out, p, n);
	}
	return 0;
}

/* data_feed - in, in pieces of chunks, through drain after each piece */
static void
data_feed(const char *in, size_t len, size_t max, const size_t *chunks,
    int stuffed, struct data_res *res,
    int (*drain)(struct smtp_reader *, int, struct data_res *))
{
	struct smtp_reader r;
	size_t off = 0, i = 0, c;

	smtp_reader_init(&r, max);
	smtp_data_init(&res->d);
	buf_init(&res->out);
	res->ended = 0;
	while (off < len && !res->ended) {
		c = chunks[i++];
		if (c > len - off)
			c = len - off;
		smtp_reader_feed(&r, in + off, c);
		off += c;
		res->ended = drain(&r, stuffed, res);
	}
	res->rest = smtp_reader_pending(&r) + (len - off);
	smtp_reader_free(&r);
}

/* data_ref - the line-by-line reference */
static void
data_ref(const char *in, size_t len, size_t max, const size_t *chunks,
    int stuffed, struct data_res *res)
{
	data_feed(in, len, max, chunks, stuffed, res, ref_drain);
}

/* data_run - the same input through smtp_data_span */
static void
data_run(const char *in, size_t len, size_t max, const size_t *chunks,
    int stuffed, struct data_res *res)
{
	data_feed(in, len, max, chunks, stuffed, res, run_drain);
}

/* rnd - a small deterministic generator, so a failure can be replayed */
static unsigned
rnd(unsigned *seed)
{
	*seed = *seed * 1103515245u + 12345u;
	return (*seed >> 8) & 0xffffff;
}

/*
 * the run reader against the line reader: random content rich in dots,
 * CR, LF, NUL and long lines, fed in random pieces, in both forms
 */
static void
test_data_span(void **state UNUSED)
{
	static const char alpha[] = ".\r\n\0ab..\r\n\r\n";
	char in[600];
	size_t chunks[600], len, i, max;
	struct data_res a, b;
	unsigned seed = 12345, iter;
	int stuffed;

#define RND()	rnd(&seed)
	for (iter = 0; iter < 20000; iter++) {
		len = RND() % sizeof(in);
		for (i = 0; i < len; i++) {
			/* mostly text lines; specials dense or rare; dot
			 * lines and terminators after some CRLFs */
			if (i >= 2 && i + 3 <= len && in[i - 1] == '\n' &&
			    in[i - 2] == '\r' && RND() % 8 == 0) {
				memcpy(in + i, RND() % 2 ? ".\r\n" : "..x", 3);
				i += 2;
			} else if (RND() % (iter % 3 == 0 ? 4 : 60) == 0)
				in[i] = alpha[RND() % (sizeof(alpha) - 1)];
			else if (RND() % 12 == 0)
				in[i] = i > 0 && in[i - 1] == '\r' ?
				    '\n' : '\r';
			else
				in[i] = (char)('a' + RND() % 26);
		}
		for (i = 0; i < len; i++) {
			max = RND() % 3 == 0 ? 4 : 200;
			chunks[i] = 1 + RND() % max;
		}
		max = 4 + RND() % 60;
		stuffed = (int)(iter & 1);
		data_ref(in, len, max, chunks, stuffed, &a);
		data_run(in, len, max, chunks, stuffed, &b);
		if (a.ended != b.ended || a.rest != b.rest ||
		    a.d.flags != b.d.flags || a.d.size != b.d.size ||
		    a.d.lines != b.d.lines || a.d.crlf != b.d.crlf ||
		    a.d.body != b.d.body || a.d.received != b.d.received ||
		    a.out.len != b.out.len || (a.out.len > 0 &&
		    memcmp(a.out.data, b.out.data, a.out.len) != 0))
			fail_msg("iteration %u (len %zu, max %zu, stuffed %d): "
			    "ended %d/%d rest %zu/%zu flags %#x/%#x size "
			    "%llu/%llu lines %u/%u out %zu/%zu", iter, len, max,
			    stuffed, a.ended, b.ended, a.rest, b.rest,
			    a.d.flags, b.d.flags, (unsigned long long)a.d.size,
			    (unsigned long long)b.d.size, a.d.lines, b.d.lines,
			    a.out.len, b.out.len);
		buf_free(&a.out);
		buf_free(&b.out);
	}
#undef RND
}

/*
 * the hop count: Received: fields (any case) of the header only, through
 * both readers; the first empty line ends the header
 */
static void
test_data_hops(void **state UNUSED)
{
	static const struct {
		const char	*in;
		unsigned	 received;
		int		 body;
	} t[] = {
		{ "Received: a\r\nreceived:b\r\nRECEIVED: c\r\n\r\n"
		  "Received: in the body\r\n.\r\n", 3, 1 },
		{ "Subject: x\r\nReceived: a\r\n\tcontinued\r\n"
		  "X-Received: no\r\nReceived no colon\r\nReceived\r\n"
		  "\r\n.\r\n", 1, 1 },
		{ "\r\nReceived: body\r\n.\r\n", 0, 1 },
		{ "Received: a\r\nReceived: b\r\n.\r\n", 2, 0 },
		{ "Receive: a\r\n.Received: dot\r\n.\r\n", 0, 0 },
	};
	size_t i, all[1];
	struct data_res a, b;

	for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		all[0] = strlen(t[i].in);
		data_ref(t[i].in, strlen(t[i].in), 998, all, 0, &a);
		data_run(t[i].in, strlen(t[i].in), 998, all, 1, &b);
		if (a.d.received != t[i].received || a.d.body != t[i].body ||
		    b.d.received != t[i].received || b.d.body != t[i].body)
			fail_msg("case %zu: received %u/%u body %d/%d, want %u "
			    "%d", i, a.d.received, b.d.received, a.d.body,
			    b.d.body, t[i].received, t[i].body);
		buf_free(&a.out);
		buf_free(&b.out);
	}
}

/* ------------------------------------------------------------ paths */

static void
test_paths(void **state UNUSED)
{
	static const struct {
		const char	*arg;
		const char	*prefix;
		int		 ok;
		const char	*addr;
		const char	*reply;	/* start of *why */
	} rows[] = {
		{ "FROM:<a@b.example>", "FROM:", 1, "a@b.example", NULL },
		{ "from:<a@b.example>", "FROM:", 1, "a@b.example", NULL },
		{ "FROM: <a@b.example>", "FROM:", 1, "a@b.example", NULL },
		{ "FROM:<>", "FROM:", 1, "", NULL },
		{ "TO:<>", "TO:", 0, NULL, "501 5.1.3" },
		{ "TO:<Postmaster>", "TO:", 1, "Postmaster", NULL },
		{ "TO:<bob>", "TO:", 0, NULL, "501 5.1.3" },
		{ "FROM:a@b", "FROM:", 0, NULL, "501 5.1.7" },
		{ "FROM:<a@b", "FROM:", 0, NULL, "501 5.1.7" },
		{ "FROM:<a@b>x", "FROM:", 0, NULL, "501 5.1.7" },
		{ "FROM:<a b@c>", "FROM:", 0, NULL, "501" },
		{ "FROM:<a..b@c>", "FROM:", 0, NULL, "501" },
		{ "FROM:<.a@c>", "FROM:", 0, NULL, "501" },
		{ "FROM:<a.@c>", "FROM:", 0, NULL, "501" },
		{ "FROM:<a@-c>", "FROM:", 0, NULL, "501" },
		{ "FROM:<a@c->", "FROM:", 0, NULL, "501" },
		{ "FROM:<a@c..d>", "FROM:", 0, NULL, "501" },
		{ "FROM:<a@>", "FROM:", 0, NULL, "501" },
		{ "FROM:<@b>", "FROM:", 0, NULL, "501" },
		{ "FROM:<\"a b\"@c>", "FROM:", 1, "\"a b\"@c", NULL },
		{ "FROM:<\"a>b\"@c>", "FROM:", 1, "\"a>b\"@c", NULL },
		{ "FROM:<\"a\\\"b\"@c>", "FROM:", 1, "\"a\\\"b\"@c", NULL },
		{ "FROM:<\"a@c>", "FROM:", 0, NULL, "501" },
		{ "FROM:<a@[192.0.2.1]>", "FROM:", 1, "a@[192.0.2.1]", NULL },
		{ "FROM:<a@[IPv6:2001:db8::1]>", "FROM:", 1,
		    "a@[IPv6:2001:db8::1]", NULL },
		{ "FROM:<a@[300.1.1.1]>", "FROM:", 0, NULL, "501" },
		{ "FROM:<a@[tag:x]>", "FROM:", 0, NULL, "501" },
		{ "TO:<@r1.example,@r2.example:a@b>", "TO:", 1, "a@b", NULL },
		{ "TO:<@r1.example:>", "TO:", 0, NULL, "501" },
		{ "TO:<a@b> NOTIFY=NEVER", "TO:", 1, "a@b", NULL },
		{ "TO:<a@b>  NOTIFY=NEVER ORCPT=rfc822;a@b", "TO:", 1, "a@b",
		    NULL },
		{ "TO:<a@b> NOTIFY=", "TO:", 0, NULL, "555" },
		{ "TO:<a@b> =x", "TO:", 0, NULL, "555" },
		{ "TO:<a@b> A=b=c", "TO:", 0, NULL, "555" },
		{ "TO:<a@b> X=1 x=2", "TO:", 0, NULL, "555" },
		{ "TO:<a@b> A B C D E F G H I", "TO:", 0, NULL, "555" },
		{ "TO:<\xc3\xa9@b>", "TO:", 0, NULL, "553 5.6.7" },
		{ "FROM:<\xc3\xa9@b> SMTPUTF8", "FROM:", 1, "\xc3\xa9@b", NULL },
		/* RFC 3629 UTF-8 only, no controls: a clear 553 5.6.7 */
		{ "FROM:<\xc3@b> SMTPUTF8", "FROM:", 0, NULL, "553 5.6.7" },
		{ "FROM:<\xc0\xaf@b> SMTPUTF8", "FROM:", 0, NULL, "553 5.6.7" },
		{ "FROM:<\xe0\x80\xaf@b> SMTPUTF8", "FROM:", 0, NULL,
		    "553 5.6.7" },
		{ "FROM:<\xf0\x80\x80\xaf@b> SMTPUTF8", "FROM:", 0, NULL,
		    "553 5.6.7" },
		{ "FROM:<\xed\xa0\x80@b> SMTPUTF8", "FROM:", 0, NULL,
		    "553 5.6.7" },
		{ "FROM:<\xf4\x90\x80\x80@b> SMTPUTF8", "FROM:", 0, NULL,
		    "553 5.6.7" },
		{ "FROM:<\xf5\x80\x80\x80@b> SMTPUTF8", "FROM:", 0, NULL,
		    "553 5.6.7" },
		{ "FROM:<\x80@b> SMTPUTF8", "FROM:", 0, NULL, "553 5.6.7" },
		{ "FROM:<a@b\xe2\x82> SMTPUTF8", "FROM:", 0, NULL,
		    "553 5.6.7" },
		{ "FROM:<\xc2\x85@b> SMTPUTF8", "FROM:", 0, NULL, "553 5.6.7" },
		{ "FROM:<a@\xc2\x9b" "31m.example> SMTPUTF8", "FROM:", 0, NULL,
		    "553 5.6.7" },
		{ "TO:<\"\xc2\x9b\"@b>", "TO:", 0, NULL, "553 5.6.7" },
		{ "TO:<\xc2\x85@b>", "TO:", 0, NULL, "553 5.6.7" },
		{ "FROM:<a\x1b[31m@b>", "FROM:", 0, NULL, "501 5.1.7" },
		{ "FROM:<\"a\x1b\"@b>", "FROM:", 0, NULL, "501 5.1.7" },
		{ "FROM:<\"a\x7f\"@b>", "FROM:", 0, NULL, "501 5.1.7" },
		{ "FROM:<\xc2\xa0@b> SMTPUTF8", "FROM:", 1, "\xc2\xa0@b", NULL },
		{ "FROM:<\xe2\x82\xac@b> SMTPUTF8", "FROM:", 1,
		    "\xe2\x82\xac@b", NULL },
		{ "FROM:<\xf0\x9f\x98\x80@b> SMTPUTF8", "FROM:", 1,
		    "\xf0\x9f\x98\x80@b", NULL },
		{ "FROM:<\xf4\x8f\xbf\xbd@b> SMTPUTF8", "FROM:", 1,
		    "\xf4\x8f\xbf\xbd@b", NULL },
		{ "FROM:<\xed\x9f\xbf@b> SMTPUTF8", "FROM:", 1,
		    "\xed\x9f\xbf@b", NULL },
		{ "FROM:<a@b> X=\xc3\xa9", "FROM:", 0, NULL, "555" },
		{ "MAIL:<a@b>", "FROM:", 0, NULL, "501 5.5.4" },
	};
	struct smtp_limits lim = { 64, 255, 0 };
	struct smtp_path path;
	const char *why;
	size_t i;
	int rc;

	for (i = 0; i < N(rows); i++) {
		rc = smtp_parse_path(rows[i].arg, rows[i].prefix,
		    strcmp(rows[i].prefix, "FROM:") == 0, &lim, &path, &why);
		if ((rc == 0) != rows[i].ok)
			fail_msg("row %zu '%s': rc %d (%s)", i, rows[i].arg, rc,
			    rc ? why : "");
		if (rc == 0 && strcmp(path.addr, rows[i].addr) != 0)
			fail_msg("row %zu: addr '%s'", i, path.addr);
		if (rc == -1 && strncmp(why, rows[i].reply,
		    strlen(rows[i].reply)) != 0)
			fail_msg("row %zu: reply '%s'", i, why);
		if (rc == 0)
			smtp_path_free(&path);
	}
}

static void
test_path_limits(void **state UNUSED)
{
	struct smtp_limits lim = { 64, 255, 0 };
	struct smtp_path path;
	const char *why;
	char arg[600];

	/* 64 octets of local-part pass, 65 do not */
	snprintf(arg, sizeof(arg), "TO:<%.64s@b>",
	    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
	assert_int_equal(smtp_parse_path(arg, "TO:", 0, &lim, &path, &why), 0);
	assert_string_equal(path.domain, "b");
	smtp_path_free(&path);
	snprintf(arg, sizeof(arg), "TO:<%.65s@b>",
	    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
	assert_int_equal(smtp_parse_path(arg, "TO:", 0, &lim, &path, &why),
	    -1);
	assert_string_equal(why, "501 5.1.3 Recipient address too long");
	/* a label over 63 octets */
	snprintf(arg, sizeof(arg), "TO:<a@%.64s.example>",
	    "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb");
	assert_int_equal(smtp_parse_path(arg, "TO:", 0, &lim, &path, &why),
	    -1);
	/* the domain limit */
	lim.domain = 10;
	assert_int_equal(smtp_parse_path("TO:<a@bbbbbb.example>", "TO:", 0,
	    &lim, &path, &why), -1);
	/* SMTPUTF8 given at MAIL allows UTF-8 at RCPT */
	lim.domain = 255;
	lim.utf8 = 1;
	assert_int_equal(smtp_parse_path("TO:<\xc3\xa9@b\xc3\xa9.example>",
	    "TO:", 0, &lim, &path, &why), 0);
	smtp_path_free(&path);
}

static void
test_params(void **state UNUSED)
{
	struct smtp_limits lim = { 64, 255, 0 };
	struct smtp_path path;
	const char *why;

	assert_int_equal(smtp_parse_path("FROM:<a@b> size=100 BODY=8BITMIME "
	    "SMTPUTF8", "FROM:", 1, &lim, &path, &why), 0);
	assert_int_equal(path.nparams, 3);
	assert_string_equal(smtp_path_param(&path, "SIZE"), "100");
	assert_string_equal(smtp_path_param(&path, "BODY"), "8BITMIME");
	assert_string_equal(smtp_path_param(&path, "SMTPUTF8"), "");
	assert_null(smtp_path_param(&path, "RET"));
	smtp_path_free(&path);
}

static void
test_xtext(void **state UNUSED)
{
	char out[64];

	assert_int_equal(smtp_xtext_valid("abc+2Bdef"), 0);
	assert_int_equal(smtp_xtext_valid("abc+2bdef"), -1);
	assert_int_equal(smtp_xtext_valid("abc+2"), -1);
	assert_int_equal(smtp_xtext_valid("a=b"), -1);
	assert_int_equal(smtp_xtext_valid("a b"), -1);
	assert_int_equal(smtp_xtext_decode("a+2Bb+3Dc", out, sizeof(out)), 0);
	assert_string_equal(out, "a+b=c");
	assert_int_equal(smtp_xtext_decode("abcdef", out, 4), -1);
}

/* ORCPT and ENVID: printable US-ASCII once decoded (RFC 3461 4.2, 4.4) */
static void
test_xtext_printable(void **state UNUSED)
{
	static const struct {
		const char	*v;
		int		 orcpt;	/* smtp_orcpt_valid, else printable */
		int		 ok;
	} rows[] = {
		{ "rfc822;a@b.example", 1, 1 },
		{ "rfc822;a+2Bb@b.example", 1, 1 },
		{ "rfc822;a+20b@b.example", 1, 1 },	/* SP is printable */
		{ "RFC822;x@protected.example", 1, 1 },
		{ "rfc822;x+0D+0AAction:+20delivered", 1, 0 },
		{ "rfc822;x+0Ay", 1, 0 },
		{ "rfc822;x+0Dy", 1, 0 },
		{ "rfc822;x+1B[31m", 1, 0 },
		{ "rfc822;x+00y", 1, 0 },
		{ "rfc822;x+7Fy", 1, 0 },
		{ "rfc822;x+C3+A9", 1, 0 },	/* not ASCII */
		{ "rfc822;x+85", 1, 0 },
		{ "rfc822;", 1, 0 },
		{ ";a@b", 1, 0 },
		{ "a@b", 1, 0 },
		{ "rfc 822;a@b", 1, 0 },
		{ "rfc822:x;a@b", 1, 0 },	/* addr-type is an atom */
		{ "rfc822;a=b", 1, 0 },
		{ "ENV+2B1", 0, 1 },
		{ "env+20id", 0, 1 },
		{ "env+0D+0AX-Forged:+20yes", 0, 0 },
		{ "env+09id", 0, 0 },
		{ "env+FFid", 0, 0 },
		{ "env id", 0, 0 },
	};
	size_t i;
	int rc;

	for (i = 0; i < N(rows); i++) {
		rc = rows[i].orcpt ? smtp_orcpt_valid(rows[i].v, 500) :
		    smtp_xtext_printable(rows[i].v, 100);
		if ((rc == 0) != rows[i].ok)
			fail_msg("row %zu '%s': rc %d", i, rows[i].v, rc);
	}
	/* the decoded length counts, not the encoded one */
	assert_int_equal(smtp_xtext_printable("abcd", 4), 0);
	assert_int_equal(smtp_xtext_printable("abcde", 4), -1);
	assert_int_equal(smtp_xtext_printable("+2B+2B+2B+2B", 4), 0);
}

/* common/log.c: what of an outside value may reach a log line */
static void
test_log_vis(void **state UNUSED)
{
	static const struct {
		const char	*in;
		int		 flags;
		const char	*out;
	} rows[] = {
		{ "250 2.0.0 Ok: queued as X", 0, "250 2.0.0 Ok: queued as X" },
		{ "250 ok\x1b[2J\x1b]0;x\x07", 0,
		    "250 ok\\x1b[2J\\x1b]0;x\\x07" },
		{ "ok\" disposition=forged", 0,
		    "ok\\\" disposition=forged" },
		{ "ok\" disposition=forged", LOG_VIS_SPACE,
		    "ok\\\"\\x20disposition=forged" },
		{ "a\\b", 0, "a\\\\b" },
		{ "a\r\nb", 0, "a\\x0d\\x0ab" },
		{ "\xc3\xa9\x7f", 0, "\\xc3\\xa9\\x7f" },
		{ "", 0, "" },
	};
	char out[64];
	size_t i, n;

	for (i = 0; i < N(rows); i++) {
		n = log_strvis(out, sizeof(out), rows[i].in,
		    strlen(rows[i].in), rows[i].flags);
		if (strcmp(out, rows[i].out) != 0 || n != strlen(out))
			fail_msg("row %zu: '%s'", i, out);
	}
	/* a NUL inside a counted value is escaped, not an end */
	log_strvis(out, sizeof(out), "a\0b", 3, 0);
	assert_string_equal(out, "a\\x00b");
	/* cut: never half an escape, "..." says so, always terminated */
	n = log_strvis(out, 10, "\x1b\x1b\x1b\x1b", 4, 0);
	assert_string_equal(out, "\\x1b...");
	assert_int_equal(n, 7);
	n = log_strvis(out, 8, "abcdefg", 7, 0);
	assert_string_equal(out, "abcdefg");
	n = log_strvis(out, 8, "abcdefgh", 8, 0);
	assert_string_equal(out, "abcd...");
	/* the thread's buffers: NULL is "", slots distinct within a call */
	assert_string_equal(log_vis(NULL), "");
	assert_string_equal(log_word("a b\"c"), "a\\x20b\\\"c");
	assert_string_not_equal(log_vis("one"), log_vis("two"));
	assert_string_equal(log_visn("abc\x1b", 4), "abc\\x1b");
}

static void
test_verb(void **state UNUSED)
{
	char verb[16];
	const char *arg;

	arg = smtp_verb("mail FROM:<a@b>", 15, verb, sizeof(verb));
	assert_string_equal(verb, "MAIL");
	assert_string_equal(arg, "FROM:<a@b>");
	arg = smtp_verb("QUIT", 4, verb, sizeof(verb));
	assert_string_equal(verb, "QUIT");
	assert_string_equal(arg, "");
	arg = smtp_verb("STARTTLSXXXXXXXXXXXXX now", 25, verb, sizeof(verb));
	assert_string_not_equal(verb, "STARTTLS");
	assert_string_equal(arg, "now");
}

/* ------------------------------------------------------------ hash */

static void
test_hash(void **state UNUSED)
{
	static const struct {
		const char	*in;
		uint64_t	 want;
	} rows[] = {
		/* the published 64-bit FNV-1a vectors */
		{ "", 0xcbf29ce484222325ULL },
		{ "a", 0xaf63dc4c8601ec8cULL },
		{ "foobar", 0x85944171f73967e8ULL },
	};
	const char *s = "foobar";
	uint64_t h;
	size_t i;

	for (i = 0; i < N(rows); i++)
		assert_true(hash_fnv(HASH_FNV_INIT, rows[i].in,
		    strlen(rows[i].in)) == rows[i].want);
	/* running: in pieces as in one go (the spool sums DATA so) */
	h = hash_fnv(HASH_FNV_INIT, s, 2);
	h = hash_fnv(h, s + 2, 4);
	assert_true(h == 0x85944171f73967e8ULL);

	/* seeded: stable for one seed, moved by another */
	assert_int_equal(hash_bytes(7, s, 6), hash_bytes(7, s, 6));
	assert_int_not_equal(hash_bytes(7, s, 6), hash_bytes(8, s, 6));
	assert_int_not_equal(hash_bytes(7, s, 6), hash_bytes(7, s, 5));
}

/* ------------------------------------------------------------ trace */

static void
test_received(void **state UNUSED)
{
	static const struct {
		const char	*helo, *ip, *tls, *rcpt;
		int		 utf8, auth;
		const char	*want;
	} rows[] = {
		{ "c1.test", "192.0.2.101", NULL, "alice@example.com", 0, 0,
		  "Received: from c1.test ([192.0.2.101])\r\n"
		  "\tby gw.example (mxbridge) with ESMTP id 7.1\r\n"
		  "\tfor <alice@example.com>; Sun, 22 Nov 2026 20:00:00 +0000"
		  "\r\n" },
		/* no HELO: the address literal stands in (IPv6: tagged, RFC
		 * 5321 4.1.3); no single recipient */
		{ NULL, "2001:db8::1", NULL, NULL, 0, 0,
		  "Received: from [IPv6:2001:db8::1] ([IPv6:2001:db8::1])\r\n"
		  "\tby gw.example (mxbridge) with ESMTP id 7.1\r\n"
		  "\t; Sun, 22 Nov 2026 20:00:00 +0000\r\n" },
		{ "", "192.0.2.1", NULL, NULL, 0, 0,
		  "Received: from [192.0.2.1] ([192.0.2.1])\r\n"
		  "\tby gw.example (mxbridge) with ESMTP id 7.1\r\n"
		  "\t; Sun, 22 Nov 2026 20:00:00 +0000\r\n" },
		{ "c1.test", "2001:db8:2::101", NULL, NULL, 0, 0,
		  "Received: from c1.test ([IPv6:2001:db8:2::101])\r\n"
		  "\tby gw.example (mxbridge) with ESMTP id 7.1\r\n"
		  "\t; Sun, 22 Nov 2026 20:00:00 +0000\r\n" },
		/* TLS: its own folded line; RFC 3848 and 6531 protocols */
		{ "c1.test", "192.0.2.101", "TLSv1.3:TLS_AES_256_GCM_SHA384",
		  "a@example.com", 0, 0,
		  "Received: from c1.test ([192.0.2.101])\r\n"
		  "\tby gw.example (mxbridge) with ESMTPS id 7.1\r\n"
		  "\t(using TLSv1.3:TLS_AES_256_GCM_SHA384)\r\n"
		  "\tfor <a@example.com>; Sun, 22 Nov 2026 20:00:00 +0000\r\n" },
		{ "c1.test", "192.0.2.101", "TLSv1.3:x", NULL, 0, 1,
		  "Received: from c1.test ([192.0.2.101])\r\n"
		  "\tby gw.example (mxbridge) with ESMTPSA id 7.1\r\n"
		  "\t(using TLSv1.3:x)\r\n"
		  "\t; Sun, 22 Nov 2026 20:00:00 +0000\r\n" },
		{ "c1.test", "192.0.2.101", NULL, NULL, 0, 1,
		  "Received: from c1.test ([192.0.2.101])\r\n"
		  "\tby gw.example (mxbridge) with ESMTPA id 7.1\r\n"
		  "\t; Sun, 22 Nov 2026 20:00:00 +0000\r\n" },
		{ "c1.test", "192.0.2.101", NULL, NULL, 1, 0,
		  "Received: from c1.test ([192.0.2.101])\r\n"
		  "\tby gw.example (mxbridge) with UTF8SMTP id 7.1\r\n"
		  "\t; Sun, 22 Nov 2026 20:00:00 +0000\r\n" },
		{ "c1.test", "192.0.2.101", "TLSv1.2:y", NULL, 1, 0,
		  "Received: from c1.test ([192.0.2.101])\r\n"
		  "\tby gw.example (mxbridge) with UTF8SMTPS id 7.1\r\n"
		  "\t(using TLSv1.2:y)\r\n"
		  "\t; Sun, 22 Nov 2026 20:00:00 +0000\r\n" },
		{ "c1.test", "192.0.2.101", "TLSv1.2:y", NULL, 1, 1,
		  "Received: from c1.test ([192.0.2.101])\r\n"
		  "\tby gw.example (mxbridge) with UTF8SMTPSA id 7.1\r\n"
		  "\t(using TLSv1.2:y)\r\n"
		  "\t; Sun, 22 Nov 2026 20:00:00 +0000\r\n" },
		{ "c1.test", "192.0.2.101", NULL, NULL, 1, 1,
		  "Received: from c1.test ([192.0.2.101])\r\n"
		  "\tby gw.example (mxbridge) with UTF8SMTPA id 7.1\r\n"
		  "\t; Sun, 22 Nov 2026 20:00:00 +0000\r\n" },
	};
	struct smtp_trace t;
	struct buf b;
	char date[64];
	size_t i;

	setenv("TZ", "UTC", 1);
	tzset();
	assert_string_equal(smtp_date(1795377600, date, sizeof(date)),
	    "Sun, 22 Nov 2026 20:00:00 +0000");
	for (i = 0; i < N(rows); i++) {
		memset(&t, 0, sizeof(t));
		t.helo = rows[i].helo;
		t.ip = rows[i].ip;
		t.by = "gw.example";
		t.id = "7.1";
		t.tls = rows[i].tls;
		t.rcpt = rows[i].rcpt;
		t.smtputf8 = rows[i].utf8;
		t.auth = rows[i].auth;
		t.when = 1795377600;
		buf_init(&b);
		buf_puts(&b, "X");	/* appended, not overwritten */
		smtp_received(&b, &t);
		buf_append(&b, "", 1);
		if (strcmp(b.data + 1, rows[i].want) != 0 || b.data[0] != 'X')
			fail_msg("row %zu: %s", i, b.data);
		buf_free(&b);
	}
}

/* the grammar pieces other modules use (policy/decide.c, parse.c) */
static void
test_local_domain(void **state UNUSED)
{
	static const struct {
		const char	*s;
		int		 utf8;
		size_t		 want;
	} locals[] = {
		{ "alice@x", 0, 5 }, { "a.b@x", 0, 3 }, { "\"a b\"@x", 0, 5 },
		{ "\"a\\\"b\"@x", 0, 6 }, { "a..b@x", 0, 0 }, { ".a@x", 0, 0 },
		{ "a.@x", 0, 0 }, { "\"open@x", 0, 0 }, { "@x", 0, 0 },
		{ "j\xc3\xb6rg@x", 1, 5 }, { "j\xc3\xb6rg@x", 0, 1 },
		{ "a\"b\"@x", 0, 1 },
	}, domains[] = {
		{ "example.com", 0, 11 }, { "a-b.example>", 0, 11 },
		{ "-a.example", 0, 0 }, { "a-.example", 0, 0 },
		{ "example.com.", 0, 0 }, { "a..b", 0, 0 },
		{ "b\xc3\xbc" "cher.example", 1, 15 },
		{ "b\xc3\xbc" "cher.example", 0, 1 },
	};
	size_t i;

	for (i = 0; i < N(locals); i++)
		if (smtp_local_part(locals[i].s, locals[i].utf8) !=
		    locals[i].want)
			fail_msg("local %zu: %s", i, locals[i].s);
	for (i = 0; i < N(domains); i++)
		if (smtp_domain_name(domains[i].s, domains[i].utf8) !=
		    domains[i].want)
			fail_msg("domain %zu: %s", i, domains[i].s);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_reader_basic),
		cmocka_unit_test(test_reader_flags),
		cmocka_unit_test(test_reader_toolong),
		cmocka_unit_test(test_reader_discard),
		cmocka_unit_test(test_reader_bytewise),
		cmocka_unit_test(test_reply_good),
		cmocka_unit_test(test_reply_bad),
		cmocka_unit_test(test_ehlo_parse),
		cmocka_unit_test(test_reply_flood),
		cmocka_unit_test(test_data_smuggling),
		cmocka_unit_test(test_data_terminator),
		cmocka_unit_test(test_data_toolong),
		cmocka_unit_test(test_dot_stuff),
		cmocka_unit_test(test_data_span),
		cmocka_unit_test(test_data_hops),
		cmocka_unit_test(test_paths),
		cmocka_unit_test(test_path_limits),
		cmocka_unit_test(test_params),
		cmocka_unit_test(test_xtext),
		cmocka_unit_test(test_xtext_printable),
		cmocka_unit_test(test_log_vis),
		cmocka_unit_test(test_verb),
		cmocka_unit_test(test_hash),
		cmocka_unit_test(test_received),
		cmocka_unit_test(test_local_domain),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
