/*
 * fps-acl: Squid external ACL helper for the live whitelist (docs/configuration.md).
 * Squid sends "[ID ]host [...]" per destination (%DST); we answer "ID OK tag=<route>"
 * when the host is whitelisted, "ID ERR" when not. The policy comes from a
 * snapshot file the controller replaces atomically; we notice a new file by its
 * identity (inode, size, mtime) and reload it, so whitelist edits need no Squid
 * reconfigure. A bad line gets "BH"; a bad snapshot keeps the previous policy.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fsio.h"
#include "log.h"
#include "snapshot.h"
#include "whitelist.h"

#define ACL_LINE_MAX   4096
#define ACL_RECHECK_NS (100 * 1000000LL) /* look at the snapshot's identity at most every 100 ms */

struct acl_state {
	const char *path;
	bool loaded;
	struct wl_policy policy;
	unsigned long long generation;
	struct stat id;     /* identity of the file the policy came from */
	struct stat bad_id; /* identity of the last file that failed to load (logged once) */
	long long last_check;
};

static long long now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static bool same_file(const struct stat *a, const struct stat *b)
{
	return a->st_ino == b->st_ino && a->st_dev == b->st_dev && a->st_size == b->st_size &&
	       a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

static void acl_maybe_reload(struct acl_state *st, bool force)
{
	long long now = now_ns();
	if (!force && now - st->last_check < ACL_RECHECK_NS)
		return;
	st->last_check = now;
	struct stat sb;
	if (stat(st->path, &sb) < 0) {
		if (!st->loaded && st->bad_id.st_ino != 1) {
			log_warn("snapshot %s: %s; denying every request until it appears", st->path, strerror(errno));
			st->bad_id.st_ino = 1;
		}
		return;
	}
	if ((st->loaded && same_file(&sb, &st->id)) || same_file(&sb, &st->bad_id))
		return;
	char *text = NULL;
	size_t len = 0;
	struct fps_err e;
	err_clear(&e);
	struct wl_policy np;
	unsigned long long gen = 0;
	if (fsio_read(st->path, 256u << 20, &text, &len, &e) < 0 ||
	    snapshot_parse(text, len, st->path, &np, &gen, &e) < 0) {
		char buf[1200];
		log_warn("snapshot not loaded, keeping generation %llu: %s", st->generation,
		         err_str(&e, buf, sizeof(buf)));
		st->bad_id = sb;
		free(text);
		return;
	}
	free(text);
	if (st->loaded)
		wl_policy_free(&st->policy);
	st->policy = np;
	st->generation = gen;
	st->loaded = true;
	st->id = sb;
	log_info("snapshot %s: generation %llu, %zu entries, %zu routes", st->path, gen, np.n_entries, np.n_routes);
}

/* In-place %XX decoding of a Squid-escaped field; -1 on a bad escape or a NUL. */
static int url_unescape(char *s)
{
	char *o = s;
	for (char *p = s; *p; p++) {
		if (*p == '%') {
			int hi, lo;
			if (sscanf(p + 1, "%1x%1x", (unsigned *)&hi, (unsigned *)&lo) != 2)
				return -1;
			int v = hi * 16 + lo;
			if (v == 0)
				return -1;
			*o++ = (char)v;
			p += 2;
		} else {
			*o++ = *p;
		}
	}
	*o = '\0';
	return 0;
}

/* Answers one request line into out; returns the bytes written. */
static size_t acl_answer(struct acl_state *st, char *line, char *out, size_t outlen)
{
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
	const char *sep = id ? " " : "";
	id = id ? id : "";
	if (host == NULL)
		return (size_t)snprintf(out, outlen, "%s%sBH message=\"empty request\"\n", id, sep);
	char norm[WL_NAME_MAX + 8];
	bool is_ip;
	if (url_unescape((char *)host) < 0 || wl_host_normalize(host, norm, sizeof(norm), &is_ip) < 0)
		return (size_t)snprintf(out, outlen, "%s%sERR message=\"malformed host\"\n", id, sep);
	if (!st->loaded)
		return (size_t)snprintf(out, outlen, "%s%sERR message=\"no whitelist loaded\"\n", id, sep);
	enum wl_via via;
	if (wl_lookup(&st->policy, norm, is_ip, &via))
		return (size_t)snprintf(out, outlen, "%s%sOK tag=%s\n", id, sep, wl_via_name(via));
	return (size_t)snprintf(out, outlen, "%s%sERR message=\"not in whitelist\"\n", id, sep);
}

static int write_all(const char *p, size_t len)
{
	while (len > 0) {
		ssize_t n = write(STDOUT_FILENO, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: fps-acl --snapshot FILE\n"
	           "Squid external ACL helper: answers OK tag=<route> for whitelisted destinations.\n");
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"snapshot", required_argument, NULL, 's'},
	    {"help", no_argument, NULL, 'h'},
	    {"version", no_argument, NULL, 'V'},
	    {NULL, 0, NULL, 0},
	};
	struct acl_state st = {0};
	int c;
	while ((c = getopt_long(argc, argv, "s:hV", opts, NULL)) != -1) {
		switch (c) {
		case 's':
			st.path = optarg;
			break;
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			printf("fps-acl %s\n", FPS_VERSION);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (st.path == NULL || optind != argc) {
		usage(stderr);
		return 2;
	}
	log_init("fps-acl", LOG_FMT_TEXT, LOG_LVL_INFO);
	acl_maybe_reload(&st, true);

	static char in[65536];
	static char out[65536 * 2];
	size_t have = 0;
	bool discarding = false; /* inside an over-long line: drop bytes up to its newline */
	for (;;) {
		ssize_t n = read(STDIN_FILENO, in + have, sizeof(in) - 1 - have);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		have += (size_t)n;
		acl_maybe_reload(&st, false);
		size_t o = 0, start = 0;
		for (size_t i = 0; i < have; i++) {
			if (in[i] != '\n' && in[i] != '\0')
				continue;
			if (in[i] == '\0') { /* a NUL cannot be in a host: answer the line as malformed */
				in[i] = '\x01';
				continue;
			}
			in[i] = '\0';
			if (discarding) {
				discarding = false;
				o += (size_t)snprintf(out + o, sizeof(out) - o, "BH message=\"line too long\"\n");
			} else if (i - start > ACL_LINE_MAX) {
				o += (size_t)snprintf(out + o, sizeof(out) - o, "BH message=\"line too long\"\n");
			} else {
				o += acl_answer(&st, in + start, out + o, sizeof(out) - o);
			}
			start = i + 1;
			if (sizeof(out) - o < 512) {
				if (write_all(out, o) < 0)
					return 0;
				o = 0;
			}
		}
		if (o > 0 && write_all(out, o) < 0)
			return 0;
		memmove(in, in + start, have - start);
		have -= start;
		if (have == sizeof(in) - 1) { /* a line longer than the buffer */
			discarding = true;
			have = 0;
		}
	}
	if (st.loaded)
		wl_policy_free(&st.policy);
	return 0;
}
