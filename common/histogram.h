/*
 * histogram.h - a latency histogram (Prometheus buckets) that any thread
 * observes into and any thread reads: the MTA's delivery delays on the
 * daemon's loop, the spool's fsyncs on libuv's pool, read by "stats".
 * Buckets are kept apart (not cumulative) and each observation is one
 * relaxed atomic add to its bucket and to the sum, so writers on several
 * threads never lose a count; a reader may see an observation in its
 * bucket before its share of the sum, which a scrape tolerates.
 * A histogram of counts (HISTOGRAM_COUNTS: the messages of a spool
 * batch) keeps its bounds and sum as plain numbers, not microseconds.
 */
#ifndef MXB_HISTOGRAM_H
#define MXB_HISTOGRAM_H
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

#define HISTOGRAM_MAXB	24	/* upper bounds, +Inf not counted */

struct histogram {
	const uint64_t	*bounds;	/* upper bounds, microseconds, rising */
	size_t		 nbounds;	/* at most HISTOGRAM_MAXB */
	_Atomic uint64_t bucket[HISTOGRAM_MAXB + 1];	/* last: +Inf */
	_Atomic uint64_t sum;		/* microseconds */
	int		 counts;	/* bounds and sum are numbers */
};

/* a histogram over bounds (static storage, rising, microseconds) */
#define HISTOGRAM_INIT(b) { (b), sizeof(b) / sizeof((b)[0]), { 0 }, 0, 0 }
/* a histogram of counts over bounds (static storage, rising) */
#define HISTOGRAM_COUNTS(b) { (b), sizeof(b) / sizeof((b)[0]), { 0 }, 0, 1 }

/* usec: or the count, of a histogram of counts */
void	histogram_observe(struct histogram *, uint64_t usec);

/*
 * histogram_stats - h as "stats" lines: KEY.le.BOUND=N (cumulative, BOUND
 * in seconds, the last one +Inf), KEY.sum=SECONDS (six decimals) and
 * KEY.count=N (the +Inf bucket's N, so the two always agree), which
 * metrics_expose turns into the family KEY of type histogram; a
 * histogram of counts has whole numbers there
 */
void	histogram_stats(const struct histogram *, const char *key,
	    struct buf *out);

#endif
