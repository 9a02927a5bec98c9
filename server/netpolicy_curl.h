/* netpolicy_curl.h — enforces the node network policy (netpolicy.h) on the connections libcurl
 * makes to nodes: the probes (probe.c) and the reconcile nudge that carries KUMA_API_KEY
 * (reconcile.c).
 *
 * The static verdict on a node's host value cannot judge host names, and a name may resolve
 * elsewhere by the time a probe runs.  So every connection is checked once more on the exact
 * address curl is about to connect to (CURLOPT_OPENSOCKETFUNCTION): a refused address gets no
 * socket, the request fails before a byte is sent, and the guard keeps the reason.
 *
 * The policy is installed once at start-up (main.c), before any thread that connects starts,
 * and never changes afterwards; without one, only the always-refused ranges apply.
 *
 * Owns: the installed policy pointer and the curl callback.  Must not: decide anything itself
 * (netpolicy_addr_allowed does) or log. */
#ifndef KG_NETPOLICY_CURL_H
#define KG_NETPOLICY_CURL_H

#include <curl/curl.h>
#include <stdbool.h>

#include "netpolicy.h"
#include "types.h"

/* Per easy handle: set by the callback when a connection was refused. */
typedef struct {
    bool refused;
    char reason[KG_REASON_MAX];
} netpolicy_guard;

void netpolicy_curl_install(const kg_netpolicy *p);
const kg_netpolicy *netpolicy_curl_policy(void);
/* Resets g and makes every connection of e pass the policy.  Call after curl_easy_reset. */
void netpolicy_curl_guard(CURL *e, netpolicy_guard *g);
/* Adds the addresses the database host name resolves to (DB_HOST given as a name), so a node
 * row naming one of them with the database's port is refused too.  Blocking (getaddrinfo):
 * call once at start-up.  Returns how many were added. */
int netpolicy_resolve_db(kg_netpolicy *p);

#endif
