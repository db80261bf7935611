/* Unit tests for shared/smtp_line.c: CRLF framing, the line-length bound
 * (CRLF included), bare LF and NUL detection, skipping an over-long line,
 * and pipelined input split at every byte boundary. */
#include "harness.h"
#include "smtp_line.h"

#include <stdlib.h>
#include <string.h>

#define L(s) s, sizeof(s) - 1

static const char *status_name(int st)
{
	static const char *const n[] = { "LINE_OK", "LINE_AGAIN", "LINE_TOOLONG", "LINE_BARELF", "LINE_NUL" };
	return st >= 0 && st <= 4 ? n[st] : "?";
}

static void test_read_table(void)
{
	static const struct {
		const char *in;
		size_t len;
		size_t max;
		int st;
		const char *line;   /* OK / BARELF: the line without its ending */
		size_t line_len;
		size_t consumed;
	} cases[] = {
		{ L("EHLO a\r\n"), 512, LINE_OK, L("EHLO a"), 8 },
		{ L("\r\n"), 512, LINE_OK, L(""), 2 },
		{ L("QUIT\r\nNOOP\r\n"), 512, LINE_OK, L("QUIT"), 6 },          /* first line only */
		{ L("a\r\r\n"), 512, LINE_OK, L("a\r"), 4 },                    /* a lone CR is data */
		{ L("abc\r\n\0"), 512, LINE_OK, L("abc"), 5 },                  /* NUL on the next line */
		{ L("abc\r\nx\n"), 512, LINE_OK, L("abc"), 5 },
		{ L(""), 512, LINE_AGAIN, NULL, 0, 0 },
		{ L("EHLO a"), 512, LINE_AGAIN, NULL, 0, 0 },
		{ L("EHLO a\r"), 512, LINE_AGAIN, NULL, 0, 0 },
		{ L("\r"), 512, LINE_AGAIN, NULL, 0, 0 },
		{ L("EHLO a\n"), 512, LINE_BARELF, L("EHLO a"), 7 },
		{ L("\n"), 512, LINE_BARELF, L(""), 1 },
		{ L("\n\r\n"), 512, LINE_BARELF, L(""), 1 },
		{ L("a\nb\r\n"), 512, LINE_BARELF, L("a"), 2 },
		{ L("a\r\nb"), 512, LINE_OK, L("a"), 3 },
		{ L("a\n\r"), 512, LINE_BARELF, L("a"), 2 },
		{ L("\r\r\n"), 512, LINE_OK, L("\r"), 3 },
		{ L(".\n"), 512, LINE_BARELF, L("."), 2 },                       /* smuggling shape */
		{ L("EH\0LO\r\n"), 512, LINE_NUL, NULL, 0, 0 },
		{ L("\0"), 512, LINE_NUL, NULL, 0, 0 },
		{ L("\0\r\n"), 512, LINE_NUL, NULL, 0, 0 },
		{ L("abc\0"), 512, LINE_NUL, NULL, 0, 0 },                       /* before any CRLF */
		{ L("a\r\0\n"), 512, LINE_NUL, NULL, 0, 0 },
		/* small max: the bound includes the CRLF */
		{ L("abc\r\n"), 5, LINE_OK, L("abc"), 5 },
		{ L("abcd\r\n"), 5, LINE_TOOLONG, NULL, 0, 0 },
		{ L("abcd\r"), 5, LINE_TOOLONG, NULL, 0, 0 },   /* CRLF could only make it 6 */
		{ L("abc\r"), 5, LINE_AGAIN, NULL, 0, 0 },
		{ L("abcde"), 5, LINE_TOOLONG, NULL, 0, 0 },
		{ L("abcd"), 5, LINE_AGAIN, NULL, 0, 0 },
		{ L("abcde\0"), 5, LINE_TOOLONG, NULL, 0, 0 },  /* NUL past the bound: too long first */
		{ L("abcd\n"), 5, LINE_BARELF, L("abcd"), 5 },
		{ L("abcde\n"), 5, LINE_TOOLONG, NULL, 0, 0 },
		{ L("\r\n"), 2, LINE_OK, L(""), 2 },
		{ L("a"), 1, LINE_TOOLONG, NULL, 0, 0 },
	};

	for (size_t i = 0; i < NELEM(cases); i++) {
		struct buf b;
		struct line ln;
		ROW("%zu: %zu bytes, max %zu", i, cases[i].len, cases[i].max);
		buf_init(&b, 4096);
		CHECK_EQ_INT(buf_append(&b, cases[i].in, cases[i].len), 0);
		memset(&ln, 0, sizeof(ln));
		int st = smtp_line_read(&b, &ln, cases[i].max);
		CHECK_STR(status_name(st), status_name(cases[i].st));
		if (cases[i].line != NULL && st == cases[i].st) {
			CHECK(ln.p == buf_head(&b));
			CHECK_MEM(ln.p, ln.len, cases[i].line, cases[i].line_len);
			CHECK_EQ_U64(ln.consumed, cases[i].consumed);
		}
		CHECK_EQ_U64(buf_used(&b), cases[i].len);   /* reading never consumes */
		buf_free(&b);
	}
}

/* The RFC 5321 bounds: a 512-byte command line (CRLF included) is fine
 * with max 512, 513 bytes is too long; likewise 1000 for text lines. */
static void test_bounds(void)
{
	static const struct {
		size_t total;     /* bytes in the line including CRLF */
		size_t max;
		int st;
	} cases[] = {
		{ 511, SMTP_CMD_MAX, LINE_OK },
		{ 512, SMTP_CMD_MAX, LINE_OK },
		{ 513, SMTP_CMD_MAX, LINE_TOOLONG },
		{ 514, SMTP_CMD_MAX, LINE_TOOLONG },
		{ 100000, SMTP_CMD_MAX, LINE_TOOLONG },
		{ 1000, SMTP_TEXT_MAX, LINE_OK },
		{ 1001, SMTP_TEXT_MAX, LINE_TOOLONG },
		{ 512, SMTP_REPLY_MAX, LINE_OK },
		{ 513, SMTP_REPLY_MAX, LINE_TOOLONG },
	};

	for (size_t i = 0; i < NELEM(cases); i++) {
		size_t n = cases[i].total;
		char *s = malloc(n);
		struct buf b;
		struct line ln;
		ROW("%zu bytes, max %zu", n, cases[i].max);
		memset(s, 'x', n - 2);
		s[n - 2] = '\r';
		s[n - 1] = '\n';
		buf_init(&b, n);
		CHECK_EQ_INT(buf_append(&b, s, n), 0);
		int st = smtp_line_read(&b, &ln, cases[i].max);
		CHECK_STR(status_name(st), status_name(cases[i].st));
		if (st == LINE_OK) {
			CHECK_EQ_U64(ln.len, n - 2);
			CHECK_EQ_U64(ln.consumed, n);
		}
		/* Without the LF yet: max-1 bytes may still complete, max may not. */
		buf_reset(&b);
		CHECK_EQ_INT(buf_append(&b, s, n - 1), 0);
		st = smtp_line_read(&b, &ln, cases[i].max);
		CHECK_STR(status_name(st), status_name(n - 1 < cases[i].max ? LINE_AGAIN : LINE_TOOLONG));
		buf_free(&b);
		free(s);
	}
}

static void test_skip(void)
{
	static const struct {
		const char *in;
		size_t len;
		int ret;
		const char *rest;
		size_t rest_len;
	} cases[] = {
		{ L("junk\r\nNEXT\r\n"), 1, L("NEXT\r\n") },
		{ L("junk\nNEXT\r\n"), 1, L("NEXT\r\n") },      /* a bare LF also ends it */
		{ L("\r\n"), 1, L("") },
		{ L("junk"), 0, L("") },
		{ L("junk\r"), 0, L("\r") },                     /* CR kept: LF may follow */
		{ L("\r"), 0, L("\r") },
		{ L(""), 0, L("") },
		{ L("a\0b\r\nc"), 1, L("c") },                   /* NUL bytes are skipped too */
		{ L("a\r\r"), 0, L("\r") },
	};

	for (size_t i = 0; i < NELEM(cases); i++) {
		struct buf b;
		ROW("%zu", i);
		buf_init(&b, 64);
		CHECK_EQ_INT(buf_append(&b, cases[i].in, cases[i].len), 0);
		CHECK_EQ_INT(smtp_line_skip(&b), cases[i].ret);
		CHECK_MEM(buf_head(&b), buf_used(&b), cases[i].rest, cases[i].rest_len);
		buf_free(&b);
	}
	ROWS_END();
	/* A CR kept at the end of one read pairs with the LF of the next. */
	struct buf b;
	struct line ln;
	buf_init(&b, 64);
	CHECK_EQ_INT(buf_append(&b, "junk\r", 5), 0);
	CHECK_EQ_INT(smtp_line_skip(&b), 0);
	CHECK_EQ_INT(buf_append(&b, "\nNOOP\r\n", 7), 0);
	CHECK_EQ_INT(smtp_line_skip(&b), 1);
	CHECK_EQ_INT(smtp_line_read(&b, &ln, 512), LINE_OK);
	CHECK_MEM(ln.p, ln.len, "NOOP", 4);
	buf_free(&b);
}

/* A reader loop as smtpd runs it: an over-long line arrives in pieces,
 * the buffer never grows past its cap, and the next command is intact. */
static void test_toolong_recovery(void)
{
	enum { CAP = SMTP_CMD_MAX };
	const size_t junk = 20000;
	size_t total = junk + 2 + 6 + 6;
	char *in = malloc(total);
	struct buf b;
	const char *got[4];
	size_t ngot = 0, toolong = 0;
	int skipping = 0;
	char lines[4][16];

	memset(in, 'A', junk);
	memcpy(in + junk, "\r\nQUIT\r\nNOOP\r\n", 14);
	buf_init(&b, CAP);
	for (size_t off = 0; off < total;) {
		size_t n = total - off < 97 ? total - off : 97;
		if (n > buf_room(&b))
			n = buf_room(&b);
		CHECK(n > 0);
		if (n == 0)
			break;
		CHECK_EQ_INT(buf_append(&b, in + off, n), 0);
		off += n;
		for (;;) {
			struct line ln;
			if (skipping) {
				if (!smtp_line_skip(&b))
					break;
				skipping = 0;
			}
			int st = smtp_line_read(&b, &ln, SMTP_CMD_MAX);
			if (st == LINE_AGAIN)
				break;
			if (st == LINE_TOOLONG) {
				toolong++;
				skipping = 1;
				continue;
			}
			CHECK_EQ_INT(st, LINE_OK);
			if (st != LINE_OK || ngot >= 4)
				break;
			snprintf(lines[ngot], sizeof(lines[0]), "%.*s", (int)ln.len, ln.p);
			got[ngot] = lines[ngot];
			ngot++;
			buf_drain(&b, ln.consumed);
		}
		CHECK(buf_used(&b) <= CAP);
	}
	CHECK_EQ_U64(toolong, 1);
	CHECK_EQ_U64(ngot, 2);
	if (ngot == 2) {
		CHECK_STR(got[0], "QUIT");
		CHECK_STR(got[1], "NOOP");
	}
	CHECK(b.size <= CAP + 1);
	buf_free(&b);
	free(in);
}

static const char batch[] = "EHLO a\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n";
static const char *const batch_lines[] = { "EHLO a", "MAIL FROM:<a@b.example>", "RCPT TO:<c@d.example>",
                                           "DATA" };

/* Feed pieces [0,c1) [c1,c2) [c2,n) and collect lines; 0 when the lines
 * come out exactly as batch_lines, else 1. */
static int feed(size_t c1, size_t c2)
{
	const size_t n = sizeof(batch) - 1;
	size_t cuts[4] = { 0, c1, c2, n };
	struct buf b;
	size_t got = 0;
	int bad = 0;

	buf_init(&b, SMTP_CMD_MAX);
	for (int k = 0; k < 3; k++) {
		if (buf_append(&b, batch + cuts[k], cuts[k + 1] - cuts[k]) == -1)
			bad = 1;
		for (;;) {
			struct line ln;
			int st = smtp_line_read(&b, &ln, SMTP_CMD_MAX);
			if (st == LINE_AGAIN)
				break;
			if (st != LINE_OK || got >= NELEM(batch_lines) ||
			    ln.len != strlen(batch_lines[got]) || memcmp(ln.p, batch_lines[got], ln.len) != 0) {
				bad = 1;
				break;
			}
			got++;
			buf_drain(&b, ln.consumed);
		}
	}
	if (got != NELEM(batch_lines) || buf_used(&b) != 0)
		bad = 1;
	buf_free(&b);
	return bad;
}

static void test_pipelined_splits(void)
{
	const size_t n = sizeof(batch) - 1;

	/* Every single split point is a case of its own. */
	for (size_t c = 0; c <= n; c++) {
		ROW("split at %zu", c);
		CHECK_EQ_INT(feed(c, c), 0);
	}
	ROWS_END();
	/* And every pair of split points (three pieces). */
	int bad = 0;
	for (size_t c1 = 0; c1 <= n; c1++)
		for (size_t c2 = c1; c2 <= n; c2++)
			bad += feed(c1, c2);
	CHECK_EQ_INT(bad, 0);

	/* One byte at a time. */
	struct buf b;
	size_t got = 0;
	buf_init(&b, SMTP_CMD_MAX);
	for (size_t i = 0; i < n; i++) {
		struct line ln;
		CHECK_EQ_INT(buf_append(&b, batch + i, 1), 0);
		int st = smtp_line_read(&b, &ln, SMTP_CMD_MAX);
		if (st == LINE_OK) {
			CHECK(got < NELEM(batch_lines));
			if (got < NELEM(batch_lines))
				CHECK_MEM(ln.p, ln.len, batch_lines[got], strlen(batch_lines[got]));
			got++;
			buf_drain(&b, ln.consumed);
		} else {
			CHECK_EQ_INT(st, LINE_AGAIN);
		}
	}
	CHECK_EQ_U64(got, NELEM(batch_lines));
	buf_free(&b);
}

int main(int argc, char **argv)
{
	h_init(argc, argv);
	RUN(test_read_table);
	RUN(test_bounds);
	RUN(test_skip);
	RUN(test_toolong_recovery);
	RUN(test_pipelined_splits);
	return h_done();
}
