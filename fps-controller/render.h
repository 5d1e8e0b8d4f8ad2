/*
 * render: validated config + compiled policy -> the text of one generation:
 * squid.conf (from squid-templates/squid.conf.tmpl), the fps-acl snapshot, the
 * dstdomain list for `whitelist.apply: reconfigure`, and FPS's error pages.
 * Pure: it returns buffers; the caller decides where they go.
 */
#ifndef FPS_RENDER_H
#define FPS_RENDER_H

#include <stdbool.h>
#include <stddef.h>

#include "compile.h"
#include "config.h"
#include "err.h"

struct render_ctx {
	const char *templates_dir; /* holds squid.conf.tmpl and errors/ */
	const char *run_dir;       /* Squid's pid file and logs */
	const char *gen_dir;       /* where Squid will read this generation's files */
	const char *secrets_dir;   /* the copies of secrets Squid's helpers read */
	const char *bin_dir;       /* fps-acl and fps-auth */
	const char *cache_dir;     /* <state-dir>/cache: one disk store per Squid worker below it */
	unsigned long long generation;
	long max_fds;          /* Squid's max_filedescriptors: at most our hard RLIMIT_NOFILE */
	int mgr_port;          /* the loopback port only the controller's cache-manager scrape uses */
	bool no_denied_report; /* FPS_DENIED_REPORT=off: only for the benchmark's on/off comparison */
	bool no_reports;       /* FPS_REPORTS=off: no detail log (/failures, /traffic): the bench's A/B only */
};

#define RENDER_MAX_FILES 12

struct render_file {
	char name[64]; /* relative to the generation directory */
	char *data;
	size_t len;
};

struct render_out {
	struct render_file files[RENDER_MAX_FILES]; /* files[0] is squid.conf */
	size_t n_files;
};

/* The never-allowed destination networks squid.conf refuses whatever blocked_networks says
 * (loopback unless proxy.allow_loopback_destinations); returns how many were put in out. */
size_t render_never_networks(const struct fps_config *c, const char **out, size_t max);

/* The cache block of squid.conf (nothing kept without a cache section). Pure. */
void render_cache_block(const struct fps_config *c, const char *cache_dir, char *out, size_t len);

int render_generation(const struct fps_config *c, const struct compiled *cp, const struct render_ctx *rc,
                      struct render_out *out, struct fps_err *e);
void render_free(struct render_out *out);
const struct render_file *render_find(const struct render_out *out, const char *name);

/* Template substitution: each {{NAME}} in tmpl is replaced by the value of the
 * matching var; an unknown name is an error naming the template line. */
struct render_var {
	const char *name;
	const char *value;
};
int render_template(const char *tmpl, const char *tmpl_path, const struct render_var *vars, size_t nvars, char **out,
                    struct fps_err *e);

#endif
