/*
 * master - postern's supervisor.
 *
 *   master -c CONFIG [-f] [-d]
 *     -f  foreground: also copy log lines to stderr
 *     -d  detach: close stderr once every component is ready (postern start
 *         uses this to learn that start-up succeeded)
 *
 * Order at start: load and validate the config, take the pid-file lock
 * (one master per run_dir), create spool/log/run dirs with owners, bind
 * the listeners, purge spool/tmp (S1), open the control socket, spawn the
 * children.  SIGTERM/SIGINT stop everything gracefully, SIGHUP reloads,
 * SIGUSR1 reopens logs everywhere.  Under systemd (Type=notify) the
 * master reports READY=1/RELOADING=1/STOPPING=1 itself (notify.c).
 */
#include "master.h"
#include "log.h"
#include "net.h"
#include "privs.h"
#include "proc.h"
#include "spool.h"
#include "str.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#define STOP_GRACE_MS 15000

struct master M;
static int pid_fd = -1;
static char pid_path[CONFIG_PATH_MAX + 16];
static uid_t run_uid;
static gid_t run_gid;

static _Noreturn void die(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static _Noreturn void die(int code, const char *fmt, ...)
{
	char msg[1200];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fprintf(stderr, "postern master: %s\n", msg);
	log_error("event=fatal error=%s", log_q(msg));
	exit(code);
}

static int mkdir_p(const char *path, mode_t mode, int chown_new)
{
	char tmp[CONFIG_PATH_MAX];

	if (str_copy(tmp, path, sizeof(tmp)) == -1)
		return -1;
	for (char *p = tmp + 1;; p++) {
		if (*p == '/' || *p == '\0') {
			char c = *p;
			*p = '\0';
			if (mkdir(tmp, c ? 0755 : mode) == 0) {
				if (chown_new && geteuid() == 0 && chown(tmp, run_uid, run_gid) == -1)
					return -1;
			} else if (errno != EEXIST) {
				return -1;
			}
			*p = c;
			if (c == '\0')
				break;
		}
	}
	return 0;
}

static void take_pidfile(void)
{
	char buf[32];

	str_fmt(pid_path, sizeof(pid_path), "%s/master.pid", M.cfg->run_dir);
	pid_fd = open(pid_path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
	if (pid_fd == -1)
		die(EX_CANTCREAT, "cannot open %s: %s", pid_path, strerror(errno));
	if (flock(pid_fd, LOCK_EX | LOCK_NB) == -1) {
		ssize_t n = pread(pid_fd, buf, sizeof(buf) - 1, 0);
		buf[n > 0 ? n : 0] = '\0';
		buf[strcspn(buf, "\n")] = '\0';
		die(EX_TEMPFAIL, "already running (master pid %s, %s is locked)", buf, pid_path);
	}
	int n = str_fmt(buf, sizeof(buf), "%d\n", (int)getpid());
	if (ftruncate(pid_fd, 0) == -1 || pwrite(pid_fd, buf, (size_t)n, 0) != n)
		die(EX_CANTCREAT, "cannot write %s: %s", pid_path, strerror(errno));
}

static void prepare_dirs(void)
{
	char err[1200];
	static const char *logs[] = { "master", "smtpd", "queued", "deliverd" };

	if (geteuid() == 0 && privs_lookup(M.cfg->user, &run_uid, &run_gid, err, sizeof(err)) == -1)
		die(EX_CONFIG, "%s", err);
	if (geteuid() != 0) {
		run_uid = geteuid();
		run_gid = getegid();
	}
	if (mkdir_p(M.cfg->run_dir, 0755, 0) == -1)
		die(EX_CANTCREAT, "cannot create run_dir %s: %s", M.cfg->run_dir, strerror(errno));
	if (mkdir_p(M.cfg->log.dir, 0750, 1) == -1)
		die(EX_CANTCREAT, "cannot create log.dir %s: %s", M.cfg->log.dir, strerror(errno));
	/* Children open their logs as root but reopen them (logrotate) as the
	 * unprivileged user: the files and the directory belong to that user. */
	if (geteuid() == 0) {
		if (chown(M.cfg->log.dir, run_uid, run_gid) == -1)
			die(EX_CANTCREAT, "chown %s: %s", M.cfg->log.dir, strerror(errno));
		for (size_t i = 0; i < 4; i++) {
			char p[CONFIG_PATH_MAX + 32];
			str_fmt(p, sizeof(p), "%s/%s.log", M.cfg->log.dir, logs[i]);
			int fd = open(p, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0640);
			if (fd == -1 || fchown(fd, run_uid, run_gid) == -1)
				die(EX_CANTCREAT, "cannot create %s: %s", p, strerror(errno));
			close(fd);
		}
	}
	if (mkdir_p(M.cfg->spool_dir, 0755, 1) == -1)
		die(EX_CANTCREAT, "cannot create spool_dir %s: %s", M.cfg->spool_dir, strerror(errno));
	if (spool_init(M.cfg->spool_dir, run_uid, run_gid, err, sizeof(err)) == -1)
		die(EX_CANTCREAT, "%s", err);
	/* Local delivery root: the part of local.maildir before the first %. */
	char base[CONFIG_PATH_MAX];
	str_copy(base, M.cfg->local.maildir, sizeof(base));
	char *pct = strchr(base, '%');
	if (pct != NULL) {
		*pct = '\0';
		char *slash = strrchr(base, '/');
		if (slash != NULL && slash != base) {
			*slash = '\0';
			struct stat sb;
			if (stat(base, &sb) == -1 && mkdir_p(base, 0755, 1) == -1)
				log_warn("event=warning error=\"cannot create maildir root %s: %s\"", base,
				         strerror(errno));
		}
	}
}

static void bind_listeners(void)
{
	char err[256];

	for (size_t i = 0; i < M.cfg->nlisten; i++) {
		int fd = -1;
		/* After a master crash the old smtpd may still hold the port while
		 * it finishes a DATA phase (up to its 10 s grace): wait for it. */
		for (int tries = 0; tries < 75; tries++) {
			fd = net_listen(M.cfg->listen[i].address, M.cfg->listen[i].port, err, sizeof(err));
			if (fd >= 0 || errno != EADDRINUSE)
				break;
			if (tries == 0)
				log_warn("event=waiting what=bind address=%s port=%d error=%s",
				         M.cfg->listen[i].address, M.cfg->listen[i].port, log_q(err));
			struct timespec ts = { 0, 200 * 1000 * 1000 };
			nanosleep(&ts, NULL);
		}
		if (fd == -1)
			die(EX_UNAVAILABLE, "%s", err);
		M.listen_fd[i] = fd;
		M.nlisten++;
		log_info("event=listening address=%s port=%d mode=%s", M.cfg->listen[i].address,
		         M.cfg->listen[i].port, config_mode_name(M.cfg->listen[i].mode));
	}
}

void master_check_ready(void)
{
	if (M.ready_announced || M.stopping)
		return;
	size_t n = 0;
	for (size_t i = 0; i < M.nchildren; i++) {
		if (!child_in_use(&M.children[i]))
			continue;
		if (M.children[i].state != CH_READY)
			return;
		n++;
	}
	M.ready_announced = 1;
	log_info("event=ready pid=%d components=%zu", (int)getpid(), n);
	char st[128];
	str_fmt(st, sizeof(st), "ready: %zu components", n);
	notify_ready(st);
	if (M.detach_fd >= 0) {
		/* The marker tells `postern start` this is readiness, not a
		 * death it could not yet see with waitpid(). */
		ssize_t w = write(M.detach_fd, PROC_READY_MARK, sizeof(PROC_READY_MARK) - 1);
		(void)w;
		int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
		if (null >= 0) {
			dup2(null, 2);
			close(null);
		}
		M.detach_fd = -1;
	}
}

static void finish(void)
{
	control_close();
	metrics_close();
	for (size_t i = 0; i < M.nlisten; i++)
		close(M.listen_fd[i]);
	log_info("event=stopped pid=%d", (int)getpid());
	notify_close();
	unlink(pid_path);
	exit(0);
}

static void stop_timeout(void *arg)
{
	(void)arg;
	spawn_kill_all();
}

void master_shutdown(void)
{
	if (M.stopping)
		return;
	M.stopping = 1;
	log_info("event=stopping pid=%d", (int)getpid());
	notify_stopping();
	/* No new connections reach smtpd once it has its SIGTERM; the master
	 * keeps its copies open only to close them at exit. */
	spawn_stop_all();
	ev_timer_init(&M.stop_timer, stop_timeout, NULL);
	ev_timer_add(&M.stop_timer, STOP_GRACE_MS);
	if (spawn_all_stopped())
		finish();
}

static void on_signal(int sig)
{
	switch (sig) {
	case SIGTERM:
	case SIGINT:
		master_shutdown();
		break;
	case SIGHUP:
		log_info("event=reload_requested source=signal");
		reload_config();
		break;
	case SIGUSR1:
		log_reopen();
		for (size_t i = 0; i < M.nchildren; i++)
			if (M.children[i].pid > 0)
				kill(M.children[i].pid, SIGUSR1);
		log_info("event=logs_reopened");
		break;
	case SIGCHLD:
		spawn_reap();
		if (M.stopping && spawn_all_stopped())
			finish();
		break;
	}
}

static void find_libexec(const char *argv0)
{
	char exe[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);

	if (n <= 0) {
		if (realpath(argv0, exe) == NULL)
			die(EX_OSERR, "cannot locate my own executable");
	} else {
		exe[n] = '\0';
	}
	str_copy(M.libexec, dirname(exe), sizeof(M.libexec));
}

int main(int argc, char **argv)
{
	const char *conf = NULL;
	int foreground = 0, detach = 0, c;
	char err[1200];

	while ((c = getopt(argc, argv, "c:fd")) != -1) {
		switch (c) {
		case 'c': conf = optarg; break;
		case 'f': foreground = 1; break;
		case 'd': detach = 1; break;
		default:
			fprintf(stderr, "usage: master -c CONFIG [-f] [-d]\n");
			return EX_USAGE;
		}
	}
	if (conf == NULL) {
		fprintf(stderr, "usage: master -c CONFIG [-f] [-d]\n");
		return EX_USAGE;
	}
	M.detach_fd = detach ? 2 : -1;
	M.daemon = detach;
	find_libexec(argv[0]);
	log_open("master", NULL, LOG_LVL_INFO, 0);
	if ((M.cfg = config_load(conf, err, sizeof(err))) == NULL) {
		fprintf(stderr, "postern master: %s\n", err);
		return EX_CONFIG;
	}
	if (realpath(conf, M.config_path) == NULL)
		die(EX_CONFIG, "%s: %s", conf, strerror(errno));
	prepare_dirs();
	if (log_open("master", M.cfg->log.dir, config_log_level(M.cfg, "master"), M.cfg->log.syslog) == -1)
		die(EX_CANTCREAT, "cannot open log in %s: %s", M.cfg->log.dir, strerror(errno));
	log_set_stderr(foreground);
	take_pidfile();
	notify_open();
	if (ev_init() == -1)
		die(EX_OSERR, "epoll: %s", strerror(errno));
	proc_signals_install(on_signal);
	bind_listeners();
	if (chdir(M.cfg->spool_dir) == -1)
		die(EX_CANTCREAT, "chdir %s: %s", M.cfg->spool_dir, strerror(errno));
	int purged = spool_purge_tmp();
	if (purged > 0)
		log_info("event=purged dir=tmp files=%d reason=\"unacknowledged at last stop\"", purged);
	if (control_open(M.cfg->run_dir, err, sizeof(err)) == -1)
		die(EX_CANTCREAT, "%s", err);
	if (metrics_open(err, sizeof(err)) == -1)
		die(EX_UNAVAILABLE, "metrics.listen %s: %s", M.cfg->metrics.listen, err);

	/* One slot per deliverd the pool may grow to (queue.concurrency);
	 * only the minimum starts now, the rest when queued asks (spawn.c). */
	M.nchildren = 2 + (size_t)M.cfg->queue.concurrency;
	M.children = xcalloc(M.nchildren, sizeof(*M.children));
	/* queued first, so smtpd and deliverd find its socket sooner. */
	M.children[0].role = ROLE_QUEUED;
	M.children[1].role = ROLE_SMTPD;
	for (size_t i = 2; i < M.nchildren; i++) {
		M.children[i].role = ROLE_DELIVERD;
		M.children[i].slot = (int)i - 2;
		if (M.children[i].slot >= config_pool_min(M.cfg))
			M.children[i].state = CH_UNUSED;
	}
	M.started = time(NULL);
	log_info("event=starting pid=%d config=%s user=%s", (int)getpid(), log_q(M.config_path),
	         geteuid() == 0 ? M.cfg->user : "(invoking user)");
	spawn_all();
	ev_run();
	return 0;
}
