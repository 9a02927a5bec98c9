/* api_respond.h — what the files of the HTTP server (api.c, api_fixed_node.c, api_monitors.c,
 * api_sse.c) use to answer: common headers, JSON bodies and errors, the peer's address.  It
 * depends on nothing of theirs, so none of them depends on another through it.
 *
 * Owns: nothing.  Must not: be included by pure code (it pulls in microhttpd.h). */
#ifndef KG_API_RESPOND_H
#define KG_API_RESPOND_H

#include <netinet/in.h>
#include <arpa/inet.h>
#include <sys/socket.h>
#include <json-c/json.h>
#include <microhttpd.h>
#include <stdbool.h>
#include <stddef.h>

#define API_BODY_MAX (64 * 1024)            /* larger request bodies get 413 */

/* Headers every kumaguard response carries. */
void api_add_common_headers(struct MHD_Response *resp);
/* Queues body (malloc'd, consumed) with its content type; set_cookie and allow may be NULL. */
enum MHD_Result api_queue_buffer(struct MHD_Connection *c, unsigned status, char *body,
                                 size_t len, const char *ctype, const char *set_cookie,
                                 const char *allow);
/* Queues `o` (consumed) as application/json; set_cookie and allow may be NULL. */
enum MHD_Result api_queue_json_ex(struct MHD_Connection *c, unsigned status, json_object *o,
                                  const char *set_cookie, const char *allow);
enum MHD_Result api_queue_json(struct MHD_Connection *c, unsigned status, json_object *o,
                               const char *set_cookie);
/* {"error": error, "detail": detail}, both made valid UTF-8 whatever the client sent. */
enum MHD_Result api_queue_error(struct MHD_Connection *c, unsigned status, const char *error,
                                const char *detail);
/* The peer's socket address (NULL when unknown), and as text (the actor of an action). */
const struct sockaddr *api_peer_addr(struct MHD_Connection *c);
void api_peer_string(struct MHD_Connection *c, char *out, size_t len);

#endif
