/*
 * test_clients.c - unit tests of proxy/clients.c, the per-client table
 * behind connections-per-client and connection-rate: a client's group
 * (the address masked to client-ipv4-prefix / client-ipv6-prefix), that
 * thousands of addresses of one IPv6 /64 are one client, that a full
 * table evicts the least recently used idle entry and never an entry
 * with open sessions (it grows instead, and shrinks back), and that the
 * sweep forgets only what has been idle long enough; and the session
 * cap derived from the open-file limit (sessions auto).  Table-driven where
 * it can be: a failing row names itself.
 */
#include <sys/socket.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "testutil.h"
#include "../../proxy/clients.h"

#define N(a)	(sizeof(a) / sizeof((a)[0]))
#define UNUSED	__attribute__((unused))

/* sa_of - a socket address of the numeric address s */
static struct sockaddr_storage
sa_of(const char *s)
{
	struct sockaddr_storage ss;
	struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

	memset(&ss, 0, sizeof(ss));
	if (inet_pton(AF_INET, s, &sin->sin_addr) == 1)
		sin->sin_family = AF_INET;
	else if (inet_pton(AF_INET6, s, &sin6->sin6_addr) == 1)
		sin6->sin6_family = AF_INET6;
	else
		fail_msg("bad test address %s", s);
	return ss;
}

/* sa_v6n - 2001:db8:2::N:M (one of many addresses of 2001:db8:2::/64) */
static struct sockaddr_storage
sa_v6n(unsigned n)
{
	char a[64];

	snprintf(a, sizeof(a), "2001:db8:2::%x:%x", (n >> 16) + 1, n & 0xffff);
	return sa_of(a);
}

#define SA(ss)	((const struct sockaddr *)&(ss))

static void
test_key(void **state UNUSED)
{
	static const struct {
		const char	*addr;
		unsigned	 p4, p6;
		const char	*want;
	} rows[] = {
		{ "192.0.2.101", 32, 64, "192.0.2.101/32" },
		{ "192.0.2.101", 24, 64, "192.0.2.0/24" },
		{ "192.0.2.101", 28, 64, "192.0.2.96/28" },
		{ "192.0.2.255", 8, 64, "192.0.0.0/8" },
		{ "192.0.2.101", 40, 64, "192.0.2.101/32" },	/* clamped */
		{ "2001:db8:2::101", 32, 64, "2001:db8:2::/64" },
		{ "2001:db8:2:3:4:5:6:7", 32, 64, "2001:db8:2:3::/64" },
		{ "2001:db8:2:3:4:5:6:7", 32, 56, "2001:db8:2::/56" },
		{ "2001:db8:2:3ff:4:5:6:7", 32, 60, "2001:db8:2:3f0::/60" },
		{ "2001:db8:2:3:4:5:6:7", 32, 84, "2001:db8:2:3:4::/84" },
		{ "2001:db8:2:3:4:5:6:7", 32, 128, "2001:db8:2:3:4:5:6:7/128" },
		{ "2001:db8:2:3:4:5:6:7", 32, 200, "2001:db8:2:3:4:5:6:7/128" },
	};
	struct proxy_clients *t = proxy_clients_new(16);
	struct proxy_client *c;
	struct sockaddr_storage ss;
	struct sockaddr un = { .sa_family = AF_UNIX };
	char buf[PROXY_CLIENTS_FMTLEN];
	size_t i;

	for (i = 0; i < N(rows); i++) {
		ss = sa_of(rows[i].addr);
		c = proxy_clients_get(t, SA(ss), rows[i].p4, rows[i].p6, 0);
		assert_non_null(c);
		if (strcmp(proxy_clients_fmt(c, buf, sizeof(buf)),
		    rows[i].want) != 0)
			fail_msg("row %zu: %s /%u /%u: got %s, want %s", i,
			    rows[i].addr, rows[i].p4, rows[i].p6, buf,
			    rows[i].want);
	}
	assert_null(proxy_clients_get(t, &un, 32, 64, 0));
	proxy_clients_free(t);
}

/* thousands of addresses of one /64: one client, unless /128 is asked */
static void
test_group_v6(void **state UNUSED)
{
	struct proxy_clients *t = proxy_clients_new(100000);
	struct proxy_client *c, *first = NULL;
	struct sockaddr_storage ss;
	unsigned i;

	for (i = 0; i < 5000; i++) {
		ss = sa_v6n(i * 7919);
		c = proxy_clients_get(t, SA(ss), 32, 64, i);
		if (first == NULL)
			first = c;
		if (c != first)
			fail_msg("address %u is not in the /64's entry", i);
		proxy_clients_hold(t, c, i);
	}
	assert_int_equal(proxy_clients_count(t), 1);
	assert_int_equal(proxy_clients_open(first), 5000);
	/* another /64 is another client */
	ss = sa_of("2001:db8:3::101");
	assert_ptr_not_equal(proxy_clients_get(t, SA(ss), 32, 64, 0), first);
	assert_int_equal(proxy_clients_count(t), 2);
	proxy_clients_free(t);

	t = proxy_clients_new(100000);
	for (i = 0; i < 5000; i++) {
		ss = sa_v6n(i);
		proxy_clients_hold(t, proxy_clients_get(t, SA(ss), 32, 128, i),
		    i);
	}
	assert_int_equal(proxy_clients_count(t), 5000);
	proxy_clients_free(t);
}

/* IPv4 by /32 by default; a /24 groups a subnet */
static void
test_group_v4(void **state UNUSED)
{
	struct proxy_clients *t = proxy_clients_new(100);
	struct sockaddr_storage a = sa_of("192.0.2.101"),
	    b = sa_of("192.0.2.102");

	assert_ptr_not_equal(proxy_clients_get(t, SA(a), 32, 64, 0),
	    proxy_clients_get(t, SA(b), 32, 64, 0));
	assert_ptr_equal(proxy_clients_get(t, SA(a), 24, 64, 0),
	    proxy_clients_get(t, SA(b), 24, 64, 0));
	/* the same address under another prefix is another entry */
	assert_int_equal(proxy_clients_count(t), 3);
	proxy_clients_free(t);
}

/*
 * A full table makes room with the least recently used idle entry; an
 * entry with open sessions is never evicted, and its count survives any
 * number of other clients.
 */
static void
test_evict(void **state UNUSED)
{
	struct proxy_clients *t = proxy_clients_new(100);
	struct proxy_client *busy, *recent, *c;
	struct sockaddr_storage b = sa_of("192.0.2.101"), r, ss;
	unsigned i;

	busy = proxy_clients_get(t, SA(b), 32, 64, 0);
	proxy_clients_hold(t, busy, 0);
	proxy_clients_hold(t, busy, 0);
	r = sa_v6n(999999);
	recent = proxy_clients_get(t, SA(r), 32, 128, 0);
	proxy_clients_rate(recent)->used = 1;
	proxy_clients_rate(recent)->credit = 4242;
	for (i = 0; i < 10000; i++) {
		ss = sa_v6n(i);
		c = proxy_clients_get(t, SA(ss), 32, 128, 1 + i);
		assert_non_null(c);
		assert_int_equal(proxy_clients_open(c), 0);
		if (proxy_clients_count(t) > 100)
			fail_msg("table past its size at %u: %zu", i,
			    proxy_clients_count(t));
		/* a client seen again is the newest: kept */
		if (i % 50 == 0)
			assert_ptr_equal(proxy_clients_get(t, SA(r), 32, 128,
			    1 + i), recent);
	}
	assert_true(proxy_clients_evicted(t) >= 10000 - 100);
	/* still the same entries, still counted, rate history kept */
	assert_ptr_equal(proxy_clients_get(t, SA(b), 32, 64, 20000), busy);
	assert_int_equal(proxy_clients_open(busy), 2);
	assert_ptr_equal(proxy_clients_get(t, SA(r), 32, 128, 20000), recent);
	assert_int_equal(proxy_clients_rate(recent)->credit, 4242);
	/* the oldest idle one went: address 0 is new again (rate reset) */
	ss = sa_v6n(0);
	c = proxy_clients_get(t, SA(ss), 32, 128, 20001);
	assert_int_equal(proxy_clients_rate(c)->used, 0);
	proxy_clients_free(t);
}

/* every entry busy: the table grows, then shrinks back once idle */
static void
test_grow(void **state UNUSED)
{
	struct proxy_clients *t = proxy_clients_new(10);
	struct proxy_client *c[30];
	struct sockaddr_storage ss;
	unsigned i;

	for (i = 0; i < N(c); i++) {
		ss = sa_v6n(i);
		c[i] = proxy_clients_get(t, SA(ss), 32, 128, i);
		proxy_clients_hold(t, c[i], i);
	}
	assert_int_equal(proxy_clients_count(t), 30);
	assert_int_equal(proxy_clients_evicted(t), 0);
	for (i = 0; i < N(c); i++) {
		ss = sa_v6n(i);
		assert_ptr_equal(proxy_clients_get(t, SA(ss), 32, 128, 100),
		    c[i]);
		assert_int_equal(proxy_clients_open(c[i]), 1);
	}
	for (i = 0; i < N(c); i++)
		proxy_clients_release(t, c[i], 200);
	proxy_clients_release(t, c[0], 200);		/* no underflow */
	assert_int_equal(proxy_clients_open(c[0]), 0);
	ss = sa_of("192.0.2.1");
	proxy_clients_get(t, SA(ss), 32, 64, 300);
	assert_int_equal(proxy_clients_count(t), 10);
	proxy_clients_free(t);
}

/* the sweep forgets idle entries unused for the window, no others */
static void
test_sweep(void **state UNUSED)
{
	struct proxy_clients *t = proxy_clients_new(100);
	struct proxy_client *busy, *c;
	struct sockaddr_storage ss;
	unsigned i;

	ss = sa_of("192.0.2.1");
	busy = proxy_clients_get(t, SA(ss), 32, 64, 0);
	proxy_clients_hold(t, busy, 0);
	for (i = 0; i < 10; i++) {
		ss = sa_v6n(i);
		c = proxy_clients_get(t, SA(ss), 32, 128, 1000 * i);
		proxy_clients_hold(t, c, 1000 * i);
		proxy_clients_release(t, c, 1000 * i);
	}
	assert_int_equal(proxy_clients_count(t), 11);
	/* at 10000 with a window of 5000: those used at 0..5000 go */
	assert_int_equal(proxy_clients_sweep(t, 10000, 5000), 6);
	assert_int_equal(proxy_clients_count(t), 5);
	assert_int_equal(proxy_clients_open(busy), 1);
	/* no window (no connection-rate): every idle one goes */
	assert_int_equal(proxy_clients_sweep(t, 10000, 0), 4);
	assert_int_equal(proxy_clients_count(t), 1);
	ss = sa_of("192.0.2.1");
	assert_ptr_equal(proxy_clients_get(t, SA(ss), 32, 64, 10000), busy);
	proxy_clients_free(t);
}

/* sessions auto: (limit - max(128, limit / 4)) / 2, within 16..1000000 */
static void
test_cap_auto(void **state UNUSED)
{
	static const struct {
		uint64_t	 nofile;
		unsigned	 want;
	} rows[] = {
		{ 1024, 384 }, { 4096, 1536 }, { 65536, 24576 },
		{ 512, 192 }, { 256, 64 }, { 160, 16 }, { 100, 16 }, { 0, 16 },
		{ 1048576, 393216 }, { 1ULL << 40, 1000000 },
		{ UINT64_MAX, 1000000 },
	};
	size_t i;

	for (i = 0; i < N(rows); i++)
		if (proxy_clients_cap_auto(rows[i].nofile) != rows[i].want)
			fail_msg("nofile %llu: %u, want %u",
			    (unsigned long long)rows[i].nofile,
			    proxy_clients_cap_auto(rows[i].nofile),
			    rows[i].want);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_key),
		cmocka_unit_test(test_group_v6),
		cmocka_unit_test(test_group_v4),
		cmocka_unit_test(test_evict),
		cmocka_unit_test(test_grow),
		cmocka_unit_test(test_sweep),
		cmocka_unit_test(test_cap_auto),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
