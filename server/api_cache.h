/* api_cache.h — the two big status documents (/api/node-status, /api/system-status) rendered
 * once per snapshot and served to every client as one shared MHD response, plain or gzip.
 *
 * With 1,000 nodes each document is about 1.3 MB, and the controller publishes a snapshot for
 * every handful of probe results.  Rendering them from scratch per request (json-c, ~60 us a
 * node) cost 50-100 ms each, so 64 clients polling meant a core rendering the same bytes.
 * Here:
 *   - each node's JSON (its node-status entry and its capacity entry) is kept with the
 *     snapshot it came from, and only nodes whose view changed since are rendered again (a
 *     probe changes one node);
 *   - a document is rendered once per snapshot and its response queued on every connection
 *     that asks under that snapshot or an older one; while one thread renders a newer one, the
 *     others that need it wait for it (never an older document than the snapshot a request
 *     came under: a client that just acted sees its action), nobody renders it twice;
 *   - a client that accepts gzip gets the body compressed once per snapshot (about 8x smaller:
 *     what decides the latency of a 1.3 MB answer to many clients is moving the bytes).
 * The system-status body also lands in the snapshot's cached_json (snapshot.h).
 *
 * Owns: the per-node pieces, the cached responses.  Must not: change the documents' content
 * (api_json.c owns their shape; a cached document is byte-for-byte what api_json.c renders). */
#ifndef KG_API_CACHE_H
#define KG_API_CACHE_H

#include <netinet/in.h>
#include <arpa/inet.h>
#include <microhttpd.h>
#include <stdbool.h>
#include <stddef.h>

#include "config.h"
#include "snapshot.h"

typedef enum { API_DOC_SYSTEM_STATUS = 0, API_DOC_NODE_STATUS, API_DOC_COUNT } api_doc_kind;

typedef struct api_cache api_cache;

/* cfg must outlive the cache. */
api_cache *api_cache_new(const kg_config *cfg);
void api_cache_free(api_cache *c);

/* Queues the document `kind` as of snapshot s (or newer) on connection conn, gzip-encoded
 * when `gzip`.  Adds the common headers, Content-Type, Cache-Control: no-store and Vary:
 * Accept-Encoding.  MHD_NO on allocation failure. */
enum MHD_Result api_cache_queue(api_cache *c, api_doc_kind kind, kg_snapshot *s, bool gzip,
                                struct MHD_Connection *conn);

/* The body of `kind` for snapshot s, uncompressed, malloc'd (the caller frees it); *len gets
 * its length.  Renders through the per-node pieces.  NULL on allocation failure. */
char *api_cache_render(api_cache *c, api_doc_kind kind, kg_snapshot *s, size_t *len);

#endif
