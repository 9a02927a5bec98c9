/*
 * kumasim.c — a simulated cluster-aware Uptime Kuma node for integration tests, the demo and
 * benchmarks.
 *
 * Owns: the node's HTTP surface as kumaguard sees it (GET /api/v1/health in five behaviours,
 * POST /api/v1/reconcile-monitors with API-key auth and counters), a test-only control surface
 * under /_sim/, a plain page for every other path (so proxy tests see which node answered,
 * also through the X-Kuma-Node header on every response) and a WebSocket echo on
 * /socket.io/ws-echo.
 *
 * Must not: touch any database, link kg_core, or block an MHD thread.  Slow and hanging health
 * answers are MHD-suspended connections released by one scheduler thread, so a hung request
 * never starves the others; each WebSocket gets its own small thread because MHD hands the
 * upgraded socket over and stops polling it.
 *
 * Threads and shared state: MHD's pool threads run the handlers; the scheduler thread owns the
 * list of suspended requests (guarded by sim.lock, which also guards every mode change so a
 * request never suspends itself after the mode it reacted to was left); the main thread only
 * waits for signals and runs the shutdown.  Counters are C11 atomics.
 */

#include <netinet/in.h>
#include <arpa/inet.h>
#include <microhttpd.h>
#include <json-c/json.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define NODE_ID_MAX 50            /* node.node_id is VARCHAR(50) */
#define MODE_BODY_MAX 128         /* POST /_sim/mode body */
#define PEER_POLL_MS 200          /* how often hung connections are checked for a client close */
#define SHUTDOWN_DRAIN_MS 3000    /* bound on waiting for suspended requests and WebSockets */
#define WS_MSG_MAX (16 * 1024)    /* largest echoed message; "small frames" is the contract */
#define WS_SESSIONS_MAX 1024      /* each session is one thread with a small stack */
#define WS_SEND_TIMEOUT_MS 5000
#define WS_THREAD_STACK (128 * 1024)
#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

/* ============================== state ============================== */

enum sim_mode { MODE_HEALTHY, MODE_FAIL, MODE_503, MODE_HANG, MODE_SLOW, MODE_COUNT };

static const char *const mode_names[MODE_COUNT] = { "healthy", "fail", "503", "hang", "slow" };

enum route {
	R_HEALTH, R_RECONCILE, R_SIM_MODE, R_SIM_STATS, R_SIM_RESET, R_SIM_EXIT, R_SIM_UNKNOWN,
	R_WS, R_PAGE
};

/* Lifecycle of a health request that had to wait (hang or slow mode). */
enum rq_state { RQ_ACTIVE, RQ_SUSPENDED, RQ_RESUMING };
enum wake_reason { WAKE_NONE, WAKE_DEADLINE, WAKE_MODE_CHANGED, WAKE_PEER_GONE, WAKE_SHUTDOWN };

/*
 * One per HTTP request (MHD's con_cls).  A suspended request sits in sim.waiting (doubly
 * linked, guarded by sim.lock) with state RQ_SUSPENDED; whoever releases it unlinks it, sets
 * RQ_RESUMING and the reason, then resumes the connection and never touches it again.  The
 * MHD thread that re-enters the handler (or completes the request) sets it back to RQ_ACTIVE.
 */
struct req {
	enum route route;
	struct MHD_Connection *conn;
	int64_t arrival_ms;           /* monotonic */
	char body[MODE_BODY_MAX + 1];
	size_t body_len;
	bool body_too_big;
	bool is_exit;                 /* POST /_sim/exit: exit once this answer is sent */
	_Atomic int state;
	int wake_reason;
	int64_t deadline_ms;          /* 0 = hang (no deadline) */
	int fd;                       /* client socket, polled for a close while hung */
	struct req *prev, *next;
};

struct sim_opts {
	struct sockaddr_storage addr;
	socklen_t addr_len;
	char node_id[NODE_ID_MAX + 1];
	const char *api_key;          /* NULL: reconcile accepts any caller */
	const char *pidfile;
	int mode;
	unsigned slow_ms;
	unsigned threads;
	bool verbose;
};

struct sim {
	struct sim_opts opt;
	struct MHD_Daemon *daemon;
	uint16_t port;
	int64_t start_ms;

	_Atomic int mode;
	_Atomic unsigned slow_ms;
	atomic_ullong health_requests;
	atomic_ullong reconcile_calls;
	atomic_ullong reconcile_unauthorized;
	_Atomic int64_t last_reconcile_ms;   /* CLOCK_REALTIME ms, 0 = never */

	pthread_mutex_t lock;                /* guards waiting list, n_waiting, mode changes */
	pthread_cond_t sched_cond;           /* CLOCK_MONOTONIC */
	pthread_t sched_thread;
	bool sched_running;
	bool sched_stop;
	/* Set once, under lock, when shutdown starts; atomic (seq_cst) so on_upgrade can check it
	 * after counting itself in ws_active without the lock and still be seen by the drain. */
	atomic_bool stopping;
	struct req *waiting;
	unsigned n_waiting;
	_Atomic int outstanding;             /* suspended or resuming, not yet back in a handler */

	_Atomic int ws_active;
	int wake_pipe[2];                    /* written once at shutdown; wakes every WebSocket */

	/* Responses that never change, built once and queued many times (MHD refcounts them). */
	struct MHD_Response *resp_page;
	struct MHD_Response *resp_ok;
	struct MHD_Response *resp_unauth;
	char page_body[256];
};

/* ============================== small helpers ============================== */

static int64_t clock_ms(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t mono_ms(void) { return clock_ms(CLOCK_MONOTONIC); }

static void logmsg(const struct sim *s, const char *fmt, ...)
{
	va_list ap;

	if (s != NULL && !s->opt.verbose)
		return;
	fprintf(stderr, "kumasim: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static int mode_from_name(const char *name, size_t len)
{
	for (int m = 0; m < MODE_COUNT; m++)
		if (strlen(mode_names[m]) == len && strncasecmp(mode_names[m], name, len) == 0)
			return m;
	return -1;
}

/* Compare without an early exit, so the key cannot be guessed byte by byte from timing. */
static bool secret_equal(const char *given, const char *secret)
{
	size_t gl = strlen(given), sl = strlen(secret);
	unsigned char diff = (unsigned char)(gl != sl);

	for (size_t i = 0; i < sl; i++)
		diff |= (unsigned char)(secret[i] ^ given[i < gl ? i : 0]);
	return diff == 0 && gl == sl;
}

/* Node ids are echoed into JSON, an HTTP header and HTML: keep them to a safe alphabet. */
static bool node_id_valid(const char *id)
{
	size_t n = strlen(id);

	if (n == 0 || n > NODE_ID_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = id[i];
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
			c == '-' || c == '_' || c == '.';
		if (!ok)
			return false;
	}
	return true;
}

/* ============================== SHA-1 and base64 ============================== */
/*
 * Only the WebSocket handshake needs them (Sec-WebSocket-Accept), and kumasim deliberately links
 * no TLS library, so here is a plain FIPS 180-1 SHA-1 written for this file.
 */

static uint32_t rol32(uint32_t x, unsigned n) { return (x << n) | (x >> (32 - n)); }

static void sha1_block(uint32_t h[5], const unsigned char *p)
{
	uint32_t w[80], a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];

	for (int i = 0; i < 16; i++)
		w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
		       (uint32_t)p[4 * i + 2] << 8 | (uint32_t)p[4 * i + 3];
	for (int i = 16; i < 80; i++)
		w[i] = rol32(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
	for (int i = 0; i < 80; i++) {
		uint32_t f, k;
		if (i < 20) {
			f = (b & c) | (~b & d);
			k = 0x5A827999u;
		} else if (i < 40) {
			f = b ^ c ^ d;
			k = 0x6ED9EBA1u;
		} else if (i < 60) {
			f = (b & c) | (b & d) | (c & d);
			k = 0x8F1BBCDCu;
		} else {
			f = b ^ c ^ d;
			k = 0xCA62C1D6u;
		}
		uint32_t t = rol32(a, 5) + f + e + k + w[i];
		e = d;
		d = c;
		c = rol32(b, 30);
		b = a;
		a = t;
	}
	h[0] += a;
	h[1] += b;
	h[2] += c;
	h[3] += d;
	h[4] += e;
}

static void sha1(const void *data, size_t len, unsigned char out[20])
{
	uint32_t h[5] = { 0x67452301u, 0xEFCDAB89u, 0x98BADCFEu, 0x10325476u, 0xC3D2E1F0u };
	const unsigned char *p = data;
	unsigned char tail[128];
	size_t full = len / 64 * 64, rest = len - full, tail_len;
	uint64_t bits = (uint64_t)len * 8;

	for (size_t off = 0; off < full; off += 64)
		sha1_block(h, p + off);
	memset(tail, 0, sizeof(tail));
	memcpy(tail, p + full, rest);
	tail[rest] = 0x80;
	tail_len = rest + 1 + 8 <= 64 ? 64 : 128;
	for (int i = 0; i < 8; i++)
		tail[tail_len - 1 - i] = (unsigned char)(bits >> (8 * i));
	for (size_t off = 0; off < tail_len; off += 64)
		sha1_block(h, tail + off);
	for (int i = 0; i < 5; i++) {
		out[4 * i] = (unsigned char)(h[i] >> 24);
		out[4 * i + 1] = (unsigned char)(h[i] >> 16);
		out[4 * i + 2] = (unsigned char)(h[i] >> 8);
		out[4 * i + 3] = (unsigned char)h[i];
	}
}

/* Writes base64 of in[0..len) plus a NUL; out must hold 4*ceil(len/3)+1 bytes. */
static void base64_encode(const unsigned char *in, size_t len, char *out, size_t out_size)
{
	static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t o = 0;

	if (out_size < (len + 2) / 3 * 4 + 1) {
		if (out_size > 0)
			out[0] = '\0';
		return;
	}
	for (size_t i = 0; i < len; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16;
		if (i + 1 < len)
			v |= (uint32_t)in[i + 1] << 8;
		if (i + 2 < len)
			v |= in[i + 2];
		out[o++] = tbl[(v >> 18) & 63];
		out[o++] = tbl[(v >> 12) & 63];
		out[o++] = i + 1 < len ? tbl[(v >> 6) & 63] : '=';
		out[o++] = i + 2 < len ? tbl[v & 63] : '=';
	}
	out[o] = '\0';
}

/* ============================== responses ============================== */

static struct MHD_Response *new_response(const struct sim *s, const void *body, size_t len,
					 enum MHD_ResponseMemoryMode mem, const char *ctype)
{
	struct MHD_Response *r = MHD_create_response_from_buffer(len, (void *)body, mem);

	if (r == NULL)
		return NULL;
	if (MHD_add_response_header(r, "X-Kuma-Node", s->opt.node_id) != MHD_YES ||
	    (ctype != NULL &&
	     MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype) != MHD_YES)) {
		MHD_destroy_response(r);
		return NULL;
	}
	return r;
}

static enum MHD_Result queue_shared(struct MHD_Connection *c, unsigned status,
				    struct MHD_Response *r)
{
	return MHD_queue_response(c, status, r);
}

static enum MHD_Result reply_copy(const struct sim *s, struct MHD_Connection *c, unsigned status,
				  const char *ctype, const char *body, size_t len,
				  const char *allow, bool close_after)
{
	struct MHD_Response *r = new_response(s, body, len, MHD_RESPMEM_MUST_COPY, ctype);
	enum MHD_Result ret;

	if (r == NULL)
		return MHD_NO;
	if ((allow != NULL && MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, allow) != MHD_YES) ||
	    (close_after &&
	     MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close") != MHD_YES)) {
		MHD_destroy_response(r);
		return MHD_NO;
	}
	ret = MHD_queue_response(c, status, r);
	MHD_destroy_response(r);
	return ret;
}

static enum MHD_Result reply_json(const struct sim *s, struct MHD_Connection *c, unsigned status,
				  const char *body)
{
	return reply_copy(s, c, status, "application/json; charset=utf-8", body, strlen(body),
			  NULL, false);
}

/* error and detail are fixed ASCII strings from this file: no escaping needed. */
static enum MHD_Result reply_error(const struct sim *s, struct MHD_Connection *c, unsigned status,
				   const char *error, const char *detail, const char *allow)
{
	char buf[256];
	int n = snprintf(buf, sizeof(buf), "{\"error\":\"%s\",\"detail\":\"%s\"}", error, detail);

	if (n < 0 || (size_t)n >= sizeof(buf))
		return MHD_NO;
	return reply_copy(s, c, status, "application/json; charset=utf-8", buf, (size_t)n, allow,
			  false);
}

static enum MHD_Result reply_method_not_allowed(const struct sim *s, struct MHD_Connection *c,
						const char *allow)
{
	return reply_error(s, c, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed",
			   "see the Allow header", allow);
}

static bool build_shared_responses(struct sim *s)
{
	static const char ok[] = "{\"ok\":true}";
	static const char unauth[] =
		"{\"ok\":false,\"error\":\"unauthorized\",\"detail\":\"missing or wrong Authorization header\"}";
	int n = snprintf(s->page_body, sizeof(s->page_body),
			 "<!doctype html>\n<html><head><title>kumasim %s</title></head>"
			 "<body><h1>kumasim %s</h1></body></html>\n",
			 s->opt.node_id, s->opt.node_id);

	if (n < 0 || (size_t)n >= sizeof(s->page_body))
		return false;
	s->resp_page = new_response(s, s->page_body, (size_t)n, MHD_RESPMEM_PERSISTENT,
				    "text/html; charset=utf-8");
	s->resp_ok = new_response(s, ok, sizeof(ok) - 1, MHD_RESPMEM_PERSISTENT,
				  "application/json; charset=utf-8");
	s->resp_unauth = new_response(s, unauth, sizeof(unauth) - 1, MHD_RESPMEM_PERSISTENT,
				      "application/json; charset=utf-8");
	return s->resp_page != NULL && s->resp_ok != NULL && s->resp_unauth != NULL;
}

static void destroy_shared_responses(struct sim *s)
{
	struct MHD_Response **all[] = { &s->resp_page, &s->resp_ok, &s->resp_unauth };

	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
		if (*all[i] != NULL)
			MHD_destroy_response(*all[i]);
		*all[i] = NULL;
	}
}

/* ============================== suspended requests ============================== */

static void waiting_unlink_locked(struct sim *s, struct req *rq)
{
	if (rq->prev != NULL)
		rq->prev->next = rq->next;
	else
		s->waiting = rq->next;
	if (rq->next != NULL)
		rq->next->prev = rq->prev;
	rq->prev = rq->next = NULL;
	s->n_waiting--;
}

/* Hands the request back to MHD.  After MHD_resume_connection the request belongs to MHD's
 * thread again (it may even be freed before we return), so nothing touches rq afterwards. */
static void release_locked(struct sim *s, struct req *rq, int reason)
{
	struct MHD_Connection *conn = rq->conn;

	waiting_unlink_locked(s, rq);
	rq->wake_reason = reason;
	atomic_store(&rq->state, RQ_RESUMING);
	MHD_resume_connection(conn);
}

static void release_all_locked(struct sim *s, int reason)
{
	while (s->waiting != NULL)
		release_locked(s, s->waiting, reason);
}

/* Called by an MHD thread with sim.lock held: park the request until the scheduler, a mode
 * change or the shutdown releases it. */
static void suspend_locked(struct sim *s, struct req *rq, int64_t deadline_ms)
{
	const union MHD_ConnectionInfo *ci =
		MHD_get_connection_info(rq->conn, MHD_CONNECTION_INFO_CONNECTION_FD);

	rq->fd = ci != NULL ? ci->connect_fd : -1;
	rq->deadline_ms = deadline_ms;
	rq->wake_reason = WAKE_NONE;
	MHD_suspend_connection(rq->conn);
	atomic_store(&rq->state, RQ_SUSPENDED);
	atomic_fetch_add(&s->outstanding, 1);
	rq->prev = NULL;
	rq->next = s->waiting;
	if (s->waiting != NULL)
		s->waiting->prev = rq;
	s->waiting = rq;
	s->n_waiting++;
	pthread_cond_signal(&s->sched_cond);
}

/* A client that gave up on a hung request closed its socket; MHD does not watch suspended
 * sockets, so without this check hung connections would pile up until the mode changes. */
static bool peer_gone(int fd)
{
	struct pollfd pf = { .fd = fd, .events = POLLRDHUP };

	if (fd < 0)
		return false;
	if (poll(&pf, 1, 0) <= 0)
		return false;
	return (pf.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) != 0;
}

static void *sched_main(void *arg)
{
	struct sim *s = arg;

	pthread_mutex_lock(&s->lock);
	while (!s->sched_stop) {
		int64_t now = mono_ms(), next = INT64_MAX;
		struct req *rq = s->waiting, *nx;

		for (; rq != NULL; rq = nx) {
			nx = rq->next;
			if (rq->deadline_ms != 0) {
				if (now >= rq->deadline_ms)
					release_locked(s, rq, WAKE_DEADLINE);
				else if (rq->deadline_ms < next)
					next = rq->deadline_ms;
			} else if (peer_gone(rq->fd)) {
				release_locked(s, rq, WAKE_PEER_GONE);
			} else if (now + PEER_POLL_MS < next) {
				next = now + PEER_POLL_MS;
			}
		}
		if (next == INT64_MAX) {
			pthread_cond_wait(&s->sched_cond, &s->lock);
		} else {
			struct timespec ts = { .tv_sec = next / 1000,
					       .tv_nsec = (long)(next % 1000) * 1000000L };
			pthread_cond_timedwait(&s->sched_cond, &s->lock, &ts);
		}
	}
	pthread_mutex_unlock(&s->lock);
	return NULL;
}

/* Mode changes go through the lock so no request can decide to hang on a mode that is already
 * gone; every parked request is released to re-evaluate under the new mode. */
static void set_mode(struct sim *s, int mode)
{
	pthread_mutex_lock(&s->lock);
	if (atomic_exchange(&s->mode, mode) != mode)
		release_all_locked(s, WAKE_MODE_CHANGED);
	pthread_mutex_unlock(&s->lock);
	logmsg(s, "mode %s", mode_names[mode]);
}

/* ============================== /api/v1/health ============================== */

static enum MHD_Result reply_health(struct sim *s, struct MHD_Connection *c, int mode)
{
	char buf[512];
	long long uptime = (long long)((mono_ms() - s->start_ms) / 1000);
	const char *id = s->opt.node_id;
	unsigned status = MHD_HTTP_OK;
	int n;

	if (mode == MODE_FAIL || mode == MODE_503) {
		n = snprintf(buf, sizeof(buf),
			     "{\"ok\":false,\"status\":\"unhealthy\",\"nodeId\":\"%s\",\"uptime\":%lld,"
			     "\"checks\":{\"database\":{\"status\":\"unhealthy\",\"error\":\"%s\"},"
			     "\"server\":{\"status\":\"healthy\"}}}",
			     id, uptime,
			     mode == MODE_503 ? "simulated: database connection lost"
					      : "simulated: database check failed");
		if (mode == MODE_503)
			status = MHD_HTTP_SERVICE_UNAVAILABLE;
	} else {
		n = snprintf(buf, sizeof(buf),
			     "{\"ok\":true,\"status\":\"healthy\",\"nodeId\":\"%s\",\"uptime\":%lld,"
			     "\"checks\":{\"database\":{\"status\":\"healthy\"},"
			     "\"server\":{\"status\":\"healthy\"}}}",
			     id, uptime);
	}
	if (n < 0 || (size_t)n >= sizeof(buf))
		return MHD_NO;
	return reply_copy(s, c, status, "application/json; charset=utf-8", buf, (size_t)n, NULL,
			  false);
}

static enum MHD_Result serve_health(struct sim *s, struct req *rq)
{
	if (atomic_load(&rq->state) != RQ_ACTIVE) {
		/* Back from suspension. */
		atomic_store(&rq->state, RQ_ACTIVE);
		atomic_fetch_sub(&s->outstanding, 1);
		if (rq->wake_reason == WAKE_SHUTDOWN || rq->wake_reason == WAKE_PEER_GONE)
			return MHD_NO; /* drop the connection, as a dying process would */
	}
	for (;;) {
		int mode = atomic_load(&s->mode);
		int64_t deadline = 0;

		if (mode == MODE_SLOW) {
			deadline = rq->arrival_ms + (int64_t)atomic_load(&s->slow_ms);
			if (mono_ms() >= deadline)
				return reply_health(s, rq->conn, MODE_HEALTHY);
		} else if (mode != MODE_HANG) {
			return reply_health(s, rq->conn, mode);
		}
		pthread_mutex_lock(&s->lock);
		if (atomic_load(&s->stopping)) {
			pthread_mutex_unlock(&s->lock);
			return MHD_NO;
		}
		if (atomic_load(&s->mode) != mode) {
			pthread_mutex_unlock(&s->lock);
			continue; /* changed under us: decide again */
		}
		suspend_locked(s, rq, deadline);
		pthread_mutex_unlock(&s->lock);
		return MHD_YES;
	}
}

/* ============================== reconcile ============================== */

static bool reconcile_authorized(const struct sim *s, struct MHD_Connection *c)
{
	const char *h;

	if (s->opt.api_key == NULL)
		return true;
	h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
	if (h == NULL)
		return false;
	if (secret_equal(h, s->opt.api_key))
		return true;
	if (strncasecmp(h, "Bearer ", 7) == 0) {
		h += 7;
		while (*h == ' ')
			h++;
		return secret_equal(h, s->opt.api_key);
	}
	return false;
}

static enum MHD_Result serve_reconcile(struct sim *s, struct MHD_Connection *c)
{
	if (!reconcile_authorized(s, c)) {
		atomic_fetch_add(&s->reconcile_unauthorized, 1);
		return queue_shared(c, MHD_HTTP_UNAUTHORIZED, s->resp_unauth);
	}
	atomic_store(&s->last_reconcile_ms, clock_ms(CLOCK_REALTIME));
	atomic_fetch_add(&s->reconcile_calls, 1);
	return queue_shared(c, MHD_HTTP_OK, s->resp_ok);
}

/* ============================== /_sim control ============================== */

static enum MHD_Result serve_sim_mode(struct sim *s, struct req *rq)
{
	struct MHD_Connection *c = rq->conn;
	const char *p = rq->body, *end = rq->body + rq->body_len;
	const char *q;
	int mode;

	if (rq->body_too_big)
		return reply_error(s, c, MHD_HTTP_CONTENT_TOO_LARGE, "body too large",
				   "send one of healthy|fail|503|hang|slow", NULL);
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
		p++;
	while (end > p && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r' || end[-1] == '\n'))
		end--;
	mode = mode_from_name(p, (size_t)(end - p));
	if (mode < 0)
		return reply_error(s, c, MHD_HTTP_BAD_REQUEST, "unknown mode",
				   "send one of healthy|fail|503|hang|slow", NULL);
	q = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "slow_ms");
	if (q != NULL) {
		char *e;
		unsigned long v;

		errno = 0;
		v = strtoul(q, &e, 10);
		if (errno != 0 || e == q || *e != '\0' || v > 600000)
			return reply_error(s, c, MHD_HTTP_BAD_REQUEST, "bad slow_ms",
					   "an integer of milliseconds, at most 600000", NULL);
		atomic_store(&s->slow_ms, (unsigned)v);
	}
	set_mode(s, mode);
	return queue_shared(c, MHD_HTTP_OK, s->resp_ok);
}

static void json_add_u64(json_object *o, const char *key, unsigned long long v)
{
	json_object_object_add(o, key, json_object_new_int64(v > INT64_MAX ? INT64_MAX : (int64_t)v));
}

static enum MHD_Result serve_sim_stats(struct sim *s, struct MHD_Connection *c)
{
	json_object *o = json_object_new_object();
	const char *txt;
	enum MHD_Result ret;
	unsigned n_waiting;

	if (o == NULL)
		return MHD_NO;
	pthread_mutex_lock(&s->lock);
	n_waiting = s->n_waiting;
	pthread_mutex_unlock(&s->lock);
	json_object_object_add(o, "nodeId", json_object_new_string(s->opt.node_id));
	json_object_object_add(o, "mode", json_object_new_string(mode_names[atomic_load(&s->mode)]));
	json_add_u64(o, "health_requests", atomic_load(&s->health_requests));
	json_add_u64(o, "reconcile_calls", atomic_load(&s->reconcile_calls));
	json_add_u64(o, "reconcile_unauthorized", atomic_load(&s->reconcile_unauthorized));
	json_object_object_add(o, "last_reconcile_ms",
			       json_object_new_int64(atomic_load(&s->last_reconcile_ms)));
	json_add_u64(o, "slow_ms", atomic_load(&s->slow_ms));
	json_add_u64(o, "waiting_health_requests", n_waiting);
	json_add_u64(o, "ws_sessions", (unsigned)atomic_load(&s->ws_active));
	json_add_u64(o, "port", s->port);
	json_add_u64(o, "pid", (unsigned long long)getpid());
	txt = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
	ret = txt != NULL ? reply_json(s, c, MHD_HTTP_OK, txt) : MHD_NO;
	json_object_put(o);
	return ret;
}

static enum MHD_Result serve_sim_reset(struct sim *s, struct MHD_Connection *c)
{
	atomic_store(&s->health_requests, 0);
	atomic_store(&s->reconcile_calls, 0);
	atomic_store(&s->reconcile_unauthorized, 0);
	atomic_store(&s->last_reconcile_ms, 0);
	return queue_shared(c, MHD_HTTP_OK, s->resp_ok);
}

/* ============================== WebSocket echo ============================== */

/*
 * One session per upgraded socket.  rx holds at most one whole frame plus what follows it;
 * msg assembles a fragmented message; tx holds one outgoing frame.  The socket is MHD's
 * (non-blocking); it is closed only through MHD_upgrade_action(CLOSE).
 */
struct ws_session {
	struct sim *s;
	int fd;
	struct MHD_UpgradeResponseHandle *urh;
	size_t rx_len;
	size_t msg_len;
	int msg_opcode;               /* 0 = no fragmented message in progress */
	unsigned char rx[WS_MSG_MAX + 14];
	unsigned char msg[WS_MSG_MAX];
	unsigned char tx[WS_MSG_MAX + NODE_ID_MAX + 16];
};

enum ws_step { WS_NEED_MORE, WS_CONSUMED, WS_END };

static bool ws_send_all(struct ws_session *ws, const unsigned char *p, size_t len)
{
	int64_t deadline = mono_ms() + WS_SEND_TIMEOUT_MS;

	while (len > 0) {
		ssize_t n = send(ws->fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n > 0) {
			p += n;
			len -= (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			int64_t left = deadline - mono_ms();
			struct pollfd pf[2] = { { .fd = ws->fd, .events = POLLOUT },
						{ .fd = ws->s->wake_pipe[0], .events = POLLIN } };

			if (left <= 0 || poll(pf, 2, (int)left) < 0 || pf[1].revents != 0)
				return false;
			continue;
		}
		return false;
	}
	return true;
}

/* Sends one unmasked frame; prefix (may be NULL) is prepended to the payload. */
static bool ws_send_frame(struct ws_session *ws, int opcode, const char *prefix,
			  const unsigned char *payload, size_t len)
{
	size_t plen = prefix != NULL ? strlen(prefix) : 0, total = plen + len, h;
	unsigned char *t = ws->tx;

	if (total + 10 > sizeof(ws->tx))
		return false;
	t[0] = (unsigned char)(0x80 | opcode);
	if (total < 126) {
		t[1] = (unsigned char)total;
		h = 2;
	} else if (total <= 0xFFFF) {
		t[1] = 126;
		t[2] = (unsigned char)(total >> 8);
		t[3] = (unsigned char)total;
		h = 4;
	} else {
		t[1] = 127;
		for (int i = 0; i < 8; i++)
			t[2 + i] = (unsigned char)((uint64_t)total >> (56 - 8 * i));
		h = 10;
	}
	memcpy(t + h, prefix != NULL ? prefix : "", plen);
	if (len > 0)
		memcpy(t + h + plen, payload, len);
	return ws_send_all(ws, t, h + total);
}

static void ws_send_close(struct ws_session *ws, unsigned code)
{
	unsigned char p[2] = { (unsigned char)(code >> 8), (unsigned char)code };

	ws_send_frame(ws, 0x8, NULL, p, sizeof(p));
}

static bool ws_echo(struct ws_session *ws, int opcode, const unsigned char *p, size_t len)
{
	char prefix[NODE_ID_MAX + 2];

	snprintf(prefix, sizeof(prefix), "%s:", ws->s->opt.node_id);
	return ws_send_frame(ws, opcode, prefix, p, len);
}

/* Parses and answers the first frame in rx, if it is complete. */
static enum ws_step ws_handle_frame(struct ws_session *ws)
{
	unsigned char *b = ws->rx;
	size_t have = ws->rx_len, hdr = 2;
	uint64_t len;
	int fin, opcode;

	if (have < 2)
		return WS_NEED_MORE;
	fin = (b[0] & 0x80) != 0;
	opcode = b[0] & 0x0F;
	if ((b[0] & 0x70) != 0 || (b[1] & 0x80) == 0) {
		/* Reserved bits without an extension, or an unmasked client frame (RFC 6455 5.1). */
		ws_send_close(ws, 1002);
		return WS_END;
	}
	len = b[1] & 0x7F;
	if (len == 126) {
		if (have < 4)
			return WS_NEED_MORE;
		len = (uint64_t)b[2] << 8 | b[3];
		hdr = 4;
	} else if (len == 127) {
		if (have < 10)
			return WS_NEED_MORE;
		len = 0;
		for (int i = 0; i < 8; i++)
			len = len << 8 | b[2 + i];
		hdr = 10;
	}
	if ((opcode & 0x8) != 0 && (!fin || len > 125)) {
		ws_send_close(ws, 1002); /* control frames are short and never fragmented */
		return WS_END;
	}
	if (len > WS_MSG_MAX) {
		ws_send_close(ws, 1009);
		return WS_END;
	}
	hdr += 4;
	if (have < hdr + len)
		return WS_NEED_MORE;

	unsigned char *mask = b + hdr - 4, *payload = b + hdr;
	for (uint64_t i = 0; i < len; i++)
		payload[i] ^= mask[i & 3];

	bool ok = true;
	switch (opcode) {
	case 0x1: /* text */
	case 0x2: /* binary */
		if (ws->msg_opcode != 0) {
			ws_send_close(ws, 1002);
			return WS_END;
		}
		if (fin) {
			ok = ws_echo(ws, opcode, payload, (size_t)len);
		} else {
			memcpy(ws->msg, payload, (size_t)len);
			ws->msg_len = (size_t)len;
			ws->msg_opcode = opcode;
		}
		break;
	case 0x0: /* continuation */
		if (ws->msg_opcode == 0) {
			ws_send_close(ws, 1002);
			return WS_END;
		}
		if (ws->msg_len + len > WS_MSG_MAX) {
			ws_send_close(ws, 1009);
			return WS_END;
		}
		memcpy(ws->msg + ws->msg_len, payload, (size_t)len);
		ws->msg_len += (size_t)len;
		if (fin) {
			ok = ws_echo(ws, ws->msg_opcode, ws->msg, ws->msg_len);
			ws->msg_opcode = 0;
			ws->msg_len = 0;
		}
		break;
	case 0x8: /* close: answer with the same code, then end */
		if (len >= 2)
			ws_send_frame(ws, 0x8, NULL, payload, 2);
		else
			ws_send_frame(ws, 0x8, NULL, NULL, 0);
		return WS_END;
	case 0x9: /* ping */
		ok = ws_send_frame(ws, 0xA, NULL, payload, (size_t)len);
		break;
	case 0xA: /* unsolicited pong: ignore */
		break;
	default:
		ws_send_close(ws, 1002);
		return WS_END;
	}
	if (!ok)
		return WS_END;
	ws->rx_len -= hdr + (size_t)len;
	memmove(ws->rx, ws->rx + hdr + len, ws->rx_len);
	return WS_CONSUMED;
}

static void *ws_main(void *arg)
{
	struct ws_session *ws = arg;
	struct sim *s = ws->s;
	bool running = true;

	while (running) {
		enum ws_step step;

		while ((step = ws_handle_frame(ws)) == WS_CONSUMED)
			;
		if (step == WS_END)
			break;

		struct pollfd pf[2] = { { .fd = ws->fd, .events = POLLIN },
					{ .fd = s->wake_pipe[0], .events = POLLIN } };
		if (poll(pf, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (pf[1].revents != 0) {
			/* Shutting down: say "going away" if the socket takes it right now. */
			unsigned char bye[4] = { 0x88, 2, 1001 >> 8, 1001 & 0xFF };
			(void)send(ws->fd, bye, sizeof(bye), MSG_NOSIGNAL | MSG_DONTWAIT);
			break;
		}
		if (pf[0].revents == 0)
			continue;
		ssize_t n = recv(ws->fd, ws->rx + ws->rx_len, sizeof(ws->rx) - ws->rx_len,
				 MSG_DONTWAIT);
		if (n > 0)
			ws->rx_len += (size_t)n;
		else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
			running = false;
	}
	MHD_upgrade_action(ws->urh, MHD_UPGRADE_ACTION_CLOSE);
	free(ws);
	atomic_fetch_sub(&s->ws_active, 1);
	return NULL;
}

static void on_upgrade(void *cls, struct MHD_Connection *connection, void *con_cls,
		       const char *extra_in, size_t extra_in_size, MHD_socket sock,
		       struct MHD_UpgradeResponseHandle *urh)
{
	struct sim *s = cls;
	struct ws_session *ws = NULL;
	pthread_attr_t attr;
	pthread_t tid;
	bool started = false;

	if (extra_in_size <= sizeof(ws->rx))
		ws = malloc(sizeof(*ws));
	if (ws == NULL) {
		MHD_upgrade_action(urh, MHD_UPGRADE_ACTION_CLOSE);
		return;
	}
	ws->s = s;
	ws->fd = sock;
	ws->urh = urh;
	ws->rx_len = extra_in_size;
	ws->msg_len = 0;
	ws->msg_opcode = 0;
	if (extra_in_size > 0)
		memcpy(ws->rx, extra_in, extra_in_size);

	/* Count first, then look at stopping: either the drain in sim_shutdown sees this session,
	 * or this sees stopping and never starts it. */
	atomic_fetch_add(&s->ws_active, 1);
	if (!atomic_load(&s->stopping) && pthread_attr_init(&attr) == 0) {
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		pthread_attr_setstacksize(&attr, WS_THREAD_STACK);
		started = pthread_create(&tid, &attr, ws_main, ws) == 0;
		pthread_attr_destroy(&attr);
	}
	if (!started) {
		if (!atomic_load(&s->stopping))
			logmsg(s, "cannot start a WebSocket thread");
		atomic_fetch_sub(&s->ws_active, 1);
		MHD_upgrade_action(urh, MHD_UPGRADE_ACTION_CLOSE);
		free(ws);
	}
}

static bool header_has_token(struct MHD_Connection *c, const char *name, const char *token)
{
	const char *v = MHD_lookup_connection_value(c, MHD_HEADER_KIND, name);

	return v != NULL && strcasestr(v, token) != NULL;
}

static enum MHD_Result serve_ws(struct sim *s, struct MHD_Connection *c)
{
	const char *key = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Sec-WebSocket-Key");
	const char *ver = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Sec-WebSocket-Version");
	char buf[24 + sizeof(WS_GUID)], accept[32];
	unsigned char digest[20];
	struct MHD_Response *r;
	enum MHD_Result ret;

	if (!header_has_token(c, MHD_HTTP_HEADER_UPGRADE, "websocket") ||
	    !header_has_token(c, MHD_HTTP_HEADER_CONNECTION, "upgrade"))
		return reply_error(s, c, MHD_HTTP_UPGRADE_REQUIRED, "websocket only",
				   "this path needs Upgrade: websocket", NULL);
	/* The key is base64 of 16 random bytes: exactly 24 characters. */
	if (key == NULL || strlen(key) != 24 || ver == NULL || strcmp(ver, "13") != 0)
		return reply_error(s, c, MHD_HTTP_BAD_REQUEST, "bad websocket handshake",
				   "need Sec-WebSocket-Key (24 chars) and Sec-WebSocket-Version: 13",
				   NULL);
	if (atomic_load(&s->ws_active) >= WS_SESSIONS_MAX || atomic_load(&s->stopping))
		return reply_error(s, c, MHD_HTTP_SERVICE_UNAVAILABLE, "no websocket now",
				   "session limit reached or shutting down", NULL);
	memcpy(buf, key, 24);
	memcpy(buf + 24, WS_GUID, sizeof(WS_GUID) - 1);
	sha1(buf, 24 + sizeof(WS_GUID) - 1, digest);
	base64_encode(digest, sizeof(digest), accept, sizeof(accept));

	r = MHD_create_response_for_upgrade(on_upgrade, s);
	if (r == NULL)
		return MHD_NO;
	if (MHD_add_response_header(r, MHD_HTTP_HEADER_UPGRADE, "websocket") != MHD_YES ||
	    MHD_add_response_header(r, "Sec-WebSocket-Accept", accept) != MHD_YES ||
	    MHD_add_response_header(r, "X-Kuma-Node", s->opt.node_id) != MHD_YES) {
		MHD_destroy_response(r);
		return MHD_NO;
	}
	ret = MHD_queue_response(c, MHD_HTTP_SWITCHING_PROTOCOLS, r);
	MHD_destroy_response(r);
	return ret;
}

/* ============================== request dispatch ============================== */

static enum route route_of(const char *url)
{
	if (strcmp(url, "/api/v1/health") == 0)
		return R_HEALTH;
	if (strcmp(url, "/api/v1/reconcile-monitors") == 0)
		return R_RECONCILE;
	if (strncmp(url, "/_sim/", 6) == 0) {
		const char *op = url + 6;
		if (strcmp(op, "mode") == 0)
			return R_SIM_MODE;
		if (strcmp(op, "stats") == 0)
			return R_SIM_STATS;
		if (strcmp(op, "reset-stats") == 0)
			return R_SIM_RESET;
		if (strcmp(op, "exit") == 0)
			return R_SIM_EXIT;
		return R_SIM_UNKNOWN;
	}
	if (strcmp(url, "/socket.io/ws-echo") == 0)
		return R_WS;
	return R_PAGE;
}

static bool is_get(const char *m) { return strcmp(m, "GET") == 0 || strcmp(m, "HEAD") == 0; }
static bool is_post(const char *m) { return strcmp(m, "POST") == 0; }

static enum MHD_Result dispatch(struct sim *s, struct req *rq, const char *method)
{
	struct MHD_Connection *c = rq->conn;

	switch (rq->route) {
	case R_HEALTH:
		return is_get(method) ? serve_health(s, rq) : reply_method_not_allowed(s, c, "GET, HEAD");
	case R_RECONCILE:
		return is_post(method) ? serve_reconcile(s, c) : reply_method_not_allowed(s, c, "POST");
	case R_SIM_MODE:
		return is_post(method) ? serve_sim_mode(s, rq) : reply_method_not_allowed(s, c, "POST");
	case R_SIM_STATS:
		return is_get(method) ? serve_sim_stats(s, c) : reply_method_not_allowed(s, c, "GET, HEAD");
	case R_SIM_RESET:
		return is_post(method) ? serve_sim_reset(s, c) : reply_method_not_allowed(s, c, "POST");
	case R_SIM_EXIT:
		if (!is_post(method))
			return reply_method_not_allowed(s, c, "POST");
		rq->is_exit = true; /* the exit itself happens once the answer is out */
		return reply_copy(s, c, MHD_HTTP_OK, "application/json; charset=utf-8",
				  "{\"ok\":true}", 11, NULL, true);
	case R_SIM_UNKNOWN:
		return reply_error(s, c, MHD_HTTP_NOT_FOUND, "not found",
				   "control paths: /_sim/mode, /_sim/stats, /_sim/reset-stats, /_sim/exit",
				   NULL);
	case R_WS:
		return strcmp(method, "GET") == 0 ? serve_ws(s, c) : reply_method_not_allowed(s, c, "GET");
	case R_PAGE:
		return queue_shared(c, MHD_HTTP_OK, s->resp_page);
	}
	return MHD_NO;
}

/*
 * The first call only sets up the request; the answer is queued on a later call (after the
 * body, or on the second call for a GET), because queuing on the first call makes MHD close the
 * connection after every answer (see NOTES.md).
 */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *connection, const char *url,
				  const char *method, const char *version, const char *upload_data,
				  size_t *upload_data_size, void **con_cls)
{
	struct sim *s = cls;
	struct req *rq = *con_cls;

	if (rq == NULL) {
		rq = calloc(1, sizeof(*rq));
		if (rq == NULL)
			return MHD_NO;
		rq->route = route_of(url);
		rq->conn = connection;
		rq->arrival_ms = mono_ms();
		rq->fd = -1;
		atomic_init(&rq->state, RQ_ACTIVE);
		*con_cls = rq;
		if (rq->route == R_HEALTH && is_get(method))
			atomic_fetch_add(&s->health_requests, 1);
		return MHD_YES;
	}
	if (*upload_data_size > 0) {
		/* Only the mode body matters; other bodies (e.g. reconcile's) are read and dropped. */
		if (rq->route == R_SIM_MODE) {
			if (rq->body_len + *upload_data_size > MODE_BODY_MAX) {
				rq->body_too_big = true;
			} else {
				memcpy(rq->body + rq->body_len, upload_data, *upload_data_size);
				rq->body_len += *upload_data_size;
			}
		}
		*upload_data_size = 0;
		return MHD_YES;
	}
	return dispatch(s, rq, method);
}

static void on_completed(void *cls, struct MHD_Connection *connection, void **con_cls,
			 enum MHD_RequestTerminationCode toe)
{
	struct sim *s = cls;
	struct req *rq = *con_cls;

	if (rq == NULL)
		return;
	/* A resumed request can end here without re-entering the handler (client went away). */
	if (atomic_exchange(&rq->state, RQ_ACTIVE) != RQ_ACTIVE)
		atomic_fetch_sub(&s->outstanding, 1);
	if (rq->is_exit)
		kill(getpid(), SIGTERM); /* picked up by the main thread's sigwait */
	free(rq);
	*con_cls = NULL;
}

/* ============================== start-up ============================== */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: kumasim --listen HOST:PORT --node-id ID [options]\n"
		"  --listen HOST:PORT   address to serve (PORT 0 picks a free port; [::1]:PORT for IPv6)\n"
		"  --node-id ID         node id, 1-50 chars of [A-Za-z0-9._-]\n"
		"  --api-key KEY        key required in Authorization by /api/v1/reconcile-monitors\n"
		"                       (raw or \"Bearer KEY\"); without it the endpoint accepts anyone\n"
		"  --pidfile FILE       write the pid once listening, removed on clean exit\n"
		"  --mode MODE          healthy|fail|503|hang|slow (default healthy)\n"
		"  --slow-ms N          delay of a health answer in slow mode (default 1000)\n"
		"  --threads N          MHD worker threads (default 2)\n"
		"  --verbose            log mode changes and MHD errors to stderr\n"
		"Prints \"kumasim ID listening on HOST:PORT\" once it accepts connections.\n"
		"Signals: USR1 -> mode 503, USR2 -> healthy, TERM/INT/HUP -> clean exit (code 0).\n"
		"Test control: POST /_sim/mode (body: mode; ?slow_ms=N), GET /_sim/stats,\n"
		"POST /_sim/reset-stats, POST /_sim/exit.\n");
}

static bool parse_uint(const char *txt, unsigned long max, unsigned long *out)
{
	char *end;
	unsigned long v;

	if (txt == NULL || *txt == '\0' || *txt == '-')
		return false;
	errno = 0;
	v = strtoul(txt, &end, 10);
	if (errno != 0 || *end != '\0' || v > max)
		return false;
	*out = v;
	return true;
}

static bool parse_listen(const char *spec, struct sim_opts *o)
{
	char host[256];
	const char *colon = strrchr(spec, ':');
	size_t hlen;
	unsigned long port;
	struct addrinfo hints, *res = NULL;

	if (colon == NULL || !parse_uint(colon + 1, 65535, &port))
		return false;
	hlen = (size_t)(colon - spec);
	if (hlen >= 2 && spec[0] == '[' && spec[hlen - 1] == ']') {
		spec++;
		hlen -= 2;
	}
	if (hlen == 0 || hlen >= sizeof(host))
		return false;
	memcpy(host, spec, hlen);
	host[hlen] = '\0';
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE;
	if (getaddrinfo(host, NULL, &hints, &res) != 0 || res == NULL)
		return false;
	if (res->ai_addrlen > sizeof(o->addr)) {
		freeaddrinfo(res);
		return false;
	}
	memcpy(&o->addr, res->ai_addr, res->ai_addrlen);
	o->addr_len = res->ai_addrlen;
	freeaddrinfo(res);
	if (o->addr.ss_family == AF_INET)
		((struct sockaddr_in *)&o->addr)->sin_port = htons((uint16_t)port);
	else if (o->addr.ss_family == AF_INET6)
		((struct sockaddr_in6 *)&o->addr)->sin6_port = htons((uint16_t)port);
	else
		return false;
	return true;
}

/* Returns 0 on success, 1 for --help, -1 on a bad argument (message already printed). */
static int parse_args(int argc, char **argv, struct sim_opts *o)
{
	static const struct option longopts[] = {
		{ "listen", required_argument, NULL, 'l' },
		{ "node-id", required_argument, NULL, 'n' },
		{ "api-key", required_argument, NULL, 'k' },
		{ "pidfile", required_argument, NULL, 'p' },
		{ "mode", required_argument, NULL, 'm' },
		{ "slow-ms", required_argument, NULL, 's' },
		{ "threads", required_argument, NULL, 't' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	bool have_listen = false, have_id = false;
	unsigned long v;
	int c;

	o->mode = MODE_HEALTHY;
	o->slow_ms = 1000;
	o->threads = 2;
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 'l':
			if (!parse_listen(optarg, o)) {
				fprintf(stderr, "kumasim: --listen: expected HOST:PORT, got '%s'\n", optarg);
				return -1;
			}
			have_listen = true;
			break;
		case 'n':
			if (!node_id_valid(optarg)) {
				fprintf(stderr, "kumasim: --node-id: expected 1-50 chars of [A-Za-z0-9._-], got '%s'\n",
					optarg);
				return -1;
			}
			snprintf(o->node_id, sizeof(o->node_id), "%s", optarg);
			have_id = true;
			break;
		case 'k':
			if (optarg[0] == '\0' || strpbrk(optarg, "\r\n") != NULL) {
				fprintf(stderr, "kumasim: --api-key: expected a non-empty single-line key\n");
				return -1;
			}
			o->api_key = optarg;
			break;
		case 'p':
			o->pidfile = optarg;
			break;
		case 'm':
			o->mode = mode_from_name(optarg, strlen(optarg));
			if (o->mode < 0) {
				fprintf(stderr, "kumasim: --mode: expected healthy|fail|503|hang|slow, got '%s'\n",
					optarg);
				return -1;
			}
			break;
		case 's':
			if (!parse_uint(optarg, 600000, &v)) {
				fprintf(stderr, "kumasim: --slow-ms: expected 0..600000, got '%s'\n", optarg);
				return -1;
			}
			o->slow_ms = (unsigned)v;
			break;
		case 't':
			if (!parse_uint(optarg, 64, &v) || v == 0) {
				fprintf(stderr, "kumasim: --threads: expected 1..64, got '%s'\n", optarg);
				return -1;
			}
			o->threads = (unsigned)v;
			break;
		case 'v':
			o->verbose = true;
			break;
		case 'h':
			usage(stdout);
			return 1;
		default:
			usage(stderr);
			return -1;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "kumasim: unexpected argument '%s'\n", argv[optind]);
		return -1;
	}
	if (!have_listen || !have_id) {
		fprintf(stderr, "kumasim: --listen and --node-id are required\n");
		usage(stderr);
		return -1;
	}
	return 0;
}

/* Written to a temporary name and renamed, so a reader never sees a half-written pid. */
static bool write_pidfile(const char *path)
{
	char tmp[PATH_MAX];
	FILE *f;
	int n = snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid());
	bool ok;

	if (n < 0 || (size_t)n >= sizeof(tmp))
		return false;
	f = fopen(tmp, "w");
	if (f == NULL)
		return false;
	ok = fprintf(f, "%ld\n", (long)getpid()) > 0;
	ok = (fclose(f) == 0) && ok;
	if (ok)
		ok = rename(tmp, path) == 0;
	if (!ok)
		unlink(tmp);
	return ok;
}

static void format_addr(const struct sim *s, char *out, size_t out_size)
{
	char ip[INET6_ADDRSTRLEN] = "?";

	if (s->opt.addr.ss_family == AF_INET6) {
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)&s->opt.addr)->sin6_addr, ip,
			  sizeof(ip));
		snprintf(out, out_size, "[%s]:%u", ip, (unsigned)s->port);
	} else {
		inet_ntop(AF_INET, &((const struct sockaddr_in *)&s->opt.addr)->sin_addr, ip,
			  sizeof(ip));
		snprintf(out, out_size, "%s:%u", ip, (unsigned)s->port);
	}
}

static bool sim_init(struct sim *s)
{
	pthread_condattr_t ca;
	bool cond_ok;

	s->start_ms = mono_ms();
	atomic_init(&s->mode, s->opt.mode);
	atomic_init(&s->slow_ms, s->opt.slow_ms);
	s->wake_pipe[0] = s->wake_pipe[1] = -1;
	if (pthread_mutex_init(&s->lock, NULL) != 0)
		return false;
	if (pthread_condattr_init(&ca) != 0)
		return false;
	cond_ok = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) == 0 &&
		  pthread_cond_init(&s->sched_cond, &ca) == 0;
	pthread_condattr_destroy(&ca);
	if (!cond_ok)
		return false;
	if (pipe2(s->wake_pipe, O_CLOEXEC | O_NONBLOCK) != 0)
		return false;
	if (!build_shared_responses(s))
		return false;
	if (pthread_create(&s->sched_thread, NULL, sched_main, s) != 0)
		return false;
	s->sched_running = true;
	return true;
}

static bool sim_start_daemon(struct sim *s)
{
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ITC |
			 MHD_ALLOW_SUSPEND_RESUME | MHD_ALLOW_UPGRADE;
	const union MHD_DaemonInfo *info;

	if (s->opt.addr.ss_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	if (s->opt.verbose)
		flags |= MHD_USE_ERROR_LOG;
	s->daemon = MHD_start_daemon(flags, 0, NULL, NULL, on_request, s,
				     MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&s->opt.addr,
				     MHD_OPTION_THREAD_POOL_SIZE, s->opt.threads,
				     MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
				     MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)120,
				     MHD_OPTION_END);
	if (s->daemon == NULL)
		return false;
	info = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
	if (info == NULL || info->port == 0)
		return false;
	s->port = info->port;
	return true;
}

/*
 * Order matters: stop accepting, release every parked health request and wait until MHD has
 * taken them back (MHD forbids stopping with suspended connections), end the WebSockets (each
 * closes its socket through MHD, which must still be running), then stop MHD.
 */
static void sim_shutdown(struct sim *s)
{
	int64_t give_up = mono_ms() + SHUTDOWN_DRAIN_MS;

	/* No MHD_quiesce_daemon(): with MHD_USE_EPOLL, 0.9.75 can race its own polling thread
	 * there and abort ("Failed to remove listen FD from epoll set", seen under load).
	 * MHD_stop_daemon() closes the listening socket itself. */
	pthread_mutex_lock(&s->lock);
	atomic_store(&s->stopping, true);
	release_all_locked(s, WAKE_SHUTDOWN);
	pthread_mutex_unlock(&s->lock);
	if (s->wake_pipe[1] >= 0)
		(void)write(s->wake_pipe[1], "x", 1);
	while ((atomic_load(&s->outstanding) > 0 || atomic_load(&s->ws_active) > 0) &&
	       mono_ms() < give_up) {
		struct timespec ts = { 0, 5 * 1000000L };
		nanosleep(&ts, NULL);
	}
	if (atomic_load(&s->outstanding) > 0 || atomic_load(&s->ws_active) > 0)
		fprintf(stderr, "kumasim: %d requests and %d websockets still open at exit\n",
			atomic_load(&s->outstanding), atomic_load(&s->ws_active));
	if (s->sched_running) {
		pthread_mutex_lock(&s->lock);
		s->sched_stop = true;
		pthread_cond_signal(&s->sched_cond);
		pthread_mutex_unlock(&s->lock);
		pthread_join(s->sched_thread, NULL);
		s->sched_running = false;
	}
	if (s->daemon != NULL)
		MHD_stop_daemon(s->daemon);
	s->daemon = NULL;
	destroy_shared_responses(s);
	for (int i = 0; i < 2; i++)
		if (s->wake_pipe[i] >= 0)
			close(s->wake_pipe[i]);
	pthread_cond_destroy(&s->sched_cond);
	pthread_mutex_destroy(&s->lock);
	if (s->opt.pidfile != NULL)
		unlink(s->opt.pidfile);
}

/* Runs on the main thread only; every other thread blocks these signals. */
static void wait_for_exit(struct sim *s, const sigset_t *set)
{
	for (;;) {
		int sig;

		if (sigwait(set, &sig) != 0)
			continue;
		if (sig == SIGUSR1)
			set_mode(s, MODE_503);
		else if (sig == SIGUSR2)
			set_mode(s, MODE_HEALTHY);
		else
			return;
	}
}

int main(int argc, char **argv)
{
	static struct sim sim; /* large and process-wide; static keeps it off the stack */
	struct sim *s = &sim;
	sigset_t set;
	char where[INET6_ADDRSTRLEN + 16];
	int rc;

	rc = parse_args(argc, argv, &s->opt);
	if (rc != 0)
		return rc > 0 ? 0 : 2;

	/* Block before any thread exists so only sigwait() in this thread sees them. */
	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	sigaddset(&set, SIGUSR2);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);

	if (!sim_init(s)) {
		fprintf(stderr, "kumasim: initialisation failed: %s\n", strerror(errno));
		sim_shutdown(s);
		return 1;
	}
	if (!sim_start_daemon(s)) {
		fprintf(stderr, "kumasim: cannot listen: %s\n", strerror(errno));
		sim_shutdown(s);
		return 1;
	}
	if (s->opt.pidfile != NULL && !write_pidfile(s->opt.pidfile)) {
		fprintf(stderr, "kumasim: cannot write pidfile %s: %s\n", s->opt.pidfile,
			strerror(errno));
		s->opt.pidfile = NULL;
		sim_shutdown(s);
		return 1;
	}
	format_addr(s, where, sizeof(where));
	printf("kumasim %s listening on %s\n", s->opt.node_id, where);
	fflush(stdout);
	logmsg(s, "mode %s, slow %u ms, reconcile %s", mode_names[atomic_load(&s->mode)],
	       atomic_load(&s->slow_ms), s->opt.api_key != NULL ? "needs a key" : "open");

	wait_for_exit(s, &set);
	sim_shutdown(s);
	return 0;
}
