/*
 * smtp-address.c — SMTP paths and ESMTP parameters: parses the arguments of
 * MAIL FROM / RCPT TO into an address and keyword=value parameters, checks
 * domain names and address literals, formats addresses back, decodes xtext.
 * Pure syntax, no I/O; used by smtpd and deliver.
 *
 * RFC 5321 4.1.2 (Path, Mailbox, Domain, address literals), 4.1.3,
 * 4.5.1 (Postmaster), 4.5.3.1 (size limits); RFC 6531 3.3 (UTF-8 in
 * local parts and domains); RFC 3461 4 (xtext).
 */
#include "lib-smtp/smtp.h"

#include <arpa/inet.h>
#include <string.h>
#include <strings.h>

#define ERR_SENDER  "501 5.1.7 Bad sender address syntax"
#define ERR_RCPT    "501 5.1.3 Bad recipient address syntax"
#define ERR_PARAMS  "501 5.5.4 Syntax error in parameters"
#define ERR_TOO_MANY "501 5.5.4 Too many parameters"
#define ERR_DUP     "501 5.5.4 Duplicate parameter"

#define LABEL_MAX 63
#define LOCALPART_BUF_MAX (SMTP_LOCALPART_MAX * 4)

static bool is_wsp(unsigned char c)
{
	return c == ' ' || c == '\t';
}

static bool is_alpha(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

/* RFC 5322 3.2.3 atext (ASCII part). */
static bool is_atext(unsigned char c)
{
	return is_alpha(c) || is_digit(c) || (c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

/*
 * Length (2-4) of the valid UTF-8 sequence at p, or 0. Rejects overlong
 * forms, surrogates, code points above U+10FFFF and the C1 controls
 * U+0080..U+009F (control characters have no place in an address).
 */
static size_t utf8_seq(const unsigned char *p, size_t avail)
{
	size_t n;
	unsigned long cp;

	if (p[0] >= 0xc2 && p[0] <= 0xdf) {
		n = 2;
		cp = p[0] & 0x1f;
	} else if (p[0] >= 0xe0 && p[0] <= 0xef) {
		n = 3;
		cp = p[0] & 0x0f;
	} else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
		n = 4;
		cp = p[0] & 0x07;
	} else {
		return 0;
	}
	if (avail < n)
		return 0;
	for (size_t i = 1; i < n; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (p[i] & 0x3f);
	}
	if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)))
		return 0;
	if ((cp >= 0xd800 && cp <= 0xdfff) || cp <= 0x9f)
		return 0;
	return n;
}

/* RFC 5321 4.1.2 Domain, plus U-labels (RFC 6531): labels of letters,
 * digits, hyphens (not first or last) or UTF-8; 1-63 octets each; 255 total. */
static bool domain_name_valid(const unsigned char *s, size_t len, bool *utf8_r)
{
	size_t label_start = 0, i = 0;
	bool utf8 = false;

	if (len == 0 || len > SMTP_DOMAIN_MAX)
		return false;
	for (;;) {
		if (i == len || s[i] == '.') {
			size_t label_len = i - label_start;
			if (label_len == 0 || label_len > LABEL_MAX)
				return false;
			if (s[label_start] == '-' || s[i - 1] == '-')
				return false;
			if (i == len)
				break;
			label_start = ++i;
			continue;
		}
		if (is_alpha(s[i]) || is_digit(s[i]) || s[i] == '-') {
			i++;
		} else if (s[i] >= 0x80) {
			size_t n = utf8_seq(s + i, len - i);
			if (n == 0)
				return false;
			utf8 = true;
			i += n;
		} else {
			return false;
		}
	}
	*utf8_r = utf8;
	return true;
}

/* Dotted quad, each part 0-255 without leading zeros (which some resolvers
 * read as octal: "010" must not quietly mean 8 or 10). */
static bool ipv4_valid(const unsigned char *s, size_t len)
{
	size_t i = 0;

	for (int part = 0; part < 4; part++) {
		size_t start = i;
		unsigned value = 0;
		while (i < len && is_digit(s[i]) && i - start < 3)
			value = value * 10 + (unsigned)(s[i++] - '0');
		size_t n = i - start;
		if (n == 0 || value > 255 || (n > 1 && s[start] == '0'))
			return false;
		if (part < 3) {
			if (i >= len || s[i] != '.')
				return false;
			i++;
		}
	}
	return i == len;
}

/* RFC 5321 4.1.3 address literal, brackets included. General (tagged)
 * literals other than IPv6 are not accepted. */
static bool address_literal_valid(const unsigned char *s, size_t len)
{
	char tmp[64];

	if (len < 3 || len > SMTP_DOMAIN_MAX || s[0] != '[' || s[len - 1] != ']')
		return false;
	s++;
	len -= 2;
	if (len > 5 && strncasecmp((const char *)s, "IPv6:", 5) == 0) {
		s += 5;
		len -= 5;
		if (len >= sizeof(tmp))
			return false;
		for (size_t i = 0; i < len; i++) {
			if (!(is_digit(s[i]) || (s[i] >= 'a' && s[i] <= 'f') ||
			      (s[i] >= 'A' && s[i] <= 'F') || s[i] == ':' || s[i] == '.'))
				return false;
		}
		memcpy(tmp, s, len);
		tmp[len] = '\0';
		struct in6_addr a6;
		return inet_pton(AF_INET6, tmp, &a6) == 1;
	}
	return ipv4_valid(s, len);
}

bool smtp_domain_valid(const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *)s;
	bool utf8;

	if (len > 0 && p[0] == '[')
		return address_literal_valid(p, len);
	return domain_name_valid(p, len, &utf8);
}

/* A-d-l ":" (RFC 5321 4.1.2): "@a,@b:" — validated, then ignored as
 * 4.1.1.3 and appendix C tell us to. */
static int parse_source_route(const unsigned char *p, size_t len, size_t *pos)
{
	size_t i = *pos;
	bool utf8;

	for (;;) {
		if (i >= len || p[i] != '@')
			return -1;
		size_t start = ++i;
		while (i < len && p[i] != ',' && p[i] != ':' && p[i] != '>')
			i++;
		if (!domain_name_valid(p + start, i - start, &utf8) || i >= len)
			return -1;
		if (p[i] == ':')
			break;
		if (p[i] != ',')
			return -1;
		i++;
	}
	*pos = i + 1;
	return 0;
}

struct localpart_out {
	char *buf;
	size_t len;
	bool overflow;
};

static void lp_append(struct localpart_out *o, const unsigned char *p, size_t n)
{
	if (o->len + n > LOCALPART_BUF_MAX) {
		o->overflow = true;
		return;
	}
	memcpy(o->buf + o->len, p, n);
	o->len += n;
}

/* Mailbox = Local-part "@" ( Domain / address-literal ), or the bare
 * "Postmaster" for RCPT. Leaves *pos at the octet after the mailbox. */
static int parse_mailbox(const unsigned char *p, size_t len, size_t *pos, bool allow_null,
			 struct smtp_address *a)
{
	struct localpart_out o = { a->localpart, 0, false };
	size_t i = *pos, start = *pos, chars = 0;
	bool non_ascii = false;

	if (i < len && p[i] == '"') {
		/* Quoted-string with qtextSMTP / quoted-pairSMTP (+ UTF-8). */
		a->quoted_localpart = true;
		i++;
		chars++;
		for (;;) {
			if (i >= len)
				return -1;
			if (p[i] == '"') {
				i++;
				chars++;
				break;
			}
			if (p[i] == '\\') {
				if (i + 1 >= len || p[i + 1] < 0x20 || p[i + 1] > 0x7e)
					return -1;
				lp_append(&o, p + i + 1, 1);
				i += 2;
				chars += 2;
			} else if (p[i] >= 0x20 && p[i] <= 0x7e) {
				lp_append(&o, p + i, 1);
				i++;
				chars++;
			} else if (p[i] >= 0x80) {
				size_t n = utf8_seq(p + i, len - i);
				if (n == 0)
					return -1;
				lp_append(&o, p + i, n);
				i += n;
				chars++;
				non_ascii = true;
			} else {
				return -1;
			}
		}
		/* "" is grammatical but names nobody; refuse it. */
		if (o.len == 0)
			return -1;
	} else {
		/* Dot-string: atoms of atext (+ UTF-8) separated by single dots. */
		bool need_atom = true;
		while (i < len) {
			if (p[i] == '.') {
				if (need_atom)
					return -1;
				need_atom = true;
				lp_append(&o, p + i, 1);
				i++;
				chars++;
			} else if (is_atext(p[i])) {
				need_atom = false;
				lp_append(&o, p + i, 1);
				i++;
				chars++;
			} else if (p[i] >= 0x80) {
				size_t n = utf8_seq(p + i, len - i);
				if (n == 0)
					return -1;
				need_atom = false;
				lp_append(&o, p + i, n);
				i += n;
				chars++;
				non_ascii = true;
			} else {
				break;
			}
		}
		if (need_atom)
			return -1;
	}
	/* RFC 5321 4.5.3.1.1: 64 octets as sent; for UTF-8 local parts we
	 * count characters (RFC 6531 does not say; storage allows 4 octets each). */
	if (o.overflow || (non_ascii ? chars : i - start) > SMTP_LOCALPART_MAX)
		return -1;
	a->localpart[o.len] = '\0';

	if (i < len && p[i] == '>') {
		if (allow_null || a->quoted_localpart || a->had_source_route ||
		    strcasecmp(a->localpart, "postmaster") != 0)
			return -1;
		memcpy(a->localpart, "postmaster", sizeof("postmaster"));
		a->domain[0] = '\0';
		*pos = i;
		return 0;
	}
	if (i >= len || p[i] != '@')
		return -1;
	start = ++i;
	if (i < len && p[i] == '[') {
		while (i < len && p[i] != ']')
			i++;
		if (i >= len)
			return -1;
		i++;
		if (!address_literal_valid(p + start, i - start))
			return -1;
		a->domain_literal = true;
	} else {
		bool utf8;
		while (i < len && p[i] != '>')
			i++;
		if (!domain_name_valid(p + start, i - start, &utf8))
			return -1;
		if (utf8)
			non_ascii = true;
	}
	memcpy(a->domain, p + start, i - start);
	a->domain[i - start] = '\0';
	a->utf8 = non_ascii;
	*pos = i;
	return 0;
}

static int parse_params(const unsigned char *p, size_t len, struct smtp_path_args *r,
			const char **error_r)
{
	size_t i = 0;

	for (;;) {
		while (i < len && is_wsp(p[i]))
			i++;
		if (i == len)
			return 0;
		if (r->nparams == SMTP_PARAMS_MAX) {
			*error_r = ERR_TOO_MANY;
			return -1;
		}
		struct smtp_param *prm = &r->params[r->nparams];
		size_t k = 0, v = 0;

		/* esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-") */
		if (!is_alpha(p[i]) && !is_digit(p[i]))
			goto fail;
		while (i < len && (is_alpha(p[i]) || is_digit(p[i]) || p[i] == '-')) {
			if (k == sizeof(prm->keyword) - 1)
				goto fail;
			char c = (char)p[i++];
			prm->keyword[k++] = c >= 'a' && c <= 'z' ? (char)(c - 'a' + 'A') : c;
		}
		prm->keyword[k] = '\0';
		if (i < len && p[i] == '=') {
			/* esmtp-value = 1*(%d33-60 / %d62-126) (+ UTF-8, RFC 6531);
			 * '=' accepted leniently: the value is opaque here. */
			i++;
			while (i < len && !is_wsp(p[i])) {
				size_t n = 1;
				if (p[i] >= 0x80) {
					n = utf8_seq(p + i, len - i);
					if (n == 0)
						goto fail;
				} else if (p[i] < 33 || p[i] > 126) {
					goto fail;
				}
				if (v + n > sizeof(prm->value) - 1)
					goto fail;
				memcpy(prm->value + v, p + i, n);
				v += n;
				i += n;
			}
			if (v == 0)
				goto fail;
			prm->value[v] = '\0';
			prm->has_value = true;
		} else if (i < len && !is_wsp(p[i])) {
			goto fail;
		}
		for (unsigned j = 0; j < r->nparams; j++) {
			if (strcmp(r->params[j].keyword, prm->keyword) == 0) {
				*error_r = ERR_DUP;
				return -1;
			}
		}
		r->nparams++;
	}
fail:
	*error_r = ERR_PARAMS;
	return -1;
}

int smtp_path_parse(const char *args, size_t len, bool allow_null,
		    struct smtp_path_args *r, const char **error_r)
{
	const unsigned char *p = (const unsigned char *)args;
	size_t i = 0;

	memset(r, 0, sizeof(*r));
	while (i < len && is_wsp(p[i]))
		i++;
	if (i >= len || p[i] != '<')
		goto addr_fail;
	i++;
	if (i < len && p[i] == '>') {
		if (!allow_null)
			goto addr_fail;
		r->addr.null_path = true;
	} else {
		if (i < len && p[i] == '@') {
			if (parse_source_route(p, len, &i) < 0)
				goto addr_fail;
			r->addr.had_source_route = true;
		}
		if (parse_mailbox(p, len, &i, allow_null, &r->addr) < 0)
			goto addr_fail;
		if (i >= len || p[i] != '>')
			goto addr_fail;
	}
	i++;
	/* "<a@b>x": the path token did not end at '>'. */
	if (i < len && !is_wsp(p[i]))
		goto addr_fail;
	if (parse_params(p + i, len - i, r, error_r) < 0) {
		memset(r, 0, sizeof(*r));
		return -1;
	}
	return 0;

addr_fail:
	memset(r, 0, sizeof(*r));
	*error_r = allow_null ? ERR_SENDER : ERR_RCPT;
	return -1;
}

const struct smtp_param *smtp_param_find(const struct smtp_path_args *r, const char *keyword)
{
	for (unsigned i = 0; i < r->nparams; i++) {
		if (strcasecmp(r->params[i].keyword, keyword) == 0)
			return &r->params[i];
	}
	return NULL;
}

/* Whether the (unquoted) local part can be written as a dot-string. */
static bool localpart_is_dot_string(const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	bool need_atom = true;

	for (; *p != '\0'; p++) {
		if (*p == '.') {
			if (need_atom)
				return false;
			need_atom = true;
		} else if (is_atext(*p) || *p >= 0x80) {
			/* 8-bit octets were validated as UTF-8 by the parser */
			need_atom = false;
		} else {
			return false;
		}
	}
	return !need_atom;
}

struct fmt_out {
	char *out;
	size_t size;
	size_t len;
	bool overflow;
};

static void fmt_put(struct fmt_out *f, const char *s, size_t n)
{
	if (f->overflow || f->size - f->len <= n) {
		f->overflow = true;
		return;
	}
	memcpy(f->out + f->len, s, n);
	f->len += n;
}

int smtp_address_format(const struct smtp_address *a, char *out, size_t size)
{
	struct fmt_out f = { out, size, 0, size == 0 };

	if (!a->null_path) {
		if (localpart_is_dot_string(a->localpart)) {
			fmt_put(&f, a->localpart, strlen(a->localpart));
		} else {
			fmt_put(&f, "\"", 1);
			for (const char *s = a->localpart; *s != '\0'; s++) {
				if (*s == '"' || *s == '\\')
					fmt_put(&f, "\\", 1);
				fmt_put(&f, s, 1);
			}
			fmt_put(&f, "\"", 1);
		}
		if (a->domain[0] != '\0') {
			fmt_put(&f, "@", 1);
			fmt_put(&f, a->domain, strlen(a->domain));
		}
	}
	if (f.overflow) {
		if (size > 0)
			out[0] = '\0';
		return -1;
	}
	out[f.len] = '\0';
	return 0;
}

bool smtp_address_has_relay_chars(const struct smtp_address *a)
{
	return strpbrk(a->localpart, "%!@") != NULL;
}

static int hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

int smtp_xtext_decode(const char *in, char *out, size_t size)
{
	size_t o = 0;

	for (size_t i = 0; in[i] != '\0';) {
		unsigned char c = (unsigned char)in[i];
		if (c == '+') {
			int h1 = hex_value(in[i + 1]);
			int h2 = h1 < 0 ? -1 : hex_value(in[i + 2]);
			if (h2 < 0)
				goto fail;
			c = (unsigned char)(h1 * 16 + h2);
			if (c < 0x20 || c > 0x7e)
				goto fail;
			i += 3;
		} else if (c >= '!' && c <= '~' && c != '=') {
			i++;
		} else {
			goto fail;
		}
		if (o + 1 >= size)
			goto fail;
		out[o++] = (char)c;
	}
	if (size == 0)
		return -1;
	out[o] = '\0';
	return 0;
fail:
	if (size > 0)
		out[0] = '\0';
	return -1;
}
