/*
 * base64 - RFC 4648 encoding for SMTP AUTH (RFC 4954).
 *
 * base64_encode() writes the padded encoding of in[0..n) and a NUL into
 * out[cap]; -1 (and nothing usable in out) when cap is too small, which
 * is (n + 2) / 3 * 4 + 1 bytes.  The strict decoder for untrusted input
 * lives with its only user, smtpd/auth.c.
 */
#ifndef POSTERN_BASE64_H
#define POSTERN_BASE64_H

#include <stddef.h>

#define BASE64_LEN(n) (((n) + 2) / 3 * 4 + 1)

int base64_encode(const void *in, size_t n, char *out, size_t cap);

#endif
