/*
 * queued - owns the spool after submission: takeover, scheduling,
 * retries, results, removal.  Internal interfaces of queued/.
 *
 * Memory: one struct msg per queued message with its envelope addresses
 * and per-recipient state (never the body).  The msg table owns them;
 * queue_msg_free() is the one teardown.
 */
#ifndef POSTERN_QUEUED_H
#define POSTERN_QUEUED_H

#include <stdint.h>
#include <sys/types.h>

#include "config.h"
#include "event.h"
#include "ipc.h"
#include "buf.h"
#include "msgtext.h"
#include "spool.h"

enum transport { TR_LOCAL = 0, TR_RELAY, TR_MX };

struct job;

struct msg {
	char qid[QID_MAX];
	char *sender;               /* owned; "" for the null sender */
	int64_t arrival;
	uint64_t size;
	char **rcpt;                /* owned */
	size_t nrcpt;
	struct spool_state st;      /* owned */
	int has_state;              /* state/QID exists (T5 written at least once) */
	unsigned jobs_out;          /* jobs queued or running */
	int queued_ready;           /* on the ready list */
	int delete_pending;         /* admin asked for deletion during a delivery */
	struct ev_timer retry;
	struct msg *hnext;          /* hash chain */
	struct msg *rnext;          /* ready list */
};

struct job {
	struct msg *msg;
	int transport;
	char nexthop[256];
	uint32_t *idx;              /* recipient indexes (owned) */
	size_t n;
	uint8_t *answered;          /* per idx: result received */
	struct job *next;
};

struct worker {
	struct ipc_chan *ch;
	int role;                   /* 0 unknown, 1 smtpd, 2 deliverd */
	int pid;
	struct job *job;            /* running job, or NULL when idle */
	char lasthop[260];          /* transport:nexthop of its last job (connection reuse) */
	struct worker *next;        /* idle list */
	struct worker *all_next;    /* list of every deliverd */
	int retired;                /* RETIRE accepted: off both lists, exiting */
};

/*
 * pool.c: the deliverd pool as queued sees it.  The master starts
 * config_pool_min() deliverd; queued asks it for one more (IPC_SPAWN)
 * when a job could run but no deliverd is idle and fewer than
 * queue.concurrency are connected.  One request is outstanding at a time:
 * it is answered by the next deliverd that connects (HELLO), or lapses
 * after POOL_ASK_WAIT_MS (the master refuses silently when the pool is
 * full or a deliverd is still starting).  So a backlog grows the pool one
 * process per HELLO, never a burst of forks.  A deliverd idle for
 * queue.max_idle asks to retire (IPC_RETIRE); it may if it has no job and
 * at least the minimum would remain.
 */
#define POOL_ASK_WAIT_MS 2000
struct pool {
	unsigned alive;             /* deliverd connected (HELLO), minus the retired */
	int requested;              /* an IPC_SPAWN is outstanding */
	uint64_t asked_ms;          /* when it was sent (monotonic) */
};
void pool_connected(struct pool *p);        /* a deliverd said HELLO */
void pool_gone(struct pool *p);             /* a connected deliverd went away */
/* Could a request be sent now (none outstanding, none idle, below max)?
 * Cheap: ask it before looking for work.  A lapsed request is dropped. */
int pool_can_ask(struct pool *p, unsigned idle, int max, uint64_t now_ms);
void pool_asked(struct pool *p, uint64_t now_ms);   /* IPC_SPAWN sent */
/* Both: 1 when IPC_SPAWN should be sent (it is then outstanding).  idle:
 * deliverd without a job; work: a job or ready message could run on
 * another one. */
int pool_should_ask(struct pool *p, unsigned idle, int work, int max, uint64_t now_ms);
/* 1: the asking deliverd may retire (and no longer counts as alive). */
int pool_may_retire(struct pool *p, int busy, int min);

extern struct config *cfg;

/* queue.c: the message table and spool transitions */
struct msg *queue_find(const char *qid);
size_t queue_count(void);
int queue_takeover(const char *qid);        /* T2 for incoming/QID */
void queue_recover(void);                   /* start-up scan */
void queue_scan_incoming(void);
/* Call fn for every message; fn may remove the message it is given. */
void queue_foreach(int (*fn)(struct msg *, void *), void *arg);

/* admin.c: delete/hold/release/flush requested through the master */
void admin_handle(struct ipc_chan *master, struct ipc_msg *m);
void queue_msg_free(struct msg *m);
void queue_remove(struct msg *m);           /* T4 and free */
int queue_write_state(struct msg *m);       /* T5 */
void queue_commit_done(uint64_t upto, int err);   /* gcommit callback: logs failures */

/* bounce.c: delivery status notifications */
enum { DSN_FAILED = 1, DSN_DELAYED };
/* Queue a DSN to m's sender about recipients idx[0..n).  0 when queued. */
int bounce_send(struct msg *m, int kind, const size_t *idx, size_t n);
void bounce_parse_error(const char *err, int failed, char *host, size_t hl, char *diag, size_t dl,
                        char *status, size_t sl);

/* schedule.c: ready list, jobs, workers, results, the pool's size */
void schedule_init(struct ipc_chan *master);  /* where IPC_SPAWN goes */
void schedule_msg(struct msg *m);           /* consider m for delivery now or later */
void schedule_loaded(struct msg *m);        /* after recovery: deliver, or finish */
void schedule_settle_final(struct msg *m);  /* all recipients final: DSNs, removal */
void schedule_worker_idle(struct worker *w);
void schedule_worker_gone(struct worker *w);
/* IPC_RETIRE from w: 1 if accepted (w is off the lists; it will exit). */
int schedule_retire(struct worker *w);
void schedule_result(struct worker *w, struct ipc_msg *m);
void schedule_done(struct worker *w, struct ipc_msg *m);
void schedule_kick(void);
void schedule_resume_hops(void);            /* flush: end every destination's suspension */
void schedule_forget(struct msg *m);        /* before m is freed */
int transport_of(const char *rcpt, char *nexthop, size_t len);

/* pickup.c: sendmail drops into messages (T7 of shared/spool.h) */
struct pickup_drop {
	uid_t uid;
	int64_t time;
	int has_sender;
	char sender[MSGTEXT_ADDR_MAX + 1];      /* as written; checked on use */
	int has_fullname;
	char fullname[MSGTEXT_NAME_MAX + 1];
	int t;
	char **rcpt;                /* owned; pickup_drop_free() */
	size_t nrcpt;
	uint64_t data_off;          /* the message in the file */
	uint64_t data_len;
};
enum { PICKUP_DONE = 0, PICKUP_RETRY = -1, PICKUP_CORRUPT = -2 };
/* Bound of a drop file's header for max_rcpt recipients. */
uint64_t pickup_hdr_max(size_t max_rcpt);
/* Parse the drop file open on fd (size bytes): header and end marker.
 * -1 with err on anything malformed or beyond max_size / max_rcpt. */
int pickup_parse(int fd, uint64_t size, uint64_t max_size, size_t max_rcpt,
                 struct pickup_drop *d, char *err, size_t errlen);
void pickup_drop_free(struct pickup_drop *d);
/* T7 for drop/NAME: PICKUP_DONE (also when it is gone), PICKUP_RETRY
 * (a temporary error, left in place), PICKUP_CORRUPT (moved to corrupt/). */
int pickup_file(const char *name);
void pickup_init(void);                     /* inotify, first scan, timer */
int pickup_scan(void);                      /* 1 if more drops are waiting */

#endif
