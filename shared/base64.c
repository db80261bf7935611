#include "base64.h"

#include <stdint.h>

int base64_encode(const void *in, size_t n, char *out, size_t cap)
{
	static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	const unsigned char *p = in;
	size_t o = 0;

	if (BASE64_LEN(n) > cap)
		return -1;
	for (size_t i = 0; i < n; i += 3) {
		uint32_t q = (uint32_t)p[i] << 16;
		if (i + 1 < n)
			q |= (uint32_t)p[i + 1] << 8;
		if (i + 2 < n)
			q |= p[i + 2];
		out[o++] = tab[q >> 18 & 63];
		out[o++] = tab[q >> 12 & 63];
		out[o++] = i + 1 < n ? tab[q >> 6 & 63] : '=';
		out[o++] = i + 2 < n ? tab[q & 63] : '=';
	}
	out[o] = '\0';
	return 0;
}
