/*
 * admin - queue administration asked for through the master:
 * delete ID|ALL, hold ID, release ID, flush.  queued owns every spool
 * state change, so the CLI's requests are carried out here, each with a
 * log line naming the message and the state written to disk first.
 * A message with a delivery in progress is handled when that delivery
 * ends (delete) or simply not retried afterwards (hold).
 */
#include "queued.h"
#include "log.h"
#include "str.h"

#include <string.h>
#include <time.h>

static void reply(struct ipc_chan *master, uint32_t id, int ok, const char *text)
{
	struct ipc_msg m;

	ipc_msg_init(&m, IPC_ADMIN_REPLY);
	ipc_put_u32(&m, id);
	ipc_put_u32(&m, (uint32_t)ok);
	ipc_put_str(&m, text);
	ipc_send(master, &m, -1);
}

static int do_delete(struct msg *m, struct buf *out)
{
	if (m->jobs_out > 0) {
		m->delete_pending = 1;
		buf_appendf(out, "%s: delivery in progress; deleted when it ends\n", m->qid);
		log_info("event=delete_requested qid=%s reason=\"admin; delivery in progress\"", m->qid);
		return 0;
	}
	buf_appendf(out, "%s: deleted\n", m->qid);
	log_info("event=deleted qid=%s from=<%s> nrcpt=%zu reason=admin", m->qid, m->sender, m->nrcpt);
	queue_remove(m);
	return 0;
}

static int set_held(struct msg *m, int held, struct buf *out)
{
	if (m->st.held == held) {
		buf_appendf(out, "%s: already %s\n", m->qid, held ? "held" : "released");
		return 0;
	}
	m->st.held = held;
	if (queue_write_state(m) == -1) {
		m->st.held = !held;
		buf_appendf(out, "%s: cannot write its state file\n", m->qid);
		return -1;
	}
	log_info("event=%s qid=%s reason=admin", held ? "held" : "released", m->qid);
	buf_appendf(out, "%s: %s\n", m->qid, held ? "held" : "released");
	if (held)
		ev_timer_del(&m->retry);
	else {
		/* A released message is tried now, not at its old retry time. */
		m->st.next = time(NULL);
		schedule_msg(m);
	}
	return 0;
}

static int flush_one(struct msg *m, void *arg)
{
	size_t *n = arg;
	int deferred = 0;

	for (size_t i = 0; i < m->nrcpt; i++)
		if (m->st.r[i].state == RS_DEFERRED)
			deferred = 1;
	if (!deferred || m->st.held || m->jobs_out > 0)
		return 0;
	m->st.next = time(NULL);
	ev_timer_del(&m->retry);
	schedule_msg(m);
	(*n)++;
	return 0;
}

static int delete_one(struct msg *m, void *arg)
{
	return do_delete(m, arg);
}

void admin_handle(struct ipc_chan *master, struct ipc_msg *im)
{
	char cmd[32], arg[64];
	uint32_t id;
	struct buf out;
	int ok = 1;

	if (ipc_get_u32(im, &id) == -1 || ipc_get_str(im, cmd, sizeof(cmd)) == -1 ||
	    ipc_get_str(im, arg, sizeof(arg)) == -1 || ipc_end(im) == -1)
		log_fatal(70, "event=fatal error=\"malformed ADMIN from master\"");
	buf_init(&out, IPC_MSG_MAX - 64);
	if (strcmp(cmd, "flush") == 0) {
		size_t n = 0;
		schedule_resume_hops();   /* "try now" includes dead destinations */
		queue_foreach(flush_one, &n);
		log_info("event=flush messages=%zu reason=admin", n);
		buf_appendf(&out, "%zu deferred message%s scheduled for delivery now\n", n, n == 1 ? "" : "s");
	} else if (strcmp(cmd, "delete") == 0 && strcmp(arg, "ALL") == 0) {
		size_t before = queue_count();
		queue_foreach(delete_one, &out);
		if (buf_room(&out) < 64) {
			buf_reset(&out);
			buf_appendf(&out, "%zu messages deleted or marked for deletion\n", before);
		}
		if (before == 0)
			buf_appendf(&out, "the queue is empty\n");
	} else if (strcmp(cmd, "delete") == 0 || strcmp(cmd, "hold") == 0 || strcmp(cmd, "release") == 0) {
		struct msg *m = spool_qid_valid(arg) ? queue_find(arg) : NULL;
		if (m == NULL) {
			buf_appendf(&out, "%s: no such message in the queue\n", arg);
			ok = 0;
		} else if (cmd[0] == 'd') {
			ok = do_delete(m, &out) == 0;
		} else {
			ok = set_held(m, cmd[0] == 'h', &out) == 0;
		}
	} else {
		buf_appendf(&out, "unknown queue command %s\n", cmd);
		ok = 0;
	}
	buf_append(&out, "", 1);
	reply(master, id, ok, buf_head(&out));
	buf_free(&out);
}
