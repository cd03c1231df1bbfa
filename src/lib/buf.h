/*
 * buf.h — growable byte buffers with a maximum set at creation.
 *
 * Appending past the maximum fails (returns -1) and leaves the buffer as it
 * was. The data is always NUL-terminated (not counted in len) so it can be
 * handed to string functions.
 */
#ifndef POSTERN_BUF_H
#define POSTERN_BUF_H

#include <stddef.h>

struct buf {
	char *data;
	size_t len;
	size_t cap;
	size_t max;
};

void buf_init(struct buf *b, size_t max);
int buf_append(struct buf *b, const void *data, size_t len);
int buf_append_str(struct buf *b, const char *s);
int buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void buf_reset(struct buf *b);
/* Frees the storage; the buffer can be used again after buf_init(). */
void buf_free(struct buf *b);

#endif
