/*
 * inputs: the Secret mount as an input of its own. The ConfigMap and the Secret are
 * independent: each has a last good copy (the ConfigMap's is the active generation's
 * input/, the Secret's is <state>/last-good-secrets/), so a broken or missing one never
 * blocks a valid update of the other, and agents keep the last good keys when the
 * Secret mount goes away.
 */
#ifndef FPS_INPUTS_H
#define FPS_INPUTS_H

#include "err.h"

/* The files FPS reads from the Secret mount. */
extern const char *const inputs_secret_names[];
extern const unsigned inputs_n_secret_names;

/* 0 when dir is a readable directory whose files FPS uses are all readable and whose
 * apikeys.json (if any) parses; else e says which and why (never the content). */
int inputs_check_secrets(const char *dir, struct fps_err *e);
/* Copies the Secret files of from_dir into to_dir (0700, files 0600), removing copies of
 * files from_dir no longer has. */
int inputs_save_secrets(const char *from_dir, const char *to_dir, struct fps_err *e);

#endif
