/*
 * ctl_internal: what the controller's rooms share; not an interface for other modules
 * (controller.h is). One file per room:
 *   controller.c    the event loop: start-up, signals, deadlines, shutdown
 *   ctl_build.c     one build of a generation (load, compile, room, render) for run, check, render
 *   ctl_reload.c    the reload pipeline: its stages (build, prove, activate, commit), the
 *                   ConfigMap and Secret as separate inputs, reload accounting
 *   ctl_children.c  Squid and stunnel: start gates, signals, orphans, log rotation, hung checks
 *   ctl_drain.c     SIGTERM: the drain before Squid stops
 *   ctl_probe.c     the tunnel and upstream prober thread
 *   ctl_keys.c      the API keys' validity as time passes
 *   ctl_status.c    the snapshot /status and /metrics serve
 */
#ifndef FPS_CTL_INTERNAL_H
#define FPS_CTL_INTERNAL_H

#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <sys/types.h>
#include <time.h>

#include "clock.h"
#include "compile.h"
#include "config.h"
#include "controller.h"
#include "cred.h"
#include "denied.h"
#include "err.h"
#include "genword.h"
#include "render.h"
#include "reports.h"
#include "state.h"
#include "status.h"
#include "sup.h"
#include "tunnel.h"

#define CONFIRM_MS       60000        /* how long Squid may take to accept again after a reconfigure */
#define LOG_ROTATE_BYTES (64LL << 20) /* Squid's logs live on the state emptyDir: keep them bounded */
#define DRAIN_POLL_MS    50           /* while Squid stops: how often to look for its remaining clients */

/* The tunnel/upstream prober runs in its own thread: a TLS handshake to a dead or
 * filtered server may take seconds, and the loop must not wait for it. */
struct probe {
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool started, quit, kick;
	struct fps_config cfg; /* a shallow copy: only scalar tunnel/upstream fields are read */
	struct tunnel_paths paths;
	char tunnel_dir[PATH_MAX];
	char stunnel_templates[PATH_MAX];
	char secrets_dir[PATH_MAX];
	struct status_path tunnel, upstream;
	struct clock_check clock;
	int notify_fd; /* eventfd: a path went up or down (the loop publishes at once) */
};

struct ctl {
	const struct ctl_opts *opts;
	const struct ctl_paths *paths;
	struct state st;
	struct sup_child squid;
	bool have_active;
	struct fps_config active; /* the configuration in force */
	char active_hash[65];     /* inputs */
	char squid_hash[65];      /* what Squid reads (squid.conf, lists, pages) */
	unsigned long long generation;
	int squid_workers;
	unsigned long reloads_ok, reloads_failed;
	char last_error[2048];
	char acct_inputs[65];   /* fingerprint of the inputs last counted (ctl_reload) */
	char tried_version[80]; /* last_reload.whitelist_version: JSON text, "" = none */

	struct sup_child stunnel;
	bool stunnel_stale; /* its files changed but it has not been told yet */
	char tunnel_dir[PATH_MAX];
	struct tunnel_paths tpaths;
	struct probe probe;

	/* what /status and /metrics serve, refreshed by ctl_publish() */
	struct fps_status pub;
	unsigned long long squid_gen; /* the generation the running Squid has loaded (0 = unknown) */
	pid_t sidecar_pid;            /* sidecar mode: the Squid we last saw in its pid file */
	unsigned sidecar_restarts;
	double sidecar_started;
	double last_reload_unix, last_success_unix;
	char good_secrets_dir[PATH_MAX + 32]; /* <state>/last-good-secrets: the Secret last in force */
	time_t key_expiry[64];                /* of the published keys: validity is recounted as time passes */
	char key_id[64][CRED_ID_MAX + 1];
	bool key_expired[64]; /* already said so in the log */
	size_t n_key_expiry;

	char helper_dir[PATH_MAX]; /* where Squid runs fps-auth and fps-acl from (state_install_helpers) */
	/* Why a child is not running, one line for the log, /status and /readyz: a
	 * failed preflight (a path Squid's user cannot reach, a port in use) or the
	 * first FATAL/ERROR line of cache.log when Squid exited. "" = none known. */
	char squid_problem[512], stunnel_problem[512];
	long long squid_log_off; /* cache.log size when the current Squid started */
	/* Squid's stdout/stderr come through a pipe the loop relays to ours: Squid's early
	 * FATAL lines (pid file, ports, config) are written there, not to cache.log. */
	int squid_out[2];
	char squid_out_line[1024]; /* a partial line */
	size_t squid_out_len;
	char squid_fatal[400]; /* the first FATAL (or ERROR) line since Squid started */
	int key_level;         /* KEYS_OK, KEYS_EXPIRING, KEYS_NONE_VALID: what the log last said */
	char keys_path[PATH_MAX + 16];

	bool state_enospc;              /* the last write to the state volume failed: no space */
	unsigned long long enospc_free; /* bytes free when it failed */
	bool state_full_logged;         /* what the log last said about the volume */
	bool retry_reload;              /* space came back: retry the update that failed */
	int health_fd;                  /* eventfd: Squid's answer or a path's state flipped (health.c, the prober) */
	pid_t health_pid;               /* the Squid the probe's `since` refers to */
	pid_t hung_pid;                 /* the Squid last killed for not answering (once per process) */
	long long hang_ms;              /* the bound on silence once Squid has answered */
	long long start_ms;             /* the bound before its first answer (>= hang_ms) */
	struct denied_collector denied; /* the helpers' denied-destination files, merged */
	bool have_denied;
	struct genword acl_gen;     /* the generation every fps-acl serves (genword.h) */
	struct rep_state *reports;  /* /failures and /traffic from Squid's logs; NULL = off */
	char cache_layout[64];      /* cache.h cache_layout of the config the running Squid started with */
	bool cache_restart_pending; /* a cache change waits for a Squid restart (sidecar mode) */
	bool cache_disk_suspended;  /* the state volume is nearly full: the disk store is left out */
};

double ctl_wall_now(void);
off_t ctl_file_size(const char *path);

/* ---- ctl_build.c: one build of a generation ------------------------------------------- */

/* The stages of an update, in order; ctl_stage_name() is what the log and /status call them.
 * A stage that judges the inputs' content blames an input (ctl_stage_blames_input): the
 * pipeline then retries with the last good ConfigMap or Secret. A full disk is nobody's input. */
enum ctl_stage {
	CTL_STAGE_LOAD,        /* fps.yaml, whitelist.json, the Secret's files */
	CTL_STAGE_COMPILE,     /* the whitelist and routes */
	CTL_STAGE_CACHE,       /* the update cache's room and store directories */
	CTL_STAGE_RENDER,      /* squid.conf, lists, pages, the fps-acl snapshot */
	CTL_STAGE_WRITE,       /* the generation's directory */
	CTL_STAGE_PARSE,       /* squid -k parse of the candidate */
	CTL_STAGE_SECRETS,     /* the Secret as an input, apikeys.json published */
	CTL_STAGE_TUNNEL,      /* stunnel's config and certificate copies */
	CTL_STAGE_ACTIVATE,    /* the `current` symlink swap */
	CTL_STAGE_RECONFIGURE, /* Squid re-reads its config and accepts again */
	CTL_STAGE_COUNT
};
const char *ctl_stage_name(enum ctl_stage s);
bool ctl_stage_blames_input(enum ctl_stage s, const struct fps_err *e);

/* A generation being built: the loaded config, what Squid is given (the config less a
 * suspended disk store: a shallow copy that owns nothing), the compiled policy, the files. */
struct ctl_gen {
	struct fps_config c, eff;
	struct compiled cp;
	struct render_out out;
	bool loaded, compiled, rendered;
	enum ctl_stage stage; /* the stage that failed */
};

/* What the update cache's size is judged against (cache.h cache_check_room). */
struct ctl_room {
	unsigned long long volume_total, volume_free, reserve, mem_limit;
};

void ctl_room_of(const char *dir, struct ctl_room *r);
int ctl_gen_load(struct ctl_gen *g, const char *config_dir, const char *secrets_dir, struct fps_err *e);
int ctl_gen_compile(struct ctl_gen *g, struct fps_err *e);
/* room NULL: the cache's size is not judged (render). */
int ctl_gen_render(struct ctl_gen *g, const char *config_dir, const struct ctl_room *room, const struct render_ctx *rc,
                   struct fps_err *e);
void ctl_gen_free(struct ctl_gen *g);
long ctl_max_fds(void);
bool ctl_no_denied_report(void);
long long ctl_log_rotate_bytes(void);

/* ---- ctl_reload.c ------------------------------------------------------------------------ */

int ctl_reload(struct ctl *x, const char *config_dir, bool quiet_if_same);
bool ctl_cache_disk_suspend(struct ctl *x, const struct fps_config *c);

/* ---- ctl_children.c ---------------------------------------------------------------------- */

void ctl_squid_argv(struct ctl *x, int workers, char *argv[8]);
pid_t ctl_squid_pid(struct ctl *x);
void ctl_signal_squid(struct ctl *x, pid_t pid, enum sup_event ev);
int ctl_confirm_squid(struct ctl *x, off_t log_offset, struct fps_err *e);
int ctl_squid_gate(struct sup_child *c, void *arg);
int ctl_stunnel_gate(struct sup_child *c, void *arg);
void ctl_squid_out(struct ctl *x);
void ctl_squid_exited(struct ctl *x);
void ctl_rotate_logs(struct ctl *x);
void ctl_check_hung(struct ctl *x, long long now);
void ctl_watch_sidecar(struct ctl *x);
bool ctl_adopt_orphan(struct sup_child *c, const char *pidfile, const char *conf, int replace_sig);
bool ctl_same_squid_conf(struct ctl *x, unsigned long long gen);

/* ---- ctl_drain.c ------------------------------------------------------------------------- */

long long ctl_hurry_squid(struct ctl *x, long long now);
long long ctl_drain_begin(struct ctl *x, long long now, long long *until);
long long ctl_drain_step(struct ctl *x, long long now, long long until);

/* ---- ctl_probe.c ------------------------------------------------------------------------- */

void probe_update(struct probe *p, const struct fps_config *c);
void probe_stop(struct probe *p);

/* ---- ctl_keys.c -------------------------------------------------------------------------- */

void ctl_key_clock(struct ctl *x, bool announce);
int ctl_check_keys(struct ctl *x, const struct fps_config *c);

/* ---- ctl_status.c ------------------------------------------------------------------------ */

void ctl_record_compiled(struct ctl *x, const struct compiled *cp);
void ctl_publish(struct ctl *x);

#endif
