/*
 * cred: the products' credential scheme (docs/agents.md) as pure functions: username rules, the
 * password hex(SHA1(username || apikey)), the apikeys.json loader and constant-time verification.
 * Used by fps-auth for verdicts and by the controller for key-expiry reporting.
 */
#ifndef FPS_CRED_H
#define FPS_CRED_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "err.h"

#define CRED_USER_MAX      128           /* bytes */
#define CRED_PASSWORD_LEN  40            /* lowercase hex SHA-1 */
#define CRED_ID_MAX        64            /* bytes of a key id */
#define CRED_KEY_MAX       4096          /* bytes of one API key */
#define CRED_KEYS_FILE_MAX (1024 * 1024) /* apikeys.json larger than this is refused */

/* One API key. id is not secret and may be logged; key is secret and is wiped on free. */
struct cred_key {
	char id[CRED_ID_MAX + 1];
	char *key;
	size_t key_len;
	time_t expires; /* valid while now < expires */
};

struct cred_keys {
	struct cred_key *v;
	size_t n;
};

/* auth.products: usernames must start with one of these names; n == 0 allows any. */
struct cred_products {
	char **names;
	size_t n;
};

enum cred_result {
	CRED_OK,
	CRED_BAD_USER,            /* empty, over 128 bytes, ':' or a byte outside 0x21..0x7e */
	CRED_PRODUCT_NOT_ALLOWED, /* products set and no name is a prefix of the username */
	CRED_BAD_PASSWORD,        /* matches no currently valid key */
	CRED_NO_VALID_KEY,        /* every key has expired (or there is none) */
	CRED_INTERNAL_ERROR,      /* OpenSSL failed; not the client's fault */
};

/*
 * Loads apikeys.json: {"keys": [{"id": "...", "key": "...", "expires": "YYYY-MM-DDTHH:MM:SSZ"}]}.
 * Types are strict, at least one key is required, ids are unique, unknown members are ignored
 * (forward compatibility). On error returns -1 with e naming the file and the key's index and id,
 * never the key itself; *out is then left empty. On success *out owns the keys: cred_keys_free().
 */
int cred_keys_load(const char *path, struct cred_keys *out, struct fps_err *e);
/* Same as cred_keys_load on a buffer; name is used as the file in errors. */
int cred_keys_parse(const char *text, size_t len, const char *name, struct cred_keys *out, struct fps_err *e);
/* Wipes the key material and frees; leaves *keys empty. Safe on an empty or freed set. */
void cred_keys_free(struct cred_keys *keys);
/* Latest `expires` of all keys (expired ones included), 0 when there are none. For the metric
 * fps_auth_key_expiry_seconds and the 10-day warning. */
time_t cred_newest_expiry(const struct cred_keys *keys);
/* Number of keys still valid at now. */
size_t cred_keys_valid(const struct cred_keys *keys, time_t now);

/* Parses RFC 3339 UTC "YYYY-MM-DDTHH:MM:SS[.fraction]Z" (fraction dropped). 0 ok, -1 garbage. */
int cred_parse_time(const char *s, time_t *out);

/* Parses a comma-separated product list ("ApexOne,Deep"). Names follow the username byte rules;
 * empty names are an error. "" gives an empty list (any product). */
int cred_products_parse(const char *csv, struct cred_products *out, struct fps_err *e);
void cred_products_free(struct cred_products *p);

/* Username rules alone: CRED_OK, CRED_BAD_USER or CRED_PRODUCT_NOT_ALLOWED. products may be NULL. */
enum cred_result cred_check_user(const char *user, const struct cred_products *products);

/* Writes the expected password, hex(SHA1(user || key)) in lowercase, NUL-terminated. 0 or -1. */
int cred_password(const char *user, const char *key, char out[CRED_PASSWORD_LEN + 1]);

/*
 * The verdict for user/pass at time now. The password is accepted in any letter case. Every key
 * (valid or not) is hashed and compared with CRYPTO_memcmp over 40 normalized bytes, so the work
 * does not depend on the password supplied nor on which key matched. products may be NULL.
 */
enum cred_result cred_verify(const struct cred_keys *keys, const char *user, const char *pass, time_t now,
                             const struct cred_products *products);

/* A short fixed text for a result, safe to send to Squid and to log ("wrong password"). */
const char *cred_result_str(enum cred_result r);

#endif
