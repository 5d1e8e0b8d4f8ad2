/*
 * statuspage: GET / on the admin port: one self-contained HTML page (inline style and one
 * inline script for the copy button, nothing fetched from elsewhere) rendered from the
 * status snapshot, refreshing itself every STATUSPAGE_REFRESH_S seconds.
 */
#ifndef FPS_STATUSPAGE_H
#define FPS_STATUSPAGE_H

#include <stdio.h>

#include "status.h"

#define STATUSPAGE_REFRESH_S  5
#define STATUSPAGE_DENIED_MAX 20 /* rows in the page's table; the fragment lists every top entry */
/* Sent with the page: the browser refuses anything not inline. */
#define STATUSPAGE_CSP "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"

/* Writes v (at most max bytes) HTML-escaped; control characters other than \n and \t as
 * character references. Shared with the reports' sections (reportspage.c). */
void statuspage_esc(FILE *f, const char *v, size_t max);

/* Returns malloc'd HTML, or NULL on out of memory. */
char *statuspage_render(const struct fps_status *s, double now_unix);

#endif
