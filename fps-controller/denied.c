/*
 * denied: Space-Saving table of denied destinations, its file form, and the
 * controller's merge of the helpers' files (see denied.h for the bound).
 */
#include "denied.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fsio.h"
#include "log.h"

#define DENIED_FILE_MAX (4u << 20) /* a full table is about 400 KB of text */

static unsigned denied_hash(const char *host, unsigned port)
{
	unsigned h = 2166136261u;
	for (const unsigned char *p = (const unsigned char *)host; *p; p++) {
		h ^= *p;
		h *= 16777619u;
	}
	h ^= port;
	h *= 16777619u;
	return h;
}

int denied_init(struct denied_table *t, size_t cap, double since)
{
	memset(t, 0, sizeof(*t));
	t->e = calloc(cap, sizeof(*t->e));
	t->nbuckets = cap * 2;
	t->buckets = malloc(t->nbuckets * sizeof(*t->buckets));
	if (t->e == NULL || t->buckets == NULL) {
		denied_free(t);
		return -1;
	}
	t->cap = cap;
	denied_clear(t, since);
	return 0;
}

void denied_free(struct denied_table *t)
{
	free(t->e);
	free(t->buckets);
	memset(t, 0, sizeof(*t));
}

void denied_clear(struct denied_table *t, double since)
{
	for (size_t i = 0; i < t->nbuckets; i++)
		t->buckets[i] = -1;
	t->n = 0;
	t->total = 0;
	t->evicted = 0;
	t->since = since;
	t->cursor = 0;
	t->min_hint = 0;
	t->min_valid = false;
}

static void denied_recompute_min(struct denied_table *t)
{
	unsigned long long m = t->e[0].count;
	for (size_t i = 1; i < t->n; i++)
		if (t->e[i].count < m)
			m = t->e[i].count;
	t->min_hint = m;
	t->min_valid = true;
}

/* An entry with the smallest count (see min_hint in denied.h). */
static int denied_victim(struct denied_table *t)
{
	if (!t->min_valid)
		denied_recompute_min(t);
	for (size_t lap = 0;; lap++) {
		if (lap == t->n) {
			denied_recompute_min(t);
			lap = 0;
		}
		size_t i = t->cursor;
		t->cursor = (t->cursor + 1) % t->n;
		if (t->e[i].count == t->min_hint)
			return (int)i;
	}
}

static int denied_find(const struct denied_table *t, const char *host, unsigned port, unsigned h)
{
	for (int i = t->buckets[h % t->nbuckets]; i >= 0; i = t->e[i].next)
		if (t->e[i].port == port && strcmp(t->e[i].host, host) == 0)
			return i;
	return -1;
}

static void denied_unlink(struct denied_table *t, int idx)
{
	struct denied_entry *d = &t->e[idx];
	int *pp = &t->buckets[denied_hash(d->host, d->port) % t->nbuckets];
	while (*pp >= 0 && *pp != idx)
		pp = &t->e[*pp].next;
	if (*pp == idx)
		*pp = d->next;
}

static void denied_add_product(struct denied_entry *d, const char *product)
{
	if (product == NULL || product[0] == '\0')
		return;
	for (unsigned i = 0; i < d->n_products; i++)
		if (strcmp(d->products[i], product) == 0)
			return;
	if (d->n_products < DENIED_PRODUCTS)
		snprintf(d->products[d->n_products++], sizeof(d->products[0]), "%s", product);
	else
		d->more_products = true;
}

/* The entry for host:port, created (or taken over from the smallest) if absent. */
static struct denied_entry *denied_slot(struct denied_table *t, const char *host, unsigned port, double first)
{
	if (t->cap == 0 || strlen(host) > WL_NAME_MAX)
		return NULL;
	unsigned h = denied_hash(host, port);
	int idx = denied_find(t, host, port, h);
	if (idx >= 0)
		return &t->e[idx];
	unsigned long long inherited = 0;
	if (t->n < t->cap) {
		idx = (int)t->n++;
	} else {
		idx = denied_victim(t);
		inherited = t->e[idx].count;
		denied_unlink(t, idx);
		t->evicted++;
	}
	struct denied_entry *d = &t->e[idx];
	memset(d, 0, sizeof(*d));
	snprintf(d->host, sizeof(d->host), "%s", host);
	d->port = port;
	d->count = inherited;
	d->error = inherited;
	d->first_seen = first;
	unsigned b = h % t->nbuckets;
	d->next = t->buckets[b];
	t->buckets[b] = idx;
	return d;
}

void denied_add(struct denied_table *t, const char *host, unsigned port, const char *product, double now,
                unsigned long long n, bool would_deny)
{
	t->total += n;
	struct denied_entry *d = denied_slot(t, host, port, now);
	if (d == NULL)
		return;
	d->count += n;
	if (now > d->last_seen)
		d->last_seen = now;
	d->would_deny |= would_deny;
	denied_add_product(d, product);
}

void denied_merge(struct denied_table *dst, const struct denied_table *src)
{
	for (size_t i = 0; i < src->n; i++) {
		const struct denied_entry *s = &src->e[i];
		struct denied_entry *d = denied_slot(dst, s->host, s->port, s->first_seen);
		if (d == NULL)
			continue;
		d->count += s->count;
		d->error += s->error;
		if (s->first_seen > 0 && (d->first_seen == 0 || s->first_seen < d->first_seen))
			d->first_seen = s->first_seen;
		if (s->last_seen > d->last_seen)
			d->last_seen = s->last_seen;
		d->would_deny |= s->would_deny;
		for (unsigned k = 0; k < s->n_products; k++)
			denied_add_product(d, s->products[k]);
		d->more_products |= s->more_products;
	}
	dst->total += src->total;
	dst->evicted += src->evicted;
	if (src->since > 0 && (dst->since == 0 || src->since < dst->since))
		dst->since = src->since;
}

static int denied_cmp(const void *a, const void *b)
{
	const struct denied_entry *x = a, *y = b;
	if (x->count != y->count)
		return x->count > y->count ? -1 : 1;
	int c = strcmp(x->host, y->host);
	if (c != 0)
		return c;
	return x->port < y->port ? -1 : x->port > y->port;
}

size_t denied_top(const struct denied_table *t, struct denied_entry *out, size_t max)
{
	if (t->n == 0 || max == 0)
		return 0;
	struct denied_entry *all = malloc(t->n * sizeof(*all));
	if (all == NULL)
		return 0;
	memcpy(all, t->e, t->n * sizeof(*all));
	qsort(all, t->n, sizeof(*all), denied_cmp);
	size_t n = t->n < max ? t->n : max;
	memcpy(out, all, n * sizeof(*out));
	free(all);
	return n;
}

static bool is_hex(char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* Is s (36 bytes at least) a GUID 8-4-4-4-12? */
static bool is_guid(const char *s)
{
	for (int i = 0; i < 36; i++) {
		bool dash = i == 8 || i == 13 || i == 18 || i == 23;
		if (dash ? s[i] != '-' : !is_hex(s[i]))
			return false;
	}
	return s[36] == '\0';
}

void denied_product(const char *user, char *out, size_t len)
{
	if (len == 0)
		return;
	out[0] = '\0';
	if (user == NULL || user[0] == '\0' || strcmp(user, "-") == 0)
		return;
	size_t n = strlen(user);
	if (n > 36 && is_guid(user + n - 36))
		n -= 36;
	else if (strchr(user, '-') != NULL)
		n = (size_t)(strchr(user, '-') - user);
	while (n > 0 && user[n - 1] == '-')
		n--;
	if (n > DENIED_PRODUCT_MAX)
		n = DENIED_PRODUCT_MAX;
	if (n >= len)
		n = len - 1;
	for (size_t i = 0; i < n; i++) {
		char c = user[i];
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
		          c == '_' || c == '-';
		out[i] = ok ? c : '_';
	}
	out[n] = '\0';
}

int denied_render(const struct denied_table *t, int pid, double start, unsigned long long generation, char **out,
                  size_t *len)
{
	char *buf = NULL;
	size_t blen = 0;
	FILE *f = open_memstream(&buf, &blen);
	if (f == NULL)
		return -1;
	fprintf(f, "fps-denied 1\npid %d start %.0f generation %llu\ntotal %llu evicted %llu since %.3f\n", pid, start,
	        generation, t->total, t->evicted, t->since);
	for (size_t i = 0; i < t->n; i++) {
		const struct denied_entry *d = &t->e[i];
		fprintf(f, "D %llu %llu %.3f %.3f %u %s ", d->count, d->error, d->first_seen, d->last_seen, d->port,
		        d->host);
		if (d->n_products == 0)
			fputc('-', f);
		for (unsigned k = 0; k < d->n_products; k++)
			fprintf(f, "%s%s", k ? "," : "", d->products[k]);
		fprintf(f, "%s%s\n", d->more_products ? "+" : "", d->would_deny ? " R" : "");
	}
	fputs("end\n", f);
	if (fclose(f) != 0) {
		free(buf);
		return -1;
	}
	*out = buf;
	*len = blen;
	return 0;
}

static void denied_parse_products(struct denied_entry *d, char *list)
{
	size_t n = strlen(list);
	if (n > 0 && list[n - 1] == '+') {
		d->more_products = true;
		list[n - 1] = '\0';
	}
	if (strcmp(list, "-") == 0 || list[0] == '\0')
		return;
	char *save = NULL;
	for (char *p = strtok_r(list, ",", &save); p; p = strtok_r(NULL, ",", &save))
		denied_add_product(d, p);
}

int denied_parse(const char *text, size_t len, const char *path, struct denied_table *t, int *pid, struct fps_err *e)
{
	if (denied_init(t, DENIED_CAP, 0) < 0)
		return err_set(e, path, 0, 0, "out of memory");
	char *copy = strndup(text, len);
	if (copy == NULL) {
		denied_free(t);
		return err_set(e, path, 0, 0, "out of memory");
	}
	int line = 0, rc = -1;
	bool ended = false;
	char *save = NULL;
	for (char *l = strtok_r(copy, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
		line++;
		double start, since;
		unsigned long long gen;
		if (line == 1) {
			if (strcmp(l, "fps-denied 1") != 0) {
				err_set(e, path, line, 1, "not an fps-denied 1 file");
				goto out;
			}
		} else if (line == 2) {
			if (sscanf(l, "pid %d start %lf generation %llu", pid, &start, &gen) != 3) {
				err_set(e, path, line, 1, "bad pid line");
				goto out;
			}
		} else if (line == 3) {
			if (sscanf(l, "total %llu evicted %llu since %lf", &t->total, &t->evicted, &since) != 3) {
				err_set(e, path, line, 1, "bad total line");
				goto out;
			}
			t->since = since;
		} else if (strcmp(l, "end") == 0) {
			ended = true;
			break;
		} else {
			unsigned long long count, error;
			double first, last;
			unsigned port;
			char host[WL_NAME_MAX + 2], products[200], flag[4] = "";
			int k = sscanf(l, "D %llu %llu %lf %lf %u %254s %199s %3s", &count, &error, &first, &last,
			               &port, host, products, flag);
			if (k < 7 || strlen(host) > WL_NAME_MAX || port > 65535) {
				err_set(e, path, line, 1, "bad entry line");
				goto out;
			}
			struct denied_entry *d = denied_slot(t, host, port, first);
			if (d == NULL)
				continue;
			d->count += count;
			d->error += error;
			d->last_seen = last;
			d->would_deny = strcmp(flag, "R") == 0;
			denied_parse_products(d, products);
		}
	}
	if (!ended)
		err_set(e, path, line, 0, "truncated file (no 'end' line)");
	else
		rc = 0;
out:
	free(copy);
	if (rc < 0)
		denied_free(t);
	return rc;
}

int denied_write(const char *dir, const struct denied_table *t, int pid, double start, unsigned long long generation)
{
	char *text = NULL;
	size_t len = 0;
	if (denied_render(t, pid, start, generation, &text, &len) < 0)
		return -1;
	char path[4200], tmp[4200];
	snprintf(path, sizeof(path), "%s/" DENIED_FILE_PREFIX "%d" DENIED_FILE_SUFFIX, dir, pid);
	snprintf(tmp, sizeof(tmp), "%s/." DENIED_FILE_PREFIX "%d.tmp", dir, pid);
	int rc = -1;
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
	if (fd >= 0) {
		size_t off = 0;
		while (off < len) {
			ssize_t n = write(fd, text + off, len - off);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0)
				break;
			off += (size_t)n;
		}
		if (close(fd) == 0 && off == len && rename(tmp, path) == 0)
			rc = 0;
		else
			unlink(tmp);
	}
	free(text);
	return rc;
}

/* ---- the controller's merge -------------------------------------------------------------- */

static bool pid_alive(int pid)
{
	return pid > 0 && (kill(pid, 0) == 0 || errno == EPERM);
}

/* pid from "acl-<pid>.denied" or ".acl-<pid>.tmp"; 0 if the name is neither. */
static int denied_file_pid(const char *name, bool *tmp)
{
	*tmp = name[0] == '.';
	const char *p = name + (*tmp ? 1 : 0);
	size_t pl = strlen(DENIED_FILE_PREFIX);
	if (strncmp(p, DENIED_FILE_PREFIX, pl) != 0)
		return 0;
	char *end = NULL;
	long pid = strtol(p + pl, &end, 10);
	if (end == p + pl || pid <= 0 || pid > 1 << 22)
		return 0;
	if (strcmp(end, *tmp ? ".tmp" : DENIED_FILE_SUFFIX) != 0)
		return 0;
	return (int)pid;
}

int denied_collector_init(struct denied_collector *c, const char *dir, double now)
{
	memset(c, 0, sizeof(*c));
	snprintf(c->dir, sizeof(c->dir), "%s", dir);
	if (denied_init(&c->retired, DENIED_CAP, now) < 0 || denied_init(&c->view, DENIED_CAP, now) < 0)
		return -1;
	/* Counts do not survive a controller restart: files of helpers that are gone
	 * (the previous run's) are removed; a live helper's (sidecar Squid) is kept. */
	DIR *d = opendir(dir);
	if (d == NULL)
		return 0;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		bool tmp;
		int pid = denied_file_pid(de->d_name, &tmp);
		if (pid > 0 && !pid_alive(pid)) {
			char path[4400];
			snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
			unlink(path);
		}
	}
	closedir(d);
	return 0;
}

void denied_collector_free(struct denied_collector *c)
{
	denied_free(&c->retired);
	denied_free(&c->view);
}

void denied_collect(struct denied_collector *c)
{
	double since = c->retired.since;
	denied_clear(&c->view, since);
	denied_merge(&c->view, &c->retired);
	c->view.since = since;
	DIR *d = opendir(c->dir);
	if (d == NULL)
		return;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		bool tmp;
		int pid = denied_file_pid(de->d_name, &tmp);
		if (pid == 0)
			continue;
		char path[4400];
		snprintf(path, sizeof(path), "%s/%s", c->dir, de->d_name);
		/* Liveness first: a helper that is gone wrote its last file before it exited. */
		bool alive = pid_alive(pid);
		if (tmp) {
			if (!alive)
				unlink(path);
			continue;
		}
		char *text = NULL;
		size_t len = 0;
		struct fps_err e;
		err_clear(&e);
		struct denied_table t;
		int fpid = 0;
		if (fsio_read(path, DENIED_FILE_MAX, &text, &len, &e) < 0 ||
		    denied_parse(text, len, path, &t, &fpid, &e) < 0) {
			char buf[1600];
			if (!alive) {
				log_warn("denied report: dropping unreadable %s: %s", path,
				         err_str(&e, buf, sizeof(buf)));
				unlink(path);
			}
			free(text);
			continue;
		}
		free(text);
		if (alive) {
			denied_merge(&c->view, &t);
		} else {
			denied_merge(&c->retired, &t);
			denied_merge(&c->view, &t);
			unlink(path);
		}
		denied_free(&t);
	}
	closedir(d);
	c->view.since = since;
}
