/*
 * smtp-command.c — SMTP command lines and reply lines: splits a command line
 * into verb and arguments, parses BDAT arguments, formats (multi-line) replies.
 * Pure syntax, no I/O; used by smtpd (server side) and deliver (client side).
 *
 * RFC 5321 4.1.1 (commands), 4.2 (replies), 4.5.3.1.4 (line length);
 * RFC 3030 (BDAT); RFC 3463 (enhanced status codes); RFC 2034.
 */
#include "lib-smtp/smtp.h"

#include <string.h>
#include <strings.h>

#include "lib/util.h"

/* How a verb takes arguments; checked here so every caller gets the same
 * 501 for "DATA x" or a bare "EHLO". */
enum smtp_args_rule { ARGS_NONE, ARGS_OPTIONAL, ARGS_REQUIRED, ARGS_PATH };

static const struct {
	const char *name;
	enum smtp_cmd cmd;
	enum smtp_args_rule rule;
} smtp_cmd_table[] = {
	{ "HELO", SMTP_CMD_HELO, ARGS_REQUIRED },
	{ "EHLO", SMTP_CMD_EHLO, ARGS_REQUIRED },
	{ "MAIL", SMTP_CMD_MAIL, ARGS_PATH },
	{ "RCPT", SMTP_CMD_RCPT, ARGS_PATH },
	{ "DATA", SMTP_CMD_DATA, ARGS_NONE },
	{ "BDAT", SMTP_CMD_BDAT, ARGS_REQUIRED },
	{ "RSET", SMTP_CMD_RSET, ARGS_NONE },
	{ "NOOP", SMTP_CMD_NOOP, ARGS_OPTIONAL },
	{ "QUIT", SMTP_CMD_QUIT, ARGS_NONE },
	{ "HELP", SMTP_CMD_HELP, ARGS_OPTIONAL },
	{ "VRFY", SMTP_CMD_VRFY, ARGS_REQUIRED },
	{ "EXPN", SMTP_CMD_EXPN, ARGS_REQUIRED },
	{ "STARTTLS", SMTP_CMD_STARTTLS, ARGS_NONE },
	{ "AUTH", SMTP_CMD_AUTH, ARGS_REQUIRED },
};

#define N_ELEMENTS(a) (sizeof(a) / sizeof((a)[0]))

const char *smtp_cmd_name(enum smtp_cmd cmd)
{
	for (size_t i = 0; i < N_ELEMENTS(smtp_cmd_table); i++) {
		if (smtp_cmd_table[i].cmd == cmd)
			return smtp_cmd_table[i].name;
	}
	return "UNKNOWN";
}

static bool is_wsp(unsigned char c)
{
	return c == ' ' || c == '\t';
}

static bool is_ctl(unsigned char c)
{
	return c < 0x20 || c == 0x7f;
}

/* Matches prefix (ASCII, upper case) case-insensitively at s. */
static bool has_prefix_ci(const char *s, size_t len, const char *prefix)
{
	size_t plen = strlen(prefix);
	return len >= plen && strncasecmp(s, prefix, plen) == 0;
}

int smtp_command_parse(const char *line, size_t len, struct smtp_command *cmd_r,
		       const char **error_r)
{
	const unsigned char *p = (const unsigned char *)line;
	size_t i, verb_len;

	cmd_r->cmd = SMTP_CMD_UNKNOWN;
	cmd_r->args = line + len;
	cmd_r->args_len = 0;

	if (len == 0) {
		*error_r = "Syntax error, empty command";
		return -1;
	}
	if (len > SMTP_COMMAND_LINE_MAX - 2) {
		*error_r = "Syntax error, command line too long";
		return -1;
	}
	/* Control characters (NUL, a CR or LF inside the line) anywhere make the
	 * whole line suspect: reject before looking at the verb. */
	for (i = 0; i < len; i++) {
		if (is_ctl(p[i]) && p[i] != '\t') {
			*error_r = "Syntax error, control character in command";
			return -1;
		}
	}
	for (verb_len = 0; verb_len < len && !is_wsp(p[verb_len]); verb_len++) {
		if (p[verb_len] >= 0x80) {
			*error_r = "Syntax error, command unrecognized";
			return -1;
		}
	}
	if (verb_len == 0) {
		*error_r = "Syntax error, command unrecognized";
		return -1;
	}

	/* Arguments: after any SP/HT, without trailing SP/HT. */
	i = verb_len;
	while (i < len && is_wsp(p[i]))
		i++;
	size_t end = len;
	while (end > i && is_wsp(p[end - 1]))
		end--;
	cmd_r->args = line + i;
	cmd_r->args_len = end - i;

	enum smtp_args_rule rule = ARGS_OPTIONAL;
	for (size_t t = 0; t < N_ELEMENTS(smtp_cmd_table); t++) {
		if (strlen(smtp_cmd_table[t].name) == verb_len &&
		    strncasecmp(line, smtp_cmd_table[t].name, verb_len) == 0) {
			cmd_r->cmd = smtp_cmd_table[t].cmd;
			rule = smtp_cmd_table[t].rule;
			break;
		}
	}
	if (cmd_r->cmd == SMTP_CMD_UNKNOWN)
		return 0;

	switch (rule) {
	case ARGS_NONE:
		if (cmd_r->args_len != 0) {
			*error_r = "Syntax error, no parameters allowed";
			return -1;
		}
		break;
	case ARGS_REQUIRED:
		if (cmd_r->args_len == 0) {
			*error_r = "Syntax error, parameter required";
			return -1;
		}
		break;
	case ARGS_OPTIONAL:
		break;
	case ARGS_PATH: {
		const char *kw = cmd_r->cmd == SMTP_CMD_MAIL ? "FROM:" : "TO:";
		/* The keyword must follow the verb after white space:
		 * "MAIL FROM:", never "MAILFROM:" (that is an unknown verb). */
		if (!has_prefix_ci(cmd_r->args, cmd_r->args_len, kw)) {
			*error_r = cmd_r->cmd == SMTP_CMD_MAIL ?
				"Syntax error, expected MAIL FROM:<address>" :
				"Syntax error, expected RCPT TO:<address>";
			return -1;
		}
		size_t skip = strlen(kw);
		while (skip < cmd_r->args_len && is_wsp((unsigned char)cmd_r->args[skip]))
			skip++;
		cmd_r->args += skip;
		cmd_r->args_len -= skip;
		break;
	}
	}
	return 0;
}

int smtp_bdat_parse(const char *args, size_t len, uint64_t *size_r, bool *last_r,
		    const char **error_r)
{
	size_t i = 0;

	while (i < len && args[i] >= '0' && args[i] <= '9')
		i++;
	if (strn_to_u64(args, i, size_r) < 0)
		goto fail;
	*last_r = false;
	if (i == len)
		return 0;
	if (args[i] != ' ')
		goto fail;
	while (i < len && args[i] == ' ')
		i++;
	if (len - i == 4 && strncasecmp(args + i, "LAST", 4) == 0) {
		*last_r = true;
		return 0;
	}
fail:
	*error_r = "501 5.5.4 Syntax error in BDAT parameters";
	return -1;
}

/* "class.subject.detail", RFC 3463 2: class 2/4/5, subject and detail
 * 1-3 digits each. */
static bool enhanced_valid(const char *e, unsigned code)
{
	if (!(e[0] == '2' || e[0] == '4' || e[0] == '5'))
		return false;
	if ((unsigned)(e[0] - '0') != code / 100 || e[1] != '.')
		return false;
	const char *p = e + 2;
	for (int part = 0; part < 2; part++) {
		size_t n = 0;
		while (p[n] >= '0' && p[n] <= '9')
			n++;
		if (n < 1 || n > 3)
			return false;
		p += n;
		if (part == 0) {
			if (*p != '.')
				return false;
			p++;
		}
	}
	return *p == '\0';
}

int smtp_reply_format(struct buf *out, unsigned code, const char *enhanced, const char *text)
{
	size_t orig_len = out->len;
	char code_str[4];

	if (code < 200 || code > 599)
		return -1;
	if (enhanced != NULL && !enhanced_valid(enhanced, code))
		return -1;
	if (text == NULL)
		text = "";
	size_t text_len = strlen(text);
	for (size_t i = 0; i < text_len; i++) {
		if (is_ctl((unsigned char)text[i]) && text[i] != '\n')
			return -1;
	}
	if (text_len > 0 && text[text_len - 1] == '\n')
		text_len--;

	code_str[0] = (char)('0' + code / 100);
	code_str[1] = (char)('0' + code / 10 % 10);
	code_str[2] = (char)('0' + code % 10);
	code_str[3] = '\0';

	size_t pos = 0;
	for (;;) {
		const char *nl = memchr(text + pos, '\n', text_len - pos);
		size_t piece_len = nl == NULL ? text_len - pos : (size_t)(nl - (text + pos));
		bool last = nl == NULL;
		int ret = buf_append(out, code_str, 3);
		/* "250" alone is a valid last line; "250 " with nothing after
		 * the space is not worth sending. */
		if (ret == 0 && !last)
			ret = buf_append(out, "-", 1);
		else if (ret == 0 && (enhanced != NULL || piece_len > 0))
			ret = buf_append(out, " ", 1);
		if (ret == 0 && enhanced != NULL) {
			ret = buf_append_str(out, enhanced);
			if (ret == 0 && piece_len > 0)
				ret = buf_append(out, " ", 1);
		}
		if (ret == 0)
			ret = buf_append(out, text + pos, piece_len);
		if (ret == 0)
			ret = buf_append(out, "\r\n", 2);
		if (ret < 0)
			goto fail;
		if (last)
			break;
		pos += piece_len + 1;
	}
	return 0;
fail:
	out->len = orig_len;
	if (out->data != NULL)
		out->data[orig_len] = '\0';
	return -1;
}
