/*
 * tunnel: the stunnel client that carries `via: tunnel` routes to the cloud
 * (docs/configuration.md: tunnel, secrets). Renders its config from stunnel-conf/, copies the
 * tunnel certificates from the Secret where stunnel reads them, and checks the
 * tunnel server with the same verification stunnel uses (reporting likely TLS
 * interception with the issuer it saw).
 */
#ifndef FPS_TUNNEL_H
#define FPS_TUNNEL_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "config.h"
#include "err.h"
#include "status.h"

struct tunnel_paths {
	const char *templates_dir; /* stunnel-conf/ */
	const char *dir;           /* <state>/tunnel: stunnel.conf, certificate copies, pid, log */
	const char *secrets_dir;   /* the Secret mount (tunnel-ca.pem, tunnel-client.pem/.key) */
};

/* Writes <dir>/stunnel.conf and the certificate copies. *changed says whether any
 * byte differs from what was there (then a running stunnel needs SIGHUP). */
int tunnel_prepare(const struct fps_config *c, const struct tunnel_paths *p, bool *changed, struct fps_err *e);
/* What tunnel_prepare (so `run`) and `check` judge of the tunnel's secrets before stunnel sees
 * them: tunnel-ca.pem present; each file one OpenSSL loads (certificates in tunnel-ca.pem and
 * tunnel-client.pem, a private key in tunnel-client.key); the client certificate and key both
 * or neither, and the key the certificate's. Contents are never part of an error. */
int tunnel_check_secrets(const char *secrets_dir, struct fps_err *e);
/* argv that runs stunnel in the foreground on <dir>/stunnel.conf (NULL-terminated, <= 4 slots). */
/* The stunnel client's listening socket on 127.0.0.1:port, bound here with SO_REUSEPORT and
 * handed to stunnel as a socket-activated listener (stunnel 5.68 has no SO_REUSEPORT
 * option of its own, but takes a listener the systemd way: sup's listen_fd). A second FPS
 * instance's stunnel client then shares the port with the first one's during a handover.
 * The port may be free or held by another instance's (ho_tunnel_port_joinable); anything
 * else is refused. Returns the fd, or -1 with why naming the holder. */
int tunnel_listen(int port, char *why, size_t len);
/* Before the stunnel client at pid is stopped at the end of a drain: it takes no new
 * connection, and what waits in its accept queue is accepted (handover.h,
 * ho_stop_queueing), so its exit resets no connection of a second instance's Squid. */
void tunnel_stop_accepting(const struct fps_config *c, pid_t pid);
void tunnel_argv(const struct tunnel_paths *p, char *argv[4]);
/* One TLS handshake to the tunnel server (address or server name, port), verified
 * against the CA with checkHost semantics; fills st. Blocking, bounded by timeout_ms. */
void tunnel_probe(const struct fps_config *c, const struct tunnel_paths *p, int timeout_ms, struct status_path *st);

#endif
