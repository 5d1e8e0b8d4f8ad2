/*
 * controller: the pipeline (load, validate, compile, render, prove, activate,
 * reconfigure, confirm) and the event loop that runs it on every change, while
 * supervising Squid. `render` and `check` reuse the same stages without side effects.
 */
#ifndef FPS_CONTROLLER_H
#define FPS_CONTROLLER_H

#include <limits.h>
#include <stdbool.h>

#include "compile.h"
#include "config.h"
#include "err.h"
#include "render.h"

enum ctl_mode { CTL_MODE_SUPERVISE, CTL_MODE_SIDECAR };

struct ctl_paths {
	char bin_dir[PATH_MAX];               /* fps-acl, fps-auth */
	char templates_dir[PATH_MAX];         /* squid-templates/ */
	char stunnel_templates_dir[PATH_MAX]; /* stunnel-conf/ (FPS_STUNNEL_TEMPLATES_DIR) */
	char squid_bin[PATH_MAX];
};

struct ctl_opts {
	const char *config_dir;
	const char *secrets_dir;
	const char *state_dir;
	const char *admin;       /* ADDR:PORT override, may be NULL */
	const char *admin_spare; /* ADDR:PORT taken while another instance holds admin; may be NULL */
	enum ctl_mode mode;
};

/* Where helpers, templates and squid are (FPS_TEMPLATES_DIR, FPS_SQUID_BIN override). */
int ctl_find_paths(struct ctl_paths *p, struct fps_err *e);

/* What ctl_build judges beside the inputs, as `run` does: the update cache's size against the
 * container's memory limit and the volume of state_dir (when given and there). */
struct ctl_build_room {
	const char *state_dir; /* may be NULL */
};
/* load + compile + render, for `check` and `render` (ctl_build.c: the stages `run` builds a
 * generation with): no side effects. judge NULL: the cache's size is not judged (render). */
int ctl_build(const char *config_dir, const char *secrets_dir, const struct ctl_paths *paths, const char *out_dir,
              const struct ctl_build_room *judge, struct fps_config *c, struct compiled *cp, struct render_out *out,
              struct fps_err *e);
/* Logs each rejected / reduced entry as a warning. */
void ctl_report_entries(const struct compiled *cp, const char *config_dir);

/* Runs the controller until SIGTERM/SIGINT. Returns the process exit code. */
int ctl_run(const struct ctl_opts *opts, const struct ctl_paths *paths);

#endif
