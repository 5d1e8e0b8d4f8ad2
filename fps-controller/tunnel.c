/*
 * tunnel: the stunnel client behind the `tunnel` cache_peer. Renders stunnel.conf
 * from stunnel-conf/client.conf.tmpl, copies the Secret's certificates where stunnel
 * reads them (private, atomic, only when they differ), and probes the cloud server
 * with the verification stunnel applies, naming the issuer it saw when that is not
 * our CA: the usual cause is a firewall that intercepts TLS.
 */
#include "tunnel.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "fsio.h"
#include "handover.h"
#include "log.h"
#include "net.h"
#include "preflight.h"
#include "render.h"

#define TUNNEL_TMPL      "client.conf.tmpl"
#define TUNNEL_CONF      "stunnel.conf"
#define TUNNEL_CA        "tunnel-ca.pem"
#define TUNNEL_CERT      "tunnel-client.pem"
#define TUNNEL_KEY       "tunnel-client.key"
#define TUNNEL_MAX_FILE  (1u << 20)
#define STUNNEL_BIN      "/usr/bin/stunnel4"
#define TUNNEL_LOG_LEVEL "4" /* warnings: verify failures and refusals, not every connection */

/* ---- files ------------------------------------------------------------------------------ */

static void tunnel_path(char *buf, size_t len, const char *dir, const char *name)
{
	snprintf(buf, len, "%s/%s", dir, name);
}

/* Writes data to path unless path already holds exactly these bytes. Private (0600):
 * the copies include the client key, and stunnel runs as the controller's user. */
static int tunnel_put(const char *path, const char *data, size_t len, bool *changed, struct fps_err *e)
{
	char *old = NULL;
	size_t oldlen = 0;
	struct fps_err ignore;
	bool same = fsio_exists(path) && fsio_read(path, TUNNEL_MAX_FILE, &old, &oldlen, &ignore) == 0 &&
	            oldlen == len && memcmp(old, data, len) == 0;
	if (old) {
		explicit_bzero(old, oldlen);
		free(old);
	}
	if (same)
		return 0;
	if (fsio_write_atomic(path, data, len, 0600, (gid_t)-1, e) < 0)
		return -1;
	*changed = true;
	return 0;
}

/* Copies secrets_dir/name to dir/name. present says whether the Secret has it; an
 * absent file also removes a stale copy (mTLS switched off). */
static int tunnel_copy_secret(const struct tunnel_paths *p, const char *name, bool *present, bool *changed,
                              struct fps_err *e)
{
	char src[PATH_MAX], dst[PATH_MAX];
	tunnel_path(src, sizeof(src), p->secrets_dir ? p->secrets_dir : "", name);
	tunnel_path(dst, sizeof(dst), p->dir, name);
	*present = p->secrets_dir && p->secrets_dir[0] && fsio_exists(src);
	if (!*present) {
		if (fsio_exists(dst)) {
			if (unlink(dst) < 0)
				return err_set(e, dst, 0, 0, "cannot remove the stale copy: %s", strerror(errno));
			*changed = true;
		}
		return 0;
	}
	char *data = NULL;
	size_t len = 0;
	if (fsio_read(src, TUNNEL_MAX_FILE, &data, &len, e) < 0)
		return -1;
	/* Content is never logged: only that the file is not what stunnel can load. */
	int rc = 0;
	if (len == 0 || strstr(data, "-----BEGIN ") == NULL)
		rc = err_set(e, src, 0, 0, "not a PEM file (no -----BEGIN line)");
	else
		rc = tunnel_put(dst, data, len, changed, e);
	explicit_bzero(data, len);
	free(data);
	return rc;
}

/* An encrypted key is refused rather than asked for (OpenSSL's default would read the tty). */
static int tunnel_no_passphrase(char *buf, int size, int rwflag, void *u)
{
	(void)buf;
	(void)size;
	(void)rwflag;
	(void)u;
	return -1;
}

/* Loads secrets_dir/name as PEM: certificates (at least one) or one private key. */
static int tunnel_load_pem(const char *secrets_dir, const char *name, bool want_key, X509 **cert, EVP_PKEY **key,
                           struct fps_err *e)
{
	char path[PATH_MAX];
	tunnel_path(path, sizeof(path), secrets_dir, name);
	char *data = NULL;
	size_t len = 0;
	if (fsio_read(path, TUNNEL_MAX_FILE, &data, &len, e) < 0)
		return -1;
	int rc = 0;
	if (len == 0 || strstr(data, "-----BEGIN ") == NULL) {
		rc = err_set(e, path, 0, 0, "not a PEM file (no -----BEGIN line)");
	} else {
		BIO *bio = BIO_new_mem_buf(data, (int)len);
		if (want_key)
			*key = bio ? PEM_read_bio_PrivateKey(bio, NULL, tunnel_no_passphrase, NULL) : NULL;
		else
			*cert = bio ? PEM_read_bio_X509(bio, NULL, tunnel_no_passphrase, NULL) : NULL;
		BIO_free(bio);
		ERR_clear_error();
		if (want_key ? *key == NULL : *cert == NULL)
			rc = err_set(e, path, 0, 0, "not a PEM %s OpenSSL can load",
			             want_key ? "private key (unencrypted)" : "certificate");
	}
	explicit_bzero(data, len);
	free(data);
	return rc;
}

int tunnel_check_secrets(const char *secrets_dir, struct fps_err *e)
{
	const char *dir = secrets_dir && secrets_dir[0] ? secrets_dir : NULL;
	char path[PATH_MAX];
	bool have[3];
	static const char *const names[3] = {TUNNEL_CA, TUNNEL_CERT, TUNNEL_KEY};
	for (int i = 0; i < 3; i++) {
		tunnel_path(path, sizeof(path), dir ? dir : "", names[i]);
		have[i] = dir && fsio_exists(path);
	}
	if (!have[0])
		return err_set(e, dir, 0, 0, "a tunnel is configured but %s is missing from the secrets", TUNNEL_CA);
	if (have[1] != have[2])
		return err_set(e, dir, 0, 0, "mTLS needs both %s and %s; only %s is present", TUNNEL_CERT, TUNNEL_KEY,
		               have[1] ? TUNNEL_CERT : TUNNEL_KEY);
	X509 *ca = NULL, *cert = NULL;
	EVP_PKEY *key = NULL;
	int rc = tunnel_load_pem(dir, TUNNEL_CA, false, &ca, NULL, e);
	if (rc == 0 && have[1])
		rc = tunnel_load_pem(dir, TUNNEL_CERT, false, &cert, NULL, e);
	if (rc == 0 && have[2])
		rc = tunnel_load_pem(dir, TUNNEL_KEY, true, NULL, &key, e);
	if (rc == 0 && cert && key && X509_check_private_key(cert, key) != 1) {
		ERR_clear_error();
		tunnel_path(path, sizeof(path), dir, TUNNEL_KEY);
		rc = err_set(e, path, 0, 0, "is not the private key of %s", TUNNEL_CERT);
	}
	X509_free(ca);
	X509_free(cert);
	EVP_PKEY_free(key);
	return rc;
}

int tunnel_prepare(const struct fps_config *c, const struct tunnel_paths *p, bool *changed, struct fps_err *e)
{
	*changed = false;
	if (!c->has_tunnel)
		return err_set(e, NULL, 0, 0, "tunnel_prepare called without a tunnel section");
	if (tunnel_check_secrets(p->secrets_dir, e) < 0)
		return -1;
	if (fsio_mkdirs(p->dir, 0700, e) < 0)
		return -1;

	bool have_ca = false, have_cert = false, have_key = false;
	if (tunnel_copy_secret(p, TUNNEL_CA, &have_ca, changed, e) < 0 ||
	    tunnel_copy_secret(p, TUNNEL_CERT, &have_cert, changed, e) < 0 ||
	    tunnel_copy_secret(p, TUNNEL_KEY, &have_key, changed, e) < 0)
		return -1;
	if (!have_ca)
		return err_set(e, p->secrets_dir && p->secrets_dir[0] ? p->secrets_dir : NULL, 0, 0,
		               "a tunnel is configured but %s is missing from the secrets", TUNNEL_CA);
	if (have_cert != have_key)
		return err_set(e, p->secrets_dir, 0, 0, "mTLS needs both %s and %s; only %s is present", TUNNEL_CERT,
		               TUNNEL_KEY, have_cert ? TUNNEL_CERT : TUNNEL_KEY);

	char tmpl_path[PATH_MAX], pid[PATH_MAX], ca[PATH_MAX], cert[PATH_MAX], key[PATH_MAX], conf[PATH_MAX];
	tunnel_path(tmpl_path, sizeof(tmpl_path), p->templates_dir, TUNNEL_TMPL);
	tunnel_path(pid, sizeof(pid), p->dir, "stunnel.pid");
	tunnel_path(ca, sizeof(ca), p->dir, TUNNEL_CA);
	tunnel_path(cert, sizeof(cert), p->dir, TUNNEL_CERT);
	tunnel_path(key, sizeof(key), p->dir, TUNNEL_KEY);
	tunnel_path(conf, sizeof(conf), p->dir, TUNNEL_CONF);

	char local[16], connect[WL_NAME_MAX + 80], client_cert[2 * PATH_MAX + 32];
	snprintf(local, sizeof(local), "%d", c->tunnel_local_port);
	snprintf(connect, sizeof(connect), "%s:%d", c->tunnel_address[0] ? c->tunnel_address : c->tunnel_server,
	         c->tunnel_port);
	if (have_cert)
		snprintf(client_cert, sizeof(client_cert), "cert = %s\nkey = %s", cert, key);
	else
		snprintf(client_cert, sizeof(client_cert),
		         "; no tunnel-client.pem in the Secret: no client certificate");
	/* With a name, resolve it at each connect (delay): a DNS change then needs no
	 * restart, and stunnel starts even while the name does not resolve yet. */
	const char *delay = c->tunnel_address[0] ? "; tunnel.address is an IP: nothing to resolve" : "delay = yes";
	const struct render_var vars[] = {
	    {"VERSION", FPS_VERSION},     {"PID_FILE", pid},    {"DEBUG", TUNNEL_LOG_LEVEL},
	    {"LOCAL_PORT", local},        {"CONNECT", connect}, {"DELAY", delay},
	    {"SERVER", c->tunnel_server}, {"CA_FILE", ca},      {"CLIENT_CERT", client_cert},
	};
	char *tmpl = NULL, *out = NULL;
	if (fsio_read(tmpl_path, TUNNEL_MAX_FILE, &tmpl, NULL, e) < 0)
		return -1;
	int rc = render_template(tmpl, tmpl_path, vars, sizeof(vars) / sizeof(vars[0]), &out, e);
	free(tmpl);
	if (rc < 0)
		return -1;
	rc = tunnel_put(conf, out, strlen(out), changed, e);
	free(out);
	return rc;
}

/* stunnel 5.68 calls mallopt(M_MMAP_THRESHOLD, 4096) in main(), so every OpenSSL
 * record buffer (~18 KiB, allocated and freed per record: SSL_MODE_RELEASE_BUFFERS)
 * is an mmap+munmap: ~2,300/s at 3,000 req/s, each a page-fault burst plus a TLB
 * shootdown IPI to every core running one of its ~1000 threads (bench/routes/NOTES.md).
 * M_MMAP_MAX=0 (a tunable; stunnel does not set it) keeps those buffers in the heap.
 * FPS_STUNNEL_GLIBC_TUNABLES overrides it; empty runs stunnel untouched. */
#define TUNNEL_TUNABLES "glibc.malloc.mmap_max=0"

static bool tunnel_env_safe(const char *s)
{
	/* env -S treats these specially even inside single quotes (or ends the quote). */
	return strpbrk(s, "'\\\n") == NULL;
}

int tunnel_listen(int port, char *why, size_t len)
{
	why[0] = '\0';
	if (pf_port_free("127.0.0.1", port, why, len) < 0) {
		char who[256];
		if (ho_tunnel_port_joinable(port, who, sizeof(who)) != 1)
			return -1; /* why names the holder */
		log_info("stunnel: tunnel client port 127.0.0.1:%d is held by %s: joining it (SO_REUSEPORT)", port,
		         who);
		why[0] = '\0';
	}
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(why, len, "127.0.0.1:%d: socket: %s", port, strerror(errno));
		return -1;
	}
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0 || listen(fd, SOMAXCONN) < 0) {
		snprintf(why, len, "127.0.0.1:%d: cannot listen: %s", port, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

void tunnel_stop_accepting(const struct fps_config *c, pid_t pid)
{
	if (c == NULL || !c->has_tunnel || pid <= 0)
		return;
	char why[256];
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	int n = ho_stop_queueing(pid, c->tunnel_local_port, why, sizeof(why));
	clock_gettime(CLOCK_MONOTONIC, &t1);
	long long ms = (t1.tv_sec - t0.tv_sec) * 1000LL + (t1.tv_nsec - t0.tv_nsec) / 1000000;
	if (n < 0)
		log_warn("stunnel: %s: stopping it as it is", why);
	else if (n > 0)
		log_info("stunnel: pid %d takes no new connection on 127.0.0.1:%d (its queue accepted in %lld ms)",
		         (int)pid, c->tunnel_local_port, ms);
}

void tunnel_argv(const struct tunnel_paths *p, char *argv[4])
{
	/* Static: the supervisor keeps the pointers for restarts (like squid_argv). */
	static char bin[PATH_MAX], conf[PATH_MAX], split[3 * PATH_MAX];
	static char env_bin[] = "/usr/bin/env", env_S[] = "-S";
	const char *b = getenv("FPS_STUNNEL_BIN");
	const char *t = getenv("FPS_STUNNEL_GLIBC_TUNABLES");
	snprintf(bin, sizeof(bin), "%s", b && *b ? b : STUNNEL_BIN);
	tunnel_path(conf, sizeof(conf), p->dir, TUNNEL_CONF);
	if (t == NULL)
		t = TUNNEL_TUNABLES;
	argv[3] = NULL;
	/* Four slots: env -S "GLIBC_TUNABLES=... 'stunnel' 'conf'"; env execs stunnel, so
	 * the supervised pid is stunnel's own and SIGHUP reaches it. */
	if (*t && tunnel_env_safe(t) && tunnel_env_safe(bin) && tunnel_env_safe(conf) && strchr(t, ' ') == NULL &&
	    access(env_bin, X_OK) == 0) {
		snprintf(split, sizeof(split), "GLIBC_TUNABLES=%s '%s' '%s'", t, bin, conf);
		argv[0] = env_bin;
		argv[1] = env_S;
		argv[2] = split;
		return;
	}
	argv[0] = bin;
	argv[1] = conf;
	argv[2] = NULL;
}

/* ---- probe -------------------------------------------------------------------------------- */

static int tunnel_left(long long deadline)
{
	long long left = deadline - fsio_mono_ms();
	return left > 0 ? (int)left : 0;
}

/* Non-blocking connect to each address in turn, within the deadline. Returns the
 * socket, or -1 with why in err. */
static int tunnel_connect(const char *host, int port, bool numeric, long long deadline, char *err, size_t errlen)
{
	char service[16];
	snprintf(service, sizeof(service), "%d", port);
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM,
	                         .ai_flags = AI_NUMERICSERV | (numeric ? AI_NUMERICHOST : 0)};
	struct addrinfo *res = NULL;
	/* getaddrinfo cannot be bounded; it is the system resolver's own timeout. */
	int gai = getaddrinfo(host, service, &hints, &res);
	if (gai != 0) {
		snprintf(err, errlen, "cannot resolve %s: %s", host, gai_strerror(gai));
		return -1;
	}
	int fd = -1;
	snprintf(err, errlen, "no address for %s", host);
	for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
		int soerr = 0;
		enum net_result nr = net_connect(ai->ai_addr, ai->ai_addrlen, deadline, &fd, &soerr);
		if (nr == NET_SOCKET) {
			snprintf(err, errlen, "socket: %s", strerror(soerr));
		} else if (nr != NET_OK) {
			if (nr == NET_TIMEOUT)
				soerr = ETIMEDOUT;
			snprintf(err, errlen, "%s to %s port %d",
			         soerr == ECONNREFUSED ? "connection refused"
			         : soerr == ETIMEDOUT  ? "connect timed out"
			                               : strerror(soerr),
			         host, port);
		}
	}
	freeaddrinfo(res);
	return fd;
}

static void tunnel_name(X509_NAME *n, char *buf, size_t len)
{
	buf[0] = '\0';
	BIO *b = BIO_new(BIO_s_mem());
	if (b == NULL || n == NULL) {
		BIO_free(b);
		return;
	}
	/* RFC 2253: most specific first, "CN=Corp Firewall CA,O=Corp"; UTF-8 left as is. */
	X509_NAME_print_ex(b, n, 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB);
	char *data = NULL;
	long dl = BIO_get_mem_data(b, &data);
	snprintf(buf, len, "%.*s", (int)(dl < 0 ? 0 : dl), data ? data : "");
	BIO_free(b);
}

/* The DNS names a certificate carries (SAN, else the subject CN), for "seen" in errors. */
static void tunnel_cert_names(X509 *x, char *buf, size_t len)
{
	buf[0] = '\0';
	size_t o = 0;
	GENERAL_NAMES *sans = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
	for (int i = 0; sans && i < sk_GENERAL_NAME_num(sans); i++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
		if (g->type != GEN_DNS)
			continue;
		const unsigned char *s = ASN1_STRING_get0_data(g->d.dNSName);
		int n = snprintf(buf + o, len - o, "%s%.*s", o ? ", " : "", ASN1_STRING_length(g->d.dNSName),
		                 (const char *)s);
		if (n < 0 || (size_t)n >= len - o)
			break;
		o += (size_t)n;
	}
	GENERAL_NAMES_free(sans);
	if (o == 0) {
		char cn[256] = "";
		X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof(cn));
		snprintf(buf, len, "%s", cn[0] ? cn : "(none)");
	}
}

static bool tunnel_chain_error(long v)
{
	switch (v) {
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
	case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
	case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
	case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
	case X509_V_ERR_CERT_SIGNATURE_FAILURE:
	case X509_V_ERR_CERT_UNTRUSTED:
		return true;
	default:
		return false;
	}
}

/* The last OpenSSL error as text, or what errno says, for a failed handshake. */
static void tunnel_ssl_error(const char *what, char *buf, size_t len)
{
	unsigned long ec = ERR_peek_last_error();
	if (ec != 0) {
		char tmp[256];
		ERR_error_string_n(ec, tmp, sizeof(tmp));
		snprintf(buf, len, "%s: %s", what, tmp);
	} else {
		snprintf(buf, len, "%s: %s", what, errno ? strerror(errno) : "connection closed by the server");
	}
	ERR_clear_error();
}

static SSL_CTX *tunnel_ctx(const struct tunnel_paths *p, char *err, size_t errlen)
{
	char ca[PATH_MAX], cert[PATH_MAX], key[PATH_MAX];
	/* The copies stunnel uses, so the probe sees what stunnel sees. */
	tunnel_path(ca, sizeof(ca), p->dir, TUNNEL_CA);
	tunnel_path(cert, sizeof(cert), p->dir, TUNNEL_CERT);
	tunnel_path(key, sizeof(key), p->dir, TUNNEL_KEY);
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	if (ctx == NULL) {
		tunnel_ssl_error("SSL_CTX_new", err, errlen);
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	if (SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1) {
		ERR_clear_error();
		snprintf(err, errlen, "%s: cannot load the tunnel CA", ca);
		SSL_CTX_free(ctx);
		return NULL;
	}
	if (fsio_exists(cert) && fsio_exists(key)) {
		if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
		    SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
			ERR_clear_error();
			snprintf(err, errlen, "%s: cannot load the client certificate and key", cert);
			SSL_CTX_free(ctx);
			return NULL;
		}
	}
	/* VERIFY_NONE only so the handshake completes and the presented certificate can
	 * be examined; the verdict is SSL_get_verify_result(), checked below. */
	SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	return ctx;
}

/* Verdict on a completed handshake: fills up/interception/issuer/subject/error. */
static void tunnel_judge(SSL *ssl, const char *server, struct status_path *st)
{
	X509 *leaf = SSL_get1_peer_certificate(ssl);
	if (leaf == NULL) {
		snprintf(st->error, sizeof(st->error), "the tunnel server presented no certificate");
		return;
	}
	tunnel_name(X509_get_issuer_name(leaf), st->peer_issuer, sizeof(st->peer_issuer));
	tunnel_name(X509_get_subject_name(leaf), st->peer_subject, sizeof(st->peer_subject));
	long v = SSL_get_verify_result(ssl);
	if (v == X509_V_OK) {
		st->up = true;
	} else if (tunnel_chain_error(v)) {
		st->interception = true;
		snprintf(st->error, sizeof(st->error),
		         "certificate issued by '%s' (subject '%s') is not from the tunnel CA: likely TLS interception "
		         "(%s)",
		         st->peer_issuer, st->peer_subject, X509_verify_cert_error_string(v));
	} else if (v == X509_V_ERR_HOSTNAME_MISMATCH) {
		char names[200];
		tunnel_cert_names(leaf, names, sizeof(names));
		snprintf(st->error, sizeof(st->error),
		         "certificate from the tunnel CA is for '%s', not the expected '%s' (tunnel.server)", names,
		         server);
	} else {
		snprintf(st->error, sizeof(st->error), "certificate '%s' issued by '%s' rejected: %s", st->peer_subject,
		         st->peer_issuer, X509_verify_cert_error_string(v));
	}
	X509_free(leaf);
}

static void tunnel_handshake(const struct fps_config *c, const struct tunnel_paths *p, long long deadline,
                             struct status_path *st)
{
	const char *host = c->tunnel_address[0] ? c->tunnel_address : c->tunnel_server;
	char err[sizeof(st->error)];
	SSL_CTX *ctx = tunnel_ctx(p, err, sizeof(err));
	if (ctx == NULL) {
		snprintf(st->error, sizeof(st->error), "%s", err);
		return;
	}
	int fd = tunnel_connect(host, c->tunnel_port, c->tunnel_address[0] != '\0', deadline, err, sizeof(err));
	if (fd < 0) {
		snprintf(st->error, sizeof(st->error), "%s", err);
		SSL_CTX_free(ctx);
		return;
	}
	SSL *ssl = SSL_new(ctx);
	if (ssl == NULL || SSL_set_fd(ssl, fd) != 1 || SSL_set_tlsext_host_name(ssl, c->tunnel_server) != 1 ||
	    X509_VERIFY_PARAM_set1_host(SSL_get0_param(ssl), c->tunnel_server, 0) != 1) {
		tunnel_ssl_error("TLS setup", st->error, sizeof(st->error));
		goto out;
	}
	/* stunnel's checkHost: the name must match exactly; no partial wildcards. */
	X509_VERIFY_PARAM_set_hostflags(SSL_get0_param(ssl), X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
	for (;;) {
		ERR_clear_error();
		errno = 0;
		int r = SSL_connect(ssl);
		if (r == 1) {
			tunnel_judge(ssl, c->tunnel_server, st);
			/* A polite close; the server side must not log an error for every probe. */
			SSL_shutdown(ssl);
			break;
		}
		int se = SSL_get_error(ssl, r);
		if (se != SSL_ERROR_WANT_READ && se != SSL_ERROR_WANT_WRITE) {
			char what[64];
			snprintf(what, sizeof(what), "TLS handshake with %s port %d failed", host, c->tunnel_port);
			tunnel_ssl_error(what, st->error, sizeof(st->error));
			break;
		}
		struct pollfd pfd = {.fd = fd, .events = se == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT};
		int n;
		do
			n = poll(&pfd, 1, tunnel_left(deadline));
		while (n < 0 && errno == EINTR);
		if (n == 0) {
			snprintf(st->error, sizeof(st->error), "TLS handshake with %s port %d timed out", host,
			         c->tunnel_port);
			break;
		}
		if (n < 0) {
			snprintf(st->error, sizeof(st->error), "poll: %s", strerror(errno));
			break;
		}
	}
out:
	SSL_free(ssl);
	close(fd);
	SSL_CTX_free(ctx);
}

void tunnel_probe(const struct fps_config *c, const struct tunnel_paths *p, int timeout_ms, struct status_path *st)
{
	memset(st, 0, sizeof(*st));
	st->configured = c->has_tunnel;
	if (!c->has_tunnel)
		return;
	if (c->tunnel_address[0])
		snprintf(st->target, sizeof(st->target), "%s:%d (%s)", c->tunnel_address, c->tunnel_port,
		         c->tunnel_server);
	else
		snprintf(st->target, sizeof(st->target), "%s:%d", c->tunnel_server, c->tunnel_port);
	tunnel_handshake(c, p, fsio_mono_ms() + (timeout_ms > 0 ? timeout_ms : 1), st);
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	st->checked_unix = (double)now.tv_sec + (double)now.tv_nsec / 1e9;

	/* Log transitions only: the probe runs every few seconds and a support engineer
	 * needs the moment it broke and the reason, not the same line every 10 s. */
	static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
	static char last[sizeof(st->error) + sizeof(st->target) + 8] = "(never)";
	char now_state[sizeof(last)];
	snprintf(now_state, sizeof(now_state), "%s|%s", st->target, st->up ? "up" : st->error);
	pthread_mutex_lock(&mu);
	bool changed = strcmp(now_state, last) != 0;
	if (changed)
		snprintf(last, sizeof(last), "%s", now_state);
	pthread_mutex_unlock(&mu);
	if (!changed)
		return;
	if (st->up)
		log_info("tunnel %s: up (certificate '%s' from '%s')", st->target, st->peer_subject, st->peer_issuer);
	else if (st->interception)
		log_error("tunnel %s: down: %s", st->target, st->error);
	else
		log_warn("tunnel %s: down: %s", st->target, st->error);
}
