/*
 * smtp_reply - parse SMTP server replies, one line at a time (RFC 5321 4.2).
 *
 * Every line must start with a three-digit code in [2-5][0-5][0-9],
 * followed by '-' (more lines), ' ' or nothing (last line); all lines of a
 * reply carry the same code.  Anything else is a protocol error, never a
 * read past the end of a short line (OpenSMTPD CVE-2020-8794).  At most
 * SMTP_REPLY_LINES lines; the text of all lines is joined with " / " into
 * a bounded buffer (cut with "..." when longer).
 */
#ifndef POSTERN_SMTP_REPLY_H
#define POSTERN_SMTP_REPLY_H

#include <stddef.h>

#define SMTP_REPLY_LINES 100
#define SMTP_REPLY_TEXT 1024

struct smtp_reply {
	int code;
	int nlines;
	char text[SMTP_REPLY_TEXT];   /* "250-first / second" style, code included once */
	size_t tlen;
};

void smtp_reply_init(struct smtp_reply *r);
/* 1: reply complete; 0: continuation expected; -1: protocol error. */
int smtp_reply_line(struct smtp_reply *r, const char *line, size_t len);
/* The lines of a multi-line EHLO reply are also offered one by one:
 * smtp_reply_has_ext() checks the joined text for a keyword line. */
int smtp_reply_has_ext(const struct smtp_reply *r, const char *kw, const char **arg);

#endif
