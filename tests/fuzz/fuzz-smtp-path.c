/*
 * fuzz-smtp-path.c — libFuzzer entry point for the argument parsers of
 * lib-smtp: smtp_path_parse() (MAIL FROM / RCPT TO paths and ESMTP
 * parameters), smtp_xtext_decode(), smtp_domain_valid(), smtp_bdat_parse(),
 * plus smtp_reply_format() (the one place untrusted text reaches a reply).
 *
 * Input: one selector byte, then the argument text. selector % 8:
 *   0 MAIL path (allow_null), 1 RCPT path, 6/7 both;
 *   2 xtext, 3 domain, 4 BDAT, 5 reply (next byte picks code and enhanced code).
 * Text seeds can start with the ASCII digit of their mode ('0' == 48 == 0 mod 8).
 *
 * Invariants checked besides memory safety: a parsed address formats and
 * parses back to the same address (smtp_address_format() re-quotes exactly
 * when needed); parsed strings hold no control characters; xtext output is
 * printable ASCII and never longer than its input; a formatted reply is
 * CRLF-terminated lines starting with the code and holds no other CR or LF.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "lib-smtp/smtp.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_no_ctl(const char *s)
{
	for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++)
		FUZZ_CHECK(*p >= 0x20 && *p != 0x7f);
}

static void fuzz_path(const char *args, size_t len, bool allow_null)
{
	struct smtp_path_args *r = malloc(sizeof(*r)), *again = malloc(sizeof(*again));
	const char *error = NULL;
	char out[SMTP_ADDRESS_MAX * 8 + 8], line[sizeof(out) + 2];

	FUZZ_CHECK(r != NULL && again != NULL);
	if (smtp_path_parse(args, len, allow_null, r, &error) < 0) {
		FUZZ_CHECK(error != NULL && strncmp(error, "501 ", 4) == 0);
		goto out;
	}
	FUZZ_CHECK(r->nparams <= SMTP_PARAMS_MAX);
	FUZZ_CHECK(allow_null || !r->addr.null_path);
	FUZZ_CHECK(memchr(r->addr.localpart, '\0', sizeof(r->addr.localpart)) != NULL);
	FUZZ_CHECK(memchr(r->addr.domain, '\0', sizeof(r->addr.domain)) != NULL);
	check_no_ctl(r->addr.localpart);
	check_no_ctl(r->addr.domain);
	if (r->addr.domain[0] != '\0' && !r->addr.domain_literal)
		FUZZ_CHECK(smtp_domain_valid(r->addr.domain, strlen(r->addr.domain)));
	(void)smtp_address_has_relay_chars(&r->addr);
	for (unsigned i = 0; i < r->nparams; i++) {
		const struct smtp_param *p = &r->params[i];
		FUZZ_CHECK(p->keyword[0] != '\0');
		FUZZ_CHECK(smtp_param_find(r, p->keyword) == p);
		FUZZ_CHECK(p->has_value || p->value[0] == '\0');
		char decoded[sizeof(p->value)];
		if (smtp_xtext_decode(p->value, decoded, sizeof(decoded)) == 0)
			check_no_ctl(decoded);
	}

	/* Round trip: format, wrap in <>, parse again, compare. */
	FUZZ_CHECK(smtp_address_format(&r->addr, out, sizeof(out)) == 0);
	size_t n = strlen(out);
	line[0] = '<';
	memcpy(line + 1, out, n);
	line[n + 1] = '>';
	if (smtp_path_parse(line, n + 2, allow_null, again, &error) < 0) {
		fprintf(stderr, "formatted address <%s> does not parse again: %s\n", out, error);
		abort();
	}
	FUZZ_CHECK(again->addr.null_path == r->addr.null_path);
	FUZZ_CHECK(strcmp(again->addr.localpart, r->addr.localpart) == 0);
	FUZZ_CHECK(strcmp(again->addr.domain, r->addr.domain) == 0);
	FUZZ_CHECK(again->addr.domain_literal == r->addr.domain_literal);
	FUZZ_CHECK(again->addr.utf8 == r->addr.utf8);
	FUZZ_CHECK(!again->addr.had_source_route);
out:
	free(r);
	free(again);
}

static void fuzz_xtext(const char *in, size_t len)
{
	char out[600];
	size_t size = len < sizeof(out) ? len + 1 : sizeof(out);

	/* size = len + 1 is exactly enough: xtext never grows. */
	if (smtp_xtext_decode(in, out, size) == 0) {
		FUZZ_CHECK(strlen(out) <= strlen(in));
		for (const unsigned char *p = (const unsigned char *)out; *p != '\0'; p++)
			FUZZ_CHECK(*p >= 0x20 && *p <= 0x7e);
	} else {
		FUZZ_CHECK(out[0] == '\0');
	}
	(void)smtp_xtext_decode(in, out, 0);
}

static void fuzz_reply(const uint8_t *data, size_t size)
{
	static const unsigned codes[] = { 220, 250, 354, 421, 451, 501, 550, 199, 600, 252 };
	static const char *const enh[] = { NULL, "2.0.0", "5.1.1", "4.3.0", "5.5.100",
					   "2.1", "5.7.8x", "" };
	struct buf out;

	if (size == 0)
		return;
	unsigned code = codes[data[0] % 10];
	const char *e = enh[(data[0] / 10) % 8];
	size_t max = (data[0] & 0x80) != 0 ? 64 : 64 * 1024;
	char *text = fuzz_copy(data + 1, size - 1, 1);

	buf_init(&out, max);
	if (smtp_reply_format(&out, code, e, text) == 0) {
		FUZZ_CHECK(out.len >= 5 && memcmp(out.data + out.len - 2, "\r\n", 2) == 0);
		size_t bol = 0;
		for (size_t i = 0; i < out.len; i++) {
			char c = out.data[i];
			if (i == bol) {
				FUZZ_CHECK(out.len - i >= 5);
				FUZZ_CHECK(out.data[i] == '0' + (char)(code / 100));
				FUZZ_CHECK(out.data[i + 3] == ' ' || out.data[i + 3] == '-' ||
					   out.data[i + 3] == '\r');
			}
			if (c == '\r') {
				FUZZ_CHECK(i + 1 < out.len && out.data[i + 1] == '\n');
			} else if (c == '\n') {
				FUZZ_CHECK(i > 0 && out.data[i - 1] == '\r');
				bol = i + 1;
			} else {
				FUZZ_CHECK((unsigned char)c >= 0x20 && c != 0x7f);
			}
		}
	} else {
		FUZZ_CHECK(out.len == 0);
	}
	buf_free(&out);
	free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	unsigned mode = data[0] % 8;
	data++;
	size--;

	/* Exact-size copy for the pointer + length parsers; NUL-terminated for
	 * xtext (its input is a NUL-terminated parameter value). */
	char *args = fuzz_copy(data, size, 0);
	char *str = fuzz_copy(data, size, 1);

	switch (mode) {
	case 0:
	case 1:
		fuzz_path(args, size, mode == 0);
		break;
	case 2:
		fuzz_xtext(str, size);
		break;
	case 3:
		if (smtp_domain_valid(args, size))
			FUZZ_CHECK(size >= 1 && size <= SMTP_DOMAIN_MAX);
		break;
	case 4: {
		uint64_t chunk = 0;
		bool last = false;
		const char *error = NULL;
		if (smtp_bdat_parse(args, size, &chunk, &last, &error) < 0)
			FUZZ_CHECK(error != NULL && strncmp(error, "501 ", 4) == 0);
		break;
	}
	case 5:
		fuzz_reply(data, size);
		break;
	default:
		fuzz_path(args, size, true);
		fuzz_path(args, size, false);
		break;
	}
	free(args);
	free(str);
	return 0;
}
