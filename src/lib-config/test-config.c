/*
 * test-config.c — unit tests for the configuration parser: defaults,
 * every value type, and FILE:LINE errors.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "lib-config/config.h"

static char path[64];

static int write_conf(const char *text)
{
	snprintf(path, sizeof(path), "/tmp/postern-test-config-%ld.conf", (long)getpid());
	FILE *f = fopen(path, "w");
	if (f == NULL)
		return -1;
	fputs(text, f);
	fclose(f);
	return 0;
}

#define BASE "hostname = mx.example.test\ndata_dir = /var/lib/postern\n" \
	     "tls.cert = /etc/c.pem\ntls.key = /etc/k.pem\n"

static void test_defaults(void **state)
{
	struct config *cfg;
	char *errors;
	(void)state;
	assert_int_equal(write_conf(BASE "listen.smtp = 127.0.0.1:2525\n"), 0);
	assert_int_equal(config_load(path, &cfg, &errors), 0);
	assert_string_equal(cfg->hostname, "mx.example.test");
	assert_string_equal(cfg->mail_dir, "/var/lib/postern/mail");
	assert_string_equal(cfg->spool_dir, "/var/lib/postern/spool");
	assert_string_equal(cfg->db_path, "/var/lib/postern/postern.db");
	assert_string_equal(cfg->listen[LISTENER_SMTP], "127.0.0.1:2525");
	assert_null(cfg->listen[LISTENER_IMAP]);
	assert_true(cfg->max_message_size == 25u * 1024 * 1024);
	assert_int_equal(cfg->max_recipients, 100);
	assert_int_equal(cfg->command_timeout, 300);
	assert_int_equal(cfg->bare_lf, BARE_LF_REJECT);
	assert_true(cfg->quota_bytes == 1024ull * 1024 * 1024);
	assert_int_equal(cfg->quota_messages, 0);
	assert_int_equal(cfg->quota_exceeded, QUOTA_TEMPFAIL);
	assert_true(cfg->imap_max_append_size == 50ull * 1024 * 1024);
	assert_int_equal(cfg->imap_timeout, 1800);
	assert_int_equal(cfg->pop3_timeout, 600);
	config_free(&cfg);
	assert_null(cfg);
	unlink(path);
}

static void test_values(void **state)
{
	struct config *cfg;
	char *errors;
	(void)state;
	assert_int_equal(write_conf(BASE "# comment\n\n  smtp.max_message_size = 10M  \n"
				    "smtp.command_timeout = 2m\nsmtp.bare_lf = normalize\n"
				    "listen.submission = [::1]:2587\nlisten.imap = off\n"
				    "user = postern\nmailbox.quota = 0\nmailbox.quota_exceeded = bounce\n"
				    "imap.max_append_size = 1M\nmailbox.quota_messages = 500\n"),
			 0);
	assert_int_equal(config_load(path, &cfg, &errors), 0);
	assert_true(cfg->max_message_size == 10u * 1024 * 1024);
	assert_int_equal(cfg->command_timeout, 120);
	assert_int_equal(cfg->bare_lf, BARE_LF_NORMALIZE);
	assert_string_equal(cfg->listen[LISTENER_SUBMISSION], "[::1]:2587");
	assert_null(cfg->listen[LISTENER_IMAP]);
	assert_string_equal(cfg->run_user, "postern");
	assert_true(cfg->quota_bytes == 0);
	assert_int_equal(cfg->quota_exceeded, QUOTA_BOUNCE);
	assert_true(cfg->imap_max_append_size == 1024 * 1024);
	assert_int_equal(cfg->quota_messages, 500);
	config_free(&cfg);
	unlink(path);
}

struct error_case {
	const char *label;
	const char *text;
	const char *expect;   /* substring of the error text */
};

static void test_errors(void **state)
{
	static const struct error_case cases[] = {
		{ "unknown key", BASE "smtp.frobnicate = 1\n", ":5: unknown key \"smtp.frobnicate\"" },
		{ "duplicate", BASE "hostname = b\n", ":5: duplicate key \"hostname\"" },
		{ "no equals", BASE "just words\n", ":5: expected \"key = value\"" },
		{ "bad number", BASE "smtp.max_recipients = lots\n", ":5: smtp.max_recipients: must be" },
		{ "out of range", BASE "smtp.max_recipients = 0\n", "value out of range" },
		{ "bad size", BASE "smtp.max_message_size = 10Q\n", "must be a size" },
		{ "bad duration", BASE "smtp.data_timeout = soon\n", "must be a duration" },
		{ "bad address", BASE "listen.smtp = nowhere\n", "must be ADDR:PORT" },
		{ "port zero", BASE "listen.smtp = 127.0.0.1:0\n", "must be ADDR:PORT" },
		{ "relative path", BASE "mail_dir = mail\n", "must be an absolute path" },
		{ "bad enum", BASE "smtp.bare_lf = maybe\n", "must be reject or normalize" },
		{ "missing data_dir", "hostname = a\n", "data_dir is required" },
		{ "bad quota policy", BASE "mailbox.quota_exceeded = drop\n",
		  "must be tempfail or bounce" },
		{ "imap timeout too short", BASE "imap.timeout = 10\n", "value out of range" },
		{ "imap needs tls", "hostname = a\ndata_dir = /x\nlisten.imaps = 127.0.0.1:993\n",
		  "tls.cert and tls.key are required" },
		{ "missing tls", "hostname = a\ndata_dir = /x\nlisten.smtp = 127.0.0.1:25\n",
		  "tls.cert and tls.key are required" },
	};
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct config *cfg = NULL;
		char *errors = NULL;
		assert_int_equal(write_conf(cases[i].text), 0);
		if (config_load(path, &cfg, &errors) != -1)
			fail_msg("%s: accepted", cases[i].label);
		assert_null(cfg);
		if (strstr(errors, cases[i].expect) == NULL || strstr(errors, path) != errors)
			fail_msg("%s: got \"%s\"", cases[i].label, errors);
		free(errors);
	}
	unlink(path);
}

static void test_several_errors(void **state)
{
	struct config *cfg;
	char *errors;
	(void)state;
	assert_int_equal(write_conf(BASE "a = 1\nb = 2\n"), 0);
	assert_int_equal(config_load(path, &cfg, &errors), -1);
	assert_non_null(strstr(errors, ":5: unknown key \"a\""));
	assert_non_null(strstr(errors, ":6: unknown key \"b\""));
	free(errors);
	unlink(path);
	assert_int_equal(config_load("/nonexistent/postern.conf", &cfg, &errors), -1);
	assert_non_null(strstr(errors, "cannot read"));
	free(errors);
}

static void test_huge_key(void **state)
{
	/* An error whose text would not fit in the error buffer still fails
	 * the load (found by reading the code for the fuzzer). */
	struct config *cfg;
	char *errors;
	(void)state;
	size_t n = 70000;
	char *text = malloc(sizeof(BASE) + n + 8);
	assert_non_null(text);
	memcpy(text, BASE, sizeof(BASE) - 1);
	memset(text + sizeof(BASE) - 1, 'k', n);
	memcpy(text + sizeof(BASE) - 1 + n, " = 1\n", 6);
	assert_int_equal(write_conf(text), 0);
	free(text);
	assert_int_equal(config_load(path, &cfg, &errors), -1);
	assert_null(cfg);
	assert_non_null(strstr(errors, ":5: unknown key \"kkkk"));
	free(errors);
	unlink(path);
}

static void test_split_address(void **state)
{
	char host[64], port[8];
	(void)state;
	assert_int_equal(config_split_address("127.0.0.1:25", host, sizeof(host), port, sizeof(port)), 0);
	assert_string_equal(host, "127.0.0.1");
	assert_string_equal(port, "25");
	assert_int_equal(config_split_address("[::1]:587", host, sizeof(host), port, sizeof(port)), 0);
	assert_string_equal(host, "::1");
	assert_int_equal(config_split_address("::1:587", host, sizeof(host), port, sizeof(port)), -1);
	assert_int_equal(config_split_address("host:70000", host, sizeof(host), port, sizeof(port)), -1);
	assert_int_equal(config_split_address(":25", host, sizeof(host), port, sizeof(port)), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_values),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_several_errors),
		cmocka_unit_test(test_huge_key),
		cmocka_unit_test(test_split_address),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
