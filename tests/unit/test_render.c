/*
 * Unit tests for render.c and compile.c: what reaches squid.conf for a given
 * config, in both apply modes, and that nothing from a rejected entry does.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compile.h"
#include "config.h"
#include "render.h"

#ifndef TEMPLATES_DIR
#define TEMPLATES_DIR "squid-templates"
#endif

struct rendered {
	struct fps_config c;
	struct compiled cp;
	struct render_out out;
	const char *conf;
};

static void render_yaml(struct rendered *r, const char *yaml, const char *json)
{
	struct fps_err e;
	err_clear(&e);
	cfg_init_defaults(&r->c);
	if (cfg_parse_yaml(&r->c, yaml, strlen(yaml), "fps.yaml", &e) < 0)
		fail_msg("yaml: %d:%d %s", e.line, e.col, e.msg);
	if (json && cfg_parse_whitelist_json(&r->c, json, strlen(json), "whitelist.json", &e) < 0)
		fail_msg("json: %s", e.msg);
	if (r->c.has_upstream && r->c.upstream_password == NULL)
		r->c.upstream_password = strdup("p@ss word:%");
	assert_int_equal(compile_config(&r->c, &r->cp, &e), 0);
	struct render_ctx rc = {.templates_dir = TEMPLATES_DIR,
	                        .run_dir = "/state/run",
	                        .gen_dir = "/state/current",
	                        .secrets_dir = "/state/secrets",
	                        .bin_dir = "/opt/fps/bin",
	                        .generation = 7,
	                        .max_fds = 4096,
	                        .mgr_port = 3130};
	if (render_generation(&r->c, &r->cp, &rc, &r->out, &e) < 0)
		fail_msg("render: %s", e.msg);
	r->conf = r->out.files[0].data;
	assert_string_equal(r->out.files[0].name, "squid.conf");
}

static void rendered_free(struct rendered *r)
{
	render_free(&r->out);
	compile_free(&r->cp);
	cfg_free(&r->c);
}

static const char *after(const char *hay, const char *needle)
{
	const char *p = strstr(hay, needle);
	if (p == NULL)
		fail_msg("squid.conf lacks '%s'", needle);
	return p;
}

static void test_live_mode_uses_fps_acl_and_never_lists_entries(void **state)
{
	(void)state;
	struct rendered r;
	render_yaml(&r, "proxy: {bind: 127.0.0.1, port: 3128}\nauth: {enabled: false}\n",
	            "{\"domains\": [\"secret-looking.example\", \"bad entry\"]}");
	/* several listening sockets on the one port: Squid accepts one per socket per loop pass */
	const char *port1 =
	    after(r.conf, "\nhttp_port 127.0.0.1:3128 worker-queues\nhttp_port 127.0.0.1:3128 worker-queues\n");
	assert_non_null(strstr(port1 + 1, "\nhttp_port 127.0.0.1:3128 worker-queues\n# "));
	after(r.conf, "external_acl_type fps_acl cache=0 ");
	after(r.conf, "%DST %PORT %un /opt/fps/bin/fps-acl --snapshot /state/current/acl.snapshot "
	              "--generation-file /state/run/acl.generation --denied-dir /state/run/denied\n");
	after(r.conf, "max_filedescriptors 4096\n");
	/* a queue that cannot fill (a full one turns into 403s), every child started up front */
	after(r.conf, "children-max=4 children-startup=4 children-idle=1 concurrency=256 queue-size=4096 %DST");
	after(r.conf, "pipeline_prefetch 0\n");
	assert_null(strstr(r.conf, "secret-looking"));
	assert_null(strstr(r.conf, "bad entry"));
	assert_null(strstr(r.conf, "auth_param"));
	assert_null(render_find(&r.out, "whitelist.dstdomain"));
	const struct render_file *snap = render_find(&r.out, "acl.snapshot");
	assert_non_null(snap);
	assert_non_null(strstr(snap->data, "W exact secret-looking.example\n"));
	assert_null(strstr(snap->data, "bad"));
	/* deny order: whitelist before blocked networks, deny all last */
	const char *wl = after(r.conf, "http_access deny !fps_whitelist");
	const char *blocked = after(r.conf, "http_access deny fps_blocked_dst");
	const char *all = after(r.conf, "http_access deny all");
	assert_true(wl < blocked && blocked < all);
	rendered_free(&r);
}

static void test_auth_block(void **state)
{
	(void)state;
	struct rendered r;
	render_yaml(&r, "auth: {realm: Vendor Proxy, credentials_ttl: 60, products: [ApexOne, Deep-Sec]}\n", NULL);
	after(r.conf, "auth_param basic program /opt/fps/bin/fps-auth --concurrency on --extra-fields 1 --keys "
	              "/state/secrets/apikeys.json --products ApexOne,Deep-Sec --reasons-dir /state/run/denied\n");
	/* the failures report: a second log only for failed, CONNECT and body-carrying requests */
	after(r.conf, "acl fps_detailed any-of fps_http_failed fps_connect fps_has_length fps_chunked\n"
	              "access_log stdio:/state/run/detail.log logformat=fps_detail on-error=drop fps_has_request "
	              "fps_detailed !fps_health_probe\n");
	after(r.conf, "auth_param basic children 4 startup=4 idle=1 concurrency=256 queue-size=4096 "
	              "on-persistent-overload=ERR\n");
	after(r.conf, "auth_param basic realm Vendor Proxy\n");
	after(r.conf, "auth_param basic credentialsttl 60 seconds\n");
	after(r.conf, "auth_param basic casesensitive on\n");
	/* one credential record per (user, password), not per user name */
	after(r.conf, "auth_param basic key_extras \"%#{Proxy-Authorization}>h\"\n");
	/* 407 before anything reveals policy */
	const char *auth = after(r.conf, "http_access deny !fps_users");
	assert_true(auth < after(r.conf, "http_access deny !fps_whitelist"));
	after(r.conf, "http_access allow fps_tagged fps_users\n");
	rendered_free(&r);
}

/* Under SMP the coordinator (process workers + 1) starts no helper: it never asks one. */
static void test_smp_coordinator_starts_no_helpers(void **state)
{
	(void)state;
	struct rendered r;
	render_yaml(&r, "proxy: {workers: 3}\n", NULL);
	after(r.conf, "\nworkers 3\n");
	after(r.conf, "\nif ${process_number} = 4\nauth_param basic children 4 startup=0 idle=1 concurrency=256 "
	              "queue-size=4096 on-persistent-overload=ERR\nelse\nauth_param basic children 4 startup=4 idle=1 "
	              "concurrency=256 queue-size=4096 on-persistent-overload=ERR\nendif\n");
	const char *acl = after(r.conf, "\nif ${process_number} = 4\nexternal_acl_type fps_acl cache=0 ttl=0 "
	                                "negative_ttl=0 children-max=4 children-startup=0 children-idle=1 ");
	const char *normal = after(acl, "\nelse\nexternal_acl_type fps_acl cache=0 ttl=0 negative_ttl=0 children-max=4 "
	                                "children-startup=4 children-idle=1 ");
	const char *end = after(normal, "\nendif\nacl fps_whitelist external fps_acl\n");
	assert_true(acl < normal && normal < end);
	rendered_free(&r);

	render_yaml(&r, "proxy: {workers: 1}\n", NULL); /* no coordinator, no condition */
	assert_null(strstr(r.conf, "${process_number}"));
	after(r.conf, "\nauth_param basic children 4 startup=4 ");
	rendered_free(&r);
}

static void test_reconfigure_mode_lists_and_orders_routes(void **state)
{
	(void)state;
	struct rendered r;
	render_yaml(&r,
	            "whitelist: {apply: reconfigure, preset: [\"*.example-vendor.com\"]}\n"
	            "upstream: {host: proxy.corp.example, port: 3128, username: fps}\n"
	            "tunnel: {server: tunnel.example-vendor.com}\n"
	            "routes:\n"
	            "  - {via: tunnel, domains: [\"*.example-vendor.com\"]}\n"
	            "  - {via: direct, domains: [download.example-vendor.com]}\n"
	            "  - {via: upstream, domains: [\"*.partner.example\"]}\n",
	            "{\"domains\": [\"www.example-vendor.com\", \"a.partner.example\", \"192.0.2.5\"]}");
	const struct render_file *list = render_find(&r.out, "whitelist.dstdomain");
	assert_non_null(list);
	/* folded: www.example-vendor.com is covered by the preset wildcard */
	assert_string_equal(list->data, "192.0.2.5\na.partner.example\n.example-vendor.com\n");
	after(r.conf, "acl fps_whitelist dstdomain -n \"/state/current/whitelist.dstdomain\"");
	/* the most specific route pattern gets the first ACL */
	after(r.conf, "acl fps_route_0 dstdomain -n download.example-vendor.com\n");
	after(r.conf, "acl fps_route_1 dstdomain -n .example-vendor.com\n");
	after(r.conf, "acl fps_route_2 dstdomain -n .partner.example\n");
	after(r.conf, "cache_peer_access tunnel deny fps_route_0\ncache_peer_access tunnel allow fps_route_1\n");
	after(r.conf,
	      "never_direct deny fps_route_0\nnever_direct allow fps_route_1\nnever_direct allow fps_route_2\n");
	/* the upstream password is %-escaped, so spaces, ':' and '%' cannot break the line */
	after(r.conf, "cache_peer proxy.corp.example parent 3128 0 ");
	after(r.conf, "login=fps:p%40ss%20word%3A%25");
	after(r.conf, "cache_peer 127.0.0.1 parent 3129 0 ");
	rendered_free(&r);
}

static void test_live_mode_routes_by_tag(void **state)
{
	(void)state;
	struct rendered r;
	render_yaml(&r,
	            "tunnel: {server: tunnel.example-vendor.com, local_port: 4000}\n"
	            "routes: [{via: tunnel, domains: [\"*.example-vendor.com\"]}]\n",
	            NULL);
	after(r.conf, "acl fps_via_tunnel tag tunnel\n");
	after(r.conf, "cache_peer_access tunnel allow fps_via_tunnel\ncache_peer_access tunnel deny all\n"
	              "never_direct allow fps_via_tunnel\n");
	assert_null(strstr(r.conf, "name=upstream"));
	rendered_free(&r);
}

static void test_template_errors_name_the_variable(void **state)
{
	(void)state;
	struct render_var vars[] = {{"A", "1"}};
	char *out = NULL;
	struct fps_err e;
	err_clear(&e);
	assert_int_equal(render_template("x {{A}} y\n", "t", vars, 1, &out, &e), 0);
	assert_string_equal(out, "x 1 y\n");
	free(out);
	assert_int_equal(render_template("x\n{{B}}\n", "t", vars, 1, &out, &e), -1);
	assert_int_equal(e.line, 2);
	assert_non_null(strstr(e.msg, "{{B}}"));
	assert_int_equal(render_template("x {{A", "t", vars, 1, &out, &e), -1);
}

/* Absolute-form https:// is refused (400, its own page) after credentials and before the
 * ports and the whitelist, in both apply modes (docs/security.md, "The order of the checks"). */
static void test_https_absolute_refused_after_credentials_in_both_modes(void **state)
{
	(void)state;
	const char *modes[] = {"live", "reconfigure"};
	for (size_t i = 0; i < 2; i++) {
		char yaml[128];
		snprintf(yaml, sizeof(yaml), "whitelist: {apply: %s}\n", modes[i]);
		struct rendered r;
		render_yaml(&r, yaml, "{\"domains\": [\"updates.example\"]}");
		after(r.conf, "acl fps_https_absolute proto HTTPS\n");
		after(r.conf, "deny_info 400:ERR_FPS_HTTPS_NEEDS_CONNECT fps_https_absolute\n");
		const char *auth = after(r.conf, "http_access deny !fps_users\n");
		const char *form = after(r.conf, "http_access deny !CONNECT fps_https_absolute\n");
		const char *scheme = after(r.conf, "http_access deny !CONNECT !fps_http_url\n");
		const char *ports = after(r.conf, "http_access deny CONNECT !fps_connect_ports\n");
		const char *wl = after(r.conf, "http_access deny !fps_whitelist\n");
		assert_true(auth < form && form < scheme && scheme < ports && ports < wl);
		assert_non_null(render_find(&r.out, "errors/ERR_FPS_SCHEME_NOT_ALLOWED"));
		const struct render_file *page = render_find(&r.out, "errors/ERR_FPS_HTTPS_NEEDS_CONNECT");
		assert_non_null(page);
		assert_non_null(strstr(page->data, "CONNECT %H:%p"));
		rendered_free(&r);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_live_mode_uses_fps_acl_and_never_lists_entries),
	    cmocka_unit_test(test_auth_block),
	    cmocka_unit_test(test_smp_coordinator_starts_no_helpers),
	    cmocka_unit_test(test_reconfigure_mode_lists_and_orders_routes),
	    cmocka_unit_test(test_live_mode_routes_by_tag),
	    cmocka_unit_test(test_template_errors_name_the_variable),
	    cmocka_unit_test(test_https_absolute_refused_after_credentials_in_both_modes),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
