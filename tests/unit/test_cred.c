/*
 * Unit tests for cred: the password vectors shipped products compute, verification rules
 * (case, length, expiry, overlapping keys, products, usernames) and apikeys.json errors.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cred.h"

#define KEY11 "k2026-11-secret"
#define KEY12 "k2026-12-secret"
#define USER  "ApexOne-1b4e28ba-2fa1-11d2-883f-0016d3cca427"
#define DEEP  "DeepSec-00000000-0000-0000-0000-000000000001"

/* Expected passwords, computed outside the code under test:
 *   printf '%s%s' "$user" "$key" | sha1sum */
#define PW_USER_11 "227331004d075db2f6a2eeee15242c7ad6355f39"
#define PW_USER_12 "ad91f82828d6c2f8f7e30a046e4bf57637aee0cb"
#define PW_DEEP_11 "46d38a40b1f863a08e8d2a905a81b46a000b36ab"
/* user = 128 x 'a':  printf '%s%s' "$(printf 'a%.0s' $(seq 128))" k2026-11-secret | sha1sum */
#define PW_A128_11 "c194c2c6d8c37266d78fd5db7940a937b2e186f6"

/* date -u -d ... +%s */
#define T_2026_12_01 1796083200 /* both keys valid */
#define T_2026_12_24 1798070400 /* KEY11 expires */
#define T_2027_01_01 1798761600 /* only KEY12 valid */
#define T_2027_01_23 1800662400 /* KEY12 expires */
#define T_2027_02_01 1801440000 /* none valid */

static const char keys_json[] =
    "{\"keys\": [\n"
    "  {\"id\": \"2026-11\", \"key\": \"" KEY11 "\", \"expires\": \"2026-12-24T00:00:00Z\"},\n"
    "  {\"id\": \"2026-12\", \"key\": \"" KEY12 "\", \"expires\": \"2027-01-23T00:00:00Z\", \"note\": \"x\"}\n"
    "]}\n";

static char *repeat(char c, size_t n)
{
	char *s = malloc(n + 1);
	assert_non_null(s);
	memset(s, c, n);
	s[n] = '\0';
	return s;
}

static void test_password_matches_sha1sum(void **state)
{
	(void)state;
	static const struct {
		const char *user, *key, *want;
	} cases[] = {
	    {USER, KEY11, PW_USER_11},
	    {USER, KEY12, PW_USER_12},
	    {DEEP, KEY11, PW_DEEP_11},
	    {"a", "b", "da23614e02469a0d7c7bd1bdab5c9c474b1904dc"}, /* printf '%s%s' a b | sha1sum */
	    {"ApexOne-x", KEY11, "0a17d1b3ae9a8344f36b7c144252d780ef6ca4c5"},
	    {"ApexOne-x", KEY12, "257f6f12c3df0606e93dee17ec6ae13b0c828bcf"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char out[CRED_PASSWORD_LEN + 1];
		assert_int_equal(cred_password(cases[i].user, cases[i].key, out), 0);
		assert_string_equal(out, cases[i].want);
	}
}

static void test_verify_table(void **state)
{
	(void)state;
	struct cred_keys keys;
	struct fps_err e;
	assert_int_equal(cred_keys_parse(keys_json, strlen(keys_json), "apikeys.json", &keys, &e), 0);
	char *a128 = repeat('a', 128), *a129 = repeat('a', 129);

	static const char *const upper = "227331004D075DB2F6A2EEEE15242C7AD6355F39";
	static const char *const mixed = "227331004d075DB2f6a2eeee15242c7ad6355F39";
	const struct {
		const char *name, *user, *pass, *products;
		time_t now;
		enum cred_result want;
	} cases[] = {
	    {"first key", USER, PW_USER_11, "", T_2026_12_01, CRED_OK},
	    {"uppercase password", USER, upper, "", T_2026_12_01, CRED_OK},
	    {"mixed-case password", USER, mixed, "", T_2026_12_01, CRED_OK},
	    {"second overlapping key", USER, PW_USER_12, "", T_2026_12_01, CRED_OK},
	    {"expired key", USER, PW_USER_11, "", T_2027_01_01, CRED_BAD_PASSWORD},
	    {"expires is exclusive", USER, PW_USER_11, "", T_2026_12_24, CRED_BAD_PASSWORD},
	    {"one second before expiry", USER, PW_USER_11, "", T_2026_12_24 - 1, CRED_OK},
	    {"newer key after the old expired", USER, PW_USER_12, "", T_2027_01_01, CRED_OK},
	    {"all keys expired", USER, PW_USER_12, "", T_2027_02_01, CRED_NO_VALID_KEY},
	    {"all expired at the boundary", USER, PW_USER_12, "", T_2027_01_23, CRED_NO_VALID_KEY},
	    {"39 chars", USER, "227331004d075db2f6a2eeee15242c7ad6355f3", "", T_2026_12_01, CRED_BAD_PASSWORD},
	    {"41 chars", USER, PW_USER_11 "0", "", T_2026_12_01, CRED_BAD_PASSWORD},
	    {"empty password", USER, "", "", T_2026_12_01, CRED_BAD_PASSWORD},
	    {"one digit off", USER, "227331004d075db2f6a2eeee15242c7ad6355f38", "", T_2026_12_01, CRED_BAD_PASSWORD},
	    {"another user's password", DEEP, PW_USER_11, "", T_2026_12_01, CRED_BAD_PASSWORD},
	    {"the key itself", USER, KEY11, "", T_2026_12_01, CRED_BAD_PASSWORD},
	    {"products: allowed", DEEP, PW_DEEP_11, "ApexOne,DeepSec", T_2026_12_01, CRED_OK},
	    {"products: first listed", USER, PW_USER_11, "ApexOne,DeepSec", T_2026_12_01, CRED_OK},
	    {"products: not listed", USER, PW_USER_11, "DeepSec", T_2026_12_01, CRED_PRODUCT_NOT_ALLOWED},
	    {"products: case-sensitive", USER, PW_USER_11, "apexone", T_2026_12_01, CRED_PRODUCT_NOT_ALLOWED},
	    {"user with ':'", "Apex:One", PW_USER_11, "", T_2026_12_01, CRED_BAD_USER},
	    {"user with space", "Apex One", PW_USER_11, "", T_2026_12_01, CRED_BAD_USER},
	    {"user with tab", "Apex\tOne", PW_USER_11, "", T_2026_12_01, CRED_BAD_USER},
	    {"user with DEL", "Apex\x7fOne", PW_USER_11, "", T_2026_12_01, CRED_BAD_USER},
	    {"user non-ASCII", "Apex\xc3\xa9", PW_USER_11, "", T_2026_12_01, CRED_BAD_USER},
	    {"empty user", "", PW_USER_11, "", T_2026_12_01, CRED_BAD_USER},
	    {"128-byte user", a128, PW_A128_11, "", T_2026_12_01, CRED_OK},
	    {"129-byte user", a129, PW_A128_11, "", T_2026_12_01, CRED_BAD_USER},
	    {"bad user beats no key", "", PW_USER_12, "", T_2027_02_01, CRED_BAD_USER},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct cred_products prod;
		assert_int_equal(cred_products_parse(cases[i].products, &prod, &e), 0);
		enum cred_result got = cred_verify(&keys, cases[i].user, cases[i].pass, cases[i].now, &prod);
		if (got != cases[i].want)
			fail_msg("%s: got %s, want %s", cases[i].name, cred_result_str(got),
			         cred_result_str(cases[i].want));
		cred_products_free(&prod);
	}
	assert_int_equal(cred_verify(NULL, USER, PW_USER_11, T_2026_12_01, NULL), CRED_NO_VALID_KEY);
	free(a128);
	free(a129);
	cred_keys_free(&keys);
}

static void test_check_user_without_products(void **state)
{
	(void)state;
	assert_int_equal(cred_check_user(USER, NULL), CRED_OK);
	assert_int_equal(cred_check_user("!~", NULL), CRED_OK);
	assert_int_equal(cred_check_user(NULL, NULL), CRED_BAD_USER);
	assert_int_equal(cred_check_user("a\nb", NULL), CRED_BAD_USER);
}

static void test_parse_time(void **state)
{
	(void)state;
	static const struct {
		const char *s;
		int rc;
		time_t want;
	} cases[] = {
	    {"1970-01-01T00:00:00Z", 0, 0},
	    {"2026-12-24T00:00:00Z", 0, T_2026_12_24},
	    {"2026-12-24T00:00:00.123456Z", 0, T_2026_12_24},
	    {"2028-02-29T12:00:00Z", 0, 1835438400}, /* date -u -d 2028-02-29T12:00:00Z +%s */
	    {"2027-02-29T12:00:00Z", -1, 0},
	    {"2026-02-30T00:00:00Z", -1, 0},
	    {"2026-12-24", -1, 0},
	    {"2026-12-24T00:00:00", -1, 0},
	    {"2026-12-24T00:00:00+00:00", -1, 0},
	    {"2026-12-24T00:00:00+01:00", -1, 0},
	    {"2026-12-24 00:00:00Z", -1, 0},
	    {"2026-1-24T00:00:00Z", -1, 0},
	    {" 2026-12-24T00:00:00Z", -1, 0},
	    {"2026-12-24T00:00:00Zjunk", -1, 0},
	    {"2026-12-24T00:00:00.Z", -1, 0},
	    {"2026-12-24T25:00:00Z", -1, 0},
	    {"2026-12-24T00:60:00Z", -1, 0},
	    {"2026-12-24T00:00:60Z", -1, 0},
	    {"2026-13-01T00:00:00Z", -1, 0},
	    {"garbage", -1, 0},
	    {"", -1, 0},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		time_t t = 42;
		int rc = cred_parse_time(cases[i].s, &t);
		if (rc != cases[i].rc)
			fail_msg("'%s': rc %d, want %d", cases[i].s, rc, cases[i].rc);
		if (rc == 0 && t != cases[i].want)
			fail_msg("'%s': %lld, want %lld", cases[i].s, (long long)t, (long long)cases[i].want);
	}
}

#define K(id, key, exp) "{\"id\":" id ",\"key\":" key ",\"expires\":" exp "}"
#define GOOD            K("\"a\"", "\"SECRETVALUE\"", "\"2026-12-24T00:00:00Z\"")

static void test_keys_file_errors(void **state)
{
	(void)state;
	static const struct {
		const char *json, *want; /* want: substring of the message */
		int line;
	} cases[] = {
	    {"", "not valid JSON", 1},
	    {"{\"keys\": [\n" GOOD ",\n  {oops}]}", "not valid JSON", 3},
	    {"{\"keys\":[" GOOD "]} trailing", "unexpected data after the JSON value", 1},
	    {"[" GOOD "]", "top level must be an object", 0},
	    {"{}", "missing \"keys\"", 0},
	    {"{\"keys\": {}}", "\"keys\" must be an array", 0},
	    {"{\"keys\": []}", "\"keys\" is empty", 0},
	    {"{\"keys\": [1]}", "keys[0]: must be an object", 0},
	    {"{\"keys\":[{\"key\":\"SECRETVALUE\",\"expires\":\"2026-12-24T00:00:00Z\"}]}", "keys[0]: missing \"id\"",
	     0},
	    {"{\"keys\":[" GOOD "," K("7", "\"SECRETVALUE\"", "\"2026-12-24T00:00:00Z\"") "]}",
	     "keys[1]: \"id\" must be a string", 0},
	    {"{\"keys\":[" K("\"\"", "\"SECRETVALUE\"", "\"2026-12-24T00:00:00Z\"") "]}", "keys[0]: \"id\" must be 1..",
	     0},
	    {"{\"keys\":[" K("\"a\\nb\"", "\"SECRETVALUE\"", "\"2026-12-24T00:00:00Z\"") "]}", "keys[0]: \"id\"", 0},
	    {"{\"keys\":[{\"id\":\"b\",\"expires\":\"2026-12-24T00:00:00Z\"}]}", "keys[0] (id \"b\"): missing \"key\"",
	     0},
	    {"{\"keys\":[" K("\"b\"", "12345", "\"2026-12-24T00:00:00Z\"") "]}",
	     "keys[0] (id \"b\"): \"key\" must be a string", 0},
	    {"{\"keys\":[" K("\"b\"", "\"\"", "\"2026-12-24T00:00:00Z\"") "]}",
	     "keys[0] (id \"b\"): \"key\" must be 1..", 0},
	    {"{\"keys\":[" K("\"b\"", "\"SECRETVALUE\\n\"", "\"2026-12-24T00:00:00Z\"") "]}", "control character", 0},
	    {"{\"keys\":[" K("\"b\"", "\"SECRETVALUE \"", "\"2026-12-24T00:00:00Z\"") "]}", "trailing spaces", 0},
	    {"{\"keys\":[{\"id\":\"c\",\"key\":\"SECRETVALUE\"}]}", "keys[0] (id \"c\"): missing \"expires\"", 0},
	    {"{\"keys\":[" K("\"c\"", "\"SECRETVALUE\"", "1798070400") "]}", "\"expires\" must be a string", 0},
	    {"{\"keys\":[" K("\"c\"", "\"SECRETVALUE\"", "\"2026-12-24\"") "]}",
	     "keys[0] (id \"c\"): \"expires\" is not", 0},
	    {"{\"keys\":[" K("\"c\"", "\"SECRETVALUE\"", "\"tomorrow\"") "]}", "RFC 3339", 0},
	    {"{\"keys\":[" K("\"c\"", "\"SECRETVALUE\"", "\"2026-02-30T00:00:00Z\"") "]}", "RFC 3339", 0},
	    {"{\"keys\":[" K("\"c\"", "\"SECRETVALUE\"", "null") "]}", "\"expires\" must be a string", 0},
	    {"{\"keys\":[" GOOD "," GOOD "]}", "keys[1] (id \"a\"): duplicate id", 0},
	    {"{\"keys\":[" GOOD "]", "not valid JSON", 1},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct cred_keys keys = {(struct cred_key *)1, 99}; /* must be reset on failure */
		struct fps_err e;
		err_clear(&e);
		int rc = cred_keys_parse(cases[i].json, strlen(cases[i].json), "secrets/apikeys.json", &keys, &e);
		if (rc != -1)
			fail_msg("case %zu: accepted: %s", i, cases[i].json);
		assert_null(keys.v);
		assert_int_equal(keys.n, 0);
		assert_string_equal(e.file, "secrets/apikeys.json");
		if (strstr(e.msg, cases[i].want) == NULL)
			fail_msg("case %zu: message '%s' lacks '%s'", i, e.msg, cases[i].want);
		if (strstr(e.msg, "SECRETVALUE") != NULL)
			fail_msg("case %zu: message leaks the key: '%s'", i, e.msg);
		assert_int_equal(e.line, cases[i].line);
	}
}

static void test_keys_load_file(void **state)
{
	(void)state;
	char dir[] = "/tmp/test_cred.XXXXXX";
	assert_non_null(mkdtemp(dir));
	char path[256], big[256];
	snprintf(path, sizeof(path), "%s/apikeys.json", dir);
	snprintf(big, sizeof(big), "%s/big.json", dir);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(keys_json, f);
	fclose(f);

	struct cred_keys keys;
	struct fps_err e;
	err_clear(&e);
	assert_int_equal(cred_keys_load(path, &keys, &e), 0);
	assert_int_equal(keys.n, 2);
	assert_string_equal(keys.v[0].id, "2026-11");
	assert_string_equal(keys.v[1].id, "2026-12");
	assert_int_equal(keys.v[1].key_len, strlen(KEY12));
	assert_int_equal(cred_newest_expiry(&keys), T_2027_01_23);
	assert_int_equal(cred_keys_valid(&keys, T_2026_12_01), 2);
	assert_int_equal(cred_keys_valid(&keys, T_2027_01_01), 1);
	assert_int_equal(cred_keys_valid(&keys, T_2027_02_01), 0);
	cred_keys_free(&keys);
	assert_null(keys.v);
	cred_keys_free(&keys); /* twice is harmless */
	assert_int_equal(cred_newest_expiry(&keys), 0);

	/* A missing file names itself. */
	char missing[300];
	snprintf(missing, sizeof(missing), "%s/nope.json", dir);
	assert_int_equal(cred_keys_load(missing, &keys, &e), -1);
	assert_string_equal(e.file, missing);
	assert_non_null(strstr(e.msg, "No such file"));

	/* A file over the limit is refused before parsing. */
	f = fopen(big, "w");
	assert_non_null(f);
	for (size_t i = 0; i <= CRED_KEYS_FILE_MAX; i += 8)
		fputs("        ", f);
	fclose(f);
	assert_int_equal(cred_keys_load(big, &keys, &e), -1);
	assert_non_null(strstr(e.msg, "larger than"));

	unlink(path);
	unlink(big);
	rmdir(dir);
}

static void test_products_parse(void **state)
{
	(void)state;
	static const struct {
		const char *csv;
		int rc;
		size_t n;
	} cases[] = {
	    {"", 0, 0},     {"ApexOne", 0, 1}, {"ApexOne,DeepSec", 0, 2}, {"A,,B", -1, 0}, {",A", -1, 0}, {"A,", -1, 0},
	    {"A:B", -1, 0}, {"A B", -1, 0},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct cred_products p;
		struct fps_err e;
		err_clear(&e);
		int rc = cred_products_parse(cases[i].csv, &p, &e);
		if (rc != cases[i].rc)
			fail_msg("'%s': rc %d, want %d", cases[i].csv, rc, cases[i].rc);
		assert_int_equal(p.n, cases[i].n);
		if (rc != 0)
			assert_non_null(strstr(e.msg, "products: entry"));
		cred_products_free(&p);
	}
	struct cred_products p;
	struct fps_err e;
	assert_int_equal(cred_products_parse("ApexOne,DeepSec", &p, &e), 0);
	assert_string_equal(p.names[1], "DeepSec");
	cred_products_free(&p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_password_matches_sha1sum),
	    cmocka_unit_test(test_verify_table),
	    cmocka_unit_test(test_check_user_without_products),
	    cmocka_unit_test(test_parse_time),
	    cmocka_unit_test(test_keys_file_errors),
	    cmocka_unit_test(test_keys_load_file),
	    cmocka_unit_test(test_products_parse),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
