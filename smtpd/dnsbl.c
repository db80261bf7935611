/*
 * dnsbl - smtpd.dnsbl checks before the banner (see smtpd.h).
 *
 * For a client not in mynetworks, one dns_dnsbl() lookup per zone starts
 * when the connection is accepted; the session holds its banner meanwhile.
 * The first zone that lists the client ends the wait: the others are
 * cancelled and the client gets "554 5.7.1 Service unavailable; client
 * [IP] blocked using ZONE: TXT" (RFC 5321 3.1: a 554 greeting) and is
 * disconnected.  When every zone answered "not listed", or failed, or
 * dns.timeout (plus a margin) passed, the normal banner goes out: a list
 * that does not answer lets the client through, with event=dnsbl_timeout
 * (or dnsbl_error) in the log.  Lookups are cancelled in session teardown,
 * so no callback runs for a freed session.
 */
#include "smtpd.h"
#include "dns.h"
#include "log.h"
#include "stats.h"
#include "str.h"

#include <stdlib.h>
#include <string.h>

#define DNSBL_MARGIN_MS 500

static int resolver_up;

void dnsbl_init(void)
{
	char err[256];

	if (resolver_up || cfg->smtpd.dnsbl.n == 0)
		return;
	if (dns_init(cfg->dns.servers.v, cfg->dns.servers.n, cfg->dns.timeout, err, sizeof(err)) == -1) {
		log_error("event=dns_init_failed error=%s note=\"DNSBL checks are off\"", log_q(err));
		return;
	}
	resolver_up = 1;
}

static void banner(struct session *s)
{
	char reply[300];

	ev_timer_del(&s->dnsbl_timer);
	free(s->dnsbl);   /* no lookup is left (the caller's w is not used again) */
	s->dnsbl = NULL;
	str_fmt(reply, sizeof(reply), "220 %s ESMTP postern", cfg->hostname);
	session_resume(s, reply, 0);
}

static void on_answer(const struct dns_result *r, void *arg)
{
	struct dnsbl_wait *w = arg;
	struct session *s = w->s;

	w->q = NULL;
	s->dnsbl_left--;
	if (r->status == DNS_OK) {
		char reply[600];
		log_info("event=dnsbl_listed client=%s zone=%s name=%s reason=%s", s->ip, log_q(w->zone),
		         log_q(r->name), log_q(r->txt));
		if (r->txt[0])
			str_fmt(reply, sizeof(reply), "554 5.7.1 Service unavailable; client [%s] blocked using "
			        "%s: %s", s->ip, w->zone, r->txt);
		else
			str_fmt(reply, sizeof(reply), "554 5.7.1 Service unavailable; client [%s] blocked using %s",
			        s->ip, w->zone);
		/* Strip anything that would break the reply line. */
		for (char *p = reply; *p; p++)
			if (*p == '\r' || *p == '\n' || (unsigned char)*p < 0x20)
				*p = ' ';
		dnsbl_cancel(s);
		session_resume(s, reply, 1);
		return;
	}
	if (r->status == DNS_TEMPFAIL)
		log_warn("event=%s client=%s zone=%s error=%s", strstr(r->why, "timeout") ? "dnsbl_timeout"
		         : "dnsbl_error", s->ip, log_q(w->zone), log_q(r->why));
	if (s->dnsbl_left == 0)
		banner(s);
}

static void on_deadline(void *arg)
{
	struct session *s = arg;

	for (size_t i = 0; s->dnsbl && i < SMTPD_DNSBL_MAX; i++)
		if (s->dnsbl[i].q != NULL)
			log_warn("event=dnsbl_timeout client=%s zone=%s error=\"no answer in %ds\"", s->ip,
			         log_q(s->dnsbl[i].zone), cfg->dns.timeout);
	dnsbl_cancel(s);
	banner(s);
}

int dnsbl_start(struct session *s)
{
	size_t n = cfg->smtpd.dnsbl.n;

	if (!resolver_up || n == 0 || policy_client_trusted((const struct sockaddr *)&s->peer))
		return 0;
	if (n > SMTPD_DNSBL_MAX)
		n = SMTPD_DNSBL_MAX;
	ev_timer_init(&s->dnsbl_timer, on_deadline, s);
	s->dnsbl_left = 0;
	/* Only sessions being checked carry the lookups (2 KiB). */
	s->dnsbl = xcalloc(SMTPD_DNSBL_MAX, sizeof(*s->dnsbl));
	for (size_t i = 0; i < n; i++) {
		struct dnsbl_wait *w = &s->dnsbl[i];
		w->s = s;
		str_copy(w->zone, cfg->smtpd.dnsbl.v[i], sizeof(w->zone));
		w->q = dns_dnsbl(s->ip, w->zone, on_answer, w);
		if (w->q != NULL)
			s->dnsbl_left++;
	}
	if (s->dnsbl_left == 0)
		return 0;
	ev_timer_add(&s->dnsbl_timer, (uint64_t)cfg->dns.timeout * 1000 + DNSBL_MARGIN_MS);
	return 1;
}

void dnsbl_cancel(struct session *s)
{
	if (s->dnsbl_timer.cb == NULL)
		return;   /* never started */
	ev_timer_del(&s->dnsbl_timer);
	for (size_t i = 0; s->dnsbl && i < SMTPD_DNSBL_MAX; i++)
		if (s->dnsbl[i].q != NULL) {
			dns_cancel(s->dnsbl[i].q);
			s->dnsbl[i].q = NULL;
		}
	free(s->dnsbl);
	s->dnsbl = NULL;
	s->dnsbl_left = 0;
}
