/*
 * pool - the deliverd pool as queued sees it: when to ask the master for
 * another deliverd, and whether an idle one may retire.  Pure bookkeeping
 * (no I/O, the caller passes the time); schedule.c sends the IPC_SPAWN
 * and the RETIRE replies.  See queued.h and docs/architecture.md, "The
 * deliverd pool".
 */
#include "queued.h"

void pool_connected(struct pool *p)
{
	p->alive++;
	/* The deliverd we asked for, or one the master (re)started on its own:
	 * either way the pool changed, so the next shortage may ask again. */
	p->requested = 0;
}

void pool_gone(struct pool *p)
{
	if (p->alive > 0)
		p->alive--;
}

int pool_can_ask(struct pool *p, unsigned idle, int max, uint64_t now_ms)
{
	if (p->requested && now_ms - p->asked_ms >= POOL_ASK_WAIT_MS)
		p->requested = 0;   /* refused, or the new one died before HELLO */
	return !p->requested && idle == 0 && max > 0 && p->alive < (unsigned)max;
}

void pool_asked(struct pool *p, uint64_t now_ms)
{
	p->requested = 1;
	p->asked_ms = now_ms;
}

int pool_should_ask(struct pool *p, unsigned idle, int work, int max, uint64_t now_ms)
{
	if (!pool_can_ask(p, idle, max, now_ms) || !work)
		return 0;
	pool_asked(p, now_ms);
	return 1;
}

int pool_may_retire(struct pool *p, int busy, int min)
{
	if (busy || p->alive == 0 || p->alive - 1 < (unsigned)(min > 0 ? min : 0))
		return 0;
	p->alive--;
	return 1;
}
