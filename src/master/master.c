/*
 * master.c — the master process: binds the listening sockets (as root or as
 * the invoking user), forks the children — directory, queue, deliver and
 * one smtpd worker per core — and supervises them: a child that dies is
 * restarted with backoff while the others keep serving.
 *
 * Signals: SIGTERM/SIGINT stop gracefully (smtpd workers first, so open
 * transactions can finish, then the queue, deliverer and directory);
 * SIGHUP (or `postern reload`, which finds the master through
 * DATA/run/master.pid) re-reads the configuration and the certificates and
 * replaces the front-end workers: the old ones stop accepting and finish
 * their sessions (nothing established is dropped), new ones start with the
 * new configuration and TLS set. A configuration with errors, or a
 * certificate that does not load, is reported (log and audit log) and the
 * running one stays. Certificates close to expiry are warned about at load
 * and once a day.
 */
#include "master/master.h"

#include <errno.h>
#include <grp.h>
#include <netdb.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>
#include <ftw.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <netinet/in.h>

#include <event2/event.h>

#include "deliver/deliver.h"
#include "directory/directory.h"
#include "imapd/imapd.h"
#include "lib/audit.h"
#include "lib/buf.h"
#include "lib/log.h"
#include "lib/util.h"
#include "lib-tls/tls.h"
#include "queue/queue.h"
#include "smtpd/smtpd.h"

enum child_role { ROLE_DIRECTORY, ROLE_QUEUE, ROLE_DELIVER, ROLE_SMTPD, ROLE_IMAPD };
static const char *const role_names[] = { "directory", "queue", "deliver", "smtpd", "imapd" };

/* The front-end roles serve clients on the listeners: they stop first,
 * are replaced on reload, and hold the TLS context. */
static bool role_is_frontend(enum child_role role)
{
	return role == ROLE_SMTPD || role == ROLE_IMAPD;
}

static bool kind_is_mail_access(enum listener_kind kind)
{
	return kind == LISTENER_IMAP || kind == LISTENER_IMAPS || kind == LISTENER_POP3 ||
	       kind == LISTENER_POP3S;
}

#define MASTER_MAX_CHILDREN 80

struct child {
	enum child_role role;
	pid_t pid;                 /* 0: not running */
	bool retiring;             /* replaced after a reload: not restarted */
	bool used;
	time_t started;
	unsigned backoff;          /* seconds before the next restart */
	struct event *restart_ev;
};

static struct {
	struct config *cfg;
	struct event_base *base;
	struct smtpd_listener listeners[LISTENER_COUNT * 4];
	unsigned nlisteners;
	struct child children[MASTER_MAX_CHILDREN];
	uid_t uid;
	gid_t gid;
	bool drop;
	bool stopping;
	int stop_stage;
	struct event *stop_timer;
	struct event *sigs[4];
	struct event *expiry_timer;     /* daily certificate expiry check */
	pid_t master_pid;
	bool pid_file_written;
	struct tls_set *tls;       /* loaded here, shared by the front-end workers */
} M;

#define MASTER_PID_FILE "run/master.pid"
#define MASTER_EXPIRY_CHECK_SECS (24 * 3600)

/* Frees the master's events and loop: at exit, and in a freshly forked
 * child, which builds its own loop (libevent allows one signal base). */
static void master_free_events(void)
{
	for (size_t i = 0; i < sizeof(M.sigs) / sizeof(M.sigs[0]); i++) {
		if (M.sigs[i] != NULL)
			event_free(M.sigs[i]);
		M.sigs[i] = NULL;
	}
	for (unsigned i = 0; i < MASTER_MAX_CHILDREN; i++) {
		if (M.children[i].used) {
			event_free(M.children[i].restart_ev);
			M.children[i].used = false;
		}
	}
	if (M.stop_timer != NULL)
		event_free(M.stop_timer);
	M.stop_timer = NULL;
	if (M.expiry_timer != NULL)
		event_free(M.expiry_timer);
	M.expiry_timer = NULL;
	if (M.base != NULL)
		event_base_free(M.base);
	M.base = NULL;
}

static int master_bind(const char *addr, enum listener_kind kind)
{
	char host[256], port[8];
	struct addrinfo hints, *res = NULL;
	if (config_split_address(addr, host, sizeof(host), port, sizeof(port)) < 0)
		fatal("listen.%s: bad address %s", listener_kind_name(kind), addr);
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE;
	int ret = getaddrinfo(host, port, &hints, &res);
	if (ret != 0)
		fatal("listen.%s: %s: %s", listener_kind_name(kind), addr, gai_strerror(ret));
	int bound = 0;
	for (struct addrinfo *ai = res; ai != NULL && M.nlisteners < sizeof(M.listeners) /
					sizeof(M.listeners[0]); ai = ai->ai_next) {
		int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
		if (fd < 0)
			continue;
		int one = 1;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (ai->ai_family == AF_INET6)
			setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 511) < 0) {
			int saved = errno;
			close(fd);
			freeaddrinfo(res);
			fatal("listen.%s: cannot bind %s: %s", listener_kind_name(kind), addr,
			      strerror(saved));
		}
		M.listeners[M.nlisteners].fd = fd;
		M.listeners[M.nlisteners].kind = kind;
		M.nlisteners++;
		bound++;
	}
	freeaddrinfo(res);
	return bound;
}

static int chown_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)flag;
	(void)ftw;
	if (st->st_uid != M.uid || st->st_gid != M.gid) {
		if (lchown(path, M.uid, M.gid) < 0)
			log_warn("chown %s: %s", path, strerror(errno));
	}
	return 0;
}

static void master_prepare_user(void)
{
	if (M.cfg->run_user == NULL) {
		if (geteuid() == 0)
			log_warn("running as root without `user = ...`: children keep root "
				 "privileges; set user to an unprivileged account");
		return;
	}
	if (geteuid() != 0) {
		log_warn("user = %s ignored: not started as root", M.cfg->run_user);
		return;
	}
	struct passwd *pw = getpwnam(M.cfg->run_user);
	if (pw == NULL)
		fatal("user %s does not exist", M.cfg->run_user);
	M.uid = pw->pw_uid;
	M.gid = pw->pw_gid;
	M.drop = true;
	/* An audit log the master (root) creates after a rotation must stay
	 * writable for the directory. */
	audit_set_owner(M.uid, M.gid);
	/* Everything under the data directory belongs to the run user. */
	nftw(M.cfg->data_dir, chown_cb, 32, FTW_PHYS);
}

static void master_drop_privileges(void)
{
	if (!M.drop)
		return;
	if (setgroups(0, NULL) < 0 || setgid(M.gid) < 0 || setuid(M.uid) < 0)
		fatal("cannot drop privileges to %s: %s", M.cfg->run_user, strerror(errno));
	if (setuid(0) == 0)
		fatal("privileges were not dropped");
}

static struct child *master_child_new(enum child_role role);
static void master_spawn(struct child *c);

/* Workers of a front-end role: as configured, else one per core; none
 * when the role has no listener. */
static unsigned master_worker_count(enum child_role role)
{
	bool any = false;
	for (unsigned i = 0; i < M.nlisteners; i++)
		any |= kind_is_mail_access(M.listeners[i].kind) == (role == ROLE_IMAPD);
	if (!any)
		return 0;
	unsigned conf = role == ROLE_IMAPD ? M.cfg->imapd_workers : M.cfg->smtpd_workers;
	if (conf > 0)
		return conf;
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	return n < 1 ? 1 : n > 16 ? 16 : (unsigned)n;
}

/* Starts the workers of a front-end role; returns how many started. */
static unsigned master_start_workers(enum child_role role)
{
	unsigned n = master_worker_count(role);
	for (unsigned i = 0; i < n; i++) {
		struct child *c = master_child_new(role);
		if (c == NULL) {
			/* Retiring workers still hold sessions from earlier
			 * reloads; they free their slots as those end. */
			log_error("no free process slot for a new %s worker (limit %u); "
				  "started %u of %u", role_names[role], MASTER_MAX_CHILDREN, i, n);
			return i;
		}
		master_spawn(c);
	}
	return n;
}

static void master_child_run(enum child_role role)
{
	/* In the child: default signals, own logging identity, fewer rights. */
	sigset_t all;
	sigemptyset(&all);
	sigprocmask(SIG_SETMASK, &all, NULL);
	for (int sig = 1; sig < NSIG; sig++) {
		if (sig != SIGKILL && sig != SIGSTOP)
			signal(sig, SIG_DFL);
	}
	/* A file size limit must show as EFBIG (a 4xx), not kill us. */
	signal(SIGXFSZ, SIG_IGN);
	log_set_role(role_names[role]);
	/* The epoll set is shared with the master after fork: give the child
	 * its own before freeing anything, or the deletes would reach into
	 * the master's loop. */
	if (event_reinit(M.base) < 0)
		fatal("event_reinit failed");
	master_free_events();
	/* Each front-end keeps the sockets of its own listeners and the key;
	 * the back-end processes keep neither. */
	for (unsigned i = 0; i < M.nlisteners; i++) {
		bool mine = role_is_frontend(role) &&
			    kind_is_mail_access(M.listeners[i].kind) == (role == ROLE_IMAPD);
		if (!mine) {
			close(M.listeners[i].fd);
			M.listeners[i].fd = -1;
		}
	}
	unsigned nmine = 0;
	for (unsigned i = 0; i < M.nlisteners; i++) {
		if (M.listeners[i].fd >= 0)
			M.listeners[nmine++] = M.listeners[i];
	}
	M.nlisteners = nmine;
	if (!role_is_frontend(role))
		tls_set_free(&M.tls);
	master_drop_privileges();
	/* Children do not outlive the master (it alone restarts and reaps
	 * them); set after the privilege drop, which clears it. */
	prctl(PR_SET_PDEATHSIG, SIGTERM);
	if (getppid() != M.master_pid)
		exit(0);
	int status = 1;
	switch (role) {
	case ROLE_DIRECTORY:
		status = directory_main(M.cfg);
		break;
	case ROLE_QUEUE:
		status = queue_main(M.cfg);
		break;
	case ROLE_DELIVER:
		status = deliver_main(M.cfg);
		break;
	case ROLE_SMTPD:
		status = smtpd_main(M.cfg, M.tls, M.listeners, M.nlisteners);
		break;
	case ROLE_IMAPD: {
		struct imapd_listener l[LISTENER_COUNT * 4];
		for (unsigned i = 0; i < M.nlisteners; i++) {
			l[i].fd = M.listeners[i].fd;
			l[i].kind = M.listeners[i].kind;
		}
		status = imapd_main(M.cfg, M.tls, l, M.nlisteners);
		break;
	}
	}
	for (unsigned i = 0; i < M.nlisteners; i++)
		close(M.listeners[i].fd);
	tls_set_free(&M.tls);
	config_free(&M.cfg);
	exit(status);
}

static void master_spawn(struct child *c)
{
	fflush(NULL);
	pid_t pid = fork();
	if (pid < 0) {
		log_error("fork: %s", strerror(errno));
		c->backoff = c->backoff == 0 ? 1 : c->backoff;
		struct timeval tv = { c->backoff, 0 };
		event_add(c->restart_ev, &tv);
		return;
	}
	if (pid == 0) {
		/* The child's copy of the master's event loop must not fire. */
		master_child_run(c->role);
	}
	c->pid = pid;
	c->started = time(NULL);
	log_info("started %s pid=%ld", role_names[c->role], (long)pid);
}

static void master_restart_cb(evutil_socket_t fd, short what, void *arg)
{
	struct child *c = arg;
	(void)fd;
	(void)what;
	if (!M.stopping && c->pid == 0 && !c->retiring)
		master_spawn(c);
}

static struct child *master_child_new(enum child_role role)
{
	for (unsigned i = 0; i < MASTER_MAX_CHILDREN; i++) {
		struct child *c = &M.children[i];
		if (c->used)
			continue;
		memset(c, 0, sizeof(*c));
		c->used = true;
		c->role = role;
		c->restart_ev = evtimer_new(M.base, master_restart_cb, c);
		return c;
	}
	return NULL;
}

static void master_child_release(struct child *c)
{
	event_free(c->restart_ev);
	c->used = false;
}

static bool master_any_running(bool frontend_only)
{
	for (unsigned i = 0; i < MASTER_MAX_CHILDREN; i++) {
		const struct child *c = &M.children[i];
		if (c->used && c->pid != 0 && (!frontend_only || role_is_frontend(c->role)))
			return true;
	}
	return false;
}

static void master_signal_children(int sig, bool frontend)
{
	for (unsigned i = 0; i < MASTER_MAX_CHILDREN; i++) {
		const struct child *c = &M.children[i];
		if (c->used && c->pid != 0 && role_is_frontend(c->role) == frontend)
			kill(c->pid, sig);
	}
}

static void master_stop_step(void)
{
	/* Stage 1: smtpd and imapd workers finish what they accepted. Stage 2: the
	 * back-end processes. Then the loop ends. */
	if (M.stop_stage == 1 && !master_any_running(true)) {
		M.stop_stage = 2;
		master_signal_children(SIGTERM, false);
		struct timeval tv = { 10, 0 };
		event_add(M.stop_timer, &tv);
	}
	if (M.stop_stage == 2 && !master_any_running(false))
		event_base_loopbreak(M.base);
}

static void master_stop_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	log_warn("children did not stop in time; killing stage %d", M.stop_stage);
	master_signal_children(SIGKILL, M.stop_stage == 1);
}

static void master_sigchld_cb(evutil_socket_t sig, short what, void *arg)
{
	int status;
	pid_t pid;
	(void)sig;
	(void)what;
	(void)arg;
	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		struct child *c = NULL;
		for (unsigned i = 0; i < MASTER_MAX_CHILDREN; i++) {
			if (M.children[i].used && M.children[i].pid == pid)
				c = &M.children[i];
		}
		if (c == NULL)
			continue;
		c->pid = 0;
		bool clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
		if (WIFSIGNALED(status))
			log_error("%s pid=%ld killed by signal %d", role_names[c->role], (long)pid,
				  WTERMSIG(status));
		else if (clean && (M.stopping || c->retiring))
			log_info("%s pid=%ld exited", role_names[c->role], (long)pid);
		else
			log_warn("%s pid=%ld exited with status %d", role_names[c->role],
				 (long)pid, WEXITSTATUS(status));
		if (M.stopping)
			continue;
		if (c->retiring) {
			master_child_release(c);
			continue;
		}
		/* Restart with backoff: quick after a long life, slower when it
		 * keeps dying. */
		time_t lived = time(NULL) - c->started;
		c->backoff = lived > 30 ? 0 : (c->backoff == 0 ? 1 : c->backoff * 2);
		if (c->backoff > 30)
			c->backoff = 30;
		struct timeval tv = { c->backoff, c->backoff == 0 ? 100000 : 0 };
		event_add(c->restart_ev, &tv);
	}
	if (M.stopping)
		master_stop_step();
}

static void master_stop_cb(evutil_socket_t sig, short what, void *arg)
{
	(void)what;
	(void)arg;
	if (M.stopping)
		return;
	log_info("signal %d: stopping", (int)sig);
	M.stopping = true;
	M.stop_stage = 1;
	master_signal_children(SIGTERM, true);
	struct timeval tv = { 10, 0 };
	event_add(M.stop_timer, &tv);
	master_stop_step();
}

/* Builds the TLS set from M.cfg. At start a failure is fatal; on reload it
 * is logged and audited, and the running set stays. */
static void master_load_tls(bool at_start)
{
	const char *error;
	struct tls_set *set = tls_set_new(M.cfg, &error);
	if (set == NULL) {
		if (at_start)
			fatal("TLS: %s", error);
		log_error("reload: certificate: %s; keeping the old certificates", error);
		audit_event("certificate_reload", "result", "fail", "error", error, NULL);
		return;
	}
	tls_set_free(&M.tls);
	M.tls = set;
	time_t now = time(NULL);
	tls_set_log(M.tls, now);
	tls_set_check_expiry(M.tls, now);
	if (!at_start) {
		struct buf subjects;
		buf_init(&subjects, 16384);
		tls_set_subjects(M.tls, &subjects);
		log_info("reload: certificates loaded: %s",
			 subjects.data != NULL ? subjects.data : "");
		audit_event("certificate_reload", "result", "ok", "subject",
			    subjects.data != NULL ? subjects.data : "", NULL);
		buf_free(&subjects);
	}
}

static void master_expiry_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	if (M.tls != NULL)
		tls_set_check_expiry(M.tls, time(NULL));
}

/* DATA/run/master.pid for `postern reload`; removed at exit. Written after
 * the children are forked (they never remove it). */
static void master_write_pid_file(void)
{
	char text[32];
	int len = snprintf(text, sizeof(text), "%ld\n", (long)getpid());
	int fd = open(MASTER_PID_FILE ".tmp", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	int ok = fd >= 0 && write_full(fd, text, (size_t)len) == 0;
	if (fd >= 0 && close(fd) < 0)
		ok = 0;
	if (!ok || rename(MASTER_PID_FILE ".tmp", MASTER_PID_FILE) < 0) {
		log_warn("cannot write %s/%s: %s; `postern reload` will not find the daemon",
			 M.cfg->data_dir, MASTER_PID_FILE, strerror(errno));
		if (fd >= 0)
			unlink(MASTER_PID_FILE ".tmp");
		return;
	}
	M.pid_file_written = true;
}

static void master_reload_cb(evutil_socket_t sig, short what, void *arg)
{
	struct config *cfg;
	char *errors;
	(void)sig;
	(void)what;
	(void)arg;
	if (M.stopping)
		return;
	if (config_load(M.cfg->path, &cfg, &errors) < 0) {
		log_error("reload: the configuration has errors; keeping the running one");
		audit_event("config_reload", "result", "fail", "file", M.cfg->path, NULL);
		for (char *line = errors, *nl; *line != '\0'; line = nl + 1) {
			nl = strchr(line, '\n');
			if (nl == NULL)
				nl = line + strlen(line) - 1;
			else
				*nl = '\0';
			log_error("reload: %s", line);
		}
		free(errors);
		return;
	}
	for (unsigned i = 0; i < LISTENER_COUNT; i++) {
		const char *a = M.cfg->listen[i], *b = cfg->listen[i];
		if ((a == NULL) != (b == NULL) || (a != NULL && strcmp(a, b) != 0))
			log_warn("reload: listen.%s changed; takes effect after a restart",
				 listener_kind_name((enum listener_kind)i));
	}
	config_free(&M.cfg);
	M.cfg = cfg;
	audit_init(cfg->audit_log);
	audit_event("config_reload", "result", "ok", "file", cfg->path, NULL);
	master_load_tls(false);
	/* Old workers stop accepting and finish their sessions; new ones
	 * start with the new configuration and certificate. */
	for (unsigned i = 0; i < MASTER_MAX_CHILDREN; i++) {
		struct child *c = &M.children[i];
		if (c->used && role_is_frontend(c->role) && !c->retiring) {
			c->retiring = true;
			if (c->pid != 0)
				kill(c->pid, SIGUSR1);
			else
				master_child_release(c);
		}
	}
	master_start_workers(ROLE_SMTPD);
	master_start_workers(ROLE_IMAPD);
	/* The directory keeps its state (live counts, pending checks): it
	 * re-reads the file itself (security.*, connection limits, audit). */
	for (unsigned i = 0; i < MASTER_MAX_CHILDREN; i++) {
		struct child *c = &M.children[i];
		if (c->used && c->role == ROLE_DIRECTORY && c->pid != 0)
			kill(c->pid, SIGHUP);
	}
	log_info("reload: configuration re-read, smtpd and imapd workers replaced");
}

int master_serve(struct config *cfg)
{
	memset(&M, 0, sizeof(M));
	M.cfg = cfg;
	M.master_pid = getpid();
	if (chdir(cfg->data_dir) < 0)
		fatal("data_dir %s: %s", cfg->data_dir, strerror(errno));
	if (mkdir("run", 0711) < 0 && errno != EEXIST)
		fatal("cannot create %s/run: %s", cfg->data_dir, strerror(errno));
	/* Local users reach run/submit.sock (`postern sendmail`): the data
	 * directory and run/ may be traversed, not listed. Everything in them
	 * keeps its own mode (0700 directories, 0600 files). */
	if (chmod(".", 0711) < 0 || chmod("run", 0711) < 0)
		log_warn("cannot make %s traversable for local submission: %s", cfg->data_dir,
			 strerror(errno));
	if (mkdir_p(cfg->mail_dir, 0700) < 0 || mkdir_p(cfg->spool_dir, 0700) < 0)
		fatal("cannot create mail or spool directory: %s", strerror(errno));
	master_prepare_user();

	for (unsigned k = 0; k < LISTENER_COUNT; k++) {
		const char *addr = cfg->listen[k];
		if (addr == NULL)
			continue;
		if (k == LISTENER_HTTP) {
			log_warn("listen.http = %s: this listener is not implemented yet; ignored",
				 addr);
			continue;
		}
		if (master_bind(addr, (enum listener_kind)k) > 0)
			log_info("listening %s on %s", listener_kind_name((enum listener_kind)k),
				 addr);
		/* The config allows it on loopback addresses only; say it loudly. */
		if (cfg->tls_listener[k].allow_plaintext_auth)
			log_warn("listen.%s.allow_plaintext_auth = yes: passwords are accepted "
				 "without TLS on %s (for loopback testing only)",
				 listener_kind_name((enum listener_kind)k), addr);
	}
	if (M.nlisteners == 0)
		fatal("no listener configured");

	/* DESIGN.md: the master loads the TLS keys. A broken certificate is a
	 * clear start-up error, and the workers share the loaded contexts. */
	audit_init(cfg->audit_log);
	master_load_tls(true);

	M.base = event_base_new();
	if (M.base == NULL)
		fatal("event_base_new failed");
	M.stop_timer = evtimer_new(M.base, master_stop_timer_cb, NULL);
	M.expiry_timer = event_new(M.base, -1, EV_PERSIST, master_expiry_cb, NULL);
	struct timeval day = { MASTER_EXPIRY_CHECK_SECS, 0 };
	event_add(M.expiry_timer, &day);
	M.sigs[0] = evsignal_new(M.base, SIGCHLD, master_sigchld_cb, NULL);
	M.sigs[1] = evsignal_new(M.base, SIGTERM, master_stop_cb, NULL);
	M.sigs[2] = evsignal_new(M.base, SIGINT, master_stop_cb, NULL);
	M.sigs[3] = evsignal_new(M.base, SIGHUP, master_reload_cb, NULL);
	for (size_t i = 0; i < sizeof(M.sigs) / sizeof(M.sigs[0]); i++)
		event_add(M.sigs[i], NULL);
	signal(SIGPIPE, SIG_IGN);

	/* Back-end first: they listen, the others connect (with retries). */
	master_spawn(master_child_new(ROLE_DIRECTORY));
	master_spawn(master_child_new(ROLE_QUEUE));
	master_spawn(master_child_new(ROLE_DELIVER));
	unsigned n = master_start_workers(ROLE_SMTPD);
	unsigned ni = master_start_workers(ROLE_IMAPD);
	master_write_pid_file();
	log_info("postern ready: %u smtpd workers, %u imapd workers", n, ni);

	event_base_dispatch(M.base);

	master_free_events();
	if (M.pid_file_written)
		unlink(MASTER_PID_FILE);
	for (unsigned i = 0; i < M.nlisteners; i++)
		close(M.listeners[i].fd);
	tls_set_free(&M.tls);
	config_free(&M.cfg);
	log_info("stopped");
	return 0;
}
