/*
 * maildir - local delivery into DIR/Maildir per the Maildir spec: write
 * tmp/UNIQUE, fsync, rename into new/, fsync new/.  UNIQUE is
 * time.MusecPpidQn.host, unique per host by construction.
 *
 * The part of local.maildir before the "%u" component is opened as a
 * directory fd while deliverd is still privileged, so delivery works
 * under any parent directory; everything below it is reached with *at()
 * calls and O_NOFOLLOW, so a mailbox name can never escape the root: the
 * user name is restricted to [a-z0-9._+-] and never starts with a dot.
 * Stored files use LF line ends and start with Return-Path and
 * Delivered-To, as local delivery agents do.
 */
#include "deliverd.h"
#include "fdio.h"
#include "log.h"
#include "str.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

static int root_fd = -1;
static char rel_pattern[CONFIG_PATH_MAX];
static unsigned delivery_count;

int maildir_open_root(const char *pattern)
{
	char root[CONFIG_PATH_MAX];
	char *pct, *slash;

	str_copy(root, pattern, sizeof(root));
	pct = strchr(root, '%');
	if (pct == NULL)
		pct = root + strlen(root);
	*pct = '\0';
	slash = strrchr(root, '/');
	if (slash == NULL)
		return -1;
	str_copy(rel_pattern, pattern + (slash - root) + 1, sizeof(rel_pattern));
	if (slash == root)
		slash[1] = '\0';
	else
		*slash = '\0';
	root_fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (root_fd == -1) {
		log_warn("event=maildir_root_unavailable dir=%s error=%s", log_q(root),
		         log_q(strerror(errno)));
		return -1;
	}
	return 0;
}

/* Mailbox name from the local part: lower case, "+extension" dropped. */
static int mailbox_name(const char *addr, char *out, size_t len)
{
	const char *at = strrchr(addr, '@');
	size_t n = at ? (size_t)(at - addr) : strlen(addr);
	size_t k = 0;

	if (n == 0 || addr[0] == '.' || addr[0] == '"')
		return -1;
	for (size_t i = 0; i < n; i++) {
		char c = addr[i];
		if (c == '+')
			break;
		if (c >= 'A' && c <= 'Z')
			c = (char)(c + 32);
		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
			return -1;
		if (k + 1 >= len)
			return -1;
		out[k++] = c;
	}
	out[k] = '\0';
	if (k == 0 || strcmp(out, ".") == 0 || strcmp(out, "..") == 0)
		return -1;
	return 0;
}

/* mkdir -p of rel under root_fd, then tmp/new/cur; returns a dirfd. */
static int open_maildir(const char *rel, char *err, size_t errlen)
{
	char path[CONFIG_PATH_MAX];
	int fd = dup(root_fd);

	str_copy(path, rel, sizeof(path));
	for (char *p = path, *comp; fd >= 0 && (comp = strsep(&p, "/")) != NULL;) {
		if (*comp == '\0')
			continue;
		if (mkdirat(fd, comp, 0700) == -1 && errno != EEXIST) {
			str_fmt(err, errlen, "mkdir %s: %s", comp, strerror(errno));
			close(fd);
			return -1;
		}
		int next = openat(fd, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (next == -1) {
			str_fmt(err, errlen, "open %s: %s", comp, strerror(errno));
			close(fd);
			return -1;
		}
		close(fd);
		fd = next;
	}
	if (fd == -1) {
		str_fmt(err, errlen, "maildir root: %s", strerror(errno));
		return -1;
	}
	static const char *sub[] = { "tmp", "new", "cur" };
	for (int i = 0; i < 3; i++)
		if (mkdirat(fd, sub[i], 0700) == -1 && errno != EEXIST) {
			str_fmt(err, errlen, "mkdir %s: %s", sub[i], strerror(errno));
			close(fd);
			return -1;
		}
	return fd;
}

/* Copy the message data, CRLF -> LF. */
static int copy_body(struct delivery *d, int out)
{
	char in[65536], o[65536];
	uint64_t off = d->env->data_off, left = d->env->data_len;
	int pending_cr = 0;

	while (left > 0) {
		size_t want = left < sizeof(in) ? (size_t)left : sizeof(in);
		ssize_t r = pread(d->fd, in, want, (off_t)off);
		if (r <= 0)
			return -1;
		size_t k = 0;
		for (ssize_t i = 0; i < r; i++) {
			if (pending_cr) {
				pending_cr = 0;
				if (in[i] != '\n')
					o[k++] = '\r';
			}
			if (in[i] == '\r') {
				pending_cr = 1;
				continue;
			}
			o[k++] = in[i];
		}
		if (fdio_write_all(out, o, k) == -1)
			return -1;
		off += (uint64_t)r;
		left -= (uint64_t)r;
	}
	if (pending_cr && fdio_write_all(out, "\r", 1) == -1)
		return -1;
	return 0;
}

static void deliver_one(struct delivery *d, struct rcpt_result *r)
{
	char user[128], rel[CONFIG_PATH_MAX], err[512], tmpname[256], host[256], hdr[1024];
	struct timeval tv;
	int dfd = -1, fd = -1, e;

	if (root_fd == -1) {
		r->status = 4;
		str_fmt(r->text, sizeof(r->text), "451 4.3.0 local delivery unavailable: maildir root of %s cannot be opened",
		        cfg->local.maildir);
		return;
	}
	if (mailbox_name(r->addr, user, sizeof(user)) == -1) {
		r->status = 5;
		str_fmt(r->text, sizeof(r->text), "550 5.1.1 <%s>: invalid local mailbox name", r->addr);
		return;
	}
	/* Substitute %u in the relative pattern. */
	rel[0] = '\0';
	for (const char *p = rel_pattern; *p; p++) {
		char one[2] = { *p, 0 };
		if (p[0] == '%' && p[1] == 'u') {
			str_append(rel, user, sizeof(rel));
			p++;
		} else {
			str_append(rel, one, sizeof(rel));
		}
	}
	if ((dfd = open_maildir(rel, err, sizeof(err))) == -1)
		goto temp;
	gettimeofday(&tv, NULL);
	str_copy(host, cfg->hostname, sizeof(host));
	for (char *p = host; *p; p++)
		if (*p == '/' || *p == ':')
			*p = '_';
	str_fmt(tmpname, sizeof(tmpname), "%lld.M%ldP%dQ%u.%s", (long long)tv.tv_sec, (long)tv.tv_usec,
	        (int)getpid(), ++delivery_count, host);
	char tpath[300], npath[300];
	str_fmt(tpath, sizeof(tpath), "tmp/%s", tmpname);
	str_fmt(npath, sizeof(npath), "new/%s", tmpname);
	fd = openat(dfd, tpath, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd == -1) {
		str_fmt(err, sizeof(err), "create %s/%s: %s", rel, tpath, strerror(errno));
		goto temp;
	}
	int hl = snprintf(hdr, sizeof(hdr), "Return-Path: <%s>\nDelivered-To: %s\n", d->env->sender,
	                  r->addr);
	if (hl < 0 || fdio_write_all(fd, hdr, (size_t)hl) == -1 || copy_body(d, fd) == -1 || fsync(fd) == -1) {
		e = errno;
		str_fmt(err, sizeof(err), "write %s/%s: %s", rel, tpath, strerror(e));
		unlinkat(dfd, tpath, 0);
		goto temp;
	}
	close(fd);
	fd = -1;
	if (renameat(dfd, tpath, dfd, npath) == -1) {
		str_fmt(err, sizeof(err), "rename into %s/new: %s", rel, strerror(errno));
		unlinkat(dfd, tpath, 0);
		goto temp;
	}
	int nfd = openat(dfd, "new", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (nfd == -1 || fsync(nfd) == -1) {
		str_fmt(err, sizeof(err), "fsync %s/new: %s", rel, strerror(errno));
		if (nfd >= 0)
			close(nfd);
		goto temp;
	}
	close(nfd);
	close(dfd);
	r->status = 2;
	str_fmt(r->text, sizeof(r->text), "250 2.0.0 delivered to maildir %s/%s", rel, npath);
	return;
temp:
	if (fd >= 0)
		close(fd);
	if (dfd >= 0)
		close(dfd);
	r->status = 4;
	str_fmt(r->text, sizeof(r->text), "451 4.3.0 local delivery failed: %s", err);
}

void maildir_deliver(struct delivery *d)
{
	str_copy(d->relay, "local", sizeof(d->relay));
	for (size_t i = 0; i < d->n; i++)
		deliver_one(d, &d->r[i]);
}
