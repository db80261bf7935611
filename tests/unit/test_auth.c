/*
 * test_auth - smtpd/auth.c: the strict base64 decoder against hostile
 * input (the Exim CVE-2018-6789 class: off-by-one output sizes, padding in
 * the middle, characters outside the alphabet, non-canonical trailing
 * bits), the users file parser and crypt(3) check, and the per-address
 * failure count and lockout.  The SASL exchange itself runs under TLS and
 * is tested end to end in tests/integration/test_tls_auth.py.
 */
#include "harness.h"
#include "log.h"
#include "smtpd.h"

#include <fcntl.h>
#include <unistd.h>

struct config *cfg;

void smtpd_notify_queued(const char *qid)
{
	(void)qid;
}

void smtpd_conn_closed(const struct session *s)
{
	(void)s;
}

static const struct {
	const char *in;
	int ok;
	const char *out;     /* decoded (no NULs in these rows) */
	size_t cap;          /* output bound given to the decoder */
} b64[] = {
	{ "", 1, "", 16 },
	{ "Zg==", 1, "f", 16 },
	{ "Zm8=", 1, "fo", 16 },
	{ "Zm9v", 1, "foo", 16 },
	{ "Zm9vYg==", 1, "foob", 16 },
	{ "Zm9vYmE=", 1, "fooba", 16 },
	{ "Zm9vYmFy", 1, "foobar", 16 },
	{ "Zm9vYmFy", 1, "foobar", 6 },      /* exactly fits */
	{ "Zm9vYmFy", 0, NULL, 5 },          /* one byte short: refuse, never write past */
	{ "Zm9vYg==", 0, NULL, 3 },
	{ "Zm9vYg==", 1, "foob", 4 },
	{ "Zg=", 0, NULL, 16 },              /* length not a multiple of 4 */
	{ "Zg", 0, NULL, 16 },
	{ "Z", 0, NULL, 16 },
	{ "Zm9vY", 0, NULL, 16 },
	{ "Zg==Zg==", 0, NULL, 16 },         /* padding in the middle */
	{ "Z===", 0, NULL, 16 },             /* too much padding */
	{ "====", 0, NULL, 16 },
	{ "Zm=v", 0, NULL, 16 },             /* data after '=' */
	{ "Zh==", 0, NULL, 16 },             /* non-canonical: leftover bits */
	{ "Zm9=", 0, NULL, 16 },
	{ "Zm9v\r\n", 0, NULL, 16 },
	{ "Zm 9", 0, NULL, 16 },
	{ "Zm9v-_==", 0, NULL, 16 },         /* URL alphabet is not base64 here */
	{ "Zm\x80v", 0, NULL, 16 },
	{ "Zm\xffv", 0, NULL, 16 },
};

static void test_b64_decode(void)
{
	unsigned char out[64];

	for (size_t i = 0; i < NELEM(b64); i++) {
		size_t n = 12345;
		ROW("%zu: %s cap %zu", i, b64[i].in, b64[i].cap);
		memset(out, 0xAA, sizeof(out));
		int r = auth_b64_decode(b64[i].in, strlen(b64[i].in), out, b64[i].cap, &n);
		CHECK_EQ_INT(r == 0, b64[i].ok);
		if (b64[i].ok)
			CHECK_MEM(out, n, b64[i].out, strlen(b64[i].out));
		else
			CHECK_EQ_INT((int)n, 0);
		/* never a byte beyond the bound */
		CHECK_EQ_INT(out[b64[i].cap], 0xAA);
	}
}

static void test_b64_nul_and_roundtrip(void)
{
	unsigned char out[600], in[256];
	char enc[400];
	size_t n;

	/* PLAIN carries NULs: "\0user\0pass" */
	CHECK_EQ_INT(auth_b64_decode("AHVzZXIAcGFzcw==", 16, out, sizeof(out), &n), 0);
	CHECK_MEM(out, n, "\0user\0pass", 10);
	for (size_t i = 0; i < sizeof(in); i++)
		in[i] = (unsigned char)i;
	for (size_t len = 0; len <= sizeof(in); len += 37) {
		ROW("roundtrip %zu", len);
		CHECK_EQ_INT(auth_b64_encode(in, len, enc, sizeof(enc)), 0);
		CHECK_EQ_INT(auth_b64_decode(enc, strlen(enc), out, sizeof(out), &n), 0);
		CHECK_MEM(out, n, in, len);
	}
	ROWS_END();
	CHECK_EQ_INT(auth_b64_encode(in, 3, enc, 4), -1);   /* no room for the NUL */
	/* a long hostile line of valid characters and a tiny bound */
	static char big[8192];
	memset(big, 'A', sizeof(big) - 1);
	CHECK_EQ_INT(auth_b64_decode(big, sizeof(big) - 1 - 3, out, 16, &n), -1);
}

static void test_users(void)
{
	char path[] = "/tmp/postern-auth-XXXXXX";
	int fd = mkstemp(path);
	/* openssl passwd -6 -salt abcdefgh secret */
	const char *text = "# comment\n\n"
	                   "alice:$6$abcdefgh$ltjgWl6579NluT/Vi1nwEvcil.G5Nbc4NiXZaNGStk8PSwGfQv72N2CKPPrVACtLtip/cZ/1GM/O6IND4WQhG.\n"
	                   "broken line without colon\n"
	                   "bob:plaintext-is-refused\n"
	                   "carol:$6$abcdefgh$ltjgWl6579NluT/Vi1nwEvcil.G5Nbc4NiXZaNGStk8PSwGfQv72N2CKPPrVACtLtip/cZ/1GM/O6IND4WQhG.\r\n";

	CHECK(fd >= 0);
	CHECK_EQ_INT((int)write(fd, text, strlen(text)), (int)strlen(text));
	close(fd);
	CHECK_EQ_INT(auth_enabled(), 0);
	CHECK_EQ_INT(auth_users_load(path), 0);
	CHECK_EQ_INT(auth_enabled(), 1);
	CHECK_EQ_INT(auth_verify("alice", "secret"), 1);
	CHECK_EQ_INT(auth_verify("carol", "secret"), 1);   /* CRLF line end */
	CHECK_EQ_INT(auth_verify("alice", "Secret"), 0);
	CHECK_EQ_INT(auth_verify("alice", ""), 0);
	CHECK_EQ_INT(auth_verify("bob", "plaintext-is-refused"), 0);
	CHECK_EQ_INT(auth_verify("nobody", "secret"), 0);
	CHECK_EQ_INT(auth_verify("ALICE", "secret"), 0);
	/* reload after removing a user */
	fd = open(path, O_WRONLY | O_TRUNC);
	CHECK_EQ_INT((int)write(fd, "carol:$6$abcdefgh$x\n", 20), 20);
	close(fd);
	CHECK_EQ_INT(auth_users_reload(path), 0);
	CHECK_EQ_INT(auth_verify("alice", "secret"), 0);
	unlink(path);
	CHECK_EQ_INT(auth_users_load("/nonexistent/users"), -1);
}

static void test_lockout(void)
{
	CHECK_EQ_INT(auth_locked("192.0.2.7"), 0);
	for (int i = 1; i < AUTH_FAIL_MAX; i++) {
		CHECK_EQ_INT(auth_failed("192.0.2.7"), i);
		CHECK_EQ_INT(auth_locked("192.0.2.7"), 0);
	}
	CHECK_EQ_INT(auth_failed("192.0.2.7"), AUTH_FAIL_MAX);
	CHECK_EQ_INT(auth_locked("192.0.2.7"), 1);
	CHECK_EQ_INT(auth_locked("192.0.2.8"), 0);   /* per address */
	auth_failed("192.0.2.9");
	auth_succeeded("192.0.2.9");
	CHECK_EQ_INT(auth_locked("192.0.2.9"), 0);
	/* many addresses: the table is bounded and keeps working */
	char ip[64];
	for (int i = 0; i < 5000; i++) {
		snprintf(ip, sizeof(ip), "10.%d.%d.1", i / 256, i % 256);
		auth_failed(ip);
	}
	CHECK_EQ_INT(auth_failed("10.0.0.99"), 1);
}

int main(int argc, char **argv)
{
	h_init(argc, argv);
	log_open("test", NULL, LOG_LVL_ERROR + 1, 0);
	RUN(test_b64_decode);
	RUN(test_b64_nul_and_roundtrip);
	RUN(test_users);
	RUN(test_lockout);
	return h_done();
}
