/*
 * statuspage: the HTML status page (see statuspage.h). Every string from the snapshot is
 * HTML-escaped; element ids (generation, mode, denied, fragment, ...) are stable so a
 * browser test and a support engineer's script can find them.
 */
#include "statuspage.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "statusjson.h"

/* Writes v (at most max bytes) HTML-escaped. */
void statuspage_esc(FILE *f, const char *v, size_t max)
{
	for (size_t i = 0; i < max && v[i]; i++) {
		unsigned char c = (unsigned char)v[i];
		switch (c) {
		case '&':
			fputs("&amp;", f);
			break;
		case '<':
			fputs("&lt;", f);
			break;
		case '>':
			fputs("&gt;", f);
			break;
		case '"':
			fputs("&quot;", f);
			break;
		case '\'':
			fputs("&#39;", f);
			break;
		default:
			if (c < 0x20 && c != '\n' && c != '\t')
				fprintf(f, "&#%u;", c);
			else
				fputc(c, f);
		}
	}
}

#define SP_ESC(f, field) statuspage_esc((f), (field), sizeof(field))

static void sp_time(FILE *f, double t)
{
	char buf[32];
	statusjson_rfc3339(t, buf, sizeof(buf));
	fputs(buf[0] ? buf : "never", f);
}

static void sp_duration(FILE *f, double secs)
{
	long s = secs > 0 ? (long)secs : 0;
	if (s >= 86400)
		fprintf(f, "%ldd %ldh", s / 86400, (s % 86400) / 3600);
	else if (s >= 3600)
		fprintf(f, "%ldh %ldm", s / 3600, (s % 3600) / 60);
	else
		fprintf(f, "%ldm %lds", s / 60, s % 60);
}

static const char *sp_ok(bool ok)
{
	return ok ? "ok" : "bad";
}

static void sp_child(FILE *f, const struct status_child *c, double now, bool used)
{
	fprintf(f, "<tr id=\"child-%s\"><td>", c->name);
	SP_ESC(f, c->name);
	if (!used && !c->up) {
		fputs("</td><td>not used</td><td></td><td></td><td></td><td></td></tr>\n", f);
		return;
	}
	fprintf(f, "</td><td class=\"%s\">%s</td><td>", sp_ok(c->up), c->up ? "up" : "down");
	SP_ESC(f, c->state);
	fputs("</td><td>", f);
	if (c->pid > 0)
		fprintf(f, "%d", c->pid);
	else
		fputs("-", f);
	fputs("</td><td>", f);
	if (c->pid > 0 && c->started_unix > 0)
		sp_duration(f, now - c->started_unix);
	else
		fputs("-", f);
	fprintf(f, "</td><td>%u</td></tr>\n", c->restarts);
}

static void sp_path(FILE *f, const char *name, const struct status_path *p, bool tunnel)
{
	fprintf(f, "<tr id=\"path-%s\"><td>%s</td>", name, name);
	if (!p->configured) {
		fputs("<td>not configured</td><td></td><td></td><td></td></tr>\n", f);
		return;
	}
	fprintf(f, "<td class=\"%s\">%s</td><td>", sp_ok(p->up), p->up ? "up" : "down");
	SP_ESC(f, p->target);
	fputs("</td><td>", f);
	sp_time(f, p->checked_unix);
	fputs("</td><td>", f);
	SP_ESC(f, p->error);
	if (tunnel && p->interception) {
		fputs("<br><b class=\"bad\">TLS interception suspected</b>: issuer ", f);
		SP_ESC(f, p->peer_issuer);
	}
	fputs("</td></tr>\n", f);
}

/* The update cache: what it saved (docs/operations.md "Reading the savings"). */
static void sp_cache(FILE *f, const struct fps_status *s)
{
	const struct status_cache *c = &s->cache;
	fputs("<h2>Update cache</h2>\n<p id=\"cache\">", f);
	if (!c->enabled) {
		fputs("No cache is configured (fps.yaml has no <code>cache</code> section): nothing is kept.</p>\n", f);
		return;
	}
	fprintf(f, "memory %d MB, disk %d MB%s, objects up to %d MB. ", c->memory_mb, c->disk_mb,
	        c->disk_suspended ? " (<span class=\"bad\">left out: the state volume is nearly full</span>)" : "",
	        c->max_object_mb);
	if (!c->have_stats) {
		fputs("Squid's figures are not available (its cache manager did not answer).</p>\n", f);
		return;
	}
	unsigned long long answered = c->hit + c->miss + c->collapsed;
	fprintf(f,
	        "<span id=\"cache-saved\">%.1f MB</span> sent to agents from the cache, %.1f MB fetched from "
	        "origins; hit ratio <span id=\"cache-hit-ratio\">%.1f%%</span> (%llu hits, %llu joined a "
	        "fetch, %llu fetched); %.1f MB kept in %llu objects.",
	        (double)c->bytes_from_cache / 1e6, (double)c->bytes_from_origin / 1e6,
	        answered ? 100.0 * (double)c->hit / (double)answered : 0.0, c->hit, c->collapsed, c->miss,
	        (double)c->used_bytes / 1e6, c->objects);
	if (c->restart_pending)
		fputs(" <span class=\"bad\">A change of the cache stores waits for a restart of Squid.</span>", f);
	fputs("</p>\n", f);
}

static void sp_denied(FILE *f, const struct fps_status *s)
{
	const struct status_denied *d = &s->denied;
	fputs("<h2>Denied destinations</h2>\n<p id=\"denied-summary\">", f);
	if (strcmp(s->apply_mode, "reconfigure") == 0) {
		fputs("The denied report is off: with whitelist.apply: reconfigure Squid decides alone.", f);
	} else if (d->since > 0) {
		fprintf(f, "%llu denied requests to %zu destinations since ", d->total, d->distinct);
		sp_time(f, d->since);
		if (d->truncated)
			fputs(" (truncated: more destinations than tracked; counts are upper bounds)", f);
	} else {
		fputs("The denied report is not available yet.", f);
	}
	fputs("</p>\n", f);
	size_t n = d->n_top < STATUSPAGE_DENIED_MAX ? d->n_top : STATUSPAGE_DENIED_MAX;
	if (n > 0) {
		fputs("<table id=\"denied\"><tr><th>count</th><th>host</th><th>port</th><th>products</th>"
		      "<th>first seen</th><th>last seen</th></tr>\n",
		      f);
		for (size_t i = 0; i < n; i++) {
			const struct denied_entry *e = &d->top[i];
			fprintf(f, "<tr class=\"denied-row\"><td>%llu</td><td class=\"host\">", e->count);
			SP_ESC(f, e->host);
			fprintf(f, "%s</td><td>%u</td><td>", e->would_deny ? " <small>(would deny)</small>" : "",
			        e->port);
			for (unsigned k = 0; k < e->n_products && k < DENIED_PRODUCTS; k++) {
				if (k)
					fputs(", ", f);
				SP_ESC(f, e->products[k]);
			}
			if (e->more_products)
				fputs(", ...", f);
			fputs("</td><td>", f);
			sp_time(f, e->first_seen);
			fputs("</td><td>", f);
			sp_time(f, e->last_seen);
			fputs("</td></tr>\n", f);
		}
		fputs("</table>\n", f);
	}
	char *frag = statusjson_render_denied(s, true);
	fputs("<p>whitelist.json fragment of the denied hosts: review each host before adding it to the "
	      "customer's list.</p>\n<textarea id=\"fragment\" readonly rows=\"6\">",
	      f);
	if (frag)
		statuspage_esc(f, frag, strlen(frag));
	free(frag);
	fputs("</textarea><br><button id=\"copy\" type=\"button\">Copy</button>\n", f);
}

char *statuspage_render(const struct fps_status *s, double now)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	if (f == NULL)
		return NULL;
	fprintf(f,
	        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
	        "<meta http-equiv=\"refresh\" content=\"%d\">\n<title>FPS status</title>\n"
	        "<style>body{font-family:sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse;"
	        "margin-bottom:1em}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}"
	        "th{background:#f3f3f3}.ok{color:#17702a;font-weight:bold}.bad{color:#b00020;font-weight:bold}"
	        ".banner{padding:.5em 1em;margin-bottom:1em;border-radius:4px}.warn{background:#fff3cd}"
	        ".err{background:#f8d7da}textarea{width:100%%;max-width:60em;font-family:monospace}"
	        "small{color:#666}</style></head><body>\n",
	        STATUSPAGE_REFRESH_S);
	fputs("<h1>FPS status</h1>\n", f);
	if (s->report_mode)
		fputs("<div class=\"banner warn\" id=\"report-banner\">whitelist.mode is <b>report</b>: destinations "
		      "not in the whitelist are allowed and counted below. Set <code>whitelist.mode: enforce</code> "
		      "once the list is complete.</div>\n",
		      f);
	if (!s->last_reload_ok && s->last_reload_unix > 0) {
		fputs("<div class=\"banner err\" id=\"last-error\">The last configuration change was rejected; "
		      "the previous one stays in force:<br><code>",
		      f);
		SP_ESC(f, s->last_error);
		fputs("</code></div>\n", f);
	}
	fputs("<table id=\"summary\">\n", f);
	fprintf(f, "<tr><th>generation</th><td id=\"generation\">%llu</td></tr>\n", s->generation);
	fputs("<tr><th>whitelist version</th><td id=\"whitelist-version\">", f);
	if (s->have_version)
		fprintf(f, "%lld", s->whitelist_version);
	else
		fputs("none", f);
	fprintf(f, "</td></tr>\n<tr><th>mode</th><td id=\"mode\">%s</td></tr>\n",
	        s->report_mode ? "report" : "enforce");
	fputs("<tr><th>apply</th><td>", f);
	SP_ESC(f, s->apply_mode);
	fprintf(f, "</td></tr>\n<tr><th>ready</th><td id=\"ready\" class=\"%s\">%s</td></tr>\n",
	        sp_ok(s->squid_runs_active), s->squid_runs_active ? "serving the active generation" : "not ready");
	fprintf(
	    f,
	    "<tr><th>entries</th><td>%zu (%zu direct, %zu upstream, %zu tunnel); %zu folded, %zu rejected</td></tr>\n",
	    s->entries, s->by_route[WL_VIA_DIRECT], s->by_route[WL_VIA_UPSTREAM], s->by_route[WL_VIA_TUNNEL], s->folded,
	    s->n_rejected);
	fputs("<tr><th>last reload</th><td id=\"last-reload\">", f);
	sp_time(f, s->last_reload_unix);
	if (s->last_reload_unix > 0)
		fputs(s->last_reload_ok ? ": success" : ": <span class=\"bad\">failure</span> ", f);
	if (!s->last_reload_ok)
		SP_ESC(f, s->last_error);
	fputs("</td></tr>\n<tr><th>API keys</th><td id=\"keys\">", f);
	if (!s->auth_enabled) {
		fputs("authentication disabled", f);
	} else {
		bool have = s->have_key_expiry && s->newest_key_expiry_unix > 0 && s->keys_valid > 0;
		double left = have ? s->newest_key_expiry_unix - now : 0;
		fprintf(f, "%zu valid of %zu; newest expires ", s->keys_valid, s->keys_total);
		sp_time(f, have ? s->newest_key_expiry_unix : 0);
		if (!have)
			fputs(" <span class=\"bad\">no valid key: every agent gets 407</span>", f);
		else if (left < STATUSJSON_KEY_WARN_DAYS * 86400.0)
			fprintf(f, " <span class=\"bad\">in %.1f days: issue a new key</span>",
			        floor(left / 8640.0) / 10);
		else
			fprintf(f, " (in %.0f days)", floor(left / 86400.0));
	}
	fputs("</td></tr>\n<tr><th>clock</th><td id=\"clock\">", f);
	if (s->clock.have) {
		fprintf(f, "<span class=\"%s\">%s</span>: system clock %+.0f s against ", sp_ok(s->clock.ok),
		        s->clock.ok ? "ok" : "WRONG", s->clock.skew_seconds);
		SP_ESC(f, s->clock.reference);
		if (!s->clock.ok)
			fputs(" &mdash; API keys and certificates are judged by this clock", f);
	} else {
		fputs("not checked: ", f);
		SP_ESC(f, s->clock.error);
	}
	fprintf(f, "</td></tr>\n<tr><th>version</th><td>%s, started ", s->version);
	sp_time(f, s->start_unix);
	fputs("</td></tr>\n</table>\n", f);

	fputs("<h2>Children</h2>\n<table id=\"children\"><tr><th>name</th><th>up</th><th>state</th><th>pid</th>"
	      "<th>uptime</th><th>restarts</th></tr>\n",
	      f);
	sp_child(f, &s->squid, now, true);
	sp_child(f, &s->stunnel, now, s->tunnel.configured);
	fputs("</table>\n<h2>Paths</h2>\n<table id=\"paths\"><tr><th>path</th><th>state</th><th>target</th>"
	      "<th>checked</th><th>error</th></tr>\n",
	      f);
	sp_path(f, "tunnel", &s->tunnel, true);
	sp_path(f, "upstream", &s->upstream, false);
	fputs("</table>\n", f);

	sp_cache(f, s);
	sp_denied(f, s);
	reportspage_render(f, &s->reports);

	fprintf(f, "<p><small>Generated ");
	sp_time(f, now);
	fprintf(f,
	        "; this page refreshes every %d s. JSON: <a href=\"/status\">/status</a>, "
	        "<a href=\"/denied\">/denied</a>, <a href=\"/failures\">/failures</a>, "
	        "<a href=\"/traffic\">/traffic</a>, <a href=\"/metrics\">/metrics</a>.</small></p>\n"
	        "<script>document.getElementById('copy').addEventListener('click',function(){"
	        "var t=document.getElementById('fragment');t.select();"
	        "if(navigator.clipboard){navigator.clipboard.writeText(t.value);}else{document.execCommand('copy');}"
	        "});</script>\n</body></html>\n",
	        STATUSPAGE_REFRESH_S);
	if (fclose(f) != 0) {
		free(buf);
		return NULL;
	}
	return buf;
}
