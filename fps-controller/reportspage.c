/*
 * reportspage: the status page's failures and traffic sections (statuspage.c calls it), with
 * charts drawn as inline SVG by the page itself: requests and bytes per minute over the last
 * hour, stacked per product, and the cache's share of the bytes. Every bar carries its number
 * (data-value, and a <title> a browser shows on hover) so a test can compare the picture
 * with GET /traffic; nothing is loaded from elsewhere and no script draws anything.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "reports.h"
#include "statusjson.h"
#include "statuspage.h"

#define RP_W    720 /* chart width: 60 bars of 12 px */
#define RP_H    150
#define RP_BAR  (RP_W / REP_MINUTES)
#define RP_TOPF 20 /* failure groups shown */
#define RP_TOPD 10 /* destinations shown */

static const char *const rp_colors[] = {"#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
                                        "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"};

/* HTML-escaped, as the rest of the status page (statuspage.c). */
static void rp_esc(FILE *f, const char *s)
{
	statuspage_esc(f, s, SIZE_MAX);
}

static void rp_hhmm(FILE *f, long long minute)
{
	char buf[32];
	statusjson_rfc3339((double)minute * 60.0, buf, sizeof(buf));
	fprintf(f, "%.5s", buf[0] ? buf + 11 : "--:--");
}

static void rp_bytes(FILE *f, double b)
{
	const char *u[] = {"B", "KB", "MB", "GB", "TB"};
	int i = 0;
	while (b >= 1000 && i < 4) {
		b /= 1000;
		i++;
	}
	fprintf(f, i ? "%.1f %s" : "%.0f %s", b, u[i]);
}

/* One stacked bar chart: per minute, one segment per series. values[k][i]: minute k, series i. */
static void rp_chart(FILE *f, const char *id, const char *title, const char *unit, const struct rep_snapshot *r,
                     size_t nseries, const char *const *names,
                     unsigned long long (*value)(const struct rep_snapshot *, int, size_t))
{
	unsigned long long max = 0, total = 0;
	for (int k = 0; k < REP_MINUTES; k++) {
		unsigned long long sum = 0;
		for (size_t i = 0; i < nseries; i++)
			sum += value(r, k, i);
		total += sum;
		if (sum > max)
			max = sum;
	}
	fprintf(f, "<figure><figcaption>%s</figcaption>\n", title);
	fprintf(
	    f,
	    "<svg id=\"%s\" class=\"chart\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" role=\"img\" "
	    "data-total=\"%llu\" data-max=\"%llu\" data-first-minute=\"%lld\" xmlns=\"http://www.w3.org/2000/svg\">\n",
	    id, RP_W + 140, RP_H + 40, RP_W + 140, RP_H + 40, total, max, r->minutes[0].minute);
	fprintf(f, "<rect x=\"0\" y=\"0\" width=\"%d\" height=\"%d\" fill=\"#fafafa\" stroke=\"#ccc\"/>\n", RP_W, RP_H);
	for (int k = 0; k < REP_MINUTES; k++) {
		double y = RP_H;
		for (size_t i = 0; i < nseries; i++) {
			unsigned long long v = value(r, k, i);
			if (v == 0)
				continue;
			double h = max ? (double)v * (RP_H - 10) / (double)max : 0;
			if (h < 1)
				h = 1;
			y -= h;
			fputs("<rect class=\"bar\" data-series=\"", f);
			rp_esc(f, names[i]);
			fprintf(f,
			        "\" data-minute=\"%d\" data-value=\"%llu\" x=\"%d\" y=\"%.1f\" width=\"%d\" "
			        "height=\"%.1f\" "
			        "fill=\"%s\"><title>",
			        k, v, k * RP_BAR, y, RP_BAR - 1, h,
			        rp_colors[i % (sizeof(rp_colors) / sizeof(rp_colors[0]))]);
			rp_esc(f, names[i]);
			fputc(' ', f);
			rp_hhmm(f, r->minutes[k].minute);
			fprintf(f, ": %llu %s</title></rect>\n", v, unit);
		}
	}
	/* axes: the largest minute, the first and the last minute */
	fprintf(f, "<text x=\"%d\" y=\"12\" font-size=\"11\" class=\"max\">max %llu %s/min</text>\n", RP_W + 4, max,
	        unit);
	fprintf(f, "<text x=\"0\" y=\"%d\" font-size=\"11\">", RP_H + 14);
	rp_hhmm(f, r->minutes[0].minute);
	fprintf(f, "</text><text x=\"%d\" y=\"%d\" font-size=\"11\" text-anchor=\"end\">", RP_W, RP_H + 14);
	rp_hhmm(f, r->minutes[REP_MINUTES - 1].minute);
	fputs(" UTC</text>\n", f);
	/* legend */
	for (size_t i = 0; i < nseries; i++) {
		fprintf(f,
		        "<rect x=\"%zu\" y=\"%d\" width=\"10\" height=\"10\" fill=\"%s\"/><text x=\"%zu\" y=\"%d\" "
		        "font-size=\"11\">",
		        i * 110, RP_H + 22, rp_colors[i % (sizeof(rp_colors) / sizeof(rp_colors[0]))], i * 110 + 14,
		        RP_H + 31);
		rp_esc(f, names[i]);
		fputs("</text>\n", f);
	}
	fprintf(f, "</svg></figure>\n");
}

static unsigned long long rp_requests(const struct rep_snapshot *r, int k, size_t i)
{
	return r->minutes[k].requests[r->products[i].slot];
}

static unsigned long long rp_bytes_v(const struct rep_snapshot *r, int k, size_t i)
{
	return r->minutes[k].bytes[r->products[i].slot];
}

static unsigned long long rp_cache(const struct rep_snapshot *r, int k, size_t i)
{
	return i == 0 ? r->minutes[k].from_cache : r->minutes[k].from_origin;
}

void reportspage_render(FILE *f, const struct rep_snapshot *r)
{
	fputs("<h2>Traffic</h2>\n<p id=\"traffic-summary\">", f);
	if (!r->enabled) {
		fputs("The traffic and failures reports are off (FPS_REPORTS=off).</p>\n", f);
		return;
	}
	fprintf(f, "%llu requests since ", r->requests_total);
	char since[32];
	statusjson_rfc3339(r->since, since, sizeof(since));
	fputs(since[0] ? since : "never", f);
	fputs(" (<a href=\"/traffic\">/traffic</a>).</p>\n", f);
	const char *names[REP_NPROD];
	for (size_t i = 0; i < r->n_products; i++)
		names[i] = r->products[i].name;
	rp_chart(f, "chart-requests", "Requests per minute, last hour, per product", "requests", r, r->n_products,
	         names, rp_requests);
	rp_chart(f, "chart-bytes", "Bytes to agents per minute, last hour, per product", "bytes", r, r->n_products,
	         names, rp_bytes_v);
	static const char *const cache_names[] = {"from cache", "from origin"};
	unsigned long long fc = 0, fo = 0;
	for (int k = 0; k < REP_MINUTES; k++) {
		fc += r->minutes[k].from_cache;
		fo += r->minutes[k].from_origin;
	}
	rp_chart(f, "chart-cache", "The cache's savings: bytes to agents from the cache and from origins, per minute",
	         "bytes", r, 2, cache_names, rp_cache);
	fputs("<p id=\"cache-savings\">Last hour: ", f);
	rp_bytes(f, (double)fc);
	fputs(" from the cache, ", f);
	rp_bytes(f, (double)fo);
	fprintf(f, " from origins (%.0f%% saved).</p>\n", fc + fo ? 100.0 * (double)fc / (double)(fc + fo) : 0.0);

	fputs("<table id=\"traffic\"><tr><th>product</th><th>requests</th><th>to agents</th><th>from agents</th>"
	      "<th>from origin</th><th>from cache</th><th>failures</th></tr>\n",
	      f);
	for (size_t i = 0; i < r->n_products; i++) {
		const struct rep_product *p = &r->products[i];
		fputs("<tr class=\"traffic-row\"><td>", f);
		rp_esc(f, p->name);
		fprintf(f, "</td><td>%llu</td><td>%llu</td><td>%llu</td><td>%llu</td><td>%llu</td><td>%llu</td></tr>\n",
		        p->requests, p->bytes_to_agents, p->bytes_from_agents, p->bytes_from_origin,
		        p->bytes_from_cache, p->failures);
	}
	fputs("</table>\n<table id=\"destinations\"><tr><th>destination</th><th>requests</th><th>to agents</th>"
	      "<th>from cache</th></tr>\n",
	      f);
	for (size_t i = 0; i < r->n_dest && i < RP_TOPD; i++) {
		fputs("<tr><td>", f);
		rp_esc(f, r->dest[i].host);
		fprintf(f, "</td><td>%llu</td><td>%llu</td><td>%llu</td></tr>\n", r->dest[i].requests,
		        r->dest[i].bytes_to_agents, r->dest[i].bytes_from_cache);
	}
	fputs("</table>\n", f);

	fprintf(f,
	        "<h2>Failures</h2>\n<p id=\"failures-summary\">%llu failed requests (other than whitelist denials) "
	        "since %s%s (<a href=\"/failures\">/failures</a>).</p>\n",
	        r->failures_total, since[0] ? since : "never",
	        r->failures_truncated ? "; more groups than tracked, counts are upper bounds" : "");
	if (r->n_fail == 0)
		return;
	fputs("<table id=\"failures\"><tr><th>count</th><th>host</th><th>port</th><th>status</th><th>cause</th>"
	      "<th>route</th><th>products</th><th>last seen</th><th>detail</th></tr>\n",
	      f);
	for (size_t i = 0; i < r->n_fail && i < RP_TOPF; i++) {
		const struct rep_fail *e = &r->fail[i];
		fprintf(f, "<tr class=\"failure-row\"><td>%llu</td><td>", e->count);
		rp_esc(f, e->host);
		fprintf(f, "</td><td>%u</td><td>%d</td><td>%s</td><td>%s</td><td>", e->port, e->status,
		        rep_cause_name(e->cause), rep_route_name(e->route));
		for (unsigned k = 0; k < e->n_products; k++) {
			if (k)
				fputc(',', f);
			rp_esc(f, e->products[k]);
		}
		char last[32];
		statusjson_rfc3339(e->last_seen, last, sizeof(last));
		fprintf(f, "%s</td><td>%s</td><td>", e->more_products ? ",..." : "", last);
		rp_esc(f, e->detail);
		fputs("</td></tr>\n", f);
	}
	fputs("</table>\n", f);
}
