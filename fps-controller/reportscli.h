/*
 * reportscli: `fps-controller failures` and `fps-controller traffic`: GET /failures and
 * GET /traffic of a running controller, printed for a support engineer (--json: unchanged).
 */
#ifndef FPS_REPORTSCLI_H
#define FPS_REPORTSCLI_H

#include <stdbool.h>
#include <stdio.h>

/* admin NULL: the default admin address (adminclient.h). Exit code: 0 ok, 3 no answer. */
int reportscli_failures(const char *admin, bool json, FILE *out);
int reportscli_traffic(const char *admin, bool json, FILE *out);

#endif
