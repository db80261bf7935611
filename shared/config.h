/*
 * config - load and validate postern.conf (libconfig syntax).
 *
 * One table (config.c: `keys[]`) lists every scalar key with its type,
 * default, and bounds, in the spirit of Postfix's int_table and redis's
 * static_configs[].  Lists and the `listen` group list are handled next to
 * it.  Unknown keys, wrong types and out-of-range values are errors that
 * name the file and line ("conf/postern.conf:12: unknown key 'foo'").
 *
 * Relative paths in the file are resolved against the directory that
 * holds the config file, so a daemonised master (cwd /) and `make run`
 * see the same files.
 *
 * Ownership: config_load() returns a struct config that the caller frees
 * with config_free().  On error it returns NULL and fills err[errlen].
 */
#ifndef POSTERN_CONFIG_H
#define POSTERN_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#define CONFIG_LISTEN_MAX 16
#define CONFIG_PATH_MAX 1024

/*
 * The deliverd pool is sized on demand (as Postfix's process_limit and
 * max_idle): the master starts CONFIG_POOL_MIN deliverd, queued asks for
 * more while jobs wait and none is idle, up to queue.concurrency, and one
 * left without a job for queue.max_idle seconds retires.  Why two and not
 * zero or one: the first message after a quiet spell is dispatched at once
 * instead of waiting for a fork, exec and libcrypto load, and a second
 * delivery (a DSN, a local mailbox, another destination) need not wait
 * behind one slow smarthost transaction; an idle deliverd costs about
 * 850 KiB PSS, so two cost less than 2 MiB where the old fixed pool of 20
 * cost 17 MiB.  The master and queued both use config_pool_min().
 */
#define CONFIG_POOL_MIN 2

enum listen_mode { MODE_SMTP = 0, MODE_SUBMISSION, MODE_SUBMISSIONS };
enum relay_tls { RELAY_TLS_NONE = 0, RELAY_TLS_OPPORTUNISTIC, RELAY_TLS_REQUIRED, RELAY_TLS_IMPLICIT };
enum bare_newline { BARE_NL_REJECT = 0, BARE_NL_NORMALIZE };

struct strlist {
	char **v;
	size_t n;
};

struct listen_cfg {
	char address[64];
	int port;
	int mode;
};

struct relay_host {
	char host[256];
	int port;
};

#define RELAY_HOSTS_MAX 8

struct config {
	char file[CONFIG_PATH_MAX];
	char hostname[256];
	char spool_dir[CONFIG_PATH_MAX];
	char run_dir[CONFIG_PATH_MAX];
	char user[64];
	struct {
		char dir[CONFIG_PATH_MAX];
		int level;
		int syslog;
		/* log.COMPONENT.level, defaulting to log.level: master, smtpd,
		 * queued, deliverd (config_log_level()) */
		int comp_level[4];
	} log;
	struct listen_cfg listen[CONFIG_LISTEN_MAX];
	size_t nlisten;
	struct {
		char cert[CONFIG_PATH_MAX];
		char key[CONFIG_PATH_MAX];
	} tls;
	struct {
		struct strlist mynetworks;
		struct strlist relay_domains;
		char auth_users[CONFIG_PATH_MAX];
		uint64_t max_message_size;
		int max_recipients;
		int max_connections;
		int max_connections_per_ip;
		int max_errors;
		int timeout;
		int data_timeout;
		int bare_newline;
		struct strlist dnsbl;
	} smtpd;
	struct {
		int present;
		/* hosts[0] is relay.host/port; hosts[1..] come from relay.fallback */
		struct relay_host hosts[RELAY_HOSTS_MAX];
		size_t nhosts;
		int tls;
		char username[256];
		char password_file[CONFIG_PATH_MAX];
		char ca_file[CONFIG_PATH_MAX];
		int verify;
		char rewrite_sender[256];
	} relay;
	struct {
		int retry_min;
		int retry_max;
		int lifetime;
		int warn_after;
		uint64_t min_free;
		int concurrency;       /* the most deliverd processes (the pool grows to it) */
		int per_destination;
		int max_idle;          /* seconds a deliverd waits for a job before it retires */
		int connect_timeout;
		int reply_timeout;
	} queue;
	struct {
		struct strlist servers;
		int timeout;
		int mx_port;
		char ip_version[8];
	} dns;
	struct {
		char listen[128];      /* "host:port" or "[v6]:port"; empty: no endpoint */
		char address[64];      /* parsed from listen */
		int port;
	} metrics;
	struct {
		struct strlist domains;
		char maildir[CONFIG_PATH_MAX];
	} local;
};

/* Default config path: $POSTERN_CONFIG, else PREFIX/etc/postern/postern.conf. */
const char *config_default_path(const char *exe_prefix);

struct config *config_load(const char *path, char *err, size_t errlen);
void config_free(struct config *cfg);

/* The log level for component ("master", "smtpd", ...); log.level for others. */
int config_log_level(const struct config *cfg, const char *component);

/* The deliverd kept running whatever the load: CONFIG_POOL_MIN, or
 * queue.concurrency if that is smaller. */
int config_pool_min(const struct config *cfg);

int config_is_local_domain(const struct config *cfg, const char *domain);
const char *config_mode_name(int mode);

#endif
