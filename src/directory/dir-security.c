/*
 * dir-security.c — the directory's login security rules (dir-security.h):
 * the login decision, the throttle delay, and what a failed login leaves in
 * postern.db (failure counters, IP blocks, account locks) and in the audit
 * log.
 *
 * Process: "directory", loop thread. All state lives in postern.db (through
 * lib-account/account-security.h), so it survives restarts and the CLI
 * (`postern security blocked|unblock`) sees and changes the same state.
 */
#include "directory/dir-security.h"

#include <stdio.h>
#include <string.h>

#include "lib-account/account-security.h"
#include "lib/audit.h"
#include "lib/log.h"

enum ipc_auth_result dir_login_decide(const struct dir_login_facts *f, const char **reason_r)
{
	*reason_r = NULL;
	if (f->ip_blocked) {
		*reason_r = "ip_blocked";
		return IPC_AUTH_FAIL;
	}
	if (!f->user_exists) {
		*reason_r = "unknown_user";
		return IPC_AUTH_FAIL;
	}
	if (f->app_password) {
		if (!f->app_scope_ok) {
			*reason_r = "scope";
			return IPC_AUTH_FAIL;
		}
	} else {
		if (!f->password_ok) {
			*reason_r = "wrong_password";
			return IPC_AUTH_FAIL;
		}
		/* With TOTP on, mail clients use app passwords; the main
		 * password is for the web login with a code (issue 6). */
		if (f->twofa_on) {
			*reason_r = "2fa_requires_app_password";
			return IPC_AUTH_FAIL;
		}
	}
	if (!f->allow_from_ok) {
		*reason_r = "not_allowed_from_ip";
		return IPC_AUTH_FAIL;
	}
	/* A soft lock refuses only the IPs that failed against the account,
	 * so an attacker cannot lock its owner out from elsewhere. */
	if (f->account_locked && (f->lock_mode == ACCOUNT_LOCK_HARD || f->ip_tried_account)) {
		*reason_r = "account_locked";
		return IPC_AUTH_FAIL;
	}
	/* Only now may the client learn that the password was right. App
	 * passwords are separate credentials: the main password's age does not
	 * apply to them. */
	if (!f->app_password && f->expired) {
		*reason_r = "expired";
		return IPC_AUTH_EXPIRED;
	}
	return IPC_AUTH_OK;
}

unsigned dir_login_delay_ms(unsigned base_ms, unsigned ip_failures)
{
	if (base_ms == 0 || ip_failures == 0)
		return 0;
	unsigned long long d = base_ms;
	for (unsigned i = 1; i < ip_failures && d < DIR_LOGIN_DELAY_MAX_MS; i++)
		d *= 2;
	return d > DIR_LOGIN_DELAY_MAX_MS ? DIR_LOGIN_DELAY_MAX_MS : (unsigned)d;
}

const char *dir_login_proto_name(enum ipc_auth_proto proto)
{
	switch (proto) {
	case IPC_PROTO_SMTP: return "smtp";
	case IPC_PROTO_IMAP: return "imap";
	case IPC_PROTO_POP3: return "pop3";
	}
	return NULL;
}

unsigned dir_login_proto_scope(enum ipc_auth_proto proto)
{
	switch (proto) {
	case IPC_PROTO_SMTP: return ACCOUNT_SCOPE_SMTP;
	case IPC_PROTO_IMAP: return ACCOUNT_SCOPE_IMAP;
	case IPC_PROTO_POP3: return ACCOUNT_SCOPE_POP3;
	}
	return 0;
}

void dir_security_time_format(time_t t, char *out, size_t size)
{
	struct tm tm;
	if (gmtime_r(&t, &tm) == NULL || strftime(out, size, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(out, size, "%lld", (long long)t);
}

/* Blocks key (an IP or an address) once its count reached max, unless it
 * is blocked already (a block is audited once). */
static void dir_security_block(struct account_db *db, const struct config *cfg,
			       enum account_block_kind kind, const char *key, int count,
			       unsigned max, time_t now)
{
	time_t until;
	char when[32], n[16];

	if (max == 0 || count < 0 || (unsigned)count < max)
		return;
	int ret = account_block_get(db, kind, key, now, &until);
	if (ret != 0) {
		if (ret < 0)
			log_error("login security: block state of %s unreadable", key);
		return;
	}
	until = now + (time_t)cfg->block_duration;
	if (account_block_set(db, kind, key, until, "too many failed logins") < 0) {
		log_error("login security: cannot block %s", key);
		return;
	}
	dir_security_time_format(until, when, sizeof(when));
	snprintf(n, sizeof(n), "%d", count);
	if (kind == ACCOUNT_BLOCK_IP) {
		log_warn("login security: ip=%s blocked until %s after %d failed logins", key,
			 when, count);
		audit_event("ip_blocked", "ip", key, "until", when, "failures", n,
			    "reason", "failed_logins", NULL);
	} else {
		const char *mode = cfg->account_lock == ACCOUNT_LOCK_HARD ? "hard" : "soft";
		log_warn("login security: account %s locked (%s) until %s after %d failed logins",
			 key, mode, when, count);
		audit_event("account_locked", "address", key, "until", when, "failures", n,
			    "mode", mode, NULL);
	}
}

int dir_security_record_failure(struct account_db *db, const struct config *cfg,
				const char *ip, const char *address, time_t now)
{
	int nip = 1;
	/* Front-ends that do not send the client IP yet say "unknown": one
	 * shared key that must not block all their clients at once. */
	if (strcmp(ip, DIR_LOGIN_IP_UNKNOWN) != 0) {
		nip = account_fail_record(db, ACCOUNT_BLOCK_IP, ip, address, now,
					  cfg->failure_window);
		if (nip < 0) {
			log_error("login security: cannot record a failure of ip=%s", ip);
			return -1;
		}
		dir_security_block(db, cfg, ACCOUNT_BLOCK_IP, ip, nip, cfg->max_failures_per_ip,
				   now);
	}
	if (address != NULL) {
		int nacct = account_fail_record(db, ACCOUNT_BLOCK_ACCOUNT, address, address, now,
						cfg->failure_window);
		if (nacct < 0)
			log_error("login security: cannot record a failure of %s", address);
		else
			dir_security_block(db, cfg, ACCOUNT_BLOCK_ACCOUNT, address, nacct,
					   cfg->max_failures_per_account, now);
	}
	return nip;
}
