/*
 * Unit tests for the update cache's configuration (config.c `cache:`), its room checks and
 * restart rules (cache.c), its squid.conf block (render.c) and its figures (cachestats.c).
 * Table-driven.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "cache.h"
#include "cachestats.h"
#include "config.h"
#include "purge.h"
#include "render.h"

struct cache_case {
	const char *text;
	int ok;          /* 1 valid */
	const char *msg; /* substring of the error */
	int mem, disk, maxobj;
};

static const struct cache_case cases[] = {
    {"proxy: {}\n", 1, NULL, 0, 0, 0},
    {"cache:\n", 1, NULL, 256, 0, 256},
    {"cache: {}\n", 1, NULL, 256, 0, 256},
    {"cache:\n  memory_mb: 256\n  disk_mb: 4096\n  max_object_mb: 512\n", 1, NULL, 256, 4096, 512},
    {"cache:\n  disk_mb: 100\n", 1, NULL, 256, 100, 100},
    {"cache:\n  memory_mb: 64\n", 1, NULL, 64, 0, 64},
    {"cache:\n  memory_mb: 0\n", 0, "'cache.memory_mb' must be in 8..1048576", 0, 0, 0},
    {"cache:\n  memory_mb: -1\n", 0, "'cache.memory_mb' must be in", 0, 0, 0},
    {"cache:\n  disk_mb: -5\n", 0, "'cache.disk_mb' must be in 0..16777216", 0, 0, 0},
    {"cache:\n  max_object_mb: 0\n", 0, "'cache.max_object_mb' must be in 1..65536", 0, 0, 0},
    {"cache:\n  max_object_mb: 300\n", 0, "cache.max_object_mb 300 is above the store it would go to (cache.memory_mb",
     0, 0, 0},
    {"cache:\n  disk_mb: 1024\n  max_object_mb: 2048\n", 0, "above the store it would go to (cache.disk_mb per worker",
     0, 0, 0},
    {"proxy:\n  workers: 2\ncache:\n  disk_mb: 1000\n", 0, "cache.disk_mb 1000 needs proxy.workers: 1", 0, 0, 0},
    {"proxy:\n  workers: 2\ncache:\n  memory_mb: 300\n", 1, NULL, 300, 0, 300},
    {"cache:\n  memory: 5\n", 0, "unknown key 'memory' in 'cache'", 0, 0, 0},
    {"cache:\n  disk_mb: lots\n", 0, "must be an integer", 0, 0, 0},
    {"cache: [1]\n", 0, "'cache' must be a mapping", 0, 0, 0},
};

static void test_cache_keys_and_limits(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct cache_case *k = &cases[i];
		struct fps_config c;
		struct fps_err e;
		cfg_init_defaults(&c);
		err_clear(&e);
		int rc = cfg_parse_yaml(&c, k->text, strlen(k->text), "fps.yaml", &e);
		if (rc == 0)
			rc = cfg_check_cache(&c, "fps.yaml", &e);
		if (k->ok) {
			if (rc != 0)
				fail_msg("case %zu: unexpected error %s", i, e.msg);
			if (k->mem) {
				assert_true(c.has_cache);
				assert_int_equal(c.cache_memory_mb, k->mem);
				assert_int_equal(c.cache_disk_mb, k->disk);
				assert_int_equal(cfg_cache_max_object(&c), k->maxobj);
			} else {
				assert_false(c.has_cache);
			}
		} else if (rc == 0 || strstr(e.msg, k->msg) == NULL) {
			fail_msg("case %zu: got rc %d '%s', want '%s'", i, rc, e.msg, k->msg);
		}
		cfg_free(&c);
	}
}

static void parse(struct fps_config *c, const char *text)
{
	struct fps_err e;
	cfg_init_defaults(c);
	assert_int_equal(cfg_parse_yaml(c, text, strlen(text), "fps.yaml", &e), 0);
}

static void test_room_checks(void **state)
{
	(void)state;
	struct fps_config c;
	struct fps_err e;
	parse(&c, "cache:\n  memory_mb: 256\n  disk_mb: 4096\n");
	unsigned long long GiB = 1ULL << 30, MiB = 1ULL << 20;
	/* the volume's size unknown (an emptyDir's sizeLimit), no memory limit: accepted */
	assert_int_equal(cache_check_room(&c, "fps.yaml", 0, 0, 320 * MiB, 0, &e), 0);
	/* a 1 GiB volume cannot hold 4 GiB */
	err_clear(&e);
	assert_int_equal(cache_check_room(&c, "fps.yaml", GiB, GiB / 2, 320 * MiB, 0, &e), -1);
	assert_non_null(strstr(e.msg, "cache.disk_mb 4096 does not fit the state volume: 1024 MB in all, 512 MB free"));
	/* 5 GiB is enough with the reserve */
	assert_int_equal(cache_check_room(&c, "fps.yaml", 5 * GiB, 5 * GiB, 320 * MiB, 0, &e), 0);
	/* memory: 256 + 128 + 96 = 480 MiB needed */
	assert_int_equal(cache_check_room(&c, "fps.yaml", 0, 0, 0, 480 * MiB, &e), 0);
	err_clear(&e);
	assert_int_equal(cache_check_room(&c, "fps.yaml", 0, 0, 0, 479 * MiB, &e), -1);
	assert_non_null(strstr(e.msg, "cache.memory_mb 256 does not fit the container's memory limit of 479 MB"));
	cfg_free(&c);
	/* no cache: nothing to check */
	parse(&c, "proxy: {}\n");
	assert_int_equal(cache_check_room(&c, "fps.yaml", MiB, 0, 320 * MiB, MiB, &e), 0);
	cfg_free(&c);
}

static void test_layout_says_when_a_restart_is_needed(void **state)
{
	(void)state;
	struct {
		const char *a, *b;
		int restart;
	} t[] = {
	    {"proxy: {}\n", "cache: {}\n", 0},                              /* memory cache appears: reconfigure */
	    {"proxy: {}\n", "cache:\n  disk_mb: 100\n", 1},                 /* a store appears */
	    {"cache:\n  disk_mb: 100\n", "cache:\n  disk_mb: 200\n", 0},    /* aufs takes a new size */
	    {"cache:\n  disk_mb: 100\n", "cache: {}\n", 1},                 /* the store goes */
	    {"cache:\n  memory_mb: 64\n", "cache:\n  memory_mb: 128\n", 0}, /* one worker: reconfigure */
	    {"proxy:\n  workers: 2\ncache:\n  memory_mb: 64\n", "proxy:\n  workers: 2\ncache:\n  memory_mb: 128\n", 1},
	};
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		struct fps_config a, b;
		char la[64], lb[64];
		parse(&a, t[i].a);
		parse(&b, t[i].b);
		cache_layout(&a, la, sizeof(la));
		cache_layout(&b, lb, sizeof(lb));
		if ((strcmp(la, lb) != 0) != t[i].restart)
			fail_msg("case %zu: '%s' vs '%s'", i, la, lb);
		cfg_free(&a);
		cfg_free(&b);
	}
}

static void test_render_block(void **state)
{
	(void)state;
	struct fps_config c;
	char out[4096];
	parse(&c, "proxy: {}\n");
	render_cache_block(&c, "/s/cache", out, sizeof(out));
	assert_string_equal(out, "cache deny all");
	cfg_free(&c);
	parse(&c, "cache:\n  memory_mb: 256\n  disk_mb: 4096\n  max_object_mb: 512\n");
	render_cache_block(&c, "/s/cache", out, sizeof(out));
	assert_non_null(strstr(out, "cache_mem 256 MB\n"));
	assert_non_null(strstr(out, "maximum_object_size 512 MB\n"));
	assert_non_null(strstr(out, "maximum_object_size_in_memory 256 MB\n"));
	assert_non_null(strstr(out, "cache_dir aufs /s/cache/1 4096 16 256\n"));
	assert_non_null(strstr(out, "collapsed_forwarding on\n"));
	assert_non_null(strstr(out, "range_offset_limit 512 MB\n"));
	assert_non_null(strstr(out, "store_miss deny fps_sets_cookie"));
	assert_non_null(strstr(out, "reply_header_access Set-Cookie deny fps_shared_method"));
	assert_null(strstr(out, "cache deny all"));
	cfg_free(&c);
	parse(&c, "cache:\n  memory_mb: 64\n");
	render_cache_block(&c, "/s/cache", out, sizeof(out));
	assert_null(strstr(out, "cache_dir"));
	assert_non_null(strstr(out, "maximum_object_size 64 MB\n"));
	cfg_free(&c);
}

static void test_stats_from_squid_pages(void **state)
{
	(void)state;
	const char *counters = "sample_time = 1\nclient_http.requests = 210\nclient_http.hits = 5\n"
	                       "client_http.errors = 3\nclient_http.kbytes_in = 10\nclient_http.kbytes_out = 9000\n"
	                       "client_http.hit_kbytes_out = 4000\nserver.all.requests = 2\nserver.all.errors = 0\n"
	                       "server.http.requests = 2\nserver.http.kbytes_in = 3072\n";
	const char *info = "Cache information for squid:\n\tStorage Swap size:\t1000 KB\n\tStorage Mem size:\t24 KB\n"
	                   "Internal Data Structures:\n\t    17 StoreEntries\n\t     3 StoreEntries with MemObjects\n";
	struct status_cache c = {.enabled = true};
	assert_int_equal(cachestats_parse(counters, info, &c), 0);
	assert_true(c.have_stats);
	assert_int_equal(c.hit, 5);
	assert_int_equal(c.miss, 2);
	assert_int_equal(c.collapsed, 200);
	assert_int_equal(c.bytes_from_cache, 4000 * 1024);
	assert_int_equal(c.bytes_from_origin, 3072 * 1024);
	assert_int_equal(c.used_bytes, 1024 * 1024);
	assert_int_equal(c.objects, 17);
	assert_int_equal(cachestats_parse(NULL, info, &c), -1);
	assert_false(c.have_stats);
	assert_int_equal(cachestats_parse("nothing\n", info, &c), -1);
}

static void test_purge_urls(void **state)
{
	(void)state;
	assert_true(purge_url_ok("http://updates.vendor.test/pkg/a.bin"));
	assert_true(purge_url_ok("http://updates.vendor.test:8080/a?b=c"));
	assert_false(purge_url_ok("https://updates.vendor.test/a"));
	assert_false(purge_url_ok("http://user:pw@updates.vendor.test/a"));
	assert_false(purge_url_ok("http://a.test/x y"));
	assert_false(purge_url_ok("http://a.test/x\r\nX: y"));
	assert_false(purge_url_ok("http:///x"));
	assert_false(purge_url_ok(NULL));
	char msg[128];
	assert_int_equal(purge_url(0, "http://a.test/", 100, msg, sizeof(msg)), PURGE_FAILED);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_cache_keys_and_limits),
	    cmocka_unit_test(test_room_checks),
	    cmocka_unit_test(test_layout_says_when_a_restart_is_needed),
	    cmocka_unit_test(test_render_block),
	    cmocka_unit_test(test_stats_from_squid_pages),
	    cmocka_unit_test(test_purge_urls),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
