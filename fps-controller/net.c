/*
 * net: one TCP connect with a deadline (see net.h).
 */
#include "net.h"

#include <errno.h>
#include <poll.h>
#include <unistd.h>

#include "fsio.h"

enum net_result net_connect(const struct sockaddr *sa, socklen_t len, long long deadline, int *fd, int *err)
{
	*fd = -1;
	*err = 0;
	int s = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (s < 0) {
		*err = errno;
		return NET_SOCKET;
	}
	if (connect(s, sa, len) < 0) {
		if (errno != EINPROGRESS) {
			*err = errno;
			close(s);
			return NET_CONNECT;
		}
		/* Polled at least once: a connection already made is not refused for a deadline
		 * that the caller's resolver used up. */
		int w;
		for (;;) {
			long long left = deadline - fsio_mono_ms();
			struct pollfd p = {.fd = s, .events = POLLOUT};
			w = poll(&p, 1, left > 0 ? (int)left : 0);
			if (w >= 0 || errno != EINTR)
				break;
		}
		if (w == 0) {
			close(s);
			return NET_TIMEOUT;
		}
		int soerr = 0;
		socklen_t sl = sizeof(soerr);
		if (w < 0 || getsockopt(s, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0 || soerr != 0) {
			*err = soerr ? soerr : errno;
			close(s);
			return NET_FAILED;
		}
	}
	*fd = s;
	return NET_OK;
}
