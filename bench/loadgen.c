/* loadgen: HTTP/1.1 load generator for the FPS benchmarks. Each agent is one keep-alive connection to
 * the proxy with its own credentials (docs/agents.md), speaking absolute-URI GET or CONNECT + TLS;
 * it reports a log-linear latency histogram, counts by status and by error class, as text and JSON.
 * Closed loop by default (each agent sends its next request when the last one is answered); with
 * --rate R open loop: requests arrive on a fixed schedule, R per second, and go out on whichever
 * agent connection is free; latency is measured from the scheduled time, so a stall shows in the
 * percentiles instead of slowing the arrivals down (no coordinated omission). */

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
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

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#define LG_VERSION       "1"
#define LG_USER_AGENT    "fps-loadgen/" LG_VERSION
#define LG_IN_SIZE       16384 /* also the largest response head we accept */
#define LG_OUT_SIZE      4096
#define LG_TICK_US       10000 /* ramp budget, timeouts and tunnel recycling run on this tick */
#define LG_MAX_URLS      64
#define LG_MAX_THREADS   64
#define LG_EVENTS        512
#define LG_STATUS_MAX    600
#define LG_HIST_SUB_BITS 7 /* 128 linear sub-buckets per power of two: < 0.8 % error */
#define LG_HIST_SUB      (1u << LG_HIST_SUB_BITS)
#define LG_HIST_SHIFTS   33 /* values up to 2^41 us; larger ones land in the last bucket */
#define LG_HIST_BUCKETS  (2 * LG_HIST_SUB + LG_HIST_SHIFTS * LG_HIST_SUB)

enum lg_exit { LG_EXIT_OK = 0, LG_EXIT_USAGE = 2, LG_EXIT_RUNTIME = 3 };

enum lg_mode { LG_MODE_GET, LG_MODE_CONNECT, LG_MODE_MIX };

/* What an agent does for its whole life: plain GETs, or CONNECT tunnels with TLS inside. */
enum lg_kind { LG_KIND_GET, LG_KIND_TLS };

enum lg_histo { LG_H_GET, LG_H_TUNNEL, LG_H_SETUP, LG_H_COUNT };
static const char *const lg_histo_names[LG_H_COUNT] = {"get", "tunnel", "tunnel_setup"};

enum lg_err {
	LG_ERR_CONNECT_REFUSED,
	LG_ERR_CONNECT_OTHER,
	LG_ERR_CONNECT_TIMEOUT,
	LG_ERR_RESET,
	LG_ERR_TIMEOUT,
	LG_ERR_EOF,
	LG_ERR_TLS_HANDSHAKE,
	LG_ERR_TLS,
	LG_ERR_PROXY_CONNECT,
	LG_ERR_MALFORMED,
	LG_ERR_IO,
	LG_ERR_COUNT
};
static const char *const lg_err_names[LG_ERR_COUNT] = {
    "connect_refused", "connect_error", "connect_timeout",       "reset",     "timeout", "eof",
    "tls_handshake",   "tls_error",     "proxy_connect_refused", "malformed", "io_error"};

/* ---- configuration ------------------------------------------------------------------------ */

struct lg_url {
	const char *text;
	bool tls;
	char host[256];      /* without brackets: SNI, certificate name, resolution */
	char authority[300]; /* as written in the URL: Host header and absolute URI */
	char hostport[300];  /* always with the port: CONNECT target */
	char port[8];
	char path[1024];
	struct sockaddr_storage addr; /* --direct only */
	socklen_t addrlen;
	char *abs_head; /* request head up to (not including) the credentials and the blank line */
	size_t abs_len;
	char *origin_head;
	size_t origin_len;
	char *connect_head;
	size_t connect_len;
};

struct lg_config {
	const char *proxy;
	struct sockaddr_storage proxy_addr;
	socklen_t proxy_addrlen;
	bool direct, no_auth, insecure;
	const char *cafile, *product, *apikey, *json_path;
	enum lg_mode mode;
	unsigned mix_get, mix_connect;
	struct lg_url urls[LG_MAX_URLS];
	size_t n_urls;
	const struct lg_url *get_urls[LG_MAX_URLS], *tls_urls[LG_MAX_URLS];
	size_t n_get, n_tls;
	unsigned agents, threads, first_agent, timeout_ms, ramp, per_tunnel;
	double duration, warmup, tunnel_rate, rate;
	uint64_t max_requests;
};

/* ---- statistics --------------------------------------------------------------------------- */

struct lg_hist {
	uint64_t count, sum, min, max;
	uint64_t b[LG_HIST_BUCKETS];
};

struct lg_stats {
	uint64_t requests, body_bytes, conns, tunnels, connects_sent;
	uint64_t err[LG_ERR_COUNT];
	uint64_t status[LG_STATUS_MAX];
	uint64_t connect_status[LG_STATUS_MAX];
	struct lg_hist hist[LG_H_COUNT];
	/* availability: agents with a 2xx since the start (and when the last got its first), the
	 * longest time without any 2xx after the warmup, agents served again after a SIGUSR1 mark */
	uint64_t served, served_last_us, gap_max_us, gap_at_us, mark_served, mark_last_us;
	/* per agent, in the recorded window: agents with at least one failed request (error or
	 * non-2xx), the most failures one agent had; the requests on the wire at the mark, by how
	 * each ended: a 2xx, another status, or cut (the connection failed under it) */
	uint64_t agents_failed, agent_fail_max, mark_inflight_2xx, mark_inflight_other, mark_inflight_cut;
	/* --rate (whole run, not only the recorded window): arrivals scheduled, handed to a
	 * connection, answered (any status); still queued or in flight when the run ended, the
	 * largest queue, the oldest unsent arrival's age at the end; service = send to response */
	uint64_t ol_arrivals, ol_dispatched, ol_answered, ol_unsent, ol_in_flight, ol_backlog_max, ol_oldest_us;
	struct lg_hist service;
};

/* ---- HTTP/1.1 response parser ------------------------------------------------------------- */

enum lg_http_state {
	LG_HTTP_HEAD,
	LG_HTTP_BODY_LEN,
	LG_HTTP_BODY_EOF,
	LG_HTTP_CHUNK_SIZE,
	LG_HTTP_CHUNK_DATA,
	LG_HTTP_CHUNK_END,
	LG_HTTP_TRAILERS,
	LG_HTTP_DONE
};
enum lg_http_rc { LG_HTTP_MORE, LG_HTTP_COMPLETE, LG_HTTP_BAD };

struct lg_http {
	enum lg_http_state state;
	bool for_connect; /* a 2xx answer to CONNECT has no body: the tunnel starts right after it */
	bool close;
	int status;
	uint64_t remaining;
	uint64_t body_bytes;
	size_t scanned; /* head bytes already searched for the blank line */
};

/* ---- run state ---------------------------------------------------------------------------- */

enum lg_state {
	LG_ST_QUEUED,
	LG_ST_BACKOFF,
	LG_ST_CONNECTING,
	LG_ST_HANDSHAKE,
	LG_ST_SEND,
	LG_ST_RECV,
	LG_ST_IDLE,
	LG_ST_STOPPED
};

struct lg_thread;

struct lg_agent {
	struct lg_thread *th;
	unsigned index;
	enum lg_kind kind;
	enum lg_state state;
	int fd;
	SSL *ssl;
	uint32_t ev;                              /* epoll interest; 0 = not registered */
	bool claimed, sent, recycle, in_connect;  /* sent: the claimed request is on the wire */
	uint64_t t_conn, t_req, t_sent, deadline; /* t_req: scheduled time with --rate, else send time */
	uint64_t mark_done;                       /* the mark (SIGUSR1 time) this agent has had a 2xx after; 0 none */
	bool served, in_idle;                     /* in_idle: in the thread's ring of free connections (--rate) */
	uint64_t failures;                        /* failed requests of this agent in the recorded window */
	unsigned rr, tunnel_reqs;
	const struct lg_url *url; /* origin of the current tunnel or direct connection */
	char *auth;
	size_t auth_len;
	struct lg_http http;
	size_t in_len, out_len, out_off;
	char out[LG_OUT_SIZE];
	char in[LG_IN_SIZE];
};

struct lg_run {
	const struct lg_config *cfg;
	SSL_CTX *ssl_ctx;
	uint64_t t0, t_warm, t_end;
	atomic_uint_fast64_t claimed, finished, t_done;
	atomic_bool stop;
	atomic_bool noted[LG_ERR_COUNT];
};

struct lg_thread {
	struct lg_run *run;
	unsigned id;
	int ep;
	pthread_t tid;
	struct lg_agent **agents;
	size_t n_agents;
	struct lg_agent **queue;
	size_t q_head, q_len;
	unsigned budget;
	double tokens;
	size_t recycle_cursor;
	uint64_t last_tick;
	struct lg_stats st;
	uint64_t last_ok; /* time of this thread's latest 2xx */
	/* --rate: arrival k of this thread is due at ol_t0 + k * ol_interval_us; [ol_next, ol_due)
	 * are due but not yet sent; free connections wait in the idle ring, oldest first */
	double ol_interval_us;
	uint64_t ol_t0, ol_due, ol_next;
	struct lg_agent **idle;
	size_t i_head, i_len;
};

static volatile sig_atomic_t lg_interrupted;
/* SIGUSR1 marks a moment (e.g. the proxy restarted): the report then says when every agent
 * had a 2xx again after it. Set from the signal handler, read by the event loops. */
static atomic_uint_fast64_t lg_mark_us;

static uint64_t lg_now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* ---- histogram: HdrHistogram-like log-linear buckets in microseconds ----------------------- */

static size_t lg_hist_index(uint64_t v)
{
	if (v < 2 * LG_HIST_SUB)
		return (size_t)v;
	unsigned e = 63u - (unsigned)__builtin_clzll(v);
	unsigned shift = e - LG_HIST_SUB_BITS;
	if (shift > LG_HIST_SHIFTS)
		return LG_HIST_BUCKETS - 1;
	return 2 * LG_HIST_SUB + (shift - 1) * LG_HIST_SUB + (size_t)((v >> shift) - LG_HIST_SUB);
}

/* Highest value that maps to bucket i, as HdrHistogram reports percentiles. */
static uint64_t lg_hist_upper(size_t i)
{
	if (i < 2 * LG_HIST_SUB)
		return i;
	size_t k = i - 2 * LG_HIST_SUB;
	unsigned shift = (unsigned)(k / LG_HIST_SUB) + 1;
	uint64_t top = k % LG_HIST_SUB + LG_HIST_SUB;
	return ((top + 1) << shift) - 1;
}

static void lg_hist_add(struct lg_hist *h, uint64_t v)
{
	if (h->count == 0 || v < h->min)
		h->min = v;
	if (v > h->max)
		h->max = v;
	h->count++;
	h->sum += v;
	h->b[lg_hist_index(v)]++;
}

static void lg_hist_merge(struct lg_hist *dst, const struct lg_hist *src)
{
	if (src->count == 0)
		return;
	if (dst->count == 0 || src->min < dst->min)
		dst->min = src->min;
	if (src->max > dst->max)
		dst->max = src->max;
	dst->count += src->count;
	dst->sum += src->sum;
	for (size_t i = 0; i < LG_HIST_BUCKETS; i++)
		dst->b[i] += src->b[i];
}

/* Percentile given in parts per 100,000 (99000 = p99), so the rank is exact integer arithmetic. */
static uint64_t lg_hist_pct(const struct lg_hist *h, uint64_t per100k)
{
	if (h->count == 0)
		return 0;
	uint64_t rank = (h->count * per100k + 99999) / 100000;
	if (rank == 0)
		rank = 1;
	uint64_t cum = 0;
	for (size_t i = 0; i < LG_HIST_BUCKETS; i++) {
		cum += h->b[i];
		if (cum >= rank) {
			uint64_t v = lg_hist_upper(i);
			return v > h->max ? h->max : v;
		}
	}
	return h->max;
}

/* ---- HTTP response parsing ---------------------------------------------------------------- */

static void lg_http_init(struct lg_http *h, bool for_connect)
{
	memset(h, 0, sizeof(*h));
	h->for_connect = for_connect;
}

/* Length of the head including its blank line, or 0 while incomplete; accepts bare LF lines. */
static size_t lg_http_head_end(const char *p, size_t len, size_t *scanned)
{
	size_t i = *scanned;

	while (i < len) {
		const char *nl = memchr(p + i, '\n', len - i);
		if (!nl)
			break;
		size_t j = (size_t)(nl - p) + 1;
		if (j < len && p[j] == '\n')
			return j + 1;
		if (j + 1 < len && p[j] == '\r' && p[j + 1] == '\n')
			return j + 2;
		if (j >= len || (j + 1 >= len && p[j] == '\r')) {
			*scanned = (size_t)(nl - p); /* look at this line end again once more bytes arrive */
			return 0;
		}
		i = j;
	}
	*scanned = len;
	return 0;
}

static bool lg_http_token_in(const char *v, size_t len, const char *tok)
{
	size_t tl = strlen(tok);

	for (size_t i = 0; i + tl <= len; i++) {
		if (strncasecmp(v + i, tok, tl) != 0)
			continue;
		bool left = i == 0 || v[i - 1] == ',' || v[i - 1] == ' ' || v[i - 1] == '\t';
		bool right = i + tl == len || v[i + tl] == ',' || v[i + tl] == ' ' || v[i + tl] == '\t';
		if (left && right)
			return true;
	}
	return false;
}

/* Parses a complete head; sets status, close and the body framing state. */
static enum lg_http_rc lg_http_parse_head(struct lg_http *h, const char *p, size_t len)
{
	const char *end = p + len;
	const char *eol = memchr(p, '\n', len);

	if (!eol || eol - p < 12 || memcmp(p, "HTTP/1.", 7) != 0 || (p[7] != '0' && p[7] != '1') || p[8] != ' ')
		return LG_HTTP_BAD;
	if (!isdigit((unsigned char)p[9]) || !isdigit((unsigned char)p[10]) || !isdigit((unsigned char)p[11]))
		return LG_HTTP_BAD;
	if (eol - p > 12 && p[12] != ' ' && p[12] != '\r')
		return LG_HTTP_BAD;
	int status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
	if (status < 100 || status >= LG_STATUS_MAX)
		return LG_HTTP_BAD;
	bool http10 = p[7] == '0';
	bool keepalive = false, close = false, chunked = false, has_te = false, has_cl = false;
	uint64_t cl = 0;

	for (const char *line = eol + 1; line < end;) {
		const char *le = memchr(line, '\n', (size_t)(end - line));
		if (!le)
			return LG_HTTP_BAD;
		size_t ll = (size_t)(le - line);
		if (ll > 0 && line[ll - 1] == '\r')
			ll--;
		const char *next = le + 1;
		if (ll == 0)
			break;
		if (line[0] == ' ' || line[0] == '\t') { /* obsolete folding: a continuation we do not need */
			line = next;
			continue;
		}
		const char *colon = memchr(line, ':', ll);
		if (!colon || colon == line)
			return LG_HTTP_BAD;
		size_t nl = (size_t)(colon - line);
		const char *v = colon + 1;
		const char *ve = line + ll;
		while (v < ve && (*v == ' ' || *v == '\t'))
			v++;
		while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
			ve--;
		size_t vl = (size_t)(ve - v);
		if (nl == 14 && strncasecmp(line, "Content-Length", 14) == 0) {
			uint64_t n = 0;
			if (vl == 0 || vl > 18)
				return LG_HTTP_BAD;
			for (size_t i = 0; i < vl; i++) {
				if (!isdigit((unsigned char)v[i]))
					return LG_HTTP_BAD;
				n = n * 10 + (uint64_t)(v[i] - '0');
			}
			if (has_cl && n != cl)
				return LG_HTTP_BAD; /* conflicting lengths: RFC 9112 §6.3 says reject */
			has_cl = true;
			cl = n;
		} else if (nl == 17 && strncasecmp(line, "Transfer-Encoding", 17) == 0) {
			has_te = true;
			/* chunked must be the final coding; anything else is delimited by close */
			chunked = vl >= 7 && strncasecmp(ve - 7, "chunked", 7) == 0 &&
			          (vl == 7 || ve[-8] == ',' || ve[-8] == ' ' || ve[-8] == '\t');
		} else if (nl == 10 && strncasecmp(line, "Connection", 10) == 0) {
			if (lg_http_token_in(v, vl, "close"))
				close = true;
			if (lg_http_token_in(v, vl, "keep-alive"))
				keepalive = true;
		}
		line = next;
	}

	h->status = status;
	h->close = close || (http10 && !keepalive);
	if (status < 200) {
		if (status == 101)
			return LG_HTTP_BAD; /* we never ask to switch protocols */
		h->state = LG_HTTP_HEAD;    /* interim answer (100 Continue): the real one follows */
		return LG_HTTP_MORE;
	}
	if ((h->for_connect && status < 300) || status == 204 || status == 304) {
		h->state = LG_HTTP_DONE;
	} else if (has_te && chunked) {
		h->state = LG_HTTP_CHUNK_SIZE;
	} else if (has_te) {
		h->state = LG_HTTP_BODY_EOF;
		h->close = true;
	} else if (has_cl) {
		h->remaining = cl;
		h->state = cl ? LG_HTTP_BODY_LEN : LG_HTTP_DONE;
	} else {
		h->state = LG_HTTP_BODY_EOF;
		h->close = true;
	}
	return LG_HTTP_MORE;
}

/* Line at p (CRLF or LF ended) of at most max bytes: its length without the end, or -1 if
 * incomplete, -2 if too long. *adv is the length including the line end. */
static long lg_http_line(const char *p, size_t len, size_t max, size_t *adv)
{
	const char *nl = memchr(p, '\n', len < max ? len : max);
	if (!nl)
		return len >= max ? -2 : -1;
	size_t l = (size_t)(nl - p);
	*adv = l + 1;
	if (l > 0 && p[l - 1] == '\r')
		l--;
	return (long)l;
}

/* Feeds the bytes buffered so far. *used is how many the parser consumed: a head is consumed
 * only once complete, body bytes as they come, so the caller can drop them and keep the rest. */
static enum lg_http_rc lg_http_feed(struct lg_http *h, const char *p, size_t len, size_t *used)
{
	size_t off = 0;

	for (;;) {
		size_t avail = len - off, adv = 0, take;
		long ll;

		if (h->state == LG_HTTP_DONE) {
			*used = off;
			return LG_HTTP_COMPLETE;
		}
		if (avail == 0 && h->state != LG_HTTP_BODY_LEN)
			break;
		switch (h->state) {
		case LG_HTTP_HEAD: {
			size_t n = lg_http_head_end(p + off, avail, &h->scanned);
			if (n == 0)
				goto more;
			if (lg_http_parse_head(h, p + off, n) == LG_HTTP_BAD)
				return LG_HTTP_BAD;
			h->scanned = 0;
			off += n;
			break;
		}
		case LG_HTTP_BODY_LEN:
		case LG_HTTP_CHUNK_DATA:
			take = avail < h->remaining ? avail : (size_t)h->remaining;
			h->remaining -= take;
			h->body_bytes += take;
			off += take;
			if (h->remaining)
				goto more;
			h->state = h->state == LG_HTTP_BODY_LEN ? LG_HTTP_DONE : LG_HTTP_CHUNK_END;
			break;
		case LG_HTTP_BODY_EOF:
			h->body_bytes += avail;
			off = len;
			goto more;
		case LG_HTTP_CHUNK_SIZE: {
			ll = lg_http_line(p + off, avail, 1024, &adv);
			if (ll == -1)
				goto more;
			if (ll < 1)
				return LG_HTTP_BAD;
			uint64_t n = 0;
			long i = 0;
			for (; i < ll && isxdigit((unsigned char)p[off + (size_t)i]); i++) {
				char c = p[off + (size_t)i];
				if (n >> 60)
					return LG_HTTP_BAD;
				n = n * 16 + (uint64_t)(isdigit((unsigned char)c)
				                            ? c - '0'
				                            : (tolower((unsigned char)c) - 'a' + 10));
			}
			if (i == 0 || (i < ll && p[off + (size_t)i] != ';' && p[off + (size_t)i] != ' ' &&
			               p[off + (size_t)i] != '\t'))
				return LG_HTTP_BAD;
			off += adv;
			h->remaining = n;
			h->state = n ? LG_HTTP_CHUNK_DATA : LG_HTTP_TRAILERS;
			break;
		}
		case LG_HTTP_CHUNK_END:
			ll = lg_http_line(p + off, avail, 2, &adv);
			if (ll == -1)
				goto more;
			if (ll != 0)
				return LG_HTTP_BAD;
			off += adv;
			h->state = LG_HTTP_CHUNK_SIZE;
			break;
		case LG_HTTP_TRAILERS:
			ll = lg_http_line(p + off, avail, 8192, &adv);
			if (ll == -1)
				goto more;
			if (ll == -2)
				return LG_HTTP_BAD;
			off += adv;
			if (ll == 0)
				h->state = LG_HTTP_DONE;
			break;
		case LG_HTTP_DONE:
			break;
		}
	}
more:
	*used = off;
	return LG_HTTP_MORE;
}

/* ---- credentials (docs/agents.md) ---------------------------------------------------------------- */

/* RFC 4122 namespace for URLs: the GUID of agent i is uuid5(NAMESPACE_URL, "fps-loadgen:agent:<i>"),
 * so runs are reproducible and a test can recompute every username with Python's uuid module. */
static const unsigned char lg_cred_ns[16] = {0x6b, 0xa7, 0xb8, 0x11, 0x9d, 0xad, 0x11, 0xd1,
                                             0x80, 0xb4, 0x00, 0xc0, 0x4f, 0xd4, 0x30, 0xc8};

static int lg_cred_sha1(const void *data, size_t len, unsigned char md[20])
{
	unsigned int mdlen = 0;

	if (!EVP_Digest(data, len, md, &mdlen, EVP_sha1(), NULL) || mdlen != 20)
		return -1;
	return 0;
}

/* Builds "Proxy-Authorization: Basic base64(user:hex(sha1(user || apikey)))\r\n" for one agent. */
static char *lg_cred_header(const char *product, const char *apikey, unsigned index, size_t *outlen)
{
	unsigned char buf[64], md[20];
	int n = snprintf((char *)buf + 16, sizeof(buf) - 16, "fps-loadgen:agent:%u", index);

	memcpy(buf, lg_cred_ns, 16);
	if (lg_cred_sha1(buf, 16 + (size_t)n, md) < 0)
		return NULL;
	md[6] = (unsigned char)((md[6] & 0x0f) | 0x50); /* version 5 */
	md[8] = (unsigned char)((md[8] & 0x3f) | 0x80); /* RFC 4122 variant */

	char user[160], userpass[256];
	snprintf(user, sizeof(user), "%s-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", product,
	         md[0], md[1], md[2], md[3], md[4], md[5], md[6], md[7], md[8], md[9], md[10], md[11], md[12], md[13],
	         md[14], md[15]);

	size_t ul = strlen(user), kl = strlen(apikey);
	unsigned char *cat = malloc(ul + kl + 1);
	if (!cat)
		return NULL;
	memcpy(cat, user, ul);
	memcpy(cat + ul, apikey, kl);
	int rc = lg_cred_sha1(cat, ul + kl, md);
	free(cat);
	if (rc < 0)
		return NULL;
	int pl = snprintf(userpass, sizeof(userpass), "%s:", user);
	for (int i = 0; i < 20; i++)
		pl += snprintf(userpass + pl, sizeof(userpass) - (size_t)pl, "%02x", md[i]);

	size_t cap = 32 + 4 * (((size_t)pl + 2) / 3) + 3;
	char *hdr = malloc(cap);
	if (!hdr)
		return NULL;
	int hl = snprintf(hdr, cap, "Proxy-Authorization: Basic ");
	int bl = EVP_EncodeBlock((unsigned char *)hdr + hl, (const unsigned char *)userpass, pl);
	memcpy(hdr + hl + bl, "\r\n", 3);
	*outlen = (size_t)(hl + bl + 2);
	return hdr;
}

/* ---- URLs and addresses ------------------------------------------------------------------- */

static bool lg_str_clean(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] <= ' ' || (unsigned char)s[i] >= 0x7f)
			return false;
	return true;
}

/* Splits "host:port" or "[v6]:port" (port required when need_port). */
static int lg_hostport_split(const char *s, size_t n, char *host, size_t hostcap, char *port, size_t portcap,
                             bool need_port)
{
	const char *hs = s, *he, *ps = NULL;

	if (n && s[0] == '[') {
		he = memchr(s, ']', n);
		if (!he)
			return -1;
		hs = s + 1;
		if (he + 1 < s + n) {
			if (he[1] != ':')
				return -1;
			ps = he + 2;
		}
	} else {
		he = memchr(s, ':', n);
		if (he)
			ps = he + 1;
		else
			he = s + n;
	}
	if (he == hs || (size_t)(he - hs) >= hostcap)
		return -1;
	memcpy(host, hs, (size_t)(he - hs));
	host[he - hs] = '\0';
	if (!ps) {
		port[0] = '\0';
		return need_port ? -1 : 0;
	}
	size_t pl = (size_t)(s + n - ps);
	if (pl == 0 || pl >= portcap)
		return -1;
	for (size_t i = 0; i < pl; i++)
		if (!isdigit((unsigned char)ps[i]))
			return -1;
	memcpy(port, ps, pl);
	port[pl] = '\0';
	long v = strtol(port, NULL, 10);
	return v >= 1 && v <= 65535 ? 0 : -1;
}

static int lg_resolve(const char *host, const char *port, struct sockaddr_storage *ss, socklen_t *len)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
	struct addrinfo *ai = NULL;

	if (getaddrinfo(host, port, &hints, &ai) != 0 || !ai)
		return -1;
	memcpy(ss, ai->ai_addr, ai->ai_addrlen);
	*len = ai->ai_addrlen;
	freeaddrinfo(ai);
	return 0;
}

static char *lg_strcat3(const char *a, const char *b, const char *c, size_t *len)
{
	size_t la = strlen(a), lb = strlen(b), lc = strlen(c);
	char *s = malloc(la + lb + lc + 1);

	if (!s)
		return NULL;
	memcpy(s, a, la);
	memcpy(s + la, b, lb);
	memcpy(s + la + lb, c, lc + 1);
	*len = la + lb + lc;
	return s;
}

static int lg_url_parse(const char *text, struct lg_url *u)
{
	const char *p;

	memset(u, 0, sizeof(*u));
	u->text = text;
	if (strncasecmp(text, "http://", 7) == 0) {
		p = text + 7;
	} else if (strncasecmp(text, "https://", 8) == 0) {
		p = text + 8;
		u->tls = true;
	} else {
		return -1;
	}
	size_t al = strcspn(p, "/?#");
	if (al == 0 || al >= sizeof(u->authority) - 8 || !lg_str_clean(p, al) || memchr(p, '@', al))
		return -1;
	if (lg_hostport_split(p, al, u->host, sizeof(u->host), u->port, sizeof(u->port), false) < 0)
		return -1;
	memcpy(u->authority, p, al);
	u->authority[al] = '\0';
	if (!u->port[0])
		snprintf(u->port, sizeof(u->port), "%s", u->tls ? "443" : "80");
	const char *path = p + al;
	if (*path == '#')
		path = "";
	size_t pl = strcspn(path, "#");
	if (pl >= sizeof(u->path) - 1 || !lg_str_clean(path, pl))
		return -1;
	if (pl == 0 || path[0] != '/')
		u->path[0] = '/';
	memcpy(u->path + (u->path[0] == '/'), path, pl);
	bool v6 = strchr(u->host, ':') != NULL;
	char hp[sizeof(u->hostport)];
	snprintf(hp, sizeof(hp), "%s%s%s:%s", v6 ? "[" : "", u->host, v6 ? "]" : "", u->port);
	memcpy(u->hostport, hp, sizeof(hp));
	return 0;
}

/* Request heads are built once per URL; per request only the agent's credentials are appended. */
static int lg_url_prepare(struct lg_url *u)
{
	char a[1600];
	const char *ua = "\r\nUser-Agent: " LG_USER_AGENT "\r\n";

	snprintf(a, sizeof(a), "GET http://%s%s HTTP/1.1\r\nHost: %s", u->authority, u->path, u->authority);
	u->abs_head = lg_strcat3(a, ua, "", &u->abs_len);
	snprintf(a, sizeof(a), "GET %s HTTP/1.1\r\nHost: %s", u->path, u->authority);
	u->origin_head = lg_strcat3(a, ua, "", &u->origin_len);
	snprintf(a, sizeof(a), "CONNECT %s HTTP/1.1\r\nHost: %s", u->hostport, u->hostport);
	u->connect_head = lg_strcat3(a, ua, "", &u->connect_len);
	if (!u->abs_head || !u->origin_head || !u->connect_head)
		return -1;
	return 0;
}

static void lg_url_free(struct lg_url *u)
{
	free(u->abs_head);
	free(u->origin_head);
	free(u->connect_head);
}

/* ---- command line ------------------------------------------------------------------------- */

static void lg_cli_usage(FILE *f)
{
	fputs("usage: loadgen [options] --url URL [--url URL ...]\n"
	      "  --proxy HOST:PORT        proxy to load [127.0.0.1:8080]\n"
	      "  --direct                 connect straight to the origin(s), origin-form requests\n"
	      "  --mode get|connect|mix   workload [get]; mix needs --mix\n"
	      "  --mix get=P,connect=Q    share of agents per kind, P+Q=100 (implies --mode mix)\n"
	      "  --url URL                http://... for get, https://... for connect; repeatable,\n"
	      "                           used round-robin (per request for get, per tunnel for connect)\n"
	      "  --agents N               agents = keep-alive connections [1000]\n"
	      "  --first-agent I          index of the first agent (GUIDs derive from it) [0]\n"
	      "  --threads T              event-loop threads [1]\n"
	      "  --product NAME           username prefix [ApexOne]\n"
	      "  --apikey KEY             API key for the password (required unless --no-auth/--direct)\n"
	      "  --no-auth                send no Proxy-Authorization\n"
	      "  --rate R                 open loop: R requests/s in total on a fixed schedule, sent on\n"
	      "                           any free agent connection; latency counts from the scheduled\n"
	      "                           time [0=closed loop: each agent waits for its answer]\n"
	      "  --duration S             run length in seconds, caps --requests too [10]\n"
	      "  --requests N             stop after N requests in total\n"
	      "  --warmup S               seconds at the start excluded from the results [0]\n"
	      "  --timeout MS             per request (and per connect) timeout [5000]\n"
	      "  --ramp N                 new connections per 10 ms, whole process [200]\n"
	      "  --tunnel-rate R          tunnels closed and reopened per second in total [0=off]\n"
	      "  --requests-per-tunnel K  close a tunnel after K requests [0=never]\n"
	      "  --insecure               do not verify the origin's certificate\n"
	      "  --cafile FILE            CA bundle to verify the origin [system default]\n"
	      "  --json FILE              write the JSON result there ['-' = stdout, the default]\n"
	      "  SIGUSR1 marks a moment (say, the proxy restarted): \"availability\" then reports when\n"
	      "  every agent had a 2xx again after it, beside the longest time without any 2xx\n"
	      "  --help\n",
	      f);
}

static int lg_cli_uint(const char *opt, const char *s, unsigned long long lo, unsigned long long hi,
                       unsigned long long *out)
{
	char *end;

	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s || *end || s[0] == '-' || v < lo || v > hi) {
		fprintf(stderr, "loadgen: %s expects an integer in %llu..%llu, got '%s'\n", opt, lo, hi, s);
		return -1;
	}
	*out = v;
	return 0;
}

static int lg_cli_double(const char *opt, const char *s, double lo, double hi, double *out)
{
	char *end;

	errno = 0;
	double v = strtod(s, &end);
	if (errno || end == s || *end || !(v >= lo && v <= hi)) {
		fprintf(stderr, "loadgen: %s expects a number in %g..%g, got '%s'\n", opt, lo, hi, s);
		return -1;
	}
	*out = v;
	return 0;
}

static int lg_cli_mix(const char *s, struct lg_config *c)
{
	unsigned g = 0, k = 0;
	int n = 0;

	if (sscanf(s, "get=%u,connect=%u%n", &g, &k, &n) == 2 && s[n] == '\0') {
	} else if (sscanf(s, "connect=%u,get=%u%n", &k, &g, &n) == 2 && s[n] == '\0') {
	} else {
		fprintf(stderr, "loadgen: --mix expects get=P,connect=Q, got '%s'\n", s);
		return -1;
	}
	if (g + k != 100) {
		fprintf(stderr, "loadgen: --mix shares must add up to 100, got %u+%u\n", g, k);
		return -1;
	}
	c->mix_get = g;
	c->mix_connect = k;
	c->mode = LG_MODE_MIX;
	return 0;
}

/* Returns 0 to run, 1 after --help, -1 on a usage error (already reported). */
static int lg_cli_parse(int argc, char **argv, struct lg_config *c)
{
	enum {
		O_PROXY = 256,
		O_DIRECT,
		O_MODE,
		O_MIX,
		O_URL,
		O_AGENTS,
		O_FIRST,
		O_THREADS,
		O_PRODUCT,
		O_APIKEY,
		O_NOAUTH,
		O_DURATION,
		O_REQUESTS,
		O_WARMUP,
		O_TIMEOUT,
		O_RAMP,
		O_TRATE,
		O_RATE,
		O_PERTUN,
		O_INSECURE,
		O_CAFILE,
		O_JSON,
		O_HELP
	};
	static const struct option opts[] = {
	    {"proxy", required_argument, NULL, O_PROXY},
	    {"direct", no_argument, NULL, O_DIRECT},
	    {"mode", required_argument, NULL, O_MODE},
	    {"mix", required_argument, NULL, O_MIX},
	    {"url", required_argument, NULL, O_URL},
	    {"agents", required_argument, NULL, O_AGENTS},
	    {"first-agent", required_argument, NULL, O_FIRST},
	    {"threads", required_argument, NULL, O_THREADS},
	    {"product", required_argument, NULL, O_PRODUCT},
	    {"apikey", required_argument, NULL, O_APIKEY},
	    {"no-auth", no_argument, NULL, O_NOAUTH},
	    {"duration", required_argument, NULL, O_DURATION},
	    {"requests", required_argument, NULL, O_REQUESTS},
	    {"warmup", required_argument, NULL, O_WARMUP},
	    {"timeout", required_argument, NULL, O_TIMEOUT},
	    {"ramp", required_argument, NULL, O_RAMP},
	    {"tunnel-rate", required_argument, NULL, O_TRATE},
	    {"rate", required_argument, NULL, O_RATE},
	    {"requests-per-tunnel", required_argument, NULL, O_PERTUN},
	    {"insecure", no_argument, NULL, O_INSECURE},
	    {"cafile", required_argument, NULL, O_CAFILE},
	    {"json", required_argument, NULL, O_JSON},
	    {"help", no_argument, NULL, O_HELP},
	    {NULL, 0, NULL, 0},
	};
	unsigned long long v;
	int o;
	bool mode_set = false;

	memset(c, 0, sizeof(*c));
	c->proxy = "127.0.0.1:8080";
	c->product = "ApexOne";
	c->agents = 1000;
	c->threads = 1;
	c->duration = 10;
	c->timeout_ms = 5000;
	c->ramp = 200;
	c->json_path = "-";
	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (o) {
		case O_PROXY:
			c->proxy = optarg;
			break;
		case O_DIRECT:
			c->direct = true;
			break;
		case O_MODE:
			mode_set = true;
			if (strcmp(optarg, "get") == 0) {
				c->mode = LG_MODE_GET;
			} else if (strcmp(optarg, "connect") == 0) {
				c->mode = LG_MODE_CONNECT;
			} else if (strcmp(optarg, "mix") == 0) {
				c->mode = LG_MODE_MIX;
			} else {
				fprintf(stderr, "loadgen: --mode expects get, connect or mix, got '%s'\n", optarg);
				return -1;
			}
			break;
		case O_MIX:
			if (lg_cli_mix(optarg, c) < 0)
				return -1;
			mode_set = true;
			break;
		case O_URL:
			if (c->n_urls == LG_MAX_URLS) {
				fprintf(stderr, "loadgen: at most %d --url\n", LG_MAX_URLS);
				return -1;
			}
			if (lg_url_parse(optarg, &c->urls[c->n_urls]) < 0) {
				fprintf(stderr, "loadgen: --url '%s': expected http[s]://host[:port][/path]\n", optarg);
				return -1;
			}
			c->n_urls++;
			break;
		case O_AGENTS:
			if (lg_cli_uint("--agents", optarg, 1, 100000, &v) < 0)
				return -1;
			c->agents = (unsigned)v;
			break;
		case O_FIRST:
			if (lg_cli_uint("--first-agent", optarg, 0, UINT_MAX / 2, &v) < 0)
				return -1;
			c->first_agent = (unsigned)v;
			break;
		case O_THREADS:
			if (lg_cli_uint("--threads", optarg, 1, LG_MAX_THREADS, &v) < 0)
				return -1;
			c->threads = (unsigned)v;
			break;
		case O_PRODUCT:
			c->product = optarg;
			break;
		case O_APIKEY:
			c->apikey = optarg;
			break;
		case O_NOAUTH:
			c->no_auth = true;
			break;
		case O_DURATION:
			if (lg_cli_double("--duration", optarg, 0.001, 86400, &c->duration) < 0)
				return -1;
			break;
		case O_REQUESTS:
			if (lg_cli_uint("--requests", optarg, 1, UINT64_MAX / 2, &v) < 0)
				return -1;
			c->max_requests = v;
			break;
		case O_WARMUP:
			if (lg_cli_double("--warmup", optarg, 0, 86400, &c->warmup) < 0)
				return -1;
			break;
		case O_TIMEOUT:
			if (lg_cli_uint("--timeout", optarg, 1, 3600000, &v) < 0)
				return -1;
			c->timeout_ms = (unsigned)v;
			break;
		case O_RAMP:
			if (lg_cli_uint("--ramp", optarg, 1, 100000, &v) < 0)
				return -1;
			c->ramp = (unsigned)v;
			break;
		case O_TRATE:
			if (lg_cli_double("--tunnel-rate", optarg, 0, 1e6, &c->tunnel_rate) < 0)
				return -1;
			break;
		case O_RATE:
			if (lg_cli_double("--rate", optarg, 0, 1e7, &c->rate) < 0)
				return -1;
			break;
		case O_PERTUN:
			if (lg_cli_uint("--requests-per-tunnel", optarg, 0, UINT_MAX, &v) < 0)
				return -1;
			c->per_tunnel = (unsigned)v;
			break;
		case O_INSECURE:
			c->insecure = true;
			break;
		case O_CAFILE:
			c->cafile = optarg;
			break;
		case O_JSON:
			c->json_path = optarg;
			break;
		case O_HELP:
			lg_cli_usage(stdout);
			return 1;
		default:
			fputs("loadgen: try --help\n", stderr);
			return -1;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "loadgen: unexpected argument '%s'\n", argv[optind]);
		return -1;
	}
	if (c->mode == LG_MODE_MIX && c->mix_get + c->mix_connect != 100) {
		fputs("loadgen: --mode mix needs --mix get=P,connect=Q\n", stderr);
		return -1;
	}
	if (c->n_urls == 0) {
		fputs("loadgen: at least one --url is required\n", stderr);
		return -1;
	}
	for (size_t i = 0; i < c->n_urls; i++) {
		struct lg_url *u = &c->urls[i];
		if (u->tls)
			c->tls_urls[c->n_tls++] = u;
		else
			c->get_urls[c->n_get++] = u;
	}
	if (!mode_set && c->n_get == 0)
		c->mode = LG_MODE_CONNECT; /* only https URLs given: the only workload that fits */
	if ((c->mode != LG_MODE_CONNECT && c->n_get == 0) || (c->mode != LG_MODE_GET && c->n_tls == 0) ||
	    (c->mode == LG_MODE_GET && c->n_tls) || (c->mode == LG_MODE_CONNECT && c->n_get)) {
		fputs("loadgen: --mode get takes http:// URLs, connect https:// URLs, mix both\n", stderr);
		return -1;
	}
	size_t pl = strlen(c->product);
	if (pl == 0 || pl > 128 - 37 || !lg_str_clean(c->product, pl) || strchr(c->product, ':')) {
		fprintf(stderr, "loadgen: --product '%s': printable ASCII without ':' or spaces, 1..91 bytes\n",
		        c->product);
		return -1;
	}
	if (c->direct)
		c->no_auth = true; /* an origin has no use for proxy credentials */
	if (!c->no_auth && !c->apikey) {
		fputs("loadgen: --apikey KEY is required (or --no-auth)\n", stderr);
		return -1;
	}
	if (c->threads > c->agents)
		c->threads = c->agents;
	if (c->rate > 0 && c->max_requests) {
		fputs("loadgen: --rate and --requests exclude each other (the schedule sets the count)\n", stderr);
		return -1;
	}
	if (c->warmup >= c->duration) {
		fputs("loadgen: --warmup must be shorter than --duration\n", stderr);
		return -1;
	}
	if (c->direct) {
		for (size_t i = 0; i < c->n_urls; i++) {
			struct lg_url *u = &c->urls[i];
			if (lg_resolve(u->host, u->port, &u->addr, &u->addrlen) < 0) {
				fprintf(stderr, "loadgen: --url '%s': cannot resolve '%s'\n", u->text, u->host);
				return -1;
			}
		}
	} else {
		char host[256], port[8];
		if (lg_hostport_split(c->proxy, strlen(c->proxy), host, sizeof(host), port, sizeof(port), true) < 0 ||
		    lg_resolve(host, port, &c->proxy_addr, &c->proxy_addrlen) < 0) {
			fprintf(stderr, "loadgen: --proxy '%s': expected a resolvable HOST:PORT\n", c->proxy);
			return -1;
		}
	}
	return 0;
}

/* ---- run-wide state ----------------------------------------------------------------------- */

static bool lg_run_exhausted(struct lg_run *r)
{
	uint64_t max = r->cfg->max_requests;
	return max && atomic_load_explicit(&r->claimed, memory_order_relaxed) >= max;
}

/* An agent claims its next request before it connects, so that with --requests no agent opens a
 * connection or tunnel with nothing left to fetch. The CAS keeps the count exact when claims are
 * given back. */
static bool lg_run_claim(struct lg_run *r)
{
	uint64_t max = r->cfg->max_requests;
	uint_fast64_t v = atomic_load_explicit(&r->claimed, memory_order_relaxed);

	if (!max)
		return true;
	do {
		if (v >= max)
			return false;
	} while (
	    !atomic_compare_exchange_weak_explicit(&r->claimed, &v, v + 1, memory_order_relaxed, memory_order_relaxed));
	return true;
}

/* A claim whose request was never sent (connect, CONNECT or handshake failed) goes back. */
static void lg_run_unclaim(struct lg_run *r)
{
	if (r->cfg->max_requests)
		atomic_fetch_sub_explicit(&r->claimed, 1, memory_order_relaxed);
}

static void lg_run_finish(struct lg_run *r, uint64_t now)
{
	uint64_t max = r->cfg->max_requests;
	if (max && atomic_fetch_add_explicit(&r->finished, 1, memory_order_relaxed) + 1 == max) {
		atomic_store(&r->t_done, now);
		atomic_store(&r->stop, true);
	}
}

/* The first occurrence of each error class is described on stderr: counts alone rarely say why. */
static void lg_run_note(struct lg_run *r, enum lg_err e, const char *fmt, ...)
{
	if (atomic_exchange(&r->noted[e], true))
		return;
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "loadgen: first %s: ", lg_err_names[e]);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

/* Nothing new starts once the run is over, even within the epoll batch that noticed it. */
static bool lg_run_open(struct lg_run *r, uint64_t now)
{
	return now < r->t_end && !atomic_load_explicit(&r->stop, memory_order_relaxed);
}

static bool lg_recording(const struct lg_thread *t, uint64_t now)
{
	return now >= t->run->t_warm && now < t->run->t_end;
}

/* A failed request of agent a (recorded window only): the per-agent summary. */
static void lg_agent_failed(struct lg_thread *t, struct lg_agent *a, uint64_t now)
{
	if (!lg_recording(t, now))
		return;
	if (a->failures++ == 0)
		t->st.agents_failed++;
	if (a->failures > t->st.agent_fail_max)
		t->st.agent_fail_max = a->failures;
}

/* The request agent a sent at a->t_req ended now: if it was on the wire at the mark, count how. */
static void lg_mark_inflight(struct lg_thread *t, const struct lg_agent *a, int status, uint64_t now)
{
	uint64_t mark = atomic_load(&lg_mark_us);
	if (!mark || a->t_req > mark || now < mark)
		return;
	if (status == 0)
		t->st.mark_inflight_cut++;
	else if (status >= 200 && status < 300)
		t->st.mark_inflight_2xx++;
	else
		t->st.mark_inflight_other++;
}

/* ---- agents ------------------------------------------------------------------------------- */

static void lg_agent_want(struct lg_agent *a, uint32_t ev)
{
	if (a->ev == ev)
		return;
	struct epoll_event e = {.events = ev, .data.ptr = a};
	if (epoll_ctl(a->th->ep, a->ev ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, a->fd, &e) == 0)
		a->ev = ev;
}

static void lg_agent_close(struct lg_agent *a, bool clean)
{
	if (a->ssl) {
		if (clean)
			SSL_shutdown(a->ssl); /* best effort close_notify; never waits */
		SSL_free(a->ssl);
		a->ssl = NULL;
	}
	if (a->fd >= 0)
		close(a->fd); /* also drops it from the epoll set */
	a->fd = -1;
	a->ev = 0;
	a->in_len = a->out_len = a->out_off = 0;
	a->recycle = false;
	a->in_connect = false;
	a->state = LG_ST_STOPPED;
}

/* Agents wait here for a connection slot, so ramp-up and reconnects stay within --ramp. */
static void lg_queue_push(struct lg_thread *t, struct lg_agent *a)
{
	if (a->state == LG_ST_QUEUED || (!a->claimed && lg_run_exhausted(t->run)) || atomic_load(&t->run->stop)) {
		if (a->state != LG_ST_QUEUED)
			a->state = LG_ST_STOPPED;
		return;
	}
	a->state = LG_ST_QUEUED;
	t->queue[(t->q_head + t->q_len) % t->n_agents] = a;
	t->q_len++;
}

static enum lg_err lg_err_from_errno(int e)
{
	switch (e) {
	case ECONNRESET:
	case EPIPE:
	case ECONNABORTED:
		return LG_ERR_RESET;
	case ETIMEDOUT:
		return LG_ERR_TIMEOUT;
	default:
		return LG_ERR_IO;
	}
}

/* Counts the error, gives up the request in flight and the connection; the caller decides when
 * the agent reconnects. */
static void lg_agent_drop(struct lg_thread *t, struct lg_agent *a, enum lg_err e, uint64_t now)
{
	if (lg_recording(t, now))
		t->st.err[e]++;
	lg_agent_failed(t, a, now);
	if (a->claimed && a->sent) {
		lg_mark_inflight(t, a, 0, now);
		lg_run_finish(t->run, now);
	} else if (a->claimed)
		lg_run_unclaim(t->run);
	a->claimed = a->sent = false;
	lg_agent_close(a, false);
}

static void lg_agent_fail(struct lg_thread *t, struct lg_agent *a, enum lg_err e, uint64_t now)
{
	lg_agent_drop(t, a, e, now);
	lg_queue_push(t, a);
}

enum { LG_IO_AGAIN_R = -1, LG_IO_AGAIN_W = -2, LG_IO_ERR = -3 };

static ssize_t lg_io_ssl_result(struct lg_agent *a, int n, enum lg_err *err)
{
	switch (SSL_get_error(a->ssl, n)) {
	case SSL_ERROR_WANT_READ:
		return LG_IO_AGAIN_R;
	case SSL_ERROR_WANT_WRITE:
		return LG_IO_AGAIN_W;
	case SSL_ERROR_ZERO_RETURN:
		return 0;
	case SSL_ERROR_SYSCALL:
		if (errno == 0)
			return 0;
		*err = lg_err_from_errno(errno);
		return LG_IO_ERR;
	default:
		*err = LG_ERR_TLS;
		return LG_IO_ERR;
	}
}

static ssize_t lg_io_read(struct lg_agent *a, void *buf, size_t len, enum lg_err *err)
{
	if (a->ssl) {
		ERR_clear_error();
		errno = 0;
		int n = SSL_read(a->ssl, buf, len > INT_MAX ? INT_MAX : (int)len);
		return n > 0 ? n : lg_io_ssl_result(a, n, err);
	}
	for (;;) {
		ssize_t n = read(a->fd, buf, len);
		if (n >= 0)
			return n;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return LG_IO_AGAIN_R;
		*err = lg_err_from_errno(errno);
		return LG_IO_ERR;
	}
}

static ssize_t lg_io_write(struct lg_agent *a, const void *buf, size_t len, enum lg_err *err)
{
	if (a->ssl) {
		ERR_clear_error();
		errno = 0;
		int n = SSL_write(a->ssl, buf, (int)len);
		if (n > 0)
			return n;
		ssize_t r = lg_io_ssl_result(a, n, err);
		if (r == 0) {
			*err = LG_ERR_EOF;
			return LG_IO_ERR;
		}
		return r;
	}
	for (;;) {
		ssize_t n = send(a->fd, buf, len, MSG_NOSIGNAL);
		if (n >= 0)
			return n;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return LG_IO_AGAIN_W;
		*err = lg_err_from_errno(errno);
		return LG_IO_ERR;
	}
}

static void lg_agent_send(struct lg_thread *t, struct lg_agent *a, uint64_t now)
{
	while (a->out_off < a->out_len) {
		enum lg_err e = LG_ERR_IO;
		ssize_t n = lg_io_write(a, a->out + a->out_off, a->out_len - a->out_off, &e);
		if (n > 0) {
			a->out_off += (size_t)n;
		} else if (n == LG_IO_AGAIN_W) {
			lg_agent_want(a, EPOLLOUT);
			return;
		} else if (n == LG_IO_AGAIN_R) {
			lg_agent_want(a, EPOLLIN);
			return;
		} else {
			lg_run_note(t->run, e, "agent %u: send: %s", a->index, strerror(errno));
			lg_agent_fail(t, a, e, now);
			return;
		}
	}
	a->state = LG_ST_RECV;
	lg_agent_want(a, EPOLLIN);
}

static void lg_agent_start(struct lg_thread *t, struct lg_agent *a, const char *head, size_t hlen, bool creds,
                           uint64_t now)
{
	size_t len = hlen + (creds ? a->auth_len : 0) + 2;

	if (len > sizeof(a->out)) { /* URLs are bounded at parse time, so this is a bug, not input */
		lg_agent_fail(t, a, LG_ERR_IO, now);
		return;
	}
	memcpy(a->out, head, hlen);
	if (creds)
		memcpy(a->out + hlen, a->auth, a->auth_len);
	memcpy(a->out + len - 2, "\r\n", 2);
	a->out_len = len;
	a->out_off = 0;
	a->t_req = a->t_sent = now;
	a->deadline = now + (uint64_t)t->run->cfg->timeout_ms * 1000u;
	a->state = LG_ST_SEND;
	lg_agent_send(t, a, now);
}

/* ---- open loop (--rate) ------------------------------------------------------------------- */

static uint64_t lg_ol_time(const struct lg_thread *t, uint64_t k)
{
	return t->ol_t0 + (uint64_t)((double)k * t->ol_interval_us);
}

/* Arrivals happen on the schedule whether or not a connection is free to take them. */
static void lg_ol_advance(struct lg_thread *t, uint64_t now)
{
	uint64_t end = t->run->t_end;

	while (lg_ol_time(t, t->ol_due) <= now && lg_ol_time(t, t->ol_due) < end) {
		t->ol_due++;
		t->st.ol_arrivals++;
	}
	if (t->ol_due - t->ol_next > t->st.ol_backlog_max)
		t->st.ol_backlog_max = t->ol_due - t->ol_next;
}

static void lg_idle_push(struct lg_thread *t, struct lg_agent *a)
{
	if (a->in_idle)
		return; /* its earlier entry is still in the ring and stands for it */
	a->in_idle = true;
	t->idle[(t->i_head + t->i_len) % t->n_agents] = a;
	t->i_len++;
}

static struct lg_agent *lg_idle_pop(struct lg_thread *t)
{
	while (t->i_len) {
		struct lg_agent *a = t->idle[t->i_head];
		t->i_head = (t->i_head + 1) % t->n_agents;
		t->i_len--;
		a->in_idle = false;
		if (a->state == LG_ST_IDLE && a->fd >= 0)
			return a;
	}
	return NULL;
}

static void lg_agent_next_request(struct lg_thread *t, struct lg_agent *a, uint64_t now);

/* Due arrivals go out on free connections, oldest arrival first, longest-idle connection first. */
static void lg_ol_dispatch(struct lg_thread *t, uint64_t now)
{
	if (t->run->cfg->rate <= 0 || !lg_run_open(t->run, now))
		return;
	lg_ol_advance(t, now);
	while (t->ol_next < t->ol_due) {
		struct lg_agent *a = lg_idle_pop(t);
		if (!a)
			return;
		lg_agent_next_request(t, a, now);
	}
}

static void lg_agent_next_request(struct lg_thread *t, struct lg_agent *a, uint64_t now)
{
	const struct lg_config *c = t->run->cfg;
	uint64_t sched = 0;

	if (c->rate > 0 && lg_run_open(t->run, now)) {
		lg_ol_advance(t, now);
		if (t->ol_next == t->ol_due) { /* nothing due: wait, connected, for the next arrival */
			a->claimed = false;
			a->state = LG_ST_IDLE;
			lg_agent_want(a, EPOLLIN);
			lg_idle_push(t, a);
			return;
		}
		sched = lg_ol_time(t, t->ol_next++);
		t->st.ol_dispatched++;
	}
	if (!lg_run_open(t->run, now) || (!a->claimed && !lg_run_claim(t->run))) {
		a->state = LG_ST_IDLE; /* stay connected, like an agent with nothing to fetch */
		lg_agent_want(a, EPOLLIN);
		return;
	}
	a->claimed = a->sent = true;
	lg_http_init(&a->http, false);
	if (a->kind == LG_KIND_TLS || c->direct) {
		lg_agent_start(t, a, a->url->origin_head, a->url->origin_len, false, now);
	} else {
		const struct lg_url *u = c->get_urls[(a->index + a->rr++) % c->n_get];
		lg_agent_start(t, a, u->abs_head, u->abs_len, !c->no_auth, now);
	}
	if (sched)
		a->t_req = sched; /* the response cannot have arrived yet: start only writes */
}

static void lg_agent_handshake(struct lg_thread *t, struct lg_agent *a, uint64_t now)
{
	ERR_clear_error();
	errno = 0;
	int rc = SSL_do_handshake(a->ssl);
	if (rc == 1) {
		if (lg_recording(t, now)) {
			t->st.tunnels++;
			lg_hist_add(&t->st.hist[LG_H_SETUP], now - a->t_conn);
		}
		a->tunnel_reqs = 0;
		lg_agent_next_request(t, a, now);
		return;
	}
	int e = SSL_get_error(a->ssl, rc);
	if (e == SSL_ERROR_WANT_READ) {
		lg_agent_want(a, EPOLLIN);
		return;
	}
	if (e == SSL_ERROR_WANT_WRITE) {
		lg_agent_want(a, EPOLLOUT);
		return;
	}
	char why[256] = "connection closed";
	unsigned long ossl = ERR_peek_error();
	if (ossl)
		ERR_error_string_n(ossl, why, sizeof(why));
	else if (errno)
		snprintf(why, sizeof(why), "%s", strerror(errno));
	long vr = SSL_get_verify_result(a->ssl);
	lg_run_note(t->run, LG_ERR_TLS_HANDSHAKE, "agent %u: %s: %s%s%s", a->index, a->url->hostport, why,
	            vr != X509_V_OK ? "; verify: " : "", vr != X509_V_OK ? X509_verify_cert_error_string(vr) : "");
	lg_agent_fail(t, a, LG_ERR_TLS_HANDSHAKE, now);
}

static void lg_agent_tls_start(struct lg_thread *t, struct lg_agent *a, uint64_t now)
{
	const struct lg_url *u = a->url;
	struct in6_addr ip;
	bool literal = inet_pton(AF_INET, u->host, &ip) == 1 || inet_pton(AF_INET6, u->host, &ip) == 1;

	a->ssl = SSL_new(t->run->ssl_ctx);
	if (!a->ssl || !SSL_set_fd(a->ssl, a->fd)) {
		lg_agent_fail(t, a, LG_ERR_TLS_HANDSHAKE, now);
		return;
	}
	if (!literal)
		SSL_set_tlsext_host_name(a->ssl, u->host); /* RFC 6066: no SNI for address literals */
	if (!t->run->cfg->insecure) {
		if (literal)
			X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(a->ssl), u->host);
		else
			SSL_set1_host(a->ssl, u->host);
	}
	SSL_set_connect_state(a->ssl);
	a->state = LG_ST_HANDSHAKE;
	a->deadline = now + (uint64_t)t->run->cfg->timeout_ms * 1000u;
	lg_agent_handshake(t, a, now);
}

/* A CONNECT carries the agent's claim: the first request in the tunnel spends it, or the proxy's
 * refusal, or a failure after sending; so a refusing proxy still ends a --requests run. */
static void lg_agent_send_connect(struct lg_thread *t, struct lg_agent *a, uint64_t now)
{
	const struct lg_config *c = t->run->cfg;

	if (!lg_run_open(t->run, now) || (!a->claimed && !lg_run_claim(t->run))) {
		a->state = LG_ST_IDLE;
		lg_agent_want(a, EPOLLIN);
		return;
	}
	a->claimed = a->sent = true;
	if (lg_recording(t, now))
		t->st.connects_sent++;
	a->in_connect = true;
	lg_http_init(&a->http, true);
	lg_agent_start(t, a, a->url->connect_head, a->url->connect_len, !c->no_auth, now);
}

/* TCP is up: the first step depends on the agent's kind and on --direct. */
static void lg_agent_ready(struct lg_thread *t, struct lg_agent *a, uint64_t now)
{
	if (lg_recording(t, now))
		t->st.conns++;
	if (a->kind == LG_KIND_GET)
		lg_agent_next_request(t, a, now);
	else if (t->run->cfg->direct)
		lg_agent_tls_start(t, a, now);
	else
		lg_agent_send_connect(t, a, now);
}

static void lg_agent_connect_failed(struct lg_thread *t, struct lg_agent *a, int err, uint64_t now)
{
	enum lg_err e = err == ECONNREFUSED ? LG_ERR_CONNECT_REFUSED : LG_ERR_CONNECT_OTHER;

	lg_run_note(t->run, e, "agent %u: connect: %s", a->index, strerror(err));
	lg_agent_drop(t, a, e, now);
	/* a refused connect fails at once: without a pause the same agents would spend the whole
	 * ramp budget on one dead port; the next tick queues them again */
	a->state = LG_ST_BACKOFF;
}

static void lg_agent_connect(struct lg_thread *t, struct lg_agent *a, uint64_t now)
{
	const struct lg_config *c = t->run->cfg;
	const struct sockaddr_storage *sa = &c->proxy_addr;
	socklen_t salen = c->proxy_addrlen;
	int one = 1;

	if (a->kind == LG_KIND_TLS) {
		a->url = c->tls_urls[(a->index + a->rr++) % c->n_tls];
	} else if (c->direct) {
		a->url = c->get_urls[a->index % c->n_get]; /* one origin per connection */
	}
	if (c->direct) {
		sa = &a->url->addr;
		salen = a->url->addrlen;
	}
	a->t_conn = now;
	a->deadline = now + (uint64_t)c->timeout_ms * 1000u;
	a->fd = socket(sa->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (a->fd < 0) {
		lg_agent_connect_failed(t, a, errno, now);
		return;
	}
	setsockopt(a->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(a->fd, (const struct sockaddr *)sa, salen) == 0) {
		a->state = LG_ST_SEND;
		lg_agent_ready(t, a, now);
		return;
	}
	if (errno != EINPROGRESS) {
		lg_agent_connect_failed(t, a, errno, now);
		return;
	}
	a->state = LG_ST_CONNECTING;
	lg_agent_want(a, EPOLLOUT);
}

static void lg_agent_on_connect(struct lg_thread *t, struct lg_agent *a, uint64_t now)
{
	int err = 0;
	socklen_t len = sizeof(err);

	if (getsockopt(a->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		err = errno;
	if (err) {
		lg_agent_connect_failed(t, a, err, now);
		return;
	}
	lg_agent_ready(t, a, now);
}

static void lg_agent_response_done(struct lg_thread *t, struct lg_agent *a, uint64_t now)
{
	const struct lg_config *c = t->run->cfg;
	struct lg_http *h = &a->http;
	bool rec = lg_recording(t, now);

	if (a->in_connect) {
		a->in_connect = false;
		if (h->status < 300 && h->state == LG_HTTP_DONE) {
			lg_agent_tls_start(t, a, now);
			return;
		}
		if (rec) {
			t->st.err[LG_ERR_PROXY_CONNECT]++;
			t->st.connect_status[h->status]++;
		}
		lg_run_note(t->run, LG_ERR_PROXY_CONNECT, "agent %u: CONNECT %s: status %d", a->index, a->url->hostport,
		            h->status);
		lg_agent_failed(t, a, now);
		lg_mark_inflight(t, a, h->status, now);
		a->claimed = a->sent = false;
		lg_run_finish(t->run, now);
		if (h->close) {
			lg_agent_close(a, false);
			lg_queue_push(t, a);
		} else {
			lg_agent_send_connect(t, a, now); /* again on the same connection, as after a 407 */
		}
		return;
	}
	if (h->status >= 200 && h->status < 300) {
		if (!a->served) {
			a->served = true;
			t->st.served++;
			t->st.served_last_us = now - t->run->t0;
		}
		uint64_t mark = atomic_load(&lg_mark_us);
		if (mark && now > mark && a->mark_done != mark) {
			a->mark_done = mark;
			t->st.mark_served++;
			if (now - mark > t->st.mark_last_us)
				t->st.mark_last_us = now - mark;
		}
		if (rec && t->last_ok && now - t->last_ok > t->st.gap_max_us) {
			t->st.gap_max_us = now - t->last_ok;
			t->st.gap_at_us = t->last_ok - t->run->t0;
		}
		t->last_ok = now;
	}
	if (c->rate > 0)
		t->st.ol_answered++;
	if (h->status < 200 || h->status >= 300)
		lg_agent_failed(t, a, now);
	lg_mark_inflight(t, a, h->status, now);
	if (rec) {
		t->st.requests++;
		t->st.body_bytes += h->body_bytes;
		t->st.status[h->status]++;
		lg_hist_add(&t->st.hist[a->kind == LG_KIND_TLS ? LG_H_TUNNEL : LG_H_GET], now - a->t_req);
		if (c->rate > 0)
			lg_hist_add(&t->st.service, now - a->t_sent);
	}
	a->claimed = a->sent = false;
	lg_run_finish(t->run, now);
	if (a->kind == LG_KIND_TLS)
		a->tunnel_reqs++;
	if (h->close ||
	    (a->kind == LG_KIND_TLS && (a->recycle || (c->per_tunnel && a->tunnel_reqs >= c->per_tunnel)))) {
		lg_agent_close(a, true);
		lg_queue_push(t, a);
		return;
	}
	lg_agent_next_request(t, a, now);
}

static void lg_agent_recv(struct lg_thread *t, struct lg_agent *a, uint64_t now)
{
	for (;;) {
		size_t space = sizeof(a->in) - a->in_len;
		enum lg_err e = LG_ERR_IO;
		ssize_t n = lg_io_read(a, a->in + a->in_len, space, &e);

		if (n == LG_IO_AGAIN_R) {
			lg_agent_want(a, EPOLLIN);
			return;
		}
		if (n == LG_IO_AGAIN_W) {
			lg_agent_want(a, EPOLLOUT);
			return;
		}
		if (n == LG_IO_ERR) {
			lg_run_note(t->run, e, "agent %u: receive: %s", a->index,
			            e == LG_ERR_TLS ? "TLS error" : strerror(errno));
			lg_agent_fail(t, a, e, now);
			return;
		}
		if (n == 0) {
			if (a->http.state == LG_HTTP_BODY_EOF) { /* the close delimits this body */
				a->http.state = LG_HTTP_DONE;
				a->http.close = true;
				lg_agent_response_done(t, a, now);
				return;
			}
			lg_run_note(t->run, LG_ERR_EOF, "agent %u: connection closed after %zu response bytes",
			            a->index, a->in_len + (size_t)a->http.body_bytes);
			lg_agent_fail(t, a, LG_ERR_EOF, now);
			return;
		}
		a->in_len += (size_t)n;
		size_t used = 0;
		enum lg_http_rc rc = lg_http_feed(&a->http, a->in, a->in_len, &used);
		if (rc == LG_HTTP_COMPLETE && (used != a->in_len || (a->ssl && SSL_pending(a->ssl))))
			rc = LG_HTTP_BAD; /* bytes beyond the one response we asked for */
		if (rc == LG_HTTP_BAD || (rc == LG_HTTP_MORE && used == 0 && a->in_len == sizeof(a->in))) {
			lg_run_note(t->run, LG_ERR_MALFORMED, "agent %u: cannot parse response: %.60s", a->index,
			            a->in);
			lg_agent_fail(t, a, LG_ERR_MALFORMED, now);
			return;
		}
		if (rc == LG_HTTP_COMPLETE) {
			a->in_len = 0;
			lg_agent_response_done(t, a, now);
			return;
		}
		if (used) {
			memmove(a->in, a->in + used, a->in_len - used);
			a->in_len -= used;
		}
		/* A short read drained the socket; level-triggered epoll reports the rest. TLS may
		 * hold decrypted bytes the kernel knows nothing about, so it is read until WANT_READ. */
		if (!a->ssl && (size_t)n < space)
			return;
	}
}

/* The server closed (or wrote to) a connection we keep open without a request in flight. */
static void lg_agent_idle_event(struct lg_thread *t, struct lg_agent *a, uint64_t now)
{
	lg_agent_close(a, false);
	if (t->run->cfg->rate > 0 && lg_run_open(t->run, now))
		lg_queue_push(t, a); /* open loop: the connection is needed for later arrivals */
}

static void lg_agent_on_event(struct lg_thread *t, struct lg_agent *a, uint64_t now)
{
	switch (a->state) {
	case LG_ST_CONNECTING:
		lg_agent_on_connect(t, a, now);
		break;
	case LG_ST_HANDSHAKE:
		lg_agent_handshake(t, a, now);
		break;
	case LG_ST_SEND:
		lg_agent_send(t, a, now);
		break;
	case LG_ST_RECV:
		lg_agent_recv(t, a, now);
		break;
	case LG_ST_IDLE:
		lg_agent_idle_event(t, a, now);
		break;
	case LG_ST_QUEUED:
	case LG_ST_BACKOFF:
	case LG_ST_STOPPED:
		break;
	}
}

/* ---- threads ------------------------------------------------------------------------------ */

static void lg_thread_tick(struct lg_thread *t, uint64_t now)
{
	const struct lg_config *c = t->run->cfg;
	uint64_t dt = now - t->last_tick;

	t->last_tick = now;
	t->budget = c->ramp / c->threads + (t->id < c->ramp % c->threads);
	if (t->budget == 0)
		t->budget = 1;

	/* --tunnel-rate: mark agents round-robin; each closes its tunnel after its current request */
	if (c->tunnel_rate > 0) {
		t->tokens += c->tunnel_rate / c->threads * (double)dt / 1e6;
		if (t->tokens > (double)t->n_agents)
			t->tokens = (double)t->n_agents;
		for (size_t scanned = 0; t->tokens >= 1 && scanned < t->n_agents; scanned++) {
			struct lg_agent *a = t->agents[t->recycle_cursor];
			t->recycle_cursor = (t->recycle_cursor + 1) % t->n_agents;
			if (a->kind == LG_KIND_TLS && !a->recycle) {
				a->recycle = true;
				t->tokens -= 1;
			}
		}
	}

	for (size_t i = 0; i < t->n_agents; i++) {
		struct lg_agent *a = t->agents[i];
		if (a->state == LG_ST_BACKOFF) {
			a->state = LG_ST_STOPPED;
			lg_queue_push(t, a);
			continue;
		}
		bool busy = a->state == LG_ST_CONNECTING || a->state == LG_ST_HANDSHAKE || a->state == LG_ST_SEND ||
		            a->state == LG_ST_RECV;
		if (!busy || now < a->deadline)
			continue;
		enum lg_err e = a->state == LG_ST_CONNECTING ? LG_ERR_CONNECT_TIMEOUT : LG_ERR_TIMEOUT;
		lg_run_note(t->run, e, "agent %u: no progress for %u ms", a->index, c->timeout_ms);
		lg_agent_fail(t, a, e, now);
	}
}

static void lg_thread_drain_queue(struct lg_thread *t, uint64_t now)
{
	while (t->q_len && t->budget && !atomic_load_explicit(&t->run->stop, memory_order_relaxed)) {
		struct lg_agent *a = t->queue[t->q_head];
		t->q_head = (t->q_head + 1) % t->n_agents;
		t->q_len--;
		a->state = LG_ST_STOPPED;
		if (!a->claimed && !lg_run_claim(t->run))
			continue;
		a->claimed = true;
		t->budget--;
		lg_agent_connect(t, a, now);
	}
}

static void *lg_thread_main(void *arg)
{
	struct lg_thread *t = arg;
	struct lg_run *r = t->run;
	struct epoll_event evs[LG_EVENTS];
	uint64_t next_tick = 0;

	t->last_tick = lg_now_us();
	for (size_t i = 0; i < t->n_agents; i++)
		lg_queue_push(t, t->agents[i]);
	while (!atomic_load_explicit(&r->stop, memory_order_relaxed)) {
		uint64_t now = lg_now_us();
		if (now >= r->t_end || lg_interrupted)
			break;
		if (now >= next_tick) {
			lg_thread_tick(t, now);
			next_tick = now + LG_TICK_US;
		}
		lg_thread_drain_queue(t, now);
		lg_ol_dispatch(t, now);
		/* microsecond timeouts: open-loop arrivals are due between the 10 ms ticks */
		uint64_t wake = next_tick;
		if (r->cfg->rate > 0 && t->i_len && lg_ol_time(t, t->ol_due) < wake)
			wake = lg_ol_time(t, t->ol_due);
		uint64_t wait_us = wake > now ? wake - now : 0;
		struct timespec ts = {.tv_sec = (time_t)(wait_us / 1000000u),
		                      .tv_nsec = (long)(wait_us % 1000000u) * 1000};
		int n = epoll_pwait2(t->ep, evs, LG_EVENTS, &ts, NULL);
		for (int i = 0; i < n; i++)
			lg_agent_on_event(t, evs[i].data.ptr, lg_now_us());
	}
	atomic_store(&r->stop, true);
	if (r->cfg->rate > 0) {
		uint64_t now = lg_now_us();
		lg_ol_advance(t, now < r->t_end ? now : r->t_end);
		t->st.ol_unsent = t->ol_due - t->ol_next;
		if (t->st.ol_unsent)
			t->st.ol_oldest_us = (now > lg_ol_time(t, t->ol_next)) ? now - lg_ol_time(t, t->ol_next) : 0;
		for (size_t i = 0; i < t->n_agents; i++)
			t->st.ol_in_flight += t->agents[i]->sent && !t->agents[i]->in_connect;
	}
	for (size_t i = 0; i < t->n_agents; i++)
		lg_agent_close(t->agents[i], false);
	return NULL;
}

/* ---- report ------------------------------------------------------------------------------- */

static void lg_json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;
		if (ch == '"' || ch == '\\')
			fprintf(f, "\\%c", ch);
		else if (ch < 0x20)
			fprintf(f, "\\u%04x", ch);
		else
			fputc(ch, f);
	}
	fputc('"', f);
}

static void lg_json_hist(FILE *f, const struct lg_hist *h, bool buckets)
{
	fprintf(f,
	        "{\"count\": %" PRIu64 ", \"min\": %" PRIu64 ", \"mean\": %.1f, \"p50\": %" PRIu64 ", \"p90\": %" PRIu64
	        ", \"p95\": %" PRIu64 ", \"p99\": %" PRIu64 ", \"p999\": %" PRIu64 ", \"max\": %" PRIu64,
	        h->count, h->min, h->count ? (double)h->sum / (double)h->count : 0.0, lg_hist_pct(h, 50000),
	        lg_hist_pct(h, 90000), lg_hist_pct(h, 95000), lg_hist_pct(h, 99000), lg_hist_pct(h, 99900), h->max);
	if (buckets) {
		const char *sep = "";
		fputs(", \"buckets\": [", f);
		for (size_t i = 0; i < LG_HIST_BUCKETS; i++) {
			if (!h->b[i])
				continue;
			fprintf(f, "%s[%" PRIu64 ", %" PRIu64 "]", sep, lg_hist_upper(i), h->b[i]);
			sep = ", ";
		}
		fputc(']', f);
	}
	fputc('}', f);
}

static void lg_json_counts(FILE *f, const uint64_t *v, size_t n)
{
	const char *sep = "";

	fputc('{', f);
	for (size_t i = 0; i < n; i++) {
		if (!v[i])
			continue;
		fprintf(f, "%s\"%zu\": %" PRIu64, sep, i, v[i]);
		sep = ", ";
	}
	fputc('}', f);
}

static const char *lg_mode_name(enum lg_mode m)
{
	return m == LG_MODE_GET ? "get" : m == LG_MODE_CONNECT ? "connect" : "mix";
}

static void lg_report_json(FILE *f, const struct lg_config *c, const struct lg_stats *s, const struct lg_hist *all,
                           double elapsed, bool interrupted, uint64_t t0)
{
	uint64_t errs = 0,
	         cerrs = s->err[LG_ERR_CONNECT_REFUSED] + s->err[LG_ERR_CONNECT_OTHER] + s->err[LG_ERR_CONNECT_TIMEOUT];

	for (int i = 0; i < LG_ERR_COUNT; i++)
		errs += s->err[i];
	fprintf(
	    f,
	    "{\"tool\": \"fps-loadgen\", \"schema\": 1,\n \"config\": {\"mode\": \"%s\", \"direct\": %s, \"proxy\": ",
	    lg_mode_name(c->mode), c->direct ? "true" : "false");
	if (c->direct)
		fputs("null", f);
	else
		lg_json_str(f, c->proxy);
	fputs(", \"urls\": [", f);
	for (size_t i = 0; i < c->n_urls; i++) {
		fputs(i ? ", " : "", f);
		lg_json_str(f, c->urls[i].text);
	}
	fprintf(f, "], \"agents\": %u, \"first_agent\": %u, \"threads\": %u, \"product\": ", c->agents, c->first_agent,
	        c->threads);
	lg_json_str(f, c->product);
	fprintf(f,
	        ", \"auth\": %s, \"mix\": {\"get\": %u, \"connect\": %u}, \"duration_s\": %.3f, \"warmup_s\": %.3f, "
	        "\"requests_limit\": %" PRIu64 ", \"timeout_ms\": %u, \"ramp_per_10ms\": %u, \"tunnel_rate\": %.3f, "
	        "\"requests_per_tunnel\": %u, \"tls_verify\": %s, \"rate\": %.3f},\n",
	        c->no_auth ? "false" : "true",
	        c->mode == LG_MODE_GET       ? 100
	        : c->mode == LG_MODE_CONNECT ? 0
	                                     : c->mix_get,
	        c->mode == LG_MODE_GET       ? 0
	        : c->mode == LG_MODE_CONNECT ? 100
	                                     : c->mix_connect,
	        c->duration, c->warmup, c->max_requests, c->timeout_ms, c->ramp, c->tunnel_rate, c->per_tunnel,
	        c->insecure ? "false" : "true", c->rate);
	fprintf(f,
	        " \"interrupted\": %s, \"elapsed_s\": %.3f, \"requests\": %" PRIu64 ", \"requests_per_s\": %.1f, "
	        "\"body_bytes\": %" PRIu64 ", \"mb_per_s\": %.3f,\n \"latency_us\": ",
	        interrupted ? "true" : "false", elapsed, s->requests, elapsed > 0 ? (double)s->requests / elapsed : 0.0,
	        s->body_bytes, elapsed > 0 ? (double)s->body_bytes / elapsed / 1e6 : 0.0);
	lg_json_hist(f, all, true);
	fputs(",\n \"latency_by_kind_us\": {", f);
	for (int i = 0; i < LG_H_COUNT; i++) {
		fprintf(f, "%s\"%s\": ", i ? ", " : "", lg_histo_names[i]);
		lg_json_hist(f, &s->hist[i], false);
	}
	fputs("},\n \"status\": ", f);
	lg_json_counts(f, s->status, LG_STATUS_MAX);
	fputs(",\n \"errors\": {", f);
	for (int i = 0; i < LG_ERR_COUNT; i++)
		fprintf(f, "%s\"%s\": %" PRIu64, i ? ", " : "", lg_err_names[i], s->err[i]);
	fprintf(f,
	        "},\n \"errors_total\": %" PRIu64 ", \"connect_errors_total\": %" PRIu64
	        ",\n \"proxy_connect_status\": ",
	        errs, cerrs);
	lg_json_counts(f, s->connect_status, LG_STATUS_MAX);
	fprintf(f,
	        ",\n \"connections\": {\"opened\": %" PRIu64 ", \"connect_sent\": %" PRIu64 ", \"tunnels\": %" PRIu64
	        "},\n \"availability\": {\"agents_served\": %" PRIu64
	        ", \"all_served_ms\": %.1f, \"gap_max_ms\": %.1f, "
	        "\"gap_at_s\": %.3f, \"mark_s\": ",
	        s->conns, s->connects_sent, s->tunnels, s->served, (double)s->served_last_us / 1000,
	        (double)s->gap_max_us / 1000, (double)s->gap_at_us / 1e6);
	uint64_t mark = atomic_load(&lg_mark_us);
	if (mark)
		fprintf(f, "%.3f", (double)(mark - t0) / 1e6);
	else
		fputs("null", f);
	fprintf(f,
	        ", \"agents_served_after_mark\": %" PRIu64 ", \"all_served_after_mark_ms\": %.1f"
	        ", \"agents_failed\": %" PRIu64 ", \"agent_failures_max\": %" PRIu64
	        ", \"in_flight_at_mark\": {\"2xx\": %" PRIu64 ", \"other_status\": %" PRIu64 ", \"cut\": %" PRIu64
	        "}},\n",
	        s->mark_served, (double)s->mark_last_us / 1000, s->agents_failed, s->agent_fail_max,
	        s->mark_inflight_2xx, s->mark_inflight_other, s->mark_inflight_cut);
	fputs(" \"open_loop\": ", f);
	if (c->rate <= 0) {
		fputs("null}\n", f);
		return;
	}
	fprintf(f,
	        "{\"rate\": %.3f, \"arrivals\": %" PRIu64 ", \"dispatched\": %" PRIu64 ", \"answered\": %" PRIu64
	        ", \"unsent_at_end\": %" PRIu64 ", \"in_flight_at_end\": %" PRIu64 ", \"backlog_max\": %" PRIu64
	        ", \"oldest_unsent_ms\": %.1f, \"service_us\": ",
	        c->rate, s->ol_arrivals, s->ol_dispatched, s->ol_answered, s->ol_unsent, s->ol_in_flight,
	        s->ol_backlog_max, (double)s->ol_oldest_us / 1000);
	lg_json_hist(f, &s->service, false);
	fputs("}}\n", f);
}

static void lg_report_human(const struct lg_config *c, const struct lg_stats *s, const struct lg_hist *all,
                            double elapsed)
{
	fprintf(stderr,
	        "loadgen: %s%s, %u agents, %.2f s: %" PRIu64 " requests, %.1f req/s, %.2f MB/s, latency p50 %.2f p95 "
	        "%.2f p99 %.2f max %.2f ms; status",
	        lg_mode_name(c->mode), c->direct ? " direct" : "", c->agents, elapsed, s->requests,
	        elapsed > 0 ? (double)s->requests / elapsed : 0.0,
	        elapsed > 0 ? (double)s->body_bytes / elapsed / 1e6 : 0.0, (double)lg_hist_pct(all, 50000) / 1000,
	        (double)lg_hist_pct(all, 95000) / 1000, (double)lg_hist_pct(all, 99000) / 1000,
	        (double)all->max / 1000);
	for (int i = 0; i < LG_STATUS_MAX; i++)
		if (s->status[i])
			fprintf(stderr, " %d=%" PRIu64, i, s->status[i]);
	fputs("; errors", stderr);
	bool any = false;
	for (int i = 0; i < LG_ERR_COUNT; i++) {
		if (!s->err[i])
			continue;
		fprintf(stderr, " %s=%" PRIu64, lg_err_names[i], s->err[i]);
		any = true;
	}
	fputs(any ? "\n" : " none\n", stderr);
}

/* ---- setup and main ----------------------------------------------------------------------- */

static void lg_on_signal(int sig)
{
	(void)sig;
	lg_interrupted = 1;
}

static void lg_on_mark(int sig)
{
	(void)sig;
	atomic_store(&lg_mark_us, lg_now_us()); /* clock_gettime is async-signal-safe */
}

static SSL_CTX *lg_tls_ctx(const struct lg_config *c)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

	if (!ctx)
		return NULL;
	/* a peer closing without close_notify is an EOF we classify ourselves */
	SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	/* every tunnel pays a full handshake, as a fresh agent process would */
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
	if (c->insecure) {
		SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
		return ctx;
	}
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	int ok =
	    c->cafile ? SSL_CTX_load_verify_locations(ctx, c->cafile, NULL) : SSL_CTX_set_default_verify_paths(ctx);
	if (!ok) {
		fprintf(stderr, "loadgen: cannot load CA file '%s'\n", c->cafile ? c->cafile : "(system default)");
		SSL_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

static void lg_raise_nofile(unsigned need)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < need + 64) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur < need + 64)
			fprintf(stderr, "loadgen: warning: open files limit %llu is below %u agents\n",
			        (unsigned long long)rl.rlim_cur, need);
	}
}

/* Kind of agent i: Bresenham spreads the connect share evenly over the agent indices. */
static enum lg_kind lg_agent_kind(const struct lg_config *c, unsigned i)
{
	if (c->mode == LG_MODE_GET)
		return LG_KIND_GET;
	if (c->mode == LG_MODE_CONNECT)
		return LG_KIND_TLS;
	uint64_t k = c->mix_connect;
	return ((uint64_t)(i + 1) * k / 100 > (uint64_t)i * k / 100) ? LG_KIND_TLS : LG_KIND_GET;
}

static int lg_setup(struct lg_run *r, struct lg_thread *ths, struct lg_agent **agents)
{
	const struct lg_config *c = r->cfg;

	for (unsigned i = 0; i < c->threads; i++) {
		struct lg_thread *t = &ths[i];
		t->run = r;
		t->id = i;
		t->n_agents = c->agents / c->threads + (i < c->agents % c->threads);
		t->agents = calloc(t->n_agents, sizeof(*t->agents));
		t->queue = calloc(t->n_agents, sizeof(*t->queue));
		t->idle = calloc(t->n_agents, sizeof(*t->idle));
		t->ep = epoll_create1(EPOLL_CLOEXEC);
		if (c->rate > 0)
			t->ol_interval_us = 1e6 * c->threads / c->rate;
		if (!t->agents || !t->queue || !t->idle || t->ep < 0) {
			perror("loadgen: setup");
			return -1;
		}
		t->n_agents = 0;
	}
	for (unsigned i = 0; i < c->agents; i++) {
		struct lg_agent *a = calloc(1, sizeof(*a));
		struct lg_thread *t = &ths[i % c->threads];
		if (!a) {
			perror("loadgen: setup");
			return -1;
		}
		agents[i] = a;
		a->th = t;
		a->index = c->first_agent + i;
		a->fd = -1;
		a->state = LG_ST_STOPPED;
		a->kind = lg_agent_kind(c, i);
		if (!c->no_auth) {
			a->auth = lg_cred_header(c->product, c->apikey, a->index, &a->auth_len);
			if (!a->auth) {
				fputs("loadgen: cannot derive credentials\n", stderr);
				return -1;
			}
		}
		t->agents[t->n_agents++] = a;
	}
	return 0;
}

int main(int argc, char **argv)
{
	static struct lg_config cfg;
	int rc = lg_cli_parse(argc, argv, &cfg);

	if (rc != 0)
		return rc > 0 ? LG_EXIT_OK : LG_EXIT_USAGE;

	struct sigaction sa = {.sa_handler = lg_on_signal};
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	struct sigaction sm = {.sa_handler = lg_on_mark, .sa_flags = SA_RESTART};
	sigemptyset(&sm.sa_mask);
	sigaction(SIGUSR1, &sm, NULL);
	signal(SIGPIPE, SIG_IGN); /* OpenSSL writes with write(2), which would raise it */
	lg_raise_nofile(cfg.agents);

	int exit_code = LG_EXIT_RUNTIME;
	struct lg_run run = {.cfg = &cfg};
	struct lg_thread *ths = calloc(cfg.threads, sizeof(*ths));
	struct lg_agent **agents = calloc(cfg.agents, sizeof(*agents));
	struct lg_stats *total = calloc(1, sizeof(*total));
	struct lg_hist *all = calloc(1, sizeof(*all));
	unsigned started = 0;
	FILE *out = NULL;

	if (!ths || !agents || !total || !all)
		goto done;
	for (unsigned i = 0; i < cfg.threads; i++)
		ths[i].ep = -1;
	for (size_t i = 0; i < cfg.n_urls; i++)
		if (lg_url_prepare(&cfg.urls[i]) < 0)
			goto done;
	if (cfg.n_tls && !(run.ssl_ctx = lg_tls_ctx(&cfg)))
		goto done;
	if (lg_setup(&run, ths, agents) < 0)
		goto done;
	if (strcmp(cfg.json_path, "-") != 0 && !(out = fopen(cfg.json_path, "w"))) {
		fprintf(stderr, "loadgen: --json %s: %s\n", cfg.json_path, strerror(errno));
		goto done;
	}

	run.t0 = lg_now_us();
	run.t_warm = run.t0 + (uint64_t)(cfg.warmup * 1e6);
	run.t_end = run.t0 + (uint64_t)(cfg.duration * 1e6);
	for (unsigned i = 0; i < cfg.threads; i++) /* threads' schedules interleave evenly */
		ths[i].ol_t0 = run.t0 + (uint64_t)(ths[i].ol_interval_us * i / cfg.threads);
	for (; started < cfg.threads; started++) {
		if (pthread_create(&ths[started].tid, NULL, lg_thread_main, &ths[started]) != 0) {
			fputs("loadgen: cannot start thread\n", stderr);
			atomic_store(&run.stop, true);
			break;
		}
	}
	for (unsigned i = 0; i < started; i++)
		pthread_join(ths[i].tid, NULL);
	if (started < cfg.threads)
		goto done;

	uint64_t t_stop = atomic_load(&run.t_done);
	if (!t_stop)
		t_stop = lg_now_us();
	if (t_stop > run.t_end)
		t_stop = run.t_end;
	double elapsed = t_stop > run.t_warm ? (double)(t_stop - run.t_warm) / 1e6 : 0.0;
	for (unsigned i = 0; i < cfg.threads; i++) {
		const struct lg_stats *s = &ths[i].st;
		total->requests += s->requests;
		total->body_bytes += s->body_bytes;
		total->conns += s->conns;
		total->tunnels += s->tunnels;
		total->connects_sent += s->connects_sent;
		for (int k = 0; k < LG_ERR_COUNT; k++)
			total->err[k] += s->err[k];
		for (int k = 0; k < LG_STATUS_MAX; k++) {
			total->status[k] += s->status[k];
			total->connect_status[k] += s->connect_status[k];
		}
		for (int k = 0; k < LG_H_COUNT; k++)
			lg_hist_merge(&total->hist[k], &s->hist[k]);
		total->served += s->served;
		total->ol_arrivals += s->ol_arrivals;
		total->ol_dispatched += s->ol_dispatched;
		total->ol_answered += s->ol_answered;
		total->ol_unsent += s->ol_unsent;
		total->ol_in_flight += s->ol_in_flight;
		total->ol_backlog_max += s->ol_backlog_max; /* per thread maxima: an upper bound */
		if (s->ol_oldest_us > total->ol_oldest_us)
			total->ol_oldest_us = s->ol_oldest_us;
		lg_hist_merge(&total->service, &s->service);
		total->mark_served += s->mark_served;
		total->agents_failed += s->agents_failed; /* each agent belongs to one thread */
		if (s->agent_fail_max > total->agent_fail_max)
			total->agent_fail_max = s->agent_fail_max;
		total->mark_inflight_2xx += s->mark_inflight_2xx;
		total->mark_inflight_other += s->mark_inflight_other;
		total->mark_inflight_cut += s->mark_inflight_cut;
		if (s->served_last_us > total->served_last_us)
			total->served_last_us = s->served_last_us;
		if (s->mark_last_us > total->mark_last_us)
			total->mark_last_us = s->mark_last_us;
		if (s->gap_max_us > total->gap_max_us) { /* per thread: with --threads 1, of the whole run */
			total->gap_max_us = s->gap_max_us;
			total->gap_at_us = s->gap_at_us;
		}
	}
	lg_hist_merge(all, &total->hist[LG_H_GET]);
	lg_hist_merge(all, &total->hist[LG_H_TUNNEL]);
	lg_report_human(&cfg, total, all, elapsed);
	lg_report_json(out ? out : stdout, &cfg, total, all, elapsed, lg_interrupted != 0, run.t0);
	exit_code = LG_EXIT_OK;
	if (out && fclose(out) != 0) {
		fprintf(stderr, "loadgen: --json %s: %s\n", cfg.json_path, strerror(errno));
		exit_code = LG_EXIT_RUNTIME;
	}
	out = NULL;
done:
	if (out)
		fclose(out);
	for (unsigned i = 0; ths && agents && i < cfg.agents; i++) {
		if (agents[i]) {
			lg_agent_close(agents[i], false);
			free(agents[i]->auth);
			free(agents[i]);
		}
	}
	for (unsigned i = 0; ths && i < cfg.threads; i++) {
		if (ths[i].ep >= 0)
			close(ths[i].ep);
		free(ths[i].agents);
		free(ths[i].queue);
		free(ths[i].idle);
	}
	for (size_t i = 0; i < cfg.n_urls; i++)
		lg_url_free(&cfg.urls[i]);
	SSL_CTX_free(run.ssl_ctx);
	free(ths);
	free(agents);
	free(total);
	free(all);
	return exit_code;
}
