/*
 * dir-security.h — the login security rules of the directory process: the
 * decision for one login from the facts gathered about it, the throttle
 * delay, and the bookkeeping of a failure (counters, IP blocks, account
 * locks, audit events) in postern.db through lib-account/account-security.h.
 *
 * Process: "directory" (loop thread only: the account_db is not shared with
 * the password-check pool). Issue 6 is the spec: every refusal looks the
 * same to the client (IPC_AUTH_FAIL); the reason goes to the log and the
 * audit log only.
 */
#ifndef POSTERN_DIR_SECURITY_H
#define POSTERN_DIR_SECURITY_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "lib/ipc.h"
#include "lib-config/config.h"

struct account_db;

/* The client IP of a login from a front-end that does not send it. */
#define DIR_LOGIN_IP_UNKNOWN "unknown"

/* The longest reply delay after failed logins (ms), whatever the count. */
#define DIR_LOGIN_DELAY_MAX_MS 8000u

/* What is known about one login attempt when it is decided. */
struct dir_login_facts {
	bool ip_blocked;        /* the client IP is blocked after failed logins */
	bool user_exists;
	bool app_password;      /* the password is one of the user's app passwords */
	bool app_scope_ok;      /* ... whose scope includes the protocol */
	bool password_ok;       /* argon2id: the main password matched */
	bool twofa_on;          /* TOTP is on: the main password is refused here */
	bool allow_from_ok;     /* the user's (and the app password's) allow-from match */
	bool account_locked;    /* the account is locked after failed logins */
	bool ip_tried_account;  /* this IP has failures against the account */
	bool expired;           /* the main password is older than password_max_age */
	enum account_lock_mode lock_mode;
};

/*
 * The decision (spec "Directory login decision"): IP block, unknown user,
 * credential (app password: scope, allow-from; main password: match, 2FA,
 * allow-from), account lock (soft: only IPs that failed against the account
 * are refused; hard: everyone), expiry of the main password. Returns
 * IPC_AUTH_OK, IPC_AUTH_FAIL or IPC_AUTH_EXPIRED; *reason_r is NULL for OK,
 * else a static audit reason ("ip_blocked", "unknown_user",
 * "wrong_password", "scope", "not_allowed_from_ip",
 * "2fa_requires_app_password", "account_locked", "expired").
 */
enum ipc_auth_result dir_login_decide(const struct dir_login_facts *f, const char **reason_r);

/* The delay of a FAIL reply: base_ms * 2^(ip_failures - 1), at most
 * DIR_LOGIN_DELAY_MAX_MS; 0 when base_ms or ip_failures is 0. */
unsigned dir_login_delay_ms(unsigned base_ms, unsigned ip_failures);

/* "smtp", "imap", "pop3" (NULL for an unknown value). */
const char *dir_login_proto_name(enum ipc_auth_proto proto);
/* The app password scope bit of a protocol (ACCOUNT_SCOPE_*; 0 unknown). */
unsigned dir_login_proto_scope(enum ipc_auth_proto proto);

/* Unix time as "2026-11-23T17:03:52Z" into out (at least 21 bytes). */
void dir_security_time_format(time_t t, char *out, size_t size);

/*
 * Records one failed login of ip against address (NULL: no such account,
 * only the IP is counted; an ip of DIR_LOGIN_IP_UNKNOWN is not counted) at
 * now: the IP's counter and the account's. ip is the client's throttle key
 * (account_throttle_key(): an IPv6 client's /64). An IP
 * reaching cfg->max_failures_per_ip is blocked for cfg->block_duration
 * (audit "ip_blocked"), an account reaching cfg->max_failures_per_account
 * is locked as long (audit "account_locked"). Returns the IP's failure
 * count within the window (for the delay), or -1 on a database error
 * (logged).
 */
int dir_security_record_failure(struct account_db *db, const struct config *cfg,
				const char *ip, const char *address, time_t now);

#endif
