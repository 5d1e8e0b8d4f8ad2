/*
 * fsio: the file operations the pipeline relies on: bounded whole-file reads,
 * atomic replace (write temp, fsync, rename), directory trees, content hashes.
 */
#ifndef FPS_FSIO_H
#define FPS_FSIO_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "err.h"

/* Reads a whole file (following symlinks) into a NUL-terminated buffer. Only a regular file is
 * read: a FIFO, device, socket or directory is refused without blocking (opened O_NONBLOCK,
 * checked with fstat), and a file over max bytes is refused before it is read. */
int fsio_read(const char *path, size_t max, char **out, size_t *outlen, struct fps_err *e);
/* fsio_read of dir/name, refused unless the file it resolves to (symlinks followed) lies
 * inside dir: a ConfigMap or Secret entry that links elsewhere is never read (its content
 * could otherwise surface in error messages). The kubelet's ..data links stay inside. */
int fsio_read_within(const char *dir, const char *name, size_t max, char **out, size_t *outlen, struct fps_err *e);
/* Writes data to path.tmp, fsyncs, sets mode and group, renames over path.
 * gid (gid_t)-1 leaves the group alone. */
int fsio_write_atomic(const char *path, const void *data, size_t len, mode_t mode, gid_t gid, struct fps_err *e);
int fsio_mkdirs(const char *path, mode_t mode, struct fps_err *e);
int fsio_rmtree(const char *path);
bool fsio_exists(const char *path);
/* Atomically points link at target (symlink to link.tmp, rename over link). */
int fsio_symlink_atomic(const char *target, const char *link, struct fps_err *e);
/* Hex SHA-256 of a buffer (65 bytes with the NUL). */
void fsio_sha256_hex(const void *data, size_t len, char out[65]);
/* Directory of the running executable, for finding helpers and templates. */
int fsio_self_dir(char *buf, size_t len);

/* Milliseconds on the monotonic clock: every deadline in the controller and helpers. */
long long fsio_mono_ms(void);
/* Waits until fd is ready for events (poll) or deadline (fsio_mono_ms) passes, retrying
 * on EINTR: 1 ready, 0 timed out, -1 error. */
int fsio_wait_fd(int fd, short events, long long deadline);

#endif
