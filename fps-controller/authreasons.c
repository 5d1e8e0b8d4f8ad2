/*
 * authreasons: fps-auth's table of recent refusals and its file (authreasons.h).
 */
#include "authreasons.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

void authr_record(struct authr_table *t, const char *user, const char *reason, double now)
{
	char clean[AUTHR_USER_MAX + 1];
	size_t n = 0;
	for (const unsigned char *p = (const unsigned char *)(user ? user : ""); *p && n < AUTHR_USER_MAX; p++)
		clean[n++] = (*p > 0x20 && *p < 0x7f) ? (char)*p : '?';
	clean[n] = '\0';
	if (n == 0)
		snprintf(clean, sizeof(clean), "-");
	size_t i;
	for (i = 0; i < t->n && strcmp(t->e[i].user, clean) != 0; i++)
		;
	if (i == t->n) {
		if (t->n < AUTHR_USERS) {
			t->n++;
		} else {
			/* forget the oldest */
			i = 0;
			for (size_t k = 1; k < t->n; k++)
				if (t->e[k].when < t->e[i].when)
					i = k;
		}
		snprintf(t->e[i].user, sizeof(t->e[i].user), "%s", clean);
	}
	t->e[i].reason = reason;
	t->e[i].when = now;
	t->dirty = true;
}

size_t authr_render(const struct authr_table *t, char *buf, size_t cap)
{
	size_t len = 0;
	for (size_t i = 0; i < t->n && len < cap; i++) {
		int w = snprintf(buf + len, cap - len, "R %.3f %s %s\n", t->e[i].when, t->e[i].reason, t->e[i].user);
		if (w < 0 || (size_t)w >= cap - len)
			break;
		len += (size_t)w;
	}
	return len;
}

int authr_write(struct authr_table *t, const char *dir, int pid)
{
	static char buf[AUTHR_USERS * (AUTHR_USER_MAX + 48)];
	size_t len = authr_render(t, buf, sizeof(buf));
	char path[4200], tmp[4300];
	snprintf(path, sizeof(path), "%s/auth-%d.reasons", dir, pid);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
	if (fd < 0)
		return -1;
	size_t off = 0;
	while (off < len) {
		ssize_t w = write(fd, buf + off, len - off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			int saved = errno;
			close(fd);
			unlink(tmp);
			errno = saved;
			return -1;
		}
		off += (size_t)w;
	}
	if (close(fd) < 0 || rename(tmp, path) < 0) {
		int saved = errno;
		unlink(tmp);
		errno = saved;
		return -1;
	}
	t->dirty = false;
	return 0;
}
