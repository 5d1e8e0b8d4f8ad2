/*
 * adminclient: the commands that ask a running controller (`fps-controller denied`,
 * `explain --admin`) fetch its admin endpoints with this one small HTTP/1.0 GET.
 */
#ifndef FPS_ADMINCLIENT_H
#define FPS_ADMINCLIENT_H

#include <stddef.h>

#include "config.h"

#define ADMINCLIENT_STR_(x) #x
#define ADMINCLIENT_STR(x)  ADMINCLIENT_STR_(x)
/* admin.bind:admin.port's defaults, where the commands look when given no --admin */
#define ADMINCLIENT_DEFAULT "127.0.0.1:" ADMINCLIENT_STR(CFG_ADMIN_PORT_DEFAULT)

/* GETs http://<admin><path>; admin is ADDR:PORT or [V6]:PORT (numeric). Returns the HTTP
 * status with *body (malloc'd, NUL-terminated), or -1 with err saying why. */
int adminclient_get(const char *admin, const char *path, int timeout_ms, char **body, char *err, size_t errlen);
/* The same with another method (POST /purge), an empty body. */
int adminclient_request(const char *admin, const char *method, const char *path, int timeout_ms, char **body, char *err,
                        size_t errlen);

/* From now on only answers that carry X-FPS-Instance: id count (adminaddr.h): another
 * instance's answer is an error. NULL or "" accepts any. */
void adminclient_expect_instance(const char *id);

/* The inputs of the controller answering at admin (its /status `inputs`): dirs[0] config,
 * [1] secrets, [2] state directory ("" when it has none). -1 with err when it cannot say. */
int adminclient_inputs(const char *admin, char dirs[3][1024], char *err, size_t errlen);

#endif
