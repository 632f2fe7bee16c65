/*
 * fuzz_path.c - addresses and ESMTP parameters: smtp_parse_path() of
 * common/smtp.c on "FROM:<...> PARAMS" / "TO:<...> PARAMS" arguments as
 * proxy/smtpd.c hands them over (with and without SMTPUTF8), and the
 * xtext check and decoder on every parameter value (ENVID, ORCPT after
 * its ';', AUTH, ...), as smtpd and mta/dsn.c apply them.
 *
 * Invariants beyond the sanitizers, from RFC 5321, 6531 and 3461 and
 * issue 18: an accepted address holds no control character (C0, DEL,
 * C1), and its non-ASCII octets are valid UTF-8 (RFC 3629: no overlong
 * form, no surrogate, nothing past U+10FFFF) and only with SMTPUTF8; an
 * xtext value the door's validator (smtp_xtext_printable) accepts decodes, and its decoded form holds
 * no CR, LF or NUL (it ends up in DSN fields).
 * Input: one octet of flags (bit 0: RCPT, bit 1: SMTPUTF8), the argument.
 */
#include <stdint.h>
#include <string.h>

#include "../../common/smtp.h"
#include "fuzz.h"

/* utf8_ok - s is valid UTF-8 without C0, DEL or C1 controls */
static int
utf8_ok(const unsigned char *s)
{
	unsigned c, n, i, min;

	while (*s != '\0') {
		c = *s;
		if (c < 0x20 || c == 0x7f)
			return 0;
		if (c < 0x80) {
			s++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf) {
			n = 1;
			min = 0x80;
			c &= 0x1f;
		} else if (c >= 0xe0 && c <= 0xef) {
			n = 2;
			min = 0x800;
			c &= 0x0f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			n = 3;
			min = 0x10000;
			c &= 0x07;
		} else
			return 0;
		for (i = 1; i <= n; i++) {
			if ((s[i] & 0xc0) != 0x80)
				return 0;
			c = c << 6 | (s[i] & 0x3f);
		}
		if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff) ||
		    (c >= 0x80 && c <= 0x9f))
			return 0;
		s += n + 1;
	}
	return 1;
}

static void
xtext(const char *v)
{
	char dec[1024];
	size_t want = 0;
	const char *s;

	/* the door's check (proxy/smtpd.c, ENVID and ORCPT) */
	if (smtp_xtext_printable(v, sizeof(dec) - 1) == -1)
		return;
	for (s = v; *s != '\0'; s++, want++)
		if (*s == '+')
			s += 2;
	if (want >= sizeof(dec))
		return;
	if (smtp_xtext_decode(v, dec, sizeof(dec)) == -1) {
		dprintf(fuzz_errfd, "fuzz_path: valid xtext \"%s\" not decoded\n",
		    v);
		abort();
	}
	if (strlen(dec) != want || strpbrk(dec, "\r\n") != NULL) {
		dprintf(fuzz_errfd, "fuzz_path: xtext \"%s\" accepted, decodes to "
		    "CR, LF or NUL\n", v);
		abort();
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_in in = { data, size };
	struct smtp_limits lim = { 64, 255, 0 };
	struct smtp_path path;
	const char *why, *v;
	unsigned flags = fuzz_byte(&in);
	int rcpt = flags & 1, i;
	char *arg = fuzz_field(&in, 4096);

	lim.utf8 = (flags & 2) != 0;
	if (smtp_parse_path(arg, rcpt ? "TO:" : "FROM:", !rcpt, &lim, &path,
	    &why) == 0) {
		if (path.addr == NULL || (path.addr[0] == '\0' && rcpt) ||
		    path.nparams > SMTP_MAXPARAMS)
			abort();
		if (!utf8_ok((const unsigned char *)path.addr)) {
			dprintf(fuzz_errfd, "fuzz_path: accepted address with a "
			    "control or invalid UTF-8: \"%s\"\n", path.addr);
			abort();
		}
		if (!lim.utf8 && smtp_path_param(&path, "SMTPUTF8") == NULL)
			for (v = path.addr; *v != '\0'; v++)
				if ((unsigned char)*v >= 0x80)
					abort();
		for (i = 0; i < path.nparams; i++) {
			if ((v = path.params[i].value) == NULL)
				continue;
			if (strcmp(path.params[i].key, "ORCPT") == 0 &&
			    strchr(v, ';') != NULL)
				v = strchr(v, ';') + 1;
			xtext(v);
		}
		smtp_path_free(&path);
	} else if (why == NULL || why[0] < '4' || why[0] > '5')
		abort();
	free(arg);
	return 0;
}
