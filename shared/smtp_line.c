#include "smtp_line.h"

#include <string.h>

int smtp_line_read(const struct buf *in, struct line *out, size_t max)
{
	const char *p = buf_head(in);
	size_t n = buf_used(in);
	size_t lim = n < max ? n : max;

	for (size_t i = 0; i < lim; i++) {
		if (p[i] == '\0')
			return LINE_NUL;
		if (p[i] == '\n') {
			if (i == 0 || p[i - 1] != '\r') {
				out->p = p;
				out->len = i;
				out->consumed = i + 1;
				return LINE_BARELF;
			}
			out->p = p;
			out->len = i - 1;
			out->consumed = i + 1;
			return LINE_OK;
		}
	}
	if (n >= max)
		return LINE_TOOLONG;
	return LINE_AGAIN;
}

int smtp_line_skip(struct buf *in)
{
	const char *p = buf_head(in);
	const char *nl;

	if (buf_used(in) == 0)
		return 0;     /* also: memchr() on a never-allocated (NULL) buffer is UB */
	nl = memchr(p, '\n', buf_used(in));
	if (nl == NULL) {
		/* Keep a trailing CR: it may pair with an LF in the next read. */
		size_t n = buf_used(in);
		if (n > 0 && p[n - 1] == '\r')
			buf_drain(in, n - 1);
		else
			buf_drain(in, n);
		return 0;
	}
	buf_drain(in, (size_t)(nl - p) + 1);
	return 1;
}
