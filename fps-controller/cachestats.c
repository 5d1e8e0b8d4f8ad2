/*
 * cachestats: parses Squid's counters and info pages (cachestats.h).
 */
#include "cachestats.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* "name = 123" on a line of the counters page. */
static int counter(const char *text, const char *name, double *out)
{
	size_t n = strlen(name);
	for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
		if (strncmp(p, name, n) == 0 && strncmp(p + n, " = ", 3) == 0) {
			char *end;
			*out = strtod(p + n + 3, &end);
			return end == p + n + 3 ? -1 : 0;
		}
	}
	return -1;
}

/* "\tStorage Swap size:\t123 KB" or "\t   12 StoreEntries" on the info page. */
static double info_value(const char *text, const char *label, int number_first)
{
	const char *p = strstr(text, label);
	if (p == NULL)
		return 0;
	if (!number_first)
		return strtod(p + strlen(label), NULL);
	const char *line = p;
	while (line > text && line[-1] != '\n')
		line--;
	return strtod(line, NULL);
}

/* A counter as an integer: what is not a finite, non-negative number counts as 0. */
static unsigned long long ull(double v)
{
	return isfinite(v) && v > 0 ? (v < 1e18 ? (unsigned long long)v : 1000000000000000000ULL) : 0;
}

int cachestats_parse(const char *counters, const char *info, struct status_cache *c)
{
	c->have_stats = false;
	if (counters == NULL || info == NULL)
		return -1;
	double req, hits, errors, server_all, server_http, hit_kb, http_kb_in;
	if (counter(counters, "client_http.requests", &req) < 0 || counter(counters, "client_http.hits", &hits) < 0 ||
	    counter(counters, "client_http.errors", &errors) < 0 ||
	    counter(counters, "server.all.requests", &server_all) < 0 ||
	    counter(counters, "server.http.requests", &server_http) < 0 ||
	    counter(counters, "client_http.hit_kbytes_out", &hit_kb) < 0 ||
	    counter(counters, "server.http.kbytes_in", &http_kb_in) < 0)
		return -1;
	c->hit = ull(hits);
	c->miss = ull(server_http);
	/* Answered neither from the cache nor by a server fetch of their own: requests that
	 * joined another's fetch (and Squid's own internal answers). */
	double joined = req - hits - errors - server_all;
	c->collapsed = joined > 0 ? (unsigned long long)joined : 0;
	c->bytes_from_cache = (unsigned long long)hit_kb * 1024ULL;
	c->bytes_from_origin = (unsigned long long)http_kb_in * 1024ULL;
	c->used_bytes =
	    (unsigned long long)(info_value(info, "Storage Swap size:", 0) + info_value(info, "Storage Mem size:", 0)) *
	    1024ULL;
	c->objects = (unsigned long long)info_value(info, " StoreEntries\n", 1);
	c->have_stats = true;
	return 0;
}
