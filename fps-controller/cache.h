/*
 * cache: the update cache's footing outside squid.conf (docs/operations.md "The update
 * cache"): the disk stores' directories under <state-dir>/cache, whether disk_mb fits the
 * state volume and memory_mb the container's memory limit, and which cache changes need a
 * new Squid process rather than a reconfigure.
 */
#ifndef FPS_CACHE_H
#define FPS_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "config.h"
#include "err.h"

/* Room the state volume keeps beside the cache: Squid's two logs and their previous files
 * (log_rotate_bytes each) and the generations. */
#define CACHE_VOLUME_RESERVE(log_rotate_bytes) (4 * (unsigned long long)(log_rotate_bytes) + (64ULL << 20))
/* Memory the pod needs beside cache_mem: the controller, Squid's own and its helpers. */
#define CACHE_MEMORY_BASE_MB       128
#define CACHE_MEMORY_PER_WORKER_MB 96

/*
 * Creates the disk store <cache_dir>/1 with Squid's aufs layout (16 x 256 directories, all
 * `squid -z` makes for a ufs-type store), owned by uid:gid, and repairs the ownership of
 * existing ones (as root). Idempotent; cheap when everything exists.
 */
int cache_prepare(const struct fps_config *c, const char *cache_dir, bool as_root, uid_t uid, gid_t gid,
                  struct fps_err *e);

/*
 * A file of CACHE_BALLAST_BYTES beside the store, made by cache_prepare and given up by
 * cache_release_ballast when the volume is full: the room the controller needs to write the
 * generation that leaves the disk store out (writing it would otherwise fail for lack of space).
 */
#define CACHE_BALLAST_BYTES (8LL << 20)
void cache_release_ballast(const char *cache_dir);

/*
 * Pure checks against what the controller measured: the state volume's size (0 = unknown,
 * e.g. an emptyDir whose sizeLimit statvfs cannot see) and free bytes, and the memory limit
 * (0 = none). -1 with e naming the key.
 */
int cache_check_room(const struct fps_config *c, const char *path, unsigned long long volume_total,
                     unsigned long long volume_free, unsigned long long reserve, unsigned long long mem_limit,
                     struct fps_err *e);

/* The container's memory limit in bytes (cgroup v2 memory.max, v1 memory.limit_in_bytes;
 * FPS_MEMORY_LIMIT_BYTES overrides, for tests), 0 when there is none. */
unsigned long long cache_memory_limit(void);

/* A text that changes exactly when a cache change needs a Squid restart: stores appear or
 * disappear (Squid 5.7 neither opens a cache_dir added by a reconfigure nor drops one), or
 * the shared memory cache of SMP workers changes size (allocated at start). */
void cache_layout(const struct fps_config *c, char *out, size_t len);

#endif
