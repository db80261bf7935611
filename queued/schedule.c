/*
 * schedule - which recipient goes to which delivery agent, and what a
 * result means for the message.
 *
 * A message with recipients due (pending, or deferred and past `next`) is
 * put on the ready list.  Its due recipients are grouped into jobs by
 * transport and next hop (all local recipients in one job, all relay
 * recipients in one job, one job per domain for MX delivery); jobs wait
 * in a FIFO until a deliverd is idle.  Results update the in-memory state;
 * when the message's last job is done: removal (T4) when every recipient
 * is final (after the DSNs it owes), else the state is written (T5) and a
 * retry timer set with exponential backoff from retry_min to retry_max.
 * Past queue.lifetime, deferred recipients become bounced.
 *
 * The deliverd pool grows on demand (pool.c): after every turn of the
 * dispatcher, if a job could run (its destination is under
 * per_destination) or a ready message could become one, and no deliverd
 * is idle, queued asks the master for one more.  A deliverd that has been
 * idle for queue.max_idle asks to retire (schedule_retire()).
 */
#include "queued.h"
#include "log.h"
#include "stats.h"
#include "str.h"
#include "strpool.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

static struct msg *ready_head, **ready_tail = &ready_head;
static struct job *jobs_head, **jobs_tail = &jobs_head;
static struct worker *idle_head;
static struct worker *all_workers;
static size_t njobs;
static struct pool pool;
static struct ipc_chan *master_ch;
static struct ev_timer ask_timer;

#define JOBS_CAP_PER_WORKER 4
#define POOL_READY_PEEK 16    /* ready messages looked at for a runnable job */
#define POOL_RCPT_PEEK 8      /* ... and due recipients of each */

static void hop_key(const struct job *j, char *out, size_t len)
{
	static const char *n[] = { "local", "relay", "mx" };
	str_fmt(out, len, "%s:%s", n[j->transport], j->nexthop);
}

/*
 * Next hops that failed as a whole (deliverd's site_down: every host
 * refused the connection, or failed its banner, EHLO, TLS, AUTH or MAIL
 * with a 4xx).  Until `until`, their jobs are deferred without a
 * connection ("delivery temporarily suspended", as Postfix says), so a
 * dead smarthost costs one attempt per retry round, not one per queued
 * message.  A delivery that gets any answer for its recipients, or
 * `postern flush`, ends the suspension.
 */
struct dead_hop {
	int transport;
	char nexthop[256];
	int64_t until;
	const char *reason;         /* interned (strpool.h) */
	struct dead_hop *next;
};
static struct dead_hop *dead_hops;

static struct dead_hop **hop_find(int transport, const char *nexthop)
{
	struct dead_hop **pp = &dead_hops;
	for (; *pp; pp = &(*pp)->next)
		if ((*pp)->transport == transport && strcmp((*pp)->nexthop, nexthop) == 0)
			break;
	return pp;
}

static const struct dead_hop *hop_dead(const struct job *j, int64_t now)
{
	struct dead_hop *h = *hop_find(j->transport, j->nexthop);
	return h && h->until > now ? h : NULL;
}

static void hop_suspend(int transport, const char *nexthop, const char *reason)
{
	struct dead_hop **pp = hop_find(transport, nexthop), *h = *pp;
	int64_t now = time(NULL);

	if (h == NULL) {
		h = xcalloc(1, sizeof(*h));
		h->transport = transport;
		str_copy(h->nexthop, nexthop, sizeof(h->nexthop));
		h->reason = strpool_get("", 0);
		*pp = h;
	}
	const char *old = h->reason;
	h->reason = strpool_get(reason, SPOOL_ERR_MAX);
	strpool_put(old);
	if (h->until <= now)
		log_warn("event=destination_suspended transport=%s nexthop=%s seconds=%d reason=%s "
		         "note=\"queued mail for it is deferred without a connection until then\"",
		         transport == TR_RELAY ? "relay" : "mx", log_q(nexthop), cfg->queue.retry_min,
		         log_q(reason));
	h->until = now + cfg->queue.retry_min;
}

static void hop_drop(struct dead_hop **pp, const char *why)
{
	struct dead_hop *h = *pp;
	log_info("event=destination_resumed transport=%s nexthop=%s reason=%s",
	         h->transport == TR_RELAY ? "relay" : "mx", log_q(h->nexthop), log_q(why));
	*pp = h->next;
	strpool_put(h->reason);
	free(h);
}

void schedule_resume_hops(void)
{
	while (dead_hops)
		hop_drop(&dead_hops, "admin flush");
}

/* Jobs running now for the destination (queue.per_destination). */
static int hop_busy_at(int transport, const char *nexthop)
{
	int n = 0;
	for (struct worker *w = all_workers; w; w = w->all_next)
		if (w->job && w->job->transport == transport && strcmp(w->job->nexthop, nexthop) == 0)
			n++;
	return n;
}

static int hop_busy(const struct job *j)
{
	return hop_busy_at(j->transport, j->nexthop);
}

/* Could j be dispatched now, given an idle deliverd?  (Local delivery
 * has no per-destination limit: the disk is the limit.) */
static int job_runnable(const struct job *j)
{
	return j->transport == TR_LOCAL || hop_busy(j) < cfg->queue.per_destination;
}

static void pool_check(void);

static void ask_lapsed(void *arg)
{
	(void)arg;
	pool_check();
}

void schedule_init(struct ipc_chan *master)
{
	ready_head = NULL;
	ready_tail = &ready_head;
	master_ch = master;
	ev_timer_init(&ask_timer, ask_lapsed, NULL);
}

int transport_of(const char *rcpt, char *nexthop, size_t len)
{
	const char *at = strrchr(rcpt, '@');
	const char *domain = at ? at + 1 : "";

	str_copy(nexthop, domain, len);
	str_lower(nexthop);
	/* "postmaster" without a domain is local (RFC 5321 4.5.1). */
	if (at == NULL || config_is_local_domain(cfg, nexthop))
		return TR_LOCAL;
	if (cfg->relay.present) {
		str_copy(nexthop, cfg->relay.hosts[0].host, len);
		return TR_RELAY;
	}
	return TR_MX;
}

static const char *transport_name(int t)
{
	static const char *n[] = { "local", "relay", "mx" };
	return n[t];
}

static int rcpt_due(const struct msg *m, size_t i, int64_t now)
{
	int s = m->st.r[i].state;
	return s == RS_PENDING || (s == RS_DEFERRED && m->st.next <= now);
}

static void job_free(struct job *j)
{
	free(j->idx);
	free(j->answered);
	free(j);
}

/* Split m's due recipients into jobs and queue them. */
static void make_jobs(struct msg *m)
{
	int64_t now = time(NULL);
	struct job *mine = NULL;

	for (size_t i = 0; i < m->nrcpt; i++) {
		char hop[256];
		int t;
		struct job *j;

		if (!rcpt_due(m, i, now))
			continue;
		t = transport_of(m->rcpt[i], hop, sizeof(hop));
		for (j = mine; j; j = j->next)
			if (j->transport == t && strcmp(j->nexthop, hop) == 0)
				break;
		if (j == NULL) {
			j = xcalloc(1, sizeof(*j));
			j->msg = m;
			j->transport = t;
			str_copy(j->nexthop, hop, sizeof(j->nexthop));
			j->idx = xcalloc(m->nrcpt, sizeof(uint32_t));
			j->answered = xcalloc(m->nrcpt, 1);
			j->next = mine;
			mine = j;
		}
		j->idx[j->n++] = (uint32_t)i;
	}
	while (mine) {
		struct job *j = mine;
		mine = j->next;
		j->next = NULL;
		*jobs_tail = j;
		jobs_tail = &j->next;
		m->jobs_out++;
		njobs++;
	}
}

static void send_job(struct worker *w, struct job *j)
{
	struct ipc_msg im;

	ipc_msg_init(&im, IPC_JOB);
	ipc_put_str(&im, j->msg->qid);
	ipc_put_str(&im, transport_name(j->transport));
	ipc_put_str(&im, j->nexthop);
	ipc_put_u32(&im, (uint32_t)j->n);
	for (size_t i = 0; i < j->n; i++) {
		ipc_put_u32(&im, j->idx[i]);
		ipc_put_str(&im, j->msg->rcpt[j->idx[i]]);
	}
	w->job = j;
	log_debug("event=dispatched qid=%s transport=%s nexthop=%s nrcpt=%zu worker=%d", j->msg->qid,
	          transport_name(j->transport), log_q(j->nexthop), j->n, w->pid);
	ipc_send(w->ch, &im, -1);
}

void schedule_forget(struct msg *m)
{
	if (!m->queued_ready)
		return;
	for (struct msg **pp = &ready_head; *pp; pp = &(*pp)->rnext)
		if (*pp == m) {
			*pp = m->rnext;
			if (*pp == NULL)
				ready_tail = pp;
			break;
		}
	m->queued_ready = 0;
	m->rnext = NULL;
}

/* Would one of m's first due recipients make a job that could run now?
 * (Bounded: a miss only delays the request until the next dispatch turn,
 * which makes m's jobs and looks at all of them.) */
static int msg_runnable(const struct msg *m, int64_t now)
{
	int seen = 0;

	if (m->jobs_out > 0 || m->st.held)
		return 0;
	for (size_t i = 0; i < m->nrcpt && seen < POOL_RCPT_PEEK; i++) {
		char hop[256];
		if (!rcpt_due(m, i, now))
			continue;
		seen++;
		int t = transport_of(m->rcpt[i], hop, sizeof(hop));
		const struct dead_hop *dead = *hop_find(t, hop);
		if (dead != NULL && dead->until > now)
			continue;
		if (t == TR_LOCAL || hop_busy_at(t, hop) < cfg->queue.per_destination)
			return 1;
	}
	return 0;
}

/* Is there work another deliverd would take at once?  A job whose
 * destination is at per_destination is not: a new process would only
 * wait.  Ready messages count while the job list has room for them. */
static int pool_work(void)
{
	int64_t now = time(NULL);

	/* A suspended destination's jobs are deferred by the next idle
	 * deliverd without a connection: no reason to start one for them. */
	for (const struct job *j = jobs_head; j; j = j->next)
		if (job_runnable(j) && hop_dead(j, now) == NULL)
			return 1;
	if (njobs >= JOBS_CAP_PER_WORKER * (size_t)cfg->queue.concurrency)
		return 0;
	int k = 0;
	for (const struct msg *m = ready_head; m && k < POOL_READY_PEEK; m = m->rnext, k++)
		if (msg_runnable(m, now))
			return 1;
	return 0;
}

/* After a dispatch turn: ask the master for another deliverd if work is
 * waiting and none is idle (pool.c decides, and limits to one request
 * at a time). */
static void pool_check(void)
{
	uint64_t now = ev_now_ms();

	if (idle_head != NULL || master_ch == NULL)
		return;
	/* The cheap test first: this runs after every dispatch turn. */
	if (!pool_can_ask(&pool, 0, cfg->queue.concurrency, now) || !pool_work())
		return;
	pool_asked(&pool, now);
	struct ipc_msg im;
	ipc_msg_init(&im, IPC_SPAWN);
	ipc_put_u32(&im, pool.alive);
	ipc_send(master_ch, &im, -1);
	log_debug("event=pool_request deliverd=%u max=%d", pool.alive, cfg->queue.concurrency);
	/* Look again when the request lapses, in case no HELLO answers it. */
	ev_timer_add(&ask_timer, POOL_ASK_WAIT_MS);
}

struct dead_hop;
static void job_suspended(struct job *j, const struct dead_hop *h);

static void kick(void)
{
	/* Turn ready messages into jobs only as workers free up, so a huge
	 * backlog stays as state on disk and does not become a huge job list. */
	while (idle_head) {
		struct job **jp, *j = NULL;
		/* The first job whose destination is under its concurrency limit. */
		for (jp = &jobs_head; *jp; jp = &(*jp)->next)
			if (job_runnable(*jp)) {
				j = *jp;
				break;
			}
		if (j == NULL) {
			struct msg *m = ready_head;
			if (m == NULL || njobs >= JOBS_CAP_PER_WORKER * (size_t)cfg->queue.concurrency)
				return;
			ready_head = m->rnext;
			if (ready_head == NULL)
				ready_tail = &ready_head;
			m->rnext = NULL;
			m->queued_ready = 0;
			if (m->jobs_out == 0 && !m->st.held)
				make_jobs(m);
			continue;
		}
		*jp = j->next;
		if (jobs_tail == &j->next)
			jobs_tail = jp;
		j->next = NULL;
		njobs--;
		const struct dead_hop *dead = hop_dead(j, time(NULL));
		if (dead != NULL) {
			job_suspended(j, dead);
			continue;
		}
		/* Prefer an idle deliverd whose open connection fits this job. */
		char key[260];
		hop_key(j, key, sizeof(key));
		struct worker **wp, **pick = &idle_head;
		for (wp = &idle_head; *wp; wp = &(*wp)->next)
			if (strcmp((*wp)->lasthop, key) == 0) {
				pick = wp;
				break;
			}
		struct worker *w = *pick;
		*pick = w->next;
		w->next = NULL;
		str_copy(w->lasthop, key, sizeof(w->lasthop));
		send_job(w, j);
	}
}

void schedule_kick(void)
{
	kick();
	pool_check();
}

void schedule_msg(struct msg *m)
{
	int64_t now = time(NULL);
	int due = 0, waiting = 0;

	if (m->queued_ready || m->jobs_out > 0 || m->st.held)
		return;
	for (size_t i = 0; i < m->nrcpt; i++) {
		if (rcpt_due(m, i, now))
			due = 1;
		else if (m->st.r[i].state == RS_DEFERRED)
			waiting = 1;
	}
	if (due) {
		ev_timer_del(&m->retry);
		m->queued_ready = 1;
		*ready_tail = m;
		ready_tail = &m->rnext;
		schedule_kick();
	} else if (waiting) {
		int64_t d = m->st.next - now;
		ev_timer_add(&m->retry, (uint64_t)(d > 0 ? d : 0) * 1000);
	}
}

/* A loaded message with nothing due or waiting (recovery). */
void schedule_loaded(struct msg *m)
{
	for (size_t i = 0; i < m->nrcpt; i++)
		if (m->st.r[i].state == RS_PENDING || m->st.r[i].state == RS_DEFERRED) {
			schedule_msg(m);
			return;
		}
	schedule_settle_final(m);
}

static void add_idle(struct worker *w)
{
	w->next = idle_head;
	idle_head = w;
}

void schedule_worker_idle(struct worker *w)
{
	w->all_next = all_workers;
	all_workers = w;
	pool_connected(&pool);
	ev_timer_del(&ask_timer);
	add_idle(w);
	schedule_kick();
}

/* Remove w from the list of every deliverd and from the idle list. */
static void worker_unlink(struct worker *w)
{
	struct worker **pp;

	for (pp = &all_workers; *pp; pp = &(*pp)->all_next)
		if (*pp == w) {
			*pp = w->all_next;
			break;
		}
	for (pp = &idle_head; *pp; pp = &(*pp)->next)
		if (*pp == w) {
			*pp = w->next;
			break;
		}
}

int schedule_retire(struct worker *w)
{
	int idle = 0;

	for (struct worker *i = idle_head; i; i = i->next)
		if (i == w)
			idle = 1;
	/* A JOB already sent (w->job) wins: the deliverd runs it when it reads
	 * it, after this refusal, and asks again once idle for max_idle. */
	if (w->retired || !pool_may_retire(&pool, w->job != NULL || !idle, config_pool_min(cfg)))
		return 0;
	worker_unlink(w);
	w->retired = 1;
	return 1;
}

static int64_t backoff(uint32_t attempts)
{
	int64_t d = cfg->queue.retry_min;
	for (uint32_t i = 1; i < attempts && d < cfg->queue.retry_max; i++)
		d *= 2;
	return d > cfg->queue.retry_max ? cfg->queue.retry_max : d;
}

/*
 * Tell the sender about bounces not yet reported, and send the delay
 * warning once warn_after has passed.  A null sender is never sent a DSN
 * (RFC 5321 6.1, no loops): the bounce is logged and the message kept for
 * the admin until its lifetime ends.  Returns 1 if m changed.
 */
static int notify(struct msg *m, int64_t now)
{
	size_t *idx = xcalloc(m->nrcpt, sizeof(size_t)), n = 0;
	int changed = 0;

	for (size_t i = 0; i < m->nrcpt; i++)
		if (m->st.r[i].state == RS_BOUNCED && !m->st.r[i].notified)
			idx[n++] = i;
	if (n > 0) {
		if (m->sender[0] == '\0') {
			for (size_t i = 0; i < n; i++) {
				log_warn("event=bounce_suppressed qid=%s rcpt=<%s> reason=\"null sender: no DSN, "
				         "kept until lifetime\" error=%s",
				         m->qid, m->rcpt[idx[i]], log_q(m->st.r[idx[i]].error));
				m->st.r[idx[i]].notified = 1;
			}
			changed = 1;
		} else if (bounce_send(m, DSN_FAILED, idx, n) == 0) {
			for (size_t i = 0; i < n; i++)
				m->st.r[idx[i]].notified = 1;
			changed = 1;
		}
	}
	n = 0;
	for (size_t i = 0; i < m->nrcpt; i++)
		if (m->st.r[i].state == RS_DEFERRED)
			idx[n++] = i;
	if (n > 0 && !m->st.warned && cfg->queue.warn_after > 0 && m->sender[0] != '\0' &&
	    now - m->arrival >= cfg->queue.warn_after && bounce_send(m, DSN_DELAYED, idx, n) == 0) {
		m->st.warned = 1;
		changed = 1;
	}
	free(idx);
	return changed;
}

static void expire_timer(void *arg)
{
	struct msg *m = arg;
	log_info("event=expired qid=%s reason=\"kept for the admin until lifetime; removed\"", m->qid);
	queue_remove(m);
}

/* Every recipient is final: remove m, unless it is a failed null-sender
 * message that stays until its lifetime so the admin can see it. */
static void finish(struct msg *m, int64_t now)
{
	int bounced = 0;

	for (size_t i = 0; i < m->nrcpt; i++)
		if (m->st.r[i].state == RS_BOUNCED)
			bounced = 1;
	stats_add(bounced ? STAT_MSG_BOUNCED : STAT_MSG_DELIVERED, 1);
	if (bounced && m->sender[0] == '\0' && now - m->arrival < cfg->queue.lifetime) {
		ev_timer_init(&m->retry, expire_timer, m);
		ev_timer_add(&m->retry, (uint64_t)(m->arrival + cfg->queue.lifetime - now) * 1000);
		return;
	}
	queue_remove(m);
}

/* Start-up and state changes: a message with nothing left to deliver
 * still owes its DSNs and its removal. */
void schedule_settle_final(struct msg *m)
{
	int64_t now = time(NULL);

	for (size_t i = 0; i < m->nrcpt; i++)
		if (m->st.r[i].state == RS_PENDING || m->st.r[i].state == RS_DEFERRED)
			return;
	if (notify(m, now))
		queue_write_state(m);
	for (size_t i = 0; i < m->nrcpt; i++)
		if (m->st.r[i].state == RS_BOUNCED && !m->st.r[i].notified) {
			/* The DSN could not be queued: try again later. */
			ev_timer_add(&m->retry, (uint64_t)cfg->queue.retry_min * 1000);
			return;
		}
	finish(m, now);
}

/* All of m's jobs are back: persist, then remove or plan the retry.
 * next_at: retry then, and count no attempt (a suspended destination);
 * 0: the usual backoff. */
static void msg_settle(struct msg *m, int agent_died, int64_t next_at)
{
	int64_t now = time(NULL);
	int open = 0;

	if (next_at == 0)
		m->st.attempts++;
	for (size_t i = 0; i < m->nrcpt; i++) {
		struct spool_rcpt_state *r = &m->st.r[i];
		if (r->state != RS_DEFERRED && r->state != RS_PENDING)
			continue;
		if (now - m->arrival >= cfg->queue.lifetime) {
			/* The last reply stays as it was (it is the DSN's
			 * Diagnostic-Code); the DSN text says the time ran out. */
			r->state = RS_BOUNCED;
			if (r->error[0] == '\0')
				spool_rcpt_set_error(r, "not delivered before the queue lifetime ended");
			stats_add(STAT_RCPT_BOUNCED, 1);
			log_info("event=bounced qid=%s rcpt=<%s> reason=expired lifetime=%d last_error=%s",
			         m->qid, m->rcpt[i], cfg->queue.lifetime, log_q(r->error));
			continue;
		}
		open = 1;
	}
	if (!open) {
		/* Every recipient is final: no state to keep for a retry.  The
		 * DSNs owed are recorded before the removal (settle_final). */
		schedule_settle_final(m);
		return;
	}
	m->st.next = next_at ? next_at : agent_died ? now + 1 : now + backoff(m->st.attempts);
	/* Record the results first (T5), then tell the sender: a crash in
	 * between repeats a DSN at worst, it never loses one. */
	if (queue_write_state(m) == -1)
		m->st.next = now + cfg->queue.retry_min;
	if (notify(m, now))
		queue_write_state(m);
	stats_add(STAT_MSG_DEFERRED, 1);
	log_info("event=scheduled qid=%s attempts=%u next_in=%llds", m->qid, m->st.attempts,
	         (long long)(m->st.next - now));
	schedule_msg(m);
}

/* One of m's jobs is over: after the last one, an admin's pending
 * delete, else the results settle (msg_settle's arguments). */
static void job_done(struct msg *m, int agent_died, int64_t next_at)
{
	if (--m->jobs_out > 0)
		return;
	if (m->delete_pending) {
		log_info("event=deleted qid=%s from=<%s> nrcpt=%zu reason=admin", m->qid, m->sender,
		         m->nrcpt);
		queue_remove(m);
		return;
	}
	msg_settle(m, agent_died, next_at);
}

static void job_finish(struct worker *w, int agent_died)
{
	struct job *j = w->job;
	struct msg *m = j->msg;

	w->job = NULL;
	for (size_t i = 0; i < j->n; i++) {
		if (j->answered[i])
			continue;
		struct spool_rcpt_state *r = &m->st.r[j->idx[i]];
		r->state = RS_DEFERRED;
		r->last = time(NULL);
		spool_rcpt_set_error(r, agent_died ? "delivery agent exited during delivery"
		                                   : "delivery agent reported no result");
		stats_add(STAT_RCPT_DEFERRED, 1);
		log_warn("event=deferred qid=%s rcpt=<%s> reason=%s", m->qid, m->rcpt[j->idx[i]],
		         log_q(r->error));
	}
	job_free(j);
	job_done(m, agent_died, 0);
}

/* j's destination is suspended: defer its recipients without trying. */
static void job_suspended(struct job *j, const struct dead_hop *h)
{
	struct msg *m = j->msg;
	char why[SPOOL_ERR_MAX + 1];
	int64_t now = time(NULL);

	str_fmt(why, sizeof(why), "delivery temporarily suspended: %s", h->reason);
	for (size_t i = 0; i < j->n; i++) {
		struct spool_rcpt_state *r = &m->st.r[j->idx[i]];
		r->state = RS_DEFERRED;
		spool_rcpt_set_error(r, why);
		stats_add(STAT_RCPT_DEFERRED, 1);
		log_info("event=deferred qid=%s rcpt=<%s> reason=%s retry_in=%llds", m->qid,
		         m->rcpt[j->idx[i]], log_q(why), (long long)(h->until - now));
	}
	job_free(j);
	job_done(m, 0, h->until);
}

void schedule_worker_gone(struct worker *w)
{
	if (w->retired)
		return;     /* already off the lists and out of the count */
	worker_unlink(w);
	pool_gone(&pool);
	if (w->job)
		job_finish(w, 1);
	/* Its work may now need another deliverd (the master restarts a
	 * crashed one; a lapsed request is asked again). */
	pool_check();
}

/* IPC_RESULT: qid, index, status class (2/4/5), text. */
void schedule_result(struct worker *w, struct ipc_msg *im)
{
	char qid[QID_MAX], text[SPOOL_ERR_MAX + 1];
	uint32_t idx, status;
	struct job *j = w->job;

	if (ipc_get_str(im, qid, sizeof(qid)) == -1 || ipc_get_u32(im, &idx) == -1 ||
	    ipc_get_u32(im, &status) == -1 || ipc_get_str(im, text, sizeof(text)) == -1 ||
	    ipc_end(im) == -1)
		log_fatal(70, "event=fatal error=\"malformed RESULT from deliverd pid %d\"", w->pid);
	if (j == NULL || strcmp(qid, j->msg->qid) != 0)
		log_fatal(70, "event=fatal error=\"RESULT for %s from deliverd pid %d without that job\"",
		          qid, w->pid);
	size_t k;
	for (k = 0; k < j->n; k++)
		if (j->idx[k] == idx)
			break;
	if (k == j->n || (status != 2 && status != 4 && status != 5))
		log_fatal(70, "event=fatal error=\"RESULT with bad index/status from deliverd pid %d\"", w->pid);
	j->answered[k] = 1;
	struct spool_rcpt_state *r = &j->msg->st.r[idx];
	r->attempts++;
	r->last = time(NULL);
	spool_rcpt_set_error(r, text);
	r->state = status == 2 ? RS_DELIVERED : status == 5 ? RS_BOUNCED : RS_DEFERRED;
}

void schedule_done(struct worker *w, struct ipc_msg *im)
{
	char qid[QID_MAX], reason[SPOOL_ERR_MAX + 1] = "";
	uint32_t down;

	if (ipc_get_str(im, qid, sizeof(qid)) == -1 || ipc_get_u32(im, &down) == -1 || down > 1 ||
	    (down && ipc_get_str(im, reason, sizeof(reason)) == -1) || ipc_end(im) == -1)
		log_fatal(70, "event=fatal error=\"malformed DONE from deliverd pid %d\"", w->pid);
	if (w->job == NULL || strcmp(qid, w->job->msg->qid) != 0)
		log_fatal(70, "event=fatal error=\"DONE for %s from deliverd pid %d without that job\"",
		          qid, w->pid);
	if (w->job->transport != TR_LOCAL) {
		if (down) {
			hop_suspend(w->job->transport, w->job->nexthop, reason);
		} else {
			struct dead_hop **pp = hop_find(w->job->transport, w->job->nexthop);
			if (*pp)
				hop_drop(pp, "a delivery got through");
		}
	}
	job_finish(w, 0);
	add_idle(w);
	schedule_kick();
}
