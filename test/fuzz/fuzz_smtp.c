/*
 * fuzz_smtp.c - the server side's SMTP command stream, through the layer
 * that takes the client's raw bytes: common/smtp.c's line reader (fed in
 * chunks of a size the input picks), the verb split, the checks
 * proxy/smtpd.c applies to every command line (length, bare CR/LF, NUL),
 * the MAIL/RCPT path and parameter parser with the xtext checks, and
 * after DATA the content reader until the terminator, then commands
 * again.  The session itself is tied to libuv sockets; this is what it
 * runs on their bytes.
 */
#include <stdint.h>
#include <string.h>
#include <strings.h>

#include "../../common/smtp.h"
#include "fuzz.h"

#define CMDLINE	512	/* RFC 5321 4.5.3.1.4, as the policy's default */

/* one command line as smtpd's cmd_line() takes it: 1 if it opens DATA */
static int
command(const struct smtp_line *l, enum smtp_line_status st, int *utf8)
{
	struct smtp_limits lim = { 64, 255, 0 };
	struct smtp_path path;
	char verb[16], dec[512];
	const char *arg, *why, *v;
	int mail, i;

	arg = smtp_verb(l->data, l->len, verb, sizeof(verb));
	if (arg < l->data || arg > l->data + l->len || strlen(verb) >= 16)
		abort();
	if (st == SMTP_LINE_TOOLONG || l->len > CMDLINE - 2 ||
	    (l->flags & (SMTP_LF_BARECR | SMTP_LF_NUL)) ||
	    !(l->flags & SMTP_LF_CRLF))
		return 0;
	if (strcmp(verb, "DATA") == 0)
		return 1;
	if (strcmp(verb, "RSET") == 0)
		*utf8 = 0;
	mail = strcmp(verb, "MAIL") == 0;
	if (!mail && strcmp(verb, "RCPT") != 0)
		return 0;
	lim.utf8 = mail ? 0 : *utf8;
	if (smtp_parse_path(arg, mail ? "FROM:" : "TO:", mail, &lim, &path,
	    &why) == -1) {
		if (why == NULL || strlen(why) < 4)
			abort();
		return 0;
	}
	if (path.addr == NULL || path.nparams > SMTP_MAXPARAMS ||
	    strpbrk(path.addr, "\r\n") != NULL)
		abort();
	if (mail && smtp_path_param(&path, "SMTPUTF8") != NULL)
		*utf8 = 1;
	for (i = 0; i < path.nparams; i++) {
		if (path.params[i].key == NULL || path.params[i].key[0] == '\0')
			abort();
		if ((v = path.params[i].value) == NULL)
			continue;
		if (strchr(v, ';') != NULL)
			v = strchr(v, ';') + 1;
		if (smtp_xtext_valid(v) == 0)
			(void)smtp_xtext_decode(v, dec, sizeof(dec));
	}
	smtp_path_free(&path);
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct smtp_reader r;
	struct smtp_data d;
	struct smtp_line l;
	enum smtp_line_status st;
	enum smtp_data_status ds;
	const char *p;
	size_t chunk, off = 1, n;
	int indata = 0, utf8 = 0;

	if (size == 0)
		return 0;
	chunk = data[0] % 97 + 1;
	smtp_reader_init(&r, CMDLINE);
	while (off < size) {
		n = size - off < chunk ? size - off : chunk;
		smtp_reader_feed(&r, data + off, n);
		off += n;
		for (;;) {
			if (indata) {
				ds = smtp_data_span(&r, &d, data[0] & 1, &p, &n);
				if (ds == SMTP_DATA_MORE)
					break;
				if (ds == SMTP_DATA_END) {
					indata = 0;
					smtp_reader_setmax(&r, CMDLINE);
				} else if (n > 0 && p == NULL)
					abort();
				continue;
			}
			if ((st = smtp_reader_getline(&r, &l)) == SMTP_LINE_NONE)
				break;
			if (command(&l, st, &utf8)) {
				indata = 1;
				smtp_data_init(&d);
				smtp_reader_setmax(&r, 998);
			}
		}
	}
	smtp_reader_free(&r);
	return 0;
}
