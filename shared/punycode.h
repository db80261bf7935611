/*
 * punycode - RFC 3492 Punycode and IDNA A-labels for UTF-8 domain names.
 *
 * punycode_encode()/punycode_decode() convert between Unicode code points
 * and the Punycode form of one label (without the "xn--" prefix), exactly
 * as RFC 3492 section 6 describes, with its overflow checks.
 *
 * punycode_domain_to_ascii() turns a UTF-8 domain into the form DNS needs:
 * label by label, an ASCII label is copied, a label with non-ASCII
 * characters becomes "xn--" + Punycode (RFC 5890/5891).  Limits enforced:
 * a label at most 63 bytes after conversion, the name at most 253 (one
 * trailing dot allowed), no empty label, valid shortest-form UTF-8 without
 * surrogates or NUL.  Mapping is deliberately minimal: ASCII letters are
 * lowercased, nothing else; full UTS #46 mapping and IDNA2008 validity
 * (bidi, contextual rules, NFC) are out of scope, so a name that needs
 * mapping (e.g. upper-case non-ASCII letters, fullwidth dots) is encoded as
 * given and may not resolve.
 *
 * Errors: every function returns 0 or -1; domain_to_ascii fills err with
 * the reason ("label longer than 63 bytes", "invalid UTF-8 at byte 4").
 * Nothing is allocated; out buffers are the caller's.
 */
#ifndef POSTERN_PUNYCODE_H
#define POSTERN_PUNYCODE_H

#include <stddef.h>
#include <stdint.h>

#define PUNYCODE_LABEL_MAX 63
#define PUNYCODE_NAME_MAX 253

/* Encode n code points into out (ASCII, NUL-terminated, at most outlen
 * bytes with the NUL).  -1 on overflow, a bad code point, or no room. */
int punycode_encode(const uint32_t *in, size_t n, char *out, size_t outlen);
/* Decode len bytes of Punycode into at most *n code points; *n is set to
 * how many.  -1 on a bad digit, non-basic byte, overflow or no room. */
int punycode_decode(const char *in, size_t len, uint32_t *out, size_t *n);

/* Decode UTF-8 (len bytes) into at most *n code points. -1 on invalid
 * UTF-8 (err names the byte offset) or no room. */
int punycode_utf8_decode(const char *s, size_t len, uint32_t *out, size_t *n, size_t *bad_at);

/* A UTF-8 domain to its A-label form (see above).  out gets at most
 * outlen bytes with the NUL. */
int punycode_domain_to_ascii(const char *in, char *out, size_t outlen, char *err, size_t errlen);
/* 1 if s holds a byte >= 0x80. */
int punycode_is_ascii(const char *s);

#endif
