/* libFuzzer target: the DATA reader (smtpd/data.c).  The first byte picks
 * the chunk size and the bare-newline mode; the input is fed in chunks and
 * the output is checked against what the reader promises. */
#include "data.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct out {
	uint64_t len;
	int last_cr;
};

static int sink(void *arg, const char *p, size_t n)
{
	struct out *o = arg;
	/* Output is CRLF-only: never a bare LF (smuggling) and never a NUL. */
	for (size_t i = 0; i < n; i++) {
		if (p[i] == '\n' && !(i > 0 ? p[i - 1] == '\r' : o->last_cr))
			abort();
		if (p[i] == '\0')
			abort();
	}
	o->last_cr = n > 0 && p[n - 1] == '\r';
	o->len += n;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct data_reader r;
	struct out o = { 0, 0 };
	size_t off = 1, used;

	if (size < 1)
		return 0;
	size_t chunk = (data[0] & 0x3f) + 1;
	data_init(&r, 4096, data[0] >> 7, sink, &o);
	while (off < size) {
		size_t k = size - off < chunk ? size - off : chunk;
		int end = data_feed(&r, (const char *)data + off, k, &used);
		if (used > k)
			abort();
		off += used;
		if (end) {
			/* The end of data is exactly CRLF.CRLF (or ".\r\n" first). */
			const char *p = (const char *)data + off;
			if (off < 1 + 3 || memcmp(p - 3, ".\r\n", 3) != 0)
				abort();
			if (off - 1 > 3 && p[-4] != '\n')
				abort();
			data_init(&r, 4096, data[0] >> 7, sink, &o);
		}
	}
	if (o.len > (size / 1) * 2 + 4096)
		abort();
	return 0;
}
