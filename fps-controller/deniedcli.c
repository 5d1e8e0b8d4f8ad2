/*
 * deniedcli: reads GET /denied and GET /denied?format=whitelist and prints them for a
 * support engineer; --json passes /denied through unchanged for scripts.
 */
#include "deniedcli.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "adminclient.h"

#define DENIEDCLI_TIMEOUT_MS 5000

static char *dc_fetch(const char *admin, const char *path)
{
	char *body = NULL, err[512];
	int code = adminclient_get(admin, path, DENIEDCLI_TIMEOUT_MS, &body, err, sizeof(err));
	if (code < 0) {
		fprintf(stderr, "fps-controller denied: %s\n", err);
		return NULL;
	}
	if (code != 200) {
		fprintf(stderr, "fps-controller denied: %s%s answered %d: %s", admin, path, code, body);
		free(body);
		return NULL;
	}
	return body;
}

static const char *dc_str(const cJSON *o, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
	return cJSON_IsString(v) ? v->valuestring : "-";
}

static double dc_num(const cJSON *o, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
	return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

int deniedcli_run(const char *admin, bool json, FILE *out)
{
	if (admin == NULL)
		admin = ADMINCLIENT_DEFAULT;
	char *body = dc_fetch(admin, "/denied");
	if (body == NULL)
		return 3;
	if (json) {
		fputs(body, out);
		fputc('\n', out);
		free(body);
		return 0;
	}
	cJSON *d = cJSON_Parse(body);
	free(body);
	if (d == NULL) {
		fprintf(stderr, "fps-controller denied: %s/denied is not JSON\n", admin);
		return 3;
	}
	const cJSON *top = cJSON_GetObjectItemCaseSensitive(d, "top");
	fprintf(out, "denied since %s: %.0f requests, %.0f destinations%s\n", dc_str(d, "since"), dc_num(d, "total"),
	        dc_num(d, "distinct"),
	        cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(d, "truncated"))
	            ? " (truncated: more destinations than tracked; counts are upper bounds)"
	            : "");
	if (cJSON_GetArraySize(top) > 0)
		fprintf(out, "%8s  %-40s %-21s %-21s %s\n", "COUNT", "HOST:PORT", "FIRST SEEN", "LAST SEEN",
		        "PRODUCTS");
	const cJSON *e;
	cJSON_ArrayForEach(e, top)
	{
		char hp[300], prods[200] = "";
		const cJSON *port = cJSON_GetObjectItemCaseSensitive(e, "port");
		const char *host = dc_str(e, "host");
		bool v6 = strchr(host, ':') != NULL;
		if (cJSON_IsNumber(port))
			snprintf(hp, sizeof(hp), "%s%s%s:%d", v6 ? "[" : "", host, v6 ? "]" : "", port->valueint);
		else
			snprintf(hp, sizeof(hp), "%s", host);
		const cJSON *p;
		cJSON_ArrayForEach(p, cJSON_GetObjectItemCaseSensitive(e, "products"))
		{
			if (cJSON_IsString(p) && strlen(prods) + strlen(p->valuestring) + 2 < sizeof(prods)) {
				if (prods[0])
					strcat(prods, ",");
				strcat(prods, p->valuestring);
			}
		}
		if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, "more_products")))
			strcat(prods, ",...");
		fprintf(out, "%8.0f  %-40s %-21s %-21s %s%s\n", dc_num(e, "count"), hp, dc_str(e, "first_seen"),
		        dc_str(e, "last_seen"), prods[0] ? prods : "-",
		        cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, "would_deny")) ? " (report mode)" : "");
	}
	cJSON_Delete(d);
	char *frag = dc_fetch(admin, "/denied?format=whitelist");
	if (frag == NULL)
		return 3;
	fprintf(out, "\nwhitelist.json fragment of the denied hosts (review each before adding it):\n%s\n", frag);
	free(frag);
	return 0;
}
