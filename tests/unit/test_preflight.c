/* preflight: the cache.log line that says why Squid stopped, a taken port named with
 * the process that holds it, and the clients still connected to a port. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cmocka.h>

#include "preflight.h"

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static void test_first_error_line(void **state)
{
	(void)state;
	char path[] = "/tmp/fps-test-preflight-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	close(fd);
	static const struct {
		const char *log;
		long long offset;
		const char *want;
	} cases[] = {
	    {"2026/12/01 10:00:00| Starting\n2026/12/01 10:00:00| ERROR: a\n2026/12/01 10:00:00| FATAL: b\n", 0,
	     "FATAL: b"},
	    {"2026/12/01 10:00:00| ERROR: only an error\n", 0, "ERROR: only an error"},
	    {"2026/12/01 10:00:00| all is well\n", 0, ""},
	    {"2026/12/01 10:00:00| FATAL: old\n2026/12/01 10:00:01| FATAL: new\n", 32, "FATAL: new"},
	    {"kid1| FATAL: with \x1b[2J escape\r\n", 0, "FATAL: with ?[2J escape?"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		write_file(path, cases[i].log);
		char line[256];
		pf_first_error_line(path, cases[i].offset, line, sizeof(line));
		assert_string_equal(line, cases[i].want);
	}
	char line[8];
	pf_first_error_line("/nonexistent/cache.log", 0, line, sizeof(line));
	assert_string_equal(line, "");
	unlink(path);
}

static void test_port_taken_names_the_holder(void **state)
{
	(void)state;
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(fd >= 0);
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(listen(fd, 1), 0);
	socklen_t sl = sizeof(sin);
	getsockname(fd, (struct sockaddr *)&sin, &sl);
	int port = ntohs(sin.sin_port);

	char why[256], want[128];
	assert_int_equal(pf_port_free("127.0.0.1", port, why, sizeof(why)), -1);
	snprintf(want, sizeof(want), "127.0.0.1:%d is already in use by pid %d (", port, (int)getpid());
	assert_non_null(strstr(why, want));
	close(fd);
	assert_int_equal(pf_port_free("127.0.0.1", port, why, sizeof(why)), 0);
	assert_string_equal(why, "");
	/* Not a literal: left to Squid. An address not on this host: said as such. */
	assert_int_equal(pf_port_free("proxy.example", port, why, sizeof(why)), 0);
	assert_int_equal(pf_port_free("192.0.2.1", port, why, sizeof(why)), -1);
	assert_non_null(strstr(why, "cannot bind 192.0.2.1:"));
}

/* A listener with two accepted clients, one of which then half-closes (CLOSE_WAIT on the
 * server side: still a client the server may be writing to); listening sockets and the
 * clients' own ends (on other ports) do not count. */
static void test_port_clients_counts_the_server_side_of_each_connection(void **state)
{
	(void)state;
	int lfd = socket(AF_INET6, SOCK_STREAM, 0); /* v6 socket: tcp6 is read too */
	assert_true(lfd >= 0);
	struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
	assert_int_equal(bind(lfd, (struct sockaddr *)&sin6, sizeof(sin6)), 0);
	assert_int_equal(listen(lfd, 4), 0);
	socklen_t sl = sizeof(sin6);
	getsockname(lfd, (struct sockaddr *)&sin6, &sl);
	int port = ntohs(sin6.sin6_port);
	assert_int_equal(pf_port_clients(port), 0);

	int c[2], s[2];
	for (int i = 0; i < 2; i++) {
		c[i] = socket(AF_INET6, SOCK_STREAM, 0);
		assert_int_equal(connect(c[i], (struct sockaddr *)&sin6, sizeof(sin6)), 0);
		s[i] = accept(lfd, NULL, NULL);
		assert_true(s[i] >= 0);
	}
	assert_int_equal(pf_port_clients(port), 2);
	shutdown(c[0], SHUT_WR);
	char b;
	assert_int_equal(read(s[0], &b, 1), 0); /* the FIN has arrived: CLOSE_WAIT */
	assert_int_equal(pf_port_clients(port), 2);
	for (int i = 0; i < 2; i++) {
		close(s[i]);
		close(c[i]);
	}
	assert_int_equal(pf_port_clients(port), 0);
	close(lfd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_first_error_line),
	    cmocka_unit_test(test_port_taken_names_the_holder),
	    cmocka_unit_test(test_port_clients_counts_the_server_side_of_each_connection),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
