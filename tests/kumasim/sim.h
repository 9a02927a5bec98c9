/*
 * sim.h — kumasim's shared types: the process (struct sim), each simulated node (struct
 * node), one HTTP request (struct req), and the functions the modules call across.
 *
 * Modules: main.c (options, start-up, shutdown), http.c (listening sockets, MHD handlers,
 * health and reconcile endpoints, parked requests), control.c (/_sim/...), engine.c
 * (reconcile runs, the cron, database jobs), ws.c (WebSocket echo), model.c (a node process
 * as pure functions), db*.c (the cluster database).
 *
 * Locks, always taken in this order: sim.model_lock (node process state and its timeline, the
 * engine's timer heap, run history, rate limits) before sim.lock (parked requests, mode changes).  Counters
 * read by /_sim/stats without a lock are C11 atomics.
 */
#ifndef KUMASIM_SIM_H
#define KUMASIM_SIM_H

#include <netinet/in.h>
#include <arpa/inet.h>
#include <microhttpd.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "db.h"
#include "model.h"

#define NODE_ID_MAX 50           /* node.node_id is VARCHAR(50) */
#define NODE_NAME_MAX 100        /* node.node_name */
#define NODE_HOST_MAX 45         /* node.host is VARCHAR(45) */
#define BODY_MAX 128             /* largest request body kumasim reads (POST /_sim/mode) */
#define ANSWER_MAX 320
#define RUN_HISTORY_MAX 1000     /* runs kept per node for /_sim/runs */
#define TIMELINE_CAP_DEFAULT 10000 /* copy events kept per node for /_sim/timeline */
#define TIMELINE_CAP_MAX 1000000

/* hang: only health answers hang (its database check is stuck); partition: no request but
 * /_sim/... reaches the node (accepted, never answered, dropped when the mode changes), while
 * the node itself goes on running, cron included. */
enum sim_mode { MODE_HEALTHY, MODE_FAIL, MODE_503, MODE_HANG, MODE_SLOW, MODE_PARTITION,
		MODE_COUNT };
extern const char *const mode_names[MODE_COUNT];

enum route {
	R_HEALTH, R_RECONCILE, R_API_OTHER, R_WS, R_PAGE,
	R_SIM_MODE, R_SIM_STATS, R_SIM_RESET, R_SIM_EXIT, R_SIM_MONITORS, R_SIM_RUNS,
	R_SIM_CLOCK, R_SIM_RATE, R_SIM_RESTART, R_SIM_TIMELINE, R_SIM_UNKNOWN
};

/* Lifecycle of a request that had to wait. */
enum rq_state { RQ_ACTIVE, RQ_SUSPENDED, RQ_RESUMING };
enum wait_kind { WAIT_TIMER, WAIT_WORK };
enum wake_reason { WAKE_NONE, WAKE_DEADLINE, WAKE_MODE_CHANGED, WAKE_PEER_GONE, WAKE_SHUTDOWN,
		   WAKE_DONE };

/*
 * One per HTTP request (MHD's con_cls).  A parked request sits in sim.waiting (guarded by
 * sim.lock) with state RQ_SUSPENDED; whoever releases it unlinks it, sets RQ_RESUMING and the
 * reason, then resumes the connection.  Requests parked for work (WAIT_WORK: a database job
 * or a reconcile run) are also referenced by that work, hence the reference count: MHD holds
 * one, the work another, and the last one frees it.
 */
struct req {
	struct node *node;
	enum route route;
	struct MHD_Connection *conn;
	int64_t arrival_ms;           /* monotonic */
	int64_t arrival_real_ms;
	char body[BODY_MAX + 1];
	size_t body_len;
	bool body_too_big;
	bool is_exit;                 /* POST /_sim/exit: exit once this answer is sent */
	bool in_flight;               /* counted in node.calls_in_flight */
	bool rate_limited;            /* over the node's API_RATE_LIMIT: answer 429 */
	bool partitioned;             /* parked by partition mode: dropped when released */
	int64_t rate_reset_in_ms;
	_Atomic int state;
	_Atomic int refs;
	int wait_kind;
	int wake_reason;
	int64_t deadline_ms;          /* WAIT_TIMER: 0 = hang (no deadline) */
	int fd;                       /* client socket, polled for a close while hung */
	/* Filled by the work before it wakes the request. */
	bool db_ok;
	unsigned answer_status;       /* 0 = drop the connection */
	char answer[ANSWER_MAX];
	struct req *prev, *next;
};

struct node {
	struct sim *sim;
	unsigned index;
	char id[NODE_ID_MAX + 1];
	char name[NODE_NAME_MAX + 1];
	char host[NODE_HOST_MAX + 1]; /* written into node.host at start */
	bool primary;
	int listen_fd;
	uint16_t port;
	char page_body[256];
	struct MHD_Response *resp_page;
	struct MHD_Response *resp_ok;

	_Atomic int mode;
	_Atomic unsigned slow_ms;
	_Atomic int64_t start_real_ms;      /* process (re)start, for uptime */
	atomic_ullong health_requests;
	atomic_ullong health_db_failures;   /* health answers that found the database gone */
	atomic_ullong reconcile_calls;      /* accepted (authorised) reconcile calls */
	atomic_ullong reconcile_unauthorized;
	atomic_ullong reconcile_errors;     /* 500: the database failed during the call */
	atomic_ullong calls_while_running;  /* reconcile POSTs that arrived during a run */
	atomic_ullong calls_during_cron;    /* ... during a cron run */
	atomic_ullong restarts;
	_Atomic int64_t last_reconcile_ms;  /* realtime ms of the last accepted call, 0 = never */
	_Atomic int calls_in_flight;
	_Atomic int max_calls_in_flight;

	/* Guarded by sim.model_lock. */
	struct node_proc proc;
	uint64_t epoch;                     /* bumped by a restart: older work is dropped */
	uint64_t runs_call, runs_cron, runs_failed, cron_skipped;
	struct run_rec *hist;               /* ring of the last RUN_HISTORY_MAX runs */
	size_t hist_cap, hist_len, hist_head;
	int64_t skew_ms;
	int cron_phase;                     /* node-cron's check phase within the second */
	int64_t next_fire;                  /* realtime ms of the next cron check that fires */
	struct ratelimit rl;
};

struct sim_opts {
	struct sockaddr_storage addr;       /* first node's address; node i uses port + i */
	socklen_t addr_len;
	bool port_zero;
	char node_id[NODE_ID_MAX + 1];
	const char *node_name;
	const char *node_host;              /* NULL: 127.0.0.1; "listen": the listen address */
	bool primary;
	unsigned n_nodes;                   /* 0: one node named node_id */
	const char *node_prefix;
	const char *api_key;                /* --instant only */
	const char *pidfile;
	int mode;
	unsigned slow_ms;
	unsigned threads;
	bool verbose;
	bool instant;
	bool setup_done;
	bool cron;
	double delay_scale;
	uint64_t seed;
	int64_t skew_ms;
	int cron_phase;                     /* -1: from the start time */
	uint32_t rate_limit;
	int64_t rate_window_ms;
	int64_t health_cache_ms;
	size_t timeline_cap;                /* events per node, 0 = no timeline */
	unsigned db_threads;
	struct db_cfg db;
};

struct sim {
	struct sim_opts opt;
	struct node *nodes;
	size_t n_nodes;
	struct node **by_port;              /* sorted by port, for finding a connection's node */
	struct node **by_id;                /* sorted by id, for distributing a shared read */
	struct MHD_Daemon *daemon;
	int64_t start_ms;                   /* monotonic */

	/* accepting connections */
	pthread_t accept_thread;
	bool accept_running;
	int epfd;

	/* parked requests (sim.lock) */
	pthread_mutex_t lock;
	pthread_cond_t sched_cond;          /* CLOCK_MONOTONIC */
	pthread_t sched_thread;
	bool sched_running;
	bool sched_stop;
	atomic_bool stopping;
	struct req *waiting;
	unsigned n_waiting;
	_Atomic int outstanding;            /* suspended or resuming, not yet back in a handler */
	_Atomic int ws_active;
	int wake_pipe[2];                   /* written once at shutdown; wakes accept and WebSockets */

	/* engine (sim.model_lock) */
	pthread_mutex_t model_lock;
	pthread_cond_t engine_cond;         /* CLOCK_MONOTONIC */
	pthread_t engine_thread;
	bool engine_running;
	bool engine_stop;
	struct run **heap;
	size_t heap_len, heap_cap;
	uint64_t next_run_id;
	int64_t cron_min_fire;              /* earliest node.next_fire */

	struct db_pool *pool;
	/* Health checks' SELECT 1 runs on a connection of its own, as on a real node whose
	 * database pool has several connections: it never queues behind reconcile reads (with a
	 * thousand nodes in one process it otherwise waited behind 999 reconcile scans, and the
	 * whole fleet looked dead to its prober). */
	struct db_pool *health_pool;

	/* health answers' database check, reused for opt.health_cache_ms (0: never) */
	pthread_mutex_t health_lock;
	int64_t health_checked_ms;          /* monotonic, 0 = never */
	bool health_ok;
	char health_err[160];
};

/* ---- main.c ---- */
int64_t mono_ms(void);
int64_t real_ms(void);
void logmsg(const struct sim *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- http.c ---- */
bool http_listen(struct sim *s, char *err, size_t errlen); /* every node's listening socket */
bool http_start(struct sim *s);       /* MHD daemon and the accept thread */
void http_stop_accepting(struct sim *s);
void http_shutdown(struct sim *s);    /* after the engine and the pool stopped */
void set_mode(struct sim *s, struct node *n, int mode);
bool build_node_responses(struct sim *s, struct node *n);
/* Parks rq for work; call from its handler, then hand rq to the work (one reference). */
void req_park_for_work(struct sim *s, struct req *rq);
/* The work is done: wakes rq if still parked, drops the work's reference. */
void req_wake(struct sim *s, struct req *rq);
/* Fills the answer and wakes rq (status 0: the connection is dropped unanswered). */
void req_answer(struct sim *s, struct req *rq, unsigned status, const char *body);
void req_put(struct req *rq);
enum MHD_Result reply_copy(const struct node *n, struct MHD_Connection *c, unsigned status,
			   const char *ctype, const char *body, size_t len, const char *allow,
			   bool close_after);
enum MHD_Result reply_json(const struct node *n, struct MHD_Connection *c, unsigned status,
			   const char *body);
enum MHD_Result reply_error(const struct node *n, struct MHD_Connection *c, unsigned status,
			    const char *error, const char *detail, const char *allow);
enum MHD_Result reply_method_not_allowed(const struct node *n, struct MHD_Connection *c,
					 const char *allow);
enum MHD_Result reply_answer(struct req *rq);
int mode_from_name(const char *name, size_t len);
/* Copies src for use inside a JSON string: printable ASCII, no quote or backslash. */
void json_safe(char *dst, size_t size, const char *src);

/* ---- control.c ---- */
enum MHD_Result serve_control(struct sim *s, struct req *rq, const char *method);

/* ---- engine.c ---- */
bool engine_start(struct sim *s);
void engine_stop(struct sim *s);      /* aborts runs in progress, drops their waiters */
void engine_free(struct sim *s);
/* Start-up: create tables, register every node, start what each one is assigned. */
bool engine_boot(struct sim *s, char *err, size_t errlen);
/* A reconcile call passed the rate limit and the header check: rq is parked; the rest (first
 * user, assignments, the run) happens off this thread and answers rq. */
void engine_submit_call(struct sim *s, struct node *n, struct req *rq);
/* /_sim/restart: what a process restart does to this node; answers rq when done. */
void engine_submit_restart(struct sim *s, struct node *n, struct req *rq);
/* Called with model_lock held: recompute the node's next cron check (after a skew change). */
void engine_reschedule_cron_locked(struct sim *s, struct node *n, int64_t now_real);
void engine_wake_locked(struct sim *s);
/* Appends a finished run to the node's history (model_lock held). */
void engine_record_locked(struct node *n, const struct run_rec *rec);

/* ---- ws.c ---- */
enum MHD_Result serve_ws(struct sim *s, struct node *n, struct MHD_Connection *c);

#endif
