/*
 * tls.c - the TLS wrapper: SSL contexts for the server and client roles,
 * and per-connection engines over a pair of memory BIOs.  The network
 * side is a libuv stream read by the caller: ciphertext is fed in,
 * plaintext comes out into a buf, and whatever the engine produces is
 * queued on the stream with self-freeing write requests.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "tls.h"
#include "xmalloc.h"

struct tls_conn {
	SSL		*ssl;
	BIO		*rbio;		/* network -> engine */
	BIO		*wbio;		/* engine -> network */
	uv_stream_t	*stream;
	enum tls_role	 role;
	enum tls_state	 state;
	char		 info[128];
	char		 err[160];
};

struct tls_wreq {
	uv_write_t	 req;
	tls_write_cb	 cb;
	void		*arg;
	char		 data[];
};

static void
tls_seterr(char *err, size_t errlen, const char *what)
{
	unsigned long e = ERR_get_error();
	char ebuf[120];

	if (e != 0) {
		ERR_error_string_n(e, ebuf, sizeof(ebuf));
		snprintf(err, errlen, "%s: %s", what, ebuf);
	} else
		snprintf(err, errlen, "%s", what);
	ERR_clear_error();
}

/* ctx_common - the options every context shares */
static void
ctx_common(SSL_CTX *ctx)
{
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION |
	    SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
}

SSL_CTX *
tls_ctx_server(const char *cert, const char *key, char *err, size_t errlen)
{
	static const unsigned char sid[] = "mxbridge";
	SSL_CTX *ctx;

	if ((ctx = SSL_CTX_new(TLS_server_method())) == NULL) {
		tls_seterr(err, errlen, "SSL_CTX_new");
		return NULL;
	}
	ctx_common(ctx);
	SSL_CTX_set_session_id_context(ctx, sid, sizeof(sid) - 1);
	if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
		tls_seterr(err, errlen, cert);
		goto fail;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
		tls_seterr(err, errlen, key);
		goto fail;
	}
	if (SSL_CTX_check_private_key(ctx) != 1) {
		tls_seterr(err, errlen, "key does not match certificate");
		goto fail;
	}
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

SSL_CTX *
tls_ctx_client(enum tls_verify verify, const char *cert, const char *key,
    char *err, size_t errlen)
{
	SSL_CTX *ctx;

	if ((ctx = SSL_CTX_new(TLS_client_method())) == NULL) {
		tls_seterr(err, errlen, "SSL_CTX_new");
		return NULL;
	}
	ctx_common(ctx);
	if (verify == TLS_VERIFY_PEER) {
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
		if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
			tls_seterr(err, errlen, "CA paths");
			goto fail;
		}
	} else
		SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	if (cert != NULL && (SSL_CTX_use_certificate_chain_file(ctx, cert)
	    != 1 || SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM)
	    != 1)) {
		tls_seterr(err, errlen, cert);
		goto fail;
	}
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

struct tls_conn *
tls_conn_new(SSL_CTX *ctx, uv_stream_t *stream, enum tls_role role,
    const char *sni)
{
	struct tls_conn *t;
	BIO *rbio = NULL, *wbio = NULL;

	t = xcalloc(1, sizeof(*t));
	t->stream = stream;
	t->role = role;
	t->state = TLS_HANDSHAKE;
	ERR_clear_error();
	if ((t->ssl = SSL_new(ctx)) == NULL ||
	    (rbio = BIO_new(BIO_s_mem())) == NULL ||
	    (wbio = BIO_new(BIO_s_mem())) == NULL)
		goto fail;
	BIO_set_mem_eof_return(rbio, -1);
	SSL_set_bio(t->ssl, rbio, wbio);
	t->rbio = rbio;
	t->wbio = wbio;
	if (role == TLS_SERVER)
		SSL_set_accept_state(t->ssl);
	else {
		SSL_set_connect_state(t->ssl);
		if (sni != NULL && (SSL_set_tlsext_host_name(t->ssl, sni) != 1
		    || SSL_set1_host(t->ssl, sni) != 1))
			goto fail;
	}
	return t;
fail:
	/* a failed engine: every later call reports TLS_FAILED */
	tls_seterr(t->err, sizeof(t->err), "SSL_new");
	if (t->rbio == NULL) {
		BIO_free(rbio);
		BIO_free(wbio);
	}
	t->state = TLS_FAILED;
	return t;
}

static void
tls_write_done(uv_write_t *req, int status)
{
	struct tls_wreq *w = req->data;

	if (w->cb != NULL)
		w->cb(w->arg, status);
	free(w);
}

/* wreq_new - a self-freeing write request with room for n bytes */
static struct tls_wreq *
wreq_new(size_t n, tls_write_cb cb, void *arg)
{
	struct tls_wreq *w;

	w = xmalloc(sizeof(*w) + n);
	w->req.data = w;
	w->cb = cb;
	w->arg = arg;
	return w;
}

static int
wreq_submit(uv_stream_t *s, struct tls_wreq *w, size_t n)
{
	uv_buf_t b;
	int rc;

	b = uv_buf_init(w->data, (unsigned int)n);
	if ((rc = uv_write(&w->req, s, &b, 1, tls_write_done)) < 0)
		free(w);
	return rc;
}

/* tls_flush - send whatever the engine has produced, cb on it */
static int
tls_flush(struct tls_conn *t, tls_write_cb cb, void *arg)
{
	struct tls_wreq *w;
	size_t n;
	int rc;

	if ((n = BIO_ctrl_pending(t->wbio)) == 0)
		return 0;
	w = wreq_new(n, cb, arg);
	if (BIO_read(t->wbio, w->data, (int)n) != (int)n) {
		free(w);
		snprintf(t->err, sizeof(t->err), "BIO_read short");
		return -1;
	}
	if ((rc = wreq_submit(t->stream, w, n)) < 0)
		snprintf(t->err, sizeof(t->err), "write: %s", uv_strerror(rc));
	return rc;
}

static enum tls_state
tls_fail(struct tls_conn *t, const char *what)
{
	if (t->err[0] == '\0')
		tls_seterr(t->err, sizeof(t->err), what);
	else
		ERR_clear_error();
	t->state = TLS_FAILED;
	return TLS_FAILED;
}

int
tls_conn_start(struct tls_conn *t)
{
	int rc;

	if (t->state == TLS_FAILED)
		return -1;
	if (t->role == TLS_SERVER)
		return 0;
	ERR_clear_error();
	rc = SSL_do_handshake(t->ssl);
	if (rc <= 0 && SSL_get_error(t->ssl, rc) != SSL_ERROR_WANT_READ) {
		tls_fail(t, "handshake");
		return -1;
	}
	if (tls_flush(t, NULL, NULL) != 0) {
		t->state = TLS_FAILED;
		return -1;
	}
	return 0;
}

/* tls_handshake - advance the handshake; the new state */
static enum tls_state
tls_handshake(struct tls_conn *t)
{
	int rc, e;

	rc = SSL_do_handshake(t->ssl);
	if (rc == 1) {
		t->state = TLS_OPEN;
		snprintf(t->info, sizeof(t->info), "%s/%s",
		    SSL_get_version(t->ssl), SSL_get_cipher_name(t->ssl));
		return TLS_OPEN;
	}
	e = SSL_get_error(t->ssl, rc);
	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
		return TLS_HANDSHAKE;
	if (SSL_get_verify_result(t->ssl) != X509_V_OK)
		snprintf(t->err, sizeof(t->err), "certificate: %s",
		    X509_verify_cert_error_string(
		    SSL_get_verify_result(t->ssl)));
	return tls_fail(t, "handshake");
}

/* tls_read - decrypt everything available into plain */
static enum tls_state
tls_read(struct tls_conn *t, struct buf *plain)
{
	char tmp[16384];
	int rc, e;

	for (;;) {
		rc = SSL_read(t->ssl, tmp, sizeof(tmp));
		if (rc > 0) {
			buf_append(plain, tmp, (size_t)rc);
			continue;
		}
		e = SSL_get_error(t->ssl, rc);
		if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
			return t->state;
		if (e == SSL_ERROR_ZERO_RETURN) {
			t->state = TLS_CLOSED;
			return TLS_CLOSED;
		}
		return tls_fail(t, "read");
	}
}

enum tls_state
tls_conn_feed(struct tls_conn *t, const void *data, size_t n,
    struct buf *plain)
{
	if (t->state == TLS_FAILED || t->state == TLS_CLOSED)
		return t->state;
	ERR_clear_error();
	if (n > 0 && BIO_write(t->rbio, data, (int)n) != (int)n)
		return tls_fail(t, "BIO_write");
	if (t->state == TLS_HANDSHAKE)
		tls_handshake(t);
	if (t->state == TLS_OPEN)
		tls_read(t, plain);
	if (tls_flush(t, NULL, NULL) != 0)
		t->state = TLS_FAILED;
	return t->state;
}

enum tls_state
tls_conn_state(const struct tls_conn *t)
{
	return t->state;
}

const char *
tls_conn_info(const struct tls_conn *t)
{
	return t->state == TLS_OPEN || t->state == TLS_CLOSED ? t->info :
	    NULL;
}

const char *
tls_conn_error(const struct tls_conn *t)
{
	return t->err;
}

int
tls_conn_verified(const struct tls_conn *t)
{
	return t->ssl != NULL && t->state == TLS_OPEN &&
	    SSL_get_verify_mode(t->ssl) != SSL_VERIFY_NONE &&
	    SSL_get_verify_result(t->ssl) == X509_V_OK;
}

void
tls_conn_close(struct tls_conn *t)
{
	if (t->state != TLS_OPEN)
		return;
	ERR_clear_error();
	SSL_shutdown(t->ssl);
	tls_flush(t, NULL, NULL);
	ERR_clear_error();
}

void
tls_conn_free(struct tls_conn *t)
{
	if (t == NULL)
		return;
	SSL_free(t->ssl);	/* frees both BIOs */
	free(t);
}

SSL *
tls_conn_ssl(struct tls_conn *t)
{
	return t->ssl;
}

int
tls_stream_write(uv_stream_t *s, struct tls_conn *t, const void *p,
    size_t n, tls_write_cb cb, void *arg)
{
	struct tls_wreq *w;

	if (n == 0)
		return 0;
	if (t == NULL) {
		w = wreq_new(n, cb, arg);
		memcpy(w->data, p, n);
		return wreq_submit(s, w, n);
	}
	if (t->state != TLS_OPEN)
		return -1;
	ERR_clear_error();
	if (SSL_write(t->ssl, p, (int)n) != (int)n) {
		tls_fail(t, "write");
		return -1;
	}
	return tls_flush(t, cb, arg);
}
