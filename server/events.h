/* events.h — the persistent event history in the local state cache (<state dir>/state.db,
 * SQLite, WAL).  The controller appends; HTTP threads query it for the paged history API.
 * (The same events are also written to kumaguard_event in the cluster store by the
 * controller, in store.h.)
 *
 * Owns: state.db.  Appends happen on the controller thread; queries open their own read-only
 * connection per call, so no lock is shared with the controller.  Must not: be called with a
 * store connection or block the controller for long (appends are one INSERT). */
#ifndef KG_EVENTS_H
#define KG_EVENTS_H

#include <stddef.h>
#include <stdint.h>

#include "snapshot.h"

int events_open(const char *state_dir, char *err, size_t errlen);
void events_close(void);
/* Appends; assigns ev->id if it is 0. Returns 0 or -1. */
int events_append(kg_event *ev);
/* Deletes local history older than before_ms; returns rows deleted or -1. */
int events_prune(int64_t before_ms);
/* Highest event id stored (so ids keep increasing across restarts). */
int64_t events_last_id(void);
/* Reads up to `limit` most recent events (newest last) into out[] for seeding snapshots. */
int events_load_recent(kg_event *out, int limit);

typedef struct {
    const char *node;    /* NULL = any */
    int kind;            /* -1 = any, else kg_event_kind */
    int64_t since_ms;    /* 0 = no lower bound */
    int64_t until_ms;    /* 0 = no upper bound */
    int64_t before_id;   /* 0 = newest; paging: events with id < before_id */
    int limit;           /* 1..1000 */
} events_query;

/* Any thread.  Fills *out (malloc'd, newest first) and *n; returns 0 or -1. */
int events_query_run(const events_query *q, kg_event **out, int *n, char *err, size_t errlen);

#endif
