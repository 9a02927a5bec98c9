/*
 * http.c — kumasim's HTTP surface as kumaguard, nginx and browsers see it.
 *
 * Owns: the listening sockets (one per simulated node) and the thread that accepts on them and
 * hands connections to one MHD daemon; request routing; GET /api/v1/health in five
 * behaviours with the node's database check; POST /api/v1/reconcile-monitors up to the
 * point where the engine takes over (rate limit, Authorization header); the per-client rate
 * limit on /api/v1/...; the page every other path gets (with an X-Kuma-Node header on every
 * answer, so proxy tests see which node answered); parked requests.
 *
 * Must not: block an MHD thread.  Slow and hanging health answers, database checks and
 * reconcile runs park the request (MHD suspend); a scheduler thread releases timed ones, the
 * work releases the others.  Must not touch the database itself: that is db.c's workers.
 *
 * Why one daemon for many nodes: with --nodes 1000 a daemon (and its threads) per node would
 * cost a thousand threads; instead each node has only a listening socket, connections are
 * added to the shared daemon with MHD_add_connection, and the node is found from the local
 * port when the connection starts (MHD_OPTION_NOTIFY_CONNECTION).
 */
#include "sim.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define PEER_POLL_MS 200          /* how often hung connections are checked for a client close */
#define SHUTDOWN_DRAIN_MS 3000    /* bound on waiting for parked requests and WebSockets */
#define KEEPALIVE_IDLE_S 5        /* Node.js' default keepAliveTimeout, which Kuma keeps */
#define LISTEN_BACKLOG 128
/* MHD's memory per connection (its default is 32 KB): 16 KB holds any request a test or a
 * browser behind nginx sends, and keeps 1,000 probed nodes at about 18 KB of RSS each. */
#define CONN_MEMORY_LIMIT (16 * 1024)


const char *const mode_names[MODE_COUNT] = { "healthy", "fail", "503", "hang", "slow",
					      "partition" };

int mode_from_name(const char *name, size_t len)
{
	for (int m = 0; m < MODE_COUNT; m++)
		if (strlen(mode_names[m]) == len && strncasecmp(mode_names[m], name, len) == 0)
			return m;
	return -1;
}

/* ============================== responses ============================== */

static struct MHD_Response *new_response(const struct node *n, const void *body, size_t len,
					 enum MHD_ResponseMemoryMode mem, const char *ctype)
{
	struct MHD_Response *r = MHD_create_response_from_buffer(len, (void *)body, mem);

	if (r == NULL)
		return NULL;
	if (MHD_add_response_header(r, "X-Kuma-Node", n->id) != MHD_YES ||
	    (ctype != NULL &&
	     MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype) != MHD_YES)) {
		MHD_destroy_response(r);
		return NULL;
	}
	return r;
}

enum MHD_Result reply_copy(const struct node *n, struct MHD_Connection *c, unsigned status,
			   const char *ctype, const char *body, size_t len, const char *allow,
			   bool close_after)
{
	struct MHD_Response *r = new_response(n, body, len, MHD_RESPMEM_MUST_COPY, ctype);
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

enum MHD_Result reply_json(const struct node *n, struct MHD_Connection *c, unsigned status,
			   const char *body)
{
	return reply_copy(n, c, status, "application/json; charset=utf-8", body, strlen(body),
			  NULL, false);
}

/* error and detail are fixed ASCII strings from this program: no escaping needed. */
enum MHD_Result reply_error(const struct node *n, struct MHD_Connection *c, unsigned status,
			    const char *error, const char *detail, const char *allow)
{
	char buf[320];
	int len = snprintf(buf, sizeof(buf), "{\"error\":\"%s\",\"detail\":\"%s\"}", error, detail);

	if (len < 0 || (size_t)len >= sizeof(buf))
		return MHD_NO;
	return reply_copy(n, c, status, "application/json; charset=utf-8", buf, (size_t)len,
			  allow, false);
}

enum MHD_Result reply_method_not_allowed(const struct node *n, struct MHD_Connection *c,
					 const char *allow)
{
	return reply_error(n, c, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed",
			   "see the Allow header", allow);
}

/* The answer prepared by work a request was parked for. */
enum MHD_Result reply_answer(struct req *rq)
{
	if (rq->answer_status == 0)
		return MHD_NO; /* dropped, as a process that went away would */
	return reply_json(rq->node, rq->conn, rq->answer_status, rq->answer);
}

bool build_node_responses(struct sim *s, struct node *n)
{
	static const char ok[] = "{\"ok\":true}";
	int len = snprintf(n->page_body, sizeof(n->page_body),
			   "<!doctype html>\n<html><head><title>kumasim %s</title></head>"
			   "<body><h1>kumasim %s</h1></body></html>\n",
			   n->id, n->id);

	(void)s;
	if (len < 0 || (size_t)len >= sizeof(n->page_body))
		return false;
	n->resp_page = new_response(n, n->page_body, (size_t)len, MHD_RESPMEM_PERSISTENT,
				    "text/html; charset=utf-8");
	n->resp_ok = new_response(n, ok, sizeof(ok) - 1, MHD_RESPMEM_PERSISTENT,
				  "application/json; charset=utf-8");
	return n->resp_page != NULL && n->resp_ok != NULL;
}

static void destroy_node_responses(struct node *n)
{
	if (n->resp_page != NULL)
		MHD_destroy_response(n->resp_page);
	if (n->resp_ok != NULL)
		MHD_destroy_response(n->resp_ok);
	n->resp_page = n->resp_ok = NULL;
}

/* ============================== parked requests ============================== */

void req_put(struct req *rq)
{
	if (atomic_fetch_sub(&rq->refs, 1) == 1)
		free(rq);
}

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

/* Takes the request off the waiting list and adds it to *resume; resume_released hands it
 * back to MHD once sim.lock is dropped.  MHD_resume_connection must never run under sim.lock:
 * it takes a lock of MHD's that an MHD thread can hold while it waits for sim.lock (a
 * deadlock seen with 1,000 nodes answering a burst of reconcile calls: every node stopped
 * answering until the process was killed). */
static void release_locked(struct sim *s, struct req *rq, int reason, struct req **resume)
{
	waiting_unlink_locked(s, rq);
	rq->wake_reason = reason;
	atomic_store(&rq->state, RQ_RESUMING);
	rq->next = *resume;
	*resume = rq;
}

/* Called without sim.lock.  After MHD_resume_connection a request belongs to MHD's thread
 * again, so nothing here touches it afterwards. */
static void resume_released(struct req *list)
{
	while (list != NULL) {
		struct req *nx = list->next;
		struct MHD_Connection *conn = list->conn;

		list->next = NULL;
		MHD_resume_connection(conn);
		list = nx;
	}
}

static void release_all_locked(struct sim *s, struct node *only, int reason,
			       struct req **resume)
{
	struct req *rq = s->waiting, *nx;

	for (; rq != NULL; rq = nx) {
		nx = rq->next;
		if (only == NULL || (rq->node == only && rq->wait_kind == WAIT_TIMER))
			release_locked(s, rq, reason, resume);
	}
}

/* Called by an MHD thread with sim.lock held. */
static void suspend_locked(struct sim *s, struct req *rq, int kind, int64_t deadline_ms)
{
	const union MHD_ConnectionInfo *ci =
		MHD_get_connection_info(rq->conn, MHD_CONNECTION_INFO_CONNECTION_FD);

	rq->fd = ci != NULL ? ci->connect_fd : -1;
	rq->wait_kind = kind;
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
	if (kind == WAIT_TIMER)
		pthread_cond_signal(&s->sched_cond);
}

void req_park_for_work(struct sim *s, struct req *rq)
{
	atomic_fetch_add(&rq->refs, 1); /* the work's reference */
	pthread_mutex_lock(&s->lock);
	suspend_locked(s, rq, WAIT_WORK, 0);
	pthread_mutex_unlock(&s->lock);
}

void req_wake(struct sim *s, struct req *rq)
{
	struct req *resume = NULL;

	pthread_mutex_lock(&s->lock);
	if (atomic_load(&rq->state) == RQ_SUSPENDED)
		release_locked(s, rq, WAKE_DONE, &resume);
	pthread_mutex_unlock(&s->lock);
	resume_released(resume);
	req_put(rq);
}

void req_answer(struct sim *s, struct req *rq, unsigned status, const char *body)
{
	rq->answer_status = status;
	snprintf(rq->answer, sizeof(rq->answer), "%s", body != NULL ? body : "");
	req_wake(s, rq);
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
		struct req *rq = s->waiting, *nx, *resume = NULL;

		for (; rq != NULL; rq = nx) {
			nx = rq->next;
			if (rq->wait_kind != WAIT_TIMER)
				continue;
			if (rq->deadline_ms != 0) {
				if (now >= rq->deadline_ms)
					release_locked(s, rq, WAKE_DEADLINE, &resume);
				else if (rq->deadline_ms < next)
					next = rq->deadline_ms;
			} else if (peer_gone(rq->fd)) {
				release_locked(s, rq, WAKE_PEER_GONE, &resume);
			} else if (now + PEER_POLL_MS < next) {
				next = now + PEER_POLL_MS;
			}
		}
		if (resume != NULL) {
			pthread_mutex_unlock(&s->lock);
			resume_released(resume);
			pthread_mutex_lock(&s->lock);
			continue; /* the list may have changed meanwhile: look again */
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
 * gone; every request of that node parked on a timer is released to decide again. */
void set_mode(struct sim *s, struct node *n, int mode)
{
	struct req *resume = NULL;

	pthread_mutex_lock(&s->lock);
	if (atomic_exchange(&n->mode, mode) != mode)
		release_all_locked(s, n, WAKE_MODE_CHANGED, &resume);
	pthread_mutex_unlock(&s->lock);
	resume_released(resume);
	logmsg(s, "%s: mode %s", n->id, mode_names[mode]);
}

/* ============================== /api/v1/health ============================== */

/* Database error texts go into JSON: keep them to printable ASCII without quotes. */
void json_safe(char *dst, size_t size, const char *src)
{
	size_t i = 0;

	for (; src != NULL && *src != '\0' && i + 1 < size; src++) {
		unsigned char ch = (unsigned char)*src;
		dst[i++] = (ch < 0x20 || ch >= 0x7f || ch == '"' || ch == '\\') ? ' ' : (char)ch;
	}
	dst[i] = '\0';
}

enum health_kind { H_HEALTHY, H_FAIL_MODE, H_503_MODE, H_DB_DOWN };

static enum MHD_Result reply_health(struct node *n, struct MHD_Connection *c, int kind,
				    const char *db_error)
{
	char buf[640], err[200];
	long long uptime = (long long)((real_ms() - atomic_load(&n->start_real_ms)) / 1000);
	unsigned status = MHD_HTTP_OK;
	int len;

	if (kind == H_HEALTHY) {
		len = snprintf(buf, sizeof(buf),
			       "{\"ok\":true,\"status\":\"healthy\",\"nodeId\":\"%s\",\"uptime\":%lld,"
			       "\"checks\":{\"database\":{\"status\":\"healthy\"},"
			       "\"server\":{\"status\":\"healthy\"}}}",
			       n->id, uptime);
	} else {
		if (kind == H_DB_DOWN)
			json_safe(err, sizeof(err), db_error);
		else
			snprintf(err, sizeof(err), "%s",
				 kind == H_503_MODE ? "simulated: database connection lost"
						    : "simulated: database check failed");
		len = snprintf(buf, sizeof(buf),
			       "{\"ok\":false,\"status\":\"unhealthy\",\"nodeId\":\"%s\",\"uptime\":%lld,"
			       "\"checks\":{\"database\":{\"status\":\"unhealthy\",\"error\":\"%s\"},"
			       "\"server\":{\"status\":\"healthy\"}}}",
			       n->id, uptime, err);
		if (kind != H_FAIL_MODE)
			status = MHD_HTTP_SERVICE_UNAVAILABLE;
	}
	if (len < 0 || (size_t)len >= sizeof(buf))
		return MHD_NO;
	return reply_copy(n, c, status, "application/json; charset=utf-8", buf, (size_t)len, NULL,
			  false);
}

struct ping_job {
	struct db_job job;
	struct sim *s;
	struct req *rq;
};

static void ping_done(struct db_job *j, bool ok, const char *err)
{
	struct ping_job *pj = (struct ping_job *)j;
	struct sim *s = pj->s;
	struct req *rq = pj->rq;

	rq->db_ok = ok;
	snprintf(rq->answer, sizeof(rq->answer), "%s", ok ? "" : (err ? err : "database unreachable"));
	if (s->opt.health_cache_ms > 0) {
		pthread_mutex_lock(&s->health_lock);
		s->health_checked_ms = mono_ms();
		s->health_ok = ok;
		/* Cut to the cache's size on purpose: it only goes into a health answer. */
		memcpy(s->health_err, rq->answer, sizeof(s->health_err) - 1);
		s->health_err[sizeof(s->health_err) - 1] = '\0';
		pthread_mutex_unlock(&s->health_lock);
	}
	free(pj);
	req_wake(s, rq);
}

/* The healthy path of a health answer: the node runs SELECT 1 on its database first.  Returns
 * true when rq was parked for the check (answered later), false when *ret holds the answer. */
static bool health_db_check(struct sim *s, struct req *rq, enum MHD_Result *ret)
{
	struct ping_job *pj;

	if (s->opt.instant || s->health_pool == NULL) {
		*ret = reply_health(rq->node, rq->conn, H_HEALTHY, NULL);
		return false;
	}
	if (s->opt.health_cache_ms > 0) {
		bool fresh, ok = false;
		char err[sizeof(s->health_err)];

		pthread_mutex_lock(&s->health_lock);
		fresh = s->health_checked_ms != 0 &&
			mono_ms() - s->health_checked_ms < s->opt.health_cache_ms;
		if (fresh) {
			ok = s->health_ok;
			memcpy(err, s->health_err, sizeof(err));
		}
		pthread_mutex_unlock(&s->health_lock);
		if (fresh) {
			if (!ok)
				atomic_fetch_add(&rq->node->health_db_failures, 1);
			*ret = reply_health(rq->node, rq->conn, ok ? H_HEALTHY : H_DB_DOWN, err);
			return false;
		}
	}
	pj = calloc(1, sizeof(*pj));
	if (pj == NULL) {
		*ret = MHD_NO;
		return false;
	}
	pj->job.ping_done = ping_done;
	pj->s = s;
	pj->rq = rq;
	req_park_for_work(s, rq);
	db_pool_submit(s->health_pool, &pj->job);
	*ret = MHD_YES;
	return true;
}

static enum MHD_Result serve_health(struct sim *s, struct req *rq)
{
	struct node *n = rq->node;
	enum MHD_Result ret;

	if (atomic_load(&rq->state) != RQ_ACTIVE) {
		/* Back from parking. */
		atomic_store(&rq->state, RQ_ACTIVE);
		atomic_fetch_sub(&s->outstanding, 1);
		if (rq->wake_reason == WAKE_SHUTDOWN || rq->wake_reason == WAKE_PEER_GONE ||
		    atomic_load(&s->stopping))
			return MHD_NO; /* drop the connection, as a dying process would */
		if (rq->wake_reason == WAKE_DONE) {
			if (!rq->db_ok)
				atomic_fetch_add(&n->health_db_failures, 1);
			return reply_health(n, rq->conn, rq->db_ok ? H_HEALTHY : H_DB_DOWN,
					    rq->answer);
		}
	}
	for (;;) {
		int mode = atomic_load(&n->mode);
		int64_t deadline = 0;

		if (mode == MODE_SLOW) {
			deadline = rq->arrival_ms + (int64_t)atomic_load(&n->slow_ms);
			if (mono_ms() >= deadline)
				mode = MODE_HEALTHY; /* waited long enough: answer as a healthy node */
		}
		if (mode == MODE_HEALTHY) {
			health_db_check(s, rq, &ret);
			return ret;
		}
		if (mode == MODE_FAIL || mode == MODE_503)
			return reply_health(n, rq->conn, mode == MODE_503 ? H_503_MODE : H_FAIL_MODE,
					    NULL);
		if (mode == MODE_PARTITION)
			return MHD_NO; /* became partitioned after dispatch looked: never answered */
		pthread_mutex_lock(&s->lock);
		if (atomic_load(&s->stopping)) {
			pthread_mutex_unlock(&s->lock);
			return MHD_NO;
		}
		if (atomic_load(&n->mode) != mode) {
			pthread_mutex_unlock(&s->lock);
			continue; /* changed under us: decide again */
		}
		suspend_locked(s, rq, WAIT_TIMER, deadline);
		pthread_mutex_unlock(&s->lock);
		return MHD_YES;
	}
}

/* ============================== /api/v1/... rate limit ============================== */

/* What express-rate-limit answers over the limit (its default message, as text). */
static enum MHD_Result reply_rate_limited(struct node *n, struct MHD_Connection *c,
					  int64_t reset_in_ms)
{
	static const char msg[] = "Too many requests, please try again later.";
	struct MHD_Response *r = new_response(n, msg, sizeof(msg) - 1, MHD_RESPMEM_PERSISTENT,
					      "text/html; charset=utf-8");
	char retry[24], limit[24];
	enum MHD_Result ret;

	if (r == NULL)
		return MHD_NO;
	snprintf(retry, sizeof(retry), "%lld", (long long)((reset_in_ms + 999) / 1000));
	snprintf(limit, sizeof(limit), "%u", n->rl.limit);
	if (MHD_add_response_header(r, "Retry-After", retry) != MHD_YES ||
	    MHD_add_response_header(r, "X-RateLimit-Limit", limit) != MHD_YES ||
	    MHD_add_response_header(r, "X-RateLimit-Remaining", "0") != MHD_YES) {
		MHD_destroy_response(r);
		return MHD_NO;
	}
	ret = MHD_queue_response(c, MHD_HTTP_TOO_MANY_REQUESTS, r);
	MHD_destroy_response(r);
	return ret;
}

/* The client's address as the rate limit keys it (nginx's address, behind nginx). */
static size_t client_key(struct MHD_Connection *c, unsigned char key[16])
{
	const union MHD_ConnectionInfo *ci =
		MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	const struct sockaddr *sa = ci != NULL ? ci->client_addr : NULL;

	if (sa != NULL && sa->sa_family == AF_INET) {
		memcpy(key, &((const struct sockaddr_in *)sa)->sin_addr, 4);
		return 4;
	}
	if (sa != NULL && sa->sa_family == AF_INET6) {
		memcpy(key, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
		return 16;
	}
	return 0;
}

/* Everything a /api/v1/... request (not health) does on arrival: the rate limit counts it, and
 * a reconcile POST is counted against runs in progress and calls in flight. */
static void on_api_arrival(struct sim *s, struct req *rq, bool reconcile_post)
{
	struct node *n = rq->node;
	struct rl_verdict v;
	unsigned char key[16];
	size_t klen = client_key(rq->conn, key);

	pthread_mutex_lock(&s->model_lock);
	v = rl_hit(&n->rl, key, klen, rq->arrival_real_ms);
	rq->rate_limited = !v.allowed;
	rq->rate_reset_in_ms = v.reset_in_ms;
	if (reconcile_post) {
		if (n->proc.active_runs > 0)
			atomic_fetch_add(&n->calls_while_running, 1);
		if (n->proc.active_cron_runs > 0)
			atomic_fetch_add(&n->calls_during_cron, 1);
	}
	pthread_mutex_unlock(&s->model_lock);
	if (reconcile_post) {
		int now = atomic_fetch_add(&n->calls_in_flight, 1) + 1;
		int max = atomic_load(&n->max_calls_in_flight);
		while (now > max && !atomic_compare_exchange_weak(&n->max_calls_in_flight, &max, now))
			;
		rq->in_flight = true;
	}
}

/* ============================== reconcile ============================== */

/* Compare without an early exit, so the key cannot be guessed byte by byte from timing. */
static bool secret_equal(const char *given, const char *secret)
{
	size_t gl = strlen(given), sl = strlen(secret);
	unsigned char diff = (unsigned char)(gl != sl);

	for (size_t i = 0; i < sl; i++)
		diff |= (unsigned char)(secret[i] ^ given[i < gl ? i : 0]);
	return diff == 0 && gl == sl;
}

/* --instant: the old, kinder node: a configured key is compared (raw or Bearer), the answer
 * is immediate and nothing is started or stopped. */
static enum MHD_Result serve_reconcile_instant(struct sim *s, struct req *rq)
{
	static const char unauth[] =
		"{\"ok\":false,\"error\":\"unauthorized\",\"detail\":\"missing or wrong Authorization header\"}";
	struct node *n = rq->node;
	const char *h = MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND,
						    MHD_HTTP_HEADER_AUTHORIZATION);
	bool ok = s->opt.api_key == NULL;

	if (!ok && h != NULL) {
		ok = secret_equal(h, s->opt.api_key);
		if (!ok && strncasecmp(h, "Bearer ", 7) == 0) {
			h += 7;
			while (*h == ' ')
				h++;
			ok = secret_equal(h, s->opt.api_key);
		}
	}
	if (!ok) {
		atomic_fetch_add(&n->reconcile_unauthorized, 1);
		return reply_json(n, rq->conn, MHD_HTTP_UNAUTHORIZED, unauth);
	}
	atomic_store(&n->last_reconcile_ms, rq->arrival_real_ms);
	atomic_fetch_add(&n->reconcile_calls, 1);
	return MHD_queue_response(rq->conn, MHD_HTTP_OK, n->resp_ok);
}

static enum MHD_Result serve_reconcile(struct sim *s, struct req *rq)
{
	struct node *n = rq->node;
	const char *h;

	if (atomic_load(&rq->state) != RQ_ACTIVE) {
		atomic_store(&rq->state, RQ_ACTIVE);
		atomic_fetch_sub(&s->outstanding, 1);
		if (rq->wake_reason != WAKE_DONE)
			return MHD_NO;
		return reply_answer(rq);
	}
	if (s->opt.instant)
		return serve_reconcile_instant(s, rq);
	/* Any Authorization that does not start with "Bearer " passes as an "API key" without
	 * its value being checked (the first user is checked by the engine, on the database);
	 * "Bearer <key>" and no header at all do not. */
	h = MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
	if (h == NULL || h[0] == '\0' || strncmp(h, "Bearer ", 7) == 0) {
		atomic_fetch_add(&n->reconcile_unauthorized, 1);
		return reply_json(n, rq->conn, MHD_HTTP_UNAUTHORIZED,
				  "{\"ok\":false,\"msg\":\"API key authentication failed\"}");
	}
	req_park_for_work(s, rq);
	engine_submit_call(s, n, rq);
	return MHD_YES;
}

/* ============================== request dispatch ============================== */

static enum route route_of(const char *url)
{
	static const struct { const char *op; enum route r; } sim_ops[] = {
		{ "mode", R_SIM_MODE }, { "stats", R_SIM_STATS }, { "reset-stats", R_SIM_RESET },
		{ "exit", R_SIM_EXIT }, { "monitors", R_SIM_MONITORS }, { "runs", R_SIM_RUNS },
		{ "clock", R_SIM_CLOCK }, { "rate-limit", R_SIM_RATE }, { "restart", R_SIM_RESTART },
		{ "timeline", R_SIM_TIMELINE },
	};

	if (strcmp(url, "/api/v1/health") == 0)
		return R_HEALTH;
	if (strcmp(url, "/api/v1/reconcile-monitors") == 0)
		return R_RECONCILE;
	if (strncmp(url, "/api/v1/", 8) == 0 || strcmp(url, "/api/v1") == 0)
		return R_API_OTHER;
	if (strncmp(url, "/_sim/", 6) == 0) {
		for (size_t i = 0; i < sizeof(sim_ops) / sizeof(sim_ops[0]); i++)
			if (strcmp(url + 6, sim_ops[i].op) == 0)
				return sim_ops[i].r;
		return R_SIM_UNKNOWN;
	}
	if (strcmp(url, "/socket.io/ws-echo") == 0)
		return R_WS;
	return R_PAGE;
}

static bool is_get(const char *m) { return strcmp(m, "GET") == 0 || strcmp(m, "HEAD") == 0; }

static bool is_control(enum route r)
{
	return r >= R_SIM_MODE;
}

/* Partition mode: the request never reaches the node.  It stays unanswered until the client
 * gives up or the partition ends, and is then dropped (what was lost in the network stays
 * lost).  Returns true when rq was parked or dropped (*ret says which). */
static bool partitioned(struct sim *s, struct req *rq, enum MHD_Result *ret)
{
	if (rq->partitioned) {
		atomic_store(&rq->state, RQ_ACTIVE);
		atomic_fetch_sub(&s->outstanding, 1);
		*ret = MHD_NO;
		return true;
	}
	if (is_control(rq->route) || atomic_load(&rq->node->mode) != MODE_PARTITION)
		return false;
	pthread_mutex_lock(&s->lock);
	if (atomic_load(&s->stopping)) {
		pthread_mutex_unlock(&s->lock);
		*ret = MHD_NO;
		return true;
	}
	if (atomic_load(&rq->node->mode) != MODE_PARTITION) {
		pthread_mutex_unlock(&s->lock);
		return false;
	}
	rq->partitioned = true;
	suspend_locked(s, rq, WAIT_TIMER, 0);
	pthread_mutex_unlock(&s->lock);
	*ret = MHD_YES;
	return true;
}

static enum MHD_Result dispatch(struct sim *s, struct req *rq, const char *method)
{
	struct node *n = rq->node;
	struct MHD_Connection *c = rq->conn;
	enum MHD_Result ret;

	if (partitioned(s, rq, &ret))
		return ret;

	if (rq->rate_limited && atomic_load(&rq->state) == RQ_ACTIVE)
		return reply_rate_limited(n, c, rq->rate_reset_in_ms);
	switch (rq->route) {
	case R_HEALTH:
		return is_get(method) ? serve_health(s, rq) : reply_method_not_allowed(n, c, "GET, HEAD");
	case R_RECONCILE:
		return strcmp(method, "POST") == 0 ? serve_reconcile(s, rq)
						   : reply_method_not_allowed(n, c, "POST");
	case R_WS:
		return strcmp(method, "GET") == 0 ? serve_ws(s, n, c) : reply_method_not_allowed(n, c, "GET");
	case R_API_OTHER:
	case R_PAGE:
		return MHD_queue_response(c, MHD_HTTP_OK, n->resp_page);
	default:
		return serve_control(s, rq, method);
	}
}

/* Set when a connection starts: the node is the one whose listening socket accepted it. */
static void on_connection(void *cls, struct MHD_Connection *connection, void **socket_context,
			  enum MHD_ConnectionNotificationCode toe)
{
	struct sim *s = cls;
	const union MHD_ConnectionInfo *ci;
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	uint16_t port = 0;
	size_t lo = 0, hi = s->n_nodes;

	if (toe != MHD_CONNECTION_NOTIFY_STARTED)
		return;
	*socket_context = &s->nodes[0];
	ci = MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CONNECTION_FD);
	if (ci == NULL || getsockname(ci->connect_fd, (struct sockaddr *)&ss, &len) != 0)
		return;
	if (ss.ss_family == AF_INET)
		port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
	else if (ss.ss_family == AF_INET6)
		port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (s->by_port[mid]->port < port)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo < s->n_nodes && s->by_port[lo]->port == port)
		*socket_context = s->by_port[lo];
}

/*
 * The first call only sets up the request (and counts /api/v1/... arrivals); the answer is
 * queued on a later call (after the body, or on the second call for a GET), because queuing
 * on the first call makes MHD close the connection after every answer.
 */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *connection, const char *url,
				  const char *method, const char *version, const char *upload_data,
				  size_t *upload_data_size, void **con_cls)
{
	struct sim *s = cls;
	struct req *rq = *con_cls;

	(void)version;
	if (rq == NULL) {
		const union MHD_ConnectionInfo *ci =
			MHD_get_connection_info(connection, MHD_CONNECTION_INFO_SOCKET_CONTEXT);

		rq = calloc(1, sizeof(*rq));
		if (rq == NULL)
			return MHD_NO;
		rq->node = ci != NULL && ci->socket_context != NULL ? ci->socket_context
								    : &s->nodes[0];
		rq->route = route_of(url);
		rq->conn = connection;
		rq->arrival_ms = mono_ms();
		rq->arrival_real_ms = real_ms();
		rq->fd = -1;
		atomic_init(&rq->state, RQ_ACTIVE);
		atomic_init(&rq->refs, 1);
		*con_cls = rq;
		if (atomic_load(&rq->node->mode) == MODE_PARTITION)
			return MHD_YES; /* it never reaches the node: nothing counts it */
		if (rq->route == R_HEALTH && is_get(method))
			atomic_fetch_add(&rq->node->health_requests, 1);
		if (!s->opt.instant && (rq->route == R_RECONCILE || rq->route == R_API_OTHER))
			on_api_arrival(s, rq, rq->route == R_RECONCILE && strcmp(method, "POST") == 0);
		return MHD_YES;
	}
	if (*upload_data_size > 0) {
		/* Only the /_sim/mode body matters; other bodies are read and dropped. */
		if (rq->route == R_SIM_MODE) {
			if (rq->body_len + *upload_data_size > BODY_MAX) {
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

	(void)connection;
	(void)toe;
	if (rq == NULL)
		return;
	/* A resumed request can end here without re-entering the handler (client went away). */
	if (atomic_exchange(&rq->state, RQ_ACTIVE) != RQ_ACTIVE)
		atomic_fetch_sub(&s->outstanding, 1);
	if (rq->in_flight)
		atomic_fetch_sub(&rq->node->calls_in_flight, 1);
	if (rq->is_exit)
		kill(getpid(), SIGTERM); /* picked up by the main thread's sigwait */
	*con_cls = NULL;
	req_put(rq);
}

/* ============================== listening and accepting ============================== */

static void *accept_main(void *arg)
{
	struct sim *s = arg;
	struct epoll_event evs[64];

	for (;;) {
		int k = epoll_wait(s->epfd, evs, 64, -1);

		if (k < 0) {
			if (errno == EINTR)
				continue;
			return NULL;
		}
		for (int i = 0; i < k; i++) {
			struct node *n;

			if (evs[i].data.u32 == UINT32_MAX)
				return NULL; /* the wake pipe: shutting down */
			n = &s->nodes[evs[i].data.u32];
			for (;;) {
				struct sockaddr_storage ss;
				socklen_t len = sizeof(ss);
				int fd = accept4(n->listen_fd, (struct sockaddr *)&ss, &len,
						 SOCK_NONBLOCK | SOCK_CLOEXEC);

				if (fd < 0) {
					if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
					    errno == ENOMEM) {
						struct timespec ts = { 0, 10 * 1000000L };
						nanosleep(&ts, NULL); /* let connections close first */
					}
					break;
				}
				/* MHD owns (and on failure closes) the socket from here. */
				(void)MHD_add_connection(s->daemon, fd, (struct sockaddr *)&ss, len);
			}
		}
	}
}

static int cmp_port(const void *a, const void *b)
{
	const struct node *x = *(struct node *const *)a, *y = *(struct node *const *)b;

	return (int)x->port - (int)y->port;
}

static bool open_listener(struct sim *s, struct node *n)
{
	struct sockaddr_storage ss = s->opt.addr;
	uint16_t want = 0;
	int one = 1, fd;

	if (ss.ss_family == AF_INET) {
		want = ntohs(((struct sockaddr_in *)&ss)->sin_port);
		if (want != 0)
			want = (uint16_t)(want + n->index);
		((struct sockaddr_in *)&ss)->sin_port = htons(want);
	} else {
		want = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
		if (want != 0)
			want = (uint16_t)(want + n->index);
		((struct sockaddr_in6 *)&ss)->sin6_port = htons(want);
	}
	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return false;
	/* SO_REUSEADDR so a restarted node gets its port back at once; no SO_REUSEPORT, so a
	 * second process on a taken port fails instead of sharing it. */
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (ss.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&ss, s->opt.addr_len) != 0 ||
	    listen(fd, LISTEN_BACKLOG) != 0) {
		int e = errno;
		close(fd);
		errno = e;
		return false;
	}
	n->listen_fd = fd;
	if (want == 0) {
		socklen_t len = sizeof(ss);
		if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0)
			return false;
		want = ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
						     : ((struct sockaddr_in6 *)&ss)->sin6_port);
	}
	n->port = want;
	return true;
}

/* Opens every node's listening socket (before the database start-up, so a node can register
 * the address it listens on). */
bool http_listen(struct sim *s, char *err, size_t errlen)
{
	for (size_t i = 0; i < s->n_nodes; i++) {
		if (!open_listener(s, &s->nodes[i])) {
			snprintf(err, errlen, "cannot listen for %s: %s", s->nodes[i].id, strerror(errno));
			return false;
		}
	}
	s->by_port = malloc(s->n_nodes * sizeof(*s->by_port));
	if (s->by_port == NULL) {
		snprintf(err, errlen, "out of memory");
		return false;
	}
	for (size_t i = 0; i < s->n_nodes; i++)
		s->by_port[i] = &s->nodes[i];
	qsort(s->by_port, s->n_nodes, sizeof(*s->by_port), cmp_port);
	return true;
}

/*
 * MHD's own connection limit must be out of reach.  libmicrohttpd 0.9.75 (Debian 12) returns
 * from new_connection_process_() without unlocking the daemon's cleanup mutex when a
 * connection handed over with MHD_add_connection meets the limit ("Server reached connection
 * limit"); the next lock of that mutex hangs the worker thread and every MHD_resume_connection
 * with it, and the whole fleet stops answering (seen with 1,000 nodes: a failover's 999
 * reconcile calls plus a probe sweep took one worker past its share of 4 * nodes + 1024).
 * A node has no connection limit of its own (Node's http server has none), so the limit
 * that counts is the open-file limit: each worker's share of MHD's limit is set above it,
 * accept4() meets EMFILE first and the acceptor waits for connections to close.
 */
static unsigned mhd_connection_limit(const struct sim *s)
{
	struct rlimit rl;
	uint64_t files = 65536, workers = s->opt.threads > 1 ? s->opt.threads : 1, limit;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
		files = (uint64_t)rl.rlim_cur;
	limit = workers * (files + 1024);
	return limit > UINT_MAX / 2 ? UINT_MAX / 2 : (unsigned)limit;
}

bool http_start(struct sim *s)
{
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ITC |
			 MHD_ALLOW_SUSPEND_RESUME | MHD_ALLOW_UPGRADE | MHD_USE_NO_LISTEN_SOCKET;
	unsigned limit = mhd_connection_limit(s);
	struct epoll_event ev;
	pthread_condattr_t ca;
	bool cond_ok;

	if (pthread_condattr_init(&ca) != 0)
		return false;
	cond_ok = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) == 0 &&
		  pthread_cond_init(&s->sched_cond, &ca) == 0;
	pthread_condattr_destroy(&ca);
	if (!cond_ok)
		return false;
	if (pthread_create(&s->sched_thread, NULL, sched_main, s) != 0)
		return false;
	s->sched_running = true;
	if (s->opt.verbose)
		flags |= MHD_USE_ERROR_LOG;
	s->daemon = MHD_start_daemon(flags, 0, NULL, NULL, on_request, s,
				     MHD_OPTION_THREAD_POOL_SIZE, s->opt.threads,
				     MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
				     MHD_OPTION_NOTIFY_CONNECTION, on_connection, s,
				     MHD_OPTION_CONNECTION_LIMIT, limit,
				     MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)KEEPALIVE_IDLE_S,
				     MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)CONN_MEMORY_LIMIT,
				     MHD_OPTION_END);
	if (s->daemon == NULL)
		return false;
	s->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (s->epfd < 0)
		return false;
	ev.events = EPOLLIN;
	ev.data.u32 = UINT32_MAX;
	if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, s->wake_pipe[0], &ev) != 0)
		return false;
	for (size_t i = 0; i < s->n_nodes; i++) {
		ev.events = EPOLLIN;
		ev.data.u32 = (uint32_t)i;
		if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, s->nodes[i].listen_fd, &ev) != 0)
			return false;
	}
	if (pthread_create(&s->accept_thread, NULL, accept_main, s) != 0)
		return false;
	s->accept_running = true;
	return true;
}

void http_stop_accepting(struct sim *s)
{
	pthread_mutex_lock(&s->lock);
	atomic_store(&s->stopping, true);
	pthread_mutex_unlock(&s->lock);
	if (s->wake_pipe[1] >= 0)
		(void)!write(s->wake_pipe[1], "x", 1); /* wakes the acceptor and every WebSocket */
	if (s->accept_running) {
		pthread_join(s->accept_thread, NULL);
		s->accept_running = false;
	}
	for (size_t i = 0; i < s->n_nodes; i++) {
		if (s->nodes[i].listen_fd >= 0)
			close(s->nodes[i].listen_fd);
		s->nodes[i].listen_fd = -1;
	}
}

/*
 * Order matters: release every parked request and wait until MHD has taken them back (MHD
 * forbids stopping with suspended connections), let the WebSockets end (each closes its
 * socket through MHD, which must still be running), then stop MHD.  The engine and the
 * database pool have stopped already, so no work can park or wake a request any more.
 */
void http_shutdown(struct sim *s)
{
	int64_t give_up = mono_ms() + SHUTDOWN_DRAIN_MS;
	struct req *resume = NULL;

	pthread_mutex_lock(&s->lock);
	atomic_store(&s->stopping, true);
	release_all_locked(s, NULL, WAKE_SHUTDOWN, &resume);
	pthread_mutex_unlock(&s->lock);
	resume_released(resume);
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
		pthread_cond_destroy(&s->sched_cond);
	}
	if (s->daemon != NULL)
		MHD_stop_daemon(s->daemon);
	s->daemon = NULL;
	if (s->epfd >= 0)
		close(s->epfd);
	s->epfd = -1;
	for (size_t i = 0; i < s->n_nodes; i++)
		destroy_node_responses(&s->nodes[i]);
	free(s->by_port);
	s->by_port = NULL;
}
