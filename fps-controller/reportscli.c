/*
 * reportscli: the failures and traffic reports on a terminal (reportscli.h).
 */
#include "reportscli.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "adminclient.h"

#define REPORTSCLI_TIMEOUT_MS 5000

static cJSON *rc_fetch(const char *cmd, const char *admin, const char *path, bool json, FILE *out, int *rc)
{
	char *body = NULL, err[512];
	int code = adminclient_get(admin, path, REPORTSCLI_TIMEOUT_MS, &body, err, sizeof(err));
	*rc = 3;
	if (code < 0) {
		fprintf(stderr, "fps-controller %s: %s\n", cmd, err);
		return NULL;
	}
	if (code != 200) {
		fprintf(stderr, "fps-controller %s: %s%s answered %d: %s", cmd, admin, path, code, body);
		free(body);
		return NULL;
	}
	if (json) {
		fputs(body, out);
		fputc('\n', out);
		free(body);
		*rc = 0;
		return NULL;
	}
	cJSON *d = cJSON_Parse(body);
	free(body);
	if (d == NULL)
		fprintf(stderr, "fps-controller %s: %s%s is not JSON\n", cmd, admin, path);
	else
		*rc = 0;
	return d;
}

static const char *rc_str(const cJSON *o, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
	return cJSON_IsString(v) ? v->valuestring : "-";
}

static double rc_num(const cJSON *o, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
	return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

int reportscli_failures(const char *admin, bool json, FILE *out)
{
	int rc;
	if (admin == NULL)
		admin = ADMINCLIENT_DEFAULT;
	cJSON *d = rc_fetch("failures", admin, "/failures", json, out, &rc);
	if (d == NULL)
		return rc;
	fprintf(out, "failures since %s: %.0f%s\n", rc_str(d, "since"), rc_num(d, "total"),
	        cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(d, "truncated"))
	            ? " (truncated: more groups than tracked; counts are upper bounds)"
	            : "");
	const cJSON *top = cJSON_GetObjectItemCaseSensitive(d, "top");
	if (cJSON_GetArraySize(top) > 0)
		fprintf(out, "%7s  %-34s %6s %-18s %-8s %-20s %-21s %s\n", "COUNT", "HOST:PORT", "STATUS", "CAUSE",
		        "ROUTE", "PRODUCTS", "LAST SEEN", "DETAIL");
	const cJSON *e;
	cJSON_ArrayForEach(e, top)
	{
		char hp[300], prods[120] = "";
		const cJSON *port = cJSON_GetObjectItemCaseSensitive(e, "port");
		if (cJSON_IsNumber(port))
			snprintf(hp, sizeof(hp), "%s:%d", rc_str(e, "host"), port->valueint);
		else
			snprintf(hp, sizeof(hp), "%s", rc_str(e, "host"));
		const cJSON *p;
		cJSON_ArrayForEach(p, cJSON_GetObjectItemCaseSensitive(e, "products"))
		{
			if (cJSON_IsString(p) && strlen(prods) + strlen(p->valuestring) + 6 < sizeof(prods)) {
				if (prods[0])
					strcat(prods, ",");
				strcat(prods, p->valuestring);
			}
		}
		if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, "more_products")))
			strcat(prods, ",...");
		fprintf(out, "%7.0f  %-34s %6.0f %-18s %-8s %-20s %-21s %s\n", rc_num(e, "count"), hp,
		        rc_num(e, "status"), rc_str(e, "cause"), rc_str(e, "route"), prods[0] ? prods : "-",
		        rc_str(e, "last_seen"), rc_str(e, "detail"));
	}
	cJSON_Delete(d);
	return 0;
}

int reportscli_traffic(const char *admin, bool json, FILE *out)
{
	int rc;
	if (admin == NULL)
		admin = ADMINCLIENT_DEFAULT;
	cJSON *d = rc_fetch("traffic", admin, "/traffic", json, out, &rc);
	if (d == NULL)
		return rc;
	fprintf(out, "traffic since %s: %.0f requests\n", rc_str(d, "since"), rc_num(d, "requests"));
	fprintf(out, "%-20s %10s %16s %16s %16s %16s %9s\n", "PRODUCT", "REQUESTS", "TO AGENTS", "FROM AGENTS",
	        "FROM ORIGIN", "FROM CACHE", "FAILURES");
	const cJSON *p;
	cJSON_ArrayForEach(p, cJSON_GetObjectItemCaseSensitive(d, "products"))
	{
		fprintf(out, "%-20s %10.0f %16.0f %16.0f %16.0f %16.0f %9.0f\n", p->string ? p->string : "-",
		        rc_num(p, "requests"), rc_num(p, "bytes_to_agents"), rc_num(p, "bytes_from_agents"),
		        rc_num(p, "bytes_from_origin"), rc_num(p, "bytes_from_cache"), rc_num(p, "failures"));
	}
	const cJSON *ds = cJSON_GetObjectItemCaseSensitive(d, "destinations");
	if (cJSON_GetArraySize(ds) > 0)
		fprintf(out, "\ntop destinations%s\n%-50s %10s %16s %16s\n",
		        cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(d, "destinations_truncated"))
		            ? " (truncated: more hosts than tracked; figures are upper bounds)"
		            : "",
		        "HOST", "REQUESTS", "TO AGENTS", "FROM CACHE");
	const cJSON *e;
	cJSON_ArrayForEach(e, ds)
	{
		fprintf(out, "%-50s %10.0f %16.0f %16.0f\n", rc_str(e, "host"), rc_num(e, "requests"),
		        rc_num(e, "bytes_to_agents"), rc_num(e, "bytes_from_cache"));
	}
	cJSON_Delete(d);
	return 0;
}
