/*
 * password.c — password hashing and verification with libsodium's
 * argon2id (crypto_pwhash_argon2id_*, INTERACTIVE limits: 2 passes, 64 MiB).
 *
 * Runs in the directory's password-check threads and in the CLI. CPU- and
 * memory-heavy by design: never call from an event loop.
 */
#include "lib-account/account.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "lib/limits.h"

/* The hash of a random password nobody knows, with the same parameters as
 * the hashes we make: verifying against it costs what a real check costs, so
 * a login for an unknown user cannot be told apart by its timing. */
static const char dummy_hash[crypto_pwhash_argon2id_STRBYTES] =
	"$argon2id$v=19$m=65536,t=2,p=1$s2LdY85Eo+B8wHshCc6HFw"
	"$H68iUIDTjTxXIfGH31YPGQkSfRJPY/wGdD00DZ+EYmc";

#define ARGON2ID_PREFIX "$argon2id$"

/* sodium_init() is idempotent and thread-safe; it returns 1 when already
 * done. */
static int password_init(void)
{
	return sodium_init() < 0 ? -1 : 0;
}

int password_hash(const char *password, char **hash_r)
{
	char out[crypto_pwhash_argon2id_STRBYTES];
	size_t len = strnlen(password, PASSWORD_MAX + 1);

	*hash_r = NULL;
	if (len > PASSWORD_MAX || password_init() < 0)
		return -1;
	if (crypto_pwhash_argon2id_str(out, password, len,
				       crypto_pwhash_argon2id_OPSLIMIT_INTERACTIVE,
				       crypto_pwhash_argon2id_MEMLIMIT_INTERACTIVE) != 0)
		return -1;      /* out of memory */
	*hash_r = strdup(out);
	return *hash_r != NULL ? 0 : -1;
}

int password_verify(const char *hash_or_null, const char *password)
{
	size_t len = strnlen(password, PASSWORD_MAX + 1);
	bool too_long = len > PASSWORD_MAX;
	bool parsable = hash_or_null != NULL &&
		strncmp(hash_or_null, ARGON2ID_PREFIX, strlen(ARGON2ID_PREFIX)) == 0;

	if (password_init() < 0)
		return -1;
	if (hash_or_null == NULL || too_long || !parsable) {
		/* Spend the time anyway; the answer is already known. */
		int ret = crypto_pwhash_argon2id_str_verify(dummy_hash, password,
							    too_long ? PASSWORD_MAX : len);
		(void)ret;
		return hash_or_null != NULL && !parsable ? -1 : 0;
	}
	if (crypto_pwhash_argon2id_str_verify(hash_or_null, password, len) == 0)
		return 1;
	/* A mismatch and a malformed hash look the same to str_verify;
	 * needs_rehash tells them apart (-1: not a valid argon2id string). */
	if (crypto_pwhash_argon2id_str_needs_rehash(hash_or_null,
						    crypto_pwhash_argon2id_OPSLIMIT_INTERACTIVE,
						    crypto_pwhash_argon2id_MEMLIMIT_INTERACTIVE) < 0)
		return -1;
	return 0;
}
