/*
 * mime-imap.c — ENVELOPE and BODY/BODYSTRUCTURE of a message parsed by
 * GMime (RFC 9051 7.5.2, RFC 3501 7.4.2), written as IMAP syntax.
 *
 * Runs in the imapd workers. ENVELOPE strings are the raw header values,
 * unfolded; addresses come from GMime's address parser (display names
 * re-encoded as RFC 2047 encoded-words unless UTF8=ACCEPT). Types,
 * subtypes, parameter names and disposition types are upper-cased; sizes
 * and line counts are of the CRLF form, as BODY[part] returns it.
 */
#include "lib-mime/mime.h"
#include "lib-mime/mime-private.h"

#include <stdio.h>
#include <string.h>

#include "lib/buf.h"

/* ---- strings --------------------------------------------------------- */

static bool is_wsp(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

int mime_imap_string(struct buf *out, const char *s, size_t len, bool utf8, bool trim)
{
	if (s == NULL)
		return buf_append(out, "NIL", 3);
	if (trim) {
		while (len > 0 && is_wsp(*s)) {
			s++;
			len--;
		}
		while (len > 0 && is_wsp(s[len - 1]))
			len--;
	}
	size_t n = 0;
	bool eight = false, ctl = false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '\r' || c == '\n' || c == '\0')
			continue;
		n++;
		if (c >= 0x80)
			eight = true;
		else if (c < 0x20 && c != '\t')
			ctl = true;
	}
	bool literal = ctl || (eight && !(utf8 && g_utf8_validate(s, (gssize)len, NULL)));
	if (literal) {
		if (buf_printf(out, "{%zu}\r\n", n) < 0)
			return -1;
	} else if (buf_append(out, "\"", 1) < 0) {
		return -1;
	}
	size_t run = 0;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];
		bool drop = c == '\r' || c == '\n' || c == '\0';
		bool esc = !literal && (c == '"' || c == '\\');
		if (!drop && !esc) {
			run++;
			continue;
		}
		if (buf_append(out, s + i - run, run) < 0)
			return -1;
		run = 0;
		if (esc && (buf_append(out, "\\", 1) < 0 || buf_append(out, &s[i], 1) < 0))
			return -1;
	}
	if (buf_append(out, s + len - run, run) < 0)
		return -1;
	return literal ? 0 : buf_append(out, "\"", 1);
}

static int imap_cstring(struct buf *out, const char *s, bool utf8)
{
	return mime_imap_string(out, s, s != NULL ? strlen(s) : 0, utf8, false);
}

/* Upper-cased quoted atom-like text (types, parameter names). */
static int imap_upper(struct buf *out, const char *s)
{
	if (s == NULL)
		return buf_append(out, "NIL", 3);
	char *up = g_ascii_strup(s, -1);
	int ret = imap_cstring(out, up, false);
	g_free(up);
	return ret;
}

static GMimeHeader *find_header(GMimeObject *o, const char *name)
{
	if (o == NULL)
		return NULL;
	return g_mime_header_list_get_header(g_mime_object_get_header_list(o), name);
}

/* The raw value of the first such header, unfolded and trimmed, or NIL. */
static int raw_header(struct buf *out, GMimeObject *o, const char *name, bool utf8)
{
	GMimeHeader *h = find_header(o, name);
	const char *v = h != NULL ? g_mime_header_get_raw_value(h) : NULL;

	return mime_imap_string(out, v, v != NULL ? strlen(v) : 0, utf8, true);
}

/* ---- ENVELOPE -------------------------------------------------------- */

/* A display or group name: as it is when ASCII (or UTF-8 allowed), else an
 * RFC 2047 encoded-word so that any client shows it. */
static int imap_name(struct buf *out, const char *name, bool utf8)
{
	if (name == NULL || *name == '\0')
		return buf_append(out, "NIL", 3);
	for (const char *p = name; *p != '\0'; p++) {
		if ((unsigned char)*p >= 0x80 && !utf8) {
			char *enc = g_mime_utils_header_encode_phrase(NULL, name, "utf-8");
			int ret = imap_cstring(out, enc, false);
			g_free(enc);
			return ret;
		}
	}
	return imap_cstring(out, name, utf8);
}

static int write_mailbox(struct buf *out, InternetAddressMailbox *mb, bool utf8)
{
	const char *addr = internet_address_mailbox_get_addr(mb);
	const char *at = addr != NULL ? strrchr(addr, '@') : NULL;

	if (buf_append(out, "(", 1) < 0 ||
	    imap_name(out, internet_address_get_name((InternetAddress *)mb), utf8) < 0 ||
	    buf_append(out, " NIL ", 5) < 0)
		return -1;
	if (addr == NULL)
		addr = "";
	if (mime_imap_string(out, addr, at != NULL ? (size_t)(at - addr) : strlen(addr), utf8,
			     false) < 0 ||
	    buf_append(out, " ", 1) < 0)
		return -1;
	/* a mailbox without domain still gets a host: NIL means a group */
	if (imap_cstring(out, at != NULL ? at + 1 : "", utf8) < 0)
		return -1;
	return buf_append(out, ")", 1);
}

static int write_addresses(struct buf *out, InternetAddressList *list, bool utf8,
			   unsigned int depth)
{
	int n = internet_address_list_length(list);

	for (int i = 0; i < n; i++) {
		InternetAddress *a = internet_address_list_get_address(list, i);
		if (INTERNET_ADDRESS_IS_MAILBOX(a)) {
			if (write_mailbox(out, (InternetAddressMailbox *)a, utf8) < 0)
				return -1;
		} else if (INTERNET_ADDRESS_IS_GROUP(a)) {
			InternetAddressList *members =
				internet_address_group_get_members((InternetAddressGroup *)a);
			/* RFC 9051 7.5.2: group start (NIL NIL name NIL), members,
			 * group end (NIL NIL NIL NIL); nested groups are flattened */
			if (depth == 0 &&
			    (buf_append(out, "(NIL NIL ", 9) < 0 ||
			     imap_name(out, internet_address_get_name(a), utf8) < 0 ||
			     buf_append(out, " NIL)", 5) < 0))
				return -1;
			if (members != NULL && depth < 8 &&
			    write_addresses(out, members, utf8, depth + 1) < 0)
				return -1;
			if (depth == 0 && buf_append(out, "(NIL NIL NIL NIL)", 17) < 0)
				return -1;
		}
	}
	return 0;
}

static InternetAddressList *parse_addresses(GMimeObject *o, const char *name)
{
	GMimeHeader *h = find_header(o, name);
	const char *v = h != NULL ? g_mime_header_get_raw_value(h) : NULL;

	if (v == NULL)
		return NULL;
	InternetAddressList *list = internet_address_list_parse(NULL, v);
	if (list != NULL && internet_address_list_length(list) == 0) {
		g_object_unref(list);
		list = NULL;
	}
	return list;
}

static int write_address_list(struct buf *out, InternetAddressList *list, bool utf8)
{
	if (list == NULL)
		return buf_append(out, "NIL", 3);
	if (buf_append(out, "(", 1) < 0 || write_addresses(out, list, utf8, 0) < 0)
		return -1;
	return buf_append(out, ")", 1);
}

static int write_envelope(struct buf *out, GMimeMessage *msg, bool utf8)
{
	GMimeObject *o = (GMimeObject *)msg;
	static const char *const lists[] = { "From", "Sender", "Reply-To", "To", "Cc", "Bcc" };
	InternetAddressList *from = NULL;
	int ret = -1;

	if (msg == NULL)
		return buf_append(out, "(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)", 41);
	if (buf_append(out, "(", 1) < 0 || raw_header(out, o, "Date", utf8) < 0 ||
	    buf_append(out, " ", 1) < 0 || raw_header(out, o, "Subject", utf8) < 0)
		return -1;
	from = parse_addresses(o, "From");
	for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++) {
		InternetAddressList *l = i == 0 ? from : parse_addresses(o, lists[i]);
		/* RFC 9051 7.5.2: Sender and Reply-To default to From */
		InternetAddressList *w = l == NULL && (i == 1 || i == 2) ? from : l;
		int r = buf_append(out, " ", 1) < 0 ? -1 : write_address_list(out, w, utf8);
		if (l != NULL && l != from)
			g_object_unref(l);
		if (r < 0)
			goto out;
	}
	if (buf_append(out, " ", 1) < 0 || raw_header(out, o, "In-Reply-To", utf8) < 0 ||
	    buf_append(out, " ", 1) < 0 || raw_header(out, o, "Message-ID", utf8) < 0 ||
	    buf_append(out, ")", 1) < 0)
		goto out;
	ret = 0;
out:
	if (from != NULL)
		g_object_unref(from);
	return ret;
}

int mime_envelope(struct mime_message *m, bool utf8, struct buf *out)
{
	mime_ensure_parsed(m);
	return write_envelope(out, m->msg, utf8);
}

/* ---- BODYSTRUCTURE --------------------------------------------------- */

#define EMPTY_BODY "(\"TEXT\" \"PLAIN\" (\"CHARSET\" \"us-ascii\") NIL NIL \"7BIT\" 0 0"

static bool is_ascii(const char *s)
{
	for (; *s != '\0'; s++) {
		if ((unsigned char)*s >= 0x80)
			return false;
	}
	return true;
}

/* One parameter: GMime decoded it to UTF-8; non-ASCII values go out the
 * way they came in, RFC 2231 (name*=utf-8''%XX) or RFC 2047. */
static int write_param(struct buf *out, GMimeParam *param)
{
	const char *name = g_mime_param_get_name(param), *value = g_mime_param_get_value(param);

	if (name == NULL)
		name = "";
	if (value == NULL)
		value = "";
	if (is_ascii(value))
		return imap_upper(out, name) < 0 || buf_append(out, " ", 1) < 0 ||
		       imap_cstring(out, value, false) < 0 ? -1 : 0;
	if (g_mime_param_get_encoding_method(param) == GMIME_PARAM_ENCODING_METHOD_RFC2231) {
		char *star = g_strconcat(name, "*", NULL);
		int ret = imap_upper(out, star);
		g_free(star);
		if (ret < 0 || buf_append(out, " \"utf-8''", 9) < 0)
			return -1;
		for (const unsigned char *p = (const unsigned char *)value; *p != '\0'; p++) {
			if (g_ascii_isalnum(*p) || strchr("!#$&+-.^_`|~", *p) != NULL)
				ret = buf_append(out, p, 1);
			else
				ret = buf_printf(out, "%%%02X", *p);
			if (ret < 0)
				return -1;
		}
		return buf_append(out, "\"", 1);
	}
	char *enc = g_mime_utils_header_encode_text(NULL, value, "utf-8");
	int ret = imap_upper(out, name) < 0 || buf_append(out, " ", 1) < 0 ||
			  imap_cstring(out, enc, false) < 0 ?
		  -1 : 0;
	g_free(enc);
	return ret;
}

static int write_params(struct buf *out, GMimeParamList *list, bool text)
{
	int n = list != NULL ? g_mime_param_list_length(list) : 0;

	if (n == 0) {
		/* RFC 2045 5.2: text without parameters is charset us-ascii */
		return buf_append_str(out, text ? "(\"CHARSET\" \"us-ascii\")" : "NIL");
	}
	if (buf_append(out, "(", 1) < 0)
		return -1;
	for (int i = 0; i < n; i++) {
		if ((i > 0 && buf_append(out, " ", 1) < 0) ||
		    write_param(out, g_mime_param_list_get_parameter_at(list, i)) < 0)
			return -1;
	}
	return buf_append(out, ")", 1);
}

static int write_disposition(struct buf *out, GMimeObject *o)
{
	GMimeContentDisposition *d = o != NULL ? g_mime_object_get_content_disposition(o) : NULL;

	if (d == NULL || g_mime_content_disposition_get_disposition(d) == NULL)
		return buf_append(out, "NIL", 3);
	if (buf_append(out, "(", 1) < 0 ||
	    imap_upper(out, g_mime_content_disposition_get_disposition(d)) < 0 ||
	    buf_append(out, " ", 1) < 0 ||
	    write_params(out, g_mime_content_disposition_get_parameters(d), false) < 0)
		return -1;
	return buf_append(out, ")", 1);
}

/* Content-Language (RFC 3282): NIL, one string or a list of strings. */
static int write_language(struct buf *out, GMimeObject *o)
{
	GMimeHeader *h = find_header(o, "Content-Language");
	const char *v = h != NULL ? g_mime_header_get_raw_value(h) : NULL;
	char **tags;
	int n = 0, ret = 0;

	if (v == NULL)
		return buf_append(out, "NIL", 3);
	tags = g_strsplit_set(v, ", \t\r\n", -1);
	for (char **t = tags; *t != NULL; t++)
		n += **t != '\0';
	if (n == 0)
		ret = buf_append(out, "NIL", 3);
	else if (n > 1)
		ret = buf_append(out, "(", 1);
	int i = 0;
	for (char **t = tags; *t != NULL && ret == 0 && n > 0; t++) {
		if (**t == '\0')
			continue;
		if (i++ > 0)
			ret = buf_append(out, " ", 1);
		if (ret == 0)
			ret = imap_cstring(out, *t, false);
	}
	if (ret == 0 && n > 1)
		ret = buf_append(out, ")", 1);
	g_strfreev(tags);
	return ret;
}

/* Extension data after the basic fields: disposition, language, location. */
static int write_dsp_lang_loc(struct buf *out, GMimeObject *o)
{
	if (buf_append(out, " ", 1) < 0 || write_disposition(out, o) < 0 ||
	    buf_append(out, " ", 1) < 0 || write_language(out, o) < 0 ||
	    buf_append(out, " ", 1) < 0 || raw_header(out, o, "Content-Location", false) < 0)
		return -1;
	return 0;
}

static int write_body(struct mime_message *m, int idx, bool ext, struct buf *out);

static int write_multipart(struct mime_message *m, int idx, bool ext, struct buf *out)
{
	const struct mime_node *n = &m->nodes[idx];
	GMimeContentType *ct = g_mime_object_get_content_type(n->obj);

	if (buf_append(out, "(", 1) < 0)
		return -1;
	if (n->first_child < 0) {
		/* no parts (no boundary, or none found): IMAP needs one */
		if (buf_append_str(out, EMPTY_BODY) < 0 ||
		    (ext && buf_append_str(out, " NIL NIL NIL NIL") < 0) ||
		    buf_append(out, ")", 1) < 0)
			return -1;
	}
	for (int c = n->first_child; c >= 0; c = m->nodes[c].next) {
		if (write_body(m, c, ext, out) < 0)
			return -1;
	}
	if (buf_append(out, " ", 1) < 0 ||
	    imap_upper(out, ct != NULL ? g_mime_content_type_get_media_subtype(ct) : "mixed") < 0)
		return -1;
	if (ext && (buf_append(out, " ", 1) < 0 ||
		    write_params(out, ct != NULL ? g_mime_content_type_get_parameters(ct) : NULL,
				 false) < 0 ||
		    write_dsp_lang_loc(out, n->obj) < 0))
		return -1;
	return buf_append(out, ")", 1);
}

static int write_leaf(struct mime_message *m, int idx, bool ext, struct buf *out)
{
	const struct mime_node *n = &m->nodes[idx];
	GMimeObject *o = n->obj;
	GMimeContentType *ct = o != NULL ? g_mime_object_get_content_type(o) : NULL;
	const char *type = ct != NULL ? g_mime_content_type_get_media_type(ct) : NULL;
	const char *subtype = ct != NULL ? g_mime_content_type_get_media_subtype(ct) : NULL;
	if (type == NULL || subtype == NULL || GMIME_IS_MULTIPART(o)) {
		/* a multipart without parts is described as plain text */
		type = "text";
		subtype = "plain";
		ct = NULL;
	}
	/* RFC 9051 body-type-msg: only MESSAGE/RFC822 and MESSAGE/GLOBAL */
	bool msg = g_ascii_strcasecmp(type, "message") == 0 &&
		   (g_ascii_strcasecmp(subtype, "rfc822") == 0 ||
		    g_ascii_strcasecmp(subtype, "global") == 0);
	bool text = g_ascii_strcasecmp(type, "text") == 0;
	if (buf_append(out, "(", 1) < 0 || imap_upper(out, type) < 0 ||
	    buf_append(out, " ", 1) < 0 || imap_upper(out, subtype) < 0 ||
	    buf_append(out, " ", 1) < 0 ||
	    write_params(out, ct != NULL ? g_mime_content_type_get_parameters(ct) : NULL, text) <
		    0 ||
	    buf_append(out, " ", 1) < 0 || raw_header(out, o, "Content-ID", false) < 0 ||
	    buf_append(out, " ", 1) < 0 || raw_header(out, o, "Content-Description", false) < 0 ||
	    buf_append(out, " ", 1) < 0)
		return -1;

	GMimeHeader *h = find_header(o, "Content-Transfer-Encoding");
	const char *cte = h != NULL ? g_mime_header_get_raw_value(h) : NULL;
	if (cte != NULL) {
		char *up = g_ascii_strup(cte, -1);
		int ret = mime_imap_string(out, up, strlen(up), false, true);
		g_free(up);
		if (ret < 0)
			return -1;
	} else if (buf_append(out, "\"7BIT\"", 6) < 0) {
		return -1;
	}
	if (buf_printf(out, " %llu",
		       (unsigned long long)mime_region_crlf_len(m->data, n->bs, n->be)) < 0)
		return -1;
	if (msg) {
		/* message/rfc822: envelope, body structure, lines of the
		 * encapsulated message */
		if (n->kind != MIME_NODE_MSG || n->first_child < 0) {
			/* GMime found no message in it: an empty one */
			if (buf_append(out, " ", 1) < 0 || write_envelope(out, NULL, false) < 0 ||
			    buf_append_str(out, " " EMPTY_BODY) < 0 ||
			    (ext && buf_append_str(out, " NIL NIL NIL NIL") < 0) ||
			    buf_append(out, ")", 1) < 0)
				return -1;
		} else {
			const struct mime_node *c = &m->nodes[n->first_child];
			if (buf_append(out, " ", 1) < 0 || write_envelope(out, c->msg, false) < 0 ||
			    buf_append(out, " ", 1) < 0 ||
			    write_body(m, n->first_child, ext, out) < 0)
				return -1;
		}
	}
	if ((msg || text) &&
	    buf_printf(out, " %llu",
		       (unsigned long long)mime_region_lines(m->data, n->bs, n->be)) < 0)
		return -1;
	if (ext && (buf_append(out, " ", 1) < 0 || raw_header(out, o, "Content-MD5", false) < 0 ||
		    write_dsp_lang_loc(out, o) < 0))
		return -1;
	return buf_append(out, ")", 1);
}

static int write_body(struct mime_message *m, int idx, bool ext, struct buf *out)
{
	if (m->nodes[idx].kind == MIME_NODE_MULTI)
		return write_multipart(m, idx, ext, out);
	return write_leaf(m, idx, ext, out);
}

int mime_bodystructure(struct mime_message *m, bool extensible, struct buf *out)
{
	mime_ensure_parsed(m);
	return write_body(m, 0, extensible, out);
}
