#include "ipc.h"
#include "log.h"
#include "str.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

void ipc_msg_init(struct ipc_msg *m, uint32_t type)
{
	memset(m, 0, sizeof(*m));
	m->type = type;
	m->fd = -1;
	m->data = xmalloc(256);
	memcpy(m->data, &type, 4);
	m->len = 4;
	m->pos = 4;
}

void ipc_msg_free(struct ipc_msg *m)
{
	free(m->data);
	m->data = NULL;
	m->len = m->pos = 0;
}

static void put(struct ipc_msg *m, const void *p, size_t n)
{
	if (m->overflow || m->len + n > IPC_MSG_MAX) {
		m->overflow = 1;
		return;
	}
	/* Grow by powers of two from 256; malloc_usable_size is not portable. */
	size_t cap = 256;
	while (cap < m->len)
		cap *= 2;
	if (m->len + n > cap) {
		while (cap < m->len + n)
			cap *= 2;
		m->data = xrealloc(m->data, cap);
	}
	memcpy(m->data + m->len, p, n);
	m->len += n;
}

void ipc_put_u32(struct ipc_msg *m, uint32_t v)
{
	put(m, &v, 4);
}

void ipc_put_u64(struct ipc_msg *m, uint64_t v)
{
	put(m, &v, 8);
}

void ipc_put_str(struct ipc_msg *m, const char *s)
{
	uint32_t n = (uint32_t)strlen(s);
	put(m, &n, 4);
	put(m, s, n);
}

int ipc_get_u32(struct ipc_msg *m, uint32_t *v)
{
	if (m->len - m->pos < 4)
		return -1;
	memcpy(v, m->data + m->pos, 4);
	m->pos += 4;
	return 0;
}

int ipc_get_u64(struct ipc_msg *m, uint64_t *v)
{
	if (m->len - m->pos < 8)
		return -1;
	memcpy(v, m->data + m->pos, 8);
	m->pos += 8;
	return 0;
}

int ipc_get_str(struct ipc_msg *m, char *out, size_t max)
{
	uint32_t n;

	if (m->len - m->pos < 4)
		return -1;
	memcpy(&n, m->data + m->pos, 4);
	if (n >= max || m->len - m->pos - 4 < n)
		return -1;
	if (memchr(m->data + m->pos + 4, '\0', n) != NULL)
		return -1;
	memcpy(out, m->data + m->pos + 4, n);
	out[n] = '\0';
	m->pos += 4 + n;
	return 0;
}

int ipc_end(const struct ipc_msg *m)
{
	return m->pos == m->len ? 0 : -1;
}

int ipc_msg_parse(struct ipc_msg *m, const void *raw, size_t len)
{
	memset(m, 0, sizeof(*m));
	m->fd = -1;
	if (len < 4 || len > IPC_MSG_MAX)
		return -1;
	m->data = xmalloc(len);
	memcpy(m->data, raw, len);
	memcpy(&m->type, raw, 4);
	m->len = len;
	m->pos = 4;
	return 0;
}

/* --- channels --- */

struct out {
	struct out *next;
	unsigned char *data;
	size_t len;
	int fd;
};

struct ipc_chan {
	int fd;
	ipc_msg_cb *on_msg;
	ipc_close_cb *on_close;
	void *arg;
	struct out *head, **tail;
	size_t pending;
	int dead;
	int in_cb;            /* inside chan_io(): callbacks may free the channel */
	int free_pending;     /* ipc_chan_free() was called from a callback */
	int send_failed;      /* the peer is gone; closed from the event loop */
};

static void chan_io(int fd, int events, void *arg);

struct ipc_chan *ipc_chan_new(int fd, ipc_msg_cb *on_msg, ipc_close_cb *on_close, void *arg)
{
	struct ipc_chan *ch = xcalloc(1, sizeof(*ch));

	ch->fd = fd;
	ch->on_msg = on_msg;
	ch->on_close = on_close;
	ch->arg = arg;
	ch->tail = &ch->head;
	(void)fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	if (ev_add(fd, EV_READ, chan_io, ch) == -1) {
		free(ch);
		return NULL;
	}
	return ch;
}

int ipc_chan_fd(const struct ipc_chan *ch)
{
	return ch->fd;
}

size_t ipc_pending(const struct ipc_chan *ch)
{
	return ch->pending;
}

void ipc_chan_free(struct ipc_chan *ch)
{
	struct out *o, *n;

	if (ch == NULL)
		return;
	if (ch->in_cb > 0) {
		/* Called from this channel's own callback: chan_io() still holds
		 * ch and frees it when the callback returns. */
		ch->free_pending = 1;
		ch->dead = 1;
		ev_del(ch->fd);
		return;
	}
	ev_del(ch->fd);
	close(ch->fd);
	for (o = ch->head; o; o = n) {
		n = o->next;
		if (o->fd >= 0)
			close(o->fd);
		free(o->data);
		free(o);
	}
	free(ch);
}

static int send_raw(int fd, const void *data, size_t len, int pass_fd)
{
	struct iovec iov = { (void *)data, len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	union {
		struct cmsghdr hdr;
		char buf[CMSG_SPACE(sizeof(int))];
	} cm;

	if (pass_fd >= 0) {
		memset(&cm, 0, sizeof(cm));
		mh.msg_control = cm.buf;
		mh.msg_controllen = sizeof(cm.buf);
		struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &pass_fd, sizeof(int));
	}
	ssize_t r;
	do {
		r = sendmsg(fd, &mh, MSG_NOSIGNAL);
	} while (r == -1 && errno == EINTR);
	return r == -1 ? -1 : 0;
}

static void chan_close(struct ipc_chan *ch)
{
	if (ch->dead)
		return;
	ch->dead = 1;
	ev_del(ch->fd);
	if (ch->on_close)
		ch->on_close(ch, ch->arg);
}

static int flush(struct ipc_chan *ch)
{
	while (ch->head) {
		struct out *o = ch->head;
		if (send_raw(ch->fd, o->data, o->len, o->fd) == -1) {
			if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS) {
				ev_mod(ch->fd, EV_READ | EV_WRITE);
				return 0;
			}
			return -1;
		}
		ch->head = o->next;
		if (ch->head == NULL)
			ch->tail = &ch->head;
		ch->pending--;
		if (o->fd >= 0)
			close(o->fd);
		free(o->data);
		free(o);
	}
	ev_mod(ch->fd, EV_READ);
	return 0;
}

int ipc_send(struct ipc_chan *ch, struct ipc_msg *m, int fd)
{
	struct out *o;

	if (m->overflow) {
		ipc_msg_free(m);
		log_panic("event=panic what=ipc_send error=\"message exceeds %d bytes\"", IPC_MSG_MAX);
	}
	if (ch == NULL || ch->dead || ch->send_failed) {
		ipc_msg_free(m);
		return -1;
	}
	o = xcalloc(1, sizeof(*o));
	o->data = m->data;
	o->len = m->len;
	o->fd = fd >= 0 ? fcntl(fd, F_DUPFD_CLOEXEC, 3) : -1;
	m->data = NULL;
	*ch->tail = o;
	ch->tail = &o->next;
	ch->pending++;
	if (flush(ch) == -1) {
		/* Never run the close callback from inside a send: the caller
		 * may be in the middle of using the channel (or the object that
		 * owns it).  The event loop reports the close right after. */
		ch->send_failed = 1;
		ev_mod(ch->fd, EV_READ | EV_WRITE);
		return -1;
	}
	return 0;
}

static int recv_raw(int fd, unsigned char *buf, size_t size, size_t *len, int *rfd)
{
	struct iovec iov = { buf, size };
	union {
		struct cmsghdr hdr;
		char buf[CMSG_SPACE(sizeof(int) * 4)];
	} cm;
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.buf,
	                     .msg_controllen = sizeof(cm.buf) };
	ssize_t r;

	*rfd = -1;
	do {
		r = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);
	} while (r == -1 && errno == EINTR);
	if (r <= 0)
		return (int)r;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
			size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
			int fds[4];
			memcpy(fds, CMSG_DATA(c), n * sizeof(int));
			for (size_t i = 0; i < n; i++) {
				if (*rfd == -1)
					*rfd = fds[i];
				else
					close(fds[i]);  /* we accept one fd per message */
			}
		}
	}
	if (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
		if (*rfd >= 0)
			close(*rfd);
		errno = EMSGSIZE;
		return -1;
	}
	*len = (size_t)r;
	return 1;
}

static void chan_io_run(int fd, int events, struct ipc_chan *ch)
{
	static unsigned char buf[IPC_MSG_MAX];

	if (ch->send_failed) {
		chan_close(ch);
		return;
	}
	if (events & EV_WRITE) {
		if (flush(ch) == -1) {
			chan_close(ch);
			return;
		}
	}
	if (!(events & EV_READ))
		return;
	/* Bounded batch so one busy peer cannot starve the loop. */
	for (int i = 0; i < 64 && !ch->dead && !ch->send_failed; i++) {
		size_t len;
		int rfd, r = recv_raw(fd, buf, sizeof(buf), &len, &rfd);
		struct ipc_msg m;

		if (r == -1 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (r <= 0) {
			if (r == -1)
				log_warn("event=ipc_error fd=%d error=%s", fd, log_q(strerror(errno)));
			chan_close(ch);
			return;
		}
		if (ipc_msg_parse(&m, buf, len) == -1) {
			if (rfd >= 0)
				close(rfd);
			log_warn("event=ipc_error fd=%d error=\"short message (%zu bytes)\"", fd, len);
			chan_close(ch);
			return;
		}
		m.fd = rfd;
		ch->on_msg(ch, &m, ch->arg);
		ipc_msg_free(&m);
	}
}

static void chan_io(int fd, int events, void *arg)
{
	struct ipc_chan *ch = arg;

	ch->in_cb++;
	chan_io_run(fd, events, ch);
	if (--ch->in_cb == 0 && ch->free_pending)
		ipc_chan_free(ch);
}

int ipc_send_sync(int fd, struct ipc_msg *m, int pass_fd)
{
	struct pollfd p = { fd, POLLOUT, 0 };

	if (m->overflow)
		return -1;
	for (;;) {
		if (send_raw(fd, m->data, m->len, pass_fd) == 0)
			return 0;
		if (errno != EAGAIN && errno != EWOULDBLOCK && errno != ENOBUFS)
			return -1;
		if (poll(&p, 1, 5000) <= 0)
			return -1;
	}
}

int ipc_recv_sync(int fd, struct ipc_msg *m, int timeout_ms)
{
	static unsigned char buf[IPC_MSG_MAX];
	struct pollfd p = { fd, POLLIN, 0 };
	size_t len;
	int rfd, r;

	for (;;) {
		r = poll(&p, 1, timeout_ms);
		if (r == -1 && errno == EINTR)
			continue;
		if (r <= 0) {
			errno = r == 0 ? ETIMEDOUT : errno;
			return -1;
		}
		r = recv_raw(fd, buf, sizeof(buf), &len, &rfd);
		if (r == -1 && (errno == EAGAIN || errno == EWOULDBLOCK))
			continue;
		if (r <= 0) {
			if (r == 0)
				errno = ECONNRESET;
			return -1;
		}
		if (ipc_msg_parse(m, buf, len) == -1) {
			if (rfd >= 0)
				close(rfd);
			errno = EPROTO;
			return -1;
		}
		m->fd = rfd;
		return 0;
	}
}

int ipc_connect(const char *path)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	int fd;

	if (str_copy(sun.sun_path, path, sizeof(sun.sun_path)) == -1) {
		errno = ENAMETOOLONG;
		return -1;
	}
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return -1;
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == -1) {
		int e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

int ipc_listen(const char *path, int mode)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	int fd;

	if (str_copy(sun.sun_path, path, sizeof(sun.sun_path)) == -1) {
		errno = ENAMETOOLONG;
		return -1;
	}
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd == -1)
		return -1;
	unlink(path);
	mode_t old = umask(0777 & ~(mode_t)mode);
	int r = bind(fd, (struct sockaddr *)&sun, sizeof(sun));
	umask(old);
	if (r == -1 || listen(fd, 128) == -1) {
		int e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}
