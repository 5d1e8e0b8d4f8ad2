/*
 * sup: the supervision table. Every (state, event) pair that does something is
 * one entry in `actions`; anything else is ignored, which is the point: a stray
 * exit or timer can never start a second copy of a child.
 */
#include "sup.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fsio.h"
#include "log.h"
#include "proc.h"

#define BACKOFF_MIN_MS 250
#define BACKOFF_MAX_MS 30000
#define STABLE_RUN_MS  30000 /* a child that ran this long starts over at the minimum backoff */

long long sup_now_ms(void)
{
	return fsio_mono_ms();
}

const char *sup_state_name(enum sup_state s)
{
	static const char *const names[SUP_STATE_COUNT] = {"stopped", "running", "backoff", "stopping"};
	return (unsigned)s < SUP_STATE_COUNT ? names[s] : "?";
}

const char *sup_event_name(enum sup_event ev)
{
	static const char *const names[SUP_EV_COUNT] = {"start",   "exit",   "timer",  "stop", "hung",
	                                                "restart", "reload", "reopen", "hurry"};
	return (unsigned)ev < SUP_EV_COUNT ? names[ev] : "?";
}

typedef void (*sup_action)(struct sup_child *c, long long now);

/* Every signal to the supervised process: through its pidfd when it has one (an adopted
 * process; the number cannot have been reused while we hold the pidfd). */
static void sup_signal(struct sup_child *c, int sig)
{
	if (c->pid <= 0)
		return;
	if (c->pidfd >= 0 && pidfd_send_signal(c->pidfd, sig, NULL, 0) == 0)
		return;
	kill(c->pid, sig);
}

static void sup_forget(struct sup_child *c)
{
	c->pid = 0;
	c->adopted = false;
	if (c->pidfd >= 0)
		close(c->pidfd);
	c->pidfd = -1;
}

static void act_spawn(struct sup_child *c, long long now)
{
	if (c->gate && c->gate(c, c->gate_arg) != 0) {
		c->gated = true;
		c->state = SUP_BACKOFF;
		c->deadline_ms = now + SUP_GATE_RETRY_MS;
		return;
	}
	c->gated = false;
	c->want_up = false;
	pid_t pid = proc_spawn_listen(c->argv, c->out_fd, c->listen_fd);
	if (c->listen_fd >= 0) {
		/* Handed over: the child holds the socket; ours would keep a listener that nobody
		 * accepts from once the child is gone. */
		close(c->listen_fd);
		c->listen_fd = -1;
	}
	if (pid < 0) {
		log_error_errno("%s: cannot start %s", c->name, c->argv[0]);
		c->state = SUP_BACKOFF;
		c->deadline_ms = now + c->backoff_ms;
		return;
	}
	c->pid = pid;
	c->started_ms = now;
	c->deadline_ms = 0;
	c->state = SUP_RUNNING;
	log_info("%s: started pid %d (%s)", c->name, (int)pid, c->argv[0]);
}

static void describe_status(int status, char *buf, size_t len)
{
	if (status == -1)
		snprintf(buf, len, "status unknown: adopted, not our child");
	else if (WIFEXITED(status))
		snprintf(buf, len, "exit code %d", WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		snprintf(buf, len, "signal %d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
	else
		snprintf(buf, len, "status %d", status);
}

static void act_crashed(struct sup_child *c, long long now)
{
	char how[64];
	describe_status(c->last_status, how, sizeof(how));
	if (now - c->started_ms >= STABLE_RUN_MS)
		c->backoff_ms = BACKOFF_MIN_MS;
	log_error("%s: pid %d died (%s) after %lld ms; restarting in %d ms", c->name, (int)c->pid, how,
	          now - c->started_ms, c->backoff_ms);
	sup_forget(c);
	c->restarts++;
	c->state = SUP_BACKOFF;
	c->deadline_ms = now + c->backoff_ms;
	c->backoff_ms = c->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : c->backoff_ms * 2;
}

static void act_term(struct sup_child *c, long long now)
{
	log_info("%s: stopping pid %d (SIGTERM)", c->name, (int)c->pid);
	c->want_up = false;
	sup_signal(c, SIGTERM);
	c->state = SUP_STOPPING;
	c->deadline_ms = now + c->stop_grace_ms;
}

static void act_restart(struct sup_child *c, long long now)
{
	log_info("%s: restarting pid %d as planned (SIGTERM; started again when it has exited)", c->name, (int)c->pid);
	sup_signal(c, SIGTERM);
	c->want_up = true;
	c->state = SUP_STOPPING;
	c->deadline_ms = now + c->stop_grace_ms;
}

static void act_reload(struct sup_child *c, long long now)
{
	(void)now;
	sup_signal(c, SIGHUP);
}

static void act_reopen(struct sup_child *c, long long now)
{
	(void)now;
	sup_signal(c, SIGUSR1);
}

/* SIGINT: Squid reads it as a shutdown without shutdown_lifetime, also when it comes
 * together with the SIGTERM (two SIGTERMs in one event-loop pass count as one). */
static void act_hurry(struct sup_child *c, long long now)
{
	(void)now;
	sup_signal(c, SIGINT);
}

/* A stop asked while a planned restart is under way: it stays down. */
static void act_cancel_restart(struct sup_child *c, long long now)
{
	(void)now;
	if (c->want_up)
		log_info("%s: pid %d is stopping: it will not be started again", c->name, (int)c->pid);
	c->want_up = false;
}

static void act_kill(struct sup_child *c, long long now)
{
	log_warn("%s: pid %d still running %d ms after SIGTERM; SIGKILL", c->name, (int)c->pid, c->stop_grace_ms);
	sup_signal(c, SIGKILL);
	c->deadline_ms = now + 5000;
}

static void act_hung(struct sup_child *c, long long now)
{
	(void)now;
	log_error("%s: pid %d is not answering: SIGKILL; it is restarted when it has exited", c->name, (int)c->pid);
	sup_signal(c, SIGKILL);
	c->hung_kills++;
}

static void act_stopped(struct sup_child *c, long long now)
{
	bool again = c->want_up;
	if (c->pid)
		log_info("%s: pid %d stopped%s", c->name, (int)c->pid, again ? " (planned restart)" : "");
	sup_forget(c);
	c->state = SUP_STOPPED;
	c->deadline_ms = 0;
	c->want_up = false;
	if (again) {
		c->planned++;
		act_spawn(c, now);
	}
}

static const sup_action actions[SUP_STATE_COUNT][SUP_EV_COUNT] = {
    [SUP_STOPPED] = {[SUP_EV_START] = act_spawn},
    [SUP_RUNNING] = {[SUP_EV_EXIT] = act_crashed,
                     [SUP_EV_STOP] = act_term,
                     [SUP_EV_HUNG] = act_hung,
                     [SUP_EV_RESTART] = act_restart,
                     [SUP_EV_RELOAD] = act_reload,
                     [SUP_EV_REOPEN] = act_reopen},
    [SUP_BACKOFF] = {[SUP_EV_TIMER] = act_spawn, [SUP_EV_STOP] = act_stopped, [SUP_EV_RESTART] = act_spawn},
    [SUP_STOPPING] = {[SUP_EV_EXIT] = act_stopped,
                      [SUP_EV_TIMER] = act_kill,
                      [SUP_EV_STOP] = act_cancel_restart,
                      [SUP_EV_HURRY] = act_hurry},
};

void sup_event(struct sup_child *c, enum sup_event ev, long long now_ms)
{
	sup_action a = actions[c->state][ev];
	if (a)
		a(c, now_ms);
}

static void argv_free(struct sup_child *c)
{
	for (int i = 0; c->argv[i]; i++) {
		free(c->argv[i]);
		c->argv[i] = NULL;
	}
}

void sup_set_argv(struct sup_child *c, char *const argv[])
{
	argv_free(c);
	for (int i = 0; i < SUP_MAX_ARGS && argv[i]; i++)
		c->argv[i] = strdup(argv[i]);
}

void sup_init(struct sup_child *c, const char *name, char *const argv[], int stop_grace_ms)
{
	memset(c, 0, sizeof(*c));
	snprintf(c->name, sizeof(c->name), "%s", name);
	c->backoff_ms = BACKOFF_MIN_MS;
	c->stop_grace_ms = stop_grace_ms;
	c->out_fd = -1;
	c->listen_fd = -1;
	c->pidfd = -1;
	sup_set_argv(c, argv);
}

void sup_free(struct sup_child *c)
{
	argv_free(c);
	if (c->pidfd >= 0)
		close(c->pidfd);
	c->pidfd = -1;
}

void sup_adopt(struct sup_child *c, pid_t pid, int pidfd, long long now_ms)
{
	if (c->pidfd >= 0)
		close(c->pidfd);
	c->pid = pid;
	c->pidfd = pidfd;
	c->adopted = true;
	c->state = SUP_RUNNING;
	c->started_ms = now_ms;
	c->deadline_ms = 0;
	c->want_up = false;
	c->gated = false;
	log_info("%s: adopted pid %d (not our child: watched through a pidfd)", c->name, (int)pid);
}

bool sup_adopted_exit(struct sup_child *c, long long now_ms)
{
	if (!c->adopted || c->pid <= 0)
		return false;
	c->last_status = -1; /* not our child: its exit status is its parent's to read */
	sup_event(c, SUP_EV_EXIT, now_ms);
	return true;
}

bool sup_reap(struct sup_child *c, pid_t pid, int status, long long now_ms)
{
	if (pid <= 0 || pid != c->pid)
		return false;
	c->last_status = status;
	sup_event(c, SUP_EV_EXIT, now_ms);
	return true;
}

void sup_tick(struct sup_child *c, long long now_ms)
{
	if (c->deadline_ms && now_ms >= c->deadline_ms)
		sup_event(c, SUP_EV_TIMER, now_ms);
}

long long sup_deadline(const struct sup_child *c)
{
	return c->deadline_ms;
}
