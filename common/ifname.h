/*
 * ifname.h - interface names by ifindex, remembered a while: the kernel
 * answers if_indextoname() with a socket, an ioctl and a close, which is
 * more than the rest of a classification or an accept costs.  One cache
 * per owner (a worker's classifier, a worker's listeners), never shared.
 */
#ifndef MXB_IFNAME_H
#define MXB_IFNAME_H
#include <stdint.h>

struct ifname_cache;

struct ifname_cache *ifname_cache_new(void);
void		 ifname_cache_free(struct ifname_cache *);
/* the name of ifindex index, "" when 0 or unknown; valid until the next
 * call with the same cache.  now_ms: a monotonic clock (uv_now) */
const char	*ifname_lookup(struct ifname_cache *, unsigned index,
		    uint64_t now_ms);

#endif
