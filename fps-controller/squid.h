/*
 * squid: what the controller asks of the squid binary: prove a candidate config
 * (`squid -k parse`, with the cases docs/squid-facts.md shows it wrongly passes treated as
 * failures) and build the argv that runs it in the foreground.
 */
#ifndef FPS_SQUID_H
#define FPS_SQUID_H

#include <stddef.h>

#include "err.h"

#define SQUID_BIN_DEFAULT "/usr/sbin/squid"

/* 0 when conf parses cleanly; else e names the first offending line of Squid's output.
 * Warnings are copied to warnings (may be NULL) and do not fail the check. */
int squid_parse_check(const char *squid_bin, const char *conf, char *warnings, size_t wlen, struct fps_err *e);
/* Fills argv (at least 8 slots) to run Squid in the foreground on conf. */
void squid_argv(const char *squid_bin, const char *conf, int workers, const char *service_name, char *argv[]);

#endif
