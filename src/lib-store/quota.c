/*
 * quota.c — Maildir++ quota usage, the root/maildirsize file
 * (https://www.courier-mta.org/imap/README.maildirquota.html): a first
 * line with the quota definition, then "<bytes> <messages>" lines whose
 * sum is the usage. Adders append one line with O_APPEND in a single
 * write(2); readers sum the lines and recalculate the file from the
 * Maildir when it is missing, unparsable or over 5120 bytes.
 *
 * Run by imapd (mstore) and the deliverer. The limits themselves live in
 * the configuration, so the definition line we write is "0S,0C".
 */
#include "lib-store/quota.h"

#include "lib/log.h"
#include "lib/util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define QUOTA_FILE "maildirsize"
#define QUOTA_FILE_MAX 5120

/* Parses a signed decimal of len bytes. */
static int parse_i64(const char *s, size_t len, int64_t *v_r)
{
	bool neg = len > 0 && s[0] == '-';
	uint64_t v;
	if (neg) {
		s++;
		len--;
	}
	if (len == 0 || strn_to_u64(s, len, &v) < 0 || v > INT64_MAX)
		return -1;
	*v_r = neg ? -(int64_t)v : (int64_t)v;
	return 0;
}

/* Sums the usage lines; -1 when the file is malformed. */
static int parse_file(const char *data, size_t len, int64_t *bytes_r, int64_t *msgs_r)
{
	const char *p = memchr(data, '\n', len);
	int64_t bytes = 0, msgs = 0;
	if (p == NULL)
		return -1;   /* not even the definition line */
	p++;
	const char *end = data + len;
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		if (nl == NULL)
			return -1;   /* a partial line */
		const char *q = p;
		while (q < nl && *q == ' ')
			q++;
		const char *sp = memchr(q, ' ', (size_t)(nl - q));
		if (sp == NULL)
			return -1;
		const char *r = sp;
		while (r < nl && *r == ' ')
			r++;
		int64_t b, m;
		if (parse_i64(q, (size_t)(sp - q), &b) < 0 || parse_i64(r, (size_t)(nl - r), &m) < 0)
			return -1;
		bytes += b;
		msgs += m;
		p = nl + 1;
	}
	*bytes_r = bytes;
	*msgs_r = msgs;
	return 0;
}

static void sum_dir(const char *path, uint64_t *bytes, uint64_t *msgs)
{
	int dfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return;
	DIR *dir = fdopendir(dfd);
	if (dir == NULL) {
		close(dfd);
		return;
	}
	struct dirent *d;
	while ((d = readdir(dir)) != NULL) {
		struct stat st;
		if (d->d_name[0] == '.')
			continue;
		if (fstatat(dfd, d->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode))
			continue;
		*bytes += (uint64_t)st.st_size;
		(*msgs)++;
	}
	closedir(dir);
}

static int quota_lock(const char *root, int op)
{
	int fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	while (flock(fd, op) < 0) {
		if (errno != EINTR) {
			close(fd);
			return -1;
		}
	}
	return fd;
}

int maildir_quota_lock_shared(const char *root)
{
	return quota_lock(root, LOCK_SH);
}

void maildir_quota_unlock(int fd)
{
	if (fd >= 0)
		close(fd);   /* releases the flock */
}

static int recalculate_locked(const char *root, uint64_t *bytes_r, uint64_t *msgs_r);

/* The scan and the replacement of the file under the exclusive lock, so
 * that no writer's message is published between them (see quota.h). */
static int recalculate(const char *root, uint64_t *bytes_r, uint64_t *msgs_r)
{
	int lock = quota_lock(root, LOCK_EX);
	if (lock < 0 && errno == ENOENT) {
		/* no Maildir yet (nothing delivered): nothing used */
		*bytes_r = 0;
		*msgs_r = 0;
		return 0;
	}
	int ret = recalculate_locked(root, bytes_r, msgs_r);
	maildir_quota_unlock(lock);
	return ret;
}

static int recalculate_locked(const char *root, uint64_t *bytes_r, uint64_t *msgs_r)
{
	char path[PATH_MAX], tmp[PATH_MAX + 64];
	uint64_t bytes = 0, msgs = 0;

	DIR *dir = opendir(root);
	if (dir == NULL && errno == ENOENT) {
		/* no Maildir yet (nothing delivered): nothing used */
		*bytes_r = 0;
		*msgs_r = 0;
		return 0;
	}
	if (dir == NULL)
		return -1;
	snprintf(path, sizeof(path), "%s/cur", root);
	sum_dir(path, &bytes, &msgs);
	snprintf(path, sizeof(path), "%s/new", root);
	sum_dir(path, &bytes, &msgs);
	struct dirent *d;
	while ((d = readdir(dir)) != NULL) {
		/* Maildir++ folders ".x"; not ".", "..", nor our "..deleted" */
		if (d->d_name[0] != '.' || d->d_name[1] == '\0' || d->d_name[1] == '.')
			continue;
		if (snprintf(path, sizeof(path), "%s/%s/cur", root, d->d_name) < (int)sizeof(path))
			sum_dir(path, &bytes, &msgs);
		if (snprintf(path, sizeof(path), "%s/%s/new", root, d->d_name) < (int)sizeof(path))
			sum_dir(path, &bytes, &msgs);
	}
	closedir(dir);

	char content[96];
	int len = snprintf(content, sizeof(content), "0S,0C\n%llu %llu\n",
			   (unsigned long long)bytes, (unsigned long long)msgs);
	snprintf(path, sizeof(path), "%s/%s", root, QUOTA_FILE);
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	snprintf(tmp, sizeof(tmp), "%s/tmp/%lld.M%ldP%ld.maildirsize", root,
		 (long long)ts.tv_sec, ts.tv_nsec / 1000, (long)getpid());
	int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0 || write_full(fd, content, (size_t)len) < 0 || close(fd) < 0 ||
	    rename(tmp, path) < 0) {
		/* the usage is still right; only the file could not be written */
		log_warn("quota: write %s: %s", path, strerror(errno));
		if (fd >= 0)
			unlink(tmp);
	}
	*bytes_r = bytes;
	*msgs_r = msgs;
	return 0;
}

int maildir_quota_usage(const char *root, uint64_t *bytes_r, uint64_t *messages_r)
{
	char path[PATH_MAX];
	char *data = NULL;
	size_t len = 0;
	int64_t bytes, msgs;

	snprintf(path, sizeof(path), "%s/%s", root, QUOTA_FILE);
	/* read_file fails for a file over the limit: recalculated too */
	if (read_file(path, QUOTA_FILE_MAX, &data, &len) == 0 &&
	    parse_file(data, len, &bytes, &msgs) == 0 && bytes >= 0 && msgs >= 0) {
		free(data);
		*bytes_r = (uint64_t)bytes;
		*messages_r = (uint64_t)msgs;
		return 0;
	}
	free(data);
	return recalculate(root, bytes_r, messages_r);
}

int maildir_quota_add(const char *root, int64_t bytes, int64_t messages)
{
	char path[PATH_MAX], line[64];
	snprintf(path, sizeof(path), "%s/%s", root, QUOTA_FILE);
	int fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		/* no file: the next reader recalculates from the Maildir */
		return errno == ENOENT ? 0 : -1;
	int len = snprintf(line, sizeof(line), "%lld %lld\n", (long long)bytes,
			   (long long)messages);
	/* one write(2): concurrent appenders' lines do not interleave */
	ssize_t n = write(fd, line, (size_t)len);
	int saved = errno;
	close(fd);
	if (n != len) {
		errno = n < 0 ? saved : EIO;
		return -1;
	}
	return 0;
}
