/*
 * state: the controller's directory (--state-dir). Each generation is a directory
 * gen/<N>/ holding everything Squid and fps-acl read plus a copy of the inputs
 * that produced it; `current` is a symlink to the active one, swapped atomically.
 * The inputs copy is the "last known good" a restart falls back on.
 *
 *   <state>/current -> gen/<N>     <state>/gen/<N>/{squid.conf,acl.snapshot,...,input/}
 *   <state>/run/                   Squid's pid file, cache.log, access.log, mgr.port
 *   <state>/run/denied/            fps-acl's denied-destination files (denied.h)
 *   <state>/run/acl.generation     the generation every fps-acl serves (genword.h)
 *   <state>/cache/<worker>/        the update cache's disk stores (only with cache.disk_mb)
 *   <state>/secrets/apikeys.json   the keys, readable by Squid's helpers and nobody else
 */
#ifndef FPS_STATE_H
#define FPS_STATE_H

#include <limits.h>
#include <stdbool.h>
#include <sys/types.h>

#include "config.h"
#include "err.h"
#include "render.h"

struct state {
	char dir[PATH_MAX];
	char current[PATH_MAX]; /* <dir>/current */
	char run_dir[PATH_MAX];
	char cache_dir[PATH_MAX]; /* <dir>/cache: the update cache's disk stores (cache.h) */
	char secrets_dir[PATH_MAX];
	char denied_dir[PATH_MAX + 8]; /* <run>/denied: fps-acl's denied-report files */
	uid_t squid_uid;               /* who Squid's workers and helpers run as */
	gid_t squid_gid;
	bool as_root;
	int mgr_port; /* Squid's loopback port for the controller's cache-manager scrape */
	int lock_fd;  /* <dir>/controller.lock, flock()ed for the controller's lifetime */
};

/* Creates the state directory's layout and locks it: a second controller on the same
 * directory gets an error naming the first one's pid. */
int state_open(struct state *s, const char *dir, struct fps_err *e);
/* Free and total bytes of the volume holding the state directory; -1 when unknown. */
int state_volume(const struct state *s, unsigned long long *free_bytes, unsigned long long *total_bytes);
/* A loopback port nothing listens on, below the kernel's ephemeral range (so no outgoing
 * connection takes it between now and Squid's bind); 0 if none was found. */
int state_pick_loopback_port(void);
/* Generation number `current` points at, 0 if none. */
unsigned long long state_current_gen(const struct state *s);
/* Highest generation directory present (0 if none). */
unsigned long long state_max_gen(const struct state *s);
void state_gen_dir(const struct state *s, unsigned long long gen, char *buf, size_t len);
/* Writes a generation's files and a copy of the inputs into gen/<N>/. */
int state_write_gen(const struct state *s, unsigned long long gen, const struct render_out *out,
                    const struct fps_config *c, struct fps_err *e);
/* Adds a file to an existing generation directory (e.g. the parse candidate). */
int state_write_file(const struct state *s, unsigned long long gen, const char *name, const char *data, size_t len,
                     struct fps_err *e);
int state_activate(const struct state *s, unsigned long long gen, struct fps_err *e);
/* Removes generation directories other than keep1 and keep2. */
void state_prune(const struct state *s, unsigned long long keep1, unsigned long long keep2);
/* Publishes the API keys where fps-auth (running as Squid's user) can read them. */
int state_write_secret(const struct state *s, const char *name, const char *data, size_t len, struct fps_err *e);

/* Links Squid's own error templates into errors_dir, beside FPS's pages: with
 * error_directory set, Squid looks for every page there. */
int state_link_error_templates(const char *errors_dir, struct fps_err *e);

/* Squid's unprivileged user when we run as root (Squid drops to it after binding);
 * false when we are not root, and Squid then runs as us. */
bool state_squid_user(uid_t *uid, gid_t *gid);

/* Where Squid will run the helpers from: bin_dir itself when Squid's user may
 * execute fps-auth and fps-acl there, else copies in <state>/bin (a checkout under
 * a private directory, such as /root, is not reachable by `proxy`). */
int state_install_helpers(const struct state *s, const char *bin_dir, char *out, size_t len, struct fps_err *e);

/* Checks that Squid's user can reach everything Squid and its helpers use: the
 * state directory, its run/ (written), the active generation, the keys copy, the
 * helpers in helper_dir and the hosts file (any of which may be NULL). Returns 0,
 * or -1 with why = one line naming the path, the user and the missing permission. */
int state_check_squid_access(const char *state_dir, const char *helper_dir, const char *hosts_file, char *why,
                             size_t len);

#endif
