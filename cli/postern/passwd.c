/* passwd - smtpd.auth_users lines for the postern CLI; see passwd.h. */
#include "passwd.h"

#include "config.h"
#include "fdio.h"
#include "str.h"

#include <crypt.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sysexits.h>
#include <termios.h>
#include <unistd.h>

#define PASSWD_NAME_MAX 255            /* smtpd's AUTH_NAME_MAX */
#define PASSWD_PW_MAX 1024             /* bytes of one password */
#define PASSWD_FILE_MAX (4 << 20)      /* bytes of a users file we rewrite */
#define PASSWD_SALT_LEN 16

static const char salt_chars[] = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

static int name_ok(const char *name)
{
	size_t n = strlen(name);

	if (n == 0 || n > PASSWD_NAME_MAX || name[0] == '#')
		return 0;
	for (const unsigned char *p = (const unsigned char *)name; *p; p++)
		if (*p == ':' || *p < 0x20 || *p == 0x7f)
			return 0;
	return 1;
}

/* One line from fd 0 into buf (without the line end); -1 on EOF/too long. */
static int read_line(char *buf, size_t len)
{
	size_t n = 0;
	char c;

	for (;;) {
		ssize_t r = read(0, &c, 1);
		if (r == -1 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		if (c == '\n')
			break;
		if (n + 1 >= len)
			return -1;
		buf[n++] = c;
	}
	if (n > 0 && buf[n - 1] == '\r')
		n--;
	buf[n] = '\0';
	return 0;
}

/* Prompt on the tty with echo off. */
static int read_tty(const char *prompt, char *buf, size_t len)
{
	struct termios old, noecho;
	int rc;

	fputs(prompt, stderr);
	fflush(stderr);
	if (tcgetattr(0, &old) == -1)
		return -1;
	noecho = old;
	noecho.c_lflag &= ~(tcflag_t)ECHO;
	noecho.c_lflag |= ECHONL;
	if (tcsetattr(0, TCSAFLUSH, &noecho) == -1)
		return -1;
	rc = read_line(buf, len);
	tcsetattr(0, TCSAFLUSH, &old);
	return rc;
}

static int read_password(char *pw, size_t len)
{
	if (isatty(0)) {
		char again[PASSWD_PW_MAX + 2];
		if (read_tty("Password: ", pw, len) == -1 || read_tty("Again: ", again, sizeof(again)) == -1) {
			fprintf(stderr, "postern: cannot read the password\n");
			return -1;
		}
		int same = strcmp(pw, again) == 0;
		explicit_bzero(again, sizeof(again));
		if (!same) {
			fprintf(stderr, "postern: the passwords differ\n");
			return -1;
		}
	} else if (read_line(pw, len) == -1) {
		fprintf(stderr, "postern: password longer than %d bytes\n", PASSWD_PW_MAX);
		return -1;
	}
	if (pw[0] == '\0') {
		fprintf(stderr, "postern: empty password\n");
		return -1;
	}
	return 0;
}

static int make_hash(const char *pw, char *out, size_t len)
{
	static struct crypt_data cd;
	unsigned char rnd[PASSWD_SALT_LEN];
	char setting[3 + PASSWD_SALT_LEN + 2];
	size_t got = 0;

	while (got < sizeof(rnd)) {
		ssize_t r = getrandom(rnd + got, sizeof(rnd) - got, 0);
		if (r == -1 && errno == EINTR)
			continue;
		if (r == -1) {
			fprintf(stderr, "postern: getrandom: %s\n", strerror(errno));
			return -1;
		}
		got += (size_t)r;
	}
	memcpy(setting, "$6$", 3);
	for (size_t i = 0; i < PASSWD_SALT_LEN; i++)
		setting[3 + i] = salt_chars[rnd[i] & 63];   /* 256 = 4 * 64: uniform */
	setting[3 + PASSWD_SALT_LEN] = '$';
	setting[4 + PASSWD_SALT_LEN] = '\0';
	memset(&cd, 0, sizeof(cd));
	const char *h = crypt_r(pw, setting, &cd);
	int rc = 0;
	if (h == NULL || strncmp(h, "$6$", 3) != 0 || str_copy(out, h, len) == -1) {
		fprintf(stderr, "postern: crypt(3) cannot make a SHA-512 hash\n");
		rc = -1;
	}
	explicit_bzero(&cd, sizeof(cd));
	return rc;
}

/* Read the whole file (NULL and *len 0 if it does not exist). */
static int slurp(const char *path, char **data, size_t *len, struct stat *st, int *exists)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);

	*data = NULL;
	*len = 0;
	*exists = 0;
	if (fd == -1) {
		if (errno == ENOENT)
			return 0;
		fprintf(stderr, "postern: cannot open %s: %s\n", path, strerror(errno));
		return -1;
	}
	if (fstat(fd, st) == -1 || !S_ISREG(st->st_mode) || st->st_size > PASSWD_FILE_MAX) {
		fprintf(stderr, "postern: %s is not a regular file of at most %d bytes\n", path,
		        PASSWD_FILE_MAX);
		close(fd);
		return -1;
	}
	*exists = 1;
	*data = xmalloc((size_t)st->st_size + 1);
	while (*len < (size_t)st->st_size) {
		ssize_t r = read(fd, *data + *len, (size_t)st->st_size - *len);
		if (r == -1 && errno == EINTR)
			continue;
		if (r <= 0) {
			fprintf(stderr, "postern: cannot read %s: %s\n", path, r ? strerror(errno) : "short read");
			close(fd);
			free(*data);
			*data = NULL;
			return -1;
		}
		*len += (size_t)r;
	}
	close(fd);
	return 0;
}

/* Add or replace NAME's line in path: temp file, fsync, rename. */
static int update_file(const char *path, const char *name, const char *line)
{
	char tmp[PATH_MAX], dir[PATH_MAX];
	struct stat st;
	char *data;
	size_t len, nl = strlen(name);
	int exists, replaced = 0, fd, rc = -1;

	if (slurp(path, &data, &len, &st, &exists) == -1)
		return -1;
	if (str_copy(dir, path, sizeof(dir)) == -1 || str_fmt(tmp, sizeof(tmp), "%s.tmpXXXXXX", path) == -1) {
		fprintf(stderr, "postern: path too long: %s\n", path);
		free(data);
		return -1;
	}
	fd = mkostemp(tmp, O_CLOEXEC);
	if (fd == -1) {
		fprintf(stderr, "postern: cannot create %s: %s\n", tmp, strerror(errno));
		free(data);
		return -1;
	}
	/* mkostemp makes 0600; keep the old mode and owner. */
	if (exists && (fchmod(fd, st.st_mode & 07777) == -1 ||
	               ((st.st_uid != geteuid() || st.st_gid != getegid()) &&
	                fchown(fd, st.st_uid, st.st_gid) == -1))) {
		fprintf(stderr, "postern: cannot keep the mode and owner of %s: %s\n", path, strerror(errno));
		goto out;
	}
	for (size_t off = 0; off < len;) {
		char *e = memchr(data + off, '\n', len - off);
		size_t l = e ? (size_t)(e - (data + off)) + 1 : len - off;
		const char *s = data + off;
		if (l > nl && memcmp(s, name, nl) == 0 && s[nl] == ':') {
			if (!replaced && fdio_write_all(fd, line, strlen(line)) == -1)
				goto werr;
			replaced = 1;
		} else if (fdio_write_all(fd, s, l) == -1 || (e == NULL && fdio_write_all(fd, "\n", 1) == -1)) {
			goto werr;
		}
		off += l;
	}
	if (!replaced && fdio_write_all(fd, line, strlen(line)) == -1)
		goto werr;
	if (fsync(fd) == -1)
		goto werr;
	if (close(fd) == -1) {
		fd = -1;
		goto werr;
	}
	fd = -1;
	if (rename(tmp, path) == -1) {
		fprintf(stderr, "postern: cannot rename %s to %s: %s\n", tmp, path, strerror(errno));
		goto out;
	}
	int dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		fsync(dfd);
		close(dfd);
	}
	/* A new inode: on reload the master (root) opens it and hands it to
	 * smtpd, so even a root-only file needs no restart. */
	fprintf(stderr, "postern: %s %s in %s; `postern reload` makes smtpd read it\n",
	        replaced ? "replaced" : "added", name, path);
	rc = 0;
	goto out;
werr:
	fprintf(stderr, "postern: cannot write %s: %s\n", tmp, strerror(errno));
out:
	if (fd >= 0)
		close(fd);
	if (rc == -1)
		unlink(tmp);
	if (data) {
		explicit_bzero(data, len);
		free(data);
	}
	return rc;
}

/* smtpd.auth_users if it is configured and we may write it, else "". */
static void configured_file(const char *conf_path, char *out, size_t len)
{
	char err[1200];
	struct config *cfg;

	out[0] = '\0';
	if (conf_path == NULL || access(conf_path, R_OK) == -1)
		return;
	cfg = config_load(conf_path, err, sizeof(err));
	if (cfg == NULL)
		return;
	if (cfg->smtpd.auth_users[0] && access(cfg->smtpd.auth_users, W_OK) == 0)
		str_copy(out, cfg->smtpd.auth_users, len);
	config_free(cfg);
}

int passwd_main(const char *conf_path, int argc, char **argv)
{
	char file[PATH_MAX] = "", pw[PASSWD_PW_MAX + 2], hash[256], line[PASSWD_NAME_MAX + 260];
	const char *name = NULL;
	int explicit_file = 0;

	for (int i = 0; i < argc; i++) {
		if (strcmp(argv[i], "-f") == 0 && i + 1 < argc) {
			if (str_copy(file, argv[++i], sizeof(file)) == -1) {
				fprintf(stderr, "postern: path too long\n");
				return EX_USAGE;
			}
			explicit_file = 1;
		} else if (name == NULL && argv[i][0] != '-') {
			name = argv[i];
		} else {
			fprintf(stderr, "usage: postern passwd [-f FILE] NAME\n");
			return EX_USAGE;
		}
	}
	if (name == NULL) {
		fprintf(stderr, "usage: postern passwd [-f FILE] NAME\n");
		return EX_USAGE;
	}
	if (!name_ok(name)) {
		fprintf(stderr, "postern: a user name must be 1 to %d bytes without ':' or control "
		        "characters (and not start with '#')\n", PASSWD_NAME_MAX);
		return EX_USAGE;
	}
	if (!explicit_file)
		configured_file(conf_path, file, sizeof(file));
	if (read_password(pw, sizeof(pw)) == -1 || make_hash(pw, hash, sizeof(hash)) == -1) {
		explicit_bzero(pw, sizeof(pw));
		return 1;
	}
	explicit_bzero(pw, sizeof(pw));
	str_fmt(line, sizeof(line), "%s:%s\n", name, hash);
	fputs(line, stdout);
	if (fflush(stdout) == EOF)
		return 1;
	if (file[0] && update_file(file, name, line) == -1)
		return 1;
	return 0;
}
