/*
 * test_session - the smtpd state machine driven over a socketpair: verbs,
 * 503 sequencing, 501/500/555 syntax errors, pipelining, limits, relay
 * policy, and the smuggling payloads.  A real spool in a temp dir receives
 * the accepted messages; queued is stubbed (smtpd_notify_queued records).
 */
#include "harness.h"
#include "log.h"
#include "config.h"
#include "event.h"
#include "smtpd.h"
#include "spool.h"
#include "str.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct config *cfg;
static char last_qid[QID_MAX];
static int notified, closed;
static char dir[] = "/tmp/postern-session-XXXXXX";

void smtpd_notify_queued(const char *qid)
{
	snprintf(last_qid, sizeof(last_qid), "%s", qid);
	notified++;
}

void smtpd_conn_closed(const struct session *s)
{
	(void)s;
	closed++;
}

static struct listener lst = { .fd = -1, .mode = MODE_SMTP, .address = "127.0.0.1", .port = 25 };

static struct listener sub = { .fd = -1, .mode = MODE_SUBMISSION, .address = "127.0.0.1", .port = 587 };
static struct listener *cur_listener = &lst;
static int client_fd;

static void open_session(const char *ip)
{
	struct sockaddr_storage ss;
	struct sockaddr_in *in = (struct sockaddr_in *)&ss;
	int sv[2];

	memset(&ss, 0, sizeof(ss));
	in->sin_family = AF_INET;
	inet_pton(AF_INET, ip, &in->sin_addr);
	in->sin_port = htons(40000);
	socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv);
	fcntl(sv[0], F_SETFL, O_NONBLOCK);
	fcntl(sv[1], F_SETFL, O_NONBLOCK);
	client_fd = sv[1];
	session_new(sv[0], &ss, cur_listener);
}

/* Count complete final reply lines ("NNN " ... CRLF) in s. */
static int finals(const char *s)
{
	int n = 0;
	for (const char *p = s; *p;) {
		const char *e = strstr(p, "\r\n");
		if (e == NULL)
			break;
		if (e - p >= 4 && p[3] == ' ')
			n++;
		else if (e - p == 3)
			n++;
		p = e + 2;
	}
	return n;
}

static char replies[65536];

/* Send `in`, run the loop until `want` final replies or EOF; returns them. */
static const char *talk(const char *in, size_t inlen, int want)
{
	size_t have = 0;

	replies[0] = '\0';
	if (inlen && write(client_fd, in, inlen) != (ssize_t)inlen)
		return "write failed";
	for (int i = 0; i < 400 && finals(replies) < want; i++) {
		ev_once(5);
		ssize_t r = read(client_fd, replies + have, sizeof(replies) - 1 - have);
		if (r > 0) {
			have += (size_t)r;
			replies[have] = '\0';
		} else if (r == 0) {
			break;
		}
	}
	return replies;
}

#define TALK(s, n) talk(s, strlen(s), n)

static int peer_closed(void)
{
	char c;
	for (int i = 0; i < 100; i++) {
		ev_once(5);
		ssize_t r = read(client_fd, &c, 1);
		if (r == 0)
			return 1;
		if (r == -1 && errno != EAGAIN)
			return 1;
	}
	return 0;
}

static void close_client(void)
{
	close(client_fd);
	for (int i = 0; i < 20; i++)
		ev_once(2);
}

static int incoming_count(void)
{
	int n = 0;
	char cmd[512];
	snprintf(cmd, sizeof(cmd), "ls %s/incoming | wc -l", dir);
	FILE *f = popen(cmd, "r");
	if (f && fscanf(f, "%d", &n) != 1)
		n = -1;
	if (f)
		pclose(f);
	return n;
}

static void test_greeting_and_verbs(void)
{
	open_session("127.0.0.1");
	CHECK_CONTAINS(TALK("", 1), "220 test.example ESMTP postern");
	const char *r = TALK("EHLO client.example\r\n", 1);
	CHECK_CONTAINS(r, "250-test.example\r\n");
	CHECK_CONTAINS(r, "250-PIPELINING\r\n");
	CHECK_CONTAINS(r, "250-SIZE 10000\r\n");
	CHECK_CONTAINS(r, "250-8BITMIME\r\n");
	CHECK_CONTAINS(r, "250-ENHANCEDSTATUSCODES\r\n");
	CHECK_CONTAINS(r, "250 SMTPUTF8\r\n");
	CHECK_CONTAINS(TALK("NOOP\r\n", 1), "250 2.0.0");
	CHECK_CONTAINS(TALK("VRFY root\r\n", 1), "252 2.5.2");
	CHECK_CONTAINS(TALK("HELP\r\n", 1), "214 2.0.0");
	CHECK_CONTAINS(TALK("RSET\r\n", 1), "250 2.0.0");
	CHECK_CONTAINS(TALK("FOO bar\r\n", 1), "500 5.5.2");
	CHECK_CONTAINS(TALK("quit\r\n", 1), "221 2.0.0");
	CHECK(peer_closed());
	close_client();
}

static const struct {
	const char *cmd;
	const char *reply;   /* prefix of the expected reply */
} sequencing[] = {
	{ "MAIL FROM:<a@b.example>\r\n", "503 5.5.1" },   /* before HELO */
	{ "HELO c.example\r\n", "250 test.example" },
	{ "RCPT TO:<x@localhost>\r\n", "503 5.5.1" },      /* before MAIL */
	{ "DATA\r\n", "503 5.5.1" },                       /* before MAIL/RCPT */
	{ "MAIL FROM:<a@b.example>\r\n", "250 2.1.0" },
	{ "MAIL FROM:<a@b.example>\r\n", "503 5.5.1" },   /* nested */
	{ "DATA\r\n", "554 5.5.1" },                       /* no recipients */
	{ "RCPT TO:x@localhost\r\n", "501 5.1.3" },        /* no <> */
	{ "RCPT TO:<x@localhost> NOTIFY=NEVER\r\n", "555 5.5.4" },
	{ "RCPT FOO\r\n", "501 5.5.4" },
	{ "RCPT TO:<>\r\n", "501 5.1.3" },                 /* <> only as reverse path */
	{ "RCPT TO:<postmaster>\r\n", "250 2.1.5" },
	{ "DATA extra\r\n", "501 5.5.4" },
	{ "RSET\r\n", "250 2.0.0" },
	{ "MAIL FROM:<>\r\n", "250 2.1.0" },               /* null sender ok */
	{ "RSET\r\n", "250 2.0.0" },
	{ "MAIL FROM:<a@b.example> SIZE=20000\r\n", "552 5.3.4" },
	{ "MAIL FROM:<a@b.example> SIZE=abc\r\n", "501 5.5.4" },
	{ "MAIL FROM:<a@b.example> BODY=9BIT\r\n", "501 5.5.4" },
	{ "MAIL FROM:<a@b.example> XYZ=1\r\n", "555 5.5.4" },
	{ "MAIL FROM:<a@b.example\r\n", "501 5.1.7" },
	{ "MAIL FROM:<\xc3\xa9@b.example>\r\n", "501 5.1.7" },   /* UTF-8 without SMTPUTF8 */
	{ "MAIL FROM:<\xc3\xa9@b.example> SMTPUTF8\r\n", "250 2.1.0" },
	{ "HELO\r\n", "501 5.5.4" },
};

static void test_sequencing(void)
{
	open_session("127.0.0.1");
	TALK("", 1);
	for (size_t i = 0; i < NELEM(sequencing); i++) {
		char label[80];
		snprintf(label, sizeof(label), "%s", sequencing[i].cmd);
		label[strcspn(label, "\r")] = '\0';
		ROW("%zu: %s", i, label);
		const char *r = TALK(sequencing[i].cmd, 1);
		CHECK(strncmp(r, sequencing[i].reply, strlen(sequencing[i].reply)) == 0);
		if (strncmp(r, sequencing[i].reply, strlen(sequencing[i].reply)) != 0)
			fprintf(stderr, "   got: %s\n", r);
	}
	ROWS_END();
	close_client();
}

static void test_pipelined_transaction(void)
{
	static const char in[] = "EHLO c.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<u1@localhost>\r\n"
	                         "RCPT TO:<u2@example.net>\r\nDATA\r\nSubject: t\r\n\r\nhello\r\n..dot\r\n.\r\n"
	                         "QUIT\r\n";
	int before = notified;

	open_session("127.0.0.1");
	TALK("", 1);
	const char *r = TALK(in, 6);
	CHECK_CONTAINS(r, "250 SMTPUTF8\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n354 ");
	CHECK_CONTAINS(r, "250 2.0.0 Ok: queued as ");
	CHECK_CONTAINS(r, "221 2.0.0 Bye");
	CHECK_EQ_INT(notified, before + 1);
	/* the committed file parses and holds Received + the unstuffed body */
	struct spool_env env;
	char err[256];
	int corrupt;
	int fd = spool_msg_open(SPOOL_INCOMING, last_qid, &env, &corrupt, err, sizeof(err));
	CHECK(fd >= 0);
	if (fd >= 0) {
		char data[4096];
		ssize_t n = pread(fd, data, env.data_len < sizeof(data) - 1 ? env.data_len : sizeof(data) - 1,
		                  (off_t)env.data_off);
		CHECK_EQ_U64((uint64_t)n, env.data_len);
		data[n > 0 ? n : 0] = '\0';
		CHECK(strncmp(data, "Received: from c.example ([127.0.0.1])", 38) == 0);
		CHECK_CONTAINS(data, last_qid);
		CHECK_CONTAINS(data, "\r\n\r\nhello\r\n.dot\r\n");
		CHECK_STR(env.sender, "a@b.example");
		CHECK_EQ_INT((int)env.nrcpt, 2);
		CHECK_STR(env.rcpt[0], "u1@localhost");
		CHECK_STR(env.rcpt[1], "u2@example.net");
		close(fd);
		spool_env_free(&env);
	}
	close_client();
}

/* Every split point of a pipelined batch gives the same replies. */
static void test_split_batches(void)
{
	static const char in[] = "EHLO c.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<u@localhost>\r\n"
	                         "RSET\r\nNOOP\r\n";
	size_t n = strlen(in);

	for (size_t cut = 1; cut < n; cut++) {
		ROW("cut at %zu", cut);
		open_session("127.0.0.1");
		TALK("", 1);
		talk(in, cut, 0);
		const char *r = talk(in + cut, n - cut, 5);
		CHECK_CONTAINS(r, "250 SMTPUTF8\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.0.0 Ok\r\n250 2.0.0 Ok\r\n");
		close_client();
	}
	ROWS_END();
}

static void test_relay_policy(void)
{
	open_session("192.0.2.7");   /* not in mynetworks */
	TALK("", 1);
	TALK("EHLO outside.example\r\n", 1);
	CHECK_CONTAINS(TALK("MAIL FROM:<a@b.example>\r\n", 1), "250 2.1.0");
	CHECK_CONTAINS(TALK("RCPT TO:<victim@example.net>\r\n", 1), "554 5.7.1 Relay access denied");
	CHECK_CONTAINS(TALK("RCPT TO:<user@localhost>\r\n", 1), "250 2.1.5");
	CHECK_CONTAINS(TALK("RCPT TO:<user@relayed.example>\r\n", 1), "250 2.1.5");
	CHECK_CONTAINS(TALK("RCPT TO:<user%example.net@localhost>\r\n", 1), "554 5.7.1");
	CHECK_CONTAINS(TALK("RCPT TO:<example.net!user@localhost>\r\n", 1), "554 5.7.1");
	CHECK_CONTAINS(TALK("RCPT TO:<\"user@example.net\"@localhost>\r\n", 1), "554 5.7.1");
	CHECK_CONTAINS(TALK("RCPT TO:<@localhost:victim@example.net>\r\n", 1), "554 5.7.1");
	CHECK_CONTAINS(TALK("RCPT TO:<user@[127.0.0.1]>\r\n", 1), "554 5.7.1");
	TALK("RSET\r\nMAIL FROM:<a@b.example>\r\n", 2);
	CHECK_CONTAINS(TALK("RCPT TO:<postmaster>\r\n", 1), "250 2.1.5");
	close_client();
}

static void test_limits(void)
{
	char line[700];

	open_session("127.0.0.1");
	TALK("", 1);
	TALK("HELO c.example\r\n", 1);
	/* 512 bytes with CRLF is the limit; one more is too long */
	memset(line, 'A', sizeof(line));
	memcpy(line, "NOOP ", 5);
	memcpy(line + 510, "\r\n", 2);
	CHECK_CONTAINS(talk(line, 512, 1), "250 2.0.0");
	memset(line, 'A', sizeof(line));
	memcpy(line, "NOOP ", 5);
	memcpy(line + 600, "\r\n", 2);
	CHECK_CONTAINS(talk(line, 602, 1), "500 5.5.2 Error: line too long");
	CHECK_CONTAINS(TALK("NOOP\r\n", 1), "250 2.0.0");   /* still in sync */
	CHECK_CONTAINS(talk("NO\0OP\r\n", 7, 1), "500 5.5.2 Error: NUL");
	CHECK_CONTAINS(TALK("NOOP\r\n", 1), "250 2.0.0");
	CHECK_CONTAINS(TALK("NOOP\n", 1), "500 5.5.2 Error: bare LF");
	CHECK_CONTAINS(TALK("MAIL FROM:<a@b.example>\r\n", 1), "250");
	CHECK_CONTAINS(TALK("RCPT TO:<a@localhost>\r\n", 1), "250");
	CHECK_CONTAINS(TALK("RCPT TO:<b@localhost>\r\n", 1), "250");
	CHECK_CONTAINS(TALK("RCPT TO:<c@localhost>\r\n", 1), "452 4.5.3");
	close_client();

	/* max_errors = 20: the twentieth bad command gets 421 and the door */
	open_session("127.0.0.1");
	TALK("", 1);
	for (int i = 1; i < 20; i++)
		CHECK_CONTAINS(TALK("BAD\r\n", 1), "500 5.5.2");
	CHECK_CONTAINS(TALK("BAD20\r\n", 1), "421 4.7.0");
	CHECK(peer_closed());
	close_client();
}

static const struct {
	const char *data;     /* after 354 */
	const char *reply;
} smuggling[] = {
	{ "a\r\n\n.\nMAIL FROM:<x@b.example>\r\nRCPT TO:<y@localhost>\r\nDATA\r\nsmuggled\r\n.\r\n", "550 5.6.0" },
	{ "a\r\n\n.\r\nMAIL FROM:<x@b.example>\r\nRCPT TO:<y@localhost>\r\nDATA\r\nsmuggled\r\n.\r\n", "550 5.6.0" },
	{ "a\r\n\r.\r\nMAIL FROM:<x@b.example>\r\nRCPT TO:<y@localhost>\r\nDATA\r\nsmuggled\r\n.\r\n", "550 5.6.0" },
	{ "a\r\n.\nMAIL FROM:<x@b.example>\r\n.\r\n", "550 5.6.0" },
};

static void test_smuggling(void)
{
	for (size_t i = 0; i < NELEM(smuggling); i++) {
		int before_files = incoming_count(), before = notified;
		ROW("smuggling %zu", i);
		open_session("127.0.0.1");
		TALK("", 1);
		TALK("HELO c.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<u@localhost>\r\n", 3);
		CHECK_CONTAINS(TALK("DATA\r\n", 1), "354");
		const char *r = TALK(smuggling[i].data, 1);
		CHECK(strncmp(r, smuggling[i].reply, strlen(smuggling[i].reply)) == 0);
		/* exactly one reply for the whole payload, no second message */
		CHECK_EQ_INT(finals(r), 1);
		CHECK_EQ_INT(notified, before);
		CHECK_EQ_INT(incoming_count(), before_files);
		CHECK_CONTAINS(TALK("NOOP\r\n", 1), "250 2.0.0");
		close_client();
	}
}

static void test_data_too_big(void)
{
	char big[12000];
	int before = notified;

	memset(big, 'x', sizeof(big));
	for (size_t i = 900; i < sizeof(big); i += 900)
		memcpy(big + i, "\r\n", 2);
	memcpy(big + sizeof(big) - 5, "\r\n.\r\n", 5);
	open_session("127.0.0.1");
	TALK("", 1);
	TALK("HELO c.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<u@localhost>\r\n", 3);
	CHECK_CONTAINS(TALK("DATA\r\n", 1), "354");
	CHECK_CONTAINS(talk(big, sizeof(big), 1), "552 5.3.4");
	CHECK_EQ_INT(notified, before);
	CHECK_CONTAINS(TALK("NOOP\r\n", 1), "250");
	close_client();
}

static void test_lost_in_data(void)
{
	int before_files = incoming_count(), before = notified;

	open_session("127.0.0.1");
	TALK("", 1);
	TALK("HELO c.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<u@localhost>\r\n", 3);
	CHECK_CONTAINS(TALK("DATA\r\n", 1), "354");
	TALK("half a message\r\n", 0);
	close_client();
	CHECK_EQ_INT(notified, before);
	CHECK_EQ_INT(incoming_count(), before_files);
	char cmd[512];
	snprintf(cmd, sizeof(cmd), "test -z \"$(ls %s/tmp)\"", dir);
	CHECK_EQ_INT(system(cmd), 0);   /* the partial file is gone */
}

/* Read back the data of the last accepted message. */
static void last_data(char *out, size_t len)
{
	struct spool_env env;
	char err[256];
	int corrupt;
	int fd = spool_msg_open(SPOOL_INCOMING, last_qid, &env, &corrupt, err, sizeof(err));

	out[0] = '\0';
	if (fd < 0)
		return;
	ssize_t n = pread(fd, out, env.data_len < len - 1 ? env.data_len : len - 1, (off_t)env.data_off);
	out[n > 0 ? n : 0] = '\0';
	close(fd);
	spool_env_free(&env);
}

static const struct {
	int submission;
	const char *data;
	int want_date, want_msgid;   /* expected count of each field */
} completion[] = {
	{ 1, "Subject: a\r\n\r\nbody\r\n.\r\n", 1, 1 },
	{ 1, "Subject: a\r\nDate: Fri, 04 Dec 2026 10:00:00 +0000\r\n\r\nbody\r\n.\r\n", 1, 1 },
	{ 1, "Message-Id: <x@y.example>\r\nDATE: Fri, 04 Dec 2026 10:00:00 +0000\r\n\r\nb\r\n.\r\n", 1, 1 },
	{ 1, "Subject: only headers\r\n.\r\n", 1, 1 },
	{ 1, "Subject: folded\r\n date: not a field\r\n\r\nDate: in body\r\n.\r\n", 2, 1 },
	{ 0, "Subject: a\r\n\r\nbody\r\n.\r\n", 0, 0 },   /* port 25: untouched */
};

static int count(const char *hay, const char *needle)
{
	int n = 0;
	for (const char *p = hay; (p = strcasestr(p, needle)) != NULL; p++)
		n++;
	return n;
}

static void test_submission_completion(void)
{
	char data[8192];

	for (size_t i = 0; i < NELEM(completion); i++) {
		ROW("completion %zu", i);
		cur_listener = completion[i].submission ? &sub : &lst;
		open_session("127.0.0.1");
		TALK("", 1);
		if (completion[i].submission)   /* as after AUTH (tested in test_auth) */
			str_copy(session_first()->auth_user, "tester", sizeof(session_first()->auth_user));
		TALK("EHLO c.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<u@localhost>\r\n", 3);
		CHECK_CONTAINS(TALK("DATA\r\n", 1), "354");
		CHECK_CONTAINS(TALK(completion[i].data, 1), "250 2.0.0 Ok: queued as");
		last_data(data, sizeof(data));
		CHECK_EQ_INT(count(data, "\nDate:"), completion[i].want_date);
		CHECK_EQ_INT(count(data, "\nMessage-ID:"), completion[i].want_msgid);
		/* added fields stay in the header section */
		char *blank = strstr(data, "\r\n\r\n");
		if (completion[i].want_msgid && blank)
			CHECK(strcasestr(data, "Message-ID:") < blank);
		close_client();
	}
	/* Without AUTH a submission listener refuses MAIL (RFC 6409 4.3). */
	ROW("submission without AUTH");
	cur_listener = &sub;
	open_session("127.0.0.1");
	TALK("", 1);
	CHECK_CONTAINS(TALK("EHLO c.example\r\nMAIL FROM:<a@b.example>\r\n", 2), "530 5.7.0");
	close_client();
	cur_listener = &lst;
}

int main(int argc, char **argv)
{
	char conf[256], err[512];
	FILE *f;

	h_init(argc, argv);
	if (mkdtemp(dir) == NULL)
		return 1;
	snprintf(conf, sizeof(conf), "%s/postern.conf", dir);
	f = fopen(conf, "w");
	fprintf(f, "hostname = \"test.example\";\nspool_dir = \"%s\";\nlog = { dir = \"%s\"; level = \"error\"; };\n"
	           "smtpd = { mynetworks = [ \"127.0.0.0/8\" ]; relay_domains = [ \"relayed.example\" ];\n"
	           "  max_message_size = 10000; max_recipients = 2; max_errors = 20; };\n",
	        dir, dir);
	fclose(f);
	cfg = config_load(conf, err, sizeof(err));
	if (cfg == NULL) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	char sp[600];
	if (spool_init(dir, getuid(), getgid(), err, sizeof(err)) == -1 || chdir(dir) == -1) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	(void)sp;
	signal(SIGPIPE, SIG_IGN);
	log_open("test", NULL, LOG_LVL_ERROR, 0);
	ev_init();
	policy_load();
	RUN(test_greeting_and_verbs);
	RUN(test_sequencing);
	RUN(test_pipelined_transaction);
	RUN(test_split_batches);
	RUN(test_relay_policy);
	RUN(test_limits);
	RUN(test_smuggling);
	RUN(test_data_too_big);
	RUN(test_lost_in_data);
	RUN(test_submission_completion);
	char cmd[300];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", dir);
	config_free(cfg);
	return h_done();
}
