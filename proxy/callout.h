/*
 * callout.h - recipient verification (verify-recipients), as smtpd.c
 * sees it.  Internal to proxy/.  A callout is a short SMTP conversation
 * with a protected server over relay.c's upstream client: EHLO, MAIL
 * FROM:<>, RCPT TO:<recipient>, QUIT.  Its answers are cached for a while;
 * temporary ones are not.  After callout_cancel() no callback runs.
 */
#ifndef MXB_CALLOUT_H
#define MXB_CALLOUT_H
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <openssl/ssl.h>
#include <uv.h>

#include "../common/smtpc.h"

#define CALLOUT_TIMEOUT		10	/* seconds: connect, each reply */
#define CALLOUT_LINE		256	/* reply line kept, NUL included */

struct callout_opts {
	uint64_t		 id;		/* session id, for logs */
	struct sockaddr_storage	 dst;		/* the protected server */
	const char		*helo;		/* our name */
	enum smtpc_tls		 tls;
	SSL_CTX			*ctx;		/* client context, or NULL */
	struct tls_corks	*corks;		/* the loop's (the worker's) */
};

/*
 * the answer: code is the server's reply to RCPT and line its first line
 * ("550 5.1.1 ..."), or code 0 when there was none (line says why)
 */
typedef void	(*callout_cb)(void *arg, int code, const char *line);

struct callout;

/* the kept answers: one cache per worker, used by that worker only */
struct callout_cache;

struct callout_cache *callout_cache_new(void);
void		 callout_cache_free(struct callout_cache *);
/* callout_cached - 1 and the kept answer if dst answered for rcpt lately */
int		 callout_cached(struct callout_cache *, const struct sockaddr *dst,
		    const char *rcpt, int *code, char *line, size_t len);
/* callout_start - ask dst about rcpt, the answer kept in cache; cb runs
 * once, never from here */
struct callout	*callout_start(uv_loop_t *, struct callout_cache *,
		    const struct callout_opts *, const char *rcpt, callout_cb,
		    void *arg);
void		 callout_cancel(struct callout *);

#endif
