/*
 * harness.h - the unit-test harness: a header, no framework, no library.
 *
 * A test binary is a list of test functions run by RUN() from main():
 *
 *     static void test_parse(void)
 *     {
 *         for (size_t i = 0; i < NELEM(cases); i++) {
 *             ROW("%zu: %s", i, cases[i].in);      one counted case per row
 *             CHECK_EQ_INT(parse(cases[i].in), cases[i].ok);
 *         }
 *     }
 *
 *     int main(int argc, char **argv)
 *     {
 *         h_init(argc, argv);
 *         RUN(test_parse);
 *         return h_done();
 *     }
 *
 * What is counted: test cases, not checks.  A case is either a whole test
 * function (RUN) or, inside one, a table row (ROW); a case fails when any
 * of its checks fails, and passes otherwise.  Checks made in a function
 * before its first ROW form a case of their own; ROWS_END() closes the last
 * row so later checks form one again.  A case that made no check at all is
 * not counted, except a test function with neither checks nor rows, which
 * fails ("no checks": a test that cannot fail is a bug).
 *
 * Every failed check prints "FAIL file:line: [case] expression" and, for
 * the _EQ/_STR/_MEM forms, both values.  The last line on stdout is always
 * "N passed, N failed", and h_done() returns 0 exactly when N failed is 0.
 * A crash ends the binary without that line; the runner treats a missing
 * summary or a non-zero exit status as failure.
 *
 * `./test_x NAME` runs only the test functions whose name contains NAME.
 * h_tmpdir()/h_rm_tree() give a test a private directory under /tmp.
 */
#ifndef POSTERN_HARNESS_H
#define POSTERN_HARNESS_H

#include <ftw.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

struct h_state {
	int passed, failed;
	int open;                /* a case is open */
	int checks;              /* checks made in the open case */
	int case_failed;         /* a check failed in the open case */
	int rows;                /* rows opened by the current test function */
	const char *fn;          /* current test function */
	char name[256];          /* current case label */
	const char *filter;
};

#define H_FN static __attribute__((unused))

static struct h_state h_;

H_FN void h_close(void)
{
	if (!h_.open)
		return;
	h_.open = 0;
	if (h_.checks == 0 && !h_.case_failed)
		return;
	if (h_.case_failed)
		h_.failed++;
	else
		h_.passed++;
}

H_FN void h_open(const char *name)
{
	h_close();
	snprintf(h_.name, sizeof(h_.name), "%s", name);
	h_.open = 1;
	h_.checks = 0;
	h_.case_failed = 0;
}

H_FN __attribute__((format(printf, 1, 2))) void h_row(const char *fmt, ...)
{
	char label[256], full[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(label, sizeof(label), fmt, ap);
	va_end(ap);
	for (char *p = label; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = '.';   /* keep each report on one line */
	snprintf(full, sizeof(full), "%.100s[%.150s]", h_.fn ? h_.fn : "?", label);
	h_.rows++;
	h_open(full);
}

H_FN void h_rows_end(void)
{
	char full[256];

	snprintf(full, sizeof(full), "%.200s (after rows)", h_.fn ? h_.fn : "?");
	h_open(full);
}

/* Escape bytes for a failure message; returns a static buffer (two slots). */
H_FN const char *h_esc(const void *p, size_t n)
{
	static char ring[2][300];
	static int idx;
	char *out = ring[idx++ & 1];
	const unsigned char *s = p;
	size_t o = 0;

	if (p == NULL)
		return "(null)";
	out[o++] = '"';
	for (size_t i = 0; i < n && o < sizeof(ring[0]) - 8; i++) {
		if (s[i] >= 0x20 && s[i] < 0x7f && s[i] != '"' && s[i] != '\\')
			out[o++] = (char)s[i];
		else
			o += (size_t)snprintf(out + o, sizeof(ring[0]) - o, "\\x%02x", s[i]);
	}
	if (o >= sizeof(ring[0]) - 8)
		o += (size_t)snprintf(out + o, sizeof(ring[0]) - o, "...");
	out[o++] = '"';
	out[o] = '\0';
	return out;
}

H_FN __attribute__((format(printf, 3, 4))) void h_fail(const char *file, int line, const char *fmt, ...)
{
	va_list ap;

	if (!h_.open)
		h_open(h_.fn ? h_.fn : "?");
	h_.case_failed = 1;
	printf("FAIL %s:%d: [%s] ", file, line, h_.name);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
}

H_FN void h_check(void)
{
	if (!h_.open)
		h_open(h_.fn ? h_.fn : "?");
	h_.checks++;
}

#define CHECK(cond)                                                            \
	do {                                                                   \
		h_check();                                                     \
		if (!(cond))                                                   \
			h_fail(__FILE__, __LINE__, "CHECK(%s)", #cond);        \
	} while (0)

#define CHECK_EQ_INT(a, b)                                                              \
	do {                                                                            \
		long long h_a_ = (long long)(a), h_b_ = (long long)(b);                 \
		h_check();                                                              \
		if (h_a_ != h_b_)                                                       \
			h_fail(__FILE__, __LINE__, "CHECK_EQ_INT(%s, %s): %lld != %lld", \
			       #a, #b, h_a_, h_b_);                                     \
	} while (0)

#define CHECK_EQ_U64(a, b)                                                              \
	do {                                                                            \
		unsigned long long h_a_ = (unsigned long long)(a);                      \
		unsigned long long h_b_ = (unsigned long long)(b);                      \
		h_check();                                                              \
		if (h_a_ != h_b_)                                                       \
			h_fail(__FILE__, __LINE__, "CHECK_EQ_U64(%s, %s): %llu != %llu", \
			       #a, #b, h_a_, h_b_);                                     \
	} while (0)

#define CHECK_STR(a, b)                                                                    \
	do {                                                                               \
		const char *h_a_ = (a), *h_b_ = (b);                                       \
		h_check();                                                                 \
		if (h_a_ == NULL || h_b_ == NULL ? h_a_ != h_b_ : strcmp(h_a_, h_b_) != 0) \
			h_fail(__FILE__, __LINE__, "CHECK_STR(%s, %s): %s != %s", #a, #b,   \
			       h_esc(h_a_, h_a_ ? strlen(h_a_) : 0),                       \
			       h_esc(h_b_, h_b_ ? strlen(h_b_) : 0));                      \
	} while (0)

/* Bytes a[0..alen) equal b[0..blen). */
#define CHECK_MEM(a, alen, b, blen)                                                        \
	do {                                                                               \
		const void *h_a_ = (a), *h_b_ = (b);                                       \
		size_t h_al_ = (size_t)(alen), h_bl_ = (size_t)(blen);                     \
		h_check();                                                                 \
		if (h_al_ != h_bl_ || (h_al_ && memcmp(h_a_, h_b_, h_al_) != 0))          \
			h_fail(__FILE__, __LINE__, "CHECK_MEM(%s, %s): %s (%zu) != %s (%zu)", \
			       #a, #b, h_esc(h_a_, h_al_), h_al_, h_esc(h_b_, h_bl_), h_bl_); \
	} while (0)

/* The string hay contains needle. */
#define CHECK_CONTAINS(hay, needle)                                                   \
	do {                                                                          \
		const char *h_a_ = (hay), *h_b_ = (needle);                           \
		h_check();                                                            \
		if (h_a_ == NULL || strstr(h_a_, h_b_) == NULL)                       \
			h_fail(__FILE__, __LINE__, "CHECK_CONTAINS(%s, %s): %s lacks %s", \
			       #hay, #needle, h_esc(h_a_, h_a_ ? strlen(h_a_) : 0),    \
			       h_esc(h_b_, strlen(h_b_)));                             \
	} while (0)

/* Start a new counted case (a table row) inside a test function. */
#define ROW(...) h_row(__VA_ARGS__)
#define ROWS_END() h_rows_end()

#define RUN(test_fn_)                                                                   \
	do {                                                                            \
		if (h_.filter == NULL || strstr(#test_fn_, h_.filter) != NULL) {        \
			h_.fn = #test_fn_;                                              \
			h_.rows = 0;                                                    \
			h_open(#test_fn_);                                              \
			test_fn_();                                                     \
			if (h_.rows == 0 && h_.open && h_.checks == 0 && !h_.case_failed) \
				h_fail(__FILE__, __LINE__, "%s made no checks", #test_fn_); \
			h_close();                                                      \
			h_.fn = NULL;                                                   \
		}                                                                       \
	} while (0)

/* Temporary directories: h_tmpdir() makes /tmp/postern-test-NAME-XXXXXX
 * and returns its real path (static); h_rm_tree() removes a tree without
 * following symlinks.  Tests call h_rm_tree() on their directory at the end. */
H_FN int h_rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	remove(path);   /* best effort: keep going */
	return 0;
}

H_FN void h_rm_tree(const char *path)
{
	nftw(path, h_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

H_FN const char *h_tmpdir(const char *name)
{
	static char real[PATH_MAX];
	char tmpl[256];

	snprintf(tmpl, sizeof(tmpl), "/tmp/postern-test-%s-XXXXXX", name);
	if (mkdtemp(tmpl) == NULL || realpath(tmpl, real) == NULL) {
		perror("h_tmpdir");
		exit(2);
	}
	return real;
}

H_FN void h_init(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	h_.filter = argc > 1 ? argv[1] : NULL;
}

H_FN int h_done(void)
{
	h_close();
	printf("%d passed, %d failed\n", h_.passed, h_.failed);
	fflush(stdout);
	return h_.failed == 0 ? 0 : 1;
}

#endif
