/*
 * account-private.h — what the lib-account files share and nobody else sees:
 * the connection struct, its prepared statements, error text, transactions
 * and the address/domain syntax checks.
 */
#ifndef POSTERN_ACCOUNT_PRIVATE_H
#define POSTERN_ACCOUNT_PRIVATE_H

#include <sqlite3.h>
#include <stdbool.h>
#include <stddef.h>

#include "lib-account/account.h"

/* Every statement the library runs, prepared once at open. */
enum account_stmt {
	ACCOUNT_STMT_DOMAIN_EXISTS,
	ACCOUNT_STMT_DOMAIN_INSERT,
	ACCOUNT_STMT_DOMAIN_DELETE,
	ACCOUNT_STMT_DOMAIN_LIST,
	ACCOUNT_STMT_DOMAIN_USERS,
	ACCOUNT_STMT_DOMAIN_ALIASES,
	ACCOUNT_STMT_USER_EXISTS,
	ACCOUNT_STMT_USER_HASH,
	ACCOUNT_STMT_USER_INSERT,
	ACCOUNT_STMT_USER_DELETE,
	ACCOUNT_STMT_USER_SET_HASH,
	ACCOUNT_STMT_USER_LIST,
	ACCOUNT_STMT_USER_LIST_DOMAIN,
	ACCOUNT_STMT_ALIAS_GET,
	ACCOUNT_STMT_ALIAS_INSERT,
	ACCOUNT_STMT_ALIAS_DELETE,
	ACCOUNT_STMT_ALIAS_LIST,
	ACCOUNT_STMT_QUOTA_GET,
	ACCOUNT_STMT_QUOTA_SET,
	ACCOUNT_STMT_QUOTA_DEL,
	ACCOUNT_STMT_COUNT
};

/* Statements of the security tables (account-security.c), prepared on
 * first use: most programs (the queue, the deliverer) never run them. */
#define ACCOUNT_SEC_STMT_MAX 64

struct account_access_cache;

struct account_db {
	sqlite3 *sql;
	sqlite3_stmt *stmt[ACCOUNT_STMT_COUNT];
	sqlite3_stmt *sec_stmt[ACCOUNT_SEC_STMT_MAX];
	/* The IP access rules as last read, with the PRAGMA data_version they
	 * were read at (account_access_check); NULL: not read yet. */
	struct account_access_cache *access;
	char error[512];        /* the last user-facing error (see account.h) */
};

/* Frees what account-security.c keeps in the db (its statements and the
 * access rule cache); called by account_db_close. */
void account_security_free(struct account_db *db);
/* Frees the access rule cache (account-access.c). */
void account_access_cache_free(struct account_db *db);

/* The statements of account-security.c and account-access.c. */
enum account_sec_stmt {
	SEC_USER_CHANGED,
	SEC_APP_INSERT,
	SEC_APP_DELETE,
	SEC_APP_LIST,
	SEC_APP_MATCH,
	SEC_APP_USED,
	SEC_APP_ALLOW,
	SEC_TOTP_GET,
	SEC_TOTP_PUT,
	SEC_TOTP_STEP,
	SEC_TOTP_DELETE,
	SEC_RECOVERY_CLEAR,
	SEC_RECOVERY_INSERT,
	SEC_RECOVERY_USE,
	SEC_ALLOW_SET,
	SEC_ALLOW_DEL,
	SEC_ALLOW_GET,
	SEC_DATA_VERSION,
	SEC_ACCESS_ALL,
	SEC_ACCESS_LIST,
	SEC_ACCESS_PUT,
	SEC_ACCESS_DEL,
	SEC_FAIL_RECORD,
	SEC_FAIL_RECORD_IP_ACCOUNT,
	SEC_FAIL_GET,
	SEC_FAIL_CLEAR,
	SEC_FAIL_CLEAR_IP_ACCOUNT_BY_IP,
	SEC_FAIL_CLEAR_IP_ACCOUNT_BY_ADDRESS,
	SEC_FAIL_CLEAR_IP_ACCOUNT,
	SEC_FAIL_IP_TRIED,
	SEC_FAIL_PRUNE,
	SEC_FAIL_PRUNE_IP_ACCOUNT,
	SEC_BLOCK_SET,
	SEC_BLOCK_GET,
	SEC_BLOCK_DEL,
	SEC_BLOCK_LIST,
	SEC_BLOCK_PRUNE,
	SEC_STMT_COUNT
};
_Static_assert(SEC_STMT_COUNT <= ACCOUNT_SEC_STMT_MAX, "raise ACCOUNT_SEC_STMT_MAX");

/* The statement id, prepared from sql on first use (the same sql every
 * time for one id), reset and unbound; NULL on error (db->error set). */
sqlite3_stmt *account_sec_stmt(struct account_db *db, enum account_sec_stmt id,
			       const char *sql);

/* Runs a bound write statement and resets it: 0 done, 1 constraint
 * violated, -1 error (db->error "database error while WHAT"). */
int account_sec_write(struct account_db *db, sqlite3_stmt *st, const char *what);

/* The common password list (generated from common-passwords.txt: lower
 * case, sorted by strcmp, no duplicates). */
extern const char *const account_common_passwords[];
extern const size_t account_common_password_count;

/* A prepared statement, reset and with no bindings. */
sqlite3_stmt *account_stmt(struct account_db *db, enum account_stmt id);
/* Resets a statement after use (NULL is fine). */
void account_stmt_done(sqlite3_stmt *stmt);

/* Formats db->error and returns it. */
const char *account_error(struct account_db *db, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* "database error while WHAT: <sqlite message>", also logged. */
const char *account_sql_error(struct account_db *db, const char *what);

/* BEGIN IMMEDIATE / COMMIT / ROLLBACK; 0 or -1 (begin/commit set db->error). */
int account_begin(struct account_db *db);
int account_commit(struct account_db *db);
void account_rollback(struct account_db *db);

/*
 * Syntax. account_localpart_valid: a dot-atom (RFC 5322 3.2.3) of atext
 * plus UTF-8 octets (RFC 6531), 1..SMTP_LOCALPART_MAX octets.
 * account_domain_valid: dot-separated labels of letters, digits, '-' and
 * UTF-8 octets, 1..63 octets each, no '-' at either end, at most
 * SMTP_DOMAIN_MAX octets in all, no trailing dot. Both set *why_r.
 */
bool account_localpart_valid(const char *s, size_t len, const char **why_r);
bool account_domain_valid(const char *s, size_t len, const char **why_r);

/*
 * Normalises a domain into out (lower-cased). 0 or -1 with db->error set to
 * "invalid domain ...".
 */
int account_domain_normalize(struct account_db *db, const char *in,
			     char out[SMTP_DOMAIN_MAX + 1], const char **error_r);
/*
 * Normalises "local@domain" (or "@domain" with allow_catchall) into out: the
 * domain lower-cased always, the local part when lcase_local. 0 or -1 with
 * *why_r a reason ("missing '@'", "local part too long", ...).
 */
int account_address_parse(const char *in, bool allow_catchall, bool lcase_local,
			  char out[SMTP_ADDRESS_MAX + 1], const char **why_r);
/* account_address_parse (lower-casing all) with db->error set to
 * "invalid address ...: why" on failure. */
int account_address_normalize(struct account_db *db, const char *in, bool allow_catchall,
			      char out[SMTP_ADDRESS_MAX + 1], const char **error_r);
/* A copy of untrusted input fit for an error message: at most 80 octets,
 * control characters replaced with '?'. */
const char *account_printable(const char *in, char *out, size_t out_size);

/* Lookups shared by the mutators and resolution: 1 yes, 0 no, -1 error. */
int account_domain_lookup(struct account_db *db, const char *domain);
int account_user_lookup(struct account_db *db, const char *address);
/* *targets_r malloc'ed when 1 is returned. */
int account_alias_lookup(struct account_db *db, const char *alias, char **targets_r);

#endif
