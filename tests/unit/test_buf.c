/* Unit tests for shared/buf.c: the hard cap, draining and compaction,
 * reserve/commit, formatted appends and reading from descriptors. */
#include "buf.h"
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void test_cap(void)
{
	static const struct {
		size_t cap;
		size_t first, second;   /* two appends */
		int r1, r2;
		size_t used;
	} cases[] = {
		{ 10, 5, 5, 0, 0, 10 },      /* exactly to the cap */
		{ 10, 5, 6, 0, -1, 5 },      /* one past the cap: refused whole */
		{ 10, 11, 0, -1, 0, 0 },     /* too big at once */
		{ 10, 0, 0, 0, 0, 0 },       /* empty appends always succeed */
		{ 0, 1, 0, -1, 0, 0 },       /* cap 0 holds nothing */
		{ 1000, 600, 400, 0, 0, 1000 },
		{ 1000, 600, 401, 0, -1, 600 },
		{ 100000, 70000, 30000, 0, 0, 100000 },
	};

	for (size_t i = 0; i < NELEM(cases); i++) {
		struct buf b;
		char *src = malloc(cases[i].first + cases[i].second + 1);
		ROW("%zu: cap %zu, %zu+%zu", i, cases[i].cap, cases[i].first, cases[i].second);
		for (size_t k = 0; k < cases[i].first + cases[i].second; k++)
			src[k] = (char)(k * 7);   /* includes NUL bytes */
		buf_init(&b, cases[i].cap);
		CHECK_EQ_INT(buf_append(&b, src, cases[i].first), cases[i].r1);
		CHECK_EQ_INT(buf_append(&b, src + (cases[i].r1 == 0 ? cases[i].first : 0), cases[i].second),
		             cases[i].r2);
		CHECK_EQ_U64(buf_used(&b), cases[i].used);
		CHECK_EQ_U64(buf_room(&b), cases[i].cap - cases[i].used);
		CHECK_MEM(buf_head(&b), buf_used(&b), src, cases[i].used);
		CHECK(b.size <= cases[i].cap + 1);   /* never allocates beyond the cap */
		buf_free(&b);
		CHECK(b.data == NULL);
		free(src);
	}
}

static void test_drain(void)
{
	struct buf b;

	buf_init(&b, 16);
	CHECK_EQ_INT(buf_append(&b, "0123456789abcdef", 16), 0);
	CHECK_EQ_U64(buf_room(&b), 0);
	CHECK_EQ_INT(buf_append(&b, "x", 1), -1);
	buf_drain(&b, 4);
	CHECK_MEM(buf_head(&b), buf_used(&b), "456789abcdef", 12);
	CHECK_EQ_U64(buf_room(&b), 4);
	/* Drained space is reusable: compaction happens on demand. */
	CHECK_EQ_INT(buf_append(&b, "WXYZ", 4), 0);
	CHECK_MEM(buf_head(&b), buf_used(&b), "456789abcdefWXYZ", 16);
	CHECK_EQ_INT(buf_append(&b, "!", 1), -1);
	buf_drain(&b, 0);
	CHECK_EQ_U64(buf_used(&b), 16);
	buf_drain(&b, 1000);   /* more than held: empties, no underflow */
	CHECK_EQ_U64(buf_used(&b), 0);
	CHECK_EQ_U64(b.off, 0);
	CHECK_EQ_U64(buf_room(&b), 16);
	CHECK_EQ_INT(buf_append(&b, "ab", 2), 0);
	buf_reset(&b);
	CHECK_EQ_U64(buf_used(&b), 0);
	CHECK_EQ_U64(buf_room(&b), 16);
	buf_free(&b);
	buf_free(&b);   /* freeing twice is harmless */
}

static void test_reserve(void)
{
	struct buf b;
	char *p;

	buf_init(&b, 8);
	CHECK(buf_reserve(&b, 9) == NULL);
	p = buf_reserve(&b, 8);
	CHECK(p != NULL);
	memcpy(p, "abc", 3);
	buf_commit(&b, 3);
	CHECK_MEM(buf_head(&b), buf_used(&b), "abc", 3);
	CHECK(buf_reserve(&b, 6) == NULL);
	CHECK(buf_reserve(&b, 5) != NULL);
	buf_drain(&b, 2);
	p = buf_reserve(&b, 7);   /* needs compaction */
	CHECK(p != NULL);
	memcpy(p, "1234567", 7);
	buf_commit(&b, 7);
	CHECK_MEM(buf_head(&b), buf_used(&b), "c1234567", 8);
	CHECK(buf_reserve(&b, 1) == NULL);
	CHECK(buf_reserve(&b, 0) != NULL);
	buf_free(&b);
}

static void test_appendf(void)
{
	struct buf b;
	char big[1100];

	buf_init(&b, 4096);
	CHECK_EQ_INT(buf_appendf(&b, "%d %s\r\n", 250, "OK"), 0);
	CHECK_MEM(buf_head(&b), buf_used(&b), "250 OK\r\n", 8);
	memset(big, 'a', sizeof(big));
	big[1023] = '\0';
	CHECK_EQ_INT(buf_appendf(&b, "%s", big), 0);   /* 1023 bytes: the largest */
	CHECK_EQ_U64(buf_used(&b), 8 + 1023);
	big[1023] = 'a';
	big[1024] = '\0';
	CHECK_EQ_INT(buf_appendf(&b, "%s", big), -1);  /* 1024: refused, not cut */
	CHECK_EQ_U64(buf_used(&b), 8 + 1023);
	buf_free(&b);

	buf_init(&b, 5);
	CHECK_EQ_INT(buf_appendf(&b, "%s", "12345"), 0);
	CHECK_EQ_INT(buf_appendf(&b, "%s", "6"), -1);
	CHECK_EQ_INT(buf_appendf(&b, "%s", ""), 0);
	CHECK_MEM(buf_head(&b), buf_used(&b), "12345", 5);
	buf_free(&b);
}

static void test_read_fd(void)
{
	struct buf b;
	int p[2];

	CHECK_EQ_INT(pipe(p), 0);
	buf_init(&b, 10);
	CHECK_EQ_INT(write(p[1], "0123456789ABCDEF", 16), 16);
	CHECK_EQ_INT(buf_read_fd(&b, p[0]), 10);   /* bounded by the cap */
	CHECK_MEM(buf_head(&b), buf_used(&b), "0123456789", 10);
	CHECK_EQ_INT(buf_read_fd(&b, p[0]), -2);   /* full */
	buf_drain(&b, 8);
	CHECK_EQ_INT(buf_read_fd(&b, p[0]), 6);
	CHECK_MEM(buf_head(&b), buf_used(&b), "89ABCDEF", 8);
	/* Non-blocking and empty: -1 with EAGAIN, contents untouched. */
	CHECK_EQ_INT(fcntl(p[0], F_SETFL, O_NONBLOCK), 0);
	errno = 0;
	CHECK_EQ_INT(buf_read_fd(&b, p[0]), -1);
	CHECK_EQ_INT(errno, EAGAIN);
	CHECK_EQ_U64(buf_used(&b), 8);
	/* NUL bytes are data like any other. */
	CHECK_EQ_INT(write(p[1], "\0\r\n", 3), 3);
	CHECK_EQ_INT(buf_read_fd(&b, p[0]), 2);
	CHECK_MEM(buf_head(&b), buf_used(&b), "89ABCDEF\0\r", 10);
	buf_drain(&b, 10);
	CHECK_EQ_INT(buf_read_fd(&b, p[0]), 1);
	close(p[1]);
	CHECK_EQ_INT(buf_read_fd(&b, p[0]), 0);    /* EOF */
	close(p[0]);
	errno = 0;
	CHECK_EQ_INT(buf_read_fd(&b, p[0]), -1);   /* closed descriptor */
	CHECK_EQ_INT(errno, EBADF);
	buf_free(&b);

	buf_init(&b, 0);
	CHECK_EQ_INT(buf_read_fd(&b, 0), -2);      /* cap 0 never reads */
	buf_free(&b);
}

/* Random appends, drains and reserves against a plain array model. */
static void test_shrink(void)
{
	struct buf b;

	buf_init(&b, 100);
	CHECK_EQ_INT(buf_append(&b, "hello", 5), 0);
	buf_shrink(&b);                 /* not empty: kept as is */
	CHECK(b.data != NULL);
	CHECK_EQ_INT((int)buf_used(&b), 5);
	CHECK_MEM(buf_head(&b), buf_used(&b), "hello", 5);
	buf_drain(&b, 5);
	buf_shrink(&b);                 /* empty: memory returned, bound kept */
	CHECK(b.data == NULL);
	CHECK_EQ_INT((int)b.size, 0);
	CHECK_EQ_INT((int)buf_room(&b), 100);
	CHECK_EQ_INT(buf_append(&b, "again", 5), 0);
	CHECK_MEM(buf_head(&b), buf_used(&b), "again", 5);
	buf_shrink(&b);
	CHECK(b.data != NULL);
	buf_free(&b);
}

static void test_random_model(void)
{
	enum { CAP = 3000, OPS = 20000 };
	static char model[CAP];
	size_t mlen = 0;
	struct buf b;
	unsigned seed = 12345;
	int bad = 0;

	buf_init(&b, CAP);
	for (int op = 0; op < OPS && !bad; op++) {
		char chunk[700];
		seed = seed * 1103515245 + 12345;
		size_t n = (seed >> 8) % sizeof(chunk);
		for (size_t k = 0; k < n; k++)
			chunk[k] = (char)(seed >> (k % 24));
		switch ((seed >> 20) % 3) {
		case 0: {
			int r = buf_append(&b, chunk, n);
			if (mlen + n <= CAP) {
				bad |= r != 0;
				memcpy(model + mlen, chunk, n);
				mlen += n;
			} else {
				bad |= r != -1;
			}
			break;
		}
		case 1: {
			size_t d = n < mlen ? n : mlen;
			buf_drain(&b, d);
			memmove(model, model + d, mlen - d);
			mlen -= d;
			break;
		}
		case 2: {
			char *p = buf_reserve(&b, n);
			if (mlen + n <= CAP) {
				bad |= p == NULL;
				if (p) {
					memcpy(p, chunk, n / 2);
					buf_commit(&b, n / 2);
					memcpy(model + mlen, chunk, n / 2);
					mlen += n / 2;
				}
			} else {
				bad |= p != NULL;
			}
			break;
		}
		}
		bad |= buf_used(&b) != mlen || (mlen && memcmp(buf_head(&b), model, mlen) != 0);
		bad |= b.size > CAP + 1;
	}
	CHECK(!bad);
	CHECK_EQ_U64(buf_used(&b), mlen);
	buf_free(&b);
}

int main(int argc, char **argv)
{
	h_init(argc, argv);
	RUN(test_cap);
	RUN(test_drain);
	RUN(test_reserve);
	RUN(test_appendf);
	RUN(test_read_fd);
	RUN(test_shrink);
	RUN(test_random_model);
	return h_done();
}
