/*
 * queued - the queue manager.  Listens on spool/private/queued for smtpd
 * (handles of new messages) and the deliverd pool (jobs and results).
 */
#include "queued.h"
#include "log.h"
#include "stats.h"
#include "proc.h"
#include "gcommit.h"
#include "str.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sysexits.h>
#include <unistd.h>

#define INCOMING_SCAN_MS 5000
#define GAUGE_MS 1000

struct config *cfg;
static struct ipc_chan *master;
static int listen_fd = -1;
static struct ev_timer scan_timer, gauge_timer;
static int stopping;

static void on_worker_close(struct ipc_chan *ch, void *arg)
{
	struct worker *w = arg;

	(void)ch;
	if (w->role == 2 && w->retired) {
		log_debug("event=worker_closed pid=%d reason=retired", w->pid);
	} else if (w->role == 2) {
		log_info("event=worker_gone pid=%d busy=%s", w->pid, w->job ? "yes" : "no");
		schedule_worker_gone(w);
	}
	ipc_chan_free(w->ch);
	free(w);
}

static void on_worker_msg(struct ipc_chan *ch, struct ipc_msg *m, void *arg)
{
	struct worker *w = arg;
	char s[64];
	uint32_t pid;

	(void)ch;
	if (m->fd >= 0) {
		close(m->fd);
		m->fd = -1;
	}
	if (w->role == 0) {
		if (m->type != IPC_HELLO || ipc_get_str(m, s, sizeof(s)) == -1 ||
		    ipc_get_u32(m, &pid) == -1 || ipc_end(m) == -1) {
			log_warn("event=ipc_error error=\"peer did not say HELLO\"");
			ipc_chan_free(w->ch);
			free(w);
			return;
		}
		w->pid = (int)pid;
		if (strcmp(s, "smtpd") == 0) {
			w->role = 1;
		} else if (strcmp(s, "deliverd") == 0) {
			w->role = 2;
			log_debug("event=worker_connected pid=%d", w->pid);
			schedule_worker_idle(w);
		} else {
			log_warn("event=ipc_error error=\"unknown role\" role=%s", log_q(s));
			ipc_chan_free(w->ch);
			free(w);
		}
		return;
	}
	switch (m->type) {
	case IPC_INCOMING: {
		char qid[QID_MAX];
		if (w->role != 1 || ipc_get_str(m, qid, sizeof(qid)) == -1 || ipc_end(m) == -1 ||
		    !spool_qid_valid(qid))
			log_fatal(EX_SOFTWARE, "event=fatal error=\"malformed INCOMING from pid %d\"", w->pid);
		queue_takeover(qid);
		break;
	}
	case IPC_RESULT:
		if (w->role != 2)
			log_fatal(EX_SOFTWARE, "event=fatal error=\"RESULT from non-deliverd pid %d\"", w->pid);
		schedule_result(w, m);
		break;
	case IPC_DONE:
		if (w->role != 2)
			log_fatal(EX_SOFTWARE, "event=fatal error=\"DONE from non-deliverd pid %d\"", w->pid);
		schedule_done(w, m);
		break;
	case IPC_RETIRE: {
		/* Idle for queue.max_idle: it may go if it holds no job and the
		 * pool keeps its minimum.  Refused, it stays and asks again. */
		if (w->role != 2 || w->retired || ipc_end(m) == -1)
			log_fatal(EX_SOFTWARE, "event=fatal error=\"bad RETIRE from pid %d\"", w->pid);
		struct ipc_msg r;
		int ok = schedule_retire(w);
		if (ok)
			log_info("event=worker_retired pid=%d", w->pid);
		else
			log_debug("event=retire_refused pid=%d busy=%s", w->pid, w->job ? "yes" : "no");
		ipc_msg_init(&r, IPC_RETIRE_REPLY);
		ipc_put_u32(&r, (uint32_t)ok);
		ipc_send(w->ch, &r, -1);
		break;
	}
	default:
		log_fatal(EX_SOFTWARE, "event=fatal error=\"unexpected message %u from pid %d\"", m->type,
		          w->pid);
	}
}

static void on_accept(int fd, int events, void *arg)
{
	(void)events;
	(void)arg;
	for (;;) {
		int c = accept4(fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (c == -1)
			return;
		/* Only our own user (or root) may talk to queued. */
		struct ucred cr;
		socklen_t cl = sizeof(cr);
		if (getsockopt(c, SOL_SOCKET, SO_PEERCRED, &cr, &cl) == -1 ||
		    (cr.uid != getuid() && cr.uid != 0)) {
			log_warn("event=ipc_refused uid=%d", (int)cr.uid);
			close(c);
			continue;
		}
		struct worker *w = xcalloc(1, sizeof(*w));
		w->ch = ipc_chan_new(c, on_worker_msg, on_worker_close, w);
		if (w->ch == NULL) {
			close(c);
			free(w);
		}
	}
}

static void on_master_msg(struct ipc_chan *ch, struct ipc_msg *m, void *arg)
{
	(void)arg;
	if (m->fd >= 0)
		close(m->fd);
	if (m->type == IPC_ADMIN) {
		admin_handle(ch, m);
		return;
	}
	log_fatal(EX_SOFTWARE, "event=fatal error=\"unexpected message %u from master\"", m->type);
}

struct gauge_sum {
	uint64_t active, deferred, held;
	int64_t oldest;
};

static int gauge_one(struct msg *m, void *arg)
{
	struct gauge_sum *g = arg;
	int deferred = 0;

	for (size_t i = 0; i < m->nrcpt; i++)
		if (m->st.r[i].state == RS_DEFERRED)
			deferred = 1;
	if (m->st.held)
		g->held++;
	else if (deferred)
		g->deferred++;
	else
		g->active++;
	if (g->oldest == 0 || m->arrival < g->oldest)
		g->oldest = m->arrival;
	return 0;
}

/* Queue gauges for the master's metrics, from the message table (the
 * same classification as `postern status`).  O(messages) once a second;
 * only changed values are sent. */
static void gauges(void *arg)
{
	struct gauge_sum g = { 0, 0, 0, 0 };

	(void)arg;
	queue_foreach(gauge_one, &g);
	stats_set(STAT_QUEUE_ACTIVE, g.active);
	stats_set(STAT_QUEUE_DEFERRED, g.deferred);
	stats_set(STAT_QUEUE_HELD, g.held);
	stats_set(STAT_QUEUE_OLDEST, g.oldest > 0 ? (uint64_t)g.oldest : 0);
	ev_timer_add(&gauge_timer, GAUGE_MS);
}

static void scan(void *arg)
{
	(void)arg;
	/* Safety net for handles smtpd could not pass (queued was down). */
	queue_scan_incoming();
	ev_timer_add(&scan_timer, INCOMING_SCAN_MS);
}

static void on_signal(int sig)
{
	switch (sig) {
	case SIGINT:
		/* Ctrl-C reaches the whole process group under `make run`:
		 * only the master acts on it, so it can stop us in order. */
		break;
	case SIGTERM:
		if (!stopping) {
			stopping = 1;
			/* State is written after every job, so there is nothing to
			 * flush: results still in flight are redone after restart. */
			log_info("event=stopping messages=%zu", queue_count());
			exit(0);
		}
		break;
	case SIGHUP: {
		/* The pool's size, like the master's slots for it, is fixed at
		 * start (the master logs that a change needs a restart). */
		int concurrency = cfg->queue.concurrency;
		if (proc_reload_swap(&cfg))
			cfg->queue.concurrency = concurrency;
		break;
	}
	case SIGUSR1:
		log_reopen();
		break;
	}
}

int main(int argc, char **argv)
{
	cfg = proc_child_init("queued", argc, argv, NULL);
	proc_signals_install(on_signal);
	master = proc_master_channel(on_master_msg);
	stats_init(master);
	listen_fd = ipc_listen(SPOOL_QUEUED_SOCK, 0600);
	if (listen_fd == -1)
		log_fatal(EX_TEMPFAIL, "event=fatal what=listen socket=%s error=%s", SPOOL_QUEUED_SOCK,
		          log_q(strerror(errno)));
	/* Our working directory is the spool: state files are made durable
	 * by a group commit off the event loop (T5 in spool.h). */
	int spool_fd = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (spool_fd == -1 || gcommit_start(spool_fd, -1, queue_commit_done) == -1)
		log_fatal(EX_OSERR, "event=fatal what=group_commit error=%s", log_q(strerror(errno)));
	schedule_init(master);
	queue_recover();
	pickup_init();   /* sendmail drops: after recovery, like new mail */
	if (ev_add(listen_fd, EV_READ, on_accept, NULL) == -1)
		log_fatal(EX_OSERR, "event=fatal what=ev_add");
	ev_timer_init(&scan_timer, scan, NULL);
	ev_timer_add(&scan_timer, INCOMING_SCAN_MS);
	ev_timer_init(&gauge_timer, gauges, NULL);
	gauges(NULL);
	proc_ready(master);
	ev_run();
	return 0;
}
