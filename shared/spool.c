#include "spool.h"
#include "strpool.h"
#include "log.h"
#include "str.h"

#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define TRAILER "POSTERN-END "
#define MSG_MAGIC "POSTERN-QUEUE 1\n"
#define STATE_MAGIC "POSTERN-STATE 1\n"

static const char *const dirs[] = { SPOOL_TMP, SPOOL_INCOMING, SPOOL_QUEUE, SPOOL_STATE,
                                    SPOOL_CORRUPT, SPOOL_PRIVATE, NULL };

int spool_qid_valid(const char *s)
{
	size_t n = 0;

	for (; s[n]; n++)
		if (!((s[n] >= '0' && s[n] <= '9') || (s[n] >= 'A' && s[n] <= 'F')))
			return 0;
	return n >= QID_MIN && n < QID_MAX;
}

const char *spool_rcpt_state_name(int st)
{
	static const char *n[] = { "pending", "deferred", "delivered", "bounced" };
	return (st >= 0 && st <= 3) ? n[st] : "unknown";
}

static int parse_rcpt_state(const char *s)
{
	for (int i = 0; i <= 3; i++)
		if (strcmp(s, spool_rcpt_state_name(i)) == 0)
			return i;
	return -1;
}

int spool_init(const char *spool_dir, uid_t uid, gid_t gid, char *err, size_t errlen)
{
	char path[1200];

	if (mkdir(spool_dir, 0755) == -1 && errno != EEXIST) {
		str_fmt(err, errlen, "mkdir %s: %s", spool_dir, strerror(errno));
		return -1;
	}
	for (int i = 0; dirs[i]; i++) {
		str_fmt(path, sizeof(path), "%s/%s", spool_dir, dirs[i]);
		if (mkdir(path, 0700) == -1 && errno != EEXIST) {
			str_fmt(err, errlen, "mkdir %s: %s", path, strerror(errno));
			return -1;
		}
		if (geteuid() == 0 && chown(path, uid, gid) == -1) {
			str_fmt(err, errlen, "chown %s: %s", path, strerror(errno));
			return -1;
		}
		if (chmod(path, 0700) == -1) {
			str_fmt(err, errlen, "chmod %s: %s", path, strerror(errno));
			return -1;
		}
	}
	/* drop/ (S0): every local user may create files, none may list them. */
	str_fmt(path, sizeof(path), "%s/%s", spool_dir, SPOOL_DROP);
	if (mkdir(path, SPOOL_DROP_MODE) == -1 && errno != EEXIST) {
		str_fmt(err, errlen, "mkdir %s: %s", path, strerror(errno));
		return -1;
	}
	if (geteuid() == 0 && chown(path, uid, gid) == -1) {
		str_fmt(err, errlen, "chown %s: %s", path, strerror(errno));
		return -1;
	}
	if (chmod(path, SPOOL_DROP_MODE) == -1) {
		str_fmt(err, errlen, "chmod %s: %s", path, strerror(errno));
		return -1;
	}
	return 0;
}

int spool_fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int r;

	if (fd == -1)
		return -1;
	r = fsync(fd);
	close(fd);
	return r;
}

int spool_purge_tmp(void)
{
	DIR *d = opendir(SPOOL_TMP);
	struct dirent *de;
	int n = 0;

	if (d == NULL)
		return -1;
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		if (unlinkat(dirfd(d), de->d_name, 0) == 0)
			n++;
	}
	closedir(d);
	return n;
}

/* --- T1 --- */

static void make_qid(char *out, size_t len)
{
	static unsigned counter;
	struct timeval tv;

	gettimeofday(&tv, NULL);
	str_fmt(out, len, "%08llX%05lX%X%02X", (unsigned long long)tv.tv_sec,
	        (unsigned long)tv.tv_usec, (unsigned)getpid(), counter++ & 0xff);
}

int spool_submit_open(struct spool_writer *w)
{
	char path[64];

	w->fd = -1;
	w->failed = 0;
	w->err = 0;
	w->wlen = 0;
	w->data_len = 0;
	for (int tries = 0; tries < 300; tries++) {
		make_qid(w->qid, sizeof(w->qid));
		str_fmt(path, sizeof(path), SPOOL_TMP "/%s", w->qid);
		w->fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
		if (w->fd >= 0)
			return 0;
		if (errno != EEXIST)
			return -1;
	}
	errno = EEXIST;
	return -1;
}

static int wflush(struct spool_writer *w)
{
	size_t off = 0;

	while (off < w->wlen) {
		ssize_t r = write(w->fd, w->wbuf + off, w->wlen - off);
		if (r == -1 && errno == EINTR)
			continue;
		if (r <= 0) {
			w->failed = 1;
			w->err = r == 0 ? EIO : errno;
			w->wlen = 0;
			return -1;
		}
		off += (size_t)r;
	}
	w->wlen = 0;
	return 0;
}

static int wput(struct spool_writer *w, const void *p, size_t n)
{
	if (w->failed)
		return -1;
	if (n > sizeof(w->wbuf) - w->wlen && wflush(w) == -1)
		return -1;
	if (n > sizeof(w->wbuf)) {
		size_t off = 0;
		while (off < n) {
			ssize_t r = write(w->fd, (const char *)p + off, n - off);
			if (r == -1 && errno == EINTR)
				continue;
			if (r <= 0) {
				w->failed = 1;
				w->err = r == 0 ? EIO : errno;
				return -1;
			}
			off += (size_t)r;
		}
		return 0;
	}
	memcpy(w->wbuf + w->wlen, p, n);
	w->wlen += n;
	return 0;
}

static int wputf(struct spool_writer *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int wputf(struct spool_writer *w, const char *fmt, ...)
{
	char tmp[1024];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(tmp)) {
		w->failed = 1;
		w->err = ENAMETOOLONG;
		return -1;
	}
	return wput(w, tmp, (size_t)n);
}

/* Header values must never carry a line break: that would forge records
 * (Exim "21Nails").  Callers validate, this is the last line of defence. */
static int clean(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return 0;
	return 1;
}

int spool_submit_header(struct spool_writer *w, const struct spool_env *env)
{
	if (!clean(env->origin) || !clean(env->client) || !clean(env->helo) || !clean(env->proto) ||
	    !clean(env->body) || !clean(env->auth) || !clean(env->sender)) {
		w->failed = 1;
		w->err = EINVAL;
		return -1;
	}
	wputf(w, MSG_MAGIC "qid=%s\narrival=%lld\norigin=%s\nclient=%s\nhelo=%s\nproto=%s\nbody=%s\n"
	         "smtputf8=%d\nauth=%s\nsender=%s\n",
	      w->qid, (long long)env->arrival, env->origin, env->client, env->helo, env->proto,
	      env->body, env->smtputf8 ? 1 : 0, env->auth, env->sender);
	for (size_t i = 0; i < env->nrcpt; i++) {
		if (!clean(env->rcpt[i])) {
			w->failed = 1;
			w->err = EINVAL;
			return -1;
		}
		wputf(w, "rcpt=%s\n", env->rcpt[i]);
	}
	return wput(w, "\n", 1);
}

int spool_submit_write(struct spool_writer *w, const void *p, size_t n)
{
	w->data_len += n;
	return wput(w, p, n);
}

/* Trailer, flush, optionally fsync, close (unless keep), rename tmp/Q ->
 * incoming/Q. */
static int submit_close(struct spool_writer *w, int sync, int keep)
{
	char from[64], to[64];

	wputf(w, TRAILER "%llu\n", (unsigned long long)w->data_len);
	if (w->failed || wflush(w) == -1) {
		errno = w->err;
		return -1;
	}
	if (sync && fsync(w->fd) == -1) {
		w->err = errno;
		return -1;
	}
	if (!keep) {
		if (close(w->fd) == -1) {
			w->fd = -1;
			w->err = errno;
			return -1;
		}
		w->fd = -1;
	}
	str_fmt(from, sizeof(from), SPOOL_TMP "/%s", w->qid);
	str_fmt(to, sizeof(to), SPOOL_INCOMING "/%s", w->qid);
	if (rename(from, to) == -1) {
		w->err = errno;
		return -1;
	}
	return 0;
}

int spool_submit_commit(struct spool_writer *w)
{
	if (submit_close(w, 1, 0) == -1)
		return -1;
	if (spool_fsync_dir(SPOOL_INCOMING) == -1) {
		/* The rename may not be durable: take it back so the client's
		 * 451 is true.  If the unlink fails too, queued may deliver a
		 * message the client will retry: a duplicate, never a loss. */
		w->err = errno;
		spool_submit_withdraw(w->qid);
		errno = w->err;
		return -1;
	}
	return 0;
}

int spool_submit_finish(struct spool_writer *w)
{
	return submit_close(w, 0, 1);
}

void spool_submit_withdraw(const char *qid)
{
	char path[64];

	str_fmt(path, sizeof(path), SPOOL_INCOMING "/%s", qid);
	unlink(path);
}

void spool_submit_abort(struct spool_writer *w)
{
	char path[64];

	if (w->fd >= 0)
		close(w->fd);
	w->fd = -1;
	if (w->qid[0]) {
		str_fmt(path, sizeof(path), SPOOL_TMP "/%s", w->qid);
		unlink(path);
	}
}

/* --- reading --- */

void spool_env_free(struct spool_env *env)
{
	for (size_t i = 0; i < env->nrcpt; i++)
		free(env->rcpt[i]);
	free(env->rcpt);
	env->rcpt = NULL;
	env->nrcpt = 0;
}

static int set_field(char *dst, size_t size, const char *v)
{
	return str_copy(dst, v, size);
}

int spool_msg_parse(int fd, struct spool_env *env, char *err, size_t errlen)
{
	struct stat sb;
	char *hdr = NULL;
	char tail[64];
	size_t hl, cap;
	ssize_t r;
	int seen_qid = 0;

	memset(env, 0, sizeof(*env));
	if (fstat(fd, &sb) == -1) {
		str_fmt(err, errlen, "fstat: %s", strerror(errno));
		return -1;
	}
	cap = (size_t)sb.st_size < SPOOL_HDR_MAX ? (size_t)sb.st_size : SPOOL_HDR_MAX;
	hdr = xmalloc(cap + 1);
	for (hl = 0; hl < cap;) {
		r = pread(fd, hdr + hl, cap - hl, (off_t)hl);
		if (r == -1 && errno == EINTR)
			continue;
		if (r == -1) {
			str_fmt(err, errlen, "read: %s", strerror(errno));
			goto fail;
		}
		if (r == 0)
			break;
		hl += (size_t)r;
	}
	hdr[hl] = '\0';
	if (hl < sizeof(MSG_MAGIC) - 1 || memcmp(hdr, MSG_MAGIC, sizeof(MSG_MAGIC) - 1) != 0) {
		str_fmt(err, errlen, "bad magic (not a postern queue file, or wrong version)");
		goto fail;
	}
	char *p = hdr + sizeof(MSG_MAGIC) - 1;
	for (;;) {
		char *nl = memchr(p, '\n', (size_t)(hdr + hl - p));
		char *eq;
		if (nl == NULL) {
			str_fmt(err, errlen, "header not terminated");
			goto fail;
		}
		if (nl == p) {
			p = nl + 1;
			break;
		}
		/* A NUL would end the C string early and hide the rest of the line. */
		if (memchr(p, '\0', (size_t)(nl - p)) != NULL) {
			str_fmt(err, errlen, "control byte in header");
			goto fail;
		}
		*nl = '\0';
		for (char *q = p; *q; q++)
			if ((unsigned char)*q < 0x20 || *q == 0x7f) {
				str_fmt(err, errlen, "control byte in header");
				goto fail;
			}
		if ((eq = strchr(p, '=')) == NULL) {
			str_fmt(err, errlen, "header line without '='");
			goto fail;
		}
		*eq++ = '\0';
		int bad = 0;
		if (strcmp(p, "qid") == 0) {
			bad = set_field(env->qid, sizeof(env->qid), eq) || !spool_qid_valid(env->qid);
			seen_qid = 1;
		} else if (strcmp(p, "arrival") == 0) {
			uint64_t v;
			bad = str_to_u64(eq, 0, INT64_MAX, &v);
			env->arrival = (int64_t)v;
		} else if (strcmp(p, "origin") == 0) {
			bad = set_field(env->origin, sizeof(env->origin), eq);
		} else if (strcmp(p, "client") == 0) {
			bad = set_field(env->client, sizeof(env->client), eq);
		} else if (strcmp(p, "helo") == 0) {
			bad = set_field(env->helo, sizeof(env->helo), eq);
		} else if (strcmp(p, "proto") == 0) {
			bad = set_field(env->proto, sizeof(env->proto), eq);
		} else if (strcmp(p, "body") == 0) {
			bad = set_field(env->body, sizeof(env->body), eq);
		} else if (strcmp(p, "smtputf8") == 0) {
			uint64_t v;
			bad = str_to_u64(eq, 0, 1, &v);
			env->smtputf8 = (int)v;
		} else if (strcmp(p, "auth") == 0) {
			bad = set_field(env->auth, sizeof(env->auth), eq);
		} else if (strcmp(p, "sender") == 0) {
			struct addr a;
			const char *why;
			if (*eq && addr_parse_mailbox(eq, ADDR_UTF8 | ADDR_POSTMASTER_OK, &a, &why) == -1) {
				str_fmt(err, errlen, "bad sender: %s", why);
				goto fail;
			}
			bad = set_field(env->sender, sizeof(env->sender), eq);
		} else if (strcmp(p, "rcpt") == 0) {
			struct addr a;
			const char *why;
			if (addr_parse_mailbox(eq, ADDR_UTF8 | ADDR_POSTMASTER_OK, &a, &why) == -1) {
				str_fmt(err, errlen, "bad recipient #%zu: %s", env->nrcpt, why);
				goto fail;
			}
			if (env->nrcpt >= SPOOL_RCPT_MAX) {
				str_fmt(err, errlen, "too many recipients");
				goto fail;
			}
			env->rcpt = xrealloc(env->rcpt, (env->nrcpt + 1) * sizeof(char *));
			env->rcpt[env->nrcpt++] = xstrdup(eq);
		} else {
			/* Unknown keys from a newer version are tolerated. */
		}
		if (bad) {
			str_fmt(err, errlen, "bad value for '%s'", p);
			goto fail;
		}
		p = nl + 1;
	}
	if (!seen_qid || env->nrcpt == 0) {
		str_fmt(err, errlen, "header lacks %s", seen_qid ? "recipients" : "qid");
		goto fail;
	}
	env->data_off = (uint64_t)(p - hdr);
	free(hdr);
	hdr = NULL;

	/* Trailer: the last line must be "POSTERN-END <n>" with n matching. */
	size_t tl = (size_t)sb.st_size - env->data_off < sizeof(tail) - 1 ?
	                (size_t)sb.st_size - (size_t)env->data_off : sizeof(tail) - 1;
	off_t toff = sb.st_size - (off_t)tl;
	r = pread(fd, tail, tl, toff);
	if (r != (ssize_t)tl || tl < sizeof(TRAILER) + 1 || tail[tl - 1] != '\n') {
		str_fmt(err, errlen, "torn file: end marker missing");
		goto fail;
	}
	tail[tl - 1] = '\0';
	/* The exact length check below rejects a marker-lookalike in the data. */
	char *last = NULL;
	for (size_t i = tl - 1; i-- > 0;)
		if (strncmp(tail + i, TRAILER, sizeof(TRAILER) - 1) == 0) {
			last = tail + i;
			break;
		}
	uint64_t dl;
	if (last == NULL || strncmp(last, TRAILER, sizeof(TRAILER) - 1) != 0 ||
	    str_to_u64(last + sizeof(TRAILER) - 1, 0, UINT64_MAX, &dl) == -1) {
		str_fmt(err, errlen, "torn file: end marker missing");
		goto fail;
	}
	uint64_t trailer_len = strlen(last) + 1;
	if (env->data_off + dl + trailer_len != (uint64_t)sb.st_size) {
		str_fmt(err, errlen, "torn file: data length %llu does not match the file",
		        (unsigned long long)dl);
		goto fail;
	}
	env->data_len = dl;
	return 0;
fail:
	free(hdr);
	spool_env_free(env);
	return -1;
}

int spool_msg_open(const char *dir, const char *qid, struct spool_env *env, int *corrupt,
                   char *err, size_t errlen)
{
	char path[64];
	int fd;

	*corrupt = 0;
	if (!spool_qid_valid(qid)) {
		str_fmt(err, errlen, "invalid queue id");
		return -1;
	}
	str_fmt(path, sizeof(path), "%s/%s", dir, qid);
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd == -1) {
		str_fmt(err, errlen, "open %s: %s", path, strerror(errno));
		return -1;
	}
	if (spool_msg_parse(fd, env, err, errlen) == -1) {
		*corrupt = 1;
		close(fd);
		return -1;
	}
	if (strcmp(env->qid, qid) != 0) {
		str_fmt(err, errlen, "file %s names queue id %s", path, env->qid);
		*corrupt = 1;
		spool_env_free(env);
		close(fd);
		return -1;
	}
	return fd;
}

/* --- state --- */

void spool_state_init(struct spool_state *st, const char *qid, size_t nrcpt)
{
	memset(st, 0, sizeof(*st));
	str_copy(st->qid, qid, sizeof(st->qid));
	st->nrcpt = nrcpt;
	st->r = xcalloc(nrcpt ? nrcpt : 1, sizeof(*st->r));
	for (size_t i = 0; i < nrcpt; i++)
		st->r[i].error = strpool_get("", 0);
}

void spool_rcpt_set_error(struct spool_rcpt_state *r, const char *text)
{
	const char *old = r->error;
	r->error = strpool_get(text, SPOOL_ERR_MAX);
	strpool_put(old);
}

void spool_state_free(struct spool_state *st)
{
	for (size_t i = 0; st->r && i < st->nrcpt; i++)
		strpool_put(st->r[i].error);
	free(st->r);
	st->r = NULL;
	st->nrcpt = 0;
}

int spool_state_write(const struct spool_state *st, int sync)
{
	char tmp[64], dst[64];
	struct spool_writer w;
	int e;

	memset(&w, 0, sizeof(w));
	str_copy(w.qid, st->qid, sizeof(w.qid));
	str_fmt(tmp, sizeof(tmp), SPOOL_TMP "/%s.state", st->qid);
	str_fmt(dst, sizeof(dst), SPOOL_STATE "/%s", st->qid);
	w.fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (w.fd == -1)
		return -1;
	wputf(&w, STATE_MAGIC "qid=%s\nattempts=%u\nnext=%lld\nwarned=%d\nheld=%d\n", st->qid,
	      st->attempts, (long long)st->next, st->warned, st->held);
	for (size_t i = 0; i < st->nrcpt; i++) {
		const struct spool_rcpt_state *r = &st->r[i];
		char esc[SPOOL_ERR_MAX + 1];
		size_t k = 0;
		wputf(&w, "r=%zu %s %u %lld\n", i, spool_rcpt_state_name(r->state), r->attempts,
		      (long long)r->last);
		/* Errors come from remote servers: keep printable ASCII only. */
		for (const char *p = r->error; *p && k < SPOOL_ERR_MAX; p++)
			esc[k++] = ((unsigned char)*p >= 0x20 && (unsigned char)*p < 0x7f) ? *p : '?';
		esc[k] = '\0';
		if (k)
			wputf(&w, "e=%zu %s\n", i, esc);
		if (r->notified)
			wputf(&w, "n=%zu\n", i);
	}
	wput(&w, "POSTERN-END\n", 12);
	if (w.failed || wflush(&w) == -1 || (sync && fsync(w.fd) == -1)) {
		e = w.failed ? w.err : errno;
		close(w.fd);
		unlink(tmp);
		errno = e;
		return -1;
	}
	if (close(w.fd) == -1 || rename(tmp, dst) == -1) {
		e = errno;
		unlink(tmp);
		errno = e;
		return -1;
	}
	return sync ? spool_fsync_dir(SPOOL_STATE) : 0;
}

int spool_state_read(const char *qid, size_t nrcpt, struct spool_state *st, int *missing,
                     char *err, size_t errlen)
{
	char path[64], buf[8192];
	FILE *f;
	int ended = 0;

	*missing = 0;
	spool_state_init(st, qid, nrcpt);
	str_fmt(path, sizeof(path), SPOOL_STATE "/%s", qid);
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd == -1) {
		if (errno == ENOENT)
			*missing = 1;
		str_fmt(err, errlen, "open %s: %s", path, strerror(errno));
		return -1;
	}
	f = fdopen(fd, "r");
	if (f == NULL) {
		close(fd);
		str_fmt(err, errlen, "fdopen: %s", strerror(errno));
		return -1;
	}
	if (fgets(buf, sizeof(buf), f) == NULL || strcmp(buf, STATE_MAGIC) != 0) {
		str_fmt(err, errlen, "%s: bad magic", path);
		goto fail;
	}
	while (fgets(buf, sizeof(buf), f) != NULL) {
		size_t n = strlen(buf);
		uint64_t v, idx;
		if (n == 0 || buf[n - 1] != '\n') {
			str_fmt(err, errlen, "%s: line too long or torn", path);
			goto fail;
		}
		buf[--n] = '\0';
		for (size_t k = 0; k < n; k++)
			if ((unsigned char)buf[k] < 0x20 || buf[k] == 0x7f) {
				str_fmt(err, errlen, "%s: control byte in line", path);
				goto fail;
			}
		if (strcmp(buf, "POSTERN-END") == 0) {
			ended = 1;
			break;
		}
		char *eq = strchr(buf, '=');
		if (eq == NULL) {
			str_fmt(err, errlen, "%s: line without '='", path);
			goto fail;
		}
		*eq++ = '\0';
		if (strcmp(buf, "qid") == 0) {
			if (strcmp(eq, qid) != 0) {
				str_fmt(err, errlen, "%s: names queue id %s", path, eq);
				goto fail;
			}
		} else if (strcmp(buf, "attempts") == 0 && str_to_u64(eq, 0, UINT32_MAX, &v) == 0) {
			st->attempts = (uint32_t)v;
		} else if (strcmp(buf, "next") == 0 && str_to_u64(eq, 0, INT64_MAX, &v) == 0) {
			st->next = (int64_t)v;
		} else if (strcmp(buf, "warned") == 0 && str_to_u64(eq, 0, 1, &v) == 0) {
			st->warned = (int)v;
		} else if (strcmp(buf, "held") == 0 && str_to_u64(eq, 0, 1, &v) == 0) {
			st->held = (int)v;
		} else if (strcmp(buf, "n") == 0) {
			if (nrcpt == 0 || str_to_u64(eq, 0, nrcpt - 1, &idx) == -1)
				goto bad;
			st->r[idx].notified = 1;
		} else if (strcmp(buf, "r") == 0 || strcmp(buf, "e") == 0) {
			char *sp = strchr(eq, ' ');
			if (sp == NULL)
				goto bad;
			*sp++ = '\0';
			if (str_to_u64(eq, 0, nrcpt ? nrcpt - 1 : 0, &idx) == -1 || nrcpt == 0)
				goto bad;
			struct spool_rcpt_state *r = &st->r[idx];
			if (buf[0] == 'e') {
				spool_rcpt_set_error(r, sp);
				continue;
			}
			char name[16];
			uint64_t att, last;
			char *f1 = sp, *f2 = strchr(f1, ' '), *f3;
			if (f2 == NULL || (f3 = strchr(f2 + 1, ' ')) == NULL)
				goto bad;
			*f2++ = '\0';
			*f3++ = '\0';
			if (str_copy(name, f1, sizeof(name)) == -1 || (r->state = parse_rcpt_state(name)) == -1 ||
			    str_to_u64(f2, 0, UINT32_MAX, &att) == -1 || str_to_u64(f3, 0, INT64_MAX, &last) == -1)
				goto bad;
			r->attempts = (uint32_t)att;
			r->last = (int64_t)last;
		} else {
			goto bad;
		}
		continue;
bad:
		str_fmt(err, errlen, "%s: bad line '%s'", path, buf);
		goto fail;
	}
	if (!ended) {
		str_fmt(err, errlen, "%s: torn (no end marker)", path);
		goto fail;
	}
	fclose(f);
	return 0;
fail:
	fclose(f);
	return -1;
}

int spool_move(const char *from_dir, const char *to_dir, const char *qid)
{
	char from[64], to[64];

	str_fmt(from, sizeof(from), "%s/%s", from_dir, qid);
	str_fmt(to, sizeof(to), "%s/%s", to_dir, qid);
	if (rename(from, to) == -1)
		return -1;
	if (spool_fsync_dir(to_dir) == -1)
		return -1;
	return spool_fsync_dir(from_dir);
}

int spool_rename(const char *from_dir, const char *to_dir, const char *qid)
{
	char from[64], to[64];

	str_fmt(from, sizeof(from), "%s/%s", from_dir, qid);
	str_fmt(to, sizeof(to), "%s/%s", to_dir, qid);
	return rename(from, to);
}

int spool_remove(const char *qid, int has_state)
{
	char path[64];

	str_fmt(path, sizeof(path), SPOOL_QUEUE "/%s", qid);
	if (unlink(path) == -1 && errno != ENOENT)
		return -1;
	if (!has_state)
		return 0;
	/* The message goes before its state, so a crash can at worst bring
	 * back the message with every recipient pending (delivered again),
	 * never a state without its message mattering.  Journalling file
	 * systems keep the two unlinks in this order. */
	str_fmt(path, sizeof(path), SPOOL_STATE "/%s", qid);
	if (unlink(path) == -1 && errno != ENOENT)
		return -1;
	return 0;
}
