/* api_internal.h — what the files of the HTTP server (api.c, api_fixed_node.c,
 * api_monitors.c) share: response helpers and the fixed-node handlers.  Not for use outside
 * server/api*.c.
 *
 * Owns: nothing.  Must not: be included by pure code (it pulls in microhttpd.h). */
#ifndef KG_API_INTERNAL_H
#define KG_API_INTERNAL_H

#include <netinet/in.h>
#include <arpa/inet.h>
#include <sys/socket.h>
#include <json-c/json.h>
#include <microhttpd.h>
#include <stdbool.h>
#include <stddef.h>

#define API_BODY_MAX (64 * 1024)            /* larger request bodies get 413 */
#define API_FIXED_NODE_COOKIE "KUMA_FIXED_NODE"
#define API_FIXED_NODE_MAX_AGE 86400        /* seconds */

/* Headers every kumaguard response carries. */
void api_add_common_headers(struct MHD_Response *resp);
/* Queues `o` (consumed) as application/json with `status`; `set_cookie` may be NULL. */
enum MHD_Result api_queue_json(struct MHD_Connection *c, unsigned status, json_object *o,
                               const char *set_cookie);
/* The peer's address as text (the actor of an action). */
void api_peer_string(struct MHD_Connection *c, char *out, size_t len);
/* {"error": error, "detail": detail} */
enum MHD_Result api_queue_error(struct MHD_Connection *c, unsigned status, const char *error,
                                const char *detail);

/* api_fixed_node.c: the browser's own routing preference (the KUMA_FIXED_NODE cookie). */
enum MHD_Result api_fixed_node_set(struct MHD_Connection *c, const char *body, size_t len);
enum MHD_Result api_fixed_node_clear(struct MHD_Connection *c);
enum MHD_Result api_fixed_node_page(struct MHD_Connection *c, const char *node);
enum MHD_Result api_fixed_node_status(struct MHD_Connection *c);

#endif
