/* types.h — the plain data types every module shares (node states, names, limits).
 *
 * Owns: enums and fixed-size identifiers.  Must not: declare functions with side effects or
 * include library headers; anything here is cheap to include from pure decision code. */
#ifndef KG_TYPES_H
#define KG_TYPES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KG_NODE_ID_MAX 50    /* node.node_id VARCHAR(50) */
#define KG_NODE_NAME_MAX 100 /* node.node_name VARCHAR(100) */
#define KG_HOST_MAX 255      /* generous; validated by hostcheck before use */
#define KG_REASON_MAX 128

/* Node states (health.h has the machine).  Persisted in node.status as the lower-case name,
 * except SUSPECT which is persisted as "online" (a suspect node is still routed). */
typedef enum {
    NODE_UNKNOWN = 0, /* never probed yet since kumaguard started */
    NODE_ONLINE,
    NODE_SUSPECT,     /* failing, fewer than `fall` consecutive failures; still routed */
    NODE_OFFLINE,
    NODE_RECOVERING,  /* passing, fewer than `rise` consecutive successes; not routed */
    NODE_DRAINING,    /* operator: no new work, monitors moved away, still routed */
    NODE_MAINTENANCE, /* operator: out of everything, not probed */
    NODE_STATE_COUNT
} node_state;

const char *node_state_name(node_state s);
/* Parses a node.status value; unknown strings give NODE_UNKNOWN. */
node_state node_state_parse(const char *s);
/* Which value goes into node.status for a state. */
const char *node_state_db_value(node_state s);
/* nginx routes to it (online, suspect, draining). */
bool node_state_routable(node_state s);
/* New monitors may be placed on it (online, suspect). */
bool node_state_placeable(node_state s);

/* Outcome of one health probe, as reported by probe.c and consumed by health.c. */
typedef enum {
    PROBE_OK = 0,
    PROBE_CONNECT_FAILED, /* refused, unreachable, DNS */
    PROBE_TIMEOUT,
    PROBE_BAD_STATUS,     /* HTTP status not the expected one (e.g. 503) */
    PROBE_BAD_BODY,       /* JSON with status != "healthy" */
    PROBE_ERROR           /* anything else curl reports */
} probe_outcome;

const char *probe_outcome_name(probe_outcome o);

typedef struct {
    probe_outcome outcome;
    int http_status;       /* 0 when no response */
    double latency_ms;     /* total time of the request */
    char reason[KG_REASON_MAX]; /* human text: "connection refused", "HTTP 503", ... */
} probe_result;

/* ------------------------------------------------------------------------------------------
 * Views: what the controller publishes about nodes, events and its own operations (carried by
 * snapshot.h, rendered by api_json.c and nginx_render.c, stored by events.c and the stores).
 * ------------------------------------------------------------------------------------------ */

#define KG_LATENCY_HISTORY 32 /* recent probe latencies per node, for the dashboard chart */
#define KG_RECENT_EVENTS 200  /* events carried in each snapshot (for SSE and the dashboard) */

/* Reconcile calls to one node (reconcile_sched.h), as shown on /api/node-status. */
typedef struct {
    int pending_starts;        /* monitors the node has not been seen starting */
    int pending_stops;
    bool in_flight;
    bool must_tell;            /* came back after failing: told before it is routed */
    const char *last_result;   /* static text: "none", "ok", "timeout", "rate_limited" ... */
    int last_http;
    int64_t last_call_ms;      /* wall clock of the last finished call; 0 = never */
    int64_t call_started_ms;   /* wall clock of the call in flight; 0 = none */
    int64_t last_duration_ms;
    int64_t next_cron_ms;      /* wall clock of the node's next :00 */
    const char *waiting;       /* static text: why pending work waits, NULL when idle */
    int64_t calls, failures, timeouts, rate_limited, unauthorized, left_to_cron;
} kg_reconcile_view;

typedef struct {
    char id[KG_NODE_ID_MAX + 1];
    char name[KG_NODE_NAME_MAX + 1];
    char host[KG_HOST_MAX + 1];
    bool host_valid;           /* passed hostcheck; invalid hosts are never routed */
    char host_problem[KG_REASON_MAX]; /* why the host is not usable, with the fix ("" = fine) */
    bool proven;               /* passed `rise` probes of ours since kumaguard started */
    bool fast_probe;           /* probe at the fast interval (health_in_transition) */
    bool is_primary;
    bool is_static;            /* came from KUMAGUARD_NODES */
    node_state state;
    node_state prev_state;
    int64_t state_since_ms;    /* wall clock, ms since epoch */
    int consecutive_failures;
    int consecutive_successes;
    double last_latency_ms;    /* -1 when never probed */
    double latency_history[KG_LATENCY_HISTORY]; /* oldest first; -1 = failed probe */
    int n_latency;
    char last_failure_reason[KG_REASON_MAX];
    int64_t last_failure_ms;   /* 0 = never */
    int64_t last_seen_ms;      /* last successful probe; 0 = never */
    int64_t last_probe_ms;
    int64_t probes_total;
    int64_t probes_failed;
    int http_status;
    int effective_monitors;    /* active monitors whose COALESCE(assigned_node,node_id) is this node */
    int home_monitors;         /* active monitors whose node_id is this node */
    int pinned_monitors;       /* active monitors pinned here by an operator */
    int monitor_limit;
    kg_reconcile_view reconcile;
} kg_node_view;

typedef enum {
    EV_STATE_CHANGE = 0,
    EV_FAILOVER,
    EV_REVERT,
    EV_REBALANCE,
    EV_FORCE_REBALANCE,
    EV_ADOPTION,
    EV_CAPACITY_WARNING,
    EV_PANIC,
    EV_NGINX_RELOAD,
    EV_NGINX_FAILED,
    EV_LEADER,
    EV_DB,
    EV_OPERATOR,     /* drain / maintenance / enable / manual trigger */
    EV_MONITOR,      /* an operator moved, pinned or unpinned monitors (monitor_ops.c) */
    EV_SETUP,        /* first-run setup: pending on the primary, or complete (setup_watch.c) */
    EV_RECONCILE_FAILED, /* a reconcile call refused or timed out (cause and fix in reason) */
    EV_HISTORY,      /* the local history cannot be written (or works again) */
    EV_KIND_COUNT
} kg_event_kind;

const char *event_kind_name(kg_event_kind k);
int event_kind_parse(const char *s); /* -1 when unknown */

typedef struct {
    int64_t id;               /* monotonically increasing within this process */
    int64_t ts_ms;            /* wall clock, ms since epoch (UTC) */
    kg_event_kind kind;
    char node[KG_NODE_ID_MAX + 1];      /* main node concerned, "" if none */
    char from[KG_NODE_ID_MAX + 1];      /* for moves/state changes: from node or old state */
    char to[KG_NODE_ID_MAX + 1];        /* to node (or "several") or new state */
    int count;                /* monitors concerned */
    int64_t duration_ms;
    char reason[192];
} kg_event;

typedef struct {
    bool running;
    char operation[32];       /* "failover", "revert", "rebalance", "force-rebalance", "" */
    char phase[32];           /* "planning", "applying", "done", "cancelled", "failed" */
    int moved;
    int total;
    int64_t started_ms;
    int64_t eta_ms;           /* estimated end (wall clock), 0 = unknown */
    int64_t finished_ms;
    char last_error[160];
} kg_rebalance_view;

typedef struct {
    bool enabled;
    int64_t reloads_ok;
    int64_t reloads_failed;
    int64_t renders;
    int64_t writes_skipped_unchanged;
    int64_t last_reload_ms;
    double last_reload_duration_ms;
    bool last_ok;
    char last_error[256];
    char include_path[256];
    int routed_nodes;         /* nodes in upstream kuma_cluster */
    bool fallback_all;        /* no node online: upstream holds every known node */
    int rejected_nodes;       /* nodes left out of the include: invalid host/id, duplicate id */
} kg_nginx_view;

#endif
