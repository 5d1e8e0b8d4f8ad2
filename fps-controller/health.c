/*
 * health: the Squid HTTP answer probe (see health.h).
 */
#include "health.h"

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "fsio.h"
#include "log.h"
#include "net.h"
#include "sup.h"

static struct {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	pthread_t thread;
	bool started, quit, kick;
	int notify_fd;
	char addr[64];
	int port;
	struct health_state st;
} H = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER, .notify_fd = -1};

/* One request; true when a status line came back before the deadline. */
static bool health_probe_once(const char *addr, int port, char *err, size_t errlen)
{
	char portstr[16];
	snprintf(portstr, sizeof(portstr), "%d", port);
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICHOST}, *ai = NULL;
	if (port <= 0 || getaddrinfo(addr, portstr, &hints, &ai) != 0) {
		snprintf(err, errlen, "no address to probe");
		return false;
	}
	long long deadline = sup_now_ms() + HEALTH_TIMEOUT_MS;
	bool ok = false;
	int fd, en, r;
	enum net_result nr = net_connect(ai->ai_addr, ai->ai_addrlen, deadline, &fd, &en);
	if (nr == NET_SOCKET) {
		snprintf(err, errlen, "socket: %s", strerror(en));
		goto out;
	}
	if (nr != NET_OK) {
		snprintf(err, errlen, "connect to %s:%d: %s", addr, port,
		         nr == NET_TIMEOUT ? "timed out" : strerror(en));
		goto out;
	}
	static const char req[] = "GET http://" HEALTH_PROBE_HOST "/ HTTP/1.0\r\nHost: " HEALTH_PROBE_HOST "\r\n\r\n";
	if (send(fd, req, sizeof(req) - 1, MSG_NOSIGNAL) != (ssize_t)(sizeof(req) - 1)) {
		snprintf(err, errlen, "send to %s:%d: %s", addr, port, strerror(errno));
		goto out;
	}
	char buf[16];
	size_t got = 0;
	while (got < 8) {
		r = fsio_wait_fd(fd, POLLIN, deadline);
		if (r <= 0) {
			snprintf(err, errlen, "no HTTP answer from %s:%d within %d ms", addr, port, HEALTH_TIMEOUT_MS);
			goto out;
		}
		ssize_t n = recv(fd, buf + got, sizeof(buf) - 1 - got, 0);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n <= 0) {
			snprintf(err, errlen, "%s:%d closed the connection without an answer", addr, port);
			goto out;
		}
		got += (size_t)n;
	}
	ok = memcmp(buf, "HTTP/1.", 7) == 0;
	if (!ok)
		snprintf(err, errlen, "%s:%d answered something other than HTTP", addr, port);
out:
	if (fd >= 0)
		close(fd);
	freeaddrinfo(ai);
	return ok;
}

static void *health_main(void *arg)
{
	(void)arg;
	/* Signals belong to the control loop's signalfd: a SIGCHLD taken by this thread
	 * would be lost to it. */
	sigset_t all;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL);
	pthread_mutex_lock(&H.mu);
	while (!H.quit) {
		char addr[sizeof(H.addr)];
		snprintf(addr, sizeof(addr), "%s", H.addr);
		int port = H.port;
		H.kick = false;
		pthread_mutex_unlock(&H.mu);

		char err[sizeof(H.st.error)] = "";
		bool ok = port > 0 && health_probe_once(addr, port, err, sizeof(err));
		long long now = sup_now_ms();

		pthread_mutex_lock(&H.mu);
		bool flipped = ok != H.st.answering;
		H.st.probes++;
		if (ok) {
			H.st.last_ok_ms = now;
			H.st.error[0] = '\0';
		} else {
			H.st.failures++;
			snprintf(H.st.error, sizeof(H.st.error), "%s", port > 0 ? err : "no Squid address yet");
		}
		H.st.answering = ok;
		if (flipped && H.notify_fd >= 0) {
			uint64_t one = 1;
			if (write(H.notify_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
				log_warn_errno("health: cannot wake the control loop");
		}
		struct timespec until;
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_nsec += (long)HEALTH_INTERVAL_MS * 1000000L;
		until.tv_sec += until.tv_nsec / 1000000000L;
		until.tv_nsec %= 1000000000L;
		while (!H.quit && !H.kick)
			if (pthread_cond_timedwait(&H.cv, &H.mu, &until) != 0)
				break;
	}
	pthread_mutex_unlock(&H.mu);
	return NULL;
}

int health_start(int notify_fd)
{
	pthread_mutex_lock(&H.mu);
	H.notify_fd = notify_fd;
	H.quit = false;
	H.st.since_ms = sup_now_ms();
	pthread_mutex_unlock(&H.mu);
	if (pthread_create(&H.thread, NULL, health_main, NULL) != 0)
		return -1;
	H.started = true;
	return 0;
}

void health_target(const char *addr, int port, bool reset)
{
	pthread_mutex_lock(&H.mu);
	if (reset || port != H.port || strcmp(addr, H.addr) != 0) {
		snprintf(H.addr, sizeof(H.addr), "%s", addr);
		H.port = port;
		H.st.since_ms = sup_now_ms();
		H.kick = true;
		pthread_cond_signal(&H.cv); /* probe the new target now */
	}
	pthread_mutex_unlock(&H.mu);
}

void health_get(struct health_state *out)
{
	pthread_mutex_lock(&H.mu);
	*out = H.st;
	pthread_mutex_unlock(&H.mu);
}

void health_stop(void)
{
	pthread_mutex_lock(&H.mu);
	H.quit = true;
	pthread_cond_signal(&H.cv);
	pthread_mutex_unlock(&H.mu);
	if (H.started)
		pthread_join(H.thread, NULL);
	H.started = false;
}
