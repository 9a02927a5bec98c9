/* test_api_frame.c — the strict request framing rules (api_frame.h) and the per-client keys
 * and counts (api_limits.h), as pure functions.  The same rules are exercised against the
 * real server over raw sockets in tests/integration/test_hardening.py. */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <string.h>

#include "api_frame.h"
#include "api_limits.h"

static bool target(const char *raw, char *why, size_t whylen)
{
    return api_frame_target_ok(raw, strlen(raw), why, whylen);
}

static void expect_target_refused(const char *raw, const char *why_part)
{
    char why[128] = "";
    cr_expect_not(target(raw, why, sizeof why), "'%s' accepted", raw);
    cr_expect(strstr(why, why_part) != NULL, "'%s': reason '%s' lacks '%s'", raw, why, why_part);
}

Test(api_frame, accepts_ordinary_targets)
{
    static const char *const ok[] = {
        "/", "/api/system-status", "/static/app.js", "/lb/fixed-node/node-1.a_b",
        "/api/failover-history?node=node1&limit=50", "/caf%C3%A9", "/caf\xc3\xa9",
        "/%E2%82%AC?q=%F0%9F%98%80", "/a%20b", "*", "/?", "/x?a=%2F%3F",
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        char why[128] = "";
        cr_expect(target(ok[i], why, sizeof why), "'%s' refused: %s", ok[i], why);
    }
}

Test(api_frame, refuses_nul_controls_bad_escapes_and_invalid_utf8)
{
    expect_target_refused("/static/app.js%00.html", "NUL");
    expect_target_refused("/x?a=%00", "NUL");
    expect_target_refused("/a%0Ab", "control");
    expect_target_refused("/a%7f", "control");
    expect_target_refused("/a\tb", "control");
    expect_target_refused("/a b", "space");
    expect_target_refused("/a%zz", "escape");
    expect_target_refused("/a%4", "escape");
    expect_target_refused("/a%", "escape");
    expect_target_refused("/nope%ff%fe", "UTF-8");
    expect_target_refused("/nope\xff\xfe", "UTF-8");
    expect_target_refused("/%C0%AF", "UTF-8");          /* overlong '/' */
    expect_target_refused("/%ED%A0%80", "UTF-8");       /* surrogate */
    expect_target_refused("/%F4%90%80%80", "UTF-8");    /* beyond U+10FFFF */
    expect_target_refused("/%C3", "UTF-8");             /* cut sequence at the end */
    expect_target_refused("/%C3/", "UTF-8");            /* cut sequence before ASCII */
    expect_target_refused("/x?q=%E2%82", "UTF-8");
    char why[64] = "";
    cr_expect_not(api_frame_target_ok("/a\0b", 4, why, sizeof why), "embedded NUL accepted");
    cr_expect_not(api_frame_target_ok("", 0, why, sizeof why));
}

#define H(n, v) {n, sizeof n - 1, v, sizeof v - 1}

static void expect_headers(const api_frame_header *h, size_t n, bool http11, bool want,
                           const char *why_part)
{
    char why[128] = "";
    bool ok = api_frame_headers_ok(h, n, http11, why, sizeof why);
    cr_expect_eq(ok, want, "expected %s, got %s (%s)", want ? "ok" : "refused",
                 ok ? "ok" : "refused", why);
    if (!want)
        cr_expect(strstr(why, why_part) != NULL, "reason '%s' lacks '%s'", why, why_part);
}

Test(api_frame, header_rules)
{
    api_frame_header plain[] = {H("Host", "x"), H("Content-Length", "2")};
    expect_headers(plain, 2, true, true, NULL);
    api_frame_header chunked[] = {H("host", "x"), H("Transfer-Encoding", " Chunked ")};
    expect_headers(chunked, 2, true, true, NULL);

    api_frame_header dup[] = {H("Host", "x"), H("Content-Length", "2"), H("content-length", "2")};
    expect_headers(dup, 3, true, false, "more than one Content-Length");
    api_frame_header both[] = {H("Host", "x"), H("Content-Length", "5"),
                               H("Transfer-Encoding", "chunked")};
    expect_headers(both, 3, true, false, "Content-Length together with Transfer-Encoding");
    api_frame_header gzip[] = {H("Host", "x"), H("Transfer-Encoding", "gzip, chunked")};
    expect_headers(gzip, 2, true, false, "Transfer-Encoding");
    api_frame_header two_te[] = {H("Host", "x"), H("Transfer-Encoding", "chunked"),
                                 H("Transfer-Encoding", "chunked")};
    expect_headers(two_te, 3, true, false, "more than one Transfer-Encoding");
    api_frame_header no_host[] = {H("Accept", "*/*")};
    expect_headers(no_host, 1, true, false, "without Host");
    expect_headers(no_host, 1, false, true, NULL); /* HTTP/1.0 needs no Host */
    api_frame_header two_hosts[] = {H("Host", "a"), H("Host", "b")};
    expect_headers(two_hosts, 2, true, false, "more than one Host");
    api_frame_header space_name[] = {H("Host", "x"), H("Content-Length ", "5")};
    expect_headers(space_name, 2, true, false, "header name");
    api_frame_header ctl_value[] = {H("Host", "x"), {"X-A", 3, "a\0b", 3}};
    expect_headers(ctl_value, 2, true, false, "control");
    api_frame_header bad_cl[] = {H("Host", "x"), H("Content-Length", "+5")};
    expect_headers(bad_cl, 2, true, false, "not a number");
    api_frame_header empty_cl[] = {H("Host", "x"), H("Content-Length", "")};
    expect_headers(empty_cl, 2, true, false, "not a number");
}

Test(api_frame, utf8_sanitize_always_yields_valid_text)
{
    char out[64];
    size_t n = api_utf8_sanitize("ok \xff end", 8, out, sizeof out);
    cr_expect_str_eq(out, "ok \xef\xbf\xbd end");
    cr_expect_eq(n, strlen(out));
    api_utf8_sanitize("a\nb\x01", 4, out, sizeof out);
    cr_expect_str_eq(out, "a?b?");
    /* cut on a character boundary: "é" (2 bytes) does not fit in the last byte */
    char small[4];
    api_utf8_sanitize("ab\xc3\xa9", 4, small, sizeof small);
    cr_expect_str_eq(small, "ab");
    cr_expect(api_utf8_valid(small, strlen(small)));
    /* an invalid input of every byte value comes out valid */
    char all[256];
    for (int i = 0; i < 255; i++)
        all[i] = (char)(i + 1);
    char big[1024];
    api_utf8_sanitize(all, 255, big, sizeof big);
    cr_expect(api_utf8_valid(big, strlen(big)));
    cr_expect_eq(api_utf8_sanitize(NULL, 0, out, sizeof out), 0);
}

/* ------------------------------------------------------------------------------------------
 * Per-client keys and counts
 * ------------------------------------------------------------------------------------------ */

static struct sockaddr_in v4(const char *a)
{
    struct sockaddr_in in = {.sin_family = AF_INET, .sin_port = htons(1234)};
    inet_pton(AF_INET, a, &in.sin_addr);
    return in;
}

static struct sockaddr_in6 v6(const char *a)
{
    struct sockaddr_in6 in6 = {.sin6_family = AF_INET6, .sin6_port = htons(1234)};
    inet_pton(AF_INET6, a, &in6.sin6_addr);
    return in6;
}

Test(api_limits, ipv6_clients_are_counted_per_64_ipv4_per_address)
{
    api_client_key a, b;
    struct sockaddr_in6 x = v6("2001:db8:1:2::1"), y = v6("2001:db8:1:2:ffff::9");
    cr_assert(api_client_key_from_sockaddr((struct sockaddr *)&x, &a));
    cr_assert(api_client_key_from_sockaddr((struct sockaddr *)&y, &b));
    cr_expect_eq(memcmp(&a, &b, sizeof a), 0, "one /64 is one client");
    struct sockaddr_in6 z = v6("2001:db8:1:3::1");
    cr_assert(api_client_key_from_sockaddr((struct sockaddr *)&z, &b));
    cr_expect_neq(memcmp(&a, &b, sizeof a), 0);
    /* IPv4 (also as IPv4-mapped IPv6 on a dual-stack socket) is one address per client */
    struct sockaddr_in p = v4("192.0.2.1"), q = v4("192.0.2.2");
    struct sockaddr_in6 pm = v6("::ffff:192.0.2.1");
    api_client_key kp, kq, kpm;
    cr_assert(api_client_key_from_sockaddr((struct sockaddr *)&p, &kp));
    cr_assert(api_client_key_from_sockaddr((struct sockaddr *)&q, &kq));
    cr_assert(api_client_key_from_sockaddr((struct sockaddr *)&pm, &kpm));
    cr_expect_neq(memcmp(&kp, &kq, sizeof kp), 0);
    cr_expect_eq(memcmp(&kp, &kpm, sizeof kp), 0);
}

Test(api_limits, forwarded_for_counts_only_from_a_trusted_proxy_and_only_its_rightmost_entry)
{
    kg_cidr_list trusted;
    char err[128];
    cr_assert_eq(netpolicy_parse_cidrs("127.0.0.1", &trusted, err, sizeof err), 0);
    struct sockaddr_in proxy = v4("127.0.0.1"), other = v4("127.0.0.2");
    api_client_key k, want;
    /* the client wrote "6.6.6.6"; nginx appended the address it saw */
    cr_assert(api_client_key_for_request((struct sockaddr *)&proxy, &trusted,
                                         "6.6.6.6, 203.0.113.7", &k));
    cr_assert(api_client_key_from_text("203.0.113.7", &want));
    cr_expect_eq(memcmp(&k, &want, sizeof k), 0);
    /* from an untrusted peer the header is ignored */
    cr_assert(api_client_key_for_request((struct sockaddr *)&other, &trusted, "203.0.113.7", &k));
    cr_assert(api_client_key_from_text("127.0.0.2", &want));
    cr_expect_eq(memcmp(&k, &want, sizeof k), 0);
    /* a trusted proxy without a usable header is itself the client */
    cr_assert(api_client_key_for_request((struct sockaddr *)&proxy, &trusted, "garbage", &k));
    cr_assert(api_client_key_from_text("127.0.0.1", &want));
    cr_expect_eq(memcmp(&k, &want, sizeof k), 0);
    cr_expect(api_client_key_from_xff("[2001:db8::5]", &k));
    cr_expect_not(api_client_key_from_xff("1.2.3.4, ", &k));
    cr_expect_not(api_client_key_from_xff(NULL, &k));
    cr_expect(api_peer_is_trusted((struct sockaddr *)&proxy, &trusted));
    cr_expect_not(api_peer_is_trusted((struct sockaddr *)&other, &trusted));
    cr_expect_not(api_peer_is_trusted((struct sockaddr *)&proxy, NULL));
}

Test(api_limits, counts_acquire_up_to_max_and_release)
{
    api_limits *l = api_limits_new();
    cr_assert_not_null(l);
    api_client_key a, b;
    api_client_key_from_text("10.0.0.1", &a);
    api_client_key_from_text("10.0.0.2", &b);
    for (int i = 0; i < 3; i++)
        cr_expect(api_limits_acquire(l, &a, 3));
    cr_expect_not(api_limits_acquire(l, &a, 3), "a fourth over a limit of three");
    cr_expect(api_limits_acquire(l, &b, 3), "another client is not affected");
    cr_expect_eq(api_limits_count(l, &a), 3);
    api_limits_release(l, &a);
    cr_expect(api_limits_acquire(l, &a, 3));
    int clients, total;
    api_limits_totals(l, &clients, &total);
    cr_expect_eq(clients, 2);
    cr_expect_eq(total, 4);
    for (int i = 0; i < 5; i++) /* more releases than acquires are harmless */
        api_limits_release(l, &a);
    api_limits_release(l, &b);
    api_limits_totals(l, &clients, &total);
    cr_expect_eq(clients, 0);
    cr_expect_eq(total, 0);
    for (int i = 0; i < 1000; i++) { /* no limit, many clients: the table grows */
        api_client_key k = a;
        k.b[14] = (uint8_t)(i >> 8);
        k.b[15] = (uint8_t)i;
        cr_expect(api_limits_acquire(l, &k, 0));
    }
    api_limits_totals(l, &clients, &total);
    cr_expect_eq(clients, 1000);
    api_limits_free(l);
}
