/*
 * Unit tests for whitelist.c: entry normalization (docs/configuration.md), folding, and the
 * most-specific route lookup. Table-driven: input, expected output or reason.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "snapshot.h"
#include "whitelist.h"

struct norm_case {
	const char *raw;
	enum wl_norm result;
	const char *out; /* normalized name, or a substring of the reason when rejected */
	enum wl_kind kind;
};

static const struct norm_case norm_cases[] = {
    {"example.com", WL_NORM_OK, "example.com", WL_EXACT},
    {"Example.COM", WL_NORM_OK, "example.com", WL_EXACT},
    {"example.com.", WL_NORM_OK, "example.com", WL_EXACT},
    {"*.example.com", WL_NORM_OK, "example.com", WL_WILD},
    {".example.com", WL_NORM_OK, "example.com", WL_WILD},
    {"*.Example.com.", WL_NORM_OK, "example.com", WL_WILD},
    {"https://Example.com:443/x", WL_NORM_CHANGED, "example.com", WL_EXACT},
    {"http://user@files.example.com/a?b#c", WL_NORM_CHANGED, "files.example.com", WL_EXACT},
    {"https://[2001:DB8::1]:8443/", WL_NORM_CHANGED, "2001:db8::1", WL_IP},
    {"192.0.2.10", WL_NORM_OK, "192.0.2.10", WL_IP},
    {"2001:0db8:0000::0001", WL_NORM_OK, "2001:db8::1", WL_IP},
    {"[::1]", WL_NORM_OK, "::1", WL_IP},
    {"xn--bcher-kva.example", WL_NORM_OK, "xn--bcher-kva.example", WL_EXACT},
    {"under_score.example.com", WL_NORM_OK, "under_score.example.com", WL_EXACT},
    {"localhost", WL_NORM_OK, "localhost", WL_EXACT},
    /* rejected */
    {"bad entry", WL_NORM_REJECT, "whitespace", WL_EXACT},
    {"a.example.com\nhttp_access allow all", WL_NORM_REJECT, "control character", WL_EXACT},
    {"a.example.com#x", WL_NORM_REJECT, "not allowed", WL_EXACT},
    {"\"a.example.com\"", WL_NORM_REJECT, "quote", WL_EXACT},
    {"a*.example.com", WL_NORM_REJECT, "'*'", WL_EXACT},
    {"*.*.example.com", WL_NORM_REJECT, "'*'", WL_EXACT},
    {"example.*", WL_NORM_REJECT, "'*'", WL_EXACT},
    {"*.com", WL_NORM_REJECT, "top-level", WL_WILD},
    {"a..example.com", WL_NORM_REJECT, "empty label", WL_EXACT},
    {"-a.example.com", WL_NORM_REJECT, "'-'", WL_EXACT},
    {"b\xc3\xbc"
     "cher.example",
     WL_NORM_REJECT, "non-ASCII", WL_EXACT},
    {"xn--zz.example", WL_NORM_REJECT, "punycode", WL_EXACT},
    {"xn--abc-.example", WL_NORM_REJECT, "'-'", WL_EXACT},
    {"1.2.3.256", WL_NORM_REJECT, "numeric", WL_EXACT},
    {"", WL_NORM_REJECT, "empty", WL_EXACT},
    {"ftp//broken", WL_NORM_REJECT, "not allowed", WL_EXACT},
    {"https://", WL_NORM_REJECT, "malformed URL", WL_EXACT},
    {"a.example.com:443", WL_NORM_REJECT, "not allowed", WL_EXACT},
};

static void test_normalize_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(norm_cases) / sizeof(norm_cases[0]); i++) {
		const struct norm_case *c = &norm_cases[i];
		char out[WL_NAME_MAX + 1] = "", note[128];
		enum wl_kind kind = WL_EXACT;
		enum wl_norm r = wl_normalize(c->raw, out, &kind, note, sizeof(note));
		if (r != c->result)
			fail_msg("case %zu '%s': result %d, want %d (%s)", i, c->raw, r, c->result, note);
		if (r == WL_NORM_REJECT) {
			if (strstr(note, c->out) == NULL)
				fail_msg("case %zu '%s': reason '%s' lacks '%s'", i, c->raw, note, c->out);
		} else {
			if (strcmp(out, c->out) != 0 || kind != c->kind)
				fail_msg("case %zu '%s': got '%s' kind %d, want '%s' kind %d", i, c->raw, out, kind,
				         c->out, c->kind);
		}
	}
}

static void test_length_limits(void **state)
{
	(void)state;
	char label63[64], label64[65], name[300], out[WL_NAME_MAX + 1], note[128];
	enum wl_kind kind;
	memset(label63, 'a', 63);
	label63[63] = '\0';
	memset(label64, 'a', 64);
	label64[64] = '\0';
	snprintf(name, sizeof(name), "%s.example.com", label63);
	assert_int_equal(wl_normalize(name, out, &kind, note, sizeof(note)), WL_NORM_OK);
	snprintf(name, sizeof(name), "%s.example.com", label64);
	assert_int_equal(wl_normalize(name, out, &kind, note, sizeof(note)), WL_NORM_REJECT);
	assert_non_null(strstr(note, "63"));
	/* 4 x 63 + 3 dots = 255 > 253 */
	snprintf(name, sizeof(name), "%s.%s.%s.%s", label63, label63, label63, label63);
	assert_int_equal(wl_normalize(name, out, &kind, note, sizeof(note)), WL_NORM_REJECT);
	assert_non_null(strstr(note, "253"));
}

static void add(struct wl_policy *p, const char *raw)
{
	char out[WL_NAME_MAX + 1], note[128];
	enum wl_kind kind;
	assert_int_not_equal(wl_normalize(raw, out, &kind, note, sizeof(note)), WL_NORM_REJECT);
	assert_int_equal(wl_policy_add(p, out, kind), 0);
}

static void route(struct wl_policy *p, const char *raw, enum wl_via via)
{
	char out[WL_NAME_MAX + 1], note[128];
	enum wl_kind kind;
	assert_int_not_equal(wl_normalize(raw, out, &kind, note, sizeof(note)), WL_NORM_REJECT);
	assert_int_equal(wl_policy_add_route(p, out, kind, via), 0);
}

static void test_folding(void **state)
{
	(void)state;
	struct wl_policy p;
	wl_policy_init(&p, WL_VIA_DIRECT);
	add(&p, "www.example.com"); /* covered by *.example.com */
	add(&p, "example.com");     /* the apex is covered too */
	add(&p, "*.example.com");
	add(&p, "*.a.example.com"); /* a deeper wildcard under a wildcard */
	add(&p, "EXAMPLE.com.");    /* duplicate after normalization */
	add(&p, "other.net");
	add(&p, "other.net");
	add(&p, "192.0.2.1");
	add(&p, "192.0.2.1");
	assert_int_equal(wl_policy_finish(&p), 0);
	assert_int_equal(p.n_entries, 3);
	assert_int_equal(p.n_folded, 6);
	assert_string_equal(p.entries[0].name, "192.0.2.1");
	assert_string_equal(p.entries[1].name, "example.com");
	assert_int_equal(p.entries[1].kind, WL_WILD);
	assert_string_equal(p.entries[2].name, "other.net");
	wl_policy_free(&p);
}

/* Found by fuzz_whitelist_json: a wildcard listed before the wider one that covers it was
 * freed while the wildcard set still pointed at its name; a later name under it read freed
 * memory (ASan: heap-use-after-free in htab_get). */
static void test_folding_a_covered_wildcard_listed_first(void **state)
{
	(void)state;
	struct wl_policy p;
	wl_policy_init(&p, WL_VIA_DIRECT);
	add(&p, "*.b.example.com");
	add(&p, "*.example.com");
	add(&p, "x.b.example.com");
	add(&p, "*.c.b.example.com");
	assert_int_equal(wl_policy_finish(&p), 0);
	assert_int_equal(p.n_entries, 1);
	assert_int_equal(p.n_folded, 3);
	assert_true(wl_lookup(&p, "y.b.example.com", false, NULL));
	wl_policy_free(&p);
}

struct lookup_case {
	const char *host;
	bool allowed;
	enum wl_via via;
};

static void test_lookup_and_routes(void **state)
{
	(void)state;
	struct wl_policy p;
	wl_policy_init(&p, WL_VIA_DIRECT);
	add(&p, "*.example-vendor.com");
	add(&p, "files.example.com");
	add(&p, "*.partner.example");
	add(&p, "2001:db8::1");
	add(&p, "exact.test");
	route(&p, "*.example-vendor.com", WL_VIA_TUNNEL);
	route(&p, "download.example-vendor.com", WL_VIA_DIRECT); /* exact beats wildcard */
	route(&p, "*.cdn.example-vendor.com", WL_VIA_UPSTREAM);  /* deeper wildcard under another route */
	route(&p, "*.partner.example", WL_VIA_UPSTREAM);
	route(&p, "*.partner.example", WL_VIA_TUNNEL); /* duplicate: the first listed wins */
	route(&p, "files.example.com", WL_VIA_TUNNEL);
	route(&p, "*.example-vendor.com", WL_VIA_DIRECT); /* duplicate again: first still wins */
	assert_int_equal(wl_policy_finish(&p), 0);
	static const struct lookup_case cases[] = {
	    {"example-vendor.com", true, WL_VIA_TUNNEL},
	    {"api.example-vendor.com", true, WL_VIA_TUNNEL},
	    {"download.example-vendor.com", true, WL_VIA_DIRECT},
	    {"x.download.example-vendor.com", true, WL_VIA_TUNNEL},
	    {"cdn.example-vendor.com", true, WL_VIA_UPSTREAM},
	    {"a.b.cdn.example-vendor.com", true, WL_VIA_UPSTREAM},
	    {"partner.example", true, WL_VIA_UPSTREAM},
	    {"files.example.com", true, WL_VIA_TUNNEL},
	    {"example.com", false, WL_VIA_DIRECT},
	    {"x.files.example.com", false, WL_VIA_DIRECT},
	    {"exact.test", true, WL_VIA_DIRECT},
	    {"sub.exact.test", false, WL_VIA_DIRECT},
	    {"evilexample-vendor.com", false, WL_VIA_DIRECT},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		enum wl_via via = WL_VIA_COUNT;
		bool ok = wl_lookup(&p, cases[i].host, false, &via);
		if (ok != cases[i].allowed || (ok && via != cases[i].via))
			fail_msg("%s: allowed %d via %s, want %d via %s", cases[i].host, ok, wl_via_name(via),
			         cases[i].allowed, wl_via_name(cases[i].via));
	}
	/* IP literals match only literally, never through a name or suffix. */
	char host[64];
	bool is_ip;
	assert_int_equal(wl_host_normalize("[2001:DB8:0::1]", host, sizeof(host), &is_ip), 0);
	assert_true(is_ip);
	assert_true(wl_lookup(&p, host, is_ip, NULL));
	assert_int_equal(wl_host_normalize("2001:db8::2", host, sizeof(host), &is_ip), 0);
	assert_false(wl_lookup(&p, host, is_ip, NULL));
	assert_int_equal(wl_host_normalize("API.Example-Vendor.com.", host, sizeof(host), &is_ip), 0);
	assert_false(is_ip);
	assert_true(wl_lookup(&p, host, false, NULL));
	/* Names are judged as Squid sends them: an escape is not decoded, it is refused. */
	const char *bad[] = {"allowed%2etest",
	                     "%61pi.example-vendor.com",
	                     "api.example-vendor.com%00",
	                     "a b",
	                     "a\x1b.test",
	                     "a/b.test",
	                     "a:b.test",
	                     "[a.test]",
	                     "a.test\\",
	                     "..api.example-vendor.com",
	                     ".api.example-vendor.com",
	                     "api..example-vendor.com"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (wl_host_normalize(bad[i], host, sizeof(host), &is_ip) != -1)
			fail_msg("'%s' was accepted as a host name", bad[i]);
	wl_policy_free(&p);
}

static void test_snapshot_round_trip(void **state)
{
	(void)state;
	struct wl_policy p, q;
	wl_policy_init(&p, WL_VIA_UPSTREAM);
	add(&p, "*.example.com");
	add(&p, "a.example.net");
	add(&p, "192.0.2.7");
	route(&p, "a.example.net", WL_VIA_TUNNEL);
	assert_int_equal(wl_policy_finish(&p), 0);
	char *text;
	size_t len;
	assert_int_equal(snapshot_render(&p, 42, &text, &len), 0);
	unsigned long long gen;
	struct fps_err e;
	err_clear(&e);
	assert_int_equal(snapshot_parse(text, len, "snap", &q, &gen, &e), 0);
	assert_int_equal(gen, 42);
	enum wl_via via;
	assert_true(wl_lookup(&q, "x.example.com", false, &via));
	assert_int_equal(via, WL_VIA_UPSTREAM);
	assert_true(wl_lookup(&q, "a.example.net", false, &via));
	assert_int_equal(via, WL_VIA_TUNNEL);
	assert_true(wl_lookup(&q, "192.0.2.7", true, NULL));
	wl_policy_free(&q);
	/* A torn snapshot (no "end") is refused. */
	assert_int_equal(snapshot_parse(text, len - 4, "snap", &q, &gen, &e), -1);
	assert_non_null(strstr(e.msg, "truncated"));
	/* A record that is not a record is refused with its line. */
	const char *bad = "fps-acl-snapshot 1\ndefault direct\nW exact a b c\nend\n";
	assert_int_equal(snapshot_parse(bad, strlen(bad), "snap", &q, &gen, &e), -1);
	assert_int_equal(e.line, 3);
	free(text);
	wl_policy_free(&p);
}

static void test_hundred_thousand_entries(void **state)
{
	(void)state;
	struct wl_policy p;
	wl_policy_init(&p, WL_VIA_DIRECT);
	char name[64];
	for (int i = 0; i < 100000; i++) {
		/* every tenth entry is a wildcard that covers the nine exact names after it */
		if (i % 10 == 0)
			snprintf(name, sizeof(name), "*.d%d.example.com", i / 10);
		else
			snprintf(name, sizeof(name), "h%d.d%d.example.com", i, i / 10);
		add(&p, name);
	}
	assert_int_equal(wl_policy_finish(&p), 0);
	assert_int_equal(p.n_entries, 10000);
	assert_int_equal(p.n_folded, 90000);
	assert_true(wl_lookup(&p, "h99999.d9999.example.com", false, NULL));
	assert_false(wl_lookup(&p, "d10000.example.com", false, NULL));
	wl_policy_free(&p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_normalize_table),
	    cmocka_unit_test(test_length_limits),
	    cmocka_unit_test(test_folding),
	    cmocka_unit_test(test_folding_a_covered_wildcard_listed_first),
	    cmocka_unit_test(test_lookup_and_routes),
	    cmocka_unit_test(test_snapshot_round_trip),
	    cmocka_unit_test(test_hundred_thousand_entries),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
