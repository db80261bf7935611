#include "addr.h"
#include "str.h"

#include <arpa/inet.h>
#include <string.h>

static int is_alpha(unsigned char c) { return (c | 32) >= 'a' && (c | 32) <= 'z'; }
static int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

static int is_atext(unsigned char c)
{
	return is_alpha(c) || is_digit(c) || (c && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

/* Length of a well-formed UTF-8 sequence at p (max n bytes), 0 if invalid. */
static size_t utf8_len(const unsigned char *p, size_t n)
{
	size_t need;
	unsigned cp;

	if (p[0] < 0x80)
		return 1;
	if (p[0] >= 0xc2 && p[0] <= 0xdf) {
		need = 2;
		cp = p[0] & 0x1f;
	} else if (p[0] >= 0xe0 && p[0] <= 0xef) {
		need = 3;
		cp = p[0] & 0x0f;
	} else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
		need = 4;
		cp = p[0] & 0x07;
	} else {
		return 0;
	}
	if (n < need)
		return 0;
	for (size_t i = 1; i < need; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (p[i] & 0x3f);
	}
	if ((need == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
	    (need == 4 && (cp < 0x10000 || cp > 0x10ffff)))
		return 0;
	return need;
}

int addr_valid_domain(const char *d, size_t len, int flags)
{
	size_t i = 0, label = 0;
	int prev_hyphen = 0;

	if (len == 0 || len > ADDR_DOMAIN_MAX)
		return 0;
	while (i < len) {
		unsigned char c = (unsigned char)d[i];
		if (c == '.') {
			if (label == 0 || prev_hyphen)
				return 0;
			label = 0;
			i++;
			continue;
		}
		if (c >= 0x80) {
			size_t u;
			if (!(flags & ADDR_UTF8) || (u = utf8_len((const unsigned char *)d + i, len - i)) == 0)
				return 0;
			i += u;
			label += u;
			prev_hyphen = 0;
			continue;
		}
		if (c == '-') {
			if (label == 0)
				return 0;
			prev_hyphen = 1;
		} else if (is_alpha(c) || is_digit(c)) {
			prev_hyphen = 0;
		} else {
			return 0;
		}
		if (++label > 63)
			return 0;
		i++;
	}
	return label > 0 && !prev_hyphen;
}

static int valid_literal(const char *s, size_t len)
{
	char tmp[ADDR_DOMAIN_MAX + 1];
	unsigned char bin[16];

	if (len < 3 || s[0] != '[' || s[len - 1] != ']' || len - 2 >= sizeof(tmp))
		return 0;
	/* inet_pton() stops at a NUL: "[127.0.0.1\0junk]" must not pass. */
	if (memchr(s, '\0', len) != NULL)
		return 0;
	memcpy(tmp, s + 1, len - 2);
	tmp[len - 2] = '\0';
	if (str_ncasecmp(tmp, "IPv6:", 5) == 0)
		return inet_pton(AF_INET6, tmp + 5, bin) == 1;
	/* General-address-literal (RFC 5321 4.1.3) is not routable for us. */
	return inet_pton(AF_INET, tmp, bin) == 1;
}

/* Parse Local-part at s[0..len) ending at '@'.  Returns chars consumed or 0. */
static size_t parse_local(const char *s, size_t len, int flags, struct addr *a, const char **why)
{
	size_t i = 0;

	if (len > 0 && s[0] == '"') {
		i = 1;
		while (i < len && s[i] != '"') {
			unsigned char c = (unsigned char)s[i];
			if (c == '\\') {
				if (i + 1 >= len || (unsigned char)s[i + 1] < 32 || (unsigned char)s[i + 1] > 126) {
					*why = "bad quoted-pair in local part";
					return 0;
				}
				i += 2;
				continue;
			}
			if (c >= 0x80 && (flags & ADDR_UTF8)) {
				size_t u = utf8_len((const unsigned char *)s + i, len - i);
				if (u == 0) {
					*why = "invalid UTF-8 in local part";
					return 0;
				}
				a->has_utf8 = 1;
				i += u;
				continue;
			}
			if (c < 32 || c > 126) {
				*why = "invalid character in local part";
				return 0;
			}
			i++;
		}
		if (i >= len) {
			*why = "unterminated quoted local part";
			return 0;
		}
		i++;
		a->is_quoted = 1;
	} else {
		int atom = 0;
		while (i < len && s[i] != '@') {
			unsigned char c = (unsigned char)s[i];
			if (c == '.') {
				if (atom == 0) {
					*why = "empty atom in local part";
					return 0;
				}
				atom = 0;
				i++;
				continue;
			}
			if (c >= 0x80 && (flags & ADDR_UTF8)) {
				size_t u = utf8_len((const unsigned char *)s + i, len - i);
				if (u == 0) {
					*why = "invalid UTF-8 in local part";
					return 0;
				}
				a->has_utf8 = 1;
				i += u;
				atom++;
				continue;
			}
			if (!is_atext(c)) {
				*why = c >= 0x80 ? "non-ASCII local part needs SMTPUTF8" : "invalid character in local part";
				return 0;
			}
			atom++;
			i++;
		}
		if (atom == 0) {
			*why = i == 0 ? "empty local part" : "local part ends with a dot";
			return 0;
		}
	}
	if (i > ADDR_LOCAL_MAX) {
		*why = "local part longer than 64 octets";
		return 0;
	}
	memcpy(a->local, s, i);
	a->local[i] = '\0';
	return i;
}

static int parse_mailbox(const char *s, size_t len, int flags, struct addr *a, const char **why)
{
	size_t l = parse_local(s, len, flags, a, why);
	const char *d;
	size_t dl;

	if (l == 0)
		return -1;
	if (l == len && (flags & ADDR_POSTMASTER_OK) && str_casecmp(a->local, "postmaster") == 0) {
		a->domain[0] = '\0';
		str_copy(a->text, a->local, sizeof(a->text));
		return 0;
	}
	if (l >= len || s[l] != '@') {
		*why = "missing @domain";
		return -1;
	}
	d = s + l + 1;
	dl = len - l - 1;
	if (dl == 0) {
		*why = "empty domain";
		return -1;
	}
	if (dl > ADDR_DOMAIN_MAX) {
		*why = "domain longer than 255 octets";
		return -1;
	}
	if (d[0] == '[') {
		if (!valid_literal(d, dl)) {
			*why = "invalid address literal";
			return -1;
		}
		a->is_literal = 1;
	} else if (!addr_valid_domain(d, dl, flags)) {
		*why = "invalid domain";
		return -1;
	}
	memcpy(a->domain, d, dl);
	a->domain[dl] = '\0';
	if (!a->is_literal)
		str_lower(a->domain);
	if (l + 1 + dl + 2 > ADDR_PATH_MAX) {
		*why = "path longer than 256 octets";
		return -1;
	}
	if (str_fmt(a->text, sizeof(a->text), "%s@%s", a->local, a->domain) < 0) {
		*why = "path longer than 256 octets";
		return -1;
	}
	for (size_t i = 0; i < dl; i++)
		if ((unsigned char)d[i] >= 0x80)
			a->has_utf8 = 1;
	return 0;
}

/* Skip an A-d-l ("@a.example,@b.example:"); returns bytes consumed or 0. */
static size_t skip_route(const char *s, size_t len, int flags)
{
	size_t i = 0;

	while (i < len && s[i] == '@') {
		size_t st = ++i;
		while (i < len && s[i] != ',' && s[i] != ':')
			i++;
		if (i >= len || !addr_valid_domain(s + st, i - st, flags))
			return 0;
		if (s[i] == ':')
			return i + 1;
		i++;
	}
	return 0;
}

int addr_parse_path(const char *s, size_t len, int flags, struct addr *out, size_t *end,
                    const char **why)
{
	size_t i, close;
	int in_quote = 0;

	memset(out, 0, sizeof(*out));
	*why = "syntax error in address";
	if (len == 0 || s[0] != '<') {
		if (!(flags & ADDR_NO_BRACKETS_OK)) {
			*why = "address must be enclosed in <>";
			return -1;
		}
		for (close = 0; close < len && s[close] != ' '; close++)
			;
		if (parse_mailbox(s, close, flags, out, why) == -1)
			return -1;
		*end = close;
		return 0;
	}
	for (close = 1; close < len; close++) {
		char c = s[close];
		if (c == '\\' && in_quote) {
			close++;
			continue;
		}
		if (c == '"')
			in_quote = !in_quote;
		else if (c == '>' && !in_quote)
			break;
	}
	if (close >= len) {
		*why = "missing closing >";
		return -1;
	}
	if (close + 1 > ADDR_PATH_MAX) {
		*why = "path longer than 256 octets";
		return -1;
	}
	*end = close + 1;
	if (close == 1) {
		if (!(flags & ADDR_NULL_OK)) {
			*why = "null address not allowed here";
			return -1;
		}
		out->is_null = 1;
		return 0;
	}
	i = 1;
	if (s[1] == '@') {
		size_t r = skip_route(s + 1, close - 1, flags);
		if (r == 0) {
			*why = "invalid source route";
			return -1;
		}
		i += r;
	}
	return parse_mailbox(s + i, close - i, flags, out, why);
}

int addr_parse_mailbox(const char *s, int flags, struct addr *out, const char **why)
{
	memset(out, 0, sizeof(*out));
	if (strlen(s) > ADDR_PATH_MAX - 2) {
		*why = "path longer than 256 octets";
		return -1;
	}
	return parse_mailbox(s, strlen(s), flags, out, why);
}
