/* test_netpolicy.c — which node addresses kumaguard refuses to probe and send the cluster key
 * to (netpolicy.h), and the CIDR lists behind KUMAGUARD_NODE_NETWORKS and
 * KUMAGUARD_TRUSTED_PROXIES.  Issue 13, row 6: a node.host of 169.254.169.254:80, the
 * database's own port or any internal address used to be probed and, once it held monitors,
 * sent KUMA_API_KEY. */
#include <criterion/criterion.h>
#include <string.h>

#include "config.h"
#include "netpolicy.h"

static kg_netpolicy policy(const char *networks, const char *db_host, int db_port)
{
    kg_netpolicy p;
    memset(&p, 0, sizeof p);
    char err[200] = "";
    cr_assert_eq(netpolicy_parse_cidrs(networks, &p.allowed, err, sizeof err), 0, "%s", err);
    netpolicy_set_db(&p, db_host, db_port);
    return p;
}

static void expect_host(const kg_netpolicy *p, const char *host, bool allowed, const char *why_part)
{
    char why[200] = "";
    bool ok = netpolicy_host_allowed(p, host, why, sizeof why);
    cr_expect_eq(ok, allowed, "%s: expected %s, got %s (%s)", host, allowed ? "allowed" : "refused",
                 ok ? "allowed" : "refused", why);
    if (!allowed && why_part)
        cr_expect(strstr(why, why_part) != NULL, "%s: reason '%s' should mention '%s'", host, why,
                  why_part);
}

Test(netpolicy, parses_cidr_lists_of_both_families)
{
    kg_cidr_list l;
    char err[200] = "";
    cr_assert_eq(netpolicy_parse_cidrs("10.0.0.0/8, 192.168.1.7 fd00::/8,2001:db8::1", &l, err,
                                       sizeof err), 0, "%s", err);
    cr_assert_eq(l.n, 4);
    char text[256];
    netpolicy_format_cidrs(&l, text, sizeof text);
    cr_expect_str_eq(text, "10.0.0.0/8,192.168.1.7/32,fd00::/8,2001:db8::1/128");
    uint8_t a[16];
    cr_assert(netpolicy_parse_addr("10.200.3.4", a));
    cr_expect(netpolicy_list_contains(&l, a));
    cr_assert(netpolicy_parse_addr("11.0.0.1", a));
    cr_expect_not(netpolicy_list_contains(&l, a));
    cr_assert(netpolicy_parse_addr("fd12::5", a));
    cr_expect(netpolicy_list_contains(&l, a));
    cr_assert(netpolicy_parse_addr("192.168.1.8", a));
    cr_expect_not(netpolicy_list_contains(&l, a));
    cr_assert_eq(netpolicy_parse_cidrs("", &l, err, sizeof err), 0);
    cr_expect_eq(l.n, 0);
    cr_assert_eq(netpolicy_parse_cidrs(NULL, &l, err, sizeof err), 0);
}

Test(netpolicy, rejects_malformed_cidrs_naming_the_item)
{
    static const char *const bad[] = {"10.0.0.0/33", "10.0.0.1/8", "fd00::/129", "nope",
                                      "10.0.0.0/", "10.0.0.0/8x", "1.2.3.4.5", "/8",
                                      "10.0.0.0/-1", "[::1]"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        kg_cidr_list l;
        char err[200] = "";
        cr_expect_eq(netpolicy_parse_cidrs(bad[i], &l, err, sizeof err), -1, "'%s' accepted",
                     bad[i]);
        cr_expect(strstr(err, bad[i]) != NULL || strstr(err, "more than"), "err '%s' names '%s'",
                  err, bad[i]);
    }
}

Test(netpolicy, link_local_unspecified_and_multicast_are_always_refused)
{
    kg_netpolicy p = policy("", NULL, 0);
    expect_host(&p, "169.254.169.254:80", false, "link-local");
    expect_host(&p, "[fe80::1]:3001", false, "link-local");
    expect_host(&p, "0.0.0.0:3306", false, "not a unicast");
    expect_host(&p, "[::]:3001", false, "not a unicast");
    expect_host(&p, "224.0.0.1:3001", false, "multicast");
    expect_host(&p, "255.255.255.255:3001", false, "broadcast");
    /* also without any policy at all */
    expect_host(NULL, "169.254.169.254:80", false, "link-local");
    /* the IPv4-mapped form of a link-local address is the same address */
    expect_host(&p, "[::ffff:169.254.169.254]:80", false, "link-local");
    /* ordinary addresses and names pass */
    expect_host(&p, "10.1.2.3:3001", true, NULL);
    expect_host(&p, "127.0.0.1:3001", true, NULL);
    expect_host(&p, "uptime-kuma-node1:3001", true, NULL);
}

Test(netpolicy, the_databases_own_address_is_refused)
{
    kg_netpolicy p = policy("", "10.0.0.5", 3306);
    expect_host(&p, "10.0.0.5:3306", false, "cluster database");
    expect_host(&p, "10.0.0.5:3001", true, NULL); /* another port on that host may be a node */
    expect_host(&p, "10.0.0.6:3306", true, NULL);

    kg_netpolicy named = policy("", "mariadb", 3306);
    expect_host(&named, "mariadb:3306", false, "cluster database");
    expect_host(&named, "MariaDB:3306", false, "cluster database");
    expect_host(&named, "mariadb:3307", true, NULL);
    uint8_t a[16];
    cr_assert(netpolicy_parse_addr("172.28.50.2", a));
    netpolicy_add_db_addr(&named, a); /* what the name resolved to at start-up */
    expect_host(&named, "172.28.50.2:3306", false, "cluster database");

    kg_netpolicy local = policy("", "localhost", 3306);
    expect_host(&local, "127.0.0.1:3306", false, "cluster database");
    expect_host(&local, "127.0.0.2:3306", false, "cluster database");
    expect_host(&local, "[::1]:3306", false, "cluster database");
    expect_host(&local, "localhost:3306", false, "cluster database");
    expect_host(&local, "127.0.0.1:3001", true, NULL);

    kg_netpolicy sock = policy("", "/run/mysqld/mysqld.sock", 3306);
    expect_host(&sock, "127.0.0.1:3306", true, NULL); /* a socket has no TCP address */
}

Test(netpolicy, configured_networks_refuse_everything_else)
{
    kg_netpolicy p = policy("10.0.0.0/8, fd00::/8", NULL, 0);
    expect_host(&p, "10.9.8.7:3001", true, NULL);
    expect_host(&p, "[fd00::7]:3001", true, NULL);
    expect_host(&p, "192.168.1.1:3001", false, "outside KUMAGUARD_NODE_NETWORKS");
    expect_host(&p, "127.0.0.1:3001", false, "outside KUMAGUARD_NODE_NETWORKS");
    expect_host(&p, "[2001:db8::1]:3001", false, "outside KUMAGUARD_NODE_NETWORKS");
    /* the always-refused ranges stay refused even inside a configured network */
    kg_netpolicy wide = policy("0.0.0.0/0, ::/0", NULL, 0);
    expect_host(&wide, "169.254.169.254:80", false, "link-local");
    /* a host name cannot be judged without resolving it: it passes here and is checked on
     * the address each connection goes to (netpolicy_addr_allowed, via netpolicy_curl) */
    expect_host(&p, "kuma-node-1.internal:3001", true, NULL);
    uint8_t a[16];
    char why[200] = "";
    cr_assert(netpolicy_parse_addr("192.168.1.1", a));
    cr_expect_not(netpolicy_addr_allowed(&p, a, 3001, why, sizeof why));
    cr_expect(strstr(why, "192.168.1.1") && strstr(why, "outside"), "%s", why);
}

Test(netpolicy, invalid_host_values_are_refused_with_the_syntax_reason)
{
    kg_netpolicy p = policy("", NULL, 0);
    expect_host(&p, "node1:3001; } server {", false, "invalid host value");
    expect_host(&p, "node1", false, "invalid host value");
    expect_host(&p, "", false, "invalid host value");
}

Test(netpolicy, config_parses_node_networks_and_trusted_proxies_and_names_bad_values)
{
    kg_config cfg;
    char err[300];
    char *argv[] = {"kumaguard", "--node-networks", "10.0.0.0/8", "--trusted-proxies",
                    "127.0.0.1", "--db-host", "10.0.0.5", "--db-port", "3307", NULL};
    char *envp[] = {NULL};
    cr_assert_eq(config_load(&cfg, 9, argv, envp, stdout, err, sizeof err), 0, "%s", err);
    cr_expect_eq(cfg.node_policy.allowed.n, 1);
    cr_expect_eq(cfg.trusted_proxy_nets.n, 1);
    cr_expect_eq(cfg.node_policy.db_port, 3307);
    char why[200];
    cr_expect_not(netpolicy_host_allowed(&cfg.node_policy, "10.0.0.5:3307", why, sizeof why));
    config_free(&cfg);

    char *bad[] = {"kumaguard", "--node-networks", "10.0.0.0/33", NULL};
    cr_expect_eq(config_load(&cfg, 3, bad, envp, stdout, err, sizeof err), -1);
    cr_expect(strstr(err, "KUMAGUARD_NODE_NETWORKS") && strstr(err, "10.0.0.0/33"), "%s", err);
    config_free(&cfg);
    char *env_bad[] = {"KUMAGUARD_TRUSTED_PROXIES=proxy.example", NULL};
    char *plain[] = {"kumaguard", NULL};
    cr_expect_eq(config_load(&cfg, 1, plain, env_bad, stdout, err, sizeof err), -1);
    cr_expect(strstr(err, "KUMAGUARD_TRUSTED_PROXIES"), "%s", err);
    config_free(&cfg);
}
