/*
 * buf - a byte buffer with a hard cap fixed at creation.
 *
 * Everything read from the network or from disk lands in a struct buf, so
 * a hostile peer can make it grow only up to the cap the caller named.
 * buf_append() fails (-1, contents unchanged) rather than exceed the cap.
 * The buffer owns its storage; buf_free() releases it.  Data is consumed
 * from the front with buf_drain(), which compacts lazily.
 */
#ifndef POSTERN_BUF_H
#define POSTERN_BUF_H

#include <stddef.h>
#include <sys/types.h>

struct buf {
	char *data;
	size_t off;   /* start of unconsumed bytes */
	size_t len;   /* end of valid bytes (data[off..len)) */
	size_t size;  /* allocated */
	size_t cap;   /* hard upper bound on len - off */
};

void buf_init(struct buf *b, size_t cap);
/* Empty: give the memory back (an idle connection then holds none). */
void buf_shrink(struct buf *b);
void buf_free(struct buf *b);
void buf_reset(struct buf *b);

static inline size_t buf_used(const struct buf *b) { return b->len - b->off; }
/* Never NULL + offset (undefined behaviour): an unallocated buffer has no
 * head, and callers only read it when buf_used() > 0. */
static inline char *buf_head(const struct buf *b) { return b->data ? b->data + b->off : b->data; }
static inline size_t buf_room(const struct buf *b) { return b->cap - buf_used(b); }

int buf_append(struct buf *b, const void *p, size_t n);
int buf_appendf(struct buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void buf_drain(struct buf *b, size_t n);

/* Ensure n free bytes at the tail (within the cap); returns the pointer. */
char *buf_reserve(struct buf *b, size_t n);
void buf_commit(struct buf *b, size_t n);

/* read(2) up to the cap: >0 bytes, 0 EOF, -1 error (errno), -2 full. */
ssize_t buf_read_fd(struct buf *b, int fd);

#endif
