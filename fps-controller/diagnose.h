/*
 * diagnose: `fps-controller diagnose` for support engineers (docs/operations.md). Loads the config,
 * then checks each path an agent's request takes (DNS, TCP, TLS to the tunnel server with the
 * issuer it saw, the upstream proxy's credentials, a request through the local proxy) and says,
 * for each problem, the next step to try.
 */
#ifndef FPS_DIAGNOSE_H
#define FPS_DIAGNOSE_H

#include <stdbool.h>
#include <stdio.h>

#define DIAGNOSE_USER             "FPS-Diagnose-00000000-0000-0000-0000-000000000000"
#define DIAGNOSE_CONNECT_TIMEOUT  3000  /* ms, TCP connect */
#define DIAGNOSE_IO_TIMEOUT       5000  /* ms, TLS handshake and proxy answers */
#define DIAGNOSE_SELFTEST_TIMEOUT 15000 /* ms: Squid may have to reach the origin */

/* Writes a report (human text, or one JSON document) to out. Returns 0 when every check
 * passed (warnings allowed), 1 when a problem was found (the config included), 3 on a
 * runtime failure of diagnose itself. secrets_dir may be NULL. */
/* state_dir (may be NULL): also check that Squid's user can reach it. */
int diagnose_run(const char *config_dir, const char *secrets_dir, const char *state_dir, bool json, FILE *out);

#endif
