/*
 * account-policy.c — the password policy (account_password_check): a
 * minimum length in characters, no common password, no user name inside.
 *
 * Runs in the CLI (`postern user add|passwd`) and wherever a user chooses a
 * password later (the web interface). The library itself only refuses
 * empty passwords (account.c), so the operator can override the policy
 * for one user with --force.
 *
 * The common list is src/lib-account/common-passwords.txt, compiled into a
 * sorted array by gen-common-passwords.sh (bsearch). A candidate is looked
 * up as typed (lower-cased), with trailing and leading digits and symbols
 * stripped ("Password123!" -> "password"), and with simple leetspeak undone
 * ("P@ssw0rd2024!" -> "password"). Every copy of the password is wiped.
 */
#include "lib-account/account-security.h"
#include "lib-account/account-private.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/limits.h"

static int common_cmp(const void *key, const void *elem)
{
	return strcmp(key, *(const char *const *)elem);
}

/* Is the NUL-terminated s in the list? Entries shorter than 3 characters
 * are not looked up: stripping can leave a fragment ("a1!" -> "a"). */
static bool common_has(const char *s)
{
	if (strlen(s) < 3)
		return false;
	return bsearch(s, account_common_passwords, account_common_password_count,
		       sizeof(account_common_passwords[0]), common_cmp) != NULL;
}

/* Characters stripped from the ends: ASCII digits and symbols. */
static bool strippable(char c)
{
	unsigned char u = (unsigned char)c;
	return u < 0x80 && !(u >= 'a' && u <= 'z');
}

/* Undoes the usual substitutions in place; one_as is what '1' becomes. */
static void unleet(char *s, char one_as)
{
	for (; *s != '\0'; s++) {
		switch (*s) {
		case '0': *s = 'o'; break;
		case '1': *s = one_as; break;
		case '3': *s = 'e'; break;
		case '4': *s = 'a'; break;
		case '5': *s = 's'; break;
		case '7': *s = 't'; break;
		case '@': *s = 'a'; break;
		case '$': *s = 's'; break;
		case '!': *s = 'i'; break;
		default: break;
		}
	}
}

/* lower is the lower-cased password (len octets); work has len + 1. */
static bool is_common(const char *lower, size_t len, char *work)
{
	if (common_has(lower))
		return true;
	size_t start = 0, end = len;
	while (end > 0 && strippable(lower[end - 1]))
		end--;
	while (start < end && strippable(lower[start]))
		start++;
	/* Trailing only ("monkey2024"), then both ends ("2024monkey!"). */
	const size_t starts[2] = { 0, start };
	for (int i = 0; i < 2; i++) {
		size_t s = starts[i];
		if (end <= s)
			continue;
		memcpy(work, lower + s, end - s);
		work[end - s] = '\0';
		if (common_has(work))
			return true;
		unleet(work, 'i');
		if (common_has(work))
			return true;
		memcpy(work, lower + s, end - s);
		unleet(work, 'l');
		if (common_has(work))
			return true;
	}
	/* Leetspeak over the whole password, then strip ("p4ssw0rd!!"). */
	memcpy(work, lower, len + 1);
	unleet(work, 'i');
	end = len;
	while (end > 0 && strippable(work[end - 1]))
		end--;
	work[end] = '\0';
	return common_has(work);
}

int account_password_check(const char *address, const char *password,
			   const struct account_password_policy *policy, const char **reason_r)
{
	static _Thread_local char reason[128];
	char lower[PASSWORD_MAX + 1];
	char work[PASSWORD_MAX + 1];
	size_t len = strnlen(password, PASSWORD_MAX + 1);
	size_t chars = 0;
	bool same = true;
	int ret = -1;

	if (len > PASSWORD_MAX) {
		*reason_r = "password is too long";
		return -1;
	}
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)password[i];
		if ((c & 0xc0) != 0x80)
			chars++;
		lower[i] = c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : (char)c;
		if (lower[i] != lower[0])
			same = false;
	}
	lower[len] = '\0';
	unsigned min = policy != NULL && policy->min_length > 0 ? policy->min_length
								: ACCOUNT_POLICY_MIN_LENGTH;
	if (chars == 0) {
		*reason_r = "password is empty";
		goto out;
	}
	if (chars < min) {
		snprintf(reason, sizeof(reason), "password is too short (at least %u characters)",
			 min);
		*reason_r = reason;
		goto out;
	}
	if (same) {
		*reason_r = "password is one character repeated";
		goto out;
	}
	if (is_common(lower, len, work)) {
		*reason_r = "password is too common";
		goto out;
	}
	if (address != NULL) {
		const char *at = strrchr(address, '@');
		size_t llen = at != NULL ? (size_t)(at - address) : strlen(address);
		char name[SMTP_ADDRESS_MAX + 1];
		size_t alen = strnlen(address, SMTP_ADDRESS_MAX + 1);
		if (alen <= SMTP_ADDRESS_MAX) {
			for (size_t i = 0; i < alen; i++) {
				char c = address[i];
				name[i] = c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
			}
			name[alen] = '\0';
			/* The whole address always; the local part when it is
			 * long enough to mean something ("al" is in too many
			 * words). */
			bool found = alen > 0 && strstr(lower, name) != NULL;
			if (!found && llen >= 3) {
				name[llen] = '\0';
				found = strstr(lower, name) != NULL;
			}
			if (found) {
				*reason_r = "password contains the user name";
				goto out;
			}
		}
	}
	ret = 0;
out:
	sodium_memzero(lower, sizeof(lower));
	sodium_memzero(work, sizeof(work));
	return ret;
}
