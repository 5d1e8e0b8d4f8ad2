/*
 * state: generation directories and the atomic `current` swap (see state.h).
 * Directories are 0750 and files 0640, group = Squid's group when we run as root,
 * because squid.conf may carry the upstream password and Squid re-reads it as
 * its unprivileged user on every reconfigure.
 */
#include "state.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "fsio.h"
#include "log.h"
#include "preflight.h"

static int mkdir_owned(const struct state *s, const char *path, mode_t mode, bool owner_squid, struct fps_err *e)
{
	if (fsio_mkdirs(path, mode, e) < 0)
		return -1;
	struct stat sb;
	if (stat(path, &sb) < 0)
		return err_sys(e, errno, path, "stat: %s", strerror(errno));
	/* A directory someone else owns (a kubelet emptyDir is root's, mode 2777) is
	 * used as it is: we only need to be able to write into it. */
	if (sb.st_uid != geteuid() && !s->as_root) {
		if (access(path, W_OK | X_OK) < 0)
			return err_sys(e, errno, path, "not writable: %s", strerror(errno));
		return 0;
	}
	if (chmod(path, mode) < 0)
		return err_sys(e, errno, path, "chmod: %s", strerror(errno));
	if (s->as_root && chown(path, owner_squid ? s->squid_uid : 0, s->squid_gid) < 0)
		return err_sys(e, errno, path, "chown: %s", strerror(errno));
	return 0;
}

int state_pick_loopback_port(void)
{
	int low = 32768;
	FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "re");
	if (f) {
		if (fscanf(f, "%d", &low) != 1 || low < 2048)
			low = 32768;
		fclose(f);
	}
	unsigned seed = (unsigned)time(NULL) ^ ((unsigned)getpid() << 16);
	for (int tries = 0; tries < 200; tries++) {
		int port = 1024 + (int)(rand_r(&seed) % (unsigned)(low - 1024));
		int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			return 0;
		struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
		sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		int ok = bind(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0;
		close(fd);
		if (ok)
			return port;
	}
	return 0;
}

/* The cache-manager port stays the same across controller restarts (a sidecar Squid keeps
 * listening on it): reuse the recorded one, else pick one and record it. */
static int state_mgr_port(struct state *s, struct fps_err *e)
{
	char path[PATH_MAX + 16], *text = NULL;
	snprintf(path, sizeof(path), "%s/mgr.port", s->run_dir);
	struct fps_err ignored;
	if (fsio_read(path, 64, &text, NULL, &ignored) == 0) {
		char *end;
		long v = strtol(text, &end, 10);
		bool ok = v > 0 && v < 65536 && (*end == '\n' || *end == '\0');
		free(text);
		if (ok) {
			s->mgr_port = (int)v;
			return 0;
		}
	}
	s->mgr_port = state_pick_loopback_port();
	if (s->mgr_port == 0)
		return err_set(e, NULL, 0, 0, "no free loopback port for Squid's cache manager");
	char buf[16];
	int n = snprintf(buf, sizeof(buf), "%d\n", s->mgr_port);
	return fsio_write_atomic(path, buf, (size_t)n, 0644, (gid_t)-1, e);
}

/* One controller per state directory: a second one (a stray `run`, a pod started twice on
 * the same volume) would write generations and mgr.port under the first one's Squid. The
 * lock is released by the kernel when the holder dies, however it dies; the file keeps the
 * holder's pid for the message. */
static int state_lock(struct state *s, struct fps_err *e)
{
	char path[PATH_MAX + 32];
	snprintf(path, sizeof(path), "%s/controller.lock", s->dir);
	s->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (s->lock_fd < 0)
		return err_sys(e, errno, path, "cannot open the state directory's lock file: %s", strerror(errno));
	if (flock(s->lock_fd, LOCK_EX | LOCK_NB) < 0) {
		int err = errno;
		char pid[24] = "";
		ssize_t n = pread(s->lock_fd, pid, sizeof(pid) - 1, 0);
		pid[n > 0 ? n : 0] = '\0';
		pid[strcspn(pid, "\n")] = '\0';
		close(s->lock_fd);
		s->lock_fd = -1;
		if (err == EWOULDBLOCK)
			return err_set(e, s->dir, 0, 0,
			               "state directory is in use by another fps-controller (pid %s); one controller "
			               "per state directory",
			               pid[0] ? pid : "unknown");
		return err_sys(e, err, path, "cannot lock the state directory: %s", strerror(err));
	}
	char buf[24];
	int n = snprintf(buf, sizeof(buf), "%ld\n", (long)getpid());
	if (ftruncate(s->lock_fd, 0) < 0 || pwrite(s->lock_fd, buf, (size_t)n, 0) != n)
		log_warn("%s: cannot record this controller's pid: %s", path, strerror(errno));
	return 0;
}

int state_open(struct state *s, const char *dir, struct fps_err *e)
{
	memset(s, 0, sizeof(*s));
	s->lock_fd = -1;
	if (strlen(dir) > 1024)
		return err_set(e, dir, 0, 0, "--state-dir path longer than 1024 bytes");
	if (dir[0] != '/')
		return err_set(e, dir, 0, 0, "--state-dir must be an absolute path");
	snprintf(s->dir, sizeof(s->dir), "%s", dir);
	snprintf(s->current, sizeof(s->current), "%s/current", dir);
	snprintf(s->run_dir, sizeof(s->run_dir), "%s/run", dir);
	snprintf(s->cache_dir, sizeof(s->cache_dir), "%s/cache", dir);
	snprintf(s->secrets_dir, sizeof(s->secrets_dir), "%s/secrets", dir);
	s->as_root = geteuid() == 0;
	s->squid_uid = geteuid();
	s->squid_gid = getegid();
	if (s->as_root) {
		/* Debian's Squid drops to cache_effective_user "proxy" after binding. */
		struct passwd *pw = getpwnam("proxy");
		if (pw == NULL)
			return err_set(e, NULL, 0, 0, "running as root but user 'proxy' (Squid's user) does not exist");
		s->squid_uid = pw->pw_uid;
		s->squid_gid = pw->pw_gid;
	}
	char gen[PATH_MAX];
	snprintf(gen, sizeof(gen), "%s/gen", dir);
	if (mkdir_owned(s, dir, 0750, false, e) < 0 || state_lock(s, e) < 0 ||
	    mkdir_owned(s, gen, 0750, false, e) < 0 || mkdir_owned(s, s->run_dir, 0750, true, e) < 0 ||
	    mkdir_owned(s, s->secrets_dir, 0750, false, e) < 0)
		return -1;
	/* fps-acl (Squid's user) writes the denied report here; the controller merges it */
	snprintf(s->denied_dir, sizeof(s->denied_dir), "%s/denied", s->run_dir);
	if (mkdir_owned(s, s->denied_dir, 0750, true, e) < 0)
		return -1;
	return state_mgr_port(s, e);
}

void state_gen_dir(const struct state *s, unsigned long long gen, char *buf, size_t len)
{
	snprintf(buf, len, "%s/gen/%llu", s->dir, gen);
}

unsigned long long state_current_gen(const struct state *s)
{
	char target[PATH_MAX];
	ssize_t n = readlink(s->current, target, sizeof(target) - 1);
	if (n <= 0)
		return 0;
	target[n] = '\0';
	const char *slash = strrchr(target, '/');
	return strtoull(slash ? slash + 1 : target, NULL, 10);
}

unsigned long long state_max_gen(const struct state *s)
{
	char gen[PATH_MAX];
	snprintf(gen, sizeof(gen), "%s/gen", s->dir);
	DIR *d = opendir(gen);
	if (d == NULL)
		return 0;
	unsigned long long max = 0;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		char *end;
		unsigned long long n = strtoull(de->d_name, &end, 10);
		if (*end == '\0' && n > max)
			max = n;
	}
	closedir(d);
	return max;
}

static int write_in(const struct state *s, const char *dir, const char *name, const char *data, size_t len,
                    struct fps_err *e)
{
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	char *slash = strrchr(path, '/');
	if (slash && slash > path + strlen(dir)) {
		*slash = '\0';
		if (mkdir_owned(s, path, 0750, false, e) < 0)
			return -1;
		*slash = '/';
	}
	return fsio_write_atomic(path, data, len, 0640, s->as_root ? s->squid_gid : (gid_t)-1, e);
}

int state_write_file(const struct state *s, unsigned long long gen, const char *name, const char *data, size_t len,
                     struct fps_err *e)
{
	char dir[PATH_MAX];
	state_gen_dir(s, gen, dir, sizeof(dir));
	return write_in(s, dir, name, data, len, e);
}

/* Squid's own error templates, linked beside ours: error_directory replaces the
 * whole set, and a missing template is an "Internal Error" page. */
int state_link_error_templates(const char *errors_dir, struct fps_err *e)
{
	static const char *const sysdirs[] = {"/usr/share/squid/errors/templates", "/usr/share/squid/errors/en"};
	DIR *d = NULL;
	const char *sys = NULL;
	for (size_t i = 0; i < 2 && d == NULL; i++)
		if ((d = opendir(sysdirs[i])) != NULL)
			sys = sysdirs[i];
	if (d == NULL)
		return err_sys(e, errno, sysdirs[0], "Squid's error templates are missing: %s", strerror(errno));
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (strncmp(de->d_name, "ERR_", 4) != 0)
			continue;
		char link[PATH_MAX], target[PATH_MAX];
		snprintf(link, sizeof(link), "%s/%s", errors_dir, de->d_name);
		snprintf(target, sizeof(target), "%s/%s", sys, de->d_name);
		if (!fsio_exists(link) && symlink(target, link) < 0) {
			closedir(d);
			return err_sys(e, errno, link, "symlink: %s", strerror(errno));
		}
	}
	closedir(d);
	return 0;
}

int state_write_gen(const struct state *s, unsigned long long gen, const struct render_out *out,
                    const struct fps_config *c, struct fps_err *e)
{
	char dir[PATH_MAX], errors[PATH_MAX + 16];
	state_gen_dir(s, gen, dir, sizeof(dir));
	fsio_rmtree(dir); /* a leftover from a run that died half-way */
	snprintf(errors, sizeof(errors), "%s/errors", dir);
	if (mkdir_owned(s, dir, 0750, false, e) < 0 || mkdir_owned(s, errors, 0750, false, e) < 0)
		return -1;
	for (size_t i = 0; i < out->n_files; i++)
		if (write_in(s, dir, out->files[i].name, out->files[i].data, out->files[i].len, e) < 0)
			return -1;
	if (state_link_error_templates(errors, e) < 0)
		return -1;
	/* The inputs: what a restart with a broken ConfigMap comes back on. */
	if (c->yaml_text && write_in(s, dir, "input/" CFG_YAML_NAME, c->yaml_text, c->yaml_len, e) < 0)
		return -1;
	if (c->json_text && write_in(s, dir, "input/" CFG_JSON_NAME, c->json_text, c->json_len, e) < 0)
		return -1;
	return 0;
}

int state_activate(const struct state *s, unsigned long long gen, struct fps_err *e)
{
	char target[64];
	snprintf(target, sizeof(target), "gen/%llu", gen);
	return fsio_symlink_atomic(target, s->current, e);
}

void state_prune(const struct state *s, unsigned long long keep1, unsigned long long keep2)
{
	char gdir[PATH_MAX];
	snprintf(gdir, sizeof(gdir), "%s/gen", s->dir);
	DIR *d = opendir(gdir);
	if (d == NULL)
		return;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		char *end;
		unsigned long long n = strtoull(de->d_name, &end, 10);
		if (de->d_name[0] == '.' || *end != '\0' || n == keep1 || n == keep2)
			continue;
		char path[PATH_MAX + 300];
		snprintf(path, sizeof(path), "%s/%s", gdir, de->d_name);
		if (fsio_rmtree(path) < 0)
			log_warn_errno("state: cannot remove old generation %s", path);
	}
	closedir(d);
}

int state_write_secret(const struct state *s, const char *name, const char *data, size_t len, struct fps_err *e)
{
	return write_in(s, s->secrets_dir, name, data, len, e);
}

bool state_squid_user(uid_t *uid, gid_t *gid)
{
	if (geteuid() != 0)
		return false;
	struct passwd *pw = getpwnam("proxy");
	if (pw == NULL)
		return false;
	*uid = pw->pw_uid;
	*gid = pw->pw_gid;
	return true;
}

static const char *const state_helper_names[] = {"fps-auth", "fps-acl"};

int state_install_helpers(const struct state *s, const char *bin_dir, char *out, size_t len, struct fps_err *e)
{
	snprintf(out, len, "%s", bin_dir);
	if (!s->as_root)
		return 0;
	bool reachable = true;
	for (size_t i = 0; i < 2 && reachable; i++) {
		char path[PATH_MAX + 16];
		snprintf(path, sizeof(path), "%s/%s", bin_dir, state_helper_names[i]);
		reachable = pf_user_can_exec(s->squid_uid, s->squid_gid, path);
	}
	if (reachable)
		return 0;
	char dir[PATH_MAX + 8];
	snprintf(dir, sizeof(dir), "%s/bin", s->dir);
	if (mkdir_owned(s, dir, 0750, false, e) < 0)
		return -1;
	for (size_t i = 0; i < 2; i++) {
		char from[PATH_MAX + 16], to[PATH_MAX + 24], *data = NULL;
		size_t n = 0;
		snprintf(from, sizeof(from), "%s/%s", bin_dir, state_helper_names[i]);
		snprintf(to, sizeof(to), "%s/%s", dir, state_helper_names[i]);
		if (fsio_read(from, (size_t)256 << 20, &data, &n, e) < 0)
			return -1;
		int rc = fsio_write_atomic(to, data, n, 0750, s->squid_gid, e);
		free(data);
		if (rc < 0)
			return -1;
	}
	log_info("helpers: user proxy cannot execute %s/fps-auth and fps-acl: Squid runs copies from %s", bin_dir, dir);
	snprintf(out, len, "%s", dir);
	return 0;
}

int state_check_squid_access(const char *state_dir, const char *helper_dir, const char *hosts_file, char *why,
                             size_t len)
{
	why[0] = '\0';
	uid_t uid;
	gid_t gid;
	if (!state_squid_user(&uid, &gid))
		return 0;
	char run[PATH_MAX + 8], cur[PATH_MAX + 16], conf[PATH_MAX + 32], errors[PATH_MAX + 32], keys[PATH_MAX + 32],
	    snap[PATH_MAX + 32], auth[PATH_MAX + 16], acl[PATH_MAX + 16];
	const char *sd = state_dir ? state_dir : "";
	snprintf(run, sizeof(run), "%s/run", sd);
	snprintf(cur, sizeof(cur), "%s/current", sd);
	snprintf(conf, sizeof(conf), "%s/squid.conf", cur);
	snprintf(errors, sizeof(errors), "%s/errors", cur);
	snprintf(snap, sizeof(snap), "%s/acl.snapshot", cur);
	snprintf(keys, sizeof(keys), "%s/secrets/apikeys.json", sd);
	snprintf(auth, sizeof(auth), "%s/fps-auth", helper_dir ? helper_dir : "");
	snprintf(acl, sizeof(acl), "%s/fps-acl", helper_dir ? helper_dir : "");
	bool st = state_dir && state_dir[0], hd = helper_dir && helper_dir[0];
	struct pf_path need[] = {
	    {st ? sd : NULL, PF_EXEC, "the state directory"},
	    {st ? run : NULL, PF_WRITE | PF_EXEC, "Squid's log and pid directory"},
	    {st ? conf : NULL, PF_READ, "the active squid.conf"},
	    {st ? errors : NULL, PF_READ | PF_EXEC, "the error pages"},
	    {st ? snap : NULL, PF_READ, "fps-acl's whitelist snapshot"},
	    {st ? keys : NULL, PF_READ, "fps-auth's copy of the API keys"},
	    {hd ? auth : NULL, PF_EXEC, "the auth helper"},
	    {hd ? acl : NULL, PF_EXEC, "the whitelist helper"},
	    {hosts_file, PF_READ, "proxy.hosts_file"},
	};
	return pf_user_access(uid, gid, need, sizeof(need) / sizeof(need[0]), true, why, len);
}
int state_volume(const struct state *s, unsigned long long *free_bytes, unsigned long long *total_bytes)
{
	struct statvfs v;
	if (statvfs(s->dir, &v) < 0)
		return -1;
	*free_bytes = (unsigned long long)v.f_bavail * v.f_frsize;
	*total_bytes = (unsigned long long)v.f_blocks * v.f_frsize;
	return 0;
}
