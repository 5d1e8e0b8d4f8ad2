/*
 * deniedcli: `fps-controller denied [--admin ADDR:PORT] [--json]`: the running controller's
 * denied-destination report (GET /denied) as a table plus the whitelist.json fragment.
 */
#ifndef FPS_DENIEDCLI_H
#define FPS_DENIEDCLI_H

#include <stdbool.h>
#include <stdio.h>

/* Returns the exit code: 0 ok, 3 the controller could not be asked. */
int deniedcli_run(const char *admin, bool json, FILE *out);

#endif
