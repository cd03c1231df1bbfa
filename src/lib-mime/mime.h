/*
 * mime.h — what IMAP needs from a message, over GMime 3 (a real MIME
 * parser; nothing here parses MIME structure by hand): ENVELOPE,
 * BODYSTRUCTURE, body sections, BINARY, and the header/text matching that
 * SEARCH uses. RFC 9051 sections 6.4.5 and 7.5.2; RFC 3516 (BINARY).
 *
 * Messages in the Maildir have LF line endings (see docs/architecture.md);
 * IMAP counts and sends CRLF. Every size and every byte this module
 * returns is in CRLF form: a bare LF becomes CRLF, an existing CRLF stays.
 *
 * Malformed mail never fails: a broken MIME structure is described as
 * GMime parsed it (a part with an unknown type is text/plain, a multipart
 * without boundary is a single part), so BODYSTRUCTURE is always valid
 * IMAP syntax.
 *
 * Thread safety: call mime_init() once per process before threads start;
 * after that, different struct mime_message may be used on different
 * threads at the same time.
 */
#ifndef POSTERN_MIME_H
#define POSTERN_MIME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct buf;

void mime_init(void);
void mime_shutdown(void);

struct mime_message;

/* Parses a message from memory (data must stay valid until mime_free; the
 * caller usually mmap()s the Maildir file) or from a file descriptor (read
 * or mapped here; fd is not closed). NULL on out of memory only. */
struct mime_message *mime_parse(const char *data, size_t len);
struct mime_message *mime_parse_fd(int fd);
void mime_free(struct mime_message **m);

/* RFC822.SIZE: the whole message in CRLF form. Cheap (no MIME parse):
 * also available without a parse via mime_crlf_size(). */
uint64_t mime_size(const struct mime_message *m);
uint64_t mime_crlf_size(const char *data, size_t len);

/* Appends the parenthesised ENVELOPE (RFC 9051 7.5.2): date, subject
 * (raw header values as strings; 8-bit/UTF-8 passed through when utf8,
 * else as they are), from, sender, reply-to (defaulting to from), to, cc,
 * bcc (address lists with groups), in-reply-to, message-id.
 * 0, or -1 when out is full. */
int mime_envelope(struct mime_message *m, bool utf8, struct buf *out);
/* Appends BODYSTRUCTURE (extensible = true) or BODY (false). 0 or -1. */
int mime_bodystructure(struct mime_message *m, bool extensible, struct buf *out);

/*
 * A section of BODY[section] (RFC 9051 6.4.5), given as the text between
 * the brackets: "", "HEADER", "TEXT", "HEADER.FIELDS (From To)",
 * "HEADER.FIELDS.NOT (...)", "1", "1.2", "1.2.MIME", "2.HEADER",
 * "2.TEXT" (for a message/rfc822 part), ... Case-insensitive.
 * Appends the section's octets in CRLF form to out. A part number that
 * does not exist gives an empty section (RFC: "" / NIL is for the client
 * to cope with), not an error. Returns 0, -1 with *error_r for bad section
 * syntax (client-safe text for BAD), or -2 when out is full.
 */
int mime_section(struct mime_message *m, const char *section, struct buf *out,
		 const char **error_r);
/* Validates section syntax only (for the command's check step). */
bool mime_section_valid(const char *section);

/*
 * BINARY[part] (RFC 3516): the part's content with its
 * Content-Transfer-Encoding removed (base64, quoted-printable; 7bit, 8bit
 * and binary as they are). part "" or "1.2"; a message/rfc822 or multipart
 * part gives -1 with *error_r. Returns 0, -1 for an unknown transfer
 * encoding (*error_r = "UNKNOWN-CTE") or a bad part, -2 when out is full.
 */
int mime_binary(struct mime_message *m, const char *part, struct buf *out,
		const char **error_r);

/* SEARCH helpers: case-insensitive (Unicode simple case folding) substring
 * tests on decoded text (RFC 2047 encoded-words, transfer encodings and
 * charsets converted to UTF-8). An empty needle matches when the field
 * exists / always. */
bool mime_header_contains(struct mime_message *m, const char *field, const char *needle);
bool mime_text_contains(struct mime_message *m, const char *needle, bool with_headers);
/*
 * SEARCH data for an index (so FROM/TO/CC/BCC/SUBJECT need no file): the
 * values of those fields, exactly as mime_header_contains() matches them
 * (decoded and case-folded), appended to out as entries "<k><value>\0"
 * where k is the field's number (1 From, 2 To, 3 Cc, 4 Bcc, 5 Subject).
 * 0, or -1 when out is full (then do not cache it).
 */
int mime_search_fields(struct mime_message *m, struct buf *out);
/* The field number (1..5) of a field name that mime_search_fields keeps
 * (case-insensitive), or 0. */
unsigned mime_search_field_id(const char *field);
/* mime_header_contains() answered from mime_search_fields() data: does
 * field number id contain folded_needle (from mime_fold(); "" = the field
 * exists)? */
bool mime_search_fields_contain(const void *data, size_t len, unsigned id,
				const char *folded_needle);
/* Case-folded (Unicode simple folding, as SEARCH compares), valid UTF-8
 * copy of s; malloc'ed, NULL on out of memory. */
char *mime_fold(const char *s);

/* The Date: header in seconds since the epoch (the calendar day in the
 * header's own zone at 00:00 UTC when day_only), or -1. */
int64_t mime_sent_date(struct mime_message *m, bool day_only);

#endif
