/* nginx_worker.h — runs the nginx feed on a thread of its own, so that a slow `nginx -t` or
 * reload (a hostname that resolves slowly, a busy systemctl) never delays probing or
 * failover in the controller.
 *
 * The controller submits the latest node list (latest wins: a burst becomes one render);
 * the worker renders, writes, validates, reloads and coalesces exactly as nginx_feed.c does,
 * and reports each attempt back through the mailbox (MSG_NGINX_OUTCOME) so the controller
 * records it as an event.  Owns: the thread and the kg_nginx_feed.  Must not: decide
 * anything about nodes. */
#ifndef KG_NGINX_WORKER_H
#define KG_NGINX_WORKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "nginx_feed.h"
#include "snapshot.h"

/* Takes ownership of feed (freed by nginx_worker_stop, or here on error). */
int nginx_worker_start(kg_nginx_feed *feed, char *err, size_t errlen);
/* Copies nodes[0..n) as the latest wish and wakes the worker, unless the list says what the
 * last one submitted said as far as the include goes (ids, hosts, states, host validity,
 * freeze): then nothing happens.  Controller thread (one submitting thread). */
void nginx_worker_submit(const kg_node_view *nodes, int n, bool freeze);
/* The feed's status as of its last step (any thread). */
void nginx_worker_status(kg_nginx_view *out);
void nginx_worker_stop(void);

#endif
