/*
 * cli-accounts.c — the `postern domain|user|alias` subcommands: thin
 * wrappers over lib-account that parse arguments, read passwords safely and
 * print one line per result; and the account security commands of
 * `postern user`: the password policy on add/passwd (--force overrides it,
 * audited), app passwords, TOTP enrolment (otpauth:// URI, a QR code on a
 * terminal, recovery codes) and per-account login allowlists.
 *
 * Runs as the operator's `postern` process (not the daemon), against
 * cfg->db_path, creating the database when missing. Passwords come from
 * stdin (--password-stdin, one line) or from the terminal with echo off,
 * twice; every copy is wiped after use and none is ever printed. The
 * secrets the security commands create (app passwords, the TOTP URI,
 * recovery codes) are printed once, to stdout, and wiped. Every security
 * change is written to the audit log (security.audit_log).
 */
#include "cli/cli-accounts.h"
#include "cli/cli.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include <qrencode.h>
#include <time.h>

#include "lib-account/account-security.h"
#include "lib-account/account.h"
#include "lib-store/quota.h"
#include "lib-config/config.h"
#include "lib/audit.h"
#include "lib/buf.h"
#include "lib/limits.h"
#include "lib/log.h"
#include "lib/util.h"

#define EXIT_USAGE 2

/* A buffer one octet larger than the longest password, plus the NUL, so a
 * too-long line can be told from one that just fits. */
#define PASSWORD_BUF_SIZE (PASSWORD_MAX + 2)

static int usage(FILE *out, const char *text, int status)
{
	fputs(text, out);
	return status;
}

static const char domain_usage[] =
	"usage: postern domain add DOMAIN\n"
	"       postern domain del DOMAIN\n"
	"       postern domain list\n";

static const char user_usage[] =
	"usage: postern user add ADDRESS [--password-stdin] [--force]\n"
	"       postern user passwd ADDRESS [--password-stdin] [--force]\n"
	"       postern user del ADDRESS\n"
	"       postern user list [DOMAIN]\n"
	"       postern user quota ADDRESS [SIZE|unlimited|default] [--messages N|unlimited|default]\n"
	"       postern user app-password add ADDRESS --name NAME [--scope smtp,imap,pop3]\n"
	"                                     [--allow-from CIDR[,CIDR...]]\n"
	"       postern user app-password list ADDRESS\n"
	"       postern user app-password revoke ADDRESS NAME\n"
	"       postern user 2fa enable|disable ADDRESS\n"
	"       postern user 2fa verify ADDRESS CODE\n"
	"       postern user allow-from ADDRESS [CIDR[,CIDR...] | --clear]\n"
	"--force sets a password the policy refuses (logged in the audit log).\n";

static const char alias_usage[] =
	"usage: postern alias add ALIAS TARGET[,TARGET...] [TARGET...]\n"
	"       postern alias del ALIAS\n"
	"       postern alias list\n"
	"ALIAS is local@domain, or @domain for a catch-all.\n";

static bool is_help(const char *arg)
{
	return strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0 || strcmp(arg, "help") == 0;
}

static int db_open(const struct config *cfg, struct account_db **db_r)
{
	const char *error;

	if (account_db_open(cfg->db_path, true, db_r, &error) < 0)
		return cli_fail("%s", error);
	return 0;
}

/* The address as the library stores it, for messages. */
static void lcase_copy(const char *in, char *out, size_t size)
{
	snprintf(out, size, "%s", in);
	str_lcase(out);
}

static void print_line_cb(const char *s, void *ctx)
{
	(void)ctx;
	printf("%s\n", s);
}

static void print_alias_cb(const char *alias, const char *targets, void *ctx)
{
	(void)ctx;
	printf("%s -> %s\n", alias, targets);
}

/* ---- passwords -------------------------------------------------------- */

/*
 * Reads one line from fd an octet at a time — no stdio buffer keeps a copy
 * of the password, and nothing after the line is consumed. Strips the LF and
 * a CR before it. 0, or -1 with *error_r.
 */
static int read_password_line(int fd, char buf[PASSWORD_BUF_SIZE], const char **error_r)
{
	size_t len = 0;
	bool got_any = false;

	for (;;) {
		char c;
		ssize_t n = read(fd, &c, 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			*error_r = "cannot read the password";
			goto fail;
		}
		if (n == 0) {
			if (!got_any) {
				*error_r = "no password given";
				goto fail;
			}
			break;
		}
		got_any = true;
		if (c == '\n')
			break;
		if (len + 1 >= PASSWORD_BUF_SIZE) {
			*error_r = "password too long";
			goto fail;
		}
		buf[len++] = c;
	}
	if (len > 0 && buf[len - 1] == '\r')
		len--;
	buf[len] = '\0';
	return 0;
fail:
	sodium_memzero(buf, PASSWORD_BUF_SIZE);
	return -1;
}

/* The terminal settings to put back if a signal arrives while echo is off. */
static struct termios saved_termios;

static void restore_termios_cb(int sig)
{
	/* Both are async-signal-safe. Then die of the signal as usual. */
	tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved_termios);
	signal(sig, SIG_DFL);
	raise(sig);
}

static const int echo_signals[] = { SIGINT, SIGQUIT, SIGTERM, SIGHUP };
#define ECHO_SIGNAL_COUNT (sizeof(echo_signals) / sizeof(echo_signals[0]))

static int tty_read_password(const char *prompt, char buf[PASSWORD_BUF_SIZE],
			     const char **error_r)
{
	struct sigaction sa, old[ECHO_SIGNAL_COUNT];
	struct termios noecho;

	if (tcgetattr(STDIN_FILENO, &saved_termios) < 0) {
		*error_r = "cannot read the terminal settings";
		return -1;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = restore_termios_cb;
	sigemptyset(&sa.sa_mask);
	for (size_t i = 0; i < ECHO_SIGNAL_COUNT; i++)
		sigaction(echo_signals[i], &sa, &old[i]);

	noecho = saved_termios;
	noecho.c_lflag &= (tcflag_t)~ECHO;
	noecho.c_lflag |= ECHONL;       /* still show the newline */
	fputs(prompt, stderr);
	fflush(stderr);
	int ret = -1;
	if (tcsetattr(STDIN_FILENO, TCSAFLUSH, &noecho) < 0)
		*error_r = "cannot turn off terminal echo";
	else
		ret = read_password_line(STDIN_FILENO, buf, error_r);
	tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved_termios);

	for (size_t i = 0; i < ECHO_SIGNAL_COUNT; i++)
		sigaction(echo_signals[i], &old[i], NULL);
	return ret;
}

/* Gets the new password into buf: from stdin with --password-stdin, else
 * from the terminal twice. 0, or -1 after printing the reason. */
static int get_password(bool from_stdin, char buf[PASSWORD_BUF_SIZE])
{
	char again[PASSWORD_BUF_SIZE];
	const char *error;
	int ret = -1;

	if (from_stdin) {
		if (read_password_line(STDIN_FILENO, buf, &error) < 0) {
			cli_fail("%s", error);
			return -1;
		}
	} else if (!isatty(STDIN_FILENO)) {
		cli_fail("stdin is not a terminal; use --password-stdin");
		return -1;
	} else {
		if (tty_read_password("New password: ", buf, &error) < 0) {
			cli_fail("%s", error);
			return -1;
		}
		if (tty_read_password("Repeat password: ", again, &error) < 0) {
			cli_fail("%s", error);
			goto out;
		}
		if (strcmp(buf, again) != 0) {
			cli_fail("passwords do not match");
			goto out;
		}
	}
	if (buf[0] == '\0') {
		cli_fail("empty password");
		goto out;
	}
	ret = 0;
out:
	sodium_memzero(again, sizeof(again));
	if (ret < 0)
		sodium_memzero(buf, PASSWORD_BUF_SIZE);
	return ret;
}

/* ---- postern domain --------------------------------------------------- */

int cli_domain(const struct config *cfg, int argc, char **argv)
{
	struct account_db *db = NULL;
	const char *error;
	char name[SMTP_DOMAIN_MAX + 1];
	int ret = EXIT_FAILURE;

	if (argc < 2)
		return usage(stderr, domain_usage, EXIT_USAGE);
	const char *sub = argv[1];
	if (is_help(sub))
		return usage(stdout, domain_usage, EXIT_SUCCESS);
	bool add = strcmp(sub, "add") == 0, del = strcmp(sub, "del") == 0;
	if ((add || del) && argc != 3)
		return usage(stderr, domain_usage, EXIT_USAGE);
	if (strcmp(sub, "list") == 0 && argc != 2)
		return usage(stderr, domain_usage, EXIT_USAGE);
	if (!add && !del && strcmp(sub, "list") != 0)
		return usage(stderr, domain_usage, EXIT_USAGE);

	if (db_open(cfg, &db) < 0)
		return EXIT_FAILURE;
	if (add || del) {
		lcase_copy(argv[2], name, sizeof(name));
		if ((add ? account_domain_add : account_domain_del)(db, argv[2], &error) < 0) {
			cli_fail("%s", error);
			goto out;
		}
		printf("%s domain %s\n", add ? "added" : "deleted", name);
	} else if (account_domain_list(db, print_line_cb, NULL) < 0) {
		cli_fail("cannot list domains");
		goto out;
	}
	ret = EXIT_SUCCESS;
out:
	account_db_close(&db);
	return ret;
}

/* ---- postern user ----------------------------------------------------- */

/* Refuses early what the library would refuse anyway, so the operator is
 * not asked for a password twice for nothing. 0 go on, -1 reported. */
static int user_precheck(struct account_db *db, const char *address, bool add)
{
	char addr[SMTP_ADDRESS_MAX + 1];
	char *hash = NULL;

	lcase_copy(address, addr, sizeof(addr));
	int found = account_user_get_hash(db, address, &hash);
	free(hash);
	const char *at = strrchr(addr, '@');
	if (found < 0)
		cli_fail("cannot read the account database");
	else if (add && found == 1)
		cli_fail("user %s already exists", addr);
	else if (!add && found == 0)
		cli_fail("no such user %s", addr);
	else if (add && at != NULL && account_domain_exists(db, at + 1) == 0)
		cli_fail("domain %s is not a local domain", at + 1);
	else
		return 0;
	return -1;
	return 0;
}

/* RFC 5321 4.5.1: every domain must accept mail for postmaster. The first
 * user of a domain without one becomes its postmaster (an ordinary alias:
 * change it with `alias del` / `alias add`). */
static void ensure_postmaster(struct account_db *db, const char *user)
{
	const char *at = strrchr(user, '@');
	const char *error;
	char alias[400];
	if (at == NULL || (size_t)snprintf(alias, sizeof(alias), "postmaster%s", at) >= sizeof(alias))
		return;
	if (strcmp(alias, user) == 0)
		return;
	/* Fails harmlessly when postmaster@ already is a user or an alias. */
	if (account_alias_add(db, alias, user, &error) == 0)
		printf("added alias %s -> %s (RFC 5321: every domain needs a postmaster)\n",
		       alias, user);
}

/* "1G", "unlimited" (0), "default" (-1). 0 or -1. */
static int quota_value(const char *s, bool size, int64_t *value_r)
{
	uint64_t v;
	if (strcmp(s, "default") == 0) {
		*value_r = -1;
		return 0;
	}
	if (strcmp(s, "unlimited") == 0) {
		*value_r = 0;
		return 0;
	}
	if ((size ? str_to_size(s, &v) : str_to_u64(s, &v)) < 0 || v > INT64_MAX / 2)
		return -1;
	*value_r = (int64_t)v;
	return 0;
}

static void print_quota_limit(const char *what, int64_t over, uint64_t def)
{
	uint64_t v = over >= 0 ? (uint64_t)over : def;
	if (v == 0)
		printf("%s: unlimited%s\n", what, over >= 0 ? "" : " (default)");
	else
		printf("%s: %" PRIu64 "%s\n", what, v, over >= 0 ? "" : " (default)");
}

/* postern user quota ADDRESS [SIZE] [--messages N]: shows, or sets, the
 * account's limits (an override of mailbox.quota / mailbox.quota_messages)
 * and shows its usage from the Maildir's maildirsize file. */
static int cli_user_quota(const struct config *cfg, int argc, char **argv)
{
	const char *address = NULL, *size = NULL, *messages = NULL;
	struct account_db *db = NULL;
	const char *error;
	int ret = EXIT_FAILURE;

	for (int i = 2; i < argc; i++) {
		if (strcmp(argv[i], "--messages") == 0 && i + 1 < argc)
			messages = argv[++i];
		else if (argv[i][0] == '-')
			return usage(stderr, user_usage, EXIT_USAGE);
		else if (address == NULL)
			address = argv[i];
		else if (size == NULL)
			size = argv[i];
		else
			return usage(stderr, user_usage, EXIT_USAGE);
	}
	if (address == NULL)
		return usage(stderr, user_usage, EXIT_USAGE);
	if (db_open(cfg, &db) < 0)
		return EXIT_FAILURE;
	char addr[SMTP_ADDRESS_MAX + 1];
	lcase_copy(address, addr, sizeof(addr));
	int64_t b = -1, m = -1;
	if (account_user_quota_get(db, addr, &b, &m) < 0) {
		cli_fail("cannot read the quota of %s", addr);
		goto out;
	}
	if (size != NULL || messages != NULL) {
		if (size != NULL && quota_value(size, true, &b) < 0) {
			cli_fail("%s: expected a size (e.g. 500M, 2G), unlimited or default", size);
			goto out;
		}
		if (messages != NULL && quota_value(messages, false, &m) < 0) {
			cli_fail("%s: expected a number, unlimited or default", messages);
			goto out;
		}
		if (account_user_quota_set(db, addr, b, m, &error) < 0) {
			cli_fail("%s", error);
			goto out;
		}
		printf("changed quota of user %s\n", addr);
	} else if (account_user_exists(db, addr) != 1) {
		cli_fail("no such user %s", addr);
		goto out;
	}
	print_quota_limit("storage limit (bytes)", b, cfg->quota_bytes);
	print_quota_limit("message limit", m, cfg->quota_messages);
	char root[4096];
	uint64_t ub, um;
	if (account_maildir_path(cfg->mail_dir, addr, root, sizeof(root)) == 0 &&
	    access(root, F_OK) == 0 && maildir_quota_usage(root, &ub, &um) == 0)
		printf("used: %" PRIu64 " bytes, %" PRIu64 " messages\n", ub, um);
	else
		printf("used: 0 bytes, 0 messages\n");
	ret = EXIT_SUCCESS;
out:
	account_db_close(&db);
	return ret;
}

/* ---- account security: app passwords, 2fa, allow-from ------------------ */

/* Starts the audit log for this command (security.audit_log). */
static void audit_open(const struct config *cfg)
{
	cli_audit_init(cfg);
}

/* "2026-11-23T17:03:52Z" */
static void format_time(int64_t t, char *out, size_t size)
{
	time_t tt = (time_t)t;
	struct tm tm;
	if (gmtime_r(&tt, &tm) == NULL || strftime(out, size, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(out, size, "%" PRId64, t);
}

static void print_app_password_cb(const struct account_app_password *ap, void *ctx)
{
	char scope[32], created[32], used[32];
	int *count = ctx;

	account_scope_format(ap->scope, scope, sizeof(scope));
	format_time(ap->created, created, sizeof(created));
	if (ap->last_used > 0)
		format_time(ap->last_used, used, sizeof(used));
	printf("%s\tscope %s\tcreated %s\tlast used ", ap->name, scope, created);
	if (ap->last_used > 0)
		printf("%s from %s", used, ap->last_ip != NULL ? ap->last_ip : "?");
	else
		printf("never");
	if (ap->allow_from != NULL)
		printf("\tallow-from %s", ap->allow_from);
	putchar('\n');
	(*count)++;
}

/* postern user app-password add ADDRESS --name NAME [--scope S] [--allow-from CIDRS]
 *                           list ADDRESS | revoke ADDRESS NAME */
static int cli_user_app_password(const struct config *cfg, int argc, char **argv)
{
	const char *pos[2] = { NULL, NULL };
	const char *name = NULL, *scope_arg = NULL, *allow = NULL;
	size_t npos = 0;
	struct account_db *db = NULL;
	char addr[SMTP_ADDRESS_MAX + 1];
	char password[ACCOUNT_APP_PASSWORD_CHARS + ACCOUNT_APP_PASSWORD_CHARS / 4 + 1];
	const char *error;
	unsigned scope = ACCOUNT_SCOPE_ALL;
	int ret = EXIT_FAILURE;

	if (argc < 3)
		return usage(stderr, user_usage, EXIT_USAGE);
	const char *op = argv[2];
	for (int i = 3; i < argc; i++) {
		if (strcmp(argv[i], "--name") == 0 && i + 1 < argc)
			name = argv[++i];
		else if (strcmp(argv[i], "--scope") == 0 && i + 1 < argc)
			scope_arg = argv[++i];
		else if (strcmp(argv[i], "--allow-from") == 0 && i + 1 < argc)
			allow = argv[++i];
		else if (argv[i][0] == '-' && argv[i][1] != '\0')
			return usage(stderr, user_usage, EXIT_USAGE);
		else if (npos < 2)
			pos[npos++] = argv[i];
		else
			return usage(stderr, user_usage, EXIT_USAGE);
	}
	bool add = strcmp(op, "add") == 0, list = strcmp(op, "list") == 0;
	bool revoke = strcmp(op, "revoke") == 0;
	if ((add && (npos != 1 || name == NULL)) || (list && npos != 1) ||
	    (revoke && npos != 2) || (!add && !list && !revoke) ||
	    (!add && (name != NULL || scope_arg != NULL || allow != NULL)))
		return usage(stderr, user_usage, EXIT_USAGE);
	if (add && account_scope_parse(scope_arg, &scope) < 0)
		return cli_fail("invalid scope \"%s\" (a list of smtp, imap, pop3)", scope_arg);
	if (add && allow != NULL && account_cidr_list_valid(allow, &error) < 0)
		return cli_fail("invalid CIDR list \"%s\": %s", allow, error);

	password[0] = '\0';
	lcase_copy(pos[0], addr, sizeof(addr));
	if (db_open(cfg, &db) < 0)
		return EXIT_FAILURE;
	audit_open(cfg);
	if (list) {
		int count = 0;
		if (account_user_exists(db, addr) != 1) {
			cli_fail("no such user %s", addr);
			goto out;
		}
		if (account_app_password_list(db, addr, print_app_password_cb, &count) < 0) {
			cli_fail("cannot list the app passwords of %s", addr);
			goto out;
		}
		if (count == 0)
			printf("no app passwords for %s\n", addr);
	} else if (revoke) {
		if (account_app_password_revoke(db, addr, pos[1], &error) < 0) {
			cli_fail("%s", error);
			goto out;
		}
		printf("revoked app password %s of %s\n", pos[1], addr);
		audit_event("app_password_revoked", "address", addr, "name", pos[1],
			    "source", "cli", NULL);
	} else {
		char scope_text[32];
		if (account_app_password_add(db, addr, name, scope, password, sizeof(password),
					     &error) < 0) {
			cli_fail("%s", error);
			goto out;
		}
		if (allow != NULL &&
		    account_app_password_set_allow_from(db, addr, name, allow, &error) < 0) {
			const char *ignored;
			cli_fail("%s", error);
			account_app_password_revoke(db, addr, name, &ignored);
			goto out;
		}
		account_scope_format(scope, scope_text, sizeof(scope_text));
		audit_event("app_password_created", "address", addr, "name", name,
			    "scope", scope_text, "allow_from", allow, "source", "cli", NULL);
		/* The password alone on the last line, for scripts. */
		printf("app password %s for %s (scope %s%s%s):\n", name, addr, scope_text,
		       allow != NULL ? ", from " : "", allow != NULL ? allow : "");
		printf("%s\n", password);
	}
	ret = EXIT_SUCCESS;
out:
	sodium_memzero(password, sizeof(password));
	account_db_close(&db);
	return ret;
}

static bool qr_dark(const QRcode *qr, int x, int y)
{
	return x >= 0 && y >= 0 && x < qr->width && y < qr->width &&
	       (qr->data[y * qr->width + x] & 1) != 0;
}

/* Draws text as a QR code with UTF-8 half blocks (two module rows per
 * line), black on white whatever the terminal's colours, with a quiet zone
 * of 2 modules. Nothing when the text cannot be encoded. */
static void print_qr(const char *text)
{
	static const char *const cell[4] = {
		" ",                    /* neither */
		"\xe2\x96\x84",         /* U+2584 lower half: bottom dark */
		"\xe2\x96\x80",         /* U+2580 upper half: top dark */
		"\xe2\x96\x88",         /* U+2588 full block */
	};
	const int quiet = 2;
	QRcode *qr = QRcode_encodeString(text, 0, QR_ECLEVEL_L, QR_MODE_8, 1);

	if (qr == NULL)
		return;
	for (int y = -quiet; y < qr->width + quiet; y += 2) {
		fputs("\033[30;47m", stdout);
		for (int x = -quiet; x < qr->width + quiet; x++)
			fputs(cell[(qr_dark(qr, x, y) ? 2 : 0) | (qr_dark(qr, x, y + 1) ? 1 : 0)],
			      stdout);
		fputs("\033[0m\n", stdout);
	}
	QRcode_free(qr);
}

/* postern user 2fa enable|disable ADDRESS, 2fa verify ADDRESS CODE */
static int cli_user_2fa(const struct config *cfg, int argc, char **argv)
{
	struct account_db *db = NULL;
	char addr[SMTP_ADDRESS_MAX + 1];
	char uri[1024];
	char codes[ACCOUNT_RECOVERY_CODES][16];
	enum account_2fa_state state;
	const char *error;
	int ret = EXIT_FAILURE;

	if (argc < 3)
		return usage(stderr, user_usage, EXIT_USAGE);
	const char *op = argv[2];
	bool enable = strcmp(op, "enable") == 0, disable = strcmp(op, "disable") == 0;
	bool verify = strcmp(op, "verify") == 0;
	if (((enable || disable) && argc != 4) || (verify && argc != 5) ||
	    (!enable && !disable && !verify))
		return usage(stderr, user_usage, EXIT_USAGE);

	memset(codes, 0, sizeof(codes));
	uri[0] = '\0';
	lcase_copy(argv[3], addr, sizeof(addr));
	if (db_open(cfg, &db) < 0)
		return EXIT_FAILURE;
	audit_open(cfg);
	if (account_user_exists(db, addr) != 1) {
		cli_fail("no such user %s", addr);
		goto out;
	}
	if (enable) {
		if (account_2fa_enable(db, addr, uri, sizeof(uri), codes, &error) < 0) {
			cli_fail("%s", error);
			goto out;
		}
		audit_event("2fa_enrolment_started", "address", addr, "source", "cli", NULL);
		printf("2fa enrolment started for %s\n", addr);
		printf("add this account to an authenticator app (provisioning URI):\n");
		printf("%s\n", uri);
		if (isatty(STDOUT_FILENO))
			print_qr(uri);
		printf("recovery codes (each works once; keep them somewhere safe):\n");
		for (int i = 0; i < ACCOUNT_RECOVERY_CODES; i++)
			printf("%s\n", codes[i]);
		printf("2fa is not on yet: confirm with `postern user 2fa verify %s CODE` "
		       "using a code from the app\n", addr);
	} else if (disable) {
		if (account_2fa_disable(db, addr, &error) < 0) {
			cli_fail("%s", error);
			goto out;
		}
		audit_event("2fa_disabled", "address", addr, "source", "cli", NULL);
		printf("2fa is off for %s\n", addr);
	} else {
		if (account_2fa_state(db, addr, &state) < 0) {
			cli_fail("cannot read the 2fa state of %s", addr);
			goto out;
		}
		if (state == ACCOUNT_2FA_OFF) {
			cli_fail("2fa is not enabled for %s (run `postern user 2fa enable` first)",
				 addr);
			goto out;
		}
		int r = account_2fa_verify(db, addr, argv[4], time(NULL));
		if (r < 0) {
			cli_fail("cannot check the code for %s", addr);
			goto out;
		}
		if (r == 0) {
			cli_fail("invalid or already used code for %s", addr);
			goto out;
		}
		if (state == ACCOUNT_2FA_PENDING)
			audit_event("2fa_enabled", "address", addr, "source", "cli", NULL);
		printf("2fa is on for %s\n", addr);
	}
	ret = EXIT_SUCCESS;
out:
	sodium_memzero(uri, sizeof(uri));
	sodium_memzero(codes, sizeof(codes));
	account_db_close(&db);
	return ret;
}

/* postern user allow-from ADDRESS [CIDR[,CIDR...]... | --clear] */
static int cli_user_allow_from(const struct config *cfg, int argc, char **argv)
{
	struct account_db *db = NULL;
	struct buf list;
	char addr[SMTP_ADDRESS_MAX + 1];
	const char *error;
	bool clear = false;
	int ret = EXIT_FAILURE;

	if (argc < 3 || argv[2][0] == '-')
		return usage(stderr, user_usage, EXIT_USAGE);
	buf_init(&list, ACCOUNT_CIDR_LIST_MAX + 1);
	for (int i = 3; i < argc; i++) {
		if (strcmp(argv[i], "--clear") == 0) {
			clear = true;
		} else if (argv[i][0] == '-' && argv[i][1] != '\0') {
			buf_free(&list);
			return usage(stderr, user_usage, EXIT_USAGE);
		} else if ((list.len > 0 && buf_append(&list, ",", 1) < 0) ||
			   buf_append_str(&list, argv[i]) < 0) {
			buf_free(&list);
			return cli_fail("CIDR list too long");
		}
	}
	if (clear && list.len > 0) {
		buf_free(&list);
		return usage(stderr, user_usage, EXIT_USAGE);
	}
	lcase_copy(argv[2], addr, sizeof(addr));
	if (db_open(cfg, &db) < 0)
		goto out;
	audit_open(cfg);
	if (!clear && list.len == 0) {
		char *cidrs = NULL;
		if (account_user_exists(db, addr) != 1) {
			cli_fail("no such user %s", addr);
			goto out;
		}
		int r = account_allow_from_get(db, addr, &cidrs);
		if (r < 0) {
			cli_fail("cannot read the login allowlist of %s", addr);
			goto out;
		}
		if (r == 0)
			printf("%s may log in from anywhere\n", addr);
		else
			printf("%s may log in from %s\n", addr, cidrs);
		free(cidrs);
		ret = EXIT_SUCCESS;
		goto out;
	}
	if (account_allow_from_set(db, addr, clear ? NULL : list.data, &error) < 0) {
		cli_fail("%s", error);
		goto out;
	}
	char *stored = NULL;
	if (!clear && account_allow_from_get(db, addr, &stored) != 1) {
		cli_fail("cannot read back the login allowlist of %s", addr);
		goto out;
	}
	audit_event("allow_from_changed", "address", addr, "allow_from", clear ? "" : stored,
		    "source", "cli", NULL);
	if (clear)
		printf("%s may log in from anywhere\n", addr);
	else
		printf("%s may log in from %s\n", addr, stored);
	free(stored);
	ret = EXIT_SUCCESS;
out:
	buf_free(&list);
	account_db_close(&db);
	return ret;
}

int cli_user(const struct config *cfg, int argc, char **argv)
{
	struct account_db *db = NULL;
	const char *args[2];
	size_t nargs = 0;
	bool password_stdin = false, force = false;
	char password[PASSWORD_BUF_SIZE];
	char addr[SMTP_ADDRESS_MAX + 1];
	const char *error;
	int ret = EXIT_FAILURE;

	if (argc < 2)
		return usage(stderr, user_usage, EXIT_USAGE);
	const char *sub = argv[1];
	if (is_help(sub))
		return usage(stdout, user_usage, EXIT_SUCCESS);
	if (strcmp(sub, "quota") == 0)
		return cli_user_quota(cfg, argc, argv);
	if (strcmp(sub, "app-password") == 0)
		return cli_user_app_password(cfg, argc, argv);
	if (strcmp(sub, "2fa") == 0)
		return cli_user_2fa(cfg, argc, argv);
	if (strcmp(sub, "allow-from") == 0)
		return cli_user_allow_from(cfg, argc, argv);
	for (int i = 2; i < argc; i++) {
		if (strcmp(argv[i], "--password-stdin") == 0)
			password_stdin = true;
		else if (strcmp(argv[i], "--force") == 0)
			force = true;
		else if (argv[i][0] == '-' && argv[i][1] != '\0')
			return usage(stderr, user_usage, EXIT_USAGE);
		else if (nargs < 2)
			args[nargs++] = argv[i];
		else
			return usage(stderr, user_usage, EXIT_USAGE);
	}
	bool add = strcmp(sub, "add") == 0, passwd = strcmp(sub, "passwd") == 0;
	bool del = strcmp(sub, "del") == 0, list = strcmp(sub, "list") == 0;
	if (((add || passwd) && nargs != 1) || (del && (nargs != 1 || password_stdin)) ||
	    (list && (nargs > 1 || password_stdin)) || (!add && !passwd && !del && !list) ||
	    (force && !add && !passwd))
		return usage(stderr, user_usage, EXIT_USAGE);

	password[0] = '\0';
	if (db_open(cfg, &db) < 0)
		return EXIT_FAILURE;
	if (list) {
		if (nargs == 1 && account_domain_exists(db, args[0]) != 1) {
			char name[SMTP_DOMAIN_MAX + 1];
			lcase_copy(args[0], name, sizeof(name));
			cli_fail("domain %s is not a local domain", name);
			goto out;
		}
		if (account_user_list(db, nargs == 1 ? args[0] : NULL, print_line_cb, NULL) < 0) {
			cli_fail("cannot list users");
			goto out;
		}
		ret = EXIT_SUCCESS;
		goto out;
	}
	lcase_copy(args[0], addr, sizeof(addr));
	if (del) {
		if (account_user_del(db, args[0], &error) < 0) {
			cli_fail("%s", error);
			goto out;
		}
		printf("deleted user %s\n", addr);
		ret = EXIT_SUCCESS;
		goto out;
	}
	if (user_precheck(db, args[0], add) < 0 || get_password(password_stdin, password) < 0)
		goto out;
	if (!force) {
		struct account_password_policy policy = {
			.min_length = cfg->password_min_length,
			.max_age_days = cfg->password_max_age / 86400,
		};
		const char *reason;
		if (account_password_check(addr, password, &policy, &reason) < 0) {
			cli_fail("%s; choose another (or override with --force)", reason);
			goto out;
		}
	}
	int r = add ? account_user_add(db, args[0], password, &error) :
		account_user_passwd(db, args[0], password, &error);
	if (r < 0) {
		cli_fail("%s", error);
		goto out;
	}
	printf(add ? "added user %s\n" : "changed password of user %s\n", addr);
	audit_open(cfg);
	audit_event("password_changed", "address", addr, "command", add ? "user add" : "user passwd",
		    "forced", force ? "yes" : NULL, "source", "cli", NULL);
	if (force)
		log_warn("user %s: password set with --force, bypassing the password policy",
			 addr);
	if (add)
		ensure_postmaster(db, addr);
	ret = EXIT_SUCCESS;
out:
	sodium_memzero(password, sizeof(password));
	account_db_close(&db);
	return ret;
}

/* ---- postern alias ---------------------------------------------------- */

int cli_alias(const struct config *cfg, int argc, char **argv)
{
	struct account_db *db = NULL;
	struct buf targets;
	char name[SMTP_ADDRESS_MAX + 1];
	const char *error;
	int ret = EXIT_FAILURE;

	if (argc < 2)
		return usage(stderr, alias_usage, EXIT_USAGE);
	const char *sub = argv[1];
	if (is_help(sub))
		return usage(stdout, alias_usage, EXIT_SUCCESS);
	bool add = strcmp(sub, "add") == 0, del = strcmp(sub, "del") == 0;
	bool list = strcmp(sub, "list") == 0;
	if ((add && argc < 4) || (del && argc != 3) || (list && argc != 2) ||
	    (!add && !del && !list))
		return usage(stderr, alias_usage, EXIT_USAGE);

	buf_init(&targets, (size_t)ALIAS_EXPAND_MAX * (SMTP_ADDRESS_MAX + 1));
	if (add) {
		/* "alias add a@x b@y,c@z d@w": every argument after the alias
		 * is part of the target list. */
		for (int i = 3; i < argc; i++) {
			if ((i > 3 && buf_append(&targets, ",", 1) < 0) ||
			    buf_append_str(&targets, argv[i]) < 0) {
				cli_fail("target list too long");
				goto out;
			}
		}
	}
	if (db_open(cfg, &db) < 0)
		goto out;
	if (list) {
		if (account_alias_list(db, print_alias_cb, NULL) < 0) {
			cli_fail("cannot list aliases");
			goto out;
		}
		ret = EXIT_SUCCESS;
		goto out;
	}
	lcase_copy(argv[2], name, sizeof(name));
	if (add) {
		if (account_alias_add(db, argv[2], targets.data, &error) < 0) {
			cli_fail("%s", error);
			goto out;
		}
		printf("added alias %s\n", name);
	} else {
		if (account_alias_del(db, argv[2], &error) < 0) {
			cli_fail("%s", error);
			goto out;
		}
		printf("deleted alias %s\n", name);
	}
	ret = EXIT_SUCCESS;
out:
	buf_free(&targets);
	account_db_close(&db);
	return ret;
}
