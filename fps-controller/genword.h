/*
 * genword: the generation every fps-acl serves, one aligned 64-bit word in a small file
 * (<state>/run/acl.generation). The controller maps it read-write and stores a generation's
 * number once that generation's snapshot is in place; each fps-acl maps it read-only and
 * loads it before every answer, switching to the snapshot `current` holds when the word is
 * newer than the one it serves. So no fps-acl answers under generation N-1 once any has
 * answered under N, whatever the number of helpers and Squid workers (docs/configuration.md,
 * "One verdict at a time").
 */
#ifndef FPS_GENWORD_H
#define FPS_GENWORD_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "err.h"

#define GENWORD_NAME "acl.generation"

struct genword {
	uint64_t *word; /* NULL: not mapped */
};

/* Controller: opens the file in place (never replaced: helpers already running keep their
 * mapping across a controller restart), creating it readable by everyone (it holds a number
 * only) and owned by gid when gid != (gid_t)-1. A new file starts at `initial`. */
int genword_create(struct genword *g, const char *path, uint64_t initial, gid_t gid, struct fps_err *e);
void genword_publish(struct genword *g, uint64_t gen);
/* fps-acl: maps an existing file read-only. */
int genword_map(struct genword *g, const char *path, struct fps_err *e);
uint64_t genword_load(const struct genword *g);
void genword_close(struct genword *g);

#endif
