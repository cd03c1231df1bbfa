/*
 * account.h — the account database: domains, users (argon2id password
 * hashes), aliases, and RFC 5321 recipient resolution.
 *
 * Storage is SQLite (DATA/postern.db, WAL mode). The API takes no config:
 * callers pass the database path. It is used by the directory process
 * (lookups, password checks) and by the `postern domain|user|alias` CLI.
 *
 * Threads and processes: a struct account_db wraps one SQLite connection and
 * must be used by one thread at a time. A program that looks up accounts from
 * several threads (the directory's password-check pool) opens one
 * account_db per thread; SQLite's WAL mode lets them read concurrently and
 * writers wait up to 5 seconds (busy_timeout) for each other. A connection
 * must not be used across fork(): open it in the process that uses it.
 *
 * Normal form: domains and addresses are stored and compared lower-cased
 * (ASCII only; UTF-8 bytes pass through untouched). The one exception is the
 * local part of a remote alias target, whose case RFC 5321 2.4 says belongs
 * to the remote host; it is kept as given (its domain is lower-cased).
 *
 * Error strings: mutators return 0 or -1 with *error_r set to a one-line,
 * user-facing message (safe to show an operator; never contains a password).
 * The string lives in the account_db and stays valid until the next call on
 * the same db. account_db_open's error is in thread-local storage and stays
 * valid until the next account_db_open in the same thread.
 */
#ifndef POSTERN_ACCOUNT_H
#define POSTERN_ACCOUNT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/limits.h"

/* Nested alias expansion deeper than this is a configuration error. */
#define ACCOUNT_ALIAS_DEPTH_MAX 10

struct account_db;

/*
 * Opens the database at path. With create, a missing file is created (mode
 * 0600: it holds password hashes) and the schema is created or upgraded;
 * without it, the file and the schema must exist. Sets WAL mode,
 * busy_timeout 5000 ms and foreign keys on.
 * Returns 0 and *db_r (free with account_db_close), or -1 and *error_r.
 */
int account_db_open(const char *path, bool create, struct account_db **db_r,
		    const char **error_r);
/* Closes and sets *db to NULL; NULL or *db == NULL is fine. */
void account_db_close(struct account_db **db);

/*
 * Domains. A domain in this table is "local": we accept mail for it and hold
 * its users and aliases. account_domain_del refuses while users or aliases of
 * the domain exist. Callbacks get strings valid only during the call.
 * account_domain_list returns 0 or -1; account_domain_exists 1, 0 or -1
 * (an invalid name is 0).
 */
int account_domain_add(struct account_db *db, const char *domain, const char **error_r);
int account_domain_del(struct account_db *db, const char *domain, const char **error_r);
int account_domain_list(struct account_db *db, void (*cb)(const char *domain, void *ctx),
			void *ctx);
int account_domain_exists(struct account_db *db, const char *domain);

/*
 * Users: "local@domain" with a local domain. The password is hashed here
 * (argon2id, see password_hash) and never stored; the caller wipes its copy.
 * The library refuses only an empty password, one longer than PASSWORD_MAX
 * octets and one with control characters; the password policy (minimum
 * length, common passwords, the local part: account_password_check in
 * account-security.h) is the caller's, so an operator can override it.
 * add and passwd record the time of the change (password_changed, for
 * security.password_max_age).
 * A user's address may not also be an alias (and vice versa).
 * account_user_list lists all users, or those of one domain, ordered by
 * domain then address; 0 or -1.
 */
int account_user_add(struct account_db *db, const char *address, const char *password,
		     const char **error_r);
int account_user_del(struct account_db *db, const char *address, const char **error_r);
int account_user_passwd(struct account_db *db, const char *address, const char *password,
			const char **error_r);
int account_user_list(struct account_db *db, const char *domain_or_null,
		      void (*cb)(const char *address, void *ctx), void *ctx);

/*
 * Aliases: "sales@example.com", or the catch-all "@example.com"; the alias's
 * domain must be local. targets is a comma-separated list of addresses, local
 * or remote (spaces around commas are allowed; duplicates are dropped; at
 * most ALIAS_EXPAND_MAX). Adding an existing alias is an error (delete it
 * first). account_alias_list passes the stored, normalised list ("a@x,b@y").
 */
int account_alias_add(struct account_db *db, const char *alias, const char *targets,
		      const char **error_r);
int account_alias_del(struct account_db *db, const char *alias, const char **error_r);
int account_alias_list(struct account_db *db,
		       void (*cb)(const char *alias, const char *targets, void *ctx), void *ctx);

/*
 * Recipient resolution (RCPT TO, RFC 5321 semantics), used by the directory.
 *
 * address is "local@domain" in any case. Order of lookups:
 *   1. a user with exactly that address;
 *   2. an alias with exactly that address, expanded recursively;
 *   3. plus-addressing: local part "user+tag" (first '+') is retried as
 *      "user" (steps 1 and 2);
 *   4. the catch-all alias "@domain";
 *   5. otherwise NO_SUCH_USER. "postmaster" gets no special case: the
 *      operator adds a postmaster alias (postern init does).
 * A domain that is not local gives NOT_LOCAL.
 *
 * Alias expansion resolves each target the same way: local users become
 * targets with local = true and address = the user's canonical address (any
 * +tag dropped); addresses in non-local domains become targets with
 * local = false, as stored. A target in a local domain that resolves to
 * nothing (a deleted user) is skipped with a warning in the log; if nothing
 * is left, the result is NO_SUCH_USER. Duplicates are removed (first
 * occurrence kept). An alias loop, nesting deeper than
 * ACCOUNT_ALIAS_DEPTH_MAX or more than ALIAS_EXPAND_MAX targets is a
 * configuration error: ERROR (logged), and the caller should answer with a
 * temporary failure so mail is not lost while the operator fixes it.
 * A syntactically invalid address is NO_SUCH_USER.
 *
 * On OK, *r holds at least one target and the caller frees it with
 * account_targets_free(); on any other result *r is empty (count 0, v NULL)
 * and freeing it is harmless.
 */
enum account_resolve_result {
	ACCOUNT_RESOLVE_OK,
	ACCOUNT_RESOLVE_NO_SUCH_USER,
	ACCOUNT_RESOLVE_NOT_LOCAL,
	ACCOUNT_RESOLVE_ERROR,
};

struct account_target {
	char address[SMTP_ADDRESS_MAX + 1];
	bool local;     /* a user of ours; address is the canonical user address */
};

struct account_targets {
	struct account_target *v;
	size_t count;
};

enum account_resolve_result account_resolve(struct account_db *db, const char *address,
					    struct account_targets *r);
void account_targets_free(struct account_targets *t);

/* The stored password hash of a user: 1 and *hash_r (malloc'ed, caller frees),
 * 0 no such user (or an invalid address), -1 database error. */
int account_user_get_hash(struct account_db *db, const char *address, char **hash_r);

/*
 * May the authenticated user `user` use `sender` as MAIL FROM? Yes (1) when
 * sender, lower-cased, is user's own address, or is so after stripping a
 * "+tag" from its local part, or is an alias (exact or after stripping the
 * +tag; never the catch-all) whose expansion includes user. 0 otherwise
 * (including an empty or invalid sender), -1 on a database error or a broken
 * alias (loop, too deep).
 */
int account_sender_allowed(struct account_db *db, const char *user, const char *sender);

/*
 * Quota overrides per user (the configured mailbox.quota* apply otherwise).
 * bytes/messages: 0 = unlimited, -1 = the default for that resource;
 * setting both to -1 removes the override. get: 1 and the override (a
 * field may be -1), 0 no override (both -1), -1 database error.
 */
int account_user_quota_set(struct account_db *db, const char *address, int64_t bytes,
			   int64_t messages, const char **error_r);
int account_user_quota_get(struct account_db *db, const char *address, int64_t *bytes_r,
			   int64_t *messages_r);

/* 1 when address (lower case) is a user, 0 when not, -1 on a database error. */
int account_user_exists(struct account_db *db, const char *address);

/* The Maildir of a canonical user address: "MAIL_DIR/<domain>/<local>".
 * 0, or -1 for an address that cannot be a path (no '@', a '/', a leading
 * '.') or a result that does not fit. */
int account_maildir_path(const char *mail_dir, const char *address, char *out, size_t size);

/*
 * Passwords: libsodium argon2id with OPSLIMIT_INTERACTIVE and
 * MEMLIMIT_INTERACTIVE (64 MiB, ~0.1 s per call; CPU-heavy, so never call
 * these from an event loop thread).
 * password_hash: 0 and *hash_r (malloc'ed "$argon2id$..." string), or -1
 * (password longer than PASSWORD_MAX, out of memory).
 * password_verify: 1 match, 0 no match, -1 error (a hash we cannot parse).
 * With hash_or_null NULL it verifies against a fixed dummy hash and returns 0,
 * so an unknown user costs the same time as a wrong password.
 */
int password_hash(const char *password, char **hash_r);
int password_verify(const char *hash_or_null, const char *password);

#endif
