/* Unit tests for shared/net.c: CIDR parsing and matching (IPv4, IPv6,
 * v4-mapped), sockaddr helpers and net_listen(). */
#include "harness.h"
#include "net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static void test_cidr_parse(void)
{
	static const struct {
		const char *in;
		int ok;
		int family;
		int prefix;
		const char *addr;   /* expected address bytes, as text */
	} cases[] = {
		{ "10.0.0.0/8", 0, AF_INET, 8, "10.0.0.0" },
		{ "127.0.0.0/8", 0, AF_INET, 8, "127.0.0.0" },
		{ "192.0.2.1", 0, AF_INET, 32, "192.0.2.1" },          /* host */
		{ "192.0.2.1/32", 0, AF_INET, 32, "192.0.2.1" },
		{ "0.0.0.0/0", 0, AF_INET, 0, "0.0.0.0" },
		{ "10.1.2.3/8", 0, AF_INET, 8, "10.1.2.3" },            /* host bits kept */
		{ "::1/128", 0, AF_INET6, 128, "::1" },
		{ "::1", 0, AF_INET6, 128, "::1" },
		{ "::/0", 0, AF_INET6, 0, "::" },
		{ "2001:db8::/32", 0, AF_INET6, 32, "2001:db8::" },
		{ "::ffff:10.0.0.0/104", 0, AF_INET6, 104, "::ffff:10.0.0.0" },
		{ "0000:0000:0000:0000:0000:ffff:255.255.255.255/128", 0, AF_INET6, 128,
		  "::ffff:255.255.255.255" },                           /* longest text form */
		{ "", -1, 0, 0, NULL },
		{ "/8", -1, 0, 0, NULL },
		{ "10.0.0.0/", -1, 0, 0, NULL },
		{ "10.0.0.0/33", -1, 0, 0, NULL },
		{ "::1/129", -1, 0, 0, NULL },
		{ "10.0.0.0/-1", -1, 0, 0, NULL },
		{ "10.0.0.0/+8", -1, 0, 0, NULL },
		{ "10.0.0.0/ 8", -1, 0, 0, NULL },
		{ "10.0.0.0 /8", -1, 0, 0, NULL },
		{ " 10.0.0.0/8", -1, 0, 0, NULL },
		{ "10.0.0.0/8 ", -1, 0, 0, NULL },
		{ "10.0.0.0/8x", -1, 0, 0, NULL },
		{ "10.0.0.0/8/8", -1, 0, 0, NULL },
		{ "10.0.0.0/99999999999999999999999", -1, 0, 0, NULL },
		{ "10.0.0.0\n/8", -1, 0, 0, NULL },
		{ "10.0.0", -1, 0, 0, NULL },
		{ "256.0.0.1", -1, 0, 0, NULL },
		{ "1.2.3.4.5", -1, 0, 0, NULL },
		{ "localhost", -1, 0, 0, NULL },
		{ "::1::2", -1, 0, 0, NULL },
		{ "fe80::1%lo", -1, 0, 0, NULL },                      /* no scope ids */
		{ "[::1]/128", -1, 0, 0, NULL },
		{ "0000:0000:0000:0000:0000:ffff:255.255.255.255x/128", -1, 0, 0, NULL },
		{ "1111111111111111111111111111111111111111111111111111111111111111111111111/8", -1, 0,
		  0, NULL },                                            /* longer than any address */
	};

	for (size_t i = 0; i < NELEM(cases); i++) {
		struct cidr c;
		ROW("%zu: \"%s\"", i, cases[i].in);
		memset(&c, 0xa5, sizeof(c));
		CHECK_EQ_INT(cidr_parse(cases[i].in, &c), cases[i].ok);
		if (cases[i].ok != 0)
			continue;
		uint8_t want[16] = { 0 };
		CHECK_EQ_INT(inet_pton(cases[i].family, cases[i].addr, want), 1);
		CHECK_EQ_INT(c.family, cases[i].family);
		CHECK_EQ_INT(c.prefix, cases[i].prefix);
		CHECK_MEM(c.addr, cases[i].family == AF_INET ? 4 : 16, want,
		          cases[i].family == AF_INET ? 4 : 16);
	}
}

static void sa_of(const char *ip, struct sockaddr_storage *ss)
{
	socklen_t sl;
	if (net_pton(ip, 25, ss, &sl) == -1) {
		memset(ss, 0, sizeof(*ss));
		ss->ss_family = AF_UNSPEC;
	}
}

static void test_cidr_match(void)
{
	static const struct {
		const char *net, *ip;
		int want;
	} cases[] = {
		{ "127.0.0.0/8", "127.0.0.1", 1 },
		{ "127.0.0.0/8", "127.255.255.255", 1 },
		{ "127.0.0.0/8", "128.0.0.1", 0 },
		{ "127.0.0.0/8", "126.255.255.255", 0 },
		{ "127.0.0.0/8", "::ffff:127.0.0.1", 1 },      /* v4-mapped matches v4 entry */
		{ "127.0.0.0/8", "::ffff:128.0.0.1", 0 },
		{ "127.0.0.0/8", "::127.0.0.1", 0 },           /* v4-compatible is not mapped */
		{ "127.0.0.0/8", "::1", 0 },
		{ "127.0.0.0/8", "7f00::1", 0 },               /* same first byte, not mapped */
		{ "10.1.2.3", "10.1.2.3", 1 },
		{ "10.1.2.3", "10.1.2.4", 0 },
		{ "10.1.2.3/8", "10.200.0.1", 1 },             /* host bits ignored */
		{ "192.168.0.0/23", "192.168.1.255", 1 },      /* partial byte */
		{ "192.168.0.0/23", "192.168.2.0", 0 },
		{ "192.168.0.0/23", "192.167.255.255", 0 },
		{ "192.168.0.128/25", "192.168.0.127", 0 },
		{ "192.168.0.128/25", "192.168.0.200", 1 },
		{ "0.0.0.0/0", "1.2.3.4", 1 },
		{ "0.0.0.0/0", "::ffff:1.2.3.4", 1 },
		{ "0.0.0.0/0", "::1", 0 },
		{ "::/0", "::1", 1 },
		{ "::/0", "2001:db8::1", 1 },
		{ "::/0", "1.2.3.4", 0 },                      /* v6 entry never matches AF_INET */
		{ "::1/128", "::1", 1 },
		{ "::1/128", "::2", 0 },
		{ "::1/128", "127.0.0.1", 0 },
		{ "::1/128", "::ffff:127.0.0.1", 0 },
		{ "2001:db8::/32", "2001:db8:ffff::1", 1 },
		{ "2001:db8::/32", "2001:db9::1", 0 },
		{ "2001:db8::/33", "2001:db8:7fff::1", 1 },
		{ "2001:db8::/33", "2001:db8:8000::1", 0 },
		{ "2001:db8::1/127", "2001:db8::", 1 },
		{ "2001:db8::1/127", "2001:db8::2", 0 },
		{ "::ffff:10.0.0.0/104", "::ffff:10.9.9.9", 1 },
		{ "::ffff:10.0.0.0/104", "::ffff:11.0.0.1", 0 },
		{ "::ffff:10.0.0.0/104", "10.9.9.9", 0 },      /* only the documented direction */
		{ "10.0.0.0/8", "not-an-address", 0 },          /* AF_UNSPEC sockaddr */
	};

	for (size_t i = 0; i < NELEM(cases); i++) {
		struct cidr c;
		struct sockaddr_storage ss;
		ROW("%zu: %s in %s", i, cases[i].ip, cases[i].net);
		CHECK_EQ_INT(cidr_parse(cases[i].net, &c), 0);
		sa_of(cases[i].ip, &ss);
		CHECK_EQ_INT(cidr_match(&c, (struct sockaddr *)&ss), cases[i].want);
	}
	ROWS_END();
	/* A unix-domain peer (the sendmail pickup, local clients) never matches. */
	struct cidr all;
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	CHECK_EQ_INT(cidr_parse("0.0.0.0/0", &all), 0);
	CHECK_EQ_INT(cidr_match(&all, (struct sockaddr *)&sun), 0);
	CHECK_EQ_INT(cidr_parse("::/0", &all), 0);
	CHECK_EQ_INT(cidr_match(&all, (struct sockaddr *)&sun), 0);
}

static void test_pton_ntop(void)
{
	static const struct {
		const char *in;
		int port;
		int ok;
		int family;
		const char *out;
	} cases[] = {
		{ "127.0.0.1", 25, 0, AF_INET, "127.0.0.1" },
		{ "::1", 587, 0, AF_INET6, "::1" },
		{ "2001:DB8:0:0::1", 65535, 0, AF_INET6, "2001:db8::1" },
		{ "::ffff:192.0.2.1", 0, 0, AF_INET6, "::ffff:192.0.2.1" },
		{ "localhost", 25, -1, 0, NULL },
		{ "", 25, -1, 0, NULL },
		{ "1.2.3.4 ", 25, -1, 0, NULL },
		{ "[::1]", 25, -1, 0, NULL },
	};

	for (size_t i = 0; i < NELEM(cases); i++) {
		struct sockaddr_storage ss;
		socklen_t sl = 0;
		char txt[INET6_ADDRSTRLEN];
		ROW("%zu: %s", i, cases[i].in);
		CHECK_EQ_INT(net_pton(cases[i].in, cases[i].port, &ss, &sl), cases[i].ok);
		if (cases[i].ok != 0)
			continue;
		CHECK_EQ_INT(ss.ss_family, cases[i].family);
		CHECK_EQ_INT(sl, cases[i].family == AF_INET ? sizeof(struct sockaddr_in)
		                                            : sizeof(struct sockaddr_in6));
		CHECK_EQ_INT(net_port((struct sockaddr *)&ss), cases[i].port);
		net_ntop((struct sockaddr *)&ss, txt, sizeof(txt));
		CHECK_STR(txt, cases[i].out);
	}
	ROWS_END();
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	char txt[64];
	net_ntop((struct sockaddr *)&sun, txt, sizeof(txt));
	CHECK_STR(txt, "unknown");
	CHECK_EQ_INT(net_port((struct sockaddr *)&sun), 0);
	/* Too small for the address: still a terminated string, no overflow. */
	struct sockaddr_storage ss;
	socklen_t sl;
	char small[5];
	memset(small, 'Z', sizeof(small));
	CHECK_EQ_INT(net_pton("2001:db8::1234", 1, &ss, &sl), 0);
	net_ntop((struct sockaddr *)&ss, small, 4);
	CHECK(memchr(small, '\0', 4) != NULL);
	CHECK_EQ_INT(small[4], 'Z');
}

static void test_fd_flags(void)
{
	int p[2];

	CHECK_EQ_INT(pipe(p), 0);
	CHECK_EQ_INT(fcntl(p[0], F_GETFL) & O_NONBLOCK, 0);
	CHECK_EQ_INT(net_set_nonblock(p[0]), 0);
	CHECK(fcntl(p[0], F_GETFL) & O_NONBLOCK);
	CHECK_EQ_INT(net_set_cloexec(p[1]), 0);
	CHECK(fcntl(p[1], F_GETFD) & FD_CLOEXEC);
	close(p[0]);
	close(p[1]);
	CHECK_EQ_INT(net_set_nonblock(p[0]), -1);
	CHECK_EQ_INT(net_set_cloexec(p[0]), -1);
	CHECK_EQ_INT(net_set_nonblock(-1), -1);
}

static void test_listen(void)
{
	char err[256] = "";
	struct sockaddr_in sin;
	socklen_t sl = sizeof(sin);
	int fd, fd2;

	fd = net_listen("127.0.0.1", 0, err, sizeof(err));
	CHECK(fd >= 0);
	if (fd < 0)
		return;
	CHECK_EQ_INT(getsockname(fd, (struct sockaddr *)&sin, &sl), 0);
	CHECK(ntohs(sin.sin_port) != 0);
	CHECK(fcntl(fd, F_GETFL) & O_NONBLOCK);
	CHECK(fcntl(fd, F_GETFD) & FD_CLOEXEC);

	/* The port is taken: -1 and the reason names host:port. */
	char want[64];
	snprintf(want, sizeof(want), "bind 127.0.0.1:%d: ", ntohs(sin.sin_port));
	fd2 = net_listen("127.0.0.1", ntohs(sin.sin_port), err, sizeof(err));
	CHECK_EQ_INT(fd2, -1);
	CHECK_CONTAINS(err, want);
	CHECK_CONTAINS(err, strerror(EADDRINUSE));
	close(fd);

	CHECK_EQ_INT(net_listen("localhost", 25, err, sizeof(err)), -1);
	CHECK_STR(err, "listen address localhost is not a numeric IPv4/IPv6 address");
	CHECK_EQ_INT(net_listen("", 25, err, sizeof(err)), -1);
	CHECK_EQ_INT(net_listen("192.0.2.1", 0, err, sizeof(err)), -1);   /* not ours */
	CHECK_CONTAINS(err, "bind 192.0.2.1:0: ");
	/* A tiny error buffer is still terminated. */
	char tiny[8];
	CHECK_EQ_INT(net_listen("nonsense", 1, tiny, sizeof(tiny)), -1);
	CHECK(memchr(tiny, '\0', sizeof(tiny)) != NULL);

	/* IPv6 listeners are v6-only (when the host has IPv6 at all). */
	fd = net_listen("::1", 0, err, sizeof(err));
	if (fd >= 0) {
		int v = 0;
		socklen_t vl = sizeof(v);
		CHECK_EQ_INT(getsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v, &vl), 0);
		CHECK_EQ_INT(v, 1);
		close(fd);
	} else {
		CHECK_CONTAINS(err, "::1:0: ");
	}
}

int main(int argc, char **argv)
{
	h_init(argc, argv);
	RUN(test_cidr_parse);
	RUN(test_cidr_match);
	RUN(test_pton_ntop);
	RUN(test_fd_flags);
	RUN(test_listen);
	return h_done();
}
