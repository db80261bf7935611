/* punycode - RFC 3492 and IDNA A-labels; see punycode.h. */
#include "punycode.h"

#include "str.h"

#include <string.h>

/* RFC 3492 section 5 parameters. */
enum { BASE = 36, TMIN = 1, TMAX = 26, SKEW = 38, DAMP = 700, INITIAL_BIAS = 72, INITIAL_N = 0x80 };

#define MAXINT 0xffffffffu
#define NELEM_CPS (PUNYCODE_LABEL_MAX + 1)

static char encode_digit(uint32_t d)
{
	/* 0..25 -> a..z, 26..35 -> 0..9 */
	return (char)(d < 26 ? 'a' + d : '0' + (d - 26));
}

static int decode_digit(unsigned char c, uint32_t *d)
{
	if (c >= '0' && c <= '9')
		*d = c - '0' + 26;
	else if (c >= 'A' && c <= 'Z')
		*d = c - 'A';
	else if (c >= 'a' && c <= 'z')
		*d = c - 'a';
	else
		return -1;
	return 0;
}

static uint32_t adapt(uint32_t delta, uint32_t numpoints, int firsttime)
{
	uint32_t k = 0;

	delta = firsttime ? delta / DAMP : delta / 2;
	delta += delta / numpoints;
	while (delta > ((BASE - TMIN) * TMAX) / 2) {
		delta /= BASE - TMIN;
		k += BASE;
	}
	return k + (BASE - TMIN + 1) * delta / (delta + SKEW);
}

int punycode_encode(const uint32_t *in, size_t n, char *out, size_t outlen)
{
	uint32_t cp = INITIAL_N, delta = 0, bias = INITIAL_BIAS, h, b;
	size_t o = 0;

	if (n > MAXINT / 2)
		return -1;
	for (size_t j = 0; j < n; j++) {
		if (in[j] > 0x10ffff || (in[j] >= 0xd800 && in[j] <= 0xdfff))
			return -1;
		if (in[j] < 0x80) {
			if (o + 1 >= outlen)
				return -1;
			out[o++] = (char)in[j];
		}
	}
	h = b = (uint32_t)o;
	if (b > 0) {
		if (o + 1 >= outlen)
			return -1;
		out[o++] = '-';
	}
	while (h < n) {
		uint32_t m = MAXINT;
		for (size_t j = 0; j < n; j++)
			if (in[j] >= cp && in[j] < m)
				m = in[j];
		if (m - cp > (MAXINT - delta) / (h + 1))
			return -1;
		delta += (m - cp) * (h + 1);
		cp = m;
		for (size_t j = 0; j < n; j++) {
			if (in[j] < cp && ++delta == 0)
				return -1;
			if (in[j] == cp) {
				uint32_t q = delta;
				for (uint32_t k = BASE;; k += BASE) {
					uint32_t t = k <= bias ? TMIN : k >= bias + TMAX ? TMAX : k - bias;
					if (q < t)
						break;
					if (o + 1 >= outlen)
						return -1;
					out[o++] = encode_digit(t + (q - t) % (BASE - t));
					q = (q - t) / (BASE - t);
				}
				if (o + 1 >= outlen)
					return -1;
				out[o++] = encode_digit(q);
				bias = adapt(delta, h + 1, h == b);
				delta = 0;
				h++;
			}
		}
		delta++;
		cp++;
	}
	if (o >= outlen)
		return -1;
	out[o] = '\0';
	return 0;
}

int punycode_decode(const char *in, size_t len, uint32_t *out, size_t *n)
{
	uint32_t cp = INITIAL_N, i = 0, bias = INITIAL_BIAS;
	size_t max = *n, o = 0, b = 0, j;

	for (j = 0; j < len; j++) {
		if ((unsigned char)in[j] >= 0x80)
			return -1;
		if (in[j] == '-')
			b = j;
	}
	/* basic code points: everything before the last delimiter */
	for (j = 0; j < b; j++) {
		if (o >= max)
			return -1;
		out[o++] = (unsigned char)in[j];
	}
	for (size_t in_i = b > 0 ? b + 1 : 0; in_i < len;) {
		uint32_t oldi = i, w = 1;
		for (uint32_t k = BASE;; k += BASE) {
			uint32_t digit, t;
			if (in_i >= len || decode_digit((unsigned char)in[in_i++], &digit) == -1)
				return -1;
			if (digit > (MAXINT - i) / w)
				return -1;
			i += digit * w;
			t = k <= bias ? TMIN : k >= bias + TMAX ? TMAX : k - bias;
			if (digit < t)
				break;
			if (w > MAXINT / (BASE - t))
				return -1;
			w *= BASE - t;
		}
		bias = adapt(i - oldi, (uint32_t)o + 1, oldi == 0);
		if (i / (o + 1) > MAXINT - cp)
			return -1;
		cp += i / (uint32_t)(o + 1);
		i %= (uint32_t)(o + 1);
		if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff) || cp < 0x80)
			return -1;
		if (o >= max)
			return -1;
		memmove(out + i + 1, out + i, (o - i) * sizeof(*out));
		out[i++] = cp;
		o++;
	}
	*n = o;
	return 0;
}

int punycode_utf8_decode(const char *s, size_t len, uint32_t *out, size_t *n, size_t *bad_at)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t o = 0, max = *n;

	for (size_t i = 0; i < len;) {
		uint32_t c = p[i], min;
		size_t extra;
		if (c < 0x80) {
			extra = 0;
			min = 0;
		} else if ((c & 0xe0) == 0xc0) {
			extra = 1, min = 0x80, c &= 0x1f;
		} else if ((c & 0xf0) == 0xe0) {
			extra = 2, min = 0x800, c &= 0x0f;
		} else if ((c & 0xf8) == 0xf0) {
			extra = 3, min = 0x10000, c &= 0x07;
		} else {
			goto bad;
		}
		if (extra > len - i - 1)
			goto bad;
		for (size_t k = 1; k <= extra; k++) {
			if ((p[i + k] & 0xc0) != 0x80)
				goto bad;
			c = (c << 6) | (p[i + k] & 0x3f);
		}
		if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff) || c == 0)
			goto bad;
		if (o >= max)
			return -1;
		out[o++] = c;
		i += extra + 1;
		continue;
	bad:
		if (bad_at)
			*bad_at = i;
		return -1;
	}
	*n = o;
	return 0;
}

int punycode_is_ascii(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s >= 0x80)
			return 0;
	return 1;
}

int punycode_domain_to_ascii(const char *in, char *out, size_t outlen, char *err, size_t errlen)
{
	size_t len = strlen(in), o = 0, start = 0;

	if (len > 0 && in[len - 1] == '.')
		len--;   /* one trailing dot: the root */
	if (len == 0) {
		str_copy(err, "empty domain", errlen);
		return -1;
	}
	while (start <= len) {
		const char *lab = in + start;
		const char *dot = memchr(lab, '.', len - start);
		size_t llen = dot ? (size_t)(dot - lab) : len - start;
		char enc[PUNYCODE_LABEL_MAX + 2];
		uint32_t cps[PUNYCODE_LABEL_MAX + 1];
		size_t ncp = NELEM_CPS, bad = (size_t)-1;
		int ascii = 1;

		if (llen == 0) {
			str_fmt(err, errlen, "empty label at byte %zu", start);
			return -1;
		}
		for (size_t k = 0; k < llen; k++)
			if ((unsigned char)lab[k] >= 0x80 || lab[k] == '\0')
				ascii = 0;
		if (ascii) {
			if (llen > PUNYCODE_LABEL_MAX) {
				str_fmt(err, errlen, "label longer than %d bytes", PUNYCODE_LABEL_MAX);
				return -1;
			}
			if (o + llen + 2 > outlen) {
				str_fmt(err, errlen, "name longer than %d bytes (or than the buffer)", PUNYCODE_NAME_MAX);
				return -1;
			}
			for (size_t k = 0; k < llen; k++) {
				char c = lab[k];
				out[o++] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
			}
		} else {
			/* A label of 63 bytes holds at most 59 code points after "xn--". */
			if (punycode_utf8_decode(lab, llen, cps, &ncp, &bad) == -1) {
				if (bad == (size_t)-1)
					str_fmt(err, errlen, "label longer than %d bytes", PUNYCODE_LABEL_MAX);
				else
					str_fmt(err, errlen, "invalid UTF-8 at byte %zu", start + bad);
				return -1;
			}
			for (size_t k = 0; k < ncp; k++)
				if (cps[k] >= 'A' && cps[k] <= 'Z')
					cps[k] += 'a' - 'A';
			if (punycode_encode(cps, ncp, enc, sizeof(enc) - 4) == -1) {
				str_fmt(err, errlen, "label longer than %d bytes", PUNYCODE_LABEL_MAX);
				return -1;
			}
			size_t elen = strlen(enc);
			if (elen + 4 > PUNYCODE_LABEL_MAX) {
				str_fmt(err, errlen, "label longer than %d bytes", PUNYCODE_LABEL_MAX);
				return -1;
			}
			if (o + elen + 6 > outlen) {
				str_fmt(err, errlen, "name longer than %d bytes (or than the buffer)", PUNYCODE_NAME_MAX);
				return -1;
			}
			memcpy(out + o, "xn--", 4);
			memcpy(out + o + 4, enc, elen);
			o += elen + 4;
		}
		if (!dot)
			break;
		out[o++] = '.';
		start += llen + 1;
	}
	out[o] = '\0';
	if (o > PUNYCODE_NAME_MAX) {
		str_fmt(err, errlen, "name longer than %d bytes", PUNYCODE_NAME_MAX);
		return -1;
	}
	return 0;
}
