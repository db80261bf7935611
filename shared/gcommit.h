/*
 * gcommit - group commit: make spool writes durable without blocking the
 * event loop, and with one flush for many messages.
 *
 * A writer finishes its file (write, rename into place: see
 * spool_submit_finish() and T1 in spool.h), then takes a ticket, handing
 * over the still-open file.  One thread calls syncfs() on the spool's file
 * system for all tickets taken so far; while it runs, new tickets gather
 * for the next call.  A flush that covers a single ticket with its file is
 * fdatasync(file) + fsync(directory) instead (below).  When a flush
 * returns, the event loop is told (an eventfd) and done(upto, err) runs in
 * the loop: every ticket <= upto is durable (err 0) or its flush failed
 * (err = its errno).  Tickets complete in order.
 *
 * Why syncfs() and not fsync() per file: one syncfs() makes every file
 * written so far durable together with the directory entries of their
 * renames (the file system's journal commits once and the disk's cache is
 * flushed once), so its cost is nearly that of a single fsync() whether it
 * covers one message or fifty.  Measured on the project machine (ext4 on
 * virtio): fsync(file) + fsync(dir) 0.47 ms per message one at a time;
 * syncfs() 0.29 ms for one message, 0.86 ms for eight.  Since Linux 5.8
 * syncfs() reports writeback errors of the file system, so a failed write
 * is never acknowledged.  The price: it also flushes other writers' dirty
 * data on the same file system (the logs, typically), so a flush that
 * covers one message, the usual case when few clients send, uses
 * fdatasync + fsync of the directory, which writes only that file and the
 * journal (less CPU, steadier).  A spool on its own file system gives the
 * steadiest latency (docs/performance.md).
 *
 * Without gcommit_start() (unit tests, fuzzing, one-shot tools),
 * gcommit_ticket() flushes at once and returns the result itself.
 */
#ifndef POSTERN_GCOMMIT_H
#define POSTERN_GCOMMIT_H

#include <stdint.h>

typedef void gcommit_done_fn(uint64_t upto, int err);

/* fs_fd: any fd on the spool's file system; entries_fd: the directory
 * the callers' files are renamed into (-1: none; both kept open).  Starts
 * the thread and registers the eventfd with the event loop.  -1, errno. */
int gcommit_start(int fs_fd, int entries_fd, gcommit_done_fn *done);
/* A ticket covering everything written and renamed before this call, in
 * *ticket.  fd: the file this ticket is for, still open (gcommit closes
 * it after the flush), or -1.  A flush that covers a single ticket with a
 * file is fdatasync(file) + fsync(entries directory) instead of syncfs():
 * the same durability for that file, without writing every other dirty
 * file on the file system (logs, say) and with less CPU.  Returns 0 when
 * the flush is pending (done() reports it), 1 when it is already done
 * (not started: synchronous), with *err set. */
int gcommit_ticket(int fd, uint64_t *ticket, int *err);
/* Tickets taken and not yet reported (for shutdown: wait until 0). */
uint64_t gcommit_pending(void);

#endif
