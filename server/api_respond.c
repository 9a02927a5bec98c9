/* api_respond.c — how every HTTP answer of kumaguard is made: common headers, JSON bodies,
 * errors as valid UTF-8 JSON, the peer's address (see api_respond.h).
 *
 * Owns: response building.  Must not: route, authenticate, or read cluster state. */
#include "api_respond.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api_frame.h"
#include "api_json.h"

void api_add_common_headers(struct MHD_Response *resp)
{
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(resp, "X-Frame-Options", "DENY");
}

enum MHD_Result api_queue_buffer(struct MHD_Connection *c, unsigned status, char *body,
                                 size_t len, const char *ctype, const char *set_cookie,
                                 const char *allow)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(body);
        return MHD_NO;
    }
    api_add_common_headers(resp);
    MHD_add_response_header(resp, "Content-Type", ctype);
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    if (set_cookie)
        MHD_add_response_header(resp, "Set-Cookie", set_cookie);
    if (allow)
        MHD_add_response_header(resp, "Allow", allow);
    if (status == MHD_HTTP_UNAUTHORIZED)
        MHD_add_response_header(resp, "WWW-Authenticate", "Bearer realm=\"kumaguard\"");
    enum MHD_Result ret = MHD_queue_response(c, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

enum MHD_Result api_queue_json_ex(struct MHD_Connection *c, unsigned status, json_object *o,
                                  const char *set_cookie, const char *allow)
{
    size_t len = 0;
    char *body = o ? api_json_dump(o, &len) : NULL;
    json_object_put(o);
    if (!body)
        return MHD_NO;
    return api_queue_buffer(c, status, body, len, "application/json", set_cookie, allow);
}

enum MHD_Result api_queue_json(struct MHD_Connection *c, unsigned status, json_object *o,
                               const char *set_cookie)
{
    return api_queue_json_ex(c, status, o, set_cookie, NULL);
}

/* Error details often quote what the client sent (a path, a node id): only valid UTF-8 text
 * goes into the JSON, so the body stays JSON whatever the bytes were. */
enum MHD_Result api_queue_error(struct MHD_Connection *c, unsigned status, const char *error,
                                const char *detail)
{
    char e[128], d[512];
    api_utf8_sanitize(error, error ? strlen(error) : 0, e, sizeof e);
    api_utf8_sanitize(detail, detail ? strlen(detail) : 0, d, sizeof d);
    return api_queue_json_ex(c, status, api_doc_error(e, detail ? d : NULL), NULL, NULL);
}

const struct sockaddr *api_peer_addr(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    return ci ? ci->client_addr : NULL;
}

void api_peer_string(struct MHD_Connection *c, char *out, size_t len)
{
    const struct sockaddr *sa = api_peer_addr(c);
    char host[INET6_ADDRSTRLEN] = "?";
    if (sa && sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, host,
                  sizeof host);
    else if (sa && sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, host,
                  sizeof host);
    snprintf(out, len, "%s", host);
}
