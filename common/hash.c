/*
 * hash.c - the seeded FNV-1a of the daemon's hash tables (hash.h).
 */
#include <sys/random.h>
#include <time.h>

#include "hash.h"

uint32_t
hash_seed(void)
{
	uint32_t seed;

	if (getrandom(&seed, sizeof(seed), GRND_NONBLOCK) !=
	    (ssize_t)sizeof(seed))
		seed = (uint32_t)time(NULL);
	return seed;
}

uint32_t
hash_bytes(uint32_t seed, const void *p, size_t n)
{
	const uint8_t *s = p;
	uint32_t h = 2166136261u ^ seed;

	while (n-- > 0)
		h = (h ^ *s++) * 16777619u;
	return h;
}
