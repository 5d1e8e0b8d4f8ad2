/*
 * ctl_drain: SIGTERM (docs/operations.md, "Stopping"): the agents' connections are drained
 * before Squid is told to stop, and a stopping Squid with no client left is hurried.
 */
#include "ctl_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fsio.h"
#include "handover.h"
#include "log.h"
#include "metrics.h"

#define DRAIN_QUIET_MS 2000 /* SIGTERM: how long Squid gets to finish its helper lookups */
#define DRAIN_MAX_MS   5000 /* SIGTERM: how long agents' connections get to close between requests */

/* Squid 5.7 always waits shutdown_lifetime + 1 s after SIGTERM (main.cc doShutdown
 * schedules its end with eventAdd, whether or not a client is left): agents could not
 * connect for 3 s of every restart. Its clients are closed as soon as they are idle, so
 * once none is connected to the proxy port nothing is in flight: a second SIGTERM makes
 * Squid finish after 1 s ("shutdown as soon as possible"). A client still downloading
 * keeps the full shutdown_lifetime. Returns the next time to look, 0 when done. */
long long ctl_hurry_squid(struct ctl *x, long long now)
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
		off_t off = ctl_file_size(logpath);
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

/* SIGTERM: the drain (docs/operations.md, "Stopping"). Squid 5.7's own shutdown answers
 * requests it has not forwarded yet with 503 (FwdState.cc, ERR_SHUTTING_DOWN) and closes
 * idle connections at once, under a request that may be on its way. So Squid is not
 * signalled first: its listening sockets are shut down (handover.c), after which Squid
 * answers everything still on its connections normally, with "Connection: close", and
 * closes each one after its answer. Once none is left (or after DRAIN_MAX_MS: idle agents
 * and CONNECT tunnels), Squid gets SIGTERM. Returns the next time to look, 0 when Squid
 * has been told to stop. */
long long ctl_drain_begin(struct ctl *x, long long now, long long *until)
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

long long ctl_drain_step(struct ctl *x, long long now, long long until)
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
