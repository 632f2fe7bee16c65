/*
 * proxy.h - the transparent listeners and the SMTP sessions behind them.
 * listener.c accepts IP_TRANSPARENT connections per direction and hands
 * each to proxy_session_start(); the session owns the client handle from
 * then on and frees it in its close callback.
 */
#ifndef MXB_PROXY_H
#define MXB_PROXY_H
#include <net/if.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#include "../daemon/module.h"
#include "../policy/policy.h"

struct proxy_client;
struct proxy_worker;		/* listener.c: one loop's listeners, sessions,
				   write corks, caches and counters */
struct proxy_sessions;		/* smtpd.c: one worker's sessions */
struct tls_corks;
struct callout_cache;
struct mta_door;
struct buf;

/* the facts of one intercepted connection, fixed at accept */
struct proxy_conn {
	struct proxy_worker	*worker;	/* that accepted it: its loop */
	uint64_t		 id;		/* session id, unique per run */
	struct sockaddr_storage	 client;
	struct sockaddr_storage	 orig_dst;	/* getsockname() of the accept */
	enum policy_dir		 dir;
	char			 port[IF_NAMESIZE];	/* ingress bridge port or "" */
	struct policy		*policy;	/* referenced snapshot */
	const char		*refuse;	/* over a connection limit: which */
	int			 counted;	/* admitted: under the session cap */
	struct proxy_client	*client_slot;	/* its group (clients.c), or NULL */
};

extern const struct module proxy_module;

/*
 * Per-worker state is passed explicitly: a session reaches its worker's
 * parts through conn.worker, and uses them from that worker's thread.
 */
struct tls_corks	*proxy_worker_corks(const struct proxy_worker *);
/* the worker's TLS sessions (common/tls_count.h) on a leg: from clients
 * (STARTTLS, smtpd.c), or the live relay's upstream (sink_relay.c) */
#define PROXY_TLS_CLIENT	0
#define PROXY_TLS_SERVER	1
struct tls_counts	*proxy_worker_tls(struct proxy_worker *, int leg);
/*
 * proxy_relay_added - the live relay forwards the upstream's reply to
 * the final dot that the client sent at dot_ns (uv_hrtime()): the
 * relay_added_seconds histogram, any worker
 */
void			 proxy_relay_added(uint64_t dot_ns);
struct callout_cache	*proxy_worker_callouts(const struct proxy_worker *);
struct proxy_sessions	*proxy_worker_sessions(const struct proxy_worker *);
struct mta_door		*proxy_worker_door(const struct proxy_worker *);

/* session side, implemented by the SMTP session code */
struct proxy_sessions *proxy_sessions_new(void);
void		 proxy_session_start(uv_tcp_t *client, struct proxy_conn *);
unsigned	 proxy_sessions_open(const struct proxy_sessions *);
/* say 421 at the next step */
void		 proxy_sessions_shutdown(struct proxy_sessions *);
/* close every session now */
void		 proxy_sessions_stop(struct proxy_sessions *);
/*
 * The sessions' counters, for "stats" (any thread; each worker's are
 * moved by that worker only): sessions started and ended per direction
 * and path (0 the live relay, 1 the queue), ended by disposition, and
 * messages refused to the client (4xx or 5xx at the dot) by reason;
 * the names of the kinds in the proxy_session_disp and _reason arrays,
 * the last one "other".
 */
#define PROXY_NPATH	2
#define PROXY_NDISP	22
#define PROXY_NREASON	8
extern const char *const proxy_session_path[PROXY_NPATH];
extern const char *const proxy_session_disp[PROXY_NDISP];
extern const char *const proxy_session_reason[PROXY_NREASON];
struct proxy_session_sums {
	uint64_t	 started[2][PROXY_NPATH];	/* by dir, path */
	uint64_t	 ended[2][PROXY_NPATH];
	uint64_t	 ended_by[PROXY_NDISP];
	uint64_t	 refused_by[PROXY_NREASON];
};
/* add one worker's counters to sums */
void		 proxy_sessions_sum(const struct proxy_sessions *,
		    struct proxy_session_sums *);
/* the "stats" lines of sums */
void		 proxy_session_sums_print(const struct proxy_session_sums *,
		    struct buf *);
/* the MTA's answer for session id's message (the worker's door) */
void		 proxy_sessions_committed(struct proxy_sessions *, uint64_t id,
		    int status, const char *id_or_reason);

/* listener side: the session of conn has ended (per-client counts) */
void		 proxy_conn_done(const struct proxy_conn *);

#endif
