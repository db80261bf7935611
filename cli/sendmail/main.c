/*
 * postern-sendmail - the sendmail(1) interface for cron, scripts and
 * programs: reads a message on stdin and stores it in the spool's drop
 * directory (T6 of shared/spool.h), where queued picks it up (T7).  It
 * works for every local user and while the daemons are down; it is not
 * set-uid and needs no privileges.
 *
 *   postern-sendmail [-t] [-i|-oi] [-f ADDR] [-F NAME] [-C FILE] [--] [RCPT ...]
 *
 * Config file: -C FILE, else $POSTERN_CONFIG, else PREFIX/etc/postern/
 * postern.conf, PREFIX being the parent of this binary's directory.
 * Harmless sendmail flags that programs pass (-oem, -odi, -oQDIR, -v, -bm,
 * -B TYPE, -N DSN, ...) are accepted and ignored; anything else is a
 * usage error.  Without -i a line holding a single "." ends the message.
 *
 * Before it says yes, the command runs the same checks queued will run
 * (shared/msgtext.c: size, NUL bytes, recipient syntax and count, -t
 * headers), so a bad message is refused here with a reason, not moved to
 * corrupt/ later.  It exits 0 only once the drop is on disk: file
 * fsynced, renamed into place, directory fsynced (or, for a user who may
 * not open the unreadable drop/, syncfs() of its filesystem).
 *
 * Exit status (sysexits.h): 0 stored; 64 usage (bad option, bad or no
 * recipient argument); 65 the message cannot be sent (too large, NUL
 * byte, too many recipients, bad or no -t recipients); 74 stdin could not
 * be read; 67 the user has no passwd entry; 75 the drop could not be
 * stored (the message names the file and the error); 78 the
 * configuration does not load.  Called as mailq (a link) it runs
 * `postern queue` instead.
 */
#include "config.h"
#include "log.h"
#include "msgtext.h"
#include "spool.h"
#include "str.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#define PROG "postern-sendmail"

static struct {
	int t;
	int i;
	const char *from;
	const char *fullname;
	const char *conf;
	char **rcpt;
	size_t nrcpt;
	int list_queue;            /* called as mailq */
} opt;

static struct config *cfg;
static struct msgtext_rcpts rcpts;
static struct msgtext text;

/* The drop being written: removed on every failure and on a signal. */
static int drop_dfd = -1;
static char drop_dir[CONFIG_PATH_MAX + 16];
static char tmp_name[SPOOL_DROP_NAME_LEN + 8], final_name[SPOOL_DROP_NAME_LEN + 1];
static volatile sig_atomic_t tmp_exists;

static struct {
	int fd;
	int err;              /* errno of the first failure */
	size_t len;
	char buf[65536];
} out = { .fd = -1 };

static void cleanup(void)
{
	if (tmp_exists)
		unlinkat(drop_dfd, tmp_name, 0);
	tmp_exists = 0;
	msgtext_free(&text);
	msgtext_rcpts_free(&rcpts);
	config_free(cfg);
	cfg = NULL;
}

static _Noreturn __attribute__((format(printf, 2, 3))) void die(int code, const char *fmt, ...)
{
	va_list ap;

	fputs(PROG ": ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	cleanup();
	exit(code);
}

static void on_signal(int sig)
{
	if (tmp_exists)
		unlinkat(drop_dfd, tmp_name, 0);
	signal(sig, SIG_DFL);
	raise(sig);
}

static _Noreturn __attribute__((format(printf, 1, 2))) void usage(const char *fmt, ...)
{
	va_list ap;

	fputs(PROG ": ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs("\n"
	      "usage: " PROG " [-t] [-i|-oi] [-f ADDR] [-F NAME] [-C FILE] [--] [RECIPIENT ...] < MESSAGE\n"
	      "  -t       also send to the To:, Cc: and Bcc: addresses (Bcc: is removed)\n"
	      "  -i, -oi  a line with a single \".\" does not end the message\n"
	      "  -f ADDR  envelope sender (default LOGIN@hostname; \"<>\" for none)\n"
	      "  -F NAME  display name for the From: header added when there is none\n"
	      "  -C FILE  configuration (default $POSTERN_CONFIG, else PREFIX/etc/postern/postern.conf)\n"
	      "accepted and ignored: -oem -oep -oeq -oew -oee -odb -odi -odq -oQDIR -om -oo -oLN -v -bm\n"
	      "  -U -n -m -B TYPE -N DSN -R RET -V ENVID -L TAG -h N -O OPT=VAL -AM\n",
	      stderr);
	exit(EX_USAGE);
}

/* -oX: sendmail configuration options on the command line. */
/* A bad argument (not a bad option): the reason, without the option list. */
static _Noreturn __attribute__((format(printf, 1, 2))) void bad_arg(const char *fmt, ...)
{
	va_list ap;

	fputs(PROG ": ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs("\nusage: " PROG " [-t] [-i] [-f ADDR] [-F NAME] [-C FILE] [--] [RECIPIENT ...] < MESSAGE\n",
	      stderr);
	cleanup();
	exit(EX_USAGE);
}

static void option_o(const char *v)
{
	if (strcmp(v, "i") == 0)
		opt.i = 1;
	else if (v[0] == 'e' || v[0] == 'd' || v[0] == 'Q' || v[0] == 'L' ||
	         strcmp(v, "m") == 0 || strcmp(v, "o") == 0)
		return;   /* error mode, delivery mode, queue dir, log level, ... */
	else
		usage("unsupported option -o%s", v);
}

static void option_b(const char *v)
{
	if (strcmp(v, "m") == 0)
		return;
	if (strcmp(v, "p") == 0)
		usage("-bp is not supported: use `postern queue` (mailq)");
	if (strcmp(v, "d") == 0)
		usage("-bd is not supported: use `postern start`");
	usage("unsupported mode -b%s (only -bm, deliver mail, is supported)", v);
}

static void parse_args(int argc, char **argv)
{
	int dashdash = 0;

	opt.rcpt = xcalloc((size_t)argc, sizeof(*opt.rcpt));
	for (int i = 1; i < argc; i++) {
		char *a = argv[i];
		if (dashdash || a[0] != '-' || a[1] == '\0') {
			opt.rcpt[opt.nrcpt++] = a;
			continue;
		}
		if (strcmp(a, "--") == 0) {
			dashdash = 1;
			continue;
		}
		for (char *p = a + 1; *p; p++) {
			char c = *p;
			const char *v;

			switch (c) {
			case 't':
				opt.t = 1;
				continue;
			case 'i':
				opt.i = 1;
				continue;
			case 'v': case 'U': case 'n': case 'm':
				continue;   /* verbose, initial submission, no aliases, me too */
			case 'o': case 'b': case 'f': case 'r': case 'F': case 'C':
			case 'B': case 'N': case 'R': case 'V': case 'L': case 'h': case 'O': case 'A':
				break;
			case 'q':
				usage("-q is not supported: use `postern flush`");
			case 'I':
				usage("-I is not supported: postern has no aliases database");
			default:
				usage("unknown option -%c", c);
			}
			/* The value: the rest of this argument, else the next one. */
			if (p[1] != '\0')
				v = p + 1;
			else if (i + 1 < argc)
				v = argv[++i];
			else
				usage("option -%c needs a value", c);
			switch (c) {
			case 'o':
				option_o(v);
				break;
			case 'b':
				option_b(v);
				break;
			case 'f': case 'r':
				opt.from = v;
				break;
			case 'F':
				opt.fullname = v;
				break;
			case 'C':
				opt.conf = v;
				break;
			default:
				break;   /* -B -N -R -V -L -h -O -A: nothing to do for us */
			}
			break;
		}
	}
}

static const char *config_path(void)
{
	char exe[PATH_MAX], prefix[PATH_MAX + 4];
	ssize_t n;

	if (opt.conf != NULL)
		return opt.conf;
	n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n <= 0)
		return config_default_path("/usr/local");
	exe[n] = '\0';
	str_fmt(prefix, sizeof(prefix), "%s/..", dirname(exe));
	return config_default_path(prefix);
}

static int has_control(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return 1;
	return 0;
}

static int add_arg_rcpt(void *arg, const char *addr)
{
	char *err = arg;
	return msgtext_rcpts_add(&rcpts, addr, cfg->hostname, err, 512);
}

/* --- the drop file --- */

static void wflush(void)
{
	size_t off = 0;

	while (off < out.len && out.err == 0) {
		ssize_t r = write(out.fd, out.buf + off, out.len - off);
		if (r == -1 && errno == EINTR)
			continue;
		if (r <= 0)
			out.err = r == 0 ? EIO : errno;
		else
			off += (size_t)r;
	}
	out.len = 0;
}

static void wput(const void *p, size_t n)
{
	while (n > 0 && out.err == 0) {
		size_t k = sizeof(out.buf) - out.len;
		if (k == 0) {
			wflush();
			continue;
		}
		if (k > n)
			k = n;
		memcpy(out.buf + out.len, p, k);
		out.len += k;
		p = (const char *)p + k;
		n -= k;
	}
}

static __attribute__((format(printf, 1, 2))) void wputf(const char *fmt, ...)
{
	char tmp[1024];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(tmp))
		out.err = out.err ? out.err : ENAMETOOLONG;
	else
		wput(tmp, (size_t)n);
}

static _Noreturn void store_failed(const char *what, const char *name, int e)
{
	die(EX_TEMPFAIL, "cannot %s %s/%s: %s; the message was not sent", what, drop_dir, name,
	    strerror(e));
}

static void drop_create(void)
{
	unsigned char rnd[SPOOL_DROP_NAME_LEN / 2];

	str_fmt(drop_dir, sizeof(drop_dir), "%s/%s", cfg->spool_dir, SPOOL_DROP);
	drop_dfd = open(drop_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (drop_dfd == -1)
		die(EX_TEMPFAIL, "cannot open the drop directory %s: %s%s; the message was not sent",
		    drop_dir, strerror(errno),
		    errno == ENOENT ? " (it is created when postern starts for the first time)" : "");
	for (int tries = 0; tries < 10; tries++) {
		size_t got = 0;
		while (got < sizeof(rnd)) {
			ssize_t r = getrandom(rnd + got, sizeof(rnd) - got, 0);
			if (r == -1 && errno == EINTR)
				continue;
			if (r == -1)
				die(EX_TEMPFAIL, "getrandom: %s; the message was not sent", strerror(errno));
			got += (size_t)r;
		}
		for (size_t k = 0; k < sizeof(rnd); k++)
			snprintf(final_name + 2 * k, 3, "%02x", rnd[k]);
		str_fmt(tmp_name, sizeof(tmp_name), ".%s.tmp", final_name);
		/* 0644: queued runs as another user; the directory cannot be
		 * listed and the name cannot be guessed, so nobody else finds it. */
		out.fd = openat(drop_dfd, tmp_name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
		                0644);
		if (out.fd >= 0)
			break;
		if (errno != EEXIST)
			store_failed("create", tmp_name, errno);
	}
	if (out.fd == -1)
		store_failed("create", tmp_name, EEXIST);
	tmp_exists = 1;
	if (fchmod(out.fd, 0644) == -1)   /* whatever the umask */
		store_failed("chmod", tmp_name, errno);
}

/* T6 ends: fsync, rename into place, make the rename durable. */
static void drop_commit(void)
{
	int e;

	wflush();
	if (out.err)
		store_failed("write", tmp_name, out.err);
	if (fsync(out.fd) == -1)
		store_failed("fsync", tmp_name, errno);
	if (renameat2(drop_dfd, tmp_name, drop_dfd, final_name, RENAME_NOREPLACE) == -1) {
		if (errno != EINVAL || renameat(drop_dfd, tmp_name, drop_dfd, final_name) == -1)
			store_failed("rename into place", tmp_name, errno);
	}
	tmp_exists = 0;
	/* drop/ is not readable for other users, so they cannot open it to
	 * fsync it: syncfs() makes the rename durable for them instead. */
	int dfd = openat(drop_dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		e = fsync(dfd) == -1 ? errno : 0;
		close(dfd);
	} else {
		e = syncfs(out.fd) == -1 ? errno : 0;
	}
	if (e != 0) {
		/* Maybe not durable: take it back so the failure is true (queued
		 * may have been faster: a duplicate then, never a loss). */
		unlinkat(drop_dfd, final_name, 0);
		store_failed("sync the directory of", final_name, e);
	}
	if (close(out.fd) == -1)
		store_failed("close", final_name, errno);
	out.fd = -1;
}

/* --- reading the message --- */

enum { D_LS = 0, D_MID, D_DOT, D_DOTCR };
static int dstate = D_LS;
static uint64_t raw_len;

static void emit(const char *p, size_t n)
{
	raw_len += n;
	if (raw_len > cfg->smtpd.max_message_size)
		die(EX_DATAERR, "the message is larger than smtpd.max_message_size (%llu bytes); not sent",
		    (unsigned long long)cfg->smtpd.max_message_size);
	wput(p, n);
	if (out.err)
		store_failed("write", tmp_name, out.err);
	if (msgtext_feed(&text, p, n) == -1) {
		if (text.err == MSGTEXT_ERR_SIZE)
			die(EX_DATAERR, "the message is larger than smtpd.max_message_size (%llu bytes) "
			    "with CRLF line ends; not sent", (unsigned long long)cfg->smtpd.max_message_size);
		die(EX_DATAERR, "%s; not sent", msgtext_strerror(text.err));
	}
}

/* Without -i, classic sendmail: a line holding a single "." (LF or CRLF
 * ended, or at the very end) ends the message.  1 when it was seen. */
static int filter(const char *p, size_t n)
{
	size_t i = 0;

	while (i < n) {
		switch (dstate) {
		case D_LS:
			if (p[i] == '.') {
				dstate = D_DOT;
				i++;
			} else {
				dstate = D_MID;
			}
			break;
		case D_MID: {
			const char *nl = memchr(p + i, '\n', n - i);
			size_t k = nl ? (size_t)(nl - (p + i)) + 1 : n - i;
			emit(p + i, k);
			i += k;
			if (nl)
				dstate = D_LS;
			break;
		}
		case D_DOT:
			if (p[i] == '\n')
				return 1;
			if (p[i] == '\r') {
				dstate = D_DOTCR;
				i++;
				break;
			}
			emit(".", 1);
			dstate = D_MID;
			break;
		default:
			if (p[i] == '\n')
				return 1;
			emit(".\r", 2);
			dstate = D_MID;
		}
	}
	return 0;
}

static void read_message(void)
{
	char buf[65536];

	for (;;) {
		ssize_t r = read(STDIN_FILENO, buf, sizeof(buf));
		if (r == -1 && errno == EINTR)
			continue;
		if (r == -1)
			die(EX_IOERR, "cannot read the message from standard input: %s; not sent",
			    strerror(errno));
		if (r == 0)
			break;
		if (opt.i)
			emit(buf, (size_t)r);
		else if (filter(buf, (size_t)r))
			break;
	}
	/* A lone "." (or ".\r") at the very end is the end line too. */
	if (msgtext_finish(&text) == -1)
		die(EX_DATAERR, "%s; not sent", msgtext_strerror(text.err));
}

/* mailq (a link to this program, `make install-sendmail-links`) lists
 * the queue: exactly `postern queue`, run from this binary's
 * directory with the same configuration file. */
static _Noreturn void exec_mailq(const char *conf)
{
	char exe[PATH_MAX], postern[PATH_MAX + 16];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);

	if (n <= 0)
		die(EX_OSERR, "cannot locate my own executable");
	exe[n] = '\0';
	str_fmt(postern, sizeof(postern), "%s/postern", dirname(exe));
	char *argv[] = { "postern", "-c", (char *)conf, "queue", NULL };
	execv(postern, argv);
	die(EX_OSERR, "exec %s: %s", postern, strerror(errno));
}

int main(int argc, char **argv)
{
	struct addr sender;
	const char *why, *path;
	char err[1200];

	log_open(PROG, NULL, LOG_LVL_WARN, 0);
	if (argc > 0 && strcmp(basename(argv[0]), "mailq") == 0) {
		opt.list_queue = 1;
		if (argc == 3 && strcmp(argv[1], "-C") == 0)
			opt.conf = argv[2];
		else if (argc != 1)
			usage("mailq takes no arguments but -C FILE");
	} else {
		parse_args(argc, argv);
	}
	path = config_path();
	if (opt.list_queue)
		exec_mailq(path);
	cfg = config_load(path, err, sizeof(err));
	if (cfg == NULL)
		die(EX_CONFIG, "%s", err);

	if (opt.fullname != NULL &&
	    (strlen(opt.fullname) > MSGTEXT_NAME_MAX || has_control(opt.fullname)))
		bad_arg("-F: the name must be at most %d bytes without control characters",
		        MSGTEXT_NAME_MAX);
	if (opt.from != NULL) {
		if (has_control(opt.from) || strlen(opt.from) > MSGTEXT_ADDR_MAX)
			bad_arg("-f: bad address");
		if (msgtext_sender(opt.from, cfg->hostname, &sender, &why) == -1) {
			char esc[200];
			str_escape(esc, sizeof(esc), opt.from, strlen(opt.from));
			bad_arg("-f \"%s\": %s", esc, why);
		}
	}
	/* The file owner is the effective uid; queued insists they match. */
	uid_t uid = getuid();
	if (geteuid() != 0 && geteuid() != uid)
		uid = geteuid();
	/* queued looks the uid up and, without -f, sends as LOGIN@hostname:
	 * find out now what it would find. */
	errno = 0;
	struct passwd *pw = getpwuid(uid);
	if (pw == NULL)
		die(EX_NOUSER, "uid %u has no passwd entry (%s); not sent", (unsigned)uid,
		    errno ? strerror(errno) : "no such user");
	if (opt.from == NULL && msgtext_login(pw->pw_name, cfg->hostname, &sender, &why) == -1) {
		char esc[200];
		str_escape(esc, sizeof(esc), pw->pw_name, strlen(pw->pw_name));
		bad_arg("login name \"%s\" cannot be a sender address (%s): give one with -f", esc, why);
	}
	msgtext_rcpts_init(&rcpts, (size_t)cfg->smtpd.max_recipients);
	for (size_t i = 0; i < opt.nrcpt; i++) {
		const char *a = opt.rcpt[i];
		int r = msgtext_addrlist(a, strlen(a), add_arg_rcpt, err, &why);
		if (r == -2)
			die(EX_DATAERR, "%s; not sent", err);
		if (r != 0) {
			if (why != NULL) {
				char esc[200];
				str_escape(esc, sizeof(esc), a, strlen(a));
				bad_arg("bad recipient \"%s\": %s", esc, why);
			}
			bad_arg("%s", err);
		}
	}
	if (rcpts.n == 0 && !opt.t)
		bad_arg("no recipients (name them as arguments, or use -t to read them from the message)");

	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	signal(SIGHUP, on_signal);
	signal(SIGQUIT, on_signal);
	msgtext_init(&text, MSGTEXT_DROP_BCC | (opt.t ? MSGTEXT_CAPTURE : 0),
	             cfg->smtpd.max_message_size, NULL, NULL, NULL, 0);
	drop_create();

	wputf(SPOOL_DROP_MAGIC "uid=%u\ntime=%lld\nt=%d\n", (unsigned)uid, (long long)time(NULL),
	      opt.t);
	if (opt.from != NULL)
		wputf("sender=%s\n", sender.is_null ? "<>" : sender.text);
	if (opt.fullname != NULL)
		wputf("fullname=%s\n", opt.fullname);
	for (size_t i = 0; i < rcpts.n; i++)
		wputf("rcpt=%s\n", rcpts.v[i]);
	wput("\n", 1);

	read_message();
	if (opt.t) {
		if (msgtext_rcpts_from_headers(&rcpts, &text, cfg->hostname, err, sizeof(err)) != 0)
			die(EX_DATAERR, "%s; not sent", err);
		if (rcpts.n == 0)
			die(EX_DATAERR, "no recipients: none given and none in To:, Cc: or Bcc:; not sent");
	}
	wputf(SPOOL_DROP_END "%llu\n", (unsigned long long)raw_len);
	drop_commit();
	cleanup();
	free(opt.rcpt);
	return EX_OK;
}
