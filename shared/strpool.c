/*
 * strpool - interned strings with reference counts (see strpool.h).
 * Chained hash table that doubles when it holds more strings than
 * buckets; an entry is found again from its string by its offset.
 */
#include "strpool.h"
#include "str.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct entry {
	struct entry *next;
	uint32_t hash;
	uint32_t refs;
	char s[];
};

static struct entry **table;
static size_t nbuckets, count;
static const char empty[1] = "";

static uint32_t hash_of(const char *s, size_t n)
{
	uint32_t h = 2166136261u;
	for (size_t i = 0; i < n; i++)
		h = (h ^ (unsigned char)s[i]) * 16777619u;
	return h;
}

static void grow(void)
{
	size_t n = nbuckets ? nbuckets * 2 : 256;
	struct entry **t = xcalloc(n, sizeof(*t));

	for (size_t i = 0; i < nbuckets; i++) {
		struct entry *e = table[i], *next;
		for (; e; e = next) {
			next = e->next;
			e->next = t[e->hash & (n - 1)];
			t[e->hash & (n - 1)] = e;
		}
	}
	free(table);
	table = t;
	nbuckets = n;
}

const char *strpool_get(const char *s, size_t maxlen)
{
	size_t n = strnlen(s, maxlen);
	uint32_t h;
	struct entry *e;

	if (n == 0)
		return empty;
	if (count >= nbuckets)
		grow();
	h = hash_of(s, n);
	for (e = table[h & (nbuckets - 1)]; e; e = e->next)
		if (e->hash == h && strncmp(e->s, s, n) == 0 && e->s[n] == '\0') {
			e->refs++;
			return e->s;
		}
	e = xmalloc(sizeof(*e) + n + 1);
	e->hash = h;
	e->refs = 1;
	memcpy(e->s, s, n);
	e->s[n] = '\0';
	e->next = table[h & (nbuckets - 1)];
	table[h & (nbuckets - 1)] = e;
	count++;
	return e->s;
}

void strpool_put(const char *p)
{
	if (p == NULL || p == empty)
		return;
	struct entry *e = (struct entry *)(void *)(p - offsetof(struct entry, s));
	if (--e->refs > 0)
		return;
	struct entry **pp = &table[e->hash & (nbuckets - 1)];
	while (*pp != e)
		pp = &(*pp)->next;
	*pp = e->next;
	count--;
	free(e);
}

size_t strpool_count(void)
{
	return count;
}
