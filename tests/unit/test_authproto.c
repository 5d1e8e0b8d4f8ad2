/*
 * Unit tests for authproto: Squid helper request lines (channel IDs, rfc1738 escapes, bad
 * bytes, empty and oversized fields) and the reply lines fps-auth writes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "authproto.h"

#define AUTO AUTHPROTO_IDS_AUTO
#define ON   AUTHPROTO_IDS_ON
#define OFF  AUTHPROTO_IDS_OFF

struct parse_case {
	enum authproto_ids ids;
	const char *line;
	size_t len; /* 0: strlen(line); set for lines holding NUL bytes */
	int rc;
	const char *id, *user, *pass; /* expected on success; id also on failure */
	const char *why;              /* substring expected on failure */
};

static const struct parse_case parse_cases[] = {
    /* channel IDs */
    {AUTO, "1 user pass", 0, 0, "1", "user", "pass", NULL},
    {AUTO, "user pass", 0, 0, "", "user", "pass", NULL},
    {AUTO, "4294967295 user pass", 0, 0, "4294967295", "user", "pass", NULL},
    {AUTO, "123 pass", 0, 0, "", "123", "pass", NULL}, /* two fields: a numeric username */
    {ON, "0 user pass", 0, 0, "0", "user", "pass", NULL},
    {OFF, "user pass", 0, 0, "", "user", "pass", NULL},
    {OFF, "0 user pass", 0, -1, "", NULL, NULL, "expected: user password"},
    {ON, "user pass", 0, -1, "", NULL, NULL, "expected: ID user password"},
    {ON, "12 user", 0, -1, "12", NULL, NULL, "expected: ID user password"},
    {ON, "x1 user pass", 0, -1, "", NULL, NULL, "channel ID is not a number"},
    {AUTO, "x1 user pass", 0, -1, "", NULL, NULL, "expected: user password"},
    {AUTO, "123456789012345678901 user pass", 0, -1, "", NULL, NULL, "expected"}, /* 21 digits */
    {AUTO, "9 a b c", 0, -1, "9", NULL, NULL, "expected"},
    {ON, "9 a b c d e", 0, -1, "9", NULL, NULL, "too many fields"},
    /* escaping: %XX decoded, '+' literal, ':' and '@' raw */
    {ON, "3 Apex%20One p%25x", 0, 0, "3", "Apex One", "p%x", NULL},
    {ON, "4 a+b c+d", 0, 0, "4", "a+b", "c+d", NULL},
    {ON, "5 user p:a@ss", 0, 0, "5", "user", "p:a@ss", NULL},
    {ON, "5 user %3a%3A%40", 0, 0, "5", "user", "::@", NULL},
    {ON, "5 user %2B%2b", 0, 0, "5", "user", "++", NULL},
    {ON, "5 user %C3%A9", 0, 0, "5", "user", "\xc3\xa9", NULL},
    {ON, "6 user %", 0, -1, "6", NULL, NULL, "malformed %XX"},
    {ON, "6 user ab%4", 0, -1, "6", NULL, NULL, "malformed %XX"},
    {ON, "6 user %G0", 0, -1, "6", NULL, NULL, "malformed %XX"},
    {ON, "6 user %4g", 0, -1, "6", NULL, NULL, "malformed %XX"},
    {ON, "6 us%00er pass", 0, -1, "6", NULL, NULL, "escaped control"},
    {ON, "6 user pa%0Ass", 0, -1, "6", NULL, NULL, "escaped control"},
    {ON, "6 user pa%7fss", 0, -1, "6", NULL, NULL, "escaped control"},
    /* raw bytes Squid would have escaped */
    {ON, "7 us\0er pass", 12, -1, "7", NULL, NULL, "NUL byte"},
    {AUTO, "7 user pass\0", 12, -1, "7", NULL, NULL, "NUL byte"},
    {ON, "7 us\ter pass", 0, -1, "7", NULL, NULL, "control or non-ASCII"},
    {ON, "7 user p\xc3\xa9", 0, -1, "7", NULL, NULL, "control or non-ASCII"},
    {ON, "7 user pass\r\r", 0, -1, "7", NULL, NULL, "control"},
    {ON, "8 user pass\r", 0, 0, "8", "user", "pass", NULL}, /* one trailing CR tolerated */
    /* empty fields parse; the credential check refuses them */
    {ON, "9  pass", 0, 0, "9", "", "pass", NULL},
    {ON, "9 user ", 0, 0, "9", "user", "", NULL},
    {AUTO, "9 user ", 0, 0, "9", "user", "", NULL},
    {AUTO, "user ", 0, 0, "", "user", "", NULL},
    {AUTO, " ", 0, 0, "", "", "", NULL},
    {AUTO, "", 0, -1, "", NULL, NULL, "expected"},
    {ON, "", 0, -1, "", NULL, NULL, "expected"},
    {AUTO, "10", 0, -1, "", NULL, NULL, "expected"},
};

static void test_parse_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(parse_cases) / sizeof(parse_cases[0]); i++) {
		const struct parse_case *c = &parse_cases[i];
		struct authproto_req req;
		const char *why = NULL;
		size_t len = c->len ? c->len : strlen(c->line);
		int rc = authproto_parse(c->line, len, c->ids, &req, &why);
		if (rc != c->rc)
			fail_msg("case %zu '%s': rc %d (%s), want %d", i, c->line, rc, why ? why : "-", c->rc);
		if (strcmp(req.id, c->id) != 0)
			fail_msg("case %zu '%s': id '%s', want '%s'", i, c->line, req.id, c->id);
		if (rc == 0) {
			if (strcmp(req.user, c->user) != 0 || strcmp(req.pass, c->pass) != 0)
				fail_msg("case %zu '%s': user '%s' pass '%s'", i, c->line, req.user, req.pass);
		} else {
			assert_non_null(why);
			if (strstr(why, c->why) == NULL)
				fail_msg("case %zu '%s': why '%s', want '%s'", i, c->line, why, c->why);
			/* A rejected line leaves no half-decoded credentials behind. */
			assert_string_equal(req.user, "");
			assert_string_equal(req.pass, "");
		}
	}
}

static void test_field_limits(void **state)
{
	(void)state;
	/* "1 " + user + " x": exactly AUTHPROTO_FIELD_MAX decoded bytes pass, one more fails. */
	size_t cap = AUTHPROTO_LINE_MAX + 64;
	char *line = malloc(cap);
	assert_non_null(line);
	struct authproto_req req;
	const char *why = NULL;

	int n = snprintf(line, cap, "1 %0*d x", AUTHPROTO_FIELD_MAX, 0);
	assert_int_equal(authproto_parse(line, (size_t)n, ON, &req, &why), 0);
	assert_int_equal(strlen(req.user), AUTHPROTO_FIELD_MAX);

	n = snprintf(line, cap, "1 %0*d x", AUTHPROTO_FIELD_MAX + 1, 0);
	assert_int_equal(authproto_parse(line, (size_t)n, ON, &req, &why), -1);
	assert_string_equal(why, "field too long");
	assert_string_equal(req.id, "1");

	/* Escapes count decoded: 1024 x "%41" is 3072 bytes on the line and fits. */
	size_t o = (size_t)snprintf(line, cap, "2 x ");
	for (int i = 0; i < AUTHPROTO_FIELD_MAX; i++)
		o += (size_t)snprintf(line + o, cap - o, "%%41");
	assert_int_equal(authproto_parse(line, o, ON, &req, &why), 0);
	assert_int_equal(strlen(req.pass), AUTHPROTO_FIELD_MAX);
	assert_int_equal(req.pass[0], 'A');

	/* A line over AUTHPROTO_LINE_MAX is refused whole, with its ID kept for the BH. */
	memset(line, 'a', cap);
	memcpy(line, "77 u ", 5);
	assert_int_equal(authproto_parse(line, AUTHPROTO_LINE_MAX + 1, AUTO, &req, &why), -1);
	assert_string_equal(why, "line too long");
	assert_string_equal(req.id, "77");
	free(line);
}

static void test_peek_id(void **state)
{
	(void)state;
	static const struct {
		enum authproto_ids ids;
		const char *line, *want;
	} cases[] = {
	    {AUTO, "12 aaaa", "12"}, {ON, "12 aaaa", "12"}, {OFF, "12 aaaa", ""}, {AUTO, "12", ""},
	    {ON, "12", "12"},        {AUTO, "a2 x", ""},    {AUTO, " 1 x", ""},   {AUTO, "1x y", ""},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char id[AUTHPROTO_ID_MAX + 1];
		authproto_peek_id(cases[i].line, strlen(cases[i].line), cases[i].ids, id);
		if (strcmp(id, cases[i].want) != 0)
			fail_msg("'%s': id '%s', want '%s'", cases[i].line, id, cases[i].want);
	}
}

static void test_format_table(void **state)
{
	(void)state;
	static const struct {
		const char *id;
		enum authproto_verdict v;
		const char *msg, *want;
	} cases[] = {
	    {"12", AUTHPROTO_OK, NULL, "12 OK\n"},
	    {"", AUTHPROTO_OK, NULL, "OK\n"},
	    {NULL, AUTHPROTO_ERR, "wrong password", "ERR message=\"wrong password\"\n"},
	    {"3", AUTHPROTO_ERR, "wrong password", "3 ERR message=\"wrong password\"\n"},
	    {"4", AUTHPROTO_BH, "a\"b\\c\nd", "4 BH message=\"a\\\"b\\\\c d\"\n"},
	    {"0", AUTHPROTO_BH, "", "0 BH message=\"\"\n"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char buf[AUTHPROTO_REPLY_MAX];
		int n = authproto_format(buf, sizeof(buf), cases[i].id, cases[i].v, cases[i].msg);
		assert_int_equal(n, (int)strlen(cases[i].want));
		assert_string_equal(buf, cases[i].want);
	}
	/* Too small a buffer fails instead of writing a cut reply without its newline. */
	char small[12];
	for (size_t cap = 1; cap <= sizeof(small); cap++)
		assert_int_equal(authproto_format(small, cap, "3", AUTHPROTO_ERR, "wrong password"), -1);
	assert_int_equal(authproto_format(small, 6, "12", AUTHPROTO_OK, NULL), -1);
	assert_int_equal(authproto_format(small, 7, "12", AUTHPROTO_OK, NULL), 6);
}

static void test_bh_reason_never_quotes_the_line(void **state)
{
	(void)state;
	static const char *const lines[] = {"1 user s3cr3t%zz", "1 user s3cr3t\t", "1 user s3cr3t extra",
	                                    "1 user s3cr3t%00"};
	for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
		struct authproto_req req;
		const char *why = NULL;
		char buf[AUTHPROTO_REPLY_MAX];
		assert_int_equal(authproto_parse(lines[i], strlen(lines[i]), AUTO, &req, &why), -1);
		assert_true(authproto_format(buf, sizeof(buf), req.id, AUTHPROTO_BH, why) > 0);
		assert_null(strstr(buf, "s3cr3t"));
		assert_int_equal(strncmp(buf, "1 BH message=", 13), 0);
	}
}

/* Squid's key_extras (the whole Proxy-Authorization header, URL-encoded) after the password. */
static void test_key_extras_field_is_ignored(void **state)
{
	(void)state;
	struct authproto_req req;
	const char *why = NULL;
	const char *line = "7 user p%20w Basic%20dXNlcjpwIHc%3D";
	assert_int_equal(authproto_parse_extras(line, strlen(line), ON, 1, &req, &why), 0);
	assert_string_equal(req.id, "7");
	assert_string_equal(req.user, "user");
	assert_string_equal(req.pass, "p w");
	/* Without the extra field the line is one field short; with two it is one too many. */
	assert_int_equal(authproto_parse_extras("7 user pw", 9, ON, 1, &req, &why), -1);
	line = "7 user pw a b";
	assert_int_equal(authproto_parse_extras(line, strlen(line), ON, 1, &req, &why), -1);
	/* The extra field is held to the same bytes as the others. */
	line = "7 user pw a\x01b";
	assert_int_equal(authproto_parse_extras(line, strlen(line), ON, 1, &req, &why), -1);
	line = "user pw extra";
	assert_int_equal(authproto_parse_extras(line, strlen(line), AUTO, 1, &req, &why), 0);
	assert_string_equal(req.id, "");
	assert_string_equal(req.pass, "pw");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_parse_table),  cmocka_unit_test(test_key_extras_field_is_ignored),
	    cmocka_unit_test(test_field_limits), cmocka_unit_test(test_peek_id),
	    cmocka_unit_test(test_format_table), cmocka_unit_test(test_bh_reason_never_quotes_the_line),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
