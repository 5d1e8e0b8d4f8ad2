/*
 * fsio: file helpers for the pipeline. Writes are atomic (temp + fsync + rename)
 * so a reader (Squid, fps-acl, a restart) never sees half a file.
 */
#include "fsio.h"

#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int fsio_read(const char *path, size_t max, char **out, size_t *outlen, struct fps_err *e)
{
	/* O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer. */
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
	if (fd < 0)
		return err_sys(e, errno, path, "cannot open: %s", strerror(errno));
	struct stat sb;
	if (fstat(fd, &sb) < 0) {
		int saved = errno;
		close(fd);
		return err_sys(e, saved, path, "cannot stat: %s", strerror(saved));
	}
	if (!S_ISREG(sb.st_mode)) {
		close(fd);
		return err_set(e, path, 0, 0, "not a regular file (%s)",
		               S_ISDIR(sb.st_mode)    ? "a directory"
		               : S_ISFIFO(sb.st_mode) ? "a FIFO"
		               : S_ISSOCK(sb.st_mode) ? "a socket"
		                                      : "a device");
	}
	if ((unsigned long long)sb.st_size > (unsigned long long)max) {
		close(fd);
		return err_set(e, path, 0, 0, "file of %lld bytes is larger than the limit of %zu bytes",
		               (long long)sb.st_size, max);
	}
	size_t cap = 4096, len = 0;
	char *buf = malloc(cap);
	if (buf == NULL) {
		close(fd);
		return err_set(e, path, 0, 0, "out of memory");
	}
	for (;;) {
		if (len + 1 >= cap) {
			if (cap > max) {
				free(buf);
				close(fd);
				return err_set(e, path, 0, 0, "file larger than the limit of %zu bytes", max);
			}
			char *nb = realloc(buf, cap * 2);
			if (nb == NULL) {
				free(buf);
				close(fd);
				return err_set(e, path, 0, 0, "out of memory");
			}
			buf = nb;
			cap *= 2;
		}
		ssize_t n = read(fd, buf + len, cap - len - 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int saved = errno;
			free(buf);
			close(fd);
			return err_sys(e, saved, path, "read failed: %s", strerror(saved));
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	close(fd);
	if (len > max) {
		free(buf);
		return err_set(e, path, 0, 0, "file larger than the limit of %zu bytes", max);
	}
	buf[len] = '\0';
	*out = buf;
	if (outlen)
		*outlen = len;
	return 0;
}

int fsio_read_within(const char *dir, const char *name, size_t max, char **out, size_t *outlen, struct fps_err *e)
{
	char path[PATH_MAX], rdir[PATH_MAX], rfile[PATH_MAX];
	if (snprintf(path, sizeof(path), "%s/%s", dir, name) >= (int)sizeof(path))
		return err_set(e, dir, 0, 0, "path too long");
	if (realpath(dir, rdir) == NULL)
		return err_sys(e, errno, dir, "cannot resolve: %s", strerror(errno));
	if (realpath(path, rfile) == NULL)
		return err_sys(e, errno, path, "cannot open: %s", strerror(errno));
	size_t dl = strlen(rdir);
	if (strncmp(rfile, rdir, dl) != 0 || (rfile[dl] != '/' && strcmp(rdir, "/") != 0))
		return err_set(e, path, 0, 0, "refused: it resolves to a file outside %s", dir);
	if (fsio_read(rfile, max, out, outlen, e) < 0) {
		snprintf(e->file, sizeof(e->file), "%s", path); /* the name the user knows */
		return -1;
	}
	return 0;
}

int fsio_write_atomic(const char *path, const void *data, size_t len, mode_t mode, gid_t gid, struct fps_err *e)
{
	char tmp[PATH_MAX];
	if (snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid()) >= (int)sizeof(tmp))
		return err_set(e, path, 0, 0, "path too long");
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode & 0777);
	if (fd < 0)
		return err_sys(e, errno, tmp, "cannot create: %s", strerror(errno));
	/* fchmod: the umask must not loosen or tighten what the caller asked for. */
	if (fchmod(fd, mode & 0777) < 0 || (gid != (gid_t)-1 && fchown(fd, (uid_t)-1, gid) < 0))
		goto fail;
	const char *p = data;
	size_t left = len;
	while (left > 0) {
		ssize_t n = write(fd, p, left);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			goto fail;
		p += n;
		left -= (size_t)n;
	}
	if (fsync(fd) < 0)
		goto fail;
	if (close(fd) < 0) {
		fd = -1;
		goto fail;
	}
	fd = -1;
	if (rename(tmp, path) < 0)
		goto fail;
	return 0;
fail:;
	int saved = errno;
	if (fd >= 0)
		close(fd);
	unlink(tmp);
	return err_sys(e, saved, path, "cannot write: %s", strerror(saved));
}

int fsio_mkdirs(const char *path, mode_t mode, struct fps_err *e)
{
	char buf[PATH_MAX];
	if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf))
		return err_set(e, path, 0, 0, "path too long");
	for (char *p = buf + 1;; p++) {
		if (*p == '/' || *p == '\0') {
			char c = *p;
			*p = '\0';
			if (mkdir(buf, mode) < 0 && errno != EEXIST)
				return err_sys(e, errno, buf, "cannot create directory: %s", strerror(errno));
			*p = c;
			if (c == '\0')
				break;
		}
	}
	return 0;
}

int fsio_rmtree(const char *path)
{
	struct stat st;
	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : -1;
	if (!S_ISDIR(st.st_mode))
		return unlink(path);
	DIR *d = opendir(path);
	if (d == NULL)
		return -1;
	struct dirent *de;
	int rc = 0;
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		char sub[PATH_MAX];
		if (snprintf(sub, sizeof(sub), "%s/%s", path, de->d_name) >= (int)sizeof(sub)) {
			rc = -1;
			continue;
		}
		if (fsio_rmtree(sub) < 0)
			rc = -1;
	}
	closedir(d);
	if (rmdir(path) < 0)
		rc = -1;
	return rc;
}

bool fsio_exists(const char *path)
{
	return access(path, F_OK) == 0;
}

int fsio_symlink_atomic(const char *target, const char *link, struct fps_err *e)
{
	char tmp[PATH_MAX];
	if (snprintf(tmp, sizeof(tmp), "%s.tmp.%d", link, (int)getpid()) >= (int)sizeof(tmp))
		return err_set(e, link, 0, 0, "path too long");
	unlink(tmp);
	if (symlink(target, tmp) < 0)
		return err_sys(e, errno, tmp, "cannot create symlink: %s", strerror(errno));
	if (rename(tmp, link) < 0) {
		int saved = errno;
		unlink(tmp);
		return err_sys(e, saved, link, "cannot replace symlink: %s", strerror(saved));
	}
	return 0;
}

void fsio_sha256_hex(const void *data, size_t len, char out[65])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL);
	for (unsigned int i = 0; i < mdlen && i < 32; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
	out[64] = '\0';
}

int fsio_self_dir(char *buf, size_t len)
{
	ssize_t n = readlink("/proc/self/exe", buf, len - 1);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	char *slash = strrchr(buf, '/');
	if (slash == NULL)
		return -1;
	*slash = '\0';
	return 0;
}

long long fsio_mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int fsio_wait_fd(int fd, short events, long long deadline)
{
	for (;;) {
		long long left = deadline - fsio_mono_ms();
		if (left <= 0)
			return 0;
		struct pollfd p = {.fd = fd, .events = events};
		int n = poll(&p, 1, (int)left);
		if (n < 0 && errno == EINTR)
			continue;
		return n < 0 ? -1 : (n > 0 ? 1 : 0);
	}
}
