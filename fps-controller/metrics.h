/*
 * metrics: the Prometheus text exposition (format 0.0.4) served on /metrics, rendered
 * from a status snapshot plus Squid's own cache-manager pages (counters, info), which
 * are fetched over loopback with a short timeout and cached so scrapes never hammer Squid.
 */
#ifndef FPS_METRICS_H
#define FPS_METRICS_H

#include <stddef.h>

#include "status.h"

#define METRICS_CONTENT_TYPE     "text/plain; version=0.0.4; charset=utf-8"
#define METRICS_SQUID_TIMEOUT_MS 1000 /* per cache-manager page */
#define METRICS_SQUID_CACHE_MS   2000 /* a fetch (or a failed one) is reused this long */
#define METRICS_SQUID_MAX_BODY   (256u * 1024u)

/*
 * Renders the exposition text; pure. counters_text and info_text are the bodies of
 * Squid's squid-internal-mgr/counters and /info pages, NULL when Squid did not answer:
 * then every fps_squid_* figure read from Squid is omitted and fps_squid_scrape_ok is 0.
 * now_unix is the wall clock for "seconds until" figures. Returns malloc'd text or NULL.
 */
char *metrics_render(const struct fps_status *s, const char *counters_text, const char *info_text, double now_unix);

/* GETs http://addr:port/squid-internal-mgr/<page> with an overall deadline. Returns the
 * malloc'd body of a 200 answer, or NULL with err saying why. */
char *metrics_squid_fetch(const char *addr, int port, const char *page, int timeout_ms, char *err, size_t errlen);

/* The cache manager host to use for a proxy bind address: a wildcard bind means loopback. */
const char *metrics_mgr_host(const char *bind_addr);

/*
 * For the admin thread: the cached cache-manager pages from 127.0.0.1:s->mgr_port, fetched
 * again when older than METRICS_SQUID_CACHE_MS. Only one thread fetches at a time; the others
 * use the previous result meanwhile. *counters and *info are malloc'd copies or NULL.
 */
void metrics_squid_pages(const struct fps_status *s, char **counters, char **info);

/* metrics_squid_pages + metrics_render. */
char *metrics_scrape(const struct fps_status *s, double now_unix);

#endif
