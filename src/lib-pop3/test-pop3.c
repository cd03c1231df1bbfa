/*
 * test-pop3.c — unit tests for lib-pop3: command line parsing, number
 * arguments, and the dot-stuffing writer (RETR and TOP) fed whole, one
 * byte at a time, with a tiny output buffer and split at every position.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib-pop3/pop3.h"

#define CHECK(label, cond) \
	do { \
		if (!(cond)) \
			fail_msg("case '%s': check failed: %s", (label), #cond); \
	} while (0)

#define N_ELEMENTS(a) (sizeof(a) / sizeof((a)[0]))

/* ---- command lines ---- */

struct cmd_case {
	const char *label;
	const char *line;
	size_t len;               /* 0: strlen(line) */
	int ret;
	enum pop3_cmd cmd;
	const char *keyword;
	const char *args;         /* expected args (exact) */
	const char *error;
};

#define OKC(label, line, cmd, kw, args) { label, line, 0, 0, cmd, kw, args, NULL }
#define BADC(label, line, err) { label, line, 0, -1, POP3_CMD_UNKNOWN, NULL, NULL, err }

static char long_line_ok[POP3_LINE_MAX - 2 + 1];
static char long_line_bad[POP3_LINE_MAX - 1 + 1];

static const struct cmd_case cmd_cases[] = {
	OKC("retr with number", "RETR 3", POP3_CMD_RETR, "RETR", "3"),
	OKC("lower case keyword", "retr 3", POP3_CMD_RETR, "RETR", "3"),
	OKC("mixed case top", "Top 1 10", POP3_CMD_TOP, "TOP", "1 10"),
	OKC("quit bare", "QUIT", POP3_CMD_QUIT, "QUIT", ""),
	OKC("noop trailing space", "NOOP ", POP3_CMD_NOOP, "NOOP", ""),
	OKC("pass keeps spaces", "PASS my secret  pass ", POP3_CMD_PASS, "PASS",
	    "my secret  pass "),
	OKC("user", "USER alice@example.com", POP3_CMD_USER, "USER", "alice@example.com"),
	OKC("auth plain ir", "AUTH PLAIN AGFsaWNlAHNlY3JldA==", POP3_CMD_AUTH, "AUTH",
	    "PLAIN AGFsaWNlAHNlY3JldA=="),
	OKC("capa", "capa", POP3_CMD_CAPA, "CAPA", ""),
	OKC("stls", "STLS", POP3_CMD_STLS, "STLS", ""),
	OKC("stat", "STAT", POP3_CMD_STAT, "STAT", ""),
	OKC("list", "LIST", POP3_CMD_LIST, "LIST", ""),
	OKC("uidl n", "UIDL 7", POP3_CMD_UIDL, "UIDL", "7"),
	OKC("dele", "dele 2", POP3_CMD_DELE, "DELE", "2"),
	OKC("rset", "RSET", POP3_CMD_RSET, "RSET", ""),
	OKC("apop", "APOP mrose c4c9334bac560ecc979e58001b3e22fb", POP3_CMD_APOP, "APOP",
	    "mrose c4c9334bac560ecc979e58001b3e22fb"),
	OKC("unknown 4 letters", "XYZZ", POP3_CMD_UNKNOWN, "XYZZ", ""),
	OKC("unknown 1 letter", "x 1", POP3_CMD_UNKNOWN, "X", "1"),
	OKC("prefix of a keyword is unknown", "RET 1", POP3_CMD_UNKNOWN, "RET", "1"),
	BADC("empty", "", "empty command"),
	BADC("five letters", "RETRX 1", "invalid command syntax"),
	BADC("digit in keyword", "RE1R", "invalid command syntax"),
	BADC("leading space", " RETR 1", "invalid command syntax"),
	BADC("tab separator", "RETR\t1", "invalid command syntax"),
	BADC("utf8 keyword", "\xc3\xa9t\xc3\xa9", "invalid command syntax"),
	{ "NUL in args", "RETR 1\0 2", 9, -1, POP3_CMD_UNKNOWN, NULL, NULL,
	  "NUL octet in command" },
	{ "NUL in keyword", "RE\0R", 4, -1, POP3_CMD_UNKNOWN, NULL, NULL,
	  "NUL octet in command" },
};

static void check_cmd(const struct cmd_case *c, const char *line, size_t len)
{
	/* An exact-size heap copy, so that ASan sees a read past the end. */
	char *copy = malloc(len > 0 ? len : 1);
	assert_non_null(copy);
	memcpy(copy, line, len);
	struct pop3_command cmd;
	const char *error = NULL;
	int ret = pop3_command_parse(copy, len, &cmd, &error);
	CHECK(c->label, ret == c->ret);
	if (ret == 0) {
		CHECK(c->label, cmd.cmd == c->cmd);
		CHECK(c->label, strcmp(cmd.keyword, c->keyword) == 0);
		CHECK(c->label, cmd.args_len == strlen(c->args));
		CHECK(c->label, memcmp(cmd.args, c->args, cmd.args_len) == 0);
		CHECK(c->label, cmd.args >= copy && cmd.args <= copy + len);
		if (cmd.cmd != POP3_CMD_UNKNOWN)
			CHECK(c->label, strcmp(pop3_command_name(cmd.cmd), c->keyword) == 0);
	} else {
		CHECK(c->label, error != NULL && strcmp(error, c->error) == 0);
	}
	free(copy);
}

static void test_command_parse(void **state)
{
	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(cmd_cases); i++) {
		const struct cmd_case *c = &cmd_cases[i];
		size_t len = c->len != 0 ? c->len : strlen(c->line);
		check_cmd(c, c->line, len);
		/* The line arriving one byte at a time: every prefix parses
		 * without reading past its end (a prefix may be valid or not,
		 * but must not crash), and the whole line gives the result. */
		for (size_t n = 0; n <= len; n++) {
			char *prefix = malloc(n > 0 ? n : 1);
			assert_non_null(prefix);
			memcpy(prefix, c->line, n);
			struct pop3_command cmd;
			const char *error;
			int ret = pop3_command_parse(prefix, n, &cmd, &error);
			CHECK(c->label, ret == 0 || ret == -1);
			if (ret == 0)
				CHECK(c->label, cmd.args + cmd.args_len == prefix + n);
			free(prefix);
		}
	}
}

static void test_command_line_limit(void **state)
{
	(void)state;
	/* RFC 2449 4: 255 octets with CRLF, so 253 without. */
	memset(long_line_ok, 'a', sizeof(long_line_ok) - 1);
	memcpy(long_line_ok, "PASS ", 5);
	long_line_ok[sizeof(long_line_ok) - 1] = '\0';
	memset(long_line_bad, 'a', sizeof(long_line_bad) - 1);
	memcpy(long_line_bad, "PASS ", 5);
	long_line_bad[sizeof(long_line_bad) - 1] = '\0';
	struct cmd_case ok = { "253 octets", long_line_ok, 0, 0, POP3_CMD_PASS, "PASS",
			       long_line_ok + 5, NULL };
	struct cmd_case bad = { "254 octets", long_line_bad, 0, -1, POP3_CMD_UNKNOWN, NULL,
				NULL, "line too long" };
	assert_int_equal(strlen(long_line_ok), 253);
	check_cmd(&ok, ok.line, strlen(ok.line));
	check_cmd(&bad, bad.line, strlen(bad.line));
}

/* ---- numbers ---- */

struct num_case {
	const char *label;
	const char *args;
	unsigned min, max;
	int ret;
	uint32_t nums[2];
	const char *error;
};

static const struct num_case num_cases[] = {
	{ "one", "3", 1, 1, 1, { 3, 0 }, NULL },
	{ "two", "1 10", 2, 2, 2, { 1, 10 }, NULL },
	{ "optional absent", "", 0, 1, 0, { 0, 0 }, NULL },
	{ "optional spaces only", "  ", 0, 1, 0, { 0, 0 }, NULL },
	{ "surrounding spaces", "  5  ", 1, 1, 1, { 5, 0 }, NULL },
	{ "several spaces between", "1    2", 2, 2, 2, { 1, 2 }, NULL },
	{ "leading zeros", "00012", 1, 1, 1, { 12, 0 }, NULL },
	{ "zero", "0", 1, 1, 1, { 0, 0 }, NULL },
	{ "u32 max", "4294967295", 1, 1, 1, { 4294967295u, 0 }, NULL },
	{ "u32 max + 1", "4294967296", 1, 1, -1, { 0, 0 }, "number too large" },
	{ "huge", "99999999999999999999999", 1, 1, -1, { 0, 0 }, "number too large" },
	{ "missing", "", 1, 1, -1, { 0, 0 }, "missing argument" },
	{ "missing second", "1", 2, 2, -1, { 0, 0 }, "missing argument" },
	{ "too many", "1 2", 1, 1, -1, { 0, 0 }, "too many arguments" },
	{ "none allowed", "1", 0, 0, -1, { 0, 0 }, "no arguments allowed" },
	{ "none allowed, spaces ok", "   ", 0, 0, 0, { 0, 0 }, NULL },
	{ "letters", "x", 1, 1, -1, { 0, 0 }, "invalid number" },
	{ "negative", "-1", 1, 1, -1, { 0, 0 }, "invalid number" },
	{ "plus", "+1", 1, 1, -1, { 0, 0 }, "invalid number" },
	{ "trailing junk", "1x", 1, 1, -1, { 0, 0 }, "invalid number" },
	{ "tab", "1\t2", 1, 2, -1, { 0, 0 }, "invalid number" },
};

static void test_numbers(void **state)
{
	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(num_cases); i++) {
		const struct num_case *c = &num_cases[i];
		size_t len = strlen(c->args);
		char *copy = malloc(len > 0 ? len : 1);
		assert_non_null(copy);
		memcpy(copy, c->args, len);
		uint32_t nums[2] = { 77, 77 };
		const char *error = NULL;
		int ret = pop3_parse_numbers(copy, len, nums, c->min, c->max, &error);
		CHECK(c->label, ret == c->ret);
		if (ret >= 0) {
			for (int k = 0; k < ret; k++)
				CHECK(c->label, nums[k] == c->nums[k]);
		} else {
			CHECK(c->label, error != NULL && strcmp(error, c->error) == 0);
		}
		free(copy);
	}
}

/* ---- the dot-stuffing writer ---- */

struct dot_case {
	const char *label;
	const char *in;
	bool top;
	uint64_t lines;
	const char *out;          /* the whole response body with ".\r\n" */
};

static const struct dot_case dot_cases[] = {
	{ "empty message", "", false, 0, ".\r\n" },
	{ "lf to crlf", "a\nb\n", false, 0, "a\r\nb\r\n.\r\n" },
	{ "crlf kept", "a\r\nb\r\n", false, 0, "a\r\nb\r\n.\r\n" },
	{ "mixed line ends", "a\r\nb\nc\r\n", false, 0, "a\r\nb\r\nc\r\n.\r\n" },
	{ "dots stuffed", ".a\n..b\n.\nx.y\n", false, 0, "..a\r\n...b\r\n..\r\nx.y\r\n.\r\n" },
	{ "dot at the very start", ".", false, 0, "..\r\n.\r\n" },
	{ "no final line end", "abc", false, 0, "abc\r\n.\r\n" },
	{ "ends in cr", "abc\r", false, 0, "abc\r\n.\r\n" },
	{ "bare cr kept", "a\rb\n", false, 0, "a\rb\r\n.\r\n" },
	{ "dot after bare cr not stuffed", "a\r.b\n", false, 0, "a\r.b\r\n.\r\n" },
	{ "blank lines", "\n\n", false, 0, "\r\n\r\n.\r\n" },
	{ "crlf dot crlf in body", "a\r\n.\r\nb\n", false, 0, "a\r\n..\r\nb\r\n.\r\n" },
	{ "top 0", "H: 1\nH2: 2\n\nbody1\nbody2\n", true, 0, "H: 1\r\nH2: 2\r\n\r\n.\r\n" },
	{ "top 1", "H: 1\nH2: 2\n\nbody1\nbody2\n", true, 1,
	  "H: 1\r\nH2: 2\r\n\r\nbody1\r\n.\r\n" },
	{ "top 2 = all", "H: 1\n\nbody1\nbody2\n", true, 2, "H: 1\r\n\r\nbody1\r\nbody2\r\n.\r\n" },
	{ "top more than the body", "H: 1\n\nbody1\nbody2", true, 10,
	  "H: 1\r\n\r\nbody1\r\nbody2\r\n.\r\n" },
	{ "top without body", "H: 1\nH: 2", true, 0, "H: 1\r\nH: 2\r\n.\r\n" },
	{ "top crlf header end", "H: 1\r\n\r\nb\r\n", true, 0, "H: 1\r\n\r\n.\r\n" },
	{ "top stuffs body dots", "H: x\n\n.b\nc\n", true, 1, "H: x\r\n\r\n..b\r\n.\r\n" },
	{ "top blank body lines count", "H: x\n\n\n\nc\n", true, 2, "H: x\r\n\r\n\r\n\r\n.\r\n" },
	{ "top empty message", "", true, 3, ".\r\n" },
	{ "top message starting blank", "\nbody\n", true, 0, "\r\n.\r\n" },
	{ "top header line of spaces is not blank", "H: 1\n \nX\n\nb\n", true, 0,
	  "H: 1\r\n \r\nX\r\n\r\n.\r\n" },
};

/* Feeds c->in in chunks of chunk octets (0: all at once) with an output
 * window of out_room octets, and returns the malloc'ed output. */
static char *dot_run(const struct dot_case *c, size_t chunk, size_t out_room, size_t split,
		     uint64_t *octets_r, size_t *len_r)
{
	size_t in_len = strlen(c->in);
	size_t cap = 2 * in_len + POP3_DOT_FINISH_MAX + 1;
	char *out = malloc(cap);
	char *win = malloc(out_room);
	assert_non_null(out);
	assert_non_null(win);
	struct pop3_dot d;
	pop3_dot_init(&d, c->top, c->lines);
	size_t pos = 0, o = 0;
	while (pos < in_len && !pop3_dot_done(&d)) {
		size_t n = in_len - pos;
		if (chunk != 0 && n > chunk)
			n = chunk;
		if (split != 0 && pos < split && pos + n > split)
			n = split - pos;
		/* An exact-size copy of this chunk. */
		char *piece = malloc(n);
		assert_non_null(piece);
		memcpy(piece, c->in + pos, n);
		size_t used = 0;
		while (used < n && !pop3_dot_done(&d)) {
			size_t wrote;
			size_t k = pop3_dot_feed(&d, piece + used, n - used, win, out_room, &wrote);
			CHECK(c->label, wrote <= out_room);
			CHECK(c->label, k > 0 || pop3_dot_done(&d));
			CHECK(c->label, o + wrote <= cap);
			memcpy(out + o, win, wrote);
			o += wrote;
			used += k;
		}
		free(piece);
		pos += used;
	}
	char fin[POP3_DOT_FINISH_MAX];
	int f = pop3_dot_finish(&d, fin, sizeof(fin));
	CHECK(c->label, f >= 3);
	memcpy(out + o, fin, (size_t)f);
	o += (size_t)f;
	out[o] = '\0';
	*octets_r = d.out_octets;
	*len_r = o;
	free(win);
	return out;
}

/* RFC822.SIZE of the input as the store counts it: a LF not after a CR
 * counts 2. */
static uint64_t crlf_size(const char *in)
{
	uint64_t n = 0;
	for (size_t i = 0; in[i] != '\0'; i++)
		n += in[i] == '\n' && (i == 0 || in[i - 1] != '\r') ? 2 : 1;
	return n;
}

static void dot_check(const struct dot_case *c, size_t chunk, size_t room, size_t split)
{
	uint64_t octets;
	size_t len;
	char *out = dot_run(c, chunk, room, split, &octets, &len);
	if (strcmp(out, c->out) != 0)
		fail_msg("case '%s' (chunk %zu room %zu split %zu): got \"%s\"", c->label, chunk,
			 room, split, out);
	if (!c->top)
		CHECK(c->label, octets == crlf_size(c->in));
	free(out);
}

static void test_dot(void **state)
{
	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(dot_cases); i++) {
		const struct dot_case *c = &dot_cases[i];
		dot_check(c, 0, 4096, 0);      /* whole */
		dot_check(c, 1, 4096, 0);      /* one byte at a time */
		dot_check(c, 0, 2, 0);         /* smallest output window */
		dot_check(c, 0, 3, 0);
		dot_check(c, 1, 2, 0);
		size_t len = strlen(c->in);
		for (size_t s = 1; s < len; s++)   /* split at every position */
			dot_check(c, 0, 4096, s);
	}
}

static void test_dot_finish_room(void **state)
{
	(void)state;
	struct pop3_dot d;
	char out[8];
	size_t wrote;
	pop3_dot_init(&d, false, 0);
	assert_int_equal(pop3_dot_feed(&d, "abc", 3, out, sizeof(out), &wrote), 3);
	assert_int_equal(wrote, 3);
	/* "\r\n.\r\n" needs 5: a smaller buffer gets nothing. */
	assert_int_equal(pop3_dot_finish(&d, out, 4), -1);
	assert_false(d.finished);
	assert_int_equal(pop3_dot_finish(&d, out, 5), 5);
	assert_memory_equal(out, "\r\n.\r\n", 5);
	assert_true(d.finished);
}

static void test_dot_done_stops(void **state)
{
	(void)state;
	/* After TOP's lines, input is not consumed (the caller stops reading
	 * the file). */
	struct pop3_dot d;
	char out[64];
	size_t wrote;
	const char *in = "H: 1\n\nb1\nb2\nb3\n";
	pop3_dot_init(&d, true, 1);
	size_t k = pop3_dot_feed(&d, in, strlen(in), out, sizeof(out), &wrote);
	assert_int_equal(k, strlen("H: 1\n\nb1\n"));
	assert_true(pop3_dot_done(&d));
	assert_int_equal(pop3_dot_feed(&d, in + k, strlen(in) - k, out, sizeof(out), &wrote), 0);
	assert_int_equal(wrote, 0);
	/* A full window of 1 octet makes no progress on a LF that needs 2. */
	pop3_dot_init(&d, false, 0);
	assert_int_equal(pop3_dot_feed(&d, "\n", 1, out, 1, &wrote), 0);
	assert_int_equal(wrote, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_command_parse),
		cmocka_unit_test(test_command_line_limit),
		cmocka_unit_test(test_numbers),
		cmocka_unit_test(test_dot),
		cmocka_unit_test(test_dot_finish_room),
		cmocka_unit_test(test_dot_done_stops),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
