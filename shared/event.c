#include "event.h"
#include "log.h"
#include "str.h"

#include <errno.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

struct watch {
	ev_fd_cb *cb;
	void *arg;
	int events;
	int active;
};

static int epfd = -1;
static struct watch *watches;
static int nwatches;
static struct ev_timer **heap;
static int heap_len, heap_size;
static int stopping;

uint64_t ev_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int ev_init(void)
{
	if (epfd != -1)
		return 0;
	epfd = epoll_create1(EPOLL_CLOEXEC);
	if (epfd == -1) {
		log_error("event=error what=epoll_create error=%s", log_q(strerror(errno)));
		return -1;
	}
	return 0;
}

static uint32_t to_epoll(int events)
{
	uint32_t e = 0;
	if (events & EV_READ)
		e |= EPOLLIN;
	if (events & EV_WRITE)
		e |= EPOLLOUT;
	return e;
}

int ev_add(int fd, int events, ev_fd_cb *cb, void *arg)
{
	struct epoll_event ee = { .events = to_epoll(events), .data.fd = fd };

	if (fd < 0) {
		log_error("event=error what=epoll_ctl fd=%d error=\"negative fd\"", fd);
		return -1;
	}
	if (fd >= nwatches) {
		int n = nwatches ? nwatches : 64;
		while (n <= fd)
			n *= 2;
		watches = xrealloc(watches, (size_t)n * sizeof(*watches));
		memset(watches + nwatches, 0, (size_t)(n - nwatches) * sizeof(*watches));
		nwatches = n;
	}
	int op = watches[fd].active ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
	if (epoll_ctl(epfd, op, fd, &ee) == -1) {
		log_error("event=error what=epoll_ctl fd=%d error=%s", fd, log_q(strerror(errno)));
		return -1;
	}
	watches[fd] = (struct watch){ cb, arg, events, 1 };
	return 0;
}

int ev_mod(int fd, int events)
{
	struct epoll_event ee = { .events = to_epoll(events), .data.fd = fd };

	if (fd < 0 || fd >= nwatches || !watches[fd].active)
		return -1;
	if (watches[fd].events == events)
		return 0;
	if (epoll_ctl(epfd, EPOLL_CTL_MOD, fd, &ee) == -1)
		return -1;
	watches[fd].events = events;
	return 0;
}

void ev_del(int fd)
{
	if (fd < 0 || fd >= nwatches || !watches[fd].active)
		return;
	epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL);
	watches[fd].active = 0;
}

/* --- timers: binary min-heap on when_ms --- */

static void heap_set(int i, struct ev_timer *t)
{
	heap[i] = t;
	t->slot = i;
}

static void sift_up(int i)
{
	struct ev_timer *t = heap[i];
	while (i > 0) {
		int p = (i - 1) / 2;
		if (heap[p]->when_ms <= t->when_ms)
			break;
		heap_set(i, heap[p]);
		i = p;
	}
	heap_set(i, t);
}

static void sift_down(int i)
{
	struct ev_timer *t = heap[i];
	for (;;) {
		int l = 2 * i + 1, r = l + 1, m = i;
		uint64_t mw = t->when_ms;
		if (l < heap_len && heap[l]->when_ms < mw) {
			m = l;
			mw = heap[l]->when_ms;
		}
		if (r < heap_len && heap[r]->when_ms < mw)
			m = r;
		if (m == i)
			break;
		heap_set(i, heap[m]);
		i = m;
	}
	heap_set(i, t);
}

void ev_timer_init(struct ev_timer *t, ev_timer_cb *cb, void *arg)
{
	t->cb = cb;
	t->arg = arg;
	t->slot = -1;
	t->when_ms = 0;
}

void ev_timer_del(struct ev_timer *t)
{
	int i = t->slot;

	if (i < 0)
		return;
	t->slot = -1;
	heap_len--;
	if (i == heap_len)
		return;
	heap_set(i, heap[heap_len]);
	sift_down(i);
	sift_up(heap[i]->slot);
}

void ev_timer_add(struct ev_timer *t, uint64_t after_ms)
{
	ev_timer_del(t);
	t->when_ms = ev_now_ms() + after_ms;
	if (heap_len == heap_size) {
		heap_size = heap_size ? heap_size * 2 : 64;
		heap = xrealloc(heap, (size_t)heap_size * sizeof(*heap));
	}
	heap_set(heap_len, t);
	sift_up(heap_len++);
}

static void run_timers(void)
{
	uint64_t now = ev_now_ms();

	while (heap_len > 0 && heap[0]->when_ms <= now) {
		struct ev_timer *t = heap[0];
		ev_timer_del(t);
		t->cb(t->arg);
	}
}

void ev_once(int max_ms)
{
	struct epoll_event evs[256];
	int timeout = max_ms, n;

	if (heap_len > 0) {
		uint64_t now = ev_now_ms();
		int64_t d = (int64_t)heap[0]->when_ms - (int64_t)now;
		if (d < 0)
			d = 0;
		if (timeout < 0 || d < timeout)
			timeout = (int)(d > 3600000 ? 3600000 : d);
	}
	n = epoll_wait(epfd, evs, 256, timeout);
	if (n == -1 && errno != EINTR)
		log_panic("event=panic what=epoll_wait error=%s", log_q(strerror(errno)));
	for (int i = 0; i < n; i++) {
		int fd = evs[i].data.fd;
		int e = 0;
		if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
			e |= EV_READ;
		if (evs[i].events & (EPOLLOUT | EPOLLHUP | EPOLLERR))
			e |= EV_WRITE;
		/* A callback earlier in this batch may have removed this fd. */
		if (fd < nwatches && watches[fd].active) {
			e &= watches[fd].events | ((evs[i].events & (EPOLLHUP | EPOLLERR)) ? EV_READ : 0);
			if (e)
				watches[fd].cb(fd, e, watches[fd].arg);
		}
	}
	run_timers();
}

void ev_run(void)
{
	stopping = 0;
	while (!stopping)
		ev_once(-1);
}

void ev_stop(void)
{
	stopping = 1;
}
