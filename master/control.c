/*
 * control - the socket the `postern` CLI talks to (run_dir/control.sock).
 *
 * Protocol: the client sends one command line (at most CONTROL_LINE_MAX
 * bytes, LF-terminated); the master answers with "ok" or "error: why" on
 * the first line, optional body lines, and closes.  The socket is mode
 * 0600: only the user who runs the master (root in production) may use
 * it.  A client that misbehaves (long line, garbage, slow) is logged and
 * disconnected; it never affects the master (STYLE.md, OpenSMTPD mproc).
 */
#include "master.h"
#include "buf.h"
#include "log.h"
#include "str.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define CONTROL_LINE_MAX 512
#define CONTROL_TIMEOUT_MS 10000

struct conn {
	int fd;
	struct buf in;
	struct buf out;
	struct ev_timer timer;
	int closing;
	uint32_t waiting;          /* admin request id forwarded to queued, 0 = none */
	struct conn *next;         /* list of connections waiting for queued */
};

static struct conn *waiting_list;
static uint32_t next_req = 1;

static int listen_fd = -1;
static char sock_path[CONFIG_PATH_MAX + 32];

static void conn_free(struct conn *c)
{
	for (struct conn **pp = &waiting_list; *pp; pp = &(*pp)->next)
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	ev_del(c->fd);
	ev_timer_del(&c->timer);
	close(c->fd);
	buf_free(&c->in);
	buf_free(&c->out);
	free(c);
}

static void conn_timeout(void *arg)
{
	struct conn *c = arg;
	log_warn("event=control_timeout error=\"client sent no command in time\"");
	conn_free(c);
}

static void fmt_uptime(time_t since, char *out, size_t len)
{
	str_fmt_age((long)(time(NULL) - since), out, len);
}

static const char *state_name(const struct child *c)
{
	switch (c->state) {
	case CH_STARTING: return "starting";
	case CH_READY: return "ready";
	case CH_WAITING: return "throttled";
	case CH_STOPPED: return "stopped";
	case CH_UNUSED: return "unused";
	}
	return "?";
}

static void cmd_status(struct conn *c)
{
	char up[32];
	unsigned total = 0;

	for (size_t i = 0; i < M.nchildren; i++)
		total += M.children[i].restarts;
	fmt_uptime(M.started, up, sizeof(up));
	buf_appendf(&c->out, "ok\n%-9s %-8s %-10s %-7s %-8s %s\n", "COMPONENT", "PID", "STATE",
	            "UPTIME", "RESTARTS", "LAST-EXIT");
	buf_appendf(&c->out, "%-9s %-8d %-10s %-7s %-8u %s\n", "master", (int)getpid(),
	            M.stopping ? "stopping" : "running", up, total, "-");
	for (size_t i = 0; i < M.nchildren; i++) {
		const struct child *ch = &M.children[i];
		if (!child_in_use(ch))
			continue;   /* a deliverd slot the pool does not use now */
		if (ch->pid > 0)
			fmt_uptime(ch->started, up, sizeof(up));
		else
			str_copy(up, "-", sizeof(up));
		buf_appendf(&c->out, "%-9s %-8d %-10s %-7s %-8u %s\n", role_name(ch->role), (int)ch->pid,
		            state_name(ch), up, ch->restarts, ch->last_exit[0] ? ch->last_exit : "-");
	}
}

/* Machine-readable status for the CLI (which renders the table and the
 * JSON, and adds the queue it reads from the spool): one line per process,
 * tab-separated: name pid state uptime_seconds restarts last_exit.  uptime
 * is -1 for a child that is not running; last_exit is empty if none. */
static void cmd_status_data(struct conn *c)
{
	unsigned total = 0;
	time_t now = time(NULL);

	for (size_t i = 0; i < M.nchildren; i++)
		total += M.children[i].restarts;
	buf_appendf(&c->out, "ok\nmaster\t%d\t%s\t%ld\t%u\t\n", (int)getpid(),
	            M.stopping ? "stopping" : "running", (long)(now - M.started), total);
	for (size_t i = 0; i < M.nchildren; i++) {
		const struct child *ch = &M.children[i];
		if (!child_in_use(ch))
			continue;
		buf_appendf(&c->out, "%s\t%d\t%s\t%ld\t%u\t%s\n", role_name(ch->role), (int)ch->pid,
		            state_name(ch), ch->pid > 0 ? (long)(now - ch->started) : -1L, ch->restarts,
		            ch->last_exit);
	}
}

/* Queue administration is queued's business: forward and wait. */
static int forward_admin(struct conn *c, const char *cmd, const char *arg)
{
	struct child *q = NULL;
	struct ipc_msg m;

	for (size_t i = 0; i < M.nchildren; i++)
		if (M.children[i].role == ROLE_QUEUED)
			q = &M.children[i];
	if (q == NULL || q->ch == NULL || q->state != CH_READY) {
		buf_appendf(&c->out, "error: queued is not running; try again when `postern status` shows it ready\n");
		return -1;
	}
	c->waiting = next_req++;
	if (next_req == 0)
		next_req = 1;
	ipc_msg_init(&m, IPC_ADMIN);
	ipc_put_u32(&m, c->waiting);
	ipc_put_str(&m, cmd);
	ipc_put_str(&m, arg ? arg : "");
	if (ipc_send(q->ch, &m, -1) == -1) {
		buf_appendf(&c->out, "error: cannot reach queued\n");
		c->waiting = 0;
		return -1;
	}
	c->next = waiting_list;
	waiting_list = c;
	return 0;
}

void control_admin_reply(struct ipc_msg *m)
{
	uint32_t id, ok;
	static char text[IPC_MSG_MAX];

	if (ipc_get_u32(m, &id) == -1 || ipc_get_u32(m, &ok) == -1 ||
	    ipc_get_str(m, text, sizeof(text)) == -1 || ipc_end(m) == -1) {
		log_warn("event=ipc_error component=queued error=\"malformed ADMIN_REPLY\"");
		return;
	}
	for (struct conn **pp = &waiting_list; *pp; pp = &(*pp)->next) {
		struct conn *c = *pp;
		if (c->waiting != id)
			continue;
		*pp = c->next;
		c->waiting = 0;
		buf_appendf(&c->out, "%s", ok ? "ok\n" : "error: ");
		buf_append(&c->out, text, strlen(text));
		c->closing = 1;
		ev_mod(c->fd, EV_WRITE);
		return;
	}
}

/* queued went away: nobody will answer the waiting admins. */
void control_admin_abort(void)
{
	while (waiting_list) {
		struct conn *c = waiting_list;
		waiting_list = c->next;
		c->waiting = 0;
		buf_appendf(&c->out, "error: queued exited before answering\n");
		c->closing = 1;
		ev_mod(c->fd, EV_WRITE);
	}
}

static void dispatch(struct conn *c, char *line)
{
	char *arg = strchr(line, ' ');

	if (arg)
		*arg++ = '\0';
	if (strcmp(line, "delete") == 0 || strcmp(line, "hold") == 0 || strcmp(line, "release") == 0 ||
	    strcmp(line, "flush") == 0) {
		if (forward_admin(c, line, arg) == 0) {
			ev_mod(c->fd, 0);
			return;     /* answered when queued replies */
		}
	} else if (strcmp(line, "status") == 0) {
		cmd_status(c);
	} else if (strcmp(line, "status-data") == 0) {
		cmd_status_data(c);
	} else if (strcmp(line, "ping") == 0) {
		buf_appendf(&c->out, "ok\n%s\n", M.ready_announced ? "ready" : "starting");
	} else if (strcmp(line, "stop") == 0) {
		buf_appendf(&c->out, "ok\nstopping (master pid %d)\n", (int)getpid());
		log_info("event=stop_requested source=control");
		kill(getpid(), SIGTERM);
	} else if (strcmp(line, "reload") == 0) {
		log_info("event=reload_requested source=control");
		reload_config();
		buf_appendf(&c->out, "ok\nreloaded %s\n", M.config_path);
	} else if (strcmp(line, "restart") == 0) {
		int role = arg ? role_parse(arg) : -1;
		if (role < 0) {
			buf_appendf(&c->out, "error: restart what? (smtpd, queued or deliverd)\n");
		} else {
			log_info("event=restart_requested component=%s source=control", role_name(role));
			spawn_restart_role(role);
			buf_appendf(&c->out, "ok\nrestarting %s\n", role_name(role));
		}
	} else {
		char esc[128];
		str_escape(esc, sizeof(esc), line, strlen(line));
		log_warn("event=control_error error=\"unknown command\" command=\"%s\"", esc);
		buf_appendf(&c->out, "error: unknown command\n");
	}
	c->closing = 1;
}

static void conn_io(int fd, int events, void *arg)
{
	struct conn *c = arg;

	if (events & EV_READ && !c->closing) {
		ssize_t r = buf_read_fd(&c->in, fd);
		if (r == 0 || (r == -1 && errno != EAGAIN)) {
			conn_free(c);
			return;
		}
		char *nl = memchr(buf_head(&c->in), '\n', buf_used(&c->in));
		if (nl == NULL && r == -2) {
			log_warn("event=control_error error=\"command line too long\"");
			conn_free(c);
			return;
		}
		if (nl != NULL) {
			*nl = '\0';
			for (char *p = buf_head(&c->in); p < nl; p++)
				if ((unsigned char)*p < 0x20 && *p != '\r') {
					log_warn("event=control_error error=\"control byte in command\"");
					conn_free(c);
					return;
				}
			if (nl > buf_head(&c->in) && nl[-1] == '\r')
				nl[-1] = '\0';
			dispatch(c, buf_head(&c->in));
			if (c->waiting) {
				ev_timer_add(&c->timer, CONTROL_TIMEOUT_MS * 3);
				return;
			}
			ev_mod(fd, EV_WRITE);
		}
	}
	if (c->waiting)
		return;
	if (c->closing && buf_used(&c->out) > 0) {
		ssize_t w = write(fd, buf_head(&c->out), buf_used(&c->out));
		if (w > 0)
			buf_drain(&c->out, (size_t)w);
		else if (w == -1 && errno != EAGAIN) {
			conn_free(c);
			return;
		}
	}
	if (c->closing && buf_used(&c->out) == 0)
		conn_free(c);
}

static void on_accept(int fd, int events, void *arg)
{
	(void)events;
	(void)arg;
	for (;;) {
		int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (cfd == -1)
			return;
		struct conn *c = xcalloc(1, sizeof(*c));
		c->fd = cfd;
		buf_init(&c->in, CONTROL_LINE_MAX);
		buf_init(&c->out, 1 << 20);
		ev_timer_init(&c->timer, conn_timeout, c);
		ev_timer_add(&c->timer, CONTROL_TIMEOUT_MS);
		if (ev_add(cfd, EV_READ, conn_io, c) == -1)
			conn_free(c);
	}
}

int control_open(const char *run_dir, char *err, size_t errlen)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };

	if (str_fmt(sock_path, sizeof(sock_path), "%s/control.sock", run_dir) < 0 ||
	    str_copy(sun.sun_path, sock_path, sizeof(sun.sun_path)) == -1) {
		str_fmt(err, errlen, "control socket path %s/control.sock is too long", run_dir);
		return -1;
	}
	listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (listen_fd == -1) {
		str_fmt(err, errlen, "socket: %s", strerror(errno));
		return -1;
	}
	unlink(sock_path);
	mode_t old = umask(0177);
	int r = bind(listen_fd, (struct sockaddr *)&sun, sizeof(sun));
	umask(old);
	if (r == -1 || listen(listen_fd, 16) == -1) {
		str_fmt(err, errlen, "bind %s: %s", sock_path, strerror(errno));
		close(listen_fd);
		listen_fd = -1;
		return -1;
	}
	return ev_add(listen_fd, EV_READ, on_accept, NULL);
}

void control_close(void)
{
	if (listen_fd >= 0) {
		ev_del(listen_fd);
		close(listen_fd);
		unlink(sock_path);
		listen_fd = -1;
	}
}
