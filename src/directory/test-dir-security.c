/*
 * test-dir-security.c — unit tests of the directory's login rules
 * (dir-security.h): the decision table and the throttle delay.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "directory/dir-security.h"
#include "lib-account/account-security.h"

/* Facts of a login whose main password is right, from an allowed IP. */
#define GOOD .user_exists = true, .password_ok = true, .allow_from_ok = true
/* ... with a matching app password in scope instead. */
#define GOOD_APP .user_exists = true, .app_password = true, .app_scope_ok = true, \
	.allow_from_ok = true

struct decide_case {
	const char *label;
	struct dir_login_facts facts;
	enum ipc_auth_result result;
	const char *reason;     /* NULL for OK */
};

static const struct decide_case decide_cases[] = {
	{ "main password ok", { GOOD }, IPC_AUTH_OK, NULL },
	{ "app password ok", { GOOD_APP }, IPC_AUTH_OK, NULL },
	{ "blocked ip, right password", { GOOD, .ip_blocked = true }, IPC_AUTH_FAIL,
	  "ip_blocked" },
	{ "blocked ip wins over unknown user", { .ip_blocked = true }, IPC_AUTH_FAIL,
	  "ip_blocked" },
	{ "unknown user", { .allow_from_ok = true }, IPC_AUTH_FAIL, "unknown_user" },
	{ "wrong password", { .user_exists = true, .allow_from_ok = true }, IPC_AUTH_FAIL,
	  "wrong_password" },
	{ "wrong password, expired", { .user_exists = true, .allow_from_ok = true,
	  .expired = true }, IPC_AUTH_FAIL, "wrong_password" },
	{ "app password out of scope", { .user_exists = true, .app_password = true,
	  .allow_from_ok = true }, IPC_AUTH_FAIL,
	  "scope" },
	{ "main password with 2fa on", { GOOD, .twofa_on = true }, IPC_AUTH_FAIL,
	  "2fa_requires_app_password" },
	{ "app password with 2fa on", { GOOD_APP, .twofa_on = true }, IPC_AUTH_OK, NULL },
	{ "right password from elsewhere", { .user_exists = true, .password_ok = true }, IPC_AUTH_FAIL,
	  "not_allowed_from_ip" },
	{ "app password from elsewhere", { .user_exists = true, .app_password = true,
	  .app_scope_ok = true }, IPC_AUTH_FAIL,
	  "not_allowed_from_ip" },
	{ "soft lock, clean ip", { GOOD, .account_locked = true }, IPC_AUTH_OK, NULL },
	{ "soft lock, ip that failed", { GOOD, .account_locked = true,
	  .ip_tried_account = true }, IPC_AUTH_FAIL, "account_locked" },
	{ "hard lock, clean ip", { GOOD, .account_locked = true,
	  .lock_mode = ACCOUNT_LOCK_HARD }, IPC_AUTH_FAIL, "account_locked" },
	{ "hard lock, app password", { GOOD_APP, .account_locked = true,
	  .lock_mode = ACCOUNT_LOCK_HARD }, IPC_AUTH_FAIL, "account_locked" },
	{ "expired password", { GOOD, .expired = true }, IPC_AUTH_EXPIRED, "expired" },
	{ "expired, but from elsewhere", { .user_exists = true, .password_ok = true,
	  .expired = true },
	  IPC_AUTH_FAIL, "not_allowed_from_ip" },
	{ "expired, locked hard", { GOOD, .expired = true, .account_locked = true,
	  .lock_mode = ACCOUNT_LOCK_HARD }, IPC_AUTH_FAIL, "account_locked" },
	{ "app password ignores expiry", { GOOD_APP, .expired = true }, IPC_AUTH_OK, NULL },
};

static void test_decide(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(decide_cases) / sizeof(decide_cases[0]); i++) {
		const struct decide_case *c = &decide_cases[i];
		const char *reason = "unset";
		enum ipc_auth_result res = dir_login_decide(&c->facts, &reason);
		if (res != c->result)
			fail_msg("%s: result %d, expected %d", c->label, res, c->result);
		if (c->reason == NULL ? reason != NULL
				      : reason == NULL || strcmp(reason, c->reason) != 0)
			fail_msg("%s: reason %s, expected %s", c->label,
				 reason != NULL ? reason : "NULL",
				 c->reason != NULL ? c->reason : "NULL");
	}
}

struct delay_case {
	unsigned base, failures, expected;
};

static const struct delay_case delay_cases[] = {
	{ 250, 0, 0 },
	{ 0, 5, 0 },
	{ 250, 1, 250 },
	{ 250, 2, 500 },
	{ 250, 3, 1000 },
	{ 250, 5, 4000 },
	{ 250, 6, 8000 },
	{ 250, 7, 8000 },
	{ 250, 4000000000u, 8000 },
	{ 50, 4, 400 },
	{ 8000, 1, 8000 },
	{ 7000, 2, 8000 },
	{ 3, 12, 6144 },
};

static void test_delay(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(delay_cases) / sizeof(delay_cases[0]); i++) {
		const struct delay_case *c = &delay_cases[i];
		unsigned d = dir_login_delay_ms(c->base, c->failures);
		if (d != c->expected)
			fail_msg("delay(%u ms, %u failures) = %u, expected %u", c->base,
				 c->failures, d, c->expected);
	}
}

static void test_proto(void **state)
{
	(void)state;
	assert_string_equal(dir_login_proto_name(IPC_PROTO_SMTP), "smtp");
	assert_string_equal(dir_login_proto_name(IPC_PROTO_IMAP), "imap");
	assert_string_equal(dir_login_proto_name(IPC_PROTO_POP3), "pop3");
	assert_null(dir_login_proto_name((enum ipc_auth_proto)7));
	assert_int_equal(dir_login_proto_scope(IPC_PROTO_SMTP), ACCOUNT_SCOPE_SMTP);
	assert_int_equal(dir_login_proto_scope(IPC_PROTO_IMAP), ACCOUNT_SCOPE_IMAP);
	assert_int_equal(dir_login_proto_scope(IPC_PROTO_POP3), ACCOUNT_SCOPE_POP3);
	assert_int_equal(dir_login_proto_scope((enum ipc_auth_proto)7), 0);

	char when[32];
	dir_security_time_format(0, when, sizeof(when));
	assert_string_equal(when, "1970-01-01T00:00:00Z");
	dir_security_time_format(1795453432, when, sizeof(when));
	assert_string_equal(when, "2026-11-23T17:03:52Z");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_decide),
		cmocka_unit_test(test_delay),
		cmocka_unit_test(test_proto),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
