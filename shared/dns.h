/*
 * dns - asynchronous DNS on c-ares, driven by the event loop (event.h).
 *
 * One resolver per process.  dns_init() creates it; every lookup returns at
 * once and delivers its result later, from the loop, to a callback: never a
 * blocking call, never a callback from inside the function that started the
 * lookup (a cache hit is delivered on the next loop iteration).  c-ares
 * sockets are watched with ev_add() (ARES_OPT_SOCK_STATE_CB) and its
 * retransmission timer is an ev_timer; on top of that every lookup has its
 * own deadline of dns.timeout seconds, so one dead server delays only the
 * lookups that need it, by at most that long.
 *
 * Lookups:
 *   dns_mx(domain)       MX records, sorted by preference, random order among
 *                        equal preferences (RFC 5321 5.1); NODATA means "no
 *                        MX": the caller uses the domain itself (implicit MX);
 *                        "0 ." alone is DNS_NULLMX (RFC 7505).
 *   dns_addrs(host, v)   AAAA then A (DNS_IP_ANY), or only one family.
 *   dns_txt(name)        TXT strings, joined with "; " (DNSBL reasons).
 *   dns_dnsbl(ip, zone)  A lookup of the reversed address under zone; OK =
 *                        listed (an answer in 127.0.0.0/8), with the TXT
 *                        reason when the list publishes one.
 * A CNAME is followed (by the recursive server, and again here when an
 * answer holds only the CNAME), up to DNS_CNAME_MAX links.  A UTF-8 name is
 * looked up as its A-label (punycode.h); one that cannot be converted is
 * DNS_BADNAME.
 *
 * Cache: per process, keyed by (type, name), holding answers for their TTL
 * (the smallest TTL in the answer, CNAMEs included; negative answers for the
 * SOA minimum, RFC 2308), at most DNS_CACHE_MAX entries (the soonest to
 * expire goes first), TTLs capped at DNS_TTL_MAX.  Temporary failures are
 * not cached.
 *
 * Ownership: the struct dns_result passed to a callback belongs to the
 * resolver and is valid only during the callback; copy what you keep.  A
 * struct dns_query handle is owned by the resolver too: dns_cancel() it
 * (e.g. from a session's teardown) to make sure the callback never runs;
 * after the callback ran the handle is gone.  dns_shutdown() drops every
 * pending lookup without calling its callback.
 *
 * Errors: dns_init() returns -1 and fills err.  A lookup returns NULL only
 * when the resolver is not initialised.  Every failure is a result with a
 * status and `why`, a text that says which answer happened:
 * "NXDOMAIN for example.invalid", "SERVFAIL from 127.0.0.1:5353",
 * "timeout after 5s (127.0.0.1:5353)", "null MX (RFC 7505) for example.org".
 *
 * Limits: names up to DNS_NAME_MAX-1 bytes, DNS_MX_MAX MX records,
 * DNS_ADDR_MAX addresses and DNS_TXT_MAX bytes of TXT per result; more are
 * dropped (MX records after sorting, so the best ones stay).
 */
#ifndef POSTERN_DNS_H
#define POSTERN_DNS_H

#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>

#define DNS_NAME_MAX 256
#define DNS_MX_MAX 32
#define DNS_ADDR_MAX 32
#define DNS_TXT_MAX 512
#define DNS_WHY_MAX 256
#define DNS_CNAME_MAX 8
#define DNS_CACHE_MAX 1024
#define DNS_TTL_MAX 86400
#define DNS_NEG_TTL 300         /* negative answer without an SOA */

/* DNS RR types used here (the numbers from RFC 1035/3596). */
#define DNS_T_A 1
#define DNS_T_CNAME 5
#define DNS_T_SOA 6
#define DNS_T_MX 15
#define DNS_T_TXT 16
#define DNS_T_AAAA 28

enum dns_status {
	DNS_OK = 0,
	DNS_NXDOMAIN,      /* the name does not exist: permanent (5.1.2) */
	DNS_NODATA,        /* the name exists without records of the type */
	DNS_NULLMX,        /* "0 ." (RFC 7505): the domain takes no mail (5.1.10) */
	DNS_TEMPFAIL,      /* SERVFAIL, REFUSED, timeout, unreachable: defer (4.4.3) */
	DNS_BADNAME,       /* not a valid domain name: permanent */
};

enum dns_ipver { DNS_IP_ANY = 0, DNS_IP_V4, DNS_IP_V6 };

struct dns_mx {
	char host[DNS_NAME_MAX];   /* "" only in a null MX */
	unsigned pref;
	uint32_t ttl;
};

struct dns_addr {
	int family;                /* AF_INET or AF_INET6 */
	union {
		struct in_addr v4;
		struct in6_addr v6;
	} a;
	uint32_t ttl;
	char text[48];             /* inet_ntop form */
};

struct dns_result {
	int status;                /* enum dns_status */
	char name[DNS_NAME_MAX];   /* the name asked for (A-label form) */
	char why[DNS_WHY_MAX];     /* "" when OK; else what the answer was */
	uint32_t ttl;              /* how long this answer may be cached */
	int cached;                /* answered from the cache */
	size_t nmx;
	struct dns_mx mx[DNS_MX_MAX];
	size_t naddr;
	struct dns_addr addr[DNS_ADDR_MAX];
	char txt[DNS_TXT_MAX];
};

typedef void dns_cb(const struct dns_result *r, void *arg);
struct dns_query;

/* servers: "ip", "ip:port" or "[v6]:port" each; n == 0: /etc/resolv.conf.
 * timeout: seconds a lookup may take in all (dns.timeout). */
int dns_init(char *const *servers, size_t n, int timeout, char *err, size_t errlen);
void dns_shutdown(void);
/* The servers in use, "127.0.0.1:5353, ..." (for messages). */
const char *dns_servers(void);
/* "any", "ipv4", "ipv6" -> enum dns_ipver; -1 if unknown. */
int dns_ipver_parse(const char *s);

struct dns_query *dns_mx(const char *domain, dns_cb *cb, void *arg);
struct dns_query *dns_addrs(const char *host, int ipver, dns_cb *cb, void *arg);
struct dns_query *dns_txt(const char *name, dns_cb *cb, void *arg);
struct dns_query *dns_dnsbl(const char *ip, const char *zone, dns_cb *cb, void *arg);
void dns_cancel(struct dns_query *q);
/* Lookups started and not yet delivered. */
size_t dns_pending(void);

/* ---- pure helpers (no resolver needed; unit-tested) ---- */

/* Parse a raw DNS answer (abuf, as received) for records of qtype owned by
 * qname or by the end of a CNAME chain starting there.  Fills r->status,
 * r->why, r->ttl and the records (mx, addr or txt), unsorted.  When the
 * answer holds only a CNAME chain ending elsewhere, r->status is DNS_NODATA
 * and cname[] holds the last target (the caller asks again there); else
 * cname[0] is '\0'.  servers names the source in `why`.  Returns 0, or -1 for
 * a malformed answer (then r->status is DNS_TEMPFAIL). */
int dns_parse_answer(int qtype, const char *qname, const unsigned char *abuf, size_t alen,
                     const char *servers, struct dns_result *r, char *cname, size_t cnlen);

/* Sort by preference; equal preferences in random order (rnd(n) returns
 * 0..n-1; NULL: arc4random_uniform). */
void dns_mx_sort(struct dns_mx *mx, size_t n, uint32_t (*rnd)(uint32_t));

/* The text for a c-ares status (ARES_E...) of a lookup of qtype for name. */
void dns_explain(char *buf, size_t len, int ares_status, int qtype, const char *name,
                 const char *servers, int timeout);
/* ARES_E... -> enum dns_status. */
int dns_status_of(int ares_status);
const char *dns_status_name(int status);   /* "OK", "NXDOMAIN", ... */
const char *dns_type_name(int qtype);      /* "MX", "A", ... */

/* The DNSBL query name for ip under zone: 2.0.0.127.zone, or 32 nibbles for
 * IPv6.  -1 if ip is not an address or the name does not fit. */
int dns_dnsbl_name(const char *ip, const char *zone, char *out, size_t len);

/* The cache, with explicit time (monotonic ms) so that tests control it.
 * put copies r (not if ttl is 0 or status is TEMPFAIL); get returns a
 * pointer into the cache, valid until the next put, or NULL. */
void dns_cache_put(int qtype, const char *name, const struct dns_result *r, uint64_t now_ms);
const struct dns_result *dns_cache_get(int qtype, const char *name, uint64_t now_ms);
void dns_cache_clear(void);
size_t dns_cache_size(void);

#endif
