/*
 * smtpc.h - the daemon's one SMTP client: the live relay's upstream leg,
 * the recipient-verification callout and the MTA's delivery all talk to
 * servers through it.  It connects (marked, optionally bound
 * transparently to the client's address), reads the greeting, negotiates
 * STARTTLS (opportunistic with the plain-text fallback on a new
 * connection, or required; or TLS from the first byte, "smtps"), and
 * hands replies to its owner strictly in the order of the commands sent,
 * each with its deadline.
 *
 * Two ways to start a session:
 *  - relay mode (opts.helo NULL): the owner gets the greeting and sends
 *    the client's own EHLO/HELO with smtpc_helo(); the STARTTLS detour
 *    happens inside it, and the owner sees one reply.
 *  - own mode (opts.helo set): the client greets the server itself (EHLO,
 *    HELO if EHLO is refused), STARTTLS, EHLO again inside TLS, AUTH
 *    PLAIN or LOGIN when credentials are given, and calls cb->ready()
 *    with the server's capabilities.
 * After smtpc_close() no callback runs again.
 */
#ifndef MXB_SMTPC_H
#define MXB_SMTPC_H
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <openssl/ssl.h>
#include <uv.h>

#include "smtp.h"
#include "tls.h"
#include "tls_count.h"

enum smtpc_tls { SMTPC_TLS_NONE = 0, SMTPC_TLS_OPPORTUNISTIC,
	SMTPC_TLS_REQUIRE, SMTPC_TLS_SMTPS };

/* what a sent command expects back */
enum smtpc_kind { SMTPC_CMD = 0, SMTPC_DOT };

/* what failed, for an owner that words it (delivery's status codes) */
enum smtpc_err {
	SMTPC_E_CONNECT = 0,	/* socket, connect, connect timeout */
	SMTPC_E_REFUSED,	/* greeting or HELO not 2xx (own mode) */
	SMTPC_E_TLS,		/* STARTTLS missing, refused, or failed */
	SMTPC_E_AUTH,		/* AUTH refused, or not sent (own mode) */
	SMTPC_E_LOST,		/* closed, write error, reply timeout, 421 */
	SMTPC_E_PROTO		/* a malformed or unsolicited reply */
};

struct smtpc_error {
	enum smtpc_err		 err;
	const char		*why;	/* short, for logs */
	const struct smtp_reply	*rep;	/* the server's, or NULL */
	int			 uverr;	/* a libuv error, or 0 */
};

struct smtpc_opts {
	uint64_t		 id;		/* session or connection id */
	const char		*logname;	/* "session" (default), "conn" */
	const char		*peername;	/* for logs; NULL: the address */
	struct sockaddr_storage	 dst;
	struct sockaddr_storage	 src;	/* AF_UNSPEC, or bind here (hide
					   the box: IP_TRANSPARENT) */
	int			 src_soft;	/* a failed bind is logged and
						   the box's address used */
	enum smtpc_tls		 tls;
	SSL_CTX			*ctx;		/* client context, or NULL */
	const char		*sni;		/* server name, or NULL */
	const char		*expect_ip;	/* the certificate must name
						   this address, or NULL */
	const char		*match;		/* ... or one of these names
						   (space separated), or NULL:
						   the sni */
	const struct tls_tlsa	*dane;		/* DANE: check these TLSA
						   records (ctx: a DANE one,
						   sni: the base domain) */
	size_t			 ndane;
	const char		*dane_names;	/* other names a DANE-TA
						   chain may carry, or NULL */
	int			 min_tls13;	/* refuse TLS 1.2 */
	const char		*ciphers;	/* TLS 1.2 cipher list, or
						   NULL: OpenSSL's */
	struct tls_corks	*corks;		/* the loop's */
	struct tls_counts	*tls_counts;	/* a handshake done counted
						   here (this loop's), or NULL */
	size_t			 maxline;	/* reply line; 0: 512 */
	unsigned		 t_connect;	/* seconds, connect + greeting */
	unsigned		 t_cmd;		/* per reply */
	unsigned		 t_dot;		/* reply to the final dot */
	/* own mode */
	const char		*helo;		/* our name: own mode */
	const char		*auth_user;	/* AUTH with these, or NULL */
	const char		*auth_pass;
	int			 auth_plaintext; /* AUTH without TLS allowed */
	int			 auth_verified;	/* AUTH only with a verified
						   certificate */
};

struct smtpc_cb {
	/* relay mode: the greeting (any code); only once */
	void	(*greeting)(void *arg, const struct smtp_reply *);
	/* own mode: greeted, TLS and AUTH done; caps are the server's */
	void	(*ready)(void *arg, const struct smtp_ehlo *caps);
	/* the reply to the oldest command sent */
	void	(*reply)(void *arg, const struct smtp_reply *);
	/* the leg is dead; the owner calls smtpc_close() */
	void	(*fail)(void *arg, const struct smtpc_error *);
	/* the write backlog drained after smtpc_busy() said 1 */
	void	(*drained)(void *arg);
};

struct smtpc;

struct smtpc	*smtpc_open(uv_loop_t *, const struct smtpc_opts *,
		    const struct smtpc_cb *, void *arg);
/*
 * smtpc_helo - relay mode: send the client's EHLO/HELO line.  The first
 * time, STARTTLS is negotiated first (per opts.tls) with an EHLO of the
 * client's name; the owner gets one reply either way.
 */
int		 smtpc_helo(struct smtpc *, int ehlo, const char *name,
		    const char *line, size_t len);
/* one command line (no CRLF) that expects one reply; corked until the
 * loop turns, so commands sent together leave in one write */
int		 smtpc_send(struct smtpc *, const char *line, size_t len,
		    enum smtpc_kind);
/* raw bytes (DATA content, already stuffed) that expect no reply */
int		 smtpc_writev(struct smtpc *, const uv_buf_t *, unsigned);
/* the last content (may be none, at most SMTPC_MAXBUFS pieces) and the
 * terminator line, in one write; expects the reply to the dot */
#define SMTPC_MAXBUFS	8
int		 smtpc_dot(struct smtpc *, const uv_buf_t *, unsigned);
/* 1 when the write backlog is high; cb->drained tells when it is low */
int		 smtpc_busy(struct smtpc *);
/* TLS: "TLSv1.3/..." or NULL */
const char	*smtpc_tls_info(const struct smtpc *);
/* 1 when TLS is on and the server's certificate verified (a verifying
 * context, and the name or address checked) */
int		 smtpc_tls_verified(const struct smtpc *);
/* DANE authenticated the server: "U.S.M depth=D" of the record that
 * matched into buf, 0; else -1 */
int		 smtpc_tls_dane(const struct smtpc *, char *, size_t);
/* 1 if the server offered AUTH before any TLS of ours */
int		 smtpc_auth_in_clear(const struct smtpc *);
const char	*smtpc_peer(const struct smtpc *);
/* no more callbacks; QUIT if nothing is awaited, then close */
void		 smtpc_close(struct smtpc *);

#endif
