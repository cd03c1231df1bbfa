/*
 * fuzz-imap-parser.c — libFuzzer entry point for imap_parser_feed() and the
 * literal API (lib-imap/imap-parser.h).
 *
 * Byte 0 picks a split point (and, with its top bit, small limits so the
 * fuzzer reaches every limit quickly); the rest is a client's byte stream.
 * The stream is fed three ways — whole, in two parts split at that point,
 * and one byte at a time — and each way writes a transcript of everything
 * the parser reports (results, tags, names, arguments, literal details,
 * errors, fatal). Literals are accepted into memory when small, into a sink
 * (which refuses data containing '!') when medium, and rejected when
 * large; a non-synchronising reject makes the parser skip the bytes.
 *
 * Invariants: the three transcripts are identical; used <= given, and MORE
 * means everything was used; a DONE command has a name and well-formed
 * arguments (NUL-terminated strings, lengths, list counts, depth and
 * argument limits); an ERROR has a reason; a fatal parser stays fatal.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "lib-imap/imap-parser.h"
#include "lib/buf.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const struct imap_parser_limits small_limits = {
	.line_max = 64, .literal_max = 16, .depth_max = 4, .args_max = 8,
};

static int sink_cb(void *ctx, const char *data, size_t len)
{
	(void)ctx;
	return memchr(data, '!', len) != NULL ? -1 : 0;
}

/* Checks one argument array and appends it to the transcript; returns the
 * number of arguments in it (recursively). */
static unsigned check_args(const struct imap_arg *a, unsigned n, unsigned depth,
			   const struct imap_parser_limits *lim, struct buf *tr)
{
	unsigned total = n;
	FUZZ_CHECK(depth <= lim->depth_max);
	for (unsigned i = 0; i < n; i++) {
		buf_printf(tr, " %d", (int)a[i].type);
		switch (a[i].type) {
		case IMAP_ARG_ATOM:
		case IMAP_ARG_NIL:
		case IMAP_ARG_STRING:
			FUZZ_CHECK(a[i].str != NULL && a[i].str[a[i].len] == '\0');
			FUZZ_CHECK(strlen(a[i].str) == a[i].len);
			FUZZ_CHECK(a[i].len <= lim->line_max);
			FUZZ_CHECK(a[i].type != IMAP_ARG_ATOM || a[i].len > 0);
			buf_append(tr, a[i].str, a[i].len);
			break;
		case IMAP_ARG_LITERAL:
			buf_printf(tr, "{%zu%s}", a[i].len, a[i].literal8 ? "~" : "");
			if (a[i].str != NULL) {
				FUZZ_CHECK(a[i].str[a[i].len] == '\0');
				FUZZ_CHECK(a[i].len <= lim->literal_max);
				FUZZ_CHECK(a[i].literal8 || memchr(a[i].str, '\0', a[i].len) == NULL);
				buf_append(tr, a[i].str, a[i].len);
			}
			break;
		case IMAP_ARG_LIST:
			FUZZ_CHECK(a[i].count == 0 || a[i].list != NULL);
			buf_append_str(tr, "(");
			total += check_args(a[i].list, a[i].count, depth + 1, lim, tr);
			buf_append_str(tr, ")");
			break;
		default:
			FUZZ_CHECK(!"bad arg type");
		}
	}
	return total;
}

/* Feeds in[0..len) in pieces of at most chunk (split: first piece ends at
 * split) and writes the transcript. */
static void run(const char *in, size_t len, size_t chunk, size_t split, bool small,
		struct buf *tr)
{
	const struct imap_parser_limits *lim = small ? &small_limits : NULL;
	struct imap_parser_limits eff = small ? small_limits
		: (struct imap_parser_limits){ 64 * 1024, 1024 * 1024, 16, 10000 };
	struct imap_parser *p = imap_parser_new(lim);
	size_t pos = 0;
	unsigned spins = 0;
	bool fatal = false;

	FUZZ_CHECK(p != NULL);
	for (;;) {
		size_t n = len - pos;
		if (split > 0 && pos < split && n > split - pos)
			n = split - pos;
		if (n > chunk)
			n = chunk;
		size_t used = 99;
		enum imap_parse_result r = imap_parser_feed(p, in + pos, n, &used);
		FUZZ_CHECK(used <= n);
		FUZZ_CHECK(r != IMAP_PARSE_MORE || used == n);
		pos += used;
		spins = used > 0 ? 0 : spins + 1;
		FUZZ_CHECK(spins < 4);
		switch (r) {
		case IMAP_PARSE_MORE:
			break;
		case IMAP_PARSE_DONE: {
			unsigned count;
			const struct imap_arg *a = imap_parser_args(p, &count);
			const char *name = imap_parser_name(p);
			FUZZ_CHECK(name != NULL && name[0] != '\0');
			for (const char *c = name; *c != '\0'; c++)
				FUZZ_CHECK(!(*c >= 'a' && *c <= 'z'));
			FUZZ_CHECK(imap_parser_tag(p)[0] != '\0');
			buf_printf(tr, "DONE %s %s", imap_parser_tag(p), name);
			FUZZ_CHECK(check_args(a, count, 0, &eff, tr) <= eff.args_max);
			buf_append_str(tr, "\n");
			imap_parser_reset(p);
			break;
		}
		case IMAP_PARSE_ERROR:
			FUZZ_CHECK(imap_parser_error(p)[0] != '\0');
			buf_printf(tr, "ERROR %s %s %d\n", imap_parser_tag(p), imap_parser_error(p),
				   imap_parser_fatal(p));
			fatal = imap_parser_fatal(p);
			imap_parser_reset(p);
			break;
		case IMAP_PARSE_LITERAL: {
			struct imap_literal_info li;
			imap_parser_literal(p, &li);
			FUZZ_CHECK(li.size <= UINT32_MAX);
			FUZZ_CHECK(imap_parser_name(p) != NULL);
			buf_printf(tr, "LIT %llu %d %d %u\n", (unsigned long long)li.size, li.sync,
				   li.literal8, li.index);
			if (li.size <= 256) {
				imap_parser_literal_accept(p, NULL, NULL);
			} else if (li.size <= 4096) {
				imap_parser_literal_accept(p, sink_cb, NULL);
			} else {
				imap_parser_literal_reject(p);
				imap_parser_reset(p);
			}
			break;
		}
		default:
			FUZZ_CHECK(!"bad result");
		}
		if (fatal || (pos == len && r == IMAP_PARSE_MORE))
			break;
	}
	if (fatal) {
		size_t used = 99;
		FUZZ_CHECK(imap_parser_feed(p, "a NOOP\r\n", 8, &used) == IMAP_PARSE_ERROR);
		FUZZ_CHECK(used == 0 && imap_parser_fatal(p));
	}
	imap_parser_free(&p);
	FUZZ_CHECK(p == NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size > 64 * 1024)
		return 0;
	bool small = (data[0] & 0x80) != 0;
	size_t len = size - 1;
	size_t split = len > 0 ? (data[0] & 0x7f) % (len + 1) : 0;
	char *in = fuzz_copy(data + 1, len, 0);
	struct buf t1, t2, t3;

	buf_init(&t1, 64u << 20);
	buf_init(&t2, 64u << 20);
	buf_init(&t3, 64u << 20);
	run(in, len, SIZE_MAX, 0, small, &t1);
	run(in, len, SIZE_MAX, split, small, &t2);
	run(in, len, 1, 0, small, &t3);
	FUZZ_CHECK(t1.len == t2.len && (t1.len == 0 || memcmp(t1.data, t2.data, t1.len) == 0));
	FUZZ_CHECK(t1.len == t3.len && (t1.len == 0 || memcmp(t1.data, t3.data, t1.len) == 0));
	buf_free(&t1);
	buf_free(&t2);
	buf_free(&t3);
	free(in);
	return 0;
}
