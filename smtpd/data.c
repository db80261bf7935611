#include "data.h"

#include <string.h>

#define TEXT_LINE_MAX 998   /* RFC 5321 4.5.3.1.6: 1000 with CRLF */

enum { ST_BOL = 0, ST_TEXT, ST_CR, ST_DOT, ST_DOTCR };

void data_init(struct data_reader *r, uint64_t max, int normalize, data_sink *sink, void *arg)
{
	memset(r, 0, sizeof(*r));
	r->state = ST_BOL;
	r->max = max;
	r->normalize = normalize;
	r->sink = sink;
	r->arg = arg;
}

static void flush(struct data_reader *r)
{
	if (r->olen && !r->sink_failed && r->sink(r->arg, r->out, r->olen) == -1)
		r->sink_failed = 1;
	r->olen = 0;
}

static void fail(struct data_reader *r, int err)
{
	if (r->err == DATA_OK)
		r->err = err;
}

static void emit(struct data_reader *r, const char *p, size_t n)
{
	if (r->err)
		return;
	if (r->size + n > r->max) {
		fail(r, DATA_ERR_SIZE);
		return;
	}
	r->size += n;
	if (r->olen + n > sizeof(r->out))
		flush(r);
	memcpy(r->out + r->olen, p, n);
	r->olen += n;
}

static void text_char(struct data_reader *r, char c)
{
	if (c == '\0') {
		fail(r, DATA_ERR_NUL);
		return;
	}
	if ((unsigned char)c >= 0x80)
		r->eightbit = 1;
	if (++r->linelen > TEXT_LINE_MAX)
		fail(r, DATA_ERR_LINE);
	emit(r, &c, 1);
}

/* A bare LF or CR: an error, or a normalised line break that ends nothing. */
static void bare_newline(struct data_reader *r)
{
	if (!r->normalize) {
		fail(r, DATA_ERR_BARE);
		r->state = ST_TEXT;
		return;
	}
	emit(r, "\r\n", 2);
	r->linelen = 0;
	r->state = ST_TEXT;
}

int data_feed(struct data_reader *r, const char *p, size_t n, size_t *used)
{
	for (size_t i = 0; i < n; i++) {
		char c = p[i];

		switch (r->state) {
		case ST_BOL:
			if (c == '.') {
				r->state = ST_DOT;
				break;
			}
			/* fall through */
		case ST_TEXT:
			if (c == '\r')
				r->state = ST_CR;
			else if (c == '\n')
				bare_newline(r);
			else {
				r->state = ST_TEXT;
				text_char(r, c);
			}
			break;
		case ST_CR:
			if (c == '\n') {
				emit(r, "\r\n", 2);
				r->linelen = 0;
				r->state = ST_BOL;
			} else {
				bare_newline(r);
				i--;          /* reprocess c as text */
			}
			break;
		case ST_DOT:
			if (c == '\r') {
				r->state = ST_DOTCR;
			} else if (c == '\n') {
				bare_newline(r);
			} else {
				/* Dot-stuffing: the leading dot is dropped. */
				r->state = ST_TEXT;
				text_char(r, c);
			}
			break;
		case ST_DOTCR:
			if (c == '\n') {
				flush(r);
				*used = i + 1;
				r->state = ST_BOL;
				return 1;
			}
			bare_newline(r);
			i--;
			break;
		}
	}
	flush(r);
	*used = n;
	return 0;
}

const char *data_err_reply(int err)
{
	switch (err) {
	case DATA_ERR_BARE:
		return "550 5.6.0 Message contains bare CR or LF line endings; only CRLF is allowed "
		       "(RFC 5321 2.3.8)";
	case DATA_ERR_LINE: return "500 5.5.2 Message line longer than 1000 bytes (RFC 5321 4.5.3.1.6)";
	case DATA_ERR_SIZE: return "552 5.3.4 Message size exceeds fixed maximum message size";
	case DATA_ERR_NUL: return "550 5.6.0 Message contains NUL bytes";
	}
	return "250 2.0.0 Ok";
}
