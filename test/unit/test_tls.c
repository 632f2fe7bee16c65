/*
 * test_tls.c - unit tests of common/tls.c's limits on a hostile peer:
 * every client context has the verify depth and the certificate list
 * cap of tls.h; the verifying contexts are shared per CA file; a server
 * that sends a certificate list over the cap fails the handshake on
 * "excessive message size" before a certificate is looked at, verifying
 * or not, and a short chain of the same certificates does not.  The
 * certificates are made here, in memory, by one P-256 key.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "../../common/tls.h"
#include "testutil.h"

#define UNUSED	__attribute__((unused))

/* mkcert - a certificate for cn issued by issuer (NULL: itself), CA or
 * leaf, signed by key (one key for the whole chain: only sizes matter) */
static X509 *
mkcert(EVP_PKEY *key, const char *cn, X509 *issuer, int ca)
{
	X509 *x = X509_new();
	X509_NAME *n = X509_NAME_new();
	X509_EXTENSION *e;
	X509V3_CTX v3;
	static long serial = 1;

	assert_non_null(x);
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
	X509_gmtime_adj(X509_getm_notBefore(x), -3600);
	X509_gmtime_adj(X509_getm_notAfter(x), 3600);
	X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC,
	    (const unsigned char *)cn, -1, -1, 0);
	X509_set_subject_name(x, n);
	X509_set_issuer_name(x, issuer != NULL ?
	    X509_get_subject_name(issuer) : n);
	X509_NAME_free(n);
	X509_set_pubkey(x, key);
	X509V3_set_ctx(&v3, issuer != NULL ? issuer : x, x, NULL, NULL, 0);
	e = X509V3_EXT_conf_nid(NULL, &v3, NID_basic_constraints,
	    ca ? "critical,CA:TRUE" : "CA:FALSE");
	assert_non_null(e);
	X509_add_ext(x, e, -1);
	X509_EXTENSION_free(e);
	assert_true(X509_sign(x, key, EVP_sha256()) > 0);
	return x;
}

/* handshake - client against server over a memory BIO pair until one
 * side fails or both are done: 1 done, 0 failed (the client's error in
 * *reason) */
static int
handshake(SSL_CTX *cctx, SSL_CTX *sctx, unsigned long *reason)
{
	SSL *c = SSL_new(cctx), *s = SSL_new(sctx);
	BIO *cb, *sb;
	int i, rc = 0, cdone = 0, sdone = 0, r;

	assert_non_null(c);
	assert_non_null(s);
	assert_int_equal(BIO_new_bio_pair(&cb, 1 << 18, &sb, 1 << 18), 1);
	SSL_set_bio(c, cb, cb);
	SSL_set_bio(s, sb, sb);
	SSL_set_connect_state(c);
	SSL_set_accept_state(s);
	*reason = 0;
	ERR_clear_error();
	for (i = 0; i < 100 && !(cdone && sdone); i++) {
		if (!cdone) {
			r = SSL_do_handshake(c);
			if (r == 1)
				cdone = 1;
			else if (SSL_get_error(c, r) != SSL_ERROR_WANT_READ &&
			    SSL_get_error(c, r) != SSL_ERROR_WANT_WRITE) {
				*reason = ERR_GET_REASON(ERR_peek_error());
				goto out;
			}
		}
		if (!sdone) {
			r = SSL_do_handshake(s);
			if (r == 1)
				sdone = 1;
			else if (SSL_get_error(s, r) != SSL_ERROR_WANT_READ &&
			    SSL_get_error(s, r) != SSL_ERROR_WANT_WRITE)
				goto out;
		}
	}
	rc = cdone && sdone;
out:
	ERR_clear_error();
	SSL_free(c);
	SSL_free(s);
	return rc;
}

/* server - a server context sending leaf and the n CA certificates
 * above it */
static SSL_CTX *
server(EVP_PKEY *key, X509 *leaf, X509 **chain, int n)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	int i;

	assert_non_null(ctx);
	/* its own cap must not stop it from sending what we test */
	SSL_CTX_set_max_cert_list(ctx, 1 << 22);
	assert_int_equal(SSL_CTX_use_certificate(ctx, leaf), 1);
	assert_int_equal(SSL_CTX_use_PrivateKey(ctx, key), 1);
	for (i = 0; i < n; i++)
		assert_int_equal(SSL_CTX_add1_chain_cert(ctx, chain[i]), 1);
	return ctx;
}

static void
test_ctx_limits(void **state UNUSED)
{
	SSL_CTX *ctx[3], *again;
	char err[256];
	int i;

	ctx[0] = tls_ctx_client_shared();
	ctx[1] = tls_ctx_client_ca(NULL, err, sizeof(err));
	ctx[2] = tls_ctx_client_verify(NULL, err, sizeof(err));
	for (i = 0; i < 3; i++) {
		assert_non_null(ctx[i]);
		assert_int_equal(SSL_CTX_get_verify_depth(ctx[i]),
		    TLS_VERIFY_DEPTH);
		assert_int_equal(SSL_CTX_get_max_cert_list(ctx[i]),
		    TLS_MAX_CERT_LIST);
	}
	assert_int_equal(SSL_CTX_get_verify_mode(ctx[2]), SSL_VERIFY_PEER);
	/* one context per CA file, each caller with its reference */
	again = tls_ctx_client_verify(NULL, err, sizeof(err));
	assert_ptr_equal(again, ctx[2]);
	SSL_CTX_free(again);
	assert_null(tls_ctx_client_verify("/nonexistent/ca.pem", err,
	    sizeof(err)));
	assert_non_null(strstr(err, "/nonexistent/ca.pem"));
	SSL_CTX_free(ctx[1]);
	SSL_CTX_free(ctx[2]);
}

/* 250 P-256 certificates: about 85 KiB, over our cap, under OpenSSL's */
#define NCHAIN	250

static void
test_long_chain(void **state UNUSED)
{
	EVP_PKEY *key = EVP_EC_gen("P-256");
	X509 *chain[NCHAIN], *leaf;
	SSL_CTX *sctx, *cctx = tls_ctx_client_shared(), *vctx;
	unsigned long reason;
	char cn[32], err[256];
	int i, len;

	assert_non_null(key);
	/* chain[0] is the root; each signs the next; the leaf is last */
	for (i = 0; i < NCHAIN; i++) {
		snprintf(cn, sizeof(cn), "ca%d", i);
		chain[i] = mkcert(key, cn, i > 0 ? chain[i - 1] : NULL, 1);
	}
	leaf = mkcert(key, "mx.example.org", chain[NCHAIN - 1], 0);
	for (i = 0, len = i2d_X509(leaf, NULL); i < NCHAIN; i++)
		len += i2d_X509(chain[i], NULL);
	/* only our cap can refuse it */
	assert_true(len > TLS_MAX_CERT_LIST && len < SSL_MAX_CERT_LIST_DEFAULT);

	/* the whole list, leaf to root: over the cap, refused unread */
	sctx = server(key, leaf, chain, NCHAIN);
	assert_int_equal(handshake(cctx, sctx, &reason), 0);
	assert_int_equal(reason, SSL_R_EXCESSIVE_MESSAGE_SIZE);
	vctx = tls_ctx_client_verify(NULL, err, sizeof(err));
	assert_non_null(vctx);
	assert_int_equal(handshake(vctx, sctx, &reason), 0);
	assert_int_equal(reason, SSL_R_EXCESSIVE_MESSAGE_SIZE);
	SSL_CTX_free(sctx);

	/* the leaf and two above it: taken by the unverifying client */
	sctx = server(key, leaf, &chain[NCHAIN - 2], 2);
	assert_int_equal(handshake(cctx, sctx, &reason), 1);
	SSL_CTX_free(sctx);

	SSL_CTX_free(vctx);
	for (i = 0; i < NCHAIN; i++)
		X509_free(chain[i]);
	X509_free(leaf);
	EVP_PKEY_free(key);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ctx_limits),
		cmocka_unit_test(test_long_chain),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
