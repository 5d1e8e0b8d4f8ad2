/* stormgen: the update storm's client (bench/README.md, "update storm"). N agents, each with its own
 * credentials (the same derivation as loadgen, docs/agents.md), open their connections first, then
 * send the same GET at the same instant, once, and stream the whole body: per agent the status, the
 * body bytes, a sha256 of the body (OpenSSL EVP) and the times to the first body byte and to the last.
 * A few agents can be slow readers (--slow K --slow-rate B/s): they read at most B bytes per second
 * since the storm began, with a small receive buffer, as a slow link would. Single-threaded epoll;
 * the report is JSON, with per-agent arrays so the bench computes its own groups (slow vs others). */

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#define SG_HEAD_MAX  16384  /* the largest response head accepted */
#define SG_BUF       262144 /* one read */
#define SG_TICK_MS   5      /* slow readers are paced, timeouts checked, on this tick */
#define SG_SLOW_RCV  16384  /* receive buffer of a slow reader: the kernel must not read ahead for it */
#define SG_SLOW_MIN  4096   /* a paused slow reader resumes once it may read this much */
#define SG_MAX_AGENT 100000

enum sg_exit { SG_EXIT_OK = 0, SG_EXIT_USAGE = 2, SG_EXIT_RUNTIME = 3 };

enum sg_state { SG_CONNECTING, SG_CONNECTED, SG_HEAD, SG_BODY, SG_DONE };
enum sg_body { SG_B_LEN, SG_B_CHUNK_SIZE, SG_B_CHUNK_DATA, SG_B_CHUNK_END, SG_B_TRAILER, SG_B_EOF };

/* Why an agent did not get the whole, right body ("ok" when it did). */
enum sg_res {
	SG_R_OK,
	SG_R_CONNECT_REFUSED,
	SG_R_CONNECT_ERROR,
	SG_R_CONNECT_TIMEOUT,
	SG_R_RESET,
	SG_R_EOF,
	SG_R_TIMEOUT,
	SG_R_MALFORMED,
	SG_R_STATUS,
	SG_R_SIZE,
	SG_R_SHA256,
	SG_R_IO,
	SG_R_COUNT
};
static const char *const sg_res_names[SG_R_COUNT] = {
    "ok",      "connect_refused", "connect_error", "connect_timeout", "reset",           "eof",
    "timeout", "malformed",       "status",        "size_mismatch",   "sha256_mismatch", "io_error"};

struct sg_agent {
	unsigned index;
	int fd;
	enum sg_state state;
	enum sg_body body;
	enum sg_res res;
	bool slow, paused, finished;
	int status;
	char *req;
	size_t req_len, req_off;
	char *head; /* until the head is complete */
	size_t head_len;
	uint64_t remaining, body_bytes, read_bytes;
	char chunk_line[64];
	size_t chunk_line_len;
	EVP_MD_CTX *md;
	uint64_t t_first, t_done, t_last_io; /* us since the storm (t0) / monotonic */
	char sha[65];
};

struct sg_config {
	const char *proxy, *url, *apikey, *product, *json_path, *sha256;
	bool direct, no_auth;
	unsigned agents, first_agent, slow;
	double slow_rate, timeout, deadline, connect_timeout;
	long long size;
	char host[256], port[8], authority[300], path[2048];
};

static uint64_t sg_now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* ---- credentials: loadgen's (bench/loadgen.c lg_cred_header), so the proxies know the agents ---- */

static const unsigned char sg_ns_url[16] = {0x6b, 0xa7, 0xb8, 0x11, 0x9d, 0xad, 0x11, 0xd1,
                                            0x80, 0xb4, 0x00, 0xc0, 0x4f, 0xd4, 0x30, 0xc8};

static int sg_sha1(const void *data, size_t len, unsigned char md[20])
{
	unsigned int n = 0;

	return EVP_Digest(data, len, md, &n, EVP_sha1(), NULL) && n == 20 ? 0 : -1;
}

static int sg_cred_header(const char *product, const char *apikey, unsigned index, char *out, size_t cap)
{
	unsigned char buf[64], md[20];
	int n = snprintf((char *)buf + 16, sizeof(buf) - 16, "fps-loadgen:agent:%u", index);

	memcpy(buf, sg_ns_url, 16);
	if (sg_sha1(buf, 16 + (size_t)n, md) < 0)
		return -1;
	md[6] = (unsigned char)((md[6] & 0x0f) | 0x50);
	md[8] = (unsigned char)((md[8] & 0x3f) | 0x80);
	char user[160], cat[400], userpass[256];
	snprintf(user, sizeof(user), "%s-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", product,
	         md[0], md[1], md[2], md[3], md[4], md[5], md[6], md[7], md[8], md[9], md[10], md[11], md[12], md[13],
	         md[14], md[15]);
	int cl = snprintf(cat, sizeof(cat), "%s%s", user, apikey);
	if (cl < 0 || (size_t)cl >= sizeof(cat) || sg_sha1(cat, (size_t)cl, md) < 0)
		return -1;
	int pl = snprintf(userpass, sizeof(userpass), "%s:", user);
	for (int i = 0; i < 20; i++)
		pl += snprintf(userpass + pl, sizeof(userpass) - (size_t)pl, "%02x", md[i]);
	int hl = snprintf(out, cap, "Proxy-Authorization: Basic ");
	if (cap < (size_t)hl + 4 * (((size_t)pl + 2) / 3) + 3)
		return -1;
	int bl = EVP_EncodeBlock((unsigned char *)out + hl, (const unsigned char *)userpass, pl);
	memcpy(out + hl + bl, "\r\n", 3);
	return hl + bl + 2;
}

/* ---- command line -------------------------------------------------------------------------- */

static void sg_usage(FILE *f)
{
	fputs("usage: stormgen [options] --url http://HOST:PORT/PATH\n"
	      "  --proxy HOST:PORT     the proxy [127.0.0.1:8080]\n"
	      "  --direct              connect to the URL's host itself, origin-form request\n"
	      "  --agents N            agents, one connection and one GET each [100]\n"
	      "  --first-agent I       credentials of agents I..I+N-1 [0]\n"
	      "  --apikey KEY          the key the agents' passwords derive from (docs/agents.md)\n"
	      "  --product NAME        the username's product part [ApexOne]\n"
	      "  --no-auth             no Proxy-Authorization\n"
	      "  --size BYTES          the expected body size (else: any)\n"
	      "  --sha256 HEX          the expected body digest (else: agents are compared to the first)\n"
	      "  --slow K              the first K agents are slow readers [0]\n"
	      "  --slow-rate B         bytes per second a slow reader reads [262144]\n"
	      "  --timeout S           an agent that gets no byte for S seconds fails [60]\n"
	      "  --deadline S          the whole storm ends after S seconds [600]\n"
	      "  --connect-timeout S   connections not established by then fail [30]\n"
	      "  --json PATH|-         the report as JSON (else a line of text on stdout)\n",
	      f);
}

static int sg_num(const char *opt, const char *s, double lo, double hi, double *out)
{
	char *end = NULL;

	errno = 0;
	double v = strtod(s, &end);
	if (errno || end == s || *end || v < lo || v > hi) {
		fprintf(stderr, "stormgen: %s: '%s' is not a number in [%g, %g]\n", opt, s, lo, hi);
		return -1;
	}
	*out = v;
	return 0;
}

static int sg_parse_url(struct sg_config *c)
{
	const char *p = c->url;

	if (strncasecmp(p, "http://", 7) != 0)
		return -1;
	p += 7;
	size_t al = strcspn(p, "/?#");
	if (al == 0 || al >= sizeof(c->authority) || memchr(p, '@', al) || p[0] == '[')
		return -1;
	memcpy(c->authority, p, al);
	c->authority[al] = '\0';
	const char *colon = memchr(p, ':', al);
	size_t hl = colon ? (size_t)(colon - p) : al;
	if (hl == 0 || hl >= sizeof(c->host))
		return -1;
	memcpy(c->host, p, hl);
	c->host[hl] = '\0';
	snprintf(c->port, sizeof(c->port), "%s", "80");
	if (colon) {
		size_t pl = al - hl - 1;
		if (pl == 0 || pl >= sizeof(c->port))
			return -1;
		memcpy(c->port, colon + 1, pl);
		c->port[pl] = '\0';
	}
	const char *path = p + al;
	size_t pl = strcspn(path, "#");
	if (pl >= sizeof(c->path) - 1)
		return -1;
	for (size_t i = 0; i < pl; i++)
		if ((unsigned char)path[i] <= ' ' || (unsigned char)path[i] >= 0x7f)
			return -1;
	c->path[0] = '/';
	memcpy(c->path + (path[0] == '/' ? 0 : 1), path, pl);
	c->path[pl + (path[0] == '/' ? 0 : 1)] = '\0';
	return 0;
}

static int sg_parse_args(int argc, char **argv, struct sg_config *c)
{
	static const struct option opts[] = {{"proxy", required_argument, 0, 'p'},
	                                     {"direct", no_argument, 0, 'd'},
	                                     {"agents", required_argument, 0, 'n'},
	                                     {"first-agent", required_argument, 0, 'f'},
	                                     {"apikey", required_argument, 0, 'k'},
	                                     {"product", required_argument, 0, 'P'},
	                                     {"no-auth", no_argument, 0, 'A'},
	                                     {"size", required_argument, 0, 's'},
	                                     {"sha256", required_argument, 0, 'H'},
	                                     {"slow", required_argument, 0, 'S'},
	                                     {"slow-rate", required_argument, 0, 'r'},
	                                     {"timeout", required_argument, 0, 't'},
	                                     {"deadline", required_argument, 0, 'D'},
	                                     {"connect-timeout", required_argument, 0, 'c'},
	                                     {"json", required_argument, 0, 'j'},
	                                     {"url", required_argument, 0, 'u'},
	                                     {"help", no_argument, 0, 'h'},
	                                     {0, 0, 0, 0}};
	double v;
	int o;

	*c = (struct sg_config){.proxy = "127.0.0.1:8080",
	                        .apikey = "",
	                        .product = "ApexOne",
	                        .agents = 100,
	                        .slow_rate = 262144,
	                        .timeout = 60,
	                        .deadline = 600,
	                        .connect_timeout = 30,
	                        .size = -1};
	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (o) {
		case 'p':
			c->proxy = optarg;
			break;
		case 'd':
			c->direct = true;
			break;
		case 'n':
			if (sg_num("--agents", optarg, 1, SG_MAX_AGENT, &v) < 0)
				return -1;
			c->agents = (unsigned)v;
			break;
		case 'f':
			if (sg_num("--first-agent", optarg, 0, 1e9, &v) < 0)
				return -1;
			c->first_agent = (unsigned)v;
			break;
		case 'k':
			c->apikey = optarg;
			break;
		case 'P':
			c->product = optarg;
			break;
		case 'A':
			c->no_auth = true;
			break;
		case 's':
			if (sg_num("--size", optarg, 0, 1e15, &v) < 0)
				return -1;
			c->size = (long long)v;
			break;
		case 'H':
			c->sha256 = optarg;
			break;
		case 'S':
			if (sg_num("--slow", optarg, 0, SG_MAX_AGENT, &v) < 0)
				return -1;
			c->slow = (unsigned)v;
			break;
		case 'r':
			if (sg_num("--slow-rate", optarg, 1024, 1e12, &c->slow_rate) < 0)
				return -1;
			break;
		case 't':
			if (sg_num("--timeout", optarg, 0.01, 86400, &c->timeout) < 0)
				return -1;
			break;
		case 'D':
			if (sg_num("--deadline", optarg, 0.01, 86400, &c->deadline) < 0)
				return -1;
			break;
		case 'c':
			if (sg_num("--connect-timeout", optarg, 0.01, 86400, &c->connect_timeout) < 0)
				return -1;
			break;
		case 'j':
			c->json_path = optarg;
			break;
		case 'u':
			c->url = optarg;
			break;
		case 'h':
			sg_usage(stdout);
			exit(SG_EXIT_OK);
		default:
			sg_usage(stderr);
			return -1;
		}
	}
	if (optind != argc || !c->url || sg_parse_url(c) < 0) {
		fprintf(stderr, "stormgen: one --url http://HOST[:PORT]/PATH is required\n");
		return -1;
	}
	if (c->slow > c->agents) {
		fprintf(stderr, "stormgen: --slow %u is more than --agents %u\n", c->slow, c->agents);
		return -1;
	}
	if (c->sha256 && (strlen(c->sha256) != 64 || strspn(c->sha256, "0123456789abcdef") != 64)) {
		fprintf(stderr, "stormgen: --sha256 wants 64 lower-case hex digits\n");
		return -1;
	}
	return 0;
}

/* ---- one agent --------------------------------------------------------------------------------- */

static void sg_finish(struct sg_agent *a, enum sg_res r, uint64_t t)
{
	if (a->finished)
		return;
	a->finished = true;
	a->state = SG_DONE;
	a->res = r;
	a->t_done = t;
	if (a->fd >= 0)
		close(a->fd);
	a->fd = -1;
	if (a->md) {
		unsigned char d[32];
		unsigned int n = 0;
		if (r == SG_R_OK && EVP_DigestFinal_ex(a->md, d, &n) && n == 32)
			for (int i = 0; i < 32; i++)
				snprintf(a->sha + 2 * i, 3, "%02x", d[i]);
		EVP_MD_CTX_free(a->md);
		a->md = NULL;
	}
	free(a->head);
	a->head = NULL;
	free(a->req);
	a->req = NULL;
}

static bool sg_token(const char *v, size_t len, const char *tok)
{
	size_t tl = strlen(tok);

	for (size_t i = 0; i + tl <= len; i++)
		if (strncasecmp(v + i, tok, tl) == 0 && (i == 0 || v[i - 1] == ',' || v[i - 1] == ' ') &&
		    (i + tl == len || v[i + tl] == ',' || v[i + tl] == ' '))
			return true;
	return false;
}

/* A complete head (h, n bytes, ending in its blank line): status and body framing. */
static int sg_parse_head(struct sg_agent *a, const char *h, size_t n)
{
	if (n < 12 || memcmp(h, "HTTP/1.", 7) != 0 || h[8] != ' ' || !isdigit((unsigned char)h[9]) ||
	    !isdigit((unsigned char)h[10]) || !isdigit((unsigned char)h[11]))
		return -1;
	a->status = (h[9] - '0') * 100 + (h[10] - '0') * 10 + (h[11] - '0');
	bool has_cl = false, chunked = false;
	uint64_t cl = 0;
	const char *p = memchr(h, '\n', n), *end = h + n;
	for (p = p ? p + 1 : end; p < end;) {
		const char *le = memchr(p, '\n', (size_t)(end - p));
		if (!le)
			break;
		size_t ll = (size_t)(le - p);
		if (ll && p[ll - 1] == '\r')
			ll--;
		const char *colon = memchr(p, ':', ll);
		if (colon) {
			size_t nl = (size_t)(colon - p);
			const char *v = colon + 1, *ve = p + ll;
			while (v < ve && (*v == ' ' || *v == '\t'))
				v++;
			if (nl == 14 && strncasecmp(p, "Content-Length", 14) == 0) {
				if (v == ve || ve - v > 18)
					return -1;
				uint64_t x = 0;
				for (const char *q = v; q < ve; q++) {
					if (!isdigit((unsigned char)*q))
						return -1;
					x = x * 10 + (uint64_t)(*q - '0');
				}
				if (has_cl && x != cl)
					return -1;
				has_cl = true;
				cl = x;
			} else if (nl == 17 && strncasecmp(p, "Transfer-Encoding", 17) == 0) {
				chunked = sg_token(v, (size_t)(ve - v), "chunked");
			}
		}
		p = le + 1;
	}
	if (a->status < 200 || a->status == 204 || a->status == 304) /* nothing asked for these */
		return -1;
	if (chunked) {
		a->body = SG_B_CHUNK_SIZE;
	} else if (has_cl) {
		a->body = SG_B_LEN;
		a->remaining = cl;
	} else {
		a->body = SG_B_EOF;
	}
	return 0;
}

static void sg_body_done(struct sg_agent *a, const struct sg_config *c, uint64_t t)
{
	if (a->status != 200)
		sg_finish(a, SG_R_STATUS, t);
	else if (c->size >= 0 && a->body_bytes != (uint64_t)c->size)
		sg_finish(a, SG_R_SIZE, t);
	else
		sg_finish(a, SG_R_OK, t);
}

static void sg_body_data(struct sg_agent *a, const char *p, size_t n, uint64_t t)
{
	if (n == 0)
		return;
	if (a->body_bytes == 0)
		a->t_first = t;
	a->body_bytes += n;
	EVP_DigestUpdate(a->md, p, n);
}

/* Body bytes as they arrive; finishes the agent when the body is complete. -1: malformed. */
static int sg_body_feed(struct sg_agent *a, const struct sg_config *c, const char *p, size_t n, uint64_t t)
{
	while (n > 0 && !a->finished) {
		size_t take;
		switch (a->body) {
		case SG_B_LEN:
		case SG_B_CHUNK_DATA:
			take = n < a->remaining ? n : (size_t)a->remaining;
			sg_body_data(a, p, take, t);
			a->remaining -= take;
			p += take;
			n -= take;
			if (a->remaining == 0) {
				if (a->body == SG_B_LEN) {
					sg_body_done(a, c, t);
					return 0;
				}
				a->body = SG_B_CHUNK_END;
				a->chunk_line_len = 0;
			}
			break;
		case SG_B_EOF:
			sg_body_data(a, p, n, t);
			return 0;
		case SG_B_CHUNK_SIZE:
		case SG_B_CHUNK_END:
		case SG_B_TRAILER: {
			const char *nl = memchr(p, '\n', n);
			size_t part = nl ? (size_t)(nl - p) : n;
			if (a->chunk_line_len + part >= sizeof(a->chunk_line))
				return -1;
			memcpy(a->chunk_line + a->chunk_line_len, p, part);
			a->chunk_line_len += part;
			p += part + (nl ? 1 : 0);
			n -= part + (nl ? 1 : 0);
			if (!nl)
				return 0;
			size_t ll = a->chunk_line_len;
			if (ll && a->chunk_line[ll - 1] == '\r')
				ll--;
			a->chunk_line[ll] = '\0';
			a->chunk_line_len = 0;
			if (a->body == SG_B_CHUNK_END) {
				if (ll != 0)
					return -1;
				a->body = SG_B_CHUNK_SIZE;
			} else if (a->body == SG_B_TRAILER) {
				if (ll == 0) {
					sg_body_done(a, c, t);
					return 0;
				}
			} else {
				char *end = NULL;
				errno = 0;
				unsigned long long v = strtoull(a->chunk_line, &end, 16);
				if (errno || end == a->chunk_line || (*end && *end != ';' && *end != ' '))
					return -1;
				a->remaining = v;
				a->body = v ? SG_B_CHUNK_DATA : SG_B_TRAILER;
			}
			break;
		}
		}
	}
	return 0;
}

/* ---- the storm ----------------------------------------------------------------------------------- */

struct sg_run {
	struct sg_config *c;
	struct sg_agent *agents;
	int ep;
	uint64_t t0; /* monotonic us when every request went out */
	unsigned open;
	char *buf;
};

static volatile sig_atomic_t sg_stop;

static void sg_on_signal(int sig)
{
	(void)sig;
	sg_stop = 1;
}

static uint64_t sg_since(const struct sg_run *r, uint64_t now)
{
	return now > r->t0 ? now - r->t0 : 0;
}

static void sg_fail(struct sg_run *r, struct sg_agent *a, enum sg_res res, uint64_t now)
{
	if (a->finished)
		return;
	if (a->fd >= 0)
		epoll_ctl(r->ep, EPOLL_CTL_DEL, a->fd, NULL);
	sg_finish(a, res, sg_since(r, now));
	r->open--;
}

static void sg_done_ok(struct sg_run *r, struct sg_agent *a)
{
	(void)a;
	r->open--;
}

/* How many more bytes a slow reader may read now. */
static uint64_t sg_allowance(const struct sg_run *r, const struct sg_agent *a, uint64_t now)
{
	double may = r->c->slow_rate * (double)sg_since(r, now) / 1e6 + SG_SLOW_MIN;
	return may > (double)a->read_bytes ? (uint64_t)(may - (double)a->read_bytes) : 0;
}

static void sg_read(struct sg_run *r, struct sg_agent *a, uint64_t now)
{
	for (int loops = 0; loops < 4 && !a->finished; loops++) {
		size_t want = SG_BUF;
		if (a->slow) {
			uint64_t may = sg_allowance(r, a, now);
			if (may < SG_SLOW_MIN) {
				epoll_ctl(r->ep, EPOLL_CTL_DEL, a->fd, NULL);
				a->paused = true;
				return;
			}
			if (may < want)
				want = (size_t)may;
		}
		ssize_t n = read(a->fd, r->buf, want);
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				return;
			sg_fail(r, a, errno == ECONNRESET ? SG_R_RESET : SG_R_IO, now);
			return;
		}
		uint64_t t = sg_since(r, now);
		if (n == 0) {
			if (a->state == SG_BODY && a->body == SG_B_EOF) {
				epoll_ctl(r->ep, EPOLL_CTL_DEL, a->fd, NULL);
				sg_body_done(a, r->c, t);
				sg_done_ok(r, a);
			} else {
				sg_fail(r, a, SG_R_EOF, now);
			}
			return;
		}
		a->t_last_io = now;
		a->read_bytes += (uint64_t)n;
		const char *p = r->buf;
		size_t len = (size_t)n;
		if (a->state == SG_HEAD) {
			size_t room = SG_HEAD_MAX - a->head_len, take = len < room ? len : room;
			memcpy(a->head + a->head_len, p, take);
			size_t from = a->head_len > 3 ? a->head_len - 3 : 0;
			a->head_len += take;
			size_t hend = 0;
			for (size_t i = from; i + 1 < a->head_len && !hend; i++) {
				if (a->head[i] == '\n' && a->head[i + 1] == '\n')
					hend = i + 2;
				else if (a->head[i] == '\n' && a->head[i + 1] == '\r' && i + 2 < a->head_len &&
				         a->head[i + 2] == '\n')
					hend = i + 3;
			}
			if (!hend) {
				if (a->head_len >= SG_HEAD_MAX)
					sg_fail(r, a, SG_R_MALFORMED, now);
				continue;
			}
			if (sg_parse_head(a, a->head, hend) < 0) {
				sg_fail(r, a, SG_R_MALFORMED, now);
				return;
			}
			size_t prev = a->head_len - take; /* bytes of this read before it */
			p += hend - prev;
			len -= hend - prev;
			a->state = SG_BODY;
			if (a->body == SG_B_LEN && a->remaining == 0) {
				epoll_ctl(r->ep, EPOLL_CTL_DEL, a->fd, NULL);
				sg_body_done(a, r->c, t);
				sg_done_ok(r, a);
				return;
			}
		}
		if (sg_body_feed(a, r->c, p, len, t) < 0) {
			sg_fail(r, a, SG_R_MALFORMED, now);
			return;
		}
		if (a->finished) { /* its socket is closed, which also took it out of the epoll set */
			sg_done_ok(r, a);
			return;
		}
	}
}

static void sg_write(struct sg_run *r, struct sg_agent *a, uint64_t now)
{
	while (a->req_off < a->req_len) {
		ssize_t n = send(a->fd, a->req + a->req_off, a->req_len - a->req_off, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				return;
			sg_fail(r, a, errno == ECONNRESET || errno == EPIPE ? SG_R_RESET : SG_R_IO, now);
			return;
		}
		a->req_off += (size_t)n;
	}
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = a};
	epoll_ctl(r->ep, EPOLL_CTL_MOD, a->fd, &ev);
	a->state = SG_HEAD;
}

static void sg_tick(struct sg_run *r, uint64_t now)
{
	uint64_t idle = (uint64_t)(r->c->timeout * 1e6);

	for (unsigned i = 0; i < r->c->agents; i++) {
		struct sg_agent *a = &r->agents[i];
		if (a->finished)
			continue;
		if (a->paused) {
			if (sg_allowance(r, a, now) >= SG_SLOW_MIN) {
				struct epoll_event ev = {.events = EPOLLIN, .data.ptr = a};
				epoll_ctl(r->ep, EPOLL_CTL_ADD, a->fd, &ev);
				a->paused = false;
				a->t_last_io = now; /* its own pause is no silence of the proxy */
			}
			continue;
		}
		if (now - a->t_last_io > idle)
			sg_fail(r, a, SG_R_TIMEOUT, now);
	}
}

static int sg_connect_all(struct sg_run *r, const struct sockaddr_storage *ss, socklen_t sl)
{
	struct sg_config *c = r->c;
	unsigned pending = 0;
	uint64_t start = sg_now_us();

	for (unsigned i = 0; i < c->agents; i++) {
		struct sg_agent *a = &r->agents[i];
		a->fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (a->fd < 0) {
			fprintf(stderr, "stormgen: socket: %s (raise the open files limit)\n", strerror(errno));
			return -1;
		}
		int one = 1;
		setsockopt(a->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		if (a->slow) {
			int rcv = SG_SLOW_RCV;
			setsockopt(a->fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof(rcv));
		}
		a->state = SG_CONNECTING;
		if (connect(a->fd, (const struct sockaddr *)ss, sl) == 0) {
			a->state = SG_CONNECTED;
			continue;
		}
		if (errno != EINPROGRESS) {
			sg_finish(a, errno == ECONNREFUSED ? SG_R_CONNECT_REFUSED : SG_R_CONNECT_ERROR, 0);
			r->open--;
			continue;
		}
		struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = a};
		epoll_ctl(r->ep, EPOLL_CTL_ADD, a->fd, &ev);
		pending++;
	}
	struct epoll_event evs[512];
	uint64_t limit = (uint64_t)(c->connect_timeout * 1e6);
	while (pending && !sg_stop) {
		int n = epoll_wait(r->ep, evs, 512, 50);
		for (int i = 0; i < n; i++) {
			struct sg_agent *a = evs[i].data.ptr;
			int err = 0;
			socklen_t el = sizeof(err);
			getsockopt(a->fd, SOL_SOCKET, SO_ERROR, &err, &el);
			epoll_ctl(r->ep, EPOLL_CTL_DEL, a->fd, NULL);
			pending--;
			if (err) {
				sg_finish(a, err == ECONNREFUSED ? SG_R_CONNECT_REFUSED : SG_R_CONNECT_ERROR, 0);
				r->open--;
			} else {
				a->state = SG_CONNECTED;
			}
		}
		if (sg_now_us() - start > limit) {
			for (unsigned i = 0; i < c->agents; i++)
				if (r->agents[i].state == SG_CONNECTING && !r->agents[i].finished) {
					epoll_ctl(r->ep, EPOLL_CTL_DEL, r->agents[i].fd, NULL);
					sg_finish(&r->agents[i], SG_R_CONNECT_TIMEOUT, 0);
					r->open--;
				}
			pending = 0;
		}
	}
	return 0;
}

static void sg_storm(struct sg_run *r)
{
	struct sg_config *c = r->c;
	uint64_t now = sg_now_us();

	r->t0 = now;
	/* Every request at the same instant: one pass, each a single small send. */
	for (unsigned i = 0; i < c->agents; i++) {
		struct sg_agent *a = &r->agents[i];
		if (a->finished)
			continue;
		a->t_last_io = now;
		struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = a};
		epoll_ctl(r->ep, EPOLL_CTL_ADD, a->fd, &ev);
		sg_write(r, a, now);
	}
	struct epoll_event evs[512];
	uint64_t deadline = r->t0 + (uint64_t)(c->deadline * 1e6), last_tick = now;
	while (r->open > 0 && !sg_stop) {
		int n = epoll_wait(r->ep, evs, 512, SG_TICK_MS);
		now = sg_now_us();
		for (int i = 0; i < n; i++) {
			struct sg_agent *a = evs[i].data.ptr;
			if (a->finished)
				continue;
			if (a->state == SG_CONNECTED && (evs[i].events & EPOLLOUT))
				sg_write(r, a, now);
			else if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
				sg_read(r, a, now);
		}
		if (now - last_tick >= SG_TICK_MS * 1000u) {
			sg_tick(r, now);
			last_tick = now;
		}
		if (now > deadline)
			break;
	}
	for (unsigned i = 0; i < c->agents; i++)
		if (!r->agents[i].finished)
			sg_fail(r, &r->agents[i], SG_R_TIMEOUT, now);
}

/* ---- report ----------------------------------------------------------------------------------------- */

static int sg_cmp_u64(const void *x, const void *y)
{
	uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;
	return a < b ? -1 : a > b;
}

static void sg_report(const struct sg_run *r, FILE *f, uint64_t connect_us)
{
	const struct sg_config *c = r->c;
	unsigned counts[SG_R_COUNT] = {0}, status[600] = {0};
	uint64_t bytes = 0, last = 0;
	uint64_t *done = calloc(c->agents ? c->agents : 1, sizeof(*done));
	unsigned nd = 0;

	for (unsigned i = 0; i < c->agents; i++) {
		const struct sg_agent *a = &r->agents[i];
		counts[a->res]++;
		if (a->status > 0 && a->status < 600)
			status[a->status]++;
		bytes += a->body_bytes;
		if (a->t_done > last)
			last = a->t_done;
		if (a->res == SG_R_OK && done)
			done[nd++] = a->t_done;
	}
	if (done)
		qsort(done, nd, sizeof(*done), sg_cmp_u64);
	uint64_t p50 = nd ? done[(nd - 1) / 2] : 0, p99 = nd ? done[(nd * 99 + 99) / 100 - 1] : 0;
	if (!c->json_path) {
		printf("%u agents: %u ok, %u failed; %" PRIu64
		       " body bytes; last done %.3f s, p50 %.3f s, p99 %.3f s\n",
		       c->agents, counts[SG_R_OK], c->agents - counts[SG_R_OK], bytes, (double)last / 1e6,
		       (double)p50 / 1e6, (double)p99 / 1e6);
		free(done);
		return;
	}
	fprintf(
	    f,
	    "{\"agents\": %u, \"slow\": %u, \"slow_rate\": %.0f, \"ok\": %u, \"failed\": %u, \"body_bytes\": %" PRIu64
	    ", \"connect_s\": %.6f, \"last_done_s\": %.6f, \"p50_s\": %.6f, \"p99_s\": %.6f, \"size\": %lld",
	    c->agents, c->slow, c->slow_rate, counts[SG_R_OK], c->agents - counts[SG_R_OK], bytes,
	    (double)connect_us / 1e6, (double)last / 1e6, (double)p50 / 1e6, (double)p99 / 1e6, c->size);
	fputs(", \"results\": {", f);
	bool first = true;
	for (int i = 0; i < SG_R_COUNT; i++)
		if (counts[i]) {
			fprintf(f, "%s\"%s\": %u", first ? "" : ", ", sg_res_names[i], counts[i]);
			first = false;
		}
	fputs("}, \"status\": {", f);
	first = true;
	for (int i = 0; i < 600; i++)
		if (status[i]) {
			fprintf(f, "%s\"%d\": %u", first ? "" : ", ", i, status[i]);
			first = false;
		}
	fputs("}, \"agent\": {\"result\": [", f);
	for (unsigned i = 0; i < c->agents; i++)
		fprintf(f, "%s\"%s\"", i ? ", " : "", sg_res_names[r->agents[i].res]);
	fputs("], \"done_s\": [", f);
	for (unsigned i = 0; i < c->agents; i++)
		fprintf(f, "%s%.6f", i ? ", " : "", (double)r->agents[i].t_done / 1e6);
	fputs("], \"first_byte_s\": [", f);
	for (unsigned i = 0; i < c->agents; i++)
		fprintf(f, "%s%.6f", i ? ", " : "", (double)r->agents[i].t_first / 1e6);
	fputs("], \"bytes\": [", f);
	for (unsigned i = 0; i < c->agents; i++)
		fprintf(f, "%s%" PRIu64, i ? ", " : "", r->agents[i].body_bytes);
	fputs("], \"slow\": [", f);
	for (unsigned i = 0; i < c->agents; i++)
		fprintf(f, "%s%d", i ? ", " : "", r->agents[i].slow ? 1 : 0);
	fputs("]}}\n", f);
	free(done);
}

/* Agents without --sha256 are compared to the first agent that got a whole body. */
static void sg_check_digests(struct sg_run *r)
{
	const char *want = r->c->sha256;

	for (unsigned i = 0; i < r->c->agents && !want; i++)
		if (r->agents[i].res == SG_R_OK)
			want = r->agents[i].sha;
	for (unsigned i = 0; i < r->c->agents && want; i++)
		if (r->agents[i].res == SG_R_OK && strcmp(r->agents[i].sha, want) != 0)
			r->agents[i].res = SG_R_SHA256;
}

int main(int argc, char **argv)
{
	struct sg_config c;
	struct sg_run r = {.c = &c, .ep = -1};
	int rc = SG_EXIT_RUNTIME;

	if (sg_parse_args(argc, argv, &c) < 0)
		return SG_EXIT_USAGE;
	char phost[256], pport[8];
	const char *h = c.host, *p = c.port;
	if (!c.direct) {
		const char *colon = strrchr(c.proxy, ':');
		size_t hl = colon ? (size_t)(colon - c.proxy) : 0;
		if (!colon || hl == 0 || hl >= sizeof(phost) || strlen(colon + 1) == 0 ||
		    strlen(colon + 1) >= sizeof(pport)) {
			fprintf(stderr, "stormgen: --proxy HOST:PORT\n");
			return SG_EXIT_USAGE;
		}
		memcpy(phost, c.proxy, hl);
		phost[hl] = '\0';
		snprintf(pport, sizeof(pport), "%s", colon + 1);
		h = phost;
		p = pport;
	}
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
	struct addrinfo *ai = NULL;
	if (getaddrinfo(h, p, &hints, &ai) != 0 || !ai) {
		fprintf(stderr, "stormgen: cannot resolve %s:%s\n", h, p);
		return SG_EXIT_USAGE;
	}
	struct sockaddr_storage ss;
	socklen_t sl = ai->ai_addrlen;
	memcpy(&ss, ai->ai_addr, ai->ai_addrlen);
	freeaddrinfo(ai);

	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)c.agents + 64) {
		rl.rlim_cur = rl.rlim_max < (rlim_t)c.agents + 64 ? rl.rlim_max : (rlim_t)c.agents + 64;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	signal(SIGINT, sg_on_signal);
	signal(SIGTERM, sg_on_signal);
	signal(SIGPIPE, SIG_IGN);

	r.agents = calloc(c.agents, sizeof(*r.agents));
	r.buf = malloc(SG_BUF);
	r.ep = epoll_create1(EPOLL_CLOEXEC);
	if (!r.agents || !r.buf || r.ep < 0) {
		fprintf(stderr, "stormgen: out of memory or epoll: %s\n", strerror(errno));
		goto out;
	}
	for (unsigned i = 0; i < c.agents; i++) {
		struct sg_agent *a = &r.agents[i];
		char cred[512], req[4096];
		int cl = 0;
		a->index = c.first_agent + i;
		a->fd = -1;
		a->slow = i < c.slow;
		if (!c.direct && !c.no_auth) {
			cl = sg_cred_header(c.product, c.apikey, a->index, cred, sizeof(cred));
			if (cl < 0)
				goto out;
		}
		int n = c.direct ? snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: %s\r\n", c.path, c.authority)
		                 : snprintf(req, sizeof(req), "GET http://%s%s HTTP/1.1\r\nHost: %s\r\n", c.authority,
		                            c.path, c.authority);
		n += snprintf(req + n, sizeof(req) - (size_t)n,
		              "User-Agent: fps-stormgen/1\r\nAccept: */*\r\n%.*sConnection: close\r\n\r\n", cl,
		              cl > 0 ? cred : "");
		a->req = malloc((size_t)n);
		a->head = malloc(SG_HEAD_MAX);
		a->md = EVP_MD_CTX_new();
		if (!a->req || !a->head || !a->md || !EVP_DigestInit_ex(a->md, EVP_sha256(), NULL)) {
			fprintf(stderr, "stormgen: out of memory\n");
			goto out;
		}
		memcpy(a->req, req, (size_t)n);
		a->req_len = (size_t)n;
	}
	r.open = c.agents;
	uint64_t t_conn = sg_now_us();
	if (sg_connect_all(&r, &ss, sl) < 0)
		goto out;
	uint64_t connect_us = sg_now_us() - t_conn;
	sg_storm(&r);
	sg_check_digests(&r);
	FILE *f = stdout;
	if (c.json_path && strcmp(c.json_path, "-") != 0) {
		f = fopen(c.json_path, "w");
		if (!f) {
			fprintf(stderr, "stormgen: %s: %s\n", c.json_path, strerror(errno));
			goto out;
		}
	}
	sg_report(&r, f, connect_us);
	if (f != stdout)
		fclose(f);
	rc = sg_stop ? SG_EXIT_RUNTIME : SG_EXIT_OK;
out:
	if (r.agents)
		for (unsigned i = 0; i < c.agents; i++)
			sg_finish(&r.agents[i], r.agents[i].res, r.agents[i].t_done);
	free(r.agents);
	free(r.buf);
	if (r.ep >= 0)
		close(r.ep);
	return rc;
}
