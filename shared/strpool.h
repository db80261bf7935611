/*
 * strpool - shared, reference-counted copies of strings that repeat.
 *
 * queued keeps the last reply for every recipient in memory; with the
 * smarthost down, 100,000 queued messages carry the same "connect:
 * Connection refused" text.  Interned, that is one copy, and a recipient's
 * state is a pointer (docs/performance.md: queued's bytes per message).
 *
 * strpool_get() returns a copy of at most maxlen bytes of s that stays
 * valid until the matching strpool_put(); equal strings share one copy.
 * The empty string is a static "" that needs no put (putting it is
 * harmless).  Single-threaded, like the daemons' event loops.
 */
#ifndef POSTERN_STRPOOL_H
#define POSTERN_STRPOOL_H

#include <stddef.h>

const char *strpool_get(const char *s, size_t maxlen);
void strpool_put(const char *p);
/* Distinct strings held now (tests, gauges). */
size_t strpool_count(void);

#endif
