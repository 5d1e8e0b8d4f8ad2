/*
 * adminaddr: the admin address of this instance (see adminaddr.h): the primary or the spare
 * slot, recorded in the state directory with an instance id.
 */
#include "adminaddr.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "admin.h"
#include "fsio.h"
#include "log.h"

static char adminaddr_id[33];

const char *adminaddr_instance(void)
{
	return adminaddr_id;
}

static void adminaddr_new_id(void)
{
	unsigned char r[16];
	if (getrandom(r, sizeof(r), 0) != (ssize_t)sizeof(r)) {
		/* Not a secret, only distinct from the other instance's: time and pid will do. */
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		unsigned long long v = (unsigned long long)ts.tv_sec * 1000000007ULL ^ (unsigned long long)ts.tv_nsec ^
		                       ((unsigned long long)getpid() << 40);
		for (size_t i = 0; i < sizeof(r); i++)
			r[i] = (unsigned char)(v >> (8 * (i % 8))) ^ (unsigned char)i;
	}
	for (size_t i = 0; i < sizeof(r); i++)
		snprintf(adminaddr_id + 2 * i, 3, "%02x", r[i]);
}

int adminaddr_split(const char *spec, char *addr, size_t alen, int *port)
{
	const char *colon = spec ? strrchr(spec, ':') : NULL;
	if (colon == NULL || colon[1] == '\0')
		return -1;
	size_t n = (size_t)(colon - spec);
	const char *a = spec;
	if (n > 1 && a[0] == '[' && a[n - 1] == ']') {
		a++;
		n -= 2;
	}
	char *end;
	long p = strtol(colon + 1, &end, 10);
	if (n == 0 || n >= alen || *end != '\0' || p < 1 || p > 65535)
		return -1;
	snprintf(addr, alen, "%.*s", (int)n, a);
	*port = (int)p;
	return 0;
}

/* Where a local client reaches a server bound to addr: the wildcard means loopback. */
static const char *adminaddr_connect_to(const char *addr)
{
	if (addr == NULL || addr[0] == '\0' || strcmp(addr, "0.0.0.0") == 0)
		return "127.0.0.1";
	if (strcmp(addr, "::") == 0)
		return "::1";
	return addr;
}

int adminaddr_start(const char *state_dir, char *addr, size_t alen, int *port, const char *spare, struct fps_err *e)
{
	adminaddr_new_id();
	if (admin_start(addr, *port, e) < 0) {
		if (spare == NULL || spare[0] == '\0' || strstr(e->msg, "address already in use") == NULL)
			return -1;
		char saddr[64], first[sizeof(e->msg)];
		int sport;
		snprintf(first, sizeof(first), "%s", e->msg);
		if (adminaddr_split(spare, saddr, sizeof(saddr), &sport) < 0)
			return err_set(e, NULL, 0, 0, "%s; --admin-spare '%s' is not ADDR:PORT", first, spare);
		struct fps_err e2;
		err_clear(&e2);
		if (admin_start(saddr, sport, &e2) < 0)
			return err_set(e, NULL, 0, 0, "%s; the spare address too: %s", first, e2.msg);
		/* Not silent: two instances never share an admin port, and the log says which
		 * one this instance took. */
		log_warn("admin endpoints: %s: using the spare address %s:%d (another instance holds the first one: a "
		         "handover); probes and commands find it in %s/" ADMINADDR_FILE,
		         first, saddr, sport, state_dir);
		snprintf(addr, alen, "%s", saddr);
		*port = sport;
	}
	const char *to = adminaddr_connect_to(addr);
	bool v6 = strchr(to, ':') != NULL;
	char path[4096], text[256];
	snprintf(path, sizeof(path), "%s/" ADMINADDR_FILE, state_dir);
	int n = snprintf(text, sizeof(text), "%s%s%s:%d %s\n", v6 ? "[" : "", to, v6 ? "]" : "", *port, adminaddr_id);
	struct fps_err we;
	err_clear(&we);
	if (fsio_write_atomic(path, text, (size_t)n, 0644, (gid_t)-1, &we) < 0) {
		char buf[1600];
		log_warn("admin endpoints: %s: probes and commands that read it will not find this instance",
		         err_str(&we, buf, sizeof(buf)));
	}
	return 0;
}

int adminaddr_read(const char *state_dir, char *admin, size_t alen, char *id, size_t idlen, char *why, size_t wlen)
{
	char path[4096], line[256];
	snprintf(path, sizeof(path), "%s/" ADMINADDR_FILE, state_dir);
	FILE *f = fopen(path, "re");
	if (f == NULL) {
		snprintf(why, wlen, "%s: %s (is the controller of this state directory running?)", path,
		         strerror(errno));
		return -1;
	}
	bool ok = fgets(line, sizeof(line), f) != NULL;
	fclose(f);
	char a[128], i[64];
	if (!ok || sscanf(line, "%127s %63s", a, i) != 2 || strlen(a) >= alen || strlen(i) >= idlen) {
		snprintf(why, wlen, "%s: not \"ADDR:PORT ID\"", path);
		return -1;
	}
	snprintf(admin, alen, "%s", a);
	snprintf(id, idlen, "%s", i);
	return 0;
}
