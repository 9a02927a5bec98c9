/* test_hostcheck.c — host:port and node id validation (hostcheck.h).  These values are pasted
 * into nginx configuration, so every rejection here is an injection that cannot happen. */
#include <criterion/criterion.h>
#include <string.h>

#include "hostcheck.h"

static void expect_valid(const char *h)
{
    char err[128] = "";
    cr_expect(hostcheck_valid(h, err, sizeof err), "'%s' should be valid, got: %s", h, err);
}

static void expect_invalid(const char *h)
{
    char err[128] = "";
    cr_expect_not(hostcheck_valid(h, err, sizeof err), "'%s' should be rejected", h);
    cr_expect(err[0] != 0, "a rejection of '%s' says why", h);
}

Test(hostcheck, accepts_hostnames_ipv4_and_bracketed_ipv6)
{
    expect_valid("uptime-kuma-node1:3001");
    expect_valid("127.0.0.1:3001");
    expect_valid("10.0.0.25:1");
    expect_valid("kuma.example.org:65535");
    expect_valid("node_2.internal:8080");
    expect_valid("localhost:80");
    expect_valid("[::1]:3001");
    expect_valid("[2001:db8::7]:443");
}

Test(hostcheck, rejects_config_injection_characters)
{
    expect_invalid("node1:3001;");
    expect_invalid("node1:3001; } server { listen 80");
    expect_invalid("node1:3001\n");
    expect_invalid("node1\n:3001");
    expect_invalid("no de:3001");
    expect_invalid("node1:3001 backup");
    expect_invalid("node{1}:3001");
    expect_invalid("\"node1\":3001");
    expect_invalid("'node1':3001");
    expect_invalid("node1:3001\r");
    expect_invalid("node1\t:3001");
    expect_invalid("$host:3001");
    expect_invalid("node#1:3001");
}

Test(hostcheck, rejects_bad_ports)
{
    expect_invalid("node1");
    expect_invalid("node1:");
    expect_invalid("node1:0");
    expect_invalid("node1:65536");
    expect_invalid("node1:99999999999");
    expect_invalid("node1:-1");
    expect_invalid("node1:+80");
    expect_invalid("node1:80a");
    expect_invalid("node1:8 0");
    expect_invalid("node1:80:81");
}

Test(hostcheck, rejects_urls_paths_userinfo_and_empty)
{
    expect_invalid("");
    expect_invalid(":3001");
    expect_invalid("http://node1:3001");
    expect_invalid("node1:3001/api");
    expect_invalid("node1/x:3001");
    expect_invalid("user@node1:3001");
    expect_invalid("user:pw@node1:3001");
    expect_invalid("node1:3001?x=1");
}

Test(hostcheck, rejects_malformed_ip_literals)
{
    expect_invalid("::1:3001");         /* IPv6 must be bracketed */
    expect_invalid("[::1]");
    expect_invalid("[::1]3001");
    expect_invalid("[]:3001");
    expect_invalid("[zz::1]:3001");
    expect_invalid("[::1:3001");
    expect_invalid("999.1.1.1:3001");   /* all-numeric names must be real IPv4 addresses */
    expect_invalid("1.2.3.4.5:3001");
}

Test(hostcheck, rejects_overlong_hosts)
{
    char h[400];
    memset(h, 'a', 300);
    strcpy(h + 300, ":3001");
    expect_invalid(h);
    /* one DNS label longer than 63 characters */
    memset(h, 'b', 64);
    strcpy(h + 64, ".example:3001");
    expect_invalid(h);
}

Test(hostcheck, error_buffer_is_optional)
{
    cr_expect_not(hostcheck_valid("bad host:1", NULL, 0));
    cr_expect(hostcheck_valid("good:1", NULL, 0));
    cr_expect_not(hostcheck_valid(NULL, NULL, 0));
}

Test(hostcheck, node_ids)
{
    cr_expect(hostcheck_node_id_valid("node1"));
    cr_expect(hostcheck_node_id_valid("Kuma-East_2.b"));
    char id[60];
    memset(id, 'x', 50);
    id[50] = 0;
    cr_expect(hostcheck_node_id_valid(id), "50 characters is the column width");
    id[50] = 'x';
    id[51] = 0;
    cr_expect_not(hostcheck_node_id_valid(id), "51 characters is too long");
    cr_expect_not(hostcheck_node_id_valid(""));
    cr_expect_not(hostcheck_node_id_valid(NULL));
    cr_expect_not(hostcheck_node_id_valid("node 1"));
    cr_expect_not(hostcheck_node_id_valid("node1;"));
    cr_expect_not(hostcheck_node_id_valid("node1\""));
    cr_expect_not(hostcheck_node_id_valid("node{1}"));
    cr_expect_not(hostcheck_node_id_valid("node1\n"));
    cr_expect_not(hostcheck_node_id_valid("n\xc3\xbc"));
    cr_expect_not(hostcheck_node_id_valid("a/b"));
}
