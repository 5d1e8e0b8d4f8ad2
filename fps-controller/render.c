/*
 * render: builds each generation's files. squid.conf's fixed structure lives in
 * the template; this file computes the blocks that depend on configuration.
 * Paths and names reaching squid.conf were validated by config/whitelist.
 */
#include "render.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fsio.h"
#include "genword.h"
#include "snapshot.h"

/* A growing string for blocks. */
struct buf {
	char *p;
	size_t len, cap;
	int failed;
};

static void bprintf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void bprintf(struct buf *b, const char *fmt, ...)
{
	if (b->failed)
		return;
	for (;;) {
		va_list ap;
		va_start(ap, fmt);
		size_t room = b->cap - b->len;
		int n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? room : 0, fmt, ap);
		va_end(ap);
		if (n < 0) {
			b->failed = 1;
			return;
		}
		if (b->p && (size_t)n < room) {
			b->len += (size_t)n;
			return;
		}
		size_t ncap = b->cap ? b->cap * 2 : 1024;
		while (ncap < b->len + (size_t)n + 1)
			ncap *= 2;
		char *np = realloc(b->p, ncap);
		if (np == NULL) {
			b->failed = 1;
			return;
		}
		b->p = np;
		b->cap = ncap;
	}
}

static const char *bstr(struct buf *b)
{
	if (b->p == NULL)
		bprintf(b, "%s", "");
	return b->p ? b->p : "";
}

int render_template(const char *tmpl, const char *tmpl_path, const struct render_var *vars, size_t nvars, char **out,
                    struct fps_err *e)
{
	struct buf b = {0};
	int line = 1;
	for (const char *p = tmpl; *p;) {
		if (p[0] == '{' && p[1] == '{') {
			const char *end = strstr(p + 2, "}}");
			if (end == NULL) {
				free(b.p);
				return err_set(e, tmpl_path, line, 0, "unterminated {{");
			}
			size_t nl = (size_t)(end - p - 2);
			const char *val = NULL;
			for (size_t i = 0; i < nvars; i++)
				if (strlen(vars[i].name) == nl && memcmp(vars[i].name, p + 2, nl) == 0)
					val = vars[i].value;
			if (val == NULL) {
				free(b.p);
				return err_set(e, tmpl_path, line, 0, "unknown template variable {{%.*s}}", (int)nl,
				               p + 2);
			}
			bprintf(&b, "%s", val);
			p = end + 2;
			continue;
		}
		if (*p == '\n')
			line++;
		const char *next = strstr(p + 1, "{{");
		size_t chunk = next ? (size_t)(next - p) : strlen(p);
		for (size_t i = 1; i < chunk; i++)
			if (p[i] == '\n')
				line++;
		bprintf(&b, "%.*s", (int)chunk, p);
		p += chunk;
	}
	if (b.failed) {
		free(b.p);
		return err_set(e, tmpl_path, 0, 0, "out of memory");
	}
	*out = b.p ? b.p : strdup("");
	return 0;
}

/* Listening sockets on the agents' port (per worker): the kernel spreads new connections
 * over them and Squid accepts one per socket per event-loop pass. 1000 agents connecting
 * within 50 ms waited up to 5 s with one socket, 1.8 s with 4, 1.4 s with 16 (bench). */
#define RENDER_LISTEN_SOCKETS 8

/* Helper children per helper (fps-auth, fps-acl) and requests in flight per child. */
#define RENDER_HELPER_CHILDREN    4
#define RENDER_HELPER_CONCURRENCY 256

/* Under SMP the coordinator (process number workers + 1: no diskers, no disk store)
 * parses the same squid.conf and started a full set of helpers that never answer a
 * request: 8 processes, each fps-acl holding the whole whitelist snapshot. A helper line
 * is therefore rendered twice, for `startup` 0 (the coordinator: Squid starts helpers
 * later only for requests, which it never has) and for every other process. */
static void per_process(struct buf *b, int nworkers, struct buf *coordinator, struct buf *others)
{
	if (coordinator->failed || others->failed)
		b->failed = 1;
	else if (nworkers > 1)
		bprintf(b, "if ${process_number} = %d\n%s\nelse\n%s\nendif", nworkers + 1, bstr(coordinator),
		        bstr(others));
	else
		bprintf(b, "%s", bstr(others));
	free(coordinator->p);
	free(others->p);
}

/* Squid reads a fetch in progress no further ahead of its slowest in-memory reader than
 * read_ahead_gap (src/MemObject.cc readAheadPolicyCanRead): with Squid's 16 KB, one agent on
 * a slow link paced the whole storm. The gap is what one slow transfer may buffer. */
#define RENDER_READ_AHEAD_MAX_MB 32

/*
 * The update cache (docs/operations.md "The update cache" says why each line):
 * - collapsed_forwarding: concurrent misses for one URL make one origin fetch.
 * - The disk store is aufs under <state-dir>/cache/1, not rock: with Squid 5.7 a rock store
 *   cannot be read while it is being written (src/fs/rock/RockSwapDir.cc openStoreIO), so
 *   every agent that joined a fetch after its first 4 KB became a disk reader that failed
 *   (TCP_SWAPFAIL_MISS) and fetched again: 2 origin copies per storm with one worker, 94 of
 *   100 with two. aufs readers read the file being written: 1.00 copy. A disk store needs
 *   one worker (config.c cfg_check_cache says why); several workers share the memory cache
 *   (memory_cache_shared, Squid's SMP default) and collapse onto each other's fetches
 *   through it. No store adds disker processes, so the coordinator stays workers + 1.
 * - range_offset_limit max_object_mb: a Range miss starting within the limit fetches the
 *   whole object once and keeps it; later resumes are partial hits.
 * - quick_abort_min -1 KB: a fetch goes on when its last agent gives up, so it is kept.
 */
void render_cache_block(const struct fps_config *c, const char *cache_dir, char *out, size_t len)
{
	if (!c->has_cache) {
		snprintf(out, len, "cache deny all");
		return;
	}
	int max_obj = cfg_cache_max_object(c);
	int in_mem = max_obj < c->cache_memory_mb ? max_obj : c->cache_memory_mb;
	int gap = max_obj < RENDER_READ_AHEAD_MAX_MB ? max_obj : RENDER_READ_AHEAD_MAX_MB;
	char disk[PATH_MAX + 128];
	if (c->cache_disk_mb > 0)
		snprintf(disk, sizeof(disk), "cache_dir aufs %s/1 %d 16 256", cache_dir, c->cache_disk_mb);
	else
		snprintf(disk, sizeof(disk), "# cache.disk_mb: 0 -- memory only, nothing survives a restart");
	snprintf(out, len,
	         "cache_mem %d MB\n"
	         "maximum_object_size_in_memory %d MB\n"
	         "maximum_object_size %d MB\n"
	         "%s\n"
	         "collapsed_forwarding on\n"
	         "range_offset_limit %d MB\n"
	         "quick_abort_min -1 KB\n"
	         "read_ahead_gap %d MB\n"
	         "# An answer that sets a cookie is never kept: a cookie is one agent's. Squid 5.7 strips\n"
	         "# Set-Cookie from hits but not from requests that joined another agent's fetch\n"
	         "# (client_side_reply.cc buildReplyHeader), and store_miss acts only once the answer's\n"
	         "# headers are in, after such requests have joined: so GET and HEAD answers (the only\n"
	         "# ones that collapse) reach agents without Set-Cookie. POST and the rest keep it.\n"
	         "acl fps_sets_cookie rep_header Set-Cookie .\n"
	         "store_miss deny fps_sets_cookie\n"
	         "acl fps_shared_method method GET HEAD\n"
	         "reply_header_access Set-Cookie deny fps_shared_method",
	         c->cache_memory_mb, in_mem, max_obj, disk, max_obj, gap);
}

static long render_max_fds(const struct render_ctx *rc)
{
	return rc->max_fds > 0 ? rc->max_fds : 65536;
}

/* A helper queue that can never be full: Squid checks at most one request per client
 * connection at a time (no pipeline prefetch), so it never has more lookups waiting
 * than descriptors. A queued lookup costs a few hundred bytes only while it waits. */
static long render_queue_size(const struct render_ctx *rc)
{
	return render_max_fds(rc);
}

/* Destinations that are never legitimate, whatever blocked_networks says (docs/security.md):
 * "this host" (0.0.0.0/8, ::) connects to the local host, loopback and link-local reach the
 * appliance itself and the cloud's metadata service. Squid keeps every IPv4 address as an
 * IPv4-mapped IPv6 one, so 127.0.0.0/8 also matches an AAAA record of ::ffff:127.0.0.1 (a
 * test covers each spelling); written out, the mapped ranges would make Squid's dst ACL
 * misparse their masks. */
static const char *const never_always[] = {"0.0.0.0/8", "::/128", "169.254.0.0/16", "fe80::/10"};
/* Loopback: refused too unless proxy.allow_loopback_destinations re-allows it (tests, demos). */
static const char *const never_loopback[] = {"127.0.0.0/8", "::1/128"};

size_t render_never_networks(const struct fps_config *c, const char **out, size_t max)
{
	size_t n = 0;
	for (size_t i = 0; i < sizeof(never_always) / sizeof(never_always[0]) && n < max; i++)
		out[n++] = never_always[i];
	for (size_t i = 0; !c->allow_loopback && i < sizeof(never_loopback) / sizeof(never_loopback[0]) && n < max; i++)
		out[n++] = never_loopback[i];
	return n;
}

static void render_never(const struct fps_config *c, struct buf *b)
{
	for (size_t i = 0; i < sizeof(never_always) / sizeof(never_always[0]); i++)
		bprintf(b, "%s%s", i ? " " : "", never_always[i]);
	for (size_t i = 0; !c->allow_loopback && i < sizeof(never_loopback) / sizeof(never_loopback[0]); i++)
		bprintf(b, " %s", never_loopback[i]);
}

static void join_ports(struct buf *b, const int *ports, size_t n)
{
	for (size_t i = 0; i < n; i++)
		bprintf(b, "%s%d", i ? " " : "", ports[i]);
}

static void render_auth(const struct fps_config *c, const struct render_ctx *rc, struct buf *auth, struct buf *access,
                        struct buf *allow)
{
	if (!c->auth_enabled) {
		bprintf(auth, "# auth.enabled: false -- agents are not asked for credentials.");
		bprintf(access, "# (no credential check: auth.enabled is false)");
		bprintf(allow, "http_access allow fps_tagged");
		return;
	}
	/* Sized for ~1000 agents: fps-auth answers about a million verdicts a second, so
	 * one child with concurrency keeps up and the others are headroom. All children
	 * start with Squid: a child forked by a busy Squid (hundreds of MB, thousands of
	 * descriptors) stalls its event loop while 1000 agents reconnect. The queue holds
	 * one lookup per descriptor Squid may open, so it cannot fill (a request is checked
	 * once at a time per connection); on-persistent-overload=ERR instead of the default
	 * "die" should a helper stop answering altogether. */
	bprintf(auth, "auth_param basic program %s/fps-auth --concurrency on --extra-fields 1 --keys %s/apikeys.json",
	        rc->bin_dir, rc->secrets_dir);
	if (c->products.n > 0) {
		bprintf(auth, " --products ");
		for (size_t i = 0; i < c->products.n; i++)
			bprintf(auth, "%s%s", i ? "," : "", c->products.v[i]);
	}
	if (!rc->no_reports) /* refusal reasons for the failures report (authreasons.h) */
		bprintf(auth, " --reasons-dir %s/denied", rc->run_dir);
	bprintf(auth, "\n");
	struct buf line[2] = {{0}};
	for (int i = 0; i < 2; i++)
		bprintf(&line[i],
		        "auth_param basic children %d startup=%d idle=1 concurrency=%d queue-size=%ld "
		        "on-persistent-overload=ERR",
		        RENDER_HELPER_CHILDREN, i ? RENDER_HELPER_CHILDREN : 0, RENDER_HELPER_CONCURRENCY,
		        render_queue_size(rc));
	per_process(auth, cfg_workers(c), &line[0], &line[1]);
	bprintf(auth,
	        "\nauth_param basic realm %s\n"
	        "auth_param basic credentialsttl %d seconds\n"
	        "auth_param basic casesensitive on\n"
	        /* Squid keeps one credential record per cache key, by default the user name: a
	         * wrong password sent under an agent's name then overwrote the agent's own record
	         * and its correct password got the wrong one's verdict. With the whole credentials
	         * in the key, each (user, password) pair has its own record (fps-auth ignores this
	         * extra field). Records of wrong passwords are dropped after a minute. */
	        "auth_param basic key_extras \"%%#{Proxy-Authorization}>h\"\n"
	        "authenticate_ttl 60 seconds\n"
	        "authenticate_cache_garbage_interval 60 seconds\n"
	        "acl fps_users proxy_auth REQUIRED",
	        c->realm, c->credentials_ttl);
	bprintf(access, "http_access deny !fps_users");
	bprintf(allow, "http_access allow fps_tagged fps_users");
}

/* Squid's dstdomain syntax for a normalized entry: ".example.com" covers the apex too. */
static void dstdomain_name(struct buf *b, const struct wl_pattern *p)
{
	bprintf(b, "%s%s", p->kind == WL_WILD ? "." : "", p->name);
}

/* Route patterns, most specific first: longer name first, exact before wildcard of
 * the same name, then the order listed. */
struct route_ref {
	const struct wl_pattern *p;
	size_t order;
};

static int route_ref_cmp(const void *a, const void *b)
{
	const struct route_ref *x = a, *y = b;
	size_t lx = strlen(x->p->name), ly = strlen(y->p->name);
	if (lx != ly)
		return lx > ly ? -1 : 1;
	if (x->p->kind != y->p->kind)
		return x->p->kind == WL_WILD ? 1 : -1;
	return x->order < y->order ? -1 : (x->order > y->order);
}

static void render_peer(struct buf *b, const char *name, const char *host, int port, const char *login)
{
	bprintf(b, "cache_peer %s parent %d 0 no-query no-digest no-netdb-exchange name=%s%s%s\n", host, port, name,
	        login ? " login=" : "", login ? login : "");
	/* First rule for every peer: the controller's cache-manager port never reaches one. */
	bprintf(b, "cache_peer_access %s deny fps_mgr_port\n", name);
}

static int render_routes(const struct fps_config *c, const struct compiled *cp, struct buf *b)
{
	const struct wl_policy *pol = &cp->policy;
	if (!c->has_upstream && !c->has_tunnel) {
		bprintf(b, "# No upstream or tunnel configured: every allowed request goes direct.\n");
		return 0;
	}
	if (c->has_upstream) {
		/* The password is %-escaped by the caller's config check (safe_token) for the
		 * user; the password itself comes from the Secret and is escaped here. */
		struct buf login = {0};
		if (c->upstream_user[0]) {
			bprintf(&login, "%s:", c->upstream_user);
			for (const unsigned char *p =
			         (const unsigned char *)(c->upstream_password ? c->upstream_password : "");
			     *p; p++) {
				if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
				    strchr("-._~", *p))
					bprintf(&login, "%c", *p);
				else
					bprintf(&login, "%%%02X", *p);
			}
		}
		render_peer(b, "upstream", c->upstream_host, c->upstream_port, login.p);
		if (login.p) {
			explicit_bzero(login.p, login.cap);
			free(login.p);
		}
	}
	if (c->has_tunnel)
		render_peer(b, "tunnel", "127.0.0.1", c->tunnel_local_port, NULL);

	if (c->apply == CFG_APPLY_LIVE) {
		/* fps-acl tagged the request with its route during http_access. */
		for (int v = WL_VIA_UPSTREAM; v <= WL_VIA_TUNNEL; v++) {
			bool have = v == WL_VIA_UPSTREAM ? c->has_upstream : c->has_tunnel;
			if (!have)
				continue;
			const char *n = wl_via_name((enum wl_via)v);
			bprintf(b,
			        "cache_peer_access %s allow fps_via_%s\ncache_peer_access %s deny all\n"
			        "never_direct allow fps_via_%s\n",
			        n, n, n, n);
		}
		return b->failed ? -1 : 0;
	}

	/* reconfigure mode: one dstdomain ACL per route pattern, rules ordered from the
	 * most specific pattern down, so the first matching rule is the most specific. */
	size_t n = pol->n_routes;
	struct route_ref *refs = calloc(n ? n : 1, sizeof(*refs));
	if (refs == NULL)
		return -1;
	for (size_t i = 0; i < n; i++)
		refs[i] = (struct route_ref){.p = &pol->routes[i], .order = i};
	qsort(refs, n, sizeof(*refs), route_ref_cmp);
	for (size_t i = 0; i < n; i++) {
		bprintf(b, "acl fps_route_%zu dstdomain -n ", i);
		dstdomain_name(b, refs[i].p);
		bprintf(b, "\n");
	}
	for (int v = WL_VIA_UPSTREAM; v <= WL_VIA_TUNNEL; v++) {
		bool have = v == WL_VIA_UPSTREAM ? c->has_upstream : c->has_tunnel;
		if (!have)
			continue;
		const char *name = wl_via_name((enum wl_via)v);
		for (size_t i = 0; i < n; i++)
			bprintf(b, "cache_peer_access %s %s fps_route_%zu\n", name,
			        refs[i].p->via == (enum wl_via)v ? "allow" : "deny", i);
		bprintf(b, "cache_peer_access %s %s all\n", name,
		        c->default_route == (enum wl_via)v ? "allow" : "deny");
	}
	for (size_t i = 0; i < n; i++)
		bprintf(b, "never_direct %s fps_route_%zu\n", refs[i].p->via == WL_VIA_DIRECT ? "deny" : "allow", i);
	if (c->default_route != WL_VIA_DIRECT)
		bprintf(b, "never_direct allow all\n");
	free(refs);
	return b->failed ? -1 : 0;
}

static int add_file(struct render_out *out, const char *name, char *data, size_t len)
{
	if (out->n_files >= RENDER_MAX_FILES || data == NULL)
		return -1;
	struct render_file *f = &out->files[out->n_files++];
	snprintf(f->name, sizeof(f->name), "%s", name);
	f->data = data;
	f->len = len;
	return 0;
}

const struct render_file *render_find(const struct render_out *out, const char *name)
{
	for (size_t i = 0; i < out->n_files; i++)
		if (strcmp(out->files[i].name, name) == 0)
			return &out->files[i];
	return NULL;
}

void render_free(struct render_out *out)
{
	for (size_t i = 0; i < out->n_files; i++)
		free(out->files[i].data);
	memset(out, 0, sizeof(*out));
}

/* The reports' second access log (docs/operations.md, "Failures and traffic"; the reader is
 * reports.c): one line only for the requests the native line cannot describe, so that the
 * common case (a body-less request answered below 400) costs Squid one fast ACL check and no
 * formatting. Failed answers carry Squid's error code and detail (errno, the DNS rcode);
 * CONNECT tunnels and requests with a body carry the bytes the agent sent (%>st), which the
 * native format does not have. Field order is fixed: reports.c parses it, the error detail
 * last because it may contain spaces. The `has` guards come first: Squid logs transactions
 * without a request (a connection closed before its headers) and without a response (an agent
 * that gave up), and an ACL that needs the missing part writes a WARNING to cache.log for
 * each of them (src/acl/Acl.cc, ACL::matches). */
static void render_reports_log(const struct render_ctx *rc, struct buf *b)
{
	if (rc->no_reports) {
		bprintf(b, "# reports off (FPS_REPORTS=off): no detail log");
		return;
	}
	bprintf(
	    b,
	    "# The failures and traffic reports' second log (docs/operations.md): only failed answers, CONNECT\n"
	    "# tunnels and requests with a body, with what the native line lacks; the controller reads both.\n"
	    "logformat fps_detail %%ts.%%03tu %%tr %%>Hs %%Ss %%Sh %%<a %%et %%>st %%<st %%rm %%[un %%err_code %%ru "
	    "%%err_detail\n"
	    "acl fps_has_request has request\n"
	    "acl fps_has_response has response\n"
	    "acl fps_http_status_failed http_status 400-599\n"
	    "acl fps_http_failed all-of fps_has_response fps_http_status_failed\n"
	    "acl fps_connect method CONNECT\n"
	    "acl fps_has_length req_header Content-Length ^[1-9]\n"
	    "acl fps_chunked req_header Transfer-Encoding .\n"
	    "acl fps_detailed any-of fps_http_failed fps_connect fps_has_length fps_chunked\n"
	    "access_log stdio:%s/detail.log logformat=fps_detail on-error=drop fps_has_request fps_detailed "
	    "!fps_health_probe",
	    rc->run_dir);
}

int render_generation(const struct fps_config *c, const struct compiled *cp, const struct render_ctx *rc,
                      struct render_out *out, struct fps_err *e)
{
	memset(out, 0, sizeof(*out));
	char tmpl_path[4096];
	snprintf(tmpl_path, sizeof(tmpl_path), "%s/squid.conf.tmpl", rc->templates_dir);
	char *tmpl = NULL;
	if (fsio_read(tmpl_path, 1u << 20, &tmpl, NULL, e) < 0)
		return -1;

	struct buf http_port = {0}, mgr_port = {0}, maxfd = {0}, workers = {0}, dns = {0}, cports = {0}, sports = {0},
	           blocked = {0}, never = {0};
	struct buf auth = {0}, auth_access = {0}, allow = {0}, wl = {0}, routes = {0}, list = {0};
	struct buf reports = {0};
	render_reports_log(rc, &reports);
	bool v6 = strchr(c->bind, ':') != NULL;
	for (int i = 0; i < RENDER_LISTEN_SOCKETS; i++)
		bprintf(&http_port, v6 ? "%shttp_port [%s]:%d worker-queues" : "%shttp_port %s:%d worker-queues",
		        i ? "\n" : "", c->bind, c->port);
	bprintf(&mgr_port, "%d", rc->mgr_port);
	bprintf(&maxfd, "%ld", render_max_fds(rc));
	int nworkers = cfg_workers(c);
	if (nworkers > 1)
		bprintf(&workers, "workers %d", nworkers);
	else
		bprintf(&workers, "# one worker (proxy.workers: 1)");
	if (c->dns_nameservers.n > 0) {
		bprintf(&dns, "dns_nameservers");
		for (size_t i = 0; i < c->dns_nameservers.n; i++)
			bprintf(&dns, " %s", c->dns_nameservers.v[i]);
	} else {
		bprintf(&dns, "# dns_nameservers: the system's resolvers");
	}
	/* proxy.dns_timeout, proxy.read_timeout: how long an agent waits before Squid names the
	 * failure (a resolver that never answers; an origin that accepts and never answers). */
	bprintf(&dns, "\ndns_timeout %d seconds\nread_timeout %d seconds", c->dns_timeout, c->read_timeout);
	join_ports(&cports, c->connect_ports, c->n_connect_ports);
	join_ports(&sports, c->safe_ports, c->n_safe_ports);
	if (c->blocked_networks.n == 0)
		bprintf(&blocked, "0.0.0.0/32"); /* an empty dst ACL is an error; this one never matches a real peer */
	for (size_t i = 0; i < c->blocked_networks.n; i++)
		bprintf(&blocked, "%s%s", i ? " " : "", c->blocked_networks.v[i]);
	render_never(c, &never);
	render_auth(c, rc, &auth, &auth_access, &allow);

	if (c->apply == CFG_APPLY_LIVE) {
		/* cache=0: every request asks fps-acl (microseconds), so an edit is enforced
		 * as soon as the snapshot is swapped, not when a cached verdict expires.
		 * When this helper's queue is full, Squid 5.7 (external_acl.cc, "queue full.
		 * Request rejected") makes the ACL DUNNO, which ends http_access with a deny:
		 * a 403 for a whitelisted host. So the queue holds one lookup per descriptor
		 * (render_queue_size) and all children start with Squid, as for fps-auth.
		 * %PORT %un feed the denied report (docs/operations.md): %un is the
		 * authenticated user, URL-escaped, "-" without auth; unlike %LOGIN it never
		 * makes Squid ask for credentials itself. */
		char report[PATH_MAX + 32] = "";
		if (!rc->no_denied_report)
			snprintf(report, sizeof(report), " --denied-dir %s/denied", rc->run_dir);
		/* --generation-file: every fps-acl of every worker switches to a new snapshot
		 * together, when the controller publishes its generation (genword.h). */
		struct buf line[2] = {{0}};
		for (int i = 0; i < 2; i++)
			bprintf(&line[i],
			        "external_acl_type fps_acl cache=0 ttl=0 negative_ttl=0 children-max=%d "
			        "children-startup=%d "
			        "children-idle=1 concurrency=%d queue-size=%ld %%DST%s %s/fps-acl --snapshot "
			        "%s/acl.snapshot --generation-file %s/" GENWORD_NAME "%s",
			        RENDER_HELPER_CHILDREN, i ? RENDER_HELPER_CHILDREN : 0, RENDER_HELPER_CONCURRENCY,
			        render_queue_size(rc), rc->no_denied_report ? "" : " %PORT %un", rc->bin_dir,
			        rc->gen_dir, rc->run_dir, report);
		per_process(&wl, cfg_workers(c), &line[0], &line[1]);
		bprintf(&wl, "\nacl fps_whitelist external fps_acl\n");
		bprintf(&wl, "acl fps_tagged tag direct upstream tunnel\n");
		for (int v = 0; v < WL_VIA_COUNT; v++)
			bprintf(&wl, "acl fps_via_%s tag %s\n", wl_via_name((enum wl_via)v),
			        wl_via_name((enum wl_via)v));
	} else {
		/* -n: never reverse-resolve an IP-literal destination to match a name. */
		if (cp->policy.n_entries > 0)
			bprintf(&wl, "acl fps_whitelist dstdomain -n \"%s/whitelist.dstdomain\"\n", rc->gen_dir);
		else
			bprintf(&wl, "acl fps_whitelist dstdomain -n .invalid\n"); /* RFC 2606: never resolves */
		/* A whitelisted request needs no tag in this mode; fps_tagged is "allowed". */
		bprintf(&wl, "acl fps_tagged any-of fps_whitelist\n");
		for (size_t i = 0; i < cp->policy.n_entries; i++) {
			dstdomain_name(&list, &cp->policy.entries[i]);
			bprintf(&list, "\n");
		}
	}
	if (render_routes(c, cp, &routes) < 0)
		routes.failed = 1;

	char gen[32];
	snprintf(gen, sizeof(gen), "%llu", rc->generation);
	char cache_block[2 * PATH_MAX + 1024];
	render_cache_block(c, rc->cache_dir ? rc->cache_dir : "/nonexistent", cache_block, sizeof(cache_block));
	const struct render_var vars[] = {
	    {"VERSION", FPS_VERSION},
	    {"HTTP_PORTS", bstr(&http_port)},
	    {"MGR_PORT", bstr(&mgr_port)},
	    {"WORKERS", bstr(&workers)},
	    {"MAX_FDS", bstr(&maxfd)},
	    {"RUN_DIR", rc->run_dir},
	    {"GEN_DIR", rc->gen_dir},
	    {"HOSTS_FILE", c->hosts_file},
	    {"DNS", bstr(&dns)},
	    {"AUTH", bstr(&auth)},
	    {"AUTH_ACCESS", bstr(&auth_access)},
	    {"CONNECT_PORTS", bstr(&cports)},
	    {"SAFE_PORTS", bstr(&sports)},
	    {"BLOCKED_NETWORKS", bstr(&blocked)},
	    {"NEVER_NETWORKS", bstr(&never)},
	    {"WHITELIST", bstr(&wl)},
	    {"ALLOW", bstr(&allow)},
	    {"ROUTES", bstr(&routes)},
	    {"REPORTS_LOG", bstr(&reports)},
	    {"CACHE", cache_block},
	    {"CACHE_ACCESS", c->has_cache
	                         ? "# PURGE (fps-controller purge) on the controller's port only, never from agents.\n"
	                           "acl fps_purge method PURGE\n"
	                           "http_access allow fps_mgr_port fps_purge localhost\n"
	                           "http_access deny fps_purge\n"
	                           "# explain URL's cache lookup: HEAD with only-if-cached, answered from the cache\n"
	                           "# or with 504, never forwarded.\n"
	                           "acl fps_head method HEAD\n"
	                           "acl fps_only_if_cached req_header Cache-Control only-if-cached\n"
	                           "http_access allow fps_mgr_port fps_head fps_only_if_cached localhost"
	                         : "# (no cache: no PURGE)"},
	};
	int rc_ = 0;
	if (rc->mgr_port <= 0 || rc->mgr_port > 65535 || rc->mgr_port == c->port)
		rc_ = err_set(e, NULL, 0, 0, "no usable cache-manager port (%d)", rc->mgr_port);
	struct buf *all[] = {&http_port, &mgr_port, &maxfd,       &workers, &dns, &cports, &sports, &blocked,
	                     &never,     &auth,     &auth_access, &allow,   &wl,  &routes, &list,   &reports};
	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]) && rc_ == 0; i++)
		if (all[i]->failed)
			rc_ = err_set(e, NULL, 0, 0, "out of memory rendering squid.conf");
	char *conf = NULL;
	if (rc_ == 0 && render_template(tmpl, tmpl_path, vars, sizeof(vars) / sizeof(vars[0]), &conf, e) < 0)
		rc_ = -1;
	if (rc_ == 0)
		rc_ = add_file(out, "squid.conf", conf, strlen(conf));

	char *snap = NULL;
	size_t snaplen = 0;
	if (rc_ == 0 && snapshot_render(&cp->policy, rc->generation, &snap, &snaplen) < 0)
		rc_ = err_set(e, NULL, 0, 0, "out of memory rendering the snapshot");
	if (rc_ == 0)
		rc_ = add_file(out, "acl.snapshot", snap, snaplen);
	if (rc_ == 0 && c->apply == CFG_APPLY_RECONFIGURE && cp->policy.n_entries > 0) {
		rc_ = add_file(out, "whitelist.dstdomain", list.p, list.len);
		list.p = NULL;
	}
	const char *pages[] = {"ERR_FPS_NOT_WHITELISTED", "ERR_FPS_BLOCKED_NETWORK", "ERR_FPS_PORT_NOT_ALLOWED",
	                       "ERR_FPS_HTTPS_NEEDS_CONNECT", "ERR_FPS_SCHEME_NOT_ALLOWED"};
	for (size_t i = 0; i < sizeof(pages) / sizeof(pages[0]) && rc_ == 0; i++) {
		char path[4096], name[64];
		char *page = NULL;
		size_t plen = 0;
		snprintf(path, sizeof(path), "%s/errors/%s", rc->templates_dir, pages[i]);
		snprintf(name, sizeof(name), "errors/%s", pages[i]);
		if (fsio_read(path, 1u << 20, &page, &plen, e) < 0 || add_file(out, name, page, plen) < 0)
			rc_ = -1;
	}

	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
		free(all[i]->p);
	free(tmpl);
	if (rc_ != 0) {
		if (e->msg[0] == '\0')
			err_set(e, NULL, 0, 0, "rendering failed");
		render_free(out);
		return -1;
	}
	return 0;
}
