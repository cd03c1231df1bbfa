/*
 * account-security.c — the per-account login security data of postern.db:
 * app passwords, TOTP two-factor authentication (RFC 6238 via liboath) with
 * recovery codes, per-account login allowlists and password expiry.
 *
 * Runs in the directory process (login decisions: account_app_password_match,
 * account_2fa_state, account_allow_from_get, account_password_expired) and
 * in the CLI (`postern user app-password|2fa|allow-from`). Owns the rows of
 * app_passwords, totp, recovery_codes and user_allow, and the lazily
 * prepared statements of the security tables (account_sec_stmt).
 *
 * Secrets: new app passwords, TOTP secrets and recovery codes come from
 * libsodium's randombytes; every local copy is wiped with sodium_memzero
 * before it goes out of scope. Only BLAKE2b-256 hashes of app passwords and
 * recovery codes are stored (see account-security.h for why not argon2id).
 */
#include "lib-account/account-security.h"
#include "lib-account/account-private.h"

#include <liboath/oath.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "lib/limits.h"
#include "lib/log.h"

/* Unambiguous: no l, o, 0, 1 (32 letters: 5 bits per character). */
static const char app_alphabet[] = "abcdefghijkmnpqrstuvwxyz23456789";
/* RFC 4648 base32, lower case, for recovery codes. */
static const char code_alphabet[] = "abcdefghijklmnopqrstuvwxyz234567";
#define RECOVERY_CODE_CHARS 12
#define HASH_BYTES crypto_generichash_BYTES     /* 32: BLAKE2b-256 */
#define APP_NAME_MAX 64
#define TOTP_STEP 30
#define TOTP_DIGITS 6

enum { TOTP_STATE_PENDING = 1, TOTP_STATE_ON = 2 };

/* ---- shared helpers ----------------------------------------------------- */

sqlite3_stmt *account_sec_stmt(struct account_db *db, enum account_sec_stmt id,
			       const char *sql)
{
	if (db->sec_stmt[id] == NULL &&
	    sqlite3_prepare_v3(db->sql, sql, -1, SQLITE_PREPARE_PERSISTENT, &db->sec_stmt[id],
			       NULL) != SQLITE_OK) {
		account_sql_error(db, "preparing a statement");
		db->sec_stmt[id] = NULL;
		return NULL;
	}
	return db->sec_stmt[id];
}

int account_sec_write(struct account_db *db, sqlite3_stmt *st, const char *what)
{
	int rc = sqlite3_step(st);
	int ret = 0;

	if (rc == SQLITE_CONSTRAINT)
		ret = 1;
	else if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
		account_sql_error(db, what);
		ret = -1;
	}
	account_stmt_done(st);
	return ret;
}

void account_security_free(struct account_db *db)
{
	for (int i = 0; i < ACCOUNT_SEC_STMT_MAX; i++) {
		sqlite3_finalize(db->sec_stmt[i]);
		db->sec_stmt[i] = NULL;
	}
	account_access_cache_free(db);
}

/* Does the user (canonical address) exist? 0, or -1 with *error_r ("no
 * such user ..." or a database error). */
static int user_check(struct account_db *db, const char *addr, const char **error_r)
{
	int found = account_user_lookup(db, addr);
	if (found == 1)
		return 0;
	if (found == 0)
		account_error(db, "no such user %s", addr);
	*error_r = db->error;
	return -1;
}

/* Normalises address into out and checks that the user exists. */
static int user_addr(struct account_db *db, const char *address,
		     char out[SMTP_ADDRESS_MAX + 1], const char **error_r)
{
	if (account_address_normalize(db, address, false, out, error_r) < 0)
		return -1;
	return user_check(db, out, error_r);
}

/* For lookups on the login path: the canonical form, or -1 (no error text;
 * an invalid address simply has nothing). */
static int quiet_addr(const char *address, char out[SMTP_ADDRESS_MAX + 1])
{
	const char *why;
	return address != NULL ? account_address_parse(address, false, true, out, &why) : -1;
}

static int64_t now_unix(void)
{
	return (int64_t)time(NULL);
}

/* Copies column i (text) as a malloc'ed string, or NULL when it is NULL.
 * -1 when out of memory. */
static int column_dup(sqlite3_stmt *st, int i, char **out_r)
{
	const unsigned char *t = sqlite3_column_text(st, i);
	*out_r = NULL;
	if (t == NULL)
		return 0;
	*out_r = strdup((const char *)t);
	return *out_r != NULL ? 0 : -1;
}

/* Keeps from s the characters that are not '-' or blanks, lower-cased,
 * into out (exactly want characters, all from alphabet). 1 when s has that
 * shape, 0 when not. */
static int secret_normalize(const char *s, const char *alphabet, size_t want, char *out)
{
	size_t n = 0;

	for (const char *p = s; *p != '\0'; p++) {
		char c = *p;
		if (c == '-' || c == ' ' || c == '\t')
			continue;
		if (c >= 'A' && c <= 'Z')
			c = (char)(c - 'A' + 'a');
		if (n >= want || strchr(alphabet, c) == NULL) {
			sodium_memzero(out, want);
			return 0;
		}
		out[n++] = c;
	}
	out[n] = '\0';
	if (n != want) {
		sodium_memzero(out, want);
		return 0;
	}
	return 1;
}

static void secret_hash(const char *norm, size_t len, unsigned char out[HASH_BYTES])
{
	crypto_generichash(out, HASH_BYTES, (const unsigned char *)norm, len, NULL, 0);
}

/* count characters drawn uniformly from a 32-letter alphabet into out,
 * a dash after every 4 except the last; out has count + count/4 bytes. */
static void random_grouped(const char *alphabet, size_t count, char *plain, char *shown)
{
	size_t j = 0;
	for (size_t i = 0; i < count; i++) {
		char c = alphabet[randombytes_uniform(32)];
		plain[i] = c;
		if (i > 0 && i % 4 == 0)
			shown[j++] = '-';
		shown[j++] = c;
	}
	plain[count] = '\0';
	shown[j] = '\0';
}

/* ---- password expiry ---------------------------------------------------- */

int account_password_expired_after(struct account_db *db, const char *address,
				   uint64_t max_age, time_t now)
{
	char addr[SMTP_ADDRESS_MAX + 1];

	if (max_age == 0 || quiet_addr(address, addr) < 0)
		return 0;
	sqlite3_stmt *st = account_sec_stmt(db, SEC_USER_CHANGED,
		"SELECT COALESCE(password_changed, created) FROM users WHERE address = ?1");
	if (st == NULL)
		return -1;
	sqlite3_bind_text(st, 1, addr, -1, SQLITE_STATIC);
	int ret = 0;
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		int64_t changed = sqlite3_column_int64(st, 0);
		ret = (int64_t)now - changed > (int64_t)max_age ? 1 : 0;
	} else if (rc != SQLITE_DONE) {
		account_sql_error(db, "reading a password's age");
		ret = -1;
	}
	account_stmt_done(st);
	return ret;
}

int account_password_expired(struct account_db *db, const char *address,
			     unsigned max_age_days)
{
	return account_password_expired_after(db, address, (uint64_t)max_age_days * 86400u,
					      time(NULL));
}

/* ---- scopes -------------------------------------------------------------- */

static const struct {
	const char *name;
	unsigned bit;
} scope_names[] = {
	{ "smtp", ACCOUNT_SCOPE_SMTP },
	{ "imap", ACCOUNT_SCOPE_IMAP },
	{ "pop3", ACCOUNT_SCOPE_POP3 },
};
#define SCOPE_NAME_COUNT (sizeof(scope_names) / sizeof(scope_names[0]))

int account_scope_parse(const char *s, unsigned *scope_r)
{
	unsigned scope = 0;

	*scope_r = 0;
	if (s == NULL || *s == '\0') {
		*scope_r = ACCOUNT_SCOPE_ALL;
		return 0;
	}
	const char *p = s;
	for (;;) {
		while (*p == ' ' || *p == '\t')
			p++;
		const char *end = strchr(p, ',');
		size_t len = end != NULL ? (size_t)(end - p) : strlen(p);
		while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t'))
			len--;
		bool known = false;
		for (size_t i = 0; i < SCOPE_NAME_COUNT; i++) {
			if (strlen(scope_names[i].name) == len &&
			    strncasecmp(scope_names[i].name, p, len) == 0) {
				scope |= scope_names[i].bit;
				known = true;
			}
		}
		if (!known && len == 3 && strncasecmp(p, "all", 3) == 0) {
			scope |= ACCOUNT_SCOPE_ALL;
			known = true;
		}
		if (!known)
			return -1;
		if (end == NULL)
			break;
		p = end + 1;
	}
	*scope_r = scope;
	return 0;
}

void account_scope_format(unsigned scope, char *out, size_t size)
{
	size_t len = 0;

	if (size == 0)
		return;
	out[0] = '\0';
	for (size_t i = 0; i < SCOPE_NAME_COUNT; i++) {
		if ((scope & scope_names[i].bit) == 0)
			continue;
		int n = snprintf(out + len, size - len, "%s%s", len > 0 ? "," : "",
				 scope_names[i].name);
		if (n < 0 || (size_t)n >= size - len)
			return;
		len += (size_t)n;
	}
}

/* ---- app passwords -------------------------------------------------------- */

static int app_name_valid(struct account_db *db, const char *name, const char **error_r)
{
	size_t len = strnlen(name, APP_NAME_MAX + 1);

	if (len == 0 || len > APP_NAME_MAX) {
		*error_r = account_error(db, "an app password name has 1 to %d characters",
					 APP_NAME_MAX);
		return -1;
	}
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)name[i];
		if (c < 0x20 || c == 0x7f) {
			*error_r = account_error(db, "an app password name cannot contain "
						 "control characters");
			return -1;
		}
	}
	if (name[0] == ' ' || name[len - 1] == ' ') {
		*error_r = account_error(db, "an app password name cannot start or end "
					 "with a space");
		return -1;
	}
	return 0;
}

int account_app_password_add(struct account_db *db, const char *address, const char *name,
			     unsigned scope, char *password_r, size_t size,
			     const char **error_r)
{
	char addr[SMTP_ADDRESS_MAX + 1];
	char plain[ACCOUNT_APP_PASSWORD_CHARS + 1];
	char shown[ACCOUNT_APP_PASSWORD_CHARS + ACCOUNT_APP_PASSWORD_CHARS / 4];
	unsigned char hash[HASH_BYTES];
	int ret = -1;

	if (size > 0)
		password_r[0] = '\0';
	if (size < sizeof(shown)) {
		*error_r = account_error(db, "app password buffer too small");
		return -1;
	}
	if (scope == 0 || (scope & ~ACCOUNT_SCOPE_ALL) != 0) {
		*error_r = account_error(db, "invalid app password scope");
		return -1;
	}
	if (app_name_valid(db, name, error_r) < 0 ||
	    account_address_normalize(db, address, false, addr, error_r) < 0)
		return -1;
	if (account_begin(db) < 0) {
		*error_r = db->error;
		return -1;
	}
	if (user_check(db, addr, error_r) < 0)
		goto out;
	random_grouped(app_alphabet, ACCOUNT_APP_PASSWORD_CHARS, plain, shown);
	secret_hash(plain, ACCOUNT_APP_PASSWORD_CHARS, hash);
	sqlite3_stmt *st = account_sec_stmt(db, SEC_APP_INSERT,
		"INSERT INTO app_passwords (address, name, hash, scope, created)"
		" VALUES (?1, ?2, ?3, ?4, ?5)");
	if (st == NULL)
		goto out;
	sqlite3_bind_text(st, 1, addr, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
	sqlite3_bind_blob(st, 3, hash, sizeof(hash), SQLITE_STATIC);
	sqlite3_bind_int64(st, 4, scope);
	sqlite3_bind_int64(st, 5, now_unix());
	int w = account_sec_write(db, st, "adding an app password");
	if (w != 0) {
		if (w == 1) {
			char shown_name[96];
			account_error(db, "%s already has an app password named \"%s\"", addr,
				      account_printable(name, shown_name, sizeof(shown_name)));
		}
		goto out;
	}
	if (account_commit(db) < 0)
		goto out;
	memcpy(password_r, shown, sizeof(shown));
	ret = 0;
out:
	if (ret < 0) {
		account_rollback(db);
		*error_r = db->error;
	}
	sodium_memzero(plain, sizeof(plain));
	sodium_memzero(shown, sizeof(shown));
	return ret;
}

/* Runs an UPDATE/DELETE of one app password (st, bound to addr and name);
 * fails with "no app password named" when it touched no row. */
static int app_password_update(struct account_db *db, sqlite3_stmt *st, const char *what,
			       const char *addr, const char *name, const char **error_r)
{
	if (account_sec_write(db, st, what) != 0) {
		*error_r = db->error;
		return -1;
	}
	if (sqlite3_changes(db->sql) == 0) {
		char shown[96];
		*error_r = account_error(db, "%s has no app password named \"%s\"", addr,
					 account_printable(name, shown, sizeof(shown)));
		return -1;
	}
	return 0;
}

int account_app_password_revoke(struct account_db *db, const char *address, const char *name,
				const char **error_r)
{
	char addr[SMTP_ADDRESS_MAX + 1];

	if (user_addr(db, address, addr, error_r) < 0)
		return -1;
	sqlite3_stmt *st = account_sec_stmt(db, SEC_APP_DELETE,
		"DELETE FROM app_passwords WHERE address = ?1 AND name = ?2");
	if (st == NULL) {
		*error_r = db->error;
		return -1;
	}
	sqlite3_bind_text(st, 1, addr, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
	return app_password_update(db, st, "revoking an app password", addr, name, error_r);
}

int account_app_password_list(struct account_db *db, const char *address,
			      void (*cb)(const struct account_app_password *ap, void *ctx),
			      void *ctx)
{
	char addr[SMTP_ADDRESS_MAX + 1];
	const char *error;
	int rc;

	if (user_addr(db, address, addr, &error) < 0)
		return -1;
	sqlite3_stmt *st = account_sec_stmt(db, SEC_APP_LIST,
		"SELECT name, scope, created, last_used, last_ip, allow_from"
		" FROM app_passwords WHERE address = ?1 ORDER BY name");
	if (st == NULL)
		return -1;
	sqlite3_bind_text(st, 1, addr, -1, SQLITE_STATIC);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct account_app_password ap = {
			.name = (const char *)sqlite3_column_text(st, 0),
			.scope = (unsigned)sqlite3_column_int64(st, 1),
			.created = sqlite3_column_int64(st, 2),
			.last_used = sqlite3_column_int64(st, 3),
			.last_ip = (const char *)sqlite3_column_text(st, 4),
			.allow_from = (const char *)sqlite3_column_text(st, 5),
		};
		cb(&ap, ctx);
	}
	if (rc != SQLITE_DONE)
		account_sql_error(db, "listing app passwords");
	account_stmt_done(st);
	return rc == SQLITE_DONE ? 0 : -1;
}

int account_app_password_match(struct account_db *db, const char *address,
			       const char *password, char **name_r, unsigned *scope_r,
			       char **allow_from_r)
{
	char addr[SMTP_ADDRESS_MAX + 1];
	char norm[ACCOUNT_APP_PASSWORD_CHARS + 1];
	unsigned char hash[HASH_BYTES];
	int ret = 0;

	*name_r = NULL;
	*allow_from_r = NULL;
	*scope_r = 0;
	if (quiet_addr(address, addr) < 0 ||
	    !secret_normalize(password, app_alphabet, ACCOUNT_APP_PASSWORD_CHARS, norm))
		return 0;
	secret_hash(norm, ACCOUNT_APP_PASSWORD_CHARS, hash);
	sodium_memzero(norm, sizeof(norm));
	sqlite3_stmt *st = account_sec_stmt(db, SEC_APP_MATCH,
		"SELECT name, scope, allow_from FROM app_passwords"
		" WHERE address = ?1 AND hash = ?2");
	if (st == NULL)
		return -1;
	sqlite3_bind_text(st, 1, addr, -1, SQLITE_STATIC);
	sqlite3_bind_blob(st, 2, hash, sizeof(hash), SQLITE_STATIC);
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		ret = 1;
		*scope_r = (unsigned)sqlite3_column_int64(st, 1);
		if (column_dup(st, 0, name_r) < 0 || *name_r == NULL ||
		    column_dup(st, 2, allow_from_r) < 0) {
			free(*name_r);
			*name_r = NULL;
			ret = -1;
		}
	} else if (rc != SQLITE_DONE) {
		account_sql_error(db, "matching an app password");
		ret = -1;
	}
	account_stmt_done(st);
	return ret;
}

int account_app_password_used(struct account_db *db, const char *address, const char *name,
			      const char *ip)
{
	char addr[SMTP_ADDRESS_MAX + 1];

	if (quiet_addr(address, addr) < 0)
		return -1;
	sqlite3_stmt *st = account_sec_stmt(db, SEC_APP_USED,
		"UPDATE app_passwords SET last_used = ?3, last_ip = ?4"
		" WHERE address = ?1 AND name = ?2");
	if (st == NULL)
		return -1;
	sqlite3_bind_text(st, 1, addr, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, now_unix());
	sqlite3_bind_text(st, 4, ip, -1, SQLITE_STATIC);
	return account_sec_write(db, st, "recording an app password's use") == 0 ? 0 : -1;
}

int account_app_password_set_allow_from(struct account_db *db, const char *address,
					const char *name, const char *cidrs,
					const char **error_r)
{
	char addr[SMTP_ADDRESS_MAX + 1];
	char canon[ACCOUNT_CIDR_LIST_MAX + 1];
	const char *why;

	if (account_cidr_list_canon(cidrs, canon, sizeof(canon), &why) < 0) {
		*error_r = account_error(db, "invalid CIDR list: %s", why);
		return -1;
	}
	if (user_addr(db, address, addr, error_r) < 0)
		return -1;
	sqlite3_stmt *st = account_sec_stmt(db, SEC_APP_ALLOW,
		"UPDATE app_passwords SET allow_from = ?3 WHERE address = ?1 AND name = ?2");
	if (st == NULL) {
		*error_r = db->error;
		return -1;
	}
	sqlite3_bind_text(st, 1, addr, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
	if (canon[0] != '\0')
		sqlite3_bind_text(st, 3, canon, -1, SQLITE_STATIC);
	else
		sqlite3_bind_null(st, 3);
	return app_password_update(db, st, "setting an app password's allowlist", addr, name, error_r);
}

/* ---- TOTP ------------------------------------------------------------------ */

static pthread_once_t oath_once = PTHREAD_ONCE_INIT;
static bool oath_ready;

static void oath_setup(void)
{
	oath_ready = oath_init() == OATH_OK;
	if (!oath_ready)
		log_error("account: liboath initialisation failed");
}

/* Reads the user's TOTP row: 1 (secret copied into secret_r, its length in
 * *len_r, *state_r, *last_step_r), 0 none, -1 error. */
static int totp_get(struct account_db *db, const char *addr,
		    unsigned char secret_r[ACCOUNT_TOTP_SECRET_BYTES], size_t *len_r,
		    int *state_r, int64_t *last_step_r)
{
	sqlite3_stmt *st = account_sec_stmt(db, SEC_TOTP_GET,
		"SELECT secret, state, last_step FROM totp WHERE address = ?1");
	if (st == NULL)
		return -1;
	sqlite3_bind_text(st, 1, addr, -1, SQLITE_STATIC);
	int ret = 0;
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		const void *blob = sqlite3_column_blob(st, 0);
		int len = sqlite3_column_bytes(st, 0);
		if (blob == NULL || len <= 0 || len > ACCOUNT_TOTP_SECRET_BYTES) {
			account_error(db, "broken TOTP secret for %s", addr);
			log_error("account: %s", db->error);
			ret = -1;
		} else {
			if (secret_r != NULL)
				memcpy(secret_r, blob, (size_t)len);
			if (len_r != NULL)
				*len_r = (size_t)len;
			*state_r = sqlite3_column_int(st, 1);
			if (last_step_r != NULL)
				*last_step_r = sqlite3_column_int64(st, 2);
			ret = 1;
		}
	} else if (rc != SQLITE_DONE) {
		account_sql_error(db, "reading a TOTP secret");
		ret = -1;
	}
	account_stmt_done(st);
	return ret;
}

int account_2fa_state(struct account_db *db, const char *address,
		      enum account_2fa_state *state_r)
{
	char addr[SMTP_ADDRESS_MAX + 1];
	int state = 0;

	*state_r = ACCOUNT_2FA_OFF;
	if (quiet_addr(address, addr) < 0)
		return 0;
	int found = totp_get(db, addr, NULL, NULL, &state, NULL);
	if (found < 0)
		return -1;
	if (found == 1)
		*state_r = state == TOTP_STATE_ON ? ACCOUNT_2FA_ON : ACCOUNT_2FA_PENDING;
	return 0;
}

/* Percent-encodes s for the otpauth label (RFC 3986 unreserved and '@'
 * pass; the rest, ':' included, become %XX). 0 or -1 when out is short. */
static int uri_encode(const char *s, char *out, size_t size)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t j = 0;

	for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
		bool plain = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
			     (*p >= '0' && *p <= '9') || strchr("-._~@", *p) != NULL;
		if (j + (plain ? 1 : 3) >= size)
			return -1;
		if (plain) {
			out[j++] = (char)*p;
		} else {
			out[j++] = '%';
			out[j++] = hex[*p >> 4];
			out[j++] = hex[*p & 0xf];
		}
	}
	out[j] = '\0';
	return 0;
}

int account_2fa_enable(struct account_db *db, const char *address, char *uri_r,
		       size_t uri_size, char codes_r[ACCOUNT_RECOVERY_CODES][16],
		       const char **error_r)
{
	char addr[SMTP_ADDRESS_MAX + 1];
	char label[3 * SMTP_ADDRESS_MAX + 1];
	unsigned char secret[ACCOUNT_TOTP_SECRET_BYTES];
	char plain[RECOVERY_CODE_CHARS + 1];
	char shown[ACCOUNT_RECOVERY_CODES][16];
	unsigned char hash[HASH_BYTES];
	char *b32 = NULL;
	size_t b32_len = 0;
	int state = 0, ret = -1;

	if (uri_size > 0)
		uri_r[0] = '\0';
	pthread_once(&oath_once, oath_setup);
	if (!oath_ready) {
		*error_r = account_error(db, "TOTP library not available");
		return -1;
	}
	if (account_address_normalize(db, address, false, addr, error_r) < 0)
		return -1;
	if (account_begin(db) < 0) {
		*error_r = db->error;
		return -1;
	}
	if (user_check(db, addr, error_r) < 0)
		goto out;
	int found = totp_get(db, addr, NULL, NULL, &state, NULL);
	if (found < 0)
		goto out;
	if (found == 1 && state == TOTP_STATE_ON) {
		account_error(db, "2fa is already on for %s (disable it first)", addr);
		goto out;
	}
	randombytes_buf(secret, sizeof(secret));
	if (oath_base32_encode((const char *)secret, sizeof(secret), &b32, &b32_len) != OATH_OK) {
		account_error(db, "cannot encode the TOTP secret");
		goto out;
	}
	if (uri_encode(addr, label, sizeof(label)) < 0) {
		account_error(db, "address too long for a provisioning URI");
		goto out;
	}
	int n = snprintf(uri_r, uri_size,
			 "otpauth://totp/Postern:%s?secret=%.*s&issuer=Postern"
			 "&algorithm=SHA1&digits=%d&period=%d",
			 label, (int)b32_len, b32, TOTP_DIGITS, TOTP_STEP);
	if (n < 0 || (size_t)n >= uri_size) {
		account_error(db, "provisioning URI buffer too small");
		goto out;
	}
	sqlite3_stmt *st = account_sec_stmt(db, SEC_TOTP_PUT,
		"INSERT INTO totp (address, secret, state, last_step, created)"
		" VALUES (?1, ?2, 1, 0, ?3)"
		" ON CONFLICT(address) DO UPDATE SET secret = ?2, state = 1, last_step = 0,"
		" created = ?3");
	if (st == NULL)
		goto out;
	sqlite3_bind_text(st, 1, addr, -1, SQLITE_STATIC);
	sqlite3_bind_blob(st, 2, secret, sizeof(secret), SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, now_unix());
	if (account_sec_write(db, st, "storing a TOTP secret") != 0)
		goto out;
	st = account_sec_stmt(db, SEC_RECOVERY_CLEAR,
			      "DELETE FROM recovery_codes WHERE address = ?1");
	if (st == NULL)
		goto out;
	sqlite3_bind_text(st, 1, addr, -1, SQLITE_STATIC);
	if (account_sec_write(db, st, "clearing recovery codes") != 0)
		goto out;
	for (int i = 0; i < ACCOUNT_RECOVERY_CODES; i++) {
		random_grouped(code_alphabet, RECOVERY_CODE_CHARS, plain, shown[i]);
		secret_hash(plain, RECOVERY_CODE_CHARS, hash);
		st = account_sec_stmt(db, SEC_RECOVERY_INSERT,
			"INSERT OR IGNORE INTO recovery_codes (address, hash) VALUES (?1, ?2)");
		if (st == NULL)
			goto out;
		sqlite3_bind_text(st, 1, addr, -1, SQLITE_STATIC);
		sqlite3_bind_blob(st, 2, hash, sizeof(hash), SQLITE_STATIC);
		if (account_sec_write(db, st, "storing a recovery code") != 0)
			goto out;
	}
	if (account_commit(db) < 0)
		goto out;
	memcpy(codes_r, shown, sizeof(shown));
	ret = 0;
out:
	if (ret < 0) {
		account_rollback(db);
		*error_r = db->error;
		if (uri_size > 0)
			sodium_memzero(uri_r, uri_size);
	}
	if (b32 != NULL) {
		sodium_memzero(b32, b32_len);
		free(b32);
	}
	sodium_memzero(secret, sizeof(secret));
	sodium_memzero(plain, sizeof(plain));
	sodium_memzero(shown, sizeof(shown));
	return ret;
}

int account_2fa_verify(struct account_db *db, const char *address, const char *code,
		       time_t now)
{
	char addr[SMTP_ADDRESS_MAX + 1];
	unsigned char secret[ACCOUNT_TOTP_SECRET_BYTES];
	char digits[TOTP_DIGITS + 1];
	size_t secret_len = 0, n = 0;
	int64_t last_step = 0;
	int state = 0, ret = 0;

	pthread_once(&oath_once, oath_setup);
	if (!oath_ready)
		return -1;
	if (quiet_addr(address, addr) < 0 || code == NULL)
		return 0;
	/* "123456" or "123 456", as authenticator apps show it. */
	for (const char *p = code; *p != '\0'; p++) {
		if (*p == ' ')
			continue;
		if (*p < '0' || *p > '9' || n >= TOTP_DIGITS)
			return 0;
		digits[n++] = *p;
	}
	digits[n] = '\0';
	if (n != TOTP_DIGITS)
		return 0;
	int found = totp_get(db, addr, secret, &secret_len, &state, &last_step);
	if (found <= 0)
		return found;
	int pos = 0;
	uint64_t counter = 0;
	int rc = oath_totp_validate3((const char *)secret, secret_len, now, TOTP_STEP, 0, 1,
				     &pos, &counter, digits);
	sodium_memzero(secret, sizeof(secret));
	if (rc < 0) {
		if (rc != OATH_INVALID_OTP) {
			log_error("account: TOTP check for %s: %s", addr, oath_strerror(rc));
			return -1;
		}
		return 0;
	}
	/* No replay: the step must be later than the last accepted one. The
	 * condition is in the UPDATE too, so two logins racing with the same
	 * code cannot both win. */
	if ((int64_t)counter <= last_step)
		return 0;
	sqlite3_stmt *st = account_sec_stmt(db, SEC_TOTP_STEP,
		"UPDATE totp SET last_step = ?2, state = 2 WHERE address = ?1 AND last_step < ?2");
	if (st == NULL)
		return -1;
	sqlite3_bind_text(st, 1, addr, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, (int64_t)counter);
	if (account_sec_write(db, st, "recording a TOTP step") != 0)
		return -1;
	ret = sqlite3_changes(db->sql) == 1 ? 1 : 0;
	return ret;
}

int account_2fa_recovery(struct account_db *db, const char *address, const char *code)
{
	char addr[SMTP_ADDRESS_MAX + 1];
	char norm[RECOVERY_CODE_CHARS + 1];
	unsigned char hash[HASH_BYTES];
	int state = 0;

	if (quiet_addr(address, addr) < 0 || code == NULL ||
	    !secret_normalize(code, code_alphabet, RECOVERY_CODE_CHARS, norm))
		return 0;
	secret_hash(norm, RECOVERY_CODE_CHARS, hash);
	sodium_memzero(norm, sizeof(norm));
	int found = totp_get(db, addr, NULL, NULL, &state, NULL);
	if (found <= 0)
		return found;
	if (state != TOTP_STATE_ON)
		return 0;
	sqlite3_stmt *st = account_sec_stmt(db, SEC_RECOVERY_USE,
		"DELETE FROM recovery_codes WHERE address = ?1 AND hash = ?2");
	if (st == NULL)
		return -1;
	sqlite3_bind_text(st, 1, addr, -1, SQLITE_STATIC);
	sqlite3_bind_blob(st, 2, hash, sizeof(hash), SQLITE_STATIC);
	if (account_sec_write(db, st, "using a recovery code") != 0)
		return -1;
	return sqlite3_changes(db->sql) == 1 ? 1 : 0;
}

int account_2fa_disable(struct account_db *db, const char *address, const char **error_r)
{
	char addr[SMTP_ADDRESS_MAX + 1];
	int ret = -1;

	if (account_address_normalize(db, address, false, addr, error_r) < 0)
		return -1;
	if (account_begin(db) < 0) {
		*error_r = db->error;
		return -1;
	}
	if (user_check(db, addr, error_r) < 0)
		goto out;
	sqlite3_stmt *st = account_sec_stmt(db, SEC_TOTP_DELETE,
					    "DELETE FROM totp WHERE address = ?1");
	if (st == NULL)
		goto out;
	sqlite3_bind_text(st, 1, addr, -1, SQLITE_STATIC);
	if (account_sec_write(db, st, "disabling 2fa") != 0)
		goto out;
	if (sqlite3_changes(db->sql) == 0) {
		account_error(db, "2fa is not enabled for %s", addr);
		goto out;
	}
	st = account_sec_stmt(db, SEC_RECOVERY_CLEAR,
			      "DELETE FROM recovery_codes WHERE address = ?1");
	if (st == NULL)
		goto out;
	sqlite3_bind_text(st, 1, addr, -1, SQLITE_STATIC);
	if (account_sec_write(db, st, "clearing recovery codes") != 0)
		goto out;
	ret = account_commit(db);
out:
	if (ret < 0) {
		account_rollback(db);
		*error_r = db->error;
	}
	return ret;
}

/* ---- per-account allowlist ---------------------------------------------------- */

int account_allow_from_set(struct account_db *db, const char *address, const char *cidrs,
			   const char **error_r)
{
	char addr[SMTP_ADDRESS_MAX + 1];
	char canon[ACCOUNT_CIDR_LIST_MAX + 1];
	const char *why;
	sqlite3_stmt *st;

	if (account_cidr_list_canon(cidrs, canon, sizeof(canon), &why) < 0) {
		*error_r = account_error(db, "invalid CIDR list: %s", why);
		return -1;
	}
	if (user_addr(db, address, addr, error_r) < 0)
		return -1;
	if (canon[0] == '\0') {
		st = account_sec_stmt(db, SEC_ALLOW_DEL, "DELETE FROM user_allow WHERE address = ?1");
	} else {
		st = account_sec_stmt(db, SEC_ALLOW_SET,
			"INSERT INTO user_allow (address, cidrs) VALUES (?1, ?2)"
			" ON CONFLICT(address) DO UPDATE SET cidrs = ?2");
	}
	if (st == NULL) {
		*error_r = db->error;
		return -1;
	}
	sqlite3_bind_text(st, 1, addr, -1, SQLITE_STATIC);
	if (canon[0] != '\0')
		sqlite3_bind_text(st, 2, canon, -1, SQLITE_STATIC);
	if (account_sec_write(db, st, "setting a login allowlist") != 0) {
		*error_r = db->error;
		return -1;
	}
	return 0;
}

int account_allow_from_get(struct account_db *db, const char *address, char **cidrs_r)
{
	char addr[SMTP_ADDRESS_MAX + 1];

	*cidrs_r = NULL;
	if (quiet_addr(address, addr) < 0)
		return 0;
	sqlite3_stmt *st = account_sec_stmt(db, SEC_ALLOW_GET,
		"SELECT cidrs FROM user_allow WHERE address = ?1");
	if (st == NULL)
		return -1;
	sqlite3_bind_text(st, 1, addr, -1, SQLITE_STATIC);
	int ret = 0;
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		ret = column_dup(st, 0, cidrs_r) == 0 && *cidrs_r != NULL ? 1 : -1;
	} else if (rc != SQLITE_DONE) {
		account_sql_error(db, "reading a login allowlist");
		ret = -1;
	}
	account_stmt_done(st);
	return ret;
}
