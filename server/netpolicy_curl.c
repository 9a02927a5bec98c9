/* netpolicy_curl.c — the connect-time half of the node network policy (see netpolicy_curl.h).
 *
 * Owns: the installed policy (written once before threads start, read-only after) and the
 * CURLOPT_OPENSOCKETFUNCTION callback.  Must not: decide (netpolicy.c does) or log. */
#include "netpolicy_curl.h"

#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

static const kg_netpolicy *installed;

void netpolicy_curl_install(const kg_netpolicy *p)
{
    installed = p;
}

const kg_netpolicy *netpolicy_curl_policy(void)
{
    return installed;
}

/* Copies a socket address into the policy's 16-byte form.  false for other families. */
static bool sockaddr_to_addr(const struct sockaddr *sa, uint8_t a[16], int *port)
{
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;
        memset(a, 0, 10);
        a[10] = a[11] = 0xff;
        memcpy(a + 12, &in->sin_addr, 4);
        *port = ntohs(in->sin_port);
        return true;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)sa;
        memcpy(a, &in6->sin6_addr, 16);
        *port = ntohs(in6->sin6_port);
        return true;
    }
    return false;
}

static curl_socket_t open_checked(void *clientp, curlsocktype purpose, struct curl_sockaddr *ca)
{
    netpolicy_guard *g = clientp;
    uint8_t a[16];
    int port = 0;
    /* curl_sockaddr.addr is the start of a buffer of ca->addrlen bytes */
    if (purpose != CURLSOCKTYPE_IPCXN || !sockaddr_to_addr(&ca->addr, a, &port)) {
        g->refused = true;
        snprintf(g->reason, sizeof g->reason, "refused: not an IPv4 or IPv6 connection");
        return CURL_SOCKET_BAD;
    }
    if (!netpolicy_addr_allowed(installed, a, port, g->reason, sizeof g->reason)) {
        g->refused = true;
        return CURL_SOCKET_BAD;
    }
    return socket(ca->family, ca->socktype | SOCK_CLOEXEC, ca->protocol);
}

void netpolicy_curl_guard(CURL *e, netpolicy_guard *g)
{
    g->refused = false;
    g->reason[0] = '\0';
    curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, open_checked);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, g);
}

int netpolicy_resolve_db(kg_netpolicy *p)
{
    uint8_t a[16];
    if (!p->db_host[0] || netpolicy_parse_addr(p->db_host, a))
        return 0;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_family = AF_UNSPEC};
    struct addrinfo *res = NULL;
    if (getaddrinfo(p->db_host, NULL, &hints, &res) != 0)
        return 0;
    int added = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        int port;
        if (sockaddr_to_addr(ai->ai_addr, a, &port)) {
            int before = p->n_db_addrs;
            netpolicy_add_db_addr(p, a);
            added += p->n_db_addrs - before;
        }
    }
    freeaddrinfo(res);
    return added;
}
