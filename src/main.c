/*
 * main.c — the `postern` command: parses the global options and dispatches
 * to `serve` (the master process) or a CLI subcommand.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "cli/cli-accounts.h"
#include "cli/cli.h"
#include "lib/log.h"
#include "lib-config/config.h"
#include "master/master.h"

static int usage(void)
{
	fprintf(stderr,
		"usage: postern init DIR [options]          (see `postern init --help`)\n"
		"       postern [-c FILE] serve\n"
		"       postern [-c FILE] check-config\n"
		"       postern [-c FILE] domain add|del|list [DOMAIN]\n"
		"       postern [-c FILE] user add|del|passwd|list [ADDRESS] [--password-stdin] [--force]\n"
		"       postern [-c FILE] user quota ADDRESS [SIZE] [--messages N]\n"
		"       postern [-c FILE] user app-password add ADDRESS --name NAME [--scope smtp,imap,pop3]\n"
		"                         | app-password list ADDRESS | app-password revoke ADDRESS NAME\n"
		"       postern [-c FILE] user 2fa enable|disable ADDRESS | 2fa verify ADDRESS CODE\n"
		"       postern [-c FILE] user allow-from ADDRESS CIDR[,CIDR...] | --clear\n"
		"       postern [-c FILE] access allow|deny|del CIDR [--listener KIND] | access list\n"
		"       postern [-c FILE] security blocked | unblock IP|ADDRESS\n"
		"                         | log [--address A] [--since T] [--json]\n"
		"       postern [-c FILE] tls add CERTFILE KEYFILE | tls show\n"
		"       postern [-c FILE] reload\n"
		"       postern [-c FILE] alias add|del|list [ALIAS] [TARGET[,TARGET...]]\n"
		"       postern [-c FILE] queue list [--json] | show ID | retry ID|all\n"
		"                         | hold ID | release ID | delete ID\n"
		"       postern [-c FILE] status ADDRESS|ID [--json]\n"
		"       postern [-c FILE] sendmail [-t] [-i] [-f SENDER] [-F NAME] [RCPT...] < MESSAGE\n"
		"FILE defaults to $POSTERN_CONFIG, then ./postern.conf\n");
	return 2;
}

int main(int argc, char **argv)
{
	const char *config_path = getenv("POSTERN_CONFIG");
	const char *argv0 = argc > 0 ? argv[0] : "";
	int i = 1;

	if (sodium_init() < 0) {
		fprintf(stderr, "postern: libsodium failed to initialise\n");
		return 1;
	}
	/* Run through a link named "sendmail": every argument is sendmail's. */
	if (strrchr(argv0, '/') != NULL)
		argv0 = strrchr(argv0, '/') + 1;
	if (strcmp(argv0, "sendmail") == 0)
		return cli_sendmail(config_path != NULL && config_path[0] != '\0' ? config_path
								: "postern.conf", argc, argv);
	if (argc >= 2 && strcmp(argv[1], "init") == 0)
		return cli_init(argc - 1, argv + 1);
	while (i < argc && argv[i][0] == '-') {
		if (strcmp(argv[i], "-c") == 0 && i + 1 < argc) {
			config_path = argv[i + 1];
			i += 2;
		} else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
			usage();
			return 0;
		} else {
			return usage();
		}
	}
	if (i >= argc)
		return usage();
	if (config_path == NULL || config_path[0] == '\0')
		config_path = "postern.conf";

	const char *cmd = argv[i];
	static const char *const known[] = { "serve", "check-config", "domain", "user", "alias",
					     "queue", "sendmail", "status", "tls", "reload",
					     "access", "security" };
	bool ok = false;
	for (size_t k = 0; k < sizeof(known) / sizeof(known[0]); k++)
		ok = ok || strcmp(cmd, known[k]) == 0;
	if (!ok) {
		fprintf(stderr, "postern: unknown command %s\n", cmd);
		return usage();
	}
	if (strcmp(cmd, "sendmail") == 0)
		return cli_sendmail(config_path, argc - i, argv + i);

	struct config *cfg;
	char *errors;
	if (config_load(config_path, &cfg, &errors) < 0) {
		fputs(errors, stderr);
		free(errors);
		return 1;
	}
	int argc2 = argc - i;
	char **argv2 = argv + i;
	int status;
	if (strcmp(cmd, "check-config") == 0) {
		printf("%s: ok\n", config_path);
		status = 0;
	} else if (strcmp(cmd, "serve") == 0) {
		enum log_level level = LOG_LEVEL_INFO;
		log_level_parse(cfg->log_level, &level);
		log_init("master", cfg->log_target, level);
		return master_serve(cfg);
	} else if (strcmp(cmd, "domain") == 0) {
		status = cli_domain(cfg, argc2, argv2);
	} else if (strcmp(cmd, "user") == 0) {
		status = cli_user(cfg, argc2, argv2);
	} else if (strcmp(cmd, "alias") == 0) {
		status = cli_alias(cfg, argc2, argv2);
	} else if (strcmp(cmd, "access") == 0 || strcmp(cmd, "security") == 0) {
		status = (cmd[0] == 'a' ? cli_access : cli_security)(cfg, argc2, argv2);
	} else if (strcmp(cmd, "status") == 0) {
		status = cli_status(cfg, argc2, argv2);
	} else if (strcmp(cmd, "tls") == 0 || strcmp(cmd, "reload") == 0) {
		status = cmd[0] == 't' ? cli_tls(cfg, argc2, argv2) : cli_reload(cfg, argc2, argv2);
	} else {
		status = cli_queue(cfg, argc2, argv2);
	}
	config_free(&cfg);
	return status;
}
