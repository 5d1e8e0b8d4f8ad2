/*
 * libFuzzer target for the fps-acl snapshot (the file the controller publishes and fps-acl
 * reloads): one input is one file. What parses must render and parse back to the same policy.
 */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "snapshot.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct wl_policy p, q;
	unsigned long long gen = 0, gen2 = 0;
	struct fps_err e;
	err_clear(&e);
	if (snapshot_parse((const char *)data, size, "acl.snapshot", &p, &gen, &e) != 0)
		return 0;
	char *text = NULL;
	size_t len = 0;
	int rc = snapshot_render(&p, gen, &text, &len);
	assert(rc == 0);
	rc = snapshot_parse(text, len, "acl.snapshot", &q, &gen2, &e);
	assert(rc == 0 && gen2 == gen && q.n_entries == p.n_entries && q.n_routes == p.n_routes);
	(void)rc;
	free(text);
	wl_policy_free(&p);
	wl_policy_free(&q);
	return 0;
}
