/*
 * libFuzzer target for whitelist.json: one input is one file, parsed and compiled as a reload
 * would. Every accepted entry must carry a position; errors hold no control byte.
 */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "compile.h"
#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fps_config c;
	struct fps_err e;
	cfg_init_defaults(&c);
	err_clear(&e);
	if (cfg_parse_whitelist_json(&c, (const char *)data, size, "whitelist.json", &e) == 0) {
		assert(c.n_entries <= CFG_MAX_ENTRIES);
		for (size_t i = 0; i < c.n_entries; i++)
			assert(c.entries[i].raw != NULL);
		struct compiled cp;
		if (compile_config(&c, &cp, &e) == 0)
			compile_free(&cp);
	} else {
		for (const unsigned char *p = (const unsigned char *)e.msg; *p; p++)
			assert(*p >= 0x20 && *p < 0x7f);
	}
	cfg_free(&c);
	return 0;
}
