/* Unit tests for shared/config.c: defaults (DESIGN.md), path resolution,
 * and every error message with its file and line. */
#include "config.h"
#include "harness.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[PATH_MAX];        /* real path of the temporary directory */
static char conf[PATH_MAX + 32];  /* dir/postern.conf */

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	if (f == NULL) {
		perror(path);
		exit(2);
	}
	fputs(text, f);
	fclose(f);
}

static struct config *load(const char *text, char *err, size_t errlen)
{
	write_file(conf, text);
	return config_load(conf, err, errlen);
}

/* Errors: exact text after "FILE:LINE: " (line 0: "FILE: " with no line). */
static void test_errors(void)
{
	static const struct {
		const char *text;
		int line;
		const char *msg;
	} cases[] = {
		/* syntax */
		{ "hostname = \"x\";\nsmtpd = {\n  max_recipients = ;\n};\n", 3, "syntax error: syntax error" },
		{ "hostname = \"x\";\nhostname = \"y\";\n", 2, NULL },   /* duplicate setting */
		{ "smtpd = {\n", 2, "syntax error: syntax error" },
		{ "\n\n\nhostname = \"x\" junk;\n", 4, "syntax error: syntax error" },
		/* unknown keys */
		{ "hostname = \"x\";\nsmtpd = {\n  foo = 1;\n};\n", 3, "unknown key 'smtpd.foo'" },
		{ "# comment\nbogus = 1;\n", 2, "unknown key 'bogus'" },
		{ "smtpd = {\n  max_recipients = 5;\n  sub = { a = 1; };\n};\n", 3, "unknown key 'smtpd.sub'" },
		{ "log = {\n dir = \"/l\";\n levle = \"info\";\n};\n", 3, "unknown key 'log.levle'" },
		{ "queue = { retry_min = 300; };\nrelay = {\n host = \"h\";\n bogus = 1;\n};\n", 4,
		  "unknown key 'relay.bogus'" },
		{ "mynetworks = [ \"10.0.0.0/8\" ];\n", 1, "unknown key 'mynetworks'" },  /* wrong level */
		{ "smtpd = 5;\n", 1, "'smtpd' must be a group { ... }, not an integer" },
		{ "\nlocal = [ \"x\" ];\n", 2, "'local' must be a group { ... }, not an array" },
		/* types */
		{ "smtpd = {\n max_recipients = \"100\";\n};\n", 2,
		  "'smtpd.max_recipients' must be an integer, not a string" },
		{ "smtpd = { max_recipients = 1.5; };\n", 1,
		  "'smtpd.max_recipients' must be an integer, not a number" },
		{ "smtpd = { max_recipients = true; };\n", 1,
		  "'smtpd.max_recipients' must be an integer, not a boolean" },
		{ "hostname = 5;\n", 1, "'hostname' must be a string, not an integer" },
		{ "spool_dir = [ \"a\" ];\n", 1, "'spool_dir' must be a string, not an array" },
		{ "log = { syslog = 1; };\n", 1, "'log.syslog' must be true or false, not an integer" },
		{ "log = { syslog = \"yes\"; };\n", 1, "'log.syslog' must be true or false, not a string" },
		{ "smtpd = {\n mynetworks = \"127.0.0.1\";\n};\n", 2,
		  "'smtpd.mynetworks' must be an array [ \"...\", ... ], not a string" },
		{ "smtpd = {\n mynetworks = [ \"127.0.0.1\",\n 5 ];\n};\n", 0, NULL },  /* libconfig: mixed array */
		{ "smtpd = {\n mynetworks = ( \"127.0.0.1\",\n 5 );\n};\n", 3,
		  "'smtpd.mynetworks' entries must be strings" },
		/* ranges */
		{ "smtpd = { max_recipients = 0; };\n", 1,
		  "'smtpd.max_recipients' = 0 is out of range [1, 100000]" },
		{ "smtpd = { max_recipients = 100001; };\n", 1,
		  "'smtpd.max_recipients' = 100001 is out of range [1, 100000]" },
		{ "smtpd = { max_recipients = -1; };\n", 1,
		  "'smtpd.max_recipients' = -1 is out of range [1, 100000]" },
		{ "smtpd = { max_message_size = 1023; };\n", 1,
		  "'smtpd.max_message_size' = 1023 is out of range [1024, 1099511627776]" },
		{ "smtpd = { max_message_size = 1099511627777L; };\n", 1,
		  "'smtpd.max_message_size' = 1099511627777 is out of range [1024, 1099511627776]" },
		{ "smtpd = { max_recipients = 4294967397L; };\n", 1,   /* 2^32 + 101: no truncation */
		  "'smtpd.max_recipients' = 4294967397 is out of range [1, 100000]" },
		{ "dns = { mx_port = 65536; };\n", 1, "'dns.mx_port' = 65536 is out of range [1, 65535]" },
		{ "queue = { warn_after = -1; };\n", 1,
		  "'queue.warn_after' = -1 is out of range [0, 31536000]" },
		{ "queue = { max_idle = 0; };\n", 1, "'queue.max_idle' = 0 is out of range [1, 86400]" },
		{ "queue = { max_idle = 86401; };\n", 1,
		  "'queue.max_idle' = 86401 is out of range [1, 86400]" },
		/* enums */
		{ "log = {\n level = \"loud\";\n};\n", 2,
		  "'log.level' = \"loud\" is not one of: debug, info, warn, error" },
		{ "log = { level = \"INFO\"; };\n", 1,
		  "'log.level' = \"INFO\" is not one of: debug, info, warn, error" },
		{ "smtpd = { bare_newline = \"accept\"; };\n", 1,
		  "'smtpd.bare_newline' = \"accept\" is not one of: reject, normalize" },
		{ "relay = { host = \"h\"; tls = \"maybe\"; };\n", 1,
		  "'relay.tls' = \"maybe\" is not one of: none, opportunistic, required, implicit" },
		{ "dns = { ip_version = \"ipv5\"; };\n", 1,
		  "'dns.ip_version' = \"ipv5\" is not one of: any, ipv4, ipv6" },
		{ "log = { level = 1; };\n", 1, "'log.level' must be a string, not an integer" },
		/* mynetworks */
		{ "smtpd = {\n mynetworks = [ \"127.0.0.0/8\",\n \"10.0.0.0/33\" ];\n};\n", 2,
		  "'smtpd.mynetworks' entry \"10.0.0.0/33\" is not an address or CIDR network" },
		{ "smtpd = { mynetworks = [ \"localhost\" ]; };\n", 1,
		  "'smtpd.mynetworks' entry \"localhost\" is not an address or CIDR network" },
		{ "smtpd = { mynetworks = [ \"\" ]; };\n", 1,
		  "'smtpd.mynetworks' entry \"\" is not an address or CIDR network" },
		/* listen */
		{ "listen = { port = 25; };\n", 1,
		  "'listen' must be a list ( { address = ...; port = ...; mode = ...; }, ... )" },
		{ "listen = ( 25 );\n", 1, "listen entries must be groups { address = ...; port = ...; }" },
		{ "listen = (\n { port = 25; },\n { port = 0; }\n);\n", 3,
		  "'listen.port' = 0 is out of range [1, 65535]" },
		{ "listen = ( { port = 65536; } );\n", 1, "'listen.port' = 65536 is out of range [1, 65535]" },
		{ "listen = ( { port = -25; } );\n", 1, "'listen.port' = -25 is out of range [1, 65535]" },
		{ "listen = ( { port = \"25\"; } );\n", 1, "'listen.port' must be an integer, not a string" },
		{ "listen = (\n {\n port = 25;\n mode = \"smtps\";\n }\n);\n", 4,
		  "'listen.mode' = \"smtps\" is not one of: smtp, submission, submissions" },
		{ "listen = ( { mode = 1; } );\n", 1, "'listen.mode' must be a string, not an integer" },
		{ "listen = (\n { port = 25;\n tls = true; }\n);\n", 3, "unknown key 'listen.tls'" },
		{ "listen = ( { address = \"localhost\"; } );\n", 1,
		  "'listen.address' = \"localhost\" is not a numeric IP address" },
		{ "listen = ( { address = \"\"; } );\n", 1, "'listen.address' = \"\" is not a numeric IP address" },
		{ "listen = ( { address = 127; } );\n", 1, "'listen.address' must be a string, not an integer" },
		{ "listen = ( {port=1;},{port=2;},{port=3;},{port=4;},{port=5;},{port=6;},{port=7;},{port=8;},"
		  "{port=9;},{port=10;},{port=11;},{port=12;},{port=13;},{port=14;},{port=15;},{port=16;},"
		  "{port=17;} );\n", 1, "at most 16 listen entries" },
		/* relay */
		{ "\nrelay = {\n port = 587;\n};\n", 2,
		  "'relay' needs 'host' (remove the relay group to deliver to MX hosts)" },
		{ "relay = { host = \"\"; };\n", 1, "'relay.host' is empty" },
		{ "relay = { host = 5; };\n", 1, "'relay.host' must be a string, not an integer" },
		{ "relay = {\n host = \"h\";\n port = 0;\n};\n", 3, "'relay.port' = 0 is out of range [1, 65535]" },
		{ "relay = { host = \"h\"; port = \"587\"; };\n", 1, "'relay.port' must be an integer, not a string" },
		{ "relay = { host = \"h\"; fallback = \"b:25\"; };\n", 1,
		  "'relay.fallback' must be an array [ \"host:port\", ... ]" },
		{ "relay = { host = \"h\"; fallback = [ \"b\" ]; };\n", 1,
		  "'relay.fallback' entries must be strings \"host:port\"" },
		{ "relay = { host = \"h\"; fallback = [ \"b:0\" ]; };\n", 1,
		  "'relay.fallback' entries must be strings \"host:port\"" },
		{ "relay = { host = \"h\"; fallback = [ \"b:65536\" ]; };\n", 1,
		  "'relay.fallback' entries must be strings \"host:port\"" },
		{ "relay = { host = \"h\"; fallback = [ \":25\" ]; };\n", 1,
		  "'relay.fallback' entries must be strings \"host:port\"" },
		{ "relay = { host = \"h\"; fallback = [ \"b:25x\" ]; };\n", 1,
		  "'relay.fallback' entries must be strings \"host:port\"" },
		{ "relay = { host = \"h\"; fallback = [ \"b:\" ]; };\n", 1,
		  "'relay.fallback' entries must be strings \"host:port\"" },
		{ "relay = { host = \"h\"; fallback = [ \"[::1:25\" ]; };\n", 1,
		  "'relay.fallback' entries must be strings \"host:port\"" },
		{ "relay = { host = \"h\"; fallback = ( 25 ); };\n", 1,
		  "'relay.fallback' entries must be strings \"host:port\"" },
		{ "relay = { host = \"h\";\n fallback = [ \"a:1\", \"a:2\", \"a:3\", \"a:4\", \"a:5\", \"a:6\", \"a:7\",\n"
		  " \"a:8\" ]; };\n", 3, "at most 7 fallback relays" },
		/* cross-field and emptiness */
		{ "queue = {\n retry_min = 500;\n retry_max = 400;\n};\n", 2,
		  "'queue.retry_min' (500) is larger than 'queue.retry_max' (400)" },
		{ "user = \"\";\n", 1, "'user' is empty" },
		{ "spool_dir = \"\";\n", 0, "spool_dir, run_dir and log.dir must not be empty" },
		{ "log = { dir = \"\"; };\n", 0, "spool_dir, run_dir and log.dir must not be empty" },
		{ "hostname = \"hhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhh"
		  "hhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhh"
		  "hhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhh\";\n",
		  1, "'hostname' is too long (max 255 bytes)" },
		{ "user = \"0123456789012345678901234567890123456789012345678901234567890123\";\n", 1,
		  "'user' is too long (max 63 bytes)" },
	};

	for (size_t i = 0; i < NELEM(cases); i++) {
		char err[1024] = "unset", want[PATH_MAX + 1200], prefix[PATH_MAX + 64];
		struct config *cfg;
		ROW("%zu: %.60s", i, cases[i].text);
		cfg = load(cases[i].text, err, sizeof(err));
		CHECK(cfg == NULL);
		config_free(cfg);
		if (cases[i].line > 0)
			snprintf(prefix, sizeof(prefix), "%s:%d: ", conf, cases[i].line);
		else
			snprintf(prefix, sizeof(prefix), "%s: ", conf);
		if (cases[i].msg != NULL) {
			snprintf(want, sizeof(want), "%s%s", prefix, cases[i].msg);
			CHECK_STR(err, want);
		} else if (cases[i].line > 0) {
			CHECK(strncmp(err, prefix, strlen(prefix)) == 0);
			if (strncmp(err, prefix, strlen(prefix)) != 0)
				printf("     got: %s\n", err);
		} else {
			CHECK(err[0] != '\0' && strcmp(err, "unset") != 0);
			CHECK(strncmp(err, conf, strlen(conf)) == 0);
		}
	}
}

static void test_defaults(void)
{
	char err[512] = "";
	char host[256] = "";
	struct config *cfg = load("# empty\n", err, sizeof(err));

	CHECK(cfg != NULL);
	if (cfg == NULL) {
		printf("     err: %s\n", err);
		return;
	}
	CHECK_STR(err, "");
	CHECK_STR(cfg->file, conf);
	gethostname(host, sizeof(host) - 1);
	CHECK_STR(cfg->hostname, host);
	CHECK_STR(cfg->spool_dir, "/var/spool/postern");
	CHECK_STR(cfg->run_dir, "/run/postern");
	CHECK_STR(cfg->user, "postern");
	CHECK_STR(cfg->log.dir, "/var/log/postern");
	CHECK_EQ_INT(cfg->log.level, 1);   /* info */
	CHECK_EQ_INT(cfg->log.syslog, 0);
	CHECK_EQ_U64(cfg->nlisten, 1);
	CHECK_STR(cfg->listen[0].address, "127.0.0.1");
	CHECK_EQ_INT(cfg->listen[0].port, 25);
	CHECK_EQ_INT(cfg->listen[0].mode, MODE_SMTP);
	CHECK_STR(cfg->tls.cert, "");
	CHECK_STR(cfg->tls.key, "");
	CHECK_EQ_U64(cfg->smtpd.mynetworks.n, 2);
	if (cfg->smtpd.mynetworks.n == 2) {
		CHECK_STR(cfg->smtpd.mynetworks.v[0], "127.0.0.0/8");
		CHECK_STR(cfg->smtpd.mynetworks.v[1], "::1/128");
	}
	CHECK_EQ_U64(cfg->smtpd.relay_domains.n, 0);
	CHECK_STR(cfg->smtpd.auth_users, "");
	CHECK_EQ_U64(cfg->smtpd.max_message_size, 26214400);
	CHECK_EQ_INT(cfg->smtpd.max_recipients, 100);
	CHECK_EQ_INT(cfg->smtpd.max_connections, 500);
	CHECK_EQ_INT(cfg->smtpd.max_connections_per_ip, 50);
	CHECK_EQ_INT(cfg->smtpd.timeout, 300);
	CHECK_EQ_INT(cfg->smtpd.bare_newline, BARE_NL_REJECT);
	CHECK_EQ_U64(cfg->smtpd.dnsbl.n, 0);
	CHECK_EQ_INT(cfg->relay.present, 0);
	CHECK_EQ_U64(cfg->relay.nhosts, 0);
	CHECK_EQ_INT(cfg->relay.tls, RELAY_TLS_OPPORTUNISTIC);
	CHECK_EQ_INT(cfg->relay.verify, 1);
	CHECK_EQ_INT(cfg->queue.retry_min, 300);
	CHECK_EQ_INT(cfg->queue.retry_max, 14400);
	CHECK_EQ_INT(cfg->queue.lifetime, 432000);
	CHECK_EQ_INT(cfg->queue.warn_after, 14400);
	CHECK_EQ_U64(cfg->queue.min_free, 0);
	CHECK_EQ_INT(cfg->queue.concurrency, 20);
	CHECK_EQ_INT(cfg->queue.per_destination, 5);
	CHECK_EQ_INT(cfg->queue.max_idle, 60);
	CHECK_EQ_INT(config_pool_min(cfg), CONFIG_POOL_MIN);
	CHECK_EQ_INT(cfg->queue.connect_timeout, 30);
	CHECK_EQ_INT(cfg->queue.reply_timeout, 300);
	CHECK_EQ_U64(cfg->dns.servers.n, 0);
	CHECK_EQ_INT(cfg->dns.timeout, 5);
	CHECK_EQ_INT(cfg->dns.mx_port, 25);
	CHECK_STR(cfg->dns.ip_version, "any");
	CHECK_STR(cfg->metrics.listen, "");
	CHECK_EQ_U64(cfg->local.domains.n, 1);
	if (cfg->local.domains.n == 1)
		CHECK_STR(cfg->local.domains.v[0], "localhost");
	CHECK_STR(cfg->local.maildir, "/var/mail/%u/Maildir");
	CHECK_EQ_INT(config_is_local_domain(cfg, "LocalHost"), 1);
	CHECK_EQ_INT(config_is_local_domain(cfg, "localhost.example"), 0);
	CHECK_EQ_INT(config_is_local_domain(cfg, ""), 0);
	config_free(cfg);
}

/* The example from DESIGN.md loads and every value lands. */
static void test_full(void)
{
	static const char text[] =
	    "hostname  = \"relay.example.org\";\n"
	    "spool_dir = \"var/spool\";\n"
	    "run_dir   = \"./run\";\n"
	    "user      = \"mailer\";\n"
	    "log = { dir = \"/abs/log\"; level = \"debug\"; syslog = true; };\n"
	    "listen = (\n"
	    "  { address = \"127.0.0.1\"; port = 25;  mode = \"smtp\"; },\n"
	    "  { address = \"::1\"; port = 587; mode = \"submission\"; },\n"
	    "  { port = 465; mode = \"submissions\"; },\n"
	    "  { }\n"
	    ");\n"
	    "tls = { cert = \"cert.pem\"; key = \"/etc/postern/key.pem\"; };\n"
	    "smtpd = {\n"
	    "  mynetworks = [ \"10.0.0.0/8\", \"2001:db8::/32\", \"192.0.2.1\" ];\n"
	    "  relay_domains = [ \"a.example\" ];\n"
	    "  auth_users = \"users\";\n"
	    "  max_message_size = 5000000000L;\n"
	    "  max_recipients = 1000;\n"
	    "  max_connections = 10;\n"
	    "  max_connections_per_ip = 2;\n"
	    "  timeout = 60;\n"
	    "  bare_newline = \"normalize\";\n"
	    "  dnsbl = [ \"zen.example\" ];\n"
	    "};\n"
	    "relay = {\n"
	    "  host = \"smtp.example.net\"; port = 587;\n"
	    "  tls = \"required\";\n"
	    "  username = \"alice\"; password_file = \"relay.pass\";\n"
	    "  ca_file = \"/etc/ssl/certs/ca-certificates.crt\"; verify = false;\n"
	    "  rewrite_sender = \"alice@example.net\";\n"
	    "  fallback = [ \"h:25\", \"[2001:db8::1]:587\", \"b.example:2525\" ];\n"
	    "};\n"
	    "queue = { retry_min = 60; retry_max = 60; lifetime = 3600;\n"
	    "          warn_after = 0; min_free = 1048576;\n"
	    "          concurrency = 3; per_destination = 1; max_idle = 86400;\n"
	    "          connect_timeout = 10; reply_timeout = 20; };\n"
	    "dns = { servers = [ \"192.0.2.53\" ]; timeout = 2; mx_port = 2525; ip_version = \"ipv4\"; };\n"
	    "metrics = { listen = \"127.0.0.1:9925\"; };\n"
	    "local = { domains = [ \"Example.ORG\", \"localhost\" ]; maildir = \"mail/%u\"; };\n";
	char err[512] = "", want[PATH_MAX + 64];
	struct config *cfg = load(text, err, sizeof(err));

	CHECK(cfg != NULL);
	if (cfg == NULL) {
		printf("     err: %s\n", err);
		return;
	}
	CHECK_STR(cfg->hostname, "relay.example.org");
	/* relative paths resolve against the config file's directory */
	snprintf(want, sizeof(want), "%s/var/spool", dir);
	CHECK_STR(cfg->spool_dir, want);
	snprintf(want, sizeof(want), "%s/./run", dir);
	CHECK_STR(cfg->run_dir, want);
	CHECK_STR(cfg->log.dir, "/abs/log");
	snprintf(want, sizeof(want), "%s/cert.pem", dir);
	CHECK_STR(cfg->tls.cert, want);
	CHECK_STR(cfg->tls.key, "/etc/postern/key.pem");
	snprintf(want, sizeof(want), "%s/users", dir);
	CHECK_STR(cfg->smtpd.auth_users, want);
	snprintf(want, sizeof(want), "%s/relay.pass", dir);
	CHECK_STR(cfg->relay.password_file, want);
	snprintf(want, sizeof(want), "%s/mail/%%u", dir);
	CHECK_STR(cfg->local.maildir, want);
	CHECK_STR(cfg->user, "mailer");
	CHECK_EQ_INT(cfg->log.level, 0);
	CHECK_EQ_INT(cfg->log.syslog, 1);

	CHECK_EQ_U64(cfg->nlisten, 4);
	CHECK_STR(cfg->listen[0].address, "127.0.0.1");
	CHECK_EQ_INT(cfg->listen[0].port, 25);
	CHECK_EQ_INT(cfg->listen[0].mode, MODE_SMTP);
	CHECK_STR(cfg->listen[1].address, "::1");
	CHECK_EQ_INT(cfg->listen[1].port, 587);
	CHECK_EQ_INT(cfg->listen[1].mode, MODE_SUBMISSION);
	CHECK_STR(cfg->listen[2].address, "127.0.0.1");   /* entry defaults */
	CHECK_EQ_INT(cfg->listen[2].port, 465);
	CHECK_EQ_INT(cfg->listen[2].mode, MODE_SUBMISSIONS);
	CHECK_STR(cfg->listen[3].address, "127.0.0.1");
	CHECK_EQ_INT(cfg->listen[3].port, 25);
	CHECK_EQ_INT(cfg->listen[3].mode, MODE_SMTP);

	CHECK_EQ_U64(cfg->smtpd.mynetworks.n, 3);
	if (cfg->smtpd.mynetworks.n == 3)
		CHECK_STR(cfg->smtpd.mynetworks.v[1], "2001:db8::/32");
	CHECK_EQ_U64(cfg->smtpd.relay_domains.n, 1);
	CHECK_EQ_U64(cfg->smtpd.max_message_size, 5000000000ULL);
	CHECK_EQ_INT(cfg->smtpd.max_recipients, 1000);
	CHECK_EQ_INT(cfg->smtpd.max_connections, 10);
	CHECK_EQ_INT(cfg->smtpd.max_connections_per_ip, 2);
	CHECK_EQ_INT(cfg->smtpd.timeout, 60);
	CHECK_EQ_INT(cfg->smtpd.bare_newline, BARE_NL_NORMALIZE);
	CHECK_EQ_U64(cfg->smtpd.dnsbl.n, 1);

	CHECK_EQ_INT(cfg->relay.present, 1);
	CHECK_EQ_U64(cfg->relay.nhosts, 4);
	CHECK_STR(cfg->relay.hosts[0].host, "smtp.example.net");
	CHECK_EQ_INT(cfg->relay.hosts[0].port, 587);
	CHECK_STR(cfg->relay.hosts[1].host, "h");
	CHECK_EQ_INT(cfg->relay.hosts[1].port, 25);
	CHECK_STR(cfg->relay.hosts[2].host, "2001:db8::1");
	CHECK_EQ_INT(cfg->relay.hosts[2].port, 587);
	CHECK_STR(cfg->relay.hosts[3].host, "b.example");
	CHECK_EQ_INT(cfg->relay.hosts[3].port, 2525);
	CHECK_EQ_INT(cfg->relay.tls, RELAY_TLS_REQUIRED);
	CHECK_STR(cfg->relay.username, "alice");
	CHECK_STR(cfg->relay.ca_file, "/etc/ssl/certs/ca-certificates.crt");
	CHECK_EQ_INT(cfg->relay.verify, 0);
	CHECK_STR(cfg->relay.rewrite_sender, "alice@example.net");

	CHECK_EQ_INT(cfg->queue.retry_min, 60);
	CHECK_EQ_INT(cfg->queue.retry_max, 60);
	CHECK_EQ_INT(cfg->queue.lifetime, 3600);
	CHECK_EQ_INT(cfg->queue.warn_after, 0);
	CHECK_EQ_U64(cfg->queue.min_free, 1048576);
	CHECK_EQ_INT(cfg->queue.concurrency, 3);
	CHECK_EQ_INT(cfg->queue.per_destination, 1);
	CHECK_EQ_INT(cfg->queue.max_idle, 86400);
	CHECK_EQ_INT(config_pool_min(cfg), 2);
	CHECK_EQ_INT(cfg->queue.connect_timeout, 10);
	CHECK_EQ_INT(cfg->queue.reply_timeout, 20);
	CHECK_EQ_U64(cfg->dns.servers.n, 1);
	CHECK_EQ_INT(cfg->dns.timeout, 2);
	CHECK_EQ_INT(cfg->dns.mx_port, 2525);
	CHECK_STR(cfg->dns.ip_version, "ipv4");
	CHECK_STR(cfg->metrics.listen, "127.0.0.1:9925");
	CHECK_EQ_U64(cfg->local.domains.n, 2);
	CHECK_EQ_INT(config_is_local_domain(cfg, "example.org"), 1);
	CHECK_EQ_INT(config_is_local_domain(cfg, "EXAMPLE.ORG"), 1);
	CHECK_EQ_INT(config_is_local_domain(cfg, "example.net"), 0);
	config_free(cfg);
}

static void test_small_cases(void)
{
	static const struct {
		const char *text;
		int relay_port;      /* relay.hosts[0].port, 0: no relay */
		size_t nmynet;       /* smtpd.mynetworks.n */
		size_t nlocal;       /* local.domains.n */
		size_t nlisten;
	} cases[] = {
		{ "relay = { host = \"h\"; };\n", 25, 2, 1, 1 },
		{ "relay = { host = \"h\"; tls = \"implicit\"; };\n", 465, 2, 1, 1 },   /* implicit TLS: 465 */
		{ "relay = { host = \"h\"; tls = \"implicit\"; port = 2465; };\n", 2465, 2, 1, 1 },
		{ "smtpd = { mynetworks = [ ]; };\n", 0, 0, 1, 1 },     /* explicit empty list: no default */
		{ "local = { domains = [ ]; };\n", 0, 2, 0, 1 },
		{ "listen = ( );\n", 0, 2, 1, 0 },                       /* explicit: no listener */
		{ "smtpd = { mynetworks = ( \"::ffff:10.0.0.0/104\" ); };\n", 0, 1, 1, 1 },
	};

	for (size_t i = 0; i < NELEM(cases); i++) {
		char err[512] = "";
		struct config *cfg;
		ROW("%zu: %.60s", i, cases[i].text);
		cfg = load(cases[i].text, err, sizeof(err));
		CHECK(cfg != NULL);
		if (cfg == NULL) {
			printf("     err: %s\n", err);
			continue;
		}
		CHECK_EQ_INT(cfg->relay.present, cases[i].relay_port != 0);
		if (cases[i].relay_port) {
			CHECK_EQ_U64(cfg->relay.nhosts, 1);
			CHECK_EQ_INT(cfg->relay.hosts[0].port, cases[i].relay_port);
		}
		CHECK_EQ_U64(cfg->smtpd.mynetworks.n, cases[i].nmynet);
		CHECK_EQ_U64(cfg->local.domains.n, cases[i].nlocal);
		CHECK_EQ_U64(cfg->nlisten, cases[i].nlisten);
		config_free(cfg);
	}
}

/* The deliverd pool's floor follows queue.concurrency when that is smaller. */
static void test_pool_min(void)
{
	static const struct {
		const char *text;
		int min;
	} cases[] = {
		{ "queue = { concurrency = 1; };\n", 1 },
		{ "queue = { concurrency = 2; };\n", 2 },
		{ "queue = { concurrency = 3; };\n", CONFIG_POOL_MIN },
		{ "queue = { concurrency = 1000; };\n", CONFIG_POOL_MIN },
	};

	for (size_t i = 0; i < NELEM(cases); i++) {
		char err[512] = "";
		struct config *cfg;
		ROW("%zu: %s", i, cases[i].text);
		cfg = load(cases[i].text, err, sizeof(err));
		CHECK(cfg != NULL);
		if (cfg == NULL)
			continue;
		CHECK_EQ_INT(config_pool_min(cfg), cases[i].min);
		config_free(cfg);
	}
}

static void test_files(void)
{
	char err[PATH_MAX + 128], want[PATH_MAX + 128], path[PATH_MAX + 64];
	struct config *cfg;

	/* A file that does not exist. */
	snprintf(path, sizeof(path), "%s/missing.conf", dir);
	cfg = config_load(path, err, sizeof(err));
	CHECK(cfg == NULL);
	snprintf(want, sizeof(want), "%s: %s", path, strerror(ENOENT));
	CHECK_STR(err, want);
	/* A directory where the file should be. */
	cfg = config_load(dir, err, sizeof(err));
	CHECK(cfg == NULL);
	CHECK(strncmp(err, dir, strlen(dir)) == 0);
	config_free(cfg);

	/* A relative config path: cfg->file and the paths become absolute. */
	char cwd[PATH_MAX];
	CHECK(getcwd(cwd, sizeof(cwd)) != NULL);
	CHECK_EQ_INT(chdir(dir), 0);
	mkdir("sub", 0700);
	write_file("sub/rel.conf", "spool_dir = \"spool\";\n");
	cfg = config_load("sub/rel.conf", err, sizeof(err));
	CHECK(cfg != NULL);
	if (cfg != NULL) {
		snprintf(want, sizeof(want), "%s/sub/rel.conf", dir);
		CHECK_STR(cfg->file, want);
		snprintf(want, sizeof(want), "%s/sub/spool", dir);
		CHECK_STR(cfg->spool_dir, want);
		config_free(cfg);
	}
	/* Errors name the file as the caller gave it. */
	write_file("sub/rel.conf", "\nbogus = 1;\n");
	cfg = config_load("sub/rel.conf", err, sizeof(err));
	CHECK(cfg == NULL);
	CHECK_STR(err, "sub/rel.conf:2: unknown key 'bogus'");
	unlink("sub/rel.conf");
	rmdir("sub");
	CHECK_EQ_INT(chdir(cwd), 0);

	/* A relative path that would not fit. */
	char text[2200];
	memset(text, 0, sizeof(text));
	strcpy(text, "spool_dir = \"");
	memset(text + strlen(text), 'p', 1100);
	strcat(text, "\";\n");
	cfg = load(text, err, sizeof(err));
	CHECK(cfg == NULL);
	snprintf(want, sizeof(want), "%s:1: path too long", conf);
	CHECK_STR(err, want);
	/* A small error buffer is cut, not overrun. */
	char small[16];
	memset(small, 'Z', sizeof(small));
	cfg = load("bogus = 1;\n", small, 12);
	CHECK(cfg == NULL);
	CHECK_EQ_U64(strlen(small), 11);
	CHECK_EQ_INT(small[12], 'Z');
}

/* A config file whose real path is longer than CONFIG_PATH_MAX is an
 * error, not a buffer overflow. */
static void test_long_dir(void)
{
	char deep[PATH_MAX], err[PATH_MAX + 64], want[PATH_MAX + 64];
	size_t n = strlen(dir);
	int levels = 0;

	memcpy(deep, dir, n + 1);
	while (n < CONFIG_PATH_MAX + 100) {
		memcpy(deep + n, "/dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd", 74);
		n += 73;
		deep[n] = '\0';
		CHECK_EQ_INT(mkdir(deep, 0700), 0);
		levels++;
	}
	char file[PATH_MAX + 32];
	snprintf(file, sizeof(file), "%s/c.conf", deep);
	write_file(file, "hostname = \"x\";\n");
	struct config *cfg = config_load(file, err, sizeof(err));
	CHECK(cfg == NULL);
	snprintf(want, sizeof(want), "%s: path too long", file);
	CHECK_STR(err, want);
	config_free(cfg);
	unlink(file);
	for (; levels > 0; levels--) {
		rmdir(deep);
		*strrchr(deep, '/') = '\0';
	}
}

static void test_names(void)
{
	CHECK_STR(config_mode_name(MODE_SMTP), "smtp");
	CHECK_STR(config_mode_name(MODE_SUBMISSION), "submission");
	CHECK_STR(config_mode_name(MODE_SUBMISSIONS), "submissions");
	CHECK_STR(config_mode_name(3), "?");
	CHECK_STR(config_mode_name(-1), "?");

	unsetenv("POSTERN_CONFIG");
	CHECK_STR(config_default_path("/usr/local"), "/usr/local/etc/postern/postern.conf");
	setenv("POSTERN_CONFIG", "", 1);
	CHECK_STR(config_default_path("/opt"), "/opt/etc/postern/postern.conf");
	setenv("POSTERN_CONFIG", "/x/y.conf", 1);
	CHECK_STR(config_default_path("/usr/local"), "/x/y.conf");
	unsetenv("POSTERN_CONFIG");
}

int main(int argc, char **argv)
{
	h_init(argc, argv);
	snprintf(dir, sizeof(dir), "%s", h_tmpdir("config"));
	snprintf(conf, sizeof(conf), "%s/postern.conf", dir);
	RUN(test_errors);
	RUN(test_defaults);
	RUN(test_full);
	RUN(test_small_cases);
	RUN(test_pool_min);
	RUN(test_files);
	RUN(test_long_dir);
	RUN(test_names);
	h_rm_tree(dir);
	return h_done();
}
