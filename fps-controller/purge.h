/*
 * purge: removes one object from the update cache (`fps-controller purge URL`, POST /purge),
 * and says whether one is kept (`explain URL`):
 * Squid's PURGE method, sent only to Squid's controller-only cache-manager port on loopback,
 * never to the agents' port (squid.conf refuses PURGE there). Each result is counted.
 */
#ifndef FPS_PURGE_H
#define FPS_PURGE_H

#include <stddef.h>
#include <stdio.h>

enum purge_result { PURGE_PURGED, PURGE_ABSENT, PURGE_FAILED, PURGE_RESULTS };

#define PURGE_URL_MAX 2048

/* Is url an absolute http:// URL of printable ASCII without spaces (what a request line may
 * carry)? Pure. */
int purge_url_ok(const char *url);

/* PURGE url at 127.0.0.1:mgr_port. msg says what happened (for the log and the caller). */
enum purge_result purge_url(int mgr_port, const char *url, int timeout_ms, char *msg, size_t len);

/* Is url kept, fresh? HEAD with Cache-Control: only-if-cached to the same port (never
 * forwarded). 1 kept, 0 not (or stale), -1 with msg when Squid could not be asked. */
int purge_probe(int mgr_port, const char *url, int timeout_ms, char *msg, size_t len);

/* The host and port (80 unless given) of an http:// URL that purge_url_ok accepts; -1 if not. */
int purge_url_host(const char *url, char *host, size_t hostlen, int *port);

/* Results counted since the controller started (thread-safe). */
void purge_counts(unsigned long out[PURGE_RESULTS]);
const char *purge_result_name(enum purge_result r);

/* `fps-controller purge [--admin A] URL`: asks the running controller (POST /purge). Exit
 * 0 purged, 1 not in the cache (or not a URL that can be), 2 usage, 3 runtime failure. */
int purge_cli(const char *admin, const char *url, FILE *out);

#endif
