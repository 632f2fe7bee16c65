/*
 * hash.h - the daemon's one hash, 64-bit FNV-1a.  Unseeded (hash_fnv)
 * it is the spool's on-disk checksum; seeded (hash_bytes) it spreads the
 * in-memory tables (the classifier's flows, the proxy's per-client
 * counts) with a per-run random seed so that remote peers cannot aim at
 * one bucket.
 */
#ifndef MXB_HASH_H
#define MXB_HASH_H

#include <stddef.h>
#include <stdint.h>

uint32_t	 hash_seed(void);	/* random, or the clock if none */
uint32_t	 hash_bytes(uint32_t seed, const void *, size_t);
#define HASH_FNV_INIT	0xcbf29ce484222325ULL
uint64_t	 hash_fnv(uint64_t, const void *, size_t);

#endif
