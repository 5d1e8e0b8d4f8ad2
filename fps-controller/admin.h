/*
 * admin: the operator's HTTP endpoints (docs/operations.md) on admin.bind:admin.port, served
 * by libmicrohttpd in its own thread from the snapshot the control loop publishes
 * (status.h): /healthz, /readyz, /metrics, /status.
 */
#ifndef FPS_ADMIN_H
#define FPS_ADMIN_H

#include "err.h"

/* Starts the server; returns -1 with e set if it cannot bind. */
int admin_start(const char *bind_addr, int port, struct fps_err *e);
void admin_stop(void);
/* The control loop calls this on every turn: /healthz answers 200 only while the
 * loop has been seen within the last few seconds. */
void admin_heartbeat(void);

#endif
