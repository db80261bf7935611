/*
 * test_data - the DATA reader: dot-unstuffing, the only end of data
 * (CRLF.CRLF), the SMTP smuggling forms, limits, and input split at every
 * byte boundary.
 */
#include "harness.h"
#include "data.h"

#include <string.h>

struct out {
	char buf[8192];
	size_t len;
};

static int sink(void *arg, const char *p, size_t n)
{
	struct out *o = arg;
	if (o->len + n > sizeof(o->buf))
		return -1;
	memcpy(o->buf + o->len, p, n);
	o->len += n;
	return 0;
}

static const struct {
	const char *in;      /* bytes after the DATA command's 354 */
	int ends;            /* end of data found in `in` */
	size_t used;         /* bytes consumed when it ends */
	int err;
	const char *out;     /* stored message (when ends and no error) */
	int normalize;
} cases[] = {
	{ "a\r\n.\r\n", 1, 6, DATA_OK, "a\r\n", 0 },
	{ ".\r\n", 1, 3, DATA_OK, "", 0 },
	{ "a\r\n..b\r\n.\r\nMAIL", 1, 11, DATA_OK, "a\r\n.b\r\n", 0 },
	{ "..\r\n.\r\n", 1, 7, DATA_OK, ".\r\n", 0 },
	{ "a\r\n.x\r\n.\r\n", 1, 10, DATA_OK, "a\r\nx\r\n", 0 },
	/* smuggling forms never end the data; bare newlines are rejected */
	{ "a\n.\nMAIL FROM:<x@y.example>\r\n", 0, 0, DATA_ERR_BARE, NULL, 0 },
	{ "a\n.\r\nMAIL FROM:<x@y.example>\r\n", 0, 0, DATA_ERR_BARE, NULL, 0 },
	{ "a\r.\r\nMAIL FROM:<x@y.example>\r\n", 0, 0, DATA_ERR_BARE, NULL, 0 },
	{ "a\r\n.\nMAIL\r\n", 0, 0, DATA_ERR_BARE, NULL, 0 },
	{ "a\n.\nRSET\r\n.\r\n", 1, 13, DATA_ERR_BARE, NULL, 0 },
	/* normalize stores CRLF but still never ends at a bare form */
	{ "a\nb\r\n.\r\n", 1, 8, DATA_OK, "a\r\nb\r\n", 1 },
	{ "a\n.\nb\r\n.\r\n", 1, 10, DATA_OK, "a\r\n.\r\nb\r\n", 1 },
	{ "a\rb\r\n.\r\n", 1, 8, DATA_OK, "a\r\nb\r\n", 1 },
	{ "a\r\n.\r\r\n.\r\n", 1, 10, DATA_OK, "a\r\n\r\n\r\n", 1 },
	/* NUL */
	{ "a\0b\r\n.\r\n", 1, 8, DATA_ERR_NUL, NULL, 0 },
	{ "\xc3\xa9\r\n.\r\n", 1, 7, DATA_OK, "\xc3\xa9\r\n", 0 },
};

static void feed_all(const char *in, size_t n, size_t chunk, int normalize, struct out *o,
                     struct data_reader *r, int *ended, size_t *used)
{
	size_t off = 0;

	data_init(r, 4096, normalize, sink, o);
	*ended = 0;
	while (off < n) {
		size_t k = n - off < chunk ? n - off : chunk, u;
		if (data_feed(r, in + off, k, &u)) {
			*ended = 1;
			*used = off + u;
			return;
		}
		off += u;
	}
}

static void test_cases(void)
{
	for (size_t i = 0; i < NELEM(cases); i++) {
		size_t n = strlen(cases[i].in);
		if (i == 14)
			n = 8;   /* contains a NUL */
		/* every split of the input must give the same result */
		for (size_t chunk = 1; chunk <= n; chunk++) {
			struct out o = { .len = 0 };
			struct data_reader r;
			int ended;
			size_t used = 0;

			ROW("case %zu chunk %zu", i, chunk);
			feed_all(cases[i].in, n, chunk, cases[i].normalize, &o, &r, &ended, &used);
			CHECK_EQ_INT(ended, cases[i].ends);
			CHECK_EQ_INT(r.err, cases[i].err);
			if (cases[i].ends)
				CHECK_EQ_U64(used, cases[i].used);
			if (cases[i].ends && cases[i].out)
				CHECK_MEM(o.buf, o.len, cases[i].out, strlen(cases[i].out));
		}
	}
}

static void test_long_line(void)
{
	char in[3000];
	struct out o = { .len = 0 };
	struct data_reader r;
	size_t used;

	/* 998 octets + CRLF is the longest legal line */
	memset(in, 'x', 998);
	memcpy(in + 998, "\r\n.\r\n", 5);
	data_init(&r, 1 << 20, 0, sink, &o);
	CHECK_EQ_INT(data_feed(&r, in, 1003, &used), 1);
	CHECK_EQ_INT(r.err, DATA_OK);
	memset(in, 'x', 999);
	memcpy(in + 999, "\r\n.\r\n", 5);
	o.len = 0;
	data_init(&r, 1 << 20, 0, sink, &o);
	CHECK_EQ_INT(data_feed(&r, in, 1004, &used), 1);
	CHECK_EQ_INT(r.err, DATA_ERR_LINE);
	CHECK(o.len <= 998);   /* nothing past the limit was stored */
}

static void test_size(void)
{
	char in[200];
	struct out o = { .len = 0 };
	struct data_reader r;
	size_t used;

	memset(in, 'y', 100);
	memcpy(in + 100, "\r\n.\r\n", 5);
	data_init(&r, 50, 0, sink, &o);
	CHECK_EQ_INT(data_feed(&r, in, 105, &used), 1);
	CHECK_EQ_INT(r.err, DATA_ERR_SIZE);
	CHECK(o.len <= 50);
	data_init(&r, 102, 0, sink, &o);
	o.len = 0;
	CHECK_EQ_INT(data_feed(&r, in, 105, &used), 1);
	CHECK_EQ_INT(r.err, DATA_OK);
	CHECK_EQ_U64(o.len, 102);
}

static void test_replies(void)
{
	CHECK_CONTAINS(data_err_reply(DATA_ERR_SIZE), "552 5.3.4");
	CHECK_CONTAINS(data_err_reply(DATA_ERR_BARE), "550 5.6.0");
	CHECK_CONTAINS(data_err_reply(DATA_ERR_LINE), "500 5.5.2");
	CHECK_CONTAINS(data_err_reply(DATA_ERR_NUL), "550 5.6.0");
}

int main(int argc, char **argv)
{
	h_init(argc, argv);
	RUN(test_cases);
	RUN(test_long_line);
	RUN(test_size);
	RUN(test_replies);
	return h_done();
}
