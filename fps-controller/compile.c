/*
 * compile: the pure stage between config and rendering (see compile.h).
 */
#include "compile.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void visible_copy(char *dst, size_t dstlen, const char *src)
{
	size_t o = 0;
	for (const unsigned char *p = (const unsigned char *)src; *p && o + 5 < dstlen; p++) {
		if (*p < 0x20 || *p == 0x7f || *p == '\\' || *p >= 0x80)
			o += (size_t)snprintf(dst + o, dstlen - o, "\\x%02x", *p);
		else
			dst[o++] = (char)*p;
	}
	dst[o] = '\0';
}

static int note_push(struct compile_note **v, size_t *n, const struct cfg_entry *en, const char *reason)
{
	/* Capacity doubles (grown when *n is 0 or a power of two): 12,000 notes for 100,000 entries
	 * grown one at a time copied gigabytes under ASan, whose realloc always copies. */
	struct compile_note *nv = *v;
	if ((*n & (*n - 1)) == 0) {
		nv = realloc(*v, (*n ? 2 * *n : 1) * sizeof(*nv));
		if (nv == NULL)
			return -1;
		*v = nv;
	}
	struct compile_note *x = &nv[(*n)++];
	memset(x, 0, sizeof(*x));
	snprintf(x->file, sizeof(x->file), "%s", en->file);
	x->line = en->line;
	x->col = en->col;
	x->index = en->index;
	visible_copy(x->entry, sizeof(x->entry), en->raw);
	snprintf(x->reason, sizeof(x->reason), "%s", reason);
	return 0;
}

void compile_note_str(const struct compile_note *n, char *buf, size_t len)
{
	if (n->line > 0)
		snprintf(buf, len, "%s:%d:%d: entry '%s': %s", n->file, n->line, n->col, n->entry, n->reason);
	else
		snprintf(buf, len, "%s: entry #%d '%s': %s", n->file, n->index, n->entry, n->reason);
}

int compile_config(const struct fps_config *c, struct compiled *out, struct fps_err *e)
{
	memset(out, 0, sizeof(*out));
	wl_policy_init(&out->policy, c->default_route);
	out->policy.report_mode = c->whitelist_report;
	/* Route order decides ties: fps.yaml's routes first, then per-entry "via"
	 * from whitelist.json, each in the order written. */
	for (size_t i = 0; i < c->n_routes; i++)
		if (wl_policy_add_route(&out->policy, c->routes[i].name, c->routes[i].kind, c->routes[i].via) < 0)
			goto oom;
	for (size_t i = 0; i < c->n_entries; i++) {
		const struct cfg_entry *en = &c->entries[i];
		char name[WL_NAME_MAX + 1], note[96];
		enum wl_kind kind;
		enum wl_norm r = wl_normalize(en->raw, name, &kind, note, sizeof(note));
		if (r == WL_NORM_REJECT) {
			if (note_push(&out->rejected, &out->n_rejected, en, note) < 0)
				goto oom;
			continue;
		}
		if (r == WL_NORM_CHANGED) {
			char msg[sizeof(note) + WL_NAME_MAX + 8];
			snprintf(msg, sizeof(msg), "%s: %s", note, name);
			if (note_push(&out->changed, &out->n_changed, en, msg) < 0)
				goto oom;
		}
		if (wl_policy_add(&out->policy, name, kind) < 0)
			goto oom;
		if (en->has_via && wl_policy_add_route(&out->policy, name, kind, en->via) < 0)
			goto oom;
	}
	if (wl_policy_finish(&out->policy) < 0)
		goto oom;
	for (size_t i = 0; i < out->policy.n_entries; i++) {
		const struct wl_pattern *p = &out->policy.entries[i];
		out->by_route[wl_route(&out->policy, p->name, p->kind == WL_IP)]++;
	}
	return 0;
oom:
	compile_free(out);
	return err_set(e, NULL, 0, 0, "out of memory compiling the whitelist");
}

void compile_free(struct compiled *out)
{
	wl_policy_free(&out->policy);
	free(out->rejected);
	free(out->changed);
	memset(out, 0, sizeof(*out));
}
