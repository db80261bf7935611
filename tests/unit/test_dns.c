/* Unit tests for shared/dns.c: answer parsing from DNS packets built here
 * (MX, A, AAAA, TXT, CNAME chains, NXDOMAIN/NODATA with SOA TTLs,
 * SERVFAIL, malformed), MX ordering and the shuffle among equal
 * preferences, DNSBL names, error texts, the cache's TTLs and bound, and
 * the asynchronous path against a server in this process (a UDP socket
 * answered from the event loop) and one that never answers. */
#include "dns.h"
#include "event.h"
#include "harness.h"
#include "str.h"

#include <ares.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- a tiny packet builder ---- */

struct pkt {
	unsigned char b[1024];
	size_t n;
	size_t counts_at;
	unsigned an, ns;
};

static void put8(struct pkt *p, unsigned v) { p->b[p->n++] = (unsigned char)v; }
static void put16(struct pkt *p, unsigned v) { put8(p, v >> 8), put8(p, v & 0xff); }
static void put32(struct pkt *p, uint32_t v) { put16(p, v >> 16), put16(p, v & 0xffff); }

static void putname(struct pkt *p, const char *name)
{
	while (*name) {
		const char *dot = strchr(name, '.');
		size_t l = dot ? (size_t)(dot - name) : strlen(name);
		put8(p, (unsigned)l);
		memcpy(p->b + p->n, name, l);
		p->n += l;
		name += l + (dot ? 1 : 0);
	}
	put8(p, 0);
}

static void pkt_start(struct pkt *p, unsigned id, unsigned rcode, const char *qname, unsigned qtype)
{
	memset(p, 0, sizeof(*p));
	put16(p, id);
	put16(p, 0x8180 | rcode);   /* response, RD, RA */
	put16(p, 1), put16(p, 0), put16(p, 0), put16(p, 0);
	putname(p, qname);
	put16(p, qtype), put16(p, 1);
}

static void pkt_counts(struct pkt *p)
{
	p->b[6] = (unsigned char)(p->an >> 8), p->b[7] = (unsigned char)p->an;
	p->b[8] = (unsigned char)(p->ns >> 8), p->b[9] = (unsigned char)p->ns;
}

static void rr_head(struct pkt *p, const char *owner, unsigned type, uint32_t ttl, int authority)
{
	putname(p, owner);
	put16(p, type), put16(p, 1), put32(p, ttl);
	if (authority)
		p->ns++;
	else
		p->an++;
	pkt_counts(p);
}

static void rr_mx(struct pkt *p, const char *owner, uint32_t ttl, unsigned pref, const char *host)
{
	rr_head(p, owner, DNS_T_MX, ttl, 0);
	size_t at = p->n;
	put16(p, 0);
	put16(p, pref);
	putname(p, host);
	p->b[at] = (unsigned char)((p->n - at - 2) >> 8), p->b[at + 1] = (unsigned char)(p->n - at - 2);
}

static void rr_cname(struct pkt *p, const char *owner, uint32_t ttl, const char *target)
{
	rr_head(p, owner, DNS_T_CNAME, ttl, 0);
	size_t at = p->n;
	put16(p, 0);
	putname(p, target);
	p->b[at] = (unsigned char)((p->n - at - 2) >> 8), p->b[at + 1] = (unsigned char)(p->n - at - 2);
}

static void rr_addr(struct pkt *p, const char *owner, uint32_t ttl, const char *ip)
{
	unsigned char a[16];
	int v6 = strchr(ip, ':') != NULL;
	inet_pton(v6 ? AF_INET6 : AF_INET, ip, a);
	rr_head(p, owner, v6 ? DNS_T_AAAA : DNS_T_A, ttl, 0);
	put16(p, v6 ? 16 : 4);
	memcpy(p->b + p->n, a, v6 ? 16 : 4);
	p->n += v6 ? 16 : 4;
}

static void rr_txt(struct pkt *p, const char *owner, uint32_t ttl, const char *s1, const char *s2)
{
	rr_head(p, owner, DNS_T_TXT, ttl, 0);
	put16(p, (unsigned)(strlen(s1) + 1 + (s2 ? strlen(s2) + 1 : 0)));
	put8(p, (unsigned)strlen(s1));
	memcpy(p->b + p->n, s1, strlen(s1)), p->n += strlen(s1);
	if (s2) {
		put8(p, (unsigned)strlen(s2));
		memcpy(p->b + p->n, s2, strlen(s2)), p->n += strlen(s2);
	}
}

static void rr_soa(struct pkt *p, const char *owner, uint32_t ttl, uint32_t minimum)
{
	rr_head(p, owner, DNS_T_SOA, ttl, 1);
	size_t at = p->n;
	put16(p, 0);
	putname(p, "ns.test");
	putname(p, "admin.test");
	put32(p, 1), put32(p, 3600), put32(p, 600), put32(p, 86400), put32(p, minimum);
	p->b[at] = (unsigned char)((p->n - at - 2) >> 8), p->b[at + 1] = (unsigned char)(p->n - at - 2);
}

/* ---- parsing ---- */

static void test_parse_mx(void)
{
	struct pkt p;
	struct dns_result r;
	char cname[DNS_NAME_MAX];

	pkt_start(&p, 1, 0, "example.test", DNS_T_MX);
	rr_mx(&p, "example.test", 300, 20, "mx2.example.test");
	rr_mx(&p, "example.test", 120, 10, "mx1.example.test");
	CHECK_EQ_INT(dns_parse_answer(DNS_T_MX, "example.test", p.b, p.n, "127.0.0.1:53", &r, cname, sizeof(cname)), 0);
	CHECK_EQ_INT(r.status, DNS_OK);
	CHECK_EQ_INT(r.nmx, 2);
	CHECK_STR(r.mx[0].host, "mx2.example.test");
	CHECK_EQ_INT(r.mx[0].pref, 20);
	CHECK_EQ_INT(r.mx[0].ttl, 300);
	CHECK_EQ_INT(r.mx[1].ttl, 120);
	CHECK_EQ_INT(r.ttl, 120);
	CHECK_STR(cname, "");

	/* CNAME chain inside the answer: followed, TTL is the smallest link */
	ROW("cname chain in answer");
	pkt_start(&p, 2, 0, "alias.test", DNS_T_MX);
	rr_cname(&p, "alias.test", 60, "mid.test");
	rr_cname(&p, "MID.test", 600, "real.test");
	rr_mx(&p, "real.test", 600, 5, "mx.real.test");
	rr_mx(&p, "other.test", 600, 1, "not.ours.test");   /* off the chain: ignored */
	CHECK_EQ_INT(dns_parse_answer(DNS_T_MX, "alias.test", p.b, p.n, "", &r, cname, sizeof(cname)), 0);
	CHECK_EQ_INT(r.status, DNS_OK);
	CHECK_EQ_INT(r.nmx, 1);
	CHECK_STR(r.mx[0].host, "mx.real.test");
	CHECK_EQ_INT(r.ttl, 60);

	ROW("cname only: ask again at the target");
	pkt_start(&p, 3, 0, "alias.test", DNS_T_MX);
	rr_cname(&p, "alias.test", 60, "target.test");
	CHECK_EQ_INT(dns_parse_answer(DNS_T_MX, "alias.test", p.b, p.n, "", &r, cname, sizeof(cname)), 0);
	CHECK_EQ_INT(r.status, DNS_NODATA);
	CHECK_STR(cname, "target.test");

	ROW("null MX");
	pkt_start(&p, 4, 0, "nullmx.test", DNS_T_MX);
	rr_mx(&p, "nullmx.test", 300, 0, "");
	CHECK_EQ_INT(dns_parse_answer(DNS_T_MX, "nullmx.test", p.b, p.n, "", &r, cname, sizeof(cname)), 0);
	CHECK_EQ_INT(r.status, DNS_OK);
	CHECK_EQ_INT(r.nmx, 1);
	CHECK_STR(r.mx[0].host, "");

	ROW("nxdomain with SOA");
	pkt_start(&p, 5, 3, "nx.test", DNS_T_MX);
	rr_soa(&p, "test", 3600, 120);
	CHECK_EQ_INT(dns_parse_answer(DNS_T_MX, "nx.test", p.b, p.n, "", &r, cname, sizeof(cname)), 0);
	CHECK_EQ_INT(r.status, DNS_NXDOMAIN);
	CHECK_STR(r.why, "NXDOMAIN for nx.test");
	CHECK_EQ_INT(r.ttl, 120);

	ROW("nodata without SOA");
	pkt_start(&p, 6, 0, "a.test", DNS_T_MX);
	CHECK_EQ_INT(dns_parse_answer(DNS_T_MX, "a.test", p.b, p.n, "", &r, cname, sizeof(cname)), 0);
	CHECK_EQ_INT(r.status, DNS_NODATA);
	CHECK_STR(r.why, "no MX record for a.test");
	CHECK_EQ_INT(r.ttl, DNS_NEG_TTL);

	ROW("servfail");
	pkt_start(&p, 7, 2, "a.test", DNS_T_MX);
	CHECK_EQ_INT(dns_parse_answer(DNS_T_MX, "a.test", p.b, p.n, "127.0.0.1:5353", &r, cname, sizeof(cname)), 0);
	CHECK_EQ_INT(r.status, DNS_TEMPFAIL);
	CHECK_STR(r.why, "SERVFAIL from 127.0.0.1:5353");

	ROW("refused");
	pkt_start(&p, 8, 5, "a.test", DNS_T_MX);
	CHECK_EQ_INT(dns_parse_answer(DNS_T_MX, "a.test", p.b, p.n, "127.0.0.1:5353", &r, cname, sizeof(cname)), 0);
	CHECK_STR(r.why, "REFUSED from 127.0.0.1:5353");
}

static void test_parse_hostile(void)
{
	struct pkt p;
	struct dns_result r;
	char cname[DNS_NAME_MAX];

	pkt_start(&p, 1, 0, "example.test", DNS_T_MX);
	rr_mx(&p, "example.test", 300, 20, "mx2.example.test");
	for (size_t cut = 0; cut < p.n; cut++) {
		ROW("truncated at %zu", cut);
		int rc = dns_parse_answer(DNS_T_MX, "example.test", p.b, cut, "", &r, cname, sizeof(cname));
		CHECK(rc == -1 || r.nmx == 0);
		if (rc == -1) {
			CHECK_EQ_INT(r.status, DNS_TEMPFAIL);
			CHECK_CONTAINS(r.why, "malformed answer");
		}
	}
	ROW("compression loop");
	pkt_start(&p, 1, 0, "x.test", DNS_T_MX);
	p.an = 1;
	pkt_counts(&p);
	size_t at = p.n;
	put8(&p, 0xc0), put8(&p, (unsigned)at);   /* points at itself */
	put16(&p, DNS_T_MX), put16(&p, 1), put32(&p, 1), put16(&p, 0);
	CHECK_EQ_INT(dns_parse_answer(DNS_T_MX, "x.test", p.b, p.n, "", &r, cname, sizeof(cname)), -1);
	ROW("bad A length");
	pkt_start(&p, 1, 0, "x.test", DNS_T_A);
	rr_head(&p, "x.test", DNS_T_A, 60, 0);
	put16(&p, 3), put8(&p, 1), put8(&p, 2), put8(&p, 3);
	CHECK_EQ_INT(dns_parse_answer(DNS_T_A, "x.test", p.b, p.n, "", &r, cname, sizeof(cname)), -1);
	ROW("not a response");
	pkt_start(&p, 1, 0, "x.test", DNS_T_A);
	p.b[2] &= 0x7f;
	CHECK_EQ_INT(dns_parse_answer(DNS_T_A, "x.test", p.b, p.n, "", &r, cname, sizeof(cname)), -1);
	ROW("cname loop");
	pkt_start(&p, 1, 0, "a.test", DNS_T_A);
	for (int i = 0; i < 10; i++) {
		rr_cname(&p, "a.test", 60, "b.test");
		rr_cname(&p, "b.test", 60, "a.test");
	}
	CHECK_EQ_INT(dns_parse_answer(DNS_T_A, "a.test", p.b, p.n, "", &r, cname, sizeof(cname)), -1);
}

static void test_parse_addrs_txt(void)
{
	struct pkt p;
	struct dns_result r;
	char cname[DNS_NAME_MAX];

	pkt_start(&p, 1, 0, "h.test", DNS_T_A);
	rr_addr(&p, "h.test", 30, "127.0.0.2");
	rr_addr(&p, "h.test", 40, "127.0.0.3");
	CHECK_EQ_INT(dns_parse_answer(DNS_T_A, "h.test", p.b, p.n, "", &r, cname, sizeof(cname)), 0);
	CHECK_EQ_INT(r.naddr, 2);
	CHECK_STR(r.addr[0].text, "127.0.0.2");
	CHECK_EQ_INT(r.addr[1].ttl, 40);
	CHECK_EQ_INT(r.addr[0].family, AF_INET);
	CHECK_EQ_INT(r.ttl, 30);

	ROW("aaaa");
	pkt_start(&p, 1, 0, "h.test", DNS_T_AAAA);
	rr_addr(&p, "h.test", 30, "2001:db8::1");
	CHECK_EQ_INT(dns_parse_answer(DNS_T_AAAA, "h.test", p.b, p.n, "", &r, cname, sizeof(cname)), 0);
	CHECK_EQ_INT(r.naddr, 1);
	CHECK_STR(r.addr[0].text, "2001:db8::1");
	CHECK_EQ_INT(r.addr[0].family, AF_INET6);

	ROW("txt");
	pkt_start(&p, 1, 0, "2.0.0.127.bl.test", DNS_T_TXT);
	rr_txt(&p, "2.0.0.127.bl.test", 30, "listed for ", "testing");
	rr_txt(&p, "2.0.0.127.bl.test", 30, "see \x01http://bl.test/", NULL);
	CHECK_EQ_INT(dns_parse_answer(DNS_T_TXT, "2.0.0.127.bl.test", p.b, p.n, "", &r, cname, sizeof(cname)), 0);
	CHECK_STR(r.txt, "listed for testing; see ?http://bl.test/");
}

/* ---- ordering ---- */

static uint32_t rnd_zero(uint32_t n)
{
	(void)n;
	return 0;
}

static void test_mx_sort(void)
{
	struct dns_mx mx[5] = {
		{ "c", 20, 1 }, { "a", 10, 1 }, { "d", 30, 1 }, { "b", 10, 1 }, { "e", 20, 1 },
	};
	dns_mx_sort(mx, 5, rnd_zero);
	CHECK_EQ_INT(mx[0].pref, 10);
	CHECK_EQ_INT(mx[1].pref, 10);
	CHECK_EQ_INT(mx[2].pref, 20);
	CHECK_EQ_INT(mx[3].pref, 20);
	CHECK_STR(mx[4].host, "d");

	/* equal preferences come in every order, roughly equally often */
	int first_a = 0, first_b = 0, third_c = 0;
	for (int i = 0; i < 2000; i++) {
		struct dns_mx m[5] = {
			{ "c", 20, 1 }, { "a", 10, 1 }, { "d", 30, 1 }, { "b", 10, 1 }, { "e", 20, 1 },
		};
		dns_mx_sort(m, 5, NULL);
		CHECK(m[0].pref == 10 && m[1].pref == 10 && m[2].pref == 20 && m[3].pref == 20 && m[4].pref == 30);
		first_a += strcmp(m[0].host, "a") == 0;
		first_b += strcmp(m[0].host, "b") == 0;
		third_c += strcmp(m[2].host, "c") == 0;
	}
	CHECK(first_a > 800 && first_b > 800);
	CHECK(third_c > 800 && third_c < 1200);
	dns_mx_sort(mx, 0, NULL);   /* empty is fine */
}

/* ---- names and texts ---- */

static void test_dnsbl_name(void)
{
	static const struct {
		const char *ip, *zone, *out;
	} cases[] = {
		{ "127.0.0.2", "bl.test", "2.0.0.127.bl.test" },
		{ "192.0.2.99", "zen.spamhaus.org.", "99.2.0.192.zen.spamhaus.org" },
		{ "2001:db8::1", "bl.test",
		  "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.test" },
		{ "::ffff:1.2.3.4", "z", "4.0.3.0.2.0.1.0.f.f.f.f.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.z" },
		{ "1.2.3", "bl.test", NULL },
		{ "example.org", "bl.test", NULL },
		{ "1.2.3.4", "", NULL },
	};
	for (size_t i = 0; i < NELEM(cases); i++) {
		char out[DNS_NAME_MAX];
		ROW("%s", cases[i].ip);
		int rc = dns_dnsbl_name(cases[i].ip, cases[i].zone, out, sizeof(out));
		CHECK_EQ_INT(rc, cases[i].out ? 0 : -1);
		if (cases[i].out)
			CHECK_STR(out, cases[i].out);
	}
	ROWS_END();
	char small[10], longzone[300];
	CHECK_EQ_INT(dns_dnsbl_name("127.0.0.2", "bl.test", small, sizeof(small)), -1);
	memset(longzone, 'a', 250), longzone[250] = '\0';
	char out[DNS_NAME_MAX];
	CHECK_EQ_INT(dns_dnsbl_name("127.0.0.2", longzone, out, sizeof(out)), -1);
}

static void test_explain(void)
{
	static const struct {
		int st;
		const char *want;
		int status;
	} cases[] = {
		{ ARES_ENOTFOUND, "NXDOMAIN for example.invalid", DNS_NXDOMAIN },
		{ ARES_ENODATA, "no MX record for example.invalid", DNS_NODATA },
		{ ARES_ESERVFAIL, "SERVFAIL from 127.0.0.1:5353", DNS_TEMPFAIL },
		{ ARES_EREFUSED, "REFUSED from 127.0.0.1:5353", DNS_TEMPFAIL },
		{ ARES_ETIMEOUT, "timeout after 5s (127.0.0.1:5353)", DNS_TEMPFAIL },
		{ ARES_ECONNREFUSED, "connection refused by 127.0.0.1:5353", DNS_TEMPFAIL },
		{ ARES_EBADRESP, "malformed answer from 127.0.0.1:5353", DNS_TEMPFAIL },
		{ ARES_ENOMEM, "127.0.0.1:5353", DNS_TEMPFAIL },
	};
	for (size_t i = 0; i < NELEM(cases); i++) {
		char buf[DNS_WHY_MAX];
		ROW("%s", cases[i].want);
		dns_explain(buf, sizeof(buf), cases[i].st, DNS_T_MX, "example.invalid", "127.0.0.1:5353", 5);
		CHECK_CONTAINS(buf, cases[i].want);
		CHECK_EQ_INT(dns_status_of(cases[i].st), cases[i].status);
	}
	ROWS_END();
	CHECK_STR(dns_status_name(DNS_NULLMX), "NULLMX");
	CHECK_EQ_INT(dns_ipver_parse("ipv4"), DNS_IP_V4);
	CHECK_EQ_INT(dns_ipver_parse("v4"), -1);
}

/* ---- cache ---- */

static void test_cache(void)
{
	struct dns_result r;

	dns_cache_clear();
	memset(&r, 0, sizeof(r));
	r.status = DNS_OK;
	r.ttl = 10;
	str_copy(r.name, "a.test", sizeof(r.name));
	dns_cache_put(DNS_T_MX, "a.test", &r, 1000);
	CHECK(dns_cache_get(DNS_T_MX, "A.TEST", 1000) != NULL);
	CHECK(dns_cache_get(DNS_T_MX, "a.test", 10999) != NULL);
	CHECK(dns_cache_get(DNS_T_MX, "a.test", 10999)->cached);
	CHECK(dns_cache_get(DNS_T_A, "a.test", 1000) == NULL);    /* keyed by type too */
	CHECK(dns_cache_get(DNS_T_MX, "a.test", 11000) == NULL);  /* expired */
	CHECK_EQ_INT(dns_cache_size(), 0);

	r.ttl = 0;   /* not cached */
	dns_cache_put(DNS_T_MX, "b.test", &r, 1000);
	r.ttl = 100;
	r.status = DNS_TEMPFAIL;   /* not cached */
	dns_cache_put(DNS_T_MX, "c.test", &r, 1000);
	CHECK_EQ_INT(dns_cache_size(), 0);

	r.status = DNS_NXDOMAIN;   /* negative answers are */
	r.ttl = 5;
	dns_cache_put(DNS_T_MX, "nx.test", &r, 1000);
	CHECK(dns_cache_get(DNS_T_MX, "nx.test", 5999) != NULL);
	CHECK(dns_cache_get(DNS_T_MX, "nx.test", 6000) == NULL);

	r.status = DNS_OK;
	r.ttl = 999999;   /* capped */
	dns_cache_put(DNS_T_MX, "long.test", &r, 0);
	CHECK(dns_cache_get(DNS_T_MX, "long.test", (uint64_t)DNS_TTL_MAX * 1000) == NULL);

	/* bounded: the entry that expires first goes */
	dns_cache_clear();
	for (int i = 0; i < DNS_CACHE_MAX + 10; i++) {
		char name[32];
		str_fmt(name, sizeof(name), "h%d.test", i);
		r.ttl = i == 0 ? 1000 : 100 + (uint32_t)i;
		dns_cache_put(DNS_T_A, name, &r, 0);
	}
	CHECK_EQ_INT(dns_cache_size(), DNS_CACHE_MAX);
	CHECK(dns_cache_get(DNS_T_A, "h0.test", 0) != NULL);
	CHECK(dns_cache_get(DNS_T_A, "h1.test", 0) == NULL);
	CHECK(dns_cache_get(DNS_T_A, "h1033.test", 0) != NULL);
	dns_cache_clear();
}

/* ---- the asynchronous path ---- */

static int srv_fd;
static int srv_answers;

/* Answer every query for mx.test from a canned packet; anything else NXDOMAIN. */
static void on_query(int fd, int events, void *arg)
{
	unsigned char q[512];
	struct sockaddr_storage from;
	socklen_t flen = sizeof(from);
	struct pkt p;
	(void)events;
	(void)arg;
	ssize_t n = recvfrom(fd, q, sizeof(q), 0, (struct sockaddr *)&from, &flen);
	if (n < 12)
		return;
	unsigned id = (unsigned)q[0] << 8 | q[1];
	char *name = NULL;
	long enclen;
	if (ares_expand_name(q + 12, q, (int)n, &name, &enclen) != ARES_SUCCESS)
		return;
	unsigned type = (unsigned)q[12 + enclen] << 8 | q[13 + enclen];
	if (strcmp(name, "mx.test") == 0 && type == DNS_T_MX) {
		pkt_start(&p, id, 0, name, type);
		rr_mx(&p, name, 60, 10, "a.mx.test");
		rr_mx(&p, name, 60, 5, "b.mx.test");
	} else if (strcmp(name, "alias.test") == 0) {
		pkt_start(&p, id, 0, name, type);
		rr_cname(&p, name, 60, "mx.test");
	} else {
		pkt_start(&p, id, 3, name, type);
	}
	ares_free_string(name);
	srv_answers++;
	sendto(fd, p.b, p.n, 0, (struct sockaddr *)&from, flen);
}

static struct dns_result got;
static int ngot;

static void on_result(const struct dns_result *r, void *arg)
{
	(void)arg;
	got = *r;
	ngot++;
}

static int bind_udp(char *addr, size_t len)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t sl = sizeof(sin);
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd == -1 || bind(fd, (struct sockaddr *)&sin, sizeof(sin)) == -1 ||
	    getsockname(fd, (struct sockaddr *)&sin, &sl) == -1)
		return -1;
	str_fmt(addr, len, "127.0.0.1:%d", ntohs(sin.sin_port));
	return fd;
}

static void wait_result(int want, int max_ms)
{
	uint64_t end = ev_now_ms() + (uint64_t)max_ms;
	while (ngot < want && ev_now_ms() < end)
		ev_once(50);
}

static void test_async(void)
{
	char addr[64], err[128];
	char *servers[1] = { addr };

	CHECK_EQ_INT(ev_init(), 0);
	srv_fd = bind_udp(addr, sizeof(addr));
	CHECK(srv_fd >= 0);
	CHECK_EQ_INT(ev_add(srv_fd, EV_READ, on_query, NULL), 0);
	CHECK_EQ_INT(dns_init(servers, 1, 2, err, sizeof(err)), 0);
	CHECK_STR(dns_servers(), addr);

	ngot = 0;
	CHECK(dns_mx("mx.test", on_result, NULL) != NULL);
	CHECK_EQ_INT(ngot, 0);
	wait_result(1, 3000);
	CHECK_EQ_INT(got.status, DNS_OK);
	CHECK_EQ_INT(got.nmx, 2);
	CHECK_STR(got.mx[0].host, "b.mx.test");   /* sorted */
	CHECK(!got.cached);

	/* a cache hit is delivered later, from the loop, not from dns_mx() */
	int before = srv_answers;
	CHECK(dns_mx("MX.test", on_result, NULL) != NULL);
	CHECK_EQ_INT(ngot, 1);
	wait_result(2, 1000);
	CHECK_EQ_INT(ngot, 2);
	CHECK(got.cached);
	CHECK_EQ_INT(srv_answers, before);

	/* a CNAME-only answer is followed by asking again at the target */
	CHECK(dns_mx("alias.test", on_result, NULL) != NULL);
	wait_result(3, 3000);
	CHECK_EQ_INT(got.status, DNS_OK);
	CHECK_STR(got.name, "alias.test");
	CHECK_EQ_INT(got.nmx, 2);

	CHECK(dns_mx("nothere.test", on_result, NULL) != NULL);
	wait_result(4, 3000);
	CHECK_EQ_INT(got.status, DNS_NXDOMAIN);
	CHECK_STR(got.why, "NXDOMAIN for nothere.test");

	/* a cancelled lookup never calls back */
	struct dns_query *q = dns_mx("other.test", on_result, NULL);
	dns_cancel(q);
	CHECK_EQ_INT(dns_pending(), 0);
	for (int i = 0; i < 10; i++)
		ev_once(20);
	CHECK_EQ_INT(ngot, 4);

	/* a bad name fails at once (but still from the loop) */
	CHECK(dns_mx("a..b", on_result, NULL) != NULL);
	CHECK_EQ_INT(ngot, 4);
	wait_result(5, 1000);
	CHECK_EQ_INT(got.status, DNS_BADNAME);

	dns_shutdown();
	ev_del(srv_fd);
	close(srv_fd);
	CHECK(dns_mx("mx.test", on_result, NULL) == NULL);   /* not initialised */
}

static void test_dead_server(void)
{
	char addr[64], err[128];
	char *servers[1] = { addr };
	int fd = bind_udp(addr, sizeof(addr));   /* bound, never read */

	CHECK(fd >= 0);
	CHECK_EQ_INT(dns_init(servers, 1, 1, err, sizeof(err)), 0);
	ngot = 0;
	uint64_t t0 = ev_now_ms();
	CHECK(dns_addrs("h.test", DNS_IP_ANY, on_result, NULL) != NULL);
	wait_result(1, 5000);
	CHECK_EQ_INT(ngot, 1);
	CHECK_EQ_INT(got.status, DNS_TEMPFAIL);
	CHECK_CONTAINS(got.why, "timeout after 1s");
	CHECK_CONTAINS(got.why, addr);
	CHECK(ev_now_ms() - t0 >= 1000);
	/* not cached: asking again asks the server again */
	CHECK(dns_cache_get(DNS_T_A, "h.test", ev_now_ms()) == NULL);
	dns_shutdown();
	close(fd);

	char *bad[1] = { "not an address" };
	CHECK_EQ_INT(dns_init(bad, 1, 1, err, sizeof(err)), -1);
	CHECK_CONTAINS(err, "dns.servers");
}

int main(int argc, char **argv)
{
	h_init(argc, argv);
	RUN(test_parse_mx);
	RUN(test_parse_hostile);
	RUN(test_parse_addrs_txt);
	RUN(test_mx_sort);
	RUN(test_dnsbl_name);
	RUN(test_explain);
	RUN(test_cache);
	RUN(test_async);
	RUN(test_dead_server);
	return h_done();
}
