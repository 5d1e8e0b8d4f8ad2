/*
 * aclproto: one fps-acl request line in, one reply line out (see aclproto.h).
 */
#include "aclproto.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

size_t aclproto_answer(const struct wl_policy *policy, char *line, char *out, size_t outlen)
{
	return aclproto_answer_ex(policy, line, out, outlen, NULL);
}

size_t aclproto_answer_ex(const struct wl_policy *policy, char *line, char *out, size_t outlen,
                          struct aclproto_denial *d)
{
	if (d)
		d->denied = false;
	char *save = NULL;
	char *tok1 = strtok_r(line, " \t\r", &save);
	char *tok2 = tok1 ? strtok_r(NULL, " \t\r", &save) : NULL;
	/* With concurrency Squid prefixes a numeric channel ID. Squid's %DST never
	 * is a bare number, so a numeric first token followed by another is the ID. */
	const char *id = NULL, *host = tok1;
	if (tok1 && tok2 && strspn(tok1, "0123456789") == strlen(tok1)) {
		id = tok1;
		host = tok2;
	}
	int n;
	if (id && strlen(id) > ACLPROTO_ID_MAX) {
		/* Not an ID Squid sends: answered without one, so the reply stays bounded. */
		n = snprintf(out, outlen, "BH message=\"channel ID too long\"\n");
		return n < 0 ? 0 : ((size_t)n < outlen ? (size_t)n : outlen - 1);
	}
	/* "host port user" when Squid passes %PORT %un too (the denied report) */
	const char *port_s = id ? strtok_r(NULL, " \t\r", &save) : tok2;
	const char *user = port_s ? strtok_r(NULL, " \t\r", &save) : NULL;
	const char *sep = id ? " " : "";
	id = id ? id : "";
	char norm[WL_NAME_MAX + 8];
	bool is_ip, denied = false;
	enum wl_via via;
	if (host == NULL)
		n = snprintf(out, outlen, "%s%sBH message=\"empty request\"\n", id, sep);
	/* Squid sends %DST URL-quoted, but it quotes neither '%' nor most bytes a host name cannot
	 * hold, and it resolves the name exactly as received: decoding it here would judge another
	 * name ("allowed%2etest" is not "allowed.test" to Squid's resolver). wl_host_normalize
	 * refuses anything that is not a plain host name or IP literal. */
	else if (wl_host_normalize(host, norm, sizeof(norm), &is_ip) < 0)
		n = snprintf(out, outlen, "%s%sERR message=\"malformed host\"\n", id, sep);
	else if (policy == NULL)
		n = snprintf(out, outlen, "%s%sERR message=\"no whitelist loaded\"\n", id, sep);
	else if (wl_lookup(policy, norm, is_ip, &via))
		n = snprintf(out, outlen, "%s%sOK tag=%s\n", id, sep, wl_via_name(via));
	else {
		denied = true;
		/* Report mode: allowed on the default route, counted as would-deny. Ports and
		 * blocked networks are separate http_access rules, enforced all the same. */
		if (policy->report_mode)
			n = snprintf(out, outlen, "%s%sOK tag=%s message=\"would deny: not in whitelist\"\n", id, sep,
			             wl_via_name(policy->default_via));
		else
			n = snprintf(out, outlen, "%s%sERR message=\"not in whitelist\"\n", id, sep);
	}
	if (d && denied) {
		d->denied = true;
		snprintf(d->host, sizeof(d->host), "%s", norm);
		d->port = port_s;
		d->user = user;
	}
	return n < 0 ? 0 : ((size_t)n < outlen ? (size_t)n : outlen - 1);
}
