/*
 * reload - SIGHUP / `postern reload`: reread the config without dropping
 * connections.  The master validates the new file first; if it does not
 * load, everything keeps running on the old one and the error is logged.
 * Otherwise each child gets SIGHUP and rereads the file itself.  Listening
 * sockets and the deliverd pool size are fixed at start: a change to
 * `listen` or `queue.concurrency` is logged as needing `postern stop` and
 * `postern start`.  Under systemd: RELOADING=1 first, READY=1 when done.
 */
#include "master.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

/*
 * smtpd runs unprivileged and cannot reopen a root-only smtpd.auth_users
 * (postern passwd replaces it, so its old descriptor shows the old file):
 * the master opens the new file and passes the descriptor.
 */
/* A message of type with the string a (and b unless NULL), and fd (-1:
 * none), to every running smtpd.  ipc_send() consumes a message, so each
 * smtpd gets its own. */
static void send_to_smtpd(uint32_t type, const char *a, const char *b, int fd)
{
	for (size_t i = 0; i < M.nchildren; i++) {
		struct child *c = &M.children[i];
		if (c->role != ROLE_SMTPD || c->ch == NULL)
			continue;
		struct ipc_msg m;
		ipc_msg_init(&m, type);
		ipc_put_str(&m, a);
		if (b != NULL)
			ipc_put_str(&m, b);
		ipc_send(c->ch, &m, fd);
	}
}

static void send_users_file(void)
{
	const char *path = M.cfg->smtpd.auth_users;

	if (path[0] == '\0')
		return;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd == -1) {
		log_warn("event=reload_partial file=%s error=%s", log_q(path), log_q(strerror(errno)));
		return;
	}
	send_to_smtpd(IPC_USERS_FD, path, NULL, fd);
	close(fd);
}

/* Read a PEM file (as root) into buf[size]; -1 if unreadable or too big. */
static int read_pem(const char *path, char *buf, size_t size)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	size_t len = 0;

	if (fd == -1)
		return -1;
	for (;;) {
		ssize_t r = read(fd, buf + len, size - 1 - len);
		if (r == -1 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		len += (size_t)r;
		if (len == size - 1) {
			close(fd);
			errno = EFBIG;
			return -1;
		}
	}
	close(fd);
	buf[len] = '\0';
	if (memchr(buf, '\0', len) != NULL) {
		errno = EINVAL;   /* not PEM text */
		return -1;
	}
	return 0;
}

/* smtpd cannot reread a root-only key after dropping privileges: send it
 * the new certificate and key; it keeps the old ones if these do not load. */
static void send_tls(void)
{
	static char cert[30000], key[30000];

	if (M.cfg->tls.cert[0] == '\0' || M.cfg->tls.key[0] == '\0')
		return;
	if (read_pem(M.cfg->tls.cert, cert, sizeof(cert)) == -1 ||
	    read_pem(M.cfg->tls.key, key, sizeof(key)) == -1) {
		log_warn("event=reload_partial what=tls error=%s cert=%s key=%s", log_q(strerror(errno)),
		         log_q(M.cfg->tls.cert), log_q(M.cfg->tls.key));
		explicit_bzero(key, sizeof(key));
		return;
	}
	send_to_smtpd(IPC_TLS_PEM, cert, key, -1);
	explicit_bzero(key, sizeof(key));
}

void reload_config(void)
{
	char err[1024];
	struct config *cfg;

	/* systemd (Type=notify-reload) wants RELOADING=1 before the work and
	 * READY=1 after it, also when the new file is rejected: the service
	 * keeps running on the old configuration. */
	notify_reloading();
	cfg = config_load(M.config_path, err, sizeof(err));
	if (cfg == NULL) {
		log_error("event=reload_failed error=%s", log_q(err));
		notify_ready("ready; reload failed, running on the previous configuration");
		return;
	}
	if (cfg->nlisten != M.cfg->nlisten ||
	    memcmp(cfg->listen, M.cfg->listen, cfg->nlisten * sizeof(cfg->listen[0])) != 0)
		log_warn("event=reload_partial error=\"listen changed; takes effect at the next start\"");
	if (strcmp(cfg->metrics.listen, M.cfg->metrics.listen) != 0)
		log_warn("event=reload_partial error=\"metrics.listen changed; takes effect at the next start\"");
	if (cfg->queue.concurrency != M.cfg->queue.concurrency)
		log_warn("event=reload_partial error=\"queue.concurrency changed; takes effect at the next start\"");
	/* Keep the listener table the children were given. */
	memcpy(cfg->listen, M.cfg->listen, sizeof(cfg->listen));
	cfg->nlisten = M.cfg->nlisten;
	cfg->queue.concurrency = M.cfg->queue.concurrency;
	memcpy(&cfg->metrics, &M.cfg->metrics, sizeof(cfg->metrics));
	config_free(M.cfg);
	M.cfg = cfg;
	log_set_level(config_log_level(cfg, "master"));
	log_set_syslog(cfg->log.syslog);
	log_reopen();
	for (size_t i = 0; i < M.nchildren; i++)
		if (M.children[i].pid > 0)
			kill(M.children[i].pid, SIGHUP);
	send_users_file();
	send_tls();
	log_info("event=reloaded file=%s", log_q(M.config_path));
	notify_ready("ready; configuration reloaded");
}
