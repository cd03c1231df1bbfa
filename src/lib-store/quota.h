/*
 * quota.h — Maildir++ quota usage (the "maildirsize" file, as Courier and
 * Dovecot keep it): one line per change, "<bytes> <messages>", appended
 * with O_APPEND by whoever adds or removes mail (the deliverer, IMAP). The
 * file is recalculated from the Maildir (every folder, physical file
 * sizes) when it is missing, unparsable, or larger than 5120 bytes.
 * Usage counts the physical size of the files on disk.
 */
#ifndef POSTERN_QUOTA_H
#define POSTERN_QUOTA_H

#include <stdint.h>

/* Current usage of the Maildir at root. 0, or -1 with errno. */
int maildir_quota_usage(const char *root, uint64_t *bytes_r, uint64_t *messages_r);
/* Records a change (negative for removals). 0, or -1 with errno. */
int maildir_quota_add(const char *root, int64_t bytes, int64_t messages);

/*
 * A recalculation (inside maildir_quota_usage) scans the Maildir and then
 * replaces the file; a message published during the scan, whose line is
 * appended to the old file, would be lost from the count. The
 * recalculation holds an exclusive flock(2) on the Maildir root; a writer
 * holds a shared one from making a message visible until its
 * maildir_quota_add(). Returns the lock's fd (or -1 when root cannot be
 * opened: go on without it). Never call maildir_quota_usage() while
 * holding the shared lock (it would wait for itself).
 */
int maildir_quota_lock_shared(const char *root);
void maildir_quota_unlock(int fd);

#endif
