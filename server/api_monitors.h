/* api_monitors.h — the per-monitor HTTP handlers, kept out of api.c:
 *
 *   GET  /api/monitors                        a page of monitors with where and why they run
 *   POST /api/monitors/<id>/{move,pin,unpin}  per-monitor operations (monitor_ops.h)
 *   POST /api/monitors/{move,pin,unpin}       the batch form ({"ids": [...]})
 *   GET  /api/webhook-status                  the webhook sinks and their counters
 * (each also under /lb/).  The listing reads the database on a store connection of its own
 * (never through the controller, never a copy of every monitor); the operations are cluster
 * writes and go to the controller through the mailbox.  Both run on a short-lived worker
 * thread while the connection is suspended, so a slow database never holds an HTTP thread.
 *
 * Owns: those workers and their per-request state (kept in the request's `ext` slot that
 * api.c frees at completion).  Must not: write to the database itself. */
#ifndef KG_API_MONITORS_H
#define KG_API_MONITORS_H

#include <stddef.h>

#include "api_respond.h"
#include "api_route.h"
#include "config.h"

/* Serves m (one of the routes above).  `ext`/`ext_free` are the request's slot for state that
 * must survive a suspension; api.c calls ext_free(ext) when the request completes. */
enum MHD_Result api_monitors_serve(const kg_config *cfg, struct MHD_Connection *c,
                                   const api_match *m, const char *body, size_t len, void **ext,
                                   void (**ext_free)(void *));
/* api_start: accept work.  api_stop, before MHD_stop_daemon: refuse new work and wait until
 * every worker has resumed its connection. */
void api_monitors_start(void);
void api_monitors_stop(void);
/* /metrics: appends the webhook families to text (see api_metrics_append_webhooks). */
char *api_monitors_metrics(char *text, size_t *len);

#endif
