/*
 * fuzz-config.c — libFuzzer entry point for config_load(): the input is the
 * whole configuration file, written to a private temporary file and loaded.
 * Reaches every value parser behind the settings table (sizes, durations,
 * ADDR:PORT through config_split_address(), paths, enums).
 *
 * Invariants (config.h): exactly one of config and errors comes back; every
 * error line starts with "FILE:"; a loaded config has its defaults and only
 * absolute paths; listen addresses that are set split again. Everything is
 * freed (leaks fail the run).
 */
#include <fcntl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "lib-config/config.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char *tmp_root;
static char conf_path[4200];

static void cleanup(void)
{
	(void)unlink(conf_path);
	(void)rmdir(tmp_root);
	free(tmp_root);
}

static void check_path(const char *p)
{
	FUZZ_CHECK(p == NULL || p[0] == '/');
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (tmp_root == NULL) {
		tmp_root = fuzz_tmpdir();
		snprintf(conf_path, sizeof(conf_path), "%s/postern.conf", tmp_root);
		atexit(cleanup);
	}

	int fd = open(conf_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	FUZZ_CHECK(fd >= 0);
	for (size_t off = 0; off < size;) {
		ssize_t n = write(fd, data + off, size - off);
		FUZZ_CHECK(n > 0);
		off += (size_t)n;
	}
	FUZZ_CHECK(close(fd) == 0);

	struct config *cfg = NULL;
	char *errors = NULL;
	int ret = config_load(conf_path, &cfg, &errors);
	if (ret == 0) {
		FUZZ_CHECK(cfg != NULL && errors == NULL);
		FUZZ_CHECK(cfg->path != NULL && strcmp(cfg->path, conf_path) == 0);
		check_path(cfg->data_dir);
		check_path(cfg->mail_dir);
		check_path(cfg->spool_dir);
		check_path(cfg->db_path);
		check_path(cfg->tls_cert);
		check_path(cfg->tls_key);
		FUZZ_CHECK(cfg->log_target != NULL && cfg->log_level != NULL);
		FUZZ_CHECK(cfg->max_message_size >= 1024 && cfg->max_line_length >= 78);
		for (unsigned i = 0; i < LISTENER_COUNT; i++) {
			char host[256], port[8];
			if (cfg->listen[i] != NULL)
				FUZZ_CHECK(config_split_address(cfg->listen[i], host, sizeof(host),
								port, sizeof(port)) == 0);
			FUZZ_CHECK(listener_kind_name((enum listener_kind)i) != NULL);
		}
		config_free(&cfg);
		FUZZ_CHECK(cfg == NULL);
	} else {
		FUZZ_CHECK(ret == -1 && cfg == NULL && errors != NULL && errors[0] != '\0');
		size_t plen = strlen(conf_path);
		/* One "FILE:LINE: reason" (or "FILE: reason") line per problem. */
		for (const char *line = errors; *line != '\0';) {
			FUZZ_CHECK(strncmp(line, conf_path, plen) == 0 && line[plen] == ':');
			const char *nl = strchr(line, '\n');
			if (nl == NULL)
				break;
			line = nl + 1;
		}
		free(errors);
	}
	return 0;
}
