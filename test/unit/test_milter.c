/*
 * test_milter.c - the milter client's header editor: a header section
 * cut anywhere as content arrives, the fields as a milter is sent them,
 * and the edits (add, insert, change, delete) rendered as the queued
 * copy gets them; the envelope changes a milter may ask for at the end
 * (checked as a RCPT or MAIL path would be), the replaced body's line
 * ends, and the actions offered to a sink.  The protocol itself is
 * t-milter's (a real session against test/fakemilter.py).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "../../common/buf.h"
#include "../../common/smtp.h"
#include "../../proxy/milter.h"

#define UNUSED __attribute__((unused))

static const char msg[] =
    "From: <a@example.org>\r\n"
    "Subject: hello\r\n"
    "X-Folded: one\r\n"
    "\ttwo\r\n"
    "X-Drop: x\r\n"
    "\r\n"
    "body\r\n";

/* feed - msg in pieces of step bytes; the header's length and the body */
static struct milter_head *
feed(const char *m, size_t step, size_t *hdr, struct buf *body)
{
	struct milter_head *h = milter_head_new();
	size_t off = 0, n, used, nl;
	const char *left;
	int done = 0;

	*hdr = 0;
	while (off < strlen(m)) {
		n = strlen(m) - off < step ? strlen(m) - off : step;
		if (!done) {
			used = milter_head_feed(h, m + off, n, &done);
			*hdr += used;
			if (done) {
				left = milter_head_leftover(h, &nl);
				buf_append(body, left, nl);
				buf_append(body, m + off + used, n - used);
			}
		} else
			buf_append(body, m + off, n);
		off += n;
	}
	return h;
}

static void
test_feed_any_cut(void **state UNUSED)
{
	struct milter_head *h;
	struct buf body, name, val, out;
	uint64_t oldlen;
	size_t step, hdr;

	for (step = 1; step <= sizeof(msg); step++) {
		buf_init(&body);
		h = feed(msg, step, &hdr, &body);
		assert_int_equal(milter_head_count(h), 4);
		assert_int_equal(body.len, 6);
		assert_memory_equal(body.data, "body\r\n", 6);
		buf_init(&name);
		buf_init(&val);
		milter_head_field(h, 2, 0, &name, &val);
		assert_string_equal(name.data, "X-Folded");
		assert_int_equal(val.len, 8);
		assert_memory_equal(val.data, "one\n\ttwo", 8);
		buf_reset(&name);
		buf_reset(&val);
		milter_head_field(h, 1, 1, &name, &val);
		assert_memory_equal(val.data, " hello", 6);
		buf_free(&name);
		buf_free(&val);
		assert_int_equal(milter_head_edited(h), 0);
		buf_init(&out);
		milter_head_render(h, &out, &oldlen);
		/* the fields, not the empty line */
		assert_int_equal(oldlen, strlen(msg) - 8);
		assert_memory_equal(out.data, msg, oldlen);
		buf_free(&out);
		buf_free(&body);
		milter_head_free(h);
	}
}

static void
test_edits(void **state UNUSED)
{
	struct milter_head *h;
	struct buf body, out;
	uint64_t oldlen;
	size_t hdr;

	buf_init(&body);
	h = feed(msg, 7, &hdr, &body);
	assert_int_equal(milter_head_add(h, "X-Spam", "no"), 0);
	assert_int_equal(milter_head_insert(h, 0, "X-First", "1\nfold"), 0);
	assert_int_equal(milter_head_change(h, 1, "subject", "changed"), 0);
	assert_int_equal(milter_head_change(h, 1, "X-Drop", ""), 0);
	/* a second Subject is not there: added */
	assert_int_equal(milter_head_change(h, 2, "Subject", "two"), 0);
	/* what no milter may say */
	assert_int_equal(milter_head_add(h, "Bad Name", "x"), -1);
	assert_int_equal(milter_head_add(h, "Bad:Name", "x"), -1);
	assert_int_equal(milter_head_add(h, "", "x"), -1);
	assert_int_equal(milter_head_edited(h), 1);
	buf_init(&out);
	milter_head_render(h, &out, &oldlen);
	buf_append(&out, "", 1);
	assert_string_equal(out.data,
	    "X-First: 1\r\n\tfold\r\n"
	    "From: <a@example.org>\r\n"
	    "Subject: changed\r\n"
	    "X-Folded: one\r\n\ttwo\r\n"
	    "X-Spam: no\r\n"
	    "Subject: two\r\n");
	assert_int_equal(oldlen, strlen(msg) - 8);
	buf_free(&out);
	buf_free(&body);
	milter_head_free(h);
}

/* a header section that ends on a line that is no field: that line is
 * the body's first; one without CRLF too */
static void
test_no_empty_line(void **state UNUSED)
{
	struct milter_head *h;
	struct buf body;
	size_t hdr;

	buf_init(&body);
	h = feed("Subject: a\r\nnot a header line\r\nmore\r\n", 5, &hdr,
	    &body);
	assert_int_equal(milter_head_count(h), 1);
	body.data[body.len] = '\0';
	assert_int_equal(body.len, strlen("not a header line\r\nmore\r\n"));
	assert_memory_equal(body.data, "not a header line\r\nmore\r\n",
	    body.len);
	milter_head_free(h);
	buf_free(&body);
	buf_init(&body);
	h = feed(" folded first\r\nSubject: a\r\n\r\n", 3, &hdr, &body);
	assert_int_equal(milter_head_count(h), 0);
	assert_int_equal(body.len, strlen(" folded first\r\nSubject: a\r\n"
	    "\r\n"));
	milter_head_free(h);
	buf_free(&body);
}

static const struct smtp_limits lim = { 64, 255, 1 };

/* envp - parse a packet given as a literal (its NULs counted) */
#define envp(cmd, lit, e) \
	milter_envedit_parse((cmd), (lit), sizeof(lit) - 1, &lim, (e))

static void
test_envedit_good(void **state UNUSED)
{
	struct milter_envedit e;

	assert_int_equal(envp('+', "<bob@example.com>\0", &e), 0);
	assert_int_equal(e.op, MILTER_ADDRCPT);
	assert_string_equal(e.addr, "bob@example.com");
	assert_string_equal(e.domain, "example.com");
	assert_null(e.notify);
	milter_envedit_free(&e);
	/* without the brackets, as many milters write it */
	assert_int_equal(envp('+', "bob@example.com\0", &e), 0);
	assert_string_equal(e.addr, "bob@example.com");
	milter_envedit_free(&e);
	assert_int_equal(envp('-', "<Bob@Example.COM>\0", &e), 0);
	assert_int_equal(e.op, MILTER_DELRCPT);
	assert_string_equal(e.addr, "Bob@Example.COM");
	milter_envedit_free(&e);
	/* a quoted local part may hold a space */
	assert_int_equal(envp('+', "<\"a b\"@example.com>\0", &e), 0);
	milter_envedit_free(&e);
	/* the null sender; arguments taken and ignored */
	assert_int_equal(envp('e', "<>\0", &e), 0);
	assert_int_equal(e.op, MILTER_CHGFROM);
	assert_string_equal(e.addr, "");
	assert_null(e.domain);
	milter_envedit_free(&e);
	assert_int_equal(envp('e', "<new@example.org>\0SIZE=10 BODY=8BITMIME\0",
	    &e), 0);
	assert_string_equal(e.addr, "new@example.org");
	milter_envedit_free(&e);
	/* ADDRCPT_PAR: NOTIFY and ORCPT kept, the rest ignored */
	assert_int_equal(envp('2', "<c@example.net>\0NOTIFY=SUCCESS,FAILURE "
	    "ORCPT=rfc822;c@example.net X-FOO=1\0", &e), 0);
	assert_int_equal(e.op, MILTER_ADDRCPT);
	assert_string_equal(e.addr, "c@example.net");
	assert_string_equal(e.notify, "SUCCESS,FAILURE");
	assert_string_equal(e.orcpt, "rfc822;c@example.net");
	milter_envedit_free(&e);
	assert_int_equal(envp('2', "<c@example.net>\0\0", &e), 0);
	assert_null(e.notify);
	milter_envedit_free(&e);
}

static void
test_envedit_bad(void **state UNUSED)
{
	struct milter_envedit e;
	char big[200];

	/* no NUL; a command that is no envelope change */
	assert_int_equal(milter_envedit_parse('+', "bob@example.com", 15,
	    &lim, &e), -1);
	assert_int_equal(envp('h', "<bob@example.com>\0", &e), -1);
	/* arguments where none go, or a second string after them */
	assert_int_equal(envp('+', "<bob@example.com>\0NOTIFY=NEVER\0", &e),
	    -1);
	assert_int_equal(envp('-', "<bob@example.com>\0x\0", &e), -1);
	assert_int_equal(envp('e', "<a@example.com>\0SIZE=1\0junk", &e), -1);
	/* parameters hidden in the address */
	assert_int_equal(envp('+', "<bob@example.com> NOTIFY=NEVER\0", &e),
	    -1);
	/* no null recipient; spaces, control characters, no domain */
	assert_int_equal(envp('+', "<>\0", &e), -1);
	assert_int_equal(envp('-', "\0", &e), -1);
	assert_int_equal(envp('+', "<bob smith@example.com>\0", &e), -1);
	assert_int_equal(envp('+', " <bob@example.com>\0", &e), -1);
	assert_int_equal(envp('+', "<bob\x01@example.com>\0", &e), -1);
	assert_int_equal(envp('+', "<bob@example.com\r\n>\0", &e), -1);
	assert_int_equal(envp('e', "<a@example.com\0", &e), -1);
	assert_int_equal(envp('+', "<a@b@example.com>\0", &e), -1);
	/* a local part over the limit */
	memset(big, 'a', sizeof(big));
	memcpy(big + 65, "@example.com", 13);
	assert_int_equal(milter_envedit_parse('+', big, 78, &lim, &e), -1);
	memcpy(big + 64, "@example.com", 13);
	assert_int_equal(milter_envedit_parse('+', big, 77, &lim, &e), 0);
	milter_envedit_free(&e);
	/* DSN parameters out of form */
	assert_int_equal(envp('2', "<c@example.net>\0NOTIFY=SOMETIMES\0", &e),
	    -1);
	assert_int_equal(envp('2', "<c@example.net>\0ORCPT=no-semicolon\0",
	    &e), -1);
	assert_int_equal(envp('2', "<c@example.net>\0=x\0", &e), -1);
}

static void
test_body_crlf(void **state UNUSED)
{
	static const char *in[] = { "one\ntwo\r", "\nthree\n\n", "\r",
	    "\n" };
	struct buf b;
	size_t i;
	int cr = 0;

	buf_init(&b);
	for (i = 0; i < sizeof(in) / sizeof(in[0]); i++)
		milter_body_crlf(&b, in[i], strlen(in[i]), &cr);
	buf_append(&b, "", 1);
	assert_string_equal(b.data, "one\r\ntwo\r\nthree\r\n\r\n\r\n");
	buf_free(&b);
}

/* the live relay (no edits) is offered header edits and quarantine */
static void
test_offer(void **state UNUSED)
{
	assert_int_equal(milter_offer(0), 0x31);
	assert_int_equal(milter_offer(MILTER_EDIT_BODY), 0x33);
	assert_int_equal(milter_offer(MILTER_EDIT_ENVELOPE), 0xfd);
	assert_int_equal(milter_offer(MILTER_EDIT_BODY |
	    MILTER_EDIT_ENVELOPE), 0xff);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_feed_any_cut),
		cmocka_unit_test(test_edits),
		cmocka_unit_test(test_no_empty_line),
		cmocka_unit_test(test_envedit_good),
		cmocka_unit_test(test_envedit_bad),
		cmocka_unit_test(test_body_crlf),
		cmocka_unit_test(test_offer),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
