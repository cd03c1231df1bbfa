/*
 * cli-init.c — `postern init DIR`: writes DIR/postern.conf, creates the data
 * directories and the account database with the first local domain, and a
 * self-signed certificate unless --cert/--key name real ones.
 */
#include "cli/cli.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include "lib/buf.h"
#include "lib/util.h"
#include "lib-account/account.h"
#include "lib-tls/tls.h"

static int init_usage(void)
{
	fprintf(stderr,
		"usage: postern init DIR [--hostname NAME] [--domain DOMAIN]\n"
		"                    [--listen-smtp ADDR:PORT|off] [--listen-submission ...]\n"
		"                    [--listen-submissions ...] [--listen-imap ...] [--listen-imaps ...]\n"
		"                    [--listen-pop3 ...] [--listen-pop3s ...] [--listen-http ...]\n"
		"                    [--cert FILE --key FILE]\n"
		"                    [--resolver ADDR:PORT] [--remote-port PORT]\n"
		"                    [--smarthost HOST:PORT]\n");
	return 2;
}

static char *init_abs_path(const char *path)
{
	char *abs = realpath(path, NULL);
	if (abs == NULL)
		fprintf(stderr, "postern: %s: %s\n", path, strerror(errno));
	return abs;
}

int cli_init(int argc, char **argv)
{
	struct config_init init;
	const char *dir = NULL, *domain = "example.test";
	char hostname[256] = "";
	char *cert = NULL, *key = NULL, *abs_dir = NULL;
	struct buf conf_path, tls_dir, cert_path, key_path;
	int ret = 1;

	memset(&init, 0, sizeof(init));
	buf_init(&conf_path, 4096);
	buf_init(&tls_dir, 4096);
	buf_init(&cert_path, 4096);
	buf_init(&key_path, 4096);
	for (int i = 1; i < argc; i++) {
		const char *arg = argv[i];
		if (arg[0] != '-') {
			if (dir != NULL)
				return init_usage();
			dir = arg;
			continue;
		}
		if (i + 1 >= argc)
			return init_usage();
		const char *val = argv[++i];
		enum listener_kind kind;
		if (strcmp(arg, "--hostname") == 0) {
			snprintf(hostname, sizeof(hostname), "%s", val);
		} else if (strcmp(arg, "--domain") == 0) {
			domain = val;
		} else if (strcmp(arg, "--cert") == 0) {
			cert = (char *)val;
		} else if (strcmp(arg, "--key") == 0) {
			key = (char *)val;
		} else if (strcmp(arg, "--resolver") == 0 || strcmp(arg, "--smarthost") == 0) {
			char host[256], port[8];
			if (config_split_address(val, host, sizeof(host), port, sizeof(port)) < 0) {
				fprintf(stderr, "postern: %s: expected HOST:PORT\n", arg);
				return 2;
			}
			if (arg[2] == 'r')
				init.resolver = val;
			else
				init.smarthost = val;
		} else if (strcmp(arg, "--remote-port") == 0) {
			uint64_t port;
			if (str_to_u64(val, &port) < 0 || port == 0 || port > 65535) {
				fprintf(stderr, "postern: --remote-port: expected a port number\n");
				return 2;
			}
			init.remote_port = val;
		} else if (strncmp(arg, "--listen-", 9) == 0 &&
			   listener_kind_parse(arg + 9, &kind) == 0) {
			char host[256], port[8];
			if (strcmp(val, "off") != 0 &&
			    config_split_address(val, host, sizeof(host), port, sizeof(port)) < 0) {
				fprintf(stderr, "postern: %s: expected ADDR:PORT or off\n", arg);
				return 2;
			}
			init.listen[kind] = val;
		} else {
			fprintf(stderr, "postern: unknown option %s\n", arg);
			return init_usage();
		}
	}
	if (dir == NULL || (cert == NULL) != (key == NULL))
		return init_usage();
	if (hostname[0] == '\0')
		snprintf(hostname, sizeof(hostname), "mail.%s", domain);

	if (mkdir_p(dir, 0700) < 0) {
		fprintf(stderr, "postern: cannot create %s: %s\n", dir, strerror(errno));
		goto out;
	}
	abs_dir = init_abs_path(dir);
	if (abs_dir == NULL)
		goto out;
	buf_printf(&conf_path, "%s/postern.conf", abs_dir);
	if (access(conf_path.data, F_OK) == 0) {
		fprintf(stderr, "postern: %s already exists; not overwriting\n", conf_path.data);
		goto out;
	}
	buf_printf(&tls_dir, "%s/tls", abs_dir);
	if (cert != NULL) {
		char *c = init_abs_path(cert), *k = init_abs_path(key);
		if (c == NULL || k == NULL) {
			free(c);
			free(k);
			goto out;
		}
		buf_append_str(&cert_path, c);
		buf_append_str(&key_path, k);
		free(c);
		free(k);
	} else {
		const char *error;
		buf_printf(&cert_path, "%s/cert.pem", tls_dir.data);
		buf_printf(&key_path, "%s/key.pem", tls_dir.data);
		if (mkdir_p(tls_dir.data, 0700) < 0 ||
		    tls_make_self_signed(hostname, cert_path.data, key_path.data, &error) < 0) {
			fprintf(stderr, "postern: cannot make a certificate in %s: %s\n",
				tls_dir.data, errno != 0 ? strerror(errno) : "");
			goto out;
		}
	}
	init.hostname = hostname;
	init.domain = domain;
	init.data_dir = abs_dir;
	init.tls_cert = cert_path.data;
	init.tls_key = key_path.data;

	static const char *const subdirs[] = { "mail", "spool", "run" };
	for (size_t i = 0; i < sizeof(subdirs) / sizeof(subdirs[0]); i++) {
		struct buf p;
		buf_init(&p, 4096);
		buf_printf(&p, "%s/%s", abs_dir, subdirs[i]);
		int r = mkdir_p(p.data, 0700);
		buf_free(&p);
		if (r < 0) {
			fprintf(stderr, "postern: cannot create %s/%s: %s\n", abs_dir, subdirs[i],
				strerror(errno));
			goto out;
		}
	}
	if (config_write_default(conf_path.data, &init) < 0) {
		fprintf(stderr, "postern: cannot write %s: %s\n", conf_path.data, strerror(errno));
		goto out;
	}

	struct config *cfg;
	char *errors;
	if (config_load(conf_path.data, &cfg, &errors) < 0) {
		fprintf(stderr, "%s", errors);
		free(errors);
		goto out;
	}
	struct account_db *db;
	const char *error;
	if (account_db_open(cfg->db_path, true, &db, &error) < 0) {
		fprintf(stderr, "postern: %s\n", error);
		config_free(&cfg);
		goto out;
	}
	if (account_domain_exists(db, domain) != 1 && account_domain_add(db, domain, &error) < 0) {
		fprintf(stderr, "postern: %s\n", error);
		account_db_close(&db);
		config_free(&cfg);
		goto out;
	}
	account_db_close(&db);

	printf("initialised %s\n", abs_dir);
	printf("  config:   %s\n", conf_path.data);
	printf("  hostname: %s, local domain: %s\n", hostname, domain);
	printf("  tls:      %s\n", cert_path.data);
	for (unsigned k = 0; k < LISTENER_COUNT; k++) {
		if (cfg->listen[k] != NULL)
			printf("  listen.%-12s %s\n", listener_kind_name((enum listener_kind)k),
			       cfg->listen[k]);
	}
	printf("next: postern -c %s user add you@%s, then postern -c %s serve\n",
	       conf_path.data, domain, conf_path.data);
	config_free(&cfg);
	ret = 0;
out:
	free(abs_dir);
	buf_free(&conf_path);
	buf_free(&tls_dir);
	buf_free(&cert_path);
	buf_free(&key_path);
	return ret;
}
