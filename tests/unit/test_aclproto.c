/*
 * Unit tests for aclproto.c: the fps-acl line protocol with the denied report's fields
 * ("[ID ]host port user"), what it tells the report, and report mode's answer.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "aclproto.h"

static void policy(struct wl_policy *p, bool report)
{
	wl_policy_init(p, WL_VIA_TUNNEL);
	p->report_mode = report;
	assert_int_equal(wl_policy_add(p, "allowed.example", WL_EXACT), 0);
	assert_int_equal(wl_policy_finish(p), 0);
}

static void test_lines_and_denials(void **state)
{
	(void)state;
	static const struct {
		const char *line;
		bool report;
		const char *reply;
		bool denied;
		const char *host, *port, *user;
	} cases[] = {
	    {"7 allowed.example 443 ApexOne-x", false, "7 OK tag=tunnel\n", false, NULL, NULL, NULL},
	    {"7 Other.Example. 443 ApexOne-x", false, "7 ERR message=\"not in whitelist\"\n", true, "other.example",
	     "443", "ApexOne-x"},
	    {"other.example 80 -", false, "ERR message=\"not in whitelist\"\n", true, "other.example", "80", "-"},
	    {"12 other.example", false, "12 ERR message=\"not in whitelist\"\n", true, "other.example", NULL, NULL},
	    {"3 other.example 443 u", true, "3 OK tag=tunnel message=\"would deny: not in whitelist\"\n", true,
	     "other.example", "443", "u"},
	    {"3 allowed.example 443 u", true, "3 OK tag=tunnel\n", false, NULL, NULL, NULL},
	    {"4 bad%20host 443 u", false, "4 ERR message=\"malformed host\"\n", false, NULL, NULL, NULL},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct wl_policy p;
		policy(&p, cases[i].report);
		char line[256], out[ACLPROTO_REPLY_MAX];
		snprintf(line, sizeof(line), "%s", cases[i].line);
		struct aclproto_denial d;
		size_t n = aclproto_answer_ex(&p, line, out, sizeof(out), &d);
		assert_int_equal(n, strlen(out));
		assert_string_equal(out, cases[i].reply);
		assert_int_equal(d.denied, cases[i].denied);
		if (cases[i].denied) {
			assert_string_equal(d.host, cases[i].host);
			if (cases[i].port)
				assert_string_equal(d.port, cases[i].port);
			else
				assert_null(d.port);
			if (cases[i].user)
				assert_string_equal(d.user, cases[i].user);
			else
				assert_null(d.user);
		}
		wl_policy_free(&p);
	}
	/* without a policy nothing is counted */
	char line[] = "1 other.example 443 u", out[ACLPROTO_REPLY_MAX];
	struct aclproto_denial d;
	aclproto_answer_ex(NULL, line, out, sizeof(out), &d);
	assert_false(d.denied);
}

int main(void)
{
	const struct CMUnitTest tests[] = {cmocka_unit_test(test_lines_and_denials)};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
