/* libFuzzer target: RFC 5321 path and mailbox parsing (shared/addr.c).
 * The first byte picks the flags; the rest is the address text. */
#include "addr.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct addr a;
	const char *why;
	size_t end;
	char s[1024];

	if (size < 1 || size > sizeof(s))
		return 0;
	int flags = data[0] & 0x0f;
	memcpy(s, data + 1, size - 1);
	s[size - 1] = '\0';
	if (addr_parse_path(s, size - 1, flags, &a, &end, &why) == 0) {
		/* What a successful parse promises: bounded, no control bytes. */
		if (end > size - 1 || strlen(a.text) > ADDR_PATH_MAX || strlen(a.local) > ADDR_LOCAL_MAX + 2)
			abort();
		for (const char *p = a.text; *p; p++)
			if ((unsigned char)*p < 0x20 || *p == 0x7f)
				abort();
	}
	if (addr_parse_mailbox(s, flags, &a, &why) == 0 && strchr(a.text, '\n'))
		abort();
	addr_valid_domain(s, strlen(s), flags);
	return 0;
}
