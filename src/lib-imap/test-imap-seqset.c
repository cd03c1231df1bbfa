/*
 * test-imap-seqset.c — unit tests for imap-seqset.c: parsing, normalising,
 * "*" resolution (including the "n:*" above the last message rule),
 * membership against a brute-force model, incremental adds, the writer and
 * its buffer limit.
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
	OK("max number is star", "4294967295", "*", 7, "7"),
	OK("to max number", "1:4294967295", "1:*", 7, "1:7"),
	OK("resolve merges", "1:*,5", "1:*", 3, "1:3"),
	OK("absorbed by n:*", "2:*,9", "2:*", 4, "2:4"),
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
	check_write("top", &set, "1:3,4294967294:*");
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
		cmocka_unit_test(test_seqset_limits),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
