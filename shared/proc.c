#include "proc.h"
#include "log.h"
#include "privs.h"
#include "spool.h"
#include "str.h"

#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sysexits.h>
#include <unistd.h>

static void (*sig_cb)(int);
static const int handled[] = { SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGCHLD };

static void on_sigfd(int fd, int events, void *arg)
{
	struct signalfd_siginfo si;

	(void)events;
	(void)arg;
	while (read(fd, &si, sizeof(si)) == (ssize_t)sizeof(si))
		sig_cb((int)si.ssi_signo);
}

void proc_signals_install(void (*cb)(int signo))
{
	sigset_t set;
	int fd;

	sig_cb = cb;
	sigemptyset(&set);
	for (size_t i = 0; i < sizeof(handled) / sizeof(handled[0]); i++)
		sigaddset(&set, handled[i]);
	sigprocmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
	fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
	if (fd == -1 || ev_add(fd, EV_READ, on_sigfd, NULL) == -1)
		log_fatal(EX_OSERR, "event=fatal what=signalfd error=%s", log_q(strerror(errno)));
}

void proc_signals_reset(void)
{
	sigset_t set;

	for (size_t i = 0; i < sizeof(handled) / sizeof(handled[0]); i++)
		signal(handled[i], SIG_DFL);
	signal(SIGPIPE, SIG_DFL);
	sigemptyset(&set);
	sigprocmask(SIG_SETMASK, &set, NULL);
}

struct config *proc_child_init(const char *component, int argc, char **argv,
                               void (*before_drop)(struct config *))
{
	const char *path = NULL;
	struct config *cfg;
	char err[1024];
	int c;

	while ((c = getopt(argc, argv, "c:")) != -1) {
		if (c == 'c')
			path = optarg;
		else
			log_fatal(EX_USAGE, "event=fatal error=\"usage: %s -c CONFIG\"", component);
	}
	log_open(component, NULL, LOG_LVL_INFO, 0);
	if (path == NULL)
		log_fatal(EX_USAGE, "event=fatal error=\"usage: %s -c CONFIG (started by the master)\"",
		          component);
	/* Die with the master: a child without a supervisor must not linger. */
	prctl(PR_SET_PDEATHSIG, SIGTERM);
	if (getppid() == 1)
		log_fatal(EX_TEMPFAIL, "event=fatal error=\"master is gone\"");
	if ((cfg = config_load(path, err, sizeof(err))) == NULL)
		log_fatal(EX_CONFIG, "event=fatal error=%s", log_q(err));
	if (log_open(component, cfg->log.dir, config_log_level(cfg, component), cfg->log.syslog) == -1)
		log_fatal(EX_CONFIG, "event=fatal what=log_open dir=%s error=%s", log_q(cfg->log.dir),
		          log_q(strerror(errno)));
	if (chdir(cfg->spool_dir) == -1)
		log_fatal(EX_CONFIG, "event=fatal what=chdir dir=%s error=%s", log_q(cfg->spool_dir),
		          log_q(strerror(errno)));
	if (before_drop)
		before_drop(cfg);
	privs_drop(cfg->user);
	if (ev_init() == -1)
		log_fatal(EX_OSERR, "event=fatal what=ev_init");
	return cfg;
}

void proc_ready(struct ipc_chan *master)
{
	struct ipc_msg m;

	log_info("event=ready pid=%d", (int)getpid());
	if (master == NULL)
		return;
	ipc_msg_init(&m, IPC_READY);
	ipc_put_u32(&m, (uint32_t)getpid());
	ipc_send(master, &m, -1);
}

struct config *proc_reload(const struct config *old)
{
	char err[1024];
	struct config *cfg = config_load(old->file, err, sizeof(err));

	if (cfg == NULL) {
		log_warn("event=reload_failed error=%s", log_q(err));
		return NULL;
	}
	log_set_level(config_log_level(cfg, log_component()));
	log_set_syslog(cfg->log.syslog);
	log_reopen();
	log_info("event=reloaded file=%s", log_q(cfg->file));
	return cfg;
}

int proc_reload_swap(struct config **cfg)
{
	struct config *n = proc_reload(*cfg);

	if (n == NULL)
		return 0;
	config_free(*cfg);
	*cfg = n;
	return 1;
}

static void master_unexpected(struct ipc_chan *ch, struct ipc_msg *m, void *arg)
{
	(void)ch;
	(void)arg;
	if (m->fd >= 0)
		close(m->fd);
	/* The master is a sibling daemon: a message we do not expect is a bug. */
	log_fatal(EX_SOFTWARE, "event=fatal error=\"unexpected message %u from master\"", m->type);
}

static void master_gone(struct ipc_chan *ch, void *arg)
{
	(void)ch;
	(void)arg;
	log_info("event=master_gone");
	exit(0);
}

struct ipc_chan *proc_master_channel(ipc_msg_cb *on_msg)
{
	struct ipc_chan *ch = ipc_chan_new(PROC_MASTER_FD, on_msg ? on_msg : master_unexpected,
	                                   master_gone, NULL);
	if (ch == NULL)
		log_fatal(EX_OSERR, "event=fatal error=\"cannot watch the master channel\"");
	return ch;
}

struct ipc_chan *proc_connect_queued(const char *role, ipc_msg_cb *on_msg, ipc_close_cb *on_close)
{
	struct ipc_chan *ch;
	struct ipc_msg m;
	int fd = ipc_connect(SPOOL_QUEUED_SOCK);

	if (fd == -1) {
		log_debug("event=queued_unreachable error=%s", log_q(strerror(errno)));
		return NULL;
	}
	if ((ch = ipc_chan_new(fd, on_msg, on_close, NULL)) == NULL) {
		close(fd);
		return NULL;
	}
	ipc_msg_init(&m, IPC_HELLO);
	ipc_put_str(&m, role);
	ipc_put_u32(&m, (uint32_t)getpid());
	ipc_send(ch, &m, -1);
	log_debug("event=queued_connected");
	return ch;
}
