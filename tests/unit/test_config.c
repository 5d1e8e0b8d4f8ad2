/*
 * Unit tests for config.c: defaults, strict types, and errors that point at
 * file:line:col (docs/configuration.md). Table-driven over small fps.yaml / whitelist.json texts.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <stdlib.h>
#include <unistd.h>

#include "config.h"
#include "cred.h"

struct yaml_case {
	const char *text;
	int line, col;   /* 0 = the case is valid */
	const char *msg; /* substring of the error */
};

static const struct yaml_case yaml_cases[] = {
    {"proxy:\n  port: 3128\n", 0, 0, NULL},
    {"proxy:\n  port: eighty\n", 2, 9, "'port' must be an integer"},
    {"proxy:\n  port: \"8080\"\n", 2, 9, "must be an integer"},
    {"proxy:\n  port: 70000\n", 2, 9, "must be in 1..65535"},
    {"proxy:\n  prot: 8080\n", 2, 3, "unknown key 'prot' in 'proxy'"},
    {"proxi:\n  port: 8080\n", 1, 1, "unknown key 'proxi' in 'top level'"},
    {"proxy:\n  port: 1\n  port: 2\n", 3, 3, "duplicate key 'port'"},
    {"proxy: [1, 2]\n", 1, 8, "'proxy' must be a mapping"},
    {"proxy:\n  bind: not-an-ip\n", 2, 9, "must be an IP address"},
    {"proxy:\n  workers: auto\n", 0, 0, NULL},
    {"proxy:\n  workers: many\n", 2, 12, "must be an integer"},
    {"proxy:\n  blocked_networks: [10.0.0.0/33]\n", 2, 22,
     "'10.0.0.0/33': not an IP network (address or address/prefix)"},
    {"proxy:\n  blocked_networks: [\"fe80::/10\", 10.0.0.0/8]\n", 0, 0, NULL},
    {"proxy:\n  dns_nameservers: [dns.example]\n", 2, 21, "not an IP address"},
    {"proxy:\n  hosts_file: relative/hosts\n", 2, 15, "absolute path"},
    {"proxy:\n  hosts_file: \"/etc/hosts extra\"\n", 2, 15, "absolute path"},
    {"auth:\n  enabled: yes\n", 2, 12, "true or false"},
    {"auth:\n  realm: \"FPS\\nx\"\n", 2, 10, "realm"},
    {"auth:\n  products: [\"Apex One\"]\n", 2, 14, "product names"},
    {"whitelist:\n  apply: sometimes\n", 2, 10, "'live' or 'reconfigure'"},
    {"whitelist:\n  preset: \"*.x.com\"\n", 2, 11, "must be a list"},
    {"routes:\n  - {via: teleport, domains: [a.example]}\n", 2, 11, "unknown route 'teleport'"},
    {"routes:\n  - {via: direct}\n", 2, 5, "needs both"},
    {"routes:\n  - {via: direct, domains: [\"bad name\"]}\n", 2, 29, "route domain 'bad name'"},
    {"default_route: sideways\n", 1, 16, "unknown route"},
    {"proxy: {port: 1\n", 2, 1, "not valid YAML"},
    {"", 1, 1, "empty file"},
    {"---\nproxy: {}\n---\nauth: {}\n", 3, 1, "more than one YAML document"},
    {"proxy:\n  allow_loopback_destinations: true\n", 0, 0, NULL},
    {"proxy:\n  allow_loopback_destinations: 127.0.0.1\n", 2, 32, "true or false"},
    /* small, legitimate aliases */
    {"whitelist:\n  preset: &v [a.example, b.example]\nroutes:\n  - {via: direct, domains: *v}\n", 0, 0, NULL},
    /* input quoted in errors: bounded and escaped */
    {"proxy:\n  \"k\\e[2J\\r0123456789012345678901234567890123456789\": 1\n", 2, 3,
     "unknown key 'k\\x1b[2J\\x0d0123456789012345678901234567890123...' in 'proxy'"},
    /* only the input is bounded, never the explanation FPS writes after it */
    {"proxy:\n  blocked_networks: [10.0.0.0/330000000000000000000000000000000000000000]\n", 2, 22,
     "'10.0.0.0/3300000000000000000000000000000...': not an IP network (address or address/prefix)"},
    {"routes:\n  - {via: direct, domains: [\"a-long-name-that-is-also-a-bad one.example\"]}\n", 2, 29,
     "route domain 'a-long-name-that-is-also-a-bad one.examp...': whitespace"},
};

static void test_yaml_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(yaml_cases) / sizeof(yaml_cases[0]); i++) {
		const struct yaml_case *c = &yaml_cases[i];
		struct fps_config cfg;
		struct fps_err e;
		cfg_init_defaults(&cfg);
		err_clear(&e);
		int rc = cfg_parse_yaml(&cfg, c->text, strlen(c->text), "fps.yaml", &e);
		if (c->msg == NULL) {
			if (rc != 0)
				fail_msg("case %zu: unexpected error %d:%d %s", i, e.line, e.col, e.msg);
		} else {
			if (rc == 0)
				fail_msg("case %zu: accepted, want error '%s'", i, c->msg);
			if (strstr(e.msg, c->msg) == NULL || e.line != c->line || e.col != c->col)
				fail_msg("case %zu: got %d:%d '%s', want %d:%d '%s'", i, e.line, e.col, e.msg, c->line,
				         c->col, c->msg);
			assert_string_equal(e.file, "fps.yaml");
		}
		cfg_free(&cfg);
	}
}

static int parse_yaml(const char *text, struct fps_err *e)
{
	struct fps_config cfg;
	cfg_init_defaults(&cfg);
	err_clear(e);
	int rc = cfg_parse_yaml(&cfg, text, strlen(text), "fps.yaml", e);
	cfg_free(&cfg);
	return rc;
}

/* Resource bombs are refused from the event stream, before a document is built. */
static void test_yaml_bombs(void **state)
{
	(void)state;
	struct fps_err e;
	size_t n = 100000;
	char *text = malloc(n + 16);
	assert_non_null(text);
	memcpy(text, "proxy: ", 7);
	memset(text + 7, '[', n);
	text[7 + n] = '\0';
	assert_int_equal(parse_yaml(text, &e), -1);
	assert_non_null(strstr(e.msg, "nested deeper than 32 levels"));
	assert_int_equal(e.line, 1);
	assert_int_equal(e.col, 7 + 31 + 1); /* the mapping is the first level */
	free(text);

	/* 1,000 anchored names aliased by 3,000 routes: 3 million route domains. */
	size_t cap = 200000, o = 0;
	text = malloc(cap);
	assert_non_null(text);
	o += (size_t)snprintf(text + o, cap - o, "whitelist:\n  preset: &n [");
	for (int i = 0; i < 1000; i++)
		o += (size_t)snprintf(text + o, cap - o, "%sn%d.example", i ? ", " : "", i);
	o += (size_t)snprintf(text + o, cap - o, "]\nroutes:\n");
	for (int i = 0; i < 3000 && o + 64 < cap; i++)
		o += (size_t)snprintf(text + o, cap - o, "  - {via: direct, domains: *n}\n");
	assert_int_equal(parse_yaml(text, &e), -1);
	assert_non_null(strstr(e.msg, "more than 100000 YAML nodes"));
	assert_true(e.line > 3);
	free(text);

	/* Too many anchors. */
	o = 0;
	text = malloc(cap);
	assert_non_null(text);
	o += (size_t)snprintf(text + o, cap - o, "whitelist:\n  preset:\n");
	for (int i = 0; i < 300; i++)
		o += (size_t)snprintf(text + o, cap - o, "    - &a%d n%d.example\n", i, i);
	assert_int_equal(parse_yaml(text, &e), -1);
	assert_non_null(strstr(e.msg, "more than 256 YAML anchors"));
	assert_int_equal(e.line, 3 + 256);
	free(text);
}

static void test_defaults(void **state)
{
	(void)state;
	struct fps_config c;
	struct fps_err e;
	cfg_init_defaults(&c);
	const char *text = "proxy: {}\n";
	assert_int_equal(cfg_parse_yaml(&c, text, strlen(text), "fps.yaml", &e), 0);
	assert_string_equal(c.bind, "0.0.0.0");
	assert_int_equal(c.port, 8080);
	assert_int_equal(c.workers, 1);
	assert_int_equal(c.n_connect_ports, 1);
	assert_int_equal(c.connect_ports[0], 443);
	assert_int_equal(c.n_safe_ports, 2);
	assert_int_equal(c.blocked_networks.n, 4);
	assert_string_equal(c.blocked_networks.v[2], "::1/128");
	assert_string_equal(c.hosts_file, "/etc/hosts");
	assert_true(c.auth_enabled);
	assert_string_equal(c.realm, "FPS");
	assert_int_equal(c.credentials_ttl, 300);
	assert_int_equal(c.apply, CFG_APPLY_LIVE);
	assert_int_equal(c.default_route, WL_VIA_DIRECT);
	assert_string_equal(c.admin_bind, "127.0.0.1");
	assert_int_equal(c.admin_port, 8079);
	assert_int_equal(c.tunnel_local_port, 3129);
	cfg_free(&c);
}

static void test_cidr_canonical(void **state)
{
	(void)state;
	struct fps_config c;
	struct fps_err e;
	cfg_init_defaults(&c);
	const char *text = "proxy:\n  blocked_networks: [\"FE80:0::/10\", 10.1.2.3]\n";
	assert_int_equal(cfg_parse_yaml(&c, text, strlen(text), "fps.yaml", &e), 0);
	assert_int_equal(c.blocked_networks.n, 2);
	assert_string_equal(c.blocked_networks.v[0], "fe80::/10");
	assert_string_equal(c.blocked_networks.v[1], "10.1.2.3/32");
	cfg_free(&c);
}

struct json_case {
	const char *text;
	int line, col;
	const char *msg;
	size_t entries; /* when valid */
};

static const struct json_case json_cases[] = {
    {"{\"version\": 42, \"domains\": [\"a.example\", {\"domain\": \"b.example\", \"via\": \"tunnel\"}]}", 0, 0, NULL,
     2},
    {"{\"domains\": []}", 0, 0, NULL, 0},
    {"{\"version\": 1, \"domains\": [\"a.example\",\n  \"b\"\n", 2, 6, "not valid JSON", 0},
    {"[\"a.example\"]", 1, 1, "top level must be an object", 0},
    {"{\"version\": \"42\", \"domains\": []}", 0, 0, "'version' must be a non-negative integer", 0},
    {"{\"version\": 1.5, \"domains\": []}", 0, 0, "'version' must be a non-negative integer", 0},
    {"{\"version\": 1}", 0, 0, "missing 'domains'", 0},
    {"{\"domains\": \"a.example\"}", 0, 0, "'domains' must be a list", 0},
    {"{\"domains\": [\"a.example\",\n 7]}", 2, 2, "domains[1]: must be a string", 0},
    {"{\"domains\": [\n {\"domain\": \"a.example\", \"via\": \"teleport\"}]}", 2, 2, "unknown via 'teleport'", 0},
    {"{\"domains\": [{\"via\": \"direct\"}]}", 1, 14, "without \"domain\"", 0},
    {"{\"domains\": [{\"domain\": \"a\", \"vai\": \"tunnel\"}]}", 1, 14, "unexpected key 'vai'", 0},
    {"{\"domains\": [], \"extra\": 1}", 0, 0, "unknown key 'extra'", 0},
    {"{\"domains\": [\"a\\u0000b\"]}", 1, 16, "NUL character", 0},
    {"", 1, 1, "empty file", 0},
};

static void test_json_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(json_cases) / sizeof(json_cases[0]); i++) {
		const struct json_case *c = &json_cases[i];
		struct fps_config cfg;
		struct fps_err e;
		cfg_init_defaults(&cfg);
		err_clear(&e);
		int rc = cfg_parse_whitelist_json(&cfg, c->text, strlen(c->text), "whitelist.json", &e);
		if (c->msg == NULL) {
			if (rc != 0)
				fail_msg("case %zu: unexpected error %d:%d %s", i, e.line, e.col, e.msg);
			assert_int_equal(cfg.n_entries, c->entries);
		} else if (rc == 0 || strstr(e.msg, c->msg) == NULL || e.line != c->line || e.col != c->col) {
			fail_msg("case %zu: rc %d, got %d:%d '%s', want %d:%d '%s'", i, rc, e.line, e.col, e.msg,
			         c->line, c->col, c->msg);
		}
		cfg_free(&cfg);
	}
}

static void test_json_entry_positions(void **state)
{
	(void)state;
	struct fps_config c;
	struct fps_err e;
	cfg_init_defaults(&c);
	const char *text = "{\n  \"version\": 3,\n  \"domains\": [\n    \"a.example\",\n    \"bad entry\",\n"
	                   "    {\"domain\": \"c.example\", \"via\": \"upstream\"}\n  ]\n}\n";
	assert_int_equal(cfg_parse_whitelist_json(&c, text, strlen(text), "whitelist.json", &e), 0);
	assert_int_equal(c.n_entries, 3);
	assert_int_equal(c.whitelist_version, 3);
	assert_int_equal(c.entries[1].line, 5);
	assert_int_equal(c.entries[1].col, 5);
	assert_string_equal(c.entries[1].raw, "bad entry");
	assert_int_equal(c.entries[2].line, 6);
	assert_true(c.entries[2].has_via);
	assert_int_equal(c.entries[2].via, WL_VIA_UPSTREAM);
	cfg_free(&c);
}

static int parse_json(const char *text, size_t len, struct fps_err *e)
{
	struct fps_config cfg;
	cfg_init_defaults(&cfg);
	err_clear(e);
	int rc = cfg_parse_whitelist_json(&cfg, text, len, "whitelist.json", e);
	cfg_free(&cfg);
	return rc;
}

static void test_json_bombs(void **state)
{
	(void)state;
	struct fps_err e;
	size_t n = 100000, cap = 8u << 20;
	char *text = malloc(cap);
	assert_non_null(text);
	/* deep nesting, refused at the 17th level */
	size_t o = (size_t)snprintf(text, cap, "{\n \"domains\": ");
	memset(text + o, '[', n);
	o += n;
	assert_int_equal(parse_json(text, o, &e), -1);
	assert_non_null(strstr(e.msg, "nested deeper than 16 levels"));
	assert_int_equal(e.line, 2);
	assert_int_equal(e.col, 13 + 15);
	/* millions of small values */
	o = (size_t)snprintf(text, cap, "{\"domains\": [1");
	while (o + 3 < cap)
		o += (size_t)snprintf(text + o, cap - o, ",1");
	assert_int_equal(parse_json(text, o, &e), -1);
	assert_non_null(strstr(e.msg, "more than 600016 values"));
	/* one entry too many */
	o = (size_t)snprintf(text, cap, "{\"domains\": [");
	for (int i = 0; i <= CFG_MAX_ENTRIES; i++)
		o += (size_t)snprintf(text + o, cap - o, "%s\"a.test\"", i ? "," : "");
	o += (size_t)snprintf(text + o, cap - o, "]}");
	assert_int_equal(parse_json(text, o, &e), -1);
	assert_non_null(strstr(e.msg, "more than 200000 whitelist entries"));
	assert_int_equal(e.line, 1);
	/* the limit itself is accepted */
	o = (size_t)snprintf(text, cap, "{\"domains\": [");
	for (int i = 0; i < CFG_MAX_ENTRIES; i++)
		o += (size_t)snprintf(text + o, cap - o, "%s\"a.test\"", i ? "," : "");
	o += (size_t)snprintf(text + o, cap - o, "]}");
	assert_int_equal(parse_json(text, o, &e), 0);
	free(text);
}

/* Only regular files inside the config directory are read, never blocking. */
static void test_input_files(void **state)
{
	(void)state;
	char dir[] = "/tmp/fps-test-config-XXXXXX", path[256], outside[] = "/tmp/fps-test-outside-XXXXXX";
	assert_non_null(mkdtemp(dir));
	int ofd = mkstemp(outside);
	assert_true(ofd >= 0);
	assert_int_equal(write(ofd, "secret: first line of another file\n", 35), 35);
	close(ofd);
	struct fps_config c;
	struct fps_err e;

	snprintf(path, sizeof(path), "%s/fps.yaml", dir);
	assert_int_equal(mkfifo(path, 0600), 0); /* would block open() without O_NONBLOCK */
	err_clear(&e);
	assert_int_equal(cfg_load(&c, dir, NULL, &e), -1);
	assert_non_null(strstr(e.msg, "not a regular file (a FIFO)"));
	assert_string_equal(e.file, path);
	unlink(path);

	assert_int_equal(mkdir(path, 0700), 0);
	assert_int_equal(cfg_load(&c, dir, NULL, &e), -1);
	assert_non_null(strstr(e.msg, "not a regular file (a directory)"));
	rmdir(path);

	assert_int_equal(symlink(outside, path), 0);
	assert_int_equal(cfg_load(&c, dir, NULL, &e), -1);
	assert_non_null(strstr(e.msg, "resolves to a file outside"));
	assert_null(strstr(e.msg, "secret"));
	unlink(path);

	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs("proxy: {port: 8080}\n", f);
	fclose(f);
	char json[256];
	snprintf(json, sizeof(json), "%s/whitelist.json", dir);
	int fd = open(json, O_WRONLY | O_CREAT, 0600);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, (off_t)CFG_JSON_MAX_SIZE + 1), 0); /* sparse: costs no disk */
	close(fd);
	assert_int_equal(cfg_load(&c, dir, NULL, &e), -1);
	assert_non_null(strstr(e.msg, "larger than the limit of 8388608 bytes"));
	assert_string_equal(e.file, json);
	unlink(json);

	assert_int_equal(cfg_load(&c, dir, NULL, &e), 0);
	cfg_free(&c);
	unlink(path);
	rmdir(dir);
	unlink(outside);
}

/* Builds the YAML that sets path (e.g. "routes[].via") to a mapping no key accepts. */
static void yaml_probe(const char *path, char *out, size_t outlen)
{
	char buf[256];
	snprintf(buf, sizeof(buf), "%s", path);
	size_t used = 0;
	int indent = 0;
	for (char *seg = strtok(buf, "."); seg; seg = strtok(NULL, ".")) {
		char *br = strstr(seg, "[]");
		if (br)
			*br = '\0';
		used += (size_t)snprintf(out + used, outlen - used, "%*s%s:%s", indent, "", seg, "");
		if (br) {
			used += (size_t)snprintf(out + used, outlen - used, "\n%*s  -", indent, "");
			indent += 4;
			/* the next segment goes on the same line as the dash */
			char *next = strtok(NULL, ".");
			if (next == NULL)
				break;
			used += (size_t)snprintf(out + used, outlen - used, " %s:", next);
			indent += 0;
		} else {
			indent += 2;
		}
		used += (size_t)snprintf(out + used, outlen - used, "\n");
	}
	/* replace the last newline by the value */
	if (used > 0 && out[used - 1] == '\n')
		used--;
	snprintf(out + used, outlen - used, " {zz_probe: 1}\n");
}

/* Every key in the table reaches code that handles it: none is rejected as unknown. */
static void test_key_table_keys_are_handled(void **state)
{
	(void)state;
	size_t yaml_keys = 0, json_keys = 0;
	for (const struct cfg_key *k = cfg_keys; k->file; k++) {
		const char *leaf = strrchr(k->key, '.') ? strrchr(k->key, '.') + 1 : k->key;
		char want_not[128], text[512];
		snprintf(want_not, sizeof(want_not), "unknown key '%s'", leaf);
		struct fps_config cfg;
		struct fps_err e;
		cfg_init_defaults(&cfg);
		err_clear(&e);
		if (strcmp(k->file, CFG_YAML_NAME) == 0) {
			yaml_probe(k->key, text, sizeof(text));
			int rc = cfg_parse_yaml(&cfg, text, strlen(text), "fps.yaml", &e);
			if (rc != 0 && (strstr(e.msg, want_not) || strstr(e.msg, "unexpected key")))
				fail_msg("%s: %s -> %s", k->key, text, e.msg);
			yaml_keys++;
		} else if (strcmp(k->file, CFG_JSON_NAME) == 0) {
			if (strncmp(k->key, "domains[].", 10) == 0)
				snprintf(text, sizeof(text), "{\"domains\": [{\"%s\": {}}]}", k->key + 10);
			else
				snprintf(text, sizeof(text), "{\"%s\": {}}", k->key);
			int rc = cfg_parse_whitelist_json(&cfg, text, strlen(text), "whitelist.json", &e);
			if (rc != 0 && (strstr(e.msg, "unknown key") || strstr(e.msg, "unexpected key")))
				fail_msg("%s: %s -> %s", k->key, text, e.msg);
			json_keys++;
		}
		cfg_free(&cfg);
	}
	assert_true(yaml_keys > 20);
	assert_true(json_keys == 4);
}

/* The hint lists what the table lists. */
static void test_unknown_key_hint_from_table(void **state)
{
	(void)state;
	struct fps_config cfg;
	struct fps_err e;
	cfg_init_defaults(&cfg);
	const char *text = "tunnel:\n  srever: x\n";
	assert_int_equal(cfg_parse_yaml(&cfg, text, strlen(text), "fps.yaml", &e), -1);
	assert_non_null(
	    strstr(e.msg, "unknown key 'srever' in 'tunnel' (expected one of: server, address, port, local_port)"));
	cfg_free(&cfg);
	cfg_init_defaults(&cfg);
	text = "routes:\n  - {via: direct, domain: [a.example]}\n";
	assert_int_equal(cfg_parse_yaml(&cfg, text, strlen(text), "fps.yaml", &e), -1);
	assert_non_null(strstr(e.msg, "unknown key 'domain' in 'routes[]' (expected one of: via, domains)"));
	cfg_free(&cfg);
	cfg_init_defaults(&cfg);
	text = "{\"domains\": [{\"domain\": \"a.example\", \"via\": 3}]}";
	assert_int_equal(cfg_parse_whitelist_json(&cfg, text, strlen(text), "whitelist.json", &e), -1);
	assert_non_null(strstr(e.msg, "\"via\" must be a string"));
	cfg_free(&cfg);
}

static void write_file(const char *dir, const char *name, const char *text)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

/* Every secret the table names is read: adding it changes the input hash. */
static void test_key_table_secrets_are_read(void **state)
{
	(void)state;
	char cdir[] = "/tmp/fps-test-cfg-XXXXXX", sdir[] = "/tmp/fps-test-sec-XXXXXX";
	assert_non_null(mkdtemp(cdir));
	assert_non_null(mkdtemp(sdir));
	write_file(cdir, CFG_YAML_NAME, "proxy: {port: 3128}\n");
	size_t n = 0;
	for (const struct cfg_key *k = cfg_keys; k->file; k++) {
		if (strcmp(k->file, CFG_SECRETS) != 0)
			continue;
		struct fps_config a, b;
		struct fps_err e;
		assert_int_equal(cfg_load(&a, cdir, sdir, &e), 0);
		write_file(sdir, k->key, "x\n");
		assert_int_equal(cfg_load(&b, cdir, sdir, &e), 0);
		if (strcmp(a.input_hash, b.input_hash) == 0)
			fail_msg("secret %s is not read", k->key);
		cfg_free(&a);
		cfg_free(&b);
		char path[512];
		snprintf(path, sizeof(path), "%s/%s", sdir, k->key);
		unlink(path);
		n++;
	}
	assert_int_equal(n, 5);
	char path[512];
	snprintf(path, sizeof(path), "%s/%s", cdir, CFG_YAML_NAME);
	unlink(path);
	rmdir(cdir);
	rmdir(sdir);
}

/* Every apikeys.json member the table names is required by the loader. */
static void test_key_table_apikeys_members_are_read(void **state)
{
	(void)state;
	size_t n = 0;
	for (const struct cfg_key *k = cfg_keys; k->file; k++) {
		if (strcmp(k->file, CFG_KEYS_NAME) != 0)
			continue;
		const char *member = strncmp(k->key, "keys[].", 7) == 0 ? k->key + 7 : k->key;
		char text[512];
		if (strcmp(k->key, "keys") == 0)
			snprintf(text, sizeof(text), "{\"other\": []}");
		else
			snprintf(text, sizeof(text), "{\"keys\": [{%s%s%s}]}",
			         strcmp(member, "id") ? "\"id\": \"a\", " : "",
			         strcmp(member, "key") ? "\"key\": \"secret-value\", " : "",
			         strcmp(member, "expires") ? "\"expires\": \"2099-01-01T00:00:00Z\", " : "");
		/* drop the trailing ", " inside the object */
		char *tail = strstr(text, ", }");
		if (tail)
			memmove(tail, tail + 2, strlen(tail + 2) + 1);
		struct cred_keys keys = {0};
		struct fps_err e;
		if (cred_keys_parse(text, strlen(text), CFG_KEYS_NAME, &keys, &e) == 0)
			fail_msg("apikeys.json without '%s' was accepted: %s", k->key, text);
		cred_keys_free(&keys);
		n++;
	}
	assert_int_equal(n, 4);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_yaml_table),
	    cmocka_unit_test(test_yaml_bombs),
	    cmocka_unit_test(test_json_bombs),
	    cmocka_unit_test(test_input_files),
	    cmocka_unit_test(test_defaults),
	    cmocka_unit_test(test_cidr_canonical),
	    cmocka_unit_test(test_json_table),
	    cmocka_unit_test(test_json_entry_positions),
	    cmocka_unit_test(test_key_table_keys_are_handled),
	    cmocka_unit_test(test_unknown_key_hint_from_table),
	    cmocka_unit_test(test_key_table_secrets_are_read),
	    cmocka_unit_test(test_key_table_apikeys_members_are_read),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
