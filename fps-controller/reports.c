/*
 * reports: Squid's access.log and detail.log -> the failures and traffic reports, in
 * memory fixed at init (reports.h explains the data source and the bounds).
 */
#include "reports.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cred.h"
#include "denied.h"

#define REP_POLL_BUDGET (8u << 20) /* bytes read per log per poll; the rest waits for the next */
#define REP_PENDING     256        /* 407 lines waiting for fps-auth's reason */
#define REP_PENDING_S   3.0        /* how long one waits before it is counted without */
#define REP_AUTH_USERS  1024       /* usernames whose last refusal reason is remembered */

static const char *const cause_names[REP_CAUSES] = {
    "dns",          "connect",          "timeout",        "tls",
    "route_down",   "origin",           "auth_missing",   "auth_unknown_user",
    "auth_bad_key", "auth_expired_key", "auth_malformed", "port",
    "network",      "https_absolute",   "other"};
static const char *const route_names[REP_ROUTES] = {"none", "direct", "upstream", "tunnel"};
static const char *const class_names[REP_CLASSES] = {"2xx", "3xx", "4xx", "5xx", "other"};

const char *rep_cause_name(enum rep_cause c)
{
	return (unsigned)c < REP_CAUSES ? cause_names[c] : "other";
}
const char *rep_route_name(enum rep_route r)
{
	return (unsigned)r < REP_ROUTES ? route_names[r] : "none";
}
const char *rep_class_name(enum rep_class c)
{
	return (unsigned)c < REP_CLASSES ? class_names[c] : "other";
}

bool reports_off(void)
{
	const char *v = getenv("FPS_REPORTS");
	return v && strcmp(v, "off") == 0;
}

/* ---- parsing ------------------------------------------------------------------------- */

/* Next space-separated field of [*p, end): copied into out (cut to outlen - 1). -1: none. */
static int field(const char **p, const char *end, char *out, size_t outlen)
{
	const char *s = *p;
	while (s < end && *s == ' ')
		s++;
	if (s >= end)
		return -1;
	const char *e = s;
	while (e < end && *e != ' ')
		e++;
	size_t n = (size_t)(e - s);
	if (n >= outlen)
		n = outlen - 1;
	/* Only printable ASCII reaches the reports (and JSON, HTML): Squid escapes what it logs,
	 * but a log line is not trusted to be Squid's. */
	for (size_t i = 0; i < n; i++)
		out[i] = (s[i] > 0x20 && s[i] < 0x7f) ? s[i] : '?';
	out[n] = '\0';
	*p = e;
	return 0;
}

static int to_ull(const char *s, unsigned long long *out)
{
	if (!isdigit((unsigned char)s[0]))
		return -1;
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || *end)
		return -1;
	*out = v;
	return 0;
}

static int to_double(const char *s, double *out)
{
	if (!isdigit((unsigned char)s[0]))
		return -1;
	char *end;
	double v = strtod(s, &end);
	if (*end || v != v)
		return -1;
	*out = v;
	return 0;
}

/* host and port of the logged URL: "scheme://host[:port]/..." or CONNECT's "host:port".
 * The host is lowercased; only [A-Za-z0-9._-] and an IPv6 literal's [:] are kept. */
static int parse_url(const char *url, const char *method, struct rep_line *l)
{
	unsigned port = 0;
	const char *h = url;
	const char *sep = strstr(url, "://");
	if (sep) {
		size_t slen = (size_t)(sep - url);
		if (slen == 5 && strncasecmp(url, "https", 5) == 0) {
			port = 443;
			l->https_absolute = strcmp(method, "CONNECT") != 0;
		} else if (slen == 4 && strncasecmp(url, "http", 4) == 0) {
			port = 80;
		} else if (slen == 3 && strncasecmp(url, "ftp", 3) == 0) {
			port = 21;
		}
		h = sep + 3;
		const char *at = NULL;
		for (const char *q = h; *q && *q != '/'; q++)
			if (*q == '@')
				at = q;
		if (at)
			h = at + 1;
	}
	size_t n = 0;
	const char *q = h;
	if (*q == '[') {
		while (*q && *q != ']' && n < WL_NAME_MAX)
			l->host[n++] = *q++;
		if (*q != ']')
			return -1;
		l->host[n++] = *q++;
	} else {
		while (*q && *q != ':' && *q != '/' && *q != '?' && n < WL_NAME_MAX) {
			char c = (char)tolower((unsigned char)*q++);
			if (!(isalnum((unsigned char)c) || c == '.' || c == '-' || c == '_'))
				return -1;
			l->host[n++] = c;
		}
	}
	l->host[n] = '\0';
	if (n == 0)
		return -1;
	if (*q == ':') {
		unsigned long long v;
		char num[8];
		size_t k = 0;
		q++;
		while (isdigit((unsigned char)*q) && k < sizeof(num) - 1)
			num[k++] = *q++;
		num[k] = '\0';
		if (to_ull(num, &v) < 0 || v == 0 || v > 65535)
			return -1;
		port = (unsigned)v;
	}
	l->port = port;
	return 0;
}

static void split_code(const char *s, struct rep_line *l, bool with_status)
{
	snprintf(l->code_buf, sizeof(l->code_buf), "%s", s);
	char *slash = strchr(l->code_buf, '/');
	if (with_status && slash) {
		*slash = '\0';
		l->status = atoi(slash + 1);
	}
	l->code = l->code_buf;
}

static void split_hier(const char *s, struct rep_line *l)
{
	snprintf(l->hier, sizeof(l->hier), "%s", s);
	char *slash = strchr(l->hier, '/');
	l->server[0] = '\0';
	if (slash) {
		*slash = '\0';
		if (strcmp(slash + 1, "-") != 0)
			snprintf(l->server, sizeof(l->server), "%s", slash + 1);
	}
}

/* squid: "%ts.%03tu %6tr %>a %Ss/%03>Hs %<st %rm %ru %[un %Sh/%<a %mt" */
int rep_parse_native(const char *line, size_t len, struct rep_line *l)
{
	memset(l, 0, sizeof(*l));
	const char *p = line, *end = line + len;
	char f[REP_LINE_MAX];
	unsigned long long v;
	if (field(&p, end, f, sizeof(f)) < 0 || to_double(f, &l->ts) < 0)
		return -1;
	if (field(&p, end, f, sizeof(f)) < 0 || to_double(f, &l->elapsed_ms) < 0)
		return -1;
	if (field(&p, end, f, sizeof(f)) < 0) /* client */
		return -1;
	if (field(&p, end, f, sizeof(f)) < 0 || strchr(f, '/') == NULL)
		return -1;
	split_code(f, l, true);
	if (field(&p, end, f, sizeof(f)) < 0 || to_ull(f, &v) < 0)
		return -1;
	l->bytes_out = v;
	if (field(&p, end, l->method, sizeof(l->method)) < 0)
		return -1;
	char url[REP_LINE_MAX];
	if (field(&p, end, url, sizeof(url)) < 0)
		return -1;
	if (field(&p, end, l->user, sizeof(l->user)) < 0)
		return -1;
	if (field(&p, end, f, sizeof(f)) < 0)
		return -1;
	split_hier(f, l);
	if (parse_url(url, l->method, l) < 0)
		l->host[0] = '\0'; /* counted, without a destination */
	return 0;
}

/* fps_detail: "%ts.%03tu %tr %>Hs %Ss %Sh %<a %et %>st %<st %rm %[un %err_code %ru %err_detail" */
int rep_parse_detail(const char *line, size_t len, struct rep_line *l)
{
	memset(l, 0, sizeof(*l));
	const char *p = line, *end = line + len;
	char f[REP_LINE_MAX];
	unsigned long long v;
	if (field(&p, end, f, sizeof(f)) < 0 || to_double(f, &l->ts) < 0)
		return -1;
	if (field(&p, end, f, sizeof(f)) < 0 || to_double(f, &l->elapsed_ms) < 0)
		return -1;
	if (field(&p, end, f, sizeof(f)) < 0 || to_ull(f, &v) < 0 || v > 999)
		return -1;
	l->status = (int)v;
	if (field(&p, end, f, sizeof(f)) < 0)
		return -1;
	split_code(f, l, false);
	if (field(&p, end, f, sizeof(f)) < 0)
		return -1;
	split_hier(f, l);
	if (field(&p, end, f, sizeof(f)) < 0)
		return -1;
	if (strcmp(f, "-") != 0)
		snprintf(l->server, sizeof(l->server), "%s", f);
	if (field(&p, end, f, sizeof(f)) < 0)
		return -1;
	snprintf(l->tag, sizeof(l->tag), "%s", strcmp(f, "-") == 0 ? "" : f);
	if (field(&p, end, f, sizeof(f)) < 0 || to_ull(f, &v) < 0)
		return -1;
	l->bytes_in = v;
	if (field(&p, end, f, sizeof(f)) < 0 || to_ull(f, &v) < 0)
		return -1;
	l->bytes_out = v;
	if (field(&p, end, l->method, sizeof(l->method)) < 0)
		return -1;
	if (field(&p, end, l->user, sizeof(l->user)) < 0)
		return -1;
	if (field(&p, end, l->err_code, sizeof(l->err_code)) < 0)
		return -1;
	char url[REP_LINE_MAX];
	if (field(&p, end, url, sizeof(url)) < 0)
		return -1;
	if (parse_url(url, l->method, l) < 0)
		l->host[0] = '\0';
	while (p < end && *p == ' ')
		p++;
	size_t n = (size_t)(end - p);
	if (n >= sizeof(l->err_detail))
		n = sizeof(l->err_detail) - 1;
	/* Only printable ASCII reaches the report (and JSON, HTML). */
	for (size_t i = 0; i < n; i++)
		l->err_detail[i] = (p[i] >= 0x20 && p[i] < 0x7f) ? p[i] : '?';
	l->err_detail[n] = '\0';
	if (strcmp(l->err_detail, "-") == 0)
		l->err_detail[0] = '\0';
	return 0;
}

/* ---- classification ------------------------------------------------------------------ */

static enum rep_route route_of(const struct rep_line *l, const struct rep_context *ctx)
{
	if (strcmp(l->tag, "direct") == 0)
		return REP_ROUTE_DIRECT;
	if (strcmp(l->tag, "tunnel") == 0)
		return REP_ROUTE_TUNNEL;
	if (strcmp(l->tag, "upstream") == 0)
		return REP_ROUTE_UPSTREAM;
	if (strcmp(l->hier, "HIER_DIRECT") == 0 || strcmp(l->hier, "ORIGINAL_DST") == 0)
		return REP_ROUTE_DIRECT;
	if (strstr(l->hier, "PARENT") != NULL) {
		/* The native log names a parent by its address only; with both a tunnel and an
		 * upstream the upstream's address tells them apart (docs/operations.md). */
		if (ctx && ctx->has_tunnel && ctx->has_upstream)
			return ctx->upstream_addr[0] && strcmp(ctx->upstream_addr, l->server) == 0 ? REP_ROUTE_UPSTREAM
			                                                                           : REP_ROUTE_TUNNEL;
		if (ctx && ctx->has_upstream)
			return REP_ROUTE_UPSTREAM;
		return REP_ROUTE_TUNNEL;
	}
	return REP_ROUTE_NONE;
}

static enum rep_cause auth_cause(const char *reason)
{
	if (strcmp(reason, "unknown_user") == 0)
		return REP_AUTH_UNKNOWN_USER;
	if (strcmp(reason, "bad_key") == 0)
		return REP_AUTH_BAD_KEY;
	if (strcmp(reason, "expired_key") == 0)
		return REP_AUTH_EXPIRED_KEY;
	if (strcmp(reason, "malformed") == 0)
		return REP_AUTH_MALFORMED;
	return REP_OTHER;
}

static bool is(const char *a, const char *b)
{
	return strcmp(a, b) == 0;
}

int rep_classify(const struct rep_line *l, const struct rep_context *ctx, const char *auth_reason, char *detail,
                 size_t dlen, enum rep_route *route)
{
	*route = route_of(l, ctx);
	const char *ec = l->err_code;
	bool squid_err = ec[0] && !is(ec, "-");
	char squid[160];
	snprintf(squid, sizeof(squid), "squid %s%s%s%s%s, %.0f ms", squid_err ? ec : "-", l->err_detail[0] ? " " : "",
	         l->err_detail, l->server[0] ? " server " : "", l->server, l->elapsed_ms);
	if (l->status < 400 || is(ec, "ERR_FPS_NOT_WHITELISTED"))
		return -1;
	if (is(ec, "ERR_FPS_PORT_NOT_ALLOWED")) {
		snprintf(detail, dlen, "port %u is not in proxy.%s_ports (%s)", l->port,
		         is(l->method, "CONNECT") ? "connect" : "safe", squid);
		return REP_PORT;
	}
	if (is(ec, "ERR_FPS_BLOCKED_NETWORK")) {
		snprintf(detail, dlen, "the address is never allowed or in proxy.blocked_networks (%s)", squid);
		return REP_NETWORK;
	}
	/* The refusal page of absolute-form https:// (ERR_FPS_HTTPS_NEEDS_CONNECT, docs/security.md),
	 * or any 4xx to such a URL when that page has another name. */
	if (is(ec, "ERR_FPS_HTTPS_NEEDS_CONNECT") || strstr(ec, "HTTPS_ABSOLUTE") != NULL ||
	    (l->https_absolute && l->status < 500 && l->status != 407)) {
		snprintf(detail, dlen, "https:// URL sent without CONNECT: use CONNECT (%s)", squid);
		return REP_HTTPS_ABSOLUTE;
	}
	if (is(ec, "ERR_FPS_SCHEME_NOT_ALLOWED")) {
		snprintf(detail, dlen, "a URL scheme other than http:// without CONNECT (%s)", squid);
		return REP_OTHER;
	}
	if (l->status == 407 || is(ec, "ERR_CACHE_ACCESS_DENIED")) {
		if (is(l->user, "-") || l->user[0] == '\0') {
			snprintf(detail, dlen, "no credentials (the first leg of a challenge)");
			return REP_AUTH_MISSING;
		}
		if (auth_reason && auth_reason[0]) {
			enum rep_cause c = auth_cause(auth_reason);
			const char *text =
			    c == REP_AUTH_UNKNOWN_USER  ? "the product is not in auth.products"
			    : c == REP_AUTH_BAD_KEY     ? "the password matches no valid API key"
			    : c == REP_AUTH_EXPIRED_KEY ? "the password was made with an expired API key "
			                                  "(or every key has expired)"
			    : c == REP_AUTH_MALFORMED   ? "not a username or request of the credential scheme"
			                                : auth_reason;
			snprintf(detail, dlen, "fps-auth: %s", text);
			return c;
		}
		if (cred_check_user(l->user, NULL) != CRED_OK) {
			snprintf(detail, dlen, "not a username of the credential scheme");
			return REP_AUTH_MALFORMED;
		}
		snprintf(detail, dlen, "credentials refused (fps-auth gave no reason in time)");
		return REP_OTHER;
	}
	if (!squid_err) {
		if (l->status >= 500) {
			snprintf(detail, dlen, "the %s answered %d%s%s",
			         *route == REP_ROUTE_UPSTREAM ? "upstream or origin" : "origin", l->status,
			         l->server[0] ? " from " : "", l->server);
			return REP_ORIGIN;
		}
		return -1; /* an origin's own 4xx */
	}
	bool no_server = l->server[0] == '\0' && is(l->hier, "HIER_NONE");
	if (is(ec, "ERR_DNS_FAIL")) {
		snprintf(detail, dlen, "the name did not resolve (%s)", squid);
		return REP_DNS;
	}
	if (is(ec, "ERR_READ_TIMEOUT") || is(ec, "ERR_LIFETIME_EXP") || is(ec, "ERR_CONNECT_TIMEOUT") ||
	    is(ec, "ERR_GATEWAY_FAILURE")) {
		snprintf(detail, dlen, "no answer in time (%s)", squid);
		return *route == REP_ROUTE_TUNNEL && ctx && !ctx->tunnel_up ? REP_ROUTE_DOWN : REP_TIMEOUT;
	}
	if (*route == REP_ROUTE_TUNNEL || *route == REP_ROUTE_UPSTREAM) {
		bool tun = *route == REP_ROUTE_TUNNEL;
		if (tun && ctx && ctx->tunnel_tls_failed) {
			snprintf(detail, dlen, "tunnel TLS: %s (%s)", ctx->tunnel_error, squid);
			return REP_TLS;
		}
		if (tun && ctx && ctx->tunnel_error[0])
			snprintf(detail, dlen, "tunnel down: %s (%s)", ctx->tunnel_error, squid);
		else
			snprintf(detail, dlen, "%s failed (%s)", tun ? "the tunnel" : "the upstream proxy", squid);
		return REP_ROUTE_DOWN;
	}
	/* Direct (or unknown) route. Squid 5.7 answers a name that does not resolve with 502
	 * ERR_READ_ERROR (GET) or 500/503 ERR_CANNOT_FORWARD (CONNECT), having connected to
	 * nothing: no server address and HIER_NONE (docs/squid-facts.md). */
	if (no_server && (is(ec, "ERR_READ_ERROR") || is(ec, "ERR_CANNOT_FORWARD") || is(ec, "ERR_CONNECT_FAIL"))) {
		if (l->elapsed_ms >= 5000)
			snprintf(detail, dlen, "no DNS answer: the name did not resolve within %.1f s (%s)",
			         l->elapsed_ms / 1000.0, squid);
		else
			snprintf(detail, dlen, "the name did not resolve: NXDOMAIN or no address (%s)", squid);
		return REP_DNS;
	}
	if (is(ec, "ERR_CONNECT_FAIL")) {
		snprintf(detail, dlen, "connection refused or unreachable (%s)", squid);
		return REP_CONNECT;
	}
	if (is(ec, "ERR_READ_ERROR") || is(ec, "ERR_WRITE_ERROR") || is(ec, "ERR_ZERO_SIZE_OBJECT")) {
		snprintf(detail, dlen, "the origin closed or reset the connection (%s)", squid);
		return REP_CONNECT;
	}
	snprintf(detail, dlen, "%s", squid);
	return REP_OTHER;
}

/* ---- bounded tables -------------------------------------------------------------------- */

/* Space-Saving over fixed slots: a hash chain per bucket, the smallest weight replaced when
 * full (its weight becomes the newcomer's error), found with denied.c's min-hint cursor. */
struct topk {
	size_t n, cap, nbuckets, cursor;
	int *buckets, *next;
	unsigned *hash;
	unsigned long long *weight;
	unsigned long long min_hint;
	bool min_valid;
	unsigned long long evicted;
};

static int topk_init(struct topk *t, size_t cap)
{
	memset(t, 0, sizeof(*t));
	t->cap = cap;
	t->nbuckets = cap * 2;
	t->buckets = malloc(t->nbuckets * sizeof(int));
	t->next = calloc(cap, sizeof(int));
	t->hash = calloc(cap, sizeof(unsigned));
	t->weight = calloc(cap, sizeof(unsigned long long));
	if (!t->buckets || !t->next || !t->hash || !t->weight)
		return -1;
	for (size_t i = 0; i < t->nbuckets; i++)
		t->buckets[i] = -1;
	return 0;
}

static void topk_free(struct topk *t)
{
	free(t->buckets);
	free(t->next);
	free(t->hash);
	free(t->weight);
	memset(t, 0, sizeof(*t));
}

static unsigned fnv(const char *s, unsigned h)
{
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		h ^= *p;
		h *= 16777619u;
	}
	return h;
}

static void topk_unlink(struct topk *t, int idx)
{
	int *pp = &t->buckets[t->hash[idx] % t->nbuckets];
	while (*pp >= 0 && *pp != idx)
		pp = &t->next[*pp];
	if (*pp == idx)
		*pp = t->next[idx];
}

static int topk_victim(struct topk *t)
{
	if (!t->min_valid) {
		t->min_hint = t->weight[0];
		for (size_t i = 1; i < t->n; i++)
			if (t->weight[i] < t->min_hint)
				t->min_hint = t->weight[i];
		t->min_valid = true;
	}
	for (size_t lap = 0;; lap++) {
		if (lap == t->n) {
			t->min_valid = false;
			return topk_victim(t);
		}
		size_t i = t->cursor;
		t->cursor = (t->cursor + 1) % t->n;
		if (t->weight[i] == t->min_hint)
			return (int)i;
	}
}

/* The slot for a key (eq compares slot i with it), *fresh when new; -1 when cap is 0. */
static int topk_slot(struct topk *t, unsigned h, bool (*eq)(const void *, int, const void *), const void *tab,
                     const void *key, bool *fresh, unsigned long long *inherited)
{
	*fresh = false;
	*inherited = 0;
	if (t->cap == 0)
		return -1;
	for (int i = t->buckets[h % t->nbuckets]; i >= 0; i = t->next[i])
		if (t->hash[i] == h && eq(tab, i, key))
			return i;
	int idx;
	if (t->n < t->cap) {
		idx = (int)t->n++;
	} else {
		idx = topk_victim(t);
		*inherited = t->weight[idx];
		topk_unlink(t, idx);
		t->evicted++;
	}
	t->hash[idx] = h;
	t->next[idx] = t->buckets[h % t->nbuckets];
	t->buckets[h % t->nbuckets] = idx;
	t->weight[idx] = *inherited;
	*fresh = true;
	return idx;
}

/* ---- the state ------------------------------------------------------------------------- */

struct rep_tail {
	char path[4200];
	int fd;
	dev_t dev;
	ino_t ino;
	bool started; /* first open done: an existing file is read from its end */
	char buf[REP_LINE_MAX + 1];
	size_t have;
	bool skipping; /* inside an over-long line */
	int next_fd;   /* the file after ours once the path was rotated, -1 = none */
};

struct rep_pending {
	struct rep_line l;
};

struct rep_auth {
	char user[256];
	char reason[24];
	double when;
};

struct rep_state {
	char auth_dir[4200];
	double since;
	struct rep_tail native, detail;
	unsigned long long failures_total, by_cause[REP_CAUSES];
	struct topk fk;
	struct rep_fail *fail;
	struct topk dk;
	struct rep_dest *dest;
	struct rep_product prod[REP_NPROD]; /* [0] "-", [1..REP_PRODUCTS] named, [REP_NPROD-1] "other" */
	size_t n_named;
	unsigned long long requests_total;
	struct rep_minute min[REP_MINUTES]; /* ring indexed by minute % REP_MINUTES */
	unsigned long long lines_read, lines_malformed, bytes_skipped;
	struct rep_pending *pending;
	size_t n_pending;
	struct rep_auth *auth;
	size_t n_auth;
	double auth_read_at;
	struct rep_context ctx; /* the last one reports_poll got: which parent is which route */
	bool have_ctx;
};

static void tail_init(struct rep_tail *t, const char *dir, const char *name)
{
	memset(t, 0, sizeof(*t));
	snprintf(t->path, sizeof(t->path), "%s/%s", dir, name);
	t->fd = -1;
	t->next_fd = -1;
}

struct rep_state *reports_new(const char *run_dir, const char *auth_dir, double now)
{
	struct rep_state *r = calloc(1, sizeof(*r));
	if (r == NULL)
		return NULL;
	r->since = now;
	tail_init(&r->native, run_dir, "access.log");
	tail_init(&r->detail, run_dir, "detail.log");
	snprintf(r->auth_dir, sizeof(r->auth_dir), "%s", auth_dir ? auth_dir : "");
	snprintf(r->prod[0].name, sizeof(r->prod[0].name), "-");
	snprintf(r->prod[REP_NPROD - 1].name, sizeof(r->prod[0].name), "other");
	r->fail = calloc(REP_FAIL_CAP, sizeof(*r->fail));
	r->dest = calloc(REP_DEST_CAP, sizeof(*r->dest));
	r->pending = calloc(REP_PENDING, sizeof(*r->pending));
	r->auth = calloc(REP_AUTH_USERS, sizeof(*r->auth));
	if (!r->fail || !r->dest || !r->pending || !r->auth || topk_init(&r->fk, REP_FAIL_CAP) < 0 ||
	    topk_init(&r->dk, REP_DEST_CAP) < 0) {
		reports_free(r);
		return NULL;
	}
	return r;
}

void reports_free(struct rep_state *r)
{
	if (r == NULL)
		return;
	struct rep_tail *tails[] = {&r->native, &r->detail};
	for (size_t i = 0; i < 2; i++) {
		if (tails[i]->fd >= 0)
			close(tails[i]->fd);
		if (tails[i]->next_fd >= 0)
			close(tails[i]->next_fd);
	}
	topk_free(&r->fk);
	topk_free(&r->dk);
	free(r->fail);
	free(r->dest);
	free(r->pending);
	free(r->auth);
	free(r);
}

/* The slot of a product name ("" or "-": no username). */
static struct rep_product *product_slot(struct rep_state *r, const char *user)
{
	char name[REP_PRODUCT_MAX + 1];
	denied_product(user, name, sizeof(name));
	if (name[0] == '\0')
		return &r->prod[0];
	for (size_t i = 1; i <= r->n_named; i++)
		if (strcmp(r->prod[i].name, name) == 0)
			return &r->prod[i];
	if (r->n_named < REP_PRODUCTS) {
		struct rep_product *p = &r->prod[++r->n_named];
		snprintf(p->name, sizeof(p->name), "%s", name);
		return p;
	}
	return &r->prod[REP_NPROD - 1];
}

static struct rep_minute *minute_slot(struct rep_state *r, double ts)
{
	long long m = (long long)(ts / 60.0);
	struct rep_minute *s = &r->min[((m % REP_MINUTES) + REP_MINUTES) % REP_MINUTES];
	if (s->minute != m) {
		if (s->minute > m)
			return NULL; /* older than the window */
		memset(s, 0, sizeof(*s));
		s->minute = m;
	}
	return s;
}

static bool is_hit(const char *code)
{
	return strstr(code, "HIT") != NULL || strcmp(code, "TCP_REFRESH_UNMODIFIED") == 0;
}

static bool dest_eq(const void *tab, int i, const void *key)
{
	return strcmp(((const struct rep_dest *)tab)[i].host, (const char *)key) == 0;
}

void reports_feed_native(struct rep_state *r, const char *line, size_t len)
{
	struct rep_line l;
	r->lines_read++;
	if (rep_parse_native(line, len, &l) < 0) {
		r->lines_malformed++;
		return;
	}
	if (strcmp(l.host, "fps-readiness.invalid") == 0 || strcmp(l.host, "fps-health.invalid") == 0)
		return; /* the controller's and the tests' own probes */
	struct rep_product *p = product_slot(r, l.user);
	bool hit = is_hit(l.code);
	bool served = strcmp(l.hier, "HIER_NONE") != 0 && l.hier[0] != '\0';
	enum rep_class cls = l.status >= 200 && l.status < 600 ? (enum rep_class)(l.status / 100 - 2) : REP_CLASS_OTHER;
	enum rep_route route = route_of(&l, r->have_ctx ? &r->ctx : NULL);
	p->requests++;
	r->requests_total++;
	p->bytes_to_agents += l.bytes_out;
	if (hit)
		p->bytes_from_cache += l.bytes_out;
	else if (served)
		p->bytes_from_origin += l.bytes_out;
	p->by_route_class[route][cls]++;
	struct rep_minute *m = minute_slot(r, l.ts);
	if (m) {
		size_t pi = (size_t)(p - r->prod);
		m->requests[pi]++;
		m->bytes[pi] += l.bytes_out;
		if (hit)
			m->from_cache += l.bytes_out;
		else if (served)
			m->from_origin += l.bytes_out;
	}
	if (l.host[0] && (served || hit)) {
		bool fresh;
		unsigned long long inh;
		int i = topk_slot(&r->dk, fnv(l.host, 2166136261u), dest_eq, r->dest, l.host, &fresh, &inh);
		if (i >= 0) {
			struct rep_dest *d = &r->dest[i];
			if (fresh) {
				memset(d, 0, sizeof(*d));
				snprintf(d->host, sizeof(d->host), "%s", l.host);
				d->error = inh;
			}
			r->dk.weight[i] += l.bytes_out + 1; /* +1: requests of empty answers still rank */
			r->dk.min_valid = false;
			d->requests++;
			d->bytes_to_agents += l.bytes_out;
			if (hit)
				d->bytes_from_cache += l.bytes_out;
			d->weight = r->dk.weight[i];
		}
	}
}

struct fail_key {
	const char *host;
	unsigned port;
	int status;
	enum rep_cause cause;
};

static bool fail_eq(const void *tab, int i, const void *key)
{
	const struct rep_fail *f = &((const struct rep_fail *)tab)[i];
	const struct fail_key *k = key;
	return f->port == k->port && f->status == k->status && f->cause == k->cause && strcmp(f->host, k->host) == 0;
}

static void count_failure(struct rep_state *r, const struct rep_line *l, enum rep_cause cause, enum rep_route route,
                          const char *detail)
{
	r->failures_total++;
	r->by_cause[cause]++;
	struct rep_product *p = product_slot(r, l->user);
	p->failures++;
	struct fail_key k = {l->host[0] ? l->host : "-", l->port, l->status, cause};
	char kb[64];
	snprintf(kb, sizeof(kb), ":%u:%d:%d", k.port, k.status, (int)cause);
	unsigned h = fnv(kb, fnv(k.host, 2166136261u));
	bool fresh;
	unsigned long long inh;
	int i = topk_slot(&r->fk, h, fail_eq, r->fail, &k, &fresh, &inh);
	if (i < 0)
		return;
	struct rep_fail *f = &r->fail[i];
	if (fresh) {
		memset(f, 0, sizeof(*f));
		snprintf(f->host, sizeof(f->host), "%s", k.host);
		f->port = k.port;
		f->status = k.status;
		f->cause = cause;
		f->error = inh;
		f->first_seen = l->ts;
	}
	r->fk.weight[i]++;
	r->fk.min_valid = false;
	f->count = r->fk.weight[i];
	f->route = route;
	if (l->ts > f->last_seen) {
		f->last_seen = l->ts;
		snprintf(f->detail, sizeof(f->detail), "%s", detail); /* the latest one */
	}
	char prod[REP_PRODUCT_MAX + 1];
	denied_product(l->user, prod, sizeof(prod));
	if (prod[0]) {
		bool seen = false;
		for (unsigned j = 0; j < f->n_products && !seen; j++)
			seen = strcmp(f->products[j], prod) == 0;
		if (!seen && f->n_products < REP_FAIL_PRODUCTS)
			snprintf(f->products[f->n_products++], sizeof(f->products[0]), "%s", prod);
		else if (!seen)
			f->more_products = true;
	}
}

/* ---- fps-auth's reasons (auth-<pid>.reasons: "R <unix> <reason> <user>" lines) ---------- */

static void auth_reload(struct rep_state *r, double now)
{
	if (r->auth_dir[0] == '\0' || now - r->auth_read_at < 0.05)
		return;
	r->auth_read_at = now;
	DIR *d = opendir(r->auth_dir);
	if (d == NULL)
		return;
	r->n_auth = 0;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		size_t nl = strlen(de->d_name);
		if (nl < 8 || strcmp(de->d_name + nl - 8, ".reasons") != 0)
			continue;
		char path[4500];
		snprintf(path, sizeof(path), "%s/%s", r->auth_dir, de->d_name);
		/* A gone helper's file is kept a while (the lines it explains may still be on
		 * their way), then removed: every reconfigure starts new fps-auth processes. */
		long pid = strncmp(de->d_name, "auth-", 5) == 0 ? strtol(de->d_name + 5, NULL, 10) : 0;
		struct stat st;
		if (pid > 0 && kill((pid_t)pid, 0) < 0 && errno == ESRCH && stat(path, &st) == 0 &&
		    now - (double)st.st_mtime > 60) {
			unlink(path);
			continue;
		}
		FILE *f = fopen(path, "re");
		if (f == NULL)
			continue;
		char line[400];
		while (fgets(line, sizeof(line), f) && r->n_auth < REP_AUTH_USERS) {
			struct rep_auth *a = &r->auth[r->n_auth];
			double when;
			char reason[24], user[256];
			if (sscanf(line, "R %lf %23s %255s", &when, reason, user) == 3) {
				a->when = when;
				snprintf(a->reason, sizeof(a->reason), "%s", reason);
				snprintf(a->user, sizeof(a->user), "%s", user);
				r->n_auth++;
			}
		}
		fclose(f);
	}
	closedir(d);
}

/* fps-auth's latest reason for user, refused no later than ts + slack. */
static const char *auth_lookup(const struct rep_state *r, const char *user)
{
	const char *best = NULL;
	double when = 0;
	for (size_t i = 0; i < r->n_auth; i++)
		if (strcmp(r->auth[i].user, user) == 0 && r->auth[i].when >= when) {
			best = r->auth[i].reason;
			when = r->auth[i].when;
		}
	return best;
}

static void detail_line(struct rep_state *r, const struct rep_line *l, const struct rep_context *ctx,
                        const char *reason)
{
	char detail[REP_DETAIL_MAX];
	enum rep_route route;
	int c = rep_classify(l, ctx, reason, detail, sizeof(detail), &route);
	if (c >= 0)
		count_failure(r, l, (enum rep_cause)c, route, detail);
}

static void count_upload(struct rep_state *r, const struct rep_line *l)
{
	/* Bytes agents sent: the request (with its body) or the CONNECT tunnel's upstream half,
	 * for the requests this log has (docs/operations.md: a body-less request's headers are
	 * not counted). */
	struct rep_product *p = product_slot(r, l->user);
	p->bytes_from_agents += l->bytes_in;
}

void reports_feed_detail(struct rep_state *r, const char *line, size_t len, const struct rep_context *ctx)
{
	struct rep_line l;
	r->lines_read++;
	if (rep_parse_detail(line, len, &l) < 0) {
		r->lines_malformed++;
		return;
	}
	if (strcmp(l.host, "fps-readiness.invalid") == 0 || strcmp(l.host, "fps-health.invalid") == 0)
		return;
	count_upload(r, &l);
	bool needs_reason = (l.status == 407 || strcmp(l.err_code, "ERR_CACHE_ACCESS_DENIED") == 0) &&
	                    strcmp(l.user, "-") != 0 && l.user[0] != '\0';
	if (!needs_reason) {
		detail_line(r, &l, ctx, NULL);
		return;
	}
	const char *reason = auth_lookup(r, l.user);
	if (reason == NULL && r->auth_dir[0]) {
		auth_reload(r, l.ts);
		reason = auth_lookup(r, l.user);
	}
	if (reason == NULL && r->auth_dir[0] && r->n_pending < REP_PENDING) {
		r->pending[r->n_pending++].l = l; /* fps-auth writes its reasons within a fraction of a second */
		return;
	}
	detail_line(r, &l, ctx, reason);
}

static void pending_retry(struct rep_state *r, const struct rep_context *ctx, double now)
{
	if (r->n_pending == 0)
		return;
	r->auth_read_at = 0;
	auth_reload(r, now);
	size_t keep = 0;
	for (size_t i = 0; i < r->n_pending; i++) {
		const struct rep_line *l = &r->pending[i].l;
		const char *reason = auth_lookup(r, l->user);
		if (reason || now - l->ts > REP_PENDING_S)
			detail_line(r, l, ctx, reason);
		else
			r->pending[keep++] = r->pending[i];
	}
	r->n_pending = keep;
}

/* ---- the log readers ------------------------------------------------------------------- */

typedef void (*line_fn)(struct rep_state *, const char *, size_t, const struct rep_context *);

static void native_fn(struct rep_state *r, const char *line, size_t len, const struct rep_context *ctx)
{
	(void)ctx;
	reports_feed_native(r, line, len);
}

static void tail_lines(struct rep_state *r, struct rep_tail *t, const char *data, size_t n, line_fn fn,
                       const struct rep_context *ctx)
{
	for (size_t i = 0; i < n; i++) {
		char c = data[i];
		if (c == '\n') {
			if (!t->skipping)
				fn(r, t->buf, t->have, ctx);
			else
				r->lines_malformed++;
			t->have = 0;
			t->skipping = false;
		} else if (!t->skipping) {
			if (t->have == REP_LINE_MAX) {
				t->skipping = true;
				t->have = 0;
			} else {
				t->buf[t->have++] = c;
			}
		}
	}
}

/* Makes fd the file t reads (from its start, or its end for a file found at the first look). */
static void tail_take(struct rep_tail *t, int fd, bool from_end)
{
	struct stat st;
	if (fstat(fd, &st) < 0) {
		close(fd);
		return;
	}
	if (from_end)
		lseek(fd, 0, SEEK_END);
	t->fd = fd;
	t->dev = st.st_dev;
	t->ino = st.st_ino;
	t->have = 0;
	t->skipping = false;
}

static bool same_file(const struct stat *st, dev_t dev, ino_t ino)
{
	return st->st_dev == dev && st->st_ino == ino;
}

/* Reads what t's file gained (at most REP_POLL_BUDGET bytes a pass). Rotation (the controller
 * renames the file to <name>.1 and has Squid reopen the path): the file that follows ours is
 * opened at once, so it is kept whatever happens to its name, and becomes ours a pass later,
 * after the old one was read to its end once more (Squid writes into it until it has reopened
 * its logs). The follower is the path, or <name>.1 when the path was rotated twice meanwhile.
 * A file already there at the first look is read from its end (lines from before this
 * controller are not counted). */
static void tail_poll(struct rep_state *r, struct rep_tail *t, line_fn fn, const struct rep_context *ctx)
{
	static char chunk[1u << 16];
	size_t budget = REP_POLL_BUDGET;
	if (t->fd < 0) {
		int fd = open(t->path, O_RDONLY | O_CLOEXEC);
		bool first = !t->started;
		t->started = true;
		if (fd < 0)
			return;
		tail_take(t, fd, first);
		if (t->fd < 0)
			return;
	}
	for (;;) {
		for (;;) {
			if (budget == 0)
				return;
			ssize_t n = read(t->fd, chunk, sizeof(chunk) < budget ? sizeof(chunk) : budget);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0)
				break;
			budget -= (size_t)n;
			tail_lines(r, t, chunk, (size_t)n, fn, ctx);
		}
		if (t->next_fd >= 0) { /* the old file is read to its end a pass after the rotation */
			close(t->fd);
			t->fd = -1;
			tail_take(t, t->next_fd, false);
			t->next_fd = -1;
			if (t->fd < 0)
				return;
			continue; /* read the follower now */
		}
		struct stat st, ost;
		if (stat(t->path, &st) < 0 || same_file(&st, t->dev, t->ino))
			return; /* not rotated */
		char old[4300];
		snprintf(old, sizeof(old), "%s.1", t->path);
		bool twice =
		    stat(old, &ost) == 0 && !same_file(&ost, t->dev, t->ino) && !same_file(&ost, st.st_dev, st.st_ino);
		t->next_fd = open(twice ? old : t->path, O_RDONLY | O_CLOEXEC);
		if (t->next_fd < 0)
			r->bytes_skipped += (unsigned long long)(twice ? ost.st_size : st.st_size);
		return;
	}
}

void reports_poll(struct rep_state *r, const struct rep_context *ctx)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	double now = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
	if (ctx) {
		r->ctx = *ctx;
		r->have_ctx = true;
	}
	tail_poll(r, &r->native, native_fn, ctx);
	tail_poll(r, &r->detail, reports_feed_detail, ctx);
	pending_retry(r, ctx, now);
}

/* ---- snapshots ------------------------------------------------------------------------- */

static int fail_cmp(const void *a, const void *b)
{
	const struct rep_fail *x = a, *y = b;
	if (x->count != y->count)
		return x->count < y->count ? 1 : -1;
	if (x->last_seen != y->last_seen)
		return x->last_seen < y->last_seen ? 1 : -1;
	return strcmp(x->host, y->host);
}

static int dest_cmp(const void *a, const void *b)
{
	const struct rep_dest *x = a, *y = b;
	if (x->weight != y->weight)
		return x->weight < y->weight ? 1 : -1;
	return strcmp(x->host, y->host);
}

void reports_snapshot(const struct rep_state *r, double now, struct rep_snapshot *out)
{
	memset(out, 0, sizeof(*out));
	out->enabled = true;
	out->since = r->since;
	out->failures_total = r->failures_total;
	memcpy(out->failures_by_cause, r->by_cause, sizeof(r->by_cause));
	out->failures_truncated = r->fk.evicted > 0;
	out->destinations_truncated = r->dk.evicted > 0;
	out->requests_total = r->requests_total;
	out->lines_read = r->lines_read;
	out->lines_malformed = r->lines_malformed;
	out->bytes_skipped = r->bytes_skipped;
	/* Top failures: sort a copy of the table (at most REP_FAIL_CAP entries, once a second). */
	struct rep_fail *tmp = malloc(r->fk.n * sizeof(*tmp) + 1);
	if (tmp) {
		memcpy(tmp, r->fail, r->fk.n * sizeof(*tmp));
		qsort(tmp, r->fk.n, sizeof(*tmp), fail_cmp);
		out->n_fail = r->fk.n < REP_FAIL_TOP ? r->fk.n : REP_FAIL_TOP;
		memcpy(out->fail, tmp, out->n_fail * sizeof(*tmp));
		free(tmp);
	}
	struct rep_dest *dt = malloc(r->dk.n * sizeof(*dt) + 1);
	if (dt) {
		memcpy(dt, r->dest, r->dk.n * sizeof(*dt));
		qsort(dt, r->dk.n, sizeof(*dt), dest_cmp);
		out->n_dest = r->dk.n < REP_DEST_TOP ? r->dk.n : REP_DEST_TOP;
		memcpy(out->dest, dt, out->n_dest * sizeof(*dt));
		free(dt);
	}
	/* Products with any traffic: "-", the named ones, "other". */
	for (size_t i = 0; i < REP_NPROD; i++) {
		const struct rep_product *p = &r->prod[i];
		if (p->requests || p->failures || p->bytes_from_agents) {
			out->products[out->n_products] = *p;
			out->products[out->n_products++].slot = i;
		}
	}
	long long cur = (long long)(now / 60.0);
	out->now_minute = cur;
	for (int k = 0; k < REP_MINUTES; k++) {
		long long m = cur - (REP_MINUTES - 1) + k;
		const struct rep_minute *s = &r->min[((m % REP_MINUTES) + REP_MINUTES) % REP_MINUTES];
		struct rep_minute *o = &out->minutes[k];
		if (s->minute == m)
			*o = *s;
		else
			memset(o, 0, sizeof(*o));
		o->minute = m;
	}
}

size_t reports_for_host(const struct rep_snapshot *s, const char *host, const struct rep_fail **out, size_t max)
{
	size_t n = 0;
	for (size_t i = 0; i < s->n_fail && n < max; i++)
		if (strcasecmp(s->fail[i].host, host) == 0)
			out[n++] = &s->fail[i];
	/* most recent first */
	for (size_t i = 1; i < n; i++)
		for (size_t j = i; j > 0 && out[j]->last_seen > out[j - 1]->last_seen; j--) {
			const struct rep_fail *t = out[j];
			out[j] = out[j - 1];
			out[j - 1] = t;
		}
	return n;
}
