/*
 * cli-common.c — what every `postern` subcommand shares (see cli.h).
 */
#include "cli/cli.h"

#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "lib/audit.h"

int cli_fail(const char *fmt, ...)
{
	va_list ap;

	fputs("postern: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return EXIT_FAILURE;
}

void cli_audit_init(const struct config *cfg)
{
	audit_init(cfg->audit_log);
	if (geteuid() != 0 || cfg->run_user == NULL)
		return;
	struct passwd *pw = getpwnam(cfg->run_user);
	if (pw == NULL) {
		cli_fail("warning: user %s does not exist; a new audit log stays root's",
			 cfg->run_user);
		return;
	}
	audit_set_owner(pw->pw_uid, pw->pw_gid);
}
