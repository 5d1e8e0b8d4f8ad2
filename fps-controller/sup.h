/*
 * sup: supervision of one child program (Squid, stunnel) as a state machine:
 * start it, restart it with exponential backoff when it dies, stop it with
 * SIGTERM then SIGKILL. Transitions live in one table (sup.c), s6-supervise style.
 * The caller owns the event loop: it reports exits and asks when the next timer is.
 * Every signal the caller sends a supervised process goes through an event here, so
 * the table knows a planned exit (a restart it asked for) from a death: only deaths
 * count in `restarts` and meet the backoff. A process the controller did not start
 * (a previous controller's Squid) can be adopted: watched through a pidfd.
 */
#ifndef FPS_SUP_H
#define FPS_SUP_H

#include <stdbool.h>
#include <sys/types.h>

#define SUP_MAX_ARGS 16

enum sup_state { SUP_STOPPED, SUP_RUNNING, SUP_BACKOFF, SUP_STOPPING, SUP_STATE_COUNT };
/* SUP_EV_HUNG: the child runs but does not do its job (Squid answers no HTTP): SIGKILL it,
 * and its exit restarts it like any crash.
 * SUP_EV_RESTART: a planned restart (new argv, e.g. a workers change): SIGTERM, and the
 * exit that follows starts the child again at once, counted nowhere.
 * SUP_EV_RELOAD: SIGHUP (Squid re-reads its config, stunnel its config and certificates).
 * SUP_EV_REOPEN: SIGUSR1 (Squid reopens its logs).
 * SUP_EV_HURRY: while stopping, SIGINT (Squid: "shut down as soon as possible").
 * SUP_EV_STOP while a restart is under way turns it into a stop. */
enum sup_event {
	SUP_EV_START,
	SUP_EV_EXIT,
	SUP_EV_TIMER,
	SUP_EV_STOP,
	SUP_EV_HUNG,
	SUP_EV_RESTART,
	SUP_EV_RELOAD,
	SUP_EV_REOPEN,
	SUP_EV_HURRY,
	SUP_EV_COUNT
};

struct sup_child {
	char name[32];
	char *argv[SUP_MAX_ARGS + 1];
	enum sup_state state;
	pid_t pid;
	long long started_ms;  /* when the current process started (monotonic) */
	long long deadline_ms; /* backoff end or kill deadline; 0 = none */
	int backoff_ms;
	/* Asked before every start: non-zero keeps the child down and retries after
	 * SUP_GATE_RETRY_MS, at a fixed pace and without counting a restart (a port
	 * another program holds is not a crash of ours). Optional. */
	int (*gate)(struct sup_child *c, void *arg);
	void *gate_arg;
	bool gated; /* the last start attempt was refused by the gate */
	int out_fd; /* the child's stdout and stderr; -1 (sup_init) = ours */
	/* A listening socket for the next start (set by the gate): handed to the child as fd 3
	 * (LISTEN_FDS) and closed here once it is started. -1 = none. */
	int listen_fd;
	unsigned restarts;   /* unplanned exits that led to a restart */
	unsigned hung_kills; /* SIGKILLs for not answering (SUP_EV_HUNG) */
	int last_status;     /* wait status of the last exit */
	int stop_grace_ms;   /* SIGTERM to SIGKILL */
	bool want_up;        /* stopping for a planned restart: start again on exit */
	unsigned planned;    /* planned restarts (SUP_EV_RESTART) done */
	/* An adopted process (sup_adopt) is not our child: no SIGCHLD, no waitpid. Its exit
	 * is seen on pidfd (readable when it ends), fed with sup_adopted_exit(). */
	bool adopted;
	int pidfd; /* -1 = none */
};

#define SUP_GATE_RETRY_MS 2000

void sup_init(struct sup_child *c, const char *name, char *const argv[], int stop_grace_ms);
void sup_free(struct sup_child *c);
/* Replaces the argv used for the next start (e.g. a new config path). */
void sup_set_argv(struct sup_child *c, char *const argv[]);
void sup_event(struct sup_child *c, enum sup_event ev, long long now_ms);
/* The child exited with status: feed SUP_EV_EXIT if pid is ours; returns whether it was. */
bool sup_reap(struct sup_child *c, pid_t pid, int status, long long now_ms);
/* Takes over a running process that is not our child (a previous controller's Squid):
 * state RUNNING, signalled through pidfd (pidfd_open, owned by c from now on). */
void sup_adopt(struct sup_child *c, pid_t pid, int pidfd, long long now_ms);
/* The adopted process's pidfd became readable (it ended): feeds SUP_EV_EXIT with an
 * unknown status. Returns whether it was ours. */
bool sup_adopted_exit(struct sup_child *c, long long now_ms);
/* Feeds SUP_EV_TIMER if the child's deadline has passed. */
void sup_tick(struct sup_child *c, long long now_ms);
long long sup_deadline(const struct sup_child *c); /* 0 = none */
const char *sup_state_name(enum sup_state s);
const char *sup_event_name(enum sup_event ev);
long long sup_now_ms(void);

#endif
