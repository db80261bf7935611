/*
 * deliverd - a delivery agent of the pool.  Connects to queued, says
 * HELLO, and runs the jobs it is given one at a time.  A job is processed
 * synchronously inside the event loop callback, so SIGTERM (read from the
 * signalfd afterwards) lets the current transaction finish first.
 *
 * The pool is on demand (docs/architecture.md, "The deliverd pool"): a
 * deliverd without a job for queue.max_idle seconds closes its kept
 * smarthost connection and asks queued to retire (IPC_RETIRE).  queued
 * answers in order on the same channel, so a JOB it sent before it read
 * the request arrives first and runs, and the answer is then a refusal;
 * after a yes no JOB can follow.  On yes: IPC_RETIRED to the master (so
 * it does not restart us), `event=retired idle=Ns`, exit 0.  On no (a job
 * was on its way, or the pool is at its minimum): ask again after another
 * max_idle without a job.
 */
#include "deliverd.h"
#include "ipc.h"
#include "log.h"
#include "stats.h"
#include "proc.h"
#include "str.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#define QUEUED_RETRY_MS 500

struct config *cfg;
static struct ipc_chan *master, *queued;
static struct ev_timer retry_timer, idle_timer, retire_timer;
static uint64_t idle_since_ms;   /* end of the last job (or connect to queued) */
static int retiring;             /* IPC_RETIRE sent, no answer yet */
static int stopping;
static int in_job;               /* signals wait until the job is over */
static unsigned held_signals;

static void queued_connect(void *arg);
static void on_signal(int sig);

static const char *status_event(int st)
{
	return st == 2 ? "delivered" : st == 5 ? "bounced" : "deferred";
}

static void run_job(struct ipc_msg *m)
{
	char qid[QID_MAX], transport[16], nexthop[256], err[300];
	struct spool_env env;
	struct delivery d;
	uint32_t n;
	int corrupt;
	int64_t arrival = 0;

	if (ipc_get_str(m, qid, sizeof(qid)) == -1 || ipc_get_str(m, transport, sizeof(transport)) == -1 ||
	    ipc_get_str(m, nexthop, sizeof(nexthop)) == -1 || ipc_get_u32(m, &n) == -1 ||
	    n == 0 || n > SPOOL_RCPT_MAX || !spool_qid_valid(qid))
		log_fatal(EX_SOFTWARE, "event=fatal error=\"malformed JOB from queued\"");
	memset(&d, 0, sizeof(d));
	d.r = xcalloc(n, sizeof(*d.r));
	d.n = n;
	d.qid = qid;
	for (uint32_t i = 0; i < n; i++)
		if (ipc_get_u32(m, &d.r[i].idx) == -1 ||
		    ipc_get_str(m, d.r[i].addr, sizeof(d.r[i].addr)) == -1)
			log_fatal(EX_SOFTWARE, "event=fatal error=\"malformed JOB recipients from queued\"");
	if (ipc_end(m) == -1)
		log_fatal(EX_SOFTWARE, "event=fatal error=\"trailing bytes in JOB from queued\"");

	d.fd = spool_msg_open(SPOOL_QUEUE, qid, &env, &corrupt, err, sizeof(err));
	if (d.fd == -1) {
		/* queued re-validated this file at takeover; if it is unreadable
		 * now, defer and let queued's next look decide. */
		log_error("event=queue_file_error qid=%s error=%s", qid, log_q(err));
		for (size_t i = 0; i < d.n; i++) {
			d.r[i].status = 4;
			str_fmt(d.r[i].text, sizeof(d.r[i].text), "451 4.3.0 queue file unreadable: %s", err);
		}
	} else {
		d.env = &env;
		arrival = env.arrival;
		if (strcmp(transport, "local") == 0) {
			maildir_deliver(&d);
		} else if (strcmp(transport, "relay") == 0) {
			smtp_deliver(&d);
		} else {
			mx_deliver(&d, nexthop);
		}
		spool_env_free(&env);
		close(d.fd);
	}
	for (size_t i = 0; i < d.n; i++) {
		struct ipc_msg r;
		struct rcpt_result *x = &d.r[i];
		void (*logf)(const char *, ...) = x->status == 2 ? log_info : log_warn;
		/* The stored text names the host ("H said: 250 ..."); the log has
		 * the host in relay= and the server's own words in reply=. */
		const char *said = strstr(x->text, " said: ");
		logf("event=%s qid=%s rcpt=<%s> transport=%s relay=%s reply=%s", status_event(x->status), qid,
		     x->addr, transport, log_q(d.relay), log_q(said ? said + 7 : x->text));
		if (x->status == 2) {
			stats_add(STAT_RCPT_DELIVERED, 1);
			struct timespec now;
			clock_gettime(CLOCK_REALTIME, &now);
			if (arrival > 0)
				stats_latency((double)(now.tv_sec - arrival) + now.tv_nsec / 1e9);
		} else {
			stats_add(x->status == 5 ? STAT_RCPT_BOUNCED : STAT_RCPT_DEFERRED, 1);
		}
		ipc_msg_init(&r, IPC_RESULT);
		ipc_put_str(&r, qid);
		ipc_put_u32(&r, x->idx);
		ipc_put_u32(&r, (uint32_t)(x->status ? x->status : 4));
		ipc_put_str(&r, x->text);
		ipc_send(queued, &r, -1);
	}
	struct ipc_msg done;
	ipc_msg_init(&done, IPC_DONE);
	ipc_put_str(&done, qid);
	ipc_put_u32(&done, (uint32_t)(d.site_down != 0));
	if (d.site_down)
		ipc_put_str(&done, d.r[0].text);   /* the reason, for queued's log */
	ipc_send(queued, &done, -1);
	free(d.r);
}

/* Ask to retire `ms` from now (0: now), unless waiting for an answer. */
static void retire_arm(uint64_t ms)
{
	if (queued != NULL && !retiring)
		ev_timer_add(&retire_timer, ms);
}

/* No job since idle_since_ms: ask queued whether we may go.  Close the
 * kept smarthost connection first, so a yes leaves nothing half-done. */
static void retire_ask(void *arg)
{
	(void)arg;
	if (queued == NULL || retiring || in_job)
		return;
	ev_timer_del(&idle_timer);
	smtp_idle_close();
	struct ipc_msg m;
	ipc_msg_init(&m, IPC_RETIRE);
	if (ipc_send(queued, &m, -1) == 0)
		retiring = 1;
}

static void retire_answer(struct ipc_msg *m)
{
	uint32_t ok;

	if (!retiring || ipc_get_u32(m, &ok) == -1 || ok > 1 || ipc_end(m) == -1)
		log_fatal(EX_SOFTWARE, "event=fatal error=\"unexpected RETIRE_REPLY from queued\"");
	retiring = 0;
	if (!ok) {
		retire_arm((uint64_t)cfg->queue.max_idle * 1000);
		return;
	}
	uint64_t idle_s = (ev_now_ms() - idle_since_ms) / 1000;
	struct ipc_msg r;
	/* Synchronously, so it is in the master's socket before our exit. */
	ipc_msg_init(&r, IPC_RETIRED);
	ipc_put_u32(&r, (uint32_t)idle_s);
	ipc_send_sync(ipc_chan_fd(master), &r, -1);
	ipc_msg_free(&r);
	smtp_idle_close();
	mx_shutdown();
	log_info("event=retired idle=%llus", (unsigned long long)idle_s);
	exit(0);
}

static void on_queued_msg(struct ipc_chan *ch, struct ipc_msg *m, void *arg)
{
	(void)ch;
	(void)arg;
	if (m->fd >= 0) {
		close(m->fd);
		m->fd = -1;
	}
	if (m->type == IPC_RETIRE_REPLY) {
		retire_answer(m);
		return;
	}
	if (m->type != IPC_JOB)
		log_fatal(EX_SOFTWARE, "event=fatal error=\"unexpected message %u from queued\"", m->type);
	ev_timer_del(&idle_timer);
	ev_timer_del(&retire_timer);
	in_job = 1;
	run_job(m);
	in_job = 0;
	if (smtp_has_idle())
		ev_timer_add(&idle_timer, SMTP_IDLE_MS);
	idle_since_ms = ev_now_ms();
	retire_arm((uint64_t)cfg->queue.max_idle * 1000);
	if (stopping) {
		log_info("event=stopped");
		exit(0);
	}
	for (int sig = 1; held_signals != 0 && sig < 32; sig++)
		if (held_signals & (1u << sig)) {
			held_signals &= ~(1u << sig);
			on_signal(sig);
		}
}

void job_io_pause(int pause)
{
	if (queued == NULL)
		return;
	int fd = ipc_chan_fd(queued);
	ev_mod(fd, pause ? 0 : EV_READ | (ipc_pending(queued) ? EV_WRITE : 0));
}

static void on_queued_close(struct ipc_chan *ch, void *arg)
{
	(void)ch;
	(void)arg;
	ipc_chan_free(queued);
	queued = NULL;
	retiring = 0;   /* a new queued knows nothing of the request */
	ev_timer_del(&retire_timer);
	if (stopping)
		exit(0);
	log_info("event=queued_disconnected");
	ev_timer_add(&retry_timer, QUEUED_RETRY_MS);
}

static void queued_connect(void *arg)
{
	(void)arg;
	if (queued != NULL)
		return;
	queued = proc_connect_queued("deliverd", on_queued_msg, on_queued_close);
	if (queued == NULL) {
		ev_timer_add(&retry_timer, QUEUED_RETRY_MS);
		return;
	}
	idle_since_ms = ev_now_ms();
	retire_arm((uint64_t)cfg->queue.max_idle * 1000);
}

static void idle_close(void *arg)
{
	(void)arg;
	smtp_idle_close();
}

static void on_signal(int sig)
{
	if (in_job && sig > 0 && sig < 32) {
		/* A job is pumping the loop for DNS answers: act afterwards. */
		held_signals |= 1u << sig;
		return;
	}
	switch (sig) {
	case SIGINT:
		/* Ctrl-C reaches the whole process group under `make run`:
		 * only the master acts on it, so it can stop us in order. */
		break;
	case SIGTERM:
		/* Jobs run to completion inside one callback, so here we are
		 * always between transactions. */
		stopping = 1;
		smtp_idle_close();
		mx_shutdown();
		log_info("event=stopped");
		exit(0);
	case SIGHUP: {
		if (proc_reload_swap(&cfg)) {
			smtp_reload();
			mx_shutdown();
			mx_init();
			/* A new queue.max_idle counts from the start of this idle
			 * spell, not from the reload. */
			if (ev_timer_armed(&retire_timer)) {
				uint64_t idle = ev_now_ms() - idle_since_ms;
				uint64_t max = (uint64_t)cfg->queue.max_idle * 1000;
				retire_arm(idle >= max ? 0 : max - idle);
			}
		}
		break;
	}
	case SIGUSR1:
		log_reopen();
		break;
	}
}

static void before_drop(struct config *c)
{
	char err[512];

	maildir_open_root(c->local.maildir);
	if (smtp_load_password(c, err, sizeof(err)) == -1)
		log_fatal(EX_CONFIG, "event=fatal error=%s", log_q(err));
}

int main(int argc, char **argv)
{
	cfg = proc_child_init("deliverd", argc, argv, before_drop);
	proc_signals_install(on_signal);
	master = proc_master_channel(NULL);
	stats_init(master);
	ev_timer_init(&retry_timer, queued_connect, NULL);
	ev_timer_init(&idle_timer, idle_close, NULL);
	ev_timer_init(&retire_timer, retire_ask, NULL);
	mx_init();
	queued_connect(NULL);
	proc_ready(master);
	ev_run();
	return 0;
}
