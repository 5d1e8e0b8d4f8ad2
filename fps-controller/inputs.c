/*
 * inputs: checking and keeping the last good Secret (see inputs.h).
 */
#include "inputs.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "cred.h"
#include "fsio.h"

const char *const inputs_secret_names[] = {"apikeys.json", "upstream-password", "tunnel-ca.pem", "tunnel-client.pem",
                                           "tunnel-client.key"};
const unsigned inputs_n_secret_names = sizeof(inputs_secret_names) / sizeof(inputs_secret_names[0]);

static void wipe(char *data, size_t len)
{
	if (data) {
		explicit_bzero(data, len);
		free(data);
	}
}

int inputs_check_secrets(const char *dir, struct fps_err *e)
{
	struct stat sb;
	if (stat(dir, &sb) < 0)
		return err_set(e, dir, 0, 0, "the Secret mount is gone: %s", strerror(errno));
	if (!S_ISDIR(sb.st_mode))
		return err_set(e, dir, 0, 0, "the Secret mount is not a directory");
	DIR *d = opendir(dir);
	if (d == NULL)
		return err_set(e, dir, 0, 0, "the Secret mount cannot be read: %s", strerror(errno));
	closedir(d);
	for (unsigned i = 0; i < inputs_n_secret_names; i++) {
		char path[PATH_MAX];
		snprintf(path, sizeof(path), "%s/%s", dir, inputs_secret_names[i]);
		struct stat lsb;
		if (lstat(path, &lsb) < 0)
			continue; /* absent: optional files */
		if (stat(path, &sb) < 0)
			return err_set(e, path, 0, 0, "cannot open: %s", strerror(errno)); /* a dangling link */
		char *data = NULL;
		size_t len = 0;
		if (fsio_read(path, CFG_SECRET_MAX_SIZE, &data, &len, e) < 0)
			return -1;
		int rc = 0;
		if (strcmp(inputs_secret_names[i], "apikeys.json") == 0) {
			struct cred_keys keys = {0};
			rc = cred_keys_parse(data, len, path, &keys, e);
			cred_keys_free(&keys);
		}
		wipe(data, len);
		if (rc < 0)
			return -1;
	}
	return 0;
}

int inputs_save_secrets(const char *from_dir, const char *to_dir, struct fps_err *e)
{
	if (fsio_mkdirs(to_dir, 0700, e) < 0)
		return -1;
	if (chmod(to_dir, 0700) < 0)
		return err_set(e, to_dir, 0, 0, "chmod: %s", strerror(errno));
	for (unsigned i = 0; i < inputs_n_secret_names; i++) {
		char src[PATH_MAX], dst[PATH_MAX];
		snprintf(src, sizeof(src), "%s/%s", from_dir, inputs_secret_names[i]);
		snprintf(dst, sizeof(dst), "%s/%s", to_dir, inputs_secret_names[i]);
		if (!fsio_exists(src)) {
			if (unlink(dst) < 0 && errno != ENOENT)
				return err_set(e, dst, 0, 0, "cannot remove: %s", strerror(errno));
			continue;
		}
		char *data = NULL;
		size_t len = 0;
		if (fsio_read(src, CFG_SECRET_MAX_SIZE, &data, &len, e) < 0)
			return -1;
		int rc = fsio_write_atomic(dst, data, len, 0600, (gid_t)-1, e);
		wipe(data, len);
		if (rc < 0)
			return -1;
	}
	return 0;
}
