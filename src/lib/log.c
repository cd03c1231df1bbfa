/*
 * log.c — line-per-event logging for every Postern process.
 */
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

static char log_role[32] = "postern";
static bool log_syslog;
static enum log_level log_min = LOG_LEVEL_INFO;

static const char *const level_names[] = { "debug", "info", "warn", "error" };

void log_set_role(const char *role)
{
	snprintf(log_role, sizeof(log_role), "%s", role);
}

void log_init(const char *role, const char *target, enum log_level level)
{
	log_set_role(role);
	log_min = level;
	log_syslog = target != NULL && strcmp(target, "syslog") == 0;
	if (log_syslog)
		openlog("postern", LOG_PID | LOG_NDELAY, LOG_MAIL);
}

int log_level_parse(const char *s, enum log_level *level_r)
{
	for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
		if (strcmp(s, level_names[i]) == 0) {
			*level_r = (enum log_level)i;
			return 0;
		}
	}
	return -1;
}

void log_vwrite(enum log_level level, const char *fmt, va_list ap)
{
	char msg[2048];

	if (level < log_min)
		return;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	/* Control characters from the network never reach the log raw. */
	for (char *p = msg; *p != '\0'; p++) {
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = '?';
	}
	if (log_syslog) {
		static const int prio[] = { LOG_DEBUG, LOG_INFO, LOG_WARNING, LOG_ERR };
		syslog(prio[level], "%s: %s: %s", log_role, level_names[level], msg);
		return;
	}
	struct timespec ts;
	struct tm tm;
	char when[32];
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
	/* One write per line so lines from several processes never interleave. */
	char line[2200];
	int n = snprintf(line, sizeof(line), "%s.%03ldZ postern/%s[%ld]: %s: %s\n",
			 when, ts.tv_nsec / 1000000, log_role, (long)getpid(),
			 level_names[level], msg);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(line)) {
		n = sizeof(line) - 1;
		line[n - 1] = '\n';
	}
	ssize_t ret = write(STDERR_FILENO, line, (size_t)n);
	(void)ret;
}

#define LOG_FN(name, level)                                \
	void name(const char *fmt, ...)                    \
	{                                                  \
		va_list ap;                                \
		va_start(ap, fmt);                         \
		log_vwrite(level, fmt, ap);                \
		va_end(ap);                                \
	}
LOG_FN(log_debug, LOG_LEVEL_DEBUG)
LOG_FN(log_info, LOG_LEVEL_INFO)
LOG_FN(log_warn, LOG_LEVEL_WARN)
LOG_FN(log_error, LOG_LEVEL_ERROR)

void fatal(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_vwrite(LOG_LEVEL_ERROR, fmt, ap);
	va_end(ap);
	exit(1);
}

void panic(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_vwrite(LOG_LEVEL_ERROR, fmt, ap);
	va_end(ap);
	abort();
}
