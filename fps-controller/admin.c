/*
 * admin: /healthz, /readyz, /metrics and /status (docs/operations.md) on libmicrohttpd.
 * One thread per connection (bounded by the connection limits below): a /metrics scrape
 * may wait up to a second for Squid's cache manager, and in this mode it delays no other
 * request; a slow client holds one thread, never the others nor the control loop, which
 * only ever meets this module through an atomic heartbeat and status_publish()'s mutex.
 */
#include "admin.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <pthread.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "adminaddr.h"
#include "log.h"
#include "preflight.h"
#include "metrics.h"
#include "explain.h"
#include "reports.h"
#include "status.h"
#include "statuspage.h"
#include "cachestats.h"
#include "purge.h"
#include "statusjson.h"

/* Simultaneous connections, each with its own thread. libmicrohttpd closes a connection over
 * the limit at once (it does not leave it in the backlog), so the limit is sized for a burst of
 * scrapes and probes rather than for the few clients expected.
 *
 * There is no per-address limit: the kubelet probes from 127.0.0.1 (hostNetwork), like every
 * local process, so a per-address limit let one local client starve the probes. Instead a
 * connection without a request in progress for more than ADMIN_IDLE_GRACE_MS is "slow" (a
 * client sending a header byte a second stays slow however long it trickles), and when more
 * than ADMIN_SLOW_MAX are slow the oldest of them are closed, checked at every new connection
 * and every ADMIN_SWEEP_MS: a burst of fresh connections is never touched, a few slow clients
 * are kept, and a flood of slow ones costs the flooder its oldest connections instead of
 * filling the slots the probes need. */
#define ADMIN_CONN_LIMIT    512
#define ADMIN_SLOW_MAX      64
#define ADMIN_IDLE_GRACE_MS 2000
#define ADMIN_SWEEP_MS      250
#define ADMIN_STACK_SIZE    (256 << 10) /* handlers keep big data on the heap */
#define ADMIN_CONN_TIMEOUT  10          /* seconds of inactivity before a connection is closed */
#define ADMIN_MEM_LIMIT     8192        /* bytes per connection for the request line and headers */
#define ADMIN_HEALTHY_MS    5000        /* /healthz: the loop must have been seen this recently */
#define ADMIN_BACKLOG       256

static struct MHD_Daemon *admin_daemon;
static atomic_llong admin_last_beat_ms; /* monotonic; 0 = never */

/* Every open connection, for closing the oldest idle ones (see ADMIN_IDLE_MAX). */
struct admin_conn {
	bool used, busy, evicted;
	int fd;
	long long since_ms; /* accepted, or finished its last request */
};
static struct admin_conn admin_conns[ADMIN_CONN_LIMIT];
static pthread_mutex_t admin_conns_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t admin_sweep_cv = PTHREAD_COND_INITIALIZER;
static bool admin_sweep_stop;
static pthread_t admin_sweeper;
static bool admin_sweeper_running;

static long long admin_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static double admin_wall(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void admin_heartbeat(void)
{
	atomic_store(&admin_last_beat_ms, admin_now_ms());
}

/* Milliseconds since the loop's last heartbeat; -1 if it never beat. */
static long long admin_beat_age_ms(void)
{
	long long last = atomic_load(&admin_last_beat_ms);
	return last == 0 ? -1 : admin_now_ms() - last;
}

static enum MHD_Result admin_reply(struct MHD_Connection *conn, unsigned int code, const char *type, char *body,
                                   size_t len)
{
	/* body is malloc'd and owned by the response from here on */
	struct MHD_Response *r = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
	if (r == NULL) {
		free(body);
		return MHD_NO;
	}
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
	MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
	if (adminaddr_instance()[0])
		MHD_add_response_header(r, ADMINADDR_HEADER, adminaddr_instance());
	if (code == MHD_HTTP_METHOD_NOT_ALLOWED)
		MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
	enum MHD_Result ret = MHD_queue_response(conn, code, r);
	MHD_destroy_response(r);
	return ret;
}

static enum MHD_Result admin_text(struct MHD_Connection *conn, unsigned int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static enum MHD_Result admin_text(struct MHD_Connection *conn, unsigned int code, const char *fmt, ...)
{
	char *body = NULL;
	va_list ap;
	va_start(ap, fmt);
	int n = vasprintf(&body, fmt, ap);
	va_end(ap);
	if (n < 0)
		return MHD_NO;
	return admin_reply(conn, code, "text/plain; charset=utf-8", body, (size_t)n);
}

static enum MHD_Result admin_healthz(struct MHD_Connection *conn)
{
	long long age = admin_beat_age_ms();
	if (age < 0)
		return admin_text(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "control loop not started yet\n");
	if (age > ADMIN_HEALTHY_MS)
		return admin_text(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "control loop not seen for %lld ms\n", age);
	return admin_text(conn, MHD_HTTP_OK, "ok\n");
}

/* Why the proxy is not ready, or "" when it is. */
static void admin_not_ready(const struct fps_status *s, long long beat_age, char *why, size_t len)
{
	why[0] = '\0';
	if (beat_age < 0 || beat_age > ADMIN_HEALTHY_MS)
		snprintf(why, len, "control loop not running (last seen %lld ms ago)", beat_age);
	else if (!s->squid.up)
		snprintf(why, len, "squid is not running (state %s, pid %d, %u restarts)%s%s",
		         s->squid.state[0] ? s->squid.state : "unknown", s->squid.pid, s->squid.restarts,
		         s->squid.problem[0] ? ": " : "", s->squid.problem);
	else if (!s->squid.answering)
		snprintf(why, len, "squid pid %d does not answer HTTP (silent for %.1f s: %s)", s->squid.pid,
		         s->squid.silent_seconds, s->squid.answer_error[0] ? s->squid.answer_error : "no answer yet");
	else if (!s->squid_runs_active)
		snprintf(why, len, "squid does not run the active generation %llu yet", s->generation);
	else if (s->tunnel_needed && !s->tunnel.up)
		snprintf(why, len, "tunnel to %s is down: %s", s->tunnel.target[0] ? s->tunnel.target : "(unset)",
		         s->tunnel.error[0] ? s->tunnel.error
		                            : (s->tunnel.checked_unix > 0 ? "check failed" : "not checked yet"));
}

static enum MHD_Result admin_readyz(struct MHD_Connection *conn, const struct fps_status *s, bool have)
{
	if (!have)
		return admin_text(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "not ready: no status published yet\n");
	char why[1024];
	admin_not_ready(s, admin_beat_age_ms(), why, sizeof(why));
	if (why[0])
		return admin_text(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "not ready: %s\n", why);
	return admin_text(conn, MHD_HTTP_OK, "ready: generation %llu\n", s->generation);
}

static enum MHD_Result admin_metrics(struct MHD_Connection *conn, const struct fps_status *s, bool have)
{
	if (!have)
		return admin_text(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "no status published yet\n");
	char *body = metrics_scrape(s, admin_wall());
	if (body == NULL)
		return admin_text(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
	return admin_reply(conn, MHD_HTTP_OK, METRICS_CONTENT_TYPE, body, strlen(body));
}

/* The update cache's figures from Squid, from the pages /metrics reads (cached for a moment). */
static void admin_cache_stats(struct fps_status *s)
{
	if (!s->cache.enabled)
		return;
	char *counters = NULL, *info = NULL;
	metrics_squid_pages(s, &counters, &info);
	cachestats_parse(counters, info, &s->cache);
	free(counters);
	free(info);
}

static enum MHD_Result admin_status(struct MHD_Connection *conn, struct fps_status *s, bool have)
{
	if (!have)
		return admin_text(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "no status published yet\n");
	admin_cache_stats(s);
	char *body = statusjson_render(s, admin_wall());
	if (body == NULL)
		return admin_text(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
	return admin_reply(conn, MHD_HTTP_OK, "application/json", body, strlen(body));
}

/* Closes the oldest slow connections beyond ADMIN_SLOW_MAX; called with admin_conns_mu held.
 * shutdown() only: the connection's own thread sees the end of input and closes the socket
 * after its CLOSED notification, which takes this mutex first, so the fd is never a reused one. */
static void admin_evict_slow(void)
{
	long long now = admin_now_ms();
	for (;;) {
		size_t slow = 0;
		struct admin_conn *oldest = NULL;
		for (size_t i = 0; i < ADMIN_CONN_LIMIT; i++) {
			struct admin_conn *c = &admin_conns[i];
			if (!c->used || c->busy || c->evicted || now - c->since_ms <= ADMIN_IDLE_GRACE_MS)
				continue;
			slow++;
			if (oldest == NULL || c->since_ms < oldest->since_ms)
				oldest = c;
		}
		if (slow <= ADMIN_SLOW_MAX || oldest == NULL)
			return;
		shutdown(oldest->fd, SHUT_RDWR);
		oldest->evicted = true;
	}
}

/* At the connection limit libmicrohttpd accepts nothing, so no new connection would trigger
 * the check: this thread repeats it every ADMIN_SWEEP_MS. */
static void *admin_sweep(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&admin_conns_mu);
	while (!admin_sweep_stop) {
		struct timespec until;
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_nsec += ADMIN_SWEEP_MS * 1000000L;
		if (until.tv_nsec >= 1000000000L) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&admin_sweep_cv, &admin_conns_mu, &until);
		admin_evict_slow();
	}
	pthread_mutex_unlock(&admin_conns_mu);
	return NULL;
}

static void admin_notify_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                                    enum MHD_ConnectionNotificationCode toe)
{
	(void)cls;
	pthread_mutex_lock(&admin_conns_mu);
	if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
		const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
		*socket_context = NULL;
		for (size_t i = 0; ci != NULL && i < ADMIN_CONN_LIMIT; i++) {
			if (!admin_conns[i].used) {
				admin_conns[i] =
				    (struct admin_conn){.used = true, .fd = ci->connect_fd, .since_ms = admin_now_ms()};
				*socket_context = &admin_conns[i];
				break;
			}
		}
		admin_evict_slow();
	} else if (*socket_context != NULL) {
		((struct admin_conn *)*socket_context)->used = false;
		*socket_context = NULL;
	}
	pthread_mutex_unlock(&admin_conns_mu);
}

/* A request arrived (busy = true) or was answered (false: idle again, from now). */
static void admin_conn_busy(struct MHD_Connection *conn, bool busy)
{
	const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
	if (ci == NULL || ci->socket_context == NULL)
		return;
	pthread_mutex_lock(&admin_conns_mu);
	struct admin_conn *c = ci->socket_context;
	c->busy = busy;
	c->since_ms = admin_now_ms();
	pthread_mutex_unlock(&admin_conns_mu);
}

static void admin_request_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                                    enum MHD_RequestTerminationCode toe)
{
	(void)cls;
	(void)con_cls;
	(void)toe;
	admin_conn_busy(conn, false);
}

/* GET /denied: the denied report; ?format=whitelist: the whitelist.json fragment. */
static enum MHD_Result admin_denied(struct MHD_Connection *conn, const struct fps_status *s, bool have)
{
	if (!have)
		return admin_text(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "no status published yet\n");
	const char *fmt = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "format");
	bool whitelist = fmt && strcmp(fmt, "whitelist") == 0;
	if (fmt && !whitelist && strcmp(fmt, "json") != 0)
		return admin_text(conn, MHD_HTTP_BAD_REQUEST, "format is json or whitelist\n");
	char *body = statusjson_render_denied(s, whitelist);
	if (body == NULL)
		return admin_text(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
	return admin_reply(conn, MHD_HTTP_OK, "application/json", body, strlen(body));
}

/* GET /failures, GET /traffic: the reports (reports.h). */
static enum MHD_Result admin_reports(struct MHD_Connection *conn, const struct fps_status *s, bool have, bool traffic)
{
	if (!have)
		return admin_text(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "no status published yet\n");
	char *body = traffic ? reports_json_traffic(&s->reports) : reports_json_failures(&s->reports);
	if (body == NULL)
		return admin_text(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
	return admin_reply(conn, MHD_HTTP_OK, "application/json", body, strlen(body));
}

/* GET /: the status page for a browser. The CSP keeps it self-contained. */
static enum MHD_Result admin_page(struct MHD_Connection *conn, struct fps_status *s, bool have)
{
	if (have)
		admin_cache_stats(s);
	if (!have)
		return admin_text(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "no status published yet\n");
	char *body = statuspage_render(s, admin_wall());
	if (body == NULL)
		return admin_text(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
	struct MHD_Response *r = MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
	if (r == NULL) {
		free(body);
		return MHD_NO;
	}
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/html; charset=utf-8");
	MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
	MHD_add_response_header(r, "Content-Security-Policy", STATUSPAGE_CSP);
	MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
	if (adminaddr_instance()[0])
		MHD_add_response_header(r, ADMINADDR_HEADER, adminaddr_instance());
	enum MHD_Result ret = MHD_queue_response(conn, MHD_HTTP_OK, r);
	MHD_destroy_response(r);
	return ret;
}

/* GET /explain?host=H&port=P: the verdict for one destination against the active generation. */
/* explain's answer for a URL also says whether the update cache keeps it (purge.h). */
static char *admin_explain_cache(const struct fps_status *s, const char *url, char *body)
{
	cJSON *r = cJSON_Parse(body);
	if (r == NULL)
		return body;
	cJSON_AddStringToObject(r, "url", url);
	cJSON *c = cJSON_AddObjectToObject(r, "cache");
	if (c) {
		cJSON_AddBoolToObject(c, "configured", s->cache.enabled);
		char msg[256] = "no cache is configured";
		int kept = s->cache.enabled ? purge_probe(s->mgr_port, url, 3000, msg, sizeof(msg)) : 0;
		if (kept < 0)
			cJSON_AddNullToObject(c, "kept");
		else
			cJSON_AddBoolToObject(c, "kept", kept == 1);
		cJSON_AddStringToObject(c, "detail", msg);
	}
	char *out = cJSON_Print(r);
	cJSON_Delete(r);
	if (out == NULL)
		return body;
	free(body);
	return out;
}

static enum MHD_Result admin_explain(struct MHD_Connection *conn, const struct fps_status *s, bool have)
{
	if (!have)
		return admin_text(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "no status published yet\n");
	char *body = NULL;
	const char *url = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "url");
	const char *host = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "host");
	const char *port = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "port");
	char url_host[256], url_port[8];
	if (url) {
		/* ?url=http://host[:port]/path: the policy for host:port, and whether the URL is kept */
		int p;
		if (purge_url_host(url, url_host, sizeof(url_host), &p) < 0)
			return admin_text(conn, MHD_HTTP_BAD_REQUEST,
			                  "url= must be an absolute http:// URL without user:password@ (HTTPS through "
			                  "CONNECT is never kept)\n");
		snprintf(url_port, sizeof(url_port), "%d", p);
		host = url_host;
		port = url_port;
	}
	int code = explain_admin(s, host, port, &body);
	if (code == 200 && url && body)
		body = admin_explain_cache(s, url, body);
	if (body == NULL)
		return admin_text(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
	return admin_reply(conn, (unsigned)code, code == 200 ? "application/json" : "text/plain; charset=utf-8", body,
	                   strlen(body));
}

/* POST /purge?url=URL (`fps-controller purge`): from loopback only, whatever admin.bind is:
 * it changes what agents get, so it is for someone on the appliance itself. */
static enum MHD_Result admin_purge(struct MHD_Connection *conn, const struct fps_status *s, bool have)
{
	const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	const struct sockaddr *sa = ci ? ci->client_addr : NULL;
	bool local = false;
	if (sa && sa->sa_family == AF_INET)
		local = (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
	else if (sa && sa->sa_family == AF_INET6)
		local = IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)sa)->sin6_addr);
	if (!local)
		return admin_text(conn, MHD_HTTP_FORBIDDEN, "purge is answered on loopback only\n");
	if (!have)
		return admin_text(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "no status published yet\n");
	if (!s->cache.enabled)
		return admin_text(conn, MHD_HTTP_CONFLICT, "no cache is configured (fps.yaml has no cache section)\n");
	const char *url = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "url");
	if (!purge_url_ok(url))
		return admin_text(conn, MHD_HTTP_BAD_REQUEST,
		                  "url= must be an absolute http:// URL (HTTPS through CONNECT is never kept)\n");
	char msg[256];
	enum purge_result r = purge_url(s->mgr_port, url, 5000, msg, sizeof(msg));
	/* The URL is what an operator typed; it carries no credential of ours. */
	log_info("purge %s: %s", url, msg);
	unsigned code = r == PURGE_PURGED ? MHD_HTTP_OK : r == PURGE_ABSENT ? MHD_HTTP_NOT_FOUND : MHD_HTTP_BAD_GATEWAY;
	return admin_text(conn, code, "%s: %s\n", msg, url);
}

enum admin_path {
	ADMIN_HEALTHZ,
	ADMIN_READYZ,
	ADMIN_METRICS,
	ADMIN_STATUS,
	ADMIN_DENIED,
	ADMIN_EXPLAIN,
	ADMIN_FAILURES,
	ADMIN_TRAFFIC,
	ADMIN_PAGE,
	ADMIN_PURGE,
	ADMIN_UNKNOWN
};

static enum admin_path admin_route(const char *url)
{
	static const char *paths[] = {"/healthz", "/readyz",   "/metrics", "/status", "/denied",
	                              "/explain", "/failures", "/traffic", "/",       "/purge"};
	for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++)
		if (strcmp(url, paths[i]) == 0)
			return (enum admin_path)i;
	return ADMIN_UNKNOWN;
}

static enum MHD_Result admin_handle(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                    const char *version, const char *upload_data, size_t *upload_data_size,
                                    void **con_cls)
{
	(void)cls;
	(void)version;
	(void)upload_data;
	(void)upload_data_size;
	(void)con_cls;
	/* Answered on the first call: no endpoint reads a body, and a request that carries
	 * one gets its 404/405 at once (libmicrohttpd then closes the connection). */
	admin_conn_busy(conn, true);
	enum admin_path p = admin_route(url);
	if (p == ADMIN_UNKNOWN)
		return admin_text(
		    conn, MHD_HTTP_NOT_FOUND,
		    "not found: try /, /healthz, /readyz, /metrics, /status, /denied, /explain, /failures, "
		    "/traffic\n");
	if (p == ADMIN_PURGE && strcmp(method, MHD_HTTP_METHOD_POST) != 0)
		return admin_text(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed: use POST\n");
	if (p != ADMIN_PURGE && strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
		return admin_text(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed: use GET or HEAD\n");
	if (p == ADMIN_HEALTHZ)
		return admin_healthz(conn);

	/* The snapshot is large (rejected entries): on the heap, not the thread's stack. */
	struct fps_status *s = malloc(sizeof(*s));
	if (s == NULL)
		return MHD_NO;
	bool have = status_get(s);
	enum MHD_Result ret = MHD_NO;
	switch (p) {
	case ADMIN_READYZ:
		ret = admin_readyz(conn, s, have);
		break;
	case ADMIN_METRICS:
		ret = admin_metrics(conn, s, have);
		break;
	case ADMIN_STATUS:
		ret = admin_status(conn, s, have);
		break;
	case ADMIN_DENIED:
		ret = admin_denied(conn, s, have);
		break;
	case ADMIN_EXPLAIN:
		ret = admin_explain(conn, s, have);
		break;
	case ADMIN_FAILURES:
	case ADMIN_TRAFFIC:
		ret = admin_reports(conn, s, have, p == ADMIN_TRAFFIC);
		break;
	case ADMIN_PAGE:
		ret = admin_page(conn, s, have);
		break;
	case ADMIN_PURGE:
		ret = admin_purge(conn, s, have);
		break;
	default:
		break;
	}
	free(s);
	return ret;
}

/* libmicrohttpd's messages ("reached connection limit" for every refused connection during a
 * flood) are rate limited to one line a second, with the count of the ones left out. */
static void admin_mhd_log(void *cls, const char *fmt, va_list ap)
{
	(void)cls;
	static atomic_llong last_sec;
	static atomic_ulong suppressed;
	long long sec = admin_now_ms() / 1000;
	long long prev = atomic_load(&last_sec);
	if (prev == sec || !atomic_compare_exchange_strong(&last_sec, &prev, sec)) {
		atomic_fetch_add(&suppressed, 1);
		return;
	}
	unsigned long dropped = atomic_exchange(&suppressed, 0);
	if (dropped)
		log_warn("admin: %lu more libmicrohttpd messages in the last second were not logged", dropped);
	char buf[512];
	vsnprintf(buf, sizeof(buf), fmt, ap);
	size_t n = strlen(buf);
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
		buf[--n] = '\0';
	log_warn("admin: %s", buf);
}

int admin_start(const char *bind_addr, int port, struct fps_err *e)
{
	if (admin_daemon != NULL)
		return err_set(e, NULL, 0, 0, "admin server already running");
	if (port <= 0 || port > 65535)
		return err_set(e, NULL, 0, 0, "admin port %d out of range", port);
	const char *addr = bind_addr && *bind_addr ? bind_addr : "127.0.0.1";
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof(ss));
	unsigned int flags =
	    MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_POLL | MHD_USE_ERROR_LOG;
	struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
	if (inet_pton(AF_INET, addr, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)port);
	} else if (inet_pton(AF_INET6, addr, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)port);
		flags |= MHD_USE_IPv6;
	} else {
		return err_set(e, NULL, 0, 0, "admin bind address '%s' is not an IPv4 or IPv6 literal", addr);
	}
	/* The socket is ours, bound without SO_REUSEPORT: a second controller on the
	 * same port must fail here, not share the port with us (the kernel would spread
	 * probes and scrapes between the two). SO_REUSEADDR only allows a quick restart. */
	char where[96];
	snprintf(where, sizeof(where), "%s%s%s:%d", strchr(addr, ':') ? "[" : "", addr, strchr(addr, ':') ? "]" : "",
	         port);
	int lfd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (lfd < 0)
		return err_set(e, NULL, 0, 0, "%s: socket: %s", where, strerror(errno));
	int one = 1;
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (ss.ss_family == AF_INET6)
		setsockopt(lfd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	socklen_t sl = ss.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
	if (bind(lfd, (struct sockaddr *)&ss, sl) < 0 || listen(lfd, ADMIN_BACKLOG) < 0) {
		int err = errno;
		close(lfd);
		char owner[256] = "";
		if (err == EADDRINUSE && pf_port_free(addr, port, owner, sizeof(owner)) < 0 && strstr(owner, " by "))
			return err_set(e, NULL, 0, 0, "%s: address already in use%s", where, strstr(owner, " by "));
		if (err == EADDRINUSE)
			return err_set(e, NULL, 0, 0, "%s: address already in use", where);
		return err_set(e, NULL, 0, 0, "%s: cannot listen: %s", where, strerror(err));
	}
	admin_daemon = MHD_start_daemon(
	    flags, (uint16_t)port, NULL, NULL, admin_handle, NULL, MHD_OPTION_EXTERNAL_LOGGER, admin_mhd_log, NULL,
	    MHD_OPTION_LISTEN_SOCKET, lfd, MHD_OPTION_CONNECTION_LIMIT, (unsigned int)ADMIN_CONN_LIMIT,
	    MHD_OPTION_NOTIFY_CONNECTION, admin_notify_connection, NULL, MHD_OPTION_NOTIFY_COMPLETED,
	    admin_request_completed, NULL, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)ADMIN_CONN_TIMEOUT,
	    MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)ADMIN_MEM_LIMIT, MHD_OPTION_THREAD_STACK_SIZE,
	    (size_t)ADMIN_STACK_SIZE, MHD_OPTION_END);
	if (admin_daemon == NULL) {
		close(lfd);
		return err_set(e, NULL, 0, 0, "%s: the admin server did not start", where);
	}
	admin_sweep_stop = false;
	admin_sweeper_running = pthread_create(&admin_sweeper, NULL, admin_sweep, NULL) == 0;
	if (!admin_sweeper_running)
		log_warn("admin: no sweeper thread: slow connections are closed only when new ones arrive");
	log_info("admin endpoints on http://%s%s%s:%d/ (healthz, readyz, metrics, status)",
	         strchr(addr, ':') ? "[" : "", addr, strchr(addr, ':') ? "]" : "", port);
	return 0;
}

void admin_stop(void)
{
	if (admin_daemon == NULL)
		return;
	if (admin_sweeper_running) {
		pthread_mutex_lock(&admin_conns_mu);
		admin_sweep_stop = true;
		pthread_cond_signal(&admin_sweep_cv);
		pthread_mutex_unlock(&admin_conns_mu);
		pthread_join(admin_sweeper, NULL);
		admin_sweeper_running = false;
	}
	MHD_stop_daemon(admin_daemon);
	admin_daemon = NULL;
}
