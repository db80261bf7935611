/*
 * data - the DATA phase reader (RFC 5321 4.1.4, 4.5.2).
 *
 * A byte-at-a-time state machine fed with whatever the socket delivered,
 * split anywhere.  It removes dot-stuffing, stops at <CR><LF>.<CR><LF>
 * and only there (a bare LF or bare CR never starts the end sequence, so
 * the SMTP smuggling forms "\n.\n", "\n.\r\n", "\r.\r\n" stay inside the
 * message), and reports the first error while still reading to the real
 * end, so the client gets one clear reply and the session stays in sync.
 *
 *   DATA_ERR_BARE  bare LF or CR (bare_newline = reject); with normalize
 *                  each one is stored as CRLF but still ends nothing
 *   DATA_ERR_LINE  a text line longer than 998 octets + CRLF
 *   DATA_ERR_SIZE  more than max bytes of message
 *   DATA_ERR_NUL   a NUL byte
 * After an error nothing more is emitted.
 */
#ifndef POSTERN_DATA_H
#define POSTERN_DATA_H

#include <stddef.h>
#include <stdint.h>

enum data_err { DATA_OK = 0, DATA_ERR_BARE, DATA_ERR_LINE, DATA_ERR_SIZE, DATA_ERR_NUL };

typedef int data_sink(void *arg, const char *p, size_t n);

struct data_reader {
	int state;
	size_t linelen;
	uint64_t size;         /* bytes emitted (after unstuffing) */
	uint64_t max;
	int normalize;
	int err;
	int eightbit;          /* saw a byte >= 0x80 */
	data_sink *sink;
	void *arg;
	char out[8192];
	size_t olen;
	int sink_failed;
};

void data_init(struct data_reader *r, uint64_t max, int normalize, data_sink *sink, void *arg);
/* Feed n bytes.  Returns 1 when the end of data was consumed (*used tells
 * how many bytes of p belonged to the message), 0 if all n were used. */
int data_feed(struct data_reader *r, const char *p, size_t n, size_t *used);
const char *data_err_reply(int err);

#endif
