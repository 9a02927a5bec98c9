/* events.h — the persistent event history in the local state cache (<state dir>/state.db,
 * SQLite).  The controller submits events; a writer thread of this module puts them on disk,
 * so a slow or failing disk never delays a decision; HTTP threads query the paged history.
 * (The leader also writes the same events to kumaguard_event in the cluster store, through
 * the database applier.)
 *
 * Owns: state.db and the writer thread.  Queries open their own read-only connection per
 * call.  Must not: touch the cluster store, or make a caller wait for the disk (except
 * events_flush / events_append, which exist to wait). */
#ifndef KG_EVENTS_H
#define KG_EVENTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "types.h"

/* Opens (creating) <state_dir>/state.db and starts the history writer thread. */
int events_open(const char *state_dir, char *err, size_t errlen);
/* Writes out what is queued, stops the writer, closes. */
void events_close(void);
/* Assigns ev->id if it is 0 and queues the event for the writer; never waits for the disk.
 * -1 when history is not open or the queue overflowed (an older event was dropped). */
int events_submit(kg_event *ev);
/* Waits up to timeout_ms until everything queued is written (or failed). */
bool events_flush(int timeout_ms);
/* events_submit + events_flush: 0 when the event is on disk (tests, tools). */
int events_append(kg_event *ev);
/* Asks the writer to delete local history older than before_ms. */
void events_prune(int64_t before_ms);

/* How the local history is doing: a failing disk (full, read-only) must be visible. */
typedef struct {
    bool ok;                  /* the last write succeeded */
    int64_t written;          /* events written since open */
    int64_t failures;         /* failed writes and prunes */
    int64_t lost;             /* events that never reached the disk */
    int64_t pruned;
    int queued;
    int64_t last_failure_ms;  /* time of the last event that could not be written */
    char error[160];          /* the last failure */
} events_health_t;
void events_health(events_health_t *out);
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
