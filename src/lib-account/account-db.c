/*
 * account-db.c — opening the account database: the SQLite connection, its
 * schema (created or upgraded when asked), the prepared statements and the
 * error and transaction helpers the other lib-account files use.
 *
 * Runs in the directory process (one connection per thread) and in the CLI.
 * Owns: one sqlite3 connection and its statements per struct account_db.
 */
#include "lib-account/account-private.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lib/log.h"

/* 1: domains, users, aliases, quota overrides.
 * 2: users.password_changed; the login security tables (app passwords,
 *    TOTP, recovery codes, allowlists, access rules, failures, blocks). */
#define ACCOUNT_SCHEMA_VERSION 2

/* schema_version is shared with other components that keep tables in
 * postern.db; each upgrades its own row. */
static const char schema_sql[] =
	"CREATE TABLE IF NOT EXISTS schema_version ("
	"  component TEXT PRIMARY KEY NOT NULL,"
	"  version INTEGER NOT NULL);"
	"CREATE TABLE IF NOT EXISTS domains ("
	"  name TEXT PRIMARY KEY NOT NULL,"
	"  created INTEGER NOT NULL);"
	"CREATE TABLE IF NOT EXISTS users ("
	"  address TEXT PRIMARY KEY NOT NULL,"
	"  domain TEXT NOT NULL REFERENCES domains(name),"
	"  password_hash TEXT NOT NULL,"
	"  created INTEGER NOT NULL,"
	"  password_changed INTEGER);"       /* unix time; NULL (v1 rows): created */
	"CREATE INDEX IF NOT EXISTS users_domain ON users(domain);"
	"CREATE TABLE IF NOT EXISTS aliases ("
	"  alias TEXT PRIMARY KEY NOT NULL," /* "local@domain" or "@domain" */
	"  domain TEXT NOT NULL REFERENCES domains(name),"
	"  targets TEXT NOT NULL,"           /* normalised "a@x,b@y" */
	"  created INTEGER NOT NULL);"
	"CREATE INDEX IF NOT EXISTS aliases_domain ON aliases(domain);"
	/* Per-user quota overrides; absent: the configured default. */
	"CREATE TABLE IF NOT EXISTS user_quota ("
	"  address TEXT PRIMARY KEY NOT NULL REFERENCES users(address) ON DELETE CASCADE,"
	"  bytes INTEGER NOT NULL,"          /* -1: the default; 0: unlimited */
	"  messages INTEGER NOT NULL);"
	"INSERT OR IGNORE INTO schema_version (component, version) VALUES ('account', 2);";

/* Version 2: the login security tables (account-security.h). Run after
 * schema_sql and after users got its password_changed column. Every row
 * that belongs to a user goes with it (ON DELETE CASCADE). */
static const char schema_v2_sql[] =
	/* App passwords: hash = BLAKE2b-256 of the 24 normalised characters. */
	"CREATE TABLE IF NOT EXISTS app_passwords ("
	"  address TEXT NOT NULL REFERENCES users(address) ON DELETE CASCADE,"
	"  name TEXT NOT NULL,"
	"  hash BLOB NOT NULL,"
	"  scope INTEGER NOT NULL,"          /* ACCOUNT_SCOPE_* bits */
	"  created INTEGER NOT NULL,"
	"  last_used INTEGER,"
	"  last_ip TEXT,"
	"  allow_from TEXT,"
	"  PRIMARY KEY (address, name));"
	"CREATE INDEX IF NOT EXISTS app_passwords_hash ON app_passwords(address, hash);"
	/* TOTP: state 1 pending (enrolment not confirmed), 2 on. */
	"CREATE TABLE IF NOT EXISTS totp ("
	"  address TEXT PRIMARY KEY NOT NULL REFERENCES users(address) ON DELETE CASCADE,"
	"  secret BLOB NOT NULL,"
	"  state INTEGER NOT NULL,"
	"  last_step INTEGER NOT NULL DEFAULT 0," /* the last accepted time step */
	"  created INTEGER NOT NULL);"
	"CREATE TABLE IF NOT EXISTS recovery_codes ("
	"  address TEXT NOT NULL REFERENCES users(address) ON DELETE CASCADE,"
	"  hash BLOB NOT NULL,"
	"  PRIMARY KEY (address, hash));"
	"CREATE TABLE IF NOT EXISTS user_allow ("
	"  address TEXT PRIMARY KEY NOT NULL REFERENCES users(address) ON DELETE CASCADE,"
	"  cidrs TEXT NOT NULL);"
	/* listener '' is every listener (NULL would not be unique in the key). */
	"CREATE TABLE IF NOT EXISTS access_rules ("
	"  cidr TEXT NOT NULL,"
	"  listener TEXT NOT NULL DEFAULT '',"
	"  action INTEGER NOT NULL,"         /* enum account_access_action */
	"  created INTEGER NOT NULL,"
	"  PRIMARY KEY (cidr, listener));"
	/* kind: enum account_block_kind; key: an IP or an address. */
	"CREATE TABLE IF NOT EXISTS auth_failures ("
	"  kind INTEGER NOT NULL,"
	"  key TEXT NOT NULL,"
	"  count INTEGER NOT NULL,"
	"  last INTEGER NOT NULL,"
	"  PRIMARY KEY (kind, key));"
	"CREATE TABLE IF NOT EXISTS ip_account_failures ("
	"  ip TEXT NOT NULL,"
	"  address TEXT NOT NULL,"
	"  count INTEGER NOT NULL,"
	"  last INTEGER NOT NULL,"
	"  PRIMARY KEY (ip, address));"
	"CREATE TABLE IF NOT EXISTS blocks ("
	"  kind INTEGER NOT NULL,"
	"  key TEXT NOT NULL,"
	"  since INTEGER NOT NULL,"
	"  until INTEGER NOT NULL,"
	"  failures INTEGER NOT NULL,"
	"  reason TEXT,"
	"  PRIMARY KEY (kind, key));"
	"UPDATE schema_version SET version = 2 WHERE component = 'account' AND version < 2;";

static const char *const stmt_sql[ACCOUNT_STMT_COUNT] = {
	[ACCOUNT_STMT_DOMAIN_EXISTS] = "SELECT 1 FROM domains WHERE name = ?1",
	[ACCOUNT_STMT_DOMAIN_INSERT] =
		"INSERT INTO domains (name, created) VALUES (?1, strftime('%s', 'now'))",
	[ACCOUNT_STMT_DOMAIN_DELETE] = "DELETE FROM domains WHERE name = ?1",
	[ACCOUNT_STMT_DOMAIN_LIST] = "SELECT name FROM domains ORDER BY name",
	[ACCOUNT_STMT_DOMAIN_USERS] = "SELECT count(*) FROM users WHERE domain = ?1",
	[ACCOUNT_STMT_DOMAIN_ALIASES] = "SELECT count(*) FROM aliases WHERE domain = ?1",
	[ACCOUNT_STMT_USER_EXISTS] = "SELECT 1 FROM users WHERE address = ?1",
	[ACCOUNT_STMT_USER_HASH] = "SELECT password_hash FROM users WHERE address = ?1",
	[ACCOUNT_STMT_USER_INSERT] =
		"INSERT INTO users (address, domain, password_hash, created, password_changed)"
		" VALUES (?1, ?2, ?3, strftime('%s', 'now'), strftime('%s', 'now'))",
	[ACCOUNT_STMT_USER_DELETE] = "DELETE FROM users WHERE address = ?1",
	[ACCOUNT_STMT_USER_SET_HASH] =
		"UPDATE users SET password_hash = ?2, password_changed = strftime('%s', 'now')"
		" WHERE address = ?1",
	[ACCOUNT_STMT_USER_LIST] = "SELECT address FROM users ORDER BY domain, address",
	[ACCOUNT_STMT_USER_LIST_DOMAIN] =
		"SELECT address FROM users WHERE domain = ?1 ORDER BY address",
	[ACCOUNT_STMT_ALIAS_GET] = "SELECT targets FROM aliases WHERE alias = ?1",
	[ACCOUNT_STMT_ALIAS_INSERT] =
		"INSERT INTO aliases (alias, domain, targets, created)"
		" VALUES (?1, ?2, ?3, strftime('%s', 'now'))",
	[ACCOUNT_STMT_ALIAS_DELETE] = "DELETE FROM aliases WHERE alias = ?1",
	[ACCOUNT_STMT_ALIAS_LIST] =
		"SELECT alias, targets FROM aliases ORDER BY domain, alias",
	[ACCOUNT_STMT_QUOTA_GET] = "SELECT bytes, messages FROM user_quota WHERE address = ?1",
	[ACCOUNT_STMT_QUOTA_SET] =
		"INSERT INTO user_quota (address, bytes, messages) VALUES (?1, ?2, ?3)"
		" ON CONFLICT(address) DO UPDATE SET bytes = ?2, messages = ?3",
	[ACCOUNT_STMT_QUOTA_DEL] = "DELETE FROM user_quota WHERE address = ?1",
};

/* account_db_open has no db to keep its error in yet. */
static _Thread_local char open_error[512];

static const char *open_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static const char *open_fail(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(open_error, sizeof(open_error), fmt, ap);
	va_end(ap);
	return open_error;
}

const char *account_error(struct account_db *db, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(db->error, sizeof(db->error), fmt, ap);
	va_end(ap);
	return db->error;
}

const char *account_sql_error(struct account_db *db, const char *what)
{
	log_error("account: database error while %s: %s", what, sqlite3_errmsg(db->sql));
	return account_error(db, "database error while %s: %s", what, sqlite3_errmsg(db->sql));
}

sqlite3_stmt *account_stmt(struct account_db *db, enum account_stmt id)
{
	return db->stmt[id];
}

void account_stmt_done(sqlite3_stmt *stmt)
{
	if (stmt == NULL)
		return;
	sqlite3_reset(stmt);
	sqlite3_clear_bindings(stmt);
}

int account_begin(struct account_db *db)
{
	/* IMMEDIATE takes the write lock now, so the checks we make before
	 * writing cannot be invalidated by another writer (CLI vs directory). */
	if (sqlite3_exec(db->sql, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
		account_sql_error(db, "starting a transaction");
		return -1;
	}
	return 0;
}

int account_commit(struct account_db *db)
{
	if (sqlite3_exec(db->sql, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
		account_sql_error(db, "committing");
		account_rollback(db);
		return -1;
	}
	return 0;
}

void account_rollback(struct account_db *db)
{
	if (sqlite3_get_autocommit(db->sql))
		return;
	if (sqlite3_exec(db->sql, "ROLLBACK", NULL, NULL, NULL) != SQLITE_OK)
		log_error("account: rollback failed: %s", sqlite3_errmsg(db->sql));
}

/* Returns the account schema version, 0 when there is none, -1 on error. */
static int schema_version_get(struct account_db *db, int *version_r)
{
	sqlite3_stmt *st = NULL;
	int ret = -1;

	*version_r = 0;
	int rc = sqlite3_prepare_v2(db->sql,
				    "SELECT version FROM schema_version WHERE component = 'account'",
				    -1, &st, NULL);
	if (rc != SQLITE_OK) {
		/* No schema_version table: an empty or foreign database. */
		ret = 0;
		goto out;
	}
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		*version_r = sqlite3_column_int(st, 0);
	else if (rc != SQLITE_DONE)
		goto out;
	ret = 0;
out:
	sqlite3_finalize(st);
	return ret;
}

/* Does users have the password_changed column (schema 2)? 1, 0, -1. */
static int users_have_password_changed(struct account_db *db)
{
	sqlite3_stmt *st = NULL;
	int ret = 0, rc;

	if (sqlite3_prepare_v2(db->sql, "PRAGMA table_info(users)", -1, &st, NULL) != SQLITE_OK)
		return -1;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const unsigned char *name = sqlite3_column_text(st, 1);
		if (name != NULL && strcmp((const char *)name, "password_changed") == 0)
			ret = 1;
	}
	if (rc != SQLITE_DONE)
		ret = -1;
	sqlite3_finalize(st);
	return ret;
}

/* Creates the tables or brings a version 1 database to version 2, in one
 * transaction (every step is idempotent, so two processes opening an old
 * database at once both succeed). 0, or -1 with *errmsg_r (sqlite3_free). */
static int schema_create(struct account_db *db, char **errmsg_r)
{
	if (sqlite3_exec(db->sql, "BEGIN IMMEDIATE", NULL, NULL, errmsg_r) != SQLITE_OK)
		return -1;
	if (sqlite3_exec(db->sql, schema_sql, NULL, NULL, errmsg_r) != SQLITE_OK)
		goto fail;
	int have = users_have_password_changed(db);
	if (have < 0)
		goto fail;
	if (have == 0 && sqlite3_exec(db->sql,
				      "ALTER TABLE users ADD COLUMN password_changed INTEGER",
				      NULL, NULL, errmsg_r) != SQLITE_OK)
		goto fail;
	if (sqlite3_exec(db->sql, schema_v2_sql, NULL, NULL, errmsg_r) != SQLITE_OK ||
	    sqlite3_exec(db->sql, "COMMIT", NULL, NULL, errmsg_r) != SQLITE_OK)
		goto fail;
	return 0;
fail:
	sqlite3_exec(db->sql, "ROLLBACK", NULL, NULL, NULL);
	return -1;
}

static int db_setup(struct account_db *db, const char *path, bool create)
{
	char *errmsg = NULL;
	int version;

	sqlite3_busy_timeout(db->sql, 5000);
	if (sqlite3_exec(db->sql, "PRAGMA foreign_keys = ON", NULL, NULL, &errmsg) != SQLITE_OK)
		goto sql_fail;
	/* WAL: readers (directory threads) never block the writer (CLI). The
	 * mode is stored in the file; setting it again is cheap. */
	if (sqlite3_exec(db->sql, "PRAGMA journal_mode = WAL", NULL, NULL, &errmsg) != SQLITE_OK)
		goto sql_fail;
	if (schema_version_get(db, &version) < 0) {
		open_fail("%s: reading schema version: %s", path, sqlite3_errmsg(db->sql));
		return -1;
	}
	/* An older schema is upgraded even without create: the upgrade only
	 * adds, and a program reading version 1 tables is still served. */
	if ((create && version <= ACCOUNT_SCHEMA_VERSION) ||
	    (version > 0 && version < ACCOUNT_SCHEMA_VERSION)) {
		if (schema_create(db, &errmsg) < 0)
			goto sql_fail;
	}
	if (schema_version_get(db, &version) < 0) {
		open_fail("%s: reading schema version: %s", path, sqlite3_errmsg(db->sql));
		return -1;
	}
	if (version == 0) {
		open_fail("%s: no account tables in this database (run postern init)", path);
		return -1;
	}
	if (version > ACCOUNT_SCHEMA_VERSION) {
		open_fail("%s: account schema version %d is newer than this program's (%d)",
			  path, version, ACCOUNT_SCHEMA_VERSION);
		return -1;
	}
	for (int i = 0; i < ACCOUNT_STMT_COUNT; i++) {
		if (sqlite3_prepare_v3(db->sql, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT,
				       &db->stmt[i], NULL) != SQLITE_OK) {
			open_fail("%s: preparing statement %d: %s", path, i,
				  sqlite3_errmsg(db->sql));
			return -1;
		}
	}
	return 0;

sql_fail:
	open_fail("%s: %s", path, errmsg != NULL ? errmsg : sqlite3_errmsg(db->sql));
	sqlite3_free(errmsg);
	return -1;
}

int account_db_open(const char *path, bool create, struct account_db **db_r,
		    const char **error_r)
{
	struct account_db *db = NULL;

	*db_r = NULL;
	if (sqlite3_threadsafe() == 0) {
		*error_r = open_fail("SQLite was built without thread support");
		return -1;
	}
	if (create) {
		/* Create the file ourselves so it starts private: it holds
		 * password hashes. SQLite gives -wal and -shm the same mode. */
		int fd = open(path, O_RDONLY | O_CREAT | O_CLOEXEC, 0600);
		if (fd < 0) {
			*error_r = open_fail("cannot create %s: %s", path, strerror(errno));
			return -1;
		}
		close(fd);
	}
	db = calloc(1, sizeof(*db));
	if (db == NULL) {
		*error_r = open_fail("out of memory");
		return -1;
	}
	/* NOMUTEX: one connection per thread (see account.h), so SQLite's
	 * per-connection mutex would only cost time. */
	int rc = sqlite3_open_v2(path, &db->sql, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX,
				 NULL);
	if (rc != SQLITE_OK) {
		open_fail("cannot open %s: %s", path,
			  db->sql != NULL ? sqlite3_errmsg(db->sql) : sqlite3_errstr(rc));
		goto fail;
	}
	sqlite3_extended_result_codes(db->sql, 0);
	if (db_setup(db, path, create) < 0)
		goto fail;
	*db_r = db;
	return 0;

fail:
	*error_r = open_error;
	account_db_close(&db);
	return -1;
}

void account_db_close(struct account_db **dbp)
{
	struct account_db *db = dbp != NULL ? *dbp : NULL;

	if (db == NULL)
		return;
	*dbp = NULL;
	for (int i = 0; i < ACCOUNT_STMT_COUNT; i++)
		sqlite3_finalize(db->stmt[i]);
	account_security_free(db);
	if (db->sql != NULL && sqlite3_close(db->sql) != SQLITE_OK)
		log_error("account: closing database: %s", sqlite3_errmsg(db->sql));
	free(db);
}
