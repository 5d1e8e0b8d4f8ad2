/*
 * snapshot: the compiled whitelist and routes as fps-acl reads them. The
 * controller writes it (atomically, via the generation symlink); fps-acl reloads
 * it when the file behind the path changes, so an edit needs no Squid reconfigure.
 *
 * Format (text, one record per line, names already normalized):
 *   fps-acl-snapshot 1
 *   generation <n>
 *   default <via>
 *   mode report                       (only in whitelist.mode report)
 *   W <exact|wildcard|ip> <name>
 *   R <via> <exact|wildcard|ip> <name>
 *   end
 */
#ifndef FPS_SNAPSHOT_H
#define FPS_SNAPSHOT_H

#include <stddef.h>

#include "err.h"
#include "whitelist.h"

/* Renders p into a malloc'd buffer. */
int snapshot_render(const struct wl_policy *p, unsigned long long generation, char **out, size_t *len);
/* Parses a snapshot into p (initialized here). On error p is freed and e says why. */
int snapshot_parse(const char *text, size_t len, const char *path, struct wl_policy *p, unsigned long long *generation,
                   struct fps_err *e);

#endif
