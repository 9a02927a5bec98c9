/* api_route.h — the pure half of the HTTP API: which handler a (method, path) pair reaches and
 * how request inputs (JSON bodies, query parameters, tokens, static paths) are parsed.
 *
 * Everything here is a plain function of its arguments — no sockets, no snapshot, no globals —
 * so the fuzzer (tests/fuzz/fuzz_api_router.c) and the unit tests can drive it directly.
 * Owns: the route table.  Must not: allocate beyond what a function documents, or log. */
#ifndef KG_API_ROUTE_H
#define KG_API_ROUTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "events.h"
#include "monitor_ops.h"
#include "types.h"

typedef enum {
    API_R_NONE = 0,
    /* reads */
    API_R_HEALTH,
    API_R_SYSTEM_STATUS,
    API_R_NODE_STATUS,
    API_R_LB_STATUS,
    API_R_HEALTH_CHECK_STATUS,
    API_R_FAULT_STATUS,
    API_R_REBALANCING_STATUS,
    API_R_HEALTH_STATUS,
    API_R_LB_HEALTH,
    API_R_CAPACITY,
    API_R_PING,
    API_R_AVAILABLE_NODES,
    API_R_FIXED_NODE_STATUS,
    API_R_FAILOVER_HISTORY,
    API_R_METRICS,
    API_R_EVENTS,
    API_R_DEBUG_CONFIG,
    API_R_DEBUG_LOGS,
    /* actions (POST, authenticated) */
    API_R_UPDATE_LOADS,
    API_R_TRIGGER_HEALTH_CHECK,
    API_R_TRIGGER_REBALANCING,
    API_R_FORCE_REBALANCE_ALL,
    API_R_CANCEL_REBALANCING,
    API_R_NODE_DRAIN,
    API_R_NODE_MAINTENANCE,
    API_R_NODE_ENABLE,
    API_R_PANIC_OVERRIDE,   /* allow failover while the panic guard holds (confirmed) */
    /* the browser's own routing preference (no token) */
    API_R_SET_FIXED_NODE,
    API_R_CLEAR_FIXED_NODE,
    API_R_FIXED_NODE_PAGE,
    /* dashboard */
    API_R_INDEX,
    API_R_STATIC,
    /* first-run setup, per-monitor operations, webhooks */
    API_R_SETUP_STATUS,      /* GET /api/setup-status (/lb/setup-status) */
    API_R_MONITORS,          /* GET /api/monitors */
    API_R_MONITOR_MOVE,      /* POST /api/monitors/<id>/move, batch: /api/monitors/move */
    API_R_MONITOR_PIN,
    API_R_MONITOR_UNPIN,
    API_R_WEBHOOK_STATUS,    /* GET /api/webhook-status */
    API_R_COUNT
} api_route_id;

/* Method bits, for matching and for the Allow header. */
enum {
    API_M_GET = 1,
    API_M_HEAD = 2,
    API_M_POST = 4,
    API_M_OTHER = 8, /* OPTIONS, PUT, DELETE, ... never allowed anywhere */
};

#define API_STATIC_PATH_MAX 255

typedef struct {
    api_route_id id;        /* API_R_NONE when status is 404 */
    int status;             /* 0 = dispatch to id; 404 unknown path; 405 wrong method;
                             * 400 malformed node id in the path */
    unsigned allowed;       /* API_M_* bits the route accepts (for Allow on 405) */
    bool needs_auth;        /* actions and debug-logs: bearer token or loopback */
    char node[KG_NODE_ID_MAX + 1];          /* /api/nodes/<id>/..., /lb/fixed-node/<id> */
    char static_rel[API_STATIC_PATH_MAX + 1]; /* /static/<rel>: validated relative path */
    int64_t monitor_id;     /* /api/monitors/<id>/<op>; 0 = the batch form */
} api_match;

/* Maps the request method and the decoded path (no query string) to a route.  Paths of the
 * /api/ namespace also answer under /lb/ (the Lua version's prefix). */
void api_route_match(const char *method, const char *path, api_match *m);
unsigned api_method_bit(const char *method);
/* "GET, HEAD" etc. for an Allow header. */
const char *api_allow_header(unsigned allowed, char *buf, size_t len);
/* Name of a route for logs and the action replies ("trigger-rebalancing"). */
const char *api_route_name(api_route_id id);
bool api_route_is_action(api_route_id id);

/* Relative path below /static/: 1..API_STATIC_PATH_MAX chars, segments separated by single
 * '/', each non-empty, not starting with '.', made of [A-Za-z0-9_.~+@-].  Rejects traversal,
 * hidden files, backslashes, percent signs and control characters. */
bool api_static_path_ok(const char *rel);
/* MIME type by file extension (case-insensitive); application/octet-stream when unknown. */
const char *api_content_type_for(const char *path);

/* Body of POST /lb/set-fixed-node: exactly a JSON object with a string "node" that is a valid
 * node id (other members are ignored).  Returns 0, or -1 with a short reason in err. */
int api_parse_fixed_node_body(const char *body, size_t len, char *node, size_t nodelen,
                              char *err, size_t errlen);
/* Body of POST /api/force-rebalance-all: true only for a JSON object whose "confirm" member is
 * the string `expected`. */
bool api_parse_confirm_body(const char *body, size_t len, const char *expected);
/* "application/json" with optional parameters ("; charset=utf-8"), case-insensitive. */
bool api_content_type_is_json(const char *value);

/* Times in query strings: milliseconds since the epoch, or ISO-8601 UTC
 * ("2026-11-26T14:00:00Z", optional ".123" fraction, "Z" or "+hh:mm"/"-hh:mm").  0 or -1. */
int api_parse_time_ms(const char *s, int64_t *out);
/* Strict decimal integer in [min, max].  0 or -1. */
int api_parse_int64(const char *s, int64_t min, int64_t max, int64_t *out);

/* Raw query parameters of GET /api/failover-history (each NULL when absent). */
typedef struct {
    const char *node, *kind, *since, *until, *limit, *before;
} api_history_params;

#define API_HISTORY_DEFAULT_LIMIT 100
#define API_HISTORY_MAX_LIMIT 1000

/* Validates and converts; q->node points at node_buf.  0, or -1 with a message in err. */
int api_parse_history_params(const api_history_params *p, events_query *q,
                             char node_buf[KG_NODE_ID_MAX + 1], char *err, size_t errlen);

/* Authorization header check against the configured token, in time independent of where the
 * two differ.  Returns 0 = match, 1 = missing or not a Bearer credential, 2 = wrong token. */
int api_bearer_check(const char *authorization, const char *token);

/* Whether an Accept-Encoding header value accepts gzip: "gzip" or "x-gzip" (any case) not
 * refused with q=0, or else "*" not refused.  NULL or "" = no. */
bool api_accepts_gzip(const char *accept_encoding);

/* HTML-escapes s (& < > " ') into out.  Returns the length, or -1 when out is too small. */
int api_html_escape(const char *s, char *out, size_t outlen);

/* ---- per-monitor operations ------------------------------------------------------------- */

/* The operation a monitor route stands for (MONITOR_OP_MOVE ...), -1 for other routes. */
int api_monitor_op_kind(api_route_id id);

/* Body of POST /api/monitors/<id>/<op> (path_id > 0; no "ids"; unpin may be empty) or of the
 * batch form POST /api/monitors/<op> (path_id == 0; "ids": 1..MONITOR_OPS_MAX_BATCH positive
 * integers, duplicates merged).  move and pin need "node" (a node id); move takes an optional
 * boolean "revert" (default false).  Other members are ignored.  0, or -1 with a message in
 * err. */
int api_parse_monitor_op(monitor_op_kind kind, int64_t path_id, const char *body, size_t len,
                         monitor_op_request *out, char *err, size_t errlen);

/* Raw query parameters of GET /api/monitors (each NULL when absent). */
typedef struct {
    const char *node, *home, *state, *pinned, *override, *q, *limit, *after, *total;
} api_monitors_params;

#define API_MONITORS_DEFAULT_LIMIT 50
#define API_MONITORS_MAX_LIMIT 500
#define API_MONITORS_SEARCH_MAX 100

/* The validated filters.  override: 0 any, 1 none, 2 kumaguard's, 3 pinned, 4 not pinned (the
 * values of store_override_filter); live: -1 any, 1 the effective node is live, 0 it is set
 * and not live; active: -1 any, 0, 1. */
typedef struct {
    char node[KG_NODE_ID_MAX + 1];   /* "" = any */
    char home[KG_NODE_ID_MAX + 1];
    char search[API_MONITORS_SEARCH_MAX + 1];
    int active;
    int override;
    int live;
    bool unassigned;
    int64_t after;
    int limit;
    bool total;
} api_monitors_filter;

/* state = any | active | inactive | running | stranded | unassigned; pinned = true | false;
 * override = any | none | ours | pin; q = up to 100 printable characters; limit 1..500
 * (default 50); after = a monitor id (keyset paging); total = true | false (default true).
 * 0, or -1 with a message in err. */
int api_parse_monitors_params(const api_monitors_params *p, api_monitors_filter *f, char *err,
                              size_t errlen);

#endif
