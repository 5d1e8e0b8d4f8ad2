/*
 * Unit tests for ctl_build.c's stages: which stage of an update blames the input (and so makes
 * the pipeline retry with the last good ConfigMap or Secret), with the errno an error carries
 * (err_sys) in place of its wording; and the build check and render share, on the example.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ctl_internal.h"
#include "fsio.h"

static void test_stages_that_judge_content_blame_the_input_unless_the_disk_is_full(void **state)
{
	(void)state;
	static const struct {
		enum ctl_stage stage;
		const char *name;
		bool blames;
	} cases[] = {
	    {CTL_STAGE_LOAD, "load", true},          {CTL_STAGE_COMPILE, "compile", true},
	    {CTL_STAGE_CACHE, "cache", false},       {CTL_STAGE_RENDER, "render", true},
	    {CTL_STAGE_WRITE, "write", false},       {CTL_STAGE_PARSE, "squid -k parse", true},
	    {CTL_STAGE_SECRETS, "secrets", false},   {CTL_STAGE_TUNNEL, "tunnel", true},
	    {CTL_STAGE_ACTIVATE, "activate", false}, {CTL_STAGE_RECONFIGURE, "reconfigure", false},
	};
	assert_int_equal(sizeof(cases) / sizeof(cases[0]), CTL_STAGE_COUNT);
	struct fps_err bad, full, other;
	err_set(&bad, "whitelist.json", 3, 5, "entry 'x y': whitespace");
	err_sys(&full, ENOSPC, "/state/tunnel/stunnel.conf", "cannot write: %s", strerror(ENOSPC));
	err_sys(&other, EACCES, "/state/tunnel/stunnel.conf", "cannot write: %s", strerror(EACCES));
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		assert_string_equal(ctl_stage_name(cases[i].stage), cases[i].name);
		assert_int_equal(ctl_stage_blames_input(cases[i].stage, &bad), cases[i].blames);
		assert_int_equal(ctl_stage_blames_input(cases[i].stage, &other), cases[i].blames);
		assert_false(ctl_stage_blames_input(cases[i].stage, &full)); /* a full disk is nobody's input */
	}
}

static void test_err_sys_keeps_the_errno_and_err_set_clears_it(void **state)
{
	(void)state;
	struct fps_err e;
	err_clear(&e);
	assert_int_equal(err_sys(&e, ENOSPC, "/x", "cannot write: %s", strerror(ENOSPC)), -1);
	assert_int_equal(e.sys, ENOSPC);
	char buf[256];
	assert_string_equal(err_str(&e, buf, sizeof(buf)), "/x: cannot write: No space left on device");
	err_set(&e, "/y", 2, 0, "bad");
	assert_int_equal(e.sys, 0);
	assert_string_equal(err_str(&e, buf, sizeof(buf)), "/y:2: bad");
	/* fsio's writes say why in e.sys too */
	assert_int_equal(fsio_write_atomic("/nonexistent-dir/f", "a", 1, 0644, (gid_t)-1, &e), -1);
	assert_int_equal(e.sys, ENOENT);
}

static void test_a_missing_config_fails_at_load_and_frees_nothing_twice(void **state)
{
	(void)state;
	struct ctl_gen g;
	struct fps_err e;
	err_clear(&e);
	assert_int_equal(ctl_gen_load(&g, "/nonexistent-config", NULL, &e), -1);
	assert_int_equal(g.stage, CTL_STAGE_LOAD);
	assert_false(g.loaded);
	ctl_gen_free(&g);
	ctl_gen_free(&g);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_stages_that_judge_content_blame_the_input_unless_the_disk_is_full),
	    cmocka_unit_test(test_err_sys_keeps_the_errno_and_err_set_clears_it),
	    cmocka_unit_test(test_a_missing_config_fails_at_load_and_frees_nothing_twice),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
