/*
 * auth - SMTP AUTH (RFC 4954) with SASL PLAIN (RFC 4616) and LOGIN
 * (draft-murchison-sasl-login), for clients under TLS only.
 *
 * Users come from smtpd.auth_users: lines "name:$6$salt$hash" as made by
 * `openssl passwd -6` (or `postern passwd NAME`), checked with crypt(3).
 * The file is read before smtpd drops privileges, so it may be root-only;
 * its descriptor stays open, and a reload re-reads the path if it can or
 * the kept descriptor (same inode, e.g. after `postern passwd >> file`).
 *
 * Base64 is decoded strictly and within a bound the caller names: only the
 * RFC 4648 alphabet, length a multiple of 4, '=' only as the last one or
 * two characters, no bits left over (the Exim CVE-2018-6789 class was an
 * off-by-one in exactly this decoder).
 *
 * Brute force: a failed login is answered after AUTH_FAIL_DELAY_MS (a
 * timer; the loop keeps serving others), is logged with the client address
 * and the name tried (never the password), and after AUTH_FAIL_MAX
 * failures within AUTH_FAIL_WINDOW seconds the address is refused for
 * AUTH_LOCK_SECS: AUTH answers 421 and the connection is closed.
 */
#include "smtpd.h"
#include "base64.h"
#include "log.h"
#include "str.h"

#include <crypt.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define AUTH_FILE_MAX (1 << 20)   /* users file bound */
#define AUTH_NAME_MAX 255
#define AUTH_PASS_MAX 255
#define AUTH_DECODED_MAX 1024     /* authzid NUL authcid NUL passwd */
#define AUTH_TRACK 1024           /* addresses with recent failures */

struct user {
	char *name;
	char *hash;
};

static struct user *users;
static size_t nusers;
static int users_fd = -1;
static char users_path[CONFIG_PATH_MAX];

struct failrec {
	char ip[64];
	int count;
	time_t first, locked_until, last;
};
static struct failrec fails[AUTH_TRACK];

/* ---- base64 ---- */

static int b64val(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

int auth_b64_decode(const char *in, size_t inlen, unsigned char *out, size_t cap, size_t *outlen)
{
	size_t o = 0;

	*outlen = 0;
	if (inlen % 4 != 0)
		return -1;
	for (size_t i = 0; i < inlen; i += 4) {
		int v[4], pad = 0;
		for (int k = 0; k < 4; k++) {
			unsigned char c = (unsigned char)in[i + k];
			if (c == '=') {
				/* only in the last quantum, only at its end */
				if (i + 4 != inlen || k < 2)
					return -1;
				pad++;
				v[k] = 0;
				continue;
			}
			if (pad)
				return -1;   /* data after '=' */
			if ((v[k] = b64val(c)) < 0)
				return -1;
		}
		size_t nbytes = 3 - (size_t)pad;
		if (o + nbytes > cap)
			return -1;
		uint32_t q = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
		/* Non-canonical: bits below the padding must be zero. */
		if ((pad == 1 && (q & 0xff)) || (pad == 2 && (q & 0xffff)))
			return -1;
		out[o++] = (unsigned char)(q >> 16);
		if (nbytes > 1)
			out[o++] = (unsigned char)(q >> 8);
		if (nbytes > 2)
			out[o++] = (unsigned char)q;
	}
	*outlen = o;
	return 0;
}

int auth_b64_encode(const unsigned char *in, size_t n, char *out, size_t cap)
{
	return base64_encode(in, n, out, cap);
}

/* ---- users ---- */

static void users_clear(struct user *u, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(u[i].name);
		explicit_bzero(u[i].hash, strlen(u[i].hash));
		free(u[i].hash);
	}
	free(u);
}

/* Parse the users file from fd; -1 with a logged reason. */
static int users_parse(int fd, const char *path)
{
	char *data = xmalloc(AUTH_FILE_MAX + 1);
	size_t len = 0;
	struct user *nu = NULL;
	size_t nn = 0, lineno = 0;

	for (;;) {
		ssize_t r = pread(fd, data + len, AUTH_FILE_MAX + 1 - len, (off_t)len);
		if (r == -1 && errno == EINTR)
			continue;
		if (r == -1) {
			log_error("event=auth_users_error file=%s error=%s", log_q(path), log_q(strerror(errno)));
			free(data);
			return -1;
		}
		if (r == 0)
			break;
		len += (size_t)r;
		if (len > AUTH_FILE_MAX) {
			log_error("event=auth_users_error file=%s error=\"larger than %d bytes\"", log_q(path),
			          AUTH_FILE_MAX);
			free(data);
			return -1;
		}
	}
	data[len] = '\0';
	for (char *line = data, *next; line < data + len; line = next) {
		char *nl = memchr(line, '\n', (size_t)(data + len - line));
		next = nl ? nl + 1 : data + len;
		if (nl)
			*nl = '\0';
		lineno++;
		size_t l = strlen(line);
		if (l && line[l - 1] == '\r')
			line[--l] = '\0';
		if (l == 0 || line[0] == '#')
			continue;
		char *colon = strchr(line, ':');
		if (colon == NULL || colon == line || colon - line > AUTH_NAME_MAX || colon[1] != '$' ||
		    strchr(colon + 1, ':') != NULL) {
			log_warn("event=auth_users_bad_line file=%s line=%zu error=\"want name:$6$...\"",
			         log_q(path), lineno);
			continue;
		}
		*colon = '\0';
		nu = xrealloc(nu, (nn + 1) * sizeof(*nu));
		nu[nn].name = xstrdup(line);
		nu[nn].hash = xstrdup(colon + 1);
		nn++;
	}
	explicit_bzero(data, len);
	free(data);
	users_clear(users, nusers);
	users = nu;
	nusers = nn;
	log_info("event=auth_users_loaded file=%s users=%zu", log_q(path), nn);
	return 0;
}

int auth_users_load(const char *path)
{
	int fd;

	if (users_fd >= 0)
		close(users_fd);
	users_fd = -1;
	users_clear(users, nusers);
	users = NULL;
	nusers = 0;
	users_path[0] = '\0';
	if (path == NULL || *path == '\0')
		return 0;
	str_copy(users_path, path, sizeof(users_path));
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd == -1) {
		log_error("event=auth_users_error file=%s error=%s", log_q(path), log_q(strerror(errno)));
		return -1;
	}
	users_fd = fd;
	return users_parse(fd, path);
}

int auth_users_from_fd(int fd, const char *path)
{
	if (users_parse(fd, path) == -1) {
		close(fd);
		return -1;
	}
	if (users_fd >= 0)
		close(users_fd);
	users_fd = fd;
	str_copy(users_path, path, sizeof(users_path));
	return 0;
}

int auth_users_reload(const char *path)
{
	int fd;

	if (path == NULL || *path == '\0') {
		if (users_path[0])
			return auth_users_load(NULL);
		return 0;
	}
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd >= 0)
		return auth_users_from_fd(fd, path);
	if (users_fd >= 0 && strcmp(path, users_path) == 0) {
		/* Unprivileged now: re-read the file opened as root. */
		log_info("event=auth_users_reread file=%s note=\"cannot reopen (%s); re-reading the "
		         "descriptor opened at start\"", log_q(path), strerror(errno));
		return users_parse(users_fd, path);
	}
	log_error("event=auth_users_error file=%s error=%s note=\"restart smtpd to read a new file as "
	          "root\"", log_q(path), log_q(strerror(errno)));
	return -1;
}

int auth_enabled(void)
{
	return users_path[0] != '\0';
}

static int ct_equal(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	unsigned char d = la != lb;

	for (size_t i = 0; i < la && i < lb; i++)
		d |= (unsigned char)(a[i] ^ b[i]);
	return d == 0;
}

int auth_verify(const char *name, const char *pass)
{
	static struct crypt_data *cd;
	/* A user that does not exist costs the same crypt() as one that does. */
	static const char dummy[] = "$6$postern.dummy$Sx6O2mYxN7dN4k3Wj1QqKk9k3k2GjH0mB2kG5qW3vQ7mJ8lT0bR1sU4yV6zX9aC2dE5fH8iK1nP3rS6uW9xZ0a";
	const char *hash = dummy;
	int found = 0;

	if (cd == NULL)
		cd = xcalloc(1, sizeof(*cd));
	for (size_t i = 0; i < nusers; i++)
		if (strcmp(users[i].name, name) == 0) {
			hash = users[i].hash;
			found = 1;
			break;
		}
	const char *out = crypt_r(pass, hash, cd);
	int ok = found && out != NULL && out[0] != '*' && ct_equal(out, hash);
	explicit_bzero(cd, sizeof(*cd));
	return ok;
}

/* ---- failures and lockout ---- */

static struct failrec *fail_find(const char *ip, int create)
{
	struct failrec *oldest = &fails[0];

	for (size_t i = 0; i < AUTH_TRACK; i++) {
		if (fails[i].ip[0] && strcmp(fails[i].ip, ip) == 0)
			return &fails[i];
		if (fails[i].last < oldest->last)
			oldest = &fails[i];
	}
	if (!create)
		return NULL;
	memset(oldest, 0, sizeof(*oldest));
	str_copy(oldest->ip, ip, sizeof(oldest->ip));
	return oldest;
}

int auth_locked(const char *ip)
{
	struct failrec *f = fail_find(ip, 0);

	return f && f->locked_until > time(NULL);
}

int auth_failed(const char *ip)
{
	struct failrec *f = fail_find(ip, 1);
	time_t now = time(NULL);

	if (now - f->first > AUTH_FAIL_WINDOW) {
		f->count = 0;
		f->first = now;
	}
	f->count++;
	f->last = now;
	if (f->count >= AUTH_FAIL_MAX) {
		f->locked_until = now + AUTH_LOCK_SECS;
		log_warn("event=auth_locked client=%s failures=%d seconds=%d", ip, f->count, AUTH_LOCK_SECS);
	}
	return f->count;
}

void auth_succeeded(const char *ip)
{
	struct failrec *f = fail_find(ip, 0);

	if (f)
		memset(f, 0, sizeof(*f));
}

/* ---- the SASL exchange ---- */

enum { STEP_NONE = 0, STEP_PLAIN, STEP_LOGIN_USER, STEP_LOGIN_PASS };

static void finish(struct session *s, const char *mech, const char *name, const char *pass)
{
	int ok = auth_verify(name, pass);

	s->auth_step = STEP_NONE;
	if (ok) {
		auth_succeeded(s->ip);
		str_copy(s->auth_user, name, sizeof(s->auth_user));
		log_info("event=auth client=%s user=%s mech=%s", s->ip, log_q(name), mech);
		session_reply(s, "235 2.7.0 Authentication successful");
		return;
	}
	int n = auth_failed(s->ip);
	log_warn("event=auth_failed client=%s user=%s mech=%s failures=%d", s->ip, log_q(name), mech, n);
	if (n >= AUTH_FAIL_MAX)
		session_delay(s, AUTH_FAIL_DELAY_MS,
		              "421 4.7.0 Too many failed logins from your address; try again later", 1);
	else
		session_delay(s, AUTH_FAIL_DELAY_MS, "535 5.7.8 Authentication credentials invalid", 0);
}

static void cancel(struct session *s, const char *why)
{
	s->auth_step = STEP_NONE;
	explicit_bzero(s->auth_login, sizeof(s->auth_login));
	session_reply(s, "%s", why);
}

static void plain(struct session *s, const char *b64, size_t len)
{
	unsigned char dec[AUTH_DECODED_MAX + 1];
	size_t n;

	if (auth_b64_decode(b64, len, dec, AUTH_DECODED_MAX, &n) == -1) {
		cancel(s, "501 5.5.2 Cannot decode the response (base64)");
		return;
	}
	dec[n] = '\0';
	/* authzid NUL authcid NUL passwd; no NUL inside any of them */
	unsigned char *z1 = memchr(dec, '\0', n);
	unsigned char *z2 = z1 ? memchr(z1 + 1, '\0', n - (size_t)(z1 + 1 - dec)) : NULL;
	if (z1 == NULL || z2 == NULL || memchr(z2 + 1, '\0', n - (size_t)(z2 + 1 - dec)) != NULL) {
		explicit_bzero(dec, sizeof(dec));
		cancel(s, "501 5.5.2 Malformed PLAIN response");
		return;
	}
	const char *authz = (const char *)dec, *user = (const char *)z1 + 1, *pass = (const char *)z2 + 1;
	if (*user == '\0' || strlen(user) > AUTH_NAME_MAX || strlen(pass) > AUTH_PASS_MAX ||
	    (*authz && strcmp(authz, user) != 0)) {
		explicit_bzero(dec, sizeof(dec));
		s->auth_step = STEP_NONE;
		log_warn("event=auth_failed client=%s user=%s mech=PLAIN reason=\"bad authzid or length\"",
		         s->ip, log_q(user));
		auth_failed(s->ip);
		session_delay(s, AUTH_FAIL_DELAY_MS, "535 5.7.8 Authentication credentials invalid", 0);
		return;
	}
	finish(s, "PLAIN", user, pass);
	explicit_bzero(dec, sizeof(dec));
}

/* A LOGIN step: the user name, then the password. */
static void login(struct session *s, const char *b64, size_t len)
{
	unsigned char dec[AUTH_NAME_MAX + 1];
	size_t n;

	if (auth_b64_decode(b64, len, dec, AUTH_NAME_MAX, &n) == -1 || memchr(dec, '\0', n) != NULL) {
		explicit_bzero(dec, sizeof(dec));
		cancel(s, "501 5.5.2 Cannot decode the response (base64)");
		return;
	}
	dec[n] = '\0';
	if (s->auth_step == STEP_LOGIN_USER) {
		if (n == 0) {
			cancel(s, "501 5.5.2 Empty user name");
			return;
		}
		str_copy(s->auth_login, (const char *)dec, sizeof(s->auth_login));
		s->auth_step = STEP_LOGIN_PASS;
		session_reply(s, "334 UGFzc3dvcmQ6");   /* "Password:" */
		return;
	}
	char name[sizeof(s->auth_login)];
	str_copy(name, s->auth_login, sizeof(name));
	explicit_bzero(s->auth_login, sizeof(s->auth_login));
	finish(s, "LOGIN", name, (const char *)dec);
	explicit_bzero(dec, sizeof(dec));
}

void auth_start(struct session *s, char *arg)
{
	char *init;

	if (!auth_enabled()) {
		session_reply(s, "502 5.5.1 Error: authentication not enabled");
		return;
	}
	if (s->tls_state != SESSION_TLS_UP) {
		session_reply(s, "538 5.7.11 Encryption required for requested authentication mechanism");
		return;
	}
	if (s->state == SS_GREET) {
		session_reply(s, "503 5.5.1 Error: send EHLO first");
		return;
	}
	if (s->auth_user[0]) {
		session_reply(s, "503 5.5.1 Error: already authenticated");
		return;
	}
	if (s->state != SS_READY) {
		session_reply(s, "503 5.5.1 Error: AUTH not allowed during a mail transaction");
		return;
	}
	if (auth_locked(s->ip)) {
		log_warn("event=auth_refused client=%s reason=\"too many failed logins\"", s->ip);
		session_reply(s, "421 4.7.0 Too many failed logins from your address; try again later");
		s->state = SS_CLOSING;
		return;
	}
	init = strchr(arg, ' ');
	if (init) {
		*init++ = '\0';
		if (strchr(init, ' ')) {
			session_reply(s, "501 5.5.4 Syntax: AUTH mechanism [initial-response]");
			return;
		}
	}
	if (str_casecmp(arg, "PLAIN") == 0) {
		s->auth_step = STEP_PLAIN;
		if (init == NULL) {
			session_reply(s, "334 ");
			return;
		}
		/* "=" is an empty initial response (RFC 4954 4) */
		plain(s, init, strcmp(init, "=") == 0 ? 0 : strlen(init));
		return;
	}
	if (str_casecmp(arg, "LOGIN") == 0) {
		s->auth_step = STEP_LOGIN_USER;
		if (init == NULL) {
			session_reply(s, "334 VXNlcm5hbWU6");   /* "Username:" */
			return;
		}
		login(s, init, strlen(init));
		return;
	}
	session_reply(s, "504 5.5.4 Unrecognized authentication mechanism");
}

void auth_response(struct session *s, const char *line, size_t len)
{
	if (len == 1 && line[0] == '*') {
		cancel(s, "501 5.0.0 Authentication cancelled");
		return;
	}
	if (s->auth_step == STEP_PLAIN)
		plain(s, line, len);
	else
		login(s, line, len);
}
