/*
 * ipc.c — typed, length-checked frames over Unix sockets (see ipc.h).
 * Used by every process; owns nothing but its connection buffers.
 */
#include "ipc.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "lib/limits.h"
#include "lib/log.h"

struct ipc_header {
	uint32_t type;
	uint32_t len;
	uint64_t id;
};

struct ipc_conn {
	struct bufferevent *bev;
	ipc_frame_cb *frame_cb;
	ipc_close_cb *close_cb;
	void *ctx;
	bool closed;
};

void ipc_writer_init(struct ipc_writer *w)
{
	buf_init(&w->b, IPC_FRAME_MAX);
}

void ipc_writer_free(struct ipc_writer *w)
{
	buf_free(&w->b);
}

void ipc_put_u32(struct ipc_writer *w, uint32_t v)
{
	(void)buf_append(&w->b, &v, sizeof(v));
}

void ipc_put_u64(struct ipc_writer *w, uint64_t v)
{
	(void)buf_append(&w->b, &v, sizeof(v));
}

void ipc_put_bytes(struct ipc_writer *w, const void *data, size_t len)
{
	uint32_t n = (uint32_t)len;
	if (len >= UINT32_MAX || buf_append(&w->b, &n, sizeof(n)) < 0 ||
	    buf_append(&w->b, data, len) < 0)
		w->b.max = 0; /* poison: ipc_send() refuses it */
}

void ipc_put_str(struct ipc_writer *w, const char *s)
{
	if (s == NULL) {
		ipc_put_u32(w, UINT32_MAX);
		return;
	}
	/* Length includes the NUL so the reader can hand out the pointer. */
	ipc_put_bytes(w, s, strlen(s) + 1);
}

static const void *ipc_take(struct ipc_reader *r, size_t len)
{
	if (r->error || r->left < len) {
		r->error = true;
		return NULL;
	}
	const void *p = r->p;
	r->p += len;
	r->left -= len;
	return p;
}

uint32_t ipc_get_u32(struct ipc_reader *r)
{
	uint32_t v = 0;
	const void *p = ipc_take(r, sizeof(v));
	if (p != NULL)
		memcpy(&v, p, sizeof(v));
	return v;
}

uint64_t ipc_get_u64(struct ipc_reader *r)
{
	uint64_t v = 0;
	const void *p = ipc_take(r, sizeof(v));
	if (p != NULL)
		memcpy(&v, p, sizeof(v));
	return v;
}

const void *ipc_get_bytes(struct ipc_reader *r, size_t *len_r)
{
	uint32_t n = ipc_get_u32(r);
	*len_r = 0;
	if (r->error || n == UINT32_MAX)
		return NULL;
	const void *p = ipc_take(r, n);
	if (p != NULL)
		*len_r = n;
	return p;
}

const char *ipc_get_str(struct ipc_reader *r)
{
	size_t len;
	const char *s = ipc_get_bytes(r, &len);
	if (s == NULL)
		return NULL;
	/* Exactly one NUL, at the end. */
	if (len == 0 || s[len - 1] != '\0' || memchr(s, '\0', len - 1) != NULL) {
		r->error = true;
		return NULL;
	}
	return s;
}

static void ipc_conn_close(struct ipc_conn *conn)
{
	if (conn->closed)
		return;
	conn->closed = true;
	bufferevent_disable(conn->bev, EV_READ | EV_WRITE);
	conn->close_cb(conn, conn->ctx);
}

static void ipc_read_cb(struct bufferevent *bev, void *arg)
{
	struct ipc_conn *conn = arg;
	struct evbuffer *in = bufferevent_get_input(bev);

	while (!conn->closed) {
		struct ipc_header h;
		size_t avail = evbuffer_get_length(in);
		if (avail < sizeof(h))
			return;
		evbuffer_copyout(in, &h, sizeof(h));
		if (h.len > IPC_FRAME_MAX) {
			log_error("ipc: frame of %u bytes (type %u) exceeds limit; closing",
				  h.len, h.type);
			ipc_conn_close(conn);
			return;
		}
		if (avail < sizeof(h) + h.len)
			return;
		unsigned char *frame = evbuffer_pullup(in, (ev_ssize_t)(sizeof(h) + h.len));
		struct ipc_reader r = { .p = frame + sizeof(h), .left = h.len, .error = false };
		conn->frame_cb(conn, h.type, h.id, &r, conn->ctx);
		if (conn->closed)
			return;
		evbuffer_drain(in, sizeof(h) + h.len);
	}
}

static void ipc_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct ipc_conn *conn = arg;
	(void)bev;
	if ((what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) != 0)
		ipc_conn_close(conn);
}

struct ipc_conn *ipc_conn_new(struct event_base *base, int fd, ipc_frame_cb *frame_cb,
			      ipc_close_cb *close_cb, void *ctx)
{
	struct ipc_conn *conn = calloc(1, sizeof(*conn));
	if (conn == NULL)
		return NULL;
	evutil_make_socket_nonblocking(fd);
	conn->bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (conn->bev == NULL) {
		free(conn);
		return NULL;
	}
	conn->frame_cb = frame_cb;
	conn->close_cb = close_cb;
	conn->ctx = ctx;
	bufferevent_setcb(conn->bev, ipc_read_cb, NULL, ipc_event_cb, conn);
	bufferevent_enable(conn->bev, EV_READ | EV_WRITE);
	return conn;
}

void ipc_conn_free(struct ipc_conn **connp)
{
	struct ipc_conn *conn = *connp;
	if (conn == NULL)
		return;
	*connp = NULL;
	bufferevent_free(conn->bev);
	free(conn);
}

void ipc_conn_set_ctx(struct ipc_conn *conn, void *ctx)
{
	conn->ctx = ctx;
}

void *ipc_conn_ctx(struct ipc_conn *conn)
{
	return conn->ctx;
}

int ipc_send_raw(struct ipc_conn *conn, uint32_t type, uint64_t id, const void *payload,
		 size_t len)
{
	if (conn == NULL || conn->closed || len > IPC_FRAME_MAX)
		return -1;
	struct ipc_header h = { .type = type, .len = (uint32_t)len, .id = id };
	struct evbuffer *out = bufferevent_get_output(conn->bev);
	if (evbuffer_add(out, &h, sizeof(h)) < 0)
		return -1;
	if (len > 0 && evbuffer_add(out, payload, len) < 0)
		return -1;
	return 0;
}

int ipc_send(struct ipc_conn *conn, uint32_t type, uint64_t id, const struct ipc_writer *w)
{
	if (conn == NULL || w->b.max == 0)
		return -1;
	return ipc_send_raw(conn, type, id, w->b.data, w->b.len);
}

size_t ipc_conn_pending(struct ipc_conn *conn)
{
	return evbuffer_get_length(bufferevent_get_output(conn->bev));
}

static int ipc_sockaddr(const char *path, struct sockaddr_un *sun)
{
	memset(sun, 0, sizeof(*sun));
	sun->sun_family = AF_UNIX;
	size_t len = strlen(path);
	if (len >= sizeof(sun->sun_path)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	memcpy(sun->sun_path, path, len + 1);
	return 0;
}

int ipc_listen_unix(const char *path)
{
	struct sockaddr_un sun;
	if (ipc_sockaddr(path, &sun) < 0)
		return -1;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -1;
	(void)unlink(path);
	/* Only the owner may connect, whatever the umask (run/ is traversable
	 * by local users for run/submit.sock, which is opened up on purpose). */
	if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0 || chmod(path, 0600) < 0 ||
	    listen(fd, 128) < 0) {
		int saved = errno;
		close(fd);
		errno = saved;
		return -1;
	}
	return fd;
}

int ipc_connect_unix(const char *path, int timeout_ms)
{
	struct sockaddr_un sun;
	if (ipc_sockaddr(path, &sun) < 0)
		return -1;
	for (int waited = 0;; waited += 20) {
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			return -1;
		if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0) {
			evutil_make_socket_nonblocking(fd);
			return fd;
		}
		int saved = errno;
		close(fd);
		if ((saved != ENOENT && saved != ECONNREFUSED) || waited >= timeout_ms) {
			errno = saved;
			return -1;
		}
		struct timespec ts = { 0, 20 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
}

/* ---- blocking client side ---- */

static int ipc_sync_write(int fd, const void *data, size_t len)
{
	const unsigned char *p = data;
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int ipc_sync_send(int fd, uint32_t type, uint64_t id, const struct ipc_writer *w)
{
	if (w->b.max == 0 || w->b.len > IPC_FRAME_MAX) {
		errno = EMSGSIZE;
		return -1;
	}
	struct ipc_header h = { .type = type, .len = (uint32_t)w->b.len, .id = id };
	if (ipc_sync_write(fd, &h, sizeof(h)) < 0)
		return -1;
	return w->b.len > 0 ? ipc_sync_write(fd, w->b.data, w->b.len) : 0;
}

static int ipc_sync_read(int fd, void *data, size_t len, const struct timespec *deadline)
{
	unsigned char *p = data;
	while (len > 0) {
		struct timespec now;
		clock_gettime(CLOCK_MONOTONIC, &now);
		long ms = (deadline->tv_sec - now.tv_sec) * 1000 +
			  (deadline->tv_nsec - now.tv_nsec) / 1000000;
		if (ms <= 0) {
			errno = ETIMEDOUT;
			return -1;
		}
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		int r = poll(&pfd, 1, (int)ms);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -1;
		if (r == 0)
			continue;
		ssize_t n = read(fd, p, len);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n < 0)
			return -1;
		if (n == 0) {
			errno = ECONNRESET;
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int ipc_sync_recv(int fd, uint32_t *type_r, uint64_t *id_r, struct buf *payload_r,
		  int timeout_ms)
{
	struct timespec deadline;
	clock_gettime(CLOCK_MONOTONIC, &deadline);
	deadline.tv_sec += timeout_ms / 1000;
	deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
	if (deadline.tv_nsec >= 1000000000) {
		deadline.tv_sec++;
		deadline.tv_nsec -= 1000000000;
	}
	struct ipc_header h;
	if (ipc_sync_read(fd, &h, sizeof(h), &deadline) < 0)
		return -1;
	if (h.len > IPC_FRAME_MAX) {
		errno = EPROTO;
		return -1;
	}
	buf_reset(payload_r);
	if (h.len > 0) {
		unsigned char tmp[4096];
		size_t left = h.len;
		while (left > 0) {
			size_t n = left < sizeof(tmp) ? left : sizeof(tmp);
			if (ipc_sync_read(fd, tmp, n, &deadline) < 0)
				return -1;
			if (buf_append(payload_r, tmp, n) < 0) {
				errno = ENOMEM;
				return -1;
			}
			left -= n;
		}
	}
	*type_r = h.type;
	*id_r = h.id;
	return 0;
}
