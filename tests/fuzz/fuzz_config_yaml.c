/*
 * libFuzzer target for fps.yaml: one input is one file, parsed against the schema as a reload
 * would; an accepted config is compiled too. Errors must name fps.yaml and hold no control byte.
 */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "compile.h"
#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_check_err(const struct fps_err *e)
{
	for (const unsigned char *p = (const unsigned char *)e->msg; *p; p++)
		assert(*p >= 0x20 && *p < 0x7f);
	assert(strcmp(e->file, "fps.yaml") == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fps_config c;
	struct fps_err e;
	cfg_init_defaults(&c);
	err_clear(&e);
	if (cfg_parse_yaml(&c, (const char *)data, size, "fps.yaml", &e) == 0) {
		assert(c.n_entries <= CFG_MAX_ENTRIES && c.n_routes <= CFG_MAX_ROUTES);
		struct compiled cp;
		if (compile_config(&c, &cp, &e) == 0)
			compile_free(&cp);
	} else {
		fuzz_check_err(&e);
	}
	cfg_free(&c);
	return 0;
}
