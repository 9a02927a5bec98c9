/* api_limits.h — per-client accounting for the HTTP server: open connections and open event
 * streams per client, so one client (a flood of slow connections, a page opening stream after
 * stream) can never take what every other client needs.
 *
 * Who is "one client":
 *   - the peer address of the TCP connection; an IPv6 peer by its /64 (one host usually holds
 *     a whole /64, and would otherwise get a fresh quota per address);
 *   - for event streams arriving from a trusted reverse proxy (KUMAGUARD_TRUSTED_PROXIES): the
 *     rightmost X-Forwarded-For entry, which is the address the proxy itself saw (entries left
 *     of it were sent by the client and prove nothing).  Connections cannot be told apart that
 *     way — the header is not read yet when a connection is accepted — so a trusted proxy's
 *     connections count only against the overall limit.
 *
 * A table counts per client (a short array: the number of distinct clients is bounded by the
 * open connections); a mutex makes it safe from every MHD thread.
 * Owns: client keys and the tables.  Must not: touch MHD or sockets, or log. */
#ifndef KG_API_LIMITS_H
#define KG_API_LIMITS_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "netpolicy.h"

typedef struct {
    uint8_t b[16];  /* IPv4-mapped IPv6; IPv6 with the low 64 bits cleared */
} api_client_key;

/* From a socket address; false for families other than IPv4/IPv6. */
bool api_client_key_from_sockaddr(const struct sockaddr *sa, api_client_key *k);
/* From an address literal (no port, no brackets). */
bool api_client_key_from_text(const char *s, api_client_key *k);
/* The rightmost entry of an X-Forwarded-For value; false when absent or not an address. */
bool api_client_key_from_xff(const char *xff, api_client_key *k);
void api_client_key_format(const api_client_key *k, char *out, size_t len);

/* The key requests of peer `sa` are counted under: the peer itself, or — when the peer is a
 * trusted proxy and sent a usable X-Forwarded-For — the address it forwarded for. */
bool api_client_key_for_request(const struct sockaddr *sa, const kg_cidr_list *trusted,
                                const char *xff, api_client_key *k);
/* The peer is one of the trusted proxies. */
bool api_peer_is_trusted(const struct sockaddr *sa, const kg_cidr_list *trusted);

typedef struct api_limits api_limits;

api_limits *api_limits_new(void);
void api_limits_free(api_limits *l);
/* Current count for k. */
int api_limits_count(api_limits *l, const api_client_key *k);
/* Adds one for k when its count is below max (max <= 0: no limit); false when at the limit
 * (or out of memory). */
bool api_limits_acquire(api_limits *l, const api_client_key *k, int max);
/* Takes one away (a no-op at zero). */
void api_limits_release(api_limits *l, const api_client_key *k);
/* Distinct clients with a non-zero count, and the sum of the counts. */
void api_limits_totals(api_limits *l, int *clients, int *total);

#endif
