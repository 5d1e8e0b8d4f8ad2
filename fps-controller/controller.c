/*
 * controller: one event loop (epoll over signalfd, inotify, Squid's stderr, the probes'
 * eventfd and adopted children's pidfds; timeouts computed from the deadlines of the
 * debounce, the supervisor, the drain and a periodic re-check). Every change goes through
 * ctl_reload() (ctl_reload.c); the other rooms are listed in ctl_internal.h.
 */
#include "controller.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include "admin.h"
#include "adminaddr.h"
#include "cache.h"
#include "cpus.h"
#include "ctl_internal.h"
#include "fsio.h"
#include "health.h"
#include "log.h"
#include "watch.h"

#define DEBOUNCE_QUIET_MS 50    /* trailing edge: apply once events stop for this long */
#define DEBOUNCE_MAX_MS   300   /* ...but never later than this after the first event */
#define RECHECK_MS        10000 /* re-read inputs even without events (missed or odd edits) */
#define PUBLISH_MS        1000  /* the status snapshot is refreshed at least this often */
#define SQUID_HANG_MS     30000 /* a Squid answering no HTTP this long is killed (FPS_SQUID_HANG_MS) */
/* ...but one that has not answered since it started gets this long (FPS_SQUID_START_MS): Squid
 * starts every helper before its first answer, one after another, and an ASan Squid on a box at
 * load average 16 took 17 s to its first answer; a slow start must not be killed as a hang. */
#define SQUID_START_MS 120000

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

/* What the controller keeps for its lifetime: the state directory, the helpers Squid runs, the
 * generation word, the reports, stunnel's supervision, the signals, the health probe.
 * Returns 0, or the exit code. */
static int ctl_open(struct ctl *x, int *sfd)
{
	const struct ctl_opts *opts = x->opts;
	const struct ctl_paths *paths = x->paths;
	struct fps_err e;
	err_clear(&e);
	char buf[1600];
	if (state_open(&x->st, opts->state_dir, &e) < 0) {
		log_error("%s", err_str(&e, buf, sizeof(buf)));
		return 3;
	}
	if (state_install_helpers(&x->st, paths->bin_dir, x->helper_dir, sizeof(x->helper_dir), &e) < 0) {
		log_error("%s", err_str(&e, buf, sizeof(buf)));
		return 3;
	}
	char genpath[PATH_MAX + 32];
	snprintf(genpath, sizeof(genpath), "%s/" GENWORD_NAME, x->st.run_dir);
	if (genword_create(&x->acl_gen, genpath, state_current_gen(&x->st), x->st.as_root ? x->st.squid_gid : (gid_t)-1,
	                   &e) < 0)
		log_warn("%s: fps-acl processes switch generations one by one", err_str(&e, buf, sizeof(buf)));
	snprintf(x->tunnel_dir, sizeof(x->tunnel_dir), "%s/tunnel", x->st.dir);
	snprintf(x->good_secrets_dir, sizeof(x->good_secrets_dir), "%s/last-good-secrets", x->st.dir);
	if (denied_collector_init(&x->denied, x->st.denied_dir, ctl_wall_now()) == 0)
		x->have_denied = true;
	else
		log_warn("denied report: out of memory: /denied stays empty");
	if (!reports_off() && (x->reports = reports_new(x->st.run_dir, x->st.denied_dir, ctl_wall_now())) == NULL)
		log_warn("reports: out of memory: /failures and /traffic stay empty");
	x->tpaths = (struct tunnel_paths){
	    .templates_dir = paths->stunnel_templates_dir, .dir = x->tunnel_dir, .secrets_dir = opts->secrets_dir};
	x->probe.paths = x->tpaths;
	char *targv[4];
	tunnel_argv(&x->tpaths, targv);
	sup_init(&x->stunnel, "stunnel", targv, 5000);
	x->stunnel.gate = ctl_stunnel_gate;
	x->stunnel.gate_arg = x;

	*sfd = ctl_signalfd();
	if (*sfd < 0) {
		log_error_errno("signalfd");
		return 3;
	}
	/* After the signal mask: threads inherit it. */
	const char *hang = getenv("FPS_SQUID_HANG_MS"); /* tests use a short bound */
	x->hang_ms = hang && atoll(hang) > 0 ? atoll(hang) : SQUID_HANG_MS;
	const char *start = getenv("FPS_SQUID_START_MS");
	x->start_ms = start && atoll(start) > 0 ? atoll(start) : SQUID_START_MS;
	if (x->start_ms < x->hang_ms)
		x->start_ms = x->hang_ms;
	x->health_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	x->probe.notify_fd = x->health_fd;
	if (x->health_fd < 0 || health_start(x->health_fd) < 0) {
		log_error_errno("health probe");
		return 3;
	}
	return 0;
}

/* The first build, from the inputs; when they are invalid, from the last good generation in
 * the state directory, so a broken ConfigMap does not keep a restarted controller down.
 * Returns 0, or exit code 1 when neither loads. */
static int ctl_first_reload(struct ctl *x)
{
	const struct ctl_opts *opts = x->opts;
	if (ctl_reload(x, opts->config_dir, false) == 0)
		return 0;
	unsigned long long last = state_current_gen(&x->st);
	char input[PATH_MAX + 32];
	state_gen_dir(&x->st, last, input, sizeof(input));
	strncat(input, "/input", sizeof(input) - strlen(input) - 1);
	if (last == 0 || !fsio_exists(input)) {
		log_error("no valid configuration in %s and no last good generation in %s: exiting", opts->config_dir,
		          opts->state_dir);
		fprintf(stderr, "fps-controller: %s\n", x->last_error);
		return 1;
	}
	char saved_error[sizeof(x->last_error)];
	snprintf(saved_error, sizeof(saved_error), "%s", x->last_error);
	log_error("CONFIGURATION IN %s IS INVALID: starting on the last good generation %llu (%s)", opts->config_dir,
	          last, input);
	if (ctl_reload(x, input, false) < 0) {
		log_error("the last good generation %llu does not load either: exiting", last);
		return 1;
	}
	/* /status must keep saying that the ConfigMap is broken (counted by the first try). */
	snprintf(x->last_error, sizeof(x->last_error), "%s", saved_error);
	return 0;
}

/* Squid under supervision, its stderr through a pipe the loop relays; in supervise mode, a
 * previous controller's Squid and stunnel adopted, or Squid started. gen_at_start is the
 * generation `current` named before this start's first reload (what an orphan last read). */
static void ctl_start_children(struct ctl *x, unsigned long long gen_at_start)
{
	char *argv[8];
	x->squid_workers = cfg_workers(&x->active);
	if (x->active.workers == 0)
		log_info("proxy.workers auto: %d (CPUs this process may use: affinity %d, cgroup quota %d, 0 = none)",
		         x->squid_workers, cpus_affinity(), cpus_quota("/proc/self/cgroup", "/sys/fs/cgroup"));
	cache_layout(&x->active, x->cache_layout, sizeof(x->cache_layout));
	ctl_squid_argv(x, x->squid_workers, argv);
	sup_init(&x->squid, "squid", argv, 10000);
	x->squid.gate = ctl_squid_gate;
	x->squid.gate_arg = x;
	x->squid_out[0] = x->squid_out[1] = -1;
	if (pipe2(x->squid_out, O_CLOEXEC) == 0) {
		fcntl(x->squid_out[0], F_SETFL, fcntl(x->squid_out[0], F_GETFL) | O_NONBLOCK);
		/* Room for a burst of helper and Squid messages while the loop is busy in a
		 * reload: a full pipe would block the writer (Squid itself). */
		fcntl(x->squid_out[0], F_SETPIPE_SZ, 1 << 20);
		x->squid.out_fd = x->squid_out[1];
	} else {
		log_warn_errno("pipe for Squid's stderr (it goes to ours directly)");
		x->squid_out[0] = x->squid_out[1] = -1;
	}
	if (x->opts->mode != CTL_MODE_SUPERVISE)
		return;
	char pidfile[PATH_MAX + 16], conf[PATH_MAX + 16];
	snprintf(pidfile, sizeof(pidfile), "%s/squid.pid", x->st.run_dir);
	snprintf(conf, sizeof(conf), "%s/squid.conf", x->st.current);
	if (ctl_adopt_orphan(&x->squid, pidfile, conf, SIGINT)) {
		char logpath[PATH_MAX + 16];
		snprintf(logpath, sizeof(logpath), "%s/cache.log", x->st.run_dir);
		x->squid_log_off = ctl_file_size(logpath);
		/* It runs what `current` held when it last read it: if this start activated a
		 * newer generation, Squid reads it now (a reconfigure, as for any edit). */
		if (x->generation != gen_at_start && !ctl_same_squid_conf(x, gen_at_start)) {
			log_info("squid: adopted pid %d read generation %llu; reconfiguring it for %llu",
			         (int)x->squid.pid, gen_at_start, x->generation);
			sup_event(&x->squid, SUP_EV_RELOAD, sup_now_ms());
		}
	}
	snprintf(pidfile, sizeof(pidfile), "%s/stunnel.pid", x->tunnel_dir);
	snprintf(conf, sizeof(conf), "%s/stunnel.conf", x->tunnel_dir);
	if (ctl_adopt_orphan(&x->stunnel, pidfile, conf, SIGTERM) && !(x->have_active && x->active.has_tunnel))
		sup_event(&x->stunnel, SUP_EV_STOP, sup_now_ms()); /* the tunnel went away meanwhile */
	if (x->squid.state == SUP_STOPPED)
		sup_event(&x->squid, SUP_EV_START, sup_now_ms());
	x->squid_gen = x->generation;
}

/* The loop's deadlines (sup_now_ms; 0 = none) and whether it is stopping. */
struct ctl_timers {
	long long burst_start, debounce_at, recheck_at, publish_at;
	bool stopping;
	long long drain_at;   /* next look for Squid's remaining clients while it stops */
	long long handoff_at; /* SIGTERM: next look at a draining Squid that still runs (ctl_drain_step) */
	long long drain_until;
};

/* What the signalfd says: children exited, SIGHUP (re-read), SIGTERM/SIGINT (the drain). */
static void ctl_on_signals(struct ctl *x, struct ctl_timers *t, int sfd, long long now)
{
	struct signalfd_siginfo si;
	while (read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
		if (si.ssi_signo == SIGCHLD) {
			ctl_reap(x, now);
			t->publish_at = now;
		} else if (si.ssi_signo == SIGHUP) {
			log_info("SIGHUP: rereading %s", x->opts->config_dir);
			t->debounce_at = now;
		} else if (!t->stopping) {
			log_info("signal %d: shutting down", (int)si.ssi_signo);
			t->stopping = true;
			t->handoff_at = ctl_drain_begin(x, now, &t->drain_until);
			if (t->handoff_at == 0) {
				sup_event(&x->squid, SUP_EV_STOP, now);
				if (x->squid.state == SUP_STOPPING && x->have_active)
					t->drain_at = now + DRAIN_POLL_MS;
			}
			if (x->squid.state != SUP_RUNNING && x->squid.state != SUP_STOPPING)
				sup_event(&x->stunnel, SUP_EV_STOP, now);
		}
	}
}

/* One epoll event: a signal, an adopted child's end, Squid's stderr, a probe's flip, an edit. */
static void ctl_on_event(struct ctl *x, struct ctl_timers *t, int fd, int sfd, struct watch *w, long long now)
{
	if (fd == sfd) {
		ctl_on_signals(x, t, sfd, now);
	} else if (x->squid.adopted && fd == x->squid.pidfd) {
		sup_adopted_exit(&x->squid, now);
		if (x->squid.state == SUP_BACKOFF)
			ctl_squid_exited(x);
		t->publish_at = now;
	} else if (x->stunnel.adopted && fd == x->stunnel.pidfd) {
		sup_adopted_exit(&x->stunnel, now);
		t->publish_at = now;
	} else if (fd == x->squid_out[0]) {
		ctl_squid_out(x);
	} else if (fd == x->health_fd) {
		uint64_t flips;
		if (read(x->health_fd, &flips, sizeof(flips)) > 0)
			t->publish_at = now; /* readiness follows Squid's answer at once */
	} else if (fd == w->fd && watch_drain(w) && !t->stopping) {
		if (t->burst_start == 0)
			t->burst_start = now;
		t->debounce_at = now + DEBOUNCE_QUIET_MS;
		if (t->debounce_at > t->burst_start + DEBOUNCE_MAX_MS)
			t->debounce_at = t->burst_start + DEBOUNCE_MAX_MS;
	}
}

/* What is due before the loop waits: stunnel's start, the sidecar's Squid, the publish (with
 * log rotation and the watch's re-arm), the drain's steps. */
static void ctl_before_wait(struct ctl *x, struct ctl_timers *t, struct watch *w, long long now)
{
	/* stunnel follows the active configuration: started once a tunnel exists. */
	if (!t->stopping && x->have_active && x->active.has_tunnel && x->stunnel.state == SUP_STOPPED) {
		sup_event(&x->stunnel, SUP_EV_START, now);
		x->stunnel_stale = false; /* a new stunnel reads the current files */
	}
	if (x->opts->mode == CTL_MODE_SIDECAR)
		ctl_watch_sidecar(x);
	if (now >= t->publish_at) {
		ctl_rotate_logs(x);
		ctl_publish(x);
		t->publish_at = now + PUBLISH_MS;
		if (watch_rearm(w))
			x->retry_reload = true; /* a directory came back: read it */
		if (x->retry_reload && !t->stopping && t->debounce_at == 0)
			t->debounce_at = now;
		x->retry_reload = false;
	}
	if (t->handoff_at && now >= t->handoff_at) {
		t->handoff_at = ctl_drain_step(x, now, t->drain_until);
		if (t->handoff_at < 0) {
			t->handoff_at = 0;
			t->drain_at = now + DRAIN_POLL_MS;
		}
	}
	if (t->drain_at && now >= t->drain_at)
		t->drain_at = ctl_hurry_squid(x, now);
	/* stunnel stops after Squid: requests still answered on the tunnel route need it */
	if (t->stopping && x->squid.state == SUP_STOPPED && x->stunnel.state == SUP_RUNNING) {
		tunnel_stop_accepting(x->have_active ? &x->active : NULL, x->stunnel.pid);
		sup_event(&x->stunnel, SUP_EV_STOP, sup_now_ms());
	}
}

/* After the events: the supervisors' timers, the hung check, and a due reload or re-check. */
static void ctl_after_wait(struct ctl *x, struct ctl_timers *t, long long now)
{
	sup_tick(&x->squid, now);
	sup_tick(&x->stunnel, now);
	/* A Squid that died while draining or stopping is not started again. */
	if (t->stopping && x->squid.state == SUP_BACKOFF)
		sup_event(&x->squid, SUP_EV_STOP, now);
	if (t->stopping && x->stunnel.state == SUP_BACKOFF)
		sup_event(&x->stunnel, SUP_EV_STOP, now);
	if (!t->stopping)
		ctl_check_hung(x, now);
	if (x->squid.state == SUP_RUNNING && x->squid.started_ms == now)
		x->squid_gen = x->generation; /* a restarted Squid reads `current` */
	if (!t->stopping && t->debounce_at && now >= t->debounce_at) {
		t->debounce_at = 0;
		t->burst_start = 0;
		ctl_reload(x, x->opts->config_dir, false);
		t->recheck_at = sup_now_ms() + RECHECK_MS;
		t->publish_at = 0;
	}
	if (!t->stopping && now >= t->recheck_at) {
		ctl_reload(x, x->opts->config_dir, true);
		t->recheck_at = sup_now_ms() + RECHECK_MS;
	}
}

/* The loop's epoll set: signals, edits, the probes' eventfd, Squid's stderr, and adopted
 * children's pidfds (readable when they end). */
static int ctl_epoll(struct ctl *x, int sfd, const struct watch *w)
{
	int ep = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event ev = {.events = EPOLLIN, .data.fd = sfd};
	epoll_ctl(ep, EPOLL_CTL_ADD, sfd, &ev);
	ev.data.fd = w->fd;
	epoll_ctl(ep, EPOLL_CTL_ADD, w->fd, &ev);
	ev.data.fd = x->health_fd;
	epoll_ctl(ep, EPOLL_CTL_ADD, x->health_fd, &ev);
	if (x->squid_out[0] >= 0) {
		ev.data.fd = x->squid_out[0];
		epoll_ctl(ep, EPOLL_CTL_ADD, x->squid_out[0], &ev);
	}
	struct sup_child *adopted[2] = {&x->squid, &x->stunnel};
	for (int i = 0; i < 2; i++) {
		if (adopted[i]->adopted) {
			ev.data.fd = adopted[i]->pidfd;
			epoll_ctl(ep, EPOLL_CTL_ADD, adopted[i]->pidfd, &ev);
		}
	}
	return ep;
}

/* After the loop (the admin endpoints already stopped): what ctl_open and the start opened. */
static void ctl_close(struct ctl *x, int sfd, struct watch *w, int ep)
{
	health_stop();
	close(x->health_fd);
	probe_stop(&x->probe);
	watch_close(w);
	close(ep);
	close(sfd);
	if (x->squid_out[0] >= 0) {
		ctl_squid_out(x);
		close(x->squid_out[0]);
		close(x->squid_out[1]);
	}
	sup_free(&x->squid);
	sup_free(&x->stunnel);
	if (x->have_active)
		cfg_free(&x->active);
	if (x->have_denied)
		denied_collector_free(&x->denied);
	genword_close(&x->acl_gen);
	reports_free(x->reports);
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
	x.pub.start_unix = ctl_wall_now();
	pthread_mutex_init(&x.probe.mu, NULL);
	pthread_cond_init(&x.probe.cv, NULL);

	int sfd = -1;
	int rc = ctl_open(&x, &sfd);
	if (rc != 0)
		return rc;
	x.generation = state_current_gen(&x.st);
	unsigned long long gen_at_start = x.generation; /* what an orphaned Squid last read */
	if ((rc = ctl_first_reload(&x)) != 0)
		return rc;

	char admin_addr[64];
	int admin_port;
	ctl_admin_addr(&x, admin_addr, sizeof(admin_addr), &admin_port);
	if (adminaddr_start(x.st.dir, admin_addr, sizeof(admin_addr), &admin_port, opts->admin_spare, &e) < 0) {
		log_error("admin endpoints: %s", err_str(&e, buf, sizeof(buf)));
		return 3;
	}
	admin_heartbeat();

	ctl_start_children(&x, gen_at_start);

	struct watch w;
	const char *dirs[2] = {opts->config_dir, opts->secrets_dir};
	if (watch_open(&w, dirs, opts->secrets_dir && opts->secrets_dir[0] ? 2 : 1, &e) < 0) {
		log_error("%s", err_str(&e, buf, sizeof(buf)));
		return 3;
	}
	int ep = ctl_epoll(&x, sfd, &w);

	log_info("running (%s mode): config %s, secrets %s, state %s, generation %llu, admin %s:%d",
	         opts->mode == CTL_MODE_SUPERVISE ? "supervise" : "sidecar", opts->config_dir,
	         opts->secrets_dir ? opts->secrets_dir : "-", opts->state_dir, x.generation, admin_addr, admin_port);

	struct ctl_timers t = {.recheck_at = sup_now_ms() + RECHECK_MS};
	int exit_code = 0;
	for (;;) {
		long long now = sup_now_ms();
		admin_heartbeat();
		if (t.stopping && x.squid.state == SUP_STOPPED && x.stunnel.state == SUP_STOPPED)
			break;
		ctl_before_wait(&x, &t, &w, now);
		long long next = min_deadline(min_deadline(t.debounce_at, t.recheck_at), sup_deadline(&x.squid));
		next = min_deadline(min_deadline(next, t.drain_at), t.handoff_at);
		next = min_deadline(min_deadline(next, sup_deadline(&x.stunnel)), t.publish_at);
		int timeout = next ? (int)(next > now ? next - now : 0) : -1;
		struct epoll_event evs[4];
		int n = epoll_wait(ep, evs, 4, timeout);
		if (n < 0 && errno != EINTR) {
			log_error_errno("epoll_wait");
			exit_code = 3;
			break;
		}
		now = sup_now_ms();
		for (int i = 0; i < n; i++)
			ctl_on_event(&x, &t, evs[i].data.fd, sfd, &w, now);
		ctl_after_wait(&x, &t, now);
	}
	log_info("stopped (generation %llu)", x.generation);
	admin_stop();
	ctl_close(&x, sfd, &w, ep);
	return exit_code;
}
