/* Unit tests for shared/addr.c: RFC 5321 paths and mailboxes, the length
 * limits, SMTPUTF8, and hostile bytes (control, CR, LF, NUL). */
#include "addr.h"
#include "harness.h"

#include <stdlib.h>
#include <string.h>

#define ALL ((size_t)-1)     /* end: just past the input */
#define L(s) s, sizeof(s) - 1  /* a literal with NUL bytes and its length */
#define N ADDR_NULL_OK
#define U ADDR_UTF8
#define P ADDR_POSTMASTER_OK
#define B ADDR_NO_BRACKETS_OK

struct pcase {
	const char *in;
	size_t len;          /* 0: strlen(in); set for inputs with NUL bytes */
	int flags;
	int ok;
	const char *text;    /* ok: expected text */
	size_t end;          /* ok: expected *end (ALL: len) */
	const char *why;     /* failure: expected reason (substring), or NULL */
};

static const struct pcase paths[] = {
	/* plain */
	{ "<a@b.example>", 0, 0, 0, "a@b.example", ALL, NULL },
	{ "<A.B@Example.COM>", 0, 0, 0, "A.B@example.com", ALL, NULL },   /* domain folded, local kept */
	{ "<a+tag@b.example>", 0, 0, 0, "a+tag@b.example", ALL, NULL },
	{ "<!#$%&'*+-/=?^_`{|}~@b.example>", 0, 0, 0, "!#$%&'*+-/=?^_`{|}~@b.example", ALL, NULL },
	{ "<a@123.example>", 0, 0, 0, "a@123.example", ALL, NULL },
	{ "<a@b--c.example>", 0, 0, 0, "a@b--c.example", ALL, NULL },
	{ "<a@xn--bcher-kva.example>", 0, 0, 0, "a@xn--bcher-kva.example", ALL, NULL },
	{ "<a@localhost>", 0, 0, 0, "a@localhost", ALL, NULL },
	/* ESMTP parameters may follow: *end is just past '>' */
	{ "<a@b.example> SIZE=100", 0, 0, 0, "a@b.example", 13, NULL },
	{ "<a@b.example> BODY=8BITMIME SMTPUTF8", 0, 0, 0, "a@b.example", 13, NULL },
	{ "<a@b.example>>", 0, 0, 0, "a@b.example", 13, NULL },          /* rest is the caller's */
	/* quoted local parts */
	{ "<\"a b\"@x.example>", 0, 0, 0, "\"a b\"@x.example", ALL, NULL },
	{ "<\"a\\\"b\"@x.example>", 0, 0, 0, "\"a\\\"b\"@x.example", ALL, NULL },
	{ "<\"a>b\"@x.example>", 0, 0, 0, "\"a>b\"@x.example", ALL, NULL }, /* '>' inside quotes */
	{ "<\"a\\\\\"@x.example>", 0, 0, 0, "\"a\\\\\"@x.example", ALL, NULL },
	{ "<\"a@b\"@x.example>", 0, 0, 0, "\"a@b\"@x.example", ALL, NULL },
	{ "<\"\"@x.example>", 0, 0, 0, "\"\"@x.example", ALL, NULL },     /* empty Quoted-string */
	/* source routes: accepted, route dropped */
	{ "<@a.example,@b.example:u@c.example>", 0, 0, 0, "u@c.example", ALL, NULL },
	{ "<@a.example:u@c.example>", 0, 0, 0, "u@c.example", ALL, NULL },
	{ "<@a.example,@b.example:u@c.example> SIZE=1", 0, 0, 0, "u@c.example", 35, NULL },
	{ "<@a.example,u@c.example>", 0, 0, -1, NULL, 0, "invalid source route" },
	{ "<@:u@c.example>", 0, 0, -1, NULL, 0, "invalid source route" },
	{ "<@a..example:u@c.example>", 0, 0, -1, NULL, 0, "invalid source route" },
	{ "<@a.example,@:u@c.example>", 0, 0, -1, NULL, 0, "invalid source route" },
	{ "<@a.example u@c.example>", 0, 0, -1, NULL, 0, "invalid source route" },
	{ "<@a.example:>", 0, 0, -1, NULL, 0, NULL },
	{ "<@b.example>", 0, 0, -1, NULL, 0, "invalid source route" },
	/* address literals */
	{ "<u@[127.0.0.1]>", 0, 0, 0, "u@[127.0.0.1]", ALL, NULL },
	{ "<u@[IPv6:::1]>", 0, 0, 0, "u@[IPv6:::1]", ALL, NULL },
	{ "<u@[ipv6:2001:DB8::1]>", 0, 0, 0, "u@[ipv6:2001:DB8::1]", ALL, NULL }, /* kept as written */
	{ "<u@[IPv6:::ffff:192.0.2.1]>", 0, 0, 0, "u@[IPv6:::ffff:192.0.2.1]", ALL, NULL },
	{ "<u@[300.0.0.1]>", 0, 0, -1, NULL, 0, "invalid address literal" },
	{ "<u@[::1]>", 0, 0, -1, NULL, 0, "invalid address literal" },     /* needs the IPv6: tag */
	{ "<u@[IPv6:127.0.0.1]>", 0, 0, -1, NULL, 0, "invalid address literal" },
	{ "<u@[IPv6:::1%lo]>", 0, 0, -1, NULL, 0, "invalid address literal" },
	{ "<u@[]>", 0, 0, -1, NULL, 0, "invalid address literal" },
	{ "<u@[127.0.0.1>", 0, 0, -1, NULL, 0, "invalid address literal" },
	{ "<u@[127.0.0.1]x>", 0, 0, -1, NULL, 0, "invalid address literal" },
	{ "<u@[ 127.0.0.1]>", 0, 0, -1, NULL, 0, "invalid address literal" },
	{ "<u@[127.0.0.1 ]>", 0, 0, -1, NULL, 0, "invalid address literal" },
	{ "<u@[x-tag:stuff]>", 0, 0, -1, NULL, 0, "invalid address literal" },  /* general literal */
	{ "<u@127.0.0.1]>", 0, 0, -1, NULL, 0, "invalid domain" },
	{ L("<u@[127.0.0.1\0]>"), 0, -1, NULL, 0, NULL },                 /* NUL inside a literal */
	{ L("<u@[IPv6:::1\0\r\nDATA]>"), 0, -1, NULL, 0, NULL },
	{ "<u@[127.0.0.1\r\n]>", 0, 0, -1, NULL, 0, NULL },
	/* null path */
	{ "<>", 0, N, 0, "", 2, NULL },
	{ "<> SIZE=10", 0, N, 0, "", 2, NULL },
	{ "<>", 0, 0, -1, NULL, 0, "null address not allowed here" },
	{ "<>", 0, P | U, -1, NULL, 0, "null address not allowed here" },
	/* postmaster */
	{ "<postmaster>", 0, P, 0, "postmaster", ALL, NULL },
	{ "<PostMaster>", 0, P, 0, "PostMaster", ALL, NULL },
	{ "<postmaster>", 0, 0, -1, NULL, 0, "missing @domain" },
	{ "<postmaster>", 0, N | U, -1, NULL, 0, "missing @domain" },
	{ "<postmistress>", 0, P, -1, NULL, 0, "missing @domain" },
	{ "<\"postmaster\">", 0, P, -1, NULL, 0, "missing @domain" },
	{ "<postmaster@b.example>", 0, 0, 0, "postmaster@b.example", ALL, NULL },
	/* brackets */
	{ "", 0, 0, -1, NULL, 0, "address must be enclosed in <>" },
	{ "a@b.example", 0, 0, -1, NULL, 0, "address must be enclosed in <>" },
	{ "a@b.example>", 0, 0, -1, NULL, 0, "address must be enclosed in <>" },
	{ " <a@b.example>", 0, 0, -1, NULL, 0, "address must be enclosed in <>" },
	{ "<a@b.example", 0, 0, -1, NULL, 0, "missing closing >" },
	{ "<", 0, N, -1, NULL, 0, "missing closing >" },
	{ "<\"a>@b.example>", 0, 0, -1, NULL, 0, "missing closing >" },    /* unterminated quote */
	{ "<<a@b.example>>", 0, 0, -1, NULL, 0, "invalid character in local part" },
	{ "<a<b@c.example>", 0, 0, -1, NULL, 0, "invalid character in local part" },
	{ "a@b.example SIZE=1", 0, B, 0, "a@b.example", 11, NULL },
	{ "a@b.example", 0, B, 0, "a@b.example", ALL, NULL },
	{ "<a@b.example>", 0, B, 0, "a@b.example", ALL, NULL },
	{ "a@b.example>", 0, B, -1, NULL, 0, "invalid domain" },
	/* structure */
	{ "<a>", 0, 0, -1, NULL, 0, "missing @domain" },
	{ "<a@>", 0, 0, -1, NULL, 0, "empty domain" },
	{ "<@>", 0, 0, -1, NULL, 0, NULL },
	{ "<a@b@c.example>", 0, 0, -1, NULL, 0, "invalid domain" },
	{ "<@b.example:>", 0, 0, -1, NULL, 0, NULL },
	{ "<.a@b.example>", 0, 0, -1, NULL, 0, "empty atom in local part" },
	{ "<a.@b.example>", 0, 0, -1, NULL, 0, "local part ends with a dot" },
	{ "<a..b@b.example>", 0, 0, -1, NULL, 0, "empty atom in local part" },
	{ "<a b@c.example>", 0, 0, -1, NULL, 0, "invalid character in local part" },
	{ "<a@.b.example>", 0, 0, -1, NULL, 0, "invalid domain" },
	{ "<a@b.example.>", 0, 0, -1, NULL, 0, "invalid domain" },           /* trailing dot */
	{ "<a@b..example>", 0, 0, -1, NULL, 0, "invalid domain" },           /* double dot */
	{ "<a@-b.example>", 0, 0, -1, NULL, 0, "invalid domain" },           /* leading hyphen */
	{ "<a@b.-example>", 0, 0, -1, NULL, 0, "invalid domain" },
	{ "<a@b-.example>", 0, 0, -1, NULL, 0, "invalid domain" },           /* trailing hyphen */
	{ "<a@b.example->", 0, 0, -1, NULL, 0, "invalid domain" },
	{ "<a@b_c.example>", 0, 0, -1, NULL, 0, "invalid domain" },
	{ "<a@b.example >", 0, 0, -1, NULL, 0, "invalid domain" },
	{ "< a@b.example>", 0, 0, -1, NULL, 0, "invalid character in local part" },
	/* control bytes, CR, LF, NUL, DEL */
	{ "<a\x01@b.example>", 0, 0, -1, NULL, 0, "invalid character in local part" },
	{ "<a\x7f@b.example>", 0, 0, -1, NULL, 0, "invalid character in local part" },
	{ "<a\t@b.example>", 0, 0, -1, NULL, 0, "invalid character in local part" },
	{ "<a@b\x01.example>", 0, 0, -1, NULL, 0, "invalid domain" },
	{ "<a\r@b.example>", 0, 0, -1, NULL, 0, NULL },
	{ "<a\n@b.example>", 0, 0, -1, NULL, 0, NULL },
	{ "<a@b.example\r\n>", 0, 0, -1, NULL, 0, "invalid domain" },
	{ "<a@b.example\r\nRCPT TO:<c@d.example>", 0, 0, -1, NULL, 0, NULL },
	{ L("<a\0b@c.example>"), 0, -1, NULL, 0, "invalid character in local part" },
	{ L("<ab@c\0.example>"), 0, -1, NULL, 0, "invalid domain" },
	{ L("<\"a\0b\"@c.example>"), 0, -1, NULL, 0, "invalid character in local part" },
	{ "<\"a\x01\"@c.example>", 0, 0, -1, NULL, 0, "invalid character in local part" },
	{ "<\"a\r\n\"@c.example>", 0, 0, -1, NULL, 0, "invalid character in local part" },
	{ "<\"a\\\x01\"@c.example>", 0, 0, -1, NULL, 0, "bad quoted-pair in local part" },
	{ "<\"a\\\n\"@c.example>", 0, 0, -1, NULL, 0, "bad quoted-pair in local part" },
	{ L("<\"a\\\0\"@c.example>"), 0, -1, NULL, 0, "bad quoted-pair in local part" },
	{ "<\"ab\"c@d.example>", 0, 0, -1, NULL, 0, "missing @domain" },
	{ L("<a@b.example\0>"), 0, -1, NULL, 0, "invalid domain" },
	{ L("<\0>"), N, -1, NULL, 0, NULL },
	/* SMTPUTF8 */
	{ "<j\xc3\xb6rg@b\xc3\xbc" "cher.example>", 0, U, 0, "j\xc3\xb6rg@b\xc3\xbc" "cher.example", ALL, NULL },
	{ "<\xc3\xa9@b.example>", 0, U, 0, "\xc3\xa9@b.example", ALL, NULL },
	{ "<\"\xc3\xa9 x\"@b.example>", 0, U, 0, "\"\xc3\xa9 x\"@b.example", ALL, NULL },
	{ "<a@\xe4\xbe\x8b.example>", 0, U, 0, "a@\xe4\xbe\x8b.example", ALL, NULL },
	{ "<\xf0\x9f\x93\xa7@b.example>", 0, U, 0, "\xf0\x9f\x93\xa7@b.example", ALL, NULL },
	{ "<\xc3\xa9@b.example>", 0, 0, -1, NULL, 0, "non-ASCII local part needs SMTPUTF8" },
	{ "<a@b\xc3\xbc.example>", 0, 0, -1, NULL, 0, "invalid domain" },
	{ "<\"\xc3\xa9\"@b.example>", 0, 0, -1, NULL, 0, "invalid character in local part" },
	{ "<\xc3@b.example>", 0, U, -1, NULL, 0, "invalid UTF-8 in local part" },      /* truncated */
	{ "<\xc3>", 0, U, -1, NULL, 0, NULL },
	{ "<\xc0\xaf@b.example>", 0, U, -1, NULL, 0, "invalid UTF-8 in local part" },  /* overlong */
	{ "<\xe0\x80\xaf@b.example>", 0, U, -1, NULL, 0, "invalid UTF-8 in local part" },
	{ "<\xed\xa0\x80@b.example>", 0, U, -1, NULL, 0, "invalid UTF-8 in local part" }, /* surrogate */
	{ "<\xf4\x90\x80\x80@b.example>", 0, U, -1, NULL, 0, "invalid UTF-8 in local part" },
	{ "<\xf5\x80\x80\x80@b.example>", 0, U, -1, NULL, 0, "invalid UTF-8 in local part" },
	{ "<\x80@b.example>", 0, U, -1, NULL, 0, "invalid UTF-8 in local part" },      /* lone cont. */
	{ "<\xff@b.example>", 0, U, -1, NULL, 0, "invalid UTF-8 in local part" },
	{ "<\"\xc3\"@b.example>", 0, U, -1, NULL, 0, "invalid UTF-8 in local part" },
	{ "<a@b\xff.example>", 0, U, -1, NULL, 0, "invalid domain" },
	{ "<a@\xe2\x82.example>", 0, U, -1, NULL, 0, "invalid domain" },
	{ "<a@\xc0\x80.example>", 0, U, -1, NULL, 0, "invalid domain" },
	{ "<a@b.example\xc3>", 0, U, -1, NULL, 0, "invalid domain" },
	{ "<@\xc3\xbc.example:a@b.example>", 0, U, 0, "a@b.example", ALL, NULL },
	{ "<@\xc3\xbc.example:a@b.example>", 0, 0, -1, NULL, 0, "invalid source route" },
};

static void check_path(const struct pcase *c, size_t len)
{
	struct addr a;
	const char *why = NULL;
	size_t end = 12345;
	int r;

	memset(&a, 0x5a, sizeof(a));
	r = addr_parse_path(c->in, len, c->flags, &a, &end, &why);
	CHECK_EQ_INT(r, c->ok);
	if (r != c->ok)
		printf("     why=%s text=%s\n", why ? why : "(null)", r == 0 ? a.text : "-");
	if (c->ok == 0 && r == 0) {
		CHECK_STR(a.text, c->text);
		CHECK_EQ_U64(end, c->end == ALL ? len : c->end);
		CHECK_EQ_INT(a.is_null, c->text[0] == '\0');
		/* The parsed text never carries a byte that could break a line. */
		for (const char *p = a.text; *p; p++)
			CHECK((unsigned char)*p >= 0x20 && *p != 0x7f);
		CHECK(strlen(a.text) <= ADDR_PATH_MAX - 2);
	}
	if (c->ok != 0) {
		CHECK(why != NULL && why[0] != '\0');
		if (c->why != NULL && why != NULL)
			CHECK_STR(why, c->why);
	}
}

static void test_paths(void)
{
	for (size_t i = 0; i < NELEM(paths); i++) {
		const struct pcase *c = &paths[i];
		ROW("%zu: %s", i, c->in);
		check_path(c, c->len ? c->len : strlen(c->in));
	}
}

/* Field details that the text alone does not show. */
static void test_fields(void)
{
	struct addr a;
	const char *why;
	size_t end;
	const char *s;

	s = "<\"a b\"@X.Example>";
	CHECK_EQ_INT(addr_parse_path(s, strlen(s), 0, &a, &end, &why), 0);
	CHECK_STR(a.local, "\"a b\"");
	CHECK_STR(a.domain, "x.example");
	CHECK_EQ_INT(a.is_quoted, 1);
	CHECK_EQ_INT(a.is_literal, 0);
	CHECK_EQ_INT(a.has_utf8, 0);
	CHECK_EQ_INT(a.is_null, 0);

	s = "<u@[IPv6:::1]>";
	CHECK_EQ_INT(addr_parse_path(s, strlen(s), 0, &a, &end, &why), 0);
	CHECK_STR(a.local, "u");
	CHECK_STR(a.domain, "[IPv6:::1]");
	CHECK_EQ_INT(a.is_literal, 1);
	CHECK_EQ_INT(a.is_quoted, 0);

	s = "<@a.example,@b.example:U@C.example>";
	CHECK_EQ_INT(addr_parse_path(s, strlen(s), 0, &a, &end, &why), 0);
	CHECK_STR(a.local, "U");
	CHECK_STR(a.domain, "c.example");
	CHECK_STR(a.text, "U@c.example");

	s = "<>";
	CHECK_EQ_INT(addr_parse_path(s, strlen(s), ADDR_NULL_OK, &a, &end, &why), 0);
	CHECK_EQ_INT(a.is_null, 1);
	CHECK_STR(a.text, "");
	CHECK_STR(a.domain, "");

	s = "<postmaster>";
	CHECK_EQ_INT(addr_parse_path(s, strlen(s), ADDR_POSTMASTER_OK, &a, &end, &why), 0);
	CHECK_STR(a.local, "postmaster");
	CHECK_STR(a.domain, "");
	CHECK_EQ_INT(a.is_null, 0);

	s = "<j\xc3\xb6rg@b.example>";
	CHECK_EQ_INT(addr_parse_path(s, strlen(s), ADDR_UTF8, &a, &end, &why), 0);
	CHECK_EQ_INT(a.has_utf8, 1);
	s = "<a@b\xc3\xbc.example>";
	CHECK_EQ_INT(addr_parse_path(s, strlen(s), ADDR_UTF8, &a, &end, &why), 0);
	CHECK_EQ_INT(a.has_utf8, 1);
	s = "<a@b.example>";
	CHECK_EQ_INT(addr_parse_path(s, strlen(s), ADDR_UTF8, &a, &end, &why), 0);
	CHECK_EQ_INT(a.has_utf8, 0);

	/* len bounds the parse: a valid path cut short is not read past len. */
	s = "<a@b.example>";
	CHECK_EQ_INT(addr_parse_path(s, 12, 0, &a, &end, &why), -1);
	CHECK_STR(why, "missing closing >");
	CHECK_EQ_INT(addr_parse_path(s, 0, ADDR_NO_BRACKETS_OK, &a, &end, &why), -1);
}

static char *rep(char *p, int c, size_t n)
{
	memset(p, c, n);
	return p + n;
}

/* Build a domain of exactly n octets from labels of at most 63. */
static char *domain_of(char *p, size_t n)
{
	while (n > 0) {
		size_t l = n > 64 ? 63 : n;
		if (n > 63 && n - l < 2)
			l = n - 2;          /* leave room for ".x" */
		p = rep(p, 'd', l);
		n -= l;
		if (n > 0) {
			*p++ = '.';
			n--;
		}
	}
	return p;
}

static void test_limits(void)
{
	static const struct {
		const char *what;
		size_t local, domain;   /* octets */
		int quoted;
		int ok;
		const char *why;
	} cases[] = {
		{ "local 64", 64, 9, 0, 0, NULL },
		{ "local 65", 65, 9, 0, -1, "local part longer than 64 octets" },
		{ "quoted local 64", 64, 9, 1, 0, NULL },
		{ "quoted local 65", 65, 9, 1, -1, "local part longer than 64 octets" },
		{ "path 256", 64, 189, 0, 0, NULL },   /* 1+64+1+189+1 = 256 */
		{ "path 257", 64, 190, 0, -1, "path longer than 256 octets" },
		{ "path 256, short local", 1, 252, 0, 0, NULL },
		{ "path 257, short local", 1, 253, 0, -1, "path longer than 256 octets" },
		{ "domain 255", 1, 255, 0, -1, "path longer than 256 octets" },
		{ "domain 256", 1, 256, 0, -1, NULL },
		{ "local 5000", 5000, 9, 0, -1, NULL },
		{ "domain 5000", 1, 5000, 0, -1, NULL },
	};

	for (size_t i = 0; i < NELEM(cases); i++) {
		char *s = malloc(cases[i].local + cases[i].domain + 16), *p = s;
		struct addr a;
		const char *why = NULL;
		size_t end = 0;
		ROW("%s", cases[i].what);
		*p++ = '<';
		if (cases[i].quoted) {
			*p++ = '"';
			p = rep(p, 'q', cases[i].local - 2);
			*p++ = '"';
		} else {
			p = rep(p, 'l', cases[i].local);
		}
		*p++ = '@';
		if (cases[i].domain == 9)
			p = (memcpy(p, "b.example", 9), p + 9);
		else
			p = domain_of(p, cases[i].domain);
		*p++ = '>';
		int r = addr_parse_path(s, (size_t)(p - s), 0, &a, &end, &why);
		CHECK_EQ_INT(r, cases[i].ok);
		if (r == 0) {
			CHECK_EQ_U64(end, (size_t)(p - s));
			CHECK_EQ_U64(strlen(a.text), (size_t)(p - s) - 2);
			CHECK_MEM(a.text, strlen(a.text), s + 1, (size_t)(p - s) - 2);
		} else if (cases[i].why) {
			CHECK_STR(why, cases[i].why);
		}
		free(s);
	}
	ROWS_END();

	/* A source route counts toward the 256-octet path. */
	char s[600], *p = s;
	struct addr a;
	const char *why;
	size_t end;
	p = (memcpy(p, "<@r.example:", 12), p + 12);
	p = rep(p, 'l', 64);
	*p++ = '@';
	p = domain_of(p, 189 - 11);
	*p++ = '>';
	CHECK_EQ_U64((size_t)(p - s), 256);
	CHECK_EQ_INT(addr_parse_path(s, (size_t)(p - s), 0, &a, &end, &why), 0);
	p[-1] = 'd';
	*p++ = '>';
	CHECK_EQ_INT(addr_parse_path(s, (size_t)(p - s), 0, &a, &end, &why), -1);
	CHECK_STR(why, "path longer than 256 octets");

	/* A huge line without '>' or with one far away is refused. */
	size_t big = 100000;
	char *h = malloc(big);
	h[0] = '<';
	memset(h + 1, 'a', big - 1);
	CHECK_EQ_INT(addr_parse_path(h, big, 0, &a, &end, &why), -1);
	CHECK_STR(why, "missing closing >");
	h[big - 1] = '>';
	CHECK_EQ_INT(addr_parse_path(h, big, 0, &a, &end, &why), -1);
	CHECK_STR(why, "path longer than 256 octets");
	free(h);
}

static void test_label_limits(void)
{
	static const struct {
		size_t label;
		int ok;
	} cases[] = { { 1, 1 }, { 62, 1 }, { 63, 1 }, { 64, 0 }, { 200, 0 } };

	for (size_t i = 0; i < NELEM(cases); i++) {
		char s[300], *p = s;
		struct addr a;
		const char *why;
		size_t end;
		ROW("label %zu", cases[i].label);
		p = (memcpy(p, "<a@", 3), p + 3);
		p = rep(p, 'x', cases[i].label);
		p = (memcpy(p, ".example>", 9), p + 9);
		CHECK_EQ_INT(addr_parse_path(s, (size_t)(p - s), 0, &a, &end, &why),
		             cases[i].ok ? 0 : -1);
		CHECK_EQ_INT(addr_valid_domain(s + 3, (size_t)(p - s) - 4, 0), cases[i].ok);
		/* the last label too */
		CHECK_EQ_INT(addr_valid_domain(s + 3, cases[i].label, 0), cases[i].ok);
	}
}

static void test_valid_domain(void)
{
	static const struct {
		const char *d;
		int flags;
		int ok;
	} cases[] = {
		{ "example", 0, 1 },
		{ "b.example", 0, 1 },
		{ "B.EXAMPLE", 0, 1 },
		{ "a-b.c-d.example", 0, 1 },
		{ "1.2.3.4", 0, 1 },
		{ "x", 0, 1 },
		{ "", 0, 0 },
		{ ".", 0, 0 },
		{ "b.example.", 0, 0 },
		{ ".b.example", 0, 0 },
		{ "b..example", 0, 0 },
		{ "-b.example", 0, 0 },
		{ "b-.example", 0, 0 },
		{ "b.example-", 0, 0 },
		{ "b_c.example", 0, 0 },
		{ "b c.example", 0, 0 },
		{ "[127.0.0.1]", 0, 0 },   /* literals are not domains */
		{ "b\r\n.example", 0, 0 },
		{ "b\xc3\xbc.example", 0, 0 },
		{ "b\xc3\xbc.example", ADDR_UTF8, 1 },
		{ "b\xc3.example", ADDR_UTF8, 0 },
		{ "\xef\xbf\xbf", ADDR_UTF8, 1 },
		{ "\xed\xbf\xbf", ADDR_UTF8, 0 },   /* surrogate */
	};

	for (size_t i = 0; i < NELEM(cases); i++) {
		ROW("%zu: %s", i, cases[i].d);
		CHECK_EQ_INT(addr_valid_domain(cases[i].d, strlen(cases[i].d), cases[i].flags), cases[i].ok);
	}
	ROWS_END();
	/* NUL inside, and len shorter than the string. */
	CHECK_EQ_INT(addr_valid_domain("b\0c.example", 11, 0), 0);
	CHECK_EQ_INT(addr_valid_domain("b.example!!!", 9, 0), 1);
	/* 255 octets is the limit. */
	char d[300];
	char *e = domain_of(d, 255);
	CHECK_EQ_U64((size_t)(e - d), 255);
	CHECK_EQ_INT(addr_valid_domain(d, 255, 0), 1);
	e = domain_of(d, 256);
	CHECK_EQ_INT(addr_valid_domain(d, 256, 0), 0);
}

static void test_mailbox(void)
{
	static const struct {
		const char *in;
		int flags;
		int ok;
		const char *text;
	} cases[] = {
		{ "a@b.example", 0, 0, "a@b.example" },
		{ "A@B.Example", 0, 0, "A@b.example" },
		{ "\"a b\"@x.example", 0, 0, "\"a b\"@x.example" },
		{ "u@[127.0.0.1]", 0, 0, "u@[127.0.0.1]" },
		{ "postmaster", ADDR_POSTMASTER_OK, 0, "postmaster" },
		{ "postmaster", 0, -1, NULL },
		{ "<a@b.example>", 0, -1, NULL },
		{ "a@b.example ", 0, -1, NULL },
		{ " a@b.example", 0, -1, NULL },
		{ "a@b.example\n", 0, -1, NULL },
		{ "a@b.example\r", 0, -1, NULL },
		{ "", 0, -1, NULL },
		{ "", ADDR_NULL_OK, -1, NULL },
		{ "@a.example:u@c.example", 0, -1, NULL },  /* no routes in bare mailboxes */
		{ "\xc3\xa9@b.example", ADDR_UTF8, 0, "\xc3\xa9@b.example" },
		{ "\xc3\xa9@b.example", 0, -1, NULL },
	};

	for (size_t i = 0; i < NELEM(cases); i++) {
		struct addr a;
		const char *why = NULL;
		ROW("%zu: %s", i, cases[i].in);
		CHECK_EQ_INT(addr_parse_mailbox(cases[i].in, cases[i].flags, &a, &why), cases[i].ok);
		if (cases[i].ok == 0)
			CHECK_STR(a.text, cases[i].text);
		else
			CHECK(why != NULL);
	}
	ROWS_END();
	/* 254 octets (a path of 256 with brackets) is the limit. */
	char s[400], *p = s;
	struct addr a;
	const char *why;
	*p++ = 'a';
	*p++ = '@';
	p = domain_of(p, 252);
	*p = '\0';
	CHECK_EQ_INT(addr_parse_mailbox(s, 0, &a, &why), 0);
	CHECK_STR(a.text, s);
	p = s + 2;
	p = domain_of(p, 253);
	*p = '\0';
	CHECK_EQ_INT(addr_parse_mailbox(s, 0, &a, &why), -1);
	CHECK_STR(why, "path longer than 256 octets");
}

/* Every prefix of a valid path with trailing junk fails cleanly or parses
 * the same thing; no prefix reads past len (ASan watches the copy). */
static void test_prefixes(void)
{
	static const char *const inputs[] = {
		"<@a.example,@b.example:\"q\\\"x\"@[IPv6:2001:db8::1]> SIZE=1",
		"<j\xc3\xb6rg@b\xc3\xbc" "cher.example>",
		"<postmaster>",
	};
	int bad = 0;

	for (size_t i = 0; i < NELEM(inputs); i++) {
		size_t n = strlen(inputs[i]);
		for (size_t len = 0; len <= n; len++) {
			char *copy = malloc(len ? len : 1);
			struct addr a;
			const char *why;
			size_t end = 0;
			memcpy(copy, inputs[i], len);
			int r = addr_parse_path(copy, len, ADDR_UTF8 | ADDR_POSTMASTER_OK, &a, &end, &why);
			if (r == 0 && end > len)
				bad++;
			if (r == 0 && copy[end - 1] != '>')
				bad++;
			free(copy);
		}
	}
	CHECK_EQ_INT(bad, 0);
}

int main(int argc, char **argv)
{
	h_init(argc, argv);
	RUN(test_paths);
	RUN(test_fields);
	RUN(test_limits);
	RUN(test_label_limits);
	RUN(test_valid_domain);
	RUN(test_mailbox);
	RUN(test_prefixes);
	return h_done();
}
