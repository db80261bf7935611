/*
 * str - bounded string helpers.
 *
 * glibc 2.36 has no strlcpy; str_copy() fills that gap and reports
 * truncation so callers never silently cut a path or an address.
 * str_to_u64() parses a whole decimal string in [min, max] like strtonum().
 * Nothing here allocates except xstrdup()/xmalloc() family, which exit
 * with EX_OSERR on OOM (the caller owns and frees what they return).
 */
#ifndef POSTERN_STR_H
#define POSTERN_STR_H

#include <stddef.h>
#include <stdint.h>

/* Copy src into dst[size]; always NUL-terminates.  -1 if truncated. */
int str_copy(char *dst, const char *src, size_t size);
/* Append src to the NUL-terminated dst[size]; -1 if truncated. */
int str_append(char *dst, const char *src, size_t size);
/* snprintf that returns -1 on truncation or error, else the length. */
int str_fmt(char *dst, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* A duration in seconds the way `postern status` shows it: 59s, 90m,
 * 47h, 3d (the largest unit that still gives at least 2). */
void str_fmt_age(long s, char *out, size_t len);

/* Parse all of s as a decimal in [min, max].  -1 on junk or range. */
int str_to_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out);

/* ASCII-only case-insensitive compare (locale independent). */
int str_casecmp(const char *a, const char *b);
int str_ncasecmp(const char *a, const char *b, size_t n);
void str_lower(char *s);

/*
 * Write a log-safe rendering of src[len] into dst[size]: printable ASCII
 * is kept, everything else becomes \xHH, and '"' and '\\' are escaped.
 * Always NUL-terminates; truncates with "..." when dst is too small.
 */
void str_escape(char *dst, size_t size, const char *src, size_t len);

void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t m);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);

#endif
