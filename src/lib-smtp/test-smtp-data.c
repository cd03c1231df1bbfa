/*
 * test-smtp-data.c — unit tests for smtp-data.c: end of DATA, dot-unstuffing,
 * SMTP smuggling variants, bare CR/LF, long lines, NUL, BDAT (raw) content.
 * Every case runs whole, one byte at a time, split in two at every offset and
 * (for short inputs) in three at every pair of offsets, with the same
 * expected result.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib-smtp/smtp.h"

#define N_ELEMENTS(a) (sizeof(a) / sizeof((a)[0]))

#define DOT SMTP_DATA_DOT
#define RAW SMTP_DATA_RAW
#define LF  SMTP_DATA_BARE_LF
#define CR  SMTP_DATA_BARE_CR
#define LONG SMTP_DATA_LINE_TOO_LONG
#define NUL SMTP_DATA_NUL
#define ALL SIZE_MAX

/* A string literal as pointer + length (may hold NUL). */
#define B(s) s, sizeof(s) - 1

struct data_case {
	const char *label;
	enum smtp_data_mode mode;
	bool normalize;
	size_t max_line;
	const char *in;
	size_t in_len;
	int ret;            /* 1: end of data seen */
	size_t consumed;    /* ALL: the whole input */
	const char *out;
	size_t out_len;
	unsigned errors;
};

static const struct data_case data_cases[] = {
	/* end of data */
	{ "empty message", DOT, false, 998, B(".\r\n"), 1, 3, B(""), 0 },
	{ "empty message normalize", DOT, true, 998, B(".\r\n"), 1, 3, B(""), 0 },
	{ "one line", DOT, false, 998, B("Hello\r\n.\r\n"), 1, ALL, B("Hello\n"), 0 },
	{ "headers and body", DOT, false, 998, B("Subject: x\r\nFrom: a@b\r\n\r\nHello\r\n.\r\n"), 1,
	  ALL, B("Subject: x\nFrom: a@b\n\nHello\n"), 0 },
	{ "empty line then end", DOT, false, 998, B("\r\n.\r\n"), 1, ALL, B("\n"), 0 },
	{ "pipelined command after end", DOT, false, 998, B("Hi\r\n.\r\nQUIT\r\n"), 1, 7, B("Hi\n"),
	  0 },
	{ "pipelined mail after empty", DOT, false, 998, B(".\r\nMAIL FROM:<>\r\n"), 1, 3, B(""), 0 },
	{ "second terminator not consumed", DOT, false, 998, B("a\r\n.\r\n.\r\n"), 1, 6, B("a\n"), 0 },
	{ "no terminator yet", DOT, false, 998, B("Hello\r\n"), 0, ALL, B("Hello\n"), 0 },
	{ "pending dot", DOT, false, 998, B("Hello\r\n."), 0, ALL, B("Hello\n"), 0 },
	{ "pending dot cr", DOT, false, 998, B("Hello\r\n.\r"), 0, ALL, B("Hello\n"), 0 },
	{ "pending cr", DOT, false, 998, B("Hello\r"), 0, ALL, B("Hello"), 0 },
	{ "no final crlf", DOT, false, 998, B("Hello"), 0, ALL, B("Hello"), 0 },
	{ "empty input", DOT, false, 998, B(""), 0, ALL, B(""), 0 },
	{ "bare cr before real end", DOT, false, 998, B("a\r\r\n.\r\n"), 1, ALL, B("a\r\n"), CR },
	{ "bare cr before real end normalize", DOT, true, 998, B("a\r\r\n.\r\n"), 1, ALL,
	  B("a\n\n"), 0 },
	{ "bare lf before real end", DOT, false, 998, B("a\n\r\n.\r\n"), 1, ALL, B("a\n\n"), LF },

	/* dot-stuffing (RFC 5321 4.5.2) */
	{ "stuffed dot line", DOT, false, 998, B("..\r\n.\r\n"), 1, ALL, B(".\n"), 0 },
	{ "stuffed dot text", DOT, false, 998, B("..foo\r\n.\r\n"), 1, ALL, B(".foo\n"), 0 },
	{ "stuffed two dots", DOT, false, 998, B("...\r\n.\r\n"), 1, ALL, B("..\n"), 0 },
	{ "unstuffed leading dot removed", DOT, false, 998, B(".foo\r\n.\r\n"), 1, ALL, B("foo\n"),
	  0 },
	{ "dot in middle kept", DOT, false, 998, B("a.b\r\na.\r\n.\r\n"), 1, ALL, B("a.b\na.\n"), 0 },
	{ "stuffed after text", DOT, false, 998, B("a\r\n..\r\n.\r\n"), 1, ALL, B("a\n.\n"), 0 },
	{ "stuffed terminator lookalike", DOT, false, 998, B("a\r\n..\r\nb\r\n.\r\n"), 1, ALL,
	  B("a\n.\nb\n"), 0 },
	{ "space dot not end", DOT, false, 998, B(" .\r\n"), 0, ALL, B(" .\n"), 0 },
	{ "dot space not end", DOT, false, 998, B(".. \r\n. \r\n.\r\n"), 1, ALL, B(". \n \n"), 0 },

	/* SMTP smuggling: none of these end the data */
	{ "smuggle lf.lf", DOT, false, 998, B("a\n.\nb\r\n.\r\n"), 1, ALL, B("a\n.\nb\n"), LF },
	{ "smuggle lf.lf normalize", DOT, true, 998, B("a\n.\nb\r\n.\r\n"), 1, ALL, B("a\n.\nb\n"),
	  0 },
	{ "smuggle lf.lf only", DOT, false, 998, B("a\n.\n"), 0, ALL, B("a\n.\n"), LF },
	{ "smuggle cr.cr", DOT, false, 998, B("a\r.\rb\r\n.\r\n"), 1, ALL, B("a\r.\rb\n"), CR },
	{ "smuggle cr.cr normalize", DOT, true, 998, B("a\r.\rb\r\n.\r\n"), 1, ALL, B("a\n.\nb\n"),
	  0 },
	{ "smuggle cr.cr only", DOT, false, 998, B("a\r.\r"), 0, ALL, B("a\r."), CR },
	{ "smuggle lf.crlf", DOT, false, 998, B("a\n.\r\nb\r\n.\r\n"), 1, ALL, B("a\n.\nb\n"), LF },
	{ "smuggle lf.crlf normalize", DOT, true, 998, B("a\n.\r\nb\r\n.\r\n"), 1, ALL,
	  B("a\n.\nb\n"), 0 },
	{ "smuggle lf.crlf only", DOT, false, 998, B("a\n.\r\n"), 0, ALL, B("a\n.\n"), LF },
	{ "smuggle crlf.lf", DOT, false, 998, B("a\r\n.\nb\r\n.\r\n"), 1, ALL, B("a\n.\nb\n"), LF },
	{ "smuggle crlf.lf normalize", DOT, true, 998, B("a\r\n.\nb\r\n.\r\n"), 1, ALL,
	  B("a\n.\nb\n"), 0 },
	{ "smuggle crlf.lf only", DOT, false, 998, B("a\r\n.\n"), 0, ALL, B("a\n.\n"), LF },
	{ "smuggle crlf.cr+x", DOT, false, 998, B("a\r\n.\rb\r\n.\r\n"), 1, ALL, B("a\n.\rb\n"),
	  CR },
	{ "smuggle crlf.cr+x normalize", DOT, true, 998, B("a\r\n.\rb\r\n.\r\n"), 1, ALL,
	  B("a\n.\nb\n"), 0 },
	{ "smuggle crlf.cr+dot", DOT, false, 998, B("a\r\n.\r.\r\n"), 0, ALL, B("a\n.\r.\n"), CR },
	{ "smuggle crlf.cr+cr", DOT, false, 998, B("a\r\n.\r\r\n.\r\n"), 1, ALL, B("a\n.\r\n"),
	  CR },
	{ "smuggle crlf.cr+cr normalize", DOT, true, 998, B("a\r\n.\r\r\n.\r\n"), 1, ALL,
	  B("a\n.\n\n"), 0 },
	{ "smuggle cr.crlf", DOT, false, 998, B("a\r.\r\n"), 0, ALL, B("a\r.\n"), CR },
	{ "smuggle cr.lf", DOT, false, 998, B("a\r.\n"), 0, ALL, B("a\r.\n"), CR | LF },
	{ "smuggle lf.cr", DOT, false, 998, B("a\n.\r"), 0, ALL, B("a\n."), LF },
	{ "smuggle crlf.lf.crlf", DOT, false, 998, B("a\r\n.\n.\r\n"), 0, ALL, B("a\n.\n.\n"), LF },
	{ "smuggle first line dot lf", DOT, false, 998, B(".\nb\r\n.\r\n"), 1, ALL, B(".\nb\n"),
	  LF },
	{ "smuggle first line dot cr", DOT, false, 998, B(".\rb\r\n.\r\n"), 1, ALL, B(".\rb\n"),
	  CR },
	{ "smuggle first line lf dot", DOT, false, 998, B("\n.\r\n"), 0, ALL, B("\n.\n"), LF },
	{ "smuggle lf lf dot lf", DOT, true, 998, B("a\n\n.\n\n"), 0, ALL, B("a\n\n.\n\n"), 0 },
	{ "smuggle with mail after", DOT, false, 998,
	  B("x\n.\nMAIL FROM:<evil@x>\r\n.\r\nQUIT\r\n"), 1, 27,
	  B("x\n.\nMAIL FROM:<evil@x>\n"), LF },

	/* bare CR / LF elsewhere */
	{ "bare lf flagged", DOT, false, 998, B("a\nb\r\n.\r\n"), 1, ALL, B("a\nb\n"), LF },
	{ "bare lf normalized", DOT, true, 998, B("a\nb\r\n.\r\n"), 1, ALL, B("a\nb\n"), 0 },
	{ "bare cr flagged", DOT, false, 998, B("a\rb\r\n.\r\n"), 1, ALL, B("a\rb\n"), CR },
	{ "bare cr normalized", DOT, true, 998, B("a\rb\r\n.\r\n"), 1, ALL, B("a\nb\n"), 0 },
	{ "both flagged", DOT, false, 998, B("a\rb\nc\r\n.\r\n"), 1, ALL, B("a\rb\nc\n"), CR | LF },
	{ "lf cr is two bare", DOT, false, 998, B("a\n\rb\r\n.\r\n"), 1, ALL, B("a\n\rb\n"),
	  CR | LF },
	{ "lf cr normalized", DOT, true, 998, B("a\n\rb\r\n.\r\n"), 1, ALL, B("a\n\nb\n"), 0 },
	{ "cr cr lf", DOT, false, 998, B("a\r\r\nb\r\n.\r\n"), 1, ALL, B("a\r\nb\n"), CR },
	{ "no unstuffing after normalized lf", DOT, true, 998, B("a\n..b\r\n.\r\n"), 1, ALL,
	  B("a\n..b\n"), 0 },
	{ "stuffed dot then bare lf", DOT, false, 998, B("..\nx\r\n.\r\n"), 1, ALL, B(".\nx\n"), LF },

	/* line length (octets without CRLF; a stuffed dot counts) */
	{ "line at max", DOT, false, 5, B("12345\r\n.\r\n"), 1, ALL, B("12345\n"), 0 },
	{ "line over max", DOT, false, 5, B("123456\r\n.\r\n"), 1, ALL, B("123456\n"), LONG },
	{ "long line passes through", DOT, false, 3, B("abcdefgh\r\nab\r\n.\r\n"), 1, ALL,
	  B("abcdefgh\nab\n"), LONG },
	{ "stuffed dot counts", DOT, false, 5, B("..2345\r\n.\r\n"), 1, ALL, B(".2345\n"), LONG },
	{ "stuffed dot at max", DOT, false, 5, B("..234\r\n.\r\n"), 1, ALL, B(".234\n"), 0 },
	{ "many lines at max", DOT, false, 2, B("ab\r\ncd\r\nef\r\n.\r\n"), 1, ALL,
	  B("ab\ncd\nef\n"), 0 },
	{ "bare cr counts when flagged", DOT, false, 3, B("ab\rc\r\n.\r\n"), 1, ALL, B("ab\rc\n"),
	  CR | LONG },
	{ "bare cr splits when normalized", DOT, true, 3, B("abc\rabc\r\n.\r\n"), 1, ALL,
	  B("abc\nabc\n"), 0 },
	{ "bare lf splits when normalized", DOT, true, 3, B("abc\nabc\r\n.\r\n"), 1, ALL,
	  B("abc\nabc\n"), 0 },
	{ "zero means unlimited", DOT, false, 0, B("abcdefghijklmnopqrstuvwxyz\r\n.\r\n"), 1, ALL,
	  B("abcdefghijklmnopqrstuvwxyz\n"), 0 },
	{ "long line raw", RAW, false, 4, B("abcde\r\nabcd\r\n"), 0, ALL, B("abcde\nabcd\n"), LONG },

	/* NUL octets: flagged and dropped */
	{ "nul in text", DOT, false, 998, B("a\0b\r\n.\r\n"), 1, ALL, B("ab\n"), NUL },
	{ "nul only line", DOT, false, 998, B("\0\r\n.\r\n"), 1, ALL, B("\n"), NUL },
	{ "nul after leading dot", DOT, false, 998, B(".\0\r\n.\r\n"), 1, ALL, B("\n"), NUL },
	{ "nul counts for length", DOT, false, 2, B("a\0b\r\n.\r\n"), 1, ALL, B("ab\n"),
	  NUL | LONG },
	{ "nul does not end data", DOT, false, 998, B("a\r\n.\0\r\n"), 0, ALL, B("a\n\n"), NUL },
	{ "nul raw", RAW, false, 998, B("a\0\0b"), 0, ALL, B("ab"), NUL },

	/* RAW (BDAT): no dot handling, never ends; finish flushes a pending CR */
	{ "raw lines", RAW, false, 998, B("a\r\nb\r\n"), 0, ALL, B("a\nb\n"), 0 },
	{ "raw terminator is content", RAW, false, 998, B("a\r\n.\r\nb\r\n"), 0, ALL,
	  B("a\n.\nb\n"), 0 },
	{ "raw dots kept", RAW, false, 998, B("..a\r\n.\r\n"), 0, ALL, B("..a\n.\n"), 0 },
	{ "raw no final newline", RAW, false, 998, B("abc"), 0, ALL, B("abc"), 0 },
	{ "raw pending cr flagged", RAW, false, 998, B("a\r"), 0, ALL, B("a\r"), CR },
	{ "raw pending cr normalized", RAW, true, 998, B("a\r"), 0, ALL, B("a\n"), 0 },
	{ "raw bare lf flagged", RAW, false, 998, B("a\nb"), 0, ALL, B("a\nb"), LF },
	{ "raw bare lf normalized", RAW, true, 998, B("a\nb"), 0, ALL, B("a\nb"), 0 },
	{ "raw bare cr", RAW, false, 998, B("a\rb\r\n"), 0, ALL, B("a\rb\n"), CR },
	{ "raw empty", RAW, false, 998, B(""), 0, ALL, B(""), 0 },
};

struct run_result {
	int ret;
	size_t consumed;
	struct buf out;
	unsigned errors;
	bool overflow;
	uint64_t in_octets;
};

/*
 * Feeds in split at the given cut offsets (sorted, each 0..len) and collects
 * the result. Each chunk is a heap copy of exactly its size so ASan catches
 * reads past a chunk.
 */
static void run_split(const struct data_case *c, const size_t *cuts, size_t ncuts,
		      struct run_result *res)
{
	struct smtp_data d;
	size_t pos = 0;

	smtp_data_init(&d, c->mode, c->normalize, c->max_line);
	buf_init(&res->out, 1024 * 1024);
	res->ret = 0;
	res->consumed = 0;
	for (size_t k = 0; k <= ncuts; k++) {
		size_t end = k < ncuts ? cuts[k] : c->in_len;
		size_t n = end - pos;
		char *chunk = malloc(n > 0 ? n : 1);
		size_t consumed = 0;
		assert_non_null(chunk);
		memcpy(chunk, c->in + pos, n);
		int ret = smtp_data_feed(&d, chunk, n, &consumed, &res->out);
		free(chunk);
		assert_true(ret == 0 || ret == 1);
		assert_true(consumed <= n);
		res->consumed += consumed;
		if (ret == 1) {
			res->ret = 1;
			/* Further input is not consumed. */
			size_t again = 99;
			assert_int_equal(smtp_data_feed(&d, "x", 1, &again, &res->out), 1);
			assert_int_equal(again, 0);
			break;
		}
		assert_int_equal(consumed, n);
		pos = end;
	}
	if (c->mode == SMTP_DATA_RAW)
		smtp_data_finish(&d, &res->out);
	res->errors = d.errors;
	res->overflow = d.overflow;
	res->in_octets = d.in_octets;
}

static void check_result(const struct data_case *c, const struct run_result *res,
			 const char *how)
{
	size_t consumed = c->consumed == ALL ? c->in_len : c->consumed;

	if (res->ret != c->ret || res->consumed != consumed || res->errors != c->errors ||
	    res->out.len != c->out_len ||
	    (c->out_len > 0 && memcmp(res->out.data, c->out, c->out_len) != 0) ||
	    res->overflow || res->in_octets != consumed) {
		fail_msg("case '%s' (%s): ret %d/%d consumed %zu/%zu errors %u/%u out_len %zu/%zu "
			 "overflow %d in_octets %llu",
			 c->label, how, res->ret, c->ret, res->consumed, consumed, res->errors,
			 c->errors, res->out.len, c->out_len, res->overflow,
			 (unsigned long long)res->in_octets);
	}
}

static void run_case(const struct data_case *c)
{
	struct run_result res;
	size_t cuts[2];
	char how[64];

	/* whole */
	run_split(c, NULL, 0, &res);
	check_result(c, &res, "whole");
	buf_free(&res.out);

	/* one byte at a time */
	{
		size_t *all = malloc((c->in_len + 1) * sizeof(*all));
		assert_non_null(all);
		for (size_t i = 0; i < c->in_len; i++)
			all[i] = i + 1;
		run_split(c, all, c->in_len > 0 ? c->in_len - 1 : 0, &res);
		check_result(c, &res, "byte at a time");
		buf_free(&res.out);
		free(all);
	}

	/* two chunks, every split (including empty chunks at either end) */
	for (size_t i = 0; i <= c->in_len; i++) {
		cuts[0] = i;
		run_split(c, cuts, 1, &res);
		snprintf(how, sizeof(how), "split at %zu", i);
		check_result(c, &res, how);
		buf_free(&res.out);
	}

	/* three chunks, every pair of splits */
	if (c->in_len <= 48) {
		for (size_t i = 0; i <= c->in_len; i++) {
			for (size_t j = i; j <= c->in_len; j++) {
				cuts[0] = i;
				cuts[1] = j;
				run_split(c, cuts, 2, &res);
				snprintf(how, sizeof(how), "split at %zu,%zu", i, j);
				check_result(c, &res, how);
				buf_free(&res.out);
			}
		}
	}
}

static void test_data_cases(void **state)
{
	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(data_cases); i++)
		run_case(&data_cases[i]);
}

/* A realistic message whose terminator is split at every boundary, with
 * pipelined commands after it. */
static void test_data_terminator_splits(void **state)
{
	static const char msg[] = "From: a@b.example\r\nSubject: hi\r\n\r\nline 1\r\n..dot\r\n"
		"\r\n.\r\nRSET\r\n";
	const size_t term_end = sizeof(msg) - 1 - strlen("RSET\r\n");
	(void)state;

	struct data_case c = { "terminator splits", DOT, false, 998, B(msg), 1, term_end,
			       B("From: a@b.example\nSubject: hi\n\nline 1\n.dot\n\n"), 0 };
	run_case(&c);
}

/* Long line with no limit and with a limit, fed whole and byte-wise. */
static void test_data_long_line(void **state)
{
	const size_t n = 5000;
	char *in = malloc(n + 5), *out = malloc(n + 1);
	(void)state;

	assert_non_null(in);
	assert_non_null(out);
	memset(in, 'x', n);
	memcpy(in + n, "\r\n.\r\n", 5);
	memset(out, 'x', n);
	out[n] = '\n';
	struct data_case c1 = { "5000 unlimited", DOT, false, 0, in, n + 5, 1, ALL, out, n + 1, 0 };
	struct data_case c2 = { "5000 at 4999", DOT, false, 4999, in, n + 5, 1, ALL, out, n + 1,
				LONG };
	struct data_case c3 = { "5000 at 5000", DOT, false, 5000, in, n + 5, 1, ALL, out, n + 1,
				0 };
	struct data_case c4 = { "5000 at 998", DOT, false, 998, in, n + 5, 1, ALL, out, n + 1,
				LONG };
	struct data_case *cases[] = { &c1, &c2, &c3, &c4 };
	for (size_t i = 0; i < N_ELEMENTS(cases); i++) {
		struct run_result res;
		run_split(cases[i], NULL, 0, &res);
		check_result(cases[i], &res, "whole");
		buf_free(&res.out);
		size_t *cuts = malloc((n + 5) * sizeof(*cuts));
		assert_non_null(cuts);
		for (size_t k = 0; k < n + 4; k++)
			cuts[k] = k + 1;
		run_split(cases[i], cuts, n + 4, &res);
		check_result(cases[i], &res, "byte at a time");
		buf_free(&res.out);
		free(cuts);
	}
	free(in);
	free(out);
}

/* out at its max: input is still consumed to the end, the flag is set. */
static void test_data_overflow(void **state)
{
	struct smtp_data d;
	struct buf out;
	size_t consumed = 0;
	const char in[] = "0123456789\r\nabcdefghij\r\n.\r\nQUIT\r\n";
	(void)state;

	smtp_data_init(&d, SMTP_DATA_DOT, false, 998);
	buf_init(&out, 8);
	assert_int_equal(smtp_data_feed(&d, in, sizeof(in) - 1, &consumed, &out), 1);
	assert_int_equal(consumed, sizeof(in) - 1 - 6);
	assert_true(d.overflow);
	assert_true(out.len <= 8);
	assert_int_equal(d.errors, 0);
	buf_free(&out);

	/* draining between calls avoids it */
	smtp_data_init(&d, SMTP_DATA_DOT, false, 998);
	buf_init(&out, 12);
	assert_int_equal(smtp_data_feed(&d, in, 12, &consumed, &out), 0);
	assert_string_equal(out.data, "0123456789\n");
	buf_reset(&out);
	assert_int_equal(smtp_data_feed(&d, in + 12, sizeof(in) - 1 - 12, &consumed, &out), 1);
	assert_string_equal(out.data, "abcdefghij\n");
	assert_false(d.overflow);
	assert_int_equal(d.in_octets, sizeof(in) - 1 - 6);
	buf_free(&out);
}

/* consumed_r may be NULL; finish in DOT mode after the end does nothing. */
static void test_data_misc(void **state)
{
	struct smtp_data d;
	struct buf out;
	(void)state;

	buf_init(&out, 1024);
	smtp_data_init(&d, SMTP_DATA_DOT, false, 998);
	assert_int_equal(smtp_data_feed(&d, "a\r\n.\r\n", 6, NULL, &out), 1);
	smtp_data_finish(&d, &out);
	assert_string_equal(out.data, "a\n");
	assert_int_equal(d.errors, 0);
	buf_reset(&out);

	/* RAW: several chunks, CR at the end of one, LF at the start of the next */
	smtp_data_init(&d, SMTP_DATA_RAW, false, 998);
	assert_int_equal(smtp_data_feed(&d, "a\r", 2, NULL, &out), 0);
	assert_int_equal(smtp_data_feed(&d, "\nb\r", 3, NULL, &out), 0);
	assert_int_equal(smtp_data_feed(&d, "\n", 1, NULL, &out), 0);
	smtp_data_finish(&d, &out);
	assert_string_equal(out.data, "a\nb\n");
	assert_int_equal(d.errors, 0);
	assert_int_equal(d.in_octets, 6);
	buf_free(&out);
}

/* Reference for where DOT data ends: ".\r\n" at the start, else the first
 * "\r\n.\r\n". Returns the octets up to and including it, or 0. */
static size_t ref_end(const char *s, size_t len)
{
	if (len >= 3 && memcmp(s, ".\r\n", 3) == 0)
		return 3;
	for (size_t i = 0; i + 5 <= len; i++) {
		if (memcmp(s + i, "\r\n.\r\n", 5) == 0)
			return i + 5;
	}
	return 0;
}

/* Reference flags over what was consumed (not normalizing). A CR at the very
 * end of unterminated input is still pending, hence not yet flagged. */
static unsigned ref_flags(const char *s, size_t len)
{
	unsigned f = 0;
	for (size_t i = 0; i < len; i++) {
		if (s[i] == '\n' && (i == 0 || s[i - 1] != '\r'))
			f |= SMTP_DATA_BARE_LF;
		if (s[i] == '\r' && i + 1 < len && s[i + 1] != '\n')
			f |= SMTP_DATA_BARE_CR;
		if (s[i] == '\0')
			f |= SMTP_DATA_NUL;
	}
	return f;
}

/* Random inputs over an alphabet of the interesting octets: the result is
 * independent of chunking and matches the reference end and flags. */
static void test_data_random(void **state)
{
	static const char alphabet[] = { '\r', '\n', '.', 'a', '\0', '\r', '\n', '.' };
	uint32_t seed = 12345;
	char in[40];
	(void)state;

	for (int iter = 0; iter < 20000; iter++) {
		seed = seed * 1103515245u + 12345u;
		size_t len = (seed >> 16) % sizeof(in);
		for (size_t i = 0; i < len; i++) {
			seed = seed * 1103515245u + 12345u;
			in[i] = alphabet[(seed >> 16) % sizeof(alphabet)];
		}
		bool normalize = iter % 2 == 1;
		enum smtp_data_mode mode = iter % 4 < 2 ? SMTP_DATA_DOT : SMTP_DATA_RAW;

		/* expected: from a whole feed, checked against the reference */
		struct data_case c = { "random", mode, normalize, 3, in, len, 0, 0, NULL, 0, 0 };
		struct run_result whole;
		run_split(&c, NULL, 0, &whole);
		if (mode == SMTP_DATA_DOT) {
			size_t end = ref_end(in, len);
			assert_int_equal(whole.ret, end > 0 ? 1 : 0);
			assert_int_equal(whole.consumed, end > 0 ? end : len);
			if (!normalize) {
				unsigned f = ref_flags(in, end > 0 ? end : len);
				assert_int_equal(whole.errors & ~(unsigned)SMTP_DATA_LINE_TOO_LONG,
						 f);
			} else {
				assert_int_equal(whole.errors &
						 (SMTP_DATA_BARE_CR | SMTP_DATA_BARE_LF), 0);
			}
		}
		char *expected_out = malloc(whole.out.len + 1);
		assert_non_null(expected_out);
		memcpy(expected_out, whole.out.data != NULL ? whole.out.data : "", whole.out.len);
		c.ret = whole.ret;
		c.consumed = whole.consumed;
		c.out = expected_out;
		c.out_len = whole.out.len;
		c.errors = whole.errors;
		buf_free(&whole.out);

		/* byte-wise and two random splits give the same */
		size_t cuts[64];
		for (size_t i = 0; i + 1 < len; i++)
			cuts[i] = i + 1;
		struct run_result res;
		run_split(&c, cuts, len > 1 ? len - 1 : 0, &res);
		check_result(&c, &res, "random byte at a time");
		buf_free(&res.out);
		seed = seed * 1103515245u + 12345u;
		size_t a = len > 0 ? (seed >> 16) % (len + 1) : 0;
		seed = seed * 1103515245u + 12345u;
		size_t b = len > 0 ? (seed >> 16) % (len + 1) : 0;
		cuts[0] = a < b ? a : b;
		cuts[1] = a < b ? b : a;
		run_split(&c, cuts, 2, &res);
		check_result(&c, &res, "random split");
		buf_free(&res.out);
		free(expected_out);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_data_cases),
		cmocka_unit_test(test_data_terminator_splits),
		cmocka_unit_test(test_data_long_line),
		cmocka_unit_test(test_data_overflow),
		cmocka_unit_test(test_data_misc),
		cmocka_unit_test(test_data_random),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
