/*
 * account-address.c — syntax and normal form of the addresses and domains
 * the account database stores (see account-private.h for the rules).
 *
 * Deliberately narrower than RFC 5321: no quoted local parts, no address
 * literals, because these are names an operator creates for mailboxes and
 * aliases, and every one of them must also be a safe Maildir path component
 * and a safe element of a comma-separated alias target list.
 * UTF-8 octets pass through (RFC 6531 addresses, IDNA U-labels).
 */
#include "lib-account/account-private.h"

#include <stdio.h>
#include <string.h>

#include "lib/util.h"

static bool is_ascii_alnum(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* RFC 5322 3.2.3 atext, plus UTF-8 octets (RFC 6531 3.3). */
static bool is_atext(unsigned char c)
{
	if (c >= 0x80 || is_ascii_alnum(c))
		return true;
	return c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL;
}

bool account_localpart_valid(const char *s, size_t len, const char **why_r)
{
	if (len == 0) {
		*why_r = "empty local part";
		return false;
	}
	if (len > SMTP_LOCALPART_MAX) {
		*why_r = "local part too long";
		return false;
	}
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '.') {
			if (i == 0 || i == len - 1 || s[i - 1] == '.') {
				*why_r = "misplaced '.' in local part";
				return false;
			}
		} else if (!is_atext(c)) {
			*why_r = "invalid character in local part";
			return false;
		}
	}
	return true;
}

bool account_domain_valid(const char *s, size_t len, const char **why_r)
{
	size_t label_start = 0;

	if (len == 0) {
		*why_r = "empty domain";
		return false;
	}
	if (len > SMTP_DOMAIN_MAX) {
		*why_r = "domain too long";
		return false;
	}
	for (size_t i = 0; i <= len; i++) {
		unsigned char c = i < len ? (unsigned char)s[i] : '.';
		if (c == '.') {
			size_t label_len = i - label_start;
			if (label_len == 0) {
				*why_r = "empty label in domain";
				return false;
			}
			if (label_len > 63) {
				*why_r = "domain label longer than 63 octets";
				return false;
			}
			if (s[label_start] == '-' || s[i - 1] == '-') {
				*why_r = "domain label starts or ends with '-'";
				return false;
			}
			label_start = i + 1;
		} else if (!(c >= 0x80 || is_ascii_alnum(c) || c == '-')) {
			*why_r = "invalid character in domain";
			return false;
		}
	}
	return true;
}

const char *account_printable(const char *in, char *out, size_t out_size)
{
	size_t i = 0;

	if (out_size == 0)
		return "";
	for (; in[i] != '\0' && i < 80 && i + 1 < out_size; i++) {
		unsigned char c = (unsigned char)in[i];
		out[i] = c < 0x20 || c == 0x7f ? '?' : (char)c;
	}
	out[i] = '\0';
	return out;
}

int account_domain_normalize(struct account_db *db, const char *in,
			     char out[SMTP_DOMAIN_MAX + 1], const char **error_r)
{
	const char *why;
	char shown[96];
	size_t len = strnlen(in, SMTP_DOMAIN_MAX + 1);

	if (!account_domain_valid(in, len, &why) || in[len] != '\0') {
		if (in[len] != '\0')
			why = "domain too long";
		*error_r = account_error(db, "invalid domain \"%s\": %s",
					 account_printable(in, shown, sizeof(shown)), why);
		return -1;
	}
	memcpy(out, in, len + 1);
	str_lcase(out);
	return 0;
}

int account_address_parse(const char *in, bool allow_catchall, bool lcase_local,
			  char out[SMTP_ADDRESS_MAX + 1], const char **why_r)
{
	size_t len = strnlen(in, SMTP_ADDRESS_MAX + 1);
	const char *at = memchr(in, '@', len);

	if (len > SMTP_ADDRESS_MAX) {
		*why_r = "address too long";
		return -1;
	}
	if (at == NULL) {
		*why_r = "missing '@'";
		return -1;
	}
	if (memchr(at + 1, '@', len - (size_t)(at + 1 - in)) != NULL) {
		*why_r = "more than one '@'";
		return -1;
	}
	size_t local_len = (size_t)(at - in);
	if (local_len == 0 && !allow_catchall) {
		*why_r = "missing local part";
		return -1;
	}
	if (local_len > 0 && !account_localpart_valid(in, local_len, why_r))
		return -1;
	if (!account_domain_valid(at + 1, len - local_len - 1, why_r))
		return -1;
	memcpy(out, in, len + 1);
	if (lcase_local)
		str_lcase(out);
	else
		str_lcase(out + local_len);
	return 0;
}

int account_address_normalize(struct account_db *db, const char *in, bool allow_catchall,
			      char out[SMTP_ADDRESS_MAX + 1], const char **error_r)
{
	const char *why;
	char shown[96];

	if (account_address_parse(in, allow_catchall, true, out, &why) < 0) {
		*error_r = account_error(db, "invalid address \"%s\": %s",
					 account_printable(in, shown, sizeof(shown)), why);
		return -1;
	}
	return 0;
}
