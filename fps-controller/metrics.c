/*
 * metrics: the Prometheus exposition for /metrics. metrics_render() is a pure function of a
 * status snapshot and the text of Squid's cache-manager pages; the fetching and the 2-second
 * cache around it live below it, so a burst of scrapes costs Squid one request per page.
 */
#include "metrics.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "cachestats.h"
#include "fsio.h"
#include "net.h"
#include "purge.h"

#ifndef FPS_VERSION
#define FPS_VERSION "0.0.0"
#endif

/* ---- rendering ------------------------------------------------------------------------ */

static void m_family(FILE *f, const char *name, const char *type, const char *help)
{
	fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void m_double(FILE *f, double v)
{
	if (isnan(v))
		fputs("NaN", f);
	else if (isinf(v))
		fputs(v > 0 ? "+Inf" : "-Inf", f);
	else if (v == floor(v) && fabs(v) < 1e15)
		fprintf(f, "%.0f", v);
	else
		fprintf(f, "%.6f", v);
}

/* One sample without labels. */
static void m_gauge(FILE *f, const char *name, const char *help, double v)
{
	m_family(f, name, "gauge", help);
	fputs(name, f);
	fputc(' ', f);
	m_double(f, v);
	fputc('\n', f);
}

static void m_counter(FILE *f, const char *name, const char *help, double v)
{
	m_family(f, name, "counter", help);
	fputs(name, f);
	fputc(' ', f);
	m_double(f, v);
	fputc('\n', f);
}

/* A label value as the exposition format wants it: backslash, quote and newline escaped;
 * the value is read no further than max bytes (the snapshot's fields are fixed arrays). */
static void m_label_value(FILE *f, const char *v, size_t max)
{
	for (size_t i = 0; i < max && v[i]; i++) {
		unsigned char c = (unsigned char)v[i];
		if (c == '\\')
			fputs("\\\\", f);
		else if (c == '"')
			fputs("\\\"", f);
		else if (c == '\n')
			fputs("\\n", f);
		else if (c < 0x20 || c == 0x7f)
			fputc('?', f);
		else
			fputc(c, f);
	}
}

static void m_labeled(FILE *f, const char *name, const char *label, const char *value, size_t max, double v)
{
	fprintf(f, "%s{%s=\"", name, label);
	m_label_value(f, value, max);
	fputs("\"} ", f);
	m_double(f, v);
	fputc('\n', f);
}

/*
 * Finds the line of a cache-manager page whose text (after leading blanks) starts with key
 * followed by a separator (' ', '\t', ':' or '='), and reads up to two numbers after it.
 * Returns how many numbers were read.
 */
static int m_find(const char *text, const char *key, double *a, double *b)
{
	size_t klen = strlen(key);
	for (const char *line = text; line && *line; line = strchr(line, '\n'), line = line ? line + 1 : NULL) {
		const char *p = line;
		while (*p == ' ' || *p == '\t')
			p++;
		if (strncmp(p, key, klen) != 0)
			continue;
		p += klen;
		if (*p != ' ' && *p != '\t' && *p != ':' && *p != '=')
			continue;
		while (*p == ' ' || *p == '\t' || *p == ':' || *p == '=')
			p++;
		char *end;
		errno = 0;
		double v = strtod(p, &end);
		if (end == p || errno != 0 || !isfinite(v))
			return 0;
		*a = v;
		p = end;
		while (*p == ' ' || *p == '\t')
			p++;
		if (b == NULL)
			return 1;
		double w = strtod(p, &end);
		if (end == p || !isfinite(w))
			return 1;
		*b = w;
		return 2;
	}
	return 0;
}

struct m_squid_counter {
	const char *key; /* in squid-internal-mgr/counters */
	const char *name;
	const char *help;
	double scale;
};

static const struct m_squid_counter m_counters[] = {
    {"client_http.requests", "fps_squid_client_http_requests_total", "HTTP requests received from clients.", 1},
    {"client_http.hits", "fps_squid_client_http_hits_total", "Client HTTP requests answered from the cache.", 1},
    {"client_http.errors", "fps_squid_client_http_errors_total",
     "Client HTTP requests answered with an error (403, 407, 5xx and the like).", 1},
    {"client_http.kbytes_in", "fps_squid_client_http_received_bytes_total",
     "Bytes received from clients (Squid counts in KiB: resolution 1024).", 1024},
    {"client_http.kbytes_out", "fps_squid_client_http_sent_bytes_total",
     "Bytes sent to clients (Squid counts in KiB: resolution 1024).", 1024},
    {"server.all.requests", "fps_squid_server_all_requests_total",
     "Requests Squid sent to origin servers and peers (all protocols).", 1},
    {"server.all.errors", "fps_squid_server_all_errors_total", "Server-side requests that failed.", 1},
    {"server.all.kbytes_in", "fps_squid_server_all_received_bytes_total",
     "Bytes received from origin servers and peers (resolution 1024).", 1024},
    {"server.all.kbytes_out", "fps_squid_server_all_sent_bytes_total",
     "Bytes sent to origin servers and peers (resolution 1024).", 1024},
    {"aborted_requests", "fps_squid_aborted_requests_total", "Requests aborted before completion.", 1},
    {"cpu_time", "fps_squid_cpu_seconds_total", "CPU time used by Squid.", 1},
};

static void m_render_squid(FILE *f, const char *counters, const char *info)
{
	double a, b;
	for (size_t i = 0; i < sizeof(m_counters) / sizeof(m_counters[0]); i++)
		if (m_find(counters, m_counters[i].key, &a, NULL) == 1)
			m_counter(f, m_counters[i].name, m_counters[i].help, a * m_counters[i].scale);
	if (m_find(info, "Number of clients accessing cache", &a, NULL) == 1)
		m_gauge(f, "fps_squid_clients", "Distinct client addresses Squid has seen recently (its client db).",
		        a);
	if (m_find(info, "Number of file desc currently in use", &a, NULL) == 1)
		m_gauge(f, "fps_squid_file_descriptors_in_use",
		        "File descriptors Squid has open: client and server connections, logs, helpers.", a);
	if (m_find(info, "Maximum number of file descriptors", &a, NULL) == 1)
		m_gauge(f, "fps_squid_file_descriptors_max", "Squid's file descriptor limit.", a);
	if (m_find(info, "HTTP Requests (All)", &a, &b) == 2) {
		m_family(f, "fps_squid_median_service_seconds", "gauge",
		         "Median service time of all HTTP requests over the last 5 and 60 minutes.");
		fprintf(f, "fps_squid_median_service_seconds{window=\"5m\"} ");
		m_double(f, a);
		fprintf(f, "\nfps_squid_median_service_seconds{window=\"60m\"} ");
		m_double(f, b);
		fputc('\n', f);
	}
	if (m_find(info, "UP Time", &a, NULL) == 1)
		m_gauge(f, "fps_squid_uptime_seconds", "Seconds since Squid started (as Squid reports it).", a);
	if (m_find(info, "Maximum Resident Size", &a, NULL) == 1)
		m_gauge(f, "fps_squid_max_resident_bytes", "Squid's peak resident memory.", a * 1024);
}

static void m_path(FILE *f, const char *what, const struct status_path *p)
{
	char name[64], help[160];
	snprintf(name, sizeof(name), "fps_%s_configured", what);
	snprintf(help, sizeof(help), "1 when the %s is configured.", what);
	m_gauge(f, name, help, p->configured);
	snprintf(name, sizeof(name), "fps_%s_up", what);
	snprintf(help, sizeof(help), "1 when the last check of the %s passed; 0 when it failed or none is configured.",
	         what);
	m_gauge(f, name, help, p->configured && p->up);
	if (p->checked_unix > 0) {
		snprintf(name, sizeof(name), "fps_%s_last_check_timestamp_seconds", what);
		snprintf(help, sizeof(help), "When the %s was last checked (unix time).", what);
		m_gauge(f, name, help, p->checked_unix);
	}
}

/* The reports (reports.h): labels from fixed sets, products bounded by REP_PRODUCTS plus
 * "-" and "other", so the series count stays bounded whatever the traffic. */
static void m_reports(FILE *f, const struct rep_snapshot *r)
{
	if (!r->enabled)
		return;
	/* Families with no sample are left out (docs/operations.md): no requests yet, no products. */
	unsigned long long any = 0;
	for (size_t i = 0; i < r->n_products; i++)
		any += r->products[i].requests;
	if (any)
		m_family(
		    f, "fps_requests_total", "counter",
		    "Agents' requests by product (the username's part before its first '-'; '-' without a username, "
		    "'other' past the tracked products), route and answer class, as Squid logged them.");
	for (size_t i = 0; i < r->n_products; i++)
		for (int rt = 0; rt < REP_ROUTES; rt++)
			for (int c = 0; c < REP_CLASSES; c++) {
				unsigned long long v = r->products[i].by_route_class[rt][c];
				if (v == 0)
					continue;
				fputs("fps_requests_total{product=\"", f);
				m_label_value(f, r->products[i].name, sizeof(r->products[i].name));
				fprintf(f, "\",route=\"%s\",class=\"%s\"} ", rep_route_name((enum rep_route)rt),
				        rep_class_name((enum rep_class)c));
				m_double(f, (double)v);
				fputc('\n', f);
			}
	if (r->n_products)
		m_family(f, "fps_bytes_total", "counter",
		         "Bytes by product and direction: to_agents, from_agents (uploads, CONNECT tunnels), "
		         "from_origin, from_cache.");
	static const char *const dirs[] = {"to_agents", "from_agents", "from_origin", "from_cache"};
	for (size_t i = 0; i < r->n_products; i++) {
		const struct rep_product *p = &r->products[i];
		const unsigned long long v[4] = {p->bytes_to_agents, p->bytes_from_agents, p->bytes_from_origin,
		                                 p->bytes_from_cache};
		for (int d = 0; d < 4; d++) {
			fputs("fps_bytes_total{product=\"", f);
			m_label_value(f, p->name, sizeof(p->name));
			fprintf(f, "\",direction=\"%s\"} ", dirs[d]);
			m_double(f, (double)v[d]);
			fputc('\n', f);
		}
	}
	m_family(f, "fps_failures_total", "counter", "Failed requests by cause (see /failures).");
	for (int c = 0; c < REP_CAUSES; c++) {
		fprintf(f, "fps_failures_total{cause=\"%s\"} ", rep_cause_name((enum rep_cause)c));
		m_double(f, (double)r->failures_by_cause[c]);
		fputc('\n', f);
	}
	m_counter(f, "fps_report_log_lines_total", "Squid log lines the reports have read.", (double)r->lines_read);
	m_counter(f, "fps_report_log_malformed_lines_total", "Squid log lines the reports could not parse.",
	          (double)r->lines_malformed);
	m_counter(f, "fps_report_log_skipped_bytes_total",
	          "Bytes of a rotated Squid log the reports could not open (docs/operations.md).",
	          (double)r->bytes_skipped);
}

/* The update cache (docs/operations.md "The update cache"): whether one is configured, the
 * purges asked for, and Squid's cache figures (cachestats.h) when its manager answered. */
static void m_render_cache(FILE *f, const struct fps_status *s, const char *counters_text, const char *info_text)
{
	m_gauge(f, "fps_cache_enabled", "1 when fps.yaml configures the update cache.", s->cache.enabled);
	unsigned long purges[PURGE_RESULTS];
	purge_counts(purges);
	m_family(f, "fps_cache_purges_total", "counter",
	         "Objects asked to be purged (fps-controller purge), by result.");
	for (int r = 0; r < PURGE_RESULTS; r++)
		fprintf(f, "fps_cache_purges_total{result=\"%s\"} %lu\n", purge_result_name((enum purge_result)r),
		        purges[r]);
	struct status_cache c = s->cache;
	if (!c.enabled || cachestats_parse(counters_text, info_text, &c) < 0)
		return;
	m_family(f, "fps_cache_requests_total", "counter",
	         "Agent requests by cache result: hit (from the cache), miss (an origin fetch), collapsed "
	         "(joined another agent's fetch).");
	fprintf(f, "fps_cache_requests_total{result=\"hit\"} %llu\n", c.hit);
	fprintf(f, "fps_cache_requests_total{result=\"miss\"} %llu\n", c.miss);
	fprintf(f, "fps_cache_requests_total{result=\"collapsed\"} %llu\n", c.collapsed);
	m_family(f, "fps_cache_bytes_total", "counter",
	         "Plain-HTTP body bytes: sent to agents from the cache, and received from origins and peers.");
	fprintf(f, "fps_cache_bytes_total{source=\"cache\"} %llu\n", c.bytes_from_cache);
	fprintf(f, "fps_cache_bytes_total{source=\"origin\"} %llu\n", c.bytes_from_origin);
	m_gauge(f, "fps_cache_used_bytes", "Bytes the cache holds, memory and disk stores together.",
	        (double)c.used_bytes);
	m_gauge(f, "fps_cache_objects", "Objects Squid's store knows.", (double)c.objects);
}

char *metrics_render(const struct fps_status *s, const char *counters_text, const char *info_text, double now_unix)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	if (f == NULL)
		return NULL;

	m_family(f, "fps_build_info", "gauge", "Build of the FPS controller, as a label; always 1.");
	m_labeled(f, "fps_build_info", "version", s->version[0] ? s->version : FPS_VERSION, sizeof(s->version), 1);
	if (s->start_unix > 0)
		m_gauge(f, "fps_start_time_seconds", "When the controller started (unix time).", s->start_unix);

	/* generation and reloads */
	m_gauge(f, "fps_config_generation", "Generation number of the active configuration.", (double)s->generation);
	m_family(f, "fps_config_reloads_total", "counter", "Configuration reload attempts, by result.");
	fprintf(f, "fps_config_reloads_total{result=\"success\"} %lu\n", s->reloads_ok);
	fprintf(f, "fps_config_reloads_total{result=\"failure\"} %lu\n", s->reloads_failed);
	m_gauge(f, "fps_config_last_reload_success", "1 when the last reload attempt succeeded, else 0.",
	        s->last_reload_ok);
	m_gauge(f, "fps_config_last_reload_timestamp_seconds",
	        "When the last reload was attempted (unix time, 0 = never).", s->last_reload_unix);
	m_gauge(f, "fps_config_last_success_timestamp_seconds", "When a reload last succeeded (unix time, 0 = never).",
	        s->last_success_unix);
	m_gauge(f, "fps_config_squid_runs_active", "1 when Squid runs the active generation and accepts connections.",
	        s->squid_runs_active);

	/* whitelist */
	m_gauge(f, "fps_whitelist_entries", "Whitelist entries in force (after folding).", (double)s->entries);
	m_family(f, "fps_whitelist_entries_by_route", "gauge", "Whitelist entries in force, by the route they take.");
	for (int v = 0; v < WL_VIA_COUNT; v++)
		m_labeled(f, "fps_whitelist_entries_by_route", "route", wl_via_name((enum wl_via)v), 16,
		          (double)s->by_route[v]);
	m_gauge(f, "fps_whitelist_folded_entries", "Entries dropped as duplicates or covered by a wildcard.",
	        (double)s->folded);
	m_gauge(f, "fps_whitelist_rejected_entries", "Whitelist entries rejected as invalid (see /status for why).",
	        (double)s->n_rejected);
	m_gauge(f, "fps_whitelist_report_mode",
	        "1 when whitelist.mode is report (unlisted destinations allowed and counted), 0 when enforce.",
	        s->report_mode);
	if (s->clock.have)
		m_gauge(
		    f, "fps_clock_skew_seconds",
		    "System clock minus the reference's Date (tunnel, else upstream); keys and certificates are judged "
		    "by this clock.",
		    s->clock.skew_seconds);
	/* denied report: totals only, never a host label (cardinality stays bounded) */
	m_counter(f, "fps_whitelist_denied_requests_total",
	          "Requests denied as not whitelisted (in report mode: would have been), since the controller started.",
	          (double)s->denied.total);
	m_gauge(f, "fps_whitelist_denied_hosts", "Distinct denied destinations (host:port) tracked (see /denied).",
	        (double)s->denied.distinct);
	m_reports(f, &s->reports);
	if (s->have_version) {
		m_gauge(f, "fps_whitelist_version", "The version number of the customer's whitelist.json in force.",
		        (double)s->whitelist_version);
		char v[32];
		snprintf(v, sizeof(v), "%lld", s->whitelist_version);
		m_family(f, "fps_whitelist_info", "gauge", "The customer's whitelist version in force, as a label; 1.");
		m_labeled(f, "fps_whitelist_info", "version", v, sizeof(v), 1);
	}

	/* the state volume */
	if (s->have_state_volume) {
		m_gauge(f, "fps_state_volume_free_bytes", "Bytes free on the state volume (--state-dir).",
		        (double)s->state_free_bytes);
		m_gauge(f, "fps_state_volume_full",
		        "1 when the state volume is full: Squid drops log lines, new generations cannot be written.",
		        s->state_full);
	}

	/* children */
	m_gauge(f, "fps_squid_up", "1 when Squid is running.", s->squid.up);
	m_counter(f, "fps_squid_restarts_total", "Times Squid was restarted after it died.", s->squid.restarts);
	m_gauge(f, "fps_squid_answering", "1 when Squid answered the controller's last HTTP probe (every 0.5 s).",
	        s->squid.answering);
	m_counter(f, "fps_squid_hung_kills_total", "Times Squid was killed (and restarted) for answering no HTTP.",
	          s->squid.hung_kills);
	m_gauge(f, "fps_stunnel_up", "1 when the stunnel client is running.", s->stunnel.up);
	m_counter(f, "fps_stunnel_restarts_total", "Times the stunnel client was restarted after it died.",
	          s->stunnel.restarts);

	/* paths */
	m_path(f, "tunnel", &s->tunnel);
	m_gauge(f, "fps_tunnel_interception_suspected",
	        "1 when the tunnel server's certificate came from an unexpected issuer (TLS interception).",
	        s->tunnel.interception);
	m_path(f, "upstream", &s->upstream);

	/* credentials */
	m_gauge(f, "fps_auth_enabled", "1 when agents must authenticate.", s->auth_enabled);
	m_gauge(f, "fps_auth_keys", "API keys in apikeys.json, expired ones included.", (double)s->keys_total);
	m_gauge(f, "fps_auth_keys_valid", "API keys that have not expired.", (double)s->keys_valid);
	/* Absent when there is no valid key to count down (fps_auth_keys_valid is then 0). */
	if (s->have_key_expiry && s->keys_valid > 0)
		m_gauge(f, "fps_auth_key_expiry_seconds",
		        "Seconds until the newest valid API key expires; warn below 10 days (864000).",
		        s->newest_key_expiry_unix - now_unix);

	/* Squid's own figures */
	bool squid_ok = counters_text != NULL && info_text != NULL;
	m_gauge(f, "fps_squid_scrape_ok", "1 when Squid's cache manager answered for this scrape (cached up to 2 s).",
	        squid_ok);
	if (squid_ok)
		m_render_squid(f, counters_text, info_text);
	m_render_cache(f, s, counters_text, info_text);

	if (fclose(f) != 0) {
		free(buf);
		return NULL;
	}
	return buf;
}

/* ---- fetching the cache manager -------------------------------------------------------- */

const char *metrics_mgr_host(const char *bind_addr)
{
	if (bind_addr == NULL || bind_addr[0] == '\0' || strcmp(bind_addr, "0.0.0.0") == 0 ||
	    strcmp(bind_addr, "*") == 0)
		return "127.0.0.1";
	if (strcmp(bind_addr, "::") == 0 || strcmp(bind_addr, "[::]") == 0)
		return "::1";
	return bind_addr;
}

/* Decodes a chunked body in place; returns the new length or -1. */
static long m_dechunk(char *body, size_t len)
{
	size_t in = 0, out = 0;
	for (;;) {
		char *end;
		unsigned long n = strtoul(body + in, &end, 16);
		char *eol = strstr(body + in, "\r\n");
		if (end == body + in || eol == NULL)
			return -1;
		in = (size_t)(eol - body) + 2;
		if (n == 0)
			break;
		if (n > len - in)
			return -1;
		memmove(body + out, body + in, n);
		out += n;
		in += n;
		if (in + 2 > len || body[in] != '\r' || body[in + 1] != '\n')
			return -1;
		in += 2;
	}
	body[out] = '\0';
	return (long)out;
}

char *metrics_squid_fetch(const char *addr, int port, const char *page, int timeout_ms, char *err, size_t errlen)
{
	long long deadline = fsio_mono_ms() + timeout_ms;
	char portstr[16];
	snprintf(portstr, sizeof(portstr), "%d", port);
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV};
	struct addrinfo *ai = NULL;
	int gai = getaddrinfo(addr, portstr, &hints, &ai);
	if (gai != 0) {
		snprintf(err, errlen, "%s: %s", addr, gai_strerror(gai));
		return NULL;
	}
	int fd, en;
	enum net_result nr = net_connect(ai->ai_addr, ai->ai_addrlen, deadline, &fd, &en);
	freeaddrinfo(ai);
	if (nr == NET_SOCKET) {
		snprintf(err, errlen, "socket: %s", strerror(en));
		return NULL;
	}
	char *resp = NULL;
	size_t len = 0;
	const char *why = NULL;
	if (nr != NET_OK) {
		why = nr == NET_TIMEOUT ? "connect timed out" : strerror(en);
		goto out;
	}
	char req[256];
	int rl = snprintf(req, sizeof(req),
	                  "GET /squid-internal-mgr/%s HTTP/1.0\r\nHost: %s:%d\r\nUser-Agent: fps-controller\r\n"
	                  "Connection: close\r\n\r\n",
	                  page, addr, port);
	for (int off = 0; off < rl;) {
		if (fsio_wait_fd(fd, POLLOUT, deadline) <= 0) {
			why = "send timed out";
			goto out;
		}
		ssize_t n = send(fd, req + off, (size_t)(rl - off), MSG_NOSIGNAL);
		if (n < 0 && errno != EAGAIN && errno != EINTR) {
			why = strerror(errno);
			goto out;
		}
		off += n > 0 ? (int)n : 0;
	}
	size_t cap = 16384;
	resp = malloc(cap + 1);
	if (resp == NULL) {
		why = "out of memory";
		goto out;
	}
	for (;;) {
		if (len == cap) {
			if (cap >= METRICS_SQUID_MAX_BODY) {
				why = "answer too large";
				goto out;
			}
			char *bigger = realloc(resp, cap * 2 + 1);
			if (bigger == NULL) {
				why = "out of memory";
				goto out;
			}
			resp = bigger;
			cap *= 2;
		}
		int w = fsio_wait_fd(fd, POLLIN, deadline);
		if (w <= 0) {
			why = w == 0 ? "no complete answer in time" : strerror(errno);
			goto out;
		}
		ssize_t n = recv(fd, resp + len, cap - len, 0);
		if (n == 0)
			break;
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				continue;
			why = strerror(errno);
			goto out;
		}
		len += (size_t)n;
	}
	resp[len] = '\0';
	if (strncmp(resp, "HTTP/1.", 7) != 0 || len < 12) {
		why = "not an HTTP answer";
		goto out;
	}
	if (strncmp(resp + 9, "200", 3) != 0) {
		char *eol = strpbrk(resp, "\r\n");
		if (eol)
			*eol = '\0';
		snprintf(err, errlen, "%s:%d answered '%.80s' (is Squid's cache-manager port allowed in squid.conf?)",
		         addr, port, resp);
		free(resp);
		close(fd);
		return NULL;
	}
	char *hdr_end = strstr(resp, "\r\n\r\n");
	if (hdr_end == NULL) {
		why = "no end of headers";
		goto out;
	}
	*hdr_end = '\0';
	bool chunked = strcasestr(resp, "\ntransfer-encoding: chunked") != NULL;
	char *body = hdr_end + 4;
	size_t blen = len - (size_t)(body - resp);
	memmove(resp, body, blen + 1);
	if (chunked && m_dechunk(resp, blen) < 0) {
		why = "bad chunked encoding";
		goto out;
	}
	close(fd);
	return resp;
out:
	snprintf(err, errlen, "%s:%d: %s", addr, port, why ? why : "failed");
	free(resp);
	if (fd >= 0)
		close(fd);
	return NULL;
}

/* ---- the cache --------------------------------------------------------------------------- */

static struct {
	pthread_mutex_t mu;
	pthread_cond_t done;
	bool fetching;
	long long fetched_ms; /* 0 = never */
	char addr[64];
	int port;
	char *counters, *info; /* NULL: Squid did not answer */
	char error[256];
} m_cache = {.mu = PTHREAD_MUTEX_INITIALIZER, .done = PTHREAD_COND_INITIALIZER};

static char *m_dup(const char *s)
{
	return s ? strdup(s) : NULL;
}

void metrics_squid_pages(const struct fps_status *s, char **counters, char **info)
{
	*counters = *info = NULL;
	if (s->mgr_port <= 0)
		return;
	/* Squid's cache manager answers only on the controller's own loopback port. */
	char addr[64];
	snprintf(addr, sizeof(addr), "127.0.0.1");
	const int port = s->mgr_port;

	pthread_mutex_lock(&m_cache.mu);
	long long now = fsio_mono_ms();
	bool same = m_cache.fetched_ms != 0 && m_cache.port == port && strcmp(m_cache.addr, addr) == 0;
	bool fresh = same && now - m_cache.fetched_ms < METRICS_SQUID_CACHE_MS;
	if (!fresh && m_cache.fetching && !same) {
		/* Nothing usable yet: wait for the fetch in flight (bounded by its timeouts). */
		struct timespec until;
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += 2 * METRICS_SQUID_TIMEOUT_MS / 1000 + 1;
		while (m_cache.fetching)
			if (pthread_cond_timedwait(&m_cache.done, &m_cache.mu, &until) != 0)
				break;
		same = m_cache.fetched_ms != 0 && m_cache.port == port && strcmp(m_cache.addr, addr) == 0;
		fresh = same;
	}
	if (!fresh && !m_cache.fetching) {
		m_cache.fetching = true;
		pthread_mutex_unlock(&m_cache.mu);
		/* Outside the lock: other scrapes meanwhile serve the previous pages. */
		char err[256] = "";
		char *c = metrics_squid_fetch(addr, port, "counters", METRICS_SQUID_TIMEOUT_MS, err, sizeof(err));
		char *i =
		    c ? metrics_squid_fetch(addr, port, "info", METRICS_SQUID_TIMEOUT_MS, err, sizeof(err)) : NULL;
		if (i == NULL) {
			free(c);
			c = NULL;
		}
		pthread_mutex_lock(&m_cache.mu);
		free(m_cache.counters);
		free(m_cache.info);
		m_cache.counters = c;
		m_cache.info = i;
		snprintf(m_cache.error, sizeof(m_cache.error), "%s", err);
		snprintf(m_cache.addr, sizeof(m_cache.addr), "%s", addr);
		m_cache.port = port;
		m_cache.fetched_ms = fsio_mono_ms();
		m_cache.fetching = false;
		same = true;
		pthread_cond_broadcast(&m_cache.done);
	}
	if (same) {
		*counters = m_dup(m_cache.counters);
		*info = m_dup(m_cache.info);
	}
	pthread_mutex_unlock(&m_cache.mu);
}

char *metrics_scrape(const struct fps_status *s, double now_unix)
{
	char *counters, *info;
	metrics_squid_pages(s, &counters, &info);
	char *text = metrics_render(s, counters, info, now_unix);
	free(counters);
	free(info);
	return text;
}
