/*
 * reports: the failures and traffic reports (/failures, /traffic, fps_requests_total,
 * fps_bytes_total, fps_failures_total; docs/operations.md "Failures and traffic").
 *
 * Data source: the two logs Squid writes into the run directory, read by the controller
 * after the fact (Squid is never blocked: a lagging reader only reads later, see
 * reports_poll): access.log in Squid's native format (every request: product, route from
 * the peer column, status, bytes to the agent, cache hits) and detail.log (squid.conf's
 * fps_detail logformat, only for failed answers, CONNECT tunnels and requests with a body:
 * Squid's error code and detail, the route tag, the bytes the agent sent).
 *
 * Memory is fixed at init whatever the traffic: failures and destinations are Space-Saving
 * tables (denied.h explains the bound), products beyond REP_PRODUCTS fold into "other".
 */
#ifndef FPS_REPORTS_H
#define FPS_REPORTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/types.h>

#include "whitelist.h"

#define REP_PRODUCTS      16                 /* named products tracked; more fold into "other" */
#define REP_PRODUCT_MAX   32                 /* bytes of a product name */
#define REP_NPROD         (REP_PRODUCTS + 2) /* + "-" (no username) and "other" */
#define REP_FAIL_CAP      1024               /* failure groups tracked */
#define REP_FAIL_TOP      100                /* groups /failures shows */
#define REP_DEST_CAP      1024               /* destinations tracked */
#define REP_DEST_TOP      50                 /* destinations /traffic shows */
#define REP_MINUTES       60                 /* the charts' window */
#define REP_FAIL_PRODUCTS 4                  /* products remembered per failure group */
#define REP_DETAIL_MAX    200
#define REP_LINE_MAX      8192 /* longer log lines are skipped and counted */

enum rep_cause {
	REP_DNS,
	REP_CONNECT,
	REP_TIMEOUT,
	REP_TLS,
	REP_ROUTE_DOWN,
	REP_ORIGIN,
	REP_AUTH_MISSING,
	REP_AUTH_UNKNOWN_USER,
	REP_AUTH_BAD_KEY,
	REP_AUTH_EXPIRED_KEY,
	REP_AUTH_MALFORMED,
	REP_PORT,
	REP_NETWORK,
	REP_HTTPS_ABSOLUTE,
	REP_OTHER,
	REP_CAUSES
};

enum rep_route { REP_ROUTE_NONE, REP_ROUTE_DIRECT, REP_ROUTE_UPSTREAM, REP_ROUTE_TUNNEL, REP_ROUTES };
enum rep_class { REP_2XX, REP_3XX, REP_4XX, REP_5XX, REP_CLASS_OTHER, REP_CLASSES };

const char *rep_cause_name(enum rep_cause c);
const char *rep_route_name(enum rep_route r);
const char *rep_class_name(enum rep_class c);

/* What the controller knows that the log line does not: which parent address is the tunnel
 * (stunnel's local port) and the tunnel prober's verdict, to tell `tls` from `route_down`. */
struct rep_context {
	bool has_tunnel, has_upstream;
	char upstream_addr[64]; /* the upstream's address as Squid logs it (%<a), "" = unknown */
	bool tunnel_up;
	bool tunnel_tls_failed; /* the prober's handshake failed or the certificate was rejected */
	char tunnel_error[200];
};

/* One parsed log line (either log). Strings point into the caller's line buffer. */
struct rep_line {
	double ts;
	double elapsed_ms; /* -1 unknown */
	int status;
	const char *code; /* TCP_MISS, TCP_DENIED, ... (NUL-terminated copy in code_buf) */
	char code_buf[40];
	char hier[40];                          /* HIER_DIRECT, FIRSTUP_PARENT, HIER_NONE ... */
	char server[64];                        /* the peer/origin address, "" = none */
	unsigned long long bytes_in, bytes_out; /* from agents (detail only), to agents */
	char method[24];
	char user[256]; /* as logged ("-" = none) */
	char err_code[64];
	char err_detail[REP_DETAIL_MAX];
	char tag[16]; /* the route tag (detail only; "" unknown) */
	char host[WL_NAME_MAX + 1];
	unsigned port;
	bool https_absolute; /* "https://" URL on a non-CONNECT request */
};

/* Parsers, pure (fuzzed: tests/fuzz/fuzz_replog.c). 0 ok, -1 not a line of that format. */
int rep_parse_native(const char *line, size_t len, struct rep_line *out);
int rep_parse_detail(const char *line, size_t len, struct rep_line *out);

/* The failure cause of a detail line, or -1 when it is no failure for this report (a 2xx,
 * an origin's 4xx, a whitelist denial: the denied report has those). detail gets what a
 * support engineer reads. auth_reason: fps-auth's reason for this user ("" unknown). */
int rep_classify(const struct rep_line *l, const struct rep_context *ctx, const char *auth_reason, char *detail,
                 size_t dlen, enum rep_route *route);

struct rep_fail {
	char host[WL_NAME_MAX + 1];
	unsigned port;
	int status;
	enum rep_cause cause;
	enum rep_route route;
	char detail[REP_DETAIL_MAX];
	char products[REP_FAIL_PRODUCTS][REP_PRODUCT_MAX + 1];
	unsigned n_products;
	bool more_products;
	unsigned long long count, error;
	double first_seen, last_seen;
};

struct rep_dest {
	char host[WL_NAME_MAX + 1];
	unsigned long long weight, error; /* bytes to agents + requests: the Space-Saving weight */
	unsigned long long requests, bytes_to_agents, bytes_from_cache;
};

struct rep_product {
	char name[REP_PRODUCT_MAX + 1];
	size_t slot; /* index into rep_minute's per-product arrays */
	unsigned long long requests, failures;
	unsigned long long bytes_to_agents, bytes_from_agents, bytes_from_origin, bytes_from_cache;
	unsigned long long by_route_class[REP_ROUTES][REP_CLASSES];
};

struct rep_minute {
	long long minute; /* unix time / 60; 0 = empty */
	unsigned long long requests[REP_NPROD], bytes[REP_NPROD];
	unsigned long long from_cache, from_origin;
};

/* A copy of the reports for the admin thread (status.h embeds it). */
struct rep_snapshot {
	bool enabled;
	double since;
	unsigned long long failures_total, failures_by_cause[REP_CAUSES];
	bool failures_truncated;
	size_t n_fail;
	struct rep_fail fail[REP_FAIL_TOP];
	size_t n_products;
	struct rep_product products[REP_NPROD];
	unsigned long long requests_total;
	bool destinations_truncated;
	size_t n_dest;
	struct rep_dest dest[REP_DEST_TOP];
	struct rep_minute minutes[REP_MINUTES]; /* oldest first, ending with the current minute */
	long long now_minute;
	unsigned long long lines_read, lines_malformed, bytes_skipped;
};

struct rep_state; /* opaque: the tables and the log readers */

/* Off when FPS_REPORTS=off (the bench's A/B: squid.conf then has no detail log). */
bool reports_off(void);

/* run_dir: Squid's run directory (access.log, detail.log); auth_dir: fps-auth's reason files
 * (NULL = none). NULL on no memory. */
struct rep_state *reports_new(const char *run_dir, const char *auth_dir, double now);
void reports_free(struct rep_state *r);
/* Reads what the logs gained since the last call (at most a bounded amount, the rest next
 * time) and counts it. */
void reports_poll(struct rep_state *r, const struct rep_context *ctx);
/* Feeds lines directly (unit tests, fuzzing): native or detail format. */
void reports_feed_native(struct rep_state *r, const char *line, size_t len);
void reports_feed_detail(struct rep_state *r, const char *line, size_t len, const struct rep_context *ctx);
void reports_snapshot(const struct rep_state *r, double now, struct rep_snapshot *out);

/* The recent failures for one host, most recent first (explain HOST). */
size_t reports_for_host(const struct rep_snapshot *s, const char *host, const struct rep_fail **out, size_t max);

/* JSON documents (reportsjson.c): GET /failures, GET /traffic. malloc'd, NULL: no memory. */
char *reports_json_failures(const struct rep_snapshot *s);
char *reports_json_traffic(const struct rep_snapshot *s);

/* The status page's traffic and failures sections, charts included (reportspage.c). */
void reportspage_render(FILE *f, const struct rep_snapshot *s);

#endif
