/*
 * test_gcommit - the group commit: synchronous before start, then the
 * thread: tickets reported in order, each covered once, a failed syncfs
 * reported to exactly the tickets it covered.
 */
#include "harness.h"
#include "event.h"
#include "gcommit.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

static uint64_t reports[64];
static int errs[64];
static size_t nreports;

static void on_done(uint64_t upto, int err)
{
	if (nreports < NELEM(reports)) {
		reports[nreports] = upto;
		errs[nreports] = err;
		nreports++;
	}
}

/* Run the loop until a report covers ticket t (5 s at most). */
static int wait_for(uint64_t t)
{
	uint64_t end = ev_now_ms() + 5000;

	while (ev_now_ms() < end) {
		if (nreports > 0 && reports[nreports - 1] >= t)
			return 0;
		ev_once(100);
	}
	return -1;
}

static void test_synchronous_before_start(void)
{
	uint64_t t1, t2;
	int err = -1;

	/* Not started: the flush happens inside the call, on the cwd. */
	CHECK_EQ_INT(gcommit_ticket(-1, &t1, &err), 1);
	CHECK_EQ_INT(err, 0);
	CHECK_EQ_INT(gcommit_ticket(-1, &t2, &err), 1);
	CHECK(t2 == t1 + 1);
	CHECK(gcommit_pending() == 0);
	CHECK(nreports == 0);   /* done() is for the thread's results only */
	/* With a file: flushed and closed before the call returns. */
	int f = open("/dev/null", O_WRONLY | O_CLOEXEC);
	CHECK(f >= 0);
	CHECK_EQ_INT(gcommit_ticket(f, &t2, &err), 1);
	CHECK_EQ_INT(err, 0);
	CHECK(fcntl(f, F_GETFD) == -1 && errno == EBADF);
}

static void test_thread_reports_in_order(void)
{
	const char *dir = h_tmpdir("gcommit");
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	uint64_t t[10];
	int err;

	CHECK(fd >= 0);
	CHECK_EQ_INT(ev_init(), 0);
	CHECK_EQ_INT(gcommit_start(fd, -1, on_done), 0);
	for (size_t i = 0; i < NELEM(t); i++) {
		CHECK_EQ_INT(gcommit_ticket(-1, &t[i], &err), 0);   /* pending: reported later */
		if (i > 0)
			CHECK(t[i] == t[i - 1] + 1);
	}
	CHECK(gcommit_pending() == NELEM(t));
	CHECK_EQ_INT(wait_for(t[NELEM(t) - 1]), 0);
	/* Strictly increasing, all successful, the last covers every ticket;
	 * fewer reports than tickets when flushes were shared. */
	CHECK(nreports >= 1 && nreports <= NELEM(t));
	for (size_t i = 0; i < nreports; i++) {
		CHECK_EQ_INT(errs[i], 0);
		if (i > 0)
			CHECK(reports[i] > reports[i - 1]);
	}
	CHECK(reports[nreports - 1] == t[NELEM(t) - 1]);
	CHECK(gcommit_pending() == 0);

	/* Later tickets start a new flush. */
	size_t before = nreports;
	uint64_t t2;
	CHECK_EQ_INT(gcommit_ticket(-1, &t2, &err), 0);
	CHECK_EQ_INT(wait_for(t2), 0);
	CHECK(nreports == before + 1);
	CHECK(reports[nreports - 1] == t2);

	/* A lone ticket with its file: fdatasync + fsync of the directory
	 * (given at start: here none, so syncfs), and the file is closed by
	 * gcommit once flushed. */
	char path[PATH_MAX + 8];
	snprintf(path, sizeof(path), "%s/f", dir);
	int f = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	CHECK(f >= 0);
	CHECK(write(f, "x", 1) == 1);
	CHECK_EQ_INT(gcommit_ticket(f, &t2, &err), 0);
	CHECK_EQ_INT(wait_for(t2), 0);
	CHECK_EQ_INT(errs[nreports - 1], 0);
	CHECK(fcntl(f, F_GETFD) == -1 && errno == EBADF);

	/* A failing flush (here: the fd is gone, syncfs says EBADF) is
	 * reported with its errno to the tickets it covered, never as done. */
	close(fd);
	CHECK_EQ_INT(gcommit_ticket(-1, &t2, &err), 0);
	CHECK_EQ_INT(wait_for(t2), 0);
	CHECK(reports[nreports - 1] == t2);
	CHECK_EQ_INT(errs[nreports - 1], EBADF);
	h_rm_tree(dir);
}

int main(int argc, char **argv)
{
	h_init(argc, argv);
	RUN(test_synchronous_before_start);
	RUN(test_thread_reports_in_order);
	return h_done();
}
