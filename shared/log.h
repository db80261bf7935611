/*
 * log - one key=value line per event, one file per component.
 *
 * Line format:  TIMESTAMP LEVEL COMPONENT event=NAME key=value ...
 * e.g.  2026-12-04T21:30:01.123Z info smtpd event=accepted qid=6751A3C9... 
 * Each line is written with a single write(2) on an O_APPEND descriptor,
 * so lines from concurrent processes never interleave.  The log directory
 * is opened once (before privileges are dropped) and kept as a dirfd so
 * log_reopen() works for logrotate even when the path is unreachable for
 * the unprivileged user.
 *
 * Tiers (Postfix msg.c): log_warn recovers; log_fatal(code, ...) exits
 * with a sysexits code; log_panic() is a bug and abort()s.
 * Untrusted text must go through log_q() (quotes and escapes it).
 */
#ifndef POSTERN_LOG_H
#define POSTERN_LOG_H

#include <stddef.h>

enum log_level { LOG_LVL_DEBUG = 0, LOG_LVL_INFO, LOG_LVL_WARN, LOG_LVL_ERROR };

/* Open DIR/COMPONENT.log.  dir NULL: log to stderr only.  -1 on error. */
int log_open(const char *component, const char *dir, int level, int use_syslog);
int log_reopen(void);
void log_close(void);
void log_set_level(int level);
void log_set_syslog(int on);       /* log.syslog, also on reload */
void log_set_stderr(int on);        /* also copy lines to stderr */
int log_level_parse(const char *s); /* -1 if unknown */
const char *log_component(void);

void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
_Noreturn void log_fatal(int code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
_Noreturn void log_panic(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

/*
 * Quote an untrusted value for a log line: returns "..." with non-printable
 * bytes as \xHH.  Uses a small ring of static buffers so up to 4 calls may
 * appear in one log statement; each result is cut at 400 bytes.
 */
const char *log_q(const char *s);
const char *log_qn(const char *s, size_t len);

#endif
