/*
 * dns.c - next-hop addresses for delivery.  It owns the ldns lookups
 * (MX, then A and AAAA of each exchanger, the implicit MX, null MX,
 * address literals) and the check that a next hop is not the box itself.
 * Lookups block, so they run on the libuv threadpool; each builds its own
 * resolver from the system configuration (/etc/resolv.conf, which "ip
 * netns exec" replaces with /etc/netns/NAME/resolv.conf).  At most
 * DNS_MAXINFLIGHT of them hold a thread at a time, the rest wait in a
 * queue: a slow resolver must not take every thread from the spool,
 * whose batches every acknowledgement waits for.
 */
#include <sys/types.h>
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ldns/ldns.h>

#include "../common/addr.h"
#include "../common/log.h"
#include "../common/xmalloc.h"
#include "mta_local.h"

#define DNS_MAXMX	16
#define DNS_TIMEOUT	5000		/* milliseconds per try */
#define DNS_RETRY	2
#define DNS_MAXINFLIGHT	4		/* lookups on the threadpool at once */

struct dns_req {
	uv_work_t	 req;
	TAILQ_ENTRY(dns_req) entry;
	uv_loop_t	*loop;
	char		*name;
	uint16_t	 port;
	int		 mx;		/* MX lookup, else host only */
	mta_dns_cb	 cb;
	void		*arg;
	struct mta_dnsres res;
};

struct mx {
	unsigned	 pref;
	unsigned	 rnd;
	char		 host[256];
};

TAILQ_HEAD(dns_reqq, dns_req);
static struct dns_reqq	 dns_waiting = TAILQ_HEAD_INITIALIZER(dns_waiting);
static unsigned		 dns_nwaiting;
static unsigned		 dns_inflight;

/* a fixed server instead of resolv.conf (tests): address, port, timeout */
static char		 dns_server[64];
static uint16_t		 dns_port;
static unsigned		 dns_timeout = DNS_TIMEOUT;

/* mta_dns_busy - lookups running or waiting for a thread */
unsigned
mta_dns_busy(void)
{
	return dns_inflight + dns_nwaiting;
}

/* mta_dns_running - lookups holding a thread now */
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
	dns_timeout = timeout_ms > 0 ? timeout_ms : DNS_TIMEOUT;
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

/* fixed_resolver - a resolver asking dns_server:dns_port only */
static ldns_resolver *
fixed_resolver(struct mta_dnsres *res)
{
	ldns_resolver *r;
	ldns_rdf *ns;

	if ((r = ldns_resolver_new()) == NULL ||
	    ((ns = ldns_rdf_new_frm_str(LDNS_RDF_TYPE_A, dns_server)) ==
	    NULL && (ns = ldns_rdf_new_frm_str(LDNS_RDF_TYPE_AAAA,
	    dns_server)) == NULL)) {
		ldns_resolver_free(r);
		dns_fail(res, 4, "4.4.3", "bad DNS server %s", dns_server);
		return NULL;
	}
	ldns_resolver_push_nameserver(r, ns);
	ldns_rdf_deep_free(ns);
	ldns_resolver_set_port(r, dns_port);
	ldns_resolver_set_recursive(r, true);
	return r;
}

static ldns_resolver *
resolver(struct mta_dnsres *res)
{
	ldns_resolver *r = NULL;
	ldns_status s;

	if (dns_server[0] != '\0') {
		if ((r = fixed_resolver(res)) == NULL)
			return NULL;
	} else if ((s = ldns_resolver_new_frm_file(&r, NULL)) !=
	    LDNS_STATUS_OK) {
		dns_fail(res, 4, "4.4.3", "no resolver configuration: %s",
		    ldns_get_errorstr_by_id(s));
		return NULL;
	}
	ldns_resolver_set_timeout(r, (struct timeval){ dns_timeout / 1000,
	    (dns_timeout % 1000) * 1000 });
	ldns_resolver_set_retry(r, DNS_RETRY);
	ldns_resolver_set_fallback(r, true);
	return r;
}

/*
 * query - one question; the answer records of that type in *out (NULL
 * when there are none).  0 NOERROR, 2 NXDOMAIN, -1 temporary failure.
 */
static int
query(ldns_resolver *r, const char *name, ldns_rr_type type,
    ldns_rr_list **out)
{
	ldns_rdf *dname;
	ldns_pkt *pkt = NULL;
	ldns_status s;
	int rc = -1;

	*out = NULL;
	if ((dname = ldns_dname_new_frm_str(name)) == NULL)
		return 2;
	s = ldns_resolver_query_status(&pkt, r, dname, type,
	    LDNS_RR_CLASS_IN, LDNS_RD);
	ldns_rdf_deep_free(dname);
	if (s != LDNS_STATUS_OK || pkt == NULL)
		goto done;
	switch (ldns_pkt_get_rcode(pkt)) {
	case LDNS_RCODE_NOERROR:
		*out = ldns_pkt_rr_list_by_type(pkt, type,
		    LDNS_SECTION_ANSWER);
		rc = 0;
		break;
	case LDNS_RCODE_NXDOMAIN:
		rc = 2;
		break;
	default:
		break;
	}
done:
	ldns_pkt_free(pkt);
	return rc;
}

static void
add_hop(struct mta_dnsres *res, const struct sockaddr_storage *ss,
    const char *name)
{
	int i;

	if (res->nhop == MTA_MAXADDR)
		return;
	for (i = 0; i < res->nhop; i++)
		if (addr_equal_ip((const struct sockaddr *)ss,
		    (const struct sockaddr *)&res->hop[i].addr))
			return;
	res->hop[res->nhop].addr = *ss;
	snprintf(res->hop[res->nhop].name, sizeof(res->hop[0].name), "%s",
	    name);
	res->nhop++;
}

/*
 * addrs - A then AAAA of host, appended to res unless they are ours.
 * 0 if the name exists, 2 if NXDOMAIN, -1 temporary; *self counts the
 * addresses that were ours.
 */
static int
addrs(ldns_resolver *r, const char *host, uint16_t port,
    struct mta_dnsres *res, struct ifaddrs *ifa, int *self)
{
	static const ldns_rr_type types[] = { LDNS_RR_TYPE_A,
	    LDNS_RR_TYPE_AAAA };
	struct sockaddr_storage *ss;
	ldns_rr_list *rrs;
	size_t t, i, len;
	int rc, ok = 0, temp = 0;

	for (t = 0; t < 2; t++) {
		if ((rc = query(r, host, types[t], &rrs)) != 0) {
			temp |= rc == -1;
			continue;
		}
		ok = 1;
		for (i = 0; rrs != NULL && i < ldns_rr_list_rr_count(rrs);
		    i++) {
			ss = ldns_rdf2native_sockaddr_storage(ldns_rr_rdf(
			    ldns_rr_list_rr(rrs, i), 0), port, &len);
			if (ss == NULL)
				continue;
			if (addr_is_self_in((struct sockaddr *)ss, ifa))
				(*self)++;
			else
				add_hop(res, ss, host);
			LDNS_FREE(ss);
		}
		ldns_rr_list_deep_free(rrs);
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

/* mx_list - the MX records of domain, sorted, equal ones shuffled */
static size_t
mx_list(ldns_rr_list *rrs, struct mx *mx)
{
	ldns_rr *rr;
	char *host;
	size_t i, n = 0, len;

	for (i = 0; i < ldns_rr_list_rr_count(rrs) && n < DNS_MAXMX; i++) {
		rr = ldns_rr_list_rr(rrs, i);
		if ((host = ldns_rdf2str(ldns_rr_mx_exchange(rr))) == NULL)
			continue;
		len = strlen(host);
		if (len > 1 && host[len - 1] == '.')
			host[len - 1] = '\0';
		mx[n].pref = ldns_rdf2native_int16(ldns_rr_mx_preference(rr));
		mx[n].rnd = arc4random();
		snprintf(mx[n].host, sizeof(mx[n].host), "%s", host);
		free(host);
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
		add_hop(res, &ss, name);
	return 1;
}

/* implicit_mx - no MX records: the domain's own addresses (RFC 5321 5.1) */
static int
implicit_mx(ldns_resolver *r, const char *domain, uint16_t port,
    struct mta_dnsres *res, struct ifaddrs *ifa)
{
	int rc, self = 0;

	rc = addrs(r, domain, port, res, ifa, &self);
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

/* exchangers - the addresses of the sorted MX hosts */
static int
exchangers(ldns_resolver *r, struct mx *mx, size_t n, const char *domain,
    uint16_t port, struct mta_dnsres *res, struct ifaddrs *ifa)
{
	size_t i;
	int rc, self = 0, temp = 0;

	for (i = 0; i < n; i++) {
		rc = addrs(r, mx[i].host, port, res, ifa, &self);
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

/*
 * mta_dns_mx_lookup - the next hops for mail to domain, synchronous.
 * 0 with res->hop filled, or -1 with res->status 4 or 5.
 */
int
mta_dns_mx_lookup(const char *domain, uint16_t port, struct mta_dnsres *res)
{
	struct mx mx[DNS_MAXMX];
	struct ifaddrs *ifa = NULL;
	ldns_resolver *r;
	ldns_rr_list *rrs = NULL;
	size_t n = 0;
	int rc = -1;

	memset(res, 0, sizeof(*res));
	if (literal(domain, port, res))
		return res->status == 0 ? 0 : -1;
	if (*domain == '\0')
		return dns_fail(res, 5, "5.1.2", "no domain");
	if ((r = resolver(res)) == NULL)
		return -1;
	if (getifaddrs(&ifa) == -1)
		ifa = NULL;
	switch (query(r, domain, LDNS_RR_TYPE_MX, &rrs)) {
	case 2:
		dns_fail(res, 5, "5.1.2", "domain %s not found (NXDOMAIN)",
		    domain);
		goto done;
	case -1:
		dns_fail(res, 4, "4.4.3", "temporary DNS failure looking up "
		    "the MX of %s", domain);
		goto done;
	}
	if (rrs != NULL)
		n = mx_list(rrs, mx);
	if (n == 1 && strcmp(mx[0].host, ".") == 0)
		dns_fail(res, 5, "5.1.10", "domain %s accepts no mail (null "
		    "MX)", domain);
	else if (n == 0)
		rc = implicit_mx(r, domain, port, res, ifa);
	else
		rc = exchangers(r, mx, n, domain, port, res, ifa);
done:
	ldns_rr_list_deep_free(rrs);
	ldns_resolver_deep_free(r);
	if (ifa != NULL)
		freeifaddrs(ifa);
	return rc;
}

/* host_lookup - A/AAAA of a relay host name, or the address itself */
static int
host_lookup(const char *host, uint16_t port, struct mta_dnsres *res)
{
	struct sockaddr_storage ss;
	struct ifaddrs *ifa = NULL;
	ldns_resolver *r;
	int rc = -1, self = 0, q;

	memset(res, 0, sizeof(*res));
	if (literal(host, port, res))
		return res->status == 0 ? 0 : -1;
	if (addr_parse(host, port, &ss) == 0) {
		if (mta_dns_is_self((struct sockaddr *)&ss))
			return dns_fail(res, 5, "5.4.6", "relay host %s is "
			    "this box", host);
		add_hop(res, &ss, host);
		return 0;
	}
	if ((r = resolver(res)) == NULL)
		return -1;
	if (getifaddrs(&ifa) == -1)
		ifa = NULL;
	q = addrs(r, host, port, res, ifa, &self);
	if (res->nhop > 0)
		rc = 0;
	else if (self > 0)
		dns_fail(res, 5, "5.4.6", "relay host %s is this box", host);
	else if (q == 2)
		dns_fail(res, 4, "4.4.4", "relay host %s not found", host);
	else
		dns_fail(res, 4, "4.4.3", "no address for relay host %s", host);
	ldns_resolver_deep_free(r);
	if (ifa != NULL)
		freeifaddrs(ifa);
	return rc;
}

static void
dns_work(uv_work_t *w)
{
	struct dns_req *req = w->data;

	if (req->mx)
		mta_dns_mx_lookup(req->name, req->port, &req->res);
	else
		host_lookup(req->name, req->port, &req->res);
}

static void	dns_next(void);

/* dns_finish - the answer (or a failure) to the caller, on the loop */
static void
dns_finish(struct dns_req *req, int status)
{
	if (status != 0)
		dns_fail(&req->res, 4, "4.4.3", "lookup cancelled");
	req->cb(req->arg, &req->res);
	free(req->name);
	free(req);
}

static void
dns_done(uv_work_t *w, int status)
{
	dns_inflight--;
	dns_finish(w->data, status);
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
		dns_nwaiting--;
		dns_inflight++;
		if ((rc = uv_queue_work(req->loop, &req->req, dns_work,
		    dns_done)) != 0) {
			log_warnx("dns: uv_queue_work: %s", uv_strerror(rc));
			dns_inflight--;
			dns_finish(req, rc);
		}
	}
}

static void
dns_start(uv_loop_t *loop, const char *name, uint16_t port, int mx,
    mta_dns_cb cb, void *arg)
{
	struct dns_req *req;

	req = xcalloc(1, sizeof(*req));
	req->loop = loop;
	req->name = xstrdup(name);
	req->port = port;
	req->mx = mx;
	req->cb = cb;
	req->arg = arg;
	req->req.data = req;
	TAILQ_INSERT_TAIL(&dns_waiting, req, entry);
	dns_nwaiting++;
	dns_next();
}

/* mta_dns_stop - lookups still waiting for a thread fail now */
void
mta_dns_stop(void)
{
	struct dns_req *req;

	while ((req = TAILQ_FIRST(&dns_waiting)) != NULL) {
		TAILQ_REMOVE(&dns_waiting, req, entry);
		dns_nwaiting--;
		dns_finish(req, UV_ECANCELED);
	}
}

/* mta_dns_mx - the next hops of a mail domain; cb runs on the loop */
void
mta_dns_mx(uv_loop_t *loop, const char *domain, uint16_t port,
    mta_dns_cb cb, void *arg)
{
	dns_start(loop, domain, port, 1, cb, arg);
}

/* mta_dns_host - the addresses of a host (a relay host) */
void
mta_dns_host(uv_loop_t *loop, const char *host, uint16_t port,
    mta_dns_cb cb, void *arg)
{
	dns_start(loop, host, port, 0, cb, arg);
}
