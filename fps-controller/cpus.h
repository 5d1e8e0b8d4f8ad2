/*
 * cpus: how many CPUs this process may use, for `proxy.workers: auto`: its affinity mask
 * (sched_getaffinity: taskset, cpuset) and its cgroup's CPU quota (v2 `cpu.max`, v1
 * `cpu.cfs_quota_us`/`cpu.cfs_period_us`), rounded up, whichever is smaller; the way Go's
 * runtime and the JVM size themselves in a container. A pod with a CPU limit of 2 on an
 * 8-core node counts 2, not 8.
 */
#ifndef FPS_CPUS_H
#define FPS_CPUS_H

/* CPUs in the affinity mask (at least 1). */
int cpus_affinity(void);
/* The CPU quota of the cgroup named in cgroup_file (the format of /proc/self/cgroup) under
 * the cgroup file system mounted at fs (/sys/fs/cgroup), in CPUs rounded up: the smallest
 * quota of that cgroup and its ancestors, 0 when none is set or none can be read. */
int cpus_quota(const char *cgroup_file, const char *fs);
/* min(cpus_affinity(), cpus_quota("/proc/self/cgroup", "/sys/fs/cgroup")), at least 1. */
int cpus_usable(void);

#endif
