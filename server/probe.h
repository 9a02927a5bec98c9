/* probe.h — the prober thread: HTTP health checks of every node, concurrently (libcurl multi).
 *
 * It reads the node list from the current snapshot, probes each node on its own schedule
 * (normal interval with jitter; fast interval while the node is in transition or its last
 * probe failed; never while in maintenance), and posts each result to the controller's
 * mailbox.  Owns: curl handles and the per-node schedule.  Must not: decide node state (that is
 * health.c) or touch the store. */
#ifndef KG_PROBE_H
#define KG_PROBE_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"
#include "types.h"

int prober_start(const kg_config *cfg, char *err, size_t errlen);
/* Probe every node now (trigger-health-check). Any thread. */
void prober_trigger_all(void);
/* Probe every node now except `node` (which stays on its own fast schedule, so `fall`
 * failures keep their spacing).  Used to confirm a failure against the other nodes. */
void prober_trigger_others(const char *node);
void prober_stop(void);

/* Pure classification of one finished request (exposed for tests). curl_code is a CURLcode;
 * body may be NULL. */
probe_result probe_classify(int curl_code, long http_status, const char *body, size_t body_len,
                            int expected_status, double latency_ms);

#endif
