/* Unit tests for shared/str.c: bounded copies, strict number parsing,
 * ASCII case folding and log escaping. */
#include "harness.h"
#include "str.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void test_copy(void)
{
	static const struct {
		const char *src;
		size_t size;
		const char *want;
		int ret;
	} cases[] = {
		{ "", 1, "", 0 },
		{ "abc", 4, "abc", 0 },          /* exactly fits with NUL */
		{ "abcd", 4, "abc", -1 },        /* one too long: truncated, reported */
		{ "abcdef", 2, "a", -1 },
		{ "abc", 1, "", -1 },
		{ "x", 100, "x", 0 },
	};

	for (size_t i = 0; i < NELEM(cases); i++) {
		char dst[128];
		ROW("%zu: \"%s\" into %zu", i, cases[i].src, cases[i].size);
		memset(dst, 'Z', sizeof(dst));
		CHECK_EQ_INT(str_copy(dst, cases[i].src, cases[i].size), cases[i].ret);
		CHECK_STR(dst, cases[i].want);
		/* Nothing written past size. */
		CHECK(dst[cases[i].size] == 'Z' || cases[i].size >= strlen(cases[i].src) + 1);
	}
	ROWS_END();
	{
		char dst[4] = "ZZZ";
		CHECK_EQ_INT(str_copy(dst, "a", 0), -1);   /* size 0: nothing written */
		CHECK_STR(dst, "ZZZ");
	}
}

static void test_append(void)
{
	static const struct {
		const char *init, *add;
		size_t size;
		const char *want;
		int ret;
	} cases[] = {
		{ "", "abc", 8, "abc", 0 },
		{ "ab", "cd", 5, "abcd", 0 },       /* exactly fits */
		{ "ab", "cde", 5, "abcd", -1 },     /* truncated */
		{ "abcd", "", 5, "abcd", 0 },
		{ "abcd", "x", 5, "abcd", -1 },     /* full already */
	};

	for (size_t i = 0; i < NELEM(cases); i++) {
		char dst[16];
		ROW("%zu: \"%s\"+\"%s\" in %zu", i, cases[i].init, cases[i].add, cases[i].size);
		memset(dst, 'Z', sizeof(dst));
		strcpy(dst, cases[i].init);
		CHECK_EQ_INT(str_append(dst, cases[i].add, cases[i].size), cases[i].ret);
		CHECK_STR(dst, cases[i].want);
	}
	ROWS_END();
	{
		/* dst not NUL-terminated within size: refused, nothing read past size. */
		char dst[4] = { 'a', 'b', 'c', 'd' };
		CHECK_EQ_INT(str_append(dst, "x", sizeof(dst)), -1);
		CHECK(memcmp(dst, "abcd", 4) == 0);
	}
}

static void test_fmt(void)
{
	char b[8];

	CHECK_EQ_INT(str_fmt(b, sizeof(b), "%d-%s", 12, "ab"), 5);
	CHECK_STR(b, "12-ab");
	CHECK_EQ_INT(str_fmt(b, sizeof(b), "%s", "1234567"), 7);   /* 7 + NUL = 8 */
	CHECK_STR(b, "1234567");
	CHECK_EQ_INT(str_fmt(b, sizeof(b), "%s", "12345678"), -1); /* truncated */
	CHECK_STR(b, "1234567");
	CHECK_EQ_INT(str_fmt(b, sizeof(b), "%s", ""), 0);
	CHECK_STR(b, "");
}

static void test_to_u64(void)
{
	static const struct {
		const char *in;
		uint64_t min, max;
		int ret;
		uint64_t want;
	} cases[] = {
		{ "0", 0, 10, 0, 0 },
		{ "10", 0, 10, 0, 10 },
		{ "11", 0, 10, -1, 0 },            /* above max */
		{ "4", 5, 10, -1, 0 },             /* below min */
		{ "007", 0, 10, 0, 7 },            /* leading zeros are digits */
		{ "", 0, 10, -1, 0 },
		{ " 1", 0, 10, -1, 0 },
		{ "1 ", 0, 10, -1, 0 },
		{ "+1", 0, 10, -1, 0 },
		{ "-1", 0, 10, -1, 0 },
		{ "1a", 0, 10, -1, 0 },
		{ "0x10", 0, 100, -1, 0 },
		{ "1.0", 0, 10, -1, 0 },
		{ "1\n", 0, 10, -1, 0 },
		{ "18446744073709551615", 0, UINT64_MAX, 0, UINT64_MAX },
		{ "18446744073709551616", 0, UINT64_MAX, -1, 0 },  /* overflow by one */
		{ "18446744073709551620", 0, UINT64_MAX, -1, 0 },
		{ "99999999999999999999999", 0, UINT64_MAX, -1, 0 },
		{ "00000000000000000000000000000042", 0, UINT64_MAX, 0, 42 },
	};

	for (size_t i = 0; i < NELEM(cases); i++) {
		uint64_t out = 12345;
		ROW("%zu: \"%s\"", i, cases[i].in);
		CHECK_EQ_INT(str_to_u64(cases[i].in, cases[i].min, cases[i].max, &out), cases[i].ret);
		if (cases[i].ret == 0)
			CHECK_EQ_U64(out, cases[i].want);
		else
			CHECK_EQ_U64(out, 12345);   /* untouched on failure */
	}
	ROWS_END();
	{
		uint64_t out = 1;
		CHECK_EQ_INT(str_to_u64(NULL, 0, 10, &out), -1);
	}
}

static int sign(int v) { return (v > 0) - (v < 0); }

static void test_casecmp(void)
{
	static const struct {
		const char *a, *b;
		int want;   /* sign */
	} cases[] = {
		{ "", "", 0 },
		{ "abc", "ABC", 0 },
		{ "MaIl FrOm", "mail from", 0 },
		{ "abc", "abd", -1 },
		{ "abd", "ABC", 1 },
		{ "ab", "abc", -1 },
		{ "abc", "ab", 1 },
		{ "\xc4", "\xe4", -1 },   /* no folding outside ASCII (locale independent) */
		{ "[", "{", -1 },         /* '[' (0x5b) is not 'A'-'Z' */
		{ "@", "`", -1 },
	};

	for (size_t i = 0; i < NELEM(cases); i++) {
		ROW("%zu", i);
		CHECK_EQ_INT(sign(str_casecmp(cases[i].a, cases[i].b)), cases[i].want);
		CHECK_EQ_INT(sign(str_casecmp(cases[i].b, cases[i].a)), -cases[i].want);
	}
	ROWS_END();
	CHECK_EQ_INT(str_ncasecmp("MAIL FROM:<x>", "mail from:", 10), 0);
	CHECK_EQ_INT(sign(str_ncasecmp("MAIL FROM:<x>", "mail from;", 10)), -1);
	CHECK_EQ_INT(str_ncasecmp("abc", "xyz", 0), 0);
	CHECK_EQ_INT(str_ncasecmp("ab", "AB", 10), 0);      /* stops at the NUL */
	CHECK_EQ_INT(sign(str_ncasecmp("ab", "ABC", 10)), -1);
}

static void test_lower(void)
{
	char s[] = "HeLLo.EXAMPLE-09_\xc3\x84Z@[]";

	str_lower(s);
	CHECK_STR(s, "hello.example-09_\xc3\x84z@[]");
	char e[] = "";
	str_lower(e);
	CHECK_STR(e, "");
}

static void test_escape(void)
{
	static const struct {
		const char *in;
		size_t len;
		const char *want;
	} cases[] = {
		{ "plain text", 10, "plain text" },
		{ "a\"b\\c", 5, "a\\\"b\\\\c" },
		{ "\r\n", 2, "\\x0d\\x0a" },
		{ "a\0b", 3, "a\\x00b" },              /* NUL inside is escaped, not a terminator */
		{ "\x7f\x80\xff", 3, "\\x7f\\x80\\xff" },
		{ "", 0, "" },
		{ "abc", 1, "a" },                      /* len, not strlen, counts */
	};

	for (size_t i = 0; i < NELEM(cases); i++) {
		char out[256];
		ROW("%zu", i);
		str_escape(out, sizeof(out), cases[i].in, cases[i].len);
		CHECK_STR(out, cases[i].want);
	}
	ROWS_END();

	/* Truncation: every size gives a NUL-terminated prefix of the full
	 * rendering, marked by "..." when something was dropped, and never an
	 * escape sequence cut in half. */
	const char in[] = "ab\x01" "cd\"ef\\gh\xffij";
	char full[256];
	str_escape(full, sizeof(full), in, sizeof(in) - 1);
	CHECK_STR(full, "ab\\x01cd\\\"ef\\\\gh\\xffij");
	for (size_t size = 1; size < sizeof(full); size++) {
		char out[300];
		memset(out, 'Z', sizeof(out));
		str_escape(out, size, in, sizeof(in) - 1);
		size_t n = strnlen(out, size);
		CHECK(n < size);
		CHECK(out[size] == 'Z');   /* nothing written past size */
		if (n >= 3 && strcmp(out + n - 3, "...") == 0) {
			CHECK(strncmp(out, full, n - 3) == 0);
			/* the kept part ends on an escape boundary */
			const char *k = out + n - 3;
			CHECK(k == out || k[-1] != '\\' || (k - 1 > out && k[-2] == '\\'));
		} else {
			CHECK(strcmp(out, full) == 0 || n == 0);
		}
	}
	{
		char z[2] = "Q";
		str_escape(z, 0, "abc", 3);   /* size 0: nothing written */
		CHECK_EQ_INT(z[0], 'Q');
	}
}

static void test_alloc(void)
{
	char *p = xmalloc(0);
	CHECK(p != NULL);
	free(p);
	int *z = xcalloc(16, sizeof(int));
	int sum = 0;
	for (int i = 0; i < 16; i++)
		sum += z[i];
	CHECK_EQ_INT(sum, 0);
	z = xrealloc(z, 1024 * sizeof(int));
	z[1023] = 7;
	CHECK_EQ_INT(z[1023], 7);
	CHECK_EQ_INT(z[0], 0);
	free(z);
	char *s = xstrdup("hello");
	CHECK_STR(s, "hello");
	free(s);
}

static void test_fmt_age(void)
{
	static const struct {
		long s;
		const char *want;
	} rows[] = { { 0, "0s" }, { 119, "119s" }, { 120, "2m" }, { 7199, "119m" }, { 7200, "2h" },
	             { 172799, "47h" }, { 172800, "2d" }, { 864000, "10d" } };
	char out[16];

	for (size_t i = 0; i < NELEM(rows); i++) {
		ROW("%ld", rows[i].s);
		str_fmt_age(rows[i].s, out, sizeof(out));
		CHECK_STR(out, rows[i].want);
	}
}

int main(int argc, char **argv)
{
	h_init(argc, argv);
	RUN(test_copy);
	RUN(test_append);
	RUN(test_fmt);
	RUN(test_to_u64);
	RUN(test_casecmp);
	RUN(test_lower);
	RUN(test_escape);
	RUN(test_alloc);
	RUN(test_fmt_age);
	return h_done();
}
