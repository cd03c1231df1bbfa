/*
 * fuzz-imap-search.c — libFuzzer entry point for the SEARCH criteria parser
 * and evaluator (lib-imap/imap-search.h), fed through the real command
 * parser: the input becomes "s SEARCH <input>\r\n" (literals up to 1 KiB
 * accepted into memory, larger ones rejected), then
 * imap_search_parse_options() and imap_search_parse() run on the arguments
 * and the program is evaluated on a few fake messages, with and without a
 * saved result for "$".
 *
 * Invariants: a failed parse gives a reason and no program; options return
 * an index inside the arguments; evaluation is deterministic (the same
 * answer twice) and never calls a callback that is NULL (the last message
 * has none).
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

#include "lib-imap/imap-parser.h"
#include "lib-imap/imap-search.h"
#include "lib-imap/imap-seqset.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct fake {
	uint64_t size;
	int64_t sent;
	const char *keyword, *subject, *body;
};

static uint64_t size_cb(void *ctx)
{
	return ((const struct fake *)ctx)->size;
}

static bool keyword_cb(void *ctx, const char *kw)
{
	FUZZ_CHECK(kw != NULL);
	return strcasecmp(((const struct fake *)ctx)->keyword, kw) == 0;
}

static int64_t sent_cb(void *ctx)
{
	return ((const struct fake *)ctx)->sent;
}

static bool header_cb(void *ctx, const char *field, const char *needle)
{
	FUZZ_CHECK(field != NULL && field[0] != '\0' && needle != NULL);
	return strcasecmp(field, "Subject") == 0 &&
	       strstr(((const struct fake *)ctx)->subject, needle) != NULL;
}

static bool text_cb(void *ctx, const char *needle, bool with_headers)
{
	const struct fake *f = ctx;
	FUZZ_CHECK(needle != NULL);
	return strstr(f->body, needle) != NULL ||
	       (with_headers && strstr(f->subject, needle) != NULL);
}

static void evaluate(const struct imap_search *s, const struct imap_seqset *saved)
{
	static const struct fake fakes[3] = {
		{ 100, 0, "work", "hello", "body text" },
		{ 5000, 1706745600, "$Junk", "", "" },
		{ 0, -1, "", "re: hello", "x" },
	};
	for (unsigned i = 0; i < 4; i++) {
		struct imap_search_msg m = {
			.seq = i + 1, .uid = (i + 1) * 7, .flags = i * 13u & 0x3fu,
			.modseq = i * 5u, .internaldate = 1706745600 + (int64_t)i * 40000 - 50000,
		};
		if (i < 3) {
			m.size = size_cb;
			m.has_keyword = keyword_cb;
			m.sent_date = sent_cb;
			m.header_contains = header_cb;
			m.text_contains = text_cb;
			m.ctx = (void *)&fakes[i];
		}
		bool a = imap_search_match(s, &m, saved);
		bool b = imap_search_match(s, &m, saved);
		FUZZ_CHECK(a == b);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 16 * 1024)
		return 0;
	char *line = malloc(size + 12);
	FUZZ_CHECK(line != NULL);
	memcpy(line, "s SEARCH ", 9);
	memcpy(line + 9, data, size);
	memcpy(line + 9 + size, "\r\n", 2);
	size_t len = size + 11, pos = 0;

	static const struct imap_parser_limits lim = { .depth_max = 40 };
	struct imap_parser *p = imap_parser_new(&lim);
	FUZZ_CHECK(p != NULL);
	enum imap_parse_result r = IMAP_PARSE_MORE;
	while (pos < len) {
		size_t used;
		r = imap_parser_feed(p, line + pos, len - pos, &used);
		pos += used;
		if (r == IMAP_PARSE_LITERAL) {
			struct imap_literal_info li;
			imap_parser_literal(p, &li);
			if (li.size <= 1024) {
				imap_parser_literal_accept(p, NULL, NULL);
			} else {
				imap_parser_literal_reject(p);
				r = IMAP_PARSE_ERROR;
				break;
			}
		} else if (r != IMAP_PARSE_MORE) {
			break;
		}
	}
	if (r == IMAP_PARSE_DONE) {
		unsigned n, ret;
		bool badcharset;
		const char *error = NULL;
		const struct imap_arg *args = imap_parser_args(p, &n);
		int first = imap_search_parse_options(args, n, &ret, &badcharset, &error);
		if (first < 0) {
			FUZZ_CHECK(error != NULL);
		} else {
			FUZZ_CHECK((unsigned)first <= n);
			struct imap_search *s = NULL;
			error = NULL;
			if (imap_search_parse(args + first, n - (unsigned)first, 3, 21, &s, &error) <
			    0) {
				FUZZ_CHECK(s == NULL && error != NULL && error[0] != '\0');
			} else {
				FUZZ_CHECK(s != NULL);
				struct imap_seqset saved = { 0 };
				FUZZ_CHECK(imap_seqset_add(&saved, 14) == 0);
				evaluate(s, NULL);
				evaluate(s, &saved);
				(void)imap_search_uses_modseq(s);
				imap_seqset_free(&saved);
				imap_search_free(&s);
				FUZZ_CHECK(s == NULL);
			}
		}
	}
	imap_parser_free(&p);
	free(line);
	return 0;
}
