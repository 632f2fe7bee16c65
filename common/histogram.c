/*
 * histogram.c - latency histograms read as "stats" lines (histogram.h)
 */
#include <inttypes.h>
#include <stdio.h>

#include "histogram.h"

void
histogram_observe(struct histogram *h, uint64_t usec)
{
	size_t i;

	/* a handful of bounds: a linear walk beats a search */
	for (i = 0; i < h->nbounds && usec > h->bounds[i]; i++)
		;
	atomic_fetch_add_explicit(&h->bucket[i], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&h->sum, usec, memory_order_relaxed);
}

/* seconds - usec as decimal seconds, no trailing zeros ("0.005", "30") */
static const char *
seconds(uint64_t usec, char *s, size_t len)
{
	int n;

	n = snprintf(s, len, "%" PRIu64 ".%06" PRIu64, usec / 1000000,
	    usec % 1000000);
	while (n > 0 && s[n - 1] == '0')
		s[--n] = '\0';
	if (n > 0 && s[n - 1] == '.')
		s[--n] = '\0';
	return s;
}

void
histogram_stats(const struct histogram *h, const char *key, struct buf *out)
{
	char s[32];
	uint64_t n = 0, sum;
	size_t i;

	for (i = 0; i <= h->nbounds; i++) {
		n += atomic_load_explicit(&h->bucket[i], memory_order_relaxed);
		if (i < h->nbounds && h->counts)
			buf_printf(out, "%s.le.%" PRIu64 "=%" PRIu64 "\n", key,
			    h->bounds[i], n);
		else if (i < h->nbounds)
			buf_printf(out, "%s.le.%s=%" PRIu64 "\n", key,
			    seconds(h->bounds[i], s, sizeof(s)), n);
		else
			buf_printf(out, "%s.le.+Inf=%" PRIu64 "\n", key, n);
	}
	sum = atomic_load_explicit(&h->sum, memory_order_relaxed);
	if (h->counts) {
		buf_printf(out, "%s.sum=%" PRIu64 "\n%s.count=%" PRIu64 "\n",
		    key, sum, key, n);
		return;
	}
	buf_printf(out, "%s.sum=%" PRIu64 ".%06" PRIu64 "\n%s.count=%" PRIu64
	    "\n", key, sum / 1000000, sum % 1000000, key, n);
}
