/*
 * ifname.c - a small direct-mapped cache of interface names by ifindex
 * (the ingress bridge port carried in the packet mark).  An entry is kept
 * IFNAME_TTL ms, so a port renamed or replaced shows within that time.
 */
#include <net/if.h>
#include <stdlib.h>
#include <string.h>

#include "ifname.h"
#include "log.h"
#include "xmalloc.h"

#define IFNAME_SLOTS	64		/* power of two */
#define IFNAME_TTL	(10 * 1000)	/* ms */

struct ifname_slot {
	unsigned		 index;
	char			 name[IF_NAMESIZE];
	uint64_t		 expire;
};

struct ifname_cache {
	struct ifname_slot	 slot[IFNAME_SLOTS];
};

struct ifname_cache *
ifname_cache_new(void)
{
	return xcalloc(1, sizeof(struct ifname_cache));
}

void
ifname_cache_free(struct ifname_cache *c)
{
	free(c);
}

const char *
ifname_lookup(struct ifname_cache *c, unsigned index, uint64_t now_ms)
{
	struct ifname_slot *s = &c->slot[index & (IFNAME_SLOTS - 1)];

	if (index == 0)
		return "";
	if (s->index == index && s->expire > now_ms)
		return s->name;
	s->index = index;
	s->expire = now_ms + IFNAME_TTL;
	if (if_indextoname(index, s->name) == NULL) {
		log_debug("no interface ifindex=%u", index);
		s->name[0] = '\0';
	}
	return s->name;
}
