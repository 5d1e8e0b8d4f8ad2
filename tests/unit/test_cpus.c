/*
 * Unit tests for cpus.c: `proxy.workers: auto` counts the CPU quota of the cgroup (v2 cpu.max,
 * v1 cfs quota) rounded up, read from a fake cgroup tree, and the affinity mask.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cpus.h"
#include "fsio.h"

static char root[] = "/tmp/cpus-XXXXXX";

static void put(const char *rel, const char *text)
{
	char path[512], dir[512];
	snprintf(path, sizeof(path), "%s/%s", root, rel);
	snprintf(dir, sizeof(dir), "%s", path);
	*strrchr(dir, '/') = '\0';
	struct fps_err e;
	assert_int_equal(fsio_mkdirs(dir, 0755, &e), 0);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static int quota(void)
{
	char cg[512], fs[512];
	snprintf(cg, sizeof(cg), "%s/cgroup", root);
	snprintf(fs, sizeof(fs), "%s/fs", root);
	return cpus_quota(cg, fs);
}

static void test_cgroup_quota(void **state)
{
	(void)state;
	static const struct {
		const char *cgroup; /* /proc/self/cgroup */
		const char *files[4][2];
		int want;
	} cases[] = {
	    /* v2, in a cgroup namespace (a pod): the root is the container's cgroup */
	    {"0::/\n", {{"fs/cpu.max", "200000 100000\n"}}, 2},
	    {"0::/\n", {{"fs/cpu.max", "150000 100000\n"}}, 2}, /* 1.5 CPUs: rounded up */
	    {"0::/\n", {{"fs/cpu.max", "50000 100000\n"}}, 1},
	    {"0::/\n", {{"fs/cpu.max", "max 100000\n"}}, 0}, /* no limit */
	    {"0::/\n", {{"fs/cpu.max", "garbage\n"}}, 0},
	    {"0::/\n", {{NULL, NULL}}, 0},
	    /* v2 without a namespace: the smallest quota of the cgroup and its ancestors */
	    {"0::/kubepods/pod1/ctr\n",
	     {{"fs/kubepods/pod1/ctr/cpu.max", "max 100000\n"},
	      {"fs/kubepods/pod1/cpu.max", "300000 100000\n"},
	      {"fs/kubepods/cpu.max", "800000 100000\n"}},
	     3},
	    {"0::/kubepods/pod1/ctr\n",
	     {{"fs/kubepods/pod1/ctr/cpu.max", "100000 100000\n"}, {"fs/kubepods/pod1/cpu.max", "max 100000\n"}},
	     1},
	    /* a host path seen inside a container without a namespace: the mount is its own */
	    {"0::/system.slice/docker-1.scope\n", {{"fs/cpu.max", "400000 100000\n"}}, 4},
	    /* v1: cpu,cpuacct; cpu alone; unlimited (-1) */
	    {"12:memory:/x\n4:cpu,cpuacct:/docker/abc\n1:name=systemd:/\n",
	     {{"fs/cpu,cpuacct/docker/abc/cpu.cfs_quota_us", "250000\n"},
	      {"fs/cpu,cpuacct/docker/abc/cpu.cfs_period_us", "100000\n"}},
	     3},
	    {"3:cpu:/\n", {{"fs/cpu/cpu.cfs_quota_us", "100000\n"}, {"fs/cpu/cpu.cfs_period_us", "50000\n"}}, 2},
	    {"3:cpu:/\n", {{"fs/cpu/cpu.cfs_quota_us", "-1\n"}, {"fs/cpu/cpu.cfs_period_us", "100000\n"}}, 0},
	    /* hybrid: v2 mounted at unified/, the cpu controller on v1 */
	    {"1:cpu:/\n0::/\n", {{"fs/unified/cgroup.procs", ""}, {"fs/cpu/cpu.cfs_quota_us", "-1\n"}}, 0},
	    {"1:cpuacct:/\n0::/\n", {{"fs/unified/cpu.max", "300000 100000\n"}}, 3},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		assert_non_null(mkdtemp(strcpy(root, "/tmp/cpus-XXXXXX")));
		put("cgroup", cases[i].cgroup);
		for (size_t j = 0; j < 4 && cases[i].files[j][0]; j++)
			put(cases[i].files[j][0], cases[i].files[j][1]);
		int got = quota();
		if (got != cases[i].want)
			fail_msg("case %zu (%s): quota %d, want %d", i, cases[i].cgroup, got, cases[i].want);
		fsio_rmtree(root);
	}
	assert_int_equal(cpus_quota("/nonexistent/cgroup", "/nonexistent"), 0);
}

static void test_affinity_mask(void **state)
{
	(void)state;
	cpu_set_t saved, one;
	assert_int_equal(sched_getaffinity(0, sizeof(saved), &saved), 0);
	assert_int_equal(cpus_affinity(), CPU_COUNT(&saved));
	CPU_ZERO(&one);
	for (int c = 0; c < CPU_SETSIZE; c++)
		if (CPU_ISSET(c, &saved)) {
			CPU_SET(c, &one);
			break;
		}
	assert_int_equal(sched_setaffinity(0, sizeof(one), &one), 0);
	assert_int_equal(cpus_affinity(), 1);
	assert_int_equal(cpus_usable(), 1);
	assert_int_equal(sched_setaffinity(0, sizeof(saved), &saved), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_cgroup_quota),
	    cmocka_unit_test(test_affinity_mask),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
