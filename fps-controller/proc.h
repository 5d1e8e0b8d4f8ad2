/*
 * proc: starting programs with execve and an argv (never through a shell), and
 * running a short command to completion with its output captured and a deadline.
 */
#ifndef FPS_PROC_H
#define FPS_PROC_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* Forks and execs argv[0] (a path) with argv; stdin from /dev/null, stdout and
 * stderr to out_fd, or inherited when it is -1 (so children's logs land in ours).
 * Returns the pid or -1. */
pid_t proc_spawn(char *const argv[], int out_fd);
/* The same, handing listen_fd (unless -1) to the program as a socket-activated listener,
 * the way systemd does (sd_listen_fds(3)): as fd 3, with LISTEN_FDS=1 and LISTEN_PID set
 * to the child's pid. stunnel takes it instead of binding its `accept` address. */
pid_t proc_spawn_listen(char *const argv[], int out_fd, int listen_fd);

/* Runs argv to completion, capturing stdout+stderr (up to cap bytes) into a
 * malloc'd *out. Kills it after timeout_ms. Returns the wait status or -1. */
int proc_run(char *const argv[], int timeout_ms, char **out, size_t cap);

/* The pid recorded in pidfile, if that process is alive (not a zombie) and its command
 * line contains needle (e.g. the config path only our own children are given); else 0. */
pid_t proc_pidfile_owner(const char *pidfile, const char *needle);
/* Whether pid exists and is not a zombie, without reaping it (a child that has exited but
 * is not yet reaped, e.g. while the loop is busy, is not running). */
bool proc_running(pid_t pid);
/* Sends sig to pid and waits up to grace_ms for it to be gone (reaping it if it is our
 * child), then SIGKILL and up to 5 s more. Returns 0 once it is gone, -1 if it is not. */
int proc_end(pid_t pid, int sig, int grace_ms);

#endif
