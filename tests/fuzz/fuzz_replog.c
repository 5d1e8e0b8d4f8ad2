/*
 * libFuzzer target for the reports' log parsers (reports.c): one input is one line of
 * Squid's access.log (native format) and of detail.log, parsed, classified and counted. Every
 * parsed host stays within its charset, the report's strings stay printable, and the counts
 * stay consistent.
 */
#include <assert.h>
#include <ctype.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "reports.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_printable(const char *s)
{
	for (; *s; s++)
		assert(*s >= 0x20 && *s < 0x7f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct rep_state *r;
	if (r == NULL)
		r = reports_new("/nonexistent", NULL, 1.0);
	if (size > REP_LINE_MAX || r == NULL)
		return 0;
	char *line = malloc(size + 1);
	memcpy(line, data, size);
	line[size] = '\0';
	struct rep_line l;
	struct rep_context ctx = {.has_tunnel = true, .tunnel_tls_failed = (size & 1) != 0};
	for (int fmt = 0; fmt < 2; fmt++) {
		int rc = fmt ? rep_parse_detail(line, size, &l) : rep_parse_native(line, size, &l);
		if (rc == 0) {
			for (const char *p = l.host; *p; p++)
				assert(islower((unsigned char)*p) || isdigit((unsigned char)*p) ||
				       strchr(".-_[]:", *p));
			assert(l.port <= 65535);
			char detail[REP_DETAIL_MAX];
			enum rep_route route;
			int c = rep_classify(&l, &ctx, (size & 2) ? "bad_key" : NULL, detail, sizeof(detail), &route);
			assert(c >= -1 && c < REP_CAUSES);
			if (c >= 0)
				check_printable(detail);
		}
	}
	reports_feed_native(r, line, size);
	reports_feed_detail(r, line, size, &ctx);
	static struct rep_snapshot s;
	reports_snapshot(r, 1e9, &s);
	unsigned long long sum = 0;
	for (int c = 0; c < REP_CAUSES; c++)
		sum += s.failures_by_cause[c];
	assert(sum == s.failures_total);
	assert(s.n_fail <= REP_FAIL_TOP && s.n_dest <= REP_DEST_TOP && s.n_products <= REP_NPROD);
	for (size_t i = 0; i < s.n_fail; i++)
		check_printable(s.fail[i].detail);
	free(line);
	return 0;
}
