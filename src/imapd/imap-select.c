/*
 * imap-select.c — the selected state in the imapd worker: SELECT and
 * EXAMINE (RFC 9051 6.3.2/6.3.3, with CONDSTORE and QRESYNC parameters of
 * RFC 7162), CLOSE, UNSELECT (RFC 3691), EXPUNGE, UID EXPUNGE (RFC 4315),
 * CHECK, IDLE (RFC 2177), and the sync that tells the client what changed
 * after each command: EXPUNGE (or VANISHED under QRESYNC), EXISTS, RECENT
 * (IMAP4rev1 only), FETCH FLAGS. Also the sequence-set resolution every
 * selected-state command uses.
 *
 * RFC 9051 7.5.1: no EXPUNGE is sent during FETCH, STORE, SEARCH (and
 * their UID forms): those commands sync with allow_expunge = false, and
 * the messages stay in the view (marked expunged) until a later command.
 */
#include "imapd/imap-private.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/bufferevent.h>
#include <event2/event.h>

#include "lib/log.h"
#include "lib/util.h"
#include "lib-imap/imap-search.h"
#include "lib-imap/imap-util.h"

/* ---- sequence sets ---- */

int imap_parse_set(struct imap_cmd *cmd, const struct imap_arg *arg, bool uid,
		   struct imap_seqset *set_r)
{
	(void)uid;
	memset(set_r, 0, sizeof(*set_r));
	const char *text = imap_arg_atom(arg);
	if (text == NULL || imap_seqset_parse(text, arg->len, set_r) < 0) {
		imap_cmd_bad(cmd, "Invalid sequence set");
		return -1;
	}
	return 0;
}

/* First sequence number whose UID is >= uid (count + 1 when none). */
static uint32_t imap_seq_lower_bound(struct mbox *mbox, uint32_t uid)
{
	uint32_t lo = 1, hi = mbox_count(mbox) + 1;
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		if (mbox_msg(mbox, mid)->uid < uid)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

int imap_set_to_seqs(struct imap_cmd *cmd, struct imap_seqset *set, bool uid, uint32_t **seqs_r,
		     uint32_t *n_r)
{
	struct imap_session *s = cmd->s;
	struct mbox *mbox = s->mbox;
	uint32_t count = mbox_count(mbox);
	uint32_t *seqs = NULL;
	uint32_t n = 0;

	*seqs_r = NULL;
	*n_r = 0;
	if (set->dollar) {
		/* SEARCHRES (RFC 5182): the saved UIDs, whatever the command. */
		if (!s->saved_valid || count == 0)
			return 0;
		seqs = malloc((size_t)count * sizeof(*seqs));
		if (seqs == NULL)
			return -1;
		for (uint32_t seq = 1; seq <= count; seq++) {
			if (imap_seqset_contains(&s->saved, mbox_msg(mbox, seq)->uid))
				seqs[n++] = seq;
		}
		*seqs_r = seqs;
		*n_r = n;
		return 0;
	}
	if (!uid) {
		/* RFC 9051 6.4.5 / 9: a number above the count is an error;
		 * "*" in an empty mailbox just matches nothing. */
		for (unsigned i = 0; i <= set->count; i++) {
			uint32_t hi = i < set->count ? set->ranges[i].hi
				    : set->star ? set->star_hi : 0;
			if (hi > count) {
				imap_cmd_bad(cmd, "Invalid message sequence number");
				return -1;
			}
		}
		imap_seqset_resolve(set, count);
	} else {
		imap_seqset_resolve(set, count > 0 ? mbox_msg(mbox, count)->uid : 0);
	}
	if (count == 0)
		return 0;
	seqs = malloc((size_t)count * sizeof(*seqs));
	if (seqs == NULL)
		return -1;
	uint32_t last = 0;
	for (unsigned i = 0; i < set->count; i++) {
		const struct imap_range *r = &set->ranges[i];
		uint32_t from, to;
		if (!uid) {
			if (r->lo == 0 || r->lo > count)
				continue;
			from = r->lo;
			to = r->hi > count ? count : r->hi;
		} else {
			from = imap_seq_lower_bound(mbox, r->lo);
			if (from > count)
				continue;
			to = r->hi == UINT32_MAX ? count : imap_seq_lower_bound(mbox, r->hi + 1) - 1;
		}
		if (from <= last)
			from = last + 1;
		for (uint32_t seq = from; seq <= to; seq++)
			seqs[n++] = seq;
		if (to > last)
			last = to;
	}
	*seqs_r = seqs;
	*n_r = n;
	return 0;
}

/* ---- untagged updates ---- */

int imap_write_flags_fetch(struct imap_session *s, uint32_t seq, const struct mstore_msg *msg,
			   bool with_uid)
{
	struct buf *out = &s->out;
	uint32_t flags = msg->flags;
	if (s->rev2)
		flags &= ~IMAP_FLAG_RECENT;
	if (buf_printf(out, "* %u FETCH (", seq) < 0)
		return -1;
	if (with_uid && buf_printf(out, "UID %u ", msg->uid) < 0)
		return -1;
	if (buf_append_str(out, "FLAGS ") < 0 || imap_write_flags(out, flags, msg->keywords) < 0)
		return -1;
	if (s->condstore &&
	    buf_printf(out, " MODSEQ (%llu)", (unsigned long long)msg->modseq) < 0)
		return -1;
	return buf_append_str(out, ")\r\n");
}

struct imap_sync_ctx {
	struct imap_session *s;
	struct imap_seqset vanished;
	bool with_uid;
	char *kw_known;      /* keywords the client was told of (malloc'ed), or NULL */
};

/* Whether the space-separated list has keyword w (wl octets); IMAP
 * keywords compare case-insensitively. */
static bool imap_kw_listed(const char *list, const char *w, size_t wl)
{
	for (const char *p = list; *p != '\0';) {
		size_t l = strcspn(p, " ");
		if (l == wl && strncasecmp(p, w, wl) == 0)
			return true;
		p += l;
		while (*p == ' ')
			p++;
	}
	return false;
}

/* Appends to *known (malloc'ed) the keywords of kw it does not have; 1
 * when it added any, 0 none, -1 out of memory. */
static int imap_kw_merge(char **known, const char *kw)
{
	int added = 0;
	for (const char *p = kw != NULL ? kw : ""; *p != '\0';) {
		size_t l = strcspn(p, " ");
		if (l > 0 && !imap_kw_listed(*known, p, l)) {
			size_t kl = strlen(*known);
			char *n = realloc(*known, kl + l + 2);
			if (n == NULL)
				return -1;
			if (kl > 0)
				n[kl++] = ' ';
			memcpy(n + kl, p, l);
			n[kl + l] = '\0';
			*known = n;
			added = 1;
		}
		p += l;
		while (*p == ' ')
			p++;
	}
	return added;
}

/* RFC 9051 7.3.5: FLAGS (and PERMANENTFLAGS, where keywords can be made)
 * again when the mailbox got a keyword the client has not seen. */
static void imap_write_flag_lists(struct imap_session *s, const char *kw)
{
	bool has_kw = kw != NULL && *kw != '\0';
	imap_out(s, "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft%s%s)\r\n",
		 has_kw ? " " : "", has_kw ? kw : "");
	if (!s->readonly)
		imap_out(s, "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft%s%s"
			    " \\*)] Flags permitted\r\n", has_kw ? " " : "", has_kw ? kw : "");
}

static void imap_sync_flush_vanished(struct imap_sync_ctx *ctx)
{
	if (ctx->vanished.count == 0)
		return;
	imap_out(ctx->s, "* VANISHED ");
	imap_seqset_write(&ctx->vanished, &ctx->s->out);
	imap_out(ctx->s, "\r\n");
	imap_seqset_free(&ctx->vanished);
	memset(&ctx->vanished, 0, sizeof(ctx->vanished));
}

static void imap_sync_expunged_cb(void *c, uint32_t seq, uint32_t uid)
{
	struct imap_sync_ctx *ctx = c;
	if (ctx->s->qresync)
		imap_seqset_add(&ctx->vanished, uid);
	else
		imap_out(ctx->s, "* %u EXPUNGE\r\n", seq);
}

static void imap_sync_exists_cb(void *c, uint32_t count, uint32_t recent)
{
	struct imap_sync_ctx *ctx = c;
	imap_sync_flush_vanished(ctx);
	imap_out(ctx->s, "* %u EXISTS\r\n", count);
	if (!ctx->s->rev2)
		imap_out(ctx->s, "* %u RECENT\r\n", recent);
}

static void imap_sync_flags_cb(void *c, uint32_t seq, const struct mstore_msg *msg)
{
	struct imap_sync_ctx *ctx = c;
	imap_sync_flush_vanished(ctx);
	/* The view loads the mailbox's new keyword list only after these
	 * callbacks: announce this message's new ones before its FETCH. */
	if (ctx->kw_known != NULL && imap_kw_merge(&ctx->kw_known, msg->keywords) > 0)
		imap_write_flag_lists(ctx->s, ctx->kw_known);
	imap_write_flags_fetch(ctx->s, seq, msg, ctx->with_uid);
}

static const struct mbox_sync_cb imap_sync_cbs = {
	.expunged = imap_sync_expunged_cb,
	.exists = imap_sync_exists_cb,
	.flags = imap_sync_flags_cb,
};

int imap_sync(struct imap_session *s, bool allow_expunge)
{
	if (s->mbox == NULL)
		return 0;
	struct imap_sync_ctx ctx = {
		.s = s,
		.with_uid = s->qresync || (s->cmd != NULL && s->cmd->uid),
		.kw_known = strdup(mbox_keywords(s->mbox)),
	};
	int ret = mbox_sync(s->mbox, allow_expunge, &imap_sync_cbs, &ctx);
	imap_sync_flush_vanished(&ctx);
	/* keywords that came without a FETCH here (new messages) */
	if (ret == 0 && ctx.kw_known != NULL &&
	    imap_kw_merge(&ctx.kw_known, mbox_keywords(s->mbox)) > 0)
		imap_write_flag_lists(s, mbox_keywords(s->mbox));
	free(ctx.kw_known);
	if (ret < 0) {
		enum mstore_err code;
		const char *text = mstore_error(s->store, &code);
		if (code == MSTORE_ERR_NONEXISTENT) {
			/* Deleted by another session: the view points at nothing
			 * and commands on it cannot work. Disconnect, as Dovecot
			 * does (after this command's tagged reply). */
			if (!s->logout) {
				log_info("session=%llx user=%s selected %s was deleted: disconnecting",
					 IMAP_SID(s), s->user, mbox_name(s->mbox));
				imap_out(s, "* BYE Selected mailbox was deleted, have to disconnect.\r\n");
				s->logout = true;
			}
		} else {
			log_error("session=%llx user=%s sync of %s failed: %s", IMAP_SID(s), s->user,
				  mbox_name(s->mbox), text != NULL ? text : "?");
		}
	}
	return ret;
}

void imap_unselect(struct imap_session *s)
{
	mbox_close(&s->mbox);
	imap_seqset_free(&s->saved);
	memset(&s->saved, 0, sizeof(s->saved));
	s->saved_valid = false;
	s->readonly = false;
	if (s->state == IMAP_STATE_SELECTED)
		s->state = IMAP_STATE_AUTH;
}

/* ---- SELECT / EXAMINE ---- */

struct select_priv {
	char *name;
	bool condstore;
	bool qresync;
	uint32_t uidvalidity;
	uint64_t modseq;
	bool has_known;
	struct imap_seqset known_uids;
};

static void select_priv_free(void *p)
{
	struct select_priv *sp = p;
	free(sp->name);
	imap_seqset_free(&sp->known_uids);
	free(sp);
}

static int select_parse_qresync(struct imap_cmd *cmd, struct select_priv *sp,
				const struct imap_arg *list)
{
	/* (uidvalidity mod-sequence-value [known-uids [seq-match-data]]) */
	uint64_t v;
	if (!imap_arg_is_list(list) || list->count < 2 || list->count > 4)
		goto bad;
	const char *a = imap_arg_atom(&list->list[0]);
	const char *b = imap_arg_atom(&list->list[1]);
	if (a == NULL || b == NULL || str_to_u64(a, &v) < 0 || v == 0 || v > UINT32_MAX)
		goto bad;
	sp->uidvalidity = (uint32_t)v;
	if (str_to_u64(b, &sp->modseq) < 0)
		goto bad;
	if (list->count >= 3) {
		const char *k = imap_arg_atom(&list->list[2]);
		if (k == NULL || imap_seqset_parse(k, list->list[2].len, &sp->known_uids) < 0)
			goto bad;
		sp->has_known = true;
	}
	/* seq-match-data is an optimisation hint: ignored (we report all
	 * vanished UIDs in known-uids, which is always correct). */
	sp->qresync = true;
	return 0;
bad:
	imap_cmd_bad(cmd, "Invalid QRESYNC parameters");
	return -1;
}

int imap_cmd_select_check(struct imap_cmd *cmd)
{
	if (cmd->nargs < 1 || cmd->nargs > 2) {
		imap_cmd_bad(cmd, "Syntax: SELECT mailbox [(parameters)]");
		return -1;
	}
	struct select_priv *sp = calloc(1, sizeof(*sp));
	if (sp == NULL)
		return -1;
	cmd->priv = sp;
	cmd->priv_free = select_priv_free;
	sp->name = imap_mailbox_arg(cmd->s, &cmd->args[0]);
	if (sp->name == NULL) {
		imap_cmd_bad(cmd, "Invalid mailbox name");
		return -1;
	}
	if (cmd->nargs == 2) {
		const struct imap_arg *params = &cmd->args[1];
		if (!imap_arg_is_list(params)) {
			imap_cmd_bad(cmd, "Invalid SELECT parameters");
			return -1;
		}
		for (unsigned i = 0; i < params->count; i++) {
			const char *p = imap_arg_atom(&params->list[i]);
			if (p != NULL && strcasecmp(p, "CONDSTORE") == 0) {
				sp->condstore = true;
			} else if (p != NULL && strcasecmp(p, "QRESYNC") == 0 &&
				   i + 1 < params->count) {
				if (!cmd->s->qresync) {
					imap_cmd_bad(cmd, "QRESYNC is not enabled");
					return -1;
				}
				if (select_parse_qresync(cmd, sp, &params->list[++i]) < 0)
					return -1;
			} else {
				imap_cmd_bad(cmd, "Unknown SELECT parameter");
				return -1;
			}
		}
	}
	return 0;
}

void imap_cmd_select_run(struct imap_cmd *cmd)
{
	struct imap_session *s = cmd->s;
	struct select_priv *sp = cmd->priv;
	bool readonly = strcmp(cmd->def->name, "EXAMINE") == 0;

	if (s->mbox != NULL) {
		imap_unselect(s);
		/* RFC 7162 3.2.11 / RFC 9051 7.1: the old mailbox is closed. */
		if (s->qresync || s->rev2)
			imap_out(s, "* OK [CLOSED] Previous mailbox closed\r\n");
	}
	if (mbox_open(s->store, sp->name, readonly, &s->mbox) < 0) {
		s->mbox = NULL;
		imap_cmd_store_error(cmd, "SELECT");
		return;
	}
	if (sp->condstore)
		s->condstore = true;
	s->readonly = readonly;
	struct mbox *mbox = s->mbox;
	const char *kw = mbox_keywords(mbox);
	bool has_kw = kw != NULL && *kw != '\0';
	uint32_t count = mbox_count(mbox);

	imap_out(s, "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft%s%s)\r\n",
		 has_kw ? " " : "", has_kw ? kw : "");
	if (readonly)
		imap_out(s, "* OK [PERMANENTFLAGS ()] Read-only mailbox\r\n");
	else
		imap_out(s, "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft%s%s"
			    " \\*)] Flags permitted\r\n", has_kw ? " " : "", has_kw ? kw : "");
	imap_out(s, "* %u EXISTS\r\n", count);
	if (!s->rev2) {
		imap_out(s, "* %u RECENT\r\n", mbox_recent(mbox));
		uint32_t unseen = mbox_first_unseen(mbox);
		if (unseen > 0)
			imap_out(s, "* OK [UNSEEN %u] First unseen\r\n", unseen);
	}
	imap_out(s, "* OK [UIDVALIDITY %u] UIDs valid\r\n", mbox_uidvalidity(mbox));
	imap_out(s, "* OK [UIDNEXT %u] Predicted next UID\r\n", mbox_uidnext(mbox));
	imap_out(s, "* OK [HIGHESTMODSEQ %llu] Highest\r\n",
		 (unsigned long long)mbox_highestmodseq(mbox));
	if (s->rev2) {
		/* RFC 9051 6.3.2: a LIST response with the mailbox name. */
		imap_out(s, "* LIST () \".\" ");
		imap_write_mailbox(s, &s->out, mbox_name(mbox));
		imap_out(s, "\r\n");
	}
	if (sp->qresync && sp->uidvalidity == mbox_uidvalidity(mbox)) {
		/* RFC 7162 3.2.5.2: VANISHED (EARLIER) for what went away
		 * since modseq, then FETCH for what changed since. */
		struct imap_seqset vanished;
		memset(&vanished, 0, sizeof(vanished));
		/* before mbox_vanished_since(): an unresolved "n:*" matches
		 * nothing, so those UIDs would be left out of VANISHED */
		if (sp->has_known)
			imap_seqset_resolve(&sp->known_uids, mbox_uidnext(mbox));
		if (mbox_vanished_since(mbox, sp->modseq, sp->has_known ? &sp->known_uids : NULL,
					&vanished) == 0 && vanished.count > 0) {
			imap_out(s, "* VANISHED (EARLIER) ");
			imap_seqset_write(&vanished, &s->out);
			imap_out(s, "\r\n");
		}
		imap_seqset_free(&vanished);
		for (uint32_t seq = 1; seq <= count; seq++) {
			const struct mstore_msg *msg = mbox_msg(mbox, seq);
			if (msg->modseq <= sp->modseq)
				continue;
			if (sp->has_known && !imap_seqset_contains(&sp->known_uids, msg->uid))
				continue;
			imap_write_flags_fetch(s, seq, msg, true);
		}
	}
	s->state = IMAP_STATE_SELECTED;
	imap_cmd_ok(cmd, "[%s] %s completed", readonly ? "READ-ONLY" : "READ-WRITE",
		    cmd->def->name);
}

void imap_cmd_close_run(struct imap_cmd *cmd)
{
	struct imap_session *s = cmd->s;
	if (!s->readonly) {
		/* RFC 9051 6.4.1: expunge silently. */
		static const struct mbox_sync_cb silent = { NULL, NULL, NULL };
		if (mbox_expunge(s->mbox, NULL, &silent, NULL) < 0) {
			enum mstore_err code;
			log_warn("session=%llx CLOSE: expunge failed: %s", IMAP_SID(s),
				 mstore_error(s->store, &code));
		}
	}
	imap_unselect(s);
	imap_cmd_ok(cmd, "CLOSE completed");
}

void imap_cmd_unselect_run(struct imap_cmd *cmd)
{
	imap_unselect(cmd->s);
	imap_cmd_ok(cmd, "UNSELECT completed");
}

/* ---- EXPUNGE / UID EXPUNGE ---- */

int imap_cmd_expunge_check(struct imap_cmd *cmd)
{
	if (!cmd->uid) {
		if (cmd->nargs != 0) {
			imap_cmd_bad(cmd, "Syntax: EXPUNGE");
			return -1;
		}
		return 0;
	}
	if (cmd->nargs != 1) {
		imap_cmd_bad(cmd, "Syntax: UID EXPUNGE uid-set");
		return -1;
	}
	struct imap_seqset *set = calloc(1, sizeof(*set));
	if (set == NULL)
		return -1;
	if (imap_parse_set(cmd, &cmd->args[0], true, set) < 0) {
		free(set);
		return -1;
	}
	cmd->priv = set;
	cmd->priv_free = imap_seqset_priv_free;
	return 0;
}

void imap_seqset_priv_free(void *p)
{
	struct imap_seqset *set = p;
	imap_seqset_free(set);
	free(set);
}

void imap_cmd_expunge_run(struct imap_cmd *cmd)
{
	struct imap_session *s = cmd->s;
	struct imap_seqset *uids = cmd->priv;
	if (s->readonly) {
		imap_cmd_no(cmd, "[CANNOT] Mailbox is read-only");
		return;
	}
	if (uids != NULL) {
		if (uids->dollar) {
			/* "$" is the saved UIDs */
			imap_seqset_free(uids);
			memset(uids, 0, sizeof(*uids));
			if (s->saved_valid) {
				for (unsigned i = 0; i < s->saved.count; i++)
					for (uint64_t u = s->saved.ranges[i].lo;
					     u <= s->saved.ranges[i].hi; u++)
						imap_seqset_add(uids, (uint32_t)u);
			}
		} else {
			uint32_t count = mbox_count(s->mbox);
			imap_seqset_resolve(uids, count > 0 ? mbox_msg(s->mbox, count)->uid : 0);
		}
	}
	struct imap_sync_ctx ctx = { .s = s, .with_uid = true };
	/* Earlier changes first, so the sequence numbers agree. */
	imap_sync(s, true);
	int ret = mbox_expunge(s->mbox, uids, &imap_sync_cbs, &ctx);
	imap_sync_flush_vanished(&ctx);
	if (ret < 0) {
		imap_cmd_store_error(cmd, "EXPUNGE");
		return;
	}
	imap_cmd_ok(cmd, "%s completed", cmd->def->name);
}

void imap_cmd_check_run(struct imap_cmd *cmd)
{
	imap_cmd_ok(cmd, "CHECK completed");
}

/* ---- IDLE (RFC 2177) ---- */

static void imap_idle_sync_run(struct imap_session *s)
{
	if (s->mbox != NULL) {
		mbox_watch_drain(s->mbox);
		imap_sync(s, true);
	}
}

static void imap_idle_finish(struct imap_session *s, bool ok)
{
	imap_idle_stop(s);
	if (s->cmd != NULL) {
		if (ok)
			imap_cmd_ok(s->cmd, "IDLE terminated");
		else
			imap_cmd_bad(s->cmd, "Expected DONE");
	}
	imap_session_command_end(s);
}

static void imap_idle_sync_done(struct imap_session *s)
{
	imap_session_flush(s);
	if (s->state == IMAP_STATE_LOGOUT || s->logout) {
		/* s->logout: the sync said BYE (selected mailbox deleted) */
		imap_session_close(s);
		return;
	}
	if (s->idle_done) {
		/* a bad line left the (not yet finished) command marked BAD */
		bool ok = s->cmd == NULL || s->cmd->status != IMAP_BAD;
		s->idle_done = false;
		imap_idle_finish(s, ok);
		if (s->state != IMAP_STATE_LOGOUT)
			imap_session_resume(s);
		return;
	}
	if (s->idle_sync_again) {
		s->idle_sync_again = false;
		imap_session_submit(s, imap_idle_sync_run, imap_idle_sync_done);
	}
}

static void imap_idle_wake(struct imap_session *s)
{
	if (!s->idling)
		return;
	if (s->job_running) {
		s->idle_sync_again = true;
		return;
	}
	imap_session_submit(s, imap_idle_sync_run, imap_idle_sync_done);
}

static void imap_idle_event_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	imap_idle_wake(arg);
}

int imap_cmd_idle_check(struct imap_cmd *cmd)
{
	struct imap_session *s = cmd->s;
	if (cmd->nargs != 0) {
		imap_cmd_bad(cmd, "Syntax: IDLE");
		return -1;
	}
	s->idling = true;
	s->idle_done = false;
	struct event_base *base = s->server->base;
	int fd = s->mbox != NULL ? mbox_watch_fd(s->mbox) : -1;
	if (fd >= 0) {
		s->idle_watch_ev = event_new(base, fd, EV_READ | EV_PERSIST, imap_idle_event_cb, s);
		if (s->idle_watch_ev != NULL)
			event_add(s->idle_watch_ev, NULL);
	}
	s->idle_poll_ev = event_new(base, -1, EV_PERSIST, imap_idle_event_cb, s);
	if (s->idle_poll_ev != NULL) {
		struct timeval tv = { IMAP_IDLE_POLL_SECS, 0 };
		event_add(s->idle_poll_ev, &tv);
	}
	imap_out(s, "+ idling\r\n");
	imap_session_flush(s);
	/* What happened before IDLE started. */
	if (s->mbox != NULL)
		imap_session_submit(s, imap_idle_sync_run, imap_idle_sync_done);
	return 0;
}

void imap_idle_input(struct imap_session *s, const char *line, size_t len)
{
	bool done = len == 4 && strncasecmp(line, "DONE", 4) == 0;
	/* No more lines are read as IDLE input; the next are commands. */
	s->idling = false;
	if (s->job_running && done) {
		s->idle_done = true;
		return;
	}
	if (s->job_running) {
		/* a bad line while a sync runs: finish as BAD when it is done.
		 * The command is not finished yet, so its status is free to
		 * carry that (imap_idle_finish() sets it again). */
		if (s->cmd != NULL)
			s->cmd->status = IMAP_BAD;
		s->idle_done = true;
		return;
	}
	imap_idle_finish(s, done);
}

void imap_idle_stop(struct imap_session *s)
{
	s->idling = false;
	if (s->idle_watch_ev != NULL) {
		event_free(s->idle_watch_ev);
		s->idle_watch_ev = NULL;
	}
	if (s->idle_poll_ev != NULL) {
		event_free(s->idle_poll_ev);
		s->idle_poll_ev = NULL;
	}
}
