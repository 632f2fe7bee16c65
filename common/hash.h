/*
 * hash.h - the seeded hash of the daemon's in-memory tables (the
 * classifier's flows, the proxy's per-client counts): FNV-1a over the
 * key, with a per-run random seed so that remote peers cannot aim at
 * one bucket.
 */
#ifndef MXB_HASH_H
#define MXB_HASH_H

#include <stddef.h>
#include <stdint.h>

uint32_t	 hash_seed(void);	/* random, or the clock if none */
uint32_t	 hash_bytes(uint32_t seed, const void *, size_t);

#endif
