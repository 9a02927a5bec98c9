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

/* Node states (SPEC section 2).  Persisted in node.status as the lower-case name, except
 * SUSPECT which is persisted as "online" (a suspect node is still routed). */
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

#endif
