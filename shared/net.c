#include "net.h"
#include "str.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

int cidr_parse(const char *s, struct cidr *out)
{
	char host[INET6_ADDRSTRLEN + 1];
	const char *slash = strchr(s, '/');
	size_t hl = slash ? (size_t)(slash - s) : strlen(s);
	uint64_t prefix;

	memset(out, 0, sizeof(*out));
	if (hl == 0 || hl >= sizeof(host))
		return -1;
	memcpy(host, s, hl);
	host[hl] = '\0';
	if (inet_pton(AF_INET, host, out->addr) == 1) {
		out->family = AF_INET;
		out->prefix = 32;
	} else if (inet_pton(AF_INET6, host, out->addr) == 1) {
		out->family = AF_INET6;
		out->prefix = 128;
	} else {
		return -1;
	}
	if (slash) {
		if (str_to_u64(slash + 1, 0, (uint64_t)out->prefix, &prefix) == -1)
			return -1;
		out->prefix = (int)prefix;
	}
	return 0;
}

static int prefix_eq(const uint8_t *a, const uint8_t *b, int bits)
{
	int bytes = bits / 8, rem = bits % 8;

	if (memcmp(a, b, (size_t)bytes) != 0)
		return 0;
	if (rem) {
		uint8_t mask = (uint8_t)(0xff << (8 - rem));
		if ((a[bytes] & mask) != (b[bytes] & mask))
			return 0;
	}
	return 1;
}

int cidr_match(const struct cidr *c, const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
		if (c->family != AF_INET)
			return 0;
		return prefix_eq(c->addr, (const uint8_t *)&in->sin_addr, c->prefix);
	}
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
		const uint8_t *a = (const uint8_t *)&in6->sin6_addr;
		if (c->family == AF_INET6)
			return prefix_eq(c->addr, a, c->prefix);
		if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr))
			return prefix_eq(c->addr, a + 12, c->prefix);
	}
	return 0;
}

void net_ntop(const struct sockaddr *sa, char *buf, size_t len)
{
	const void *a = NULL;

	if (sa->sa_family == AF_INET)
		a = &((const struct sockaddr_in *)sa)->sin_addr;
	else if (sa->sa_family == AF_INET6)
		a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
	if (a == NULL || inet_ntop(sa->sa_family, a, buf, (socklen_t)len) == NULL)
		str_copy(buf, "unknown", len);
}

int net_port(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)sa)->sin_port);
	if (sa->sa_family == AF_INET6)
		return ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
	return 0;
}

int net_pton(const char *host, int port, struct sockaddr_storage *ss, socklen_t *slen)
{
	memset(ss, 0, sizeof(*ss));
	struct sockaddr_in *in = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;

	if (inet_pton(AF_INET, host, &in->sin_addr) == 1) {
		in->sin_family = AF_INET;
		in->sin_port = htons((uint16_t)port);
		*slen = sizeof(*in);
		return 0;
	}
	if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons((uint16_t)port);
		*slen = sizeof(*in6);
		return 0;
	}
	return -1;
}

int net_set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);
	if (fl == -1)
		return -1;
	return fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

int net_set_cloexec(int fd)
{
	int fl = fcntl(fd, F_GETFD);
	if (fl == -1)
		return -1;
	return fcntl(fd, F_SETFD, fl | FD_CLOEXEC);
}

int net_listen(const char *host, int port, char *err, size_t errlen)
{
	struct sockaddr_storage ss;
	socklen_t slen;
	int fd, one = 1;

	if (net_pton(host, port, &ss, &slen) == -1) {
		str_fmt(err, errlen, "listen address %s is not a numeric IPv4/IPv6 address", host);
		return -1;
	}
	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd == -1) {
		str_fmt(err, errlen, "socket for %s:%d: %s", host, port, strerror(errno));
		return -1;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (ss.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&ss, slen) == -1) {
		int e = errno;
		str_fmt(err, errlen, "bind %s:%d: %s", host, port, strerror(e));
		close(fd);
		errno = e;
		return -1;
	}
	if (listen(fd, 1024) == -1) {
		str_fmt(err, errlen, "listen %s:%d: %s", host, port, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}
