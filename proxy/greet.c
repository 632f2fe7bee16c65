/*
 * greet.c - the interim session behind the listeners, until the SMTP
 * session (smtpd.c) replaces it: greet the client with 220, say 421,
 * half-close, and close once the client has gone (or after a short
 * linger).  It owns the accepted handle, the session's copy of the
 * connection facts and its policy reference, and counts the sessions
 * still open.  Nothing else may depend on this file.
 */
#include <sys/queue.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "../common/log.h"
#include "../common/xmalloc.h"
#include "proxy.h"

#define GREET_LINGER	(10 * 1000)	/* ms to wait for EOF */

struct greet {
	uv_tcp_t		*client;	/* owned, freed when closed */
	uv_timer_t		 timer;
	uv_write_t		 wreq;
	uv_shutdown_t		 sreq;
	struct proxy_conn	 conn;
	char			*msg;
	char			 rbuf[512];	/* input, discarded */
	int			 handles;	/* open handles */
	int			 sent;		/* 220, 421 written */
	int			 closing;
	LIST_ENTRY(greet)	 entry;
};
LIST_HEAD(greet_list, greet);

static struct greet_list	 greet_sessions =
				    LIST_HEAD_INITIALIZER(greet_sessions);
static unsigned			 greet_open;

static void
greet_free(struct greet *g)
{
	LIST_REMOVE(g, entry);
	greet_open--;
	policy_unref(g->conn.policy);
	free(g->client);
	free(g->msg);
	free(g);
}

static void
greet_closed_cb(uv_handle_t *h)
{
	struct greet *g = h->data;

	if (--g->handles == 0)
		greet_free(g);
}

/* greet_close - close both handles; freed when both are closed */
static void
greet_close(struct greet *g, const char *why)
{
	if (g->closing)
		return;
	g->closing = 1;
	log_info("session=%llu closed reason=%s",
	    (unsigned long long)g->conn.id, why);
	uv_close((uv_handle_t *)g->client, greet_closed_cb);
	uv_close((uv_handle_t *)&g->timer, greet_closed_cb);
}

static void
greet_timer_cb(uv_timer_t *t)
{
	greet_close(t->data, "linger");
}

static void
greet_alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *ub)
{
	struct greet *g = h->data;

	*ub = uv_buf_init(g->rbuf, sizeof(g->rbuf));
}

static void
greet_read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *ub)
{
	struct greet *g = s->data;

	if (n < 0)
		greet_close(g, n == UV_EOF ? "client-quit" :
		    uv_err_name((int)n));
}

static void
greet_shutdown_cb(uv_shutdown_t *req, int status)
{
}

static void
greet_write_cb(uv_write_t *req, int status)
{
	struct greet *g = req->data;

	if (status < 0) {
		greet_close(g, uv_err_name(status));
		return;
	}
	g->sent = 1;
	if (g->closing)
		return;
	if (uv_shutdown(&g->sreq, (uv_stream_t *)g->client,
	    greet_shutdown_cb) != 0)
		greet_close(g, "shutdown");
}

/* greet_hostname - the name in the banner */
static const char *
greet_hostname(const struct policy *p, char *buf, size_t len)
{
	if (p != NULL && p->hostname != NULL && p->hostname[0] != '\0')
		return p->hostname;
	if (gethostname(buf, len) == -1)
		return "localhost";
	buf[len - 1] = '\0';
	return buf;
}

void
proxy_session_start(uv_tcp_t *client, struct proxy_conn *conn)
{
	struct greet *g;
	char host[256];
	uv_buf_t ub;

	g = xcalloc(1, sizeof(*g));
	g->client = client;
	g->conn = *conn;
	g->handles = 2;
	LIST_INSERT_HEAD(&greet_sessions, g, entry);
	greet_open++;
	client->data = g;
	uv_timer_init(client->loop, &g->timer);
	g->timer.data = g;
	g->wreq.data = g;
	xasprintf(&g->msg, "220 %s mxbridge ESMTP service not available yet"
	    "\r\n421 4.3.0 closing\r\n",
	    greet_hostname(conn->policy, host, sizeof(host)));
	ub = uv_buf_init(g->msg, (unsigned)strlen(g->msg));
	uv_timer_start(&g->timer, greet_timer_cb, GREET_LINGER, 0);
	if (uv_write(&g->wreq, (uv_stream_t *)client, &ub, 1,
	    greet_write_cb) != 0 ||
	    uv_read_start((uv_stream_t *)client, greet_alloc_cb,
	    greet_read_cb) != 0)
		greet_close(g, "write");
}

unsigned
proxy_sessions_open(void)
{
	return greet_open;
}

/* proxy_sessions_shutdown - sessions that have said 421 may go now */
void
proxy_sessions_shutdown(void)
{
	struct greet *g;

	LIST_FOREACH(g, &greet_sessions, entry)
		if (g->sent)
			greet_close(g, "shutdown");
}

void
proxy_sessions_stop(void)
{
	struct greet *g;

	LIST_FOREACH(g, &greet_sessions, entry)
		greet_close(g, "stop");
}
