/*
 * explain: "would an agent's request to HOST:PORT be allowed, and how would it leave?"
 * answered from the compiled policy (wl_lookup / wl_route decide; the entries as written
 * are searched only to name the deciding one with its file:line:col), the port rules,
 * the addresses the name resolves to (hosts_file first, as Squid does, then the resolver)
 * against the blocked networks, and, from a running controller, the route's live state.
 * `fps-controller explain` and GET /explain both call explain_json().
 */
#ifndef FPS_EXPLAIN_H
#define FPS_EXPLAIN_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdio.h>

#include "compile.h"
#include "config.h"
#include "err.h"
#include "status.h"

struct explain_policy {
	struct fps_config cfg;
	struct compiled cp;
	unsigned long long generation; /* 0 = from a config dir, not a running generation */
};

/* cfg_load + compile_config. */
int explain_load(struct explain_policy *p, const char *config_dir, const char *secrets_dir, struct fps_err *e);
void explain_free(struct explain_policy *p);

/* Splits "HOST[:PORT]" / "[V6]:PORT" (default port 443). -1: not a host. */
int explain_parse_target(const char *arg, char *host, size_t hostlen, int *port);

/* The answer as a JSON object; *allowed says the verdict. live may be NULL (no running
 * controller). NULL with e set when host is not a host name or address. */
cJSON *explain_json(const struct explain_policy *p, const char *host, int port, const struct fps_status *live,
                    bool *allowed, struct fps_err *e);

/* The text form of an explain_json() answer. */
void explain_print(const cJSON *r, FILE *out);

/* For the admin thread: GET /explain?host=H&port=P against the generation in s (the policy
 * is loaded from its input copy and cached until the generation changes). Returns the
 * HTTP status and malloc'd JSON (or text for an error). */
int explain_admin(const struct fps_status *s, const char *host, const char *port, char **body);

/* `fps-controller explain`: exit 0 allowed, 1 denied, 2 usage, 3 runtime. */
int explain_cli(const char *config_dir, const char *secrets_dir, const char *admin, bool json, const char *target,
                FILE *out);

#endif
