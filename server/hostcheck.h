/* hostcheck.h — validation of node host values ("host:port") before they reach nginx or curl.
 * A host is a DNS hostname (letters, digits, '-', '.', '_'), an IPv4 literal or a bracketed
 * IPv6 literal, followed by ':' and a port 1..65535.  Nothing else: no spaces, ';', '{', quotes,
 * newlines, paths or userinfo, so a node row can never inject nginx configuration.
 *
 * Owns: pure string checks.  Must not: resolve names or allocate. */
#ifndef KG_HOSTCHECK_H
#define KG_HOSTCHECK_H

#include <stdbool.h>
#include <stddef.h>

/* true when valid; otherwise false and a short reason in err. */
bool hostcheck_valid(const char *hostport, char *err, size_t errlen);
/* Node ids used in names (upstream kuma_node_<id>, cookie values): [A-Za-z0-9_.-]{1,50}. */
bool hostcheck_node_id_valid(const char *id);
/* The same for the first len bytes of id (a path segment, a column): the one node-id rule,
 * used by every module that takes an id from outside. */
bool hostcheck_node_id_valid_n(const char *id, size_t len);

#endif
