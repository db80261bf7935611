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
 *
 * TLS (relay.tls): none; opportunistic (STARTTLS when offered); required
 * (no STARTTLS, or a failed handshake, defers: never plaintext); implicit
 * (TLS from the first byte).  relay.verify checks the chain against
 * relay.ca_file or the system store and the host name; a failure defers
 * with the X509 reason.  Whatever the server sent before the handshake is
 * discarded (the client side of CVE-2011-0411).  With relay.username,
 * AUTH PLAIN (or LOGIN) follows, only over TLS unless relay.tls = "none";
 * a 535 defers with "relay rejected credentials".
 */
#include "deliverd.h"
#include "buf.h"
#include "base64.h"
#include "log.h"
#include "net.h"
#include "smtp_line.h"
#include "smtp_reply.h"
#include "str.h"
#include "tls.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define CLIENT_LINE_MAX 2048   /* lenient with servers' long reply lines */

struct conn {
	const struct smtp_target *t;
	int fd;
	tls_conn *tls;
	struct buf in;
	char name[300];            /* host[ip]:port for messages */
	int timeout_ms;
	char err[300];
};

struct caps {
	int pipelining, has_8bit, has_utf8, starttls, auth_plain, auth_login;
	uint64_t maxsize;
};

/* One connection kept open after a transaction, for the next job to the
 * same host (queued prefers this deliverd for that destination).  Closed
 * with QUIT after SMTP_IDLE_MS without a job (deliverd/main.c). */
static struct conn cache = { .fd = -1 };
static struct caps cache_caps;
static char cache_host[256];
static int cache_port;

static tls_ctx *client_ctx;     /* relay.ca_file and relay.verify */
static tls_ctx *mx_ctx;         /* direct MX delivery: no verification */
static char relay_password[256];

static void conn_close(struct conn *c)
{
	if (c->tls) {
		tls_shutdown(c->tls);
		tls_conn_free(c->tls);
		c->tls = NULL;
	}
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

int smtp_load_password(const struct config *c, char *err, size_t errlen)
{
	struct stat st;
	ssize_t n;
	int fd;

	explicit_bzero(relay_password, sizeof(relay_password));
	if (!c->relay.present || c->relay.password_file[0] == '\0')
		return 0;
	fd = open(c->relay.password_file, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd == -1) {
		str_fmt(err, errlen, "cannot open relay.password_file %s: %s", c->relay.password_file,
		        strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) == -1 || (st.st_mode & 007) != 0) {
		str_fmt(err, errlen, "relay.password_file %s is readable by others (mode %04o); "
		        "chmod 600 it", c->relay.password_file, (unsigned)(st.st_mode & 07777));
		close(fd);
		return -1;
	}
	n = read(fd, relay_password, sizeof(relay_password) - 1);
	close(fd);
	if (n < 0) {
		str_fmt(err, errlen, "cannot read relay.password_file %s: %s", c->relay.password_file,
		        strerror(errno));
		return -1;
	}
	relay_password[n] = '\0';
	relay_password[strcspn(relay_password, "\r\n")] = '\0';
	return 0;
}

void smtp_reload(void)
{
	tls_ctx_free(client_ctx);
	client_ctx = NULL;
	tls_ctx_free(mx_ctx);
	mx_ctx = NULL;
}

static int conn_open(struct conn *c, const char *host, const char *addr, int port)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res, *ai;
	char portstr[16];
	int r;

	c->fd = -1;
	c->tls = NULL;
	buf_init(&c->in, CLIENT_LINE_MAX * 4);
	str_fmt(portstr, sizeof(portstr), "%d", port);
	/* Smarthost names are resolved with the system resolver here; direct
	 * MX delivery resolves asynchronously with c-ares. */
	if (addr != NULL)
		hints.ai_flags = AI_NUMERICHOST;
	r = getaddrinfo(addr ? addr : host, portstr, &hints, &res);
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
		/* SMTP is request/reply: without this, Nagle holds the final
		 * ".\r\n" until the server ACKs the body (~40 ms per message). */
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
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
		if (c->tls) {
			ssize_t t = tls_write(c->tls, p, n);
			if (t > 0) {
				p += t;
				n -= (size_t)t;
				continue;
			}
			if ((t == TLS_WANT_READ || t == TLS_WANT_WRITE) &&
			    tls_io_wait(c->fd, (int)t, c->timeout_ms) == 0)
				continue;
			str_fmt(c->err, sizeof(c->err), "lost connection with %s while sending %s (TLS)",
			        c->name, what);
			return -1;
		}
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
		if (c->tls) {
			if (buf_room(&c->in) == 0) {
				str_fmt(c->err, sizeof(c->err), "protocol error from %s in reply to %s: too long",
				        c->name, what);
				return -1;
			}
			size_t want = buf_room(&c->in) < 16384 ? buf_room(&c->in) : 16384;
			ssize_t t = tls_read(c->tls, buf_reserve(&c->in, want), want);
			if (t > 0) {
				buf_commit(&c->in, (size_t)t);
				continue;
			}
			if ((t == TLS_WANT_READ || t == TLS_WANT_WRITE) &&
			    tls_io_wait(c->fd, (int)t, c->timeout_ms) == 0)
				continue;
			str_fmt(c->err, sizeof(c->err), "%s waiting for %s's reply to %s",
			        t == TLS_WANT_READ || t == TLS_WANT_WRITE ? "timeout" : "lost connection",
			        c->name, what);
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

/* The TLS handshake on c (after STARTTLS's 220, or at once for implicit). */
static int start_tls(struct conn *c, const char *host)
{
	char err[256];

	tls_ctx **ctx = c->t->relay ? &client_ctx : &mx_ctx;
	if (*ctx == NULL) {
		*ctx = c->t->relay ? tls_client_ctx(cfg->relay.ca_file, c->t->verify, err, sizeof(err))
		                   : tls_client_ctx(NULL, c->t->verify, err, sizeof(err));
		if (*ctx == NULL) {
			str_fmt(c->err, sizeof(c->err), "TLS setup for %s failed: %s", c->name, err);
			return -1;
		}
	}
	/* Anything the server sent before the handshake is not trusted. */
	buf_reset(&c->in);
	c->tls = tls_client_new(*ctx, c->fd, host, c->t->verify);
	if (c->tls == NULL) {
		str_fmt(c->err, sizeof(c->err), "TLS setup for %s failed", c->name);
		return -1;
	}
	for (;;) {
		int r = tls_handshake(c->tls, err, sizeof(err));
		if (r == TLS_OK)
			break;
		if ((r == TLS_WANT_READ || r == TLS_WANT_WRITE) && tls_io_wait(c->fd, r, c->timeout_ms) == 0)
			continue;
		if (r != TLS_ERR)
			str_copy(err, "timed out", sizeof(err));
		str_fmt(c->err, sizeof(c->err), "TLS handshake with %s failed: %s", c->name, err);
		tls_conn_free(c->tls);
		c->tls = NULL;
		return -1;
	}
	char desc[96];
	tls_describe(c->tls, desc, sizeof(desc));
	log_info("event=tls relay=%s protocol=%s cipher=%s verify=%s", log_q(c->name), tls_protocol(c->tls),
	         tls_cipher(c->tls), c->t->verify ? "yes" : "no");
	return 0;
}

static int ehlo(struct conn *c, struct caps *caps)
{
	struct smtp_reply r;
	char cmd[300];
	const char *arg;

	str_fmt(cmd, sizeof(cmd), "EHLO %s\r\n", cfg->hostname);
	if (send_all(c, cmd, strlen(cmd), "EHLO") == -1 || read_reply(c, &r, "EHLO") == -1)
		return -1;
	if (class_of(r.code) == 5 && c->tls == NULL && c->t->tls != RELAY_TLS_REQUIRED &&
	    !(c->t->relay && cfg->relay.username[0] != '\0')) {
		str_fmt(cmd, sizeof(cmd), "HELO %s\r\n", cfg->hostname);
		if (send_all(c, cmd, strlen(cmd), "HELO") == -1 || read_reply(c, &r, "HELO") == -1)
			return -1;
	}
	if (class_of(r.code) != 2) {
		str_fmt(c->err, sizeof(c->err), "%s said: %s (in reply to EHLO)", c->name, r.text);
		return -1;
	}
	memset(caps, 0, sizeof(*caps));
	caps->pipelining = smtp_reply_has_ext(&r, "PIPELINING", NULL);
	caps->has_8bit = smtp_reply_has_ext(&r, "8BITMIME", NULL);
	caps->has_utf8 = smtp_reply_has_ext(&r, "SMTPUTF8", NULL);
	caps->starttls = smtp_reply_has_ext(&r, "STARTTLS", NULL);
	if (smtp_reply_has_ext(&r, "AUTH", &arg)) {
		char mechs[256];
		str_copy(mechs, arg, sizeof(mechs));
		for (char *save = NULL, *m = strtok_r(mechs, " ", &save); m; m = strtok_r(NULL, " ", &save)) {
			if (str_casecmp(m, "PLAIN") == 0)
				caps->auth_plain = 1;
			else if (str_casecmp(m, "LOGIN") == 0)
				caps->auth_login = 1;
		}
	}
	if (smtp_reply_has_ext(&r, "SIZE", &arg)) {
		char num[24];
		size_t n = strcspn(arg, " /");
		if (n < sizeof(num)) {
			memcpy(num, arg, n);
			num[n] = '\0';
			if (str_to_u64(num, 0, UINT64_MAX, &caps->maxsize) == -1)
				caps->maxsize = 0;
		}
	}
	return 0;
}

/* AUTH with relay.username; 0 ok, -1 with c->err (a 535 says so plainly). */
static int authenticate(struct conn *c, const struct caps *caps)
{
	struct smtp_reply r;
	char raw[600], enc[900], cmd[1000];
	size_t ul = strlen(cfg->relay.username), pl = strlen(relay_password);
	int rc = -1;

	if (c->tls == NULL && cfg->relay.tls != RELAY_TLS_NONE) {
		str_fmt(c->err, sizeof(c->err), "%s offers no STARTTLS; not sending the password in "
		        "plain text (set relay.tls = \"none\" to allow it)", c->name);
		return -1;
	}
	if (caps->auth_plain || !caps->auth_login) {
		if (!caps->auth_plain) {
			str_fmt(c->err, sizeof(c->err), "%s offers no AUTH PLAIN or LOGIN", c->name);
			return -1;
		}
		raw[0] = '\0';
		memcpy(raw + 1, cfg->relay.username, ul);
		raw[1 + ul] = '\0';
		memcpy(raw + 2 + ul, relay_password, pl);
		(void)base64_encode(raw, 2 + ul + pl, enc, sizeof(enc));   /* enc holds 4/3 of raw */
		str_fmt(cmd, sizeof(cmd), "AUTH PLAIN %s\r\n", enc);
		if (send_all(c, cmd, strlen(cmd), "AUTH") == -1 || read_reply(c, &r, "AUTH") == -1)
			goto out;
	} else {
		if (send_all(c, "AUTH LOGIN\r\n", 12, "AUTH") == -1 || read_reply(c, &r, "AUTH") == -1)
			goto out;
		if (r.code == 334) {
			(void)base64_encode(cfg->relay.username, ul, enc, sizeof(enc));   /* enc holds 4/3 of raw */
			str_fmt(cmd, sizeof(cmd), "%s\r\n", enc);
			if (send_all(c, cmd, strlen(cmd), "AUTH") == -1 || read_reply(c, &r, "AUTH") == -1)
				goto out;
		}
		if (r.code == 334) {
			(void)base64_encode(relay_password, pl, enc, sizeof(enc));   /* enc holds 4/3 of raw */
			str_fmt(cmd, sizeof(cmd), "%s\r\n", enc);
			if (send_all(c, cmd, strlen(cmd), "AUTH") == -1 || read_reply(c, &r, "AUTH") == -1)
				goto out;
		}
	}
	if (r.code == 235) {
		log_info("event=relay_auth relay=%s user=%s", log_q(c->name), log_q(cfg->relay.username));
		rc = 0;
	} else if (r.code == 535) {
		/* An admin problem, not a reason to bounce: defer and say so. */
		log_warn("event=relay_auth_failed relay=%s user=%s error=\"relay rejected credentials\" "
		         "reply=%s", log_q(c->name), log_q(cfg->relay.username), log_q(r.text));
		str_fmt(c->err, sizeof(c->err), "%s said: %s (relay rejected credentials for %s)", c->name,
		        r.text, cfg->relay.username);
	} else {
		str_fmt(c->err, sizeof(c->err), "%s said: %s (in reply to AUTH)", c->name, r.text);
	}
out:
	explicit_bzero(raw, sizeof(raw));
	explicit_bzero(enc, sizeof(enc));
	explicit_bzero(cmd, sizeof(cmd));
	return rc;
}

int smtp_attempt(struct delivery *d, const struct smtp_target *t)
{
	struct conn c = { .t = t, .fd = -1 };
	struct smtp_reply r;
	char cmd[1024];
	int pipelining, accepted = 0;

	struct caps caps;
	int reused = 0, rset_pending = 0;

	c.timeout_ms = cfg->queue.reply_timeout * 1000;
	if (t->relay && cache.fd >= 0 && cache_port == t->port && strcmp(cache_host, t->host) == 0) {
		/* Reuse: RSET proves the connection still works (RFC 5321
		 * 4.1.1.5).  With PIPELINING it goes in the same write as the
		 * envelope, saving a round trip per message; if its reply does
		 * not come, nothing was committed and we start over on a new
		 * connection. */
		c = cache;
		c.t = t;
		caps = cache_caps;
		cache.fd = -1;
		memset(&cache.in, 0, sizeof(cache.in));
		if (caps.pipelining) {
			reused = rset_pending = 1;
		} else if (send_all(&c, "RSET\r\n", 6, "RSET") == 0 && read_reply(&c, &r, "RSET") == 0 &&
		           r.code == 250) {
			reused = 1;
		} else {
			conn_close(&c);
			c.fd = -1;
		}
		if (reused) {
			str_copy(d->relay, c.name, sizeof(d->relay));
			log_debug("event=connection_reused relay=%s qid=%s", log_q(c.name), d->qid);
		}
	}
reconnect:
	if (!reused) {
		int opened = conn_open(&c, t->host, t->addr, t->port);
		str_copy(d->relay, c.name, sizeof(d->relay));
		if (opened == -1)
			goto next_host;
		c.timeout_ms = cfg->queue.connect_timeout * 1000 > c.timeout_ms ? c.timeout_ms
		                                                               : cfg->queue.connect_timeout * 1000;
		if (t->tls == RELAY_TLS_IMPLICIT && start_tls(&c, t->host) == -1)
			goto next_host;
		if (read_reply(&c, &r, "the banner") == -1)
			goto next_host;
		c.timeout_ms = cfg->queue.reply_timeout * 1000;
		if (r.code != 220) {
			str_fmt(c.err, sizeof(c.err), "%s greeted us with: %s", c.name, r.text);
			goto next_host;
		}
		if (ehlo(&c, &caps) == -1)
			goto next_host;
		if (t->tls == RELAY_TLS_REQUIRED && !caps.starttls) {
			str_fmt(c.err, sizeof(c.err), "%s does not offer STARTTLS, which relay.tls = "
			        "\"required\" needs", c.name);
			goto next_host;
		}
		if (c.tls == NULL && caps.starttls &&
		    (t->tls == RELAY_TLS_REQUIRED || t->tls == RELAY_TLS_OPPORTUNISTIC)) {
			if (send_all(&c, "STARTTLS\r\n", 10, "STARTTLS") == -1 ||
			    read_reply(&c, &r, "STARTTLS") == -1)
				goto next_host;
			if (r.code != 220) {
				str_fmt(c.err, sizeof(c.err), "%s said: %s (in reply to STARTTLS)", c.name, r.text);
				goto next_host;
			}
			if (start_tls(&c, t->host) == -1 || ehlo(&c, &caps) == -1) {
				/* Opportunistic TLS to an MX host: a failed handshake
				 * is retried in plain text on the next address. */
				goto next_host;
			}
		}
		if (t->relay && cfg->relay.username[0] && authenticate(&c, &caps) == -1)
			goto next_host;
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
	if (rset_pending)
		buf_appendf(&env, "RSET\r\n");
	/* relay.rewrite_sender: providers that want the login's own address;
	 * the null sender of a bounce stays null. */
	buf_appendf(&env, "MAIL FROM:<%s>",
	            t->relay && cfg->relay.rewrite_sender[0] && d->env->sender[0] ? cfg->relay.rewrite_sender
	                                                               : d->env->sender);
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
	int sent = send_all(&c, buf_head(&env), pipelining ? buf_used(&env) : mail_len, "MAIL FROM");
	buf_free(&env);
	if (rset_pending) {
		rset_pending = 0;
		if (sent == -1 || read_reply(&c, &r, "RSET") == -1 || r.code != 250) {
			/* The kept connection is gone (the server timed it out):
			 * nothing of this transaction counts; open a new one. */
			log_debug("event=connection_stale relay=%s qid=%s", log_q(c.name), d->qid);
			conn_close(&c);
			c.fd = -1;
			c.err[0] = '\0';
			reused = 0;
			goto reconnect;
		}
	}
	if (sent == -1)
		goto lost;
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
	if (!t->relay) {
		/* MX connections are not kept (reuse per destination is left
		 * for later): end the session politely. */
		c.timeout_ms = 2000;
		if (send_all(&c, "QUIT\r\n", 6, "QUIT") == 0)
			read_reply(&c, &r, "QUIT");
		conn_close(&c);
		return 0;
	}
	/* The session is between transactions: keep it for the next job. */
	smtp_idle_close();
	cache = c;
	cache_caps = caps;
	str_copy(cache_host, t->host, sizeof(cache_host));
	cache_port = t->port;
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
		struct smtp_target t = { .host = cfg->relay.hosts[h].host, .port = cfg->relay.hosts[h].port,
		                         .tls = cfg->relay.tls, .verify = cfg->relay.verify, .relay = 1 };
		if (smtp_attempt(d, &t) == 0)
			return;
	}
	/* Every host failed: defer with the last host's reason. */
	d->site_down = 1;
	for (size_t i = 0; i < d->n; i++)
		if (d->r[i].status == 0)
			d->r[i].status = 4;
}
