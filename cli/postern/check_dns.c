/* check_dns - DNS diagnostics for the postern CLI; see check_dns.h. */
#include "check_dns.h"

#include "config.h"
#include "dns.h"
#include "event.h"
#include "log.h"
#include "net.h"
#include "punycode.h"
#include "str.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#define PROBE_TIMEOUT_MAX 10   /* seconds per connect and per reply */
#define REPLY_MAX 4096         /* bytes of one SMTP reply we read */

struct wait {
	int done;
	struct dns_result r;
};

static void on_result(const struct dns_result *r, void *arg)
{
	struct wait *w = arg;
	w->r = *r;
	w->done = 1;
}

static void wait_for(struct wait *w)
{
	while (!w->done)
		ev_once(200);   /* the resolver's deadline bounds this */
}

static struct config *setup(const char *conf_path)
{
	char err[512];
	struct config *cfg = config_load(conf_path, err, sizeof(err));

	if (cfg == NULL) {
		fprintf(stderr, "postern: %s\n", err);
		return NULL;
	}
	if (ev_init() == -1 || dns_init(cfg->dns.servers.v, cfg->dns.servers.n, cfg->dns.timeout, err, sizeof(err)) == -1) {
		fprintf(stderr, "postern: dns: %s\n", err);
		config_free(cfg);
		return NULL;
	}
	return cfg;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Read one SMTP reply (all its lines) into buf; the code, or -1 with why. */
static int read_reply(int fd, double deadline, char *buf, size_t len, char *why, size_t wlen)
{
	size_t n = 0;

	buf[0] = '\0';
	for (;;) {
		/* a complete reply: its last line has "DDD " */
		char *line = buf;
		for (char *nl; (nl = strstr(line, "\r\n")) != NULL; line = nl + 2)
			if (nl - line >= 3 && (line[3] == ' ' || nl - line == 3))
				return (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
		int left = (int)((deadline - now_s()) * 1000);
		if (left <= 0) {
			str_copy(why, "no reply (timeout)", wlen);
			return -1;
		}
		if (n + 1 >= len) {
			str_copy(why, "reply too long", wlen);
			return -1;
		}
		struct pollfd p = { .fd = fd, .events = POLLIN };
		if (poll(&p, 1, left) <= 0)
			continue;
		ssize_t k = read(fd, buf + n, len - n - 1);
		if (k <= 0) {
			str_copy(why, k == 0 ? "connection closed" : strerror(errno), wlen);
			return -1;
		}
		n += (size_t)k;
		buf[n] = '\0';
	}
}

static void first_line(const char *reply, char *out, size_t len)
{
	size_t l = strcspn(reply, "\r\n");
	str_escape(out, len, reply, l);
}

/* Connect and EHLO to addr:port; 1 if the server would take mail now. */
static int probe(const struct config *cfg, const struct dns_addr *a, int port)
{
	struct sockaddr_storage ss;
	socklen_t sl;
	char reply[REPLY_MAX], why[128], line[256], hostport[80];
	int tmo = cfg->queue.connect_timeout < PROBE_TIMEOUT_MAX ? cfg->queue.connect_timeout : PROBE_TIMEOUT_MAX;
	double t0 = now_s();
	int ok = 0;

	str_fmt(hostport, sizeof(hostport), a->family == AF_INET6 ? "[%s]:%d" : "%s:%d", a->text, port);
	if (net_pton(a->text, port, &ss, &sl) == -1) {
		printf("    %s  bad address\n", hostport);
		return 0;
	}
	int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd == -1) {
		printf("    %s  socket: %s\n", hostport, strerror(errno));
		return 0;
	}
	if (connect(fd, (struct sockaddr *)&ss, sl) == -1 && errno != EINPROGRESS) {
		printf("    %s  connect: %s (%.3fs)\n", hostport, strerror(errno), now_s() - t0);
		goto out;
	}
	struct pollfd p = { .fd = fd, .events = POLLOUT };
	int err = 0;
	socklen_t el = sizeof(err);
	if (poll(&p, 1, tmo * 1000) != 1) {
		printf("    %s  connect: timeout after %ds\n", hostport, tmo);
		goto out;
	}
	getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el);
	if (err) {
		printf("    %s  connect: %s (%.3fs)\n", hostport, strerror(err), now_s() - t0);
		goto out;
	}
	int code = read_reply(fd, now_s() + tmo, reply, sizeof(reply), why, sizeof(why));
	if (code == -1) {
		printf("    %s  banner: %s (%.3fs)\n", hostport, why, now_s() - t0);
		goto out;
	}
	first_line(reply, line, sizeof(line));
	printf("    %s  banner: %s\n", hostport, line);
	if (code != 220) {
		printf("    %s  refuses mail now (%.3fs)\n", hostport, now_s() - t0);
		goto out;
	}
	char ehlo[300];
	str_fmt(ehlo, sizeof(ehlo), "EHLO %s\r\n", cfg->hostname);
	if (write(fd, ehlo, strlen(ehlo)) != (ssize_t)strlen(ehlo)) {
		printf("    %s  EHLO: write failed\n", hostport);
		goto out;
	}
	code = read_reply(fd, now_s() + tmo, reply, sizeof(reply), why, sizeof(why));
	if (code == -1) {
		printf("    %s  EHLO: %s (%.3fs)\n", hostport, why, now_s() - t0);
		goto out;
	}
	int tls = 0;
	for (const char *s = reply; (s = strstr(s, "STARTTLS")) != NULL; s += 8)
		if (s >= reply + 4 && (s[-1] == '-' || s[-1] == ' ') && (s[8] == '\r' || s[8] == ' '))
			tls = 1;
	first_line(reply, line, sizeof(line));
	printf("    %s  EHLO: %s; STARTTLS %s (%.3fs)\n", hostport, line, tls ? "offered" : "not offered",
	       now_s() - t0);
	ok = code == 250;
	if (write(fd, "QUIT\r\n", 6) == 6)
		read_reply(fd, now_s() + 2, reply, sizeof(reply), why, sizeof(why));
out:
	close(fd);
	return ok;
}

int check_mx_main(const char *conf_path, const char *domain)
{
	struct config *cfg = setup(conf_path);
	char alabel[DNS_NAME_MAX], err[128], via[400] = "";
	struct wait w = { 0 };
	struct dns_mx *mx;
	size_t nmx;
	int rc = 1, temp = 0, ipver;
	char lastwhy[DNS_WHY_MAX] = "";

	if (cfg == NULL)
		return EX_CONFIG;
	ipver = dns_ipver_parse(cfg->dns.ip_version);
	if (ipver < 0)
		ipver = DNS_IP_ANY;
	if (punycode_domain_to_ascii(domain, alabel, sizeof(alabel), err, sizeof(err)) == -1) {
		printf("not deliverable: %s is not a valid domain: %s\n", domain, err);
		goto done;
	}
	if (strcmp(alabel, domain) != 0)
		printf("%s is looked up as %s\n", domain, alabel);
	printf("DNS servers: %s; timeout %ds; ip_version %s; port %d\n", dns_servers(), cfg->dns.timeout,
	       cfg->dns.ip_version, cfg->dns.mx_port);

	dns_mx(alabel, on_result, &w);
	wait_for(&w);
	static struct dns_mx implicit;
	switch (w.r.status) {
	case DNS_OK:
		printf("MX records for %s:%s\n", alabel, w.r.cached ? " (cached)" : "");
		for (size_t i = 0; i < w.r.nmx; i++)
			printf("  %5u %s  ttl %u\n", w.r.mx[i].pref, w.r.mx[i].host, w.r.mx[i].ttl);
		mx = w.r.mx;
		nmx = w.r.nmx;
		break;
	case DNS_NODATA:
		printf("no MX record for %s: implicit MX, the domain itself (RFC 5321 5.1)\n", alabel);
		str_copy(implicit.host, alabel, sizeof(implicit.host));
		mx = &implicit;
		nmx = 1;
		break;
	case DNS_NXDOMAIN:
		printf("not deliverable: %s (mail bounces: 5.1.2)\n", w.r.why);
		goto done;
	case DNS_NULLMX:
		printf("not deliverable: %s: the domain accepts no mail (mail bounces: 5.1.10)\n", w.r.why);
		goto done;
	case DNS_BADNAME:
		printf("not deliverable: %s\n", w.r.why);
		goto done;
	default:
		printf("not deliverable now: MX lookup for %s: %s (temporary: mail is deferred, 4.4.3)\n", alabel,
		       w.r.why);
		temp = 1;
		goto done;
	}

	/* w.r is reused below: copy the MX list */
	struct dns_mx list[DNS_MX_MAX];
	memcpy(list, mx, nmx * sizeof(*mx));
	int tried = 0;
	for (size_t i = 0; i < nmx && !via[0]; i++) {
		struct dns_result ar;
		struct dns_addr lit;
		printf("%s (preference %u):\n", list[i].host, list[i].pref);
		if (strcasecmp(list[i].host, alabel) == 0 && w.r.status == DNS_OK)
			printf("  (the MX points at the domain itself)\n");
		memset(&lit, 0, sizeof(lit));
		if (inet_pton(AF_INET, list[i].host, &lit.a.v4) == 1 || inet_pton(AF_INET6, list[i].host, &lit.a.v6) == 1) {
			/* RFC 5321 5.1: an MX must name a host, not an address */
			printf("  an address literal is not a valid MX host name: skipped\n");
			str_fmt(lastwhy, sizeof(lastwhy), "MX %s is an address literal", list[i].host);
			continue;
		}
		memset(&w, 0, sizeof(w));
		dns_addrs(list[i].host, ipver, on_result, &w);
		wait_for(&w);
		ar = w.r;
		if (ar.status != DNS_OK) {
			printf("  no address: %s\n", ar.why[0] ? ar.why : dns_status_name(ar.status));
			str_fmt(lastwhy, sizeof(lastwhy), "%s: %s", list[i].host, ar.why);
			if (ar.status == DNS_TEMPFAIL)
				temp = 1;
			continue;
		}
		for (size_t k = 0; k < ar.naddr; k++)
			printf("  %-6s %s  ttl %u\n", ar.addr[k].family == AF_INET6 ? "AAAA" : "A", ar.addr[k].text,
			       ar.addr[k].ttl);
		for (size_t k = 0; k < ar.naddr && !via[0]; k++) {
			tried++;
			if (probe(cfg, &ar.addr[k], cfg->dns.mx_port))
				str_fmt(via, sizeof(via), "%s [%s]:%d", list[i].host, ar.addr[k].text, cfg->dns.mx_port);
			else
				str_fmt(lastwhy, sizeof(lastwhy), "no MX host accepts connections on port %d",
				        cfg->dns.mx_port);
		}
	}
	if (via[0]) {
		printf("deliverable: mail to %s can be delivered now via %s\n", domain, via);
		rc = 0;
	} else if (tried == 0) {
		printf("not deliverable now: no usable address for any MX host of %s (%s)%s\n", domain, lastwhy,
		       temp ? " (temporary: mail is deferred)" : "");
	} else {
		printf("not deliverable now: %s (mail is deferred and retried)\n", lastwhy);
		temp = 1;
	}
done:
	dns_shutdown();
	config_free(cfg);
	return rc == 0 ? 0 : temp ? EX_TEMPFAIL : 1;
}

/* This host's outgoing address: the first non-loopback IPv4 address of an
 * interface that is up, else the first global IPv6 one. */
static int local_address(char *out, size_t len)
{
	struct ifaddrs *ifs, *i;
	int found = 0;

	if (getifaddrs(&ifs) == -1)
		return -1;
	for (int pass = 0; pass < 2 && !found; pass++)
		for (i = ifs; i && !found; i = i->ifa_next) {
			if (!i->ifa_addr || !(i->ifa_flags & IFF_UP) || (i->ifa_flags & IFF_LOOPBACK))
				continue;
			if (pass == 0 && i->ifa_addr->sa_family == AF_INET) {
				struct sockaddr_in *s = (struct sockaddr_in *)i->ifa_addr;
				if ((ntohl(s->sin_addr.s_addr) >> 24) == 127)
					continue;
				inet_ntop(AF_INET, &s->sin_addr, out, (socklen_t)len);
				found = 1;
			} else if (pass == 1 && i->ifa_addr->sa_family == AF_INET6) {
				struct sockaddr_in6 *s = (struct sockaddr_in6 *)i->ifa_addr;
				if (IN6_IS_ADDR_LINKLOCAL(&s->sin6_addr) || IN6_IS_ADDR_LOOPBACK(&s->sin6_addr))
					continue;
				inet_ntop(AF_INET6, &s->sin6_addr, out, (socklen_t)len);
				found = 1;
			}
		}
	freeifaddrs(ifs);
	return found ? 0 : -1;
}

int check_dnsbl_main(const char *conf_path, const char *ip)
{
	struct config *cfg;
	char local[INET6_ADDRSTRLEN], name[DNS_NAME_MAX];
	int listed = 0, temp = 0;

	if (ip == NULL) {
		if (local_address(local, sizeof(local)) == -1) {
			fprintf(stderr, "postern: this host has only loopback addresses; name the IP: "
			                "postern check dnsbl IP\n");
			return 1;
		}
		ip = local;
		printf("checking %s (this host's first non-loopback address)\n", ip);
	}
	if (dns_dnsbl_name(ip, "x", name, sizeof(name)) == -1) {
		fprintf(stderr, "postern: %s is not an IP address\n", ip);
		return EX_USAGE;
	}
	if ((cfg = setup(conf_path)) == NULL)
		return EX_CONFIG;
	if (cfg->smtpd.dnsbl.n == 0)
		printf("no DNSBL configured (smtpd.dnsbl is empty)\n");
	for (size_t i = 0; i < cfg->smtpd.dnsbl.n; i++) {
		const char *zone = cfg->smtpd.dnsbl.v[i];
		struct wait w = { 0 };
		dns_dnsbl_name(ip, zone, name, sizeof(name));
		dns_dnsbl(ip, zone, on_result, &w);
		wait_for(&w);
		switch (w.r.status) {
		case DNS_OK:
			listed = 1;
			printf("%s: LISTED (%s -> %s)%s%s\n", zone, name, w.r.naddr ? w.r.addr[0].text : "?",
			       w.r.txt[0] ? ": " : "", w.r.txt);
			break;
		case DNS_NXDOMAIN:
		case DNS_NODATA:
			printf("%s: not listed\n", zone);
			break;
		default:
			temp = 1;
			printf("%s: no answer: %s\n", zone, w.r.why);
			break;
		}
	}
	if (listed)
		printf("%s is listed\n", ip);
	else if (temp)
		printf("%s: some lists did not answer\n", ip);
	else
		printf("%s is not listed\n", ip);
	dns_shutdown();
	config_free(cfg);
	return listed ? 1 : temp ? EX_TEMPFAIL : 0;
}
