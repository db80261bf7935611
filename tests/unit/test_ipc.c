/* Unit tests for shared/ipc.c: encoding and hostile decoding (truncated
 * frames, embedded NUL, bounds, trailing bytes), synchronous send/receive
 * with fd passing over SOCK_SEQPACKET, and channels on the event loop. */
#include "event.h"
#include "harness.h"
#include "ipc.h"
#include "log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

static int open_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *de;
	int n = 0;

	if (d == NULL)
		return -1;
	while ((de = readdir(d)) != NULL)
		n += de->d_name[0] != '.';
	closedir(d);
	return n - 1;   /* the DIR's own descriptor */
}

static int pair(int sv[2])
{
	return socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv);
}

/* --- encoding and decoding --- */

static void test_roundtrip(void)
{
	struct ipc_msg m, r;
	char s[64];
	uint32_t u;
	uint64_t v;

	ipc_msg_init(&m, IPC_RESULT);
	CHECK_EQ_INT(m.type, IPC_RESULT);
	CHECK_EQ_INT(m.fd, -1);
	CHECK_EQ_U64(m.len, 4);
	ipc_put_str(&m, "0123456789ABCDEF");
	ipc_put_u32(&m, 7);
	ipc_put_u32(&m, 0xffffffffu);
	ipc_put_u64(&m, 0x0123456789abcdefULL);
	ipc_put_str(&m, "");
	ipc_put_str(&m, "250 2.0.0 Ok: queued as \xc3\xa9");
	CHECK_EQ_INT(m.overflow, 0);
	/* Wire layout: type, then u32 length + bytes without NUL. */
	CHECK_EQ_U64(m.len, 4 + (4 + 16) + 4 + 4 + 8 + 4 + (4 + 26));
	uint32_t w;
	memcpy(&w, m.data, 4);
	CHECK_EQ_INT(w, IPC_RESULT);
	memcpy(&w, m.data + 4, 4);
	CHECK_EQ_INT(w, 16);
	CHECK(memcmp(m.data + 8, "0123456789ABCDEF", 16) == 0);

	CHECK_EQ_INT(ipc_msg_parse(&r, m.data, m.len), 0);
	CHECK_EQ_INT(r.type, IPC_RESULT);
	CHECK_EQ_INT(r.fd, -1);
	CHECK_EQ_INT(ipc_get_str(&r, s, sizeof(s)), 0);
	CHECK_STR(s, "0123456789ABCDEF");
	CHECK_EQ_INT(ipc_get_u32(&r, &u), 0);
	CHECK_EQ_INT(u, 7);
	CHECK_EQ_INT(ipc_get_u32(&r, &u), 0);
	CHECK_EQ_U64(u, 0xffffffffu);
	CHECK_EQ_INT(ipc_get_u64(&r, &v), 0);
	CHECK_EQ_U64(v, 0x0123456789abcdefULL);
	CHECK_EQ_INT(ipc_get_str(&r, s, sizeof(s)), 0);
	CHECK_STR(s, "");
	CHECK_EQ_INT(ipc_end(&r), -1);          /* one field left */
	CHECK_EQ_INT(ipc_get_str(&r, s, sizeof(s)), 0);
	CHECK_STR(s, "250 2.0.0 Ok: queued as \xc3\xa9");
	CHECK_EQ_INT(ipc_end(&r), 0);
	/* Past the end: every getter refuses. */
	CHECK_EQ_INT(ipc_get_u32(&r, &u), -1);
	CHECK_EQ_INT(ipc_get_u64(&r, &v), -1);
	CHECK_EQ_INT(ipc_get_str(&r, s, sizeof(s)), -1);
	ipc_msg_free(&r);
	ipc_msg_free(&m);
	CHECK(m.data == NULL);
	ipc_msg_free(&m);                       /* twice: harmless */
}

/* Decode script: u = u32, q = u64, s = str (max 64), then ipc_end. */
static int decode(const void *raw, size_t len, const char *script)
{
	struct ipc_msg m;
	char s[64];
	uint32_t u;
	uint64_t v;
	int r = 0;

	if (ipc_msg_parse(&m, raw, len) == -1)
		return -1;
	for (const char *p = script; *p && r == 0; p++) {
		if (*p == 'u')
			r = ipc_get_u32(&m, &u);
		else if (*p == 'q')
			r = ipc_get_u64(&m, &v);
		else
			r = ipc_get_str(&m, s, sizeof(s));
	}
	if (r == 0)
		r = ipc_end(&m);
	ipc_msg_free(&m);
	return r;
}

/* Every truncation of a valid frame fails to decode, none reads past the
 * end (ASan watches the exact-size copy ipc_msg_parse makes). */
static void test_truncated(void)
{
	static const char *const scripts[] = { "u", "q", "s", "usqs", "ssss", "quqs" };

	for (size_t i = 0; i < NELEM(scripts); i++) {
		struct ipc_msg m;
		ROW("%s", scripts[i]);
		ipc_msg_init(&m, IPC_JOB);
		for (const char *p = scripts[i]; *p; p++) {
			if (*p == 'u')
				ipc_put_u32(&m, 0x11223344);
			else if (*p == 'q')
				ipc_put_u64(&m, 0x5566778899aabbccULL);
			else
				ipc_put_str(&m, "a@b.example");
		}
		CHECK_EQ_INT(decode(m.data, m.len, scripts[i]), 0);
		int bad = 0;
		for (size_t cut = 0; cut < m.len; cut++) {
			unsigned char *copy = malloc(cut ? cut : 1);
			memcpy(copy, m.data, cut);
			bad += decode(copy, cut, scripts[i]) != -1;
			free(copy);
		}
		CHECK_EQ_INT(bad, 0);
		/* One byte too many is trailing garbage. */
		unsigned char *more = malloc(m.len + 1);
		memcpy(more, m.data, m.len);
		more[m.len] = 0;
		CHECK_EQ_INT(decode(more, m.len + 1, scripts[i]), -1);
		free(more);
		ipc_msg_free(&m);
	}
}

static void test_get_str_bounds(void)
{
	static const struct {
		const char *what;
		uint32_t n;          /* length field */
		const char *bytes;   /* payload after the length */
		size_t blen;
		size_t max;
		int ok;
	} cases[] = {
		{ "fits", 3, "abc", 3, 4, 0 },
		{ "length == max", 4, "abcd", 4, 4, -1 },        /* no room for the NUL */
		{ "length > max", 5, "abcde", 5, 4, -1 },
		{ "max 0", 0, "", 0, 0, -1 },
		{ "empty, max 1", 0, "", 0, 1, 0 },
		{ "embedded NUL", 3, "a\0c", 3, 16, -1 },
		{ "leading NUL", 1, "\0", 1, 16, -1 },
		{ "trailing NUL", 2, "a\0", 2, 16, -1 },
		{ "length past the end", 10, "abc", 3, 64, -1 },
		{ "length 0xffffffff", 0xffffffffu, "abc", 3, (size_t)-1, -1 },
		{ "length 0xfffffffc", 0xfffffffcu, "abc", 3, (size_t)-1, -1 },
		{ "CR LF inside", 4, "a\r\nb", 4, 16, 0 },       /* bytes are the caller's to check */
	};

	for (size_t i = 0; i < NELEM(cases); i++) {
		unsigned char raw[64];
		struct ipc_msg m;
		char out[64];
		uint32_t type = IPC_INCOMING;
		ROW("%s", cases[i].what);
		memcpy(raw, &type, 4);
		memcpy(raw + 4, &cases[i].n, 4);
		memcpy(raw + 8, cases[i].bytes, cases[i].blen);
		CHECK_EQ_INT(ipc_msg_parse(&m, raw, 8 + cases[i].blen), 0);
		memset(out, 'Z', sizeof(out));
		size_t max = cases[i].max > sizeof(out) ? sizeof(out) : cases[i].max;
		int r = ipc_get_str(&m, out, max);
		CHECK_EQ_INT(r, cases[i].ok);
		if (r == 0) {
			CHECK_MEM(out, strlen(out), cases[i].bytes, cases[i].blen);
			CHECK_EQ_INT(ipc_end(&m), 0);
		} else {
			CHECK_EQ_U64(m.pos, 4);           /* a failed get consumes nothing */
			CHECK_EQ_INT(out[max > 0 ? max - 1 : 0], 'Z');   /* nothing written */
		}
		ipc_msg_free(&m);
	}
}

static void test_parse_and_overflow(void)
{
	struct ipc_msg m;
	unsigned char raw[8] = { 5, 0, 0, 0, 1, 2, 3, 4 };

	for (size_t n = 0; n < 4; n++) {
		CHECK_EQ_INT(ipc_msg_parse(&m, raw, n), -1);
		CHECK(m.data == NULL);
		CHECK_EQ_INT(m.fd, -1);
	}
	CHECK_EQ_INT(ipc_msg_parse(&m, raw, 4), 0);
	CHECK_EQ_INT(m.type, 5);
	CHECK_EQ_INT(ipc_end(&m), 0);
	ipc_msg_free(&m);
	CHECK_EQ_INT(ipc_msg_parse(&m, raw, 8), 0);
	CHECK_EQ_INT(ipc_end(&m), -1);          /* trailing bytes */
	uint32_t u;
	CHECK_EQ_INT(ipc_get_u32(&m, &u), 0);
	CHECK_EQ_INT(u, 0x04030201);
	CHECK_EQ_INT(ipc_end(&m), 0);
	ipc_msg_free(&m);
	unsigned char *big = calloc(1, IPC_MSG_MAX + 1);
	CHECK_EQ_INT(ipc_msg_parse(&m, big, IPC_MSG_MAX + 1), -1);
	CHECK_EQ_INT(ipc_msg_parse(&m, big, IPC_MSG_MAX), 0);
	ipc_msg_free(&m);

	/* Exactly IPC_MSG_MAX bytes is fine; one more overflows. */
	char *s = malloc(IPC_MSG_MAX);
	memset(s, 'x', IPC_MSG_MAX - 8);
	s[IPC_MSG_MAX - 8] = '\0';
	ipc_msg_init(&m, IPC_JOB);
	ipc_put_str(&m, s);
	CHECK_EQ_INT(m.overflow, 0);
	CHECK_EQ_U64(m.len, IPC_MSG_MAX);
	ipc_put_u32(&m, 1);
	CHECK_EQ_INT(m.overflow, 1);
	CHECK_EQ_U64(m.len, IPC_MSG_MAX);       /* nothing appended */
	ipc_put_str(&m, "");
	CHECK_EQ_INT(m.overflow, 1);
	int sv[2];
	CHECK_EQ_INT(pair(sv), 0);
	CHECK_EQ_INT(ipc_send_sync(sv[0], &m, -1), -1);   /* never sent half */
	ipc_msg_free(&m);
	ipc_msg_init(&m, IPC_JOB);
	ipc_put_str(&m, s);
	CHECK_EQ_INT(ipc_send_sync(sv[0], &m, -1), 0);    /* the largest frame goes through */
	ipc_msg_free(&m);
	CHECK_EQ_INT(ipc_recv_sync(sv[1], &m, 1000), 0);
	CHECK_EQ_U64(m.len, IPC_MSG_MAX);
	ipc_msg_free(&m);
	close(sv[0]);
	close(sv[1]);
	free(s);
	free(big);
}

/* --- synchronous transport --- */

static void test_sync(void)
{
	int sv[2], p[2];
	struct ipc_msg m, r;
	char s[32];
	uint32_t u;

	CHECK_EQ_INT(pair(sv), 0);
	CHECK_EQ_INT(pipe(p), 0);
	/* Two messages keep their boundaries. */
	ipc_msg_init(&m, IPC_HELLO);
	ipc_put_str(&m, "smtpd");
	ipc_put_u32(&m, 1234);
	CHECK_EQ_INT(ipc_send_sync(sv[0], &m, -1), 0);
	ipc_msg_free(&m);
	ipc_msg_init(&m, IPC_INCOMING);
	ipc_put_str(&m, "0123456789ABCDEF");
	CHECK_EQ_INT(ipc_send_sync(sv[0], &m, p[1]), 0);  /* with a descriptor */
	ipc_msg_free(&m);

	CHECK_EQ_INT(ipc_recv_sync(sv[1], &r, 1000), 0);
	CHECK_EQ_INT(r.type, IPC_HELLO);
	CHECK_EQ_INT(r.fd, -1);
	CHECK_EQ_INT(ipc_get_str(&r, s, sizeof(s)), 0);
	CHECK_STR(s, "smtpd");
	CHECK_EQ_INT(ipc_get_u32(&r, &u), 0);
	CHECK_EQ_INT(u, 1234);
	CHECK_EQ_INT(ipc_end(&r), 0);
	ipc_msg_free(&r);

	CHECK_EQ_INT(ipc_recv_sync(sv[1], &r, 1000), 0);
	CHECK_EQ_INT(r.type, IPC_INCOMING);
	CHECK(r.fd >= 0 && r.fd != p[1]);
	CHECK(fcntl(r.fd, F_GETFD) & FD_CLOEXEC);
	CHECK_EQ_INT(ipc_get_str(&r, s, sizeof(s)), 0);
	CHECK_STR(s, "0123456789ABCDEF");
	/* The passed descriptor is the pipe's write end. */
	CHECK_EQ_INT(write(r.fd, "via fd", 6), 6);
	char back[8] = "";
	CHECK_EQ_INT(read(p[0], back, sizeof(back)), 6);
	CHECK_MEM(back, 6, "via fd", 6);
	close(r.fd);
	ipc_msg_free(&r);

	/* Nothing to read: a timeout. */
	errno = 0;
	CHECK_EQ_INT(ipc_recv_sync(sv[1], &r, 10), -1);
	CHECK_EQ_INT(errno, ETIMEDOUT);

	/* A frame shorter than a type: protocol error, not a message. */
	CHECK_EQ_INT(send(sv[0], "ab", 2, 0), 2);
	errno = 0;
	CHECK_EQ_INT(ipc_recv_sync(sv[1], &r, 1000), -1);
	CHECK_EQ_INT(errno, EPROTO);
	CHECK_EQ_INT(send(sv[0], "", 0, 0), 0);           /* empty datagram */
	errno = 0;
	CHECK_EQ_INT(ipc_recv_sync(sv[1], &r, 1000), -1);
	CHECK(errno == EPROTO || errno == ECONNRESET);

	/* A frame larger than IPC_MSG_MAX is refused whole. */
	char *huge = calloc(1, IPC_MSG_MAX + 100);
	if (send(sv[0], huge, IPC_MSG_MAX + 100, 0) == IPC_MSG_MAX + 100) {
		errno = 0;
		CHECK_EQ_INT(ipc_recv_sync(sv[1], &r, 1000), -1);
		CHECK_EQ_INT(errno, EMSGSIZE);
	}
	free(huge);

	/* A short frame carrying a descriptor: the descriptor is closed. */
	int before = open_fds();
	{
		char cbuf[CMSG_SPACE(sizeof(int))];
		struct iovec iov = { "xy", 2 };
		struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
		                     .msg_controllen = sizeof(cbuf) };
		struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &p[0], sizeof(int));
		CHECK_EQ_INT(sendmsg(sv[0], &mh, 0), 2);
	}
	CHECK_EQ_INT(ipc_recv_sync(sv[1], &r, 1000), -1);
	CHECK_EQ_INT(open_fds(), before);

	/* Three descriptors in one frame: one is kept, two are closed. */
	{
		int fds[3] = { p[0], p[1], sv[0] };
		char cbuf[CMSG_SPACE(sizeof(fds))];
		uint32_t type = IPC_JOB;
		struct iovec iov = { &type, 4 };
		struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
		                     .msg_controllen = sizeof(cbuf) };
		struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(fds));
		memcpy(CMSG_DATA(c), fds, sizeof(fds));
		CHECK_EQ_INT(sendmsg(sv[0], &mh, 0), 4);
	}
	CHECK_EQ_INT(ipc_recv_sync(sv[1], &r, 1000), 0);
	CHECK(r.fd >= 0);
	CHECK_EQ_INT(open_fds(), before + 1);
	close(r.fd);
	ipc_msg_free(&r);

	/* The peer goes away. */
	close(sv[0]);
	errno = 0;
	CHECK_EQ_INT(ipc_recv_sync(sv[1], &r, 1000), -1);
	CHECK_EQ_INT(errno, ECONNRESET);
	ipc_msg_init(&m, IPC_READY);
	CHECK_EQ_INT(ipc_send_sync(sv[1], &m, -1), -1);   /* EPIPE, and no SIGPIPE */
	ipc_msg_free(&m);
	close(sv[1]);
	close(p[0]);
	close(p[1]);
}

static void test_listen_connect(void)
{
	const char *d = h_tmpdir("ipc");
	char path[PATH_MAX + 32];
	struct stat sb;
	int lfd, cfd, afd;

	snprintf(path, sizeof(path), "%s/queued", d);
	lfd = ipc_listen(path, 0600);
	CHECK(lfd >= 0);
	CHECK_EQ_INT(stat(path, &sb), 0);
	CHECK(S_ISSOCK(sb.st_mode));
	CHECK_EQ_INT(sb.st_mode & 0777, 0600);
	CHECK(fcntl(lfd, F_GETFL) & O_NONBLOCK);
	/* A stale socket file is replaced. */
	int lfd2 = ipc_listen(path, 0660);
	CHECK(lfd2 >= 0);
	CHECK_EQ_INT(stat(path, &sb), 0);
	CHECK_EQ_INT(sb.st_mode & 0777, 0660);
	close(lfd);
	lfd = lfd2;

	cfd = ipc_connect(path);
	CHECK(cfd >= 0);
	afd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	CHECK(afd >= 0);
	struct ipc_msg m;
	ipc_msg_init(&m, IPC_ADMIN_REPLY);
	ipc_put_u64(&m, 99);
	CHECK_EQ_INT(ipc_send_sync(cfd, &m, -1), 0);
	ipc_msg_free(&m);
	CHECK_EQ_INT(ipc_recv_sync(afd, &m, 1000), 0);
	CHECK_EQ_INT(m.type, IPC_ADMIN_REPLY);
	ipc_msg_free(&m);
	close(cfd);
	close(afd);
	close(lfd);

	errno = 0;
	snprintf(path, sizeof(path), "%s/nothing", d);
	CHECK_EQ_INT(ipc_connect(path), -1);
	CHECK_EQ_INT(errno, ENOENT);
	char longp[200];
	memset(longp, 'a', sizeof(longp) - 1);
	longp[sizeof(longp) - 1] = '\0';
	errno = 0;
	CHECK_EQ_INT(ipc_connect(longp), -1);
	CHECK_EQ_INT(errno, ENAMETOOLONG);
	errno = 0;
	CHECK_EQ_INT(ipc_listen(longp, 0600), -1);
	CHECK_EQ_INT(errno, ENAMETOOLONG);
	snprintf(path, sizeof(path), "%s/no/such/dir", d);
	CHECK_EQ_INT(ipc_listen(path, 0600), -1);
	h_rm_tree(d);
}

/* --- channels --- */

struct sink {
	int msgs;
	int closed;
	uint32_t last_type;
	uint32_t next_seq;   /* expected sequence number */
	int out_of_order;
	int fd_ok;
	int free_in_msg;     /* ipc_chan_free() from the message callback */
	int send_in_msg;     /* ipc_send() a reply from the message callback */
	int free_in_close;   /* ipc_chan_free() from the close callback */
	struct ipc_chan *ch;
};

static void on_msg(struct ipc_chan *ch, struct ipc_msg *m, void *arg)
{
	struct sink *s = arg;
	uint32_t seq;

	s->msgs++;
	s->last_type = m->type;
	if (ipc_get_u32(m, &seq) == 0 && ipc_end(m) == 0) {
		if (seq != s->next_seq)
			s->out_of_order++;
		s->next_seq = seq + 1;
	}
	if (m->fd >= 0) {
		s->fd_ok += write(m->fd, "!", 1) == 1;
		close(m->fd);
	}
	if (s->send_in_msg) {
		struct ipc_msg r;
		ipc_msg_init(&r, IPC_DONE);
		ipc_send(ch, &r, -1);
		ipc_msg_free(&r);
	}
	if (s->free_in_msg) {
		ipc_chan_free(ch);
		s->ch = NULL;
	}
}

static void on_close(struct ipc_chan *ch, void *arg)
{
	struct sink *s = arg;
	s->closed++;
	if (s->free_in_close) {
		ipc_chan_free(ch);
		s->ch = NULL;
	}
}

static void pump(int *cond_a, int want_a, int ms)
{
	uint64_t end = ev_now_ms() + (uint64_t)ms;
	while (*cond_a < want_a && ev_now_ms() < end)
		ev_once(20);
}

static void send_seq(int fd, uint32_t type, uint32_t seq)
{
	struct ipc_msg m;
	ipc_msg_init(&m, type);
	ipc_put_u32(&m, seq);
	if (ipc_send_sync(fd, &m, -1) == -1)
		printf("     send_seq failed: %s\n", strerror(errno));
	ipc_msg_free(&m);
}

static void test_chan_basic(void)
{
	int sv[2], p[2];
	struct sink s = { 0 };

	CHECK_EQ_INT(pair(sv), 0);
	CHECK_EQ_INT(pipe(p), 0);
	s.ch = ipc_chan_new(sv[0], on_msg, on_close, &s);
	CHECK(s.ch != NULL);
	if (s.ch == NULL)
		return;
	CHECK_EQ_INT(ipc_chan_fd(s.ch), sv[0]);
	CHECK(fcntl(sv[0], F_GETFL) & O_NONBLOCK);
	CHECK_EQ_U64(ipc_pending(s.ch), 0);
	send_seq(sv[1], IPC_INCOMING, 0);
	send_seq(sv[1], IPC_INCOMING, 1);
	pump(&s.msgs, 2, 2000);
	CHECK_EQ_INT(s.msgs, 2);
	CHECK_EQ_INT(s.last_type, IPC_INCOMING);
	CHECK_EQ_INT(s.out_of_order, 0);

	/* A descriptor reaches the callback. */
	struct ipc_msg m;
	ipc_msg_init(&m, IPC_JOB);
	ipc_put_u32(&m, 2);
	CHECK_EQ_INT(ipc_send_sync(sv[1], &m, p[1]), 0);
	ipc_msg_free(&m);
	pump(&s.msgs, 3, 2000);
	CHECK_EQ_INT(s.fd_ok, 1);
	char c = 0;
	CHECK_EQ_INT(read(p[0], &c, 1), 1);
	CHECK_EQ_INT(c, '!');

	/* Channel to socket: ipc_send consumes the message, dups the fd. */
	ipc_msg_init(&m, IPC_RESULT);
	ipc_put_str(&m, "250 ok");
	CHECK_EQ_INT(ipc_send(s.ch, &m, p[1]), 0);
	CHECK(m.data == NULL);
	CHECK_EQ_U64(ipc_pending(s.ch), 0);
	struct ipc_msg r;
	CHECK_EQ_INT(ipc_recv_sync(sv[1], &r, 1000), 0);
	CHECK_EQ_INT(r.type, IPC_RESULT);
	CHECK(r.fd >= 0);
	CHECK(fcntl(p[1], F_GETFD) != -1);   /* the caller's fd is still its own */
	if (r.fd >= 0)
		close(r.fd);
	ipc_msg_free(&r);

	/* A short frame from the peer closes the channel; no message callback. */
	int before = s.msgs;
	CHECK_EQ_INT(send(sv[1], "x", 1, 0), 1);
	pump(&s.closed, 1, 2000);
	CHECK_EQ_INT(s.closed, 1);
	CHECK_EQ_INT(s.msgs, before);
	/* Sending on a dead channel fails and frees the message. */
	ipc_msg_init(&m, IPC_READY);
	CHECK_EQ_INT(ipc_send(s.ch, &m, -1), -1);
	ipc_chan_free(s.ch);
	close(sv[1]);
	close(p[0]);
	close(p[1]);
}

/* Thousands of messages through a full socket buffer: queued, then
 * flushed on writability, delivered once each and in order. */
static void test_chan_backpressure(void)
{
	int sv[2];
	struct sink tx = { 0 }, rx = { 0 };
	enum { N = 3000 };
	char pad[2000];

	CHECK_EQ_INT(pair(sv), 0);
	tx.ch = ipc_chan_new(sv[0], on_msg, on_close, &tx);
	rx.ch = ipc_chan_new(sv[1], on_msg, on_close, &rx);
	memset(pad, 'p', sizeof(pad) - 1);
	pad[sizeof(pad) - 1] = '\0';
	size_t max_pending = 0;
	for (uint32_t i = 0; i < N; i++) {
		struct ipc_msg m;
		ipc_msg_init(&m, IPC_JOB);
		ipc_put_u32(&m, i);
		CHECK_EQ_INT(ipc_send(tx.ch, &m, -1), 0);
		if (ipc_pending(tx.ch) > max_pending)
			max_pending = ipc_pending(tx.ch);
		/* a fat message every so often to fill the buffer faster */
		if (i % 3 == 0) {
			ipc_msg_init(&m, IPC_ADMIN_REPLY);
			ipc_put_str(&m, pad);
			CHECK_EQ_INT(ipc_send(tx.ch, &m, -1), 0);
		}
	}
	CHECK(max_pending > 0);   /* the buffer did fill */
	uint64_t end = ev_now_ms() + 5000;
	while ((rx.next_seq < N || ipc_pending(tx.ch) > 0) && ev_now_ms() < end)
		ev_once(20);
	CHECK_EQ_U64(ipc_pending(tx.ch), 0);
	CHECK_EQ_INT(rx.next_seq, N);
	CHECK_EQ_INT(rx.out_of_order, 0);
	CHECK_EQ_INT(rx.msgs, N + (N + 2) / 3);
	CHECK_EQ_INT(tx.closed + rx.closed, 0);
	/* Freeing with output still queued releases it (ASan checks leaks). */
	struct ipc_msg m;
	ipc_msg_init(&m, IPC_JOB);
	ipc_put_u32(&m, 0);
	ipc_send(tx.ch, &m, -1);
	ipc_chan_free(tx.ch);
	pump(&rx.closed, 1, 2000);
	CHECK_EQ_INT(rx.closed, 1);
	ipc_chan_free(rx.ch);
}

/* Callbacks that free their own channel (a protocol violation by a peer,
 * a peer gone): nothing may touch the channel afterwards. */
static void test_chan_free_in_callback(void)
{
	static const struct {
		const char *what;
		int free_in_msg, send_in_msg, free_in_close;
		int nmsgs;           /* messages queued before the loop runs */
		int close_peer;
		int want_msgs;       /* delivered before the channel went away */
	} cases[] = {
		{ "free in on_msg, one message", 1, 0, 0, 1, 0, 1 },
		{ "free in on_msg, more queued", 1, 0, 0, 5, 0, 1 },
		{ "free in on_close", 0, 0, 1, 0, 1, 0 },
		{ "messages then close, free in on_close", 0, 0, 1, 3, 1, 3 },
		/* the reply fails (EPIPE): on_close runs from the loop right
		 * after on_msg (never inside the send), frees the channel, and the
		 * second message is never delivered */
		{ "reply to a gone peer, free in on_close", 0, 1, 1, 2, 1, 1 },
	};

	for (size_t i = 0; i < NELEM(cases); i++) {
		int sv[2];
		struct sink s = { 0 };
		ROW("%s", cases[i].what);
		CHECK_EQ_INT(pair(sv), 0);
		s.free_in_msg = cases[i].free_in_msg;
		s.send_in_msg = cases[i].send_in_msg;
		s.free_in_close = cases[i].free_in_close;
		s.ch = ipc_chan_new(sv[0], on_msg, on_close, &s);
		CHECK(s.ch != NULL);
		for (int k = 0; k < cases[i].nmsgs; k++)
			send_seq(sv[1], IPC_INCOMING, (uint32_t)k);
		if (cases[i].close_peer)
			close(sv[1]);
		uint64_t end = ev_now_ms() + 2000;
		while (s.ch != NULL && ev_now_ms() < end)
			ev_once(20);
		CHECK(s.ch == NULL);
		CHECK_EQ_INT(s.msgs, cases[i].want_msgs);
		CHECK_EQ_INT(s.closed, cases[i].free_in_close ? 1 : 0);
		ev_once(0);                       /* the loop has forgotten the fd */
		if (s.ch != NULL)
			ipc_chan_free(s.ch);
		if (!cases[i].close_peer)
			close(sv[1]);
	}
}

static void test_chan_errors(void)
{
	struct sink s = { 0 };

	/* A descriptor the loop cannot watch: NULL, and the fd stays the caller's. */
	int fd = open("/dev/null", O_RDONLY);
	CHECK(ipc_chan_new(fd, on_msg, on_close, &s) == NULL);
	CHECK(fcntl(fd, F_GETFD) != -1);
	close(fd);
	ipc_chan_free(NULL);   /* harmless */
}

int main(int argc, char **argv)
{
	h_init(argc, argv);
	log_set_level(LOG_LVL_ERROR + 1);   /* expected protocol errors log warnings */
	alarm(30);
	if (ev_init() == -1)
		return 2;
	RUN(test_roundtrip);
	RUN(test_truncated);
	RUN(test_get_str_bounds);
	RUN(test_parse_and_overflow);
	RUN(test_sync);
	RUN(test_listen_connect);
	RUN(test_chan_basic);
	RUN(test_chan_backpressure);
	RUN(test_chan_free_in_callback);
	RUN(test_chan_errors);
	return h_done();
}
