/*
 * ipc - framed messages between postern daemons, with fd passing.
 *
 * Transport: unix-domain SOCK_SEQPACKET, so the kernel keeps message
 * boundaries and a message is delivered whole or not at all.  A message is
 * a u32 type followed by fields: u32/u64 in host order (peers are on the
 * same host), strings as u32 length + bytes (no NUL on the wire, and an
 * embedded NUL is rejected when decoding).  At most IPC_MSG_MAX bytes.
 *
 * Decoding treats a peer like network input: every ipc_get_* checks the
 * remaining length and the caller's bound, and ipc_end() rejects trailing
 * bytes.  A sibling daemon that violates the protocol is a bug: callers
 * log_fatal() on it (STYLE.md).
 *
 * Ownership: struct ipc_msg owns its data (ipc_msg_free()).  A channel owns
 * its fd and queued output; ipc_chan_free() closes both.  Received fds
 * belong to the message callback, which must close or keep them.
 */
#ifndef POSTERN_IPC_H
#define POSTERN_IPC_H

#include <stddef.h>
#include <stdint.h>

#include "event.h"

#define IPC_MSG_MAX 65536

enum ipc_type {
	IPC_HELLO = 1,     /* any -> peer: role (str), pid (u32) */
	IPC_READY,         /* child -> master: serving */
	IPC_INCOMING,      /* smtpd -> queued: qid (str) of a file in incoming/ */
	IPC_JOB,           /* queued -> deliverd: see queued/dispatch.c */
	IPC_RESULT,        /* deliverd -> queued: qid, rcpt index, status, host, reply */
	IPC_DONE,          /* deliverd -> queued: qid, site_down (u32), and if
	                      site_down the reason: the job is finished */
	IPC_ADMIN,         /* master -> queued: request id (u32), command, argument (str) */
	IPC_ADMIN_REPLY,   /* queued -> master: request id, ok (u32), text (str) */
	IPC_USERS_FD,      /* master -> smtpd: auth_users path (str) + the file opened by root */
	IPC_TLS_PEM,       /* master -> smtpd: certificate chain and key, PEM text (str, str) */
	IPC_STATS,         /* child -> master: n (u32), n x (stat id u32, value u64); shared/stats.h */
	/* The deliverd pool (docs/architecture.md, "The deliverd pool"): */
	IPC_SPAWN,         /* queued -> master: one more deliverd, please; connected (u32) */
	IPC_RETIRE,        /* deliverd -> queued: idle for queue.max_idle, may I exit? (no fields) */
	IPC_RETIRE_REPLY,  /* queued -> deliverd: ok (u32); 1: removed from the pool, exit */
	IPC_RETIRED,       /* deliverd -> master: exiting 0, do not replace me; idle seconds (u32) */
};

struct ipc_msg {
	uint32_t type;
	unsigned char *data;
	size_t len;
	size_t pos;           /* read cursor */
	int fd;               /* passed descriptor or -1 */
	int overflow;         /* a put exceeded IPC_MSG_MAX */
};

void ipc_msg_init(struct ipc_msg *m, uint32_t type);
void ipc_msg_free(struct ipc_msg *m);
void ipc_put_u32(struct ipc_msg *m, uint32_t v);
void ipc_put_u64(struct ipc_msg *m, uint64_t v);
void ipc_put_str(struct ipc_msg *m, const char *s);
int ipc_get_u32(struct ipc_msg *m, uint32_t *v);
int ipc_get_u64(struct ipc_msg *m, uint64_t *v);
/* Copy a string field into out[max]: -1 if absent, too long or has NUL. */
int ipc_get_str(struct ipc_msg *m, char *out, size_t max);
int ipc_end(const struct ipc_msg *m);
/* Parse a raw datagram (type + fields); -1 if shorter than a type. */
int ipc_msg_parse(struct ipc_msg *m, const void *raw, size_t len);

struct ipc_chan;
typedef void ipc_msg_cb(struct ipc_chan *ch, struct ipc_msg *m, void *arg);
typedef void ipc_close_cb(struct ipc_chan *ch, void *arg);

/* Wrap a connected SEQPACKET fd and register it with the event loop. */
struct ipc_chan *ipc_chan_new(int fd, ipc_msg_cb *on_msg, ipc_close_cb *on_close, void *arg);
void ipc_chan_free(struct ipc_chan *ch);
int ipc_chan_fd(const struct ipc_chan *ch);
/* Queue m (and fd >= 0, which is dup'ed) for sending; m is consumed.
 * -1 if ch is NULL or the peer is gone; the close callback then runs from
 * the event loop, never from inside ipc_send(). */
int ipc_send(struct ipc_chan *ch, struct ipc_msg *m, int fd);
size_t ipc_pending(const struct ipc_chan *ch);

/* Blocking helpers for simple synchronous peers. */
int ipc_send_sync(int fd, struct ipc_msg *m, int pass_fd);
int ipc_recv_sync(int fd, struct ipc_msg *m, int timeout_ms);

/* Connect to a SEQPACKET socket by path (relative to cwd is fine). */
int ipc_connect(const char *path);
int ipc_listen(const char *path, int mode);

#endif
