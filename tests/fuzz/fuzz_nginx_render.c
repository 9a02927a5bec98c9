/* fuzz_nginx_render.c — libFuzzer target for the parsers that guard the nginx include:
 * hostcheck (host:port and node ids) and the renderer with the shipped template.
 *
 * The input is split into node records (id \x1f host \x1e ...); the property checked is the
 * one that matters: whatever the node table holds, every line of the rendered include is made
 * of template text and validated values only — no ';', '{', '}' or newline smuggled in through
 * a field, so the rendered file always has the template's shape.
 * fuzz-sources: nginx_render.c hostcheck.c types.c snapshot.c clock.c */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hostcheck.h"
#include "nginx_render.h"

#define MAX_NODES 16

static char *tmpl;
static size_t tmpl_len;

static void load_template(void)
{
    const char *src = getenv("KG_SOURCE_DIR");
    char path[1024];
    snprintf(path, sizeof path, "%s/web/templates/nginx-upstream.conf.tmpl", src ? src : ".");
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "fuzz_nginx_render: cannot open %s (set KG_SOURCE_DIR)\n", path);
        abort();
    }
    tmpl = malloc(NGINX_TEMPLATE_MAX);
    tmpl_len = fread(tmpl, 1, NGINX_TEMPLATE_MAX, f);
    fclose(f);
}

/* Was `value` emitted where the template puts a node field?  (A plain substring search is
 * not enough: an invalid host "h:1 " legitimately occurs inside "server h:1 max_fails=..."
 * of a valid node h:1 — the first crash this target found was that false alarm.) */
static bool emitted_as_field(const char *out, size_t len, const char *prefix, const char *value,
                             const char *const *suffixes)
{
    char needle[KG_HOST_MAX + 64];
    for (const char *const *suf = suffixes; *suf; suf++) {
        int n = snprintf(needle, sizeof needle, "%s%s%s", prefix, value, *suf);
        if (n > 0 && (size_t)n < sizeof needle && memmem(out, len, needle, (size_t)n))
            return true;
    }
    return false;
}

/* The property: no node that fails validation has its host or id emitted as a field, and the
 * output holds no control bytes (they never come from the template). */
static void check_no_injection(const char *out, size_t len, const kg_node_view *nodes, int n)
{
    static const char *const host_suffixes[] = {";", " max_fails", NULL};
    static const char *const id_suffixes[] = {" {", ";", NULL};
    for (int i = 0; i < n; i++) {
        if (nodes[i].host_valid && hostcheck_valid(nodes[i].host, NULL, 0) &&
            hostcheck_node_id_valid(nodes[i].id))
            continue;
        bool host_bad = !hostcheck_valid(nodes[i].host, NULL, 0);
        bool id_bad = !hostcheck_node_id_valid(nodes[i].id);
        if (host_bad && nodes[i].host[0] &&
            emitted_as_field(out, len, "server ", nodes[i].host, host_suffixes))
            abort();
        if (id_bad && nodes[i].id[0] &&
            emitted_as_field(out, len, "kuma_node_", nodes[i].id, id_suffixes))
            abort();
    }
    for (size_t i = 0; i < len; i++)
        if (out[i] == 0 || ((unsigned char)out[i] < 0x20 && out[i] != '\n' && out[i] != '\t'))
            abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!tmpl)
        load_template();
    kg_node_view nodes[MAX_NODES];
    memset(nodes, 0, sizeof nodes);
    int n = 0;
    size_t pos = 0;
    while (pos < size && n < MAX_NODES) {
        size_t end = pos;
        while (end < size && data[end] != 0x1e)
            end++;
        size_t sep = pos;
        while (sep < end && data[sep] != 0x1f)
            sep++;
        size_t idlen = sep - pos < KG_NODE_ID_MAX ? sep - pos : KG_NODE_ID_MAX;
        memcpy(nodes[n].id, data + pos, idlen);
        if (sep < end) {
            size_t hl = end - sep - 1 < KG_HOST_MAX ? end - sep - 1 : KG_HOST_MAX;
            memcpy(nodes[n].host, data + sep + 1, hl);
        }
        nodes[n].host_valid = hostcheck_valid(nodes[n].host, NULL, 0) &&
                              hostcheck_node_id_valid(nodes[n].id);
        nodes[n].state = (node_state)(idlen % NODE_STATE_COUNT);
        n++;
        pos = end + 1;
    }
    char *out = NULL;
    size_t out_len = 0;
    nginx_render_info info;
    char err[256];
    if (nginx_render(tmpl, tmpl_len, nodes, n, &out, &out_len, &info, err, sizeof err) == 0) {
        check_no_injection(out, out_len, nodes, n);
        if (info.cluster_nodes < 0 || info.rejected_nodes > n)
            abort();
        free(out);
    }
    return 0;
}
