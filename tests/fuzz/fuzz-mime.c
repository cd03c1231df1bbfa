/*
 * fuzz-mime.c — libFuzzer entry point for lib-mime: parses arbitrary bytes
 * as a message and produces ENVELOPE (with and without UTF-8), BODY,
 * BODYSTRUCTURE, a few sections, BINARY and the SEARCH helpers. Checks:
 * balanced IMAP syntax, BODY[] and HEADER+TEXT sizes equal RFC822.SIZE,
 * no crash, no leak (ASan), no undefined behaviour (UBSan).
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fuzz.h"
#include "lib-mime/mime.h"
#include "lib/buf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Parentheses balance outside quoted strings and literals, and the whole
 * output is one parenthesised list. */
static bool balanced(const char *s, size_t len)
{
	int depth = 0;

	if (len == 0 || s[0] != '(')
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];
		if (c == '"') {
			for (i++; i < len && s[i] != '"'; i++) {
				if (s[i] == '\\')
					i++;
			}
			if (i >= len)
				return false;
		} else if (c == '{') {
			size_t n = 0;
			for (i++; i < len && s[i] >= '0' && s[i] <= '9'; i++)
				n = n * 10 + (size_t)(s[i] - '0');
			if (i + 2 >= len || s[i] != '}' || s[i + 1] != '\r' || s[i + 2] != '\n')
				return false;
			i += 2 + n;
			if (i >= len)
				return false;
		} else if (c == '(') {
			depth++;
		} else if (c == ')') {
			if (--depth < 0 || (depth == 0 && i != len - 1))
				return false;
		}
	}
	return depth == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool init;
	static const char *const sections[] = {
		"HEADER", "TEXT", "1", "1.MIME", "2", "1.1", "2.HEADER", "2.TEXT", "1.2.3",
		"HEADER.FIELDS (From Subject Content-Type)", "HEADER.FIELDS.NOT (Received)",
		"2.1.MIME",
	};
	static const char *const parts[] = { "", "1", "2", "1.1", "2.1" };
	char *copy = fuzz_copy(data, size, 0);
	struct mime_message *m;
	struct buf b;
	const char *error;

	if (!init) {
		mime_init();
		init = true;
	}
	m = mime_parse(copy, size);
	FUZZ_CHECK(m != NULL);
	buf_init(&b, 64u * 1024 * 1024);
	FUZZ_CHECK(mime_size(m) == mime_crlf_size(copy, size));

	for (int utf8 = 0; utf8 <= 1; utf8++) {
		buf_reset(&b);
		FUZZ_CHECK(mime_envelope(m, utf8 != 0, &b) == 0);
		FUZZ_CHECK(balanced(b.data, b.len));
	}
	for (int ext = 0; ext <= 1; ext++) {
		buf_reset(&b);
		FUZZ_CHECK(mime_bodystructure(m, ext != 0, &b) == 0);
		FUZZ_CHECK(balanced(b.data, b.len));
	}
	buf_reset(&b);
	FUZZ_CHECK(mime_section(m, "", &b, &error) == 0);
	FUZZ_CHECK(b.len == mime_size(m));
	size_t hlen;
	buf_reset(&b);
	FUZZ_CHECK(mime_section(m, "HEADER", &b, &error) == 0);
	hlen = b.len;
	buf_reset(&b);
	FUZZ_CHECK(mime_section(m, "TEXT", &b, &error) == 0);
	FUZZ_CHECK(hlen + b.len == mime_size(m));
	for (size_t i = 0; i < sizeof(sections) / sizeof(sections[0]); i++) {
		buf_reset(&b);
		FUZZ_CHECK(mime_section(m, sections[i], &b, &error) == 0);
	}
	for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
		buf_reset(&b);
		int ret = mime_binary(m, parts[i], &b, &error);
		FUZZ_CHECK(ret == 0 || ret == -1);
	}
	(void)mime_header_contains(m, "Subject", "a");
	(void)mime_text_contains(m, "the", true);
	(void)mime_sent_date(m, true);

	buf_free(&b);
	mime_free(&m);
	free(copy);
	return 0;
}
