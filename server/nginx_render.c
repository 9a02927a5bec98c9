/* nginx_render.c — the template engine of the nginx include (see nginx_render.h for the syntax).
 *
 * Owns: parsing the template into tokens, choosing which nodes go into which list, writing the
 * output bytes.  Must not: do I/O, read the clock, or copy any byte of a node field into the
 * output that has not passed hostcheck here (the snapshot's host_valid flag is required too, but
 * not trusted alone: this is the last line before text becomes nginx configuration). */
#include "nginx_render.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "hostcheck.h"

#define MAX_DEPTH 8

/* ---- names the template may use --------------------------------------------------------- */

typedef enum { NK_LIST, NK_BOOL, NK_ITEM_VALUE, NK_VALUE } name_kind;

typedef enum {
    NM_NODES, NM_ROUTABLE, NM_CLUSTER, NM_FALLBACK, NM_ID, NM_HOST, NM_MAP_KEY,
    NM_CLUSTER_COUNT, NM_ROUTABLE_COUNT, NM_NODE_COUNT, NM_REJECTED_COUNT, NM_COUNT
} name_id;

static const struct {
    const char *name;
    name_kind kind;
} names[NM_COUNT] = {
    [NM_NODES] = {"nodes", NK_LIST},
    [NM_ROUTABLE] = {"routable", NK_LIST},
    [NM_CLUSTER] = {"cluster", NK_LIST},
    [NM_FALLBACK] = {"fallback", NK_BOOL},
    [NM_ID] = {"id", NK_ITEM_VALUE},
    [NM_HOST] = {"host", NK_ITEM_VALUE},
    [NM_MAP_KEY] = {"map_key", NK_ITEM_VALUE},
    [NM_CLUSTER_COUNT] = {"cluster_count", NK_VALUE},
    [NM_ROUTABLE_COUNT] = {"routable_count", NK_VALUE},
    [NM_NODE_COUNT] = {"node_count", NK_VALUE},
    [NM_REJECTED_COUNT] = {"rejected_count", NK_VALUE},
};

static int name_lookup(const char *s, size_t len)
{
    for (int i = 0; i < NM_COUNT; i++)
        if (strlen(names[i].name) == len && memcmp(names[i].name, s, len) == 0)
            return i;
    return -1;
}

/* ---- tokens ----------------------------------------------------------------------------- */

typedef enum { TK_TEXT, TK_VALUE, TK_OPEN, TK_INVERT, TK_CLOSE } tok_kind;

typedef struct {
    tok_kind kind;
    name_id name;     /* for everything but TK_TEXT */
    const char *text; /* TK_TEXT */
    size_t len;
    int match;        /* TK_OPEN/TK_INVERT: index of the matching TK_CLOSE */
} tok;

typedef struct {
    tok *v;
    int n, cap;
} tok_list;

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || !errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static int line_of(const char *tmpl, const char *at)
{
    int line = 1;
    for (const char *p = tmpl; p < at; p++)
        line += *p == '\n';
    return line;
}

static tok *tok_push(tok_list *l)
{
    if (l->n == l->cap) {
        int cap = l->cap ? l->cap * 2 : 64;
        tok *v = realloc(l->v, (size_t)cap * sizeof *v);
        if (!v)
            return NULL;
        l->v = v;
        l->cap = cap;
    }
    tok *t = &l->v[l->n++];
    memset(t, 0, sizeof *t);
    return t;
}

static bool is_blank(char c) { return c == ' ' || c == '\t' || c == '\r'; }

/* A section/comment tag alone on its line (only blanks around it) swallows the line, as in
 * mustache.  Returns the position after the line's newline, or NULL when not standalone. */
static const char *standalone_end(const char *tmpl, const char *end, const char *tag_start,
                                  const char *tag_end)
{
    for (const char *p = tag_start; p > tmpl && p[-1] != '\n'; p--)
        if (!is_blank(p[-1]))
            return NULL;
    const char *p = tag_end;
    while (p < end && is_blank(*p))
        p++;
    if (p < end && *p != '\n')
        return NULL;
    return p < end ? p + 1 : p;
}

static const char *find2(const char *p, const char *end, char a, char b)
{
    for (; p + 1 < end; p++)
        if (p[0] == a && p[1] == b)
            return p;
    return NULL;
}

/* Splits the template into tokens and checks its structure. */
static int tokenize(const char *tmpl, size_t tmpl_len, tok_list *l, char *err, size_t errlen)
{
    const char *p = tmpl, *end = tmpl + tmpl_len;
    int stack[MAX_DEPTH], depth = 0, list_depth = 0;

    if (memchr(tmpl, '\0', tmpl_len)) {
        set_err(err, errlen, "template contains a NUL byte");
        return -1;
    }
    while (p < end) {
        const char *open = find2(p, end, '{', '{');
        const char *text_end = open ? open : end;
        if (text_end > p) {
            tok *t = tok_push(l);
            if (!t)
                goto oom;
            t->kind = TK_TEXT;
            t->text = p;
            t->len = (size_t)(text_end - p);
        }
        if (!open)
            break;
        const char *close = find2(open + 2, end, '}', '}');
        if (!close) {
            set_err(err, errlen, "template line %d: unclosed {{", line_of(tmpl, open));
            return -1;
        }
        const char *tag_end = close + 2;
        const char *s = open + 2, *e = close;
        char sigil = 0;
        if (s < e && (*s == '#' || *s == '^' || *s == '/' || *s == '!'))
            sigil = *s++;
        if (sigil) {
            const char *after = standalone_end(tmpl, end, open, tag_end);
            if (after) {
                /* drop the blanks before the tag on its line from the previous text token */
                if (l->n && l->v[l->n - 1].kind == TK_TEXT &&
                    l->v[l->n - 1].text + l->v[l->n - 1].len == open) {
                    tok *prev = &l->v[l->n - 1];
                    while (prev->len && prev->text[prev->len - 1] != '\n')
                        prev->len--;
                    if (!prev->len)
                        l->n--;
                }
                tag_end = after;
            }
        }
        p = tag_end;
        if (sigil == '!')
            continue;
        while (s < e && (*s == ' ' || *s == '\t'))
            s++;
        while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
            e--;
        int nm = name_lookup(s, (size_t)(e - s));
        int line = line_of(tmpl, open);
        if (nm < 0) {
            set_err(err, errlen, "template line %d: unknown name '%.*s'", line,
                    (int)((e - s) > 40 ? 40 : (e - s)), s);
            return -1;
        }
        name_kind kind = names[nm].kind;
        tok *t = tok_push(l);
        if (!t)
            goto oom;
        t->name = (name_id)nm;
        switch (sigil) {
        case 0:
            if (kind == NK_LIST || kind == NK_BOOL) {
                set_err(err, errlen, "template line %d: '%s' is a section, not a value", line,
                        names[nm].name);
                return -1;
            }
            if (kind == NK_ITEM_VALUE && list_depth == 0) {
                set_err(err, errlen, "template line %d: '%s' used outside a node list", line,
                        names[nm].name);
                return -1;
            }
            t->kind = TK_VALUE;
            break;
        case '#':
        case '^':
            if (kind != NK_LIST && kind != NK_BOOL) {
                set_err(err, errlen, "template line %d: '%s' is a value, not a section", line,
                        names[nm].name);
                return -1;
            }
            if (kind == NK_LIST && sigil == '#' && list_depth > 0) {
                set_err(err, errlen, "template line %d: list '%s' nested in a list", line,
                        names[nm].name);
                return -1;
            }
            if (depth == MAX_DEPTH) {
                set_err(err, errlen, "template line %d: sections nested too deep", line);
                return -1;
            }
            t->kind = sigil == '#' ? TK_OPEN : TK_INVERT;
            stack[depth++] = l->n - 1;
            if (kind == NK_LIST && sigil == '#')
                list_depth++;
            break;
        case '/': {
            if (depth == 0 || l->v[stack[depth - 1]].name != (name_id)nm) {
                set_err(err, errlen, "template line %d: {{/%s}} closes nothing open", line,
                        names[nm].name);
                return -1;
            }
            tok *o = &l->v[stack[--depth]];
            o->match = l->n - 1;
            if (names[nm].kind == NK_LIST && o->kind == TK_OPEN)
                list_depth--;
            t->kind = TK_CLOSE;
            break;
        }
        }
    }
    if (depth) {
        set_err(err, errlen, "template: section '%s' is never closed",
                names[l->v[stack[depth - 1]].name].name);
        return -1;
    }
    return 0;
oom:
    set_err(err, errlen, "out of memory");
    return -1;
}

bool nginx_render_check(const char *tmpl, size_t tmpl_len, char *err, size_t errlen)
{
    tok_list l = {0};
    int rc = tokenize(tmpl, tmpl_len, &l, err, errlen);
    free(l.v);
    return rc == 0;
}

/* ---- choosing the nodes ------------------------------------------------------------------- */

typedef struct {
    const kg_node_view *v;
    int idx; /* position in the input: breaks ties between identical ids deterministically */
} node_ref;

typedef struct {
    const kg_node_view **nodes, **routable, **cluster;
    int n_nodes, n_routable, n_cluster;
    int rejected;
    bool fallback;
} lists;

static int cmp_ref(const void *a, const void *b)
{
    const node_ref *x = a, *y = b;
    int c = strcmp(x->v->id, y->v->id);
    return c ? c : (x->idx > y->idx) - (x->idx < y->idx);
}

/* Copies at most max printable ASCII bytes of a field that may be hostile or unterminated. */
static void sanitize(char *dst, size_t dstlen, const char *src, size_t srclen)
{
    size_t j = 0;
    for (size_t i = 0; i < srclen && src[i] && j + 1 < dstlen; i++)
        dst[j++] = (src[i] >= 0x20 && src[i] < 0x7f) ? src[i] : '?';
    dst[j] = 0;
}

static void note_rejection(nginx_render_info *info, const kg_node_view *v, const char *why)
{
    char id[24];
    sanitize(id, sizeof id, v->id, sizeof v->id);
    size_t used = strlen(info->rejected);
    if (used + 1 < sizeof info->rejected)
        snprintf(info->rejected + used, sizeof info->rejected - used, "%s%s: %s",
                 used ? "; " : "", id, why);
}

/* Why a node cannot be written to the include, or NULL when it can. */
static const char *node_problem(const kg_node_view *v, char *why, size_t whylen)
{
    if (!memchr(v->id, '\0', sizeof v->id) || !hostcheck_node_id_valid(v->id))
        return "invalid node id";
    if (!memchr(v->host, '\0', sizeof v->host))
        return "host too long";
    char reason[96] = "";
    if (!hostcheck_valid(v->host, reason, sizeof reason)) {
        snprintf(why, whylen, "invalid host (%s)", reason);
        return why;
    }
    if (!v->host_valid)
        return "host marked invalid";
    return NULL;
}

static int cmp_case_pos(const void *a, const void *b, void *arg)
{
    const node_ref *refs = arg;
    int x = *(const int *)a, y = *(const int *)b;
    int c = strcasecmp(refs[x].v->id, refs[y].v->id);
    return c ? c : (x > y) - (x < y);
}

/* refs is sorted by strcmp.  Ids equal ignoring case need not be adjacent there ("A" < "B" <
 * "a"), and nginx would take them for one name: the first of each such group in refs order
 * stays, the others are marked (dup[i]).  Sorting positions by (case-folded id, position)
 * finds the groups in O(n log n); comparing every id with every accepted one cost O(n^2),
 * which at 1,000 nodes was most of a render.  NULL when out of memory. */
static bool *mark_case_duplicates(const node_ref *refs, int n)
{
    bool *dup = calloc((size_t)n + 1, sizeof *dup);
    int *pos = malloc(((size_t)n + 1) * sizeof *pos);
    if (!dup || !pos) {
        free(dup);
        free(pos);
        return NULL;
    }
    for (int i = 0; i < n; i++)
        pos[i] = i;
    qsort_r(pos, (size_t)n, sizeof *pos, cmp_case_pos, (void *)refs);
    for (int i = 1; i < n; i++)
        if (strcasecmp(refs[pos[i - 1]].v->id, refs[pos[i]].v->id) == 0)
            dup[pos[i]] = true; /* pos[i - 1] is earlier in refs order: the group's first stays */
    free(pos);
    return dup;
}

static int build_lists(const kg_node_view *nodes, int n, lists *ls, nginx_render_info *info)
{
    memset(ls, 0, sizeof *ls);
    if (n <= 0)
        n = 0;
    node_ref *refs = calloc((size_t)n + 1, sizeof *refs);
    ls->nodes = calloc((size_t)n + 1, sizeof *ls->nodes);
    ls->routable = calloc((size_t)n + 1, sizeof *ls->routable);
    ls->cluster = calloc((size_t)n + 1, sizeof *ls->cluster);
    if (!refs || !ls->nodes || !ls->routable || !ls->cluster) {
        free(refs);
        return -1;
    }
    int nrefs = 0;
    for (int i = 0; i < n; i++) {
        char why[128];
        const char *problem = node_problem(&nodes[i], why, sizeof why);
        if (problem) {
            ls->rejected++;
            note_rejection(info, &nodes[i], problem);
            continue;
        }
        refs[nrefs].v = &nodes[i];
        refs[nrefs].idx = i;
        nrefs++;
    }
    qsort(refs, (size_t)nrefs, sizeof *refs, cmp_ref);
    bool *dup = mark_case_duplicates(refs, nrefs);
    if (!dup) {
        free(refs);
        return -1;
    }
    for (int i = 0; i < nrefs; i++) {
        const kg_node_view *v = refs[i].v;
        if (dup[i]) {
            ls->rejected++;
            note_rejection(info, v, "duplicate node id (nginx ignores case)");
            continue;
        }
        ls->nodes[ls->n_nodes++] = v;
        if (node_state_routable(v->state))
            ls->routable[ls->n_routable++] = v;
    }
    free(dup);
    free(refs);
    ls->fallback = ls->n_routable == 0;
    if (!ls->fallback) {
        memcpy(ls->cluster, ls->routable, (size_t)ls->n_routable * sizeof *ls->cluster);
        ls->n_cluster = ls->n_routable;
    } else {
        /* Nothing is known to be up: better to let nginx try every node than to serve nothing.
         * Maintenance is an operator's "out of everything" and stays out. */
        for (int i = 0; i < ls->n_nodes; i++)
            if (ls->nodes[i]->state != NODE_MAINTENANCE)
                ls->cluster[ls->n_cluster++] = ls->nodes[i];
    }
    return 0;
}

static void free_lists(lists *ls)
{
    free(ls->nodes);
    free(ls->routable);
    free(ls->cluster);
}

/* ---- output ------------------------------------------------------------------------------- */

typedef struct {
    char *buf;
    size_t len, cap;
    bool oom;
} outbuf;

static void out_put(outbuf *o, const char *s, size_t n)
{
    if (o->oom)
        return;
    if (o->len + n + 1 > o->cap) {
        size_t cap = o->cap ? o->cap : 4096;
        while (o->len + n + 1 > cap)
            cap *= 2;
        char *b = realloc(o->buf, cap);
        if (!b) {
            o->oom = true;
            return;
        }
        o->buf = b;
        o->cap = cap;
    }
    memcpy(o->buf + o->len, s, n);
    o->len += n;
    o->buf[o->len] = 0;
}

static void out_int(outbuf *o, int v)
{
    char num[16];
    int k = snprintf(num, sizeof num, "%d", v);
    out_put(o, num, (size_t)k);
}

/* The id as a map key.  `map` reads default, hostnames, include and volatile as its own
 * parameters unless they start with a backslash (which nginx then strips); the backslash must
 * not precede other ids, where "\n..." would be read as a newline escape.
 *
 * nginx refuses a map whose key does not fit in one bucket of map_hash_bucket_size, 64 bytes
 * by default on x86-64 and arm64 (the CPU's cache line): an element takes a pointer, a 2-byte
 * length and the key, rounded up to 8 bytes, and the bucket ends in a null pointer, so keys of
 * 47 bytes and more fail `nginx -t`.  A node id may have 50 characters, and no operator should
 * have to tune nginx for that: a longer id becomes an anchored, case-insensitive pattern
 * ("~*^id$", dots escaped; ids hold only [A-Za-z0-9._-]), which nginx tries only when the
 * hashed keys do not match.  Many keys that nearly fill a bucket make nginx warn that the hash
 * is not optimal; it still works. */
static void out_map_key(outbuf *o, const char *id)
{
    size_t len = strlen(id);
    if (len > NGINX_MAP_KEY_MAX) {
        out_put(o, "\"~*^", 4);
        for (size_t i = 0; i < len; i++) {
            if (id[i] == '.')
                out_put(o, "\\", 1);
            out_put(o, &id[i], 1);
        }
        out_put(o, "$\"", 2);
        return;
    }
    if (!strcmp(id, "default") || !strcmp(id, "hostnames") || !strcmp(id, "include") ||
        !strcmp(id, "volatile"))
        out_put(o, "\\", 1);
    out_put(o, id, len);
}

static void list_of(const lists *ls, name_id nm, const kg_node_view ***v, int *n)
{
    switch (nm) {
    case NM_NODES: *v = ls->nodes; *n = ls->n_nodes; return;
    case NM_ROUTABLE: *v = ls->routable; *n = ls->n_routable; return;
    default: *v = ls->cluster; *n = ls->n_cluster; return;
    }
}

static void render_range(outbuf *o, const tok_list *l, int from, int to, const lists *ls,
                         const kg_node_view *item)
{
    for (int i = from; i < to; i++) {
        const tok *t = &l->v[i];
        switch (t->kind) {
        case TK_TEXT:
            out_put(o, t->text, t->len);
            break;
        case TK_VALUE:
            switch (t->name) {
            /* id and host passed hostcheck in build_lists; the tokenizer guarantees an item */
            case NM_ID: out_put(o, item->id, strlen(item->id)); break;
            case NM_HOST: out_put(o, item->host, strlen(item->host)); break;
            case NM_MAP_KEY:
                out_map_key(o, item->id);
                break;
            case NM_CLUSTER_COUNT: out_int(o, ls->n_cluster); break;
            case NM_ROUTABLE_COUNT: out_int(o, ls->n_routable); break;
            case NM_NODE_COUNT: out_int(o, ls->n_nodes); break;
            case NM_REJECTED_COUNT: out_int(o, ls->rejected); break;
            default: break;
            }
            break;
        case TK_OPEN:
        case TK_INVERT: {
            bool on;
            if (names[t->name].kind == NK_BOOL) {
                on = ls->fallback == (t->kind == TK_OPEN);
                if (on)
                    render_range(o, l, i + 1, t->match, ls, item);
            } else {
                const kg_node_view **v;
                int n;
                list_of(ls, t->name, &v, &n);
                if (t->kind == TK_INVERT) {
                    if (n == 0)
                        render_range(o, l, i + 1, t->match, ls, item);
                } else {
                    for (int k = 0; k < n; k++)
                        render_range(o, l, i + 1, t->match, ls, v[k]);
                }
            }
            i = t->match;
            break;
        }
        case TK_CLOSE:
            break;
        }
    }
}

int nginx_render(const char *tmpl, size_t tmpl_len, const kg_node_view *nodes, int n,
                 char **out, size_t *out_len, nginx_render_info *info, char *err, size_t errlen)
{
    *out = NULL;
    *out_len = 0;
    memset(info, 0, sizeof *info);
    if (tmpl_len > NGINX_TEMPLATE_MAX) {
        set_err(err, errlen, "template larger than %d bytes", NGINX_TEMPLATE_MAX);
        return -1;
    }
    tok_list l = {0};
    if (tokenize(tmpl, tmpl_len, &l, err, errlen) != 0) {
        free(l.v);
        return -1;
    }
    lists ls;
    if (build_lists(nodes, n, &ls, info) != 0) {
        free_lists(&ls);
        free(l.v);
        set_err(err, errlen, "out of memory");
        return -1;
    }
    outbuf o = {0};
    out_put(&o, "", 0); /* an empty template still gives a NUL-terminated buffer */
    render_range(&o, &l, 0, l.n, &ls, NULL);
    info->cluster_nodes = ls.n_cluster;
    info->routable_nodes = ls.n_routable;
    info->known_nodes = ls.n_nodes;
    info->rejected_nodes = ls.rejected;
    info->fallback_all = ls.fallback;
    free_lists(&ls);
    free(l.v);
    if (o.oom) {
        free(o.buf);
        set_err(err, errlen, "out of memory");
        return -1;
    }
    *out = o.buf;
    *out_len = o.len;
    return 0;
}
