/*
 * util.h — small helpers shared by every process: file I/O that survives
 * EINTR and short writes, durable directory operations, number parsing
 * without atoi/sscanf, ASCII case folding.
 */
#ifndef POSTERN_UTIL_H
#define POSTERN_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Writes all of data; 0 or -1 with errno. */
int write_full(int fd, const void *data, size_t len);
/* Reads up to len bytes, retrying on EINTR; returns bytes read or -1. */
ssize_t read_full(int fd, void *data, size_t len);
/* fsync() of the directory at path; 0 or -1 with errno. */
int fsync_dir(const char *path);
/* syncfs() of the file system holding path: every file's data and metadata
 * on it durable with one device flush (group commit). 0 or -1 with errno
 * (a write-back error since the last syncfs, on Linux >= 5.8). */
int fs_sync(const char *path);
/* mkdir -p with mode for every created component; 0 or -1 with errno. */
int mkdir_p(const char *path, mode_t mode);
/* Reads a whole (small) file into a NUL-terminated malloc'ed string. */
int read_file(const char *path, size_t max, char **data_r, size_t *len_r);

/* Decimal parse of the whole string; 0 or -1 (empty, junk, overflow). */
int str_to_u64(const char *s, uint64_t *num_r);
/* Like str_to_u64 for a pointer + length. */
int strn_to_u64(const char *s, size_t len, uint64_t *num_r);
/* Sizes with optional K, M, G suffix (powers of 1024). */
int str_to_size(const char *s, uint64_t *size_r);
/* Durations: plain seconds or with s, m, h, d suffix. */
int str_to_duration(const char *s, uint64_t *secs_r);

/* ASCII lower-casing in place (domains, local parts); UTF-8 bytes untouched. */
void str_lcase(char *s);
bool str_ends_with(const char *s, const char *suffix);

/* Wipes memory that held a secret; not optimised away. */
void secure_zero(void *p, size_t len);

/* Generates a queue id: 16 upper-case hex digits, unique across processes
 * and restarts on one host (time in microseconds, pid and a counter). */
void queue_id_new(char id_r[17]);
/* Checks that s is a syntactically valid queue id. */
bool queue_id_valid(const char *s);

#endif
