/*
 * smtpd - the ESMTP listener, the only process facing the network.
 * Listening sockets come from the master (POSTERN_LISTEN="fd:mode:addr:port,...").
 * Connection limits are enforced here, before the banner.
 */
#include "smtpd.h"
#include "log.h"
#include "proc.h"
#include "gcommit.h"
#include "stats.h"
#include "str.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sysexits.h>
#include <unistd.h>

#define QUEUED_RETRY_MS 250
#define STOP_GRACE_MS 10000
#define IP_HASH 4096
/* Out of descriptors or memory: stop accepting this long, so a full
 * process neither spins on a listener that stays readable nor floods
 * the log; the kernel's backlog holds the clients meanwhile. */
#define ACCEPT_PAUSE_MS 1000

struct config *cfg;
static struct listener listeners[CONFIG_LISTEN_MAX];
static size_t nlisteners;
static struct ipc_chan *master;
static struct ipc_chan *queued;
static struct ev_timer queued_timer, stop_timer, accept_timer;
static int accept_paused;
static int stopping;

/* Connections per client address, for max_connections_per_ip. */
struct ipcount {
	char ip[64];
	int n;
	struct ipcount *next;
};
static struct ipcount *ipcounts[IP_HASH];

static unsigned ip_hash(const char *s)
{
	unsigned h = 5381;
	for (; *s; s++)
		h = h * 33 + (unsigned char)*s;
	return h % IP_HASH;
}

static struct ipcount **ip_find(const char *ip)
{
	struct ipcount **pp = &ipcounts[ip_hash(ip)];
	for (; *pp; pp = &(*pp)->next)
		if (strcmp((*pp)->ip, ip) == 0)
			break;
	return pp;
}

void smtpd_conn_closed(const struct session *s)
{
	struct ipcount **pp = ip_find(s->ip), *c = *pp;

	if (c && --c->n <= 0) {
		*pp = c->next;
		free(c);
	}
	if (stopping && session_count() == 0) {
		log_info("event=stopped");
		exit(0);
	}
}

static void queued_connect(void *arg);

static void on_queued_msg(struct ipc_chan *ch, struct ipc_msg *m, void *arg)
{
	(void)ch;
	(void)arg;
	if (m->fd >= 0)
		close(m->fd);
	log_warn("event=ipc_error error=\"unexpected message %u from queued\"", m->type);
}

static void on_queued_close(struct ipc_chan *ch, void *arg)
{
	(void)arg;
	(void)ch;
	log_info("event=queued_disconnected");
	ipc_chan_free(queued);
	queued = NULL;
	ev_timer_add(&queued_timer, QUEUED_RETRY_MS);
}

static void queued_connect(void *arg)
{
	(void)arg;
	if (queued != NULL)
		return;
	queued = proc_connect_queued("smtpd", on_queued_msg, on_queued_close);
	if (queued == NULL)
		ev_timer_add(&queued_timer, QUEUED_RETRY_MS);
}

void smtpd_notify_queued(const char *qid)
{
	struct ipc_msg m;

	if (queued == NULL) {
		ev_timer_del(&queued_timer);
		queued_connect(NULL);
	}
	if (queued == NULL) {
		/* The file is in incoming/; queued's scan picks it up. */
		log_info("event=notify_deferred qid=%s reason=\"queued not connected; it scans incoming/\"", qid);
		return;
	}
	ipc_msg_init(&m, IPC_INCOMING);
	ipc_put_str(&m, qid);
	ipc_send(queued, &m, -1);
}

static void on_accept(int fd, int events, void *arg);

static void resume_accept(void *arg)
{
	(void)arg;
	accept_paused = 0;
	if (stopping)
		return;
	for (size_t i = 0; i < nlisteners; i++)
		if (ev_add(listeners[i].fd, EV_READ, on_accept, &listeners[i]) == -1)
			log_error("event=accept_resume_failed listener=%s:%d", listeners[i].address,
			          listeners[i].port);
	log_info("event=accept_resumed sessions=%zu", session_count());
}

static void pause_accept(const struct listener *l, int err)
{
	struct rlimit rl;

	if (accept_paused)
		return;
	accept_paused = 1;
	for (size_t i = 0; i < nlisteners; i++)
		ev_del(listeners[i].fd);
	getrlimit(RLIMIT_NOFILE, &rl);
	log_warn("event=accept_paused listener=%s:%d error=%s sessions=%zu open_files_limit=%llu "
	         "pause_ms=%d note=\"raise the open-files limit (LimitNOFILE) or lower "
	         "smtpd.max_connections\"",
	         l->address, l->port, log_q(strerror(err)), session_count(),
	         (unsigned long long)rl.rlim_cur, ACCEPT_PAUSE_MS);
	ev_timer_add(&accept_timer, ACCEPT_PAUSE_MS);
}

/* Each session needs a socket, and one spool file while in DATA: make
 * sure smtpd.max_connections fits the open-files limit, raising the soft
 * limit towards the hard one, and say so at start when it cannot. */
static void fit_nofile(void)
{
	struct rlimit rl;
	rlim_t want = 2 * (rlim_t)cfg->smtpd.max_connections + 64;

	if (getrlimit(RLIMIT_NOFILE, &rl) == -1 || rl.rlim_cur >= want)
		return;
	rlim_t cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= want ? want : rl.rlim_max;
	if (cur > rl.rlim_cur) {
		rl.rlim_cur = cur;
		if (setrlimit(RLIMIT_NOFILE, &rl) == -1)
			log_warn("event=nofile_raise_failed error=%s", log_q(strerror(errno)));
		getrlimit(RLIMIT_NOFILE, &rl);
	}
	if (rl.rlim_cur < want)
		log_warn("event=nofile_too_low open_files_limit=%llu max_connections=%d needed=%llu "
		         "note=\"connections beyond the limit wait in the kernel's backlog; raise "
		         "LimitNOFILE (hard limit) or lower smtpd.max_connections\"",
		         (unsigned long long)rl.rlim_cur, cfg->smtpd.max_connections,
		         (unsigned long long)want);
}

static void on_accept(int fd, int events, void *arg)
{
	struct listener *l = arg;

	(void)events;
	for (int i = 0; i < 64; i++) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		int c = accept4(fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
		char ip[64];

		if (c == -1) {
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
				pause_accept(l, errno);
				return;
			}
			if (errno != EAGAIN && errno != EWOULDBLOCK && errno != ECONNABORTED && errno != EINTR)
				log_warn("event=accept_failed listener=%s:%d error=%s", l->address, l->port,
				         log_q(strerror(errno)));
			return;
		}
		/* Replies go out as soon as they are complete (no Nagle delay). */
		int one = 1;
		setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		net_ntop((struct sockaddr *)&ss, ip, sizeof(ip));
		if (session_count() >= (size_t)cfg->smtpd.max_connections) {
			static const char msg[] = "421 4.7.0 Error: too many connections\r\n";
			stats_add(STAT_SMTP_REFUSED_MAXCONN, 1);
			log_warn("event=refused client=%s reason=max_connections limit=%d", ip,
			         cfg->smtpd.max_connections);
			ssize_t w = send(c, msg, sizeof(msg) - 1, MSG_NOSIGNAL);
			(void)w;
			close(c);
			continue;
		}
		struct ipcount **pp = ip_find(ip);
		if (*pp && (*pp)->n >= cfg->smtpd.max_connections_per_ip) {
			static const char msg[] = "421 4.7.0 Error: too many connections from your address\r\n";
			stats_add(STAT_SMTP_REFUSED_PERIP, 1);
			log_warn("event=refused client=%s reason=max_connections_per_ip limit=%d", ip,
			         cfg->smtpd.max_connections_per_ip);
			ssize_t w = send(c, msg, sizeof(msg) - 1, MSG_NOSIGNAL);
			(void)w;
			close(c);
			continue;
		}
		if (*pp == NULL) {
			*pp = xcalloc(1, sizeof(**pp));
			str_copy((*pp)->ip, ip, sizeof((*pp)->ip));
		}
		(*pp)->n++;
		session_new(c, &ss, l);
	}
}

static void parse_listen_env(void)
{
	const char *env = getenv("POSTERN_LISTEN");
	char buf[2048], *save = NULL;

	if (env == NULL || *env == '\0')
		log_fatal(EX_CONFIG, "event=fatal error=\"no listening sockets (POSTERN_LISTEN unset): "
		                     "smtpd is started by the master\"");
	str_copy(buf, env, sizeof(buf));
	for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		struct listener *l = &listeners[nlisteners];
		char *mode = strchr(tok, ':');
		char *addr = mode ? strchr(mode + 1, ':') : NULL;
		char *port = addr ? strrchr(addr + 1, ':') : NULL;
		uint64_t fd, pn;

		if (port == NULL || nlisteners >= CONFIG_LISTEN_MAX)
			log_fatal(EX_SOFTWARE, "event=fatal error=\"bad POSTERN_LISTEN\"");
		*mode++ = '\0';
		*addr++ = '\0';
		*port++ = '\0';
		if (str_to_u64(tok, 3, 1024, &fd) == -1 || str_to_u64(port, 1, 65535, &pn) == -1)
			log_fatal(EX_SOFTWARE, "event=fatal error=\"bad POSTERN_LISTEN\"");
		l->fd = (int)fd;
		l->mode = strcmp(mode, "submissions") == 0 ? MODE_SUBMISSIONS :
		          strcmp(mode, "submission") == 0 ? MODE_SUBMISSION : MODE_SMTP;
		str_copy(l->address, addr, sizeof(l->address));
		l->port = (int)pn;
		nlisteners++;
	}
}

static void reload_secrets(void);

static void stop_now(void *arg)
{
	(void)arg;
	log_warn("event=stop_timeout sessions=%zu error=\"clients still in DATA; answering 421\"",
	         session_count());
	session_abort_all();
	log_info("event=stopped");
	exit(0);
}

static void on_signal(int sig)
{
	switch (sig) {
	case SIGINT:
		/* Ctrl-C reaches the whole process group under `make run`:
		 * only the master acts on it, so it can stop us in order. */
		break;
	case SIGTERM:
		if (stopping)
			return;
		stopping = 1;
		log_info("event=stopping sessions=%zu", session_count());
		for (size_t i = 0; i < nlisteners; i++) {
			ev_del(listeners[i].fd);
			close(listeners[i].fd);
		}
		session_shutdown_all();
		if (session_count() == 0) {
			log_info("event=stopped");
			exit(0);
		}
		ev_timer_init(&stop_timer, stop_now, NULL);
		ev_timer_add(&stop_timer, STOP_GRACE_MS);
		break;
	case SIGHUP: {
		if (proc_reload_swap(&cfg)) {
			policy_load();
			fit_nofile();
			reload_secrets();
		}
		break;
	}
	case SIGUSR1:
		log_reopen();
		break;
	}
}

/* The TLS key and the users file may be root-only: read them as root. */
static void before_drop(struct config *c)
{
	char err[512];
	int need_tls = 0;

	for (size_t i = 0; i < c->nlisten; i++)
		if (c->listen[i].mode == MODE_SUBMISSIONS)
			need_tls = 1;
	if (c->tls.cert[0] || c->tls.key[0]) {
		if (!c->tls.cert[0] || !c->tls.key[0])
			log_fatal(EX_CONFIG, "event=fatal error=\"tls.cert and tls.key go together\"");
		smtpd_tls = tls_server_ctx(c->tls.cert, c->tls.key, err, sizeof(err));
		if (smtpd_tls == NULL)
			log_fatal(EX_CONFIG, "event=fatal what=tls error=%s", log_q(err));
		log_info("event=tls_loaded cert=%s", log_q(c->tls.cert));
	} else if (need_tls) {
		log_fatal(EX_CONFIG, "event=fatal error=\"a submissions listener (implicit TLS) needs "
		                     "tls.cert and tls.key\"");
	}
	if (c->smtpd.auth_users[0] && auth_users_load(c->smtpd.auth_users) == -1)
		log_fatal(EX_CONFIG, "event=fatal error=\"cannot read smtpd.auth_users\" file=%s",
		          log_q(c->smtpd.auth_users));
}

/* SIGHUP: the users file if we may still read it (the master also sends
 * a fresh descriptor); the certificate and key come from the master. */
static void reload_secrets(void)
{
	auth_users_reload(cfg->smtpd.auth_users);
	dnsbl_init();   /* zones added by the reload: start the resolver */
}

/* A new certificate from the master's reload: keep the old one if the
 * new one does not load. */
static void tls_from_master(struct ipc_msg *m)
{
	static char cert[IPC_MSG_MAX], key[IPC_MSG_MAX];
	char err[512];

	if (ipc_get_str(m, cert, sizeof(cert)) == -1 || ipc_get_str(m, key, sizeof(key)) == -1 ||
	    ipc_end(m) == -1)
		log_fatal(EX_SOFTWARE, "event=fatal error=\"malformed TLS_PEM from master\"");
	tls_ctx *n = tls_server_ctx_pem(cert, key, err, sizeof(err));
	explicit_bzero(key, sizeof(key));
	if (n == NULL) {
		log_warn("event=tls_reload_failed error=%s note=\"keeping the certificate loaded before\"",
		         log_q(err));
		return;
	}
	/* Sessions hold their own reference to the old context. */
	tls_ctx_free(smtpd_tls);
	smtpd_tls = n;
	log_info("event=tls_loaded cert=%s", log_q(cfg->tls.cert));
}

/* On every reload the master, which stays root, reads the secrets smtpd
 * (unprivileged by then) may not: the users file and the TLS key. */
static void on_master_msg(struct ipc_chan *ch, struct ipc_msg *m, void *arg)
{
	char path[CONFIG_PATH_MAX];

	(void)ch;
	(void)arg;
	if (m->type == IPC_TLS_PEM && m->fd < 0) {
		tls_from_master(m);
		return;
	}
	if (m->type != IPC_USERS_FD || m->fd < 0 || ipc_get_str(m, path, sizeof(path)) == -1 ||
	    ipc_end(m) == -1)
		log_fatal(EX_SOFTWARE, "event=fatal error=\"unexpected message %u from master\"", m->type);
	int fd = m->fd;
	m->fd = -1;
	auth_users_from_fd(fd, path);
}

int main(int argc, char **argv)
{
	cfg = proc_child_init("smtpd", argc, argv, before_drop);
	proc_signals_install(on_signal);
	parse_listen_env();
	if (policy_load() == -1)
		log_fatal(EX_CONFIG, "event=fatal error=\"bad smtpd.mynetworks\"");
	master = proc_master_channel(on_master_msg);
	stats_init(master);
	stats_set(STAT_SMTP_CONN_CURRENT, 0);
	dnsbl_init();   /* only when smtpd.dnsbl lists zones */
	/* Our working directory is the spool: syncfs() on it is the group
	 * commit (T1 in spool.h). */
	int spool_fd = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int incoming_fd = open(SPOOL_INCOMING, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (spool_fd == -1 || incoming_fd == -1 ||
	    gcommit_start(spool_fd, incoming_fd, session_commit_done) == -1)
		log_fatal(EX_OSERR, "event=fatal what=group_commit error=%s", log_q(strerror(errno)));
	ev_timer_init(&queued_timer, queued_connect, NULL);
	ev_timer_init(&accept_timer, resume_accept, NULL);
	fit_nofile();
	queued_connect(NULL);
	for (size_t i = 0; i < nlisteners; i++) {
		net_set_nonblock(listeners[i].fd);
		net_set_cloexec(listeners[i].fd);
		if (ev_add(listeners[i].fd, EV_READ, on_accept, &listeners[i]) == -1)
			log_fatal(EX_OSERR, "event=fatal what=ev_add listener");
		log_info("event=listening address=%s port=%d mode=%s", listeners[i].address,
		         listeners[i].port, config_mode_name(listeners[i].mode));
	}
	proc_ready(master);
	ev_run();
	return 0;
}
