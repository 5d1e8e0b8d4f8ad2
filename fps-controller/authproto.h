/*
 * authproto: Squid's basic-auth helper line protocol as pure functions. A request is
 * "[ID ]user password" with both fields rfc1738-escaped; a reply is "[ID ]OK",
 * "[ID ]ERR message=..." or "[ID ]BH message=...".
 *
 * Escaping (Squid's rfc1738_escape): %XX is decoded (either hex case); '+' is a literal plus,
 * never a space, because Squid escapes a space as %20; '@', ':' and other reserved characters
 * arrive raw. Squid escapes every space, so a line has exactly one space between fields.
 */
#ifndef FPS_AUTHPROTO_H
#define FPS_AUTHPROTO_H

#include <stddef.h>

#define AUTHPROTO_LINE_MAX  (64 * 1024) /* bytes before the newline; longer lines get BH */
#define AUTHPROTO_FIELD_MAX 1024        /* decoded bytes per field; Squid's own buffer is 8 KiB */
#define AUTHPROTO_ID_MAX    20          /* digits of a channel ID */
#define AUTHPROTO_REPLY_MAX 512

/* Whether lines carry Squid's concurrency channel ID (auth_param basic children ... concurrency=N). */
enum authproto_ids {
	AUTHPROTO_IDS_AUTO, /* per line: 3 fields with a numeric first one = ID, 2 fields = no ID */
	AUTHPROTO_IDS_ON,
	AUTHPROTO_IDS_OFF,
};

struct authproto_req {
	char id[AUTHPROTO_ID_MAX + 1]; /* "" when the line has no channel ID */
	char user[AUTHPROTO_FIELD_MAX + 1];
	char pass[AUTHPROTO_FIELD_MAX + 1];
};

enum authproto_verdict { AUTHPROTO_OK, AUTHPROTO_ERR, AUTHPROTO_BH };

/*
 * Parses one request line of len bytes (without the '\n'; a trailing '\r' is ignored). The line
 * may hold any bytes, NUL included. Returns 0, or -1 with *why set to a fixed text that quotes
 * nothing from the line; on -1, req->id still holds the channel ID when one could be recognised,
 * so that the BH reply reaches the right request. Rejected: a wrong number of fields, a
 * non-numeric ID, raw control or non-ASCII bytes, malformed %XX, a decoded NUL or control byte,
 * a decoded field over AUTHPROTO_FIELD_MAX.
 */
int authproto_parse(const char *line, size_t len, enum authproto_ids ids, struct authproto_req *req, const char **why);
/* The same for lines that end with `extras` more fields (0..2), which are checked for their
 * bytes like the others and then ignored: Squid appends `auth_param basic key_extras` there
 * (FPS keys Squid's credential cache by the whole credentials that way; docs/security.md). */
int authproto_parse_extras(const char *line, size_t len, enum authproto_ids ids, unsigned extras,
                           struct authproto_req *req, const char **why);

/* The channel ID a line starts with ("17 ..." -> "17"), for answering a line that cannot be
 * parsed or was too long to keep. With AUTHPROTO_IDS_OFF, or no leading digits, id = "". */
void authproto_peek_id(const char *line, size_t len, enum authproto_ids ids, char id[AUTHPROTO_ID_MAX + 1]);

/* Decodes %XX escapes of in[0..len) into out (cap bytes incl. the NUL). 0 or -1 with *why. */
int authproto_unescape(const char *in, size_t len, char *out, size_t cap, size_t *outlen, const char **why);

/*
 * Formats a reply line with its '\n' into buf: "ID OK", "ID ERR message=\"...\"",
 * "ID BH message=\"...\"" (no "ID " when id is ""). msg may be NULL; '"' and '\' in it are
 * backslash-escaped and control bytes become spaces. Returns the length, or -1 if buf is small.
 * Callers pass fixed texts only: never a password or a key.
 */
int authproto_format(char *buf, size_t cap, const char *id, enum authproto_verdict v, const char *msg);

#endif
