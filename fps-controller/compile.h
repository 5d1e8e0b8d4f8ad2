/*
 * compile: config -> policy. Normalizes every whitelist entry, keeps the valid
 * ones, reports the rejected ones (file, line, entry, reason) without failing the
 * update, folds redundant entries and counts entries by route.
 */
#ifndef FPS_COMPILE_H
#define FPS_COMPILE_H

#include "config.h"
#include "whitelist.h"

struct compile_note {
	char file[32];
	int line, col, index;
	char entry[128]; /* the raw entry, control bytes made visible, cut to fit */
	char reason[96];
};

struct compiled {
	struct wl_policy policy;
	struct compile_note *rejected;
	size_t n_rejected;
	struct compile_note *changed; /* accepted with a change (pasted URL reduced) */
	size_t n_changed;
	size_t by_route[WL_VIA_COUNT]; /* entries after folding, by the route they take */
};

int compile_config(const struct fps_config *c, struct compiled *out, struct fps_err *e);
void compile_free(struct compiled *out);
/* "file:line:col: entry 'x': reason" for logs and /status. */
void compile_note_str(const struct compile_note *n, char *buf, size_t len);

#endif
