/*
 * mxbridgectl.c - the control tool.  It finds the daemon's control socket
 * (from -s, or from the configuration file), sends one request line made
 * of its arguments, and prints the answer.  Exit status: 0 when the
 * daemon answered OK, 1 when it refused, 2 when it could not be reached
 * or its answer was not one (control_answer_parse, daemon/control.c).
 *
 * "history" is the one command it answers itself, from the daemon's log
 * file: the daemon need not run, and no log goes through the socket.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "../common/buf.h"
#include "../common/hash.h"
#include "../common/log.h"
#include "../common/xmalloc.h"
#include "../daemon/control.h"
#include "../policy/policy.h"

#define LOG_LINEMAX	16384	/* a longer line is not the daemon's */

static void __attribute__((noreturn))
usage(void)
{
	fprintf(stderr,
	    "usage: mxbridgectl [-f file | -s socket] command [arg ...]\n"
	    "commands: status, stats, queue list|summary [sender]|show ID|"
	    "flush [ID]|delete ID|bounce ID|\n"
	    "          hold ID [reason]|release ID, reload,\n"
	    "          history [-f logfile] [--since time] [--until time] "
	    "id|address|client-ip,\n"
	    "          log-summary [-f logfile] [--since time] "
	    "[--until time]\n");
	exit(2);
}

static int
ctl_connect(const char *path)
{
	struct sockaddr_un sun;
	int fd;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sun.sun_path)) {
		fprintf(stderr, "mxbridgectl: socket path too long: %s\n", path);
		return -1;
	}
	strcpy(sun.sun_path, path);
	if ((fd = socket(AF_UNIX, SOCK_STREAM, 0)) == -1) {
		fprintf(stderr, "mxbridgectl: socket: %s\n", strerror(errno));
		return -1;
	}
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == -1) {
		fprintf(stderr, "mxbridgectl: %s: %s (is mxbridge running?)\n",
		    path, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

/* ctl_request - send argv as one line, collect the whole answer */
static int
ctl_request(int fd, int argc, char **argv, struct buf *ans)
{
	struct buf req;
	char chunk[4096];
	ssize_t n;
	int i, rc = -1;

	buf_init(&req);
	for (i = 0; i < argc; i++) {
		if (strpbrk(argv[i], "\r\n") != NULL)
			goto done;
		buf_printf(&req, "%s%s", i ? " " : "", argv[i]);
	}
	buf_puts(&req, "\n");
	if (write(fd, req.data, req.len) != (ssize_t)req.len)
		goto done;
	while ((n = read(fd, chunk, sizeof(chunk))) > 0)
		buf_append(ans, chunk, (size_t)n);
	rc = n == 0 ? 0 : -1;
done:
	buf_free(&req);
	return rc;
}

/*
 * history - the daemon's log lines of one message, one address or one
 * client, in time order.  The log is read in passes: each pass adds the
 * queue ids and sessions that the lines of those already found name
 * (a message's session, the DSN it caused, a client's sessions' messages),
 * until a pass adds nothing; a last pass keeps the lines of the time
 * range (the links come from the whole file).  Session ids
 * start again at 1 with each run of the daemon, so a session is known by
 * its run too, counted by the "started:" and "stopped" lines.
 */
#define HIST_PASSES	8	/* links are at most a few deep */
#define HIST_IDMASK	((1ULL << 40) - 1)

enum hist_kind { HIST_ID, HIST_ADDR, HIST_CLIENT };

struct hist_query {
	enum hist_kind	 kind;
	uint64_t	 id;
	char		 addr[LOG_VIS_MAX + 2];	/* "<x@y>" as logged */
	int		 family;
	unsigned char	 ip[16];
	int		 port;			/* -1: any */
	long long	 since, until;		/* ms; lines in [since, until) */
};

/* an open-addressing set of 64-bit keys (queue ids, run and session) */
struct idset {
	uint64_t	*k, *v;		/* keys, and a value each (0) */
	unsigned char	*used;
	size_t		 cap, n;
};

static size_t
idset_slot(const struct idset *s, uint64_t k)
{
	size_t i = (size_t)((k * 0x9e3779b97f4a7c15ULL) >> 20) & (s->cap - 1);

	while (s->used[i] && s->k[i] != k)
		i = (i + 1) & (s->cap - 1);
	return i;
}

static int
idset_has(const struct idset *s, uint64_t k)
{
	return s->cap > 0 && s->used[idset_slot(s, k)];
}

/* idset_put - k with the value v; 1 when k is new, 0 when it was there
 * (its value then replaced) */
static int
idset_put(struct idset *s, uint64_t k, uint64_t v)
{
	struct idset g;
	size_t i;

	if (s->cap > 0 && s->used[i = idset_slot(s, k)]) {
		s->v[i] = v;
		return 0;
	}
	if ((s->n + 1) * 2 > s->cap) {
		g.cap = s->cap ? s->cap * 2 : 64;
		g.n = 0;
		g.k = xcalloc(g.cap, sizeof(*g.k));
		g.v = xcalloc(g.cap, sizeof(*g.v));
		g.used = xcalloc(g.cap, 1);
		for (i = 0; i < s->cap; i++)
			if (s->used[i])
				(void)idset_put(&g, s->k[i], s->v[i]);
		free(s->k);
		free(s->v);
		free(s->used);
		*s = g;
	}
	i = idset_slot(s, k);
	s->used[i] = 1;
	s->k[i] = k;
	s->v[i] = v;
	s->n++;
	return 1;
}

/* idset_add - 1 when k is new, 0 when it was there */
static int
idset_add(struct idset *s, uint64_t k)
{
	return idset_has(s, k) ? 0 : idset_put(s, k, 0);
}

/* idset_get - the value of k, 0 when it is not there */
static uint64_t
idset_get(const struct idset *s, uint64_t k)
{
	size_t i;

	if (s->cap == 0 || !s->used[i = idset_slot(s, k)])
		return 0;
	return s->v[i];
}

static void
idset_free(struct idset *s)
{
	free(s->k);
	free(s->v);
	free(s->used);
	memset(s, 0, sizeof(*s));
}

/* what one line says, for selecting and linking */
struct hist_line {
	long long	 ms;
	int		 nmsgid;
	uint64_t	 msgid[2];	/* msgid=, and "queued as" of a reply */
	uint64_t	 session;	/* 0: none */
	uint64_t	 dsn;		/* dsn=ID: the DSN it caused; 0 none */
	int		 has_dsn;
	int		 txn;		/* about a transaction: from= to= ... */
	int		 addr_hit;
	int		 client_hit;
	int		 has_client;	/* client=: a session's own line */
	int		 start, stop;
};

/* hex16 - a queue id (16 hex digits, then no more) */
static int
hex16(const char *s, size_t n, uint64_t *out)
{
	uint64_t v = 0;
	size_t i;
	int c;

	if (n != 16)
		return -1;
	for (i = 0; i < 16; i++) {
		c = tolower((unsigned char)s[i]);
		if (c >= '0' && c <= '9')
			v = v << 4 | (uint64_t)(c - '0');
		else if (c >= 'a' && c <= 'f')
			v = v << 4 | (uint64_t)(c - 'a' + 10);
		else
			return -1;
	}
	*out = v;
	return 0;
}

/* digits - n decimal digits at s, or -1 */
static int
digits(const char *s, int n)
{
	int i, v = 0;

	for (i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	return v;
}

/*
 * stamp_parse - the time at the start of a log line, in ms: the daemon's
 * own "YYYY-mm-ddTHH:MM:SS.mmm" (local time), the same with a zone (RFC
 * 3339 syslog, journalctl -o short-iso), or the classic syslog "Mmm dd
 * HH:MM:SS" (this year, or last year's if that would be ahead of now).
 * Returns the length of the stamp, 0 when there is none.
 */
static size_t
stamp_parse(const char *s, size_t n, long long *ms)
{
	static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
	static char lastkey[17];
	static time_t lastbase;
	struct tm tm;
	time_t t, now;
	size_t i;
	long off = 0;
	int frac = 0, zone = 0, sec, k;
	const char *m;

	memset(&tm, 0, sizeof(tm));
	if (n >= 19 && s[4] == '-' && s[7] == '-' && (s[10] == 'T' ||
	    s[10] == ' ') && s[13] == ':' && s[16] == ':') {
		if ((tm.tm_year = digits(s, 4)) < 0 ||
		    (tm.tm_mon = digits(s + 5, 2)) < 1 || tm.tm_mon > 12 ||
		    (tm.tm_mday = digits(s + 8, 2)) < 1 || tm.tm_mday > 31 ||
		    (tm.tm_hour = digits(s + 11, 2)) < 0 || tm.tm_hour > 23 ||
		    (tm.tm_min = digits(s + 14, 2)) < 0 || tm.tm_min > 59 ||
		    (sec = digits(s + 17, 2)) < 0 || sec > 60)
			return 0;
		i = 19;
		if (i < n && s[i] == '.') {
			for (k = 0, i++; i < n && s[i] >= '0' && s[i] <= '9';
			    i++, k++)
				if (k < 3)
					frac = frac * 10 + (s[i] - '0');
			for (; k < 3; k++)
				frac *= 10;
		}
		if (i < n && s[i] == 'Z') {
			zone = 1;
			i++;
		} else if (i + 5 <= n && (s[i] == '+' || s[i] == '-') &&
		    digits(s + i + 1, 2) >= 0) {
			k = s[i + 3] == ':' ? 4 : 3;
			if (i + (size_t)k + 2 > n || digits(s + i + k, 2) < 0)
				return 0;
			off = (digits(s + i + 1, 2) * 60L +
			    digits(s + i + k, 2)) * 60L;
			if (s[i] == '-')
				off = -off;
			zone = 1;
			i += (size_t)k + 2;
		}
		tm.tm_year -= 1900;
		tm.tm_mon -= 1;
		if (zone)
			t = timegm(&tm) - off;
		else if (memcmp(lastkey, s, 16) == 0)
			t = lastbase;
		else {
			/* mktime once a minute, not once a line */
			tm.tm_isdst = -1;
			t = mktime(&tm);
			memcpy(lastkey, s, 16);
			lastbase = t;
		}
		*ms = ((long long)t + sec) * 1000 + frac;
		return i;
	}
	if (n >= 15 && s[3] == ' ' && s[6] == ' ' && s[9] == ':' &&
	    s[12] == ':' && (m = memmem(months, 36, s, 3)) != NULL &&
	    (m - months) % 3 == 0) {
		now = time(NULL);
		localtime_r(&now, &tm);
		tm.tm_mon = (int)(m - months) / 3;
		if ((tm.tm_mday = digits(s + 4 + (s[4] == ' '),
		    1 + (s[4] != ' '))) < 1 ||
		    (tm.tm_hour = digits(s + 7, 2)) < 0 ||
		    (tm.tm_min = digits(s + 10, 2)) < 0 ||
		    (tm.tm_sec = digits(s + 13, 2)) < 0)
			return 0;
		tm.tm_isdst = -1;
		if ((t = mktime(&tm)) > now + 86400) {
			tm.tm_year--;
			tm.tm_isdst = -1;
			t = mktime(&tm);
		}
		*ms = (long long)t * 1000;
		return 15;
	}
	return 0;
}

/* list_has - is "<a>" one of the comma-separated elements of v? */
static int
list_has(const char *v, size_t n, const char *a)
{
	size_t al = strlen(a), i = 0;

	while (i + al <= n) {
		if (strncasecmp(v + i, a, al) == 0 &&
		    (i + al == n || v[i + al] == ','))
			return 1;
		while (i < n && v[i] != ',')
			i++;
		i++;
	}
	return 0;
}

/* client_is - does "a.b.c.d:port" or "[v6]:port" name the query's client? */
static int
client_is(const char *v, size_t n, const struct hist_query *q)
{
	char ip[INET6_ADDRSTRLEN + 1];
	unsigned char bin[16];
	const char *colon;
	size_t len;
	int port;

	if (n > 0 && v[0] == '[') {
		if ((colon = memchr(v, ']', n)) == NULL)
			return 0;
		len = (size_t)(colon - v - 1);
		v++;
		colon++;
	} else {
		if ((colon = memrchr(v, ':', n)) == NULL)
			return 0;
		len = (size_t)(colon - v);
	}
	if (len >= sizeof(ip) || (size_t)(colon - v) >= n || *colon != ':')
		return 0;
	memcpy(ip, v, len);
	ip[len] = '\0';
	if (inet_pton(q->family, ip, bin) != 1 ||
	    memcmp(bin, q->ip, q->family == AF_INET ? 4 : 16) != 0)
		return 0;
	if (q->port == -1)
		return 1;
	port = atoi(colon + 1);
	return port == q->port;
}

/* one word of a log line: key=value, key="value" (the quotes off, its
 * escapes kept) or a bare word (k, kl only, v NULL) */
struct kv {
	const char	*k, *v;
	size_t		 kl, vl;
};

/*
 * kv_next - the next word of [*s, e) into w; 0, or -1 at the end.  The
 * value of key="..." (a peer's text among them) is taken whole, so that
 * a server's reply with " to=<x>" in it is never a field of its own.
 */
static int
kv_next(const char **sp, const char *e, struct kv *w)
{
	const char *s = *sp;

	while (s < e && *s == ' ')
		s++;
	if (s == e)
		return -1;
	for (w->k = s; s < e && *s != ' ' && *s != '=' && *s != '"'; s++)
		;
	w->kl = (size_t)(s - w->k);
	w->v = NULL;
	w->vl = 0;
	if (s == e || *s != '=') {
		while (s < e && *s != ' ')
			s++;
		w->kl = (size_t)(s - w->k);
		*sp = s;
		return 0;
	}
	if (++s < e && *s == '"') {
		for (w->v = ++s; s < e && *s != '"'; s++)
			if (*s == '\\' && s + 1 < e)
				s++;
		w->vl = (size_t)(s - w->v);
		if (s < e)
			s++;
	} else {
		for (w->v = s; s < e && *s != ' '; s++)
			;
		w->vl = (size_t)(s - w->v);
	}
	*sp = s;
	return 0;
}

/* kv_is - is w's key the string key? */
static int
kv_is(const struct kv *w, const char *key)
{
	return w->v != NULL && strlen(key) == w->kl &&
	    memcmp(w->k, key, w->kl) == 0;
}

/*
 * line_parse - the fields of one line that history needs.  The values
 * of key="..." (a peer's text among them) are skipped whole, so that a
 * server's reply with " to=<x>" in it cannot make a line match.
 */
static int
line_parse(const char *s, size_t n, const struct hist_query *q,
    struct hist_line *l)
{
	const char *e = s + n, *qa, *v;
	struct kv w;
	size_t off, vl;
	uint64_t id;
	int words = 0, kv = 0, started = 0;

	memset(l, 0, sizeof(*l));
	if ((off = stamp_parse(s, n, &l->ms)) == 0)
		return -1;
	for (s += off; kv_next(&s, e, &w) == 0; ) {
		words++;
		if (w.v == NULL) {
			/* a word of text: "started:", "stopped" */
			if (w.kl == 8 && memcmp(w.k, "started:", 8) == 0)
				started = words;
			else if (w.kl == 7 && memcmp(w.k, "stopped", 7) == 0 &&
			    s + 1 >= e)
				l->stop = 1;
			continue;
		}
		/* the rest is a server's reply or a reason, not fields */
		if (kv_is(&w, "status"))
			break;
		kv++;
		v = w.v;
		vl = w.vl;
		if (kv == 1 && started == words - 1 && started > 0 &&
		    kv_is(&w, "version"))
			l->start = 1;
		if (kv_is(&w, "msgid") && hex16(v, vl, &id) == 0 &&
		    l->nmsgid < 2)
			l->msgid[l->nmsgid++] = id;
		else if (kv_is(&w, "session") && vl > 0 && vl < 16 &&
		    strspn(v, "0123456789") >= vl)
			l->session = strtoull(v, NULL, 10) & HIST_IDMASK;
		else if (kv_is(&w, "dsn") && hex16(v, vl, &id) == 0) {
			l->dsn = id;
			l->has_dsn = 1;
		} else if (kv_is(&w, "reply") &&
		    (qa = memmem(v, vl, "queued as ", 10)) != NULL &&
		    (size_t)(qa + 26 - v) <= vl && l->nmsgid < 2 &&
		    hex16(qa + 10, 16, &id) == 0 &&
		    (qa + 26 == v + vl || !isxdigit((unsigned char)qa[26])))
			l->msgid[l->nmsgid++] = id;
		else if (kv_is(&w, "from") || kv_is(&w, "to") ||
		    kv_is(&w, "rcpt") || kv_is(&w, "verify")) {
			l->txn = 1;
			if (q->kind == HIST_ADDR && list_has(v, vl, q->addr))
				l->addr_hit = 1;
		} else if (kv_is(&w, "client")) {
			l->has_client = 1;
			if (q->kind == HIST_CLIENT && client_is(v, vl, q))
				l->client_hit = 1;
		}
	}
	if (l->nmsgid > 0)
		l->txn = 1;
	if (l->stop && kv > 0)
		l->stop = 0;
	return 0;
}

/* hist_query_parse - a queue id, <address> or x@y, or a client address */
static int
hist_query_parse(const char *s, struct hist_query *q)
{
	char ip[INET6_ADDRSTRLEN + 1], in[512];
	const char *p, *port = NULL;
	size_t n = strlen(s);

	if (n == 0 || n >= sizeof(in))
		return -1;
	if (hex16(s, n, &q->id) == 0) {
		q->kind = HIST_ID;
		return 0;
	}
	if ((s[0] == '<' && s[n - 1] == '>' && n >= 2) ||
	    strchr(s, '@') != NULL) {
		if (s[0] == '<' && s[n - 1] == '>') {
			memcpy(in, s + 1, n - 2);
			in[n - 2] = '\0';
		} else
			memcpy(in, s, n + 1);
		if (strpbrk(in, "<>, ") != NULL)
			return -1;
		/* the form the daemon logs it in (log_word) */
		q->addr[0] = '<';
		log_strvis(q->addr + 1, sizeof(q->addr) - 2, in, strlen(in),
		    LOG_VIS_SPACE);
		strcat(q->addr, ">");
		q->kind = HIST_ADDR;
		return 0;
	}
	q->kind = HIST_CLIENT;
	q->port = -1;
	if (s[0] == '[') {
		if ((p = strchr(s, ']')) == NULL || (p[1] != '\0' &&
		    p[1] != ':'))
			return -1;
		n = (size_t)(p - s - 1);
		s++;
		port = p[1] == ':' ? p + 2 : NULL;
	} else if ((p = strchr(s, ':')) != NULL && strchr(p + 1, ':') == NULL) {
		n = (size_t)(p - s);	/* a.b.c.d:port */
		port = p + 1;
	}
	if (n >= sizeof(ip))
		return -1;
	memcpy(ip, s, n);
	ip[n] = '\0';
	if (inet_pton(AF_INET, ip, q->ip) == 1)
		q->family = AF_INET;
	else if (inet_pton(AF_INET6, ip, q->ip) == 1)
		q->family = AF_INET6;
	else
		return -1;
	if (port != NULL) {
		if (port[0] == '\0' || strlen(port) > 5 ||
		    strspn(port, "0123456789") != strlen(port) ||
		    atoi(port) > 65535)
			return -1;
		q->port = atoi(port);
	}
	return 0;
}

/*
 * time_arg - --since/--until: "now", "-N" with s, m, h or d (ago), a
 * date "YYYY-mm-dd" (its midnight), "YYYY-mm-ddTHH:MM[:SS[.mmm]]" with a
 * zone or in local time, or "HH:MM[:SS]" (today)
 */
static int
time_arg(const char *s, long long *ms)
{
	static const char *fmts[] = { "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M",
	    "%Y-%m-%d", "%H:%M:%S", "%H:%M" };
	struct tm tm;
	time_t now = time(NULL);
	char *end;
	unsigned long long v;
	size_t i;
	const char *r;

	if (strcmp(s, "now") == 0) {
		*ms = (long long)now * 1000;
		return 0;
	}
	if (s[0] == '-' && s[1] >= '0' && s[1] <= '9') {
		errno = 0;
		v = strtoull(s + 1, &end, 10);
		if (errno != 0 || end[0] == '\0' || end[1] != '\0' ||
		    strchr("smhd", end[0]) == NULL || v > 100000ULL * 86400)
			return -1;
		v *= end[0] == 's' ? 1 : end[0] == 'm' ? 60 : end[0] == 'h' ?
		    3600 : 86400;
		*ms = ((long long)now - (long long)v) * 1000;
		return 0;
	}
	if (strlen(s) >= 19 && stamp_parse(s, strlen(s), ms) == strlen(s))
		return 0;
	for (i = 0; i < sizeof(fmts) / sizeof(fmts[0]); i++) {
		localtime_r(&now, &tm);
		tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
		if ((r = strptime(s, fmts[i], &tm)) != NULL && *r == '\0') {
			tm.tm_isdst = -1;
			*ms = (long long)mktime(&tm) * 1000;
			return 0;
		}
	}
	return -1;
}

/*
 * The log reading shared by history and log-summary: their options
 * (-f, --since, --until), the file, its lines
 */
struct logopts {
	const char	*cmd;		/* "history", "log-summary" */
	const char	*usage;		/* its usage line */
	const char	*file;
	long long	 since, until;	/* ms; lines in [since, until) */
	const char	*what;		/* the operand, or NULL */
};

static void __attribute__((noreturn))
log_usage(const struct logopts *o, const char *why, const char *what)
{
	if (why != NULL)
		fprintf(stderr, "mxbridgectl: %s: %s%s%s\n", o->cmd, why,
		    what ? ": " : "", what ? log_word(what) : "");
	fprintf(stderr, "usage: mxbridgectl %s\n", o->usage);
	exit(2);
}

/*
 * log_opts - "[-f LOG] [--since T] [--until T]" and, with operand, one
 * operand (o->what); bad input is said on stderr and exits 2
 */
static void
log_opts(int argc, char **argv, struct logopts *o, int operand)
{
	const char *opt, *val;
	int a, dashdash = 0;

	o->file = o->what = NULL;
	o->since = LLONG_MIN;
	o->until = LLONG_MAX;
	for (a = 1; a < argc; a++) {
		opt = argv[a];
		if (dashdash || opt[0] != '-' || opt[1] == '\0') {
			if (!operand)
				log_usage(o, "unexpected argument", opt);
			if (o->what != NULL)
				log_usage(o, "more than one thing to look for",
				    opt);
			o->what = opt;
			continue;
		}
		if (strcmp(opt, "--") == 0) {
			dashdash = 1;
			continue;
		}
		if ((val = strchr(opt, '=')) != NULL && opt[1] == '-')
			val++;
		else if (a + 1 < argc)
			val = argv[++a];
		else
			log_usage(o, "option needs a value", opt);
		if (strcmp(opt, "-f") == 0)
			o->file = val;
		else if (strncmp(opt, "--since", 7) == 0 && (opt[7] == '\0' ||
		    opt[7] == '=')) {
			if (time_arg(val, &o->since) == -1)
				log_usage(o, "bad time", val);
		} else if (strncmp(opt, "--until", 7) == 0 && (opt[7] == '\0' ||
		    opt[7] == '=')) {
			if (time_arg(val, &o->until) == -1)
				log_usage(o, "bad time", val);
		} else
			log_usage(o, "unknown option", opt);
	}
	if (operand && o->what == NULL)
		log_usage(o, "nothing to look for", NULL);
	if (o->since >= o->until)
		log_usage(o, "--since is not before --until", NULL);
}

/*
 * log_open - the log file of o; "-" is standard input, copied to a
 * temporary file because history reads the log more than once.  NULL
 * (the reason said) when there is none or it cannot be read.
 */
static FILE *
log_open(const struct logopts *o)
{
	char chunk[65536];
	FILE *f;
	size_t n;

	if (o->file == NULL) {
		fprintf(stderr, "mxbridgectl: %s: no log file: mxbridge "
		    "logs to syslog (facility mail), or with -d to standard "
		    "error; name the file with -f (\"-f -\" reads standard "
		    "input, e.g. from journalctl -t mxbridge -o short-iso)\n",
		    o->cmd);
		return NULL;
	}
	if (strcmp(o->file, "-") != 0)
		f = fopen(o->file, "r");
	else if ((f = tmpfile()) != NULL) {
		while ((n = fread(chunk, 1, sizeof(chunk), stdin)) > 0)
			if (fwrite(chunk, 1, n, f) != n)
				break;
		if (ferror(stdin) || ferror(f)) {
			fclose(f);
			f = NULL;
		}
	}
	if (f == NULL)
		fprintf(stderr, "mxbridgectl: %s: %s: %s\n", o->cmd, o->file,
		    strerror(errno));
	return f;
}

/* log_getline - the next line of f into line (its newline off, *n its
 * length); a line too long to be the daemon's is skipped whole.  1, or 0
 * at the end (or on a read error: ferror tells) */
static int
log_getline(FILE *f, char *line, size_t cap, size_t *n)
{
	int c;

	while (fgets(line, (int)cap, f) != NULL) {
		*n = strlen(line);
		if (*n > 0 && line[*n - 1] == '\n')
			line[--*n] = '\0';
		else if (!feof(f)) {
			while ((c = getc(f)) != EOF && c != '\n')
				;
			continue;
		}
		return 1;
	}
	return 0;
}

struct hist_out {
	long long	 ms;
	size_t		 seq;
	char		*text;
};

static int
hist_out_cmp(const void *a, const void *b)
{
	const struct hist_out *x = a, *y = b;

	if (x->ms != y->ms)
		return x->ms < y->ms ? -1 : 1;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* hist_has_msgid - is one of the line's queue ids in m? */
static int
hist_has_msgid(const struct hist_line *l, const struct idset *m)
{
	int i;

	for (i = 0; i < l->nmsgid; i++)
		if (idset_has(m, l->msgid[i]))
			return 1;
	return 0;
}

static int
hist_seed(const struct hist_line *l, const struct hist_query *q)
{
	if (q->kind == HIST_ID)
		return (l->nmsgid > 0 && l->msgid[0] == q->id) ||
		    (l->nmsgid > 1 && l->msgid[1] == q->id);
	return q->kind == HIST_ADDR ? l->addr_hit : l->client_hit;
}

/*
 * hist_pass - one reading of the log: links added to m (queue ids) and
 * s (run and session), and with keep, the chosen lines into out.
 * Returns how many keys were added, or -1 on a read error.
 */
static long
hist_pass(FILE *f, const struct hist_query *q, struct idset *m,
    struct idset *s, int keep, struct hist_out **out, size_t *nout)
{
	static char line[LOG_LINEMAX];
	struct hist_line l;
	uint64_t run = 0, sk;
	size_t n, cap = 0, seq = 0;
	long added = 0;
	int i, after_stop = 0, seed, sel;

	rewind(f);
	while (log_getline(f, line, sizeof(line), &n) == 1) {
		seq++;
		if (line_parse(line, n, q, &l) == -1)
			continue;
		if (l.stop) {
			run++;
			after_stop = 1;
		} else if (l.start) {
			if (!after_stop)
				run++;	/* the last run ended without a word */
			after_stop = 0;
		}
		/*
		 * The MTA's lines of a message carry the session it came in,
		 * which after a restart is another run's number: a session
		 * is taken only from its own lines (client=, or no msgid).
		 */
		sk = l.session && (l.has_client || l.nmsgid == 0) ?
		    run << 40 | l.session : 0;
		seed = hist_seed(&l, q);
		if (seed)
			for (i = 0; i < l.nmsgid; i++)
				added += idset_add(m, l.msgid[i]);
		if (seed || hist_has_msgid(&l, m)) {
			if (sk != 0)
				added += idset_add(s, sk);
			if (l.has_dsn)
				added += idset_add(m, l.dsn);
		}
		if ((seed && q->kind == HIST_CLIENT) ||
		    (q->kind == HIST_CLIENT && sk != 0 && idset_has(s, sk)))
			for (i = 0; i < l.nmsgid; i++)
				added += idset_add(m, l.msgid[i]);
		/* the range picks the lines shown, not the links: a message
		 * accepted before --since is still found by its client */
		if (!keep || l.ms < q->since || l.ms >= q->until)
			continue;
		/* a session's own lines; its transactions only if theirs */
		sel = seed || hist_has_msgid(&l, m) || (sk != 0 &&
		    idset_has(s, sk) && (q->kind == HIST_CLIENT || !l.txn));
		if (!sel)
			continue;
		if (*nout == cap) {
			cap = cap ? cap * 2 : 256;
			*out = xreallocarray(*out, cap, sizeof(**out));
		}
		(*out)[*nout].ms = l.ms;
		(*out)[*nout].seq = seq;
		(*out)[(*nout)++].text = xstrdup(line);
	}
	return ferror(f) ? -1 : added;
}

/* vis_print - s with the bytes that are not printable as \xhh */
static void
vis_print(const char *s)
{
	for (; *s != '\0'; s++) {
		if ((*s >= 0x20 && *s < 0x7f) || *s == '\t')
			putchar(*s);
		else
			printf("\\x%02x", (unsigned char)*s);
	}
}

static void
hist_print(const char *s)
{
	vis_print(s);
	putchar('\n');
}

/* history - "history [-f LOG] [--since T] [--until T] WHAT" */
static int
history(int argc, char **argv)
{
	struct logopts o = { "history", "history [-f logfile] [--since time] "
	    "[--until time] id | address | client-ip", NULL, 0, 0, NULL };
	struct hist_query q;
	struct hist_out *out = NULL;
	struct idset m, s;
	size_t nout = 0, i;
	long added;
	int pass, rc = 0;
	FILE *f;

	memset(&q, 0, sizeof(q));
	memset(&m, 0, sizeof(m));
	memset(&s, 0, sizeof(s));
	log_opts(argc, argv, &o, 1);
	if (hist_query_parse(o.what, &q) == -1)
		log_usage(&o, "not a queue id, an address or a client address",
		    o.what);
	q.since = o.since;
	q.until = o.until;
	if ((f = log_open(&o)) == NULL)
		return 2;
	/* links first, until a pass finds none new; then the lines */
	for (pass = 0; pass < HIST_PASSES; pass++)
		if ((added = hist_pass(f, &q, &m, &s, 0, NULL, NULL)) <= 0)
			break;
	if (added != -1)
		added = hist_pass(f, &q, &m, &s, 1, &out, &nout);
	if (added == -1) {
		fprintf(stderr, "mxbridgectl: history: %s: read error\n",
		    o.file);
		rc = 2;
	} else if (nout == 0) {
		fprintf(stderr, "mxbridgectl: history: no line of %s\n",
		    log_word(o.what));
		rc = 1;
	}
	if (nout > 0)	/* qsort of NULL is undefined, even of none */
		qsort(out, nout, sizeof(*out), hist_out_cmp);
	for (i = 0; i < nout; i++) {
		if (rc == 0)
			hist_print(out[i].text);
		free(out[i].text);
	}
	free(out);
	idset_free(&m);
	idset_free(&s);
	fclose(f);
	return rc;
}

/*
 * log-summary - pflogsumm's grand totals, per-domain delivery and top
 * senders and recipients, from the daemon's own lines (pflogsumm itself
 * reads Postfix's "postfix/smtp[pid]: ID: to=<>, relay=..." lines, which
 * mxbridge does not write).  One pass: the size of each message is taken
 * from its "queued" line wherever it is in the file, so that a message
 * queued before --since still counts its bytes when it is delivered in
 * the range; everything else counts only in the range.
 */
#define SUM_TOP		20	/* senders and recipients shown */

/* a count per string: a sender, a recipient, a domain */
struct tally_ent {
	char			*key;
	unsigned long		 n;		/* messages, recipients */
	unsigned long long	 bytes;
	unsigned long		 defers;
	double			 dsum, dmax;	/* delay= of those delivered */
};

struct tally {
	struct tally_ent	*e;
	size_t			 n, cap;
	size_t			*slot;		/* index + 1 in e; 0 free */
	size_t			 nslot;
};

/* tally_slot - the free slot for hash h in slots (a power of two) */
static size_t
tally_slot(const size_t *slot, size_t nslot, uint64_t h)
{
	size_t i;

	for (i = (size_t)h & (nslot - 1); slot[i] != 0; i = (i + 1) &
	    (nslot - 1))
		;
	return i;
}

/* tally_get - the entry of key (kl bytes), made at 0 when new */
static struct tally_ent *
tally_get(struct tally *t, const char *key, size_t kl)
{
	size_t i, j, nslot, *ns;
	uint64_t h;

	if ((t->n + 1) * 2 > t->nslot) {
		nslot = t->nslot ? t->nslot * 2 : 64;
		ns = xcalloc(nslot, sizeof(*ns));
		for (j = 0; j < t->n; j++)
			ns[tally_slot(ns, nslot, hash_fnv(HASH_FNV_INIT,
			    t->e[j].key, strlen(t->e[j].key)))] = j + 1;
		free(t->slot);
		t->slot = ns;
		t->nslot = nslot;
	}
	h = hash_fnv(HASH_FNV_INIT, key, kl);
	for (i = (size_t)h & (t->nslot - 1); t->slot[i] != 0;
	    i = (i + 1) & (t->nslot - 1)) {
		j = t->slot[i] - 1;
		if (strncmp(t->e[j].key, key, kl) == 0 &&
		    t->e[j].key[kl] == '\0')
			return &t->e[j];
	}
	if (t->n == t->cap) {
		t->cap = t->cap ? t->cap * 2 : 64;
		t->e = xreallocarray(t->e, t->cap, sizeof(*t->e));
	}
	memset(&t->e[t->n], 0, sizeof(t->e[t->n]));
	t->e[t->n].key = xstrndup(key, kl);
	t->slot[i] = t->n + 1;
	return &t->e[t->n++];
}

static void
tally_free(struct tally *t)
{
	size_t i;

	for (i = 0; i < t->n; i++)
		free(t->e[i].key);
	free(t->e);
	free(t->slot);
	memset(t, 0, sizeof(*t));
}

/* most first, then by name */
static int
tally_cmp(const void *a, const void *b)
{
	const struct tally_ent *x = a, *y = b;

	if (x->n != y->n)
		return x->n > y->n ? -1 : 1;
	if (x->defers != y->defers)
		return x->defers > y->defers ? -1 : 1;
	return strcmp(x->key, y->key);
}

/* the totals */
struct summary {
	unsigned long		 received, delivered, deferrals, bounced;
	unsigned long		 expired, rejected, tempfailed, relayed, dsns;
	unsigned long long	 bytes_in, bytes_out;
	struct idset		 deferred;	/* messages deferred */
	struct idset		 sizes;		/* queue id -> size + 1 */
	struct tally		 senders, rcpts, domains, hosts;
	int			 lines;		/* stamped lines in range */
};

/* what one line of the daemon says, for the summary */
struct sum_line {
	long long	 ms;
	int		 has_msgid, has_session, has_client;
	int		 has_from, has_to, has_disp, has_size, has_delay;
	int		 queued, dsnword;	/* the words "queued" "dsn" */
	uint64_t	 msgid;
	struct kv	 from, to, disp, client;
	unsigned long long size;
	double		 delay;
};

/*
 * sum_parse - the fields of one line.  Everything after status= is a
 * server's reply or a reason (mxbridge(8), LOGGING), never a field: the
 * words stop there, so that a reply cannot add a disposition.
 */
static int
sum_parse(const char *s, size_t n, struct sum_line *l)
{
	const char *e = s + n;
	struct kv w;
	size_t off;
	char num[32];

	memset(l, 0, sizeof(*l));
	if ((off = stamp_parse(s, n, &l->ms)) == 0)
		return -1;
	for (s += off; kv_next(&s, e, &w) == 0; ) {
		if (w.v == NULL) {
			if (w.kl == 6 && memcmp(w.k, "queued", 6) == 0)
				l->queued = 1;
			else if (w.kl == 3 && memcmp(w.k, "dsn", 3) == 0 &&
			    l->queued)
				l->dsnword = 1;
			continue;
		}
		if (kv_is(&w, "status"))
			break;
		if (kv_is(&w, "msgid"))
			l->has_msgid = hex16(w.v, w.vl, &l->msgid) == 0;
		else if (kv_is(&w, "session"))
			l->has_session = 1;
		else if (kv_is(&w, "from")) {
			l->from = w;
			l->has_from = 1;
		} else if (kv_is(&w, "to")) {
			l->to = w;
			l->has_to = 1;
		} else if (kv_is(&w, "disposition")) {
			l->disp = w;
			l->has_disp = 1;
		} else if (kv_is(&w, "client")) {
			l->client = w;
			l->has_client = 1;
		} else if ((kv_is(&w, "size") || kv_is(&w, "delay")) &&
		    w.vl > 0 && w.vl < sizeof(num) &&
		    strspn(w.v, "0123456789.") >= w.vl) {
			memcpy(num, w.v, w.vl);
			num[w.vl] = '\0';
			if (w.k[0] == 's') {
				l->size = strtoull(num, NULL, 10);
				l->has_size = 1;
			} else {
				l->delay = strtod(num, NULL);
				l->has_delay = 1;
			}
		}
	}
	return 0;
}

/* disp_is - the line's disposition is d */
static int
disp_is(const struct sum_line *l, const char *d)
{
	return l->has_disp && l->disp.vl == strlen(d) &&
	    memcmp(l->disp.v, d, l->disp.vl) == 0;
}

/* addr_key - "<a@b>" as a tally key: the brackets off, the domain in
 * lower case (in buf); *dom the domain, "(none)" without one */
static size_t
addr_key(const struct kv *w, char *buf, size_t len, const char **dom)
{
	const char *v = w->v;
	size_t n = w->vl, i;
	char *at;

	if (n >= 2 && v[0] == '<' && v[n - 1] == '>') {
		v++;
		n -= 2;
	}
	if (n >= len)
		n = len - 1;
	memcpy(buf, v, n);
	buf[n] = '\0';
	if ((at = strrchr(buf, '@')) != NULL) {
		for (i = (size_t)(at + 1 - buf); i < n; i++)
			buf[i] = (char)tolower((unsigned char)buf[i]);
		*dom = at + 1;
	} else
		*dom = "(none)";
	return n;
}

/* sum_line_count - one line into the summary */
static void
sum_line_count(struct summary *sm, const struct sum_line *l, int inrange)
{
	struct tally_ent *t;
	char key[LOG_VIS_MAX + 2];
	const char *dom, *c;
	size_t kl;
	uint64_t size;

	/* a message queued: "msgid= session= queued from=<> ... size=" */
	if (l->has_msgid && l->queued && !l->dsnword && l->has_from &&
	    l->has_size && !l->has_to) {
		(void)idset_put(&sm->sizes, l->msgid, l->size + 1);
		if (!inrange)
			return;
		sm->received++;
		sm->bytes_in += l->size;
		kl = addr_key(&l->from, key, sizeof(key), &dom);
		tally_get(&sm->senders, key, kl)->n++;
		if (l->has_client) {
			/* the host without its port */
			c = l->client.v;
			kl = l->client.vl;
			if (kl > 0 && c[0] == '[' && memchr(c, ']', kl))
				kl = (size_t)((const char *)memchr(c, ']', kl) -
				    c) + 1;
			else if (memchr(c, ':', kl) != NULL)
				kl = (size_t)((const char *)memrchr(c, ':',
				    kl) - c);
			tally_get(&sm->hosts, c, kl)->n++;
		}
		return;
	}
	if (!inrange)
		return;
	if (l->has_msgid && l->queued && l->dsnword) {
		sm->dsns++;
		return;
	}
	/* a recipient's delivery outcome */
	if (l->has_msgid && l->has_to && l->has_disp) {
		kl = addr_key(&l->to, key, sizeof(key), &dom);
		if (disp_is(l, "delivered")) {
			sm->delivered++;
			size = idset_get(&sm->sizes, l->msgid);
			size = size > 0 ? size - 1 : 0;
			sm->bytes_out += size;
			tally_get(&sm->rcpts, key, kl)->n++;
			t = tally_get(&sm->domains, dom, strlen(dom));
			t->n++;
			t->bytes += size;
			if (l->has_delay) {
				t->dsum += l->delay;
				if (l->delay > t->dmax)
					t->dmax = l->delay;
			}
		} else if (disp_is(l, "deferred")) {
			sm->deferrals++;
			(void)idset_add(&sm->deferred, l->msgid);
			tally_get(&sm->domains, dom, strlen(dom))->defers++;
		} else if (disp_is(l, "bounced"))
			sm->bounced++;
		else if (disp_is(l, "expired"))
			sm->expired++;
		return;
	}
	/* a transaction toward a client (the queue id only in its reply) */
	if (!l->has_msgid && l->has_session && l->has_client && l->has_from &&
	    l->has_disp) {
		if (disp_is(l, "rejected"))
			sm->rejected++;
		else if (disp_is(l, "tempfail"))
			sm->tempfailed++;
		else if (disp_is(l, "relayed"))
			sm->relayed++;
	}
}

/* dly - a delay as pflogsumm shows it: seconds, minutes, hours, days */
static const char *
dly(double s, char *buf, size_t len)
{
	if (s < 60)
		snprintf(buf, len, "%.1fs", s);
	else if (s < 3600)
		snprintf(buf, len, "%.1fm", s / 60);
	else if (s < 86400)
		snprintf(buf, len, "%.1fh", s / 3600);
	else
		snprintf(buf, len, "%.1fd", s / 86400);
	return buf;
}

/* sum_top - a heading and the first SUM_TOP of t, most first */
static void
sum_top(struct tally *t, const char *title)
{
	size_t i;

	printf("\n%s\n", title);
	for (i = 0; title[i] != '\0'; i++)
		putchar('-');
	putchar('\n');
	if (t->n > 0)
		qsort(t->e, t->n, sizeof(*t->e), tally_cmp);
	for (i = 0; i < t->n && i < SUM_TOP; i++) {
		printf(" %6lu   ", t->e[i].n);
		vis_print(t->e[i].key[0] ? t->e[i].key : "<>");
		putchar('\n');
	}
	if (t->n == 0)
		printf(" none\n");
}

static void
sum_print(struct summary *sm)
{
	struct tally_ent *t;
	char a[16], m[16];
	size_t i;

	printf("Grand Totals\n------------\nmessages\n\n");
	printf(" %6lu   received\n", sm->received);
	printf(" %6lu   delivered\n", sm->delivered);
	printf(" %6zu   deferred (%lu deferrals)\n", sm->deferred.n,
	    sm->deferrals);
	printf(" %6lu   bounced\n", sm->bounced);
	printf(" %6lu   expired\n", sm->expired);
	printf(" %6lu   rejected\n", sm->rejected);
	printf(" %6lu   tempfailed\n", sm->tempfailed);
	printf(" %6lu   relayed\n", sm->relayed);
	printf(" %6lu   notifications\n\n", sm->dsns);
	printf(" %6llu   bytes received\n", sm->bytes_in);
	printf(" %6llu   bytes delivered\n", sm->bytes_out);
	printf(" %6zu   senders\n", sm->senders.n);
	printf(" %6zu   sending hosts\n", sm->hosts.n);
	printf(" %6zu   recipients\n", sm->rcpts.n);
	printf(" %6zu   recipient domains\n", sm->domains.n);

	printf("\nPer-Domain Summary: Message Delivery\n"
	    "------------------------------------\n"
	    " sent cnt      bytes   defers  avg dly  max dly  domain\n"
	    " -------- ----------  -------  -------  -------  ------\n");
	if (sm->domains.n > 0)
		qsort(sm->domains.e, sm->domains.n, sizeof(*sm->domains.e),
		    tally_cmp);
	for (i = 0; i < sm->domains.n; i++) {
		t = &sm->domains.e[i];
		printf(" %8lu %10llu  %7lu  %7s  %7s  ", t->n, t->bytes,
		    t->defers, dly(t->n ? t->dsum / (double)t->n : 0, a,
		    sizeof(a)), dly(t->dmax, m, sizeof(m)));
		vis_print(t->key);
		putchar('\n');
	}
	if (sm->domains.n == 0)
		printf(" none\n");
	sum_top(&sm->senders, "Senders by message count");
	sum_top(&sm->rcpts, "Recipients by message count");
}

/* log_summary - "log-summary [-f LOG] [--since T] [--until T]" */
static int
log_summary(int argc, char **argv)
{
	struct logopts o = { "log-summary", "log-summary [-f logfile] "
	    "[--since time] [--until time]", NULL, 0, 0, NULL };
	static char line[LOG_LINEMAX];
	struct summary sm;
	struct sum_line l;
	size_t n;
	int in, rc = 0;
	FILE *f;

	log_opts(argc, argv, &o, 0);
	if ((f = log_open(&o)) == NULL)
		return 2;
	memset(&sm, 0, sizeof(sm));
	rewind(f);
	while (log_getline(f, line, sizeof(line), &n) == 1) {
		if (sum_parse(line, n, &l) == -1)
			continue;
		in = l.ms >= o.since && l.ms < o.until;
		sm.lines += in;
		sum_line_count(&sm, &l, in);
	}
	if (ferror(f)) {
		fprintf(stderr, "mxbridgectl: log-summary: %s: read error\n",
		    o.file);
		rc = 2;
	} else if (sm.lines == 0) {
		fprintf(stderr, "mxbridgectl: log-summary: no line in the "
		    "range\n");
		rc = 1;
	} else
		sum_print(&sm);
	idset_free(&sm.deferred);
	idset_free(&sm.sizes);
	tally_free(&sm.senders);
	tally_free(&sm.rcpts);
	tally_free(&sm.domains);
	tally_free(&sm.hosts);
	fclose(f);
	return rc;
}

int
main(int argc, char *argv[])
{
	const char *conf = POLICY_DEFAULT_PATH, *sock = NULL;
	struct policy *p = NULL;
	struct buf ans;
	char err[512];
	size_t hdr, i;
	int ch, fd, rc;

	log_init("mxbridgectl", 1, 0);
	/* a daemon that closes before reading the request is an error
	 * message, not a silent death by SIGPIPE */
	signal(SIGPIPE, SIG_IGN);
	/* "+": the options end at the command, so that history's own -f is
	 * not taken for the configuration file's */
	while ((ch = getopt(argc, argv, "+f:s:")) != -1) {
		switch (ch) {
		case 'f': conf = optarg; break;
		case 's': sock = optarg; break;
		default: usage();
		}
	}
	argc -= optind;
	argv += optind;
	if (argc < 1)
		usage();
	if (strcmp(argv[0], "history") == 0)
		return history(argc, argv);
	if (strcmp(argv[0], "log-summary") == 0)
		return log_summary(argc, argv);
	if (sock == NULL) {
		if ((p = policy_load(conf, err, sizeof(err))) == NULL) {
			fprintf(stderr, "mxbridgectl: %s\n", err);
			return 2;
		}
		sock = p->control;
	}
	if ((fd = ctl_connect(sock)) == -1)
		return 2;
	buf_init(&ans);
	rc = ctl_request(fd, argc, argv, &ans);
	close(fd);
	if (rc == -1 || ans.len == 0) {
		fprintf(stderr, "mxbridgectl: no answer from the daemon\n");
		rc = 2;
		goto done;
	}
	if ((rc = control_answer_parse(ans.data, ans.len, &hdr)) == -1) {
		/* the start of it, printable, so the cause can be seen */
		fprintf(stderr, "mxbridgectl: malformed answer from the daemon "
		    "at %s: \"", sock);
		for (i = 0; i < ans.len && i < 64; i++) {
			if (ans.data[i] >= 0x20 && ans.data[i] < 0x7f)
				fputc(ans.data[i], stderr);
			else
				fprintf(stderr, "\\x%02x",
				    (unsigned char)ans.data[i]);
		}
		fprintf(stderr, "%s\"\n", ans.len > 64 ? "..." : "");
		rc = 2;
		goto done;
	}
	fwrite(ans.data + hdr, 1, ans.len - hdr, rc ? stderr : stdout);
done:
	buf_free(&ans);
	if (p != NULL)
		policy_unref(p);
	return rc;
}
