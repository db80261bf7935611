/*
 * postern - the administration command.
 *
 *   postern [-c FILE] start [--foreground] | stop | status [--json] | reload |
 *           restart smtpd|queued|deliverd | check | queue
 *
 * Config file: -c FILE, else $POSTERN_CONFIG, else PREFIX/etc/postern/
 * postern.conf.  Commands that talk to the running master use its control
 * socket (run_dir/control.sock); `check` and `queue` work without it.
 * Exit status: 0 ok, 1 failure, 78 (EX_CONFIG) for a bad configuration.
 */
#include "check_dns.h"
#include "check_relay.h"
#include "config.h"
#include "log.h"
#include "passwd.h"
#include "proc.h"
#include "spool.h"
#include "str.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

static char exe_dir[PATH_MAX];
static const char *conf_path;

static void usage(void)
{
	fprintf(stderr,
	        "usage: postern [-c FILE] COMMAND\n"
	        "  start [--foreground]   start the master (daemonised unless --foreground)\n"
	        "  stop                   stop every component gracefully\n"
	        "  status [--json]        components (pid, state, uptime, restarts, last exit)\n"
	        "                         and the queue (messages per state, oldest age)\n"
	        "  reload                 reread the configuration\n"
	        "  restart NAME           restart smtpd, queued or deliverd only\n"
	        "  check                  validate the configuration (exit 78 on error); warn\n"
	        "                         about readable secrets and spool permissions\n"
	        "  check mx DOMAIN        MX records, addresses, an EHLO to each: can mail be delivered?\n"
	        "  check dnsbl [IP]       is IP (default: this host's) on a configured smtpd.dnsbl list?\n"
	        "  check relay            connect, STARTTLS and AUTH to each smarthost; QUIT, no mail\n"
	        "  passwd [-f FILE] NAME  read a password, print NAME:$6$... (and update FILE or a\n"
	        "                         writable smtpd.auth_users)\n"
	        "  queue                  list queued messages\n"
	        "  queue show ID          envelope, recipient states and the log lines of ID\n"
	        "  queue delete ID|ALL    remove messages (no bounce is sent)\n"
	        "  queue hold ID          keep ID in the queue without delivery attempts\n"
	        "  queue release ID       undo hold; ID is tried at once\n"
	        "  flush                  retry every deferred message now\n");
	exit(EX_USAGE);
}

static struct config *loaded;

static void free_loaded(void)
{
	config_free(loaded);
	loaded = NULL;
}

/* The config lives until exit; freed by atexit so every path is clean. */
static struct config *load(void)
{
	char err[1200];

	if (loaded != NULL)
		return loaded;
	loaded = config_load(conf_path, err, sizeof(err));
	if (loaded == NULL) {
		fprintf(stderr, "postern: %s\n", err);
		exit(EX_CONFIG);
	}
	atexit(free_loaded);
	return loaded;
}

/* Send one command; print the body; 0 if the master said ok. */
static int control(const struct config *cfg, const char *cmd, int quiet, char *body, size_t blen)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	char path[CONFIG_PATH_MAX + 32], buf[65536];
	size_t have = 0;
	int fd;

	str_fmt(path, sizeof(path), "%s/control.sock", cfg->run_dir);
	if (str_copy(sun.sun_path, path, sizeof(sun.sun_path)) == -1) {
		fprintf(stderr, "postern: control socket path too long: %s\n", path);
		return -1;
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd == -1 || connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == -1) {
		if (!quiet)
			fprintf(stderr, "postern: not running (cannot connect to %s: %s)\n", path,
			        strerror(errno));
		if (fd >= 0)
			close(fd);
		return -2;
	}
	char line[256];
	int n = str_fmt(line, sizeof(line), "%s\n", cmd);
	if (n < 0 || write(fd, line, (size_t)n) != n) {
		close(fd);
		return -1;
	}
	for (;;) {
		struct pollfd p = { fd, POLLIN, 0 };
		if (poll(&p, 1, 15000) <= 0)
			break;
		ssize_t r = read(fd, buf + have, sizeof(buf) - 1 - have);
		if (r <= 0)
			break;
		have += (size_t)r;
		if (have == sizeof(buf) - 1)
			break;
	}
	close(fd);
	buf[have] = '\0';
	char *nl = strchr(buf, '\n');
	char *rest = nl ? nl + 1 : buf + have;
	if (nl)
		*nl = '\0';
	if (body)
		str_copy(body, rest, blen);
	if (strcmp(buf, "ok") == 0) {
		if (!quiet)
			fputs(rest, stdout);
		return 0;
	}
	if (!quiet)
		fprintf(stderr, "postern: %s\n%s", buf[0] ? buf : "no answer from the master", rest);
	return -1;
}

static pid_t master_pid(const struct config *cfg)
{
	char path[CONFIG_PATH_MAX + 16], buf[32];
	uint64_t v;
	int fd;

	str_fmt(path, sizeof(path), "%s/master.pid", cfg->run_dir);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd == -1)
		return 0;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	buf[strcspn(buf, "\n")] = '\0';
	if (str_to_u64(buf, 1, INT32_MAX, &v) == -1)
		return 0;
	return (pid_t)v;
}

static int cmd_start(int foreground)
{
	struct config *cfg = load();
	char master[PATH_MAX + 64];
	int p[2];

	str_fmt(master, sizeof(master), "%s/../libexec/postern/master", exe_dir);
	if (access(master, X_OK) == -1) {
		fprintf(stderr, "postern: cannot run %s: %s\n", master, strerror(errno));
		return 1;
	}
	if (control(cfg, "ping", 1, NULL, 0) == 0) {
		fprintf(stderr, "postern: already running (master pid %d)\n", (int)master_pid(cfg));
		return 1;
	}
	if (foreground) {
		char *argv[] = { "master", "-c", (char *)conf_path, "-f", NULL };
		execv(master, argv);
		fprintf(stderr, "postern: exec %s: %s\n", master, strerror(errno));
		return 1;
	}
	if (pipe2(p, O_CLOEXEC) == -1) {
		perror("postern: pipe");
		return 1;
	}
	pid_t pid = fork();
	if (pid == -1) {
		perror("postern: fork");
		return 1;
	}
	if (pid == 0) {
		int null = open("/dev/null", O_RDWR);
		setsid();
		dup2(null, 0);
		dup2(null, 1);
		dup2(p[1], 2);
		char *argv[] = { "master", "-c", (char *)conf_path, "-d", NULL };
		execv(master, argv);
		dprintf(2, "exec %s: %s\n", master, strerror(errno));
		_exit(EX_OSERR);
	}
	close(p[1]);
	/* The master closes its stderr once every component is ready. */
	char out[8192];
	size_t have = 0;
	time_t deadline = time(NULL) + 60;
	for (;;) {
		struct pollfd pf = { p[0], POLLIN, 0 };
		int r = poll(&pf, 1, 1000);
		if (r > 0) {
			ssize_t n = read(p[0], out + have, sizeof(out) - 1 - have);
			if (n <= 0)
				break;
			have += (size_t)n;
			if (have == sizeof(out) - 1)
				have = 0;
		}
		if (time(NULL) > deadline) {
			fprintf(stderr, "postern: master (pid %d) not ready after 60s; see %s/master.log\n",
			        (int)pid, cfg->log.dir);
			return 1;
		}
	}
	out[have] = '\0';
	size_t ml = sizeof(PROC_READY_MARK) - 1;
	if (have >= ml && memcmp(out + have - ml, PROC_READY_MARK, ml) == 0) {
		out[have - ml] = '\0';
		fputs(out, stderr);   /* warnings logged during start-up */
		printf("postern started (master pid %d)\n", (int)pid);
		return 0;
	}
	/* End of file without the mark: the master died or is dying; give
	 * it a few seconds to become reapable (a mark lost in an over-long
	 * output would otherwise read as a failure). */
	int status, reaped = 0;
	for (int i = 0; i < 50 && !reaped; i++) {
		reaped = waitpid(pid, &status, WNOHANG) == pid;
		if (!reaped)
			poll(NULL, 0, 100);
	}
	if (reaped) {
		fputs(out, stderr);
		fprintf(stderr, "postern: start failed (%s %d)\n",
		        WIFEXITED(status) ? "exit" : "signal",
		        WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
		return WIFEXITED(status) && WEXITSTATUS(status) ? WEXITSTATUS(status) : 1;
	}
	printf("postern started (master pid %d)\n", (int)pid);
	return 0;
}

static int cmd_stop(void)
{
	struct config *cfg = load();
	pid_t pid = master_pid(cfg);
	int r = control(cfg, "stop", 1, NULL, 0);

	if (r == -2) {
		fprintf(stderr, "postern: not running\n");
		return 1;
	}
	if (r != 0) {
		fprintf(stderr, "postern: the master did not accept the stop command\n");
		return 1;
	}
	for (int i = 0; pid > 0 && i < 300; i++) {
		if (kill(pid, 0) == -1 && errno == ESRCH) {
			printf("postern stopped (master pid %d)\n", (int)pid);
			return 0;
		}
		struct timespec ts = { 0, 100 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
	if (pid > 0) {
		fprintf(stderr, "postern: master pid %d still running after 30s\n", (int)pid);
		return 1;
	}
	printf("postern stopping\n");
	return 0;
}

static int cmd_simple(const char *cmd)
{
	struct config *cfg = load();
	int r = control(cfg, cmd, 0, NULL, 0);
	return r == 0 ? 0 : 1;
}

/* ---- status: the components from the master, the queue from the spool ---- */

struct qsum {
	int ok;                    /* the spool could be read */
	char error[300];
	unsigned active, deferred, held, incoming, corrupt;
	int64_t oldest;            /* arrival of the oldest message, 0 if none */
};

static void qsum_dir(const char *dir, struct qsum *q)
{
	DIR *d = opendir(dir);
	struct dirent *de;

	if (d == NULL) {
		if (q->ok)
			str_fmt(q->error, sizeof(q->error), "cannot read %s/%s: %s", loaded->spool_dir, dir,
			        strerror(errno));
		q->ok = 0;
		return;
	}
	while ((de = readdir(d)) != NULL) {
		struct spool_env env;
		struct spool_state st;
		char err[256];
		int corrupt, missing;

		if (!spool_qid_valid(de->d_name))
			continue;
		int fd = spool_msg_open(dir, de->d_name, &env, &corrupt, err, sizeof(err));
		if (fd == -1) {
			if (corrupt)
				q->corrupt++;
			continue;   /* gone meanwhile (delivered): not in the queue */
		}
		close(fd);
		if (q->oldest == 0 || env.arrival < q->oldest)
			q->oldest = env.arrival;
		if (strcmp(dir, SPOOL_INCOMING) == 0) {
			q->incoming++;
		} else if (spool_state_read(env.qid, env.nrcpt, &st, &missing, err, sizeof(err)) == 0) {
			int deferred = 0;
			for (size_t i = 0; i < env.nrcpt; i++)
				if (st.r[i].state == RS_DEFERRED)
					deferred = 1;
			if (st.held)
				q->held++;
			else if (deferred)
				q->deferred++;
			else
				q->active++;
			spool_state_free(&st);
		} else {
			spool_state_free(&st);
			q->active++;
		}
		spool_env_free(&env);
	}
	closedir(d);
}

/* Messages per state and the oldest arrival, read from the spool like
 * `postern queue` (so it works while queued is down). */
static void queue_summary(const struct config *cfg, struct qsum *q)
{
	memset(q, 0, sizeof(*q));
	q->ok = 1;
	if (chdir(cfg->spool_dir) == -1) {
		str_fmt(q->error, sizeof(q->error), "cannot enter spool_dir %s: %s", cfg->spool_dir,
		        strerror(errno));
		q->ok = 0;
		return;
	}
	qsum_dir(SPOOL_INCOMING, q);
	qsum_dir(SPOOL_QUEUE, q);
	DIR *d = opendir(SPOOL_CORRUPT);
	if (d != NULL) {
		struct dirent *de;
		while ((de = readdir(d)) != NULL)
			if (de->d_name[0] != '.')
				q->corrupt++;
		closedir(d);
	}
}

static void json_str(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;
		if (ch == '"' || ch == '\\')
			printf("\\%c", ch);
		else if (ch < 0x20 || ch >= 0x7f)
			printf("\\u%04x", ch);
		else
			putchar(ch);
	}
	putchar('"');
}

struct srow {
	char *name, *pid, *state, *uptime, *restarts, *last_exit;
};

/* Split the master's tab-separated status lines in place. */
static size_t parse_status(char *body, struct srow *rows, size_t max)
{
	size_t n = 0;

	for (char *line = strtok(body, "\n"); line != NULL && n < max; line = strtok(NULL, "\n")) {
		char *f[6] = { 0 };
		size_t k = 0;
		for (char *p = line; k < 6; k++) {
			f[k] = p;
			char *tab = strchr(p, '\t');
			if (tab == NULL) {
				k++;
				break;
			}
			*tab = '\0';
			p = tab + 1;
		}
		if (k < 5)
			continue;
		rows[n++] = (struct srow){ f[0], f[1], f[2], f[3], f[4], f[5] ? f[5] : "" };
	}
	return n;
}

static int cmd_status(int json)
{
	struct config *cfg = load();
	static char body[65536];
	static struct srow rows[1100];
	struct qsum q;
	time_t now = time(NULL);
	char up[32];

	int r = control(cfg, "status-data", 1, body, sizeof(body));
	if (r == -2) {
		fprintf(stderr, "postern: not running (no master on %s/control.sock)\n", cfg->run_dir);
		return 1;
	}
	if (r != 0) {
		fprintf(stderr, "postern: the master did not answer the status request\n");
		return 1;
	}
	size_t n = parse_status(body, rows, sizeof(rows) / sizeof(rows[0]));
	queue_summary(cfg, &q);
	unsigned total = q.active + q.deferred + q.held + q.incoming;
	long age = q.oldest ? (long)(now - q.oldest) : -1;
	if (age < -1)
		age = 0;
	if (json) {
		printf("{\"components\": [");
		for (size_t i = 0; i < n; i++) {
			long u = strtol(rows[i].uptime, NULL, 10);
			printf("%s\n  {\"name\": ", i ? "," : "");
			json_str(rows[i].name);
			printf(", \"pid\": %ld, \"state\": ", strtol(rows[i].pid, NULL, 10));
			json_str(rows[i].state);
			if (u >= 0)
				printf(", \"uptime\": %ld", u);
			else
				printf(", \"uptime\": null");
			printf(", \"restarts\": %lu, \"last_exit\": ", strtoul(rows[i].restarts, NULL, 10));
			if (rows[i].last_exit[0])
				json_str(rows[i].last_exit);
			else
				printf("null");
			printf("}");
		}
		printf("],\n \"queue\": ");
		if (!q.ok) {
			printf("{\"error\": ");
			json_str(q.error);
			printf("}}\n");
		} else {
			printf("{\"messages\": %u, \"active\": %u, \"deferred\": %u, \"held\": %u, "
			       "\"incoming\": %u, \"corrupt\": %u, \"oldest_age\": ",
			       total, q.active, q.deferred, q.held, q.incoming, q.corrupt);
			if (age >= 0)
				printf("%ld}}\n", age);
			else
				printf("null}}\n");
		}
		return 0;
	}
	printf("%-9s %-8s %-10s %-7s %-8s %s\n", "COMPONENT", "PID", "STATE", "UPTIME", "RESTARTS",
	       "LAST-EXIT");
	for (size_t i = 0; i < n; i++) {
		long u = strtol(rows[i].uptime, NULL, 10);
		if (u >= 0)
			str_fmt_age(u, up, sizeof(up));
		else
			str_copy(up, "-", sizeof(up));
		printf("%-9s %-8s %-10s %-7s %-8s %s\n", rows[i].name, rows[i].pid, rows[i].state, up,
		       rows[i].restarts, rows[i].last_exit[0] ? rows[i].last_exit : "-");
	}
	if (!q.ok) {
		printf("\nqueue: unknown (%s)\n", q.error);
		return 0;
	}
	if (age >= 0)
		str_fmt_age(age, up, sizeof(up));
	printf("\nqueue: %u message%s: active %u, deferred %u, held %u, incoming %u; oldest %s; "
	       "corrupt files %u\n",
	       total, total == 1 ? "" : "s", q.active, q.deferred, q.held, q.incoming,
	       age >= 0 ? up : "-", q.corrupt);
	return 0;
}

/* `check` warnings: things that work but should not be so.  A secret that
 * other users can read leaks the TLS key or passwords; a spool directory
 * with the wrong owner or mode either lets users read mail or stops the
 * unprivileged children from working.  The master fixes spool modes at
 * start (spool_init), so these catch hand edits and restored backups. */
static int check_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int check_warn(const char *fmt, ...)
{
	va_list ap;

	fputs("postern: warning: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return 1;
}

static int check_secret(const char *key, const char *path)
{
	struct stat st;

	if (path[0] == '\0')
		return 0;
	if (stat(path, &st) == -1)
		return check_warn("%s %s: %s", key, path, strerror(errno));
	if (st.st_mode & S_IROTH)
		return check_warn("%s %s is readable by every user (mode %04o); chmod o-r it",
		                  key, path, (unsigned)(st.st_mode & 07777));
	return 0;
}

static int check_spool(const struct config *cfg)
{
	static const char *const dirs[] = { SPOOL_TMP, SPOOL_INCOMING, SPOOL_QUEUE, SPOOL_STATE,
	                                    SPOOL_CORRUPT, SPOOL_PRIVATE, SPOOL_DROP };
	char path[CONFIG_PATH_MAX + 32], owner[64];
	uid_t uid = geteuid();
	int n = 0;

	/* Started as root the children run as `user`; otherwise as the caller. */
	if (geteuid() == 0) {
		struct passwd *pw = getpwnam(cfg->user);
		if (pw == NULL)
			return check_warn("user '%s' does not exist: create it before `postern start` "
			                  "(useradd --system --no-create-home --shell /usr/sbin/nologin %s)",
			                  cfg->user, cfg->user);
		uid = pw->pw_uid;
		str_copy(owner, cfg->user, sizeof(owner));
	} else {
		str_fmt(owner, sizeof(owner), "uid %u", (unsigned)uid);
	}
	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
		struct stat st;
		mode_t want = strcmp(dirs[i], SPOOL_DROP) == 0 ? SPOOL_DROP_MODE : 0700;

		str_fmt(path, sizeof(path), "%s/%s", cfg->spool_dir, dirs[i]);
		if (lstat(path, &st) == -1) {
			if (errno != ENOENT)
				n += check_warn("spool %s: %s", path, strerror(errno));
			continue;   /* not created yet: the master will */
		}
		if (!S_ISDIR(st.st_mode)) {
			n += check_warn("spool %s is not a directory", path);
			continue;
		}
		if (st.st_uid != uid)
			n += check_warn("spool %s is owned by uid %u, not %s", path, (unsigned)st.st_uid, owner);
		if ((st.st_mode & 07777) != want)
			n += check_warn("spool %s has mode %04o, not %04o", path, (unsigned)(st.st_mode & 07777),
			                (unsigned)want);
	}
	return n;
}

static int cmd_check(void)
{
	struct config *cfg = load();

	check_secret("tls.key", cfg->tls.key);
	check_secret("smtpd.auth_users", cfg->smtpd.auth_users);
	if (cfg->relay.present)
		check_secret("relay.password_file", cfg->relay.password_file);
	check_spool(cfg);
	printf("%s: ok (%zu listener%s, %s)\n", cfg->file, cfg->nlisten, cfg->nlisten == 1 ? "" : "s",
	       cfg->relay.present ? "relay via smarthost" : "direct MX delivery");
	return 0;
}

static void fmt_time(int64_t t, char *out, size_t len)
{
	time_t tt = (time_t)t;
	struct tm tm;
	localtime_r(&tt, &tm);
	strftime(out, len, "%Y-%m-%d %H:%M:%S", &tm);
}

static int list_dir(const char *dir, int *count)
{
	DIR *d = opendir(dir);
	struct dirent *de;

	if (d == NULL) {
		fprintf(stderr, "postern: cannot read %s: %s\n", dir, strerror(errno));
		return -1;
	}
	while ((de = readdir(d)) != NULL) {
		struct spool_env env;
		struct spool_state st;
		char err[256], when[32];
		int corrupt, missing;

		if (!spool_qid_valid(de->d_name))
			continue;
		int fd = spool_msg_open(dir, de->d_name, &env, &corrupt, err, sizeof(err));
		if (fd == -1) {
			if (errno != ENOENT)
				printf("%-22s (unreadable: %s)\n", de->d_name, err);
			continue;
		}
		close(fd);
		(*count)++;
		fmt_time(env.arrival, when, sizeof(when));
		int have_state = spool_state_read(env.qid, env.nrcpt, &st, &missing, err, sizeof(err)) == 0;
		printf("%-22s %s %8llu  <%s>%s\n", env.qid, when, (unsigned long long)env.data_len,
		       env.sender, have_state && st.held ? "  HELD" : "");
		for (size_t i = 0; i < env.nrcpt; i++) {
			const char *state = "pending";
			char extra[600] = "";
			if (have_state) {
				state = spool_rcpt_state_name(st.r[i].state);
				if (st.r[i].state == RS_DEFERRED) {
					char nx[32];
					fmt_time(st.next, nx, sizeof(nx));
					str_fmt(extra, sizeof(extra), " (attempts %u, next %s): %s", st.r[i].attempts,
					        nx, st.r[i].error);
				} else if (st.r[i].state == RS_BOUNCED && st.r[i].error[0]) {
					str_fmt(extra, sizeof(extra), ": %s", st.r[i].error);
				}
			} else if (strcmp(dir, SPOOL_INCOMING) == 0) {
				state = "incoming";
			}
			printf("    <%s> %s%s\n", env.rcpt[i], state, extra);
		}
		spool_state_free(&st);
		spool_env_free(&env);
	}
	closedir(d);
	return 0;
}

static int by_time(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Print the log lines that carry qid=ID from every component's log, in
 * time order (lines start with an ISO timestamp, so strcmp sorts them). */
static void show_logs(const struct config *cfg, const char *qid)
{
	static const char *comp[] = { "smtpd", "queued", "deliverd" };
	char path[CONFIG_PATH_MAX + 32], line[4096], needle[64];
	char **lines = NULL;
	size_t n = 0;

	str_fmt(needle, sizeof(needle), "qid=%s", qid);
	for (size_t i = 0; i < 3; i++) {
		str_fmt(path, sizeof(path), "%s/%s.log", cfg->log.dir, comp[i]);
		FILE *f = fopen(path, "r");
		if (f == NULL)
			continue;
		while (fgets(line, sizeof(line), f) != NULL && n < 10000) {
			char *p = strstr(line, needle);
			if (p && (p[strlen(needle)] == ' ' || p[strlen(needle)] == '\n')) {
				lines = xrealloc(lines, (n + 1) * sizeof(char *));
				lines[n++] = xstrdup(line);
			}
		}
		fclose(f);
	}
	qsort(lines, n, sizeof(char *), by_time);
	printf("log:\n");
	for (size_t i = 0; i < n; i++) {
		fputs(lines[i], stdout);
		free(lines[i]);
	}
	free(lines);
}

static int cmd_queue_show(const char *qid)
{
	struct config *cfg = load();
	struct spool_env env;
	struct spool_state st;
	char err[256], when[32];
	const char *dir = NULL;
	int corrupt, missing, fd = -1;

	if (!spool_qid_valid(qid)) {
		fprintf(stderr, "postern: %s is not a queue id\n", qid);
		return 1;
	}
	if (chdir(cfg->spool_dir) == -1) {
		fprintf(stderr, "postern: cannot enter spool_dir %s: %s\n", cfg->spool_dir, strerror(errno));
		return 1;
	}
	static const char *dirs[] = { SPOOL_QUEUE, SPOOL_INCOMING, SPOOL_CORRUPT };
	for (size_t i = 0; i < 3 && fd == -1; i++) {
		fd = spool_msg_open(dirs[i], qid, &env, &corrupt, err, sizeof(err));
		dir = dirs[i];
		if (fd == -1 && corrupt) {
			printf("%s: in %s/, unreadable: %s\n", qid, dir, err);
			show_logs(cfg, qid);
			return 1;
		}
	}
	if (fd == -1) {
		fprintf(stderr, "postern: %s: no such message in the queue\n", qid);
		show_logs(cfg, qid);
		return 1;
	}
	close(fd);
	fmt_time(env.arrival, when, sizeof(when));
	int have = spool_state_read(qid, env.nrcpt, &st, &missing, err, sizeof(err)) == 0;
	printf("queue id:  %s (%s/)\narrived:   %s from %s (helo %s, %s)\nsize:      %llu bytes\n"
	       "sender:    <%s>\n",
	       qid, dir, when, env.client, env.helo, env.proto, (unsigned long long)env.data_len, env.sender);
	if (have) {
		char nx[32];
		fmt_time(st.next, nx, sizeof(nx));
		printf("attempts:  %u%s%s\n", st.attempts, st.held ? ", HELD" : "",
		       st.warned ? ", delay warning sent" : "");
		if (st.next)
			printf("next try:  %s\n", nx);
	}
	printf("recipients:\n");
	for (size_t i = 0; i < env.nrcpt; i++) {
		if (!have) {
			printf("  <%s> %s\n", env.rcpt[i], strcmp(dir, SPOOL_INCOMING) == 0 ? "incoming" : "pending");
			continue;
		}
		char last[32] = "-";
		if (st.r[i].last)
			fmt_time(st.r[i].last, last, sizeof(last));
		printf("  <%s> %s, %u attempt%s, last %s%s\n", env.rcpt[i], spool_rcpt_state_name(st.r[i].state),
		       st.r[i].attempts, st.r[i].attempts == 1 ? "" : "s", last,
		       st.r[i].notified ? ", sender notified" : "");
		if (st.r[i].error[0])
			printf("      %s\n", st.r[i].error);
	}
	spool_state_free(&st);
	spool_env_free(&env);
	show_logs(cfg, qid);
	return 0;
}

static int cmd_queue(void)
{
	struct config *cfg = load();
	int count = 0;

	if (chdir(cfg->spool_dir) == -1) {
		fprintf(stderr, "postern: cannot enter spool_dir %s: %s\n", cfg->spool_dir, strerror(errno));
		return 1;
	}
	if (list_dir(SPOOL_INCOMING, &count) == -1 || list_dir(SPOOL_QUEUE, &count) == -1)
		return 1;
	printf("-- %d message%s in the queue\n", count, count == 1 ? "" : "s");
	return 0;
}

int main(int argc, char **argv)
{
	char exe[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	int i = 1;

	if (n <= 0)
		str_copy(exe, argv[0], sizeof(exe));
	else
		exe[n] = '\0';
	str_copy(exe_dir, dirname(exe), sizeof(exe_dir));
	log_open("postern", NULL, LOG_LVL_WARN, 0);

	if (i < argc && strcmp(argv[i], "-c") == 0) {
		if (i + 1 >= argc)
			usage();
		conf_path = argv[i + 1];
		i += 2;
	}
	if (conf_path == NULL) {
		char prefix[PATH_MAX];
		str_fmt(prefix, sizeof(prefix), "%s/..", exe_dir);
		conf_path = config_default_path(prefix);
	}
	if (i >= argc)
		usage();
	const char *cmd = argv[i++];
	if (strcmp(cmd, "start") == 0) {
		int fg = 0;
		if (i < argc && strcmp(argv[i], "--foreground") == 0) {
			fg = 1;
			i++;
		}
		if (i != argc)
			usage();
		return cmd_start(fg);
	}
	if (strcmp(cmd, "queue") == 0 && i < argc) {
		const char *sub = argv[i++];
		char buf[128];
		if (strcmp(sub, "show") == 0 && i + 1 == argc)
			return cmd_queue_show(argv[i]);
		if ((strcmp(sub, "delete") == 0 || strcmp(sub, "hold") == 0 || strcmp(sub, "release") == 0) &&
		    i + 1 == argc) {
			if (strcmp(argv[i], "ALL") != 0 && !spool_qid_valid(argv[i])) {
				fprintf(stderr, "postern: %s is not a queue id\n", argv[i]);
				return 1;
			}
			if (strcmp(argv[i], "ALL") == 0 && strcmp(sub, "delete") != 0)
				usage();
			str_fmt(buf, sizeof(buf), "%s %s", sub, argv[i]);
			return cmd_simple(buf);
		}
		usage();
	}
	if (strcmp(cmd, "restart") == 0) {
		char buf[64];
		if (i + 1 != argc)
			usage();
		if (strcmp(argv[i], "smtpd") && strcmp(argv[i], "queued") && strcmp(argv[i], "deliverd")) {
			fprintf(stderr, "postern: restart what? (smtpd, queued or deliverd)\n");
			return EX_USAGE;
		}
		str_fmt(buf, sizeof(buf), "restart %s", argv[i]);
		return cmd_simple(buf);
	}
	if (strcmp(cmd, "status") == 0) {
		int json = 0;
		if (i < argc && strcmp(argv[i], "--json") == 0) {
			json = 1;
			i++;
		}
		if (i != argc)
			usage();
		return cmd_status(json);
	}
	if (strcmp(cmd, "check") == 0 && i + 2 == argc && strcmp(argv[i], "mx") == 0)
		return check_mx_main(conf_path, argv[i + 1]);
	if (strcmp(cmd, "check") == 0 && i < argc && i + 2 >= argc && strcmp(argv[i], "dnsbl") == 0)
		return check_dnsbl_main(conf_path, i + 1 < argc ? argv[i + 1] : NULL);
	if (strcmp(cmd, "check") == 0 && i + 1 == argc && strcmp(argv[i], "relay") == 0)
		return check_relay_main(conf_path);
	if (strcmp(cmd, "passwd") == 0)
		return passwd_main(conf_path, argc - i, argv + i);
	if (i != argc)
		usage();
	if (strcmp(cmd, "stop") == 0)
		return cmd_stop();
	if (strcmp(cmd, "reload") == 0)
		return cmd_simple("reload");
	if (strcmp(cmd, "check") == 0)
		return cmd_check();
	if (strcmp(cmd, "queue") == 0)
		return cmd_queue();
	if (strcmp(cmd, "flush") == 0)
		return cmd_simple("flush");
	usage();
}
