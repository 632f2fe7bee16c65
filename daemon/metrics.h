/*
 * metrics.h - the Prometheus endpoint ("metrics listen ADDR PORT"): a
 * small HTTP server on the daemon's loop that answers GET /metrics with
 * the counters of "mxbridgectl stats" in the text exposition format.
 */
#ifndef MXB_METRICS_H
#define MXB_METRICS_H
#include <sys/socket.h>
#include <uv.h>

#include "../common/buf.h"

#define METRICS_MAXREQ	8192	/* bytes of one request's head */

/* bound at start (before the daemon drops root); 0, or -1 logged */
int	metrics_start(uv_loop_t *, const struct sockaddr *);
void	metrics_stop(void);		/* the listener and every connection */

/*
 * metrics_http_request - what to answer the request head read so far,
 * [data, len): 0 when more is needed, else an HTTP status: 200 (GET or
 * HEAD of /metrics), 400 (not HTTP), 404 (another path), 405 (another
 * method), 431 (no end of the head within METRICS_MAXREQ), 505 (not
 * HTTP/1.x).  *head is set to 1 for HEAD.  Only the first request
 * counts: what follows its head (a pipelined one) is never looked at.
 */
int	metrics_http_request(const char *data, size_t len, int *head);

/*
 * metrics_expose - the "stats" text (key=value lines, worker.I.key for
 * worker I) as Prometheus text exposition (version 0.0.4) appended to
 * out: each key is family mxbridge_KEY (counters with _total), a worker's
 * family mxbridge_worker_KEY with label worker="I", every family with
 * its # HELP and # TYPE, each series once; a line whose value is not a
 * number is left out.  A histogram's lines (histogram_stats: KEY.le.B,
 * KEY.sum, KEY.count) make the family mxbridge_KEY of type histogram,
 * its series _bucket{le="B"}, _sum and _count.
 */
void	metrics_expose(const char *stats, size_t len, struct buf *out);

#endif
