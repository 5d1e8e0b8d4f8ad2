/*
 * ctl_build: one build of a generation (load, compile, judge the cache's room, render), the
 * same stages for `run` (ctl_reload.c), `check` and `render`; and where the controller finds
 * its helpers, templates and Squid. No side effects: the callers decide where files go.
 */
#include "ctl_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include "cache.h"
#include "fsio.h"
#include "log.h"
#include "squid.h"

double ctl_wall_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

off_t ctl_file_size(const char *path)
{
	struct stat sb;
	return stat(path, &sb) == 0 ? sb.st_size : 0;
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

/* The benchmark compares the denied report on and off in one run (bench/ab_denied.py). */
bool ctl_no_denied_report(void)
{
	const char *v = getenv("FPS_DENIED_REPORT");
	return v && strcmp(v, "off") == 0;
}

/* 65536 descriptors, or the hard limit Squid will inherit if that is lower. */
long ctl_max_fds(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_max == RLIM_INFINITY || rl.rlim_max > 65536)
		return 65536;
	return (long)rl.rlim_max;
}

/* Squid's logs are rotated past this size (FPS_LOG_ROTATE_BYTES: tests use a small limit). */
long long ctl_log_rotate_bytes(void)
{
	const char *env = getenv("FPS_LOG_ROTATE_BYTES");
	return env && atoll(env) > 0 ? atoll(env) : LOG_ROTATE_BYTES;
}

/* ---- stages ----------------------------------------------------------------------------- */

static const struct {
	const char *name;
	bool judges_input;
} ctl_stages[CTL_STAGE_COUNT] = {
    [CTL_STAGE_LOAD] = {"load", true},          [CTL_STAGE_COMPILE] = {"compile", true},
    [CTL_STAGE_CACHE] = {"cache", false},       [CTL_STAGE_RENDER] = {"render", true},
    [CTL_STAGE_WRITE] = {"write", false},       [CTL_STAGE_PARSE] = {"squid -k parse", true},
    [CTL_STAGE_SECRETS] = {"secrets", false},   [CTL_STAGE_TUNNEL] = {"tunnel", true},
    [CTL_STAGE_ACTIVATE] = {"activate", false}, [CTL_STAGE_RECONFIGURE] = {"reconfigure", false},
};

const char *ctl_stage_name(enum ctl_stage s)
{
	return s < CTL_STAGE_COUNT ? ctl_stages[s].name : "?";
}

bool ctl_stage_blames_input(enum ctl_stage s, const struct fps_err *e)
{
	return s < CTL_STAGE_COUNT && ctl_stages[s].judges_input && e->sys != ENOSPC;
}

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

int ctl_gen_load(struct ctl_gen *g, const char *config_dir, const char *secrets_dir, struct fps_err *e)
{
	memset(g, 0, sizeof(*g));
	g->stage = CTL_STAGE_LOAD;
	if (cfg_load(&g->c, config_dir, secrets_dir, e) < 0)
		return -1;
	g->loaded = true;
	g->eff = g->c;
	return 0;
}

int ctl_gen_compile(struct ctl_gen *g, struct fps_err *e)
{
	g->stage = CTL_STAGE_COMPILE;
	if (compile_config(&g->c, &g->cp, e) < 0)
		return -1;
	g->compiled = true;
	return 0;
}

/* The update cache's size against the room it has (run: the state volume and the container's
 * memory limit), then the files of the generation as Squid and the helpers will read them. */
int ctl_gen_render(struct ctl_gen *g, const char *config_dir, const struct ctl_room *room, const struct render_ctx *rc,
                   struct fps_err *e)
{
	if (room && g->eff.has_cache) {
		g->stage = CTL_STAGE_CACHE;
		char path[PATH_MAX + 16];
		snprintf(path, sizeof(path), "%s/%s", config_dir, CFG_YAML_NAME);
		if (cache_check_room(&g->eff, path, room->volume_total, room->volume_free, room->reserve,
		                     room->mem_limit, e) < 0)
			return -1;
	}
	g->stage = CTL_STAGE_RENDER;
	if (render_generation(&g->eff, &g->cp, rc, &g->out, e) < 0)
		return -1;
	g->rendered = true;
	return 0;
}

void ctl_gen_free(struct ctl_gen *g)
{
	if (g->rendered)
		render_free(&g->out);
	if (g->compiled)
		compile_free(&g->cp);
	if (g->loaded)
		cfg_free(&g->c);
	g->rendered = g->compiled = g->loaded = false;
}

/* What `run` judges the update cache's size against: the volume that holds dir (its size
 * unknown, 0, when dir is NULL or not there: not judged) and the container's memory limit. */
void ctl_room_of(const char *dir, struct ctl_room *r)
{
	struct statvfs v;
	memset(r, 0, sizeof(*r));
	if (dir && statvfs(dir, &v) == 0) {
		r->volume_free = (unsigned long long)v.f_bavail * v.f_frsize;
		r->volume_total = (unsigned long long)v.f_blocks * v.f_frsize;
	}
	r->reserve = CACHE_VOLUME_RESERVE(ctl_log_rotate_bytes());
	r->mem_limit = cache_memory_limit();
}

/* `check` and `render`: the build `run` does, into out_dir instead of a generation directory. */
int ctl_build(const char *config_dir, const char *secrets_dir, const struct ctl_paths *paths, const char *out_dir,
              const struct ctl_build_room *judge, struct fps_config *c, struct compiled *cp, struct render_out *out,
              struct fps_err *e)
{
	struct ctl_gen g;
	if (ctl_gen_load(&g, config_dir, secrets_dir, e) < 0 || ctl_gen_compile(&g, e) < 0) {
		ctl_gen_free(&g);
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
	struct ctl_room room = {0};
	if (judge)
		ctl_room_of(judge->state_dir, &room);
	if (ctl_gen_render(&g, config_dir, judge ? &room : NULL, &rc, e) < 0) {
		ctl_gen_free(&g);
		return -1;
	}
	*c = g.c;
	*cp = g.cp;
	*out = g.out;
	return 0;
}
