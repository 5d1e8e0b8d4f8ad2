/*
 * ctl_status: the snapshot /status and /metrics serve (status.h), refreshed by the loop at
 * least once a second and at once when a child or a path changes. The admin thread only
 * reads what status_publish() hands it.
 */
#include "ctl_internal.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "health.h"
#include "log.h"

#define STATE_FULL_BYTES (256LL << 10) /* less free than this on the state volume counts as full */
#define STATE_ROOM_BYTES (1LL << 20)   /* this much more free than at a failed write: retry it */

void ctl_record_compiled(struct ctl *x, const struct compiled *cp)
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

/* The generation in force, the last reload, the keys (recounted: they expire with time). */
static void ctl_publish_config(struct ctl *x, struct fps_status *s, double now)
{
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
}

/* Squid and stunnel: state, pid, restarts, and why one is not running. */
static void ctl_publish_children(struct ctl *x, struct fps_status *s, double now, pid_t squid_pid)
{
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
}

/* A full state volume: Squid drops log lines (on-error=drop) and new generations
 * cannot be written, while the active one keeps serving. Say so, and retry the
 * failed update as soon as space comes back. */
static void ctl_publish_volume(struct ctl *x, struct fps_status *s)
{
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
}

/* Ready means: Squid runs the active generation and answers HTTP (a TCP connect alone
 * succeeds for a stopped Squid: the kernel completes it). The probe goes to the
 * controller-only port: Squid accepts one connection per listening socket per loop
 * pass, so while 1000 agents keep the agents' sockets' queues full a fresh connection
 * there can wait seconds, and a saturated but working Squid would look hung (and be
 * killed after the bound). Its own socket is accepted from at every pass. */
static void ctl_publish_health(struct ctl *x, struct fps_status *s, pid_t squid_pid)
{
	if (x->have_active) {
		snprintf(s->proxy_addr, sizeof(s->proxy_addr), "%s",
		         strcmp(x->active.bind, "0.0.0.0") == 0 ? "127.0.0.1"
		         : strcmp(x->active.bind, "::") == 0    ? "::1"
		                                                : x->active.bind);
		s->proxy_port = x->active.port;
	}
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
}

/* The inputs' directories, the update cache, the tunnel, the upstream and the clock. */
static void ctl_publish_paths(struct ctl *x, struct fps_status *s)
{
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
}

/* The helpers' denied-destination files, merged. */
static void ctl_publish_denied(struct ctl *x, struct fps_status *s)
{
	if (!x->have_denied)
		return;
	denied_collect(&x->denied);
	const struct denied_table *v = &x->denied.view;
	s->denied.since = v->since;
	s->denied.total = v->total;
	s->denied.distinct = v->n;
	s->denied.truncated = v->evicted > 0;
	s->denied.n_top = denied_top(v, s->denied.top, DENIED_TOP_MAX);
}

void ctl_publish(struct ctl *x)
{
	struct fps_status *s = &x->pub;
	double now = ctl_wall_now();
	ctl_publish_config(x, s, now);
	pid_t squid_pid = ctl_squid_pid(x);
	ctl_publish_children(x, s, now, squid_pid);
	ctl_publish_volume(x, s);
	ctl_publish_health(x, s, squid_pid);
	ctl_publish_paths(x, s);
	ctl_publish_denied(x, s);
	ctl_publish_reports(x, s, now);
	status_publish(s);
}
