/*
 * fuzz-smtp-reply.c — libFuzzer entry point for the client side of lib-smtp:
 * smtp_reply_parse(), and on what it returns smtp_reply_oneline(),
 * smtp_ehlo_caps_parse() and smtp_xtext_encode() / smtp_xtext_decode().
 *
 * Input: byte 0 chooses where the "split" run cuts the rest (scaled to its
 * length); the rest is what a remote server sends, as deliver reads it.
 * Text seeds work: "x250 ok\r\n".
 *
 * The input is parsed whole, one byte at a time, in two halves and split at
 * byte 0's point; the replies (code, enhanced code, text, line count), the
 * end (need more input or the error text) and the octets consumed must be
 * the same, or abort(). Also checked (smtp.h): a call never consumes more
 * than it was given and 0 means it consumed all; after -1 a call consumes
 * nothing and fails alike; codes are 200..599; the enhanced code has the
 * code's class; the text is printable ASCII and '\n' only, within
 * SMTP_REPLY_TEXT_MAX, with nlines - 1 line breaks when not truncated;
 * nlines is 1..SMTP_REPLY_LINES_MAX; the one-line form is NUL-terminated,
 * printable, starts with the code and fits any size; the xtext encoding of
 * the text decodes back to it.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "lib-smtp/smtp.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* What one run saw: a digest of every reply, so runs compare cheaply. */
struct run {
	unsigned nreplies;
	uint64_t digest;
	int end;              /* 0 need more, -1 error */
	const char *error;
	size_t consumed;
};

static uint64_t mix(uint64_t h, const void *p, size_t n)
{
	const unsigned char *b = p;
	for (size_t i = 0; i < n; i++)
		h = (h ^ b[i]) * 0x100000001b3ull;
	return h;
}

static void check_reply(const struct smtp_reply *r)
{
	FUZZ_CHECK(r->code >= 200 && r->code <= 599);
	FUZZ_CHECK(r->nlines >= 1 && r->nlines <= SMTP_REPLY_LINES_MAX);

	size_t elen = strnlen(r->enhanced, sizeof(r->enhanced));
	FUZZ_CHECK(elen < sizeof(r->enhanced));
	if (elen > 0) {
		FUZZ_CHECK(elen >= 5 && (unsigned)(r->enhanced[0] - '0') == r->code / 100);
		FUZZ_CHECK(strncmp(r->text, r->enhanced, elen) == 0);
	}

	size_t tlen = strnlen(r->text, sizeof(r->text));
	FUZZ_CHECK(tlen < sizeof(r->text));
	unsigned breaks = 0;
	for (size_t i = 0; i < tlen; i++) {
		unsigned char c = (unsigned char)r->text[i];
		FUZZ_CHECK((c >= 0x20 && c <= 0x7e) || c == '\n');
		breaks += c == '\n';
	}
	if (tlen < sizeof(r->text) - 1)
		FUZZ_CHECK(breaks == r->nlines - 1);
	else
		FUZZ_CHECK(breaks <= r->nlines - 1);

	/* one line: any size, always terminated, printable, code first */
	char line[SMTP_REPLY_TEXT_MAX + 32];
	static const size_t sizes[] = { 1, 2, 4, 10, 64, sizeof(line) };
	for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
		memset(line, 'Z', sizeof(line));
		smtp_reply_oneline(r, line, sizes[s]);
		size_t n = strnlen(line, sizes[s]);
		FUZZ_CHECK(n < sizes[s]);
		for (size_t i = 0; i < n; i++)
			FUZZ_CHECK(line[i] >= 0x20 && line[i] <= 0x7e);
		if (sizes[s] >= 4)
			FUZZ_CHECK(n >= 3 && (unsigned)((line[0] - '0') * 100 + (line[1] - '0') * 10 +
						       (line[2] - '0')) == r->code);
	}

	struct smtp_ehlo_caps caps;
	smtp_ehlo_caps_parse(r, &caps);
	if (r->code != 250)
		FUZZ_CHECK(!caps.pipelining && !caps.size_given && !caps.auth_plain);
	if (!caps.size_given)
		FUZZ_CHECK(caps.size == 0);

	/* xtext round trip of the first line (printable ASCII only) */
	char first[SMTP_REPLY_TEXT_MAX], enc[SMTP_REPLY_TEXT_MAX * 3 + 1], dec[SMTP_REPLY_TEXT_MAX];
	const char *nl = memchr(r->text, '\n', tlen);
	size_t flen = nl != NULL ? (size_t)(nl - r->text) : tlen;
	memcpy(first, r->text, flen);
	first[flen] = '\0';
	FUZZ_CHECK(smtp_xtext_encode(first, enc, sizeof(enc)) == 0);
	FUZZ_CHECK(smtp_xtext_decode(enc, dec, sizeof(dec)) == 0);
	FUZZ_CHECK(strcmp(first, dec) == 0);
}

static void run_chunks(const uint8_t *in, size_t len, const size_t *cuts, size_t ncuts,
		       struct run *r)
{
	struct smtp_reply_parser *p = malloc(sizeof(*p));
	struct smtp_reply *reply = malloc(sizeof(*reply));
	size_t prev = 0;

	FUZZ_CHECK(p != NULL && reply != NULL);
	memset(r, 0, sizeof(*r));
	r->digest = 0xcbf29ce484222325ull;
	smtp_reply_parser_init(p);
	for (size_t c = 0; c <= ncuts && r->end == 0; c++) {
		size_t stop = c < ncuts ? cuts[c] : len;
		size_t chunk_len = stop - prev;
		/* Exact-size heap copy of each chunk: a peek past it is caught. */
		char *chunk = fuzz_copy(in + prev, chunk_len, 0);
		size_t pos = 0;
		for (;;) {
			size_t consumed = (size_t)-1;
			const char *error = NULL;
			int ret = smtp_reply_parse(p, chunk + pos, chunk_len - pos, &consumed, reply,
						   &error);
			FUZZ_CHECK(consumed <= chunk_len - pos);
			pos += consumed;
			r->consumed += consumed;
			if (ret == 1) {
				check_reply(reply);
				r->nreplies++;
				r->digest = mix(r->digest, &reply->code, sizeof(reply->code));
				r->digest = mix(r->digest, &reply->nlines, sizeof(reply->nlines));
				r->digest = mix(r->digest, reply->enhanced, strlen(reply->enhanced) + 1);
				r->digest = mix(r->digest, reply->text, strlen(reply->text) + 1);
				continue;
			}
			if (ret == 0) {
				FUZZ_CHECK(pos == chunk_len);
				break;
			}
			FUZZ_CHECK(ret == -1 && error != NULL && error[0] != '\0');
			r->end = -1;
			r->error = error;
			const char *again = NULL;
			consumed = 1;
			FUZZ_CHECK(smtp_reply_parse(p, chunk, chunk_len, &consumed, reply, &again) == -1);
			FUZZ_CHECK(consumed == 0 && again == error);
			break;
		}
		free(chunk);
		prev = stop;
	}
	free(reply);
	free(p);
}

static void compare(const char *what, const struct run *a, const struct run *b)
{
	if (a->nreplies == b->nreplies && a->digest == b->digest && a->end == b->end &&
	    a->error == b->error && a->consumed == b->consumed)
		return;
	fprintf(stderr, "smtp_reply: whole vs %s differ: replies %u/%u end %d/%d error %s/%s "
			"consumed %zu/%zu\n",
		what, a->nreplies, b->nreplies, a->end, b->end, a->error ? a->error : "-",
		b->error ? b->error : "-", a->consumed, b->consumed);
	abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	const uint8_t *in = data + 1;
	size_t len = size - 1;
	size_t split = len * data[0] / 255;
	struct run whole, bytes, halves, at;

	run_chunks(in, len, NULL, 0, &whole);
	if (whole.end == 0)
		FUZZ_CHECK(whole.consumed == len);

	size_t *cuts = malloc((len > 0 ? len : 1) * sizeof(*cuts));
	FUZZ_CHECK(cuts != NULL);
	for (size_t i = 0; i < len; i++)
		cuts[i] = i;           /* cuts[0] = 0: also an empty first feed */
	run_chunks(in, len, cuts, len, &bytes);
	free(cuts);

	size_t half = len / 2;
	run_chunks(in, len, &half, 1, &halves);
	run_chunks(in, len, &split, 1, &at);

	compare("one byte at a time", &whole, &bytes);
	compare("two halves", &whole, &halves);
	compare("split", &whole, &at);
	return 0;
}
