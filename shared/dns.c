/* dns - asynchronous DNS on c-ares inside the event loop; see dns.h. */
#include "dns.h"

#include "event.h"
#include "log.h"
#include "punycode.h"
#include "str.h"

#include <ares.h>
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

enum { Q_MX, Q_ADDRS, Q_TXT, Q_DNSBL };

struct dns_query {
	int kind;
	int ipver;
	char name[DNS_NAME_MAX];      /* A-label form */
	dns_cb *cb;
	void *arg;
	int done;                     /* delivered or cancelled */
	int starting;                 /* inside dns_mx() etc.: defer delivery */
	int outstanding;              /* c-ares queries holding a pointer to us */
	int nsub, subdone[2], stage;
	struct dns_result sub[2];
	struct dns_result res;
	struct ev_timer deadline, defer;
	struct dns_query *prev, *next;
};

/* One c-ares query: its callback needs the lookup, the slot and the name
 * the chain started at (the cache key). */
struct leaf {
	struct dns_query *q;
	int slot, type, depth;
	char name[DNS_NAME_MAX];      /* asked for: orig, or a CNAME target */
	char orig[DNS_NAME_MAX];
};

static ares_channel channel;
static int inited;
static int timeout_s = 5;
static char servers_text[256];
static struct ev_timer ares_timer;
static struct dns_query *pending_head;
static size_t npending;

/* ---------------------------------------------------------------- texts */

const char *dns_status_name(int status)
{
	switch (status) {
	case DNS_OK: return "OK";
	case DNS_NXDOMAIN: return "NXDOMAIN";
	case DNS_NODATA: return "NODATA";
	case DNS_NULLMX: return "NULLMX";
	case DNS_TEMPFAIL: return "TEMPFAIL";
	case DNS_BADNAME: return "BADNAME";
	}
	return "?";
}

const char *dns_type_name(int qtype)
{
	switch (qtype) {
	case DNS_T_A: return "A";
	case DNS_T_AAAA: return "AAAA";
	case DNS_T_MX: return "MX";
	case DNS_T_TXT: return "TXT";
	case DNS_T_CNAME: return "CNAME";
	}
	return "?";
}

int dns_status_of(int st)
{
	switch (st) {
	case ARES_SUCCESS: return DNS_OK;
	case ARES_ENOTFOUND: return DNS_NXDOMAIN;
	case ARES_ENODATA: return DNS_NODATA;
	case ARES_EBADNAME: return DNS_BADNAME;
	}
	return DNS_TEMPFAIL;
}

void dns_explain(char *buf, size_t len, int st, int qtype, const char *name, const char *servers, int timeout)
{
	const char *srv = servers && *servers ? servers : "the resolver";

	switch (st) {
	case ARES_SUCCESS:
		str_copy(buf, "", len);
		break;
	case ARES_ENOTFOUND:
		str_fmt(buf, len, "NXDOMAIN for %s", name);
		break;
	case ARES_ENODATA:
		str_fmt(buf, len, "no %s record for %s", dns_type_name(qtype), name);
		break;
	case ARES_ESERVFAIL:
		str_fmt(buf, len, "SERVFAIL from %s", srv);
		break;
	case ARES_EREFUSED:
		str_fmt(buf, len, "REFUSED from %s", srv);
		break;
	case ARES_ETIMEOUT:
		str_fmt(buf, len, "timeout after %ds (%s)", timeout, srv);
		break;
	case ARES_ECONNREFUSED:
		str_fmt(buf, len, "connection refused by %s", srv);
		break;
	case ARES_EFORMERR:
	case ARES_EBADRESP:
		str_fmt(buf, len, "malformed answer from %s", srv);
		break;
	case ARES_EBADNAME:
		str_fmt(buf, len, "bad domain name %s", name);
		break;
	default:
		str_fmt(buf, len, "%s (%s)", ares_strerror(st), srv);
		break;
	}
}

/* ---------------------------------------------------------------- parsing */

static uint32_t get16(const unsigned char *p) { return (uint32_t)p[0] << 8 | p[1]; }
static uint32_t get32(const unsigned char *p) { return get16(p) << 16 | get16(p + 2); }

static uint32_t ttl_min(uint32_t a, uint32_t b) { return a < b ? a : b; }

/* Expand the name at p into out; *next gets the offset after it. */
static int expand(const unsigned char *p, const unsigned char *abuf, size_t alen, char *out, size_t outlen,
                  size_t *next)
{
	char *name;
	long enclen;

	if (ares_expand_name(p, abuf, (int)alen, &name, &enclen) != ARES_SUCCESS)
		return -1;
	int rc = str_copy(out, name, outlen);
	ares_free_string(name);
	*next = (size_t)(p - abuf) + (size_t)enclen;
	return rc == -1 ? -1 : 0;
}

static int malformed(struct dns_result *r, const char *servers)
{
	r->status = DNS_TEMPFAIL;
	r->nmx = r->naddr = 0;
	r->txt[0] = '\0';
	str_fmt(r->why, sizeof(r->why), "malformed answer from %s", servers && *servers ? servers : "the resolver");
	return -1;
}

int dns_parse_answer(int qtype, const char *qname, const unsigned char *abuf, size_t alen, const char *servers,
                     struct dns_result *r, char *cname, size_t cnlen)
{
	char owner[DNS_NAME_MAX], cur[DNS_NAME_MAX], tmp[DNS_NAME_MAX];
	uint32_t ttl = DNS_TTL_MAX, negttl = DNS_NEG_TTL;
	size_t off, txtlen = 0;
	int have = 0, chased = 0;
	const char *srv = servers && *servers ? servers : "the resolver";

	r->nmx = r->naddr = 0;
	r->txt[0] = '\0';
	r->why[0] = '\0';
	r->ttl = 0;
	if (cname && cnlen)
		cname[0] = '\0';
	if (r->name != qname)
		str_copy(r->name, qname, sizeof(r->name));
	str_copy(cur, qname, sizeof(cur));
	if (alen < HFIXEDSZ || alen > 65535)
		return malformed(r, servers);
	unsigned rcode = abuf[3] & 0x0f;
	uint32_t qd = get16(abuf + 4), an = get16(abuf + 6), ns = get16(abuf + 8);
	if (!(abuf[2] & 0x80))
		return malformed(r, servers);   /* not a response */
	switch (rcode) {
	case 0: case 3: break;
	case 2:
		r->status = DNS_TEMPFAIL;
		str_fmt(r->why, sizeof(r->why), "SERVFAIL from %s", srv);
		return 0;
	case 5:
		r->status = DNS_TEMPFAIL;
		str_fmt(r->why, sizeof(r->why), "REFUSED from %s", srv);
		return 0;
	default:
		r->status = DNS_TEMPFAIL;
		str_fmt(r->why, sizeof(r->why), "rcode %u from %s", rcode, srv);
		return 0;
	}
	off = HFIXEDSZ;
	for (uint32_t i = 0; i < qd; i++) {
		if (expand(abuf + off, abuf, alen, tmp, sizeof(tmp), &off) == -1 || off + 4 > alen)
			return malformed(r, servers);
		off += 4;
	}
	for (uint32_t i = 0; i < an + ns; i++) {
		if (expand(abuf + off, abuf, alen, owner, sizeof(owner), &off) == -1 || off + 10 > alen)
			return malformed(r, servers);
		uint32_t type = get16(abuf + off), class = get16(abuf + off + 2);
		uint32_t rttl = get32(abuf + off + 4), rdlen = get16(abuf + off + 8);
		const unsigned char *rd = abuf + off + 10;
		size_t rdoff = off + 10;
		off += 10 + rdlen;
		if (off > alen)
			return malformed(r, servers);
		if (rttl > 0x7fffffff)
			rttl = 0;   /* RFC 2181 8 */
		if (class != C_IN)
			continue;
		if (i >= an) {   /* authority: the SOA gives the negative TTL */
			if (type == DNS_T_SOA) {
				size_t p2;
				if (expand(rd, abuf, alen, tmp, sizeof(tmp), &p2) == -1 ||
				    expand(abuf + p2, abuf, alen, tmp, sizeof(tmp), &p2) == -1 || p2 + 20 > rdoff + rdlen)
					return malformed(r, servers);
				negttl = ttl_min(rttl, get32(abuf + p2 + 16));
			}
			continue;
		}
		if (strcasecmp(owner, cur) != 0)
			continue;   /* not on our chain: ignore */
		if (type == DNS_T_CNAME && qtype != DNS_T_CNAME) {
			size_t p2;
			if (++chased > DNS_CNAME_MAX || expand(rd, abuf, alen, cur, sizeof(cur), &p2) == -1)
				return malformed(r, servers);
			ttl = ttl_min(ttl, rttl);
			continue;
		}
		if (type != (uint32_t)qtype)
			continue;
		if (type == DNS_T_MX) {
			size_t p2;
			if (rdlen < 3)
				return malformed(r, servers);
			if (r->nmx >= DNS_MX_MAX)
				continue;
			struct dns_mx *mx = &r->mx[r->nmx];
			mx->pref = get16(rd);
			if (expand(rd + 2, abuf, alen, mx->host, sizeof(mx->host), &p2) == -1)
				return malformed(r, servers);
			mx->ttl = rttl;
			r->nmx++;
		} else if (type == DNS_T_A || type == DNS_T_AAAA) {
			if (rdlen != (type == DNS_T_A ? 4u : 16u))
				return malformed(r, servers);
			if (r->naddr >= DNS_ADDR_MAX)
				continue;
			struct dns_addr *a = &r->addr[r->naddr++];
			a->family = type == DNS_T_A ? AF_INET : AF_INET6;
			memcpy(&a->a, rd, rdlen);
			a->ttl = rttl;
			inet_ntop(a->family, &a->a, a->text, sizeof(a->text));
		} else if (type == DNS_T_TXT) {
			/* character-strings, joined; several records with "; " */
			if (txtlen > 0 && txtlen + 2 < sizeof(r->txt)) {
				memcpy(r->txt + txtlen, "; ", 2);
				txtlen += 2;
			}
			for (size_t k = 0; k < rdlen;) {
				size_t sl = rd[k];
				if (k + 1 + sl > rdlen)
					return malformed(r, servers);
				for (size_t c = 0; c < sl && txtlen + 1 < sizeof(r->txt); c++) {
					unsigned char ch = rd[k + 1 + c];
					r->txt[txtlen++] = (ch >= 0x20 && ch < 0x7f) ? (char)ch : '?';
				}
				k += 1 + sl;
			}
			r->txt[txtlen] = '\0';
		}
		ttl = ttl_min(ttl, rttl);
		have = 1;
	}
	if (have) {
		r->status = DNS_OK;
		r->ttl = ttl;
		return 0;
	}
	if (rcode == 3) {
		r->status = DNS_NXDOMAIN;
		str_fmt(r->why, sizeof(r->why), "NXDOMAIN for %s", strcasecmp(cur, qname) ? cur : qname);
	} else {
		r->status = DNS_NODATA;
		str_fmt(r->why, sizeof(r->why), "no %s record for %s", dns_type_name(qtype), qname);
		if (chased && cname && cnlen)
			str_copy(cname, cur, cnlen);
	}
	r->ttl = ttl_min(ttl, negttl);
	return 0;
}

void dns_mx_sort(struct dns_mx *mx, size_t n, uint32_t (*rnd)(uint32_t))
{
	/* Insertion sort on preference (n is small); then shuffle each run of
	 * equal preferences with Fisher-Yates. */
	for (size_t i = 1; i < n; i++) {
		struct dns_mx t = mx[i];
		size_t j = i;
		for (; j > 0 && mx[j - 1].pref > t.pref; j--)
			mx[j] = mx[j - 1];
		mx[j] = t;
	}
	for (size_t s = 0; s < n;) {
		size_t e = s + 1;
		while (e < n && mx[e].pref == mx[s].pref)
			e++;
		for (size_t i = e - 1; i > s; i--) {
			uint32_t k = rnd ? rnd((uint32_t)(i - s + 1)) : arc4random_uniform((uint32_t)(i - s + 1));
			size_t j = s + k;
			if (j != i) {
				struct dns_mx t = mx[i];
				mx[i] = mx[j];
				mx[j] = t;
			}
		}
		s = e;
	}
}

int dns_dnsbl_name(const char *ip, const char *zone, char *out, size_t len)
{
	unsigned char b[16];
	char tmp[DNS_NAME_MAX];
	size_t o = 0;

	if (inet_pton(AF_INET, ip, b) == 1) {
		if (str_fmt(tmp, sizeof(tmp), "%u.%u.%u.%u.", b[3], b[2], b[1], b[0]) == -1)
			return -1;
		o = strlen(tmp);
	} else if (inet_pton(AF_INET6, ip, b) == 1) {
		static const char hex[] = "0123456789abcdef";
		for (int i = 15; i >= 0; i--) {
			tmp[o++] = hex[b[i] & 15];
			tmp[o++] = '.';
			tmp[o++] = hex[b[i] >> 4];
			tmp[o++] = '.';
		}
		tmp[o] = '\0';
	} else {
		return -1;
	}
	if (zone[0] == '\0' || str_append(tmp, zone, sizeof(tmp)) == -1)
		return -1;
	size_t l = strlen(tmp);
	if (tmp[l - 1] == '.')
		tmp[--l] = '\0';
	if (l > PUNYCODE_NAME_MAX)
		return -1;
	return str_copy(out, tmp, len);
}

/* ---------------------------------------------------------------- cache */

struct centry {
	int type;
	char name[DNS_NAME_MAX];
	uint64_t expires;
	struct dns_result *r;
};

static struct centry *cache;
static size_t ncache;

void dns_cache_clear(void)
{
	for (size_t i = 0; i < ncache; i++)
		free(cache[i].r);
	free(cache);
	cache = NULL;
	ncache = 0;
}

size_t dns_cache_size(void) { return ncache; }

static void cache_drop(size_t i)
{
	free(cache[i].r);
	cache[i] = cache[--ncache];
}

const struct dns_result *dns_cache_get(int qtype, const char *name, uint64_t now_ms)
{
	for (size_t i = 0; i < ncache; i++) {
		if (cache[i].type != qtype || strcasecmp(cache[i].name, name) != 0)
			continue;
		if (cache[i].expires <= now_ms) {
			cache_drop(i);
			return NULL;
		}
		return cache[i].r;
	}
	return NULL;
}

void dns_cache_put(int qtype, const char *name, const struct dns_result *r, uint64_t now_ms)
{
	size_t i;
	uint32_t ttl = r->ttl > DNS_TTL_MAX ? DNS_TTL_MAX : r->ttl;

	if (ttl == 0 || r->status == DNS_TEMPFAIL || r->status == DNS_BADNAME)
		return;
	if (cache == NULL)
		cache = xcalloc(DNS_CACHE_MAX, sizeof(*cache));
	for (i = 0; i < ncache; i++)
		if (cache[i].type == qtype && strcasecmp(cache[i].name, name) == 0)
			break;
	if (i == ncache) {
		if (ncache == DNS_CACHE_MAX) {
			/* full: drop what expires first (expired entries first of all) */
			size_t victim = 0;
			for (size_t k = 1; k < ncache; k++)
				if (cache[k].expires < cache[victim].expires)
					victim = k;
			cache_drop(victim);
			i = ncache;
		}
		cache[i].r = xmalloc(sizeof(*r));
		ncache++;
	}
	cache[i].type = qtype;
	str_copy(cache[i].name, name, sizeof(cache[i].name));
	cache[i].expires = now_ms + (uint64_t)ttl * 1000;
	*cache[i].r = *r;
	cache[i].r->cached = 1;
}

/* ---------------------------------------------------------------- loop glue */

static void timer_update(void)
{
	struct timeval tv, *tvp;

	if (!inited)
		return;
	tvp = ares_timeout(channel, NULL, &tv);
	if (tvp == NULL)
		ev_timer_del(&ares_timer);
	else
		ev_timer_add(&ares_timer, (uint64_t)tvp->tv_sec * 1000 + (uint64_t)tvp->tv_usec / 1000 + 1);
}

static void on_fd(int fd, int events, void *arg)
{
	(void)arg;
	ares_process_fd(channel, events & EV_READ ? fd : ARES_SOCKET_BAD, events & EV_WRITE ? fd : ARES_SOCKET_BAD);
	timer_update();
}

static void on_ares_timer(void *arg)
{
	(void)arg;
	ares_process_fd(channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
	timer_update();
}

static void sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
	(void)data;
	if (!readable && !writable)
		ev_del(fd);
	else
		ev_add(fd, (readable ? EV_READ : 0) | (writable ? EV_WRITE : 0), on_fd, NULL);
}

int dns_ipver_parse(const char *s)
{
	if (strcmp(s, "any") == 0)
		return DNS_IP_ANY;
	if (strcmp(s, "ipv4") == 0)
		return DNS_IP_V4;
	if (strcmp(s, "ipv6") == 0)
		return DNS_IP_V6;
	return -1;
}

const char *dns_servers(void) { return servers_text; }

int dns_init(char *const *servers, size_t n, int timeout, char *err, size_t errlen)
{
	struct ares_options o;
	int st;

	if (inited)
		dns_shutdown();
	if ((st = ares_library_init(ARES_LIB_INIT_ALL)) != ARES_SUCCESS) {
		str_fmt(err, errlen, "c-ares: %s", ares_strerror(st));
		return -1;
	}
	if (ev_init() == -1) {
		str_copy(err, "event loop", errlen);
		return -1;
	}
	timeout_s = timeout > 0 ? timeout : 5;
	memset(&o, 0, sizeof(o));
	o.sock_state_cb = sock_state;
	/* c-ares doubles the per-try timeout each round: T/3 + 2T/3 = T; the
	 * per-lookup deadline (dns.timeout) cuts off whatever is left. */
	o.timeout = timeout_s * 1000 / 3 > 100 ? timeout_s * 1000 / 3 : 100;
	o.tries = 3;
	if ((st = ares_init_options(&channel, &o, ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES)) !=
	    ARES_SUCCESS) {
		str_fmt(err, errlen, "c-ares init: %s", ares_strerror(st));
		return -1;
	}
	if (n > 0) {
		char csv[1024] = "";
		for (size_t i = 0; i < n; i++)
			if ((i && str_append(csv, ",", sizeof(csv)) == -1) || str_append(csv, servers[i], sizeof(csv)) == -1) {
				str_copy(err, "dns.servers: list too long", errlen);
				ares_destroy(channel);
				return -1;
			}
		if ((st = ares_set_servers_ports_csv(channel, csv)) != ARES_SUCCESS) {
			str_fmt(err, errlen, "dns.servers \"%s\": %s", csv, ares_strerror(st));
			ares_destroy(channel);
			return -1;
		}
	}
	/* the servers in use, for messages */
	struct ares_addr_port_node *list = NULL;
	servers_text[0] = '\0';
	if (ares_get_servers_ports(channel, &list) == ARES_SUCCESS) {
		for (struct ares_addr_port_node *p = list; p; p = p->next) {
			char a[INET6_ADDRSTRLEN], one[80];
			inet_ntop(p->family, &p->addr, a, sizeof(a));
			int port = p->udp_port ? p->udp_port : 53;
			str_fmt(one, sizeof(one), p->family == AF_INET6 ? "[%s]:%d" : "%s:%d", a, port);
			if (servers_text[0])
				str_append(servers_text, ", ", sizeof(servers_text));
			str_append(servers_text, one, sizeof(servers_text));
		}
		ares_free_data(list);
	}
	ev_timer_init(&ares_timer, on_ares_timer, NULL);
	inited = 1;
	return 0;
}

static void q_unlink(struct dns_query *q)
{
	if (q->prev)
		q->prev->next = q->next;
	else if (pending_head == q)
		pending_head = q->next;
	else
		return;
	if (q->next)
		q->next->prev = q->prev;
	q->prev = q->next = NULL;
	npending--;
}

static void q_release(struct dns_query *q)
{
	if (q->done && q->outstanding == 0)
		free(q);
}

void dns_shutdown(void)
{
	if (!inited)
		return;
	for (struct dns_query *q = pending_head, *nx; q; q = nx) {
		nx = q->next;
		q->done = 1;
		ev_timer_del(&q->deadline);
		ev_timer_del(&q->defer);
		q_unlink(q);
		q_release(q);
	}
	ev_timer_del(&ares_timer);
	ares_destroy(channel);   /* leaf callbacks (ARES_EDESTRUCTION) free the rest */
	inited = 0;
	dns_cache_clear();
}

size_t dns_pending(void) { return npending; }

/* ---------------------------------------------------------------- lookups */

static void deliver(struct dns_query *q)
{
	if (q->done)
		return;
	if (q->starting) {
		ev_timer_add(&q->defer, 0);
		return;
	}
	q->done = 1;
	ev_timer_del(&q->deadline);
	ev_timer_del(&q->defer);
	q_unlink(q);
	q->cb(&q->res, q->arg);
	q_release(q);
}

static void on_defer(void *arg)
{
	struct dns_query *q = arg;
	q->starting = 0;
	deliver(q);
}

static void on_deadline(void *arg)
{
	struct dns_query *q = arg;
	q->res.status = DNS_TEMPFAIL;
	q->res.nmx = q->res.naddr = 0;
	q->res.txt[0] = '\0';
	str_copy(q->res.name, q->name, sizeof(q->res.name));
	str_fmt(q->res.why, sizeof(q->res.why), "timeout after %ds (%s)", timeout_s, servers_text);
	q->starting = 0;
	deliver(q);
}

static void lookup(struct dns_query *q, int slot, int type, const char *name, const char *orig, int depth);
static void complete(struct dns_query *q);

static void sub_done(struct dns_query *q, int slot)
{
	q->subdone[slot] = 1;
	for (int i = 0; i < q->nsub; i++)
		if (!q->subdone[i])
			return;
	complete(q);
}

static void on_answer(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
	struct leaf *l = arg;
	struct dns_query *q = l->q;
	char cname[DNS_NAME_MAX];

	(void)timeouts;
	q->outstanding--;
	if (q->done || status == ARES_EDESTRUCTION) {
		free(l);
		q_release(q);
		return;
	}
	struct dns_result *r = &q->sub[l->slot];
	memset(r, 0, sizeof(*r));
	str_copy(r->name, l->orig, sizeof(r->name));
	if (abuf != NULL && alen > 0 && status != ARES_ETIMEOUT && status != ARES_ECONNREFUSED) {
		dns_parse_answer(l->type, l->name, abuf, (size_t)alen, servers_text, r, cname, sizeof(cname));
		str_copy(r->name, l->orig, sizeof(r->name));   /* report on the name asked for */
	} else {
		r->status = dns_status_of(status);
		if (r->status == DNS_OK)
			r->status = DNS_TEMPFAIL;   /* success without an answer */
		dns_explain(r->why, sizeof(r->why), status, l->type, l->orig, servers_text, timeout_s);
		cname[0] = '\0';
	}
	if (r->status == DNS_NODATA && cname[0]) {
		if (l->depth + 1 >= DNS_CNAME_MAX) {
			r->status = DNS_TEMPFAIL;
			str_fmt(r->why, sizeof(r->why), "CNAME chain longer than %d at %s", DNS_CNAME_MAX, l->orig);
		} else {
			int slot = l->slot, type = l->type, depth = l->depth + 1;
			char orig[DNS_NAME_MAX];
			str_copy(orig, l->orig, sizeof(orig));
			free(l);
			lookup(q, slot, type, cname, orig, depth);   /* may free q */
			return;
		}
	}
	dns_cache_put(l->type, l->orig, r, ev_now_ms());
	int slot = l->slot;
	free(l);
	q->outstanding++;   /* keep q alive through sub_done */
	sub_done(q, slot);
	q->outstanding--;
	q_release(q);
}

static void lookup(struct dns_query *q, int slot, int type, const char *name, const char *orig, int depth)
{
	const struct dns_result *c = depth == 0 ? dns_cache_get(type, name, ev_now_ms()) : NULL;

	if (c != NULL) {
		q->sub[slot] = *c;
		q->outstanding++;
		sub_done(q, slot);
		q->outstanding--;
		q_release(q);
		return;
	}
	struct leaf *l = xcalloc(1, sizeof(*l));
	l->q = q;
	l->slot = slot;
	l->type = type;
	l->depth = depth;
	str_copy(l->name, name, sizeof(l->name));
	str_copy(l->orig, orig, sizeof(l->orig));
	q->outstanding++;
	ares_query(channel, name, C_IN, type, on_answer, l);
	timer_update();
}

static int in_loopback_net(const struct dns_addr *a)
{
	return a->family == AF_INET && (ntohl(a->a.v4.s_addr) >> 24) == 127;
}

static void complete(struct dns_query *q)
{
	struct dns_result *r = &q->res;

	switch (q->kind) {
	case Q_MX:
		*r = q->sub[0];
		if (r->status == DNS_OK) {
			/* RFC 7505: "0 ." alone is a null MX; beside real MX records it
			 * is meaningless, so drop it. */
			size_t o = 0;
			for (size_t i = 0; i < r->nmx; i++)
				if (r->mx[i].host[0] != '\0' && strcmp(r->mx[i].host, ".") != 0)
					r->mx[o++] = r->mx[i];
			if (o == 0) {
				r->status = DNS_NULLMX;
				str_fmt(r->why, sizeof(r->why), "null MX (RFC 7505) for %s", q->name);
			}
			r->nmx = o;
			dns_mx_sort(r->mx, r->nmx, NULL);
		}
		break;
	case Q_TXT:
		*r = q->sub[0];
		break;
	case Q_ADDRS:
		*r = q->sub[0];
		if (q->nsub == 2) {
			const struct dns_result *b = &q->sub[1];
			for (size_t i = 0; i < b->naddr && r->naddr < DNS_ADDR_MAX; i++)
				r->addr[r->naddr++] = b->addr[i];
			r->cached = r->cached && b->cached;
			if (r->naddr > 0) {
				r->status = DNS_OK;
				r->why[0] = '\0';
				r->ttl = q->sub[0].status == DNS_OK && b->status == DNS_OK ? ttl_min(r->ttl, b->ttl)
				         : q->sub[0].status == DNS_OK                     ? r->ttl
				                                                          : b->ttl;
			} else if (q->sub[0].status == DNS_TEMPFAIL || b->status == DNS_TEMPFAIL) {
				const struct dns_result *t = q->sub[0].status == DNS_TEMPFAIL ? &q->sub[0] : b;
				r->status = DNS_TEMPFAIL;
				str_copy(r->why, t->why, sizeof(r->why));
			} else if (q->sub[0].status == DNS_NXDOMAIN && b->status == DNS_NXDOMAIN) {
				r->status = DNS_NXDOMAIN;
			} else {
				r->status = DNS_NODATA;
				str_fmt(r->why, sizeof(r->why), "no AAAA or A record for %s", q->name);
			}
		}
		break;
	case Q_DNSBL:
		if (q->stage == 0) {
			*r = q->sub[0];
			if (r->status != DNS_OK)
				break;
			int listed = 0;
			for (size_t i = 0; i < r->naddr; i++) {
				if (!in_loopback_net(&r->addr[i]))
					continue;
				/* 127.255.255.x: the list refuses the query (e.g. via a
				 * public resolver): not an answer about this client. */
				if ((ntohl(r->addr[i].a.v4.s_addr) >> 8) == 0x7fffff) {
					r->status = DNS_TEMPFAIL;
					str_fmt(r->why, sizeof(r->why), "%s answered %s: query refused by the list",
					        q->name, r->addr[i].text);
					goto out;
				}
				listed = 1;
			}
			if (!listed) {
				r->status = DNS_NODATA;
				str_fmt(r->why, sizeof(r->why), "%s: answer outside 127.0.0.0/8 ignored", q->name);
				break;
			}
			q->stage = 1;
			q->subdone[1] = 0;
			lookup(q, 1, DNS_T_TXT, q->name, q->name, 0);
			return;
		}
		if (q->sub[1].status == DNS_OK)
			str_copy(r->txt, q->sub[1].txt, sizeof(r->txt));
		break;
	}
out:
	str_copy(r->name, q->name, sizeof(r->name));
	deliver(q);
}

static struct dns_query *start(int kind, const char *name, int ipver, dns_cb *cb, void *arg)
{
	char err[128];

	if (!inited)
		return NULL;
	struct dns_query *q = xcalloc(1, sizeof(*q));
	q->kind = kind;
	q->ipver = ipver;
	q->cb = cb;
	q->arg = arg;
	q->starting = 1;
	ev_timer_init(&q->deadline, on_deadline, q);
	ev_timer_init(&q->defer, on_defer, q);
	q->next = pending_head;
	if (pending_head)
		pending_head->prev = q;
	pending_head = q;
	npending++;

	if (punycode_domain_to_ascii(name, q->name, sizeof(q->name), err, sizeof(err)) == -1) {
		q->res.status = DNS_BADNAME;
		str_copy(q->res.name, name, sizeof(q->res.name));
		str_fmt(q->res.why, sizeof(q->res.why), "bad domain name %s: %s", log_q(name), err);
		deliver(q);
		q->starting = 0;
		return q;
	}
	ev_timer_add(&q->deadline, (uint64_t)timeout_s * 1000);
	switch (kind) {
	case Q_MX:
		q->nsub = 1;
		lookup(q, 0, DNS_T_MX, q->name, q->name, 0);
		break;
	case Q_TXT:
		q->nsub = 1;
		lookup(q, 0, DNS_T_TXT, q->name, q->name, 0);
		break;
	case Q_DNSBL:
		q->nsub = 1;
		lookup(q, 0, DNS_T_A, q->name, q->name, 0);
		break;
	case Q_ADDRS:
		if (ipver == DNS_IP_ANY) {
			q->nsub = 2;
			lookup(q, 0, DNS_T_AAAA, q->name, q->name, 0);
			if (!q->done)
				lookup(q, 1, DNS_T_A, q->name, q->name, 0);
		} else {
			q->nsub = 1;
			lookup(q, 0, ipver == DNS_IP_V6 ? DNS_T_AAAA : DNS_T_A, q->name, q->name, 0);
		}
		break;
	}
	q->starting = 0;   /* from now on, answers are delivered as they come */
	return q;
}

struct dns_query *dns_mx(const char *domain, dns_cb *cb, void *arg)
{
	return start(Q_MX, domain, DNS_IP_ANY, cb, arg);
}

struct dns_query *dns_addrs(const char *host, int ipver, dns_cb *cb, void *arg)
{
	return start(Q_ADDRS, host, ipver, cb, arg);
}

struct dns_query *dns_txt(const char *name, dns_cb *cb, void *arg)
{
	return start(Q_TXT, name, DNS_IP_ANY, cb, arg);
}

struct dns_query *dns_dnsbl(const char *ip, const char *zone, dns_cb *cb, void *arg)
{
	char qname[DNS_NAME_MAX];

	if (dns_dnsbl_name(ip, zone, qname, sizeof(qname)) == -1)
		qname[0] = '\0';   /* start() reports it as a bad name */
	return start(Q_DNSBL, qname, DNS_IP_ANY, cb, arg);
}

void dns_cancel(struct dns_query *q)
{
	if (q == NULL || q->done)
		return;
	q->done = 1;
	ev_timer_del(&q->deadline);
	ev_timer_del(&q->defer);
	q_unlink(q);
	q_release(q);
}
