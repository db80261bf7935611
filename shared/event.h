/*
 * event - a small epoll loop with timers (in the spirit of redis ae.c).
 *
 * One loop per process.  File events: a callback per fd for readable and
 * writable readiness.  Timers: one-shot, kept in a binary min-heap so that
 * thousands of per-connection timeouts cost O(log n) each.  A struct
 * ev_timer is owned by the caller (embed it in the session); ev_timer_del()
 * must be called before freeing it if it is armed.
 *
 * Errors: ev_init() and ev_add() return -1 and log why.
 */
#ifndef POSTERN_EVENT_H
#define POSTERN_EVENT_H

#include <stdint.h>

#define EV_READ 1
#define EV_WRITE 2

typedef void ev_fd_cb(int fd, int events, void *arg);
typedef void ev_timer_cb(void *arg);

struct ev_timer {
	uint64_t when_ms;
	ev_timer_cb *cb;
	void *arg;
	int slot;             /* heap index, -1 when not armed */
};

int ev_init(void);
/* Watch fd for `events` (EV_READ|EV_WRITE); replaces an earlier watch. */
int ev_add(int fd, int events, ev_fd_cb *cb, void *arg);
int ev_mod(int fd, int events);
void ev_del(int fd);

void ev_timer_init(struct ev_timer *t, ev_timer_cb *cb, void *arg);
void ev_timer_add(struct ev_timer *t, uint64_t after_ms);
void ev_timer_del(struct ev_timer *t);
static inline int ev_timer_armed(const struct ev_timer *t) { return t->slot >= 0; }

uint64_t ev_now_ms(void);     /* monotonic milliseconds */
void ev_run(void);            /* until ev_stop() */
void ev_stop(void);
/* One iteration, waiting at most max_ms (-1: until an event or timer). */
void ev_once(int max_ms);

#endif
