/*
 * ctl_children: Squid and stunnel as the controller's children (sup.c drives their states):
 * what must hold before each start (the gates), every signal through the supervision table,
 * Squid's stderr and its last words, log rotation, the hung-Squid check, the other
 * container's Squid in sidecar mode, and a previous controller's orphans (adopted or replaced).
 */
#include "ctl_internal.h"

#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <unistd.h>

#include "cache.h"
#include "fsio.h"
#include "handover.h"
#include "health.h"
#include "log.h"
#include "preflight.h"
#include "proc.h"
#include "squid.h"

void ctl_squid_argv(struct ctl *x, int workers, char *argv[8])
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

/* The Squid we talk to: our child (supervise) or the one whose pid file the
 * other container's Squid wrote into the shared state directory (sidecar). */
pid_t ctl_squid_pid(struct ctl *x)
{
	/* A Squid that exited while a blocking wait (the drain's confirm) keeps the loop from
	 * reaping it is still SUP_RUNNING in the table, and a zombie kill(pid, 0) finds: it
	 * got the SIGINT of a terminal's Ctrl-C with us, and the drain waited 60 s for it. */
	if (x->opts->mode == CTL_MODE_SUPERVISE)
		return x->squid.state == SUP_RUNNING && proc_running(x->squid.pid) ? x->squid.pid : 0;
	char path[PATH_MAX + 16], *text = NULL;
	snprintf(path, sizeof(path), "%s/squid.pid", x->st.run_dir);
	struct fps_err e;
	if (fsio_read(path, 64, &text, NULL, &e) < 0)
		return 0;
	pid_t pid = (pid_t)strtol(text, NULL, 10);
	free(text);
	return pid > 0 && proc_running(pid) ? pid : 0;
}

/* A reload (SIGHUP) or log reopen (SIGUSR1) for Squid: through the supervision table when
 * Squid is our child (or adopted); sidecar mode signals the other container's Squid, which
 * no table of ours supervises. */
void ctl_signal_squid(struct ctl *x, pid_t pid, enum sup_event ev)
{
	if (x->opts->mode == CTL_MODE_SUPERVISE)
		sup_event(&x->squid, ev, sup_now_ms());
	else
		kill(pid, ev == SUP_EV_RELOAD ? SIGHUP : SIGUSR1);
}

/* After SIGHUP: Squid re-reads its config, closes and reopens its ports, and logs
 * "Accepting HTTP Socket connections" once it serves again. */
int ctl_confirm_squid(struct ctl *x, off_t log_offset, struct fps_err *e)
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

int ctl_squid_gate(struct sup_child *c, void *arg)
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
	x->squid_log_off = ctl_file_size(logpath);
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
void ctl_squid_out(struct ctl *x)
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

int ctl_stunnel_gate(struct sup_child *c, void *arg)
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
void ctl_squid_exited(struct ctl *x)
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

/* ---- while they run ------------------------------------------------------------------- */

/* Squid's access.log grows by megabytes a second under load, on a size-limited
 * volume: past LOG_ROTATE_BYTES keep one previous file and have Squid reopen. */
void ctl_rotate_logs(struct ctl *x)
{
	static const char *const names[] = {"access.log", "cache.log", "detail.log"};
	static long long limit;
	if (limit == 0)
		limit = ctl_log_rotate_bytes();
	bool rotated = false;
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		char path[PATH_MAX + 32], old[PATH_MAX + 32];
		snprintf(path, sizeof(path), "%s/%s", x->st.run_dir, names[i]);
		if (ctl_file_size(path) < limit)
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
void ctl_check_hung(struct ctl *x, long long now)
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
	/* Not one answer since this Squid started (or was adopted): it may still be starting. */
	bool starting = h.last_ok_ms < h.since_ms || h.last_ok_ms < x->squid.started_ms;
	long long bound = starting ? x->start_ms : x->hang_ms;
	if (now - from < bound)
		return;
	log_error("squid: pid %d answered no HTTP for %lld ms (bound %lld ms%s): %s", (int)x->squid.pid, now - from,
	          bound, starting ? ", none since it started" : "", h.error[0] ? h.error : "no answer");
	x->hung_pid = x->squid.pid;
	sup_event(&x->squid, SUP_EV_HUNG, now);
}

/* Sidecar mode: Squid belongs to another container. Notice when its pid changes
 * (it was restarted) and tell it about a generation it has not loaded yet. */
void ctl_watch_sidecar(struct ctl *x)
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
		x->sidecar_started = ctl_wall_now();
	}
	x->sidecar_pid = pid;
}

/* ---- orphans of a previous controller -------------------------------------------------- */

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

/* A controller that was killed (kill -9, a crash, systemd KillMode=process) leaves its Squid
 * and stunnel serving. The next controller on the same state directory adopts them instead
 * of replacing them (agents would meet a Squid start): the same pid-file and command-line
 * check as ctl_replace_orphan decides that a process is ours, then a pidfd watches it (it is
 * not our child: no SIGCHLD, no exit status) and every signal goes through it. Returns
 * whether it adopted; when pidfd_open fails the orphan is replaced as before. */
bool ctl_adopt_orphan(struct sup_child *c, const char *pidfile, const char *conf, int replace_sig)
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
bool ctl_same_squid_conf(struct ctl *x, unsigned long long gen)
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
