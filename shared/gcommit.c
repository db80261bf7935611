/*
 * gcommit - group commit thread (see gcommit.h).
 *
 * The thread touches only the counters below (under mu), the spool fd and
 * the eventfd: no logging, no allocation, nothing of the event loop's, so
 * the rest of the process stays single-threaded in effect.
 */
#include "gcommit.h"
#include "event.h"
#include "log.h"
#include "str.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define RESULTS_MAX 64

struct result {
	uint64_t upto;
	int err;
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static uint64_t taken;              /* tickets handed out */
static uint64_t started;            /* highest ticket a running or done flush covers */
static uint64_t reported;           /* highest ticket done() was called for */
static struct result results[RESULTS_MAX];
static unsigned nresults;
static int sync_fd = -1, dir_fd = -1, wake_fd = -1;
static gcommit_done_fn *done_cb;
static int running;

/* Files handed over with their tickets, oldest first (under mu). */
struct pending {
	uint64_t ticket;
	int fd;
	struct pending *next;
};
static struct pending *pend_head, **pend_tail = &pend_head;

/* One flush for the tickets of `batch` (their files, if given, are
 * closed here).  A batch of one file: fdatasync() it and fsync() its
 * directory, which writes only that file and the journal; otherwise one
 * syncfs() for everything, however many. */
static int flush(struct pending *batch, int ntickets)
{
	int err;

	if (ntickets == 1 && batch != NULL && batch->next == NULL && batch->fd >= 0 && dir_fd >= 0)
		err = fdatasync(batch->fd) == -1 || fsync(dir_fd) == -1 ? errno : 0;
	else
		err = syncfs(sync_fd) == -1 ? errno : 0;
	while (batch) {
		struct pending *next = batch->next;
		if (batch->fd >= 0)
			close(batch->fd);
		free(batch);
		batch = next;
	}
	return err;
}

/* Detach the pending files of tickets <= upto (under mu). */
static struct pending *take_pending(uint64_t upto)
{
	struct pending *head = pend_head, **pp = &pend_head;

	while (*pp && (*pp)->ticket <= upto)
		pp = &(*pp)->next;
	pend_head = *pp;
	*pp = NULL;
	if (pend_head == NULL)
		pend_tail = &pend_head;
	return head == pend_head ? NULL : head;
}

static void *committer(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&mu);
	for (;;) {
		/* Wait for work, and for room to report it: the loop drains
		 * results on every wake, so the ring never stays full long. */
		while (taken == started || nresults == RESULTS_MAX)
			pthread_cond_wait(&cv, &mu);
		uint64_t target = taken;
		int ntickets = (int)(target - started);
		started = target;
		struct pending *batch = take_pending(target);
		pthread_mutex_unlock(&mu);

		int err = flush(batch, ntickets);

		pthread_mutex_lock(&mu);
		results[nresults].upto = target;
		results[nresults].err = err;
		nresults++;
		uint64_t one = 1;
		if (write(wake_fd, &one, sizeof(one)) == -1) {
			/* eventfd write fails only when the counter would
			 * overflow: the loop is already due to wake. */
		}
	}
	return NULL;
}

static void on_wake(int fd, int events, void *arg)
{
	struct result batch[RESULTS_MAX];
	unsigned n;
	uint64_t v;

	(void)events;
	(void)arg;
	if (read(fd, &v, sizeof(v)) == -1 && errno != EAGAIN)
		log_error("event=gcommit_error what=eventfd_read error=%s", log_q(strerror(errno)));
	pthread_mutex_lock(&mu);
	n = nresults;
	memcpy(batch, results, n * sizeof(batch[0]));
	nresults = 0;
	pthread_cond_signal(&cv);
	pthread_mutex_unlock(&mu);
	for (unsigned i = 0; i < n; i++) {
		reported = batch[i].upto;
		done_cb(batch[i].upto, batch[i].err);
	}
}

int gcommit_start(int fs_fd, int entries_fd, gcommit_done_fn *done)
{
	pthread_t t;
	pthread_attr_t attr;
	int e;

	sync_fd = fs_fd;
	dir_fd = entries_fd;
	done_cb = done;
	wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (wake_fd == -1)
		return -1;
	if (ev_add(wake_fd, EV_READ, on_wake, NULL) == -1) {
		e = errno;
		close(wake_fd);
		errno = e;
		return -1;
	}
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	/* It calls syncfs and write: a small stack is plenty. */
	pthread_attr_setstacksize(&attr, 64 * 1024);
	e = pthread_create(&t, &attr, committer, NULL);
	pthread_attr_destroy(&attr);
	if (e != 0) {
		ev_del(wake_fd);
		close(wake_fd);
		errno = e;
		return -1;
	}
	running = 1;
	return 0;
}

int gcommit_ticket(int fd, uint64_t *ticket, int *err)
{
	struct pending *p = xmalloc(sizeof(*p));

	p->fd = fd;
	p->next = NULL;
	if (!running) {
		/* Synchronous.  The spool is the working directory of every
		 * daemon, so "." is on its file system. */
		int own = sync_fd < 0;
		if (own && (sync_fd = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1) {
			*err = errno;
			sync_fd = -1;
			if (fd >= 0)
				close(fd);
			free(p);
			*ticket = ++taken;
			started = reported = taken;
			return 1;
		}
		*ticket = p->ticket = ++taken;
		*err = flush(p, 1);
		started = reported = taken;
		if (own) {
			close(sync_fd);
			sync_fd = -1;
		}
		return 1;
	}
	pthread_mutex_lock(&mu);
	*ticket = p->ticket = ++taken;
	*pend_tail = p;
	pend_tail = &p->next;
	pthread_cond_signal(&cv);
	pthread_mutex_unlock(&mu);
	*err = 0;
	return 0;
}

uint64_t gcommit_pending(void)
{
	uint64_t n;

	pthread_mutex_lock(&mu);
	n = taken - reported;
	pthread_mutex_unlock(&mu);
	return n;
}
