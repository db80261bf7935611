#include "smtp_reply.h"
#include "str.h"

#include <string.h>

void smtp_reply_init(struct smtp_reply *r)
{
	memset(r, 0, sizeof(*r));
}

static void add_text(struct smtp_reply *r, const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char c = p[i];
		if (r->tlen + 4 >= sizeof(r->text)) {
			if (r->tlen + 4 == sizeof(r->text)) {
				memcpy(r->text + r->tlen, "...", 3);
				r->tlen += 3;
				r->text[r->tlen] = '\0';
			}
			return;
		}
		/* Remote text ends up in logs and DSNs: printable ASCII only. */
		r->text[r->tlen++] = ((unsigned char)c >= 0x20 && (unsigned char)c < 0x7f) ? c : '?';
	}
	r->text[r->tlen] = '\0';
}

int smtp_reply_line(struct smtp_reply *r, const char *line, size_t len)
{
	int code;

	if (len < 3 || line[0] < '2' || line[0] > '5' || line[1] < '0' || line[1] > '5' ||
	    line[2] < '0' || line[2] > '9')
		return -1;
	if (len > 3 && line[3] != ' ' && line[3] != '-')
		return -1;
	code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
	if (r->nlines > 0 && code != r->code)
		return -1;
	if (r->nlines >= SMTP_REPLY_LINES)
		return -1;
	r->code = code;
	if (r->nlines == 0)
		add_text(r, line, 3);
	add_text(r, r->nlines == 0 ? " " : " / ", r->nlines == 0 ? 1 : 3);
	if (len > 4)
		add_text(r, line + 4, len - 4);
	r->nlines++;
	return (len == 3 || line[3] == ' ') ? 1 : 0;
}

int smtp_reply_has_ext(const struct smtp_reply *r, const char *kw, const char **arg)
{
	size_t kl = strlen(kw);
	const char *p = r->text;

	/* Lines after the first are separated by " / ". */
	while ((p = strstr(p, " / ")) != NULL) {
		p += 3;
		if (str_ncasecmp(p, kw, kl) == 0 && (p[kl] == '\0' || p[kl] == ' ' || p[kl] == '=')) {
			if (arg)
				*arg = p[kl] ? p + kl + 1 : p + kl;
			return 1;
		}
	}
	return 0;
}
