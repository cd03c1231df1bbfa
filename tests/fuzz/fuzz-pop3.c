/*
 * fuzz-pop3.c — libFuzzer entry point for lib-pop3: the command line parser
 * (pop3_command_parse, pop3_parse_numbers) and the dot-stuffing writer
 * (pop3_dot_feed / pop3_dot_finish) for RETR and TOP.
 *
 * Input: four header bytes, then the data.
 *   byte 0: bit 0 TOP mode (else RETR)
 *   byte 1: TOP's line count
 *   byte 2: where the "split" run cuts the data (scaled to its length)
 *   byte 3: output window of the chunked runs (2 + byte % 61)
 * The data is parsed as a command line (its first line, at most
 * POP3_LINE_MAX octets) and then written as a message.
 *
 * Invariants checked (abort() on failure):
 *  - the parser: 0 or -1; on 0 the keyword is 1..4 upper-case letters and
 *    the arguments lie inside the line; numbers parse to at most max;
 *  - the writer gives the same output fed whole, one byte at a time with a
 *    small window, and split in two with a 2-octet window;
 *  - RETR: the output ends with ".\r\n", has no ".\r\n" line before that
 *    (no early end: the smuggling property), every LF follows a CR, and
 *    unstuffed it equals the input with LF -> CRLF and a final line end;
 *    out_octets is the input's CRLF size;
 *  - TOP: its output without the terminator is a prefix of RETR's.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "lib-pop3/pop3.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct out {
	char *p;
	size_t len, cap;
	uint64_t octets;
};

static void out_add(struct out *o, const char *p, size_t n)
{
	FUZZ_CHECK(o->len + n <= o->cap);
	memcpy(o->p + o->len, p, n);
	o->len += n;
}

/* Feeds in[0..len) in chunks (chunk 0: whole; split: cut there first)
 * through an output window of room octets. */
static void dot_run(const char *in, size_t len, bool top, uint64_t lines, size_t chunk,
		    size_t split, size_t room, struct out *o)
{
	struct pop3_dot d;
	char win[4096];
	FUZZ_CHECK(room <= sizeof(win) && room >= 2);
	o->cap = 2 * len + POP3_DOT_FINISH_MAX;
	o->p = malloc(o->cap + 1);
	FUZZ_CHECK(o->p != NULL);
	o->len = 0;
	pop3_dot_init(&d, top, lines);
	size_t pos = 0;
	while (pos < len && !pop3_dot_done(&d)) {
		size_t n = len - pos;
		if (chunk != 0 && n > chunk)
			n = chunk;
		if (split != 0 && pos < split && pos + n > split)
			n = split - pos;
		size_t wrote;
		size_t k = pop3_dot_feed(&d, in + pos, n, win, room, &wrote);
		FUZZ_CHECK(k <= n);
		FUZZ_CHECK(wrote <= room);
		FUZZ_CHECK(k > 0 || pop3_dot_done(&d));
		out_add(o, win, wrote);
		pos += k;
	}
	FUZZ_CHECK(top || pos == len);
	char fin[POP3_DOT_FINISH_MAX];
	int f = pop3_dot_finish(&d, fin, sizeof(fin));
	FUZZ_CHECK(f >= 3 && f <= POP3_DOT_FINISH_MAX);
	out_add(o, fin, (size_t)f);
	o->octets = d.out_octets;
}

static void check_parser(const char *data, size_t size)
{
	const char *lf = memchr(data, '\n', size);
	size_t len = lf != NULL ? (size_t)(lf - data) : size;
	if (len > POP3_LINE_MAX)
		len = POP3_LINE_MAX;
	char *line = fuzz_copy((const uint8_t *)data, len, 0);
	struct pop3_command cmd;
	const char *error = NULL;
	int ret = pop3_command_parse(line, len, &cmd, &error);
	FUZZ_CHECK(ret == 0 || ret == -1);
	if (ret == 0) {
		size_t k = strlen(cmd.keyword);
		FUZZ_CHECK(k >= 1 && k <= POP3_KEYWORD_MAX);
		for (size_t i = 0; i < k; i++)
			FUZZ_CHECK(cmd.keyword[i] >= 'A' && cmd.keyword[i] <= 'Z');
		FUZZ_CHECK(cmd.args >= line && cmd.args + cmd.args_len == line + len);
		FUZZ_CHECK(cmd.cmd == POP3_CMD_UNKNOWN ||
			   strcmp(pop3_command_name(cmd.cmd), cmd.keyword) == 0);
		uint32_t nums[2];
		int n = pop3_parse_numbers(cmd.args, cmd.args_len, nums, 0, 2, &error);
		FUZZ_CHECK(n >= -1 && n <= 2);
		FUZZ_CHECK(n >= 0 || error != NULL);
	} else {
		FUZZ_CHECK(error != NULL);
	}
	free(line);
}

/* Unstuffs a RETR output and compares it with the normalised input. */
static void check_retr(const char *in, size_t len, const struct out *o)
{
	FUZZ_CHECK(o->len >= 3 && memcmp(o->p + o->len - 3, ".\r\n", 3) == 0);
	size_t body = o->len - 3;
	/* The expected content: LF -> CRLF, and a line end after the last
	 * line. */
	char *want = malloc(2 * len + 3);
	FUZZ_CHECK(want != NULL);
	size_t w = 0;
	for (size_t i = 0; i < len; i++) {
		if (in[i] == '\n' && (i == 0 || in[i - 1] != '\r'))
			want[w++] = '\r';
		want[w++] = in[i];
	}
	uint64_t octets = w;
	if (len > 0 && in[len - 1] != '\n') {
		if (in[len - 1] != '\r')
			want[w++] = '\r';
		want[w++] = '\n';
	}
	FUZZ_CHECK(o->octets == octets);
	/* Walk the output line by line. */
	size_t pos = 0, g = 0;
	while (pos < body) {
		const char *lf = memchr(o->p + pos, '\n', body - pos);
		FUZZ_CHECK(lf != NULL); /* the body ends with a line end */
		size_t end = (size_t)(lf - o->p) + 1;
		FUZZ_CHECK(end - pos >= 2 && o->p[end - 2] == '\r');
		/* No early terminator: a ".\r\n" line inside the body. */
		FUZZ_CHECK(!(end - pos == 3 && o->p[pos] == '.'));
		size_t start = pos;
		if (o->p[pos] == '.') {
			FUZZ_CHECK(end - pos >= 4 && o->p[pos + 1] == '.');
			start++;
		}
		FUZZ_CHECK(g + (end - start) <= w);
		FUZZ_CHECK(memcmp(want + g, o->p + start, end - start) == 0);
		g += end - start;
		pos = end;
	}
	FUZZ_CHECK(g == w);
	free(want);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 4)
		return 0;
	bool top = (data[0] & 1) != 0;
	uint64_t lines = data[1];
	size_t len = size - 4;
	size_t split = len > 1 ? 1 + (size_t)data[2] * (len - 1) / 256 : 0;
	size_t room = 2 + (size_t)data[3] % 61;
	char *in = fuzz_copy(data + 4, len, 0);

	check_parser(in, len);

	struct out whole, bytes, halves, retr;
	dot_run(in, len, top, lines, 0, 0, 4096, &whole);
	dot_run(in, len, top, lines, 1, 0, room, &bytes);
	dot_run(in, len, top, lines, 0, split, 2, &halves);
	FUZZ_CHECK(whole.len == bytes.len && memcmp(whole.p, bytes.p, whole.len) == 0);
	FUZZ_CHECK(whole.len == halves.len && memcmp(whole.p, halves.p, whole.len) == 0);
	FUZZ_CHECK(whole.octets == bytes.octets && whole.octets == halves.octets);
	if (!top) {
		check_retr(in, len, &whole);
	} else {
		dot_run(in, len, false, 0, 0, 0, 4096, &retr);
		check_retr(in, len, &retr);
		FUZZ_CHECK(whole.len <= retr.len);
		FUZZ_CHECK(memcmp(whole.p, retr.p, whole.len - 3) == 0);
		free(retr.p);
	}
	free(whole.p);
	free(bytes.p);
	free(halves.p);
	free(in);
	return 0;
}
