/*
 * msgtext - the RFC 5322 message text of a local submission: the one
 * place that decides how postern-sendmail input becomes a message, shared
 * by postern-sendmail (to reject bad input with a clear exit status) and
 * queued's pickup (which re-does every check on the drop file, as hostile
 * input).  Both run the same code, so a drop the command accepted is
 * never one that pickup rejects.
 *
 * Conversion (struct msgtext, a byte-at-a-time state machine fed with
 * chunks split anywhere):
 *   - line ends: CRLF, bare LF and bare CR each end a line and are written
 *     as CRLF; a last line without an end gets one.
 *   - a line longer than MSGTEXT_LINE_MAX (998) octets is wrapped, never
 *     rejected (cron and PHP scripts send long lines): in the body with a
 *     plain CRLF, in the header section with CRLF SP, a folding point, so
 *     the field goes on (RFC 5322 2.1.1, 2.2.3; Postfix wraps likewise).
 *   - a NUL byte is an error (MSGTEXT_ERR_NUL).
 *   - the header section is the longest run of fields ("name:" with a
 *     printable-ASCII name, optional WSP before the colon) and their
 *     continuation lines from the start.  It ends at an empty line, or at
 *     the first line that is neither; in that case (no header at all, or
 *     a body with no blank line) the blank line is inserted.
 *   - with MSGTEXT_DROP_BCC, Bcc: fields (and their continuations) are left
 *     out; with MSGTEXT_CAPTURE the values of To:, Cc: and Bcc: are kept
 *     in `addrs` (each ended by a NUL, bounded by MSGTEXT_ADDRS_MAX) for
 *     sendmail -t.
 *   - `extra` (complete CRLF-ended header lines, e.g. a missing Date:) is
 *     written at the end of the header section, before the blank line.
 *   - `size` counts the output bytes except `extra`; above `max` (if not 0)
 *     the conversion stops with MSGTEXT_ERR_SIZE.
 * A NULL sink measures only.  After the first error nothing more is
 * emitted and feed/finish return -1.
 *
 * Address lists (msgtext_addrlist): RFC 5322 3.4 at a practical level:
 * comments (nested, quoted-pairs), quoted strings (commas inside),
 * "Name <addr>", source routes "<@a,@b:x@y>", groups "list: a@b, c@d;"
 * (including the empty "undisclosed-recipients:;"), obsolete empty list
 * elements.  Each addr-spec is handed to a callback with comments and
 * whitespace removed; the callback validates it (msgtext_mailbox).
 *
 * Ownership: struct msgtext owns `addrs`; msgtext_free() releases it.
 * struct msgtext_rcpts owns its strings; msgtext_rcpts_free().
 */
#ifndef POSTERN_MSGTEXT_H
#define POSTERN_MSGTEXT_H

#include <stddef.h>
#include <stdint.h>

#include "addr.h"
#include "buf.h"

#define MSGTEXT_LINE_MAX 998              /* octets before CRLF */
#define MSGTEXT_ADDRS_MAX (256 * 1024)    /* To/Cc/Bcc text kept for -t */
#define MSGTEXT_ADDR_MAX 512              /* one addr-spec as written */
#define MSGTEXT_NAME_MAX 256              /* a display name (sendmail -F) */

#define MSGTEXT_DROP_BCC 0x01
#define MSGTEXT_CAPTURE 0x02

#define MSGTEXT_SEEN_FROM 0x01
#define MSGTEXT_SEEN_DATE 0x02
#define MSGTEXT_SEEN_MSGID 0x04

enum msgtext_err {
	MSGTEXT_OK = 0,
	MSGTEXT_ERR_NUL,      /* a NUL byte */
	MSGTEXT_ERR_SIZE,     /* more than max output bytes */
	MSGTEXT_ERR_ADDRS,    /* To/Cc/Bcc longer than MSGTEXT_ADDRS_MAX */
	MSGTEXT_ERR_SINK,     /* the sink failed */
};

typedef int msgtext_sink(void *arg, const char *p, size_t n);

struct msgtext {
	/* set by msgtext_init */
	uint64_t max;
	int flags;
	msgtext_sink *sink;
	void *arg;
	const char *extra;
	size_t extralen;
	/* results */
	uint64_t size;        /* output bytes, `extra` not included */
	int err;              /* enum msgtext_err */
	int eightbit;         /* saw a byte >= 0x80 */
	int seen;             /* MSGTEXT_SEEN_* */
	struct buf addrs;     /* MSGTEXT_CAPTURE: To/Cc/Bcc values, NUL-ended */
	/* state */
	int phase;
	int cr;
	int midline;
	int any_field;
	int keep;
	int capture;
	int name_ws;
	size_t col;
	size_t nlen;
	char name[MSGTEXT_LINE_MAX + 1];
	size_t olen;
	char out[8192];
};

void msgtext_init(struct msgtext *m, int flags, uint64_t max, msgtext_sink *sink, void *arg,
                  const char *extra, size_t extralen);
int msgtext_feed(struct msgtext *m, const char *p, size_t n);
/* End of input: end the last line, close the header section, flush. */
int msgtext_finish(struct msgtext *m);
void msgtext_free(struct msgtext *m);
const char *msgtext_strerror(int err);

/* Call cb for each addr-spec of an address list s[0..len).  -1 with *why
 * on a syntax error; a callback's non-zero value is returned as it is,
 * with *why NULL (the callback keeps its own reason). */
typedef int msgtext_addr_cb(void *arg, const char *addr);
int msgtext_addrlist(const char *s, size_t len, msgtext_addr_cb *cb, void *arg, const char **why);

/* Qualify (append "@domain" when there is no '@' outside quotes) and
 * validate one mailbox with addr_parse_mailbox(ADDR_UTF8). */
int msgtext_mailbox(const char *in, const char *domain, struct addr *out, const char **why);
/* login@domain for a login name, the whole name being the local part:
 * quoted when it is not a dot-atom ("John Doe", "user@corp").  -1 if even
 * that is not a valid address (control bytes, bad UTF-8, too long). */
int msgtext_login(const char *login, const char *domain, struct addr *out, const char **why);
/* The envelope sender from sendmail -f: "" or "<>" is the null sender
 * (out->text ""), "<x>" and "x" a mailbox as in msgtext_mailbox(). */
int msgtext_sender(const char *in, const char *domain, struct addr *out, const char **why);

/* A display name as an RFC 5322 phrase: kept as atoms when it can be,
 * else a quoted-string; non-ASCII becomes RFC 2047 encoded-words
 * (UTF-8, B), folded with CRLF SP.  -1 if it has a control byte or does
 * not fit out[outlen]. */
int msgtext_phrase(const char *name, char *out, size_t outlen);

/* A recipient set: qualified, validated, de-duplicated, at most max. */
struct msgtext_rcpts {
	char **v;             /* owned; addr.text of each, in first-seen order */
	size_t n;
	size_t max;
	int utf8;             /* some address needs SMTPUTF8 */
	size_t *slot;         /* hash set of indexes + 1 (0 empty) */
	size_t nslot;
};

void msgtext_rcpts_init(struct msgtext_rcpts *r, size_t max);
/* 0 added (or already there); -1 invalid, -2 one too many; err says why. */
int msgtext_rcpts_add(struct msgtext_rcpts *r, const char *addr, const char *domain, char *err,
                      size_t errlen);
/* Add every address of the captured To/Cc/Bcc values (sendmail -t):
 * 0, or -1/-2 as msgtext_rcpts_add (a syntax error is -1). */
int msgtext_rcpts_from_headers(struct msgtext_rcpts *r, const struct msgtext *m,
                               const char *domain, char *err, size_t errlen);
void msgtext_rcpts_free(struct msgtext_rcpts *r);

#endif
