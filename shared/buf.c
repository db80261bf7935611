#include "buf.h"
#include "str.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void buf_init(struct buf *b, size_t cap)
{
	memset(b, 0, sizeof(*b));
	b->cap = cap;
}

void buf_free(struct buf *b)
{
	free(b->data);
	memset(b, 0, sizeof(*b));
}

void buf_shrink(struct buf *b)
{
	if (b->off != b->len)
		return;
	free(b->data);
	b->data = NULL;
	b->off = b->len = b->size = 0;
}

void buf_reset(struct buf *b)
{
	b->off = b->len = 0;
}

static void compact(struct buf *b)
{
	if (b->off == 0)
		return;
	if (b->len > b->off)
		memmove(b->data, b->data + b->off, b->len - b->off);
	b->len -= b->off;
	b->off = 0;
}

char *buf_reserve(struct buf *b, size_t n)
{
	if (n > buf_room(b))
		return NULL;
	if (b->size - b->len < n) {
		compact(b);
		if (b->size - b->len < n) {
			size_t want = b->size ? b->size : 256;
			while (want - b->len < n)
				want *= 2;
			if (want > b->cap + 1)
				want = b->cap + 1;
			b->data = xrealloc(b->data, want);
			b->size = want;
		}
	}
	return b->data + b->len;
}

void buf_commit(struct buf *b, size_t n)
{
	b->len += n;
}

int buf_append(struct buf *b, const void *p, size_t n)
{
	char *dst;

	if (n == 0)
		return 0;
	if ((dst = buf_reserve(b, n)) == NULL)
		return -1;
	memcpy(dst, p, n);
	b->len += n;
	return 0;
}

int buf_appendf(struct buf *b, const char *fmt, ...)
{
	char tmp[1024];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(tmp))
		return -1;
	return buf_append(b, tmp, (size_t)n);
}

void buf_drain(struct buf *b, size_t n)
{
	if (n >= buf_used(b)) {
		b->off = b->len = 0;
		return;
	}
	b->off += n;
}

ssize_t buf_read_fd(struct buf *b, int fd)
{
	size_t room = buf_room(b);
	size_t want = room < 16384 ? room : 16384;
	char *dst;
	ssize_t r;

	if (want == 0)
		return -2;
	if ((dst = buf_reserve(b, want)) == NULL)
		return -2;
	do {
		r = read(fd, dst, want);
	} while (r == -1 && errno == EINTR);
	if (r > 0)
		b->len += (size_t)r;
	return r;
}
