/*
 * tls_count.h - TLS sessions established on one leg, by protocol, for
 * "stats" (tls_sessions.LEG.PROTOCOL, mxbridgectl(8)): the client leg
 * (STARTTLS from clients), the live relay's upstream and delivery.  A
 * set is a counter_t each: the thread that owns the leg moves it, any
 * thread reads it (counter.h).
 */
#ifndef MXB_TLS_COUNT_H
#define MXB_TLS_COUNT_H
#include <inttypes.h>
#include <string.h>

#include "buf.h"
#include "counter.h"

#define TLS_NPROTO	3	/* TLSv1.2, TLSv1.3, other */

struct tls_counts {
	counter_t	 n[TLS_NPROTO];
};

static inline const char *
tls_proto_name(unsigned i)
{
	return i == 0 ? "TLSv1.2" : i == 1 ? "TLSv1.3" : "other";
}

/* tls_count - one session whose tls_conn_info() is info
 * ("TLSv1.3/TLS_AES_256_GCM_SHA384") */
static inline void
tls_count(struct tls_counts *c, const char *info)
{
	unsigned i;

	for (i = 0; i + 1 < TLS_NPROTO; i++)
		if (strncmp(info, tls_proto_name(i), 7) == 0 && info[7] == '/')
			break;
	counter_inc(&c->n[i]);
}

/* tls_counts_add - c's counts added to sum */
static inline void
tls_counts_add(const struct tls_counts *c, uint64_t sum[TLS_NPROTO])
{
	unsigned i;

	for (i = 0; i < TLS_NPROTO; i++)
		sum[i] += counter_get(&c->n[i]);
}

/* tls_counts_print - the stats lines tls_sessions.LEG.PROTOCOL=N */
static inline void
tls_counts_print(const uint64_t sum[TLS_NPROTO], const char *leg,
    struct buf *out)
{
	unsigned i;

	for (i = 0; i < TLS_NPROTO; i++)
		buf_printf(out, "tls_sessions.%s.%s=%" PRIu64 "\n", leg,
		    tls_proto_name(i), sum[i]);
}

#endif
