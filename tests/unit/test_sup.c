/* sup: the supervision table with real children (/bin/sleep, /bin/sh): a death counts and
 * backs off, a planned restart (SUP_EV_RESTART) does not, every signal goes through an
 * event, a stop during a planned restart stays a stop, an adopted process is watched
 * through its pidfd. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/pidfd.h>
#include <sys/wait.h>
#include <time.h>

#include <cmocka.h>

#include "sup.h"

/* Waits for the supervised child to exit and feeds the exit, as the controller's loop does. */
static int reap(struct sup_child *c, long long now)
{
	int status = 0;
	pid_t pid = waitpid(c->pid, &status, 0);
	assert_int_equal(pid, c->pid);
	assert_true(sup_reap(c, pid, status, now));
	return status;
}

static void test_death_counts_and_backs_off(void **state)
{
	(void)state;
	char *argv[] = {"/bin/sleep", "30", NULL};
	struct sup_child c;
	sup_init(&c, "sleeper", argv, 2000);
	sup_event(&c, SUP_EV_START, 1000);
	assert_int_equal(c.state, SUP_RUNNING);
	pid_t first = c.pid;
	assert_true(first > 0);
	kill(first, SIGKILL); /* a crash: nobody asked for it */
	reap(&c, 1100);
	assert_int_equal(c.state, SUP_BACKOFF);
	assert_int_equal(c.restarts, 1);
	assert_int_equal(c.planned, 0);
	assert_int_equal(c.pid, 0);
	assert_true(sup_deadline(&c) > 1100);
	sup_tick(&c, sup_deadline(&c));
	assert_int_equal(c.state, SUP_RUNNING);
	assert_true(c.pid > 0 && c.pid != first);
	sup_event(&c, SUP_EV_STOP, 2000);
	assert_int_equal(c.state, SUP_STOPPING);
	reap(&c, 2100);
	assert_int_equal(c.state, SUP_STOPPED);
	assert_int_equal(c.restarts, 1);
	sup_free(&c);
}

static void test_planned_restart_is_not_a_death(void **state)
{
	(void)state;
	char *argv[] = {"/bin/sleep", "30", NULL};
	struct sup_child c;
	sup_init(&c, "sleeper", argv, 2000);
	sup_event(&c, SUP_EV_START, 1000);
	pid_t first = c.pid;
	char *argv2[] = {"/bin/sleep", "31", NULL};
	sup_set_argv(&c, argv2);
	sup_event(&c, SUP_EV_RESTART, 1500);
	assert_int_equal(c.state, SUP_STOPPING);
	int status = reap(&c, 1600);
	assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM);
	/* started again at once, with the new argv, counted as planned only */
	assert_int_equal(c.state, SUP_RUNNING);
	assert_true(c.pid > 0 && c.pid != first);
	assert_int_equal(c.restarts, 0);
	assert_int_equal(c.planned, 1);
	assert_int_equal(c.started_ms, 1600);
	assert_string_equal(c.argv[1], "31");
	assert_int_equal(sup_deadline(&c), 0);
	sup_event(&c, SUP_EV_STOP, 2000);
	reap(&c, 2100);
	assert_int_equal(c.state, SUP_STOPPED);
	assert_int_equal(c.restarts, 0);
	sup_free(&c);
}

static void test_stop_during_planned_restart_stays_down(void **state)
{
	(void)state;
	char *argv[] = {"/bin/sleep", "30", NULL};
	struct sup_child c;
	sup_init(&c, "sleeper", argv, 2000);
	sup_event(&c, SUP_EV_START, 1000);
	sup_event(&c, SUP_EV_RESTART, 1100);
	sup_event(&c, SUP_EV_STOP, 1150); /* the controller is told to shut down meanwhile */
	assert_int_equal(c.state, SUP_STOPPING);
	reap(&c, 1200);
	assert_int_equal(c.state, SUP_STOPPED);
	assert_int_equal(c.pid, 0);
	assert_int_equal(c.restarts, 0);
	assert_int_equal(c.planned, 0);
	sup_free(&c);
}

/* A shell that writes the name of each signal it gets to a file, and exits on TERM. */
static void test_reload_reopen_hurry_are_signals_through_the_table(void **state)
{
	(void)state;
	char path[] = "/tmp/fps-test-sup-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	close(fd);
	char script[512];
	snprintf(script, sizeof(script),
	         "trap 'echo HUP >> %s' HUP; trap 'echo USR1 >> %s' USR1; trap 'echo TERM >> %s' TERM; trap 'echo INT "
	         ">> %s' INT; "
	         "echo READY >> %s; while :; do sleep 0.02; done",
	         path, path, path, path, path);
	char *argv[] = {"/bin/sh", "-c", script, NULL};
	struct sup_child c;
	sup_init(&c, "trapper", argv, 5000);
	sup_event(&c, SUP_EV_START, 1000);
	const char *want[] = {"READY\n", "READY\nHUP\n", "READY\nHUP\nUSR1\n", "READY\nHUP\nUSR1\nTERM\n",
	                      "READY\nHUP\nUSR1\nTERM\nINT\n"};
	enum sup_event evs[] = {SUP_EV_START, SUP_EV_RELOAD, SUP_EV_REOPEN, SUP_EV_STOP, SUP_EV_HURRY};
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		if (i > 0)
			sup_event(&c, evs[i], 1000 + (long long)i);
		char got[128] = "";
		for (int tries = 0; tries < 500 && strcmp(got, want[i]) != 0; tries++) {
			FILE *f = fopen(path, "r");
			size_t n = f ? fread(got, 1, sizeof(got) - 1, f) : 0;
			got[n] = '\0';
			if (f)
				fclose(f);
			if (strcmp(got, want[i]) != 0)
				nanosleep(&(struct timespec){0, 10 * 1000000}, NULL);
		}
		assert_string_equal(got, want[i]);
		/* reload and reopen leave it running, as it was */
		assert_int_equal(c.state, i < 3 ? SUP_RUNNING : SUP_STOPPING);
	}
	kill(c.pid, SIGKILL); /* the trap keeps the shell alive: end it */
	reap(&c, 2000);
	assert_int_equal(c.state, SUP_STOPPED);
	assert_int_equal(c.restarts, 0);
	unlink(path);
	sup_free(&c);
}

static void test_events_that_do_not_apply_are_ignored(void **state)
{
	(void)state;
	char *argv[] = {"/bin/sleep", "30", NULL};
	struct sup_child c;
	sup_init(&c, "sleeper", argv, 2000);
	/* stopped: nothing but START does anything, no signal goes anywhere */
	for (int ev = 0; ev < SUP_EV_COUNT; ev++) {
		if (ev == SUP_EV_START)
			continue;
		sup_event(&c, (enum sup_event)ev, 1000);
		assert_int_equal(c.state, SUP_STOPPED);
		assert_int_equal(c.pid, 0);
	}
	assert_string_equal(sup_event_name(SUP_EV_RESTART), "restart");
	assert_string_equal(sup_state_name(SUP_STOPPING), "stopping");
	sup_free(&c);
}

/* A process that is not our child (here: forked, then handed over as if a previous
 * controller had started it) is adopted, signalled through its pidfd, and its end is a
 * death like any other. */
static void test_adopted_process_is_watched_through_its_pidfd(void **state)
{
	(void)state;
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		execl("/bin/sleep", "sleep", "30", (char *)NULL);
		_exit(127);
	}
	int pfd = pidfd_open(pid, 0);
	assert_true(pfd >= 0);
	char *argv[] = {"/bin/sleep", "30", NULL};
	struct sup_child c;
	sup_init(&c, "adoptee", argv, 2000);
	sup_adopt(&c, pid, pfd, 1000);
	assert_int_equal(c.state, SUP_RUNNING);
	assert_true(c.adopted);
	sup_event(&c, SUP_EV_STOP, 1100); /* SIGTERM through the pidfd */
	struct pollfd p = {.fd = c.pidfd, .events = POLLIN};
	assert_int_equal(poll(&p, 1, 5000), 1);
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid); /* the test is its real parent */
	assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM);
	assert_true(sup_adopted_exit(&c, 1200));
	assert_int_equal(c.state, SUP_STOPPED);
	assert_false(c.adopted);
	assert_int_equal(c.pidfd, -1);
	assert_false(sup_adopted_exit(&c, 1300));
	sup_free(&c);
}

/* A listening socket set by the gate is handed to the child as fd 3 with LISTEN_FDS=1 and
 * LISTEN_PID=<its pid> (how stunnel takes tunnel.local_port), and closed in the parent. */
static void test_listen_fd_is_handed_to_the_child_as_fd_3(void **state)
{
	(void)state;
	int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	assert_int_equal(bind(lfd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(lfd, 8), 0);
	char *argv[] = {"/bin/sh", "-c",
	                "test \"$LISTEN_FDS\" = 1 && test \"$LISTEN_PID\" = \"$$\" && test -S /proc/$$/fd/3", NULL};
	struct sup_child c;
	sup_init(&c, "activated", argv, 2000);
	c.listen_fd = lfd;
	sup_event(&c, SUP_EV_START, 1000);
	assert_int_equal(c.state, SUP_RUNNING);
	assert_int_equal(c.listen_fd, -1);
	assert_int_equal(fcntl(lfd, F_GETFD), -1); /* ours is closed: the child holds it */
	int status = reap(&c, 1100);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	sup_event(&c, SUP_EV_STOP, 1200); /* it exited: not started again */
	assert_int_equal(c.state, SUP_STOPPED);
	sup_free(&c);
	/* A child started without a socket gets none. */
	char *argv2[] = {"/bin/sh", "-c", "test -z \"$LISTEN_FDS$LISTEN_PID\"", NULL};
	sup_init(&c, "plain", argv2, 2000);
	sup_event(&c, SUP_EV_START, 2000);
	status = reap(&c, 2100);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	sup_event(&c, SUP_EV_STOP, 2200);
	sup_free(&c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_death_counts_and_backs_off),
	    cmocka_unit_test(test_planned_restart_is_not_a_death),
	    cmocka_unit_test(test_stop_during_planned_restart_stays_down),
	    cmocka_unit_test(test_reload_reopen_hurry_are_signals_through_the_table),
	    cmocka_unit_test(test_events_that_do_not_apply_are_ignored),
	    cmocka_unit_test(test_adopted_process_is_watched_through_its_pidfd),
	    cmocka_unit_test(test_listen_fd_is_handed_to_the_child_as_fd_3),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
