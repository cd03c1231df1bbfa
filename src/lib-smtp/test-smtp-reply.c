/*
 * test-smtp-reply.c — unit tests for smtp-reply.c, the client side of SMTP
 * syntax: reading server replies (every case also fed one byte at a time and
 * split in two at every position), the one-line form, EHLO capabilities and
 * xtext encoding.
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

#define CHECK(label, cond) \
	do { \
		if (!(cond)) \
			fail_msg("case '%s': check failed: %s", (label), #cond); \
	} while (0)

#define N_ELEMENTS(a) (sizeof(a) / sizeof((a)[0]))

/* ------------------------------------------------------------ reply parser */

#define MAX_EXPECTED 4

struct exp_reply {
	unsigned code;
	const char *enhanced;
	const char *text;
	unsigned nlines;
};

struct parse_case {
	const char *label;
	const char *in;
	size_t len;                   /* 0: strlen(in) */
	unsigned nreplies;
	struct exp_reply replies[MAX_EXPECTED];
	int end;                      /* after the replies: 0 need more input, -1 error */
	const char *error;            /* the error text when end == -1 */
};

#define ERR_LONG   "reply line too long"
#define ERR_CODE   "reply line without a 3-digit code 2xx..5xx"
#define ERR_CHANGE "reply code changes between lines of one reply"
#define ERR_MANY   "too many lines in one reply"

#define R1(label, in, code, enh, text, nlines) \
	{ label, in, 0, 1, { { code, enh, text, nlines } }, 0, NULL }
#define BAD(label, in, error) { label, in, 0, 0, { { 0, NULL, NULL, 0 } }, -1, error }

static const struct parse_case parse_cases[] = {
	/* single line */
	R1("greeting", "220 mx.example ESMTP ready\r\n", 220, "", "mx.example ESMTP ready", 1),
	R1("ok enhanced", "250 2.1.0 Ok\r\n", 250, "2.1.0", "2.1.0 Ok", 1),
	R1("no text", "250\r\n", 250, "", "", 1),
	R1("space only", "250 \r\n", 250, "", "", 1),
	R1("354", "354 End data with <CR><LF>.<CR><LF>\r\n", 354, "",
	   "End data with <CR><LF>.<CR><LF>", 1),
	R1("421", "421 4.7.0 mx.example closing\r\n", 421, "4.7.0", "4.7.0 mx.example closing", 1),
	R1("599 highest", "599 x\r\n", 599, "", "x", 1),
	R1("200 lowest", "200 x\r\n", 200, "", "x", 1),
	R1("two spaces kept", "250  two\r\n", 250, "", " two", 1),

	/* multi-line */
	R1("ehlo", "250-mx.example\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250 STARTTLS\r\n", 250, "",
	   "mx.example\nPIPELINING\nSIZE 1000\nSTARTTLS", 4),
	R1("multi enhanced", "550-5.1.1 No such user\r\n550 5.1.1 Try again\r\n", 550, "5.1.1",
	   "5.1.1 No such user\n5.1.1 Try again", 2),
	R1("empty continuation", "250-\r\n250 last\r\n", 250, "", "\nlast", 2),
	R1("bare code last", "250-first\r\n250\r\n", 250, "", "first\n", 2),
	R1("enhanced only from first line", "550-first\r\n550 5.1.1 second\r\n", 550, "",
	   "first\n5.1.1 second", 2),

	/* line ends */
	R1("bare lf", "250 ok\n", 250, "", "ok", 1),
	R1("bare lf multi", "250-a\n250-b\r\n250 c\n", 250, "", "a\nb\nc", 3),
	R1("cr cr lf", "250 ok\r\r\n", 250, "", "ok?", 1),
	R1("cr inside", "250 a\rb\r\n", 250, "", "a?b", 1),

	/* enhanced codes */
	R1("enhanced no text", "550 5.1.1\r\n", 550, "5.1.1", "5.1.1", 1),
	R1("enhanced 3 digits", "451 4.123.456 x\r\n", 451, "4.123.456", "4.123.456 x", 1),
	R1("wrong class", "250 5.0.0 odd\r\n", 250, "", "5.0.0 odd", 1),
	R1("class 3", "354 3.0.0 go\r\n", 354, "", "3.0.0 go", 1),
	R1("enhanced glued", "250 2.0.0x\r\n", 250, "", "2.0.0x", 1),
	R1("enhanced colon", "250 2.0.0: ok\r\n", 250, "", "2.0.0: ok", 1),
	R1("two parts", "250 2.0 x\r\n", 250, "", "2.0 x", 1),
	R1("four digits", "250 2.1000.0 x\r\n", 250, "", "2.1000.0 x", 1),
	R1("empty part", "250 2..0 x\r\n", 250, "", "2..0 x", 1),
	R1("letters", "250 2.a.0 x\r\n", 250, "", "2.a.0 x", 1),
	R1("trailing dot", "250 2.0. x\r\n", 250, "", "2.0. x", 1),
	R1("tab after", "250 2.0.0\tx\r\n", 250, "", "2.0.0?x", 1),

	/* 8-bit and control characters in text */
	R1("8bit", "250 caf\xc3\xa9\r\n", 250, "", "caf??", 1),
	R1("tab", "250 a\tb\r\n", 250, "", "a?b", 1),
	R1("escape", "250 \x1b[31mred\r\n", 250, "", "?[31mred", 1),
	R1("del", "250 a\x7f\r\n", 250, "", "a?", 1),
	{ "nul in text", "250 a\0b\r\n", 9, 1, { { 250, "", "a?b", 1 } }, 0, NULL },

	/* pipelined replies back to back */
	{ "pipelined", "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go\r\n", 0, 3,
	  { { 250, "2.1.0", "2.1.0 Ok", 1 }, { 250, "2.1.5", "2.1.5 Ok", 1 }, { 354, "", "go", 1 } },
	  0, NULL },
	{ "pipelined multi", "250-a\r\n250 b\r\n550-5.1.1 x\r\n550 5.1.1 y\r\n", 0, 2,
	  { { 250, "", "a\nb", 2 }, { 550, "5.1.1", "5.1.1 x\n5.1.1 y", 2 } }, 0, NULL },
	{ "pipelined then partial", "250 ok\r\n250-more\r\n25", 0, 1, { { 250, "", "ok", 1 } }, 0,
	  NULL },
	{ "reply then garbage", "250 ok\r\nHTTP/1.1 400\r\n", 0, 1, { { 250, "", "ok", 1 } }, -1,
	  ERR_CODE },

	/* incomplete */
	{ "empty input", "", 0, 0, { { 0, NULL, NULL, 0 } }, 0, NULL },
	{ "no line end", "250 ok", 0, 0, { { 0, NULL, NULL, 0 } }, 0, NULL },
	{ "cr without lf", "250 ok\r", 0, 0, { { 0, NULL, NULL, 0 } }, 0, NULL },
	{ "continuation pending", "250-a\r\n", 0, 0, { { 0, NULL, NULL, 0 } }, 0, NULL },

	/* garbage */
	BAD("http", "HTTP/1.1 400 Bad Request\r\n", ERR_CODE),
	BAD("letters", "abc\r\n", ERR_CODE),
	BAD("two digits", "25\r\n", ERR_CODE),
	BAD("empty line", "\r\n", ERR_CODE),
	BAD("bare lf line", "\n", ERR_CODE),
	BAD("four digits", "2500 x\r\n", ERR_CODE),
	BAD("code 199", "199 x\r\n", ERR_CODE),
	BAD("code 600", "600 x\r\n", ERR_CODE),
	BAD("code 100", "100 x\r\n", ERR_CODE),
	BAD("code 0xx", "099 x\r\n", ERR_CODE),
	BAD("glued text", "250ok\r\n", ERR_CODE),
	BAD("tab separator", "250\tok\r\n", ERR_CODE),
	BAD("leading space", " 250 ok\r\n", ERR_CODE),
	BAD("letter in code", "2x0 ok\r\n", ERR_CODE),
	BAD("underscore", "250_ok\r\n", ERR_CODE),
	BAD("garbage continuation", "250-a\r\nxyz\r\n", ERR_CODE),
	{ "nul in code", "25\0 x\r\n", 7, 0, { { 0, NULL, NULL, 0 } }, -1, ERR_CODE },

	/* codes that change */
	BAD("code changes", "250-a\r\n251 b\r\n", ERR_CHANGE),
	BAD("class changes", "250-a\r\n550 b\r\n", ERR_CHANGE),
	{ "change after ok reply", "220 hi\r\n250-a\r\n250-b\r\n550 c\r\n", 0, 1,
	  { { 220, "", "hi", 1 } }, -1, ERR_CHANGE },
};

struct got {
	unsigned nreplies;
	struct smtp_reply replies[MAX_EXPECTED];
	int end;
	const char *error;
	size_t consumed;  /* octets consumed in all (up to the error on -1) */
};

/* Feeds in[0..len) in chunks ending at the given cut points (increasing),
 * then the rest, collecting replies; stops at the first error. */
static void feed(const char *label, const char *in, size_t len, const size_t *cuts, size_t ncuts,
		 struct got *g)
{
	struct smtp_reply_parser *p = malloc(sizeof(*p));
	struct smtp_reply *r = malloc(sizeof(*r));
	size_t prev = 0;

	assert_non_null(p);
	assert_non_null(r);
	memset(g, 0, sizeof(*g));
	smtp_reply_parser_init(p);
	for (size_t c = 0; c <= ncuts && g->end == 0; c++) {
		size_t stop = c < ncuts ? cuts[c] : len;
		size_t chunk_len = stop - prev;
		/* Exact-size heap copy: ASan catches a read past the chunk. */
		char *chunk = malloc(chunk_len > 0 ? chunk_len : 1);
		assert_non_null(chunk);
		memcpy(chunk, in + prev, chunk_len);
		size_t pos = 0;
		for (;;) {
			size_t consumed = (size_t)-1;
			const char *error = NULL;
			int ret = smtp_reply_parse(p, chunk + pos, chunk_len - pos, &consumed, r,
						   &error);
			CHECK(label, consumed <= chunk_len - pos);
			pos += consumed;
			g->consumed += consumed;
			if (ret == 1) {
				CHECK(label, g->nreplies < MAX_EXPECTED);
				g->replies[g->nreplies++] = *r;
				continue;
			}
			if (ret == 0) {
				CHECK(label, pos == chunk_len);
				break;
			}
			CHECK(label, ret == -1);
			CHECK(label, error != NULL);
			g->end = -1;
			g->error = error;
			/* sticky: a later call fails alike and consumes nothing */
			const char *error2 = NULL;
			consumed = 1;
			CHECK(label, smtp_reply_parse(p, "250 ok\r\n", 8, &consumed, r, &error2) == -1);
			CHECK(label, consumed == 0 && error2 == error);
			break;
		}
		free(chunk);
		prev = stop;
	}
	free(r);
	free(p);
}

static void check_got(const char *label, const struct got *g, unsigned nreplies,
		      const struct exp_reply *exp, int end, const char *error)
{
	char msg[512];
	CHECK(label, g->nreplies == nreplies);
	for (unsigned i = 0; i < nreplies && i < g->nreplies; i++) {
		const struct smtp_reply *r = &g->replies[i];
		snprintf(msg, sizeof(msg), "%.200s, reply %u (got %u [%.15s] '%.200s' %u)", label, i, r->code,
			 r->enhanced, r->text, r->nlines);
		CHECK(msg, r->code == exp[i].code);
		CHECK(msg, strcmp(r->enhanced, exp[i].enhanced) == 0);
		CHECK(msg, strcmp(r->text, exp[i].text) == 0);
		CHECK(msg, r->nlines == exp[i].nlines);
	}
	CHECK(label, g->end == end);
	if (end < 0)
		CHECK(label, g->error != NULL && strcmp(g->error, error) == 0);
}

/* Whole, one byte at a time, and split in two at every position: the same
 * replies, the same end and the same octets consumed. */
static void run_case(const char *label, const char *in, size_t len, unsigned nreplies,
		     const struct exp_reply *exp, int end, const char *error)
{
	struct got *whole = malloc(sizeof(*whole)), *g = malloc(sizeof(*g));
	size_t *cuts = malloc((len + 1) * sizeof(*cuts));
	char sublabel[256];

	assert_non_null(whole);
	assert_non_null(g);
	assert_non_null(cuts);
	feed(label, in, len, NULL, 0, whole);
	check_got(label, whole, nreplies, exp, end, error);
	if (end == 0)
		CHECK(label, whole->consumed == len);

	for (size_t i = 0; i < len; i++)
		cuts[i] = i;          /* cuts[0] = 0: an empty first feed too */
	snprintf(sublabel, sizeof(sublabel), "%s (byte by byte)", label);
	feed(sublabel, in, len, cuts, len, g);
	check_got(sublabel, g, nreplies, exp, end, error);
	CHECK(sublabel, g->consumed == whole->consumed);

	/* Splits at every position (skipped for the long generated inputs). */
	for (size_t at = 1; len < 4096 && at < len; at++) {
		snprintf(sublabel, sizeof(sublabel), "%s (split at %zu)", label, at);
		feed(sublabel, in, len, &at, 1, g);
		check_got(sublabel, g, nreplies, exp, end, error);
		CHECK(sublabel, g->consumed == whole->consumed);
	}
	free(cuts);
	free(g);
	free(whole);
}

static void test_reply_parse(void **state)
{
	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(parse_cases); i++) {
		const struct parse_case *c = &parse_cases[i];
		size_t len = c->len != 0 ? c->len : strlen(c->in);
		run_case(c->label, c->in, len, c->nreplies, c->replies, c->end, c->error);
	}
}

/* Consumption stops at the end of the first reply; the rest is left. */
static void test_reply_consumed(void **state)
{
	static const char in[] = "250-a\r\n250 b\r\n221 bye\r\n";
	struct smtp_reply_parser p;
	struct smtp_reply r;
	size_t consumed = 0;
	const char *error = NULL;
	(void)state;

	smtp_reply_parser_init(&p);
	assert_int_equal(smtp_reply_parse(&p, in, strlen(in), &consumed, &r, &error), 1);
	assert_int_equal(consumed, 14);
	assert_int_equal(r.code, 250);
	assert_int_equal(r.nlines, 2);
	assert_int_equal(smtp_reply_parse(&p, in + 14, strlen(in) - 14, &consumed, &r, &error), 1);
	assert_int_equal(consumed, strlen(in) - 14);
	assert_int_equal(r.code, 221);
	assert_string_equal(r.text, "bye");
	assert_int_equal(smtp_reply_parse(&p, in, 0, &consumed, &r, &error), 0);
	assert_int_equal(consumed, 0);

	/* re-init clears an error */
	assert_int_equal(smtp_reply_parse(&p, "xx\r\n", 4, &consumed, &r, &error), -1);
	assert_int_equal(consumed, 4);
	smtp_reply_parser_init(&p);
	assert_int_equal(smtp_reply_parse(&p, "250 ok\r\n", 8, &consumed, &r, &error), 1);
}

/* A buffer of n reply lines "CODE-xxxx...\r\n", the last with "CODE ". */
static char *make_lines(unsigned n, size_t text_len, size_t *len_r)
{
	size_t line = 4 + text_len + 2;
	char *b = malloc(n * line + 1);
	assert_non_null(b);
	for (unsigned i = 0; i < n; i++) {
		char *l = b + i * line;
		memcpy(l, "250", 3);
		l[3] = i + 1 < n ? '-' : ' ';
		memset(l + 4, 'a' + (char)(i % 26), text_len);
		memcpy(l + 4 + text_len, "\r\n", 2);
	}
	*len_r = n * line;
	b[*len_r] = '\0';
	return b;
}

static void test_reply_line_length(void **state)
{
	size_t len;
	char *b, *text;
	struct exp_reply exp = { 250, "", NULL, 1 };
	(void)state;

	/* exactly SMTP_REPLY_LINE_MAX octets with CRLF */
	b = make_lines(1, SMTP_REPLY_LINE_MAX - 6, &len);
	assert_int_equal(len, SMTP_REPLY_LINE_MAX);
	text = strndup(b + 4, SMTP_REPLY_LINE_MAX - 6);
	exp.text = text;
	run_case("longest line", b, len, 1, &exp, 0, NULL);
	free(text);
	free(b);

	/* one more: an error, whatever the chunking */
	b = make_lines(1, SMTP_REPLY_LINE_MAX - 5, &len);
	run_case("line one too long", b, len, 0, NULL, -1, ERR_LONG);
	free(b);

	/* with a bare LF the LF alone counts */
	b = make_lines(1, SMTP_REPLY_LINE_MAX - 5, &len);
	b[len - 2] = '\n';
	text = strndup(b + 4, SMTP_REPLY_LINE_MAX - 5);
	exp.text = text;
	run_case("longest bare lf line", b, len - 1, 1, &exp, 0, NULL);
	free(text);
	free(b);

	/* no line end at all: the error comes at the limit, not at the end */
	b = malloc(SMTP_REPLY_LINE_MAX * 4);
	assert_non_null(b);
	memcpy(b, "250 ", 4);
	memset(b + 4, 'x', SMTP_REPLY_LINE_MAX * 4 - 4);
	struct smtp_reply_parser *p = malloc(sizeof(*p));
	struct smtp_reply *r = malloc(sizeof(*r));
	size_t consumed;
	const char *error;
	assert_non_null(p);
	assert_non_null(r);
	smtp_reply_parser_init(p);
	assert_int_equal(smtp_reply_parse(p, b, SMTP_REPLY_LINE_MAX - 1, &consumed, r, &error), 0);
	assert_int_equal(consumed, SMTP_REPLY_LINE_MAX - 1);
	assert_int_equal(smtp_reply_parse(p, b, 100, &consumed, r, &error), -1);
	assert_int_equal(consumed, 1);
	assert_string_equal(error, ERR_LONG);
	smtp_reply_parser_init(p);
	assert_int_equal(smtp_reply_parse(p, b, SMTP_REPLY_LINE_MAX * 4, &consumed, r, &error), -1);
	assert_int_equal(consumed, SMTP_REPLY_LINE_MAX);
	free(r);
	free(p);
	free(b);
}

static void test_reply_many_lines(void **state)
{
	size_t len;
	char *b;
	char *text = malloc(SMTP_REPLY_TEXT_MAX);
	struct exp_reply exp = { 250, "", NULL, SMTP_REPLY_LINES_MAX };
	(void)state;

	/* 128 lines of 3 octets: all kept */
	assert_non_null(text);
	b = make_lines(SMTP_REPLY_LINES_MAX, 3, &len);
	size_t t = 0;
	for (unsigned i = 0; i < SMTP_REPLY_LINES_MAX; i++) {
		if (i > 0)
			text[t++] = '\n';
		memset(text + t, 'a' + (char)(i % 26), 3);
		t += 3;
	}
	text[t] = '\0';
	exp.text = text;
	run_case("128 lines", b, len, 1, &exp, 0, NULL);
	free(b);

	/* 129 lines: too many */
	b = make_lines(SMTP_REPLY_LINES_MAX + 1, 3, &len);
	run_case("129 lines", b, len, 0, NULL, -1, ERR_MANY);
	free(b);

	/* 128 lines of 100 octets: the text is cut at SMTP_REPLY_TEXT_MAX - 1 */
	b = make_lines(SMTP_REPLY_LINES_MAX, 100, &len);
	t = 0;
	for (unsigned i = 0; i < SMTP_REPLY_LINES_MAX && t < SMTP_REPLY_TEXT_MAX - 1; i++) {
		if (i > 0)
			text[t++] = '\n';
		for (unsigned k = 0; k < 100 && t < SMTP_REPLY_TEXT_MAX - 1; k++)
			text[t++] = 'a' + (char)(i % 26);
	}
	text[t] = '\0';
	assert_int_equal(t, SMTP_REPLY_TEXT_MAX - 1);
	exp.text = text;
	run_case("text truncated", b, len, 1, &exp, 0, NULL);
	free(b);
	free(text);
}

/* ------------------------------------------------------------ one-liner */

struct oneline_case {
	const char *label;
	const char *reply;     /* parsed first */
	const char *expected;
};

static const struct oneline_case oneline_cases[] = {
	{ "simple", "250 2.0.0 Ok\r\n", "250 2.0.0 Ok" },
	{ "no enhanced", "220 mx.example ESMTP\r\n", "220 mx.example ESMTP" },
	{ "no text", "250\r\n", "250" },
	{ "enhanced only", "550 5.1.1\r\n", "550 5.1.1" },
	{ "multi repeated enhanced", "550-5.1.1 text of line one\r\n550 5.1.1 text of line two\r\n",
	  "550 5.1.1 text of line one text of line two" },
	{ "multi without repeat", "550-5.1.1 one\r\n550 two\r\n", "550 5.1.1 one two" },
	{ "other code in continuation", "550-5.1.1 one\r\n550 5.7.1 two\r\n",
	  "550 5.1.1 one 5.7.1 two" },
	{ "no enhanced multi", "250-mx.example\r\n250-PIPELINING\r\n250 SIZE 10\r\n",
	  "250 mx.example PIPELINING SIZE 10" },
	{ "empty lines skipped", "451-\r\n451-4.3.0 busy\r\n451\r\n", "451 4.3.0 busy" },
	{ "8bit sanitised", "550 5.7.1 d\xc3\xa9j\xc3\xa0\r\n", "550 5.7.1 d??j??" },
	{ "gmail style",
	  "550-5.1.1 The email account that you tried to reach does not exist.\r\n"
	  "550-5.1.1 Please try double-checking the recipient's email address.\r\n"
	  "550 5.1.1  https://support.example/?p=NoSuchUser x1si - gsmtp\r\n",
	  "550 5.1.1 The email account that you tried to reach does not exist. Please try "
	  "double-checking the recipient's email address. https://support.example/?p=NoSuchUser "
	  "x1si - gsmtp" },
};

static void parse_one(const char *in, struct smtp_reply *r)
{
	struct smtp_reply_parser *p = malloc(sizeof(*p));
	size_t consumed;
	const char *error;
	assert_non_null(p);
	smtp_reply_parser_init(p);
	assert_int_equal(smtp_reply_parse(p, in, strlen(in), &consumed, r, &error), 1);
	assert_int_equal(consumed, strlen(in));
	free(p);
}

static void test_reply_oneline(void **state)
{
	struct smtp_reply *r = malloc(sizeof(*r));
	char out[1024];
	(void)state;

	assert_non_null(r);
	for (size_t i = 0; i < N_ELEMENTS(oneline_cases); i++) {
		const struct oneline_case *c = &oneline_cases[i];
		parse_one(c->reply, r);
		smtp_reply_oneline(r, out, sizeof(out));
		if (strcmp(out, c->expected) != 0)
			fail_msg("case '%s': got '%s'", c->label, out);
	}

	/* truncation, always NUL-terminated */
	parse_one("550-5.1.1 one\r\n550 5.1.1 two\r\n", r);
	memset(out, 'Z', sizeof(out));
	smtp_reply_oneline(r, out, 1);
	assert_string_equal(out, "");
	smtp_reply_oneline(r, out, 4);
	assert_string_equal(out, "550");
	smtp_reply_oneline(r, out, 8);
	assert_string_equal(out, "550 5.1");
	smtp_reply_oneline(r, out, 18);
	assert_string_equal(out, "550 5.1.1 one two");
	out[0] = 'Z';
	smtp_reply_oneline(r, out, 0);
	assert_int_equal(out[0], 'Z');

	/* built by hand: the enhanced code is not in the text, so it goes in */
	memset(r, 0, sizeof(*r));
	r->code = 451;
	strcpy(r->enhanced, "4.4.1");
	strcpy(r->text, "connection refused\nby peer\t!");
	r->nlines = 2;
	smtp_reply_oneline(r, out, sizeof(out));
	assert_string_equal(out, "451 4.4.1 connection refused by peer?!");
	free(r);
}

/* ------------------------------------------------------------ EHLO caps */

struct caps_case {
	const char *label;
	const char *reply;
	struct smtp_ehlo_caps caps;
};

static const struct caps_case caps_cases[] = {
	{ "full",
	  "250-mx.example Hello\r\n250-PIPELINING\r\n250-SIZE 35882577\r\n250-8BITMIME\r\n"
	  "250-STARTTLS\r\n250-ENHANCEDSTATUSCODES\r\n250-DSN\r\n250-SMTPUTF8\r\n"
	  "250-CHUNKING\r\n250 AUTH PLAIN LOGIN\r\n",
	  { .pipelining = true, .starttls = true, .eightbitmime = true, .smtputf8 = true,
	    .chunking = true, .dsn = true, .enhancedstatuscodes = true, .auth_plain = true,
	    .auth_login = true, .size_given = true, .size = 35882577 } },
	{ "name only", "250 mx.example\r\n", { 0 } },
	{ "first line not a keyword", "250-PIPELINING\r\n250 DSN\r\n", { .dsn = true } },
	{ "lower case", "250-mx\r\n250-pipelining\r\n250-starttls\r\n250 auth login plain\r\n",
	  { .pipelining = true, .starttls = true, .auth_plain = true, .auth_login = true } },
	{ "old auth form", "250-mx\r\n250-AUTH=PLAIN LOGIN\r\n250 8BITMIME\r\n",
	  { .auth_plain = true, .auth_login = true, .eightbitmime = true } },
	{ "auth other mechs", "250-mx\r\n250 AUTH CRAM-MD5 XOAUTH2 PLAINX\r\n", { 0 } },
	{ "auth login only", "250-mx\r\n250 AUTH  GSSAPI LOGIN \r\n", { .auth_login = true } },
	{ "both auth forms", "250-mx\r\n250-AUTH PLAIN\r\n250 AUTH=LOGIN\r\n",
	  { .auth_plain = true, .auth_login = true } },
	{ "size no number", "250-mx\r\n250 SIZE\r\n", { .size_given = true, .size = 0 } },
	{ "size zero", "250-mx\r\n250 SIZE 0\r\n", { .size_given = true, .size = 0 } },
	{ "size trailing space", "250-mx\r\n250 SIZE 1000 \r\n", { .size_given = true, .size = 1000 } },
	{ "size max", "250-mx\r\n250 SIZE 18446744073709551615\r\n",
	  { .size_given = true, .size = UINT64_MAX } },
	{ "size overflow ignored", "250-mx\r\n250 SIZE 18446744073709551616\r\n", { 0 } },
	{ "size junk ignored", "250-mx\r\n250 SIZE 10k\r\n", { 0 } },
	{ "size negative ignored", "250-mx\r\n250 SIZE -1\r\n", { 0 } },
	{ "size with equals ignored", "250-mx\r\n250 SIZE=100\r\n", { 0 } },
	{ "keyword prefix", "250-mx\r\n250-PIPELININGX\r\n250-DSNX\r\n250 STARTTLSX\r\n", { 0 } },
	{ "keyword with params", "250-mx\r\n250 DSN foo\r\n", { .dsn = true } },
	{ "8bit in keyword", "250-mx\r\n250-8BITMIM\xc3\x89\r\n250 SMTPUTF8\r\n",
	  { .smtputf8 = true } },
	{ "empty lines", "250-mx\r\n250-\r\n250 CHUNKING\r\n", { .chunking = true } },
	{ "not 250", "550-mx\r\n550 PIPELINING\r\n", { 0 } },
};

static void test_ehlo_caps(void **state)
{
	struct smtp_reply *r = malloc(sizeof(*r));
	(void)state;

	assert_non_null(r);
	for (size_t i = 0; i < N_ELEMENTS(caps_cases); i++) {
		const struct caps_case *c = &caps_cases[i];
		const struct smtp_ehlo_caps *e = &c->caps;
		struct smtp_ehlo_caps caps;
		parse_one(c->reply, r);
		memset(&caps, 0xa5, sizeof(caps));
		smtp_ehlo_caps_parse(r, &caps);
		CHECK(c->label, caps.pipelining == e->pipelining);
		CHECK(c->label, caps.starttls == e->starttls);
		CHECK(c->label, caps.eightbitmime == e->eightbitmime);
		CHECK(c->label, caps.smtputf8 == e->smtputf8);
		CHECK(c->label, caps.chunking == e->chunking);
		CHECK(c->label, caps.dsn == e->dsn);
		CHECK(c->label, caps.enhancedstatuscodes == e->enhancedstatuscodes);
		CHECK(c->label, caps.auth_plain == e->auth_plain);
		CHECK(c->label, caps.auth_login == e->auth_login);
		CHECK(c->label, caps.size_given == e->size_given);
		CHECK(c->label, caps.size == e->size);
	}
	free(r);
}

/* ------------------------------------------------------------ xtext */

struct xtext_case {
	const char *label;
	const char *in;
	const char *encoded;
	bool decodes;          /* smtp_xtext_decode() takes it back */
};

static const struct xtext_case xtext_cases[] = {
	{ "plain", "abc123", "abc123", true },
	{ "empty", "", "", true },
	{ "address", "user@example.com", "user@example.com", true },
	{ "plus", "a+b", "a+2Bb", true },
	{ "equals", "a=b", "a+3Db", true },
	{ "space", "a b", "a+20b", true },
	{ "orcpt", "rfc822;user+tag@example.com", "rfc822;user+2Btag@example.com", true },
	{ "punctuation", "!\"#$%&'()*,-./:;<>?@[\\]^_`{|}~", "!\"#$%&'()*,-./:;<>?@[\\]^_`{|}~",
	  true },
	{ "only specials", "+= ", "+2B+3D+20", true },
	/* encoded fine, refused by the decoder (no controls, no 8-bit) */
	{ "tab", "a\tb", "a+09b", false },
	{ "crlf", "a\r\nb", "a+0D+0Ab", false },
	{ "del", "\x7f", "+7F", false },
	{ "utf8", "j\xc3\xb6rg", "j+C3+B6rg", false },
	{ "high", "\xff", "+FF", false },
};

static void test_xtext(void **state)
{
	char enc[256], dec[256];
	(void)state;

	for (size_t i = 0; i < N_ELEMENTS(xtext_cases); i++) {
		const struct xtext_case *c = &xtext_cases[i];
		CHECK(c->label, smtp_xtext_encode(c->in, enc, sizeof(enc)) == 0);
		CHECK(c->label, strcmp(enc, c->encoded) == 0);
		int ret = smtp_xtext_decode(enc, dec, sizeof(dec));
		CHECK(c->label, ret == (c->decodes ? 0 : -1));
		if (c->decodes)
			CHECK(c->label, strcmp(dec, c->in) == 0);

		/* the exact size fits, one less does not */
		size_t need = strlen(c->encoded) + 1;
		char *tight = malloc(need);
		assert_non_null(tight);
		CHECK(c->label, smtp_xtext_encode(c->in, tight, need) == 0);
		CHECK(c->label, strcmp(tight, c->encoded) == 0);
		if (need > 1) {
			CHECK(c->label, smtp_xtext_encode(c->in, tight, need - 1) == -1);
			CHECK(c->label, tight[0] == '\0');
		}
		free(tight);
	}
	assert_int_equal(smtp_xtext_encode("", enc, 0), -1);
	assert_int_equal(smtp_xtext_encode("a", enc, 1), -1);
	assert_int_equal(enc[0], '\0');

	/* every byte the decoder can return survives the round trip */
	char all[96], big[96 * 3 + 1], back[97];
	size_t n = 0;
	for (int ch = 0x20; ch <= 0x7e; ch++)
		all[n++] = (char)ch;
	all[n] = '\0';
	assert_int_equal(smtp_xtext_encode(all, big, sizeof(big)), 0);
	for (size_t i = 0; big[i] != '\0'; i++)
		assert_true(big[i] >= '!' && big[i] <= '~' && big[i] != '=');
	assert_int_equal(smtp_xtext_decode(big, back, sizeof(back)), 0);
	assert_string_equal(back, all);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_reply_parse),
		cmocka_unit_test(test_reply_consumed),
		cmocka_unit_test(test_reply_line_length),
		cmocka_unit_test(test_reply_many_lines),
		cmocka_unit_test(test_reply_oneline),
		cmocka_unit_test(test_ehlo_caps),
		cmocka_unit_test(test_xtext),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
