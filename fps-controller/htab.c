/*
 * htab: FNV-1a hashing with linear probing; the table doubles at 50% load.
 */
#include "htab.h"

#include <stdlib.h>
#include <string.h>

static unsigned int htab_hash(const char *s, size_t len)
{
	unsigned int h = 2166136261u;
	for (size_t i = 0; i < len; i++) {
		h ^= (unsigned char)s[i];
		h *= 16777619u;
	}
	return h;
}

void htab_init(struct htab *t)
{
	memset(t, 0, sizeof(*t));
}

void htab_free(struct htab *t)
{
	free(t->slots);
	memset(t, 0, sizeof(*t));
}

static int htab_grow(struct htab *t)
{
	size_t ncap = t->cap ? t->cap * 2 : 64;
	struct htab_slot *ns = calloc(ncap, sizeof(*ns));
	if (ns == NULL)
		return -1;
	for (size_t i = 0; i < t->cap; i++) {
		struct htab_slot *s = &t->slots[i];
		if (s->key == NULL)
			continue;
		size_t j = s->hash & (ncap - 1);
		while (ns[j].key != NULL)
			j = (j + 1) & (ncap - 1);
		ns[j] = *s;
	}
	free(t->slots);
	t->slots = ns;
	t->cap = ncap;
	return 0;
}

int htab_put(struct htab *t, const char *key, size_t keylen, int value)
{
	if ((t->count + 1) * 2 > t->cap && htab_grow(t) < 0)
		return -1;
	unsigned int h = htab_hash(key, keylen);
	size_t j = h & (t->cap - 1);
	while (t->slots[j].key != NULL) {
		struct htab_slot *s = &t->slots[j];
		if (s->hash == h && s->keylen == keylen && memcmp(s->key, key, keylen) == 0)
			return 0;
		j = (j + 1) & (t->cap - 1);
	}
	t->slots[j] = (struct htab_slot){.key = key, .keylen = keylen, .hash = h, .value = value};
	t->count++;
	return 1;
}

bool htab_get(const struct htab *t, const char *key, size_t keylen, int *value)
{
	if (t->cap == 0)
		return false;
	unsigned int h = htab_hash(key, keylen);
	size_t j = h & (t->cap - 1);
	while (t->slots[j].key != NULL) {
		const struct htab_slot *s = &t->slots[j];
		if (s->hash == h && s->keylen == keylen && memcmp(s->key, key, keylen) == 0) {
			if (value)
				*value = s->value;
			return true;
		}
		j = (j + 1) & (t->cap - 1);
	}
	return false;
}
