/*
 * clients.c - the proxy's per-client table (clients.h): the open
 * sessions and connection-rate bucket of every client group.  A client
 * is grouped by a network prefix (IPv4 /32 and IPv6 /64 by default), so
 * that the many addresses of one IPv6 subnet count as one client.
 *
 * The table never stops counting.  It is bounded: past its size an
 * entry with no open session (the oldest used one, kept in a list in
 * order of last use) makes room for the new one, which loses at most
 * that client's rate history.  Entries with open sessions are never
 * evicted; when every entry has one the table grows, which is bounded
 * by the global session cap (a busy entry holds at least one admitted
 * session), so an active client is always counted.  The cap's default
 * (sessions auto) is derived here too.
 */
#include <sys/queue.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/hash.h"
#include "../common/xmalloc.h"
#include "clients.h"

struct proxy_client {
	LIST_ENTRY(proxy_client) chain;		/* hash bucket */
	TAILQ_ENTRY(proxy_client) idle;		/* in t->idle iff open == 0 */
	struct addr_net		 key;		/* masked address, prefix */
	unsigned		 open;
	uint64_t		 last;		/* ms of the last use */
	struct policy_rate	 rate;
};
LIST_HEAD(proxy_chain, proxy_client);
TAILQ_HEAD(proxy_idle, proxy_client);

#define PROXY_FD_RESERVE	128	/* fds kept from the session cap ... */
#define PROXY_SESSIONS_MIN	16	/* ... which is at least this */
#define PROXY_SESSIONS_MAX	1000000	/* ... and at most this */

struct proxy_clients {
	struct proxy_chain	*buckets;
	size_t			 nbuckets;	/* a power of two */
	struct proxy_idle	 idle;		/* oldest use first */
	size_t			 n;
	size_t			 max;		/* evict idle ones past it */
	uint32_t		 seed;
	uint64_t		 evicted;
};

/*
 * proxy_clients_cap_auto - "sessions auto" for an open-file limit of
 * nofile: a quarter of it (at least PROXY_FD_RESERVE) is left to the
 * rest of the daemon (listeners, spool files, deliveries), the remainder
 * halved since a live-relay session holds two sockets
 */
unsigned
proxy_clients_cap_auto(uint64_t nofile)
{
	uint64_t reserve, n;

	reserve = nofile / 4 > PROXY_FD_RESERVE ? nofile / 4 :
	    PROXY_FD_RESERVE;
	n = nofile > reserve ? (nofile - reserve) / 2 : 0;
	if (n < PROXY_SESSIONS_MIN)
		n = PROXY_SESSIONS_MIN;
	if (n > PROXY_SESSIONS_MAX)
		n = PROXY_SESSIONS_MAX;
	return (unsigned)n;
}

struct proxy_clients *
proxy_clients_new(size_t max)
{
	struct proxy_clients *t;
	size_t i;

	t = xcalloc(1, sizeof(*t));
	t->max = max > 0 ? max : 1;
	/* about four entries a bucket when full */
	for (t->nbuckets = 16; t->nbuckets < t->max / 4 &&
	    t->nbuckets < (1u << 20); t->nbuckets <<= 1)
		;
	t->buckets = xcalloc(t->nbuckets, sizeof(*t->buckets));
	for (i = 0; i < t->nbuckets; i++)
		LIST_INIT(&t->buckets[i]);
	TAILQ_INIT(&t->idle);
	t->seed = hash_seed();
	return t;
}

void
proxy_clients_free(struct proxy_clients *t)
{
	struct proxy_client *c;
	size_t i;

	if (t == NULL)
		return;
	for (i = 0; i < t->nbuckets; i++)
		while ((c = LIST_FIRST(&t->buckets[i])) != NULL) {
			LIST_REMOVE(c, chain);
			free(c);
		}
	free(t->buckets);
	free(t);
}

/*
 * proxy_clients_key - the group of sa: its address masked to plen4 or
 * plen6 bits (unmapped IPv4 first); -1 if sa is not IP
 */
int
proxy_clients_key(const struct sockaddr *sa, unsigned plen4, unsigned plen6,
    struct addr_net *key)
{
	unsigned len, bits, i;

	memset(key, 0, sizeof(*key));
	if (sa->sa_family == AF_INET) {
		memcpy(key->addr, &((const struct sockaddr_in *)sa)->sin_addr,
		    4);
		len = 4;
		bits = plen4 > 32 ? 32 : plen4;
	} else if (sa->sa_family == AF_INET6) {
		memcpy(key->addr,
		    &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
		len = 16;
		bits = plen6 > 128 ? 128 : plen6;
	} else
		return -1;
	key->family = sa->sa_family;
	key->prefixlen = bits;
	for (i = bits / 8; i < len; i++)
		key->addr[i] &= i == bits / 8 ?
		    (uint8_t)(0xff00u >> (bits % 8)) : 0;
	return 0;
}

/* chain_of - the bucket of key */
static struct proxy_chain *
chain_of(struct proxy_clients *t, const struct addr_net *key)
{
	uint8_t b[18];

	b[0] = (uint8_t)key->family;
	b[1] = (uint8_t)key->prefixlen;
	memcpy(b + 2, key->addr, 16);
	return &t->buckets[hash_bytes(t->seed, b, sizeof(b)) &
	    (t->nbuckets - 1)];
}

static int
key_equal(const struct addr_net *a, const struct addr_net *b)
{
	return a->family == b->family && a->prefixlen == b->prefixlen &&
	    memcmp(a->addr, b->addr, 16) == 0;
}

/* forget - drop an idle entry */
static void
forget(struct proxy_clients *t, struct proxy_client *c)
{
	LIST_REMOVE(c, chain);
	TAILQ_REMOVE(&t->idle, c, idle);
	t->n--;
	free(c);
}

/*
 * proxy_clients_get - the entry of sa's group, made if new: past the
 * table's size the least recently used idle entry goes first; NULL only
 * if sa is not IP.  A new entry is idle (open 0) until held.
 */
struct proxy_client *
proxy_clients_get(struct proxy_clients *t, const struct sockaddr *sa,
    unsigned plen4, unsigned plen6, uint64_t now)
{
	struct proxy_chain *chain;
	struct proxy_client *c;
	struct addr_net key;

	if (proxy_clients_key(sa, plen4, plen6, &key) == -1)
		return NULL;
	chain = chain_of(t, &key);
	LIST_FOREACH(c, chain, chain)
		if (key_equal(&c->key, &key))
			break;
	if (c != NULL) {
		c->last = now;
		if (c->open == 0) {
			TAILQ_REMOVE(&t->idle, c, idle);
			TAILQ_INSERT_TAIL(&t->idle, c, idle);
		}
		return c;
	}
	/* back to size once busy entries (grown past it) have gone idle */
	while (t->n >= t->max && !TAILQ_EMPTY(&t->idle)) {
		forget(t, TAILQ_FIRST(&t->idle));
		t->evicted++;
	}
	c = xcalloc(1, sizeof(*c));
	c->key = key;
	c->last = now;
	LIST_INSERT_HEAD(chain, c, chain);
	TAILQ_INSERT_TAIL(&t->idle, c, idle);
	t->n++;
	return c;
}

/* proxy_clients_hold - one more open session of c: not evictable now */
void
proxy_clients_hold(struct proxy_clients *t, struct proxy_client *c,
    uint64_t now)
{
	if (c->open++ == 0)
		TAILQ_REMOVE(&t->idle, c, idle);
	c->last = now;
}

/* proxy_clients_release - a session of c ended; idle (newest) at 0 */
void
proxy_clients_release(struct proxy_clients *t, struct proxy_client *c,
    uint64_t now)
{
	if (c->open == 0)
		return;
	c->last = now;
	if (--c->open == 0)
		TAILQ_INSERT_TAIL(&t->idle, c, idle);
}

/*
 * proxy_clients_sweep - forget the idle entries unused for idle_ms (the
 * rate window: their buckets are full again); the idle list is in order
 * of last use, so the walk stops at the first recent one
 */
size_t
proxy_clients_sweep(struct proxy_clients *t, uint64_t now, uint64_t idle_ms)
{
	struct proxy_client *c;
	size_t n = 0;

	while ((c = TAILQ_FIRST(&t->idle)) != NULL &&
	    (now < c->last || now - c->last >= idle_ms)) {
		forget(t, c);
		n++;
	}
	return n;
}

unsigned
proxy_clients_open(const struct proxy_client *c)
{
	return c->open;
}

struct policy_rate *
proxy_clients_rate(struct proxy_client *c)
{
	return &c->rate;
}

size_t
proxy_clients_count(const struct proxy_clients *t)
{
	return t->n;
}

uint64_t
proxy_clients_evicted(const struct proxy_clients *t)
{
	return t->evicted;
}

/* proxy_clients_fmt - "2001:db8:2::/64", "192.0.2.101/32" */
const char *
proxy_clients_fmt(const struct proxy_client *c, char *buf, size_t len)
{
	char a[INET6_ADDRSTRLEN];

	if (inet_ntop(c->key.family, c->key.addr, a, sizeof(a)) == NULL)
		snprintf(a, sizeof(a), "?");
	snprintf(buf, len, "%s/%u", a, c->key.prefixlen);
	return buf;
}
