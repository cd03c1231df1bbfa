/*
 * util.c — shared helpers (see util.h).
 */
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int write_full(int fd, const void *data, size_t len)
{
	const char *p = data;
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (n == 0) {
			errno = ENOSPC;
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

ssize_t read_full(int fd, void *data, size_t len)
{
	size_t got = 0;
	while (got < len) {
		ssize_t n = read(fd, (char *)data + got, len - got);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	return (ssize_t)got;
}

int fsync_dir(const char *path)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	int ret = fsync(fd);
	int saved = errno;
	close(fd);
	errno = saved;
	return ret;
}

int fs_sync(const char *path)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	int ret = syncfs(fd);
	int saved = errno;
	close(fd);
	errno = saved;
	return ret;
}

int mkdir_p(const char *path, mode_t mode)
{
	char tmp[4096];
	size_t len = strlen(path);
	if (len == 0 || len >= sizeof(tmp)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	memcpy(tmp, path, len + 1);
	for (size_t i = 1; i <= len; i++) {
		if (tmp[i] != '/' && tmp[i] != '\0')
			continue;
		char c = tmp[i];
		tmp[i] = '\0';
		if (mkdir(tmp, mode) < 0 && errno != EEXIST)
			return -1;
		tmp[i] = c;
	}
	return 0;
}

int read_file(const char *path, size_t max, char **data_r, size_t *len_r)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	struct stat st;
	if (fstat(fd, &st) < 0) {
		close(fd);
		return -1;
	}
	if ((size_t)st.st_size > max) {
		close(fd);
		errno = EFBIG;
		return -1;
	}
	char *data = malloc((size_t)st.st_size + 1);
	if (data == NULL) {
		close(fd);
		return -1;
	}
	ssize_t n = read_full(fd, data, (size_t)st.st_size);
	close(fd);
	if (n < 0) {
		free(data);
		return -1;
	}
	data[n] = '\0';
	*data_r = data;
	if (len_r != NULL)
		*len_r = (size_t)n;
	return 0;
}

int strn_to_u64(const char *s, size_t len, uint64_t *num_r)
{
	uint64_t n = 0;
	if (len == 0)
		return -1;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		unsigned d = (unsigned)(s[i] - '0');
		if (n > (UINT64_MAX - d) / 10)
			return -1;
		n = n * 10 + d;
	}
	*num_r = n;
	return 0;
}

int str_to_u64(const char *s, uint64_t *num_r)
{
	return strn_to_u64(s, strlen(s), num_r);
}

static int str_to_scaled(const char *s, const char *suffixes, const uint64_t *mult,
			 uint64_t *num_r)
{
	size_t len = strlen(s);
	uint64_t m = 1, n;
	if (len == 0)
		return -1;
	char last = s[len - 1];
	if (!(last >= '0' && last <= '9')) {
		const char *hit = strchr(suffixes, last | 0x20);
		if (hit == NULL || *hit == '\0')
			return -1;
		m = mult[hit - suffixes];
		len--;
	}
	if (strn_to_u64(s, len, &n) < 0)
		return -1;
	if (n != 0 && m > UINT64_MAX / n)
		return -1;
	*num_r = n * m;
	return 0;
}

int str_to_size(const char *s, uint64_t *size_r)
{
	static const uint64_t mult[] = { 1024, 1024 * 1024, 1024 * 1024 * 1024 };
	return str_to_scaled(s, "kmg", mult, size_r);
}

int str_to_duration(const char *s, uint64_t *secs_r)
{
	static const uint64_t mult[] = { 1, 60, 3600, 86400 };
	return str_to_scaled(s, "smhd", mult, secs_r);
}

void str_lcase(char *s)
{
	for (; *s != '\0'; s++) {
		if (*s >= 'A' && *s <= 'Z')
			*s = (char)(*s + ('a' - 'A'));
	}
}

bool str_ends_with(const char *s, const char *suffix)
{
	size_t a = strlen(s), b = strlen(suffix);
	return a >= b && memcmp(s + a - b, suffix, b) == 0;
}

void secure_zero(void *p, size_t len)
{
	volatile unsigned char *v = p;
	while (len-- > 0)
		*v++ = 0;
}

void queue_id_new(char id_r[17])
{
	/* Only the queue process makes ids: 52 bits of microseconds (good for
	 * ~140 years) and 12 bits of sequence, strictly increasing. */
	static uint64_t last;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	uint64_t usec = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
	uint64_t v = (usec & 0xFFFFFFFFFFFFFull) << 12;
	if (v <= last)
		v = last + 1;
	last = v;
	snprintf(id_r, 17, "%016llX", (unsigned long long)v);
}

bool queue_id_valid(const char *s)
{
	size_t i;
	for (i = 0; s[i] != '\0'; i++) {
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'A' && s[i] <= 'F')))
			return false;
	}
	return i == 16;
}
