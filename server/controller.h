/* controller.h — the controller thread: the only owner of mutable cluster state.
 *
 * It consumes the mailbox (probe results, actions), runs node health (health.c), decides moves
 * (assign.c), applies them through the store, nudges Kuma nodes (reconcile.c), records events,
 * feeds nginx and publishes snapshots.  Must not: block on HTTP clients or probe nodes itself. */
#ifndef KG_CONTROLLER_H
#define KG_CONTROLLER_H

#include <stddef.h>

#include "config.h"

/* Opens the store and state cache and starts the thread.  Returns 0 or -1 with err. */
int controller_start(const kg_config *cfg, char *err, size_t errlen);
/* Asks the thread to finish its current step, joins it, closes everything. */
void controller_stop(void);

#endif
