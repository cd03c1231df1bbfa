/*
 * test-imap-parser.c — unit tests for imap-parser.c: commands, arguments,
 * literals (sync, LITERAL+, literal8, sinks, rejection), error recovery and
 * limits. Every case runs whole, byte at a time and in 3- and 7-octet
 * chunks, and must give the same transcript each way.
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
#include "lib/buf.h"

#define N_ELEMENTS(a) (sizeof(a) / sizeof((a)[0]))
/* a string literal with NULs: the string and its length */
#define BIN(s) s, sizeof(s) - 1

enum policy {
	POL_DEFAULT,   /* <= 64: memory, <= 1000: sink, else reject */
	POL_MEMORY,    /* always accept into memory */
};

struct pcase {
	const char *label;
	const char *input;
	size_t len;              /* 0: strlen(input) */
	const char *expect;      /* transcript */
	enum policy policy;
	const struct imap_parser_limits *lim;
};

/* ------------------------------------------------------------ harness */

static void ser_bytes(struct buf *b, const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		char c = (unsigned char)s[i] < 0x20 ? '.' : s[i];
		assert_int_equal(buf_append(b, &c, 1), 0);
	}
}

static void ser_args(struct buf *b, const struct imap_arg *a, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		if (i > 0)
			buf_append_str(b, " ");
		switch (a[i].type) {
		case IMAP_ARG_ATOM:
			assert_non_null(a[i].str);
			assert_int_equal(strlen(a[i].str), a[i].len);
			buf_append_str(b, a[i].str);
			break;
		case IMAP_ARG_NIL:
			buf_append_str(b, "@");
			buf_append_str(b, a[i].str);
			break;
		case IMAP_ARG_STRING:
			assert_int_equal(a[i].str[a[i].len], '\0');
			buf_append_str(b, "\"");
			ser_bytes(b, a[i].str, a[i].len);
			buf_append_str(b, "\"");
			break;
		case IMAP_ARG_LITERAL:
			buf_printf(b, "%s{%zu}", a[i].literal8 ? "~" : "", a[i].len);
			if (a[i].str == NULL) {
				buf_append_str(b, "sink");
			} else {
				assert_int_equal(a[i].str[a[i].len], '\0');
				ser_bytes(b, a[i].str, a[i].len);
			}
			break;
		case IMAP_ARG_LIST:
			buf_append_str(b, "(");
			ser_args(b, a[i].list, a[i].count);
			buf_append_str(b, ")");
			break;
		}
	}
}

struct sink_ctx {
	size_t got;
};

/* Fails on '!' so tests can make a sink refuse a literal. */
static int test_sink_cb(void *ctx, const char *data, size_t len)
{
	struct sink_ctx *s = ctx;
	s->got += len;
	return memchr(data, '!', len) != NULL ? -1 : 0;
}

static void record(struct imap_parser *p, enum imap_parse_result r, enum policy pol,
		   struct sink_ctx *sink, struct buf *tr, bool *stop_r)
{
	const char *tag = imap_parser_tag(p);
	switch (r) {
	case IMAP_PARSE_MORE:
		break;
	case IMAP_PARSE_DONE: {
		unsigned n;
		const struct imap_arg *a = imap_parser_args(p, &n);
		buf_printf(tr, "DONE %s %s [", tag, imap_parser_name(p));
		ser_args(tr, a, n);
		buf_append_str(tr, "]\n");
		imap_parser_reset(p);
		break;
	}
	case IMAP_PARSE_ERROR:
		buf_printf(tr, "ERROR %s %s%s\n", tag[0] == '\0' ? "-" : tag, imap_parser_error(p),
			   imap_parser_fatal(p) ? " fatal" : "");
		if (imap_parser_fatal(p))
			*stop_r = true;
		imap_parser_reset(p);
		break;
	case IMAP_PARSE_LITERAL: {
		struct imap_literal_info li;
		imap_parser_literal(p, &li);
		buf_printf(tr, "LIT %llu %s%s #%u %s\n", (unsigned long long)li.size,
			   li.sync ? "sync" : "nonsync", li.literal8 ? " 8" : "", li.index,
			   imap_parser_name(p));
		if (pol == POL_MEMORY || li.size <= 64) {
			imap_parser_literal_accept(p, NULL, NULL);
		} else if (li.size <= 1000) {
			imap_parser_literal_accept(p, test_sink_cb, sink);
		} else {
			buf_append_str(tr, "REJECT\n");
			imap_parser_literal_reject(p);
			imap_parser_reset(p);
		}
		break;
	}
	}
}

static void run(const struct pcase *c, size_t chunk, struct buf *tr)
{
	struct imap_parser *p = imap_parser_new(c->lim);
	struct sink_ctx sink = { 0 };
	size_t len = c->len != 0 ? c->len : strlen(c->input);
	size_t pos = 0;
	bool stop = false;

	assert_non_null(p);
	while (pos < len && !stop) {
		size_t n = len - pos < chunk ? len - pos : chunk;
		size_t used = 0;
		enum imap_parse_result r = imap_parser_feed(p, c->input + pos, n, &used);
		if (used > n)
			fail_msg("case '%s': used %zu > %zu", c->label, used, n);
		if (r == IMAP_PARSE_MORE && used != n)
			fail_msg("case '%s': MORE with unused input", c->label);
		pos += used;
		record(p, r, c->policy, &sink, tr, &stop);
	}
	if (!stop) {
		size_t used = 0;
		enum imap_parse_result r = imap_parser_feed(p, "", 0, &used);
		assert_int_equal(used, 0);
		record(p, r, c->policy, &sink, tr, &stop);
	}
	imap_parser_free(&p);
	assert_null(p);
}

static void run_cases(const struct pcase *cases, size_t n)
{
	static const size_t chunks[] = { SIZE_MAX, 1, 3, 7 };
	for (size_t i = 0; i < n; i++) {
		for (size_t k = 0; k < N_ELEMENTS(chunks); k++) {
			struct buf tr;
			buf_init(&tr, 1 << 20);
			run(&cases[i], chunks[k], &tr);
			const char *got = tr.data != NULL ? tr.data : "";
			if (strcmp(got, cases[i].expect) != 0)
				fail_msg("case '%s' (chunk %zu):\n--- expected\n%s--- got\n%s",
					 cases[i].label, chunks[k] == SIZE_MAX ? 0 : chunks[k],
					 cases[i].expect, got);
			buf_free(&tr);
		}
	}
}

/* ------------------------------------------------------------ valid commands */

static const struct pcase ok_cases[] = {
	{ "noop", "a1 NOOP\r\n", 0, "DONE a1 NOOP []\n", 0, NULL },
	{ "lower-case name", "a1 noop\r\n", 0, "DONE a1 NOOP []\n", 0, NULL },
	{ "bare LF", "a1 NOOP\n", 0, "DONE a1 NOOP []\n", 0, NULL },
	{ "uid folded", "a2 uid fetch 1:* (FLAGS)\r\n", 0, "DONE a2 UID FETCH [1:* (FLAGS)]\n", 0,
	  NULL },
	{ "uid alone", "a2 UID\r\n", 0, "DONE a2 UID []\n", 0, NULL },
	{ "uid uid", "a2 UID UID x\r\n", 0, "DONE a2 UID UID [x]\n", 0, NULL },
	{ "fetch sections",
	  "a3 FETCH 1 (BODY.PEEK[HEADER.FIELDS (From To)]<0.100> BINARY.PEEK[1]<0.10>)\r\n", 0,
	  "DONE a3 FETCH [1 (BODY.PEEK[HEADER.FIELDS (From To)]<0.100> BINARY.PEEK[1]<0.10>)]\n",
	  0, NULL },
	{ "section with quoted ]", "a3 FETCH 1 BODY[HEADER.FIELDS (\"X]Y\")]\r\n", 0,
	  "DONE a3 FETCH [1 BODY[HEADER.FIELDS (\"X]Y\")]]\n", 0, NULL },
	{ "body[]", "a3 FETCH 1:3,5 BODY[]\r\n", 0, "DONE a3 FETCH [1:3,5 BODY[]]\n", 0, NULL },
	{ "flags", "a4 STORE 1 +FLAGS.SILENT (\\Seen \\Deleted $Junk foo)\r\n", 0,
	  "DONE a4 STORE [1 +FLAGS.SILENT (\\Seen \\Deleted $Junk foo)]\n", 0, NULL },
	{ "list wildcards", "a5 LIST \"\" %/a*\r\n", 0, "DONE a5 LIST [\"\" %/a*]\n", 0, NULL },
	{ "quoted escapes", "a6 LOGIN \"us\\\"er\" \"p\\\\w\"\r\n", 0,
	  "DONE a6 LOGIN [\"us\"er\" \"p\\w\"]\n", 0, NULL },
	{ "quoted utf8", "a7 SELECT \"Gr\xc3\xbc\xc3\x9f" "e\"\r\n", 0,
	  "DONE a7 SELECT [\"Gr\xc3\xbc\xc3\x9f" "e\"]\n", 0, NULL },
	{ "nil", "a8 X NIL nil \"NIL\" NILS\r\n", 0, "DONE a8 X [@NIL @nil \"NIL\" NILS]\n", 0,
	  NULL },
	{ "empty list", "a9 X ()\r\n", 0, "DONE a9 X [()]\n", 0, NULL },
	{ "nested lists", "b1 X (a (b c) ((d)) ( e ))\r\n", 0,
	  "DONE b1 X [(a (b c) ((d)) (e))]\n", 0, NULL },
	{ "sync literals", "b2 LOGIN {3}\r\nbob {6}\r\nsecret\r\n", 0,
	  "LIT 3 sync #0 LOGIN\nLIT 6 sync #1 LOGIN\nDONE b2 LOGIN [{3}bob {6}secret]\n", 0,
	  NULL },
	{ "non-sync literal", "b3 LOGIN {3+}\r\nbob pw\r\n", 0,
	  "LIT 3 nonsync #0 LOGIN\nDONE b3 LOGIN [{3}bob pw]\n", 0, NULL },
	{ "literal8 with NULs", BIN("b4 APPEND INBOX ~{5}\r\na\0b\0c\r\n"),
	  "LIT 5 sync 8 #0 APPEND\nDONE b4 APPEND [INBOX ~{5}a.b.c]\n", 0, NULL },
	{ "literal8 non-sync", "b4 APPEND INBOX (\\Seen) ~{3+}\r\nabc\r\n", 0,
	  "LIT 3 nonsync 8 #0 APPEND\nDONE b4 APPEND [INBOX (\\Seen) ~{3}abc]\n", 0, NULL },
	{ "literal CRLF inside", "b4 X {4}\r\na\r\nb\r\n", 0,
	  "LIT 4 sync #0 X\nDONE b4 X [{4}a..b]\n", 0, NULL },
	{ "tilde atoms", "b5 X ~foo ~ a~b\r\n", 0, "DONE b5 X [~foo ~ a~b]\n", 0, NULL },
	{ "empty literal", "b6 X {0}\r\n\r\n", 0, "LIT 0 sync #0 X\nDONE b6 X [{0}]\n", 0, NULL },
	{ "literal in list", "b7 X (a {2}\r\nbc d)\r\n", 0,
	  "LIT 2 sync #0 X\nDONE b7 X [(a {2}bc d)]\n", 0, NULL },
	{ "literal then list end", "b7 X (a {2}\r\nbc)\r\n", 0,
	  "LIT 2 sync #0 X\nDONE b7 X [(a {2}bc)]\n", 0, NULL },
	{ "literal to sink", "b8 APPEND INBOX {100}\r\n"
	  "0123456789012345678901234567890123456789012345678901234567890123456789"
	  "012345678901234567890123456789\r\n", 0,
	  "LIT 100 sync #0 APPEND\nDONE b8 APPEND [INBOX {100}sink]\n", 0, NULL },
	{ "multiappend", "b9 APPEND INBOX {2+}\r\nab (\\Seen) {1+}\r\nc\r\n", 0,
	  "LIT 2 nonsync #0 APPEND\nLIT 1 nonsync #1 APPEND\n"
	  "DONE b9 APPEND [INBOX {2}ab (\\Seen) {1}c]\n", 0, NULL },
	{ "trailing space", "c1 NOOP \r\n", 0, "DONE c1 NOOP []\n", 0, NULL },
	{ "extra spaces", "c2 X  a   b \r\n", 0, "DONE c2 X [a b]\n", 0, NULL },
	{ "empty lines ignored", "\r\n\nc3 NOOP\r\n", 0, "DONE c3 NOOP []\n", 0, NULL },
	{ "pipelined", "c4 NOOP\r\nc5 CHECK\r\n", 0, "DONE c4 NOOP []\nDONE c5 CHECK []\n", 0,
	  NULL },
	{ "tag with ]", "c6] NOOP\r\n", 0, "DONE c6] NOOP []\n", 0, NULL },
	{ "atom with ]", "c7 X a]b\r\n", 0, "DONE c7 X [a]b]\n", 0, NULL },
	{ "date string", "c8 APPEND INBOX \"12-Jan-2024 10:00:00 +0100\" {1+}\r\nx\r\n", 0,
	  "LIT 1 nonsync #0 APPEND\nDONE c8 APPEND [INBOX \"12-Jan-2024 10:00:00 +0100\" {1}x]\n",
	  0, NULL },
	{ "4294967295 literal announced", "c9 X {4294967295}\r\nd1 NOOP\r\n", 0,
	  "LIT 4294967295 sync #0 X\nREJECT\nDONE d1 NOOP []\n", 0, NULL },
	{ "search", "d2 UID SEARCH RETURN (MIN COUNT) CHARSET UTF-8 OR FROM \"a\" SINCE "
	  "1-Feb-2024 NOT (SEEN)\r\n", 0,
	  "DONE d2 UID SEARCH [RETURN (MIN COUNT) CHARSET UTF-8 OR FROM \"a\" SINCE 1-Feb-2024 "
	  "NOT (SEEN)]\n", 0, NULL },
	{ "list followed by atom", "d3 X (a)b\r\n", 0, "ERROR d3 Missing space\n", 0, NULL },
};

static void test_parser_ok(void **state)
{
	(void)state;
	run_cases(ok_cases, N_ELEMENTS(ok_cases));
}

/* ------------------------------------------------------------ errors */

static const struct pcase err_cases[] = {
	{ "tag +", "+ NOOP\r\na NOOP\r\n", 0, "ERROR - Invalid tag\nDONE a NOOP []\n", 0, NULL },
	{ "tag *", "* NOOP\r\na NOOP\r\n", 0, "ERROR - Invalid tag\nDONE a NOOP []\n", 0, NULL },
	{ "tag with {", "a{ NOOP\r\nb NOOP\r\n", 0, "ERROR - Invalid tag\nDONE b NOOP []\n", 0,
	  NULL },
	{ "tag only", "a\r\nb NOOP\r\n", 0, "ERROR a Missing command\nDONE b NOOP []\n", 0, NULL },
	{ "tag and space", "a \r\n", 0, "ERROR a Missing command\n", 0, NULL },
	{ "uid without command", "a UID \r\nb NOOP\r\n", 0,
	  "ERROR a Missing command\nDONE b NOOP []\n", 0, NULL },
	{ "missing )", "a X (b\r\nc NOOP\r\n", 0, "ERROR a Missing ')'\nDONE c NOOP []\n", 0,
	  NULL },
	{ "unbalanced nested", "a X ((a)\r\nc NOOP\r\n", 0,
	  "ERROR a Missing ')'\nDONE c NOOP []\n", 0, NULL },
	{ "unexpected )", "a X b)\r\nc NOOP\r\n", 0, "ERROR a Unexpected ')'\nDONE c NOOP []\n",
	  0, NULL },
	{ "extra )", "a X (a))\r\n", 0, "ERROR a Unexpected ')'\n", 0, NULL },
	{ "unterminated quote", "a X \"abc\r\nb NOOP\r\n", 0,
	  "ERROR a Missing '\"'\nDONE b NOOP []\n", 0, NULL },
	{ "bad escape", "a X \"a\\nb\"\r\n", 0, "ERROR a Invalid escape in string\n", 0, NULL },
	{ "NUL in quoted", BIN("a X \"a\0b\"\r\nb NOOP\r\n"),
	  "ERROR a NUL in string\nDONE b NOOP []\n", 0, NULL },
	{ "NUL in atom", BIN("a X a\0b\r\nb NOOP\r\n"),
	  "ERROR a Invalid characters in atom\nDONE b NOOP []\n", 0, NULL },
	{ "NUL in tag", BIN("a\0 NOOP\r\nb NOOP\r\n"), "ERROR - Invalid tag\nDONE b NOOP []\n", 0,
	  NULL },
	{ "NUL in literal", BIN("a X {3}\r\na\0b\r\nb NOOP\r\n"),
	  "LIT 3 sync #0 X\nERROR a NUL in literal\nDONE b NOOP []\n", 0, NULL },
	{ "NUL in sunk literal", BIN("a X {70+}\r\n"
	  "0123456789012345678901234567890123456789\0" "12345678901234567890123456789"
	  " z\r\nb NOOP\r\n"),
	  "LIT 70 nonsync #0 X\nERROR a NUL in literal\nDONE b NOOP []\n", 0, NULL },
	{ "8-bit atom", "a X \xc3\xa4\r\nb NOOP\r\n", 0,
	  "ERROR a Invalid characters in atom\nDONE b NOOP []\n", 0, NULL },
	{ "backslash inside atom", "a X a\\b\r\n", 0, "ERROR a Invalid characters in atom\n", 0,
	  NULL },
	{ "CR without LF at end", "a NOOP\rb NOOP\r\nc NOOP\r\n", 0,
	  "ERROR a CR without LF\nDONE c NOOP []\n", 0, NULL },
	{ "CR inside line", "a X b\rc\r\nd NOOP\r\n", 0, "ERROR a CR without LF\nDONE d NOOP []\n",
	  0, NULL },
	{ "CR alone line", "\rx NOOP\r\nd NOOP\r\n", 0, "ERROR - CR without LF\nDONE d NOOP []\n",
	  0, NULL },
	{ "missing space after string", "a X \"a\"b\r\n", 0, "ERROR a Missing space\n", 0, NULL },
	{ "atom then (", "a X b(c)\r\n", 0, "ERROR a Missing space\n", 0, NULL },
	{ "literal not at line end", "a X {3}abc\r\nb NOOP\r\n", 0,
	  "ERROR a Missing CRLF after literal\nDONE b NOOP []\n", 0, NULL },
	{ "empty literal count", "a X {}\r\n", 0, "ERROR a Invalid literal\n", 0, NULL },
	{ "junk literal count", "a X {3a}\r\n", 0, "ERROR a Invalid literal\n", 0, NULL },
	{ "literal + not closed", "a X {3+x\r\n", 0, "ERROR a Invalid literal\n", 0, NULL },
	{ "missing ]", "a FETCH 1 BODY[HEADER\r\nb NOOP\r\n", 0,
	  "ERROR a Missing ']'\nDONE b NOOP []\n", 0, NULL },
	{ "literal 2^32 sync", "a X {4294967296}\r\nb NOOP\r\n", 0,
	  "ERROR a Literal too large\nDONE b NOOP []\n", 0, NULL },
	{ "literal 2^40 sync", "a X {1099511627776}\r\nb NOOP\r\n", 0,
	  "ERROR a Literal too large\nDONE b NOOP []\n", 0, NULL },
	{ "literal 2^40 non-sync is fatal", "a X {1099511627776+}\r\nb NOOP\r\n", 0,
	  "ERROR a Literal too large fatal\n", 0, NULL },
	{ "literal 10^30 digits", "a X {1000000000000000000000000000000}\r\nb NOOP\r\n", 0,
	  "ERROR a Literal too large\nDONE b NOOP []\n", 0, NULL },
	{ "rejected sync literal", "a APPEND INBOX {2000}\r\nc NOOP\r\n", 0,
	  "LIT 2000 sync #0 APPEND\nREJECT\nDONE c NOOP []\n", 0, NULL },
	{ "error line with non-sync literal is skipped whole",
	  "a X \"bad\\q\" {10+}\r\nz NOOP\r\n12\r\nb NOOP\r\n", 0,
	  "ERROR a Invalid escape in string\nDONE b NOOP []\n", 0, NULL },
	{ "error line with literal8 non-sync", "a X ) ~{8+}\r\nz NOOP\r\n\r\nb NOOP\r\n", 0,
	  "ERROR a Unexpected ')'\nDONE b NOOP []\n", 0, NULL },
	{ "error line with sync literal ends", "a X ) {8}\r\nb NOOP\r\n", 0,
	  "ERROR a Unexpected ')'\nDONE b NOOP []\n", 0, NULL },
	{ "error line with two non-sync literals",
	  "a X ) {3+}\r\nabc {4+}\r\nz\r\n\r\n\r\nb NOOP\r\n", 0,
	  "ERROR a Unexpected ')'\nDONE b NOOP []\n", 0, NULL },
	{ "sink rejects literal", "a APPEND INBOX {100}\r\n"
	  "0123456789012345678901234567890123456789!\r\nz NOOP\r\n"
	  "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx {5+}\r\nz NOO x\r\nb NOOP\r\n", 0,
	  "LIT 100 sync #0 APPEND\nERROR a Literal rejected\nDONE b NOOP []\n", 0, NULL },
};

static void test_parser_errors(void **state)
{
	(void)state;
	run_cases(err_cases, N_ELEMENTS(err_cases));
}

/* ------------------------------------------------------------ generated inputs */

static char *repeat(const char *head, const char *unit, size_t n, const char *tail, size_t *len_r)
{
	size_t hl = strlen(head), ul = strlen(unit), tl = strlen(tail);
	char *s = malloc(hl + ul * n + tl + 1);
	assert_non_null(s);
	memcpy(s, head, hl);
	for (size_t i = 0; i < n; i++)
		memcpy(s + hl + i * ul, unit, ul);
	memcpy(s + hl + ul * n, tail, tl + 1);
	*len_r = hl + ul * n + tl;
	return s;
}

static void test_parser_generated(void **state)
{
	(void)state;
	size_t len;
	static const struct imap_parser_limits small = { .line_max = 64, .literal_max = 10,
							 .depth_max = 4, .args_max = 5 };
	static const struct imap_parser_limits medium = { .line_max = 1000 };

	char *nested = repeat("a X ", "(", 10000, "\r\nb NOOP\r\n", &len);
	char *rejected = repeat("a APPEND INBOX {2000+}\r\n", "x NOOP\r\n", 250,
				"\r\nc NOOP\r\n", &len);
	char *rejected_line = repeat("a APPEND INBOX {2000+}\r\n", "x NOOP\r\n", 250,
				     " more args {3+}\r\ny\r\n\r\nc NOOP\r\n", &len);
	char *too_long = repeat("a X ", "y", 100, "\r\nb NOOP\r\n", &len);
	char *endless = repeat("a X ", "y", 1000, "", &len);
	char *long_lit_line = repeat("a X ", "y", 100, " {5+}\r\nz\r\n\r\n\r\nb NOOP\r\n", &len);
	char *many = repeat("a X", " a", 1100, "\r\nb NOOP\r\n", &len);
	char *limit_in_announce = repeat("a X ", "y", 57, " {5+}\r\nz NOO\r\nb NOOP\r\n", &len);
	char *limit_in_announce2 = repeat("a X ", "y", 55, " {5+}\r\nz NOO\r\nb NOOP\r\n", &len);
	const struct pcase cases[] = {
		{ "10000 nested (", nested, 0, "ERROR a Too deep nesting\nDONE b NOOP []\n", 0,
		  NULL },
		{ "rejected non-sync literal then command", rejected, 0,
		  "LIT 2000 nonsync #0 APPEND\nREJECT\nDONE c NOOP []\n", 0, NULL },
		{ "rejected non-sync literal, rest of line skipped", rejected_line, 0,
		  "LIT 2000 nonsync #0 APPEND\nREJECT\nDONE c NOOP []\n", 0, NULL },
		{ "line too long", too_long, 0, "ERROR a Line too long\nDONE b NOOP []\n", 0,
		  &small },
		{ "endless line is fatal", endless, 0,
		  "ERROR a Line too long\nERROR - Line too long fatal\n", 0, &small },
		{ "too long line with literal", long_lit_line, 0,
		  "ERROR a Line too long\nDONE b NOOP []\n", 0, &small },
		{ "too deep", "a X ((((( a )))))\r\nb NOOP\r\n", 0,
		  "ERROR a Too deep nesting\nDONE b NOOP []\n", 0, &small },
		{ "depth limit ok", "a X ((((a))))\r\n", 0, "DONE a X [((((a))))]\n", 0, &small },
		{ "too many args", "a X a b c d e f\r\nb NOOP\r\n", 0,
		  "ERROR a Too many arguments\nDONE b NOOP []\n", 0, &small },
		{ "args limit ok", "a X a (b c) d\r\n", 0, "DONE a X [a (b c) d]\n", 0, &small },
		{ "too many args at literal", "a X a b c d e {3+}\r\nabc\r\nb NOOP\r\n", 0,
		  "ERROR a Too many arguments\nDONE b NOOP []\n", 0, &small },
		{ "literal too large for memory", "a X {20+}\r\nz NOOP\r\n0123456789ab\r\nb NOOP\r\n",
		  0, "LIT 20 nonsync #0 X\nERROR a Literal too large\nDONE b NOOP []\n",
		  POL_MEMORY, &small },
		{ "literal total too large", "a X {9}\r\n012345678 {9}\r\n012345678 {9}\r\n012345678 "
		  "{9}\r\n012345678 {9}\r\n", 0,
		  "LIT 9 sync #0 X\nLIT 9 sync #1 X\nLIT 9 sync #2 X\nLIT 9 sync #3 X\n"
		  "LIT 9 sync #4 X\nERROR a Literal too large\n", POL_MEMORY,
		  &(const struct imap_parser_limits){ .literal_max = 10 } },
		{ "many args", many, 0, "ERROR a Line too long\nDONE b NOOP []\n", 0, &medium },
		{ "limit inside {N+}", limit_in_announce, 0,
		  "ERROR a Line too long\nDONE b NOOP []\n", 0, &small },
		{ "limit inside {N+} CRLF", limit_in_announce2, 0,
		  "ERROR a Line too long\nDONE b NOOP []\n", 0, &small },
	};
	run_cases(cases, N_ELEMENTS(cases));
	free(nested);
	free(rejected);
	free(rejected_line);
	free(too_long);
	free(endless);
	free(long_lit_line);
	free(many);
	free(limit_in_announce);
	free(limit_in_announce2);
}

/* ------------------------------------------------------------ API details */

static void test_parser_api(void **state)
{
	(void)state;
	struct imap_parser *p = imap_parser_new(NULL);
	size_t used;
	unsigned n;
	bool nil;

	/* helpers */
	const char *in = "t1 LOGIN user \"pw\" NIL (x) {2+}\r\nab\r\n";
	assert_int_equal(imap_parser_feed(p, in, strlen(in), &used), IMAP_PARSE_LITERAL);
	assert_string_equal(imap_parser_name(p), "LOGIN");
	imap_parser_literal_accept(p, NULL, NULL);
	size_t off = used;
	assert_int_equal(imap_parser_feed(p, in + off, strlen(in) - off, &used), IMAP_PARSE_DONE);
	assert_int_equal(off + used, strlen(in));
	const struct imap_arg *a = imap_parser_args(p, &n);
	assert_int_equal(n, 5);
	assert_string_equal(imap_arg_astring(&a[0]), "user");
	assert_string_equal(imap_arg_atom(&a[0]), "user");
	assert_string_equal(imap_arg_astring(&a[1]), "pw");
	assert_null(imap_arg_atom(&a[1]));
	assert_string_equal(imap_arg_nstring(&a[2], &nil), "");
	assert_true(nil);
	assert_string_equal(imap_arg_nstring(&a[1], &nil), "pw");
	assert_false(nil);
	assert_null(imap_arg_nstring(&a[0], &nil));
	assert_true(imap_arg_is_list(&a[3]));
	assert_null(imap_arg_astring(&a[3]));
	assert_int_equal(a[3].count, 1);
	assert_string_equal(a[3].list[0].str, "x");
	assert_string_equal(imap_arg_astring(&a[4]), "ab");
	assert_string_equal(imap_parser_tag(p), "t1");
	imap_parser_reset(p);
	assert_null(imap_parser_name(p));
	assert_string_equal(imap_parser_tag(p), "");

	/* LITERAL is reported again until decided */
	in = "t2 X {3}\r\n";
	assert_int_equal(imap_parser_feed(p, in, strlen(in), &used), IMAP_PARSE_LITERAL);
	assert_int_equal(imap_parser_feed(p, "abc", 3, &used), IMAP_PARSE_LITERAL);
	assert_int_equal(used, 0);
	/* reset while undecided on a sync literal: ready for a new command */
	imap_parser_reset(p);
	in = "t3 NOOP\r\n";
	assert_int_equal(imap_parser_feed(p, in, strlen(in), &used), IMAP_PARSE_DONE);
	assert_string_equal(imap_parser_tag(p), "t3");
	/* feeding again without reset resets implicitly */
	in = "t4 NOOP\r\n";
	assert_int_equal(imap_parser_feed(p, in, strlen(in), &used), IMAP_PARSE_DONE);
	assert_string_equal(imap_parser_tag(p), "t4");

	/* reset in the middle of a non-sync literal skips the rest of it */
	imap_parser_reset(p);
	in = "t5 APPEND X {12+}\r\nz NOOP\r\n";
	assert_int_equal(imap_parser_feed(p, in, strlen(in), &used), IMAP_PARSE_LITERAL);
	struct sink_ctx sink = { 0 };
	imap_parser_literal_accept(p, test_sink_cb, &sink);
	off = used;
	assert_int_equal(imap_parser_feed(p, in + off, strlen(in) - off, &used), IMAP_PARSE_MORE);
	assert_int_equal(sink.got, 8);
	imap_parser_reset(p);
	in = "xxxx\r\nt6 NOOP\r\n";
	assert_int_equal(imap_parser_feed(p, in, strlen(in), &used), IMAP_PARSE_DONE);
	assert_string_equal(imap_parser_tag(p), "t6");

	/* a fatal parser stays fatal */
	imap_parser_reset(p);
	in = "t7 X {99999999999+}\r\n";
	assert_int_equal(imap_parser_feed(p, in, strlen(in), &used), IMAP_PARSE_ERROR);
	assert_true(imap_parser_fatal(p));
	imap_parser_reset(p);
	assert_int_equal(imap_parser_feed(p, "t8 NOOP\r\n", 9, &used), IMAP_PARSE_ERROR);
	assert_int_equal(used, 0);
	imap_parser_free(&p);
	imap_parser_free(&p);   /* NULL is fine */
}

/* Arguments stay valid across many commands and arena growth. */
static void test_parser_reuse(void **state)
{
	(void)state;
	struct imap_parser *p = imap_parser_new(NULL);
	char line[256];
	for (int i = 0; i < 2000; i++) {
		size_t used;
		unsigned n;
		int len = snprintf(line, sizeof(line), "t%d FETCH %d:%d (FLAGS UID \"s%d\")\r\n", i, i,
				   i + 1, i);
		assert_int_equal(imap_parser_feed(p, line, (size_t)len, &used), IMAP_PARSE_DONE);
		assert_int_equal(used, (size_t)len);
		const struct imap_arg *a = imap_parser_args(p, &n);
		assert_int_equal(n, 2);
		assert_int_equal(a[1].count, 3);
		char want[32];
		snprintf(want, sizeof(want), "s%d", i);
		assert_string_equal(a[1].list[2].str, want);
		imap_parser_reset(p);
	}
	imap_parser_free(&p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parser_ok),
		cmocka_unit_test(test_parser_errors),
		cmocka_unit_test(test_parser_generated),
		cmocka_unit_test(test_parser_api),
		cmocka_unit_test(test_parser_reuse),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
