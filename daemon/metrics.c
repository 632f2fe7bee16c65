/*
 * metrics.c - the Prometheus endpoint ("metrics listen ADDR PORT" of
 * mxbridge.conf(5)): a minimal HTTP/1.0 and 1.1 server on the daemon's
 * loop.  GET (or HEAD) /metrics is answered with the counters of
 * "mxbridgectl stats" (control_stats_collect: the very text the control
 * command prints, so nothing is counted twice) in the text exposition
 * format 0.0.4 (histograms included: the lines of histogram_stats; a
 * key FAMILY.V1.V2 of a family with labels in metrics_meta is its series
 * with those label values);
 * another path gets 404, another method 405, anything not
 * HTTP 400.  Every answer says "Connection: close" and the connection
 * ends after it: a pipelined request behind the first is read and thrown
 * away, never answered.
 *
 * Bounds against a hostile peer: a request head of at most
 * METRICS_MAXREQ bytes (431 beyond), METRICS_T_REQ seconds from accept
 * to the end of the head, counted once, not per byte (a slow writer is
 * cut off), METRICS_T_LINGER seconds for the answer to leave and the
 * peer to close, and METRICS_MAXCONN connections at once (one more is
 * accepted and closed at once).  Memory per connection: its head buffer
 * and its one answer.
 *
 * A peer outside "metrics allow" (the current snapshot's, so a reload
 * swaps it in) is closed at accept, before a byte is read, and counted
 * (metrics_refused); without the statement anyone may scrape.
 *
 * The listener is bound at start, as root, before the daemon drops its
 * rights (so a port below 1024 is fine); a reload does not move it.
 */
#include <sys/socket.h>
#include <sys/queue.h>
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "../common/addr.h"
#include "../common/counter.h"
#include "../common/log.h"
#include "../common/xmalloc.h"
#include "../policy/policy.h"
#include "control.h"
#include "metrics.h"

#define METRICS_MAXCONN		16
#define METRICS_T_REQ		5	/* seconds to read the request head */
#define METRICS_T_LINGER	5	/* seconds to write it and close */
#define METRICS_MAXKEY		96	/* bytes of a stats key */
#define METRICS_CTYPE		"text/plain; version=0.0.4; charset=utf-8"

/* one accepted connection: freed when both its handles are closed */
struct metrics_conn {
	LIST_ENTRY(metrics_conn) entry;
	uv_tcp_t	 tcp;
	uv_timer_t	 timer;
	uv_write_t	 wreq;
	uv_shutdown_t	 sreq;
	int		 handles;	/* not yet closed */
	int		 answered;	/* reading only to discard */
	int		 closing;
	size_t		 len;
	char		 in[METRICS_MAXREQ + 1];
	struct buf	 out;
};

LIST_HEAD(metrics_connq, metrics_conn);

static uv_tcp_t			 metrics_listener;
static int			 metrics_listening;
static struct metrics_connq	 metrics_conns = LIST_HEAD_INITIALIZER(metrics_conns);
static unsigned			 metrics_nconns;
static counter_t		 metrics_refused;	/* "metrics allow" */

/*
 * The HTTP request head
 */

/* http_tchar - a character of a method (RFC 9110 token) */
static int
http_tchar(int ch)
{
	return isalnum(ch) || (ch != '\0' && strchr("!#$%&'*+-.^_`|~", ch));
}

int
metrics_http_request(const char *data, size_t len, int *head)
{
	const char *eol, *p, *sp1, *sp2, *end, *line;
	size_t n;

	*head = 0;
	if (memchr(data, '\0', len) != NULL)
		return 400;
	if ((eol = memchr(data, '\n', len)) == NULL)
		return len >= METRICS_MAXREQ ? 431 : 0;
	/* the request line: METHOD SP TARGET SP HTTP/1.x */
	end = eol > data && eol[-1] == '\r' ? eol - 1 : eol;
	for (p = data; p < end && http_tchar((unsigned char)*p); p++)
		;
	if (p == data || p == end || *p != ' ')
		return 400;
	sp1 = p;
	for (p = sp1 + 1; p < end && *p > ' ' && *p < 0x7f; p++)
		;
	if (p == sp1 + 1 || p == end || *p != ' ')
		return 400;
	sp2 = p;
	n = (size_t)(end - (sp2 + 1));
	if (n < 5 || memcmp(sp2 + 1, "HTTP/", 5) != 0)
		return 400;
	if (n != 8 || !isdigit((unsigned char)sp2[6]) || sp2[7] != '.' ||
	    !isdigit((unsigned char)sp2[8]))
		return 400;
	if (sp2[6] != '1' || (sp2[8] != '0' && sp2[8] != '1'))
		return 505;
	/* the header lines: "name: value", up to the empty line */
	for (line = eol + 1;; line = eol + 1) {
		if ((eol = memchr(line, '\n', len - (size_t)(line - data))) ==
		    NULL)
			return len >= METRICS_MAXREQ ? 431 : 0;
		end = eol > line && eol[-1] == '\r' ? eol - 1 : eol;
		if (end == line)
			break;
		for (p = line; p < end && http_tchar((unsigned char)*p); p++)
			;
		if (p == line || p == end || *p != ':')
			return 400;
		for (; p < end; p++)
			if ((unsigned char)*p < ' ' && *p != '\t')
				return 400;
	}
	n = (size_t)(sp1 - data);
	if (!(n == 3 && memcmp(data, "GET", 3) == 0) &&
	    !(n == 4 && memcmp(data, "HEAD", 4) == 0))
		return 405;
	*head = n == 4;
	n = (size_t)(sp2 - (sp1 + 1));
	if ((n == 8 || (n > 8 && sp1[9] == '?')) &&
	    memcmp(sp1 + 1, "/metrics", 8) == 0)
		return 200;
	return 404;
}

/*
 * The exposition
 */

/* what is known of a stats key: type and help; anything else is
 * "untyped" */
#define M_GAUGE		0
#define M_COUNTER	1
#define M_HISTOGRAM	2	/* KEY.le.B, KEY.sum, KEY.count lines */
static const struct {
	const char	*key;
	int		 counter;	/* M_COUNTER, M_GAUGE, M_HISTOGRAM */
	const char	*help;
	const char	*labels;	/* KEY.V1.V2 lines: the labels of V1,
					   V2; NULL: a plain key */
} metrics_meta[] = {
	{ "workers", 0, "Worker threads.", NULL },
	{ "nfq_queue_open", 0, "1 while a netfilter queue is bound.", NULL },
	{ "nfq_queues_open", 0, "Netfilter queues bound.", NULL },
	{ "nfq_incoming_proxy", 1, "New incoming flows sent to the proxy.", NULL },
	{ "nfq_incoming_pass", 1, "New incoming flows passed.", NULL },
	{ "nfq_incoming_drop", 1, "New incoming flows dropped.", NULL },
	{ "nfq_outgoing_proxy", 1, "New outgoing flows sent to the proxy.", NULL },
	{ "nfq_outgoing_pass", 1, "New outgoing flows passed.", NULL },
	{ "nfq_outgoing_drop", 1, "New outgoing flows dropped.", NULL },
	{ "nfq_malformed", 1, "Queued packets that did not parse.", NULL },
	{ "nfq_errors", 1, "Netfilter queue errors.", NULL },
	{ "nfq_overruns", 1, "Netfilter queue receive buffer overruns.", NULL },
	{ "nfq_decisions", 1, "New flows decided.", NULL },
	{ "proxy_accepted_incoming", 1, "Incoming sessions accepted.", NULL },
	{ "proxy_accepted_outgoing", 1, "Outgoing sessions accepted.", NULL },
	{ "proxy_accept_errors", 1, "Failed accepts.", NULL },
	{ "proxy_sessions", 0, "Sessions open.", NULL },
	{ "proxy_refused_per_client", 1,
	    "Sessions refused by the per-client connection limit.", NULL },
	{ "proxy_refused_rate", 1,
	    "Sessions refused by the per-client connection rate.", NULL },
	{ "proxy_refused_sessions", 1,
	    "Sessions refused by the global session cap.", NULL },
	{ "proxy_sessions_max", 0, "The global session cap.", NULL },
	{ "proxy_clients", 0, "Clients in the per-client table.", NULL },
	{ "proxy_clients_evicted", 1,
	    "Clients evicted from a full per-client table.", NULL },
	{ "queue_messages", 0, "Messages in the queue; with queue=, in that "
	    "queue (a message in each queue where it has a pending "
	    "recipient).", NULL },
	{ "queue_recipients", 0, "Recipients pending in the queue; with "
	    "queue=, in that queue.", NULL },
	{ "queued", 1, "Messages queued.", NULL },
	{ "delivered", 1, "Recipients delivered.", NULL },
	{ "deferred", 1, "Recipient delivery attempts deferred.", NULL },
	{ "bounced", 1, "Recipients bounced.", NULL },
	{ "expired", 1, "Recipients expired in the queue.", NULL },
	{ "dsn_sent", 1, "Delivery status notifications queued.", NULL },
	{ "queue_corrupt", 1, "Spool files that did not parse.", NULL },
	{ "mta_connections", 0, "Delivery connections open.", NULL },
	{ "spool_batches", 1, "Spool batches run.", NULL },
	{ "spool_ops", 1, "Spool file operations.", NULL },
	{ "metrics_refused", 1,
	    "Metrics connections closed at accept: peer not in metrics allow.", NULL },
	{ "delivery_delay_seconds", M_HISTOGRAM,
	    "Arrival to delivery of each recipient delivered (delay=).", NULL },
	{ "spool_fsync_seconds", M_HISTOGRAM,
	    "Time of each fsync or fdatasync of the spool.", NULL },
	{ "spool_bytes", M_GAUGE,
	    "Bytes of the queued messages' files in the spool.", NULL },
	{ "spool_batch_messages", M_HISTOGRAM,
	    "Messages committed by each spool batch (one group commit).",
	    NULL },
	{ "relay_added_seconds", M_HISTOGRAM,
	    "Live relay: the client's final dot to the upstream's reply to "
	    "it.", NULL },
	/* labelled families: the keys' words after the name are the values */
	{ "nfq_flows", M_COUNTER,
	    "New flows classified, by direction and action.",
	    "direction,action" },
	{ "sessions", M_COUNTER,
	    "SMTP sessions started, by direction and path.",
	    "direction,path" },
	{ "sessions_open", M_GAUGE,
	    "SMTP sessions open, by direction and path.", "direction,path" },
	{ "sessions_ended", M_COUNTER,
	    "SMTP sessions ended, by disposition.", "disposition" },
	{ "messages_refused", M_COUNTER,
	    "Messages refused to the client at the end of their data, by "
	    "reason.", "reason" },
	{ "dns_lookups", M_COUNTER,
	    "The MTA's DNS resolutions, by kind (host, mx, tlsa) and result.",
	    "kind,result" },
	{ "queue_rate_held", 0,
	    "Transactions a destination's rate holds back now.", NULL },
	{ "queue_messages", M_GAUGE, NULL, "queue" },	/* help: plain key's */
	{ "queue_recipients", M_GAUGE, NULL, "queue" },
	{ "queue_oldest_seconds", M_GAUGE,
	    "Age since arrival of the oldest message in each queue (0: "
	    "empty).", "queue" },
	{ "tls_sessions", M_COUNTER,
	    "TLS sessions established, by leg (client: STARTTLS from clients, "
	    "server: the live relay's upstream, delivery) and protocol.",
	    "leg,protocol" },
};

/* the labelled families whose last value is the rest of the key, dots
 * and all (protocol="TLSv1.3") */
static const char *const metrics_rest[] = { "tls_sessions" };

/*
 * Plain keys that are also a labelled family's series: the classifier's
 * counters, kept under their names for "stats" and for scrapes made
 * before the family, are nfq_flows{direction,action} too.
 */
static const struct {
	const char	*key, *family, *values;
} metrics_alias[] = {
	{ "nfq_incoming_proxy", "nfq_flows", "incoming.proxy" },
	{ "nfq_incoming_pass", "nfq_flows", "incoming.pass" },
	{ "nfq_incoming_drop", "nfq_flows", "incoming.drop" },
	{ "nfq_outgoing_proxy", "nfq_flows", "outgoing.proxy" },
	{ "nfq_outgoing_pass", "nfq_flows", "outgoing.pass" },
	{ "nfq_outgoing_drop", "nfq_flows", "outgoing.drop" },
};

/* one sample of the stats text */
struct metrics_sample {
	char	 key[METRICS_MAXKEY];	/* the key, worker.I. taken off */
	long	 worker;		/* I, or -1 */
	int	 hist;			/* H_*: a histogram's line, or 0 */
#define H_BUCKET	1		/* KEY.le.BOUND */
#define H_SUM		2		/* KEY.sum */
#define H_COUNT		3		/* KEY.count */
	char	 le[24];		/* H_BUCKET: BOUND */
	char	 labels[160];		/* name="value",... or "" */
	char	 value[24];
	int	 done;
};

#define NMETA	(sizeof(metrics_meta) / sizeof(metrics_meta[0]))

/* rest_family - key's last value takes the rest (metrics_rest) */
static int
rest_family(const char *key)
{
	size_t i;

	for (i = 0; i < sizeof(metrics_rest) / sizeof(metrics_rest[0]); i++)
		if (strcmp(metrics_rest[i], key) == 0)
			return 1;
	return 0;
}

/*
 * labelled - a key FAMILY.V1.V2 of a labelled family: s->labels made of
 * its label names and the values (words of letters, digits, '-' and '_',
 * and '.' in a rest family's last one: nothing to escape), *klen cut to
 * the family's name; 1, 0 when k is not one, -1 when it is one but
 * malformed
 */
static int
labelled(const char *k, size_t *klen, struct metrics_sample *s)
{
	const char *dot, *names, *v, *e = k + *klen, *ne;
	size_t i, n, nl, vl, len = 0;
	int rest;

	if ((dot = memchr(k, '.', *klen)) == NULL)
		return 0;
	n = (size_t)(dot - k);
	for (i = 0; i < NMETA; i++)
		if (metrics_meta[i].labels != NULL &&
		    strlen(metrics_meta[i].key) == n &&
		    memcmp(metrics_meta[i].key, k, n) == 0)
			break;
	if (i == NMETA)
		return 0;
	names = metrics_meta[i].labels;
	for (v = dot + 1; ; v += vl + 1) {
		if (v >= e || *names == '\0')
			return -1;
		if ((ne = strchr(names, ',')) == NULL)
			ne = names + strlen(names);
		rest = *ne == '\0' && rest_family(metrics_meta[i].key);
		for (vl = 0; v + vl < e && (rest || v[vl] != '.'); vl++)
			if (!isalnum((unsigned char)v[vl]) && v[vl] != '-' &&
			    v[vl] != '_' && v[vl] != '.')
				return -1;
		nl = (size_t)(ne - names);
		if (vl == 0 || len + nl + vl + 5 >= sizeof(s->labels))
			return -1;
		len += (size_t)snprintf(s->labels + len,
		    sizeof(s->labels) - len, "%s%.*s=\"%.*s\"", len ? "," : "",
		    (int)nl, names, (int)vl, v);
		names = *ne == ',' ? ne + 1 : ne;
		if (v + vl == e)
			break;
	}
	if (*names != '\0')
		return -1;	/* a value short */
	*klen = n;
	return 1;
}

/* hist_part - a histogram's line: its key ends with .le.BOUND, .sum or
 * .count; s->hist and s->le set and *klen cut to the family's key; 0, or
 * -1 for a bad bound */
static int
hist_part(const char *k, size_t *klen, struct metrics_sample *s)
{
	const char *le;
	size_t n, i;

	s->hist = 0;
	if ((le = memmem(k, *klen, ".le.", 4)) != NULL) {
		n = *klen - (size_t)(le + 4 - k);
		if (n == 0 || n >= sizeof(s->le))
			return -1;
		memcpy(s->le, le + 4, n);
		s->le[n] = '\0';
		if (strcmp(s->le, "+Inf") != 0)
			for (i = 0; i < n; i++)
				if (!isdigit((unsigned char)s->le[i]) &&
				    s->le[i] != '.')
					return -1;
		s->hist = H_BUCKET;
		*klen = (size_t)(le - k);
	} else if (*klen > 4 && memcmp(k + *klen - 4, ".sum", 4) == 0) {
		s->hist = H_SUM;
		*klen -= 4;
	} else if (*klen > 6 && memcmp(k + *klen - 6, ".count", 6) == 0) {
		s->hist = H_COUNT;
		*klen -= 6;
	}
	return 0;
}

/* sample_parse - one "key=value" line into s; 0, or -1 to leave it out */
static int
sample_parse(const char *line, size_t len, struct metrics_sample *s)
{
	const char *eq, *k, *v;
	size_t klen, vlen, i;
	char *endp;
	int dots, lab;

	if ((eq = memchr(line, '=', len)) == NULL)
		return -1;
	k = line;
	klen = (size_t)(eq - line);
	v = eq + 1;
	vlen = len - klen - 1;
	s->worker = -1;
	if (klen > 7 && memcmp(k, "worker.", 7) == 0) {
		if (!isdigit((unsigned char)k[7]))
			return -1;
		s->worker = strtol(k + 7, &endp, 10);
		if (*endp != '.' || endp >= eq || s->worker < 0 ||
		    s->worker > 65535)
			return -1;
		klen -= (size_t)(endp + 1 - k);
		k = endp + 1;
	}
	s->labels[0] = '\0';
	s->hist = 0;
	if ((lab = labelled(k, &klen, s)) == -1 ||
	    (lab == 0 && hist_part(k, &klen, s) == -1))
		return -1;
	if (klen == 0 || klen >= sizeof(s->key) ||
	    isdigit((unsigned char)k[0]))
		return -1;
	for (i = 0; i < klen; i++)
		s->key[i] = isalnum((unsigned char)k[i]) ? k[i] : '_';
	s->key[klen] = '\0';
	if (vlen == 0 || vlen >= sizeof(s->value))
		return -1;
	/* a whole number; a histogram's sum may have decimals */
	for (i = 0, dots = 0; i < vlen; i++)
		if (!isdigit((unsigned char)v[i]) && (v[i] != '.' ||
		    s->hist != H_SUM || i == 0 || i == vlen - 1 || dots++))
			return -1;
	memcpy(s->value, v, vlen);
	s->value[vlen] = '\0';
	s->done = 0;
	return 0;
}

/* alias - s's series in a labelled family (metrics_alias) into a; 1,
 * or 0 when it has none */
static int
alias(const struct metrics_sample *s, struct metrics_sample *a)
{
	size_t i, klen;

	if (s->worker >= 0 || s->hist || s->labels[0] != '\0')
		return 0;
	for (i = 0; i < sizeof(metrics_alias) / sizeof(metrics_alias[0]); i++)
		if (strcmp(metrics_alias[i].key, s->key) == 0)
			break;
	if (i == sizeof(metrics_alias) / sizeof(metrics_alias[0]))
		return 0;
	*a = *s;
	snprintf(a->key, sizeof(a->key), "%s.%s", metrics_alias[i].family,
	    metrics_alias[i].values);
	klen = strlen(a->key);
	a->labels[0] = '\0';
	if (labelled(a->key, &klen, a) != 1)
		return 0;
	a->key[klen] = '\0';
	return 1;
}

/* family - the metric name of s into name; its type and help */
static void
family(const struct metrics_sample *s, char *name, size_t len,
    const char **type, const char **help)
{
	size_t i;
	int counter = -1;

	*help = NULL;
	for (i = 0; i < NMETA; i++)
		if (strcmp(metrics_meta[i].key, s->key) == 0 &&
		    (metrics_meta[i].labels != NULL) == (s->labels[0] != '\0')) {
			counter = metrics_meta[i].counter;
			*help = metrics_meta[i].help;
			break;
		}
	/* a family that is also a plain key (queue_messages): one help */
	for (i = 0; *help == NULL && i < NMETA; i++)
		if (strcmp(metrics_meta[i].key, s->key) == 0)
			*help = metrics_meta[i].help;
	if (s->hist)	/* its lines say what it is, known or not */
		counter = M_HISTOGRAM;
	*type = counter == M_COUNTER ? "counter" : counter == M_GAUGE ?
	    "gauge" : counter == M_HISTOGRAM ? "histogram" : "untyped";
	snprintf(name, len, "mxbridge_%s%s%s", s->worker >= 0 ? "worker_" : "",
	    s->key, counter == M_COUNTER ? "_total" : "");
}

/* same_series - a and b are one series (the second would be a dup) */
static int
same_series(const struct metrics_sample *a, const struct metrics_sample *b)
{
	return a->worker == b->worker && a->hist == b->hist &&
	    strcmp(a->key, b->key) == 0 && strcmp(a->labels, b->labels) == 0 &&
	    (a->hist != H_BUCKET || strcmp(a->le, b->le) == 0);
}

/* series - one sample line of s in family name */
static void
series(const struct metrics_sample *s, const char *name, struct buf *out)
{
	static const char *const suffix[] = { "", "_bucket", "_sum", "_count" };
	char w[sizeof(s->labels) + 32] = "";

	if (s->worker >= 0)
		snprintf(w, sizeof(w), "worker=\"%ld\"%s%s", s->worker,
		    s->labels[0] ? "," : "", s->labels);
	else
		snprintf(w, sizeof(w), "%s", s->labels);
	if (s->hist == H_BUCKET)
		buf_printf(out, "%s_bucket{%s%sle=\"%s\"} %s\n", name, w,
		    w[0] ? "," : "", s->le, s->value);
	else if (w[0])
		buf_printf(out, "%s%s{%s} %s\n", name, suffix[s->hist], w,
		    s->value);
	else
		buf_printf(out, "%s%s %s\n", name, suffix[s->hist], s->value);
}

void
metrics_expose(const char *stats, size_t len, struct buf *out)
{
	struct metrics_sample *ss = NULL;
	const char *p = stats, *nl, *type, *help;
	char name[METRICS_MAXKEY + 32];
	size_t n = 0, cap = 0, i, j, k;
	int dup;

	while (p < stats + len) {
		if ((nl = memchr(p, '\n', (size_t)(stats + len - p))) == NULL)
			nl = stats + len;
		if (n + 2 > cap) {	/* a sample and its alias */
			cap = cap ? cap * 2 : 64;
			ss = xreallocarray(ss, cap, sizeof(*ss));
		}
		if (sample_parse(p, (size_t)(nl - p), &ss[n]) == 0) {
			n++;
			/* and its series in a labelled family */
			if (alias(&ss[n - 1], &ss[n]))
				n++;
		}
		p = nl + 1;
	}
	/* by family, in the order each first appears; a series once */
	for (i = 0; i < n; i++) {
		if (ss[i].done)
			continue;
		family(&ss[i], name, sizeof(name), &type, &help);
		if (help != NULL)
			buf_printf(out, "# HELP %s %s%s\n", name, help,
			    ss[i].worker >= 0 ? " Per worker thread." : "");
		else
			buf_printf(out, "# HELP %s mxbridgectl stats %s%s.\n",
			    name, ss[i].worker >= 0 ? "worker.I." : "",
			    ss[i].key);
		buf_printf(out, "# TYPE %s %s\n", name, type);
		for (j = i; j < n; j++) {
			if (ss[j].done || (ss[j].worker < 0) != (ss[i].worker < 0) ||
			    (ss[j].hist != 0) != (ss[i].hist != 0) ||
			    strcmp(ss[j].key, ss[i].key) != 0)
				continue;
			ss[j].done = 1;
			for (dup = 0, k = i; k < j && !dup; k++)
				dup = ss[k].done && same_series(&ss[k], &ss[j]);
			if (dup)
				continue;
			series(&ss[j], name, out);
		}
	}
	free(ss);
}

/*
 * The connections
 */

static void
conn_close_cb(uv_handle_t *h)
{
	struct metrics_conn *c = h->data;

	if (--c->handles > 0)
		return;
	buf_free(&c->out);
	free(c);
}

/* conn_close - close both handles; c is freed by the last callback */
static void
conn_close(struct metrics_conn *c)
{
	if (c->closing)
		return;
	c->closing = 1;
	LIST_REMOVE(c, entry);
	metrics_nconns--;
	uv_close((uv_handle_t *)&c->timer, conn_close_cb);
	uv_close((uv_handle_t *)&c->tcp, conn_close_cb);
}

static void
conn_timeout_cb(uv_timer_t *t)
{
	struct metrics_conn *c = t->data;

	if (!c->answered)
		log_debug("metrics: request timed out after %zu bytes", c->len);
	conn_close(c);
}

static void
conn_shutdown_cb(uv_shutdown_t *req, int status)
{
	struct metrics_conn *c = req->data;

	if (status < 0)
		conn_close(c);
	/* else the peer's close (EOF in conn_read_cb) or the timer ends it */
}

static void
conn_write_cb(uv_write_t *req, int status)
{
	struct metrics_conn *c = req->data;

	if (c->closing)
		return;
	c->sreq.data = c;
	if (status < 0 || uv_shutdown(&c->sreq, (uv_stream_t *)&c->tcp,
	    conn_shutdown_cb) != 0)
		conn_close(c);
}

static const char *
status_text(int code)
{
	switch (code) {
	case 200: return "OK";
	case 400: return "Bad Request";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 431: return "Request Header Fields Too Large";
	case 505: return "HTTP Version Not Supported";
	default: return "Error";
	}
}

/* conn_answer - the one answer of this connection, then its end */
static void
conn_answer(struct metrics_conn *c, int code, int head)
{
	struct buf stats, body;
	uv_buf_t ub;

	buf_init(&stats);
	buf_init(&body);
	if (code == 200) {
		control_stats_collect(&stats);
		metrics_expose(stats.data, stats.len, &body);
	} else
		buf_printf(&body, "%d %s\n", code, status_text(code));
	buf_printf(&c->out, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\n"
	    "Content-Length: %zu\r\n%sConnection: close\r\n\r\n", code,
	    status_text(code), code == 200 ? METRICS_CTYPE :
	    "text/plain; charset=utf-8", body.len,
	    code == 405 ? "Allow: GET, HEAD\r\n" : "");
	if (!head)
		buf_append(&c->out, body.data, body.len);
	buf_free(&stats);
	buf_free(&body);
	if (code != 200)
		log_debug("metrics: answered code=%d", code);
	c->answered = 1;
	uv_timer_start(&c->timer, conn_timeout_cb, METRICS_T_LINGER * 1000, 0);
	ub = uv_buf_init(c->out.data, (unsigned)c->out.len);
	c->wreq.data = c;
	if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &ub, 1,
	    conn_write_cb) != 0)
		conn_close(c);
}

static void
conn_alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *ub)
{
	struct metrics_conn *c = h->data;

	/* once answered, what comes is read into the buffer's start and
	 * dropped */
	if (c->answered)
		*ub = uv_buf_init(c->in, METRICS_MAXREQ);
	else
		*ub = uv_buf_init(c->in + c->len,
		    (unsigned)(METRICS_MAXREQ - c->len));
}

static void
conn_read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *ub)
{
	struct metrics_conn *c = s->data;
	int code, head;

	if (c->closing)
		return;
	if (n < 0) {
		conn_close(c);
		return;
	}
	if (c->answered || n == 0)
		return;
	c->len += (size_t)n;
	if ((code = metrics_http_request(c->in, c->len, &head)) != 0)
		conn_answer(c, code, head);
}

/* peer_allowed - the peer of c is in the current snapshot's "metrics
 * allow" (a reload swaps the list in for the next accept) */
static int
peer_allowed(struct metrics_conn *c)
{
	struct sockaddr_storage ss;
	char a[ADDR_STRLEN];
	int len = sizeof(ss);

	if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) != 0)
		return 0;
	addr_unmap(&ss);	/* logged as the v4 peer it is */
	if (policy_metrics_allowed(policy_current(), (struct sockaddr *)&ss))
		return 1;
	log_debug("metrics: connection from %s refused: not in metrics allow",
	    addr_fmt((struct sockaddr *)&ss, a, sizeof(a)));
	return 0;
}

static void
metrics_stats(struct buf *out)
{
	buf_printf(out, "metrics_refused=%llu\n",
	    (unsigned long long)counter_get(&metrics_refused));
}

static void
metrics_accept_cb(uv_stream_t *server, int status)
{
	struct metrics_conn *c;

	if (status < 0) {
		log_warnx("metrics: accept: %s", uv_strerror(status));
		return;
	}
	c = xcalloc(1, sizeof(*c));
	buf_init(&c->out);
	uv_tcp_init(server->loop, &c->tcp);
	uv_timer_init(server->loop, &c->timer);
	c->tcp.data = c->timer.data = c;
	c->handles = 2;
	LIST_INSERT_HEAD(&metrics_conns, c, entry);
	metrics_nconns++;
	if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
		conn_close(c);
		return;
	}
	/* closed before anything is read: an outsider learns nothing */
	if (!peer_allowed(c)) {
		counter_inc(&metrics_refused);
		conn_close(c);
		return;
	}
	if (metrics_nconns > METRICS_MAXCONN) {
		log_debug("metrics: connection refused: %u open",
		    METRICS_MAXCONN);
		conn_close(c);
		return;
	}
	uv_timer_start(&c->timer, conn_timeout_cb, METRICS_T_REQ * 1000, 0);
	if (uv_read_start((uv_stream_t *)&c->tcp, conn_alloc_cb,
	    conn_read_cb) != 0)
		conn_close(c);
}

int
metrics_start(uv_loop_t *loop, const struct sockaddr *sa)
{
	char a[ADDR_STRLEN];
	int rc;

	addr_fmt(sa, a, sizeof(a));
	uv_tcp_init(loop, &metrics_listener);
	if ((rc = uv_tcp_bind(&metrics_listener, sa, 0)) == 0)
		rc = uv_listen((uv_stream_t *)&metrics_listener, 16,
		    metrics_accept_cb);
	if (rc != 0) {
		log_warnx("metrics: listen %s: %s", a, uv_strerror(rc));
		uv_close((uv_handle_t *)&metrics_listener, NULL);
		return -1;
	}
	metrics_listening = 1;
	control_register_stats(metrics_stats);
	log_info("metrics: listening on %s", a);
	return 0;
}

void
metrics_stop(void)
{
	if (metrics_listening) {
		uv_close((uv_handle_t *)&metrics_listener, NULL);
		metrics_listening = 0;
	}
	while (!LIST_EMPTY(&metrics_conns))
		conn_close(LIST_FIRST(&metrics_conns));
}
