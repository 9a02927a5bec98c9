/* reconcile.h — the reconcile applier: a thread that calls Kuma nodes'
 * POST <host><KUMA_RECONCILE_PATH> (the cluster API key as Authorization) so they re-read their
 * monitor assignments now instead of at their next :00 cron.
 *
 * The controller decides when a node may be called (reconcile_sched.h: never two calls to one
 * node at once, never across the node's cron) and hands each call over here with its deadline;
 * calls to different nodes run concurrently (libcurl multi), so a slow or hung node delays
 * nobody.  Each outcome is posted back as MSG_RECONCILE_DONE (node, rsched_result in `status`,
 * HTTP status, error text).
 *
 * Owns: the thread, its curl handles and the queue of calls to start.  Must not: choose which
 * node to call or when, retry, or log the API key. */
#ifndef KG_RECONCILE_H
#define KG_RECONCILE_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "reconcile_sched.h"

int reconcile_worker_start(const kg_config *cfg, char *err, size_t errlen);
/* Queues a call to `node` at `host` that gives up after deadline_ms.  -1 when the worker is
 * stopped or out of memory (the caller reports the call as failed). */
int reconcile_worker_call(const char *node, const char *host, int64_t deadline_ms);
/* Abandons calls in flight (their nodes may still run them) and stops the thread. */
void reconcile_worker_stop(void);

/* Classifies a finished call (pure, for tests): curl_code is a CURLcode. */
rsched_result reconcile_classify(int curl_code, long http_status);

#endif
