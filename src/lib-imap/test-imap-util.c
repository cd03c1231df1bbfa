/*
 * test-imap-util.c — unit tests for imap-util.c: string/astring/nstring
 * writers and their buffer limit, INTERNALDATE writing and APPEND
 * date-time parsing, flag lists both ways (flag arguments come from the
 * real command parser, whole and one byte at a time), and modified UTF-7
 * in both directions with round trips, non-BMP characters and invalid
 * input.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib-imap/imap-parser.h"
#include "lib-imap/imap-search.h"
#include "lib-imap/imap-util.h"
#include "lib/buf.h"

#define N_ELEMENTS(a) (sizeof(a) / sizeof((a)[0]))
#define BIN(s) s, sizeof(s) - 1

/* ------------------------------------------------------------ strings */

struct wcase {
	const char *label;
	const char *in;
	size_t len;
	bool utf8;
	const char *out;
	size_t out_len;
};

static void test_write_string(void **state)
{
	(void)state;
	const struct wcase cases[] = {
		{ "plain", BIN("abc"), false, BIN("\"abc\"") },
		{ "empty", BIN(""), false, BIN("\"\"") },
		{ "escapes", BIN("a\"b\\c"), false, BIN("\"a\\\"b\\\\c\"") },
		{ "only escapes", BIN("\"\\"), false, BIN("\"\\\"\\\\\"") },
		{ "CRLF literal", BIN("a\r\nb"), false, BIN("{4}\r\na\r\nb") },
		{ "bare CR literal", BIN("a\rb"), false, BIN("{3}\r\na\rb") },
		{ "NUL literal", BIN("a\0b"), false, BIN("{3}\r\na\0b") },
		{ "8-bit without utf8", BIN("\xc3\xa4"), false, BIN("{2}\r\n\xc3\xa4") },
		{ "8-bit with utf8", BIN("\xc3\xa4"), true, BIN("\"\xc3\xa4\"") },
		{ "invalid utf8", BIN("\xff"), true, BIN("{1}\r\n\xff") },
		{ "space and parens", BIN("a (b)"), false, BIN("\"a (b)\"") },
	};
	for (size_t i = 0; i < N_ELEMENTS(cases); i++) {
		struct buf b;
		buf_init(&b, 4096);
		assert_int_equal(imap_write_string(&b, cases[i].in, cases[i].len, cases[i].utf8), 0);
		if (b.len != cases[i].out_len || memcmp(b.data, cases[i].out, b.len) != 0)
			fail_msg("case '%s': got '%s'", cases[i].label, b.data);
		buf_free(&b);
	}

	/* 1024 octets are quoted, 1025 are a literal */
	char big[1025];
	memset(big, 'x', sizeof(big));
	struct buf b;
	buf_init(&b, 4096);
	assert_int_equal(imap_write_string(&b, big, 1024, false), 0);
	assert_int_equal(b.len, 1026);
	assert_int_equal(b.data[0], '"');
	buf_reset(&b);
	assert_int_equal(imap_write_string(&b, big, 1025, false), 0);
	assert_int_equal(b.len, 1025 + 8);
	assert_memory_equal(b.data, "{1025}\r\n", 8);
	buf_free(&b);

	/* a full buffer stays as it was */
	buf_init(&b, 6);
	assert_int_equal(buf_append_str(&b, "ab"), 0);
	assert_int_equal(imap_write_string(&b, "abcdef", 6, false), -1);
	assert_int_equal(b.len, 2);
	assert_string_equal(b.data, "ab");
	assert_int_equal(imap_write_string(&b, "a\r\nbcdef", 8, false), -1);
	assert_string_equal(b.data, "ab");
	assert_int_equal(imap_write_astring(&b, "a\"", false), -1);
	assert_string_equal(b.data, "ab");
	buf_free(&b);
}

static void test_write_astring(void **state)
{
	(void)state;
	const struct {
		const char *in;
		const char *out;
	} cases[] = {
		{ "INBOX", "INBOX" },
		{ "Sent.2024", "Sent.2024" },
		{ "", "\"\"" },
		{ "NIL", "\"NIL\"" },
		{ "nil", "\"nil\"" },
		{ "a b", "\"a b\"" },
		{ "a]", "\"a]\"" },
		{ "\\Seen", "\"\\\\Seen\"" },
		{ "a*", "\"a*\"" },
		{ "a{1}", "\"a{1}\"" },
		{ "Gr\xc3\xbc\xc3\x9f" "e", "\"Gr\xc3\xbc\xc3\x9f" "e\"" },
	};
	for (size_t i = 0; i < N_ELEMENTS(cases); i++) {
		struct buf b;
		buf_init(&b, 4096);
		assert_int_equal(imap_write_astring(&b, cases[i].in, true), 0);
		if (strcmp(b.data, cases[i].out) != 0)
			fail_msg("astring '%s': got '%s'", cases[i].in, b.data);
		buf_free(&b);
	}
	struct buf b;
	buf_init(&b, 4096);
	assert_int_equal(imap_write_nstring(&b, NULL, false), 0);
	assert_int_equal(imap_write_nstring(&b, "x", false), 0);
	assert_int_equal(imap_write_nstring(&b, "NIL", false), 0);
	assert_string_equal(b.data, "NIL\"x\"\"NIL\"");
	buf_free(&b);
}

/* ------------------------------------------------------------ dates */

static void test_datetime(void **state)
{
	(void)state;
	const struct {
		int64_t t;
		int tz;
		const char *out;
	} wcases[] = {
		{ 0, 0, "\"01-Jan-1970 00:00:00 +0000\"" },
		{ 1706745600, 60, "\"01-Feb-2024 01:00:00 +0100\"" },
		{ 1706745600, -300, "\"31-Jan-2024 19:00:00 -0500\"" },
		{ 1706745600, 330, "\"01-Feb-2024 05:30:00 +0530\"" },
		{ 1709164800, 0, "\"29-Feb-2024 00:00:00 +0000\"" },
		{ -1, 0, "\"31-Dec-1969 23:59:59 +0000\"" },
		{ 1795453432, 0, "\"23-Nov-2026 17:03:52 +0000\"" },
		{ 253402300799, 0, "\"31-Dec-9999 23:59:59 +0000\"" },
	};
	for (size_t i = 0; i < N_ELEMENTS(wcases); i++) {
		struct buf b;
		buf_init(&b, 4096);
		assert_int_equal(imap_write_datetime(&b, wcases[i].t, wcases[i].tz), 0);
		if (strcmp(b.data, wcases[i].out) != 0)
			fail_msg("datetime %lld: got %s", (long long)wcases[i].t, b.data);
		/* round trip through the APPEND parser (without the quotes) */
		char inner[64];
		snprintf(inner, sizeof(inner), "%.*s", (int)b.len - 2, b.data + 1);
		assert_int_equal(imap_datetime_parse(inner), wcases[i].t);
		buf_free(&b);
	}
	struct buf b;
	buf_init(&b, 4096);
	assert_int_equal(imap_write_datetime(&b, 253402300800, 0), -1);   /* year 10000 */
	assert_int_equal(imap_write_datetime(&b, 0, 24 * 60), -1);
	assert_int_equal(imap_write_datetime(&b, INT64_MAX, 0), -1);
	assert_null(b.data);
	buf_free(&b);

	const struct {
		const char *in;
		int64_t t;
	} pcases[] = {
		{ "01-Feb-2024 01:00:00 +0100", 1706745600 },
		{ " 1-Feb-2024 00:00:00 +0000", 1706745600 },
		{ "1-Feb-2024 00:00:00 +0000", 1706745600 },
		{ "1-feb-2024 00:00:00 -0130", 1706745600 + 5400 },
		{ "01-Feb-2024 24:00:00 +0000", -1 },
		{ "01-Feb-2024 23:60:00 +0000", -1 },
		{ "30-Feb-2024 00:00:00 +0000", -1 },
		{ "01-Feb-2024 00:00:00 0000", -1 },
		{ "01-Feb-2024 00:00:00 +0000x", -1 },
		{ "01-Feb-2024 00:00:00 +0060", -1 },
		{ "01-Feb-24 00:00:00 +0000", -1 },
		{ "01-Feb-2024 0:00:00 +0000", -1 },
		{ "01-Feb-2024", -1 },
		{ "", -1 },
	};
	for (size_t i = 0; i < N_ELEMENTS(pcases); i++) {
		int64_t t = imap_datetime_parse(pcases[i].in);
		if (t != pcases[i].t)
			fail_msg("datetime parse '%s': got %lld", pcases[i].in, (long long)t);
	}
	assert_int_equal(imap_datetime_parse(NULL), -1);

	/* calendar helpers agree with each other over a wide range */
	for (int64_t d = -800000; d <= 2900000; d += 997) {
		int y;
		unsigned m, dd;
		imap_civil_from_days(d, &y, &m, &dd);
		assert_true(dd >= 1 && dd <= imap_days_in_month(y, m));
		assert_int_equal(imap_days_from_civil(y, m, dd), d);
	}
	assert_int_equal(imap_days_in_month(2024, 2), 29);
	assert_int_equal(imap_days_in_month(2100, 2), 28);
	assert_int_equal(imap_days_in_month(2024, 13), 0);
}

/* ------------------------------------------------------------ flags */

static void test_write_flags(void **state)
{
	(void)state;
	const struct {
		uint32_t flags;
		const char *kw;
		const char *out;
	} cases[] = {
		{ IMAP_FLAG_SEEN | IMAP_FLAG_ANSWERED, "foo  bar", "(\\Seen \\Answered foo bar)" },
		{ 0, NULL, "()" },
		{ 0, "", "()" },
		{ 0, " $Junk ", "($Junk)" },
		{ IMAP_FLAG_RECENT, "", "(\\Recent)" },
		{ 0x3f, "k", "(\\Seen \\Answered \\Flagged \\Deleted \\Draft \\Recent k)" },
	};
	for (size_t i = 0; i < N_ELEMENTS(cases); i++) {
		struct buf b;
		buf_init(&b, 4096);
		assert_int_equal(imap_write_flags(&b, cases[i].flags, cases[i].kw), 0);
		if (strcmp(b.data, cases[i].out) != 0)
			fail_msg("flags %u: got '%s'", cases[i].flags, b.data);
		buf_free(&b);
	}
	struct buf b;
	buf_init(&b, 10);
	assert_int_equal(imap_write_flags(&b, IMAP_FLAG_SEEN, "abcdefgh"), -1);
	assert_int_equal(b.len, 0);
	buf_free(&b);
}

static struct imap_parser *parse_store(const char *flags, size_t chunk)
{
	struct imap_parser *p = imap_parser_new(NULL);
	char line[1024];
	int len = snprintf(line, sizeof(line), "f STORE 1 FLAGS %s\r\n", flags);
	size_t pos = 0;
	while (pos < (size_t)len) {
		size_t n = (size_t)len - pos < chunk ? (size_t)len - pos : chunk, used;
		enum imap_parse_result r = imap_parser_feed(p, line + pos, n, &used);
		pos += used;
		if (r == IMAP_PARSE_DONE)
			return p;
		assert_int_equal(r, IMAP_PARSE_MORE);
	}
	fail_msg("'%s' did not parse", flags);
	return NULL;
}

static void test_parse_flags(void **state)
{
	(void)state;
	const struct {
		const char *in;
		int ret;
		uint32_t flags;
		const char *kw;
	} cases[] = {
		{ "(\\Seen foo)", 0, IMAP_FLAG_SEEN, "foo" },
		{ "\\Deleted", 0, IMAP_FLAG_DELETED, NULL },
		{ "foo", 0, 0, "foo" },
		{ "()", 0, 0, NULL },
		{ "(foo FOO bar foo)", 0, 0, "foo bar" },
		{ "(\\seen \\ANSWERED \\Flagged \\Deleted \\Draft)", 0, 0x1f, NULL },
		{ "($Forwarded $MDNSent \\Seen)", 0, IMAP_FLAG_SEEN, "$Forwarded $MDNSent" },
		{ "(NIL)", 0, 0, "NIL" },
		{ "(\\Recent)", -1, 0, NULL },
		{ "(\\Seen \\Foo)", -1, 0, NULL },
		{ "(\"foo\")", -1, 0, NULL },
		{ "(foo (bar))", -1, 0, NULL },
		{ "(a[b])", -1, 0, NULL },
		{ "(foo%)", -1, 0, NULL },
		{ "(foo*)", -1, 0, NULL },
		{ "{3}\r\nabc", -1, 0, NULL },
	};
	for (size_t i = 0; i < N_ELEMENTS(cases); i++) {
		static const size_t chunks[] = { SIZE_MAX, 1 };
		for (size_t k = 0; k < N_ELEMENTS(chunks); k++) {
			struct imap_parser *p;
			if (strchr(cases[i].in, '{') != NULL) {
				/* a literal: feed it by hand */
				size_t used;
				const char *l1 = "f STORE 1 FLAGS {3}\r\n";
				p = imap_parser_new(NULL);
				assert_int_equal(imap_parser_feed(p, l1, strlen(l1), &used),
						 IMAP_PARSE_LITERAL);
				imap_parser_literal_accept(p, NULL, NULL);
				assert_int_equal(imap_parser_feed(p, "abc\r\n", 5, &used),
						 IMAP_PARSE_DONE);
			} else {
				p = parse_store(cases[i].in, chunks[k]);
			}
			unsigned n;
			const struct imap_arg *a = imap_parser_args(p, &n);
			assert_int_equal(n, 3);
			uint32_t flags = 99;
			char *kw = (char *)"unset";
			const char *error = NULL;
			int ret = imap_parse_flags(&a[2], &flags, &kw, &error);
			if (ret != cases[i].ret)
				fail_msg("flags '%s': returned %d", cases[i].in, ret);
			if (ret == 0) {
				assert_int_equal(flags, cases[i].flags);
				if (cases[i].kw == NULL)
					assert_null(kw);
				else if (kw == NULL || strcmp(kw, cases[i].kw) != 0)
					fail_msg("flags '%s': keywords '%s'", cases[i].in,
						 kw != NULL ? kw : "(null)");
			} else {
				assert_non_null(error);
				assert_null(kw);
			}
			free(kw);
			imap_parser_free(&p);
		}
	}
}

/* ------------------------------------------------------------ modified UTF-7 */

static void test_mutf7(void **state)
{
	(void)state;
	const struct {
		const char *utf8;
		const char *mutf7;   /* NULL: round trip only */
	} cases[] = {
		{ "INBOX", "INBOX" },
		{ "", "" },
		{ "&", "&-" },
		{ "A&B", "A&-B" },
		{ "&&", "&-&-" },
		{ "Entw\xc3\xbcrfe", "Entw&APw-rfe" },
		{ "~peter/mail/\xe5\x8f\xb0\xe5\x8c\x97/\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e",
		  "~peter/mail/&U,BTFw-/&ZeVnLIqe-" },
		{ "\xe2\x82\xac", "&IKw-" },
		{ "\xf0\x9f\x98\x80", "&2D3eAA-" },
		{ "a\xf0\x9f\x98\x80" "b&\xe2\x82\xac", "a&2D3eAA-b&-&IKw-" },
		{ "\x01", "&AAE-" },
		{ "\xf0\x9f\x98\x80\xf0\x9f\x98\x81", NULL },
		{ "\xf4\x8f\xbf\xbf", NULL },                 /* U+10FFFF */
		{ "\xef\xbf\xbd\xc3\xa4\xc3\xb6\xc3\xbc", NULL },
		{ "x\xf0\x90\x80\x80y\xe4\xb8\xad-&", NULL },
		{ "\x7f", NULL },
	};
	for (size_t i = 0; i < N_ELEMENTS(cases); i++) {
		char *enc = imap_utf8_to_mutf7(cases[i].utf8);
		assert_non_null(enc);
		if (cases[i].mutf7 != NULL && strcmp(enc, cases[i].mutf7) != 0)
			fail_msg("encode '%s': got '%s'", cases[i].mutf7, enc);
		for (const char *c = enc; *c != '\0'; c++)
			assert_true(*c >= 0x20 && *c <= 0x7e);
		char *dec = imap_mutf7_to_utf8(enc);
		if (dec == NULL || strcmp(dec, cases[i].utf8) != 0)
			fail_msg("round trip of '%s' failed", enc);
		free(enc);
		free(dec);
	}

	const char *bad_mutf7[] = {
		"&", "&-x&", "&AGE-", "&2D0-", "&3gA-", "&AOk", "&AOkA-", "&AOl-", "\xc3\xa4",
		"a\tb", "&&-", "&AAA-", "&2D3eAA", "&2D3eAA&-", "&2D3eAAAA-", "&ZeVnLIqe",
	};
	for (size_t i = 0; i < N_ELEMENTS(bad_mutf7); i++) {
		char *dec = imap_mutf7_to_utf8(bad_mutf7[i]);
		if (dec != NULL)
			fail_msg("'%s' decoded to '%s'", bad_mutf7[i], dec);
	}
	const char *bad_utf8[] = {
		"\xc3", "\xc0\xaf", "\xe0\x80\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xff",
		"a\x80", "\xf0\x9f\x98",
	};
	for (size_t i = 0; i < N_ELEMENTS(bad_utf8); i++) {
		char *enc = imap_utf8_to_mutf7(bad_utf8[i]);
		if (enc != NULL)
			fail_msg("invalid UTF-8 #%zu encoded to '%s'", i, enc);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_write_string),
		cmocka_unit_test(test_write_astring),
		cmocka_unit_test(test_datetime),
		cmocka_unit_test(test_write_flags),
		cmocka_unit_test(test_parse_flags),
		cmocka_unit_test(test_mutf7),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
