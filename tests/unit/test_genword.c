/*
 * Unit tests for genword.c: the generation word the controller publishes and every fps-acl
 * loads (one verdict at a time, docs/configuration.md).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "genword.h"

static void test_published_word_is_seen_by_readers_and_survives_a_restart(void **state)
{
	(void)state;
	char dir[] = "/tmp/genword-XXXXXX", path[64];
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/" GENWORD_NAME, dir);
	struct fps_err e;
	struct genword ctl, acl, gone;
	assert_int_equal(genword_map(&gone, path, &e), -1); /* fps-acl before the controller made it */
	assert_null(gone.word);
	assert_int_equal(genword_load(&gone), 0);

	assert_int_equal(genword_create(&ctl, path, 7, (gid_t)-1, &e), 0);
	assert_int_equal(genword_map(&acl, path, &e), 0);
	assert_int_equal(genword_load(&acl), 7); /* a new file starts at the current generation */
	genword_publish(&ctl, 8);
	assert_int_equal(genword_load(&acl), 8);
	struct stat sb;
	assert_int_equal(stat(path, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0644);

	/* A restarted controller opens the same file in place: a helper still mapping it
	 * follows, and the published number is not rewound to `initial`. */
	genword_close(&ctl);
	assert_int_equal(genword_create(&ctl, path, 3, (gid_t)-1, &e), 0);
	assert_int_equal(genword_load(&acl), 8);
	genword_publish(&ctl, 9);
	assert_int_equal(genword_load(&acl), 9);
	genword_close(&ctl);
	genword_close(&acl);
	genword_close(&acl); /* twice is harmless */

	/* A symlink planted at the path is not followed. */
	unlink(path);
	assert_int_equal(symlink("/etc/passwd", path), 0);
	assert_int_equal(genword_create(&ctl, path, 1, (gid_t)-1, &e), -1);
	unlink(path);
	rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_published_word_is_seen_by_readers_and_survives_a_restart),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
