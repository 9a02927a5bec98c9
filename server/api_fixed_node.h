/* api_fixed_node.h — the browser's own routing preference (the KUMA_FIXED_NODE cookie the
 * nginx include maps to `upstream kuma_node_<id>`): the handlers api.c routes to.
 *
 * Owns: nothing.  Must not: be included by pure code (it pulls in microhttpd.h). */
#ifndef KG_API_FIXED_NODE_H
#define KG_API_FIXED_NODE_H

#include <stddef.h>

#include "api_respond.h"

#define API_FIXED_NODE_COOKIE "KUMA_FIXED_NODE"
#define API_FIXED_NODE_MAX_AGE 86400        /* seconds */

enum MHD_Result api_fixed_node_set(struct MHD_Connection *c, const char *body, size_t len);
enum MHD_Result api_fixed_node_clear(struct MHD_Connection *c);
enum MHD_Result api_fixed_node_page(struct MHD_Connection *c, const char *node);
enum MHD_Result api_fixed_node_status(struct MHD_Connection *c);

#endif
