/*
 * procsock: the TCP sockets on a port and the processes holding them, as /proc shows them
 * for this network namespace (/proc/net/tcp and tcp6, /proc/PID/fd). Preflight asks who holds
 * the proxy port; handover asks which listeners and clients belong to an instance.
 */
#ifndef FPS_PROCSOCK_H
#define FPS_PROCSOCK_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* TCP states as /proc/net/tcp prints them (the kernel's include/net/tcp_states.h). */
enum { PS_ESTABLISHED = 0x01, PS_CLOSE_WAIT = 0x08, PS_LISTEN = 0x0A };

struct ps_sock {
	unsigned long ino;
	unsigned state;
	unsigned long rxq; /* LISTEN: connections waiting in the accept queue */
	unsigned uid;      /* the socket's owner (/proc/net/tcp's uid column) */
};

/* Calls fn for every TCP socket on local port (IPv4, then IPv6) until fn returns false. */
void ps_port_each(int port, bool (*fn)(const struct ps_sock *s, void *arg), void *arg);

/* The sockets on local port in the given states (bit 1 << state), at most max. */
size_t ps_port_sockets(int port, unsigned states, struct ps_sock *out, size_t max);

/* Calls fn for every process in /proc until fn returns false. */
void ps_each_pid(bool (*fn)(pid_t pid, void *arg), void *arg);

/* Calls fn for every socket descriptor of pid until fn returns false. */
void ps_each_socket_fd(pid_t pid, bool (*fn)(pid_t pid, int fd, unsigned long ino, void *arg), void *arg);

#endif
