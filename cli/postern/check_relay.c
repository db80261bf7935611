/* check_relay - smarthost diagnostics for the postern CLI; see check_relay.h. */
#include "check_relay.h"

#include "base64.h"
#include "config.h"
#include "smtp_reply.h"
#include "str.h"
#include "tls.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#define RELAY_LINE_MAX 2048   /* bytes of one reply line we accept */
#define RELAY_PW_MAX 256      /* bytes of relay.password_file we read */

struct rconn {
	int fd;
	tls_conn *tls;
	int timeout_ms;
	char in[RELAY_LINE_MAX * 2];
	size_t have;
	char err[512];
};

static const char *const tls_names[] = { "none", "opportunistic", "required", "implicit" };

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void ok(const char *step, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void ok(const char *step, const char *fmt, ...)
{
	char text[1200];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	printf("  %-12s ok%s%s\n", step, text[0] ? ": " : "", text);
}

static int failed(const char *step, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int failed(const char *step, const char *fmt, ...)
{
	char text[1200];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	printf("  %-12s FAILED: %s\n", step, text);
	return -1;
}

static int conn_open(struct rconn *c, const char *host, int port, int tmo_s)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res, *ai;
	char portstr[16], why[300] = "no address";
	int rc;

	str_fmt(portstr, sizeof(portstr), "%d", port);
	if ((rc = getaddrinfo(host, portstr, &hints, &res)) != 0)
		return failed("connect", "cannot resolve %s: %s", host, gai_strerror(rc));
	for (ai = res; ai; ai = ai->ai_next) {
		char addr[NI_MAXHOST] = "?";
		getnameinfo(ai->ai_addr, ai->ai_addrlen, addr, sizeof(addr), NULL, 0, NI_NUMERICHOST);
		int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
		if (fd == -1) {
			str_fmt(why, sizeof(why), "socket: %s", strerror(errno));
			continue;
		}
		double t0 = now_s();
		int err = 0;
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == -1) {
			if (errno != EINPROGRESS) {
				err = errno;
			} else {
				struct pollfd p = { .fd = fd, .events = POLLOUT };
				socklen_t el = sizeof(err);
				if (poll(&p, 1, tmo_s * 1000) != 1)
					err = ETIMEDOUT;
				else
					getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el);
			}
		}
		if (err) {
			if (err == ETIMEDOUT)
				str_fmt(why, sizeof(why), "%s port %d: timeout after %ds", addr, port, tmo_s);
			else
				str_fmt(why, sizeof(why), "%s port %d: %s", addr, port, strerror(err));
			close(fd);
			continue;
		}
		c->fd = fd;
		ok("connect", "%s port %d (%.3fs)", addr, port, now_s() - t0);
		freeaddrinfo(res);
		return 0;
	}
	freeaddrinfo(res);
	return failed("connect", "%s", why);
}

static void conn_close(struct rconn *c)
{
	if (c->tls) {
		tls_shutdown(c->tls);
		tls_conn_free(c->tls);
		c->tls = NULL;
	}
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
}

static int send_all(struct rconn *c, const char *p, size_t n)
{
	double deadline = now_s() + c->timeout_ms / 1000.0;

	while (n > 0) {
		ssize_t w;
		int want = POLLOUT;
		if (c->tls) {
			w = tls_write(c->tls, p, n);
			if (w == TLS_WANT_READ || w == TLS_WANT_WRITE)
				want = w == TLS_WANT_READ ? POLLIN : POLLOUT;
			else if (w < 0) {
				str_copy(c->err, "TLS write failed", sizeof(c->err));
				return -1;
			}
		} else {
			w = write(c->fd, p, n);
			if (w == -1 && errno != EAGAIN && errno != EINTR) {
				str_fmt(c->err, sizeof(c->err), "write: %s", strerror(errno));
				return -1;
			}
		}
		if (w > 0) {
			p += w;
			n -= (size_t)w;
			continue;
		}
		int left = (int)((deadline - now_s()) * 1000);
		struct pollfd pf = { .fd = c->fd, .events = (short)want };
		if (left <= 0 || poll(&pf, 1, left) <= 0) {
			str_copy(c->err, "timeout while sending", sizeof(c->err));
			return -1;
		}
	}
	return 0;
}

/* One complete reply into r; -1 with c->err on timeout, close or junk. */
static int read_reply(struct rconn *c, struct smtp_reply *r)
{
	double deadline = now_s() + c->timeout_ms / 1000.0;

	smtp_reply_init(r);
	for (;;) {
		char *nl = memchr(c->in, '\n', c->have);
		if (nl) {
			size_t l = (size_t)(nl - c->in), used = l + 1;
			if (l > 0 && c->in[l - 1] == '\r')
				l--;
			int k = smtp_reply_line(r, c->in, l);
			memmove(c->in, c->in + used, c->have - used);
			c->have -= used;
			if (k == -1) {
				str_copy(c->err, "not an SMTP reply", sizeof(c->err));
				return -1;
			}
			if (k == 1)
				return 0;
			continue;
		}
		if (c->have >= RELAY_LINE_MAX) {
			str_fmt(c->err, sizeof(c->err), "reply line longer than %d bytes", RELAY_LINE_MAX);
			return -1;
		}
		ssize_t n;
		int want = POLLIN;
		if (c->tls) {
			n = tls_read(c->tls, c->in + c->have, sizeof(c->in) - c->have);
			if (n == TLS_WANT_READ || n == TLS_WANT_WRITE) {
				want = n == TLS_WANT_READ ? POLLIN : POLLOUT;
				n = -2;
			} else if (n == TLS_CLOSED) {
				n = 0;
			} else if (n < 0) {
				str_copy(c->err, "TLS read failed", sizeof(c->err));
				return -1;
			}
		} else {
			n = read(c->fd, c->in + c->have, sizeof(c->in) - c->have);
			if (n == -1 && (errno == EAGAIN || errno == EINTR))
				n = -2;
			else if (n == -1) {
				str_fmt(c->err, sizeof(c->err), "read: %s", strerror(errno));
				return -1;
			}
		}
		if (n == 0) {
			str_copy(c->err, "connection closed by the server", sizeof(c->err));
			return -1;
		}
		if (n > 0) {
			c->have += (size_t)n;
			continue;
		}
		int left = (int)((deadline - now_s()) * 1000);
		struct pollfd pf = { .fd = c->fd, .events = (short)want };
		if (left <= 0 || poll(&pf, 1, left) <= 0) {
			str_fmt(c->err, sizeof(c->err), "no reply within %ds", c->timeout_ms / 1000);
			return -1;
		}
	}
}

/* Send cmd and read the reply; -1 with c->err. */
static int command(struct rconn *c, const char *cmd, struct smtp_reply *r)
{
	if (send_all(c, cmd, strlen(cmd)) == -1 || read_reply(c, r) == -1)
		return -1;
	return 0;
}

struct caps {
	int starttls, plain, login, auth;
};

/* EHLO; print the capabilities (one reply line each, after the greeting). */
static int ehlo(struct rconn *c, const struct config *cfg, const char *step, struct caps *caps)
{
	struct smtp_reply r;
	char cmd[300];
	const char *arg;

	str_fmt(cmd, sizeof(cmd), "EHLO %s\r\n", cfg->hostname);
	if (command(c, cmd, &r) == -1)
		return failed(step, "%s", c->err);
	if (r.code != 250)
		return failed(step, "%s", r.text);
	/* r.text is "250-greeting / CAP / CAP ..." */
	const char *caplist = strstr(r.text, " / ");
	ok(step, "%s", caplist ? caplist + 3 : "(no extensions)");
	memset(caps, 0, sizeof(*caps));
	caps->starttls = smtp_reply_has_ext(&r, "STARTTLS", NULL);
	if (smtp_reply_has_ext(&r, "AUTH", &arg)) {
		char mechs[256];
		caps->auth = 1;
		str_copy(mechs, arg, sizeof(mechs));
		mechs[strcspn(mechs, "/")] = '\0';
		for (char *save = NULL, *m = strtok_r(mechs, " ", &save); m; m = strtok_r(NULL, " ", &save)) {
			if (str_casecmp(m, "PLAIN") == 0)
				caps->plain = 1;
			else if (str_casecmp(m, "LOGIN") == 0)
				caps->login = 1;
		}
	}
	return 0;
}

/* The handshake and what it showed; -1 if it failed or, with
 * relay.verify, the chain or host name did not verify (then nothing more,
 * least of all the password, is sent). */
static int handshake(struct rconn *c, const struct config *cfg, tls_ctx *ctx, const char *host)
{
	char err[256], subj[512], iss[512], exp[64], why[256];
	int r;

	c->have = 0;   /* nothing the server sent before the handshake is trusted */
	c->tls = tls_client_new(ctx, c->fd, host, cfg->relay.verify);
	if (c->tls == NULL)
		return failed("TLS", "cannot set up a TLS connection");
	for (;;) {
		r = tls_handshake(c->tls, err, sizeof(err));
		if (r == TLS_OK)
			break;
		if ((r == TLS_WANT_READ || r == TLS_WANT_WRITE) && tls_io_wait(c->fd, r, c->timeout_ms) == 0)
			continue;
		if (r != TLS_ERR)
			str_fmt(err, sizeof(err), "no handshake within %ds", c->timeout_ms / 1000);
		break;
	}
	if (r != TLS_OK)
		return failed("TLS", "handshake failed: %s", err);
	tls_peer_cert(c->tls, subj, sizeof(subj), iss, sizeof(iss), exp, sizeof(exp));
	ok("TLS", "%s %s", tls_protocol(c->tls), tls_cipher(c->tls));
	if (subj[0])
		printf("  %-12s subject %s; issuer %s; expires %s\n", "certificate", subj, iss, exp);
	int v = tls_verify_result(c->tls, why, sizeof(why));
	const char *against = cfg->relay.ca_file[0] ? cfg->relay.ca_file : "the system store";
	if (v) {
		ok("verify", "chain (%s) and host name %s", against, host);
		return 0;
	}
	if (cfg->relay.verify)
		return failed("verify", "%s (against %s, host name %s): deliverd would defer the mail", why,
		              against, host);
	ok("verify", "not required (relay.verify = false); it would fail: %s", why);
	return 0;
}

static int authenticate(struct rconn *c, const struct config *cfg, const struct caps *caps, const char *pw)
{
	struct smtp_reply r;
	char raw[600], enc[900], cmd[1000];
	size_t ul = strlen(cfg->relay.username), pl = strlen(pw);
	const char *mech = caps->plain ? "PLAIN" : "LOGIN";
	int rc = -1;

	if (!caps->plain && !caps->login)
		return failed("AUTH", caps->auth ? "the server offers neither AUTH PLAIN nor LOGIN"
		                                 : "the server offers no AUTH");
	if (caps->plain) {
		raw[0] = '\0';
		memcpy(raw + 1, cfg->relay.username, ul);
		raw[1 + ul] = '\0';
		memcpy(raw + 2 + ul, pw, pl);
		(void)base64_encode(raw, 2 + ul + pl, enc, sizeof(enc));   /* enc holds 4/3 of raw */
		str_fmt(cmd, sizeof(cmd), "AUTH PLAIN %s\r\n", enc);
		if (command(c, cmd, &r) == -1)
			goto io;
	} else {
		if (command(c, "AUTH LOGIN\r\n", &r) == -1)
			goto io;
		if (r.code == 334) {
			(void)base64_encode(cfg->relay.username, ul, enc, sizeof(enc));   /* enc holds 4/3 of raw */
			str_fmt(cmd, sizeof(cmd), "%s\r\n", enc);
			if (command(c, cmd, &r) == -1)
				goto io;
		}
		if (r.code == 334) {
			(void)base64_encode(pw, pl, enc, sizeof(enc));   /* enc holds 4/3 of raw */
			str_fmt(cmd, sizeof(cmd), "%s\r\n", enc);
			if (command(c, cmd, &r) == -1)
				goto io;
		}
	}
	if (r.code == 235) {
		ok("AUTH", "%s as %s: %s", mech, cfg->relay.username, r.text);
		rc = 0;
	} else if (r.code == 535) {
		failed("AUTH", "%s as %s: %s (the smarthost rejected the credentials: check relay.username "
		       "and relay.password_file)", mech, cfg->relay.username, r.text);
	} else {
		failed("AUTH", "%s as %s: %s", mech, cfg->relay.username, r.text);
	}
	goto out;
io:
	failed("AUTH", "%s", c->err);
out:
	explicit_bzero(raw, sizeof(raw));
	explicit_bzero(enc, sizeof(enc));
	explicit_bzero(cmd, sizeof(cmd));
	return rc;
}

/* Every step for one host; 0 if all passed. */
static int check_host(const struct config *cfg, const struct relay_host *h, tls_ctx *ctx, const char *pw,
                      const char *pwerr)
{
	struct rconn c = { .fd = -1 };
	struct smtp_reply r;
	struct caps caps;
	int mode = cfg->relay.tls, bad = 0;

	c.timeout_ms = cfg->queue.reply_timeout * 1000;
	printf("%s port %d (relay.tls = %s, verify = %s)\n", h->host, h->port, tls_names[mode],
	       cfg->relay.verify ? "true" : "false");
	if (conn_open(&c, h->host, h->port, cfg->queue.connect_timeout) == -1)
		return -1;
	if (mode == RELAY_TLS_IMPLICIT && handshake(&c, cfg, ctx, h->host) == -1)
		goto fail;
	if (read_reply(&c, &r) == -1) {
		failed("banner", "%s", c.err);
		goto fail;
	}
	if (r.code != 220) {
		failed("banner", "%s", r.text);
		goto fail;
	}
	ok("banner", "%s", r.text);
	if (ehlo(&c, cfg, "EHLO", &caps) == -1)
		goto fail;
	if (mode == RELAY_TLS_OPPORTUNISTIC || mode == RELAY_TLS_REQUIRED) {
		if (!caps.starttls) {
			if (mode == RELAY_TLS_REQUIRED) {
				failed("STARTTLS", "not offered, and relay.tls = \"required\": mail would be "
				       "deferred, never sent in plain text");
				goto fail;
			}
			printf("  %-12s not offered: mail would go in plain text (relay.tls = "
			       "\"opportunistic\")\n", "STARTTLS");
		} else {
			if (command(&c, "STARTTLS\r\n", &r) == -1) {
				failed("STARTTLS", "%s", c.err);
				goto fail;
			}
			if (r.code != 220) {
				failed("STARTTLS", "%s", r.text);
				goto fail;
			}
			ok("STARTTLS", "%s", r.text);
			if (handshake(&c, cfg, ctx, h->host) == -1)
				goto fail;
			if (ehlo(&c, cfg, "EHLO (TLS)", &caps) == -1)
				goto fail;
		}
	}
	if (cfg->relay.username[0]) {
		if (pwerr[0]) {
			failed("AUTH", "%s", pwerr);
			bad = 1;
		} else if (c.tls == NULL && mode != RELAY_TLS_NONE) {
			failed("AUTH", "no TLS: not sending the password in plain text (set relay.tls = "
			       "\"none\" to allow it)");
			bad = 1;
		} else if (authenticate(&c, cfg, &caps, pw) == -1) {
			bad = 1;
		}
	} else {
		printf("  %-12s not configured (no relay.username)\n", "AUTH");
	}
	if (command(&c, "QUIT\r\n", &r) == -1)
		failed("QUIT", "%s", c.err), bad = 1;
	else if (r.code != 221)
		failed("QUIT", "%s", r.text), bad = 1;
	else
		ok("QUIT", "%s", r.text);
	conn_close(&c);
	return bad ? -1 : 0;
fail:
	conn_close(&c);
	return -1;
}

/* Like deliverd: the first line of relay.password_file; refuse a file
 * others may read.  err filled ("" if ok). */
static void load_password(const struct config *cfg, char *pw, size_t len, char *err, size_t elen)
{
	const char *path = cfg->relay.password_file;
	struct stat st;
	ssize_t n;
	int fd;

	pw[0] = err[0] = '\0';
	if (cfg->relay.username[0] == '\0')
		return;
	if (path[0] == '\0') {
		str_copy(err, "relay.username is set but relay.password_file is not", elen);
		return;
	}
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd == -1) {
		str_fmt(err, elen, "cannot open relay.password_file %s: %s", path, strerror(errno));
		return;
	}
	if (fstat(fd, &st) == 0 && (st.st_mode & 0004)) {
		str_fmt(err, elen, "relay.password_file %s is readable by others (mode %04o); chmod 600 it "
		        "(deliverd refuses to start)", path, (unsigned)(st.st_mode & 07777));
		close(fd);
		return;
	}
	n = read(fd, pw, len - 1);
	close(fd);
	if (n < 0) {
		str_fmt(err, elen, "cannot read relay.password_file %s: %s", path, strerror(errno));
		pw[0] = '\0';
		return;
	}
	pw[n] = '\0';
	pw[strcspn(pw, "\r\n")] = '\0';
}

int check_relay_main(const char *conf_path)
{
	char err[1200], pw[RELAY_PW_MAX], pwerr[600];
	struct config *cfg = config_load(conf_path, err, sizeof(err));
	tls_ctx *ctx = NULL;
	size_t passed = 0;

	if (cfg == NULL) {
		fprintf(stderr, "postern: %s\n", err);
		return EX_CONFIG;
	}
	if (!cfg->relay.present || cfg->relay.nhosts == 0) {
		printf("no smarthost configured (relay.host is not set): mail goes directly to MX hosts\n");
		config_free(cfg);
		return 1;
	}
	load_password(cfg, pw, sizeof(pw), pwerr, sizeof(pwerr));
	if (cfg->relay.tls != RELAY_TLS_NONE) {
		/* Never fatal inside the handshake: handshake() judges the
		 * verification result itself, so that the certificate of a host
		 * that fails it can still be shown. */
		ctx = tls_client_ctx(cfg->relay.ca_file, 0, err, sizeof(err));
		if (ctx == NULL) {
			printf("TLS setup failed: %s\n", err);
			explicit_bzero(pw, sizeof(pw));
			config_free(cfg);
			return 1;
		}
	}
	for (size_t i = 0; i < cfg->relay.nhosts; i++) {
		const struct relay_host *h = &cfg->relay.hosts[i];
		int rc = check_host(cfg, h, ctx, pw, pwerr);
		printf("%s port %d: %s\n\n", h->host, h->port, rc == 0 ? "ok" : "FAILED");
		if (rc == 0)
			passed++;
	}
	explicit_bzero(pw, sizeof(pw));
	printf("%zu of %zu smarthost%s passed\n", passed, cfg->relay.nhosts, cfg->relay.nhosts == 1 ? "" : "s");
	int rc = passed == cfg->relay.nhosts ? 0 : 1;
	tls_ctx_free(ctx);
	config_free(cfg);
	return rc;
}
