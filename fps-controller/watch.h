/*
 * watch: inotify on the ConfigMap and Secret directories. Kubernetes swaps the
 * `..data` symlink (IN_MOVED_TO / IN_CREATE on the directory); plain edits rename
 * over a file or truncate-write it (IN_MODIFY / IN_CLOSE_WRITE). Any of them
 * only says "look again": the pipeline decides by content whether anything changed.
 */
#ifndef FPS_WATCH_H
#define FPS_WATCH_H

#include <stdbool.h>

#include "err.h"

#define WATCH_MAX_DIRS 4

struct watch {
	int fd;
	int wd[WATCH_MAX_DIRS];
	char dirs[WATCH_MAX_DIRS][4096];
	int n;
};

int watch_open(struct watch *w, const char *const dirs[], int n, struct fps_err *e);
/* Drains pending events; returns true if any concerned a watched directory.
 * Re-adds a watch whose directory was removed and came back. */
bool watch_drain(struct watch *w);
/* Re-adds the watch of any directory that was removed and is back; true if one was. */
bool watch_rearm(struct watch *w);
void watch_close(struct watch *w);

#endif
