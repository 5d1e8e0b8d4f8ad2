/*
 * purge: removes one object from the update cache (`fps-controller purge URL`, POST /purge):
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

/* Results counted since the controller started (thread-safe). */
void purge_counts(unsigned long out[PURGE_RESULTS]);
const char *purge_result_name(enum purge_result r);

/* `fps-controller purge [--admin A] URL`: asks the running controller (POST /purge). Exit
 * 0 purged, 1 not in the cache (or not a URL that can be), 2 usage, 3 runtime failure. */
int purge_cli(const char *admin, const char *url, FILE *out);

#endif
