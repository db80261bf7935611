/*
 * session - one SMTP client: the command state machine (RFC 5321).
 *
 * Input is read into a bounded buffer and processed command by command,
 * so pipelined commands (RFC 2920) are answered in order; replies are
 * collected and written in one go.  Verbs are dispatched from a table
 * (Postfix smtpd_cmd_table).  Every client string that reaches a log line
 * goes through log_q()/log_qn().
 *
 * Limits, each with its reply:
 *   command line > SMTP_CMD_MAX         500 5.5.2 (rest of line discarded)
 *   NUL or bare LF in a command         500 5.5.2
 *   smtpd.max_errors bad commands       421 4.7.0 and disconnect
 *   MAIL SIZE= > max_message_size       552 5.3.4
 *   recipients > max_recipients         452 4.5.3
 *   smtpd.timeout idle, data_timeout    421 4.4.2 and disconnect
 *
 * TLS: STARTTLS (RFC 3207) queues its 220, discards whatever the client
 * pipelined behind it (CVE-2011-0411: that plaintext must never be read as
 * if it came over TLS), and switches once the 220 is written; after the
 * handshake the session is reset and needs EHLO again.  On submissions
 * listeners (RFC 8314) the handshake comes first and the banner after it.
 * All socket I/O goes through sess_read()/write_out(), which use OpenSSL
 * once s->tls is set and turn its WANT_READ/WANT_WRITE into epoll interest.
 */
#include "smtpd.h"
#include "log.h"
#include "stats.h"
#include "smtp_line.h"
#include "gcommit.h"
#include "str.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

tls_ctx *smtpd_tls;
static struct session *sessions;
static size_t nsessions;
static unsigned long next_id = 1;
/* Idle sessions' buffers are given back every TRIM_MS (trim_idle). */
#define TRIM_MS 2000
static struct ev_timer trim_timer;
static void trim_idle(void *arg);
/* Messages waiting for their group commit, in ticket order. */
static struct commit_wait *commit_head, **commit_tail = &commit_head;
static int shutting_down;

static void session_io(int fd, int events, void *arg);
static void session_flush(struct session *s);
static void session_run(struct session *s);
static void set_interest(struct session *s);

size_t session_count(void)
{
	return nsessions;
}

struct session *session_first(void)
{
	return sessions;
}

void session_reply(struct session *s, const char *fmt, ...)
{
	char line[SMTP_REPLY_MAX * 8];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line) - 2, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n > sizeof(line) - 3)
		n = (int)sizeof(line) - 3;
	line[n++] = '\r';
	line[n++] = '\n';
	if (buf_append(&s->out, line, (size_t)n) == -1) {
		/* A client that never reads its replies: stop talking to it. */
		log_warn("event=disconnect client=%s reason=\"output buffer full\"", s->ip);
		s->state = SS_CLOSING;
		buf_reset(&s->in);
	}
}

static void reset_transaction(struct session *s)
{
	for (size_t i = 0; i < s->nrcpt; i++)
		free(s->rcpt[i]);
	free(s->rcpt);
	s->rcpt = NULL;
	s->nrcpt = 0;
	memset(&s->sender, 0, sizeof(s->sender));
	s->body_8bit = 0;
	s->smtputf8 = 0;
	if (s->w) {
		spool_submit_abort(s->w);
		free(s->w);
		s->w = NULL;
	}
	free(s->dr);   /* only while in DATA: 8 KiB an idle session need not hold */
	s->dr = NULL;
	if (s->state > SS_READY && s->state != SS_CLOSING)
		s->state = SS_READY;
}

static void arm_timer(struct session *s)
{
	ev_timer_add(&s->timer, (uint64_t)cfg->smtpd.timeout * 1000);
}

static void on_timeout(void *arg)
{
	struct session *s = arg;

	log_info("event=timeout client=%s state=%d", s->ip, s->state);
	if (s->tls_state == SESSION_TLS_HANDSHAKE) {
		session_free(s);   /* no channel to say 421 on */
		return;
	}
	if (s->state == SS_DATA)
		reset_transaction(s);
	session_reply(s, "421 4.4.2 %s Error: timeout exceeded", cfg->hostname);
	s->state = SS_CLOSING;
	buf_reset(&s->in);
	session_flush(s);
}

static void on_delay(void *arg)
{
	struct session *s = arg;

	s->delayed = 0;
	session_reply(s, "%s", s->delayed_reply);
	if (s->delayed_close)
		s->state = SS_CLOSING;
	session_run(s);
}

void session_delay(struct session *s, unsigned ms, const char *reply, int close_after)
{
	s->delayed = 1;
	s->delayed_close = close_after;
	str_copy(s->delayed_reply, reply, sizeof(s->delayed_reply));
	ev_timer_add(&s->delay_timer, ms);
}

/* One handshake step: 0 still going or done, -1 the session is gone. */
static int handshake_step(struct session *s)
{
	char err[256];
	int r = tls_handshake(s->tls, err, sizeof(err));

	if (r == TLS_WANT_READ || r == TLS_WANT_WRITE) {
		s->tls_want = r;
		return 0;
	}
	if (r != TLS_OK) {
		log_info("event=tls_failed client=%s error=%s", s->ip, log_q(err));
		session_free(s);
		return -1;
	}
	s->tls_want = 0;
	s->tls_state = SESSION_TLS_UP;
	tls_describe(s->tls, s->tls_desc, sizeof(s->tls_desc));
	log_info("event=tls client=%s protocol=%s cipher=%s", s->ip, tls_protocol(s->tls),
	         tls_cipher(s->tls));
	if (s->l->mode == MODE_SUBMISSIONS && s->state == SS_GREET && s->helo[0] == '\0') {
		session_reply(s, "220 %s ESMTP postern", cfg->hostname);
	} else {
		/* RFC 3207 4.2: forget everything learnt before TLS. */
		reset_transaction(s);
		s->state = SS_GREET;
		s->helo[0] = '\0';
		s->esmtp = 0;
	}
	return 0;
}

void session_new(int fd, const struct sockaddr_storage *peer, const struct listener *l)
{
	struct session *s = xcalloc(1, sizeof(*s));

	s->fd = fd;
	s->peer = *peer;
	s->l = l;
	s->id = next_id++;
	net_ntop((const struct sockaddr *)peer, s->ip, sizeof(s->ip));
	s->port = net_port((const struct sockaddr *)peer);
	buf_init(&s->in, SMTPD_IN_CAP);
	buf_init(&s->out, SMTPD_OUT_CAP);
	ev_timer_init(&s->timer, on_timeout, s);
	ev_timer_init(&s->delay_timer, on_delay, s);
	s->next = sessions;
	if (sessions)
		sessions->prev = s;
	sessions = s;
	nsessions++;
	s->last_io_ms = ev_now_ms();
	if (trim_timer.cb == NULL)
		ev_timer_init(&trim_timer, trim_idle, NULL);
	if (!ev_timer_armed(&trim_timer))
		ev_timer_add(&trim_timer, TRIM_MS);
	stats_add(STAT_SMTP_CONN_TOTAL, 1);
	stats_set(STAT_SMTP_CONN_CURRENT, nsessions);
	log_info("event=connect client=%s port=%d listener=%s:%d mode=%s", s->ip, s->port, l->address,
	         l->port, config_mode_name(l->mode));
	if (ev_add(fd, EV_READ, session_io, s) == -1) {
		session_free(s);
		return;
	}
	arm_timer(s);
	/* DNSBL checks on the MX port only: submission clients log in. */
	if (l->mode == MODE_SMTP && dnsbl_start(s)) {
		s->delayed = 1;   /* hold input and the banner until the answers */
		return;
	}
	if (l->mode == MODE_SUBMISSIONS) {
		/* Implicit TLS (RFC 8314): the banner comes after the handshake. */
		if (smtpd_tls == NULL || (s->tls = tls_server_new(smtpd_tls, fd)) == NULL) {
			log_error("event=tls_failed client=%s error=\"no TLS context for submissions\"", s->ip);
			session_free(s);
			return;
		}
		s->tls_state = SESSION_TLS_HANDSHAKE;
		if (handshake_step(s) == 0)
			set_interest(s);
		return;
	}
	session_reply(s, "220 %s ESMTP postern", cfg->hostname);
	session_flush(s);
}

void session_resume(struct session *s, const char *reply, int close_after)
{
	s->delayed = 0;
	session_reply(s, "%s", reply);
	if (close_after)
		s->state = SS_CLOSING;
	session_run(s);
}

void session_free(struct session *s)
{
	if (s->commit)
		s->commit->s = NULL;   /* the commit still ends, and is logged */
	dnsbl_cancel(s);
	reset_transaction(s);
	ev_timer_del(&s->timer);
	ev_timer_del(&s->delay_timer);
	if (s->tls) {
		if (s->tls_state == SESSION_TLS_UP)
			tls_shutdown(s->tls);
		tls_conn_free(s->tls);
	}
	explicit_bzero(s->auth_login, sizeof(s->auth_login));
	ev_del(s->fd);
	close(s->fd);
	buf_free(&s->in);
	buf_free(&s->out);
	if (s->prev)
		s->prev->next = s->next;
	else
		sessions = s->next;
	if (s->next)
		s->next->prev = s->prev;
	nsessions--;
	stats_set(STAT_SMTP_CONN_CURRENT, nsessions);
	log_info("event=disconnect client=%s", s->ip);
	smtpd_conn_closed(s);
	free(s);
}

/* Count a bad command; at the limit, say goodbye (Postfix hard_error_limit). */
static void bad_command(struct session *s)
{
	if (++s->errors >= cfg->smtpd.max_errors) {
		stats_add(STAT_SMTP_TOO_MANY_ERRORS, 1);
		log_warn("event=too_many_errors client=%s errors=%d", s->ip, s->errors);
		session_reply(s, "421 4.7.0 %s Error: too many errors", cfg->hostname);
		s->state = SS_CLOSING;
	}
}

/* ---- ESMTP parameters ---- */

static int parse_mail_params(struct session *s, char *p, uint64_t *size)
{
	*size = 0;
	while (*p) {
		char *sp, *eq;
		while (*p == ' ')
			p++;
		if (*p == '\0')
			break;
		sp = strchr(p, ' ');
		if (sp)
			*sp = '\0';
		eq = strchr(p, '=');
		if (eq)
			*eq++ = '\0';
		if (str_casecmp(p, "SIZE") == 0 && eq) {
			if (str_to_u64(eq, 0, UINT64_MAX, size) == -1) {
				session_reply(s, "501 5.5.4 Bad SIZE= value");
				return -1;
			}
		} else if (str_casecmp(p, "BODY") == 0 && eq) {
			if (str_casecmp(eq, "8BITMIME") == 0)
				s->body_8bit = 1;
			else if (str_casecmp(eq, "7BIT") == 0)
				s->body_8bit = 0;
			else {
				session_reply(s, "501 5.5.4 BODY= must be 7BIT or 8BITMIME");
				return -1;
			}
		} else if (str_casecmp(p, "SMTPUTF8") == 0 && eq == NULL) {
			s->smtputf8 = 1;
		} else if (str_casecmp(p, "AUTH") == 0 && eq) {
			/* RFC 4954 5: accepted and not trusted. */
		} else {
			session_reply(s, "555 5.5.4 Unsupported MAIL parameter %s", log_q(p));
			return -1;
		}
		if (!sp)
			break;
		p = sp + 1;
	}
	return 0;
}

/* ---- verbs ---- */

static int helo_arg_ok(const char *arg)
{
	if (*arg == '\0' || strlen(arg) > 255)
		return 0;
	for (const char *p = arg; *p; p++)
		if ((unsigned char)*p <= ' ' || (unsigned char)*p >= 0x7f)
			return 0;
	return 1;
}

static void do_helo(struct session *s, char *arg, int esmtp)
{
	if (!helo_arg_ok(arg)) {
		session_reply(s, "501 5.5.4 Syntax: %s hostname", esmtp ? "EHLO" : "HELO");
		bad_command(s);
		return;
	}
	reset_transaction(s);
	str_copy(s->helo, arg, sizeof(s->helo));
	s->esmtp = esmtp;
	s->state = SS_READY;
	if (!esmtp) {
		session_reply(s, "250 %s", cfg->hostname);
		return;
	}
	session_reply(s, "250-%s", cfg->hostname);
	session_reply(s, "250-PIPELINING");
	session_reply(s, "250-SIZE %llu", (unsigned long long)cfg->smtpd.max_message_size);
	session_reply(s, "250-8BITMIME");
	session_reply(s, "250-ENHANCEDSTATUSCODES");
	if (smtpd_tls && s->tls == NULL)
		session_reply(s, "250-STARTTLS");
	if (s->tls_state == SESSION_TLS_UP && auth_enabled() && !s->auth_user[0])
		session_reply(s, "250-AUTH PLAIN LOGIN");
	session_reply(s, "250 SMTPUTF8");
}

static void cmd_helo(struct session *s, char *arg) { do_helo(s, arg, 0); }
static void cmd_ehlo(struct session *s, char *arg) { do_helo(s, arg, 1); }

static void cmd_mail(struct session *s, char *arg)
{
	const char *why;
	size_t end;
	uint64_t size;

	if (s->state == SS_GREET) {
		session_reply(s, "503 5.5.1 Error: send HELO/EHLO first");
		bad_command(s);
		return;
	}
	if (s->state != SS_READY) {
		session_reply(s, "503 5.5.1 Error: nested MAIL command");
		bad_command(s);
		return;
	}
	if (s->l->mode != MODE_SMTP && s->auth_user[0] == '\0') {
		/* RFC 6409 4.3 / 8314: submission needs a login. */
		session_reply(s, "530 5.7.0 Authentication required");
		bad_command(s);
		return;
	}
	if (str_ncasecmp(arg, "FROM:", 5) != 0) {
		session_reply(s, "501 5.5.4 Syntax: MAIL FROM:<address>");
		bad_command(s);
		return;
	}
	arg += 5;
	while (*arg == ' ')   /* tolerated by every MTA, though not in the RFC */
		arg++;
	/* SMTPUTF8 must be known before parsing the address: look ahead. */
	s->smtputf8 = 0;
	s->body_8bit = 0;
	char *params = NULL;
	{
		char *gt = strrchr(arg, '>');
		if (gt) {
			params = gt + 1;
			for (char *p = params; *p; p++)
				if (str_ncasecmp(p, "SMTPUTF8", 8) == 0 && (p[8] == '\0' || p[8] == ' ') &&
				    (p == params || p[-1] == ' '))
					s->smtputf8 = 1;
		}
	}
	if (addr_parse_path(arg, strlen(arg), ADDR_NULL_OK | (s->smtputf8 ? ADDR_UTF8 : 0), &s->sender,
	                    &end, &why) == -1) {
		session_reply(s, "501 5.1.7 Bad sender address syntax: %s", why);
		bad_command(s);
		return;
	}
	if (arg[end] != '\0' && arg[end] != ' ') {
		session_reply(s, "501 5.5.4 Syntax: MAIL FROM:<address> [parameters]");
		bad_command(s);
		return;
	}
	if (parse_mail_params(s, arg + end, &size) == -1) {
		memset(&s->sender, 0, sizeof(s->sender));
		bad_command(s);
		return;
	}
	if (size > cfg->smtpd.max_message_size) {
		stats_add(STAT_SMTP_REJECTED_SIZE, 1);
		session_reply(s, "552 5.3.4 Message size exceeds fixed limit");
		memset(&s->sender, 0, sizeof(s->sender));
		return;
	}
	if (!policy_has_room(size)) {
		/* Refuse what we may not be able to store (Postfix does the same
		 * below 1.5 x message_size_limit): the client retries later. */
		stats_add(STAT_SMTP_REJECTED_SPOOL, 1);
		log_warn("event=rejected client=%s from=<%s> reason=\"spool low on space\"", s->ip,
		         s->sender.text);
		session_reply(s, "452 4.3.1 Insufficient system storage");
		memset(&s->sender, 0, sizeof(s->sender));
		return;
	}
	s->state = SS_MAIL;
	log_debug("event=mail client=%s from=<%s>", s->ip, s->sender.text);
	session_reply(s, "250 2.1.0 Ok");
}

static void cmd_rcpt(struct session *s, char *arg)
{
	struct addr a;
	const char *why, *reply;
	size_t end;

	if (s->state != SS_MAIL && s->state != SS_RCPT) {
		session_reply(s, "503 5.5.1 Error: need MAIL command");
		bad_command(s);
		return;
	}
	if (str_ncasecmp(arg, "TO:", 3) != 0) {
		session_reply(s, "501 5.5.4 Syntax: RCPT TO:<address>");
		bad_command(s);
		return;
	}
	arg += 3;
	while (*arg == ' ')
		arg++;
	if (addr_parse_path(arg, strlen(arg), ADDR_POSTMASTER_OK | (s->smtputf8 ? ADDR_UTF8 : 0), &a,
	                    &end, &why) == -1) {
		session_reply(s, "501 5.1.3 Bad recipient address syntax: %s", why);
		bad_command(s);
		return;
	}
	if (arg[end] != '\0') {
		/* We advertise no RCPT parameters (DSN comes later). */
		session_reply(s, "555 5.5.4 Unsupported RCPT parameter");
		bad_command(s);
		return;
	}
	if (policy_rcpt(s, &a, &reply) == -1) {
		stats_add(STAT_SMTP_REJECTED_RCPT, 1);
		log_info("event=rejected client=%s from=<%s> rcpt=%s reply=%s", s->ip, s->sender.text,
		         log_q(a.text), log_q(reply));
		session_reply(s, "%s", reply);
		bad_command(s);
		return;
	}
	if (s->nrcpt >= (size_t)cfg->smtpd.max_recipients) {
		session_reply(s, "452 4.5.3 Error: too many recipients");
		return;
	}
	s->rcpt = xrealloc(s->rcpt, (s->nrcpt + 1) * sizeof(char *));
	s->rcpt[s->nrcpt++] = xstrdup(a.text);
	s->state = SS_RCPT;
	session_reply(s, "250 2.1.5 Ok");
}

/* Add Date: and Message-ID: where the header section lacks them, just
 * before the line that ends it (RFC 6409 8.3; submission listeners). */
static void complete_headers(struct session *s)
{
	char line[512], date[64];
	time_t now = time(NULL);
	struct tm tm;

	s->hdr.done = 1;
	if (!s->hdr.seen_date) {
		localtime_r(&now, &tm);
		strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S %z", &tm);
		int n = snprintf(line, sizeof(line), "Date: %s\r\n", date);
		spool_submit_write(s->w, line, (size_t)n);
	}
	if (!s->hdr.seen_msgid) {
		int n = snprintf(line, sizeof(line), "Message-ID: <%s@%s>\r\n", s->w->qid, cfg->hostname);
		if (n > 0 && (size_t)n < sizeof(line))
			spool_submit_write(s->w, line, (size_t)n);
	}
}

/*
 * Track the header section byte by byte (data arrives in any split): it
 * ends at the first empty line, where the missing fields are inserted.
 */
static int sink_spool(void *arg, const char *p, size_t n)
{
	struct session *s = arg;
	size_t from = 0;

	for (size_t i = 0; i < n && !s->hdr.done; i++) {
		char c = p[i];
		if (s->hdr.bol) {
			s->hdr.bol = 0;
			if (c == ' ' || c == '\t') {
				continue;
			}
			if (c == '\r') {           /* empty line: end of headers */
				spool_submit_write(s->w, p + from, i - from);
				from = i;
				complete_headers(s);
				break;
			}
			s->hdr.in_name = 1;
			s->hdr.nlen = 0;
		}
		if (s->hdr.in_name) {
			if (c == ':' && s->hdr.nlen > 0) {
				s->hdr.in_name = 0;
				s->hdr.name[s->hdr.nlen < sizeof(s->hdr.name) ? s->hdr.nlen : sizeof(s->hdr.name) - 1] = '\0';
				if (strcmp(s->hdr.name, "date") == 0)
					s->hdr.seen_date = 1;
				else if (strcmp(s->hdr.name, "message-id") == 0)
					s->hdr.seen_msgid = 1;
			} else if ((unsigned char)c > ' ' && (unsigned char)c < 0x7f && c != ':') {
				if (s->hdr.nlen < sizeof(s->hdr.name) - 1)
					s->hdr.name[s->hdr.nlen] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
				s->hdr.nlen++;
			} else {
				/* Not a field and no blank line before it: the message has
				 * no proper header section; leave it as it is. */
				s->hdr.done = 2;
				break;
			}
		}
		if (c == '\n') {
			s->hdr.bol = 1;
		}
	}
	return spool_submit_write(s->w, p + from, n - from);
}

/* RFC 3848: ESMTP, ESMTPS, ESMTPA, ESMTPSA (and the UTF8SMTP forms). */
static void session_proto(const struct session *s, char *out, size_t len)
{
	if (!s->esmtp) {
		str_copy(out, "SMTP", len);
		return;
	}
	str_fmt(out, len, "%s%s%s", s->smtputf8 ? "UTF8SMTP" : "ESMTP",
	        s->tls_state == SESSION_TLS_UP ? "S" : "", s->auth_user[0] ? "A" : "");
}

static void write_received(struct session *s)
{
	char date[64], hdr[1024];
	time_t now = time(NULL);
	struct tm tm;
	char proto[16], tlsinfo[160] = "";
	int n;

	session_proto(s, proto, sizeof(proto));
	if (s->tls_state == SESSION_TLS_UP)
		str_fmt(tlsinfo, sizeof(tlsinfo), "\r\n\t(using %s with cipher %s)", tls_protocol(s->tls),
		        tls_cipher(s->tls));
	localtime_r(&now, &tm);
	strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S %z", &tm);
	n = snprintf(hdr, sizeof(hdr),
	             "Received: from %s ([%s])%s\r\n\tby %s (postern) with %s id %s%s%s%s;\r\n\t%s\r\n",
	             s->helo, s->ip, tlsinfo, cfg->hostname, proto, s->w->qid,
	             s->nrcpt == 1 ? "\r\n\tfor <" : "", s->nrcpt == 1 ? s->rcpt[0] : "",
	             s->nrcpt == 1 ? ">" : "", date);
	if (n > 0 && (size_t)n < sizeof(hdr))
		spool_submit_write(s->w, hdr, (size_t)n);
}

static void cmd_data(struct session *s, char *arg)
{
	struct spool_env env;

	if (*arg) {
		session_reply(s, "501 5.5.4 Syntax: DATA");
		bad_command(s);
		return;
	}
	if (s->state != SS_RCPT) {
		session_reply(s, s->state == SS_MAIL ? "554 5.5.1 Error: no valid recipients"
		                                     : "503 5.5.1 Error: need RCPT command");
		bad_command(s);
		return;
	}
	s->w = xcalloc(1, sizeof(*s->w));
	if (spool_submit_open(s->w) == -1) {
		log_error("event=spool_error client=%s what=open error=%s", s->ip, log_q(strerror(errno)));
		free(s->w);
		s->w = NULL;
		session_reply(s, "451 4.3.0 Error: queue file write error");
		reset_transaction(s);
		return;
	}
	memset(&env, 0, sizeof(env));
	env.arrival = time(NULL);
	str_copy(env.origin, "smtp", sizeof(env.origin));
	str_copy(env.client, s->ip, sizeof(env.client));
	str_copy(env.helo, s->helo, sizeof(env.helo));
	session_proto(s, env.proto, sizeof(env.proto));
	str_copy(env.body, s->body_8bit ? "8bitmime" : "7bit", sizeof(env.body));
	env.smtputf8 = s->smtputf8;
	str_copy(env.sender, s->sender.text, sizeof(env.sender));
	env.rcpt = s->rcpt;
	env.nrcpt = s->nrcpt;
	spool_submit_header(s->w, &env);
	write_received(s);
	s->dr = xcalloc(1, sizeof(*s->dr));
	data_init(s->dr, cfg->smtpd.max_message_size, cfg->smtpd.bare_newline == BARE_NL_NORMALIZE,
	          sink_spool, s);
	memset(&s->hdr, 0, sizeof(s->hdr));
	s->hdr.bol = 1;
	s->hdr.done = s->l->mode == MODE_SMTP;   /* completion only for submission */
	s->state = SS_DATA;
	s->data_deadline_ms = ev_now_ms() + (uint64_t)cfg->smtpd.data_timeout * 1000;
	session_reply(s, "354 End data with <CR><LF>.<CR><LF>");
}

static const char *spool_err_reply(int e)
{
	return e == ENOSPC || e == EDQUOT ? "452 4.3.1 Insufficient system storage"
	                                  : "451 4.3.0 Error: queue file write error";
}

static void commit_finish(struct commit_wait *cw, int err);

static void data_done(struct session *s)
{
	struct spool_writer *w = s->w;

	s->state = SS_READY;
	if (s->dr->err != DATA_OK) {
		stats_add(STAT_SMTP_REJECTED_DATA, 1);
		log_info("event=rejected client=%s from=<%s> reason=%s size=%llu", s->ip, s->sender.text,
		         log_q(data_err_reply(s->dr->err)), (unsigned long long)s->dr->size);
		session_reply(s, "%s", data_err_reply(s->dr->err));
		reset_transaction(s);
		return;
	}
	if (!s->hdr.done)
		complete_headers(s);   /* a message that is all header section */
	if (s->dr->sink_failed || spool_submit_finish(w) == -1) {
		int e = w->err ? w->err : errno;
		stats_add(STAT_SMTP_REJECTED_SPOOL, 1);
		log_error("event=spool_error client=%s qid=%s what=commit error=%s", s->ip, w->qid,
		          log_q(strerror(e)));
		session_reply(s, "%s", spool_err_reply(e));
		reset_transaction(s);
		return;
	}
	/* The file is in incoming/; the 250 waits for a group commit that
	 * covers it (T1 in spool.h).  Input stays unread until then, so
	 * pipelined commands are answered in order.  queued hears of it now:
	 * delivery may start while the flush runs (the client still holds
	 * the message until our 250, so a crash meanwhile can repeat it,
	 * never lose it), and a file delivered and removed before the flush
	 * costs the disk nothing. */
	smtpd_notify_queued(w->qid);
	struct commit_wait *cw = xcalloc(1, sizeof(*cw));
	cw->s = s;
	str_copy(cw->qid, w->qid, sizeof(cw->qid));
	str_copy(cw->ip, s->ip, sizeof(cw->ip));
	str_copy(cw->helo, s->helo, sizeof(cw->helo));
	str_copy(cw->sender, s->sender.text, sizeof(cw->sender));
	cw->nrcpt = s->nrcpt;
	cw->size = s->dr->size;
	int fd = w->fd;   /* open still: the flush of a lone message uses it */
	w->fd = -1;
	free(s->w);
	s->w = NULL;
	reset_transaction(s);
	s->commit = cw;
	int err, now = gcommit_ticket(fd, &cw->ticket, &err);
	if (now) {
		commit_finish(cw, err);
		return;
	}
	*commit_tail = cw;
	commit_tail = &cw->next;
}

/* The group commit for cw is over: tell the client and queued. */
static void commit_finish(struct commit_wait *cw, int err)
{
	struct session *s = cw->s;

	if (s)
		s->commit = NULL;
	if (err != 0) {
		spool_submit_withdraw(cw->qid);
		stats_add(STAT_SMTP_REJECTED_SPOOL, 1);
		log_error("event=spool_error client=%s qid=%s what=commit error=%s note=\"the client is "
		          "told 451 and may send it again; if queued had already taken it, it is "
		          "delivered too\"", cw->ip, cw->qid, log_q(strerror(err)));
		if (s)
			session_reply(s, "%s", spool_err_reply(err));
	} else {
		stats_add(STAT_SMTP_ACCEPTED, 1);
		log_info("event=accepted qid=%s client=%s helo=%s from=<%s> nrcpt=%zu size=%llu%s",
		         cw->qid, cw->ip, log_q(cw->helo), cw->sender, cw->nrcpt,
		         (unsigned long long)cw->size, s ? "" : " note=\"client gone before the 250\"");
		if (s)
			session_reply(s, "250 2.0.0 Ok: queued as %s", cw->qid);
	}
	free(cw);
}

void session_commit_done(uint64_t upto, int err)
{
	while (commit_head && commit_head->ticket <= upto) {
		struct commit_wait *cw = commit_head;
		struct session *s = cw->s;
		commit_head = cw->next;
		if (commit_head == NULL)
			commit_tail = &commit_head;
		commit_finish(cw, err);
		if (s)
			session_run(s);   /* replies out, pipelined input on */
	}
}

size_t session_commits_pending(void)
{
	size_t n = 0;
	for (struct commit_wait *cw = commit_head; cw; cw = cw->next)
		n++;
	return n;
}

static void cmd_rset(struct session *s, char *arg)
{
	(void)arg;
	reset_transaction(s);
	session_reply(s, "250 2.0.0 Ok");
}

static void cmd_noop(struct session *s, char *arg)
{
	(void)arg;
	session_reply(s, "250 2.0.0 Ok");
}

static void cmd_quit(struct session *s, char *arg)
{
	(void)arg;
	session_reply(s, "221 2.0.0 Bye");
	s->state = SS_CLOSING;
}

static void cmd_starttls(struct session *s, char *arg)
{
	if (smtpd_tls == NULL) {
		session_reply(s, "502 5.5.1 Error: command not implemented");
		bad_command(s);
		return;
	}
	if (s->tls) {
		session_reply(s, "503 5.5.1 Error: TLS already active");
		bad_command(s);
		return;
	}
	if (*arg) {
		session_reply(s, "501 5.5.4 Syntax: STARTTLS");
		bad_command(s);
		return;
	}
	session_reply(s, "220 2.0.0 Ready to start TLS");
	s->starttls = 1;   /* process() drops the rest of the input */
}

static void cmd_auth(struct session *s, char *arg)
{
	auth_start(s, arg);
}

static void cmd_vrfy(struct session *s, char *arg)
{
	(void)arg;
	/* RFC 5321 3.5.3: 252 without disclosing whether the user exists. */
	session_reply(s, "252 2.5.2 Cannot VRFY user, but will accept message and attempt delivery");
}

static void cmd_help(struct session *s, char *arg)
{
	(void)arg;
	session_reply(s, "214 2.0.0 Commands: HELO EHLO MAIL RCPT DATA RSET NOOP QUIT HELP VRFY STARTTLS AUTH");
}

static const struct {
	const char *verb;
	void (*fn)(struct session *, char *);
} commands[] = {
	{ "HELO", cmd_helo }, { "EHLO", cmd_ehlo }, { "MAIL", cmd_mail }, { "RCPT", cmd_rcpt },
	{ "DATA", cmd_data }, { "RSET", cmd_rset }, { "NOOP", cmd_noop }, { "QUIT", cmd_quit },
	{ "VRFY", cmd_vrfy }, { "HELP", cmd_help }, { "STARTTLS", cmd_starttls }, { "AUTH", cmd_auth },
};

static void command(struct session *s, const char *p, size_t len)
{
	char line[SMTP_CMD_MAX];
	char *arg;

	memcpy(line, p, len);
	line[len] = '\0';
	arg = strchr(line, ' ');
	if (arg)
		*arg++ = '\0';
	else
		arg = line + len;
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
		if (str_casecmp(line, commands[i].verb) == 0) {
			commands[i].fn(s, arg);
			return;
		}
	}
	log_info("event=unknown_command client=%s command=%s", s->ip, log_qn(p, len < 40 ? len : 40));
	session_reply(s, "500 5.5.2 Error: command not recognized");
	bad_command(s);
}

/* Returns 1 when it stopped because replies are piling up, 0 when it
 * needs more input (or the session is closing). */
static int process(struct session *s)
{
	while (s->state != SS_CLOSING) {
		if (s->starttls || s->delayed || s->commit || s->tls_state == SESSION_TLS_HANDSHAKE)
			return 0;
		if (buf_used(&s->out) >= SMTPD_OUT_PAUSE)
			return 1;
		if (s->state == SS_DATA) {
			size_t used;
			if (buf_used(&s->in) == 0)
				return 0;
			int end = data_feed(s->dr, buf_head(&s->in), buf_used(&s->in), &used);
			buf_drain(&s->in, used);
			if (!end)
				return 0;
			data_done(s);
			continue;
		}
		if (s->skipping) {
			if (!smtp_line_skip(&s->in))
				return 0;
			s->skipping = 0;
			continue;
		}
		struct line l;
		switch (smtp_line_read(&s->in, &l, s->auth_step ? AUTH_LINE_MAX : SMTP_CMD_MAX)) {
		case LINE_AGAIN:
			return 0;
		case LINE_OK:
			if (s->auth_step)
				auth_response(s, l.p, l.len);
			else
				command(s, l.p, l.len);
			buf_drain(&s->in, l.consumed);
			if (s->starttls && buf_used(&s->in) > 0) {
				/* Plaintext pipelined behind STARTTLS: never act on it. */
				log_warn("event=starttls_discarded client=%s bytes=%zu", s->ip, buf_used(&s->in));
				buf_reset(&s->in);
			}
			break;
		case LINE_TOOLONG:
			s->auth_step = 0;
			session_reply(s, "500 5.5.2 Error: line too long (max %d bytes)", SMTP_CMD_MAX);
			s->skipping = 1;
			bad_command(s);
			break;
		case LINE_BARELF:
			s->auth_step = 0;
			session_reply(s, "500 5.5.2 Error: bare LF in command; use CRLF");
			buf_drain(&s->in, l.consumed);
			bad_command(s);
			break;
		case LINE_NUL:
			s->auth_step = 0;
			session_reply(s, "500 5.5.2 Error: NUL byte in command");
			s->skipping = 1;
			bad_command(s);
			break;
		}
	}
	return 0;
}

void session_process(struct session *s)
{
	process(s);
}

/* Write what we can; 0 ok, -1 the session is gone. */
static int write_out(struct session *s)
{
	while (buf_used(&s->out) > 0) {
		ssize_t w;
		if (s->tls) {
			w = tls_write(s->tls, buf_head(&s->out), buf_used(&s->out));
			if (w == TLS_WANT_READ || w == TLS_WANT_WRITE) {
				s->tls_want = (int)w;
				return 0;
			}
			if (w < 0) {
				log_info("event=lost client=%s error=\"TLS write failed\"", s->ip);
				session_free(s);
				return -1;
			}
			s->tls_want = 0;
			buf_drain(&s->out, (size_t)w);
			continue;
		}
		w = send(s->fd, buf_head(&s->out), buf_used(&s->out), MSG_NOSIGNAL);
		if (w > 0) {
			buf_drain(&s->out, (size_t)w);
			continue;
		}
		if (w == -1 && errno == EINTR)
			continue;
		if (w == -1 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return 0;
		log_info("event=lost client=%s error=%s", s->ip, log_q(w == -1 ? strerror(errno) : "eof"));
		session_free(s);
		return -1;
	}
	return 0;
}

/* Read what is there: >0 bytes, 0 EOF, -1 error or nothing yet (errno). */
static ssize_t sess_read(struct session *s)
{
	ssize_t total = 0;

	if (s->tls == NULL)
		return buf_read_fd(&s->in, s->fd);
	while (buf_room(&s->in) > 0) {
		size_t want = buf_room(&s->in) < 16384 ? buf_room(&s->in) : 16384;
		char *p = buf_reserve(&s->in, want);
		ssize_t r = tls_read(s->tls, p, want);
		if (r > 0) {
			buf_commit(&s->in, (size_t)r);
			total += r;
			s->tls_want = 0;
			continue;
		}
		if (r == TLS_WANT_READ || r == TLS_WANT_WRITE) {
			s->tls_want = (int)r;
			if (total > 0)
				return total;
			errno = EAGAIN;
			return -1;
		}
		if (total > 0)
			return total;   /* report the close on the next read */
		if (r == TLS_CLOSED)
			return 0;
		errno = EPROTO;
		return -1;
	}
	return total;
}

static int can_read(const struct session *s)
{
	return s->state != SS_CLOSING && !s->starttls && buf_used(&s->out) < SMTPD_OUT_PAUSE &&
	       buf_room(&s->in) > 0;
}

static void set_interest(struct session *s)
{
	int ev = 0;

	if (s->tls_state == SESSION_TLS_HANDSHAKE) {
		ev_mod(s->fd, s->tls_want == TLS_WANT_WRITE ? EV_WRITE : EV_READ);
		return;
	}
	if (buf_used(&s->out) > 0)
		ev |= EV_WRITE;
	if (can_read(s))
		ev |= EV_READ;
	if (s->tls && s->tls_want == TLS_WANT_WRITE)
		ev |= EV_WRITE;
	if (s->tls && s->tls_want == TLS_WANT_READ)
		ev |= EV_READ;
	ev_mod(s->fd, ev);
}

/* After the 220 to STARTTLS is on the wire: start the handshake. */
static int start_tls(struct session *s)
{
	s->starttls = 0;
	s->tls = tls_server_new(smtpd_tls, s->fd);
	if (s->tls == NULL) {
		log_error("event=tls_failed client=%s error=\"SSL_new failed\"", s->ip);
		session_free(s);
		return -1;
	}
	s->tls_state = SESSION_TLS_HANDSHAKE;
	return handshake_step(s);
}

/* A read that ended a session frees it: -1 then. */
static int read_input(struct session *s)
{
	ssize_t r = sess_read(s);

	if (r == 0 || (r == -1 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
		if (s->state == SS_DATA)
			log_warn("event=lost client=%s state=data error=\"connection lost during DATA; "
			         "message discarded\"", s->ip);
		else
			log_info("event=lost client=%s", s->ip);
		session_free(s);
		return -1;
	}
	if (r > 0) {
		if (s->state == SS_DATA && ev_now_ms() > s->data_deadline_ms) {
			on_timeout(s);
			return -1;
		}
		arm_timer(s);
	}
	return 0;
}

/* Process input, write replies, and choose what to wait for next. */
static void session_run(struct session *s)
{
	for (;;) {
		int paused = process(s);
		if (shutting_down && s->state != SS_DATA && s->state != SS_CLOSING && !s->commit &&
		    s->tls_state != SESSION_TLS_HANDSHAKE) {
			session_reply(s, "421 4.3.2 %s Service shutting down", cfg->hostname);
			s->state = SS_CLOSING;
			s->starttls = 0;
		}
		if (write_out(s) == -1)
			return;
		if (s->state == SS_CLOSING && buf_used(&s->out) == 0) {
			session_free(s);
			return;
		}
		if (s->starttls && buf_used(&s->out) == 0) {
			if (start_tls(s) == -1)
				return;
			break;
		}
		/* Bytes OpenSSL already decrypted wake no epoll: take them now. */
		if (s->tls_state == SESSION_TLS_UP && !s->delayed && can_read(s) &&
		    tls_pending(s->tls) > 0) {
			if (read_input(s) == -1)
				return;
			continue;
		}
		if (!(paused && buf_used(&s->out) < SMTPD_OUT_PAUSE))
			break;
	}
	set_interest(s);
}

static void session_flush(struct session *s)
{
	session_run(s);
}

/* Every TRIM_MS: sessions quiet for that long with nothing buffered give
 * their buffer memory back, so ten thousand idle connections cost little
 * more than their sessions, while busy ones keep theirs (no allocation
 * per read). */
static void trim_idle(void *arg)
{
	uint64_t now = ev_now_ms();

	(void)arg;
	for (struct session *s = sessions; s; s = s->next)
		if (now - s->last_io_ms >= TRIM_MS && buf_used(&s->in) == 0 && buf_used(&s->out) == 0) {
			buf_shrink(&s->in);
			buf_shrink(&s->out);
		}
	if (sessions)
		ev_timer_add(&trim_timer, TRIM_MS);
}

static void session_io(int fd, int events, void *arg)
{
	struct session *s = arg;

	(void)fd;
	s->last_io_ms = ev_now_ms();
	if (s->tls_state == SESSION_TLS_HANDSHAKE) {
		if (handshake_step(s) == -1)
			return;
		if (s->tls_state == SESSION_TLS_HANDSHAKE) {
			set_interest(s);
			return;
		}
		arm_timer(s);
		session_run(s);
		return;
	}
	/* With TLS any readiness may be what OpenSSL waits for. */
	if ((events & EV_READ || s->tls) && can_read(s)) {
		if (read_input(s) == -1)
			return;
	}
	session_run(s);
}

void session_shutdown_all(void)
{
	struct session *s, *n;

	shutting_down = 1;
	for (s = sessions; s; s = n) {
		n = s->next;
		if (s->state == SS_DATA || s->commit)
			continue;   /* let it finish; it gets 421 after its reply */
		session_reply(s, "421 4.3.2 %s Service shutting down", cfg->hostname);
		s->state = SS_CLOSING;
		session_flush(s);
	}
}

void session_abort_all(void)
{
	struct session *s, *n;

	for (s = sessions; s; s = n) {
		n = s->next;
		if (s->state == SS_DATA)
			reset_transaction(s);
		session_reply(s, "421 4.3.2 %s Service shutting down", cfg->hostname);
		s->state = SS_CLOSING;
		session_flush(s);
	}
}
