/*
 * hash.c - the one FNV-1a of the daemon (hash.h): unseeded and running
 * for the spool's checksums, seeded and folded for the hash tables.
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

/*
 * hash_fnv - 64-bit FNV-1a of n bytes, continuing from h (HASH_FNV_INIT
 * to start).  The spool's checksums are these exact values on disk: never
 * seed or change it, or existing spools stop loading.
 */
uint64_t
hash_fnv(uint64_t h, const void *p, size_t n)
{
	const uint8_t *s = p;

	while (n-- > 0) {
		h ^= *s++;
		h *= 0x100000001b3ULL;
	}
	return h;
}

/* hash_bytes - a table's bucket hash: the seed folded into the start */
uint32_t
hash_bytes(uint32_t seed, const void *p, size_t n)
{
	uint64_t h = hash_fnv(HASH_FNV_INIT ^ seed, p, n);

	return (uint32_t)(h ^ h >> 32);
}
