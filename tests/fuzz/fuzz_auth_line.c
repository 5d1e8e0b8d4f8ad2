/*
 * libFuzzer target for fps-auth's request path: one input is one helper line, parsed in each
 * concurrency mode; whatever parses is verified against two in-memory keys and answered, as
 * fps-auth would. Built by `make fuzz` (no main here).
 */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "authproto.h"
#include "cred.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char keys_json[] = "{\"keys\":[{\"id\":\"old\",\"key\":\"k-old\",\"expires\":\"2001-01-01T00:00:00Z\"},"
                                "{\"id\":\"new\",\"key\":\"k-new\",\"expires\":\"2999-01-01T00:00:00Z\"}]}";

static const struct cred_keys *fuzz_keys(void)
{
	static struct cred_keys keys;
	static int loaded;
	if (!loaded) {
		struct fps_err e;
		int rc = cred_keys_parse(keys_json, sizeof(keys_json) - 1, "fuzz", &keys, &e);
		assert(rc == 0);
		(void)rc;
		loaded = 1;
	}
	return &keys;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const enum authproto_ids modes[] = {AUTHPROTO_IDS_AUTO, AUTHPROTO_IDS_ON, AUTHPROTO_IDS_OFF};
	static struct authproto_req req;
	static const struct cred_products any = {NULL, 0};
	static char *apex[] = {"ApexOne"};
	static const struct cred_products some = {apex, 1};
	const char *line = (const char *)data;

	for (size_t m = 0; m < sizeof(modes) / sizeof(modes[0]); m++) {
		const char *why = NULL;
		char reply[AUTHPROTO_REPLY_MAX];
		int n;
		if (authproto_parse(line, size, modes[m], &req, &why) != 0) {
			assert(why != NULL);
			n = authproto_format(reply, sizeof(reply), req.id, AUTHPROTO_BH, why);
		} else {
			assert(strlen(req.user) <= AUTHPROTO_FIELD_MAX && strlen(req.pass) <= AUTHPROTO_FIELD_MAX);
			enum cred_result r = cred_verify(fuzz_keys(), req.user, req.pass, 1700000000, m ? &some : &any);
			n = authproto_format(reply, sizeof(reply), req.id, r == CRED_OK ? AUTHPROTO_OK : AUTHPROTO_ERR,
			                     r == CRED_OK ? NULL : cred_result_str(r));
		}
		/* A reply is always one line: exactly one '\n', at the end. */
		assert(n > 0 && reply[n - 1] == '\n' && memchr(reply, '\n', (size_t)n - 1) == NULL);
		/* The channel ID echoed is the line's own leading digits. */
		size_t idlen = strlen(req.id);
		assert(idlen == 0 || (idlen <= size && memcmp(req.id, data, idlen) == 0));
	}
	return 0;
}
