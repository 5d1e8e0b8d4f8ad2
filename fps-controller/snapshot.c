/*
 * snapshot: writer and strict reader of the fps-acl snapshot (format in snapshot.h).
 * A snapshot without its "end" line is refused: a reader must never act on half a list.
 */
#include "snapshot.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct sbuf {
	char *p;
	size_t len, cap;
};

static int sb_add(struct sbuf *b, const char *s1, const char *s2, const char *s3, const char *s4)
{
	const char *parts[] = {s1, s2, s3, s4};
	for (size_t i = 0; i < 4; i++) {
		if (parts[i] == NULL)
			continue;
		size_t l = strlen(parts[i]);
		if (b->len + l + 2 > b->cap) {
			size_t ncap = b->cap ? b->cap * 2 : 65536;
			while (ncap < b->len + l + 2)
				ncap *= 2;
			char *np = realloc(b->p, ncap);
			if (np == NULL)
				return -1;
			b->p = np;
			b->cap = ncap;
		}
		memcpy(b->p + b->len, parts[i], l);
		b->len += l;
		b->p[b->len++] = i == 3 || parts[i + 1] == NULL ? '\n' : ' ';
		if (b->p[b->len - 1] == '\n')
			break;
	}
	b->p[b->len] = '\0';
	return 0;
}

static enum wl_kind kind_of(const char *s, int *ok)
{
	*ok = 1;
	if (strcmp(s, "exact") == 0)
		return WL_EXACT;
	if (strcmp(s, "wildcard") == 0)
		return WL_WILD;
	if (strcmp(s, "ip") == 0)
		return WL_IP;
	*ok = 0;
	return WL_EXACT;
}

int snapshot_render(const struct wl_policy *p, unsigned long long generation, char **out, size_t *len)
{
	struct sbuf b = {0};
	char gen[32];
	snprintf(gen, sizeof(gen), "%llu", generation);
	int rc = sb_add(&b, "fps-acl-snapshot 1", NULL, NULL, NULL);
	rc |= sb_add(&b, "generation", gen, NULL, NULL);
	rc |= sb_add(&b, "default", wl_via_name(p->default_via), NULL, NULL);
	if (p->report_mode)
		rc |= sb_add(&b, "mode", "report", NULL, NULL);
	for (size_t i = 0; i < p->n_routes && rc == 0; i++)
		rc |=
		    sb_add(&b, "R", wl_via_name(p->routes[i].via), wl_kind_name(p->routes[i].kind), p->routes[i].name);
	for (size_t i = 0; i < p->n_entries && rc == 0; i++)
		rc |= sb_add(&b, "W", wl_kind_name(p->entries[i].kind), p->entries[i].name, NULL);
	rc |= sb_add(&b, "end", NULL, NULL, NULL);
	if (rc != 0) {
		free(b.p);
		return -1;
	}
	*out = b.p;
	*len = b.len;
	return 0;
}

int snapshot_parse(const char *text, size_t len, const char *path, struct wl_policy *p, unsigned long long *generation,
                   struct fps_err *e)
{
	wl_policy_init(p, WL_VIA_DIRECT);
	*generation = 0;
	int lineno = 0;
	bool ended = false, headed = false;
	const char *s = text, *end = text + len;
	while (s < end) {
		const char *nl = memchr(s, '\n', (size_t)(end - s));
		if (nl == NULL)
			break; /* an unterminated last line means a torn file */
		lineno++;
		char line[WL_NAME_MAX + 64];
		size_t ll = (size_t)(nl - s);
		if (ll >= sizeof(line)) {
			err_set(e, path, lineno, 1, "line too long");
			goto fail;
		}
		memcpy(line, s, ll);
		line[ll] = '\0';
		s = nl + 1;
		char *f[5] = {0};
		int nf = 0;
		for (char *tok = strtok(line, " "); tok && nf < 5; tok = strtok(NULL, " "))
			f[nf++] = tok;
		if (!headed) {
			if (nf != 2 || strcmp(f[0], "fps-acl-snapshot") != 0 || strcmp(f[1], "1") != 0) {
				err_set(e, path, lineno, 1, "not an fps-acl snapshot (version 1)");
				goto fail;
			}
			headed = true;
			continue;
		}
		int ok = 1;
		if (nf == 2 && strcmp(f[0], "generation") == 0) {
			*generation = strtoull(f[1], NULL, 10);
		} else if (nf == 2 && strcmp(f[0], "mode") == 0) {
			if (strcmp(f[1], "report") == 0)
				p->report_mode = true;
			else if (strcmp(f[1], "enforce") != 0)
				ok = 0;
		} else if (nf == 2 && strcmp(f[0], "default") == 0) {
			if (wl_via_parse(f[1], &p->default_via) < 0)
				ok = 0;
		} else if (nf == 3 && strcmp(f[0], "W") == 0) {
			enum wl_kind k = kind_of(f[1], &ok);
			if (ok && wl_policy_add(p, f[2], k) < 0)
				goto oom;
		} else if (nf == 4 && strcmp(f[0], "R") == 0) {
			enum wl_via via;
			enum wl_kind k = kind_of(f[2], &ok);
			if (ok && wl_via_parse(f[1], &via) == 0) {
				if (wl_policy_add_route(p, f[3], k, via) < 0)
					goto oom;
			} else {
				ok = 0;
			}
		} else if (nf == 1 && strcmp(f[0], "end") == 0) {
			ended = true;
			break;
		} else {
			ok = 0;
		}
		if (!ok) {
			err_set(e, path, lineno, 1, "malformed record");
			goto fail;
		}
	}
	if (!ended) {
		err_set(e, path, lineno, 0, "truncated snapshot (no 'end' line)");
		goto fail;
	}
	if (wl_policy_index(p) < 0)
		goto oom;
	return 0;
oom:
	err_set(e, path, lineno, 0, "out of memory");
fail:
	wl_policy_free(p);
	return -1;
}
