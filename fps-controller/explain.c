/*
 * explain: one verdict, with every reason behind it (see explain.h). The policy decides
 * through wl_lookup/wl_route, exactly as fps-acl does; the written entries are scanned
 * with the same specificity rule only to point at the one that decided.
 */
#include "explain.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netdb.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "adminclient.h"
#include "purge.h"
#include "fsio.h"
#include "render.h"
#include "statusjson.h"

#define EXPLAIN_NEAREST_MAX 5
#define EXPLAIN_ADDR_MAX    16

int explain_load(struct explain_policy *p, const char *config_dir, const char *secrets_dir, struct fps_err *e)
{
	memset(p, 0, sizeof(*p));
	if (cfg_load(&p->cfg, config_dir, secrets_dir, e) < 0)
		return -1;
	if (compile_config(&p->cfg, &p->cp, e) < 0) {
		cfg_free(&p->cfg);
		return -1;
	}
	return 0;
}

void explain_free(struct explain_policy *p)
{
	compile_free(&p->cp);
	cfg_free(&p->cfg);
	memset(p, 0, sizeof(*p));
}

int explain_parse_target(const char *arg, char *host, size_t hostlen, int *port)
{
	*port = 443;
	const char *h = arg, *portstr = NULL;
	size_t n;
	if (arg[0] == '[') {
		const char *close = strchr(arg, ']');
		if (close == NULL)
			return -1;
		h = arg + 1;
		n = (size_t)(close - h);
		if (close[1] == ':')
			portstr = close + 2;
		else if (close[1] != '\0')
			return -1;
	} else {
		const char *colon = strchr(arg, ':');
		if (colon && strchr(colon + 1, ':')) { /* a bare IPv6 address: no port */
			n = strlen(arg);
		} else {
			n = colon ? (size_t)(colon - arg) : strlen(arg);
			portstr = colon ? colon + 1 : NULL;
		}
	}
	if (n == 0 || n >= hostlen)
		return -1;
	memcpy(host, h, n);
	host[n] = '\0';
	if (portstr) {
		char *end = NULL;
		long v = strtol(portstr, &end, 10);
		if (end == portstr || *end || v < 1 || v > 65535)
			return -1;
		*port = (int)v;
	}
	return 0;
}

/* ---- which written entry decided ------------------------------------------------------- */

/* How specific a pattern is for host (higher wins), or -1 if it does not match. Mirrors
 * wl_route's order: the exact host, then "*.host", then shorter suffixes. */
static long ex_score(const char *name, enum wl_kind kind, const char *host)
{
	size_t nl = strlen(name), hl = strlen(host);
	if (kind != WL_WILD)
		return strcmp(name, host) == 0 ? (long)nl * 2 + 1 : -1;
	if (strcmp(name, host) == 0 || (hl > nl && host[hl - nl - 1] == '.' && strcmp(host + hl - nl, name) == 0))
		return (long)nl * 2;
	return -1;
}

static void ex_where(char *buf, size_t len, const char *file, int line, int col, int index)
{
	if (line > 0)
		snprintf(buf, len, "%s:%d:%d", file, line, col);
	else
		snprintf(buf, len, "%s: entry #%d", file, index);
}

/* The registrable-looking domain of host: its last two labels ("" when it has one). */
static const char *ex_base_domain(const char *host)
{
	const char *last = strrchr(host, '.');
	if (last == NULL)
		return "";
	const char *p = last;
	while (p > host && p[-1] != '.')
		p--;
	return p;
}

static void ex_whitelist(cJSON *root, const struct explain_policy *p, const char *host, bool is_ip, bool allowed)
{
	cJSON *w = cJSON_AddObjectToObject(root, "whitelist");
	cJSON_AddBoolToObject(w, "matched", allowed);
	long best = -1;
	const struct cfg_entry *best_e = NULL;
	enum wl_kind best_kind = WL_EXACT;
	char name[WL_NAME_MAX + 1], note[96];
	const char *base = is_ip ? "" : ex_base_domain(host);
	cJSON *nearest = cJSON_CreateArray();
	for (size_t i = 0; i < p->cfg.n_entries; i++) {
		const struct cfg_entry *en = &p->cfg.entries[i];
		enum wl_kind kind;
		if (wl_normalize(en->raw, name, &kind, note, sizeof(note)) == WL_NORM_REJECT)
			continue;
		long sc = ex_score(name, kind, host);
		if (sc > best) {
			best = sc;
			best_e = en;
			best_kind = kind;
		}
		size_t bl = strlen(base), nl = strlen(name);
		bool related = bl > 0 && (strcmp(name, base) == 0 ||
		                          (nl > bl && name[nl - bl - 1] == '.' && strcmp(name + nl - bl, base) == 0));
		if (sc < 0 && related && cJSON_GetArraySize(nearest) < EXPLAIN_NEAREST_MAX) {
			cJSON *x = cJSON_CreateObject();
			char where[160];
			ex_where(where, sizeof(where), en->file, en->line, en->col, en->index);
			cJSON_AddStringToObject(x, "entry", en->raw);
			cJSON_AddStringToObject(x, "where", where);
			char why[WL_NAME_MAX * 2 + 64];
			if (kind == WL_WILD)
				snprintf(why, sizeof(why), "covers %s and its subdomains only", name);
			else
				snprintf(why, sizeof(why), "matches %s only", name);
			cJSON_AddStringToObject(x, "note", why);
			cJSON_AddItemToArray(nearest, x);
		}
	}
	if (allowed && best_e) {
		char where[160];
		ex_where(where, sizeof(where), best_e->file, best_e->line, best_e->col, best_e->index);
		cJSON_AddStringToObject(w, "entry", best_e->raw);
		cJSON_AddStringToObject(w, "kind", wl_kind_name(best_kind));
		cJSON_AddStringToObject(w, "where", where);
		cJSON_Delete(nearest);
	} else {
		cJSON_AddNullToObject(w, "entry");
		cJSON_AddNullToObject(w, "where");
		cJSON_AddItemToObject(w, "nearest", nearest);
	}
}

static void ex_route(cJSON *root, const struct explain_policy *p, const char *host, enum wl_via via)
{
	cJSON *r = cJSON_AddObjectToObject(root, "route");
	cJSON_AddStringToObject(r, "via", wl_via_name(via));
	/* The rule: fps.yaml's routes first, then whitelist.json's per-entry "via", in order. */
	long best = -1;
	char where[160] = "", entry[WL_NAME_MAX + 8] = "";
	for (size_t i = 0; i < p->cfg.n_routes; i++) {
		const struct cfg_route *rt = &p->cfg.routes[i];
		long sc = ex_score(rt->name, rt->kind, host);
		if (sc > best) {
			best = sc;
			snprintf(where, sizeof(where), "%s:%d:%d", CFG_YAML_NAME, rt->line, rt->col);
			snprintf(entry, sizeof(entry), "%s%s", rt->kind == WL_WILD ? "*." : "", rt->name);
		}
	}
	char name[WL_NAME_MAX + 1], note[96];
	for (size_t i = 0; i < p->cfg.n_entries; i++) {
		const struct cfg_entry *en = &p->cfg.entries[i];
		enum wl_kind kind;
		if (!en->has_via || wl_normalize(en->raw, name, &kind, note, sizeof(note)) == WL_NORM_REJECT)
			continue;
		long sc = ex_score(name, kind, host);
		if (sc > best) {
			best = sc;
			ex_where(where, sizeof(where), en->file, en->line, en->col, en->index);
			snprintf(entry, sizeof(entry), "%s", en->raw);
		}
	}
	if (best < 0) {
		cJSON_AddStringToObject(r, "rule", "default_route");
		cJSON_AddNullToObject(r, "where");
	} else {
		cJSON_AddStringToObject(r, "rule", entry);
		cJSON_AddStringToObject(r, "where", where);
	}
}

/* ---- ports ------------------------------------------------------------------------------- */

static bool ex_port_in(const int *ports, size_t n, int port)
{
	for (size_t i = 0; i < n; i++)
		if (ports[i] == port)
			return true;
	return false;
}

static cJSON *ex_port_list(const int *ports, size_t n)
{
	cJSON *a = cJSON_CreateArray();
	for (size_t i = 0; i < n; i++)
		cJSON_AddItemToArray(a, cJSON_CreateNumber(ports[i]));
	return a;
}

static void ex_ports(cJSON *root, const struct fps_config *c, int port, bool *connect_ok, bool *plain_ok)
{
	cJSON *pc = cJSON_AddObjectToObject(root, "ports");
	*connect_ok = ex_port_in(c->connect_ports, c->n_connect_ports, port);
	*plain_ok = ex_port_in(c->safe_ports, c->n_safe_ports, port);
	cJSON *co = cJSON_AddObjectToObject(pc, "connect");
	cJSON_AddBoolToObject(co, "allowed", *connect_ok);
	cJSON_AddItemToObject(co, "connect_ports", ex_port_list(c->connect_ports, c->n_connect_ports));
	cJSON *pl = cJSON_AddObjectToObject(pc, "plain");
	cJSON_AddBoolToObject(pl, "allowed", *plain_ok);
	cJSON_AddItemToObject(pl, "safe_ports", ex_port_list(c->safe_ports, c->n_safe_ports));
}

/* ---- addresses --------------------------------------------------------------------------- */

/* Does addr (16 bytes for v6, 4 for v4) fall in cidr "a/len"? */
static bool ex_in_cidr(int af, const unsigned char *addr, const char *cidr)
{
	char a[64];
	const char *slash = strchr(cidr, '/');
	size_t al = slash ? (size_t)(slash - cidr) : strlen(cidr);
	if (al >= sizeof(a))
		return false;
	memcpy(a, cidr, al);
	a[al] = '\0';
	unsigned char net[16];
	int naf = strchr(a, ':') ? AF_INET6 : AF_INET;
	if (naf != af || inet_pton(naf, a, net) != 1)
		return false;
	int maxbits = af == AF_INET ? 32 : 128;
	int bits = slash ? atoi(slash + 1) : maxbits;
	for (int i = 0; i < bits; i++) {
		int byte = i / 8, bit = 7 - i % 8;
		if (((addr[byte] >> bit) & 1) != ((net[byte] >> bit) & 1))
			return false;
	}
	return true;
}

/* The blocked network addr falls in ("" when none), IPv4-mapped IPv6 checked as IPv4.
 * The lists render.c gives Squid: the never-allowed networks, then proxy.blocked_networks. */
static const char *ex_blocked(const struct fps_config *c, int af, const unsigned char *addr)
{
	unsigned char v4[4];
	static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
	bool is_mapped = af == AF_INET6 && memcmp(addr, mapped, 12) == 0;
	if (is_mapped)
		memcpy(v4, addr + 12, 4);
	const char *never[16];
	size_t n_never = render_never_networks(c, never, 16);
	for (size_t i = 0; i < n_never + c->blocked_networks.n; i++) {
		const char *net = i < n_never ? never[i] : c->blocked_networks.v[i - n_never];
		if (ex_in_cidr(af, addr, net) || (is_mapped && ex_in_cidr(AF_INET, v4, net)))
			return net;
	}
	return "";
}

/* Squid reads hosts_file at start and answers from it before DNS. */
static size_t ex_hosts_file(const char *path, const char *host, char addrs[][INET6_ADDRSTRLEN], size_t max)
{
	char *text = NULL;
	if (path[0] == '\0' || fsio_read(path, 16u << 20, &text, NULL, NULL) < 0)
		return 0;
	size_t n = 0;
	char *save = NULL;
	for (char *line = strtok_r(text, "\n", &save); line && n < max; line = strtok_r(NULL, "\n", &save)) {
		char *hash = strchr(line, '#');
		if (hash)
			*hash = '\0';
		char *s2 = NULL;
		char *ip = strtok_r(line, " \t\r", &s2);
		if (ip == NULL)
			continue;
		for (char *name = strtok_r(NULL, " \t\r", &s2); name; name = strtok_r(NULL, " \t\r", &s2)) {
			if (strcasecmp(name, host) == 0) {
				snprintf(addrs[n++], INET6_ADDRSTRLEN, "%s", ip);
				break;
			}
		}
	}
	free(text);
	return n;
}

/* Fills "addresses"; returns true when one of them is blocked. */
static bool ex_addresses(cJSON *root, const struct fps_config *c, const char *host, bool is_ip)
{
	cJSON *arr = cJSON_AddArrayToObject(root, "addresses");
	char addrs[EXPLAIN_ADDR_MAX][INET6_ADDRSTRLEN];
	size_t n = 0;
	const char *source = "literal";
	char resolve_err[256] = "";
	if (is_ip) {
		snprintf(addrs[n++], INET6_ADDRSTRLEN, "%s", host);
	} else {
		n = ex_hosts_file(c->hosts_file, host, addrs, EXPLAIN_ADDR_MAX);
		source = "hosts_file";
		if (n == 0) {
			source = "dns";
			struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
			int rc = getaddrinfo(host, NULL, &hints, &ai);
			if (rc != 0)
				snprintf(resolve_err, sizeof(resolve_err), "%s", gai_strerror(rc));
			for (struct addrinfo *a = ai; a && n < EXPLAIN_ADDR_MAX; a = a->ai_next) {
				const void *src = a->ai_family == AF_INET
				                      ? (const void *)&((struct sockaddr_in *)a->ai_addr)->sin_addr
				                      : (const void *)&((struct sockaddr_in6 *)a->ai_addr)->sin6_addr;
				char txt[INET6_ADDRSTRLEN];
				if (!inet_ntop(a->ai_family, src, txt, sizeof(txt)))
					continue;
				bool dup = false;
				for (size_t k = 0; k < n && !dup; k++)
					dup = strcmp(addrs[k], txt) == 0;
				if (!dup)
					snprintf(addrs[n++], INET6_ADDRSTRLEN, "%s", txt);
			}
			if (ai)
				freeaddrinfo(ai);
		}
	}
	bool any_blocked = false;
	for (size_t i = 0; i < n; i++) {
		unsigned char bin[16];
		int af = strchr(addrs[i], ':') ? AF_INET6 : AF_INET;
		cJSON *x = cJSON_CreateObject();
		cJSON_AddStringToObject(x, "address", addrs[i]);
		cJSON_AddStringToObject(x, "source", source);
		const char *net = inet_pton(af, addrs[i], bin) == 1 ? ex_blocked(c, af, bin) : "";
		if (net[0]) {
			cJSON_AddStringToObject(x, "blocked_by", net);
			any_blocked = true;
		} else {
			cJSON_AddNullToObject(x, "blocked_by");
		}
		cJSON_AddItemToArray(arr, x);
	}
	if (resolve_err[0])
		cJSON_AddStringToObject(root, "resolve_error", resolve_err);
	else
		cJSON_AddNullToObject(root, "resolve_error");
	char resolver[512] = "the system resolver";
	if (c->dns_nameservers.n > 0) {
		/* Squid asks these; explain uses the system resolver and says so. */
		snprintf(resolver, sizeof(resolver), "the system resolver (Squid asks dns_nameservers:");
		for (size_t i = 0; i < c->dns_nameservers.n; i++)
			snprintf(resolver + strlen(resolver), sizeof(resolver) - strlen(resolver), " %s",
			         c->dns_nameservers.v[i]);
		snprintf(resolver + strlen(resolver), sizeof(resolver) - strlen(resolver), ")");
	}
	cJSON_AddStringToObject(root, "resolver", is_ip ? "none (an address)" : resolver);
	return any_blocked;
}

static void ex_live(cJSON *root, const struct fps_status *live, enum wl_via via)
{
	if (live == NULL) {
		cJSON_AddNullToObject(root, "live");
		return;
	}
	cJSON *l = cJSON_AddObjectToObject(root, "live");
	cJSON_AddNumberToObject(l, "generation", (double)live->generation);
	const struct status_path *path = via == WL_VIA_TUNNEL     ? &live->tunnel
	                                 : via == WL_VIA_UPSTREAM ? &live->upstream
	                                                          : NULL;
	cJSON_AddBoolToObject(l, "squid_up", live->squid.up);
	if (path == NULL) {
		cJSON_AddStringToObject(l, "path", "direct");
		cJSON_AddNullToObject(l, "up");
		cJSON_AddNullToObject(l, "error");
		return;
	}
	char checked[32];
	statusjson_rfc3339(path->checked_unix, checked, sizeof(checked));
	cJSON_AddStringToObject(l, "path", wl_via_name(via));
	cJSON_AddStringToObject(l, "target", path->target);
	cJSON_AddBoolToObject(l, "up", path->configured && path->up);
	if (checked[0])
		cJSON_AddStringToObject(l, "checked", checked);
	else
		cJSON_AddNullToObject(l, "checked");
	if (path->error[0])
		cJSON_AddStringToObject(l, "error", path->error);
	else
		cJSON_AddNullToObject(l, "error");
	if (via == WL_VIA_TUNNEL) {
		cJSON_AddBoolToObject(l, "interception", path->interception);
		if (path->peer_issuer[0])
			cJSON_AddStringToObject(l, "issuer", path->peer_issuer);
	}
}

/* The recent failures for host from the running controller's failures report (reports.h),
 * most recent first: what agents actually got, beside what the policy says. */
static void ex_failures(cJSON *root, const struct fps_status *live, const char *host)
{
	cJSON *l = cJSON_GetObjectItemCaseSensitive(root, "live");
	if (live == NULL || !live->reports.enabled || !cJSON_IsObject(l))
		return;
	const struct rep_fail *f[10];
	size_t n = reports_for_host(&live->reports, host, f, sizeof(f) / sizeof(f[0]));
	cJSON *arr = cJSON_AddArrayToObject(l, "failures");
	for (size_t i = 0; arr && i < n; i++) {
		cJSON *x = cJSON_CreateObject();
		if (x == NULL)
			break;
		cJSON_AddNumberToObject(x, "port", f[i]->port);
		cJSON_AddNumberToObject(x, "status", f[i]->status);
		cJSON_AddStringToObject(x, "cause", rep_cause_name(f[i]->cause));
		cJSON_AddStringToObject(x, "route", rep_route_name(f[i]->route));
		cJSON_AddStringToObject(x, "detail", f[i]->detail);
		cJSON_AddNumberToObject(x, "count", (double)f[i]->count);
		char t[32];
		statusjson_rfc3339(f[i]->last_seen, t, sizeof(t));
		cJSON_AddStringToObject(x, "last_seen", t);
		cJSON_AddItemToArray(arr, x);
	}
}

cJSON *explain_json(const struct explain_policy *p, const char *host_in, int port, const struct fps_status *live,
                    bool *allowed, struct fps_err *e)
{
	char host[WL_NAME_MAX + 8], strict[WL_NAME_MAX + 1], note[96];
	bool is_ip = false;
	enum wl_kind kind;
	/* A destination must pass the strict entry syntax too (no '*', no spaces). */
	if (wl_normalize(host_in, strict, &kind, note, sizeof(note)) != WL_NORM_OK || kind == WL_WILD ||
	    wl_host_normalize(host_in, host, sizeof(host), &is_ip) < 0) {
		err_set(e, NULL, 0, 0, "'%s' is not a host name or address", host_in);
		return NULL;
	}
	const struct fps_config *c = &p->cfg;
	bool report = c->whitelist_report;
	cJSON *root = cJSON_CreateObject();
	cJSON_AddStringToObject(root, "host", host);
	cJSON_AddNumberToObject(root, "port", port);
	cJSON_AddStringToObject(root, "mode", report ? "report" : "enforce");
	if (p->generation)
		cJSON_AddNumberToObject(root, "generation", (double)p->generation);
	else
		cJSON_AddNullToObject(root, "generation");
	enum wl_via via = c->default_route;
	bool listed = wl_lookup(&p->cp.policy, host, is_ip, &via);
	ex_whitelist(root, p, host, is_ip, listed);
	bool connect_ok, plain_ok;
	ex_ports(root, c, port, &connect_ok, &plain_ok);
	bool blocked = ex_addresses(root, c, host, is_ip);
	const cJSON *addrs = cJSON_GetObjectItemCaseSensitive(root, "addresses");
	bool unresolved = cJSON_GetArraySize(addrs) == 0;
	enum wl_via leave = listed ? via : c->default_route;

	/* Squid's order: credentials, ports, whitelist, resolved address. */
	char reason[256];
	bool ok = false;
	if (!connect_ok && !plain_ok)
		snprintf(reason, sizeof(reason), "port %d is in neither connect_ports nor safe_ports", port);
	else if (!listed && !report)
		snprintf(reason, sizeof(reason), "%s is not in the whitelist", host);
	else if (blocked)
		snprintf(reason, sizeof(reason), "%s resolves into a blocked network", host);
	else if (unresolved && leave == WL_VIA_DIRECT)
		snprintf(reason, sizeof(reason),
		         "the policy allows it, but %s does not resolve: agents get Squid's DNS error", host);
	else {
		ok = true;
		snprintf(reason, sizeof(reason), "%s%s",
		         listed ? "whitelisted" : "not whitelisted, allowed by report mode",
		         connect_ok && plain_ok ? ""
		         : connect_ok           ? " (CONNECT only)"
		                                : " (plain HTTP only)");
	}
	if (ok && !listed)
		via = c->default_route;
	cJSON_AddStringToObject(root, "verdict", ok ? "allowed" : "denied");
	cJSON_AddStringToObject(root, "reason", reason);
	cJSON_AddBoolToObject(root, "would_deny", report && !listed);
	ex_route(root, p, host, via);
	if (!listed) { /* a report-mode pass takes default_route; a denial no route at all */
		cJSON *r = cJSON_GetObjectItemCaseSensitive(root, "route");
		if (!report)
			cJSON_ReplaceItemInObject(r, "via", cJSON_CreateNull());
		cJSON_ReplaceItemInObject(r, "rule", report ? cJSON_CreateString("default_route") : cJSON_CreateNull());
		cJSON_ReplaceItemInObject(r, "where", cJSON_CreateNull());
	}
	ex_live(root, live, via);
	ex_failures(root, live, host);
	*allowed = ok;
	return root;
}

/* ---- text -------------------------------------------------------------------------------- */

static const char *js(const cJSON *o, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
	return cJSON_IsString(v) ? v->valuestring : NULL;
}

static void ex_print_ports(FILE *out, const char *what, const cJSON *o, const char *listname)
{
	fprintf(out, "%s %s (%s", what,
	        cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "allowed")) ? "allowed" : "denied", listname);
	const cJSON *p;
	int i = 0;
	cJSON_ArrayForEach(p, cJSON_GetObjectItemCaseSensitive(o, listname))
	{
		fprintf(out, "%s%d", i++ ? "," : " ", p->valueint);
	}
	fputc(')', out);
}

void explain_print(const cJSON *r, FILE *out)
{
	const char *host = js(r, "host");
	int port = cJSON_GetObjectItemCaseSensitive(r, "port")->valueint;
	bool v6 = strchr(host, ':') != NULL;
	const char *verdict = js(r, "verdict");
	fprintf(out, "%s%s%s:%d: %s: %s\n", v6 ? "[" : "", host, v6 ? "]" : "", port,
	        strcmp(verdict, "allowed") == 0 ? "ALLOWED" : "DENIED", js(r, "reason"));
	fprintf(out, "  mode:       %s%s\n", js(r, "mode"),
	        cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "would_deny")) ? " (enforce would deny this)" : "");
	const cJSON *w = cJSON_GetObjectItemCaseSensitive(r, "whitelist");
	if (js(w, "entry"))
		fprintf(out, "  whitelist:  %s: \"%s\" (%s)\n", js(w, "where"), js(w, "entry"), js(w, "kind"));
	else {
		fprintf(out, "  whitelist:  no entry matches\n");
		const cJSON *n;
		cJSON_ArrayForEach(n, cJSON_GetObjectItemCaseSensitive(w, "nearest"))
		{
			fprintf(out, "              nearest: %s: \"%s\" (%s)\n", js(n, "where"), js(n, "entry"),
			        js(n, "note"));
		}
	}
	const cJSON *rt = cJSON_GetObjectItemCaseSensitive(r, "route");
	if (js(rt, "via") == NULL)
		fprintf(out, "  route:      none (not whitelisted)\n");
	else if (js(rt, "where"))
		fprintf(out, "  route:      %s, by %s: \"%s\"\n", js(rt, "via"), js(rt, "where"), js(rt, "rule"));
	else
		fprintf(out, "  route:      %s (default_route)\n", js(rt, "via"));
	const cJSON *pc = cJSON_GetObjectItemCaseSensitive(r, "ports");
	fprintf(out, "  ports:      ");
	ex_print_ports(out, "CONNECT", cJSON_GetObjectItemCaseSensitive(pc, "connect"), "connect_ports");
	fprintf(out, "; ");
	ex_print_ports(out, "plain HTTP", cJSON_GetObjectItemCaseSensitive(pc, "plain"), "safe_ports");
	fputc('\n', out);
	const cJSON *a;
	int na = 0;
	cJSON_ArrayForEach(a, cJSON_GetObjectItemCaseSensitive(r, "addresses"))
	{
		const char *b = js(a, "blocked_by");
		fprintf(out, "  %s %s (%s)%s%s\n", na++ ? "           " : "addresses: ", js(a, "address"),
		        js(a, "source"), b ? " BLOCKED by " : "", b ? b : "");
	}
	if (na == 0)
		fprintf(out, "  addresses:  none (%s)\n",
		        js(r, "resolve_error") ? js(r, "resolve_error") : "not resolved");
	fprintf(out, "  resolver:   %s\n", js(r, "resolver"));
	const cJSON *fl = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(r, "live"), "failures");
	if (cJSON_IsArray(fl)) {
		const cJSON *x;
		int nf = 0;
		cJSON_ArrayForEach(x, fl)
		{
			fprintf(out, "  %s%s, %d x %d on port %d via %s, last %s: %s\n",
			        nf++ ? "            " : "failures:   ", js(x, "cause"),
			        cJSON_GetObjectItemCaseSensitive(x, "count")->valueint,
			        cJSON_GetObjectItemCaseSensitive(x, "status")->valueint,
			        cJSON_GetObjectItemCaseSensitive(x, "port")->valueint, js(x, "route"),
			        js(x, "last_seen"), js(x, "detail"));
		}
		if (nf == 0)
			fprintf(out, "  failures:   none recorded for this host\n");
	}
	const cJSON *l = cJSON_GetObjectItemCaseSensitive(r, "live");
	if (!cJSON_IsObject(l)) {
		fprintf(out, "  live state: unknown (ask a running controller with --admin ADDR:PORT)\n");
		return;
	}
	const cJSON *up = cJSON_GetObjectItemCaseSensitive(l, "up");
	if (cJSON_IsBool(up))
		fprintf(out, "  live state: %s to %s is %s%s%s (checked %s)\n", js(l, "path"), js(l, "target"),
		        cJSON_IsTrue(up) ? "up" : "DOWN", js(l, "error") ? ": " : "",
		        js(l, "error") ? js(l, "error") : "", js(l, "checked") ? js(l, "checked") : "never");
	else
		fprintf(out, "  live state: direct; squid %s\n",
		        cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(l, "squid_up")) ? "up" : "DOWN");
}

/* ---- the admin endpoint and the command ------------------------------------------------- */

static pthread_mutex_t explain_mu = PTHREAD_MUTEX_INITIALIZER;
static struct explain_policy explain_cache;
static bool explain_cached;

static char *ex_text(const char *fmt, const char *a, const char *b)
{
	char *s = NULL;
	if (asprintf(&s, fmt, a, b) < 0)
		return NULL;
	return s;
}

int explain_admin(const struct fps_status *s, const char *host, const char *port_s, char **body)
{
	*body = NULL;
	if (host == NULL || host[0] == '\0') {
		*body = ex_text("explain needs ?host=H (and &port=P)%s%s\n", "", "");
		return 400;
	}
	int port = 443;
	if (port_s) {
		char *end = NULL;
		long v = strtol(port_s, &end, 10);
		if (end == port_s || *end || v < 1 || v > 65535) {
			*body = ex_text("port '%s' is not 1..65535%s\n", port_s, "");
			return 400;
		}
		port = (int)v;
	}
	if (s->input_dir[0] == '\0' || s->generation == 0) {
		*body = ex_text("no active generation yet%s%s\n", "", "");
		return 503;
	}
	pthread_mutex_lock(&explain_mu);
	int code = 200;
	if (!explain_cached || explain_cache.generation != s->generation) {
		if (explain_cached)
			explain_free(&explain_cache);
		explain_cached = false;
		struct fps_err e;
		err_clear(&e);
		if (explain_load(&explain_cache, s->input_dir, NULL, &e) < 0) {
			char buf[1600];
			*body = ex_text("cannot load generation's inputs %s: %s\n", s->input_dir,
			                err_str(&e, buf, sizeof(buf)));
			pthread_mutex_unlock(&explain_mu);
			return 500;
		}
		explain_cache.generation = s->generation;
		explain_cached = true;
	}
	bool allowed;
	struct fps_err e;
	err_clear(&e);
	cJSON *r = explain_json(&explain_cache, host, port, s, &allowed, &e);
	pthread_mutex_unlock(&explain_mu);
	if (r == NULL) {
		*body = ex_text("%s%s\n", e.msg, "");
		return 400;
	}
	*body = cJSON_Print(r);
	cJSON_Delete(r);
	return code;
}

/* %XX-escapes a host for a query string (hosts are plain, but a user may type anything). */
static void ex_query_escape(const char *in, char *out, size_t len)
{
	size_t o = 0;
	for (const unsigned char *p = (const unsigned char *)in; *p && o + 4 < len; p++) {
		if (isalnum(*p) || *p == '.' || *p == '-' || *p == '_')
			out[o++] = (char)*p;
		else
			o += (size_t)snprintf(out + o, len - o, "%%%02X", *p);
	}
	out[o] = '\0';
}

int explain_cli(const char *config_dir, const char *secrets_dir, const char *admin, bool json, const char *target,
                FILE *out)
{
	char host[WL_NAME_MAX + 8];
	int port;
	/* A URL (http://host[:port]/path): the policy for host:port, and from a running
	 * controller whether the update cache keeps it. */
	const char *url = target && strncmp(target, "http://", 7) == 0 ? target : NULL;
	if (url ? purge_url_host(url, host, sizeof(host), &port) < 0
	        : (target == NULL || explain_parse_target(target, host, sizeof(host), &port) < 0)) {
		fprintf(stderr, "fps-controller explain: give HOST[:PORT] (IPv6: [ADDR]:PORT) or an http:// URL\n");
		return 2;
	}
	cJSON *r = NULL;
	if (admin) {
		char path[3 * PURGE_URL_MAX + 64], q[3 * PURGE_URL_MAX + 8], err[512];
		ex_query_escape(url ? url : host, q, sizeof(q));
		if (url)
			snprintf(path, sizeof(path), "/explain?url=%s", q);
		else
			snprintf(path, sizeof(path), "/explain?host=%s&port=%d", q, port);
		char *body = NULL;
		int code = adminclient_get(admin, path, 30000, &body, err, sizeof(err));
		if (code < 0) {
			fprintf(stderr, "fps-controller explain: %s\n", err);
			return 3;
		}
		if (code != 200) {
			fprintf(stderr, "fps-controller explain: %s answered %d: %s", admin, code, body);
			free(body);
			return code == 400 ? 2 : 3;
		}
		r = cJSON_Parse(body);
		free(body);
		if (r == NULL) {
			fprintf(stderr, "fps-controller explain: %s/explain is not JSON\n", admin);
			return 3;
		}
	} else {
		if (config_dir == NULL) {
			fprintf(stderr, "fps-controller explain: --config-dir D (or --admin ADDR:PORT) is required\n");
			return 2;
		}
		struct explain_policy p;
		struct fps_err e;
		err_clear(&e);
		char buf[1600];
		if (explain_load(&p, config_dir, secrets_dir, &e) < 0) {
			fprintf(stderr, "%s\n", err_str(&e, buf, sizeof(buf)));
			return 3;
		}
		bool allowed;
		r = explain_json(&p, host, port, NULL, &allowed, &e);
		explain_free(&p);
		if (r == NULL) {
			fprintf(stderr, "fps-controller explain: %s\n", e.msg);
			return 2;
		}
	}
	bool allowed = strcmp(cJSON_GetObjectItemCaseSensitive(r, "verdict")->valuestring, "allowed") == 0;
	if (json) {
		char *t = cJSON_Print(r);
		fprintf(out, "%s\n", t);
		free(t);
	} else {
		explain_print(r, out);
		if (url) {
			const cJSON *c = cJSON_GetObjectItemCaseSensitive(r, "cache");
			const cJSON *d = c ? cJSON_GetObjectItemCaseSensitive(c, "detail") : NULL;
			fprintf(out, "cache: %s\n",
			        cJSON_IsString(d)
			            ? d->valuestring
			            : "unknown without a running controller (explain --admin ADDR:PORT URL)");
		}
	}
	cJSON_Delete(r);
	return allowed ? 0 : 1;
}
