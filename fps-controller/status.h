/*
 * status: the snapshot of the controller's state that the admin endpoints
 * (/status, /metrics, /readyz) serve. The control loop fills a fresh struct and
 * publishes it; the admin thread takes a reference-counted copy under a mutex held
 * only for a pointer swap, so a scrape during a reload never sees a torn state.
 */
#ifndef FPS_STATUS_H
#define FPS_STATUS_H

#include <stdbool.h>
#include <stddef.h>

#include "clock.h"
#include "denied.h"
#include "reports.h"
#include "whitelist.h"

#define STATUS_MAX_REJECTED 200 /* kept for /status; the count is exact */

struct status_rejected {
	char where[96]; /* "whitelist.json:3:5" */
	char entry[128];
	char reason[96];
};

struct status_child {
	char name[16]; /* "squid", "stunnel" */
	bool managed;  /* started by us (supervise) or only watched (sidecar) */
	bool up;
	int pid;             /* 0 = none */
	double started_unix; /* when the current process started; 0 = not running */
	unsigned restarts;
	char state[16];    /* running, backoff, stopped, stopping, external */
	char problem[512]; /* why it is not running (preflight, cache.log FATAL); "" = none known */
	/* Squid only: does it answer HTTP (health.h)? */
	bool answering;
	double silent_seconds; /* since the last answer (or since it started), 0 when answering */
	char answer_error[160];
	unsigned hung_kills; /* killed for not answering */
};

struct status_path {
	bool configured;
	bool up;             /* last check passed */
	double checked_unix; /* 0 = never */
	char target[300];    /* host:port */
	char error[512];     /* why it is down, "" when up */
	bool interception;   /* the tunnel's certificate came from an unexpected issuer */
	char peer_issuer[256];
	char peer_subject[256];
};

/* The denied-destination report, merged over every fps-acl process (denied.h). */
struct status_denied {
	double since; /* counting started (the controller's start); 0 = report off */
	unsigned long long total;
	size_t distinct;
	bool truncated; /* some table evicted entries: the tail and the counts are estimates */
	size_t n_top;
	struct denied_entry top[DENIED_TOP_MAX];
};

/* The update cache (docs/operations.md "The update cache"): the configuration comes from the
 * active generation, Squid's figures (cachestats.h) are read by the admin thread when it
 * answers, from the same cache-manager pages /metrics reads. */
struct status_cache {
	bool enabled;
	int memory_mb, disk_mb, max_object_mb;
	bool restart_pending; /* a change of the stores waits for a Squid restart */
	bool disk_suspended;  /* the state volume is nearly full: memory only until space returns */
	bool have_stats;      /* Squid's cache manager answered */
	unsigned long long hit, miss, collapsed;
	unsigned long long bytes_from_cache, bytes_from_origin;
	unsigned long long used_bytes, objects;
};

struct fps_status {
	/* build */
	char version[32];
	double start_unix;

	/* generation and reloads */
	unsigned long long generation;
	char config_hash[65];
	bool squid_runs_active; /* Squid was (re)configured with the active generation and accepts */
	char apply_mode[16];    /* live | reconfigure */
	bool report_mode;       /* whitelist.mode: report */
	char input_dir[4096];   /* the active generation's copy of its inputs (GET /explain) */
	bool have_version;
	long long whitelist_version;
	double last_reload_unix; /* last attempt; 0 = none */
	bool last_reload_ok;
	char last_error[2048];        /* "" when the last attempt succeeded */
	char last_reload_version[80]; /* whitelist.json's "version" tried, as written (JSON text); "" = none */
	unsigned long reloads_ok, reloads_failed;
	double last_success_unix;

	/* whitelist */
	size_t entries;
	size_t by_route[WL_VIA_COUNT];
	size_t folded;
	size_t n_rejected; /* exact count; rejected[] holds the first STATUS_MAX_REJECTED */
	struct status_rejected rejected[STATUS_MAX_REJECTED];

	/* children and paths */
	struct status_child squid, stunnel;
	struct status_path tunnel, upstream;
	bool tunnel_needed; /* some route uses the tunnel: readiness depends on it */

	/* credentials (docs/agents.md) */
	bool auth_enabled;
	size_t keys_total, keys_valid;
	bool have_key_expiry;
	double newest_key_expiry_unix; /* expiry of the newest valid key */
	char keys_error[256];

	struct status_denied denied;
	struct rep_snapshot reports; /* /failures, /traffic (reports.h); enabled false = off */
	struct clock_check clock;    /* the system clock against the tunnel's / upstream's Date */

	/* the state volume (--state-dir): Squid's logs and every generation live there */
	bool have_state_volume;
	unsigned long long state_free_bytes, state_total_bytes;
	bool state_full; /* a write failed for lack of space, or almost nothing is free */

	/* Squid's own proxy address, for the cache manager and diagnose */
	char proxy_addr[64];
	int proxy_port;
	int mgr_port; /* Squid's cache manager, on 127.0.0.1 (0 = unknown) */

	/* where this controller reads its inputs: diagnose run without flags finds them here */
	char config_dir[1024], secrets_dir[1024], state_dir[1024];
	struct status_cache cache;
};

/* Publishing side (control loop) and reading side (admin thread). */
void status_publish(const struct fps_status *s);
/* Copies the latest published snapshot into *out; returns false if none yet. */
bool status_get(struct fps_status *out);

#endif
