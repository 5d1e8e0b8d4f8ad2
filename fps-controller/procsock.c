/*
 * procsock: /proc's view of TCP sockets and their holders (see procsock.h).
 */
#include "procsock.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* One line of /proc/net/tcp or tcp6; false for the header or a line it cannot read. */
static bool ps_line(const char *line, int *lport, struct ps_sock *s)
{
	char local[128];
	unsigned p;
	unsigned long txq;
	/* sl local rem st tx:rx tr:when retrnsmt uid timeout inode */
	if (sscanf(line, " %*d: %127s %*s %x %lx:%lx %*s %*s %u %*u %lu", local, &s->state, &txq, &s->rxq, &s->uid,
	           &s->ino) != 6)
		return false;
	const char *colon = strrchr(local, ':');
	if (colon == NULL || sscanf(colon + 1, "%x", &p) != 1)
		return false;
	*lport = (int)p;
	return true;
}

void ps_port_each(int port, bool (*fn)(const struct ps_sock *s, void *arg), void *arg)
{
	const char *tables[] = {"/proc/net/tcp", "/proc/net/tcp6"};
	bool more = true;
	for (size_t t = 0; more && t < 2; t++) {
		FILE *f = fopen(tables[t], "r");
		if (f == NULL)
			continue;
		char line[512];
		struct ps_sock s;
		int lport;
		while (more && fgets(line, sizeof(line), f))
			if (ps_line(line, &lport, &s) && lport == port)
				more = fn(&s, arg);
		fclose(f);
	}
}

struct ps_collect {
	unsigned states;
	struct ps_sock *out;
	size_t n, max;
};

static bool ps_collect_one(const struct ps_sock *s, void *arg)
{
	struct ps_collect *c = arg;
	if (s->state < 32 && (c->states & (1u << s->state)))
		c->out[c->n++] = *s;
	return c->n < c->max;
}

size_t ps_port_sockets(int port, unsigned states, struct ps_sock *out, size_t max)
{
	struct ps_collect c = {states, out, 0, max};
	if (max > 0)
		ps_port_each(port, ps_collect_one, &c);
	return c.n;
}

void ps_each_pid(bool (*fn)(pid_t pid, void *arg), void *arg)
{
	DIR *d = opendir("/proc");
	if (d == NULL)
		return;
	struct dirent *de;
	bool more = true;
	while (more && (de = readdir(d)) != NULL) {
		char *end;
		long p = strtol(de->d_name, &end, 10);
		if (*end == '\0' && p > 0)
			more = fn((pid_t)p, arg);
	}
	closedir(d);
}

void ps_each_socket_fd(pid_t pid, bool (*fn)(pid_t pid, int fd, unsigned long ino, void *arg), void *arg)
{
	char dir[64];
	snprintf(dir, sizeof(dir), "/proc/%d/fd", (int)pid);
	DIR *d = opendir(dir);
	if (d == NULL)
		return;
	struct dirent *de;
	bool more = true;
	while (more && (de = readdir(d)) != NULL) {
		char link[320], target[64];
		snprintf(link, sizeof(link), "%s/%s", dir, de->d_name);
		ssize_t k = readlink(link, target, sizeof(target) - 1);
		if (k <= 0)
			continue;
		target[k] = '\0';
		unsigned long ino;
		if (sscanf(target, "socket:[%lu]", &ino) == 1)
			more = fn(pid, atoi(de->d_name), ino, arg);
	}
	closedir(d);
}
