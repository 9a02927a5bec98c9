/* reconcile.c — POST <node>/api/v1/reconcile-monitors to several Kuma nodes at once, so they
 * pick up moved monitors within about a second instead of at their next minute tick.
 *
 * Owns: a short-lived curl multi handle per call.  Must not: choose targets, retry (the
 * controller keeps the retry list), or log the API key. */
#include "reconcile.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "netpolicy_curl.h"

static size_t discard(char *d, size_t s, size_t n, void *u)
{
    (void)d;
    (void)u;
    return s * n;
}

int reconcile_nudge(reconcile_target *t, int n, const char *api_key, const char *path,
                    int timeout_ms)
{
    if (n <= 0)
        return 0;
    CURLM *multi = curl_multi_init();
    CURL **easy = calloc((size_t)n, sizeof *easy);
    netpolicy_guard *guard = calloc((size_t)n, sizeof *guard); /* the key never leaves for a
                                                                  refused address */
    struct curl_slist *hdr = NULL;
    int ok = 0;
    if (!multi || !easy || !guard) {
        for (int i = 0; i < n; i++)
            snprintf(t[i].error, sizeof t[i].error, "out of memory");
        goto done;
    }
    char auth[1024];
    snprintf(auth, sizeof auth, "Authorization: %s", api_key ? api_key : "");
    hdr = curl_slist_append(hdr, auth);
    hdr = curl_slist_append(hdr, "Content-Type: application/json");
    for (int i = 0; i < n; i++) {
        t[i].ok = false;
        t[i].error[0] = 0;
        char url[KG_HOST_MAX + 300];
        snprintf(url, sizeof url, "http://%s%s", t[i].host, path);
        easy[i] = curl_easy_init();
        if (!easy[i]) {
            snprintf(t[i].error, sizeof t[i].error, "curl init failed");
            continue;
        }
        curl_easy_setopt(easy[i], CURLOPT_URL, url);
        curl_easy_setopt(easy[i], CURLOPT_POST, 1L);
        curl_easy_setopt(easy[i], CURLOPT_POSTFIELDS, "{}");
        curl_easy_setopt(easy[i], CURLOPT_HTTPHEADER, hdr);
        curl_easy_setopt(easy[i], CURLOPT_TIMEOUT_MS, (long)timeout_ms);
        curl_easy_setopt(easy[i], CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(easy[i], CURLOPT_WRITEFUNCTION, discard);
        curl_easy_setopt(easy[i], CURLOPT_PROTOCOLS_STR, "http");
        curl_easy_setopt(easy[i], CURLOPT_PRIVATE, &t[i]);
        netpolicy_curl_guard(easy[i], &guard[i]);
        curl_multi_add_handle(multi, easy[i]);
    }
    int running = 1;
    while (running) {
        if (curl_multi_perform(multi, &running) != CURLM_OK)
            break;
        if (running)
            curl_multi_poll(multi, NULL, 0, 100, NULL);
    }
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(multi, &left))) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        reconcile_target *rt = NULL;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&rt);
        long status = 0;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &status);
        netpolicy_guard *g = &guard[rt - t];
        if (g->refused)
            snprintf(rt->error, sizeof rt->error, "%.95s", g->reason);
        else if (msg->data.result != CURLE_OK)
            snprintf(rt->error, sizeof rt->error, "%s", curl_easy_strerror(msg->data.result));
        else if (status < 200 || status > 299)
            snprintf(rt->error, sizeof rt->error, "HTTP %ld", status);
        else {
            rt->ok = true;
            ok++;
        }
    }
done:
    for (int i = 0; easy && i < n; i++) {
        if (easy[i]) {
            curl_multi_remove_handle(multi, easy[i]);
            curl_easy_cleanup(easy[i]);
        }
    }
    free(easy);
    free(guard);
    curl_slist_free_all(hdr);
    if (multi)
        curl_multi_cleanup(multi);
    return ok;
}
