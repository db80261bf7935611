/*
 * queue - the table of messages queued owns, and the spool transitions
 * T2 (takeover), T3 (corrupt), T4 (finish), T5 (state) of shared/spool.h.
 * queued re-validates everything smtpd wrote: a file it cannot parse goes
 * to corrupt/ and is logged, it never crashes queued.
 */
#include "queued.h"
#include "log.h"
#include "gcommit.h"
#include "stats.h"
#include "str.h"

#include <dirent.h>
#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define HASH_SIZE 65536

static struct msg *table[HASH_SIZE];
static size_t count;
/* Largest count since memory was last handed back to the system. */
static size_t high_water;
#define TRIM_AFTER 10000

static unsigned hash(const char *s)
{
	unsigned h = 2166136261u;
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 16777619u;
	return h & (HASH_SIZE - 1);
}

struct msg *queue_find(const char *qid)
{
	for (struct msg *m = table[hash(qid)]; m; m = m->hnext)
		if (strcmp(m->qid, qid) == 0)
			return m;
	return NULL;
}

size_t queue_count(void)
{
	return count;
}

static void insert(struct msg *m)
{
	unsigned h = hash(m->qid);
	m->hnext = table[h];
	table[h] = m;
	if (++count > high_water)
		high_water = count;
}

static void unlink_msg(struct msg *m)
{
	struct msg **pp = &table[hash(m->qid)];
	for (; *pp; pp = &(*pp)->hnext)
		if (*pp == m) {
			*pp = m->hnext;
			count--;
			return;
		}
}

void queue_msg_free(struct msg *m)
{
	schedule_forget(m);
	ev_timer_del(&m->retry);
	for (size_t i = 0; i < m->nrcpt; i++)
		free(m->rcpt[i]);
	free(m->rcpt);
	spool_state_free(&m->st);
	free(m->sender);
	free(m);
}

static void retry_due(void *arg)
{
	schedule_loaded(arg);
}

static struct msg *msg_new(struct spool_env *env, uint64_t size)
{
	struct msg *m = xcalloc(1, sizeof(*m));

	str_copy(m->qid, env->qid, sizeof(m->qid));
	m->sender = xstrdup(env->sender);
	m->arrival = env->arrival;
	m->size = size;
	m->rcpt = env->rcpt;
	m->nrcpt = env->nrcpt;
	env->rcpt = NULL;
	env->nrcpt = 0;
	ev_timer_init(&m->retry, retry_due, m);
	return m;
}

/* T3: keep the evidence, log it, never delete it. */
static void move_corrupt(const char *dir, const char *qid, const char *why)
{
	char file[64];

	str_fmt(file, sizeof(file), "%s/%s", dir, qid);
	if (spool_move(dir, SPOOL_CORRUPT, qid) == -1)
		log_error("event=corrupt qid=%s file=%s error=%s move_error=%s", qid, file, log_q(why),
		          log_q(strerror(errno)));
	else
		log_error("event=corrupt qid=%s file=%s error=%s moved_to=corrupt/%s", qid, file,
		          log_q(why), qid);
}

int queue_write_state(struct msg *m)
{
	uint64_t ticket;
	int err;

	if (spool_state_write(&m->st, 0) == -1) {
		log_error("event=state_write_failed qid=%s error=%s", m->qid, log_q(strerror(errno)));
		return -1;
	}
	m->has_state = 1;
	/* Durable soon, together with every other state written meanwhile;
	 * nothing waits for it (T5 in spool.h). */
	if (gcommit_ticket(-1, &ticket, &err) == 1 && err != 0)
		queue_commit_done(ticket, err);
	return 0;
}

void queue_commit_done(uint64_t upto, int err)
{
	if (err != 0)
		log_error("event=state_sync_failed error=%s note=\"state files written before this may "
		          "be lost in a crash: deliveries would be repeated, never lost\" ticket=%llu",
		          log_q(strerror(err)), (unsigned long long)upto);
}

int queue_takeover(const char *qid)
{
	struct spool_env env;
	char err[256];
	int corrupt, fd;

	if (queue_find(qid) != NULL)
		return 0;
	fd = spool_msg_open(SPOOL_INCOMING, qid, &env, &corrupt, err, sizeof(err));
	if (fd == -1) {
		if (corrupt)
			move_corrupt(SPOOL_INCOMING, qid, err);
		else if (errno != ENOENT)
			log_warn("event=takeover_failed qid=%s error=%s", qid, log_q(err));
		return -1;
	}
	close(fd);
	struct msg *m = msg_new(&env, env.data_len);
	spool_env_free(&env);
	/* A state file exists only if an older version's takeover wrote one
	 * and was cut before its rename; otherwise every recipient is pending
	 * and nothing needs writing (T2 in spool.h). */
	int missing;
	if (spool_state_read(qid, m->nrcpt, &m->st, &missing, err, sizeof(err)) == -1) {
		spool_state_free(&m->st);
		spool_state_init(&m->st, qid, m->nrcpt);
	} else {
		m->has_state = 1;
	}
	if (spool_rename(SPOOL_INCOMING, SPOOL_QUEUE, qid) == -1) {
		log_error("event=takeover_failed qid=%s error=%s", qid, log_q(strerror(errno)));
		queue_msg_free(m);
		return -1;
	}
	insert(m);
	stats_add(STAT_MSG_RECEIVED, 1);
	log_info("event=queued qid=%s from=<%s> nrcpt=%zu size=%llu", qid, m->sender, m->nrcpt,
	         (unsigned long long)m->size);
	schedule_msg(m);
	return 0;
}

void queue_remove(struct msg *m)
{
	if (spool_remove(m->qid, m->has_state) == -1) {
		log_error("event=remove_failed qid=%s error=%s", m->qid, log_q(strerror(errno)));
		return;
	}
	log_info("event=removed qid=%s", m->qid);
	unlink_msg(m);
	queue_msg_free(m);
	/* After a big backlog drains, give its memory back: free() alone
	 * keeps the heap at its peak. */
	if (high_water - count >= TRIM_AFTER || (count == 0 && high_water > 1000)) {
		malloc_trim(0);
		high_water = count;
	}
}

/* Load queue/QID with its state (recovery). */
static void load_queued(const char *qid)
{
	struct spool_env env;
	char err[256];
	int corrupt, missing, fd;

	fd = spool_msg_open(SPOOL_QUEUE, qid, &env, &corrupt, err, sizeof(err));
	if (fd == -1) {
		if (corrupt) {
			move_corrupt(SPOOL_QUEUE, qid, err);
			char st[64], to[64];
			str_fmt(st, sizeof(st), SPOOL_STATE "/%s", qid);
			str_fmt(to, sizeof(to), SPOOL_CORRUPT "/%s.state", qid);
			rename(st, to);
		} else {
			log_warn("event=load_failed qid=%s error=%s", qid, log_q(err));
		}
		return;
	}
	close(fd);
	struct msg *m = msg_new(&env, env.data_len);
	spool_env_free(&env);
	if (spool_state_read(qid, m->nrcpt, &m->st, &missing, err, sizeof(err)) == -1) {
		/* No state file: every recipient is pending (T2 writes none).
		 * An unreadable one: start over for every recipient, so a
		 * recipient may get the message twice (at-least-once). */
		if (!missing) {
			char from[64], to[64];
			log_warn("event=state_rebuilt qid=%s error=%s", qid, log_q(err));
			str_fmt(from, sizeof(from), SPOOL_STATE "/%s", qid);
			str_fmt(to, sizeof(to), SPOOL_CORRUPT "/%s.state", qid);
			rename(from, to);
		}
		spool_state_free(&m->st);
		spool_state_init(&m->st, qid, m->nrcpt);
	} else {
		m->has_state = 1;
	}
	insert(m);
	schedule_loaded(m);
}

static void scan_dir(const char *dir, void (*fn)(const char *qid))
{
	DIR *d = opendir(dir);
	struct dirent *de;

	if (d == NULL) {
		log_error("event=scan_failed dir=%s error=%s", dir, log_q(strerror(errno)));
		return;
	}
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		if (!spool_qid_valid(de->d_name)) {
			log_warn("event=stray_file file=%s/%s error=\"not a queue id; left alone\"", dir,
			         log_q(de->d_name));
			continue;
		}
		fn(de->d_name);
	}
	closedir(d);
}

static void takeover_cb(const char *qid)
{
	queue_takeover(qid);
}

static void orphan_state(const char *qid)
{
	char q[64], i[64], s[64];
	struct stat sb;

	str_fmt(q, sizeof(q), SPOOL_QUEUE "/%s", qid);
	str_fmt(i, sizeof(i), SPOOL_INCOMING "/%s", qid);
	if (stat(q, &sb) == 0 || stat(i, &sb) == 0)
		return;
	/* T4 was cut between the two unlinks: the message is done. */
	str_fmt(s, sizeof(s), SPOOL_STATE "/%s", qid);
	unlink(s);
	log_info("event=orphan_state_removed qid=%s", qid);
}

void queue_recover(void)
{
	scan_dir(SPOOL_STATE, orphan_state);
	scan_dir(SPOOL_QUEUE, load_queued);
	scan_dir(SPOOL_INCOMING, takeover_cb);
	log_info("event=recovered messages=%zu", count);
}

void queue_foreach(int (*fn)(struct msg *, void *), void *arg)
{
	for (size_t h = 0; h < HASH_SIZE; h++) {
		struct msg *m = table[h], *next;
		for (; m; m = next) {
			next = m->hnext;
			fn(m, arg);
		}
	}
}

void queue_scan_incoming(void)
{
	scan_dir(SPOOL_INCOMING, takeover_cb);
}
