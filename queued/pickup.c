/*
 * pickup - T7 of shared/spool.h: turn postern-sendmail drops into queued
 * messages.
 *
 * Anything in drop/ was written by some local user, so a drop is hostile
 * input: it is opened with O_NOFOLLOW|O_NONBLOCK after an lstat that says
 * "regular file", must have one link, must belong to the uid it names
 * (or to root, which may submit for its caller's real uid), and must fit
 * the bounds (smtpd.max_message_size, smtpd.max_recipients);
 * every header line is checked (pickup_parse), and the message goes
 * through the same shared/msgtext.c conversion that postern-sendmail ran
 * before it accepted the message.  What fails goes to corrupt/drop.NAME
 * with an event=corrupt line; it is never deleted, and never crashes
 * queued.  A temporary failure (spool full, a passwd lookup that errs)
 * leaves the drop for the next scan.
 *
 * The message: "Received: by HOST (postern-sendmail, uid N) id QID; DATE",
 * the header fields without Bcc:, then From:, Date: and Message-ID:
 * <QID@HOST> when missing (RFC 6409 8.3), the body; CRLF line ends and
 * lines wrapped at 998 octets (msgtext.h).  Envelope sender: -f, else
 * login@hostname; recipients: the arguments, plus To:/Cc:/Bcc: with -t;
 * unqualified addresses get @hostname.  Then T1 into incoming/, T2
 * (queue_takeover), and only then the drop is unlinked: at least once.
 *
 * When: an inotify watch on drop/ asks for a scan at once; a scan also
 * runs at start and every PICKUP_SCAN_MS.  A scan takes at most
 * PICKUP_BATCH drops and then yields to the event loop.
 */
#include "queued.h"
#include "log.h"
#include "msgtext.h"
#include "str.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PICKUP_SCAN_MS 5000
#define PICKUP_BATCH 100
#define PICKUP_STALE_S 86400         /* an abandoned drop/.R.tmp is removed */
#define PICKUP_SKIP_MAX 256          /* entries we could neither finish nor move */
#define PICKUP_TIME_MAX 253402300799ULL   /* 9999-12-31: fits every Date: */
#define PICKUP_PW_MAX (1024 * 1024)  /* getpwuid_r buffer bound */

static struct ev_timer scan_timer;
static int ino_fd = -1, ino_wd = -1;
static int dir_warned;
static char skip[PICKUP_SKIP_MAX][256];     /* NAME_MAX + 1 */
static size_t nskip;

/* What build() made of a drop, for the event=pickup line. */
struct picked {
	char qid[QID_MAX];
	uid_t uid;
	char from[ADDR_PATH_MAX + 1];
	size_t nrcpt;
	uint64_t size;
};

/* Untrusted text for an error message (which is logged with log_q). */
static const char *esc(const char *s)
{
	static char buf[2][200];
	static int i;
	char *out = buf[i++ & 1];

	str_escape(out, sizeof(buf[0]), s, strlen(s));
	return out;
}

/* --- parsing a drop file --- */

uint64_t pickup_hdr_max(size_t max_rcpt)
{
	return 1024 + MSGTEXT_NAME_MAX + ((uint64_t)max_rcpt + 1) * (MSGTEXT_ADDR_MAX + 8);
}

void pickup_drop_free(struct pickup_drop *d)
{
	for (size_t i = 0; i < d->nrcpt; i++)
		free(d->rcpt[i]);
	free(d->rcpt);
	d->rcpt = NULL;
	d->nrcpt = 0;
}

static int read_at(int fd, char *p, size_t n, uint64_t off)
{
	size_t got = 0;

	while (got < n) {
		ssize_t r = pread(fd, p + got, n - got, (off_t)(off + got));
		if (r == -1 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		got += (size_t)r;
	}
	return 0;
}

/* The file ends with "POSTERN-END <n>\n" right after n message bytes;
 * the message need not end with a line end, so parse from the back. */
static int parse_end(int fd, uint64_t size, struct pickup_drop *d, char *err, size_t errlen)
{
	const size_t ml = sizeof(SPOOL_DROP_END) - 1;
	char tail[64];
	size_t tl = size - d->data_off < sizeof(tail) ? (size_t)(size - d->data_off) : sizeof(tail);
	size_t k;
	uint64_t n;

	if (tl < ml + 2 || read_at(fd, tail, tl, size - tl) == -1 || tail[tl - 1] != '\n')
		goto torn;
	tail[tl - 1] = '\0';
	for (k = tl - 1; k > 0 && tail[k - 1] >= '0' && tail[k - 1] <= '9'; k--)
		;
	if (k == tl - 1 || k < ml || memcmp(tail + k - ml, SPOOL_DROP_END, ml) != 0 ||
	    str_to_u64(tail + k, 0, UINT64_MAX, &n) == -1)
		goto torn;
	if (n > size || d->data_off + n + ml + (tl - k) != size) {
		str_fmt(err, errlen, "torn drop: message length %llu does not match the file",
		        (unsigned long long)n);
		return -1;
	}
	d->data_len = n;
	return 0;
torn:
	str_fmt(err, errlen, "torn drop: end marker missing");
	return -1;
}

static int parse_line(struct pickup_drop *d, char *line, unsigned *seen, size_t max_rcpt,
                      char *err, size_t errlen)
{
	enum { S_UID = 1, S_TIME = 2, S_SENDER = 4, S_NAME = 8, S_T = 16 };
	char *eq = strchr(line, '=');
	uint64_t v;
	unsigned bit = 0;

	if (eq == NULL) {
		str_fmt(err, errlen, "drop header line without '='");
		return -1;
	}
	*eq++ = '\0';
	if (strcmp(line, "uid") == 0) {
		bit = S_UID;
		if (str_to_u64(eq, 0, (uid_t)-2, &v) == -1)
			goto bad;
		d->uid = (uid_t)v;
	} else if (strcmp(line, "time") == 0) {
		bit = S_TIME;
		if (str_to_u64(eq, 0, PICKUP_TIME_MAX, &v) == -1)
			goto bad;
		d->time = (int64_t)v;
	} else if (strcmp(line, "sender") == 0) {
		bit = S_SENDER;
		if (str_copy(d->sender, eq, sizeof(d->sender)) == -1)
			goto bad;
		d->has_sender = 1;
	} else if (strcmp(line, "fullname") == 0) {
		bit = S_NAME;
		if (str_copy(d->fullname, eq, sizeof(d->fullname)) == -1)
			goto bad;
		d->has_fullname = 1;
	} else if (strcmp(line, "t") == 0) {
		bit = S_T;
		if (str_to_u64(eq, 0, 1, &v) == -1)
			goto bad;
		d->t = (int)v;
	} else if (strcmp(line, "rcpt") == 0) {
		if (d->nrcpt >= max_rcpt) {
			str_fmt(err, errlen, "too many recipients (more than %zu)", max_rcpt);
			return -1;
		}
		if (*eq == '\0' || strlen(eq) > MSGTEXT_ADDR_MAX)
			goto bad;
		d->rcpt = xrealloc(d->rcpt, (d->nrcpt + 1) * sizeof(*d->rcpt));
		d->rcpt[d->nrcpt++] = xstrdup(eq);
	} else {
		str_fmt(err, errlen, "unknown key '%s' in drop header", esc(line));
		return -1;
	}
	if (*seen & bit) {
		str_fmt(err, errlen, "repeated key '%s' in drop header", line);
		return -1;
	}
	*seen |= bit;
	return 0;
bad:
	str_fmt(err, errlen, "bad value for '%s' in drop header", line);
	return -1;
}

int pickup_parse(int fd, uint64_t size, uint64_t max_size, size_t max_rcpt,
                 struct pickup_drop *d, char *err, size_t errlen)
{
	const size_t ml = sizeof(SPOOL_DROP_MAGIC) - 1;
	uint64_t hb = pickup_hdr_max(max_rcpt);
	size_t cap = size < hb ? (size_t)size : (size_t)hb;
	unsigned seen = 0;
	char *hdr, *p, *end;

	memset(d, 0, sizeof(*d));
	hdr = xmalloc(cap + 1);
	if (read_at(fd, hdr, cap, 0) == -1) {
		str_fmt(err, errlen, "read: %s", errno ? strerror(errno) : "file shrank");
		goto fail;
	}
	hdr[cap] = '\0';
	if (cap < ml || memcmp(hdr, SPOOL_DROP_MAGIC, ml) != 0) {
		str_fmt(err, errlen, "bad magic (not a postern drop file, or wrong version)");
		goto fail;
	}
	p = hdr + ml;
	end = hdr + cap;
	for (;;) {
		char *nl = memchr(p, '\n', (size_t)(end - p));
		if (nl == NULL) {
			str_fmt(err, errlen, "drop header not terminated within %llu bytes",
			        (unsigned long long)hb);
			goto fail;
		}
		if (nl == p) {
			p = nl + 1;
			break;
		}
		for (char *q = p; q < nl; q++)
			if ((unsigned char)*q < 0x20 || *q == 0x7f) {
				str_fmt(err, errlen, "control byte in drop header");
				goto fail;
			}
		*nl = '\0';
		if (parse_line(d, p, &seen, max_rcpt, err, errlen) == -1)
			goto fail;
		p = nl + 1;
	}
	if ((seen & 3) != 3) {
		str_fmt(err, errlen, "drop header lacks %s", (seen & 1) ? "time" : "uid");
		goto fail;
	}
	d->data_off = (uint64_t)(p - hdr);
	free(hdr);
	hdr = NULL;
	if (parse_end(fd, size, d, err, errlen) == -1)
		goto fail;
	if (d->data_len > max_size) {
		str_fmt(err, errlen, "message of %llu bytes exceeds smtpd.max_message_size %llu",
		        (unsigned long long)d->data_len, (unsigned long long)max_size);
		goto fail;
	}
	return 0;
fail:
	free(hdr);
	pickup_drop_free(d);
	return -1;
}

/* --- building the message --- */

/* Run the message part of the drop through m. -1: read error (errno),
 * -2: the file changed under us, -3: m failed (m->err). */
static int run_text(int fd, const struct pickup_drop *d, struct msgtext *m)
{
	char buf[65536];
	uint64_t off = d->data_off, left = d->data_len;

	while (left > 0) {
		size_t want = left < sizeof(buf) ? (size_t)left : sizeof(buf);
		ssize_t r = pread(fd, buf, want, (off_t)off);
		if (r == -1 && errno == EINTR)
			continue;
		if (r == -1)
			return -1;
		if (r == 0)
			return -2;
		if (msgtext_feed(m, buf, (size_t)r) == -1)
			return -3;
		off += (uint64_t)r;
		left -= (uint64_t)r;
	}
	return msgtext_finish(m) == -1 ? -3 : 0;
}

static int sink_spool(void *arg, const char *p, size_t n)
{
	return spool_submit_write(arg, p, n);
}

static void rfc5322_date(int64_t t, char *out, size_t len)
{
	time_t tt = (time_t)t;
	struct tm tm;

	localtime_r(&tt, &tm);
	if (strftime(out, len, "%a, %d %b %Y %H:%M:%S %z", &tm) == 0)
		str_copy(out, "Thu, 01 Jan 1970 00:00:00 +0000", len);
}

/* The GECOS full name: its first comma-separated field. */
static void gecos_name(const char *gecos, char *out, size_t len)
{
	size_t n = strcspn(gecos ? gecos : "", ",");

	if (n >= len)
		n = len - 1;
	memcpy(out, gecos ? gecos : "", n);
	out[n] = '\0';
}

struct who {
	struct passwd pw;
	char *buf;
};

/* 0 found, -1 no such uid (err), -2 lookup failed (err). */
static int lookup_uid(uid_t uid, struct who *w, char *err, size_t errlen)
{
	struct passwd *res = NULL;
	size_t len = 4096;
	int e;

	for (;;) {
		w->buf = xrealloc(w->buf, len);
		e = getpwuid_r(uid, &w->pw, w->buf, len, &res);
		if (e != ERANGE || len >= PICKUP_PW_MAX)
			break;
		len *= 2;
	}
	if (e != 0) {
		str_fmt(err, errlen, "getpwuid(%u): %s", (unsigned)uid, strerror(e));
		return -2;
	}
	if (res == NULL) {
		str_fmt(err, errlen, "uid %u does not exist", (unsigned)uid);
		return -1;
	}
	return 0;
}

static int text_error(int r, const struct msgtext *m, char *err, size_t errlen)
{
	if (r == -1) {
		str_fmt(err, errlen, "read: %s", strerror(errno));
		return PICKUP_RETRY;
	}
	if (r == -2) {
		str_fmt(err, errlen, "the drop file changed while it was read");
		return PICKUP_CORRUPT;
	}
	if (m->err == MSGTEXT_ERR_SIZE)
		str_fmt(err, errlen, "message exceeds smtpd.max_message_size %llu",
		        (unsigned long long)m->max);
	else
		str_fmt(err, errlen, "%s", msgtext_strerror(m->err));
	return m->err == MSGTEXT_ERR_SINK ? PICKUP_RETRY : PICKUP_CORRUPT;
}

/* Validate, build and commit the message of drop d (fd open on it).
 * PICKUP_DONE with qid set, or RETRY/CORRUPT with err. */
static int build(int fd, const struct pickup_drop *d, struct picked *out, char *err, size_t errlen)
{
	struct who who = { .buf = NULL };
	struct addr login, sender;
	struct msgtext *m = xmalloc(sizeof(*m));
	struct msgtext_rcpts rc;
	struct spool_writer *w = NULL;
	struct spool_env env;
	struct buf extra;
	const char *why, *host = cfg->hostname;
	uint64_t max = cfg->smtpd.max_message_size;
	char date[64], hdr[1024], name[MSGTEXT_NAME_MAX + 1], phrase[1024];
	int r, ret = PICKUP_CORRUPT;

	msgtext_rcpts_init(&rc, (size_t)cfg->smtpd.max_recipients);
	buf_init(&extra, 8192);
	msgtext_init(m, MSGTEXT_DROP_BCC | (d->t ? MSGTEXT_CAPTURE : 0), max, NULL, NULL, NULL, 0);

	r = lookup_uid(d->uid, &who, err, errlen);
	if (r != 0) {
		ret = r == -1 ? PICKUP_CORRUPT : PICKUP_RETRY;
		goto out;
	}
	if (msgtext_login(who.pw.pw_name, host, &login, &why) == -1) {
		str_fmt(err, errlen, "login name '%s' of uid %u is not a local part: %s",
		        esc(who.pw.pw_name), (unsigned)d->uid, why);
		goto out;
	}
	if (!d->has_sender) {
		sender = login;
	} else if (msgtext_sender(d->sender, host, &sender, &why) == -1) {
		str_fmt(err, errlen, "bad sender '%s': %s", esc(d->sender), why);
		goto out;
	}
	if ((r = run_text(fd, d, m)) != 0) {
		ret = text_error(r, m, err, errlen);
		goto out;
	}
	for (size_t i = 0; i < d->nrcpt; i++)
		if (msgtext_rcpts_add(&rc, d->rcpt[i], host, err, errlen) != 0)
			goto out;
	if (d->t && msgtext_rcpts_from_headers(&rc, m, host, err, errlen) != 0)
		goto out;
	if (rc.n == 0) {
		str_fmt(err, errlen, d->t ? "no recipients (none given, none in To:, Cc:, Bcc:)"
		                          : "no recipients");
		goto out;
	}

	w = xcalloc(1, sizeof(*w));
	if (spool_submit_open(w) == -1) {
		str_fmt(err, errlen, "cannot create a spool file: %s", strerror(errno));
		free(w);
		w = NULL;
		ret = PICKUP_RETRY;
		goto out;
	}
	/* RFC 6409 8.3: complete what a local program left out. */
	if (!(m->seen & MSGTEXT_SEEN_FROM)) {
		if (d->has_fullname)
			str_copy(name, d->fullname, sizeof(name));
		else
			gecos_name(who.pw.pw_gecos, name, sizeof(name));
		const char *from = sender.is_null ? login.text : sender.text;
		/* A phrase of MSGTEXT_NAME_MAX octets fits buf_appendf's 1024;
		 * should it not, the address alone is still a From:. */
		if (name[0] == '\0' || msgtext_phrase(name, phrase, sizeof(phrase)) == -1 ||
		    buf_appendf(&extra, "From: %s <%s>\r\n", phrase, from) == -1)
			buf_appendf(&extra, "From: %s\r\n", from);
	}
	if (!(m->seen & MSGTEXT_SEEN_DATE)) {
		rfc5322_date(d->time, date, sizeof(date));
		buf_appendf(&extra, "Date: %s\r\n", date);
	}
	if (!(m->seen & MSGTEXT_SEEN_MSGID))
		buf_appendf(&extra, "Message-ID: <%s@%s>\r\n", w->qid, host);

	memset(&env, 0, sizeof(env));
	env.arrival = time(NULL);
	str_copy(env.origin, "sendmail", sizeof(env.origin));
	str_copy(env.client, "127.0.0.1", sizeof(env.client));
	str_copy(env.helo, host, sizeof(env.helo));
	str_copy(env.proto, "sendmail", sizeof(env.proto));
	str_copy(env.body, m->eightbit ? "8bitmime" : "7bit", sizeof(env.body));
	env.smtputf8 = rc.utf8 || sender.has_utf8;
	str_copy(env.sender, sender.text, sizeof(env.sender));
	env.rcpt = rc.v;
	env.nrcpt = rc.n;
	spool_submit_header(w, &env);
	rfc5322_date(env.arrival, date, sizeof(date));
	r = str_fmt(hdr, sizeof(hdr), "Received: by %s (postern-sendmail, uid %u)\r\n\tid %s; %s\r\n",
	            host, (unsigned)d->uid, w->qid, date);
	if (r > 0)
		spool_submit_write(w, hdr, (size_t)r);

	msgtext_free(m);
	msgtext_init(m, MSGTEXT_DROP_BCC, max, sink_spool, w, buf_head(&extra), buf_used(&extra));
	r = run_text(fd, d, m);
	if (r != 0 || w->failed) {
		if (w->failed) {
			str_fmt(err, errlen, "spool write: %s", strerror(w->err));
			ret = PICKUP_RETRY;
		} else {
			ret = text_error(r, m, err, errlen);
		}
		spool_submit_abort(w);
		goto out;
	}
	if (spool_submit_commit(w) == -1) {
		str_fmt(err, errlen, "spool commit: %s", strerror(w->err ? w->err : errno));
		spool_submit_abort(w);
		ret = PICKUP_RETRY;
		goto out;
	}
	str_copy(out->qid, w->qid, sizeof(out->qid));
	str_copy(out->from, sender.text, sizeof(out->from));
	out->uid = d->uid;
	out->nrcpt = rc.n;
	out->size = m->size;
	ret = PICKUP_DONE;
out:
	free(w);
	msgtext_free(m);
	free(m);
	buf_free(&extra);
	msgtext_rcpts_free(&rc);
	free(who.buf);
	return ret;
}

/* --- drop files --- */

static int name_valid(const char *name)
{
	size_t n = 0;

	for (; name[n]; n++)
		if (!((name[n] >= '0' && name[n] <= '9') || (name[n] >= 'a' && name[n] <= 'f')))
			return 0;
	return n == SPOOL_DROP_NAME_LEN;
}

static int skipped(const char *name)
{
	for (size_t i = 0; i < nskip && i < PICKUP_SKIP_MAX; i++)
		if (strcmp(skip[i], name) == 0)
			return 1;
	return 0;
}

/* An entry we can neither finish nor move (say, a user's directory
 * without write permission): leave it to the admin rather than repeat (or
 * duplicate) it and its log line every scan.  The list is a ring: beyond
 * PICKUP_SKIP_MAX such entries, the oldest are logged again. */
static void skip_add(const char *name)
{
	if (str_copy(skip[nskip % PICKUP_SKIP_MAX], name, sizeof(skip[0])) == 0)
		nskip++;
}

static const char *file_q(const char *name)
{
	static char buf[600];
	char tmp[300];

	str_fmt(tmp, sizeof(tmp), SPOOL_DROP "/%s", name);
	if (name_valid(name))
		str_copy(buf, tmp, sizeof(buf));
	else
		str_copy(buf, log_q(tmp), sizeof(buf));
	return buf;
}

/* T3 for a drop: keep the evidence under a name that replaces nothing. */
static int move_corrupt(const char *name, const char *why)
{
	static unsigned counter;
	char from[300], to[128];
	int r = -1;

	str_fmt(from, sizeof(from), SPOOL_DROP "/%s", name);
	for (int tries = 0; tries < 100 && r == -1; tries++) {
		if (name_valid(name) && tries == 0)
			str_fmt(to, sizeof(to), SPOOL_CORRUPT "/drop.%s", name);
		else
			str_fmt(to, sizeof(to), SPOOL_CORRUPT "/drop.%lld.%d.%u",
			        (long long)time(NULL), (int)getpid(), counter++);
		r = renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE);
		if (r == -1 && errno == EINVAL) {
			/* No RENAME_NOREPLACE on this filesystem: check, then rename. */
			struct stat sb;
			if (lstat(to, &sb) == 0)
				errno = EEXIST;
			else
				r = rename(from, to);
		}
		if (r == -1 && errno != EEXIST)
			break;
	}
	if (r == -1) {
		log_error("event=corrupt file=%s error=%s move_error=%s", file_q(name), log_q(why),
		          log_q(strerror(errno)));
		skip_add(name);
		return -1;
	}
	spool_fsync_dir(SPOOL_CORRUPT);
	spool_fsync_dir(SPOOL_DROP);
	log_error("event=corrupt file=%s error=%s moved_to=%s", file_q(name), log_q(why), to);
	return 0;
}

int pickup_file(const char *name)
{
	struct stat lsb, sb;
	struct pickup_drop d;
	struct picked pk;
	char path[300], err[600];
	uint64_t max = cfg->smtpd.max_message_size;
	size_t max_rcpt = (size_t)cfg->smtpd.max_recipients;
	int fd, r;

	if (!name_valid(name)) {
		move_corrupt(name, "file name is not 32 lower-case hex digits");
		return PICKUP_CORRUPT;
	}
	str_fmt(path, sizeof(path), SPOOL_DROP "/%s", name);
	if (lstat(path, &lsb) == -1) {
		if (errno == ENOENT)
			return PICKUP_DONE;
		log_warn("event=pickup_failed file=%s error=%s", file_q(name), log_q(strerror(errno)));
		return PICKUP_RETRY;
	}
	/* Never open a FIFO, device or symlink a user planted. */
	if (!S_ISREG(lsb.st_mode)) {
		move_corrupt(name, "not a regular file");
		return PICKUP_CORRUPT;
	}
	fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
	if (fd == -1) {
		if (errno == ENOENT)
			return PICKUP_DONE;
		str_fmt(err, sizeof(err), "open: %s", strerror(errno));
		if (errno == EACCES || errno == ELOOP || errno == EPERM) {
			move_corrupt(name, err);
			return PICKUP_CORRUPT;
		}
		log_warn("event=pickup_failed file=%s error=%s", file_q(name), log_q(err));
		return PICKUP_RETRY;
	}
	r = PICKUP_CORRUPT;
	if (fstat(fd, &sb) == -1) {
		str_fmt(err, sizeof(err), "fstat: %s", strerror(errno));
		r = PICKUP_RETRY;
	} else if (!S_ISREG(sb.st_mode) || sb.st_dev != lsb.st_dev || sb.st_ino != lsb.st_ino) {
		str_fmt(err, sizeof(err), "replaced while being opened");
	} else if (sb.st_nlink != 1) {
		/* A hard link could show us a file its maker cannot read. */
		str_fmt(err, sizeof(err), "has %llu links", (unsigned long long)sb.st_nlink);
	} else if ((uint64_t)sb.st_size > max + pickup_hdr_max(max_rcpt) + 64) {
		str_fmt(err, sizeof(err), "drop file of %llu bytes is larger than any valid one",
		        (unsigned long long)sb.st_size);
	} else if (pickup_parse(fd, (uint64_t)sb.st_size, max, max_rcpt, &d, err, sizeof(err)) == 0) {
		/* Root may submit for its real uid (a set-uid-root caller). */
		if (d.uid != sb.st_uid && sb.st_uid != 0)
			str_fmt(err, sizeof(err), "header says uid=%u but the file belongs to uid %u",
			        (unsigned)d.uid, (unsigned)sb.st_uid);
		else
			r = build(fd, &d, &pk, err, sizeof(err));
		pickup_drop_free(&d);
	}
	close(fd);
	if (r == PICKUP_RETRY) {
		log_warn("event=pickup_failed file=%s error=%s", file_q(name), log_q(err));
		return r;
	}
	if (r == PICKUP_CORRUPT) {
		move_corrupt(name, err);
		return r;
	}
	log_info("event=pickup qid=%s uid=%u from=<%s> nrcpt=%zu size=%llu file=%s", pk.qid,
	         (unsigned)pk.uid, pk.from, pk.nrcpt, (unsigned long long)pk.size, file_q(name));
	queue_takeover(pk.qid);
	/* Only now: the message is in incoming/ (or queue/), durably. */
	if (unlink(path) == -1 && errno != ENOENT) {
		log_error("event=pickup_unlink_failed qid=%s file=%s error=%s", pk.qid, file_q(name),
		          log_q(strerror(errno)));
		skip_add(name);
	}
	spool_fsync_dir(SPOOL_DROP);
	return PICKUP_DONE;
}

/* An abandoned drop/.R.tmp (T6 cut short) was never acknowledged. */
static void stale(DIR *dir, const char *name, time_t now)
{
	struct stat sb;

	if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
		return;
	if (fstatat(dirfd(dir), name, &sb, AT_SYMLINK_NOFOLLOW) == -1)
		return;
	if ((!S_ISREG(sb.st_mode) && !S_ISLNK(sb.st_mode)) || now - sb.st_mtime < PICKUP_STALE_S)
		return;
	if (unlinkat(dirfd(dir), name, 0) == 0)
		log_info("event=drop_stale_removed file=%s age=%lld", file_q(name),
		         (long long)(now - sb.st_mtime));
}

int pickup_scan(void)
{
	DIR *dir = opendir(SPOOL_DROP);
	struct dirent *de;
	time_t now = time(NULL);
	int n = 0;

	if (dir == NULL) {
		if (!dir_warned)
			log_error("event=scan_failed dir=%s error=%s", SPOOL_DROP, log_q(strerror(errno)));
		dir_warned = 1;
		return 0;
	}
	dir_warned = 0;
	while ((de = readdir(dir)) != NULL) {
		if (de->d_name[0] == '.') {
			stale(dir, de->d_name, now);
			continue;
		}
		if (skipped(de->d_name))
			continue;
		if (n++ >= PICKUP_BATCH) {
			closedir(dir);
			return 1;
		}
		pickup_file(de->d_name);
	}
	closedir(dir);
	return 0;
}

static void on_inotify(int fd, int events, void *arg)
{
	char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
	ssize_t r;

	(void)events;
	(void)arg;
	/* The events only say "look": the scan reads the directory. */
	while ((r = read(fd, buf, sizeof(buf))) > 0) {
		for (char *p = buf; p < buf + r;) {
			const struct inotify_event *ev = (const struct inotify_event *)p;
			if (ev->mask & IN_IGNORED)
				ino_wd = -1;   /* drop/ went away: watch again at the next scan */
			p += sizeof(*ev) + ev->len;
		}
	}
	ev_timer_add(&scan_timer, 0);
}

static void watch(void)
{
	if (ino_fd == -1) {
		ino_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
		if (ino_fd == -1) {
			log_warn("event=pickup_watch_failed error=%s fallback=\"scan every %d s\"",
			         log_q(strerror(errno)), PICKUP_SCAN_MS / 1000);
			ino_fd = -2;   /* do not try again */
			return;
		}
		if (ev_add(ino_fd, EV_READ, on_inotify, NULL) == -1) {
			close(ino_fd);
			ino_fd = -2;
			return;
		}
	}
	if (ino_fd >= 0 && ino_wd == -1)
		ino_wd = inotify_add_watch(ino_fd, SPOOL_DROP, IN_MOVED_TO | IN_CLOSE_WRITE | IN_ONLYDIR);
}

static void scan_due(void *arg)
{
	(void)arg;
	watch();
	ev_timer_add(&scan_timer, pickup_scan() ? 0 : PICKUP_SCAN_MS);
}

void pickup_init(void)
{
	ev_timer_init(&scan_timer, scan_due, NULL);
	watch();
	ev_timer_add(&scan_timer, 0);
}
