/*
 * addr.c - socket addresses: printing for logs, parsing from the config,
 * and matching against networks.  IPv4-mapped IPv6 addresses are folded
 * to IPv4 so that a dual-stack listener and a v4 rule agree.
 */
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "addr.h"

/* addr_fmt_ip - the address alone, for logs and HELO/Received */
const char *
addr_fmt_ip(const struct sockaddr *sa, char *out, size_t len)
{
	const void *p;

	if (sa->sa_family == AF_INET)
		p = &((const struct sockaddr_in *)sa)->sin_addr;
	else if (sa->sa_family == AF_INET6)
		p = &((const struct sockaddr_in6 *)sa)->sin6_addr;
	else {
		snprintf(out, len, "unknown");
		return out;
	}
	if (inet_ntop(sa->sa_family, p, out, len) == NULL)
		snprintf(out, len, "unknown");
	return out;
}

/* addr_fmt - "a.b.c.d:port" or "[v6]:port" */
const char *
addr_fmt(const struct sockaddr *sa, char *out, size_t len)
{
	char ip[INET6_ADDRSTRLEN];

	addr_fmt_ip(sa, ip, sizeof(ip));
	if (sa->sa_family == AF_INET6)
		snprintf(out, len, "[%s]:%u", ip, addr_port(sa));
	else
		snprintf(out, len, "%s:%u", ip, addr_port(sa));
	return out;
}

uint16_t
addr_port(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)sa)->sin_port);
	if (sa->sa_family == AF_INET6)
		return ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
	return 0;
}

socklen_t
addr_len(const struct sockaddr *sa)
{
	return sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) :
	    sizeof(struct sockaddr_in);
}

/* addr_parse - a numeric IPv4 or IPv6 address (brackets allowed) */
int
addr_parse(const char *s, uint16_t port, struct sockaddr_storage *ss)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
	char tmp[INET6_ADDRSTRLEN + 2];
	size_t n = strlen(s);

	memset(ss, 0, sizeof(*ss));
	if (n >= 2 && s[0] == '[' && s[n - 1] == ']') {
		if (n - 2 >= sizeof(tmp))
			return -1;
		memcpy(tmp, s + 1, n - 2);
		tmp[n - 2] = '\0';
		s = tmp;
	}
	if (inet_pton(AF_INET, s, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		return 0;
	}
	if (inet_pton(AF_INET6, s, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		return 0;
	}
	return -1;
}

/* addr_net_parse - "addr" or "addr/len" */
int
addr_net_parse(const char *s, struct addr_net *net)
{
	char tmp[INET6_ADDRSTRLEN + 8];
	char *slash, *end;
	unsigned long len;
	unsigned max;

	if (strlen(s) >= sizeof(tmp))
		return -1;
	strcpy(tmp, s);
	memset(net, 0, sizeof(*net));
	if ((slash = strchr(tmp, '/')) != NULL)
		*slash++ = '\0';
	if (inet_pton(AF_INET, tmp, net->addr) == 1)
		net->family = AF_INET, max = 32;
	else if (inet_pton(AF_INET6, tmp, net->addr) == 1)
		net->family = AF_INET6, max = 128;
	else
		return -1;
	net->prefixlen = max;
	if (slash != NULL) {
		len = strtoul(slash, &end, 10);
		if (*slash == '\0' || *end != '\0' || len > max)
			return -1;
		net->prefixlen = (unsigned)len;
	}
	return 0;
}

/* addr_bytes - the raw address of sa, v4-mapped v6 folded to v4 */
static const uint8_t *
addr_bytes(const struct sockaddr *sa, int *family)
{
	const struct sockaddr_in6 *sin6;

	if (sa->sa_family == AF_INET) {
		*family = AF_INET;
		return (const uint8_t *)&((const struct sockaddr_in *)sa)->sin_addr;
	}
	sin6 = (const struct sockaddr_in6 *)sa;
	if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr)) {
		*family = AF_INET;
		return sin6->sin6_addr.s6_addr + 12;
	}
	*family = AF_INET6;
	return sin6->sin6_addr.s6_addr;
}

int
addr_net_match(const struct addr_net *net, const struct sockaddr *sa)
{
	const uint8_t *a;
	unsigned full, rest;
	int family;

	if (sa->sa_family != AF_INET && sa->sa_family != AF_INET6)
		return 0;
	a = addr_bytes(sa, &family);
	if (family != net->family)
		return 0;
	full = net->prefixlen / 8;
	rest = net->prefixlen % 8;
	if (memcmp(a, net->addr, full) != 0)
		return 0;
	if (rest == 0)
		return 1;
	return ((a[full] ^ net->addr[full]) & (0xff << (8 - rest))) == 0;
}

int
addr_equal_ip(const struct sockaddr *a, const struct sockaddr *b)
{
	const uint8_t *pa, *pb;
	int fa, fb;

	if ((a->sa_family != AF_INET && a->sa_family != AF_INET6) ||
	    (b->sa_family != AF_INET && b->sa_family != AF_INET6))
		return 0;
	pa = addr_bytes(a, &fa);
	pb = addr_bytes(b, &fb);
	return fa == fb && memcmp(pa, pb, fa == AF_INET ? 4 : 16) == 0;
}

/* addr_unmap - rewrite a v4-mapped IPv6 address as plain IPv4 */
void
addr_unmap(struct sockaddr_storage *ss)
{
	struct sockaddr_in6 sin6;
	struct sockaddr_in *sin = (struct sockaddr_in *)ss;

	if (ss->ss_family != AF_INET6)
		return;
	memcpy(&sin6, ss, sizeof(sin6));
	if (!IN6_IS_ADDR_V4MAPPED(&sin6.sin6_addr))
		return;
	memset(ss, 0, sizeof(*ss));
	sin->sin_family = AF_INET;
	sin->sin_port = sin6.sin6_port;
	memcpy(&sin->sin_addr, sin6.sin6_addr.s6_addr + 12, 4);
}

/* addr_is_self_in - a loopback, unspecified, or listed interface address */
int
addr_is_self_in(const struct sockaddr *sa, const struct ifaddrs *ifa)
{
	const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;
	const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;

	if (sa->sa_family == AF_INET &&
	    ((ntohl(sin->sin_addr.s_addr) >> 24) == 127 ||
	    sin->sin_addr.s_addr == INADDR_ANY))
		return 1;
	if (sa->sa_family == AF_INET6 &&
	    (IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr) ||
	    IN6_IS_ADDR_UNSPECIFIED(&sin6->sin6_addr)))
		return 1;
	for (; ifa != NULL; ifa = ifa->ifa_next)
		if (ifa->ifa_addr != NULL && addr_equal_ip(sa, ifa->ifa_addr))
			return 1;
	return 0;
}

/*
 * addr_is_self - is sa one of this box's addresses?  The interface list
 * is cached for a second: the classifier asks for every new flow, and a
 * netlink dump per SYN would cost more than the rest of the decision.
 * The cache is shared by every thread, under self_mtx (one lock per new
 * flow or session; the dump once a second, by whoever asks first).
 */
static pthread_mutex_t	 self_mtx = PTHREAD_MUTEX_INITIALIZER;
static struct ifaddrs	*self_cache;	/* under self_mtx */
static time_t		 self_fetched;	/* under self_mtx */

int
addr_is_self(const struct sockaddr *sa)
{
	struct timespec now;
	int rc;

	clock_gettime(CLOCK_MONOTONIC_COARSE, &now);
	pthread_mutex_lock(&self_mtx);
	if (self_cache == NULL || now.tv_sec != self_fetched) {
		if (self_cache != NULL)
			freeifaddrs(self_cache);
		if (getifaddrs(&self_cache) == -1)
			self_cache = NULL;
		self_fetched = now.tv_sec;
	}
	rc = addr_is_self_in(sa, self_cache);
	pthread_mutex_unlock(&self_mtx);
	return rc;
}
