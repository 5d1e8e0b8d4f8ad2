/*
 * adminclient: HTTP/1.0 GET against the admin port (libmicrohttpd answers 1.0 without
 * chunking and closes), bounded in time and size.
 */
#include "adminclient.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "adminaddr.h"
#include "fsio.h"
#include "net.h"

#define ADMINCLIENT_MAX_BODY (8u << 20)

/* The instance whose answers count (adminclient_expect_instance); "" = any. */
static char ac_expected[64];

void adminclient_expect_instance(const char *id)
{
	snprintf(ac_expected, sizeof(ac_expected), "%s", id ? id : "");
}

/* Whether the header block head (status line and headers, NUL-terminated) carries
 * X-FPS-Instance: ac_expected. */
static bool ac_instance_ok(const char *head)
{
	if (ac_expected[0] == '\0')
		return true;
	const size_t hl = strlen(ADMINADDR_HEADER);
	for (const char *p = strstr(head, "\r\n"); p != NULL; p = strstr(p + 2, "\r\n")) {
		const char *h = p + 2;
		if (strncasecmp(h, ADMINADDR_HEADER, hl) != 0 || h[hl] != ':')
			continue;
		h += hl + 1;
		while (*h == ' ' || *h == '\t')
			h++;
		size_t n = strlen(ac_expected);
		return strncmp(h, ac_expected, n) == 0 && (h[n] == '\r' || h[n] == ' ' || h[n] == '\0');
	}
	return false;
}

static int ac_split(const char *admin, char *host, size_t hlen, char *port, size_t plen)
{
	const char *colon = strrchr(admin, ':');
	if (colon == NULL || colon[1] == '\0')
		return -1;
	size_t n = (size_t)(colon - admin);
	const char *h = admin;
	if (n >= 2 && h[0] == '[' && h[n - 1] == ']') {
		h++;
		n -= 2;
	}
	if (n == 0 || n >= hlen || strlen(colon + 1) >= plen)
		return -1;
	memcpy(host, h, n);
	host[n] = '\0';
	snprintf(port, plen, "%s", colon + 1);
	return 0;
}

static int ac_wait(int fd, short events, long long deadline)
{
	return fsio_wait_fd(fd, events, deadline) > 0 ? 0 : -1;
}

int adminclient_get(const char *admin, const char *path, int timeout_ms, char **body, char *err, size_t errlen)
{
	return adminclient_request(admin, "GET", path, timeout_ms, body, err, errlen);
}

int adminclient_request(const char *admin, const char *method, const char *path, int timeout_ms, char **body, char *err,
                        size_t errlen)
{
	*body = NULL;
	char host[128], port[16];
	if (ac_split(admin, host, sizeof(host), port, sizeof(port)) < 0) {
		snprintf(err, errlen, "admin address '%s' is not ADDR:PORT", admin);
		return -1;
	}
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV};
	struct addrinfo *ai = NULL;
	if (getaddrinfo(host, port, &hints, &ai) != 0 || ai == NULL) {
		snprintf(err, errlen, "admin address '%s' is not a numeric ADDR:PORT", admin);
		return -1;
	}
	long long deadline = fsio_mono_ms() + timeout_ms;
	int fd, en, rc = -1;
	char *buf = NULL;
	enum net_result nr = net_connect(ai->ai_addr, ai->ai_addrlen, deadline, &fd, &en);
	if (nr == NET_SOCKET)
		snprintf(err, errlen, "socket: %s", strerror(en));
	else if (nr == NET_CONNECT)
		snprintf(err, errlen, "cannot connect to %s: %s", admin, strerror(en));
	else if (nr == NET_TIMEOUT)
		snprintf(err, errlen, "cannot connect to %s: timed out", admin);
	else if (nr == NET_FAILED)
		snprintf(err, errlen, "cannot connect to %s: %s (is the controller running? --admin ADDR:PORT)", admin,
		         strerror(en));
	if (nr != NET_OK)
		goto out;
	char req[2048];
	int rl =
	    snprintf(req, sizeof(req), "%s %s HTTP/1.0\r\nHost: %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
	             method, path, host);
	if (rl < 0 || (size_t)rl >= sizeof(req) || write(fd, req, (size_t)rl) != rl) {
		snprintf(err, errlen, "cannot send the request to %s", admin);
		goto out;
	}
	size_t len = 0, cap = 65536;
	buf = malloc(cap + 1);
	if (buf == NULL)
		goto out;
	for (;;) {
		if (ac_wait(fd, POLLIN, deadline) < 0) {
			snprintf(err, errlen, "%s did not answer in time", admin);
			goto out;
		}
		if (len == cap) {
			if (cap >= ADMINCLIENT_MAX_BODY) {
				snprintf(err, errlen, "answer from %s too large", admin);
				goto out;
			}
			char *nb = realloc(buf, cap * 2 + 1);
			if (nb == NULL)
				goto out;
			buf = nb;
			cap *= 2;
		}
		ssize_t n = read(fd, buf + len, cap - len);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n < 0) {
			snprintf(err, errlen, "reading from %s: %s", admin, strerror(errno));
			goto out;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	buf[len] = '\0';
	int status = 0;
	char *sep = strstr(buf, "\r\n\r\n");
	if (sscanf(buf, "HTTP/%*d.%*d %d", &status) != 1 || sep == NULL) {
		snprintf(err, errlen, "%s did not answer HTTP", admin);
		goto out;
	}
	sep[2] = '\0'; /* the headers end with the last one's CRLF */
	if (!ac_instance_ok(buf)) {
		snprintf(err, errlen,
		         "%s is answered by another FPS instance than the one whose " ADMINADDR_FILE
		         " names it (that one has stopped, or not started yet)",
		         admin);
		goto out;
	}
	sep += 4;
	memmove(buf, sep, strlen(sep) + 1);
	*body = buf;
	buf = NULL;
	rc = status;
out:
	free(buf);
	if (fd >= 0)
		close(fd);
	freeaddrinfo(ai);
	return rc;
}

int adminclient_inputs(const char *admin, char dirs[3][1024], char *err, size_t errlen)
{
	char *body = NULL;
	int code = adminclient_get(admin, "/status", 10000, &body, err, errlen);
	if (code < 0)
		return -1;
	cJSON *root = code == 200 ? cJSON_Parse(body) : NULL;
	free(body);
	const cJSON *in = cJSON_GetObjectItemCaseSensitive(root, "inputs");
	static const char *const names[3] = {"config_dir", "secrets_dir", "state_dir"};
	int rc = 0;
	for (int i = 0; i < 3; i++) {
		const cJSON *v = cJSON_GetObjectItemCaseSensitive(in, names[i]);
		dirs[i][0] = '\0';
		if (cJSON_IsString(v) && strlen(v->valuestring) < sizeof(dirs[i]))
			snprintf(dirs[i], sizeof(dirs[i]), "%s", v->valuestring);
	}
	if (dirs[0][0] == '\0') {
		snprintf(err, errlen, "http://%s/status (answered %d) names no inputs.config_dir", admin, code);
		rc = -1;
	}
	cJSON_Delete(root);
	return rc;
}
