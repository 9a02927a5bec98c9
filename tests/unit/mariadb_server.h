/* mariadb_server.h — the throwaway MariaDB server shared by the Criterion store tests.
 *
 * The runner process starts one server (scripts/mariadb-test-server.sh, found through
 * KG_SOURCE_DIR, which ctest sets) in a mkdtemp directory on a free loopback port, before the
 * first test, and stops and removes it after the last.  Worker processes find it through the
 * environment: <PREFIX>_DIR, <PREFIX>_PORT, or <PREFIX>_ERROR when it could not start (the
 * tests then fail; they never skip).  Included by one test file each (static functions). */
#ifndef KG_TEST_MARIADB_SERVER_H
#define KG_TEST_MARIADB_SERVER_H

#include <arpa/inet.h>
#include <libgen.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

static void mdb_script_path(char *buf, size_t len)
{
    const char *src = getenv("KG_SOURCE_DIR");
    if (src && src[0]) {
        snprintf(buf, len, "%s/scripts/mariadb-test-server.sh", src);
        return;
    }
    char here[512]; /* run by hand: this file is <src>/tests/unit/ */
    snprintf(here, sizeof(here), "%s", __FILE__);
    snprintf(buf, len, "%s/../../scripts/mariadb-test-server.sh", dirname(here));
}

static bool mdb_port_is_free(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return false;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bool ok = bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
    close(fd);
    return ok;
}

static int mdb_server_cmd(const char *verb, const char *dir, int port)
{
    char script[600], cmd[1400];
    mdb_script_path(script, sizeof(script));
    if (port > 0)
        snprintf(cmd, sizeof(cmd), "'%s' %s '%s' %d", script, verb, dir, port);
    else
        snprintf(cmd, sizeof(cmd), "'%s' %s '%s'", script, verb, dir);
    return system(cmd);
}

static void mdb_setenv(const char *prefix, const char *what, const char *value)
{
    char name[128];
    snprintf(name, sizeof(name), "%s_%s", prefix, what);
    setenv(name, value, 1);
}

/* A port that was free when checked can be taken before mariadbd binds it (other test
 * executables pick ports too): up to three attempts, each on another free port. */
static void mdb_start(const char *prefix, const char *dirtag, int port_base)
{
    char dir[256];
    snprintf(dir, sizeof(dir), "%s/%s.XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp",
             dirtag);
    if (!mkdtemp(dir)) {
        mdb_setenv(prefix, "ERROR", "mkdtemp failed");
        return;
    }
    mdb_setenv(prefix, "DIR", dir);
    for (int attempt = 0; attempt < 3; attempt++) {
        int port = 0;
        for (int i = 0; i < 200 && !port; i++) {
            int p = port_base + (int)((getpid() * 31 + attempt * 4099 + i * 101) % 20000);
            if (mdb_port_is_free(p))
                port = p;
        }
        if (port && mdb_server_cmd("start", dir, port) == 0) {
            char buf[32];
            snprintf(buf, sizeof(buf), "%d", port);
            mdb_setenv(prefix, "PORT", buf);
            return;
        }
    }
    mdb_setenv(prefix, "ERROR", "scripts/mariadb-test-server.sh start failed (see stderr)");
}

static void mdb_stop(const char *prefix)
{
    char name[128];
    snprintf(name, sizeof(name), "%s_DIR", prefix);
    const char *dir = getenv(name);
    if (!dir)
        return;
    mdb_server_cmd("stop", dir, 0);
    char cmd[400];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
}

#endif
