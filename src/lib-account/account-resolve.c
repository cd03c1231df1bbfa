/*
 * account-resolve.c — recipient resolution (RCPT TO), sender ownership
 * (MAIL FROM after AUTH) and password-hash lookup.
 *
 * Runs in the directory process, one account_db per thread. The lookup
 * order and the treatment of broken aliases are documented in account.h.
 * RFC 5321 2.4: local parts are case-sensitive in principle, but we treat
 * our own (local-domain) ones case-insensitively, as nearly every server
 * does; remote targets are handed on with their case intact.
 */
#include "lib-account/account-private.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/log.h"
#include "lib/util.h"

/* Bounds the work one resolution can cause, whatever shape the alias graph
 * has (diamonds re-expand shared sub-aliases). */
#define RESOLVE_LOOKUPS_MAX (10 * ALIAS_EXPAND_MAX)

struct resolve_ctx {
	struct account_db *db;
	struct account_targets *r;
	size_t cap;
	/* Aliases being expanded, outermost first: a loop is a name that is
	 * already on this path (a diamond is not). The strings belong to the
	 * callers' frames further up. */
	const char *path[ACCOUNT_ALIAS_DEPTH_MAX];
	unsigned depth;
	unsigned lookups;
	bool no_catchall;       /* sender checks never go through "@domain" */
	const char *top;        /* for log messages */
};

static int resolve_local(struct resolve_ctx *ctx, const char *addr);

/* 1 added (or already there), -1 too many targets / out of memory. */
static int target_add(struct resolve_ctx *ctx, const char *addr, bool local)
{
	struct account_targets *r = ctx->r;

	for (size_t i = 0; i < r->count; i++) {
		if (strcmp(r->v[i].address, addr) == 0)
			return 1;
	}
	if (r->count >= ALIAS_EXPAND_MAX) {
		log_error("account: resolving %s: more than %u targets", ctx->top,
			  (unsigned)ALIAS_EXPAND_MAX);
		return -1;
	}
	if (r->count == ctx->cap) {
		size_t cap = ctx->cap == 0 ? 4 : ctx->cap * 2;
		struct account_target *v = reallocarray(r->v, cap, sizeof(*v));
		if (v == NULL) {
			log_error("account: resolving %s: out of memory", ctx->top);
			return -1;
		}
		r->v = v;
		ctx->cap = cap;
	}
	snprintf(r->v[r->count].address, sizeof(r->v[r->count].address), "%s", addr);
	r->v[r->count].local = local;
	r->count++;
	return 1;
}

/* Expands the stored target list of alias `name`: 1 done (possibly adding
 * nothing when every local target is gone), -1 error. */
static int expand_alias(struct resolve_ctx *ctx, const char *name, const char *targets)
{
	for (unsigned i = 0; i < ctx->depth; i++) {
		if (strcmp(ctx->path[i], name) == 0) {
			log_error("account: resolving %s: alias loop through %s", ctx->top, name);
			return -1;
		}
	}
	if (ctx->depth >= ACCOUNT_ALIAS_DEPTH_MAX) {
		log_error("account: resolving %s: aliases nested deeper than %d at %s",
			  ctx->top, ACCOUNT_ALIAS_DEPTH_MAX, name);
		return -1;
	}
	ctx->path[ctx->depth++] = name;

	int ret = 1;
	for (const char *p = targets; *p != '\0' && ret > 0;) {
		char t[SMTP_ADDRESS_MAX + 1];
		const char *end = strchr(p, ',');
		size_t len = end != NULL ? (size_t)(end - p) : strlen(p);
		const char *next = end != NULL ? end + 1 : p + len;
		const char *at = memchr(p, '@', len);

		if (len == 0 || len > SMTP_ADDRESS_MAX || at == NULL) {
			/* Only a hand-edited database gets here. */
			log_warn("account: alias %s: malformed target skipped", name);
			p = next;
			continue;
		}
		memcpy(t, p, len);
		t[len] = '\0';
		at = t + (at - p);
		int local = account_domain_lookup(ctx->db, at + 1);
		if (local < 0) {
			ret = -1;
		} else if (local == 0) {
			ret = target_add(ctx, t, false);
		} else {
			/* The domain may have become local after the alias
			 * was added with a case-preserved remote target. */
			str_lcase(t);
			int found = resolve_local(ctx, t);
			if (found == 0)
				log_warn("account: alias %s: target %s does not exist, skipped",
					 name, t);
			else if (found < 0)
				ret = -1;
		}
		p = next;
	}
	ctx->depth--;
	return ret;
}

/* A user or an alias with exactly this address: 1 found, 0 not, -1 error. */
static int resolve_exact(struct resolve_ctx *ctx, const char *addr)
{
	char *targets = NULL;

	if (++ctx->lookups > RESOLVE_LOOKUPS_MAX) {
		log_error("account: resolving %s: more than %d lookups", ctx->top,
			  RESOLVE_LOOKUPS_MAX);
		return -1;
	}
	int ret = account_user_lookup(ctx->db, addr);
	if (ret != 0)
		return ret < 0 ? -1 : target_add(ctx, addr, true);
	ret = account_alias_lookup(ctx->db, addr, &targets);
	if (ret == 1)
		ret = expand_alias(ctx, addr, targets);
	free(targets);
	return ret;
}

/* Strips "+tag" from the local part into base: true when there was one
 * (and something is left before it). */
static bool strip_tag(const char *addr, char base[SMTP_ADDRESS_MAX + 1])
{
	const char *at = strchr(addr, '@');
	const char *plus = memchr(addr, '+', (size_t)(at - addr));

	if (plus == NULL || plus == addr)
		return false;
	snprintf(base, SMTP_ADDRESS_MAX + 1, "%.*s%s", (int)(plus - addr), addr, at);
	return true;
}

/* addr is lower-cased and its domain is local: 1 found, 0 not, -1 error. */
static int resolve_local(struct resolve_ctx *ctx, const char *addr)
{
	char base[SMTP_ADDRESS_MAX + 1];
	char *targets = NULL;

	int ret = resolve_exact(ctx, addr);
	if (ret != 0)
		return ret;
	if (strip_tag(addr, base)) {
		ret = resolve_exact(ctx, base);
		if (ret != 0)
			return ret;
	}
	if (ctx->no_catchall)
		return 0;
	const char *catchall = strchr(addr, '@');
	ret = account_alias_lookup(ctx->db, catchall, &targets);
	if (ret == 1)
		ret = expand_alias(ctx, catchall, targets);
	free(targets);
	return ret;
}

void account_targets_free(struct account_targets *t)
{
	if (t == NULL)
		return;
	free(t->v);
	t->v = NULL;
	t->count = 0;
}

enum account_resolve_result account_resolve(struct account_db *db, const char *address,
					    struct account_targets *r)
{
	char addr[SMTP_ADDRESS_MAX + 1];
	const char *why;

	r->v = NULL;
	r->count = 0;
	size_t len = strnlen(address, SMTP_ADDRESS_MAX + 1);
	const char *at = strrchr(address, '@');
	if (len > SMTP_ADDRESS_MAX || at == NULL || at == address)
		return ACCOUNT_RESOLVE_NO_SUCH_USER;
	/* Locality is decided on the domain alone, so a remote address whose
	 * local part we would not accept for our own users (a quoted string)
	 * is still just NOT_LOCAL. */
	if (at[1] == '[')
		return ACCOUNT_RESOLVE_NOT_LOCAL;
	if (!account_domain_valid(at + 1, strlen(at + 1), &why))
		return ACCOUNT_RESOLVE_NO_SUCH_USER;
	char domain[SMTP_DOMAIN_MAX + 1];
	snprintf(domain, sizeof(domain), "%s", at + 1);
	str_lcase(domain);
	int local = account_domain_lookup(db, domain);
	if (local < 0)
		return ACCOUNT_RESOLVE_ERROR;
	if (local == 0)
		return ACCOUNT_RESOLVE_NOT_LOCAL;
	if (account_address_parse(address, false, true, addr, &why) < 0)
		return ACCOUNT_RESOLVE_NO_SUCH_USER;

	struct resolve_ctx ctx = { .db = db, .r = r, .top = addr };
	int ret = resolve_local(&ctx, addr);
	if (ret < 0) {
		account_targets_free(r);
		return ACCOUNT_RESOLVE_ERROR;
	}
	if (ret == 0 || r->count == 0) {
		account_targets_free(r);
		return ACCOUNT_RESOLVE_NO_SUCH_USER;
	}
	return ACCOUNT_RESOLVE_OK;
}

int account_user_get_hash(struct account_db *db, const char *address, char **hash_r)
{
	char addr[SMTP_ADDRESS_MAX + 1];
	const char *why;

	*hash_r = NULL;
	if (account_address_parse(address, false, true, addr, &why) < 0)
		return 0;
	sqlite3_stmt *st = account_stmt(db, ACCOUNT_STMT_USER_HASH);
	sqlite3_bind_text(st, 1, addr, -1, SQLITE_STATIC);
	int ret = -1;
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		const unsigned char *h = sqlite3_column_text(st, 0);
		*hash_r = strdup(h != NULL ? (const char *)h : "");
		ret = *hash_r != NULL ? 1 : -1;
	} else if (rc == SQLITE_DONE) {
		ret = 0;
	} else {
		account_sql_error(db, "reading a password hash");
	}
	account_stmt_done(st);
	return ret;
}

/* Does the exact address `cand` (a user or a non-catch-all alias) belong to
 * user? 1 yes, 0 no, -1 error; *decided_r false when cand is neither a user
 * nor an alias, so the caller may try the next candidate. */
static int sender_candidate(struct account_db *db, const char *user, const char *cand,
			    bool *decided_r)
{
	struct account_targets t = { NULL, 0 };
	struct resolve_ctx ctx = { .db = db, .r = &t, .no_catchall = true, .top = cand };

	*decided_r = true;
	int ret = resolve_exact(&ctx, cand);
	if (ret > 0) {
		ret = 0;
		for (size_t i = 0; i < t.count; i++) {
			if (t.v[i].local && strcmp(t.v[i].address, user) == 0) {
				ret = 1;
				break;
			}
		}
	} else if (ret == 0) {
		*decided_r = false;
	}
	account_targets_free(&t);
	return ret;
}

int account_sender_allowed(struct account_db *db, const char *user, const char *sender)
{
	char u[SMTP_ADDRESS_MAX + 1], s[SMTP_ADDRESS_MAX + 1], base[SMTP_ADDRESS_MAX + 1];
	const char *why;
	bool decided;

	if (account_address_parse(user, false, true, u, &why) < 0 ||
	    account_address_parse(sender, false, true, s, &why) < 0)
		return 0;
	if (strcmp(s, u) == 0)
		return 1;
	/* Same order as resolution: the exact address decides when it is a
	 * user (someone else's: "bob+x" may be a user of its own) or an alias;
	 * only otherwise does the untagged address count. */
	int ret = sender_candidate(db, u, s, &decided);
	if (decided || !strip_tag(s, base))
		return ret;
	if (strcmp(base, u) == 0)
		return 1;
	return sender_candidate(db, u, base, &decided);
}
