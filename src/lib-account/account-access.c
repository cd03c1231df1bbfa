/*
 * account-access.c — who may connect and who may try to log in: CIDR lists
 * (IPv4 and IPv6), the IP access rules of `postern access` with their
 * per-connection check, and the persistent failed-login counters and blocks
 * that throttle brute force (account-security.h).
 *
 * Runs in the directory process (account_access_check per connection, the
 * failure counters per failed login) and in the CLI (`postern access`,
 * `postern security blocked|unblock`). Owns the rows of access_rules,
 * auth_failures, ip_account_failures and blocks, and the per-db cache of
 * the access rules, refreshed when another connection changed the database
 * (PRAGMA data_version) so a rule added by the CLI applies to the next
 * connection without a restart.
 */
#include "lib-account/account-security.h"
#include "lib-account/account-private.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "lib/log.h"

/* ---- CIDR ------------------------------------------------------------------ */

struct cidr {
	int family;                     /* AF_INET or AF_INET6 */
	unsigned char addr[16];         /* network byte order; 4 used for IPv4 */
	unsigned prefix;
};

static const unsigned char v4mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

/* Parses an IPv4 or IPv6 address (len octets, no brackets); an IPv4-mapped
 * IPv6 address becomes IPv4. 0 or -1. */
static int ip_parse(const char *s, size_t len, struct cidr *c)
{
	char buf[INET6_ADDRSTRLEN + 1];

	if (len == 0 || len >= sizeof(buf))
		return -1;
	memcpy(buf, s, len);
	buf[len] = '\0';
	memset(c, 0, sizeof(*c));
	if (inet_pton(AF_INET, buf, c->addr) == 1) {
		c->family = AF_INET;
		c->prefix = 32;
		return 0;
	}
	if (inet_pton(AF_INET6, buf, c->addr) == 1) {
		c->family = AF_INET6;
		c->prefix = 128;
		if (memcmp(c->addr, v4mapped, sizeof(v4mapped)) == 0) {
			memmove(c->addr, c->addr + 12, 4);
			memset(c->addr + 4, 0, 12);
			c->family = AF_INET;
			c->prefix = 32;
		}
		return 0;
	}
	return -1;
}

/* Clears the bits after the prefix. */
static void cidr_mask(struct cidr *c)
{
	size_t bytes = c->family == AF_INET ? 4 : 16;
	for (size_t i = 0; i < bytes; i++) {
		unsigned first = (unsigned)i * 8;
		if (first >= c->prefix)
			c->addr[i] = 0;
		else if (c->prefix - first < 8)
			c->addr[i] &= (unsigned char)(0xff << (8 - (c->prefix - first)));
	}
}

/* One "ADDR" or "ADDR/PREFIX" of len octets. 0, or -1 with *reason_r. */
static int cidr_parse(const char *s, size_t len, struct cidr *c, const char **reason_r)
{
	const char *slash = memchr(s, '/', len);
	size_t alen = slash != NULL ? (size_t)(slash - s) : len;
	bool was_v6 = memchr(s, ':', alen) != NULL;

	if (ip_parse(s, alen, c) < 0) {
		*reason_r = "not an IPv4 or IPv6 address";
		return -1;
	}
	if (slash == NULL)
		return 0;
	const char *p = slash + 1, *end = s + len;
	unsigned prefix = 0;
	if (p == end || end - p > 3) {
		*reason_r = "invalid prefix length";
		return -1;
	}
	for (; p < end; p++) {
		if (*p < '0' || *p > '9') {
			*reason_r = "invalid prefix length";
			return -1;
		}
		prefix = prefix * 10 + (unsigned)(*p - '0');
	}
	/* "::ffff:192.0.2.0/120" is the IPv4 network 192.0.2.0/24. */
	if (was_v6 && c->family == AF_INET) {
		if (prefix < 96) {
			*reason_r = "prefix too short for an IPv4-mapped address";
			return -1;
		}
		prefix -= 96;
	}
	if (prefix > (c->family == AF_INET ? 32u : 128u)) {
		*reason_r = "prefix length out of range";
		return -1;
	}
	c->prefix = prefix;
	cidr_mask(c);
	return 0;
}

static bool cidr_contains(const struct cidr *net, const struct cidr *ip)
{
	if (net->family != ip->family)
		return false;
	unsigned full = net->prefix / 8, rest = net->prefix % 8;
	if (memcmp(net->addr, ip->addr, full) != 0)
		return false;
	if (rest == 0)
		return true;
	unsigned char mask = (unsigned char)(0xff << (8 - rest));
	return (net->addr[full] & mask) == (ip->addr[full] & mask);
}

/* The canonical text of c into out; 0 or -1 when it does not fit. */
static int cidr_format(const struct cidr *c, char *out, size_t size)
{
	char a[INET6_ADDRSTRLEN];
	if (inet_ntop(c->family, c->addr, a, sizeof(a)) == NULL)
		return -1;
	unsigned full = c->family == AF_INET ? 32 : 128;
	int n = c->prefix == full ? snprintf(out, size, "%s", a)
				  : snprintf(out, size, "%s/%u", a, c->prefix);
	return n < 0 || (size_t)n >= size ? -1 : 0;
}

int account_throttle_key(const char *ip, char *out, size_t size)
{
	struct cidr c;
	const char *reason;
	size_t len = ip != NULL ? strnlen(ip, ACCOUNT_THROTTLE_KEY_MAX) : 0;

	if (size > 0)
		out[0] = '\0';
	if (len == 0 || len >= ACCOUNT_THROTTLE_KEY_MAX || cidr_parse(ip, len, &c, &reason) < 0)
		return -1;
	/* A key typed back: only the form this function writes. */
	if (memchr(ip, '/', len) != NULL && c.prefix != (c.family == AF_INET ? 32u : 64u))
		return -1;
	c.prefix = c.family == AF_INET ? 32 : 64;
	cidr_mask(&c);
	if (cidr_format(&c, out, size) < 0) {
		if (size > 0)
			out[0] = '\0';
		return -1;
	}
	return 0;
}

/*
 * Walks a comma-separated list: calls item_cb for every entry (spaces and
 * tabs around it trimmed). Stops at the first invalid entry or when the
 * callback returns non-zero. 0 every entry valid, 1 the callback stopped,
 * -1 invalid (*reason_r).
 */
static int cidr_list_walk(const char *list, const char **reason_r,
			  int (*item_cb)(const struct cidr *c, void *ctx), void *ctx)
{
	const char *p = list;

	if (strnlen(list, ACCOUNT_CIDR_LIST_MAX + 1) > ACCOUNT_CIDR_LIST_MAX) {
		*reason_r = "CIDR list too long";
		return -1;
	}
	for (;;) {
		while (*p == ' ' || *p == '\t')
			p++;
		const char *end = strchr(p, ',');
		size_t len = end != NULL ? (size_t)(end - p) : strlen(p);
		while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t'))
			len--;
		if (len == 0) {
			*reason_r = "empty entry in the CIDR list";
			return -1;
		}
		struct cidr c;
		if (cidr_parse(p, len, &c, reason_r) < 0)
			return -1;
		if (item_cb != NULL && item_cb(&c, ctx) != 0)
			return 1;
		if (end == NULL)
			return 0;
		p = end + 1;
	}
}

int account_cidr_list_valid(const char *list, const char **reason_r)
{
	if (list == NULL || *list == '\0') {
		*reason_r = "empty CIDR list";
		return -1;
	}
	return cidr_list_walk(list, reason_r, NULL, NULL) == 0 ? 0 : -1;
}

struct match_ctx {
	struct cidr ip;
	bool found;
};

static int match_item_cb(const struct cidr *c, void *ctx)
{
	struct match_ctx *m = ctx;
	if (cidr_contains(c, &m->ip))
		m->found = true;
	return 0;   /* go on: an invalid entry further on voids the list */
}

bool account_cidr_list_match(const char *list, const char *ip)
{
	struct match_ctx m = { .found = false };
	const char *why;

	if (list == NULL || ip == NULL || ip_parse(ip, strlen(ip), &m.ip) < 0)
		return false;
	if (cidr_list_walk(list, &why, match_item_cb, &m) != 0)
		return false;
	return m.found;
}

struct canon_ctx {
	char *out;
	size_t size, len;
	bool overflow;
};

static int canon_item_cb(const struct cidr *c, void *ctx)
{
	struct canon_ctx *k = ctx;
	char one[INET6_ADDRSTRLEN + 8];

	if (cidr_format(c, one, sizeof(one)) < 0) {
		k->overflow = true;
		return 1;
	}
	int n = snprintf(k->out + k->len, k->size - k->len, "%s%s", k->len > 0 ? "," : "", one);
	if (n < 0 || (size_t)n >= k->size - k->len) {
		k->overflow = true;
		return 1;
	}
	k->len += (size_t)n;
	return 0;
}

int account_cidr_list_canon(const char *list, char *out, size_t size, const char **reason_r)
{
	struct canon_ctx k = { .out = out, .size = size };

	if (size == 0) {
		*reason_r = "no room";
		return -1;
	}
	out[0] = '\0';
	if (list == NULL || *list == '\0')
		return 0;
	int r = cidr_list_walk(list, reason_r, canon_item_cb, &k);
	if (r == 0)
		return 0;
	if (k.overflow)
		*reason_r = "CIDR list too long";
	out[0] = '\0';
	return -1;
}

/* ---- access rules -------------------------------------------------------- */

/* Listener kind names, as in `postern init` and the config. */
static const char *const listener_kinds[] = {
	"smtp", "submission", "submissions", "imap", "imaps", "pop3", "pop3s", "http",
};

#define LISTENER_NAME_MAX 16

struct access_rule {
	struct cidr net;
	char listener[LISTENER_NAME_MAX];       /* "": every listener */
	enum account_access_action action;
};

struct account_access_cache {
	int64_t data_version;
	size_t count;
	struct access_rule rules[];
};

void account_access_cache_free(struct account_db *db)
{
	free(db->access);
	db->access = NULL;
}

static int listener_check(struct account_db *db, const char *listener, const char **error_r)
{
	if (listener == NULL || *listener == '\0')
		return 0;
	for (size_t i = 0; i < sizeof(listener_kinds) / sizeof(listener_kinds[0]); i++)
		if (strcmp(listener, listener_kinds[i]) == 0)
			return 0;
	char shown[96];
	*error_r = account_error(db, "unknown listener \"%s\" (smtp, submission, submissions, "
				 "imap, imaps, pop3, pop3s, http)",
				 account_printable(listener, shown, sizeof(shown)));
	return -1;
}

/* One CIDR in canonical form into out. 0, or -1 with *error_r. */
static int cidr_canon_one(struct account_db *db, const char *cidr, char *out, size_t size,
			  const char **error_r)
{
	const char *why;
	char shown[96];

	if (cidr == NULL || strchr(cidr, ',') != NULL) {
		*error_r = account_error(db, "one CIDR expected");
		return -1;
	}
	if (account_cidr_list_canon(cidr, out, size, &why) < 0 || out[0] == '\0') {
		*error_r = account_error(db, "invalid CIDR \"%s\": %s",
					 account_printable(cidr, shown, sizeof(shown)),
					 out[0] == '\0' && cidr[0] == '\0' ? "empty" : why);
		return -1;
	}
	return 0;
}

static int64_t data_version(struct account_db *db)
{
	sqlite3_stmt *st = account_sec_stmt(db, SEC_DATA_VERSION, "PRAGMA data_version");
	int64_t v = -1;
	if (st == NULL)
		return -1;
	if (sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int64(st, 0);
	else
		account_sql_error(db, "reading the data version");
	account_stmt_done(st);
	return v;
}

/* Reads the rules into a new cache. 0 or -1. */
static int access_load(struct account_db *db, int64_t version)
{
	struct account_access_cache *c = NULL;
	size_t cap = 16;
	int rc;

	sqlite3_stmt *st = account_sec_stmt(db, SEC_ACCESS_ALL,
		"SELECT cidr, listener, action FROM access_rules");
	if (st == NULL)
		return -1;
	c = malloc(sizeof(*c) + cap * sizeof(c->rules[0]));
	if (c == NULL)
		goto fail;
	c->count = 0;
	c->data_version = version;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *cidr = (const char *)sqlite3_column_text(st, 0);
		const char *listener = (const char *)sqlite3_column_text(st, 1);
		const char *why;
		struct access_rule r;
		if (cidr == NULL || cidr_parse(cidr, strlen(cidr), &r.net, &why) < 0) {
			log_warn("account: ignoring invalid access rule \"%s\"",
				 cidr != NULL ? cidr : "");
			continue;
		}
		snprintf(r.listener, sizeof(r.listener), "%s", listener != NULL ? listener : "");
		r.action = sqlite3_column_int(st, 2) == ACCOUNT_ACCESS_DENY ? ACCOUNT_ACCESS_DENY
									   : ACCOUNT_ACCESS_ALLOW;
		if (c->count == cap) {
			cap *= 2;
			struct account_access_cache *n =
				realloc(c, sizeof(*c) + cap * sizeof(c->rules[0]));
			if (n == NULL)
				goto fail;
			c = n;
		}
		c->rules[c->count++] = r;
	}
	if (rc != SQLITE_DONE) {
		account_sql_error(db, "reading the access rules");
		goto fail;
	}
	account_stmt_done(st);
	free(db->access);
	db->access = c;
	return 0;
fail:
	account_stmt_done(st);
	free(c);
	return -1;
}

int account_access_check(struct account_db *db, const char *ip, const char *listener)
{
	struct cidr addr;
	bool have_addr;

	int64_t version = data_version(db);
	if (version < 0)
		return -1;
	if ((db->access == NULL || db->access->data_version != version) &&
	    access_load(db, version) < 0)
		return -1;
	if (listener == NULL)
		listener = "";
	/* An address we cannot parse matches no rule: deny rules miss it and
	 * allow rules do not admit it. */
	have_addr = ip != NULL && ip_parse(ip, strlen(ip), &addr) == 0;

	bool listener_allows = false, listener_admits = false;
	bool global_allows = false, global_admits = false;
	for (size_t i = 0; i < db->access->count; i++) {
		const struct access_rule *r = &db->access->rules[i];
		bool global = r->listener[0] == '\0';
		if (!global && strcmp(r->listener, listener) != 0)
			continue;
		bool hit = have_addr && cidr_contains(&r->net, &addr);
		if (r->action == ACCOUNT_ACCESS_DENY) {
			if (hit)
				return 0;
		} else if (global) {
			global_allows = true;
			global_admits = global_admits || hit;
		} else {
			listener_allows = true;
			listener_admits = listener_admits || hit;
		}
	}
	if (listener_allows)
		return listener_admits ? 1 : 0;
	if (global_allows)
		return global_admits ? 1 : 0;
	return 1;
}

int account_access_add(struct account_db *db, const char *cidr, const char *listener,
		       enum account_access_action action, const char **error_r)
{
	char canon[INET6_ADDRSTRLEN + 8];

	if (cidr_canon_one(db, cidr, canon, sizeof(canon), error_r) < 0 ||
	    listener_check(db, listener, error_r) < 0)
		return -1;
	sqlite3_stmt *st = account_sec_stmt(db, SEC_ACCESS_PUT,
		"INSERT INTO access_rules (cidr, listener, action, created) VALUES (?1, ?2, ?3, ?4)"
		" ON CONFLICT(cidr, listener) DO UPDATE SET action = ?3, created = ?4");
	if (st == NULL) {
		*error_r = db->error;
		return -1;
	}
	sqlite3_bind_text(st, 1, canon, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, listener != NULL ? listener : "", -1, SQLITE_STATIC);
	sqlite3_bind_int(st, 3, action == ACCOUNT_ACCESS_DENY ? ACCOUNT_ACCESS_DENY
							       : ACCOUNT_ACCESS_ALLOW);
	sqlite3_bind_int64(st, 4, (int64_t)time(NULL));
	if (account_sec_write(db, st, "adding an access rule") != 0) {
		*error_r = db->error;
		return -1;
	}
	/* Our own writes do not move data_version: drop the cache. */
	account_access_cache_free(db);
	return 0;
}

int account_access_del(struct account_db *db, const char *cidr, const char *listener,
		       const char **error_r)
{
	char canon[INET6_ADDRSTRLEN + 8];

	if (cidr_canon_one(db, cidr, canon, sizeof(canon), error_r) < 0 ||
	    listener_check(db, listener, error_r) < 0)
		return -1;
	sqlite3_stmt *st = account_sec_stmt(db, SEC_ACCESS_DEL,
		"DELETE FROM access_rules WHERE cidr = ?1 AND listener = ?2");
	if (st == NULL) {
		*error_r = db->error;
		return -1;
	}
	sqlite3_bind_text(st, 1, canon, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, listener != NULL ? listener : "", -1, SQLITE_STATIC);
	if (account_sec_write(db, st, "deleting an access rule") != 0) {
		*error_r = db->error;
		return -1;
	}
	account_access_cache_free(db);
	if (sqlite3_changes(db->sql) == 0) {
		if (listener != NULL && *listener != '\0')
			*error_r = account_error(db, "no such rule: %s on listener %s", canon,
						 listener);
		else
			*error_r = account_error(db, "no such rule: %s", canon);
		return -1;
	}
	return 0;
}

int account_access_list(struct account_db *db,
			void (*cb)(const struct account_access_rule *rule, void *ctx), void *ctx)
{
	int rc;

	sqlite3_stmt *list = account_sec_stmt(db, SEC_ACCESS_LIST,
		"SELECT cidr, listener, action, created FROM access_rules"
		" ORDER BY listener, action DESC, cidr");
	if (list == NULL)
		return -1;
	while ((rc = sqlite3_step(list)) == SQLITE_ROW) {
		const char *listener = (const char *)sqlite3_column_text(list, 1);
		struct account_access_rule r = {
			.cidr = (const char *)sqlite3_column_text(list, 0),
			.listener = listener != NULL && *listener != '\0' ? listener : NULL,
			.action = sqlite3_column_int(list, 2) == ACCOUNT_ACCESS_DENY
					  ? ACCOUNT_ACCESS_DENY : ACCOUNT_ACCESS_ALLOW,
			.created = sqlite3_column_int64(list, 3),
		};
		cb(&r, ctx);
	}
	if (rc != SQLITE_DONE)
		account_sql_error(db, "listing access rules");
	account_stmt_done(list);
	return rc == SQLITE_DONE ? 0 : -1;
}

/* ---- failed logins and blocks -------------------------------------------- */

/* Forgets failures older than a day now and then (1 call in 64), so the
 * tables of a server under a spread-out attack do not grow for ever. */
static void fail_prune(struct account_db *db, time_t now, unsigned window)
{
	if (randombytes_uniform(64) != 0)
		return;
	int64_t horizon = (int64_t)now - (int64_t)(window > 86400 ? window : 86400);
	sqlite3_stmt *st = account_sec_stmt(db, SEC_FAIL_PRUNE,
		"DELETE FROM auth_failures WHERE last < ?1");
	if (st != NULL) {
		sqlite3_bind_int64(st, 1, horizon);
		account_sec_write(db, st, "pruning failures");
	}
	st = account_sec_stmt(db, SEC_FAIL_PRUNE_IP_ACCOUNT,
			      "DELETE FROM ip_account_failures WHERE last < ?1");
	if (st != NULL) {
		sqlite3_bind_int64(st, 1, horizon);
		account_sec_write(db, st, "pruning failures");
	}
	st = account_sec_stmt(db, SEC_BLOCK_PRUNE, "DELETE FROM blocks WHERE until < ?1");
	if (st != NULL) {
		sqlite3_bind_int64(st, 1, horizon);
		account_sec_write(db, st, "pruning blocks");
	}
}

int account_fail_record(struct account_db *db, enum account_block_kind kind, const char *key,
			const char *address_or_null, time_t now, unsigned window)
{
	int count = -1;

	fail_prune(db, now, window);
	/* One statement: the count restarts at 1 when the last failure is
	 * older than the window. RETURNING gives the new count. */
	sqlite3_stmt *st = account_sec_stmt(db, SEC_FAIL_RECORD,
		"INSERT INTO auth_failures (kind, key, count, last) VALUES (?1, ?2, 1, ?3)"
		" ON CONFLICT(kind, key) DO UPDATE SET"
		"  count = CASE WHEN last < ?3 - ?4 THEN 1 ELSE count + 1 END, last = ?3"
		" RETURNING count");
	if (st == NULL)
		return -1;
	sqlite3_bind_int(st, 1, (int)kind);
	sqlite3_bind_text(st, 2, key, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, (int64_t)now);
	sqlite3_bind_int64(st, 4, (int64_t)window);
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		count = sqlite3_column_int(st, 0);
	else
		account_sql_error(db, "recording a failed login");
	account_stmt_done(st);
	if (count < 0 || kind != ACCOUNT_BLOCK_IP || address_or_null == NULL)
		return count;
	st = account_sec_stmt(db, SEC_FAIL_RECORD_IP_ACCOUNT,
		"INSERT INTO ip_account_failures (ip, address, count, last) VALUES (?1, ?2, 1, ?3)"
		" ON CONFLICT(ip, address) DO UPDATE SET"
		"  count = CASE WHEN last < ?3 - ?4 THEN 1 ELSE count + 1 END, last = ?3");
	if (st == NULL)
		return -1;
	sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, address_or_null, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, (int64_t)now);
	sqlite3_bind_int64(st, 4, (int64_t)window);
	if (account_sec_write(db, st, "recording a failed login") != 0)
		return -1;
	return count;
}

int account_fail_clear(struct account_db *db, enum account_block_kind kind, const char *key)
{
	sqlite3_stmt *st = account_sec_stmt(db, SEC_FAIL_CLEAR,
		"DELETE FROM auth_failures WHERE kind = ?1 AND key = ?2");
	if (st == NULL)
		return -1;
	sqlite3_bind_int(st, 1, (int)kind);
	sqlite3_bind_text(st, 2, key, -1, SQLITE_STATIC);
	if (account_sec_write(db, st, "clearing failed logins") != 0)
		return -1;
	/* The per-(IP, account) rows stay when an IP logs in: an attacker
	 * with an account of its own must not clean its record against
	 * another account by logging in to its own. Clearing an account
	 * (unblock) forgets them. */
	if (kind != ACCOUNT_BLOCK_ACCOUNT)
		return 0;
	st = account_sec_stmt(db, SEC_FAIL_CLEAR_IP_ACCOUNT_BY_ADDRESS,
			      "DELETE FROM ip_account_failures WHERE address = ?1");
	if (st == NULL)
		return -1;
	sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
	return account_sec_write(db, st, "clearing failed logins") == 0 ? 0 : -1;
}

int account_fail_clear_ip_account(struct account_db *db, const char *key, const char *address)
{
	sqlite3_stmt *st = account_sec_stmt(db, SEC_FAIL_CLEAR_IP_ACCOUNT,
		"DELETE FROM ip_account_failures WHERE ip = ?1 AND address = ?2");
	if (st == NULL)
		return -1;
	sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, address, -1, SQLITE_STATIC);
	return account_sec_write(db, st, "clearing failed logins") == 0 ? 0 : -1;
}

int account_fail_count(struct account_db *db, enum account_block_kind kind, const char *key,
		       time_t now, unsigned window)
{
	sqlite3_stmt *st = account_sec_stmt(db, SEC_FAIL_GET,
		"SELECT count FROM auth_failures WHERE kind = ?1 AND key = ?2 AND last >= ?3");
	if (st == NULL)
		return -1;
	sqlite3_bind_int(st, 1, (int)kind);
	sqlite3_bind_text(st, 2, key, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, (int64_t)now - (int64_t)window);
	int ret = 0;
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		ret = sqlite3_column_int(st, 0);
	else if (rc != SQLITE_DONE) {
		account_sql_error(db, "reading failed logins");
		ret = -1;
	}
	account_stmt_done(st);
	return ret;
}

int account_fail_ip_tried(struct account_db *db, const char *ip, const char *address,
			  time_t now, unsigned window)
{
	sqlite3_stmt *st = account_sec_stmt(db, SEC_FAIL_IP_TRIED,
		"SELECT 1 FROM ip_account_failures WHERE ip = ?1 AND address = ?2 AND last >= ?3");
	if (st == NULL)
		return -1;
	sqlite3_bind_text(st, 1, ip, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, address, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, (int64_t)now - (int64_t)window);
	int ret = 0;
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		ret = 1;
	else if (rc != SQLITE_DONE) {
		account_sql_error(db, "reading failed logins");
		ret = -1;
	}
	account_stmt_done(st);
	return ret;
}

int account_block_set(struct account_db *db, enum account_block_kind kind, const char *key,
		      time_t until, const char *reason)
{
	sqlite3_stmt *st = account_sec_stmt(db, SEC_BLOCK_SET,
		"INSERT INTO blocks (kind, key, since, until, failures, reason)"
		" VALUES (?1, ?2, ?3, ?4,"
		"  COALESCE((SELECT count FROM auth_failures WHERE kind = ?1 AND key = ?2), 0), ?5)"
		" ON CONFLICT(kind, key) DO UPDATE SET since = excluded.since,"
		"  until = excluded.until, failures = excluded.failures, reason = excluded.reason");
	if (st == NULL)
		return -1;
	sqlite3_bind_int(st, 1, (int)kind);
	sqlite3_bind_text(st, 2, key, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, (int64_t)time(NULL));
	sqlite3_bind_int64(st, 4, (int64_t)until);
	if (reason != NULL)
		sqlite3_bind_text(st, 5, reason, -1, SQLITE_STATIC);
	else
		sqlite3_bind_null(st, 5);
	return account_sec_write(db, st, "blocking") == 0 ? 0 : -1;
}

int account_block_get(struct account_db *db, enum account_block_kind kind, const char *key,
		      time_t now, time_t *until_r)
{
	sqlite3_stmt *st = account_sec_stmt(db, SEC_BLOCK_GET,
		"SELECT until FROM blocks WHERE kind = ?1 AND key = ?2 AND until > ?3");
	if (st == NULL)
		return -1;
	*until_r = 0;
	sqlite3_bind_int(st, 1, (int)kind);
	sqlite3_bind_text(st, 2, key, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, (int64_t)now);
	int ret = 0;
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		*until_r = (time_t)sqlite3_column_int64(st, 0);
		ret = 1;
	} else if (rc != SQLITE_DONE) {
		account_sql_error(db, "reading a block");
		ret = -1;
	}
	account_stmt_done(st);
	return ret;
}

int account_block_del(struct account_db *db, enum account_block_kind kind, const char *key)
{
	sqlite3_stmt *st = account_sec_stmt(db, SEC_BLOCK_DEL,
		"DELETE FROM blocks WHERE kind = ?1 AND key = ?2");
	if (st == NULL)
		return -1;
	sqlite3_bind_int(st, 1, (int)kind);
	sqlite3_bind_text(st, 2, key, -1, SQLITE_STATIC);
	if (account_sec_write(db, st, "unblocking") != 0)
		return -1;
	int lifted = sqlite3_changes(db->sql) > 0 ? 1 : 0;
	if (account_fail_clear(db, kind, key) < 0)
		return -1;
	if (kind == ACCOUNT_BLOCK_IP) {
		/* An unblocked IP starts with a clean record everywhere. */
		st = account_sec_stmt(db, SEC_FAIL_CLEAR_IP_ACCOUNT_BY_IP,
				      "DELETE FROM ip_account_failures WHERE ip = ?1");
		if (st == NULL)
			return -1;
		sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
		if (account_sec_write(db, st, "clearing failed logins") != 0)
			return -1;
	}
	return lifted;
}

int account_block_list(struct account_db *db, time_t now,
		       void (*cb)(const struct account_block *b, void *ctx), void *ctx)
{
	int rc;

	sqlite3_stmt *st = account_sec_stmt(db, SEC_BLOCK_LIST,
		"SELECT kind, key, since, until, failures, reason FROM blocks"
		" WHERE until > ?1 ORDER BY since DESC, key");
	if (st == NULL)
		return -1;
	sqlite3_bind_int64(st, 1, (int64_t)now);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct account_block b = {
			.kind = sqlite3_column_int(st, 0) == ACCOUNT_BLOCK_ACCOUNT
					? ACCOUNT_BLOCK_ACCOUNT : ACCOUNT_BLOCK_IP,
			.key = (const char *)sqlite3_column_text(st, 1),
			.since = sqlite3_column_int64(st, 2),
			.until = sqlite3_column_int64(st, 3),
			.failures = (unsigned)sqlite3_column_int(st, 4),
			.reason = (const char *)sqlite3_column_text(st, 5),
		};
		cb(&b, ctx);
	}
	if (rc != SQLITE_DONE)
		account_sql_error(db, "listing blocks");
	account_stmt_done(st);
	return rc == SQLITE_DONE ? 0 : -1;
}
