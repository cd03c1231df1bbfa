/*
 * cli-tls.c — `postern tls add CERTFILE KEYFILE`, `postern tls show` and
 * `postern reload`.
 *
 * Runs as the operator's `postern` process, never inside the daemon.
 * - tls add checks a certificate and its key (parse, match, expiry) and
 *   installs them: over the default certificate files (tls.cert/tls.key, or
 *   a listener's own) when it is for the same host name (a renewal), else
 *   as tls.dir/NAME.pem + NAME.key, chosen by SNI; a certificate already
 *   there for one of its names is replaced. Files are written to a
 *   temporary name and renamed, so the daemon never reads half a file.
 * - tls show builds the same TLS set the daemon builds (lib-tls) and prints
 *   it per listener.
 * - reload sends SIGHUP to the master named in DATA/run/master.pid.
 */
#include "cli/cli.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "lib/buf.h"
#include "lib/util.h"
#include "lib-tls/tls.h"

#define EXIT_USAGE              2
/* A PEM certificate chain or key file larger than this is not one. */
#define TLS_MAX_PEM_FILE        (1024 * 1024)
#define TLS_PATH_MAX            4096

static const char tls_usage_text[] =
	"usage: postern tls add CERTFILE KEYFILE\n"
	"       postern tls show\n";

static int tls_usage(void)
{
	fputs(tls_usage_text, stderr);
	return EXIT_USAGE;
}

/*
 * Writes data to path through a new temporary file in the same directory
 * (".NAME.tmp.XXXXXX", created exclusively by mkostemp, 0600 until the
 * final mode is set) and a rename, so the daemon never reads half a file.
 * When path is a symbolic link (certbot's /etc/letsencrypt/live/NAME/
 * links into ../../archive/), the file it resolves to is replaced instead
 * and the link is kept. 0, or -1 (the reason printed here).
 */
static int tls_write_atomic(const char *path, const char *data, size_t len, mode_t mode)
{
	char tmp[TLS_PATH_MAX];
	char *resolved = NULL;
	struct stat st;
	int fd = -1, ret = -1;

	if (lstat(path, &st) == 0 && S_ISLNK(st.st_mode)) {
		if ((resolved = realpath(path, NULL)) == NULL) {
			cli_fail("%s: cannot resolve the symbolic link: %s", path, strerror(errno));
			return -1;
		}
		path = resolved;
	}
	const char *slash = strrchr(path, '/');
	int dirlen = slash != NULL ? (int)(slash - path + 1) : 0;
	int n = snprintf(tmp, sizeof(tmp), "%.*s.%s.tmp.XXXXXX", dirlen, path,
			 slash != NULL ? slash + 1 : path);
	if (n < 0 || (size_t)n >= sizeof(tmp)) {
		cli_fail("%s: path too long", path);
		goto out;
	}
	if ((fd = mkostemp(tmp, O_CLOEXEC)) < 0) {
		cli_fail("cannot create a temporary file beside %s: %s", path, strerror(errno));
		goto out;
	}
	int ok = fchmod(fd, mode) == 0 && write_full(fd, data, len) == 0 && fsync(fd) == 0;
	int saved = errno;
	if (close(fd) < 0 && ok) {
		ok = 0;
		saved = errno;
	}
	fd = -1;
	if (!ok || rename(tmp, path) < 0) {
		if (ok)
			saved = errno;
		cli_fail("cannot write %s: %s", path, strerror(saved));
		unlink(tmp);
		goto out;
	}
	ret = 0;
out:
	free(resolved);
	return ret;
}

/* Copies the operator's certificate and key files to their installed
 * names (key first: a reload between the two renames fails the key check
 * and keeps the old certificate). */
static int tls_install(const char *src_cert, const char *src_key, const char *dst_cert,
		       const char *dst_key)
{
	char *cert = NULL, *key = NULL;
	size_t cert_len = 0, key_len = 0;
	int ret = -1;
	if (read_file(src_cert, TLS_MAX_PEM_FILE, &cert, &cert_len) < 0) {
		cli_fail("cannot read %s: %s", src_cert, strerror(errno));
		goto out;
	}
	if (read_file(src_key, TLS_MAX_PEM_FILE, &key, &key_len) < 0) {
		cli_fail("cannot read %s: %s", src_key, strerror(errno));
		goto out;
	}
	if (tls_write_atomic(dst_key, key, key_len, 0600) < 0 ||
	    tls_write_atomic(dst_cert, cert, cert_len, 0644) < 0)
		goto out;
	ret = 0;
out:
	if (key != NULL) {
		secure_zero(key, key_len);
		free(key);
	}
	free(cert);
	return ret;
}

/* A certificate name as a file name in tls.dir: DNS characters only, the
 * wildcard label written "_". */
static int tls_file_base(const char *name, char *out, size_t size)
{
	size_t len = strlen(name);
	if (len == 0 || len + 1 > size || name[0] == '.')
		return -1;
	for (size_t i = 0; i < len; i++) {
		char c = name[i];
		if (c == '*' && i == 0)
			c = '_';
		else if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
			   c == '.' || c == '_'))
			return -1;
		out[i] = c;
	}
	out[len] = '\0';
	return 0;
}

static bool tls_share_a_name(const struct tls_cert *a, const struct tls_cert *b)
{
	for (size_t i = 0; i < tls_cert_name_count(a); i++) {
		for (size_t j = 0; j < tls_cert_name_count(b); j++) {
			if (strcasecmp(tls_cert_name(a, i), tls_cert_name(b, j)) == 0)
				return true;
		}
	}
	return false;
}

/* Removes the certificates of tls.dir that share a name with cert (other
 * than keep_base, which is about to be overwritten). */
static void tls_remove_replaced(const char *dir, const struct tls_cert *cert,
				const char *keep_base)
{
	DIR *d = opendir(dir);
	if (d == NULL)
		return;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		size_t len = strlen(de->d_name);
		if (de->d_name[0] == '.' || len <= 4 || strcmp(de->d_name + len - 4, ".pem") != 0)
			continue;
		if (strlen(keep_base) == len - 4 && strncmp(de->d_name, keep_base, len - 4) == 0)
			continue;
		char cert_path[TLS_PATH_MAX], key_path[TLS_PATH_MAX];
		int n1 = snprintf(cert_path, sizeof(cert_path), "%s/%s", dir, de->d_name);
		int n2 = snprintf(key_path, sizeof(key_path), "%s/%.*s.key", dir, (int)(len - 4),
				  de->d_name);
		if (n1 < 0 || n2 < 0 || (size_t)n1 >= sizeof(cert_path) ||
		    (size_t)n2 >= sizeof(key_path))
			continue;
		const char *error;
		struct tls_cert *old = tls_cert_load(cert_path, key_path, &error);
		if (old == NULL)
			continue;
		if (tls_share_a_name(old, cert)) {
			printf("replaced %s (%s)\n", cert_path, tls_cert_subject(old));
			unlink(key_path);
			unlink(cert_path);
		}
		tls_cert_free(&old);
	}
	closedir(d);
}

/* A default certificate the new one renews: the same file pair is named by
 * tls.cert/key or a listener's tls.<k>.cert/key, and the new certificate is
 * for that certificate's first name (or for the host name). */
struct tls_default_slot {
	const char *cert, *key;
};

static size_t tls_default_slots(const struct config *cfg, struct tls_default_slot *slots,
				size_t max)
{
	size_t n = 0;
	for (unsigned k = 0; k <= LISTENER_COUNT && n < max; k++) {
		const char *c = k == LISTENER_COUNT ? cfg->tls_cert : cfg->tls_listener[k].cert;
		const char *key = k == LISTENER_COUNT ? cfg->tls_key : cfg->tls_listener[k].key;
		if (c == NULL || key == NULL)
			continue;
		bool seen = false;
		for (size_t i = 0; i < n && !seen; i++)
			seen = strcmp(slots[i].cert, c) == 0 && strcmp(slots[i].key, key) == 0;
		if (!seen) {
			slots[n].cert = c;
			slots[n].key = key;
			n++;
		}
	}
	return n;
}

static int tls_add(const struct config *cfg, const char *cert_file, const char *key_file)
{
	const char *error;
	int ret = EXIT_FAILURE;
	struct tls_cert *cert = tls_cert_load(cert_file, key_file, &error);
	if (cert == NULL)
		return cli_fail("%s", error);
	time_t now = time(NULL);
	long days = tls_cert_days_left(cert, now);
	if (days < 0) {
		cli_fail("%s: certificate %s has expired", cert_file, tls_cert_subject(cert));
		goto out;
	}
	if (tls_cert_name_count(cert) == 0) {
		cli_fail("%s: the certificate names no DNS host (no subjectAltName DNS entry "
			 "and no CN)", cert_file);
		goto out;
	}
	if (days < TLS_EXPIRY_WARN_DAYS)
		fprintf(stderr, "postern: warning: certificate %s expires in %ld days\n",
			tls_cert_subject(cert), days);

	struct buf names;
	buf_init(&names, 16384);
	for (size_t i = 0; i < tls_cert_name_count(cert); i++)
		buf_printf(&names, "%s%s", i > 0 ? ", " : "", tls_cert_name(cert, i));
	printf("certificate %s for %s, %ld days left\n", tls_cert_subject(cert),
	       names.data != NULL ? names.data : "", days);
	buf_free(&names);

	/* Renewal of a default certificate? */
	struct tls_default_slot slots[LISTENER_COUNT + 1];
	size_t nslots = tls_default_slots(cfg, slots, LISTENER_COUNT + 1);
	size_t renewed = 0;
	for (size_t i = 0; i < nslots; i++) {
		struct tls_cert *old = tls_cert_load(slots[i].cert, slots[i].key, &error);
		const char *primary = old != NULL ? tls_cert_name(old, 0) : NULL;
		bool covers = (primary != NULL && primary[0] != '*' &&
			       tls_cert_covers(cert, primary)) ||
			      (primary != NULL && primary[0] == '*' &&
			       tls_share_a_name(cert, old)) ||
			      (cfg->hostname != NULL && tls_cert_covers(cert, cfg->hostname) &&
			       slots[i].cert == cfg->tls_cert);
		tls_cert_free(&old);
		if (!covers)
			continue;
		if (tls_install(cert_file, key_file, slots[i].cert, slots[i].key) < 0)
			goto out;
		printf("installed as the default certificate %s (key %s)\n", slots[i].cert,
		       slots[i].key);
		renewed++;
	}
	if (renewed == 0) {
		char base[300], dst_cert[TLS_PATH_MAX], dst_key[TLS_PATH_MAX];
		if (cfg->tls_dir == NULL) {
			cli_fail("tls.dir is not set");
			goto out;
		}
		if (tls_file_base(tls_cert_name(cert, 0), base, sizeof(base)) < 0) {
			cli_fail("%s: the certificate's name %s is not a usable DNS name",
				 cert_file, tls_cert_name(cert, 0));
			goto out;
		}
		int n1 = snprintf(dst_cert, sizeof(dst_cert), "%s/%s.pem", cfg->tls_dir, base);
		int n2 = snprintf(dst_key, sizeof(dst_key), "%s/%s.key", cfg->tls_dir, base);
		if (n1 < 0 || n2 < 0 || (size_t)n1 >= sizeof(dst_cert) ||
		    (size_t)n2 >= sizeof(dst_key)) {
			cli_fail("tls.dir %s: path too long", cfg->tls_dir);
			goto out;
		}
		if (mkdir_p(cfg->tls_dir, 0700) < 0) {
			cli_fail("cannot create %s: %s", cfg->tls_dir, strerror(errno));
			goto out;
		}
		tls_remove_replaced(cfg->tls_dir, cert, base);
		if (tls_install(cert_file, key_file, dst_cert, dst_key) < 0)
			goto out;
		printf("installed %s (key %s), chosen by SNI for its names\n", dst_cert, dst_key);
	}
	printf("run `postern reload` to use it\n");
	ret = 0;
out:
	tls_cert_free(&cert);
	return ret;
}

static int tls_show(const struct config *cfg)
{
	const char *error;
	struct tls_set *set = tls_set_new(cfg, &error);
	if (set == NULL)
		return cli_fail("TLS: %s", error);
	struct buf out;
	buf_init(&out, 1024 * 1024);
	tls_set_describe(set, time(NULL), &out);
	if (out.data != NULL)
		fputs(out.data, stdout);
	buf_free(&out);
	tls_set_free(&set);
	return 0;
}

int cli_tls(const struct config *cfg, int argc, char **argv)
{
	if (argc == 4 && strcmp(argv[1], "add") == 0)
		return tls_add(cfg, argv[2], argv[3]);
	if (argc == 2 && strcmp(argv[1], "show") == 0)
		return tls_show(cfg);
	return tls_usage();
}

/* true when /proc says pid runs `... serve` (or /proc cannot tell). */
static bool reload_pid_is_master(long pid)
{
	char path[64], cmdline[4096];
	snprintf(path, sizeof(path), "/proc/%ld/cmdline", pid);
	/* /proc files have no size: read, not read_file(). */
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno != ENOENT;
	ssize_t n = read_full(fd, cmdline, sizeof(cmdline) - 1);
	close(fd);
	if (n < 0)
		return true;
	cmdline[n] = '\0';
	bool serve = false;
	for (size_t i = 0; i < (size_t)n; i += strlen(cmdline + i) + 1)
		serve |= strcmp(cmdline + i, "serve") == 0;
	return serve;
}

int cli_reload(const struct config *cfg, int argc, char **argv)
{
	(void)argv;
	if (argc != 1) {
		fputs("usage: postern reload\n", stderr);
		return EXIT_USAGE;
	}
	char path[TLS_PATH_MAX], *text = NULL;
	size_t len = 0;
	int n = snprintf(path, sizeof(path), "%s/run/master.pid", cfg->data_dir);
	if (n < 0 || (size_t)n >= sizeof(path))
		return cli_fail("data_dir too long");
	if (read_file(path, 64, &text, &len) < 0) {
		if (errno == ENOENT)
			return cli_fail("postern is not running (no %s)", path);
		return cli_fail("cannot read %s: %s", path, strerror(errno));
	}
	while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == ' '))
		text[--len] = '\0';
	uint64_t pid = 0;
	int parsed = str_to_u64(text, &pid);
	free(text);
	if (parsed < 0 || pid <= 1 || pid > 0x7fffffff)
		return cli_fail("%s: not a process id", path);
	if (kill((pid_t)pid, 0) < 0 && errno == ESRCH)
		return cli_fail("postern is not running (stale %s, pid %llu)", path,
				(unsigned long long)pid);
	if (!reload_pid_is_master((long)pid))
		return cli_fail("postern is not running (pid %llu in %s is another program)",
				(unsigned long long)pid, path);
	if (kill((pid_t)pid, SIGHUP) < 0)
		return cli_fail("cannot signal pid %llu: %s", (unsigned long long)pid,
				strerror(errno));
	printf("reload requested (pid %llu)\n", (unsigned long long)pid);
	return 0;
}
