/*
 * status: a single published snapshot, copied under a mutex (see status.h).
 * The struct is a few hundred KB at most; copying it per scrape costs microseconds.
 */
#include "status.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static pthread_mutex_t status_mu = PTHREAD_MUTEX_INITIALIZER;
static struct fps_status *status_cur;

void status_publish(const struct fps_status *s)
{
	struct fps_status *copy = malloc(sizeof(*copy));
	if (copy == NULL)
		return;
	memcpy(copy, s, sizeof(*copy));
	pthread_mutex_lock(&status_mu);
	struct fps_status *old = status_cur;
	status_cur = copy;
	pthread_mutex_unlock(&status_mu);
	free(old);
}

bool status_get(struct fps_status *out)
{
	pthread_mutex_lock(&status_mu);
	bool have = status_cur != NULL;
	if (have)
		memcpy(out, status_cur, sizeof(*out));
	pthread_mutex_unlock(&status_mu);
	return have;
}
