/* Unit tests for shared/event.c: timer order, deletion (also from inside
 * callbacks), 10000 random timers, fd readiness and the -1 paths.
 * No assertion depends on how fast the machine is: timers are only checked
 * for order and for never firing early. */
#include "event.h"
#include "harness.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct rec {
	struct ev_timer t;
	int id;
	int fired;
	uint64_t due;          /* when_ms at arming */
	uint64_t at;           /* ev_now_ms() when it fired */
};

static int order[64], norder;

static void rec_cb(void *arg)
{
	struct rec *r = arg;
	r->fired++;
	r->at = ev_now_ms();
	if (norder < 64)
		order[norder++] = r->id;
}

static void arm(struct rec *r, int id, uint64_t after)
{
	memset(r, 0, sizeof(*r));
	r->id = id;
	ev_timer_init(&r->t, rec_cb, r);
	ev_timer_add(&r->t, after);
	r->due = r->t.when_ms;
}

static void test_now(void)
{
	uint64_t a = ev_now_ms(), b = ev_now_ms();
	CHECK(a > 0);
	CHECK(b >= a);
	CHECK_EQ_INT(ev_init(), 0);
	CHECK_EQ_INT(ev_init(), 0);   /* idempotent */
}

static void test_timer_order(void)
{
	static const uint64_t delays[] = { 40, 10, 30, 0, 20 };
	static const int want[] = { 3, 1, 4, 2, 0 };
	struct rec r[5];

	norder = 0;
	for (int i = 0; i < 5; i++) {
		arm(&r[i], i, delays[i]);
		CHECK(ev_timer_armed(&r[i].t));
	}
	uint64_t end = ev_now_ms() + 2000;
	while (norder < 5 && ev_now_ms() < end)
		ev_once(100);
	CHECK_EQ_INT(norder, 5);
	for (int i = 0; i < 5 && i < norder; i++)
		CHECK_EQ_INT(order[i], want[i]);
	for (int i = 0; i < 5; i++) {
		CHECK_EQ_INT(r[i].fired, 1);
		CHECK(r[i].at >= r[i].due);   /* never early */
		CHECK(!ev_timer_armed(&r[i].t));
	}
}

static void test_timer_del(void)
{
	struct rec a, b, c;

	norder = 0;
	arm(&a, 1, 5);
	arm(&b, 2, 10);
	arm(&c, 3, 15);
	ev_timer_del(&b.t);
	CHECK(!ev_timer_armed(&b.t));
	ev_timer_del(&b.t);               /* twice: harmless */
	struct ev_timer never;
	ev_timer_init(&never, rec_cb, NULL);
	CHECK(!ev_timer_armed(&never));
	ev_timer_del(&never);             /* never armed: harmless */
	uint64_t end = ev_now_ms() + 2000;
	while ((!a.fired || !c.fired) && ev_now_ms() < end)
		ev_once(100);
	/* Run a little past b's time to be sure it stays dead. */
	end = ev_now_ms() + 20;
	while (ev_now_ms() < end)
		ev_once(20);
	CHECK_EQ_INT(a.fired, 1);
	CHECK_EQ_INT(b.fired, 0);
	CHECK_EQ_INT(c.fired, 1);
	CHECK_EQ_INT(norder, 2);

	/* Re-adding an armed timer moves it instead of duplicating it. */
	norder = 0;
	arm(&a, 1, 1000000);
	ev_timer_add(&a.t, 1);
	end = ev_now_ms() + 2000;
	while (!a.fired && ev_now_ms() < end)
		ev_once(100);
	ev_once(5);
	CHECK_EQ_INT(a.fired, 1);
	CHECK_EQ_INT(norder, 1);
}

/* Callbacks that change the heap while it is being run. */
struct victim {
	struct ev_timer t;
	int fired;
};
static struct victim *victim;      /* heap-allocated: ASan sees a stale use */
static int killer_fired, rearm_left, rearm_fired;
static struct ev_timer rearm_t, self_del_t, adder_t, added_t;
static int added_fired, self_del_fired;

static void victim_cb(void *arg)
{
	struct victim *v = arg;
	v->fired++;
}

static void killer_cb(void *arg)
{
	(void)arg;
	killer_fired++;
	ev_timer_del(&victim->t);
	free(victim);                  /* gone: the loop must not touch it again */
	victim = NULL;
}

static void rearm_cb(void *arg)
{
	(void)arg;
	rearm_fired++;
	if (--rearm_left > 0)
		ev_timer_add(&rearm_t, 1);
}

static void self_del_cb(void *arg)
{
	(void)arg;
	self_del_fired++;
	ev_timer_del(&self_del_t);     /* already disarmed: harmless */
}

static void added_cb(void *arg)
{
	(void)arg;
	added_fired++;
}

static void adder_cb(void *arg)
{
	(void)arg;
	ev_timer_init(&added_t, added_cb, NULL);
	ev_timer_add(&added_t, 0);
}

static void test_timer_callbacks(void)
{
	struct ev_timer killer;

	victim = calloc(1, sizeof(*victim));
	ev_timer_init(&victim->t, victim_cb, victim);
	ev_timer_init(&killer, killer_cb, NULL);
	ev_timer_add(&killer, 1);
	ev_timer_add(&victim->t, 3);   /* later than the killer, maybe in the same batch */
	rearm_left = 5;
	ev_timer_init(&rearm_t, rearm_cb, NULL);
	ev_timer_add(&rearm_t, 0);
	ev_timer_init(&self_del_t, self_del_cb, NULL);
	ev_timer_add(&self_del_t, 2);
	ev_timer_init(&adder_t, adder_cb, NULL);
	ev_timer_add(&adder_t, 2);

	uint64_t end = ev_now_ms() + 2000;
	while ((rearm_fired < 5 || !killer_fired || !added_fired || !self_del_fired) && ev_now_ms() < end)
		ev_once(50);
	end = ev_now_ms() + 10;
	while (ev_now_ms() < end)
		ev_once(10);
	CHECK_EQ_INT(killer_fired, 1);
	CHECK(victim == NULL);
	CHECK_EQ_INT(rearm_fired, 5);
	CHECK(!ev_timer_armed(&rearm_t));
	CHECK_EQ_INT(self_del_fired, 1);
	CHECK_EQ_INT(added_fired, 1);
}

/* 10000 timers at random times, 2000 of them deleted again before they
 * are due: the rest fire once each, in nondecreasing time order. */
enum { MANY = 10000 };
static struct rec *many;
static uint64_t *fired_due;
static int nfired;

static void many_cb(void *arg)
{
	struct rec *r = arg;
	r->fired++;
	r->at = ev_now_ms();
	if (nfired < MANY)
		fired_due[nfired++] = r->t.when_ms;
}

static void test_many_random(void)
{
	unsigned seed = 42;
	int deleted = 0;

	many = calloc(MANY, sizeof(*many));
	fired_due = calloc(MANY, sizeof(*fired_due));
	nfired = 0;
	for (int i = 0; i < MANY; i++) {
		seed = seed * 1103515245 + 12345;
		many[i].id = i;
		ev_timer_init(&many[i].t, many_cb, &many[i]);
		ev_timer_add(&many[i].t, (seed >> 16) % 60);
		many[i].due = many[i].t.when_ms;
	}
	for (int i = 0; i < MANY; i++) {
		seed = seed * 1103515245 + 12345;
		if ((seed >> 16) % 5 == 0) {
			ev_timer_del(&many[i].t);
			many[i].id = -1;
			deleted++;
		}
	}
	/* Some re-armed to a new random time. */
	for (int i = 0; i < MANY; i += 97) {
		if (many[i].id < 0)
			continue;
		seed = seed * 1103515245 + 12345;
		ev_timer_add(&many[i].t, (seed >> 16) % 60);
		many[i].due = many[i].t.when_ms;
	}
	uint64_t end = ev_now_ms() + 3000;
	while (nfired < MANY - deleted && ev_now_ms() < end)
		ev_once(100);
	ev_once(0);
	CHECK_EQ_INT(nfired, MANY - deleted);
	int unordered = 0, early = 0, wrong = 0;
	for (int i = 1; i < nfired; i++)
		unordered += fired_due[i] < fired_due[i - 1];
	for (int i = 0; i < MANY; i++) {
		wrong += many[i].fired != (many[i].id < 0 ? 0 : 1);
		early += many[i].fired && many[i].at < many[i].due;
	}
	CHECK_EQ_INT(unordered, 0);
	CHECK_EQ_INT(wrong, 0);
	CHECK_EQ_INT(early, 0);
	free(many);
	free(fired_due);
}

/* --- file descriptors --- */

struct fdrec {
	int calls;
	int fd;
	int events;
	int other;             /* an fd to ev_del from the callback, or -1 */
};

static void fd_cb(int fd, int events, void *arg)
{
	struct fdrec *r = arg;
	r->calls++;
	r->fd = fd;
	r->events = events;
	if (r->other >= 0)
		ev_del(r->other);
}

static void drain_pipe(int fd)
{
	char b[64];
	while (read(fd, b, sizeof(b)) > 0)
		;
}

static void test_fd_readiness(void)
{
	int p[2];
	struct fdrec r = { 0, -1, 0, -1 };

	CHECK_EQ_INT(pipe2(p, O_NONBLOCK), 0);
	CHECK_EQ_INT(ev_add(p[0], EV_READ, fd_cb, &r), 0);
	ev_once(0);
	CHECK_EQ_INT(r.calls, 0);      /* nothing to read yet */
	CHECK_EQ_INT(write(p[1], "x", 1), 1);
	ev_once(1000);
	CHECK_EQ_INT(r.calls, 1);
	CHECK_EQ_INT(r.fd, p[0]);
	CHECK_EQ_INT(r.events, EV_READ);
	drain_pipe(p[0]);
	ev_once(0);
	CHECK_EQ_INT(r.calls, 1);

	/* Writable end. */
	struct fdrec w = { 0, -1, 0, -1 };
	CHECK_EQ_INT(ev_add(p[1], EV_WRITE, fd_cb, &w), 0);
	ev_once(1000);
	CHECK_EQ_INT(w.calls, 1);
	CHECK_EQ_INT(w.events, EV_WRITE);
	CHECK_EQ_INT(ev_mod(p[1], EV_READ), 0);   /* a pipe's write end never reads */
	ev_once(0);
	CHECK_EQ_INT(w.calls, 1);
	CHECK_EQ_INT(ev_mod(p[1], EV_READ), 0);   /* same events: no-op */
	ev_del(p[1]);
	ev_del(p[1]);                              /* twice: harmless */
	CHECK_EQ_INT(ev_mod(p[1], EV_WRITE), -1);  /* not watched any more */

	/* Replacing the watch replaces the callback. */
	struct fdrec r2 = { 0, -1, 0, -1 };
	CHECK_EQ_INT(ev_add(p[0], EV_READ, fd_cb, &r2), 0);
	CHECK_EQ_INT(write(p[1], "y", 1), 1);
	ev_once(1000);
	CHECK_EQ_INT(r.calls, 1);
	CHECK_EQ_INT(r2.calls, 1);
	drain_pipe(p[0]);

	/* Deleted: no more callbacks even with data waiting. */
	ev_del(p[0]);
	CHECK_EQ_INT(write(p[1], "z", 1), 1);
	ev_once(0);
	CHECK_EQ_INT(r2.calls, 1);
	drain_pipe(p[0]);

	/* Hang-up is reported as readable. */
	CHECK_EQ_INT(ev_add(p[0], EV_READ, fd_cb, &r2), 0);
	close(p[1]);
	ev_once(1000);
	CHECK_EQ_INT(r2.calls, 2);
	CHECK(r2.events & EV_READ);
	ev_del(p[0]);
	close(p[0]);
}

/* A callback that removes another ready fd: that one is not called. */
static void test_fd_del_in_batch(void)
{
	int a[2], b[2];
	struct fdrec ra = { 0, -1, 0, -1 }, rb = { 0, -1, 0, -1 };

	CHECK_EQ_INT(pipe2(a, O_NONBLOCK), 0);
	CHECK_EQ_INT(pipe2(b, O_NONBLOCK), 0);
	ra.other = b[0];
	rb.other = a[0];
	CHECK_EQ_INT(ev_add(a[0], EV_READ, fd_cb, &ra), 0);
	CHECK_EQ_INT(ev_add(b[0], EV_READ, fd_cb, &rb), 0);
	CHECK_EQ_INT(write(a[1], "x", 1), 1);
	CHECK_EQ_INT(write(b[1], "x", 1), 1);
	ev_once(1000);
	CHECK_EQ_INT(ra.calls + rb.calls, 1);
	/* The survivor stays readable (level-triggered); the removed one is
	 * never called. */
	struct fdrec *gone = ra.calls ? &rb : &ra;
	ra.other = rb.other = -1;
	ev_once(0);
	ev_once(0);
	CHECK_EQ_INT(gone->calls, 0);
	CHECK_EQ_INT(ra.calls + rb.calls, 3);
	ev_del(a[0]);
	ev_del(b[0]);
	close(a[0]);
	close(a[1]);
	close(b[0]);
	close(b[1]);
}

static void test_fd_errors(void)
{
	struct fdrec r = { 0, -1, 0, -1 };
	int fd = open("/dev/null", O_RDONLY);
	char path[] = "/tmp/postern-test-event-XXXXXX";
	int reg = mkstemp(path);

	CHECK(reg >= 0);
	unlink(path);
	/* epoll refuses regular files: -1 and the watch is not recorded. */
	CHECK_EQ_INT(ev_add(reg, EV_READ, fd_cb, &r), -1);
	CHECK_EQ_INT(ev_mod(reg, EV_WRITE), -1);
	ev_del(reg);
	close(reg);
	/* A descriptor that is not open. */
	CHECK_EQ_INT(ev_add(900, EV_READ, fd_cb, &r), -1);
	CHECK_EQ_INT(ev_mod(900, EV_READ), -1);
	ev_del(900);
	/* Negative descriptors are refused, not used as an index. */
	CHECK_EQ_INT(ev_add(-1, EV_READ, fd_cb, &r), -1);
	CHECK_EQ_INT(ev_mod(-1, EV_READ), -1);
	ev_del(-1);
	/* /dev/null cannot be polled. */
	CHECK_EQ_INT(ev_add(fd, EV_READ, fd_cb, &r), -1);
	close(fd);
	/* A large descriptor number grows the table. */
	int p[2];
	CHECK_EQ_INT(pipe(p), 0);
	int big = fcntl(p[0], F_DUPFD, 5000);
	CHECK(big >= 5000);
	CHECK_EQ_INT(ev_add(big, EV_READ, fd_cb, &r), 0);
	CHECK_EQ_INT(write(p[1], "x", 1), 1);
	ev_once(1000);
	CHECK_EQ_INT(r.calls, 1);
	CHECK_EQ_INT(r.fd, big);
	ev_del(big);
	close(big);
	close(p[0]);
	close(p[1]);

}

/* ev_run() until a timer calls ev_stop(); ev_once(-1) with a timer armed
 * returns when the timer is due instead of blocking forever. */
static int stop_fired;
static void stop_cb(void *arg)
{
	(void)arg;
	stop_fired++;
	ev_stop();
}

static void test_run_stop(void)
{
	struct ev_timer t, far;

	ev_timer_init(&t, stop_cb, NULL);
	ev_timer_add(&t, 5);
	ev_run();
	CHECK_EQ_INT(stop_fired, 1);
	ev_timer_add(&t, 5);
	ev_run();                     /* runs again after a stop */
	CHECK_EQ_INT(stop_fired, 2);

	struct rec r;
	arm(&r, 9, 2);
	ev_once(-1);
	if (!r.fired)
		ev_once(-1);                  /* an early wake-up is allowed once */
	CHECK_EQ_INT(r.fired, 1);

	/* A timer hours away does not stretch a bounded wait. */
	ev_timer_init(&far, stop_cb, NULL);
	ev_timer_add(&far, 10ULL * 3600 * 1000);
	uint64_t t0 = ev_now_ms();
	ev_once(10);
	CHECK(ev_now_ms() - t0 < 60000);
	CHECK(ev_timer_armed(&far));
	ev_timer_del(&far);
	CHECK_EQ_INT(stop_fired, 2);
}

int main(int argc, char **argv)
{
	h_init(argc, argv);
	log_set_level(LOG_LVL_ERROR + 1);   /* expected -1 paths log errors */
	alarm(30);                          /* a hang is a failure, not a stuck run */
	if (ev_init() == -1)
		return 2;
	RUN(test_now);
	RUN(test_timer_order);
	RUN(test_timer_del);
	RUN(test_timer_callbacks);
	RUN(test_many_random);
	RUN(test_fd_readiness);
	RUN(test_fd_del_in_batch);
	RUN(test_fd_errors);
	RUN(test_run_stop);
	return h_done();
}
