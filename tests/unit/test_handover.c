/* handover: the drain configuration leaves out the agents' ports and nothing else; the
 * helper lookups in flight are read from Squid's external_acl cache-manager page. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "handover.h"

static void test_drain_conf_drops_only_the_agents_ports(void **state)
{
	(void)state;
	static const struct {
		const char *in, *want;
	} cases[] = {
	    {"http_port 127.0.0.1:8080 worker-queues\nhttp_port 127.0.0.1:8080 worker-queues\n"
	     "http_port 127.0.0.1:3999 name=fps_mgr\nworkers 2\n",
	     "http_port 127.0.0.1:3999 name=fps_mgr\nworkers 2\n"},
	    {"http_port\t[::1]:8080 worker-queues\nacl x src all\n", "acl x src all\n"},
	    /* not a directive of its own: kept */
	    {"# http_port 1.2.3.4:1\nhttp_portable on\n", "# http_port 1.2.3.4:1\nhttp_portable on\n"},
	    {"cache deny all", "cache deny all"},
	    {"http_port 127.0.0.1:8080 worker-queues", ""},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *out = ho_drain_conf(cases[i].in);
		assert_non_null(out);
		const char *nl = strchr(out, '\n');
		assert_non_null(nl);
		assert_true(strncmp(out, "# DRAINING", 10) == 0);
		assert_string_equal(nl + 1, cases[i].want);
		free(out);
	}
}

static void test_acl_in_flight_from_the_manager_page(void **state)
{
	(void)state;
	static const char page[] = "External ACL Statistics: fps_acl\n"
	                           "Cache size: 0\n"
	                           "  program: /usr/local/bin/fps-acl\n"
	                           "  number active: 4 of 4 (0 shutting down)\n"
	                           "  requests sent: 120\n"
	                           "  replies received: 117\n"
	                           "  requests timedout: 0\n"
	                           "  queue length: 5\n"
	                           "  avg service time: 0 msec\n";
	assert_int_equal(ho_acl_in_flight(page), 8);
	static const char two[] = "  requests sent: 10\n  replies received: 10\n  queue length: 0\n"
	                          "  requests sent: 4\n  replies received: 3\n  queue length: 0\n";
	assert_int_equal(ho_acl_in_flight(two), 1);
	assert_int_equal(ho_acl_in_flight("nothing here\n"), -1);
	assert_int_equal(ho_acl_in_flight(""), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_drain_conf_drops_only_the_agents_ports),
	    cmocka_unit_test(test_acl_in_flight_from_the_manager_page),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
