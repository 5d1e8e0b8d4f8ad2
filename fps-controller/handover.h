/*
 * handover: an FPS Squid joining and leaving the agents' port without an agent noticing.
 * A second instance's Squid joins the port of a running one (Squid binds it with
 * SO_REUSEPORT: "worker-queues"), and the first one leaves it without a signal: the
 * controller takes Squid's listening sockets (pidfd_getfd) and shuts them down. Squid then
 * answers every request still on its connections with "Connection: close" and closes each
 * connection after its answer (client_side_reply.cc: "listening port closed"), so no
 * keep-alive connection is closed under a request. docs/operations.md, "Handing over".
 */
#ifndef FPS_HANDOVER_H
#define FPS_HANDOVER_H

#include <stddef.h>
#include <sys/types.h>

/* Whether addr:port, which cannot be bound exclusively, is held only by the Squid of an
 * FPS instance (program squid, a command line naming a .../current/squid.conf, running as
 * uid) and can be joined with SO_REUSEPORT: 1, with who = "pid N (squid)"; 0 when a
 * stranger holds it (or nothing), and the port is then reported as taken. */
int ho_port_joinable(const char *addr, int port, uid_t uid, char *who, size_t len);

/* Stops the Squid at pid (its SMP workers, its children, included) accepting on port:
 * new connections no longer reach it. Connections that completed their handshake but wait
 * in its accept queue are kept: with net.ipv4.tcp_migrate_req=1 and another listener on
 * the port the kernel moves them there; otherwise new SYNs to this Squid's sockets are
 * dropped (the client retries in 1 s, and meets the other listener or a refusal) until
 * Squid has accepted what is queued (at most 1 s). Returns the number of listening
 * sockets shut down (0: none found), or -1 with why (no permission to take the sockets:
 * pidfd_getfd needs ptrace rights over Squid). */
int ho_stop_accepting(pid_t pid, int port, char *why, size_t len);

/* Agents' connections on local port held by the Squid at pid (workers included). */
int ho_clients(pid_t pid, int port);

/* net.ipv4.tcp_migrate_req of our network namespace: 1, 0, or -1 when unknown. */
int ho_migrate_req(void);

#endif
