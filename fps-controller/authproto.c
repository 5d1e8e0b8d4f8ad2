/*
 * authproto: parsing Squid's basic-auth helper requests and formatting replies (see authproto.h).
 * Everything works on explicit lengths, so NUL bytes in a line are just more bytes to reject.
 */
#include "authproto.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

static int authproto_hexval(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int authproto_unescape(const char *in, size_t len, char *out, size_t cap, size_t *outlen, const char **why)
{
	size_t o = 0;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)in[i];
		if (c == '%') {
			int hi = i + 2 < len ? authproto_hexval((unsigned char)in[i + 1]) : -1;
			int lo = i + 2 < len ? authproto_hexval((unsigned char)in[i + 2]) : -1;
			if (hi < 0 || lo < 0) {
				*why = "malformed %XX escape";
				return -1;
			}
			c = (unsigned char)(hi << 4 | lo);
			i += 2;
			/* A decoded NUL would silently truncate the field; control bytes have no
			 * business in a username or a hex password. */
			if (c < 0x20 || c == 0x7f) {
				*why = "escaped control character";
				return -1;
			}
		}
		if (o + 1 >= cap) {
			*why = "field too long";
			return -1;
		}
		out[o++] = (char)c;
	}
	out[o] = '\0';
	if (outlen != NULL)
		*outlen = o;
	return 0;
}

static bool authproto_is_id(const char *s, size_t n)
{
	if (n == 0 || n > AUTHPROTO_ID_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
	}
	return true;
}

void authproto_peek_id(const char *line, size_t len, enum authproto_ids ids, char id[AUTHPROTO_ID_MAX + 1])
{
	id[0] = '\0';
	if (ids == AUTHPROTO_IDS_OFF)
		return;
	const char *sp = memchr(line, ' ', len);
	size_t n = sp ? (size_t)(sp - line) : len;
	/* In auto mode a bare number is only an ID if something follows it. */
	if ((sp != NULL || ids == AUTHPROTO_IDS_ON) && authproto_is_id(line, n)) {
		memcpy(id, line, n);
		id[n] = '\0';
	}
}

int authproto_parse(const char *line, size_t len, enum authproto_ids ids, struct authproto_req *req, const char **why)
{
	return authproto_parse_extras(line, len, ids, 0, req, why);
}

int authproto_parse_extras(const char *line, size_t len, enum authproto_ids ids, unsigned extras,
                           struct authproto_req *req, const char **why)
{
	req->id[0] = req->user[0] = req->pass[0] = '\0';
	authproto_peek_id(line, len, ids, req->id);
	if (len > AUTHPROTO_LINE_MAX) {
		*why = "line too long";
		return -1;
	}
	if (len > 0 && line[len - 1] == '\r')
		len--;

	/* Squid escapes everything outside printable ASCII, so a raw one means a broken sender. */
	enum { MAX_FIELDS = 6 };
	if (extras > 2) {
		*why = "too many extra fields";
		return -1;
	}
	const char *field[MAX_FIELDS];
	size_t flen[MAX_FIELDS];
	size_t nf = 0;
	size_t start = 0;
	for (size_t i = 0; i <= len; i++) {
		if (i < len) {
			unsigned char c = (unsigned char)line[i];
			if (c < 0x20 || c >= 0x7f) {
				*why = c == 0 ? "NUL byte in line" : "control or non-ASCII byte in line";
				return -1;
			}
			if (c != ' ')
				continue;
		}
		if (nf == 4 + extras) {
			*why = "too many fields";
			return -1;
		}
		field[nf] = line + start;
		flen[nf] = i - start;
		nf++;
		start = i + 1;
	}

	bool has_id;
	switch (ids) {
	case AUTHPROTO_IDS_ON:
		has_id = true;
		break;
	case AUTHPROTO_IDS_OFF:
		has_id = false;
		break;
	default:
		has_id = nf == 3 + extras && authproto_is_id(field[0], flen[0]);
		break;
	}
	if (nf != (has_id ? 3u : 2u) + extras) {
		*why = has_id ? "expected: ID user password" : "expected: user password";
		return -1;
	}
	if (has_id && !authproto_is_id(field[0], flen[0])) {
		req->id[0] = '\0';
		*why = "channel ID is not a number";
		return -1;
	}
	if (!has_id)
		req->id[0] = '\0';

	size_t f = has_id ? 1 : 0;
	if (authproto_unescape(field[f], flen[f], req->user, sizeof(req->user), NULL, why) != 0 ||
	    authproto_unescape(field[f + 1], flen[f + 1], req->pass, sizeof(req->pass), NULL, why) != 0) {
		req->user[0] = req->pass[0] = '\0';
		return -1;
	}
	return 0;
}

int authproto_format(char *buf, size_t cap, const char *id, enum authproto_verdict v, const char *msg)
{
	static const char *const words[] = {"OK", "ERR", "BH"};
	size_t o = 0;
	int n = snprintf(buf, cap, "%s%s%s", id != NULL ? id : "", id != NULL && id[0] != '\0' ? " " : "", words[v]);
	if (n < 0 || (size_t)n >= cap)
		return -1;
	o = (size_t)n;
	if (msg != NULL) {
		/* Squid reads the value with strwordtok(): quoted, with backslash escapes. */
		static const char pre[] = " message=\"";
		if (o + sizeof(pre) - 1 >= cap)
			return -1;
		memcpy(buf + o, pre, sizeof(pre) - 1);
		o += sizeof(pre) - 1;
		for (const unsigned char *p = (const unsigned char *)msg; *p; p++) {
			bool esc = *p == '"' || *p == '\\';
			if (o + 1 + esc >= cap)
				return -1;
			if (esc)
				buf[o++] = '\\';
			buf[o++] = (char)(*p < 0x20 || *p == 0x7f ? ' ' : *p);
		}
		if (o + 1 >= cap)
			return -1;
		buf[o++] = '"';
	}
	if (o + 2 > cap)
		return -1;
	buf[o++] = '\n';
	buf[o] = '\0';
	return (int)o;
}
