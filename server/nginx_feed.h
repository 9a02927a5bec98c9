/* nginx_feed.h — renders the nginx include from the node list and applies it: atomic write,
 * skip when unchanged, validate (NGINX_TEST_CMD), reload (NGINX_RELOAD_CMD), coalesce bursts,
 * roll back to the last good file when validation fails.  Runs on the nginx worker's thread
 * (nginx_worker.h).
 *
 * Owns: the include file, the last-good copy in the state dir, running the commands.
 * Must not: decide node health; the rendering itself is pure (nginx_render.h). */
#ifndef KG_NGINX_FEED_H
#define KG_NGINX_FEED_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "snapshot.h"

typedef struct kg_nginx_feed kg_nginx_feed;

typedef struct {
    bool attempted;          /* a write+validate+reload was tried in this call */
    bool ok;
    double duration_ms;
    char error[256];
} nginx_feed_outcome;

/* NULL and err when the configuration is unusable; returns a feed even when
 * NGINX_INCLUDE_PATH is unset (then every call is a no-op and status.enabled is false). */
kg_nginx_feed *nginx_feed_new(const kg_config *cfg, char *err, size_t errlen);
void nginx_feed_free(kg_nginx_feed *f);
/* Renders from nodes[0..n); when `freeze` (panic guard) keeps the current file.  Writes and
 * reloads now if the bytes changed and the minimum gap has passed, otherwise remembers that a
 * reload is pending. */
void nginx_feed_update(kg_nginx_feed *f, const kg_node_view *nodes, int n, bool freeze,
                       int64_t now_ms, nginx_feed_outcome *out);
/* Wall-clock ms when a pending coalesced reload is due; 0 when nothing is pending.  The
 * controller calls nginx_feed_update again at that time. */
int64_t nginx_feed_due_ms(const kg_nginx_feed *f);
void nginx_feed_status(const kg_nginx_feed *f, kg_nginx_view *out);
/* True when the template file on disk is not the one in use (edited, replaced or gone): the
 * next nginx_feed_update reads it again.  A stat(), nothing more. */
bool nginx_feed_template_changed(const kg_nginx_feed *f);
/* How long NGINX_TEST_CMD / NGINX_RELOAD_CMD may run before they are killed (default 15 s);
 * tests shorten it. */
void nginx_feed_set_command_timeout_ms(kg_nginx_feed *f, int timeout_ms);

#endif
