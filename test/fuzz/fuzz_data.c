/*
 * fuzz_data.c - the DATA reader of common/smtp.c, both forms: the line
 * reader with smtp_data_line (the MTA's spool writer before the fast path)
 * and the in-place runs of smtp_data_span, stuffed and not (the live relay
 * and the spool writer).  The input (after two control octets: chunk
 * size, line limit and form) is the client's bytes after DATA's 354.
 *
 * The check that matters is independent of the code under test: the
 * message ends exactly after the first CR LF "." CR LF (the DATA command's
 * own CR LF counting as the first CR LF), found by a plain scan of the
 * input; a reader that ends anywhere else, or not at all when the scan
 * found the terminator, aborts.  That is the smuggling class of bugs.
 */
#include <stdint.h>
#include <string.h>

#include "../../common/smtp.h"
#include "fuzz.h"

/* ref_end - offset just past the first CRLF.CRLF, or 0 if none */
static size_t
ref_end(const uint8_t *p, size_t n)
{
	size_t i;

	for (i = 0; i + 3 <= n; i++)
		if (memcmp(p + i, ".\r\n", 3) == 0 &&
		    (i == 0 || (i >= 2 && memcmp(p + i - 2, "\r\n", 2) == 0)))
			return i + 3;
	return 0;
}

/*
 * run - feed p/n in chunks to one form of the reader; the offset just past
 * the terminator it found, or 0
 */
static size_t
run(const uint8_t *p, size_t n, size_t chunk, size_t max, int form)
{
	struct smtp_reader r;
	struct smtp_data d;
	struct smtp_line l;
	enum smtp_line_status st;
	enum smtp_data_status ds;
	const char *out;
	size_t off = 0, k, outlen, end = 0;

	smtp_reader_init(&r, max);
	smtp_data_init(&d);
	while (off < n && end == 0) {
		k = n - off < chunk ? n - off : chunk;
		smtp_reader_feed(&r, p + off, k);
		off += k;
		for (;;) {
			if (form == 0) {
				st = smtp_reader_getline(&r, &l);
				if (st == SMTP_LINE_NONE)
					break;
				if (smtp_data_line(&d, &l, &out, &outlen) == 1) {
					end = off - smtp_reader_pending(&r);
					break;
				}
				if (outlen > l.len + 1)
					abort();
			} else {
				ds = smtp_data_span(&r, &d, form == 2, &out,
				    &outlen);
				if (ds == SMTP_DATA_MORE)
					break;
				if (ds == SMTP_DATA_END) {
					end = off - smtp_reader_pending(&r);
					break;
				}
				/* a run is whole CRLF lines */
				if (outlen > 0 && (outlen < 2 ||
				    memcmp(out + outlen - 2, "\r\n", 2) != 0))
					abort();
			}
		}
	}
	smtp_reader_free(&r);
	return end;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const size_t maxes[] = { 998, 1000, 8, 1, 64, 78 };
	size_t chunk, max, want, got;
	int form;

	if (size < 2)
		return 0;
	chunk = data[0] % 61 + 1;
	max = maxes[data[1] % 6];
	data += 2;
	size -= 2;
	want = ref_end(data, size);
	for (form = 0; form < 3; form++) {
		got = run(data, size, chunk, max, form);
		if (got != want) {
			dprintf(fuzz_errfd, "fuzz_data: form %d (chunk %zu, max %zu) "
			    "ended at %zu, CRLF.CRLF is at %zu\n", form, chunk,
			    max, got, want);
			abort();
		}
	}
	return 0;
}
