/*
 * net: one TCP connect with a deadline, for every connection the controller and its commands
 * open (the health probe, the prober, the clock check, the admin client, the cache-manager
 * scrape, purge, the tunnel probe, diagnose). Each caller words a failure its own way.
 */
#ifndef FPS_NET_H
#define FPS_NET_H

#include <sys/socket.h>

enum net_result {
	NET_OK,
	NET_SOCKET,  /* socket() failed */
	NET_CONNECT, /* connect() failed at once */
	NET_FAILED,  /* the connection failed while it was being set up (SO_ERROR, poll) */
	NET_TIMEOUT, /* the deadline passed first */
};

/* Connects a new non-blocking, close-on-exec TCP socket to sa before deadline (fsio_mono_ms
 * clock). NET_OK: *fd is connected (and still non-blocking); otherwise *fd is -1 and *err the
 * errno of the failure (0 for NET_TIMEOUT). */
enum net_result net_connect(const struct sockaddr *sa, socklen_t len, long long deadline, int *fd, int *err);

#endif
