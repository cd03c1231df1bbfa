/*
 * test-smtp-command.c — unit tests for smtp-command.c: command line parsing,
 * verb names, BDAT arguments, reply formatting.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "lib-smtp/smtp.h"

#define CHECK(label, cond) \
	do { \
		if (!(cond)) \
			fail_msg("case '%s': check failed: %s", (label), #cond); \
	} while (0)

#define N_ELEMENTS(a) (sizeof(a) / sizeof((a)[0]))

/* ------------------------------------------------------- command lines */

struct cmd_case {
	const char *label;
	const char *line;
	size_t len;            /* 0: strlen(line) */
	int ret;
	enum smtp_cmd cmd;
	const char *args;      /* expected args (also checked on -1 when non-NULL) */
};

#define OK(label, line, cmd, args) { label, line, 0, 0, cmd, args }
#define BAD(label, line, cmd) { label, line, 0, -1, cmd, NULL }

static const struct cmd_case cmd_cases[] = {
	/* every verb */
	OK("helo", "HELO example.com", SMTP_CMD_HELO, "example.com"),
	OK("ehlo", "EHLO mail.example.org", SMTP_CMD_EHLO, "mail.example.org"),
	OK("ehlo literal", "EHLO [192.0.2.1]", SMTP_CMD_EHLO, "[192.0.2.1]"),
	OK("mail", "MAIL FROM:<a@b.example>", SMTP_CMD_MAIL, "<a@b.example>"),
	OK("rcpt", "RCPT TO:<a@b.example>", SMTP_CMD_RCPT, "<a@b.example>"),
	OK("data", "DATA", SMTP_CMD_DATA, ""),
	OK("bdat", "BDAT 100 LAST", SMTP_CMD_BDAT, "100 LAST"),
	OK("rset", "RSET", SMTP_CMD_RSET, ""),
	OK("noop", "NOOP", SMTP_CMD_NOOP, ""),
	OK("noop with arg", "NOOP hello there", SMTP_CMD_NOOP, "hello there"),
	OK("quit", "QUIT", SMTP_CMD_QUIT, ""),
	OK("help", "HELP", SMTP_CMD_HELP, ""),
	OK("help topic", "HELP MAIL", SMTP_CMD_HELP, "MAIL"),
	OK("vrfy", "VRFY user", SMTP_CMD_VRFY, "user"),
	OK("expn", "EXPN staff", SMTP_CMD_EXPN, "staff"),
	OK("starttls", "STARTTLS", SMTP_CMD_STARTTLS, ""),
	OK("auth", "AUTH PLAIN dGVzdAB0ZXN0AHRlc3Q=", SMTP_CMD_AUTH, "PLAIN dGVzdAB0ZXN0AHRlc3Q="),
	OK("auth no initial response", "AUTH LOGIN", SMTP_CMD_AUTH, "LOGIN"),

	/* case-insensitivity */
	OK("lower ehlo", "ehlo x.example", SMTP_CMD_EHLO, "x.example"),
	OK("mixed helo", "HeLo x.example", SMTP_CMD_HELO, "x.example"),
	OK("lower mail from", "mail from:<a@b.example>", SMTP_CMD_MAIL, "<a@b.example>"),
	OK("mixed mail from", "MaIl FrOm:<a@b.example>", SMTP_CMD_MAIL, "<a@b.example>"),
	OK("lower rcpt to", "rcpt to:<a@b.example>", SMTP_CMD_RCPT, "<a@b.example>"),
	OK("mixed rcpt to", "RcPt tO:<a@b.example>", SMTP_CMD_RCPT, "<a@b.example>"),
	OK("lower data", "data", SMTP_CMD_DATA, ""),
	OK("mixed starttls", "StartTls", SMTP_CMD_STARTTLS, ""),
	OK("lower quit", "quit", SMTP_CMD_QUIT, ""),
	OK("lower bdat", "bdat 5", SMTP_CMD_BDAT, "5"),
	OK("lower auth", "auth plain", SMTP_CMD_AUTH, "plain"),
	OK("lower rset", "rset", SMTP_CMD_RSET, ""),
	OK("lower noop", "noop", SMTP_CMD_NOOP, ""),
	OK("lower help", "help", SMTP_CMD_HELP, ""),
	OK("lower vrfy", "vrfy x", SMTP_CMD_VRFY, "x"),
	OK("lower expn", "expn x", SMTP_CMD_EXPN, "x"),

	/* MAIL / RCPT argument forms */
	OK("mail null path", "MAIL FROM:<>", SMTP_CMD_MAIL, "<>"),
	OK("mail with params", "MAIL FROM:<a@b.example> SIZE=100 BODY=8BITMIME", SMTP_CMD_MAIL,
	   "<a@b.example> SIZE=100 BODY=8BITMIME"),
	OK("mail space after colon", "MAIL FROM: <a@b.example>", SMTP_CMD_MAIL, "<a@b.example>"),
	OK("mail spaces after colon", "MAIL FROM:   <a@b.example>", SMTP_CMD_MAIL, "<a@b.example>"),
	OK("mail two spaces after verb", "MAIL  FROM:<a@b.example>", SMTP_CMD_MAIL, "<a@b.example>"),
	OK("mail trailing spaces", "MAIL FROM:<a@b.example>   ", SMTP_CMD_MAIL, "<a@b.example>"),
	OK("mail trailing tab", "MAIL FROM:<a@b.example>\t", SMTP_CMD_MAIL, "<a@b.example>"),
	OK("mail empty after colon", "MAIL FROM:", SMTP_CMD_MAIL, ""),
	OK("mail utf8 args", "MAIL FROM:<j\xc3\xb6ran@b\xc3\xbc" "cher.de> SMTPUTF8", SMTP_CMD_MAIL,
	   "<j\xc3\xb6ran@b\xc3\xbc" "cher.de> SMTPUTF8"),
	OK("rcpt space after colon", "RCPT TO: <a@b.example>", SMTP_CMD_RCPT, "<a@b.example>"),
	OK("rcpt postmaster", "RCPT TO:<Postmaster>", SMTP_CMD_RCPT, "<Postmaster>"),
	OK("rcpt with params", "RCPT TO:<a@b.example> NOTIFY=NEVER", SMTP_CMD_RCPT,
	   "<a@b.example> NOTIFY=NEVER"),
	BAD("mail space before colon", "MAIL FROM :<a@b.example>", SMTP_CMD_MAIL),
	BAD("mail without from", "MAIL <a@b.example>", SMTP_CMD_MAIL),
	BAD("mail alone", "MAIL", SMTP_CMD_MAIL),
	BAD("mail to", "MAIL TO:<a@b.example>", SMTP_CMD_MAIL),
	BAD("mail from without colon", "MAIL FROM <a@b.example>", SMTP_CMD_MAIL),
	BAD("rcpt from", "RCPT FROM:<a@b.example>", SMTP_CMD_RCPT),
	BAD("rcpt alone", "RCPT", SMTP_CMD_RCPT),
	BAD("rcpt without colon", "RCPT TO <a@b.example>", SMTP_CMD_RCPT),
	OK("mailfrom glued is unknown", "MAILFROM:<a@b.example>", SMTP_CMD_UNKNOWN, ""),

	/* argument rules */
	BAD("data with args", "DATA now", SMTP_CMD_DATA),
	BAD("quit with args", "QUIT now", SMTP_CMD_QUIT),
	BAD("rset with args", "RSET x", SMTP_CMD_RSET),
	BAD("starttls with args", "STARTTLS x", SMTP_CMD_STARTTLS),
	OK("data trailing space", "DATA ", SMTP_CMD_DATA, ""),
	OK("quit trailing spaces", "QUIT  \t ", SMTP_CMD_QUIT, ""),
	BAD("ehlo without domain", "EHLO", SMTP_CMD_EHLO),
	BAD("helo only space", "HELO ", SMTP_CMD_HELO),
	BAD("auth without mechanism", "AUTH", SMTP_CMD_AUTH),
	BAD("vrfy without arg", "VRFY", SMTP_CMD_VRFY),
	BAD("expn without arg", "EXPN", SMTP_CMD_EXPN),
	BAD("bdat without size", "BDAT", SMTP_CMD_BDAT),
	OK("tab separator", "HELO\tx.example", SMTP_CMD_HELO, "x.example"),
	OK("several spaces separator", "HELO    x.example", SMTP_CMD_HELO, "x.example"),

	/* unknown verbs */
	OK("unknown verb", "XYZZY", SMTP_CMD_UNKNOWN, ""),
	OK("unknown verb with args", "X-FOO bar baz", SMTP_CMD_UNKNOWN, "bar baz"),
	OK("turn", "TURN", SMTP_CMD_UNKNOWN, ""),
	OK("verb prefix", "HELOX x", SMTP_CMD_UNKNOWN, "x"),
	OK("verb too short", "HEL x", SMTP_CMD_UNKNOWN, "x"),
	OK("http", "GET / HTTP/1.1", SMTP_CMD_UNKNOWN, "/ HTTP/1.1"),
	OK("digits", "12345", SMTP_CMD_UNKNOWN, ""),

	/* malformed lines */
	BAD("empty", "", SMTP_CMD_UNKNOWN),
	BAD("leading space", " HELO x", SMTP_CMD_UNKNOWN),
	BAD("only spaces", "   ", SMTP_CMD_UNKNOWN),
	{ "nul in verb", "HE\0LO x", 7, -1, SMTP_CMD_UNKNOWN, NULL },
	{ "nul in args", "HELO x\0y", 8, -1, SMTP_CMD_UNKNOWN, NULL },
	{ "nul at end", "QUIT\0", 5, -1, SMTP_CMD_UNKNOWN, NULL },
	BAD("cr in args", "NOOP a\rb", SMTP_CMD_UNKNOWN),
	BAD("lf in args", "NOOP a\nb", SMTP_CMD_UNKNOWN),
	BAD("crlf inside line", "RSET\r\nQUIT", SMTP_CMD_UNKNOWN),
	BAD("control char in verb", "HE\x01LO x", SMTP_CMD_UNKNOWN),
	BAD("escape in args", "NOOP \x1b[31m", SMTP_CMD_UNKNOWN),
	BAD("del in args", "NOOP a\x7f", SMTP_CMD_UNKNOWN),
	BAD("non-ascii verb", "H\xc3\x89LO x", SMTP_CMD_UNKNOWN),
	BAD("latin1 verb", "\xe9HLO x", SMTP_CMD_UNKNOWN),
	BAD("8bit only verb", "\xff", SMTP_CMD_UNKNOWN),
};

static void test_command_parse(void **state)
{
	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(cmd_cases); i++) {
		const struct cmd_case *c = &cmd_cases[i];
		size_t len = c->len != 0 ? c->len : strlen(c->line);
		/* A heap copy of exactly len octets: ASan catches any read past it. */
		char *line = malloc(len > 0 ? len : 1);
		assert_non_null(line);
		memcpy(line, c->line, len);

		struct smtp_command cmd;
		const char *error = NULL;
		int ret = smtp_command_parse(line, len, &cmd, &error);
		CHECK(c->label, ret == c->ret);
		CHECK(c->label, cmd.cmd == c->cmd);
		if (ret < 0) {
			CHECK(c->label, error != NULL && strncmp(error, "Syntax error", 12) == 0);
		} else {
			CHECK(c->label, cmd.args >= line && cmd.args + cmd.args_len <= line + len);
		}
		if (c->args != NULL) {
			CHECK(c->label, cmd.args_len == strlen(c->args));
			CHECK(c->label, memcmp(cmd.args, c->args, cmd.args_len) == 0);
		}
		free(line);
	}
}

static void test_command_errors(void **state)
{
	struct smtp_command cmd;
	const char *error = NULL;
	(void)state;

	assert_int_equal(smtp_command_parse("DATA x", 6, &cmd, &error), -1);
	assert_string_equal(error, "Syntax error, no parameters allowed");
	assert_int_equal(smtp_command_parse("EHLO", 4, &cmd, &error), -1);
	assert_string_equal(error, "Syntax error, parameter required");
	assert_int_equal(smtp_command_parse("MAIL <a@b>", 10, &cmd, &error), -1);
	assert_string_equal(error, "Syntax error, expected MAIL FROM:<address>");
	assert_int_equal(smtp_command_parse("RCPT <a@b>", 10, &cmd, &error), -1);
	assert_string_equal(error, "Syntax error, expected RCPT TO:<address>");
	assert_int_equal(smtp_command_parse("NOOP \x01", 6, &cmd, &error), -1);
	assert_string_equal(error, "Syntax error, control character in command");
	assert_int_equal(smtp_command_parse("\xc3\x89", 2, &cmd, &error), -1);
	assert_string_equal(error, "Syntax error, command unrecognized");
}

static void test_command_length(void **state)
{
	const size_t max = SMTP_COMMAND_LINE_MAX - 2;
	char *line = malloc(max + 1);
	struct smtp_command cmd;
	const char *error = NULL;
	(void)state;

	assert_non_null(line);
	memcpy(line, "NOOP ", 5);
	memset(line + 5, 'x', max + 1 - 5);
	assert_int_equal(smtp_command_parse(line, max, &cmd, &error), 0);
	assert_int_equal(cmd.cmd, SMTP_CMD_NOOP);
	assert_int_equal(cmd.args_len, max - 5);
	assert_int_equal(smtp_command_parse(line, max + 1, &cmd, &error), -1);
	assert_string_equal(error, "Syntax error, command line too long");
	free(line);
}

static void test_cmd_name(void **state)
{
	static const struct { enum smtp_cmd cmd; const char *name; } names[] = {
		{ SMTP_CMD_UNKNOWN, "UNKNOWN" }, { SMTP_CMD_HELO, "HELO" },
		{ SMTP_CMD_EHLO, "EHLO" }, { SMTP_CMD_MAIL, "MAIL" },
		{ SMTP_CMD_RCPT, "RCPT" }, { SMTP_CMD_DATA, "DATA" },
		{ SMTP_CMD_BDAT, "BDAT" }, { SMTP_CMD_RSET, "RSET" },
		{ SMTP_CMD_NOOP, "NOOP" }, { SMTP_CMD_QUIT, "QUIT" },
		{ SMTP_CMD_HELP, "HELP" }, { SMTP_CMD_VRFY, "VRFY" },
		{ SMTP_CMD_EXPN, "EXPN" }, { SMTP_CMD_STARTTLS, "STARTTLS" },
		{ SMTP_CMD_AUTH, "AUTH" }, { (enum smtp_cmd)999, "UNKNOWN" },
	};
	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(names); i++) {
		assert_string_equal(smtp_cmd_name(names[i].cmd), names[i].name);
		/* the name parses back to the verb */
		if (names[i].cmd != SMTP_CMD_UNKNOWN && names[i].cmd != (enum smtp_cmd)999) {
			struct smtp_command cmd;
			const char *error;
			char line[64];
			size_t n = strlen(names[i].name);
			memcpy(line, names[i].name, n);
			(void)smtp_command_parse(line, n, &cmd, &error);
			assert_int_equal(cmd.cmd, names[i].cmd);
		}
	}
}

/* ------------------------------------------------------------------ BDAT */

struct bdat_case {
	const char *label;
	const char *args;
	int ret;
	uint64_t size;
	bool last;
};

static const struct bdat_case bdat_cases[] = {
	{ "size", "100", 0, 100, false },
	{ "zero last", "0 LAST", 0, 0, true },
	{ "lower last", "4096 last", 0, 4096, true },
	{ "mixed last", "7 LaSt", 0, 7, true },
	{ "spaces before last", "7  LAST", 0, 7, true },
	{ "max u64", "18446744073709551615", 0, UINT64_MAX, false },
	{ "overflow", "18446744073709551616", -1, 0, false },
	{ "empty", "", -1, 0, false },
	{ "only last", "LAST", -1, 0, false },
	{ "junk after digits", "10x", -1, 0, false },
	{ "negative", "-1", -1, 0, false },
	{ "plus", "+1", -1, 0, false },
	{ "other marker", "10 FIRST", -1, 0, false },
	{ "extra after last", "10 LAST x", -1, 0, false },
	{ "trailing space", "10 ", -1, 0, false },
	{ "tab separator", "10\tLAST", -1, 0, false },
	{ "lastly", "10 LASTLY", -1, 0, false },
};

static void test_bdat_parse(void **state)
{
	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(bdat_cases); i++) {
		const struct bdat_case *c = &bdat_cases[i];
		uint64_t size = 12345;
		bool last = false;
		const char *error = NULL;
		int ret = smtp_bdat_parse(c->args, strlen(c->args), &size, &last, &error);
		CHECK(c->label, ret == c->ret);
		if (ret == 0) {
			CHECK(c->label, size == c->size);
			CHECK(c->label, last == c->last);
		} else {
			CHECK(c->label, error != NULL &&
			      strcmp(error, "501 5.5.4 Syntax error in BDAT parameters") == 0);
		}
	}
}

/* --------------------------------------------------------------- replies */

struct reply_case {
	const char *label;
	unsigned code;
	const char *enhanced;
	const char *text;
	const char *expected; /* NULL: -1 */
};

static const struct reply_case reply_cases[] = {
	{ "simple", 250, "2.0.0", "OK", "250 2.0.0 OK\r\n" },
	{ "no enhanced", 220, NULL, "mx.example ESMTP", "220 mx.example ESMTP\r\n" },
	{ "354", 354, NULL, "End data with <CR><LF>.<CR><LF>",
	  "354 End data with <CR><LF>.<CR><LF>\r\n" },
	{ "ehlo multi-line", 250, NULL, "mx.example\nPIPELINING\nSIZE 1000\nSMTPUTF8",
	  "250-mx.example\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250 SMTPUTF8\r\n" },
	{ "multi-line enhanced", 550, "5.1.1", "No such user\nTry again",
	  "550-5.1.1 No such user\r\n550 5.1.1 Try again\r\n" },
	{ "trailing newline ignored", 221, "2.0.0", "Bye\n", "221 2.0.0 Bye\r\n" },
	{ "empty text", 250, NULL, "", "250\r\n" },
	{ "null text", 250, NULL, NULL, "250\r\n" },
	{ "empty text enhanced", 250, "2.0.0", "", "250 2.0.0\r\n" },
	{ "empty middle line", 250, NULL, "a\n\nb", "250-a\r\n250-\r\n250 b\r\n" },
	{ "three digit parts", 451, "4.123.456", "x", "451 4.123.456 x\r\n" },
	{ "utf8 text", 250, "2.0.0", "ok \xc3\xa9", "250 2.0.0 ok \xc3\xa9\r\n" },
	{ "code too small", 199, NULL, "x", NULL },
	{ "code too large", 600, NULL, "x", NULL },
	{ "code zero", 0, NULL, "x", NULL },
	{ "class mismatch", 250, "5.0.0", "x", NULL },
	{ "class 3", 354, "3.0.0", "x", NULL },
	{ "enhanced two parts", 250, "2.0", "x", NULL },
	{ "enhanced four parts", 250, "2.0.0.0", "x", NULL },
	{ "enhanced long subject", 250, "2.1000.0", "x", NULL },
	{ "enhanced empty part", 250, "2..0", "x", NULL },
	{ "enhanced letters", 250, "2.a.0", "x", NULL },
	{ "enhanced trailing space", 250, "2.0.0 ", "x", NULL },
	{ "cr injection", 250, "2.0.0", "OK\r\n250 fake", NULL },
	{ "bare cr", 250, "2.0.0", "OK\r", NULL },
	{ "tab", 250, "2.0.0", "a\tb", NULL },
	{ "escape", 250, "2.0.0", "a\x1b", NULL },
};

static void test_reply_format(void **state)
{
	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(reply_cases); i++) {
		const struct reply_case *c = &reply_cases[i];
		struct buf out;
		buf_init(&out, 4096);
		assert_int_equal(buf_append_str(&out, "pre:"), 0);
		int ret = smtp_reply_format(&out, c->code, c->enhanced, c->text);
		if (c->expected == NULL) {
			CHECK(c->label, ret == -1);
			CHECK(c->label, out.len == 4 && strcmp(out.data, "pre:") == 0);
		} else {
			CHECK(c->label, ret == 0);
			CHECK(c->label, out.len == 4 + strlen(c->expected));
			CHECK(c->label, memcmp(out.data + 4, c->expected, out.len - 4) == 0);
		}
		buf_free(&out);
	}
}

static void test_reply_format_full(void **state)
{
	struct buf out;
	(void)state;

	/* Fails cleanly when out reaches its maximum, leaving it unchanged. */
	buf_init(&out, 20);
	assert_int_equal(buf_append_str(&out, "abc"), 0);
	assert_int_equal(smtp_reply_format(&out, 250, NULL, "line one\nline two"), -1);
	assert_int_equal(out.len, 3);
	assert_string_equal(out.data, "abc");
	assert_int_equal(smtp_reply_format(&out, 250, "2.0.0", "OK"), 0);
	assert_string_equal(out.data, "abc250 2.0.0 OK\r\n");
	buf_free(&out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_command_parse),
		cmocka_unit_test(test_command_errors),
		cmocka_unit_test(test_command_length),
		cmocka_unit_test(test_cmd_name),
		cmocka_unit_test(test_bdat_parse),
		cmocka_unit_test(test_reply_format),
		cmocka_unit_test(test_reply_format_full),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
