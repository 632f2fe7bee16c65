/*
 * listener.c - the transparent listeners of the proxy module and the
 * module's hooks.  One IP_TRANSPARENT listener per direction (an IPv6
 * dual-stack socket, or IPv4 alone where the host has no IPv6) receives
 * what the TPROXY rules deliver; each accepted connection gets its facts
 * (client, original destination, direction, ingress port, session id,
 * policy snapshot) and is handed to proxy_session_start(), which owns
 * the handle from then on.  The listener also counts the admitted
 * sessions against the global cap (sessions) and, in clients.c's table,
 * the open sessions and connection rate of every client group (address
 * masked to client-ipv4-prefix / client-ipv6-prefix): a connection over
 * the cap, connections-per-client or connection-rate is marked
 * (conn.refuse) and its session only says 421.
 *
 * Per-worker state is passed explicitly: a struct proxy_worker is made
 * with the loop it runs on and holds that loop's listeners, sessions,
 * write corks, callout cache, port names and counters; the session code
 * reaches it through conn.worker.  What every worker shares (the limits,
 * the session ids) is marked so below and is locked or atomic.
 */
#include <sys/resource.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "../common/addr.h"
#include "../common/buf.h"
#include "../common/counter.h"
#include "../common/histogram.h"
#include "../common/ifname.h"
#include "../common/log.h"
#include "../common/mark.h"
#include "../common/xmalloc.h"
#include "../common/tls.h"
#include "../common/tls_count.h"
#include "../daemon/control.h"
#include "../mta/mta.h"
#include "../policy/policy.h"
#include "callout.h"
#include "clients.h"
#include "proxy.h"

#define PROXY_BACKLOG	511
#define PROXY_CLIENTS	100000		/* per-client table: idle ones evicted */
#define PROXY_SWEEP_MS	60000		/* idle per-client entries go */
#define PROXY_FWMARK_ACCEPT	"/proc/sys/net/ipv4/tcp_fwmark_accept"

/* one listening socket; freed in its close callback */
struct proxy_listener {
	uv_tcp_t		 tcp;
	struct proxy_worker	*worker;
	enum policy_dir		 dir;
	uint16_t		 port;
};

/* one worker: a loop and what runs on it, used by its thread only */
struct proxy_worker {
	unsigned		 idx;
	uv_loop_t		*loop;
	struct proxy_listener	*listeners[2];	/* by dir */
	struct proxy_sessions	*sessions;
	struct tls_corks	*corks;
	struct callout_cache	*callouts;	/* the shared one */
	struct ifname_cache	*ifnames;	/* ingress port names */
	struct mta_door		*door;		/* the MTA's answers */
	int			 down;		/* never listen again */
	/* counters: this thread moves them, "stats" reads them */
	counter_t		 accepted[2];
	counter_t		 accept_errors;
	counter_t		 refused[3];	/* per-client, rate, cap */
	struct tls_counts	 tls[2];	/* PROXY_TLS_CLIENT, _SERVER */
};

/* the live relay's added latency (proxy_relay_added): every worker
 * observes, relaxed atomics (histogram.h) */
static const uint64_t relay_added_bounds[] = {
	1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000,
	1000000, 2500000, 5000000, 10000000, 30000000, 60000000,
};
static struct histogram	 proxy_relay_added_hist =
    HISTOGRAM_INIT(relay_added_bounds);

/*
 * The workers, one slot each: the daemon's thread makes the array at
 * start, worker i fills slot i in its start hook before the daemon goes
 * on (the daemon waits for it), and nothing changes them after; kept to
 * the end of the process, their handles closing with their loops.
 */
static struct proxy_worker	**proxy_ws;
static unsigned			 proxy_nw;
static int			 proxy_stats_registered;	/* at start */
static uv_timer_t		 proxy_sweep_timer;	/* daemon's loop */
static int			 proxy_sweeping;

/*
 * Shared by every worker, so that the limits hold across them: the
 * per-client table and the number of admitted sessions, under
 * proxy_lim_mtx (taken once at accept and once at a session's end,
 * never on the data path); the "sessions auto" cap and the session ids,
 * atomic.
 */
static pthread_mutex_t		 proxy_lim_mtx = PTHREAD_MUTEX_INITIALIZER;
static struct proxy_clients	*proxy_clients;	/* under proxy_lim_mtx */
static unsigned			 proxy_admitted;	/* under proxy_lim_mtx:
					   sessions, not refused */
static atomic_uint		 proxy_nofile_cap;	/* "sessions auto" */
static atomic_uint_fast64_t	 proxy_next_id = 1;
/* shared: the verify-recipients answers, locked inside (callout.c) */
static struct callout_cache	*proxy_callouts;

static int	proxy_start(uv_loop_t *, unsigned);
static void	proxy_reload(void);
static unsigned	proxy_busy(void);
static void	proxy_stop(void);
static int	proxy_wstart(unsigned, uv_loop_t *);
static void	proxy_wreload(unsigned);
static void	proxy_wshutdown(unsigned);
static void	proxy_wstop(unsigned);

const struct module proxy_module = {
	.name = "proxy",
	.start = proxy_start,
	.reload = proxy_reload,
	.busy = proxy_busy,
	.stop = proxy_stop,
	.wstart = proxy_wstart,
	.wreload = proxy_wreload,
	.wshutdown = proxy_wshutdown,
	.wstop = proxy_wstop,
};

static void
proxy_free_cb(uv_handle_t *h)
{
	free(h->data);
}

struct tls_corks *
proxy_worker_corks(const struct proxy_worker *w)
{
	return w->corks;
}

struct tls_counts *
proxy_worker_tls(struct proxy_worker *w, int leg)
{
	return &w->tls[leg];
}

void
proxy_relay_added(uint64_t dot_ns)
{
	histogram_observe(&proxy_relay_added_hist,
	    (uv_hrtime() - dot_ns) / 1000);
}

struct callout_cache *
proxy_worker_callouts(const struct proxy_worker *w)
{
	return w->callouts;
}

struct proxy_sessions *
proxy_worker_sessions(const struct proxy_worker *w)
{
	return w->sessions;
}

struct mta_door *
proxy_worker_door(const struct proxy_worker *w)
{
	return w->door;
}

/* proxy_door_cb - the MTA answers a session's commit, on w's loop */
static void
proxy_door_cb(void *arg, uint64_t ticket, int status, const char *text)
{
	struct proxy_worker *w = arg;

	proxy_sessions_committed(w->sessions, ticket, status, text);
}

/*
 * proxy_conn_mark - the mark of an accepted connection: with
 * net.ipv4.tcp_fwmark_accept the kernel gives it the mark of the SYN
 * (ingress ifindex and class, mxbridge-netfilter(8)), so the listener
 * learns the ingress port from the connection itself, whichever thread
 * classified the SYN; 0 when unknown
 */
static uint32_t
proxy_conn_mark(uv_tcp_t *c)
{
	uv_os_fd_t fd;
	uint32_t mark = 0;
	socklen_t len = sizeof(mark);

	if (uv_fileno((uv_handle_t *)c, &fd) != 0 ||
	    getsockopt(fd, SOL_SOCKET, SO_MARK, &mark, &len) == -1)
		return 0;
	return mark;
}

/* proxy_conn_fill - the facts of an accepted connection */
static int
proxy_conn_fill(struct proxy_worker *w, struct proxy_conn *conn, uv_tcp_t *c,
    enum policy_dir dir)
{
	const char *port;
	int len;

	memset(conn, 0, sizeof(*conn));
	conn->worker = w;
	len = sizeof(conn->client);
	if (uv_tcp_getpeername(c, (struct sockaddr *)&conn->client, &len) != 0)
		return -1;
	len = sizeof(conn->orig_dst);
	if (uv_tcp_getsockname(c, (struct sockaddr *)&conn->orig_dst,
	    &len) != 0)
		return -1;
	addr_unmap(&conn->client);
	addr_unmap(&conn->orig_dst);
	/* the direction is the listener's: TPROXY chose it by the class */
	port = ifname_lookup(w->ifnames, mark_port(proxy_conn_mark(c)),
	    uv_now(w->loop));
	strncpy(conn->port, port, sizeof(conn->port) - 1);
	conn->dir = dir;
	conn->id = atomic_fetch_add_explicit(&proxy_next_id, 1,
	    memory_order_relaxed);
	return 0;
}

/* proxy_session_cap - the global cap on admitted sessions */
static unsigned
proxy_session_cap(const struct policy *pol)
{
	return pol->limits.sessions != 0 ? pol->limits.sessions :
	    atomic_load_explicit(&proxy_nofile_cap, memory_order_relaxed);
}

/* proxy_nofile_cap_set - "sessions auto", at start and reload */
static void
proxy_nofile_cap_set(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == -1 || rl.rlim_cur == RLIM_INFINITY)
		rl.rlim_cur = UINT64_MAX;
	atomic_store_explicit(&proxy_nofile_cap,
	    proxy_clients_cap_auto(rl.rlim_cur), memory_order_relaxed);
}

/* proxy_sweep_cb - forget the clients idle for a rate window */
static void
proxy_sweep_cb(uv_timer_t *t)
{
	struct policy *pol = policy_current();
	uint64_t w;

	if (pol == NULL)
		return;
	w = pol->limits.conn_rate == 0 ? 0 :
	    (uint64_t)pol->limits.conn_rate_window * 1000;
	pthread_mutex_lock(&proxy_lim_mtx);
	proxy_clients_sweep(proxy_clients, uv_now(t->loop), w);
	pthread_mutex_unlock(&proxy_lim_mtx);
}

/*
 * proxy_admit - count a new connection against the global session cap
 * and its client's limits: conn->counted and conn->client_slot when it
 * is admitted, conn->refuse (the limit) when not
 */
static void
proxy_admit(struct proxy_worker *w, struct proxy_conn *conn)
{
	const struct sockaddr *sa = (const struct sockaddr *)&conn->client;
	const struct policy_limits *l = &conn->policy->limits;
	struct proxy_client *c;
	char a[ADDR_STRLEN], g[PROXY_CLIENTS_FMTLEN];
	const char *why = NULL;
	uint64_t now = uv_now(w->loop);
	unsigned cap = proxy_session_cap(conn->policy), open;

	/* the check and the count in one hold of the lock: the limits are
	 * every worker's together; the log lines after it */
	pthread_mutex_lock(&proxy_lim_mtx);
	if ((open = proxy_admitted) >= cap) {
		/* before the table: a refused one holds no entry */
		pthread_mutex_unlock(&proxy_lim_mtx);
		conn->refuse = "sessions";
		counter_inc(&w->refused[2]);
		log_info("session=%llu client=%s dir=%s limit=sessions "
		    "open=%u max=%u", (unsigned long long)conn->id,
		    addr_fmt(sa, a, sizeof(a)), policy_dir_name(conn->dir),
		    open, cap);
		return;
	}
	c = proxy_clients_get(proxy_clients, sa, l->client_prefix4,
	    l->client_prefix6, now);
	if (c != NULL && !policy_conn_admit(conn->policy,
	    proxy_clients_open(c), proxy_clients_rate(c), now, &why)) {
		open = proxy_clients_open(c);
		proxy_clients_fmt(c, g, sizeof(g));
		pthread_mutex_unlock(&proxy_lim_mtx);
		conn->refuse = why;
		counter_inc(&w->refused[strcmp(why, "connection-rate") == 0]);
		log_info("session=%llu client=%s dir=%s limit=%s open=%u "
		    "group=%s", (unsigned long long)conn->id,
		    addr_fmt(sa, a, sizeof(a)), policy_dir_name(conn->dir),
		    why, open, g);
		return;
	}
	if (c != NULL)
		proxy_clients_hold(proxy_clients, c, now);
	conn->client_slot = c;
	conn->counted = 1;
	proxy_admitted++;
	pthread_mutex_unlock(&proxy_lim_mtx);
}

/* proxy_conn_done - a session ended: one less open, for its client too */
void
proxy_conn_done(const struct proxy_conn *conn)
{
	if (!conn->counted)
		return;
	pthread_mutex_lock(&proxy_lim_mtx);
	if (proxy_admitted > 0)
		proxy_admitted--;
	if (conn->client_slot != NULL && proxy_clients != NULL)
		proxy_clients_release(proxy_clients, conn->client_slot,
		    uv_now(conn->worker->loop));
	pthread_mutex_unlock(&proxy_lim_mtx);
}

/*
 * proxy_quickack_off - delayed ACKs from the first command on: a new
 * connection starts in quick-ACK mode, which sends a bare ACK for the
 * client's EHLO while its answer waits on the upstream; the reply itself
 * can carry it (Linux forgets this on a listener: set per connection)
 */
static int
proxy_quickack_off(uv_tcp_t *tcp)
{
	uv_os_fd_t fd;
	int zero = 0;

	if (uv_fileno((uv_handle_t *)tcp, &fd) != 0)
		return UV_EBADF;
	if (setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &zero, sizeof(zero)) == -1)
		return -errno;
	return 0;
}

/* proxy_accept_cb - a new intercepted connection */
static void
proxy_accept_cb(uv_stream_t *server, int status)
{
	struct proxy_listener *l = server->data;
	struct proxy_worker *w = l->worker;
	struct proxy_conn conn;
	char c[ADDR_STRLEN], d[ADDR_STRLEN];
	uv_tcp_t *client;
	int rc;

	if (status < 0) {
		counter_inc(&w->accept_errors);
		log_warnx("listener dir=%s: accept: %s",
		    policy_dir_name(l->dir), uv_strerror(status));
		return;
	}
	client = xcalloc(1, sizeof(*client));
	uv_tcp_init(w->loop, client);
	client->data = client;
	if ((rc = uv_accept(server, (uv_stream_t *)client)) != 0 ||
	    proxy_conn_fill(w, &conn, client, l->dir) == -1) {
		counter_inc(&w->accept_errors);
		log_warnx("listener dir=%s: accept failed: %s",
		    policy_dir_name(l->dir),
		    rc ? uv_strerror(rc) : "no address");
		uv_close((uv_handle_t *)client, proxy_free_cb);
		return;
	}
	client->data = NULL;
	(void)proxy_quickack_off(client);
	counter_inc(&w->accepted[l->dir]);
	log_info("session=%llu client=%s orig_dst=%s dir=%s port=%s "
	    "worker=%u", (unsigned long long)conn.id,
	    addr_fmt((struct sockaddr *)&conn.client, c, sizeof(c)),
	    addr_fmt((struct sockaddr *)&conn.orig_dst, d, sizeof(d)),
	    policy_dir_name(conn.dir), conn.port[0] ? conn.port : "-", w->idx);
	conn.policy = policy_ref(policy_current());
	proxy_admit(w, &conn);
	proxy_session_start(client, &conn);
}

/* proxy_transparent - IP(V6)_TRANSPARENT on the socket, before bind */
static int
proxy_transparent(uv_tcp_t *tcp, int family)
{
	uv_os_fd_t fd;
	int one = 1;

	if (uv_fileno((uv_handle_t *)tcp, &fd) != 0)
		return -1;
	if (family == AF_INET6 && setsockopt(fd, SOL_IPV6, IPV6_TRANSPARENT,
	    &one, sizeof(one)) == -1)
		return -1;
	if (setsockopt(fd, SOL_IP, IP_TRANSPARENT, &one, sizeof(one)) == -1 &&
	    family == AF_INET)
		return -1;
	return 0;
}

/*
 * proxy_reuseport - every worker listens on the same port: the kernel
 * (TPROXY's listener lookup included) picks one of them by the flow's
 * hash, so new connections spread over the workers with no lock
 */
static int
proxy_reuseport(uv_tcp_t *tcp)
{
	uv_os_fd_t fd;
	int one = 1;

	if (uv_fileno((uv_handle_t *)tcp, &fd) != 0)
		return UV_EBADF;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) == -1)
		return -errno;
	return 0;
}

/* proxy_bind - bind tcp to the wildcard address of family at port */
static int
proxy_bind(uv_tcp_t *tcp, int family, uint16_t port)
{
	struct sockaddr_storage ss;
	struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

	memset(&ss, 0, sizeof(ss));
	if (family == AF_INET6) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_addr = in6addr_any;
		sin6->sin6_port = htons(port);
	} else {
		sin->sin_family = AF_INET;
		sin->sin_addr.s_addr = htonl(INADDR_ANY);
		sin->sin_port = htons(port);
	}
	/* without UV_TCP_IPV6ONLY libuv clears IPV6_V6ONLY: dual stack */
	return uv_tcp_bind(tcp, (struct sockaddr *)&ss, 0);
}

/* proxy_listen - a transparent listener for dir; NULL (logged) if not */
static struct proxy_listener *
proxy_listen(struct proxy_worker *w, enum policy_dir dir, uint16_t port)
{
	struct proxy_listener *l;
	int family = AF_INET6, rc, transparent = 1;

	l = xcalloc(1, sizeof(*l));
	l->worker = w;
	l->dir = dir;
	l->port = port;
	if ((rc = uv_tcp_init_ex(w->loop, &l->tcp, AF_INET6)) != 0) {
		family = AF_INET;
		rc = uv_tcp_init_ex(w->loop, &l->tcp, AF_INET);
	}
	if (rc != 0) {
		log_warnx("listener dir=%s: socket: %s", policy_dir_name(dir),
		    uv_strerror(rc));
		free(l);
		return NULL;
	}
	l->tcp.data = l;
	if (proxy_transparent(&l->tcp, family) == -1) {
		transparent = 0;
		log_warn("listener dir=%s port=%u: not transparent, TPROXY "
		    "cannot deliver to it", policy_dir_name(dir), port);
	}
	/* TCP_NODELAY here: Linux copies it to every accepted socket */
	if ((rc = proxy_reuseport(&l->tcp)) != 0 ||
	    (rc = proxy_bind(&l->tcp, family, port)) != 0 ||
	    (rc = uv_tcp_nodelay(&l->tcp, 1)) != 0 ||
	    (rc = uv_listen((uv_stream_t *)&l->tcp, PROXY_BACKLOG,
	    proxy_accept_cb)) != 0) {
		log_warnx("listener dir=%s port=%u: %s", policy_dir_name(dir),
		    port, uv_strerror(rc));
		uv_close((uv_handle_t *)&l->tcp, proxy_free_cb);
		return NULL;
	}
	log_info("listener dir=%s port=%u family=%s transparent=%s worker=%u",
	    policy_dir_name(dir), port, family == AF_INET6 ? "dual" : "ipv4",
	    transparent ? "yes" : "no", w->idx);
	return l;
}

static void
proxy_unlisten(struct proxy_worker *w, enum policy_dir dir)
{
	struct proxy_listener *l = w->listeners[dir];

	if (l == NULL)
		return;
	w->listeners[dir] = NULL;
	uv_close((uv_handle_t *)&l->tcp, proxy_free_cb);
}

/* proxy_stats - the "stats" lines of the listeners: every worker's
 * summed, then each worker's own */
static void
proxy_stats(struct buf *out)
{
	uint64_t acc[2] = { 0, 0 }, errs = 0, ref[3] = { 0, 0, 0 }, evicted;
	uint64_t tls[2][TLS_NPROTO];
	struct proxy_session_sums sums;
	unsigned i, open = 0;
	size_t nclients;
	int k;

	pthread_mutex_lock(&proxy_lim_mtx);
	nclients = proxy_clients_count(proxy_clients);
	memset(&sums, 0, sizeof(sums));
	memset(tls, 0, sizeof(tls));
	evicted = proxy_clients_evicted(proxy_clients);
	pthread_mutex_unlock(&proxy_lim_mtx);
	for (i = 0; i < proxy_nw; i++) {
		const struct proxy_worker *w = proxy_ws[i];

		if (w == NULL)
			continue;
		for (k = 0; k < 2; k++)
			acc[k] += counter_get(&w->accepted[k]);
		errs += counter_get(&w->accept_errors);
		for (k = 0; k < 3; k++)
			ref[k] += counter_get(&w->refused[k]);
		open += proxy_sessions_open(w->sessions);
		proxy_sessions_sum(w->sessions, &sums);
		for (k = 0; k < 2; k++)
			tls_counts_add(&w->tls[k], tls[k]);
	}
	buf_printf(out, "proxy_accepted_incoming=%llu\n",
	    (unsigned long long)acc[POLICY_DIR_IN]);
	buf_printf(out, "proxy_accepted_outgoing=%llu\n",
	    (unsigned long long)acc[POLICY_DIR_OUT]);
	buf_printf(out, "proxy_accept_errors=%llu\n", (unsigned long long)errs);
	buf_printf(out, "proxy_sessions=%u\n", open);
	buf_printf(out, "proxy_refused_per_client=%llu\n",
	    (unsigned long long)ref[0]);
	buf_printf(out, "proxy_refused_rate=%llu\n", (unsigned long long)ref[1]);
	buf_printf(out, "proxy_refused_sessions=%llu\n",
	    (unsigned long long)ref[2]);
	buf_printf(out, "proxy_sessions_max=%u\n",
	    proxy_session_cap(policy_current()));
	buf_printf(out, "proxy_clients=%zu\n", nclients);
	buf_printf(out, "proxy_clients_evicted=%llu\n",
	    (unsigned long long)evicted);
	proxy_session_sums_print(&sums, out);
	tls_counts_print(tls[PROXY_TLS_CLIENT], "client", out);
	tls_counts_print(tls[PROXY_TLS_SERVER], "server", out);
	histogram_stats(&proxy_relay_added_hist, "relay_added_seconds", out);
	for (i = 0; i < proxy_nw; i++) {
		const struct proxy_worker *w = proxy_ws[i];

		if (w == NULL)
			continue;
		buf_printf(out, "worker.%u.proxy_accepted_incoming=%llu\n", i,
		    (unsigned long long)counter_get(&w->accepted[POLICY_DIR_IN]));
		buf_printf(out, "worker.%u.proxy_accepted_outgoing=%llu\n", i,
		    (unsigned long long)counter_get(&w->accepted[POLICY_DIR_OUT]));
		buf_printf(out, "worker.%u.proxy_sessions=%u\n", i,
		    proxy_sessions_open(w->sessions));
	}
}

/*
 * proxy_worker_new - worker idx on loop: its sessions, write corks,
 * callout cache, port names and door to the MTA (no listeners yet)
 */
static struct proxy_worker *
proxy_worker_new(unsigned idx, uv_loop_t *loop)
{
	struct proxy_worker *w = xcalloc(1, sizeof(*w));

	w->idx = idx;
	w->loop = loop;
	w->sessions = proxy_sessions_new();
	w->corks = tls_corks_new(loop);
	w->callouts = proxy_callouts;
	w->ifnames = ifname_cache_new();
	w->door = mta_door_open(loop, proxy_door_cb, w);
	return w;
}

/*
 * proxy_fwmark_check - say at start when accepted connections will not
 * carry the SYN's mark (mxbridge-netfilter up sets the sysctl): then no
 * session knows its ingress port, and port rules cannot match it
 */
static void
proxy_fwmark_check(void)
{
	FILE *f;
	int c = EOF;

	if ((f = fopen(PROXY_FWMARK_ACCEPT, "r")) != NULL) {
		c = fgetc(f);
		fclose(f);
	}
	if (c == '0')
		log_info("listener fwmark_accept=no: sessions do not learn "
		    "their ingress port (net.ipv4.tcp_fwmark_accept is 0)");
}

/* proxy_start - the shared part: limits, the client table and its
 * sweeper (on the daemon's loop), the workers' slots */
static int
proxy_start(uv_loop_t *loop, unsigned nworkers)
{
	struct policy *p = policy_current();

	proxy_fwmark_check();
	proxy_nofile_cap_set();
	if (proxy_clients == NULL)
		proxy_clients = proxy_clients_new(PROXY_CLIENTS);
	if (proxy_callouts == NULL)
		proxy_callouts = callout_cache_new();
	if (proxy_ws == NULL) {
		proxy_ws = xcalloc(nworkers, sizeof(*proxy_ws));
		proxy_nw = nworkers;
	}
	if (!proxy_stats_registered) {
		control_register_stats(proxy_stats);
		proxy_stats_registered = 1;
	}
	uv_timer_init(loop, &proxy_sweep_timer);
	uv_timer_start(&proxy_sweep_timer, proxy_sweep_cb, PROXY_SWEEP_MS,
	    PROXY_SWEEP_MS);
	uv_unref((uv_handle_t *)&proxy_sweep_timer);
	proxy_sweeping = 1;
	log_info("listener sessions_max=%u source=%s workers=%u",
	    proxy_session_cap(p), p->limits.sessions ? "config" : "nofile",
	    nworkers);
	return 0;
}

/* proxy_wstart - worker idx: its parts and both listeners */
static int
proxy_wstart(unsigned idx, uv_loop_t *loop)
{
	struct policy *p = policy_current();
	struct proxy_worker *w;
	int d;

	if (idx >= proxy_nw)
		return -1;
	if ((w = proxy_ws[idx]) == NULL)
		w = proxy_ws[idx] = proxy_worker_new(idx, loop);
	for (d = POLICY_DIR_IN; d <= POLICY_DIR_OUT; d++)
		if ((w->listeners[d] = proxy_listen(w, d,
		    p->listen_port[d])) == NULL)
			return -1;
	return 0;
}

/* proxy_wreload - move a listener whose port changed */
static void
proxy_wreload(unsigned idx)
{
	struct proxy_worker *w = proxy_ws[idx];
	const struct policy *p = policy_current();
	int d;

	if (w == NULL || w->down)
		return;
	for (d = POLICY_DIR_IN; d <= POLICY_DIR_OUT; d++) {
		if (w->listeners[d] != NULL &&
		    w->listeners[d]->port == p->listen_port[d])
			continue;
		proxy_unlisten(w, d);
		w->listeners[d] = proxy_listen(w, d, p->listen_port[d]);
	}
}

static void
proxy_reload(void)
{
	proxy_nofile_cap_set();
}

/* proxy_wshutdown - no new connections; sessions end at their next step */
static void
proxy_wshutdown(unsigned idx)
{
	struct proxy_worker *w = proxy_ws[idx];

	if (w == NULL)
		return;
	w->down = 1;
	proxy_unlisten(w, POLICY_DIR_IN);
	proxy_unlisten(w, POLICY_DIR_OUT);
	proxy_sessions_shutdown(w->sessions);
}

/* proxy_busy - open sessions, every worker's (the daemon's drain) */
static unsigned
proxy_busy(void)
{
	unsigned i, n = 0;

	for (i = 0; i < proxy_nw; i++)
		if (proxy_ws[i] != NULL)
			n += proxy_sessions_open(proxy_ws[i]->sessions);
	return n;
}

/* proxy_wstop - close worker idx's listeners, sessions and door now */
static void
proxy_wstop(unsigned idx)
{
	struct proxy_worker *w = proxy_ws[idx];

	if (w == NULL)
		return;
	w->down = 1;
	proxy_unlisten(w, POLICY_DIR_IN);
	proxy_unlisten(w, POLICY_DIR_OUT);
	proxy_sessions_stop(w->sessions);
	mta_door_close(w->door);
	w->door = NULL;
}

static void
proxy_stop(void)
{
	if (proxy_sweeping &&
	    !uv_is_closing((uv_handle_t *)&proxy_sweep_timer))
		uv_close((uv_handle_t *)&proxy_sweep_timer, NULL);
	proxy_sweeping = 0;
}
