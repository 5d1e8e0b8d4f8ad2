/*
 * Unit tests for statusjson: the /status document parses back with cJSON, carries every field
 * support relies on, escapes hostile rejected entries, and says when the API key runs out.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "statusjson.h"

#define NOW 1795486000.0 /* 2026-11-24T02:06:40Z */

static struct fps_status *base_status(void)
{
	struct fps_status *s = calloc(1, sizeof(*s));
	assert_non_null(s);
	snprintf(s->version, sizeof(s->version), "1.4.0");
	s->start_unix = NOW - 3600;
	s->generation = 9;
	snprintf(s->config_hash, sizeof(s->config_hash), "%064d", 7);
	snprintf(s->apply_mode, sizeof(s->apply_mode), "live");
	s->have_version = true;
	s->whitelist_version = 42;
	s->squid_runs_active = true;
	s->last_reload_unix = NOW - 10;
	s->last_reload_ok = false;
	snprintf(s->last_error, sizeof(s->last_error), "load: /cfg/whitelist.json:3:7: expected a string");
	s->last_success_unix = NOW - 100;
	s->reloads_ok = 8;
	s->reloads_failed = 2;
	s->entries = 5;
	s->by_route[WL_VIA_DIRECT] = 1;
	s->by_route[WL_VIA_UPSTREAM] = 2;
	s->by_route[WL_VIA_TUNNEL] = 2;
	s->folded = 3;
	snprintf(s->squid.name, sizeof(s->squid.name), "squid");
	s->squid.managed = true;
	s->squid.up = true;
	s->squid.pid = 4242;
	s->squid.started_unix = NOW - 61.5;
	s->squid.restarts = 1;
	snprintf(s->squid.state, sizeof(s->squid.state), "running");
	snprintf(s->stunnel.state, sizeof(s->stunnel.state), "stopped");
	s->tunnel.configured = true;
	s->tunnel.up = false;
	s->tunnel.checked_unix = NOW - 2;
	snprintf(s->tunnel.target, sizeof(s->tunnel.target), "tunnel.example-vendor.com:443");
	snprintf(s->tunnel.error, sizeof(s->tunnel.error), "certificate verify failed");
	s->tunnel.interception = true;
	snprintf(s->tunnel.peer_issuer, sizeof(s->tunnel.peer_issuer), "CN=Corp Firewall CA");
	snprintf(s->tunnel.peer_subject, sizeof(s->tunnel.peer_subject), "CN=tunnel.example-vendor.com");
	s->tunnel_needed = true;
	s->auth_enabled = true;
	s->keys_total = 2;
	s->keys_valid = 2;
	s->have_key_expiry = true;
	s->newest_key_expiry_unix = NOW + 20 * 86400.0;
	return s;
}

static cJSON *render_parse(const struct fps_status *s)
{
	char *text = statusjson_render(s, NOW);
	assert_non_null(text);
	cJSON *j = cJSON_Parse(text);
	if (j == NULL)
		fail_msg("does not parse:\n%s", text);
	free(text);
	return j;
}

static cJSON *at(const cJSON *j, const char *path)
{
	char buf[128];
	snprintf(buf, sizeof(buf), "%s", path);
	const cJSON *cur = j;
	for (char *save = NULL, *k = strtok_r(buf, ".", &save); k; k = strtok_r(NULL, ".", &save)) {
		cur = cJSON_GetObjectItemCaseSensitive(cur, k);
		if (cur == NULL)
			fail_msg("no %s", path);
	}
	return (cJSON *)cur;
}

static void assert_num(const cJSON *j, const char *path, double want)
{
	const cJSON *v = at(j, path);
	if (!cJSON_IsNumber(v) || v->valuedouble != want)
		fail_msg("%s: want %g", path, want);
}

static void assert_str(const cJSON *j, const char *path, const char *want)
{
	const cJSON *v = at(j, path);
	if (!cJSON_IsString(v))
		fail_msg("%s is not a string", path);
	assert_string_equal(v->valuestring, want);
}

static void test_fields(void **state)
{
	(void)state;
	struct fps_status *s = base_status();
	cJSON *j = render_parse(s);
	assert_num(j, "generation", 9);
	assert_str(j, "apply_mode", "live");
	assert_num(j, "whitelist_version", 42);
	assert_int_equal(strlen(at(j, "config_hash")->valuestring), 64);
	assert_str(j, "last_reload.time", "2026-11-24T02:06:30Z");
	assert_str(j, "last_reload.result", "failure");
	assert_str(j, "last_reload.error", "load: /cfg/whitelist.json:3:7: expected a string");
	assert_str(j, "last_success", "2026-11-24T02:05:00Z");
	assert_num(j, "reloads.ok", 8);
	assert_num(j, "reloads.failed", 2);
	assert_num(j, "entries.total", 5);
	assert_num(j, "entries.by_route.direct", 1);
	assert_num(j, "entries.by_route.upstream", 2);
	assert_num(j, "entries.by_route.tunnel", 2);
	assert_num(j, "entries.folded", 3);
	assert_num(j, "children.squid.pid", 4242);
	assert_num(j, "children.squid.uptime_seconds", 61);
	assert_num(j, "children.squid.restarts", 1);
	assert_str(j, "children.squid.state", "running");
	assert_true(cJSON_IsTrue(at(j, "children.squid.managed")));
	assert_true(cJSON_IsNull(at(j, "children.stunnel.pid")));
	assert_true(cJSON_IsNull(at(j, "children.stunnel.uptime_seconds")));
	assert_true(cJSON_IsTrue(at(j, "tunnel.configured")));
	assert_true(cJSON_IsFalse(at(j, "tunnel.up")));
	assert_true(cJSON_IsTrue(at(j, "tunnel.interception")));
	assert_str(j, "tunnel.issuer", "CN=Corp Firewall CA");
	assert_str(j, "tunnel.target", "tunnel.example-vendor.com:443");
	assert_str(j, "tunnel.error", "certificate verify failed");
	assert_true(cJSON_IsFalse(at(j, "upstream.configured")));
	assert_true(cJSON_IsNull(at(j, "upstream.checked")));
	assert_true(cJSON_IsTrue(at(j, "auth.enabled")));
	assert_num(j, "auth.keys_valid", 2);
	assert_str(j, "auth.newest_key_expires", "2026-12-14T02:06:40Z");
	assert_num(j, "auth.expires_in_seconds", 20 * 86400);
	assert_true(cJSON_IsNull(at(j, "auth.warning")));
	assert_num(j, "rejected.count", 0);
	assert_int_equal(cJSON_GetArraySize(at(j, "rejected.entries")), 0);
	cJSON_Delete(j);
	free(s);
}

static void test_nothing_yet(void **state)
{
	(void)state;
	struct fps_status *s = calloc(1, sizeof(*s));
	assert_non_null(s);
	cJSON *j = render_parse(s);
	assert_true(cJSON_IsNull(at(j, "last_reload.time")));
	assert_str(j, "last_reload.result", "none");
	assert_true(cJSON_IsNull(at(j, "last_reload.error")));
	assert_true(cJSON_IsNull(at(j, "whitelist_version")));
	assert_true(cJSON_IsNull(at(j, "auth.expires_in_seconds")));
	assert_true(cJSON_IsNull(at(j, "auth.warning"))); /* auth disabled: no key, no warning */
	cJSON_Delete(j);
	free(s);
}

static void test_rejected_entries_escaped(void **state)
{
	(void)state;
	static const struct {
		const char *entry, *want;
	} cases[] = {
	    {"evil\"quote", "evil\"quote"},
	    {"back\\slash", "back\\slash"},
	    {"new\nline\r\ttab\x01\x1f", "new\nline\r\ttab\x01\x1f"},
	    {"caf\xc3\xa9.example", "caf\xc3\xa9.example"},                 /* valid UTF-8 kept */
	    {"bad\xff\xfe.example", "bad\xef\xbf\xbd\xef\xbf\xbd.example"}, /* invalid: U+FFFD */
	    {"trunc\xe2\x82", "trunc\xef\xbf\xbd\xef\xbf\xbd"},             /* cut mid-sequence */
	    {"\"},{\"entry\":\"injected", "\"},{\"entry\":\"injected"},
	};
	size_t n = sizeof(cases) / sizeof(cases[0]);
	struct fps_status *s = base_status();
	s->n_rejected = n + 1000; /* the count is exact, the list is bounded */
	for (size_t i = 0; i < n; i++) {
		snprintf(s->rejected[i].where, sizeof(s->rejected[i].where), "whitelist.json:%zu:5", i + 1);
		snprintf(s->rejected[i].entry, sizeof(s->rejected[i].entry), "%s", cases[i].entry);
		snprintf(s->rejected[i].reason, sizeof(s->rejected[i].reason), "bad \"%zu\"", i);
	}
	/* A field that fills its array with no terminator is read no further than the array. */
	memset(s->rejected[n].entry, 'a', sizeof(s->rejected[n].entry));
	cJSON *j = render_parse(s);
	assert_num(j, "rejected.count", (double)(n + 1000));
	assert_true(cJSON_IsTrue(at(j, "rejected.truncated")));
	cJSON *arr = at(j, "rejected.entries");
	assert_int_equal(cJSON_GetArraySize(arr), STATUS_MAX_REJECTED);
	for (size_t i = 0; i < n; i++) {
		cJSON *e = cJSON_GetArrayItem(arr, (int)i);
		assert_string_equal(cJSON_GetObjectItem(e, "entry")->valuestring, cases[i].want);
		char where[32], reason[32];
		snprintf(where, sizeof(where), "whitelist.json:%zu:5", i + 1);
		snprintf(reason, sizeof(reason), "bad \"%zu\"", i);
		assert_string_equal(cJSON_GetObjectItem(e, "where")->valuestring, where);
		assert_string_equal(cJSON_GetObjectItem(e, "reason")->valuestring, reason);
		assert_int_equal(cJSON_GetArraySize(e), 3);
	}
	cJSON *full = cJSON_GetArrayItem(arr, (int)n);
	assert_int_equal(strlen(cJSON_GetObjectItem(full, "entry")->valuestring), sizeof(s->rejected[n].entry));
	cJSON_Delete(j);

	/* Control characters never appear raw in the text. */
	char *text = statusjson_render(s, NOW);
	assert_non_null(text);
	for (const char *p = text; *p; p++)
		assert_false((unsigned char)*p < 0x20 && *p != '\n' && *p != '\t');
	assert_non_null(strstr(text, "\\u0001"));
	free(text);
	free(s);
}

static void test_key_expiry_warning(void **state)
{
	(void)state;
	static const struct {
		bool enabled;
		size_t valid;
		double days;
		const char *warning; /* substring, NULL = null */
	} cases[] = {
	    {true, 2, 20, NULL},
	    {true, 1, 9.5, "expires in 9.5 days"},
	    {true, 0, -1, "no valid API key"},
	    {false, 0, -1, NULL},
	    {true, 1, 10.5, NULL},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct fps_status *s = base_status();
		s->auth_enabled = cases[i].enabled;
		s->keys_valid = cases[i].valid;
		s->newest_key_expiry_unix = NOW + cases[i].days * 86400;
		cJSON *j = render_parse(s);
		cJSON *w = at(j, "auth.warning");
		if (cases[i].warning == NULL) {
			if (!cJSON_IsNull(w))
				fail_msg("case %zu: unexpected warning %s", i, w->valuestring);
		} else {
			assert_true(cJSON_IsString(w));
			if (strstr(w->valuestring, cases[i].warning) == NULL)
				fail_msg("case %zu: warning '%s' lacks '%s'", i, w->valuestring, cases[i].warning);
		}
		cJSON_Delete(j);
		free(s);
	}
}

static void test_rfc3339(void **state)
{
	(void)state;
	static const struct {
		double t;
		const char *want;
	} cases[] = {{0, ""}, {-5, ""}, {1, "1970-01-01T00:00:01Z"}, {1798761599.9, "2026-12-31T23:59:59Z"}};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char buf[32];
		statusjson_rfc3339(cases[i].t, buf, sizeof(buf));
		assert_string_equal(buf, cases[i].want);
	}
}

/* /status denied and GET /denied: the shape, and the whitelist fragment one line per host. */
static void test_denied_report_and_fragment(void **state)
{
	(void)state;
	struct fps_status *s = base_status();
	s->denied.since = NOW - 600;
	s->denied.total = 9;
	s->denied.distinct = 3;
	s->denied.n_top = 3;
	const char *hosts[] = {"x.example", "x.example", "y.example"};
	unsigned ports[] = {443, 80, 0};
	for (int i = 0; i < 3; i++) {
		struct denied_entry *e = &s->denied.top[i];
		snprintf(e->host, sizeof(e->host), "%s", hosts[i]);
		e->port = ports[i];
		e->count = (unsigned long long)(5 - 2 * i);
		e->first_seen = NOW - 500;
		e->last_seen = NOW - 1;
	}
	snprintf(s->denied.top[0].products[0], sizeof(s->denied.top[0].products[0]), "ApexOne");
	s->denied.top[0].n_products = 1;
	char *text = statusjson_render_denied(s, false);
	cJSON *d = cJSON_Parse(text);
	assert_non_null(d);
	assert_int_equal(cJSON_GetObjectItem(d, "total")->valueint, 9);
	assert_false(cJSON_IsTrue(cJSON_GetObjectItem(d, "truncated")));
	assert_string_equal(cJSON_GetObjectItem(d, "since")->valuestring, "2026-11-24T01:56:40Z");
	cJSON *top = cJSON_GetObjectItem(d, "top");
	assert_int_equal(cJSON_GetArraySize(top), 3);
	cJSON *e0 = cJSON_GetArrayItem(top, 0);
	assert_string_equal(cJSON_GetObjectItem(e0, "host")->valuestring, "x.example");
	assert_int_equal(cJSON_GetObjectItem(e0, "port")->valueint, 443);
	assert_string_equal(cJSON_GetArrayItem(cJSON_GetObjectItem(e0, "products"), 0)->valuestring, "ApexOne");
	assert_true(cJSON_IsNull(cJSON_GetObjectItem(cJSON_GetArrayItem(top, 2), "port")));
	cJSON_Delete(d);
	free(text);
	text = statusjson_render_denied(s, true);
	d = cJSON_Parse(text);
	cJSON *dom = cJSON_GetObjectItem(d, "domains");
	assert_int_equal(cJSON_GetArraySize(dom), 2);
	assert_string_equal(cJSON_GetArrayItem(dom, 0)->valuestring, "x.example");
	assert_string_equal(cJSON_GetArrayItem(dom, 1)->valuestring, "y.example");
	cJSON_Delete(d);
	free(text);
	/* /status carries the same object */
	text = statusjson_render(s, NOW);
	d = cJSON_Parse(text);
	assert_int_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(d, "denied"), "distinct")->valueint, 3);
	assert_string_equal(cJSON_GetObjectItem(d, "whitelist_mode")->valuestring, "enforce");
	assert_true(cJSON_IsNull(cJSON_GetObjectItem(cJSON_GetObjectItem(d, "clock"), "ok")));
	cJSON_Delete(d);
	free(text);
	free(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_fields),
	    cmocka_unit_test(test_nothing_yet),
	    cmocka_unit_test(test_rejected_entries_escaped),
	    cmocka_unit_test(test_key_expiry_warning),
	    cmocka_unit_test(test_rfc3339),
	    cmocka_unit_test(test_denied_report_and_fragment),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
