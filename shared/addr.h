/*
 * addr - strict RFC 5321 mailbox and path parsing.
 *
 *   Path      = "<" [ A-d-l ":" ] Mailbox ">"      (source route ignored)
 *   Mailbox   = Local-part "@" ( Domain / address-literal )
 *   Local-part= Dot-string / Quoted-string
 *
 * Limits (RFC 5321 4.5.3.1): local part 64 octets, domain 255, path 256
 * (the whole thing including the angle brackets).  Non-ASCII is accepted
 * only with ADDR_UTF8 (SMTPUTF8, RFC 6531) and must be well-formed UTF-8.
 * Control characters, NUL, CR and LF are never accepted anywhere, so a
 * parsed address is safe to write into a line-based spool file.
 * No allocation: results live in struct addr.
 */
#ifndef POSTERN_ADDR_H
#define POSTERN_ADDR_H

#include <stddef.h>

#define ADDR_LOCAL_MAX 64
#define ADDR_DOMAIN_MAX 255
#define ADDR_PATH_MAX 256

#define ADDR_NULL_OK 0x01        /* "<>" allowed (reverse path) */
#define ADDR_UTF8 0x02           /* SMTPUTF8 in effect */
#define ADDR_POSTMASTER_OK 0x04  /* bare "<postmaster>" allowed (RCPT) */
#define ADDR_NO_BRACKETS_OK 0x08 /* accept a mailbox without <> (sendmail args) */

struct addr {
	char local[ADDR_LOCAL_MAX * 2 + 3];   /* as written, quotes kept */
	char domain[ADDR_DOMAIN_MAX + 1];     /* lower-cased unless literal */
	char text[ADDR_PATH_MAX + 1];         /* local@domain, "" for <> */
	int is_null;
	int is_literal;                       /* domain is [address-literal] */
	int is_quoted;
	int has_utf8;
};

/*
 * Parse a path at s[0..len).  On success returns 0 and sets *end to the
 * index just past '>' (the caller parses ESMTP parameters from there).
 * On failure returns -1 and points *why at a short reason for a 501 reply.
 */
int addr_parse_path(const char *s, size_t len, int flags, struct addr *out, size_t *end,
                    const char **why);
/* Parse a bare mailbox "local@domain" that must fill all of s. */
int addr_parse_mailbox(const char *s, int flags, struct addr *out, const char **why);
/* Is this a valid domain name (LDH labels, or UTF-8 labels with ADDR_UTF8)? */
int addr_valid_domain(const char *d, size_t len, int flags);

#endif
