/*
 * tls.h - OpenSSL 3 over memory BIOs, driven by a libuv stream that the
 * caller keeps reading.  Usable as server (STARTTLS toward clients) and as
 * client (STARTTLS or SMTPS toward a next hop).
 *
 * The caller owns the stream and its read callback; the tls_conn only
 * encrypts, decrypts and writes:
 *
 *	ctx = tls_ctx_server(cert, key, err, sizeof(err));   // once, at load
 *	t = tls_conn_new(ctx, stream, TLS_SERVER, NULL);
 *	tls_conn_start(t);		// a client sends its hello here
 *	in the read callback:
 *		st = tls_conn_feed(t, bytes, n, &plain);
 *		TLS_FAILED: give up (tls_conn_error(t) says why)
 *		TLS_HANDSHAKE: nothing to do yet
 *		TLS_OPEN: plain holds the decrypted bytes (maybe none);
 *			  tls_conn_info(t) is "TLSv1.3/TLS_AES_256_GCM_SHA384"
 *		TLS_CLOSED: the peer sent close_notify
 *	tls_stream_write(stream, t, data, n, cb, arg);  // t NULL: plain write
 *	tls_conn_close(t);	// optional close_notify, then close the stream
 *	tls_conn_free(t);	// in or before the stream's close callback
 *
 * Writes go out at once when the stream has nothing queued; what is left
 * is copied and queued on the stream with uv_write(); each write
 * request frees itself, so a tls_conn can go away with writes still
 * queued (libuv cancels them when the stream is closed).  The stream's
 * write queue size (uv_stream_get_write_queue_size) is the backlog for
 * flow control; the optional write callback tells when it shrinks.
 * Nothing here calls back into the caller synchronously, so feeding and
 * writing are safe at any point of a session.
 */
#ifndef MXB_TLS_H
#define MXB_TLS_H
#include <stddef.h>
#include <stdint.h>
#include <openssl/ssl.h>
#include <uv.h>

#include "buf.h"

enum tls_role { TLS_SERVER = 0, TLS_CLIENT };

enum tls_state {
	TLS_FAILED = -1,
	TLS_HANDSHAKE = 0,	/* negotiating */
	TLS_OPEN,		/* handshake complete, data flows */
	TLS_CLOSED		/* the peer sent close_notify */
};

/* client verification of the next hop's certificate */
enum tls_verify {
	TLS_VERIFY_NONE = 0,	/* opportunistic: encrypt, accept any cert */
	TLS_VERIFY_PEER		/* chain to the system CAs and the SNI name */
};

struct tls_conn;

/*
 * What a peer may make us read and check, on every context: a chain
 * deeper than TLS_VERIFY_DEPTH certificates below the peer's fails to
 * verify ("certificate chain too long", as Postfix's
 * smtp_tls_scert_verifydepth 9), and a certificate list (the handshake
 * message) over TLS_MAX_CERT_LIST bytes fails the handshake before it is
 * parsed ("certificate chain too big"), verifying or not.  Real chains
 * are a few KiB; OpenSSL's own cap is 100 KiB.
 */
#define TLS_VERIFY_DEPTH	9
#define TLS_MAX_CERT_LIST	(64 * 1024)

/*
 * Contexts are built once (at start or reload) and shared by every
 * connection; free them with SSL_CTX_free() once no tls_conn uses them
 * (each tls_conn holds a reference, so freeing early is safe).
 * cert is a PEM chain file, key a PEM key file.  NULL and a reason in
 * err on failure.
 */
SSL_CTX		*tls_ctx_server(const char *cert, const char *key, char *err,
		    size_t errlen);
/* cert/key may be NULL (no client certificate) */
SSL_CTX		*tls_ctx_client(enum tls_verify, const char *cert,
		    const char *key, char *err, size_t errlen);
/*
 * tls_ctx_client_ca - a client context that verifies the peer
 * (TLS_VERIFY_PEER) against the CAs of ca_file (PEM), or the system's
 * when ca_file is NULL.  The name is checked per connection: the sni of
 * tls_conn_new, or an address given to tls_conn_expect_ip.
 */
SSL_CTX		*tls_ctx_client_ca(const char *ca_file, char *err,
		    size_t errlen);
/*
 * tls_ctx_client_verify - the verifying client context of ca_file (NULL:
 * the system's CAs), shared by every thread: made once per CA file, a
 * few kept (a reload naming another file makes another), each caller
 * given its own reference to drop with SSL_CTX_free().  The MTA's
 * "verify" level and the live relay's "client-server tls verify" both
 * take theirs here; the names are checked per connection
 * (tls_conn_expect_hosts, tls_conn_expect_ip).  NULL and a reason in err.
 */
SSL_CTX		*tls_ctx_client_verify(const char *ca_file, char *err,
		    size_t errlen);

/*
 * tls_ctx_client_shared - the one unverified client context (STARTTLS
 * toward a server nobody vouched for: the one a client dialled, a callout
 * target, an MX), shared by every SMTP client in the process on every
 * thread; made at first use, kept for the process's life, never to be
 * freed by a caller.  NULL after logging why it could not be made.
 */
SSL_CTX		*tls_ctx_client_shared(void);
/*
 * tls_ctx_client_dane - the one client context with OpenSSL's DANE
 * support on (SSL_CTX_dane_enable), no CA store: a connection given
 * TLSA records by tls_conn_dane is checked against them only.  Shared
 * and kept as tls_ctx_client_shared's; NULL after logging why.
 */
SSL_CTX		*tls_ctx_client_dane(void);
/* one TLSA record (RFC 6698): the caller's memory */
struct tls_tlsa {
	uint8_t		 usage, selector, mtype;
	const uint8_t	*data;
	size_t		 len;
};
/* 0 if OpenSSL takes the cipher list (TLS 1.2 and lower), else -1 */
int		 tls_cipher_list_valid(const char *);

/* sni: server name for a client (also the name verified), or NULL */
struct tls_conn	*tls_conn_new(SSL_CTX *, uv_stream_t *, enum tls_role,
		    const char *sni);
/* a client without a name to verify checks this address instead: 0/-1 */
int		 tls_conn_expect_ip(struct tls_conn *, const char *ip);
/* the certificate must name one of these host names (space separated)
 * instead of the sni: 0/-1 */
int		 tls_conn_expect_hosts(struct tls_conn *, const char *names);
/*
 * tls_conn_dane - a client on a tls_ctx_client_dane context checks the
 * peer against these TLSA records (RFC 7672): base is the TLSA base
 * domain (the next hop's name, also the SNI unless one was set), names
 * (space separated, may be NULL) other names a DANE-TA(2) chain may
 * name; DANE-EE(3) checks no name.  The handshake fails unless a record
 * matches.  The number of records OpenSSL could use, or -1.
 */
int		 tls_conn_dane(struct tls_conn *, const char *base,
		    const char *names, const struct tls_tlsa *, size_t);
/* after a handshake that DANE authenticated: "U.S.M depth=D" of the
 * record that matched, 0; else -1 */
int		 tls_conn_dane_info(const struct tls_conn *, char *, size_t);
/* a client sends its hello; a server does nothing.  0, or -1 (error) */
int		 tls_conn_start(struct tls_conn *);
/* ciphertext read from the stream in; plaintext appended to plain */
enum tls_state	 tls_conn_feed(struct tls_conn *, const void *, size_t,
		    struct buf *plain);
enum tls_state	 tls_conn_state(const struct tls_conn *);
/* "PROTOCOL/CIPHER" once open, else NULL */
const char	*tls_conn_info(const struct tls_conn *);
/* the last OpenSSL or libuv error, for logs; "" if none */
const char	*tls_conn_error(const struct tls_conn *);
/* 1 if the peer's certificate verified (TLS_VERIFY_PEER), else 0 */
int		 tls_conn_verified(const struct tls_conn *);
/* send close_notify; the caller then closes the stream */
void		 tls_conn_close(struct tls_conn *);
void		 tls_conn_free(struct tls_conn *);
/* the SSL object, for what this wrapper does not cover */
SSL		*tls_conn_ssl(struct tls_conn *);

/*
 * tls_stream_write - write n bytes to the stream, encrypted through t
 * when t is not NULL.  0, or a negative libuv error (or -1 for a TLS
 * error) after which the caller should close the stream.  cb (may be
 * NULL) is called once, from the loop, when the bytes have left (status
 * 0) or were dropped (status < 0, e.g. UV_ECANCELED on close) -- never if
 * the call fails or n is 0.  As with any libuv write, it runs before the
 * stream's close callback, so an owner freed there is still alive.
 */
typedef void	(*tls_write_cb)(void *arg, int status);
int		 tls_stream_write(uv_stream_t *, struct tls_conn *,
		    const void *, size_t, tls_write_cb, void *arg);

/*
 * tls_stream_send - the hot-path write: nbufs pieces, written together
 * (one writev, or one run of TLS records).  When nothing is queued on the
 * stream the bytes go out at once from the caller's memory; only what the
 * kernel does not take is copied and queued.  1: everything left at once
 * and cb will never be called; 0: bytes were queued and cb is called as
 * with tls_stream_write (a write error, too, is reported that way);
 * negative: as tls_stream_write.
 */
int		 tls_stream_send(uv_stream_t *, struct tls_conn *,
		    const uv_buf_t *, unsigned, tls_write_cb, void *arg);

/*
 * Corked output: short writes (replies, commands) collected per stream
 * while an input is handled, so that the replies to a pipelined batch
 * go in one write (and one packet).  The corked streams of a loop are on
 * that loop's list (struct tls_corks, one per worker loop, made with the
 * loop and passed explicitly).  The owner of the input calls
 * tls_cork_turn() when it is done with it; whatever else is corked (by
 * timers, other modules) is written when the loop has run this turn's
 * callbacks, before it polls again.
 *
 *	k = tls_corks_new(loop);		// once per loop
 *	tls_cork_init(&c, k, stream, cb, arg);	// cb as for tls_stream_send
 *	tls_cork_add(&c, t, bufs, n);		// t: the TLS the bytes are for
 *	tls_cork_flush(&c);			// now: before a shutdown, a
 *						// close or a direct write
 *	tls_cork_turn(k);			// every corked stream, now
 *	tls_cork_finish(&c);			// the last bytes and the FIN
 *	tls_cork_free(&c);			// drops what is left
 *
 * Bytes added for another t than the pending ones flush those first, so
 * a reply added before STARTTLS never goes out encrypted.  A write that
 * fails in tls_cork_turn() reaches cb with the error, from there: call
 * it where the owner may be closed (the end of a read callback).
 */
struct tls_corks;

struct tls_cork {
	struct buf		 b;
	struct tls_corks	*k;		/* the list of s's loop */
	uv_stream_t		*s;
	struct tls_conn		*t;		/* of the bytes in b */
	tls_write_cb		 cb;
	void			*arg;
	struct tls_cork		*next, **prevp;	/* on the turn's list */
};

struct tls_corks *tls_corks_new(uv_loop_t *);
/* free k once its loop closed its handles (the loop is done): 0, or -1
 * and k is left alone */
int		 tls_corks_free(struct tls_corks *);
void		 tls_cork_init(struct tls_cork *, struct tls_corks *,
		    uv_stream_t *, tls_write_cb, void *arg);
int		 tls_cork_add(struct tls_cork *, struct tls_conn *,
		    const uv_buf_t *, unsigned);
/* as tls_stream_send: 1 all sent (or nothing to send), 0 queued, < 0 */
int		 tls_cork_flush(struct tls_cork *);
/* 1: the corked bytes and the FIN left in one segment (plain text, an
 * idle stream); 0: nothing done, flush and shut down as usual */
int		 tls_cork_finish(struct tls_cork *);
void		 tls_cork_turn(struct tls_corks *);
void		 tls_cork_free(struct tls_cork *);

#endif
