/*
 * imap-copy.c — COPY, MOVE, UID COPY and UID MOVE in the imapd worker
 * (RFC 9051 6.4.7/6.4.8, MOVE RFC 6851, COPYUID of UIDPLUS RFC 4315).
 *
 * Runs on a pool thread. The copy is one mbox_copy() call (one index
 * transaction, hard links): RFC 9051 wants COPY all-or-nothing, so it is
 * not split into chunks. MOVE answers the COPYUID in an untagged OK before
 * the expunges (RFC 6851 4.3), which the sync after the command sends.
 */
#include "imapd/imap-private.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/log.h"

struct copy_priv {
	struct imap_seqset set;
	char *dest;
	bool move;
};

static void copy_priv_free(void *p)
{
	struct copy_priv *cp = p;
	imap_seqset_free(&cp->set);
	free(cp->dest);
	free(cp);
}

int imap_cmd_copy_check(struct imap_cmd *cmd)
{
	if (cmd->nargs != 2) {
		imap_cmd_bad(cmd, "Syntax: %s set mailbox", cmd->def->name);
		return -1;
	}
	struct copy_priv *cp = calloc(1, sizeof(*cp));
	if (cp == NULL)
		return -1;
	cmd->priv = cp;
	cmd->priv_free = copy_priv_free;
	cp->move = strstr(cmd->def->name, "MOVE") != NULL;
	if (imap_parse_set(cmd, &cmd->args[0], cmd->uid, &cp->set) < 0)
		return -1;
	cp->dest = imap_mailbox_arg(cmd->s, &cmd->args[1]);
	if (cp->dest == NULL) {
		imap_cmd_bad(cmd, "Invalid mailbox name");
		return -1;
	}
	return 0;
}

void imap_cmd_copy_run(struct imap_cmd *cmd)
{
	struct imap_session *s = cmd->s;
	struct copy_priv *cp = cmd->priv;
	uint32_t *seqs = NULL, *uids = NULL, n = 0, uidvalidity = 0;
	struct imap_seqset src, dst;
	struct buf a, b;

	memset(&src, 0, sizeof(src));
	memset(&dst, 0, sizeof(dst));
	buf_init(&a, 1024 * 1024);
	buf_init(&b, 1024 * 1024);
	if (cp->move && s->readonly) {
		imap_cmd_no(cmd, "[CANNOT] Mailbox is read-only");
		goto out;
	}
	if (imap_set_to_seqs(cmd, &cp->set, cmd->uid, &seqs, &n) < 0) {
		if (!cmd->finished)
			imap_cmd_serverbug(cmd, "out of memory");
		goto out;
	}
	/* Messages another session expunged cannot be copied. */
	uint32_t kept = 0;
	for (uint32_t i = 0; i < n; i++) {
		if (mbox_msg(s->mbox, seqs[i])->expunged)
			cmd->expunge_issued = true;
		else
			seqs[kept++] = seqs[i];
	}
	n = kept;
	if (n == 0) {
		if (cmd->expunge_issued)
			imap_cmd_no(cmd, "[EXPUNGEISSUED] The messages were expunged");
		else if (cmd->uid)
			imap_cmd_ok(cmd, "No messages");
		else
			imap_cmd_bad(cmd, "No messages");
		goto out;
	}
	uids = malloc((size_t)n * sizeof(*uids));
	if (uids == NULL) {
		imap_cmd_serverbug(cmd, "out of memory");
		goto out;
	}
	for (uint32_t i = 0; i < n; i++)
		imap_seqset_add(&src, mbox_msg(s->mbox, seqs[i])->uid);
	if (mbox_copy(s->mbox, seqs, n, cp->dest, cp->move, uids, &uidvalidity) < 0) {
		enum mstore_err code;
		const char *text = mstore_error(s->store, &code);
		if (code == MSTORE_ERR_NONEXISTENT)
			imap_cmd_no(cmd, "[TRYCREATE] %s", text != NULL ? text : "No such mailbox");
		else
			imap_cmd_store_error(cmd, cmd->def->name);
		goto out;
	}
	for (uint32_t i = 0; i < n; i++)
		imap_seqset_add(&dst, uids[i]);
	if (imap_seqset_write(&src, &a) < 0 || imap_seqset_write(&dst, &b) < 0 ||
	    (!cp->move && a.len + b.len > sizeof(cmd->result) - 64)) {
		/* sets too long for the tagged line: the copy happened, the
		 * client just gets no COPYUID (RFC 4315 allows that) */
		imap_cmd_ok(cmd, "%s completed", cmd->def->name);
		goto out;
	}
	if (cp->move) {
		imap_out(s, "* OK [COPYUID %u %s %s] Moved\r\n", uidvalidity, a.data, b.data);
		imap_cmd_ok(cmd, "%s completed", cmd->def->name);
	} else {
		imap_cmd_ok(cmd, "[COPYUID %u %s %s] %s completed", uidvalidity, a.data, b.data,
			    cmd->def->name);
	}
out:
	imap_seqset_free(&src);
	imap_seqset_free(&dst);
	buf_free(&a);
	buf_free(&b);
	free(seqs);
	free(uids);
}
