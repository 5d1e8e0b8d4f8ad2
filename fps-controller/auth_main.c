/*
 * fps-auth: Squid basic-auth helper for the products' credential scheme (docs/agents.md). Reads
 * "[ID ]user password" lines on stdin, answers OK/ERR/BH on stdout, and follows key rotation in
 * the Secret mount without a Squid reconfigure. Logs go to stderr, i.e. Squid's cache.log.
 *
 *   fps-auth --keys FILE [--products A,B] [--concurrency auto|on|off]
 *
 * --concurrency tells whether Squid sends channel IDs (auth_param basic children N concurrency=M
 * with M > 0). The default, auto, decides per line: Squid escapes every space, so a line has
 * either 3 fields (ID user password) or 2. The controller passes on/off to remove the guesswork.
 *
 * A keys file that is missing or broken at start-up does not stop the helper: it answers
 * ERR "no valid API key" and keeps watching the file, because Squid dies (FATAL "too few
 * basicauthenticator processes are running") when its helpers exit in a loop.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <poll.h>

#include "authproto.h"
#include "authreasons.h"
#include "cred.h"
#include "err.h"
#include "log.h"

#ifndef FPS_VERSION
#define FPS_VERSION "0.0.0"
#endif

#define EXIT_USAGE   2
#define EXIT_RUNTIME 3

/* Input buffer: one maximal line plus room to read more without shifting every time. */
#define IN_CAP  (2 * AUTHPROTO_LINE_MAX + 2)
#define OUT_CAP (64 * 1024)

/* How often the keys file is checked, at most, before a verdict. */
#define KEYS_CHECK_NS 1000000000LL
/* Warn when the newest key expires within this many seconds (as the controller does). */
#define KEYS_WARN_SECONDS (10 * 24 * 3600)

struct keys_state {
	const char *path;
	struct cred_keys keys;
	long long last_check_ns;
	bool have_ident;
	/* Identity of the file the keys came from (or failed to come from): stat() follows the
	 * kubelet's symlink chain apikeys.json -> ..data/apikeys.json -> ..2026_11_24_xx/, so a
	 * rotation shows up as a new inode even though the visible path never changes. */
	dev_t dev;
	ino_t ino;
	off_t size;
	struct timespec mtim, ctim;
	bool stat_failed; /* already logged that stat() fails */
	bool none_valid_logged;
};

static long long mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void fmt_time(time_t t, char *buf, size_t len)
{
	struct tm tm;
	if (t == 0 || gmtime_r(&t, &tm) == NULL)
		snprintf(buf, len, "never");
	else
		strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void keys_report(const struct keys_state *ks, const char *what)
{
	time_t now = time(NULL);
	time_t newest = cred_newest_expiry(&ks->keys);
	char when[32];
	fmt_time(newest, when, sizeof(when));
	size_t valid = cred_keys_valid(&ks->keys, now);
	log_info("%s: %s %zu keys (%zu valid now), newest expires %s", ks->path, what, ks->keys.n, valid, when);
	if (valid == 0)
		log_error("%s: every key has expired: all agents are refused", ks->path);
	else if (newest - now < KEYS_WARN_SECONDS)
		log_warn("%s: newest key expires in %lld s (%s): rotate the keys", ks->path, (long long)(newest - now),
		         when);
}

/* Checks the keys file (at most once per KEYS_CHECK_NS unless forced) and swaps in new keys
 * only once they are fully loaded; a broken file keeps the old keys and is logged once. */
static void keys_refresh(struct keys_state *ks, bool force)
{
	long long now = mono_ns();
	if (!force && now - ks->last_check_ns < KEYS_CHECK_NS)
		return;
	ks->last_check_ns = now;

	struct stat st;
	if (stat(ks->path, &st) != 0) {
		if (!ks->stat_failed && ks->keys.n > 0)
			log_error_errno("%s: cannot stat keys file, keeping %zu previous keys", ks->path, ks->keys.n);
		else if (!ks->stat_failed)
			log_error_errno("%s: cannot stat keys file", ks->path);
		ks->stat_failed = true;
		ks->have_ident = false; /* whatever appears next is new */
		return;
	}
	ks->stat_failed = false;
	if (ks->have_ident && st.st_dev == ks->dev && st.st_ino == ks->ino && st.st_size == ks->size &&
	    st.st_mtim.tv_sec == ks->mtim.tv_sec && st.st_mtim.tv_nsec == ks->mtim.tv_nsec &&
	    st.st_ctim.tv_sec == ks->ctim.tv_sec && st.st_ctim.tv_nsec == ks->ctim.tv_nsec)
		return;
	/* Recorded before reading: if the file changes while we read it, the next check sees a
	 * different identity and reads it again. */
	ks->have_ident = true;
	ks->dev = st.st_dev;
	ks->ino = st.st_ino;
	ks->size = st.st_size;
	ks->mtim = st.st_mtim;
	ks->ctim = st.st_ctim;

	struct cred_keys fresh;
	struct fps_err e;
	err_clear(&e);
	if (cred_keys_load(ks->path, &fresh, &e) != 0) {
		char msg[2048];
		log_error("%s; keeping %zu previous keys", err_str(&e, msg, sizeof(msg)), ks->keys.n);
		return;
	}
	bool first = ks->keys.v == NULL;
	cred_keys_free(&ks->keys);
	ks->keys = fresh;
	ks->none_valid_logged = false;
	keys_report(ks, first ? "loaded" : "reloaded");
}

struct out_buf {
	char data[OUT_CAP];
	size_t len;
};

/* Writes everything buffered. -1 when stdout is gone or broken. */
static int out_flush(struct out_buf *o)
{
	size_t off = 0;
	while (off < o->len) {
		ssize_t n = write(STDOUT_FILENO, o->data + off, o->len - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		off += (size_t)n;
	}
	o->len = 0;
	return 0;
}

static int out_reply(struct out_buf *o, const char *id, enum authproto_verdict v, const char *msg)
{
	if (o->len + AUTHPROTO_REPLY_MAX > sizeof(o->data) && out_flush(o) != 0)
		return -1;
	int n = authproto_format(o->data + o->len, sizeof(o->data) - o->len, id, v, msg);
	if (n < 0)
		return -1; /* cannot happen: fixed texts fit in AUTHPROTO_REPLY_MAX */
	o->len += (size_t)n;
	return 0;
}

struct helper {
	struct keys_state ks;
	struct cred_products products;
	enum authproto_ids ids;
	struct out_buf out;
	struct authproto_req req;
	unsigned extras;         /* --extra-fields: Squid's key_extras after the password, ignored */
	const char *reasons_dir; /* --reasons-dir: the failures report's refusal reasons (authreasons.h) */
	struct authr_table reasons;
	long long reasons_written_ns;
};

static double wall_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Whether pass is the password of user under a key that has expired (after a refusal only,
 * to name the reason; the verdict is the same ERR). Every expired key is hashed. */
static bool matches_expired_key(const struct cred_keys *keys, const char *user, const char *pass, time_t now)
{
	char norm[CRED_PASSWORD_LEN + 1] = "";
	size_t plen = strnlen(pass, CRED_PASSWORD_LEN + 1);
	if (plen != CRED_PASSWORD_LEN)
		return false;
	for (size_t i = 0; i < CRED_PASSWORD_LEN; i++)
		norm[i] = (char)(pass[i] >= 'A' && pass[i] <= 'Z' ? pass[i] + 32 : pass[i]);
	unsigned match = 0;
	for (size_t k = 0; keys && k < keys->n; k++) {
		char want[CRED_PASSWORD_LEN + 1];
		if (keys->v[k].expires <= now && cred_password(user, keys->v[k].key, want) == 0)
			match |= CRYPTO_memcmp(norm, want, CRED_PASSWORD_LEN) == 0;
		OPENSSL_cleanse(want, sizeof(want));
	}
	OPENSSL_cleanse(norm, sizeof(norm));
	return match != 0;
}

static void reasons_flush(struct helper *h)
{
	static bool warned;
	if (h->reasons_dir == NULL || !h->reasons.dirty)
		return;
	h->reasons_written_ns = mono_ns();
	if (authr_write(&h->reasons, h->reasons_dir, (int)getpid()) < 0 && !warned) {
		log_warn("failures report: cannot write into %s: %s (keeps answering)", h->reasons_dir,
		         strerror(errno));
		warned = true;
	}
	h->reasons.dirty = false;
}

static void reasons_record(struct helper *h, const char *user, const char *reason)
{
	if (h->reasons_dir == NULL)
		return;
	authr_record(&h->reasons, user, reason, wall_now());
	if (mono_ns() - h->reasons_written_ns >= AUTHR_WRITE_MS * 1000000LL)
		reasons_flush(h);
}

/* Before a read that could block: pending reasons are written within AUTHR_WRITE_MS even
 * when no other line comes. */
static void reasons_wait(struct helper *h)
{
	if (h->reasons_dir == NULL || !h->reasons.dirty)
		return;
	long long left = h->reasons_written_ns + AUTHR_WRITE_MS * 1000000LL - mono_ns();
	if (left > 0) {
		struct pollfd pfd = {.fd = STDIN_FILENO, .events = POLLIN};
		if (poll(&pfd, 1, (int)(left / 1000000LL) + 1) > 0)
			return; /* input first; the next pass writes */
	}
	reasons_flush(h);
}

static int answer_line(struct helper *h, const char *line, size_t len)
{
	const char *why = NULL;
	if (authproto_parse_extras(line, len, h->ids, h->extras, &h->req, &why) != 0) {
		reasons_record(h, h->req.user, "malformed");
		return out_reply(&h->out, h->req.id, AUTHPROTO_BH, why);
	}

	keys_refresh(&h->ks, false);
	time_t now = time(NULL);
	enum cred_result r = cred_verify(&h->ks.keys, h->req.user, h->req.pass, now, &h->products);
	if (r != CRED_OK && r != CRED_INTERNAL_ERROR && h->reasons_dir) {
		const char *why_r = r == CRED_BAD_USER                                                ? "malformed"
		                    : r == CRED_PRODUCT_NOT_ALLOWED                                   ? "unknown_user"
		                    : r == CRED_NO_VALID_KEY                                          ? "expired_key"
		                    : matches_expired_key(&h->ks.keys, h->req.user, h->req.pass, now) ? "expired_key"
		                                                                                      : "bad_key";
		reasons_record(h, h->req.user, why_r);
	}
	/* The password buffer is reused for the next line; do not leave it lying around. */
	explicit_bzero(h->req.pass, sizeof(h->req.pass));
	if (r == CRED_NO_VALID_KEY && !h->ks.none_valid_logged) {
		log_error("%s: no valid API key: refusing every agent until the keys are rotated", h->ks.path);
		h->ks.none_valid_logged = true;
	}
	if (r == CRED_OK)
		return out_reply(&h->out, h->req.id, AUTHPROTO_OK, NULL);
	if (r == CRED_INTERNAL_ERROR)
		return out_reply(&h->out, h->req.id, AUTHPROTO_BH, cred_result_str(r));
	return out_reply(&h->out, h->req.id, AUTHPROTO_ERR, cred_result_str(r));
}

/*
 * The read loop. Lines over AUTHPROTO_LINE_MAX are not kept: their first bytes are remembered
 * (for the channel ID), the rest is skipped up to the newline, then answered BH, so one huge
 * line costs neither memory nor the requests behind it. Replies are flushed whenever no complete
 * line is left in the buffer, i.e. before every read that could block: Squid never waits on a
 * reply sitting in our buffer, and a burst of lines costs one write.
 */
static int serve(struct helper *h)
{
	static char in[IN_CAP];
	size_t have = 0;       /* bytes in `in` */
	bool skipping = false; /* inside an over-long line */
	char skip_id[AUTHPROTO_ID_MAX + 1] = "";
	bool eof = false;

	while (!eof) {
		if (out_flush(&h->out) != 0)
			return errno == EPIPE ? 0 : -1;
		reasons_wait(h);
		ssize_t n = read(STDIN_FILENO, in + have, sizeof(in) - have);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			log_error_errno("stdin: read failed");
			return -1;
		}
		if (n == 0)
			eof = true;
		have += (size_t)n;

		size_t pos = 0;
		for (;;) {
			char *nl = memchr(in + pos, '\n', have - pos);
			if (nl == NULL)
				break;
			size_t len = (size_t)(nl - (in + pos));
			int rc;
			if (skipping) {
				rc = out_reply(&h->out, skip_id, AUTHPROTO_BH, "line too long");
				skipping = false;
			} else {
				rc = answer_line(h, in + pos, len);
			}
			if (rc != 0)
				return errno == EPIPE ? 0 : -1;
			pos += len + 1;
		}
		memmove(in, in + pos, have - pos);
		have -= pos;

		if (have > AUTHPROTO_LINE_MAX) {
			if (!skipping)
				authproto_peek_id(in, have, h->ids, skip_id);
			skipping = true;
			have = 0;
		}
	}
	/* EOF: a last line without its newline still gets an answer. */
	int rc = 0;
	if (skipping)
		rc = out_reply(&h->out, skip_id, AUTHPROTO_BH, "line too long");
	else if (have > 0)
		rc = answer_line(h, in, have);
	if (rc == 0)
		rc = out_flush(&h->out);
	reasons_flush(h);
	return rc != 0 && errno != EPIPE ? -1 : 0;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: fps-auth --keys FILE [--products A,B] [--concurrency auto|on|off] [--extra-fields N]\n"
	           "                [--reasons-dir DIR]\n"
	           "       fps-auth --version | --help\n"
	           "Squid basic-auth helper: reads \"[ID ]user password\" lines on stdin, answers OK/ERR/BH.\n");
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"keys", required_argument, NULL, 'k'},        {"products", required_argument, NULL, 'p'},
	    {"concurrency", required_argument, NULL, 'c'}, {"extra-fields", required_argument, NULL, 'x'},
	    {"reasons-dir", required_argument, NULL, 'r'}, {"help", no_argument, NULL, 'h'},
	    {"version", no_argument, NULL, 'V'},           {NULL, 0, NULL, 0},
	};
	static struct helper h;
	const char *keys = NULL, *products = NULL;
	h.ids = AUTHPROTO_IDS_AUTO;

	log_init("fps-auth", LOG_FMT_TEXT, LOG_LVL_INFO);
	int c;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'k':
			keys = optarg;
			break;
		case 'p':
			products = optarg;
			break;
		case 'c':
			if (strcmp(optarg, "auto") == 0) {
				h.ids = AUTHPROTO_IDS_AUTO;
			} else if (strcmp(optarg, "on") == 0) {
				h.ids = AUTHPROTO_IDS_ON;
			} else if (strcmp(optarg, "off") == 0) {
				h.ids = AUTHPROTO_IDS_OFF;
			} else {
				fprintf(stderr, "fps-auth: --concurrency: expected auto, on or off\n");
				return EXIT_USAGE;
			}
			break;
		case 'x':
			if (strcmp(optarg, "0") != 0 && strcmp(optarg, "1") != 0 && strcmp(optarg, "2") != 0) {
				fprintf(stderr, "fps-auth: --extra-fields: expected 0, 1 or 2\n");
				return EXIT_USAGE;
			}
			h.extras = (unsigned)(optarg[0] - '0');
			break;
		case 'r':
			h.reasons_dir = optarg;
			break;
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			printf("fps-auth %s\n", FPS_VERSION);
			return 0;
		default:
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	if (optind != argc || keys == NULL || keys[0] == '\0') {
		if (optind != argc)
			fprintf(stderr, "fps-auth: unexpected argument '%s'\n", argv[optind]);
		else
			fprintf(stderr, "fps-auth: --keys FILE is required\n");
		usage(stderr);
		return EXIT_USAGE;
	}
	struct fps_err e;
	err_clear(&e);
	if (cred_products_parse(products, &h.products, &e) != 0) {
		char msg[2048];
		fprintf(stderr, "fps-auth: --products: %s\n", err_str(&e, msg, sizeof(msg)));
		return EXIT_USAGE;
	}

	/* Squid closing the pipe is a normal end, seen as EPIPE rather than a signal. */
	signal(SIGPIPE, SIG_IGN);
	h.ks.path = keys;
	keys_refresh(&h.ks, true);
	if (h.ks.keys.n == 0)
		log_error("%s: no keys loaded: answering ERR until a valid keys file appears", keys);

	int rc = serve(&h);
	cred_keys_free(&h.ks.keys);
	cred_products_free(&h.products);
	return rc == 0 ? 0 : EXIT_RUNTIME;
}
