/*
 * preflight: checks before a child starts (see preflight.h). Permissions are asked
 * of the kernel as the child's user, not computed from mode bits, so ACLs, group
 * membership and read-only mounts count exactly as they will for Squid.
 */
#include "preflight.h"

#include <arpa/inet.h>
#include <errno.h>
#include <grp.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "procsock.h"

#define PF_MAX_GROUPS 64

struct pf_result {
	int index;  /* which path failed, -1 = none */
	int prefix; /* length of the path prefix that denies (== strlen(path): the path itself) */
	int bit;    /* the PF_* permission that is missing */
	int err;    /* errno of access() */
};

static int pf_amode(int bit)
{
	return bit == PF_READ ? R_OK : bit == PF_WRITE ? W_OK : X_OK;
}

/* In the child, after switching users: the first path and permission that fails. */
static struct pf_result pf_probe(const struct pf_path *paths, size_t n, const bool *skip)
{
	struct pf_result r = {-1, 0, 0, 0};
	for (size_t i = 0; i < n; i++) {
		if (skip[i])
			continue;
		const char *p = paths[i].path;
		size_t plen = strlen(p);
		char prefix[4096];
		if (plen >= sizeof(prefix))
			continue;
		/* Every directory on the way must let the user through. */
		for (size_t k = 1; k < plen; k++) {
			if (p[k] != '/')
				continue;
			memcpy(prefix, p, k);
			prefix[k] = '\0';
			if (access(prefix, X_OK) < 0)
				return (struct pf_result){(int)i, (int)k, PF_EXEC, errno};
		}
		for (int bit = PF_READ; bit <= PF_EXEC; bit <<= 1)
			if ((paths[i].need & bit) && access(p, pf_amode(bit)) < 0)
				return (struct pf_result){(int)i, (int)plen, bit, errno};
	}
	return r;
}

static const char *pf_verb(int bit, bool is_dir)
{
	if (bit == PF_EXEC)
		return is_dir ? "enter" : "execute";
	if (bit == PF_WRITE)
		return is_dir ? "create files in" : "write";
	return is_dir ? "list" : "read";
}

int pf_user_access(uid_t uid, gid_t gid, const struct pf_path *paths, size_t n, bool optional, char *why, size_t len)
{
	why[0] = '\0';
	if (n == 0)
		return 0;
	bool *skip = calloc(n, sizeof(bool));
	if (skip == NULL) {
		snprintf(why, len, "out of memory");
		return -1;
	}
	for (size_t i = 0; i < n; i++) {
		struct stat sb;
		skip[i] = paths[i].path == NULL || paths[i].path[0] == '\0' ||
		          (optional && stat(paths[i].path, &sb) < 0 && errno == ENOENT);
	}
	/* Everything the child needs is computed here: after fork() in a threaded
	 * process it may only make system calls. */
	char user[64];
	gid_t groups[PF_MAX_GROUPS];
	int ngroups = PF_MAX_GROUPS;
	struct passwd *pw = getpwuid(uid);
	snprintf(user, sizeof(user), "%s", pw ? pw->pw_name : "?");
	if (pw == NULL || getgrouplist(pw->pw_name, gid, groups, &ngroups) < 0) {
		groups[0] = gid;
		ngroups = 1;
	}
	if (pw == NULL)
		snprintf(user, sizeof(user), "uid %d", (int)uid);

	int fds[2];
	if (pipe(fds) < 0) {
		snprintf(why, len, "pipe: %s", strerror(errno));
		free(skip);
		return -1;
	}
	pid_t pid = fork();
	if (pid < 0) {
		snprintf(why, len, "fork: %s", strerror(errno));
		close(fds[0]);
		close(fds[1]);
		free(skip);
		return -1;
	}
	if (pid == 0) {
		close(fds[0]);
		struct pf_result r = {-2, 0, 0, 0};
		if (setgroups((size_t)ngroups, groups) == 0 && setgid(gid) == 0 && setuid(uid) == 0)
			r = pf_probe(paths, n, skip);
		ssize_t w = write(fds[1], &r, sizeof(r));
		_exit(w == (ssize_t)sizeof(r) ? 0 : 1);
	}
	close(fds[1]);
	struct pf_result r = {-2, 0, 0, 0};
	ssize_t got = read(fds[0], &r, sizeof(r));
	close(fds[0]);
	int st;
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	free(skip);
	if (got != (ssize_t)sizeof(r) || r.index == -2) {
		snprintf(why, len, "cannot check access as user %s (cannot switch to it)", user);
		return -1;
	}
	if (r.index < 0)
		return 0;

	const struct pf_path *p = &paths[r.index];
	char denier[4096];
	snprintf(denier, sizeof(denier), "%.*s", r.prefix, p->path);
	struct stat sb;
	char owner[160] = "";
	bool is_dir = false;
	if (stat(denier, &sb) == 0) {
		is_dir = S_ISDIR(sb.st_mode);
		struct passwd *opw = getpwuid(sb.st_uid);
		struct group *ogr = getgrgid(sb.st_gid);
		snprintf(owner, sizeof(owner), " (mode %04o, owner %s:%s)", (unsigned)(sb.st_mode & 07777),
		         opw ? opw->pw_name : "?", ogr ? ogr->gr_name : "?");
	}
	if ((size_t)r.prefix < strlen(p->path))
		snprintf(why, len, "user %s cannot enter %s%s, on the way to %s %s", user, denier, owner, p->role,
		         p->path);
	else if (r.err == ENOENT)
		snprintf(why, len, "%s %s does not exist", p->role, p->path);
	else
		snprintf(why, len, "user %s cannot %s %s %s%s: %s", user, pf_verb(r.bit, is_dir), p->role, p->path,
		         owner, strerror(r.err));
	return -1;
}

bool pf_user_can_exec(uid_t uid, gid_t gid, const char *path)
{
	char why[16];
	struct pf_path p = {path, PF_EXEC, "the program"};
	return pf_user_access(uid, gid, &p, 1, false, why, sizeof(why)) == 0;
}

/* ---- ports ------------------------------------------------------------------------------ */

static bool pf_find_listener(const struct ps_sock *s, void *arg)
{
	if (s->state != PS_LISTEN)
		return true;
	*(unsigned long *)arg = s->ino;
	return false;
}

/* The inode of a listening TCP socket on port; 0 if none. */
static unsigned long pf_listen_inode(int port)
{
	unsigned long inode = 0;
	ps_port_each(port, pf_find_listener, &inode);
	return inode;
}

static bool pf_count_client(const struct ps_sock *s, void *arg)
{
	if (s->state == PS_ESTABLISHED || s->state == PS_CLOSE_WAIT)
		++*(int *)arg;
	return true;
}

int pf_port_clients(int port)
{
	int n = 0;
	ps_port_each(port, pf_count_client, &n);
	return n;
}

struct pf_owner {
	unsigned long inode;
	pid_t pid; /* 0 until found */
};

static bool pf_owner_fd(pid_t pid, int fd, unsigned long ino, void *arg)
{
	(void)fd;
	struct pf_owner *o = arg;
	if (ino != o->inode)
		return true;
	o->pid = pid;
	return false;
}

static bool pf_owner_pid(pid_t pid, void *arg)
{
	struct pf_owner *o = arg;
	ps_each_socket_fd(pid, pf_owner_fd, o);
	return o->pid == 0;
}

/* The process holding socket inode, as "pid N (comm)"; "" if /proc does not say. */
static void pf_socket_owner(unsigned long inode, char *out, size_t len)
{
	out[0] = '\0';
	struct pf_owner o = {inode, 0};
	ps_each_pid(pf_owner_pid, &o);
	if (o.pid == 0)
		return;
	char comm_path[64], comm[64] = "?";
	snprintf(comm_path, sizeof(comm_path), "/proc/%d/comm", (int)o.pid);
	FILE *cf = fopen(comm_path, "r");
	if (cf) {
		if (fgets(comm, sizeof(comm), cf))
			comm[strcspn(comm, "\n")] = '\0';
		fclose(cf);
	}
	snprintf(out, len, "pid %d (%s)", (int)o.pid, comm);
}

int pf_port_free(const char *addr, int port, char *why, size_t len)
{
	why[0] = '\0';
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof(ss));
	struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
	socklen_t sl;
	const char *a = addr && *addr ? addr : "0.0.0.0";
	bool v6 = false;
	if (inet_pton(AF_INET, a, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)port);
		sl = sizeof(*sin);
	} else if (inet_pton(AF_INET6, a, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)port);
		sl = sizeof(*sin6);
		v6 = true;
	} else {
		return 0; /* not a literal: Squid will say what it makes of it */
	}
	char where[96];
	snprintf(where, sizeof(where), "%s%s%s:%d", v6 ? "[" : "", a, v6 ? "]" : "", port);
	int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return 0;
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	int rc = bind(fd, (struct sockaddr *)&ss, sl);
	int err = errno;
	close(fd);
	if (rc == 0)
		return 0;
	if (err != EADDRINUSE) {
		snprintf(why, len, "cannot bind %s: %s", where, strerror(err));
		return -1;
	}
	char owner[128] = "";
	unsigned long inode = pf_listen_inode(port);
	if (inode)
		pf_socket_owner(inode, owner, sizeof(owner));
	snprintf(why, len, "%s is already in use%s%s", where, owner[0] ? " by " : "", owner);
	return -1;
}

/* ---- logs ------------------------------------------------------------------------------- */

static void pf_clean_line(const char *buf, const char *mark, char *line, size_t len)
{
	/* "2026/12/01 19:40:00| ERROR: ..." (or "kid1| ..."): drop the prefix. */
	const char *bar = strstr(buf, "| ");
	const char *start = bar && bar < mark ? bar + 2 : buf;
	size_t o = 0;
	for (const char *p = start; *p && *p != '\n' && o + 1 < len; p++)
		line[o++] = (unsigned char)*p < 0x20 || *p == 0x7f ? '?' : *p;
	line[o] = '\0';
}

void pf_first_error_line(const char *path, long long offset, char *line, size_t len)
{
	line[0] = '\0';
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return;
	if (offset > 0 && fseeko(f, (off_t)offset, SEEK_SET) < 0) {
		fclose(f);
		return;
	}
	/* The first FATAL says why Squid stopped; an ERROR only when there is none. */
	char buf[2048];
	while (fgets(buf, sizeof(buf), f)) {
		const char *m = strstr(buf, "FATAL");
		if (m) {
			pf_clean_line(buf, m, line, len);
			break;
		}
		if (line[0] == '\0' && (m = strstr(buf, "ERROR")) != NULL)
			pf_clean_line(buf, m, line, len);
	}
	fclose(f);
}
