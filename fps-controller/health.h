/*
 * health: does Squid answer HTTP? A thread sends Squid one small request every
 * HEALTH_INTERVAL_MS on a fresh connection and waits HEALTH_TIMEOUT_MS for the status
 * line. A TCP connect alone is not enough: the kernel completes it for a stopped or
 * wedged Squid (its accept queue). The control loop reads the result for /readyz and
 * kills a Squid that stays silent past its bound; an eventfd tells it when the answer
 * flips, so readiness turns without waiting for the next publish.
 */
#ifndef FPS_HEALTH_H
#define FPS_HEALTH_H

#include <stdbool.h>

#define HEALTH_INTERVAL_MS 500
#define HEALTH_TIMEOUT_MS  1000
/* The request's host: squid.conf keeps it out of the access log. */
#define HEALTH_PROBE_HOST "fps-health.invalid"

struct health_state {
	bool answering;       /* the last probe got a status line in time */
	long long last_ok_ms; /* monotonic time of the last answer; 0 = never */
	long long since_ms;   /* when the current target was set (a new Squid) */
	unsigned long probes, failures;
	char error[160]; /* why the last probe failed ("" after an answer) */
};

/* Starts the thread; notify_fd (an eventfd, may be -1) is written when `answering` flips. */
int health_start(int notify_fd);
/* Where Squid listens (addr is numeric); a change, or reset, restarts `since_ms`. */
void health_target(const char *addr, int port, bool reset);
void health_get(struct health_state *out);
void health_stop(void);

#endif
