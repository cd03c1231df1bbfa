/*
 * cli-queue.c — `postern queue list|show|retry|delete|hold|release` and
 * `postern status ADDRESS|ID`: the operator's view of the outbound queue.
 *
 * Runs as the operator's `postern` process, never inside the daemon.
 * - list and status read SPOOL_DIR/status.db (lib-queue/qstatus.h)
 *   read-only; show reads the spool file itself plus its status rows.
 * - retry, hold, release and delete ask the running queue process over
 *   DATA/run/q.sock (IPC_Q_ADMIN), since it alone writes the spool and the
 *   status store. When no queue is listening (the daemon is stopped) the
 *   change is made here instead, and the queue picks it up at its next start.
 */
#include "cli/cli.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "lib/buf.h"
#include "lib/ipc.h"
#include "lib/limits.h"
#include "lib/util.h"
#include "lib-queue/qstatus.h"
#include "lib-queue/spool.h"

#define EXIT_USAGE              2
#define QUEUE_SOCKET            "run/q.sock"
/* How long the queue may take to answer an admin request. */
#define QUEUE_ADMIN_TIMEOUT_MS  30000

static const char queue_usage_text[] =
	"usage: postern queue list [--json]\n"
	"       postern queue show ID\n"
	"       postern queue retry ID|all\n"
	"       postern queue hold ID\n"
	"       postern queue release ID\n"
	"       postern queue delete ID\n";

static const char status_usage_text[] =
	"usage: postern status ADDRESS|ID [--json]\n";

/* A queue id as typed (either case) → upper case in id; false if not one. */
static bool parse_id(const char *arg, char id[17])
{
	size_t len = strlen(arg);
	if (len != 16)
		return false;
	for (size_t i = 0; i <= len; i++)
		id[i] = arg[i] >= 'a' && arg[i] <= 'f' ? (char)(arg[i] - 'a' + 'A') : arg[i];
	return queue_id_valid(id);
}

/* ---- the status store ---- */

static void status_path(const struct config *cfg, struct buf *path)
{
	buf_init(path, 8192);
	buf_printf(path, "%s/status.db", cfg->spool_dir);
}

/* Opens status.db: 1 with *qs_r, 0 when readonly and the file does not
 * exist yet (nothing was ever queued), -1 after printing the error. */
static int status_open(const struct config *cfg, bool readonly, struct qstatus **qs_r)
{
	struct buf path;
	struct stat st;
	const char *error;
	int ret = 1;

	*qs_r = NULL;
	status_path(cfg, &path);
	if (readonly && stat(path.data, &st) < 0 && errno == ENOENT) {
		ret = 0;
	} else if (qstatus_open(path.data, readonly, qs_r, &error) < 0) {
		cli_fail("%s", error);
		ret = -1;
	}
	buf_free(&path);
	return ret;
}

/* ---- list, show, status ---- */

static int queue_list(const struct config *cfg, bool json)
{
	struct qstatus *qs;
	int r = status_open(cfg, true, &qs);
	if (r < 0)
		return EXIT_FAILURE;
	if (r == 0) {
		fputs(json ? "[]\n" : "queue is empty\n", stdout);
		return fflush(stdout) == 0 ? 0 : EXIT_FAILURE;
	}
	r = qstatus_print_queue(qs, stdout, json);
	qstatus_close(&qs);
	return r < 0 ? cli_fail("cannot read the delivery status") : 0;
}

static void envelope_print(const struct spool_envelope *env, size_t size)
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
	printf("    client: %s helo=%s auth=%s\n", env->client_ip ? env->client_ip : "-",
	       env->helo ? env->helo : "-", env->auth_user ? env->auth_user : "-");
}

/* The envelope, each recipient's delivery status, then the message. */
static int queue_show(const struct config *cfg, const char *id)
{
	struct spool_envelope *env;
	struct qstatus *qs;
	int fd;
	off_t off;
	size_t len;
	const char *error;

	if (spool_read(cfg->spool_dir, id, &env, &fd, &off, &len, &error) < 0)
		return cli_fail("no such message %s", id);
	envelope_print(env, len);
	spool_envelope_free(&env);
	printf("delivery status:\n");
	int r = status_open(cfg, true, &qs);
	if (r > 0) {
		r = qstatus_print_status(qs, stdout, id, false);
		qstatus_close(&qs);
	}
	if (r == 0)
		printf("    (none recorded yet)\n");
	printf("\n");
	fflush(stdout);
	char chunk[65536];
	size_t left = len;
	while (left > 0) {
		size_t want = left < sizeof(chunk) ? left : sizeof(chunk);
		ssize_t got = pread(fd, chunk, want, off + (off_t)(len - left));
		if (got <= 0)
			break;
		if (write_full(STDOUT_FILENO, chunk, (size_t)got) < 0)
			break;
		left -= (size_t)got;
	}
	close(fd);
	if (left > 0)
		return cli_fail("%s: cannot read the message body", id);
	return 0;
}

/* ---- retry, hold, release, delete ---- */

static const char *admin_op_name(enum ipc_q_admin_op op)
{
	switch (op) {
	case IPC_Q_ADMIN_RETRY: return "retry";
	case IPC_Q_ADMIN_HOLD: return "hold";
	case IPC_Q_ADMIN_RELEASE: return "release";
	case IPC_Q_ADMIN_DELETE: return "delete";
	}
	return "?";
}

/* Connects to the queue's socket; a blocking fd, or -1 with errno
 * (ENOENT / ECONNREFUSED: no queue is listening). sun_path holds 108
 * bytes, so a long data directory is reached by chdir, as the daemon does. */
static int admin_connect(const struct config *cfg)
{
	struct sockaddr_un sun;
	struct buf path;
	int fd, saved_errno;

	buf_init(&path, 8192);
	buf_printf(&path, "%s/" QUEUE_SOCKET, cfg->data_dir);
	if (path.len < sizeof(sun.sun_path)) {
		fd = ipc_connect_unix(path.data, 0);
		saved_errno = errno;
	} else {
		int cwd = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (cwd < 0 || chdir(cfg->data_dir) < 0) {
			fd = -1;
			saved_errno = errno;
		} else {
			fd = ipc_connect_unix(QUEUE_SOCKET, 0);
			saved_errno = errno;
			if (fchdir(cwd) < 0) {
				saved_errno = errno;
				if (fd >= 0)
					close(fd);
				fd = -1;
			}
		}
		if (cwd >= 0)
			close(cwd);
	}
	buf_free(&path);
	if (fd >= 0) {
		int flags = fcntl(fd, F_GETFL);
		if (flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) < 0) {
			saved_errno = errno;
			close(fd);
			fd = -1;
		}
	}
	errno = saved_errno;
	return fd;
}

/* Sends one IPC_Q_ADMIN request and prints the answer. Exit status. */
static int admin_request(int fd, enum ipc_q_admin_op op, const char *target)
{
	struct ipc_writer w;
	struct buf payload;
	uint32_t type;
	uint64_t req_id;
	int ret;

	ipc_writer_init(&w);
	ipc_put_u32(&w, op);
	ipc_put_str(&w, target);
	buf_init(&payload, IPC_FRAME_MAX);
	if (ipc_sync_send(fd, IPC_Q_ADMIN, 1, &w) < 0) {
		ret = cli_fail("sending the request to the queue: %s", strerror(errno));
		goto out;
	}
	if (ipc_sync_recv(fd, &type, &req_id, &payload, QUEUE_ADMIN_TIMEOUT_MS) < 0) {
		ret = cli_fail("no answer from the queue: %s", strerror(errno));
		goto out;
	}
	struct ipc_reader r = {
		.p = (const unsigned char *)payload.data, .left = payload.len, .error = false,
	};
	uint32_t status = ipc_get_u32(&r);
	const char *text = ipc_get_str(&r);
	if (type != IPC_Q_ADMIN_REPLY || r.error) {
		ret = cli_fail("malformed answer from the queue");
		goto out;
	}
	if (text == NULL || text[0] == '\0')
		text = status == IPC_Q_ADMIN_OK ? "ok" :
		       status == IPC_Q_ADMIN_UNKNOWN_ID ? "no such message" : "failed";
	if (status == IPC_Q_ADMIN_OK) {
		printf("%s\n", text);
		ret = 0;
	} else {
		ret = cli_fail("%s %s: %s", admin_op_name(op), target, text);
	}
out:
	buf_free(&payload);
	ipc_writer_free(&w);
	return ret;
}

/* The daemon is not running: make the change in the spool and status.db
 * directly; the queue reads both when it starts. id NULL: retry all. */
static int admin_offline(const struct config *cfg, enum ipc_q_admin_op op, const char *id)
{
	struct spool_envelope *env = NULL;
	struct qstatus *qs = NULL;
	struct stat st;
	const char *error;
	int fd = -1, ret = EXIT_FAILURE;
	off_t off;
	size_t len;

	if (id != NULL &&
	    spool_read(cfg->spool_dir, id, &env, &fd, &off, &len, &error) < 0)
		return cli_fail("no such message %s", id);

	if (op == IPC_Q_ADMIN_RETRY) {
		/* Without status.db every message is due when the queue starts. */
		struct buf path;
		status_path(cfg, &path);
		bool exists = stat(path.data, &st) == 0;
		buf_free(&path);
		if (exists && status_open(cfg, false, &qs) < 0)
			goto out;
		int n = qs != NULL ? qstatus_retry(qs, id) : 0;
		if (n < 0 || (qs != NULL && qstatus_commit(qs) < 0)) {
			cli_fail("cannot record the retry in the delivery status");
			goto out;
		}
		printf("%s: the queue is not running; %d recipient%s will be tried when it "
		       "starts\n", id != NULL ? id : "all", n, n == 1 ? "" : "s");
		ret = 0;
		goto out;
	}

	if (status_open(cfg, false, &qs) < 0)
		goto out;
	/* The message may not have a row yet (queued before status.db existed). */
	if (fstat(fd, &st) < 0 || qstatus_add_message(qs, env, (uint64_t)st.st_size) < 0) {
		cli_fail("cannot record %s in the delivery status", id);
		goto out;
	}
	switch (op) {
	case IPC_Q_ADMIN_HOLD:
	case IPC_Q_ADMIN_RELEASE:
		if (qstatus_set_held(qs, id, op == IPC_Q_ADMIN_HOLD) < 0 ||
		    qstatus_commit(qs) < 0) {
			cli_fail("cannot %s %s", admin_op_name(op), id);
			goto out;
		}
		printf("%s %s (the queue is not running; it applies when it starts)\n",
		       op == IPC_Q_ADMIN_HOLD ? "held" : "released", id);
		break;
	case IPC_Q_ADMIN_DELETE:
		if (spool_remove(cfg->spool_dir, id) < 0) {
			cli_fail("cannot delete %s: %s", id, strerror(errno));
			goto out;
		}
		/* An operator's delete must not come back after a crash. */
		if (spool_sync_queue_dir(cfg->spool_dir) < 0)
			cli_fail("warning: %s/queue: fsync: %s", cfg->spool_dir, strerror(errno));
		if (qstatus_finish_message(qs, id, (int64_t)time(NULL)) < 0 ||
		    qstatus_commit(qs) < 0) {
			cli_fail("deleted %s, but the delivery status still lists it", id);
			goto out;
		}
		printf("deleted %s\n", id);
		break;
	case IPC_Q_ADMIN_RETRY:
		break;
	}
	ret = 0;
out:
	qstatus_close(&qs);
	spool_envelope_free(&env);
	if (fd >= 0)
		close(fd);
	return ret;
}

static int queue_admin(const struct config *cfg, enum ipc_q_admin_op op, const char *arg)
{
	char id[17];
	bool all = op == IPC_Q_ADMIN_RETRY && strcmp(arg, "all") == 0;

	if (!all && !parse_id(arg, id))
		return cli_fail("%s is not a queue id", arg);
	int fd = admin_connect(cfg);
	if (fd < 0) {
		if (errno == ENOENT || errno == ECONNREFUSED)
			return admin_offline(cfg, op, all ? NULL : id);
		return cli_fail("cannot reach the queue at %s/" QUEUE_SOCKET ": %s", cfg->data_dir,
			    strerror(errno));
	}
	int ret = admin_request(fd, op, all ? "all" : id);
	close(fd);
	return ret;
}

int cli_queue(const struct config *cfg, int argc, char **argv)
{
	static const struct {
		const char *name;
		enum ipc_q_admin_op op;
	} admin_cmds[] = {
		{ "retry", IPC_Q_ADMIN_RETRY },
		{ "hold", IPC_Q_ADMIN_HOLD },
		{ "release", IPC_Q_ADMIN_RELEASE },
		{ "delete", IPC_Q_ADMIN_DELETE },
	};

	if (argc < 2) {
		fputs(queue_usage_text, stderr);
		return EXIT_USAGE;
	}
	const char *sub = argv[1];
	if (strcmp(sub, "-h") == 0 || strcmp(sub, "--help") == 0 || strcmp(sub, "help") == 0) {
		fputs(queue_usage_text, stdout);
		return 0;
	}
	if (strcmp(sub, "list") == 0) {
		if (argc == 2)
			return queue_list(cfg, false);
		if (argc == 3 && strcmp(argv[2], "--json") == 0)
			return queue_list(cfg, true);
		fputs(queue_usage_text, stderr);
		return EXIT_USAGE;
	}
	if (argc != 3) {
		fputs(queue_usage_text, stderr);
		return EXIT_USAGE;
	}
	if (strcmp(sub, "show") == 0) {
		char id[17];
		if (!parse_id(argv[2], id))
			return cli_fail("%s is not a queue id", argv[2]);
		return queue_show(cfg, id);
	}
	for (size_t i = 0; i < sizeof(admin_cmds) / sizeof(admin_cmds[0]); i++) {
		if (strcmp(sub, admin_cmds[i].name) == 0)
			return queue_admin(cfg, admin_cmds[i].op, argv[2]);
	}
	fputs(queue_usage_text, stderr);
	return EXIT_USAGE;
}

int cli_status(const struct config *cfg, int argc, char **argv)
{
	const char *arg = NULL;
	bool json = false;
	struct qstatus *qs;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--json") == 0 && !json) {
			json = true;
		} else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
			fputs(status_usage_text, stdout);
			return 0;
		} else if (arg == NULL && argv[i][0] != '\0') {
			arg = argv[i];
		} else {
			fputs(status_usage_text, stderr);
			return EXIT_USAGE;
		}
	}
	if (arg == NULL) {
		fputs(status_usage_text, stderr);
		return EXIT_USAGE;
	}
	int n = status_open(cfg, true, &qs);
	if (n < 0)
		return EXIT_FAILURE;
	if (n > 0) {
		n = qstatus_print_status(qs, stdout, arg, json);
		qstatus_close(&qs);
		if (n < 0)
			return cli_fail("cannot read the delivery status");
	} else if (json) {
		fputs("[]\n", stdout);
	}
	if (n == 0)
		return cli_fail("no delivery status for %s", arg);
	return 0;
}
