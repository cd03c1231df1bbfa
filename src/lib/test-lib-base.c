/*
 * test-lib-base.c — unit tests for capped buffers, number parsing and the
 * IPC payload encoding.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "lib/buf.h"
#include "lib/ipc.h"
#include "lib/util.h"

static void test_buf_max(void **state)
{
	struct buf b;
	(void)state;
	buf_init(&b, 10);
	assert_int_equal(buf_append_str(&b, "12345"), 0);
	assert_int_equal(buf_append_str(&b, "67890"), 0);
	assert_int_equal(buf_append_str(&b, "x"), -1);
	assert_int_equal(b.len, 10);
	assert_string_equal(b.data, "1234567890");
	buf_reset(&b);
	assert_int_equal(buf_printf(&b, "%d-%s", 42, "ab"), 0);
	assert_string_equal(b.data, "42-ab");
	assert_int_equal(buf_printf(&b, "%s", "too long!"), -1);
	assert_string_equal(b.data, "42-ab");
	buf_free(&b);
}

struct num_case {
	const char *label;
	const char *in;
	int ret;
	uint64_t value;
};

static void test_numbers(void **state)
{
	static const struct num_case u64[] = {
		{ "zero", "0", 0, 0 },
		{ "plain", "12345", 0, 12345 },
		{ "max", "18446744073709551615", 0, UINT64_MAX },
		{ "overflow", "18446744073709551616", -1, 0 },
		{ "empty", "", -1, 0 },
		{ "sign", "-1", -1, 0 },
		{ "junk", "12a", -1, 0 },
		{ "space", " 1", -1, 0 },
	};
	static const struct num_case size[] = {
		{ "bytes", "1000", 0, 1000 },
		{ "kilo", "4K", 0, 4096 },
		{ "mega", "25M", 0, 25u << 20 },
		{ "giga lower", "1g", 0, 1ull << 30 },
		{ "bad suffix", "3X", -1, 0 },
		{ "suffix only", "M", -1, 0 },
	};
	static const struct num_case dur[] = {
		{ "seconds", "30", 0, 30 },
		{ "s", "30s", 0, 30 },
		{ "minutes", "5m", 0, 300 },
		{ "hours", "2h", 0, 7200 },
		{ "days", "1d", 0, 86400 },
		{ "bad", "1w", -1, 0 },
	};
	uint64_t v;
	(void)state;
	for (size_t i = 0; i < sizeof(u64) / sizeof(u64[0]); i++) {
		v = 0;
		assert_int_equal(str_to_u64(u64[i].in, &v), u64[i].ret);
		if (u64[i].ret == 0)
			assert_true(v == u64[i].value);
	}
	for (size_t i = 0; i < sizeof(size) / sizeof(size[0]); i++) {
		v = 0;
		assert_int_equal(str_to_size(size[i].in, &v), size[i].ret);
		if (size[i].ret == 0)
			assert_true(v == size[i].value);
	}
	for (size_t i = 0; i < sizeof(dur) / sizeof(dur[0]); i++) {
		v = 0;
		assert_int_equal(str_to_duration(dur[i].in, &v), dur[i].ret);
		if (dur[i].ret == 0)
			assert_true(v == dur[i].value);
	}
}

static void test_queue_id(void **state)
{
	char a[17], b[17];
	(void)state;
	queue_id_new(a);
	queue_id_new(b);
	assert_true(queue_id_valid(a));
	assert_true(queue_id_valid(b));
	assert_true(strcmp(a, b) < 0); /* strictly increasing */
	assert_false(queue_id_valid("0123456789abcdef"));
	assert_false(queue_id_valid("0123456789ABCDE"));
	assert_false(queue_id_valid("0123456789ABCDEF0"));
	assert_false(queue_id_valid("../../etc/passwd"));
}

static void test_ipc_roundtrip(void **state)
{
	struct ipc_writer w;
	(void)state;
	ipc_writer_init(&w);
	ipc_put_u32(&w, 7);
	ipc_put_str(&w, "hello");
	ipc_put_str(&w, NULL);
	ipc_put_u64(&w, 1ull << 40);
	ipc_put_bytes(&w, "a\0b", 3);

	struct ipc_reader r = { (const unsigned char *)w.b.data, w.b.len, false };
	assert_int_equal(ipc_get_u32(&r), 7);
	assert_string_equal(ipc_get_str(&r), "hello");
	assert_null(ipc_get_str(&r));
	assert_false(r.error);
	assert_true(ipc_get_u64(&r) == 1ull << 40);
	size_t len;
	const char *p = ipc_get_bytes(&r, &len);
	assert_int_equal(len, 3);
	assert_memory_equal(p, "a\0b", 3);
	assert_int_equal(r.left, 0);
	/* Reading past the end is a sticky error, never an overread. */
	ipc_get_u32(&r);
	assert_true(r.error);

	/* Every truncation of the payload is detected. */
	for (size_t cut = 0; cut < w.b.len; cut++) {
		struct ipc_reader t = { (const unsigned char *)w.b.data, cut, false };
		ipc_get_u32(&t);
		ipc_get_str(&t);
		ipc_get_str(&t);
		ipc_get_u64(&t);
		ipc_get_bytes(&t, &len);
		assert_true(t.error);
	}
	ipc_writer_free(&w);
}

static void test_ipc_bad_string(void **state)
{
	/* A string must end in its one NUL. */
	static const unsigned char no_nul[] = { 3, 0, 0, 0, 'a', 'b', 'c' };
	static const unsigned char inner_nul[] = { 3, 0, 0, 0, 'a', 0, 0 };
	static const unsigned char huge[] = { 0xfe, 0xff, 0xff, 0xff, 'a' };
	(void)state;
	struct ipc_reader r1 = { no_nul, sizeof(no_nul), false };
	assert_null(ipc_get_str(&r1));
	assert_true(r1.error);
	struct ipc_reader r2 = { inner_nul, sizeof(inner_nul), false };
	assert_null(ipc_get_str(&r2));
	assert_true(r2.error);
	struct ipc_reader r3 = { huge, sizeof(huge), false };
	assert_null(ipc_get_str(&r3));
	assert_true(r3.error);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_buf_max),
		cmocka_unit_test(test_numbers),
		cmocka_unit_test(test_queue_id),
		cmocka_unit_test(test_ipc_roundtrip),
		cmocka_unit_test(test_ipc_bad_string),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
