/*
 * fps-acl: Squid external ACL helper for the live whitelist (docs/configuration.md).
 * Squid sends "[ID ]host [...]" per destination (%DST); we answer "ID OK tag=<route>"
 * when the host is whitelisted, "ID ERR" when not. The policy comes from a
 * snapshot file the controller replaces atomically; we notice a new file by its
 * identity (inode, size, mtime) and reload it, so whitelist edits need no Squid
 * reconfigure. A bad line gets "BH"; a bad snapshot keeps the previous policy.
 * With --denied-dir, Squid also passes the port and the user ("ID host port user"), and
 * each denial is counted (denied.h) and written there at most once a second, after the
 * answers of a batch went out, so the report never delays a verdict.
 * With --generation-file (genword.h), the snapshot is reloaded when, and only when, the
 * generation the controller published is newer than the one served, looked at before every
 * answer: every fps-acl of the instance switches together (one verdict at a time).
 */
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "aclproto.h"
#include "denied.h"
#include "fsio.h"
#include "genword.h"
#include "log.h"
#include "snapshot.h"
#include "whitelist.h"

#define ACL_LINE_MAX   4096
#define ACL_RECHECK_NS (100 * 1000000LL)  /* look at the snapshot's identity at most every 100 ms */
#define ACL_DENIED_NS  (1000 * 1000000LL) /* write the denied report at most once a second */
#define ACL_AHEAD_NS   (2000 * 1000000LL) /* how long a snapshot newer than the word waits for it */

struct acl_state {
	const char *path;
	bool loaded;
	struct wl_policy policy;
	unsigned long long generation;
	struct stat id;     /* identity of the file the policy came from */
	struct stat bad_id; /* identity of the last file that failed to load (logged once) */
	long long last_check;
	struct genword gw; /* --generation-file: the controller's published generation */
	uint64_t tried;    /* the word at the last look at the snapshot */

	/* denied-destination report (NULL dir: off) */
	const char *denied_dir;
	struct denied_table denied;
	bool denied_dirty;
	long long denied_written; /* monotonic ns of the last write */
	double start_unix;
};

static double wall_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME_COARSE, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

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
	/* Published generations only: the snapshot `current` holds is not looked at until
	 * the word says a newer generation is in place. */
	uint64_t want = genword_load(&st->gw);
	if (st->gw.word && st->loaded && want <= st->generation)
		return;
	long long now = now_ns();
	if (st->gw.word) {
		/* A word the snapshot did not reach (a snapshot that failed to load): look
		 * again when the word moves, else at the usual pace. */
		if (want == st->tried && !force && now - st->last_check < ACL_RECHECK_NS)
			return;
		st->tried = want;
	} else if (!force && now - st->last_check < ACL_RECHECK_NS) {
		return;
	}
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
	if (st->gw.word && gen > want) {
		/* `current` moved to a generation the controller publishes right after (the two
		 * are consecutive steps): answering under it first would let another fps-acl
		 * answer under the older one afterwards. Wait for the word (bounded: a
		 * controller that died between the two steps does not stop the answers). */
		struct timespec pause = {0, 50000};
		while (genword_load(&st->gw) < gen && now_ns() - now < ACL_AHEAD_NS)
			nanosleep(&pause, NULL);
		if (genword_load(&st->gw) < gen)
			log_warn("snapshot %s: generation %llu is not published (word %llu): serving it anyway",
			         st->path, gen, (unsigned long long)genword_load(&st->gw));
	}
	if (st->loaded)
		wl_policy_free(&st->policy);
	st->policy = np;
	st->generation = gen;
	st->loaded = true;
	st->id = sb;
	log_info("snapshot %s: generation %llu, %zu entries, %zu routes", st->path, gen, np.n_entries, np.n_routes);
}

static void acl_count_denied(struct acl_state *st, const struct aclproto_denial *d, bool would)
{
	unsigned port = 0;
	if (d->port && strspn(d->port, "0123456789") == strlen(d->port) && strlen(d->port) <= 5)
		port = (unsigned)atoi(d->port);
	if (port > 65535)
		port = 0;
	/* %un is URL-escaped; a product name is [A-Za-z0-9._-], which Squid leaves as it is */
	char product[DENIED_PRODUCT_MAX + 1] = "";
	denied_product(d->user, product, sizeof(product));
	denied_add(&st->denied, d->host, port, product, wall_now(), 1, would);
	st->denied_dirty = true;
}

static void acl_denied_flush(struct acl_state *st, bool force)
{
	if (!st->denied_dir || !st->denied_dirty)
		return;
	long long now = now_ns();
	if (!force && now - st->denied_written < ACL_DENIED_NS)
		return;
	st->denied_written = now;
	st->denied_dirty = false;
	static bool warned;
	if (denied_write(st->denied_dir, &st->denied, (int)getpid(), st->start_unix, st->generation) < 0 && !warned) {
		log_warn("denied report: cannot write into %s: %s (keeps counting)", st->denied_dir, strerror(errno));
		warned = true;
	}
}

/* Milliseconds until the pending denied report may be written; -1 when none is pending. */
static int acl_denied_wait_ms(const struct acl_state *st)
{
	if (!st->denied_dir || !st->denied_dirty)
		return -1;
	long long left = st->denied_written + ACL_DENIED_NS - now_ns();
	return left <= 0 ? 0 : (int)(left / 1000000) + 1;
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
	fprintf(f, "usage: fps-acl --snapshot FILE [--denied-dir DIR] [--generation-file FILE]\n"
	           "Squid external ACL helper: answers OK tag=<route> for whitelisted destinations.\n"
	           "With --denied-dir, lines are \"[ID ]host port user\" and denials are counted into DIR.\n");
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"snapshot", required_argument, NULL, 's'},
	    {"denied-dir", required_argument, NULL, 'd'},
	    {"generation-file", required_argument, NULL, 'g'},
	    {"help", no_argument, NULL, 'h'},
	    {"version", no_argument, NULL, 'V'},
	    {NULL, 0, NULL, 0},
	};
	struct acl_state st = {0};
	int c;
	const char *genfile = NULL;
	/* Our stderr is Squid's, which is a pipe to the controller that started it: a Squid
	 * adopted by the next controller outlived that reader, and a log line must not kill
	 * us (as fps-auth, write errors are ignored). */
	signal(SIGPIPE, SIG_IGN);
	while ((c = getopt_long(argc, argv, "s:d:g:hV", opts, NULL)) != -1) {
		switch (c) {
		case 's':
			st.path = optarg;
			break;
		case 'd':
			st.denied_dir = optarg;
			break;
		case 'g':
			genfile = optarg;
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
	struct fps_err ge;
	if (genfile && genword_map(&st.gw, genfile, &ge) < 0) {
		char buf[1200];
		/* Still answers, noticing new snapshots on its own (up to 100 ms apart from its peers). */
		log_warn("%s: generations are not followed together", err_str(&ge, buf, sizeof(buf)));
	}
	acl_maybe_reload(&st, true);
	st.start_unix = wall_now();
	if (st.denied_dir && denied_init(&st.denied, DENIED_CAP, st.start_unix) < 0) {
		log_warn("denied report: out of memory: not counting");
		st.denied_dir = NULL;
	}

	static char in[65536];
	static char out[65536 * 2];
	size_t have = 0;
	bool discarding = false; /* inside an over-long line: drop bytes up to its newline */
	for (;;) {
		int wait = acl_denied_wait_ms(&st);
		if (wait >= 0) { /* a report is pending: write it when due, even if Squid goes quiet */
			struct pollfd pfd = {.fd = STDIN_FILENO, .events = POLLIN};
			if (poll(&pfd, 1, wait) == 0) {
				acl_denied_flush(&st, false);
				continue;
			}
		}
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
				struct aclproto_denial d;
				if (st.gw.word)
					acl_maybe_reload(&st, false); /* one load per answer (genword.h) */
				o += aclproto_answer_ex(st.loaded ? &st.policy : NULL, in + start, out + o,
				                        sizeof(out) - o, &d);
				if (d.denied && st.denied_dir)
					acl_count_denied(&st, &d, st.policy.report_mode);
			}
			start = i + 1;
			if (sizeof(out) - o < 512) {
				if (write_all(out, o) < 0)
					return 0;
				o = 0;
			}
		}
		if (o > 0 && write_all(out, o) < 0)
			break;
		acl_denied_flush(&st, false); /* after the answers went out */
		memmove(in, in + start, have - start);
		have -= start;
		if (have == sizeof(in) - 1) { /* a line longer than the buffer */
			discarding = true;
			have = 0;
		}
	}
	acl_denied_flush(&st, true); /* Squid closed our stdin: the last counts still reach the controller */
	if (st.denied_dir)
		denied_free(&st.denied);
	if (st.loaded)
		wl_policy_free(&st.policy);
	genword_close(&st.gw);
	return 0;
}
