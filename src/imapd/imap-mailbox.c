/*
 * imap-mailbox.c — mailbox-level IMAP commands in the imapd worker:
 * CREATE, DELETE, RENAME, SUBSCRIBE, UNSUBSCRIBE (RFC 9051 6.3), LIST with
 * LIST-EXTENDED selection and return options (RFC 5258: SUBSCRIBED,
 * CHILDREN, RECURSIVEMATCH; SPECIAL-USE RFC 6154; STATUS RFC 5819), LSUB
 * (RFC 3501), STATUS (with SIZE, RFC 8438, and HIGHESTMODSEQ, RFC 7162),
 * APPEND (MULTIAPPEND RFC 3502, APPENDLIMIT RFC 7889, LITERAL+ RFC 7888,
 * BINARY literal8 RFC 3516, APPENDUID RFC 4315), GETQUOTA, GETQUOTAROOT,
 * SETQUOTA (RFC 9208).
 *
 * APPEND literals: an announced size over the limit is refused before a
 * byte of it is read ([TOOBIG], and no "+" for a synchronising literal).
 * Small literals stay in the parser's memory (up to IMAP_APPEND_MEM_MAX
 * per command); bigger ones are streamed by a parser sink into an
 * anonymous file in the user's Maildir tmp/ on the same file system, and
 * copied into the store by the command's job. Memory per session stays
 * bounded whatever the message size.
 */
#include "imapd/imap-private.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "lib/log.h"
#include "lib/util.h"
#include "lib-imap/imap-search.h"
#include "lib-imap/imap-util.h"

/* ---- simple mailbox commands ---- */

int imap_cmd_mailbox_check(struct imap_cmd *cmd)
{
	if (cmd->nargs != 1) {
		imap_cmd_bad(cmd, "Syntax: %s mailbox", cmd->def->name);
		return -1;
	}
	char *name = imap_mailbox_arg(cmd->s, &cmd->args[0]);
	if (name == NULL) {
		imap_cmd_bad(cmd, "Invalid mailbox name");
		return -1;
	}
	cmd->priv = name;
	cmd->priv_free = free;
	return 0;
}

int imap_cmd_create_check(struct imap_cmd *cmd)
{
	/* CREATE mailbox [(USE (...))]: the RFC 6154 parameter is ignored */
	if (cmd->nargs == 2 && imap_arg_is_list(&cmd->args[1])) {
		cmd->nargs = 1;
	}
	if (imap_cmd_mailbox_check(cmd) < 0)
		return -1;
	char *name = cmd->priv;
	size_t len = strlen(name);
	/* RFC 9051 6.3.4: a trailing delimiter only says children will come */
	while (len > 0 && name[len - 1] == MSTORE_DELIMITER)
		name[--len] = '\0';
	if (len == 0) {
		imap_cmd_bad(cmd, "Invalid mailbox name");
		return -1;
	}
	return 0;
}

void imap_cmd_create_run(struct imap_cmd *cmd)
{
	const char *name = cmd->priv;
	if (strcmp(name, "INBOX") == 0) {
		imap_cmd_no(cmd, "[ALREADYEXISTS] INBOX always exists");
		return;
	}
	if (mstore_folder_create(cmd->s->store, name, 0) < 0) {
		imap_cmd_store_error(cmd, "CREATE");
		return;
	}
	imap_cmd_ok(cmd, "CREATE completed");
}

void imap_cmd_delete_run(struct imap_cmd *cmd)
{
	struct imap_session *s = cmd->s;
	const char *name = cmd->priv;
	if (strcmp(name, "INBOX") == 0) {
		imap_cmd_no(cmd, "[CANNOT] INBOX cannot be deleted");
		return;
	}
	/* Deleting the selected mailbox: unselect it first (RFC 9051 6.3.5
	 * leaves this to the server; the view would point at nothing). */
	if (s->mbox != NULL && strcmp(mbox_name(s->mbox), name) == 0) {
		imap_unselect(s);
		if (s->rev2 || s->qresync)
			imap_out(s, "* OK [CLOSED] Mailbox deleted\r\n");
	}
	if (mstore_folder_delete(s->store, name) < 0) {
		imap_cmd_store_error(cmd, "DELETE");
		return;
	}
	imap_cmd_ok(cmd, "DELETE completed");
}

struct rename_priv {
	char *from, *to;
};

static void rename_priv_free(void *p)
{
	struct rename_priv *rp = p;
	free(rp->from);
	free(rp->to);
	free(rp);
}

int imap_cmd_rename_check(struct imap_cmd *cmd)
{
	if (cmd->nargs != 2) {
		imap_cmd_bad(cmd, "Syntax: RENAME from to");
		return -1;
	}
	struct rename_priv *rp = calloc(1, sizeof(*rp));
	if (rp == NULL)
		return -1;
	cmd->priv = rp;
	cmd->priv_free = rename_priv_free;
	rp->from = imap_mailbox_arg(cmd->s, &cmd->args[0]);
	rp->to = imap_mailbox_arg(cmd->s, &cmd->args[1]);
	if (rp->from == NULL || rp->to == NULL || rp->to[0] == '\0') {
		imap_cmd_bad(cmd, "Invalid mailbox name");
		return -1;
	}
	return 0;
}

void imap_cmd_rename_run(struct imap_cmd *cmd)
{
	struct rename_priv *rp = cmd->priv;
	if (strcmp(rp->to, "INBOX") == 0) {
		imap_cmd_no(cmd, "[ALREADYEXISTS] INBOX always exists");
		return;
	}
	if (mstore_folder_rename(cmd->s->store, rp->from, rp->to) < 0) {
		imap_cmd_store_error(cmd, "RENAME");
		return;
	}
	imap_cmd_ok(cmd, "RENAME completed");
}

void imap_cmd_subscribe_run(struct imap_cmd *cmd)
{
	if (mstore_folder_subscribe(cmd->s->store, cmd->priv, true) < 0) {
		imap_cmd_store_error(cmd, "SUBSCRIBE");
		return;
	}
	imap_cmd_ok(cmd, "SUBSCRIBE completed");
}

void imap_cmd_unsubscribe_run(struct imap_cmd *cmd)
{
	if (mstore_folder_subscribe(cmd->s->store, cmd->priv, false) < 0) {
		imap_cmd_store_error(cmd, "UNSUBSCRIBE");
		return;
	}
	imap_cmd_ok(cmd, "UNSUBSCRIBE completed");
}

/* ---- STATUS ---- */

#define ST_MESSAGES      0x001u
#define ST_RECENT        0x002u
#define ST_UIDNEXT       0x004u
#define ST_UIDVALIDITY   0x008u
#define ST_UNSEEN        0x010u
#define ST_DELETED       0x020u
#define ST_SIZE          0x040u
#define ST_HIGHESTMODSEQ 0x080u
#define ST_APPENDLIMIT   0x100u

static const struct {
	const char *name;
	unsigned bit;
} status_items[] = {
	{ "MESSAGES", ST_MESSAGES }, { "RECENT", ST_RECENT }, { "UIDNEXT", ST_UIDNEXT },
	{ "UIDVALIDITY", ST_UIDVALIDITY }, { "UNSEEN", ST_UNSEEN }, { "DELETED", ST_DELETED },
	{ "SIZE", ST_SIZE }, { "HIGHESTMODSEQ", ST_HIGHESTMODSEQ },
	{ "APPENDLIMIT", ST_APPENDLIMIT },
};

static int status_parse_items(const struct imap_arg *list, unsigned *items_r)
{
	unsigned items = 0;
	if (!imap_arg_is_list(list) || list->count == 0)
		return -1;
	for (unsigned i = 0; i < list->count; i++) {
		const char *a = imap_arg_atom(&list->list[i]);
		unsigned bit = 0;
		for (size_t j = 0; a != NULL && j < sizeof(status_items) / sizeof(status_items[0]);
		     j++) {
			if (strcasecmp(a, status_items[j].name) == 0)
				bit = status_items[j].bit;
		}
		if (bit == 0)
			return -1;
		items |= bit;
	}
	*items_r = items;
	return 0;
}

/* "* STATUS name (...)" for one folder; 0, or -1 with the store error. */
static int status_write(struct imap_session *s, const char *name, unsigned items)
{
	struct mstore_status st;
	if (mstore_folder_status(s->store, name, &st) < 0)
		return -1;
	if (items & ST_HIGHESTMODSEQ)
		s->condstore = true; /* RFC 7162 3.1: a CONDSTORE-enabling command */
	struct buf *out = &s->out;
	buf_append_str(out, "* STATUS ");
	imap_write_mailbox(s, out, name);
	buf_append_str(out, " (");
	const char *sep = "";
	for (size_t j = 0; j < sizeof(status_items) / sizeof(status_items[0]); j++) {
		unsigned bit = status_items[j].bit;
		if ((items & bit) == 0)
			continue;
		unsigned long long v = 0;
		switch (bit) {
		case ST_MESSAGES: v = st.messages; break;
		case ST_RECENT: v = st.recent; break;
		case ST_UIDNEXT: v = st.uidnext; break;
		case ST_UIDVALIDITY: v = st.uidvalidity; break;
		case ST_UNSEEN: v = st.unseen; break;
		case ST_DELETED: v = st.deleted; break;
		case ST_SIZE: v = st.size; break;
		case ST_HIGHESTMODSEQ: v = st.highestmodseq; break;
		case ST_APPENDLIMIT: v = s->server->cfg->imap_max_append_size; break;
		default: break;
		}
		buf_printf(out, "%s%s %llu", sep, status_items[j].name, v);
		sep = " ";
	}
	return buf_append_str(out, ")\r\n");
}

struct status_priv {
	char *name;
	unsigned items;
};

static void status_priv_free(void *p)
{
	struct status_priv *sp = p;
	free(sp->name);
	free(sp);
}

int imap_cmd_status_check(struct imap_cmd *cmd)
{
	if (cmd->nargs != 2) {
		imap_cmd_bad(cmd, "Syntax: STATUS mailbox (items)");
		return -1;
	}
	struct status_priv *sp = calloc(1, sizeof(*sp));
	if (sp == NULL)
		return -1;
	cmd->priv = sp;
	cmd->priv_free = status_priv_free;
	sp->name = imap_mailbox_arg(cmd->s, &cmd->args[0]);
	if (sp->name == NULL) {
		imap_cmd_bad(cmd, "Invalid mailbox name");
		return -1;
	}
	if (status_parse_items(&cmd->args[1], &sp->items) < 0) {
		imap_cmd_bad(cmd, "Invalid STATUS items");
		return -1;
	}
	return 0;
}

void imap_cmd_status_run(struct imap_cmd *cmd)
{
	struct status_priv *sp = cmd->priv;
	if (status_write(cmd->s, sp->name, sp->items) < 0) {
		imap_cmd_store_error(cmd, "STATUS");
		return;
	}
	imap_cmd_ok(cmd, "STATUS completed");
}

/* ---- LIST / LSUB ---- */

#define LIST_SEL_SUBSCRIBED   0x01u
#define LIST_SEL_SPECIALUSE   0x02u
#define LIST_SEL_RECURSIVE    0x04u
#define LIST_RET_SUBSCRIBED   0x10u
#define LIST_RET_CHILDREN     0x20u
#define LIST_RET_SPECIALUSE   0x40u
#define LIST_RET_STATUS       0x80u

#define LIST_MAX_PATTERNS 32

struct list_priv {
	bool lsub;
	unsigned opts;
	unsigned status_items;
	char *patterns[LIST_MAX_PATTERNS];  /* reference + pattern, UTF-8 */
	unsigned npatterns;
	bool empty_pattern;                 /* LIST "" "": the delimiter */
	/* the folders, copied from mstore_folder_list */
	struct list_folder {
		char *name;
		unsigned special_use;
		bool subscribed, has_children, nonexistent;
	} *folders;
	size_t nfolders, folders_alloc;
	bool oom;
};

static void list_priv_free(void *p)
{
	struct list_priv *lp = p;
	for (unsigned i = 0; i < lp->npatterns; i++)
		free(lp->patterns[i]);
	for (size_t i = 0; i < lp->nfolders; i++)
		free(lp->folders[i].name);
	free(lp->folders);
	free(lp);
}

static int list_add_pattern(struct imap_cmd *cmd, struct list_priv *lp, const char *ref,
			    const struct imap_arg *arg)
{
	if (lp->npatterns >= LIST_MAX_PATTERNS)
		return -1;
	char *pat = imap_mailbox_arg(cmd->s, arg);
	if (pat == NULL)
		return -1;
	if (*pat == '\0' && !lp->lsub) {
		lp->empty_pattern = true;
		free(pat);
		return 0;
	}
	size_t rl = strlen(ref), pl = strlen(pat);
	char *full = malloc(rl + pl + 1);
	if (full == NULL) {
		free(pat);
		return -1;
	}
	memcpy(full, ref, rl);
	memcpy(full + rl, pat, pl + 1);
	free(pat);
	/* INBOX is case-insensitive in patterns too */
	if (strncasecmp(full, "INBOX", 5) == 0 && (full[5] == '\0' || full[5] == MSTORE_DELIMITER ||
						   full[5] == '*' || full[5] == '%'))
		memcpy(full, "INBOX", 5);
	lp->patterns[lp->npatterns++] = full;
	return 0;
}

static int list_parse_options(const struct imap_arg *list, bool ret, unsigned *opts,
			      unsigned *items_r)
{
	if (!imap_arg_is_list(list))
		return -1;
	for (unsigned i = 0; i < list->count; i++) {
		const char *o = imap_arg_atom(&list->list[i]);
		if (o == NULL)
			return -1;
		if (!ret && strcasecmp(o, "SUBSCRIBED") == 0)
			*opts |= LIST_SEL_SUBSCRIBED;
		else if (!ret && strcasecmp(o, "SPECIAL-USE") == 0)
			*opts |= LIST_SEL_SPECIALUSE;
		else if (!ret && strcasecmp(o, "RECURSIVEMATCH") == 0)
			*opts |= LIST_SEL_RECURSIVE;
		else if (!ret && strcasecmp(o, "REMOTE") == 0)
			continue;
		else if (ret && strcasecmp(o, "SUBSCRIBED") == 0)
			*opts |= LIST_RET_SUBSCRIBED;
		else if (ret && strcasecmp(o, "CHILDREN") == 0)
			*opts |= LIST_RET_CHILDREN;
		else if (ret && strcasecmp(o, "SPECIAL-USE") == 0)
			*opts |= LIST_RET_SPECIALUSE;
		else if (ret && strcasecmp(o, "STATUS") == 0 && i + 1 < list->count) {
			if (status_parse_items(&list->list[++i], items_r) < 0)
				return -1;
			*opts |= LIST_RET_STATUS;
		} else
			return -1;
	}
	/* RFC 5258 3: RECURSIVEMATCH needs another selection option */
	if ((*opts & LIST_SEL_RECURSIVE) != 0 && (*opts & LIST_SEL_SUBSCRIBED) == 0)
		return -1;
	return 0;
}

static int list_check_common(struct imap_cmd *cmd, bool lsub)
{
	struct list_priv *lp = calloc(1, sizeof(*lp));
	if (lp == NULL)
		return -1;
	cmd->priv = lp;
	cmd->priv_free = list_priv_free;
	lp->lsub = lsub;
	unsigned i = 0;
	if (!lsub && i < cmd->nargs && imap_arg_is_list(&cmd->args[i])) {
		if (list_parse_options(&cmd->args[i], false, &lp->opts, &lp->status_items) < 0)
			goto bad;
		i++;
	}
	if (cmd->nargs < i + 2)
		goto bad;
	char *ref = imap_mailbox_arg(cmd->s, &cmd->args[i]);
	if (ref == NULL)
		goto bad;
	const struct imap_arg *pats = &cmd->args[i + 1];
	int ret = 0;
	if (!lsub && imap_arg_is_list(pats)) {
		for (unsigned j = 0; j < pats->count && ret == 0; j++)
			ret = list_add_pattern(cmd, lp, ref, &pats->list[j]);
	} else {
		ret = list_add_pattern(cmd, lp, ref, pats);
	}
	free(ref);
	if (ret < 0)
		goto bad;
	i += 2;
	if (!lsub && i < cmd->nargs) {
		const char *r = imap_arg_atom(&cmd->args[i]);
		if (r == NULL || strcasecmp(r, "RETURN") != 0 || i + 2 != cmd->nargs ||
		    list_parse_options(&cmd->args[i + 1], true, &lp->opts, &lp->status_items) < 0)
			goto bad;
		i += 2;
	}
	if (i != cmd->nargs)
		goto bad;
	return 0;
bad:
	imap_cmd_bad(cmd, lsub ? "Syntax: LSUB reference pattern"
			       : "Syntax: LIST [(options)] reference pattern [RETURN (options)]");
	return -1;
}

int imap_cmd_list_check(struct imap_cmd *cmd)
{
	return list_check_common(cmd, false);
}

int imap_cmd_lsub_check(struct imap_cmd *cmd)
{
	return list_check_common(cmd, true);
}

/* IMAP LIST wildcards: '*' matches anything, '%' anything but the
 * delimiter. Dynamic programming over the pattern, O(len(p) * len(n)). */
static bool list_match(const char *pat, const char *name)
{
	size_t pl = strlen(pat), nl = strlen(name);
	bool small[256];
	bool *row = nl + 1 <= sizeof(small) / sizeof(small[0]) ? small : malloc(nl + 1);
	if (row == NULL)
		return false;
	/* row[j]: pat[0..i) matches name[0..j) */
	row[0] = true;
	for (size_t j = 1; j <= nl; j++)
		row[j] = false;
	for (size_t i = 0; i < pl; i++) {
		char c = pat[i];
		if (c == '*' || c == '%') {
			/* row[j] = any row[k] for k <= j where name[k..j) has no
			 * delimiter (for '%') */
			bool run = false;
			for (size_t j = 0; j <= nl; j++) {
				if (c == '%' && j > 0 && name[j - 1] == MSTORE_DELIMITER)
					run = false;
				run = run || row[j];
				row[j] = run;
			}
		} else {
			for (size_t j = nl; j > 0; j--)
				row[j] = row[j - 1] && name[j - 1] == c;
			row[0] = false;
		}
	}
	bool ok = row[nl];
	if (row != small)
		free(row);
	return ok;
}

static void list_collect_cb(const struct mstore_folder *f, void *ctx)
{
	struct list_priv *lp = ctx;
	if (lp->oom)
		return;
	if (lp->nfolders == lp->folders_alloc) {
		size_t n = lp->folders_alloc == 0 ? 16 : lp->folders_alloc * 2;
		struct list_folder *nf = realloc(lp->folders, n * sizeof(*nf));
		if (nf == NULL) {
			lp->oom = true;
			return;
		}
		lp->folders = nf;
		lp->folders_alloc = n;
	}
	struct list_folder *lf = &lp->folders[lp->nfolders];
	lf->name = strdup(f->name);
	if (lf->name == NULL) {
		lp->oom = true;
		return;
	}
	lf->special_use = f->special_use;
	lf->subscribed = f->subscribed;
	lf->has_children = f->has_children;
	lf->nonexistent = f->nonexistent;
	lp->nfolders++;
}

static void list_write_special(struct buf *out, unsigned su, const char **sep)
{
	static const struct {
		unsigned bit;
		const char *name;
	} names[] = {
		{ MSTORE_SPECIAL_SENT, "\\Sent" }, { MSTORE_SPECIAL_DRAFTS, "\\Drafts" },
		{ MSTORE_SPECIAL_TRASH, "\\Trash" }, { MSTORE_SPECIAL_JUNK, "\\Junk" },
		{ MSTORE_SPECIAL_ARCHIVE, "\\Archive" },
	};
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (su & names[i].bit) {
			buf_printf(out, "%s%s", *sep, names[i].name);
			*sep = " ";
		}
	}
}

static bool list_match_any(const struct list_priv *lp, const char *name)
{
	for (unsigned p = 0; p < lp->npatterns; p++)
		if (list_match(lp->patterns[p], name))
			return true;
	return false;
}

/* A parent name of a subscribed folder (RFC 5258 3.5 RECURSIVEMATCH,
 * RFC 3501 6.3.9 LSUB): hidden when one of the subscribed folders below
 * it does not match the patterns; listed when a folder of that name was
 * listed already. */
struct list_parent {
	char *name;
	bool hidden;
	bool listed;
};

static int list_parent_cmp(const void *a, const void *b)
{
	return strcmp(((const struct list_parent *)a)->name, ((const struct list_parent *)b)->name);
}

static void list_parents_free(struct list_parent *pa, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(pa[i].name);
	free(pa);
}

/* The parent names of every subscribed folder, sorted and unique; 0 or -1
 * (out of memory). */
static int list_parents(const struct list_priv *lp, struct list_parent **pa_r, size_t *n_r)
{
	struct list_parent *pa = NULL;
	size_t n = 0, alloc = 0;
	*pa_r = NULL;
	*n_r = 0;
	for (size_t i = 0; i < lp->nfolders; i++) {
		const struct list_folder *f = &lp->folders[i];
		if (!f->subscribed || strchr(f->name, MSTORE_DELIMITER) == NULL)
			continue;
		bool hidden = !list_match_any(lp, f->name);
		for (const char *d = strchr(f->name, MSTORE_DELIMITER); d != NULL;
		     d = strchr(d + 1, MSTORE_DELIMITER)) {
			if (n == alloc) {
				size_t na = alloc == 0 ? 16 : alloc * 2;
				struct list_parent *np = realloc(pa, na * sizeof(*np));
				if (np == NULL)
					goto nomem;
				pa = np;
				alloc = na;
			}
			pa[n].name = strndup(f->name, (size_t)(d - f->name));
			if (pa[n].name == NULL)
				goto nomem;
			pa[n].hidden = hidden;
			pa[n].listed = false;
			n++;
		}
	}
	if (n > 1) {
		qsort(pa, n, sizeof(*pa), list_parent_cmp);
		size_t o = 0;
		for (size_t i = 1; i < n; i++) {
			if (strcmp(pa[i].name, pa[o].name) == 0) {
				pa[o].hidden = pa[o].hidden || pa[i].hidden;
				free(pa[i].name);
			} else {
				pa[++o] = pa[i];
			}
		}
		n = o + 1;
	}
	*pa_r = pa;
	*n_r = n;
	return 0;
nomem:
	list_parents_free(pa, n);
	return -1;
}

static struct list_parent *list_parent_find(struct list_parent *pa, size_t n, const char *name)
{
	struct list_parent key = { .name = (char *)(uintptr_t)name };
	return n == 0 ? NULL : bsearch(&key, pa, n, sizeof(*pa), list_parent_cmp);
}

void imap_cmd_list_run(struct imap_cmd *cmd)
{
	struct imap_session *s = cmd->s;
	struct list_priv *lp = cmd->priv;
	struct buf *out = &s->out;

	if (lp->empty_pattern && lp->npatterns == 0) {
		/* RFC 9051 6.3.9: the hierarchy delimiter and root */
		imap_out(s, "* LIST (\\Noselect) \".\" \"\"\r\n");
		imap_cmd_ok(cmd, "LIST completed");
		return;
	}
	if (mstore_folder_list(s->store, list_collect_cb, lp) < 0) {
		imap_cmd_store_error(cmd, "LIST");
		return;
	}
	if (lp->oom) {
		imap_cmd_serverbug(cmd, "out of memory listing folders");
		return;
	}
	bool sel_sub = lp->lsub || (lp->opts & LIST_SEL_SUBSCRIBED) != 0;
	bool show_sub = (lp->opts & (LIST_SEL_SUBSCRIBED | LIST_RET_SUBSCRIBED)) != 0;
	/* RFC 5258 3.5: with RECURSIVEMATCH a parent of a subscribed folder
	 * is listed with CHILDINFO ("SUBSCRIBED"); RFC 3501 6.3.9: LSUB lists
	 * an unsubscribed parent of a subscribed folder that the pattern
	 * hides ("%") as \Noselect. */
	bool recursive = !lp->lsub && (lp->opts & LIST_SEL_RECURSIVE) != 0;
	struct list_parent *parents = NULL;
	size_t nparents = 0;
	if ((recursive || lp->lsub) && list_parents(lp, &parents, &nparents) < 0) {
		imap_cmd_serverbug(cmd, "out of memory listing folders");
		return;
	}
	for (size_t i = 0; i < lp->nfolders + nparents; i++) {
		struct list_folder synth = { 0 };
		const struct list_folder *f = &synth;
		struct list_parent *parent;
		if (i < lp->nfolders) {
			f = &lp->folders[i];
			parent = list_parent_find(parents, nparents, f->name);
			if (parent != NULL)
				parent->listed = true;
		} else {
			/* then the parents no folder stands for (names that
			 * exist only through subscribed children) */
			parent = &parents[i - lp->nfolders];
			if (parent->listed)
				continue;
			synth.name = parent->name;
			synth.nonexistent = true;
			synth.has_children = true;
		}
		if (!list_match_any(lp, f->name))
			continue;
		bool childinfo = recursive && parent != NULL;
		bool noselect = false;
		if (sel_sub && !f->subscribed) {
			if (lp->lsub && parent != NULL && parent->hidden)
				noselect = true;
			else if (!childinfo)
				continue;
		}
		if ((lp->opts & LIST_SEL_SPECIALUSE) && f->special_use == 0)
			continue;
		/* A deleted parent that still has children, or a subscription
		 * to a name that is gone: only where the RFCs want them. */
		if (f->nonexistent && !sel_sub && !f->has_children)
			continue;
		buf_printf(out, "* %s (", lp->lsub ? "LSUB" : "LIST");
		const char *sep = "";
		if (noselect && !f->nonexistent) {
			buf_append_str(out, "\\Noselect");
			sep = " ";
		}
		if (f->nonexistent) {
			buf_printf(out, "%s%s", sep, lp->lsub || !s->rev2 ? "\\Noselect"
								     : "\\NonExistent");
			sep = " ";
		}
		if (!lp->lsub) {
			buf_printf(out, "%s%s", sep, f->has_children ? "\\HasChildren"
								       : "\\HasNoChildren");
			sep = " ";
			if (show_sub && f->subscribed) {
				buf_printf(out, "%s\\Subscribed", sep);
			}
			list_write_special(out, f->special_use, &sep);
		}
		buf_append_str(out, ") \".\" ");
		imap_write_mailbox(s, out, f->name);
		if (childinfo)
			buf_append_str(out, " (\"CHILDINFO\" (\"SUBSCRIBED\"))");
		buf_append_str(out, "\r\n");
		if ((lp->opts & LIST_RET_STATUS) && !f->nonexistent) {
			/* RFC 5819: a folder that cannot be opened just gets no
			 * STATUS line */
			if (status_write(s, f->name, lp->status_items) < 0) {
				enum mstore_err code;
				log_warn("session=%llx LIST-STATUS %s: %s", IMAP_SID(s), f->name,
					 mstore_error(s->store, &code));
			}
		}
	}
	list_parents_free(parents, nparents);
	imap_cmd_ok(cmd, "%s completed", lp->lsub ? "LSUB" : "LIST");
}

/* ---- QUOTA (RFC 9208) ---- */

static void quota_write(struct imap_session *s)
{
	uint64_t bytes = 0, messages = 0;
	if (mstore_quota(s->store, &bytes, &messages) < 0) {
		bytes = 0;
		messages = 0;
	}
	imap_out(s, "* QUOTA \"\" (");
	const char *sep = "";
	if (s->quota_bytes > 0) {
		imap_out(s, "STORAGE %llu %llu", (unsigned long long)((bytes + 1023) / 1024),
			 (unsigned long long)(s->quota_bytes / 1024));
		sep = " ";
	}
	if (s->quota_messages > 0)
		imap_out(s, "%sMESSAGE %llu %llu", sep, (unsigned long long)messages,
			 (unsigned long long)s->quota_messages);
	imap_out(s, ")\r\n");
}

int imap_cmd_getquota_check(struct imap_cmd *cmd)
{
	if (cmd->nargs != 1 || imap_arg_astring(&cmd->args[0]) == NULL) {
		imap_cmd_bad(cmd, "Syntax: GETQUOTA root");
		return -1;
	}
	return 0;
}

void imap_cmd_getquota_run(struct imap_cmd *cmd)
{
	if (*imap_arg_astring(&cmd->args[0]) != '\0') {
		imap_cmd_no(cmd, "[NONEXISTENT] No such quota root");
		return;
	}
	quota_write(cmd->s);
	imap_cmd_ok(cmd, "GETQUOTA completed");
}

int imap_cmd_getquotaroot_check(struct imap_cmd *cmd)
{
	return imap_cmd_mailbox_check(cmd);
}

void imap_cmd_getquotaroot_run(struct imap_cmd *cmd)
{
	struct imap_session *s = cmd->s;
	const char *name = cmd->priv;
	int ex = mstore_folder_exists(s->store, name, NULL);
	if (ex < 0) {
		imap_cmd_store_error(cmd, "GETQUOTAROOT");
		return;
	}
	if (ex == 0) {
		imap_cmd_no(cmd, "[NONEXISTENT] No such mailbox");
		return;
	}
	imap_out(s, "* QUOTAROOT ");
	imap_write_mailbox(s, &s->out, name);
	imap_out(s, " \"\"\r\n");
	quota_write(s);
	imap_cmd_ok(cmd, "GETQUOTAROOT completed");
}

int imap_cmd_setquota_check(struct imap_cmd *cmd)
{
	imap_cmd_no(cmd, "[NOPERM] Quotas are set by the administrator");
	return -1;
}

/* ---- APPEND ---- */

void imap_append_spool_reset(struct imap_session *s)
{
	if (s->spool.fd >= 0)
		close(s->spool.fd);
	memset(&s->spool, 0, sizeof(s->spool));
	s->spool.fd = -1;
}

static int imap_append_spool_open(struct imap_session *s)
{
	char dir[sizeof(s->root) + 8];
	snprintf(dir, sizeof(dir), "%s/tmp", s->root);
	int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd < 0) {
		char path[sizeof(dir) + 32];
		snprintf(path, sizeof(path), "%s/append.XXXXXX", dir);
		fd = mkostemp(path, O_CLOEXEC);
		if (fd >= 0)
			unlink(path);
	}
	if (fd < 0) {
		log_error("session=%llx cannot create an APPEND spool in %s: %s", IMAP_SID(s), dir,
			  strerror(errno));
		return -1;
	}
	s->spool.fd = fd;
	return 0;
}

static int imap_append_sink_cb(void *ctx, const char *data, size_t len)
{
	struct imap_session *s = ctx;
	if (write_full(s->spool.fd, data, len) < 0) {
		log_error("session=%llx APPEND spool write: %s", IMAP_SID(s), strerror(errno));
		snprintf(s->spool.failed_text, sizeof(s->spool.failed_text), "%s",
			 errno == ENOSPC || errno == EDQUOT ? "[OVERQUOTA] No space left"
							   : "[SERVERBUG] Cannot store the message");
		return -1;
	}
	s->spool.size += len;
	return 0;
}

int imap_append_literal(struct imap_session *s, const struct imap_literal_info *info)
{
	const char *tag = imap_parser_tag(s->parser);
	uint64_t limit = s->server->cfg->imap_max_append_size;
	const char *refuse = NULL;
	if (limit > 0 && info->size > limit)
		refuse = "[TOOBIG] Message too large";
	else if (s->spool.count >= sizeof(s->spool.offsets) / sizeof(s->spool.offsets[0]))
		refuse = "[LIMIT] Too many messages in one APPEND";
	if (refuse != NULL) {
		/* RFC 7889: refused before it is read; no "+" for {N}. */
		imap_parser_literal_reject(s->parser);
		struct buf line;
		buf_init(&line, 1024);
		buf_printf(&line, "%s NO %s\r\n", tag, refuse);
		imap_out_raw(s, line.data, line.len);
		buf_free(&line);
		imap_session_flush(s);
		imap_parser_reset(s->parser);
		imap_append_spool_reset(s);
		return -1;
	}
	if (info->size <= 1024u * 1024 && s->spool.mem_total + info->size <= IMAP_APPEND_MEM_MAX) {
		s->spool.mem_total += info->size;
		imap_parser_literal_accept(s->parser, NULL, NULL);
		return 0;
	}
	if (s->spool.fd < 0 && imap_append_spool_open(s) < 0) {
		imap_parser_literal_reject(s->parser);
		imap_out(s, "%s NO [SERVERBUG] Cannot store the message\r\n", tag);
		imap_session_flush(s);
		imap_parser_reset(s->parser);
		imap_append_spool_reset(s);
		return -1;
	}
	s->spool.offsets[s->spool.count] = s->spool.size;
	s->spool.sizes[s->spool.count] = info->size;
	s->spool.count++;
	imap_parser_literal_accept(s->parser, imap_append_sink_cb, s);
	return 0;
}

struct append_msg {
	uint32_t flags;
	char *keywords;
	int64_t date;
	const struct imap_arg *literal;
	int spool_index;            /* -1: in memory */
};

struct append_priv {
	char *name;
	struct append_msg msgs[64];
	unsigned count;
};

static void append_priv_free(void *p)
{
	struct append_priv *ap = p;
	free(ap->name);
	for (unsigned i = 0; i < ap->count; i++)
		free(ap->msgs[i].keywords);
	free(ap);
}

int imap_cmd_append_check(struct imap_cmd *cmd)
{
	struct imap_session *s = cmd->s;
	struct append_priv *ap = calloc(1, sizeof(*ap));
	const char *error = NULL;
	if (ap == NULL)
		return -1;
	cmd->priv = ap;
	cmd->priv_free = append_priv_free;
	if (cmd->nargs < 2)
		goto bad;
	if (cmd->args[0].type == IMAP_ARG_LITERAL && cmd->args[0].str == NULL)
		goto bad;
	ap->name = imap_mailbox_arg(s, &cmd->args[0]);
	if (ap->name == NULL) {
		imap_cmd_bad(cmd, "Invalid mailbox name");
		return -1;
	}
	int sunk = 0;
	unsigned i = 1;
	while (i < cmd->nargs) {
		if (ap->count >= sizeof(ap->msgs) / sizeof(ap->msgs[0]))
			goto bad;
		struct append_msg *m = &ap->msgs[ap->count];
		m->spool_index = -1;
		if (imap_arg_is_list(&cmd->args[i])) {
			if (imap_parse_flags(&cmd->args[i], &m->flags, &m->keywords, &error) < 0) {
				ap->count++; /* free keywords */
				imap_cmd_bad(cmd, "%s", error != NULL ? error : "Invalid flags");
				return -1;
			}
			m->flags &= ~IMAP_FLAG_RECENT;
			i++;
		}
		if (i < cmd->nargs && cmd->args[i].type == IMAP_ARG_STRING) {
			m->date = imap_datetime_parse(cmd->args[i].str);
			if (m->date < 0) {
				ap->count++;
				imap_cmd_bad(cmd, "Invalid date-time");
				return -1;
			}
			i++;
		}
		ap->count++;
		if (i >= cmd->nargs || cmd->args[i].type != IMAP_ARG_LITERAL)
			goto bad;
		m->literal = &cmd->args[i];
		if (m->literal->str == NULL) {
			if (sunk >= (int)s->spool.count)
				goto bad;
			m->spool_index = sunk++;
		}
		i++;
	}
	if (ap->count == 0)
		goto bad;
	return 0;
bad:
	imap_cmd_bad(cmd, "Syntax: APPEND mailbox [(flags)] [date-time] literal");
	return -1;
}

/* Copies one spooled literal into the append. */
static int append_from_spool(struct imap_session *s, unsigned idx, struct mstore_append *a)
{
	char piece[IMAP_STREAM_PIECE];
	uint64_t off = s->spool.offsets[idx];
	uint64_t left = s->spool.sizes[idx];
	while (left > 0) {
		size_t want = left < sizeof(piece) ? (size_t)left : sizeof(piece);
		ssize_t n = pread(s->spool.fd, piece, want, (off_t)off);
		if (n <= 0)
			return -1;
		if (mstore_append_write(a, piece, (size_t)n) < 0)
			return -1;
		off += (uint64_t)n;
		left -= (uint64_t)n;
	}
	return 0;
}

void imap_cmd_append_run(struct imap_cmd *cmd)
{
	struct imap_session *s = cmd->s;
	struct append_priv *ap = cmd->priv;
	struct mstore_append *appends[64];
	uint32_t uids[64];
	uint32_t uidvalidity = 0;
	unsigned n = 0;

	for (unsigned i = 0; i < ap->count; i++) {
		struct append_msg *m = &ap->msgs[i];
		uint64_t size = m->literal->len;
		if (size == 0) {
			imap_cmd_no(cmd, "[CANNOT] Empty message");
			goto fail;
		}
		if (mstore_append_begin(s->store, ap->name, size, &appends[n]) < 0) {
			enum mstore_err code;
			const char *text = mstore_error(s->store, &code);
			if (code == MSTORE_ERR_NONEXISTENT)
				imap_cmd_no(cmd, "[TRYCREATE] %s", text != NULL ? text : "No such mailbox");
			else
				imap_cmd_store_error(cmd, "APPEND begin");
			goto fail;
		}
		n++;
		int ret = m->spool_index >= 0
				  ? append_from_spool(s, (unsigned)m->spool_index, appends[n - 1])
				  : mstore_append_write(appends[n - 1], m->literal->str, m->literal->len);
		if (ret < 0) {
			imap_cmd_store_error(cmd, "APPEND write");
			goto fail;
		}
		mstore_append_set(appends[n - 1], m->flags, m->keywords, m->date);
	}
	if (mstore_append_commit(appends, n, uids, &uidvalidity) < 0) {
		n = 0; /* freed by commit */
		imap_cmd_store_error(cmd, "APPEND commit");
		return;
	}
	struct imap_seqset set;
	memset(&set, 0, sizeof(set));
	for (unsigned i = 0; i < n; i++)
		imap_seqset_add(&set, uids[i]);
	struct buf uidtext;
	buf_init(&uidtext, 4096);
	imap_seqset_write(&set, &uidtext);
	imap_seqset_free(&set);
	imap_cmd_ok(cmd, "[APPENDUID %u %s] APPEND completed", uidvalidity,
		    uidtext.data != NULL ? uidtext.data : "");
	buf_free(&uidtext);
	return;
fail:
	for (unsigned i = 0; i < n; i++)
		mstore_append_abort(&appends[i]);
}
