/*
 * cachestats: the update cache's figures from Squid's cache-manager pages (counters, info),
 * for /status `cache` and the fps_cache_* metrics. Squid has no counter of collapsed
 * requests; docs/operations.md says how each figure is derived.
 */
#ifndef FPS_CACHESTATS_H
#define FPS_CACHESTATS_H

#include "status.h"

/* Fills the Squid figures of c from the two page bodies; returns -1 (have_stats false) when
 * either is NULL or lacks the counters. Pure. */
int cachestats_parse(const char *counters, const char *info, struct status_cache *c);

#endif
