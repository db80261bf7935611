/*
 * net - addresses and sockets: CIDR parsing and matching, sockaddr text,
 * and listening/connecting helpers that report errors into a caller buffer.
 * No allocation; everything is bounded by the structs below.
 */
#ifndef POSTERN_NET_H
#define POSTERN_NET_H

#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct cidr {
	int family;           /* AF_INET or AF_INET6 */
	uint8_t addr[16];
	int prefix;
};

/* "10.0.0.0/8", "::1/128", "192.0.2.1" (host).  -1 on syntax error. */
int cidr_parse(const char *s, struct cidr *out);
/* Does sa fall in c?  IPv4-mapped IPv6 addresses match IPv4 entries. */
int cidr_match(const struct cidr *c, const struct sockaddr *sa);

/* Numeric host of sa into buf ("127.0.0.1", "::1").  */
void net_ntop(const struct sockaddr *sa, char *buf, size_t len);
int net_port(const struct sockaddr *sa);

/* Parse a numeric address into ss; -1 if not numeric. */
int net_pton(const char *host, int port, struct sockaddr_storage *ss, socklen_t *slen);

int net_set_nonblock(int fd);
int net_set_cloexec(int fd);

/* Bind and listen on host:port (numeric host).  -1 with err filled. */
int net_listen(const char *host, int port, char *err, size_t errlen);

#endif
