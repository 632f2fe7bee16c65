/*
 * mta_local.h - what the files of the MTA share and nobody else calls:
 * the queued message (envelope) and its recipients, the on-disk format
 * (envelope.c), the spool's asynchronous operations (spool.c), the
 * scheduler, its per-message state and its destinations (queue.c),
 * delivery connections
 * (deliver.c), DNS (dns.c), DSNs (dsn.c) and the admin commands (admin.c).
 */
#ifndef MXB_MTA_LOCAL_H
#define MXB_MTA_LOCAL_H
#include <sys/queue.h>
#include <sys/socket.h>
#include <stdint.h>
#include <time.h>
#include <uv.h>

#include "../common/buf.h"
#include "../common/histogram.h"
#include "../common/tls_count.h"
#include "../common/mark.h"
#include "mta.h"

#ifndef TAILQ_FOREACH_SAFE	/* glibc's sys/queue.h lacks it */
#define TAILQ_FOREACH_SAFE(var, head, field, tvar)			\
	for ((var) = TAILQ_FIRST(head);					\
	    (var) != NULL && ((tvar) = TAILQ_NEXT(var, field), 1);	\
	    (var) = (tvar))
#endif

#define MTA_IDLEN	16		/* hex digits of a queue id */
#define MTA_MAXADDR	16		/* next-hop addresses tried per attempt */
#define MTA_SPILL	(1024 * 1024)	/* body bytes kept in memory */
#define MTA_MEMBODIES	(64 * 1024 * 1024) /* bodies kept for delivery */
#define MTA_DIAGLEN	512		/* kept of a reply for a diagnostic */
#define MTA_SO_MARK	MARK_OWN	/* upstream sockets: common/mark.h */

enum mta_rstate { MTA_RCPT_PENDING = 0, MTA_RCPT_DELIVERED, MTA_RCPT_FAILED };

struct mta_rcpt {
	char		*addr;
	char		*orcpt;		/* "rfc822;x@y" as given, or NULL */
	unsigned	 notify;	/* MTA_NOTIFY_* bits, 0: default */
	enum policy_route route;
	enum mta_rstate	 state;
	unsigned	 attempts;
	time_t		 next;		/* next attempt (unix time) */
	time_t		 last;		/* last attempt */
	char		*status;	/* x.y.z of the last outcome, or NULL */
	char		*remote;	/* Remote-MTA of the last outcome */
	char		*diag;		/* the last reply or reason */
	int		 notified;	/* final DSN done, or none wanted */
	int		 relayed;	/* next hop took our DSN parameters */
	const char	*tls;		/* the last outcome's session TLS, for
					   the log (mta_result's; not kept
					   on disk) */
	int		 via;		/* the route of the last attempt + 1
					   (the fallback relay's, say), 0:
					   none; for the log, not on disk */
};

/*
 * one queued message: the envelope header of its spool file (what
 * envelope.c writes and reads) and the spool's memory of that file; the
 * scheduler's state of it is struct mta_qmsg's
 */
struct mta_env {
	char		 id[MTA_IDLEN + 1];
	time_t		 arrival;
	uint64_t	 arrival_ms;	/* the same in unix ms (its DATA began),
					   0: not known (an older file) */
	uint64_t	 queued_ms;	/* unix ms its receiving ended, 0: not
					   known; both for the log's delays= */
	uint64_t	 session;
	struct sockaddr_storage client;
	struct sockaddr_storage orig_dst;
	enum policy_dir	 dir;
	char		*helo;
	char		*tls;
	char		*auth;
	char		*sender;	/* "" for the null sender */
	char		*envid;
	enum mta_ret	 ret;
	uint64_t	 size;		/* SIZE= as declared */
	int		 body8;
	int		 smtputf8;
	char		*received;	/* our Received: header, CRLF ended */
	uint64_t	 bodylen;	/* body bytes in the file */
	uint64_t	 bodysum;	/* FNV-1a of those bytes */
	uint64_t	 bodyoff;	/* where the body starts (memory only) */
	int		 warned;	/* delay DSN sent */
	int		 held;		/* on hold: never tried, expired or
					   warned about until released */
	time_t		 hold_since;	/* when it was put on hold */
	time_t		 held_for;	/* seconds on hold before, which the
					   queue's clocks do not count */
	char		*hold_reason;	/* why it is held, or NULL */
	int		 stfile;	/* queue/ID.st exists (memory only) */
	struct buf	 mem;		/* the body, for the first delivery */
	struct mta_rcpt	*rcpt;
	size_t		 nrcpt;
};

/* envelope.c */
struct mta_env	*mta_env_new(void);
void		 mta_env_free(struct mta_env *);
void		 mta_env_mem_take(struct mta_env *, struct buf *);
void		 mta_env_mem_drop(struct mta_env *);
void		 mta_rcpt_add(struct mta_env *, const char *, const char *,
		    unsigned, enum policy_route);
/* the recipients of that address (any case) go: how many */
unsigned	 mta_rcpt_del(struct mta_env *, const char *);
int		 mta_id_valid(const char *);
void		 mta_id_make(char *);
void		 mta_env_serialize(const struct mta_env *, struct buf *);
void		 mta_state_serialize(const struct mta_env *, struct buf *);
int		 mta_env_parse(const char *, size_t, struct mta_env *,
		    const char **);
int		 mta_state_parse(const char *, size_t, struct mta_env *);
const char	*mta_rstate_name(enum mta_rstate);
const char	*mta_ret_name(enum mta_ret);
const char	*mta_ret_param(enum mta_ret);
const char	*mta_addr_domain(const char *);
uint64_t	 mta_now_ms(void);
time_t		 mta_now(void);
int		 mta_notify_wants(unsigned, unsigned);

/* spool.c: every file operation runs on the threadpool, in batches */
typedef void	(*mta_spool_cb)(void *, int, const char *);
struct mta_dsnreq;
int		 mta_spool_init(uv_loop_t *, const char *);
int		 mta_spool_load(void (*)(struct mta_env *));
/* body in memory, spill fd and path, and how many bytes at the head of
 * the spill file the memory part stands for (an edited header): -1 none */
void		 mta_spool_commit(struct mta_env *, struct buf *, int,
		    const char *, int64_t, mta_spool_cb, void *);
void		 mta_spool_dsn(struct mta_env *, struct mta_dsnreq *,
		    mta_spool_cb, void *);
void		 mta_spool_state(struct mta_env *);
void		 mta_spool_remove(const struct mta_env *);
void		 mta_spool_move(const char *, const char *);
void		 mta_spool_expire_dead(unsigned);
unsigned	 mta_spool_busy(void);
void		 mta_spool_counts(uint64_t *, uint64_t *);
const char	*mta_spool_dir(void);
int		 mta_spool_path(char *, size_t, const char *, const char *);
int		 mta_spool_free_ok(uint64_t);
void		 mta_spool_spill_drop(int, char *);
int		 mta_spool_read_headers(const struct mta_env *, struct buf *,
		    size_t);

/* queue.c: the scheduler */
struct mta_dest;

/* the scheduler's state of one queued message: memory only, never on disk */
struct mta_qmsg {
	TAILQ_ENTRY(mta_qmsg) entry;
	struct mta_env	*env;
	unsigned char	*busy;		/* per recipient: in a delivery job */
	unsigned	 jobs;		/* delivery jobs holding it */
	int		 deleted;	/* 1: remove once the jobs are done;
					 * 2: stopped, freed by its last job */
	int		 dead;		/* move to dead/ once done */
};
TAILQ_HEAD(mta_qmsgq, mta_qmsg);

/* the outcome for one recipient of a job */
struct mta_result {
	int		 code;		/* 2, 4 or 5: the reply class */
	char		 status[16];	/* x.y.z */
	char		*remote;	/* next hop name[address] */
	char		*diag;
	int		 relayed;	/* DSN parameters passed on */
	const char	*tls;		/* "verified", "anonymous", "none",
					   or NULL: no session (static) */
};

/* one delivery transaction: a message and its recipients for one hop */
struct mta_job {
	TAILQ_ENTRY(mta_job) entry;
	struct mta_qmsg	*msg;		/* the scheduler's (queue.c) */
	struct mta_env	*env;		/* msg->env */
	struct mta_dest	*dest;
	size_t		*idx;		/* indexes into env->rcpt */
	struct mta_result *res;		/* per idx, filled by deliver.c */
	size_t		 n;
	uint64_t	 started;	/* uv_now() when taken */
	uint64_t	 sent;		/* uv_now() when its MAIL went out, 0:
					   never (deliver.c, for delays=) */
	int		 slow;		/* every recipient in the slow queue */
};
TAILQ_HEAD(mta_jobq, mta_job);

/* where a job goes: the key is route + target */
/*
 * mta_rate - a destination's "rate N per DURATION" as a sliding window:
 * the start times (monotonic ms) of its transactions still inside the
 * window, oldest first, in a ring that grows to at most N.  A token
 * bucket would let 2N-1 through in one window (a full bucket, then the
 * refill); the log keeps "at most N in any DURATION" exact.
 */
struct mta_rate {
	uint64_t	*t;
	size_t		 cap;
	size_t		 head;		/* the oldest */
	size_t		 n;
};

uint64_t	 mta_rate_wait(struct mta_rate *, unsigned n, uint64_t per_ms,
		    uint64_t now);
void		 mta_rate_take(struct mta_rate *, uint64_t now);
void		 mta_rate_free(struct mta_rate *);

struct mta_dest {
	TAILQ_ENTRY(mta_dest) entry;
	char		*key;		/* for logs and lookups */
	enum policy_route route;
	char		*domain;	/* MX: the recipient domain */
	struct sockaddr_storage orig_dst; /* ORIGINAL: the server */
	struct sockaddr_storage bind;	/* hide-box: the client's address */
	char		*helo;		/* hide-box: the client's HELO */
	char		*shape;		/* the name its "destination" block
					   is found by, or NULL */
	struct mta_jobq	 jobs;		/* waiting: fresh ones, then slow */
	struct mta_job	*slow_head;	/* the first slow one, or NULL */
	unsigned	 njobs;
	unsigned	 nconn;		/* connections open, idle ones too */
	unsigned	 nidle;		/* connections waiting for a job */
	unsigned	 window;	/* connections allowed now: slow start */
	struct mta_rate	 rate;		/* "rate": recent starts */
	int		 rate_held;	/* logged: jobs wait for the rate */
};

void		 mta_queue_init(uv_loop_t *);
const char	*mta_delay_fmt(uint64_t ms, char *, size_t);
void		 mta_queue_stop(void);
void		 mta_queue_shutdown(void);
void		 mta_queue_add(struct mta_env *);
void		 mta_queue_kick(void);
void		 mta_queue_reload(void);
unsigned	 mta_queue_rate_waiting(void);
struct mta_env	*mta_queue_find(const char *);
int		 mta_queue_rcpt_slow(const struct mta_rcpt *);
void		 mta_queue_dest_limits(const struct mta_dest *,
		    struct policy_shape *);
struct mta_qmsg	*mta_queue_lookup(const char *);
struct mta_qmsgq *mta_queue_all(void);
int		 mta_queue_flush(const char *);
int		 mta_queue_delete(const char *);
int		 mta_queue_bounce(const char *);
int		 mta_queue_hold(const char *, const char *);
int		 mta_queue_release(const char *);
time_t		 mta_queue_age(const struct mta_env *, time_t);
struct mta_job	*mta_queue_next_job(struct mta_dest *);
void		 mta_queue_job_done(struct mta_job *);
void		 mta_queue_job_retry(struct mta_job *);
void		 mta_queue_conn_done(struct mta_dest *);
void		 mta_queue_dest_fail(struct mta_dest *, int, const char *,
		    const char *, const char *);
unsigned	 mta_queue_busy(void);
void		 mta_result_set(struct mta_result *, int, const char *,
		    const char *, const char *);

/* admin.c: the queue summary's age columns (qshape's) */
/*
 * The queue a pending recipient of q is in, the one classification of
 * "queue list" (queue=), "queue summary" (qshape's active and deferred,
 * slow counted there as deferred, and hold) and the stats' queue_*.Q
 * lines: in a delivery job "active", else of a message on hold "hold",
 * else failed slow-after times "slow", else "deferred"; -1 when it is
 * not pending
 */
enum mta_qname { MTA_Q_ACTIVE = 0, MTA_Q_DEFERRED, MTA_Q_SLOW, MTA_Q_HOLD,
	MTA_NQ };
extern const char *const mta_qnames[MTA_NQ];
int		 mta_rcpt_queue(const struct mta_qmsg *, size_t);
#define MTA_AGE_BUCKETS	10
int		 mta_age_bucket(time_t);
void		 mta_queue_summary(const struct mta_qmsgq *, time_t, int,
		    struct buf *);

/* deliver.c: SMTP client connections */
void		 mta_deliver_init(uv_loop_t *);
int		 mta_deliver_open(uv_loop_t *, struct mta_dest *);
int		 mta_deliver_wake(struct mta_dest *);
unsigned	 mta_deliver_count(void);
unsigned	 mta_deliver_idle(void);
void		 mta_deliver_stop(void);
void		 mta_deliver_shutdown(void);

/* dns.c: next-hop addresses, resolved on the threadpool */
struct mta_hop {
	struct sockaddr_storage	 addr;
	char			 name[256];
	int			 dnssec;	/* MTA_HOP_*: what DANE needs */
};
#define MTA_HOP_NAMESEC	0x1	/* the name: configured, or from a secure
				   MX answer (RFC 7672 2.2.1) */
#define MTA_HOP_ADDRSEC	0x2	/* the address: a secure A/AAAA answer */
struct mta_dnsres {
	int		 status;	/* 0 ok, 4 temporary, 5 permanent */
	char		 code[16];	/* x.y.z when status != 0 */
	char		 err[256];
	struct mta_hop	 hop[MTA_MAXADDR];
	int		 nhop;
	int		 trust_ad;	/* the resolver's AD bit was believed */
};
typedef void	(*mta_dns_cb)(void *, struct mta_dnsres *);

/* a resolution's budget (queue { dns-timeout, resolve-timeout, ... }) */
struct mta_dnsopt {
	unsigned	 lookup_ms;	/* one question, every try together */
	unsigned	 resolve_ms;	/* the whole resolution */
	int		 maxaddr;	/* next-hop addresses kept */
	enum policy_trustad trust_ad;	/* "tls-policy trust-ad" */
};

/*
 * DANE (RFC 7672): the TLSA records of _PORT._tcp.HOST.  At most
 * MTA_TLSA_MAX usable records and MTA_TLSA_MAXDATA bytes of their data
 * are kept; the rest are counted (skipped) and not used, so a huge
 * RRset costs bounded memory and gives a clear outcome.
 */
#define MTA_TLSA_MAX	 64
#define MTA_TLSA_MAXDATA 16384
enum mta_tlsa_status {
	MTA_TLSA_SECURE = 0,	/* a validated RRset (n may be 0: unusable) */
	MTA_TLSA_NONE,		/* validated: the name has no TLSA */
	MTA_TLSA_INSECURE,	/* no validated answer: unsigned, untrusted */
	MTA_TLSA_FAIL		/* no answer: SERVFAIL (bogus?), timeout */
};
struct mta_tlsa_rr {
	uint8_t		 usage, selector, mtype;
	uint16_t	 len;
	uint16_t	 off;		/* in data */
};
struct mta_tlsa {
	enum mta_tlsa_status status;
	char		 name[300];	/* the question: _25._tcp.HOST */
	char		 err[384];	/* why, when not MTA_TLSA_SECURE */
	size_t		 total;		/* TLSA records of the name */
	size_t		 unusable;	/* PKIX usages, unknown parameters */
	size_t		 skipped;	/* usable, beyond the limits */
	size_t		 n;
	struct mta_tlsa_rr rr[MTA_TLSA_MAX];
	size_t		 used;		/* bytes of data */
	uint8_t		 data[MTA_TLSA_MAXDATA];
};
typedef void	(*mta_tlsa_cb)(void *, const struct mta_tlsa *);

/* mta_dns_parse_answer: the checked records of one answer */
#define MTA_DNS_OK	0		/* records (maybe none: NODATA) */
#define MTA_DNS_NX	2		/* NXDOMAIN */
#define MTA_DNS_TEMP	(-1)		/* server failure, CNAME loop */
#define MTA_DNS_TC	(-2)		/* truncated: ask over TCP */
#define MTA_DNS_BAD	(-3)		/* not an answer to the question */
#define MTA_DNS_MAXRR	16		/* records kept (MX: the best) */
#define MTA_DNS_MAXANSRR 512		/* answer records looked at */
struct mta_dnsrr {
	uint16_t	 pref;		/* MX */
	int		 odd;		/* MX: name is not a host name */
	int		 family;	/* A, AAAA: AF_INET, AF_INET6 */
	uint8_t		 addr[16];
	char		 name[256];	/* MX: the exchanger, "." null MX */
};
struct mta_dnsans {
	int		 rcode;
	int		 ad;		/* the AD bit (trusted or not) */
	char		 name[256];	/* where the CNAME chain ended */
	size_t		 total;		/* answer records in the packet */
	size_t		 bad;		/* malformed records of the type */
	size_t		 n;
	struct mta_dnsrr rr[MTA_DNS_MAXRR];
};
int		 mta_dns_parse_answer(const uint8_t *, size_t, uint16_t,
		    const char *, uint16_t, struct mta_dnsans *);
int		 mta_dns_parse_tlsa(const uint8_t *, size_t, uint16_t,
		    const char *, struct mta_dnsans *, struct mta_tlsa *);
void		 mta_dns_tlsa(uv_loop_t *, const char *, uint16_t,
		    mta_tlsa_cb, void *);
void		 mta_dns_tlsa_lookup(const char *, uint16_t,
		    const struct mta_dnsopt *, struct mta_tlsa *);
/* the network call: query wire in, answer wire out (malloc'd); 0 / -1 */
typedef int	(*mta_dns_transport)(void *, const uint8_t *, size_t, int,
		    unsigned, uint8_t **, size_t *);
void		 mta_dns_set_transport(mta_dns_transport, void *);
void		 mta_dns_opt_default(struct mta_dnsopt *);
void		 mta_dns_mx(uv_loop_t *, const char *, uint16_t, mta_dns_cb,
		    void *);
void		 mta_dns_host(uv_loop_t *, const char *, uint16_t, mta_dns_cb,
		    void *);
int		 mta_dns_is_self(const struct sockaddr *);
int		 mta_dns_mx_lookup(const char *, uint16_t, struct mta_dnsres *);
unsigned	 mta_dns_busy(void);
unsigned	 mta_dns_running(void);
void		 mta_dns_init(void);
void		 mta_dns_stop(void);
void		 mta_dns_set_server(const char *, uint16_t, unsigned);
struct buf;
void		 mta_dns_stats(struct buf *);

/* dsn.c: delivery status notifications */
enum mta_dsn_kind { MTA_DSN_FAILURE, MTA_DSN_DELAY, MTA_DSN_SUCCESS };
struct mta_env	*mta_dsn_new(const struct mta_env *, enum mta_dsn_kind,
		    const size_t *, size_t, struct mta_dsnreq **);
int		 mta_dsn_compose(struct mta_dsnreq *, struct buf *);
void		 mta_dsn_free(struct mta_dsnreq *);
enum policy_route mta_dsn_route(const char *, struct sockaddr_storage *);

/* mta.c: the module, its counters and the host name */
struct mta_stats {
	uint64_t	 received;
	uint64_t	 delivered;
	uint64_t	 deferred;
	uint64_t	 bounced;
	uint64_t	 expired;
	uint64_t	 dsn_sent;
	uint64_t	 corrupt;
	uint64_t	 rate_held;	/* backlogs a "rate" held back */
};
extern struct mta_stats mta_stats;
/* queue.c: delay= of every recipient delivered; spool.c: each fsync */
extern struct histogram mta_delay_hist;
const struct histogram *mta_spool_fsync_hist(void);
/* admin.c: delivery's TLS sessions, moved by smtpc on the MTA's loop */
extern struct tls_counts mta_tls_delivery;
/* spool.c: the messages committed by each batch (counts) */
const struct histogram *mta_spool_batch_hist(void);
const char	*mta_hostname(void);
int		 mta_shutting_down(void);

/* admin.c: the "queue" control command and the stats lines */
void		 mta_admin_register(void);

#endif
