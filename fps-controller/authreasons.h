/*
 * authreasons: why fps-auth refused whom, for the failures report (reports.h). fps-auth keeps
 * the last refusal of up to AUTHR_USERS usernames (oldest forgotten first) and writes them,
 * at most every AUTHR_WRITE_MS, to <dir>/auth-<pid>.reasons, one line per username:
 *   R <unix time> <reason> <username>
 * reason: unknown_user (auth.products refuses the name), bad_key (matches no key),
 * expired_key (matches only an expired key, or every key has expired), malformed (not a
 * username of the scheme, or a line fps-auth cannot parse). Usernames are not secret (Squid's
 * access.log carries them); passwords never reach this table.
 */
#ifndef FPS_AUTHREASONS_H
#define FPS_AUTHREASONS_H

#include <stdbool.h>
#include <stddef.h>

#define AUTHR_USERS    256
#define AUTHR_USER_MAX 128
#define AUTHR_WRITE_MS 100

struct authr_entry {
	char user[AUTHR_USER_MAX + 1];
	const char *reason;
	double when;
};

struct authr_table {
	struct authr_entry e[AUTHR_USERS];
	size_t n;
	bool dirty;
};

/* Records a refusal (user is cut to AUTHR_USER_MAX; bytes outside 0x21..0x7e become '?'). */
void authr_record(struct authr_table *t, const char *user, const char *reason, double now);
/* The file's text into buf; returns its length (cut at cap). */
size_t authr_render(const struct authr_table *t, char *buf, size_t cap);
/* Writes the file atomically into dir (temp + rename). 0 ok, -1 errno set. */
int authr_write(struct authr_table *t, const char *dir, int pid);

#endif
