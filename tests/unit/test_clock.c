/*
 * Unit tests for clock.c: the HTTP date forms a reference may answer with.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "clock.h"

static void test_http_dates(void **state)
{
	(void)state;
	static const struct {
		const char *text;
		int rc;
		double unix_time;
	} cases[] = {
	    {"Sun, 06 Nov 1994 08:49:37 GMT", 0, 784111777},   {" Sun, 06 Nov 1994 08:49:37 GMT\r", 0, 784111777},
	    {"Sunday, 06-Nov-94 08:49:37 GMT", 0, 784111777},  {"Sun Nov  6 08:49:37 1994", 0, 784111777},
	    {"Thu, 31 Dec 2026 23:59:59 GMT", 0, 1798761599},  {"yesterday", -1, 0},
	    {"Sun, 06 Nov 1994 08:49:37 GMT trailing", -1, 0}, {"", -1, 0},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		double t = 0;
		assert_int_equal(clock_parse_http_date(cases[i].text, &t), cases[i].rc);
		if (cases[i].rc == 0)
			assert_true(t == cases[i].unix_time);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {cmocka_unit_test(test_http_dates)};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
