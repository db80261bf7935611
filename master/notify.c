/*
 * notify - the sd_notify protocol, spoken by the master without libsystemd.
 *
 * When systemd starts the master with Type=notify (conf/postern.service),
 * $NOTIFY_SOCKET names a unix datagram socket: a filesystem path, or one
 * starting with '@' for the abstract namespace.  The master sends one
 * datagram per state change: "READY=1" once every component reported
 * ready, "RELOADING=1" plus "MONOTONIC_USEC=" (what Type=notify-reload
 * asks for) when a reload starts and "READY=1" when it is done,
 * "STOPPING=1" at shutdown, each with a human-readable "STATUS=" line
 * that `systemctl status` shows.
 *
 * notify_open() reads and unsets the variable, so the children (which
 * systemd would not accept messages from anyway, NotifyAccess=main) never
 * see it.  Errors: sending is best effort; a failure is logged once at
 * warn and never stops the master (systemd then times the start out,
 * which is the right signal to the admin).  Without $NOTIFY_SOCKET every
 * call does nothing.
 */
#include "master.h"
#include "log.h"
#include "str.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static int notify_fd = -1;
static struct sockaddr_un notify_addr;
static socklen_t notify_len;
static int notify_warned;

int notify_open(void)
{
	const char *path = getenv("NOTIFY_SOCKET");
	size_t len;

	if (path == NULL || path[0] == '\0')
		return 0;
	len = strlen(path);
	if ((path[0] != '/' && path[0] != '@') || len >= sizeof(notify_addr.sun_path)) {
		log_warn("event=warning what=notify error=\"unusable NOTIFY_SOCKET %s\"", log_q(path));
		unsetenv("NOTIFY_SOCKET");
		return -1;
	}
	memset(&notify_addr, 0, sizeof(notify_addr));
	notify_addr.sun_family = AF_UNIX;
	memcpy(notify_addr.sun_path, path, len);
	if (path[0] == '@')
		notify_addr.sun_path[0] = '\0';   /* abstract namespace: no trailing NUL */
	notify_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
	notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	unsetenv("NOTIFY_SOCKET");
	if (notify_fd == -1) {
		log_warn("event=warning what=notify error=%s", log_q(strerror(errno)));
		return -1;
	}
	log_debug("event=notify_socket path=%s", log_q(path));
	return 0;
}

void notify_send(const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	int n;

	if (notify_fd == -1)
		return;
	va_start(ap, fmt);
	n = vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(msg))
		return;
	if (sendto(notify_fd, msg, (size_t)n, MSG_NOSIGNAL, (struct sockaddr *)&notify_addr,
	           notify_len) == -1 &&
	    !notify_warned) {
		notify_warned = 1;
		log_warn("event=warning what=notify error=%s", log_q(strerror(errno)));
	}
}

void notify_ready(const char *status)
{
	notify_send("READY=1\nSTATUS=%s\nMAINPID=%d", status, (int)getpid());
}

void notify_reloading(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	notify_send("RELOADING=1\nSTATUS=reloading\nMONOTONIC_USEC=%llu",
	            (unsigned long long)ts.tv_sec * 1000000ULL + (unsigned long long)ts.tv_nsec / 1000);
}

void notify_stopping(void)
{
	notify_send("STOPPING=1\nSTATUS=stopping");
}

void notify_close(void)
{
	if (notify_fd != -1)
		close(notify_fd);
	notify_fd = -1;
}
