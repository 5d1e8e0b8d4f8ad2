/*
 * clock: is the system clock right? API keys (`expires`) and certificates are judged by it.
 * The reference is one the appliance already trusts and talks to: the Date header of an
 * HTTP answer from the cloud proxy through the tunnel (stunnel's local end), else from the
 * customer's upstream proxy. Any answer will do (a 400 or 407 carries a Date too).
 */
#ifndef FPS_CLOCK_H
#define FPS_CLOCK_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"

#define CLOCK_MAX_SKEW_S 60   /* beyond this, /status says not ok and diagnose reports a problem */
#define CLOCK_TIMEOUT_MS 5000 /* per reference */
#define CLOCK_PERIOD_S   60   /* the controller checks at most this often (and after each reload) */
#define CLOCK_RETRY_S    5    /* ... and this often while no reference has answered */
#define CLOCK_CHECK_HOST "fps-clock-check.invalid" /* RFC 2606: the proxy answers an error, with a Date */

struct clock_check {
	bool have;           /* a reference answered */
	double checked_unix; /* when we asked (0 = never) */
	char reference[320]; /* "tunnel 127.0.0.1:3129", "upstream proxy.corp:3128" */
	char ref_date[64];   /* the Date header as received */
	double skew_seconds; /* system clock minus reference: > 0 ahead, < 0 behind */
	bool ok;             /* |skew| <= CLOCK_MAX_SKEW_S */
	char error[320];     /* why no reference answered */
};

/* Parses an HTTP date (RFC 7231 IMF-fixdate, and the obsolete RFC 850 / asctime forms). */
int clock_parse_http_date(const char *s, double *unix_time);

/* Sends one HEAD through the HTTP proxy at host:port and reads the Date of the answer.
 * *skew is local time (the midpoint of the exchange) minus the Date. */
int clock_ask(const char *host, int port, int timeout_ms, double *skew, char *date, size_t datelen, char *err,
              size_t errlen);

/* Tries the tunnel (if configured) then the upstream (if configured). */
void clock_check(const struct fps_config *c, struct clock_check *out);

#endif
