/* hostcheck.c — validation of "host:port" values and node ids (see hostcheck.h).
 *
 * Owns: pure string checks.  Must not: resolve names, allocate, or accept anything that is not
 * plainly a hostname / IP literal and a port: these values are pasted into nginx config. */
#include "hostcheck.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "types.h"

static bool fail(char *err, size_t errlen, const char *why)
{
    if (err && errlen)
        snprintf(err, errlen, "%s", why);
    return false;
}

static bool port_valid(const char *p)
{
    if (!*p || strlen(p) > 5)
        return false;
    long v = 0;
    for (; *p; p++) {
        if (*p < '0' || *p > '9')
            return false;
        v = v * 10 + (*p - '0');
    }
    return v >= 1 && v <= 65535;
}

static bool hostname_valid(const char *h, size_t len)
{
    if (len == 0 || len > 253)
        return false;
    size_t label = 0;
    for (size_t i = 0; i < len; i++) {
        char c = h[i];
        if (c == '.') {
            if (label == 0)
                return false;
            label = 0;
            continue;
        }
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '_';
        if (!ok || (c == '-' && label == 0) || ++label > 63)
            return false;
    }
    return h[len - 1] != '-' && h[len - 1] != '.';
}

bool hostcheck_valid(const char *hostport, char *err, size_t errlen)
{
    if (!hostport || !*hostport)
        return fail(err, errlen, "empty host");
    size_t len = strlen(hostport);
    if (len > 262)
        return fail(err, errlen, "host too long");
    char host[264];
    const char *port;
    if (hostport[0] == '[') {
        const char *close = strchr(hostport, ']');
        if (!close || close[1] != ':')
            return fail(err, errlen, "IPv6 literal must be [addr]:port");
        size_t hl = (size_t)(close - hostport - 1);
        if (hl == 0 || hl >= 64)
            return fail(err, errlen, "bad IPv6 literal");
        memcpy(host, hostport + 1, hl);
        host[hl] = 0;
        struct in6_addr a6;
        if (inet_pton(AF_INET6, host, &a6) != 1)
            return fail(err, errlen, "bad IPv6 literal");
        port = close + 2;
    } else {
        const char *colon = strrchr(hostport, ':');
        if (!colon)
            return fail(err, errlen, "missing :port");
        size_t hl = (size_t)(colon - hostport);
        if (hl >= sizeof host)
            return fail(err, errlen, "host too long");
        memcpy(host, hostport, hl);
        host[hl] = 0;
        if (!hostname_valid(host, hl))
            return fail(err, errlen, "host is not a hostname or IP address");
        /* all-numeric dotted names must be real IPv4 addresses (no 999.1.1.1) */
        if (strspn(host, "0123456789.") == hl) {
            struct in_addr a4;
            if (inet_pton(AF_INET, host, &a4) != 1)
                return fail(err, errlen, "bad IPv4 address");
        }
        port = colon + 1;
    }
    if (!port_valid(port))
        return fail(err, errlen, "port must be 1-65535");
    return true;
}

bool hostcheck_node_id_valid_n(const char *id, size_t len)
{
    if (!id || len == 0 || len > KG_NODE_ID_MAX)
        return false; /* never cut a longer id: the cut one would name another node */
    for (size_t n = 0; n < len; n++) {
        char c = id[n];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '_' || c == '.';
        if (!ok)
            return false;
    }
    return true;
}

bool hostcheck_node_id_valid(const char *id)
{
    return id && hostcheck_node_id_valid_n(id, strnlen(id, KG_NODE_ID_MAX + 1));
}
