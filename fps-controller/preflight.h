/*
 * preflight: what must hold before Squid or stunnel is started, checked by the
 * controller so that a child that could only exit at once is not started, and the
 * reason is one line naming the path or address, instead of "pid N died (exit code 1)".
 *   - Squid drops to its own user (proxy) after binding: every file it or its helpers
 *     read must be reachable by that user (a checkout under /root, mode 0700, is not).
 *   - The port it will listen on must be free (another program on 8080).
 */
#ifndef FPS_PREFLIGHT_H
#define FPS_PREFLIGHT_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define PF_READ  1 /* read a file, list a directory */
#define PF_WRITE 2 /* create files in a directory */
#define PF_EXEC  4 /* execute a file, enter a directory */

struct pf_path {
	const char *path;
	int need;         /* PF_* bits */
	const char *role; /* what it is for, e.g. "the state directory" */
};

/* Checks, as uid/gid with the user's supplementary groups (the kernel decides: a
 * child process switches to the user and calls access()), that every path grants
 * what it needs. Paths that do not exist are skipped when optional is set. Returns
 * 0 when all pass; else -1 with why = one line naming the path, the user, the
 * missing permission and the directory or file that denies it. */
int pf_user_access(uid_t uid, gid_t gid, const struct pf_path *paths, size_t n, bool optional, char *why, size_t len);

/* Whether uid/gid may execute path (one path, no message). */
bool pf_user_can_exec(uid_t uid, gid_t gid, const char *path);

/* Whether addr:port can be bound for listening now (SO_REUSEADDR, as Squid and
 * stunnel bind). Returns 0 if so; else -1 with why naming the address and, when
 * /proc tells, the process that holds it: "127.0.0.1:8080 is already in use by pid
 * 1234 (nc)". */
int pf_port_free(const char *addr, int port, char *why, size_t len);

/* Connections on local TCP port still open on this host's side (ESTABLISHED or
 * CLOSE_WAIT), from /proc/net/tcp and tcp6: a stopping Squid's clients. */
int pf_port_clients(int port);

/* The first line of a log at or after offset that carries FATAL, else the first with
 * ERROR (Squid's cache.log), without its timestamp and with control characters as '?';
 * "" if none. */
void pf_first_error_line(const char *path, long long offset, char *line, size_t len);

#endif
