/*
 * whitelist: entry normalization, folding and the most-specific route lookup.
 * Whatever leaves wl_normalize() reaches squid.conf and dstdomain files, so it
 * admits only [a-z0-9_-] labels, dots, and canonical IP literals: nothing else
 * (space, '#', quote, newline) can ever be rendered.
 */
#include "whitelist.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const via_names[WL_VIA_COUNT] = {"direct", "upstream", "tunnel"};

const char *wl_via_name(enum wl_via via)
{
	return (unsigned)via < WL_VIA_COUNT ? via_names[via] : "?";
}

int wl_via_parse(const char *s, enum wl_via *out)
{
	for (int i = 0; i < WL_VIA_COUNT; i++) {
		if (strcmp(s, via_names[i]) == 0) {
			*out = (enum wl_via)i;
			return 0;
		}
	}
	return -1;
}

const char *wl_kind_name(enum wl_kind kind)
{
	switch (kind) {
	case WL_EXACT:
		return "exact";
	case WL_WILD:
		return "wildcard";
	case WL_IP:
		return "ip";
	}
	return "?";
}

/* RFC 3492 decoder, used only to prove that an xn-- label is valid punycode
 * that decodes to at least one non-ASCII code point. */
static int punycode_valid(const char *in, size_t len)
{
	enum { BASE = 36, TMIN = 1, TMAX = 26, SKEW = 38, DAMP = 700, IBIAS = 72, IN = 128 };
	uint32_t n = IN, i = 0, bias = IBIAS, out = 0;
	bool non_ascii = false;
	size_t b = 0;
	for (size_t j = 0; j < len; j++)
		if (in[j] == '-')
			b = j;
	out = (uint32_t)b;
	size_t pos = b > 0 ? b + 1 : 0;
	if (pos >= len)
		return 0; /* nothing encoded: "xn--abc-" is not punycode */
	while (pos < len) {
		uint32_t oldi = i, w = 1;
		for (uint32_t k = BASE;; k += BASE) {
			if (pos >= len)
				return 0;
			char c = in[pos++];
			uint32_t digit;
			if (c >= 'a' && c <= 'z')
				digit = (uint32_t)(c - 'a');
			else if (c >= '0' && c <= '9')
				digit = (uint32_t)(c - '0' + 26);
			else
				return 0;
			if (digit > (UINT32_MAX - i) / w)
				return 0;
			i += digit * w;
			uint32_t t = k <= bias ? TMIN : (k >= bias + TMAX ? TMAX : k - bias);
			if (digit < t)
				break;
			if (w > UINT32_MAX / (BASE - t))
				return 0;
			w *= BASE - t;
		}
		/* bias adaptation */
		uint32_t delta = oldi == 0 ? (i - oldi) / DAMP : (i - oldi) / 2;
		delta += delta / (out + 1);
		uint32_t k = 0;
		while (delta > ((BASE - TMIN) * TMAX) / 2) {
			delta /= BASE - TMIN;
			k += BASE;
		}
		bias = k + (BASE - TMIN + 1) * delta / (delta + SKEW);
		if (i / (out + 1) > UINT32_MAX - n)
			return 0;
		n += i / (out + 1);
		i %= (out + 1);
		if (n > 0x10FFFF || (n >= 0xD800 && n <= 0xDFFF))
			return 0;
		if (n >= 0x80)
			non_ascii = true;
		out++;
		i++;
	}
	return non_ascii ? 1 : 0;
}

/* Validates a lower-cased host name; returns NULL or the reason it is bad. */
static const char *hostname_problem(const char *name)
{
	size_t len = strlen(name);
	if (len == 0)
		return "empty name";
	if (len > WL_NAME_MAX)
		return "name longer than 253 bytes";
	const char *label = name;
	bool last_numeric = true;
	for (const char *p = name;; p++) {
		if (*p == '.' || *p == '\0') {
			size_t ll = (size_t)(p - label);
			if (ll == 0)
				return "empty label";
			if (ll > 63)
				return "label longer than 63 bytes";
			if (label[0] == '-' || label[ll - 1] == '-')
				return "label starts or ends with '-'";
			if (ll >= 4 && memcmp(label, "xn--", 4) == 0 && !punycode_valid(label + 4, ll - 4))
				return "invalid punycode label";
			last_numeric = true;
			for (size_t k = 0; k < ll; k++)
				if (!isdigit((unsigned char)label[k]))
					last_numeric = false;
			if (*p == '\0')
				break;
			label = p + 1;
			continue;
		}
		unsigned char c = (unsigned char)*p;
		if (c >= 0x80)
			return "non-ASCII character (enter the punycode xn-- form)";
		if (c == '*')
			return "'*' is allowed only as a leading '*.'";
		if (c < 0x20 || c == 0x7f)
			return "control character";
		if (c == ' ' || c == '\t')
			return "whitespace";
		if (!(isalnum(c) || c == '-' || c == '_'))
			return "character not allowed in a host name";
	}
	if (last_numeric)
		return "numeric top-level label but not an IP address";
	return NULL;
}

/* Canonical text of an IP literal, or -1 if s is not one. */
static int ip_canonical(const char *s, char *out, size_t outlen)
{
	unsigned char buf[16];
	char tmp[64];
	size_t len = strlen(s);
	if (len >= 2 && s[0] == '[' && s[len - 1] == ']') {
		if (len - 2 >= sizeof(tmp))
			return -1;
		memcpy(tmp, s + 1, len - 2);
		tmp[len - 2] = '\0';
		s = tmp;
	}
	if (inet_pton(AF_INET, s, buf) == 1)
		return inet_ntop(AF_INET, buf, out, (socklen_t)outlen) ? 0 : -1;
	if (inet_pton(AF_INET6, s, buf) == 1)
		return inet_ntop(AF_INET6, buf, out, (socklen_t)outlen) ? 0 : -1;
	return -1;
}

/* Reduces "scheme://[user@]host[:port][/path]" to host in buf; -1 if malformed. */
static int url_host(const char *raw, char *buf, size_t buflen)
{
	const char *p = strstr(raw, "://");
	if (p == NULL)
		return -1;
	for (const char *s = raw; s < p; s++)
		if (!(isalpha((unsigned char)*s) || *s == '+' || *s == '-' || *s == '.'))
			return -1;
	p += 3;
	const char *end = p + strcspn(p, "/?#");
	const char *at = memchr(p, '@', (size_t)(end - p));
	if (at)
		p = at + 1;
	const char *hend;
	if (*p == '[') {
		const char *rb = memchr(p, ']', (size_t)(end - p));
		if (rb == NULL)
			return -1;
		hend = rb + 1;
	} else {
		hend = memchr(p, ':', (size_t)(end - p));
		if (hend == NULL)
			hend = end;
	}
	size_t hl = (size_t)(hend - p);
	if (hl == 0 || hl >= buflen)
		return -1;
	memcpy(buf, p, hl);
	buf[hl] = '\0';
	return 0;
}

enum wl_norm wl_normalize(const char *raw, char *out, enum wl_kind *kind, char *note, size_t notelen)
{
	char buf[WL_NAME_MAX + 16];
	enum wl_norm result = WL_NORM_OK;
	note[0] = '\0';

	/* Control characters, whitespace and quotes are rejected before anything else
	 * looks at the entry: they are what would inject into squid.conf. */
	for (const unsigned char *p = (const unsigned char *)raw; *p; p++) {
		if (*p < 0x20 || *p == 0x7f) {
			snprintf(note, notelen, "control character");
			return WL_NORM_REJECT;
		}
		if (*p == ' ') {
			snprintf(note, notelen, "whitespace");
			return WL_NORM_REJECT;
		}
		if (*p == '"' || *p == '\'' || *p == '`' || *p == '\\') {
			snprintf(note, notelen, "quote or backslash");
			return WL_NORM_REJECT;
		}
	}
	if (strstr(raw, "://")) {
		if (url_host(raw, buf, sizeof(buf)) < 0) {
			snprintf(note, notelen, "malformed URL");
			return WL_NORM_REJECT;
		}
		snprintf(note, notelen, "URL reduced to its host");
		result = WL_NORM_CHANGED;
	} else {
		if (strlen(raw) >= sizeof(buf)) {
			snprintf(note, notelen, "name longer than 253 bytes");
			return WL_NORM_REJECT;
		}
		snprintf(buf, sizeof(buf), "%s", raw);
	}

	if (ip_canonical(buf, out, WL_NAME_MAX + 1) == 0) {
		*kind = WL_IP;
		return result;
	}

	for (char *p = buf; *p; p++)
		*p = (char)tolower((unsigned char)*p);
	size_t len = strlen(buf);
	if (len > 1 && buf[len - 1] == '.')
		buf[--len] = '\0';

	const char *name = buf;
	*kind = WL_EXACT;
	if (strncmp(name, "*.", 2) == 0) {
		name += 2;
		*kind = WL_WILD;
	} else if (name[0] == '.') {
		name += 1;
		*kind = WL_WILD;
	}
	const char *why = hostname_problem(name);
	if (why) {
		snprintf(note, notelen, "%s", why);
		return WL_NORM_REJECT;
	}
	if (*kind == WL_WILD && strchr(name, '.') == NULL) {
		/* "*.com" would open a whole top-level domain: never what a customer means. */
		snprintf(note, notelen, "wildcard over a top-level domain");
		return WL_NORM_REJECT;
	}
	memcpy(out, name, strlen(name) + 1); /* hostname_problem() bounded it to 253 bytes */
	return result;
}

int wl_host_normalize(const char *host, char *out, size_t outlen, bool *is_ip)
{
	if (ip_canonical(host, out, outlen) == 0) {
		*is_ip = true;
		return 0;
	}
	size_t len = strlen(host);
	if (len == 0 || len >= outlen)
		return -1;
	/* The name is judged exactly as Squid will resolve it: nothing is decoded, and a byte
	 * that cannot be in a host name (a '%' escape, a space, a control byte) is no match
	 * for any entry, so it is refused rather than interpreted. */
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)host[i];
		if (!isalnum(ch) && ch != '.' && ch != '-' && ch != '_')
			return -1;
		if (ch == '.' && (i == 0 || host[i - 1] == '.')) /* an empty label */
			return -1;
		out[i] = (char)tolower(ch);
	}
	if (len > 1 && out[len - 1] == '.')
		len--;
	out[len] = '\0';
	*is_ip = false;
	return 0;
}

void wl_policy_init(struct wl_policy *p, enum wl_via default_via)
{
	memset(p, 0, sizeof(*p));
	p->default_via = default_via;
	htab_init(&p->exact);
	htab_init(&p->wild);
	htab_init(&p->route_exact);
	htab_init(&p->route_wild);
}

static void patterns_free(struct wl_pattern *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i].name);
	free(v);
}

void wl_policy_free(struct wl_policy *p)
{
	patterns_free(p->entries, p->n_entries);
	patterns_free(p->routes, p->n_routes);
	htab_free(&p->exact);
	htab_free(&p->wild);
	htab_free(&p->route_exact);
	htab_free(&p->route_wild);
	memset(p, 0, sizeof(*p));
}

static int patterns_push(struct wl_pattern **v, size_t *n, size_t *cap, const char *name, enum wl_kind kind,
                         enum wl_via via)
{
	if (*n == *cap) {
		size_t ncap = *cap ? *cap * 2 : 64;
		struct wl_pattern *nv = realloc(*v, ncap * sizeof(**v));
		if (nv == NULL)
			return -1;
		*v = nv;
		*cap = ncap;
	}
	char *copy = strdup(name);
	if (copy == NULL)
		return -1;
	(*v)[(*n)++] = (struct wl_pattern){.name = copy, .kind = kind, .via = via};
	return 0;
}

int wl_policy_add(struct wl_policy *p, const char *name, enum wl_kind kind)
{
	return patterns_push(&p->entries, &p->n_entries, &p->cap_entries, name, kind, WL_VIA_DIRECT);
}

int wl_policy_add_route(struct wl_policy *p, const char *name, enum wl_kind kind, enum wl_via via)
{
	return patterns_push(&p->routes, &p->n_routes, &p->cap_routes, name, kind, via);
}

/* Is name, or (when include_self is false) a strict parent of it, a wildcard entry? */
static bool covered_by_wild(const struct htab *wild, const char *name, bool include_self)
{
	const char *s = name;
	if (!include_self) {
		s = strchr(s, '.');
		if (s == NULL)
			return false;
		s++;
	}
	for (;;) {
		if (htab_get(wild, s, strlen(s), NULL))
			return true;
		s = strchr(s, '.');
		if (s == NULL)
			return false;
		s++;
	}
}

static int pattern_cmp(const void *a, const void *b)
{
	const struct wl_pattern *x = a, *y = b;
	int c = strcmp(x->name, y->name);
	return c ? c : (int)x->kind - (int)y->kind;
}

int wl_policy_index(struct wl_policy *p)
{
	for (size_t i = 0; i < p->n_entries; i++) {
		struct wl_pattern *e = &p->entries[i];
		struct htab *t = e->kind == WL_WILD ? &p->wild : &p->exact;
		if (htab_put(t, e->name, strlen(e->name), (int)e->kind) < 0)
			return -1;
	}
	for (size_t i = 0; i < p->n_routes; i++) {
		struct wl_pattern *r = &p->routes[i];
		struct htab *t = r->kind == WL_WILD ? &p->route_wild : &p->route_exact;
		/* htab_put keeps the first value: the first listed route wins a tie. */
		if (htab_put(t, r->name, strlen(r->name), (int)r->via) < 0)
			return -1;
	}
	return 0;
}

int wl_policy_finish(struct wl_policy *p)
{
	/* Pass 1: the wildcard set. Pass 2: keep what no wildcard covers, once. */
	for (size_t i = 0; i < p->n_entries; i++) {
		struct wl_pattern *e = &p->entries[i];
		if (e->kind == WL_WILD && htab_put(&p->wild, e->name, strlen(e->name), WL_WILD) < 0)
			return -1;
	}
	/* Names are freed only after the pass: the wildcard set and `seen` point at entries'
	 * names, and a wildcard covered by a wider one is dropped while still in the set. */
	bool *dropped = calloc(p->n_entries ? p->n_entries : 1, sizeof(*dropped));
	if (dropped == NULL)
		return -1;
	struct htab seen;
	htab_init(&seen);
	for (size_t i = 0; i < p->n_entries; i++) {
		struct wl_pattern *e = &p->entries[i];
		bool drop;
		if (e->kind == WL_IP)
			drop = htab_put(&seen, e->name, strlen(e->name), 0) == 0;
		else if (e->kind == WL_WILD)
			drop = covered_by_wild(&p->wild, e->name, false) ||
			       htab_put(&seen, e->name, strlen(e->name), 1) == 0;
		else
			drop = covered_by_wild(&p->wild, e->name, true) ||
			       htab_put(&seen, e->name, strlen(e->name), 0) == 0;
		dropped[i] = drop;
	}
	htab_free(&seen);
	htab_free(&p->wild);
	htab_init(&p->wild);
	size_t kept = 0;
	for (size_t i = 0; i < p->n_entries; i++) {
		if (dropped[i]) {
			free(p->entries[i].name);
			p->n_folded++;
		} else {
			p->entries[kept++] = p->entries[i];
		}
	}
	free(dropped);
	p->n_entries = kept;
	if (p->n_entries > 1)
		qsort(p->entries, p->n_entries, sizeof(*p->entries), pattern_cmp);
	return wl_policy_index(p);
}

bool wl_lookup(const struct wl_policy *p, const char *host, bool is_ip, enum wl_via *via)
{
	size_t len = strlen(host);
	bool allowed = htab_get(&p->exact, host, len, NULL);
	if (!allowed && !is_ip) {
		for (const char *s = host; s; s = strchr(s, '.') ? strchr(s, '.') + 1 : NULL) {
			if (htab_get(&p->wild, s, strlen(s), NULL)) {
				allowed = true;
				break;
			}
		}
	}
	if (allowed && via)
		*via = wl_route(p, host, is_ip);
	return allowed;
}

enum wl_via wl_route(const struct wl_policy *p, const char *host, bool is_ip)
{
	int v;
	/* Most specific first: the exact host, then "*.host" (it covers the apex),
	 * then each shorter suffix. */
	if (htab_get(&p->route_exact, host, strlen(host), &v))
		return (enum wl_via)v;
	if (!is_ip) {
		for (const char *s = host; s; s = strchr(s, '.') ? strchr(s, '.') + 1 : NULL)
			if (htab_get(&p->route_wild, s, strlen(s), &v))
				return (enum wl_via)v;
	}
	return p->default_via;
}
