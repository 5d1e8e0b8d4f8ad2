/*
 * ctl_reload: the reload pipeline. Every change goes through ctl_reload(): the new generation
 * is built and proven beside the active one and swapped in only when complete (stages build,
 * prove, activate, Squid, commit); any failure leaves the active generation serving and is
 * recorded with its stage, file, line and entry. The ConfigMap and the Secret are separate
 * inputs, each with its last good copy; every processed change counts once in `reloads`.
 */
#include "ctl_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "cache.h"
#include "fsio.h"
#include "inputs.h"
#include "log.h"
#include "squid.h"

/* Free space on the state volume below which the disk store is left out, and above which it
 * comes back (inside the reserve cache_check_room keeps beside the store). */
#define CACHE_SUSPEND_BYTES (32ULL << 20)
#define CACHE_RESUME_BYTES  (48ULL << 20)

/* A candidate generation on its way through the stages of ctl_apply(). */
struct ctl_cand {
	struct ctl_gen g;
	bool disk_off; /* the disk store is left out: the state volume is nearly full */
	unsigned long long gen;
	char gen_dir[PATH_MAX];
	struct render_ctx rc;
	struct render_out check; /* squid.conf as proven: naming gen_dir instead of `current` */
	bool written;            /* gen_dir exists: removed when the update fails before activation */
	char squid_hash[65];
	bool conf_changed; /* something Squid reads changed: prove it, reconfigure Squid */
};

static void ctl_fail(struct ctl *x, const struct fps_err *e, enum ctl_stage stage, bool quiet_if_same)
{
	char buf[1600], msg[sizeof(x->last_error)];
	const char *name = ctl_stage_name(stage);
	err_str(e, buf, sizeof(buf));
	snprintf(msg, sizeof(msg), "%s: %s", name, buf);
	/* The periodic re-check must not repeat the same failure every few seconds. */
	if (quiet_if_same && strcmp(msg, x->last_error) == 0)
		return;
	snprintf(x->last_error, sizeof(x->last_error), "%s: %s", name, buf);
	if (e->sys == ENOSPC) {
		unsigned long long total = 0;
		x->state_enospc = true;
		if (state_volume(&x->st, &x->enospc_free, &total) < 0)
			x->enospc_free = 0;
	}
	log_error("reload failed (%s), generation %llu stays active: %s", name, x->generation, buf);
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

bool ctl_cache_disk_suspend(struct ctl *x, const struct fps_config *c)
{
	if (!c->has_cache || c->cache_disk_mb == 0)
		return false;
	unsigned long long free_b = 0, total_b = 0;
	if (state_volume(&x->st, &free_b, &total_b) < 0)
		return x->cache_disk_suspended;
	return free_b < (x->cache_disk_suspended ? CACHE_RESUME_BYTES : CACHE_SUSPEND_BYTES);
}

/* ---- the stages ------------------------------------------------------------------------- */

/* Build: load the inputs (unchanged ones end the update here: returns 1), compile, judge the
 * update cache's footing (disk_mb must fit the state volume where its size is visible and
 * memory_mb the container's memory limit), render, make the disk stores' directories for
 * Squid's user (cache.h: all `squid -z` does for aufs), write the generation's directory. */
static int ctl_stage_build(struct ctl *x, struct ctl_cand *k, const char *config_dir, const char *secrets_dir,
                           bool quiet_if_same, struct fps_err *e)
{
	struct ctl_gen *g = &k->g;
	if (ctl_gen_load(g, config_dir, secrets_dir, e) < 0)
		return -1;
	/* The disk store is left out while the state volume is (nearly) full: Squid 5.7 asserts
	 * on a failed write to an aufs store ("assertion failed: fs_io.cc"), and would again at
	 * every restart. It comes back when space does. */
	k->disk_off = ctl_cache_disk_suspend(x, &g->c);
	if (x->have_active && strcmp(g->c.input_hash, x->active_hash) == 0 && k->disk_off == x->cache_disk_suspended) {
		if (!quiet_if_same)
			log_debug("inputs unchanged (hash %.12s): nothing to do", g->c.input_hash);
		return 1;
	}
	if (ctl_gen_compile(g, e) < 0)
		return -1;
	ctl_report_entries(&g->cp, config_dir);
	if (k->disk_off) {
		cache_release_ballast(x->st.cache_dir); /* leaving the store out needs room for the new generation */
		g->eff.cache_disk_mb = 0;               /* what Squid is given: less the suspended disk store */
	}
	struct ctl_room room = {0};
	if (g->eff.has_cache)
		ctl_room_of(x->st.dir, &room);
	unsigned long long gen = state_max_gen(&x->st);
	k->gen = (gen > x->generation ? gen : x->generation) + 1;
	state_gen_dir(&x->st, k->gen, k->gen_dir, sizeof(k->gen_dir));
	k->rc = (struct render_ctx){.templates_dir = x->paths->templates_dir,
	                            .run_dir = x->st.run_dir,
	                            .cache_dir = x->st.cache_dir,
	                            .gen_dir = x->st.current,
	                            .secrets_dir = x->st.secrets_dir,
	                            .bin_dir = x->helper_dir,
	                            .generation = k->gen,
	                            .max_fds = ctl_max_fds(),
	                            .mgr_port = x->st.mgr_port,
	                            .no_denied_report = ctl_no_denied_report(),
	                            .no_reports = reports_off()};
	if (ctl_gen_render(g, config_dir, &room, &k->rc, e) < 0)
		return -1;
	g->stage = CTL_STAGE_CACHE;
	if (cache_prepare(&g->eff, x->st.cache_dir, x->st.as_root, x->st.squid_uid, x->st.squid_gid, e) < 0)
		return -1;
	g->stage = CTL_STAGE_WRITE;
	k->written = true; /* a partly written directory is removed too */
	if (state_write_gen(&x->st, k->gen, &g->out, &g->c, e) < 0)
		return -1;
	squid_files_hash(&g->out, k->squid_hash);
	k->conf_changed = !x->have_active || strcmp(k->squid_hash, x->squid_hash) != 0;
	return 0;
}

/* Prove: when something Squid reads changed, `squid -k parse` of the candidate as Squid will
 * read it, but pointing at this generation's directory instead of `current`. */
static int ctl_stage_prove(struct ctl *x, struct ctl_cand *k, struct fps_err *e)
{
	struct ctl_gen *g = &k->g;
	if (!k->conf_changed)
		return 0;
	g->stage = CTL_STAGE_RENDER;
	k->rc.gen_dir = k->gen_dir;
	if (render_generation(&g->eff, &g->cp, &k->rc, &k->check, e) < 0)
		return -1;
	g->stage = CTL_STAGE_WRITE;
	if (state_write_file(&x->st, k->gen, "check.conf", k->check.files[0].data, k->check.files[0].len, e) < 0)
		return -1;
	char check_path[PATH_MAX + 16], warnings[4096];
	snprintf(check_path, sizeof(check_path), "%s/check.conf", k->gen_dir);
	g->stage = CTL_STAGE_PARSE;
	if (squid_parse_check(x->paths->squid_bin, check_path, warnings, sizeof(warnings), e) < 0)
		return -1;
	if (warnings[0])
		log_warn("generation %llu: squid -k parse warnings: %s", k->gen, warnings);
	unlink(check_path);
	return 0;
}

/* Activate: the keys fps-auth reads, stunnel's files, then the `current` symlink swap and the
 * generation word every fps-acl follows; stunnel is told about a changed tunnel. */
static int ctl_stage_activate(struct ctl *x, struct ctl_cand *k, const char *secrets_dir, struct fps_err *e)
{
	const struct fps_config *c = &k->g.c;
	k->g.stage = CTL_STAGE_SECRETS;
	if (c->keys_text && (!x->have_active || x->active.keys_len != c->keys_len ||
	                     memcmp(x->active.keys_text, c->keys_text, c->keys_len) != 0)) {
		/* A corrupt keys file is not published: fps-auth keeps the keys it has,
		 * and the rest of the update still applies. */
		if (ctl_check_keys(x, c) == 0 &&
		    state_write_secret(&x->st, "apikeys.json", c->keys_text, c->keys_len, e) < 0)
			return -1;
	}
	if (c->has_tunnel) {
		bool tunnel_changed = false;
		k->g.stage = CTL_STAGE_TUNNEL;
		x->tpaths.secrets_dir = secrets_dir; /* the Secret in use: the mount or its last good copy */
		if (tunnel_prepare(c, &x->tpaths, &tunnel_changed, e) < 0)
			return -1;
		/* stunnel's files are not part of a generation: if this update fails
		 * after this point, the next successful one must still reload stunnel. */
		if (tunnel_changed)
			x->stunnel_stale = true;
	}
	k->g.stage = CTL_STAGE_ACTIVATE;
	if (state_activate(&x->st, k->gen, e) < 0)
		return -1;
	genword_publish(&x->acl_gen, k->gen); /* its snapshot is in place: every fps-acl switches to it */

	if (x->stunnel.state == SUP_RUNNING && !c->has_tunnel) {
		log_info("generation %llu: tunnel removed: stopping stunnel", k->gen);
		sup_event(&x->stunnel, SUP_EV_STOP, sup_now_ms());
	} else if (x->stunnel.state == SUP_RUNNING && x->stunnel_stale) {
		/* stunnel re-reads its config and certificates on SIGHUP; established
		 * connections keep going on the old ones. */
		log_info("generation %llu: tunnel config or certificates changed: reloading stunnel pid %d", k->gen,
		         (int)x->stunnel.pid);
		sup_event(&x->stunnel, SUP_EV_RELOAD, sup_now_ms());
		x->stunnel_stale = false;
	}
	return 0;
}

/* Squid takes the active generation: a new process when the worker count or the cache's
 * stores change (supervise mode), a reconfigure when something it reads changed, nothing
 * otherwise. Fails only when Squid does not accept again after the reconfigure. */
static int ctl_stage_squid(struct ctl *x, struct ctl_cand *k, struct fps_err *e)
{
	unsigned long long gen = k->gen;
	int workers = cfg_workers(&k->g.c);
	pid_t squid_pid = ctl_squid_pid(x);
	char layout[64];
	cache_layout(&k->g.eff, layout, sizeof(layout));
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
	} else if (k->conf_changed && squid_pid) {
		char logpath[PATH_MAX + 16];
		snprintf(logpath, sizeof(logpath), "%s/cache.log", x->st.run_dir);
		off_t off = ctl_file_size(logpath);
		long long t0 = sup_now_ms();
		log_info("generation %llu: squid.conf changed: reconfiguring squid pid %d", gen, (int)squid_pid);
		x->squid_gen = 0;
		ctl_signal_squid(x, squid_pid, SUP_EV_RELOAD);
		k->g.stage = CTL_STAGE_RECONFIGURE;
		if (ctl_confirm_squid(x, off, e) < 0) {
			x->generation = gen; /* active: Squid read it */
			return -1;
		}
		log_info("generation %llu: squid accepting again after %lld ms", gen, sup_now_ms() - t0);
		x->squid_gen = gen;
	} else if (squid_pid && !k->conf_changed && x->squid_gen == x->generation) {
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
	return 0;
}

/* The candidate's configuration is the one in force (it owns it from now on). */
static void ctl_take_active(struct ctl *x, struct ctl_cand *k)
{
	snprintf(x->squid_hash, sizeof(x->squid_hash), "%s", k->squid_hash);
	snprintf(x->active_hash, sizeof(x->active_hash), "%s", k->g.c.input_hash);
	if (x->have_active)
		cfg_free(&x->active);
	x->active = k->g.c;
	x->have_active = true;
	k->g.loaded = false;
}

/* Commit: the candidate is the active generation; the older ones beyond the last good go. */
static void ctl_stage_commit(struct ctl *x, struct ctl_cand *k)
{
	unsigned long long gen = k->gen;
	const struct compiled *cp = &k->g.cp;
	if (k->disk_off != x->cache_disk_suspended) {
		if (k->disk_off)
			log_error(
			    "generation %llu: the state volume %s is nearly full: the update cache's disk store is "
			    "left out (memory only) until space returns",
			    gen, x->st.dir);
		else
			log_info(
			    "generation %llu: the state volume has room again: the update cache's disk store is back",
			    gen);
		x->cache_disk_suspended = k->disk_off;
	}
	unsigned long long prev = x->generation;
	x->generation = gen;
	ctl_take_active(x, k);
	const struct fps_config *c = &x->active;
	x->last_error[0] = '\0';
	x->state_enospc = false;
	x->last_success_unix = ctl_wall_now(); /* reloads and last_reload: ctl_reload() counts */
	ctl_record_compiled(x, cp);
	if (c->whitelist_report)
		log_warn(
		    "generation %llu: whitelist.mode is report: destinations not in the whitelist are ALLOWED "
		    "(on the %s route) and counted in /denied; set whitelist.mode: enforce once the list is complete",
		    gen, wl_via_name(c->default_route));
	probe_update(&x->probe, &x->active);
	state_prune(&x->st, gen, prev);
	log_info(
	    "generation %llu active: %zu entries (%zu direct, %zu upstream, %zu tunnel), %zu folded, %zu rejected, "
	    "whitelist version %lld, %s apply, squid %s",
	    gen, cp->policy.n_entries, cp->by_route[WL_VIA_DIRECT], cp->by_route[WL_VIA_UPSTREAM],
	    cp->by_route[WL_VIA_TUNNEL], cp->policy.n_folded, cp->n_rejected,
	    c->has_version ? c->whitelist_version : -1LL, c->apply == CFG_APPLY_LIVE ? "live" : "reconfigure",
	    k->conf_changed ? "given the new squid.conf" : "untouched (live apply)");
}

/* The pipeline for one pair of inputs (a ConfigMap directory, a Secret directory).
 * Returns 0 when a new generation is active, 1 when the inputs equal the active ones,
 * -1 when it failed before anything changed (*stage and *e say where and why: the caller
 * decides whom to blame), -2 when it failed after activation (already recorded). */
static int ctl_apply(struct ctl *x, const char *config_dir, const char *secrets_dir, bool quiet_if_same,
                     struct fps_err *e, enum ctl_stage *stage)
{
	struct ctl_cand k;
	memset(&k, 0, sizeof(k));
	int rc = ctl_stage_build(x, &k, config_dir, secrets_dir, quiet_if_same, e);
	if (rc == 0)
		rc = ctl_stage_prove(x, &k, e);
	if (rc == 0)
		rc = ctl_stage_activate(x, &k, secrets_dir, e);
	if (rc == 0 && ctl_stage_squid(x, &k, e) < 0) {
		/* The new generation is active (Squid read it); record the failure. */
		ctl_take_active(x, &k);
		ctl_fail(x, e, k.g.stage, quiet_if_same);
		rc = -2;
	} else if (rc == 0) {
		ctl_stage_commit(x, &k);
	}
	if (rc == -1 && k.written && k.gen != x->generation)
		fsio_rmtree(k.gen_dir);
	*stage = k.g.stage;
	render_free(&k.check);
	ctl_gen_free(&k.g);
	return rc;
}

/* ---- the inputs ------------------------------------------------------------------------- */

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
	enum ctl_stage stage = CTL_STAGE_LOAD, stage2 = CTL_STAGE_LOAD;
	char sec_err[1024] = "", cm_err[1024] = "", buf[1600];
	const char *fresh = x->opts->secrets_dir && x->opts->secrets_dir[0] ? x->opts->secrets_dir : NULL;
	char good_sec_files[PATH_MAX + 16];
	snprintf(good_sec_files, sizeof(good_sec_files), "%s", x->good_secrets_dir);
	const char *good_sec = fresh && fsio_exists(good_sec_files) ? x->good_secrets_dir : NULL;
	const char *sec = fresh;
	if (fresh && inputs_check_secrets(fresh, &e) < 0) {
		err_str(&e, sec_err, sizeof(sec_err));
		if (good_sec == NULL) {
			ctl_fail(x, &e, CTL_STAGE_SECRETS, quiet_if_same);
			return -1;
		}
		sec = good_sec;
	}
	bool had_active = x->have_active;
	char good_cm[PATH_MAX];
	ctl_good_configmap(x, config_dir, good_cm, sizeof(good_cm));
	int rc = ctl_apply(x, config_dir, sec, quiet_if_same, &e, &stage);
	/* Only a stage that judges content can blame an input; a full disk is nobody's input. */
	bool content = rc == -1 && ctl_stage_blames_input(stage, &e);
	if (content && good_cm[0]) {
		int rc2 = ctl_apply(x, good_cm, sec, quiet_if_same, &e2, &stage2);
		if (rc2 >= 0) {
			snprintf(cm_err, sizeof(cm_err), "%s: %s", ctl_stage_name(stage),
			         err_str(&e, buf, sizeof(buf)));
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
			snprintf(sec_err, sizeof(sec_err), "%s: %s", ctl_stage_name(stage),
			         err_str(&e, buf, sizeof(buf)));
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
int ctl_reload(struct ctl *x, const char *config_dir, bool quiet_if_same)
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
	x->last_reload_unix = ctl_wall_now();
	ctl_tried_version(config_dir, x->tried_version, sizeof(x->tried_version));
	return rc;
}
