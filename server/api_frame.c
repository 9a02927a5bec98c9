/* api_frame.c — strict request framing rules (see api_frame.h for what and why).
 *
 * Owns: the target, header and UTF-8 rules.  Must not: allocate, log or call into MHD: it is
 * fuzzed (tests/fuzz/fuzz_http_frame.c). */
#include "api_frame.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

static bool fail(char *why, size_t whylen, const char *text)
{
    if (why && whylen)
        snprintf(why, whylen, "%s", text);
    return false;
}

/* ------------------------------------------------------------------------------------------
 * UTF-8
 * ------------------------------------------------------------------------------------------ */

/* Incremental UTF-8 validation over a decoded byte stream, one byte at a time. */
typedef struct {
    int need;      /* continuation bytes still expected */
    uint32_t cp, min;
} utf8_state;

static bool utf8_feed(utf8_state *u, unsigned char c)
{
    if (u->need == 0) {
        if (c < 0x80)
            return true;
        if (c >= 0xc2 && c <= 0xdf)
            u->need = 1, u->cp = c & 0x1f, u->min = 0x80;
        else if (c >= 0xe0 && c <= 0xef)
            u->need = 2, u->cp = c & 0x0f, u->min = 0x800;
        else if (c >= 0xf0 && c <= 0xf4)
            u->need = 3, u->cp = c & 0x07, u->min = 0x10000;
        else
            return false;
        return true;
    }
    if ((c & 0xc0) != 0x80)
        return false;
    u->cp = (u->cp << 6) | (c & 0x3f);
    if (--u->need > 0)
        return true;
    return u->cp >= u->min && u->cp <= 0x10ffff && (u->cp < 0xd800 || u->cp > 0xdfff);
}

/* Length of the valid UTF-8 sequence at s (at most len bytes), or 0 when it is not one. */
static size_t utf8_seq(const unsigned char *s, size_t len)
{
    utf8_state u = {0, 0, 0};
    for (size_t i = 0; i < len && i < 4; i++) {
        if (!utf8_feed(&u, s[i]))
            return 0;
        if (u.need == 0)
            return i + 1;
    }
    return 0;
}

bool api_utf8_valid(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < len;) {
        size_t n = utf8_seq(p + i, len - i);
        if (n == 0)
            return false;
        i += n;
    }
    return true;
}

size_t api_utf8_sanitize(const char *s, size_t len, char *out, size_t outlen)
{
    static const char replacement[] = "\xef\xbf\xbd"; /* U+FFFD */
    if (outlen == 0)
        return 0;
    const unsigned char *p = (const unsigned char *)(s ? s : "");
    size_t o = 0;
    for (size_t i = 0; i < len && p[i];) {
        size_t n = utf8_seq(p + i, len - i);
        const char *src = (const char *)p + i;
        size_t w = n;
        char q = '?';
        if (n == 0) {
            src = replacement, w = 3, n = 1;
        } else if (n == 1 && (p[i] < 0x20 || p[i] == 0x7f)) {
            src = &q, w = 1;
        }
        if (o + w >= outlen)
            break;
        memcpy(out + o, src, w);
        o += w;
        i += n;
    }
    out[o] = '\0';
    return o;
}

/* ------------------------------------------------------------------------------------------
 * Request target
 * ------------------------------------------------------------------------------------------ */

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Checks one component (path or query) of the target: escapes, NUL, decoded UTF-8. */
static bool component_ok(const unsigned char *s, size_t len, char *why, size_t whylen)
{
    utf8_state u = {0, 0, 0};
    for (size_t i = 0; i < len; i++) {
        unsigned char c = s[i];
        if (c == '%') {
            int hi = i + 2 < len ? hexval(s[i + 1]) : -1;
            int lo = i + 2 < len ? hexval(s[i + 2]) : -1;
            if (hi < 0 || lo < 0)
                return fail(why, whylen, "malformed %-escape in the request target");
            c = (unsigned char)(hi * 16 + lo);
            i += 2;
            if (c == 0)
                return fail(why, whylen, "NUL (%00) in the request target");
            if (c < 0x20 || c == 0x7f)
                return fail(why, whylen, "control character in the request target");
        }
        if (!utf8_feed(&u, c))
            return fail(why, whylen, "the request target is not valid UTF-8");
    }
    if (u.need)
        return fail(why, whylen, "the request target is not valid UTF-8");
    return true;
}

bool api_frame_target_ok(const char *raw, size_t len, char *why, size_t whylen)
{
    if (!raw || len == 0)
        return fail(why, whylen, "empty request target");
    const unsigned char *s = (const unsigned char *)raw;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == 0)
            return fail(why, whylen, "NUL in the request target");
        if (s[i] < 0x21 || s[i] == 0x7f)
            return fail(why, whylen, "control character or space in the request target");
    }
    const unsigned char *q = memchr(s, '?', len);
    size_t plen = q ? (size_t)(q - s) : len;
    if (!component_ok(s, plen, why, whylen))
        return false;
    return !q || component_ok(q + 1, len - plen - 1, why, whylen);
}

/* ------------------------------------------------------------------------------------------
 * Headers
 * ------------------------------------------------------------------------------------------ */

static bool tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

static bool name_is(const api_frame_header *h, const char *want)
{
    return h->name_len == strlen(want) && strncasecmp(h->name, want, h->name_len) == 0;
}

/* The value without leading and trailing spaces/tabs equals `want` (case-insensitive). */
static bool value_is(const api_frame_header *h, const char *want)
{
    const char *v = h->value;
    size_t n = h->value_len;
    while (n && (*v == ' ' || *v == '\t'))
        v++, n--;
    while (n && (v[n - 1] == ' ' || v[n - 1] == '\t'))
        n--;
    return n == strlen(want) && strncasecmp(v, want, n) == 0;
}

bool api_frame_headers_ok(const api_frame_header *h, size_t n, bool http11, char *why,
                          size_t whylen)
{
    int content_length = 0, transfer_encoding = 0, host = 0;
    for (size_t i = 0; i < n; i++) {
        if (h[i].name_len == 0)
            return fail(why, whylen, "empty header name");
        for (size_t k = 0; k < h[i].name_len; k++)
            if (!tchar((unsigned char)h[i].name[k]))
                return fail(why, whylen, "invalid character in a header name");
        for (size_t k = 0; k < h[i].value_len; k++) {
            unsigned char c = (unsigned char)h[i].value[k];
            if ((c < 0x20 && c != '\t') || c == 0x7f)
                return fail(why, whylen, "NUL or control character in a header value");
        }
        if (name_is(&h[i], "Content-Length")) {
            content_length++;
            size_t digits = 0;
            for (size_t k = 0; k < h[i].value_len; k++) {
                char c = h[i].value[k];
                if (c >= '0' && c <= '9')
                    digits++;
                else if (c != ' ' && c != '\t')
                    return fail(why, whylen, "Content-Length is not a number");
            }
            if (digits == 0)
                return fail(why, whylen, "Content-Length is not a number");
        } else if (name_is(&h[i], "Transfer-Encoding")) {
            transfer_encoding++;
            if (!value_is(&h[i], "chunked"))
                return fail(why, whylen, "unsupported Transfer-Encoding (only \"chunked\")");
        } else if (name_is(&h[i], "Host")) {
            host++;
        }
    }
    if (content_length > 1)
        return fail(why, whylen, "more than one Content-Length");
    if (transfer_encoding > 1)
        return fail(why, whylen, "more than one Transfer-Encoding");
    if (content_length && transfer_encoding)
        return fail(why, whylen, "Content-Length together with Transfer-Encoding");
    if (host > 1)
        return fail(why, whylen, "more than one Host");
    if (http11 && host == 0)
        return fail(why, whylen, "HTTP/1.1 request without Host");
    return true;
}
