/* api_json.h — the JSON documents of the HTTP API, built from a snapshot (json-c).
 *
 * Pure: a snapshot (and the configuration, for the settings some documents echo) goes in, a
 * json_object comes out; no I/O, no clock except where a `now_ms` argument is passed, so the
 * documents are testable without a server (tests/unit/test_api_json.c).  Every time is an
 * ISO-8601 UTC string with milliseconds ("2026-11-26T14:00:00.123Z") or null when unknown;
 * every count and duration is a JSON number.  The caller owns (json_object_put) the result.
 * Owns: document shapes (docs/API.md describes them).  Must not: read anything but its
 * arguments. */
#ifndef KG_API_JSON_H
#define KG_API_JSON_H

#include <json-c/json.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "snapshot.h"
#include "webhook.h"

/* Formats ms since the epoch as "YYYY-MM-DDThh:mm:ss.mmmZ".  buf needs 25 bytes; returns buf,
 * or "" for ms <= 0. */
const char *api_format_time(int64_t ms, char *buf, size_t len);

/* Serialises compactly into a malloc'd NUL-terminated string; *len gets its length.  NULL on
 * allocation failure.  Does not consume o. */
char *api_json_dump(json_object *o, size_t *len);

json_object *api_doc_error(const char *error, const char *detail);

/* Overall cluster verdict: "healthy" (every node outside maintenance is online, database up,
 * no panic), "critical" (no routable node, or panic guard engaged), else "degraded". */
const char *api_cluster_status(const kg_snapshot *s);

/* One node, every field (the element of /api/node-status "nodes"). */
json_object *api_json_node(const kg_node_view *n, int default_limit);
/* One node's capacity (the element of /lb/capacity and system-status "capacity" "nodes"). */
json_object *api_json_capacity_node(const kg_node_view *n, int default_limit);

/* The per-node arrays of the two big documents as ready JSON text ("[...]": the elements
 * above, in snapshot order).  api_cache.c renders them from per-node pieces it keeps between
 * snapshots; a NULL member is rendered here.  The text is borrowed: it must outlive the
 * serialisation of the document built with it. */
typedef struct {
    const char *nodes;
    size_t nodes_len;
    const char *capacity_nodes;
    size_t capacity_len;
} api_prerendered;
/* One history event. */
json_object *api_json_event(const kg_event *e);

/* The documents.  `cfg` may be NULL (settings are then left out); `s` must not be NULL except
 * for api_doc_health. */
json_object *api_doc_health(const kg_snapshot *s, int64_t now_ms, int *http_status);
json_object *api_doc_system_status(const kg_snapshot *s, const kg_config *cfg);
json_object *api_doc_node_status(const kg_snapshot *s);
/* The same two documents with their per-node arrays given (pre may be NULL). */
json_object *api_doc_system_status_pre(const kg_snapshot *s, const kg_config *cfg,
                                       const api_prerendered *pre);
json_object *api_doc_node_status_pre(const kg_snapshot *s, const api_prerendered *pre);
json_object *api_doc_load_balancer_status(const kg_snapshot *s);
json_object *api_doc_health_check_status(const kg_snapshot *s, const kg_config *cfg);
json_object *api_doc_fault_detection_status(const kg_snapshot *s, const kg_config *cfg);
json_object *api_doc_rebalancing_status(const kg_snapshot *s, const kg_config *cfg);
json_object *api_doc_health_status(const kg_snapshot *s);
json_object *api_doc_lb_health(const kg_snapshot *s, int *http_status);
json_object *api_doc_capacity(const kg_snapshot *s);
json_object *api_doc_available_nodes(const kg_snapshot *s);
/* `cookie` is the raw KUMA_FIXED_NODE cookie value or NULL. */
json_object *api_doc_fixed_node_status(const kg_snapshot *s, const char *cookie);
/* Page of history, newest first; `limit` is the page size asked for (for next_before). */
json_object *api_doc_history(const kg_event *ev, int n, int limit);
/* Lines from the in-memory log ring. */
json_object *api_doc_logs(char **lines, int n);

/* A database error in general terms for public documents ("load nodes: cannot connect to the
 * database server"): never the host, port, database name or user that the driver's text
 * carries.  Returns out ("" for no error). */
const char *api_db_error_public(const char *raw, char *out, size_t len);
/* Adds to doc's "database" object what only the API token holder sees: the raw error
 * (error_detail) and the configured host, port or socket, database name and user. */
void api_json_add_db_detail(json_object *doc, const kg_snapshot *s, const kg_config *cfg);
/* /lb/ping (no snapshot needed); /api/setup-status (first-run setup routing);
 * /api/webhook-status (the webhook sinks, URLs as scheme://host only). */
json_object *api_doc_ping(int64_t now_ms);
json_object *api_doc_setup_status(const kg_snapshot *s);
json_object *api_doc_webhook_status(const webhook_sink_status *st, int n);

/* Why a node cannot be a fixed-node target: NULL when it can (exists, routable, valid host),
 * else a short reason; *http_status gets 404 (unknown) or 409 (not routable). */
const char *api_fixed_node_refusal(const kg_snapshot *s, const char *node, int *http_status);

#endif
