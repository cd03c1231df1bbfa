/*
 * log.h — one line per event, to stderr (default) or syslog.
 *
 * Every process calls log_init() once with its role name; lines look like
 *   2026-11-23T11:40:00.123Z postern/smtpd[1234]: info: connect ip=127.0.0.1 ...
 * Events carry key=value fields so they can be grepped and parsed.
 * Never log passwords or AUTH data.
 */
#ifndef POSTERN_LOG_H
#define POSTERN_LOG_H

#include <stdarg.h>
#include <stdbool.h>

enum log_level { LOG_LEVEL_DEBUG, LOG_LEVEL_INFO, LOG_LEVEL_WARN, LOG_LEVEL_ERROR };

/* target: "stderr" or "syslog". Safe to call again (after fork, on reload). */
void log_init(const char *role, const char *target, enum log_level level);
void log_set_role(const char *role);
/* Parses "debug", "info", "warn", "error"; returns -1 on anything else. */
int log_level_parse(const char *s, enum log_level *level_r);

void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_vwrite(enum log_level level, const char *fmt, va_list ap)
	__attribute__((format(printf, 2, 0)));

/* A broken environment or configuration at start-up: log and exit(1). */
void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
/* A bug: log and abort(). */
void panic(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

#endif
