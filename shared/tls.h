/*
 * tls - OpenSSL 3 wrappers for both directions of postern's TLS.
 *
 * Server contexts (smtpd): TLS 1.2 and 1.3 only (RFC 8996, 9325), the
 * Mozilla "intermediate" cipher list for 1.2, groups X25519:P-256:P-384,
 * server cipher preference, no compression, no renegotiation, no session
 * tickets to keep state small.  The key is read when tls_server_ctx() is
 * called: smtpd calls it before dropping privileges so that the key file
 * may stay root-only 0600.
 *
 * Client contexts (deliverd, `postern check relay`): the same protocol
 * floor; with verify the peer chain is checked against ca_file (or the
 * system store) and the host name with SSL_set1_host(); SNI is sent.
 *
 * Nonblocking I/O for smtpd's epoll loop: tls_handshake(), tls_read() and
 * tls_write() return TLS_WANT_READ/TLS_WANT_WRITE, which the caller maps
 * to event interest.  Blocking callers (deliverd) wait with poll() on the
 * same results (tls_io_wait()).
 *
 * Ownership: contexts are freed with tls_ctx_free(), connections with
 * tls_conn_free() (which does not close the fd).  Errors fill the
 * caller's err buffer with OpenSSL's reason, or for a failed verification
 * with the X509 reason ("certificate has expired", "Hostname mismatch",
 * "unable to get local issuer certificate").
 */
#ifndef POSTERN_TLS_H
#define POSTERN_TLS_H

#include <stddef.h>
#include <sys/types.h>

typedef struct ssl_ctx_st tls_ctx;
typedef struct ssl_st tls_conn;

enum { TLS_OK = 0, TLS_WANT_READ = -2, TLS_WANT_WRITE = -3, TLS_CLOSED = -4, TLS_ERR = -1 };

#define TLS_CIPHERS                                                                              \
	"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:" \
	"ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"   \
	"DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384"
#define TLS_GROUPS "X25519:P-256:P-384"

/* NULL with err filled if the certificate or key cannot be used. */
tls_ctx *tls_server_ctx(const char *cert, const char *key, char *err, size_t errlen);
/* The same from PEM text in memory (the master reads root-only files on
 * reload and hands smtpd their contents). */
tls_ctx *tls_server_ctx_pem(const char *cert_pem, const char *key_pem, char *err, size_t errlen);
/* ca_file "" means the system store. */
tls_ctx *tls_client_ctx(const char *ca_file, int verify, char *err, size_t errlen);
void tls_ctx_free(tls_ctx *ctx);

tls_conn *tls_server_new(tls_ctx *ctx, int fd);
/* host: for SNI and (with verify) the name check. */
tls_conn *tls_client_new(tls_ctx *ctx, int fd, const char *host, int verify);
void tls_conn_free(tls_conn *c);

/* TLS_OK, TLS_WANT_*, or TLS_ERR with err filled. */
int tls_handshake(tls_conn *c, char *err, size_t errlen);
/* >0 bytes, or TLS_WANT_*, TLS_CLOSED (clean close or EOF), TLS_ERR. */
ssize_t tls_read(tls_conn *c, void *p, size_t n);
ssize_t tls_write(tls_conn *c, const void *p, size_t n);
/* Bytes already decrypted and waiting inside OpenSSL (epoll cannot see them). */
int tls_pending(tls_conn *c);
/* Best-effort close_notify. */
void tls_shutdown(tls_conn *c);
/* Blocking helper: wait (poll) for what a TLS_WANT_* result asks; -1 on timeout. */
int tls_io_wait(int fd, int want, int timeout_ms);

/* "TLSv1.3 TLS_AES_256_GCM_SHA384" for logs; proto/cipher separately too. */
void tls_describe(tls_conn *c, char *buf, size_t len);
const char *tls_protocol(tls_conn *c);
const char *tls_cipher(tls_conn *c);
/* Peer certificate: subject, issuer, notAfter ("" when none). */
void tls_peer_cert(tls_conn *c, char *subject, size_t slen, char *issuer, size_t ilen, char *expiry,
                   size_t elen);
/* Verification result of the peer chain: 1 ok, else 0 and why in buf. */
int tls_verify_result(tls_conn *c, char *buf, size_t len);

#endif
