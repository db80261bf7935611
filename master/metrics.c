/*
 * metrics - the counters the children report (IPC_STATS, shared/stats.h)
 * and the Prometheus text-format endpoint on metrics.listen.
 *
 * The master keeps every counter, so a restarted smtpd, queued or
 * deliverd does not reset them (only a restart of the master does, which
 * Prometheus handles as a counter reset).  Gauges are the last value their
 * owner sent; smtpd's open-session gauge is zeroed when smtpd exits.
 *
 * The endpoint is deliberately tiny: plain HTTP/1.0-style, one request per
 * connection.  GET (or HEAD) /metrics answers 200; another path 404;
 * another method 405; a request line that does not parse 400; a request
 * larger than METRICS_REQ_MAX bytes 431; a client that sends no complete
 * request within METRICS_TIMEOUT_MS is dropped, and at most
 * METRICS_CONN_MAX connections are served at once (more are closed at
 * accept).  The socket is bound by the master at start, like the SMTP
 * listeners; a change of metrics.listen takes effect at the next start.
 */
#include "master.h"
#include "buf.h"
#include "log.h"
#include "net.h"
#include "stats.h"
#include "str.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define METRICS_REQ_MAX 4096
#define METRICS_OUT_MAX (256 * 1024)
#define METRICS_TIMEOUT_MS 5000
#define METRICS_CONN_MAX 16

struct mconn {
	int fd;
	struct buf in;
	struct buf out;
	int writing;
	struct ev_timer timer;
};

static uint64_t val[STAT_MAX];
static int listen_fd = -1;
static unsigned nconn;

void metrics_apply(struct child *c, struct ipc_msg *m)
{
	uint32_t n, id;
	uint64_t v;

	/* Validate the whole message before applying any of it. */
	struct ipc_msg probe = *m;
	if (ipc_get_u32(&probe, &n) == -1 || n > STAT_MAX)
		goto bad;
	for (uint32_t i = 0; i < n; i++)
		if (ipc_get_u32(&probe, &id) == -1 || id >= STAT_MAX || ipc_get_u64(&probe, &v) == -1)
			goto bad;
	if (ipc_end(&probe) == -1)
		goto bad;
	ipc_get_u32(m, &n);
	for (uint32_t i = 0; i < n; i++) {
		ipc_get_u32(m, &id);
		ipc_get_u64(m, &v);
		if (id >= STAT_GAUGE_FIRST)
			val[id] = v;
		else
			val[id] += v;
	}
	return;
bad:
	log_warn("event=ipc_error component=%s pid=%d error=\"malformed STATS\"", role_name(c->role),
	         (int)c->pid);
}

void metrics_child_exited(struct child *c)
{
	if (c->role == ROLE_SMTPD)
		val[STAT_SMTP_CONN_CURRENT] = 0;
}

static void family(struct buf *o, const char **last, const struct stat_def *d, const char *type)
{
	if (*last != NULL && strcmp(*last, d->name) == 0)
		return;
	*last = d->name;
	if (d->help)
		buf_appendf(o, "# HELP %s %s\n", d->name, d->help);
	buf_appendf(o, "# TYPE %s %s\n", d->name, type);
}

static void render(struct buf *o)
{
	const char *last = NULL;
	time_t now = time(NULL);

	for (int i = 0; i < STAT_MAX; i++) {
		const struct stat_def *d = stats_def(i);
		if (i == STAT_LAT_BUCKET0) {
			uint64_t cum = 0;
			family(o, &last, d, "histogram");
			for (int b = 0; b < STAT_LAT_NBUCKETS; b++) {
				cum += val[STAT_LAT_BUCKET0 + b];
				if (b < STAT_LAT_NBUCKETS - 1)
					buf_appendf(o, "%s_bucket{le=\"%g\"} %llu\n", d->name, stats_lat_bound(b),
					            (unsigned long long)cum);
				else
					buf_appendf(o, "%s_bucket{le=\"+Inf\"} %llu\n", d->name, (unsigned long long)cum);
			}
			buf_appendf(o, "%s_sum %.3f\n%s_count %llu\n", d->name, (double)val[STAT_LAT_SUM_MS] / 1000.0,
			            d->name, (unsigned long long)cum);
			continue;
		}
		if ((i > STAT_LAT_BUCKET0 && i <= STAT_LAT_BUCKET_LAST) || i == STAT_LAT_SUM_MS)
			continue;
		uint64_t v = val[i];
		if (i == STAT_QUEUE_OLDEST)
			v = (v > 0 && (uint64_t)now > v) ? (uint64_t)now - v : 0;
		family(o, &last, d, d->gauge ? "gauge" : "counter");
		if (d->labels[0])
			buf_appendf(o, "%s{%s} %llu\n", d->name, d->labels, (unsigned long long)v);
		else
			buf_appendf(o, "%s %llu\n", d->name, (unsigned long long)v);
	}
	/* What the master knows itself. */
	buf_appendf(o, "# HELP postern_component_restarts_total Restarts of each component since the "
	               "master started\n# TYPE postern_component_restarts_total counter\n");
	for (int r = 0; r < ROLE_MAX; r++) {
		unsigned n = 0;
		for (size_t i = 0; i < M.nchildren; i++)
			if (M.children[i].role == r)
				n += M.children[i].restarts;
		buf_appendf(o, "postern_component_restarts_total{component=\"%s\"} %u\n", role_name(r), n);
	}
	buf_appendf(o, "# HELP postern_component_processes Child processes by component and state\n"
	               "# TYPE postern_component_processes gauge\n");
	for (int r = 0; r < ROLE_MAX; r++) {
		unsigned ready = 0, other = 0;
		for (size_t i = 0; i < M.nchildren; i++)
			if (M.children[i].role == r && child_in_use(&M.children[i])) {
				if (M.children[i].state == CH_READY && M.children[i].pid > 0)
					ready++;
				else
					other++;
			}
		buf_appendf(o, "postern_component_processes{component=\"%s\",state=\"ready\"} %u\n",
		            role_name(r), ready);
		buf_appendf(o, "postern_component_processes{component=\"%s\",state=\"not_ready\"} %u\n",
		            role_name(r), other);
	}
	buf_appendf(o, "# HELP postern_master_start_time_seconds When the master started (unix time)\n"
	               "# TYPE postern_master_start_time_seconds gauge\n"
	               "postern_master_start_time_seconds %lld\n",
	            (long long)M.started);
}

static void mconn_free(struct mconn *c)
{
	ev_del(c->fd);
	ev_timer_del(&c->timer);
	close(c->fd);
	buf_free(&c->in);
	buf_free(&c->out);
	free(c);
	nconn--;
}

static void mconn_timeout(void *arg)
{
	mconn_free(arg);
}

static void respond(struct mconn *c, const char *status, const char *extra, int head)
{
	struct buf body;

	buf_init(&body, METRICS_OUT_MAX);
	if (strncmp(status, "200", 3) == 0)
		render(&body);
	else
		buf_appendf(&body, "%s\n", status);
	buf_appendf(&c->out,
	            "HTTP/1.0 %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%sConnection: close\r\n\r\n",
	            status,
	            strncmp(status, "200", 3) == 0 ? "text/plain; version=0.0.4; charset=utf-8"
	                                           : "text/plain; charset=utf-8",
	            buf_used(&body), extra);
	if (!head)
		buf_append(&c->out, buf_head(&body), buf_used(&body));
	buf_free(&body);
	c->writing = 1;
	ev_mod(c->fd, EV_WRITE);
}

/* The request line: METHOD SP TARGET SP HTTP/x.y (headers are ignored). */
static void handle(struct mconn *c, char *req)
{
	char *sp1 = strchr(req, ' ');
	char *sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
	char *eol = req + strcspn(req, "\r\n");

	if (sp1 == NULL || sp2 == NULL || sp2 > eol || strncmp(sp2 + 1, "HTTP/", 5) != 0) {
		respond(c, "400 Bad Request", "", 0);
		return;
	}
	*sp1 = '\0';
	*sp2 = '\0';
	char *target = sp1 + 1;
	target[strcspn(target, "?")] = '\0';
	int head = strcmp(req, "HEAD") == 0;
	if (strcmp(req, "GET") != 0 && !head)
		respond(c, "405 Method Not Allowed", "Allow: GET, HEAD\r\n", 0);
	else if (strcmp(target, "/metrics") != 0)
		respond(c, "404 Not Found", "", head);
	else
		respond(c, "200 OK", "", head);
}

static void mconn_io(int fd, int events, void *arg)
{
	struct mconn *c = arg;

	if (!c->writing && (events & EV_READ)) {
		ssize_t r = buf_read_fd(&c->in, fd);
		if (r == 0 || (r == -1 && errno != EAGAIN && errno != EWOULDBLOCK)) {
			mconn_free(c);
			return;
		}
		/* NUL-terminate within the cap: the request is text. */
		char *h = buf_head(&c->in);
		size_t n = buf_used(&c->in);
		if (h == NULL)
			return;   /* nothing read yet */
		if (memchr(h, '\0', n) != NULL) {
			respond(c, "400 Bad Request", "", 0);
		} else if ((n >= 4 && memmem(h, n, "\r\n\r\n", 4)) || (n >= 2 && memmem(h, n, "\n\n", 2))) {
			char req[METRICS_REQ_MAX + 1];
			memcpy(req, h, n);
			req[n] = '\0';
			handle(c, req);
		} else if (r == -2) {
			respond(c, "431 Request Header Fields Too Large", "", 0);
		}
		if (!c->writing)
			return;
	}
	if (c->writing) {
		ssize_t w = send(fd, buf_head(&c->out), buf_used(&c->out), MSG_NOSIGNAL);
		if (w > 0)
			buf_drain(&c->out, (size_t)w);
		else if (w == -1 && errno != EAGAIN && errno != EWOULDBLOCK) {
			mconn_free(c);
			return;
		}
		if (buf_used(&c->out) == 0) {
			shutdown(fd, SHUT_WR);
			mconn_free(c);
		}
	}
}

static void on_accept(int fd, int events, void *arg)
{
	(void)events;
	(void)arg;
	for (int i = 0; i < 64; i++) {
		int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (cfd == -1)
			return;
		if (nconn >= METRICS_CONN_MAX) {
			log_warn("event=metrics_refused reason=max_connections limit=%d", METRICS_CONN_MAX);
			close(cfd);
			continue;
		}
		struct mconn *c = xcalloc(1, sizeof(*c));
		c->fd = cfd;
		nconn++;
		buf_init(&c->in, METRICS_REQ_MAX);
		buf_init(&c->out, METRICS_OUT_MAX + 1024);
		ev_timer_init(&c->timer, mconn_timeout, c);
		ev_timer_add(&c->timer, METRICS_TIMEOUT_MS);
		if (ev_add(cfd, EV_READ, mconn_io, c) == -1)
			mconn_free(c);
	}
}

int metrics_open(char *err, size_t errlen)
{
	if (M.cfg->metrics.listen[0] == '\0')
		return 0;
	listen_fd = net_listen(M.cfg->metrics.address, M.cfg->metrics.port, err, errlen);
	if (listen_fd == -1)
		return -1;
	if (ev_add(listen_fd, EV_READ, on_accept, NULL) == -1) {
		str_fmt(err, errlen, "metrics: cannot watch the listening socket");
		return -1;
	}
	log_info("event=listening address=%s port=%d mode=metrics", M.cfg->metrics.address,
	         M.cfg->metrics.port);
	return 0;
}

void metrics_close(void)
{
	if (listen_fd >= 0) {
		ev_del(listen_fd);
		close(listen_fd);
		listen_fd = -1;
	}
}
