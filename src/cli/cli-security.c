/*
 * cli-security.c — `postern access` (IP allow/deny rules per listener) and
 * `postern security` (blocks after failed logins, and the audit log).
 *
 * Runs as the operator's `postern` process against cfg->db_path, through
 * lib-account/account-security.h: the running directory reads the same
 * tables, so rules, blocks and unblocks take effect for new connections
 * and logins without a restart. Changes are written to the audit log
 * (security.audit_log); `security log` reads it back, filtered.
 */
#include "cli/cli.h"

#include <arpa/inet.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <jansson.h>

#include "lib-account/account.h"
#include "lib-account/account-security.h"
#include "lib-config/config.h"
#include "lib/audit.h"
#include "lib/util.h"

#define EXIT_USAGE 2
/* Audit lines longer than this are skipped by `security log`. */
#define CLI_AUDIT_LINE_MAX (64u * 1024)

static const char access_usage[] =
	"usage: postern access allow|deny CIDR [--listener KIND]\n"
	"       postern access del CIDR [--listener KIND]\n"
	"       postern access list\n"
	"KIND: smtp, submission, submissions, imap, imaps, pop3, pop3s, http;\n"
	"without --listener the rule applies to every listener.\n";

static const char security_usage[] =
	"usage: postern security blocked\n"
	"       postern security unblock IP|IPV6-PREFIX/64|ADDRESS\n"
	"       postern security log [--address A] [--since T] [--json]\n"
	"T: 2026-11-23, 2026-11-23T17:03[:52][Z] (UTC), or a duration such as 1h, 30m,\n"
	"2d (since that long ago).\n";

static int cli_usage(const char *text)
{
	fputs(text, stderr);
	return EXIT_USAGE;
}

static bool cli_is_help(const char *arg)
{
	return strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0 || strcmp(arg, "help") == 0;
}

static int cli_db_open(const struct config *cfg, struct account_db **db_r)
{
	const char *error;
	if (account_db_open(cfg->db_path, true, db_r, &error) < 0)
		return cli_fail("%s", error);
	return 0;
}

static void cli_time_format(int64_t t, char *out, size_t size)
{
	time_t tt = (time_t)t;
	struct tm tm;
	if (gmtime_r(&tt, &tm) == NULL || strftime(out, size, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(out, size, "%lld", (long long)t);
}

/* ---- access ---------------------------------------------------------- */

static void cli_access_print_cb(const struct account_access_rule *rule, void *ctx)
{
	char when[32];
	(void)ctx;
	cli_time_format(rule->created, when, sizeof(when));
	printf("%-5s %-43s %-11s %s\n", rule->action == ACCOUNT_ACCESS_ALLOW ? "allow" : "deny",
	       rule->cidr, rule->listener != NULL ? rule->listener : "all", when);
}

int cli_access(const struct config *cfg, int argc, char **argv)
{
	struct account_db *db = NULL;
	const char *listener = NULL, *error, *reason;
	enum listener_kind kind;
	int status = EXIT_FAILURE;

	if (argc < 2 || cli_is_help(argv[1]))
		return argc < 2 ? cli_usage(access_usage) : (fputs(access_usage, stdout), 0);
	const char *op = argv[1];
	if (strcmp(op, "list") == 0) {
		if (argc != 2)
			return cli_usage(access_usage);
		if (cli_db_open(cfg, &db) != 0)
			return EXIT_FAILURE;
		if (account_access_list(db, cli_access_print_cb, NULL) < 0)
			cli_fail("cannot list the access rules");
		else
			status = 0;
		account_db_close(&db);
		return status;
	}
	bool add = strcmp(op, "allow") == 0 || strcmp(op, "deny") == 0;
	if ((!add && strcmp(op, "del") != 0) || argc < 3)
		return cli_usage(access_usage);
	const char *cidr = argv[2];
	for (int i = 3; i < argc; i++) {
		if (strcmp(argv[i], "--listener") == 0 && i + 1 < argc && listener == NULL)
			listener = argv[++i];
		else
			return cli_usage(access_usage);
	}
	if (listener != NULL && listener_kind_parse(listener, &kind) < 0)
		return cli_fail("unknown listener %s (smtp, submission, submissions, imap, imaps, "
				"pop3, pop3s, http)", listener);
	if (strchr(cidr, ',') != NULL)
		return cli_fail("%s: one CIDR per rule", cidr);
	if (account_cidr_list_valid(cidr, &reason) < 0)
		return cli_fail("%s: %s", cidr, reason);

	if (cli_db_open(cfg, &db) != 0)
		return EXIT_FAILURE;
	cli_audit_init(cfg);
	const char *where = listener != NULL ? listener : "all";
	if (add) {
		enum account_access_action action = strcmp(op, "allow") == 0
			? ACCOUNT_ACCESS_ALLOW : ACCOUNT_ACCESS_DENY;
		if (account_access_add(db, cidr, listener, action, &error) < 0) {
			cli_fail("%s", error);
			goto out;
		}
		audit_event("access_rule_added", "action", op, "cidr", cidr, "listener", where,
			    NULL);
		printf("%s %s on %s\n", op, cidr, listener != NULL ? listener : "every listener");
	} else {
		if (account_access_del(db, cidr, listener, &error) < 0) {
			cli_fail("%s (listener %s): %s", cidr, where, error);
			goto out;
		}
		audit_event("access_rule_removed", "cidr", cidr, "listener", where, NULL);
		printf("removed %s on %s\n", cidr, listener != NULL ? listener : "every listener");
	}
	status = 0;
out:
	account_db_close(&db);
	return status;
}

/* ---- security blocked / unblock ------------------------------------------ */

static void cli_block_print_cb(const struct account_block *b, void *ctx)
{
	char until[32];
	unsigned *n = ctx;
	if ((*n)++ == 0)
		printf("%-7s %-40s %-20s %8s  %s\n", "KIND", "KEY", "UNTIL", "FAILURES", "REASON");
	cli_time_format(b->until, until, sizeof(until));
	printf("%-7s %-40s %-20s %8u  %s\n", b->kind == ACCOUNT_BLOCK_IP ? "ip" : "account",
	       b->key, until, b->failures, b->reason != NULL ? b->reason : "");
}

static int cli_security_blocked(struct account_db *db)
{
	unsigned n = 0;
	if (account_block_list(db, time(NULL), cli_block_print_cb, &n) < 0)
		return cli_fail("cannot list the blocks");
	if (n == 0)
		printf("nothing is blocked\n");
	return 0;
}

static int cli_security_unblock(const struct config *cfg, struct account_db *db,
				const char *what)
{
	char key[SMTP_ADDRESS_MAX + 1];
	enum account_block_kind kind;

	snprintf(key, sizeof(key), "%s", what);
	if (strchr(key, '@') != NULL) {
		kind = ACCOUNT_BLOCK_ACCOUNT;
		str_lcase(key);
	} else if (account_throttle_key(what, key, sizeof(key)) == 0) {
		/* The key the directory blocked: "2001:DB8::1" and
		 * "2001:db8::/64" both name "2001:db8::/64". */
		kind = ACCOUNT_BLOCK_IP;
	} else {
		return cli_fail("%s: neither an IP address (or IPv6 /64) nor an account address",
				what);
	}
	int ret = account_block_del(db, kind, key);
	if (ret < 0)
		return cli_fail("%s: cannot unblock", key);
	if (ret == 0)
		return cli_fail("%s: not blocked", key);
	cli_audit_init(cfg);
	audit_event("unblocked", kind == ACCOUNT_BLOCK_IP ? "ip" : "address", key, "by", "cli",
		    NULL);
	printf("unblocked %s\n", key);
	return 0;
}

/* ---- security log ------------------------------------------------------- */

/* Reads n decimal digits at *p; -1 when they are not there. */
static int cli_digits(const char **p, unsigned n)
{
	int v = 0;
	for (unsigned i = 0; i < n; i++) {
		if ((*p)[i] < '0' || (*p)[i] > '9')
			return -1;
		v = v * 10 + ((*p)[i] - '0');
	}
	*p += n;
	return v;
}

/*
 * Parses an ISO 8601 UTC date/time as the audit log writes it, or as an
 * operator types it: "2026-11-23", "2026-11-23T17:03", "2026-11-23 17:03:52",
 * "2026-11-23T17:03:52.123Z" (a trailing Z is optional: times are UTC).
 * 0 and *ms_r (milliseconds since the epoch), or -1.
 */
static int cli_iso_parse(const char *s, int64_t *ms_r)
{
	struct tm tm = { 0 };
	int ms = 0, v;

	if ((v = cli_digits(&s, 4)) < 0 || *s++ != '-')
		return -1;
	tm.tm_year = v - 1900;
	if ((v = cli_digits(&s, 2)) < 1 || v > 12 || *s++ != '-')
		return -1;
	tm.tm_mon = v - 1;
	if ((v = cli_digits(&s, 2)) < 1 || v > 31)
		return -1;
	tm.tm_mday = v;
	if (*s == 'T' || *s == 't' || *s == ' ') {
		s++;
		if ((v = cli_digits(&s, 2)) < 0 || v > 23 || *s++ != ':')
			return -1;
		tm.tm_hour = v;
		if ((v = cli_digits(&s, 2)) < 0 || v > 59)
			return -1;
		tm.tm_min = v;
		if (*s == ':') {
			s++;
			if ((v = cli_digits(&s, 2)) < 0 || v > 60)
				return -1;
			tm.tm_sec = v;
			if (*s == '.') {
				s++;
				unsigned n = 0;
				for (; *s >= '0' && *s <= '9'; s++, n++)
					if (n < 3)
						ms = ms * 10 + (*s - '0');
				if (n == 0)
					return -1;
				for (; n < 3; n++)
					ms *= 10;
			}
		}
	}
	if (*s == 'Z' || *s == 'z')
		s++;
	if (*s != '\0')
		return -1;
	time_t t = timegm(&tm);
	if (t == (time_t)-1)
		return -1;
	*ms_r = (int64_t)t * 1000 + ms;
	return 0;
}

/* "90s", "30m", "1h", "2d", "1w", "1h30m": 0 and *seconds_r, or -1. */
static int cli_duration_parse(const char *s, int64_t *seconds_r)
{
	int64_t total = 0;
	if (*s == '\0')
		return -1;
	while (*s != '\0') {
		int64_t n = 0;
		const char *start = s;
		for (; *s >= '0' && *s <= '9'; s++) {
			if (n > INT64_C(1) << 40)
				return -1;
			n = n * 10 + (*s - '0');
		}
		if (s == start)
			return -1;
		switch (*s++) {
		case 's': break;
		case 'm': n *= 60; break;
		case 'h': n *= 3600; break;
		case 'd': n *= 86400; break;
		case 'w': n *= 7 * 86400; break;
		default: return -1;
		}
		total += n;
	}
	*seconds_r = total;
	return 0;
}

/* --since T: an ISO date/time or a duration back from now (ms). */
static int cli_since_parse(const char *s, int64_t *ms_r)
{
	int64_t secs;
	if (cli_iso_parse(s, ms_r) == 0)
		return 0;
	if (cli_duration_parse(s, &secs) < 0)
		return -1;
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	*ms_r = ((int64_t)now.tv_sec - secs) * 1000 + now.tv_nsec / 1000000;
	return 0;
}

static const char *cli_json_str(json_t *o, const char *key)
{
	return json_string_value(json_object_get(o, key));
}

/* Prints s with the control characters (< 0x20, 0x7f) as \xNN: audit
 * fields hold what clients sent (user names), which must not forge lines
 * or drive the operator's terminal. A backslash is doubled so the escape
 * cannot be faked either. */
static void cli_print_safe(const char *s)
{
	for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
		if (*p < 0x20 || *p == 0x7f)
			printf("\\x%02x", *p);
		else if (*p == '\\')
			fputs("\\\\", stdout);
		else
			putchar(*p);
	}
}

/* "2026-11-23T17:03:52Z login fail alice@x 192.0.2.1 imap wrong_password
 * mechanism=PLAIN": the main fields in order, the others as key=value;
 * control characters escaped (cli_print_safe). */
static void cli_audit_print_text(json_t *o)
{
	static const char *const main_keys[] = { "time", "event", "result", "address", "ip",
						 "protocol", "reason" };
	const char *t = cli_json_str(o, "time");
	const char *key;
	json_t *value;

	char ts[20];
	if (t != NULL && strlen(t) >= 19) {
		snprintf(ts, sizeof(ts), "%.19s", t);
		cli_print_safe(ts);
		putchar('Z');
	} else {
		cli_print_safe(t != NULL ? t : "-");
	}
	for (size_t i = 1; i < sizeof(main_keys) / sizeof(main_keys[0]); i++) {
		const char *v = cli_json_str(o, main_keys[i]);
		if (v != NULL) {
			putchar(' ');
			cli_print_safe(v);
		}
	}
	json_object_foreach(o, key, value) {
		bool is_main = false;
		for (size_t i = 0; i < sizeof(main_keys) / sizeof(main_keys[0]); i++)
			is_main = is_main || strcmp(key, main_keys[i]) == 0;
		if (is_main)
			continue;
		putchar(' ');
		cli_print_safe(key);
		putchar('=');
		if (json_is_string(value)) {
			cli_print_safe(json_string_value(value));
		} else {
			char *dump = json_dumps(value, JSON_COMPACT | JSON_ENCODE_ANY);
			cli_print_safe(dump != NULL ? dump : "?");
			free(dump);
		}
	}
	putchar('\n');
}

static int cli_security_log(const struct config *cfg, int argc, char **argv)
{
	const char *address = NULL;
	bool json = false, since_set = false;
	int64_t since = 0;

	for (int i = 2; i < argc; i++) {
		if (strcmp(argv[i], "--address") == 0 && i + 1 < argc) {
			address = argv[++i];
		} else if (strcmp(argv[i], "--since") == 0 && i + 1 < argc) {
			if (cli_since_parse(argv[++i], &since) < 0)
				return cli_fail("--since %s: not a date/time (2026-11-23T17:03:52Z) "
						"or a duration (1h)", argv[i]);
			since_set = true;
		} else if (strcmp(argv[i], "--json") == 0) {
			json = true;
		} else {
			return cli_usage(security_usage);
		}
	}
	FILE *f = fopen(cfg->audit_log, "r");
	if (f == NULL)
		return 0;       /* no event yet */
	char *line = malloc(CLI_AUDIT_LINE_MAX);
	if (line == NULL) {
		fclose(f);
		return cli_fail("out of memory");
	}
	bool skipping = false;
	while (fgets(line, CLI_AUDIT_LINE_MAX, f) != NULL) {
		size_t len = strlen(line);
		bool complete = len > 0 && line[len - 1] == '\n';
		if (skipping || !complete) {
			/* An over-long line is skipped to its end; a last line
			 * without a newline is still being written. */
			skipping = !complete && !feof(f);
			continue;
		}
		line[--len] = '\0';
		json_t *o = json_loadb(line, len, 0, NULL);
		if (o == NULL || !json_is_object(o)) {
			json_decref(o);
			continue;
		}
		int64_t t;
		const char *ts = cli_json_str(o, "time");
		const char *a = cli_json_str(o, "address");
		bool keep = (address == NULL || (a != NULL && strcasecmp(a, address) == 0)) &&
			    (!since_set || (ts != NULL && cli_iso_parse(ts, &t) == 0 && t >= since));
		if (keep) {
			if (json)
				printf("%s\n", line);
			else
				cli_audit_print_text(o);
		}
		json_decref(o);
	}
	free(line);
	fclose(f);
	return 0;
}

int cli_security(const struct config *cfg, int argc, char **argv)
{
	struct account_db *db = NULL;
	int status;

	if (argc < 2)
		return cli_usage(security_usage);
	if (cli_is_help(argv[1])) {
		fputs(security_usage, stdout);
		return 0;
	}
	if (strcmp(argv[1], "log") == 0)
		return cli_security_log(cfg, argc, argv);
	if (strcmp(argv[1], "blocked") == 0 && argc == 2) {
		if (cli_db_open(cfg, &db) != 0)
			return EXIT_FAILURE;
		status = cli_security_blocked(db);
	} else if (strcmp(argv[1], "unblock") == 0 && argc == 3) {
		if (cli_db_open(cfg, &db) != 0)
			return EXIT_FAILURE;
		status = cli_security_unblock(cfg, db, argv[2]);
	} else {
		return cli_usage(security_usage);
	}
	account_db_close(&db);
	return status;
}
