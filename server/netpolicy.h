/* netpolicy.h — which addresses kumaguard may probe and send the cluster key to, and CIDR
 * lists in general (KUMAGUARD_NODE_NETWORKS, KUMAGUARD_TRUSTED_PROXIES).
 *
 * A node row can name any host:port.  Without a policy, a hostile or careless row makes
 * kumaguard probe internal services (a cloud metadata endpoint, the database's own port),
 * publish their answers on the unauthenticated /api/node-status, and once the node holds
 * monitors, send it KUMA_API_KEY.  The verdict is decided here, from the configured networks
 * and the database's address, as a pure function:
 *   - always refused: link-local (169.254.0.0/16, fe80::/10 — cloud metadata lives there),
 *     unspecified (0.0.0.0/8, ::; Linux connects those to itself), multicast and broadcast,
 *     and the cluster database's own host:port;
 *   - when KUMAGUARD_NODE_NETWORKS is set, every address outside those networks.
 * Host names cannot be judged without resolving them, and a name resolved now may point
 * elsewhere at probe time (DNS rebinding).  So names pass the static check (unless they are
 * the database's name) and every connection kumaguard makes to a node is checked again on the
 * address it actually connects to (netpolicy_curl.h), with the same netpolicy_addr_allowed.
 *
 * Addresses are kept as 16 bytes, IPv4 as IPv4-mapped IPv6 (::ffff:a.b.c.d), so one prefix
 * match serves both families.
 *
 * Owns: CIDR parsing and matching, the verdicts.  Must not: resolve names, open sockets,
 * allocate or log. */
#ifndef KG_NETPOLICY_H
#define KG_NETPOLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NETPOLICY_MAX_NETS 64
#define NETPOLICY_MAX_DB_ADDRS 8

typedef struct {
    uint8_t addr[16];  /* network address, host bits cleared */
    uint8_t prefix;    /* 0..128 (an IPv4 /n is stored as /96+n) */
} kg_cidr;

typedef struct {
    kg_cidr nets[NETPOLICY_MAX_NETS];
    int n;
} kg_cidr_list;

typedef struct {
    kg_cidr_list allowed;     /* empty = every address that is not always refused */
    char db_host[256];        /* the cluster database's host as configured; "" = none */
    int db_port;
    uint8_t db_addrs[NETPOLICY_MAX_DB_ADDRS][16]; /* its addresses: literal or resolved */
    int n_db_addrs;
    bool db_is_local;         /* DB_HOST is "localhost": every loopback address is it */
} kg_netpolicy;

/* "10.0.0.0/8, 192.168.1.7, fd00::/8" (commas and/or spaces).  A bare address is a single
 * host.  Host bits set under the prefix are an error (a typo more often than intended).
 * Returns 0, or -1 with the offending item in err. */
int netpolicy_parse_cidrs(const char *spec, kg_cidr_list *out, char *err, size_t errlen);
/* Text form of a list, "10.0.0.0/8,fd00::/8" (for logs and the debug config). */
void netpolicy_format_cidrs(const kg_cidr_list *l, char *out, size_t len);

/* IPv4 or IPv6 literal (no brackets, no port) into 16 bytes.  false when not a literal. */
bool netpolicy_parse_addr(const char *text, uint8_t out[16]);
bool netpolicy_addr_is_v4(const uint8_t a[16]);
void netpolicy_format_addr(const uint8_t a[16], char *out, size_t len);
bool netpolicy_list_contains(const kg_cidr_list *l, const uint8_t a[16]);

/* Sets the database endpoint (DB_HOST, DB_PORT).  A host starting with '/' is a unix socket:
 * nothing to refuse.  An IP literal is recorded as an address; a name is matched by name
 * (netpolicy_add_db_addr adds what it resolves to, see netpolicy_curl.h). */
void netpolicy_set_db(kg_netpolicy *p, const char *db_host, int db_port);
void netpolicy_add_db_addr(kg_netpolicy *p, const uint8_t a[16]);

/* Verdict for one address and port a connection is about to go to.  p may be NULL (only the
 * always-refused ranges apply).  false with a one-line reason in why. */
bool netpolicy_addr_allowed(const kg_netpolicy *p, const uint8_t a[16], int port, char *why,
                            size_t whylen);

/* Verdict for a node's host value: the hostcheck syntax rules first (hostcheck.h), then, for
 * an IP literal, netpolicy_addr_allowed; a host name passes unless it is the database's.
 * false with a reason in why ("invalid host value: ..." or "refused: ..."). */
bool netpolicy_host_allowed(const kg_netpolicy *p, const char *hostport, char *why,
                            size_t whylen);

#endif
