/*
 * reportsjson: GET /failures and GET /traffic (docs/operations.md, "Failures and traffic"),
 * rendered with cJSON from a reports snapshot. Every string in a snapshot was reduced to
 * printable ASCII by reports.c (hosts to [a-z0-9._-] or an IPv6 literal).
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>

#include "reports.h"
#include "statusjson.h"

static void rj_time(cJSON *o, const char *name, double t)
{
	char buf[32];
	statusjson_rfc3339(t, buf, sizeof(buf));
	if (buf[0])
		cJSON_AddStringToObject(o, name, buf);
	else
		cJSON_AddNullToObject(o, name);
}

static char *rj_print(cJSON *root)
{
	if (root == NULL)
		return NULL;
	char *text = cJSON_Print(root);
	cJSON_Delete(root);
	return text;
}

char *reports_json_failures(const struct rep_snapshot *s)
{
	cJSON *root = cJSON_CreateObject();
	if (root == NULL)
		return NULL;
	cJSON_AddBoolToObject(root, "enabled", s->enabled);
	rj_time(root, "since", s->since);
	cJSON_AddNumberToObject(root, "total", (double)s->failures_total);
	cJSON_AddBoolToObject(root, "truncated", s->failures_truncated);
	cJSON *bc = cJSON_AddObjectToObject(root, "by_cause");
	for (int c = 0; bc && c < REP_CAUSES; c++)
		cJSON_AddNumberToObject(bc, rep_cause_name((enum rep_cause)c), (double)s->failures_by_cause[c]);
	cJSON *arr = cJSON_AddArrayToObject(root, "top");
	for (size_t i = 0; arr && i < s->n_fail; i++) {
		const struct rep_fail *f = &s->fail[i];
		cJSON *x = cJSON_CreateObject();
		if (x == NULL)
			break;
		cJSON_AddStringToObject(x, "host", f->host);
		if (f->port)
			cJSON_AddNumberToObject(x, "port", f->port);
		else
			cJSON_AddNullToObject(x, "port");
		cJSON_AddNumberToObject(x, "status", f->status);
		cJSON_AddStringToObject(x, "cause", rep_cause_name(f->cause));
		cJSON_AddStringToObject(x, "detail", f->detail);
		cJSON_AddStringToObject(x, "route", rep_route_name(f->route));
		cJSON *pr = cJSON_AddArrayToObject(x, "products");
		for (unsigned k = 0; pr && k < f->n_products && k < REP_FAIL_PRODUCTS; k++)
			cJSON_AddItemToArray(pr, cJSON_CreateString(f->products[k]));
		cJSON_AddBoolToObject(x, "more_products", f->more_products);
		cJSON_AddNumberToObject(x, "count", (double)f->count);
		rj_time(x, "first_seen", f->first_seen);
		rj_time(x, "last_seen", f->last_seen);
		cJSON_AddItemToArray(arr, x);
	}
	return rj_print(root);
}

char *reports_json_traffic(const struct rep_snapshot *s)
{
	cJSON *root = cJSON_CreateObject();
	if (root == NULL)
		return NULL;
	cJSON_AddBoolToObject(root, "enabled", s->enabled);
	rj_time(root, "since", s->since);
	cJSON_AddNumberToObject(root, "requests", (double)s->requests_total);
	cJSON *pr = cJSON_AddObjectToObject(root, "products");
	for (size_t i = 0; pr && i < s->n_products; i++) {
		const struct rep_product *p = &s->products[i];
		cJSON *x = cJSON_AddObjectToObject(pr, p->name);
		if (x == NULL)
			break;
		cJSON_AddNumberToObject(x, "requests", (double)p->requests);
		cJSON_AddNumberToObject(x, "bytes_to_agents", (double)p->bytes_to_agents);
		cJSON_AddNumberToObject(x, "bytes_from_agents", (double)p->bytes_from_agents);
		cJSON_AddNumberToObject(x, "bytes_from_origin", (double)p->bytes_from_origin);
		cJSON_AddNumberToObject(x, "bytes_from_cache", (double)p->bytes_from_cache);
		cJSON_AddNumberToObject(x, "failures", (double)p->failures);
	}
	cJSON_AddBoolToObject(root, "destinations_truncated", s->destinations_truncated);
	cJSON *ds = cJSON_AddArrayToObject(root, "destinations");
	for (size_t i = 0; ds && i < s->n_dest; i++) {
		const struct rep_dest *d = &s->dest[i];
		cJSON *x = cJSON_CreateObject();
		if (x == NULL)
			break;
		cJSON_AddStringToObject(x, "host", d->host);
		cJSON_AddNumberToObject(x, "requests", (double)d->requests);
		cJSON_AddNumberToObject(x, "bytes_to_agents", (double)d->bytes_to_agents);
		cJSON_AddNumberToObject(x, "bytes_from_cache", (double)d->bytes_from_cache);
		cJSON_AddItemToArray(ds, x);
	}
	/* The charts' data: one value per minute, oldest first, the last REP_MINUTES minutes
	 * ending with the current one (`minutes.start` is the first). */
	cJSON *mins = cJSON_AddObjectToObject(root, "minutes");
	if (mins) {
		rj_time(mins, "start", (double)s->minutes[0].minute * 60.0);
		cJSON *rq = cJSON_AddObjectToObject(mins, "requests");
		cJSON *by = cJSON_AddObjectToObject(mins, "bytes_to_agents");
		for (size_t i = 0; rq && by && i < s->n_products; i++) {
			double a[REP_MINUTES], b[REP_MINUTES];
			for (int k = 0; k < REP_MINUTES; k++) {
				a[k] = (double)s->minutes[k].requests[s->products[i].slot];
				b[k] = (double)s->minutes[k].bytes[s->products[i].slot];
			}
			cJSON_AddItemToObject(rq, s->products[i].name, cJSON_CreateDoubleArray(a, REP_MINUTES));
			cJSON_AddItemToObject(by, s->products[i].name, cJSON_CreateDoubleArray(b, REP_MINUTES));
		}
		double c[REP_MINUTES], o[REP_MINUTES];
		for (int k = 0; k < REP_MINUTES; k++) {
			c[k] = (double)s->minutes[k].from_cache;
			o[k] = (double)s->minutes[k].from_origin;
		}
		cJSON_AddItemToObject(mins, "bytes_from_cache", cJSON_CreateDoubleArray(c, REP_MINUTES));
		cJSON_AddItemToObject(mins, "bytes_from_origin", cJSON_CreateDoubleArray(o, REP_MINUTES));
	}
	return rj_print(root);
}
