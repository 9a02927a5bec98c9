/* api_fixed_node.c — the browser's own routing preference: the KUMA_FIXED_NODE cookie that the
 * nginx include maps to `upstream kuma_node_<id>` (nginx-upstream.conf.tmpl).
 *
 * Not a cluster action, so no token; instead it is shaped so another site cannot set it for a
 * visitor: setting needs POST with Content-Type application/json (a cross-site form cannot
 * send that without a CORS preflight, and preflights get 405 with no CORS headers), the page
 * at GET /lb/fixed-node/<id> changes nothing by itself, and the cookie is HttpOnly and
 * SameSite=Lax.  Owns: those handlers and the page.  Must not: change cluster state. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api_fixed_node.h"
#include "api_json.h"
#include "api_route.h"
#include "snapshot.h"

static enum MHD_Result no_snapshot(struct MHD_Connection *c)
{
    return api_queue_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, "starting",
                           "kumaguard has not built its first cluster picture yet");
}

enum MHD_Result api_fixed_node_set(struct MHD_Connection *c, const char *body, size_t len)
{
    const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                                 MHD_HTTP_HEADER_CONTENT_TYPE);
    if (!api_content_type_is_json(ct))
        return api_queue_error(c, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type",
                               "Content-Type must be application/json");
    char node[KG_NODE_ID_MAX + 1];
    char err[160];
    if (api_parse_fixed_node_body(body, len, node, sizeof node, err, sizeof err) != 0)
        return api_queue_error(c, MHD_HTTP_BAD_REQUEST, "bad_request", err);

    kg_snapshot *s = snapshot_acquire();
    if (!s)
        return no_snapshot(c);
    int status = 200;
    const char *refusal = api_fixed_node_refusal(s, node, &status);
    snapshot_release(s);
    if (refusal)
        return api_queue_error(c, (unsigned)status,
                               status == 404 ? "unknown_node" : "node_not_routable", refusal);

    /* node is [A-Za-z0-9_.-]: safe inside a cookie value without quoting */
    char cookie[160];
    snprintf(cookie, sizeof cookie,
             API_FIXED_NODE_COOKIE "=%s; Path=/; Max-Age=%d; HttpOnly; SameSite=Lax", node,
             API_FIXED_NODE_MAX_AGE);
    json_object *o = json_object_new_object();
    json_object_object_add(o, "success", json_object_new_boolean(true));
    json_object_object_add(o, "node", json_object_new_string(node));
    json_object_object_add(o, "expires_in_seconds", json_object_new_int(API_FIXED_NODE_MAX_AGE));
    json_object_object_add(o, "clear_url", json_object_new_string("/lb/clear-fixed-node"));
    char msg[128]; /* compat: the Lua version's confirmation */
    snprintf(msg, sizeof msg, "Fixed node cookie set: this browser now goes to %s", node);
    json_object_object_add(o, "message", json_object_new_string(msg));
    return api_queue_json(c, MHD_HTTP_OK, o, cookie);
}

enum MHD_Result api_fixed_node_clear(struct MHD_Connection *c)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "success", json_object_new_boolean(true));
    json_object_object_add(o, "cleared", json_object_new_boolean(true));
    return api_queue_json(c, MHD_HTTP_OK, o,
                          API_FIXED_NODE_COOKIE "=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax");
}

enum MHD_Result api_fixed_node_status(struct MHD_Connection *c)
{
    kg_snapshot *s = snapshot_acquire();
    if (!s)
        return no_snapshot(c);
    const char *cookie = MHD_lookup_connection_value(c, MHD_COOKIE_KIND, API_FIXED_NODE_COOKIE);
    json_object *o = api_doc_fixed_node_status(s, cookie);
    snapshot_release(s);
    return api_queue_json(c, MHD_HTTP_OK, o, NULL);
}

/* The page has no inline event handlers and takes the node id from a data attribute, so the
 * only thing interpolated into it is the HTML-escaped id. */
static const char page_fmt[] =
    "<!DOCTYPE html>\n"
    "<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
    "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
    "<title>Fixed node: %s</title>\n"
    "<style>body{font-family:system-ui,sans-serif;max-width:36rem;margin:3rem auto;"
    "padding:0 1rem}button{font-size:1rem;padding:.5rem 1rem}"
    ".err{color:#b00020}.ok{color:#1b5e20}</style></head>\n"
    "<body>\n"
    "<h1>Route my browser to <code>%s</code></h1>\n"
    "<p>%s</p>\n"
    "<p><button id=\"set\" data-node=\"%s\"%s>Use node %s</button> "
    "<a href=\"/lb/clear-fixed-node\" id=\"clear\">Clear my fixed node</a></p>\n"
    "<p id=\"result\" role=\"status\"></p>\n"
    "<p><a href=\"/lb/available-nodes\">Available nodes</a> &middot; "
    "<a href=\"/lb/fixed-node-status\">Current setting</a></p>\n"
    "<script>\n"
    "(function(){\n"
    "  var b=document.getElementById('set'),out=document.getElementById('result');\n"
    "  function show(cls,msg){out.className=cls;out.textContent=msg;}\n"
    "  b.addEventListener('click',function(){\n"
    "    fetch('/lb/set-fixed-node',{method:'POST',credentials:'same-origin',\n"
    "      headers:{'Content-Type':'application/json'},\n"
    "      body:JSON.stringify({node:b.getAttribute('data-node')})})\n"
    "    .then(function(r){return r.json().then(function(j){return [r.ok,j];});})\n"
    "    .then(function(x){x[0]?show('ok','This browser now goes to '+x[1].node+'.')\n"
    "                          :show('err',(x[1].detail||x[1].error||'refused'));})\n"
    "    .catch(function(e){show('err','Request failed: '+e);});\n"
    "  });\n"
    "  document.getElementById('clear').addEventListener('click',function(ev){\n"
    "    ev.preventDefault();\n"
    "    fetch('/lb/clear-fixed-node',{method:'POST',credentials:'same-origin'})\n"
    "    .then(function(){show('ok','Fixed node cleared: normal load balancing.');});\n"
    "  });\n"
    "})();\n"
    "</script>\n"
    "</body></html>\n";

enum MHD_Result api_fixed_node_page(struct MHD_Connection *c, const char *node)
{
    kg_snapshot *s = snapshot_acquire();
    if (!s)
        return no_snapshot(c);
    int status = 200;
    const char *refusal = api_fixed_node_refusal(s, node, &status);
    snapshot_release(s);

    char esc[KG_NODE_ID_MAX * 6 + 1];
    if (api_html_escape(node, esc, sizeof esc) < 0)
        return api_queue_error(c, MHD_HTTP_BAD_REQUEST, "bad_request", "node id too long");
    char note[200];
    if (refusal)
        snprintf(note, sizeof note,
                 "<span class=\"err\">This node cannot be chosen now: %s.</span>", refusal);
    else
        snprintf(note, sizeof note,
                 "Press the button to send this browser's requests to this node for a day "
                 "(cookie " API_FIXED_NODE_COOKIE "). Nothing changes until you press it.");
    size_t cap = sizeof page_fmt + 5 * sizeof esc + sizeof note + 32;
    char *page = malloc(cap);
    if (!page)
        return MHD_NO;
    int n = snprintf(page, cap, page_fmt, esc, esc, note, esc, refusal ? " disabled" : "", esc);
    if (n < 0 || (size_t)n >= cap) {
        free(page);
        return MHD_NO;
    }
    struct MHD_Response *resp =
        MHD_create_response_from_buffer((size_t)n, page, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(page);
        return MHD_NO;
    }
    api_add_common_headers(resp);
    MHD_add_response_header(resp, "Content-Type", "text/html; charset=utf-8");
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    /* The page may only talk to its own origin and may not be framed (no clickjacking of the
     * button); its one inline script is static text. */
    MHD_add_response_header(resp, "Content-Security-Policy",
                            "default-src 'none'; script-src 'unsafe-inline'; "
                            "style-src 'unsafe-inline'; connect-src 'self'; "
                            "frame-ancestors 'none'; base-uri 'none'; form-action 'none'");
    MHD_add_response_header(resp, "X-Frame-Options", "DENY");
    MHD_add_response_header(resp, "Referrer-Policy", "same-origin");
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, resp);
    MHD_destroy_response(resp);
    return ret;
}
