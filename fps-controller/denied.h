/*
 * denied: the denied-destination report. A Space-Saving heavy-hitters table of
 * (host, port) pairs with their counts, first/last seen and the products that asked,
 * in memory fixed at init whatever the traffic; the file fps-acl writes it to (at most
 * once a second per helper process) and the merge the controller makes of those files.
 *
 * Bound (Space-Saving, Metwally et al. 2005): with capacity k, every destination denied
 * more than total/k times is in the table, and a count overestimates the true one by at
 * most the entry's `error` (<= total/k). Memory: k entries of sizeof(struct denied_entry)
 * plus 2k bucket indices, allocated once (DENIED_CAP = 1024: about 430 KiB).
 *
 * File format (text, one record per line; hosts are normalized, products [A-Za-z0-9._-]):
 *   fps-denied 1
 *   pid <pid> start <unix> generation <n>
 *   total <denials> evicted <n> since <unix>
 *   D <count> <error> <first_unix> <last_unix> <port> <host> <product,product|->[+]
 *   end
 */
#ifndef FPS_DENIED_H
#define FPS_DENIED_H

#include <stdbool.h>
#include <stddef.h>

#include "err.h"
#include "whitelist.h"

#define DENIED_CAP         1024 /* destinations tracked per table */
#define DENIED_TOP_MAX     100  /* entries /status and /denied show */
#define DENIED_PRODUCTS    4    /* products remembered per destination; more sets `more_products` */
#define DENIED_PRODUCT_MAX 32
#define DENIED_FILE_PREFIX "acl-"
#define DENIED_FILE_SUFFIX ".denied"

struct denied_entry {
	char host[WL_NAME_MAX + 1];
	unsigned port; /* 0 = not given */
	unsigned long long count;
	unsigned long long error; /* Space-Saving overestimate inherited from an evicted entry */
	double first_seen, last_seen;
	char products[DENIED_PRODUCTS][DENIED_PRODUCT_MAX + 1];
	unsigned n_products;
	bool more_products;
	bool would_deny; /* counted in report mode: allowed, but enforce would have denied */
	int next;        /* hash chain; -1 ends it */
};

struct denied_table {
	struct denied_entry *e;
	size_t n, cap;
	int *buckets; /* 2 * cap heads */
	size_t nbuckets;
	unsigned long long total;   /* every denial counted, tracked or not */
	unsigned long long evicted; /* entries displaced: > 0 means the table is truncated */
	double since;               /* when counting started */
	/* Finding the smallest count to replace: counts only grow once the table is full, so
	 * min_hint (a past minimum) is never above the true minimum, and an entry equal to it is a
	 * minimum. A cursor walks the table for one; a full lap without it recomputes min_hint.
	 * Amortized O(1) per replacement when many entries share the minimum (a flood of
	 * one-off hosts), O(cap) at worst. */
	size_t cursor;
	unsigned long long min_hint;
	bool min_valid;
};

/* Allocates a table of cap entries (all the memory it will ever use). -1: no memory. */
int denied_init(struct denied_table *t, size_t cap, double since);
void denied_free(struct denied_table *t);
void denied_clear(struct denied_table *t, double since);

/* Counts n denials of host:port by product (may be "" or NULL) at time now. When the
 * table is full and the key is new, an entry with the smallest count is replaced (its
 * count becomes the newcomer's error). */
void denied_add(struct denied_table *t, const char *host, unsigned port, const char *product, double now,
                unsigned long long n, bool would_deny);
/* Adds every entry of src into dst (weighted Space-Saving), keeping first/last seen and
 * products; dst->total and dst->evicted grow by src's. */
void denied_merge(struct denied_table *dst, const struct denied_table *src);

/* The at most max entries with the highest counts, most denied first (ties: host, port). */
size_t denied_top(const struct denied_table *t, struct denied_entry *out, size_t max);

/* The product part of a username as Squid passed it (%un, already unescaped): the name
 * before a trailing "-<GUID>", else before the first '-', else the whole name; cut to
 * DENIED_PRODUCT_MAX, bytes outside [A-Za-z0-9._-] become '_'. "" for "-" (no user). */
void denied_product(const char *user, char *out, size_t len);

/* File form of a table (see above); malloc'd text. */
int denied_render(const struct denied_table *t, int pid, double start, unsigned long long generation, char **out,
                  size_t *len);
/* Parses a file into t (initialized here with DENIED_CAP). -1 with e set on a bad file. */
int denied_parse(const char *text, size_t len, const char *path, struct denied_table *t, int *pid, struct fps_err *e);

/* Writes a table atomically into dir (temp file + rename, no fsync: the file only
 * lives as long as the controller reads it). */
int denied_write(const char *dir, const struct denied_table *t, int pid, double start, unsigned long long generation);

/* The controller's side: the merged view over every helper's file. Files of helpers
 * that are gone are folded into `retired` and removed, so counts survive helper restarts
 * and reloads; nothing survives a controller restart (the files are cleared at start). */
struct denied_collector {
	char dir[4096];
	struct denied_table retired; /* helpers that exited */
	struct denied_table view;    /* retired + the live helpers' files, rebuilt per collect */
};

int denied_collector_init(struct denied_collector *c, const char *dir, double now);
void denied_collector_free(struct denied_collector *c);
/* Rereads the directory and rebuilds c->view. */
void denied_collect(struct denied_collector *c);

#endif
