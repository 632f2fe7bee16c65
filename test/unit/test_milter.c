/*
 * test_milter.c - the milter client's header editor: a header section
 * cut anywhere as content arrives, the fields as a milter is sent them,
 * and the edits (add, insert, change, delete) rendered as the queued
 * copy gets them.  The protocol itself is t-milter's (a real session
 * against test/fakemilter.py).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "../../common/buf.h"
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

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_feed_any_cut),
		cmocka_unit_test(test_edits),
		cmocka_unit_test(test_no_empty_line),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
