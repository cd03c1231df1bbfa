/*
 * maildir.h — durable, idempotent delivery into a Maildir
 * (https://cr.yp.to/proto/maildir.html; Maildir++ folders are Maildirs too).
 *
 * Delivery is idempotent by name: the file name is derived from the queue id
 * and the recipient index, so after a crash the queue asks maildir_has()
 * whether a recipient was already delivered before delivering again.
 *
 * Error strings (*error_r) point to thread-local storage that stays valid
 * until the next maildir_* call from the same thread.
 */
#ifndef POSTERN_MAILDIR_H
#define POSTERN_MAILDIR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Enough for "<int64>.<16 hex>R<unsigned>." + a 255-byte hostname escaped. */
#define MAILDIR_NAME_MAX 1200

/* mkdir -p path, then path/{cur,new,tmp}, mode 0700; each directory created
 * is made durable in its parent (fsync) so a delivery into a new Maildir
 * survives a crash. Existing directories are fine. 0, or -1 with *error_r
 * and errno. */
int maildir_create(const char *path, const char **error_r);

/* Writes the deterministic name "<queued_at>.<id>R<rcpt_idx>.<hostname>"
 * into out (NUL-terminated), with '/' in hostname written as "\057" and ':'
 * as "\072" (the maildir spec's escapes). id must be a valid queue id and
 * hostname non-empty. Returns 0, or -1 (EINVAL / ENAMETOOLONG) when the
 * input is bad or out is too small; MAILDIR_NAME_MAX is always enough. */
int maildir_name(char *out, size_t size, int64_t queued_at, const char *id,
		 unsigned rcpt_idx, const char *hostname);

/* Delivers one message: writes prefix (prefix_len bytes, e.g.
 * "Return-Path: <a@b>\nDelivered-To: c@d\n") and then len bytes of src_fd
 * starting at off (pread, 64 KiB at a time; the message is never loaded
 * whole; src_fd's file offset is not used or changed) into path/tmp/<name>,
 * fsync()s it, renames it to path/new/<name> and fsyncs path/new. Creates
 * the Maildir if it is missing. A stale path/tmp/<name> from an earlier
 * crashed attempt is replaced; an existing path/new/<name> is replaced with
 * the same content (check maildir_has() first to avoid a duplicate in cur/).
 * name must not contain '/' nor start with '.'.
 * Returns 0, or -1 with *error_r (for the log) and errno preserved: ENOSPC
 * and EDQUOT mean a full disk or quota (temporary failure), EIO a read
 * error or a source shorter than len. No tmp file is left on failure. */
int maildir_deliver(const char *path, const char *name, const char *prefix,
		    size_t prefix_len, int src_fd, off_t off, size_t len,
		    const char **error_r);

/* The two halves of maildir_deliver(), for a caller that makes a whole
 * batch durable at once (group commit with syncfs, see lib/util.h fs_sync):
 * maildir_write_tmp() writes path/tmp/<name> (fsync()ed when sync), and
 * maildir_publish() renames it into new/ (fsync of new/ when sync). Data
 * must be durable before the rename, the rename before the delivery is
 * reported. On failure neither leaves a tmp file; maildir_discard_tmp()
 * removes one that was written but will not be published. */
int maildir_write_tmp(const char *path, const char *name, const char *prefix,
		      size_t prefix_len, int src_fd, off_t off, size_t len, bool sync,
		      const char **error_r);
int maildir_publish(const char *path, const char *name, bool sync, const char **error_r);
void maildir_discard_tmp(const char *path, const char *name);

/* Recovery check: 1 if path/new/<name>, path/cur/<name>,
 * path/cur/<name>:<info> (e.g. ":2,S") or path/cur/<name>,<...> (the
 * store's "<name>,U=<uid>:2,<flags>", mstore.h) exists, 0 if not (also when the
 * Maildir does not exist), -1 with errno on another error. Scans cur/, so
 * it costs O(messages in cur/); meant for recovery, not the common path. */
int maildir_has(const char *path, const char *name);

#endif
