/*
 * cpus: the CPUs this process may use (cpus.h), from the affinity mask and the cgroup
 * quota. Everything read is optional: a missing or odd file means "no limit known".
 */
#include "cpus.h"

#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cpus_affinity(void)
{
	for (int n = 1024; n <= 65536; n *= 4) {
		cpu_set_t *set = CPU_ALLOC(n);
		if (set == NULL)
			break;
		size_t size = CPU_ALLOC_SIZE(n);
		CPU_ZERO_S(size, set);
		if (sched_getaffinity(0, size, set) == 0) {
			int count = CPU_COUNT_S(size, set);
			CPU_FREE(set);
			return count > 0 ? count : 1;
		}
		CPU_FREE(set);
	}
	return 1;
}

/* Reads up to len-1 bytes of a small file; -1 when absent or unreadable. */
static int read_small(const char *path, char *buf, size_t len)
{
	FILE *f = fopen(path, "re");
	if (f == NULL)
		return -1;
	size_t n = fread(buf, 1, len - 1, f);
	fclose(f);
	buf[n] = '\0';
	return 0;
}

/* CPUs (rounded up) a quota of `quota` per `period` microseconds allows; 0 = no limit. */
static int quota_cpus(long long quota, long long period)
{
	if (quota <= 0 || period <= 0)
		return 0;
	long long n = (quota + period - 1) / period;
	return n > INT_MAX ? INT_MAX : (int)n;
}

/* One cgroup directory's quota: v2 "max 100000" / "200000 100000", or v1's two files. */
static int dir_quota(const char *dir, int v1)
{
	char path[PATH_MAX + 32], buf[128];
	long long quota = 0, period = 0;
	if (!v1) {
		snprintf(path, sizeof(path), "%s/cpu.max", dir);
		if (read_small(path, buf, sizeof(buf)) < 0 || strncmp(buf, "max", 3) == 0)
			return 0;
		if (sscanf(buf, "%lld %lld", &quota, &period) != 2)
			return 0;
		return quota_cpus(quota, period);
	}
	snprintf(path, sizeof(path), "%s/cpu.cfs_quota_us", dir);
	if (read_small(path, buf, sizeof(buf)) < 0 || sscanf(buf, "%lld", &quota) != 1)
		return 0;
	snprintf(path, sizeof(path), "%s/cpu.cfs_period_us", dir);
	if (read_small(path, buf, sizeof(buf)) < 0 || sscanf(buf, "%lld", &period) != 1)
		return 0;
	return quota_cpus(quota, period);
}

/* The smallest quota from mount/cgroup_path up to mount itself (a directory that does not
 * exist, as a host path seen from inside a container without a cgroup namespace, is skipped:
 * the mount is then the container's own cgroup). */
static int walk_quota(const char *mount, const char *cgroup_path, int v1)
{
	char rel[PATH_MAX];
	snprintf(rel, sizeof(rel), "%s", cgroup_path);
	int best = 0;
	for (;;) {
		char dir[2 * PATH_MAX + 2];
		snprintf(dir, sizeof(dir), "%s%s%s", mount, rel[0] == '/' ? "" : "/", rel);
		int q = dir_quota(dir, v1);
		if (q > 0 && (best == 0 || q < best))
			best = q;
		char *slash = strrchr(rel, '/');
		if (slash == NULL || rel[0] == '\0')
			break;
		*slash = '\0';
	}
	return best;
}

int cpus_quota(const char *cgroup_file, const char *fs)
{
	char text[8192];
	if (read_small(cgroup_file, text, sizeof(text)) < 0)
		return 0;
	int best = 0;
	char *save = NULL;
	for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		/* "hierarchy-id:controller-list:path" */
		char *c1 = strchr(line, ':');
		char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
		if (c2 == NULL)
			continue;
		*c1 = *c2 = '\0';
		const char *ctrls = c1 + 1, *path = c2 + 1;
		char mount[PATH_MAX + 64];
		int q = 0;
		if (strcmp(line, "0") == 0 && ctrls[0] == '\0') { /* v2: the unified hierarchy */
			snprintf(mount, sizeof(mount), "%s", fs);
			q = walk_quota(mount, path, 0);
			if (q == 0) { /* hybrid layout: v2 beside v1 */
				snprintf(mount, sizeof(mount), "%s/unified", fs);
				q = walk_quota(mount, path, 0);
			}
		} else {
			char list[256];
			snprintf(list, sizeof(list), ",%s,", ctrls);
			if (strstr(list, ",cpu,") == NULL)
				continue;
			/* v1: mounted as cpu,cpuacct (a cpu symlink beside it) or as cpu alone */
			snprintf(mount, sizeof(mount), "%s/%s", fs, ctrls);
			q = walk_quota(mount, path, 1);
			if (q == 0) {
				snprintf(mount, sizeof(mount), "%s/cpu", fs);
				q = walk_quota(mount, path, 1);
			}
		}
		if (q > 0 && (best == 0 || q < best))
			best = q;
	}
	return best;
}

int cpus_usable(void)
{
	int n = cpus_affinity();
	int q = cpus_quota("/proc/self/cgroup", "/sys/fs/cgroup");
	return q > 0 && q < n ? q : n;
}
