/*
 * maildir.c — Maildir delivery: tmp/ → fsync → rename into new/ → fsync new/.
 *
 * Run by the deliver process (local delivery). Owns nothing beyond the one
 * file it writes; readers (imapd, mutt, Dovecot) see a message only once it
 * is complete in new/. Follows https://cr.yp.to/proto/maildir.html except
 * for the unique name: ours is derived from the queue id and recipient
 * index so that delivery is idempotent (DESIGN.md principle 1) — a queue id
 * is unique on this host, which is what the spec's name has to guarantee.
 */
#include "lib-store/maildir.h"

#include "lib/util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAILDIR_ERROR_MAX 512
#define MAILDIR_COPY_CHUNK (64u * 1024)

static _Thread_local char maildir_error[MAILDIR_ERROR_MAX];

static const char *maildir_errorf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Formats the error text; keeps errno. */
static const char *maildir_errorf(const char *fmt, ...)
{
	int saved = errno;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(maildir_error, sizeof(maildir_error), fmt, ap);
	va_end(ap);
	errno = saved;
	return maildir_error;
}

static int path_join(char *dest, size_t size, const char *a, const char *b, const char *c)
{
	int n = c == NULL ? snprintf(dest, size, "%s/%s", a, b)
			  : snprintf(dest, size, "%s/%s/%s", a, b, c);
	if (n < 0 || (size_t)n >= size) {
		errno = ENAMETOOLONG;
		return -1;
	}
	return 0;
}

/* mkdir; when the directory is new, fsync its parent so the entry is
 * durable. parent_len is the length of the parent's prefix of path (0: "."). */
static int mkdir_durable(char *path, size_t parent_len, mode_t mode)
{
	if (mkdir(path, mode) < 0)
		return errno == EEXIST ? 0 : -1;
	if (parent_len == 0)
		return fsync_dir(".");
	char c = path[parent_len];
	path[parent_len] = '\0';
	int ret = fsync_dir(path);
	path[parent_len] = c;
	return ret;
}

/* mkdir -p with durable entries. */
static int mkdir_p_durable(const char *path, mode_t mode)
{
	char tmp[PATH_MAX];
	size_t len = strlen(path);
	/* length of the parent of the next component: "/" or "." (0) */
	size_t parent_len = path[0] == '/' ? 1 : 0;

	if (len == 0 || len >= sizeof(tmp)) {
		errno = len == 0 ? ENOENT : ENAMETOOLONG;
		return -1;
	}
	memcpy(tmp, path, len + 1);
	for (size_t i = 1; i <= len; i++) {
		if (tmp[i] != '/' && tmp[i] != '\0')
			continue;
		if (tmp[i - 1] == '/') {
			/* "a//b" or a trailing '/': nothing new to create */
			continue;
		}
		char c = tmp[i];
		tmp[i] = '\0';
		int r = mkdir_durable(tmp, parent_len, mode);
		tmp[i] = c;
		if (r < 0)
			return -1;
		parent_len = i;
	}
	return 0;
}

int maildir_create(const char *path, const char **error_r)
{
	static const char *const subs[] = { "cur", "new", "tmp" };
	char sub[PATH_MAX];

	if (mkdir_p_durable(path, 0700) < 0) {
		*error_r = maildir_errorf("maildir: mkdir %s: %s", path, strerror(errno));
		return -1;
	}
	for (size_t i = 0; i < sizeof(subs) / sizeof(subs[0]); i++) {
		if (path_join(sub, sizeof(sub), path, subs[i], NULL) < 0) {
			*error_r = maildir_errorf("maildir: path too long: %s", path);
			return -1;
		}
		if (mkdir(sub, 0700) == 0)
			continue;
		if (errno != EEXIST) {
			*error_r = maildir_errorf("maildir: mkdir %s: %s", sub, strerror(errno));
			return -1;
		}
	}
	/* One fsync of path covers all three new entries. */
	if (fsync_dir(path) < 0) {
		*error_r = maildir_errorf("maildir: fsync %s: %s", path, strerror(errno));
		return -1;
	}
	return 0;
}

int maildir_name(char *out, size_t size, int64_t queued_at, const char *id,
		 unsigned rcpt_idx, const char *hostname)
{
	if (!queue_id_valid(id) || hostname == NULL || hostname[0] == '\0') {
		errno = EINVAL;
		return -1;
	}
	int n = snprintf(out, size, "%lld.%sR%u.", (long long)queued_at, id, rcpt_idx);
	if (n < 0 || (size_t)n >= size)
		goto too_long;
	size_t pos = (size_t)n;
	for (const char *h = hostname; *h != '\0'; h++) {
		const char *esc = *h == '/' ? "\\057" : *h == ':' ? "\\072" : NULL;
		size_t elen = esc != NULL ? 4 : 1;
		if (size - pos <= elen)
			goto too_long;
		if (esc != NULL)
			memcpy(out + pos, esc, 4);
		else
			out[pos] = *h;
		pos += elen;
	}
	out[pos] = '\0';
	return 0;
too_long:
	if (size > 0)
		out[0] = '\0';
	errno = ENAMETOOLONG;
	return -1;
}

static bool name_valid(const char *name)
{
	return name[0] != '\0' && name[0] != '.' && strchr(name, '/') == NULL;
}

/* Opens path/tmp/<name> exclusively. A stale file of the same name can only
 * come from an earlier attempt of this very delivery: replace it. O_EXCL and
 * O_NOFOLLOW keep a planted symlink or hard link from redirecting the write. */
static int open_tmp(const char *path, const char *tmp, const char **error_r)
{
	bool created = false, unlinked = false;

	for (;;) {
		int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
		if (fd >= 0)
			return fd;
		if (errno == ENOENT && !created) {
			if (maildir_create(path, error_r) < 0)
				return -1;
			created = true;
			continue;
		}
		if (errno == EEXIST && !unlinked) {
			if (unlink(tmp) < 0 && errno != ENOENT)
				break;
			unlinked = true;
			continue;
		}
		break;
	}
	*error_r = maildir_errorf("maildir: create %s: %s", tmp, strerror(errno));
	return -1;
}

int maildir_write_tmp(const char *path, const char *name, const char *prefix,
		      size_t prefix_len, int src_fd, off_t off, size_t len, bool sync,
		      const char **error_r)
{
	char tmp[PATH_MAX];
	unsigned char *buf = NULL;
	int fd = -1, ret = -1, saved_errno = 0;

	if (!name_valid(name)) {
		errno = EINVAL;
		*error_r = maildir_errorf("maildir: invalid file name");
		return -1;
	}
	if (path_join(tmp, sizeof(tmp), path, "tmp", name) < 0) {
		*error_r = maildir_errorf("maildir: path too long: %s", path);
		return -1;
	}
	fd = open_tmp(path, tmp, error_r);
	if (fd < 0)
		return -1;

	if (prefix_len > 0 && write_full(fd, prefix, prefix_len) < 0) {
		*error_r = maildir_errorf("maildir: write %s: %s", tmp, strerror(errno));
		goto out;
	}
	buf = malloc(MAILDIR_COPY_CHUNK);
	if (buf == NULL) {
		*error_r = maildir_errorf("maildir: out of memory");
		goto out;
	}
	while (len > 0) {
		size_t want = len < MAILDIR_COPY_CHUNK ? len : MAILDIR_COPY_CHUNK;
		ssize_t n = pread(src_fd, buf, want, off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			*error_r = maildir_errorf("maildir: read message for %s: %s", tmp,
						  strerror(errno));
			goto out;
		}
		if (n == 0) {
			errno = EIO;
			*error_r = maildir_errorf("maildir: message for %s: source is %zu "
						  "bytes short", tmp, len);
			goto out;
		}
		if (write_full(fd, buf, (size_t)n) < 0) {
			*error_r = maildir_errorf("maildir: write %s: %s", tmp,
						  strerror(errno));
			goto out;
		}
		off += n;
		len -= (size_t)n;
	}
	if (sync && fsync(fd) < 0) {
		*error_r = maildir_errorf("maildir: fsync %s: %s", tmp, strerror(errno));
		goto out;
	}
	/* close() can report a deferred write error (NFS, quota). */
	int r = close(fd);
	fd = -1;
	if (r < 0) {
		*error_r = maildir_errorf("maildir: close %s: %s", tmp, strerror(errno));
		goto out;
	}
	ret = 0;
out:
	if (ret < 0)
		saved_errno = errno;
	if (fd >= 0)
		close(fd);
	if (ret < 0)
		unlink(tmp);
	free(buf);
	if (ret < 0)
		errno = saved_errno;
	return ret;
}

int maildir_publish(const char *path, const char *name, bool sync, const char **error_r)
{
	char tmp[PATH_MAX], dst[PATH_MAX], newdir[PATH_MAX];

	if (!name_valid(name)) {
		errno = EINVAL;
		*error_r = maildir_errorf("maildir: invalid file name");
		return -1;
	}
	if (path_join(tmp, sizeof(tmp), path, "tmp", name) < 0 ||
	    path_join(dst, sizeof(dst), path, "new", name) < 0 ||
	    path_join(newdir, sizeof(newdir), path, "new", NULL) < 0) {
		*error_r = maildir_errorf("maildir: path too long: %s", path);
		return -1;
	}
	int r = rename(tmp, dst);
	if (r < 0 && errno == ENOENT && access(tmp, F_OK) == 0) {
		/* new/ was removed under us (tmp/ exists): recreate, retry once. */
		if (maildir_create(path, error_r) < 0)
			goto fail;
		r = rename(tmp, dst);
	}
	if (r < 0) {
		*error_r = maildir_errorf("maildir: rename %s to new/: %s", tmp,
					  strerror(errno));
		goto fail;
	}
	/* Failing here leaves new/<name> possibly not durable; the caller
	 * retries and the retry replaces it under the same name. */
	if (sync && fsync_dir(newdir) < 0) {
		*error_r = maildir_errorf("maildir: fsync %s: %s", newdir, strerror(errno));
		return -1;
	}
	return 0;
fail:;
	int saved = errno;
	unlink(tmp);
	errno = saved;
	return -1;
}

void maildir_discard_tmp(const char *path, const char *name)
{
	char tmp[PATH_MAX];
	if (name_valid(name) && path_join(tmp, sizeof(tmp), path, "tmp", name) == 0)
		unlink(tmp);
}

int maildir_deliver(const char *path, const char *name, const char *prefix,
		    size_t prefix_len, int src_fd, off_t off, size_t len,
		    const char **error_r)
{
	if (maildir_write_tmp(path, name, prefix, prefix_len, src_fd, off, len, true,
			      error_r) < 0)
		return -1;
	return maildir_publish(path, name, true, error_r);
}

int maildir_has(const char *path, const char *name)
{
	char file[PATH_MAX];
	struct stat st;
	static const char *const subs[] = { "new", "cur" };

	if (!name_valid(name)) {
		errno = EINVAL;
		return -1;
	}
	for (size_t i = 0; i < sizeof(subs) / sizeof(subs[0]); i++) {
		if (path_join(file, sizeof(file), path, subs[i], name) < 0)
			return -1;
		if (lstat(file, &st) == 0)
			return 1;
		if (errno != ENOENT && errno != ENOTDIR)
			return -1;
	}

	/* cur/<name>:<info> — the reader added flags (":2,S") — or
	 * cur/<name>,U=<uid>:2,<flags> — the store assigned a UID. */
	if (path_join(file, sizeof(file), path, "cur", NULL) < 0)
		return -1;
	DIR *dir = opendir(file);
	if (dir == NULL)
		return errno == ENOENT ? 0 : -1;
	size_t nlen = strlen(name);
	int ret = 0;
	for (;;) {
		errno = 0;
		struct dirent *d = readdir(dir);
		if (d == NULL) {
			if (errno != 0)
				ret = -1;
			break;
		}
		/* "<name>:<info>" (a reader's flags) or "<name>,U=<uid>..." (the
		 * store's renamed form, mstore.h) */
		if (strncmp(d->d_name, name, nlen) == 0 &&
		    (d->d_name[nlen] == ':' || d->d_name[nlen] == ',' ||
		     d->d_name[nlen] == '\0')) {
			ret = 1;
			break;
		}
	}
	int saved = errno;
	closedir(dir);
	errno = saved;
	return ret;
}
