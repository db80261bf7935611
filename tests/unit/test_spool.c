/* Unit tests for shared/spool.c in a temporary spool: the T1 submission
 * cycle, reading message files back, torn and forged files, state files,
 * and the move/remove/purge helpers. */
#include "harness.h"
#include "spool.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define L(s) s, sizeof(s) - 1

static char dir[PATH_MAX];

static int exists(const char *path)
{
	struct stat sb;
	return lstat(path, &sb) == 0;
}

static char *read_all(const char *path, size_t *len)
{
	int fd = open(path, O_RDONLY);
	struct stat sb;
	char *p;

	if (fd == -1 || fstat(fd, &sb) == -1) {
		if (fd != -1)
			close(fd);
		*len = 0;
		return NULL;
	}
	p = malloc((size_t)sb.st_size + 1);
	*len = (size_t)pread(fd, p, (size_t)sb.st_size, 0);
	p[*len] = '\0';
	close(fd);
	return p;
}

static void write_bytes(const char *path, const void *p, size_t n)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd == -1 || write(fd, p, n) != (ssize_t)n) {
		perror(path);
		exit(2);
	}
	close(fd);
}

static void env_fill(struct spool_env *e, char **rcpt, size_t nrcpt)
{
	memset(e, 0, sizeof(*e));
	e->arrival = 1700000000;
	strcpy(e->origin, "smtp");
	strcpy(e->client, "192.0.2.1");
	strcpy(e->helo, "client.example");
	strcpy(e->proto, "ESMTP");
	strcpy(e->body, "8bitmime");
	e->smtputf8 = 1;
	strcpy(e->auth, "alice");
	strcpy(e->sender, "a@b.example");
	e->rcpt = rcpt;
	e->nrcpt = nrcpt;
}

static char *rcpts[] = { "c@d.example", "\"x y\"@e.example", "postmaster", "j\xc3\xb6rg@f.example" };

/* Submit a message through T1; returns 0 and fills qid. */
static int submit(const struct spool_env *env, const char *data, size_t len, char qid[QID_MAX])
{
	struct spool_writer *w = calloc(1, sizeof(*w));
	int r = -1;

	if (spool_submit_open(w) == 0 && spool_submit_header(w, env) == 0 &&
	    spool_submit_write(w, data, len) == 0 && spool_submit_commit(w) == 0) {
		memcpy(qid, w->qid, QID_MAX);
		r = 0;
	} else {
		spool_submit_abort(w);
	}
	free(w);
	return r;
}

static void test_init(void)
{
	char err[256] = "", path[PATH_MAX + 32];
	static const char *const sub[] = { "tmp", "incoming", "queue", "state", "corrupt", "private" };

	for (size_t i = 0; i < NELEM(sub); i++) {
		struct stat sb;
		snprintf(path, sizeof(path), "%s/%s", dir, sub[i]);
		CHECK_EQ_INT(stat(path, &sb), 0);
		CHECK(S_ISDIR(sb.st_mode));
		CHECK_EQ_INT(sb.st_mode & 07777, 0700);
	}
	/* Again: existing directories are fine. */
	CHECK_EQ_INT(spool_init(dir, getuid(), getgid(), err, sizeof(err)), 0);
	/* A file in the way. */
	write_bytes("afile", "x", 1);
	snprintf(path, sizeof(path), "%s/afile", dir);
	CHECK_EQ_INT(spool_init(path, getuid(), getgid(), err, sizeof(err)), -1);
	CHECK_CONTAINS(err, "mkdir ");
	CHECK_CONTAINS(err, "afile/tmp");
	CHECK_CONTAINS(err, strerror(ENOTDIR));
	snprintf(path, sizeof(path), "%s/afile/x/y", dir);
	CHECK_EQ_INT(spool_init(path, getuid(), getgid(), err, sizeof(err)), -1);
	CHECK_CONTAINS(err, "mkdir ");
	unlink("afile");
}

static void test_qid_valid(void)
{
	static const struct {
		const char *q;
		int ok;
	} cases[] = {
		{ "0123456789ABCD", 1 },                         /* QID_MIN = 14 */
		{ "0123456789ABC", 0 },                          /* 13 */
		{ "0123456789ABCDEF0123456789ABCDE", 1 },        /* 31 = QID_MAX - 1 */
		{ "0123456789ABCDEF0123456789ABCDEF", 0 },       /* 32 */
		{ "0123456789abcd", 0 },                         /* lowercase */
		{ "0123456789ABCG", 0 },
		{ "", 0 },
		{ "../x", 0 },
		{ "../../etc/passwd", 0 },
		{ "0123456789ABC/", 0 },
		{ "/0123456789ABCD", 0 },
		{ "0123456789ABCD.state", 0 },
		{ ".0123456789ABCD", 0 },
		{ "0123456789ABCD ", 0 },
		{ "0123456789ABCD\n", 0 },
	};

	for (size_t i = 0; i < NELEM(cases); i++) {
		ROW("%zu: %s", i, cases[i].q);
		CHECK_EQ_INT(spool_qid_valid(cases[i].q), cases[i].ok);
	}
}

static void test_rcpt_state_names(void)
{
	CHECK_STR(spool_rcpt_state_name(RS_PENDING), "pending");
	CHECK_STR(spool_rcpt_state_name(RS_DEFERRED), "deferred");
	CHECK_STR(spool_rcpt_state_name(RS_DELIVERED), "delivered");
	CHECK_STR(spool_rcpt_state_name(RS_BOUNCED), "bounced");
	CHECK_STR(spool_rcpt_state_name(4), "unknown");
	CHECK_STR(spool_rcpt_state_name(-1), "unknown");
}

/* The full T1 cycle and reading the result back. */
static void test_submit_cycle(void)
{
	struct spool_writer *w = calloc(1, sizeof(*w));
	struct spool_env env, got;
	char path[64], err[256] = "";
	size_t big = 150000, len;
	char *data = malloc(big + 64);
	int corrupt = -1;

	/* Data: CRLF lines, a marker lookalike, NUL and high bytes, and one
	 * write larger than the writer's own buffer. */
	size_t n = 0;
	memcpy(data, "Subject: hi\r\n\r\nPOSTERN-END 5\r\n", 30);
	n = 30;
	for (size_t i = 0; i < big; i++)
		data[n++] = (char)(i % 251);
	memcpy(data + n, "\r\nbye\r\n", 7);
	n += 7;

	env_fill(&env, rcpts, NELEM(rcpts));
	CHECK_EQ_INT(spool_submit_open(w), 0);
	CHECK(spool_qid_valid(w->qid));
	snprintf(path, sizeof(path), "tmp/%s", w->qid);
	CHECK(exists(path));
	CHECK_EQ_INT(spool_submit_header(w, &env), 0);
	CHECK_EQ_INT(spool_submit_write(w, data, 10), 0);
	CHECK_EQ_INT(spool_submit_write(w, data + 10, 20), 0);
	CHECK_EQ_INT(spool_submit_write(w, data + 30, big), 0);    /* > sizeof(wbuf) */
	CHECK_EQ_INT(spool_submit_write(w, data + 30 + big, 7), 0);
	CHECK_EQ_INT(spool_submit_write(w, "", 0), 0);
	CHECK_EQ_U64(w->data_len, n);
	CHECK_EQ_INT(spool_submit_commit(w), 0);
	CHECK(!exists(path));
	snprintf(path, sizeof(path), "incoming/%s", w->qid);
	CHECK(exists(path));

	/* The exact format documented in spool.h. */
	char *file = read_all(path, &len);
	char hdr[1024];
	int hl = snprintf(hdr, sizeof(hdr),
	                  "POSTERN-QUEUE 1\nqid=%s\narrival=1700000000\norigin=smtp\nclient=192.0.2.1\n"
	                  "helo=client.example\nproto=ESMTP\nbody=8bitmime\nsmtputf8=1\nauth=alice\n"
	                  "sender=a@b.example\nrcpt=c@d.example\nrcpt=\"x y\"@e.example\nrcpt=postmaster\n"
	                  "rcpt=j\xc3\xb6rg@f.example\n\n",
	                  w->qid);
	char trailer[64];
	int tl = snprintf(trailer, sizeof(trailer), "POSTERN-END %zu\n", n);
	CHECK_EQ_U64(len, (size_t)hl + n + (size_t)tl);
	if (file != NULL && len == (size_t)hl + n + (size_t)tl) {
		CHECK_MEM(file, (size_t)hl, hdr, (size_t)hl);
		CHECK(memcmp(file + hl, data, n) == 0);
		CHECK_MEM(file + hl + n, (size_t)tl, trailer, (size_t)tl);
	}
	free(file);

	int fd = spool_msg_open("incoming", w->qid, &got, &corrupt, err, sizeof(err));
	CHECK(fd >= 0);
	CHECK_EQ_INT(corrupt, 0);
	if (fd >= 0) {
		CHECK_STR(got.qid, w->qid);
		CHECK_EQ_INT(got.arrival, 1700000000);
		CHECK_STR(got.origin, "smtp");
		CHECK_STR(got.client, "192.0.2.1");
		CHECK_STR(got.helo, "client.example");
		CHECK_STR(got.proto, "ESMTP");
		CHECK_STR(got.body, "8bitmime");
		CHECK_EQ_INT(got.smtputf8, 1);
		CHECK_STR(got.auth, "alice");
		CHECK_STR(got.sender, "a@b.example");
		CHECK_EQ_U64(got.nrcpt, NELEM(rcpts));
		for (size_t i = 0; i < got.nrcpt && i < NELEM(rcpts); i++)
			CHECK_STR(got.rcpt[i], rcpts[i]);
		CHECK_EQ_U64(got.data_off, (uint64_t)hl);
		CHECK_EQ_U64(got.data_len, n);
		char *back = malloc(n);
		CHECK_EQ_INT(pread(fd, back, n, (off_t)got.data_off), (ssize_t)n);
		CHECK(memcmp(back, data, n) == 0);
		free(back);
		spool_env_free(&got);
		CHECK(got.rcpt == NULL);
		CHECK_EQ_U64(got.nrcpt, 0);
		close(fd);
	}
	unlink(path);
	free(data);
	free(w);
}

static void test_submit_variants(void)
{
	struct spool_env env, got;
	char qid[QID_MAX], err[256], path[64];
	int corrupt;

	/* Null sender, one recipient, no data at all. */
	env_fill(&env, rcpts, 1);
	env.sender[0] = '\0';
	env.auth[0] = '\0';
	env.smtputf8 = 0;
	CHECK_EQ_INT(submit(&env, "", 0, qid), 0);
	int fd = spool_msg_open("incoming", qid, &got, &corrupt, err, sizeof(err));
	CHECK(fd >= 0);
	if (fd >= 0) {
		CHECK_STR(got.sender, "");
		CHECK_STR(got.auth, "");
		CHECK_EQ_INT(got.smtputf8, 0);
		CHECK_EQ_U64(got.data_len, 0);
		CHECK_EQ_U64(got.nrcpt, 1);
		spool_env_free(&got);
		close(fd);
	}
	snprintf(path, sizeof(path), "incoming/%s", qid);
	unlink(path);

	/* Many writers in a row get distinct valid queue ids. */
	enum { NW = 64 };
	struct spool_writer *ws = calloc(NW, sizeof(*ws));
	int ok = 1;
	for (int i = 0; i < NW; i++) {
		CHECK_EQ_INT(spool_submit_open(&ws[i]), 0);
		ok &= spool_qid_valid(ws[i].qid);
		for (int j = 0; j < i; j++)
			ok &= strcmp(ws[i].qid, ws[j].qid) != 0;
	}
	CHECK(ok);
	for (int i = 0; i < NW; i++) {
		spool_submit_abort(&ws[i]);
		snprintf(path, sizeof(path), "tmp/%s", ws[i].qid);
		CHECK(!exists(path));
	}
	free(ws);
}

/* Forged header values are refused before anything is written. */
static void test_submit_injection(void)
{
	static const struct {
		const char *field;   /* which env field to poison */
		const char *value;
	} cases[] = {
		{ "rcpt", "a@b.example\nrcpt=evil@x.example" },
		{ "rcpt", "a@b.example\r" },
		{ "rcpt", "a@b\x01.example" },
		{ "rcpt", "a@b.example\x7f" },
		{ "sender", "a@b.example\nrcpt=evil@x.example" },
		{ "helo", "x\n\nforged body" },
		{ "helo", "x\r" },
		{ "client", "1.2.3.4\tx" },
		{ "auth", "alice\nsender=ceo@x.example" },
		{ "origin", "smtp\n" },
		{ "proto", "ESMTP\x1b" },
		{ "body", "7bit\n" },
	};

	for (size_t i = 0; i < NELEM(cases); i++) {
		struct spool_writer *w = calloc(1, sizeof(*w));
		struct spool_env env;
		char *rc[2] = { "ok@d.example", NULL };
		char path[64];
		ROW("%zu: %s", i, cases[i].field);
		env_fill(&env, rc, 1);
		if (strcmp(cases[i].field, "rcpt") == 0) {
			rc[1] = (char *)cases[i].value;
			env.nrcpt = 2;
		} else {
			char *f = strcmp(cases[i].field, "sender") == 0 ? env.sender
			        : strcmp(cases[i].field, "helo") == 0   ? env.helo
			        : strcmp(cases[i].field, "client") == 0 ? env.client
			        : strcmp(cases[i].field, "auth") == 0   ? env.auth
			        : strcmp(cases[i].field, "origin") == 0 ? env.origin
			        : strcmp(cases[i].field, "proto") == 0  ? env.proto
			                                                : env.body;
			strcpy(f, cases[i].value);
		}
		CHECK_EQ_INT(spool_submit_open(w), 0);
		CHECK_EQ_INT(spool_submit_header(w, &env), -1);
		CHECK_EQ_INT(w->failed, 1);
		CHECK_EQ_INT(w->err, EINVAL);
		CHECK_EQ_INT(spool_submit_write(w, "x\r\n", 3), -1);
		errno = 0;
		CHECK_EQ_INT(spool_submit_commit(w), -1);
		CHECK_EQ_INT(errno, EINVAL);
		snprintf(path, sizeof(path), "incoming/%s", w->qid);
		CHECK(!exists(path));
		spool_submit_abort(w);
		snprintf(path, sizeof(path), "tmp/%s", w->qid);
		CHECK(!exists(path));
		free(w);
	}
}

static void test_submit_errors(void)
{
	struct spool_writer *w = calloc(1, sizeof(*w));
	struct spool_env env;
	char path[64];

	env_fill(&env, rcpts, 1);

	/* ENOSPC while writing the data: the commit refuses (451, never 250). */
	CHECK_EQ_INT(spool_submit_open(w), 0);
	int full = open("/dev/full", O_WRONLY);
	CHECK(full >= 0);
	if (full >= 0) {
		CHECK_EQ_INT(dup2(full, w->fd), w->fd);
		close(full);
		CHECK_EQ_INT(spool_submit_header(w, &env), 0);   /* still buffered */
		static char chunk[100000];
		CHECK_EQ_INT(spool_submit_write(w, chunk, sizeof(chunk)), -1);
		CHECK_EQ_INT(w->failed, 1);
		CHECK_EQ_INT(w->err, ENOSPC);
		CHECK_EQ_INT(spool_submit_write(w, "x", 1), -1);    /* stays failed */
		errno = 0;
		CHECK_EQ_INT(spool_submit_commit(w), -1);
		CHECK_EQ_INT(errno, ENOSPC);
		snprintf(path, sizeof(path), "incoming/%s", w->qid);
		CHECK(!exists(path));
	}
	spool_submit_abort(w);
	snprintf(path, sizeof(path), "tmp/%s", w->qid);
	CHECK(!exists(path));

	/* Failure surfacing only at the final flush. */
	memset(w, 0, sizeof(*w));
	CHECK_EQ_INT(spool_submit_open(w), 0);
	full = open("/dev/full", O_WRONLY);
	CHECK_EQ_INT(dup2(full, w->fd), w->fd);
	close(full);
	CHECK_EQ_INT(spool_submit_header(w, &env), 0);
	CHECK_EQ_INT(spool_submit_write(w, "small\r\n", 7), 0);
	errno = 0;
	CHECK_EQ_INT(spool_submit_commit(w), -1);
	CHECK_EQ_INT(errno, ENOSPC);
	spool_submit_abort(w);

	/* incoming/ missing: the rename fails, nothing is acknowledged. */
	memset(w, 0, sizeof(*w));
	CHECK_EQ_INT(spool_submit_open(w), 0);
	CHECK_EQ_INT(spool_submit_header(w, &env), 0);
	CHECK_EQ_INT(rename("incoming", "incoming.away"), 0);
	errno = 0;
	CHECK_EQ_INT(spool_submit_commit(w), -1);
	CHECK_EQ_INT(errno, ENOENT);
	CHECK_EQ_INT(rename("incoming.away", "incoming"), 0);
	snprintf(path, sizeof(path), "tmp/%s", w->qid);
	CHECK(exists(path));                 /* left for abort / the master's purge */
	spool_submit_abort(w);
	CHECK(!exists(path));

	/* tmp/ missing: open fails with errno. */
	memset(w, 0, sizeof(*w));
	CHECK_EQ_INT(rename("tmp", "tmp.away"), 0);
	errno = 0;
	CHECK_EQ_INT(spool_submit_open(w), -1);
	CHECK_EQ_INT(errno, ENOENT);
	CHECK_EQ_INT(w->fd, -1);
	CHECK_EQ_INT(rename("tmp.away", "tmp"), 0);
	spool_submit_abort(w);               /* harmless after a failed open */
	free(w);
}

/* --- reading hostile message files --- */

static const char good_qid[] = "0123456789ABCDEF";

/* A well-formed file with the given header lines (after the magic and
 * qid), data, and trailer. */
static size_t build(char *out, size_t size, const char *magic, const char *hdr, const char *data,
                    size_t dlen, const char *trailer)
{
	size_t n = 0;
	n += (size_t)snprintf(out + n, size - n, "%s", magic);
	n += (size_t)snprintf(out + n, size - n, "%s", hdr);
	memcpy(out + n, data, dlen);
	n += dlen;
	n += (size_t)snprintf(out + n, size - n, "%s", trailer);
	return n;
}

static int parse_bytes(const char *p, size_t n, struct spool_env *env, char *err, size_t errlen)
{
	char path[64];
	int corrupt = -1, fd;

	snprintf(path, sizeof(path), "incoming/%s", good_qid);
	write_bytes(path, p, n);
	fd = spool_msg_open("incoming", good_qid, env, &corrupt, err, errlen);
	if (fd >= 0) {
		close(fd);
		return corrupt == 0 ? 0 : 99;
	}
	return corrupt == 1 ? -1 : 98;   /* a parse failure must say corrupt */
}

#define HDR_OK "qid=0123456789ABCDEF\narrival=1\norigin=smtp\nclient=192.0.2.1\nhelo=h\nproto=ESMTP\n" \
               "body=7bit\nsmtputf8=0\nauth=\nsender=a@b.example\nrcpt=c@d.example\n\n"

static void test_parse_table(void)
{
	static const struct {
		const char *what;
		const char *magic;
		const char *hdr;
		const char *data;
		size_t dlen;
		const char *trailer;
		int ok;
		const char *err;   /* substring */
	} cases[] = {
		{ "good", "POSTERN-QUEUE 1\n", HDR_OK, L("hi\r\n"), "POSTERN-END 4\n", 0, NULL },
		{ "good, empty data", "POSTERN-QUEUE 1\n", HDR_OK, L(""), "POSTERN-END 0\n", 0, NULL },
		{ "unknown key tolerated", "POSTERN-QUEUE 1\n", "future=1\n" HDR_OK, L("x"), "POSTERN-END 1\n", 0, NULL },
		{ "minimal header", "POSTERN-QUEUE 1\n", "qid=0123456789ABCDEF\nrcpt=c@d.example\n\n", L("x"),
		  "POSTERN-END 1\n", 0, NULL },
		{ "data with a marker lookalike", "POSTERN-QUEUE 1\n", HDR_OK, L("POSTERN-END 0\n"),
		  "POSTERN-END 14\n", 0, NULL },
		/* magic */
		{ "wrong version", "POSTERN-QUEUE 2\n", HDR_OK, L("x"), "POSTERN-END 1\n", -1, "bad magic" },
		{ "no magic", "", HDR_OK, L("x"), "POSTERN-END 1\n", -1, "bad magic" },
		{ "CRLF magic", "POSTERN-QUEUE 1\r\n", HDR_OK, L("x"), "POSTERN-END 1\n", -1, "bad magic" },
		/* trailer */
		{ "no trailer", "POSTERN-QUEUE 1\n", HDR_OK, L("hi\r\n"), "", -1, "end marker missing" },
		{ "trailer without LF", "POSTERN-QUEUE 1\n", HDR_OK, L("hi\r\n"), "POSTERN-END 4", -1, "end marker missing" },
		{ "length + 1", "POSTERN-QUEUE 1\n", HDR_OK, L("hi\r\n"), "POSTERN-END 5\n", -1, "does not match" },
		{ "length - 1", "POSTERN-QUEUE 1\n", HDR_OK, L("hi\r\n"), "POSTERN-END 3\n", -1, "does not match" },
		{ "length 0", "POSTERN-QUEUE 1\n", HDR_OK, L("hi\r\n"), "POSTERN-END 0\n", -1, "does not match" },
		{ "length huge", "POSTERN-QUEUE 1\n", HDR_OK, L("hi\r\n"), "POSTERN-END 18446744073709551615\n", -1, NULL },
		{ "length overflow", "POSTERN-QUEUE 1\n", HDR_OK, L("hi\r\n"), "POSTERN-END 99999999999999999999\n", -1,
		  "end marker missing" },
		{ "length junk", "POSTERN-QUEUE 1\n", HDR_OK, L("hi\r\n"), "POSTERN-END 4x\n", -1, "end marker missing" },
		{ "length negative", "POSTERN-QUEUE 1\n", HDR_OK, L("hi\r\n"), "POSTERN-END -4\n", -1, "end marker missing" },
		{ "length CRLF", "POSTERN-QUEUE 1\n", HDR_OK, L("hi\r\n"), "POSTERN-END 4\r\n", -1, "end marker missing" },
		{ "two spaces", "POSTERN-QUEUE 1\n", HDR_OK, L("hi\r\n"), "POSTERN-END  4\n", -1, "end marker missing" },
		{ "lowercase marker", "POSTERN-QUEUE 1\n", HDR_OK, L("hi\r\n"), "postern-end 4\n", -1, "end marker missing" },
		{ "garbage after trailer", "POSTERN-QUEUE 1\n", HDR_OK, L("hi\r\n"), "POSTERN-END 4\nxx\n", -1, NULL },
		/* header garbage */
		{ "no blank line", "POSTERN-QUEUE 1\n", "qid=0123456789ABCDEF\nrcpt=c@d.example\n", L(""), "", -1,
		  "header not terminated" },
		{ "line without =", "POSTERN-QUEUE 1\n", "qid=0123456789ABCDEF\ngarbage\nrcpt=c@d.example\n\n", L("x"),
		  "POSTERN-END 1\n", -1, "header line without '='" },
		{ "control byte", "POSTERN-QUEUE 1\n", "qid=0123456789ABCDEF\nhelo=a\x01z\nrcpt=c@d.example\n\n", L("x"),
		  "POSTERN-END 1\n", -1, "control byte in header" },
		{ "CR in header", "POSTERN-QUEUE 1\n", "qid=0123456789ABCDEF\r\nrcpt=c@d.example\n\n", L("x"),
		  "POSTERN-END 1\n", -1, "control byte in header" },
		{ "DEL in header", "POSTERN-QUEUE 1\n", "qid=0123456789ABCDEF\nhelo=a\x7f\nrcpt=c@d.example\n\n", L("x"),
		  "POSTERN-END 1\n", -1, "control byte in header" },
		{ "bad arrival", "POSTERN-QUEUE 1\n", "qid=0123456789ABCDEF\narrival=-5\nrcpt=c@d.example\n\n", L("x"),
		  "POSTERN-END 1\n", -1, "bad value for 'arrival'" },
		{ "arrival overflow", "POSTERN-QUEUE 1\n", "qid=0123456789ABCDEF\narrival=9223372036854775808\nrcpt=c@d.example\n\n",
		  L("x"), "POSTERN-END 1\n", -1, "bad value for 'arrival'" },
		{ "smtputf8=2", "POSTERN-QUEUE 1\n", "qid=0123456789ABCDEF\nsmtputf8=2\nrcpt=c@d.example\n\n", L("x"),
		  "POSTERN-END 1\n", -1, "bad value for 'smtputf8'" },
		{ "qid traversal", "POSTERN-QUEUE 1\n", "qid=../../etc/passwd\nrcpt=c@d.example\n\n", L("x"),
		  "POSTERN-END 1\n", -1, "bad value for 'qid'" },
		{ "qid too long", "POSTERN-QUEUE 1\n", "qid=0123456789ABCDEF0123456789ABCDEF0\nrcpt=c@d.example\n\n", L("x"),
		  "POSTERN-END 1\n", -1, "bad value for 'qid'" },
		{ "no qid", "POSTERN-QUEUE 1\n", "rcpt=c@d.example\n\n", L("x"), "POSTERN-END 1\n", -1,
		  "header lacks qid" },
		{ "no recipients", "POSTERN-QUEUE 1\n", "qid=0123456789ABCDEF\nsender=a@b.example\n\n", L("x"),
		  "POSTERN-END 1\n", -1, "header lacks recipients" },
		{ "bad recipient", "POSTERN-QUEUE 1\n", "qid=0123456789ABCDEF\nrcpt=c@d.example\nrcpt=not an address\n\n",
		  L("x"), "POSTERN-END 1\n", -1, "bad recipient #1" },
		{ "recipient <x>", "POSTERN-QUEUE 1\n", "qid=0123456789ABCDEF\nrcpt=<c@d.example>\n\n", L("x"),
		  "POSTERN-END 1\n", -1, "bad recipient #0" },
		{ "empty recipient", "POSTERN-QUEUE 1\n", "qid=0123456789ABCDEF\nrcpt=\n\n", L("x"), "POSTERN-END 1\n",
		  -1, "bad recipient #0" },
		{ "bad sender", "POSTERN-QUEUE 1\n", "qid=0123456789ABCDEF\nsender=a@@b\nrcpt=c@d.example\n\n", L("x"),
		  "POSTERN-END 1\n", -1, "bad sender" },
		{ "helo too long", "POSTERN-QUEUE 1\n",
		  "qid=0123456789ABCDEF\nhelo=hhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhh"
		  "hhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhh"
		  "hhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhh\n"
		  "rcpt=c@d.example\n\n", L("x"), "POSTERN-END 1\n", -1, "bad value for 'helo'" },
		{ "origin too long", "POSTERN-QUEUE 1\n", "qid=0123456789ABCDEF\norigin=0123456789abcdef\nrcpt=c@d.example\n\n",
		  L("x"), "POSTERN-END 1\n", -1, "bad value for 'origin'" },
		{ "other qid", "POSTERN-QUEUE 1\n", "qid=0123456789ABCDEE\nrcpt=c@d.example\n\n", L("x"),
		  "POSTERN-END 1\n", -1, "names queue id 0123456789ABCDEE" },
	};
	char buf[4096], err[256];

	for (size_t i = 0; i < NELEM(cases); i++) {
		struct spool_env env;
		ROW("%s", cases[i].what);
		size_t n = build(buf, sizeof(buf), cases[i].magic, cases[i].hdr, cases[i].data, cases[i].dlen,
		                 cases[i].trailer);
		strcpy(err, "unset");
		int r = parse_bytes(buf, n, &env, err, sizeof(err));
		CHECK_EQ_INT(r, cases[i].ok);
		if (r == 0) {
			CHECK_EQ_U64(env.data_len, cases[i].dlen);
			CHECK_EQ_U64(env.data_off, strlen(cases[i].magic) + strlen(cases[i].hdr));
			spool_env_free(&env);
		} else {
			CHECK(strcmp(err, "unset") != 0 && err[0] != '\0');
			if (cases[i].err)
				CHECK_CONTAINS(err, cases[i].err);
			CHECK(env.rcpt == NULL);   /* nothing leaked or left dangling */
		}
	}
}

/* Bytes that C strings would hide: a NUL inside a header line must not
 * cut the value short and pass. */
static void test_parse_nul(void)
{
	static const struct {
		const char *what;
		const char *file;
		size_t len;
		const char *err;
	} cases[] = {
		{ "NUL in rcpt", L("POSTERN-QUEUE 1\nqid=0123456789ABCDEF\nrcpt=c@d.example\0junk\n\nxPOSTERN-END 1\n"),
		  "control byte in header" },
		{ "NUL in helo", L("POSTERN-QUEUE 1\nqid=0123456789ABCDEF\nhelo=a\0b\nrcpt=c@d.example\n\nxPOSTERN-END 1\n"),
		  "control byte in header" },
		{ "NUL key", L("POSTERN-QUEUE 1\nqid=0123456789ABCDEF\n\0=x\nrcpt=c@d.example\n\nxPOSTERN-END 1\n"),
		  "control byte in header" },
		{ "NUL in trailer", L("POSTERN-QUEUE 1\nqid=0123456789ABCDEF\nrcpt=c@d.example\n\nxPOSTERN-END 1\0\n"),
		  "torn file" },
	};

	for (size_t i = 0; i < NELEM(cases); i++) {
		struct spool_env env;
		char err[256] = "";
		ROW("%s", cases[i].what);
		int r = parse_bytes(cases[i].file, cases[i].len, &env, err, sizeof(err));
		CHECK_EQ_INT(r, -1);
		CHECK_CONTAINS(err, cases[i].err);
		if (r == 0)
			spool_env_free(&env);
	}
}

/* Truncating a committed file anywhere makes it torn, never valid. */
static void test_truncation(void)
{
	struct spool_env env;
	char qid[QID_MAX], path[64], err[256];
	size_t len;
	char data[300];

	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = "line of text\r\n"[i % 14];
	env_fill(&env, rcpts, NELEM(rcpts));
	CHECK_EQ_INT(submit(&env, data, sizeof(data), qid), 0);
	snprintf(path, sizeof(path), "incoming/%s", qid);
	char *file = read_all(path, &len);
	CHECK(file != NULL && len > sizeof(data));
	int accepted = 0, not_corrupt = 0;
	for (size_t cut = 0; file != NULL && cut < len; cut++) {
		struct spool_env got;
		int corrupt = 0;
		write_bytes(path, file, cut);
		int fd = spool_msg_open("incoming", qid, &got, &corrupt, err, sizeof(err));
		if (fd >= 0) {
			accepted++;
			printf("     accepted at %zu of %zu\n", cut, len);
			spool_env_free(&got);
			close(fd);
		} else if (!corrupt) {
			not_corrupt++;
		}
	}
	CHECK_EQ_INT(accepted, 0);
	CHECK_EQ_INT(not_corrupt, 0);
	/* Restored whole, it parses again. */
	if (file != NULL) {
		struct spool_env got;
		int corrupt;
		write_bytes(path, file, len);
		int fd = spool_msg_open("incoming", qid, &got, &corrupt, err, sizeof(err));
		CHECK(fd >= 0);
		if (fd >= 0) {
			spool_env_free(&got);
			close(fd);
		}
	}
	free(file);
	unlink(path);
}

static void test_open_errors(void)
{
	struct spool_env env;
	char err[256], path[64];
	int corrupt;

	corrupt = 7;
	CHECK_EQ_INT(spool_msg_open("incoming", "../state/x", &env, &corrupt, err, sizeof(err)), -1);
	CHECK_EQ_INT(corrupt, 0);
	CHECK_STR(err, "invalid queue id");
	corrupt = 7;
	CHECK_EQ_INT(spool_msg_open("incoming", "FFFFFFFFFFFFFFFF", &env, &corrupt, err, sizeof(err)), -1);
	CHECK_EQ_INT(corrupt, 0);   /* missing is not corrupt */
	CHECK_CONTAINS(err, "open incoming/FFFFFFFFFFFFFFFF: ");
	CHECK_CONTAINS(err, strerror(ENOENT));
	/* A symlink is not followed. */
	snprintf(path, sizeof(path), "incoming/%s", good_qid);
	unlink(path);
	CHECK_EQ_INT(symlink("/etc/passwd", path), 0);
	corrupt = 7;
	CHECK_EQ_INT(spool_msg_open("incoming", good_qid, &env, &corrupt, err, sizeof(err)), -1);
	CHECK_EQ_INT(corrupt, 0);
	CHECK_CONTAINS(err, strerror(ELOOP));
	unlink(path);
	/* An empty file, and a header larger than SPOOL_HDR_MAX. */
	write_bytes(path, "", 0);
	CHECK_EQ_INT(spool_msg_open("incoming", good_qid, &env, &corrupt, err, sizeof(err)), -1);
	CHECK_EQ_INT(corrupt, 1);
	CHECK_CONTAINS(err, "bad magic");
	size_t big = SPOOL_HDR_MAX + 4096, n = 0;
	char *p = malloc(big + 64);
	n += (size_t)snprintf(p, big, "POSTERN-QUEUE 1\nqid=%s\nrcpt=a@b.example\nfuture=", good_qid);
	memset(p + n, 'f', big - n);   /* one unknown key with a huge value */
	n = big;
	memcpy(p + n, "\n\nPOSTERN-END 0\n", 16);
	n += 16;
	write_bytes(path, p, n);
	CHECK_EQ_INT(spool_msg_open("incoming", good_qid, &env, &corrupt, err, sizeof(err)), -1);
	CHECK_EQ_INT(corrupt, 1);
	CHECK_CONTAINS(err, "header not terminated");
	free(p);
	unlink(path);
	/* spool_msg_parse on a bad descriptor. */
	CHECK_EQ_INT(spool_msg_parse(-1, &env, err, sizeof(err)), -1);
	CHECK_CONTAINS(err, "fstat");
}

/* --- state files --- */

static void test_state_roundtrip(void)
{
	struct spool_state st, got;
	char err[256] = "", path[64];
	int missing = 7;
	const char *qid = "00000000000000A1";

	spool_state_init(&st, qid, 3);
	CHECK_STR(st.qid, qid);
	CHECK_EQ_U64(st.nrcpt, 3);
	CHECK_EQ_INT(st.r[2].state, RS_PENDING);
	st.attempts = 4;
	st.next = 1700000300;
	st.warned = 1;
	st.held = 0;
	st.r[0].state = RS_DELIVERED;
	st.r[0].attempts = 1;
	st.r[0].last = 1700000000;
	st.r[1].state = RS_DEFERRED;
	st.r[1].attempts = 3;
	st.r[1].last = 1700000100;
	spool_rcpt_set_error(&st.r[1], "451 4.7.1 Try again \xc3\xa9\r\n\x01\x7f end");
	st.r[2].state = RS_BOUNCED;
	st.r[2].attempts = 4294967295u;
	st.r[2].last = 9223372036854775807LL;
	char longerr[SPOOL_ERR_MAX + 2];
	memset(longerr, 'e', sizeof(longerr) - 1);   /* one byte too long: cut */
	longerr[sizeof(longerr) - 1] = '\0';
	spool_rcpt_set_error(&st.r[2], longerr);
	CHECK_EQ_U64(strlen(st.r[2].error), SPOOL_ERR_MAX);

	CHECK_EQ_INT(spool_state_write(&st, 1), 0);
	snprintf(path, sizeof(path), "state/%s", qid);
	CHECK(exists(path));
	snprintf(path, sizeof(path), "tmp/%s.state", qid);
	CHECK(!exists(path));

	CHECK_EQ_INT(spool_state_read(qid, 3, &got, &missing, err, sizeof(err)), 0);
	CHECK_EQ_INT(missing, 0);
	CHECK_STR(got.qid, qid);
	CHECK_EQ_INT(got.attempts, 4);
	CHECK_EQ_INT(got.next, 1700000300);
	CHECK_EQ_INT(got.warned, 1);
	CHECK_EQ_INT(got.held, 0);
	CHECK_EQ_U64(got.nrcpt, 3);
	CHECK_EQ_INT(got.r[0].state, RS_DELIVERED);
	CHECK_EQ_INT(got.r[0].attempts, 1);
	CHECK_EQ_INT(got.r[0].last, 1700000000);
	CHECK_STR(got.r[0].error, "");
	CHECK_EQ_INT(got.r[1].state, RS_DEFERRED);
	CHECK_EQ_INT(got.r[1].attempts, 3);
	CHECK_EQ_INT(got.r[1].last, 1700000100);
	CHECK_STR(got.r[1].error, "451 4.7.1 Try again ?????? end");   /* non-ASCII and controls -> '?' */
	CHECK_EQ_INT(got.r[2].state, RS_BOUNCED);
	CHECK_EQ_U64(got.r[2].attempts, 4294967295u);
	CHECK_EQ_INT(got.r[2].last, 9223372036854775807LL);
	CHECK_STR(got.r[2].error, st.r[2].error);
	spool_state_free(&got);
	CHECK(got.r == NULL);

	/* Rewriting replaces the whole state (write-temp, rename). */
	st.held = 1;
	spool_rcpt_set_error(&st.r[1], "");
	CHECK_EQ_INT(spool_state_write(&st, 1), 0);
	CHECK_EQ_INT(spool_state_read(qid, 3, &got, &missing, err, sizeof(err)), 0);
	CHECK_EQ_INT(got.held, 1);
	CHECK_STR(got.r[1].error, "");
	spool_state_free(&got);

	/* queued's form (sync 0: its group commit makes it durable): the
	 * same file, in place at once. */
	st.held = 0;
	CHECK_EQ_INT(spool_state_write(&st, 0), 0);
	snprintf(path, sizeof(path), "tmp/%s.state", qid);
	CHECK(!exists(path));
	CHECK_EQ_INT(spool_state_read(qid, 3, &got, &missing, err, sizeof(err)), 0);
	CHECK_EQ_INT(got.held, 0);
	CHECK_EQ_INT(got.r[2].state, RS_BOUNCED);
	spool_state_free(&got);

	/* A different recipient count than the file: extra indexes fail. */
	CHECK_EQ_INT(spool_state_read(qid, 2, &got, &missing, err, sizeof(err)), -1);
	CHECK_CONTAINS(err, "bad line");
	spool_state_free(&got);
	spool_state_free(&st);
	snprintf(path, sizeof(path), "state/%s", qid);
	unlink(path);

	/* Missing. */
	missing = 0;
	CHECK_EQ_INT(spool_state_read("00000000000000A2", 1, &got, &missing, err, sizeof(err)), -1);
	CHECK_EQ_INT(missing, 1);
	CHECK_CONTAINS(err, "open state/00000000000000A2: ");
	spool_state_free(&got);

	/* No state/ directory to write into. */
	CHECK_EQ_INT(rename("state", "state.away"), 0);
	spool_state_init(&st, "00000000000000A3", 1);
	errno = 0;
	CHECK_EQ_INT(spool_state_write(&st, 1), -1);
	CHECK_EQ_INT(errno, ENOENT);
	CHECK(!exists("tmp/00000000000000A3.state"));
	CHECK_EQ_INT(rename("state.away", "state"), 0);
	spool_state_free(&st);
}

static void test_state_torn(void)
{
	static const struct {
		const char *what;
		const char *text;
		size_t len;
		size_t nrcpt;
		int ok;
		const char *err;
	} cases[] = {
		{ "good", L("POSTERN-STATE 1\nqid=00000000000000B1\nattempts=1\nnext=5\nwarned=0\nheld=0\n"
		            "r=0 deferred 1 5\ne=0 451 later\nr=1 pending 0 0\nPOSTERN-END\n"), 2, 0, NULL },
		{ "good, no qid line", L("POSTERN-STATE 1\nr=0 pending 0 0\nPOSTERN-END\n"), 1, 0, NULL },
		{ "empty file", L(""), 1, -1, "bad magic" },
		{ "bad magic", L("POSTERN-STATE 2\nPOSTERN-END\n"), 1, -1, "bad magic" },
		{ "queue magic", L("POSTERN-QUEUE 1\nPOSTERN-END\n"), 1, -1, "bad magic" },
		{ "no end marker", L("POSTERN-STATE 1\nattempts=1\n"), 1, -1, "torn (no end marker)" },
		{ "cut mid-line", L("POSTERN-STATE 1\nattempts=1\nr=0 pend"), 1, -1, "line too long or torn" },
		{ "cut in marker", L("POSTERN-STATE 1\nattempts=1\nPOSTERN-EN"), 1, -1, "line too long or torn" },
		{ "marker without LF", L("POSTERN-STATE 1\nPOSTERN-END"), 1, -1, "line too long or torn" },
		{ "index out of range", L("POSTERN-STATE 1\nr=2 pending 0 0\nPOSTERN-END\n"), 2, -1, "bad line 'r'" },
		{ "error index out of range", L("POSTERN-STATE 1\ne=5 oops\nPOSTERN-END\n"), 2, -1, "bad line 'e'" },
		{ "index with no recipients", L("POSTERN-STATE 1\nr=0 pending 0 0\nPOSTERN-END\n"), 0, -1, "bad line" },
		{ "negative index", L("POSTERN-STATE 1\nr=-1 pending 0 0\nPOSTERN-END\n"), 2, -1, "bad line" },
		{ "unknown state", L("POSTERN-STATE 1\nr=0 flying 0 0\nPOSTERN-END\n"), 1, -1, "bad line" },
		{ "missing field", L("POSTERN-STATE 1\nr=0 pending 0\nPOSTERN-END\n"), 1, -1, "bad line" },
		{ "no fields", L("POSTERN-STATE 1\nr=0\nPOSTERN-END\n"), 1, -1, "bad line" },
		{ "bad attempts", L("POSTERN-STATE 1\nr=0 pending x 0\nPOSTERN-END\n"), 1, -1, "bad line" },
		{ "attempts > u32", L("POSTERN-STATE 1\nr=0 pending 4294967296 0\nPOSTERN-END\n"), 1, -1, "bad line" },
		{ "bad top attempts", L("POSTERN-STATE 1\nattempts=x\nPOSTERN-END\n"), 1, -1, "bad line 'attempts'" },
		{ "warned=2", L("POSTERN-STATE 1\nwarned=2\nPOSTERN-END\n"), 1, -1, "bad line 'warned'" },
		{ "held=-1", L("POSTERN-STATE 1\nheld=-1\nPOSTERN-END\n"), 1, -1, "bad line 'held'" },
		{ "next overflow", L("POSTERN-STATE 1\nnext=9223372036854775808\nPOSTERN-END\n"), 1, -1, "bad line 'next'" },
		{ "unknown key", L("POSTERN-STATE 1\nfuture=1\nPOSTERN-END\n"), 1, -1, "bad line 'future'" },
		{ "line without =", L("POSTERN-STATE 1\ngarbage\nPOSTERN-END\n"), 1, -1, "line without '='" },
		{ "other qid", L("POSTERN-STATE 1\nqid=00000000000000B2\nPOSTERN-END\n"), 1, -1,
		  "names queue id 00000000000000B2" },
		{ "CR line end", L("POSTERN-STATE 1\nattempts=1\r\nPOSTERN-END\n"), 1, -1, "control byte in line" },
		{ "NUL in line", L("POSTERN-STATE 1\nattempts=1\0\nPOSTERN-END\n"), 1, -1, NULL },
		{ "control byte in error text", L("POSTERN-STATE 1\ne=0 451 a\x01z\nPOSTERN-END\n"), 1, -1,
		  "control byte in line" },
		{ "escape in error text", L("POSTERN-STATE 1\ne=0 451 \x1b[31mred\nPOSTERN-END\n"), 1, -1,
		  "control byte in line" },
	};

	for (size_t i = 0; i < NELEM(cases); i++) {
		struct spool_state st;
		char err[256] = "unset";
		int missing = 7;
		ROW("%s", cases[i].what);
		write_bytes("state/00000000000000B1", cases[i].text, cases[i].len);
		int r = spool_state_read("00000000000000B1", cases[i].nrcpt, &st, &missing, err, sizeof(err));
		CHECK_EQ_INT(r, cases[i].ok);
		CHECK_EQ_INT(missing, 0);
		if (r == -1) {
			CHECK(strcmp(err, "unset") != 0);
			if (cases[i].err)
				CHECK_CONTAINS(err, cases[i].err);
		}
		spool_state_free(&st);
	}
	ROWS_END();
	/* A line longer than the reader's buffer. */
	size_t n = 20000;
	char *p = malloc(n);
	memcpy(p, "POSTERN-STATE 1\ne=0 ", 20);
	memset(p + 20, 'x', n - 20 - 13);
	memcpy(p + n - 13, "\nPOSTERN-END\n", 13);
	write_bytes("state/00000000000000B1", p, n);
	struct spool_state st;
	char err[256];
	int missing;
	CHECK_EQ_INT(spool_state_read("00000000000000B1", 1, &st, &missing, err, sizeof(err)), -1);
	CHECK_CONTAINS(err, "line too long or torn");
	spool_state_free(&st);
	free(p);
	unlink("state/00000000000000B1");
}

/* --- T2/T3/T4 helpers --- */

static void test_move_remove_purge(void)
{
	struct spool_env env;
	char qid[QID_MAX], path[64];
	struct spool_state st;

	env_fill(&env, rcpts, 1);
	CHECK_EQ_INT(submit(&env, "x\r\n", 3, qid), 0);
	/* T2 */
	CHECK_EQ_INT(spool_move("incoming", "queue", qid), 0);
	snprintf(path, sizeof(path), "incoming/%s", qid);
	CHECK(!exists(path));
	snprintf(path, sizeof(path), "queue/%s", qid);
	CHECK(exists(path));
	errno = 0;
	CHECK_EQ_INT(spool_move("incoming", "queue", qid), -1);   /* already moved */
	CHECK_EQ_INT(errno, ENOENT);
	CHECK_EQ_INT(spool_move("queue", "nosuchdir", qid), -1);
	CHECK(exists(path));
	/* T3 and back */
	CHECK_EQ_INT(spool_move("queue", "corrupt", qid), 0);
	CHECK_EQ_INT(spool_move("corrupt", "queue", qid), 0);
	/* T4 */
	spool_state_init(&st, qid, 1);
	CHECK_EQ_INT(spool_state_write(&st, 1), 0);
	spool_state_free(&st);
	CHECK_EQ_INT(spool_remove(qid, 1), 0);
	CHECK(!exists(path));
	snprintf(path, sizeof(path), "state/%s", qid);
	CHECK(!exists(path));
	CHECK_EQ_INT(spool_remove(qid, 1), 0);   /* both gone already: fine */
	/* state/Q alone (T4 cut after the first unlink) */
	spool_state_init(&st, qid, 1);
	CHECK_EQ_INT(spool_state_write(&st, 1), 0);
	spool_state_free(&st);
	CHECK_EQ_INT(spool_remove(qid, 1), 0);
	CHECK(!exists(path));
	/* T2 as queued does it now (no sync), and T4 with has_state 0:
	 * only queue/Q goes; a state/Q it was not told of stays. */
	CHECK_EQ_INT(submit(&env, "x\r\n", 3, qid), 0);
	CHECK_EQ_INT(spool_rename("incoming", "queue", qid), 0);
	CHECK_EQ_INT(spool_rename("incoming", "queue", qid), -1);
	spool_state_init(&st, qid, 1);
	CHECK_EQ_INT(spool_state_write(&st, 1), 0);
	spool_state_free(&st);
	CHECK_EQ_INT(spool_remove(qid, 0), 0);
	snprintf(path, sizeof(path), "queue/%s", qid);
	CHECK(!exists(path));
	snprintf(path, sizeof(path), "state/%s", qid);
	CHECK(exists(path));
	CHECK_EQ_INT(spool_remove(qid, 1), 0);
	CHECK(!exists(path));
	/* queue/Q is a directory: unlink fails with something other than ENOENT */
	snprintf(path, sizeof(path), "queue/%s", qid);
	CHECK_EQ_INT(mkdir(path, 0700), 0);
	CHECK_EQ_INT(spool_remove(qid, 0), -1);
	rmdir(path);

	CHECK_EQ_INT(spool_fsync_dir("queue"), 0);
	CHECK_EQ_INT(spool_fsync_dir("nosuchdir"), -1);

	/* purge: files in tmp/ go, dot files stay, subdirectories stay */
	write_bytes("tmp/AAAAAAAAAAAAAAAA", "x", 1);
	write_bytes("tmp/BBBBBBBBBBBBBBBB", "x", 1);
	write_bytes("tmp/CCCCCCCCCCCCCCCC.state", "x", 1);
	write_bytes("tmp/.keep", "x", 1);
	CHECK_EQ_INT(mkdir("tmp/sub", 0700), 0);
	CHECK_EQ_INT(spool_purge_tmp(), 3);
	CHECK(!exists("tmp/AAAAAAAAAAAAAAAA"));
	CHECK(!exists("tmp/CCCCCCCCCCCCCCCC.state"));
	CHECK(exists("tmp/.keep"));
	CHECK(exists("tmp/sub"));
	CHECK_EQ_INT(spool_purge_tmp(), 0);
	unlink("tmp/.keep");
	rmdir("tmp/sub");
	CHECK_EQ_INT(rename("tmp", "tmp.away"), 0);
	CHECK_EQ_INT(spool_purge_tmp(), -1);
	CHECK_EQ_INT(rename("tmp.away", "tmp"), 0);
}

int main(int argc, char **argv)
{
	char err[256];

	h_init(argc, argv);
	snprintf(dir, sizeof(dir), "%s", h_tmpdir("spool"));
	if (spool_init(dir, getuid(), getgid(), err, sizeof(err)) == -1 || chdir(dir) == -1) {
		printf("spool_init: %s\n", err);
		return 2;
	}
	RUN(test_init);
	RUN(test_qid_valid);
	RUN(test_rcpt_state_names);
	RUN(test_submit_cycle);
	RUN(test_submit_variants);
	RUN(test_submit_injection);
	RUN(test_submit_errors);
	RUN(test_parse_table);
	RUN(test_parse_nul);
	RUN(test_truncation);
	RUN(test_open_errors);
	RUN(test_state_roundtrip);
	RUN(test_state_torn);
	RUN(test_move_remove_purge);
	if (chdir("/") == 0)
		h_rm_tree(dir);
	return h_done();
}
