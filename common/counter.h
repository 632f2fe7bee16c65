/*
 * counter.h - a statistics counter that one thread moves and any thread
 * reads ("mxbridgectl stats" on the daemon's thread sums every worker's).
 * The owner is the only writer, so an increment is a relaxed load and
 * store (no locked instruction on the data path); a reader sees a value
 * that is at most a little old, never a torn one.
 */
#ifndef MXB_COUNTER_H
#define MXB_COUNTER_H
#include <stdatomic.h>
#include <stdint.h>

typedef _Atomic uint64_t counter_t;

static inline void
counter_add(counter_t *c, uint64_t n)
{
	atomic_store_explicit(c, atomic_load_explicit(c,
	    memory_order_relaxed) + n, memory_order_relaxed);
}

static inline void
counter_inc(counter_t *c)
{
	counter_add(c, 1);
}

static inline uint64_t
counter_get(const counter_t *c)
{
	return atomic_load_explicit(c, memory_order_relaxed);
}

#endif
