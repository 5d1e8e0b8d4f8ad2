/*
 * proc: starting programs with execve and an argv (never through a shell), and
 * running a short command to completion with its output captured and a deadline.
 */
#ifndef FPS_PROC_H
#define FPS_PROC_H

#include <stddef.h>
#include <sys/types.h>

/* Forks and execs argv[0] (a path) with argv; stdin from /dev/null, stdout and
 * stderr inherited (so children's logs land in ours). Returns the pid or -1. */
pid_t proc_spawn(char *const argv[]);

/* Runs argv to completion, capturing stdout+stderr (up to cap bytes) into a
 * malloc'd *out. Kills it after timeout_ms. Returns the wait status or -1. */
int proc_run(char *const argv[], int timeout_ms, char **out, size_t cap);

#endif
