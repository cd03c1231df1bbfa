/*
 * pop3.c — POP3 syntax (RFC 1939, RFC 2449): command line parsing and the
 * dot-stuffing writer for multi-line responses (RETR, TOP). Pure functions
 * over caller-supplied memory; used by the imapd worker's POP3 sessions and
 * by the unit tests and the fuzzer. See pop3.h for the contracts.
 */
#include "lib-pop3/pop3.h"

#include <string.h>

static const char *const pop3_names[POP3_CMD_COUNT] = {
	[POP3_CMD_UNKNOWN] = "",
	[POP3_CMD_USER] = "USER",
	[POP3_CMD_PASS] = "PASS",
	[POP3_CMD_APOP] = "APOP",
	[POP3_CMD_AUTH] = "AUTH",
	[POP3_CMD_CAPA] = "CAPA",
	[POP3_CMD_STLS] = "STLS",
	[POP3_CMD_STAT] = "STAT",
	[POP3_CMD_LIST] = "LIST",
	[POP3_CMD_UIDL] = "UIDL",
	[POP3_CMD_RETR] = "RETR",
	[POP3_CMD_TOP] = "TOP",
	[POP3_CMD_DELE] = "DELE",
	[POP3_CMD_RSET] = "RSET",
	[POP3_CMD_NOOP] = "NOOP",
	[POP3_CMD_QUIT] = "QUIT",
};

const char *pop3_command_name(enum pop3_cmd cmd)
{
	if ((unsigned)cmd >= POP3_CMD_COUNT)
		return "";
	return pop3_names[cmd];
}

static bool pop3_is_alpha(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

int pop3_command_parse(const char *line, size_t len, struct pop3_command *cmd_r,
		       const char **error_r)
{
	memset(cmd_r, 0, sizeof(*cmd_r));
	if (len > POP3_LINE_MAX - 2) {
		*error_r = "line too long";
		return -1;
	}
	if (len == 0) {
		*error_r = "empty command";
		return -1;
	}
	if (memchr(line, '\0', len) != NULL) {
		*error_r = "NUL octet in command";
		return -1;
	}
	size_t k = 0;
	while (k < len && k <= POP3_KEYWORD_MAX && pop3_is_alpha(line[k]))
		k++;
	if (k == 0 || k > POP3_KEYWORD_MAX || (k < len && line[k] != ' ')) {
		*error_r = "invalid command syntax";
		return -1;
	}
	for (size_t i = 0; i < k; i++) {
		char c = line[i];
		cmd_r->keyword[i] = c >= 'a' && c <= 'z' ? (char)(c - 'a' + 'A') : c;
	}
	cmd_r->keyword[k] = '\0';
	cmd_r->cmd = POP3_CMD_UNKNOWN;
	for (unsigned i = 1; i < POP3_CMD_COUNT; i++) {
		if (strcmp(cmd_r->keyword, pop3_names[i]) == 0) {
			cmd_r->cmd = (enum pop3_cmd)i;
			break;
		}
	}
	if (k < len) {
		cmd_r->args = line + k + 1;
		cmd_r->args_len = len - k - 1;
	} else {
		cmd_r->args = line + len;
		cmd_r->args_len = 0;
	}
	return 0;
}

int pop3_parse_numbers(const char *args, size_t len, uint32_t *nums_r, unsigned min,
		       unsigned max, const char **error_r)
{
	unsigned n = 0;
	size_t i = 0;
	for (;;) {
		while (i < len && args[i] == ' ')
			i++;
		if (i == len)
			break;
		if (n == max) {
			*error_r = max == 0 ? "no arguments allowed" : "too many arguments";
			return -1;
		}
		uint64_t v = 0;
		size_t start = i;
		while (i < len && args[i] >= '0' && args[i] <= '9') {
			v = v * 10 + (uint64_t)(args[i] - '0');
			if (v > UINT32_MAX) {
				*error_r = "number too large";
				return -1;
			}
			i++;
		}
		if (i == start || (i < len && args[i] != ' ')) {
			*error_r = "invalid number";
			return -1;
		}
		nums_r[n++] = (uint32_t)v;
	}
	if (n < min) {
		*error_r = "missing argument";
		return -1;
	}
	return (int)n;
}

void pop3_dot_init(struct pop3_dot *d, bool top, uint64_t top_lines)
{
	memset(d, 0, sizeof(*d));
	d->bol = true;
	d->blank = true;
	d->top = top;
	d->lines_left = top_lines;
}

bool pop3_dot_done(const struct pop3_dot *d)
{
	return d->done;
}

/* A line has been written up to and including its LF. */
static void pop3_dot_line_end(struct pop3_dot *d)
{
	if (d->top) {
		if (!d->in_body) {
			/* RFC 5322 2.1: the first empty line ends the header. */
			if (d->blank) {
				d->in_body = true;
				if (d->lines_left == 0)
					d->done = true;
			}
		} else if (--d->lines_left == 0) {
			d->done = true;
		}
	}
	d->bol = true;
	d->blank = true;
	d->cr = false;
}

size_t pop3_dot_feed(struct pop3_dot *d, const char *in, size_t in_len, char *out,
		     size_t out_size, size_t *out_len_r)
{
	size_t i = 0, o = 0;
	while (i < in_len && !d->done) {
		char c = in[i];
		if (d->bol && c == '.') {
			/* RFC 1939 3: byte-stuff a line that starts with ".". */
			if (out_size - o < 2)
				break;
			out[o++] = '.';
			out[o++] = '.';
			i++;
			d->out_octets++;
			d->bol = false;
			d->blank = false;
			d->cr = false;
			continue;
		}
		if (c == '\n') {
			/* LF -> CRLF; an existing CRLF stays as it is. */
			size_t need = d->cr ? 1 : 2;
			if (out_size - o < need)
				break;
			if (!d->cr)
				out[o++] = '\r';
			out[o++] = '\n';
			i++;
			d->out_octets += need;
			pop3_dot_line_end(d);
			continue;
		}
		/* A run of ordinary octets up to the next LF, copied at once. */
		const char *lf = memchr(in + i, '\n', in_len - i);
		size_t run = lf != NULL ? (size_t)(lf - (in + i)) : in_len - i;
		if (run > out_size - o)
			run = out_size - o;
		if (run == 0)
			break;
		memcpy(out + o, in + i, run);
		if (d->blank) {
			for (size_t k = 0; k < run; k++) {
				if (in[i + k] != '\r') {
					d->blank = false;
					break;
				}
			}
		}
		d->cr = in[i + run - 1] == '\r';
		d->bol = false;
		d->out_octets += run;
		i += run;
		o += run;
	}
	*out_len_r = o;
	return i;
}

int pop3_dot_finish(struct pop3_dot *d, char *out, size_t out_size)
{
	char tmp[POP3_DOT_FINISH_MAX];
	size_t n = 0;
	if (!d->bol) {
		/* RFC 1939 3: every line of the response ends with CRLF, even
		 * when the message's last line had no line end. */
		if (!d->cr)
			tmp[n++] = '\r';
		tmp[n++] = '\n';
	}
	memcpy(tmp + n, ".\r\n", 3);
	n += 3;
	if (out_size < n)
		return -1;
	memcpy(out, tmp, n);
	d->finished = true;
	return (int)n;
}
