/*
 * Unit tests for denied.c: the Space-Saving bound (memory fixed, heavy hitters kept,
 * counts overestimated by at most total/k), products, the file form and the merge.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "denied.h"

/* A stream far larger than the table: 20 heavy destinations among 200,000 distinct
 * one-off ones. The table never grows past its capacity, every heavy one is kept,
 * and no count is below the truth or above it by more than total/k. */
static void test_bound_holds_under_many_distinct_hosts(void **state)
{
	(void)state;
	enum { K = 64, HEAVY = 20, NOISE = 200000, HEAVY_EVERY = 50 };
	struct denied_table t;
	assert_int_equal(denied_init(&t, K, 1.0), 0);
	struct denied_entry *mem_before = t.e;
	unsigned long long truth[HEAVY] = {0};
	char host[64];
	for (int i = 0; i < NOISE; i++) {
		snprintf(host, sizeof(host), "noise-%d.example", i);
		denied_add(&t, host, 443, "ApexOne", 2.0, 1, false);
		if (i % HEAVY_EVERY == 0) {
			int h = (i / HEAVY_EVERY) % HEAVY;
			snprintf(host, sizeof(host), "heavy-%d.example", h);
			denied_add(&t, host, 443, "ApexOne", 2.0, 1, false);
			truth[h]++;
		}
		assert_true(t.n <= K);
	}
	assert_ptr_equal(t.e, mem_before); /* no reallocation: the memory is what init took */
	assert_true(t.evicted > 0);
	unsigned long long bound = t.total / K;
	for (int h = 0; h < HEAVY; h++) {
		snprintf(host, sizeof(host), "heavy-%d.example", h);
		bool found = false;
		for (size_t i = 0; i < t.n; i++) {
			if (strcmp(t.e[i].host, host) != 0)
				continue;
			found = true;
			assert_true(t.e[i].count >= truth[h]);
			assert_true(t.e[i].count - truth[h] <= t.e[i].error);
			assert_true(t.e[i].error <= bound);
		}
		/* Space-Saving promises presence only above total/k */
		if (truth[h] > bound)
			assert_true(found);
	}
	denied_free(&t);
}

/* The guarantee with real heavy hitters: each above total/k must be present. */
static void test_frequent_destinations_are_always_kept(void **state)
{
	(void)state;
	enum { K = 32 };
	struct denied_table t;
	assert_int_equal(denied_init(&t, K, 1.0), 0);
	char host[64];
	for (int i = 0; i < 50000; i++) {
		snprintf(host, sizeof(host), "n%d.example", i);
		denied_add(&t, host, 80, NULL, 1.0, 1, false);
		if (i % 4 == 0)
			denied_add(&t, "needed.vendor.example", 443, "ApexOne", 1.0, 1, false);
		if (i % 8 == 0)
			denied_add(&t, "also-needed.vendor.example", 443, "Deep", 1.0, 1, false);
	}
	struct denied_entry top[3];
	assert_int_equal(denied_top(&t, top, 3), 3);
	assert_string_equal(top[0].host, "needed.vendor.example");
	assert_true(top[0].count >= 12500);
	assert_string_equal(top[1].host, "also-needed.vendor.example");
	assert_true(top[1].count >= 6250);
	assert_int_equal(t.total, 50000 + 12500 + 6250);
	denied_free(&t);
}

/* Whatever the counts, a new destination replaces an entry with the smallest count. */
static void test_replaces_a_smallest_entry(void **state)
{
	(void)state;
	enum { K = 8 };
	struct denied_table t;
	assert_int_equal(denied_init(&t, K, 1.0), 0);
	char host[32];
	for (int i = 0; i < K; i++) { /* distinct counts 3, 6, 9, ... in a scrambled order */
		snprintf(host, sizeof(host), "h%d.example", i);
		denied_add(&t, host, 443, NULL, 1.0, (unsigned long long)(((i * 5) % K) + 1) * 3, false);
	}
	for (int round = 0; round < 200; round++) {
		unsigned long long min = t.e[0].count;
		for (size_t i = 1; i < t.n; i++)
			min = t.e[i].count < min ? t.e[i].count : min;
		snprintf(host, sizeof(host), "new%d.example", round);
		denied_add(&t, host, 443, NULL, 1.0, 1 + (unsigned long long)(round % 3), false);
		for (size_t i = 0; i < t.n; i++)
			if (strcmp(t.e[i].host, host) == 0)
				assert_int_equal(t.e[i].error, min);
		if (round % 7 == 0) /* an existing entry grows */
			denied_add(&t, t.e[round % K].host, 443, NULL, 1.0, 5, false);
		assert_int_equal(t.n, K);
	}
	denied_free(&t);
}

static void test_products(void **state)
{
	(void)state;
	static const struct {
		const char *user, *product;
	} cases[] = {
	    {"ApexOne-1b4e28ba-2fa1-11d2-883f-0016d3cca427", "ApexOne"},
	    {"Deep-Security-1B4E28BA-2FA1-11D2-883F-0016D3CCA427", "Deep-Security"},
	    {"Scanner1b4e28ba-2fa1-11d2-883f-0016d3cca427", "Scanner"},
	    {"plain-user", "plain"},
	    {"nodash", "nodash"},
	    {"-", ""},
	    {"", ""},
	    {"we\"ird<x>-1", "we_ird_x_"},
	    {"ThisProductNameIsFarLongerThanThirtyTwoBytes", "ThisProductNameIsFarLongerThanTh"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char out[DENIED_PRODUCT_MAX + 1];
		denied_product(cases[i].user, out, sizeof(out));
		assert_string_equal(out, cases[i].product);
	}
}

static void test_products_per_destination_are_bounded(void **state)
{
	(void)state;
	struct denied_table t;
	assert_int_equal(denied_init(&t, 8, 1.0), 0);
	const char *products[] = {"A", "B", "C", "D", "E", "A"};
	for (size_t i = 0; i < 6; i++)
		denied_add(&t, "x.example", 443, products[i], 1.0 + (double)i, 1, false);
	assert_int_equal(t.n, 1);
	assert_int_equal(t.e[0].n_products, DENIED_PRODUCTS);
	assert_true(t.e[0].more_products);
	assert_true(t.e[0].first_seen == 1.0 && t.e[0].last_seen == 6.0);
	denied_free(&t);
}

static void test_file_round_trip_and_merge(void **state)
{
	(void)state;
	struct denied_table a, b, m;
	assert_int_equal(denied_init(&a, 16, 100.0), 0);
	assert_int_equal(denied_init(&b, 16, 50.0), 0);
	denied_add(&a, "x.example", 443, "ApexOne", 101.0, 3, false);
	denied_add(&a, "2001:db8::1", 8080, NULL, 102.0, 1, true);
	denied_add(&b, "x.example", 443, "Deep", 60.0, 2, false);
	denied_add(&b, "y.example", 80, "Deep", 61.0, 1, false);
	char *text = NULL;
	size_t len = 0;
	assert_int_equal(denied_render(&a, 1234, 99.0, 7, &text, &len), 0);
	struct denied_table p;
	int pid = 0;
	struct fps_err e;
	err_clear(&e);
	assert_int_equal(denied_parse(text, len, "f", &p, &pid, &e), 0);
	assert_int_equal(pid, 1234);
	assert_int_equal(p.n, 2);
	assert_int_equal(p.total, 4);
	assert_true(p.e[1].would_deny);
	assert_string_equal(p.e[1].host, "2001:db8::1");
	/* a truncated file is refused, not half read */
	struct denied_table q;
	assert_int_equal(denied_parse(text, len - 4, "f", &q, &pid, &e), -1);
	free(text);

	assert_int_equal(denied_init(&m, 16, 0), 0);
	denied_merge(&m, &p);
	denied_merge(&m, &b);
	struct denied_entry top[4];
	assert_int_equal(denied_top(&m, top, 4), 3);
	assert_string_equal(top[0].host, "x.example");
	assert_int_equal(top[0].count, 5);
	assert_true(top[0].first_seen == 60.0 && top[0].last_seen == 101.0);
	assert_int_equal(top[0].n_products, 2);
	assert_int_equal(m.total, 4 + 3);
	assert_true(m.since == 50.0);
	denied_free(&a);
	denied_free(&b);
	denied_free(&m);
	denied_free(&p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_bound_holds_under_many_distinct_hosts),
	    cmocka_unit_test(test_frequent_destinations_are_always_kept),
	    cmocka_unit_test(test_replaces_a_smallest_entry),
	    cmocka_unit_test(test_products),
	    cmocka_unit_test(test_products_per_destination_are_bounded),
	    cmocka_unit_test(test_file_round_trip_and_merge),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
