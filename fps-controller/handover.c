/*
 * handover: joining and leaving the agents' port (see handover.h). Everything here reads
 * /proc: the sockets on a port (/proc/net/tcp, tcp6), which process holds which socket
 * (/proc/PID/fd), who a holder is (comm, cmdline, status).
 */
#include "handover.h"

#include <arpa/inet.h>
#include <errno.h>
#include <linux/filter.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "procsock.h"

#define HO_MAX_SOCKS 4096 /* inodes on one port: listeners, or an instance's agents */
#define HO_MAX_PIDS  256  /* an SMP Squid: master, workers, their helpers */
#define HO_QUEUE_MS  3000 /* how long Squid gets to accept what its queue holds */

static bool ho_has_ino(const struct ps_sock *s, size_t n, unsigned long ino)
{
	for (size_t i = 0; i < n; i++)
		if (s[i].ino == ino)
			return true;
	return false;
}

static pid_t ho_ppid(long pid)
{
	char path[64], buf[512];
	snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return 0;
	size_t k = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[k] = '\0';
	const char *close_paren = strrchr(buf, ')'); /* comm may hold spaces and parentheses */
	int ppid = 0;
	if (close_paren == NULL || sscanf(close_paren + 1, " %*c %d", &ppid) != 1)
		return 0;
	return (pid_t)ppid;
}

struct ho_tree_walk {
	pid_t *out;
	size_t n, max;
};

static bool ho_tree_add(pid_t p, void *arg)
{
	struct ho_tree_walk *w = arg;
	pid_t pp = ho_ppid(p);
	bool known = false, parent = false;
	for (size_t i = 0; i < w->n; i++) {
		known |= w->out[i] == p;
		parent |= w->out[i] == pp;
	}
	if (parent && !known && pp != 0)
		w->out[w->n++] = p;
	return w->n < w->max;
}

/* pid and its descendants (two levels: an SMP master's workers and their helpers). */
static size_t ho_tree(pid_t pid, pid_t *out, size_t max)
{
	struct ho_tree_walk w = {out, 0, max};
	out[w.n++] = pid;
	for (int level = 0; level < 2 && w.n < max; level++) {
		size_t have = w.n;
		ps_each_pid(ho_tree_add, &w);
		if (w.n == have)
			break;
	}
	return w.n;
}

struct ho_fd_walk {
	const struct ps_sock *socks;
	size_t n;
	void (*fn)(pid_t pid, int fd, unsigned long ino, void *arg);
	void *arg;
};

static bool ho_fd_match(pid_t pid, int fd, unsigned long ino, void *arg)
{
	struct ho_fd_walk *w = arg;
	if (ho_has_ino(w->socks, w->n, ino))
		w->fn(pid, fd, ino, w->arg);
	return true;
}

/* Calls fn(pid, fd, ino, arg) for every descriptor of pid that is one of the sockets. */
static void ho_each_fd(pid_t pid, const struct ps_sock *socks, size_t n,
                       void (*fn)(pid_t pid, int fd, unsigned long ino, void *arg), void *arg)
{
	struct ho_fd_walk w = {socks, n, fn, arg};
	ps_each_socket_fd(pid, ho_fd_match, &w);
}

static void ho_count(pid_t pid, int fd, unsigned long ino, void *arg)
{
	(void)pid, (void)fd, (void)ino;
	++*(int *)arg;
}

int ho_clients(pid_t pid, int port)
{
	static struct ps_sock socks[HO_MAX_SOCKS * 4];
	size_t n =
	    ps_port_sockets(port, 1u << PS_ESTABLISHED | 1u << PS_CLOSE_WAIT, socks, sizeof(socks) / sizeof(socks[0]));
	if (n == 0)
		return 0;
	/* The process tree is looked up once a second: the drain asks every 50 ms, and a walk
	 * of all of /proc costs more than the answer. */
	static pid_t tree[HO_MAX_PIDS], tree_of;
	static size_t np;
	static time_t tree_at;
	time_t now = time(NULL);
	if (tree_of != pid || now != tree_at) {
		np = ho_tree(pid, tree, HO_MAX_PIDS);
		tree_of = pid;
		tree_at = now;
	}
	int count = 0;
	for (size_t i = 0; i < np; i++)
		ho_each_fd(tree[i], socks, n, ho_count, &count);
	return count;
}

int ho_migrate_req(void)
{
	FILE *f = fopen("/proc/sys/net/ipv4/tcp_migrate_req", "r");
	if (f == NULL)
		return -1;
	int v = -1;
	if (fscanf(f, "%d", &v) != 1)
		v = -1;
	fclose(f);
	return v;
}

/* ---- joining: who holds the port ------------------------------------------------------- */

struct ho_holders {
	pid_t pids[64];
	size_t n;
	const struct ps_sock *socks; /* the port's listeners */
	size_t nsocks;
};

static void ho_note_holder(pid_t pid, int fd, unsigned long ino, void *arg)
{
	(void)fd, (void)ino;
	struct ho_holders *h = arg;
	for (size_t i = 0; i < h->n; i++)
		if (h->pids[i] == pid)
			return;
	if (h->n < sizeof(h->pids) / sizeof(h->pids[0]))
		h->pids[h->n++] = pid;
}

static bool ho_note_holders(pid_t pid, void *arg)
{
	struct ho_holders *h = arg;
	if (pid != getpid())
		ho_each_fd(pid, h->socks, h->nsocks, ho_note_holder, h);
	return true;
}

/* The comm of pid ("?" when /proc does not say). */
static void ho_comm(pid_t pid, char *out, size_t len)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/comm", (int)pid);
	snprintf(out, len, "?");
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return;
	if (fgets(out, (int)len, f))
		out[strcspn(out, "\n")] = '\0';
	fclose(f);
}

/* Whether pid's effective uid is uid (/proc/PID/status). */
static bool ho_euid_is(pid_t pid, uid_t uid)
{
	char path[64], line[256];
	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return false;
	bool same = false;
	while (fgets(line, sizeof(line), f)) {
		unsigned r, eff;
		if (sscanf(line, "Uid: %u %u", &r, &eff) == 2) {
			same = (uid_t)eff == uid;
			break;
		}
	}
	fclose(f);
	return same;
}

/* An FPS Squid running as uid: program "squid", a command line naming a file
 * .../current/squid.conf (what fps-controller starts Squid with), effective uid. */
static bool ho_is_fps_squid(pid_t pid, uid_t uid)
{
	char path[64], buf[8192];
	ho_comm(pid, buf, sizeof(buf));
	if (strcmp(buf, "squid") != 0)
		return false;
	snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return false;
	size_t k = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[k] = '\0';
	bool conf = false;
	for (size_t i = 0; i < k; i += strlen(buf + i) + 1) {
		size_t l = strlen(buf + i);
		if (l > 19 && strcmp(buf + i + l - 19, "/current/squid.conf") == 0)
			conf = true;
	}
	if (!conf)
		return false;
	return ho_euid_is(pid, uid);
}

/* A test bind with SO_REUSEPORT, as Squid binds with worker-queues: the kernel says
 * whether the group accepts one more socket of ours (same owner, all with the option). */
static bool ho_reuseport_bind(const char *addr, int port)
{
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof(ss));
	struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
	socklen_t sl;
	const char *a = addr && *addr ? addr : "0.0.0.0";
	if (inet_pton(AF_INET, a, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)port);
		sl = sizeof(*sin);
	} else if (inet_pton(AF_INET6, a, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)port);
		sl = sizeof(*sin6);
	} else {
		return false;
	}
	int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return false;
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
	bool ok = bind(fd, (struct sockaddr *)&ss, sl) == 0;
	close(fd);
	return ok;
}

/* The tunnel client's port is held by an fps-controller (which binds it and hands it to its
 * stunnel, tunnel_listen) or that stunnel, running as uid. */
static bool ho_is_fps_tunnel(pid_t pid, uid_t uid)
{
	char comm[64];
	ho_comm(pid, comm, sizeof(comm));
	if (strcmp(comm, "fps-controller") != 0 && strcmp(comm, "stunnel4") != 0 && strcmp(comm, "stunnel") != 0)
		return false;
	return ho_euid_is(pid, uid);
}

static int ho_joinable(const char *addr, int port, uid_t uid, bool (*ours)(pid_t, uid_t), const char *what, char *who,
                       size_t len)
{
	who[0] = '\0';
	static struct ps_sock socks[HO_MAX_SOCKS];
	size_t n = ps_port_sockets(port, 1u << PS_LISTEN, socks, HO_MAX_SOCKS);
	if (n == 0)
		return 0;
	struct ho_holders h = {.n = 0, .socks = socks, .nsocks = n};
	ps_each_pid(ho_note_holders, &h);
	if (h.n == 0) {
		/* No process we can see holds the port: it lives in another pid namespace, as the
		 * other pod of a DaemonSet's rolling update does (hostNetwork shares the node's
		 * network, each pod keeps its own pid namespace). Its command line cannot be read;
		 * what is left is what the kernel enforces: a SO_REUSEPORT bind joins only a group
		 * whose sockets all set the option and belong to the same uid as ours. */
		if (!ho_reuseport_bind(addr, port))
			return 0;
		snprintf(who, len,
		         "a listener of uid %u in another pid namespace (another FPS instance's %s, as a second pod on "
		         "this node)",
		         socks[0].uid, what);
		return 1;
	}
	for (size_t i = 0; i < h.n; i++)
		if (!ours(h.pids[i], uid))
			return 0;
	if (!ho_reuseport_bind(addr, port))
		return 0;
	char comm[64];
	ho_comm(h.pids[0], comm, sizeof(comm));
	snprintf(who, len, "pid %d (%s)", (int)h.pids[0], comm);
	return 1;
}

int ho_port_joinable(const char *addr, int port, uid_t uid, char *who, size_t len)
{
	return ho_joinable(addr, port, uid, ho_is_fps_squid, "Squid", who, len);
}

int ho_tunnel_port_joinable(int port, char *who, size_t len)
{
	return ho_joinable("127.0.0.1", port, geteuid(), ho_is_fps_tunnel, "stunnel client", who, len);
}

/* ---- leaving: stop accepting ----------------------------------------------------------- */

struct ho_taken {
	int fds[64];
	unsigned long inos[64];
	size_t n;
	int pidfd;
	int err; /* errno of the first pidfd_getfd that failed */
};

static void ho_take(pid_t pid, int fd, unsigned long ino, void *arg)
{
	(void)pid;
	struct ho_taken *t = arg;
	if (t->err || t->n >= sizeof(t->fds) / sizeof(t->fds[0]))
		return;
	int dup = pidfd_getfd(t->pidfd, fd, 0);
	if (dup < 0) {
		t->err = errno;
		return;
	}
	t->fds[t->n] = dup;
	t->inos[t->n++] = ino;
}

/* Drops pure SYNs (SYN without ACK): the offset is the TCP header's, which is where a
 * socket filter on a TCP socket starts (tcp_filter runs after the IP header is pulled).
 * Completing handshakes (their ACK) still reach the queue. */
static int ho_drop_syns(int fd)
{
	struct sock_filter code[] = {
	    BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 13),          /* TCP flags */
	    BPF_STMT(BPF_ALU | BPF_AND | BPF_K, 0x12),       /* SYN | ACK */
	    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0x02, 0, 1), /* SYN alone? */
	    BPF_STMT(BPF_RET | BPF_K, 0),                    /* drop */
	    BPF_STMT(BPF_RET | BPF_K, 0xffffffff),           /* keep */
	};
	struct sock_fprog prog = {.len = sizeof(code) / sizeof(code[0]), .filter = code};
	return setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof(prog));
}

static long long ho_mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static unsigned long ho_queued(const struct ho_taken *t, int port)
{
	static struct ps_sock socks[HO_MAX_SOCKS];
	size_t n = ps_port_sockets(port, 1u << PS_LISTEN, socks, HO_MAX_SOCKS);
	unsigned long q = 0;
	for (size_t i = 0; i < n; i++)
		for (size_t j = 0; j < t->n; j++)
			if (socks[i].ino == t->inos[j])
				q += socks[i].rxq;
	return q;
}

/* Step 1 of a drain for the process tree at pid on port; shut: shut the listening sockets
 * down at the end (Squid), or leave them to the process's own exit (stunnel: it would
 * spin on a listener shut down under it, and is stopped right after). */
static int ho_quiesce(pid_t pid, int port, bool shut, const char *what, char *why, size_t len)
{
	why[0] = '\0';
	static struct ps_sock socks[HO_MAX_SOCKS];
	size_t n = ps_port_sockets(port, 1u << PS_LISTEN, socks, HO_MAX_SOCKS);
	pid_t tree[HO_MAX_PIDS];
	size_t np = ho_tree(pid, tree, HO_MAX_PIDS);
	struct ho_taken t = {.n = 0, .err = 0};
	for (size_t i = 0; i < np && !t.err; i++) {
		t.pidfd = pidfd_open(tree[i], 0);
		if (t.pidfd < 0)
			continue; /* gone meanwhile */
		ho_each_fd(tree[i], socks, n, ho_take, &t);
		close(t.pidfd);
	}
	if (t.err) {
		snprintf(why, len, "cannot take %s's listening sockets (pidfd_getfd: %s)", what, strerror(t.err));
		for (size_t i = 0; i < t.n; i++)
			close(t.fds[i]);
		return -1;
	}
	/* Other listeners on the port: a second instance's Squid. */
	size_t others = 0;
	for (size_t i = 0; i < n; i++) {
		bool ours = false;
		for (size_t j = 0; j < t.n; j++)
			ours |= socks[i].ino == t.inos[j];
		others += !ours;
	}
	if (!(others > 0 && ho_migrate_req() == 1) && t.n > 0) {
		for (size_t i = 0; i < t.n; i++)
			if (ho_drop_syns(t.fds[i]) < 0)
				log_warn_errno("handover: socket filter on %s's listening socket", what);
		/* By the clock: one look at /proc/net/tcp costs milliseconds with thousands of sockets. */
		long long end = ho_mono_ms() + HO_QUEUE_MS;
		while (ho_mono_ms() < end && ho_queued(&t, port) > 0)
			nanosleep(&(struct timespec){0, 20 * 1000000}, NULL);
	}
	for (size_t i = 0; i < t.n; i++) {
		if (shut && shutdown(t.fds[i], SHUT_RDWR) < 0)
			log_warn_errno("handover: shutdown of %s's listening socket", what);
		close(t.fds[i]);
	}
	return (int)t.n;
}

int ho_stop_accepting(pid_t pid, int port, char *why, size_t len)
{
	return ho_quiesce(pid, port, true, "Squid", why, len);
}

int ho_stop_queueing(pid_t pid, int port, char *why, size_t len)
{
	return ho_quiesce(pid, port, false, "stunnel", why, len);
}

/* ---- leaving: the drain configuration ------------------------------------------------------ */

char *ho_drain_conf(const char *conf)
{
	static const char head[] = "# DRAINING: the agents' http_port lines are left out (fps-controller handover.c)\n";
	size_t len = strlen(conf);
	char *out = malloc(sizeof(head) + len + 1);
	if (out == NULL)
		return NULL;
	size_t o = sizeof(head) - 1;
	memcpy(out, head, o);
	for (const char *p = conf; *p;) {
		const char *nl = strchr(p, '\n');
		size_t l = nl ? (size_t)(nl - p) + 1 : strlen(p);
		bool port = strncmp(p, "http_port", 9) == 0 && (p[9] == ' ' || p[9] == '\t');
		bool mgr = false;
		for (const char *q = p; port && q + 12 <= p + l; q++)
			if (strncmp(q, "name=fps_mgr", 12) == 0)
				mgr = true;
		if (!port || mgr) {
			memcpy(out + o, p, l);
			o += l;
		}
		p += l;
	}
	out[o] = '\0';
	return out;
}

/* ---- leaving: pausing the agents' input ------------------------------------------------------ */

struct ho_grab {
	struct ho_pause *p;
	size_t cap;
	int pidfd;
};

/* Squid is woken for a readable agent socket by epoll, and a TCP socket is readable once
 * SO_RCVLOWAT bytes wait: set to the most the kernel allows (half of tcp_rmem's maximum),
 * a request (a few hundred bytes) no longer wakes Squid. The kernel still receives and
 * acknowledges it, so the agent sees no loss and no retransmission, only a wait. */
static int ho_hold_input(int fd)
{
	int big = 1 << 30; /* the kernel caps it */
	return setsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &big, sizeof(big));
}

static void ho_grab_fd(pid_t pid, int fd, unsigned long ino, void *arg)
{
	(void)pid, (void)ino;
	struct ho_grab *g = arg;
	if (g->p->n >= g->cap) {
		size_t cap = g->cap ? g->cap * 2 : 256;
		int *fds = realloc(g->p->fds, cap * sizeof(int));
		if (fds == NULL)
			return;
		g->p->fds = fds;
		g->cap = cap;
	}
	int dup = pidfd_getfd(g->pidfd, fd, 0);
	if (dup < 0)
		return;
	if (ho_hold_input(dup) < 0) {
		close(dup);
		return;
	}
	g->p->fds[g->p->n++] = dup;
}

int ho_pause_input(pid_t pid, int port, struct ho_pause *p)
{
	p->fds = NULL;
	p->n = 0;
	static struct ps_sock socks[HO_MAX_SOCKS * 4];
	size_t n =
	    ps_port_sockets(port, 1u << PS_ESTABLISHED | 1u << PS_CLOSE_WAIT, socks, sizeof(socks) / sizeof(socks[0]));
	pid_t tree[HO_MAX_PIDS];
	size_t np = ho_tree(pid, tree, HO_MAX_PIDS);
	struct ho_grab g = {.p = p, .cap = 0};
	for (size_t i = 0; i < np && n > 0; i++) {
		g.pidfd = pidfd_open(tree[i], 0);
		if (g.pidfd < 0)
			continue;
		ho_each_fd(tree[i], socks, n, ho_grab_fd, &g);
		close(g.pidfd);
	}
	return (int)p->n;
}

void ho_resume_input(struct ho_pause *p)
{
	for (size_t i = 0; i < p->n; i++) {
		int one = 1; /* Linux's default; setting it wakes Squid at once if a request waits */
		setsockopt(p->fds[i], SOL_SOCKET, SO_RCVLOWAT, &one, sizeof(one));
		close(p->fds[i]);
	}
	free(p->fds);
	p->fds = NULL;
	p->n = 0;
}

long ho_acl_in_flight(const char *page)
{
	long total = 0;
	bool seen = false;
	for (const char *l = page; l && *l;) {
		long v;
		const char *q;
		if ((q = strstr(l, "requests sent:")) == l + strspn(l, " ") &&
		    sscanf(q, "requests sent: %ld", &v) == 1) {
			total += v;
			seen = true;
		} else if ((q = strstr(l, "replies received:")) == l + strspn(l, " ") &&
		           sscanf(q, "replies received: %ld", &v) == 1) {
			total -= v;
		} else if ((q = strstr(l, "queue length:")) == l + strspn(l, " ") &&
		           sscanf(q, "queue length: %ld", &v) == 1) {
			total += v;
		}
		const char *nl = strchr(l, '\n');
		l = nl ? nl + 1 : NULL;
	}
	return seen ? total : -1;
}
