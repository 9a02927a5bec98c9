/* api_metrics.h — snapshot -> Prometheus text exposition format (version 0.0.4) for /metrics.
 *
 * Pure: no I/O, no clock.  Every family has HELP and TYPE lines, the `kumaguard_` prefix,
 * `_total` on counters and base units (`_seconds`).  Owns: metric names (docs/API.md lists
 * them).  Must not: read anything but its arguments. */
#ifndef KG_API_METRICS_H
#define KG_API_METRICS_H

#include <stddef.h>

#include "snapshot.h"
#include "webhook.h"

#define API_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* Malloc'd NUL-terminated text; *len gets its length.  NULL on allocation failure. */
char *api_metrics_render(const kg_snapshot *s, size_t *len);
/* Appends the webhook families (per sink: deliveries, failures, retries, given up, dropped,
 * queue length) to a rendered text; returns the (possibly moved) text, or NULL when out of
 * memory (text is then freed).  n = 0 appends nothing. */
char *api_metrics_append_webhooks(char *text, size_t *len, const webhook_sink_status *st, int n);

#endif
