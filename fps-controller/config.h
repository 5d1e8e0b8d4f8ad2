/*
 * config: loads the ConfigMap (fps.yaml via libyaml, whitelist.json via cJSON)
 * and the Secret files into one struct, with strict types, documented defaults
 * (docs/configuration.md) and errors that point at file:line:col. No side effects.
 */
#ifndef FPS_CONFIG_H
#define FPS_CONFIG_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>

#include "err.h"
#include "whitelist.h"

#define CFG_MAX_PORTS 64
/* admin.port's default. Not 9090: that is the Prometheus server's own port (Debian's prometheus
 * package starts one on 0.0.0.0:9090), and 9090-9999 is Prometheus' allocation list for
 * exporters, now full; its convention for an internal application is a port outside that list.
 * 8079 is outside it, unassigned in /etc/services, and sits next to the proxy's 8080. */
#define CFG_ADMIN_PORT_DEFAULT 8079

#define CFG_YAML_NAME "fps.yaml"
#define CFG_JSON_NAME "whitelist.json"
/* Input bounds (docs/configuration.md, "Limits"): the worst accepted input must fit the pod's
 * memory limit with room to spare, and anything larger is refused before it is parsed. */
#define CFG_YAML_MAX_SIZE   (1u << 20) /* fps.yaml bytes */
#define CFG_YAML_MAX_DEPTH  32         /* nested collections in fps.yaml (the schema needs 4) */
#define CFG_YAML_MAX_NODES  100000     /* nodes in fps.yaml, every alias counted as a copy */
#define CFG_JSON_MAX_SIZE   (8u << 20) /* whitelist.json bytes (100,000 entries are ~3 MB) */
#define CFG_JSON_MAX_DEPTH  16         /* nested arrays/objects in whitelist.json (the schema needs 3) */
#define CFG_MAX_ENTRIES     200000     /* whitelist entries, presets and whitelist.json together */
#define CFG_MAX_ROUTES      20000      /* route domains */
#define CFG_SECRET_MAX_SIZE (1u << 20) /* upstream-password, tunnel certificates and key */

enum cfg_apply { CFG_APPLY_LIVE, CFG_APPLY_RECONFIGURE };

/* One raw whitelist entry, as written, and where it was written. */
struct cfg_entry {
	char *raw;
	const char *file; /* CFG_YAML_NAME (preset) or CFG_JSON_NAME */
	int line, col;
	int index; /* position in its list, 0-based */
	bool has_via;
	enum wl_via via;
};

struct cfg_route {
	char name[WL_NAME_MAX + 1]; /* normalized */
	enum wl_kind kind;
	enum wl_via via;
	int line, col;
};

struct strv {
	char **v;
	size_t n;
};

struct fps_config {
	char config_dir[PATH_MAX];
	char secrets_dir[PATH_MAX]; /* "" when none was given */

	/* proxy */
	char bind[64];
	int port;
	int workers; /* 0 = auto: one per usable CPU (cpus.h) */
	int connect_ports[CFG_MAX_PORTS];
	size_t n_connect_ports;
	int safe_ports[CFG_MAX_PORTS];
	size_t n_safe_ports;
	struct strv blocked_networks; /* canonical CIDR text; added to the built-in never-allowed ones */
	bool allow_loopback;          /* proxy.allow_loopback_destinations: re-allows 127.0.0.0/8, ::1 */
	struct strv dns_nameservers;
	char hosts_file[PATH_MAX];
	int dns_timeout;  /* seconds Squid waits for DNS answers (Squid's dns_timeout) */
	int read_timeout; /* seconds Squid waits for the origin's next bytes (Squid's read_timeout) */

	/* auth */
	bool auth_enabled;
	char realm[64];
	int credentials_ttl;
	struct strv products;

	/* whitelist */
	enum cfg_apply apply;
	bool whitelist_report; /* whitelist.mode: report (allow and count what enforce would deny) */
	int whitelist_mode_line;
	struct cfg_entry *entries; /* presets first, then whitelist.json */
	size_t n_entries, cap_entries;
	bool has_whitelist_json;
	bool has_version;
	long long whitelist_version;

	/* upstream */
	bool has_upstream;
	char upstream_host[WL_NAME_MAX + 1];
	int upstream_port;
	char upstream_user[128];
	char *upstream_password; /* secret; NULL when none */

	/* tunnel */
	bool has_tunnel;
	char tunnel_server[WL_NAME_MAX + 1];
	char tunnel_address[64];
	int tunnel_port;
	int tunnel_local_port;

	struct cfg_route *routes;
	size_t n_routes;
	enum wl_via default_route;

	char admin_bind[64];
	int admin_port;

	/* cache (docs/configuration.md): absent = nothing is kept, as before the section existed */
	bool has_cache;
	int cache_memory_mb;     /* Squid's cache_mem */
	int cache_disk_mb;       /* on-disk store under <state-dir>/cache; 0 = memory only */
	int cache_max_object_mb; /* larger answers are relayed, not kept */
	bool cache_max_object_set;
	int cache_line; /* where the section starts in fps.yaml, for errors across its keys */

	/* The raw inputs, kept to persist the last good generation and to hash. */
	char *yaml_text, *json_text, *keys_text;
	size_t yaml_len, json_len, keys_len;
	char input_hash[65]; /* SHA-256 over every input, secrets included */
};

/*
 * Every key the configuration accepts, in every file: the one list docs/configuration.md is
 * checked against (`fps-controller keys` prints it; tests/integration/test_docs.py compares
 * both ways) and the source of each "expected one of" hint. A mapping key that is not in this
 * table is rejected as unknown before any section code sees it, so a new key needs a line here
 * (and a row in docs/configuration.md) or it does not exist.
 */
struct cfg_key {
	const char *file; /* CFG_YAML_NAME, CFG_JSON_NAME, CFG_SECRETS or CFG_KEYS_NAME */
	const char *key;  /* dotted path; "[]" marks the items of a list: "routes[].via" */
};
#define CFG_SECRETS   "secrets" /* the files of the Secret directory */
#define CFG_KEYS_NAME "apikeys.json"
extern const struct cfg_key cfg_keys[]; /* ends with {NULL, NULL} */
/* Is path a key of file? */
bool cfg_key_known(const char *file, const char *path);

void cfg_init_defaults(struct fps_config *c);
void cfg_free(struct fps_config *c);

/* Loads config_dir (and secrets_dir, may be NULL or "") into c. On error, e says
 * where, and c is freed. */
int cfg_load(struct fps_config *c, const char *config_dir, const char *secrets_dir, struct fps_err *e);
/* The same from in-memory texts (json may be NULL); file names are used in errors. */
int cfg_parse_yaml(struct fps_config *c, const char *text, size_t len, const char *path, struct fps_err *e);
int cfg_parse_whitelist_json(struct fps_config *c, const char *text, size_t len, const char *path, struct fps_err *e);

/* Squid workers: proxy.workers, or for "auto" the CPUs this process may use (cpus.h). */
int cfg_workers(const struct fps_config *c);
/* Checks the cache section's keys against each other and against the Squid workers that
 * will share it (cache.max_object_mb above the store it would go to). Pure; 0 or -1 with e
 * naming the key. cfg_load calls it. */
int cfg_check_cache(const struct fps_config *c, const char *path, struct fps_err *e);
/* max_object_mb as rendered: as set, or 512 fitted to the store it would go to. */
int cfg_cache_max_object(const struct fps_config *c);
/* The cache limits */
#define CFG_CACHE_MEMORY_MIN 8
#define CFG_CACHE_MEMORY_MAX (1 << 20) /* 1 TiB */
#define CFG_CACHE_DISK_MAX   (1 << 24) /* 16 TiB */
#define CFG_CACHE_OBJECT_MAX (1 << 16) /* 64 GiB: far above any update package */
#define CFG_CACHE_OBJECT_DEF 512

/* Does any route (or the default) use via? */
bool cfg_uses_via(const struct fps_config *c, enum wl_via via);

#endif
