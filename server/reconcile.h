/* reconcile.h — tells Kuma nodes to re-read their monitor assignments now
 * (POST <host><KUMA_RECONCILE_PATH> with the cluster API key as Authorization), concurrently.
 *
 * Owns: its curl handles for the call.  Must not: decide which nodes need it, or fail the
 * caller: errors are reported per target for retry. */
#ifndef KG_RECONCILE_H
#define KG_RECONCILE_H

#include <stdbool.h>

#include "types.h"

typedef struct {
    char node[KG_NODE_ID_MAX + 1];
    char host[KG_HOST_MAX + 1];
    bool ok;                 /* out */
    char error[96];          /* out */
} reconcile_target;

/* Returns the number of targets that answered 2xx. */
int reconcile_nudge(reconcile_target *t, int n, const char *api_key, const char *path,
                    int timeout_ms);

#endif
