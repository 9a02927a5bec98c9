/* api_sse.h — the /api/events Server-Sent Events stream.
 *
 * One hub thread waits for new snapshots (snapshot_wait_newer) and appends, to every open
 * stream, the events it has not seen yet (by event id, from the snapshot's recent_events) plus
 * a short `snapshot` notice; every 15 s of silence it sends a comment line as a heartbeat.
 * The streams are MHD content-reader responses on the normal thread pool: a reader with
 * nothing to send suspends its connection and the hub resumes it when data arrives, so an
 * idle dashboard costs no thread and no polling (see docs/API.md, "Live events").
 *
 * Owns: the hub thread, the stream list and each stream's pending bytes.  Must not: block an
 * MHD thread, or call into MHD while holding the stream-list lock (MHD may call our free
 * callback under its own locks). */
#ifndef KG_API_SSE_H
#define KG_API_SSE_H

#include <netinet/in.h>
#include <arpa/inet.h>
#include <sys/socket.h>
#include <microhttpd.h>
#include <stddef.h>

#include "api_limits.h"
#include "snapshot.h"

#define API_SSE_MAX_STREAMS 64
#define API_SSE_HEARTBEAT_MS 15000
#define API_SSE_MAX_PENDING (256 * 1024) /* a client this far behind is dropped */

typedef struct api_sse_hub api_sse_hub;

/* At most max_streams streams in all and max_per_client per client (api_limits.h). */
api_sse_hub *api_sse_start(int max_streams, int max_per_client, char *err, size_t errlen);
/* Ends every stream (resuming suspended ones so MHD can close them) and joins the hub thread.
 * Call before MHD_stop_daemon. */
void api_sse_stop(api_sse_hub *h);
/* Frees the hub.  Call after MHD_stop_daemon (streams unlink themselves when MHD frees them). */
void api_sse_free(api_sse_hub *h);

/* A response for a new stream on connection c for `client`, or NULL with *http_status 429
 * (this client has max_per_client streams open), 503 (all streams taken, stopping) or 500.
 * `last_event_id` is the Last-Event-ID header (may be NULL): events with a larger id still in
 * the current snapshot are replayed first. */
struct MHD_Response *api_sse_open(api_sse_hub *h, struct MHD_Connection *c,
                                  const api_client_key *client, const char *last_event_id,
                                  int *http_status);

/* The largest frame a stream sends: an event whose every text byte is escaped as \u00XX fits
 * (a test checks it). */
#define API_SSE_FRAME_MAX 4096

/* Pure: one event as an SSE frame ("id: N\ndata: {json}\n\n").  Returns the length, or -1
 * when buf is too small. */
int api_sse_format_event(const kg_event *e, char *buf, size_t len);

#endif
