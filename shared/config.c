#include "config.h"
#include "log.h"
#include "net.h"
#include "str.h"

#include <errno.h>
#include <libconfig.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum ktype { K_INT, K_U64, K_BOOL, K_STR, K_PATH, K_ENUM, K_LIST };

struct key {
	const char *path;
	enum ktype type;
	size_t off;
	size_t size;          /* for strings: buffer size */
	const char *def_str;  /* default for STR/PATH/ENUM */
	int64_t def;          /* default for INT/U64/BOOL */
	int64_t min, max;
	const char *const *names; /* ENUM values, index = stored int */
};

static const char *const level_names[] = { "debug", "info", "warn", "error", NULL };
static const char *const tls_names[] = { "none", "opportunistic", "required", "implicit", NULL };
static const char *const bare_names[] = { "reject", "normalize", NULL };
static const char *const ipver_names[] = { "any", "ipv4", "ipv6", NULL };

#define O(f) offsetof(struct config, f)
#define S(f) sizeof(((struct config *)0)->f)
#define STR(p, f, d) { p, K_STR, O(f), S(f), d, 0, 0, 0, NULL }
#define PATH(p, f, d) { p, K_PATH, O(f), S(f), d, 0, 0, 0, NULL }
#define INT(p, f, d, lo, hi) { p, K_INT, O(f), 0, NULL, d, lo, hi, NULL }
#define U64(p, f, d, lo, hi) { p, K_U64, O(f), 0, NULL, d, lo, hi, NULL }
#define BOOL(p, f, d) { p, K_BOOL, O(f), 0, NULL, d, 0, 1, NULL }
#define ENUM(p, f, d, n) { p, K_ENUM, O(f), 0, d, 0, 0, 0, n }
#define LIST(p, f) { p, K_LIST, O(f), 0, NULL, 0, 0, 0, NULL }

/* The one table of scalar and list keys; `listen` and `relay.fallback` are
 * checked by their own code below. */
static const struct key keys[] = {
	STR("hostname", hostname, ""),
	PATH("spool_dir", spool_dir, "/var/spool/postern"),
	PATH("run_dir", run_dir, "/run/postern"),
	STR("user", user, "postern"),
	PATH("log.dir", log.dir, "/var/log/postern"),
	{ "log.level", K_ENUM, O(log.level), 0, "info", 0, 0, 0, level_names },
	BOOL("log.syslog", log.syslog, 0),
	{ "log.master.level", K_ENUM, O(log.comp_level[0]), 0, "info", 0, 0, 0, level_names },
	{ "log.smtpd.level", K_ENUM, O(log.comp_level[1]), 0, "info", 0, 0, 0, level_names },
	{ "log.queued.level", K_ENUM, O(log.comp_level[2]), 0, "info", 0, 0, 0, level_names },
	{ "log.deliverd.level", K_ENUM, O(log.comp_level[3]), 0, "info", 0, 0, 0, level_names },
	PATH("tls.cert", tls.cert, ""),
	PATH("tls.key", tls.key, ""),
	LIST("smtpd.mynetworks", smtpd.mynetworks),
	LIST("smtpd.relay_domains", smtpd.relay_domains),
	PATH("smtpd.auth_users", smtpd.auth_users, ""),
	U64("smtpd.max_message_size", smtpd.max_message_size, 26214400, 1024, (int64_t)1 << 40),
	INT("smtpd.max_recipients", smtpd.max_recipients, 100, 1, 100000),
	INT("smtpd.max_connections", smtpd.max_connections, 500, 1, 1000000),
	INT("smtpd.max_connections_per_ip", smtpd.max_connections_per_ip, 50, 1, 1000000),
	INT("smtpd.max_errors", smtpd.max_errors, 10, 1, 1000),
	INT("smtpd.timeout", smtpd.timeout, 300, 1, 86400),
	INT("smtpd.data_timeout", smtpd.data_timeout, 600, 1, 86400),
	ENUM("smtpd.bare_newline", smtpd.bare_newline, "reject", bare_names),
	LIST("smtpd.dnsbl", smtpd.dnsbl),
	{ "relay.tls", K_ENUM, O(relay.tls), 0, "opportunistic", 0, 0, 0, tls_names },
	STR("relay.username", relay.username, ""),
	PATH("relay.password_file", relay.password_file, ""),
	PATH("relay.ca_file", relay.ca_file, ""),
	BOOL("relay.verify", relay.verify, 1),
	STR("relay.rewrite_sender", relay.rewrite_sender, ""),
	INT("queue.retry_min", queue.retry_min, 300, 1, 86400 * 7),
	INT("queue.retry_max", queue.retry_max, 14400, 1, 86400 * 30),
	INT("queue.lifetime", queue.lifetime, 432000, 1, 86400 * 365),
	INT("queue.warn_after", queue.warn_after, 14400, 0, 86400 * 365),
	U64("queue.min_free", queue.min_free, 0, 0, (int64_t)1 << 50),
	INT("queue.concurrency", queue.concurrency, 20, 1, 1000),
	INT("queue.per_destination", queue.per_destination, 5, 1, 1000),
	INT("queue.max_idle", queue.max_idle, 60, 1, 86400),
	INT("queue.connect_timeout", queue.connect_timeout, 30, 1, 3600),
	INT("queue.reply_timeout", queue.reply_timeout, 300, 1, 3600),
	LIST("dns.servers", dns.servers),
	INT("dns.timeout", dns.timeout, 5, 1, 300),
	INT("dns.mx_port", dns.mx_port, 25, 1, 65535),
	{ "dns.ip_version", K_STR, O(dns.ip_version), S(dns.ip_version), "any", 0, 0, 0, ipver_names },
	STR("metrics.listen", metrics.listen, ""),
	LIST("local.domains", local.domains),
	PATH("local.maildir", local.maildir, "/var/mail/%u/Maildir"),
};

/* Keys handled outside the table. */
static const char *const special_keys[] = { "listen", "relay.host", "relay.port", "relay.fallback", NULL };
static const char *const groups[] = { "log", "tls", "smtpd", "relay", "queue", "dns", "metrics", "local", NULL };
/* Groups inside groups: per-component log settings. */
static const char *const subgroups[] = { "log.master", "log.smtpd", "log.queued", "log.deliverd", NULL };
static const char *const log_components[] = { "master", "smtpd", "queued", "deliverd" };

struct ctx {
	const char *file;
	char *err;
	size_t errlen;
	char confdir[CONFIG_PATH_MAX];
};

static int fail(struct ctx *c, const config_setting_t *s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(struct ctx *c, const config_setting_t *s, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (s != NULL && config_setting_source_line(s) > 0)
		snprintf(c->err, c->errlen, "%s:%u: %s",
		         config_setting_source_file(s) ? config_setting_source_file(s) : c->file,
		         config_setting_source_line(s), msg);
	else
		snprintf(c->err, c->errlen, "%s: %s", c->file, msg);
	return -1;
}

static const char *type_name(int t)
{
	switch (t) {
	case CONFIG_TYPE_INT:
	case CONFIG_TYPE_INT64: return "an integer";
	case CONFIG_TYPE_FLOAT: return "a number";
	case CONFIG_TYPE_STRING: return "a string";
	case CONFIG_TYPE_BOOL: return "a boolean";
	case CONFIG_TYPE_ARRAY: return "an array";
	case CONFIG_TYPE_LIST: return "a list";
	case CONFIG_TYPE_GROUP: return "a group";
	}
	return "unknown";
}

static void path_of(const config_setting_t *s, char *out, size_t len)
{
	const config_setting_t *p = config_setting_parent(s);

	if (p != NULL && !config_setting_is_root(p) && config_setting_name(p) != NULL) {
		path_of(p, out, len);
		str_append(out, ".", len);
		str_append(out, config_setting_name(s), len);
	} else {
		str_copy(out, config_setting_name(s) ? config_setting_name(s) : "", len);
	}
}

static const struct key *find_key(const char *path)
{
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		if (strcmp(keys[i].path, path) == 0)
			return &keys[i];
	return NULL;
}

static int in_list(const char *const *l, const char *s)
{
	for (; *l; l++)
		if (strcmp(*l, s) == 0)
			return 1;
	return 0;
}

/* Reject keys that are not in the table, with their line. */
static int check_unknown(struct ctx *c, const config_setting_t *grp)
{
	int n = config_setting_length(grp);

	for (int i = 0; i < n; i++) {
		const config_setting_t *s = config_setting_get_elem(grp, (unsigned)i);
		char path[256];

		path_of(s, path, sizeof(path));
		if (find_key(path) || in_list(special_keys, path))
			continue;
		if ((config_setting_is_root(grp) && in_list(groups, path)) || in_list(subgroups, path)) {
			if (config_setting_type(s) != CONFIG_TYPE_GROUP)
				return fail(c, s, "'%s' must be a group { ... }, not %s", path,
				            type_name(config_setting_type(s)));
			if (check_unknown(c, s) == -1)
				return -1;
			continue;
		}
		return fail(c, s, "unknown key '%s'", path);
	}
	return 0;
}

static int resolve_path(struct ctx *c, const config_setting_t *s, const char *in, char *out,
                        size_t len)
{
	int r;

	if (in[0] == '\0' || in[0] == '/')
		r = str_copy(out, in, len);
	else
		r = str_fmt(out, len, "%s/%s", c->confdir, in) < 0 ? -1 : 0;
	if (r == -1)
		return fail(c, s, "path too long");
	return 0;
}

static void strlist_add(struct strlist *l, const char *s)
{
	l->v = xrealloc(l->v, (l->n + 1) * sizeof(char *));
	l->v[l->n++] = xstrdup(s);
}

static void strlist_free(struct strlist *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i]);
	free(l->v);
	l->v = NULL;
	l->n = 0;
}

static int set_default(struct ctx *c, struct config *cfg, const struct key *k)
{
	char *base = (char *)cfg;

	switch (k->type) {
	case K_INT: *(int *)(base + k->off) = (int)k->def; break;
	case K_U64: *(uint64_t *)(base + k->off) = (uint64_t)k->def; break;
	case K_BOOL: *(int *)(base + k->off) = (int)k->def; break;
	case K_STR: str_copy(base + k->off, k->def_str, k->size); break;
	case K_PATH: return resolve_path(c, NULL, k->def_str, base + k->off, k->size);
	case K_ENUM:
		for (int i = 0; k->names[i]; i++)
			if (strcmp(k->names[i], k->def_str) == 0)
				*(int *)(base + k->off) = i;
		break;
	case K_LIST: break;
	}
	return 0;
}

static int set_key(struct ctx *c, struct config *cfg, const struct key *k, const config_setting_t *s)
{
	char *base = (char *)cfg;
	int t = config_setting_type(s);

	switch (k->type) {
	case K_INT:
	case K_U64: {
		long long v;
		if (t != CONFIG_TYPE_INT && t != CONFIG_TYPE_INT64)
			return fail(c, s, "'%s' must be an integer, not %s", k->path, type_name(t));
		v = config_setting_get_int64(s);
		if (v < k->min || v > k->max)
			return fail(c, s, "'%s' = %lld is out of range [%lld, %lld]", k->path, v,
			            (long long)k->min, (long long)k->max);
		if (k->type == K_INT)
			*(int *)(base + k->off) = (int)v;
		else
			*(uint64_t *)(base + k->off) = (uint64_t)v;
		return 0;
	}
	case K_BOOL:
		if (t != CONFIG_TYPE_BOOL)
			return fail(c, s, "'%s' must be true or false, not %s", k->path, type_name(t));
		*(int *)(base + k->off) = config_setting_get_bool(s);
		return 0;
	case K_STR:
	case K_PATH:
	case K_ENUM: {
		const char *v;
		if (t != CONFIG_TYPE_STRING)
			return fail(c, s, "'%s' must be a string, not %s", k->path, type_name(t));
		v = config_setting_get_string(s);
		if (k->names != NULL) {
			int i;
			for (i = 0; k->names[i]; i++)
				if (strcmp(k->names[i], v) == 0)
					break;
			if (k->names[i] == NULL) {
				char allowed[128] = "";
				for (int j = 0; k->names[j]; j++) {
					str_append(allowed, j ? ", " : "", sizeof(allowed));
					str_append(allowed, k->names[j], sizeof(allowed));
				}
				return fail(c, s, "'%s' = \"%s\" is not one of: %s", k->path, v, allowed);
			}
			if (k->type == K_ENUM) {
				*(int *)(base + k->off) = i;
				return 0;
			}
		}
		if (k->type == K_PATH)
			return resolve_path(c, s, v, base + k->off, k->size);
		if (str_copy(base + k->off, v, k->size) == -1)
			return fail(c, s, "'%s' is too long (max %zu bytes)", k->path, k->size - 1);
		return 0;
	}
	case K_LIST: {
		struct strlist *l = (struct strlist *)(base + k->off);
		int n;
		if (t != CONFIG_TYPE_ARRAY && t != CONFIG_TYPE_LIST)
			return fail(c, s, "'%s' must be an array [ \"...\", ... ], not %s", k->path,
			            type_name(t));
		n = config_setting_length(s);
		for (int i = 0; i < n; i++) {
			const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
			if (config_setting_type(e) != CONFIG_TYPE_STRING)
				return fail(c, e, "'%s' entries must be strings", k->path);
			strlist_add(l, config_setting_get_string(e));
		}
		return 0;
	}
	}
	return 0;
}

static int parse_mode(const char *s)
{
	if (strcmp(s, "smtp") == 0)
		return MODE_SMTP;
	if (strcmp(s, "submission") == 0)
		return MODE_SUBMISSION;
	if (strcmp(s, "submissions") == 0)
		return MODE_SUBMISSIONS;
	return -1;
}

const char *config_mode_name(int mode)
{
	static const char *n[] = { "smtp", "submission", "submissions" };
	return (mode >= 0 && mode <= 2) ? n[mode] : "?";
}

static int load_listen(struct ctx *c, struct config *cfg, const config_setting_t *l)
{
	int n;

	if (config_setting_type(l) != CONFIG_TYPE_LIST)
		return fail(c, l, "'listen' must be a list ( { address = ...; port = ...; mode = ...; }, ... )");
	n = config_setting_length(l);
	if (n > CONFIG_LISTEN_MAX)
		return fail(c, l, "at most %d listen entries", CONFIG_LISTEN_MAX);
	for (int i = 0; i < n; i++) {
		const config_setting_t *g = config_setting_get_elem(l, (unsigned)i);
		struct listen_cfg *lc = &cfg->listen[cfg->nlisten];
		int m;

		if (config_setting_type(g) != CONFIG_TYPE_GROUP)
			return fail(c, g, "listen entries must be groups { address = ...; port = ...; }");
		str_copy(lc->address, "127.0.0.1", sizeof(lc->address));
		lc->port = 25;
		lc->mode = MODE_SMTP;
		m = config_setting_length(g);
		for (int j = 0; j < m; j++) {
			const config_setting_t *s = config_setting_get_elem(g, (unsigned)j);
			const char *name = config_setting_name(s);
			int t = config_setting_type(s);

			if (strcmp(name, "address") == 0) {
				struct sockaddr_storage ss;
				socklen_t sl;
				if (t != CONFIG_TYPE_STRING)
					return fail(c, s, "'listen.address' must be a string, not %s", type_name(t));
				if (str_copy(lc->address, config_setting_get_string(s), sizeof(lc->address)) == -1 ||
				    net_pton(lc->address, 0, &ss, &sl) == -1)
					return fail(c, s, "'listen.address' = \"%s\" is not a numeric IP address",
					            config_setting_get_string(s));
			} else if (strcmp(name, "port") == 0) {
				if (t != CONFIG_TYPE_INT && t != CONFIG_TYPE_INT64)
					return fail(c, s, "'listen.port' must be an integer, not %s", type_name(t));
				long long p = config_setting_get_int64(s);
				if (p < 1 || p > 65535)
					return fail(c, s, "'listen.port' = %lld is out of range [1, 65535]", p);
				lc->port = (int)p;
			} else if (strcmp(name, "mode") == 0) {
				if (t != CONFIG_TYPE_STRING)
					return fail(c, s, "'listen.mode' must be a string, not %s", type_name(t));
				int mode = parse_mode(config_setting_get_string(s));
				if (mode == -1)
					return fail(c, s, "'listen.mode' = \"%s\" is not one of: smtp, submission, submissions",
					            config_setting_get_string(s));
				lc->mode = mode;
			} else {
				return fail(c, s, "unknown key 'listen.%s'", name);
			}
		}
		cfg->nlisten++;
	}
	return 0;
}

static int parse_hostport(const char *s, char *host, size_t hl, int *port)
{
	const char *colon = strrchr(s, ':');
	uint64_t p;

	if (colon == NULL || colon == s)
		return -1;
	if (s[0] == '[') {
		if (colon[-1] != ']')
			return -1;
		if ((size_t)(colon - s - 2) >= hl)
			return -1;
		memcpy(host, s + 1, (size_t)(colon - s - 2));
		host[colon - s - 2] = '\0';
	} else {
		if ((size_t)(colon - s) >= hl)
			return -1;
		memcpy(host, s, (size_t)(colon - s));
		host[colon - s] = '\0';
	}
	if (str_to_u64(colon + 1, 1, 65535, &p) == -1)
		return -1;
	*port = (int)p;
	return 0;
}

static int load_relay(struct ctx *c, struct config *cfg, const config_setting_t *r)
{
	const config_setting_t *h = config_setting_get_member(r, "host");
	const config_setting_t *p = config_setting_get_member(r, "port");
	const config_setting_t *f = config_setting_get_member(r, "fallback");

	cfg->relay.present = 1;
	if (h == NULL)
		return fail(c, r, "'relay' needs 'host' (remove the relay group to deliver to MX hosts)");
	if (config_setting_type(h) != CONFIG_TYPE_STRING)
		return fail(c, h, "'relay.host' must be a string, not %s", type_name(config_setting_type(h)));
	if (config_setting_get_string(h)[0] == '\0')
		return fail(c, h, "'relay.host' is empty");
	if (str_copy(cfg->relay.hosts[0].host, config_setting_get_string(h), sizeof(cfg->relay.hosts[0].host)) == -1)
		return fail(c, h, "'relay.host' is too long");
	cfg->relay.hosts[0].port = cfg->relay.tls == RELAY_TLS_IMPLICIT ? 465 : 25;
	if (p != NULL) {
		int t = config_setting_type(p);
		if (t != CONFIG_TYPE_INT && t != CONFIG_TYPE_INT64)
			return fail(c, p, "'relay.port' must be an integer, not %s", type_name(t));
		long long v = config_setting_get_int64(p);
		if (v < 1 || v > 65535)
			return fail(c, p, "'relay.port' = %lld is out of range [1, 65535]", v);
		cfg->relay.hosts[0].port = (int)v;
	}
	cfg->relay.nhosts = 1;
	if (f != NULL) {
		int t = config_setting_type(f), n;
		if (t != CONFIG_TYPE_ARRAY && t != CONFIG_TYPE_LIST)
			return fail(c, f, "'relay.fallback' must be an array [ \"host:port\", ... ]");
		n = config_setting_length(f);
		for (int i = 0; i < n; i++) {
			const config_setting_t *e = config_setting_get_elem(f, (unsigned)i);
			struct relay_host *rh = &cfg->relay.hosts[cfg->relay.nhosts];
			if (cfg->relay.nhosts >= RELAY_HOSTS_MAX)
				return fail(c, e, "at most %d fallback relays", RELAY_HOSTS_MAX - 1);
			if (config_setting_type(e) != CONFIG_TYPE_STRING ||
			    parse_hostport(config_setting_get_string(e), rh->host, sizeof(rh->host), &rh->port) == -1)
				return fail(c, e, "'relay.fallback' entries must be strings \"host:port\"");
			cfg->relay.nhosts++;
		}
	}
	return 0;
}

static int validate(struct ctx *c, struct config *cfg, config_t *lc)
{
	for (size_t i = 0; i < cfg->smtpd.mynetworks.n; i++) {
		struct cidr cd;
		if (cidr_parse(cfg->smtpd.mynetworks.v[i], &cd) == -1)
			return fail(c, config_lookup(lc, "smtpd.mynetworks"),
			            "'smtpd.mynetworks' entry \"%s\" is not an address or CIDR network",
			            cfg->smtpd.mynetworks.v[i]);
	}
	if (cfg->queue.retry_min > cfg->queue.retry_max)
		return fail(c, config_lookup(lc, "queue.retry_min"),
		            "'queue.retry_min' (%d) is larger than 'queue.retry_max' (%d)",
		            cfg->queue.retry_min, cfg->queue.retry_max);
	if (cfg->nlisten == 0 && config_lookup(lc, "listen") == NULL) {
		str_copy(cfg->listen[0].address, "127.0.0.1", sizeof(cfg->listen[0].address));
		cfg->listen[0].port = 25;
		cfg->listen[0].mode = MODE_SMTP;
		cfg->nlisten = 1;
	}
	if (cfg->hostname[0] == '\0') {
		if (gethostname(cfg->hostname, sizeof(cfg->hostname) - 1) == -1)
			str_copy(cfg->hostname, "localhost", sizeof(cfg->hostname));
	}
	if (cfg->metrics.listen[0] != '\0') {
		struct sockaddr_storage ss;
		socklen_t sl;
		if (parse_hostport(cfg->metrics.listen, cfg->metrics.address, sizeof(cfg->metrics.address),
		                   &cfg->metrics.port) == -1 ||
		    net_pton(cfg->metrics.address, 0, &ss, &sl) == -1)
			return fail(c, config_lookup(lc, "metrics.listen"),
			            "'metrics.listen' = \"%s\" is not \"IP:port\" (e.g. \"127.0.0.1:9925\")",
			            cfg->metrics.listen);
	}
	if (cfg->user[0] == '\0')
		return fail(c, config_lookup(lc, "user"), "'user' is empty");
	if (cfg->spool_dir[0] != '/' || cfg->run_dir[0] != '/' || cfg->log.dir[0] != '/')
		return fail(c, NULL, "spool_dir, run_dir and log.dir must not be empty");
	return 0;
}

struct config *config_load(const char *path, char *err, size_t errlen)
{
	struct ctx c = { .file = path, .err = err, .errlen = errlen };
	struct config *cfg;
	config_t lc;
	char *slash;
	char real[PATH_MAX];   /* realpath() may write up to PATH_MAX bytes */

	err[0] = '\0';
	if (realpath(path, real) == NULL) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return NULL;
	}
	if (str_copy(c.confdir, real, sizeof(c.confdir)) == -1) {
		snprintf(err, errlen, "%s: path too long", path);
		return NULL;
	}
	cfg = xcalloc(1, sizeof(*cfg));
	str_copy(cfg->file, c.confdir, sizeof(cfg->file));
	if ((slash = strrchr(c.confdir, '/')) != NULL)
		*(slash == c.confdir ? slash + 1 : slash) = '\0';

	config_init(&lc);
	if (config_read_file(&lc, path) != CONFIG_TRUE) {
		if (config_error_type(&lc) == CONFIG_ERR_FILE_IO)
			snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
		else
			snprintf(err, errlen, "%s:%d: syntax error: %s",
			         config_error_file(&lc) ? config_error_file(&lc) : path,
			         config_error_line(&lc), config_error_text(&lc));
		goto bad;
	}
	if (check_unknown(&c, config_root_setting(&lc)) == -1)
		goto bad;
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		const config_setting_t *s = config_lookup(&lc, keys[i].path);
		if (set_default(&c, cfg, &keys[i]) == -1)
			goto bad;
		if (s != NULL && set_key(&c, cfg, &keys[i], s) == -1)
			goto bad;
	}
	const config_setting_t *s;
	if ((s = config_lookup(&lc, "listen")) != NULL && load_listen(&c, cfg, s) == -1)
		goto bad;
	if ((s = config_lookup(&lc, "relay")) != NULL && load_relay(&c, cfg, s) == -1)
		goto bad;
	/* A component without its own log level uses log.level. */
	for (size_t i = 0; i < 4; i++) {
		char key[64];
		str_fmt(key, sizeof(key), "log.%s.level", log_components[i]);
		if (config_lookup(&lc, key) == NULL)
			cfg->log.comp_level[i] = cfg->log.level;
	}
	/* List defaults that are not empty (DESIGN.md). */
	if (config_lookup(&lc, "smtpd.mynetworks") == NULL) {
		strlist_add(&cfg->smtpd.mynetworks, "127.0.0.0/8");
		strlist_add(&cfg->smtpd.mynetworks, "::1/128");
	}
	if (config_lookup(&lc, "local.domains") == NULL)
		strlist_add(&cfg->local.domains, "localhost");
	if (validate(&c, cfg, &lc) == -1)
		goto bad;
	config_destroy(&lc);
	return cfg;
bad:
	config_destroy(&lc);
	config_free(cfg);
	return NULL;
}

void config_free(struct config *cfg)
{
	if (cfg == NULL)
		return;
	strlist_free(&cfg->smtpd.mynetworks);
	strlist_free(&cfg->smtpd.relay_domains);
	strlist_free(&cfg->smtpd.dnsbl);
	strlist_free(&cfg->dns.servers);
	strlist_free(&cfg->local.domains);
	free(cfg);
}

int config_log_level(const struct config *cfg, const char *component)
{
	for (size_t i = 0; i < 4; i++)
		if (strcmp(component, log_components[i]) == 0)
			return cfg->log.comp_level[i];
	return cfg->log.level;
}

int config_pool_min(const struct config *cfg)
{
	return cfg->queue.concurrency < CONFIG_POOL_MIN ? cfg->queue.concurrency : CONFIG_POOL_MIN;
}

int config_is_local_domain(const struct config *cfg, const char *domain)
{
	for (size_t i = 0; i < cfg->local.domains.n; i++)
		if (str_casecmp(cfg->local.domains.v[i], domain) == 0)
			return 1;
	return 0;
}

const char *config_default_path(const char *exe_prefix)
{
	static char buf[CONFIG_PATH_MAX];
	const char *env = getenv("POSTERN_CONFIG");

	if (env != NULL && *env)
		return env;
	str_fmt(buf, sizeof(buf), "%s/etc/postern/postern.conf", exe_prefix);
	return buf;
}
