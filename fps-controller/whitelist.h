/*
 * whitelist: turns the customer's entries and the operator's routes into a
 * policy: normalized names (docs/configuration.md), redundant entries folded under wildcards,
 * and a lookup that answers "allowed?" and "which route?" for a destination host.
 * The controller compiles it; fps-acl rebuilds the same policy from a snapshot.
 */
#ifndef FPS_WHITELIST_H
#define FPS_WHITELIST_H

#include <stdbool.h>
#include <stddef.h>

#include "htab.h"

#define WL_NAME_MAX 253

enum wl_via { WL_VIA_DIRECT, WL_VIA_UPSTREAM, WL_VIA_TUNNEL, WL_VIA_COUNT };
enum wl_kind { WL_EXACT, WL_WILD, WL_IP };
enum wl_norm { WL_NORM_OK, WL_NORM_CHANGED, WL_NORM_REJECT };

const char *wl_via_name(enum wl_via via);
int wl_via_parse(const char *s, enum wl_via *out); /* 0 ok, -1 unknown */
const char *wl_kind_name(enum wl_kind kind);

/*
 * Normalizes one raw entry into out (WL_NAME_MAX + 1 bytes): lower case, no
 * trailing dot, wildcard prefix removed (kind says WL_WILD), IP literals in
 * canonical form. WL_NORM_CHANGED: accepted, but note says what was reduced
 * (a pasted URL). WL_NORM_REJECT: note says why.
 */
enum wl_norm wl_normalize(const char *raw, char *out, enum wl_kind *kind, char *note, size_t notelen);

/* Normalizes a destination host as Squid hands it over (%DST): case, trailing
 * dot, IPv6 brackets. Returns -1 if it cannot be a host at all. */
int wl_host_normalize(const char *host, char *out, size_t outlen, bool *is_ip);
/* (-1 also for a name with a byte outside [A-Za-z0-9._-]: nothing is decoded.) */

struct wl_pattern {
	char *name;
	enum wl_kind kind;
	enum wl_via via; /* routes only */
};

struct wl_policy {
	struct wl_pattern *entries; /* allowed destinations, folded, sorted */
	size_t n_entries, cap_entries;
	struct wl_pattern *routes; /* in the order listed: first listed wins a tie */
	size_t n_routes, cap_routes;
	enum wl_via default_via;
	bool report_mode; /* whitelist.mode report: fps-acl allows the unlisted on default_via, counted */
	size_t n_folded;  /* entries dropped as covered by a wildcard or duplicated */
	struct htab exact, wild, route_exact, route_wild;
};

void wl_policy_init(struct wl_policy *p, enum wl_via default_via);
void wl_policy_free(struct wl_policy *p);
/* Adds an already normalized entry / route. Returns -1 on out of memory. */
int wl_policy_add(struct wl_policy *p, const char *name, enum wl_kind kind);
int wl_policy_add_route(struct wl_policy *p, const char *name, enum wl_kind kind, enum wl_via via);
/* Folds entries covered by a wildcard (and the duplicates), sorts them, and
 * builds the lookup tables. Call once after the last add. */
int wl_policy_finish(struct wl_policy *p);
/* Builds only the lookup tables (for a snapshot that was folded already). */
int wl_policy_index(struct wl_policy *p);

/* Is the normalized host allowed? If so and via is non-NULL, which route. */
bool wl_lookup(const struct wl_policy *p, const char *host, bool is_ip, enum wl_via *via);
/* The route that the most specific route pattern gives a host (or the default). */
enum wl_via wl_route(const struct wl_policy *p, const char *host, bool is_ip);

#endif
