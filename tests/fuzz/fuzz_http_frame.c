/* fuzz_http_frame.c — libFuzzer target for the strict request framing rules (api_frame.c):
 * the raw request target, the header set and the UTF-8 sanitiser every error body goes through.
 *
 * Input layout: the first line is the request target as sent; each further line is a header
 * "Name: value" (a line without ':' is a name with an empty value); byte 0, when odd, makes the
 * request HTTP/1.1.  Besides crashes and sanitizer reports, the target aborts when a promise
 * of api_frame.h breaks: an accepted target holding NUL, a control byte, a space or invalid
 * UTF-8 once decoded; an accepted header set with two Content-Lengths, Content-Length with
 * Transfer-Encoding or no Host on HTTP/1.1; a sanitised string that is not valid UTF-8, not
 * NUL-terminated or longer than its buffer.
 *
 * fuzz-sources: api_frame.c
 * (read by scripts/fuzz-short.sh: the server files this target links) */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api_frame.h"

static void check(int cond, const char *what)
{
    if (!cond) {
        fprintf(stderr, "fuzz_http_frame: broken promise: %s\n", what);
        abort();
    }
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* An independent decoder: what an accepted target decodes to must be valid UTF-8, free of
 * NUL and control bytes. */
static void check_accepted_target(const uint8_t *t, size_t n)
{
    uint8_t *dec = malloc(n + 1);
    if (!dec)
        abort();
    size_t d = 0;
    for (size_t i = 0; i < n; i++) {
        check(t[i] > 0x20 && t[i] != 0x7f, "accepted a raw control byte or space");
        if (t[i] == '%') {
            check(i + 2 < n && hexval(t[i + 1]) >= 0 && hexval(t[i + 2]) >= 0,
                  "accepted a malformed escape");
            dec[d++] = (uint8_t)(hexval(t[i + 1]) * 16 + hexval(t[i + 2]));
            i += 2;
        } else if (t[i] == '?') {
            check(api_utf8_valid((const char *)dec, d), "accepted invalid UTF-8 (path)");
            d = 0; /* the query is checked on its own */
        } else {
            dec[d++] = t[i];
        }
        check(d == 0 || (dec[d - 1] != 0 && (dec[d - 1] >= 0x20 && dec[d - 1] != 0x7f)),
              "accepted a decoded NUL or control byte");
    }
    check(api_utf8_valid((const char *)dec, d), "accepted invalid UTF-8");
    free(dec);
}

static void check_sanitizer(const uint8_t *data, size_t size)
{
    char out[97];
    memset(out, 'Z', sizeof out);
    size_t cap = 1 + (size % 96);
    size_t n = api_utf8_sanitize((const char *)data, size, out, cap);
    check(n < cap, "sanitised text longer than its buffer");
    check(out[n] == '\0', "sanitised text not terminated");
    check(strlen(out) == n, "sanitised length is wrong");
    check(api_utf8_valid(out, n), "sanitised text is not valid UTF-8");
    for (size_t i = 0; i < n; i++)
        check((unsigned char)out[i] >= 0x20 && out[i] != 0x7f, "control byte survived");
    check(out[cap] == 'Z' || cap == sizeof out, "wrote past the buffer");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    check_sanitizer(data, size);
    bool http11 = data[0] & 1;
    const uint8_t *p = data + 1, *end = data + size;
    const uint8_t *nl = memchr(p, '\n', (size_t)(end - p));
    size_t tlen = nl ? (size_t)(nl - p) : (size_t)(end - p);
    char why[128];
    if (api_frame_target_ok((const char *)p, tlen, why, sizeof why))
        check_accepted_target(p, tlen);
    else
        check(why[0] != '\0', "a refused target without a reason");

    api_frame_header h[API_FRAME_MAX_HEADERS];
    size_t n = 0;
    int cl = 0, te = 0, host = 0;
    for (p = nl ? nl + 1 : end; p < end && n < API_FRAME_MAX_HEADERS;) {
        const uint8_t *e = memchr(p, '\n', (size_t)(end - p));
        size_t len = e ? (size_t)(e - p) : (size_t)(end - p);
        const uint8_t *colon = memchr(p, ':', len);
        size_t nlen = colon ? (size_t)(colon - p) : len;
        const uint8_t *v = colon ? colon + 1 : p + len;
        while (v < p + len && *v == ' ')
            v++;
        h[n] = (api_frame_header){(const char *)p, nlen, (const char *)v, (size_t)(p + len - v)};
        if (nlen == 14 && strncasecmp((const char *)p, "Content-Length", 14) == 0)
            cl++;
        if (nlen == 17 && strncasecmp((const char *)p, "Transfer-Encoding", 17) == 0)
            te++;
        if (nlen == 4 && strncasecmp((const char *)p, "Host", 4) == 0)
            host++;
        n++;
        p = e ? e + 1 : end;
    }
    if (api_frame_headers_ok(h, n, http11, why, sizeof why)) {
        check(cl <= 1, "accepted two Content-Lengths");
        check(te <= 1, "accepted two Transfer-Encodings");
        check(!(cl && te), "accepted Content-Length with Transfer-Encoding");
        check(host <= 1, "accepted two Host headers");
        check(!http11 || host == 1, "accepted HTTP/1.1 without Host");
    } else {
        check(why[0] != '\0', "refused headers without a reason");
    }
    return 0;
}
