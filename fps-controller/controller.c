/*
 * controller: one event loop (epoll over signalfd and inotify, timeouts computed
 * from the deadlines of the debounce, the supervisor and a periodic re-check).
 * Every change goes through ctl_reload(): the new generation is built and proven
 * beside the active one and swapped in only when complete; any failure leaves the
 * active generation serving and is recorded with its file, line and entry.
 */
#include "controller.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netdb.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/pidfd.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <pthread.h>

#include "admin.h"
#include "adminaddr.h"
#include "cpus.h"
#include "cache.h"
#include "cred.h"
#include "denied.h"
#include "fsio.h"
#include "genword.h"
#include "handover.h"
#include "health.h"
#include "inputs.h"
#include "log.h"
#include "metrics.h"
#include "preflight.h"
#include "proc.h"
#include "reports.h"
#include "squid.h"
#include "state.h"
#include "status.h"
#include "sup.h"
#include "tunnel.h"
#include "watch.h"

#define DEBOUNCE_QUIET_MS 50            /* trailing edge: apply once events stop for this long */
#define DEBOUNCE_MAX_MS   300           /* ...but never later than this after the first event */
#define RECHECK_MS        10000         /* re-read inputs even without events (missed or odd edits) */
#define CONFIRM_MS        60000         /* how long Squid may take to accept again after a reconfigure */
#define PUBLISH_MS        1000          /* the status snapshot is refreshed at least this often */
#define PROBE_MS          10000         /* full tunnel check (TLS handshake, certificate) while it is up */
#define PROBE_FAST_MS     1000          /* TCP reachability while up; full check while down */
#define KEY_WARN_DAYS     10            /* docs/agents.md: warn when the newest key expires within this */
#define LOG_ROTATE_BYTES  (64LL << 20)  /* Squid's logs live on the state emptyDir: keep them bounded */
#define STATE_FULL_BYTES  (256LL << 10) /* less free than this on the state volume counts as full */
#define STATE_ROOM_BYTES  (1LL << 20)   /* this much more free than at a failed write: retry it */
#define SQUID_HANG_MS     30000         /* a Squid answering no HTTP this long is killed (FPS_SQUID_HANG_MS) */
#define DRAIN_POLL_MS     50            /* while Squid stops: how often to look for its remaining clients */
#define DRAIN_QUIET_MS    2000          /* SIGTERM: how long Squid gets to finish its helper lookups */
#define DRAIN_MAX_MS      5000          /* SIGTERM: how long agents' connections get to close between requests */

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
	long long hang_ms;
	struct denied_collector denied; /* the helpers' denied-destination files, merged */
	bool have_denied;
	struct genword acl_gen;     /* the generation every fps-acl serves (genword.h) */
	struct rep_state *reports;  /* /failures and /traffic from Squid's logs; NULL = off */
	char cache_layout[64];      /* cache.h cache_layout of the config the running Squid started with */
	bool cache_restart_pending; /* a cache change waits for a Squid restart (sidecar mode) */
	bool cache_disk_suspended;  /* the state volume is nearly full: the disk store is left out */
};

static double wall_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- paths ---------------------------------------------------------------------------- */

int ctl_find_paths(struct ctl_paths *p, struct fps_err *e)
{
	memset(p, 0, sizeof(*p));
	if (fsio_self_dir(p->bin_dir, sizeof(p->bin_dir)) < 0)
		return err_set(e, "/proc/self/exe", 0, 0, "cannot find the controller's own directory");
	const char *sq = getenv("FPS_SQUID_BIN");
	snprintf(p->squid_bin, sizeof(p->squid_bin), "%s", sq && *sq ? sq : SQUID_BIN_DEFAULT);
	const char *st = getenv("FPS_STUNNEL_TEMPLATES_DIR");
	if (st && *st)
		snprintf(p->stunnel_templates_dir, sizeof(p->stunnel_templates_dir), "%s", st);
	const char *t = getenv("FPS_TEMPLATES_DIR");
	if (t && *t) {
		snprintf(p->templates_dir, sizeof(p->templates_dir), "%s", t);
		goto found;
	}
	/* A build tree (build/, build/asan/) or an install (<prefix>/bin, <prefix>/share/fps). */
	const char *cands[] = {"/../squid-templates", "/../../squid-templates", "/../share/fps/squid-templates"};
	for (size_t i = 0; i < sizeof(cands) / sizeof(cands[0]); i++) {
		char path[PATH_MAX], real[PATH_MAX];
		snprintf(path, sizeof(path), "%s%s/squid.conf.tmpl", p->bin_dir, cands[i]);
		if (fsio_exists(path)) {
			snprintf(path, sizeof(path), "%s%s", p->bin_dir, cands[i]);
			if (realpath(path, real))
				snprintf(p->templates_dir, sizeof(p->templates_dir), "%s", real);
			goto found;
		}
	}
	return err_set(e, NULL, 0, 0, "cannot find squid-templates/ near %s (set FPS_TEMPLATES_DIR)", p->bin_dir);
found:
	/* stunnel-conf/ sits beside squid-templates/ in the tree and in an install. */
	if (p->stunnel_templates_dir[0] == '\0')
		snprintf(p->stunnel_templates_dir, sizeof(p->stunnel_templates_dir), "%s/../stunnel-conf",
		         p->templates_dir);
	return 0;
}

/* 65536 descriptors, or the hard limit Squid will inherit if that is lower. */
/* The benchmark compares the denied report on and off in one run (bench/ab_denied.py). */
static bool ctl_no_denied_report(void)
{
	const char *v = getenv("FPS_DENIED_REPORT");
	return v && strcmp(v, "off") == 0;
}

static long ctl_max_fds(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_max == RLIM_INFINITY || rl.rlim_max > 65536)
		return 65536;
	return (long)rl.rlim_max;
}

/* ---- stages shared with check/render ------------------------------------------------- */

void ctl_report_entries(const struct compiled *cp, const char *config_dir)
{
	/* Each reload repeats what a large bad list says: name the first few entries of
	 * each kind, count the rest (/status keeps up to STATUS_MAX_REJECTED). */
	enum { LOG_MAX = 20 };
	char buf[512];
	for (size_t i = 0; i < cp->n_rejected && i < LOG_MAX; i++) {
		compile_note_str(&cp->rejected[i], buf, sizeof(buf));
		log_warn("whitelist entry rejected: %s/%s", config_dir, buf);
	}
	if (cp->n_rejected > LOG_MAX)
		log_warn("whitelist: %zu more entries rejected (see /status)", cp->n_rejected - LOG_MAX);
	for (size_t i = 0; i < cp->n_changed && i < LOG_MAX; i++) {
		compile_note_str(&cp->changed[i], buf, sizeof(buf));
		log_warn("whitelist entry changed: %s/%s", config_dir, buf);
	}
	if (cp->n_changed > LOG_MAX)
		log_warn("whitelist: %zu more entries changed", cp->n_changed - LOG_MAX);
}

int ctl_build(const char *config_dir, const char *secrets_dir, const struct ctl_paths *paths, const char *out_dir,
              struct fps_config *c, struct compiled *cp, struct render_out *out, struct fps_err *e)
{
	if (cfg_load(c, config_dir, secrets_dir, e) < 0)
		return -1;
	if (compile_config(c, cp, e) < 0) {
		cfg_free(c);
		return -1;
	}
	char run[PATH_MAX], sec[PATH_MAX], cache[PATH_MAX];
	snprintf(run, sizeof(run), "%s/run", out_dir);
	snprintf(sec, sizeof(sec), "%s/secrets", out_dir);
	snprintf(cache, sizeof(cache), "%s/cache", out_dir);
	struct render_ctx rc = {.templates_dir = paths->templates_dir,
	                        .run_dir = run,
	                        .cache_dir = cache,
	                        .gen_dir = out_dir,
	                        .secrets_dir = sec,
	                        .bin_dir = paths->bin_dir,
	                        .generation = 0,
	                        .max_fds = ctl_max_fds(),
	                        .mgr_port = state_pick_loopback_port(),
	                        .no_denied_report = ctl_no_denied_report(),
	                        .no_reports = reports_off()};
	if (render_generation(c, cp, &rc, out, e) < 0) {
		compile_free(cp);
		cfg_free(c);
		return -1;
	}
	return 0;
}

/* ---- the pipeline --------------------------------------------------------------------- */

static void ctl_fail(struct ctl *x, const struct fps_err *e, const char *stage, bool quiet_if_same)
{
	char buf[1600], msg[sizeof(x->last_error)];
	err_str(e, buf, sizeof(buf));
	snprintf(msg, sizeof(msg), "%s: %s", stage, buf);
	/* The periodic re-check must not repeat the same failure every few seconds. */
	if (quiet_if_same && strcmp(msg, x->last_error) == 0)
		return;
	snprintf(x->last_error, sizeof(x->last_error), "%s: %s", stage, buf);
	if (strstr(buf, strerror(ENOSPC))) {
		unsigned long long total = 0;
		x->state_enospc = true;
		if (state_volume(&x->st, &x->enospc_free, &total) < 0)
			x->enospc_free = 0;
	}
	log_error("reload failed (%s), generation %llu stays active: %s", stage, x->generation, buf);
}

static void squid_files_hash(const struct render_out *out, char hex[65])
{
	/* Everything Squid itself reads; the snapshot is fps-acl's and needs no reconfigure. */
	size_t total = 0;
	for (size_t i = 0; i < out->n_files; i++)
		if (strcmp(out->files[i].name, "acl.snapshot") != 0)
			total += strlen(out->files[i].name) + 1 + out->files[i].len + 1;
	char *all = malloc(total + 1);
	size_t o = 0;
	for (size_t i = 0; all && i < out->n_files; i++) {
		if (strcmp(out->files[i].name, "acl.snapshot") == 0)
			continue;
		size_t nl = strlen(out->files[i].name);
		memcpy(all + o, out->files[i].name, nl + 1);
		o += nl + 1;
		memcpy(all + o, out->files[i].data, out->files[i].len);
		o += out->files[i].len;
		all[o++] = '\0';
	}
	fsio_sha256_hex(all ? all : "", all ? o : 0, hex);
	free(all);
}

static void ctl_squid_argv(struct ctl *x, int workers, char *argv[8])
{
	static char conf[PATH_MAX + 16], name[32];
	snprintf(conf, sizeof(conf), "%s/squid.conf", x->st.current);
	/* SMP Squids on one host need service names of their own (shared memory segments and
	 * /run/squid sockets are named after it): two instances handing over one port run at
	 * once, so the name follows the state directory (FNV-1a of its path). */
	uint32_t h = 2166136261u;
	for (const char *p = x->st.dir; *p; p++)
		h = (h ^ (unsigned char)*p) * 16777619u;
	snprintf(name, sizeof(name), "fps%08x", h); /* Squid: alphanumeric only */
	squid_argv(x->paths->squid_bin, conf, workers, name, argv);
}

static off_t file_size(const char *path)
{
	struct stat sb;
	return stat(path, &sb) == 0 ? sb.st_size : 0;
}

/* The Squid we talk to: our child (supervise) or the one whose pid file the
 * other container's Squid wrote into the shared state directory (sidecar). */
static pid_t ctl_squid_pid(struct ctl *x)
{
	if (x->opts->mode == CTL_MODE_SUPERVISE)
		return x->squid.state == SUP_RUNNING ? x->squid.pid : 0;
	char path[PATH_MAX + 16], *text = NULL;
	snprintf(path, sizeof(path), "%s/squid.pid", x->st.run_dir);
	struct fps_err e;
	if (fsio_read(path, 64, &text, NULL, &e) < 0)
		return 0;
	pid_t pid = (pid_t)strtol(text, NULL, 10);
	free(text);
	return pid > 0 && kill(pid, 0) == 0 ? pid : 0;
}

/* A reload (SIGHUP) or log reopen (SIGUSR1) for Squid: through the supervision table when
 * Squid is our child (or adopted); sidecar mode signals the other container's Squid, which
 * no table of ours supervises. */
static void ctl_signal_squid(struct ctl *x, pid_t pid, enum sup_event ev)
{
	if (x->opts->mode == CTL_MODE_SUPERVISE)
		sup_event(&x->squid, ev, sup_now_ms());
	else
		kill(pid, ev == SUP_EV_RELOAD ? SIGHUP : SIGUSR1);
}

/* After SIGHUP: Squid re-reads its config, closes and reopens its ports, and logs
 * "Accepting HTTP Socket connections" once it serves again. */
static int ctl_confirm_squid(struct ctl *x, off_t log_offset, struct fps_err *e)
{
	char logpath[PATH_MAX + 16];
	snprintf(logpath, sizeof(logpath), "%s/cache.log", x->st.run_dir);
	long long deadline = sup_now_ms() + CONFIRM_MS;
	while (sup_now_ms() < deadline) {
		if (ctl_squid_pid(x) == 0)
			return err_set(e, logpath, 0, 0, "Squid is not running after reconfigure");
		FILE *f = fopen(logpath, "r");
		if (f) {
			if (fseeko(f, log_offset, SEEK_SET) == 0) {
				char line[2048];
				while (fgets(line, sizeof(line), f)) {
					if (strstr(line, "Accepting HTTP Socket connections")) {
						fclose(f);
						return 0;
					}
				}
			}
			fclose(f);
		}
		/* Polling the log with a deadline; Squid offers no completion signal. */
		struct timespec ts = {0, 20 * 1000000};
		nanosleep(&ts, NULL);
	}
	return err_set(e, logpath, 0, 0, "Squid did not accept connections within %d s of reconfigure",
	               CONFIRM_MS / 1000);
}

/* ---- status ------------------------------------------------------------------------- */

enum { KEYS_OK, KEYS_EXPIRING, KEYS_NONE_VALID };

/* Keys expire with time, not with an edit: every publish (once a second) recounts them
 * and logs each threshold the moment it is crossed, once: a key expired, the newest key
 * expires within KEY_WARN_DAYS, no key is valid. `announce` logs the current level even
 * if it did not change (a new apikeys.json was just published). */
static void ctl_key_clock(struct ctl *x, bool announce)
{
	time_t now = time(NULL), newest = 0;
	size_t valid = 0;
	for (size_t i = 0; i < x->n_key_expiry; i++) {
		if (x->key_expiry[i] > now) {
			valid++;
			if (x->key_expiry[i] > newest)
				newest = x->key_expiry[i];
		} else if (!x->key_expired[i]) {
			x->key_expired[i] = true;
			if (!announce)
				log_warn("API key '%s' in %s expired just now", x->key_id[i], x->keys_path);
		}
	}
	if (x->n_key_expiry == 0 && !announce)
		return;
	int level = valid == 0 ? KEYS_NONE_VALID : newest - now < KEY_WARN_DAYS * 86400 ? KEYS_EXPIRING : KEYS_OK;
	if (level == x->key_level && !announce)
		return;
	x->key_level = level;
	if (level == KEYS_NONE_VALID)
		log_error("NO VALID API KEY in %s: every agent will get 407 until a key is added", x->keys_path);
	else if (level == KEYS_EXPIRING)
		log_warn("the newest API key in %s expires in %.1f days: issue the next key", x->keys_path,
		         (double)(newest - now) / 86400.0);
	else if (!announce)
		log_info("API keys in %s: the newest expires in %.1f days", x->keys_path,
		         (double)(newest - now) / 86400.0);
}

/* Parses the keys the way fps-auth will; warns about the newest key's expiry. */
static int ctl_check_keys(struct ctl *x, const struct fps_config *c, const char *config_dir)
{
	(void)config_dir;
	struct cred_keys keys = {0};
	struct fps_err e;
	err_clear(&e);
	char path[PATH_MAX + 16];
	snprintf(path, sizeof(path), "%s/apikeys.json", x->opts->secrets_dir);
	if (cred_keys_parse(c->keys_text, c->keys_len, path, &keys, &e) < 0) {
		char buf[1600];
		err_str(&e, buf, sizeof(buf));
		snprintf(x->pub.keys_error, sizeof(x->pub.keys_error), "%s", buf);
		log_error("API keys not updated, fps-auth keeps the previous ones: %s", buf);
		return -1;
	}
	time_t now = time(NULL), newest = cred_newest_expiry(&keys);
	x->n_key_expiry = 0;
	for (size_t i = 0; i < keys.n && i < sizeof(x->key_expiry) / sizeof(x->key_expiry[0]); i++) {
		x->key_expiry[x->n_key_expiry] = keys.v[i].expires;
		snprintf(x->key_id[x->n_key_expiry], sizeof(x->key_id[0]), "%s", keys.v[i].id);
		x->key_expired[x->n_key_expiry] = false;
		x->n_key_expiry++;
	}
	x->pub.keys_total = keys.n;
	x->pub.keys_valid = cred_keys_valid(&keys, now);
	x->pub.have_key_expiry = newest > 0;
	x->pub.newest_key_expiry_unix = (double)newest;
	x->pub.keys_error[0] = '\0';
	snprintf(x->keys_path, sizeof(x->keys_path), "%s", path);
	ctl_key_clock(x, true);
	cred_keys_free(&keys);
	return 0;
}

static void ctl_record_compiled(struct ctl *x, const struct compiled *cp)
{
	struct fps_status *s = &x->pub;
	s->entries = cp->policy.n_entries;
	for (int v = 0; v < WL_VIA_COUNT; v++)
		s->by_route[v] = cp->by_route[v];
	s->folded = cp->policy.n_folded;
	s->n_rejected = cp->n_rejected;
	for (size_t i = 0; i < cp->n_rejected && i < STATUS_MAX_REJECTED; i++) {
		const struct compile_note *n = &cp->rejected[i];
		struct status_rejected *r = &s->rejected[i];
		if (n->line > 0)
			snprintf(r->where, sizeof(r->where), "%s:%d:%d", n->file, n->line, n->col);
		else
			snprintf(r->where, sizeof(r->where), "%s: entry #%d", n->file, n->index);
		snprintf(r->entry, sizeof(r->entry), "%s", n->entry);
		snprintf(r->reason, sizeof(r->reason), "%s", n->reason);
	}
}

static void child_status(struct status_child *out, const char *name, const struct sup_child *c, double start_wall,
                         long long start_mono)
{
	snprintf(out->name, sizeof(out->name), "%s", name);
	out->managed = true;
	out->pid = c->state == SUP_RUNNING ? (int)c->pid : 0;
	out->up = c->state == SUP_RUNNING;
	out->started_unix = out->up ? start_wall - (double)(sup_now_ms() - c->started_ms) / 1000.0 : 0;
	(void)start_mono;
	out->restarts = c->restarts;
	snprintf(out->state, sizeof(out->state), "%s", sup_state_name(c->state));
}

/* path as an absolute one (relative to our working directory), for commands run elsewhere */
static void ctl_abs_path(const char *path, char *out, size_t outlen)
{
	char cwd[PATH_MAX];
	if (path == NULL || path[0] == '\0')
		out[0] = '\0';
	else if (path[0] == '/' || getcwd(cwd, sizeof(cwd)) == NULL)
		snprintf(out, outlen, "%s", path);
	else
		snprintf(out, outlen, "%s/%s", cwd, path);
}

/* What the reports need from the controller to name a failure (reports.h rep_context). */
static void ctl_publish_reports(struct ctl *x, struct fps_status *s, double now)
{
	if (x->reports == NULL)
		return;
	struct rep_context rc = {0};
	if (x->have_active) {
		rc.has_tunnel = x->active.has_tunnel;
		rc.has_upstream = x->active.has_upstream;
		if (rc.has_upstream) /* matches the logged parent address when written as one */
			snprintf(rc.upstream_addr, sizeof(rc.upstream_addr), "%s", x->active.upstream_host);
	}
	rc.tunnel_up = s->tunnel.up;
	if (rc.has_tunnel && !s->tunnel.up) {
		snprintf(rc.tunnel_error, sizeof(rc.tunnel_error), "%s", s->tunnel.error);
		rc.tunnel_tls_failed = s->tunnel.interception || strncmp(s->tunnel.error, "certificate", 11) == 0 ||
		                       strstr(s->tunnel.error, "TLS") != NULL;
	}
	reports_poll(x->reports, &rc);
	reports_snapshot(x->reports, now, &s->reports);
}
static bool ctl_cache_disk_suspend(struct ctl *x, const struct fps_config *c);

static void ctl_publish(struct ctl *x)
{
	struct fps_status *s = &x->pub;
	double now = wall_now();
	s->generation = x->generation;
	snprintf(s->config_hash, sizeof(s->config_hash), "%s", x->active_hash);
	snprintf(s->apply_mode, sizeof(s->apply_mode), "%s",
	         x->have_active && x->active.apply == CFG_APPLY_RECONFIGURE ? "reconfigure" : "live");
	s->report_mode = x->have_active && x->active.whitelist_report;
	if (x->generation > 0) {
		state_gen_dir(&x->st, x->generation, s->input_dir, sizeof(s->input_dir));
		strncat(s->input_dir, "/input", sizeof(s->input_dir) - strlen(s->input_dir) - 1);
	}
	s->have_version = x->have_active && x->active.has_version;
	s->whitelist_version = x->have_active ? x->active.whitelist_version : 0;
	s->last_reload_unix = x->last_reload_unix;
	snprintf(s->last_reload_version, sizeof(s->last_reload_version), "%s", x->tried_version);
	s->last_reload_ok = x->last_error[0] == '\0';
	snprintf(s->last_error, sizeof(s->last_error), "%s", x->last_error);
	s->reloads_ok = x->reloads_ok;
	s->reloads_failed = x->reloads_failed;
	s->last_success_unix = x->last_success_unix;
	s->auth_enabled = x->have_active && x->active.auth_enabled;
	/* A key expires with time, not with an edit: recount at every publish. */
	ctl_key_clock(x, false);
	s->keys_valid = 0;
	for (size_t i = 0; i < x->n_key_expiry; i++)
		if ((double)x->key_expiry[i] > now)
			s->keys_valid++;

	pid_t squid_pid = ctl_squid_pid(x);
	if (x->opts->mode == CTL_MODE_SUPERVISE) {
		child_status(&s->squid, "squid", &x->squid, now, 0);
	} else {
		snprintf(s->squid.name, sizeof(s->squid.name), "squid");
		s->squid.managed = false;
		s->squid.pid = (int)squid_pid;
		s->squid.up = squid_pid != 0;
		s->squid.started_unix = squid_pid ? x->sidecar_started : 0;
		s->squid.restarts = x->sidecar_restarts;
		snprintf(s->squid.state, sizeof(s->squid.state), "%s", squid_pid ? "external" : "absent");
	}
	child_status(&s->stunnel, "stunnel", &x->stunnel, now, 0);
	/* A problem stays visible until the child has run for a while again. */
	if (x->squid.state == SUP_RUNNING && sup_now_ms() - x->squid.started_ms > 5000)
		x->squid_problem[0] = '\0';
	if (x->stunnel.state == SUP_RUNNING)
		x->stunnel_problem[0] = '\0';
	snprintf(s->squid.problem, sizeof(s->squid.problem), "%s", x->squid_problem);
	snprintf(s->stunnel.problem, sizeof(s->stunnel.problem), "%s", x->stunnel_problem);
	/* A full state volume: Squid drops log lines (on-error=drop) and new generations
	 * cannot be written, while the active one keeps serving. Say so, and retry the
	 * failed update as soon as space comes back. */
	s->have_state_volume = state_volume(&x->st, &s->state_free_bytes, &s->state_total_bytes) == 0;
	s->state_full = x->state_enospc || (s->have_state_volume && s->state_free_bytes < STATE_FULL_BYTES);
	if (s->state_full != x->state_full_logged) {
		if (s->state_full)
			log_error("state volume %s is full (%llu bytes free): Squid drops log lines, generation %llu "
			          "stays active, updates wait for space",
			          x->st.dir, s->state_free_bytes, x->generation);
		else
			log_info("state volume %s has room again (%llu bytes free)", x->st.dir, s->state_free_bytes);
		x->state_full_logged = s->state_full;
	}
	if (x->have_active && ctl_cache_disk_suspend(x, &x->active) != x->cache_disk_suspended)
		x->retry_reload = true; /* the disk store goes or comes back (ctl_apply) */
	if (x->state_enospc && s->have_state_volume && s->state_free_bytes >= x->enospc_free + STATE_ROOM_BYTES) {
		x->enospc_free = s->state_free_bytes;
		x->retry_reload = true;
	}
	if (x->have_active) {
		snprintf(s->proxy_addr, sizeof(s->proxy_addr), "%s",
		         strcmp(x->active.bind, "0.0.0.0") == 0 ? "127.0.0.1"
		         : strcmp(x->active.bind, "::") == 0    ? "::1"
		                                                : x->active.bind);
		s->proxy_port = x->active.port;
	}
	/* Ready means: Squid runs the active generation and answers HTTP (a TCP connect alone
	 * succeeds for a stopped Squid: the kernel completes it). The probe goes to the
	 * controller-only port: Squid accepts one connection per listening socket per loop
	 * pass, so while 1000 agents keep the agents' sockets' queues full a fresh connection
	 * there can wait seconds, and a saturated but working Squid would look hung (and be
	 * killed after the bound). Its own socket is accepted from at every pass. */
	struct health_state h;
	if (x->st.mgr_port > 0)
		health_target("127.0.0.1", x->st.mgr_port, squid_pid != x->health_pid);
	else
		health_target(s->proxy_addr, s->proxy_port, squid_pid != x->health_pid);
	x->health_pid = squid_pid;
	health_get(&h);
	long long mono = sup_now_ms(), from = h.last_ok_ms > h.since_ms ? h.last_ok_ms : h.since_ms;
	s->squid.answering = squid_pid != 0 && h.answering;
	s->squid.silent_seconds = s->squid.answering ? 0 : (double)(mono - from) / 1000.0;
	snprintf(s->squid.answer_error, sizeof(s->squid.answer_error), "%s", s->squid.answering ? "" : h.error);
	s->squid.hung_kills = x->squid.hung_kills;
	s->squid_runs_active = squid_pid != 0 && x->squid_gen == x->generation && x->generation > 0 && h.answering;
	s->mgr_port = x->st.mgr_port;
	ctl_abs_path(x->opts->config_dir, s->config_dir, sizeof(s->config_dir));
	ctl_abs_path(x->opts->secrets_dir, s->secrets_dir, sizeof(s->secrets_dir));
	ctl_abs_path(x->opts->state_dir, s->state_dir, sizeof(s->state_dir));
	if (x->have_active && x->active.has_cache) {
		s->cache.enabled = true;
		s->cache.memory_mb = x->active.cache_memory_mb;
		s->cache.disk_mb = x->active.cache_disk_mb;
		s->cache.max_object_mb = cfg_cache_max_object(&x->active);
		s->cache.restart_pending = x->cache_restart_pending;
		s->cache.disk_suspended = x->cache_disk_suspended;
	}
	s->tunnel_needed = x->have_active && cfg_uses_via(&x->active, WL_VIA_TUNNEL);
	pthread_mutex_lock(&x->probe.mu);
	s->tunnel = x->probe.tunnel;
	s->upstream = x->probe.upstream;
	s->clock = x->probe.clock;
	pthread_mutex_unlock(&x->probe.mu);
	if (x->have_active && !x->active.has_tunnel && !x->active.has_upstream) {
		memset(&s->clock, 0, sizeof(s->clock));
		snprintf(s->clock.error, sizeof(s->clock.error),
		         "no reference: neither a tunnel nor an upstream is configured");
	}
	if (x->have_active && x->active.has_tunnel && !s->stunnel.up) {
		s->tunnel.up = false;
		snprintf(s->tunnel.error, sizeof(s->tunnel.error), "stunnel is not running (%s)", s->stunnel.state);
	}
	if (x->have_denied) {
		denied_collect(&x->denied);
		const struct denied_table *v = &x->denied.view;
		s->denied.since = v->since;
		s->denied.total = v->total;
		s->denied.distinct = v->n;
		s->denied.truncated = v->evicted > 0;
		s->denied.n_top = denied_top(v, s->denied.top, DENIED_TOP_MAX);
	}
	ctl_publish_reports(x, s, now);
	status_publish(s);
}

/* ---- tunnel and upstream prober ------------------------------------------------------ */

static void probe_upstream(const struct fps_config *c, struct status_path *st)
{
	memset(st, 0, sizeof(*st));
	st->configured = true;
	st->checked_unix = wall_now();
	snprintf(st->target, sizeof(st->target), "%s:%d", c->upstream_host, c->upstream_port);
	char portstr[16];
	snprintf(portstr, sizeof(portstr), "%d", c->upstream_port);
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
	int gai = getaddrinfo(c->upstream_host, portstr, &hints, &ai);
	if (gai != 0) {
		snprintf(st->error, sizeof(st->error), "cannot resolve %s: %s", c->upstream_host, gai_strerror(gai));
		return;
	}
	int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct timeval tv = {.tv_sec = 3};
	if (fd >= 0)
		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
		st->up = true;
	else
		snprintf(st->error, sizeof(st->error), "cannot connect to %s: %s", st->target, strerror(errno));
	if (fd >= 0)
		close(fd);
	freeaddrinfo(ai);
}

/* Can a TCP connection to the tunnel server be opened within PROBE_FAST_MS? The cheap
 * check between full handshakes: a stopped or unreachable server shows within a second
 * instead of at the next full check. */
static bool probe_tunnel_reachable(const struct fps_config *c)
{
	char portstr[16];
	snprintf(portstr, sizeof(portstr), "%d", c->tunnel_port);
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
	if (getaddrinfo(c->tunnel_address[0] ? c->tunnel_address : c->tunnel_server, portstr, &hints, &ai) != 0)
		return false;
	int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct timeval tv = {.tv_sec = PROBE_FAST_MS / 1000, .tv_usec = (PROBE_FAST_MS % 1000) * 1000};
	if (fd >= 0)
		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	bool ok = fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) == 0;
	if (fd >= 0)
		close(fd);
	freeaddrinfo(ai);
	return ok;
}

/* The tunnel is checked every PROBE_FAST_MS: a full TLS check while it is down (so
 * recovery shows within about a second) and every PROBE_MS while it is up, with a TCP
 * connect in between (a failure triggers the full check at once). The upstream check
 * is a TCP connect, every PROBE_FAST_MS. */
static void *probe_main(void *arg)
{
	struct probe *p = arg;
	long long next_full = 0;
	pthread_mutex_lock(&p->mu);
	while (!p->quit) {
		struct fps_config cfg = p->cfg;
		bool kicked = p->kick, was_up = p->tunnel.up, was_up_upstream = p->upstream.up;
		bool clock_answered = p->clock.have;
		struct status_path t = p->tunnel, u = {0};
		p->kick = false;
		pthread_mutex_unlock(&p->mu);
		long long now = sup_now_ms();
		bool full = kicked || !was_up || now >= next_full;
		if (cfg.has_tunnel && !full && !probe_tunnel_reachable(&cfg))
			full = true;
		if (cfg.has_tunnel && full) {
			tunnel_probe(&cfg, &p->paths, 5000, &t);
			t.configured = true;
			t.checked_unix = wall_now();
			next_full = now + PROBE_MS;
		} else if (!cfg.has_tunnel) {
			memset(&t, 0, sizeof(t));
		}
		if (cfg.has_upstream)
			probe_upstream(&cfg, &u);
		/* The clock against a reference we trust: after each change, when a reference comes up
		 * (at start the tunnel is rarely up at the first check), then once a minute; while no
		 * reference has answered though one is up, every CLOCK_RETRY_S (the cloud proxy behind
		 * the tunnel may still be starting when the tunnel's TLS already answers). */
		static double clock_at;
		struct clock_check ck;
		bool have_ref = (cfg.has_tunnel && t.up) || (cfg.has_upstream && u.up);
		bool clock_due = kicked || (cfg.has_tunnel && t.up && !was_up) ||
		                 (cfg.has_upstream && u.up && !was_up_upstream) ||
		                 wall_now() - clock_at >= CLOCK_PERIOD_S ||
		                 (have_ref && !clock_answered && wall_now() - clock_at >= CLOCK_RETRY_S);
		if (clock_due) {
			clock_check(&cfg, &ck);
			clock_at = wall_now();
			if (ck.have && !ck.ok)
				log_warn(
				    "clock: the system clock is %.0f s %s %s (Date: %s): API keys and certificates are "
				    "judged by this clock",
				    fabs(ck.skew_seconds), ck.skew_seconds > 0 ? "ahead of" : "behind", ck.reference,
				    ck.ref_date);
		}
		pthread_mutex_lock(&p->mu);
		if (clock_due)
			p->clock = ck;
		p->tunnel = t;
		p->upstream = u;
		if (cfg.has_tunnel && t.up && !was_up)
			log_info("tunnel to %s is up", t.target);
		if ((t.up != was_up || u.up != was_up_upstream) && p->notify_fd >= 0) {
			uint64_t one = 1;
			if (write(p->notify_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
				log_warn_errno("probe: cannot wake the control loop");
		}
		if (p->quit)
			break;
		struct timespec until;
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += PROBE_FAST_MS / 1000;
		while (!p->quit && !p->kick)
			if (pthread_cond_timedwait(&p->cv, &p->mu, &until) != 0)
				break;
	}
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

/* Gives the prober the scalar fields it reads (never the pointers the loop frees). */
static void probe_update(struct probe *p, const struct fps_config *c)
{
	struct fps_config copy;
	memset(&copy, 0, sizeof(copy));
	memcpy(copy.config_dir, c->config_dir, sizeof(copy.config_dir));
	memcpy(copy.secrets_dir, c->secrets_dir, sizeof(copy.secrets_dir));
	copy.has_tunnel = c->has_tunnel;
	memcpy(copy.tunnel_server, c->tunnel_server, sizeof(copy.tunnel_server));
	memcpy(copy.tunnel_address, c->tunnel_address, sizeof(copy.tunnel_address));
	copy.tunnel_port = c->tunnel_port;
	copy.tunnel_local_port = c->tunnel_local_port;
	copy.has_upstream = c->has_upstream;
	memcpy(copy.upstream_host, c->upstream_host, sizeof(copy.upstream_host));
	copy.upstream_port = c->upstream_port;
	pthread_mutex_lock(&p->mu);
	p->cfg = copy;
	p->kick = true;
	bool start = !p->started && (c->has_tunnel || c->has_upstream);
	pthread_cond_signal(&p->cv);
	pthread_mutex_unlock(&p->mu);
	if (start && pthread_create(&p->thread, NULL, probe_main, p) == 0)
		p->started = true;
}

static void probe_stop(struct probe *p)
{
	pthread_mutex_lock(&p->mu);
	p->quit = true;
	pthread_cond_signal(&p->cv);
	pthread_mutex_unlock(&p->mu);
	if (p->started)
		pthread_join(p->thread, NULL);
}

/* The pipeline for one pair of inputs (a ConfigMap directory, a Secret directory).
 * Returns 0 when a new generation is active, 1 when the inputs equal the active ones,
 * -1 when it failed before anything changed (*stage and *e say where and why: the caller
 * decides whom to blame), -2 when it failed after activation (already recorded). */
/* The update cache's footing, before anything is rendered: disk_mb must fit the state volume
 * where its size is visible and memory_mb the container's memory limit (a bad value is an
 * error naming the key; the last good config keeps serving), and the disk stores' directories
 * exist for Squid's user (cache.h: made here, which is all `squid -z` does for aufs). */
/* Free space on the state volume below which the disk store is left out, and above which it
 * comes back (inside the reserve cache_check_room keeps beside the store). */
#define CACHE_SUSPEND_BYTES (32ULL << 20)
#define CACHE_RESUME_BYTES  (48ULL << 20)

static bool ctl_cache_disk_suspend(struct ctl *x, const struct fps_config *c)
{
	if (!c->has_cache || c->cache_disk_mb == 0)
		return false;
	unsigned long long free_b = 0, total_b = 0;
	if (state_volume(&x->st, &free_b, &total_b) < 0)
		return x->cache_disk_suspended;
	return free_b < (x->cache_disk_suspended ? CACHE_RESUME_BYTES : CACHE_SUSPEND_BYTES);
}

static int ctl_cache_ready(struct ctl *x, const struct fps_config *c, const char *config_dir, struct fps_err *e)
{
	if (!c->has_cache)
		return 0;
	char path[PATH_MAX + 16];
	snprintf(path, sizeof(path), "%s/%s", config_dir, CFG_YAML_NAME);
	unsigned long long free_b = 0, total_b = 0;
	if (state_volume(&x->st, &free_b, &total_b) < 0)
		total_b = 0;
	const char *env = getenv("FPS_LOG_ROTATE_BYTES");
	long long rot = env && atoll(env) > 0 ? atoll(env) : LOG_ROTATE_BYTES;
	if (cache_check_room(c, path, total_b, free_b, CACHE_VOLUME_RESERVE(rot), cache_memory_limit(), e) < 0)
		return -1;
	return cache_prepare(c, x->st.cache_dir, x->st.as_root, x->st.squid_uid, x->st.squid_gid, e);
}

static int ctl_apply(struct ctl *x, const char *config_dir, const char *secrets_dir, bool quiet_if_same,
                     struct fps_err *ep, const char **stagep)
{
	struct fps_config c;
	struct fps_err e;
	err_clear(&e);
	*stagep = "load";
	if (cfg_load(&c, config_dir, secrets_dir, ep) < 0)
		return -1;
	/* The disk store is left out while the state volume is (nearly) full: Squid 5.7 asserts
	 * on a failed write to an aufs store ("assertion failed: fs_io.cc"), and would again at
	 * every restart. It comes back when space does. */
	bool disk_off = ctl_cache_disk_suspend(x, &c);
	if (x->have_active && strcmp(c.input_hash, x->active_hash) == 0 && disk_off == x->cache_disk_suspended) {
		if (!quiet_if_same)
			log_debug("inputs unchanged (hash %.12s): nothing to do", c.input_hash);
		cfg_free(&c);
		return 1;
	}
	struct compiled cp;
	if (compile_config(&c, &cp, ep) < 0) {
		cfg_free(&c);
		*stagep = "compile";
		return -1;
	}
	ctl_report_entries(&cp, config_dir);
	/* Leaving the store out needs room for the new generation: give up the ballast. */
	if (disk_off)
		cache_release_ballast(x->st.cache_dir);
	/* What Squid is given: the configuration, less a suspended disk store. */
	struct fps_config eff = c;
	if (disk_off)
		eff.cache_disk_mb = 0;
	if (ctl_cache_ready(x, &eff, config_dir, ep) < 0) {
		compile_free(&cp);
		cfg_free(&c);
		*stagep = "cache";
		return -1;
	}

	unsigned long long gen = state_max_gen(&x->st);
	gen = (gen > x->generation ? gen : x->generation) + 1;
	char gen_dir[PATH_MAX];
	state_gen_dir(&x->st, gen, gen_dir, sizeof(gen_dir));
	struct render_ctx rc = {.templates_dir = x->paths->templates_dir,
	                        .run_dir = x->st.run_dir,
	                        .cache_dir = x->st.cache_dir,
	                        .gen_dir = x->st.current,
	                        .secrets_dir = x->st.secrets_dir,
	                        .bin_dir = x->helper_dir,
	                        .generation = gen,
	                        .max_fds = ctl_max_fds(),
	                        .mgr_port = x->st.mgr_port,
	                        .no_denied_report = ctl_no_denied_report(),
	                        .no_reports = reports_off()};
	struct render_out out, check;
	memset(&check, 0, sizeof(check));
	const char *stage = "render";
	if (render_generation(&eff, &cp, &rc, &out, &e) < 0)
		goto fail_nofiles;
	stage = "write";
	if (state_write_gen(&x->st, gen, &out, &c, &e) < 0)
		goto fail;

	char squid_hash[65];
	squid_files_hash(&out, squid_hash);
	bool conf_changed = !x->have_active || strcmp(squid_hash, x->squid_hash) != 0;
	if (conf_changed) {
		/* Prove the candidate as Squid will read it, but pointing at this
		 * generation's directory instead of `current`. */
		stage = "render";
		rc.gen_dir = gen_dir;
		if (render_generation(&eff, &cp, &rc, &check, &e) < 0)
			goto fail;
		stage = "write";
		if (state_write_file(&x->st, gen, "check.conf", check.files[0].data, check.files[0].len, &e) < 0)
			goto fail;
		char check_path[PATH_MAX + 16], warnings[4096];
		snprintf(check_path, sizeof(check_path), "%s/check.conf", gen_dir);
		stage = "squid -k parse";
		if (squid_parse_check(x->paths->squid_bin, check_path, warnings, sizeof(warnings), &e) < 0)
			goto fail;
		if (warnings[0])
			log_warn("generation %llu: squid -k parse warnings: %s", gen, warnings);
		unlink(check_path);
	}
	stage = "secrets";
	if (c.keys_text && (!x->have_active || x->active.keys_len != c.keys_len ||
	                    memcmp(x->active.keys_text, c.keys_text, c.keys_len) != 0)) {
		/* A corrupt keys file is not published: fps-auth keeps the keys it has,
		 * and the rest of the update still applies. */
		if (ctl_check_keys(x, &c, config_dir) == 0 &&
		    state_write_secret(&x->st, "apikeys.json", c.keys_text, c.keys_len, &e) < 0)
			goto fail;
	}
	bool tunnel_changed = false;
	if (c.has_tunnel) {
		stage = "tunnel";
		x->tpaths.secrets_dir = secrets_dir; /* the Secret in use: the mount or its last good copy */
		if (tunnel_prepare(&c, &x->tpaths, &tunnel_changed, &e) < 0)
			goto fail;
		/* stunnel's files are not part of a generation: if this update fails
		 * after this point, the next successful one must still reload stunnel. */
		if (tunnel_changed)
			x->stunnel_stale = true;
	}
	stage = "activate";
	if (state_activate(&x->st, gen, &e) < 0)
		goto fail;
	genword_publish(&x->acl_gen, gen); /* its snapshot is in place: every fps-acl switches to it */

	if (x->stunnel.state == SUP_RUNNING && !c.has_tunnel) {
		log_info("generation %llu: tunnel removed: stopping stunnel", gen);
		sup_event(&x->stunnel, SUP_EV_STOP, sup_now_ms());
	} else if (x->stunnel.state == SUP_RUNNING && x->stunnel_stale) {
		/* stunnel re-reads its config and certificates on SIGHUP; established
		 * connections keep going on the old ones. */
		log_info("generation %llu: tunnel config or certificates changed: reloading stunnel pid %d", gen,
		         (int)x->stunnel.pid);
		sup_event(&x->stunnel, SUP_EV_RELOAD, sup_now_ms());
		x->stunnel_stale = false;
	}

	int workers = cfg_workers(&c);
	pid_t squid_pid = ctl_squid_pid(x);
	char layout[64];
	cache_layout(&eff, layout, sizeof(layout));
	bool cache_restart = squid_pid && x->cache_layout[0] && strcmp(layout, x->cache_layout) != 0;
	if (x->opts->mode == CTL_MODE_SUPERVISE && squid_pid && (workers != x->squid_workers || cache_restart)) {
		/* -N vs --foreground: a worker count change needs a new Squid process. So does a
		 * disk store that appears or goes (cache.h cache_layout). */
		char *argv[8];
		ctl_squid_argv(x, workers, argv);
		sup_set_argv(&x->squid, argv);
		if (workers != x->squid_workers)
			log_info("generation %llu: squid workers %d -> %d: restarting squid", gen, x->squid_workers,
			         workers);
		else
			log_info("generation %llu: cache stores change (%s -> %s): restarting squid", gen,
			         x->cache_layout, layout);
		/* A planned restart: not a death, not counted in restarts, no backoff. */
		sup_event(&x->squid, SUP_EV_RESTART, sup_now_ms());
		x->squid_workers = workers;
		snprintf(x->cache_layout, sizeof(x->cache_layout), "%s", layout);
		x->cache_restart_pending = false;
	} else if (conf_changed && squid_pid) {
		char logpath[PATH_MAX + 16];
		snprintf(logpath, sizeof(logpath), "%s/cache.log", x->st.run_dir);
		off_t off = file_size(logpath);
		long long t0 = sup_now_ms();
		log_info("generation %llu: squid.conf changed: reconfiguring squid pid %d", gen, (int)squid_pid);
		x->squid_gen = 0;
		ctl_signal_squid(x, squid_pid, SUP_EV_RELOAD);
		stage = "reconfigure";
		if (ctl_confirm_squid(x, off, &e) < 0) {
			/* The new generation is active (Squid read it); record the failure. */
			x->generation = gen;
			goto fail_activated;
		}
		log_info("generation %llu: squid accepting again after %lld ms", gen, sup_now_ms() - t0);
		x->squid_gen = gen;
	} else if (squid_pid && !conf_changed && x->squid_gen == x->generation) {
		x->squid_gen = gen; /* nothing Squid reads changed: it runs this generation too */
	}

	if (cache_restart && x->opts->mode != CTL_MODE_SUPERVISE) {
		/* Sidecar: Squid is not ours to restart; /status says the change waits for one. */
		log_warn("generation %llu: cache stores change (%s -> %s): takes effect when squid restarts", gen,
		         x->cache_layout, layout);
		x->cache_restart_pending = true;
	}
	if (!squid_pid)
		snprintf(x->cache_layout, sizeof(x->cache_layout), "%s", layout);
	if (disk_off != x->cache_disk_suspended) {
		if (disk_off)
			log_error(
			    "generation %llu: the state volume %s is nearly full: the update cache's disk store is "
			    "left out (memory only) until space returns",
			    gen, x->st.dir);
		else
			log_info(
			    "generation %llu: the state volume has room again: the update cache's disk store is back",
			    gen);
		x->cache_disk_suspended = disk_off;
	}
	unsigned long long prev = x->generation;
	x->generation = gen;
	snprintf(x->squid_hash, sizeof(x->squid_hash), "%s", squid_hash);
	snprintf(x->active_hash, sizeof(x->active_hash), "%s", c.input_hash);
	if (x->have_active)
		cfg_free(&x->active);
	x->active = c;
	x->have_active = true;
	x->last_error[0] = '\0';
	x->state_enospc = false;
	x->last_success_unix = wall_now(); /* reloads and last_reload: ctl_reload() counts */
	ctl_record_compiled(x, &cp);
	if (c.whitelist_report)
		log_warn(
		    "generation %llu: whitelist.mode is report: destinations not in the whitelist are ALLOWED "
		    "(on the %s route) and counted in /denied; set whitelist.mode: enforce once the list is complete",
		    gen, wl_via_name(c.default_route));
	probe_update(&x->probe, &x->active);
	state_prune(&x->st, gen, prev);
	log_info(
	    "generation %llu active: %zu entries (%zu direct, %zu upstream, %zu tunnel), %zu folded, %zu rejected, "
	    "whitelist version %lld, %s apply, squid %s",
	    gen, cp.policy.n_entries, cp.by_route[WL_VIA_DIRECT], cp.by_route[WL_VIA_UPSTREAM],
	    cp.by_route[WL_VIA_TUNNEL], cp.policy.n_folded, cp.n_rejected, c.has_version ? c.whitelist_version : -1LL,
	    c.apply == CFG_APPLY_LIVE ? "live" : "reconfigure",
	    conf_changed ? "given the new squid.conf" : "untouched (live apply)");
	render_free(&out);
	render_free(&check);
	compile_free(&cp);
	return 0;

fail_activated:
	snprintf(x->squid_hash, sizeof(x->squid_hash), "%s", squid_hash);
	snprintf(x->active_hash, sizeof(x->active_hash), "%s", c.input_hash);
	if (x->have_active)
		cfg_free(&x->active);
	x->active = c;
	x->have_active = true;
	render_free(&out);
	render_free(&check);
	compile_free(&cp);
	ctl_fail(x, &e, stage, quiet_if_same);
	return -2;
fail:
	render_free(&out);
	render_free(&check);
	if (gen != x->generation) {
		fsio_rmtree(gen_dir);
	}
fail_nofiles:
	compile_free(&cp);
	cfg_free(&c);
	*ep = e;
	*stagep = stage;
	return -1;
}

/* ---- preflight: what must hold before a child starts (preflight.h) -------------------- */

/* Logs a child's problem once, when it appears or changes; "" clears it. */
static void ctl_set_problem(char *slot, size_t len, const char *name, const char *problem, bool gate)
{
	if (strcmp(slot, problem) == 0)
		return;
	if (problem[0] && gate)
		log_error("%s not started: %s; retrying every %d s", name, problem, SUP_GATE_RETRY_MS / 1000);
	else if (problem[0])
		log_error("%s: %s", name, problem);
	else if (slot[0])
		log_info("%s: cleared: %s", name, slot);
	snprintf(slot, len, "%s", problem);
}

static int ctl_squid_gate(struct sup_child *c, void *arg)
{
	struct ctl *x = arg;
	char why[512] = "";
	char who[64];
	if (x->have_active && pf_port_free(x->active.bind, x->active.port, why, sizeof(why)) < 0 &&
	    ho_port_joinable(x->active.bind, x->active.port, x->st.as_root ? x->st.squid_uid : getuid(), who,
	                     sizeof(who)) == 1) {
		/* Another FPS instance's Squid serves the port: the handover case (docs/operations.md,
		 * "Handing over to a second instance"). Ours joins it; the other one then drains. */
		log_info(
		    "squid: proxy port %s:%d is held by another FPS instance's Squid, %s: joining it (SO_REUSEPORT)",
		    x->active.bind, x->active.port, who);
		why[0] = '\0';
	}
	if (why[0]) {
		char msg[sizeof(why) + 32];
		snprintf(msg, sizeof(msg), "proxy port %s", why);
		snprintf(why, sizeof(why), "%s", msg);
	} else if (x->st.mgr_port > 0 && pf_port_free("127.0.0.1", x->st.mgr_port, why, sizeof(why)) < 0) {
		/* The controller-only cache-manager port (<state>/run/mgr.port) */
		char msg[sizeof(why) + 64];
		snprintf(msg, sizeof(msg), "cache-manager port %s (remove %s/mgr.port to have another picked)", why,
		         x->st.run_dir);
		snprintf(why, sizeof(why), "%s", msg);
	} else if (state_check_squid_access(x->st.dir, x->helper_dir, x->have_active ? x->active.hosts_file : NULL, why,
	                                    sizeof(why)) < 0) {
		/* why says it */
	}
	if (why[0]) {
		ctl_set_problem(x->squid_problem, sizeof(x->squid_problem), c->name, why, true);
		return -1;
	}
	if (x->have_active) {
		/* The disk stores' directories, again before every start: a volume that was emptied
		 * or a directory someone removed would otherwise stop Squid with a FATAL. */
		struct fps_err ce;
		err_clear(&ce);
		struct fps_config eff = x->active;
		if (x->cache_disk_suspended)
			eff.cache_disk_mb = 0;
		if (cache_prepare(&eff, x->st.cache_dir, x->st.as_root, x->st.squid_uid, x->st.squid_gid, &ce) < 0) {
			char cb[600];
			log_warn("squid: update cache: %s", err_str(&ce, cb, sizeof(cb)));
		}
		cache_layout(&eff, x->cache_layout, sizeof(x->cache_layout));
		x->cache_restart_pending = false;
	}
	if (c->gated)
		ctl_set_problem(x->squid_problem, sizeof(x->squid_problem), c->name, "", true);
	/* A pid file that names a live process other than a Squid on our config is stale:
	 * the state volume outlived a container or host restart and the number was reused.
	 * Squid would refuse to start on it ("Squid is already running") forever. */
	char pidfile[PATH_MAX + 16], conf[PATH_MAX + 16], *text = NULL;
	snprintf(pidfile, sizeof(pidfile), "%s/squid.pid", x->st.run_dir);
	snprintf(conf, sizeof(conf), "%s/squid.conf", x->st.current);
	struct fps_err pe;
	if (fsio_read(pidfile, 64, &text, NULL, &pe) == 0) {
		pid_t pid = (pid_t)strtol(text, NULL, 10);
		free(text);
		if (pid > 0 && kill(pid, 0) == 0 && proc_pidfile_owner(pidfile, conf) == 0) {
			log_warn(
			    "squid: %s names pid %d, which is not a Squid of this state directory: removing the stale "
			    "pid file",
			    pidfile, (int)pid);
			unlink(pidfile);
		}
	}
	char logpath[PATH_MAX + 16];
	snprintf(logpath, sizeof(logpath), "%s/cache.log", x->st.run_dir);
	x->squid_log_off = file_size(logpath);
	x->squid_fatal[0] = '\0';
	return 0;
}

static void ctl_squid_out_line(struct ctl *x, const char *line)
{
	const char *m = strstr(line, "FATAL");
	bool fatal = m != NULL;
	if (m == NULL)
		m = strstr(line, "ERROR");
	if (m == NULL || (x->squid_fatal[0] && (!fatal || strstr(x->squid_fatal, "FATAL"))))
		return;
	const char *bar = strstr(line, "| ");
	const char *start = bar && bar < m ? bar + 2 : line;
	size_t o = 0;
	for (const char *p = start; *p && o + 1 < sizeof(x->squid_fatal); p++)
		x->squid_fatal[o++] = (unsigned char)*p < 0x20 || *p == 0x7f ? '?' : *p;
	x->squid_fatal[o] = '\0';
}

/* Relays what Squid wrote to its stdout/stderr to ours, unchanged, and keeps its first
 * FATAL/ERROR line for ctl_squid_exited(). */
static void ctl_squid_out(struct ctl *x)
{
	char buf[4096];
	ssize_t n;
	while ((n = read(x->squid_out[0], buf, sizeof(buf))) > 0) {
		ssize_t off = 0;
		while (off < n) {
			ssize_t w = write(STDERR_FILENO, buf + off, (size_t)(n - off));
			if (w <= 0)
				break;
			off += w;
		}
		for (ssize_t i = 0; i < n; i++) {
			if (buf[i] == '\n' || x->squid_out_len + 1 >= sizeof(x->squid_out_line)) {
				x->squid_out_line[x->squid_out_len] = '\0';
				ctl_squid_out_line(x, x->squid_out_line);
				x->squid_out_len = 0;
				if (buf[i] == '\n')
					continue;
			}
			x->squid_out_line[x->squid_out_len++] = buf[i];
		}
	}
}

static int ctl_stunnel_gate(struct sup_child *c, void *arg)
{
	struct ctl *x = arg;
	char why[512] = "";
	if (x->have_active && x->active.has_tunnel &&
	    (c->listen_fd = tunnel_listen(x->active.tunnel_local_port, why, sizeof(why))) < 0) {
		char msg[sizeof(why) + 32];
		snprintf(msg, sizeof(msg), "tunnel client port %s", why);
		ctl_set_problem(x->stunnel_problem, sizeof(x->stunnel_problem), c->name, msg, true);
		return -1;
	}
	if (c->gated)
		ctl_set_problem(x->stunnel_problem, sizeof(x->stunnel_problem), c->name, "", true);
	return 0;
}

/* After an exit of Squid we did not ask for: the reason is in cache.log. */
static void ctl_squid_exited(struct ctl *x)
{
	char logpath[PATH_MAX + 16], line[400], msg[512];
	snprintf(logpath, sizeof(logpath), "%s/cache.log", x->st.run_dir);
	if (x->squid_out[0] >= 0)
		ctl_squid_out(x); /* what it said just before it died */
	pf_first_error_line(logpath, x->squid_log_off, line, sizeof(line));
	if (x->squid_fatal[0] && (strstr(x->squid_fatal, "FATAL") || line[0] == '\0'))
		snprintf(msg, sizeof(msg), "exited: %s (Squid's stderr)", x->squid_fatal);
	else if (line[0])
		snprintf(msg, sizeof(msg), "exited: %s (%s)", line, logpath);
	else
		return;
	ctl_set_problem(x->squid_problem, sizeof(x->squid_problem), "squid", msg, false);
}

/* What is wrong with the inputs now, said until it is fixed: an error clears when its
 * cause does, even when the content that comes back is identical (so no reload). */
static void ctl_input_errors(struct ctl *x, const char *cm_err, const char *sec_err)
{
	char msg[sizeof(x->last_error)];
	snprintf(msg, sizeof(msg), "%s%s%s%s", cm_err, cm_err[0] && sec_err[0] ? "; " : "",
	         sec_err[0] ? "secrets: " : "", sec_err);
	if (strcmp(msg, x->last_error) == 0)
		return;
	if (msg[0] == '\0') {
		log_info("inputs valid again (the error \"%.200s\" is gone): generation %llu in force", x->last_error,
		         x->generation);
		x->last_error[0] = '\0';
		return;
	}
	snprintf(x->last_error, sizeof(x->last_error), "%s", msg);
	log_error("%s; generation %llu in force with the last good %s", msg, x->generation,
	          cm_err[0] && sec_err[0] ? "ConfigMap and Secret"
	          : cm_err[0]             ? "ConfigMap (Secret updates still apply)"
	                                  : "Secret (agents keep the last good keys; ConfigMap updates still apply)");
}

/* The last good ConfigMap: the input copy of the generation in force (at start-up, of
 * the one `current` points at). "" when there is none, or when it is config_dir. */
static void ctl_good_configmap(struct ctl *x, const char *config_dir, char *buf, size_t len)
{
	buf[0] = '\0';
	if (x->generation == 0)
		return;
	char dir[PATH_MAX], yaml[PATH_MAX + 32];
	state_gen_dir(&x->st, x->generation, dir, sizeof(dir));
	snprintf(buf, len, "%s/input", dir);
	snprintf(yaml, sizeof(yaml), "%s/" CFG_YAML_NAME, buf);
	if (!fsio_exists(yaml) || strcmp(buf, config_dir) == 0)
		buf[0] = '\0';
}

/* Every change: the ConfigMap and the Secret are separate inputs, each with its last
 * good copy. A Secret that is missing or unreadable is an error while the last good one
 * stays in force; an update that fails is retried with the last good ConfigMap (so a
 * valid Secret update applies while the ConfigMap is broken) and then with the last
 * good Secret (so a valid ConfigMap update applies while the Secret is broken). */
static int ctl_reload_inputs(struct ctl *x, const char *config_dir, bool quiet_if_same)
{
	struct fps_err e, e2;
	err_clear(&e);
	err_clear(&e2);
	const char *stage = "load", *stage2 = "load";
	char sec_err[1024] = "", cm_err[1024] = "", buf[1600];
	const char *fresh = x->opts->secrets_dir && x->opts->secrets_dir[0] ? x->opts->secrets_dir : NULL;
	char good_sec_files[PATH_MAX + 16];
	snprintf(good_sec_files, sizeof(good_sec_files), "%s", x->good_secrets_dir);
	const char *good_sec = fresh && fsio_exists(good_sec_files) ? x->good_secrets_dir : NULL;
	const char *sec = fresh;
	if (fresh && inputs_check_secrets(fresh, &e) < 0) {
		err_str(&e, sec_err, sizeof(sec_err));
		if (good_sec == NULL) {
			ctl_fail(x, &e, "secrets", quiet_if_same);
			return -1;
		}
		sec = good_sec;
	}
	bool had_active = x->have_active;
	char good_cm[PATH_MAX];
	ctl_good_configmap(x, config_dir, good_cm, sizeof(good_cm));
	int rc = ctl_apply(x, config_dir, sec, quiet_if_same, &e, &stage);
	/* Only a stage that judges content can blame an input; a full disk is nobody's input. */
	bool content = rc == -1 && (strcmp(stage, "load") == 0 || strcmp(stage, "compile") == 0 ||
	                            strcmp(stage, "render") == 0 || strcmp(stage, "squid -k parse") == 0 ||
	                            (strcmp(stage, "tunnel") == 0 && !strstr(e.msg, strerror(ENOSPC))));
	if (content && good_cm[0]) {
		int rc2 = ctl_apply(x, good_cm, sec, quiet_if_same, &e2, &stage2);
		if (rc2 >= 0) {
			snprintf(cm_err, sizeof(cm_err), "%s: %s", stage, err_str(&e, buf, sizeof(buf)));
			if (!had_active)
				log_error("CONFIGURATION IN %s IS INVALID: starting on the last good generation (%s)",
				          config_dir, good_cm);
			rc = rc2;
		} else if (rc2 == -2) {
			return -1;
		}
	}
	if (content && rc == -1 && sec == fresh && good_sec) {
		int rc3 = ctl_apply(x, config_dir, good_sec, quiet_if_same, &e2, &stage2);
		if (rc3 >= 0) {
			snprintf(sec_err, sizeof(sec_err), "%s: %s", stage, err_str(&e, buf, sizeof(buf)));
			sec = good_sec;
			rc = rc3;
		} else if (rc3 == -2) {
			return -1;
		}
	}
	if (rc == -1) {
		ctl_fail(x, &e, stage, quiet_if_same);
		return -1;
	}
	if (rc == -2)
		return -1;
	if (sec == fresh && fresh && (rc == 0 || good_sec == NULL)) {
		/* This Secret is in force: it is the last good one now. */
		if (inputs_save_secrets(fresh, x->good_secrets_dir, &e) < 0)
			log_warn("cannot keep a copy of the Secret in force: %s", err_str(&e, buf, sizeof(buf)));
	}
	/* /status auth.error: what is wrong with apikeys.json, while it is. */
	if (strstr(sec_err, "apikeys.json"))
		snprintf(x->pub.keys_error, sizeof(x->pub.keys_error), "%s", sec_err);
	else if (sec == fresh)
		x->pub.keys_error[0] = '\0';
	ctl_input_errors(x, cm_err, sec_err);
	return 0;
}

/* ---- reload accounting ------------------------------------------------------------------ */

/* What the inputs hold now, as bytes: every file the pipeline reads from the ConfigMap and the
 * Secret, each hashed whole (or, past its size limit, by size and change time, since the
 * pipeline refuses it unread). Two reads that agree are the same change. */
static void ctl_inputs_fingerprint(const char *config_dir, const char *secrets_dir, char hex[65])
{
	static const char *const cm[] = {CFG_YAML_NAME, CFG_JSON_NAME};
	static const char *const sec[] = {CFG_KEYS_NAME, "upstream-password", "tunnel-ca.pem", "tunnel-client.pem",
	                                  "tunnel-client.key"};
	char all[8 * (PATH_MAX + 160)];
	size_t o = 0;
	for (size_t i = 0; i < 7; i++) {
		const char *dir = i < 2 ? config_dir : secrets_dir, *name = i < 2 ? cm[i] : sec[i - 2];
		char path[PATH_MAX + 64], h[65] = "-";
		struct stat sb;
		if (dir == NULL || dir[0] == '\0')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, name);
		if (stat(path, &sb) == 0 && S_ISREG(sb.st_mode) && sb.st_size <= (off_t)CFG_JSON_MAX_SIZE) {
			char *data = NULL;
			size_t len = 0;
			struct fps_err e;
			if (fsio_read(path, CFG_JSON_MAX_SIZE, &data, &len, &e) == 0)
				fsio_sha256_hex(data, len, h);
			if (data) {
				explicit_bzero(data, len);
				free(data);
			}
		} else if (stat(path, &sb) == 0) {
			snprintf(h, sizeof(h), "%llu.%lld.%lld.%ld", (unsigned long long)sb.st_ino,
			         (long long)sb.st_size, (long long)sb.st_mtim.tv_sec, (long)sb.st_mtim.tv_nsec);
		}
		int n = snprintf(all + o, sizeof(all) - o, "%s\n%s\n", path, h);
		if (n > 0 && (size_t)n < sizeof(all) - o)
			o += (size_t)n;
	}
	fsio_sha256_hex(all, o, hex);
}

/* whitelist.json's "version" as written (JSON text; "" when the file or the key is absent,
 * or the file is no JSON at all): what the backend can match against what it pushed. */
static void ctl_tried_version(const char *config_dir, char *out, size_t len)
{
	char path[PATH_MAX + 32], *text = NULL;
	size_t tlen = 0;
	struct fps_err e;
	out[0] = '\0';
	snprintf(path, sizeof(path), "%s/" CFG_JSON_NAME, config_dir);
	if (fsio_read(path, CFG_JSON_MAX_SIZE, &text, &tlen, &e) < 0)
		return;
	cJSON *root = cJSON_ParseWithLength(text, tlen); /* cJSON bounds nesting (CJSON_NESTING_LIMIT) */
	free(text);
	const cJSON *v = cJSON_IsObject(root) ? cJSON_GetObjectItemCaseSensitive(root, "version") : NULL;
	if (v && (cJSON_IsArray(v) || cJSON_IsObject(v))) {
		snprintf(out, len, "\"(%s)\"", cJSON_IsArray(v) ? "a list" : "an object");
	} else if (v) {
		char *p = cJSON_PrintUnformatted(v);
		if (p && strlen(p) < len)
			snprintf(out, len, "%s", p);
		free(p);
		if (out[0] == '\0' && cJSON_IsString(v)) { /* too long: its start, still a JSON string */
			char head[32];
			snprintf(head, sizeof(head), "%.24s...", v->valuestring);
			cJSON *h = cJSON_CreateString(head);
			p = h ? cJSON_PrintUnformatted(h) : NULL;
			if (p && strlen(p) < len)
				snprintf(out, len, "%s", p);
			free(p);
			cJSON_Delete(h);
		}
	}
	cJSON_Delete(root);
}

/* Every change of the inputs that the controller processes counts once in reloads (ok when all
 * of it is in force, failed when any part was refused) and moves last_reload, even when its
 * error reads like the last one; reading unchanged inputs again (the periodic re-check, an
 * event that changed nothing) counts nothing. A new generation always counts, also from the
 * same inputs (an update retried once the full state volume has room again). The start-up
 * fallback to the last good generation reads the state directory, not an input: not counted. */
static int ctl_reload(struct ctl *x, const char *config_dir, bool quiet_if_same)
{
	const char *sec = x->opts->secrets_dir && x->opts->secrets_dir[0] ? x->opts->secrets_dir : NULL;
	char fp[65];
	ctl_inputs_fingerprint(config_dir, sec, fp);
	unsigned long long gen0 = x->generation;
	int rc = ctl_reload_inputs(x, config_dir, quiet_if_same);
	bool input = strcmp(config_dir, x->opts->config_dir) == 0;
	if (!input || (strcmp(fp, x->acct_inputs) == 0 && x->generation == gen0))
		return rc;
	snprintf(x->acct_inputs, sizeof(x->acct_inputs), "%s", fp);
	if (x->last_error[0])
		x->reloads_failed++;
	else
		x->reloads_ok++;
	x->last_reload_unix = wall_now();
	ctl_tried_version(config_dir, x->tried_version, sizeof(x->tried_version));
	return rc;
}

/* ---- the loop ------------------------------------------------------------------------- */

static void ctl_reap(struct ctl *x, long long now)
{
	int status;
	pid_t pid;
	/* waitpid(-1): as PID 1 of a container we also reap orphans we never started. */
	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		if (sup_reap(&x->squid, pid, status, now)) {
			if (x->squid.state == SUP_BACKOFF)
				ctl_squid_exited(x);
		} else {
			sup_reap(&x->stunnel, pid, status, now);
		}
	}
}

static int ctl_signalfd(void)
{
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGCHLD);
	if (sigprocmask(SIG_BLOCK, &set, NULL) < 0)
		return -1;
	signal(SIGPIPE, SIG_IGN);
	return signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
}

static long long min_deadline(long long a, long long b)
{
	if (a == 0)
		return b;
	if (b == 0)
		return a;
	return a < b ? a : b;
}

/* Squid's access.log grows by megabytes a second under load, on a size-limited
 * volume: past LOG_ROTATE_BYTES keep one previous file and have Squid reopen. */
static void ctl_rotate_logs(struct ctl *x)
{
	static const char *const names[] = {"access.log", "cache.log", "detail.log"};
	static long long limit;
	if (limit == 0) {
		const char *env = getenv("FPS_LOG_ROTATE_BYTES"); /* tests use a small limit */
		limit = env && atoll(env) > 0 ? atoll(env) : LOG_ROTATE_BYTES;
	}
	bool rotated = false;
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		char path[PATH_MAX + 32], old[PATH_MAX + 32];
		snprintf(path, sizeof(path), "%s/%s", x->st.run_dir, names[i]);
		if (file_size(path) < limit)
			continue;
		snprintf(old, sizeof(old), "%s.1", path);
		if (rename(path, old) == 0)
			rotated = true;
	}
	pid_t pid = ctl_squid_pid(x);
	if (rotated && pid) {
		log_info("squid logs over %lld bytes: rotated, squid pid %d reopens them", limit, (int)pid);
		ctl_signal_squid(x, pid, SUP_EV_REOPEN);
	}
}

/* A Squid that runs but has answered no HTTP for hang_ms (stopped, wedged, deadlocked)
 * serves nobody: kill it once and let the supervisor restart it like a crash. Sidecar
 * mode only reports it (the other container's liveness probe owns that Squid). */
static void ctl_check_hung(struct ctl *x, long long now)
{
	if (x->opts->mode != CTL_MODE_SUPERVISE || x->squid.state != SUP_RUNNING || x->squid.pid == x->hung_pid ||
	    x->squid.pid != x->health_pid)
		return;
	struct health_state h;
	health_get(&h);
	if (h.answering)
		return;
	long long from = h.last_ok_ms > h.since_ms ? h.last_ok_ms : h.since_ms;
	if (x->squid.started_ms > from)
		from = x->squid.started_ms;
	if (now - from < x->hang_ms)
		return;
	log_error("squid: pid %d answered no HTTP for %lld ms (bound %lld ms): %s", (int)x->squid.pid, now - from,
	          x->hang_ms, h.error[0] ? h.error : "no answer");
	x->hung_pid = x->squid.pid;
	sup_event(&x->squid, SUP_EV_HUNG, now);
}

/* Sidecar mode: Squid belongs to another container. Notice when its pid changes
 * (it was restarted) and tell it about a generation it has not loaded yet. */
static void ctl_watch_sidecar(struct ctl *x)
{
	pid_t pid = ctl_squid_pid(x);
	if (pid == x->sidecar_pid)
		return;
	if (pid == 0) {
		log_warn("sidecar squid pid %d is gone", (int)x->sidecar_pid);
	} else {
		if (x->sidecar_pid != 0) {
			x->sidecar_restarts++;
			log_warn("sidecar squid restarted: pid %d -> %d", (int)x->sidecar_pid, (int)pid);
		} else {
			log_info("sidecar squid found: pid %d", (int)pid);
		}
		/* A (re)started Squid read `current` when it started. */
		x->squid_gen = x->generation;
		x->sidecar_started = wall_now();
	}
	x->sidecar_pid = pid;
}

static void ctl_admin_addr(const struct ctl *x, char *addr, size_t len, int *port)
{
	snprintf(addr, len, "%s", x->active.admin_bind);
	*port = x->active.admin_port;
	if (x->opts->admin == NULL)
		return;
	/* --admin ADDR:PORT; an IPv6 address is written [addr]:port */
	const char *a = x->opts->admin, *colon = strrchr(a, ':');
	if (colon == NULL) {
		*port = atoi(a);
		return;
	}
	size_t n = (size_t)(colon - a);
	if (n > 1 && a[0] == '[' && a[n - 1] == ']') {
		a++;
		n -= 2;
	}
	snprintf(addr, len, "%.*s", (int)n, a);
	*port = atoi(colon + 1);
}

/* A controller that was killed (kill -9, systemd KillMode=process) leaves its Squid and
 * stunnel running; their pid files in our state directory say so. A second copy would
 * die on the pid file (Squid) or the port (stunnel) and back off forever, so the orphan
 * is replaced, deliberately: stopped (Squid with SIGINT, which skips shutdown_lifetime)
 * and then ours starts on the current generation, supervised like any child. The gap is
 * one Squid start (docs/operations.md, "Faults"). Only a process whose command line
 * names our own config file in this state directory is touched. */
static void ctl_replace_orphan(const char *name, const char *pidfile, const char *conf, int sig)
{
	pid_t pid = proc_pidfile_owner(pidfile, conf);
	if (pid == 0)
		return;
	long long t0 = sup_now_ms();
	log_warn("%s: pid %d from %s is still running (a previous controller's); replacing it", name, (int)pid,
	         pidfile);
	if (proc_end(pid, sig, 10000) < 0)
		log_error("%s: orphan pid %d does not exit even after SIGKILL", name, (int)pid);
	else
		log_info("%s: orphan pid %d gone after %lld ms", name, (int)pid, sup_now_ms() - t0);
	/* Killed, it left its pid file; unreaped (a zombie of an init that does not reap), it
	 * would still look alive to the pid-file check of the Squid we start. */
	if (proc_pidfile_owner(pidfile, conf) == 0)
		unlink(pidfile);
}

/* Squid 5.7 always waits shutdown_lifetime + 1 s after SIGTERM (main.cc doShutdown
 * schedules its end with eventAdd, whether or not a client is left): agents could not
 * connect for 3 s of every restart. Its clients are closed as soon as they are idle, so
 * once none is connected to the proxy port nothing is in flight: a second SIGTERM makes
 * Squid finish after 1 s ("shutdown as soon as possible"). A client still downloading
 * keeps the full shutdown_lifetime. Returns the next time to look, 0 when done. */
static long long ctl_hurry_squid(struct ctl *x, long long now)
{
	if (x->squid.state != SUP_STOPPING || x->squid.pid <= 0)
		return 0;
	/* This Squid's clients only: a second instance may serve the same port. */
	int left = ho_clients(x->squid.pid, x->active.port);
	if (left > 0)
		return now + DRAIN_POLL_MS;
	log_info("squid: no client connected to port %d any more: finishing now, not after shutdown_lifetime",
	         x->active.port);
	sup_event(&x->squid, SUP_EV_HURRY, now);
	return 0;
}

/* SIGTERM: the drain (docs/operations.md, "Stopping"). Squid 5.7's own shutdown answers
 * requests it has not forwarded yet with 503 (FwdState.cc, ERR_SHUTTING_DOWN) and closes
 * idle connections at once, under a request that may be on its way. So Squid is not
 * signalled first: its listening sockets are shut down (handover.c), after which Squid
 * answers everything still on its connections normally, with "Connection: close", and
 * closes each one after its answer. Once none is left (or after DRAIN_MAX_MS: idle agents
 * and CONNECT tunnels), Squid gets SIGTERM. Returns the next time to look, 0 when Squid
 * has been told to stop. */
/* Step 2 of leaving the port (handover.h): Squid re-reads a squid.conf without the agents'
 * ports. The active generation's squid.conf is swapped for the drain text only for the
 * reconfigure: it is put back once Squid has read it, so `current` stays what the next
 * start of this state directory expects. */
static int ctl_drain_reconfigure(struct ctl *x, struct fps_err *e)
{
	char conf[PATH_MAX + 16], keep[PATH_MAX + 32], logpath[PATH_MAX + 16], *text = NULL;
	snprintf(conf, sizeof(conf), "%s/squid.conf", x->st.current);
	snprintf(keep, sizeof(keep), "%s/squid.conf.serving", x->st.current);
	snprintf(logpath, sizeof(logpath), "%s/cache.log", x->st.run_dir);
	if (fsio_read(conf, 8u << 20, &text, NULL, e) < 0)
		return -1;
	char *drain = ho_drain_conf(text);
	free(text);
	if (drain == NULL)
		return err_set(e, conf, 0, 0, "out of memory");
	struct stat sb;
	unlink(keep);
	if (stat(conf, &sb) < 0 || link(conf, keep) < 0) {
		free(drain);
		return err_set(e, keep, 0, 0, "%s", strerror(errno));
	}
	int rc = fsio_write_atomic(conf, drain, strlen(drain), sb.st_mode & 07777, sb.st_gid, e);
	free(drain);
	if (rc == 0) {
		/* The reconfigure restarts the helpers: first let every lookup Squid has asked be
		 * answered, with no new request coming in (ho_pause_input), at most DRAIN_QUIET_MS. */
		struct ho_pause pz;
		int paused = ho_pause_input(x->squid.pid, x->active.port, &pz);
		long long t0 = sup_now_ms(), deadline = t0 + DRAIN_QUIET_MS;
		long left = -1;
		int quiet = 0;
		while (sup_now_ms() < deadline && quiet < 2) {
			char err[128], *page = metrics_squid_fetch("127.0.0.1", x->st.mgr_port, "external_acl", 500,
			                                           err, sizeof(err));
			left = page ? ho_acl_in_flight(page) : -1;
			free(page);
			if (x->squid_out[0] >= 0)
				ctl_squid_out(x); /* the loop waits: keep Squid's stderr flowing */
			quiet = left <= 0 ? quiet + 1 : 0;
			if (quiet < 2)
				nanosleep(&(struct timespec){0, 10 * 1000000}, NULL);
		}
		long long t1 = sup_now_ms();
		off_t off = file_size(logpath);
		ctl_signal_squid(x, x->squid.pid, SUP_EV_RELOAD);
		rc = ctl_confirm_squid(x, off, e);
		ho_resume_input(&pz);
		log_info("squid: %d agent connections paused for %lld ms (helper lookups in flight: %ld after %lld ms, "
		         "then the drain configuration's reconfigure)",
		         paused, sup_now_ms() - t0, left, t1 - t0);
	}
	if (rename(keep, conf) < 0 && rc == 0)
		rc = err_set(e, conf, 0, 0, "cannot put the serving squid.conf back: %s", strerror(errno));
	return rc;
}

static long long ctl_drain_begin(struct ctl *x, long long now, long long *until)
{
	if (x->opts->mode != CTL_MODE_SUPERVISE || x->squid.state != SUP_RUNNING || !x->have_active)
		return 0;
	char why[256];
	long long t0 = sup_now_ms();
	int n = ho_stop_accepting(x->squid.pid, x->active.port, why, sizeof(why));
	if (n < 0) {
		log_warn("squid: %s: stopping it with SIGTERM alone (requests it has not forwarded get 503)", why);
		return 0;
	}
	int mig = ho_migrate_req();
	long long t1 = sup_now_ms();
	struct fps_err e;
	err_clear(&e);
	if (ctl_drain_reconfigure(x, &e) < 0) {
		char buf[1024];
		log_warn("squid: drain configuration: %s: its keep-alive connections stay open until SIGTERM",
		         err_str(&e, buf, sizeof(buf)));
	}
	log_info("squid: pid %d no longer accepts on port %d (%d listening sockets shut down in %lld ms, "
	         "net.ipv4.tcp_migrate_req=%d; drain configuration read in %lld ms); draining %d connections, "
	         "each closed after its answer",
	         (int)x->squid.pid, x->active.port, n, t1 - t0, mig, sup_now_ms() - t1,
	         ho_clients(x->squid.pid, x->active.port));
	*until = sup_now_ms() + DRAIN_MAX_MS; /* from the end of the reconfigure */
	return now + DRAIN_POLL_MS;
}

static long long ctl_drain_step(struct ctl *x, long long now, long long until)
{
	if (x->squid.state != SUP_RUNNING)
		return 0;
	int left = ho_clients(x->squid.pid, x->active.port);
	if (left > 0 && now < until)
		return now + DRAIN_POLL_MS;
	if (left == 0) {
		log_info("squid: no client connected to port %d any more: drained; stopping pid %d now", x->active.port,
		         (int)x->squid.pid);
		sup_event(&x->squid, SUP_EV_STOP, now);
		sup_event(&x->squid, SUP_EV_HURRY, now); /* nothing in flight: no shutdown_lifetime */
		return 0;
	}
	log_info("squid: %d agent connections still open after %d ms (idle keep-alive or tunnels); stopping pid %d",
	         left, DRAIN_MAX_MS, (int)x->squid.pid);
	sup_event(&x->squid, SUP_EV_STOP, now);
	return -1; /* the caller hurries it once its clients are gone */
}

/* A controller that was killed (kill -9, a crash, systemd KillMode=process) leaves its Squid
 * and stunnel serving. The next controller on the same state directory adopts them instead
 * of replacing them (agents would meet a Squid start): the same pid-file and command-line
 * check as ctl_replace_orphan decides that a process is ours, then a pidfd watches it (it is
 * not our child: no SIGCHLD, no exit status) and every signal goes through it. Returns
 * whether it adopted; when pidfd_open fails the orphan is replaced as before. */
static bool ctl_adopt_orphan(struct sup_child *c, const char *pidfile, const char *conf, int replace_sig)
{
	pid_t pid = proc_pidfile_owner(pidfile, conf);
	if (pid == 0)
		return false;
	int pfd = pidfd_open(pid, 0);
	if (pfd < 0) {
		log_warn_errno("%s: cannot watch pid %d from %s (pidfd_open)", c->name, (int)pid, pidfile);
		ctl_replace_orphan(c->name, pidfile, conf, replace_sig);
		return false;
	}
	log_warn("%s: pid %d from %s is still running (a previous controller's): adopting it", c->name, (int)pid,
	         pidfile);
	sup_adopt(c, pid, pfd, sup_now_ms());
	return true;
}

/* Whether generation gen's squid.conf is byte for byte the active one: a start always
 * activates a new generation, but an adopted Squid needs a reconfigure (which closes and
 * reopens its ports) only when what it reads changed. Its paths name `current`, so equal
 * texts mean the same configuration. */
static bool ctl_same_squid_conf(struct ctl *x, unsigned long long gen)
{
	char old[PATH_MAX + 32], cur[PATH_MAX + 16], *a = NULL, *b = NULL;
	size_t la = 0, lb = 0;
	struct fps_err e;
	state_gen_dir(&x->st, gen, old, sizeof(old));
	strncat(old, "/squid.conf", sizeof(old) - strlen(old) - 1);
	snprintf(cur, sizeof(cur), "%s/squid.conf", x->st.current);
	bool same = gen > 0 && fsio_read(old, 8u << 20, &a, &la, &e) == 0 &&
	            fsio_read(cur, 8u << 20, &b, &lb, &e) == 0 && la == lb && memcmp(a, b, la) == 0;
	free(a);
	free(b);
	return same;
}

int ctl_run(const struct ctl_opts *opts, const struct ctl_paths *paths)
{
	static struct ctl x; /* large (the status snapshot): not on the stack */
	memset(&x, 0, sizeof(x));
	x.opts = opts;
	x.paths = paths;
	struct fps_err e;
	err_clear(&e);
	char buf[1600];
	snprintf(x.pub.version, sizeof(x.pub.version), "%s", FPS_VERSION);
	x.pub.start_unix = wall_now();
	pthread_mutex_init(&x.probe.mu, NULL);
	pthread_cond_init(&x.probe.cv, NULL);

	if (state_open(&x.st, opts->state_dir, &e) < 0) {
		log_error("%s", err_str(&e, buf, sizeof(buf)));
		return 3;
	}
	if (state_install_helpers(&x.st, paths->bin_dir, x.helper_dir, sizeof(x.helper_dir), &e) < 0) {
		log_error("%s", err_str(&e, buf, sizeof(buf)));
		return 3;
	}
	char genpath[PATH_MAX + 32];
	snprintf(genpath, sizeof(genpath), "%s/" GENWORD_NAME, x.st.run_dir);
	if (genword_create(&x.acl_gen, genpath, state_current_gen(&x.st), x.st.as_root ? x.st.squid_gid : (gid_t)-1,
	                   &e) < 0)
		log_warn("%s: fps-acl processes switch generations one by one", err_str(&e, buf, sizeof(buf)));
	snprintf(x.tunnel_dir, sizeof(x.tunnel_dir), "%s/tunnel", x.st.dir);
	snprintf(x.good_secrets_dir, sizeof(x.good_secrets_dir), "%s/last-good-secrets", x.st.dir);
	if (denied_collector_init(&x.denied, x.st.denied_dir, wall_now()) == 0)
		x.have_denied = true;
	else
		log_warn("denied report: out of memory: /denied stays empty");
	if (!reports_off() && (x.reports = reports_new(x.st.run_dir, x.st.denied_dir, wall_now())) == NULL)
		log_warn("reports: out of memory: /failures and /traffic stay empty");
	x.tpaths = (struct tunnel_paths){
	    .templates_dir = paths->stunnel_templates_dir, .dir = x.tunnel_dir, .secrets_dir = opts->secrets_dir};
	x.probe.paths = x.tpaths;
	char *targv[4];
	tunnel_argv(&x.tpaths, targv);
	sup_init(&x.stunnel, "stunnel", targv, 5000);
	x.stunnel.gate = ctl_stunnel_gate;
	x.stunnel.gate_arg = &x;

	int sfd = ctl_signalfd();
	if (sfd < 0) {
		log_error_errno("signalfd");
		return 3;
	}
	/* After the signal mask: threads inherit it. */
	const char *hang = getenv("FPS_SQUID_HANG_MS"); /* tests use a short bound */
	x.hang_ms = hang && atoll(hang) > 0 ? atoll(hang) : SQUID_HANG_MS;
	x.health_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	x.probe.notify_fd = x.health_fd;
	if (x.health_fd < 0 || health_start(x.health_fd) < 0) {
		log_error_errno("health probe");
		return 3;
	}
	x.generation = state_current_gen(&x.st);
	unsigned long long gen_at_start = x.generation; /* what an orphaned Squid last read */

	if (ctl_reload(&x, opts->config_dir, false) < 0) {
		unsigned long long last = state_current_gen(&x.st);
		char input[PATH_MAX + 32];
		state_gen_dir(&x.st, last, input, sizeof(input));
		strncat(input, "/input", sizeof(input) - strlen(input) - 1);
		if (last == 0 || !fsio_exists(input)) {
			log_error("no valid configuration in %s and no last good generation in %s: exiting",
			          opts->config_dir, opts->state_dir);
			fprintf(stderr, "fps-controller: %s\n", x.last_error);
			return 1;
		}
		char saved_error[sizeof(x.last_error)];
		snprintf(saved_error, sizeof(saved_error), "%s", x.last_error);
		log_error("CONFIGURATION IN %s IS INVALID: starting on the last good generation %llu (%s)",
		          opts->config_dir, last, input);
		if (ctl_reload(&x, input, false) < 0) {
			log_error("the last good generation %llu does not load either: exiting", last);
			return 1;
		}
		/* /status must keep saying that the ConfigMap is broken (counted by the first try). */
		snprintf(x.last_error, sizeof(x.last_error), "%s", saved_error);
	}

	char admin_addr[64];
	int admin_port;
	ctl_admin_addr(&x, admin_addr, sizeof(admin_addr), &admin_port);
	if (adminaddr_start(x.st.dir, admin_addr, sizeof(admin_addr), &admin_port, opts->admin_spare, &e) < 0) {
		log_error("admin endpoints: %s", err_str(&e, buf, sizeof(buf)));
		return 3;
	}
	admin_heartbeat();

	char *argv[8];
	x.squid_workers = cfg_workers(&x.active);
	if (x.active.workers == 0)
		log_info("proxy.workers auto: %d (CPUs this process may use: affinity %d, cgroup quota %d, 0 = none)",
		         x.squid_workers, cpus_affinity(), cpus_quota("/proc/self/cgroup", "/sys/fs/cgroup"));
	cache_layout(&x.active, x.cache_layout, sizeof(x.cache_layout));
	ctl_squid_argv(&x, x.squid_workers, argv);
	sup_init(&x.squid, "squid", argv, 10000);
	x.squid.gate = ctl_squid_gate;
	x.squid.gate_arg = &x;
	x.squid_out[0] = x.squid_out[1] = -1;
	if (pipe2(x.squid_out, O_CLOEXEC) == 0) {
		fcntl(x.squid_out[0], F_SETFL, fcntl(x.squid_out[0], F_GETFL) | O_NONBLOCK);
		/* Room for a burst of helper and Squid messages while the loop is busy in a
		 * reload: a full pipe would block the writer (Squid itself). */
		fcntl(x.squid_out[0], F_SETPIPE_SZ, 1 << 20);
		x.squid.out_fd = x.squid_out[1];
	} else {
		log_warn_errno("pipe for Squid's stderr (it goes to ours directly)");
		x.squid_out[0] = x.squid_out[1] = -1;
	}
	if (opts->mode == CTL_MODE_SUPERVISE) {
		char pidfile[PATH_MAX + 16], conf[PATH_MAX + 16];
		snprintf(pidfile, sizeof(pidfile), "%s/squid.pid", x.st.run_dir);
		snprintf(conf, sizeof(conf), "%s/squid.conf", x.st.current);
		if (ctl_adopt_orphan(&x.squid, pidfile, conf, SIGINT)) {
			char logpath[PATH_MAX + 16];
			snprintf(logpath, sizeof(logpath), "%s/cache.log", x.st.run_dir);
			x.squid_log_off = file_size(logpath);
			/* It runs what `current` held when it last read it: if this start activated a
			 * newer generation, Squid reads it now (a reconfigure, as for any edit). */
			if (x.generation != gen_at_start && !ctl_same_squid_conf(&x, gen_at_start)) {
				log_info("squid: adopted pid %d read generation %llu; reconfiguring it for %llu",
				         (int)x.squid.pid, gen_at_start, x.generation);
				sup_event(&x.squid, SUP_EV_RELOAD, sup_now_ms());
			}
		}
		snprintf(pidfile, sizeof(pidfile), "%s/stunnel.pid", x.tunnel_dir);
		snprintf(conf, sizeof(conf), "%s/stunnel.conf", x.tunnel_dir);
		if (ctl_adopt_orphan(&x.stunnel, pidfile, conf, SIGTERM) && !(x.have_active && x.active.has_tunnel))
			sup_event(&x.stunnel, SUP_EV_STOP, sup_now_ms()); /* the tunnel went away meanwhile */
		if (x.squid.state == SUP_STOPPED)
			sup_event(&x.squid, SUP_EV_START, sup_now_ms());
		x.squid_gen = x.generation;
	}

	struct watch w;
	const char *dirs[2] = {opts->config_dir, opts->secrets_dir};
	if (watch_open(&w, dirs, opts->secrets_dir && opts->secrets_dir[0] ? 2 : 1, &e) < 0) {
		log_error("%s", err_str(&e, buf, sizeof(buf)));
		return 3;
	}
	int ep = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event ev = {.events = EPOLLIN, .data.fd = sfd};
	epoll_ctl(ep, EPOLL_CTL_ADD, sfd, &ev);
	ev.data.fd = w.fd;
	epoll_ctl(ep, EPOLL_CTL_ADD, w.fd, &ev);
	ev.data.fd = x.health_fd;
	epoll_ctl(ep, EPOLL_CTL_ADD, x.health_fd, &ev);
	if (x.squid_out[0] >= 0) {
		ev.data.fd = x.squid_out[0];
		epoll_ctl(ep, EPOLL_CTL_ADD, x.squid_out[0], &ev);
	}
	/* Adopted children: their pidfd becomes readable when they end. */
	struct sup_child *adopted[2] = {&x.squid, &x.stunnel};
	for (int i = 0; i < 2; i++) {
		if (adopted[i]->adopted) {
			ev.data.fd = adopted[i]->pidfd;
			epoll_ctl(ep, EPOLL_CTL_ADD, adopted[i]->pidfd, &ev);
		}
	}

	log_info("running (%s mode): config %s, secrets %s, state %s, generation %llu, admin %s:%d",
	         opts->mode == CTL_MODE_SUPERVISE ? "supervise" : "sidecar", opts->config_dir,
	         opts->secrets_dir ? opts->secrets_dir : "-", opts->state_dir, x.generation, admin_addr, admin_port);

	long long burst_start = 0, debounce_at = 0, recheck_at = sup_now_ms() + RECHECK_MS;
	long long publish_at = 0;
	bool stopping = false;
	long long drain_at = 0;   /* next look for Squid's remaining clients while it stops */
	long long handoff_at = 0; /* SIGTERM: next look at a draining Squid that still runs (ctl_drain_step) */
	long long drain_until = 0;
	int exit_code = 0;
	for (;;) {
		long long now = sup_now_ms();
		admin_heartbeat();
		if (stopping && x.squid.state == SUP_STOPPED && x.stunnel.state == SUP_STOPPED)
			break;
		/* stunnel follows the active configuration: started once a tunnel exists. */
		if (!stopping && x.have_active && x.active.has_tunnel && x.stunnel.state == SUP_STOPPED) {
			sup_event(&x.stunnel, SUP_EV_START, now);
			x.stunnel_stale = false; /* a new stunnel reads the current files */
		}
		if (opts->mode == CTL_MODE_SIDECAR)
			ctl_watch_sidecar(&x);
		if (now >= publish_at) {
			ctl_rotate_logs(&x);
			ctl_publish(&x);
			publish_at = now + PUBLISH_MS;
			if (watch_rearm(&w))
				x.retry_reload = true; /* a directory came back: read it */
			if (x.retry_reload && !stopping && debounce_at == 0)
				debounce_at = now;
			x.retry_reload = false;
		}
		if (handoff_at && now >= handoff_at) {
			handoff_at = ctl_drain_step(&x, now, drain_until);
			if (handoff_at < 0) {
				handoff_at = 0;
				drain_at = now + DRAIN_POLL_MS;
			}
		}
		if (drain_at && now >= drain_at)
			drain_at = ctl_hurry_squid(&x, now);
		/* stunnel stops after Squid: requests still answered on the tunnel route need it */
		if (stopping && x.squid.state == SUP_STOPPED && x.stunnel.state == SUP_RUNNING) {
			tunnel_stop_accepting(x.have_active ? &x.active : NULL, x.stunnel.pid);
			sup_event(&x.stunnel, SUP_EV_STOP, sup_now_ms());
		}
		long long next = min_deadline(min_deadline(debounce_at, recheck_at), sup_deadline(&x.squid));
		next = min_deadline(min_deadline(next, drain_at), handoff_at);
		next = min_deadline(min_deadline(next, sup_deadline(&x.stunnel)), publish_at);
		int timeout = next ? (int)(next > now ? next - now : 0) : -1;
		struct epoll_event evs[4];
		int n = epoll_wait(ep, evs, 4, timeout);
		if (n < 0 && errno != EINTR) {
			log_error_errno("epoll_wait");
			exit_code = 3;
			break;
		}
		now = sup_now_ms();
		for (int i = 0; i < n; i++) {
			if (evs[i].data.fd == sfd) {
				struct signalfd_siginfo si;
				while (read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
					if (si.ssi_signo == SIGCHLD) {
						ctl_reap(&x, now);
						publish_at = now;
					} else if (si.ssi_signo == SIGHUP) {
						log_info("SIGHUP: rereading %s", opts->config_dir);
						debounce_at = now;
					} else if (!stopping) {
						log_info("signal %d: shutting down", (int)si.ssi_signo);
						stopping = true;
						handoff_at = ctl_drain_begin(&x, now, &drain_until);
						if (handoff_at == 0) {
							sup_event(&x.squid, SUP_EV_STOP, now);
							if (x.squid.state == SUP_STOPPING && x.have_active)
								drain_at = now + DRAIN_POLL_MS;
						}
						if (x.squid.state != SUP_RUNNING && x.squid.state != SUP_STOPPING)
							sup_event(&x.stunnel, SUP_EV_STOP, now);
					}
				}
			} else if (x.squid.adopted && evs[i].data.fd == x.squid.pidfd) {
				sup_adopted_exit(&x.squid, now);
				if (x.squid.state == SUP_BACKOFF)
					ctl_squid_exited(&x);
				publish_at = now;
			} else if (x.stunnel.adopted && evs[i].data.fd == x.stunnel.pidfd) {
				sup_adopted_exit(&x.stunnel, now);
				publish_at = now;
			} else if (evs[i].data.fd == x.squid_out[0]) {
				ctl_squid_out(&x);
			} else if (evs[i].data.fd == x.health_fd) {
				uint64_t flips;
				if (read(x.health_fd, &flips, sizeof(flips)) > 0)
					publish_at = now; /* readiness follows Squid's answer at once */
			} else if (evs[i].data.fd == w.fd && watch_drain(&w) && !stopping) {
				if (burst_start == 0)
					burst_start = now;
				debounce_at = now + DEBOUNCE_QUIET_MS;
				if (debounce_at > burst_start + DEBOUNCE_MAX_MS)
					debounce_at = burst_start + DEBOUNCE_MAX_MS;
			}
		}
		sup_tick(&x.squid, now);
		sup_tick(&x.stunnel, now);
		/* A Squid that died while draining or stopping is not started again. */
		if (stopping && x.squid.state == SUP_BACKOFF)
			sup_event(&x.squid, SUP_EV_STOP, now);
		if (stopping && x.stunnel.state == SUP_BACKOFF)
			sup_event(&x.stunnel, SUP_EV_STOP, now);
		if (!stopping)
			ctl_check_hung(&x, now);
		if (x.squid.state == SUP_RUNNING && x.squid.started_ms == now)
			x.squid_gen = x.generation; /* a restarted Squid reads `current` */
		if (!stopping && debounce_at && now >= debounce_at) {
			debounce_at = 0;
			burst_start = 0;
			ctl_reload(&x, opts->config_dir, false);
			recheck_at = sup_now_ms() + RECHECK_MS;
			publish_at = 0;
		}
		if (!stopping && now >= recheck_at) {
			ctl_reload(&x, opts->config_dir, true);
			recheck_at = sup_now_ms() + RECHECK_MS;
		}
	}
	log_info("stopped (generation %llu)", x.generation);
	admin_stop();
	health_stop();
	close(x.health_fd);
	probe_stop(&x.probe);
	watch_close(&w);
	close(ep);
	close(sfd);
	if (x.squid_out[0] >= 0) {
		ctl_squid_out(&x);
		close(x.squid_out[0]);
		close(x.squid_out[1]);
	}
	sup_free(&x.squid);
	sup_free(&x.stunnel);
	if (x.have_active)
		cfg_free(&x.active);
	if (x.have_denied)
		denied_collector_free(&x.denied);
	genword_close(&x.acl_gen);
	reports_free(x.reports);
	return exit_code;
}
