/*
 * fuzz-ipc.c — libFuzzer entry point for the IPC payload reader
 * (ipc_get_u32/u64/str/bytes over a struct ipc_reader), the code every
 * process runs on frames from its peers.
 *
 * Input: byte 0 = number of reads k (mod 32), then k bytes naming the reads
 * (mod 5: u32, u64, str, bytes, or a list "u32 n, n * str" as in
 * IPC_DIR_RCPT replies and IPC_Q_BEGIN), then the payload, copied into an
 * exact-size buffer so any read past it is caught.
 *
 * Invariants (ipc.h): the cursor only moves forward inside the payload;
 * strings are NUL-terminated inside it with no other NUL; after an error
 * (sticky) every read returns 0/NULL and the cursor stays; and as long as
 * there was no error, writing the values read with ipc_put_*() gives back
 * exactly the bytes consumed (reader and writer agree on the encoding).
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "lib/ipc.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define LIST_MAX 1024

static void check_cursor(const struct ipc_reader *r, const unsigned char *payload,
			 size_t len)
{
	FUZZ_CHECK(r->p >= payload && r->p <= payload + len);
	FUZZ_CHECK(r->left == len - (size_t)(r->p - payload));
}

static void read_str(struct ipc_reader *r, struct ipc_writer *w, const unsigned char *payload,
		     size_t len)
{
	const char *s = ipc_get_str(r);
	if (s != NULL) {
		FUZZ_CHECK(!r->error);
		FUZZ_CHECK((const unsigned char *)s >= payload &&
			   (const unsigned char *)s < payload + len);
		size_t n = strlen(s);
		/* The NUL is inside the payload and right before the cursor. */
		FUZZ_CHECK((const unsigned char *)s + n + 1 == r->p);
	}
	if (!r->error)
		ipc_put_str(w, s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	size_t nops = data[0] % 32;
	if (size - 1 < nops)
		return 0;
	const uint8_t *ops = data + 1;
	size_t len = size - 1 - nops;
	unsigned char *payload = (unsigned char *)fuzz_copy(data + 1 + nops, len, 0);
	struct ipc_reader r = { .p = payload, .left = len, .error = false };
	struct ipc_writer w;

	ipc_writer_init(&w);
	for (size_t i = 0; i < nops; i++) {
		bool was_error = r.error;
		const unsigned char *before = r.p;

		switch (ops[i] % 5) {
		case 0: {
			uint32_t v = ipc_get_u32(&r);
			if (r.error)
				FUZZ_CHECK(v == 0);
			else
				ipc_put_u32(&w, v);
			break;
		}
		case 1: {
			uint64_t v = ipc_get_u64(&r);
			if (r.error)
				FUZZ_CHECK(v == 0);
			else
				ipc_put_u64(&w, v);
			break;
		}
		case 2:
			read_str(&r, &w, payload, len);
			break;
		case 3: {
			size_t n = 12345;
			const unsigned char *p = ipc_get_bytes(&r, &n);
			if (p == NULL) {
				FUZZ_CHECK(n == 0);
				if (!r.error)
					ipc_put_u32(&w, UINT32_MAX); /* absent */
			} else {
				FUZZ_CHECK(!r.error);
				FUZZ_CHECK(p >= payload && p + n == r.p);
				ipc_put_bytes(&w, p, n);
			}
			break;
		}
		case 4: {
			uint32_t n = ipc_get_u32(&r);
			if (!r.error)
				ipc_put_u32(&w, n);
			for (uint32_t k = 0; k < n && k < LIST_MAX && !r.error; k++)
				read_str(&r, &w, payload, len);
			break;
		}
		}
		check_cursor(&r, payload, len);
		FUZZ_CHECK(r.p >= before);
		if (was_error)
			FUZZ_CHECK(r.error && r.p == before);
	}
	if (!r.error) {
		size_t consumed = len - r.left;
		FUZZ_CHECK(w.b.max != 0 && w.b.len == consumed);
		FUZZ_CHECK(consumed == 0 || memcmp(w.b.data, payload, consumed) == 0);
	}
	ipc_writer_free(&w);
	free(payload);
	return 0;
}
