#include "tls.h"
#include "str.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

/* The first queued OpenSSL error as text, or fallback. */
static void ssl_err(char *err, size_t errlen, const char *what, const char *fallback)
{
	unsigned long e = ERR_get_error();
	char buf[256];

	if (e != 0) {
		ERR_error_string_n(e, buf, sizeof(buf));
		const char *reason = ERR_reason_error_string(e);
		str_fmt(err, errlen, "%s: %s", what, reason ? reason : buf);
	} else {
		str_fmt(err, errlen, "%s: %s", what, fallback);
	}
	ERR_clear_error();
}

static SSL_CTX *ctx_common(const SSL_METHOD *m, char *err, size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new(m);

	if (ctx == NULL) {
		ssl_err(err, errlen, "SSL_CTX_new", "failed");
		return NULL;
	}
	if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 ||
	    SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) != 1 ||
	    SSL_CTX_set_cipher_list(ctx, TLS_CIPHERS) != 1 ||
	    SSL_CTX_set1_groups_list(ctx, TLS_GROUPS) != 1) {
		ssl_err(err, errlen, "TLS settings", "rejected");
		SSL_CTX_free(ctx);
		return NULL;
	}
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	return ctx;
}

tls_ctx *tls_server_ctx(const char *cert, const char *key, char *err, size_t errlen)
{
	SSL_CTX *ctx = ctx_common(TLS_server_method(), err, errlen);

	if (ctx == NULL)
		return NULL;
	SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_TICKET);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
		ssl_err(err, errlen, cert, "cannot load certificate");
		SSL_CTX_free(ctx);
		return NULL;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
		ssl_err(err, errlen, key, "cannot load private key");
		SSL_CTX_free(ctx);
		return NULL;
	}
	if (SSL_CTX_check_private_key(ctx) != 1) {
		ssl_err(err, errlen, key, "private key does not match the certificate");
		SSL_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

tls_ctx *tls_server_ctx_pem(const char *cert_pem, const char *key_pem, char *err, size_t errlen)
{
	SSL_CTX *ctx = ctx_common(TLS_server_method(), err, errlen);
	BIO *cb = NULL, *kb = NULL;
	X509 *x = NULL;
	EVP_PKEY *pk = NULL;

	if (ctx == NULL)
		return NULL;
	SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_TICKET);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	cb = BIO_new_mem_buf(cert_pem, -1);
	kb = BIO_new_mem_buf(key_pem, -1);
	if (cb == NULL || kb == NULL)
		goto oom;
	/* The leaf first, then the chain, as in a certificate chain file. */
	if ((x = PEM_read_bio_X509(cb, NULL, NULL, NULL)) == NULL || SSL_CTX_use_certificate(ctx, x) != 1) {
		ssl_err(err, errlen, "tls.cert", "cannot load certificate");
		goto fail;
	}
	X509_free(x);
	while ((x = PEM_read_bio_X509(cb, NULL, NULL, NULL)) != NULL)
		if (SSL_CTX_add_extra_chain_cert(ctx, x) != 1) {   /* takes x */
			X509_free(x);
			ssl_err(err, errlen, "tls.cert", "cannot load chain certificate");
			goto fail;
		}
	ERR_clear_error();   /* the end of the PEM stream is reported as an error */
	if ((pk = PEM_read_bio_PrivateKey(kb, NULL, NULL, NULL)) == NULL ||
	    SSL_CTX_use_PrivateKey(ctx, pk) != 1) {
		ssl_err(err, errlen, "tls.key", "cannot load private key");
		goto fail;
	}
	if (SSL_CTX_check_private_key(ctx) != 1) {
		ssl_err(err, errlen, "tls.key", "private key does not match the certificate");
		goto fail;
	}
	EVP_PKEY_free(pk);
	BIO_free(cb);
	BIO_free(kb);
	return ctx;
oom:
	str_copy(err, "out of memory", errlen);
fail:
	EVP_PKEY_free(pk);
	BIO_free(cb);
	BIO_free(kb);
	SSL_CTX_free(ctx);
	return NULL;
}

tls_ctx *tls_client_ctx(const char *ca_file, int verify, char *err, size_t errlen)
{
	SSL_CTX *ctx = ctx_common(TLS_client_method(), err, errlen);

	if (ctx == NULL)
		return NULL;
	if (ca_file && *ca_file) {
		if (SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1) {
			ssl_err(err, errlen, ca_file, "cannot load CA file");
			SSL_CTX_free(ctx);
			return NULL;
		}
	} else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
		ssl_err(err, errlen, "system CA store", "cannot load");
		SSL_CTX_free(ctx);
		return NULL;
	}
	SSL_CTX_set_verify(ctx, verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
	return ctx;
}

void tls_ctx_free(tls_ctx *ctx)
{
	SSL_CTX_free(ctx);
}

/* An SSL on fd, or NULL. */
static SSL *ssl_on(tls_ctx *ctx, int fd)
{
	SSL *s = SSL_new(ctx);

	if (s != NULL && SSL_set_fd(s, fd) != 1) {
		SSL_free(s);
		s = NULL;
	}
	return s;
}

tls_conn *tls_server_new(tls_ctx *ctx, int fd)
{
	SSL *s = ssl_on(ctx, fd);

	if (s != NULL)
		SSL_set_accept_state(s);
	return s;
}

tls_conn *tls_client_new(tls_ctx *ctx, int fd, const char *host, int verify)
{
	SSL *s = ssl_on(ctx, fd);

	if (s == NULL)
		return NULL;
	/* SNI only for names, never for address literals (RFC 6066 3). */
	if (host && *host && strspn(host, "0123456789.:") != strlen(host))
		SSL_set_tlsext_host_name(s, host);
	/* The name is checked even without verify, so the result can be
	 * reported (tls_verify_result); only SSL_VERIFY_PEER makes it fatal. */
	(void)verify;
	if (host && *host) {
		if (strspn(host, "0123456789.:") == strlen(host)) {
			X509_VERIFY_PARAM *vp = SSL_get0_param(s);
			X509_VERIFY_PARAM_set1_ip_asc(vp, host);
		} else {
			SSL_set_hostflags(s, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
			SSL_set1_host(s, host);
		}
	}
	SSL_set_connect_state(s);
	return s;
}

void tls_conn_free(tls_conn *c)
{
	SSL_free(c);
}

static int map_error(SSL *s, int r)
{
	switch (SSL_get_error(s, r)) {
	case SSL_ERROR_WANT_READ: return TLS_WANT_READ;
	case SSL_ERROR_WANT_WRITE: return TLS_WANT_WRITE;
	case SSL_ERROR_ZERO_RETURN: return TLS_CLOSED;
	case SSL_ERROR_SYSCALL:
		if (ERR_peek_error() == 0 && (errno == 0 || errno == ECONNRESET || errno == EPIPE)) {
			ERR_clear_error();
			return TLS_CLOSED;
		}
		ERR_clear_error();
		return TLS_ERR;
	default:
		ERR_clear_error();
		return TLS_ERR;
	}
}

int tls_handshake(tls_conn *c, char *err, size_t errlen)
{
	int r;

	ERR_clear_error();
	errno = 0;
	r = SSL_do_handshake(c);
	if (r == 1)
		return TLS_OK;
	int e = SSL_get_error(c, r);
	if (e == SSL_ERROR_WANT_READ)
		return TLS_WANT_READ;
	if (e == SSL_ERROR_WANT_WRITE)
		return TLS_WANT_WRITE;
	long v = SSL_get_verify_result(c);
	if (v != X509_V_OK) {
		str_fmt(err, errlen, "certificate verification failed: %s",
		        X509_verify_cert_error_string(v));
		ERR_clear_error();
	} else if (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0) {
		str_fmt(err, errlen, "TLS handshake: %s", errno ? strerror(errno) : "connection closed by peer");
	} else {
		ssl_err(err, errlen, "TLS handshake", "failed");
	}
	return TLS_ERR;
}

ssize_t tls_read(tls_conn *c, void *p, size_t n)
{
	int r;

	if (n > 1 << 30)
		n = 1 << 30;
	ERR_clear_error();
	errno = 0;
	r = SSL_read(c, p, (int)n);
	return r > 0 ? r : map_error(c, r);
}

ssize_t tls_write(tls_conn *c, const void *p, size_t n)
{
	int r;

	if (n == 0)
		return 0;
	if (n > 1 << 30)
		n = 1 << 30;
	ERR_clear_error();
	errno = 0;
	r = SSL_write(c, p, (int)n);
	return r > 0 ? r : map_error(c, r);
}

int tls_pending(tls_conn *c)
{
	return SSL_pending(c);
}

void tls_shutdown(tls_conn *c)
{
	ERR_clear_error();
	if (SSL_shutdown(c) < 0)
		ERR_clear_error();
}

int tls_io_wait(int fd, int want, int timeout_ms)
{
	struct pollfd pfd = { fd, want == TLS_WANT_WRITE ? POLLOUT : POLLIN, 0 };
	int r;

	do {
		r = poll(&pfd, 1, timeout_ms);
	} while (r == -1 && errno == EINTR);
	if (r == 0)
		errno = ETIMEDOUT;
	return r > 0 ? 0 : -1;
}

const char *tls_protocol(tls_conn *c)
{
	return SSL_get_version(c);
}

const char *tls_cipher(tls_conn *c)
{
	const char *n = SSL_get_cipher_name(c);
	return n ? n : "none";
}

void tls_describe(tls_conn *c, char *buf, size_t len)
{
	str_fmt(buf, len, "%s %s", tls_protocol(c), tls_cipher(c));
}

static void name_text(X509_NAME *n, char *buf, size_t len)
{
	BIO *b = BIO_new(BIO_s_mem());
	char *p;
	long l;

	buf[0] = '\0';
	if (b == NULL || n == NULL) {
		BIO_free(b);
		return;
	}
	X509_NAME_print_ex(b, n, 0, XN_FLAG_ONELINE & ~ASN1_STRFLGS_ESC_MSB);
	l = BIO_get_mem_data(b, &p);
	if (l > 0) {
		size_t k = (size_t)l < len - 1 ? (size_t)l : len - 1;
		memcpy(buf, p, k);
		buf[k] = '\0';
	}
	BIO_free(b);
}

void tls_peer_cert(tls_conn *c, char *subject, size_t slen, char *issuer, size_t ilen, char *expiry,
                   size_t elen)
{
	X509 *x = SSL_get1_peer_certificate(c);

	subject[0] = issuer[0] = expiry[0] = '\0';
	if (x == NULL)
		return;
	name_text(X509_get_subject_name(x), subject, slen);
	name_text(X509_get_issuer_name(x), issuer, ilen);
	struct tm tm;
	if (ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm) == 1)
		strftime(expiry, elen, "%Y-%m-%d %H:%M:%S UTC", &tm);
	X509_free(x);
}

int tls_verify_result(tls_conn *c, char *buf, size_t len)
{
	long v = SSL_get_verify_result(c);
	X509 *x = SSL_get1_peer_certificate(c);

	if (x == NULL) {
		str_copy(buf, "no certificate", len);
		return 0;
	}
	X509_free(x);
	if (v != X509_V_OK) {
		str_copy(buf, X509_verify_cert_error_string(v), len);
		return 0;
	}
	str_copy(buf, "ok", len);
	return 1;
}
