/*
 * audit.h — the security audit log: one JSON object per line (jansson),
 * appended to security.audit_log with O_APPEND in a single write(2), so the
 * lines of several processes (directory, master, CLI) never interleave.
 * Separate from the operational log; queried by `postern security log`.
 *
 * Every line has "time" (UTC, milliseconds, "2026-11-23T17:03:52.123Z"),
 * "event" and the fields the caller gives; see docs/operations.md for the
 * events. Never put a password or secret in a field.
 */
#ifndef POSTERN_AUDIT_H
#define POSTERN_AUDIT_H

#include <stdbool.h>
#include <sys/types.h>

/* Sets the file (mode 0600, created when missing) for this process; the
 * file is opened per event, so rotation by renaming is safe. */
void audit_init(const char *path);

/* Makes a file this process creates owned by uid:gid (the run user), so a
 * root process (the master, a root-run CLI command) creating it after a
 * rotation does not leave the directory, which runs as `user = ...`, a
 * file it cannot append to. An existing file is left as it is. Not set:
 * the creator owns the file. */
void audit_set_owner(uid_t uid, gid_t gid);

/* Appends {"time":..., "event":event, key1:value1, ...}: string pairs ending
 * with a NULL key; a NULL value is left out. 0, or -1 (logged) when the line
 * could not be written. */
int audit_event(const char *event, ...) __attribute__((sentinel));

#endif
