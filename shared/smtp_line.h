/*
 * smtp_line - split CRLF-terminated lines out of a bounded input buffer.
 *
 * Only CRLF ends a line (RFC 5321 2.3.8).  A bare LF is reported as
 * LINE_BARELF and a NUL byte as LINE_NUL, so callers can refuse them
 * instead of guessing (SMTP smuggling, CVE-2023-51764 class).  A line with
 * no CRLF within `max` bytes (CRLF included) is LINE_TOOLONG; the caller
 * then calls smtp_line_skip() until it returns 1 so the rest of that line
 * is discarded without ever growing memory.
 * The returned line points into the buffer and is valid until the caller
 * drains `consumed` bytes.
 */
#ifndef POSTERN_SMTP_LINE_H
#define POSTERN_SMTP_LINE_H

#include <stddef.h>

#include "buf.h"

#define SMTP_CMD_MAX 512     /* command line incl. CRLF, RFC 5321 4.5.3.1.4 */
#define SMTP_REPLY_MAX 512   /* reply line incl. CRLF, RFC 5321 4.5.3.1.5 */
#define SMTP_TEXT_MAX 1000   /* text line incl. CRLF, RFC 5321 4.5.3.1.6 */

enum line_status { LINE_OK = 0, LINE_AGAIN, LINE_TOOLONG, LINE_BARELF, LINE_NUL };

struct line {
	const char *p;        /* line without CRLF, not NUL-terminated */
	size_t len;
	size_t consumed;      /* bytes to drain, CRLF included */
};

int smtp_line_read(const struct buf *in, struct line *out, size_t max);
/* Drop bytes up to and including the next CRLF (or LF); 1 when found. */
int smtp_line_skip(struct buf *in);

#endif
