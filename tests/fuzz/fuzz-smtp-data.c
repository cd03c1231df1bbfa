/*
 * fuzz-smtp-data.c — libFuzzer entry point for the DATA/BDAT content filter
 * (smtp_data_init / smtp_data_feed / smtp_data_finish).
 *
 * Input: three header bytes, then the message content as the client sends it.
 *   byte 0: bit 0 RAW (BDAT) mode, else DOT (DATA); bit 1 normalize_bare;
 *           bit 2 small output buffer (to reach the overflow path)
 *   byte 1: max_line (0 = no limit; small values reach LINE_TOO_LONG)
 *   byte 2: where the "split" run cuts the content (scaled to its length)
 * Text seeds work: "0P " is DOT mode, no normalisation, max_line 80.
 *
 * The invariant (smtp.h: "Output, errors and results are the same however
 * the input is split into chunks") is checked by feeding the content whole,
 * one byte at a time, in two halves and split at byte 2's point, and
 * comparing output, error bits, overflow, the end position and in_octets;
 * any difference abort()s. Also checked: a feed never consumes more than it
 * was given, only DOT mode ends, after the end further feeds consume nothing,
 * the output never holds NUL, and with normalize_bare never a CR and never a
 * BARE_* flag.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "lib-smtp/smtp.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct run {
	struct buf out;
	unsigned errors;
	bool overflow;
	bool done;          /* DOT: the terminator was seen */
	size_t end;         /* octets consumed in all */
	uint64_t in_octets;
};

struct params {
	enum smtp_data_mode mode;
	bool normalize;
	size_t max_line;
	size_t out_max;
};

/* Feeds in[0..len) in chunks of the given sizes (a chunk size of 0 means
 * "one byte at a time" for the rest). */
static void run_chunks(const struct params *pm, const char *in, size_t len,
		       const size_t *cuts, size_t ncuts, struct run *r)
{
	struct smtp_data d;
	size_t pos = 0, prev = 0;

	memset(r, 0, sizeof(*r));
	buf_init(&r->out, pm->out_max);
	smtp_data_init(&d, pm->mode, pm->normalize, pm->max_line);

	/* Chunk boundaries: cuts[] (increasing, each <= len), then len. */
	for (size_t c = 0; c <= ncuts; c++) {
		size_t stop = c < ncuts ? cuts[c] : len;
		size_t chunk_len = stop - prev;
		/* Exact-size heap copy of each chunk: a peek past it is caught. */
		char *chunk = fuzz_copy((const uint8_t *)in + prev, chunk_len, 0);
		size_t consumed = (size_t)-1;
		int ret = smtp_data_feed(&d, chunk, chunk_len, &consumed, &r->out);
		free(chunk);

		FUZZ_CHECK(ret == 0 || ret == 1);
		FUZZ_CHECK(consumed <= chunk_len);
		if (r->done) {
			FUZZ_CHECK(ret == 1 && consumed == 0);
		} else if (ret == 1) {
			FUZZ_CHECK(pm->mode == SMTP_DATA_DOT);
			r->done = true;
			pos += consumed;
		} else {
			FUZZ_CHECK(consumed == chunk_len);
			pos += consumed;
		}
		prev = stop;
	}
	if (!r->done)
		smtp_data_finish(&d, &r->out);
	/* finish() is a no-op after the end; a second call must be too. */
	size_t len_before = r->out.len;
	smtp_data_finish(&d, &r->out);
	FUZZ_CHECK(r->out.len == len_before);

	r->errors = d.errors;
	r->overflow = d.overflow;
	r->end = pos;
	r->in_octets = d.in_octets;
	FUZZ_CHECK(r->in_octets == pos);
	FUZZ_CHECK(r->overflow || r->out.len <= pm->out_max);
}

static void check_output(const struct params *pm, const struct run *r)
{
	if (r->out.len == 0)
		return;
	FUZZ_CHECK(memchr(r->out.data, '\0', r->out.len) == NULL);
	if (pm->normalize) {
		FUZZ_CHECK(memchr(r->out.data, '\r', r->out.len) == NULL);
		FUZZ_CHECK((r->errors & (SMTP_DATA_BARE_LF | SMTP_DATA_BARE_CR)) == 0);
	}
}

static void compare(const char *what, const struct run *a, const struct run *b)
{
	bool same = a->errors == b->errors && a->overflow == b->overflow &&
		    a->done == b->done && a->end == b->end && a->in_octets == b->in_octets;
	/* After an overflow the output depends on the chunking (smtp.h). */
	if (same && !a->overflow)
		same = a->out.len == b->out.len &&
		       (a->out.len == 0 || memcmp(a->out.data, b->out.data, a->out.len) == 0);
	if (same)
		return;
	fprintf(stderr,
		"smtp_data: whole vs %s differ: errors %#x/%#x overflow %d/%d done %d/%d "
		"end %zu/%zu in_octets %llu/%llu out_len %zu/%zu\n",
		what, a->errors, b->errors, a->overflow, b->overflow, a->done, b->done, a->end,
		b->end, (unsigned long long)a->in_octets, (unsigned long long)b->in_octets,
		a->out.len, b->out.len);
	abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 3)
		return 0;
	struct params pm = {
		.mode = (data[0] & 1) != 0 ? SMTP_DATA_RAW : SMTP_DATA_DOT,
		.normalize = (data[0] & 2) != 0,
		.max_line = data[1],
		.out_max = (data[0] & 4) != 0 ? 32 : 1024 * 1024,
	};
	const char *in = (const char *)data + 3;
	size_t len = size - 3;
	size_t split = len * data[2] / 255;
	struct run whole, bytes, halves, at;

	run_chunks(&pm, in, len, NULL, 0, &whole);

	size_t *cuts = malloc((len > 0 ? len : 1) * sizeof(*cuts));
	FUZZ_CHECK(cuts != NULL);
	for (size_t i = 0; i < len; i++)
		cuts[i] = i;           /* cuts[0] = 0: also an empty first feed */
	run_chunks(&pm, in, len, cuts, len, &bytes);
	free(cuts);

	size_t half = len / 2;
	run_chunks(&pm, in, len, &half, 1, &halves);
	run_chunks(&pm, in, len, &split, 1, &at);

	check_output(&pm, &whole);
	compare("one byte at a time", &whole, &bytes);
	compare("two halves", &whole, &halves);
	compare("split", &whole, &at);

	buf_free(&whole.out);
	buf_free(&bytes.out);
	buf_free(&halves.out);
	buf_free(&at.out);
	return 0;
}
