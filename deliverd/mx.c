/*
 * mx - direct MX delivery: resolve the recipient domain with the c-ares
 * resolver (dns.h) inside deliverd's event loop, then hand each address to
 * smtp_attempt() in order.
 *
 * deliverd runs one job at a time, so a lookup is awaited by pumping
 * ev_once() until its callback ran (the resolver's own deadline of
 * dns.timeout bounds this; a margin on top guards against a lost callback).
 * queued's channel is paused meanwhile (job_io_pause), and signals are held
 * by main.c until the job is over.
 *
 * Order (RFC 5321 5.1): MX records by preference, random among equal ones
 * (dns_mx sorts); each MX host's addresses per dns.ip_version (AAAA then A
 * for "any"); every address is tried on dns.mx_port until one accepts or
 * answers 5xx; a 4xx or a connection failure moves on to the next address,
 * and when none is left the mail is deferred with the last reason.
 *
 * DNS outcomes: no MX (NODATA) -> the domain's own addresses (implicit MX);
 * null MX (RFC 7505) -> bounce 5.1.10; NXDOMAIN or a name that is not a
 * valid domain -> bounce 5.1.2; SERVFAIL, timeouts, unreachable servers ->
 * defer 4.4.3, never bounce.  An MX target that is an address literal is
 * not a host name (RFC 5321 5.1): that MX is skipped as an error.  An MX
 * naming the domain itself is resolved like any other host.  Every such
 * text carries the resolver's `why` ("NXDOMAIN for nx.test", "timeout
 * after 2s (127.0.0.1:5353)"), so `postern queue` and the log show the
 * DNS answer that decided.
 *
 * Opportunistic STARTTLS without verification (most MX hosts present
 * certificates that do not match or are self-signed; issue 5).
 */
#include "deliverd.h"
#include "dns.h"
#include "event.h"
#include "log.h"
#include "punycode.h"
#include "str.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define MX_WAIT_MARGIN_MS 2000

static int dns_ok;
static char dns_err[256];

struct wait {
	int done;
	struct dns_result r;
};

void mx_init(void)
{
	dns_ok = dns_init(cfg->dns.servers.v, cfg->dns.servers.n, cfg->dns.timeout, dns_err,
	                  sizeof(dns_err)) == 0;
	if (!dns_ok)
		log_error("event=dns_init_failed error=%s", log_q(dns_err));
}

void mx_shutdown(void)
{
	if (dns_ok)
		dns_shutdown();
	dns_ok = 0;
}

static void on_result(const struct dns_result *r, void *arg)
{
	struct wait *w = arg;

	w->r = *r;
	w->done = 1;
}

/* Run one lookup to completion; the result is in w->r. */
static void await(struct dns_query *q, struct wait *w, const char *what, const char *name)
{
	uint64_t deadline = ev_now_ms() + (uint64_t)cfg->dns.timeout * 1000 + MX_WAIT_MARGIN_MS;

	job_io_pause(1);
	while (!w->done && q != NULL && ev_now_ms() < deadline)
		ev_once(200);
	job_io_pause(0);
	if (!w->done) {
		dns_cancel(q);
		memset(&w->r, 0, sizeof(w->r));
		w->r.status = DNS_TEMPFAIL;
		str_fmt(w->r.why, sizeof(w->r.why), "%s lookup for %s did not complete in %ds (%s)", what,
		        name, cfg->dns.timeout, dns_servers());
		w->done = 1;
	}
	log_debug("event=dns_answer type=%s name=%s status=%s cached=%d why=%s", what, log_q(name),
	          dns_status_name(w->r.status), w->r.cached, log_q(w->r.why));
}

static void all(struct delivery *d, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Every recipient not yet final gets status and the text. */
static void all(struct delivery *d, int status, const char *fmt, ...)
{
	char text[RESULT_TEXT_MAX + 1];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	for (size_t i = 0; i < d->n; i++) {
		if (d->r[i].status != 0)
			continue;
		d->r[i].status = status;
		str_copy(d->r[i].text, text, sizeof(d->r[i].text));
	}
}

static int is_literal(const char *host)
{
	unsigned char buf[sizeof(struct in6_addr)];
	char tmp[DNS_NAME_MAX];
	size_t n = strlen(host);

	if (n >= 2 && host[0] == '[' && host[n - 1] == ']' && n - 2 < sizeof(tmp)) {
		memcpy(tmp, host + 1, n - 2);
		tmp[n - 2] = '\0';
		host = tmp;
		if (strncasecmp(host, "IPv6:", 5) == 0)
			host += 5;
	}
	return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

void mx_deliver(struct delivery *d, const char *domain)
{
	char alabel[DNS_NAME_MAX], err[128], last[RESULT_TEXT_MAX + 1] = "";
	struct dns_mx list[DNS_MX_MAX];
	struct wait w;
	size_t nmx;
	int ipver, implicit = 0, temp = 0, tried = 0;

	for (size_t i = 0; i < d->n; i++)
		d->r[i].status = 0;
	str_copy(d->relay, domain, sizeof(d->relay));
	if (!dns_ok) {
		all(d, 4, "451 4.4.3 cannot look up %s: resolver unavailable: %s", domain, dns_err);
		return;
	}
	if (punycode_domain_to_ascii(domain, alabel, sizeof(alabel), err, sizeof(err)) == -1) {
		all(d, 5, "550 5.1.2 bad destination domain %s: %s", domain, err);
		return;
	}
	ipver = dns_ipver_parse(cfg->dns.ip_version);
	if (ipver < 0)
		ipver = DNS_IP_ANY;

	memset(&w, 0, sizeof(w));
	await(dns_mx(alabel, on_result, &w), &w, "MX", alabel);
	switch (w.r.status) {
	case DNS_OK:
		nmx = w.r.nmx;
		memcpy(list, w.r.mx, nmx * sizeof(list[0]));
		break;
	case DNS_NODATA:
		/* No MX: the domain itself, as if "0 domain" (RFC 5321 5.1). */
		implicit = 1;
		nmx = 1;
		memset(&list[0], 0, sizeof(list[0]));
		str_copy(list[0].host, alabel, sizeof(list[0].host));
		break;
	case DNS_NULLMX:
		all(d, 5, "550 5.1.10 %s accepts no mail: %s", domain, w.r.why);
		return;
	case DNS_NXDOMAIN:
	case DNS_BADNAME:
		all(d, 5, "550 5.1.2 bad destination domain %s: %s", domain, w.r.why);
		return;
	default:
		all(d, 4, "451 4.4.3 MX lookup for %s failed: %s", alabel, w.r.why);
		return;
	}
	log_info("event=mx_resolved qid=%s domain=%s mx=%zu implicit=%s", d->qid, log_q(alabel), nmx,
	         implicit ? "yes" : "no");

	for (size_t i = 0; i < nmx; i++) {
		const char *host = list[i].host;
		if (is_literal(host)) {
			/* RFC 5321 5.1: the MX target must be a domain name. */
			log_warn("event=mx_invalid qid=%s domain=%s mx=%s error=\"an address literal is not a "
			         "valid MX host name\"", d->qid, log_q(alabel), log_q(host));
			str_fmt(last, sizeof(last), "MX %s of %s is an address literal, not a host name", host,
			        alabel);
			continue;
		}
		struct dns_result ar;
		memset(&w, 0, sizeof(w));
		await(dns_addrs(host, ipver, on_result, &w), &w, "address", host);
		ar = w.r;
		if (ar.status != DNS_OK || ar.naddr == 0) {
			if (ar.status == DNS_TEMPFAIL)
				temp = 1;
			if (implicit && (ar.status == DNS_NXDOMAIN || ar.status == DNS_NODATA)) {
				all(d, 5, "550 5.1.2 %s has no MX and no address record: %s", domain, ar.why);
				return;
			}
			str_fmt(last, sizeof(last), "address lookup for MX %s failed: %s", host, ar.why);
			log_info("event=mx_no_address qid=%s mx=%s why=%s", d->qid, log_q(host), log_q(ar.why));
			continue;
		}
		for (size_t k = 0; k < ar.naddr; k++) {
			struct smtp_target t = { .host = host, .addr = ar.addr[k].text, .port = cfg->dns.mx_port,
			                         .tls = RELAY_TLS_OPPORTUNISTIC, .verify = 0, .relay = 0 };
			tried++;
			if (smtp_attempt(d, &t) == 0)
				return;
			for (size_t j = 0; j < d->n; j++)
				if (d->r[j].status == 0) {
					str_copy(last, d->r[j].text, sizeof(last));
					break;
				}
		}
	}
	if (tried == 0 && temp)
		all(d, 4, "451 4.4.3 %s", last);
	else if (tried == 0)
		all(d, 4, "451 4.4.3 no MX host of %s has a usable address: %s", alabel, last);
	else
		all(d, 4, "451 4.4.1 no MX host of %s accepted the mail: %s", alabel, last);
	d->site_down = tried > 0;
}
