/*
 * clock: one HEAD through a proxy we trust, and the Date it answers with (see clock.h).
 */
#include "clock.h"

#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "fsio.h"
#include "net.h"

static double clk_wall(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int clock_parse_http_date(const char *s, double *unix_time)
{
	static const char *const fmts[] = {"%a, %d %b %Y %H:%M:%S GMT", "%A, %d-%b-%y %H:%M:%S GMT",
	                                   "%a %b %e %H:%M:%S %Y"};
	while (*s == ' ' || *s == '\t')
		s++;
	for (size_t i = 0; i < sizeof(fmts) / sizeof(fmts[0]); i++) {
		struct tm tm;
		memset(&tm, 0, sizeof(tm));
		const char *end = strptime(s, fmts[i], &tm);
		if (end == NULL)
			continue;
		while (*end == ' ' || *end == '\t' || *end == '\r')
			end++;
		if (*end != '\0')
			continue;
		time_t t = timegm(&tm);
		if (t == (time_t)-1)
			continue;
		*unix_time = (double)t;
		return 0;
	}
	return -1;
}

static int clk_wait(int fd, short ev, long long deadline)
{
	return fsio_wait_fd(fd, ev, deadline) > 0 ? 0 : -1;
}

int clock_ask(const char *host, int port, int timeout_ms, double *skew, char *date, size_t datelen, char *err,
              size_t errlen)
{
	char ps[16];
	snprintf(ps, sizeof(ps), "%d", port);
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
	int gai = getaddrinfo(host, ps, &hints, &ai);
	if (gai != 0) {
		snprintf(err, errlen, "cannot resolve %s: %s", host, gai_strerror(gai));
		return -1;
	}
	long long deadline = fsio_mono_ms() + timeout_ms;
	int rc = -1, fd, en;
	enum net_result nr = net_connect(ai->ai_addr, ai->ai_addrlen, deadline, &fd, &en);
	if (nr == NET_SOCKET) {
		snprintf(err, errlen, "socket: %s", strerror(en));
		goto out;
	}
	if (nr != NET_OK) {
		snprintf(err, errlen, "cannot connect to %s:%d: %s", host, port, en ? strerror(en) : "timed out");
		goto out;
	}
	static const char req[] = "HEAD http://" CLOCK_CHECK_HOST "/ HTTP/1.0\r\nHost: " CLOCK_CHECK_HOST "\r\n\r\n";
	double t0 = clk_wall();
	if (write(fd, req, sizeof(req) - 1) != (ssize_t)(sizeof(req) - 1)) {
		snprintf(err, errlen, "cannot send to %s:%d", host, port);
		goto out;
	}
	char head[8192] = "";
	size_t len = 0;
	while (len < sizeof(head) - 1 && !strstr(head, "\r\n\r\n")) {
		if (clk_wait(fd, POLLIN, deadline) < 0) {
			snprintf(err, errlen, "%s:%d did not answer in %d ms", host, port, timeout_ms);
			goto out;
		}
		ssize_t n = read(fd, head + len, sizeof(head) - 1 - len);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
		head[len] = '\0';
	}
	head[len] = '\0';
	double t1 = clk_wall();
	if (strncmp(head, "HTTP/", 5) != 0) {
		snprintf(err, errlen, "%s:%d did not answer HTTP", host, port);
		goto out;
	}
	for (char *line = strstr(head, "\r\n"); line; line = strstr(line + 2, "\r\n")) {
		if (strncasecmp(line + 2, "Date:", 5) != 0)
			continue;
		char val[128];
		size_t n = strcspn(line + 7, "\r\n");
		snprintf(val, sizeof(val), "%.*s", (int)(n < sizeof(val) - 1 ? n : sizeof(val) - 1), line + 7);
		double ref;
		if (clock_parse_http_date(val, &ref) < 0) {
			snprintf(err, errlen, "%s:%d sent an unreadable Date: %.100s", host, port, val);
			goto out;
		}
		char *v = val;
		while (*v == ' ')
			v++;
		snprintf(date, datelen, "%s", v);
		/* The Date was stamped between our send and receive; it has a one-second resolution. */
		double est = (t0 + t1) / 2 - ref - 0.5;
		*skew = (double)(long long)(est >= 0 ? est + 0.5 : est - 0.5);
		rc = 0;
		goto out;
	}
	snprintf(err, errlen, "%s:%d answered without a Date header", host, port);
out:
	if (fd >= 0)
		close(fd);
	freeaddrinfo(ai);
	return rc;
}

void clock_check(const struct fps_config *c, struct clock_check *out)
{
	memset(out, 0, sizeof(*out));
	out->checked_unix = clk_wall();
	char err[2][320] = {"", ""};
	if (c->has_tunnel) {
		snprintf(out->reference, sizeof(out->reference), "tunnel 127.0.0.1:%d (%s)", c->tunnel_local_port,
		         c->tunnel_server);
		if (clock_ask("127.0.0.1", c->tunnel_local_port, CLOCK_TIMEOUT_MS, &out->skew_seconds, out->ref_date,
		              sizeof(out->ref_date), err[0], sizeof(err[0])) == 0)
			goto have;
	}
	if (c->has_upstream) {
		snprintf(out->reference, sizeof(out->reference), "upstream %s:%d", c->upstream_host, c->upstream_port);
		if (clock_ask(c->upstream_host, c->upstream_port, CLOCK_TIMEOUT_MS, &out->skew_seconds, out->ref_date,
		              sizeof(out->ref_date), err[1], sizeof(err[1])) == 0)
			goto have;
	}
	out->reference[0] = '\0';
	if (!c->has_tunnel && !c->has_upstream)
		snprintf(out->error, sizeof(out->error),
		         "no reference: neither a tunnel nor an upstream is configured");
	else
		snprintf(out->error, sizeof(out->error), "%s%s%s", err[0], err[0][0] && err[1][0] ? "; " : "", err[1]);
	return;
have:
	out->have = true;
	out->ok = fabs(out->skew_seconds) <= CLOCK_MAX_SKEW_S;
}
