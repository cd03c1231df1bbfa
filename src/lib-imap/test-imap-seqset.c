/*
 * test-imap-seqset.c — unit tests for imap-seqset.c: parsing, normalising,
 * "*" resolution (including the "n:*" above the last message rule),
 * membership against a brute-force model, incremental adds (numbers and
 * ranges, against a model), the writer and its buffer limit.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib-imap/imap-seqset.h"
#include "lib/buf.h"

#define N_ELEMENTS(a) (sizeof(a) / sizeof((a)[0]))

struct scase {
	const char *label;
	const char *in;
	int ret;
	const char *parsed;    /* written form after parsing */
	uint32_t max;
	const char *resolved;  /* written form after imap_seqset_resolve(max) */
};

#define OK(l, in, parsed, max, resolved) { l, in, 0, parsed, max, resolved }
#define BAD(l, in) { l, in, -1, NULL, 0, NULL }

static const struct scase cases[] = {
	OK("single", "1", "1", 10, "1"),
	OK("mixed", "1:5,7,9:*", "1:5,7,9:*", 20, "1:5,7,9:20"),
	OK("reversed range", "5:1", "1:5", 10, "1:5"),
	OK("star", "*", "*", 10, "10"),
	OK("star empty mailbox", "*", "*", 0, ""),
	OK("n:* above max", "3:*", "3:*", 2, "2:3"),
	OK("uid n:* far above", "100:*", "100:*", 50, "50:100"),
	OK("*:n", "*:3", "3:*", 10, "3:10"),
	OK("overlap", "1:5,3:8,10,9", "1:10", 20, "1:10"),
	OK("adjacent", "1,2,3", "1:3", 20, "1:3"),
	OK("unsorted", "9,1,5", "1,5,9", 20, "1,5,9"),
	OK("duplicates", "4,4,4:4", "4", 20, "4"),
	/* 4294967295 is a number, not "*" */
	OK("max number is not star", "4294967295", "4294967295", 7, "4294967295"),
	OK("to max number", "1:4294967295", "1:4294967295", 7, "1:4294967295"),
	OK("max number and star", "4294967295,*", "4294967295,*", 7, "7,4294967295"),
	OK("max number to star", "4294967295:*", "4294967295:*", 7, "7:4294967295"),
	OK("resolve keeps number above", "1:*,5", "5,1:*", 3, "1:3,5"),
	OK("absorbed by n:*", "2:*,3", "3,2:*", 4, "2:4"),
	OK("two n:*", "3:*,7:*", "3:*,7:*", 5, "3:7"),
	OK("two n:* below max", "3:*,7:*", "3:*,7:*", 10, "3:10"),
	OK("star and n:*", "*,6:*", "6:*", 10, "6:10"),
	OK("n:* empty mailbox", "3:*", "3:*", 0, "3"),
	OK("resolve keeps above", "2:3,9", "2:3,9", 4, "2:3,9"),
	OK("resolve star and number", "*,2", "2,*", 3, "2:3"),
	OK("big numbers", "4294967294,1", "1,4294967294", 5, "1,4294967294"),
	BAD("empty", ""),
	BAD("zero", "0"),
	BAD("zero in range", "1:0"),
	BAD("leading zero", "01"),
	BAD("trailing comma", "1,"),
	BAD("leading comma", ",1"),
	BAD("double colon", "1::2"),
	BAD("letters", "a"),
	BAD("open range", "1:"),
	BAD("overflow", "4294967296"),
	BAD("space", "1 2"),
	BAD("dollar and more", "$1"),
	BAD("dollar list", "$,1"),
	BAD("negative", "-1"),
	BAD("decimal", "1.5"),
	BAD("triple range", "1:2:3"),
};

static void check_write(const char *label, const struct imap_seqset *set, const char *want)
{
	struct buf b;
	buf_init(&b, 1 << 20);
	assert_int_equal(imap_seqset_write(set, &b), 0);
	const char *got = b.data != NULL ? b.data : "";
	if (strcmp(got, want) != 0)
		fail_msg("case '%s': wrote '%s', expected '%s'", label, got, want);
	buf_free(&b);
}

static void test_seqset_cases(void **state)
{
	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(cases); i++) {
		const struct scase *c = &cases[i];
		struct imap_seqset set;
		int ret = imap_seqset_parse(c->in, strlen(c->in), &set);
		if (ret != c->ret)
			fail_msg("case '%s': parse returned %d", c->label, ret);
		if (ret < 0) {
			assert_null(set.ranges);
			continue;
		}
		assert_false(set.dollar);
		check_write(c->label, &set, c->parsed);
		imap_seqset_resolve(&set, c->max);
		check_write(c->label, &set, c->resolved);
		/* sorted, merged, non-overlapping */
		for (unsigned k = 0; k < set.count; k++) {
			assert_true(set.ranges[k].lo <= set.ranges[k].hi);
			if (k > 0)
				assert_true(set.ranges[k].lo > set.ranges[k - 1].hi + 1);
		}
		imap_seqset_free(&set);
		assert_null(set.ranges);
	}
}

static void test_seqset_dollar(void **state)
{
	(void)state;
	struct imap_seqset set;
	assert_int_equal(imap_seqset_parse("$", 1, &set), 0);
	assert_true(set.dollar);
	assert_int_equal(set.count, 0);
	assert_false(imap_seqset_contains(&set, 1));
	imap_seqset_free(&set);
	/* not NUL-terminated input: only len octets are read */
	assert_int_equal(imap_seqset_parse("12,", 2, &set), 0);
	assert_true(imap_seqset_contains(&set, 12));
	imap_seqset_free(&set);
}

static void test_seqset_contains(void **state)
{
	(void)state;
	const char *in = "3,5:9,20:22,40,41,60:*";
	struct imap_seqset set;
	bool model[101] = { false };
	assert_int_equal(imap_seqset_parse(in, strlen(in), &set), 0);
	imap_seqset_resolve(&set, 70);
	model[3] = true;
	for (int i = 5; i <= 9; i++)
		model[i] = true;
	for (int i = 20; i <= 22; i++)
		model[i] = true;
	model[40] = model[41] = true;
	for (int i = 60; i <= 70; i++)
		model[i] = true;
	for (uint32_t n = 0; n <= 100; n++) {
		if (imap_seqset_contains(&set, n) != model[n])
			fail_msg("contains(%u) wrong", n);
	}
	assert_false(imap_seqset_contains(&set, UINT32_MAX));
	imap_seqset_free(&set);
}

static void test_seqset_add(void **state)
{
	(void)state;
	enum { N = 3000 };
	static bool model[N + 2];
	struct imap_seqset set = { 0 };
	unsigned seed = 12345;

	memset(model, 0, sizeof(model));
	for (int i = 0; i < 4000; i++) {
		seed = seed * 1103515245u + 12345u;
		uint32_t n = 1 + (seed >> 8) % N;
		assert_int_equal(imap_seqset_add(&set, n), 0);
		model[n] = true;
	}
	/* decreasing and joining both neighbours */
	for (uint32_t n = N; n > N - 100; n--) {
		assert_int_equal(imap_seqset_add(&set, n), 0);
		model[n] = true;
	}
	for (uint32_t n = 1; n <= N + 1; n++) {
		if (imap_seqset_contains(&set, n) != model[n])
			fail_msg("add: contains(%u) wrong", n);
	}
	for (unsigned k = 1; k < set.count; k++)
		assert_true(set.ranges[k].lo > set.ranges[k - 1].hi + 1);
	assert_int_equal(imap_seqset_add(&set, 0), -1);
	imap_seqset_free(&set);

	/* increasing order builds one range */
	for (uint32_t n = 1; n <= 100000; n++)
		assert_int_equal(imap_seqset_add(&set, n), 0);
	assert_int_equal(set.count, 1);
	check_write("increasing", &set, "1:100000");
	imap_seqset_free(&set);

	/* joining: 1,3 then 2 */
	assert_int_equal(imap_seqset_add(&set, 3), 0);
	assert_int_equal(imap_seqset_add(&set, 1), 0);
	check_write("two", &set, "1,3");
	assert_int_equal(imap_seqset_add(&set, 2), 0);
	check_write("joined", &set, "1:3");
	assert_int_equal(imap_seqset_add(&set, UINT32_MAX), 0);
	assert_int_equal(imap_seqset_add(&set, UINT32_MAX - 1), 0);
	check_write("top", &set, "1:3,4294967294:4294967295");
	imap_seqset_free(&set);
}

struct rcase {
	const char *label;
	const char *start;     /* parsed first ("" : empty set) */
	uint32_t lo, hi;
	int ret;
	const char *after;     /* written form after imap_seqset_add_range() */
};

static const struct rcase rcases[] = {
	{ "empty", "", 3, 5, 0, "3:5" },
	{ "single number", "", 7, 7, 0, "7" },
	{ "append apart", "1:3", 5, 9, 0, "1:3,5:9" },
	{ "append touching", "1:3", 4, 9, 0, "1:9" },
	{ "append overlapping", "1:5", 3, 9, 0, "1:9" },
	{ "inside the last", "1:9", 2, 4, 0, "1:9" },
	{ "before all apart", "5:9", 1, 3, 0, "1:3,5:9" },
	{ "before all touching", "5:9", 1, 4, 0, "1:9" },
	{ "between apart", "1,10", 4, 6, 0, "1,4:6,10" },
	{ "between touching both", "1:3,7:9", 4, 6, 0, "1:9" },
	{ "swallows several", "1,3,5,7,9,20", 2, 10, 0, "1:10,20" },
	{ "widens to the left", "5:9,20", 2, 6, 0, "2:9,20" },
	{ "widens to the right", "1,5:9,20", 7, 12, 0, "1,5:12,20" },
	{ "up to the top", "1,10", 5, UINT32_MAX, 0, "1,5:4294967295" },
	{ "touching the top", "4294967290:4294967295", 4294967280u, 4294967289u, 0,
	  "4294967280:4294967295" },
	{ "from 1", "2,4", 1, 1, 0, "1:2,4" },
	{ "all", "3,9", 1, UINT32_MAX, 0, "1:4294967295" },
	{ "zero is an error", "1", 0, 5, -1, "1" },
	{ "lo above hi", "1", 6, 5, -1, "1" },
};

static void test_seqset_add_range(void **state)
{
	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(rcases); i++) {
		const struct rcase *c = &rcases[i];
		struct imap_seqset set = { 0 };
		if (c->start[0] != '\0' &&
		    imap_seqset_parse(c->start, strlen(c->start), &set) != 0)
			fail_msg("%s: parse", c->label);
		if (imap_seqset_add_range(&set, c->lo, c->hi) != c->ret)
			fail_msg("%s: return", c->label);
		check_write(c->label, &set, c->after);
		imap_seqset_free(&set);
	}

	/* random ranges against a brute-force model */
	enum { N = 2000 };
	static bool model[N + 2];
	memset(model, 0, sizeof(model));
	struct imap_seqset set = { 0 };
	unsigned seed = 777;
	for (int k = 0; k < 3000; k++) {
		seed = seed * 1103515245u + 12345u;
		uint32_t lo = 1 + (seed >> 8) % N;
		seed = seed * 1103515245u + 12345u;
		uint32_t len = (seed >> 8) % (k % 7 == 0 ? 40 : 4);
		uint32_t hi = lo + len > N ? N : lo + len;
		assert_int_equal(imap_seqset_add_range(&set, lo, hi), 0);
		for (uint32_t n = lo; n <= hi; n++)
			model[n] = true;
		if (k % 100 != 0)
			continue;
		for (uint32_t n = 1; n <= N + 1; n++) {
			if (imap_seqset_contains(&set, n) != model[n])
				fail_msg("add_range %d: contains(%u) wrong", k, n);
		}
		for (unsigned r = 1; r < set.count; r++)
			assert_true(set.ranges[r].lo > set.ranges[r - 1].hi + 1);
	}
	imap_seqset_free(&set);

	/* increasing, as vanished lists are built: O(1) each, one range when
	 * they touch */
	for (uint32_t n = 1; n <= 300000; n += 3)
		assert_int_equal(imap_seqset_add_range(&set, n, n + 2), 0);
	assert_int_equal(set.count, 1);
	check_write("increasing ranges", &set, "1:300000");
	imap_seqset_free(&set);
}

static void test_seqset_limits(void **state)
{
	(void)state;
	struct buf in;
	struct imap_seqset set;
	buf_init(&in, 1 << 20);
	for (unsigned i = 0; i < IMAP_SEQSET_MAX_RANGES; i++)
		buf_printf(&in, "%s%u", i > 0 ? "," : "", (IMAP_SEQSET_MAX_RANGES - i) * 2);
	assert_int_equal(imap_seqset_parse(in.data, in.len, &set), 0);
	assert_int_equal(set.count, IMAP_SEQSET_MAX_RANGES);
	assert_true(imap_seqset_contains(&set, 2));
	assert_false(imap_seqset_contains(&set, 3));
	imap_seqset_free(&set);
	buf_append_str(&in, ",1");
	assert_int_equal(imap_seqset_parse(in.data, in.len, &set), -1);
	buf_free(&in);

	/* the writer leaves a full buffer as it was */
	struct buf out;
	buf_init(&out, 8);
	buf_append_str(&out, "ab");
	assert_int_equal(imap_seqset_parse("1:100,200:300", 13, &set), 0);
	assert_int_equal(imap_seqset_write(&set, &out), -1);
	assert_int_equal(out.len, 2);
	assert_string_equal(out.data, "ab");
	imap_seqset_free(&set);
	buf_free(&out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_seqset_cases),
		cmocka_unit_test(test_seqset_dollar),
		cmocka_unit_test(test_seqset_contains),
		cmocka_unit_test(test_seqset_add),
		cmocka_unit_test(test_seqset_add_range),
		cmocka_unit_test(test_seqset_limits),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
