/*
 * dns.c - next-hop addresses for delivery.  It owns the DNS lookups (MX,
 * then A and AAAA of each exchanger, the implicit MX, null MX, address
 * literals), the parsing and checking of every answer, the time budget of
 * a resolution, and the check that a next hop is not the box itself.
 *
 * Answers come from the network and from whoever runs the domain's DNS,
 * so they are parsed here (mta_dns_parse_answer), not by ldns: every
 * count, name, type, class and length is checked before use, names are
 * decompressed with a bound, and only records for the asked name (or
 * the CNAME chain inside the answer that starts at it) and type count.
 * ldns only reads resolv.conf and moves bytes (ldns_udp_send, _tcp_send).
 *
 * DANE (RFC 7672) needs to know which answers DNSSEC validated.  This
 * file does not validate: it believes the AD bit of a resolver it trusts
 * ("tls-policy trust-ad": by default only one on the loopback, 127/8 or
 * ::1, whose answers cannot be forged on the way) and then asks with
 * EDNS0, DO and AD set; an untrusted resolver's AD is ignored and its
 * questions stay plain.  Each next hop carries whether its name (the
 * MX answer) and its address (the A/AAAA answer) were secure, and the
 * TLSA records of a hop (mta_dns_tlsa) are parsed here too, bounded.
 *
 * Lookups block, so they run on the libuv threadpool; the nameservers
 * come from the system configuration (/etc/resolv.conf, which "ip netns
 * exec" replaces with /etc/netns/NAME/resolv.conf).  At most
 * DNS_MAXINFLIGHT resolutions hold a thread at a time, the rest wait in
 * a queue, and callers asking for a name already being resolved share
 * that one: a slow domain holds one thread, for its deadline at most.
 */
#include <sys/types.h>
#include <arpa/inet.h>
#include <ctype.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <ldns/ldns.h>

#include "../common/addr.h"
#include "../common/buf.h"
#include "../common/counter.h"
#include "../common/log.h"
#include "../common/xmalloc.h"
#include "mta_local.h"

#define DNS_MAXMX	MTA_DNS_MAXRR	/* exchangers considered */
#define DNS_TRY_MS	5000		/* milliseconds per try */
#define DNS_RETRY	2		/* rounds over the nameservers */
#define DNS_MAXNS	3		/* nameservers asked (resolv.conf) */
#define DNS_MAXCNAME	8		/* CNAMEs followed in one answer */
#define DNS_MAXJUMP	32		/* compression pointers in one name */
#define DNS_MAXINFLIGHT	16		/* resolutions on the threadpool */

/* parse results, besides MTA_DNS_OK (0) and MTA_DNS_NX (2) */
#define DNS_TEMP	MTA_DNS_TEMP	/* server failure, CNAME loop */
#define DNS_TC		MTA_DNS_TC	/* truncated: ask again over TCP */
#define DNS_BAD		MTA_DNS_BAD	/* not an answer to the question */

#define T_A		1
#define T_CNAME		5
#define T_MX		15
#define T_AAAA		28
#define T_OPT		41
#define T_TLSA		52
#define C_IN		1
#define EDNS_UDPSIZE	1232		/* the DNS flag day's safe size */

/* one caller waiting for a resolution */
struct dns_waiter {
	mta_dns_cb	 cb;
	mta_tlsa_cb	 tcb;		/* DNS_K_TLSA */
	void		*arg;
	struct dns_waiter *next;
};

struct dns_req {
	uv_work_t	 req;
	TAILQ_ENTRY(dns_req) entry;
	uv_loop_t	*loop;
	char		*name;
	uint16_t	 port;
	int		 kind;		/* DNS_K_* */
	struct dns_waiter *waiters;
	struct mta_dnsopt opt;
	struct mta_dnsres res;
	struct mta_tlsa	*tlsa;		/* DNS_K_TLSA's answer */
};
#define DNS_K_HOST	0		/* a host's addresses */
#define DNS_K_MX	1		/* a mail domain's next hops */
#define DNS_K_TLSA	2		/* a next hop's TLSA records */

/* one resolution on its thread: servers and budget */
struct dns_ctx {
	struct sockaddr_storage ns[DNS_MAXNS];
	socklen_t	 nslen[DNS_MAXNS];
	int		 nns;
	uint64_t	 end;		/* the resolution's deadline, ms */
	struct mta_dnsopt opt;
	unsigned	 queries;
	int		 trust;		/* AD believed: asked with EDNS0 */
};

struct mx {
	unsigned	 pref;
	unsigned	 rnd;
	char		 host[256];
};

TAILQ_HEAD(dns_reqq, dns_req);
static struct dns_reqq	 dns_waiting = TAILQ_HEAD_INITIALIZER(dns_waiting);
static struct dns_reqq	 dns_running = TAILQ_HEAD_INITIALIZER(dns_running);
static unsigned		 dns_ncallers;	/* waiters of every request */
static unsigned		 dns_inflight;
/* set on shutdown: running resolutions give up at their next try */
static _Atomic int	 dns_stopping;

/* a fixed server instead of resolv.conf (tests): address, port, timeout */
static char		 dns_server[64];
static uint16_t		 dns_port;
static unsigned		 dns_try_ms = DNS_TRY_MS;
/* the network call, replaced by the fuzzer and the unit tests */
static mta_dns_transport dns_transport;
static void		*dns_transport_arg;

/* mta_dns_busy - callers waiting for an answer */
unsigned
mta_dns_busy(void)
{
	return dns_ncallers;
}

/* mta_dns_running - resolutions holding a thread now */
unsigned
mta_dns_running(void)
{
	return dns_inflight;
}

/*
 * mta_dns_set_server - ask this server only, with this timeout per try
 * (milliseconds); NULL goes back to the system configuration.  For the
 * tests, which need a resolver that fails on purpose.
 */
void
mta_dns_set_server(const char *ip, uint16_t port, unsigned timeout_ms)
{
	snprintf(dns_server, sizeof(dns_server), "%s", ip != NULL ? ip : "");
	dns_port = port;
	dns_try_ms = timeout_ms > 0 ? timeout_ms : DNS_TRY_MS;
}

/* mta_dns_set_transport - replace the network (fuzzer, tests); NULL: off */
void
mta_dns_set_transport(mta_dns_transport fn, void *arg)
{
	dns_transport = fn;
	dns_transport_arg = arg;
}

/* mta_dns_opt_default - the budget when no policy says otherwise */
void
mta_dns_opt_default(struct mta_dnsopt *o)
{
	o->lookup_ms = 30 * 1000;
	o->resolve_ms = 90 * 1000;
	o->maxaddr = 5;
	o->trust_ad = POLICY_TRUSTAD_LOOPBACK;
}

static int __attribute__((format(printf, 4, 5)))
dns_fail(struct mta_dnsres *res, int status, const char *code,
    const char *fmt, ...)
{
	va_list ap;

	res->status = status;
	snprintf(res->code, sizeof(res->code), "%s", code);
	va_start(ap, fmt);
	vsnprintf(res->err, sizeof(res->err), fmt, ap);
	va_end(ap);
	return -1;
}

/* mta_dns_is_self - would connecting to sa reach this box? */
int
mta_dns_is_self(const struct sockaddr *sa)
{
	struct ifaddrs *ifa = NULL;
	int rc;

	if (getifaddrs(&ifa) == -1)
		ifa = NULL;
	rc = addr_is_self_in(sa, ifa);
	if (ifa != NULL)
		freeifaddrs(ifa);
	return rc;
}

/*
 * Answer parsing: the wire format of RFC 1035 4.1, every read checked
 */

static uint16_t
get16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

/* label_ok - a host name label: letters, digits, hyphen, underscore */
static int
label_ok(const uint8_t *l, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (!isalnum(l[i]) && l[i] != '-' && l[i] != '_')
			return 0;
	return 1;
}

/*
 * wire_name - the name at *off, decompressed into out ("." for the root,
 * no final dot otherwise), *off moved past it.  Pointers must go back,
 * at most DNS_MAXJUMP of them, so a loop cannot hold us.  0, or -1 if
 * malformed; *odd is set if a label is not a host name label (the name
 * is then only good for comparing).
 */
static int
wire_name(const uint8_t *w, size_t len, size_t *off, char *out, int *odd)
{
	size_t p = *off, o = 0, end = 0, lo = 0;
	unsigned jumps = 0, n, i;

	*odd = 0;
	for (;;) {
		if (p >= len)
			return -1;
		n = w[p];
		if ((n & 0xc0) == 0xc0) {
			if (p + 1 >= len || ++jumps > DNS_MAXJUMP)
				return -1;
			if (end == 0)
				end = p + 2;
			lo = p;
			p = (size_t)(n & 0x3f) << 8 | w[p + 1];
			if (p >= lo)		/* forward or self: a loop */
				return -1;
			continue;
		}
		if (n & 0xc0)			/* extended label types */
			return -1;
		p++;
		if (n == 0)
			break;
		if (p + n > len || o + n + 1 > 254)
			return -1;
		if (!label_ok(w + p, n))
			*odd = 1;
		if (o > 0)
			out[o++] = '.';
		for (i = 0; i < n; i++) {
			/* comparable text: odd bytes never make a dot */
			out[o++] = w[p + i] == '.' || w[p + i] < 0x21 ||
			    w[p + i] > 0x7e ? '?' : (char)w[p + i];
		}
		p += n;
	}
	if (o == 0)
		out[o++] = '.';
	out[o] = '\0';
	*off = end != 0 ? end : p;
	return 0;
}

/* name_eq - the same domain name, case aside, a final dot aside */
static int
name_eq(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);

	if (la > 1 && a[la - 1] == '.')
		la--;
	if (lb > 1 && b[lb - 1] == '.')
		lb--;
	return la == lb && strncasecmp(a, b, la) == 0;
}

/* one answer record, checked and kept aside while the chain is followed */
struct wire_rr {
	char		 owner[256];
	uint16_t	 type, class;
	size_t		 rdoff;		/* rdata in the packet */
	uint16_t	 rdlen;
};

/* wire_rr - the record at *off, its rdata inside the packet; 0 or -1 */
static int
wire_rr(const uint8_t *w, size_t len, size_t *off, struct wire_rr *r)
{
	int odd;

	if (wire_name(w, len, off, r->owner, &odd) == -1 || *off + 10 > len)
		return -1;
	r->type = get16(w + *off);
	r->class = get16(w + *off + 2);
	r->rdlen = get16(w + *off + 8);		/* the TTL is not used */
	r->rdoff = *off + 10;
	if (r->rdlen > len - r->rdoff)
		return -1;
	*off = r->rdoff + r->rdlen;
	return 0;
}

/* keep_mx - keep the DNS_MAXMX best preferences of however many */
static void
keep_mx(struct mta_dnsans *ans, uint16_t pref, const char *host, int odd)
{
	struct mta_dnsrr *rr;
	size_t i, worst = 0;

	if (ans->n < MTA_DNS_MAXRR)
		rr = &ans->rr[ans->n++];
	else {
		for (i = 1; i < ans->n; i++)
			if (ans->rr[i].pref > ans->rr[worst].pref)
				worst = i;
		if (ans->rr[worst].pref <= pref)
			return;
		rr = &ans->rr[worst];
	}
	memset(rr, 0, sizeof(*rr));
	rr->pref = pref;
	rr->odd = odd;
	snprintf(rr->name, sizeof(rr->name), "%s", host);
}

/*
 * tlsa_keep - one well-formed TLSA record (rdata rd of len >= 4) into t:
 * only DANE-TA(2) and DANE-EE(3) usages count (RFC 7672 3.1.3: PKIX
 * ones are unusable for SMTP), selectors 0/1, matching types 0/1/2 with
 * the digest lengths they imply; the rest unusable.  Usable ones beyond
 * MTA_TLSA_MAX or the data budget are skipped: counted, never used.
 */
static void
tlsa_keep(struct mta_tlsa *t, const uint8_t *rd, uint16_t len)
{
	struct mta_tlsa_rr *r;
	size_t dl = (size_t)len - 3;

	t->total++;
	if ((rd[0] != 2 && rd[0] != 3) || rd[1] > 1 || rd[2] > 2 ||
	    (rd[2] == 1 && dl != 32) || (rd[2] == 2 && dl != 64)) {
		t->unusable++;
		return;
	}
	if (t->n == MTA_TLSA_MAX || dl > sizeof(t->data) - t->used) {
		t->skipped++;
		return;
	}
	r = &t->rr[t->n++];
	r->usage = rd[0];
	r->selector = rd[1];
	r->mtype = rd[2];
	r->len = (uint16_t)dl;
	r->off = (uint16_t)t->used;
	memcpy(t->data + t->used, rd + 3, dl);
	t->used += dl;
}

static int	parse(const uint8_t *, size_t, uint16_t, const char *,
		    uint16_t, struct mta_dnsans *, struct mta_tlsa *);

/*
 * mta_dns_parse_answer - the records of type qtype for qname in the raw
 * answer wire[0..len) to query id.  In-answer CNAMEs starting at qname
 * are followed (DNS_MAXCNAME at most).  MTA_DNS_OK with ans->n records
 * (0: the name has none of that type), MTA_DNS_NX (NXDOMAIN),
 * MTA_DNS_TEMP (server failure, CNAME loop, only malformed records of
 * the type), MTA_DNS_TC (truncated: ask over TCP) or MTA_DNS_BAD (not an
 * answer to this question, malformed: ignore it).  A and AAAA records
 * must be 4 and 16 bytes, MX a preference and a name that fills the
 * rdata; any other is malformed.  Pure: no network, no ldns.
 */
int
mta_dns_parse_answer(const uint8_t *wire, size_t len, uint16_t id,
    const char *qname, uint16_t qtype, struct mta_dnsans *ans)
{
	return parse(wire, len, id, qname, qtype, ans, NULL);
}

/*
 * mta_dns_parse_tlsa - as mta_dns_parse_answer for the TLSA records of
 * qname, kept in t (its counts and records; status and name are the
 * caller's).  A TLSA record needs usage, selector, matching type and
 * one byte of data: a shorter one is malformed.  ans->ad is the AD bit.
 */
int
mta_dns_parse_tlsa(const uint8_t *wire, size_t len, uint16_t id,
    const char *qname, struct mta_dnsans *ans, struct mta_tlsa *t)
{
	return parse(wire, len, id, qname, T_TLSA, ans, t);
}

/* parse - both of the above; tlsa is NULL but for T_TLSA */
static int
parse(const uint8_t *wire, size_t len, uint16_t id, const char *qname,
    uint16_t qtype, struct mta_dnsans *ans, struct mta_tlsa *tlsa)
{
	static __thread struct wire_rr rrs[MTA_DNS_MAXANSRR];
	char name[256], cur[256];
	size_t off, qoff, nrr = 0, i, p;
	unsigned qd, an, k, hops;
	uint16_t flags;
	int odd, bad = 0, rcode;

	memset(ans, 0, sizeof(*ans));
	if (tlsa != NULL)
		tlsa->total = tlsa->unusable = tlsa->skipped = tlsa->n =
		    tlsa->used = 0;
	if (wire == NULL || len < 12 || get16(wire) != id)
		return DNS_BAD;
	flags = get16(wire + 2);
	if (!(flags & 0x8000) || (flags >> 11 & 0xf) != 0)
		return DNS_BAD;			/* not a reply to a QUERY */
	rcode = flags & 0xf;
	ans->rcode = rcode;
	ans->ad = (flags & 0x0020) != 0;
	qd = get16(wire + 4);
	an = get16(wire + 6);
	if (flags & 0x0200)
		return DNS_TC;
	/* the question must be ours (RFC 5452 9.1) */
	off = 12;
	if (qd != 1 || wire_name(wire, len, &off, name, &odd) == -1 ||
	    off + 4 > len || !name_eq(name, qname) ||
	    get16(wire + off) != qtype || get16(wire + off + 2) != C_IN)
		return DNS_BAD;
	off += 4;
	if (rcode == 3)
		return MTA_DNS_NX;
	if (rcode != 0)
		return DNS_TEMP;
	/* pass 1: every record well formed; the CNAMEs kept aside */
	qoff = off;
	for (k = 0; k < an; k++) {
		if (wire_rr(wire, len, &off, &rrs[nrr]) == -1)
			return DNS_BAD;
		ans->total++;
		if (rrs[nrr].class == C_IN && rrs[nrr].type == T_CNAME &&
		    qtype != T_CNAME && nrr + 1 < MTA_DNS_MAXANSRR)
			nrr++;
	}
	/* the CNAME chain inside the answer, from qname */
	snprintf(cur, sizeof(cur), "%s", qname);
	for (hops = 0;; hops++) {
		for (i = 0; i < nrr; i++)
			if (name_eq(rrs[i].owner, cur))
				break;
		if (i == nrr)
			break;
		if (hops == DNS_MAXCNAME)
			return DNS_TEMP;	/* a loop or too long */
		p = rrs[i].rdoff;
		if (wire_name(wire, len, &p, name, &odd) == -1 ||
		    p != rrs[i].rdoff + rrs[i].rdlen)
			return DNS_BAD;
		snprintf(cur, sizeof(cur), "%s", name);
	}
	snprintf(ans->name, sizeof(ans->name), "%s", cur);
	/* pass 2: the records of the type for the end of the chain */
	off = qoff;
	for (k = 0; k < an; k++) {
		struct wire_rr rr, *r = &rr;
		struct mta_dnsrr *out;

		(void)wire_rr(wire, len, &off, r);	/* checked above */
		if (r->class != C_IN || r->type != qtype ||
		    !name_eq(r->owner, cur))
			continue;
		if (qtype == T_MX) {
			p = r->rdoff + 2;
			if (r->rdlen < 3 || wire_name(wire, len, &p, name,
			    &odd) == -1 || p != r->rdoff + r->rdlen) {
				bad++;
				continue;
			}
			keep_mx(ans, get16(wire + r->rdoff), name, odd);
			continue;
		}
		if (qtype == T_TLSA) {
			if (r->rdlen < 4 || tlsa == NULL)
				bad++;
			else
				tlsa_keep(tlsa, wire + r->rdoff, r->rdlen);
			continue;
		}
		if ((qtype == T_A && r->rdlen != 4) ||
		    (qtype == T_AAAA && r->rdlen != 16) ||
		    (qtype != T_A && qtype != T_AAAA)) {
			bad++;
			continue;
		}
		if (ans->n == MTA_DNS_MAXRR)
			continue;
		out = &ans->rr[ans->n++];
		memset(out, 0, sizeof(*out));
		out->family = qtype == T_A ? AF_INET : AF_INET6;
		memcpy(out->addr, wire + r->rdoff, r->rdlen);
	}
	ans->bad = bad;
	if (tlsa != NULL)
		return tlsa->total == 0 && bad > 0 ? DNS_TEMP : MTA_DNS_OK;
	return ans->n == 0 && bad > 0 ? DNS_TEMP : MTA_DNS_OK;
}

/*
 * The network: one question to the nameservers within the budget
 */

static uint64_t
now_ms(void)
{
	return uv_hrtime() / 1000000;
}

/*
 * make_query - the wire form of a recursive question; -1 if bad name.
 * edns: with an OPT record, DO and AD set, so that a validating
 * resolver says what it validated (RFC 6840 5.7, RFC 3225).
 */
static int
make_query(const char *name, uint16_t type, uint16_t id, int edns,
    uint8_t *q, size_t *qlen)
{
	size_t o = 12, n;
	const char *s = name, *dot;

	memset(q, 0, 12);
	q[0] = id >> 8;
	q[1] = id & 0xff;
	q[2] = 0x01;			/* RD */
	q[5] = 1;			/* QDCOUNT */
	if (strcmp(name, ".") != 0)
		while (*s != '\0') {
			dot = strchr(s, '.');
			n = dot != NULL ? (size_t)(dot - s) : strlen(s);
			if (n == 0 || n > 63 || o + n + 1 > 12 + 255)
				return -1;
			q[o++] = (uint8_t)n;
			memcpy(q + o, s, n);
			o += n;
			s += n;
			if (*s == '.' && *++s == '\0')
				break;
		}
	q[o++] = 0;
	q[o++] = type >> 8;
	q[o++] = type & 0xff;
	q[o++] = 0;
	q[o++] = C_IN;
	if (edns) {
		q[3] = 0x20;			/* AD */
		q[11] = 1;			/* ARCOUNT */
		q[o++] = 0;			/* the root */
		q[o++] = 0;
		q[o++] = T_OPT;
		q[o++] = EDNS_UDPSIZE >> 8;
		q[o++] = EDNS_UDPSIZE & 0xff;
		q[o++] = 0;			/* extended rcode */
		q[o++] = 0;			/* version */
		q[o++] = 0x80;			/* DO */
		q[o++] = 0;
		q[o++] = 0;			/* no options */
		q[o++] = 0;
	}
	*qlen = o;
	return 0;
}

/* net_send - one try to one server: 0 and the answer, or -1 */
static int
net_send(const struct sockaddr_storage *ns, socklen_t nslen, int tcp,
    const uint8_t *q, size_t qlen, unsigned ms, uint8_t **out,
    size_t *outlen)
{
	ldns_buffer *b;
	ldns_status s;
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

	*out = NULL;
	if ((b = ldns_buffer_new(qlen)) == NULL)
		return -1;
	/* ldns sends from the start up to the position: no flip */
	ldns_buffer_write(b, q, qlen);
	s = tcp ? ldns_tcp_send(out, b, ns, nslen, tv, outlen) :
	    ldns_udp_send(out, b, ns, nslen, tv, outlen);
	ldns_buffer_free(b);
	if (s != LDNS_STATUS_OK || *out == NULL) {
		free(*out);
		*out = NULL;
		return -1;
	}
	return 0;
}

/* ask - one exchange, through the test transport if there is one */
static int
ask(struct dns_ctx *x, int ns, int tcp, const uint8_t *q, size_t qlen,
    unsigned ms, uint8_t **out, size_t *outlen)
{
	x->queries++;
	if (dns_transport != NULL)
		return dns_transport(dns_transport_arg, q, qlen, tcp, ms, out,
		    outlen);
	return net_send(&x->ns[ns], x->nslen[ns], tcp, q, qlen, ms, out,
	    outlen);
}

/*
 * query - one question, answered within the lookup's budget (and what is
 * left of the resolution's).  MTA_DNS_OK with ans, MTA_DNS_NX, or
 * MTA_DNS_TEMP (no usable answer in time).  Garbage (another id, another
 * question, no QR) is ignored and the next try made, as a resolver must.
 */
static int
query(struct dns_ctx *x, const char *name, uint16_t type,
    struct mta_dnsans *ans, struct mta_tlsa *tlsa)
{
	uint8_t q[12 + 256 + 4 + 11], *a;
	size_t qlen, alen;
	uint64_t end, now;
	uint16_t id;
	unsigned ms;
	int round, ns, tcp, rc, edns = x->trust;

	memset(ans, 0, sizeof(*ans));
	id = (uint16_t)arc4random();
	if (make_query(name, type, id, edns, q, &qlen) == -1)
		return MTA_DNS_NX;	/* cannot exist as a name */
	end = now_ms() + x->opt.lookup_ms;
	if (end > x->end)
		end = x->end;
	for (round = 0; round < DNS_RETRY; round++)
		for (ns = 0; ns < (dns_transport ? 1 : x->nns); ns++) {
			for (tcp = 0; tcp < 2; tcp++) {
				if ((now = now_ms()) >= end || dns_stopping)
					return DNS_TEMP;
				ms = end - now < dns_try_ms ?
				    (unsigned)(end - now) : dns_try_ms;
				if (ask(x, ns, tcp, q, qlen, ms, &a, &alen) ==
				    -1)
					break;
				rc = parse(a, alen, id, name, type, ans,
				    tlsa);
				free(a);
				if (rc == MTA_DNS_OK || rc == MTA_DNS_NX)
					return rc;
				/* FORMERR to EDNS0: ask again without it
				 * (RFC 6891 7), so no AD from this one */
				if (rc == DNS_TEMP && ans->rcode == 1 && edns) {
					edns = 0;
					(void)make_query(name, type, id, 0, q,
					    &qlen);
					tcp = -1;
					continue;
				}
				if (rc != DNS_TC)
					break;
			}
		}
	return DNS_TEMP;
}

/*
 * The resolution: MX, then the exchangers' addresses
 */

static void
add_hop(struct mta_dnsres *res, const struct sockaddr_storage *ss,
    const char *name, int max, int dnssec)
{
	int i;

	if (res->nhop >= max || res->nhop == MTA_MAXADDR)
		return;
	for (i = 0; i < res->nhop; i++)
		if (addr_equal_ip((const struct sockaddr *)ss,
		    (const struct sockaddr *)&res->hop[i].addr))
			return;
	res->hop[res->nhop].addr = *ss;
	snprintf(res->hop[res->nhop].name, sizeof(res->hop[0].name), "%s",
	    name);
	res->hop[res->nhop].dnssec = dnssec;
	res->nhop++;
}

/* rr_sockaddr - a checked A/AAAA record as a socket address */
static void
rr_sockaddr(const struct mta_dnsrr *rr, uint16_t port,
    struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	if (rr->family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)ss;

		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		memcpy(&sin->sin_addr, rr->addr, 4);
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		memcpy(&sin6->sin6_addr, rr->addr, 16);
	}
}

/*
 * addrs - A then AAAA of host, appended to res unless they are ours.
 * 0 if the name exists, 2 if NXDOMAIN, -1 temporary; *self counts the
 * addresses that were ours.  namesec: MTA_HOP_NAMESEC when the host's
 * name is secure; each address adds whether its own answer was.
 */
static int
addrs(struct dns_ctx *x, const char *host, uint16_t port,
    struct mta_dnsres *res, struct ifaddrs *ifa, int *self, int namesec)
{
	static const uint16_t types[] = { T_A, T_AAAA };
	struct sockaddr_storage ss;
	struct mta_dnsans ans;
	size_t t, i;
	int rc, ok = 0, temp = 0;

	for (t = 0; t < 2; t++) {
		if ((rc = query(x, host, types[t], &ans, NULL)) !=
		    MTA_DNS_OK) {
			temp |= rc != MTA_DNS_NX;
			continue;
		}
		ok = 1;
		for (i = 0; i < ans.n; i++) {
			rr_sockaddr(&ans.rr[i], port, &ss);
			if (addr_is_self_in((struct sockaddr *)&ss, ifa))
				(*self)++;
			else
				add_hop(res, &ss, host, x->opt.maxaddr,
				    namesec | (x->trust && ans.ad ?
				    MTA_HOP_ADDRSEC : 0));
		}
	}
	return ok ? 0 : temp ? -1 : 2;
}

static int
mx_cmp(const void *a, const void *b)
{
	const struct mx *x = a, *y = b;

	if (x->pref != y->pref)
		return x->pref < y->pref ? -1 : 1;
	return x->rnd < y->rnd ? -1 : x->rnd > y->rnd;
}

/*
 * mx_list - the usable exchangers, sorted, equal ones shuffled.  Names
 * that are not host names (an address: RFC 5321 5.1 wants a name, odd
 * bytes) are left out; *nnull counts the "." ones (RFC 7505).
 */
static size_t
mx_list(const struct mta_dnsans *ans, struct mx *mx, size_t *nnull)
{
	struct sockaddr_storage ss;
	size_t i, n = 0;

	*nnull = 0;
	for (i = 0; i < ans->n; i++) {
		const struct mta_dnsrr *rr = &ans->rr[i];

		if (strcmp(rr->name, ".") == 0) {
			(*nnull)++;
			continue;
		}
		if (rr->odd || addr_parse(rr->name, 25, &ss) == 0)
			continue;
		mx[n].pref = rr->pref;
		mx[n].rnd = arc4random();
		snprintf(mx[n].host, sizeof(mx[n].host), "%s", rr->name);
		n++;
	}
	qsort(mx, n, sizeof(*mx), mx_cmp);
	return n;
}

/* literal - "[1.2.3.4]" or "[IPv6:...]": no lookup at all */
static int
literal(const char *name, uint16_t port, struct mta_dnsres *res)
{
	struct sockaddr_storage ss;
	char tmp[INET6_ADDRSTRLEN + 8];
	size_t n = strlen(name);

	if (n < 3 || name[0] != '[' || name[n - 1] != ']' ||
	    n - 2 >= sizeof(tmp))
		return 0;
	memcpy(tmp, name + 1, n - 2);
	tmp[n - 2] = '\0';
	if (addr_parse(strncasecmp(tmp, "IPv6:", 5) == 0 ? tmp + 5 : tmp,
	    port, &ss) == -1) {
		dns_fail(res, 5, "5.1.2", "bad address literal %s", name);
		return 1;
	}
	if (mta_dns_is_self((struct sockaddr *)&ss))
		dns_fail(res, 5, "5.4.6", "mail for %s loops back to myself",
		    name);
	else
		add_hop(res, &ss, name, MTA_MAXADDR, 0);
	return 1;
}

/*
 * implicit_mx - no MX records: the domain's own addresses (RFC 5321
 * 5.1).  namesec: the absence of MX records was validated, so the
 * domain is the TLSA base (RFC 7672 2.2.1); an unvalidated absence
 * could be an attacker's, who stripped the MX records.
 */
static int
implicit_mx(struct dns_ctx *x, const char *domain, uint16_t port,
    struct mta_dnsres *res, struct ifaddrs *ifa, int namesec)
{
	int rc, self = 0;

	rc = addrs(x, domain, port, res, ifa, &self, namesec);
	if (res->nhop > 0)
		return 0;
	if (self > 0)
		return dns_fail(res, 5, "5.4.6", "mail for %s loops back to "
		    "myself", domain);
	if (rc == -1)
		return dns_fail(res, 4, "4.4.3", "temporary DNS failure for "
		    "%s", domain);
	return dns_fail(res, 5, "5.1.2", "no MX or address record for %s",
	    domain);
}

/*
 * exchangers - the addresses of the sorted MX hosts, until maxaddr of
 * them or the resolution's deadline
 */
static int
exchangers(struct dns_ctx *x, struct mx *mx, size_t n, const char *domain,
    uint16_t port, struct mta_dnsres *res, struct ifaddrs *ifa, int namesec)
{
	size_t i;
	int rc, self = 0, temp = 0;

	for (i = 0; i < n && res->nhop < x->opt.maxaddr; i++) {
		if (now_ms() >= x->end) {
			temp = 1;
			break;
		}
		rc = addrs(x, mx[i].host, port, res, ifa, &self, namesec);
		if (rc == -1)
			temp = 1;
		/* RFC 5321 5.1: nothing at or after our own preference */
		if (self > 0)
			break;
	}
	if (res->nhop > 0)
		return 0;
	if (self > 0)
		return dns_fail(res, 5, "5.4.6", "mail for %s loops back to "
		    "myself", domain);
	if (temp)
		return dns_fail(res, 4, "4.4.3", "temporary DNS failure "
		    "looking up the MX hosts of %s", domain);
	return dns_fail(res, 5, "5.4.4", "no address for any MX host of %s",
	    domain);
}

static int	ctx_servers(struct dns_ctx *, const struct mta_dnsopt *,
		    struct mta_dnsres *);

/* ns_loopback - a nameserver on this host: 127/8, ::1, ::ffff:127/104 */
static int
ns_loopback(const struct sockaddr_storage *ss)
{
	const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;
	const uint8_t *a = sin6->sin6_addr.s6_addr;

	if (ss->ss_family == AF_INET)
		return (ntohl(((const struct sockaddr_in *)ss)->sin_addr.s_addr)
		    >> 24) == 127;
	if (ss->ss_family != AF_INET6)
		return 0;
	if (IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr))
		return 1;
	return IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr) && a[12] == 127;
}

/*
 * ctx_trust - whether the nameservers' AD bit is believed: "yes" always,
 * "no" never, "loopback" (the default) when every one of them is on
 * this host (a validating resolver whose answers nobody on the network
 * can alter; RFC 6698 4.1, RFC 7672 2.1).  A test transport: "yes" only.
 */
static int
ctx_trust(const struct dns_ctx *x)
{
	int i;

	if (x->opt.trust_ad == POLICY_TRUSTAD_YES)
		return 1;
	if (x->opt.trust_ad == POLICY_TRUSTAD_NO || dns_transport != NULL ||
	    x->nns == 0)
		return 0;
	for (i = 0; i < x->nns; i++)
		if (!ns_loopback(&x->ns[i]))
			return 0;
	return 1;
}

/* ctx_init - the nameservers and the budget; -1 with res failed */
static int
ctx_init(struct dns_ctx *x, const struct mta_dnsopt *opt,
    struct mta_dnsres *res)
{
	if (ctx_servers(x, opt, res) == -1)
		return -1;
	x->trust = ctx_trust(x);
	return 0;
}

/* ctx_servers - ctx_init's nameservers and budget */
static int
ctx_servers(struct dns_ctx *x, const struct mta_dnsopt *opt,
    struct mta_dnsres *res)
{
	ldns_resolver *r = NULL;
	ldns_rdf **ns;
	struct sockaddr_storage *ss;
	ldns_status s;
	size_t i, len;

	memset(x, 0, sizeof(*x));
	x->opt = *opt;
	if (x->opt.maxaddr < 1 || x->opt.maxaddr > MTA_MAXADDR)
		x->opt.maxaddr = MTA_MAXADDR;
	x->end = now_ms() + x->opt.resolve_ms;
	if (dns_transport != NULL)
		return 0;
	if (dns_server[0] != '\0') {
		if (addr_parse(dns_server, dns_port, &x->ns[0]) == -1)
			return dns_fail(res, 4, "4.4.3", "bad DNS server %s",
			    dns_server);
		x->nslen[0] = x->ns[0].ss_family == AF_INET ?
		    sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
		x->nns = 1;
		return 0;
	}
	/* resolv.conf is ours, not the network's: ldns may read it */
	if ((s = ldns_resolver_new_frm_file(&r, NULL)) != LDNS_STATUS_OK)
		return dns_fail(res, 4, "4.4.3", "no resolver configuration: "
		    "%s", ldns_get_errorstr_by_id(s));
	ns = ldns_resolver_nameservers(r);
	for (i = 0; i < ldns_resolver_nameserver_count(r) &&
	    x->nns < DNS_MAXNS; i++) {
		if (ns[i] == NULL || (ss = ldns_rdf2native_sockaddr_storage(
		    ns[i], ldns_resolver_port(r), &len)) == NULL)
			continue;
		x->ns[x->nns] = *ss;
		x->nslen[x->nns++] = (socklen_t)len;
		LDNS_FREE(ss);
	}
	ldns_resolver_deep_free(r);
	if (x->nns == 0)
		return dns_fail(res, 4, "4.4.3", "no nameserver configured");
	return 0;
}

/* mx_resolve - the next hops for mail to domain; 0, or -1 with res set */
static int
mx_resolve(const char *domain, uint16_t port, const struct mta_dnsopt *opt,
    struct mta_dnsres *res)
{
	static __thread struct mx mx[DNS_MAXMX];
	static __thread struct mta_dnsans ans;
	struct ifaddrs *ifa = NULL;
	struct dns_ctx x;
	size_t n = 0, nnull = 0;
	int rc = -1;

	memset(res, 0, sizeof(*res));
	if (literal(domain, port, res))
		return res->status == 0 ? 0 : -1;
	if (*domain == '\0')
		return dns_fail(res, 5, "5.1.2", "no domain");
	if (ctx_init(&x, opt, res) == -1)
		return -1;
	if (getifaddrs(&ifa) == -1)
		ifa = NULL;
	res->trust_ad = x.trust;
	switch (query(&x, domain, T_MX, &ans, NULL)) {
	case MTA_DNS_NX:
		dns_fail(res, 5, "5.1.2", "domain %s not found (NXDOMAIN)",
		    domain);
		goto done;
	case MTA_DNS_OK:
		break;
	default:
		dns_fail(res, 4, "4.4.3", "temporary DNS failure looking up "
		    "the MX of %s", domain);
		goto done;
	}
	n = mx_list(&ans, mx, &nnull);
	if (n == 0 && nnull > 0)
		dns_fail(res, 5, "5.1.10", "domain %s accepts no mail (null "
		    "MX)", domain);
	else if (n == 0 && ans.n > 0)
		dns_fail(res, 5, "5.4.4", "no usable MX host name for %s",
		    domain);
	else if (n == 0)
		rc = implicit_mx(&x, domain, port, res, ifa,
		    x.trust && ans.ad ? MTA_HOP_NAMESEC : 0);
	else
		rc = exchangers(&x, mx, n, domain, port, res, ifa,
		    x.trust && ans.ad ? MTA_HOP_NAMESEC : 0);
done:
	if (ifa != NULL)
		freeifaddrs(ifa);
	return rc;
}

/*
 * mta_dns_mx_lookup - the next hops for mail to domain, synchronous,
 * with the default budget.  0 with res->hop filled, or -1 with
 * res->status 4 or 5.
 */
int
mta_dns_mx_lookup(const char *domain, uint16_t port, struct mta_dnsres *res)
{
	struct mta_dnsopt opt;

	mta_dns_opt_default(&opt);
	return mx_resolve(domain, port, &opt, res);
}

/* host_lookup - A/AAAA of a relay host name, or the address itself */
static int
host_lookup(const char *host, uint16_t port, const struct mta_dnsopt *opt,
    struct mta_dnsres *res)
{
	struct sockaddr_storage ss;
	struct ifaddrs *ifa = NULL;
	struct dns_ctx x;
	int rc = -1, self = 0, q;

	memset(res, 0, sizeof(*res));
	if (literal(host, port, res))
		return res->status == 0 ? 0 : -1;
	if (addr_parse(host, port, &ss) == 0) {
		if (mta_dns_is_self((struct sockaddr *)&ss))
			return dns_fail(res, 5, "5.4.6", "relay host %s is "
			    "this box", host);
		add_hop(res, &ss, host, MTA_MAXADDR, 0);
		return 0;
	}
	if (ctx_init(&x, opt, res) == -1)
		return -1;
	res->trust_ad = x.trust;
	if (getifaddrs(&ifa) == -1)
		ifa = NULL;
	/* a configured name: only its addresses' answers matter */
	q = addrs(&x, host, port, res, ifa, &self, MTA_HOP_NAMESEC);
	if (res->nhop > 0)
		rc = 0;
	else if (self > 0)
		dns_fail(res, 5, "5.4.6", "relay host %s is this box", host);
	else if (q == 2)
		dns_fail(res, 4, "4.4.4", "relay host %s not found", host);
	else
		dns_fail(res, 4, "4.4.3", "no address for relay host %s", host);
	if (ifa != NULL)
		freeifaddrs(ifa);
	return rc;
}

/*
 * tlsa_resolve - the TLSA records of _port._tcp.host, t->status saying
 * what they are worth to DANE: only an answer with AD from a trusted
 * resolver is secure; NXDOMAIN or no records with AD is a secure "none";
 * no usable answer (SERVFAIL: a validating resolver's word for bogus,
 * or time out) is a failure, which DANE never takes for "none".
 */
static void
tlsa_resolve(const char *host, uint16_t port, const struct mta_dnsopt *opt,
    struct mta_tlsa *t)
{
	static __thread struct mta_dnsans ans;
	struct mta_dnsres res;
	struct dns_ctx x;
	int rc;

	t->status = MTA_TLSA_FAIL;
	t->total = t->unusable = t->skipped = t->n = t->used = 0;
	t->err[0] = '\0';
	if ((size_t)snprintf(t->name, sizeof(t->name), "_%u._tcp.%s",
	    (unsigned)port, host) >= 256) {
		snprintf(t->err, sizeof(t->err), "name too long");
		return;
	}
	memset(&res, 0, sizeof(res));
	if (ctx_init(&x, opt, &res) == -1) {
		snprintf(t->err, sizeof(t->err), "%s", res.err);
		return;
	}
	if (!x.trust) {
		t->status = MTA_TLSA_INSECURE;
		snprintf(t->err, sizeof(t->err), "the resolver is not trusted "
		    "for DNSSEC (tls-policy trust-ad)");
		return;
	}
	rc = query(&x, t->name, T_TLSA, &ans, t);
	if (rc != MTA_DNS_OK && rc != MTA_DNS_NX) {
		snprintf(t->err, sizeof(t->err), "TLSA lookup of %s failed%s",
		    t->name, ans.rcode == 2 ? " (SERVFAIL: DNSSEC bogus?)" :
		    "");
		return;
	}
	if (!ans.ad) {
		t->status = MTA_TLSA_INSECURE;
		snprintf(t->err, sizeof(t->err), "TLSA answer for %s not "
		    "DNSSEC-validated", t->name);
	} else if (rc == MTA_DNS_NX || t->total == 0) {
		t->status = MTA_TLSA_NONE;
		snprintf(t->err, sizeof(t->err), "no TLSA records at %s",
		    t->name);
	} else
		t->status = MTA_TLSA_SECURE;
}

/*
 * mta_dns_tlsa_lookup - tlsa_resolve, synchronous (the tests); opt NULL:
 * the default budget, the AD bit trusted
 */
void
mta_dns_tlsa_lookup(const char *host, uint16_t port,
    const struct mta_dnsopt *opt, struct mta_tlsa *t)
{
	struct mta_dnsopt o;

	if (opt == NULL) {
		mta_dns_opt_default(&o);
		o.trust_ad = POLICY_TRUSTAD_YES;
		opt = &o;
	}
	tlsa_resolve(host, port, opt, t);
}

/*
 * The queue of resolutions on the threadpool
 */

static void
dns_work(uv_work_t *w)
{
	struct dns_req *req = w->data;

	if (req->kind == DNS_K_MX)
		mx_resolve(req->name, req->port, &req->opt, &req->res);
	else if (req->kind == DNS_K_TLSA)
		tlsa_resolve(req->name, req->port, &req->opt, req->tlsa);
	else
		host_lookup(req->name, req->port, &req->opt, &req->res);
}

static void	dns_next(void);

/*
 * The resolutions' outcomes by kind (host: a relay host's or a server's
 * addresses, mx: a domain's next hops, tlsa: a hop's TLSA records) and
 * result, for "stats" (mta_dns_stats).  Moved in dns_finish on the MTA's
 * loop only; counter_t because "stats" may read them from another.
 */
static const char *const dns_kind_name[] = { "host", "mx", "tlsa" };
static const char *const dns_result_name[] = {
	"ok", "notfound", "nullmx", "unusable", "tempfail",	/* mx, host */
	"secure", "none", "insecure", "fail"			/* tlsa */
};
#define DNS_NRESULT	(sizeof(dns_result_name) / sizeof(dns_result_name[0]))
static counter_t	 dns_count[3][DNS_NRESULT];

/* dns_result - the result word's index of a finished resolution */
static size_t
dns_result(const struct dns_req *req)
{
	if (req->kind == DNS_K_TLSA)
		return 5 + (size_t)req->tlsa->status;
	if (req->res.status == 0)
		return 0;
	if (req->res.status == 4)
		return 4;
	if (strcmp(req->res.code, "5.1.2") == 0)
		return 1;
	if (strcmp(req->res.code, "5.1.10") == 0)
		return 2;
	return 3;
}

/* mta_dns_stats - the lines dns_lookups.KIND.RESULT=N (a metrics family);
 * host and mx have no tlsa words, tlsa none of theirs */
void
mta_dns_stats(struct buf *out)
{
	size_t k, r;

	for (k = 0; k < 3; k++)
		for (r = k == DNS_K_TLSA ? 5 : 0;
		    r < (k == DNS_K_TLSA ? DNS_NRESULT : 5); r++)
			buf_printf(out, "dns_lookups.%s.%s=%llu\n",
			    dns_kind_name[k], dns_result_name[r],
			    (unsigned long long)counter_get(&dns_count[k][r]));
}

/* dns_finish - the answer (or a failure) to every caller, on the loop */
static void
dns_finish(struct dns_req *req, int status)
{
	struct dns_waiter *wt;
	struct mta_dnsres res;

	if (status != 0)
		dns_fail(&req->res, 4, "4.4.3", "lookup cancelled");
	if (status != 0 && req->tlsa != NULL) {
		req->tlsa->status = MTA_TLSA_FAIL;
		snprintf(req->tlsa->err, sizeof(req->tlsa->err),
		    "lookup cancelled");
	}
	counter_inc(&dns_count[req->kind][dns_result(req)]);
	while ((wt = req->waiters) != NULL) {
		req->waiters = wt->next;
		dns_ncallers--;
		if (req->kind == DNS_K_TLSA)	/* read only, during the call */
			wt->tcb(wt->arg, req->tlsa);
		else {
			res = req->res;	/* each caller may keep its copy */
			wt->cb(wt->arg, &res);
		}
		free(wt);
	}
	free(req->tlsa);
	free(req->name);
	free(req);
}

static void
dns_done(uv_work_t *w, int status)
{
	struct dns_req *req = w->data;

	dns_inflight--;
	TAILQ_REMOVE(&dns_running, req, entry);
	dns_finish(req, status);
	dns_next();
}

/* dns_next - start waiting lookups while threads are allowed */
static void
dns_next(void)
{
	struct dns_req *req;
	int rc;

	while (dns_inflight < DNS_MAXINFLIGHT &&
	    (req = TAILQ_FIRST(&dns_waiting)) != NULL) {
		TAILQ_REMOVE(&dns_waiting, req, entry);
		TAILQ_INSERT_TAIL(&dns_running, req, entry);
		dns_inflight++;
		if ((rc = uv_queue_work(req->loop, &req->req, dns_work,
		    dns_done)) != 0) {
			log_warnx("dns: uv_queue_work: %s", uv_strerror(rc));
			dns_inflight--;
			TAILQ_REMOVE(&dns_running, req, entry);
			dns_finish(req, rc);
		}
	}
}

/* dns_same - a request for this question already waiting or running */
static struct dns_req *
dns_same(struct dns_reqq *q, const char *name, uint16_t port, int kind)
{
	struct dns_req *req;

	TAILQ_FOREACH(req, q, entry)
		if (req->port == port && req->kind == kind &&
		    strcasecmp(req->name, name) == 0)
			return req;
	return NULL;
}

static void
dns_start(uv_loop_t *loop, const char *name, uint16_t port, int kind,
    mta_dns_cb cb, mta_tlsa_cb tcb, void *arg)
{
	const struct policy_queue *pq = &policy_current()->queue;
	struct dns_waiter *wt;
	struct dns_req *req;

	wt = xcalloc(1, sizeof(*wt));
	wt->cb = cb;
	wt->tcb = tcb;
	wt->arg = arg;
	dns_ncallers++;
	/* one resolution per question: a slow domain holds one thread */
	if ((req = dns_same(&dns_running, name, port, kind)) != NULL ||
	    (req = dns_same(&dns_waiting, name, port, kind)) != NULL) {
		wt->next = req->waiters;
		req->waiters = wt;
		return;
	}
	req = xcalloc(1, sizeof(*req));
	req->loop = loop;
	req->name = xstrdup(name);
	req->port = port;
	req->kind = kind;
	req->waiters = wt;
	if (kind == DNS_K_TLSA)
		req->tlsa = xcalloc(1, sizeof(*req->tlsa));
	req->opt.lookup_ms = pq->dns_timeout * 1000;
	req->opt.resolve_ms = pq->resolve_timeout * 1000;
	req->opt.maxaddr = (int)pq->max_addresses;
	req->opt.trust_ad = policy_current()->tls_trust_ad;
	req->req.data = req;
	TAILQ_INSERT_TAIL(&dns_waiting, req, entry);
	dns_next();
}

/* mta_dns_init - lookups may run (again) */
void
mta_dns_init(void)
{
	dns_stopping = 0;
}

/*
 * mta_dns_stop - lookups still waiting for a thread fail now; running
 * ones stop at their next try (a try takes 5 seconds at most)
 */
void
mta_dns_stop(void)
{
	struct dns_req *req;

	dns_stopping = 1;

	while ((req = TAILQ_FIRST(&dns_waiting)) != NULL) {
		TAILQ_REMOVE(&dns_waiting, req, entry);
		dns_finish(req, UV_ECANCELED);
	}
}

/* mta_dns_mx - the next hops of a mail domain; cb runs on the loop */
void
mta_dns_mx(uv_loop_t *loop, const char *domain, uint16_t port,
    mta_dns_cb cb, void *arg)
{
	dns_start(loop, domain, port, DNS_K_MX, cb, NULL, arg);
}

/* mta_dns_host - the addresses of a host (a relay host) */
void
mta_dns_host(uv_loop_t *loop, const char *host, uint16_t port,
    mta_dns_cb cb, void *arg)
{
	dns_start(loop, host, port, DNS_K_HOST, cb, NULL, arg);
}

/*
 * mta_dns_tlsa - the TLSA records of a next hop (_port._tcp.host); cb
 * runs on the loop with an answer it may read during the call only
 */
void
mta_dns_tlsa(uv_loop_t *loop, const char *host, uint16_t port,
    mta_tlsa_cb cb, void *arg)
{
	dns_start(loop, host, port, DNS_K_TLSA, NULL, cb, arg);
}
