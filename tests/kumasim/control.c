/*
 * control.c — kumasim's test-only control surface under /_sim/ (tests/kumasim/README.md lists it).
 * Each node's port controls that node; /_sim/exit ends the whole process.
 *
 * Owns: the /_sim handlers and their JSON.  Must not: change a node's process state except
 * through the engine (restart) or the documented knobs (mode, clock, rate limit, timeline),
 * or hold sim.model_lock longer than it takes to copy what it reports.
 */
#include "sim.h"

#include <json-c/json.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_NEXT_CRON_IN_MS 58000 /* beyond this the previous :00 window would still be open */

static void add_i64(json_object *o, const char *key, int64_t v)
{
	json_object_object_add(o, key, json_object_new_int64(v));
}

static void add_u64(json_object *o, const char *key, unsigned long long v)
{
	add_i64(o, key, v > INT64_MAX ? INT64_MAX : (int64_t)v);
}

static enum MHD_Result reply_object(const struct node *n, struct MHD_Connection *c,
				    json_object *o)
{
	const char *txt = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
	enum MHD_Result ret = txt != NULL ? reply_json(n, c, MHD_HTTP_OK, txt) : MHD_NO;

	json_object_put(o);
	return ret;
}

/* Parses ?name=N into *out; returns 0 absent, 1 set, -1 malformed or out of [min, max]. */
static int query_i64(struct MHD_Connection *c, const char *name, int64_t min, int64_t max,
		     int64_t *out)
{
	const char *q = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, name);
	char *e;
	long long v;

	if (q == NULL)
		return 0;
	errno = 0;
	v = strtoll(q, &e, 10);
	if (errno != 0 || e == q || *e != '\0' || v < min || v > max)
		return -1;
	*out = v;
	return 1;
}

/* ============================== mode ============================== */

static enum MHD_Result serve_mode(struct sim *s, struct req *rq)
{
	struct node *n = rq->node;
	struct MHD_Connection *c = rq->conn;
	const char *p = rq->body, *end = rq->body + rq->body_len;
	int64_t slow;
	int mode, q;

	if (rq->body_too_big)
		return reply_error(n, c, MHD_HTTP_CONTENT_TOO_LARGE, "body too large",
				   "send one of healthy|fail|503|hang|slow|partition", NULL);
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
		p++;
	while (end > p && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r' || end[-1] == '\n'))
		end--;
	mode = mode_from_name(p, (size_t)(end - p));
	if (mode < 0)
		return reply_error(n, c, MHD_HTTP_BAD_REQUEST, "unknown mode",
				   "send one of healthy|fail|503|hang|slow|partition", NULL);
	q = query_i64(c, "slow_ms", 0, 600000, &slow);
	if (q < 0)
		return reply_error(n, c, MHD_HTTP_BAD_REQUEST, "bad slow_ms",
				   "an integer of milliseconds, at most 600000", NULL);
	if (q > 0)
		atomic_store(&n->slow_ms, (unsigned)slow);
	set_mode(s, n, mode);
	return MHD_queue_response(c, MHD_HTTP_OK, n->resp_ok);
}

/* ============================== stats ============================== */

static unsigned waiting_of(struct sim *s, const struct node *n)
{
	unsigned k = 0;

	pthread_mutex_lock(&s->lock);
	for (const struct req *rq = s->waiting; rq != NULL; rq = rq->next)
		if (rq->node == n && rq->route == R_HEALTH && rq->wait_kind == WAIT_TIMER)
			k++;
	pthread_mutex_unlock(&s->lock);
	return k;
}

static unsigned duplicated(const struct node_proc *p)
{
	unsigned k = 0;

	for (size_t i = 0; i < p->leaked.cap; i++)
		if (p->leaked.slots[i].key != 0 && model_copies(p, p->leaked.slots[i].key) > 1)
			k++;
	return k;
}

static enum MHD_Result serve_stats(struct sim *s, struct req *rq)
{
	struct node *n = rq->node;
	json_object *o = json_object_new_object();
	int64_t now = real_ms();

	if (o == NULL)
		return MHD_NO;
	json_object_object_add(o, "nodeId", json_object_new_string(n->id));
	json_object_object_add(o, "mode", json_object_new_string(mode_names[atomic_load(&n->mode)]));
	json_object_object_add(o, "realistic", json_object_new_boolean(!s->opt.instant));
	add_u64(o, "health_requests", atomic_load(&n->health_requests));
	add_u64(o, "health_db_failures", atomic_load(&n->health_db_failures));
	add_u64(o, "reconcile_calls", atomic_load(&n->reconcile_calls));
	add_u64(o, "reconcile_unauthorized", atomic_load(&n->reconcile_unauthorized));
	add_u64(o, "reconcile_errors", atomic_load(&n->reconcile_errors));
	add_i64(o, "last_reconcile_ms", atomic_load(&n->last_reconcile_ms));
	add_u64(o, "calls_while_running", atomic_load(&n->calls_while_running));
	add_u64(o, "calls_during_cron", atomic_load(&n->calls_during_cron));
	add_i64(o, "calls_in_flight", atomic_load(&n->calls_in_flight));
	add_i64(o, "max_calls_in_flight", atomic_load(&n->max_calls_in_flight));
	add_u64(o, "restarts", atomic_load(&n->restarts));
	add_u64(o, "slow_ms", atomic_load(&n->slow_ms));
	add_u64(o, "waiting_health_requests", waiting_of(s, n));
	add_u64(o, "ws_sessions", (unsigned)atomic_load(&s->ws_active));
	add_u64(o, "port", n->port);
	add_u64(o, "pid", (unsigned long long)getpid());
	add_u64(o, "nodes", s->n_nodes);

	pthread_mutex_lock(&s->model_lock);
	add_u64(o, "reconcile_rate_limited", n->rl.limited);
	add_u64(o, "rate_limit", n->rl.limit);
	add_i64(o, "rate_window_ms", n->rl.window_ms);
	add_u64(o, "runs_total", n->runs_call + n->runs_cron);
	add_u64(o, "runs_call", n->runs_call);
	add_u64(o, "runs_cron", n->runs_cron);
	add_u64(o, "runs_failed", n->runs_failed);
	add_u64(o, "runs_in_progress", n->proc.active_runs);
	add_u64(o, "cron_runs_in_progress", n->proc.active_cron_runs);
	add_u64(o, "overlapping_runs", n->proc.overlapping_runs);
	add_u64(o, "cron_skipped", n->cron_skipped);
	add_u64(o, "monitors_listed", n->proc.listed.len);
	add_u64(o, "copies_running", n->proc.listed.len + n->proc.leaked_total);
	add_u64(o, "leaked_copies", n->proc.leaked_total);
	add_u64(o, "duplicated_monitors", duplicated(&n->proc));
	add_i64(o, "clock_skew_ms", n->skew_ms);
	add_i64(o, "node_clock_ms", now + n->skew_ms);
	add_i64(o, "cron_phase_ms", n->cron_phase);
	if (s->opt.cron && !s->opt.instant)
		add_i64(o, "next_cron_ms", n->next_fire);
	else
		json_object_object_add(o, "next_cron_ms", NULL);
	pthread_mutex_unlock(&s->model_lock);
	return reply_object(n, rq->conn, o);
}

static enum MHD_Result serve_reset(struct sim *s, struct req *rq)
{
	struct node *n = rq->node;

	atomic_store(&n->health_requests, 0);
	atomic_store(&n->health_db_failures, 0);
	atomic_store(&n->reconcile_calls, 0);
	atomic_store(&n->reconcile_unauthorized, 0);
	atomic_store(&n->reconcile_errors, 0);
	atomic_store(&n->last_reconcile_ms, 0);
	atomic_store(&n->calls_while_running, 0);
	atomic_store(&n->calls_during_cron, 0);
	atomic_store(&n->max_calls_in_flight, atomic_load(&n->calls_in_flight));
	pthread_mutex_lock(&s->model_lock);
	n->rl.limited = 0;
	n->runs_call = n->runs_cron = n->runs_failed = n->cron_skipped = 0;
	n->proc.overlapping_runs = 0;
	n->hist_len = n->hist_head = 0;
	pthread_mutex_unlock(&s->model_lock);
	return MHD_queue_response(rq->conn, MHD_HTTP_OK, n->resp_ok);
}

/* ============================== monitors and runs ============================== */

static json_object *ids_array(const int64_t *ids, size_t n)
{
	json_object *a = json_object_new_array();

	for (size_t i = 0; a != NULL && i < n; i++)
		json_object_array_add(a, json_object_new_int64(ids[i]));
	return a;
}

static enum MHD_Result serve_monitors(struct sim *s, struct req *rq)
{
	struct node *n = rq->node;
	json_object *o = json_object_new_object(), *mons, *dups;
	int64_t *listed, *leaked;
	size_t n_listed, n_leaked, i = 0, j = 0;

	if (o == NULL)
		return MHD_NO;
	mons = json_object_new_array();
	dups = json_object_new_array();
	pthread_mutex_lock(&s->model_lock);
	listed = idmap_sorted_keys(&n->proc.listed, &n_listed);
	leaked = idmap_sorted_keys(&n->proc.leaked, &n_leaked);
	/* Every monitor with a copy checking on this node: the merge of both sorted lists. */
	while (i < n_listed || j < n_leaked) {
		int64_t id = (j >= n_leaked || (i < n_listed && listed[i] <= leaked[j])) ? listed[i]
											 : leaked[j];
		uint32_t copies = model_copies(&n->proc, id);
		json_object *m = json_object_new_object();

		add_i64(m, "id", id);
		add_u64(m, "copies", copies);
		json_object_object_add(m, "listed",
				       json_object_new_boolean(idmap_get(&n->proc.listed, id) != 0));
		json_object_array_add(mons, m);
		if (copies > 1)
			json_object_array_add(dups, json_object_new_int64(id));
		if (i < n_listed && listed[i] == id)
			i++;
		if (j < n_leaked && leaked[j] == id)
			j++;
	}
	json_object_object_add(o, "nodeId", json_object_new_string(n->id));
	json_object_object_add(o, "listed", ids_array(listed, n_listed));
	add_u64(o, "leaked_copies", n->proc.leaked_total);
	add_u64(o, "copies_running", n_listed + n->proc.leaked_total);
	pthread_mutex_unlock(&s->model_lock);
	free(listed);
	free(leaked);
	json_object_object_add(o, "monitors", mons);
	json_object_object_add(o, "duplicates", dups);
	return reply_object(n, rq->conn, o);
}

static const char *trigger_name(int t)
{
	return t == TRIGGER_CRON ? "cron" : "call";
}

static const char *result_name(int r)
{
	static const char *const names[] = { "running", "ok", "db_error", "aborted" };

	return r >= 0 && r <= RUN_ABORTED ? names[r] : "?";
}

static json_object *run_json(const struct run_rec *r)
{
	json_object *o = json_object_new_object();

	add_u64(o, "id", r->id);
	json_object_object_add(o, "trigger", json_object_new_string(trigger_name(r->trigger)));
	json_object_object_add(o, "result", json_object_new_string(result_name(r->result)));
	add_i64(o, "start_ms", r->start_ms);
	if (r->end_ms != 0)
		add_i64(o, "end_ms", r->end_ms);
	else
		json_object_object_add(o, "end_ms", NULL);
	add_u64(o, "wanted", r->wanted);
	add_u64(o, "to_start", r->to_start);
	add_u64(o, "to_stop", r->to_stop);
	add_u64(o, "started", r->started);
	add_u64(o, "stopped", r->stopped);
	add_u64(o, "leaked", r->leaked);
	json_object_object_add(o, "overlapped", json_object_new_boolean(r->overlapped));
	if (r->error[0] != '\0')
		json_object_object_add(o, "error", json_object_new_string(r->error));
	return o;
}

/* Finished runs oldest first, then the runs in progress; ?since=ID keeps ids > ID. */
static enum MHD_Result serve_runs(struct sim *s, struct req *rq)
{
	struct node *n = rq->node;
	json_object *o = json_object_new_object(), *a;
	int64_t since = 0;

	if (o == NULL)
		return MHD_NO;
	if (query_i64(rq->conn, "since", 0, INT64_MAX, &since) < 0) {
		json_object_put(o);
		return reply_error(n, rq->conn, MHD_HTTP_BAD_REQUEST, "bad since",
				   "a run id (integer >= 0)", NULL);
	}
	a = json_object_new_array();
	pthread_mutex_lock(&s->model_lock);
	for (size_t i = 0; i < n->hist_len; i++) {
		const struct run_rec *r = &n->hist[(n->hist_head + i) % n->hist_cap];
		if ((int64_t)r->id > since)
			json_object_array_add(a, run_json(r));
	}
	for (const struct run *r = n->proc.active; r != NULL; r = r->next_active)
		if ((int64_t)r->rec.id > since)
			json_object_array_add(a, run_json(&r->rec));
	pthread_mutex_unlock(&s->model_lock);
	json_object_object_add(o, "nodeId", json_object_new_string(n->id));
	json_object_object_add(o, "runs", a);
	return reply_object(n, rq->conn, o);
}

/* ============================== timeline ============================== */

static const char *cause_name(int c)
{
	return c == TL_BOOT ? "boot" : c == TL_RESTART ? "restart" : "run";
}

static void add_time(json_object *o, const char *key, int64_t ms)
{
	if (ms != 0)
		add_i64(o, key, ms);
	else
		json_object_object_add(o, key, NULL);
}

static json_object *copy_json(const struct tl_copy *c)
{
	json_object *o = json_object_new_object();

	add_u64(o, "copy", c->copy);
	add_time(o, "start_ms", c->start_ms);
	add_time(o, "stop_ms", c->stop_ms);
	add_time(o, "leaked_ms", c->leaked_ms);
	json_object_object_add(o, "started_by", c->start_ms != 0
				? json_object_new_string(cause_name(c->started_by)) : NULL);
	json_object_object_add(o, "stopped_by", c->stop_ms != 0
				? json_object_new_string(cause_name(c->stopped_by)) : NULL);
	json_object_object_add(o, "running", json_object_new_boolean(c->running));
	json_object_object_add(o, "listed", json_object_new_boolean(c->listed));
	return o;
}

static void add_record_info(json_object *o, const struct timeline *tl)
{
	add_u64(o, "cap", tl->max);
	add_u64(o, "events", tl->len);
	add_u64(o, "dropped", tl->dropped);
	add_i64(o, "since_ms", tl->since_ms);
}

/* Every copy of every monitor the record saw, or that runs now, grouped by monitor. */
static enum MHD_Result serve_timeline(struct sim *s, struct req *rq)
{
	struct node *n = rq->node;
	json_object *o, *mons, *cur = NULL;
	struct tl_copy *copies;
	int64_t only = 0, now;
	size_t k = 0;
	bool oom;

	if (query_i64(rq->conn, "id", 1, INT64_MAX, &only) < 0)
		return reply_error(n, rq->conn, MHD_HTTP_BAD_REQUEST, "bad id",
				   "a monitor id (integer >= 1)", NULL);
	o = json_object_new_object();
	if (o == NULL)
		return MHD_NO;
	pthread_mutex_lock(&s->model_lock);
	now = real_ms();
	copies = tl_copies(&n->proc, only, &k, &oom);
	add_record_info(o, &n->proc.tl);
	pthread_mutex_unlock(&s->model_lock);
	if (oom) {
		json_object_put(o);
		return reply_error(n, rq->conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory",
				   "lower --timeline-cap", NULL);
	}
	json_object_object_add(o, "nodeId", json_object_new_string(n->id));
	add_i64(o, "now_ms", now);
	mons = json_object_new_array();
	for (size_t i = 0; i < k; i++) {
		if (i == 0 || copies[i].id != copies[i - 1].id) {
			json_object *m = json_object_new_object();

			add_i64(m, "id", copies[i].id);
			cur = json_object_new_array();
			json_object_object_add(m, "copies", cur);
			json_object_array_add(mons, m);
		}
		json_object_array_add(cur, copy_json(&copies[i]));
	}
	free(copies);
	json_object_object_add(o, "monitors", mons);
	return reply_object(n, rq->conn, o);
}

/* ?clear=1 forgets the record (it begins again now); ?cap=N keeps at most N events. */
static enum MHD_Result serve_timeline_set(struct sim *s, struct req *rq)
{
	struct node *n = rq->node;
	int64_t clear = 0, cap = 0;
	int qc = query_i64(rq->conn, "clear", 1, 1, &clear);
	int qn = query_i64(rq->conn, "cap", 0, TIMELINE_CAP_MAX, &cap);
	json_object *o;
	bool ok = true;

	if (qc < 0 || qn < 0 || qc + qn == 0)
		return reply_error(n, rq->conn, MHD_HTTP_BAD_REQUEST, "bad timeline setting",
				   "give clear=1 and/or cap=N (0..1000000 events; 0 = no record)", NULL);
	o = json_object_new_object();
	if (o == NULL)
		return MHD_NO;
	pthread_mutex_lock(&s->model_lock);
	if (qc > 0)
		tl_clear(&n->proc.tl, real_ms());
	if (qn > 0)
		ok = tl_set_max(&n->proc.tl, (size_t)cap);
	add_record_info(o, &n->proc.tl);
	pthread_mutex_unlock(&s->model_lock);
	if (!ok) {
		json_object_put(o);
		return reply_error(n, rq->conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory",
				   "the record is unchanged", NULL);
	}
	return reply_object(n, rq->conn, o);
}

/* ============================== clock, rate limit, restart ============================== */

static json_object *clock_json(struct sim *s, const struct node *n, int64_t now)
{
	json_object *o = json_object_new_object();

	add_i64(o, "clock_skew_ms", n->skew_ms);
	add_i64(o, "node_clock_ms", now + n->skew_ms);
	add_i64(o, "cron_phase_ms", n->cron_phase);
	if (s->opt.cron)
		add_i64(o, "next_cron_ms", n->next_fire);
	else
		json_object_object_add(o, "next_cron_ms", NULL);
	return o;
}

/*
 * ?skew_ms=N sets the node clock to real time + N; ?next_cron_in_ms=N picks the skew whose
 * :00 falls N ms from now (the cron then fires at the first once-a-second check after it,
 * which next_cron_ms in the answer says).
 */
static enum MHD_Result serve_clock(struct sim *s, struct req *rq)
{
	struct node *n = rq->node;
	int64_t skew = 0, in_ms = 0, now;
	int qs = query_i64(rq->conn, "skew_ms", -86400000, 86400000, &skew);
	int qn = query_i64(rq->conn, "next_cron_in_ms", 0, MAX_NEXT_CRON_IN_MS, &in_ms);
	json_object *o;

	if (qs < 0 || qn < 0 || qs + qn != 1)
		return reply_error(n, rq->conn, MHD_HTTP_BAD_REQUEST, "bad clock setting",
				   "give one of skew_ms=N (|N| <= 86400000) or next_cron_in_ms=N "
				   "(0..58000)", NULL);
	if (s->opt.instant)
		return reply_error(n, rq->conn, MHD_HTTP_CONFLICT, "instant mode",
				   "an --instant node has no cron", NULL);
	pthread_mutex_lock(&s->model_lock);
	now = real_ms();
	if (qn > 0) {
		int64_t at = now + in_ms;
		skew = -(((at % 60000) + 60000) % 60000); /* node clock reads :00 at `at` */
		if (skew < -30000)
			skew += 60000;
	}
	n->skew_ms = skew;
	engine_reschedule_cron_locked(s, n, now);
	engine_wake_locked(s);
	o = clock_json(s, n, now);
	pthread_mutex_unlock(&s->model_lock);
	return reply_object(n, rq->conn, o);
}

static enum MHD_Result serve_rate(struct sim *s, struct req *rq)
{
	struct node *n = rq->node;
	int64_t limit = 0, window = 0;
	int ql = query_i64(rq->conn, "limit", 0, UINT32_MAX, &limit);
	int qw = query_i64(rq->conn, "window_ms", 1, 86400000, &window);
	json_object *o;

	if (ql < 0 || qw < 0 || ql + qw == 0)
		return reply_error(n, rq->conn, MHD_HTTP_BAD_REQUEST, "bad rate limit",
				   "give limit=N (0 = none) and/or window_ms=N", NULL);
	o = json_object_new_object();
	pthread_mutex_lock(&s->model_lock);
	if (ql > 0)
		n->rl.limit = (uint32_t)limit;
	if (qw > 0)
		n->rl.window_ms = window;
	rl_reset(&n->rl); /* a new limiter starts with empty windows */
	add_u64(o, "rate_limit", n->rl.limit);
	add_i64(o, "rate_window_ms", n->rl.window_ms);
	pthread_mutex_unlock(&s->model_lock);
	return reply_object(n, rq->conn, o);
}

static enum MHD_Result serve_restart(struct sim *s, struct req *rq)
{
	if (atomic_load(&rq->state) != RQ_ACTIVE) {
		atomic_store(&rq->state, RQ_ACTIVE);
		atomic_fetch_sub(&s->outstanding, 1);
		return rq->wake_reason == WAKE_DONE ? reply_answer(rq) : MHD_NO;
	}
	if (s->opt.instant)
		return reply_error(rq->node, rq->conn, MHD_HTTP_CONFLICT, "instant mode",
				   "an --instant node has no process state to restart", NULL);
	req_park_for_work(s, rq);
	engine_submit_restart(s, rq->node, rq);
	return MHD_YES;
}

/* ============================== dispatch ============================== */

enum MHD_Result serve_control(struct sim *s, struct req *rq, const char *method)
{
	struct node *n = rq->node;
	struct MHD_Connection *c = rq->conn;
	bool get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
	bool post = strcmp(method, "POST") == 0;

	switch (rq->route) {
	case R_SIM_MODE:
		return post ? serve_mode(s, rq) : reply_method_not_allowed(n, c, "POST");
	case R_SIM_STATS:
		return get ? serve_stats(s, rq) : reply_method_not_allowed(n, c, "GET, HEAD");
	case R_SIM_MONITORS:
		return get ? serve_monitors(s, rq) : reply_method_not_allowed(n, c, "GET, HEAD");
	case R_SIM_RUNS:
		return get ? serve_runs(s, rq) : reply_method_not_allowed(n, c, "GET, HEAD");
	case R_SIM_RESET:
		return post ? serve_reset(s, rq) : reply_method_not_allowed(n, c, "POST");
	case R_SIM_CLOCK:
		return post ? serve_clock(s, rq) : reply_method_not_allowed(n, c, "POST");
	case R_SIM_RATE:
		return post ? serve_rate(s, rq) : reply_method_not_allowed(n, c, "POST");
	case R_SIM_RESTART:
		return post ? serve_restart(s, rq) : reply_method_not_allowed(n, c, "POST");
	case R_SIM_TIMELINE:
		if (get)
			return serve_timeline(s, rq);
		return post ? serve_timeline_set(s, rq)
			    : reply_method_not_allowed(n, c, "GET, HEAD, POST");
	case R_SIM_EXIT:
		if (!post)
			return reply_method_not_allowed(n, c, "POST");
		rq->is_exit = true; /* the exit itself happens once the answer is out */
		return reply_copy(n, c, MHD_HTTP_OK, "application/json; charset=utf-8",
				  "{\"ok\":true}", 11, NULL, true);
	default:
		return reply_error(n, c, MHD_HTTP_NOT_FOUND, "not found",
				   "control paths: /_sim/mode, /_sim/stats, /_sim/monitors, /_sim/runs, "
				   "/_sim/timeline, /_sim/reset-stats, /_sim/clock, /_sim/rate-limit, /_sim/restart, "
				   "/_sim/exit", NULL);
	}
}
