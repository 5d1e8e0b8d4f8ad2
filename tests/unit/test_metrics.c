/*
 * Unit tests for metrics: the Prometheus text rendered from fixed snapshots and from the
 * cache-manager pages of a real Squid 5.7 (captured with
 * `curl --http1.0 http://127.0.0.1:PORT/squid-internal-mgr/{counters,info}` after 3 allowed
 * and 3 denied requests), and the cache-manager client against real loopback sockets.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "metrics.h"

static const char squid_counters[] = "sample_time = 1795486152.761303 (Tue, 24 Nov 2026 02:09:12 GMT)\n"
                                     "client_http.requests = 7\n"
                                     "client_http.hits = 0\n"
                                     "client_http.errors = 4\n"
                                     "client_http.kbytes_in = 0\n"
                                     "client_http.kbytes_out = 4\n"
                                     "client_http.hit_kbytes_out = 0\n"
                                     "server.all.requests = 3\n"
                                     "server.all.errors = 0\n"
                                     "server.all.kbytes_in = 0\n"
                                     "server.all.kbytes_out = 0\n"
                                     "server.http.requests = 3\n"
                                     "server.http.errors = 0\n"
                                     "server.http.kbytes_in = 0\n"
                                     "server.http.kbytes_out = 0\n"
                                     "server.ftp.requests = 0\n"
                                     "server.ftp.errors = 0\n"
                                     "server.ftp.kbytes_in = 0\n"
                                     "server.ftp.kbytes_out = 0\n"
                                     "server.other.requests = 0\n"
                                     "server.other.errors = 0\n"
                                     "server.other.kbytes_in = 0\n"
                                     "server.other.kbytes_out = 0\n"
                                     "icp.pkts_sent = 0\n"
                                     "icp.pkts_recv = 0\n"
                                     "icp.queries_sent = 0\n"
                                     "icp.replies_sent = 0\n"
                                     "icp.queries_recv = 0\n"
                                     "icp.replies_recv = 0\n"
                                     "icp.query_timeouts = 0\n"
                                     "icp.replies_queued = 0\n"
                                     "icp.kbytes_sent = 0\n"
                                     "icp.kbytes_recv = 0\n"
                                     "icp.q_kbytes_sent = 0\n"
                                     "icp.r_kbytes_sent = 0\n"
                                     "icp.q_kbytes_recv = 0\n"
                                     "icp.r_kbytes_recv = 0\n"
                                     "icp.times_used = 0\n"
                                     "cd.times_used = 0\n"
                                     "cd.msgs_sent = 0\n"
                                     "cd.msgs_recv = 0\n"
                                     "cd.memory = 0\n"
                                     "cd.local_memory = 0\n"
                                     "cd.kbytes_sent = 0\n"
                                     "cd.kbytes_recv = 0\n"
                                     "unlink.requests = 0\n"
                                     "page_faults = 0\n"
                                     "select_loops = 73\n"
                                     "cpu_time = 0.026080\n"
                                     "wall_time = 0.229153\n"
                                     "swap.outs = 0\n"
                                     "swap.ins = 0\n"
                                     "swap.files_cleaned = 0\n"
                                     "aborted_requests = 0\n";

static const char squid_info[] = "Squid Object Cache: Version 5.7\n"
                                 "Build Info: Debian linux\n"
                                 "Service Name: squid\n"
                                 "Start Time:\tTue, 24 Nov 2026 02:09:12 GMT\n"
                                 "Current Time:\tTue, 24 Nov 2026 02:09:13 GMT\n"
                                 "Connection information for squid:\n"
                                 "\tNumber of clients accessing cache:\t1\n"
                                 "\tNumber of HTTP requests received:\t8\n"
                                 "\tNumber of ICP messages received:\t0\n"
                                 "\tNumber of ICP messages sent:\t0\n"
                                 "\tNumber of queued ICP replies:\t0\n"
                                 "\tNumber of HTCP messages received:\t0\n"
                                 "\tNumber of HTCP messages sent:\t0\n"
                                 "\tRequest failure ratio:\t 0.00\n"
                                 "\tAverage HTTP requests per minute since start:\t1733.4\n"
                                 "\tAverage ICP messages per minute since start:\t0.0\n"
                                 "\tSelect loop called: 77 times, 3.596 ms avg\n"
                                 "Cache information for squid:\n"
                                 "\tHits as % of all requests:\t5min: 0.0%, 60min: 0.0%\n"
                                 "\tHits as % of bytes sent:\t5min: -0.0%, 60min: -0.0%\n"
                                 "\tMemory hits as % of hit requests:\t5min: 0.0%, 60min: 0.0%\n"
                                 "\tDisk hits as % of hit requests:\t5min: 0.0%, 60min: 0.0%\n"
                                 "\tStorage Swap size:\t0 KB\n"
                                 "\tStorage Swap capacity:\t 0.0% used,  0.0% free\n"
                                 "\tStorage Mem size:\t216 KB\n"
                                 "\tStorage Mem capacity:\t 0.1% used, 99.9% free\n"
                                 "\tMean Object Size:\t0.00 KB\n"
                                 "\tRequests given to unlinkd:\t0\n"
                                 "Median Service Times (seconds)  5 min    60 min:\n"
                                 "\tHTTP Requests (All):   0.00000  0.00000\n"
                                 "\tCache Misses:          0.00000  0.00000\n"
                                 "\tCache Hits:            0.00000  0.00000\n"
                                 "\tNear Hits:             0.00000  0.00000\n"
                                 "\tNot-Modified Replies:  0.00000  0.00000\n"
                                 "\tDNS Lookups:           0.00000  0.00000\n"
                                 "\tICP Queries:           0.00000  0.00000\n"
                                 "Resource usage for squid:\n"
                                 "\tUP Time:\t0.277 seconds\n"
                                 "\tCPU Time:\t0.026 seconds\n"
                                 "\tCPU Usage:\t9.56%\n"
                                 "\tCPU Usage, 5 minute avg:\t0.00%\n"
                                 "\tCPU Usage, 60 minute avg:\t0.00%\n"
                                 "\tMaximum Resident Size: 109888 KB\n"
                                 "\tPage faults with physical i/o: 0\n"
                                 "Memory accounted for:\n"
                                 "\tTotal accounted:          693 KB\n"
                                 "\tmemPoolAlloc calls:      2625\n"
                                 "\tmemPoolFree calls:       2727\n"
                                 "File descriptor usage for squid:\n"
                                 "\tMaximum number of file descriptors:   20000\n"
                                 "\tLargest file desc currently in use:     14\n"
                                 "\tNumber of file desc currently in use:   11\n"
                                 "\tFiles queued for open:                   0\n"
                                 "\tAvailable number of file descriptors: 19989\n"
                                 "\tReserved number of file descriptors:   100\n"
                                 "\tStore Disk files open:                   0\n"
                                 "Internal Data Structures:\n"
                                 "\t    52 StoreEntries\n"
                                 "\t    52 StoreEntries with MemObjects\n"
                                 "\t     0 Hot Object Cache Items\n"
                                 "\t     0 on-disk objects\n";

#define NOW 1795486000.0

static struct fps_status *base_status(void)
{
	struct fps_status *s = calloc(1, sizeof(*s));
	assert_non_null(s);
	snprintf(s->version, sizeof(s->version), "1.4.0");
	s->start_unix = NOW - 100;
	s->generation = 12;
	s->reloads_ok = 11;
	s->reloads_failed = 3;
	s->last_reload_unix = NOW - 5;
	s->last_reload_ok = false;
	s->last_success_unix = NOW - 50;
	s->squid_runs_active = true;
	s->entries = 6;
	s->by_route[WL_VIA_DIRECT] = 3;
	s->by_route[WL_VIA_UPSTREAM] = 1;
	s->by_route[WL_VIA_TUNNEL] = 2;
	s->folded = 4;
	s->n_rejected = 2;
	s->have_version = true;
	s->whitelist_version = 42;
	s->squid.up = true;
	s->squid.restarts = 2;
	s->stunnel.restarts = 5;
	s->tunnel.configured = true;
	s->tunnel.up = true;
	s->tunnel.checked_unix = NOW - 1;
	s->auth_enabled = true;
	s->keys_total = 3;
	s->keys_valid = 2;
	s->have_key_expiry = true;
	s->newest_key_expiry_unix = NOW + 86400;
	return s;
}

/* The line that starts with prefix followed by ' ' (a whole sample), or NULL. */
static const char *sample(const char *text, const char *prefix)
{
	size_t n = strlen(prefix);
	for (const char *l = text; l && *l; l = strchr(l, '\n'), l = l ? l + 1 : NULL)
		if (strncmp(l, prefix, n) == 0 && l[n] == ' ')
			return l + n + 1;
	return NULL;
}

static void assert_sample(const char *text, const char *name, const char *value)
{
	const char *v = sample(text, name);
	if (v == NULL)
		fail_msg("no sample %s in:\n%s", name, text);
	size_t n = strlen(value);
	if (strncmp(v, value, n) != 0 || v[n] != '\n')
		fail_msg("%s: want %s, got %.40s", name, value, v);
}

/* Structural rules promtool enforces: every sample belongs to a family declared just before
 * with # HELP and # TYPE, each family declared once, counters end in _total. */
static void assert_wellformed(const char *text)
{
	char family[128] = "", type[16] = "";
	char seen[4096] = " ";
	for (const char *l = text; *l;) {
		const char *eol = strchr(l, '\n');
		assert_non_null(eol); /* every line ends with a newline */
		char line[1024];
		size_t n = (size_t)(eol - l);
		assert_true(n < sizeof(line));
		memcpy(line, l, n);
		line[n] = '\0';
		if (strncmp(line, "# HELP ", 7) == 0) {
			assert_int_equal(sscanf(line + 7, "%127s", family), 1);
			char key[140];
			snprintf(key, sizeof(key), " %s ", family);
			if (strstr(seen, key))
				fail_msg("family %s declared twice", family);
			strncat(seen, key + 1, sizeof(seen) - strlen(seen) - 1);
			type[0] = '\0';
		} else if (strncmp(line, "# TYPE ", 7) == 0) {
			char name[128];
			assert_int_equal(sscanf(line + 7, "%127s %15s", name, type), 2);
			assert_string_equal(name, family);
			if (strcmp(type, "counter") == 0)
				assert_non_null(strstr(family, "_total"));
		} else {
			assert_true(type[0] != '\0');
			size_t fl = strlen(family);
			if (strncmp(line, family, fl) != 0 || (line[fl] != ' ' && line[fl] != '{'))
				fail_msg("sample '%s' outside its family %s", line, family);
		}
		l = eol + 1;
	}
}

static void test_render_config_and_paths(void **state)
{
	(void)state;
	struct fps_status *s = base_status();
	char *t = metrics_render(s, NULL, NULL, NOW);
	assert_non_null(t);
	assert_wellformed(t);
	assert_sample(t, "fps_build_info{version=\"1.4.0\"}", "1");
	assert_sample(t, "fps_config_generation", "12");
	assert_sample(t, "fps_config_reloads_total{result=\"success\"}", "11");
	assert_sample(t, "fps_config_reloads_total{result=\"failure\"}", "3");
	assert_sample(t, "fps_config_last_reload_success", "0");
	assert_sample(t, "fps_config_last_reload_timestamp_seconds", "1795485995");
	assert_sample(t, "fps_whitelist_entries", "6");
	assert_sample(t, "fps_whitelist_entries_by_route{route=\"direct\"}", "3");
	assert_sample(t, "fps_whitelist_entries_by_route{route=\"upstream\"}", "1");
	assert_sample(t, "fps_whitelist_entries_by_route{route=\"tunnel\"}", "2");
	assert_sample(t, "fps_whitelist_rejected_entries", "2");
	assert_sample(t, "fps_whitelist_version", "42");
	assert_sample(t, "fps_whitelist_info{version=\"42\"}", "1");
	assert_sample(t, "fps_squid_up", "1");
	assert_sample(t, "fps_squid_restarts_total", "2");
	assert_sample(t, "fps_stunnel_restarts_total", "5");
	assert_sample(t, "fps_tunnel_up", "1");
	assert_sample(t, "fps_tunnel_interception_suspected", "0");
	assert_sample(t, "fps_upstream_configured", "0");
	assert_sample(t, "fps_upstream_up", "0");
	assert_sample(t, "fps_auth_keys_valid", "2");
	assert_sample(t, "fps_auth_key_expiry_seconds", "86400");
	assert_sample(t, "fps_squid_scrape_ok", "0");
	assert_null(strstr(t, "fps_squid_client_http"));
	free(t);
	free(s);
}

static void test_render_squid_pages(void **state)
{
	(void)state;
	struct fps_status *s = base_status();
	char *t = metrics_render(s, squid_counters, squid_info, NOW);
	assert_non_null(t);
	assert_wellformed(t);
	assert_sample(t, "fps_squid_scrape_ok", "1");
	assert_sample(t, "fps_squid_client_http_requests_total", "7");
	assert_sample(t, "fps_squid_client_http_hits_total", "0");
	assert_sample(t, "fps_squid_client_http_errors_total", "4");
	assert_sample(t, "fps_squid_client_http_received_bytes_total", "0");
	assert_sample(t, "fps_squid_client_http_sent_bytes_total", "4096");
	assert_sample(t, "fps_squid_server_all_requests_total", "3");
	assert_sample(t, "fps_squid_clients", "1");
	assert_sample(t, "fps_squid_file_descriptors_in_use", "11");
	assert_sample(t, "fps_squid_file_descriptors_max", "20000");
	assert_sample(t, "fps_squid_median_service_seconds{window=\"5m\"}", "0");
	assert_sample(t, "fps_squid_median_service_seconds{window=\"60m\"}", "0");
	assert_sample(t, "fps_squid_uptime_seconds", "0.277000");
	assert_sample(t, "fps_squid_max_resident_bytes", "112525312");
	free(t);
	free(s);
}

/* A figure Squid does not print is left out, never invented; a line that only shares a
 * prefix (client_http.hit_kbytes_out vs client_http.hits) is not taken for it. */
static void test_squid_partial_and_prefixes(void **state)
{
	(void)state;
	struct fps_status *s = base_status();
	const char *counters = "client_http.hit_kbytes_out = 99\nclient_http.hits = 5\n";
	const char *info = "\tHTTP Requests (All):   0.01235  0.50000\n";
	char *t = metrics_render(s, counters, info, NOW);
	assert_non_null(t);
	assert_wellformed(t);
	assert_sample(t, "fps_squid_client_http_hits_total", "5");
	assert_null(sample(t, "fps_squid_client_http_requests_total"));
	assert_null(sample(t, "fps_squid_clients"));
	assert_sample(t, "fps_squid_median_service_seconds{window=\"5m\"}", "0.012350");
	assert_sample(t, "fps_squid_median_service_seconds{window=\"60m\"}", "0.500000");
	free(t);
	free(s);
}

static void test_optional_families(void **state)
{
	(void)state;
	struct fps_status *s = base_status();
	s->have_version = false;
	s->keys_valid = 0; /* every key expired: nothing to count down */
	s->tunnel.configured = false;
	s->tunnel.up = true; /* stale flag: an unconfigured tunnel is never "up" */
	char *t = metrics_render(s, NULL, NULL, NOW);
	assert_non_null(t);
	assert_wellformed(t);
	assert_null(strstr(t, "fps_whitelist_version"));
	assert_null(strstr(t, "fps_whitelist_info"));
	assert_null(strstr(t, "fps_auth_key_expiry_seconds"));
	assert_sample(t, "fps_auth_keys_valid", "0");
	assert_sample(t, "fps_tunnel_up", "0");
	assert_sample(t, "fps_tunnel_configured", "0");
	free(t);
	free(s);
}

static void test_label_escaping(void **state)
{
	(void)state;
	struct fps_status *s = base_status();
	snprintf(s->version, sizeof(s->version), "1\"2\\3\n4");
	s->have_version = true;
	s->whitelist_version = -7;
	char *t = metrics_render(s, NULL, NULL, NOW);
	assert_non_null(t);
	assert_wellformed(t);
	assert_sample(t, "fps_build_info{version=\"1\\\"2\\\\3\\n4\"}", "1");
	assert_sample(t, "fps_whitelist_info{version=\"-7\"}", "1");
	free(t);
	free(s);
}

static void test_mgr_host(void **state)
{
	(void)state;
	static const struct {
		const char *bind, *want;
	} cases[] = {{"0.0.0.0", "127.0.0.1"}, {"", "127.0.0.1"},         {NULL, "127.0.0.1"}, {"::", "::1"},
	             {"10.1.2.3", "10.1.2.3"}, {"127.0.0.1", "127.0.0.1"}};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		assert_string_equal(metrics_mgr_host(cases[i].bind), cases[i].want);
}

/* ---- the cache-manager client against real sockets ------------------------------------ */

struct fake_mgr {
	int lfd, port;
	const char *answer; /* NULL: accept, read, never answer */
	pthread_t th;
};

static void *fake_mgr_run(void *arg)
{
	struct fake_mgr *m = arg;
	int fd = accept(m->lfd, NULL, NULL);
	if (fd < 0)
		return NULL;
	char buf[1024];
	ssize_t n = recv(fd, buf, sizeof(buf), 0);
	(void)n;
	if (m->answer) {
		ssize_t w = send(fd, m->answer, strlen(m->answer), MSG_NOSIGNAL);
		(void)w;
	} else {
		/* Hold the connection until the client gives up and closes. */
		while (recv(fd, buf, sizeof(buf), 0) > 0)
			;
	}
	close(fd);
	return NULL;
}

static void fake_mgr_start(struct fake_mgr *m, const char *answer)
{
	m->answer = answer;
	m->lfd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(m->lfd >= 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	assert_int_equal(bind(m->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(m->lfd, 4), 0);
	socklen_t sl = sizeof(a);
	assert_int_equal(getsockname(m->lfd, (struct sockaddr *)&a, &sl), 0);
	m->port = ntohs(a.sin_port);
	assert_int_equal(pthread_create(&m->th, NULL, fake_mgr_run, m), 0);
}

static void fake_mgr_stop(struct fake_mgr *m)
{
	pthread_join(m->th, NULL);
	close(m->lfd);
}

static void test_fetch_plain_and_chunked(void **state)
{
	(void)state;
	static const struct {
		const char *answer, *want;
	} cases[] = {
	    {"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nclient_http.requests = 7\n",
	     "client_http.requests = 7\n"},
	    {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n7\r\n, squid\r\n0\r\n\r\n",
	     "hello, squid"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct fake_mgr m;
		fake_mgr_start(&m, cases[i].answer);
		char err[256] = "";
		char *body = metrics_squid_fetch("127.0.0.1", m.port, "counters", 2000, err, sizeof(err));
		fake_mgr_stop(&m);
		if (body == NULL)
			fail_msg("case %zu: %s", i, err);
		assert_string_equal(body, cases[i].want);
		free(body);
	}
}

static void test_fetch_failures_are_named(void **state)
{
	(void)state;
	struct fake_mgr m;
	char err[256] = "";
	fake_mgr_start(&m, "HTTP/1.1 403 Forbidden\r\n\r\naccess denied");
	assert_null(metrics_squid_fetch("127.0.0.1", m.port, "info", 2000, err, sizeof(err)));
	fake_mgr_stop(&m);
	assert_non_null(strstr(err, "403"));
	assert_non_null(strstr(err, "manager"));

	fake_mgr_start(&m, NULL); /* never answers: the deadline ends it */
	assert_null(metrics_squid_fetch("127.0.0.1", m.port, "info", 200, err, sizeof(err)));
	fake_mgr_stop(&m);
	assert_non_null(strstr(err, "in time"));

	/* Nothing listens on a port we bound and closed without listening. */
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t sl = sizeof(a);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &sl), 0);
	int port = ntohs(a.sin_port);
	close(fd);
	assert_null(metrics_squid_fetch("127.0.0.1", port, "info", 1000, err, sizeof(err)));
	assert_non_null(strstr(err, "refused"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_render_config_and_paths),
	    cmocka_unit_test(test_render_squid_pages),
	    cmocka_unit_test(test_squid_partial_and_prefixes),
	    cmocka_unit_test(test_optional_families),
	    cmocka_unit_test(test_label_escaping),
	    cmocka_unit_test(test_mgr_host),
	    cmocka_unit_test(test_fetch_plain_and_chunked),
	    cmocka_unit_test(test_fetch_failures_are_named),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
