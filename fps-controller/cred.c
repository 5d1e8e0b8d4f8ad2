/*
 * cred: the credential scheme shipped products rely on (docs/agents.md). Nothing here does I/O except
 * cred_keys_load reading the file; key material never reaches an error message.
 */
#include "cred.h"

#include <cjson/cJSON.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fsio.h"

static bool cred_byte_ok(unsigned char c)
{
	return c >= 0x21 && c <= 0x7e && c != ':';
}

enum cred_result cred_check_user(const char *user, const struct cred_products *products)
{
	size_t len = 0;
	if (user == NULL)
		return CRED_BAD_USER;
	for (; user[len] != '\0'; len++) {
		if (len >= CRED_USER_MAX || !cred_byte_ok((unsigned char)user[len]))
			return CRED_BAD_USER;
	}
	if (len == 0)
		return CRED_BAD_USER;
	if (products == NULL || products->n == 0)
		return CRED_OK;
	for (size_t i = 0; i < products->n; i++) {
		if (strncmp(user, products->names[i], strlen(products->names[i])) == 0)
			return CRED_OK;
	}
	return CRED_PRODUCT_NOT_ALLOWED;
}

int cred_password(const char *user, const char *key, char out[CRED_PASSWORD_LEN + 1])
{
	static const char hex[] = "0123456789abcdef";
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	int ok = 0;

	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	if (ctx != NULL)
		ok = EVP_DigestInit_ex(ctx, EVP_sha1(), NULL) && EVP_DigestUpdate(ctx, user, strlen(user)) &&
		     EVP_DigestUpdate(ctx, key, strlen(key)) && EVP_DigestFinal_ex(ctx, md, &mdlen) &&
		     mdlen * 2 == CRED_PASSWORD_LEN;
	EVP_MD_CTX_free(ctx);
	if (!ok) {
		memset(out, 0, CRED_PASSWORD_LEN + 1);
		return -1;
	}
	for (unsigned int i = 0; i < mdlen; i++) {
		out[2 * i] = hex[md[i] >> 4];
		out[2 * i + 1] = hex[md[i] & 0x0f];
	}
	out[CRED_PASSWORD_LEN] = '\0';
	OPENSSL_cleanse(md, sizeof(md));
	return 0;
}

enum cred_result cred_verify(const struct cred_keys *keys, const char *user, const char *pass, time_t now,
                             const struct cred_products *products)
{
	enum cred_result r = cred_check_user(user, products);
	if (r != CRED_OK)
		return r;
	if (pass == NULL)
		pass = "";

	/* Normalize into a fixed 40-byte buffer: the loop runs 40 times whatever the password's
	 * length, and only A-Z are folded (folding every byte with |0x20 would turn 0x10 into '0'). */
	unsigned char norm[CRED_PASSWORD_LEN];
	size_t plen = strnlen(pass, CRED_PASSWORD_LEN + 1);
	for (size_t i = 0; i < CRED_PASSWORD_LEN; i++) {
		unsigned char c = i < plen ? (unsigned char)pass[i] : 0;
		norm[i] = (unsigned char)(c + (unsigned char)((c >= 'A' && c <= 'Z') << 5));
	}

	/* Hash and compare every key, expired or not, and never stop at the first match. */
	unsigned int match = 0, valid = 0, failed = 0;
	for (size_t k = 0; keys != NULL && k < keys->n; k++) {
		char want[CRED_PASSWORD_LEN + 1];
		unsigned int live = keys->v[k].expires > now;
		if (cred_password(user, keys->v[k].key, want) != 0)
			failed |= live;
		unsigned int same = CRYPTO_memcmp(norm, want, CRED_PASSWORD_LEN) == 0;
		match |= same & live;
		valid |= live;
		OPENSSL_cleanse(want, sizeof(want));
	}
	OPENSSL_cleanse(norm, sizeof(norm));

	if (!valid)
		return CRED_NO_VALID_KEY;
	if (match && plen == CRED_PASSWORD_LEN)
		return CRED_OK;
	return failed ? CRED_INTERNAL_ERROR : CRED_BAD_PASSWORD;
}

const char *cred_result_str(enum cred_result r)
{
	switch (r) {
	case CRED_OK:
		return "ok";
	case CRED_BAD_USER:
		return "invalid username";
	case CRED_PRODUCT_NOT_ALLOWED:
		return "product not allowed";
	case CRED_BAD_PASSWORD:
		return "wrong password";
	case CRED_NO_VALID_KEY:
		return "no valid API key";
	case CRED_INTERNAL_ERROR:
		return "internal error";
	}
	return "unknown";
}

static bool cred_digits(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
	}
	return true;
}

int cred_parse_time(const char *s, time_t *out)
{
	/* strptime alone accepts one-digit fields, spaces and day 31 in any month: check the exact
	 * shape first, and round-trip through timegm/gmtime to refuse dates that do not exist. */
	size_t len = strlen(s);
	if (len < 20 || !cred_digits(s, 4) || s[4] != '-' || !cred_digits(s + 5, 2) || s[7] != '-' ||
	    !cred_digits(s + 8, 2) || s[10] != 'T' || !cred_digits(s + 11, 2) || s[13] != ':' ||
	    !cred_digits(s + 14, 2) || s[16] != ':' || !cred_digits(s + 17, 2))
		return -1;
	size_t i = 19;
	if (s[i] == '.') {
		i++;
		size_t start = i;
		while (i < len && s[i] >= '0' && s[i] <= '9')
			i++;
		if (i == start)
			return -1;
	}
	if (i != len - 1 || s[i] != 'Z')
		return -1;

	struct tm tm;
	memset(&tm, 0, sizeof(tm));
	const char *end = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
	if (end != s + 19)
		return -1;
	struct tm want = tm;
	time_t t = timegm(&tm);
	struct tm back;
	if (t == (time_t)-1 || gmtime_r(&t, &back) == NULL || back.tm_year != want.tm_year ||
	    back.tm_mon != want.tm_mon || back.tm_mday != want.tm_mday || back.tm_hour != want.tm_hour ||
	    back.tm_min != want.tm_min || back.tm_sec != want.tm_sec)
		return -1;
	*out = t;
	return 0;
}

void cred_keys_free(struct cred_keys *keys)
{
	if (keys == NULL)
		return;
	for (size_t i = 0; i < keys->n; i++) {
		if (keys->v[i].key != NULL) {
			OPENSSL_cleanse(keys->v[i].key, keys->v[i].key_len);
			free(keys->v[i].key);
		}
	}
	free(keys->v);
	keys->v = NULL;
	keys->n = 0;
}

time_t cred_newest_expiry(const struct cred_keys *keys)
{
	time_t newest = 0;
	for (size_t i = 0; keys != NULL && i < keys->n; i++) {
		if (keys->v[i].expires > newest)
			newest = keys->v[i].expires;
	}
	return newest;
}

size_t cred_keys_valid(const struct cred_keys *keys, time_t now)
{
	size_t n = 0;
	for (size_t i = 0; keys != NULL && i < keys->n; i++)
		n += keys->v[i].expires > now;
	return n;
}

static bool cred_id_ok(const char *id)
{
	size_t n = strlen(id);
	if (n == 0 || n > CRED_ID_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)id[i];
		if (c < 0x20 || c > 0x7e || c == '"' || c == '\\')
			return false;
	}
	return true;
}

/* Fills *k from one element of "keys". ent names the element in errors ("keys[1] (id \"x\")"). */
static int cred_key_from_json(const cJSON *item, size_t idx, const char *name, struct cred_key *k, struct fps_err *e)
{
	if (!cJSON_IsObject(item))
		return err_set(e, name, 0, 0, "keys[%zu]: must be an object", idx);
	const cJSON *id = cJSON_GetObjectItemCaseSensitive(item, "id");
	const cJSON *key = cJSON_GetObjectItemCaseSensitive(item, "key");
	const cJSON *exp = cJSON_GetObjectItemCaseSensitive(item, "expires");
	if (id == NULL)
		return err_set(e, name, 0, 0, "keys[%zu]: missing \"id\"", idx);
	if (!cJSON_IsString(id))
		return err_set(e, name, 0, 0, "keys[%zu]: \"id\" must be a string", idx);
	if (!cred_id_ok(id->valuestring))
		return err_set(e, name, 0, 0, "keys[%zu]: \"id\" must be 1..%d printable ASCII bytes without quotes",
		               idx, CRED_ID_MAX);
	snprintf(k->id, sizeof(k->id), "%s", id->valuestring);

	if (key == NULL)
		return err_set(e, name, 0, 0, "keys[%zu] (id \"%s\"): missing \"key\"", idx, k->id);
	if (!cJSON_IsString(key))
		return err_set(e, name, 0, 0, "keys[%zu] (id \"%s\"): \"key\" must be a string", idx, k->id);
	size_t klen = strlen(key->valuestring);
	if (klen == 0 || klen > CRED_KEY_MAX)
		return err_set(e, name, 0, 0, "keys[%zu] (id \"%s\"): \"key\" must be 1..%d bytes", idx, k->id,
		               CRED_KEY_MAX);
	/* A pasted key with a trailing newline or space would silently lock every agent out. */
	for (size_t i = 0; i < klen; i++) {
		unsigned char c = (unsigned char)key->valuestring[i];
		if (c < 0x20 || c == 0x7f)
			return err_set(e, name, 0, 0, "keys[%zu] (id \"%s\"): \"key\" contains a control character",
			               idx, k->id);
	}
	if (key->valuestring[0] == ' ' || key->valuestring[klen - 1] == ' ')
		return err_set(e, name, 0, 0, "keys[%zu] (id \"%s\"): \"key\" has leading or trailing spaces", idx,
		               k->id);

	if (exp == NULL)
		return err_set(e, name, 0, 0, "keys[%zu] (id \"%s\"): missing \"expires\"", idx, k->id);
	if (!cJSON_IsString(exp))
		return err_set(e, name, 0, 0, "keys[%zu] (id \"%s\"): \"expires\" must be a string", idx, k->id);
	if (cred_parse_time(exp->valuestring, &k->expires) != 0)
		return err_set(e, name, 0, 0,
		               "keys[%zu] (id \"%s\"): \"expires\" is not an RFC 3339 UTC time "
		               "(YYYY-MM-DDTHH:MM:SSZ)",
		               idx, k->id);

	k->key = malloc(klen + 1);
	if (k->key == NULL)
		return err_set(e, name, 0, 0, "keys[%zu] (id \"%s\"): out of memory", idx, k->id);
	memcpy(k->key, key->valuestring, klen + 1);
	k->key_len = klen;
	return 0;
}

int cred_keys_parse(const char *text, size_t len, const char *name, struct cred_keys *out, struct fps_err *e)
{
	out->v = NULL;
	out->n = 0;
	const char *end = NULL;
	cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, false);
	if (root == NULL) {
		int line, col;
		err_text_pos(text, end && end >= text && end <= text + len ? (size_t)(end - text) : 0, &line, &col);
		return err_set(e, name, line, col, "not valid JSON");
	}
	/* cJSON stops at the end of the first value; anything but whitespace after it is garbage. */
	for (const char *p = end; p != NULL && p < text + len; p++) {
		if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
			int line, col;
			err_text_pos(text, (size_t)(p - text), &line, &col);
			cJSON_Delete(root);
			return err_set(e, name, line, col, "unexpected data after the JSON value");
		}
	}

	int rc = 0;
	const cJSON *arr = cJSON_GetObjectItemCaseSensitive(root, "keys");
	if (!cJSON_IsObject(root)) {
		rc = err_set(e, name, 0, 0, "top level must be an object with \"keys\"");
		goto out;
	}
	if (arr == NULL) {
		rc = err_set(e, name, 0, 0, "missing \"keys\"");
		goto out;
	}
	if (!cJSON_IsArray(arr)) {
		rc = err_set(e, name, 0, 0, "\"keys\" must be an array");
		goto out;
	}
	size_t n = (size_t)cJSON_GetArraySize(arr);
	if (n == 0) {
		rc = err_set(e, name, 0, 0, "\"keys\" is empty: no agent could authenticate");
		goto out;
	}
	out->v = calloc(n, sizeof(*out->v));
	if (out->v == NULL) {
		rc = err_set(e, name, 0, 0, "out of memory");
		goto out;
	}
	size_t idx = 0;
	const cJSON *item;
	cJSON_ArrayForEach(item, arr)
	{
		struct cred_key *k = &out->v[idx];
		out->n = idx + 1; /* so that cred_keys_free releases a half-filled entry */
		if (cred_key_from_json(item, idx, name, k, e) != 0) {
			rc = -1;
			goto out;
		}
		for (size_t j = 0; j < idx; j++) {
			if (strcmp(out->v[j].id, k->id) == 0) {
				rc = err_set(e, name, 0, 0, "keys[%zu] (id \"%s\"): duplicate id (also keys[%zu])", idx,
				             k->id, j);
				goto out;
			}
		}
		idx++;
	}
out:
	/* cJSON holds copies of the keys: wipe them before handing the memory back. */
	if (cJSON_IsArray(arr)) {
		cJSON_ArrayForEach(item, arr)
		{
			cJSON *key = cJSON_GetObjectItemCaseSensitive(item, "key");
			if (cJSON_IsString(key) && key->valuestring != NULL)
				OPENSSL_cleanse(key->valuestring, strlen(key->valuestring));
		}
	}
	cJSON_Delete(root);
	if (rc != 0)
		cred_keys_free(out);
	return rc;
}

int cred_keys_load(const char *path, struct cred_keys *out, struct fps_err *e)
{
	char *text = NULL;
	size_t len = 0;
	out->v = NULL;
	out->n = 0;
	if (fsio_read(path, CRED_KEYS_FILE_MAX, &text, &len, e) != 0)
		return -1;
	int rc = cred_keys_parse(text, len, path, out, e);
	OPENSSL_cleanse(text, len);
	free(text);
	return rc;
}

int cred_products_parse(const char *csv, struct cred_products *out, struct fps_err *e)
{
	out->names = NULL;
	out->n = 0;
	if (csv == NULL || csv[0] == '\0')
		return 0;
	size_t count = 1;
	for (const char *p = csv; *p; p++)
		count += *p == ',';
	out->names = calloc(count, sizeof(*out->names));
	if (out->names == NULL)
		return err_set(e, NULL, 0, 0, "out of memory");
	const char *p = csv;
	for (size_t i = 0; i < count; i++) {
		const char *comma = strchr(p, ',');
		size_t n = comma ? (size_t)(comma - p) : strlen(p);
		if (n == 0 || n > CRED_USER_MAX) {
			cred_products_free(out);
			return err_set(e, NULL, 0, 0, "products: entry %zu must be 1..%d bytes", i + 1, CRED_USER_MAX);
		}
		for (size_t j = 0; j < n; j++) {
			if (!cred_byte_ok((unsigned char)p[j])) {
				cred_products_free(out);
				return err_set(e, NULL, 0, 0,
				               "products: entry %zu has a byte not allowed in usernames (0x%02x)",
				               i + 1, (unsigned char)p[j]);
			}
		}
		out->names[i] = strndup(p, n);
		out->n = i + 1;
		if (out->names[i] == NULL) {
			cred_products_free(out);
			return err_set(e, NULL, 0, 0, "out of memory");
		}
		p += n + 1;
	}
	return 0;
}

void cred_products_free(struct cred_products *p)
{
	if (p == NULL)
		return;
	for (size_t i = 0; i < p->n; i++)
		free(p->names[i]);
	free(p->names);
	p->names = NULL;
	p->n = 0;
}
