/*
 * cache: the directories, room and restart rules of the update cache (cache.h).
 */
#include "cache.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

/* Squid's defaults for a ufs-type store, as rendered (render.c): 16 first-level and 256
 * second-level directories, named %02X. */
#define CACHE_L1 16
#define CACHE_L2 256

static int mkdir_for(const char *path, bool as_root, uid_t uid, gid_t gid, struct fps_err *e)
{
	if (mkdir(path, 0750) < 0 && errno != EEXIST)
		return err_sys(e, errno, path, "cannot create the cache directory: %s", strerror(errno));
	struct stat sb;
	if (lstat(path, &sb) < 0 || !S_ISDIR(sb.st_mode))
		return err_set(e, path, 0, 0, "is not a directory");
	if (as_root && (sb.st_uid != uid || sb.st_gid != gid || (sb.st_mode & 0700) != 0700)) {
		if (chown(path, uid, gid) < 0 || chmod(path, 0750) < 0)
			return err_set(e, path, 0, 0, "cannot give the cache directory to Squid's user: %s",
			               strerror(errno));
	}
	return 0;
}

int cache_prepare(const struct fps_config *c, const char *cache_dir, bool as_root, uid_t uid, gid_t gid,
                  struct fps_err *e)
{
	if (!c->has_cache || c->cache_disk_mb == 0)
		return 0;
	if (mkdir_for(cache_dir, as_root, uid, gid, e) < 0)
		return -1;
	char ballast[PATH_MAX + 16];
	snprintf(ballast, sizeof(ballast), "%s/ballast", cache_dir);
	int bfd = open(ballast, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (bfd >= 0) {
		/* Best effort: on a volume without 8 MiB free there is no ballast to give up. */
		if (posix_fallocate(bfd, 0, CACHE_BALLAST_BYTES) != 0 && ftruncate(bfd, 0) < 0)
			log_debug("%s: cannot size the ballast", ballast);
		close(bfd);
	}
	/* One store, for the one worker a disk store allows (config.c cfg_check_cache). */
	char store[PATH_MAX];
	snprintf(store, sizeof(store), "%s/1", cache_dir);
	if (mkdir_for(store, as_root, uid, gid, e) < 0)
		return -1;
	/* The last second-level directory exists only once all of them were made. */
	char last[PATH_MAX + 16];
	snprintf(last, sizeof(last), "%s/%02X/%02X", store, CACHE_L1 - 1, CACHE_L2 - 1);
	struct stat sb;
	if (stat(last, &sb) == 0 && sb.st_uid == uid)
		return 0;
	for (int i = 0; i < CACHE_L1; i++) {
		char l1[PATH_MAX + 8];
		snprintf(l1, sizeof(l1), "%s/%02X", store, i);
		if (mkdir_for(l1, as_root, uid, gid, e) < 0)
			return -1;
		for (int j = 0; j < CACHE_L2; j++) {
			char l2[PATH_MAX + 16];
			snprintf(l2, sizeof(l2), "%s/%02X", l1, j);
			if (mkdir_for(l2, as_root, uid, gid, e) < 0)
				return -1;
		}
	}
	return 0;
}

int cache_check_room(const struct fps_config *c, const char *path, unsigned long long volume_total,
                     unsigned long long volume_free, unsigned long long reserve, unsigned long long mem_limit,
                     struct fps_err *e)
{
	if (!c->has_cache)
		return 0;
	unsigned long long disk = (unsigned long long)c->cache_disk_mb << 20;
	if (disk > 0 && volume_total > 0 && disk + reserve > volume_total)
		return err_set(e, path, c->cache_line, 0,
		               "cache.disk_mb %d does not fit the state volume: %llu MB in all, %llu MB free, and "
		               "%llu MB stay reserved for Squid's logs and the generations (at most %llu MB for the "
		               "cache)",
		               c->cache_disk_mb, volume_total >> 20, volume_free >> 20, reserve >> 20,
		               volume_total > reserve ? (volume_total - reserve) >> 20 : 0);
	if (mem_limit > 0) {
		unsigned long long need =
		    (unsigned long long)c->cache_memory_mb + CACHE_MEMORY_BASE_MB +
		    (unsigned long long)CACHE_MEMORY_PER_WORKER_MB * (unsigned long long)cfg_workers(c);
		if (need << 20 > mem_limit)
			return err_set(e, path, c->cache_line, 0,
			               "cache.memory_mb %d does not fit the container's memory limit of %llu MB: Squid "
			               "and the helpers need about %d MB more with %d worker(s) (at most %lld MB)",
			               c->cache_memory_mb, mem_limit >> 20,
			               CACHE_MEMORY_BASE_MB + CACHE_MEMORY_PER_WORKER_MB * cfg_workers(c),
			               cfg_workers(c),
			               (long long)(mem_limit >> 20) -
			                   (CACHE_MEMORY_BASE_MB + CACHE_MEMORY_PER_WORKER_MB * cfg_workers(c)));
	}
	return 0;
}

static unsigned long long read_limit(const char *path)
{
	FILE *f = fopen(path, "re");
	if (f == NULL)
		return 0;
	char buf[64] = "";
	char *ok = fgets(buf, sizeof(buf), f);
	fclose(f);
	if (ok == NULL || strncmp(buf, "max", 3) == 0)
		return 0;
	char *end;
	unsigned long long v = strtoull(buf, &end, 10);
	/* cgroup v1 says "no limit" with a huge number */
	return end == buf || v >= (1ULL << 60) ? 0 : v;
}

unsigned long long cache_memory_limit(void)
{
	const char *env = getenv("FPS_MEMORY_LIMIT_BYTES");
	if (env && *env)
		return strtoull(env, NULL, 10);
	unsigned long long v = read_limit("/sys/fs/cgroup/memory.max");
	return v ? v : read_limit("/sys/fs/cgroup/memory/memory.limit_in_bytes");
}

void cache_release_ballast(const char *cache_dir)
{
	char ballast[PATH_MAX + 16];
	snprintf(ballast, sizeof(ballast), "%s/ballast", cache_dir);
	unlink(ballast);
}

void cache_layout(const struct fps_config *c, char *out, size_t len)
{
	/* One worker: the memory cache is Squid's own and follows a reconfigure. */
	snprintf(out, len, "disk=%d shared_mem=%d", c->has_cache && c->cache_disk_mb > 0,
	         c->has_cache && cfg_workers(c) > 1 ? c->cache_memory_mb : 0);
}
