/*
 * Unit tests for tunnel: stunnel.conf rendering and certificate copies (private,
 * rewritten only when bytes differ), and the probe against real TLS servers on
 * loopback: the right server, an intercepting CA, the right CA with a wrong name,
 * mTLS, a refused port and a server that never answers.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/ssl.h>

#include "fsio.h"
#include "tunnel.h"

#define SERVER "tunnel.fps.test"

static char g_root[PATH_MAX]; /* per-run temp dir: pki/, secrets/, tunnel/ */
static char g_templates[PATH_MAX];

static void path(char *buf, size_t len, const char *rel)
{
	snprintf(buf, len, "%s/%s", g_root, rel);
}

static void run(const char *cmd)
{
	char full[4096];
	snprintf(full, sizeof(full), "cd %s/pki && %s >/dev/null 2>&1", g_root, cmd);
	assert_int_equal(system(full), 0);
}

/* CA (ca.*), "Corp Firewall CA" (fw.*), and leaves signed by them. */
static void make_pki(void)
{
	run("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj '/CN=FPS Tunnel CA' "
	    "-keyout ca.key -out ca.pem");
	run("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 "
	    "-subj '/CN=Corp Firewall CA/O=Corp' -keyout fw.key -out fw.pem");
	const char *leaves[][3] = {{"good", "ca", SERVER},
	                           {"wrong", "ca", "wrong.fps.test"},
	                           {"rogue", "fw", SERVER},
	                           {"client", "ca", "agent"}};
	for (size_t i = 0; i < sizeof(leaves) / sizeof(leaves[0]); i++) {
		char cmd[1024];
		snprintf(
		    cmd, sizeof(cmd),
		    "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj '/CN=%s' -keyout %s.key "
		    "-out %s.csr && printf 'subjectAltName=DNS:%s\\n' > %s.ext && openssl x509 -req -in %s.csr -CA "
		    "%s.pem -CAkey %s.key -CAcreateserial -days 2 -extfile %s.ext -out %s.pem",
		    leaves[i][2], leaves[i][0], leaves[i][0], leaves[i][2], leaves[i][0], leaves[i][0], leaves[i][1],
		    leaves[i][1], leaves[i][0], leaves[i][0]);
		run(cmd);
	}
}

static int group_setup(void **state)
{
	(void)state;
	signal(SIGPIPE, SIG_IGN); /* as in the controller: a peer closing mid-handshake */
	snprintf(g_root, sizeof(g_root), "/tmp/fps-tunnel-ut-XXXXXX");
	if (mkdtemp(g_root) == NULL)
		return -1;
	char d[PATH_MAX];
	path(d, sizeof(d), "pki");
	mkdir(d, 0700);
	path(d, sizeof(d), "secrets");
	mkdir(d, 0700);
	make_pki();
	const char *t = getenv("FPS_STUNNEL_TEMPLATES_DIR");
	if (t && *t)
		snprintf(g_templates, sizeof(g_templates), "%s", t);
	else if (realpath("stunnel-conf", g_templates) == NULL) /* `make unit` runs from the repo root */
		return -1;
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	char cmd[PATH_MAX + 16];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", g_root);
	return system(cmd) == 0 ? 0 : -1;
}

static void copy(const char *from_rel, const char *to_rel)
{
	char a[PATH_MAX], b[PATH_MAX];
	path(a, sizeof(a), from_rel);
	path(b, sizeof(b), to_rel);
	char *data = NULL;
	size_t len = 0;
	struct fps_err e;
	assert_int_equal(fsio_read(a, 1 << 20, &data, &len, &e), 0);
	assert_int_equal(fsio_write_atomic(b, data, len, 0644, (gid_t)-1, &e), 0);
	free(data);
}

static void rm(const char *rel)
{
	char a[PATH_MAX];
	path(a, sizeof(a), rel);
	unlink(a);
}

static char *slurp(const char *rel)
{
	char a[PATH_MAX];
	path(a, sizeof(a), rel);
	char *data = NULL;
	struct fps_err e;
	assert_int_equal(fsio_read(a, 1 << 20, &data, NULL, &e), 0);
	return data;
}

struct world {
	struct fps_config cfg;
	struct tunnel_paths paths;
	char dir[PATH_MAX], secrets[PATH_MAX];
};

static void world_init(struct world *w, const char *address, int port)
{
	cfg_init_defaults(&w->cfg);
	w->cfg.has_tunnel = true;
	snprintf(w->cfg.tunnel_server, sizeof(w->cfg.tunnel_server), "%s", SERVER);
	snprintf(w->cfg.tunnel_address, sizeof(w->cfg.tunnel_address), "%s", address);
	w->cfg.tunnel_port = port;
	w->cfg.tunnel_local_port = 3129;
	path(w->dir, sizeof(w->dir), "tunnel");
	path(w->secrets, sizeof(w->secrets), "secrets");
	w->paths = (struct tunnel_paths){.templates_dir = g_templates, .dir = w->dir, .secrets_dir = w->secrets};
}

/* ---- prepare ------------------------------------------------------------------------------ */

static void test_prepare_renders_conf_and_rewrites_only_on_change(void **state)
{
	(void)state;
	struct world w;
	world_init(&w, "127.0.0.1", 8443);
	struct fps_err e;
	bool changed = false;
	rm("secrets/tunnel-client.pem");
	rm("secrets/tunnel-client.key");
	copy("pki/ca.pem", "secrets/tunnel-ca.pem");

	assert_int_equal(tunnel_prepare(&w.cfg, &w.paths, &changed, &e), 0);
	assert_true(changed);
	char *conf = slurp("tunnel/stunnel.conf");
	char want[PATH_MAX + 64];
	const char *lines[] = {"\nforeground = yes\n",
	                       "\nclient = yes\n",
	                       "\naccept = 127.0.0.1:3129\n",
	                       "\nconnect = 127.0.0.1:8443\n",
	                       "\nsni = " SERVER "\n",
	                       "\ncheckHost = " SERVER "\n",
	                       "\nverifyChain = yes\n",
	                       "\nsslVersionMin = TLSv1.2\n",
	                       "\nsocket = l:TCP_NODELAY=1\n",
	                       "\nsocket = r:TCP_NODELAY=1\n",
	                       "\n[fps-tunnel]\n"};
	for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
		if (strstr(conf, lines[i]) == NULL)
			fail_msg("stunnel.conf lacks %s:\n%s", lines[i], conf);
	}
	snprintf(want, sizeof(want), "\nCAfile = %s/tunnel-ca.pem\n", w.dir);
	assert_non_null(strstr(conf, want));
	snprintf(want, sizeof(want), "\npid = %s/stunnel.pid\n", w.dir);
	assert_non_null(strstr(conf, want));
	assert_null(strstr(conf, "{{"));
	assert_null(strstr(conf, "\ncert = "));
	assert_null(strstr(conf, "\ndelay = yes")); /* an address needs no DNS */
	free(conf);

	/* The copy is private and byte-identical. */
	char ca[PATH_MAX];
	path(ca, sizeof(ca), "tunnel/tunnel-ca.pem");
	struct stat sb;
	assert_int_equal(stat(ca, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0600);
	char *a = slurp("tunnel/tunnel-ca.pem"), *b = slurp("pki/ca.pem");
	assert_string_equal(a, b);
	free(a);
	free(b);

	/* Same inputs: nothing changes, so no SIGHUP. */
	changed = true;
	assert_int_equal(tunnel_prepare(&w.cfg, &w.paths, &changed, &e), 0);
	assert_false(changed);

	/* CA rotation: changed. */
	copy("pki/fw.pem", "secrets/tunnel-ca.pem");
	assert_int_equal(tunnel_prepare(&w.cfg, &w.paths, &changed, &e), 0);
	assert_true(changed);
	a = slurp("tunnel/tunnel-ca.pem");
	b = slurp("pki/fw.pem");
	assert_string_equal(a, b);
	free(a);
	free(b);
	copy("pki/ca.pem", "secrets/tunnel-ca.pem");

	/* mTLS on: cert/key lines and private copies; off again: copies removed. */
	copy("pki/client.pem", "secrets/tunnel-client.pem");
	copy("pki/client.key", "secrets/tunnel-client.key");
	assert_int_equal(tunnel_prepare(&w.cfg, &w.paths, &changed, &e), 0);
	assert_true(changed);
	conf = slurp("tunnel/stunnel.conf");
	snprintf(want, sizeof(want), "\ncert = %s/tunnel-client.pem\nkey = %s/tunnel-client.key\n", w.dir, w.dir);
	assert_non_null(strstr(conf, want));
	free(conf);
	char key[PATH_MAX];
	path(key, sizeof(key), "tunnel/tunnel-client.key");
	assert_int_equal(stat(key, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0600);
	rm("secrets/tunnel-client.pem");
	rm("secrets/tunnel-client.key");
	assert_int_equal(tunnel_prepare(&w.cfg, &w.paths, &changed, &e), 0);
	assert_true(changed);
	assert_false(fsio_exists(key));

	/* A name instead of an address: connect to it, resolve at connect time. */
	w.cfg.tunnel_address[0] = '\0';
	w.cfg.tunnel_port = 443;
	assert_int_equal(tunnel_prepare(&w.cfg, &w.paths, &changed, &e), 0);
	assert_true(changed);
	conf = slurp("tunnel/stunnel.conf");
	assert_non_null(strstr(conf, "\nconnect = " SERVER ":443\n"));
	assert_non_null(strstr(conf, "\ndelay = yes\n"));
	free(conf);
	cfg_free(&w.cfg);
}

static void test_prepare_errors_name_the_file(void **state)
{
	(void)state;
	struct world w;
	world_init(&w, "127.0.0.1", 8443);
	struct fps_err e;
	bool changed;
	static const struct {
		const char *ca_from; /* NULL = absent */
		const char *cert_from, *key_from;
		const char *templates; /* NULL = the real ones */
		const char *want_msg, *want_file_suffix;
	} cases[] = {
	    {NULL, NULL, NULL, NULL, "tunnel-ca.pem is missing", "secrets"},
	    {"pki/ca.pem", "pki/client.pem", NULL, NULL, "only tunnel-client.pem is present", "secrets"},
	    {"pki/ca.pem", NULL, "pki/client.key", NULL, "only tunnel-client.key is present", "secrets"},
	    {"pki/ca.csr.notpem", NULL, NULL, NULL, "not a PEM file", "secrets/tunnel-ca.pem"},
	    /* deploy/k8s/seed/secret.example.yaml's placeholder, and a PEM header with no certificate */
	    {"pki/replace-me.pem", NULL, NULL, NULL, "not a PEM file", "secrets/tunnel-ca.pem"},
	    {"pki/empty-cert.pem", NULL, NULL, NULL, "not a PEM certificate OpenSSL can load", "secrets/tunnel-ca.pem"},
	    {"pki/ca.pem", "pki/client.pem", "pki/empty-cert.pem", NULL, "not a PEM private key",
	     "secrets/tunnel-client.key"},
	    {"pki/ca.pem", "pki/client.pem", "pki/fw.key", NULL, "is not the private key of tunnel-client.pem",
	     "secrets/tunnel-client.key"},
	    {"pki/ca.pem", NULL, NULL, "/nonexistent-templates", "", "/nonexistent-templates/client.conf.tmpl"},
	};
	/* A file that is not PEM (e.g. a DER certificate pasted into the Secret). */
	char notpem[PATH_MAX];
	path(notpem, sizeof(notpem), "pki/ca.csr.notpem");
	assert_int_equal(fsio_write_atomic(notpem, "\x30\x82\x01\x0a", 4, 0644, (gid_t)-1, &e), 0);
	static const char replace_me[] = "-----REPLACE ME WITH THE TUNNEL CA CERTIFICATE (PEM)-----\n";
	static const char empty_cert[] = "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n";
	path(notpem, sizeof(notpem), "pki/replace-me.pem");
	assert_int_equal(fsio_write_atomic(notpem, replace_me, sizeof(replace_me) - 1, 0644, (gid_t)-1, &e), 0);
	path(notpem, sizeof(notpem), "pki/empty-cert.pem");
	assert_int_equal(fsio_write_atomic(notpem, empty_cert, sizeof(empty_cert) - 1, 0644, (gid_t)-1, &e), 0);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		rm("secrets/tunnel-ca.pem");
		rm("secrets/tunnel-client.pem");
		rm("secrets/tunnel-client.key");
		if (cases[i].ca_from)
			copy(cases[i].ca_from, "secrets/tunnel-ca.pem");
		if (cases[i].cert_from)
			copy(cases[i].cert_from, "secrets/tunnel-client.pem");
		if (cases[i].key_from)
			copy(cases[i].key_from, "secrets/tunnel-client.key");
		w.paths.templates_dir = cases[i].templates ? cases[i].templates : g_templates;
		err_clear(&e);
		assert_int_equal(tunnel_prepare(&w.cfg, &w.paths, &changed, &e), -1);
		if (strstr(e.msg, cases[i].want_msg) == NULL)
			fail_msg("case %zu: message '%s' lacks '%s'", i, e.msg, cases[i].want_msg);
		size_t fl = strlen(e.file), sl = strlen(cases[i].want_file_suffix);
		if (fl < sl || strcmp(e.file + fl - sl, cases[i].want_file_suffix) != 0)
			fail_msg("case %zu: file '%s' does not end in '%s'", i, e.file, cases[i].want_file_suffix);
	}
	copy("pki/ca.pem", "secrets/tunnel-ca.pem");
	cfg_free(&w.cfg);
}

static void test_argv_runs_stunnel_on_the_rendered_conf(void **state)
{
	(void)state;
	struct tunnel_paths p = {.templates_dir = g_templates, .dir = "/state/tunnel", .secrets_dir = "/s"};
	char *argv[4];
	unsetenv("FPS_STUNNEL_BIN");
	unsetenv("FPS_STUNNEL_GLIBC_TUNABLES");
	/* Default: through env -S, so stunnel gets the malloc tunable and keeps its pid. */
	tunnel_argv(&p, argv);
	assert_string_equal(argv[0], "/usr/bin/env");
	assert_string_equal(argv[1], "-S");
	assert_string_equal(argv[2],
	                    "GLIBC_TUNABLES=glibc.malloc.mmap_max=0 '/usr/bin/stunnel4' '/state/tunnel/stunnel.conf'");
	assert_null(argv[3]);

	/* Tuning off: stunnel itself. */
	setenv("FPS_STUNNEL_GLIBC_TUNABLES", "", 1);
	tunnel_argv(&p, argv);
	assert_string_equal(argv[0], "/usr/bin/stunnel4");
	assert_string_equal(argv[1], "/state/tunnel/stunnel.conf");
	assert_null(argv[2]);

	/* A path env -S would misparse: stunnel itself rather than a broken command line. */
	unsetenv("FPS_STUNNEL_GLIBC_TUNABLES");
	struct tunnel_paths q = {.templates_dir = g_templates, .dir = "/state/it's", .secrets_dir = "/s"};
	tunnel_argv(&q, argv);
	assert_string_equal(argv[0], "/usr/bin/stunnel4");
	assert_string_equal(argv[1], "/state/it's/stunnel.conf");
	assert_null(argv[2]);
}

/* The argv really starts stunnel with the tunable: run `env -S` on a stand-in binary
 * that prints its environment and arguments. */
static void test_argv_env_split_really_execs(void **state)
{
	(void)state;
	char out[PATH_MAX], cmd[4 * PATH_MAX];
	path(out, sizeof(out), "argv.out");
	setenv("FPS_STUNNEL_BIN", "/bin/sh", 1);
	unsetenv("FPS_STUNNEL_GLIBC_TUNABLES");
	struct tunnel_paths p = {.templates_dir = g_templates, .dir = g_root, .secrets_dir = "/s"};
	char conf[PATH_MAX];
	path(conf, sizeof(conf), "stunnel.conf");
	struct fps_err e;
	char script[PATH_MAX + 64];
	snprintf(script, sizeof(script), "echo \"$GLIBC_TUNABLES $0\" > %s\n", out);
	assert_int_equal(fsio_write_atomic(conf, script, strlen(script), 0600, (gid_t)-1, &e), 0);
	char *argv[4];
	tunnel_argv(&p, argv);
	unsetenv("FPS_STUNNEL_BIN");
	snprintf(cmd, sizeof(cmd), "%s %s \"%s\"", argv[0], argv[1], argv[2]);
	assert_int_equal(system(cmd), 0);
	char *got = slurp("argv.out");
	char want[PATH_MAX + 64];
	snprintf(want, sizeof(want), "glibc.malloc.mmap_max=0 %s\n", conf);
	assert_string_equal(got, want);
	free(got);
}

/* ---- probe against real TLS servers ----------------------------------------------------- */

struct tls_server {
	SSL_CTX *ctx; /* NULL: accept TCP and never answer the handshake */
	int lfd, port;
	pthread_t th;
};

static void *tls_server_main(void *arg)
{
	struct tls_server *s = arg;
	int fd = accept(s->lfd, NULL, NULL);
	if (fd < 0)
		return NULL;
	SSL *ssl = SSL_new(s->ctx);
	SSL_set_fd(ssl, fd);
	if (SSL_accept(ssl) == 1) {
		char buf[256];
		while (SSL_read(ssl, buf, sizeof(buf)) > 0)
			;
	}
	SSL_free(ssl);
	close(fd);
	return NULL;
}

static void tls_server_start(struct tls_server *s, const char *leaf, bool require_client)
{
	memset(s, 0, sizeof(*s));
	s->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(s->lfd >= 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	assert_int_equal(bind(s->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(s->lfd, 4), 0);
	socklen_t al = sizeof(a);
	getsockname(s->lfd, (struct sockaddr *)&a, &al);
	s->port = ntohs(a.sin_port);
	if (leaf == NULL)
		return;
	char cert[PATH_MAX], key[PATH_MAX], ca[PATH_MAX];
	snprintf(cert, sizeof(cert), "%s/pki/%s.pem", g_root, leaf);
	snprintf(key, sizeof(key), "%s/pki/%s.key", g_root, leaf);
	s->ctx = SSL_CTX_new(TLS_server_method());
	assert_int_equal(SSL_CTX_use_certificate_chain_file(s->ctx, cert), 1);
	assert_int_equal(SSL_CTX_use_PrivateKey_file(s->ctx, key, SSL_FILETYPE_PEM), 1);
	if (require_client) {
		snprintf(ca, sizeof(ca), "%s/pki/ca.pem", g_root);
		assert_int_equal(SSL_CTX_load_verify_locations(s->ctx, ca, NULL), 1);
		SSL_CTX_set_verify(s->ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
		/* TLS 1.2: a refused client certificate fails the handshake itself, so the
		 * probe sees it (with TLS 1.3 the client learns only on its first read). */
		SSL_CTX_set_max_proto_version(s->ctx, TLS1_2_VERSION);
	}
	assert_int_equal(pthread_create(&s->th, NULL, tls_server_main, s), 0);
}

static void tls_server_stop(struct tls_server *s)
{
	if (s->ctx) {
		pthread_join(s->th, NULL);
		SSL_CTX_free(s->ctx);
	}
	close(s->lfd);
}

static void probe(const char *leaf, bool require_client, bool with_client_cert, int timeout_ms, struct status_path *st)
{
	struct world w;
	struct tls_server s;
	tls_server_start(&s, leaf, require_client);
	world_init(&w, "127.0.0.1", s.port);
	copy("pki/ca.pem", "secrets/tunnel-ca.pem");
	rm("secrets/tunnel-client.pem");
	rm("secrets/tunnel-client.key");
	if (with_client_cert) {
		copy("pki/client.pem", "secrets/tunnel-client.pem");
		copy("pki/client.key", "secrets/tunnel-client.key");
	}
	struct fps_err e;
	bool changed;
	assert_int_equal(tunnel_prepare(&w.cfg, &w.paths, &changed, &e), 0);
	tunnel_probe(&w.cfg, &w.paths, timeout_ms, st);
	tls_server_stop(&s);
	cfg_free(&w.cfg);
}

static void test_probe_table(void **state)
{
	(void)state;
	static const struct {
		const char *name, *leaf;
		bool require_client, client_cert;
		bool up, interception;
		const char *error_has[3];
		const char *issuer_has;
	} cases[] = {
	    {"our server", "good", false, false, true, false, {NULL}, "CN=FPS Tunnel CA"},
	    {"intercepting firewall",
	     "rogue",
	     false,
	     false,
	     false,
	     true,
	     {"issued by 'O=Corp,CN=Corp Firewall CA'", "likely TLS interception", NULL},
	     "CN=Corp Firewall CA"},
	    {"our CA, wrong name",
	     "wrong",
	     false,
	     false,
	     false,
	     false,
	     {"'wrong.fps.test'", "expected '" SERVER "'", NULL},
	     "CN=FPS Tunnel CA"},
	    {"mTLS with our client certificate", "good", true, true, true, false, {NULL}, "CN=FPS Tunnel CA"},
	    {"mTLS without a client certificate", "good", true, false, false, false, {"TLS handshake", NULL}, ""},
	    {"server that never answers", NULL, false, false, false, false, {"timed out", NULL}, ""},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct status_path st;
		probe(cases[i].leaf, cases[i].require_client, cases[i].client_cert, cases[i].leaf ? 5000 : 300, &st);
		if (st.up != cases[i].up || st.interception != cases[i].interception)
			fail_msg("%s: up=%d interception=%d, want %d/%d (error: %s)", cases[i].name, st.up,
			         st.interception, cases[i].up, cases[i].interception, st.error);
		assert_true(st.configured);
		assert_true(st.checked_unix > 0);
		assert_non_null(strstr(st.target, "127.0.0.1:"));
		if (cases[i].up)
			assert_string_equal(st.error, "");
		for (size_t j = 0; cases[i].error_has[j]; j++)
			if (strstr(st.error, cases[i].error_has[j]) == NULL)
				fail_msg("%s: error '%s' lacks '%s'", cases[i].name, st.error, cases[i].error_has[j]);
		if (strstr(st.peer_issuer, cases[i].issuer_has) == NULL)
			fail_msg("%s: issuer '%s' lacks '%s'", cases[i].name, st.peer_issuer, cases[i].issuer_has);
	}
}

static void test_probe_refused_port_says_refused(void **state)
{
	(void)state;
	/* A port that was just free: bound, closed, nobody listening. */
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	socklen_t al = sizeof(a);
	getsockname(fd, (struct sockaddr *)&a, &al);
	close(fd);
	struct world w;
	world_init(&w, "127.0.0.1", ntohs(a.sin_port));
	copy("pki/ca.pem", "secrets/tunnel-ca.pem");
	struct fps_err e;
	bool changed;
	assert_int_equal(tunnel_prepare(&w.cfg, &w.paths, &changed, &e), 0);
	struct status_path st;
	tunnel_probe(&w.cfg, &w.paths, 2000, &st);
	assert_false(st.up);
	assert_false(st.interception);
	assert_non_null(strstr(st.error, "connection refused"));
	cfg_free(&w.cfg);
}

static void test_probe_without_tunnel_is_not_configured(void **state)
{
	(void)state;
	struct fps_config c;
	cfg_init_defaults(&c);
	struct tunnel_paths p = {.templates_dir = g_templates, .dir = "/nonexistent", .secrets_dir = ""};
	struct status_path st;
	tunnel_probe(&c, &p, 100, &st);
	assert_false(st.configured);
	assert_false(st.up);
	cfg_free(&c);
}

static int listen_port(int fd)
{
	struct sockaddr_in a;
	socklen_t al = sizeof(a);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &al), 0);
	return ntohs(a.sin_port);
}

/* tunnel.local_port is bound with SO_REUSEPORT, so another instance's listener joins it (two
 * stunnel clients serve one port); a listener without the option is a stranger, named. */
static void test_listen_shares_the_port_and_refuses_a_stranger(void **state)
{
	(void)state;
	char why[512];
	int probe = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	assert_int_equal(bind(probe, (struct sockaddr *)&a, sizeof(a)), 0);
	int port = listen_port(probe);
	close(probe);
	int first = tunnel_listen(port, why, sizeof(why));
	assert_true(first >= 0);
	int second = tunnel_listen(port, why, sizeof(why)); /* as the other instance does */
	assert_true(second >= 0);
	assert_int_equal(listen_port(second), port);
	int one = 0;
	socklen_t ol = sizeof(one);
	assert_int_equal(getsockopt(second, SOL_SOCKET, SO_REUSEPORT, &one, &ol), 0);
	assert_int_equal(one, 1);
	close(first);
	close(second);

	int stranger = socket(AF_INET, SOCK_STREAM, 0);
	int yes = 1;
	setsockopt(stranger, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
	a.sin_port = htons((uint16_t)port);
	assert_int_equal(bind(stranger, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(stranger, 8), 0);
	assert_int_equal(tunnel_listen(port, why, sizeof(why)), -1);
	assert_non_null(strstr(why, "already in use"));
	close(stranger);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_prepare_renders_conf_and_rewrites_only_on_change),
	    cmocka_unit_test(test_prepare_errors_name_the_file),
	    cmocka_unit_test(test_argv_runs_stunnel_on_the_rendered_conf),
	    cmocka_unit_test(test_argv_env_split_really_execs),
	    cmocka_unit_test(test_probe_table),
	    cmocka_unit_test(test_probe_refused_port_says_refused),
	    cmocka_unit_test(test_probe_without_tunnel_is_not_configured),
	    cmocka_unit_test(test_listen_shares_the_port_and_refuses_a_stranger),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
