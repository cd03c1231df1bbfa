/*
 * smtp-data.c — the DATA / BDAT content filter: finds the end of DATA,
 * undoes dot-stuffing, turns CRLF into LF for Maildir, and flags bare CR,
 * bare LF, NUL and over-long lines. The rule for CR, LF and CRLF in message
 * content lives here and nowhere else. Pure state machine, no I/O: any
 * chunking of the input gives the same output and result.
 *
 * RFC 5321 4.1.1.4 (DATA), 4.5.2 (transparency), 2.3.8 (lines);
 * RFC 3030 (BDAT, CHUNKING). SMTP smuggling defence: only CRLF "." CRLF
 * ends DATA.
 */
#include "lib-smtp/smtp.h"

#include <string.h>

void smtp_data_init(struct smtp_data *d, enum smtp_data_mode mode, bool normalize_bare,
		    size_t max_line)
{
	memset(d, 0, sizeof(*d));
	d->mode = mode;
	d->normalize_bare = normalize_bare;
	d->max_line = max_line;
	d->state = SMTP_DATA_STATE_BOL;
}

static void data_out(struct smtp_data *d, struct buf *out, const char *p, size_t n)
{
	if (d->overflow || n == 0)
		return;
	if (buf_append(out, p, n) < 0)
		d->overflow = true;
}

/* Counts n octets towards the current line (saturating). */
static void line_add(struct smtp_data *d, size_t n)
{
	if (d->max_line == 0)
		return;
	if (n > d->max_line - d->line_len) {
		d->errors |= SMTP_DATA_LINE_TOO_LONG;
		d->line_len = d->max_line;
	} else {
		d->line_len += n;
	}
}

static void line_end(struct smtp_data *d, struct buf *out)
{
	data_out(d, out, "\n", 1);
	d->line_len = 0;
}

/* A CR or LF that is not part of CRLF. Leaves the state at TEXT: the next
 * line is not a line start for dot rules, so "\n.\n" and friends are content. */
static void bare(struct smtp_data *d, struct buf *out, char c)
{
	if (d->normalize_bare) {
		line_end(d, out);
	} else {
		d->errors |= c == '\n' ? SMTP_DATA_BARE_LF : SMTP_DATA_BARE_CR;
		data_out(d, out, &c, 1);
		line_add(d, 1);
	}
	d->state = SMTP_DATA_STATE_TEXT;
}

static bool is_special(char c)
{
	return c == '\r' || c == '\n' || c == '\0';
}

/* One octet (or, in TEXT state, a run of ordinary octets starting at in[i])
 * in a state other than DONE. Returns the number of octets consumed. */
static size_t data_step(struct smtp_data *d, const char *in, size_t len, size_t i,
			struct buf *out)
{
	char c = in[i];

	switch (d->state) {
	case SMTP_DATA_STATE_BOL:
		if (d->mode == SMTP_DATA_DOT && c == '.') {
			line_add(d, 1);
			d->state = SMTP_DATA_STATE_DOT;
			return 1;
		}
		d->state = SMTP_DATA_STATE_TEXT;
		return data_step(d, in, len, i, out);
	case SMTP_DATA_STATE_TEXT:
		if (c == '\r') {
			d->state = SMTP_DATA_STATE_CR;
			return 1;
		}
		if (c == '\n') {
			bare(d, out, '\n');
			return 1;
		}
		if (c == '\0') {
			/* Dropped: a NUL in a Maildir file breaks readers. */
			d->errors |= SMTP_DATA_NUL;
			line_add(d, 1);
			return 1;
		} else {
			size_t n = 1;
			while (i + n < len && !is_special(in[i + n]))
				n++;
			data_out(d, out, in + i, n);
			line_add(d, n);
			return n;
		}
	case SMTP_DATA_STATE_CR:
		if (c == '\n') {
			line_end(d, out);
			d->state = SMTP_DATA_STATE_BOL;
			return 1;
		}
		/* The CR was bare; the current octet starts afresh. */
		bare(d, out, '\r');
		return data_step(d, in, len, i, out);
	case SMTP_DATA_STATE_DOT:
		if (c == '\r') {
			d->state = SMTP_DATA_STATE_DOT_CR;
			return 1;
		}
		if (c == '\n') {
			/* ".\n" after CRLF: not an end; the dot stays as content. */
			data_out(d, out, ".", 1);
			bare(d, out, '\n');
			return 1;
		}
		/* RFC 5321 4.5.2: a leading dot with more on the line is removed. */
		d->state = SMTP_DATA_STATE_TEXT;
		return data_step(d, in, len, i, out);
	case SMTP_DATA_STATE_DOT_CR:
		if (c == '\n') {
			d->state = SMTP_DATA_STATE_DONE;
			return 1;
		}
		/* "\r\n.\r" + X: the dot is content, the CR bare. */
		data_out(d, out, ".", 1);
		bare(d, out, '\r');
		return data_step(d, in, len, i, out);
	case SMTP_DATA_STATE_DONE:
		break;
	}
	return 0;
}

int smtp_data_feed(struct smtp_data *d, const char *in, size_t len, size_t *consumed_r,
		   struct buf *out)
{
	size_t i = 0;

	while (i < len && d->state != SMTP_DATA_STATE_DONE)
		i += data_step(d, in, len, i, out);
	if (d->state == SMTP_DATA_STATE_DONE && d->mode == SMTP_DATA_DOT) {
		d->in_octets += i;
		if (consumed_r != NULL)
			*consumed_r = i;
		return 1;
	}
	/* RAW after smtp_data_finish(): input is consumed and ignored. */
	d->in_octets += len;
	if (consumed_r != NULL)
		*consumed_r = len;
	return 0;
}

void smtp_data_finish(struct smtp_data *d, struct buf *out)
{
	switch (d->state) {
	case SMTP_DATA_STATE_CR:
		bare(d, out, '\r');
		break;
	case SMTP_DATA_STATE_DOT:
		data_out(d, out, ".", 1);
		break;
	case SMTP_DATA_STATE_DOT_CR:
		data_out(d, out, ".", 1);
		bare(d, out, '\r');
		break;
	case SMTP_DATA_STATE_BOL:
	case SMTP_DATA_STATE_TEXT:
	case SMTP_DATA_STATE_DONE:
		break;
	}
	d->state = SMTP_DATA_STATE_DONE;
}
