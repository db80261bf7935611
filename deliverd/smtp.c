/*
 * smtp - the SMTP client transport: deliver one message to the configured
 * smarthost, falling back to relay.fallback hosts in order when a host is
 * unreachable or answers 4xx before any recipient was accepted.
 *
 * The connection is synchronous (deliverd does one job at a time) with
 * every wait bounded by poll(): queue.connect_timeout for connect and the
 * banner, queue.reply_timeout for each reply (RFC 5321 4.5.3.2 allows
 * longer; the admin can raise it).  With PIPELINING the envelope is sent
 * in one write (RFC 2920); without it, command by command.
 *
 * Outcome per recipient: 2xx delivered, 4xx/connection trouble deferred,
 * 5xx bounced; a 421 or a failure mid-transaction defers every recipient
 * not yet final.  Reply text is kept with the host it came from.
 */
#include "deliverd.h"
#include "buf.h"
#include "log.h"
#include "net.h"
#include "smtp_line.h"
#include "smtp_reply.h"
#include "str.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define CLIENT_LINE_MAX 2048   /* lenient with servers' long reply lines */

struct conn {
	int fd;
	struct buf in;
	char name[300];            /* host[ip]:port for messages */
	int timeout_ms;
	char err[300];
};

struct caps {
	int pipelining, has_8bit, has_utf8;
	uint64_t maxsize;
};

/* One connection kept open after a transaction, for the next job to the
 * same host (queued prefers this deliverd for that destination).  Closed
 * with QUIT after SMTP_IDLE_MS without a job (deliverd/main.c). */
static struct conn cache = { .fd = -1 };
static struct caps cache_caps;
static char cache_host[256];
static int cache_port;

static void conn_close(struct conn *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	buf_free(&c->in);
}

static int wait_fd(int fd, short ev, int timeout_ms)
{
	struct pollfd p = { fd, ev, 0 };
	int r;

	do {
		r = poll(&p, 1, timeout_ms);
	} while (r == -1 && errno == EINTR);
	if (r == 0)
		errno = ETIMEDOUT;
	return r > 0 ? 0 : -1;
}

static int conn_open(struct conn *c, const char *host, int port)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res, *ai;
	char portstr[16];
	int r;

	c->fd = -1;
	buf_init(&c->in, CLIENT_LINE_MAX * 4);
	str_fmt(portstr, sizeof(portstr), "%d", port);
	/* Smarthost names are resolved with the system resolver here; direct
	 * MX delivery resolves asynchronously with c-ares. */
	r = getaddrinfo(host, portstr, &hints, &res);
	if (r != 0) {
		str_fmt(c->err, sizeof(c->err), "cannot resolve %s: %s", host, gai_strerror(r));
		str_fmt(c->name, sizeof(c->name), "%s:%d", host, port);
		return -1;
	}
	for (ai = res; ai; ai = ai->ai_next) {
		char ip[64];
		net_ntop(ai->ai_addr, ip, sizeof(ip));
		if (strcmp(host, ip) == 0)
			str_fmt(c->name, sizeof(c->name), "%s:%d", host, port);
		else
			str_fmt(c->name, sizeof(c->name), "%s[%s]:%d", host, ip, port);
		int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (fd == -1)
			continue;
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == -1 && errno != EINPROGRESS) {
			str_fmt(c->err, sizeof(c->err), "connect to %s: %s", c->name, strerror(errno));
			close(fd);
			continue;
		}
		int soerr = 0;
		socklen_t sl = sizeof(soerr);
		if (wait_fd(fd, POLLOUT, cfg->queue.connect_timeout * 1000) == -1) {
			str_fmt(c->err, sizeof(c->err), "connect to %s: timed out after %ds", c->name,
			        cfg->queue.connect_timeout);
			close(fd);
			continue;
		}
		getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
		if (soerr != 0) {
			str_fmt(c->err, sizeof(c->err), "connect to %s: %s", c->name, strerror(soerr));
			close(fd);
			continue;
		}
		c->fd = fd;
		break;
	}
	freeaddrinfo(res);
	return c->fd >= 0 ? 0 : -1;
}

static int send_all(struct conn *c, const char *p, size_t n, const char *what)
{
	while (n > 0) {
		ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
		if (w > 0) {
			p += w;
			n -= (size_t)w;
			continue;
		}
		if (w == -1 && errno == EINTR)
			continue;
		if (w == -1 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			if (wait_fd(c->fd, POLLOUT, c->timeout_ms) == 0)
				continue;
		}
		str_fmt(c->err, sizeof(c->err), "lost connection with %s while sending %s: %s", c->name,
		        what, strerror(errno));
		return -1;
	}
	return 0;
}

static int read_reply(struct conn *c, struct smtp_reply *r, const char *what)
{
	smtp_reply_init(r);
	for (;;) {
		struct line l;
		int st = smtp_line_read(&c->in, &l, CLIENT_LINE_MAX);
		if (st == LINE_OK || st == LINE_BARELF) {
			int done = smtp_reply_line(r, l.p, l.len);
			buf_drain(&c->in, l.consumed);
			if (done == -1) {
				str_fmt(c->err, sizeof(c->err), "protocol error from %s in reply to %s: %s", c->name,
				        what, log_qn(l.p, l.len < 80 ? l.len : 80));
				return -1;
			}
			if (done == 1)
				return 0;
			continue;
		}
		if (st == LINE_TOOLONG || st == LINE_NUL) {
			str_fmt(c->err, sizeof(c->err), "protocol error from %s in reply to %s: %s", c->name,
			        what, st == LINE_NUL ? "NUL byte" : "reply line too long");
			return -1;
		}
		if (wait_fd(c->fd, POLLIN, c->timeout_ms) == -1) {
			str_fmt(c->err, sizeof(c->err), "timeout waiting for %s's reply to %s", c->name, what);
			return -1;
		}
		ssize_t n = buf_read_fd(&c->in, c->fd);
		if (n == -1 && (errno == EAGAIN || errno == EINTR))
			continue;
		if (n <= 0) {
			str_fmt(c->err, sizeof(c->err), "lost connection with %s while waiting for reply to %s",
			        c->name, what);
			return -1;
		}
	}
}

static void set_result(struct rcpt_result *r, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_result(struct rcpt_result *r, int status, const char *fmt, ...)
{
	va_list ap;

	r->status = status;
	va_start(ap, fmt);
	vsnprintf(r->text, sizeof(r->text), fmt, ap);
	va_end(ap);
}

static int class_of(int code)
{
	return code >= 200 && code < 300 ? 2 : code >= 500 ? 5 : 4;
}

/* Stream the message data with dot-stuffing and the final ".". */
static int send_body(struct conn *c, struct delivery *d)
{
	char in[32768], out[65536 + 16];
	uint64_t off = d->env->data_off, left = d->env->data_len;
	int bol = 1;
	size_t k = 0;

	while (left > 0) {
		size_t want = left < sizeof(in) ? (size_t)left : sizeof(in);
		ssize_t r = pread(d->fd, in, want, (off_t)off);
		if (r <= 0) {
			str_fmt(c->err, sizeof(c->err), "cannot read queue file %s: %s", d->qid,
			        r == 0 ? "short file" : strerror(errno));
			return -1;
		}
		for (ssize_t i = 0; i < r; i++) {
			if (bol && in[i] == '.')
				out[k++] = '.';
			out[k++] = in[i];
			bol = in[i] == '\n';
		}
		if (send_all(c, out, k, "message data") == -1)
			return -1;
		k = 0;
		off += (uint64_t)r;
		left -= (uint64_t)r;
	}
	/* Data always ends in CRLF from smtpd; be safe for other producers. */
	if (!bol && send_all(c, "\r\n", 2, "message data") == -1)
		return -1;
	return send_all(c, ".\r\n", 3, "end of data");
}

/* 0: every recipient has a status; 1: host failed as a whole, try next. */
static int attempt(struct delivery *d, const struct relay_host *h)
{
	struct conn c = { .fd = -1 };
	struct smtp_reply r;
	char cmd[1024];
	int pipelining, accepted = 0;
	const char *arg;

	struct caps caps;
	int reused = 0;

	c.timeout_ms = cfg->queue.reply_timeout * 1000;
	if (cache.fd >= 0 && cache_port == h->port && strcmp(cache_host, h->host) == 0) {
		/* Reuse: RSET proves the connection still works (RFC 5321 4.1.1.5). */
		c = cache;
		caps = cache_caps;
		cache.fd = -1;
		memset(&cache.in, 0, sizeof(cache.in));
		if (send_all(&c, "RSET\r\n", 6, "RSET") == 0 && read_reply(&c, &r, "RSET") == 0 &&
		    r.code == 250) {
			reused = 1;
			str_copy(d->relay, c.name, sizeof(d->relay));
			log_debug("event=connection_reused relay=%s qid=%s", log_q(c.name), d->qid);
		} else {
			conn_close(&c);
			c.fd = -1;
		}
	}
	if (!reused) {
		int opened = conn_open(&c, h->host, h->port);
		str_copy(d->relay, c.name, sizeof(d->relay));
		if (opened == -1)
			goto next_host;
		c.timeout_ms = cfg->queue.connect_timeout * 1000 > c.timeout_ms ? c.timeout_ms
		                                                               : cfg->queue.connect_timeout * 1000;
		if (read_reply(&c, &r, "the banner") == -1)
			goto next_host;
		c.timeout_ms = cfg->queue.reply_timeout * 1000;
		if (r.code != 220) {
			str_fmt(c.err, sizeof(c.err), "%s greeted us with: %s", c.name, r.text);
			goto next_host;
		}
		str_fmt(cmd, sizeof(cmd), "EHLO %s\r\n", cfg->hostname);
		if (send_all(&c, cmd, strlen(cmd), "EHLO") == -1 || read_reply(&c, &r, "EHLO") == -1)
			goto next_host;
		if (class_of(r.code) == 5) {
			str_fmt(cmd, sizeof(cmd), "HELO %s\r\n", cfg->hostname);
			if (send_all(&c, cmd, strlen(cmd), "HELO") == -1 || read_reply(&c, &r, "HELO") == -1)
				goto next_host;
		}
		if (class_of(r.code) != 2) {
			str_fmt(c.err, sizeof(c.err), "%s said: %s (in reply to EHLO)", c.name, r.text);
			goto next_host;
		}
		memset(&caps, 0, sizeof(caps));
		caps.pipelining = smtp_reply_has_ext(&r, "PIPELINING", NULL);
		caps.has_8bit = smtp_reply_has_ext(&r, "8BITMIME", NULL);
		caps.has_utf8 = smtp_reply_has_ext(&r, "SMTPUTF8", NULL);
		if (smtp_reply_has_ext(&r, "SIZE", &arg)) {
			char num[24];
			size_t n = strcspn(arg, " /");
			if (n < sizeof(num)) {
				memcpy(num, arg, n);
				num[n] = '\0';
				if (str_to_u64(num, 0, UINT64_MAX, &caps.maxsize) == -1)
					caps.maxsize = 0;
			}
		}
	}
	pipelining = caps.pipelining;
	int has_8bit = caps.has_8bit, has_utf8 = caps.has_utf8;
	uint64_t maxsize = caps.maxsize;
	if (d->env->smtputf8 && !has_utf8) {
		for (size_t i = 0; i < d->n; i++)
			set_result(&d->r[i], 5, "554 5.6.7 %s does not support SMTPUTF8, which this message needs",
			           c.name);
		goto quit;
	}
	if (maxsize > 0 && d->env->data_len > maxsize) {
		for (size_t i = 0; i < d->n; i++)
			set_result(&d->r[i], 5, "552 5.3.4 message size %llu exceeds %s's limit of %llu",
			           (unsigned long long)d->env->data_len, c.name, (unsigned long long)maxsize);
		goto quit;
	}

	/* Envelope: MAIL, RCPT..., DATA; in one write with PIPELINING. */
	struct buf env;
	buf_init(&env, 1 << 20);
	buf_appendf(&env, "MAIL FROM:<%s>", d->env->sender);
	if (maxsize > 0)
		buf_appendf(&env, " SIZE=%llu", (unsigned long long)d->env->data_len);
	if (has_8bit && strcmp(d->env->body, "8bitmime") == 0)
		buf_appendf(&env, " BODY=8BITMIME");
	if (d->env->smtputf8)
		buf_appendf(&env, " SMTPUTF8");
	buf_appendf(&env, "\r\n");
	size_t mail_len = buf_used(&env);
	if (pipelining) {
		for (size_t i = 0; i < d->n; i++)
			buf_appendf(&env, "RCPT TO:<%s>\r\n", d->r[i].addr);
		buf_appendf(&env, "DATA\r\n");
	}
	if (send_all(&c, buf_head(&env), pipelining ? buf_used(&env) : mail_len, "MAIL FROM") == -1) {
		buf_free(&env);
		goto lost;
	}
	buf_free(&env);
	if (read_reply(&c, &r, "MAIL FROM") == -1)
		goto lost;
	if (class_of(r.code) != 2) {
		if (class_of(r.code) == 4) {
			str_fmt(c.err, sizeof(c.err), "%s said: %s (in reply to MAIL FROM)", c.name, r.text);
			goto next_host;
		}
		for (size_t i = 0; i < d->n; i++)
			set_result(&d->r[i], 5, "%s said: %s (in reply to MAIL FROM)", c.name, r.text);
		if (pipelining) {
			/* Drain the pipelined RCPT and DATA replies before QUIT. */
			for (size_t i = 0; i <= d->n; i++)
				if (read_reply(&c, &r, "RCPT TO") == -1)
					goto done;
		}
		goto quit;
	}
	for (size_t i = 0; i < d->n; i++) {
		if (!pipelining) {
			str_fmt(cmd, sizeof(cmd), "RCPT TO:<%s>\r\n", d->r[i].addr);
			if (send_all(&c, cmd, strlen(cmd), "RCPT TO") == -1)
				goto lost;
		}
		if (read_reply(&c, &r, "RCPT TO") == -1)
			goto lost;
		if (r.code == 421) {
			str_fmt(c.err, sizeof(c.err), "%s said: %s (in reply to RCPT TO)", c.name, r.text);
			goto lost;
		}
		if (class_of(r.code) == 2) {
			accepted++;
			d->r[i].status = 0;   /* accepted, final after DATA */
			str_fmt(d->r[i].text, sizeof(d->r[i].text), "ok");
		} else {
			set_result(&d->r[i], class_of(r.code), "%s said: %s (in reply to RCPT TO)", c.name, r.text);
		}
	}
	if (!pipelining && accepted > 0) {
		if (send_all(&c, "DATA\r\n", 6, "DATA") == -1)
			goto lost;
	}
	if (pipelining || accepted > 0) {
		if (read_reply(&c, &r, "DATA") == -1)
			goto lost;
		if (accepted == 0)
			goto quit;
		if (r.code != 354) {
			for (size_t i = 0; i < d->n; i++)
				if (d->r[i].status == 0)
					set_result(&d->r[i], class_of(r.code) == 2 ? 4 : class_of(r.code),
					           "%s said: %s (in reply to DATA)", c.name, r.text);
			goto quit;
		}
	} else {
		goto quit;
	}
	if (send_body(&c, d) == -1)
		goto lost;
	if (read_reply(&c, &r, "end of data") == -1)
		goto lost;
	for (size_t i = 0; i < d->n; i++)
		if (d->r[i].status == 0)
			set_result(&d->r[i], class_of(r.code), "%s said: %s", c.name, r.text);
quit:
	/* The session is between transactions: keep it for the next job. */
	smtp_idle_close();
	cache = c;
	cache_caps = caps;
	str_copy(cache_host, h->host, sizeof(cache_host));
	cache_port = h->port;
	return 0;
done:
	conn_close(&c);
	return 0;
lost:
	/* Mid-transaction failure: nothing not yet final may count as sent. */
	for (size_t i = 0; i < d->n; i++)
		if (d->r[i].status == 0)
			set_result(&d->r[i], 4, "%s", c.err);
	conn_close(&c);
	return 0;
next_host:
	log_info("event=host_failed relay=%s error=%s", log_q(c.name), log_q(c.err));
	for (size_t i = 0; i < d->n; i++)
		if (d->r[i].status == 0)
			str_copy(d->r[i].text, c.err, sizeof(d->r[i].text));
	if (c.fd >= 0) {
		send_all(&c, "QUIT\r\n", 6, "QUIT");
	}
	conn_close(&c);
	return 1;
}

int smtp_has_idle(void)
{
	return cache.fd >= 0;
}

void smtp_idle_close(void)
{
	struct smtp_reply r;

	if (cache.fd < 0)
		return;
	cache.timeout_ms = 2000;
	if (send_all(&cache, "QUIT\r\n", 6, "QUIT") == 0)
		read_reply(&cache, &r, "QUIT");
	conn_close(&cache);
}

void smtp_deliver(struct delivery *d)
{
	for (size_t i = 0; i < d->n; i++)
		d->r[i].status = 0;
	for (size_t h = 0; h < cfg->relay.nhosts; h++) {
		if (attempt(d, &cfg->relay.hosts[h]) == 0)
			return;
	}
	/* Every host failed: defer with the last host's reason. */
	for (size_t i = 0; i < d->n; i++)
		if (d->r[i].status == 0)
			d->r[i].status = 4;
}
