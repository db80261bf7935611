/*
 * fdio - whole-buffer writes to a blocking descriptor (files, pipes).
 * fdio_write_all() retries short writes and EINTR; -1 with errno set
 * (EIO for a write that returned 0).
 */
#ifndef POSTERN_FDIO_H
#define POSTERN_FDIO_H

#include <stddef.h>

int fdio_write_all(int fd, const void *p, size_t n);

#endif
