/*
 * parse.c - the configuration language.  A hand-written tokenizer turns
 * the file into words, quoted strings, braces and statement ends; a
 * table-driven parser walks them and fills a fresh policy snapshot.  Every
 * value is range-checked here, once, so that decide.c and the rest of the
 * daemon can trust a loaded policy without checking it again.  Errors come
 * back as "FILE:LINE: reason".
 */
#include <sys/stat.h>
#include <ctype.h>
#include <grp.h>
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "../common/addr.h"
#include "../common/log.h"
#include "../common/smtp.h"
#include "../common/tls.h"
#include "../common/xmalloc.h"
#include "policy.h"
#include "policy_local.h"

#define PARSE_MAXFILE	(1024 * 1024)	/* bytes in a config file */
#define PARSE_MAXARGS	32		/* words in one statement */
#define PARSE_MAXTEXT	400		/* characters in a reply text */
#define PARSE_SUNPATH	107		/* usable bytes of sun_path */
#define PARSE_MAXKW	64		/* entries in one keyword table */

#define DAY		86400U
#define KB		1024ULL
#define MB		(1024ULL * 1024)
#define GB		(1024ULL * 1024 * 1024)
#define TB		(1024ULL * 1024 * 1024 * 1024)

_Static_assert(sizeof(enum policy_uptls) == sizeof(int), "enum size");

enum tok_type { T_WORD, T_STRING, T_LBRACE, T_RBRACE, T_EOS, T_EOF };

struct token {
	enum tok_type	 type;
	char		*text;		/* T_WORD and T_STRING only */
	int		 line;
};

/* how a simple "keyword VALUE" statement stores its value */
enum vtype { V_FN, V_UINT, V_DUR, V_SIZE, V_BOOL, V_ENUM, V_PATH };

struct parser;
struct stmt;

struct keyword {
	const char	*name;
	int		 minargs;	/* words after the keyword */
	int		 maxargs;
	int		 flags;
#define KW_BLOCK	0x01		/* takes a { ... } block */
#define KW_MULTI	0x02		/* may appear more than once */
	int		(*fn)(struct parser *, struct stmt *);
	enum vtype	 type;		/* with fn NULL: store generically */
	size_t		 off;		/* ... at this offset in p->base */
	uint64_t	 min, max;
	const char *const *names;	/* V_ENUM: the accepted words */
};

struct stmt {
	const struct keyword *kw;
	int		 line;
	int		 argc;
	char		*argv[PARSE_MAXARGS];
};

struct parser {
	const char	*path;
	char		*dir;		/* for relative file names */
	struct token	*toks;
	size_t		 ntoks;
	size_t		 pos;
	struct policy	*pol;
	void		*base;		/* where generic values go */
	struct policy_domain *dom;	/* domain block being read */
	unsigned	*portset;	/* per port: 1 << dir if its action set */
	int		 listen_line[2];
	int		 starttls_line[2];
	int		 default_line[2];
	int		 cs_line[2];	/* client-server default, tls */
	int		 csmatch_line;	/* the first "client-server match" */
	int		 timeout_line[4];
	int		 queue_line;
	int		 workers_line;
	int		 metrics_line;	/* "metrics listen" */
	int		 metrics_allow_line;	/* the first "metrics allow" */
	struct {				/* "milters" names to check */
		const char	*name;
		size_t		 set, pos;
		int		 line;
	}		*milter_names;
	size_t		 nmilter_names;
	char		*err;
	size_t		 errlen;
};

/* the policy enums' words are policy.c's tables (policy_dir_names...) */
static const char *const honour_names[] = { "ignore", "honour", NULL };
/* by enum policy_classifier */
static const char *const classifier_names[] = { "kernel", "queue", NULL };
static const char *const cs_names[] = { "default", "tls", NULL };
static const char *const bool_names[] = { "yes", "no", NULL };
static const char *const timeout_names[] = { "command", "data", "dot",
	"connect", NULL };

static int	parse_block(struct parser *, const struct keyword *,
		    const char *, int);

/* perr - format "FILE:LINE: reason" into the caller's buffer; -1 */
static int __attribute__((format(printf, 3, 4)))
perr(struct parser *p, int line, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (p->errlen == 0)
		return -1;
	n = snprintf(p->err, p->errlen, "%s:%d: ", p->path, line);
	if (n < 0 || (size_t)n >= p->errlen)
		return -1;
	va_start(ap, fmt);
	vsnprintf(p->err + n, p->errlen - n, fmt, ap);
	va_end(ap);
	return -1;
}

/*
 * Tokenizer
 */

/* tok_push - append one token; text is copied */
static void
tok_push(struct parser *p, enum tok_type type, const char *text, size_t len,
    int line)
{
	struct token *t;

	p->toks = xreallocarray(p->toks, p->ntoks + 1, sizeof(*p->toks));
	t = &p->toks[p->ntoks++];
	t->type = type;
	t->text = text != NULL ? xstrndup(text, len) : NULL;
	t->line = line;
}

/* lex_string - a double-quoted string at buf[*i]; \" and \\ escape */
static int
lex_string(struct parser *p, const char *buf, size_t len, size_t *i, int line)
{
	char *s;
	size_t n = 0;

	s = xmalloc(len - *i + 1);
	for ((*i)++; *i < len && buf[*i] != '"'; (*i)++) {
		if (buf[*i] == '\n')
			break;
		if (buf[*i] == '\\') {
			if (*i + 1 >= len || (buf[*i + 1] != '"' &&
			    buf[*i + 1] != '\\')) {
				free(s);
				return perr(p, line, "invalid escape in string");
			}
			(*i)++;
		} else if ((unsigned char)buf[*i] < 0x20 && buf[*i] != '\t') {
			free(s);
			return perr(p, line, "invalid character 0x%02x",
			    (unsigned char)buf[*i]);
		}
		s[n++] = buf[*i];
	}
	if (*i >= len || buf[*i] != '"') {
		free(s);
		return perr(p, line, "unterminated string");
	}
	(*i)++;
	tok_push(p, T_STRING, s, n, line);
	free(s);
	return 0;
}

/* lex_special - the characters that end a word */
static int
lex_special(int c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == ';' ||
	    c == '{' || c == '}' || c == '"';
}

/* lex - split the whole file into tokens, ending with T_EOF */
static int
lex(struct parser *p, const char *buf, size_t len)
{
	size_t i = 0, start;
	int line = 1;
	unsigned char c;

	while (i < len) {
		c = buf[i];
		if (c == '\\' && i + 1 < len && buf[i + 1] == '\n') {
			line++;		/* continuation line */
			i += 2;
		} else if (c == '\\' && i + 2 < len && buf[i + 1] == '\r' &&
		    buf[i + 2] == '\n') {
			line++;
			i += 3;
		} else if (c == '\n') {
			tok_push(p, T_EOS, NULL, 0, line++);
			i++;
		} else if (c == ' ' || c == '\t' || c == '\r')
			i++;
		else if (c == '#') {
			while (i < len && buf[i] != '\n')
				i++;
		} else if (c == ';' || c == '{' || c == '}') {
			tok_push(p, c == ';' ? T_EOS : c == '{' ? T_LBRACE :
			    T_RBRACE, NULL, 0, line);
			i++;
		} else if (c == '"') {
			if (lex_string(p, buf, len, &i, line) == -1)
				return -1;
		} else if (c < 0x20 || c == 0x7f)
			return perr(p, line, "invalid character 0x%02x", c);
		else {
			for (start = i; i < len && !lex_special(buf[i]); i++)
				if ((unsigned char)buf[i] < 0x20 ||
				    buf[i] == 0x7f)
					return perr(p, line,
					    "invalid character 0x%02x",
					    (unsigned char)buf[i]);
			if (i < len && buf[i] == '"')
				return perr(p, line, "unexpected '\"' in word");
			tok_push(p, T_WORD, buf + start, i - start, line);
		}
	}
	tok_push(p, T_EOF, NULL, 0, line);
	return 0;
}

/* read_file - the whole config file into a NUL-terminated buffer */
static int
read_file(struct parser *p, char **bufp, size_t *lenp)
{
	struct stat st;
	FILE *fp;
	char *buf = NULL;
	int rv = -1;

	if ((fp = fopen(p->path, "r")) == NULL) {
		snprintf(p->err, p->errlen, "%s: %s", p->path, strerror(errno));
		return -1;
	}
	if (fstat(fileno(fp), &st) == -1) {
		snprintf(p->err, p->errlen, "%s: %s", p->path, strerror(errno));
		goto done;
	}
	if (!S_ISREG(st.st_mode) || st.st_size > PARSE_MAXFILE) {
		snprintf(p->err, p->errlen, "%s: not a regular file of at "
		    "most %d bytes", p->path, PARSE_MAXFILE);
		goto done;
	}
	buf = xmalloc((size_t)st.st_size + 1);
	*lenp = fread(buf, 1, (size_t)st.st_size, fp);
	if (ferror(fp)) {
		snprintf(p->err, p->errlen, "%s: read error", p->path);
		goto done;
	}
	buf[*lenp] = '\0';
	*bufp = buf;
	buf = NULL;
	rv = 0;
 done:
	free(buf);
	fclose(fp);
	return rv;
}

/*
 * Values
 */

/* parse_digits - a plain decimal number; *end is left after it */
static int
parse_digits(const char *s, uint64_t *out, const char **end)
{
	uint64_t v = 0;

	if (!isdigit((unsigned char)*s))
		return -1;
	for (; isdigit((unsigned char)*s); s++) {
		if (v > (UINT64_MAX - (uint64_t)(*s - '0')) / 10)
			return -1;
		v = v * 10 + (uint64_t)(*s - '0');
	}
	*out = v;
	*end = s;
	return 0;
}

/* fmt_dur - the shortest exact spelling of a duration */
static const char *
fmt_dur(uint64_t v, char *buf, size_t len)
{
	if (v != 0 && v % DAY == 0)
		snprintf(buf, len, "%llud", (unsigned long long)(v / DAY));
	else if (v != 0 && v % 3600 == 0)
		snprintf(buf, len, "%lluh", (unsigned long long)(v / 3600));
	else if (v != 0 && v % 60 == 0)
		snprintf(buf, len, "%llum", (unsigned long long)(v / 60));
	else
		snprintf(buf, len, "%llus", (unsigned long long)v);
	return buf;
}

/* fmt_size - the shortest exact spelling of a size */
static const char *
fmt_size(uint64_t v, char *buf, size_t len)
{
	if (v != 0 && v % TB == 0)
		snprintf(buf, len, "%lluT", (unsigned long long)(v / TB));
	else if (v != 0 && v % GB == 0)
		snprintf(buf, len, "%lluG", (unsigned long long)(v / GB));
	else if (v != 0 && v % MB == 0)
		snprintf(buf, len, "%lluM", (unsigned long long)(v / MB));
	else if (v != 0 && v % KB == 0)
		snprintf(buf, len, "%lluK", (unsigned long long)(v / KB));
	else
		snprintf(buf, len, "%llu", (unsigned long long)v);
	return buf;
}

/* parse_num - a decimal number within min..max */
static int
parse_num(struct parser *p, int line, const char *name, const char *s,
    uint64_t min, uint64_t max, uint64_t *out)
{
	const char *end;

	if (parse_digits(s, out, &end) == -1 || *end != '\0')
		return perr(p, line, "%s: bad number \"%s\"", name, s);
	if (*out < min || *out > max)
		return perr(p, line, "%s: %s out of range (%llu-%llu)", name, s,
		    (unsigned long long)min, (unsigned long long)max);
	return 0;
}

/* parse_dur - seconds, or a number with s, m, h or d; within min..max */
static int
parse_dur(struct parser *p, int line, const char *name, const char *s,
    uint64_t min, uint64_t max, uint64_t *out)
{
	const char *end;
	uint64_t mul = 1;
	char a[32], b[32];

	if (parse_digits(s, out, &end) == -1)
		return perr(p, line, "%s: bad duration \"%s\"", name, s);
	if (*end == 'm')
		mul = 60;
	else if (*end == 'h')
		mul = 3600;
	else if (*end == 'd')
		mul = DAY;
	else if (*end != 's' && *end != '\0')
		return perr(p, line, "%s: bad duration \"%s\"", name, s);
	if (*end != '\0' && end[1] != '\0')
		return perr(p, line, "%s: bad duration \"%s\"", name, s);
	if (*out > UINT64_MAX / mul)
		*out = UINT64_MAX;
	else
		*out *= mul;
	if (*out < min || *out > max)
		return perr(p, line, "%s: %s out of range (%s-%s)", name, s,
		    fmt_dur(min, a, sizeof(a)), fmt_dur(max, b, sizeof(b)));
	return 0;
}

/* parse_size - bytes, or a number with K, M, G or T; within min..max */
static int
parse_size(struct parser *p, int line, const char *name, const char *s,
    uint64_t min, uint64_t max, uint64_t *out)
{
	const char *end;
	uint64_t mul = 1;
	char a[32], b[32];

	if (parse_digits(s, out, &end) == -1)
		return perr(p, line, "%s: bad size \"%s\"", name, s);
	switch (*end) {
	case '\0':
		break;
	case 'K': case 'k':
		mul = KB;
		break;
	case 'M': case 'm':
		mul = MB;
		break;
	case 'G': case 'g':
		mul = GB;
		break;
	case 'T': case 't':
		mul = TB;
		break;
	default:
		return perr(p, line, "%s: bad size \"%s\"", name, s);
	}
	if (*end != '\0' && end[1] != '\0')
		return perr(p, line, "%s: bad size \"%s\"", name, s);
	if (*out > UINT64_MAX / mul)
		*out = UINT64_MAX;
	else
		*out *= mul;
	if (*out < min || *out > max)
		return perr(p, line, "%s: %s out of range (%s-%s)", name, s,
		    fmt_size(min, a, sizeof(a)), fmt_size(max, b, sizeof(b)));
	return 0;
}

/* parse_enum - one of a NULL-terminated list of words; its index */
static int
parse_enum(struct parser *p, int line, const char *name, const char *s,
    const char *const *names, int *out)
{
	char list[256];
	size_t n = 0;
	int i;

	if ((*out = policy_name_index(names, s)) != -1)
		return 0;
	list[0] = '\0';
	for (i = 0; names[i] != NULL; i++) {
		n = strlen(list);
		snprintf(list + n, sizeof(list) - n, "%s%s",
		    i == 0 ? "" : names[i + 1] == NULL ? " or " : ", ",
		    names[i]);
	}
	return perr(p, line, "%s: expected %s, got \"%s\"", name, list, s);
}

/* parse_port - a TCP port number */
static int
parse_port(struct parser *p, int line, const char *name, const char *s,
    uint16_t *out)
{
	uint64_t v;

	if (parse_num(p, line, name, s, 1, 65535, &v) == -1)
		return -1;
	*out = (uint16_t)v;
	return 0;
}

/*
 * policy_valid_domain - a host name: RFC 5321's Domain in LDH labels
 * (smtp_domain_name, the one grammar of it), at most 253 bytes, one
 * trailing dot allowed
 */
int
policy_valid_domain(const char *s)
{
	char name[254];
	size_t len = strlen(s);

	if (len > 0 && s[len - 1] == '.')
		len--;
	if (len == 0 || len >= sizeof(name))
		return 0;
	memcpy(name, s, len);
	name[len] = '\0';
	return smtp_domain_name(name, 0) == len;
}

/* norm_domain - a lower-case copy without the trailing dot */
static char *
norm_domain(const char *s)
{
	char *d;
	size_t len;

	d = xstrdup(s);
	len = strlen(d);
	if (len > 0 && d[len - 1] == '.')
		d[--len] = '\0';
	for (char *c = d; *c != '\0'; c++)
		*c = (char)tolower((unsigned char)*c);
	return d;
}

/*
 * looks_numeric - s is meant as an address, not a name: it has brackets
 * or a colon, or its last label is all digits (RFC 1123 2.1: a top-level
 * domain is never all-numeric).  Such a host must parse as an address;
 * it is never handed to the resolver, which would report a typo as a DNS
 * failure, or take "192.0.2" for 192.0.0.2 as inet_aton(3) does.
 */
static int
looks_numeric(const char *s)
{
	size_t len = strlen(s), i;

	if (s[0] == '[' || strchr(s, ':') != NULL)
		return 1;
	if (len > 0 && s[len - 1] == '.')
		len--;
	for (i = len; i > 0 && s[i - 1] != '.'; i--)
		if (!isdigit((unsigned char)s[i - 1]))
			return 0;
	return i < len;
}

/* check_host - a well-formed numeric address, or a host name's syntax */
static int
check_host(struct parser *p, int line, const char *name, const char *s)
{
	struct sockaddr_storage ss;

	if (addr_parse(s, 0, &ss) == 0)
		return 0;
	if (looks_numeric(s))
		return perr(p, line, "%s: malformed address \"%s\"", name, s);
	if (!policy_valid_domain(s))
		return perr(p, line, "%s: bad host \"%s\"", name, s);
	return 0;
}

/* valid_ifname - a bridge port name as the kernel allows it */
static int
valid_ifname(const char *s)
{
	size_t len = strlen(s);

	if (len == 0 || len >= IF_NAMESIZE || strcmp(s, ".") == 0 ||
	    strcmp(s, "..") == 0)
		return 0;
	for (; *s != '\0'; s++)
		if (*s == '/' || *s == ':' || !isgraph((unsigned char)*s))
			return 0;
	return 1;
}

/* rel_path - a file name, relative ones taken from the config's folder */
static char *
rel_path(struct parser *p, const char *name)
{
	char *s;

	if (name[0] == '/')
		return xstrdup(name);
	xasprintf(&s, "%s/%s", p->dir, name);
	return s;
}

/*
 * Generic statements
 */

/* kw_value - "keyword VALUE" stored as described by its table entry */
static int
kw_value(struct parser *p, struct stmt *st)
{
	const struct keyword *kw = st->kw;
	char *field = (char *)p->base + kw->off;
	const char *s = st->argv[0];
	uint64_t v;
	unsigned u;
	int i;

	switch (kw->type) {
	case V_UINT:
	case V_DUR:
		if ((kw->type == V_UINT ? parse_num : parse_dur)(p, st->line,
		    kw->name, s, kw->min, kw->max, &v) == -1)
			return -1;
		u = (unsigned)v;
		memcpy(field, &u, sizeof(u));
		return 0;
	case V_SIZE:
		if (parse_size(p, st->line, kw->name, s, kw->min, kw->max,
		    &v) == -1)
			return -1;
		memcpy(field, &v, sizeof(v));
		return 0;
	case V_BOOL:
	case V_ENUM:
		if (parse_enum(p, st->line, kw->name, s, kw->type == V_BOOL ?
		    bool_names : kw->names, &i) == -1)
			return -1;
		if (kw->type == V_BOOL)
			i = !i;		/* "yes" is listed first */
		memcpy(field, &i, sizeof(i));
		return 0;
	case V_PATH:
		if (s[0] != '/')
			return perr(p, st->line, "%s: \"%s\" is not an absolute "
			    "path", kw->name, s);
		if (kw->max != 0 && strlen(s) > kw->max)
			return perr(p, st->line, "%s: path longer than %llu "
			    "bytes", kw->name, (unsigned long long)kw->max);
		free(*(char **)(void *)field);
		*(char **)(void *)field = xstrdup(s);
		return 0;
	case V_FN:
		break;
	}
	return perr(p, st->line, "%s: internal error", kw->name);
}

/*
 * Global statements
 */

static int
kw_hostname(struct parser *p, struct stmt *st)
{
	if (!policy_valid_domain(st->argv[0]))
		return perr(p, st->line, "hostname: bad host name \"%s\"",
		    st->argv[0]);
	free(p->pol->hostname);
	p->pol->hostname = norm_domain(st->argv[0]);
	return 0;
}

/* name_ok - a user or group name as useradd(8) takes it */
static int
name_ok(const char *s)
{
	return strlen(s) > 0 && strlen(s) <= 32 && s[0] != '-' &&
	    strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	    "0123456789_-.") == strlen(s);
}

/* kw_user - "user NAME": who the daemon runs as once started; looked up
 * by the daemon (daemon/priv.c), not here: the parser stays pure for
 * the fuzzer and the unit tests */
static int
kw_user(struct parser *p, struct stmt *st)
{
	if (!name_ok(st->argv[0]))
		return perr(p, st->line, "user: bad user name \"%s\"",
		    st->argv[0]);
	if (strcmp(st->argv[0], "root") == 0)
		return perr(p, st->line, "user: the daemon does not run as "
		    "root; name an unprivileged user");
	free(p->pol->user);
	p->pol->user = xstrdup(st->argv[0]);
	return 0;
}

/* kw_group - "group NAME": the group that may use the control socket,
 * looked up now (the file is parsed at start, by -n, and at reload on
 * the thread pool) */
static int
kw_group(struct parser *p, struct stmt *st)
{
	struct group gr, *res = NULL;
	char buf[4096];
	int rc;

	if (!name_ok(st->argv[0]))
		return perr(p, st->line, "group: bad group name \"%s\"",
		    st->argv[0]);
	if ((rc = getgrnam_r(st->argv[0], &gr, buf, sizeof(buf), &res)) != 0 ||
	    res == NULL)
		return perr(p, st->line, "group: no such group \"%s\"%s%s",
		    st->argv[0], rc ? ": " : "", rc ? strerror(rc) : "");
	free(p->pol->control_group);
	p->pol->control_group = xstrdup(st->argv[0]);
	p->pol->control_gid = (long)gr.gr_gid;
	return 0;
}

/* kw_listen - "listen incoming|outgoing port N" */
static int
kw_listen(struct parser *p, struct stmt *st)
{
	int dir;

	if (parse_enum(p, st->line, "listen", st->argv[0], policy_dir_names,
	    &dir) == -1)
		return -1;
	if (strcmp(st->argv[1], "port") != 0)
		return perr(p, st->line, "listen: expected \"port\", got \"%s\"",
		    st->argv[1]);
	if (p->listen_line[dir] != 0)
		return perr(p, st->line, "listen: duplicate %s (first at line "
		    "%d)", policy_dir_names[dir], p->listen_line[dir]);
	p->listen_line[dir] = st->line;
	return parse_port(p, st->line, "listen", st->argv[2],
	    &p->pol->listen_port[dir]);
}

/* kw_metrics - "metrics listen ADDR PORT": the Prometheus endpoint, an
 * address literal (a name would need DNS at every load); "metrics allow
 * NET..." the peers that may scrape it, every line adding to the list */
static int
kw_metrics(struct parser *p, struct stmt *st)
{
	struct addr_net net;
	uint16_t port;
	int i;

	if (strcmp(st->argv[0], "allow") == 0) {
		for (i = 1; i < st->argc; i++) {
			if (addr_net_parse(st->argv[i], &net) == -1)
				return perr(p, st->line, "metrics allow: \"%s\" "
				    "is not an IPv4 or IPv6 address or "
				    "ADDRESS/PREFIX network", st->argv[i]);
			p->pol->metrics_allow = xreallocarray(
			    p->pol->metrics_allow, p->pol->nmetrics_allow + 1,
			    sizeof(*p->pol->metrics_allow));
			p->pol->metrics_allow[p->pol->nmetrics_allow++] = net;
		}
		if (p->metrics_allow_line == 0)
			p->metrics_allow_line = st->line;
		return 0;
	}
	if (strcmp(st->argv[0], "listen") != 0)
		return perr(p, st->line, "metrics: expected \"listen\" or "
		    "\"allow\", got \"%s\"", st->argv[0]);
	if (st->argc != 3)
		return perr(p, st->line, "metrics listen: expected ADDRESS "
		    "PORT");
	if (p->metrics_line != 0)
		return perr(p, st->line, "metrics listen: duplicate (first at "
		    "line %d)", p->metrics_line);
	p->metrics_line = st->line;
	if (parse_port(p, st->line, "metrics listen", st->argv[2],
	    &port) == -1)
		return -1;
	if (addr_parse(st->argv[1], port, &p->pol->metrics_addr) == -1)
		return perr(p, st->line, "metrics listen: \"%s\" is not an "
		    "IPv4 or IPv6 address", st->argv[1]);
	p->pol->metrics = 1;
	return 0;
}

/* kw_log - "log verbose N" */
static int
kw_log(struct parser *p, struct stmt *st)
{
	uint64_t v;

	if (strcmp(st->argv[0], "verbose") != 0)
		return perr(p, st->line, "log: expected \"verbose\", got "
		    "\"%s\"", st->argv[0]);
	if (parse_num(p, st->line, "log verbose", st->argv[1], 0, 3,
	    &v) == -1)
		return -1;
	p->pol->log_verbose = (int)v;
	return 0;
}

/* kw_tls - "tls certificate FILE key FILE", in either order */
static int
kw_tls(struct parser *p, struct stmt *st)
{
	char **cert = &p->pol->tls_cert, **key = &p->pol->tls_key, **dst;
	int i;

	for (i = 0; i < st->argc; i += 2) {
		if (strcmp(st->argv[i], "certificate") == 0)
			dst = cert;
		else if (strcmp(st->argv[i], "key") == 0)
			dst = key;
		else
			return perr(p, st->line, "tls: expected \"certificate\" "
			    "or \"key\", got \"%s\"", st->argv[i]);
		if (*dst != NULL)
			return perr(p, st->line, "tls: duplicate %s",
			    st->argv[i]);
		if (st->argv[i + 1][0] == '\0')
			return perr(p, st->line, "tls: empty file name");
		*dst = rel_path(p, st->argv[i + 1]);
	}
	if (*cert == NULL)
		return perr(p, st->line, "tls: missing certificate");
	if (*key == NULL)
		return perr(p, st->line, "tls: missing key");
	return 0;
}

/* kw_starttls - "starttls incoming|outgoing offer|require|strip" */
static int
kw_starttls(struct parser *p, struct stmt *st)
{
	int dir, mode;

	if (parse_enum(p, st->line, "starttls", st->argv[0], policy_dir_names,
	    &dir) == -1 || parse_enum(p, st->line, "starttls", st->argv[1],
	    policy_starttls_names, &mode) == -1)
		return -1;
	if (p->starttls_line[dir] != 0)
		return perr(p, st->line, "starttls: duplicate %s (first at "
		    "line %d)", policy_dir_names[dir], p->starttls_line[dir]);
	p->starttls_line[dir] = st->line;
	p->pol->starttls[dir] = (enum policy_starttls)mode;
	return 0;
}

/* kw_default - "default incoming|outgoing proxy|pass|drop" */
static int
kw_default(struct parser *p, struct stmt *st)
{
	int dir, action;

	if (parse_enum(p, st->line, "default", st->argv[0], policy_dir_names,
	    &dir) == -1 || parse_enum(p, st->line, "default", st->argv[1],
	    policy_action_names, &action) == -1)
		return -1;
	if (p->default_line[dir] != 0)
		return perr(p, st->line, "default: duplicate %s (first at "
		    "line %d)", policy_dir_names[dir], p->default_line[dir]);
	p->default_line[dir] = st->line;
	p->pol->default_action[dir] = (enum policy_action)action;
	return 0;
}

/*
 * parse_match - "NAMES" that a verified certificate may carry instead of
 * the name it would be checked for: a quoted, space separated list of
 * host names, each valid (a wildcard is the certificate's, never ours)
 */
static int
parse_match(struct parser *p, int line, const char *what, const char *s)
{
	const char *m;
	char one[256];
	size_t k;

	for (m = s; *m != '\0'; m += k) {
		m += strspn(m, " ");
		if ((k = strcspn(m, " ")) == 0)
			break;
		snprintf(one, sizeof(one), "%.*s", (int)k, m);
		if (k >= sizeof(one) || !policy_valid_domain(one))
			return perr(p, line, "%s: bad name \"%.*s\"", what,
			    (int)k, m);
	}
	if (strspn(s, " ") == strlen(s))
		return perr(p, line, "%s: no name", what);
	return 0;
}

/* Postfix's names for two of the levels, as tls-policy spells them */
static const char *const cstls_alias[] = { "none", "may", "encrypt",
	"verify", NULL };

/*
 * kw_cstls - "client-server tls none|opportunistic|require|verify
 * [match "NAMES"] [ca-file FILE]" (may and encrypt for opportunistic and
 * require); match and ca-file only with verify
 */
static int
kw_cstls(struct parser *p, struct stmt *st)
{
	struct policy *pol = p->pol;
	int i, mode;

	if ((mode = policy_name_index(cstls_alias, st->argv[1])) == -1 &&
	    parse_enum(p, st->line, "client-server tls", st->argv[1],
	    policy_cstls_names, &mode) == -1)
		return -1;
	pol->cs_tls = (enum policy_cstls)mode;
	for (i = 2; i < st->argc; i += 2) {
		if (i + 1 >= st->argc)
			return perr(p, st->line, "client-server tls: missing "
			    "argument after \"%s\"", st->argv[i]);
		if (pol->cs_tls != POLICY_CSTLS_VERIFY)
			return perr(p, st->line, "client-server tls: %s needs "
			    "the level verify", st->argv[i]);
		if (strcmp(st->argv[i], "match") == 0 && pol->cs_match == NULL) {
			if (parse_match(p, st->line, "client-server tls match",
			    st->argv[i + 1]) == -1)
				return -1;
			pol->cs_match = xstrdup(st->argv[i + 1]);
		} else if (strcmp(st->argv[i], "ca-file") == 0 &&
		    pol->cs_ca_file == NULL) {
			if (st->argv[i + 1][0] == '\0')
				return perr(p, st->line, "client-server tls "
				    "ca-file: one file name expected");
			pol->cs_ca_file = rel_path(p, st->argv[i + 1]);
			if (access(pol->cs_ca_file, R_OK) == -1)
				return perr(p, st->line, "client-server tls "
				    "ca-file \"%s\": %s", pol->cs_ca_file,
				    strerror(errno));
		} else
			return perr(p, st->line, "client-server tls: "
			    "unexpected argument \"%s\"", st->argv[i]);
	}
	return 0;
}

/* kw_csmatch - "client-server match NETWORK "NAMES"": what a verified
 * upstream in NETWORK must be named; the first network that holds the
 * address dialled wins */
static int
kw_csmatch(struct parser *p, struct stmt *st)
{
	struct policy *pol = p->pol;
	struct policy_csmatch m;

	if (st->argc != 3)
		return perr(p, st->line, "client-server match: NETWORK "
		    "\"NAMES\" expected");
	if (addr_net_parse(st->argv[1], &m.net) == -1)
		return perr(p, st->line, "client-server match: bad network "
		    "\"%s\"", st->argv[1]);
	if (parse_match(p, st->line, "client-server match", st->argv[2]) == -1)
		return -1;
	if (p->csmatch_line == 0)
		p->csmatch_line = st->line;
	m.names = xstrdup(st->argv[2]);
	pol->csmatch = xreallocarray(pol->csmatch, pol->ncsmatch + 1,
	    sizeof(*pol->csmatch));
	pol->csmatch[pol->ncsmatch++] = m;
	return 0;
}

/*
 * kw_clientserver - "client-server default honour|ignore" and
 * "client-server tls ..." (kw_cstls), each at most once, and
 * "client-server match NET NAMES" (kw_csmatch), any number
 */
static int
kw_clientserver(struct parser *p, struct stmt *st)
{
	int k;

	if (strcmp(st->argv[0], "match") == 0)
		return kw_csmatch(p, st);
	if ((k = policy_name_index(cs_names, st->argv[0])) == -1)
		return perr(p, st->line, "client-server: expected \"default\", "
		    "\"tls\" or \"match\", got \"%s\"", st->argv[0]);
	if (p->cs_line[k] != 0)
		return perr(p, st->line, "client-server: duplicate %s (first "
		    "at line %d)", cs_names[k], p->cs_line[k]);
	p->cs_line[k] = st->line;
	if (k == 0) {
		if (st->argc != 2)
			return perr(p, st->line, "client-server default: one "
			    "of honour or ignore expected");
		return parse_enum(p, st->line, "client-server", st->argv[1],
		    honour_names, &p->pol->default_honour);
	}
	return kw_cstls(p, st);
}

/*
 * kw_hidebox - "hide-box outgoing yes|no", globally or in a port block:
 * the live relay connects from the client's address.  The incoming side
 * is the hide-box of a domain block.
 */
static int
kw_hidebox(struct parser *p, struct stmt *st)
{
	int *field, v;

	if (strcmp(st->argv[0], "incoming") == 0)
		return perr(p, st->line, "hide-box: incoming is set per "
		    "domain, in its block");
	if (strcmp(st->argv[0], "outgoing") != 0)
		return perr(p, st->line, "hide-box: expected \"outgoing\", got "
		    "\"%s\"", st->argv[0]);
	if (parse_enum(p, st->line, "hide-box", st->argv[1], bool_names,
	    &v) == -1)
		return -1;
	field = p->base == (void *)p->pol ? &p->pol->hide_box_out :
	    &((struct policy_port *)p->base)->hide_box;
	*field = !v;		/* "yes" is listed first */
	return 0;
}

/* kw_honour - "honour|ignore client-server [from NET] [port NAME]" */
static int
kw_honour(struct parser *p, struct stmt *st)
{
	struct policy_honour h;
	const char *name = st->kw->name;
	int i;

	memset(&h, 0, sizeof(h));
	h.honour = strcmp(name, "honour") == 0;
	if (strcmp(st->argv[0], "client-server") != 0)
		return perr(p, st->line, "%s: expected \"client-server\", got "
		    "\"%s\"", name, st->argv[0]);
	for (i = 1; i < st->argc; i += 2) {
		if (i + 1 >= st->argc)
			return perr(p, st->line, "%s: missing argument after "
			    "\"%s\"", name, st->argv[i]);
		if (strcmp(st->argv[i], "from") == 0 && !h.has_net) {
			if (addr_net_parse(st->argv[i + 1], &h.net) == -1)
				return perr(p, st->line, "%s: bad network "
				    "\"%s\"", name, st->argv[i + 1]);
			h.has_net = 1;
		} else if (strcmp(st->argv[i], "port") == 0 &&
		    h.port[0] == '\0') {
			if (!valid_ifname(st->argv[i + 1]))
				return perr(p, st->line, "%s: bad port name "
				    "\"%s\"", name, st->argv[i + 1]);
			snprintf(h.port, sizeof(h.port), "%s", st->argv[i + 1]);
		} else
			return perr(p, st->line, "%s: unexpected argument "
			    "\"%s\"", name, st->argv[i]);
	}
	p->pol->honours = xreallocarray(p->pol->honours, p->pol->nhonours + 1,
	    sizeof(*p->pol->honours));
	p->pol->honours[p->pol->nhonours++] = h;
	return 0;
}

/* kw_bypass - "bypass client|server NET" */
static int
kw_bypass(struct parser *p, struct stmt *st)
{
	struct addr_net net, **list;
	size_t *n;

	if (strcmp(st->argv[0], "client") == 0) {
		list = &p->pol->bypass_client;
		n = &p->pol->nbypass_client;
	} else if (strcmp(st->argv[0], "server") == 0) {
		list = &p->pol->bypass_server;
		n = &p->pol->nbypass_server;
	} else
		return perr(p, st->line, "bypass: expected client or server, "
		    "got \"%s\"", st->argv[0]);
	if (addr_net_parse(st->argv[1], &net) == -1)
		return perr(p, st->line, "bypass: bad network \"%s\"",
		    st->argv[1]);
	*list = xreallocarray(*list, *n + 1, sizeof(**list));
	(*list)[(*n)++] = net;
	return 0;
}

/* read_auth - "username password" from the relay host's auth file */
static int
read_auth(struct parser *p, int line, struct policy_relayhost *r)
{
	char buf[1024], user[512], pass[512], extra[2];
	struct stat st;
	FILE *fp;
	int rv = -1, n;

	if ((fp = fopen(r->auth_file, "r")) == NULL)
		return perr(p, line, "relay-host: auth file \"%s\": %s",
		    r->auth_file, strerror(errno));
	if (fstat(fileno(fp), &st) == 0 && (st.st_mode & S_IROTH))
		log_warnx("%s:%d: relay-host: auth file \"%s\" is world-"
		    "readable", p->path, line, r->auth_file);
	while (fgets(buf, sizeof(buf), fp) != NULL) {
		n = sscanf(buf, " %511s %511s %1s", user, pass, extra);
		if (n <= 0 || user[0] == '#')
			continue;
		if (n != 2)
			break;
		r->auth_user = xstrdup(user);
		r->auth_pass = xstrdup(pass);
		rv = 0;
		break;
	}
	if (rv == -1)
		perr(p, line, "relay-host: auth file \"%s\": expected a line "
		    "\"username password\"", r->auth_file);
	explicit_bzero(buf, sizeof(buf));
	explicit_bzero(pass, sizeof(pass));
	fclose(fp);
	return rv;
}

/*
 * kw_relayhost - "relay-host HOST [port N] [tls MODE] [auth FILE]
 * [auth-plaintext yes|no] [verify yes|no] [ca-file FILE]"
 */
static int
kw_relayhost(struct parser *p, struct stmt *st)
{
	struct policy_relayhost *r = &p->pol->relay;
	int i, mode, seen_port = 0, seen_tls = 0, auth_line = 0;
	int seen_plain = 0, seen_verify = 0;

	if (check_host(p, st->line, "relay-host", st->argv[0]) == -1)
		return -1;
	r->host = xstrdup(st->argv[0]);
	for (i = 1; i < st->argc; i += 2) {
		if (i + 1 >= st->argc)
			return perr(p, st->line, "relay-host: missing argument "
			    "after \"%s\"", st->argv[i]);
		if (strcmp(st->argv[i], "port") == 0 && !seen_port++) {
			if (parse_port(p, st->line, "relay-host port",
			    st->argv[i + 1], &r->port) == -1)
				return -1;
		} else if (strcmp(st->argv[i], "tls") == 0 && !seen_tls++) {
			if (parse_enum(p, st->line, "relay-host tls",
			    st->argv[i + 1], policy_uptls_names, &mode) == -1)
				return -1;
			r->tls = (enum policy_uptls)mode;
		} else if (strcmp(st->argv[i], "auth") == 0 && !auth_line) {
			if (st->argv[i + 1][0] == '\0')
				return perr(p, st->line, "relay-host: empty "
				    "file name");
			r->auth_file = rel_path(p, st->argv[i + 1]);
			auth_line = st->line;
		} else if (strcmp(st->argv[i], "auth-plaintext") == 0 &&
		    !seen_plain++) {
			if (parse_enum(p, st->line, "relay-host auth-plaintext",
			    st->argv[i + 1], bool_names, &mode) == -1)
				return -1;
			r->auth_plaintext = mode == 0;
		} else if (strcmp(st->argv[i], "verify") == 0 &&
		    !seen_verify++) {
			if (parse_enum(p, st->line, "relay-host verify",
			    st->argv[i + 1], bool_names, &mode) == -1)
				return -1;
			r->verify = mode == 0;
		} else if (strcmp(st->argv[i], "ca-file") == 0 &&
		    r->ca_file == NULL) {
			if (st->argv[i + 1][0] == '\0')
				return perr(p, st->line, "relay-host: empty "
				    "file name");
			r->ca_file = rel_path(p, st->argv[i + 1]);
		} else
			return perr(p, st->line, "relay-host: unexpected "
			    "argument \"%s\"", st->argv[i]);
	}
	/* a verified certificate needs TLS: opportunistic becomes required */
	if (r->verify && r->tls == POLICY_UPTLS_NONE)
		return perr(p, st->line, "relay-host: verify yes needs TLS, "
		    "not tls none");
	if (r->verify && r->tls == POLICY_UPTLS_OPPORTUNISTIC)
		r->tls = POLICY_UPTLS_STARTTLS;
	if (r->ca_file != NULL && !r->verify)
		return perr(p, st->line, "relay-host: ca-file without "
		    "verify yes");
	if (r->ca_file != NULL && access(r->ca_file, R_OK) == -1)
		return perr(p, st->line, "relay-host: ca-file \"%s\": %s",
		    r->ca_file, strerror(errno));
	if (auth_line != 0)
		return read_auth(p, st->line, r);
	return 0;
}

/* rule_addr - "<>", "any", "ADDR" or "@DOMAIN" for a match rule */
static int
rule_addr(struct parser *p, int line, const char *what, const char *s,
    char **out, int *null)
{
	struct sockaddr_storage ss;
	const char *at, *dom;
	char *lit, *d;
	int ok;

	if (strcmp(s, "any") == 0)
		return 0;
	if (null != NULL && strcmp(s, "<>") == 0) {
		*null = 1;
		return 0;
	}
	if ((at = strrchr(s, '@')) == NULL)
		return perr(p, line, "match: bad %s address \"%s\"", what, s);
	dom = at + 1;
	if (dom[0] == '[') {		/* [192.0.2.1] or [IPv6:2001:db8::1] */
		lit = xstrdup(dom + (strncasecmp(dom, "[IPv6:", 6) == 0 ?
		    6 : 1));
		ok = strlen(lit) > 0 && lit[strlen(lit) - 1] == ']';
		if (ok)
			lit[strlen(lit) - 1] = '\0';
		ok = ok && addr_parse(lit, 0, &ss) == 0 &&
		    (ss.ss_family == AF_INET6) == (dom[1] == 'I' ||
		    dom[1] == 'i');
		free(lit);
	} else
		ok = policy_valid_domain(dom);
	if (!ok || strchr(s, ' ') != NULL)
		return perr(p, line, "match: bad %s address \"%s\"", what, s);
	d = norm_domain(dom);
	xasprintf(out, "%.*s@%s", (int)(at - s), s, d);
	free(d);
	return 0;
}

/* reply_class_ok - the reply text's enhanced status code fits the verdict */
static int
reply_class_ok(const char *msg, enum policy_verdict v)
{
	if (!isdigit((unsigned char)msg[0]) || msg[1] != '.')
		return 1;		/* no enhanced code: any text goes */
	if (v == POLICY_REJECT)
		return msg[0] == '5';
	if (v == POLICY_TEMPFAIL)
		return msg[0] == '4';
	return msg[0] == '2';
}

/* check_reply - printable text, no SMTP reply code of its own */
static int
check_reply(struct parser *p, int line, const char *msg,
    enum policy_verdict v)
{
	const char *c;

	if (msg[0] == '\0' || strlen(msg) > PARSE_MAXTEXT)
		return perr(p, line, "match: reply text must be 1-%d "
		    "characters", PARSE_MAXTEXT);
	for (c = msg; *c != '\0'; c++)
		if (!isprint((unsigned char)*c))
			return perr(p, line, "match: reply text must be "
			    "printable ASCII");
	if (isdigit((unsigned char)msg[0]) && isdigit((unsigned char)msg[1]) &&
	    isdigit((unsigned char)msg[2]) && (msg[3] == ' ' || msg[3] == '\0'))
		return perr(p, line, "match: reply text must not start with "
		    "a reply code");
	if (!reply_class_ok(msg, v))
		return perr(p, line, "match: status code \"%c.x.x\" does not "
		    "fit %s", msg[0], policy_verdict_names[v]);
	return 0;
}

/* rule_free - the strings of a rule that was not kept */
static void
rule_free(struct policy_rule *r)
{
	free(r->from);
	free(r->to);
	free(r->message);
}

/* rule_option - one "from X", "to X", "client NET", "auth" or "noauth" */
static int
rule_option(struct parser *p, struct stmt *st, int *i, struct policy_rule *r,
    int seen[4])
{
	const char *opt = st->argv[*i], *val = st->argv[*i + 1];
	int k;

	if (strcmp(opt, "auth") == 0 || strcmp(opt, "noauth") == 0)
		k = 3;
	else if ((k = strcmp(opt, "from") == 0 ? 0 : strcmp(opt, "to") == 0 ?
	    1 : strcmp(opt, "client") == 0 ? 2 : -1) == -1)
		return perr(p, st->line, "match: unexpected argument \"%s\"",
		    opt);
	if (seen[k]++)
		return perr(p, st->line, "match: duplicate \"%s\"", opt);
	if (k == 3) {
		r->auth = strcmp(opt, "auth") == 0;
		(*i)++;
		return 0;
	}
	if (val == NULL)
		return perr(p, st->line, "match: missing argument after \"%s\"",
		    opt);
	*i += 2;
	if (k == 0)
		return rule_addr(p, st->line, "sender", val, &r->from,
		    &r->from_null);
	if (k == 1 && strcmp(val, "protected") == 0) {
		r->to_protected = 1;
		return 0;
	}
	if (k == 1)
		return rule_addr(p, st->line, "recipient", val, &r->to, NULL);
	if (addr_net_parse(val, &r->net) == -1)
		return perr(p, st->line, "match: bad network \"%s\"", val);
	r->has_net = 1;
	return 0;
}

/* kw_match - "match [from X] [to X] [client NET] [auth|noauth] VERDICT [TEXT]" */
static int
kw_match(struct parser *p, struct stmt *st)
{
	struct policy_rule r;
	int i = 0, v, seen[4] = { 0, 0, 0, 0 };

	memset(&r, 0, sizeof(r));
	r.line = st->line;
	r.auth = -1;
	st->argv[st->argc] = NULL;
	while (i < st->argc && (v = policy_name_index(policy_verdict_names,
	    st->argv[i])) == -1)
		if (rule_option(p, st, &i, &r, seen) == -1)
			goto fail;
	if (i >= st->argc) {
		perr(p, st->line, "match: missing relay, reject, discard or "
		    "tempfail");
		goto fail;
	}
	r.verdict = (enum policy_verdict)v;
	if (i + 2 < st->argc) {
		perr(p, st->line, "match: unexpected argument \"%s\"",
		    st->argv[i + 2]);
		goto fail;
	}
	if (i + 1 < st->argc) {
		if (check_reply(p, st->line, st->argv[i + 1], r.verdict) == -1)
			goto fail;
		r.message = xstrdup(st->argv[i + 1]);
	}
	p->pol->rules = xreallocarray(p->pol->rules, p->pol->nrules + 1,
	    sizeof(*p->pol->rules));
	p->pol->rules[p->pol->nrules++] = r;
	return 0;
 fail:
	rule_free(&r);
	return -1;
}

/*
 * Blocks
 */

/* kw_port_action - "incoming|outgoing ACTION" in a port block */
static int
kw_port_action(struct parser *p, struct stmt *st)
{
	size_t idx = p->pol->nports - 1;
	int dir = strcmp(st->kw->name, "outgoing") == 0, action;

	if (parse_enum(p, st->line, st->kw->name, st->argv[0],
	    policy_action_names, &action) == -1)
		return -1;
	p->pol->ports[idx].action[dir] = (enum policy_action)action;
	p->portset[idx] |= 1U << dir;
	return 0;
}

static const struct keyword port_kw[] = {
	{ "incoming", 1, 1, 0, kw_port_action, V_FN, 0, 0, 0, NULL },
	{ "outgoing", 1, 1, 0, kw_port_action, V_FN, 0, 0, 0, NULL },
	{ "accept-to-box", 1, 1, 0, NULL, V_BOOL,
	    offsetof(struct policy_port, accept_to_box), 0, 0, NULL },
	{ "client-server", 1, 1, 0, NULL, V_ENUM,
	    offsetof(struct policy_port, honour), 0, 0, honour_names },
	{ "hide-box", 2, 2, 0, kw_hidebox, V_FN, 0, 0, 0, NULL },
	{ NULL, 0, 0, 0, NULL, V_FN, 0, 0, 0, NULL }
};
_Static_assert(sizeof(port_kw) / sizeof(port_kw[0]) <= PARSE_MAXKW,
    "parse_block's seen[] holds every keyword of port_kw");

/* kw_port - "port NAME { ... }" */
static int
kw_port(struct parser *p, struct stmt *st)
{
	struct policy *pol = p->pol;
	struct policy_port *pp;
	const char *name = st->argv[0];
	size_t i;

	if (!valid_ifname(name))
		return perr(p, st->line, "port: bad port name \"%s\"", name);
	for (i = 0; i < pol->nports; i++)
		if (strcmp(pol->ports[i].name, name) == 0)
			return perr(p, st->line, "duplicate port \"%s\"", name);
	pol->ports = xreallocarray(pol->ports, pol->nports + 1,
	    sizeof(*pol->ports));
	p->portset = xreallocarray(p->portset, pol->nports + 1,
	    sizeof(*p->portset));
	p->portset[pol->nports] = 0;
	pp = &pol->ports[pol->nports];
	memset(pp, 0, sizeof(*pp));
	snprintf(pp->name, sizeof(pp->name), "%s", name);
	pp->honour = -1;
	pp->hide_box = -1;
	pol->nports++;
	p->base = pp;
	return parse_block(p, port_kw, "port", st->line);
}

/* addr_add - one resolved address, with port, unless already listed */
static int
addr_add(struct sockaddr_storage *list, int *n, const struct sockaddr *sa,
    socklen_t salen, uint16_t port)
{
	struct sockaddr_storage ss;
	int i;

	if (*n >= POLICY_MAXADDR || salen > sizeof(ss) ||
	    (sa->sa_family != AF_INET && sa->sa_family != AF_INET6))
		return -1;
	memset(&ss, 0, sizeof(ss));
	memcpy(&ss, sa, salen);
	addr_unmap(&ss);
	for (i = 0; i < *n; i++)
		if (addr_equal_ip((struct sockaddr *)&ss,
		    (struct sockaddr *)&list[i]))
			return -1;
	if (ss.ss_family == AF_INET)
		((struct sockaddr_in *)&ss)->sin_port = htons(port);
	else
		((struct sockaddr_in6 *)&ss)->sin6_port = htons(port);
	list[(*n)++] = ss;
	return 0;
}

/*
 * resolve - append a host's addresses to list: a numeric one as is (an
 * address listed twice is an error), a name by DNS (addresses already
 * listed are skipped).  hosts, if given, gets the host as written for
 * each address added.
 */
static int
resolve(struct parser *p, int line, const char *name, const char *host,
    uint16_t port, struct sockaddr_storage *list, char **hosts, int *n)
{
	struct addrinfo hints, *res, *ai;
	struct sockaddr_storage ss;
	int e, i, first = *n, found = 0;

	if (addr_parse(host, port, &ss) == 0) {
		if (*n >= POLICY_MAXADDR)
			return perr(p, line, "%s: more than %d addresses", name,
			    POLICY_MAXADDR);
		if (addr_add(list, n, (struct sockaddr *)&ss, sizeof(ss),
		    port) == -1)
			return perr(p, line, "%s: duplicate address \"%s\"",
			    name, host);
	} else {
		memset(&hints, 0, sizeof(hints));
		hints.ai_family = AF_UNSPEC;
		hints.ai_socktype = SOCK_STREAM;
		if ((e = getaddrinfo(host, NULL, &hints, &res)) != 0)
			return perr(p, line, "%s: cannot resolve \"%s\": %s",
			    name, host, gai_strerror(e));
		for (ai = res; ai != NULL; ai = ai->ai_next) {
			found += ai->ai_family == AF_INET ||
			    ai->ai_family == AF_INET6;
			addr_add(list, n, ai->ai_addr, ai->ai_addrlen, port);
		}
		freeaddrinfo(res);
		if (found == 0)
			return perr(p, line, "%s: no address for \"%s\"", name,
			    host);
	}
	for (i = first; hosts != NULL && i < *n; i++)
		hosts[i] = xstrdup(host);
	return 0;
}

/*
 * kw_server - "server HOST... [port N]", repeatable (a dual-stack server
 * is its IPv4 and its IPv6 address), and "fallback HOST [port N]".  Every
 * host is checked before any is looked up; names are resolved now.
 */
static int
kw_server(struct parser *p, struct stmt *st)
{
	struct policy_domain *d = p->dom;
	const char *name = st->kw->name;
	int fb = strcmp(name, "fallback") == 0;
	int i, nhost;
	uint16_t port = 25;
	char *s;

	for (nhost = 0; nhost < st->argc; nhost++)
		if (strcmp(st->argv[nhost], "port") == 0)
			break;
	if (nhost + 1 == st->argc)
		return perr(p, st->line, "%s: missing argument after \"port\"",
		    name);
	if (nhost + 2 < st->argc)
		return perr(p, st->line, "%s: unexpected argument \"%s\"",
		    name, st->argv[nhost + 2]);
	if (nhost == 0)
		return perr(p, st->line, "%s: missing host", name);
	if (fb && nhost > 1)
		return perr(p, st->line, "%s: unexpected argument \"%s\"",
		    name, st->argv[1]);
	if (nhost < st->argc && parse_port(p, st->line, name,
	    st->argv[nhost + 1], &port) == -1)
		return -1;
	for (i = 0; i < nhost; i++)
		if (check_host(p, st->line, name, st->argv[i]) == -1)
			return -1;
	if (fb) {
		d->fallback = xstrdup(st->argv[0]);
		d->fbport = port;
		return resolve(p, st->line, name, st->argv[0], port,
		    d->fbaddr, NULL, &d->nfbaddr);
	}
	if (d->server == NULL)
		d->port = port;
	for (i = 0; i < nhost; i++) {
		if (d->server == NULL)
			d->server = xstrdup(st->argv[i]);
		else {
			xasprintf(&s, "%s %s", d->server, st->argv[i]);
			free(d->server);
			d->server = s;
		}
		if (resolve(p, st->line, name, st->argv[i], port, d->addr,
		    d->host, &d->naddr) == -1)
			return -1;
	}
	return 0;
}

static const struct keyword domain_kw[] = {
	{ "server", 1, PARSE_MAXARGS - 1, KW_MULTI, kw_server, V_FN, 0, 0, 0,
	    NULL },
	{ "fallback", 1, 3, 0, kw_server, V_FN, 0, 0, 0, NULL },
	{ "tls", 1, 1, 0, NULL, V_ENUM,
	    offsetof(struct policy_domain, tls), 0, 0, policy_uptls_names },
	{ "deliver-via-server", 1, 1, 0, NULL, V_BOOL,
	    offsetof(struct policy_domain, deliver_via_server), 0, 0, NULL },
	{ "hide-box", 1, 1, 0, NULL, V_BOOL,
	    offsetof(struct policy_domain, hide_box), 0, 0, NULL },
	{ "verify-recipients", 1, 1, 0, NULL, V_BOOL,
	    offsetof(struct policy_domain, verify_recipients), 0, 0, NULL },
	{ NULL, 0, 0, 0, NULL, V_FN, 0, 0, 0, NULL }
};
_Static_assert(sizeof(domain_kw) / sizeof(domain_kw[0]) <= PARSE_MAXKW,
    "parse_block's seen[] holds every keyword of domain_kw");

/* kw_domain - "domain NAME { ... }"; a server is required */
static int
kw_domain(struct parser *p, struct stmt *st)
{
	struct policy *pol = p->pol;
	struct policy_domain *d;
	char *name;
	size_t i;

	if (!policy_valid_domain(st->argv[0]))
		return perr(p, st->line, "domain: bad domain name \"%s\"",
		    st->argv[0]);
	name = norm_domain(st->argv[0]);
	for (i = 0; i < pol->ndomains; i++)
		if (strcmp(pol->domains[i].name, name) == 0) {
			free(name);
			return perr(p, st->line, "duplicate domain \"%s\"",
			    st->argv[0]);
		}
	pol->domains = xreallocarray(pol->domains, pol->ndomains + 1,
	    sizeof(*pol->domains));
	d = &pol->domains[pol->ndomains++];
	memset(d, 0, sizeof(*d));
	d->name = name;
	d->port = 25;
	d->tls = POLICY_UPTLS_OPPORTUNISTIC;
	d->deliver_via_server = 1;
	p->dom = d;
	p->base = d;
	if (parse_block(p, domain_kw, "domain", st->line) == -1)
		return -1;
	if (d->server == NULL)
		return perr(p, st->line, "domain \"%s\": missing server",
		    d->name);
	return 0;
}

/*
 * kw_rate - "rate N per DURATION" in "queue" (every destination's) or
 * "destination" (its own); "rate none": no limit, over the queue's.
 * The struct policy_drate is at the keyword's offset in p->base.
 */
static int
kw_rate(struct parser *p, struct stmt *st)
{
	struct policy_drate *r = (struct policy_drate *)(void *)
	    ((char *)p->base + st->kw->off);
	uint64_t n, w;

	if (st->argc == 1 && strcmp(st->argv[0], "none") == 0) {
		r->n = r->per = 0;
		r->set = 1;
		return 0;
	}
	if (parse_num(p, st->line, "rate", st->argv[0], 1, POLICY_RATE_MAX,
	    &n) == -1)
		return -1;
	if (st->argc != 3)
		return perr(p, st->line, "rate: expected \"N per DURATION\" "
		    "or \"none\"");
	if (strcmp(st->argv[1], "per") != 0)
		return perr(p, st->line, "rate: expected \"per\", got \"%s\"",
		    st->argv[1]);
	if (parse_dur(p, st->line, "rate", st->argv[2], 1, DAY, &w) == -1)
		return -1;
	r->n = (unsigned)n;
	r->per = (unsigned)w;
	r->set = 1;
	return 0;
}

static const struct keyword queue_kw[] = {
	{ "retry-min", 1, 1, 0, NULL, V_DUR,
	    offsetof(struct policy_queue, retry_min), 1, DAY, NULL },
	{ "retry-max", 1, 1, 0, NULL, V_DUR,
	    offsetof(struct policy_queue, retry_max), 60, 7 * DAY, NULL },
	{ "lifetime", 1, 1, 0, NULL, V_DUR,
	    offsetof(struct policy_queue, lifetime), 3600, 60 * DAY, NULL },
	{ "warn", 1, 1, 0, NULL, V_DUR,
	    offsetof(struct policy_queue, warn), 0, 30 * DAY, NULL },
	{ "dsn-lifetime", 1, 1, 0, NULL, V_DUR,
	    offsetof(struct policy_queue, dsn_lifetime), 3600, 60 * DAY,
	    NULL },
	{ "dead-retention", 1, 1, 0, NULL, V_DUR,
	    offsetof(struct policy_queue, dead_retention), 0, 365 * DAY,
	    NULL },
	{ "min-free", 1, 1, 0, NULL, V_SIZE,
	    offsetof(struct policy_queue, min_free), 0, TB, NULL },
	{ "fsync", 1, 1, 0, NULL, V_BOOL,
	    offsetof(struct policy_queue, fsync), 0, 0, NULL },
	{ "concurrency", 1, 1, 0, NULL, V_UINT,
	    offsetof(struct policy_queue, concurrency), 1, 1000, NULL },
	{ "messages-per-connection", 1, 1, 0, NULL, V_UINT,
	    offsetof(struct policy_queue, msgs_per_conn), 1, 100000, NULL },
	{ "recipients-per-message", 1, 1, 0, NULL, V_UINT,
	    offsetof(struct policy_queue, rcpts_per_msg), 1, 100000, NULL },
	{ "rate", 1, 3, 0, kw_rate, V_FN,
	    offsetof(struct policy_queue, rate), 0, 0, NULL },
	{ "slow-after", 1, 1, 0, NULL, V_UINT,
	    offsetof(struct policy_queue, slow_after), 0, 1000, NULL },
	{ "slow-retry", 1, 1, 0, NULL, V_DUR,
	    offsetof(struct policy_queue, slow_retry), 1, 7 * DAY, NULL },
	{ "dns-timeout", 1, 1, 0, NULL, V_DUR,
	    offsetof(struct policy_queue, dns_timeout), 1, 600, NULL },
	{ "resolve-timeout", 1, 1, 0, NULL, V_DUR,
	    offsetof(struct policy_queue, resolve_timeout), 1, 3600, NULL },
	{ "max-addresses", 1, 1, 0, NULL, V_UINT,
	    offsetof(struct policy_queue, max_addresses), 1, 16, NULL },
	{ NULL, 0, 0, 0, NULL, V_FN, 0, 0, 0, NULL }
};
_Static_assert(sizeof(queue_kw) / sizeof(queue_kw[0]) <= PARSE_MAXKW,
    "parse_block's seen[] holds every keyword of queue_kw");

static const struct keyword shape_kw[] = {
	{ "concurrency", 1, 1, 0, NULL, V_UINT,
	    offsetof(struct policy_shape, concurrency), 1, 1000, NULL },
	{ "messages-per-connection", 1, 1, 0, NULL, V_UINT,
	    offsetof(struct policy_shape, msgs_per_conn), 1, 100000, NULL },
	{ "recipients-per-message", 1, 1, 0, NULL, V_UINT,
	    offsetof(struct policy_shape, rcpts_per_msg), 1, 100000, NULL },
	{ "rate", 1, 3, 0, kw_rate, V_FN,
	    offsetof(struct policy_shape, rate), 0, 0, NULL },
	{ NULL, 0, 0, 0, NULL, V_FN, 0, 0, 0, NULL }
};
_Static_assert(sizeof(shape_kw) / sizeof(shape_kw[0]) <= PARSE_MAXKW,
    "parse_block's seen[] holds every keyword of shape_kw");

/*
 * kw_destination - "destination NAME { concurrency N;
 * messages-per-connection N; recipients-per-message N; rate N per
 * DURATION }": NAME is a
 * destination domain or a next-hop host, ".NAME" the names below it
 */
static int
kw_destination(struct parser *p, struct stmt *st)
{
	struct policy *pol = p->pol;
	struct policy_shape *s;
	const char *name = st->argv[0];
	char *lc;
	size_t i;

	if (!policy_valid_domain(name[0] == '.' ? name + 1 : name))
		return perr(p, st->line, "destination: bad name \"%s\"",
		    name);
	lc = norm_domain(name);
	for (i = 0; i < pol->nshapes; i++)
		if (strcmp(pol->shapes[i].name, lc) == 0) {
			free(lc);
			return perr(p, st->line, "duplicate destination "
			    "\"%s\"", name);
		}
	pol->shapes = xreallocarray(pol->shapes, pol->nshapes + 1,
	    sizeof(*pol->shapes));
	s = &pol->shapes[pol->nshapes++];
	memset(s, 0, sizeof(*s));
	s->name = lc;
	p->base = s;
	return parse_block(p, shape_kw, "destination", st->line);
}

/*
 * kw_msocket - a milter's "socket inet:ADDR:PORT | inet6:[ADDR]:PORT |
 * unix:/PATH" (Postfix's and the milters' own notation; "inet:PORT@ADDR"
 * as Sendmail writes it, too).  An address, not a name: nothing is
 * resolved on a session's path.
 */
static int
kw_msocket(struct parser *p, struct stmt *st)
{
	struct policy_milter *m = p->base;
	const char *s = st->argv[0], *host, *port;
	char buf[300], *at, *colon;
	uint16_t pn;

	free(m->socket);
	m->socket = xstrdup(s);
	if (strncmp(s, "unix:", 5) == 0 || strncmp(s, "local:", 6) == 0) {
		s = strchr(s, ':') + 1;
		if (s[0] != '/')
			return perr(p, st->line, "milter socket: \"%s\" is not "
			    "an absolute path", s);
		if (strlen(s) >= PARSE_SUNPATH)
			return perr(p, st->line, "milter socket: path longer "
			    "than %d bytes", PARSE_SUNPATH - 1);
		m->path = xstrdup(s);
		return 0;
	}
	if (strncmp(s, "inet:", 5) != 0 && strncmp(s, "inet6:", 6) != 0)
		return perr(p, st->line, "milter socket: expected inet:ADDR:PORT,"
		    " inet6:[ADDR]:PORT or unix:PATH, got \"%s\"", s);
	if (snprintf(buf, sizeof(buf), "%s", strchr(s, ':') + 1) >=
	    (int)sizeof(buf))
		return perr(p, st->line, "milter socket: too long");
	if ((at = strchr(buf, '@')) != NULL) {		/* PORT@ADDR */
		*at = '\0';
		port = buf;
		host = at + 1;
	} else if (buf[0] == '[' && (colon = strstr(buf, "]:")) != NULL) {
		*colon = '\0';
		host = buf + 1;
		port = colon + 2;
	} else if ((colon = strrchr(buf, ':')) != NULL) {
		*colon = '\0';
		host = buf;
		port = colon + 1;
	} else
		return perr(p, st->line, "milter socket: \"%s\" has no port",
		    s);
	if (host[0] == '[' && host[strlen(host) - 1] == ']') {
		host++;
		((char *)(uintptr_t)host)[strlen(host) - 1] = '\0';
	}
	if (parse_port(p, st->line, "milter socket port", port, &pn) == -1)
		return -1;
	if (addr_parse(host, pn, &m->addr) == -1)
		return perr(p, st->line, "milter socket: \"%s\" is not an IP "
		    "address", host);
	return 0;
}

static const struct keyword milter_kw[] = {
	{ "socket", 1, 1, 0, kw_msocket, V_FN, 0, 0, 0, NULL },
	{ "connect-timeout", 1, 1, 0, NULL, V_DUR,
	    offsetof(struct policy_milter, t_connect), 1, 600, NULL },
	{ "command-timeout", 1, 1, 0, NULL, V_DUR,
	    offsetof(struct policy_milter, t_command), 1, 3600, NULL },
	{ "content-timeout", 1, 1, 0, NULL, V_DUR,
	    offsetof(struct policy_milter, t_content), 1, 3600, NULL },
	{ "default-action", 1, 1, 0, NULL, V_ENUM,
	    offsetof(struct policy_milter, defact), 0, 0, policy_mact_names },
	{ NULL, 0, 0, 0, NULL, V_FN, 0, 0, 0, NULL }
};
_Static_assert(sizeof(milter_kw) / sizeof(milter_kw[0]) <= PARSE_MAXKW,
    "parse_block's seen[] holds every keyword of milter_kw");

/*
 * kw_milter - "milter NAME { socket ...; connect-timeout DUR;
 * command-timeout DUR; content-timeout DUR; default-action
 * tempfail|accept|reject }"
 */
static int
kw_milter(struct parser *p, struct stmt *st)
{
	struct policy *pol = p->pol;
	struct policy_milter *m;
	const char *name = st->argv[0];
	size_t i;

	if (!name_ok(name))
		return perr(p, st->line, "milter: bad name \"%s\"", name);
	for (i = 0; i < pol->nmilters; i++)
		if (strcmp(pol->milters[i].name, name) == 0)
			return perr(p, st->line, "duplicate milter \"%s\"",
			    name);
	pol->milters = xreallocarray(pol->milters, pol->nmilters + 1,
	    sizeof(*pol->milters));
	m = &pol->milters[pol->nmilters++];
	memset(m, 0, sizeof(*m));
	m->name = xstrdup(name);
	/* Postfix's milter_*_timeout defaults, and its default action */
	m->t_connect = 30;
	m->t_command = 30;
	m->t_content = 300;
	m->defact = POLICY_MACT_TEMPFAIL;
	p->base = m;
	if (parse_block(p, milter_kw, "milter", st->line) == -1)
		return -1;
	if (m->socket == NULL)
		return perr(p, st->line, "milter %s: missing socket", name);
	return 0;
}

/*
 * kw_milters - "milters incoming|outgoing [port NAME] NAME... | none":
 * named milters (blocks that may come later in the file) in order
 */
static int
kw_milters(struct parser *p, struct stmt *st)
{
	struct policy *pol = p->pol;
	struct policy_milterset *ms;
	const char *port = "";
	size_t i;
	int dir, a = 1;

	if (parse_enum(p, st->line, "milters", st->argv[0], policy_dir_names,
	    &dir) == -1)
		return -1;
	if (st->argc > 2 && strcmp(st->argv[1], "port") == 0) {
		port = st->argv[2];
		if (!valid_ifname(port))
			return perr(p, st->line, "milters: bad port name "
			    "\"%s\"", port);
		a = 3;
	}
	if (a >= st->argc)
		return perr(p, st->line, "milters: missing milter names (or "
		    "\"none\")");
	for (i = 0; i < pol->nmiltersets; i++)
		if (pol->miltersets[i].dir == (enum policy_dir)dir &&
		    strcmp(pol->miltersets[i].port, port) == 0)
			return perr(p, st->line, "duplicate milters %s%s%s",
			    st->argv[0], port[0] ? " port " : "", port);
	pol->miltersets = xreallocarray(pol->miltersets, pol->nmiltersets + 1,
	    sizeof(*pol->miltersets));
	ms = &pol->miltersets[pol->nmiltersets++];
	memset(ms, 0, sizeof(*ms));
	ms->dir = (enum policy_dir)dir;
	snprintf(ms->port, sizeof(ms->port), "%s", port);
	if (st->argc - a == 1 && strcmp(st->argv[a], "none") == 0)
		return 0;
	ms->idx = xcalloc((size_t)(st->argc - a), sizeof(*ms->idx));
	/* names are checked in finish_milters: a block may follow */
	for (; a < st->argc; a++) {
		if (strcmp(st->argv[a], "none") == 0)
			return perr(p, st->line, "milters: \"none\" stands "
			    "alone");
		ms->idx[ms->n++] = 0;
		p->milter_names = xreallocarray(p->milter_names,
		    p->nmilter_names + 1, sizeof(*p->milter_names));
		p->milter_names[p->nmilter_names].set = pol->nmiltersets - 1;
		p->milter_names[p->nmilter_names].pos = ms->n - 1;
		p->milter_names[p->nmilter_names].line = st->line;
		p->milter_names[p->nmilter_names++].name = st->argv[a];
	}
	return 0;
}

/* finish_milters - each name a "milters" line gives is a milter block */
static int
finish_milters(struct parser *p)
{
	struct policy *pol = p->pol;
	size_t i, k;

	for (i = 0; i < p->nmilter_names; i++) {
		for (k = 0; k < pol->nmilters; k++)
			if (strcmp(pol->milters[k].name,
			    p->milter_names[i].name) == 0)
				break;
		if (k == pol->nmilters)
			return perr(p, p->milter_names[i].line, "milters: no "
			    "milter \"%s\"", p->milter_names[i].name);
		pol->miltersets[p->milter_names[i].set].idx[
		    p->milter_names[i].pos] = k;
	}
	return 0;
}

/* kw_queue - "queue { ... }" */
static int
kw_queue(struct parser *p, struct stmt *st)
{
	p->queue_line = st->line;
	p->base = &p->pol->queue;
	return parse_block(p, queue_kw, "queue", st->line);
}

/* kw_connrate - "connection-rate N per DUR", or "connection-rate 0" */
static int
kw_connrate(struct parser *p, struct stmt *st)
{
	struct policy_limits *l = &p->pol->limits;
	uint64_t n, w;

	if (parse_num(p, st->line, "connection-rate", st->argv[0], 0, 100000,
	    &n) == -1)
		return -1;
	l->conn_rate = (unsigned)n;
	if (st->argc == 1 && n == 0)
		return 0;
	if (st->argc != 3)
		return perr(p, st->line, "connection-rate: expected \"N per "
		    "DURATION\"");
	if (strcmp(st->argv[1], "per") != 0)
		return perr(p, st->line, "connection-rate: expected \"per\", "
		    "got \"%s\"", st->argv[1]);
	if (parse_dur(p, st->line, "connection-rate", st->argv[2], 1, 3600,
	    &w) == -1)
		return -1;
	l->conn_rate_window = (unsigned)w;
	return 0;
}

/* kw_timeout - "timeout command|data|dot|connect DUR" */
static int
kw_timeout(struct parser *p, struct stmt *st)
{
	struct policy_limits *l = &p->pol->limits;
	unsigned *field[4] = { &l->t_cmd, &l->t_data, &l->t_dot,
	    &l->t_connect };
	char name[32];
	uint64_t v;
	int k;

	if (parse_enum(p, st->line, "timeout", st->argv[0], timeout_names,
	    &k) == -1)
		return -1;
	if (p->timeout_line[k] != 0)
		return perr(p, st->line, "timeout: duplicate %s (first at line "
		    "%d)", timeout_names[k], p->timeout_line[k]);
	p->timeout_line[k] = st->line;
	snprintf(name, sizeof(name), "timeout %s", timeout_names[k]);
	if (parse_dur(p, st->line, name, st->argv[1], 1,
	    k == 3 ? 600 : 3600, &v) == -1)
		return -1;
	*field[k] = (unsigned)v;
	return 0;
}

/* kw_rcpts - "recipients N": 1..10000, below RFC 5321's 100 warned */
static int
kw_rcpts(struct parser *p, struct stmt *st)
{
	uint64_t v;

	if (parse_num(p, st->line, "recipients", st->argv[0], 1, 10000,
	    &v) == -1)
		return -1;
	if (v < 100)
		log_warnx("%s:%d: recipients: %llu is below the 100 RFC 5321 "
		    "asks for", p->path, st->line, (unsigned long long)v);
	p->pol->limits.rcpts = (unsigned)v;
	return 0;
}

/* kw_sessions - "sessions N|auto": the global session cap */
static int
kw_sessions(struct parser *p, struct stmt *st)
{
	uint64_t v;

	if (strcmp(st->argv[0], "auto") == 0) {
		p->pol->limits.sessions = 0;
		return 0;
	}
	if (parse_num(p, st->line, "sessions", st->argv[0], 1, 1000000,
	    &v) == -1)
		return -1;
	p->pol->limits.sessions = (unsigned)v;
	return 0;
}

static const struct keyword limits_kw[] = {
	{ "connections-per-client", 1, 1, 0, NULL, V_UINT,
	    offsetof(struct policy_limits, conn_per_client), 0, 100000, NULL },
	{ "connection-rate", 1, 3, 0, kw_connrate, V_FN, 0, 0, 0, NULL },
	{ "client-ipv4-prefix", 1, 1, 0, NULL, V_UINT,
	    offsetof(struct policy_limits, client_prefix4), 8, 32, NULL },
	{ "client-ipv6-prefix", 1, 1, 0, NULL, V_UINT,
	    offsetof(struct policy_limits, client_prefix6), 32, 128, NULL },
	{ "sessions", 1, 1, 0, kw_sessions, V_FN, 0, 0, 0, NULL },
	{ "messages-per-session", 1, 1, 0, NULL, V_UINT,
	    offsetof(struct policy_limits, msgs_per_session), 1, 100000,
	    NULL },
	{ "recipients", 1, 1, 0, kw_rcpts, V_FN, 0, 0, 0, NULL },
	{ "size", 1, 1, 0, NULL, V_SIZE,
	    offsetof(struct policy_limits, size), KB, 4 * GB, NULL },
	{ "errors", 1, 1, 0, NULL, V_UINT,
	    offsetof(struct policy_limits, errors), 1, 1000, NULL },
	{ "command-line", 1, 1, 0, NULL, V_UINT,
	    offsetof(struct policy_limits, cmd_line), 512, 65536, NULL },
	{ "text-line", 1, 1, 0, NULL, V_UINT,
	    offsetof(struct policy_limits, text_line), 1000, 65536, NULL },
	{ "local-part", 1, 1, 0, NULL, V_UINT,
	    offsetof(struct policy_limits, localpart), 64, 1024, NULL },
	{ "domain", 1, 1, 0, NULL, V_UINT,
	    offsetof(struct policy_limits, domain), 255, 1024, NULL },
	{ "timeout", 2, 2, KW_MULTI, kw_timeout, V_FN, 0, 0, 0, NULL },
	{ "min-data-rate", 1, 1, 0, NULL, V_UINT,
	    offsetof(struct policy_limits, min_rate), 0, 1000000000, NULL },
	{ "hops", 1, 1, 0, NULL, V_UINT,
	    offsetof(struct policy_limits, hops), 1, 1000, NULL },
	{ NULL, 0, 0, 0, NULL, V_FN, 0, 0, 0, NULL }
};
_Static_assert(sizeof(limits_kw) / sizeof(limits_kw[0]) <= PARSE_MAXKW,
    "parse_block's seen[] holds every keyword of limits_kw");

/* kw_limits - "limits { ... }" */
static int
kw_limits(struct parser *p, struct stmt *st)
{
	p->base = &p->pol->limits;
	return parse_block(p, limits_kw, "limits", st->line);
}

static const char *const onfail_names[] = { "defer", "bounce", NULL };
static const char *const minproto_names[] = { "TLSv1.2", "TLSv1.3", NULL };

/*
 * kw_tlspolicy - "tls-policy default LEVEL [on-failure defer|bounce]",
 * "tls-policy domain|host NAME LEVEL [match "NAMES"] [on-failure ...]",
 * "tls-policy ca-file FILE", "tls-policy min-protocol TLSv1.2|TLSv1.3",
 * "tls-policy ciphers LIST", "tls-policy trust-ad loopback|yes|no"
 */
static int
kw_tlspolicy(struct parser *p, struct stmt *st)
{
	struct policy *pol = p->pol;
	struct policy_tlspol t, *dst;
	const char *what = st->argv[0], *name = NULL;
	char *lc;
	size_t k;
	int i, mode, seen_match = 0, seen_fail = 0;

	if (strcmp(what, "min-protocol") == 0 && st->argc == 2) {
		if (parse_enum(p, st->line, "tls-policy min-protocol",
		    st->argv[1], minproto_names, &mode) == -1)
			return -1;
		pol->tls_min_tls13 = mode == 1;
		return 0;
	}
	if (strcmp(what, "trust-ad") == 0 && st->argc == 2) {
		if (parse_enum(p, st->line, "tls-policy trust-ad",
		    st->argv[1], policy_trustad_names, &mode) == -1)
			return -1;
		pol->tls_trust_ad = (enum policy_trustad)mode;
		return 0;
	}
	if (strcmp(what, "ciphers") == 0 && st->argc == 2) {
		if (pol->tls_ciphers != NULL)
			return perr(p, st->line, "tls-policy ciphers: given "
			    "twice");
		if (tls_cipher_list_valid(st->argv[1]) == -1)
			return perr(p, st->line, "tls-policy ciphers: no "
			    "cipher in \"%s\"", st->argv[1]);
		pol->tls_ciphers = xstrdup(st->argv[1]);
		return 0;
	}
	if (strcmp(what, "ca-file") == 0) {
		if (st->argc != 2 || st->argv[1][0] == '\0')
			return perr(p, st->line, "tls-policy ca-file: one file "
			    "name expected");
		if (pol->tls_ca_file != NULL)
			return perr(p, st->line, "tls-policy ca-file: given "
			    "twice");
		pol->tls_ca_file = rel_path(p, st->argv[1]);
		if (access(pol->tls_ca_file, R_OK) == -1)
			return perr(p, st->line, "tls-policy ca-file \"%s\": "
			    "%s", pol->tls_ca_file, strerror(errno));
		return 0;
	}
	memset(&t, 0, sizeof(t));
	i = 1;
	if (strcmp(what, "domain") == 0 || strcmp(what, "host") == 0) {
		if (st->argc < 3)
			return perr(p, st->line, "tls-policy %s: NAME LEVEL "
			    "expected", what);
		name = st->argv[i++];
		/* ".example.com": every name below example.com */
		if (!policy_valid_domain(name[0] == '.' ? name + 1 : name))
			return perr(p, st->line, "tls-policy %s: bad name "
			    "\"%s\"", what, name);
		t.host = what[0] == 'h';
	} else if (strcmp(what, "default") != 0)
		return perr(p, st->line, "tls-policy: default, domain, host, "
		    "ca-file, min-protocol, ciphers or trust-ad expected, not "
		    "\"%s\"", what);
	if (parse_enum(p, st->line, "tls-policy level", st->argv[i++],
	    policy_tlslevel_names, &mode) == -1)
		return -1;
	t.level = (enum policy_tlslevel)mode;
	for (; i < st->argc; i += 2) {
		if (i + 1 >= st->argc)
			return perr(p, st->line, "tls-policy: missing argument "
			    "after \"%s\"", st->argv[i]);
		if (strcmp(st->argv[i], "on-failure") == 0 && !seen_fail++) {
			if (parse_enum(p, st->line, "tls-policy on-failure",
			    st->argv[i + 1], onfail_names, &mode) == -1)
				return -1;
			t.bounce = mode == 1;
		} else if (strcmp(st->argv[i], "match") == 0 && !seen_match++ &&
		    name != NULL) {
			if (parse_match(p, st->line, "tls-policy match",
			    st->argv[i + 1]) == -1)
				return -1;
			t.match = xstrdup(st->argv[i + 1]);
		} else {
			free(t.match);
			return perr(p, st->line, "tls-policy: unexpected "
			    "argument \"%s\"", st->argv[i]);
		}
	}
	if (t.match != NULL && t.level != POLICY_TLSL_VERIFY) {
		free(t.match);
		return perr(p, st->line, "tls-policy: match needs the level "
		    "verify");
	}
	if (name == NULL) {
		if (pol->tlsdef_set) {
			free(t.match);
			return perr(p, st->line, "tls-policy default: given "
			    "twice");
		}
		pol->tlsdef = t;
		pol->tlsdef_set = 1;
		return 0;
	}
	lc = norm_domain(name);
	for (k = 0; k < pol->ntlspol; k++)
		if (pol->tlspol[k].host == t.host &&
		    strcmp(pol->tlspol[k].name, lc) == 0) {
			free(lc);
			free(t.match);
			return perr(p, st->line, "tls-policy %s \"%s\": given "
			    "twice", what, name);
		}
	pol->tlspol = xreallocarray(pol->tlspol, pol->ntlspol + 1,
	    sizeof(*pol->tlspol));
	dst = &pol->tlspol[pol->ntlspol++];
	*dst = t;
	dst->name = lc;
	return 0;
}

/* kw_fbrelay - "fallback-relay HOST [port N] [after DURATION]" */
static int
kw_fbrelay(struct parser *p, struct stmt *st)
{
	struct policy_fallback *f = &p->pol->fbrelay;
	uint64_t v;
	int i, seen_port = 0, seen_after = 0;

	if (check_host(p, st->line, "fallback-relay", st->argv[0]) == -1)
		return -1;
	f->host = xstrdup(st->argv[0]);
	for (i = 1; i < st->argc; i += 2) {
		if (i + 1 >= st->argc)
			return perr(p, st->line, "fallback-relay: missing "
			    "argument after \"%s\"", st->argv[i]);
		if (strcmp(st->argv[i], "port") == 0 && !seen_port++) {
			if (parse_port(p, st->line, "fallback-relay port",
			    st->argv[i + 1], &f->port) == -1)
				return -1;
		} else if (strcmp(st->argv[i], "after") == 0 && !seen_after++) {
			if (parse_dur(p, st->line, "fallback-relay after",
			    st->argv[i + 1], 1, 60 * DAY, &v) == -1)
				return -1;
			f->after = (unsigned)v;
		} else
			return perr(p, st->line, "fallback-relay: unexpected "
			    "argument \"%s\"", st->argv[i]);
	}
	return 0;
}

/* kw_workers - "workers N|auto": worker loops, read once at start */
static int
kw_workers(struct parser *p, struct stmt *st)
{
	uint64_t v;

	if (strcmp(st->argv[0], "auto") == 0) {
		p->pol->workers = 0;
		return 0;
	}
	if (parse_num(p, st->line, "workers", st->argv[0], 1, POLICY_MAXWORKERS,
	    &v) == -1)
		return -1;
	p->pol->workers = (unsigned)v;
	p->workers_line = st->line;
	return 0;
}

static const struct keyword global_kw[] = {
	{ "hostname", 1, 1, 0, kw_hostname, V_FN, 0, 0, 0, NULL },
	{ "spool", 1, 1, 0, NULL, V_PATH,
	    offsetof(struct policy, spool), 0, PATH_MAX - 64, NULL },
	{ "pidfile", 1, 1, 0, NULL, V_PATH,
	    offsetof(struct policy, pidfile), 0, PATH_MAX - 1, NULL },
	{ "control", 1, 1, 0, NULL, V_PATH,
	    offsetof(struct policy, control), 0, PARSE_SUNPATH, NULL },
	{ "group", 1, 1, 0, kw_group, V_FN, 0, 0, 0, NULL },
	{ "user", 1, 1, 0, kw_user, V_FN, 0, 0, 0, NULL },
	{ "queue-number", 1, 1, 0, NULL, V_UINT,
	    offsetof(struct policy, queue_num), 0, 65535, NULL },
	{ "workers", 1, 1, 0, kw_workers, V_FN, 0, 0, 0, NULL },
	{ "classifier", 1, 1, 0, NULL, V_ENUM,
	    offsetof(struct policy, classifier), 0, 0, classifier_names },
	{ "queue-buffer", 1, 1, 0, NULL, V_SIZE,
	    offsetof(struct policy, queue_buffer), 4096, 256 << 20, NULL },
	{ "listen", 3, 3, KW_MULTI, kw_listen, V_FN, 0, 0, 0, NULL },
	{ "log", 2, 2, 0, kw_log, V_FN, 0, 0, 0, NULL },
	{ "metrics", 2, PARSE_MAXARGS - 1, KW_MULTI, kw_metrics, V_FN, 0, 0,
	    0, NULL },
	{ "shutdown-grace", 1, 1, 0, NULL, V_DUR,
	    offsetof(struct policy, shutdown_grace), 0, 3600, NULL },
	{ "tls", 4, 4, 0, kw_tls, V_FN, 0, 0, 0, NULL },
	{ "starttls", 2, 2, KW_MULTI, kw_starttls, V_FN, 0, 0, 0, NULL },
	{ "default", 2, 2, KW_MULTI, kw_default, V_FN, 0, 0, 0, NULL },
	{ "port", 1, 1, KW_BLOCK | KW_MULTI, kw_port, V_FN, 0, 0, 0, NULL },
	{ "domain", 1, 1, KW_BLOCK | KW_MULTI, kw_domain, V_FN, 0, 0, 0,
	    NULL },
	{ "relay-host", 1, 13, 0, kw_relayhost, V_FN, 0, 0, 0, NULL },
	{ "tls-policy", 2, 7, KW_MULTI, kw_tlspolicy, V_FN, 0, 0, 0, NULL },
	{ "fallback-relay", 1, 5, 0, kw_fbrelay, V_FN, 0, 0, 0, NULL },
	{ "destination", 1, 1, KW_BLOCK | KW_MULTI, kw_destination, V_FN, 0,
	    0, 0, NULL },
	{ "milter", 1, 1, KW_BLOCK | KW_MULTI, kw_milter, V_FN, 0, 0, 0,
	    NULL },
	{ "milters", 2, PARSE_MAXARGS - 1, KW_MULTI, kw_milters, V_FN, 0, 0,
	    0, NULL },
	{ "honour", 1, 5, KW_MULTI, kw_honour, V_FN, 0, 0, 0, NULL },
	{ "ignore", 1, 5, KW_MULTI, kw_honour, V_FN, 0, 0, 0, NULL },
	{ "client-server", 2, 6, KW_MULTI, kw_clientserver, V_FN, 0, 0, 0,
	    NULL },
	{ "hide-box", 2, 2, 0, kw_hidebox, V_FN, 0, 0, 0, NULL },
	{ "queue", 0, 0, KW_BLOCK, kw_queue, V_FN, 0, 0, 0, NULL },
	{ "limits", 0, 0, KW_BLOCK, kw_limits, V_FN, 0, 0, 0, NULL },
	{ "match", 1, PARSE_MAXARGS - 1, KW_MULTI, kw_match, V_FN, 0, 0, 0,
	    NULL },
	{ "bypass", 2, 2, KW_MULTI, kw_bypass, V_FN, 0, 0, 0, NULL },
	{ NULL, 0, 0, 0, NULL, V_FN, 0, 0, 0, NULL }
};
_Static_assert(sizeof(global_kw) / sizeof(global_kw[0]) <= PARSE_MAXKW,
    "parse_block's seen[] holds every keyword of global_kw");

/*
 * The statement walker
 */

/* kw_find - the entry of table named name, or NULL */
static const struct keyword *
kw_find(const struct keyword *table, const char *name)
{
	for (; table->name != NULL; table++)
		if (strcmp(table->name, name) == 0)
			return table;
	return NULL;
}

/*
 * read_stmt - keyword, its words, and an optional opening brace.  In a
 * block, a keyword of the top level most likely means that the block's
 * '}' is missing: the error says where the block began.
 */
static int
read_stmt(struct parser *p, const struct keyword *table, const char *block,
    int open_line, struct stmt *st)
{
	struct token *t = &p->toks[p->pos];
	size_t look;
	int open;

	memset(st, 0, sizeof(*st));
	st->line = t->line;
	if ((st->kw = kw_find(table, t->text)) == NULL && block != NULL &&
	    kw_find(global_kw, t->text) != NULL)
		return perr(p, t->line, "unknown keyword \"%s\" in %s block "
		    "opened at line %d (missing '}'?)", t->text, block,
		    open_line);
	if (st->kw == NULL)
		return perr(p, t->line, "unknown keyword \"%s\"%s%s%s",
		    t->text, block ? " in " : "", block ? block : "",
		    block ? " block" : "");
	for (t = &p->toks[++p->pos]; t->type == T_WORD ||
	    t->type == T_STRING; t = &p->toks[++p->pos]) {
		if (st->argc >= PARSE_MAXARGS - 1)
			return perr(p, t->line, "%s: too many arguments",
			    st->kw->name);
		st->argv[st->argc++] = t->text;
	}
	/* a block's brace may sit on the next line */
	for (look = p->pos; (st->kw->flags & KW_BLOCK) &&
	    p->toks[look].type == T_EOS; look++)
		;
	open = (st->kw->flags & KW_BLOCK) && p->toks[look].type == T_LBRACE;
	if ((st->kw->flags & KW_BLOCK) && !open)
		return perr(p, st->line, "%s: missing '{'", st->kw->name);
	if (open)
		p->pos = look + 1;
	else if (t->type == T_LBRACE)
		return perr(p, st->line, "%s: unexpected '{'", st->kw->name);
	if (st->argc < st->kw->minargs)
		return perr(p, st->line, "%s: missing argument", st->kw->name);
	if (st->argc > st->kw->maxargs)
		return perr(p, st->line, "%s: unexpected argument \"%s\"",
		    st->kw->name, st->argv[st->kw->maxargs]);
	return 0;
}

/*
 * parse_block - statements up to the closing brace (or the end of the
 * file at the top level), each dispatched through the keyword table
 */
static int
parse_block(struct parser *p, const struct keyword *table, const char *block,
    int open_line)
{
	void *base = p->base;
	struct stmt st;
	struct token *t;
	int seen[PARSE_MAXKW];	/* line a keyword was first seen on */

	memset(seen, 0, sizeof(seen));
	for (;;) {
		t = &p->toks[p->pos];
		switch (t->type) {
		case T_EOS:
			p->pos++;
			continue;
		case T_EOF:
			if (block != NULL)
				return perr(p, p->pos > 0 ?
				    p->toks[p->pos - 1].line : t->line,
				    "unterminated %s block opened at line %d "
				    "(missing '}')", block, open_line);
			return 0;
		case T_RBRACE:
			if (block == NULL)
				return perr(p, t->line, "unexpected '}'");
			p->pos++;
			return 0;
		case T_LBRACE:
			return perr(p, t->line, "unexpected '{'");
		case T_STRING:
			return perr(p, t->line, "expected a keyword, got "
			    "\"%s\"", t->text);
		case T_WORD:
			break;
		}
		if (read_stmt(p, table, block, open_line, &st) == -1)
			return -1;
		if (!(st.kw->flags & KW_MULTI) && seen[st.kw - table] != 0)
			return perr(p, st.line, "duplicate %s (first at line "
			    "%d)", st.kw->name, seen[st.kw - table]);
		seen[st.kw - table] = st.line;
		p->base = base;
		if ((st.kw->fn != NULL ? st.kw->fn : kw_value)(p, &st) == -1)
			return -1;
		p->base = base;
	}
}

/*
 * After the file
 */

/* finish_ports - actions a port block left out follow "default" */
static void
finish_ports(struct parser *p)
{
	struct policy *pol = p->pol;
	size_t i;
	int dir;

	for (i = 0; i < pol->nports; i++)
		for (dir = 0; dir < 2; dir++)
			if (!(p->portset[i] & (1U << dir)))
				pol->ports[i].action[dir] =
				    pol->default_action[dir];
}

/* finish - defaults that depend on other statements; cross checks */
static int
finish(struct parser *p)
{
	struct policy *pol = p->pol;
	char host[256];
	int dir;

	if (pol->hostname == NULL) {
		if (gethostname(host, sizeof(host)) == -1 || host[0] == '\0')
			snprintf(host, sizeof(host), "localhost");
		host[sizeof(host) - 1] = '\0';
		pol->hostname = xstrdup(host);
	}
	if (pol->listen_port[0] == pol->listen_port[1])
		return perr(p, p->listen_line[0] > p->listen_line[1] ?
		    p->listen_line[0] : p->listen_line[1], "listen: incoming "
		    "and outgoing ports must differ");
	for (dir = 0; dir < 2; dir++) {
		if (p->starttls_line[dir] == 0)
			pol->starttls[dir] = pol->tls_cert != NULL ?
			    POLICY_TLS_OFFER : POLICY_TLS_STRIP;
		else if (pol->starttls[dir] != POLICY_TLS_STRIP &&
		    pol->tls_cert == NULL)
			return perr(p, p->starttls_line[dir], "starttls: %s "
			    "%s needs a tls certificate", policy_dir_names[dir],
			    policy_starttls_names[pol->starttls[dir]]);
	}
	/* the live relay's upstream TLS follows the client side's unless set */
	if (p->cs_line[1] == 0)
		pol->cs_tls = pol->starttls[POLICY_DIR_OUT] == POLICY_TLS_REQUIRE ?
		    POLICY_CSTLS_REQUIRE : POLICY_CSTLS_OPPORTUNISTIC;
	/* names for a check that is not made would be a silent mistake */
	if (p->csmatch_line != 0 && pol->cs_tls != POLICY_CSTLS_VERIFY)
		return perr(p, p->csmatch_line, "client-server match: needs "
		    "client-server tls verify");
	finish_ports(p);
	if (finish_milters(p) == -1)
		return -1;
	/* each worker reads its own queue: queue-number .. +N-1 */
	if (pol->workers > 1 && pol->queue_num + pol->workers - 1 > 65535)
		return perr(p, p->workers_line, "workers: queues %u-%u run past "
		    "65535; lower queue-number", pol->queue_num,
		    pol->queue_num + pol->workers - 1);
	/* a list for no listener is a mistake, not a harmless no-op */
	if (p->metrics_allow_line != 0 && !pol->metrics)
		return perr(p, p->metrics_allow_line, "metrics allow: no "
		    "\"metrics listen\" to restrict");
	if (pol->queue.retry_min > pol->queue.retry_max)
		return perr(p, p->queue_line, "queue: retry-min must not "
		    "exceed retry-max");
	if (pol->queue.warn >= pol->queue.lifetime)
		return perr(p, p->queue_line, "queue: warn must be shorter "
		    "than lifetime");
	/* valid, but rarely meant: the gateway would protect nothing */
	if (pol->ndomains == 0)
		log_warnx("%s: no protected domain: every connection is "
		    "outgoing", p->path);
	return 0;
}

/* parser_dir - the folder of the config file, for relative names */
static char *
parser_dir(const char *path)
{
	const char *slash = strrchr(path, '/');

	if (slash == NULL)
		return xstrdup(".");
	if (slash == path)
		return xstrdup("/");
	return xstrndup(path, (size_t)(slash - path));
}

/* policy_load - parse path into a new snapshot (one reference), or NULL */
struct policy *
policy_load(const char *path, char *err, size_t errlen)
{
	struct parser p;
	char *buf = NULL;
	size_t len = 0, i;
	int rv = -1;

	memset(&p, 0, sizeof(p));
	p.path = path;
	p.err = err;
	p.errlen = errlen;
	if (errlen > 0)
		err[0] = '\0';
	p.dir = parser_dir(path);
	p.pol = policy_new(path);
	p.base = p.pol;
	if (read_file(&p, &buf, &len) == -1 || lex(&p, buf, len) == -1 ||
	    parse_block(&p, global_kw, NULL, 0) == -1 || finish(&p) == -1)
		goto done;
	rv = 0;
 done:
	for (i = 0; i < p.ntoks; i++)
		free(p.toks[i].text);
	free(p.toks);
	free(p.portset);
	free(p.milter_names);
	free(p.dir);
	free(buf);
	if (rv == -1) {
		policy_free(p.pol);
		return NULL;
	}
	return p.pol;
}
