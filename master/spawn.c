/*
 * spawn - fork, exec and supervise the children.
 *
 * Each child is a separate program from libexec/postern/ (so ps and
 * /proc/PID/exe name its role).  It gets the master channel on fd 3 and,
 * for smtpd, the listening sockets from fd 4 on (described in
 * POSTERN_LISTEN).  A child that dies is respawned at once if it had been
 * up for a while; one that dies soon after start is respawned with an
 * exponential backoff (Postfix master_spawn.c throttling) so a crash loop
 * is logged and slowed, never spun.  A lost child stops nothing else.
 *
 * The deliverd pool is on demand (docs/architecture.md, "The deliverd
 * pool"): M.children has a slot for each of queue.concurrency deliverd,
 * and only config_pool_min() of them are started with the rest.  queued
 * asks for another with IPC_SPAWN when jobs wait and no deliverd is idle;
 * spawn_on_request() checks the request against the pool and starts one
 * in a free slot, with spawn_child() like any other child.  A deliverd
 * that queued let retire says IPC_RETIRED and exits 0: its slot becomes
 * unused again, not restarted, and its exit counts as no restart and no
 * death.  Any other exit of a deliverd is supervised as before.
 */
#include "master.h"
#include "log.h"
#include "proc.h"
#include "str.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <sysexits.h>
#include <unistd.h>

#define STABLE_MS 10000      /* a child up this long is not crash-looping */
#define LOOP_WINDOW_MS 60000 /* ... nor one that died fewer than 5 times in this window */
#define BACKOFF_FIRST_MS 250
#define BACKOFF_MAX_MS 60000

int child_in_use(const struct child *c)
{
	return c->state != CH_UNUSED;
}

/* deliverd slots in use (running, starting or waiting to be respawned),
 * but for `except`; *running: of those, the ones alive that have not
 * announced their retirement; *waiting: the throttled ones. */
static unsigned pool_count(const struct child *except, unsigned *running, unsigned *waiting)
{
	unsigned used = 0, run = 0, wait = 0;

	for (size_t i = 0; i < M.nchildren; i++) {
		const struct child *d = &M.children[i];
		if (d == except || d->role != ROLE_DELIVERD || !child_in_use(d))
			continue;
		used++;
		if (d->pid > 0 && !d->retiring)
			run++;
		if (d->state == CH_WAITING)
			wait++;
	}
	if (running)
		*running = run;
	if (waiting)
		*waiting = wait;
	return used;
}

/*
 * IPC_SPAWN: queued has jobs waiting and no idle deliverd; `connected` is
 * how many deliverd it has.  Start one more only if the pool is below
 * queue.concurrency and every deliverd we run has reached queued: one that
 * is still starting will take a job in a moment, so asking again before it
 * said HELLO (queued re-asks after its wait, or at the next HELLO) must not
 * fork another.  So the pool grows by at most one process at a time, and a
 * backlog cannot fork-storm.  Refusals are not answered: queued's request
 * lapses when the next deliverd connects or after its wait.  Nor does the
 * pool grow while a deliverd is throttled: one that crash-loops says that
 * more of them would too.
 */
static void spawn_on_request(uint32_t connected)
{
	unsigned running, waiting;
	unsigned used = pool_count(NULL, &running, &waiting);
	struct child *slot = NULL;

	if (M.stopping)
		return;
	for (size_t i = 0; i < M.nchildren && slot == NULL; i++)
		if (M.children[i].role == ROLE_DELIVERD && !child_in_use(&M.children[i]))
			slot = &M.children[i];
	if (slot == NULL || used >= (unsigned)M.cfg->queue.concurrency) {
		log_debug("event=pool_refused reason=max processes=%u max=%d", used,
		          M.cfg->queue.concurrency);
		return;
	}
	if (running > connected) {
		log_debug("event=pool_refused reason=starting processes=%u connected=%u", running,
		          (unsigned)connected);
		return;
	}
	if (waiting > 0) {
		log_debug("event=pool_refused reason=throttled throttled=%u", waiting);
		return;
	}
	log_info("event=pool_grow component=deliverd slot=%d processes=%u max=%d", slot->slot, used + 1,
	         M.cfg->queue.concurrency);
	spawn_child(slot);
}

static void on_child_msg(struct ipc_chan *ch, struct ipc_msg *m, void *arg)
{
	struct child *c = arg;
	uint32_t pid;

	(void)ch;
	if (m->fd >= 0)
		close(m->fd);
	switch (m->type) {
	case IPC_READY:
		if (ipc_get_u32(m, &pid) == -1 || ipc_end(m) == -1) {
			log_warn("event=ipc_error component=%s pid=%d error=\"bad READY\"",
			         role_name(c->role), (int)c->pid);
			return;
		}
		c->state = CH_READY;
		master_check_ready();
		break;
	case IPC_STATS:
		metrics_apply(c, m);
		break;
	case IPC_ADMIN_REPLY:
		if (c->role != ROLE_QUEUED) {
			log_warn("event=ipc_error component=%s error=\"ADMIN_REPLY from a non-queued\"",
			         role_name(c->role));
			return;
		}
		control_admin_reply(m);
		break;
	case IPC_SPAWN: {
		uint32_t connected;
		if (c->role != ROLE_QUEUED || ipc_get_u32(m, &connected) == -1 || ipc_end(m) == -1) {
			log_warn("event=ipc_error component=%s pid=%d error=\"bad SPAWN\"", role_name(c->role),
			         (int)c->pid);
			return;
		}
		spawn_on_request(connected);
		break;
	}
	case IPC_RETIRED: {
		uint32_t idle;
		if (c->role != ROLE_DELIVERD || ipc_get_u32(m, &idle) == -1 || ipc_end(m) == -1) {
			log_warn("event=ipc_error component=%s pid=%d error=\"bad RETIRED\"",
			         role_name(c->role), (int)c->pid);
			return;
		}
		c->retiring = 1;
		c->retired_idle = idle;
		break;
	}
	default:
		log_warn("event=ipc_error component=%s pid=%d error=\"unexpected message %u\"",
		         role_name(c->role), (int)c->pid, m->type);
	}
}

static void on_child_close(struct ipc_chan *ch, void *arg)
{
	struct child *c = arg;
	(void)ch;
	/* The process exit (SIGCHLD) does the bookkeeping; just drop the fd. */
	ipc_chan_free(c->ch);
	c->ch = NULL;
}

static void respawn_timer(void *arg)
{
	struct child *c = arg;
	if (!M.stopping && c->pid == 0) {
		spawn_child(c);
		if (c->pid)
			log_info("event=restarted component=%s pid=%d restarts=%u", role_name(c->role),
			         (int)c->pid, c->restarts);
	}
}

/* In the child: put n descriptors at target[0..n), clearing close-on-exec.
 * All are first copied above every target, so placing one never
 * overwrites another's source.  The copies start just above the highest
 * possible target (not at some round number), so a small open-files
 * limit still works. */
#define PLACE_ABOVE (PROC_LISTEN_FD0 + CONFIG_LISTEN_MAX)
static int place_fds(const int *fd, const int *target, size_t n)
{
	int tmp[1 + CONFIG_LISTEN_MAX];

	for (size_t i = 0; i < n; i++)
		if ((tmp[i] = fcntl(fd[i], F_DUPFD_CLOEXEC, PLACE_ABOVE)) == -1)
			return -1;
	for (size_t i = 0; i < n; i++) {
		if (dup2(tmp[i], target[i]) == -1)
			return -1;
		close(tmp[i]);
	}
	return 0;
}

void spawn_child(struct child *c)
{
	char path[CONFIG_PATH_MAX + 32], env[2048] = "";
	int sv[2];
	pid_t pid;

	str_fmt(path, sizeof(path), "%s/%s", M.libexec, role_name(c->role));
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == -1) {
		log_error("event=spawn_failed component=%s error=%s", role_name(c->role),
		          log_q(strerror(errno)));
		c->state = CH_WAITING;
		ev_timer_add(&c->timer, 1000);
		return;
	}
	if (c->role == ROLE_SMTPD) {
		for (size_t i = 0; i < M.nlisten; i++) {
			char one[128];
			str_fmt(one, sizeof(one), "%s%d:%s:%s:%d", i ? "," : "", PROC_LISTEN_FD0 + (int)i,
			        config_mode_name(M.cfg->listen[i].mode), M.cfg->listen[i].address,
			        M.cfg->listen[i].port);
			str_append(env, one, sizeof(env));
		}
	}
	pid = fork();
	if (pid == -1) {
		log_error("event=spawn_failed component=%s error=%s", role_name(c->role),
		          log_q(strerror(errno)));
		close(sv[0]);
		close(sv[1]);
		c->state = CH_WAITING;
		ev_timer_add(&c->timer, 1000);
		return;
	}
	if (pid == 0) {
		proc_signals_reset();
		/* Under `postern start` our stderr is a pipe the CLI waits on:
		 * children must not hold it open.  They log to files anyway. */
		if (M.daemon) {
			int null = open("/dev/null", O_WRONLY);
			if (null >= 0)
				dup2(null, 2);
		}
		int from[1 + CONFIG_LISTEN_MAX], to[1 + CONFIG_LISTEN_MAX];
		size_t n = 0;
		from[n] = sv[1];
		to[n++] = PROC_MASTER_FD;
		if (c->role == ROLE_SMTPD) {
			for (size_t i = 0; i < M.nlisten && i < CONFIG_LISTEN_MAX; i++) {
				from[n] = M.listen_fd[i];
				to[n++] = PROC_LISTEN_FD0 + (int)i;
			}
			setenv("POSTERN_LISTEN", env, 1);
		}
		if (place_fds(from, to, n) == -1)
			_exit(EX_OSERR);
		char *argv[] = { (char *)role_name(c->role), "-c", M.config_path, NULL };
		execv(path, argv);
		/* Cannot log through our file safely after fork; stderr goes to
		 * the master's stderr or /dev/null. */
		_exit(EX_OSERR);
	}
	close(sv[1]);
	c->pid = pid;
	c->state = CH_STARTING;
	c->started = time(NULL);
	c->started_ms = ev_now_ms();
	c->restart_requested = 0;
	c->retiring = 0;
	c->ch = ipc_chan_new(sv[0], on_child_msg, on_child_close, c);
	if (c->ch == NULL)
		close(sv[0]);
	log_info("event=spawned component=%s pid=%d slot=%d restarts=%u", role_name(c->role), (int)pid,
	         c->slot, c->restarts);
}

void spawn_all(void)
{
	for (size_t i = 0; i < M.nchildren; i++) {
		ev_timer_init(&M.children[i].timer, respawn_timer, &M.children[i]);
		if (child_in_use(&M.children[i]))
			spawn_child(&M.children[i]);
	}
}

static struct child *find_pid(pid_t pid)
{
	for (size_t i = 0; i < M.nchildren; i++)
		if (M.children[i].pid == pid)
			return &M.children[i];
	return NULL;
}

static void describe_exit(int status, char *out, size_t len)
{
	if (WIFEXITED(status))
		str_fmt(out, len, "exit %d", WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		str_fmt(out, len, "signal %d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
	else
		str_fmt(out, len, "status %d", status);
}

/* Messages the child sent just before it exited may still be unread when
 * its SIGCHLD is handled (epoll reports both at once, in any order): read
 * them first, so a deliverd's IPC_RETIRED is never missed. */
static void drain_child(struct child *c)
{
	struct ipc_msg m;

	if (c->ch == NULL)
		return;
	for (int i = 0; i < 64 && ipc_recv_sync(ipc_chan_fd(c->ch), &m, 0) == 0; i++) {
		on_child_msg(c->ch, &m, c);
		ipc_msg_free(&m);
	}
}

static void child_exited(struct child *c, int status)
{
	uint64_t lived = ev_now_ms() - c->started_ms;
	pid_t old = c->pid;

	drain_child(c);
	/* Retired: queued let it go and it exited 0.  Not a death: no
	 * restart, no backoff, and its last exit stays what it was. */
	int retired = c->retiring && WIFEXITED(status) && WEXITSTATUS(status) == 0;
	if (!retired)
		describe_exit(status, c->last_exit, sizeof(c->last_exit));
	c->pid = 0;
	c->retiring = 0;
	metrics_child_exited(c);
	if (c->role == ROLE_QUEUED)
		control_admin_abort();
	if (c->ch) {
		ipc_chan_free(c->ch);
		c->ch = NULL;
	}
	if (M.stopping || c->state == CH_STOPPED) {
		c->state = CH_STOPPED;
		log_info("event=exited component=%s pid=%d status=%s", role_name(c->role), (int)old,
		         log_q(c->last_exit));
		return;
	}
	if (retired) {
		unsigned left = pool_count(c, NULL, NULL);
		log_info("event=retired component=%s pid=%d slot=%d idle=%us uptime_ms=%llu processes=%u",
		         role_name(c->role), (int)old, c->slot, c->retired_idle, (unsigned long long)lived,
		         left);
		if (left >= (unsigned)config_pool_min(M.cfg)) {
			c->state = CH_UNUSED;
			return;
		}
		/* queued keeps the minimum; if its count was off, top up
		 * (a replacement, not a restart). */
		c->backoff_ms = 0;
		spawn_child(c);
		return;
	}
	int expected = c->restart_requested;
	log_info("event=exited component=%s pid=%d status=%s uptime_ms=%llu expected=%s",
	         role_name(c->role), (int)old, log_q(c->last_exit), (unsigned long long)lived,
	         expected ? "yes" : "no");
	c->restarts++;
	/*
	 * Throttle only what looks like a crash loop (Postfix throttles
	 * start-up failures): a child that died before it was ready and soon
	 * after start, or one that died 5 times within a minute.  A child
	 * killed once while serving (OOM killer, an admin's kill -9) comes
	 * back at once.
	 */
	uint64_t now = ev_now_ms();
	int was_ready = c->state == CH_READY;
	if (!expected) {
		memmove(c->deaths + 1, c->deaths, sizeof(c->deaths) - sizeof(c->deaths[0]));
		c->deaths[0] = now;
	}
	int looping = c->deaths[4] != 0 && now - c->deaths[4] < LOOP_WINDOW_MS;
	if (expected || ((was_ready || lived >= STABLE_MS) && !looping)) {
		c->backoff_ms = 0;
		spawn_child(c);
		if (c->pid)
			log_info("event=restarted component=%s pid=%d restarts=%u", role_name(c->role),
			         (int)c->pid, c->restarts);
		return;
	}
	c->backoff_ms = c->backoff_ms ? c->backoff_ms * 2 : BACKOFF_FIRST_MS;
	if (c->backoff_ms > BACKOFF_MAX_MS)
		c->backoff_ms = BACKOFF_MAX_MS;
	if (WIFEXITED(status) && WEXITSTATUS(status) == EX_CONFIG && c->backoff_ms < 5000)
		c->backoff_ms = 5000;
	c->state = CH_WAITING;
	log_warn("event=throttled component=%s status=%s uptime_ms=%llu retry_in_ms=%u "
	         "error=\"child died soon after start; restarting with backoff\"",
	         role_name(c->role), log_q(c->last_exit), (unsigned long long)lived, c->backoff_ms);
	ev_timer_add(&c->timer, c->backoff_ms);
}

void spawn_reap(void)
{
	int status;
	pid_t pid;

	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		struct child *c = find_pid(pid);
		if (c != NULL)
			child_exited(c, status);
		else
			log_debug("event=reaped pid=%d", (int)pid);
	}
	/* Respawned children started at once log event=restarted above;
	 * throttled ones log it when their timer fires. */
}

void spawn_restart_role(int role)
{
	for (size_t i = 0; i < M.nchildren; i++) {
		struct child *c = &M.children[i];
		if (c->role != role)
			continue;
		if (c->pid > 0) {
			c->restart_requested = 1;
			kill(c->pid, SIGTERM);
		} else if (c->state == CH_WAITING) {
			ev_timer_del(&c->timer);
			c->restarts++;
			spawn_child(c);
		}
	}
}

void spawn_stop_all(void)
{
	/* smtpd first so no new mail arrives while the rest shut down;
	 * all get SIGTERM at once (each finishes its own work). */
	for (size_t i = 0; i < M.nchildren; i++) {
		struct child *c = &M.children[i];
		ev_timer_del(&c->timer);
		if (c->pid > 0)
			kill(c->pid, SIGTERM);
		else if (child_in_use(c))
			c->state = CH_STOPPED;
	}
}

void spawn_kill_all(void)
{
	for (size_t i = 0; i < M.nchildren; i++)
		if (M.children[i].pid > 0) {
			log_warn("event=killed component=%s pid=%d error=\"did not stop in time\"",
			         role_name(M.children[i].role), (int)M.children[i].pid);
			kill(M.children[i].pid, SIGKILL);
		}
}

int spawn_all_stopped(void)
{
	for (size_t i = 0; i < M.nchildren; i++)
		if (M.children[i].pid > 0)
			return 0;
	return 1;
}

const char *role_name(int role)
{
	static const char *n[] = { "smtpd", "queued", "deliverd" };
	return (role >= 0 && role < ROLE_MAX) ? n[role] : "?";
}

int role_parse(const char *s)
{
	for (int i = 0; i < ROLE_MAX; i++)
		if (strcmp(s, role_name(i)) == 0)
			return i;
	return -1;
}
