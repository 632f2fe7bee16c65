/*
 * test_nfq.c - unit tests of nfq/: the parser of queued packets
 * (nfq_parse_packet: IPv4 with and without options, IPv6 with and
 * without extension headers, fragments, wrong versions and protocols,
 * bad lengths, every truncation, and random input under the sanitizers),
 * the verdict mark (nfq_verdict_mark), and that the mark layout of nfq.h
 * is the one scripts/mxbridge-netfilter uses, and the ifindex-to-name
 * cache (common/ifname.c) that names the ingress port of a mark.
 * Table-driven: a failing row names itself.
 * Run from the source root, or set MXB_SRCDIR.
 */
#include <sys/socket.h>
#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "testutil.h"
#include "../../common/buf.h"
#include "../../common/ifname.h"
#include "../../mta/mta_local.h"
#include "../../nfq/nfq.h"
#include "../../policy/policy.h"

#define N(a)	(sizeof(a) / sizeof((a)[0]))
#define UNUSED	__attribute__((unused))

#define PKT_MAX		4096
#define SPORT		40000
#define DPORT		25
#define SRC4		"192.0.2.101"
#define DST4		"192.0.2.10"
#define SRC6		"2001:db8:2::101"
#define DST6		"2001:db8:2::10"
#define TCPOPT_SYN	20	/* MSS, SACK-permitted, timestamps, wscale */
#define FUZZ_ROUNDS	200000

/* one packet as the queue hands it over */
struct pkt {
	uint8_t		 b[PKT_MAX];
	size_t		 len;
	size_t		 tcp;		/* offset of the TCP header */
};

/* ------------------------------------------------------------ helpers */

static void
put16(uint8_t *p, unsigned v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

/* tcp_syn - a SYN from SPORT to DPORT at p with optlen option octets */
static size_t
tcp_syn(uint8_t *p, size_t optlen)
{
	memset(p, 0, 20 + optlen);
	put16(p, SPORT);
	put16(p + 2, DPORT);
	p[12] = (uint8_t)((5 + optlen / 4) << 4);
	p[13] = 0x02;				/* SYN */
	put16(p + 14, 64240);
	memset(p + 20, 1, optlen);		/* NOP */
	if (optlen >= 4) {
		p[20] = 2;			/* MSS 1460 */
		p[21] = 4;
		put16(p + 22, 1460);
	}
	return 20 + optlen;
}

/*
 * build_v4 - an IPv4 packet: header of ihl words (options are NOPs),
 * protocol proto, flags and fragment offset frag, then a SYN with tcpopt
 * option octets (after 20 octets if ihl is below 5)
 */
static void
build_v4(struct pkt *k, unsigned ihl, uint8_t proto, unsigned frag,
    size_t tcpopt)
{
	size_t hlen = ihl < 5 ? 20 : ihl * 4;

	memset(k, 0, sizeof(*k));
	k->b[0] = (uint8_t)(0x40 | (ihl & 0x0f));
	put16(k->b + 4, 0x1234);
	put16(k->b + 6, frag);
	k->b[8] = 64;
	k->b[9] = proto;
	assert_int_equal(inet_pton(AF_INET, SRC4, k->b + 12), 1);
	assert_int_equal(inet_pton(AF_INET, DST4, k->b + 16), 1);
	memset(k->b + 20, 1, hlen - 20);
	k->tcp = hlen;
	k->len = hlen + tcp_syn(k->b + hlen, tcpopt);
	put16(k->b + 2, (unsigned)k->len);
}

/*
 * build_v6 - an IPv6 packet whose fixed header names first, then the
 * extension headers ext (their next-header fields as given), then a SYN
 */
static void
build_v6(struct pkt *k, uint8_t first, const uint8_t *ext, size_t extlen,
    size_t tcpopt)
{
	memset(k, 0, sizeof(*k));
	k->b[0] = 0x60;
	k->b[6] = first;
	k->b[7] = 64;
	assert_int_equal(inet_pton(AF_INET6, SRC6, k->b + 8), 1);
	assert_int_equal(inet_pton(AF_INET6, DST6, k->b + 24), 1);
	if (extlen > 0)
		memcpy(k->b + 40, ext, extlen);
	k->tcp = 40 + extlen;
	k->len = k->tcp + tcp_syn(k->b + k->tcp, tcpopt);
	put16(k->b + 4, (unsigned)(k->len - 40));
}

/* check_endpoints - src and dst are SRC:SPORT and DST:DPORT of family */
static void
check_endpoints(const char *name, int family,
    const struct sockaddr_storage *src, const struct sockaddr_storage *dst)
{
	const struct sockaddr_in *s4 = (const struct sockaddr_in *)src;
	const struct sockaddr_in *d4 = (const struct sockaddr_in *)dst;
	const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)src;
	const struct sockaddr_in6 *d6 = (const struct sockaddr_in6 *)dst;
	char s[INET6_ADDRSTRLEN], d[INET6_ADDRSTRLEN];

	if (src->ss_family != family || dst->ss_family != family)
		fail_msg("%s: family %d/%d, want %d", name, src->ss_family,
		    dst->ss_family, family);
	if (family == AF_INET) {
		inet_ntop(AF_INET, &s4->sin_addr, s, sizeof(s));
		inet_ntop(AF_INET, &d4->sin_addr, d, sizeof(d));
		if (strcmp(s, SRC4) != 0 || strcmp(d, DST4) != 0 ||
		    ntohs(s4->sin_port) != SPORT || ntohs(d4->sin_port) != DPORT)
			fail_msg("%s: %s:%u > %s:%u", name, s,
			    ntohs(s4->sin_port), d, ntohs(d4->sin_port));
		return;
	}
	inet_ntop(AF_INET6, &s6->sin6_addr, s, sizeof(s));
	inet_ntop(AF_INET6, &d6->sin6_addr, d, sizeof(d));
	if (strcmp(s, SRC6) != 0 || strcmp(d, DST6) != 0 ||
	    ntohs(s6->sin6_port) != SPORT || ntohs(d6->sin6_port) != DPORT ||
	    s6->sin6_flowinfo != 0 || s6->sin6_scope_id != 0)
		fail_msg("%s: [%s]:%u > [%s]:%u", name, s,
		    ntohs(s6->sin6_port), d, ntohs(d6->sin6_port));
}

/*
 * expect_parse - parse the first len octets of pkt from a heap copy of
 * exactly that size (so that the sanitizers see any read past it); want
 * 0 and the test endpoints of family, or -1 and src, dst untouched
 */
static void
expect_parse(const char *name, const uint8_t *pkt, size_t len, int want,
    int family)
{
	struct sockaddr_storage src, dst, guard;
	uint8_t *copy;
	int rc;

	if ((copy = malloc(len > 0 ? len : 1)) == NULL)
		fail_msg("malloc");
	if (len > 0)
		memcpy(copy, pkt, len);
	memset(&guard, 0xa5, sizeof(guard));
	src = dst = guard;
	rc = nfq_parse_packet(copy, len, &src, &dst);
	free(copy);
	if (rc != want)
		fail_msg("%s: len %zu: rc %d, want %d", name, len, rc, want);
	if (want == 0)
		check_endpoints(name, family, &src, &dst);
	else if (memcmp(&src, &guard, sizeof(guard)) != 0 ||
	    memcmp(&dst, &guard, sizeof(guard)) != 0)
		fail_msg("%s: len %zu: refused but wrote src/dst", name, len);
}

/* ------------------------------------------------------------ IPv4 */

static void
test_parse_ip4(void **state UNUSED)
{
	static const struct {
		const char	*name;
		unsigned	 ihl;		/* 32-bit words */
		uint8_t		 proto;
		unsigned	 frag;		/* flags, offset */
		int		 totlen;	/* -1: the packet's */
		size_t		 tcpopt;
		int		 want;
	} rows[] = {
		{ "plain SYN", 5, IPPROTO_TCP, 0, -1, 0, 0 },
		{ "SYN with options", 5, IPPROTO_TCP, 0, -1, TCPOPT_SYN, 0 },
		{ "DF set", 5, IPPROTO_TCP, 0x4000, -1, TCPOPT_SYN, 0 },
		{ "IHL 6", 6, IPPROTO_TCP, 0, -1, 0, 0 },
		{ "IHL 10", 10, IPPROTO_TCP, 0, -1, TCPOPT_SYN, 0 },
		{ "IHL 15", 15, IPPROTO_TCP, 0, -1, TCPOPT_SYN, 0 },
		{ "IHL 0", 0, IPPROTO_TCP, 0, -1, 0, -1 },
		{ "IHL 1", 1, IPPROTO_TCP, 0, -1, 0, -1 },
		{ "IHL 4", 4, IPPROTO_TCP, 0, -1, 0, -1 },
		{ "UDP", 5, IPPROTO_UDP, 0, -1, 0, -1 },
		{ "ICMP", 5, IPPROTO_ICMP, 0, -1, 0, -1 },
		{ "SCTP", 5, IPPROTO_SCTP, 0, -1, 0, -1 },
		{ "first fragment (MF)", 5, IPPROTO_TCP, 0x2000, -1, 0, 0 },
		{ "later fragment", 5, IPPROTO_TCP, 0x0001, -1, 0, -1 },
		{ "later fragment, MF", 5, IPPROTO_TCP, 0x2001, -1, 0, -1 },
		{ "last fragment offset", 5, IPPROTO_TCP, 0x1fff, -1, 0, -1 },
		/* the copy range cut a longer packet: the headers are in */
		{ "total length beyond buffer", 5, IPPROTO_TCP, 0, 1500, 0,
		    0 },
		{ "total length 65535", 15, IPPROTO_TCP, 0, 65535, 0, 0 },
		/* the packet ends before its TCP header does */
		{ "total length 0", 5, IPPROTO_TCP, 0, 0, 0, -1 },
		{ "total length = IHL", 5, IPPROTO_TCP, 0, 20, 0, -1 },
		{ "total length 1 short", 5, IPPROTO_TCP, 0, 39, 0, -1 },
		{ "total length 1 short, IHL 15", 15, IPPROTO_TCP, 0, 79, 0,
		    -1 },
		{ "total length exact, IHL 15", 15, IPPROTO_TCP, 0, 80, 0,
		    0 },
	};
	struct pkt k;
	size_t i;

	for (i = 0; i < N(rows); i++) {
		build_v4(&k, rows[i].ihl, rows[i].proto, rows[i].frag,
		    rows[i].tcpopt);
		if (rows[i].totlen != -1)
			put16(k.b + 2, (unsigned)rows[i].totlen);
		expect_parse(rows[i].name, k.b, k.len, rows[i].want, AF_INET);
	}
}

/* ------------------------------------------------------------ IPv6 */

/* extension header chains; the last next-header field names TCP */
static const uint8_t ext_hop[] = {		/* PadN */
	IPPROTO_TCP, 0, 1, 4, 0, 0, 0, 0,
};
static const uint8_t ext_hop_dst[] = {		/* 8 + 16 octets */
	IPPROTO_DSTOPTS, 0, 1, 4, 0, 0, 0, 0,
	IPPROTO_TCP, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
};
static const uint8_t ext_rt[] = {		/* type 4, segments left 0 */
	IPPROTO_TCP, 0, 4, 0, 0, 0, 0, 0,
};
static const uint8_t ext_frag_first[] = {	/* offset 0, M */
	IPPROTO_TCP, 0, 0x00, 0x01, 0, 0, 0, 7,
};
static const uint8_t ext_frag_whole[] = {	/* atomic fragment */
	IPPROTO_TCP, 0, 0x00, 0x00, 0, 0, 0, 7,
};
static const uint8_t ext_frag_later[] = {	/* offset 1 (8 octets), M */
	IPPROTO_TCP, 0, 0x00, 0x09, 0, 0, 0, 7,
};
static const uint8_t ext_frag_last[] = {	/* offset 8191 */
	IPPROTO_TCP, 0, 0xff, 0xf8, 0, 0, 0, 7,
};
static const uint8_t ext_ah[] = {		/* (4 + 2) * 4 = 24 octets */
	IPPROTO_TCP, 4, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
};
static const uint8_t ext_all[] = {		/* hop, rt, frag, ah, dst */
	IPPROTO_ROUTING, 0, 1, 4, 0, 0, 0, 0,
	IPPROTO_FRAGMENT, 0, 4, 0, 0, 0, 0, 0,
	IPPROTO_AH, 0, 0x00, 0x00, 0, 0, 0, 7,
	IPPROTO_DSTOPTS, 2, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0,
	IPPROTO_TCP, 0, 1, 4, 0, 0, 0, 0,
};
static const uint8_t ext_dst_udp[] = {
	IPPROTO_UDP, 0, 1, 4, 0, 0, 0, 0,
};
static const uint8_t ext_dst_none[] = {	/* no next header */
	59, 0, 1, 4, 0, 0, 0, 0,
};
static const uint8_t ext_opaque[] = {	/* ESP, mobility: not walked */
	IPPROTO_TCP, 0, 0, 0, 0, 0, 0, 0,
};
static const uint8_t ext_dst_huge[] = {	/* claims 2048 octets */
	IPPROTO_TCP, 255, 1, 4, 0, 0, 0, 0,
};

static void
test_parse_ip6(void **state UNUSED)
{
	const struct {
		const char	*name;
		uint8_t		 first;		/* fixed header's next */
		const uint8_t	*ext;
		size_t		 extlen;
		int		 plen;		/* -1: the packet's */
		int		 want;
	} rows[] = {
		{ "plain SYN", IPPROTO_TCP, NULL, 0, -1, 0 },
		{ "hop-by-hop", IPPROTO_HOPOPTS, ext_hop, sizeof(ext_hop),
		    -1, 0 },
		{ "hop-by-hop, dstopts", IPPROTO_HOPOPTS, ext_hop_dst,
		    sizeof(ext_hop_dst), -1, 0 },
		{ "routing", IPPROTO_ROUTING, ext_rt, sizeof(ext_rt), -1, 0 },
		{ "first fragment", IPPROTO_FRAGMENT, ext_frag_first,
		    sizeof(ext_frag_first), -1, 0 },
		{ "atomic fragment", IPPROTO_FRAGMENT, ext_frag_whole,
		    sizeof(ext_frag_whole), -1, 0 },
		{ "later fragment", IPPROTO_FRAGMENT, ext_frag_later,
		    sizeof(ext_frag_later), -1, -1 },
		{ "last fragment offset", IPPROTO_FRAGMENT, ext_frag_last,
		    sizeof(ext_frag_last), -1, -1 },
		{ "AH", IPPROTO_AH, ext_ah, sizeof(ext_ah), -1, 0 },
		{ "hop, rt, frag, ah, dst", IPPROTO_HOPOPTS, ext_all,
		    sizeof(ext_all), -1, 0 },
		{ "UDP", IPPROTO_UDP, NULL, 0, -1, -1 },
		{ "ICMPv6", IPPROTO_ICMPV6, NULL, 0, -1, -1 },
		{ "dstopts, then UDP", IPPROTO_DSTOPTS, ext_dst_udp,
		    sizeof(ext_dst_udp), -1, -1 },
		{ "no next header", 59, NULL, 0, -1, -1 },
		{ "dstopts, no next header", IPPROTO_DSTOPTS, ext_dst_none,
		    sizeof(ext_dst_none), -1, -1 },
		/* not walked: opaque (ESP) or not an extension we know */
		{ "ESP", IPPROTO_ESP, ext_opaque, sizeof(ext_opaque), -1, -1 },
		{ "mobility", 135, ext_opaque, sizeof(ext_opaque), -1, -1 },
		{ "extension past the buffer", IPPROTO_DSTOPTS, ext_dst_huge,
		    sizeof(ext_dst_huge), -1, -1 },
		/* lengths: cut by the copy range, jumbogram, too short */
		{ "payload beyond buffer", IPPROTO_TCP, NULL, 0, 1460, 0 },
		{ "payload 65535, hop-by-hop", IPPROTO_HOPOPTS, ext_hop,
		    sizeof(ext_hop), 65535, 0 },
		{ "payload 0 (jumbogram)", IPPROTO_HOPOPTS, ext_hop,
		    sizeof(ext_hop), 0, 0 },
		{ "payload 1 short", IPPROTO_TCP, NULL, 0, 19, -1 },
		{ "payload 1 short, hop-by-hop", IPPROTO_HOPOPTS, ext_hop,
		    sizeof(ext_hop), 27, -1 },
		{ "payload = extensions", IPPROTO_HOPOPTS, ext_hop_dst,
		    sizeof(ext_hop_dst), 24, -1 },
		{ "payload exact, hop, dst", IPPROTO_HOPOPTS, ext_hop_dst,
		    sizeof(ext_hop_dst), 44, 0 },
	};
	struct pkt k;
	size_t i;

	for (i = 0; i < N(rows); i++) {
		build_v6(&k, rows[i].first, rows[i].ext, rows[i].extlen, 0);
		if (rows[i].plen != -1)
			put16(k.b + 4, (unsigned)rows[i].plen);
		expect_parse(rows[i].name, k.b, k.len, rows[i].want,
		    AF_INET6);
	}
}

/*
 * a chain of many small headers is walked to its end (there is no fixed
 * limit: each header takes 8 octets, so the buffer bounds the walk), and
 * one that runs past the buffer is refused
 */
static void
test_parse_ip6_chain(void **state UNUSED)
{
	uint8_t ext[8 * 200];
	struct pkt k;
	size_t n, i;
	char name[64];

	for (n = 1; n <= 200; n += (n < 16 ? 1 : 37)) {
		memset(ext, 0, sizeof(ext));
		for (i = 0; i < n; i++) {
			ext[i * 8] = i + 1 < n ? IPPROTO_DSTOPTS : IPPROTO_TCP;
			ext[i * 8 + 2] = 1;		/* PadN */
			ext[i * 8 + 3] = 4;
		}
		build_v6(&k, IPPROTO_DSTOPTS, ext, n * 8, 0);
		snprintf(name, sizeof(name), "%zu dstopts headers", n);
		expect_parse(name, k.b, k.len, 0, AF_INET6);
		/* the last header names itself again: runs off the end */
		ext[(n - 1) * 8] = IPPROTO_DSTOPTS;
		build_v6(&k, IPPROTO_DSTOPTS, ext, n * 8, 0);
		snprintf(name, sizeof(name), "%zu dstopts, no end", n);
		expect_parse(name, k.b, k.len, -1, AF_INET6);
	}
}

/* ------------------------------------------------------------ truncation */

/*
 * every prefix of a good packet: refused while the TCP ports are not all
 * in, parsed from there on (the queue's copy range cuts packets; the
 * IP length field keeps the uncut size)
 */
static void
test_parse_truncated(void **state UNUSED)
{
	static const struct {
		const char	*name;
		int		 v6;
		unsigned	 ihl;		/* IPv4 */
		uint8_t		 first;		/* IPv6 */
		const uint8_t	*ext;
		size_t		 extlen;
	} rows[] = {
		{ "v4", 0, 5, 0, NULL, 0 },
		{ "v4 IHL 6", 0, 6, 0, NULL, 0 },
		{ "v4 IHL 15", 0, 15, 0, NULL, 0 },
		{ "v6", 1, 0, IPPROTO_TCP, NULL, 0 },
		{ "v6 hop", 1, 0, IPPROTO_HOPOPTS, ext_hop, sizeof(ext_hop) },
		{ "v6 hop, dst", 1, 0, IPPROTO_HOPOPTS, ext_hop_dst,
		    sizeof(ext_hop_dst) },
		{ "v6 frag", 1, 0, IPPROTO_FRAGMENT, ext_frag_first,
		    sizeof(ext_frag_first) },
		{ "v6 AH", 1, 0, IPPROTO_AH, ext_ah, sizeof(ext_ah) },
		{ "v6 all", 1, 0, IPPROTO_HOPOPTS, ext_all, sizeof(ext_all) },
	};
	struct pkt k;
	size_t i, cut;
	char name[64];

	for (i = 0; i < N(rows); i++) {
		if (rows[i].v6)
			build_v6(&k, rows[i].first, rows[i].ext,
			    rows[i].extlen, TCPOPT_SYN);
		else
			build_v4(&k, rows[i].ihl, IPPROTO_TCP, 0, TCPOPT_SYN);
		for (cut = 0; cut <= k.len; cut++) {
			snprintf(name, sizeof(name), "%s cut at %zu",
			    rows[i].name, cut);
			expect_parse(name, k.b, cut,
			    cut >= k.tcp + 20 ? 0 : -1,
			    rows[i].v6 ? AF_INET6 : AF_INET);
		}
	}
}

/* ------------------------------------------------------------ versions */

static void
test_parse_version(void **state UNUSED)
{
	struct pkt k4, k6;
	unsigned v;
	char name[64];

	build_v4(&k4, 5, IPPROTO_TCP, 0, 0);
	build_v6(&k6, IPPROTO_TCP, NULL, 0, 0);
	for (v = 0; v < 16; v++) {
		if (v == 4 || v == 6)
			continue;
		snprintf(name, sizeof(name), "version %u (v4 body)", v);
		k4.b[0] = (uint8_t)(v << 4 | 5);
		expect_parse(name, k4.b, k4.len, -1, 0);
		snprintf(name, sizeof(name), "version %u (v6 body)", v);
		k6.b[0] = (uint8_t)(v << 4);
		expect_parse(name, k6.b, k6.len, -1, 0);
	}
	/* the version decides: an IPv6 body marked 4 and vice versa */
	build_v4(&k4, 5, IPPROTO_TCP, 0, 0);
	build_v6(&k6, IPPROTO_TCP, NULL, 0, 0);
	k4.b[0] = 0x65;
	expect_parse("v4 body as version 6", k4.b, k4.len, -1, 0);
	k6.b[0] = 0x45;
	expect_parse("v6 body as version 4", k6.b, k6.len, -1, 0);
	expect_parse("empty", k4.b, 0, -1, 0);
}

/* ------------------------------------------------------------ random input */

/* rnd - xorshift32: the same sequence on every run */
static uint32_t
rnd(uint32_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 17;
	*s ^= *s << 5;
	return *s;
}

/*
 * random packets and mutations of good ones, each in a buffer of its
 * exact size: the sanitizer build reports any read outside; a parsed one
 * has the family its version says
 */
static void
test_parse_random(void **state UNUSED)
{
	struct sockaddr_storage src, dst;
	struct pkt base[3], k;
	uint32_t seed = 0x6d786272;
	size_t len, i, j;
	uint8_t *copy;
	int rc, parsed = 0;

	build_v4(&base[0], 15, IPPROTO_TCP, 0, TCPOPT_SYN);
	build_v6(&base[1], IPPROTO_HOPOPTS, ext_all, sizeof(ext_all), 0);
	build_v6(&base[2], IPPROTO_FRAGMENT, ext_frag_first,
	    sizeof(ext_frag_first), TCPOPT_SYN);
	for (i = 0; i < FUZZ_ROUNDS; i++) {
		k = base[i % N(base)];
		if (i % 4 == 0) {		/* noise with a version */
			for (j = 0; j < 128; j++)
				k.b[j] = (uint8_t)rnd(&seed);
			k.b[0] = (uint8_t)((rnd(&seed) & 1 ? 0x40 : 0x60) |
			    (k.b[0] & 0x0f));
			k.len = 128;
		} else				/* a few octets changed */
			for (j = rnd(&seed) % 4 + 1; j > 0; j--)
				k.b[rnd(&seed) % k.len] = (uint8_t)rnd(&seed);
		len = rnd(&seed) % (k.len + 1);
		if ((copy = malloc(len > 0 ? len : 1)) == NULL)
			fail_msg("malloc");
		memcpy(copy, k.b, len);
		rc = nfq_parse_packet(copy, len, &src, &dst);
		if (rc != 0 && rc != -1)
			fail_msg("round %zu: rc %d", i, rc);
		if (rc == 0 && (src.ss_family != dst.ss_family ||
		    src.ss_family != ((copy[0] >> 4) == 4 ? AF_INET :
		    AF_INET6)))
			fail_msg("round %zu: family %d", i, src.ss_family);
		parsed += rc == 0;
		free(copy);
	}
	/* the mutations must reach the end of the parser, not only fail */
	assert_true(parsed > FUZZ_ROUNDS / 10);
}

/* ------------------------------------------------------------ marks */

static void
test_verdict_mark(void **state UNUSED)
{
	static const struct {
		uint32_t		 mark;
		enum policy_dir		 dir;
		enum policy_action	 action;
		uint32_t		 want;
	} rows[] = {
		{ 0x00000003, POLICY_DIR_IN, POLICY_PROXY, 0x00010003 },
		{ 0x00000003, POLICY_DIR_OUT, POLICY_PROXY, 0x00020003 },
		{ 0x0000ffff, POLICY_DIR_IN, POLICY_PASS, 0x0003ffff },
		{ 0x0000ffff, POLICY_DIR_OUT, POLICY_PASS, 0x0003ffff },
		{ 0x00001234, POLICY_DIR_IN, POLICY_DROP, 0x00041234 },
		{ 0x00001234, POLICY_DIR_OUT, POLICY_DROP, 0x00041234 },
		{ 0x00000000, POLICY_DIR_IN, POLICY_PASS, 0x00030000 },
		/* a class already there is replaced, not or-ed */
		{ 0x000f0007, POLICY_DIR_IN, POLICY_PROXY, 0x00010007 },
		{ 0x00040007, POLICY_DIR_OUT, POLICY_PROXY, 0x00020007 },
		{ 0x00030007, POLICY_DIR_IN, POLICY_DROP, 0x00040007 },
		/* the bits above the class are kept */
		{ 0x00300005, POLICY_DIR_IN, POLICY_PROXY, 0x00310005 },
		{ 0xff00abcd, POLICY_DIR_OUT, POLICY_PASS, 0xff03abcd },
		{ 0xffffffff, POLICY_DIR_IN, POLICY_PROXY, 0xfff1ffff },
		{ 0xffffffff, POLICY_DIR_OUT, POLICY_DROP, 0xfff4ffff },
		/* an action it does not know is passed */
		{ 0x00000009, POLICY_DIR_IN, (enum policy_action)7,
		    0x00030009 },
	};
	struct policy_class cls;
	uint32_t got;
	size_t i;

	for (i = 0; i < N(rows); i++) {
		memset(&cls, 0, sizeof(cls));
		cls.dir = rows[i].dir;
		cls.action = rows[i].action;
		got = nfq_verdict_mark(rows[i].mark, &cls);
		if (got != rows[i].want)
			fail_msg("row %zu: mark %#x -> %#x, want %#x", i,
			    rows[i].mark, got, rows[i].want);
	}
}

/* for any mark, only the class bits change, and they hold one class */
static void
test_verdict_mark_bits(void **state UNUSED)
{
	static const uint32_t classes[] = {
		MARK_CLASS_INCOMING, MARK_CLASS_OUTGOING, MARK_CLASS_PASS,
		MARK_CLASS_DROP,
	};
	struct policy_class cls;
	uint32_t seed = 12345, mark, got;
	int i, d, a;

	for (i = 0; i < 10000; i++) {
		mark = rnd(&seed);
		for (d = POLICY_DIR_IN; d <= POLICY_DIR_OUT; d++)
			for (a = POLICY_PROXY; a <= POLICY_DROP; a++) {
				memset(&cls, 0, sizeof(cls));
				cls.dir = (enum policy_dir)d;
				cls.action = (enum policy_action)a;
				got = nfq_verdict_mark(mark, &cls);
				if ((got & ~MARK_CLASS) !=
				    (mark & ~MARK_CLASS) ||
				    (got & MARK_PORT) !=
				    (mark & MARK_PORT))
					fail_msg("%#x dir %d action %d -> %#x",
					    mark, d, a, got);
				if ((got & MARK_CLASS) != classes[a == 0 ?
				    d : a + 1])
					fail_msg("%#x dir %d action %d: class "
					    "%#x", mark, d, a,
					    got & MARK_CLASS);
			}
	}
}

/* script_value - the value of NAME=0x... in scripts/mxbridge-netfilter */
static uint32_t
script_value(const char *text, const char *name)
{
	char key[32];
	const char *p;

	snprintf(key, sizeof(key), "\n%s=0x", name);
	if ((p = strstr(text, key)) == NULL)
		fail_msg("scripts/mxbridge-netfilter: no %s=", name);
	return (uint32_t)strtoul(p + strlen(key) - 2, NULL, 16);
}

/* the mark layout is the one the netfilter rules are written with */
static void
test_mark_contract(void **state UNUSED)
{
	static const struct {
		const char	*name;
		uint32_t	 value;
	} rows[] = {
		{ "M_PORT", MARK_PORT },
		{ "M_CLASS", MARK_CLASS },
		{ "C_IN", MARK_CLASS_INCOMING },
		{ "C_OUT", MARK_CLASS_OUTGOING },
		{ "C_PASS", MARK_CLASS_PASS },
		{ "C_DROP", MARK_CLASS_DROP },
		{ "M_LOCAL", MARK_TPROXY },
		{ "M_SELF", MARK_OWN },
		{ "M_BRIDGED", MARK_BRIDGED },
	};
	char path[1200], text[65536];
	size_t i, n;
	FILE *f;

	snprintf(path, sizeof(path), "%s/scripts/mxbridge-netfilter",
	    srcdir());
	if ((f = fopen(path, "r")) == NULL)
		fail_msg("%s: not found (run from the source root)", path);
	n = fread(text + 1, 1, sizeof(text) - 2, f);
	fclose(f);
	text[0] = '\n';
	text[n + 1] = '\0';
	for (i = 0; i < N(rows); i++)
		if (script_value(text, rows[i].name) != rows[i].value)
			fail_msg("%s=%#x in the script, %#x in common/mark.h",
			    rows[i].name, script_value(text, rows[i].name),
			    rows[i].value);
	/* the classes fit the class bits and differ */
	for (i = 2; i < 6; i++)
		assert_int_equal(rows[i].value & ~MARK_CLASS, 0);
	/* the MTA's upstream sockets carry the daemon's own mark too */
	assert_int_equal(MTA_SO_MARK, MARK_OWN);
	assert_int_equal(mark_port(0x00110002u), 2);
}

/* ------------------------------------------------------------ port names */

/* the ingress port of a mark by name: lo is there, 0 and a free index
 * are "", and a cached name is kept until its time is up */
static void
test_ifname(void **state UNUSED)
{
	struct ifname_cache *c = ifname_cache_new();
	unsigned lo = if_nametoindex("lo"), none = 65535;
	char name[IF_NAMESIZE];

	assert_true(lo != 0);
	while (if_indextoname(none, name) != NULL)
		none--;
	assert_string_equal(ifname_lookup(c, 0, 1000), "");
	assert_string_equal(ifname_lookup(c, lo, 1000), "lo");
	assert_string_equal(ifname_lookup(c, none, 1000), "");
	/* the same slot as lo: the unknown index takes it over */
	assert_string_equal(ifname_lookup(c, lo + 64, 1000),
	    if_indextoname(lo + 64, name) != NULL ? name : "");
	assert_string_equal(ifname_lookup(c, lo, 1000), "lo");
	assert_string_equal(ifname_lookup(c, lo, 1000 + 60 * 1000), "lo");
	ifname_cache_free(c);
}

/* ------------------------------------------------------------ datagrams */

/*
 * nfq_datagram_valid: every message inside the datagram.  The 2 GiB
 * length is what the fuzzer (test/fuzz/fuzz_nfq.c) found: libmnl's walk
 * took it for negative and read gigabytes past the buffer.
 */
static void
test_datagram_valid(void **state UNUSED)
{
	static const struct {
		const char	*name;
		uint32_t	 len[3];	/* nlmsg_len of up to 3 messages */
		size_t		 size;		/* of the datagram */
		int		 want;
	} rows[] = {
		{ "empty", { 0 }, 0, 1 },
		{ "one whole message", { 32 }, 32, 1 },
		{ "two messages", { 32, 20 }, 52, 1 },
		{ "unaligned last message", { 32, 30 }, 62, 1 },
		{ "trailing octets short of a header", { 32 }, 40, 1 },
		{ "length 2 GiB", { 0x80000000u }, 32, 0 },
		{ "length 4 GiB - 1", { 32, 0xffffffffu }, 64, 0 },
		{ "length under a header", { 8 }, 32, 0 },
		{ "length zero", { 0 }, 32, 0 },
		{ "one octet past the datagram", { 33 }, 32, 0 },
		{ "second message past the datagram", { 32, 40 }, 64, 0 },
	};
	uint32_t words[64];
	size_t i, j, off;

	for (i = 0; i < N(rows); i++) {
		memset(words, 0, sizeof(words));
		for (j = 0, off = 0; j < 3 && off + 16 <= rows[i].size; j++) {
			if (rows[i].len[j] == 0 && j > 0)
				break;
			memcpy((char *)words + off, &rows[i].len[j], 4);
			off += (rows[i].len[j] + 3) & ~3u;
		}
		if (nfq_datagram_valid(words, rows[i].size) != rows[i].want)
			fail_msg("row \"%s\": want %d", rows[i].name,
			    rows[i].want);
	}
}

/* the divert record: the comment out of nft user data, then its w= */
static void
test_record(void **state UNUSED)
{
	/* an unknown entry first, then the comment with its NUL */
	static const uint8_t ud[] = { 7, 2, 'x', 'y', 0, 14,
	    'b', 'r', '=', 'b', 'r', '0', ' ', 'q', '=', '5', ' ', 'w',
	    '=' };
	uint8_t good[64];
	const char *c = "be=nft q=5 w=2";
	char out[64], tiny[4];
	/* the record's w=: 1 without one (before -W), 0 unreadable */
	static const struct {
		const char	*rec;
		unsigned	 want;
	} wrec[] = {
		{ "mxbridge-netfilter br=br0 be=iptables fam=46 fail=open "
		    "q=5 w=2", 2 },
		{ "w=7 q=1", 7 },
		{ "mxbridge-netfilter br=br0 q=5", 1 },
		{ "", 1 },
		{ "new=w=3 q=0", 1 },	/* inside another key: not it */
		{ "q=0 w=x", 0 },
		{ "q=0 w=", 0 },
		{ "q=0 w=0", 0 },
		{ "q=0 w=257", 0 },
		{ "q=0 w=2x", 0 },
	};
	size_t i;

	/* entry 2 claims 14 bytes, 13 are there: none */
	assert_int_equal(nfq_record_comment(ud, sizeof(ud), out, sizeof(out)),
	    -1);
	assert_int_equal(nfq_record_comment(ud, 0, out, sizeof(out)), -1);
	good[0] = 0;
	good[1] = (uint8_t)(strlen(c) + 1);
	memcpy(good + 2, c, strlen(c) + 1);
	assert_int_equal(nfq_record_comment(good, 2 + good[1], out,
	    sizeof(out)), 0);
	assert_string_equal(out, c);
	assert_int_equal(nfq_record_comment(good, 2 + good[1], tiny,
	    sizeof(tiny)), 0);
	assert_string_equal(tiny, "be=");

	for (i = 0; i < sizeof(wrec) / sizeof(wrec[0]); i++)
		assert_int_equal(nfq_record_workers(wrec[i].rec), wrec[i].want);
}

/* the divert record's bridge (br=) and SMTP ports (s=) for the kernel
 * classifier; both go into nft text, so anything else is refused */
static void
test_record_divert(void **state UNUSED)
{
	static const struct {
		const char	*rec;
		int		 rc;
		const char	*br, *smtp;
	} t[] = {
		{ "mxbridge-netfilter br=br0 be=nft q=5 w=2 s=25,465,587", 0,
		    "br0", "25,465,587" },
		{ "s=25 br=lan.1", 0, "lan.1", "25" },
		{ "br=br0 q=5", -1, NULL, NULL },		/* no s= */
		{ "s=25", -1, NULL, NULL },			/* no br= */
		{ "br=br0 s=", -1, NULL, NULL },
		{ "br=br0 s=25,", -1, NULL, NULL },
		{ "br=br0 s=0", -1, NULL, NULL },
		{ "br=br0 s=65536", -1, NULL, NULL },
		{ "br=br0 s=25;drop", -1, NULL, NULL },
		{ "br=br0 s=25}", -1, NULL, NULL },
		{ "br=br\"0 s=25", -1, NULL, NULL },
		{ "br=br0{ s=25", -1, NULL, NULL },
		{ "br=averyveryverylongname s=25", -1, NULL, NULL },
		{ "br=br0 s=1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16", -1, NULL,
		    NULL },
		{ "xbr=br0 s=25", -1, NULL, NULL },
	};
	struct nfq_divert d;
	size_t i;

	for (i = 0; i < N(t); i++) {
		assert_int_equal(nfq_record_divert(t[i].rec, &d), t[i].rc);
		if (t[i].rc == 0) {
			assert_string_equal(d.bridge, t[i].br);
			assert_string_equal(d.smtp, t[i].smtp);
		}
	}
}

/* p0 is ifindex 7, p1 does not exist */
static unsigned
fake_ifindex(const char *name)
{
	return strcmp(name, "p0") == 0 ? 7 : 0;
}

/* has - the ruleset holds the line (whole), printf's format and args */
static int __attribute__((format(printf, 2, 3)))
has(const struct buf *b, const char *fmt, ...)
{
	char line[256];
	const char *p = b->data;
	size_t n;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	n = strlen(line);

	while ((p = strstr(p, line)) != NULL) {
		if ((p == b->data || p[-1] == '\n') && p[n] == '\n')
			return 1;
		p += n;
	}
	return 0;
}

/* the ruleset the kernel classifier publishes for a policy */
static void
test_kernel_ruleset(void **state UNUSED)
{
	static const char conf[] =
	    "hostname \"gw.example.com\"\n"
	    "default incoming proxy\n"
	    "default outgoing pass\n"
	    "port \"p0\" {\n\tincoming drop\n\toutgoing proxy\n"
	    "\taccept-to-box yes\n}\n"
	    "port \"p1\" {\n\tincoming pass\n}\n"
	    "domain \"example.com\" {\n\tserver 192.0.2.10\n"
	    "\tserver 2001:db8:2::10\n}\n"
	    "domain \"example.org\" {\n\tserver 192.0.2.10\n}\n"
	    "domain \"example.net\" {\n\tserver 192.0.2.11 port 587\n}\n"
	    "bypass client 192.0.2.102\n"
	    "bypass client 2001:db8:9::/48\n"
	    "bypass server 198.51.100.0/24\n";
	struct nfq_divert d;
	struct policy *pol;
	/* each server once, with its port, in its family's set; the
	 * bypass networks in theirs; the divert's bridge and ports */
	static const struct {
		const char	*what, *text;
	} want[] = {
		{ "table", "{ flags owner; }" },
		{ "rule", "pre iifname != \"br0\" return" },
		{ "rule", "pre tcp dport != { 25,587 } return" },
		{ "element", "srv4 { 192.0.2.10 . 25, 192.0.2.11 . 587 }" },
		{ "element", "srv6 { 2001:db8:2::10 . 25 }" },
		{ "rule", "pre ip daddr . tcp dport @srv4 goto cin" },
		{ "element", "bypc4 { 192.0.2.102/32 }" },
		{ "element", "bypc6 { 2001:db8:9::/48 }" },
		{ "element", "byps4 { 198.51.100.0/24 }" },
	};
	struct buf b;
	char path[64], err[256];
	size_t i;
	int fd;

	snprintf(path, sizeof(path), "/tmp/mxb-test-XXXXXX");
	assert_true((fd = mkstemp(path)) >= 0);
	assert_int_equal(write(fd, conf, strlen(conf)), (ssize_t)strlen(conf));
	close(fd);
	pol = policy_load(path, err, sizeof(err));
	unlink(path);
	if (pol == NULL)
		fail_msg("%s", err);
	assert_int_equal(pol->classifier, POLICY_CLASSIFIER_KERNEL);
	assert_int_equal(nfq_record_divert("br=br0 s=25,587", &d), 0);
	buf_init(&b);
	nfq_kernel_ruleset(pol, &d, fake_ifindex, &b);
	buf_append(&b, "", 1);

	for (i = 0; i < N(want); i++)
		if (!has(&b, "add %s inet mxbridge_classify %s", want[i].what,
		    want[i].text))
			fail_msg("no \"add %s ... %s\" in:\n%s", want[i].what,
			    want[i].text, b.data);
	assert_null(strstr(b.data, "add element inet mxbridge_classify "
	    "byps6"));
	/* p0's classes with its ifindex; p1 is absent and not in the maps */
	assert_true(has(&b, "add element inet mxbridge_classify pin "
	    "{ 0x7 : 0x%x }", MARK_CLASS_DROP | 7));
	assert_true(has(&b, "add element inet mxbridge_classify pout "
	    "{ 0x7 : 0x%x }", MARK_CLASS_OUTGOING | 7));
	assert_true(has(&b, "add element inet mxbridge_classify tobox "
	    "{ 0x7 : 0x%x }", MARK_CLASS_OUTGOING | 7));
	/* the defaults */
	assert_true(has(&b, "add rule inet mxbridge_classify cin "
	    "meta mark set meta mark | 0x%x goto count_in",
	    MARK_CLASS_INCOMING));
	assert_true(has(&b, "add rule inet mxbridge_classify cout "
	    "meta mark set meta mark | 0x%x goto count_out", MARK_CLASS_PASS));
	assert_true(has(&b, "add rule inet mxbridge_classify tobox "
	    "meta mark set meta mark | 0x%x goto count_out", MARK_CLASS_DROP));
	/* no t= in the record (no fast path): no bridge table */
	assert_true(has(&b, "delete table bridge mxbridge_classify"));
	assert_null(strstr(b.data, "add rule bridge"));
	buf_free(&b);

	/* with t=, the bridge's MAC and ports: passed flows stay bridged */
	assert_int_equal(nfq_record_divert("br=br0 t=90 s=25,587", &d), 0);
	assert_int_equal(d.fastto, 90);
	snprintf(d.mac, sizeof(d.mac), "02:00:00:00:00:01");
	snprintf(d.ports, sizeof(d.ports), "\"p0\", \"p1\"");
	buf_init(&b);
	nfq_kernel_ruleset(pol, &d, fake_ifindex, &b);
	buf_append(&b, "", 1);
	if (getenv("MXB_RULESET_OUT") != NULL) {	/* to try it with nft */
		FILE *f = fopen(getenv("MXB_RULESET_OUT"), "w");

		if (f != NULL) {
			fputs(b.data, f);
			fclose(f);
		}
	}
	assert_null(strstr(b.data, "delete table bridge"));
	static const char *const bwant[] = {
		"add table bridge mxbridge_classify { flags owner; }",
		"add element bridge mxbridge_classify srv4 { 192.0.2.10 . 25, "
		    "192.0.2.11 . 587 }",
		"add element bridge mxbridge_classify bypc4 { 192.0.2.102/32 }",
		"add rule bridge mxbridge_classify pre iifname != { \"p0\", "
		    "\"p1\" } return",
		"add rule bridge mxbridge_classify pre ether daddr "
		    "02:00:00:00:00:01 return",
		"add rule bridge mxbridge_classify syn tcp sport { 25,587 } "
		    "goto forget",
		/* p0: incoming drop, outgoing proxy; p1: incoming pass */
		"add element bridge mxbridge_classify vin { \"p0\" : goto "
		    "forget, \"p1\" : goto keep_in }",
		"add element bridge mxbridge_classify vout { \"p0\" : goto "
		    "forget, \"p1\" : goto keep_out }",
		/* the defaults: incoming proxy, outgoing pass */
		"add rule bridge mxbridge_classify cin goto forget\n",
		"add rule bridge mxbridge_classify cout goto keep_out\n",
		"add rule bridge mxbridge_classify keep_in counter name in_pass "
		    "goto keep",
		"update @flows4 { ip daddr . ip saddr . tcp dport . tcp sport "
		    "timeout 90s }",
	};
	for (i = 0; i < N(bwant); i++)
		if (strstr(b.data, bwant[i]) == NULL)
			fail_msg("no \"%s\" in:\n%s", bwant[i], b.data);
	{
		char mk[64];

		snprintf(mk, sizeof(mk), "meta mark set meta mark | 0x%x "
		    "accept\n", MARK_BRIDGED);
		assert_non_null(strstr(b.data, mk));
	}
	buf_free(&b);
	policy_unref(pol);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_record),
		cmocka_unit_test(test_record_divert),
		cmocka_unit_test(test_kernel_ruleset),
		cmocka_unit_test(test_parse_ip4),
		cmocka_unit_test(test_parse_ip6),
		cmocka_unit_test(test_parse_ip6_chain),
		cmocka_unit_test(test_parse_truncated),
		cmocka_unit_test(test_parse_version),
		cmocka_unit_test(test_parse_random),
		cmocka_unit_test(test_verdict_mark),
		cmocka_unit_test(test_verdict_mark_bits),
		cmocka_unit_test(test_mark_contract),
		cmocka_unit_test(test_ifname),
		cmocka_unit_test(test_datagram_valid),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
