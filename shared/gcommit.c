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

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
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
static int sync_fd = -1, wake_fd = -1;
static gcommit_done_fn *done_cb;
static int running;

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
		started = target;
		pthread_mutex_unlock(&mu);

		int err = syncfs(sync_fd) == -1 ? errno : 0;

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

int gcommit_start(int dir_fd, gcommit_done_fn *done)
{
	pthread_t t;
	pthread_attr_t attr;
	int e;

	sync_fd = dir_fd;
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

int gcommit_ticket(uint64_t *ticket, int *err)
{
	if (!running) {
		/* The spool is the working directory of every daemon. */
		int fd = sync_fd >= 0 ? sync_fd : open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		*ticket = ++taken;
		*err = fd == -1 || syncfs(fd) == -1 ? errno : 0;
		if (fd >= 0 && fd != sync_fd)
			close(fd);
		started = reported = taken;
		return 1;
	}
	pthread_mutex_lock(&mu);
	*ticket = ++taken;
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
