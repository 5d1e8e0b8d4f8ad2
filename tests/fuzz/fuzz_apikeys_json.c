/*
 * libFuzzer target for apikeys.json (the Secret fps-auth reads): one input is one file; what
 * parses is used to verify a credential, as fps-auth would.
 */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "cred.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct cred_keys keys;
	struct fps_err e;
	err_clear(&e);
	if (cred_keys_parse((const char *)data, size, "apikeys.json", &keys, &e) == 0) {
		static const struct cred_products any = {NULL, 0};
		enum cred_result r = cred_verify(&keys, "ApexOne-1b4e28ba-2fa1-11d2-883f-0016d3cca427",
		                                 "0123456789abcdef0123456789abcdef01234567", 1700000000, &any);
		assert(cred_result_str(r) != NULL);
		cred_keys_free(&keys);
	}
	return 0;
}
