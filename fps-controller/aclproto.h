/*
 * aclproto: Squid's external ACL helper line protocol as fps-acl speaks it, as a pure function.
 * A request is "[ID ]host[ port user]" (%DST, and %PORT %un for the denied report; with
 * concurrency Squid prefixes a numeric channel ID); the
 * reply is "[ID ]OK tag=<route>", "[ID ]ERR message=..." or "[ID ]BH message=...".
 */
#ifndef FPS_ACLPROTO_H
#define FPS_ACLPROTO_H

#include <stdbool.h>
#include <stddef.h>

#include "whitelist.h"

#define ACLPROTO_ID_MAX    20  /* digits of a channel ID */
#define ACLPROTO_REPLY_MAX 128 /* bytes of one reply line, '\n' included */

/*
 * Answers one request line (NUL-terminated, without its '\n'; modified in place) from policy,
 * or NULL when no whitelist is loaded (every destination ERR). Writes one reply line into out
 * (outlen >= ACLPROTO_REPLY_MAX) and returns its length. The host is judged exactly as Squid
 * will resolve it: nothing is decoded; anything but a plain host name or IP literal is ERR.
 */
size_t aclproto_answer(const struct wl_policy *policy, char *line, char *out, size_t outlen);

/* What the denied report counts: filled when the whitelist denied the host (or, in the
 * policy's report mode, would have: the reply is then OK on default_via). The request may
 * carry "host port user" (%DST %PORT %un); port and user point into line, NULL if absent. */
struct aclproto_denial {
	bool denied;
	char host[WL_NAME_MAX + 8]; /* normalized */
	const char *port, *user;
};

/* aclproto_answer, and *d says whether and what to count (d may be NULL). */
size_t aclproto_answer_ex(const struct wl_policy *policy, char *line, char *out, size_t outlen,
                          struct aclproto_denial *d);

#endif
