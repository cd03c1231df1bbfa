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

/* Sets the file (mode 0600, created when missing) for this process; the
 * file is opened per event, so rotation by renaming is safe. */
void audit_init(const char *path);

/* Appends {"time":..., "event":event, key1:value1, ...}: string pairs ending
 * with a NULL key; a NULL value is left out. 0, or -1 (logged) when the line
 * could not be written. */
int audit_event(const char *event, ...) __attribute__((sentinel));

#endif
