/*
 * libFuzzer target for fps-acl's request path: one input is one helper line (as fps-acl cuts
 * them: no '\n', no NUL), answered from a small policy and with none loaded. A reply is always
 * exactly one bounded line, and OK only for a name the policy holds.
 */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "aclproto.h"
#include "whitelist.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const struct wl_policy *fuzz_policy(void)
{
	static struct wl_policy p;
	static int built;
	if (!built) {
		wl_policy_init(&p, WL_VIA_DIRECT);
		int rc = wl_policy_add(&p, "allowed.test", WL_EXACT);
		rc |= wl_policy_add(&p, "wild.test", WL_WILD);
		rc |= wl_policy_add(&p, "10.0.0.1", WL_EXACT);
		rc |= wl_policy_add_route(&p, "wild.test", WL_WILD, WL_VIA_TUNNEL);
		rc |= wl_policy_finish(&p);
		assert(rc == 0);
		(void)rc;
		built = 1;
	}
	return &p;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 4096)
		return 0;
	char line[4097], copy[4097], out[ACLPROTO_REPLY_MAX];
	memcpy(line, data, size);
	line[size] = '\0';
	for (size_t i = 0; i < size; i++)
		if (line[i] == '\n' || line[i] == '\0')
			line[i] = '\x01';
	for (int loaded = 0; loaded < 2; loaded++) {
		memcpy(copy, line, size + 1);
		size_t n = aclproto_answer(loaded ? fuzz_policy() : NULL, copy, out, sizeof(out));
		assert(n > 0 && n < sizeof(out) && out[n - 1] == '\n' && memchr(out, '\n', n - 1) == NULL);
		if (!loaded)
			assert(strstr(out, "OK") == NULL || strstr(out, "message=") != NULL);
		/* OK only for a host of plain host-name bytes and no empty label: nothing is decoded. */
		if (loaded && (strncmp(out, "OK", 2) == 0 || strstr(out, " OK") != NULL)) {
			memcpy(copy, line, size + 1);
			char *save = NULL, *t1 = strtok_r(copy, " \t\r", &save);
			char *t2 = t1 ? strtok_r(NULL, " \t\r", &save) : NULL;
			const char *host = t2 && strspn(t1, "0123456789") == strlen(t1) ? t2 : t1;
			assert(host != NULL && strspn(host, "0123456789abcdefghijklmnopqrstuvwxyz"
			                                    "ABCDEFGHIJKLMNOPQRSTUVWXYZ.-_:[]") == strlen(host));
			assert(host[0] != '.' && strstr(host, "..") == NULL);
		}
	}
	return 0;
}
