/*
 * test_strpool - interned strings: sharing, reference counts, the cut at
 * maxlen, the static empty string, growth past the first table size.
 */
#include "harness.h"
#include "strpool.h"

static void test_share_and_release(void)
{
	char a[] = "451 4.4.1 connect: Connection refused";
	char b[] = "451 4.4.1 connect: Connection refused";
	const char *p = strpool_get(a, 400), *q = strpool_get(b, 400);

	CHECK(p == q);                      /* one copy for equal text */
	CHECK(p != a && p != b);            /* a copy, not the caller's buffer */
	CHECK_STR(p, a);
	CHECK_EQ_U64(strpool_count(), 1);
	a[0] = 'X';                         /* the caller's buffer may change */
	CHECK_STR(p, b);
	strpool_put(p);
	CHECK_EQ_U64(strpool_count(), 1);   /* q still holds it */
	CHECK_STR(q, b);
	strpool_put(q);
	CHECK_EQ_U64(strpool_count(), 0);
}

static void test_cut_and_empty(void)
{
	const char *e = strpool_get("", 10), *e2 = strpool_get("abc", 0);

	CHECK_STR(e, "");
	CHECK(e == e2);                     /* maxlen 0: the empty string */
	CHECK_EQ_U64(strpool_count(), 0);
	strpool_put(e);                     /* harmless */
	strpool_put(NULL);
	const char *cut = strpool_get("abcdef", 3), *abc = strpool_get("abc", 10);
	CHECK_STR(cut, "abc");
	CHECK(cut == abc);                  /* "abcdef" cut to 3 is "abc" */
	const char *abcd = strpool_get("abcd", 10);
	CHECK(abcd != abc);                 /* a prefix is another string */
	CHECK_EQ_U64(strpool_count(), 2);
	strpool_put(cut);
	strpool_put(abc);
	strpool_put(abcd);
	CHECK_EQ_U64(strpool_count(), 0);
}

static void test_many(void)
{
	static const char *p[5000];
	char s[32];

	for (int round = 0; round < 2; round++)
		for (int i = 0; i < 5000; i++) {
			snprintf(s, sizeof(s), "reply %d", i);
			const char *x = strpool_get(s, sizeof(s));
			if (round == 0)
				p[i] = x;
			else
				CHECK(x == p[i]);   /* found again after the table grew */
		}
	CHECK_EQ_U64(strpool_count(), 5000);
	for (int round = 0; round < 2; round++)
		for (int i = 0; i < 5000; i++)
			strpool_put(p[i]);
	CHECK_EQ_U64(strpool_count(), 0);
}

int main(int argc, char **argv)
{
	h_init(argc, argv);
	RUN(test_share_and_release);
	RUN(test_cut_and_empty);
	RUN(test_many);
	return h_done();
}
