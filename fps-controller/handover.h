/*
 * handover: an FPS Squid joining and leaving the agents' port without an agent noticing.
 * A second instance's Squid joins the port of a running one (Squid binds it with
 * SO_REUSEPORT: "worker-queues"), and the first one leaves it in two steps:
 *   1. the controller takes Squid's listening sockets (pidfd_getfd) and shuts them down:
 *      no new connection reaches this Squid, none waiting in its accept queue is lost;
 *   2. Squid re-reads a squid.conf without the agents' http_port lines (ho_drain_conf):
 *      first its agents' input is paused (ho_pause_input) until nothing is waiting for a
 *      helper answer: a reconfigure restarts the helpers and Squid 5.7 answers lookups
 *      still queued for the old ones as failed (helper.cc dropQueued: a false 403);
 *      its reconfigure closes the old port objects, and Squid 5.7 then answers every
 *      request on a connection of a closed port with "Connection: close" and closes the
 *      connection after that answer (client_side_reply.cc, "listening port closed"), so
 *      no keep-alive connection is closed under a request and nothing gets a 503.
 * docs/operations.md, "Stopping" and "Handing over to a second instance".
 */
#ifndef FPS_HANDOVER_H
#define FPS_HANDOVER_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* Whether addr:port, which cannot be bound exclusively, is held only by the Squid of an
 * FPS instance (program squid, a command line naming a .../current/squid.conf, running as
 * uid) and can be joined with SO_REUSEPORT: 1, with who = "pid N (squid)"; 0 when a
 * stranger holds it (or nothing), and the port is then reported as taken. */
int ho_port_joinable(const char *addr, int port, uid_t uid, char *who, size_t len);
/* The same for the stunnel client's port 127.0.0.1:port: held only by another FPS
 * instance's controller or stunnel running as our uid (tunnel_listen binds it with
 * SO_REUSEPORT). A listener in another pid namespace (a second pod on the node) cannot be
 * looked at: it is taken for another instance when the kernel lets a SO_REUSEPORT bind
 * join it (same uid, every socket with the option), for this port and the proxy port. */
int ho_tunnel_port_joinable(int port, char *who, size_t len);

/* Stops the Squid at pid (its SMP workers, its children, included) accepting on port:
 * new connections no longer reach it. Connections that completed their handshake but wait
 * in its accept queue are kept: with net.ipv4.tcp_migrate_req=1 and another listener on
 * the port the kernel moves them there; otherwise new SYNs to this Squid's sockets are
 * dropped (the client retries in 1 s, and meets the other listener or a refusal) until
 * Squid has accepted what is queued (at most 3 s). Returns the number of listening
 * sockets shut down (0: none found), or -1 with why (no permission to take the sockets:
 * pidfd_getfd needs ptrace rights over Squid). */
int ho_stop_accepting(pid_t pid, int port, char *why, size_t len);

/* The same for the stunnel client at pid on its local port, before it is stopped at the
 * end of a drain: new SYNs to its listening socket are dropped until it has accepted what
 * waits in its queue (at most 3 s); the socket is not shut down (its exit closes it). A
 * second instance's Squid, whose connections the kernel spreads over both stunnels, then
 * opens no connection to this one that its exit would reset: a SYN dropped here is sent
 * again after 1 s and meets the other stunnel. Returns the sockets found, or -1 with why. */
int ho_stop_queueing(pid_t pid, int port, char *why, size_t len);

/* Agents' connections on local port held by the Squid at pid (workers included). */
int ho_clients(pid_t pid, int port);

/* squid.conf for a draining Squid: conf without the agents' http_port lines (every
 * http_port line but the controller's own "name=fps_mgr" one), with a first line saying
 * so. Returns malloc'd text; NULL when out of memory. */
char *ho_drain_conf(const char *conf);

/* The agents' connections of the Squid at pid, paused: SO_RCVLOWAT on each is raised so
 * far that a request arriving no longer makes the socket readable, so Squid reads no new
 * request while the requests it has finish. The kernel still receives and acknowledges
 * what agents send; ho_resume_input() puts SO_RCVLOWAT back to 1, which wakes Squid for
 * whatever waits. Nothing is lost, reset or sent again: agents only wait. */
struct ho_pause {
	int *fds;
	size_t n;
};
int ho_pause_input(pid_t pid, int port, struct ho_pause *p);
void ho_resume_input(struct ho_pause *p);

/* From Squid's cache-manager page "external_acl": lookups not answered yet (queued, or sent
 * and not replied), summed over helpers; -1 when the text says nothing. */
long ho_acl_in_flight(const char *page);

/* net.ipv4.tcp_migrate_req of our network namespace: 1, 0, or -1 when unknown. */
int ho_migrate_req(void);

#endif
