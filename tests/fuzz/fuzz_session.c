/* libFuzzer target: the smtpd command parser and state machine
 * (smtpd/session.c) fed arbitrary client bytes, DATA included, with a
 * real spool in a temporary directory.  Replies are discarded. */
#include "config.h"
#include "event.h"
#include "log.h"
#include "smtpd.h"
#include "spool.h"

#include <arpa/inet.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct config *cfg;
static struct listener lst = { .fd = -1, .mode = MODE_SMTP, .address = "127.0.0.1", .port = 25 };
static struct session *current;
static unsigned long accepted;

void smtpd_notify_queued(const char *qid)
{
	char path[64];
	/* Keep the spool small: the file is complete, that is all we need. */
	snprintf(path, sizeof(path), SPOOL_INCOMING "/%s", qid);
	unlink(path);
	accepted++;
}

void smtpd_conn_closed(const struct session *s)
{
	if (s == current)
		current = NULL;
}

static int init(void)
{
	static char dir[] = "/tmp/postern-fuzz-XXXXXX";
	char conf[128], err[512];
	FILE *f;

	if (mkdtemp(dir) == NULL)
		return -1;
	snprintf(conf, sizeof(conf), "%s/p.conf", dir);
	f = fopen(conf, "w");
	fprintf(f, "hostname = \"fuzz.example\";\nspool_dir = \"%s\";\n"
	           "smtpd = { max_message_size = 20000; max_recipients = 5; max_errors = 50; };\n", dir);
	fclose(f);
	if ((cfg = config_load(conf, err, sizeof(err))) == NULL ||
	    spool_init(dir, getuid(), getgid(), err, sizeof(err)) == -1 || chdir(dir) == -1)
		return -1;
	signal(SIGPIPE, SIG_IGN);
	log_open("fuzz", NULL, LOG_LVL_ERROR + 1, 0);
	ev_init();
	policy_load();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int ready;
	struct sockaddr_storage ss;
	struct sockaddr_in *in = (struct sockaddr_in *)&ss;
	int sv[2];

	if (!ready) {
		if (init() == -1)
			abort();
		ready = 1;
	}
	if (size < 1)
		return 0;
	memset(&ss, 0, sizeof(ss));
	in->sin_family = AF_INET;
	/* First byte: trusted client or not, and the chunk size. */
	inet_pton(AF_INET, (data[0] & 1) ? "127.0.0.1" : "192.0.2.1", &in->sin_addr);
	size_t chunk = (size_t)(data[0] >> 1) + 1;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == -1)
		return 0;
	session_new(sv[0], &ss, &lst);
	/* session_new already wrote the banner; find our session. */
	current = session_first();
	for (size_t off = 1; off < size && current != NULL;) {
		size_t k = size - off < chunk ? size - off : chunk;
		if (buf_room(&current->in) < k)
			k = buf_room(&current->in);
		if (k == 0 || buf_append(&current->in, data + off, k) == -1)
			break;
		off += k;
		session_process(current);
		if (current)
			buf_reset(&current->out);
	}
	if (current)
		session_free(current);
	close(sv[1]);
	return 0;
}
