/*
 * relay.h - the upstream leg of the live relay, as smtpd.c sees it.
 * Internal to proxy/.  The relay connects to the server the client
 * dialled, reads its replies (strictly, through the shared reply parser)
 * and hands each one to the session in order; the session decides what
 * the client sees.  After relay_close() no callback runs again.
 */
#ifndef MXB_RELAY_H
#define MXB_RELAY_H
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <openssl/ssl.h>
#include <uv.h>

#include "../common/smtp.h"
#include "../common/tls.h"

enum relay_tls { RELAY_TLS_NONE = 0, RELAY_TLS_OPPORTUNISTIC,
	RELAY_TLS_REQUIRE };

/* what a sent command expects back */
enum relay_kind { RELAY_CMD = 0, RELAY_DOT };

struct relay_opts {
	uint64_t		 id;		/* session id, for logs */
	struct sockaddr_storage	 dst;
	struct sockaddr_storage	 src;	/* AF_UNSPEC, or bind here (hide
					   the box: IP_TRANSPARENT) */
	enum relay_tls		 tls;
	SSL_CTX			*ctx;		/* client context, or NULL */
	struct tls_corks	*corks;		/* the loop's (the worker's) */
	unsigned		 t_connect;	/* seconds, connect + greeting */
	unsigned		 t_cmd;		/* per reply */
	unsigned		 t_dot;		/* reply to the final dot */
};

struct relay_cb {
	/* the greeting (any code); only once */
	void	(*greeting)(void *arg, const struct smtp_reply *);
	/* the reply to the oldest command sent */
	void	(*reply)(void *arg, const struct smtp_reply *);
	/*
	 * the leg is dead: why for logs; rep is an unsolicited reply
	 * (421) the server sent, or NULL.  The owner calls relay_close().
	 */
	void	(*fail)(void *arg, const char *why, const struct smtp_reply *);
	/* the upstream write backlog drained after relay_busy() said 1 */
	void	(*drained)(void *arg);
};

struct relay;

struct relay	*relay_open(uv_loop_t *, const struct relay_opts *,
		    const struct relay_cb *, void *arg);
/*
 * relay_helo - send the client's EHLO/HELO line.  The first time, the
 * relay negotiates STARTTLS upstream first (per opts.tls) with an EHLO of
 * its own using the client's name; the session gets one reply either way.
 */
int		 relay_helo(struct relay *, int ehlo, const char *name,
		    const char *line, size_t len);
/* one command line (no CRLF) that expects one reply */
int		 relay_send(struct relay *, const char *line, size_t len,
		    enum relay_kind);
/* raw bytes (DATA content, already stuffed) that expect no reply */
int		 relay_writev(struct relay *, const uv_buf_t *, unsigned);
/* the last content (may be none, at most RELAY_MAXBUFS pieces) and the
 * terminator line, in one write; expects the reply to the dot */
#define RELAY_MAXBUFS	8
int		 relay_dot(struct relay *, const uv_buf_t *, unsigned);
/* 1 when the write backlog is high; cb->drained tells when it is low */
int		 relay_busy(struct relay *);
/* upstream TLS: "TLSv1.3/..." or NULL */
const char	*relay_tls_info(const struct relay *);
/* 1 if the upstream offered AUTH before any TLS of ours */
int		 relay_auth_in_clear(const struct relay *);
const char	*relay_peer(const struct relay *);
void		 relay_close(struct relay *);

#endif
