/*
 * tls.c - the TLS wrapper: SSL contexts for the server and client roles,
 * and per-connection engines over a pair of memory BIOs.  The network
 * side is a libuv stream read by the caller: ciphertext is fed in,
 * plaintext comes out into a buf, and whatever the engine produces is
 * queued on the stream with self-freeing write requests.  A client may
 * check its peer against TLSA records instead of CAs (tls_conn_dane):
 * OpenSSL's own DANE matching, on a context of its own.
 */
#include <sys/socket.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "log.h"
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
	/* a hostile peer's chain: bounded work and memory (tls.h) */
	SSL_CTX_set_verify_depth(ctx, TLS_VERIFY_DEPTH);
	SSL_CTX_set_max_cert_list(ctx, TLS_MAX_CERT_LIST);
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

/* shared: tls_ctx_client_shared's context, made under its mutex */
static pthread_mutex_t	 shared_client_mtx = PTHREAD_MUTEX_INITIALIZER;
static SSL_CTX		*shared_client;

SSL_CTX *
tls_ctx_client_shared(void)
{
	SSL_CTX *ctx;
	char err[256];

	pthread_mutex_lock(&shared_client_mtx);
	if (shared_client == NULL &&
	    (shared_client = tls_ctx_client(TLS_VERIFY_NONE, NULL, NULL, err,
	    sizeof(err))) == NULL)
		log_warnx("tls: client context: %s", err);
	ctx = shared_client;
	pthread_mutex_unlock(&shared_client_mtx);
	return ctx;
}

/* dane_client: tls_ctx_client_dane's context, made under its mutex */
static pthread_mutex_t	 dane_client_mtx = PTHREAD_MUTEX_INITIALIZER;
static SSL_CTX		*dane_client;

SSL_CTX *
tls_ctx_client_dane(void)
{
	SSL_CTX *ctx;
	char err[256];

	pthread_mutex_lock(&dane_client_mtx);
	if (dane_client == NULL) {
		/* no CA store: PKIX usages are not DANE for SMTP (RFC
		 * 7672 3.1.3), so nothing may vouch but the records */
		if ((dane_client = tls_ctx_client(TLS_VERIFY_NONE, NULL,
		    NULL, err, sizeof(err))) == NULL)
			log_warnx("tls: DANE client context: %s", err);
		else if (SSL_CTX_dane_enable(dane_client) <= 0) {
			tls_seterr(err, sizeof(err), "SSL_CTX_dane_enable");
			log_warnx("tls: DANE client context: %s", err);
			SSL_CTX_free(dane_client);
			dane_client = NULL;
		}
	}
	ctx = dane_client;
	pthread_mutex_unlock(&dane_client_mtx);
	return ctx;
}

int
tls_cipher_list_valid(const char *list)
{
	SSL_CTX *ctx;
	int ok;

	if ((ctx = SSL_CTX_new(TLS_client_method())) == NULL)
		return -1;
	ok = SSL_CTX_set_cipher_list(ctx, list) == 1;
	SSL_CTX_free(ctx);
	ERR_clear_error();
	return ok ? 0 : -1;
}

SSL_CTX *
tls_ctx_client_ca(const char *ca_file, char *err, size_t errlen)
{
	SSL_CTX *ctx;

	if (ca_file == NULL)
		return tls_ctx_client(TLS_VERIFY_PEER, NULL, NULL, err, errlen);
	if ((ctx = SSL_CTX_new(TLS_client_method())) == NULL) {
		tls_seterr(err, errlen, "SSL_CTX_new");
		return NULL;
	}
	ctx_common(ctx);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	/* only these CAs: a private relay's own CA, not the whole store */
	if (SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1) {
		tls_seterr(err, errlen, ca_file);
		SSL_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

/* vcache: tls_ctx_client_verify's contexts by CA file ("" for the
 * system's), oldest first, under vcache_mtx; kept for the process's life */
#define VCACHE_MAX	4
static pthread_mutex_t	 vcache_mtx = PTHREAD_MUTEX_INITIALIZER;
static struct {
	SSL_CTX		*ctx;
	char		*ca;
} vcache[VCACHE_MAX];

SSL_CTX *
tls_ctx_client_verify(const char *ca_file, char *err, size_t errlen)
{
	const char *ca = ca_file != NULL ? ca_file : "";
	SSL_CTX *ctx = NULL;
	int i;

	pthread_mutex_lock(&vcache_mtx);
	for (i = 0; i < VCACHE_MAX && vcache[i].ctx != NULL; i++)
		if (strcmp(vcache[i].ca, ca) == 0)
			break;
	if (i == VCACHE_MAX) {
		/* full: the oldest goes; its users hold their references */
		SSL_CTX_free(vcache[0].ctx);
		free(vcache[0].ca);
		memmove(&vcache[0], &vcache[1],
		    (VCACHE_MAX - 1) * sizeof(vcache[0]));
		i = VCACHE_MAX - 1;
		vcache[i].ctx = NULL;
		vcache[i].ca = NULL;
	}
	if (vcache[i].ctx == NULL) {
		if ((vcache[i].ctx = tls_ctx_client_ca(ca_file, err,
		    errlen)) == NULL)
			goto out;
		vcache[i].ca = xstrdup(ca);
	}
	ctx = vcache[i].ctx;
	SSL_CTX_up_ref(ctx);
out:
	pthread_mutex_unlock(&vcache_mtx);
	return ctx;
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

/*
 * stream_send - bufs to the stream.  When nothing is queued on it they
 * are written at once from the caller's memory (no request, no copy, and
 * no poll update in libuv); what the kernel does not take, or everything
 * after a write error, is copied into one request and queued, so that
 * errors still reach cb from the loop.  1: all sent (cb never called),
 * 0: queued, < 0: libuv error.
 */
static int
stream_send(uv_stream_t *s, const uv_buf_t *bufs, unsigned nbufs,
    tls_write_cb cb, void *arg)
{
	struct tls_wreq *w;
	size_t total = 0, done, off = 0, k;
	unsigned i;
	int rc;

	for (i = 0; i < nbufs; i++)
		total += bufs[i].len;
	if (total == 0)
		return 1;
	rc = uv_try_write(s, bufs, nbufs);
	done = rc > 0 ? (size_t)rc : 0;
	if (done == total)
		return 1;
	w = wreq_new(total - done, cb, arg);
	for (i = 0; i < nbufs; i++) {
		k = bufs[i].len;
		if (done >= k) {
			done -= k;
			continue;
		}
		memcpy(w->data + off, bufs[i].base + done, k - done);
		off += k - done;
		done = 0;
	}
	rc = wreq_submit(s, w, off);
	return rc < 0 ? rc : 0;
}

/*
 * tls_send - what the engine has produced, through stream_send in
 * stack-sized pieces; the rest goes into one request once a piece is
 * not taken whole.  As stream_send, -1 for a TLS error.
 */
static int
tls_send(struct tls_conn *t, tls_write_cb cb, void *arg)
{
	char tmp[16384 + 1024];
	struct tls_wreq *w;
	uv_buf_t b;
	size_t n, rest;
	int rc, k;

	while ((n = BIO_ctrl_pending(t->wbio)) > 0) {
		if ((k = BIO_read(t->wbio, tmp, n < sizeof(tmp) ? (int)n :
		    (int)sizeof(tmp))) <= 0) {
			snprintf(t->err, sizeof(t->err), "BIO_read short");
			return -1;
		}
		rest = BIO_ctrl_pending(t->wbio);
		b = uv_buf_init(tmp, (unsigned int)k);
		if (rest == 0)
			return stream_send(t->stream, &b, 1, cb, arg);
		rc = uv_try_write(t->stream, &b, 1);
		if (rc == k)
			continue;
		rc = rc > 0 ? rc : 0;
		w = wreq_new((size_t)(k - rc) + rest, cb, arg);
		memcpy(w->data, tmp + rc, (size_t)(k - rc));
		if (BIO_read(t->wbio, w->data + (k - rc), (int)rest) !=
		    (int)rest) {
			free(w);
			snprintf(t->err, sizeof(t->err), "BIO_read short");
			return -1;
		}
		if ((rc = wreq_submit(t->stream, w, (size_t)(k - rc) +
		    rest)) < 0)
			snprintf(t->err, sizeof(t->err), "write: %s",
			    uv_strerror(rc));
		return rc < 0 ? rc : 0;
	}
	return 1;
}

/* tls_flush - send whatever the engine has produced, cb on it */
static int
tls_flush(struct tls_conn *t, tls_write_cb cb, void *arg)
{
	struct tls_wreq *w;
	size_t n;
	int rc;

	/* nobody waits for it: no request needed */
	if (cb == NULL)
		return (rc = tls_send(t, NULL, NULL)) < 0 ? rc : 0;
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
	/* a list over the cap is refused before any certificate is read */
	if (ERR_GET_LIB(ERR_peek_error()) == ERR_LIB_SSL &&
	    ERR_GET_REASON(ERR_peek_error()) == SSL_R_EXCESSIVE_MESSAGE_SIZE)
		snprintf(t->err, sizeof(t->err), "certificate chain too big: "
		    "a handshake message over %d bytes", TLS_MAX_CERT_LIST);
	/* the verify result means something only where it was asked for */
	else if (SSL_get_verify_mode(t->ssl) != SSL_VERIFY_NONE &&
	    SSL_get_verify_result(t->ssl) != X509_V_OK)
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
tls_conn_expect_ip(struct tls_conn *t, const char *ip)
{
	if (t->ssl == NULL || X509_VERIFY_PARAM_set1_ip_asc(
	    SSL_get0_param(t->ssl), ip) != 1)
		return -1;
	return 0;
}

int
tls_conn_expect_hosts(struct tls_conn *t, const char *names)
{
	char one[256];
	const char *p;
	size_t n;
	int first = 1;

	if (t->ssl == NULL)
		return -1;
	/* *.example.com names one label, never a part of one */
	SSL_set_hostflags(t->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
	for (p = names; *p != '\0'; p += n) {
		p += strspn(p, " ");
		if ((n = strcspn(p, " ")) == 0)
			break;
		if (n >= sizeof(one))
			return -1;
		memcpy(one, p, n);
		one[n] = '\0';
		if ((first ? SSL_set1_host(t->ssl, one) :
		    SSL_add1_host(t->ssl, one)) != 1)
			return -1;
		first = 0;
	}
	return first ? -1 : 0;
}

int
tls_conn_dane(struct tls_conn *t, const char *base, const char *names,
    const struct tls_tlsa *rr, size_t n)
{
	char one[256];
	const char *p;
	size_t i, k;
	int usable = 0;

	if (t->ssl == NULL || base == NULL || SSL_dane_enable(t->ssl, base)
	    <= 0)
		return -1;
	/* RFC 7672 3.2.1: a DANE-EE key is the identity, names do not
	 * matter; DANE-TA chains must still name the next hop */
	SSL_dane_set_flags(t->ssl, DANE_FLAG_NO_DANE_EE_NAMECHECKS);
	SSL_set_hostflags(t->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
	for (p = names != NULL ? names : ""; *p != '\0'; p += k) {
		p += strspn(p, " ");
		if ((k = strcspn(p, " ")) == 0)
			break;
		if (k >= sizeof(one))
			return -1;
		memcpy(one, p, k);
		one[k] = '\0';
		if (SSL_add1_host(t->ssl, one) != 1)
			return -1;
	}
	/* the handshake fails on no match, as for a verifying context */
	SSL_set_verify(t->ssl, SSL_VERIFY_PEER, NULL);
	for (i = 0; i < n; i++) {
		/* 0: unusable, < 0: malformed data (a bad key, a bad
		 * certificate): either way not this record, the others do */
		if (SSL_dane_tlsa_add(t->ssl, rr[i].usage, rr[i].selector,
		    rr[i].mtype, rr[i].data, rr[i].len) > 0)
			usable++;
		ERR_clear_error();
	}
	return usable;
}

int
tls_conn_dane_info(const struct tls_conn *t, char *out, size_t len)
{
	SSL *ssl = t->ssl;
	const unsigned char *data;
	uint8_t u, s, m;
	size_t dlen;
	int depth;

	if (ssl == NULL || t->state != TLS_OPEN ||
	    SSL_get_verify_result(ssl) != X509_V_OK ||
	    (depth = SSL_get0_dane_authority(ssl, NULL, NULL)) < 0 ||
	    SSL_get0_dane_tlsa(ssl, &u, &s, &m, &data, &dlen) < 0)
		return -1;
	snprintf(out, len, "%u.%u.%u depth=%d", u, s, m, depth);
	return 0;
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
	uv_buf_t b;
	int rc;

	if (n == 0)
		return 0;
	if (cb == NULL) {
		/* nobody waits for it: the copy-free path */
		b = uv_buf_init((char *)(uintptr_t)p, (unsigned int)n);
		return (rc = tls_stream_send(s, t, &b, 1, NULL, NULL)) < 0 ?
		    rc : 0;
	}
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

int
tls_stream_send(uv_stream_t *s, struct tls_conn *t, const uv_buf_t *bufs,
    unsigned nbufs, tls_write_cb cb, void *arg)
{
	unsigned i;

	if (t == NULL)
		return stream_send(s, bufs, nbufs, cb, arg);
	if (t->state != TLS_OPEN)
		return -1;
	ERR_clear_error();
	for (i = 0; i < nbufs; i++)
		if (bufs[i].len > 0 && SSL_write(t->ssl, bufs[i].base,
		    (int)bufs[i].len) != (int)bufs[i].len) {
			tls_fail(t, "write");
			return -1;
		}
	return tls_send(t, cb, arg);
}

/* ---------------------------------------------------------------- corks */

/* the corked streams of one loop, and the two handles that write them */
struct tls_corks {
	struct tls_cork		*list;		/* streams with bytes to write */
	uv_prepare_t		 prepare;
	uv_check_t		 check;
};

static void
cork_unlink(struct tls_cork *c)
{
	if (c->prevp == NULL)
		return;
	if (c->next != NULL)
		c->next->prevp = c->prevp;
	*c->prevp = c->next;
	c->next = NULL;
	c->prevp = NULL;
}

/* tls_cork_turn - every corked stream of k is written */
void
tls_cork_turn(struct tls_corks *k)
{
	struct tls_cork *c;
	int rc;

	while ((c = k->list) != NULL) {
		cork_unlink(c);
		/* a failure goes to the owner, who may free other corks */
		if ((rc = tls_cork_flush(c)) < 0 && c->cb != NULL)
			c->cb(c->arg, rc == -1 ? UV_EPROTO : rc);
	}
}

static void
cork_check_cb(uv_check_t *h)
{
	tls_cork_turn(h->data);
}

static void
cork_prepare_cb(uv_prepare_t *h)
{
	tls_cork_turn(h->data);
}

/*
 * tls_corks_new - the cork list of loop: written after the I/O callbacks
 * (check) and before the loop blocks in poll (prepare: for bytes from
 * timers and close callbacks).  The handles are unreferenced, so they
 * never keep the loop alive; the owner keeps k until the loop is closed.
 */
struct tls_corks *
tls_corks_new(uv_loop_t *loop)
{
	struct tls_corks *k = xcalloc(1, sizeof(*k));

	uv_prepare_init(loop, &k->prepare);
	uv_check_init(loop, &k->check);
	k->prepare.data = k;
	k->check.data = k;
	uv_prepare_start(&k->prepare, cork_prepare_cb);
	uv_check_start(&k->check, cork_check_cb);
	uv_unref((uv_handle_t *)&k->prepare);
	uv_unref((uv_handle_t *)&k->check);
	return k;
}

int
tls_corks_free(struct tls_corks *k)
{
	if (k == NULL)
		return 0;
	if (!uv_is_closing((uv_handle_t *)&k->prepare) ||
	    !uv_is_closing((uv_handle_t *)&k->check))
		return -1;
	free(k);
	return 0;
}

/* cork_closed - 1 once the daemon's final walk has closed k's handles:
 * then writes go out at once */
static int
cork_closed(const struct tls_corks *k)
{
	return uv_is_closing((const uv_handle_t *)&k->check) ||
	    uv_is_closing((const uv_handle_t *)&k->prepare);
}

void
tls_cork_init(struct tls_cork *c, struct tls_corks *k, uv_stream_t *s,
    tls_write_cb cb, void *arg)
{
	memset(c, 0, sizeof(*c));
	buf_init(&c->b);
	c->k = k;
	c->s = s;
	c->cb = cb;
	c->arg = arg;
}

int
tls_cork_add(struct tls_cork *c, struct tls_conn *t, const uv_buf_t *bufs,
    unsigned nbufs)
{
	unsigned i;
	int rc;

	if (buf_avail(&c->b) > 0 && c->t != t &&
	    (rc = tls_cork_flush(c)) < 0)
		return rc;
	c->t = t;
	for (i = 0; i < nbufs; i++)
		buf_append(&c->b, bufs[i].base, bufs[i].len);
	if (buf_avail(&c->b) == 0)
		return 0;
	if (cork_closed(c->k))
		return (rc = tls_cork_flush(c)) < 0 ? rc : 0;
	if (c->prevp == NULL) {
		if ((c->next = c->k->list) != NULL)
			c->k->list->prevp = &c->next;
		c->k->list = c;
		c->prevp = &c->k->list;
	}
	return 0;
}

int
tls_cork_flush(struct tls_cork *c)
{
	uv_buf_t b;
	int rc;

	cork_unlink(c);
	if (buf_avail(&c->b) == 0)
		return 1;
	b = uv_buf_init((char *)(uintptr_t)buf_head(&c->b),
	    (unsigned int)buf_avail(&c->b));
	rc = tls_stream_send(c->s, c->t, &b, 1, c->cb, c->arg);
	buf_free(&c->b);	/* an idle session keeps no buffer */
	return rc;
}

/*
 * tls_cork_finish - the last reply (221, 421) and the FIN in one segment:
 * MSG_MORE holds the bytes until shutdown() adds the FIN to them, where a
 * write and a shutdown send two.  Only in plain text, and only when
 * libuv has nothing queued for the stream (the order of bytes).
 */
int
tls_cork_finish(struct tls_cork *c)
{
	uv_os_fd_t fd;
	ssize_t n;

	if (c->t != NULL || buf_avail(&c->b) == 0 ||
	    uv_stream_get_write_queue_size(c->s) != 0 ||
	    uv_fileno((uv_handle_t *)c->s, &fd) != 0)
		return 0;
	n = send(fd, buf_head(&c->b), buf_avail(&c->b),
	    MSG_MORE | MSG_DONTWAIT | MSG_NOSIGNAL);
	if (n > 0)
		buf_consume(&c->b, (size_t)n);
	if (buf_avail(&c->b) > 0)
		return 0;	/* the rest the usual way */
	cork_unlink(c);
	buf_free(&c->b);
	(void)shutdown(fd, SHUT_WR);
	return 1;
}

void
tls_cork_free(struct tls_cork *c)
{
	cork_unlink(c);
	buf_free(&c->b);
}
