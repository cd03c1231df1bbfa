/*
 * fuzz.h — small helpers shared by the libFuzzer entry points in tests/fuzz/.
 *
 * Header-only so that every fuzzer is one .c file: an exact-size heap copy
 * of the input (so ASan sees any read past the end, which a parser handed
 * libFuzzer's own buffer might get away with), a check macro that aborts
 * with a message (libFuzzer records the input as a crash), and a private
 * temporary directory for fuzzers that must go through files.
 */
#ifndef POSTERN_FUZZ_H
#define POSTERN_FUZZ_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* An invariant of the API under test: on failure, say which and abort(). */
#define FUZZ_CHECK(cond)                                                            \
	do {                                                                        \
		if (!(cond)) {                                                      \
			fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__,  \
				__LINE__, #cond);                                   \
			abort();                                                    \
		}                                                                   \
	} while (0)

/* A malloc'ed copy of data, exactly size bytes (size 0: a 1-byte block that
 * must not be read), NUL-terminated only when nul is true (then size + 1). */
static inline char *fuzz_copy(const uint8_t *data, size_t size, int nul)
{
	char *p = malloc(nul ? size + 1 : size > 0 ? size : 1);
	FUZZ_CHECK(p != NULL);
	if (size > 0)
		memcpy(p, data, size);
	if (nul)
		p[size] = '\0';
	return p;
}

/* Creates "$TMPDIR/postern-fuzz.XXXXXX" (TMPDIR defaults to /tmp; scripts/fuzz.sh
 * points it at tmpfs) and returns its malloc'ed path. Exits on failure: the
 * environment, not the code under test, is broken. */
static inline char *fuzz_tmpdir(void)
{
	const char *base = getenv("TMPDIR");
	char path[4096];

	if (base == NULL || *base == '\0')
		base = "/tmp";
	snprintf(path, sizeof(path), "%s/postern-fuzz.XXXXXX", base);
	if (mkdtemp(path) == NULL) {
		perror("fuzz: mkdtemp");
		exit(1);
	}
	char *dup = strdup(path);
	FUZZ_CHECK(dup != NULL);
	return dup;
}

#endif
