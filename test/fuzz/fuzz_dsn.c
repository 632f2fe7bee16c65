/*
 * fuzz_dsn.c - DSN composition (mta/dsn.c) from a hostile envelope: the
 * sender, ENVID, recipients, ORCPTs, the last replies' status, remote
 * and text, and the original message, each taken from the input as far
 * as the door lets it in (addresses and parameters through
 * smtp_parse_path() and the xtext check smtpd applies, reply text as
 * deliver.c keeps it: printable octets, at most MTA_DIAGLEN; the body as
 * the spool holds it: CRLF lines of at most 998 octets without NUL).
 *
 * The structure of the composed message is checked, not only memory
 * safety (RFC 5321 2.3.8 and 4.5.3.1.6, RFC 3464 2.3): no bare CR or LF
 * and no NUL, every line ends in CRLF and has at most 998 octets, and the
 * delivery-status part has exactly one Final-Recipient, Action and Status
 * field per recipient.
 * Input: one octet (bits 0-1: kind, bit 2: RET=FULL, bits 4-7: number of
 * recipients), then NUL-separated fields: sender, ENVID, body, and per
 * recipient address, ORCPT, status, remote, reply text.
 */
#include <ctype.h>
#include <stdint.h>
#include <string.h>

#include "../../common/smtp.h"
#include "../../mta/mta_local.h"
#include "fuzz.h"

#define ORIG_ID	"0005f0e1d2c3b4a6"

static char	bodypath[256];

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	char root[200];

	fuzz_policy("hostname gw.example.com\n"
	    "domain \"example.com\" {\n server 192.0.2.10 port 25\n}\n");
	snprintf(root, sizeof(root), "%s/spool", fuzz_tmpdir());
	if (mta_spool_init(uv_default_loop(), root) == -1)
		abort();
	mta_spool_path(bodypath, sizeof(bodypath), "queue", ORIG_ID);
	return 0;
}

/* door - arg through smtp_parse_path and an xtext syntax check: the
 * address, and the named parameter's value in *param; -1 if refused.
 * Looser on purpose than smtpd's door (smtp_orcpt_valid and
 * smtp_xtext_printable): mta/dsn.c must stay safe on its own, for spool
 * files written before that check existed. */
static int
door(const char *prefix, const char *addr, const char *key, const char *val,
    char **out, char **param)
{
	struct smtp_limits lim = { 64, 255, 1 };
	struct smtp_path path;
	const char *why, *v;
	char *arg;
	size_t n;
	int rc = -1;

	n = strlen(prefix) + strlen(addr) + strlen(key) + strlen(val) + 8;
	arg = xmalloc(n);
	snprintf(arg, n, "%s<%s>%s%s%s%s", prefix, addr, *val ? " " : "",
	    *val ? key : "", *val ? "=" : "", val);
	*out = *param = NULL;
	if (smtp_parse_path(arg, prefix, 1, &lim, &path, &why) == -1)
		goto done;
	if ((v = smtp_path_param(&path, key)) != NULL) {
		if (strcmp(key, "ORCPT") == 0 ? (strchr(v, ';') == NULL ||
		    strlen(v) > 500 || smtp_xtext_valid(strchr(v, ';') + 1)
		    == -1) : (strlen(v) > 100 || smtp_xtext_valid(v) == -1)) {
			smtp_path_free(&path);
			goto done;
		}
		*param = xstrdup(v);
	}
	*out = xstrdup(path.addr);
	smtp_path_free(&path);
	rc = 0;
done:
	free(arg);
	return rc;
}

/* printable - s with every octet outside 0x20..0x7e as '?', as deliver.c
 * keeps a reply (reply_diag) */
static char *
printable(char *s)
{
	char *p;

	for (p = s; *p != '\0'; p++)
		if (!isprint((unsigned char)*p))
			*p = '?';
	return s;
}

/* body - the spool's form: CRLF lines, no NUL, at most 998 octets */
static void
body(const char *s, struct buf *b)
{
	size_t n;

	while (*s != '\0') {
		n = strcspn(s, "\r\n");
		buf_append(b, s, n > 998 ? 998 : n);
		buf_puts(b, "\r\n");
		s += n;
		if (*s == '\r')
			s++;
		if (*s == '\n')
			s++;
	}
}

/* count - lines of the delivery-status part that start with field */
static size_t
count(const char *p, size_t n, const char *field)
{
	size_t c = 0, i, fl = strlen(field);

	for (i = 0; i + fl <= n; i++)
		if ((i == 0 || p[i - 1] == '\n') && memcmp(p + i, field, fl) ==
		    0)
			c++;
	return c;
}

static void
check(const struct buf *m, size_t nrcpt)
{
	static const char ds[] = "Content-Type: message/delivery-status\r\n\r\n";
	const char *p = m->data, *s, *e;
	size_t i, line = 0;

	for (i = 0; i < m->len; i++) {
		if (p[i] == '\0' || (p[i] == '\r' && (i + 1 == m->len ||
		    p[i + 1] != '\n')) || (p[i] == '\n' && (i == 0 ||
		    p[i - 1] != '\r'))) {
			dprintf(fuzz_errfd, "fuzz_dsn: bare CR, bare LF or NUL at "
			    "%zu:\n%.*s\n", i, (int)m->len, p);
			abort();
		}
		if (p[i] == '\n')
			line = 0;
		else if (p[i] != '\r' && ++line > 998) {
			dprintf(fuzz_errfd, "fuzz_dsn: line over 998 octets at "
			    "%zu\n", i);
			abort();
		}
	}
	if (m->len < 2 || memcmp(p + m->len - 2, "\r\n", 2) != 0)
		abort();
	if ((s = memmem(p, m->len, ds, sizeof(ds) - 1)) == NULL)
		abort();
	s += sizeof(ds) - 1;
	if ((e = memmem(s, m->len - (size_t)(s - p), "\r\n--", 4)) == NULL)
		abort();
	e += 2;
	if (count(s, (size_t)(e - s), "Final-Recipient:") != nrcpt ||
	    count(s, (size_t)(e - s), "Action:") != nrcpt ||
	    count(s, (size_t)(e - s), "Status:") != nrcpt) {
		dprintf(fuzz_errfd, "fuzz_dsn: not one per-recipient group per "
		    "recipient (%zu):\n%.*s\n", nrcpt, (int)(e - s), s);
		abort();
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const enum mta_dsn_kind kinds[] = { MTA_DSN_FAILURE,
	    MTA_DSN_DELAY, MTA_DSN_SUCCESS, MTA_DSN_FAILURE };
	struct fuzz_in in = { data, size };
	struct mta_env *env, *dsn;
	struct mta_dsnreq *req;
	struct buf b;
	size_t idx[16], n, i;
	unsigned flags = fuzz_byte(&in);
	char *f, *g, *addr, *param, st[8];

	env = mta_env_new();
	memcpy(env->id, ORIG_ID, sizeof(env->id));
	env->arrival = 1700000000;
	env->dir = POLICY_DIR_IN;
	env->ret = flags & 4 ? MTA_RET_FULL : MTA_RET_HDRS;
	env->received = xstrdup("Received: from client.example.org "
	    "(client.example.org [192.0.2.101])\r\n\tby gw.example.com "
	    "(mxbridge) with ESMTP id " ORIG_ID ";\r\n"
	    "\tThu, 1 Jan 2026 00:00:00 +0000\r\n");
	f = fuzz_field(&in, 400);
	g = fuzz_field(&in, 200);
	if (door("FROM:", f, "ENVID", g, &addr, &param) == -1) {
		addr = xstrdup("sender@example.org");
		param = NULL;
	}
	free(env->sender);
	env->sender = addr;
	env->envid = param;
	free(f);
	free(g);
	f = fuzz_field(&in, 8192);
	buf_init(&b);
	body(f, &b);
	free(f);
	env->bodylen = b.len;
	fuzz_write(bodypath, b.data, b.len);
	buf_free(&b);
	n = flags >> 4;
	for (i = 0; i < n && in.n > 0; i++) {
		f = fuzz_field(&in, 400);
		g = fuzz_field(&in, 600);
		if (door("TO:", f, "ORCPT", g, &addr, &param) == -1) {
			free(f);
			free(g);
			continue;
		}
		mta_rcpt_add(env, addr, param, 0, POLICY_ROUTE_MX);
		free(addr);
		free(param);
		free(f);
		free(g);
		snprintf(st, sizeof(st), "%c.%u.%u", "245"[fuzz_byte(&in) % 3],
		    fuzz_byte(&in) % 8, fuzz_byte(&in) % 20);
		env->rcpt[env->nrcpt - 1].status = xstrdup(st);
		f = fuzz_field(&in, 300);
		if (*f != '\0')
			env->rcpt[env->nrcpt - 1].remote = printable(f);
		else
			free(f);
		f = fuzz_field(&in, MTA_DIAGLEN - 1);
		if (*f != '\0')
			env->rcpt[env->nrcpt - 1].diag = printable(f);
		else
			free(f);
		env->rcpt[env->nrcpt - 1].last = 1700000100;
	}
	if (env->nrcpt == 0)
		mta_rcpt_add(env, "rcpt@example.com", NULL, 0, POLICY_ROUTE_MX);
	for (i = 0; i < env->nrcpt; i++)
		idx[i] = i;
	dsn = mta_dsn_new(env, kinds[flags & 3], idx, env->nrcpt, &req);
	buf_init(&b);
	if (mta_dsn_compose(req, &b) != 0)
		abort();
	check(&b, env->nrcpt);
	buf_free(&b);
	mta_dsn_free(req);
	mta_env_free(dsn);
	mta_env_free(env);
	return 0;
}
