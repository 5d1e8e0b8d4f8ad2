/*
 * err: filling and formatting struct fps_err (see err.h).
 */
#include "err.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

void err_clear(struct fps_err *e)
{
	memset(e, 0, sizeof(*e));
}

/* Copies in to out (cap bytes with the NUL), control and non-ASCII bytes as \xNN; stops at
 * max input bytes. Returns the input bytes consumed. */
static size_t err_escape(const char *in, size_t max, char *out, size_t cap)
{
	size_t o = 0, i = 0;
	for (; i < max && in[i]; i++) {
		unsigned char c = (unsigned char)in[i];
		bool plain = c >= 0x20 && c < 0x7f;
		if (o + (plain ? 1 : 4) >= cap)
			break;
		if (plain)
			out[o++] = (char)c;
		else
			o += (size_t)snprintf(out + o, cap - o, "\\x%02x", c);
	}
	out[o] = '\0';
	return i;
}

static int err_vset(struct fps_err *e, int errnum, const char *file, int line, int col, const char *fmt, va_list ap)
{
	if (e == NULL)
		return -1;
	char tmp[sizeof(e->msg)];
	err_escape(file ? file : "", sizeof(e->file), e->file, sizeof(e->file));
	e->line = line;
	e->col = col;
	e->sys = errnum;
	vsnprintf(tmp, sizeof(tmp), fmt, ap);
	err_escape(tmp, sizeof(tmp), e->msg, sizeof(e->msg));
	return -1;
}

int err_set(struct fps_err *e, const char *file, int line, int col, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	err_vset(e, 0, file, line, col, fmt, ap);
	va_end(ap);
	return -1;
}

int err_sys(struct fps_err *e, int errnum, const char *file, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	err_vset(e, errnum, file, 0, 0, fmt, ap);
	va_end(ap);
	return -1;
}

const char *err_quote(const char *s, char buf[ERR_QUOTE_BUF])
{
	size_t used = err_escape(s ? s : "", ERR_QUOTE_MAX, buf, ERR_QUOTE_BUF - 3);
	if (s && s[used] != '\0')
		strcat(buf, "...");
	return buf;
}

const char *err_str(const struct fps_err *e, char *buf, size_t len)
{
	if (e->file[0] && e->line > 0 && e->col > 0)
		snprintf(buf, len, "%s:%d:%d: %s", e->file, e->line, e->col, e->msg);
	else if (e->file[0] && e->line > 0)
		snprintf(buf, len, "%s:%d: %s", e->file, e->line, e->msg);
	else if (e->file[0])
		snprintf(buf, len, "%s: %s", e->file, e->msg);
	else
		snprintf(buf, len, "%s", e->msg);
	return buf;
}

void err_text_pos(const char *text, size_t off, int *line, int *col)
{
	*line = 1;
	*col = 1;
	for (size_t i = 0; i < off && text[i]; i++) {
		if (text[i] == '\n') {
			(*line)++;
			*col = 1;
		} else {
			(*col)++;
		}
	}
}
