/*
 * test_pool - queued's view of the deliverd pool (queued/pool.c): when it
 * asks the master for another deliverd (work waiting, none idle, below
 * queue.concurrency, one request at a time, a lapsed request asked
 * again), and when an idle deliverd may retire (no job, the minimum
 * kept).  Each row replays a script of events against a fresh pool.
 */
#include "harness.h"
#include "queued.h"

struct config *cfg;   /* queued.h declares it; pool.c does not use it */

enum op {
	END = 0,
	HELLO,      /* a deliverd connected */
	GONE,       /* a connected deliverd went away */
	ASK,        /* pool_should_ask(idle = a, work = b, max = c) at time t */
	RETIRE,     /* pool_may_retire(busy = a, min = c) */
};

struct step {
	enum op op;
	int a, b, c;
	uint64_t t;         /* ms, for ASK */
	int want;           /* ASK/RETIRE result; for HELLO/GONE: alive after */
};

static const struct {
	const char *name;
	struct step s[12];
} scripts[] = {
	{ "no deliverd yet, work: ask once",
	  { { ASK, 0, 1, 20, 0, 1 }, { ASK, 0, 1, 20, 10, 0 }, { ASK, 0, 1, 20, 1999, 0 } } },
	{ "an idle deliverd: no ask",
	  { { HELLO, 0, 0, 0, 0, 1 }, { ASK, 1, 1, 20, 0, 0 } } },
	{ "no work: no ask",
	  { { HELLO, 0, 0, 0, 0, 1 }, { ASK, 0, 0, 20, 0, 0 } } },
	{ "the HELLO answers the request: ask again",
	  { { ASK, 0, 1, 20, 0, 1 }, { HELLO, 0, 0, 0, 0, 1 }, { ASK, 0, 1, 20, 5, 1 },
	    { ASK, 0, 1, 20, 6, 0 } } },
	{ "a request lapses after POOL_ASK_WAIT_MS",
	  { { ASK, 0, 1, 20, 100, 1 }, { ASK, 0, 1, 20, 100 + POOL_ASK_WAIT_MS - 1, 0 },
	    { ASK, 0, 1, 20, 100 + POOL_ASK_WAIT_MS, 1 } } },
	{ "a lapsed request with no work left: no ask",
	  { { ASK, 0, 1, 20, 0, 1 }, { ASK, 0, 0, 20, POOL_ASK_WAIT_MS, 0 },
	    { ASK, 0, 1, 20, POOL_ASK_WAIT_MS + 1, 1 } } },
	{ "never beyond concurrency",
	  { { HELLO, 0, 0, 0, 0, 1 }, { HELLO, 0, 0, 0, 0, 2 }, { ASK, 0, 1, 3, 0, 1 },
	    { HELLO, 0, 0, 0, 0, 3 }, { ASK, 0, 1, 3, 1, 0 },
	    { ASK, 0, 1, 3, 10 * POOL_ASK_WAIT_MS, 0 } } },
	{ "concurrency 1, none connected: ask; connected: never",
	  { { ASK, 0, 1, 1, 0, 1 }, { HELLO, 0, 0, 0, 0, 1 }, { ASK, 0, 1, 1, 1, 0 } } },
	{ "a lost deliverd frees its place",
	  { { HELLO, 0, 0, 0, 0, 1 }, { HELLO, 0, 0, 0, 0, 2 }, { ASK, 0, 1, 2, 0, 0 },
	    { GONE, 0, 0, 0, 0, 1 }, { ASK, 0, 1, 2, 1, 1 } } },
	{ "GONE never goes below zero",
	  { { GONE, 0, 0, 0, 0, 0 }, { HELLO, 0, 0, 0, 0, 1 } } },
	{ "retire: above the minimum and idle",
	  { { HELLO, 0, 0, 0, 0, 1 }, { HELLO, 0, 0, 0, 0, 2 }, { HELLO, 0, 0, 0, 0, 3 },
	    { RETIRE, 0, 0, 2, 0, 1 }, { RETIRE, 0, 0, 2, 0, 0 }, { HELLO, 0, 0, 0, 0, 3 } } },
	{ "retire: a busy deliverd (a JOB crossed the RETIRE) stays",
	  { { HELLO, 0, 0, 0, 0, 1 }, { HELLO, 0, 0, 0, 0, 2 }, { HELLO, 0, 0, 0, 0, 3 },
	    { RETIRE, 1, 0, 2, 0, 0 }, { RETIRE, 0, 0, 2, 0, 1 } } },
	{ "retire: never below the minimum",
	  { { HELLO, 0, 0, 0, 0, 1 }, { HELLO, 0, 0, 0, 0, 2 }, { RETIRE, 0, 0, 2, 0, 0 },
	    { RETIRE, 0, 0, 1, 0, 1 }, { RETIRE, 0, 0, 1, 0, 0 }, { RETIRE, 0, 0, 0, 0, 1 },
	    { RETIRE, 0, 0, 0, 0, 0 } } },
	{ "retire: a nonsense minimum counts as 0",
	  { { HELLO, 0, 0, 0, 0, 1 }, { RETIRE, 0, 0, -5, 0, 1 } } },
	{ "a retirement makes room to ask",
	  { { HELLO, 0, 0, 0, 0, 1 }, { HELLO, 0, 0, 0, 0, 2 }, { HELLO, 0, 0, 0, 0, 3 },
	    { ASK, 0, 1, 3, 0, 0 }, { RETIRE, 0, 0, 2, 0, 1 }, { ASK, 0, 1, 3, 1, 1 } } },
	{ "a nonsense max never asks",
	  { { ASK, 0, 1, -1, 0, 0 }, { ASK, 0, 1, 0, 0, 0 } } },
};

static void test_scripts(void)
{
	for (size_t i = 0; i < NELEM(scripts); i++) {
		struct pool p = { 0, 0, 0 };
		ROW("%zu: %s", i, scripts[i].name);
		for (size_t k = 0; k < NELEM(scripts[i].s) && scripts[i].s[k].op != END; k++) {
			const struct step *st = &scripts[i].s[k];
			switch (st->op) {
			case HELLO:
				pool_connected(&p);
				CHECK_EQ_INT((int)p.alive, st->want);
				CHECK_EQ_INT(p.requested, 0);
				break;
			case GONE:
				pool_gone(&p);
				CHECK_EQ_INT((int)p.alive, st->want);
				break;
			case ASK:
				CHECK_EQ_INT(pool_should_ask(&p, (unsigned)st->a, st->b, st->c, st->t), st->want);
				if (st->want)
					CHECK(p.requested && p.asked_ms == st->t);
				break;
			case RETIRE:
				CHECK_EQ_INT(pool_may_retire(&p, st->a, st->c), st->want);
				break;
			case END:
				break;
			}
		}
	}
}

/* A growing backlog: however often queued looks, a second request comes
 * only after a HELLO or after the first lapsed, and none at the limit. */
static void test_backlog_no_storm(void)
{
	struct pool p = { 0, 0, 0 };
	int max = 20, hello_since = 1;
	uint64_t last = 0;

	pool_connected(&p);
	pool_connected(&p);
	for (uint64_t t = 0; t < 1000000; t += 7) {
		if (pool_should_ask(&p, 0, 1, max, t)) {
			CHECK(hello_since || t - last >= POOL_ASK_WAIT_MS);
			CHECK(p.alive < (unsigned)max);
			last = t;
			hello_since = 0;
			if (t % 3 == 0) {   /* the master started one: its HELLO */
				pool_connected(&p);
				hello_since = 1;
			}
		}
	}
	CHECK_EQ_INT((int)p.alive, max);
	CHECK_EQ_INT(pool_should_ask(&p, 0, 1, max, 2000000), 0);
}

/* The split form schedule.c uses: pool_can_ask() only looks (and drops a
 * lapsed request), pool_asked() makes the request outstanding. */
static void test_can_ask_then_asked(void)
{
	struct pool p = { 0, 0, 0 };

	CHECK_EQ_INT(pool_can_ask(&p, 0, 2, 0), 1);
	CHECK_EQ_INT(pool_can_ask(&p, 0, 2, 0), 1);     /* looking asks nothing */
	CHECK_EQ_INT(p.requested, 0);
	CHECK_EQ_INT(pool_can_ask(&p, 1, 2, 0), 0);     /* one idle */
	pool_asked(&p, 50);
	CHECK_EQ_INT(pool_can_ask(&p, 0, 2, 51), 0);
	CHECK_EQ_INT(pool_can_ask(&p, 0, 2, 50 + POOL_ASK_WAIT_MS), 1);
	CHECK_EQ_INT(p.requested, 0);                   /* lapsed */
	pool_connected(&p);
	pool_connected(&p);
	CHECK_EQ_INT(pool_can_ask(&p, 0, 2, 0), 0);     /* at max */
	CHECK_EQ_INT(pool_can_ask(&p, 0, 0, 0), 0);
}

int main(int argc, char **argv)
{
	h_init(argc, argv);
	RUN(test_scripts);
	RUN(test_backlog_no_storm);
	RUN(test_can_ask_then_asked);
	return h_done();
}
