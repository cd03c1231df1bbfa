/*
 * account-security.h — the login security data of the account database
 * (postern.db): app passwords, TOTP two-factor authentication and recovery
 * codes, per-account login allowlists, IP access rules, the throttle /
 * block state of failed logins, and the password policy.
 *
 * Used by the directory process (login decisions) and by the CLI
 * (`postern user app-password|2fa|allow-from|passwd`, `postern access`,
 * `postern security`). Same conventions as account.h: one account_db per
 * thread; mutators return 0 or -1 with *error_r (client-safe, in the db);
 * lookups return 1 found, 0 not found, -1 database error. Addresses are
 * canonical (lower case) "local@domain".
 *
 * Secrets: app passwords are random (ACCOUNT_APP_PASSWORD_CHARS characters
 * from a 32-letter alphabet, 120 bits) and stored as a BLAKE2b-256 hash
 * (libsodium crypto_generichash): their entropy makes a slow hash
 * unnecessary and lets a login find the matching one with one indexed
 * lookup instead of one argon2id per app password. Recovery codes the same.
 * The TOTP secret must be readable to check codes; it is stored as is
 * (the database is 0600, owned by the run user).
 */
#ifndef POSTERN_ACCOUNT_SECURITY_H
#define POSTERN_ACCOUNT_SECURITY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct account_db;

/* ---- password policy ---- */

#define ACCOUNT_POLICY_MIN_LENGTH 12   /* default of security.password_min_length */

struct account_password_policy {
	unsigned min_length;    /* code points; default 12 */
	unsigned max_age_days;  /* 0: passwords do not expire */
};

/*
 * Checks a new password for address against the policy: at least
 * min_length characters (UTF-8 code points), not in the shipped list of
 * common passwords (case-insensitive, also with trailing digits/symbols
 * stripped: "Password123!" is "password"), and not containing the address's
 * local part (case-insensitive; local parts shorter than 3 characters are
 * not checked) or the whole address. 0 acceptable, -1 with *reason_r (a
 * static, user-facing sentence such as "password is too common").
 */
int account_password_check(const char *address, const char *password,
			   const struct account_password_policy *policy, const char **reason_r);

/* Is the user's password older than max_age_days (0: never)? 1 expired,
 * 0 not, -1 error. The change time is set by account_user_add/passwd. */
int account_password_expired(struct account_db *db, const char *address,
			     unsigned max_age_days);

/* The same with the age in seconds (security.password_max_age is a
 * duration in seconds; 0: never) at time now. The change time of a user
 * created before schema 2 is its creation time. 1 expired, 0 not (or no
 * such user), -1 error. */
int account_password_expired_after(struct account_db *db, const char *address,
				   uint64_t max_age, time_t now);

/* ---- app passwords ---- */

#define ACCOUNT_APP_PASSWORD_CHARS 24   /* shown as 6 groups of 4: "abcd-efgh-..." */
#define ACCOUNT_SCOPE_SMTP  0x1u
#define ACCOUNT_SCOPE_IMAP  0x2u
#define ACCOUNT_SCOPE_POP3  0x4u
#define ACCOUNT_SCOPE_ALL   0x7u

/* "smtp,imap" -> bits; 0 or -1 for an unknown name. NULL/"" -> ALL. */
int account_scope_parse(const char *s, unsigned *scope_r);
/* bits -> "smtp,imap,pop3" into out. */
void account_scope_format(unsigned scope, char *out, size_t size);

/*
 * Creates an app password named name (1..64 printable characters, unique
 * per user) for an existing user; writes the new password (NUL-terminated,
 * with dashes, ACCOUNT_APP_PASSWORD_CHARS + 5 + 1 bytes) into password_r.
 * It is shown once and never stored in clear.
 */
int account_app_password_add(struct account_db *db, const char *address, const char *name,
			     unsigned scope, char *password_r, size_t size,
			     const char **error_r);
int account_app_password_revoke(struct account_db *db, const char *address, const char *name,
				const char **error_r);

struct account_app_password {
	const char *name;
	unsigned scope;
	int64_t created;        /* unix time */
	int64_t last_used;      /* 0: never */
	const char *last_ip;    /* NULL: never */
	const char *allow_from; /* CIDR list or NULL */
};
/* Lists the user's app passwords ordered by name; cb's pointers are valid
 * during the call. 0 or -1 (no such user: -1 with the db error set). */
int account_app_password_list(struct account_db *db, const char *address,
			      void (*cb)(const struct account_app_password *ap, void *ctx),
			      void *ctx);

/*
 * Login check: does password match one of address's app passwords? Dashes
 * and case in the presented password are ignored. 1 and *name_r (the app
 * password's name, malloc'ed), *scope_r, *allow_from_r (malloc'ed or NULL);
 * 0 no match; -1 error. Cheap (a hash and an indexed lookup): call it
 * before argon2id.
 */
int account_app_password_match(struct account_db *db, const char *address,
			       const char *password, char **name_r, unsigned *scope_r,
			       char **allow_from_r);
/* Records a use (time and IP) after a successful login. */
int account_app_password_used(struct account_db *db, const char *address, const char *name,
			      const char *ip);

/* ---- TOTP (RFC 6238: SHA-1, 6 digits, 30 s, liboath) ---- */

#define ACCOUNT_TOTP_SECRET_BYTES 20
#define ACCOUNT_RECOVERY_CODES    10

enum account_2fa_state { ACCOUNT_2FA_OFF, ACCOUNT_2FA_PENDING, ACCOUNT_2FA_ON };

/*
 * Starts enrolment: a new random secret (replacing a pending one; refused
 * with an error when 2FA is already on — disable first), state PENDING.
 * Writes the provisioning URI
 * "otpauth://totp/Postern:ADDRESS?secret=BASE32&issuer=Postern&algorithm=SHA1&digits=6&period=30"
 * into uri_r and ACCOUNT_RECOVERY_CODES one-time recovery codes
 * ("xxxx-xxxx-xxxx", 12 base32 characters) into codes_r[i] (each 16 bytes).
 */
int account_2fa_enable(struct account_db *db, const char *address, char *uri_r,
		       size_t uri_size, char codes_r[ACCOUNT_RECOVERY_CODES][16],
		       const char **error_r);
/*
 * Checks a 6-digit code at time now with a window of one step either side.
 * A code whose time step is not later than the last accepted one is
 * refused (no replay). A PENDING enrolment becomes ON with its first valid
 * code. 1 valid, 0 invalid (or 2FA off), -1 error.
 */
int account_2fa_verify(struct account_db *db, const char *address, const char *code,
		       time_t now);
/* Uses up one recovery code (for the web login, later). 1, 0, -1. */
int account_2fa_recovery(struct account_db *db, const char *address, const char *code);
int account_2fa_disable(struct account_db *db, const char *address, const char **error_r);
/* OFF when the user has none; -1 on error. */
int account_2fa_state(struct account_db *db, const char *address,
		      enum account_2fa_state *state_r);

/* ---- CIDR lists ---- */

/* Parses "192.0.2.0/24,2001:db8::/32,198.51.100.7" (spaces allowed after
 * commas; a bare address is /32 or /128). 0, or -1 with a static reason. */
int account_cidr_list_valid(const char *list, const char **reason_r);
/* The longest CIDR list text accepted, in octets. */
#define ACCOUNT_CIDR_LIST_MAX 4096
/* Validates list like account_cidr_list_valid and writes its canonical
 * form into out: entries joined by ",", host bits cleared, a full-length
 * prefix written as a bare address, IPv4-mapped IPv6 as IPv4
 * ("10.1.2.3/8, ::ffff:192.0.2.1" -> "10.0.0.0/8,192.0.2.1"). NULL or ""
 * gives "". 0, or -1 with a static *reason_r (also when out is short). */
int account_cidr_list_canon(const char *list, char *out, size_t size, const char **reason_r);
/* Is ip (textual IPv4 or IPv6; IPv4-mapped IPv6 counts as IPv4) inside
 * any CIDR of list? true/false; an invalid list matches nothing. */
bool account_cidr_list_match(const char *list, const char *ip);

/* Per-account login allowlist ("user allow-from"): NULL/"" clears it. A
 * login from elsewhere fails like a wrong password. get: 1 and *cidrs_r
 * (malloc'ed), 0 none, -1 error. An app password may have its own list
 * (account_app_password_set_allow_from); both must match when both exist. */
int account_allow_from_set(struct account_db *db, const char *address, const char *cidrs,
			   const char **error_r);
int account_allow_from_get(struct account_db *db, const char *address, char **cidrs_r);
int account_app_password_set_allow_from(struct account_db *db, const char *address,
					const char *name, const char *cidrs,
					const char **error_r);

/* ---- IP access rules ("postern access") ---- */

enum account_access_action { ACCOUNT_ACCESS_ALLOW, ACCOUNT_ACCESS_DENY };

/* listener: a listener kind name ("imaps"), or NULL for every listener.
 * Adding an existing (cidr, listener) pair replaces its action. */
int account_access_add(struct account_db *db, const char *cidr, const char *listener,
		       enum account_access_action action, const char **error_r);
/* Removes the rule for (cidr, listener); 0, or -1 "no such rule". */
int account_access_del(struct account_db *db, const char *cidr, const char *listener,
		       const char **error_r);
struct account_access_rule {
	const char *cidr;
	const char *listener;   /* NULL: all */
	enum account_access_action action;
	int64_t created;
};
int account_access_list(struct account_db *db,
			void (*cb)(const struct account_access_rule *rule, void *ctx), void *ctx);
/*
 * The decision for a new connection from ip on listener (kind name):
 *   1. a deny rule (global or for this listener) matching ip: denied;
 *   2. if the listener has allow rules: allowed only if one matches;
 *   3. if there are global allow rules: allowed only if one matches;
 *   4. otherwise allowed.
 * 1 allowed, 0 denied, -1 error (the directory then allows and logs it:
 * a broken database must not lock every client out).
 * Rules are cached per db and reloaded when the database changed
 * (PRAGMA data_version), so this is cheap per connection.
 */
int account_access_check(struct account_db *db, const char *ip, const char *listener);

/* ---- failed logins: throttle and blocks (state shared and persistent) ---- */

enum account_block_kind { ACCOUNT_BLOCK_IP, ACCOUNT_BLOCK_ACCOUNT };

/* The longest throttle key with its NUL ("ffff:...:ffff::/64"). */
#define ACCOUNT_THROTTLE_KEY_MAX 64

/*
 * The key under which a client address is throttled and blocked (failure
 * counts, IP blocks, the soft lock's "this IP tried the account"): an IPv4
 * address (also IPv4-mapped IPv6) is its own key, "192.0.2.7"; an IPv6
 * address counts as its /64, "2001:db8:1:2::/64", since one host usually
 * has the whole /64 and could otherwise change address per guess. Input may
 * also be a key ("2001:db8:1:2::/64"; any address inside it) and any case
 * ("2001:DB8::1"). 0 and the canonical key in out, or -1 when ip is
 * neither (out then holds "").
 */
int account_throttle_key(const char *ip, char *out, size_t size);

/*
 * Failed-login counters per key (an IP, or an address) with the time of
 * the last failure. account_fail_record() adds one failure and returns the
 * new count (counts older than window seconds start again from 1);
 * account_fail_clear() forgets a key (unblock). account_fail_count() reads it (0 when none or expired).
 * account_fail_ips_for() says whether ip has failures recorded against
 * address (for the soft account lock: IPs with no failures keep working).
 */
int account_fail_record(struct account_db *db, enum account_block_kind kind, const char *key,
			const char *address_or_null, time_t now, unsigned window);
int account_fail_clear(struct account_db *db, enum account_block_kind kind, const char *key);
/* After a successful login of address from key: forgets key's failures
 * against that account only (the soft lock then lets key in again). The
 * IP-wide count is left to age out with the window, so logging in to an
 * account of one's own does not reset the count of guesses at others. */
int account_fail_clear_ip_account(struct account_db *db, const char *key, const char *address);
int account_fail_count(struct account_db *db, enum account_block_kind kind, const char *key,
		       time_t now, unsigned window);
int account_fail_ip_tried(struct account_db *db, const char *ip, const char *address,
			  time_t now, unsigned window);

/* Blocks: key blocked until `until` (unix time). */
int account_block_set(struct account_db *db, enum account_block_kind kind, const char *key,
		      time_t until, const char *reason);
/* 1 and *until_r when key is blocked at now, 0 not, -1 error. */
int account_block_get(struct account_db *db, enum account_block_kind kind, const char *key,
		      time_t now, time_t *until_r);
/* Lifts a block and clears the key's failures; 1 lifted, 0 none, -1. */
int account_block_del(struct account_db *db, enum account_block_kind kind, const char *key);
struct account_block {
	enum account_block_kind kind;
	const char *key;
	int64_t since, until;
	unsigned failures;
	const char *reason;
};
/* Active blocks at now, newest first. */
int account_block_list(struct account_db *db, time_t now,
		       void (*cb)(const struct account_block *b, void *ctx), void *ctx);

#endif
