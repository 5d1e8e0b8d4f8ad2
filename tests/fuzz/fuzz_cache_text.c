/*
 * libFuzzer target for the update cache's text parsers: Squid's cache-manager pages as
 * cachestats_parse reads them (the input split at its first NUL into counters and info), and
 * a URL as `fps-controller purge` and `explain URL` take it (purge_url_ok, purge_url_host).
 */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cachestats.h"
#include "purge.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = malloc(size + 2);
	if (text == NULL)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	text[size + 1] = '\0';
	const char *info = text + strlen(text) + 1;
	if (info > text + size)
		info = text + size;
	struct status_cache c = {.enabled = true};
	if (cachestats_parse(text, info, &c) == 0)
		assert(c.have_stats);
	char host[256];
	int port = 0;
	if (purge_url_host(text, host, sizeof(host), &port) == 0) {
		assert(purge_url_ok(text));
		assert(port >= 1 && port <= 65535 && host[0] != '\0');
	}
	free(text);
	return 0;
}
