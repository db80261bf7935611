/* Unit tests for shared/punycode.c: the RFC 3492 section 7.1 samples both
 * ways, domain to A-label conversion, and hostile input (overlong labels,
 * invalid UTF-8, Punycode that overflows). */
#include "harness.h"
#include "punycode.h"
#include "str.h"

/* RFC 3492 7.1, (A) to (L) and (S) */
static const struct {
	const char *name;
	uint32_t cp[64];
	size_t n;
	const char *puny;
} samples[] = {
	{ "A Arabic", { 0x0644, 0x064A, 0x0647, 0x0645, 0x0627, 0x0628, 0x062A, 0x0643, 0x0644, 0x0645, 0x0648,
	                0x0634, 0x0639, 0x0631, 0x0628, 0x064A, 0x061F }, 17, "egbpdaj6bu4bxfgehfvwxn" },
	{ "B Chinese simplified", { 0x4ED6, 0x4EEC, 0x4E3A, 0x4EC0, 0x4E48, 0x4E0D, 0x8BF4, 0x4E2D, 0x6587 }, 9,
	  "ihqwcrb4cv8a8dqg056pqjye" },
	{ "C Chinese traditional", { 0x4ED6, 0x5011, 0x7232, 0x4EC0, 0x9EBD, 0x4E0D, 0x8AAA, 0x4E2D, 0x6587 }, 9,
	  "ihqwctvzc91f659drss3x8bo0yb" },
	{ "D Czech", { 0x0050, 0x0072, 0x006F, 0x010D, 0x0070, 0x0072, 0x006F, 0x0073, 0x0074, 0x011B, 0x006E,
	               0x0065, 0x006D, 0x006C, 0x0075, 0x0076, 0x00ED, 0x010D, 0x0065, 0x0073, 0x006B, 0x0079 }, 22,
	  "Proprostnemluvesky-uyb24dma41a" },
	{ "E Hebrew", { 0x05DC, 0x05DE, 0x05D4, 0x05D4, 0x05DD, 0x05E4, 0x05E9, 0x05D5, 0x05D8, 0x05DC, 0x05D0,
	                0x05DE, 0x05D3, 0x05D1, 0x05E8, 0x05D9, 0x05DD, 0x05E2, 0x05D1, 0x05E8, 0x05D9, 0x05EA }, 22,
	  "4dbcagdahymbxekheh6e0a7fei0b" },
	{ "F Hindi", { 0x092F, 0x0939, 0x0932, 0x094B, 0x0917, 0x0939, 0x093F, 0x0928, 0x094D, 0x0926, 0x0940,
	               0x0915, 0x094D, 0x092F, 0x094B, 0x0902, 0x0928, 0x0939, 0x0940, 0x0902, 0x092C, 0x094B,
	               0x0932, 0x0938, 0x0915, 0x0924, 0x0947, 0x0939, 0x0948, 0x0902 }, 30,
	  "i1baa7eci9glrd9b2ae1bj0hfcgg6iyaf8o0a1dig0cd" },
	{ "G Japanese", { 0x306A, 0x305C, 0x307F, 0x3093, 0x306A, 0x65E5, 0x672C, 0x8A9E, 0x3092, 0x8A71, 0x3057,
	                  0x3066, 0x304F, 0x308C, 0x306A, 0x3044, 0x306E, 0x304B }, 18,
	  "n8jok5ay5dzabd5bym9f0cm5685rrjetr6pdxa" },
	{ "H Korean", { 0xC138, 0xACC4, 0xC758, 0xBAA8, 0xB4E0, 0xC0AC, 0xB78C, 0xB4E4, 0xC774, 0xD55C, 0xAD6D,
	                0xC5B4, 0xB97C, 0xC774, 0xD574, 0xD55C, 0xB2E4, 0xBA74, 0xC5BC, 0xB9C8, 0xB098, 0xC88B,
	                0xC744, 0xAE4C }, 24,
	  "989aomsvi5e83db1d2a355cv1e0vak1dwrv93d5xbh15a0dt30a5jpsd879ccm6fea98c" },
	{ "I Russian", { 0x043F, 0x043E, 0x0447, 0x0435, 0x043C, 0x0443, 0x0436, 0x0435, 0x043E, 0x043D, 0x0438,
	                 0x043D, 0x0435, 0x0433, 0x043E, 0x0432, 0x043E, 0x0440, 0x044F, 0x0442, 0x043F, 0x043E,
	                 0x0440, 0x0443, 0x0441, 0x0441, 0x043A, 0x0438 }, 28,
	  "b1abfaaepdrnnbgefbadotcwatmq2g4l" },
	{ "J Spanish", { 0x0050, 0x006F, 0x0072, 0x0071, 0x0075, 0x00E9, 0x006E, 0x006F, 0x0070, 0x0075, 0x0065,
	                 0x0064, 0x0065, 0x006E, 0x0073, 0x0069, 0x006D, 0x0070, 0x006C, 0x0065, 0x006D, 0x0065,
	                 0x006E, 0x0074, 0x0065, 0x0068, 0x0061, 0x0062, 0x006C, 0x0061, 0x0072, 0x0065, 0x006E,
	                 0x0045, 0x0073, 0x0070, 0x0061, 0x00F1, 0x006F, 0x006C }, 40,
	  "PorqunopuedensimplementehablarenEspaol-fmd56a" },
	{ "K Vietnamese", { 0x0054, 0x1EA1, 0x0069, 0x0073, 0x0061, 0x006F, 0x0068, 0x1ECD, 0x006B, 0x0068, 0x00F4,
	                    0x006E, 0x0067, 0x0074, 0x0068, 0x1EC3, 0x0063, 0x0068, 0x1EC9, 0x006E, 0x00F3, 0x0069,
	                    0x0074, 0x0069, 0x1EBF, 0x006E, 0x0067, 0x0056, 0x0069, 0x1EC7, 0x0074 }, 31,
	  "TisaohkhngthchnitingVit-kjcr8268qyxafd2f1b9g" },
	{ "L 3nen", { 0x0033, 0x5E74, 0x0042, 0x7D44, 0x91D1, 0x516B, 0x5148, 0x751F }, 8, "3B-ww4c5e180e575a65lsy2b" },
	{ "S ascii", { '-', '>', ' ', '$', '1', '.', '0', '0', ' ', '<', '-' }, 11, "-> $1.00 <--" },
};

static void test_rfc3492_samples(void)
{
	for (size_t i = 0; i < NELEM(samples); i++) {
		char out[128];
		uint32_t cp[128];
		size_t n = NELEM(cp);
		ROW("%s", samples[i].name);
		CHECK_EQ_INT(punycode_encode(samples[i].cp, samples[i].n, out, sizeof(out)), 0);
		/* the RFC's samples mix case only in the basic code points */
		CHECK(strcasecmp(out, samples[i].puny) == 0);
		CHECK_EQ_INT(punycode_decode(samples[i].puny, strlen(samples[i].puny), cp, &n), 0);
		CHECK_EQ_INT(n, samples[i].n);
		CHECK(n == samples[i].n && memcmp(cp, samples[i].cp, n * sizeof(*cp)) == 0);
	}
}

static void test_domain_to_ascii(void)
{
	static const struct {
		const char *in, *out;
	} cases[] = {
		{ "example.org", "example.org" },
		{ "EXAMPLE.Org.", "example.org" },
		{ "b\xc3\xbc" "cher.example", "xn--bcher-kva.example" },
		{ "B\xc3\xbc" "cher.EXAMPLE", "xn--bcher-kva.example" },
		{ "\xe4\xbe\x8b\xe3\x81\x88.\xe3\x83\x86\xe3\x82\xb9\xe3\x83\x88", "xn--r8jz45g.xn--zckzah" },
		{ "m\xc3\xbcnchen.de", "xn--mnchen-3ya.de" },
	};
	for (size_t i = 0; i < NELEM(cases); i++) {
		char out[256], err[128] = "";
		ROW("%s", cases[i].out);
		CHECK_EQ_INT(punycode_domain_to_ascii(cases[i].in, out, sizeof(out), err, sizeof(err)), 0);
		CHECK_STR(out, cases[i].out);
	}
}

static void test_hostile(void)
{
	char long63[80], long64[80], longu[200], name[400];
	memset(long63, 'a', 63), long63[63] = '\0';
	memset(long64, 'a', 64), long64[64] = '\0';
	/* U+0100..U+013B: 60 distinct code points, Punycode longer than 59 */
	for (int i = 0; i < 60; i++)
		longu[2 * i] = '\xc4', longu[2 * i + 1] = (char)(0x80 + i);
	longu[120] = '\0';
	/* 5 labels of 63: 319 bytes */
	name[0] = '\0';
	for (int i = 0; i < 5; i++) {
		str_append(name, long63, sizeof(name));
		str_append(name, ".", sizeof(name));
	}
	name[strlen(name) - 1] = '\0';

	const struct {
		const char *label, *in, *err;
	} cases[] = {
		{ "63 ok", long63, NULL },
		{ "64", long64, "longer than 63" },
		{ "long utf8", longu, "longer than 63" },
		{ "long name", name, "longer than 253" },
		{ "empty", "", "empty" },
		{ "dot", ".", "empty" },
		{ "empty label", "a..b", "empty label" },
		{ "lone continuation", "a\x80.b", "invalid UTF-8 at byte 1" },
		{ "truncated", "ab.c\xc3", "invalid UTF-8 at byte 4" },
		{ "overlong slash", "\xc0\xaf.x", "invalid UTF-8" },
		{ "overlong 3", "\xe0\x80\xaf", "invalid UTF-8" },
		{ "surrogate", "\xed\xa0\x80", "invalid UTF-8" },
		{ "above U+10FFFF", "\xf4\x90\x80\x80", "invalid UTF-8" },
		{ "5-byte", "\xf8\x88\x80\x80\x80", "invalid UTF-8" },
	};
	for (size_t i = 0; i < NELEM(cases); i++) {
		char out[300], err[128] = "";
		ROW("%s", cases[i].label);
		int rc = punycode_domain_to_ascii(cases[i].in, out, sizeof(out), err, sizeof(err));
		CHECK_EQ_INT(rc, cases[i].err ? -1 : 0);
		if (cases[i].err)
			CHECK_CONTAINS(err, cases[i].err);
	}
	ROWS_END();

	/* a small out buffer fails, never overflows */
	char small[8], err[64];
	CHECK_EQ_INT(punycode_domain_to_ascii("example.org", small, sizeof(small), err, sizeof(err)), -1);
	CHECK_EQ_INT(punycode_domain_to_ascii("b\xc3\xbc" "cher", small, sizeof(small), err, sizeof(err)), -1);
}

static void test_decode_hostile(void)
{
	static const char *bad[] = {
		"99999999999999999",    /* delta overflows */
		"a-\x80",               /* non-basic byte */
		"abc-!",                /* not a digit */
		"egbpdaj6bu4bxfgehfvw9", /* truncated variable-length integer */
	};
	for (size_t i = 0; i < NELEM(bad); i++) {
		uint32_t cp[64];
		size_t n = NELEM(cp);
		ROW("%zu", i);
		CHECK_EQ_INT(punycode_decode(bad[i], strlen(bad[i]), cp, &n), -1);
	}
	ROWS_END();
	/* no room */
	uint32_t cp[4];
	size_t n = NELEM(cp);
	CHECK_EQ_INT(punycode_decode(samples[0].puny, strlen(samples[0].puny), cp, &n), -1);
	char out[5];
	CHECK_EQ_INT(punycode_encode(samples[0].cp, samples[0].n, out, sizeof(out)), -1);
	uint32_t sur = 0xd800, big = 0x110000;
	CHECK_EQ_INT(punycode_encode(&sur, 1, out, sizeof(out)), -1);
	CHECK_EQ_INT(punycode_encode(&big, 1, out, sizeof(out)), -1);
}

int main(int argc, char **argv)
{
	h_init(argc, argv);
	RUN(test_rfc3492_samples);
	RUN(test_domain_to_ascii);
	RUN(test_hostile);
	RUN(test_decode_hostile);
	return h_done();
}
