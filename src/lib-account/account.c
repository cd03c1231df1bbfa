/*
 * account.c — domains, users and aliases: adding, deleting, listing, and
 * the single-row lookups resolution builds on.
 *
 * Runs in the CLI (`postern domain|user|alias`) and, for lookups, in the
 * directory process. Every change that first checks something (the domain
 * exists, the name is not taken) runs in one BEGIN IMMEDIATE transaction so
 * a concurrent writer cannot slip in between. Password hashing (slow) is
 * done before the transaction starts so the write lock is held briefly.
 */
#include "lib-account/account-private.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/buf.h"
#include "lib/limits.h"
#include "lib/util.h"

/* ---- lookups ---------------------------------------------------------- */

/* Runs a statement bound to one text parameter expecting at most one row:
 * 1 row, 0 none, -1 error. The caller reads the row and calls done. */
static int step_one(struct account_db *db, sqlite3_stmt *st, const char *key)
{
	if (sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC) != SQLITE_OK)
		return -1;
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		return 1;
	if (rc == SQLITE_DONE)
		return 0;
	account_sql_error(db, "looking up");
	return -1;
}

static int lookup_exists(struct account_db *db, enum account_stmt id, const char *key)
{
	sqlite3_stmt *st = account_stmt(db, id);
	int ret = step_one(db, st, key);
	account_stmt_done(st);
	return ret;
}

int account_domain_lookup(struct account_db *db, const char *domain)
{
	return lookup_exists(db, ACCOUNT_STMT_DOMAIN_EXISTS, domain);
}

int account_user_lookup(struct account_db *db, const char *address)
{
	return lookup_exists(db, ACCOUNT_STMT_USER_EXISTS, address);
}

int account_alias_lookup(struct account_db *db, const char *alias, char **targets_r)
{
	sqlite3_stmt *st = account_stmt(db, ACCOUNT_STMT_ALIAS_GET);
	int ret = step_one(db, st, alias);

	*targets_r = NULL;
	if (ret == 1) {
		const unsigned char *t = sqlite3_column_text(st, 0);
		*targets_r = strdup(t != NULL ? (const char *)t : "");
		if (*targets_r == NULL)
			ret = -1;
	}
	account_stmt_done(st);
	return ret;
}

static int count_rows(struct account_db *db, enum account_stmt id, const char *key,
		      long *count_r)
{
	sqlite3_stmt *st = account_stmt(db, id);
	int ret = step_one(db, st, key);

	if (ret == 1)
		*count_r = (long)sqlite3_column_int64(st, 0);
	account_stmt_done(st);
	return ret == 1 ? 0 : -1;
}

/* Runs a bound INSERT/UPDATE/DELETE: 0 done, 1 constraint violated, -1 error. */
static int step_write(struct account_db *db, sqlite3_stmt *st, const char *what)
{
	int rc = sqlite3_step(st);
	int ret = 0;

	if (rc == SQLITE_CONSTRAINT)
		ret = 1;
	else if (rc != SQLITE_DONE) {
		account_sql_error(db, what);
		ret = -1;
	}
	account_stmt_done(st);
	return ret;
}

/* ---- domains ---------------------------------------------------------- */

int account_domain_exists(struct account_db *db, const char *domain)
{
	char name[SMTP_DOMAIN_MAX + 1];
	const char *error;

	if (account_domain_normalize(db, domain, name, &error) < 0)
		return 0;
	return account_domain_lookup(db, name);
}

int account_domain_add(struct account_db *db, const char *domain, const char **error_r)
{
	char name[SMTP_DOMAIN_MAX + 1];

	if (account_domain_normalize(db, domain, name, error_r) < 0)
		return -1;
	sqlite3_stmt *st = account_stmt(db, ACCOUNT_STMT_DOMAIN_INSERT);
	sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
	int ret = step_write(db, st, "adding a domain");
	if (ret == 1)
		*error_r = account_error(db, "domain %s already exists", name);
	else if (ret < 0)
		*error_r = db->error;
	return ret == 0 ? 0 : -1;
}

int account_domain_del(struct account_db *db, const char *domain, const char **error_r)
{
	char name[SMTP_DOMAIN_MAX + 1];
	long users = 0, aliases = 0;
	int ret = -1;

	if (account_domain_normalize(db, domain, name, error_r) < 0)
		return -1;
	if (account_begin(db) < 0) {
		*error_r = db->error;
		return -1;
	}
	int found = account_domain_lookup(db, name);
	if (found <= 0) {
		if (found == 0)
			account_error(db, "no such domain %s", name);
		goto out;
	}
	if (count_rows(db, ACCOUNT_STMT_DOMAIN_USERS, name, &users) < 0 ||
	    count_rows(db, ACCOUNT_STMT_DOMAIN_ALIASES, name, &aliases) < 0)
		goto out;
	if (users > 0 || aliases > 0) {
		account_error(db, "domain %s still has %ld user%s and %ld alias%s; "
			      "delete them first", name, users, users == 1 ? "" : "s",
			      aliases, aliases == 1 ? "" : "es");
		goto out;
	}
	sqlite3_stmt *st = account_stmt(db, ACCOUNT_STMT_DOMAIN_DELETE);
	sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
	if (step_write(db, st, "deleting a domain") != 0)
		goto out;
	ret = account_commit(db);
out:
	if (ret < 0) {
		account_rollback(db);
		*error_r = db->error;
	}
	return ret;
}

int account_domain_list(struct account_db *db, void (*cb)(const char *domain, void *ctx),
			void *ctx)
{
	sqlite3_stmt *st = account_stmt(db, ACCOUNT_STMT_DOMAIN_LIST);
	int rc;

	while ((rc = sqlite3_step(st)) == SQLITE_ROW)
		cb((const char *)sqlite3_column_text(st, 0), ctx);
	if (rc != SQLITE_DONE)
		account_sql_error(db, "listing domains");
	account_stmt_done(st);
	return rc == SQLITE_DONE ? 0 : -1;
}

/* ---- users ------------------------------------------------------------ */

/* The password rules every way of setting one shares: not empty, not too
 * long, no control characters. The policy (length, common passwords) is
 * account_password_check's, applied by the caller. */
static int password_check(struct account_db *db, const char *password, const char **error_r)
{
	size_t len = strnlen(password, PASSWORD_MAX + 1);
	size_t chars = 0;

	if (len > PASSWORD_MAX) {
		*error_r = account_error(db, "password too long (maximum %u octets)",
					 (unsigned)PASSWORD_MAX);
		return -1;
	}
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)password[i];
		if (c < 0x20 || c == 0x7f) {
			*error_r = account_error(db, "password contains a control character");
			return -1;
		}
		/* Count UTF-8 code points: every octet that is not a
		 * continuation octet starts one. */
		if ((c & 0xc0) != 0x80)
			chars++;
	}
	if (chars == 0) {
		*error_r = account_error(db, "empty password");
		return -1;
	}
	return 0;
}

static int hash_new(struct account_db *db, const char *password, char **hash_r,
		    const char **error_r)
{
	if (password_check(db, password, error_r) < 0)
		return -1;
	if (password_hash(password, hash_r) < 0) {
		*error_r = account_error(db, "cannot hash the password (out of memory?)");
		return -1;
	}
	return 0;
}

int account_user_add(struct account_db *db, const char *address, const char *password,
		     const char **error_r)
{
	char addr[SMTP_ADDRESS_MAX + 1];
	char *hash = NULL;
	char *targets = NULL;
	int ret = -1;

	if (account_address_normalize(db, address, false, addr, error_r) < 0)
		return -1;
	if (hash_new(db, password, &hash, error_r) < 0)
		return -1;
	if (account_begin(db) < 0)
		goto out;
	const char *domain = strchr(addr, '@') + 1;
	int found = account_domain_lookup(db, domain);
	if (found <= 0) {
		if (found == 0)
			account_error(db, "domain %s is not a local domain", domain);
		goto out;
	}
	found = account_alias_lookup(db, addr, &targets);
	if (found != 0) {
		if (found == 1)
			account_error(db, "%s is already an alias", addr);
		goto out;
	}
	sqlite3_stmt *st = account_stmt(db, ACCOUNT_STMT_USER_INSERT);
	sqlite3_bind_text(st, 1, addr, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, domain, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, hash, -1, SQLITE_STATIC);
	int written = step_write(db, st, "adding a user");
	if (written != 0) {
		if (written == 1)
			account_error(db, "user %s already exists", addr);
		goto out;
	}
	ret = account_commit(db);
out:
	if (ret < 0) {
		account_rollback(db);
		*error_r = db->error;
	}
	free(targets);
	sodium_memzero(hash, strlen(hash));
	free(hash);
	return ret;
}

int account_user_del(struct account_db *db, const char *address, const char **error_r)
{
	char addr[SMTP_ADDRESS_MAX + 1];

	if (account_address_normalize(db, address, false, addr, error_r) < 0)
		return -1;
	sqlite3_stmt *st = account_stmt(db, ACCOUNT_STMT_USER_DELETE);
	sqlite3_bind_text(st, 1, addr, -1, SQLITE_STATIC);
	int ret = step_write(db, st, "deleting a user");
	if (ret == 0 && sqlite3_changes(db->sql) == 0) {
		account_error(db, "no such user %s", addr);
		ret = -1;
	}
	if (ret != 0) {
		*error_r = db->error;
		return -1;
	}
	return 0;
}

int account_user_passwd(struct account_db *db, const char *address, const char *password,
			const char **error_r)
{
	char addr[SMTP_ADDRESS_MAX + 1];
	char *hash = NULL;
	int ret = -1;

	if (account_address_normalize(db, address, false, addr, error_r) < 0)
		return -1;
	/* Answer "no such user" before making the operator wait for a hash. */
	int found = account_user_lookup(db, addr);
	if (found <= 0) {
		if (found == 0)
			account_error(db, "no such user %s", addr);
		*error_r = db->error;
		return -1;
	}
	if (hash_new(db, password, &hash, error_r) < 0)
		return -1;
	sqlite3_stmt *st = account_stmt(db, ACCOUNT_STMT_USER_SET_HASH);
	sqlite3_bind_text(st, 1, addr, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, hash, -1, SQLITE_STATIC);
	int written = step_write(db, st, "changing a password");
	if (written == 0 && sqlite3_changes(db->sql) == 0)
		account_error(db, "no such user %s", addr);
	else if (written == 0)
		ret = 0;
	if (ret < 0)
		*error_r = db->error;
	sodium_memzero(hash, strlen(hash));
	free(hash);
	return ret;
}

int account_user_list(struct account_db *db, const char *domain_or_null,
		      void (*cb)(const char *address, void *ctx), void *ctx)
{
	char name[SMTP_DOMAIN_MAX + 1];
	const char *error;
	sqlite3_stmt *st;
	int rc;

	if (domain_or_null != NULL) {
		if (account_domain_normalize(db, domain_or_null, name, &error) < 0)
			return -1;
		st = account_stmt(db, ACCOUNT_STMT_USER_LIST_DOMAIN);
		sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
	} else {
		st = account_stmt(db, ACCOUNT_STMT_USER_LIST);
	}
	while ((rc = sqlite3_step(st)) == SQLITE_ROW)
		cb((const char *)sqlite3_column_text(st, 0), ctx);
	if (rc != SQLITE_DONE)
		account_sql_error(db, "listing users");
	account_stmt_done(st);
	return rc == SQLITE_DONE ? 0 : -1;
}

/* ---- aliases ---------------------------------------------------------- */

/* Parses the comma-separated target list into out ("a@x,b@y"), checking
 * each address, lower-casing local-domain addresses entirely and remote ones
 * only in the domain, dropping duplicates. Call inside the transaction. */
static int targets_parse(struct account_db *db, const char *alias, const char *targets,
			 struct buf *out)
{
	const char *p = targets;
	size_t count = 0;

	for (;;) {
		char item[SMTP_ADDRESS_MAX + 1];
		char norm[SMTP_ADDRESS_MAX + 1];
		char shown[96];
		const char *why;

		const char *end = strchr(p, ',');
		size_t len = end != NULL ? (size_t)(end - p) : strlen(p);
		while (len > 0 && (*p == ' ' || *p == '\t')) {
			p++;
			len--;
		}
		while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t'))
			len--;
		if (len == 0) {
			account_error(db, "empty target in alias %s", alias);
			return -1;
		}
		if (len > SMTP_ADDRESS_MAX) {
			account_error(db, "invalid target address: too long");
			return -1;
		}
		memcpy(item, p, len);
		item[len] = '\0';
		if (account_address_parse(item, false, false, norm, &why) < 0) {
			account_error(db, "invalid target address \"%s\": %s",
				      account_printable(item, shown, sizeof(shown)), why);
			return -1;
		}
		char *at = strchr(norm, '@');
		int local = account_domain_lookup(db, at + 1);
		if (local < 0)
			return -1;
		if (local == 1)
			str_lcase(norm);
		if (strcmp(norm, alias) == 0) {
			account_error(db, "alias %s cannot point to itself", alias);
			return -1;
		}
		/* Duplicate? Compare whole items of the list built so far. */
		bool dup = false;
		size_t nlen = strlen(norm);
		for (const char *q = out->data; q != NULL && *q != '\0';) {
			const char *qend = strchr(q, ',');
			size_t qlen = qend != NULL ? (size_t)(qend - q) : strlen(q);
			if (qlen == nlen && memcmp(q, norm, nlen) == 0) {
				dup = true;
				break;
			}
			q = qend != NULL ? qend + 1 : q + qlen;
		}
		if (!dup) {
			if (++count > ALIAS_EXPAND_MAX) {
				account_error(db, "alias %s has more than %u targets", alias,
					      (unsigned)ALIAS_EXPAND_MAX);
				return -1;
			}
			if ((out->len > 0 && buf_append(out, ",", 1) < 0) ||
			    buf_append(out, norm, nlen) < 0) {
				account_error(db, "alias %s: target list too long", alias);
				return -1;
			}
		}
		if (end == NULL)
			break;
		p = end + 1;
	}
	return 0;
}

int account_alias_add(struct account_db *db, const char *alias, const char *targets,
		      const char **error_r)
{
	char name[SMTP_ADDRESS_MAX + 1];
	struct buf list;
	int ret = -1;

	if (account_address_normalize(db, alias, true, name, error_r) < 0)
		return -1;
	buf_init(&list, (size_t)ALIAS_EXPAND_MAX * (SMTP_ADDRESS_MAX + 1));
	if (account_begin(db) < 0)
		goto out;
	const char *domain = strchr(name, '@') + 1;
	int found = account_domain_lookup(db, domain);
	if (found <= 0) {
		if (found == 0)
			account_error(db, "domain %s is not a local domain", domain);
		goto out;
	}
	if (name[0] != '@') {
		found = account_user_lookup(db, name);
		if (found != 0) {
			if (found == 1)
				account_error(db, "%s is already a user", name);
			goto out;
		}
	}
	if (targets_parse(db, name, targets, &list) < 0)
		goto out;
	sqlite3_stmt *st = account_stmt(db, ACCOUNT_STMT_ALIAS_INSERT);
	sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, domain, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, list.data, (int)list.len, SQLITE_STATIC);
	int written = step_write(db, st, "adding an alias");
	if (written != 0) {
		if (written == 1)
			account_error(db, "alias %s already exists", name);
		goto out;
	}
	ret = account_commit(db);
out:
	if (ret < 0) {
		account_rollback(db);
		*error_r = db->error;
	}
	buf_free(&list);
	return ret;
}

int account_alias_del(struct account_db *db, const char *alias, const char **error_r)
{
	char name[SMTP_ADDRESS_MAX + 1];

	if (account_address_normalize(db, alias, true, name, error_r) < 0)
		return -1;
	sqlite3_stmt *st = account_stmt(db, ACCOUNT_STMT_ALIAS_DELETE);
	sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
	int ret = step_write(db, st, "deleting an alias");
	if (ret == 0 && sqlite3_changes(db->sql) == 0) {
		account_error(db, "no such alias %s", name);
		ret = -1;
	}
	if (ret != 0) {
		*error_r = db->error;
		return -1;
	}
	return 0;
}

int account_alias_list(struct account_db *db,
		       void (*cb)(const char *alias, const char *targets, void *ctx), void *ctx)
{
	sqlite3_stmt *st = account_stmt(db, ACCOUNT_STMT_ALIAS_LIST);
	int rc;

	while ((rc = sqlite3_step(st)) == SQLITE_ROW)
		cb((const char *)sqlite3_column_text(st, 0),
		   (const char *)sqlite3_column_text(st, 1), ctx);
	if (rc != SQLITE_DONE)
		account_sql_error(db, "listing aliases");
	account_stmt_done(st);
	return rc == SQLITE_DONE ? 0 : -1;
}

/* ---- quota overrides ---- */

int account_user_quota_set(struct account_db *db, const char *address, int64_t bytes,
			   int64_t messages, const char **error_r)
{
	char addr[SMTP_ADDRESS_MAX + 1];

	if (account_address_normalize(db, address, false, addr, error_r) < 0)
		return -1;
	int found = account_user_lookup(db, addr);
	if (found <= 0) {
		if (found == 0)
			account_error(db, "no such user %s", addr);
		*error_r = db->error;
		return -1;
	}
	bool reset = bytes < 0 && messages < 0;
	sqlite3_stmt *st = account_stmt(db, reset ? ACCOUNT_STMT_QUOTA_DEL
						  : ACCOUNT_STMT_QUOTA_SET);
	sqlite3_bind_text(st, 1, addr, -1, SQLITE_STATIC);
	if (!reset) {
		sqlite3_bind_int64(st, 2, bytes);
		sqlite3_bind_int64(st, 3, messages);
	}
	if (step_write(db, st, "setting a quota") != 0) {
		*error_r = db->error;
		return -1;
	}
	return 0;
}

int account_user_quota_get(struct account_db *db, const char *address, int64_t *bytes_r,
			   int64_t *messages_r)
{
	sqlite3_stmt *st = account_stmt(db, ACCOUNT_STMT_QUOTA_GET);
	int ret;

	*bytes_r = -1;
	*messages_r = -1;
	sqlite3_bind_text(st, 1, address, -1, SQLITE_STATIC);
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		*bytes_r = sqlite3_column_int64(st, 0);
		*messages_r = sqlite3_column_int64(st, 1);
		ret = 1;
	} else if (rc == SQLITE_DONE) {
		ret = 0;
	} else {
		account_sql_error(db, "reading a quota");
		ret = -1;
	}
	account_stmt_done(st);
	return ret;
}

int account_maildir_path(const char *mail_dir, const char *address, char *out, size_t size)
{
	const char *at = strrchr(address, '@');
	if (at == NULL || at == address || at[1] == '\0')
		return -1;
	size_t llen = (size_t)(at - address);
	const char *domain = at + 1;
	/* The address comes from our own database, but a path must never
	 * leave the mail directory whatever it holds. */
	if (memchr(address, '/', llen) != NULL || strchr(domain, '/') != NULL ||
	    address[0] == '.' || domain[0] == '.')
		return -1;
	int n = snprintf(out, size, "%s/%s/%.*s", mail_dir, domain, (int)llen, address);
	return n < 0 || (size_t)n >= size ? -1 : 0;
}

int account_user_exists(struct account_db *db, const char *address)
{
	return account_user_lookup(db, address);
}
