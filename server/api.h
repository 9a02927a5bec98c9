/* api.h — the HTTP server (libmicrohttpd): REST API, /metrics, SSE and the dashboard.
 *
 * Reads come from the current snapshot (no database query per request); actions are posted to
 * the controller through the mailbox and answered with its reply.  Owns: the MHD daemon and
 * request routing.  Must not: change cluster state itself. */
#ifndef KG_API_H
#define KG_API_H

#include <stddef.h>

#include "config.h"

typedef struct kg_api kg_api;

/* cfg is kept by reference: it must stay valid until api_stop(). */
kg_api *api_start(const kg_config *cfg, char *err, size_t errlen);
void api_stop(kg_api *a);
/* The TCP port actually bound (useful with a listen port of 0, as the tests use). */
int api_bound_port(const kg_api *a);

#endif
