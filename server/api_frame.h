/* api_frame.h — strict HTTP request framing checks, the part libmicrohttpd leaves lenient.
 *
 * libmicrohttpd 0.9.75 accepts, and the HTTP server must therefore refuse itself: a request
 * target with %00 (it cuts the decoded path there: /static/app.js%00.html served app.js) or
 * invalid UTF-8 (echoed into error bodies that were then not JSON), more than one
 * Content-Length (it takes the first), Content-Length together with Transfer-Encoding (it
 * takes chunked: the classic request-smuggling disagreement with a proxy in front), a
 * Transfer-Encoding other than plain "chunked" (it waits for the body forever), an HTTP/1.1
 * request without Host, several Host headers, header names with spaces ("Content-Length :")
 * and header values with NUL or other control bytes.  Each is answered 400 with a JSON body and
 * the connection is closed, so nothing left in the stream is read as a next request.
 *
 * Everything here is a plain function of its arguments (no MHD, no sockets), so the fuzzer
 * (tests/fuzz/fuzz_http_frame.c) and the unit tests drive it directly.
 * Owns: the rules.  Must not: allocate, log or touch MHD. */
#ifndef KG_API_FRAME_H
#define KG_API_FRAME_H

#include <stdbool.h>
#include <stddef.h>

#define API_FRAME_MAX_HEADERS 128

typedef struct {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;   /* as received; a NUL inside makes it longer than strlen(value) */
} api_frame_header;

/* The request target exactly as received (before percent-decoding): no raw control bytes or
 * spaces, well-formed %XX escapes, no %00, and path and query valid UTF-8 once decoded.
 * Returns true, or false with a short reason (plain ASCII) in why. */
bool api_frame_target_ok(const char *raw, size_t len, char *why, size_t whylen);

/* The header set of one request.  `http11` is true for HTTP/1.1 (and later), where Host is
 * required.  Returns true, or false with a short reason in why. */
bool api_frame_headers_ok(const api_frame_header *h, size_t n, bool http11, char *why,
                          size_t whylen);

/* True when s[0..len) is valid UTF-8 (shortest forms, no surrogates, at most U+10FFFF). */
bool api_utf8_valid(const char *s, size_t len);

/* Copies s into out as valid UTF-8 text: invalid sequences become U+FFFD, control bytes '?',
 * and the copy is cut on a character boundary to fit.  Returns the length written (out is
 * always NUL-terminated when outlen > 0).  For anything a client sent that is echoed back. */
size_t api_utf8_sanitize(const char *s, size_t len, char *out, size_t outlen);

#endif
