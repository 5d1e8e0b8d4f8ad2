/*
 * purge: PURGE to Squid's controller-only port (purge.h).
 */
#include "purge.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "adminclient.h"
#include "fsio.h"
#include "net.h"

static atomic_ulong purge_counted[PURGE_RESULTS];

const char *purge_result_name(enum purge_result r)
{
	static const char *const names[PURGE_RESULTS] = {"purged", "absent", "failed"};
	return r < PURGE_RESULTS ? names[r] : "failed";
}

void purge_counts(unsigned long out[PURGE_RESULTS])
{
	for (int i = 0; i < PURGE_RESULTS; i++)
		out[i] = atomic_load(&purge_counted[i]);
}

int purge_url_ok(const char *url)
{
	if (url == NULL || strncmp(url, "http://", 7) != 0 || url[7] == '\0' || url[7] == '/')
		return 0;
	size_t n = strlen(url);
	if (n > PURGE_URL_MAX)
		return 0;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)url[i] <= 0x20 || (unsigned char)url[i] >= 0x7f)
			return 0;
	/* No user:password@ in the authority: the URL is logged. */
	size_t auth_len = strcspn(url + 7, "/?#");
	return memchr(url + 7, '@', auth_len) == NULL;
}

/* One request to Squid's controller-only port; the status of its answer, or -1 with msg. */
static int mgr_request(int mgr_port, const char *method, const char *url, const char *headers, int timeout_ms,
                       char *msg, size_t len)
{
	if (mgr_port <= 0 || mgr_port > 65535) {
		snprintf(msg, len, "Squid's cache-manager port is not known yet");
		return -1;
	}
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)mgr_port)};
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	long long deadline = fsio_mono_ms() + timeout_ms;
	int fd, en, status = -1;
	char buf[512];
	size_t got = 0;
	enum net_result nr = net_connect((struct sockaddr *)&sa, sizeof(sa), deadline, &fd, &en);
	if (nr == NET_SOCKET) {
		snprintf(msg, len, "socket: %s", strerror(en));
		return -1;
	}
	if (nr == NET_TIMEOUT) {
		snprintf(msg, len, "Squid did not accept on 127.0.0.1:%d", mgr_port);
		goto out;
	}
	if (nr != NET_OK) {
		snprintf(msg, len, "cannot reach Squid on 127.0.0.1:%d: %s", mgr_port, strerror(en));
		goto out;
	}
	char req[PURGE_URL_MAX + 256];
	int rl =
	    snprintf(req, sizeof(req), "%s %s HTTP/1.0\r\nUser-Agent: fps-controller\r\n%s\r\n", method, url, headers);
	if (rl < 0 || (size_t)rl >= sizeof(req) || write(fd, req, (size_t)rl) != rl) {
		snprintf(msg, len, "cannot send %s to Squid: %s", method, strerror(errno));
		goto out;
	}
	while (got < sizeof(buf) - 1 && memchr(buf, '\n', got) == NULL) {
		if (fsio_wait_fd(fd, POLLIN, deadline) <= 0) {
			snprintf(msg, len, "Squid did not answer the %s in time", method);
			goto out;
		}
		ssize_t n = read(fd, buf + got, sizeof(buf) - 1 - got);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	buf[got] = '\0';
	if (sscanf(buf, "HTTP/%*d.%*d %d", &status) != 1) {
		snprintf(msg, len, "Squid did not answer the %s with HTTP", method);
		status = -1;
	}
out:
	if (fd >= 0)
		close(fd);
	return status;
}

int purge_probe(int mgr_port, const char *url, int timeout_ms, char *msg, size_t len)
{
	if (!purge_url_ok(url)) {
		snprintf(msg, len, "not an absolute http:// URL (HTTPS through CONNECT is never kept)");
		return -1;
	}
	/* only-if-cached: Squid answers from the cache or 504, and never forwards (nor could it
	 * from this port: squid.conf gives it no path out). */
	int status = mgr_request(mgr_port, "HEAD", url, "Cache-Control: only-if-cached\r\n", timeout_ms, msg, len);
	if (status == 200) {
		snprintf(msg, len, "kept (fresh: an agent gets it from the cache)");
		return 1;
	}
	if (status == 504) {
		snprintf(msg, len, "not kept (or stale: the next agent fetches it)");
		return 0;
	}
	if (status > 0)
		snprintf(msg, len, "Squid answered the cache lookup with %d", status);
	return -1;
}

static enum purge_result purge_do(int mgr_port, const char *url, int timeout_ms, char *msg, size_t len)
{
	if (!purge_url_ok(url)) {
		snprintf(msg, len, "not an absolute http:// URL (HTTPS through CONNECT is never kept)");
		return PURGE_FAILED;
	}
	int status = mgr_request(mgr_port, "PURGE", url, "", timeout_ms, msg, len);
	if (status == 200) {
		snprintf(msg, len, "purged");
		return PURGE_PURGED;
	}
	if (status == 404) {
		snprintf(msg, len, "not in the cache");
		return PURGE_ABSENT;
	}
	if (status > 0)
		snprintf(msg, len, "Squid answered the PURGE with %d", status);
	return PURGE_FAILED;
}

enum purge_result purge_url(int mgr_port, const char *url, int timeout_ms, char *msg, size_t len)
{
	enum purge_result r = purge_do(mgr_port, url, timeout_ms, msg, len);
	atomic_fetch_add(&purge_counted[r], 1);
	return r;
}

int purge_cli(const char *admin, const char *url, FILE *out)
{
	if (url == NULL) {
		fprintf(stderr, "fps-controller purge: give the URL to remove (http://host[:port]/path)\n");
		return 2;
	}
	if (!purge_url_ok(url)) {
		fprintf(stderr,
		        "fps-controller purge: '%s' is not an absolute http:// URL without user:password@ (HTTPS "
		        "through CONNECT is never kept)\n",
		        url);
		return 1;
	}
	char path[3 * PURGE_URL_MAX + 32];
	size_t n = (size_t)snprintf(path, sizeof(path), "/purge?url=");
	for (const unsigned char *p = (const unsigned char *)url; *p && n + 4 < sizeof(path); p++) {
		if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
		    strchr("-._~", *p))
			path[n++] = (char)*p;
		else
			n += (size_t)snprintf(path + n, sizeof(path) - n, "%%%02X", *p);
	}
	path[n] = '\0';
	char *body = NULL, err[256];
	int status =
	    adminclient_request(admin ? admin : ADMINCLIENT_DEFAULT, "POST", path, 10000, &body, err, sizeof(err));
	if (status < 0) {
		fprintf(stderr, "fps-controller purge: %s\n", err);
		return 3;
	}
	fputs(body ? body : "", out);
	free(body);
	return status == 200 ? 0 : status == 404 ? 1 : 3;
}

int purge_url_host(const char *url, char *host, size_t hostlen, int *port)
{
	if (!purge_url_ok(url))
		return -1;
	const char *a = url + 7;
	size_t n = strcspn(a, "/?#");
	char auth[300];
	if (n == 0 || n >= sizeof(auth))
		return -1;
	memcpy(auth, a, n);
	auth[n] = '\0';
	*port = 80;
	char *colon = auth[0] == '[' ? strstr(auth, "]:") : strrchr(auth, ':');
	if (colon) {
		char *p = auth[0] == '[' ? colon + 2 : colon + 1;
		char *end;
		long v = strtol(p, &end, 10);
		if (end == p || *end || v < 1 || v > 65535)
			return -1;
		*port = (int)v;
		*(auth[0] == '[' ? colon + 1 : colon) = '\0';
	}
	const char *h = auth;
	size_t hl = strlen(h);
	if (h[0] == '[' && hl > 2 && h[hl - 1] == ']') {
		h++;
		hl -= 2;
	}
	if (hl == 0 || hl >= hostlen)
		return -1;
	memcpy(host, h, hl);
	host[hl] = '\0';
	return 0;
}
