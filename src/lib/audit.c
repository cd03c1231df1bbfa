/*
 * audit.c — the security audit log (see audit.h): JSON lines built with
 * jansson, appended with O_APPEND in one write(2). Used by the directory,
 * the master and the CLI.
 */
#include "lib/audit.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "lib/log.h"

static char audit_path[4096];
static bool audit_owner_set;
static uid_t audit_uid;
static gid_t audit_gid;

void audit_set_owner(uid_t uid, gid_t gid)
{
	audit_owner_set = true;
	audit_uid = uid;
	audit_gid = gid;
}

/* Opens the log for appending, creating it (0600, owned per
 * audit_set_owner) when missing. An fd or -1 (errno). */
static int audit_open(void)
{
	const int flags = O_WRONLY | O_APPEND | O_CLOEXEC | O_NOFOLLOW;
	for (int tries = 0; tries < 3; tries++) {
		int fd = open(audit_path, flags);
		if (fd >= 0 || errno != ENOENT)
			return fd;
		/* O_EXCL: only the process that created the file sets its owner. */
		fd = open(audit_path, flags | O_CREAT | O_EXCL, 0600);
		if (fd >= 0) {
			if (audit_owner_set && fchown(fd, audit_uid, audit_gid) < 0)
				log_warn("audit log %s: cannot give it to uid %ld: %s", audit_path,
					 (long)audit_uid, strerror(errno));
			return fd;
		}
		if (errno != EEXIST)
			return -1;
	}
	return -1;
}

void audit_init(const char *path)
{
	snprintf(audit_path, sizeof(audit_path), "%s", path != NULL ? path : "");
}

int audit_event(const char *event, ...)
{
	if (audit_path[0] == '\0')
		return 0;
	json_t *o = json_object();
	if (o == NULL)
		return -1;
	struct timespec ts;
	struct tm tm;
	char when[40];
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	size_t n = strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(when + n, sizeof(when) - n, ".%03ldZ", ts.tv_nsec / 1000000);
	json_object_set_new(o, "time", json_string(when));
	json_object_set_new(o, "event", json_string(event));
	va_list ap;
	va_start(ap, event);
	for (;;) {
		const char *key = va_arg(ap, const char *);
		if (key == NULL)
			break;
		const char *value = va_arg(ap, const char *);
		/* json_string refuses invalid UTF-8: keep the event, mark it */
		if (value == NULL)
			continue;
		json_t *v = json_string(value);
		json_object_set_new(o, key, v != NULL ? v : json_string("(invalid UTF-8)"));
	}
	va_end(ap);
	char *line = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(o);
	if (line == NULL)
		return -1;
	size_t len = strlen(line);
	line[len] = '\n';   /* json_dumps left room for the NUL: reuse it */
	int ret = -1;
	int fd = audit_open();
	if (fd >= 0) {
		ssize_t w = write(fd, line, len + 1);
		ret = w == (ssize_t)(len + 1) ? 0 : -1;
		close(fd);
	}
	if (ret < 0)
		log_error("audit log %s: cannot write an event %s: %s", audit_path, event,
			  strerror(errno));
	free(line);
	return ret;
}
