#include "log.h"
#include "str.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

static char component[32] = "postern";
static int dirfd_ = -1;
static int fd_ = -1;
static int level_ = LOG_LVL_INFO;
static int to_stderr;
static int to_syslog;
static char ident[48];

static const char *names[] = { "debug", "info", "warn", "error" };

int log_level_parse(const char *s)
{
	for (int i = 0; i < 4; i++)
		if (strcmp(s, names[i]) == 0)
			return i;
	if (strcmp(s, "warning") == 0)
		return LOG_LVL_WARN;
	return -1;
}

const char *log_component(void)
{
	return component;
}

static int open_file(void)
{
	char name[64];
	int fd;

	if (str_fmt(name, sizeof(name), "%s.log", component) < 0)
		return -1;
	fd = openat(dirfd_, name, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0640);
	if (fd == -1)
		return -1;
	if (fd_ != -1)
		close(fd_);
	fd_ = fd;
	return 0;
}

int log_open(const char *comp, const char *dir, int level, int use_syslog)
{
	str_copy(component, comp, sizeof(component));
	level_ = level;
	if (dir != NULL) {
		int d = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (d == -1)
			return -1;
		if (dirfd_ != -1)
			close(dirfd_);
		dirfd_ = d;
		if (open_file() == -1)
			return -1;
	}
	log_set_syslog(use_syslog);
	return 0;
}

void log_set_syslog(int on)
{
	if (on && !to_syslog) {
		str_fmt(ident, sizeof(ident), "postern/%s", component);
		openlog(ident, LOG_PID | LOG_NDELAY, LOG_MAIL);
	} else if (!on && to_syslog) {
		closelog();
	}
	to_syslog = on;
}

int log_reopen(void)
{
	if (dirfd_ == -1)
		return 0;
	return open_file();
}

void log_close(void)
{
	if (fd_ != -1)
		close(fd_);
	if (dirfd_ != -1)
		close(dirfd_);
	fd_ = dirfd_ = -1;
	if (to_syslog)
		closelog();
	to_syslog = 0;
}

void log_set_level(int level)
{
	level_ = level;
}

void log_set_stderr(int on)
{
	to_stderr = on;
}

static void emit(int level, const char *fmt, va_list ap)
{
	char line[4096];
	struct timeval tv;
	struct tm tm;
	size_t n;
	int r;

	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
	r = snprintf(line + n, sizeof(line) - n, ".%03dZ %s %s ", (int)(tv.tv_usec / 1000),
	             names[level], component);
	if (r > 0)
		n += (size_t)r;
	size_t body = n;
	r = vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
	if (r < 0)
		r = 0;
	n += (size_t)r;
	if (n > sizeof(line) - 2)
		n = sizeof(line) - 2;
	line[n++] = '\n';
	if (fd_ != -1) {
		ssize_t w = write(fd_, line, n);
		(void)w;
	}
	if (to_stderr || (fd_ == -1 && !to_syslog)) {
		ssize_t w = write(2, line, n);
		(void)w;
	}
	if (to_syslog) {
		static const int prio[] = { LOG_DEBUG, LOG_INFO, LOG_WARNING, LOG_ERR };
		syslog(prio[level], "%.*s", (int)(n - body - 1), line + body);
	}
}

#define LOG_FN(name, lvl)                               \
	void name(const char *fmt, ...)                 \
	{                                               \
		va_list ap;                             \
		if (lvl < level_)                       \
			return;                         \
		va_start(ap, fmt);                      \
		emit(lvl, fmt, ap);                     \
		va_end(ap);                             \
	}

LOG_FN(log_debug, LOG_LVL_DEBUG)
LOG_FN(log_info, LOG_LVL_INFO)
LOG_FN(log_warn, LOG_LVL_WARN)
LOG_FN(log_error, LOG_LVL_ERROR)

void log_fatal(int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	emit(LOG_LVL_ERROR, fmt, ap);
	va_end(ap);
	exit(code);
}

void log_panic(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	emit(LOG_LVL_ERROR, fmt, ap);
	va_end(ap);
	abort();
}

const char *log_qn(const char *s, size_t len)
{
	static char ring[4][420];
	static int idx;
	char *out = ring[idx++ & 3];

	if (s == NULL)
		return "\"\"";
	out[0] = '"';
	str_escape(out + 1, sizeof(ring[0]) - 2, s, len);
	size_t n = strlen(out);
	out[n] = '"';
	out[n + 1] = '\0';
	return out;
}

const char *log_q(const char *s)
{
	return log_qn(s, s ? strlen(s) : 0);
}
