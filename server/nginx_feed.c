/* nginx_feed.c — applies the rendered nginx include (see nginx_feed.h).
 *
 * Owns: the include file, the last-good copy <state_dir>/nginx-last-good.conf, the template
 * file (re-read when it changes on disk), running NGINX_TEST_CMD / NGINX_RELOAD_CMD, the
 * coalescing and retry timers, and the counters shown as kg_nginx_view.
 * Must not: decide node health or touch the database; rendering is nginx_render.c.
 *
 * One apply = write the bytes atomically, validate, reload.  When validation fails the include
 * goes back to the last good bytes (re-validated), nginx is not reloaded and so keeps serving
 * what it had.  Failures are retried with a growing back-off so a permanently broken template
 * or a stopped nginx does not run the commands (and emit events) on every update. */
#include "nginx_feed.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "nginx_render.h"

#define CMD_TIMEOUT_DEFAULT_MS 15000
#define CMD_OUTPUT_KEEP 250     /* characters of a command's output kept in the error text */
#define RETRY_BASE_MS 5000      /* first retry after a failed apply; doubles per failure */
#define RETRY_MAX_MS 300000
#define INCLUDE_MAX (4 * 1024 * 1024)
#define LAST_GOOD_NAME "nginx-last-good.conf"

extern char **environ;

struct kg_nginx_feed {
    bool enabled;
    char *include_path;
    char *template_path;
    char *test_cmd;        /* NULL = no validation */
    char *reload_cmd;      /* NULL = no reload */
    char *last_good_path;  /* NULL when there is no state dir */
    int min_gap_ms;
    int cmd_timeout_ms;

    char *tmpl;            /* current template text and the file identity it was read from */
    size_t tmpl_len;
    struct stat tmpl_st;
    char tmpl_problem[256]; /* why the template file cannot be used now ("" = it can) */

    char *applied;         /* bytes the include file holds as far as we know (NULL = unknown) */
    size_t applied_len;
    nginx_render_info applied_info;
    bool reload_needed;    /* the file validated but the reload failed: nginx runs older bytes */

    char *last_good;       /* last bytes nginx accepted (validated and reloaded) */
    size_t last_good_len;
    nginx_render_info last_good_info;

    bool ever_applied;
    int64_t last_apply_ms; /* caller's clock at the start of the last apply attempt */
    int64_t due_ms;        /* 0 = nothing pending */

    uint64_t fail_hash;    /* bytes of the last failed apply, and when to try them again */
    int fail_streak;
    int64_t retry_at_ms;

    kg_nginx_view st;
};

/* ---- small helpers ---------------------------------------------------------------------- */

/* snprintf for messages where cutting the end off is intended (command output, paths). */
static void msgf(char *dst, size_t n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(dst, n, fmt, ap);
    va_end(ap);
}

static char *dup_or_null(const char *s)
{
    return (s && *s) ? strdup(s) : NULL;
}

static double mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

static uint64_t fnv1a(const char *p, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)p[i]) * 1099511628211ULL;
    return h ? h : 1; /* 0 means "no failure recorded" */
}

static bool same_bytes(const char *a, size_t alen, const char *b, size_t blen)
{
    return a && b && alen == blen && memcmp(a, b, alen) == 0;
}

static char *memdup_nul(const char *p, size_t n)
{
    char *c = malloc(n + 1);
    if (c) {
        memcpy(c, p, n);
        c[n] = 0;
    }
    return c;
}

/* Reads a whole (small) file.  0 ok, -1 with errno set (ENOENT when absent, EFBIG too big). */
static int read_file(const char *path, size_t max, char **out, size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    size_t cap = 8192, len = 0;
    char *buf = malloc(cap + 1);
    if (!buf) {
        close(fd);
        errno = ENOMEM;
        return -1;
    }
    for (;;) {
        if (len == cap) {
            if (cap >= max) {
                free(buf);
                close(fd);
                errno = EFBIG;
                return -1;
            }
            cap *= 2;
            char *nb = realloc(buf, cap + 1);
            if (!nb) {
                free(buf);
                close(fd);
                errno = ENOMEM;
                return -1;
            }
            buf = nb;
        }
        ssize_t r = read(fd, buf + len, cap - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = errno;
            free(buf);
            close(fd);
            errno = e;
            return -1;
        }
        if (r == 0)
            break;
        len += (size_t)r;
    }
    close(fd);
    if (len > max) {
        free(buf);
        errno = EFBIG;
        return -1;
    }
    buf[len] = 0;
    *out = buf;
    *out_len = len;
    return 0;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* A file bind-mounted on its own (common with Docker) cannot be replaced by rename(): then the
 * bytes are rewritten in place, which is not atomic but is the only thing that works there. */
static int write_in_place(const char *path, const char *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC);
    if (fd < 0)
        return -1;
    if (write_all(fd, data, len) != 0 || fsync(fd) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return close(fd);
}

/* Temp file in the same directory + fsync + rename + fsync of the directory, so nginx (or a
 * crash) sees either the old bytes or the new ones, never a mix.  The temp name starts with a
 * dot and does not end in .conf, so an `include dir/<glob>.conf` never picks it up. */
static int write_atomic(const char *path, const char *data, size_t len, char *err, size_t errlen)
{
    char dir[PATH_MAX], tmp[PATH_MAX];
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    if (slash)
        snprintf(dir, sizeof dir, "%.*s", (int)(slash == path ? 1 : slash - path), path);
    else
        snprintf(dir, sizeof dir, ".");
    if (snprintf(tmp, sizeof tmp, "%s/.%s.kgtmp.XXXXXX", dir, base) >= (int)sizeof tmp) {
        msgf(err, errlen, "path too long: %s", path);
        return -1;
    }
    int fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0) {
        msgf(err, errlen, "creating a temp file next to %s: %s", path, strerror(errno));
        return -1;
    }
    const char *step = "writing";
    if (fchmod(fd, 0644) != 0)
        step = "chmod of";
    else if (write_all(fd, data, len) != 0)
        step = "writing";
    else if (fsync(fd) != 0)
        step = "fsync of";
    else
        step = NULL;
    int e = errno;
    if (close(fd) != 0 && !step) {
        step = "closing";
        e = errno;
    }
    if (step) {
        unlink(tmp);
        msgf(err, errlen, "%s %s: %s", step, tmp, strerror(e));
        return -1;
    }
    if (rename(tmp, path) != 0) {
        e = errno;
        unlink(tmp);
        if ((e == EBUSY || e == EXDEV) && write_in_place(path, data, len) == 0)
            return 0;
        msgf(err, errlen, "renaming into %s: %s", path, strerror(e));
        return -1;
    }
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        /* the rename is done; a failed directory fsync only weakens crash safety */
        (void)fsync(dfd);
        close(dfd);
    }
    return 0;
}

/* ---- running the commands --------------------------------------------------------------- */

/* Output of a command as one line of printable text, at most CMD_OUTPUT_KEEP characters. */
static void squash_output(const char *in, size_t n, char *out, size_t outlen)
{
    size_t j = 0;
    bool space = true; /* drops leading blanks and collapses runs */
    for (size_t i = 0; i < n && j + 1 < outlen && j < CMD_OUTPUT_KEEP; i++) {
        unsigned char c = (unsigned char)in[i];
        bool blank = c < 0x20 || c == 0x7f || c == ' ';
        if (blank) {
            if (!space)
                out[j++] = ' ';
            space = true;
            continue;
        }
        out[j++] = c < 0x80 ? (char)c : '?';
        space = false;
    }
    while (j && out[j - 1] == ' ')
        j--;
    out[j] = 0;
}

/* Runs `/bin/sh -c cmd` with stdout+stderr captured and a deadline.  posix_spawn rather than
 * fork: kumaguard has threads (HTTP, prober), and glibc's posix_spawn (vfork-like) avoids
 * copying the address space and running anything non-async-signal-safe in the child.  The
 * child gets its own process group (so a timeout kills what the shell started too), default
 * signal dispositions and mask, /dev/null as stdin and no other inherited descriptors.
 * Returns 0 when the command exits 0; otherwise -1 and a description in msg. */
static int run_command(const char *cmd, int timeout_ms, char *msg, size_t msglen)
{
    msg[0] = 0;
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) != 0) {
        msgf(msg, msglen, "pipe: %s", strerror(errno));
        return -1;
    }
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    posix_spawn_file_actions_init(&fa);
    posix_spawnattr_init(&at);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, pfd[1], 1);
    posix_spawn_file_actions_adddup2(&fa, pfd[1], 2);
    posix_spawn_file_actions_addclosefrom_np(&fa, 3);
    sigset_t none, dfl;
    sigemptyset(&none);
    sigemptyset(&dfl);
    int dfl_sigs[] = {SIGPIPE, SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGCHLD};
    for (size_t i = 0; i < sizeof dfl_sigs / sizeof dfl_sigs[0]; i++)
        sigaddset(&dfl, dfl_sigs[i]);
    posix_spawnattr_setsigmask(&at, &none);
    posix_spawnattr_setsigdefault(&at, &dfl);
    posix_spawnattr_setpgroup(&at, 0);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
                                      POSIX_SPAWN_SETSIGDEF);
    char *argv[] = {"/bin/sh", "-c", (char *)cmd, NULL};
    pid_t pid;
    int rc = posix_spawn(&pid, "/bin/sh", &fa, &at, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    close(pfd[1]);
    if (rc != 0) {
        close(pfd[0]);
        msgf(msg, msglen, "cannot start /bin/sh: %s", strerror(rc));
        return -1;
    }

    char out[1024];
    size_t out_len = 0;
    double deadline = mono_ms() + timeout_ms;
    int status = 0;
    bool reaped = false, timed_out = false, eof = false;
    while (!reaped) {
        double left = deadline - mono_ms();
        if (left <= 0) {
            timed_out = true;
            break;
        }
        if (!eof) {
            struct pollfd p = {.fd = pfd[0], .events = POLLIN};
            int pr = poll(&p, 1, left < 50 ? (int)left + 1 : 50);
            if (pr > 0) {
                char chunk[512];
                ssize_t r = read(pfd[0], chunk, sizeof chunk);
                if (r > 0) {
                    size_t keep = sizeof out - out_len;
                    if ((size_t)r < keep)
                        keep = (size_t)r;
                    memcpy(out + out_len, chunk, keep);
                    out_len += keep;
                } else if (r == 0 || (errno != EINTR && errno != EAGAIN)) {
                    eof = true;
                }
            }
        } else {
            struct timespec ts = {0, 2 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
        /* The shell may leave a background child holding the pipe open: stop reading once
         * the shell itself has exited rather than waiting for EOF. */
        pid_t w = waitpid(pid, &status, WNOHANG);
        if (w == pid) {
            reaped = true;
        } else if (w < 0 && errno != EINTR) {
            close(pfd[0]);
            msgf(msg, msglen, "waitpid: %s", strerror(errno));
            return -1;
        }
    }
    close(pfd[0]);
    if (timed_out) {
        kill(-pid, SIGKILL);
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
            ;
    }
    char text[CMD_OUTPUT_KEEP + 1];
    squash_output(out, out_len, text, sizeof text);
    if (timed_out) {
        msgf(msg, msglen, "timed out after %d ms%s%s", timeout_ms, *text ? ": " : "", text);
        return -1;
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        msgf(msg, msglen, "%s", text);
        return 0;
    }
    if (WIFEXITED(status))
        msgf(msg, msglen, "exit status %d%s%s", WEXITSTATUS(status), *text ? ": " : "", text);
    else
        msgf(msg, msglen, "killed by signal %d%s%s", WTERMSIG(status), *text ? ": " : "",
                 text);
    return -1;
}

/* ---- template ----------------------------------------------------------------------------- */

/* (Re)reads the template when the file changed.  A broken new template is reported and the
 * previous one stays in use. */
static bool same_file(const struct stat *a, const struct stat *b)
{
    return a->st_ino == b->st_ino && a->st_dev == b->st_dev && a->st_size == b->st_size &&
           a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

static int load_template(kg_nginx_feed *f, char *err, size_t errlen)
{
    struct stat st;
    if (stat(f->template_path, &st) != 0) {
        msgf(err, errlen, "nginx template %s: %s", f->template_path, strerror(errno));
        return -1;
    }
    if (f->tmpl && same_file(&st, &f->tmpl_st))
        return 0;
    char *text;
    size_t len;
    if (read_file(f->template_path, NGINX_TEMPLATE_MAX, &text, &len) != 0) {
        msgf(err, errlen, "nginx template %s: %s", f->template_path, strerror(errno));
        return -1;
    }
    char why[160];
    if (!nginx_render_check(text, len, why, sizeof why)) {
        msgf(err, errlen, "nginx template %s: %s", f->template_path, why);
        free(text);
        return -1;
    }
    free(f->tmpl);
    f->tmpl = text;
    f->tmpl_len = len;
    f->tmpl_st = st;
    return 0;
}

/* ---- lifecycle -------------------------------------------------------------------------- */

kg_nginx_feed *nginx_feed_new(const kg_config *cfg, char *err, size_t errlen)
{
    kg_nginx_feed *f = calloc(1, sizeof *f);
    if (!f) {
        msgf(err, errlen, "out of memory");
        return NULL;
    }
    f->cmd_timeout_ms = CMD_TIMEOUT_DEFAULT_MS;
    if (!cfg->nginx_include || !*cfg->nginx_include)
        return f; /* disabled: every call is a no-op */

    char path[PATH_MAX];
    f->enabled = true;
    f->include_path = strdup(cfg->nginx_include);
    if (cfg->nginx_template && *cfg->nginx_template) {
        f->template_path = strdup(cfg->nginx_template);
    } else {
        int k = snprintf(path, sizeof path, "%s/templates/nginx-upstream.conf.tmpl",
                         cfg->web_dir ? cfg->web_dir : KG_DEFAULT_WEB_DIR);
        f->template_path = k < (int)sizeof path ? strdup(path) : NULL;
    }
    f->test_cmd = dup_or_null(cfg->nginx_test_cmd);
    f->reload_cmd = dup_or_null(cfg->nginx_reload_cmd);
    f->min_gap_ms = cfg->nginx_reload_min_gap_ms > 0 ? cfg->nginx_reload_min_gap_ms : 0;
    if (!f->include_path || !f->template_path ||
        ((cfg->nginx_test_cmd && *cfg->nginx_test_cmd) && !f->test_cmd) ||
        ((cfg->nginx_reload_cmd && *cfg->nginx_reload_cmd) && !f->reload_cmd)) {
        msgf(err, errlen, "nginx feed: out of memory or KUMAGUARD_WEB_DIR too long");
        nginx_feed_free(f);
        return NULL;
    }
    if (cfg->state_dir && *cfg->state_dir) {
        if (mkdir(cfg->state_dir, 0750) != 0 && errno != EEXIST) {
            msgf(err, errlen, "KUMAGUARD_STATE_DIR %s: %s", cfg->state_dir, strerror(errno));
            nginx_feed_free(f);
            return NULL;
        }
        if (snprintf(path, sizeof path, "%s/%s", cfg->state_dir, LAST_GOOD_NAME) >=
            (int)sizeof path) {
            msgf(err, errlen, "KUMAGUARD_STATE_DIR is too long");
            nginx_feed_free(f);
            return NULL;
        }
        f->last_good_path = strdup(path);
        /* The last good file of a previous run is the rollback target until a new one is
         * accepted; it is re-validated before it is ever put back. */
        if (read_file(path, INCLUDE_MAX, &f->last_good, &f->last_good_len) != 0 &&
            errno != ENOENT) {
            msgf(err, errlen, "reading %s: %s", path, strerror(errno));
            nginx_feed_free(f);
            return NULL;
        }
    }
    if (load_template(f, err, errlen) != 0) {
        nginx_feed_free(f);
        return NULL;
    }
    /* After a restart the include usually still holds the last good bytes, which nginx
     * already runs: treat them as applied, so an identical first render costs no reload
     * (each reload ends WebSockets once worker_shutdown_timeout runs out). */
    char *cur = NULL;
    size_t cur_len = 0;
    if (f->last_good && read_file(f->include_path, INCLUDE_MAX, &cur, &cur_len) == 0 &&
        same_bytes(cur, cur_len, f->last_good, f->last_good_len)) {
        f->applied = cur;
        f->applied_len = cur_len;
        cur = NULL;
    }
    free(cur);
    f->st.enabled = true;
    snprintf(f->st.include_path, sizeof f->st.include_path, "%s", f->include_path);
    return f;
}

void nginx_feed_free(kg_nginx_feed *f)
{
    if (!f)
        return;
    free(f->include_path);
    free(f->template_path);
    free(f->test_cmd);
    free(f->reload_cmd);
    free(f->last_good_path);
    free(f->tmpl);
    free(f->applied);
    free(f->last_good);
    free(f);
}

void nginx_feed_set_command_timeout_ms(kg_nginx_feed *f, int timeout_ms)
{
    if (f && timeout_ms > 0)
        f->cmd_timeout_ms = timeout_ms;
}

int64_t nginx_feed_due_ms(const kg_nginx_feed *f)
{
    return f ? f->due_ms : 0;
}

bool nginx_feed_template_changed(const kg_nginx_feed *f)
{
    if (!f || !f->enabled || !f->template_path)
        return false;
    struct stat st;
    return stat(f->template_path, &st) != 0 || !f->tmpl || !same_file(&st, &f->tmpl_st);
}

void nginx_feed_status(const kg_nginx_feed *f, kg_nginx_view *out)
{
    if (f)
        *out = f->st;
    else
        memset(out, 0, sizeof *out);
}

/* ---- applying ------------------------------------------------------------------------------ */

static void set_applied(kg_nginx_feed *f, char *bytes, size_t len, const nginx_render_info *info)
{
    if (bytes != f->applied)
        free(f->applied);
    f->applied = bytes;
    f->applied_len = len;
    if (info)
        f->applied_info = *info;
    f->st.routed_nodes = f->applied_info.cluster_nodes;
    f->st.fallback_all = f->applied_info.fallback_all;
    f->st.rejected_nodes = f->applied_info.rejected_nodes;
}

/* Puts the last good bytes back after a failed validation (or, before any were accepted, the
 * bytes the file held before we first wrote it; or removes the file) and re-validates them.
 * Returns a short note of what happened, for the error text. */
static const char *roll_back(kg_nginx_feed *f, const char *prev, size_t prev_len,
                             bool prev_exists)
{
    char werr[200];
    const char *src = f->last_good ? f->last_good : prev;
    size_t src_len = f->last_good ? f->last_good_len : prev_len;
    if (!f->last_good && !prev_exists) {
        set_applied(f, NULL, 0, &(nginx_render_info){0});
        if (unlink(f->include_path) != 0 && errno != ENOENT)
            return "no good file yet, and removing the include failed";
        return "no good file yet, include removed";
    }
    if (write_atomic(f->include_path, src, src_len, werr, sizeof werr) != 0) {
        set_applied(f, NULL, 0, NULL); /* unknown content: the next update rewrites it */
        return "restoring the last good file failed";
    }
    char *copy = memdup_nul(src, src_len);
    set_applied(f, copy, copy ? src_len : 0,
                f->last_good ? &f->last_good_info : &(nginx_render_info){0});
    if (!f->test_cmd)
        return "last good file restored";
    char vmsg[320];
    if (run_command(f->test_cmd, f->cmd_timeout_ms, vmsg, sizeof vmsg) != 0)
        return "last good file restored but it fails validation too";
    return "last good file restored";
}

static void note_failure(kg_nginx_feed *f, uint64_t hash, int64_t now_ms)
{
    int64_t wait = RETRY_BASE_MS;
    for (int i = 0; i < f->fail_streak && wait < RETRY_MAX_MS; i++)
        wait *= 2;
    if (wait > RETRY_MAX_MS)
        wait = RETRY_MAX_MS;
    if (wait < f->min_gap_ms)
        wait = f->min_gap_ms;
    f->fail_streak++;
    f->fail_hash = hash;
    f->retry_at_ms = now_ms + wait;
    f->due_ms = f->retry_at_ms;
}

static void finish(kg_nginx_feed *f, nginx_feed_outcome *out, bool ok, const char *msg,
                   double t0, int64_t now_ms)
{
    out->ok = ok;
    out->duration_ms = mono_ms() - t0;
    snprintf(out->error, sizeof out->error, "%s", msg);
    f->st.last_ok = ok;
    f->st.last_reload_duration_ms = out->duration_ms;
    snprintf(f->st.last_error, sizeof f->st.last_error, "%s", msg);
    if (ok) {
        f->st.reloads_ok++;
        f->st.last_reload_ms = now_ms;
    } else {
        f->st.reloads_failed++;
    }
}

/* Write, validate, reload.  Takes ownership of bytes. */
static void apply(kg_nginx_feed *f, char *bytes, size_t len, const nginx_render_info *info,
                  bool same_as_file, int64_t now_ms, nginx_feed_outcome *out)
{
    double t0 = mono_ms();
    uint64_t hash = fnv1a(bytes, len);
    char msg[sizeof out->error] = "";
    char cmsg[320];

    out->attempted = true;
    f->ever_applied = true;
    f->last_apply_ms = now_ms;
    f->due_ms = 0;

    if (!same_as_file) {
        /* Before the first accepted file, what the include held is the only rollback target. */
        char *prev = NULL;
        size_t prev_len = 0;
        bool prev_exists = false;
        if (!f->last_good)
            prev_exists = read_file(f->include_path, INCLUDE_MAX, &prev, &prev_len) == 0;
        char werr[200];
        if (write_atomic(f->include_path, bytes, len, werr, sizeof werr) != 0) {
            free(prev);
            free(bytes);
            note_failure(f, hash, now_ms);
            finish(f, out, false, werr, t0, now_ms);
            return;
        }
        char *copy = memdup_nul(bytes, len);
        if (f->test_cmd && run_command(f->test_cmd, f->cmd_timeout_ms, cmsg, sizeof cmsg) != 0) {
            free(copy);
            const char *rb = roll_back(f, prev, prev_len, prev_exists);
            msgf(msg, sizeof msg, "validation failed (%s): %s", rb, cmsg);
            free(prev);
            free(bytes);
            f->reload_needed = false; /* nginx still runs the restored (or older) config */
            note_failure(f, hash, now_ms);
            finish(f, out, false, msg, t0, now_ms);
            return;
        }
        free(prev);
        set_applied(f, copy, copy ? len : 0, info);
    } else {
        set_applied(f, f->applied, f->applied_len, info); /* same bytes: keep the buffer */
    }
    if (same_as_file && f->test_cmd &&
        run_command(f->test_cmd, f->cmd_timeout_ms, cmsg, sizeof cmsg) != 0) {
        /* retrying a reload of bytes that validated before but do not now (e.g. a hostname
         * that stopped resolving): same handling as a new file */
        const char *rb = f->last_good ? roll_back(f, NULL, 0, true) : "no good file to restore";
        msgf(msg, sizeof msg, "validation failed (%s): %s", rb, cmsg);
        free(bytes);
        f->reload_needed = false;
        note_failure(f, hash, now_ms);
        finish(f, out, false, msg, t0, now_ms);
        return;
    }

    if (f->reload_cmd && run_command(f->reload_cmd, f->cmd_timeout_ms, cmsg, sizeof cmsg) != 0) {
        msgf(msg, sizeof msg, "reload failed: %s", cmsg);
        free(bytes);
        f->reload_needed = true;
        note_failure(f, hash, now_ms);
        finish(f, out, false, msg, t0, now_ms);
        return;
    }

    f->reload_needed = false;
    f->fail_streak = 0;
    f->fail_hash = 0;
    f->retry_at_ms = 0;
    free(f->last_good);
    f->last_good = bytes;
    f->last_good_len = len;
    f->last_good_info = *info;
    if (f->last_good_path) {
        char werr[200];
        if (write_atomic(f->last_good_path, bytes, len, werr, sizeof werr) != 0)
            msgf(msg, sizeof msg, "reloaded, but saving the last good copy failed: %s", werr);
    }
    if (!*msg && info->rejected_nodes > 0)
        msgf(msg, sizeof msg, "%d node(s) left out of the include: %s", info->rejected_nodes,
             info->rejected);
    finish(f, out, true, msg, t0, now_ms);
}

/* Reports a problem that stopped an apply before anything was written (template missing or
 * broken): no reload was attempted, so the reload counters stay as they are. */
static void report_no_apply(kg_nginx_feed *f, nginx_feed_outcome *out, const char *msg)
{
    out->attempted = true;
    out->ok = false;
    snprintf(out->error, sizeof out->error, "%s", msg);
    f->st.last_ok = false;
    snprintf(f->st.last_error, sizeof f->st.last_error, "%s", msg);
}

void nginx_feed_update(kg_nginx_feed *f, const kg_node_view *nodes, int n, bool freeze,
                       int64_t now_ms, nginx_feed_outcome *out)
{
    memset(out, 0, sizeof *out);
    out->ok = true;
    if (!f || !f->enabled)
        return;
    if (freeze) {
        /* Panic guard: the file stays as it is; the caller updates again when it lifts. */
        f->due_ms = 0;
        return;
    }

    /* A template edited into something broken is reported once (not on every update), and
     * the previous text stays in use so routing keeps following node health. */
    char terr[sizeof out->error] = "";
    bool template_broken = load_template(f, terr, sizeof terr) != 0;
    bool new_problem = template_broken && strcmp(terr, f->tmpl_problem) != 0;
    snprintf(f->tmpl_problem, sizeof f->tmpl_problem, "%s", template_broken ? terr : "");
    if (new_problem)
        msgf(terr + strlen(terr), sizeof terr - strlen(terr), "; still using the previous one");
    if (!f->tmpl) { /* cannot happen after nginx_feed_new succeeded; kept for safety */
        report_no_apply(f, out, terr);
        return;
    }

    char *bytes;
    size_t len;
    nginx_render_info info;
    char err[sizeof out->error];
    if (nginx_render(f->tmpl, f->tmpl_len, nodes, n, &bytes, &len, &info, err, sizeof err) != 0) {
        report_no_apply(f, out, err);
        return;
    }
    f->st.renders++;

    bool same = same_bytes(f->applied, f->applied_len, bytes, len);
    if (same && !f->reload_needed) {
        set_applied(f, f->applied, f->applied_len, &info); /* same bytes: refresh the counts */
        f->st.writes_skipped_unchanged++;
        f->due_ms = 0;
        free(bytes);
        if (new_problem)
            report_no_apply(f, out, terr);
        return;
    }
    /* The caller's clock is the wall clock: a step backwards must not stall the feed, so a
     * wait longer than it could ever be counts as over. */
    if (f->fail_hash && fnv1a(bytes, len) == f->fail_hash && now_ms < f->retry_at_ms &&
        f->retry_at_ms - now_ms <= RETRY_MAX_MS) {
        f->due_ms = f->retry_at_ms; /* these exact bytes just failed: back off */
        free(bytes);
        return;
    }
    if (f->ever_applied && now_ms >= f->last_apply_ms &&
        now_ms - f->last_apply_ms < f->min_gap_ms) {
        f->due_ms = f->last_apply_ms + f->min_gap_ms; /* coalesce: apply the latest at due */
        free(bytes);
        return;
    }
    apply(f, bytes, len, &info, same, now_ms, out);
    if (template_broken && out->ok) {
        /* the reload worked (with the previous template); the problem stays visible */
        snprintf(f->st.last_error, sizeof f->st.last_error, "%s", f->tmpl_problem);
        if (new_problem) {
            out->ok = false;
            snprintf(out->error, sizeof out->error, "%s", terr);
        }
    }
}
