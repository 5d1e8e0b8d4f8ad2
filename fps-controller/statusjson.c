/*
 * statusjson: /status for support engineers (docs/operations.md). Every string from the snapshot is read
 * no further than its array and made valid UTF-8 before cJSON escapes it, so a rejected entry
 * full of quotes, control bytes or broken UTF-8 still yields a document any parser accepts.
 */
#include "statusjson.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void statusjson_rfc3339(double unix_time, char *out, size_t len)
{
	if (len == 0)
		return;
	out[0] = '\0';
	if (!(unix_time > 0))
		return;
	time_t t = (time_t)unix_time;
	struct tm tm;
	if (gmtime_r(&t, &tm) == NULL)
		return;
	strftime(out, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* Length of the valid UTF-8 sequence at p (at most n bytes), 0 if invalid. */
static size_t sj_utf8_len(const unsigned char *p, size_t n)
{
	size_t need;
	unsigned int cp;
	if (p[0] < 0x80)
		return 1;
	if ((p[0] & 0xe0) == 0xc0) {
		need = 2;
		cp = p[0] & 0x1fu;
	} else if ((p[0] & 0xf0) == 0xe0) {
		need = 3;
		cp = p[0] & 0x0fu;
	} else if ((p[0] & 0xf8) == 0xf0) {
		need = 4;
		cp = p[0] & 0x07u;
	} else {
		return 0;
	}
	if (need > n)
		return 0;
	for (size_t i = 1; i < need; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (p[i] & 0x3fu);
	}
	/* overlong forms, surrogates, beyond Unicode */
	if ((need == 2 && cp < 0x80) || (need == 3 && cp < 0x800) || (need == 4 && cp < 0x10000) || cp > 0x10ffff ||
	    (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return need;
}

/* A string read from a fixed array of max bytes; invalid UTF-8 becomes U+FFFD. */
static cJSON *sj_clean(const char *v, size_t max)
{
	size_t n = strnlen(v, max);
	char *clean = malloc(n * 3 + 1);
	if (clean == NULL)
		return NULL;
	size_t o_len = 0;
	const unsigned char *p = (const unsigned char *)v;
	for (size_t i = 0; i < n;) {
		size_t l = sj_utf8_len(p + i, n - i);
		if (l == 0) {
			memcpy(clean + o_len, "\xef\xbf\xbd", 3);
			o_len += 3;
			i++;
		} else {
			memcpy(clean + o_len, p + i, l);
			o_len += l;
			i += l;
		}
	}
	clean[o_len] = '\0';
	cJSON *str = cJSON_CreateString(clean);
	free(clean);
	return str;
}

/* Adds a string member read from a fixed array of max bytes (see sj_clean). */
static void sj_str(cJSON *o, const char *key, const char *v, size_t max)
{
	cJSON *str = sj_clean(v, max);
	if (str)
		cJSON_AddItemToObject(o, key, str);
}

#define SJ_STR(o, key, field) sj_str((o), (key), (field), sizeof(field))

/* A string, or null when empty. */
static void sj_str_or_null(cJSON *o, const char *key, const char *v, size_t max)
{
	if (strnlen(v, max) == 0)
		cJSON_AddNullToObject(o, key);
	else
		sj_str(o, key, v, max);
}

static void sj_time(cJSON *o, const char *key, double unix_time)
{
	char buf[32];
	statusjson_rfc3339(unix_time, buf, sizeof(buf));
	if (buf[0])
		cJSON_AddStringToObject(o, key, buf);
	else
		cJSON_AddNullToObject(o, key);
}

static void sj_child(cJSON *parent, const char *key, const struct status_child *c, double now)
{
	cJSON *o = cJSON_AddObjectToObject(parent, key);
	if (o == NULL)
		return;
	cJSON_AddBoolToObject(o, "managed", c->managed);
	cJSON_AddBoolToObject(o, "up", c->up);
	SJ_STR(o, "state", c->state);
	if (c->pid > 0)
		cJSON_AddNumberToObject(o, "pid", c->pid);
	else
		cJSON_AddNullToObject(o, "pid");
	if (c->started_unix > 0 && c->pid > 0) {
		sj_time(o, "started", c->started_unix);
		cJSON_AddNumberToObject(o, "uptime_seconds", floor(now > c->started_unix ? now - c->started_unix : 0));
	} else {
		cJSON_AddNullToObject(o, "started");
		cJSON_AddNullToObject(o, "uptime_seconds");
	}
	cJSON_AddNumberToObject(o, "restarts", c->restarts);
	sj_str_or_null(o, "problem", c->problem, sizeof(c->problem));
	if (strcmp(key, "squid") == 0) {
		cJSON_AddBoolToObject(o, "answering", c->answering);
		cJSON_AddNumberToObject(o, "silent_seconds", floor(c->silent_seconds * 10) / 10);
		sj_str_or_null(o, "answer_error", c->answer_error, sizeof(c->answer_error));
		cJSON_AddNumberToObject(o, "hung_kills", c->hung_kills);
	}
}

static cJSON *sj_path(cJSON *parent, const char *key, const struct status_path *p)
{
	cJSON *o = cJSON_AddObjectToObject(parent, key);
	if (o == NULL)
		return NULL;
	cJSON_AddBoolToObject(o, "configured", p->configured);
	cJSON_AddBoolToObject(o, "up", p->configured && p->up);
	sj_str_or_null(o, "target", p->target, sizeof(p->target));
	sj_time(o, "checked", p->checked_unix);
	sj_str_or_null(o, "error", p->error, sizeof(p->error));
	return o;
}

static cJSON *sj_denied(const struct status_denied *d)
{
	cJSON *o = cJSON_CreateObject();
	if (o == NULL)
		return NULL;
	sj_time(o, "since", d->since);
	cJSON_AddNumberToObject(o, "total", (double)d->total);
	cJSON_AddNumberToObject(o, "distinct", (double)d->distinct);
	cJSON_AddBoolToObject(o, "truncated", d->truncated);
	cJSON *arr = cJSON_AddArrayToObject(o, "top");
	size_t n = d->n_top < DENIED_TOP_MAX ? d->n_top : DENIED_TOP_MAX;
	for (size_t i = 0; arr && i < n; i++) {
		const struct denied_entry *e = &d->top[i];
		cJSON *x = cJSON_CreateObject();
		if (x == NULL)
			break;
		SJ_STR(x, "host", e->host);
		if (e->port > 0)
			cJSON_AddNumberToObject(x, "port", e->port);
		else
			cJSON_AddNullToObject(x, "port");
		cJSON_AddNumberToObject(x, "count", (double)e->count);
		sj_time(x, "first_seen", e->first_seen);
		sj_time(x, "last_seen", e->last_seen);
		cJSON *pr = cJSON_AddArrayToObject(x, "products");
		for (unsigned k = 0; pr && k < e->n_products && k < DENIED_PRODUCTS; k++) {
			cJSON *str = sj_clean(e->products[k], sizeof(e->products[k]));
			if (str)
				cJSON_AddItemToArray(pr, str);
		}
		cJSON_AddBoolToObject(x, "more_products", e->more_products);
		cJSON_AddBoolToObject(x, "would_deny", e->would_deny);
		cJSON_AddItemToArray(arr, x);
	}
	return o;
}

char *statusjson_render_denied(const struct fps_status *s, bool whitelist)
{
	cJSON *root;
	if (!whitelist) {
		root = sj_denied(&s->denied);
	} else {
		root = cJSON_CreateObject();
		cJSON *arr = root ? cJSON_AddArrayToObject(root, "domains") : NULL;
		size_t n = s->denied.n_top < DENIED_TOP_MAX ? s->denied.n_top : DENIED_TOP_MAX;
		for (size_t i = 0; arr && i < n; i++) {
			bool seen = false; /* one line per host, whatever the ports */
			for (size_t j = 0; j < i && !seen; j++)
				seen = strcmp(s->denied.top[j].host, s->denied.top[i].host) == 0;
			if (!seen) {
				cJSON *str = sj_clean(s->denied.top[i].host, sizeof(s->denied.top[i].host));
				if (str)
					cJSON_AddItemToArray(arr, str);
			}
		}
	}
	if (root == NULL)
		return NULL;
	char *text = cJSON_Print(root);
	cJSON_Delete(root);
	return text;
}

/* "cache": the configuration always; Squid's figures when its cache manager answered. */
static void statusjson_cache(cJSON *root, const struct status_cache *c)
{
	cJSON *o = cJSON_AddObjectToObject(root, "cache");
	if (o == NULL)
		return;
	cJSON_AddBoolToObject(o, "enabled", c->enabled);
	if (!c->enabled)
		return;
	cJSON_AddNumberToObject(o, "memory_mb", c->memory_mb);
	cJSON_AddNumberToObject(o, "disk_mb", c->disk_mb);
	cJSON_AddNumberToObject(o, "max_object_mb", c->max_object_mb);
	cJSON_AddBoolToObject(o, "restart_pending", c->restart_pending);
	cJSON_AddBoolToObject(o, "disk_suspended", c->disk_suspended);
	if (c->disk_suspended)
		cJSON_AddStringToObject(o, "note",
		                        "the state volume is nearly full: nothing is written to the disk store "
		                        "until space returns");
	else if (c->restart_pending)
		cJSON_AddStringToObject(o, "note", "a change of the cache stores waits for a restart of Squid");
	if (!c->have_stats) {
		cJSON_AddNullToObject(o, "used_bytes");
		cJSON_AddNullToObject(o, "objects");
		cJSON_AddNullToObject(o, "requests");
		cJSON_AddNullToObject(o, "bytes");
		return;
	}
	cJSON_AddNumberToObject(o, "used_bytes", (double)c->used_bytes);
	cJSON_AddNumberToObject(o, "objects", (double)c->objects);
	cJSON *r = cJSON_AddObjectToObject(o, "requests");
	if (r) {
		cJSON_AddNumberToObject(r, "hit", (double)c->hit);
		cJSON_AddNumberToObject(r, "miss", (double)c->miss);
		cJSON_AddNumberToObject(r, "collapsed", (double)c->collapsed);
	}
	cJSON *b = cJSON_AddObjectToObject(o, "bytes");
	if (b) {
		cJSON_AddNumberToObject(b, "from_cache", (double)c->bytes_from_cache);
		cJSON_AddNumberToObject(b, "from_origin", (double)c->bytes_from_origin);
	}
}

char *statusjson_render(const struct fps_status *s, double now)
{
	cJSON *root = cJSON_CreateObject();
	if (root == NULL)
		return NULL;
	SJ_STR(root, "version", s->version);
	sj_time(root, "started", s->start_unix);
	cJSON_AddNumberToObject(root, "generation", (double)s->generation);
	sj_str_or_null(root, "config_hash", s->config_hash, sizeof(s->config_hash));
	SJ_STR(root, "apply_mode", s->apply_mode);
	cJSON_AddStringToObject(root, "whitelist_mode", s->report_mode ? "report" : "enforce");
	if (s->have_version)
		cJSON_AddNumberToObject(root, "whitelist_version", (double)s->whitelist_version);
	else
		cJSON_AddNullToObject(root, "whitelist_version");
	cJSON_AddBoolToObject(root, "squid_runs_active", s->squid_runs_active);

	cJSON *lr = cJSON_AddObjectToObject(root, "last_reload");
	if (lr) {
		sj_time(lr, "time", s->last_reload_unix);
		cJSON_AddStringToObject(lr, "result",
		                        s->last_reload_unix > 0 ? (s->last_reload_ok ? "success" : "failure") : "none");
		sj_str_or_null(lr, "error", s->last_error, sizeof(s->last_error));
		cJSON *tried = s->last_reload_version[0] ? cJSON_Parse(s->last_reload_version) : NULL;
		cJSON_AddItemToObject(lr, "whitelist_version", tried ? tried : cJSON_CreateNull());
	}
	sj_time(root, "last_success", s->last_success_unix);
	cJSON *rl = cJSON_AddObjectToObject(root, "reloads");
	if (rl) {
		cJSON_AddNumberToObject(rl, "ok", (double)s->reloads_ok);
		cJSON_AddNumberToObject(rl, "failed", (double)s->reloads_failed);
	}

	cJSON *en = cJSON_AddObjectToObject(root, "entries");
	if (en) {
		cJSON_AddNumberToObject(en, "total", (double)s->entries);
		cJSON *br = cJSON_AddObjectToObject(en, "by_route");
		for (int v = 0; br && v < WL_VIA_COUNT; v++)
			cJSON_AddNumberToObject(br, wl_via_name((enum wl_via)v), (double)s->by_route[v]);
		cJSON_AddNumberToObject(en, "folded", (double)s->folded);
	}
	cJSON *rj = cJSON_AddObjectToObject(root, "rejected");
	if (rj) {
		size_t shown = s->n_rejected < STATUS_MAX_REJECTED ? s->n_rejected : STATUS_MAX_REJECTED;
		cJSON_AddNumberToObject(rj, "count", (double)s->n_rejected);
		cJSON_AddBoolToObject(rj, "truncated", shown < s->n_rejected);
		cJSON *arr = cJSON_AddArrayToObject(rj, "entries");
		for (size_t i = 0; arr && i < shown; i++) {
			cJSON *e = cJSON_CreateObject();
			if (e == NULL)
				break;
			SJ_STR(e, "where", s->rejected[i].where);
			SJ_STR(e, "entry", s->rejected[i].entry);
			SJ_STR(e, "reason", s->rejected[i].reason);
			cJSON_AddItemToArray(arr, e);
		}
	}

	cJSON *ch = cJSON_AddObjectToObject(root, "children");
	if (ch) {
		sj_child(ch, "squid", &s->squid, now);
		sj_child(ch, "stunnel", &s->stunnel, now);
	}
	cJSON *tu = sj_path(root, "tunnel", &s->tunnel);
	if (tu) {
		cJSON_AddBoolToObject(tu, "needed", s->tunnel_needed);
		cJSON_AddBoolToObject(tu, "interception", s->tunnel.interception);
		sj_str_or_null(tu, "issuer", s->tunnel.peer_issuer, sizeof(s->tunnel.peer_issuer));
		sj_str_or_null(tu, "subject", s->tunnel.peer_subject, sizeof(s->tunnel.peer_subject));
	}
	sj_path(root, "upstream", &s->upstream);
	cJSON *in = cJSON_AddObjectToObject(root, "inputs");
	if (in) {
		sj_str_or_null(in, "config_dir", s->config_dir, sizeof(s->config_dir));
		sj_str_or_null(in, "secrets_dir", s->secrets_dir, sizeof(s->secrets_dir));
		sj_str_or_null(in, "state_dir", s->state_dir, sizeof(s->state_dir));
	}
	cJSON *ck = cJSON_AddObjectToObject(root, "clock");
	if (ck) {
		const struct clock_check *c = &s->clock;
		sj_time(ck, "checked", c->checked_unix);
		sj_str_or_null(ck, "reference", c->reference, sizeof(c->reference));
		sj_str_or_null(ck, "reference_date", c->ref_date, sizeof(c->ref_date));
		if (c->have) {
			cJSON_AddNumberToObject(ck, "skew_seconds", c->skew_seconds);
			cJSON_AddBoolToObject(ck, "ok", c->ok);
		} else {
			cJSON_AddNullToObject(ck, "skew_seconds");
			cJSON_AddNullToObject(ck, "ok");
		}
		sj_str_or_null(ck, "error", c->error, sizeof(c->error));
	}
	cJSON *dn = sj_denied(&s->denied);
	if (dn)
		cJSON_AddItemToObject(root, "denied", dn);

	cJSON *au = cJSON_AddObjectToObject(root, "auth");
	if (au) {
		cJSON_AddBoolToObject(au, "enabled", s->auth_enabled);
		cJSON_AddNumberToObject(au, "keys_total", (double)s->keys_total);
		cJSON_AddNumberToObject(au, "keys_valid", (double)s->keys_valid);
		bool have = s->have_key_expiry && s->newest_key_expiry_unix > 0;
		double left = have ? floor(s->newest_key_expiry_unix - now) : 0;
		if (have) {
			sj_time(au, "newest_key_expires", s->newest_key_expiry_unix);
			cJSON_AddNumberToObject(au, "expires_in_seconds", left);
		} else {
			cJSON_AddNullToObject(au, "newest_key_expires");
			cJSON_AddNullToObject(au, "expires_in_seconds");
		}
		char warn[160] = "";
		if (s->auth_enabled && (!have || s->keys_valid == 0))
			snprintf(warn, sizeof(warn), "no valid API key: every agent is refused (407)");
		else if (s->auth_enabled && left < STATUSJSON_KEY_WARN_DAYS * 86400.0)
			snprintf(warn, sizeof(warn), "the newest API key expires in %.1f days: issue a new key",
			         left / 86400.0);
		sj_str_or_null(au, "warning", warn, sizeof(warn));
		sj_str_or_null(au, "error", s->keys_error, sizeof(s->keys_error));
	}

	cJSON *sv = cJSON_AddObjectToObject(root, "state_volume");
	if (sv && s->have_state_volume) {
		cJSON_AddBoolToObject(sv, "full", s->state_full);
		cJSON_AddNumberToObject(sv, "free_bytes", (double)s->state_free_bytes);
		cJSON_AddNumberToObject(sv, "total_bytes", (double)s->state_total_bytes);
	}

	statusjson_cache(root, &s->cache);

	char *text = cJSON_Print(root);
	cJSON_Delete(root);
	return text;
}
