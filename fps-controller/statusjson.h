/*
 * statusjson: the /status document (docs/operations.md) rendered with cJSON from a status snapshot.
 * Pure: the same snapshot and clock give the same text. The snapshot holds no secrets.
 */
#ifndef FPS_STATUSJSON_H
#define FPS_STATUSJSON_H

#include <stdbool.h>

#include "status.h"

#define STATUSJSON_KEY_WARN_DAYS 10 /* docs/agents.md: warn when the newest key expires within this */

/* Returns malloc'd JSON (free with free()), or NULL on out of memory. */
char *statusjson_render(const struct fps_status *s, double now_unix);

/* The "denied" object of /status alone (GET /denied), or with whitelist set the
 * whitelist.json fragment {"domains": [...]} of the denied hosts, most denied first. */
char *statusjson_render_denied(const struct fps_status *s, bool whitelist);

/* "2026-11-24T00:00:00Z" for a unix time; "" for 0. */
void statusjson_rfc3339(double unix_time, char *out, size_t len);

#endif
