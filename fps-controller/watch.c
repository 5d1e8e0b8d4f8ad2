/*
 * watch: inotify plumbing (see watch.h).
 */
#include "watch.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

#include "log.h"

#define WATCH_MASK                                                                                      \
	(IN_CREATE | IN_DELETE | IN_MOVED_TO | IN_MOVED_FROM | IN_CLOSE_WRITE | IN_MODIFY | IN_ATTRIB | \
	 IN_DELETE_SELF | IN_MOVE_SELF)

int watch_open(struct watch *w, const char *const dirs[], int n, struct fps_err *e)
{
	memset(w, 0, sizeof(*w));
	w->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (w->fd < 0)
		return err_set(e, NULL, 0, 0, "inotify_init1: %s", strerror(errno));
	for (int i = 0; i < n && i < WATCH_MAX_DIRS; i++) {
		snprintf(w->dirs[i], sizeof(w->dirs[i]), "%s", dirs[i]);
		w->wd[i] = inotify_add_watch(w->fd, dirs[i], WATCH_MASK);
		/* A directory missing at start-up (a Secret mount not there yet) is an input
		 * error the pipeline reports; it is watched once it appears. */
		if (w->wd[i] < 0 && errno != ENOENT)
			return err_set(e, dirs[i], 0, 0, "cannot watch: %s", strerror(errno));
		w->n++;
	}
	return 0;
}

bool watch_drain(struct watch *w)
{
	bool changed = false;
	char buf[16384] __attribute__((aligned(__alignof__(struct inotify_event))));
	for (;;) {
		ssize_t len = read(w->fd, buf, sizeof(buf));
		if (len < 0 && errno == EINTR)
			continue;
		if (len <= 0)
			break;
		for (char *p = buf; p < buf + len;) {
			const struct inotify_event *ev = (const struct inotify_event *)p;
			changed = true;
			if (ev->mask & IN_Q_OVERFLOW)
				log_warn("watch: inotify queue overflowed; rereading everything");
			if (ev->mask & IN_IGNORED) {
				for (int i = 0; i < w->n; i++)
					if (w->wd[i] == ev->wd)
						w->wd[i] = -1;
			}
			p += sizeof(*ev) + ev->len;
		}
	}
	return watch_rearm(w) || changed;
}

bool watch_rearm(struct watch *w)
{
	/* A directory that went away (a volume remounted, a Secret mount removed) is watched
	 * again as soon as it is back. No event says it is back: the loop calls this every
	 * second. */
	bool back = false;
	for (int i = 0; i < w->n; i++) {
		if (w->wd[i] >= 0)
			continue;
		w->wd[i] = inotify_add_watch(w->fd, w->dirs[i], WATCH_MASK);
		if (w->wd[i] >= 0) {
			log_info("watch: watching %s again", w->dirs[i]);
			back = true;
		}
	}
	return back;
}

void watch_close(struct watch *w)
{
	if (w->fd >= 0)
		close(w->fd);
	w->fd = -1;
}
