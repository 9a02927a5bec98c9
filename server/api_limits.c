/* api_limits.c — per-client counts for the HTTP server (see api_limits.h).
 *
 * Owns: the count tables (an array of {client, count} under a mutex; entries at zero are
 * dropped, so its length is the number of distinct clients with something open).
 * Must not: touch MHD or sockets, or log. */
#include "api_limits.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    api_client_key key;
    int count;
} slot;

struct api_limits {
    pthread_mutex_t lock;
    slot *slots;
    int n, cap;
};

/* ------------------------------------------------------------------------------------------
 * Client keys
 * ------------------------------------------------------------------------------------------ */

/* IPv6 clients by /64; IPv4 (also IPv4-mapped) by the whole address. */
static void normalise(api_client_key *k)
{
    if (!netpolicy_addr_is_v4(k->b))
        memset(k->b + 8, 0, 8);
}

bool api_client_key_from_sockaddr(const struct sockaddr *sa, api_client_key *k)
{
    if (!sa)
        return false;
    memset(k, 0, sizeof *k);
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;
        k->b[10] = k->b[11] = 0xff;
        memcpy(k->b + 12, &in->sin_addr, 4);
        return true;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)sa;
        memcpy(k->b, &in6->sin6_addr, 16);
        normalise(k);
        return true;
    }
    return false;
}

bool api_client_key_from_text(const char *s, api_client_key *k)
{
    if (!netpolicy_parse_addr(s, k->b))
        return false;
    normalise(k);
    return true;
}

bool api_client_key_from_xff(const char *xff, api_client_key *k)
{
    if (!xff)
        return false;
    const char *comma = strrchr(xff, ',');
    const char *p = comma ? comma + 1 : xff;
    while (*p == ' ' || *p == '\t')
        p++;
    char buf[64];
    size_t n = strcspn(p, " \t");
    if (n == 0 || n >= sizeof buf || p[n + strspn(p + n, " \t")] != '\0')
        return false;
    memcpy(buf, p, n);
    buf[n] = '\0';
    /* "[v6]" and "[v6]:port" appear in some proxies' output */
    char *a = buf;
    if (a[0] == '[') {
        char *close = strchr(a, ']');
        if (!close)
            return false;
        *close = '\0';
        a++;
    }
    return api_client_key_from_text(a, k);
}

void api_client_key_format(const api_client_key *k, char *out, size_t len)
{
    netpolicy_format_addr(k->b, out, len);
}

bool api_peer_is_trusted(const struct sockaddr *sa, const kg_cidr_list *trusted)
{
    api_client_key k;
    if (!trusted || trusted->n == 0 || !api_client_key_from_sockaddr(sa, &k))
        return false;
    /* the full address, not the /64, decides whether a peer is a proxy */
    uint8_t full[16];
    if (sa->sa_family == AF_INET6)
        memcpy(full, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, 16);
    else
        memcpy(full, k.b, 16);
    return netpolicy_list_contains(trusted, full);
}

bool api_client_key_for_request(const struct sockaddr *sa, const kg_cidr_list *trusted,
                                const char *xff, api_client_key *k)
{
    if (api_peer_is_trusted(sa, trusted) && api_client_key_from_xff(xff, k))
        return true;
    return api_client_key_from_sockaddr(sa, k);
}

/* ------------------------------------------------------------------------------------------
 * Count tables
 * ------------------------------------------------------------------------------------------ */

api_limits *api_limits_new(void)
{
    api_limits *l = calloc(1, sizeof *l);
    if (l)
        pthread_mutex_init(&l->lock, NULL);
    return l;
}

void api_limits_free(api_limits *l)
{
    if (!l)
        return;
    pthread_mutex_destroy(&l->lock);
    free(l->slots);
    free(l);
}

static int find(const api_limits *l, const api_client_key *k)
{
    for (int i = 0; i < l->n; i++)
        if (memcmp(l->slots[i].key.b, k->b, sizeof k->b) == 0)
            return i;
    return -1;
}

int api_limits_count(api_limits *l, const api_client_key *k)
{
    pthread_mutex_lock(&l->lock);
    int i = find(l, k);
    int c = i >= 0 ? l->slots[i].count : 0;
    pthread_mutex_unlock(&l->lock);
    return c;
}

bool api_limits_acquire(api_limits *l, const api_client_key *k, int max)
{
    bool ok = false;
    pthread_mutex_lock(&l->lock);
    int i = find(l, k);
    if (i >= 0) {
        ok = max <= 0 || l->slots[i].count < max;
        if (ok)
            l->slots[i].count++;
    } else {
        if (l->n == l->cap) {
            int cap = l->cap ? l->cap * 2 : 16;
            slot *grown = realloc(l->slots, (size_t)cap * sizeof *grown);
            if (grown) {
                l->slots = grown;
                l->cap = cap;
            }
        }
        if (l->n < l->cap) { /* a new client holds nothing yet: always below max */
            l->slots[l->n].key = *k;
            l->slots[l->n].count = 1;
            l->n++;
            ok = true;
        }
    }
    pthread_mutex_unlock(&l->lock);
    return ok;
}

void api_limits_release(api_limits *l, const api_client_key *k)
{
    pthread_mutex_lock(&l->lock);
    int i = find(l, k);
    if (i >= 0 && --l->slots[i].count <= 0)
        l->slots[i] = l->slots[--l->n]; /* order does not matter */
    pthread_mutex_unlock(&l->lock);
}

void api_limits_totals(api_limits *l, int *clients, int *total)
{
    pthread_mutex_lock(&l->lock);
    int sum = 0;
    for (int i = 0; i < l->n; i++)
        sum += l->slots[i].count;
    *clients = l->n;
    *total = sum;
    pthread_mutex_unlock(&l->lock);
}
