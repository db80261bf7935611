#include "msgtext.h"
#include "base64.h"
#include "str.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { P_HSTART = 0, P_HNAME, P_HFIELD, P_BODY };

/* --- output --- */

static int flush(struct msgtext *m)
{
	if (m->olen && m->sink != NULL && m->err == MSGTEXT_OK && m->sink(m->arg, m->out, m->olen) == -1)
		m->err = MSGTEXT_ERR_SINK;
	m->olen = 0;
	return m->err ? -1 : 0;
}

/* Bytes that are not counted against max (the caller's extra headers). */
static void raw(struct msgtext *m, const char *p, size_t n)
{
	if (m->sink == NULL)
		return;
	while (n > 0 && m->err == MSGTEXT_OK) {
		size_t k = sizeof(m->out) - m->olen;
		if (k == 0) {
			flush(m);
			continue;
		}
		if (k > n)
			k = n;
		memcpy(m->out + m->olen, p, k);
		m->olen += k;
		p += k;
		n -= k;
	}
}

static void emit(struct msgtext *m, const char *p, size_t n)
{
	if (m->err)
		return;
	m->size += n;
	if (m->max && m->size > m->max) {
		m->err = MSGTEXT_ERR_SIZE;
		return;
	}
	raw(m, p, n);
}

/* One octet of a line, wrapped at MSGTEXT_LINE_MAX; in the header the
 * break is a folding point (CRLF SP) so the field goes on. */
static void out_byte(struct msgtext *m, unsigned char c, int fold)
{
	char ch = (char)c;

	if (m->col >= MSGTEXT_LINE_MAX) {
		emit(m, fold ? "\r\n " : "\r\n", fold ? 3 : 2);
		m->col = fold ? 1 : 0;
	}
	emit(m, &ch, 1);
	m->col++;
}

static void newline(struct msgtext *m)
{
	emit(m, "\r\n", 2);
	m->col = 0;
}

/* --- the header section --- */

static void close_capture(struct msgtext *m)
{
	if (m->capture && buf_append(&m->addrs, "", 1) == -1 && m->err == MSGTEXT_OK)
		m->err = MSGTEXT_ERR_ADDRS;
	m->capture = 0;
}

static void header_end(struct msgtext *m)
{
	close_capture(m);
	if (m->err)
		return;
	raw(m, m->extra, m->extralen);
	newline(m);
	m->phase = P_BODY;
}

static void body_byte(struct msgtext *m, unsigned char c)
{
	out_byte(m, c, 0);
}

/* The line start buffered in name[] is not a field: the header section
 * ended before it, and it is the first line of the body. */
static void not_a_field(struct msgtext *m)
{
	header_end(m);
	for (size_t i = 0; i < m->nlen; i++)
		body_byte(m, (unsigned char)m->name[i]);
	m->nlen = 0;
}

static int name_is(const char *name, size_t n, const char *want)
{
	return strlen(want) == n && str_ncasecmp(name, want, n) == 0;
}

static void field_start(struct msgtext *m)
{
	size_t n = m->nlen;
	int bcc, rcpt;

	close_capture(m);
	while (n > 0 && (m->name[n - 1] == ' ' || m->name[n - 1] == '\t'))
		n--;
	bcc = name_is(m->name, n, "bcc");
	rcpt = bcc || name_is(m->name, n, "to") || name_is(m->name, n, "cc");
	if (name_is(m->name, n, "from"))
		m->seen |= MSGTEXT_SEEN_FROM;
	else if (name_is(m->name, n, "date"))
		m->seen |= MSGTEXT_SEEN_DATE;
	else if (name_is(m->name, n, "message-id"))
		m->seen |= MSGTEXT_SEEN_MSGID;
	m->keep = !(bcc && (m->flags & MSGTEXT_DROP_BCC));
	m->capture = rcpt && (m->flags & MSGTEXT_CAPTURE);
	m->any_field = 1;
	if (m->keep) {
		for (size_t i = 0; i < m->nlen; i++)
			out_byte(m, (unsigned char)m->name[i], 1);
		out_byte(m, ':', 1);
	}
	m->nlen = 0;
	m->phase = P_HFIELD;
}

static void field_byte(struct msgtext *m, unsigned char c)
{
	char ch = (char)c;

	if (m->keep)
		out_byte(m, c, 1);
	if (m->capture && buf_append(&m->addrs, &ch, 1) == -1 && m->err == MSGTEXT_OK)
		m->err = MSGTEXT_ERR_ADDRS;
}

static void content(struct msgtext *m, unsigned char c)
{
	m->midline = 1;
	switch (m->phase) {
	case P_HSTART:
		if (c == ' ' || c == '\t') {
			if (m->any_field) {
				m->phase = P_HFIELD;
				field_byte(m, c);
			} else {
				header_end(m);
				body_byte(m, c);
			}
			return;
		}
		m->phase = P_HNAME;
		m->nlen = 0;
		m->name_ws = 0;
		/* fall through */
	case P_HNAME:
		if (c == ':' && m->nlen > 0) {
			field_start(m);
			return;
		}
		/* Room for the colon: a field name never needs wrapping. */
		if (m->nlen < MSGTEXT_LINE_MAX - 1) {
			if (!m->name_ws && c > ' ' && c < 0x7f) {
				m->name[m->nlen++] = (char)c;
				return;
			}
			if ((c == ' ' || c == '\t') && m->nlen > 0) {
				m->name[m->nlen++] = (char)c;   /* obs: "Subject :" */
				m->name_ws = 1;
				return;
			}
		}
		not_a_field(m);
		body_byte(m, c);
		return;
	case P_HFIELD:
		field_byte(m, c);
		return;
	default:
		body_byte(m, c);
	}
}

static void line_end(struct msgtext *m)
{
	switch (m->phase) {
	case P_HSTART:          /* the empty line */
		header_end(m);
		break;
	case P_HNAME:
		not_a_field(m);
		newline(m);
		break;
	case P_HFIELD:
		if (m->keep)
			newline(m);
		m->phase = P_HSTART;
		break;
	default:
		newline(m);
	}
	m->midline = 0;
}

void msgtext_init(struct msgtext *m, int flags, uint64_t max, msgtext_sink *sink, void *arg,
                  const char *extra, size_t extralen)
{
	memset(m, 0, offsetof(struct msgtext, name));
	m->flags = flags;
	m->max = max;
	m->sink = sink;
	m->arg = arg;
	m->extra = extra;
	m->extralen = extra ? extralen : 0;
	m->nlen = 0;
	m->olen = 0;
	buf_init(&m->addrs, MSGTEXT_ADDRS_MAX);
	m->phase = P_HSTART;
}

int msgtext_feed(struct msgtext *m, const char *p, size_t n)
{
	for (size_t i = 0; i < n && m->err == MSGTEXT_OK; i++) {
		unsigned char c = (unsigned char)p[i];

		if (m->cr) {
			m->cr = 0;
			line_end(m);
			if (c == '\n')
				continue;
		}
		if (c == '\r') {
			m->cr = 1;
		} else if (c == '\n') {
			line_end(m);
		} else if (c == '\0') {
			m->err = MSGTEXT_ERR_NUL;
		} else {
			if (c >= 0x80)
				m->eightbit = 1;
			content(m, c);
		}
	}
	return m->err ? -1 : 0;
}

int msgtext_finish(struct msgtext *m)
{
	if (m->err == MSGTEXT_OK && (m->cr || m->midline)) {
		m->cr = 0;
		line_end(m);
	}
	if (m->err == MSGTEXT_OK && m->phase != P_BODY)
		header_end(m);
	flush(m);
	return m->err ? -1 : 0;
}

void msgtext_free(struct msgtext *m)
{
	buf_free(&m->addrs);
}

const char *msgtext_strerror(int err)
{
	switch (err) {
	case MSGTEXT_OK:
		return "no error";
	case MSGTEXT_ERR_NUL:
		return "the message contains a NUL byte";
	case MSGTEXT_ERR_SIZE:
		return "the message is too large";
	case MSGTEXT_ERR_ADDRS:
		return "the To:, Cc: and Bcc: fields are too long";
	case MSGTEXT_ERR_SINK:
		return "write error";
	}
	return "unknown error";
}

/* --- address lists --- */

enum { T_WORD = 1, T_QUOTED, T_LITERAL, T_SPECIAL };

struct tok {
	int type;
	char ch;              /* T_SPECIAL */
	const char *p;
	size_t len;
};

static int is_delim(char c)
{
	return strchr(" \t\r\n()\"[]<>,:;@.\\", c) != NULL;
}

static int tokenize(const char *s, size_t len, struct tok **out, size_t *nout, const char **why)
{
	struct tok *tk = NULL;
	size_t n = 0, i = 0;

	for (size_t k = 0; k < len; k++) {
		unsigned char c = (unsigned char)s[k];
		if ((c < 0x20 && c != '\t' && c != '\r' && c != '\n') || c == 0x7f) {
			*why = "control character in address";
			return -1;
		}
	}
	tk = xmalloc((len + 1) * sizeof(*tk));
	while (i < len) {
		char c = s[i];
		size_t start = i;

		if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
			i++;
			continue;
		}
		if (c == '(') {
			int depth = 0;
			for (; i < len; i++) {
				if (s[i] == '\\') {
					i++;
					continue;
				}
				if (s[i] == '(')
					depth++;
				else if (s[i] == ')' && --depth == 0)
					break;
			}
			if (i >= len) {
				*why = "unbalanced '(' in a comment";
				goto fail;
			}
			i++;
			continue;
		}
		if (c == '"') {
			for (i++; i < len; i++) {
				if (s[i] == '\\')
					i++;
				else if (s[i] == '"')
					break;
			}
			if (i >= len) {
				*why = "unterminated quoted string";
				goto fail;
			}
			i++;
			tk[n++] = (struct tok){ T_QUOTED, 0, s + start, i - start };
			continue;
		}
		if (c == '[') {
			for (i++; i < len && s[i] != ']'; i++) {
				if (s[i] == '[' || s[i] == '\\') {
					*why = "bad domain literal";
					goto fail;
				}
			}
			if (i >= len) {
				*why = "unterminated domain literal";
				goto fail;
			}
			i++;
			tk[n++] = (struct tok){ T_LITERAL, 0, s + start, i - start };
			continue;
		}
		if (strchr("<>,:;@.", c) != NULL) {
			i++;
			tk[n++] = (struct tok){ T_SPECIAL, c, s + start, 1 };
			continue;
		}
		if (c == ')' || c == ']' || c == '\\') {
			*why = c == ')' ? "unbalanced ')'" : c == ']' ? "unbalanced ']'" : "stray '\\'";
			goto fail;
		}
		while (i < len && !is_delim(s[i]))
			i++;
		tk[n++] = (struct tok){ T_WORD, 0, s + start, i - start };
	}
	*out = tk;
	*nout = n;
	return 0;
fail:
	free(tk);
	return -1;
}

/* An addr-spec from tokens tk[a..b): words joined by '.' and '@' only;
 * comments and whitespace are already gone. */
static int build(const struct tok *tk, size_t a, size_t b, msgtext_addr_cb *cb, void *arg,
                 const char **why)
{
	char out[MSGTEXT_ADDR_MAX + 1];
	size_t o = 0;
	int prev_word = 0;

	for (size_t k = a; k < b; k++) {
		int word = tk[k].type != T_SPECIAL;
		if (word && prev_word) {
			*why = "words without '<address>' (a name needs angle brackets) or a missing ','";
			return -1;
		}
		if (!word && tk[k].ch != '@' && tk[k].ch != '.') {
			*why = "unexpected special character in address";
			return -1;
		}
		if (tk[k].len > MSGTEXT_ADDR_MAX - o) {
			*why = "address too long";
			return -1;
		}
		memcpy(out + o, tk[k].p, tk[k].len);
		o += tk[k].len;
		prev_word = word;
	}
	out[o] = '\0';
	*why = NULL;
	return cb(arg, out);
}

int msgtext_addrlist(const char *s, size_t len, msgtext_addr_cb *cb, void *arg, const char **why)
{
	struct tok *tk;
	size_t n, i = 0;
	int in_group = 0, r = -1;

	*why = NULL;
	if (tokenize(s, len, &tk, &n, why) == -1)
		return -1;
	for (;;) {
		size_t start = i, lt = SIZE_MAX, gt = SIZE_MAX;
		r = -1;
		int depth = 0;

		for (; i < n; i++) {
			if (tk[i].type != T_SPECIAL)
				continue;
			char c = tk[i].ch;
			if (c == '<') {
				if (depth || lt != SIZE_MAX) {
					*why = "unexpected '<'";
					goto out;
				}
				depth = 1;
				lt = i;
			} else if (c == '>') {
				if (!depth) {
					*why = "unexpected '>'";
					goto out;
				}
				depth = 0;
				gt = i;
			} else if (depth) {
				continue;   /* a source route "<@a,@b:x@y>" */
			} else if (c == ',') {
				break;
			} else if (c == ';') {
				if (!in_group) {
					*why = "';' outside a group";
					goto out;
				}
				break;
			} else if (c == ':') {
				if (in_group || lt != SIZE_MAX) {
					*why = "unexpected ':'";
					goto out;
				}
				in_group = 1;   /* tokens so far were the group's name */
				start = i + 1;
			}
		}
		if (depth) {
			*why = "'<' without '>'";
			goto out;
		}
		if (lt != SIZE_MAX) {
			size_t a = lt + 1;
			if (gt + 1 != i) {
				*why = "text after '>'";
				goto out;
			}
			for (size_t k = lt + 1; k < gt; k++)
				if (tk[k].type == T_SPECIAL && tk[k].ch == ':')
					a = k + 1;
			if (a == gt) {
				*why = "empty address '<>'";
				goto out;
			}
			if ((r = build(tk, a, gt, cb, arg, why)) != 0)
				goto out;
		} else if (start < i) {
			if ((r = build(tk, start, i, cb, arg, why)) != 0)
				goto out;
		}
		if (i >= n)
			break;
		if (tk[i].ch == ';')
			in_group = 0;
		i++;
	}
	r = 0;   /* a group left open at the end is tolerated */
out:
	free(tk);
	return r;
}

int msgtext_mailbox(const char *in, const char *domain, struct addr *out, const char **why)
{
	char buf[MSGTEXT_ADDR_MAX + ADDR_DOMAIN_MAX + 2];
	int q = 0, at = 0;

	for (const char *p = in; *p; p++) {
		if (q && *p == '\\' && p[1]) {
			p++;
			continue;
		}
		if (*p == '"')
			q = !q;
		else if (*p == '@' && !q)
			at = 1;
	}
	if (at) {
		if (str_copy(buf, in, sizeof(buf)) == -1) {
			*why = "address too long";
			return -1;
		}
	} else {
		if (domain == NULL || *domain == '\0') {
			*why = "address has no domain";
			return -1;
		}
		if (str_fmt(buf, sizeof(buf), "%s@%s", in, domain) == -1) {
			*why = "address too long";
			return -1;
		}
	}
	return addr_parse_mailbox(buf, ADDR_UTF8, out, why);
}

int msgtext_login(const char *login, const char *domain, struct addr *out, const char **why)
{
	char q[2 * ADDR_LOCAL_MAX + 3];
	size_t o = 0;

	if (*login == '\0') {
		*why = "empty login name";
		return -1;
	}
	if (strpbrk(login, "@\"\\") == NULL && msgtext_mailbox(login, domain, out, why) == 0)
		return 0;
	q[o++] = '"';
	for (const char *p = login; *p; p++) {
		if (o + 3 >= sizeof(q)) {
			*why = "login name too long";
			return -1;
		}
		if (*p == '"' || *p == '\\')
			q[o++] = '\\';
		q[o++] = *p;
	}
	q[o++] = '"';
	q[o] = '\0';
	return msgtext_mailbox(q, domain, out, why);
}

int msgtext_sender(const char *in, const char *domain, struct addr *out, const char **why)
{
	char buf[MSGTEXT_ADDR_MAX + 1];
	size_t n = strlen(in);

	if (n == 0 || strcmp(in, "<>") == 0) {
		memset(out, 0, sizeof(*out));
		out->is_null = 1;
		return 0;
	}
	if (n >= 2 && in[0] == '<' && in[n - 1] == '>') {
		if (n - 2 > MSGTEXT_ADDR_MAX) {
			*why = "address too long";
			return -1;
		}
		memcpy(buf, in + 1, n - 2);
		buf[n - 2] = '\0';
		in = buf;
	}
	return msgtext_mailbox(in, domain, out, why);
}

/* --- display names --- */

static int is_atext(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL;
}

int msgtext_phrase(const char *name, char *out, size_t outlen)
{
	size_t n = strlen(name), o = 0;
	int ascii = 1, atoms = 1;

	if (outlen == 0)
		return -1;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)name[i];
		if (c < 0x20 || c == 0x7f)
			return -1;
		if (c >= 0x80)
			ascii = 0;
		if (!is_atext(c) && !(c == ' ' && i > 0 && i + 1 < n && name[i - 1] != ' '))
			atoms = 0;
	}
	/* "=?" would read as an encoded-word; quoting stops that. */
	if (strstr(name, "=?") != NULL)
		atoms = 0;
	if (ascii && atoms)
		return str_copy(out, name, outlen) == -1 ? -1 : 0;
	if (ascii) {
		if (outlen < 3)
			return -1;
		out[o++] = '"';
		for (size_t i = 0; i < n; i++) {
			if (o + 4 > outlen)
				return -1;
			if (name[i] == '"' || name[i] == '\\')
				out[o++] = '\\';
			out[o++] = name[i];
		}
		out[o++] = '"';
		out[o] = '\0';
		return 0;
	}
	/* RFC 2047: =?UTF-8?B?...?= of at most 45 octets each (75 chars),
	 * each a whole number of UTF-8 characters (section 5). */
	for (size_t i = 0; i < n;) {
		size_t k = n - i < 45 ? n - i : 45;
		while (k > 1 && i + k < n && ((unsigned char)name[i + k] & 0xc0) == 0x80)
			k--;
		if (o + (o ? 3 : 0) + 12 + (k + 2) / 3 * 4 + 1 > outlen)
			return -1;
		if (o) {
			memcpy(out + o, "\r\n ", 3);
			o += 3;
		}
		memcpy(out + o, "=?UTF-8?B?", 10);
		o += 10;
		/* room was checked above */
		(void)base64_encode(name + i, k, out + o, outlen - o);
		o += (k + 2) / 3 * 4;
		out[o++] = '?';
		out[o++] = '=';
		i += k;
	}
	out[o] = '\0';
	return 0;
}

/* --- recipient sets --- */

static size_t hash_str(const char *s)
{
	size_t h = 2166136261u;
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 16777619u;
	return h;
}

static void rehash(struct msgtext_rcpts *r, size_t nslot)
{
	free(r->slot);
	r->slot = xcalloc(nslot, sizeof(*r->slot));
	r->nslot = nslot;
	for (size_t i = 0; i < r->n; i++) {
		size_t h = hash_str(r->v[i]) & (nslot - 1);
		while (r->slot[h])
			h = (h + 1) & (nslot - 1);
		r->slot[h] = i + 1;
	}
}

void msgtext_rcpts_init(struct msgtext_rcpts *r, size_t max)
{
	memset(r, 0, sizeof(*r));
	r->max = max;
}

int msgtext_rcpts_add(struct msgtext_rcpts *r, const char *addr, const char *domain, char *err,
                      size_t errlen)
{
	struct addr a;
	const char *why;
	char esc[120];
	size_t h;

	if (msgtext_mailbox(addr, domain, &a, &why) == -1) {
		str_escape(esc, sizeof(esc), addr, strlen(addr));
		str_fmt(err, errlen, "bad recipient address \"%s\": %s", esc, why);
		return -1;
	}
	if (2 * (r->n + 1) > r->nslot)
		rehash(r, r->nslot ? r->nslot * 2 : 16);
	h = hash_str(a.text) & (r->nslot - 1);
	while (r->slot[h]) {
		if (strcmp(r->v[r->slot[h] - 1], a.text) == 0)
			return 0;
		h = (h + 1) & (r->nslot - 1);
	}
	if (r->n >= r->max) {
		str_fmt(err, errlen, "too many recipients (more than %zu)", r->max);
		return -2;
	}
	r->utf8 |= a.has_utf8;
	r->v = xrealloc(r->v, (r->n + 1) * sizeof(*r->v));
	r->v[r->n++] = xstrdup(a.text);
	r->slot[h] = r->n;
	return 0;
}

struct from_hdr {
	struct msgtext_rcpts *r;
	const char *domain;
	char *err;
	size_t errlen;
};

static int add_cb(void *arg, const char *addr)
{
	struct from_hdr *c = arg;
	return msgtext_rcpts_add(c->r, addr, c->domain, c->err, c->errlen);
}

int msgtext_rcpts_from_headers(struct msgtext_rcpts *r, const struct msgtext *m,
                               const char *domain, char *err, size_t errlen)
{
	struct from_hdr c = { r, domain, err, errlen };
	const char *p = buf_head(&m->addrs), *end = p + buf_used(&m->addrs);

	while (p < end) {
		const char *nul = memchr(p, '\0', (size_t)(end - p));
		const char *why;
		size_t len = nul ? (size_t)(nul - p) : (size_t)(end - p);

		int e = msgtext_addrlist(p, len, add_cb, &c, &why);
		if (e != 0) {
			if (why != NULL) {
				char esc[120];
				str_escape(esc, sizeof(esc), p, len);
				str_fmt(err, errlen, "bad address list in To:/Cc:/Bcc: \"%s\": %s", esc, why);
			}
			return e;
		}
		p += len + 1;
	}
	return 0;
}

void msgtext_rcpts_free(struct msgtext_rcpts *r)
{
	for (size_t i = 0; i < r->n; i++)
		free(r->v[i]);
	free(r->v);
	free(r->slot);
	memset(r, 0, sizeof(*r));
}
