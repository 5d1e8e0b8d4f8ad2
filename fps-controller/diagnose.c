/*
 * diagnose: checks, in the order a support engineer would, every path an agent's request
 * takes, and names the next step for each problem. Real network operations only (getaddrinfo,
 * connect, an OpenSSL handshake, HTTP through the proxies); nothing is changed anywhere.
 */
#include "diagnose.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "compile.h"
#include "state.h"
#include "config.h"
#include "cred.h"
#include "fsio.h"
#include "net.h"

enum dg_status { DG_OK, DG_WARN, DG_SKIP, DG_FAIL };

static const char *const dg_status_names[] = {"ok", "warn", "skip", "fail"};

struct dg_check {
	char name[32];    /* "tunnel.tls" */
	char target[320]; /* what was checked: host:port, a file */
	enum dg_status st;
	char detail[1536];
	char next[512]; /* the next step to try; "" when none */
	char issuer[256], subject[256];
	bool have_cert, interception;
};

struct dg {
	struct dg_check *v;
	size_t n, cap;
	bool oom;
};

static struct dg_check *dg_add(struct dg *d, const char *name, const char *target, enum dg_status st, const char *next,
                               const char *fmt, ...) __attribute__((format(printf, 6, 7)));

static struct dg_check *dg_add(struct dg *d, const char *name, const char *target, enum dg_status st, const char *next,
                               const char *fmt, ...)
{
	static struct dg_check scratch;
	if (d->n == d->cap) {
		size_t cap = d->cap ? d->cap * 2 : 16;
		struct dg_check *v = realloc(d->v, cap * sizeof(*v));
		if (v == NULL) {
			d->oom = true;
			return &scratch;
		}
		d->v = v;
		d->cap = cap;
	}
	struct dg_check *k = &d->v[d->n++];
	memset(k, 0, sizeof(*k));
	snprintf(k->name, sizeof(k->name), "%s", name);
	snprintf(k->target, sizeof(k->target), "%s", target ? target : "");
	k->st = st;
	snprintf(k->next, sizeof(k->next), "%s", next ? next : "");
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(k->detail, sizeof(k->detail), fmt, ap);
	va_end(ap);
	return k;
}

/* ---- network helpers ------------------------------------------------------------------ */

static void dg_hostport(char *out, size_t len, const char *host, int port)
{
	snprintf(out, len, strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, port);
}

static void dg_addr_str(const struct sockaddr *sa, char *out, size_t len)
{
	const void *a = sa->sa_family == AF_INET6 ? (const void *)&((const struct sockaddr_in6 *)sa)->sin6_addr
	                                          : (const void *)&((const struct sockaddr_in *)sa)->sin_addr;
	if (inet_ntop(sa->sa_family, a, out, (socklen_t)len) == NULL)
		snprintf(out, len, "?");
}

/* Resolves host (or parses it when numeric). Fills the first address and, in all, every
 * address found. Returns 0, or -1 with err set. */
static int dg_resolve(const char *host, int port, bool numeric, struct sockaddr_storage *ss, socklen_t *sl, char *all,
                      size_t all_len, char *err, size_t err_len)
{
	char ps[16];
	snprintf(ps, sizeof(ps), "%d", port);
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = numeric ? AI_NUMERICHOST : 0};
	struct addrinfo *ai = NULL;
	int rc = getaddrinfo(host, ps, &hints, &ai);
	if (rc != 0) {
		snprintf(err, err_len, "%s", rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc));
		return -1;
	}
	memcpy(ss, ai->ai_addr, ai->ai_addrlen);
	*sl = ai->ai_addrlen;
	all[0] = '\0';
	for (struct addrinfo *p = ai; p; p = p->ai_next) {
		char a[INET6_ADDRSTRLEN];
		dg_addr_str(p->ai_addr, a, sizeof(a));
		if (strstr(all, a))
			continue;
		size_t used = strlen(all);
		snprintf(all + used, all_len - used, "%s%s", used ? ", " : "", a);
	}
	freeaddrinfo(ai);
	return 0;
}

/* Connects with a deadline; the socket is left blocking with I/O timeouts. -1 with err set. */
static int dg_connect(const struct sockaddr_storage *ss, socklen_t sl, int timeout_ms, int io_timeout_ms, char *err,
                      size_t err_len)
{
	int fd, en;
	enum net_result nr = net_connect((const struct sockaddr *)ss, sl, fsio_mono_ms() + timeout_ms, &fd, &en);
	if (nr == NET_SOCKET)
		snprintf(err, err_len, "socket: %s", strerror(en));
	else if (nr == NET_TIMEOUT)
		snprintf(err, err_len, "no answer within %d ms (a firewall dropping packets?)", timeout_ms);
	else if (nr != NET_OK)
		snprintf(err, err_len, "%s", strerror(en));
	if (nr != NET_OK)
		return -1;
	int fl = fcntl(fd, F_GETFL);
	fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
	struct timeval tv = {.tv_sec = io_timeout_ms / 1000, .tv_usec = (io_timeout_ms % 1000) * 1000};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	return fd;
}

static int dg_send_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Reads an HTTP answer's head (up to the blank line). Returns the status code, or -1 with
 * err set. head receives the header block, NUL-terminated. */
static int dg_read_head(int fd, char *head, size_t len, char *err, size_t err_len)
{
	size_t used = 0;
	head[0] = '\0';
	while (used + 1 < len && strstr(head, "\r\n\r\n") == NULL) {
		ssize_t n = recv(fd, head + used, len - 1 - used, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			snprintf(err, err_len, "%s",
			         errno == EAGAIN || errno == EWOULDBLOCK ? "no answer in time" : strerror(errno));
			return -1;
		}
		if (n == 0)
			break;
		used += (size_t)n;
		head[used] = '\0';
	}
	int code;
	if (sscanf(head, "HTTP/%*d.%*d %d", &code) != 1) {
		snprintf(err, err_len, "%s", used ? "the answer is not HTTP" : "connection closed without an answer");
		return -1;
	}
	return code;
}

/* The value of a header in a head block, or "" (case-insensitive name). */
static void dg_header(const char *head, const char *name, char *out, size_t len)
{
	out[0] = '\0';
	size_t nl = strlen(name);
	for (const char *l = strstr(head, "\r\n"); l; l = strstr(l + 2, "\r\n")) {
		const char *h = l + 2;
		if (strncasecmp(h, name, nl) == 0 && h[nl] == ':') {
			h += nl + 1;
			while (*h == ' ')
				h++;
			size_t n = strcspn(h, "\r\n");
			snprintf(out, len, "%.*s", (int)(n < len ? n : len - 1), h);
			return;
		}
	}
}

static void dg_basic(const char *user, const char *pass, char *out, size_t len)
{
	char plain[512];
	int n = snprintf(plain, sizeof(plain), "%s:%s", user, pass ? pass : "");
	if (n < 0 || (size_t)n >= sizeof(plain) || len < 4 * ((size_t)n + 2) / 3 + 1) {
		out[0] = '\0';
		return;
	}
	EVP_EncodeBlock((unsigned char *)out, (const unsigned char *)plain, n);
	OPENSSL_cleanse(plain, sizeof(plain));
}

/* ---- DNS and TCP to a named endpoint --------------------------------------------------- */

/* what: "tunnel" or "upstream". Returns 0 when both steps passed; ss is the address to use. */
static int dg_reach(struct dg *d, const char *what, const char *host, const char *address, int port,
                    struct sockaddr_storage *ss, socklen_t *sl)
{
	char name[32], target[320], all[512], err[256], next[512];
	dg_hostport(target, sizeof(target), host, port);
	snprintf(name, sizeof(name), "%s.dns", what);
	if (address && address[0]) {
		if (dg_resolve(address, port, true, ss, sl, all, sizeof(all), err, sizeof(err)) < 0) {
			dg_add(d, name, address, DG_FAIL, "fix tunnel.address in fps.yaml: it must be an IP address",
			       "tunnel.address '%s' is not an IP address: %s", address, err);
			return -1;
		}
		dg_add(d, name, host, DG_SKIP, NULL, "not resolved: tunnel.address %s is used instead", address);
	} else {
		if (dg_resolve(host, port, false, ss, sl, all, sizeof(all), err, sizeof(err)) < 0) {
			snprintf(
			    next, sizeof(next),
			    "check the appliance's DNS resolver (proxy.dns_nameservers, /etc/resolv.conf) for %s%s",
			    host,
			    strcmp(what, "tunnel") == 0 ? "; or set tunnel.address to the server's IP address" : "");
			dg_add(d, name, host, DG_FAIL, next, "cannot resolve %s: %s", host, err);
			return -1;
		}
		dg_add(d, name, host, DG_OK, NULL, "%s resolves to %s", host, all);
	}
	char a[INET6_ADDRSTRLEN];
	dg_addr_str((struct sockaddr *)ss, a, sizeof(a));
	char at[320];
	dg_hostport(at, sizeof(at), a, port);
	snprintf(name, sizeof(name), "%s.tcp", what);
	int fd = dg_connect(ss, *sl, DIAGNOSE_CONNECT_TIMEOUT, DIAGNOSE_IO_TIMEOUT, err, sizeof(err));
	if (fd < 0) {
		snprintf(next, sizeof(next),
		         "the firewall must allow outbound TCP to %s (%s); check that the %s server is up and the port "
		         "in fps.yaml is right",
		         at, target, what);
		dg_add(d, name, at, DG_FAIL, next, "cannot connect to %s (%s): %s", at, host, err);
		return -1;
	}
	close(fd);
	dg_add(d, name, at, DG_OK, NULL, "TCP connection to %s (%s) established", at, host);
	return 0;
}

/* ---- TLS to the tunnel server ---------------------------------------------------------- */

static void dg_name_str(X509_NAME *n, char *out, size_t len)
{
	out[0] = '\0';
	BIO *b = BIO_new(BIO_s_mem());
	if (b == NULL)
		return;
	X509_NAME_print_ex(b, n, 0, XN_FLAG_RFC2253);
	char *p;
	long l = BIO_get_mem_data(b, &p);
	snprintf(out, len, "%.*s", (int)(l > 0 ? (size_t)l < len ? l : (long)len - 1 : 0), p);
	BIO_free(b);
}

static void dg_ssl_err(char *out, size_t len)
{
	unsigned long e = ERR_get_error();
	if (e)
		ERR_error_string_n(e, out, len);
	else
		snprintf(out, len, "%s", errno ? strerror(errno) : "the peer closed the connection");
	ERR_clear_error();
}

static int dg_file_exists(const char *path)
{
	struct stat sb;
	return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

static int dg_tls(struct dg *d, const struct fps_config *c, const char *secrets_dir, const struct sockaddr_storage *ss,
                  socklen_t sl)
{
	char target[320], ca[PATH_MAX + 32], err[512], next[768];
	dg_hostport(target, sizeof(target), c->tunnel_server, c->tunnel_port);
	snprintf(ca, sizeof(ca), "%s/tunnel-ca.pem", secrets_dir ? secrets_dir : ".");
	if (secrets_dir == NULL || !dg_file_exists(ca)) {
		dg_add(d, "tunnel.tls", target, DG_FAIL,
		       "put the CA that signs the cloud stunnel server into tunnel-ca.pem",
		       "cannot verify the tunnel server: %s is missing (pass --secrets-dir)", ca);
		return 0;
	}
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	if (ctx == NULL)
		return -1;
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	if (SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1) {
		dg_ssl_err(err, sizeof(err));
		dg_add(d, "tunnel.tls", target, DG_FAIL, "tunnel-ca.pem must hold the CA certificate in PEM form",
		       "cannot load %s: %s", ca, err);
		SSL_CTX_free(ctx);
		return 0;
	}
	char cert[PATH_MAX + 32], key[PATH_MAX + 32];
	snprintf(cert, sizeof(cert), "%s/tunnel-client.pem", secrets_dir);
	snprintf(key, sizeof(key), "%s/tunnel-client.key", secrets_dir);
	if (dg_file_exists(cert) && dg_file_exists(key) &&
	    (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
	     SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1)) {
		dg_ssl_err(err, sizeof(err));
		dg_add(d, "tunnel.tls", target, DG_FAIL, "replace tunnel-client.pem/.key with a matching pair",
		       "cannot use the client certificate %s: %s", cert, err);
		SSL_CTX_free(ctx);
		return 0;
	}
	/* Complete the handshake whatever the chain, to see (and name) what was presented;
	 * the verdict is SSL_get_verify_result(), hostname included. */
	SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	int fd = dg_connect(ss, sl, DIAGNOSE_CONNECT_TIMEOUT, DIAGNOSE_IO_TIMEOUT, err, sizeof(err));
	if (fd < 0) {
		dg_add(d, "tunnel.tls", target, DG_FAIL, "see tunnel.tcp", "cannot connect: %s", err);
		SSL_CTX_free(ctx);
		return 0;
	}
	SSL *ssl = SSL_new(ctx);
	if (ssl == NULL) {
		close(fd);
		SSL_CTX_free(ctx);
		return -1;
	}
	SSL_set_fd(ssl, fd);
	bool numeric = strspn(c->tunnel_server, "0123456789.:") == strlen(c->tunnel_server);
	if (!numeric)
		SSL_set_tlsext_host_name(ssl, c->tunnel_server);
	X509_VERIFY_PARAM *param = SSL_get0_param(ssl);
	if (numeric)
		X509_VERIFY_PARAM_set1_ip_asc(param, c->tunnel_server);
	else
		X509_VERIFY_PARAM_set1_host(param, c->tunnel_server, 0);

	errno = 0;
	int hs = SSL_connect(ssl);
	X509 *peer = hs == 1 ? SSL_get1_peer_certificate(ssl) : NULL;
	if (hs != 1 || peer == NULL) {
		dg_ssl_err(err, sizeof(err));
		snprintf(next, sizeof(next),
		         "something at %s does not speak TLS or cut the handshake (a firewall or proxy in the path?); "
		         "check that port %d is the stunnel server's",
		         target, c->tunnel_port);
		dg_add(d, "tunnel.tls", target, DG_FAIL, next, "TLS handshake with %s failed: %s", target, err);
	} else {
		long vr = SSL_get_verify_result(ssl);
		struct dg_check k;
		memset(&k, 0, sizeof(k));
		dg_name_str(X509_get_issuer_name(peer), k.issuer, sizeof(k.issuer));
		dg_name_str(X509_get_subject_name(peer), k.subject, sizeof(k.subject));
		const char *why = X509_verify_cert_error_string(vr);
		struct dg_check *r;
		if (vr == X509_V_OK) {
			r = dg_add(d, "tunnel.tls", target, DG_OK, NULL,
			           "certificate verified against tunnel-ca.pem for %s (%s): issuer %s, subject %s",
			           c->tunnel_server, SSL_get_version(ssl), k.issuer, k.subject);
		} else if (vr == X509_V_ERR_HOSTNAME_MISMATCH || vr == X509_V_ERR_IP_ADDRESS_MISMATCH) {
			snprintf(
			    next, sizeof(next),
			    "tunnel.server must be a name in the server's certificate (subject %s); fix fps.yaml or "
			    "reissue the server certificate",
			    k.subject);
			r = dg_add(d, "tunnel.tls", target, DG_FAIL, next,
			           "the certificate is signed by our CA but does not name %s: issuer %s, subject %s",
			           c->tunnel_server, k.issuer, k.subject);
		} else if (vr == X509_V_ERR_CERT_HAS_EXPIRED || vr == X509_V_ERR_CERT_NOT_YET_VALID) {
			r = dg_add(d, "tunnel.tls", target, DG_FAIL,
			           "renew the cloud stunnel server's certificate (or fix this host's clock)",
			           "the server certificate is not valid now (%s): issuer %s, subject %s", why, k.issuer,
			           k.subject);
		} else {
			snprintf(next, sizeof(next),
			         "the network inspects TLS: ask its administrators to exempt %s from TLS inspection "
			         "(decryption bypass), or set tunnel.address to a path without it; if the issuer is "
			         "yours, tunnel-ca.pem is the wrong CA",
			         target);
			r = dg_add(d, "tunnel.tls", target, DG_FAIL, next,
			           "likely TLS interception by %s: the certificate presented for %s does not verify "
			           "against tunnel-ca.pem (%s); subject %s",
			           k.issuer, c->tunnel_server, why, k.subject);
			r->interception = true;
		}
		r->have_cert = true;
		snprintf(r->issuer, sizeof(r->issuer), "%s", k.issuer);
		snprintf(r->subject, sizeof(r->subject), "%s", k.subject);
		SSL_shutdown(ssl);
	}
	X509_free(peer);
	SSL_free(ssl);
	close(fd);
	SSL_CTX_free(ctx);
	return 0;
}

/* ---- names to test with ---------------------------------------------------------------- */

/* A host name an entry stands for: the name itself, or the apex of a wildcard. */
static bool dg_entry_host(const char *raw, char *out)
{
	char note[128];
	enum wl_kind kind;
	return wl_normalize(raw, out, &kind, note, sizeof(note)) != WL_NORM_REJECT;
}

/* The first whitelisted name (presets first), for the self-test. */
static bool dg_selftest_name(const struct fps_config *c, char *out)
{
	for (size_t i = 0; i < c->n_entries; i++)
		if (dg_entry_host(c->entries[i].raw, out))
			return true;
	return false;
}

/* What to CONNECT to through the upstream proxy: the tunnel server if there is one, else the
 * first name routed via upstream, else the first whitelisted name. */
static void dg_upstream_target(const struct fps_config *c, char *out, size_t len)
{
	char name[WL_NAME_MAX + 1];
	if (c->has_tunnel) {
		dg_hostport(out, len, c->tunnel_server, c->tunnel_port);
		return;
	}
	for (size_t i = 0; i < c->n_routes; i++) {
		if (c->routes[i].via == WL_VIA_UPSTREAM) {
			dg_hostport(out, len, c->routes[i].name, 443);
			return;
		}
	}
	if (dg_selftest_name(c, name))
		dg_hostport(out, len, name, 443);
	else
		snprintf(out, len, "example.com:443");
}

/* ---- the upstream proxy's credentials -------------------------------------------------- */

static void dg_upstream_auth(struct dg *d, const struct fps_config *c, const struct sockaddr_storage *ss, socklen_t sl)
{
	char proxy[320], target[320], err[256], next[768];
	dg_hostport(proxy, sizeof(proxy), c->upstream_host, c->upstream_port);
	dg_upstream_target(c, target, sizeof(target));
	int fd = dg_connect(ss, sl, DIAGNOSE_CONNECT_TIMEOUT, DIAGNOSE_IO_TIMEOUT, err, sizeof(err));
	if (fd < 0) {
		dg_add(d, "upstream.auth", proxy, DG_FAIL, "see upstream.tcp", "cannot connect: %s", err);
		return;
	}
	char auth[1024] = "", req[2048];
	bool with_creds = c->upstream_user[0] != '\0';
	if (with_creds) {
		char b64[700];
		dg_basic(c->upstream_user, c->upstream_password, b64, sizeof(b64));
		snprintf(auth, sizeof(auth), "Proxy-Authorization: Basic %s\r\n", b64);
		OPENSSL_cleanse(b64, sizeof(b64));
	}
	int n = snprintf(req, sizeof(req), "CONNECT %s HTTP/1.1\r\nHost: %s\r\n%sUser-Agent: fps-diagnose\r\n\r\n",
	                 target, target, auth);
	OPENSSL_cleanse(auth, sizeof(auth));
	char head[8192];
	int code = -1;
	if (dg_send_all(fd, req, (size_t)n) < 0)
		snprintf(err, sizeof(err), "send: %s", strerror(errno));
	else
		code = dg_read_head(fd, head, sizeof(head), err, sizeof(err));
	OPENSSL_cleanse(req, sizeof(req));
	close(fd);
	if (code < 0) {
		dg_add(d, "upstream.auth", proxy, DG_FAIL,
		       "check that upstream.host:port is an HTTP proxy (not a SOCKS or TLS port)",
		       "CONNECT %s through %s got no usable answer: %s", target, proxy, err);
	} else if (code == 407) {
		if (with_creds)
			snprintf(next, sizeof(next),
			         "the upstream proxy refused user '%s': check upstream.username in fps.yaml and the "
			         "upstream-password secret with the proxy's administrators",
			         c->upstream_user);
		else
			snprintf(next, sizeof(next),
			         "the upstream proxy requires credentials: set upstream.username in fps.yaml and the "
			         "upstream-password secret");
		dg_add(d, "upstream.auth", proxy, DG_FAIL, next,
		       "wrong credentials: %s answered 407 to CONNECT %s%s%s%s", proxy, target,
		       with_creds ? " as user '" : " (no credentials configured)", with_creds ? c->upstream_user : "",
		       with_creds ? "'" : "");
	} else if (code >= 200 && code < 300) {
		dg_add(d, "upstream.auth", proxy, DG_OK, NULL, "%s accepted %s and answered %d to CONNECT %s", proxy,
		       with_creds ? "the credentials" : "the request (no credentials configured)", code, target);
	} else {
		snprintf(next, sizeof(next),
		         "ask the proxy's administrators to allow CONNECT to %s (and to the FQDNs routed via upstream)",
		         target);
		dg_add(d, "upstream.auth", proxy, DG_WARN, next,
		       "credentials accepted (no 407) but %s answered %d to CONNECT %s: its policy or its own path "
		       "refuses that destination",
		       proxy, code, target);
	}
}

/* ---- the local proxy, end to end ------------------------------------------------------- */

/* Computes the diagnose credentials (docs/agents.md) from the first valid key. 0, or -1 with why set
 * (a warning, not a failure: the self-test then runs without credentials). */
static int dg_creds(const struct fps_config *c, const char *secrets_dir, char *pass, char *key_id, char *why,
                    size_t why_len)
{
	struct cred_products prods = {.names = c->products.v, .n = c->products.n};
	if (cred_check_user(DIAGNOSE_USER, &prods) == CRED_PRODUCT_NOT_ALLOWED) {
		snprintf(why, why_len,
		         "auth.products does not allow '%s': add \"FPS-Diagnose\" to auth.products in fps.yaml to "
		         "let diagnose authenticate, or test with a product's own credentials",
		         DIAGNOSE_USER);
		return -1;
	}
	if (secrets_dir == NULL || secrets_dir[0] == '\0') {
		snprintf(why, why_len, "no --secrets-dir: cannot compute credentials from apikeys.json");
		return -1;
	}
	char path[PATH_MAX + 32];
	snprintf(path, sizeof(path), "%s/apikeys.json", secrets_dir);
	struct cred_keys keys = {0};
	struct fps_err e;
	err_clear(&e);
	if (cred_keys_load(path, &keys, &e) < 0) {
		char buf[1600];
		snprintf(why, why_len, "cannot read API keys: %s", err_str(&e, buf, sizeof(buf)));
		return -1;
	}
	time_t now = time(NULL);
	int rc = -1;
	for (size_t i = 0; i < keys.n; i++) {
		if (now < keys.v[i].expires) {
			if (cred_password(DIAGNOSE_USER, keys.v[i].key, pass) == 0) {
				snprintf(key_id, CRED_ID_MAX + 1, "%s", keys.v[i].id);
				rc = 0;
			}
			break;
		}
	}
	if (rc < 0)
		snprintf(why, why_len, "no valid key in %s: every agent is refused; add a key that has not expired",
		         path);
	cred_keys_free(&keys);
	return rc;
}

static int dg_selftest_port(const struct fps_config *c)
{
	for (size_t i = 0; i < c->n_safe_ports; i++)
		if (c->safe_ports[i] == 80)
			return 80;
	return c->n_safe_ports > 0 ? c->safe_ports[0] : 80;
}

static void dg_selftest(struct dg *d, const struct fps_config *c, const char *secrets_dir)
{
	char name[WL_NAME_MAX + 1], proxy[320], err[256], next[1024], url[400];
	const char *addr = c->bind[0] == '\0' || strcmp(c->bind, "0.0.0.0") == 0 ? "127.0.0.1"
	                   : strcmp(c->bind, "::") == 0                          ? "::1"
	                                                                         : c->bind;
	dg_hostport(proxy, sizeof(proxy), addr, c->port);
	if (!dg_selftest_name(c, name)) {
		dg_add(d, "proxy.selftest", proxy, DG_SKIP, "add a whitelist.preset entry to enable the self-test",
		       "no whitelisted name to request");
		return;
	}
	int port = dg_selftest_port(c);
	snprintf(url, sizeof(url), "http://%s%s%s:%d/", strchr(name, ':') ? "[" : "", name,
	         strchr(name, ':') ? "]" : "", port);

	/* The route the name takes, to say which path failed. */
	const char *via = "?";
	struct compiled cp;
	struct fps_err e;
	err_clear(&e);
	if (compile_config(c, &cp, &e) == 0) {
		bool is_ip = strchr(name, ':') || strspn(name, "0123456789.") == strlen(name);
		via = wl_via_name(wl_route(&cp.policy, name, is_ip));
		compile_free(&cp);
	}

	char pass[CRED_PASSWORD_LEN + 1] = "", key_id[CRED_ID_MAX + 1] = "", why[512] = "";
	bool creds = false;
	if (c->auth_enabled) {
		creds = dg_creds(c, secrets_dir, pass, key_id, why, sizeof(why)) == 0;
		if (!creds)
			dg_add(
			    d, "proxy.selftest.auth", proxy, DG_WARN, why,
			    "the self-test cannot authenticate, so it only checks that the proxy demands credentials");
	}

	struct sockaddr_storage ss;
	socklen_t sl;
	char all[256];
	if (dg_resolve(addr, c->port, true, &ss, &sl, all, sizeof(all), err, sizeof(err)) < 0) {
		dg_add(d, "proxy.selftest", proxy, DG_FAIL, "fix proxy.bind in fps.yaml", "bad proxy address: %s", err);
		return;
	}
	int fd = dg_connect(&ss, sl, DIAGNOSE_CONNECT_TIMEOUT, DIAGNOSE_SELFTEST_TIMEOUT, err, sizeof(err));
	if (fd < 0) {
		dg_add(d, "proxy.selftest", proxy, DG_FAIL,
		       "Squid is not listening: is `fps-controller run` up? See /readyz and /status on the admin port "
		       "and the controller's log",
		       "cannot connect to the local proxy %s: %s", proxy, err);
		return;
	}
	char auth[256] = "", req[1024];
	if (creds) {
		char b64[256];
		dg_basic(DIAGNOSE_USER, pass, b64, sizeof(b64));
		snprintf(auth, sizeof(auth), "Proxy-Authorization: Basic %s\r\n", b64);
	}
	int n = snprintf(req, sizeof(req),
	                 "GET %s HTTP/1.1\r\nHost: %s:%d\r\n%sUser-Agent: fps-diagnose\r\nConnection: close\r\n\r\n",
	                 url, name, port, auth);
	char head[16384];
	int code = -1;
	if (dg_send_all(fd, req, (size_t)n) < 0)
		snprintf(err, sizeof(err), "send: %s", strerror(errno));
	else
		code = dg_read_head(fd, head, sizeof(head), err, sizeof(err));
	close(fd);
	char squid_err[128] = "";
	if (code > 0)
		dg_header(head, "X-Squid-Error", squid_err, sizeof(squid_err));

	if (code < 0) {
		dg_add(d, "proxy.selftest", proxy, DG_FAIL, "look at Squid's cache.log in the state directory",
		       "GET %s through %s: %s", url, proxy, err);
	} else if (code == 407 && !creds && c->auth_enabled) {
		dg_add(d, "proxy.selftest", proxy, DG_WARN, why,
		       "the proxy answers and demands credentials (407) as configured; the authenticated path was "
		       "not tested");
	} else if (code == 407) {
		snprintf(
		    next, sizeof(next),
		    "fps-auth refused credentials computed from key '%s': check that the controller reads the same "
		    "apikeys.json (secrets mount) and the key's 'expires'",
		    key_id);
		dg_add(d, "proxy.selftest", proxy, DG_FAIL, next,
		       "the proxy refused the diagnose credentials (407) for %s", url);
	} else if (code == 403) {
		snprintf(next, sizeof(next),
		         "%s is whitelisted in the config on disk: if the proxy denies it, the running generation is "
		         "older (see /status last_reload.error) or %s resolves into proxy.blocked_networks",
		         name, name);
		dg_add(d, "proxy.selftest", proxy, DG_FAIL, next, "the proxy denied %s (403%s%s)", url,
		       squid_err[0] ? ", " : "", squid_err);
	} else if (squid_err[0] || code == 502 || code == 503 || code == 504) {
		snprintf(next, sizeof(next),
		         "%s takes the %s route: check that path (see the tunnel.* / upstream.* checks above, and "
		         "/status)",
		         name, via);
		dg_add(d, "proxy.selftest", proxy, DG_FAIL, next,
		       "authentication and whitelist passed, but Squid could not fetch %s via %s: %d %s", url, via,
		       code, squid_err[0] ? squid_err : "");
	} else {
		dg_add(d, "proxy.selftest", proxy, DG_OK, NULL,
		       "GET %s through %s%s: the origin answered %d (route %s)", url, proxy,
		       creds ? " as " DIAGNOSE_USER : "", code, via);
	}
	OPENSSL_cleanse(pass, sizeof(pass));
	OPENSSL_cleanse(auth, sizeof(auth));
	OPENSSL_cleanse(req, sizeof(req));
}

/* ---- the clock ---------------------------------------------------------------------------- */

/* The system clock against the Date of the tunnel's (else the upstream's) answer. */
static void dg_clock(struct dg *d, const struct fps_config *c)
{
	struct clock_check ck;
	clock_check(c, &ck);
	if (!ck.have) {
		dg_add(d, "clock", "-", DG_SKIP, NULL, "not compared: %s", ck.error);
		return;
	}
	if (ck.ok) {
		dg_add(d, "clock", ck.reference, DG_OK, NULL, "system clock %+.0f s against %s (Date: %s)",
		       ck.skew_seconds, ck.reference, ck.ref_date);
		return;
	}
	dg_add(d, "clock", ck.reference, DG_FAIL,
	       "set the appliance's time right (NTP on the host): until then keys may be refused and certificates "
	       "rejected",
	       "the system clock is %.0f s (%.1f days) %s %s (Date: %s): API keys and certificates are judged by "
	       "this clock",
	       fabs(ck.skew_seconds), fabs(ck.skew_seconds) / 86400, ck.skew_seconds > 0 ? "ahead of" : "behind",
	       ck.reference, ck.ref_date);
}

/* ---- report ---------------------------------------------------------------------------- */

static void dg_print_text(const struct dg *d, const char *config_dir, FILE *out)
{
	size_t problems = 0;
	fprintf(out, "fps-controller diagnose: %s\n", config_dir);
	for (size_t i = 0; i < d->n; i++) {
		const struct dg_check *k = &d->v[i];
		static const char *const tags[] = {" ok ", "WARN", "skip", "FAIL"};
		fprintf(out, "[%s] %-20s %s\n", tags[k->st], k->name, k->detail);
		if (k->have_cert && k->st != DG_OK)
			fprintf(out, "       issuer:  %s\n       subject: %s\n", k->issuer, k->subject);
		if (k->next[0] && k->st != DG_OK && k->st != DG_SKIP)
			fprintf(out, "       next step: %s\n", k->next);
		problems += k->st == DG_FAIL;
	}
	if (problems)
		fprintf(out, "%zu problem%s found.\n", problems, problems == 1 ? "" : "s");
	else
		fprintf(out, "no problem found.\n");
}

static int dg_print_json(const struct dg *d, const char *config_dir, FILE *out)
{
	cJSON *root = cJSON_CreateObject();
	if (root == NULL)
		return -1;
	bool ok = true;
	cJSON_AddStringToObject(root, "config_dir", config_dir);
	cJSON *arr = cJSON_AddArrayToObject(root, "checks");
	for (size_t i = 0; arr && i < d->n; i++) {
		const struct dg_check *k = &d->v[i];
		cJSON *o = cJSON_CreateObject();
		if (o == NULL)
			break;
		cJSON_AddStringToObject(o, "check", k->name);
		cJSON_AddStringToObject(o, "status", dg_status_names[k->st]);
		cJSON_AddStringToObject(o, "target", k->target);
		cJSON_AddStringToObject(o, "detail", k->detail);
		if (k->next[0] && k->st != DG_OK)
			cJSON_AddStringToObject(o, "next_step", k->next);
		if (k->have_cert) {
			cJSON_AddStringToObject(o, "issuer", k->issuer);
			cJSON_AddStringToObject(o, "subject", k->subject);
			cJSON_AddBoolToObject(o, "interception", k->interception);
		}
		cJSON_AddItemToArray(arr, o);
		ok = ok && k->st != DG_FAIL;
	}
	cJSON_AddBoolToObject(root, "ok", ok);
	char *text = cJSON_Print(root);
	cJSON_Delete(root);
	if (text == NULL)
		return -1;
	fprintf(out, "%s\n", text);
	free(text);
	return 0;
}

int diagnose_run(const char *config_dir, const char *secrets_dir, const char *state_dir, bool json, FILE *out)
{
	struct dg d = {0};
	int rc = 0;
	struct fps_config c;
	struct fps_err e;
	err_clear(&e);
	if (secrets_dir && secrets_dir[0] == '\0')
		secrets_dir = NULL;
	if (cfg_load(&c, config_dir, secrets_dir, &e) < 0) {
		char buf[1600];
		dg_add(&d, "config", config_dir, DG_FAIL,
		       "fix the file at the position given; `fps-controller check` shows the same error",
		       "the configuration does not load: %s", err_str(&e, buf, sizeof(buf)));
		goto report;
	}
	dg_add(&d, "config", config_dir, DG_OK, NULL, "loads: %zu whitelist entries, %zu routes, auth %s%s%s",
	       c.n_entries, c.n_routes, c.auth_enabled ? "on" : "off", c.has_tunnel ? ", tunnel" : "",
	       c.has_upstream ? ", upstream" : "");

	dg_clock(&d, &c); /* first: a wrong clock explains refused keys and certificates below */
	/* Squid drops to its own user: what it reads must be reachable by that user. */
	char why[512];
	if (state_check_squid_access(state_dir, NULL, c.hosts_file[0] ? c.hosts_file : NULL, why, sizeof(why)) < 0)
		dg_add(&d, "squid.access", state_dir ? state_dir : c.hosts_file, DG_FAIL,
		       "give Squid's user the missing permission (chmod o+x on the directory named, or move the "
		       "directory: see docs/operations.md, Squid's user)",
		       "%s", why);
	else if (geteuid() == 0)
		dg_add(&d, "squid.access", state_dir ? state_dir : c.hosts_file, DG_OK, NULL,
		       "user proxy can reach the hosts file%s", state_dir ? " and the state directory" : "");

	struct sockaddr_storage ss;
	socklen_t sl = 0;
	if (c.has_tunnel) {
		if (dg_reach(&d, "tunnel", c.tunnel_server, c.tunnel_address, c.tunnel_port, &ss, &sl) == 0 &&
		    dg_tls(&d, &c, secrets_dir, &ss, sl) < 0)
			rc = 3;
	}
	if (rc == 0 && c.has_upstream) {
		if (dg_reach(&d, "upstream", c.upstream_host, NULL, c.upstream_port, &ss, &sl) == 0)
			dg_upstream_auth(&d, &c, &ss, sl);
	}
	if (rc == 0)
		dg_selftest(&d, &c, secrets_dir);
	cfg_free(&c);

report:
	if (rc == 0 && d.oom)
		rc = 3;
	if (rc == 0) {
		if (json ? dg_print_json(&d, config_dir, out) < 0 : (dg_print_text(&d, config_dir, out), 0))
			rc = 3;
	}
	if (rc == 3)
		fprintf(stderr, "fps-controller diagnose: internal failure (out of memory or OpenSSL)\n");
	else
		for (size_t i = 0; i < d.n; i++)
			if (d.v[i].st == DG_FAIL)
				rc = 1;
	free(d.v);
	return rc;
}
