/*
 * cli-queue.c — `postern queue list | show ID | delete ID`: reads the spool
 * directly (read-only, never touching files still being written).
 */
#include "cli/cli.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lib/buf.h"
#include "lib/util.h"
#include "lib-queue/spool.h"

static int queue_usage(void)
{
	fprintf(stderr, "usage: postern queue list | show ID | delete ID\n");
	return 2;
}

static void queue_print(const struct spool_envelope *env, size_t size, bool full)
{
	char when[32];
	time_t t = (time_t)env->queued_at;
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
	printf("%s  %8zu  %s  <%s>\n", env->id, size, when, env->sender);
	for (size_t i = 0; i < env->nrcpts; i++) {
		const struct spool_rcpt *r = &env->rcpts[i];
		printf("    %s <%s>%s%s\n", r->mailbox != NULL ? "local " : "remote", r->address,
		       r->mailbox != NULL ? " -> " : "", r->mailbox != NULL ? r->mailbox : "");
	}
	if (full) {
		printf("    client: %s helo=%s auth=%s\n", env->client_ip ? env->client_ip : "-",
		       env->helo ? env->helo : "-", env->auth_user ? env->auth_user : "-");
	}
}

static int queue_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int queue_list(const struct config *cfg)
{
	struct buf path;
	buf_init(&path, 4096);
	buf_printf(&path, "%s/queue", cfg->spool_dir);
	DIR *d = opendir(path.data);
	buf_free(&path);
	if (d == NULL) {
		if (errno == ENOENT) {
			printf("queue is empty\n");
			return 0;
		}
		fprintf(stderr, "postern: %s/queue: %s\n", cfg->spool_dir, strerror(errno));
		return 1;
	}
	char **ids = NULL;
	size_t n = 0, alloc = 0;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (!queue_id_valid(de->d_name))
			continue;
		if (n == alloc) {
			alloc = alloc == 0 ? 64 : alloc * 2;
			char **v = realloc(ids, alloc * sizeof(*v));
			if (v == NULL)
				break;
			ids = v;
		}
		ids[n++] = strdup(de->d_name);
	}
	closedir(d);
	if (n > 1)
		qsort(ids, n, sizeof(*ids), queue_cmp);
	size_t shown = 0;
	for (size_t i = 0; i < n; i++) {
		struct spool_envelope *env;
		int fd;
		off_t off;
		size_t len;
		const char *error;
		/* A file still being received is not committed: skip it. */
		if (ids[i] != NULL &&
		    spool_read(cfg->spool_dir, ids[i], &env, &fd, &off, &len, &error) == 0) {
			close(fd);
			queue_print(env, len, false);
			spool_envelope_free(&env);
			shown++;
		}
		free(ids[i]);
	}
	free(ids);
	printf("%zu message%s in the queue\n", shown, shown == 1 ? "" : "s");
	return 0;
}

int cli_queue(const struct config *cfg, int argc, char **argv)
{
	if (argc < 2)
		return queue_usage();
	if (strcmp(argv[1], "list") == 0 && argc == 2)
		return queue_list(cfg);
	if (argc != 3 || (strcmp(argv[1], "show") != 0 && strcmp(argv[1], "delete") != 0))
		return queue_usage();
	const char *id = argv[2];
	if (!queue_id_valid(id)) {
		fprintf(stderr, "postern: %s is not a queue id\n", id);
		return 1;
	}
	struct spool_envelope *env;
	int fd;
	off_t off;
	size_t len;
	const char *error;
	if (spool_read(cfg->spool_dir, id, &env, &fd, &off, &len, &error) < 0) {
		fprintf(stderr, "postern: no such message %s\n", id);
		return 1;
	}
	if (strcmp(argv[1], "show") == 0) {
		queue_print(env, len, true);
		printf("\n");
		fflush(stdout);
		char chunk[65536];
		size_t left = len;
		while (left > 0) {
			size_t want = left < sizeof(chunk) ? left : sizeof(chunk);
			ssize_t got = pread(fd, chunk, want, off + (off_t)(len - left));
			if (got <= 0)
				break;
			write_full(STDOUT_FILENO, chunk, (size_t)got);
			left -= (size_t)got;
		}
	} else {
		if (spool_remove(cfg->spool_dir, id) < 0) {
			fprintf(stderr, "postern: cannot delete %s: %s\n", id, strerror(errno));
			close(fd);
			spool_envelope_free(&env);
			return 1;
		}
		printf("deleted %s\n", id);
	}
	close(fd);
	spool_envelope_free(&env);
	return 0;
}
