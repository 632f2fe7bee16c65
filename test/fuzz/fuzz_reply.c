/*
 * fuzz_reply.c - the multi-line reply parser of common/smtp.c as the live
 * relay (proxy/relay.c: 512 octets, 100 lines) and the MTA's delivery
 * connections (mta/deliver.c: 2048 octets, 100 lines) use it, on what a
 * hostile upstream server sends, fed in chunks.  Besides the sanitizers:
 * every reply returned has a code 200..599, its line count, CRLF lines
 * that each start with that code, and smtp_reply_line() reads inside it;
 * once the parser failed it stays failed.
 */
#include <stdint.h>
#include <string.h>

#include "../../common/smtp.h"
#include "fuzz.h"

static void
check_reply(const struct smtp_reply *rep, size_t maxline, unsigned maxlines)
{
	const char *t = buf_head(&rep->text), *lf, *s;
	size_t left = buf_avail(&rep->text), len;
	unsigned i = 0;
	char code[4];

	if (rep->code < 200 || rep->code > 599 || rep->nlines == 0 ||
	    rep->nlines > maxlines)
		abort();
	snprintf(code, sizeof(code), "%03d", rep->code);
	while (left > 0) {
		if ((lf = memchr(t, '\n', left)) == NULL || lf == t ||
		    lf[-1] != '\r' || (size_t)(lf - t) + 1 > maxline + 2 ||
		    memcmp(t, code, 3) != 0 ||
		    memchr(t, '\r', (size_t)(lf - t) - 1) != NULL ||
		    memchr(t, '\0', (size_t)(lf - t)) != NULL)
			abort();
		s = smtp_reply_line(rep, i, &len);
		if (s == NULL || s < t || s + len > lf)
			abort();
		left -= (size_t)(lf - t) + 1;
		t = lf + 1;
		i++;
	}
	if (i != rep->nlines)
		abort();
}

static void
run(const uint8_t *p, size_t n, size_t chunk, size_t maxline,
    unsigned maxlines)
{
	struct smtp_replyparser rp;
	struct smtp_reply rep;
	size_t off = 0, k;
	int rc = 0;

	smtp_reply_init(&rp, maxline, maxlines);
	while (off < n && rc != -1) {
		k = n - off < chunk ? n - off : chunk;
		smtp_reply_feed(&rp, p + off, k);
		off += k;
		while ((rc = smtp_reply_get(&rp, &rep)) == 1) {
			check_reply(&rep, maxline, maxlines);
			smtp_reply_clear(&rep);
		}
		if (rc == -1 && (rp.error == NULL ||
		    smtp_reply_get(&rp, &rep) != -1))
			abort();
	}
	smtp_reply_free(&rp);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t chunk;

	if (size < 1)
		return 0;
	chunk = data[0] % 127 + 1;
	run(data + 1, size - 1, chunk, 512, 100);
	run(data + 1, size - 1, chunk, 2048, 100);
	run(data + 1, size - 1, chunk, 16, 3);
	return 0;
}
