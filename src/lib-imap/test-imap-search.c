/*
 * test-imap-search.c — unit tests for imap-search.c: every key on a small
 * fake mailbox, NOT/OR/groups, "*" and "$", MODSEQ, RETURN/CHARSET
 * options, errors, nesting limits and the cheap-keys-first order (counted
 * callback calls). Criteria go through the real command parser, whole and
 * one byte at a time.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "lib-imap/imap-parser.h"
#include "lib-imap/imap-search.h"
#include "lib-imap/imap-seqset.h"
#include "lib/buf.h"

#define N_ELEMENTS(a) (sizeof(a) / sizeof((a)[0]))
#define DAY(y, m, d) (days_from((y), (m), (d)) * 86400)

static int64_t days_from(int y, int m, int d)
{
	/* test-local copy of the civil-date formula, independent of imap-util.c */
	y -= m <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	int64_t yoe = y - era * 400;
	int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

struct fake_msg {
	uint32_t uid, flags;
	uint64_t modseq, size;
	int64_t internaldate, sent;
	const char *keywords;   /* space-separated */
	const char *subject, *from, *to, *cc, *bcc;
	const char *body;
};

static struct fake_msg msgs[5];
static unsigned n_text_calls, n_header_calls, n_size_calls;

static void init_msgs(void)
{
	struct fake_msg m[5] = {
		{ 10, IMAP_FLAG_SEEN, 5, 1000, DAY(2024, 2, 1) + 36000, DAY(2024, 2, 1), "$Junk",
		  "Hello world", "alice@example.com", "bob@example.com", NULL, NULL,
		  "the quick brown fox" },
		{ 11, IMAP_FLAG_RECENT, 7, 5000, DAY(2024, 2, 2), DAY(2024, 1, 15), "",
		  "Meeting", "carol@example.org", "alice@example.com", "dave@example.net", NULL,
		  "agenda attached" },
		{ 15, IMAP_FLAG_ANSWERED | IMAP_FLAG_FLAGGED | IMAP_FLAG_SEEN, 9, 200,
		  DAY(2024, 2, 1) - 1, -1, "work urgent", "Re: Hello", "bob@example.com", NULL,
		  NULL, NULL, "fox again" },
		{ 20, IMAP_FLAG_DELETED | IMAP_FLAG_DRAFT, 3, 100000, DAY(2024, 3, 1),
		  DAY(2024, 2, 28), "work", "Draft", "alice@example.com", NULL, NULL,
		  "eve@example.com", "draft body" },
		{ 21, IMAP_FLAG_RECENT | IMAP_FLAG_SEEN, 12, 10, DAY(2023, 12, 31), -1, NULL, "",
		  "zed@example.com", NULL, NULL, NULL, "" },
	};
	memcpy(msgs, m, sizeof(msgs));
}

static bool ci_contains(const char *hay, const char *needle)
{
	size_t n = strlen(needle);
	if (hay == NULL)
		return false;
	for (const char *p = hay; *p != '\0' || n == 0; p++) {
		if (strncasecmp(p, needle, n) == 0)
			return true;
		if (*p == '\0')
			break;
	}
	return false;
}

static uint64_t size_cb(void *ctx)
{
	n_size_calls++;
	return ((const struct fake_msg *)ctx)->size;
}

static bool has_keyword_cb(void *ctx, const char *kw)
{
	const char *k = ((const struct fake_msg *)ctx)->keywords;
	size_t n = strlen(kw);
	while (k != NULL && *k != '\0') {
		size_t len = strcspn(k, " ");
		if (len == n && strncasecmp(k, kw, n) == 0)
			return true;
		k += len;
		while (*k == ' ')
			k++;
	}
	return false;
}

static int64_t sent_date_cb(void *ctx)
{
	return ((const struct fake_msg *)ctx)->sent;
}

static const char *field_of(const struct fake_msg *m, const char *field)
{
	if (strcasecmp(field, "Subject") == 0)
		return m->subject;
	if (strcasecmp(field, "From") == 0)
		return m->from;
	if (strcasecmp(field, "To") == 0)
		return m->to;
	if (strcasecmp(field, "Cc") == 0)
		return m->cc;
	if (strcasecmp(field, "Bcc") == 0)
		return m->bcc;
	return NULL;
}

static bool header_contains_cb(void *ctx, const char *field, const char *needle)
{
	n_header_calls++;
	return ci_contains(field_of(ctx, field), needle);
}

static bool text_contains_cb(void *ctx, const char *needle, bool with_headers)
{
	const struct fake_msg *m = ctx;
	n_text_calls++;
	if (ci_contains(m->body, needle))
		return true;
	if (!with_headers)
		return false;
	return ci_contains(m->subject, needle) || ci_contains(m->from, needle) ||
	       ci_contains(m->to, needle) || ci_contains(m->cc, needle) ||
	       ci_contains(m->bcc, needle);
}

/* Parses "s SEARCH <criteria>" with chunk-sized feeds; returns the parser
 * holding the arguments (DONE) or NULL (parse error). */
static struct imap_parser *parse_cmd(const char *criteria, size_t chunk)
{
	static const struct imap_parser_limits lim = { .depth_max = 64 };
	struct imap_parser *p = imap_parser_new(&lim);
	char line[8192];
	int len = snprintf(line, sizeof(line), "s SEARCH %s\r\n", criteria);
	assert_true(len > 0 && (size_t)len < sizeof(line));
	size_t pos = 0;
	while (pos < (size_t)len) {
		size_t n = (size_t)len - pos < chunk ? (size_t)len - pos : chunk, used;
		enum imap_parse_result r = imap_parser_feed(p, line + pos, n, &used);
		pos += used;
		if (r == IMAP_PARSE_DONE)
			return p;
		if (r == IMAP_PARSE_LITERAL)
			imap_parser_literal_accept(p, NULL, NULL);
		else if (r == IMAP_PARSE_ERROR)
			break;
	}
	imap_parser_free(&p);
	return NULL;
}

/* Runs criteria on the fake mailbox: "1 3" (matching sequence numbers),
 * "BAD <error>" or "BADCHARSET". */
static void search_run(const char *criteria, size_t chunk, const struct imap_seqset *saved,
		       struct buf *out, unsigned *ret_r)
{
	struct imap_parser *p = parse_cmd(criteria, chunk);
	struct imap_search *s = NULL;
	const char *error = NULL;
	bool badcharset;
	unsigned n;

	if (p == NULL) {
		buf_append_str(out, "PARSE-ERROR");
		return;
	}
	const struct imap_arg *args = imap_parser_args(p, &n);
	int first = imap_search_parse_options(args, n, ret_r, &badcharset, &error);
	if (first < 0) {
		buf_printf(out, badcharset ? "BADCHARSET" : "BAD %s", error);
		goto out;
	}
	if (imap_search_parse(args + first, n - (unsigned)first, 5, 21, &s, &error) < 0) {
		assert_non_null(error);
		buf_printf(out, "BAD %s", error);
		goto out;
	}
	for (unsigned i = 0; i < N_ELEMENTS(msgs); i++) {
		struct imap_search_msg m = {
			.seq = i + 1, .uid = msgs[i].uid, .flags = msgs[i].flags,
			.modseq = msgs[i].modseq, .internaldate = msgs[i].internaldate,
			.size = size_cb, .has_keyword = has_keyword_cb, .sent_date = sent_date_cb,
			.header_contains = header_contains_cb, .text_contains = text_contains_cb,
			.ctx = &msgs[i],
		};
		if (imap_search_match(s, &m, saved))
			buf_printf(out, "%s%u", out->len > 0 ? " " : "", i + 1);
	}
	if (imap_search_uses_modseq(s))
		buf_append_str(out, " +MODSEQ");
out:
	imap_search_free(&s);
	assert_null(s);
	imap_parser_free(&p);
}

struct qcase {
	const char *label;
	const char *criteria;
	const char *expect;
};

static const struct qcase qcases[] = {
	{ "all", "ALL", "1 2 3 4 5" },
	{ "seen", "SEEN", "1 3 5" },
	{ "lower-case key", "seen", "1 3 5" },
	{ "unseen", "UNSEEN", "2 4" },
	{ "new", "NEW", "2" },
	{ "old", "OLD", "1 3 4" },
	{ "recent", "RECENT", "2 5" },
	{ "answered", "ANSWERED", "3" },
	{ "unanswered", "UNANSWERED", "1 2 4 5" },
	{ "deleted", "DELETED", "4" },
	{ "undeleted", "UNDELETED", "1 2 3 5" },
	{ "draft", "DRAFT", "4" },
	{ "undraft", "UNDRAFT", "1 2 3 5" },
	{ "flagged", "FLAGGED", "3" },
	{ "unflagged", "UNFLAGGED", "1 2 4 5" },
	{ "keyword", "KEYWORD work", "3 4" },
	{ "keyword case", "KEYWORD $junk", "1" },
	{ "unkeyword", "UNKEYWORD work", "1 2 5" },
	{ "keyword system flag", "KEYWORD \\Seen", "1 3 5" },
	{ "unkeyword system flag", "UNKEYWORD \\Seen", "2 4" },
	{ "larger", "LARGER 1000", "2 4" },
	{ "smaller", "SMALLER 1000", "3 5" },
	{ "since", "SINCE 1-Feb-2024", "1 2 4" },
	{ "before", "BEFORE 1-Feb-2024", "3 5" },
	{ "on", "ON 31-Jan-2024", "3" },
	{ "on quoted", "ON \"01-Feb-2024\"", "1" },
	{ "sentsince", "SENTSINCE 1-Feb-2024", "1 4" },
	{ "sentbefore", "SENTBEFORE 1-Feb-2024", "2" },
	{ "senton", "SENTON 28-Feb-2024", "4" },
	{ "subject", "SUBJECT hello", "1 3" },
	{ "from", "FROM alice", "1 4" },
	{ "to", "TO alice", "2" },
	{ "cc", "CC dave", "2" },
	{ "bcc", "BCC eve", "4" },
	{ "from quoted", "FROM \"bob@example.com\"", "3" },
	{ "from literal", "FROM {5}\r\nalice", "1 4" },
	{ "header empty needle", "HEADER Subject \"\"", "1 2 3 4 5" },
	{ "header missing field", "HEADER X-Missing \"\"", "" },
	{ "header cc", "HEADER cc example", "2" },
	{ "body", "BODY fox", "1 3" },
	{ "body not headers", "BODY alice", "" },
	{ "text with headers", "TEXT alice", "1 2 4" },
	{ "seq range", "1:3", "1 2 3" },
	{ "seq star", "2,4:*", "2 4 5" },
	{ "star", "*", "5" },
	{ "uid range", "UID 11:20", "2 3 4" },
	{ "uid star", "UID 21:*", "5" },
	{ "uid above last", "UID 100:*", "5" },
	{ "uid none", "UID 1:9", "" },
	{ "saved", "$", "1 4" },
	{ "uid saved", "UID $", "1 4" },
	{ "not", "NOT SEEN", "2 4" },
	{ "not not", "NOT NOT SEEN", "1 3 5" },
	{ "not new", "NOT NEW", "1 3 4 5" },
	{ "not body", "NOT BODY fox", "2 4 5" },
	{ "or", "OR SEEN DELETED", "1 3 4 5" },
	{ "or or", "OR OR ANSWERED DELETED DRAFT", "3 4" },
	{ "or nested right", "OR ANSWERED OR DELETED FROM zed", "3 4 5" },
	{ "group", "(SEEN FLAGGED)", "3" },
	{ "group with or", "SEEN (OR FROM bob TO bob)", "1 3" },
	{ "nested groups", "((SEEN) ((UNFLAGGED)))", "1 5" },
	{ "modseq", "MODSEQ 7", "2 3 5 +MODSEQ" },
	{ "modseq entry", "MODSEQ \"/flags/\\\\Seen\" all 9", "3 5 +MODSEQ" },
	{ "modseq keyword entry", "MODSEQ \"/flags/work\" priv 0", "1 2 3 4 5 +MODSEQ" },
	{ "contradiction", "SEEN UNSEEN", "" },
	{ "new and seen", "NEW SEEN", "" },
	{ "seq and flag", "1:2 SEEN", "1" },
	{ "charset", "CHARSET UTF-8 SUBJECT hello", "1 3" },
	{ "charset us-ascii", "CHARSET us-ascii SEEN", "1 3 5" },
	{ "return", "RETURN (MIN COUNT) ALL", "1 2 3 4 5" },
	{ "return empty", "RETURN () CHARSET UTF-8 DRAFT", "4" },
	{ "many keys", "SEEN UNDELETED SINCE 1-Jan-2024 SMALLER 2000 TEXT fox", "1 3" },
	/* errors */
	{ "no criteria", "", "BAD Missing search criteria" },
	{ "unknown key", "FOO", "BAD Unknown search key" },
	{ "missing date", "SINCE", "BAD Missing search argument" },
	{ "bad day", "SINCE 31-Feb-2024", "BAD Invalid date in search" },
	{ "bad month", "SINCE 1-Foo-2024", "BAD Invalid date in search" },
	{ "two-digit year", "SINCE 1-Feb-24", "BAD Invalid date in search" },
	{ "bad number", "LARGER x", "BAD Invalid number in search" },
	{ "negative number", "LARGER -1", "BAD Invalid number in search" },
	{ "huge number", "LARGER 99999999999999999999", "BAD Invalid number in search" },
	{ "uid missing", "UID", "BAD Missing search argument" },
	{ "bad uid set", "UID a", "BAD Invalid UID set" },
	{ "zero seq", "0", "BAD Invalid message sequence set" },
	{ "bad range", "1:0", "BAD Invalid message sequence set" },
	{ "keyword missing", "KEYWORD", "BAD Missing search argument" },
	{ "keyword bad flag", "KEYWORD \\Foo", "BAD Invalid keyword" },
	{ "keyword string", "KEYWORD \"a\"", "BAD Invalid keyword" },
	{ "or one", "OR SEEN", "BAD Missing search argument" },
	{ "not alone", "NOT", "BAD Missing search argument" },
	{ "empty group", "()", "BAD Empty search group" },
	{ "modseq bad type", "MODSEQ \"/flags/\\\\Seen\" bogus 5", "BAD Invalid MODSEQ entry" },
	{ "modseq bad name", "MODSEQ \"/foo\" all 5", "BAD Invalid MODSEQ entry" },
	{ "modseq no number", "MODSEQ abc", "BAD Invalid number in search" },
	{ "header one arg", "HEADER Subject", "BAD Missing search argument" },
	{ "header empty field", "HEADER \"\" x", "BAD Empty header field name" },
	{ "string key", "\"SEEN\"", "BAD Invalid search key" },
	{ "nil key", "NIL", "BAD Invalid search key" },
	{ "list as string", "SUBJECT (a)", "BAD Invalid string in search" },
	{ "return missing", "RETURN", "BAD Missing RETURN options" },
	{ "return unknown", "RETURN (FOO) ALL", "BAD Unknown RETURN option" },
	{ "charset missing", "CHARSET", "BAD Missing CHARSET" },
	{ "bad charset", "CHARSET ISO-8859-1 ALL", "BADCHARSET" },
};

static void test_search_cases(void **state)
{
	(void)state;
	struct imap_seqset saved = { 0 };
	init_msgs();
	assert_int_equal(imap_seqset_add(&saved, 10), 0);
	assert_int_equal(imap_seqset_add(&saved, 20), 0);
	for (size_t i = 0; i < N_ELEMENTS(qcases); i++) {
		static const size_t chunks[] = { SIZE_MAX, 1 };
		for (size_t k = 0; k < N_ELEMENTS(chunks); k++) {
			struct buf out;
			unsigned ret;
			buf_init(&out, 4096);
			search_run(qcases[i].criteria, chunks[k], &saved, &out, &ret);
			const char *got = out.data != NULL ? out.data : "";
			if (strcmp(got, qcases[i].expect) != 0)
				fail_msg("case '%s' (chunk %zu): got '%s', expected '%s'",
					 qcases[i].label, k, got, qcases[i].expect);
			buf_free(&out);
		}
	}
	/* "$" without a saved result matches nothing */
	struct buf out;
	unsigned ret;
	buf_init(&out, 4096);
	search_run("$", SIZE_MAX, NULL, &out, &ret);
	assert_null(out.data);
	buf_free(&out);
	imap_seqset_free(&saved);
}

static void test_search_options(void **state)
{
	(void)state;
	struct {
		const char *criteria;
		unsigned ret;
	} cases[] = {
		{ "ALL", 0 },
		{ "RETURN (MIN COUNT) ALL", IMAP_SEARCH_RET_GIVEN | IMAP_SEARCH_RET_MIN |
						    IMAP_SEARCH_RET_COUNT },
		{ "RETURN () ALL", IMAP_SEARCH_RET_GIVEN | IMAP_SEARCH_RET_ALL },
		{ "return (max all save) ALL", IMAP_SEARCH_RET_GIVEN | IMAP_SEARCH_RET_MAX |
						       IMAP_SEARCH_RET_ALL | IMAP_SEARCH_RET_SAVE },
	};
	init_msgs();
	for (size_t i = 0; i < N_ELEMENTS(cases); i++) {
		struct buf out;
		unsigned ret = 999;
		buf_init(&out, 4096);
		search_run(cases[i].criteria, SIZE_MAX, NULL, &out, &ret);
		assert_int_equal(ret, cases[i].ret);
		buf_free(&out);
	}
}

/* Cheap keys decide first; the body is searched only where they pass. */
static void test_search_cost_order(void **state)
{
	(void)state;
	struct buf out;
	unsigned ret;
	init_msgs();

	buf_init(&out, 4096);
	n_text_calls = n_header_calls = n_size_calls = 0;
	search_run("BODY fox FROM alice SEEN", SIZE_MAX, NULL, &out, &ret);
	assert_string_equal(out.data, "1");
	assert_int_equal(n_header_calls, 3);   /* SEEN: 1, 3, 5 */
	assert_int_equal(n_text_calls, 1);     /* FROM alice: 1 */
	buf_free(&out);

	buf_init(&out, 4096);
	n_text_calls = 0;
	search_run("OR BODY fox SEEN", SIZE_MAX, NULL, &out, &ret);
	assert_string_equal(out.data, "1 3 5");
	assert_int_equal(n_text_calls, 2);     /* only 2 and 4 are not SEEN */
	buf_free(&out);

	buf_init(&out, 4096);
	n_text_calls = n_size_calls = 0;
	search_run("(TEXT fox LARGER 100) 5", SIZE_MAX, NULL, &out, &ret);
	assert_null(out.data);
	assert_int_equal(n_size_calls, 1);
	assert_int_equal(n_text_calls, 0);
	buf_free(&out);
}

static void test_search_nesting(void **state)
{
	(void)state;
	struct buf q, out;
	unsigned ret;
	init_msgs();

	/* 200 ORs, 201 keys: deep but allowed */
	buf_init(&q, 8192);
	for (int i = 0; i < 200; i++)
		buf_append_str(&q, "OR ");
	for (int i = 0; i < 201; i++)
		buf_append_str(&q, i == 200 ? "DRAFT" : "UID 1 ");
	buf_init(&out, 4096);
	search_run(q.data, SIZE_MAX, NULL, &out, &ret);
	assert_string_equal(out.data, "4");
	buf_free(&out);
	buf_free(&q);

	/* 300 NOTs: too deep */
	buf_init(&q, 8192);
	for (int i = 0; i < 300; i++)
		buf_append_str(&q, "NOT ");
	buf_append_str(&q, "SEEN");
	buf_init(&out, 4096);
	search_run(q.data, SIZE_MAX, NULL, &out, &ret);
	assert_string_equal(out.data, "BAD Search criteria nested too deeply");
	buf_free(&out);
	buf_free(&q);

	/* 100 NOTs: fine, and even */
	buf_init(&q, 8192);
	for (int i = 0; i < 100; i++)
		buf_append_str(&q, "NOT ");
	buf_append_str(&q, "SEEN");
	buf_init(&out, 4096);
	search_run(q.data, SIZE_MAX, NULL, &out, &ret);
	assert_string_equal(out.data, "1 3 5");
	buf_free(&out);
	buf_free(&q);

	/* 40 levels of parentheses: over the limit of 32 */
	buf_init(&q, 8192);
	for (int i = 0; i < 40; i++)
		buf_append_str(&q, "(");
	buf_append_str(&q, "SEEN");
	for (int i = 0; i < 40; i++)
		buf_append_str(&q, ")");
	buf_init(&out, 4096);
	search_run(q.data, SIZE_MAX, NULL, &out, &ret);
	assert_string_equal(out.data, "BAD Search criteria nested too deeply");
	buf_free(&out);
	buf_free(&q);
}

struct dcase {
	const char *s;
	int64_t t;
};

static void test_date_parse(void **state)
{
	(void)state;
	const struct dcase cases[] = {
		{ "1-Feb-1994", DAY(1994, 2, 1) },
		{ "01-feb-1994", DAY(1994, 2, 1) },
		{ "1-Jan-1970", 0 },
		{ "29-Feb-2024", DAY(2024, 2, 29) },
		{ "31-Dec-1969", -86400 },
		{ "29-Feb-2023", -1 },
		{ "29-Feb-1900", -1 },
		{ "29-Feb-2000", DAY(2000, 2, 29) },
		{ "32-Jan-2024", -1 },
		{ "0-Jan-2024", -1 },
		{ "1-Feb-94", -1 },
		{ "1-Feb-1994x", -1 },
		{ "1 Feb 1994", -1 },
		{ "001-Feb-1994", -1 },
		{ "", -1 },
		{ "1-Fe", -1 },
	};
	for (size_t i = 0; i < N_ELEMENTS(cases); i++) {
		int64_t t = imap_date_parse(cases[i].s);
		if (t != cases[i].t)
			fail_msg("date '%s': got %lld", cases[i].s, (long long)t);
	}
	assert_int_equal(imap_date_parse(NULL), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_search_cases),
		cmocka_unit_test(test_search_options),
		cmocka_unit_test(test_search_cost_order),
		cmocka_unit_test(test_search_nesting),
		cmocka_unit_test(test_date_parse),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
