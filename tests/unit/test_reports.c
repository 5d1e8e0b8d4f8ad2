/*
 * Unit tests for reports.c: the two log formats, the cause of each failure as Squid 5.7 logs
 * it (lines taken from real runs, tests/integration/test_reports.py), traffic counting, and
 * memory that stays bounded under a flood of distinct hosts.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "authreasons.h"
#include "reports.h"

#define U "ApexOne-1b4e28ba-2fa1-11d2-883f-0016d3cca427"

static void test_native_line_parses(void **state)
{
	(void)state;
	const char *s = "1796647358.225    255 127.0.0.1 TCP_MISS/200 275 GET http://OK.fps.test:36381/x " U
	                " HIER_DIRECT/127.0.0.1 text/plain";
	struct rep_line l;
	assert_int_equal(rep_parse_native(s, strlen(s), &l), 0);
	assert_int_equal(l.status, 200);
	assert_string_equal(l.code, "TCP_MISS");
	assert_string_equal(l.host, "ok.fps.test");
	assert_int_equal(l.port, 36381);
	assert_int_equal(l.bytes_out, 275);
	assert_string_equal(l.hier, "HIER_DIRECT");
	assert_string_equal(l.server, "127.0.0.1");
	const char *c =
	    "1796647359.596 46 127.0.0.1 TCP_TUNNEL/200 544 CONNECT ok.fps.test:443 - HIER_DIRECT/10.0.0.1 -";
	assert_int_equal(rep_parse_native(c, strlen(c), &l), 0);
	assert_int_equal(l.port, 443);
	assert_string_equal(l.user, "-");
	const char *bad[] = {"", "garbage", "1.0 2 x TCP_MISS 1 GET http://a/ - HIER_NONE/- -",
	                     "1.0 2 x TCP_MISS/200 -5 GET http://a/ - HIER_NONE/- -"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(rep_parse_native(bad[i], strlen(bad[i]), &l), -1);
}

struct cause_case {
	const char *name, *line, *auth_reason;
	int cause; /* -1: no failure */
	const char *in_detail;
};

static void test_causes_as_squid_logs_them(void **state)
{
	(void)state;
	const struct cause_case cases[] = {
	    {"NXDOMAIN GET",
	     "1.0 8 502 TCP_MISS HIER_NONE - direct 281 3348 GET " U
	     " ERR_READ_ERROR http://nx.fps.test:80/x WITH_SERVER",
	     NULL, REP_DNS, "did not resolve"},
	    {"NXDOMAIN CONNECT",
	     "1.0 5 500 NONE_NONE HIER_NONE - direct 263 0 CONNECT " U " ERR_CANNOT_FORWARD nx.fps.test:443 -", NULL,
	     REP_DNS, "did not resolve"},
	    {"no DNS answer",
	     "1.0 38696 502 TCP_MISS HIER_NONE - direct 289 3356 GET " U
	     " ERR_READ_ERROR http://silent.fps.test/x WITH_SERVER",
	     NULL, REP_DNS, "no DNS answer"},
	    {"refused",
	     "1.0 5 503 TCP_MISS HIER_DIRECT 127.0.0.1 direct 281 3378 GET " U
	     " ERR_CONNECT_FAIL http://ok.fps.test:17524/x WITH_SERVER",
	     NULL, REP_CONNECT, "127.0.0.1"},
	    {"read timeout",
	     "1.0 2001 504 TCP_MISS HIER_DIRECT 127.0.0.1 direct 281 3378 GET " U
	     " ERR_READ_TIMEOUT http://ok.fps.test/x -",
	     NULL, REP_TIMEOUT, "ERR_READ_TIMEOUT"},
	    {"origin 503", "1.0 5 503 TCP_MISS HIER_DIRECT 127.0.0.1 direct 281 100 GET " U " - http://ok.fps.test/x -",
	     NULL, REP_ORIGIN, "503"},
	    {"origin 404 is no failure",
	     "1.0 5 404 TCP_MISS HIER_DIRECT 127.0.0.1 direct 281 100 GET " U " - http://ok.fps.test/x -", NULL, -1,
	     NULL},
	    {"whitelist denial is the denied report's",
	     "1.0 0 403 TCP_DENIED HIER_NONE - - 275 835 GET " U " ERR_FPS_NOT_WHITELISTED http://ok.other/x -", NULL,
	     -1, NULL},
	    {"port",
	     "1.0 0 403 TCP_DENIED HIER_NONE - - 261 733 CONNECT " U " ERR_FPS_PORT_NOT_ALLOWED ok.fps.test:8443 -",
	     NULL, REP_PORT, "connect_ports"},
	    {"network",
	     "1.0 0 403 TCP_DENIED HIER_NONE - direct 291 826 GET " U " ERR_FPS_BLOCKED_NETWORK http://b.fps.test/x -",
	     NULL, REP_NETWORK, "blocked"},
	    {"no credentials", "1.0 0 407 TCP_DENIED HIER_NONE - - 136 3432 GET - ERR_CACHE_ACCESS_DENIED http://a/x -",
	     NULL, REP_AUTH_MISSING, "no credentials"},
	    {"bad key", "1.0 0 407 TCP_DENIED HIER_NONE - - 136 3432 GET " U " ERR_CACHE_ACCESS_DENIED http://a/x -",
	     "bad_key", REP_AUTH_BAD_KEY, "no valid API key"},
	    {"expired key",
	     "1.0 0 407 TCP_DENIED HIER_NONE - - 136 3432 GET " U " ERR_CACHE_ACCESS_DENIED http://a/x -",
	     "expired_key", REP_AUTH_EXPIRED_KEY, "expired"},
	    {"unknown product",
	     "1.0 0 407 TCP_DENIED HIER_NONE - - 136 3432 GET Rogue-1 ERR_CACHE_ACCESS_DENIED http://a/ -",
	     "unknown_user", REP_AUTH_UNKNOWN_USER, "auth.products"},
	    {"https absolute",
	     "1.0 0 400 TCP_DENIED HIER_NONE - - 136 3432 GET " U " ERR_FPS_HTTPS_NEEDS_CONNECT https://a.fps.test/x -",
	     NULL, REP_HTTPS_ABSOLUTE, "CONNECT"},
	    {"tunnel refused, TLS failed",
	     "1.0 3 502 TCP_MISS FIRSTUP_PARENT 127.0.0.1 tunnel 281 3300 GET " U
	     " ERR_READ_ERROR http://t.fps.test/x WITH_SERVER",
	     NULL, REP_TLS, "Corp CA"},
	    {"upstream refused",
	     "1.0 3 503 TCP_MISS HIER_NONE - upstream 281 3300 GET " U
	     " ERR_CONNECT_FAIL http://u.fps.test/x WITH_SERVER",
	     NULL, REP_ROUTE_DOWN, "upstream"},
	    {"2xx", "1.0 3 200 TCP_TUNNEL HIER_DIRECT 1.2.3.4 direct 780 544 CONNECT " U " - a.fps.test:443 -", NULL,
	     -1, NULL},
	};
	struct rep_context ctx = {.has_tunnel = true, .has_upstream = true, .tunnel_tls_failed = true};
	snprintf(ctx.tunnel_error, sizeof(ctx.tunnel_error), "certificate issued by 'Corp CA'");
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct cause_case *c = &cases[i];
		struct rep_line l;
		char detail[REP_DETAIL_MAX] = "";
		enum rep_route route;
		if (rep_parse_detail(c->line, strlen(c->line), &l) != 0)
			fail_msg("%s: does not parse", c->name);
		int got = rep_classify(&l, &ctx, c->auth_reason, detail, sizeof(detail), &route);
		if (got != c->cause)
			fail_msg("%s: cause %d, want %d (%s)", c->name, got, c->cause, detail);
		if (c->in_detail && strstr(detail, c->in_detail) == NULL)
			fail_msg("%s: detail '%s' lacks '%s'", c->name, detail, c->in_detail);
	}
}

static void test_traffic_counts_products_bytes_and_minutes(void **state)
{
	(void)state;
	struct rep_state *r = reports_new("/nonexistent", NULL, 1000.0);
	assert_non_null(r);
	char line[512];
	for (int i = 0; i < 10; i++) {
		snprintf(line, sizeof(line),
		         "1796647358.%03d 1 127.0.0.1 %s/200 1100 GET http://ok.fps.test/x " U " %s text/plain", i,
		         i < 3 ? "TCP_MEM_HIT" : "TCP_MISS", i < 3 ? "HIER_NONE/-" : "HIER_DIRECT/10.0.0.1");
		reports_feed_native(r, line, strlen(line));
	}
	const char *up =
	    "1796647358.5 3 200 TCP_MISS HIER_DIRECT 10.0.0.1 direct 300281 200 POST " U " - http://ok.fps.test/up -";
	reports_feed_detail(r, up, strlen(up), NULL);
	const char *anon =
	    "1796647358.6 1 127.0.0.1 TCP_DENIED/407 3400 GET http://ok.fps.test/x - HIER_NONE/- text/html";
	reports_feed_native(r, anon, strlen(anon));
	static struct rep_snapshot s;
	reports_snapshot(r, 1796647358.0, &s);
	assert_int_equal(s.n_products, 2);
	const struct rep_product *a = strcmp(s.products[0].name, "ApexOne") == 0 ? &s.products[0] : &s.products[1];
	assert_string_equal(a->name, "ApexOne");
	assert_int_equal(a->requests, 10);
	assert_int_equal(a->bytes_to_agents, 11000);
	assert_int_equal(a->bytes_from_cache, 3300);
	assert_int_equal(a->bytes_from_origin, 7700);
	assert_int_equal(a->bytes_from_agents, 300281);
	assert_int_equal(a->by_route_class[REP_ROUTE_DIRECT][REP_2XX], 7);
	assert_int_equal(a->by_route_class[REP_ROUTE_NONE][REP_2XX], 3);
	assert_int_equal(s.minutes[REP_MINUTES - 1].requests[a->slot], 10);
	assert_int_equal(s.minutes[REP_MINUTES - 1].from_cache, 3300);
	assert_int_equal(s.n_dest, 1);
	assert_int_equal(s.dest[0].requests, 10); /* served from the origin or the cache; not the 407 */
	assert_int_equal(s.dest[0].bytes_from_cache, 3300);
	reports_free(r);
}

/* 300,000 distinct hosts, each failing once, and as many served: the tables keep their
 * capacity, say they are truncated, and the totals stay exact; the products fold into other. */
static void test_flood_stays_bounded(void **state)
{
	(void)state;
	struct rep_state *r = reports_new("/nonexistent", NULL, 1.0);
	assert_non_null(r);
	char line[512];
	enum { N = 300000 };
	for (int i = 0; i < N; i++) {
		snprintf(line, sizeof(line),
		         "2.0 0 403 TCP_DENIED HIER_NONE - - 261 733 CONNECT P%d-x ERR_FPS_PORT_NOT_ALLOWED "
		         "h%d.example:8443 -",
		         i % 40, i);
		reports_feed_detail(r, line, strlen(line), NULL);
		snprintf(line, sizeof(line),
		         "2.0 1 127.0.0.1 TCP_MISS/200 100 GET http://s%d.example/ P%d-x HIER_DIRECT/1.2.3.4 -", i,
		         i % 40);
		reports_feed_native(r, line, strlen(line));
	}
	static struct rep_snapshot s;
	reports_snapshot(r, 3.0, &s);
	assert_int_equal(s.failures_total, N);
	assert_int_equal(s.failures_by_cause[REP_PORT], N);
	assert_true(s.failures_truncated);
	assert_true(s.n_fail <= REP_FAIL_TOP);
	assert_true(s.destinations_truncated);
	assert_true(s.n_dest <= REP_DEST_TOP);
	assert_int_equal(s.requests_total, N);
	assert_int_equal(s.n_products, REP_PRODUCTS + 1); /* 16 named + other */
	assert_string_equal(s.products[s.n_products - 1].name, "other");
	reports_free(r);
}

/* The native log names a parent by address: the upstream's address tells it from the tunnel. */
static void test_native_routes_by_parent_address(void **state)
{
	(void)state;
	struct rep_state *r = reports_new("/nonexistent", NULL, 1.0);
	assert_non_null(r);
	struct rep_context ctx = {.has_tunnel = true, .has_upstream = true, .tunnel_up = true};
	snprintf(ctx.upstream_addr, sizeof(ctx.upstream_addr), "10.0.0.5");
	reports_poll(r, &ctx); /* no files: only remembers the context */
	const char *lines[] = {
	    "2.0 1 127.0.0.1 TCP_MISS/200 100 GET http://u.example/ " U " FIRSTUP_PARENT/10.0.0.5 -",
	    "2.0 1 127.0.0.1 TCP_MISS/200 100 GET http://t.example/ " U " FIRSTUP_PARENT/127.0.0.1 -",
	    "2.0 1 127.0.0.1 TCP_MISS/503 100 GET http://d.example/ " U " HIER_DIRECT/1.2.3.4 -",
	};
	for (size_t i = 0; i < 3; i++)
		reports_feed_native(r, lines[i], strlen(lines[i]));
	static struct rep_snapshot s;
	reports_snapshot(r, 3.0, &s);
	assert_int_equal(s.n_products, 1);
	assert_int_equal(s.products[0].by_route_class[REP_ROUTE_UPSTREAM][REP_2XX], 1);
	assert_int_equal(s.products[0].by_route_class[REP_ROUTE_TUNNEL][REP_2XX], 1);
	assert_int_equal(s.products[0].by_route_class[REP_ROUTE_DIRECT][REP_5XX], 1);
	reports_free(r);
}

/* fps-auth's table: bounded (the oldest username forgotten first), one line per username
 * with its latest reason, control bytes and spaces never reach the file. */
static void test_auth_reasons_table_is_bounded(void **state)
{
	(void)state;
	static struct authr_table t;
	char user[64];
	for (int i = 0; i < AUTHR_USERS + 44; i++) {
		snprintf(user, sizeof(user), "P-%d", i);
		authr_record(&t, user, "bad_key", 100.0 + i);
	}
	assert_int_equal(t.n, AUTHR_USERS);
	authr_record(&t, "P-299", "expired_key", 1000.0); /* known: updated, not added */
	authr_record(&t, "bad user\n", "malformed", 1001.0);
	assert_int_equal(t.n, AUTHR_USERS);
	static char buf[AUTHR_USERS * (AUTHR_USER_MAX + 48)];
	size_t len = authr_render(&t, buf, sizeof(buf));
	buf[len] = '\0';
	assert_null(strstr(buf, " P-0\n"));  /* the oldest went first */
	assert_null(strstr(buf, " P-44\n")); /* evicted by the malformed one */
	assert_non_null(strstr(buf, "R 1000.000 expired_key P-299\n"));
	assert_non_null(strstr(buf, "R 1001.000 malformed bad?user?\n"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_native_line_parses),
	    cmocka_unit_test(test_causes_as_squid_logs_them),
	    cmocka_unit_test(test_traffic_counts_products_bytes_and_minutes),
	    cmocka_unit_test(test_flood_stays_bounded),
	    cmocka_unit_test(test_auth_reasons_table_is_bounded),
	    cmocka_unit_test(test_native_routes_by_parent_address),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
