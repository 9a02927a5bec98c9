/* netpolicy.c — CIDR lists and the verdict on node addresses (see netpolicy.h).
 *
 * Owns: parsing, matching and the reasons.  Must not: resolve names, open sockets, allocate
 * or log — the controller, the prober and the reconcile nudge all ask the same questions and
 * must get the same answers. */
#include "netpolicy.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "hostcheck.h"

static const uint8_t v4_mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

/* ------------------------------------------------------------------------------------------
 * Addresses and prefixes
 * ------------------------------------------------------------------------------------------ */

bool netpolicy_parse_addr(const char *text, uint8_t out[16])
{
    struct in_addr a4;
    struct in6_addr a6;
    if (!text)
        return false;
    if (inet_pton(AF_INET, text, &a4) == 1) {
        memcpy(out, v4_mapped_prefix, 12);
        memcpy(out + 12, &a4, 4);
        return true;
    }
    if (inet_pton(AF_INET6, text, &a6) == 1) {
        memcpy(out, &a6, 16);
        return true;
    }
    return false;
}

bool netpolicy_addr_is_v4(const uint8_t a[16])
{
    return memcmp(a, v4_mapped_prefix, 12) == 0;
}

void netpolicy_format_addr(const uint8_t a[16], char *out, size_t len)
{
    if (!len)
        return;
    out[0] = '\0';
    if (netpolicy_addr_is_v4(a))
        inet_ntop(AF_INET, a + 12, out, (socklen_t)len);
    else
        inet_ntop(AF_INET6, a, out, (socklen_t)len);
}

static bool prefix_match(const uint8_t net[16], int prefix, const uint8_t a[16])
{
    int full = prefix / 8, rest = prefix % 8;
    if (memcmp(net, a, (size_t)full) != 0)
        return false;
    if (rest == 0)
        return true;
    uint8_t mask = (uint8_t)(0xff << (8 - rest));
    return (net[full] & mask) == (a[full] & mask);
}

static bool host_bits_clear(const uint8_t a[16], int prefix)
{
    for (int bit = prefix; bit < 128; bit++)
        if (a[bit / 8] & (0x80 >> (bit % 8)))
            return false;
    return true;
}

bool netpolicy_list_contains(const kg_cidr_list *l, const uint8_t a[16])
{
    for (int i = 0; l && i < l->n; i++)
        if (prefix_match(l->nets[i].addr, l->nets[i].prefix, a))
            return true;
    return false;
}

/* ------------------------------------------------------------------------------------------
 * CIDR lists
 * ------------------------------------------------------------------------------------------ */

static int parse_one(const char *item, kg_cidr *c)
{
    char addr[64];
    const char *slash = strchr(item, '/');
    size_t alen = slash ? (size_t)(slash - item) : strlen(item);
    if (alen == 0 || alen >= sizeof addr)
        return -1;
    memcpy(addr, item, alen);
    addr[alen] = '\0';
    if (!netpolicy_parse_addr(addr, c->addr))
        return -1;
    bool v4 = strchr(addr, ':') == NULL;
    int max = v4 ? 32 : 128;
    int len = max;
    if (slash) {
        const char *p = slash + 1;
        if (!*p || strlen(p) > 3)
            return -1;
        len = 0;
        for (; *p; p++) {
            if (*p < '0' || *p > '9')
                return -1;
            len = len * 10 + (*p - '0');
        }
        if (len > max)
            return -1;
    }
    c->prefix = (uint8_t)(v4 ? 96 + len : len);
    return host_bits_clear(c->addr, c->prefix) ? 0 : -1;
}

int netpolicy_parse_cidrs(const char *spec, kg_cidr_list *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    const char *p = spec ? spec : "";
    while (*p) {
        while (*p == ',' || *p == ' ' || *p == '\t')
            p++;
        if (!*p)
            break;
        size_t n = strcspn(p, ", \t");
        char item[72];
        if (n >= sizeof item) {
            snprintf(err, errlen, "'%.40s...' is not an address or address/prefix", p);
            return -1;
        }
        memcpy(item, p, n);
        item[n] = '\0';
        if (out->n >= NETPOLICY_MAX_NETS) {
            snprintf(err, errlen, "more than %d networks", NETPOLICY_MAX_NETS);
            return -1;
        }
        if (parse_one(item, &out->nets[out->n]) != 0) {
            snprintf(err, errlen, "'%s' is not an address or address/prefix with the host "
                     "bits clear (e.g. 10.0.0.0/8, fd00::/8)", item);
            return -1;
        }
        out->n++;
        p += n;
    }
    return 0;
}

void netpolicy_format_cidrs(const kg_cidr_list *l, char *out, size_t len)
{
    size_t off = 0;
    if (!len)
        return;
    out[0] = '\0';
    for (int i = 0; l && i < l->n; i++) {
        char a[INET6_ADDRSTRLEN];
        netpolicy_format_addr(l->nets[i].addr, a, sizeof a);
        bool v4 = netpolicy_addr_is_v4(l->nets[i].addr);
        int w = snprintf(out + off, len - off, "%s%s/%d", off ? "," : "", a,
                         v4 ? l->nets[i].prefix - 96 : l->nets[i].prefix);
        if (w < 0 || (size_t)w >= len - off)
            return;
        off += (size_t)w;
    }
}

/* ------------------------------------------------------------------------------------------
 * The verdicts
 * ------------------------------------------------------------------------------------------ */

/* Ranges refused whatever is configured: nothing a Kuma node can legitimately live at. */
static const struct {
    const char *cidr;
    const char *why;
} always_refused[] = {
    {"169.254.0.0/16", "is link-local (cloud metadata and similar services live there)"},
    {"fe80::/10", "is link-local (cloud metadata and similar services live there)"},
    {"0.0.0.0/8", "is not a unicast address (0.0.0.0 reaches this machine itself)"},
    {"::/128", "is not a unicast address (:: reaches this machine itself)"},
    {"224.0.0.0/4", "is a multicast address"},
    {"ff00::/8", "is a multicast address"},
    {"255.255.255.255/32", "is the broadcast address"},
};

static bool refuse(char *why, size_t whylen, const uint8_t a[16], const char *text)
{
    if (why && whylen) {
        char as[INET6_ADDRSTRLEN];
        netpolicy_format_addr(a, as, sizeof as);
        snprintf(why, whylen, "refused: %s %s", as, text);
    }
    return false;
}

static bool is_loopback(const uint8_t a[16])
{
    static const uint8_t v6_lo[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    return (netpolicy_addr_is_v4(a) && a[12] == 127) || memcmp(a, v6_lo, 16) == 0;
}

static bool is_db_addr(const kg_netpolicy *p, const uint8_t a[16], int port)
{
    if (!p || !p->db_host[0] || port != p->db_port)
        return false;
    if (p->db_is_local && is_loopback(a))
        return true;
    for (int i = 0; i < p->n_db_addrs; i++)
        if (memcmp(p->db_addrs[i], a, 16) == 0)
            return true;
    return false;
}

bool netpolicy_addr_allowed(const kg_netpolicy *p, const uint8_t a[16], int port, char *why,
                            size_t whylen)
{
    for (size_t i = 0; i < sizeof always_refused / sizeof always_refused[0]; i++) {
        kg_cidr c;
        if (parse_one(always_refused[i].cidr, &c) == 0 && prefix_match(c.addr, c.prefix, a))
            return refuse(why, whylen, a, always_refused[i].why);
    }
    if (is_db_addr(p, a, port)) {
        if (why && whylen) {
            char as[INET6_ADDRSTRLEN];
            netpolicy_format_addr(a, as, sizeof as);
            snprintf(why, whylen, "refused: %s port %d is the cluster database's own address",
                     as, port);
        }
        return false;
    }
    if (p && p->allowed.n > 0 && !netpolicy_list_contains(&p->allowed, a))
        return refuse(why, whylen, a, "is outside KUMAGUARD_NODE_NETWORKS");
    return true;
}

void netpolicy_set_db(kg_netpolicy *p, const char *db_host, int db_port)
{
    p->db_host[0] = '\0';
    p->n_db_addrs = 0;
    p->db_is_local = false;
    p->db_port = db_port;
    if (!db_host || !*db_host || db_host[0] == '/')
        return;
    snprintf(p->db_host, sizeof p->db_host, "%s", db_host);
    p->db_is_local = strcasecmp(db_host, "localhost") == 0;
    uint8_t a[16];
    if (netpolicy_parse_addr(db_host, a))
        netpolicy_add_db_addr(p, a);
}

void netpolicy_add_db_addr(kg_netpolicy *p, const uint8_t a[16])
{
    for (int i = 0; i < p->n_db_addrs; i++)
        if (memcmp(p->db_addrs[i], a, 16) == 0)
            return;
    if (p->n_db_addrs < NETPOLICY_MAX_DB_ADDRS)
        memcpy(p->db_addrs[p->n_db_addrs++], a, 16);
}

bool netpolicy_host_allowed(const kg_netpolicy *p, const char *hostport, char *why,
                            size_t whylen)
{
    char err[96] = "";
    if (!hostcheck_valid(hostport, err, sizeof err)) {
        if (why && whylen)
            snprintf(why, whylen, "invalid host value: %s", err);
        return false;
    }
    /* hostcheck guarantees "name:port", "a.b.c.d:port" or "[v6]:port" */
    char host[264];
    const char *colon = strrchr(hostport, ':');
    size_t hl = (size_t)(colon - hostport);
    if (hostport[0] == '[') {
        memcpy(host, hostport + 1, hl - 2);
        host[hl - 2] = '\0';
    } else {
        memcpy(host, hostport, hl);
        host[hl] = '\0';
    }
    int port = 0;
    for (const char *d = colon + 1; *d; d++)
        port = port * 10 + (*d - '0');
    uint8_t a[16];
    if (netpolicy_parse_addr(host, a))
        return netpolicy_addr_allowed(p, a, port, why, whylen);
    if (p && p->db_host[0] && port == p->db_port && strcasecmp(host, p->db_host) == 0) {
        if (why && whylen)
            snprintf(why, whylen, "refused: %.100s port %d is the cluster database's own address",
                     host, port);
        return false;
    }
    /* a name: judged again on the address each connection goes to (netpolicy_curl.h) */
    return true;
}
