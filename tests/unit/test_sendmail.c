/*
 * test_sendmail - local submission: shared/msgtext.c (the conversion, the
 * address-list parser, recipient sets, display names) and queued/pickup.c
 * (drop files as hostile input, and T7 end to end in a temporary spool:
 * torn files, planted symlinks/FIFOs/hard links, bad uids, limits).
 * queue_takeover() is stubbed; cfg is this file's.
 */
#include "harness.h"
#include "config.h"
#include "log.h"
#include "msgtext.h"
#include "queued.h"
#include "spool.h"
#include "str.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define L(s) s, sizeof(s) - 1

struct config *cfg;
static char dir[1024];
static char taken[8][QID_MAX];
static int ntaken;

int queue_takeover(const char *qid)
{
	if (ntaken < 8)
		snprintf(taken[ntaken], sizeof(taken[0]), "%s", qid);
	ntaken++;
	return 0;
}

/* --- helpers --- */

struct sinkbuf {
	char *p;
	size_t n;
	int fail_after;       /* >0: the nth call fails */
	int calls;
};

static int sink(void *arg, const char *p, size_t n)
{
	struct sinkbuf *s = arg;
	if (s->fail_after && ++s->calls >= s->fail_after)
		return -1;
	s->p = realloc(s->p, s->n + n + 1);
	memcpy(s->p + s->n, p, n);
	s->n += n;
	s->p[s->n] = '\0';
	return 0;
}

/* Convert in[0..n) fed whole, and again fed one byte at a time: both must
 * give the same bytes (the machine may be fed chunks split anywhere). */
static int convert(const char *in, size_t n, int flags, uint64_t max, const char *extra,
                   struct sinkbuf *out, struct msgtext *m)
{
	struct sinkbuf one = { 0 };
	struct msgtext m1;
	int r, r1 = 0;

	memset(out, 0, sizeof(*out));
	msgtext_init(m, flags, max, sink, out, extra, extra ? strlen(extra) : 0);
	r = msgtext_feed(m, in, n);
	if (r == 0)
		r = msgtext_finish(m);
	msgtext_init(&m1, flags, max, sink, &one, extra, extra ? strlen(extra) : 0);
	for (size_t i = 0; i < n && r1 == 0; i++)
		r1 = msgtext_feed(&m1, in + i, 1);
	if (r1 == 0)
		r1 = msgtext_finish(&m1);
	CHECK_EQ_INT(r1, r);
	CHECK_EQ_INT(m1.err, m->err);
	if (r == 0)
		CHECK_MEM(one.p ? one.p : "", one.n, out->p ? out->p : "", out->n);
	msgtext_free(&m1);
	free(one.p);
	return r;
}

static char *repeat(char c, size_t n)
{
	char *p = malloc(n + 1);
	memset(p, c, n);
	p[n] = '\0';
	return p;
}

/* --- msgtext conversion --- */

static void test_convert_table(void)
{
	static const struct {
		const char *in;
		size_t len;
		int flags;
		const char *extra;
		const char *out;     /* NULL: an error is expected */
		int err;
		int seen;
	} cases[] = {
		{ L("Subject: a\nTo: b@c\n\nbody\n"), 0, NULL,
		  "Subject: a\r\nTo: b@c\r\n\r\nbody\r\n", 0, 0 },
		/* CRLF stays CRLF, never doubled */
		{ L("Subject: a\r\n\r\nbody\r\nx\r\n"), 0, NULL, "Subject: a\r\n\r\nbody\r\nx\r\n", 0, 0 },
		/* bare CR ends a line too, as smtpd's normalize mode */
		{ L("S: a\rT: b\r\rx\ry"), 0, NULL, "S: a\r\nT: b\r\n\r\nx\r\ny\r\n", 0, 0 },
		{ L("S: a\r\r\nx"), 0, NULL, "S: a\r\n\r\nx\r\n", 0, 0 },
		/* no header at all: the blank line is inserted first */
		{ L("hello world\nline2\n"), 0, NULL, "\r\nhello world\r\nline2\r\n", 0, 0 },
		{ L(""), 0, NULL, "\r\n", 0, 0 },
		{ L("\n"), 0, NULL, "\r\n", 0, 0 },
		{ L("\nbody"), 0, NULL, "\r\nbody\r\n", 0, 0 },
		/* the last line gets its line end */
		{ L("Subject: x"), 0, NULL, "Subject: x\r\n\r\n", 0, 0 },
		{ L("Subject: x\n\nno newline"), 0, NULL, "Subject: x\r\n\r\nno newline\r\n", 0, 0 },
		/* a body without a blank line before it */
		{ L("Subject: x\nthis is body\n"), 0, NULL, "Subject: x\r\n\r\nthis is body\r\n", 0, 0 },
		{ L("Subject: x\n: not a field\n"), 0, NULL, "Subject: x\r\n\r\n: not a field\r\n", 0, 0 },
		{ L("X-\xc3\xa4: 8-bit name\n"), 0, NULL, "\r\nX-\xc3\xa4: 8-bit name\r\n", 0, 0 },
		{ L("From someone Mon Jan 1\nSubject: x\n"), 0, NULL,
		  "\r\nFrom someone Mon Jan 1\r\nSubject: x\r\n", 0, 0 },
		/* a continuation line needs a field before it */
		{ L(" indented\nSubject: x\n"), 0, NULL, "\r\n indented\r\nSubject: x\r\n", 0, 0 },
		{ L("Subject: a\n folded\n\tmore\n\nb"), 0, NULL,
		  "Subject: a\r\n folded\r\n\tmore\r\n\r\nb\r\n", 0, 0 },
		/* obs-optional: WSP before the colon */
		{ L("Subject : x\n\n"), 0, NULL, "Subject : x\r\n\r\n", 0, 0 },
		/* Bcc: removed with its continuation lines, whatever the case */
		{ L("To: a@b\nBcc: x@y,\n  z@w\nCc: c@d\n\nB\n"), MSGTEXT_DROP_BCC, NULL,
		  "To: a@b\r\nCc: c@d\r\n\r\nB\r\n", 0, 0 },
		{ L("bcc : x@y\nBCC:\nSubject: s\n\n"), MSGTEXT_DROP_BCC, NULL, "Subject: s\r\n\r\n", 0, 0 },
		{ L("Subject: s\nBcc: last@x\n"), MSGTEXT_DROP_BCC, "Date: d\r\n",
		  "Subject: s\r\nDate: d\r\n\r\n", 0, 0 },
		{ L("Bcc: kept@x\n\n"), 0, NULL, "Bcc: kept@x\r\n\r\n", 0, 0 },
		/* "Bcc:" in the body is body */
		{ L("S: x\n\nBcc: y\n"), MSGTEXT_DROP_BCC, NULL, "S: x\r\n\r\nBcc: y\r\n", 0, 0 },
		{ L("Bccx: kept\n\n"), MSGTEXT_DROP_BCC, NULL, "Bccx: kept\r\n\r\n", 0, 0 },
		/* extra headers go at the end of the header section */
		{ L("Subject: s\n\nbody\n"), 0, "Date: d\r\nMessage-ID: <m@h>\r\n",
		  "Subject: s\r\nDate: d\r\nMessage-ID: <m@h>\r\n\r\nbody\r\n", 0, 0 },
		{ L("just a body"), 0, "From: f\r\n", "From: f\r\n\r\njust a body\r\n", 0, 0 },
		{ L(""), 0, "From: f\r\n", "From: f\r\n\r\n", 0, 0 },
		/* what is there */
		{ L("from: a\nDATE: b\nmessage-id: <c>\n\n"), 0, NULL,
		  "from: a\r\nDATE: b\r\nmessage-id: <c>\r\n\r\n", 0,
		  MSGTEXT_SEEN_FROM | MSGTEXT_SEEN_DATE | MSGTEXT_SEEN_MSGID },
		{ L("Subject: x\n\nFrom: body\nDate: body\n"), 0, NULL,
		  "Subject: x\r\n\r\nFrom: body\r\nDate: body\r\n", 0, 0 },
		{ L("Message-IDs: x\nX-From: y\n\n"), 0, NULL, "Message-IDs: x\r\nX-From: y\r\n\r\n", 0, 0 },
		/* NUL anywhere */
		{ L("Subject: a\0b\n"), 0, NULL, NULL, MSGTEXT_ERR_NUL, 0 },
		{ L("S: a\n\nbody\0"), 0, NULL, NULL, MSGTEXT_ERR_NUL, 0 },
		{ L("\0"), 0, NULL, NULL, MSGTEXT_ERR_NUL, 0 },
	};

	for (size_t i = 0; i < NELEM(cases); i++) {
		struct sinkbuf out;
		struct msgtext m;
		ROW("%zu: %s", i, h_esc(cases[i].in, cases[i].len));
		int r = convert(cases[i].in, cases[i].len, cases[i].flags, 0, cases[i].extra, &out, &m);
		if (cases[i].out == NULL) {
			CHECK_EQ_INT(r, -1);
			CHECK_EQ_INT(m.err, cases[i].err);
		} else {
			CHECK_EQ_INT(r, 0);
			CHECK_MEM(out.p ? out.p : "", out.n, cases[i].out, strlen(cases[i].out));
			CHECK_EQ_INT(m.seen, cases[i].seen);
			/* size counts everything but the extra headers */
			size_t extra = cases[i].extra ? strlen(cases[i].extra) : 0;
			CHECK_EQ_U64(m.size, out.n - extra);
		}
		msgtext_free(&m);
		free(out.p);
	}
}

static void test_convert_long_lines(void)
{
	struct sinkbuf out;
	struct msgtext m;
	char *b = repeat('b', 2000), *want;
	char in[4200];

	/* A body line of 2000 octets: wrapped at 998 with plain CRLF. */
	snprintf(in, sizeof(in), "S: x\n\n%s\n", b);
	CHECK_EQ_INT(convert(in, strlen(in), 0, 0, NULL, &out, &m), 0);
	want = malloc(4200);
	snprintf(want, 4200, "S: x\r\n\r\n%.998s\r\n%.998s\r\n%.4s\r\n", b, b, b);
	CHECK_MEM(out.p, out.n, want, strlen(want));
	msgtext_free(&m);
	free(out.p);

	/* Exactly 998 octets: untouched. */
	snprintf(in, sizeof(in), "S: x\n\n%.998s\n", b);
	CHECK_EQ_INT(convert(in, strlen(in), 0, 0, NULL, &out, &m), 0);
	snprintf(want, 4200, "S: x\r\n\r\n%.998s\r\n", b);
	CHECK_MEM(out.p, out.n, want, strlen(want));
	msgtext_free(&m);
	free(out.p);

	/* A header line: folded with CRLF SP, so the field goes on. */
	snprintf(in, sizeof(in), "X-Long: %.1500s\nS: y\n\n", b);
	CHECK_EQ_INT(convert(in, strlen(in), 0, 0, NULL, &out, &m), 0);
	snprintf(want, 4200, "X-Long: %.990s\r\n %.510s\r\nS: y\r\n\r\n", b, b);
	CHECK_MEM(out.p, out.n, want, strlen(want));
	msgtext_free(&m);
	free(out.p);

	/* A long line without any header: no field name overflows. */
	CHECK_EQ_INT(convert(b, 2000, 0, 0, NULL, &out, &m), 0);
	snprintf(want, 4200, "\r\n%.998s\r\n%.998s\r\n%.4s\r\n", b, b, b);
	CHECK_MEM(out.p, out.n, want, strlen(want));
	msgtext_free(&m);
	free(out.p);

	/* Every output line is at most 998 octets. */
	snprintf(in, sizeof(in), "%.1200s: v\n%.1999s", b, b);
	CHECK_EQ_INT(convert(in, strlen(in), 0, 0, NULL, &out, &m), 0);
	size_t col = 0, worst = 0;
	for (size_t i = 0; i < out.n; i++) {
		if (out.p[i] == '\r' && i + 1 < out.n && out.p[i + 1] == '\n') {
			i++;
			col = 0;
			continue;
		}
		CHECK(out.p[i] != '\r' && out.p[i] != '\n');
		if (++col > worst)
			worst = col;
	}
	CHECK_EQ_U64(worst, 998);
	msgtext_free(&m);
	free(out.p);
	free(b);
	free(want);
}

static void test_convert_limits(void)
{
	struct sinkbuf out;
	struct msgtext m;

	/* max counts output bytes: "\r\n" + "abc\r\n" = 7 */
	ROW("exactly max");
	CHECK_EQ_INT(convert(L("abc\n"), 0, 7, NULL, &out, &m), 0);
	msgtext_free(&m);
	free(out.p);
	ROW("one over max");
	CHECK_EQ_INT(convert(L("abc\n"), 0, 6, NULL, &out, &m), -1);
	CHECK_EQ_INT(m.err, MSGTEXT_ERR_SIZE);
	msgtext_free(&m);
	free(out.p);
	ROW("bare LF counted as CRLF");
	CHECK_EQ_INT(convert(L("\n\n\n"), 0, 5, NULL, &out, &m), -1);
	msgtext_free(&m);
	free(out.p);
	ROW("extra headers not counted");
	CHECK_EQ_INT(convert(L("abc\n"), 0, 7, "X-Extra: 1234567890\r\n", &out, &m), 0);
	msgtext_free(&m);
	free(out.p);

	ROW("8-bit detected");
	CHECK_EQ_INT(convert(L("S: x\n\n\xe2\x82\xac\n"), 0, 0, NULL, &out, &m), 0);
	CHECK_EQ_INT(m.eightbit, 1);
	msgtext_free(&m);
	free(out.p);
	CHECK_EQ_INT(convert(L("S: x\n\nascii\n"), 0, 0, NULL, &out, &m), 0);
	CHECK_EQ_INT(m.eightbit, 0);
	msgtext_free(&m);
	free(out.p);

	ROW("measure only");
	msgtext_init(&m, 0, 0, NULL, NULL, NULL, 0);
	CHECK_EQ_INT(msgtext_feed(&m, L("S: x\n\nbody\n")), 0);
	CHECK_EQ_INT(msgtext_finish(&m), 0);
	CHECK_EQ_U64(m.size, strlen("S: x\r\n\r\nbody\r\n"));
	msgtext_free(&m);

	ROW("sink failure");
	struct sinkbuf fail = { .fail_after = 1 };
	char *big = repeat('x', 20000);
	msgtext_init(&m, 0, 0, sink, &fail, NULL, 0);
	msgtext_feed(&m, big, 20000);
	CHECK_EQ_INT(msgtext_finish(&m), -1);
	CHECK_EQ_INT(m.err, MSGTEXT_ERR_SINK);
	msgtext_free(&m);
	free(big);

	ROW("captured To/Cc/Bcc bounded");
	char *addrs = malloc(MSGTEXT_ADDRS_MAX + 100);
	memcpy(addrs, "To: ", 4);
	memset(addrs + 4, 'a', MSGTEXT_ADDRS_MAX + 10);
	msgtext_init(&m, MSGTEXT_CAPTURE, 0, NULL, NULL, NULL, 0);
	CHECK_EQ_INT(msgtext_feed(&m, addrs, MSGTEXT_ADDRS_MAX + 14), -1);
	CHECK_EQ_INT(m.err, MSGTEXT_ERR_ADDRS);
	msgtext_free(&m);
	free(addrs);

	ROW("after an error nothing more");
	msgtext_init(&m, 0, 0, NULL, NULL, NULL, 0);
	CHECK_EQ_INT(msgtext_feed(&m, L("a\0b")), -1);
	CHECK_EQ_INT(msgtext_feed(&m, L("more")), -1);
	CHECK_EQ_INT(msgtext_finish(&m), -1);
	CHECK_EQ_INT(m.err, MSGTEXT_ERR_NUL);
	msgtext_free(&m);
}

static void test_capture(void)
{
	static const char in[] = "To: a@b,\n  \"Doe, J\" <j@x>\nSubject: s\ncc: c@d\n"
	                         "Bcc: (hidden) h@i\nTo: undisclosed:;\n\nTo: body@x\n";
	struct msgtext m;
	const char *p;

	msgtext_init(&m, MSGTEXT_CAPTURE | MSGTEXT_DROP_BCC, 0, NULL, NULL, NULL, 0);
	CHECK_EQ_INT(msgtext_feed(&m, in, sizeof(in) - 1), 0);
	CHECK_EQ_INT(msgtext_finish(&m), 0);
	p = buf_head(&m.addrs);
	/* each value as written after the colon, folding removed, NUL-ended */
	static const char want[] = " a@b,  \"Doe, J\" <j@x>\0 c@d\0 (hidden) h@i\0 undisclosed:;\0";
	CHECK_MEM(p, buf_used(&m.addrs), want, sizeof(want) - 1);

	struct msgtext_rcpts r;
	char err[256];
	msgtext_rcpts_init(&r, 10);
	CHECK_EQ_INT(msgtext_rcpts_from_headers(&r, &m, "host.example", err, sizeof(err)), 0);
	CHECK_EQ_U64(r.n, 4);
	if (r.n == 4) {
		CHECK_STR(r.v[0], "a@b");
		CHECK_STR(r.v[1], "j@x");
		CHECK_STR(r.v[2], "c@d");
		CHECK_STR(r.v[3], "h@i");
	}
	msgtext_rcpts_free(&r);
	msgtext_free(&m);
}

/* --- address lists --- */

struct collect {
	char out[1024];
	int fail_on;          /* >0: the callback fails on that address */
	int n;
};

static int collect_cb(void *arg, const char *addr)
{
	struct collect *c = arg;
	if (++c->n == c->fail_on)
		return -1;
	if (c->out[0])
		str_append(c->out, "|", sizeof(c->out));
	str_append(c->out, addr, sizeof(c->out));
	return 0;
}

static void test_addrlist(void)
{
	static const struct {
		const char *in;
		const char *want;    /* NULL: syntax error */
	} cases[] = {
		{ "a@b", "a@b" },
		{ "a@b, c@d", "a@b|c@d" },
		{ " a@b ,c@d ", "a@b|c@d" },
		{ "root", "root" },
		{ "\"Doe, John\" <j@x.org>", "j@x.org" },
		{ "\"Doe, John\" <j@x.org>, \"Roe; Jane\" <r@y.org>", "j@x.org|r@y.org" },
		{ "\"Joe \\\"J\\\" Doe\" <j@x>", "j@x" },
		{ "John (the man, really) Doe <j@x.org>", "j@x.org" },
		{ "j (comment) @ x . org", "j@x.org" },
		{ "a@b (x (nested, y) z)", "a@b" },
		{ "a@b (with \\) escaped paren)", "a@b" },
		{ "list: a@b, c@d;, e@f", "a@b|c@d|e@f" },
		{ "list: a@b, c@d; e@f", "a@b|c@d|e@f" },
		{ "\"My List\": Name <a@b>, c@d;", "a@b|c@d" },
		{ "undisclosed-recipients:;", "" },
		{ "undisclosed-recipients: ;", "" },
		{ "g: a@b", "a@b" },                 /* group left open at the end */
		{ "<@r1,@r2:a@b>", "a@b" },
		{ "Name <@r1:a@b>", "a@b" },
		{ "a@b,,c@d,", "a@b|c@d" },
		{ ",", "" },
		{ "", "" },
		{ "  (only a comment) ", "" },
		{ "\"quoted local\"@x.org", "\"quoted local\"@x.org" },
		{ "a@[192.0.2.1]", "a@[192.0.2.1]" },
		{ "a@b <c@d>", "c@d" },              /* lenient display name */
		{ "=?UTF-8?B?SsO2cmc=?= <j@x>", "j@x" },
		{ "J\xc3\xb6rg <j\xc3\xb6@x>", "j\xc3\xb6@x" },
		{ "a@b\r\n\tc@d", NULL },             /* folded without a comma */
		{ "a@b,\r\n\tc@d", "a@b|c@d" },
		{ "Name <a@b", NULL },
		{ "a@b>", NULL },
		{ "<<a@b>>", NULL },
		{ "John Doe a@b", NULL },
		{ "John Doe", NULL },
		{ "a@b; c@d", NULL },
		{ "a:b:c", NULL },
		{ "g: <a@b>: c", NULL },
		{ "(unclosed comment a@b", NULL },
		{ "a@b)", NULL },
		{ "\"unterminated a@b", NULL },
		{ "a@[1.2.3.4", NULL },
		{ "a@[1.[2]", NULL },
		{ "<>", NULL },
		{ "Name <> ", NULL },
		{ "Name <a@b> trailing", NULL },
		{ "a\x01@b", NULL },
		{ "a@b\x7f", NULL },
		{ "a\\@b", NULL },
		{ "a@b ]", NULL },
	};

	for (size_t i = 0; i < NELEM(cases); i++) {
		struct collect c = { .out = "" };
		const char *why = NULL;
		ROW("%zu: %s", i, cases[i].in);
		int r = msgtext_addrlist(cases[i].in, strlen(cases[i].in), collect_cb, &c, &why);
		if (cases[i].want == NULL) {
			CHECK_EQ_INT(r, -1);
			CHECK(why != NULL);
		} else {
			CHECK_EQ_INT(r, 0);
			CHECK_STR(c.out, cases[i].want);
		}
	}
	ROWS_END();
	/* The callback's failure stops the list, and its value comes back. */
	struct collect c = { .out = "", .fail_on = 2 };
	const char *why = "x";
	CHECK_EQ_INT(msgtext_addrlist(L("a@b, c@d, e@f"), collect_cb, &c, &why), -1);
	CHECK(why == NULL);
	CHECK_STR(c.out, "a@b");
	/* A longer address than MSGTEXT_ADDR_MAX is refused, not cut. */
	char *lp = repeat('x', MSGTEXT_ADDR_MAX + 10);
	c = (struct collect){ .out = "" };
	CHECK_EQ_INT(msgtext_addrlist(lp, strlen(lp), collect_cb, &c, &why), -1);
	free(lp);
}

static void test_mailbox_and_sender(void)
{
	static const struct {
		const char *in;
		int sender;
		const char *want;    /* NULL: invalid */
	} cases[] = {
		{ "root", 0, "root@host.example" },
		{ "user@Example.ORG", 0, "user@example.org" },
		{ "\"a@b\"", 0, "\"a@b\"@host.example" },
		{ "\"a b\"@x.org", 0, "\"a b\"@x.org" },
		{ "postmaster", 0, "postmaster@host.example" },
		{ "j\xc3\xb6rg@x.org", 0, "j\xc3\xb6rg@x.org" },
		{ "a@", 0, NULL },
		{ "@x.org", 0, NULL },
		{ "", 0, NULL },
		{ "a@b@c", 0, NULL },
		{ "a..b@x.org", 0, NULL },
		{ "a@-bad-.org", 0, NULL },
		{ "j\xc3@x.org", 0, NULL },          /* broken UTF-8 */
		{ "", 1, "" },
		{ "<>", 1, "" },
		{ "<a@b.org>", 1, "a@b.org" },
		{ "cron", 1, "cron@host.example" },
		{ "<cron>", 1, "cron@host.example" },
		{ "<a@b.org", 1, NULL },
		{ "<<>>", 1, NULL },
	};

	for (size_t i = 0; i < NELEM(cases); i++) {
		struct addr a;
		const char *why = NULL;
		ROW("%zu: %s", i, cases[i].in);
		int r = cases[i].sender ? msgtext_sender(cases[i].in, "host.example", &a, &why)
		                        : msgtext_mailbox(cases[i].in, "host.example", &a, &why);
		if (cases[i].want == NULL) {
			CHECK_EQ_INT(r, -1);
			CHECK(why != NULL);
		} else {
			CHECK_EQ_INT(r, 0);
			CHECK_STR(a.text, cases[i].want);
			if (cases[i].sender && !cases[i].want[0])
				CHECK_EQ_INT(a.is_null, 1);
		}
	}
	ROWS_END();
	struct addr a;
	const char *why;
	CHECK_EQ_INT(msgtext_mailbox("root", "", &a, &why), -1);
	/* login names: the whole name is the local part */
	static const struct {
		const char *login;
		const char *want;
	} logins[] = {
		{ "root", "root@h.example" },
		{ "john.doe", "john.doe@h.example" },
		{ "John Doe", "\"John Doe\"@h.example" },
		{ "user@corp", "\"user@corp\"@h.example" },
		{ "a\"b\\c", "\"a\\\"b\\\\c\"@h.example" },
		{ ".dot", "\".dot\"@h.example" },
		{ "tab\there", NULL },
		{ "", NULL },
	};
	for (size_t i = 0; i < NELEM(logins); i++) {
		ROW("login %zu: %s", i, logins[i].login);
		int r = msgtext_login(logins[i].login, "h.example", &a, &why);
		if (logins[i].want == NULL) {
			CHECK_EQ_INT(r, -1);
		} else {
			CHECK_EQ_INT(r, 0);
			CHECK_STR(a.text, logins[i].want);
		}
	}
	CHECK_EQ_INT(msgtext_mailbox("root", NULL, &a, &why), -1);
}

static void test_rcpts(void)
{
	struct msgtext_rcpts r;
	char err[256];

	msgtext_rcpts_init(&r, 3);
	CHECK_EQ_INT(msgtext_rcpts_add(&r, "a@x.org", "h.example", err, sizeof(err)), 0);
	CHECK_EQ_INT(msgtext_rcpts_add(&r, "a@X.ORG", "h.example", err, sizeof(err)), 0);  /* dup */
	CHECK_EQ_INT(msgtext_rcpts_add(&r, "root", "h.example", err, sizeof(err)), 0);
	CHECK_EQ_INT(msgtext_rcpts_add(&r, "root@h.example", "h.example", err, sizeof(err)), 0);
	CHECK_EQ_U64(r.n, 2);
	CHECK_EQ_INT(r.utf8, 0);
	CHECK_EQ_INT(msgtext_rcpts_add(&r, "bad@", "h.example", err, sizeof(err)), -1);
	CHECK_CONTAINS(err, "bad@");
	CHECK_EQ_INT(msgtext_rcpts_add(&r, "bad\x01@x", "h.example", err, sizeof(err)), -1);
	CHECK(strchr(err, '\x01') == NULL);     /* escaped for stderr and logs */
	CHECK_EQ_INT(msgtext_rcpts_add(&r, "j\xc3\xb6@x.org", "h.example", err, sizeof(err)), 0);
	CHECK_EQ_INT(r.utf8, 1);
	CHECK_EQ_INT(msgtext_rcpts_add(&r, "four@x.org", "h.example", err, sizeof(err)), -2);
	CHECK_CONTAINS(err, "too many recipients");
	/* a duplicate is fine even when full */
	CHECK_EQ_INT(msgtext_rcpts_add(&r, "a@x.org", "h.example", err, sizeof(err)), 0);
	CHECK_EQ_U64(r.n, 3);
	CHECK_STR(r.v[0], "a@x.org");
	CHECK_STR(r.v[1], "root@h.example");
	msgtext_rcpts_free(&r);

	/* Many distinct addresses: order kept, every duplicate found. */
	msgtext_rcpts_init(&r, 5000);
	int bad = 0;
	for (int round = 0; round < 2; round++)
		for (int i = 0; i < 5000; i++) {
			char a[64];
			snprintf(a, sizeof(a), "u%d@x.org", i);
			bad |= msgtext_rcpts_add(&r, a, "h", err, sizeof(err)) != 0;
		}
	CHECK_EQ_INT(bad, 0);
	CHECK_EQ_U64(r.n, 5000);
	CHECK_STR(r.v[4999], "u4999@x.org");
	msgtext_rcpts_free(&r);
}

static void test_phrase(void)
{
	static const struct {
		const char *in;
		const char *want;    /* NULL: refused */
	} cases[] = {
		{ "John Doe", "John Doe" },
		{ "Cron Daemon", "Cron Daemon" },
		{ "CronDaemon", "CronDaemon" },
		{ "John Q. Public", "\"John Q. Public\"" },
		{ "Doe, John", "\"Doe, John\"" },
		{ "a\"b\\c", "\"a\\\"b\\\\c\"" },
		{ " leading", "\" leading\"" },
		{ "two  spaces", "\"two  spaces\"" },
		{ "=?utf-8?q?x?=", "\"=?utf-8?q?x?=\"" },
		{ "J\xc3\xb6rg", "=?UTF-8?B?SsO2cmc=?=" },
		{ "\xc3\xb6", "=?UTF-8?B?w7Y=?=" },
		{ "tab\there", NULL },
		{ "nl\nhere", NULL },
		{ "del\x7f", NULL },
		{ "", "" },
	};
	char out[1024];

	for (size_t i = 0; i < NELEM(cases); i++) {
		ROW("%zu: %s", i, cases[i].in);
		int r = msgtext_phrase(cases[i].in, out, sizeof(out));
		if (cases[i].want == NULL) {
			CHECK_EQ_INT(r, -1);
		} else {
			CHECK_EQ_INT(r, 0);
			CHECK_STR(out, cases[i].want);
		}
	}
	ROWS_END();
	/* 100 two-byte characters: encoded-words of at most 75 characters,
	 * never splitting a character, folded with CRLF SP. */
	char name[201];
	for (int i = 0; i < 100; i++)
		memcpy(name + 2 * i, "\xc3\xa9", 2);
	name[200] = '\0';
	CHECK_EQ_INT(msgtext_phrase(name, out, sizeof(out)), 0);
	int words = 0, longest = 0;
	for (char *w = out; w != NULL;) {
		char *next = strstr(w, "\r\n ");
		int len = next ? (int)(next - w) : (int)strlen(w);
		words++;
		if (len > longest)
			longest = len;
		CHECK(strncmp(w, "=?UTF-8?B?", 10) == 0 && strncmp(w + len - 2, "?=", 2) == 0);
		/* 44 octets (22 characters) per word: base64 of an even count */
		w = next ? next + 3 : NULL;
	}
	CHECK(longest <= 75);
	CHECK_EQ_INT(words, 5);
	CHECK_EQ_INT(msgtext_phrase(name, out, 40), -1);   /* does not fit: refused */
	CHECK_EQ_INT(msgtext_phrase("John Q. Public", out, 8), -1);
}

/* --- drop files --- */

static char *drop_bytes(const char *hdr, const char *msg, size_t msglen, const char *trailer,
                        size_t *len)
{
	char t[64];
	size_t hl = strlen(hdr);
	if (trailer == NULL) {
		snprintf(t, sizeof(t), SPOOL_DROP_END "%zu\n", msglen);
		trailer = t;
	}
	size_t tl = strlen(trailer);
	char *p = malloc(hl + msglen + tl + 1);
	memcpy(p, hdr, hl);
	memcpy(p + hl, msg, msglen);
	memcpy(p + hl + msglen, trailer, tl);
	*len = hl + msglen + tl;
	return p;
}

static int tmpfile_with(const char *p, size_t n)
{
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/parse.XXXXXX", dir);
	int fd = mkstemp(path);
	unlink(path);
	if (fd == -1 || write(fd, p, n) != (ssize_t)n) {
		perror("tmpfile");
		exit(2);
	}
	return fd;
}

#define HDR(body) SPOOL_DROP_MAGIC "uid=1000\ntime=1700000000\n" body "\n"

static void test_parse(void)
{
	static const struct {
		const char *hdr;
		const char *msg;
		const char *trailer;    /* NULL: the right one */
		int ok;
		const char *err;        /* substring of the reason */
	} cases[] = {
		{ HDR(""), "To: a@b\n\nhi\n", NULL, 1, NULL },
		{ HDR("sender=<>\nfullname=J\xc3\xb6rg Doe\nt=1\nrcpt=a@b\nrcpt=c@d\n"), "x", NULL, 1, NULL },
		{ HDR(""), "", NULL, 1, NULL },
		{ HDR(""), "no newline at the end", NULL, 1, NULL },
		/* the data holds an end-marker lookalike: the length decides */
		{ HDR(""), "x\nPOSTERN-END 2\n", NULL, 1, NULL },
		{ HDR(""), "hi\n", "", 0, "end marker missing" },
		{ HDR(""), "hi\n", "POSTERN-END 3", 0, "end marker missing" },
		{ HDR(""), "hi\n", "POSTERN-END 4\n", 0, "does not match" },
		{ HDR(""), "hi\n", "POSTERN-END 2\n", 0, "does not match" },
		{ HDR(""), "hi\n", "POSTERN-END \n", 0, "end marker missing" },
		{ HDR(""), "hi\n", "POSTERN-END -3\n", 0, "end marker missing" },
		{ HDR(""), "hi\n", "POSTERN-END 18446744073709551615\n", 0, "does not match" },
		{ HDR(""), "hi\n", "POSTERN-END 99999999999999999999999\n", 0, "end marker" },
		{ HDR(""), "hi\n", "postern-end 3\n", 0, "end marker missing" },
		{ SPOOL_DROP_MAGIC "uid=1000\ntime=1\n", "", "", 0, "not terminated" },
		{ "POSTERN-DROP 2\nuid=1\ntime=1\n\n", "", NULL, 0, "bad magic" },
		{ "POSTERN-QUEUE 1\nqid=X\n\n", "", NULL, 0, "bad magic" },
		{ "", "", "", 0, "bad magic" },
		{ SPOOL_DROP_MAGIC "time=1\n\n", "", NULL, 0, "lacks uid" },
		{ SPOOL_DROP_MAGIC "uid=1\n\n", "", NULL, 0, "lacks time" },
		{ HDR("uid=1001\n"), "", NULL, 0, "repeated key 'uid'" },
		{ HDR("t=1\nt=0\n"), "", NULL, 0, "repeated key 't'" },
		{ HDR("sender=a@b\nsender=c@d\n"), "", NULL, 0, "repeated" },
		{ HDR("shell=/bin/sh\n"), "", NULL, 0, "unknown key 'shell'" },
		{ HDR("noequals\n"), "", NULL, 0, "without '='" },
		{ HDR("t=2\n"), "", NULL, 0, "bad value for 't'" },
		{ HDR("rcpt=\n"), "", NULL, 0, "bad value for 'rcpt'" },
		{ HDR("fullname=a\x01" "b\n"), "", NULL, 0, "control byte" },
		{ HDR("rcpt=a@b\r\n"), "", NULL, 0, "control byte" },
		{ HDR("rcpt=a@b\x7f\n"), "", NULL, 0, "control byte" },
		{ SPOOL_DROP_MAGIC "uid=-1\ntime=1\n\n", "", NULL, 0, "bad value for 'uid'" },
		{ SPOOL_DROP_MAGIC "uid=4294967295\ntime=1\n\n", "", NULL, 0, "bad value for 'uid'" },
		{ SPOOL_DROP_MAGIC "uid=0x10\ntime=1\n\n", "", NULL, 0, "bad value for 'uid'" },
		{ SPOOL_DROP_MAGIC "uid=1\ntime=999999999999999\n\n", "", NULL, 0, "bad value for 'time'" },
		{ HDR("rcpt=1@x\nrcpt=2@x\nrcpt=3@x\nrcpt=4@x\n"), "", NULL, 0, "too many recipients" },
		{ HDR(""), "0123456789abcdefghijkl", NULL, 0, "exceeds smtpd.max_message_size" },
	};

	for (size_t i = 0; i < NELEM(cases); i++) {
		struct pickup_drop d;
		char err[512] = "";
		size_t len;
		char *p = drop_bytes(cases[i].hdr, cases[i].msg, strlen(cases[i].msg), cases[i].trailer,
		                     &len);
		int fd = tmpfile_with(p, len);
		ROW("%zu: %s", i, h_esc(p, len));
		int r = pickup_parse(fd, len, 21, 3, &d, err, sizeof(err));
		if (cases[i].ok) {
			CHECK_EQ_INT(r, 0);
			if (r != 0)
				printf("error: %s\n", err);
			CHECK_EQ_U64(d.data_len, strlen(cases[i].msg));
			CHECK_EQ_U64(d.data_off, strlen(cases[i].hdr));
			CHECK_EQ_INT(d.uid, 1000);
			CHECK_EQ_INT(d.time, 1700000000);
			if (r == 0)
				pickup_drop_free(&d);
		} else {
			CHECK_EQ_INT(r, -1);
			CHECK_CONTAINS(err, cases[i].err);
			CHECK(d.rcpt == NULL && d.nrcpt == 0);
		}
		close(fd);
		free(p);
	}
	ROWS_END();

	/* Every field of a full header. */
	struct pickup_drop d;
	char err[512];
	size_t len;
	char *p = drop_bytes(HDR("sender=<>\nfullname=J\xc3\xb6rg Doe\nt=1\nrcpt=a@b\nrcpt=c@d\n"), "x",
	                     1, NULL, &len);
	int fd = tmpfile_with(p, len);
	CHECK_EQ_INT(pickup_parse(fd, len, 20, 3, &d, err, sizeof(err)), 0);
	CHECK_STR(d.sender, "<>");
	CHECK_EQ_INT(d.has_sender, 1);
	CHECK_STR(d.fullname, "J\xc3\xb6rg Doe");
	CHECK_EQ_INT(d.t, 1);
	CHECK_EQ_U64(d.nrcpt, 2);
	CHECK_STR(d.rcpt[1], "c@d");
	pickup_drop_free(&d);
	close(fd);
	free(p);

	/* Torn at every length: never accepted, never a crash. */
	p = drop_bytes(HDR("rcpt=a@b\n"), "Subject: x\n\nbody\n", 17, NULL, &len);
	int accepted = 0;
	for (size_t cut = 0; cut < len; cut++) {
		fd = tmpfile_with(p, cut);
		if (pickup_parse(fd, cut, 100, 3, &d, err, sizeof(err)) == 0) {
			accepted++;
			pickup_drop_free(&d);
		}
		close(fd);
	}
	CHECK_EQ_INT(accepted, 0);
	free(p);

	/* A header longer than any valid one for max_rcpt. */
	size_t big = (size_t)pickup_hdr_max(3) + 100;
	char *h = malloc(big + 64);
	int n = snprintf(h, big, SPOOL_DROP_MAGIC "uid=1\ntime=1\nfullname=");
	memset(h + n, 'x', big - (size_t)n);
	memcpy(h + big, "\n\n" SPOOL_DROP_END "0\n", 16);
	fd = tmpfile_with(h, big + 16);
	CHECK_EQ_INT(pickup_parse(fd, big + 16, 100, 3, &d, err, sizeof(err)), -1);
	CHECK_CONTAINS(err, "not terminated");
	close(fd);
	free(h);
}

/* --- T7 end to end in a temporary spool --- */

static char drop_name[SPOOL_DROP_NAME_LEN + 1];

static const char *next_name(void)
{
	static unsigned n;
	snprintf(drop_name, sizeof(drop_name), "%032x", ++n);
	return drop_name;
}

/* Write drop/NAME with the header lines given (uid= and time= first). */
static const char *plant(const char *lines, const char *msg, size_t msglen)
{
	char hdr[8192], path[128];
	size_t len;

	snprintf(hdr, sizeof(hdr), SPOOL_DROP_MAGIC "uid=%u\ntime=1700000000\n%s%s\n",
	         (unsigned)getuid(), lines, *lines ? "\n" : "");
	char *p = drop_bytes(hdr, msg, msglen, NULL, &len);
	const char *name = next_name();
	snprintf(path, sizeof(path), SPOOL_DROP "/%s", name);
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0644);
	if (fd == -1 || write(fd, p, len) != (ssize_t)len) {
		perror(path);
		exit(2);
	}
	close(fd);
	free(p);
	return name;
}

#define PLANT(lines, lit) plant(lines, lit, sizeof(lit) - 1)

static int exists(const char *fmt, const char *name)
{
	char path[256];
	struct stat sb;
	snprintf(path, sizeof(path), fmt, name);
	return lstat(path, &sb) == 0;
}

static char *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *p = NULL;
	size_t cap = 0, n = 0;

	if (f == NULL)
		return NULL;
	for (;;) {
		if (n == cap)
			p = realloc(p, cap = cap ? cap * 2 : 4096);
		size_t r = fread(p + n, 1, cap - n, f);
		if (r == 0)
			break;
		n += r;
	}
	fclose(f);
	p = realloc(p, n + 1);
	p[n] = '\0';
	if (len)
		*len = n;
	return p;
}

/* The message data of incoming/QID, its envelope in env. */
static char *incoming(const char *qid, struct spool_env *env)
{
	char err[256];
	int corrupt;
	int fd = spool_msg_open(SPOOL_INCOMING, qid, env, &corrupt, err, sizeof(err));
	if (fd == -1) {
		printf("spool_msg_open %s: %s\n", qid, err);
		return NULL;
	}
	char *p = calloc(1, env->data_len + 1);
	if (pread(fd, p, env->data_len, (off_t)env->data_off) != (ssize_t)env->data_len) {
		free(p);
		p = NULL;
	}
	close(fd);
	return p;
}

static const char *last_qid(void)
{
	return ntaken > 0 && ntaken <= 8 ? taken[ntaken - 1] : "";
}

static int log_has(const char *needle)
{
	char *log = slurp("log/queued.log", NULL);
	int r = log != NULL && strstr(log, needle) != NULL;
	free(log);
	return r;
}

static void test_pickup_args(void)
{
	struct spool_env env;
	const char *name = PLANT("rcpt=a@x.org\nrcpt=root", "Subject: hi\n\nbody\n.\nend");
	int before = ntaken;

	CHECK_EQ_INT(pickup_file(name), PICKUP_DONE);
	CHECK_EQ_INT(ntaken, before + 1);
	CHECK(!exists(SPOOL_DROP "/%s", name));
	char *data = incoming(last_qid(), &env);
	CHECK(data != NULL);
	if (data == NULL)
		return;
	CHECK_STR(env.origin, "sendmail");
	CHECK_STR(env.proto, "sendmail");
	CHECK_STR(env.body, "7bit");
	CHECK_EQ_U64(env.nrcpt, 2);
	CHECK_STR(env.rcpt[0], "a@x.org");
	CHECK_STR(env.rcpt[1], "root@host.example");
	if (getuid() == 0)
		CHECK_STR(env.sender, "root@host.example");   /* login@hostname */
	/* Received first, then the fields, then what was missing */
	char want[256];
	snprintf(want, sizeof(want), "Received: by host.example (postern-sendmail, uid %u)\r\n\tid %s; ",
	         (unsigned)getuid(), env.qid);
	CHECK(strncmp(data, want, strlen(want)) == 0);
	CHECK_CONTAINS(data, "\r\nSubject: hi\r\nFrom: ");
	CHECK_CONTAINS(data, "\r\nDate: Tue, 14 Nov 2023 ");   /* time=1700000000 */
	snprintf(want, sizeof(want), "\r\nMessage-ID: <%s@host.example>\r\n\r\nbody\r\n.\r\nend\r\n",
	         env.qid);
	CHECK_CONTAINS(data, want);
	snprintf(want, sizeof(want), "event=pickup qid=%s uid=%u from=<", env.qid, (unsigned)getuid());
	CHECK(log_has(want));
	snprintf(want, sizeof(want), "nrcpt=2 size=");
	CHECK(log_has(want));
	snprintf(want, sizeof(want), "file=drop/%s", name);
	CHECK(log_has(want));
	free(data);
	spool_env_free(&env);
}

static void test_pickup_t(void)
{
	struct spool_env env;
	static const char msg[] =
	    "From: App <app@x.org>\nDate: Mon, 1 Jan 2024 00:00:00 +0000\nMessage-ID: <keep@x>\n"
	    "To: \"Doe, John\" <john@x.org>,\n  team: ann@x.org, (boss) bob@x.org;\n"
	    "Cc: undisclosed-recipients:;\nBcc: hidden@x.org,\n\tjohn@x.org\nSubject: t\n\nbody\n";
	const char *name = plant("t=1\nrcpt=arg@x.org\nsender=<>", msg, sizeof(msg) - 1);

	CHECK_EQ_INT(pickup_file(name), PICKUP_DONE);
	char *data = incoming(last_qid(), &env);
	CHECK(data != NULL);
	if (data == NULL)
		return;
	CHECK_EQ_U64(env.nrcpt, 5);
	if (env.nrcpt == 5) {
		CHECK_STR(env.rcpt[0], "arg@x.org");
		CHECK_STR(env.rcpt[1], "john@x.org");
		CHECK_STR(env.rcpt[2], "ann@x.org");
		CHECK_STR(env.rcpt[3], "bob@x.org");
		CHECK_STR(env.rcpt[4], "hidden@x.org");
	}
	CHECK_STR(env.sender, "");            /* -f "<>" */
	CHECK(strstr(data, "Bcc") == NULL && strstr(data, "hidden") == NULL);
	/* present headers are kept and not added again */
	CHECK_CONTAINS(data, "\r\nFrom: App <app@x.org>\r\n");
	CHECK_CONTAINS(data, "\r\nMessage-ID: <keep@x>\r\n");
	CHECK(strstr(strstr(data, "From:") + 1, "\nFrom:") == NULL);
	CHECK(strstr(strstr(data, "Date:") + 1, "\nDate:") == NULL);
	CHECK(strstr(strstr(data, "Message-ID:") + 1, "\nMessage-ID:") == NULL);
	CHECK_CONTAINS(data, "Subject: t\r\n\r\nbody\r\n");
	free(data);
	spool_env_free(&env);
}

static void test_pickup_from_header(void)
{
	struct spool_env env;
	char *data;
	const char *name;

	ROW("-F display name, -f sender");
	name = PLANT("rcpt=a@x.org\nsender=cron@x.org\nfullname=Cron Daemon", "S: x\n\nb\n");
	CHECK_EQ_INT(pickup_file(name), PICKUP_DONE);
	data = incoming(last_qid(), &env);
	CHECK(data != NULL);
	if (data) {
		CHECK_STR(env.sender, "cron@x.org");
		CHECK_CONTAINS(data, "\r\nFrom: Cron Daemon <cron@x.org>\r\n");
		free(data);
		spool_env_free(&env);
	}
	ROW("-F with non-ASCII and 8-bit body");
	name = PLANT("rcpt=a@x.org\nfullname=J\xc3\xb6rg", "S: x\n\n\xe2\x82\xac\n");
	CHECK_EQ_INT(pickup_file(name), PICKUP_DONE);
	data = incoming(last_qid(), &env);
	CHECK(data != NULL);
	if (data) {
		CHECK_CONTAINS(data, "\r\nFrom: =?UTF-8?B?SsO2cmc=?= <");
		CHECK_STR(env.body, "8bitmime");
		CHECK_EQ_INT(env.smtputf8, 0);
		free(data);
		spool_env_free(&env);
	}
	ROW("-F \"\": no display name");
	name = PLANT("rcpt=a@x.org\nfullname=\nsender=s@x.org", "");
	CHECK_EQ_INT(pickup_file(name), PICKUP_DONE);
	data = incoming(last_qid(), &env);
	CHECK(data != NULL);
	if (data) {
		CHECK_CONTAINS(data, "\r\nFrom: s@x.org\r\n");
		free(data);
		spool_env_free(&env);
	}
	ROW("UTF-8 recipient asks for SMTPUTF8");
	name = PLANT("rcpt=j\xc3\xb6rg@x.org", "x\n");
	CHECK_EQ_INT(pickup_file(name), PICKUP_DONE);
	data = incoming(last_qid(), &env);
	CHECK(data != NULL);
	if (data) {
		CHECK_EQ_INT(env.smtputf8, 1);
		free(data);
		spool_env_free(&env);
	}
}

/* Each of these must end in corrupt/drop.NAME with a log line. */
static void test_pickup_corrupt(void)
{
	static const struct {
		const char *lines;
		const char *msg;
		size_t len;
		const char *err;
	} cases[] = {
		{ "rcpt=a@x.org", L("a\0b"), "NUL byte" },
		{ "rcpt=bad@", L("x"), "bad recipient address" },
		{ "rcpt=a@x.org\nsender=bad@", L("x"), "bad sender" },
		{ "t=1", L("Subject: none\n\nx\n"), "no recipients" },
		{ "", L("x"), "no recipients" },
		{ "t=1", L("To: a@x.org, b c\n\n"), "bad address list" },
		{ "t=1", L("To: 1@x, 2@x, 3@x\nCc: 4@x, 5@x, 6@x\n\n"), "too many recipients" },
		{ "rcpt=1@x\nrcpt=2@x\nrcpt=3@x\nrcpt=4@x\nrcpt=5@x\nrcpt=6@x", L("x"),
		  "too many recipients" },
		{ "rcpt=a@x.org\nbogus=1", L("x"), "unknown key" },
	};

	for (size_t i = 0; i < NELEM(cases); i++) {
		ROW("%zu: %s", i, cases[i].err);
		int before = ntaken;
		const char *name = plant(cases[i].lines, cases[i].msg, cases[i].len);
		char line[256];
		CHECK_EQ_INT(pickup_file(name), PICKUP_CORRUPT);
		CHECK_EQ_INT(ntaken, before);
		CHECK(!exists(SPOOL_DROP "/%s", name));
		CHECK(exists(SPOOL_CORRUPT "/drop.%s", name));
		snprintf(line, sizeof(line), "event=corrupt file=drop/%s error=\"", name);
		CHECK(log_has(line));
		CHECK(log_has(cases[i].err));
	}
	ROWS_END();

	/* Oversize: one byte more than smtpd.max_message_size. */
	char *msg = repeat('x', (size_t)cfg->smtpd.max_message_size + 1);
	const char *name = plant("rcpt=a@x.org", msg, cfg->smtpd.max_message_size + 1);
	CHECK_EQ_INT(pickup_file(name), PICKUP_CORRUPT);
	CHECK(log_has("exceeds smtpd.max_message_size"));
	free(msg);
	/* Bare LFs become CRLF: within the raw bound, over the real one. */
	msg = repeat('\n', (size_t)cfg->smtpd.max_message_size - 10);
	name = plant("rcpt=a@x.org", msg, cfg->smtpd.max_message_size - 10);
	CHECK_EQ_INT(pickup_file(name), PICKUP_CORRUPT);
	free(msg);
}

static void test_pickup_hostile_files(void)
{
	char path[256], target[PATH_MAX];
	const char *name;
	int before;

	ROW("symlink to a file queued could read");
	snprintf(target, sizeof(target), "%s/secret", dir);
	int fd = open(target, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd >= 0) {
		if (write(fd, "secret\n", 7) != 7)
			perror("write");
		close(fd);
	}
	name = next_name();
	snprintf(path, sizeof(path), SPOOL_DROP "/%s", name);
	CHECK_EQ_INT(symlink(target, path), 0);
	CHECK_EQ_INT(pickup_file(name), PICKUP_CORRUPT);
	CHECK(exists(SPOOL_CORRUPT "/drop.%s", name));
	CHECK(exists("%s", target));             /* the link moved, not its target */
	CHECK(log_has("not a regular file"));

	ROW("FIFO: never opened, never blocks");
	name = next_name();
	snprintf(path, sizeof(path), SPOOL_DROP "/%s", name);
	CHECK_EQ_INT(mkfifo(path, 0644), 0);
	CHECK_EQ_INT(pickup_file(name), PICKUP_CORRUPT);
	CHECK(exists(SPOOL_CORRUPT "/drop.%s", name));

	ROW("directory");
	name = next_name();
	snprintf(path, sizeof(path), SPOOL_DROP "/%s", name);
	CHECK_EQ_INT(mkdir(path, 0755), 0);
	CHECK_EQ_INT(pickup_file(name), PICKUP_CORRUPT);

	ROW("hard link");
	name = PLANT("rcpt=a@x.org", "x");
	snprintf(path, sizeof(path), SPOOL_DROP "/%s", name);
	snprintf(target, sizeof(target), "%s/hardlink", dir);
	CHECK_EQ_INT(link(path, target), 0);
	before = ntaken;
	CHECK_EQ_INT(pickup_file(name), PICKUP_CORRUPT);
	CHECK_EQ_INT(ntaken, before);
	CHECK(log_has("has 2 links"));
	unlink(target);

	ROW("uid= that is not the file's owner");
	{
		char hdr[256], p2[128];
		size_t len;
		unsigned other = getuid() == 0 ? 1 : 0;
		snprintf(hdr, sizeof(hdr), SPOOL_DROP_MAGIC "uid=%u\ntime=1\nrcpt=a@x.org\n\n", other);
		char *p = drop_bytes(hdr, L("x"), NULL, &len);
		name = next_name();
		snprintf(p2, sizeof(p2), SPOOL_DROP "/%s", name);
		fd = open(p2, O_WRONLY | O_CREAT | O_EXCL, 0644);
		CHECK(fd >= 0 && write(fd, p, len) == (ssize_t)len);
		close(fd);
		free(p);
		if (getuid() == 0)
			CHECK_EQ_INT(chown(p2, 2, 2), 0);   /* owned by uid 2, claims uid 1 */
		CHECK_EQ_INT(pickup_file(name), PICKUP_CORRUPT);
		CHECK(log_has("but the file belongs to uid"));
	}

	ROW("root may submit for another uid");
	if (getuid() == 0) {
		char hdr[256], p2[128];
		size_t len;
		struct spool_env env;
		snprintf(hdr, sizeof(hdr), SPOOL_DROP_MAGIC "uid=1\ntime=1\nrcpt=a@x.org\n\n");
		char *p = drop_bytes(hdr, "x", 1, NULL, &len);
		name = next_name();
		snprintf(p2, sizeof(p2), SPOOL_DROP "/%s", name);
		fd = open(p2, O_WRONLY | O_CREAT | O_EXCL, 0644);
		CHECK(fd >= 0 && write(fd, p, len) == (ssize_t)len);
		close(fd);
		free(p);
		CHECK_EQ_INT(pickup_file(name), PICKUP_DONE);
		char *data = incoming(last_qid(), &env);
		CHECK(data != NULL);
		if (data) {
			CHECK_CONTAINS(data, "(postern-sendmail, uid 1)");
			CHECK(strstr(env.sender, "@host.example") != NULL);
			CHECK(strncmp(env.sender, "root@", 5) != 0);
			free(data);
			spool_env_free(&env);
		}
	} else {
		CHECK(1);
	}

	ROW("uid that does not exist");
	if (getuid() == 0) {
		char hdr[256], p2[128];
		size_t len;
		snprintf(hdr, sizeof(hdr), SPOOL_DROP_MAGIC "uid=3999999\ntime=1\nrcpt=a@x.org\n\n");
		char *p = drop_bytes(hdr, L("x"), NULL, &len);
		name = next_name();
		snprintf(p2, sizeof(p2), SPOOL_DROP "/%s", name);
		fd = open(p2, O_WRONLY | O_CREAT | O_EXCL, 0644);
		CHECK(fd >= 0 && write(fd, p, len) == (ssize_t)len);
		close(fd);
		free(p);
		CHECK_EQ_INT(chown(p2, 3999999, 3999999), 0);
		CHECK_EQ_INT(pickup_file(name), PICKUP_CORRUPT);
		CHECK(log_has("uid 3999999 does not exist"));
	} else {
		printf("note: not root, the unknown-uid case only checks the parser\n");
		CHECK(1);
	}

	ROW("torn drop (no end marker)");
	name = next_name();
	snprintf(path, sizeof(path), SPOOL_DROP "/%s", name);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0644);
	{
		char hdr[128];
		int n = snprintf(hdr, sizeof(hdr), SPOOL_DROP_MAGIC "uid=%u\ntime=1\nrcpt=a@x.org\n\nhal",
		                 (unsigned)getuid());
		CHECK(write(fd, hdr, (size_t)n) == n);
	}
	close(fd);
	CHECK_EQ_INT(pickup_file(name), PICKUP_CORRUPT);
	CHECK(log_has("torn drop"));

	ROW("a name that is not ours");
	fd = open(SPOOL_DROP "/README", O_WRONLY | O_CREAT, 0644);
	close(fd);
	CHECK_EQ_INT(pickup_file("README"), PICKUP_CORRUPT);
	CHECK(!exists(SPOOL_DROP "/%s", "README"));
	CHECK(log_has("event=corrupt file=\"drop/README\" error=\"file name is not"));

	ROW("existing evidence is never replaced");
	name = PLANT("", "x");
	snprintf(path, sizeof(path), SPOOL_CORRUPT "/drop.%s", name);
	fd = open(path, O_WRONLY | O_CREAT, 0644);
	CHECK(write(fd, "old evidence", 12) == 12);
	close(fd);
	CHECK_EQ_INT(pickup_file(name), PICKUP_CORRUPT);
	CHECK(!exists(SPOOL_DROP "/%s", name));
	char *old = slurp(path, NULL);
	CHECK_STR(old, "old evidence");
	free(old);

	ROW("gone: nothing to do");
	CHECK_EQ_INT(pickup_file("0123456789abcdef0123456789abcdef"), PICKUP_DONE);
}

static void test_pickup_retry(void)
{
	/* No tmp/: the spool cannot take the message now.  The drop stays
	 * where it is for the next scan, and nothing goes to corrupt/. */
	const char *name = PLANT("rcpt=a@x.org", "x\n");
	CHECK_EQ_INT(rename(SPOOL_TMP, "tmp.away"), 0);
	CHECK_EQ_INT(pickup_file(name), PICKUP_RETRY);
	CHECK(exists(SPOOL_DROP "/%s", name));
	CHECK(!exists(SPOOL_CORRUPT "/drop.%s", name));
	CHECK(log_has("event=pickup_failed file=drop/"));
	CHECK_EQ_INT(rename("tmp.away", SPOOL_TMP), 0);
	CHECK_EQ_INT(pickup_file(name), PICKUP_DONE);
	CHECK(!exists(SPOOL_DROP "/%s", name));
}

static void test_pickup_scan(void)
{
	struct timespec old[2] = { { .tv_sec = time(NULL) - 2 * 86400 }, { .tv_sec = time(NULL) - 2 * 86400 } };
	int before = ntaken;
	const char *a, *b;
	char an[40], bn[40];

	a = PLANT("rcpt=a@x.org", "1\n");
	snprintf(an, sizeof(an), "%s", a);
	b = PLANT("rcpt=b@x.org", "2\n");
	snprintf(bn, sizeof(bn), "%s", b);
	/* a drop being written, and one abandoned two days ago */
	int fd = open(SPOOL_DROP "/.00000000000000000000000000000fff.tmp", O_WRONLY | O_CREAT, 0644);
	close(fd);
	fd = open(SPOOL_DROP "/.00000000000000000000000000000eee.tmp", O_WRONLY | O_CREAT, 0644);
	close(fd);
	CHECK_EQ_INT(utimensat(AT_FDCWD, SPOOL_DROP "/.00000000000000000000000000000eee.tmp", old, 0), 0);

	CHECK_EQ_INT(pickup_scan(), 0);
	CHECK_EQ_INT(ntaken, before + 2);
	CHECK(!exists(SPOOL_DROP "/%s", an));
	CHECK(!exists(SPOOL_DROP "/%s", bn));
	CHECK(exists("%s", SPOOL_DROP "/.00000000000000000000000000000fff.tmp"));
	CHECK(!exists("%s", SPOOL_DROP "/.00000000000000000000000000000eee.tmp"));
	CHECK(log_has("event=drop_stale_removed file=\"drop/.00000000000000000000000000000eee.tmp\""));
	unlink(SPOOL_DROP "/.00000000000000000000000000000fff.tmp");

	/* More than a batch: the scan yields and says so. */
	for (int i = 0; i < 105; i++)
		PLANT("rcpt=a@x.org", "x");
	CHECK_EQ_INT(pickup_scan(), 1);
	CHECK_EQ_INT(pickup_scan(), 0);
	DIR *d = opendir(SPOOL_DROP);
	struct dirent *de;
	int left = 0;
	while (d && (de = readdir(d)) != NULL)
		left += de->d_name[0] != '.';
	if (d)
		closedir(d);
	CHECK_EQ_INT(left, 0);
}

int main(int argc, char **argv)
{
	char err[256];

	h_init(argc, argv);
	str_copy(dir, h_tmpdir("sendmail"), sizeof(dir));
	if (spool_init(dir, getuid(), getgid(), err, sizeof(err)) == -1 || chdir(dir) == -1 ||
	    mkdir("log", 0755) == -1 || log_open("queued", "log", LOG_LVL_DEBUG, 0) == -1) {
		printf("setup: %s\n", err);
		return 2;
	}
	cfg = calloc(1, sizeof(*cfg));
	snprintf(cfg->hostname, sizeof(cfg->hostname), "host.example");
	cfg->smtpd.max_message_size = 64 * 1024;
	cfg->smtpd.max_recipients = 5;

	RUN(test_convert_table);
	RUN(test_convert_long_lines);
	RUN(test_convert_limits);
	RUN(test_capture);
	RUN(test_addrlist);
	RUN(test_mailbox_and_sender);
	RUN(test_rcpts);
	RUN(test_phrase);
	RUN(test_parse);
	RUN(test_pickup_args);
	RUN(test_pickup_t);
	RUN(test_pickup_from_header);
	RUN(test_pickup_corrupt);
	RUN(test_pickup_hostile_files);
	RUN(test_pickup_retry);
	RUN(test_pickup_scan);

	free(cfg);
	log_close();
	if (getenv("POSTERN_TEST_KEEP") != NULL)
		printf("kept %s\n", dir);
	else if (chdir("/") == 0)
		h_rm_tree(dir);
	return h_done();
}
