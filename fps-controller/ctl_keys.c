/*
 * ctl_keys: the API keys' validity as time passes. Keys expire with time, not with an edit:
 * the loop recounts them at every publish and the log says each threshold once.
 */
#include "ctl_internal.h"

#include <stdio.h>
#include <string.h>

#include "log.h"

#define KEY_WARN_DAYS 10 /* docs/agents.md: warn when the newest key expires within this */

enum { KEYS_OK, KEYS_EXPIRING, KEYS_NONE_VALID };

/* Keys expire with time, not with an edit: every publish (once a second) recounts them
 * and logs each threshold the moment it is crossed, once: a key expired, the newest key
 * expires within KEY_WARN_DAYS, no key is valid. `announce` logs the current level even
 * if it did not change (a new apikeys.json was just published). */
void ctl_key_clock(struct ctl *x, bool announce)
{
	time_t now = time(NULL), newest = 0;
	size_t valid = 0;
	for (size_t i = 0; i < x->n_key_expiry; i++) {
		if (x->key_expiry[i] > now) {
			valid++;
			if (x->key_expiry[i] > newest)
				newest = x->key_expiry[i];
		} else if (!x->key_expired[i]) {
			x->key_expired[i] = true;
			if (!announce)
				log_warn("API key '%s' in %s expired just now", x->key_id[i], x->keys_path);
		}
	}
	if (x->n_key_expiry == 0 && !announce)
		return;
	int level = valid == 0 ? KEYS_NONE_VALID : newest - now < KEY_WARN_DAYS * 86400 ? KEYS_EXPIRING : KEYS_OK;
	if (level == x->key_level && !announce)
		return;
	x->key_level = level;
	if (level == KEYS_NONE_VALID)
		log_error("NO VALID API KEY in %s: every agent will get 407 until a key is added", x->keys_path);
	else if (level == KEYS_EXPIRING)
		log_warn("the newest API key in %s expires in %.1f days: issue the next key", x->keys_path,
		         (double)(newest - now) / 86400.0);
	else if (!announce)
		log_info("API keys in %s: the newest expires in %.1f days", x->keys_path,
		         (double)(newest - now) / 86400.0);
}

/* Parses the keys the way fps-auth will; warns about the newest key's expiry. */
int ctl_check_keys(struct ctl *x, const struct fps_config *c)
{
	struct cred_keys keys = {0};
	struct fps_err e;
	err_clear(&e);
	char path[PATH_MAX + 16];
	snprintf(path, sizeof(path), "%s/apikeys.json", x->opts->secrets_dir);
	if (cred_keys_parse(c->keys_text, c->keys_len, path, &keys, &e) < 0) {
		char buf[1600];
		err_str(&e, buf, sizeof(buf));
		snprintf(x->pub.keys_error, sizeof(x->pub.keys_error), "%s", buf);
		log_error("API keys not updated, fps-auth keeps the previous ones: %s", buf);
		return -1;
	}
	time_t now = time(NULL), newest = cred_newest_expiry(&keys);
	x->n_key_expiry = 0;
	for (size_t i = 0; i < keys.n && i < sizeof(x->key_expiry) / sizeof(x->key_expiry[0]); i++) {
		x->key_expiry[x->n_key_expiry] = keys.v[i].expires;
		snprintf(x->key_id[x->n_key_expiry], sizeof(x->key_id[0]), "%s", keys.v[i].id);
		x->key_expired[x->n_key_expiry] = false;
		x->n_key_expiry++;
	}
	x->pub.keys_total = keys.n;
	x->pub.keys_valid = cred_keys_valid(&keys, now);
	x->pub.have_key_expiry = newest > 0;
	x->pub.newest_key_expiry_unix = (double)newest;
	x->pub.keys_error[0] = '\0';
	snprintf(x->keys_path, sizeof(x->keys_path), "%s", path);
	ctl_key_clock(x, true);
	cred_keys_free(&keys);
	return 0;
}
