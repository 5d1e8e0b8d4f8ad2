/*
 * config: fps.yaml is read with libyaml's document API (every node keeps its
 * line and column), walked against the schema of docs/configuration.md; whitelist.json with
 * cJSON plus a small scanner that finds each entry's line, since cJSON keeps none.
 * Unknown keys and wrong types are errors: a typo must not silently become a default.
 */
#include "config.h"
#include "cpus.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#include "cred.h"
#include "fsio.h"

#define CFG_STR2(x)        #x
#define CFG_STR(x)         CFG_STR2(x)
#define CFG_MAX_ROUTES_STR CFG_STR(CFG_MAX_ROUTES)

static void strv_free(struct strv *s)
{
	for (size_t i = 0; i < s->n; i++)
		free(s->v[i]);
	free(s->v);
	s->v = NULL;
	s->n = 0;
}

static int strv_push(struct strv *s, const char *str)
{
	char **nv = realloc(s->v, (s->n + 1) * sizeof(*nv));
	if (nv == NULL)
		return -1;
	s->v = nv;
	if ((s->v[s->n] = strdup(str)) == NULL)
		return -1;
	s->n++;
	return 0;
}

void cfg_init_defaults(struct fps_config *c)
{
	memset(c, 0, sizeof(*c));
	snprintf(c->bind, sizeof(c->bind), "0.0.0.0");
	c->port = 8080;
	c->workers = 1;
	c->connect_ports[c->n_connect_ports++] = 443;
	c->safe_ports[c->n_safe_ports++] = 80;
	c->safe_ports[c->n_safe_ports++] = 443;
	const char *blocked[] = {"127.0.0.0/8", "169.254.0.0/16", "::1/128", "fe80::/10"};
	for (size_t i = 0; i < sizeof(blocked) / sizeof(blocked[0]); i++)
		strv_push(&c->blocked_networks, blocked[i]);
	snprintf(c->hosts_file, sizeof(c->hosts_file), "/etc/hosts");
	c->dns_timeout = 30; /* Squid's own defaults */
	c->read_timeout = 900;
	c->auth_enabled = true;
	snprintf(c->realm, sizeof(c->realm), "FPS");
	c->credentials_ttl = 300;
	c->apply = CFG_APPLY_LIVE;
	c->upstream_port = 3128;
	c->tunnel_port = 443;
	c->tunnel_local_port = 3129;
	c->default_route = WL_VIA_DIRECT;
	snprintf(c->admin_bind, sizeof(c->admin_bind), "127.0.0.1");
	c->admin_port = CFG_ADMIN_PORT_DEFAULT;
	c->cache_memory_mb = 256;
	c->cache_disk_mb = 0;
	c->cache_max_object_mb = CFG_CACHE_OBJECT_DEF;
}

/* The store an object would go to: the disk store (one worker only, cfg_check_cache), else memory. */
static long cfg_cache_store_mb(const struct fps_config *c)
{
	return c->cache_disk_mb > 0 ? c->cache_disk_mb : c->cache_memory_mb;
}

/*
 * Objects go to memory (cache_mem) and, with disk_mb, to the disk store (docs/operations.md
 * "The update cache"): an object larger than the
 * store it would go to could never be kept, which is a configuration mistake, not a
 * policy. An unset max_object_mb is fitted to the store instead.
 */
int cfg_check_cache(const struct fps_config *c, const char *path, struct fps_err *e)
{
	if (!c->has_cache)
		return 0;
	int workers = cfg_workers(c);
	/* Squid 5.7 has no disk store that several workers can use safely (docs/squid-facts.md):
	 * rock loses the one-fetch property (94 origin copies of 100 in a storm with 2 workers),
	 * a ufs-type store per worker crashes a worker at the next disk hit under collapsed
	 * forwarding ("assertion failed: Controller.cc"). Several workers share the memory cache. */
	if (c->cache_disk_mb > 0 && workers > 1)
		return err_set(e, path, c->cache_line, 0,
		               "cache.disk_mb %d needs proxy.workers: 1 (it resolves to %d here): with several Squid "
		               "workers the cache is memory only (cache.disk_mb: 0), see docs/operations.md",
		               c->cache_disk_mb, workers);
	long store = cfg_cache_store_mb(c);
	if (c->cache_max_object_set && c->cache_max_object_mb > store)
		return err_set(e, path, c->cache_line, 0,
		               "cache.max_object_mb %d is above the store it would go to (%s: %ld MB%s)",
		               c->cache_max_object_mb,
		               c->cache_disk_mb > 0 ? "cache.disk_mb per worker" : "cache.memory_mb", store,
		               c->cache_disk_mb > 0 ? "" : ", and cache.disk_mb is 0");
	return 0;
}

/* max_object_mb as rendered: as set, or the default fitted to the store. */
int cfg_cache_max_object(const struct fps_config *c)
{
	if (c->cache_max_object_set)
		return c->cache_max_object_mb;
	long store = cfg_cache_store_mb(c);
	return store < CFG_CACHE_OBJECT_DEF ? (int)(store > 0 ? store : 1) : CFG_CACHE_OBJECT_DEF;
}

void cfg_free(struct fps_config *c)
{
	strv_free(&c->blocked_networks);
	strv_free(&c->dns_nameservers);
	strv_free(&c->products);
	for (size_t i = 0; i < c->n_entries; i++)
		free(c->entries[i].raw);
	free(c->entries);
	free(c->routes);
	if (c->upstream_password) {
		explicit_bzero(c->upstream_password, strlen(c->upstream_password));
		free(c->upstream_password);
	}
	free(c->yaml_text);
	free(c->json_text);
	if (c->keys_text) {
		explicit_bzero(c->keys_text, c->keys_len);
		free(c->keys_text);
	}
	memset(c, 0, sizeof(*c));
}

/* -1 out of memory, -2 over CFG_MAX_ENTRIES */
static int entry_push(struct fps_config *c, const char *raw, const char *file, int line, int col, int index)
{
	if (c->n_entries >= CFG_MAX_ENTRIES)
		return -2;
	if (c->n_entries == c->cap_entries) {
		size_t ncap = c->cap_entries ? c->cap_entries * 2 : 256;
		struct cfg_entry *nv = realloc(c->entries, ncap * sizeof(*nv));
		if (nv == NULL)
			return -1;
		c->entries = nv;
		c->cap_entries = ncap;
	}
	char *copy = strdup(raw);
	if (copy == NULL)
		return -1;
	c->entries[c->n_entries++] =
	    (struct cfg_entry){.raw = copy, .file = file, .line = line, .col = col, .index = index};
	return 0;
}

int cfg_workers(const struct fps_config *c)
{
	/* auto: the CPUs this process may use (affinity, cgroup quota), not the node's cores */
	return c->workers > 0 ? c->workers : cpus_usable();
}

bool cfg_uses_via(const struct fps_config *c, enum wl_via via)
{
	if (c->default_route == via)
		return true;
	for (size_t i = 0; i < c->n_routes; i++)
		if (c->routes[i].via == via)
			return true;
	for (size_t i = 0; i < c->n_entries; i++)
		if (c->entries[i].has_via && c->entries[i].via == via)
			return true;
	return false;
}

/* ---- the key table ------------------------------------------------------------------- */

const struct cfg_key cfg_keys[] = {
    {CFG_YAML_NAME, "proxy"},
    {CFG_YAML_NAME, "proxy.bind"},
    {CFG_YAML_NAME, "proxy.port"},
    {CFG_YAML_NAME, "proxy.workers"},
    {CFG_YAML_NAME, "proxy.connect_ports"},
    {CFG_YAML_NAME, "proxy.safe_ports"},
    {CFG_YAML_NAME, "proxy.blocked_networks"},
    {CFG_YAML_NAME, "proxy.allow_loopback_destinations"},
    {CFG_YAML_NAME, "proxy.dns_nameservers"},
    {CFG_YAML_NAME, "proxy.hosts_file"},
    {CFG_YAML_NAME, "proxy.dns_timeout"},
    {CFG_YAML_NAME, "proxy.read_timeout"},
    {CFG_YAML_NAME, "auth"},
    {CFG_YAML_NAME, "auth.enabled"},
    {CFG_YAML_NAME, "auth.realm"},
    {CFG_YAML_NAME, "auth.credentials_ttl"},
    {CFG_YAML_NAME, "auth.products"},
    {CFG_YAML_NAME, "whitelist"},
    {CFG_YAML_NAME, "whitelist.apply"},
    {CFG_YAML_NAME, "whitelist.mode"},
    {CFG_YAML_NAME, "whitelist.preset"},
    {CFG_YAML_NAME, "upstream"},
    {CFG_YAML_NAME, "upstream.host"},
    {CFG_YAML_NAME, "upstream.port"},
    {CFG_YAML_NAME, "upstream.username"},
    {CFG_YAML_NAME, "tunnel"},
    {CFG_YAML_NAME, "tunnel.server"},
    {CFG_YAML_NAME, "tunnel.address"},
    {CFG_YAML_NAME, "tunnel.port"},
    {CFG_YAML_NAME, "tunnel.local_port"},
    {CFG_YAML_NAME, "routes"},
    {CFG_YAML_NAME, "routes[].via"},
    {CFG_YAML_NAME, "routes[].domains"},
    {CFG_YAML_NAME, "default_route"},
    {CFG_YAML_NAME, "admin"},
    {CFG_YAML_NAME, "admin.bind"},
    {CFG_YAML_NAME, "admin.port"},
    {CFG_YAML_NAME, "cache"},
    {CFG_YAML_NAME, "cache.memory_mb"},
    {CFG_YAML_NAME, "cache.disk_mb"},
    {CFG_YAML_NAME, "cache.max_object_mb"},
    {CFG_JSON_NAME, "version"},
    {CFG_JSON_NAME, "domains"},
    {CFG_JSON_NAME, "domains[].domain"},
    {CFG_JSON_NAME, "domains[].via"},
    {CFG_SECRETS, "apikeys.json"},
    {CFG_SECRETS, "upstream-password"},
    {CFG_SECRETS, "tunnel-ca.pem"},
    {CFG_SECRETS, "tunnel-client.pem"},
    {CFG_SECRETS, "tunnel-client.key"},
    {CFG_KEYS_NAME, "keys"},
    {CFG_KEYS_NAME, "keys[].id"},
    {CFG_KEYS_NAME, "keys[].key"},
    {CFG_KEYS_NAME, "keys[].expires"},
    {NULL, NULL},
};

bool cfg_key_known(const char *file, const char *path)
{
	for (const struct cfg_key *k = cfg_keys; k->file; k++)
		if (strcmp(k->file, file) == 0 && strcmp(k->key, path) == 0)
			return true;
	return false;
}

/* The keys directly under prefix ("" for the top level; "routes[]" for a route), comma
 * separated, for "expected one of" hints. */
static void cfg_keys_under(const char *file, const char *prefix, char *out, size_t outlen)
{
	size_t plen = strlen(prefix), used = 0;
	out[0] = '\0';
	for (const struct cfg_key *k = cfg_keys; k->file; k++) {
		if (strcmp(k->file, file) != 0)
			continue;
		const char *rest = k->key;
		if (plen > 0) {
			if (strncmp(rest, prefix, plen) != 0 || rest[plen] != '.')
				continue;
			rest += plen + 1;
		}
		if (strpbrk(rest, ".[") != NULL)
			continue;
		int n = snprintf(out + used, outlen - used, "%s%s", used ? ", " : "", rest);
		if (n < 0 || (size_t)n >= outlen - used)
			break;
		used += (size_t)n;
	}
}

/* ---- value checks shared by both files ------------------------------------------------- */

/* A token that is rendered into squid.conf or a helper's argv: no space, quote, '#'. */
static bool safe_token(const char *s, const char *extra)
{
	if (*s == '\0')
		return false;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && strchr(extra, *s) == NULL)
			return false;
	return true;
}

static bool is_ip_literal(const char *s)
{
	unsigned char buf[16];
	return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

/* Canonical "addr/len" for a CIDR (or a bare address); -1 if invalid. */
static int cidr_canonical(const char *in, char *out, size_t outlen)
{
	char addr[64];
	const char *slash = strchr(in, '/');
	size_t alen = slash ? (size_t)(slash - in) : strlen(in);
	if (alen == 0 || alen >= sizeof(addr))
		return -1;
	memcpy(addr, in, alen);
	addr[alen] = '\0';
	unsigned char buf[16];
	int af, maxbits;
	if (inet_pton(AF_INET, addr, buf) == 1) {
		af = AF_INET;
		maxbits = 32;
	} else if (inet_pton(AF_INET6, addr, buf) == 1) {
		af = AF_INET6;
		maxbits = 128;
	} else {
		return -1;
	}
	long bits = maxbits;
	if (slash) {
		char *end;
		errno = 0;
		bits = strtol(slash + 1, &end, 10);
		if (errno || *end || end == slash + 1 || bits < 0 || bits > maxbits)
			return -1;
	}
	char txt[INET6_ADDRSTRLEN];
	inet_ntop(af, buf, txt, sizeof(txt));
	snprintf(out, outlen, "%s/%ld", txt, bits);
	return 0;
}

/* ---- fps.yaml ------------------------------------------------------------------------ */

struct ywalk {
	yaml_document_t *doc;
	const char *file;
	struct fps_err *e;
};

/* a and b may be input text: each is quoted as a bounded, escaped excerpt. */
static int y_fail(struct ywalk *w, const yaml_node_t *n, const char *fmt, const char *a, const char *b)
{
	char msg[768], qa[ERR_QUOTE_BUF], qb[ERR_QUOTE_BUF];
	snprintf(msg, sizeof(msg), fmt, err_quote(a, qa), err_quote(b, qb));
	return err_set(w->e, w->file, n ? (int)n->start_mark.line + 1 : 0, n ? (int)n->start_mark.column + 1 : 0, "%s",
	               msg);
}

/* Like y_fail, for a message that quotes one piece of input and then says why in our own
 * words: only the input is bounded (err_quote), never our sentence. */
static int y_fail_why(struct ywalk *w, const yaml_node_t *n, const char *fmt, const char *input, const char *why)
{
	char msg[768], q[ERR_QUOTE_BUF];
	snprintf(msg, sizeof(msg), fmt, err_quote(input, q), why);
	return err_set(w->e, w->file, n ? (int)n->start_mark.line + 1 : 0, n ? (int)n->start_mark.column + 1 : 0, "%s",
	               msg);
}

static bool y_plain(const yaml_node_t *n)
{
	return n->type == YAML_SCALAR_NODE && n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
}

static const char *y_text(const yaml_node_t *n)
{
	return (const char *)n->data.scalar.value;
}

static int y_string(struct ywalk *w, const yaml_node_t *n, const char *key, char *out, size_t outlen)
{
	if (n->type != YAML_SCALAR_NODE)
		return y_fail(w, n, "'%s' must be a string%s", key, "");
	if (strlen(y_text(n)) >= outlen)
		return y_fail(w, n, "'%s' is too long%s", key, "");
	snprintf(out, outlen, "%s", y_text(n));
	return 0;
}

static int y_int(struct ywalk *w, const yaml_node_t *n, const char *key, long min, long max, int *out)
{
	if (!y_plain(n))
		return y_fail(w, n, "'%s' must be an integer%s", key, "");
	char *end;
	errno = 0;
	long v = strtol(y_text(n), &end, 10);
	if (errno || *end || end == y_text(n))
		return y_fail(w, n, "'%s' must be an integer, not '%s'", key, y_text(n));
	if (v < min || v > max) {
		char range[64];
		snprintf(range, sizeof(range), "%ld..%ld", min, max);
		return y_fail(w, n, "'%s' must be in %s", key, range);
	}
	*out = (int)v;
	return 0;
}

static int y_bool(struct ywalk *w, const yaml_node_t *n, const char *key, bool *out)
{
	if (y_plain(n) && (strcmp(y_text(n), "true") == 0 || strcmp(y_text(n), "True") == 0)) {
		*out = true;
		return 0;
	}
	if (y_plain(n) && (strcmp(y_text(n), "false") == 0 || strcmp(y_text(n), "False") == 0)) {
		*out = false;
		return 0;
	}
	return y_fail(w, n, "'%s' must be true or false%s", key, "");
}

static int y_port_list(struct ywalk *w, const yaml_node_t *n, const char *key, int *ports, size_t *count)
{
	if (n->type != YAML_SEQUENCE_NODE)
		return y_fail(w, n, "'%s' must be a list of ports%s", key, "");
	*count = 0;
	for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top; it++) {
		yaml_node_t *item = yaml_document_get_node(w->doc, *it);
		if (*count >= CFG_MAX_PORTS)
			return y_fail(w, item, "'%s' has too many ports%s", key, "");
		if (y_int(w, item, key, 1, 65535, &ports[*count]) < 0)
			return -1;
		(*count)++;
	}
	return 0;
}

/* A list of scalars; check() validates/canonicalizes each (NULL = keep as is). */
static int y_str_list(struct ywalk *w, const yaml_node_t *n, const char *key, struct strv *out,
                      const char *(*check)(const char *in, char *canon, size_t len))
{
	if (n->type != YAML_SEQUENCE_NODE)
		return y_fail(w, n, "'%s' must be a list%s", key, "");
	strv_free(out);
	for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top; it++) {
		yaml_node_t *item = yaml_document_get_node(w->doc, *it);
		if (item->type != YAML_SCALAR_NODE)
			return y_fail(w, item, "'%s' items must be strings%s", key, "");
		char canon[256];
		snprintf(canon, sizeof(canon), "%s", y_text(item));
		if (check) {
			const char *why = check(y_text(item), canon, sizeof(canon));
			if (why)
				return y_fail_why(w, item, "'%s': %s", y_text(item), why);
		}
		if (strv_push(out, canon) < 0)
			return err_set(w->e, w->file, 0, 0, "out of memory");
	}
	return 0;
}

static const char *check_cidr(const char *in, char *canon, size_t len)
{
	return cidr_canonical(in, canon, len) < 0 ? "not an IP network (address or address/prefix)" : NULL;
}

static const char *check_ip(const char *in, char *canon, size_t len)
{
	(void)canon;
	(void)len;
	return is_ip_literal(in) ? NULL : "not an IP address";
}

static const char *check_product(const char *in, char *canon, size_t len)
{
	(void)canon;
	(void)len;
	return safe_token(in, "._-") && strlen(in) <= 64 ? NULL : "product names are 1..64 of [A-Za-z0-9._-]";
}

typedef int (*section_fn)(struct ywalk *w, const char *key, const yaml_node_t *val, const yaml_node_t *keynode,
                          struct fps_config *c);

/* path: the section's path in the key table ("" for the top level). */
static int unknown_key(struct ywalk *w, const yaml_node_t *k, const char *path)
{
	char expected[512], msg[768], q[ERR_QUOTE_BUF];
	cfg_keys_under(CFG_YAML_NAME, path, expected, sizeof(expected));
	snprintf(msg, sizeof(msg), "unknown key '%s' in '%s' (expected one of: %s)", err_quote(y_text(k), q),
	         path[0] ? path : "top level", expected);
	return err_set(w->e, w->file, (int)k->start_mark.line + 1, (int)k->start_mark.column + 1, "%s", msg);
}

/* Walks a mapping, rejecting duplicate keys, and hands each pair to fn. */
static int y_mapping(struct ywalk *w, const yaml_node_t *n, const char *what, section_fn fn, struct fps_config *c)
{
	if (n->type != YAML_MAPPING_NODE)
		return y_fail(w, n, "'%s' must be a mapping%s", what, "");
	bool top = strcmp(what, "top level") == 0;
	for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
		yaml_node_t *k = yaml_document_get_node(w->doc, p->key);
		yaml_node_t *v = yaml_document_get_node(w->doc, p->value);
		if (k->type != YAML_SCALAR_NODE)
			return y_fail(w, k, "keys in '%s' must be strings%s", what, "");
		for (yaml_node_pair_t *q = n->data.mapping.pairs.start; q < p; q++) {
			yaml_node_t *k2 = yaml_document_get_node(w->doc, q->key);
			if (k2->type == YAML_SCALAR_NODE && strcmp(y_text(k2), y_text(k)) == 0)
				return y_fail_why(w, k, "duplicate key '%s' in '%s'", y_text(k), what);
		}
		char path[256];
		snprintf(path, sizeof(path), "%s%s%s", top ? "" : what, top ? "" : ".", y_text(k));
		if (!cfg_key_known(CFG_YAML_NAME, path))
			return unknown_key(w, k, top ? "" : what);
		if (fn(w, y_text(k), v, k, c) < 0)
			return -1;
	}
	return 0;
}

static int sec_proxy(struct ywalk *w, const char *key, const yaml_node_t *v, const yaml_node_t *k, struct fps_config *c)
{
	if (strcmp(key, "bind") == 0) {
		if (y_string(w, v, key, c->bind, sizeof(c->bind)) < 0)
			return -1;
		if (!is_ip_literal(c->bind))
			return y_fail(w, v, "'bind' must be an IP address, not '%s'%s", c->bind, "");
		return 0;
	}
	if (strcmp(key, "port") == 0)
		return y_int(w, v, key, 1, 65535, &c->port);
	if (strcmp(key, "workers") == 0) {
		if (y_plain(v) && strcmp(y_text(v), "auto") == 0) {
			c->workers = 0;
			return 0;
		}
		return y_int(w, v, key, 1, 64, &c->workers);
	}
	if (strcmp(key, "connect_ports") == 0)
		return y_port_list(w, v, key, c->connect_ports, &c->n_connect_ports);
	if (strcmp(key, "safe_ports") == 0)
		return y_port_list(w, v, key, c->safe_ports, &c->n_safe_ports);
	if (strcmp(key, "blocked_networks") == 0)
		return y_str_list(w, v, key, &c->blocked_networks, check_cidr);
	if (strcmp(key, "allow_loopback_destinations") == 0)
		return y_bool(w, v, key, &c->allow_loopback);
	if (strcmp(key, "dns_nameservers") == 0)
		return y_str_list(w, v, key, &c->dns_nameservers, check_ip);
	if (strcmp(key, "dns_timeout") == 0)
		return y_int(w, v, key, 1, 300, &c->dns_timeout);
	if (strcmp(key, "read_timeout") == 0)
		return y_int(w, v, key, 1, 86400, &c->read_timeout);
	if (strcmp(key, "hosts_file") == 0) {
		if (y_string(w, v, key, c->hosts_file, sizeof(c->hosts_file)) < 0)
			return -1;
		if (c->hosts_file[0] != '/' || !safe_token(c->hosts_file, "/._-"))
			return y_fail(w, v, "'hosts_file' must be an absolute path of [A-Za-z0-9/._-]%s", "", "");
		return 0;
	}
	return unknown_key(w, k, "proxy");
}

static int sec_auth(struct ywalk *w, const char *key, const yaml_node_t *v, const yaml_node_t *k, struct fps_config *c)
{
	if (strcmp(key, "enabled") == 0)
		return y_bool(w, v, key, &c->auth_enabled);
	if (strcmp(key, "realm") == 0) {
		if (y_string(w, v, key, c->realm, sizeof(c->realm)) < 0)
			return -1;
		if (!safe_token(c->realm, " ._-"))
			return y_fail(w, v, "'realm' must be 1..63 of [A-Za-z0-9 ._-]%s", "", "");
		return 0;
	}
	if (strcmp(key, "credentials_ttl") == 0)
		return y_int(w, v, key, 1, 86400, &c->credentials_ttl);
	if (strcmp(key, "products") == 0)
		return y_str_list(w, v, key, &c->products, check_product);
	return unknown_key(w, k, "auth");
}

static int sec_whitelist(struct ywalk *w, const char *key, const yaml_node_t *v, const yaml_node_t *k,
                         struct fps_config *c)
{
	if (strcmp(key, "apply") == 0) {
		if (y_plain(v) && strcmp(y_text(v), "live") == 0)
			c->apply = CFG_APPLY_LIVE;
		else if (y_plain(v) && strcmp(y_text(v), "reconfigure") == 0)
			c->apply = CFG_APPLY_RECONFIGURE;
		else
			return y_fail(w, v, "'apply' must be 'live' or 'reconfigure'%s%s", "", "");
		return 0;
	}
	if (strcmp(key, "preset") == 0) {
		if (v->type != YAML_SEQUENCE_NODE)
			return y_fail(w, v, "'preset' must be a list of names%s%s", "", "");
		int idx = 0;
		for (yaml_node_item_t *it = v->data.sequence.items.start; it < v->data.sequence.items.top; it++) {
			yaml_node_t *item = yaml_document_get_node(w->doc, *it);
			if (item->type != YAML_SCALAR_NODE)
				return y_fail(w, item, "'preset' items must be strings%s%s", "", "");
			int rc = entry_push(c, y_text(item), CFG_YAML_NAME, (int)item->start_mark.line + 1,
			                    (int)item->start_mark.column + 1, idx++);
			if (rc == -2)
				return err_set(w->e, w->file, (int)item->start_mark.line + 1,
				               (int)item->start_mark.column + 1, "more than %d whitelist entries",
				               CFG_MAX_ENTRIES);
			if (rc < 0)
				return err_set(w->e, w->file, 0, 0, "out of memory");
		}
		return 0;
	}
	if (strcmp(key, "mode") == 0) {
		if (y_plain(v) && strcmp(y_text(v), "enforce") == 0)
			c->whitelist_report = false;
		else if (y_plain(v) && strcmp(y_text(v), "report") == 0)
			c->whitelist_report = true;
		else
			return y_fail(w, v, "'mode' must be 'enforce' or 'report'%s%s", "", "");
		c->whitelist_mode_line = (int)v->start_mark.line + 1;
		return 0;
	}
	return unknown_key(w, k, "whitelist");
}

static int sec_upstream(struct ywalk *w, const char *key, const yaml_node_t *v, const yaml_node_t *k,
                        struct fps_config *c)
{
	if (strcmp(key, "host") == 0) {
		char raw[512], note[128];
		enum wl_kind kind;
		if (y_string(w, v, key, raw, sizeof(raw)) < 0)
			return -1;
		if (wl_normalize(raw, c->upstream_host, &kind, note, sizeof(note)) != WL_NORM_OK || kind == WL_WILD)
			return y_fail_why(w, v, "'host' must be a host name or IP address%s: %s", "",
			                  note[0] ? note : "wildcard");
		return 0;
	}
	if (strcmp(key, "port") == 0)
		return y_int(w, v, key, 1, 65535, &c->upstream_port);
	if (strcmp(key, "username") == 0) {
		if (y_string(w, v, key, c->upstream_user, sizeof(c->upstream_user)) < 0)
			return -1;
		if (!safe_token(c->upstream_user, "._@-"))
			return y_fail(w, v, "'username' must be [A-Za-z0-9._@-]%s%s", "", "");
		return 0;
	}
	return unknown_key(w, k, "upstream");
}

static int sec_tunnel(struct ywalk *w, const char *key, const yaml_node_t *v, const yaml_node_t *k,
                      struct fps_config *c)
{
	if (strcmp(key, "server") == 0) {
		char raw[512], note[128];
		enum wl_kind kind;
		if (y_string(w, v, key, raw, sizeof(raw)) < 0)
			return -1;
		if (wl_normalize(raw, c->tunnel_server, &kind, note, sizeof(note)) != WL_NORM_OK || kind != WL_EXACT)
			return y_fail(w, v, "'server' must be the host name on the server's certificate%s%s", "", "");
		return 0;
	}
	if (strcmp(key, "address") == 0) {
		if (y_string(w, v, key, c->tunnel_address, sizeof(c->tunnel_address)) < 0)
			return -1;
		if (!is_ip_literal(c->tunnel_address))
			return y_fail(w, v, "'address' must be an IP address%s%s", "", "");
		return 0;
	}
	if (strcmp(key, "port") == 0)
		return y_int(w, v, key, 1, 65535, &c->tunnel_port);
	if (strcmp(key, "local_port") == 0)
		return y_int(w, v, key, 1, 65535, &c->tunnel_local_port);
	return unknown_key(w, k, "tunnel");
}

static int sec_admin(struct ywalk *w, const char *key, const yaml_node_t *v, const yaml_node_t *k, struct fps_config *c)
{
	if (strcmp(key, "bind") == 0) {
		if (y_string(w, v, key, c->admin_bind, sizeof(c->admin_bind)) < 0)
			return -1;
		if (!is_ip_literal(c->admin_bind))
			return y_fail(w, v, "'bind' must be an IP address%s%s", "", "");
		return 0;
	}
	if (strcmp(key, "port") == 0)
		return y_int(w, v, key, 1, 65535, &c->admin_port);
	return unknown_key(w, k, "admin");
}

static int sec_cache(struct ywalk *w, const char *key, const yaml_node_t *v, const yaml_node_t *k, struct fps_config *c)
{
	if (strcmp(key, "memory_mb") == 0)
		return y_int(w, v, "cache.memory_mb", CFG_CACHE_MEMORY_MIN, CFG_CACHE_MEMORY_MAX, &c->cache_memory_mb);
	if (strcmp(key, "disk_mb") == 0)
		return y_int(w, v, "cache.disk_mb", 0, CFG_CACHE_DISK_MAX, &c->cache_disk_mb);
	if (strcmp(key, "max_object_mb") == 0) {
		c->cache_max_object_set = true;
		return y_int(w, v, "cache.max_object_mb", 1, CFG_CACHE_OBJECT_MAX, &c->cache_max_object_mb);
	}
	return unknown_key(w, k, "cache");
}

static int y_via(struct ywalk *w, const yaml_node_t *v, enum wl_via *out)
{
	if (v->type != YAML_SCALAR_NODE || wl_via_parse(y_text(v), out) < 0)
		return y_fail(w, v, "unknown route '%s' (expected direct, upstream or tunnel)%s",
		              v->type == YAML_SCALAR_NODE ? y_text(v) : "?", "");
	return 0;
}

static int route_push(struct fps_config *c, const struct cfg_route *r)
{
	if (c->n_routes >= CFG_MAX_ROUTES)
		return -2;
	struct cfg_route *nv = realloc(c->routes, (c->n_routes + 1) * sizeof(*nv));
	if (nv == NULL)
		return -1;
	c->routes = nv;
	c->routes[c->n_routes++] = *r;
	return 0;
}

static int y_routes(struct ywalk *w, const yaml_node_t *v, struct fps_config *c)
{
	if (v->type != YAML_SEQUENCE_NODE)
		return y_fail(w, v, "'routes' must be a list of {via, domains}%s%s", "", "");
	for (yaml_node_item_t *it = v->data.sequence.items.start; it < v->data.sequence.items.top; it++) {
		yaml_node_t *r = yaml_document_get_node(w->doc, *it);
		if (r->type != YAML_MAPPING_NODE)
			return y_fail(w, r, "each route must be a mapping {via, domains}%s%s", "", "");
		const yaml_node_t *via_node = NULL, *domains = NULL;
		for (yaml_node_pair_t *p = r->data.mapping.pairs.start; p < r->data.mapping.pairs.top; p++) {
			yaml_node_t *k = yaml_document_get_node(w->doc, p->key);
			yaml_node_t *val = yaml_document_get_node(w->doc, p->value);
			if (k->type != YAML_SCALAR_NODE)
				return y_fail(w, k, "route keys must be strings%s%s", "", "");
			char path[128];
			snprintf(path, sizeof(path), "routes[].%s", y_text(k));
			const yaml_node_t **slot = strcmp(y_text(k), "via") == 0       ? &via_node
			                           : strcmp(y_text(k), "domains") == 0 ? &domains
			                                                               : NULL;
			if (slot == NULL || !cfg_key_known(CFG_YAML_NAME, path))
				return unknown_key(w, k, "routes[]");
			if (*slot != NULL)
				return y_fail(w, k, "duplicate key '%s' in a route%s", y_text(k), "");
			*slot = val;
		}
		if (via_node == NULL || domains == NULL)
			return y_fail(w, r, "a route needs both 'via' and 'domains'%s%s", "", "");
		enum wl_via via;
		if (y_via(w, via_node, &via) < 0)
			return -1;
		if (domains->type != YAML_SEQUENCE_NODE)
			return y_fail(w, domains, "'domains' must be a list of names%s%s", "", "");
		for (yaml_node_item_t *d = domains->data.sequence.items.start; d < domains->data.sequence.items.top;
		     d++) {
			yaml_node_t *dn = yaml_document_get_node(w->doc, *d);
			if (dn->type != YAML_SCALAR_NODE)
				return y_fail(w, dn, "route domains must be strings%s%s", "", "");
			struct cfg_route cr = {
			    .via = via, .line = (int)dn->start_mark.line + 1, .col = (int)dn->start_mark.column + 1};
			char note[128];
			if (wl_normalize(y_text(dn), cr.name, &cr.kind, note, sizeof(note)) == WL_NORM_REJECT)
				return y_fail_why(w, dn, "route domain '%s': %s", y_text(dn), note);
			int rc = route_push(c, &cr);
			if (rc == -2)
				return y_fail(w, dn, "more than %s route domains%s", CFG_MAX_ROUTES_STR, "");
			if (rc < 0)
				return err_set(w->e, w->file, 0, 0, "out of memory");
		}
	}
	return 0;
}

static int sec_top(struct ywalk *w, const char *key, const yaml_node_t *v, const yaml_node_t *k, struct fps_config *c)
{
	if (strcmp(key, "proxy") == 0)
		return y_mapping(w, v, key, sec_proxy, c);
	if (strcmp(key, "auth") == 0)
		return y_mapping(w, v, key, sec_auth, c);
	if (strcmp(key, "whitelist") == 0)
		return y_mapping(w, v, key, sec_whitelist, c);
	if (strcmp(key, "upstream") == 0) {
		c->has_upstream = true;
		return y_mapping(w, v, key, sec_upstream, c);
	}
	if (strcmp(key, "tunnel") == 0) {
		c->has_tunnel = true;
		return y_mapping(w, v, key, sec_tunnel, c);
	}
	if (strcmp(key, "routes") == 0)
		return y_routes(w, v, c);
	if (strcmp(key, "default_route") == 0)
		return y_via(w, v, &c->default_route);
	if (strcmp(key, "admin") == 0)
		return y_mapping(w, v, key, sec_admin, c);
	if (strcmp(key, "cache") == 0) {
		c->has_cache = true;
		c->cache_line = (int)k->start_mark.line + 1;
		/* An empty section ("cache:" or "cache: {}") turns the cache on with its defaults. */
		if (v->type == YAML_SCALAR_NODE && y_text(v)[0] == '\0')
			return 0;
		return y_mapping(w, v, key, sec_cache, c);
	}
	return unknown_key(w, k, "");
}

/* An anchor seen in the event stream and the number of nodes under it. */
struct y_anchor {
	char *name;
	unsigned long long nodes;
};

#define CFG_YAML_MAX_ANCHORS 256

/*
 * Walks fps.yaml's event stream before any document is built and refuses what would cost more
 * than any real configuration: nesting deeper than CFG_YAML_MAX_DEPTH (libyaml's scanner does
 * work quadratic in the depth, and a document of 100,000 '[' kept the loop busy for half a
 * minute), more than CFG_YAML_MAX_NODES nodes counting each alias as the copy it stands for
 * (an anchored list of 1,000 names aliased 3,000 times is 3 million routes), and more than
 * CFG_YAML_MAX_ANCHORS anchors. A syntax error is left to the loader, which reports it.
 */
static int y_prescan(const char *text, size_t len, const char *path, struct fps_err *e)
{
	yaml_parser_t p;
	if (!yaml_parser_initialize(&p))
		return err_set(e, path, 0, 0, "cannot initialize YAML parser");
	yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
	struct y_anchor anchors[CFG_YAML_MAX_ANCHORS];
	size_t n_anchors = 0;
	struct {
		char *anchor;
		unsigned long long first;
	} open[CFG_YAML_MAX_DEPTH];
	int depth = 0, rc = 0;
	unsigned long long nodes = 0;
	for (bool done = false; !done && rc == 0;) {
		yaml_event_t ev;
		if (!yaml_parser_parse(&p, &ev))
			break;
		int line = (int)ev.start_mark.line + 1, col = (int)ev.start_mark.column + 1;
		const unsigned char *anchor = NULL;
		char *closed_anchor = NULL; /* of a collection that ends here, freed below */
		unsigned long long size = 0;
		switch (ev.type) {
		case YAML_SCALAR_EVENT:
			nodes++;
			anchor = ev.data.scalar.anchor;
			size = 1;
			break;
		case YAML_SEQUENCE_START_EVENT:
		case YAML_MAPPING_START_EVENT: {
			const unsigned char *a = ev.type == YAML_SEQUENCE_START_EVENT ? ev.data.sequence_start.anchor
			                                                              : ev.data.mapping_start.anchor;
			if (depth == CFG_YAML_MAX_DEPTH) {
				rc = err_set(e, path, line, col, "nested deeper than %d levels", CFG_YAML_MAX_DEPTH);
				break;
			}
			nodes++;
			open[depth].anchor = a ? strdup((const char *)a) : NULL;
			open[depth].first = nodes;
			depth++;
			break;
		}
		case YAML_SEQUENCE_END_EVENT:
		case YAML_MAPPING_END_EVENT:
			if (depth > 0) {
				depth--;
				closed_anchor = open[depth].anchor;
				if (closed_anchor) {
					anchor = (const unsigned char *)closed_anchor;
					size = nodes - open[depth].first + 1;
				}
			}
			break;
		case YAML_ALIAS_EVENT:
			for (size_t i = n_anchors; i-- > 0;) {
				if (strcmp(anchors[i].name, (const char *)ev.data.alias.anchor) == 0) {
					nodes += anchors[i].nodes;
					break;
				}
			}
			break;
		case YAML_STREAM_END_EVENT:
			done = true;
			break;
		default:
			break;
		}
		if (rc == 0 && anchor) {
			if (n_anchors == CFG_YAML_MAX_ANCHORS)
				rc = err_set(e, path, line, col, "more than %d YAML anchors", CFG_YAML_MAX_ANCHORS);
			else if ((anchors[n_anchors].name = strdup((const char *)anchor)) == NULL)
				rc = err_set(e, path, 0, 0, "out of memory");
			else
				anchors[n_anchors++].nodes = size;
		}
		if (rc == 0 && nodes > CFG_YAML_MAX_NODES)
			rc = err_set(e, path, line, col,
			             "more than %d YAML nodes (an alias counts as a copy of its anchor)",
			             CFG_YAML_MAX_NODES);
		free(closed_anchor);
		yaml_event_delete(&ev);
	}
	while (depth > 0)
		free(open[--depth].anchor);
	for (size_t i = 0; i < n_anchors; i++)
		free(anchors[i].name);
	yaml_parser_delete(&p);
	return rc;
}

int cfg_parse_yaml(struct fps_config *c, const char *text, size_t len, const char *path, struct fps_err *e)
{
	yaml_parser_t parser;
	yaml_document_t doc;
	if (len > CFG_YAML_MAX_SIZE)
		return err_set(e, path, 0, 0, "larger than the limit of %u bytes", CFG_YAML_MAX_SIZE);
	if (y_prescan(text, len, path, e) < 0)
		return -1;
	if (!yaml_parser_initialize(&parser))
		return err_set(e, path, 0, 0, "cannot initialize YAML parser");
	yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
	if (!yaml_parser_load(&parser, &doc)) {
		err_set(e, path, (int)parser.problem_mark.line + 1, (int)parser.problem_mark.column + 1,
		        "not valid YAML: %s%s%s", parser.problem ? parser.problem : "syntax error",
		        parser.context ? " " : "", parser.context ? parser.context : "");
		yaml_parser_delete(&parser);
		return -1;
	}
	struct ywalk w = {.doc = &doc, .file = path, .e = e};
	int rc = 0;
	yaml_node_t *root = yaml_document_get_root_node(&doc);
	if (root == NULL) {
		/* An empty file is never a valid config: it is what a reader sees in the
		 * middle of a truncate-and-write edit. */
		rc = err_set(e, path, 1, 1, "empty file");
	} else if (root->type == YAML_SCALAR_NODE && y_text(root)[0] == '\0') {
		rc = err_set(e, path, 1, 1, "empty file");
	} else {
		rc = y_mapping(&w, root, "top level", sec_top, c);
	}
	if (rc == 0) {
		yaml_document_t next;
		if (yaml_parser_load(&parser, &next)) {
			if (yaml_document_get_root_node(&next) != NULL)
				rc = err_set(e, path, (int)next.start_mark.line + 1, 1,
				             "more than one YAML document: fps.yaml holds exactly one");
			yaml_document_delete(&next);
		}
	}
	yaml_document_delete(&doc);
	yaml_parser_delete(&parser);
	return rc;
}

/* ---- whitelist.json ------------------------------------------------------------------ */

/* cJSON keeps no positions: find where each element of the top-level "domains"
 * array starts by scanning the (already valid) text once. */
static size_t *json_domain_offsets(const char *text, size_t len, size_t expect)
{
	size_t *offs = calloc(expect ? expect : 1, sizeof(*offs));
	if (offs == NULL)
		return NULL;
	size_t n = 0, depth = 0, key_start = 0, key_end = 0;
	bool in_domains = false, want_value = false, after_colon_domains = false;
	for (size_t i = 0; i < len; i++) {
		char ch = text[i];
		if (ch == '"') {
			size_t start = i;
			for (i++; i < len && text[i] != '"'; i++)
				if (text[i] == '\\')
					i++;
			if (depth == 1) {
				key_start = start + 1;
				key_end = i;
			}
			if (in_domains && depth == 2 && want_value && n < expect) {
				offs[n++] = start;
				want_value = false;
			}
			continue;
		}
		if (isspace((unsigned char)ch))
			continue;
		if (in_domains && depth == 2 && want_value && ch != ']') {
			if (n < expect)
				offs[n++] = i;
			want_value = false;
		}
		switch (ch) {
		case ':':
			after_colon_domains =
			    depth == 1 && key_end - key_start == 7 && memcmp(text + key_start, "domains", 7) == 0;
			break;
		case '[':
		case '{':
			depth++;
			if (ch == '[' && depth == 2 && after_colon_domains) {
				in_domains = true;
				want_value = true;
			}
			after_colon_domains = false;
			break;
		case ']':
		case '}':
			if (depth == 2 && in_domains && ch == ']')
				in_domains = false;
			depth--;
			break;
		case ',':
			if (in_domains && depth == 2)
				want_value = true;
			break;
		default:
			break;
		}
	}
	return offs;
}

/* Values (not keys) cJSON would build: a whole entry as an object is 3, so this bounds cJSON's
 * tree (about 80 bytes a node) before it is built. */
#define CFG_JSON_MAX_VALUES (3 * CFG_MAX_ENTRIES + 16)

/*
 * One pass over whitelist.json before cJSON builds anything: nesting depth and the number of
 * values are bounded, so that a file of 8 MB of "[1,1,..." or of '[' is refused at the byte that
 * crosses the limit (named by line and column) instead of costing a tree of millions of nodes.
 * Syntax is cJSON's business; this only counts.
 */
static int json_prescan(const char *text, size_t len, const char *path, struct fps_err *e)
{
	size_t depth = 0, values = 0;
	for (size_t i = 0; i < len; i++) {
		char ch = text[i];
		size_t at = i;
		if (ch == '"') {
			for (i++; i < len && text[i] != '"'; i++)
				if (text[i] == '\\')
					i++;
			size_t j = i + 1;
			while (j < len && isspace((unsigned char)text[j]))
				j++;
			if (j < len && text[j] == ':')
				continue; /* a key, stored in its value's node */
			values++;
		} else if (ch == '[' || ch == '{') {
			values++;
			if (++depth > CFG_JSON_MAX_DEPTH) {
				int line, col;
				err_text_pos(text, at, &line, &col);
				return err_set(e, path, line, col, "nested deeper than %d levels", CFG_JSON_MAX_DEPTH);
			}
		} else if (ch == ']' || ch == '}') {
			if (depth > 0)
				depth--;
		} else if (ch == '-' || isdigit((unsigned char)ch) || ch == 't' || ch == 'f' || ch == 'n') {
			values++;
			while (i + 1 < len && (isalnum((unsigned char)text[i + 1]) || strchr("+-.", text[i + 1])))
				i++;
		}
		if (values > CFG_JSON_MAX_VALUES) {
			int line, col;
			err_text_pos(text, at, &line, &col);
			return err_set(e, path, line, col, "more than %d values (at most %d whitelist entries)",
			               CFG_JSON_MAX_VALUES, CFG_MAX_ENTRIES);
		}
	}
	return 0;
}

int cfg_parse_whitelist_json(struct fps_config *c, const char *text, size_t len, const char *path, struct fps_err *e)
{
	if (len > CFG_JSON_MAX_SIZE)
		return err_set(e, path, 0, 0, "larger than the limit of %u bytes", CFG_JSON_MAX_SIZE);
	if (json_prescan(text, len, path, e) < 0)
		return -1;
	/* cJSON's strings are NUL-terminated: "a.test\u0000x" would silently become
	 * "a.test". A NUL has no business in a whitelist, so the file is malformed. */
	if (memchr(text, '\0', len) != NULL)
		return err_set(e, path, 0, 0, "NUL byte in the file");
	for (size_t i = 0; i + 6 <= len; i++) {
		if (text[i] == '\\' && text[i + 1] == 'u' && strncmp(text + i + 2, "0000", 4) == 0) {
			int line, col;
			err_text_pos(text, i, &line, &col);
			return err_set(e, path, line, col, "NUL character (\\u0000) in a string");
		}
		if (text[i] == '\\')
			i++; /* skip the escaped character, so "\\\\u0000" is not a NUL */
	}
	const char *end = NULL;
	cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
	if (root == NULL) {
		const char *at = cJSON_GetErrorPtr();
		int line = 1, col = 1;
		if (at && at >= text && at <= text + len)
			err_text_pos(text, (size_t)(at - text), &line, &col);
		return err_set(e, path, line, col, len == 0 ? "empty file" : "not valid JSON");
	}
	int rc = 0;
	size_t *offs = NULL;
	if (!cJSON_IsObject(root)) {
		rc = err_set(e, path, 1, 1, "top level must be an object {\"version\": N, \"domains\": [...]}");
		goto out;
	}
	for (cJSON *it = root->child; it; it = it->next) {
		if (!cfg_key_known(CFG_JSON_NAME, it->string)) {
			char expected[256], q[ERR_QUOTE_BUF];
			cfg_keys_under(CFG_JSON_NAME, "", expected, sizeof(expected));
			rc = err_set(e, path, 0, 0, "unknown key '%s' (expected %s)", err_quote(it->string, q),
			             expected);
			goto out;
		}
	}
	cJSON *version = cJSON_GetObjectItemCaseSensitive(root, "version");
	if (version) {
		double d = cJSON_GetNumberValue(version);
		if (!cJSON_IsNumber(version) || d < 0 || d > 9007199254740991.0 || d != (double)(long long)d) {
			rc = err_set(e, path, 0, 0, "'version' must be a non-negative integer");
			goto out;
		}
		c->has_version = true;
		c->whitelist_version = (long long)d;
	}
	cJSON *domains = cJSON_GetObjectItemCaseSensitive(root, "domains");
	if (domains == NULL) {
		rc = err_set(e, path, 0, 0, "missing 'domains' list");
		goto out;
	}
	if (!cJSON_IsArray(domains)) {
		rc = err_set(e, path, 0, 0, "'domains' must be a list");
		goto out;
	}
	size_t count = (size_t)cJSON_GetArraySize(domains);
	offs = json_domain_offsets(text, len, count);
	size_t idx = 0;
	/* Entries come in text order: advance one cursor instead of rescanning from the
	 * start for each (100,000 entries would make that quadratic). */
	size_t cur_off = 0;
	int cur_line = 1, cur_col = 1;
	for (cJSON *d = domains->child; d; d = d->next, idx++) {
		int line = 0, col = 0;
		if (offs && (idx == 0 || offs[idx] != 0) && offs[idx] >= cur_off) {
			for (; cur_off < offs[idx]; cur_off++) {
				if (text[cur_off] == '\n') {
					cur_line++;
					cur_col = 1;
				} else {
					cur_col++;
				}
			}
			line = cur_line;
			col = cur_col;
		}
		const char *name = NULL;
		bool has_via = false;
		enum wl_via via = WL_VIA_DIRECT;
		if (cJSON_IsString(d)) {
			name = d->valuestring;
		} else if (cJSON_IsObject(d)) {
			for (cJSON *f = d->child; f; f = f->next) {
				char key[128];
				snprintf(key, sizeof(key), "domains[].%s", f->string);
				if (cfg_key_known(CFG_JSON_NAME, key) && !cJSON_IsString(f)) {
					rc = err_set(e, path, line, col, "domains[%zu]: \"%s\" must be a string", idx,
					             f->string);
					goto out;
				}
				if (strcmp(f->string, "domain") == 0 && cfg_key_known(CFG_JSON_NAME, key)) {
					name = f->valuestring;
				} else if (strcmp(f->string, "via") == 0 && cfg_key_known(CFG_JSON_NAME, key)) {
					if (wl_via_parse(f->valuestring, &via) < 0) {
						char q[ERR_QUOTE_BUF];
						rc =
						    err_set(e, path, line, col,
						            "domains[%zu]: unknown via '%s' (expected direct, upstream "
						            "or tunnel)",
						            idx, err_quote(f->valuestring, q));
						goto out;
					}
					has_via = true;
				} else {
					char q[ERR_QUOTE_BUF];
					rc = err_set(e, path, line, col,
					             "domains[%zu]: unexpected key '%s' (expected \"domain\": string, "
					             "\"via\": string)",
					             idx, err_quote(f->string, q));
					goto out;
				}
			}
			if (name == NULL) {
				rc = err_set(e, path, line, col, "domains[%zu]: object without \"domain\"", idx);
				goto out;
			}
		} else {
			rc =
			    err_set(e, path, line, col, "domains[%zu]: must be a string or {\"domain\", \"via\"}", idx);
			goto out;
		}
		int pushed = entry_push(c, name, CFG_JSON_NAME, line, col, (int)idx);
		if (pushed == -2) {
			rc = err_set(e, path, line, col, "more than %d whitelist entries (fps.yaml presets included)",
			             CFG_MAX_ENTRIES);
			goto out;
		}
		if (pushed < 0) {
			rc = err_set(e, path, 0, 0, "out of memory");
			goto out;
		}
		c->entries[c->n_entries - 1].has_via = has_via;
		c->entries[c->n_entries - 1].via = via;
	}
	c->has_whitelist_json = true;
out:
	free(offs);
	cJSON_Delete(root);
	return rc;
}

/* ---- the whole load ------------------------------------------------------------------ */

static int read_optional(const char *dir, const char *name, size_t max, char **text, size_t *len, bool *present,
                         struct fps_err *e)
{
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	struct stat sb;
	*present = lstat(path, &sb) == 0;
	if (!*present)
		return 0;
	return fsio_read_within(dir, name, max, text, len, e);
}

int cfg_load(struct fps_config *c, const char *config_dir, const char *secrets_dir, struct fps_err *e)
{
	cfg_init_defaults(c);
	snprintf(c->config_dir, sizeof(c->config_dir), "%s", config_dir);
	if (secrets_dir)
		snprintf(c->secrets_dir, sizeof(c->secrets_dir), "%s", secrets_dir);
	char path[PATH_MAX];
	bool present;

	snprintf(path, sizeof(path), "%s/%s", config_dir, CFG_YAML_NAME);
	if (fsio_read_within(config_dir, CFG_YAML_NAME, CFG_YAML_MAX_SIZE, &c->yaml_text, &c->yaml_len, e) < 0)
		goto fail;
	if (cfg_parse_yaml(c, c->yaml_text, c->yaml_len, path, e) < 0)
		goto fail;
	if (read_optional(config_dir, CFG_JSON_NAME, CFG_JSON_MAX_SIZE, &c->json_text, &c->json_len, &present, e) < 0)
		goto fail;
	if (present) {
		snprintf(path, sizeof(path), "%s/%s", config_dir, CFG_JSON_NAME);
		if (cfg_parse_whitelist_json(c, c->json_text, c->json_len, path, e) < 0)
			goto fail;
	}

	if (c->whitelist_report && c->apply == CFG_APPLY_RECONFIGURE) {
		snprintf(path, sizeof(path), "%s/%s", config_dir, CFG_YAML_NAME);
		err_set(e, path, c->whitelist_mode_line, 0,
		        "whitelist.mode 'report' needs whitelist.apply 'live' (fps-acl decides and counts)");
		goto fail;
	}
	if (c->has_upstream && c->upstream_host[0] == '\0') {
		snprintf(path, sizeof(path), "%s/%s", config_dir, CFG_YAML_NAME);
		err_set(e, path, 0, 0, "'upstream' needs 'host'");
		goto fail;
	}
	snprintf(path, sizeof(path), "%s/%s", config_dir, CFG_YAML_NAME);
	if (cfg_check_cache(c, path, e) < 0)
		goto fail;
	if (c->has_tunnel && c->tunnel_server[0] == '\0') {
		snprintf(path, sizeof(path), "%s/%s", config_dir, CFG_YAML_NAME);
		err_set(e, path, 0, 0, "'tunnel' needs 'server' (the name on its certificate)");
		goto fail;
	}
	for (int v = WL_VIA_UPSTREAM; v <= WL_VIA_TUNNEL; v++) {
		bool configured = v == WL_VIA_UPSTREAM ? c->has_upstream : c->has_tunnel;
		if (cfg_uses_via(c, (enum wl_via)v) && !configured) {
			snprintf(path, sizeof(path), "%s/%s", config_dir, CFG_YAML_NAME);
			err_set(e, path, 0, 0, "a route uses '%s' but no '%s' section is configured",
			        wl_via_name((enum wl_via)v), wl_via_name((enum wl_via)v));
			goto fail;
		}
	}

	if (secrets_dir && secrets_dir[0]) {
		char *pw = NULL;
		size_t pwlen = 0;
		if (read_optional(secrets_dir, "upstream-password", CFG_SECRET_MAX_SIZE, &pw, &pwlen, &present, e) < 0)
			goto fail;
		if (present) {
			while (pwlen > 0 && (pw[pwlen - 1] == '\n' || pw[pwlen - 1] == '\r'))
				pw[--pwlen] = '\0';
			c->upstream_password = pw;
		}
		if (read_optional(secrets_dir, CFG_KEYS_NAME, CRED_KEYS_FILE_MAX, &c->keys_text, &c->keys_len, &present,
		                  e) < 0)
			goto fail;
	}

	/* The tunnel's CA and client certificate only feed the hash here (so that a
	 * rotation is a change); tunnel.c copies them where stunnel reads them. */
	char *tls[3] = {NULL, NULL, NULL};
	size_t tls_len[3] = {0, 0, 0};
	static const char *const tls_names[3] = {"tunnel-ca.pem", "tunnel-client.pem", "tunnel-client.key"};
	for (size_t i = 0; i < 3 && secrets_dir && secrets_dir[0]; i++) {
		if (read_optional(secrets_dir, tls_names[i], CFG_SECRET_MAX_SIZE, &tls[i], &tls_len[i], &present, e) <
		    0) {
			for (size_t j = 0; j < i; j++)
				free(tls[j]);
			goto fail;
		}
	}
	if (c->has_tunnel && secrets_dir && secrets_dir[0] && tls[0] == NULL) {
		err_set(e, secrets_dir, 0, 0, "a tunnel is configured but tunnel-ca.pem is missing from the secrets");
		goto fail;
	}

	/* One hash over every input, secrets included, decides "identical content". */
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	unsigned char digest[32];
	unsigned int dlen = 0;
	EVP_DigestInit_ex(md, EVP_sha256(), NULL);
	const char *parts[] = {c->yaml_text, c->json_text, c->keys_text, c->upstream_password, tls[0], tls[1], tls[2]};
	size_t lens[] = {c->yaml_len, c->json_len, c->keys_len, c->upstream_password ? strlen(c->upstream_password) : 0,
	                 tls_len[0],  tls_len[1],  tls_len[2]};
	for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
		unsigned char sep[9] = {0xff};
		memcpy(sep + 1, &lens[i], sizeof(lens[i]) < 8 ? sizeof(lens[i]) : 8);
		EVP_DigestUpdate(md, sep, sizeof(sep));
		if (parts[i])
			EVP_DigestUpdate(md, parts[i], lens[i]);
	}
	EVP_DigestFinal_ex(md, digest, &dlen);
	EVP_MD_CTX_free(md);
	for (size_t i = 0; i < 3; i++) {
		if (tls[i]) {
			explicit_bzero(tls[i], tls_len[i]);
			free(tls[i]);
		}
	}
	for (unsigned int i = 0; i < 32; i++)
		snprintf(c->input_hash + 2 * i, 3, "%02x", digest[i]);
	return 0;
fail:
	cfg_free(c);
	return -1;
}
