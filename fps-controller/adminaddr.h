/*
 * adminaddr: where this instance's admin endpoints listen, for the probes and commands of
 * its own pod. During a rolling update two instances share the node's 127.0.0.1
 * (hostNetwork): the second one takes --admin-spare while the first holds --admin, each
 * writes the address it bound, with an id of its own, to <state>/admin.address, and every
 * admin answer carries that id (X-FPS-Instance), so that a probe or command reading the file
 * never takes another instance's answer for its own (docs/operations.md, "Two instances on
 * one node: which admin address").
 */
#ifndef FPS_ADMINADDR_H
#define FPS_ADMINADDR_H

#include <stddef.h>

#include "err.h"

#define ADMINADDR_FILE   "admin.address"
#define ADMINADDR_HEADER "X-FPS-Instance"

/* Starts the admin server on addr:*port, or on spare (ADDR:PORT, may be NULL) when that
 * address is in use; addr and *port then say where it listens. Writes
 * <state_dir>/admin.address. -1 with e set when neither can be bound. */
int adminaddr_start(const char *state_dir, char *addr, size_t alen, int *port, const char *spare, struct fps_err *e);
/* This instance's id ("" before adminaddr_start): the value of the X-FPS-Instance header. */
const char *adminaddr_instance(void);
/* The address and id written in <state_dir>/admin.address; -1 with why when there is none. */
int adminaddr_read(const char *state_dir, char *admin, size_t alen, char *id, size_t idlen, char *why, size_t wlen);
/* "ADDR:PORT" (an IPv6 address in brackets) into its parts; -1 when it is not one. */
int adminaddr_split(const char *spec, char *addr, size_t alen, int *port);

#endif
