/*
 * policy.h - the configuration snapshot and every decision made from it.
 * A snapshot is parsed once, never modified afterwards, and reference
 * counted: a session keeps the snapshot it started with across a reload.
 */
#ifndef MXB_POLICY_H
#define MXB_POLICY_H
#include <net/if.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "../common/addr.h"

#define POLICY_DEFAULT_PATH	"/etc/mxbridge/mxbridge.conf"
#define POLICY_DEFAULT_USER	"_mxbridge"	/* made by the package */

enum policy_dir { POLICY_DIR_IN = 0, POLICY_DIR_OUT = 1 };
enum policy_action { POLICY_PROXY = 0, POLICY_PASS, POLICY_DROP };
/* STARTTLS toward clients, per direction */
enum policy_starttls { POLICY_TLS_OFFER = 0, POLICY_TLS_REQUIRE, POLICY_TLS_STRIP };
/* TLS toward a next hop */
enum policy_uptls { POLICY_UPTLS_OPPORTUNISTIC = 0, POLICY_UPTLS_NONE,
	POLICY_UPTLS_STARTTLS, POLICY_UPTLS_SMTPS };
enum policy_verdict { POLICY_RELAY = 0, POLICY_REJECT, POLICY_DISCARD,
	POLICY_TEMPFAIL };
/* TLS of the live relay's upstream leg ("client-server tls") */
enum policy_cstls { POLICY_CSTLS_NONE = 0, POLICY_CSTLS_OPPORTUNISTIC,
	POLICY_CSTLS_REQUIRE, POLICY_CSTLS_VERIFY };
/* what delivery asks of a next hop's TLS ("tls-policy"), Postfix's levels */
enum policy_tlslevel { POLICY_TLSL_NONE = 0, POLICY_TLSL_MAY,
	POLICY_TLSL_ENCRYPT, POLICY_TLSL_VERIFY, POLICY_TLSL_DANE,
	POLICY_TLSL_DANE_ONLY };
/* "classifier": where new flows are classified (nfq/kernel.c) */
enum policy_classifier { POLICY_CLASSIFIER_KERNEL = 0,
	POLICY_CLASSIFIER_QUEUE };
/* "tls-policy trust-ad": whose AD bit (DNSSEC validated) DANE believes */
enum policy_trustad { POLICY_TRUSTAD_LOOPBACK = 0, POLICY_TRUSTAD_YES,
	POLICY_TRUSTAD_NO };
/* where the MTA sends a recipient */
enum policy_route { POLICY_ROUTE_ORIGINAL = 0, POLICY_ROUTE_RELAYHOST,
	POLICY_ROUTE_MX, POLICY_ROUTE_FALLBACK };

#define POLICY_MAXADDR	8
#define POLICY_MAXWORKERS 256	/* "workers N" upper bound */
#define POLICY_RATE_MAX	100000	/* "rate N per DURATION": N at most */

struct policy_port {
	char		 name[IF_NAMESIZE];
	enum policy_action action[2];	/* by enum policy_dir */
	int		 accept_to_box;
	int		 honour;		/* -1 unset, 0 ignore, 1 honour */
	int		 hide_box;		/* outgoing: -1 unset, 0, 1 */
};

struct policy_domain {
	char		*name;			/* lower case, no trailing dot */
	char		*server;		/* as written: hosts, space separated */
	/* every server address, resolved at load, each with its own port */
	struct sockaddr_storage addr[POLICY_MAXADDR];
	char		*host[POLICY_MAXADDR];	/* addr[i] as written: name or address */
	int		 naddr;
	uint16_t	 port;			/* of the first server statement */
	enum policy_uptls tls;
	char		*fallback;		/* NULL if none */
	struct sockaddr_storage fbaddr[POLICY_MAXADDR];
	int		 nfbaddr;
	uint16_t	 fbport;
	int		 deliver_via_server;	/* "use this domain's SMTP server" */
	int		 hide_box;
	int		 verify_recipients;
};

struct policy_relayhost {
	char		*host;			/* NULL: no relay host */
	uint16_t	 port;
	enum policy_uptls tls;
	char		*auth_file;
	char		*auth_user;		/* read from auth_file at load */
	char		*auth_pass;
	int		 auth_plaintext;	/* AUTH without TLS allowed */
	int		 verify;		/* certificate must verify */
	char		*ca_file;		/* NULL: the system's CAs */
};

/* one "tls-policy" entry: a destination domain's, a next hop's, or the
 * default (name NULL) */
struct policy_tlspol {
	char		*name;			/* lower case; ".d" subdomains */
	int		 host;			/* 1: a next-hop host name */
	enum policy_tlslevel level;
	int		 bounce;		/* on-failure bounce, else defer */
	char		*match;			/* verify: names the certificate
						   may carry, space separated;
						   NULL: the next hop's name */
};

/* "rate N per DURATION": at most n transactions started to one
 * destination in any window of per seconds; n 0: no limit */
struct policy_drate {
	unsigned	 n;
	unsigned	 per;			/* seconds */
	int		 set;			/* written ("rate none" too) */
};

/* "destination NAME { ... }": delivery shaping for one destination; a
 * field of 0 (a rate not set) takes the queue's value
 * (policy_dest_limits) */
struct policy_shape {
	char		*name;			/* lower case; ".d" subdomains */
	unsigned	 concurrency;
	unsigned	 msgs_per_conn;
	unsigned	 rcpts_per_msg;
	struct policy_drate rate;
};

/* "fallback-relay": where mail goes that its own route could not
 * deliver for "after" seconds (FortiMail's relay on delivery failure) */
struct policy_fallback {
	char		*host;			/* NULL: none */
	uint16_t	 port;
	unsigned	 after;			/* seconds since arrival */
};

/* what a milter that cannot be reached or answers badly stands for */
enum policy_mact { POLICY_MACT_TEMPFAIL = 0, POLICY_MACT_ACCEPT,
	POLICY_MACT_REJECT };
/* "milter NAME { ... }": one content filter (Sendmail's milter protocol) */
struct policy_milter {
	char		*name;
	char		*socket;		/* as written */
	struct sockaddr_storage addr;		/* inet: and inet6: */
	char		*path;			/* unix:, else NULL */
	unsigned	 t_connect;		/* seconds */
	unsigned	 t_command;
	unsigned	 t_content;
	int		 defact;		/* enum policy_mact */
};
/* "milters DIR [port NAME] NAME...|none": the milters of a direction's
 * sessions, in order, or of those arriving on one bridge port */
struct policy_milterset {
	enum policy_dir	 dir;
	char		 port[IF_NAMESIZE];	/* "" every port */
	size_t		*idx;			/* into policy.milters */
	size_t		 n;			/* 0: none */
};
struct policy_queue {
	unsigned	 retry_min;		/* seconds */
	unsigned	 retry_max;
	unsigned	 lifetime;
	unsigned	 warn;			/* delay warning after; 0 off */
	unsigned	 dsn_lifetime;
	unsigned	 dead_retention;
	uint64_t	 min_free;		/* bytes */
	int		 fsync;			/* 1: fsync before 250 */
	unsigned	 concurrency;		/* per destination */
	unsigned	 msgs_per_conn;		/* transactions per connection */
	unsigned	 rcpts_per_msg;		/* recipients per transaction */
	struct policy_drate rate;		/* per destination; n 0: none */
	unsigned	 slow_after;		/* failed tries to the slow
						   queue; 0: none */
	unsigned	 slow_retry;		/* its shortest retry, seconds */
	unsigned	 dns_timeout;		/* one DNS question, seconds */
	unsigned	 resolve_timeout;	/* one next-hop resolution */
	unsigned	 max_addresses;		/* next-hop addresses tried */
};

struct policy_limits {
	unsigned	 conn_per_client;
	unsigned	 conn_rate;		/* connections per client ... */
	unsigned	 conn_rate_window;	/* ... per this many seconds */
	unsigned	 client_prefix4;	/* a client: IPv4 /N (32) */
	unsigned	 client_prefix6;	/* a client: IPv6 /N (64) */
	unsigned	 sessions;		/* global cap; 0 from RLIMIT_NOFILE */
	unsigned	 msgs_per_session;
	unsigned	 rcpts;
	uint64_t	 size;
	unsigned	 errors;
	unsigned	 cmd_line;
	unsigned	 text_line;
	unsigned	 localpart;
	unsigned	 domain;
	unsigned	 t_cmd;			/* seconds */
	unsigned	 t_data;
	unsigned	 t_dot;
	unsigned	 t_connect;
	unsigned	 min_rate;		/* bytes/s during DATA; 0 off */
	unsigned	 hops;			/* Received: fields refused */
};

/* a "match ... action" rule; NULL / 0 fields match anything */
struct policy_rule {
	int		 line;
	char		*from;			/* address, @domain or domain */
	int		 from_null;		/* matches only <> */
	char		*to;
	int		 to_protected;		/* "to protected" */
	struct addr_net	 net;
	int		 has_net;
	int		 auth;			/* -1 any, 0 not authed, 1 authed */
	enum policy_verdict verdict;
	char		*message;		/* reply text, optional */
};

/* "honour|ignore client-server [from NET] [port NAME]" */
struct policy_honour {
	struct addr_net	 net;
	int		 has_net;
	char		 port[IF_NAMESIZE];	/* "" any */
	int		 honour;
};

/* "client-server match NET NAMES": the names a verified upstream in NET
 * must carry */
struct policy_csmatch {
	struct addr_net	 net;
	char		*names;			/* space separated */
};

struct policy {
	int		 refcnt;
	char		*path;
	char		*hostname;
	char		*spool;
	char		*pidfile;
	char		*control;
	char		*user;		/* "user": the daemon runs as it
					   after start (daemon/priv.c) */
	char		*control_group;	/* "group": may use the control
					   socket, or NULL: root only */
	long		 control_gid;	/* its gid, -1 without */
	unsigned	 queue_num;
	unsigned	 workers;		/* 0 = auto (online cores) */
	enum policy_classifier classifier;	/* kernel (default) or queue */
	uint64_t	 queue_buffer;		/* netlink receive buffer, bytes */
	uint16_t	 listen_port[2];	/* by enum policy_dir */
	int		 metrics;		/* "metrics listen": 1 */
	struct sockaddr_storage metrics_addr;	/* its address and port */
	struct addr_net	*metrics_allow;		/* "metrics allow": peers */
	size_t		 nmetrics_allow;	/* 0: any peer */
	int		 log_verbose;
	char		*tls_cert;
	char		*tls_key;
	enum policy_starttls starttls[2];
	unsigned	 shutdown_grace;	/* seconds sessions get on SIGTERM */

	struct policy_port *ports;
	size_t		 nports;
	enum policy_action default_action[2];
	struct policy_domain *domains;
	size_t		 ndomains;
	struct policy_relayhost relay;
	struct policy_tlspol *tlspol;		/* "tls-policy" domain/host */
	size_t		 ntlspol;
	struct policy_tlspol tlsdef;		/* "tls-policy default" */
	int		 tlsdef_set;
	char		*tls_ca_file;		/* verify: NULL, the system's */
	int		 tls_min_tls13;		/* "min-protocol TLSv1.3" */
	char		*tls_ciphers;		/* TLS 1.2 cipher list, or NULL */
	enum policy_trustad tls_trust_ad;	/* "tls-policy trust-ad" */
	struct policy_fallback fbrelay;
	struct policy_shape *shapes;		/* "destination" blocks */
	size_t		 nshapes;
	struct policy_queue queue;
	struct policy_milter *milters;		/* "milter" blocks */
	size_t		 nmilters;
	struct policy_milterset *miltersets;	/* "milters" lines */
	size_t		 nmiltersets;
	struct policy_limits limits;
	struct policy_rule *rules;
	size_t		 nrules;
	struct policy_honour *honours;
	size_t		 nhonours;
	int		 default_honour;
	enum policy_cstls cs_tls;		/* live relay's upstream TLS */
	char		*cs_match;		/* verify: names, or NULL: the
						   address dialled */
	char		*cs_ca_file;		/* verify: NULL, tls_ca_file's */
	struct policy_csmatch *csmatch;		/* per upstream network */
	size_t		 ncsmatch;
	int		 hide_box_out;		/* live relay from the client */
	struct addr_net	*bypass_client;
	size_t		 nbypass_client;
	struct addr_net	*bypass_server;
	size_t		 nbypass_server;
};

/* the answer to "what to do with this new flow" */
struct policy_class {
	enum policy_dir	 dir;
	enum policy_action action;
	const struct policy_domain *domain;	/* incoming: whose server */
	const char	*reason;		/* short, for logs and counters */
};

/* one client's connection-rate bucket, kept by the caller */
struct policy_rate {
	int		 used;			/* 0: new, full */
	uint64_t	 stamp;			/* ms of the last update */
	uint64_t	 credit;		/* window-ms per connection */
};

/* loading and the current snapshot */
struct policy	*policy_load(const char *path, char *err, size_t errlen);
struct policy	*policy_ref(struct policy *);
void		 policy_unref(struct policy *);
struct policy	*policy_current(void);		/* not referenced */
void		 policy_set_current(struct policy *);	/* takes the ref */
void		 policy_thread_set(struct policy *);	/* this thread's */

/* decisions */
int	 policy_classify(const struct policy *, const struct sockaddr *src,
	    const struct sockaddr *dst, const char *port,
	    struct policy_class *);
int	 policy_classify_to_box(const struct policy *, const char *port,
	    struct policy_class *);
const struct policy_domain *policy_domain_by_server(const struct policy *,
	    const struct sockaddr *);
const struct policy_domain *policy_domain_by_name(const struct policy *,
	    const char *domain);
int	 policy_honour_client_server(const struct policy *,
	    const struct sockaddr *client, const char *port);
enum policy_route policy_route_rcpt(const struct policy *, enum policy_dir,
	    const char *rcpt_domain, const struct sockaddr *orig_dst);
enum policy_verdict policy_check_rcpt(const struct policy *,
	    const struct sockaddr *client, enum policy_dir, const char *sender,
	    const char *rcpt, int authed, const char **message);
enum policy_verdict policy_check_rcpt_live(const struct policy *,
	    const struct sockaddr *client, const char *sender,
	    const char *rcpt, int authed, const char **message);
const struct policy_domain *policy_verify_rcpt(const struct policy *,
	    enum policy_dir, const char *rcpt);
/* policy_metrics_allowed - a peer may scrape ("metrics allow"; anyone
 * without the statement): 1 or 0 */
int	 policy_metrics_allowed(const struct policy *, const struct sockaddr *);
int	 policy_hide_box_outgoing(const struct policy *, const char *port);
int	 policy_conn_admit(const struct policy *, unsigned open,
	    struct policy_rate *, uint64_t now_ms, const char **why);

/* each enum's words in enum order, NULL ended (policy.c) */
extern const char *const policy_dir_names[], *const policy_action_names[],
	*const policy_starttls_names[], *const policy_uptls_names[],
	*const policy_verdict_names[], *const policy_cstls_names[],
	*const policy_route_names[], *const policy_tlslevel_names[],
	    *const policy_trustad_names[];
const char	*policy_name(const char *const *, int);	/* or "unknown" */
int		 policy_name_index(const char *const *, const char *);
const char	*policy_dir_name(enum policy_dir);
const char	*policy_action_name(enum policy_action);
const char	*policy_verdict_name(enum policy_verdict);
const char	*policy_route_name(enum policy_route);

/* added by policy/: helpers for the other modules */
const char	*policy_starttls_name(enum policy_starttls);
const char	*policy_uptls_name(enum policy_uptls);
const char	*policy_cstls_name(enum policy_cstls);
/* the names a verified live relay upstream at dst must carry: its
 * network's "client-server match", else the global "match"; NULL: the
 * certificate must name the address */
const char	*policy_cs_match(const struct policy *,
		    const struct sockaddr *dst);
/* the CA file of "client-server tls verify": its own, tls-policy's, or
 * NULL for the system's */
const char	*policy_cs_ca_file(const struct policy *);
const char	*policy_hostname(const struct policy *);
unsigned	 policy_workers(const struct policy *);
const struct policy_port *policy_port_by_name(const struct policy *,
	    const char *port);
int	 policy_rcpt_protected(const struct policy *, const char *rcpt);
const struct policy_tlspol *policy_tls_lookup(const struct policy *,
	    const char *domain, const char *host);
const struct policy_milterset *policy_milters(const struct policy *,
	    enum policy_dir, const char *port);
extern const char *const policy_mact_names[];
void	 policy_dest_limits(const struct policy *, const char *name,
	    struct policy_shape *);

#endif
