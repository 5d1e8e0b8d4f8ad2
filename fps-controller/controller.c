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
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fsio.h"
#include "log.h"
#include "squid.h"
#include "state.h"
#include "sup.h"
#include "watch.h"

#define DEBOUNCE_QUIET_MS 50   /* trailing edge: apply once events stop for this long */
#define DEBOUNCE_MAX_MS   300  /* ...but never later than this after the first event */
#define RECHECK_MS        10000 /* re-read inputs even without events (missed or odd edits) */
#define CONFIRM_MS        60000 /* how long Squid may take to accept again after a reconfigure */

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
};

/* ---- paths ---------------------------------------------------------------------------- */

int ctl_find_paths(struct ctl_paths *p, struct fps_err *e)
{
	memset(p, 0, sizeof(*p));
	if (fsio_self_dir(p->bin_dir, sizeof(p->bin_dir)) < 0)
		return err_set(e, "/proc/self/exe", 0, 0, "cannot find the controller's own directory");
	const char *sq = getenv("FPS_SQUID_BIN");
	snprintf(p->squid_bin, sizeof(p->squid_bin), "%s", sq && *sq ? sq : SQUID_BIN_DEFAULT);
	const char *t = getenv("FPS_TEMPLATES_DIR");
	if (t && *t) {
		snprintf(p->templates_dir, sizeof(p->templates_dir), "%s", t);
		return 0;
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
			return 0;
		}
	}
	return err_set(e, NULL, 0, 0, "cannot find squid-templates/ near %s (set FPS_TEMPLATES_DIR)", p->bin_dir);
}

/* 65536 descriptors, or the hard limit Squid will inherit if that is lower. */
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
	char buf[512];
	for (size_t i = 0; i < cp->n_rejected; i++) {
		compile_note_str(&cp->rejected[i], buf, sizeof(buf));
		log_warn("whitelist entry rejected: %s/%s", config_dir, buf);
	}
	for (size_t i = 0; i < cp->n_changed; i++) {
		compile_note_str(&cp->changed[i], buf, sizeof(buf));
		log_warn("whitelist entry changed: %s/%s", config_dir, buf);
	}
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
	char run[PATH_MAX], sec[PATH_MAX];
	snprintf(run, sizeof(run), "%s/run", out_dir);
	snprintf(sec, sizeof(sec), "%s/secrets", out_dir);
	struct render_ctx rc = {.templates_dir = paths->templates_dir,
				.run_dir = run,
				.gen_dir = out_dir,
				.secrets_dir = sec,
				.bin_dir = paths->bin_dir,
				.generation = 0,
				.max_fds = ctl_max_fds()};
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
	x->reloads_failed++;
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

static int squid_workers_of(const struct fps_config *c)
{
	long cores = sysconf(_SC_NPROCESSORS_ONLN);
	return c->workers > 0 ? c->workers : (int)(cores > 0 ? cores : 1);
}

static void ctl_squid_argv(struct ctl *x, int workers, char *argv[8])
{
	static char conf[PATH_MAX + 16];
	snprintf(conf, sizeof(conf), "%s/squid.conf", x->st.current);
	squid_argv(x->paths->squid_bin, conf, workers, "fps", argv);
}

static off_t file_size(const char *path)
{
	struct stat sb;
	return stat(path, &sb) == 0 ? sb.st_size : 0;
}

/* After SIGHUP: Squid re-reads its config, closes and reopens its ports, and logs
 * "Accepting HTTP Socket connections" once it serves again. */
static int ctl_confirm_squid(struct ctl *x, off_t log_offset, struct fps_err *e)
{
	char logpath[PATH_MAX + 16];
	snprintf(logpath, sizeof(logpath), "%s/cache.log", x->st.run_dir);
	long long deadline = sup_now_ms() + CONFIRM_MS;
	while (sup_now_ms() < deadline) {
		if (x->squid.state != SUP_RUNNING || kill(x->squid.pid, 0) < 0)
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
	return err_set(e, logpath, 0, 0, "Squid did not accept connections within %d s of reconfigure", CONFIRM_MS / 1000);
}

static int ctl_reload(struct ctl *x, const char *config_dir, bool quiet_if_same)
{
	struct fps_config c;
	struct fps_err e;
	err_clear(&e);
	if (cfg_load(&c, config_dir, x->opts->secrets_dir, &e) < 0) {
		ctl_fail(x, &e, "load", quiet_if_same);
		return -1;
	}
	if (x->have_active && strcmp(c.input_hash, x->active_hash) == 0) {
		if (!quiet_if_same)
			log_debug("inputs unchanged (hash %.12s): nothing to do", c.input_hash);
		cfg_free(&c);
		return 0;
	}
	struct compiled cp;
	if (compile_config(&c, &cp, &e) < 0) {
		cfg_free(&c);
		ctl_fail(x, &e, "compile", quiet_if_same);
		return -1;
	}
	ctl_report_entries(&cp, config_dir);

	unsigned long long gen = state_max_gen(&x->st);
	gen = (gen > x->generation ? gen : x->generation) + 1;
	char gen_dir[PATH_MAX];
	state_gen_dir(&x->st, gen, gen_dir, sizeof(gen_dir));
	struct render_ctx rc = {.templates_dir = x->paths->templates_dir,
				.run_dir = x->st.run_dir,
				.gen_dir = x->st.current,
				.secrets_dir = x->st.secrets_dir,
				.bin_dir = x->paths->bin_dir,
				.generation = gen,
				.max_fds = ctl_max_fds()};
	struct render_out out, check;
	memset(&check, 0, sizeof(check));
	const char *stage = "render";
	if (render_generation(&c, &cp, &rc, &out, &e) < 0)
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
		if (render_generation(&c, &cp, &rc, &check, &e) < 0)
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
		if (state_write_secret(&x->st, "apikeys.json", c.keys_text, c.keys_len, &e) < 0)
			goto fail;
	}
	stage = "activate";
	if (state_activate(&x->st, gen, &e) < 0)
		goto fail;

	int workers = squid_workers_of(&c);
	if (x->squid.state == SUP_RUNNING && workers != x->squid_workers) {
		/* -N vs --foreground: a worker count change needs a new Squid process. */
		char *argv[8];
		ctl_squid_argv(x, workers, argv);
		sup_set_argv(&x->squid, argv);
		log_info("generation %llu: squid workers %d -> %d: restarting squid", gen, x->squid_workers, workers);
		kill(x->squid.pid, SIGTERM);
		x->squid_workers = workers;
	} else if (conf_changed && x->squid.state == SUP_RUNNING) {
		char logpath[PATH_MAX + 16];
		snprintf(logpath, sizeof(logpath), "%s/cache.log", x->st.run_dir);
		off_t off = file_size(logpath);
		long long t0 = sup_now_ms();
		log_info("generation %llu: squid.conf changed: reconfiguring squid pid %d", gen, (int)x->squid.pid);
		kill(x->squid.pid, SIGHUP);
		stage = "reconfigure";
		if (ctl_confirm_squid(x, off, &e) < 0) {
			/* The new generation is active (Squid read it); record the failure. */
			x->generation = gen;
			goto fail_activated;
		}
		log_info("generation %llu: squid accepting again after %lld ms", gen, sup_now_ms() - t0);
	}

	unsigned long long prev = x->generation;
	x->generation = gen;
	snprintf(x->squid_hash, sizeof(x->squid_hash), "%s", squid_hash);
	snprintf(x->active_hash, sizeof(x->active_hash), "%s", c.input_hash);
	if (x->have_active)
		cfg_free(&x->active);
	x->active = c;
	x->have_active = true;
	x->reloads_ok++;
	x->last_error[0] = '\0';
	state_prune(&x->st, gen, prev);
	log_info("generation %llu active: %zu entries (%zu direct, %zu upstream, %zu tunnel), %zu folded, %zu rejected, "
		 "whitelist version %lld, %s apply, squid %s",
		 gen, cp.policy.n_entries, cp.by_route[WL_VIA_DIRECT], cp.by_route[WL_VIA_UPSTREAM],
		 cp.by_route[WL_VIA_TUNNEL], cp.policy.n_folded, cp.n_rejected,
		 c.has_version ? c.whitelist_version : -1LL, c.apply == CFG_APPLY_LIVE ? "live" : "reconfigure",
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
	return -1;
fail:
	render_free(&out);
	render_free(&check);
	if (gen != x->generation) {
		fsio_rmtree(gen_dir);
	}
fail_nofiles:
	compile_free(&cp);
	cfg_free(&c);
	ctl_fail(x, &e, stage, quiet_if_same);
	return -1;
}

/* ---- the loop ------------------------------------------------------------------------- */

static void ctl_reap(struct ctl *x, long long now)
{
	int status;
	pid_t pid;
	while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
		sup_reap(&x->squid, pid, status, now);
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

int ctl_run(const struct ctl_opts *opts, const struct ctl_paths *paths)
{
	struct ctl x;
	memset(&x, 0, sizeof(x));
	x.opts = opts;
	x.paths = paths;
	struct fps_err e;
	err_clear(&e);
	char buf[1600];

	if (state_open(&x.st, opts->state_dir, &e) < 0) {
		log_error("%s", err_str(&e, buf, sizeof(buf)));
		return 3;
	}
	int sfd = ctl_signalfd();
	if (sfd < 0) {
		log_error_errno("signalfd");
		return 3;
	}
	x.generation = state_current_gen(&x.st);

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
		/* /status must keep saying that the ConfigMap is broken. */
		snprintf(x.last_error, sizeof(x.last_error), "%s", saved_error);
	}

	char *argv[8];
	x.squid_workers = squid_workers_of(&x.active);
	ctl_squid_argv(&x, x.squid_workers, argv);
	sup_init(&x.squid, "squid", argv, 10000);
	if (opts->mode == CTL_MODE_SUPERVISE)
		sup_event(&x.squid, SUP_EV_START, sup_now_ms());

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

	log_info("running: config %s, secrets %s, state %s, generation %llu", opts->config_dir,
		 opts->secrets_dir ? opts->secrets_dir : "-", opts->state_dir, x.generation);

	long long burst_start = 0, debounce_at = 0, recheck_at = sup_now_ms() + RECHECK_MS;
	bool stopping = false;
	int exit_code = 0;
	for (;;) {
		long long now = sup_now_ms();
		if (stopping && x.squid.state == SUP_STOPPED)
			break;
		long long next = min_deadline(min_deadline(debounce_at, recheck_at), sup_deadline(&x.squid));
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
					} else if (si.ssi_signo == SIGHUP) {
						log_info("SIGHUP: rereading %s", opts->config_dir);
						debounce_at = now;
					} else if (!stopping) {
						log_info("signal %d: shutting down", (int)si.ssi_signo);
						stopping = true;
						sup_event(&x.squid, SUP_EV_STOP, now);
					}
				}
			} else if (evs[i].data.fd == w.fd && watch_drain(&w) && !stopping) {
				if (burst_start == 0)
					burst_start = now;
				debounce_at = now + DEBOUNCE_QUIET_MS;
				if (debounce_at > burst_start + DEBOUNCE_MAX_MS)
					debounce_at = burst_start + DEBOUNCE_MAX_MS;
			}
		}
		sup_tick(&x.squid, now);
		if (!stopping && debounce_at && now >= debounce_at) {
			debounce_at = 0;
			burst_start = 0;
			ctl_reload(&x, opts->config_dir, false);
			recheck_at = sup_now_ms() + RECHECK_MS;
		}
		if (!stopping && now >= recheck_at) {
			ctl_reload(&x, opts->config_dir, true);
			recheck_at = sup_now_ms() + RECHECK_MS;
		}
	}
	log_info("stopped (generation %llu)", x.generation);
	watch_close(&w);
	close(ep);
	close(sfd);
	sup_free(&x.squid);
	if (x.have_active)
		cfg_free(&x.active);
	return exit_code;
}
