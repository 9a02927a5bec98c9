/* nginx_render.h — turns the include template and the node list into the bytes of the nginx
 * include.  Pure: no I/O, no clock, no globals; the same inputs always give the same bytes (so
 * the feed can skip unchanged files).
 *
 * Template syntax (a small, strict subset of mustache):
 *   {{name}}                  inserts a value
 *   {{#list}} ... {{/list}}   repeats the block for every node of the list
 *   {{^list}} ... {{/list}}   renders the block once when the list is empty
 *   {{#fallback}} ... {{/fallback}}, {{^fallback}} ... {{/fallback}}
 *                             renders the block when no node is routable (or when one is)
 *   {{! comment }}            dropped (a comment must not contain two closing braces)
 * A section or comment tag alone on its line removes that whole line, so templates stay
 * readable without leaving blank lines in the output.
 *
 * Lists (every node in them passed hostcheck_valid and hostcheck_node_id_valid, sorted by id):
 *   nodes     every known valid node (one `upstream kuma_node_<id>` each)
 *   routable  valid nodes whose state is routable (online, suspect, draining)
 *   cluster   what `upstream kuma_cluster` holds: `routable`, or when that is empty every valid
 *             node not in maintenance (fallback: nginx keeps trying them)
 * Values: inside a list `id`, `host` and `map_key` (the id as a `map` key: escaped, or for an
 * id longer than NGINX_MAP_KEY_MAX an anchored case-insensitive pattern, since nginx's default
 * map_hash_bucket_size cannot hold it);
 * anywhere `cluster_count`, `routable_count`,
 * `node_count`, `rejected_count`.
 * Unknown names, unbalanced sections, a list nested in a list, or `id`/`host` outside a list are
 * template errors.
 *
 * Nodes whose host or id is invalid, whose host_valid flag is false, or whose id equals another
 * node's id ignoring case (nginx compares upstream names and map keys without case) are left out
 * and counted; no byte of a node field reaches the output without being validated here. */
#ifndef KG_NGINX_RENDER_H
#define KG_NGINX_RENDER_H

#include <stdbool.h>
#include <stddef.h>

#include "snapshot.h"

#define NGINX_TEMPLATE_MAX (64 * 1024)
/* The longest id written as a plain `map` key; longer ones become patterns (see map_key). */
#define NGINX_MAP_KEY_MAX 46

typedef struct {
    int cluster_nodes;   /* servers in upstream kuma_cluster */
    int routable_nodes;
    int known_nodes;     /* valid nodes (per-node upstreams) */
    int rejected_nodes;  /* left out: invalid host/id or duplicate id */
    bool fallback_all;   /* no node routable: kuma_cluster lists every valid node */
    char rejected[200];  /* first rejections as "id: reason; ..." (printable ASCII only) */
} nginx_render_info;

/* Checks the template syntax.  false + message (with line number) in err when broken. */
bool nginx_render_check(const char *tmpl, size_t tmpl_len, char *err, size_t errlen);

/* Renders tmpl[0..tmpl_len) for nodes[0..n).  On success returns 0, *out is a malloc'd
 * NUL-terminated buffer of *out_len bytes (caller frees) and info is filled.  On a template
 * error or out of memory returns -1 with a message in err and *out = NULL. */
int nginx_render(const char *tmpl, size_t tmpl_len, const kg_node_view *nodes, int n,
                 char **out, size_t *out_len, nginx_render_info *info, char *err, size_t errlen);

#endif
