/*
 * bounce - delivery status notifications (RFC 3464 in RFC 6522's
 * multipart/report): "failed" when recipients bounced, "delayed" when
 * queue.warn_after passed with recipients still deferred.
 *
 * A DSN is an ordinary message submitted to our own spool (T1 with
 * origin=bounce and a null reverse path, then T2), so it is as durable as
 * any other mail and retried the same way.  Its null sender means a DSN
 * that fails is never bounced again: no loops, no storms.  It carries
 * Auto-Submitted: auto-replied (RFC 3834), a human-readable part naming
 * each recipient with the host and that host's exact reply, the
 * machine-readable message/delivery-status part, and the original headers
 * (text/rfc822-headers, at most BOUNCE_HEADERS_MAX bytes).
 */
#include "queued.h"
#include "log.h"
#include "str.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BOUNCE_HEADERS_MAX 65536

/* "5 days", "4 hours", "90 seconds": for people reading a DSN. */
static void duration(int64_t secs, char *out, size_t len)
{
	static const struct {
		int64_t unit;
		const char *name;
	} u[] = { { 86400, "day" }, { 3600, "hour" }, { 60, "minute" }, { 1, "second" } };

	for (size_t i = 0; i < 4; i++)
		if (secs >= u[i].unit && (secs % u[i].unit == 0 || i == 3 || secs / u[i].unit >= 10)) {
			int64_t n = secs / u[i].unit;
			str_fmt(out, len, "%lld %s%s", (long long)n, u[i].name, n == 1 ? "" : "s");
			return;
		}
	str_fmt(out, len, "%lld seconds", (long long)secs);
}

static void rfc822_date(int64_t t, char *out, size_t len)
{
	time_t tt = (time_t)t;
	struct tm tm;

	localtime_r(&tt, &tm);
	strftime(out, len, "%a, %d %b %Y %H:%M:%S %z", &tm);
}

/*
 * Split a stored result ("host said: 550 5.1.1 text (in reply to RCPT TO)")
 * into the remote host and the diagnostic; pick the enhanced status code.
 */
void bounce_parse_error(const char *err, int failed, char *host, size_t hl, char *diag, size_t dl,
                        char *status, size_t sl)
{
	const char *said = strstr(err, " said: ");
	const char *d = err;

	host[0] = '\0';
	if (said) {
		size_t n = (size_t)(said - err);
		if (n >= hl)
			n = hl - 1;
		memcpy(host, err, n);
		host[n] = '\0';
		d = said + 7;
	}
	str_copy(diag, d, dl);
	/* An enhanced status code (RFC 3463) in the reply wins; its class
	 * follows our verdict (a 4xx that expired is reported as 5.x.x). */
	str_fmt(status, sl, "%s", failed ? "5.0.0" : "4.0.0");
	for (const char *p = d; *p; p++) {
		if ((p[0] == '2' || p[0] == '4' || p[0] == '5') && p[1] == '.' && (p == d || p[-1] == ' ')) {
			size_t a = strspn(p + 2, "0123456789");
			if (a < 1 || a > 3 || p[2 + a] != '.')
				continue;
			size_t b = strspn(p + 3 + a, "0123456789");
			char end = p[3 + a + b];
			if (b < 1 || b > 3 || (end != ' ' && end != '\0' && end != ')'))
				continue;
			str_fmt(status, sl, "%c.%.*s.%.*s", failed ? '5' : '4', (int)a, p + 2, (int)b, p + 3 + a);
			break;
		}
	}
}

/* Copy the original message's header section (up to the blank line). */
static int copy_headers(const struct msg *m, struct spool_writer *w)
{
	struct spool_env env;
	char err[256], buf[8192];
	int corrupt, fd;
	uint64_t off, left, done = 0;
	int nl = 1;   /* at the start of a line */

	fd = spool_msg_open(SPOOL_QUEUE, m->qid, &env, &corrupt, err, sizeof(err));
	if (fd == -1) {
		spool_submit_write(w, "(the original message could not be read)\r\n", 42);
		return -1;
	}
	off = env.data_off;
	left = env.data_len < BOUNCE_HEADERS_MAX ? env.data_len : BOUNCE_HEADERS_MAX;
	while (left > 0) {
		ssize_t r = pread(fd, buf, left < sizeof(buf) ? (size_t)left : sizeof(buf), (off_t)off);
		if (r <= 0)
			break;
		size_t k;
		for (k = 0; k < (size_t)r; k++) {
			/* the header section ends at the first empty line */
			if (nl && buf[k] == '\r' && k + 1 < (size_t)r && buf[k + 1] == '\n')
				break;
			if (nl && buf[k] == '\n')
				break;
			nl = buf[k] == '\n';
		}
		spool_submit_write(w, buf, k);
		done += k;
		if (k < (size_t)r)
			break;
		off += (uint64_t)r;
		left -= (uint64_t)r;
	}
	if (done == 0 || !nl)
		spool_submit_write(w, "\r\n", 2);
	spool_env_free(&env);
	close(fd);
	return 0;
}

int bounce_send(struct msg *m, int kind, const size_t *idx, size_t n)
{
	struct spool_writer *w = xcalloc(1, sizeof(*w));
	struct spool_env env;
	char date[64], arrival[64], boundary[96], *rcpt[1];
	int64_t now = time(NULL);
	struct buf b;
	int failed = kind == DSN_FAILED;

	if (spool_submit_open(w) == -1) {
		log_error("event=bounce_failed qid=%s error=%s", m->qid, log_q(strerror(errno)));
		free(w);
		return -1;
	}
	memset(&env, 0, sizeof(env));
	env.arrival = now;
	str_copy(env.origin, "bounce", sizeof(env.origin));
	str_copy(env.client, "127.0.0.1", sizeof(env.client));
	str_copy(env.helo, cfg->hostname, sizeof(env.helo));
	str_copy(env.proto, "DSN", sizeof(env.proto));
	str_copy(env.body, "7bit", sizeof(env.body));
	env.sender[0] = '\0';
	rcpt[0] = m->sender;
	env.rcpt = rcpt;
	env.nrcpt = 1;
	spool_submit_header(w, &env);

	rfc822_date(now, date, sizeof(date));
	rfc822_date(m->arrival, arrival, sizeof(arrival));
	str_fmt(boundary, sizeof(boundary), "%s/%s", w->qid, cfg->hostname);
	buf_init(&b, 1 << 20);
	buf_appendf(&b, "Received: by %s (postern) id %s;\r\n\t%s\r\n", cfg->hostname, w->qid, date);
	buf_appendf(&b, "From: Mail Delivery System <MAILER-DAEMON@%s>\r\n", cfg->hostname);
	buf_appendf(&b, "To: <%s>\r\n", m->sender);
	buf_appendf(&b, "Subject: %s\r\n", failed ? "Undelivered Mail Returned to Sender"
	                                          : "Delayed Mail (still being retried)");
	buf_appendf(&b, "Date: %s\r\n", date);
	buf_appendf(&b, "Message-ID: <%s@%s>\r\n", w->qid, cfg->hostname);
	buf_appendf(&b, "Auto-Submitted: auto-replied\r\n");
	buf_appendf(&b, "MIME-Version: 1.0\r\n");
	buf_appendf(&b, "Content-Type: multipart/report; report-type=delivery-status;\r\n"
	                "\tboundary=\"%s\"\r\n\r\n", boundary);
	buf_appendf(&b, "This is a MIME-encapsulated message.\r\n\r\n");
	buf_appendf(&b, "--%s\r\nContent-Description: Notification\r\n"
	                "Content-Type: text/plain; charset=us-ascii\r\n\r\n", boundary);
	buf_appendf(&b, "This is the mail system at host %s.\r\n\r\n", cfg->hostname);
	char life[64];
	duration(cfg->queue.lifetime, life, sizeof(life));
	if (failed && now - m->arrival >= cfg->queue.lifetime)
		buf_appendf(&b, "I'm sorry to have to inform you that your message could not\r\n"
		                "be delivered to one or more recipients: it was retried for %s\r\n"
		                "without success.  The last reply for each recipient is below.\r\n\r\n",
		            life);
	else if (failed)
		buf_appendf(&b, "I'm sorry to have to inform you that your message could not\r\n"
		                "be delivered to one or more recipients. The reason for each\r\n"
		                "recipient is below, with the reply of the server that refused it.\r\n\r\n");
	else
		buf_appendf(&b, "Your message could not be delivered yet to one or more recipients.\r\n"
		                "It will be retried until %s after it arrived; you do not need\r\n"
		                "to send it again.  The latest reason for each recipient is below.\r\n\r\n",
		            life);
	buf_appendf(&b, "Message: %s, received %s\r\n\r\n", m->qid, arrival);
	for (size_t i = 0; i < n; i++) {
		const struct spool_rcpt_state *r = &m->st.r[idx[i]];
		buf_appendf(&b, "<%s>: %s\r\n", m->rcpt[idx[i]], r->error[0] ? r->error : "unknown error");
	}
	buf_appendf(&b, "\r\n--%s\r\nContent-Description: Delivery report\r\n"
	                "Content-Type: message/delivery-status\r\n\r\n", boundary);
	buf_appendf(&b, "Reporting-MTA: dns; %s\r\nX-Postern-Queue-ID: %s\r\nArrival-Date: %s\r\n",
	            cfg->hostname, m->qid, arrival);
	for (size_t i = 0; i < n; i++) {
		const struct spool_rcpt_state *r = &m->st.r[idx[i]];
		char host[300], diag[SPOOL_ERR_MAX + 1], status[16], last[64];
		bounce_parse_error(r->error, failed, host, sizeof(host), diag, sizeof(diag), status,
		                   sizeof(status));
		rfc822_date(r->last ? r->last : now, last, sizeof(last));
		buf_appendf(&b, "\r\nFinal-Recipient: rfc822; %s\r\nAction: %s\r\nStatus: %s\r\n",
		            m->rcpt[idx[i]], failed ? "failed" : "delayed", status);
		if (host[0])
			buf_appendf(&b, "Remote-MTA: dns; %s\r\n", host);
		if (diag[0])
			buf_appendf(&b, "Diagnostic-Code: %s; %s\r\n", host[0] ? "smtp" : "x-postern", diag);
		buf_appendf(&b, "Last-Attempt-Date: %s\r\n", last);
		if (!failed) {
			char until[64];
			rfc822_date(m->arrival + cfg->queue.lifetime, until, sizeof(until));
			buf_appendf(&b, "Will-Retry-Until: %s\r\n", until);
		}
	}
	buf_appendf(&b, "\r\n--%s\r\nContent-Description: Undelivered Message Headers\r\n"
	                "Content-Type: text/rfc822-headers\r\n\r\n", boundary);
	spool_submit_write(w, buf_head(&b), buf_used(&b));
	buf_reset(&b);
	copy_headers(m, w);
	buf_appendf(&b, "\r\n--%s--\r\n", boundary);
	spool_submit_write(w, buf_head(&b), buf_used(&b));
	buf_free(&b);

	if (spool_submit_commit(w) == -1) {
		log_error("event=bounce_failed qid=%s error=%s", m->qid, log_q(strerror(w->err ? w->err : errno)));
		spool_submit_abort(w);
		free(w);
		return -1;
	}
	char dsn[QID_MAX];
	str_copy(dsn, w->qid, sizeof(dsn));
	free(w);
	for (size_t i = 0; i < n; i++)
		log_info("event=%s qid=%s rcpt=<%s> dsn_qid=%s to=<%s>", failed ? "dsn_failed" : "dsn_delayed",
		         m->qid, m->rcpt[idx[i]], dsn, m->sender);
	queue_takeover(dsn);
	return 0;
}
