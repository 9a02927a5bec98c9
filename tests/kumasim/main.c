/*
 * main.c — kumasim, a simulated cluster-aware Uptime Kuma node (or many) for kumaguard's
 * integration tests, the demo and benchmarks.
 *
 * Owns: options and the environment variables a real node reads, start-up order, signals and
 * the shutdown order.  Must not: link kg_core (kumasim is kumaguard's opponent, not a part of
 * it), or model behaviour itself (model.c, engine.c, http.c do).
 *
 * By default a node is realistic: it reads its assignments from the cluster database, takes
 * 100-300 ms per monitor it starts and 50-150 ms per monitor it stops, answers a reconcile call
 * only when the whole reconcile is done, re-reads at :00 of every minute of its own clock,
 * leaks a monitor copy when two reconciles overlap, rate-limits /api/v1/..., refuses calls
 * before the first user exists, and answers 503 on /api/v1/health while its database is
 * unreachable.  --instant keeps the old node that answers everything at once and has no
 * database; no test that claims exactly-once may use it.
 */
#include "sim.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <netdb.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define MAX_NODES 10000
#define DEFAULT_RATE_LIMIT 100         /* API_RATE_LIMIT's default on a real node */
#define RATE_WINDOW_MS (15 * 60 * 1000)

/* ============================== small helpers ============================== */

static int64_t clock_ms(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t mono_ms(void) { return clock_ms(CLOCK_MONOTONIC); }
int64_t real_ms(void) { return clock_ms(CLOCK_REALTIME); }

void logmsg(const struct sim *s, const char *fmt, ...)
{
	va_list ap;

	if (s != NULL && !s->opt.verbose)
		return;
	fprintf(stderr, "kumasim: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* Node ids are echoed into JSON, an HTTP header, HTML and SQL: keep them to a safe alphabet. */
static bool id_valid(const char *id, size_t max)
{
	size_t n = strlen(id);

	if (n == 0 || n > max)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = id[i];
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
			  c == '-' || c == '_' || c == '.';
		if (!ok)
			return false;
	}
	return true;
}

/* node.host: a host or address with an optional port, nothing that needs quoting. */
static bool host_valid(const char *h)
{
	size_t n = strlen(h);

	if (n == 0 || n > NODE_HOST_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = h[i];
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
			  c == '-' || c == '_' || c == '.' || c == ':' || c == '[' || c == ']';
		if (!ok)
			return false;
	}
	return true;
}

static bool parse_u64(const char *txt, unsigned long long max, unsigned long long *out)
{
	char *end;
	unsigned long long v;

	if (txt == NULL || *txt == '\0' || *txt == '-')
		return false;
	errno = 0;
	v = strtoull(txt, &end, 10);
	if (errno != 0 || *end != '\0' || v > max)
		return false;
	*out = v;
	return true;
}

static bool parse_i64(const char *txt, long long min, long long max, long long *out)
{
	char *end;
	long long v;

	if (txt == NULL || *txt == '\0')
		return false;
	errno = 0;
	v = strtoll(txt, &end, 10);
	if (errno != 0 || *end != '\0' || v < min || v > max)
		return false;
	*out = v;
	return true;
}

static bool parse_listen(const char *spec, struct sim_opts *o)
{
	char host[256];
	const char *colon = strrchr(spec, ':');
	size_t hlen;
	unsigned long long port;
	struct addrinfo hints, *res = NULL;

	if (colon == NULL || !parse_u64(colon + 1, 65535, &port))
		return false;
	hlen = (size_t)(colon - spec);
	if (hlen >= 2 && spec[0] == '[' && spec[hlen - 1] == ']') {
		spec++;
		hlen -= 2;
	}
	if (hlen == 0 || hlen >= sizeof(host))
		return false;
	memcpy(host, spec, hlen);
	host[hlen] = '\0';
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE;
	if (getaddrinfo(host, NULL, &hints, &res) != 0 || res == NULL)
		return false;
	if (res->ai_addrlen > sizeof(o->addr) ||
	    (res->ai_family != AF_INET && res->ai_family != AF_INET6)) {
		freeaddrinfo(res);
		return false;
	}
	memcpy(&o->addr, res->ai_addr, res->ai_addrlen);
	o->addr_len = res->ai_addrlen;
	freeaddrinfo(res);
	if (o->addr.ss_family == AF_INET)
		((struct sockaddr_in *)&o->addr)->sin_port = htons((uint16_t)port);
	else
		((struct sockaddr_in6 *)&o->addr)->sin6_port = htons((uint16_t)port);
	o->port_zero = port == 0;
	return true;
}

static bool env_true(const char *v)
{
	return v != NULL && (strcasecmp(v, "true") == 0 || strcmp(v, "1") == 0 ||
			     strcasecmp(v, "yes") == 0);
}

static const char *env2(const char *a, const char *b)
{
	const char *v = getenv(a);

	return v != NULL && *v != '\0' ? v : (b != NULL ? getenv(b) : NULL);
}

/* ============================== options ============================== */

static void usage(FILE *f)
{
	fprintf(f,
"usage: kumasim --listen HOST:PORT --node-id ID (--sqlite-path FILE | --db-host ...) [options]\n"
"       kumasim --listen HOST:PORT --node-id ID --instant [--api-key KEY]\n"
"A simulated cluster-aware Uptime Kuma node.  Realistic by default (see tests/kumasim/README.md).\n"
"Environment variables a real node reads are honoured; options win over them.\n"
"Identity:\n"
"  --node-id ID          [UPTIME_KUMA_NODE_ID, NODE_ID] 1-50 chars of [A-Za-z0-9._-]\n"
"  --node-name NAME      [UPTIME_KUMA_NODE_NAME, NODE_NAME] default: the id\n"
"  --node-host HOST      [UPTIME_KUMA_NODE_HOST, NODE_HOST] written to node.host at start;\n"
"                        default 127.0.0.1 (no port, as a real node); 'listen' = HOST:PORT listened on\n"
"  --primary             [UPTIME_KUMA_PRIMARY=true] node.is_primary = 1 (id node1 is primary anyway)\n"
"Listening:\n"
"  --listen HOST:PORT    [UPTIME_KUMA_HOST, UPTIME_KUMA_PORT or PORT] PORT 0 = any free port\n"
"  --nodes N             serve N nodes PREFIX1..PREFIXN from one process, node i on PORT+i-1\n"
"                        (PORT 0: any free ports); 1..%d\n"
"  --node-prefix P       id prefix for --nodes (default node)\n"
"  --listen-base H:P     same as --listen\n"
"Database (realistic mode needs one):\n"
"  --sqlite-path FILE    [UPTIME_KUMA_DB_TYPE=sqlite: DATA_DIR/kuma.db] e.g. kumaguard's cluster.db\n"
"  --db-host HOST        [UPTIME_KUMA_DB_HOSTNAME] MariaDB host (a path starting with / = socket)\n"
"  --db-port N           [UPTIME_KUMA_DB_PORT] default 3306\n"
"  --db-socket PATH      MariaDB unix socket\n"
"  --db-user USER        [UPTIME_KUMA_DB_USERNAME]\n"
"  --db-password PW      [UPTIME_KUMA_DB_PASSWORD]\n"
"  --db-name NAME        [UPTIME_KUMA_DB_NAME]\n"
"  --db-timeout S        connect/read/write timeout in seconds (default 3)\n"
"  --db-threads N        database worker threads (default 2)\n"
"  --setup-done          first-run setup has happened: create user 1 (active) if the user\n"
"                        table is empty; without it reconcile calls get 401 until a user exists\n"
"Behaviour:\n"
"  --delay-scale F       multiply the reconcile sleeps (default 1 = a real node; 0..100)\n"
"  --seed N              seed of the sleeps' RNG (default 1; each node mixes in its index)\n"
"  --clock-skew-ms N     node clock = real clock + N (default 0)\n"
"  --cron-phase-ms N     phase of the once-a-second cron check, 0..999 (default: start time)\n"
"  --no-cron             no :00 reconcile (for load tests that probe health only)\n"
"  --rate-limit N        [API_RATE_LIMIT] /api/v1/... requests per window per client IP (default\n"
"                        %d; 0 = no limit)\n"
"  --rate-window-ms N    the window (default %d = 15 min)\n"
"  --health-db-cache-ms N  reuse a health check's database answer for N ms (default 0 = a\n"
"                        SELECT 1 per health request, as a real node)\n"
"  --timeline-cap N      events kept per node for /_sim/timeline (default %d; 0 = none)\n"
"  --instant             the old node: no database, reconcile answers at once and does\n"
"                        nothing, no cron, no rate limit, no user check\n"
"  --api-key KEY         (--instant only) key required in Authorization (raw or Bearer)\n"
"Process:\n"
"  --pidfile FILE        write the pid once listening, removed on clean exit\n"
"  --mode MODE           healthy|fail|503|hang|slow|partition (default healthy); hang:\n"
"                        health answers hang; partition: nothing but /_sim/ is answered\n"
"  --slow-ms N           delay of a health answer in slow mode (default 1000)\n"
"  --threads N           HTTP worker threads (default 2)\n"
"  --verbose             log mode changes and MHD errors to stderr\n"
"Prints \"kumasim ID listening on HOST:PORT\" per node once it accepts connections.\n"
"Signals: USR1 -> every node 503, USR2 -> healthy, TERM/INT/HUP -> clean exit (code 0).\n"
"Control: /_sim/mode, /_sim/stats, /_sim/monitors, /_sim/runs, /_sim/reset-stats,\n"
"/_sim/timeline, /_sim/clock, /_sim/rate-limit, /_sim/restart, /_sim/exit\n"
"(tests/kumasim/README.md).\n",
		MAX_NODES, DEFAULT_RATE_LIMIT, RATE_WINDOW_MS, TIMELINE_CAP_DEFAULT);
}

enum {
	O_LISTEN = 1000, O_NODE_ID, O_NODE_NAME, O_NODE_HOST, O_PRIMARY, O_NODES, O_PREFIX,
	O_API_KEY, O_PIDFILE, O_MODE, O_SLOW, O_THREADS, O_VERBOSE, O_HELP, O_INSTANT, O_SQLITE,
	O_DB_HOST, O_DB_PORT, O_DB_SOCKET, O_DB_USER, O_DB_PASSWORD, O_DB_NAME, O_DB_TIMEOUT,
	O_DB_THREADS, O_SETUP_DONE, O_DELAY_SCALE, O_SEED, O_SKEW, O_PHASE, O_NO_CRON, O_RATE,
	O_RATE_WINDOW, O_HEALTH_CACHE, O_TIMELINE_CAP
};

static char sqlite_from_env[PATH_MAX];

/* The variables a real node reads; options parsed afterwards override them. */
static int apply_env(struct sim_opts *o)
{
	const char *v;
	unsigned long long u;

	if ((v = env2("UPTIME_KUMA_NODE_ID", "NODE_ID")) != NULL && *v != '\0') {
		if (!id_valid(v, NODE_ID_MAX)) {
			fprintf(stderr, "kumasim: UPTIME_KUMA_NODE_ID: expected 1-50 chars of [A-Za-z0-9._-]\n");
			return -1;
		}
		snprintf(o->node_id, sizeof(o->node_id), "%s", v);
	}
	if ((v = env2("UPTIME_KUMA_NODE_NAME", "NODE_NAME")) != NULL && *v != '\0')
		o->node_name = v;
	if ((v = env2("UPTIME_KUMA_NODE_HOST", "NODE_HOST")) != NULL && *v != '\0')
		o->node_host = v;
	o->primary = env_true(getenv("UPTIME_KUMA_PRIMARY"));
	if ((v = env2("UPTIME_KUMA_PORT", "PORT")) != NULL && *v != '\0') {
		const char *h = getenv("UPTIME_KUMA_HOST");
		char spec[300];
		snprintf(spec, sizeof(spec), "%s:%s", h != NULL && *h != '\0' ? h : "127.0.0.1", v);
		if (!parse_listen(spec, o)) {
			fprintf(stderr, "kumasim: UPTIME_KUMA_HOST/UPTIME_KUMA_PORT: cannot listen on '%s'\n",
				spec);
			return -1;
		}
	}
	if ((v = getenv("UPTIME_KUMA_DB_TYPE")) != NULL && *v != '\0') {
		if (strcasecmp(v, "sqlite") == 0) {
			const char *dir = getenv("DATA_DIR");
			size_t len;
			if (dir == NULL || *dir == '\0')
				dir = "./data/";
			len = strlen(dir);
			snprintf(sqlite_from_env, sizeof(sqlite_from_env), "%s%skuma.db", dir,
				 len > 0 && dir[len - 1] == '/' ? "" : "/");
			o->db.kind = DB_SQLITE;
			o->db.sqlite_path = sqlite_from_env;
		} else if (strcasecmp(v, "mariadb") == 0) {
			o->db.kind = DB_MARIADB;
			o->db.host = getenv("UPTIME_KUMA_DB_HOSTNAME");
			o->db.user = getenv("UPTIME_KUMA_DB_USERNAME");
			o->db.password = getenv("UPTIME_KUMA_DB_PASSWORD");
			o->db.name = getenv("UPTIME_KUMA_DB_NAME");
			if ((v = getenv("UPTIME_KUMA_DB_PORT")) != NULL && *v != '\0') {
				if (!parse_u64(v, 65535, &u) || u == 0) {
					fprintf(stderr, "kumasim: UPTIME_KUMA_DB_PORT: expected 1..65535\n");
					return -1;
				}
				o->db.port = (unsigned)u;
			}
		} else {
			fprintf(stderr, "kumasim: UPTIME_KUMA_DB_TYPE: expected sqlite or mariadb, got '%s'\n",
				v);
			return -1;
		}
	}
	if ((v = getenv("API_RATE_LIMIT")) != NULL && *v != '\0') {
		if (!parse_u64(v, UINT32_MAX, &u)) {
			fprintf(stderr, "kumasim: API_RATE_LIMIT: expected a number of requests\n");
			return -1;
		}
		o->rate_limit = (uint32_t)u;
	}
	return 0;
}

static int bad(const char *opt, const char *expected, const char *got)
{
	fprintf(stderr, "kumasim: %s: expected %s, got '%s'\n", opt, expected, got);
	return -1;
}

/* Returns 0 on success, 1 for --help, -1 on a bad argument (message already printed). */
static int parse_args(int argc, char **argv, struct sim_opts *o)
{
	static const struct option longopts[] = {
		{ "listen", required_argument, NULL, O_LISTEN },
		{ "listen-base", required_argument, NULL, O_LISTEN },
		{ "node-id", required_argument, NULL, O_NODE_ID },
		{ "node-name", required_argument, NULL, O_NODE_NAME },
		{ "node-host", required_argument, NULL, O_NODE_HOST },
		{ "primary", no_argument, NULL, O_PRIMARY },
		{ "nodes", required_argument, NULL, O_NODES },
		{ "node-prefix", required_argument, NULL, O_PREFIX },
		{ "api-key", required_argument, NULL, O_API_KEY },
		{ "pidfile", required_argument, NULL, O_PIDFILE },
		{ "mode", required_argument, NULL, O_MODE },
		{ "slow-ms", required_argument, NULL, O_SLOW },
		{ "threads", required_argument, NULL, O_THREADS },
		{ "verbose", no_argument, NULL, O_VERBOSE },
		{ "help", no_argument, NULL, O_HELP },
		{ "instant", no_argument, NULL, O_INSTANT },
		{ "sqlite-path", required_argument, NULL, O_SQLITE },
		{ "db-host", required_argument, NULL, O_DB_HOST },
		{ "db-port", required_argument, NULL, O_DB_PORT },
		{ "db-socket", required_argument, NULL, O_DB_SOCKET },
		{ "db-user", required_argument, NULL, O_DB_USER },
		{ "db-password", required_argument, NULL, O_DB_PASSWORD },
		{ "db-name", required_argument, NULL, O_DB_NAME },
		{ "db-timeout", required_argument, NULL, O_DB_TIMEOUT },
		{ "db-threads", required_argument, NULL, O_DB_THREADS },
		{ "setup-done", no_argument, NULL, O_SETUP_DONE },
		{ "delay-scale", required_argument, NULL, O_DELAY_SCALE },
		{ "seed", required_argument, NULL, O_SEED },
		{ "clock-skew-ms", required_argument, NULL, O_SKEW },
		{ "cron-phase-ms", required_argument, NULL, O_PHASE },
		{ "no-cron", no_argument, NULL, O_NO_CRON },
		{ "rate-limit", required_argument, NULL, O_RATE },
		{ "rate-window-ms", required_argument, NULL, O_RATE_WINDOW },
		{ "health-db-cache-ms", required_argument, NULL, O_HEALTH_CACHE },
		{ "timeline-cap", required_argument, NULL, O_TIMELINE_CAP },
		{ NULL, 0, NULL, 0 },
	};
	bool have_listen, have_db_opt = false;
	unsigned long long u;
	long long i64;
	char *end;
	int c;

	o->mode = MODE_HEALTHY;
	o->slow_ms = 1000;
	o->threads = 2;
	o->cron = true;
	o->delay_scale = 1.0;
	o->seed = 1;
	o->cron_phase = -1;
	o->rate_limit = DEFAULT_RATE_LIMIT;
	o->rate_window_ms = RATE_WINDOW_MS;
	o->timeline_cap = TIMELINE_CAP_DEFAULT;
	o->db_threads = 2;
	o->db.timeout_s = 3;
	o->db.port = 3306;
	o->node_prefix = "node";
	o->addr.ss_family = AF_UNSPEC;
	if (apply_env(o) != 0)
		return -1;
	have_listen = o->addr.ss_family != AF_UNSPEC;
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case O_LISTEN:
			if (!parse_listen(optarg, o))
				return bad("--listen", "HOST:PORT", optarg);
			have_listen = true;
			break;
		case O_NODE_ID:
			if (!id_valid(optarg, NODE_ID_MAX))
				return bad("--node-id", "1-50 chars of [A-Za-z0-9._-]", optarg);
			snprintf(o->node_id, sizeof(o->node_id), "%s", optarg);
			break;
		case O_NODE_NAME:
			if (!id_valid(optarg, NODE_NAME_MAX))
				return bad("--node-name", "1-100 chars of [A-Za-z0-9._-]", optarg);
			o->node_name = optarg;
			break;
		case O_NODE_HOST:
			o->node_host = optarg;
			break;
		case O_PRIMARY:
			o->primary = true;
			break;
		case O_NODES:
			if (!parse_u64(optarg, MAX_NODES, &u) || u == 0)
				return bad("--nodes", "1..10000", optarg);
			o->n_nodes = (unsigned)u;
			break;
		case O_PREFIX:
			if (!id_valid(optarg, NODE_ID_MAX - 5))
				return bad("--node-prefix", "1-45 chars of [A-Za-z0-9._-]", optarg);
			o->node_prefix = optarg;
			break;
		case O_API_KEY:
			if (optarg[0] == '\0' || strpbrk(optarg, "\r\n") != NULL)
				return bad("--api-key", "a non-empty single-line key", "(hidden)");
			o->api_key = optarg;
			break;
		case O_PIDFILE:
			o->pidfile = optarg;
			break;
		case O_MODE:
			o->mode = mode_from_name(optarg, strlen(optarg));
			if (o->mode < 0)
				return bad("--mode", "healthy|fail|503|hang|slow|partition", optarg);
			break;
		case O_SLOW:
			if (!parse_u64(optarg, 600000, &u))
				return bad("--slow-ms", "0..600000", optarg);
			o->slow_ms = (unsigned)u;
			break;
		case O_THREADS:
			if (!parse_u64(optarg, 64, &u) || u == 0)
				return bad("--threads", "1..64", optarg);
			o->threads = (unsigned)u;
			break;
		case O_VERBOSE:
			o->verbose = true;
			break;
		case O_HELP:
			usage(stdout);
			return 1;
		case O_INSTANT:
			o->instant = true;
			break;
		case O_SQLITE:
			if (optarg[0] == '\0')
				return bad("--sqlite-path", "a file name", optarg);
			o->db.kind = DB_SQLITE;
			o->db.sqlite_path = optarg;
			have_db_opt = true;
			break;
		case O_DB_HOST:
			o->db.kind = DB_MARIADB;
			if (optarg[0] == '/') {
				o->db.socket = optarg;
				o->db.host = NULL;
			} else {
				o->db.host = optarg;
			}
			have_db_opt = true;
			break;
		case O_DB_PORT:
			if (!parse_u64(optarg, 65535, &u) || u == 0)
				return bad("--db-port", "1..65535", optarg);
			o->db.port = (unsigned)u;
			break;
		case O_DB_SOCKET:
			o->db.kind = DB_MARIADB;
			o->db.socket = optarg;
			have_db_opt = true;
			break;
		case O_DB_USER:
			o->db.user = optarg;
			break;
		case O_DB_PASSWORD:
			o->db.password = optarg;
			break;
		case O_DB_NAME:
			o->db.name = optarg;
			break;
		case O_DB_TIMEOUT:
			if (!parse_u64(optarg, 600, &u) || u == 0)
				return bad("--db-timeout", "1..600 seconds", optarg);
			o->db.timeout_s = (unsigned)u;
			break;
		case O_DB_THREADS:
			if (!parse_u64(optarg, 64, &u) || u == 0)
				return bad("--db-threads", "1..64", optarg);
			o->db_threads = (unsigned)u;
			break;
		case O_SETUP_DONE:
			o->setup_done = true;
			break;
		case O_DELAY_SCALE:
			errno = 0;
			o->delay_scale = strtod(optarg, &end);
			if (errno != 0 || end == optarg || *end != '\0' || !(o->delay_scale >= 0) ||
			    o->delay_scale > 100)
				return bad("--delay-scale", "a number 0..100", optarg);
			break;
		case O_SEED:
			if (!parse_u64(optarg, UINT64_MAX, &u))
				return bad("--seed", "a non-negative integer", optarg);
			o->seed = u;
			break;
		case O_SKEW:
			if (!parse_i64(optarg, -86400000, 86400000, &i64))
				return bad("--clock-skew-ms", "-86400000..86400000", optarg);
			o->skew_ms = i64;
			break;
		case O_PHASE:
			if (!parse_u64(optarg, 999, &u))
				return bad("--cron-phase-ms", "0..999", optarg);
			o->cron_phase = (int)u;
			break;
		case O_NO_CRON:
			o->cron = false;
			break;
		case O_RATE:
			if (!parse_u64(optarg, UINT32_MAX, &u))
				return bad("--rate-limit", "a number of requests (0 = no limit)", optarg);
			o->rate_limit = (uint32_t)u;
			break;
		case O_RATE_WINDOW:
			if (!parse_u64(optarg, 86400000, &u) || u == 0)
				return bad("--rate-window-ms", "1..86400000", optarg);
			o->rate_window_ms = (int64_t)u;
			break;
		case O_HEALTH_CACHE:
			if (!parse_u64(optarg, 3600000, &u))
				return bad("--health-db-cache-ms", "0..3600000", optarg);
			o->health_cache_ms = (int64_t)u;
			break;
		case O_TIMELINE_CAP:
			if (!parse_u64(optarg, TIMELINE_CAP_MAX, &u))
				return bad("--timeline-cap", "0..1000000 events per node", optarg);
			o->timeline_cap = (size_t)u;
			break;
		default:
			usage(stderr);
			return -1;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "kumasim: unexpected argument '%s'\n", argv[optind]);
		return -1;
	}
	if (!have_listen || (o->node_id[0] == '\0' && o->n_nodes == 0)) {
		fprintf(stderr, "kumasim: --listen and --node-id (or --nodes) are required\n");
		usage(stderr);
		return -1;
	}
	if (o->n_nodes > 0 && o->node_id[0] != '\0' && getenv("UPTIME_KUMA_NODE_ID") == NULL &&
	    getenv("NODE_ID") == NULL) {
		fprintf(stderr, "kumasim: --node-id and --nodes exclude each other (--node-prefix names "
				"the nodes)\n");
		return -1;
	}
	if (!o->port_zero && o->n_nodes > 1) {
		uint16_t base = ntohs(o->addr.ss_family == AF_INET
					      ? ((struct sockaddr_in *)&o->addr)->sin_port
					      : ((struct sockaddr_in6 *)&o->addr)->sin6_port);
		if ((unsigned)base + o->n_nodes - 1 > 65535) {
			fprintf(stderr, "kumasim: --nodes: ports %u..%u do not fit below 65536\n",
				(unsigned)base, (unsigned)base + o->n_nodes - 1);
			return -1;
		}
	}
	if (o->node_host != NULL && strcmp(o->node_host, "listen") != 0 && !host_valid(o->node_host))
		return bad("--node-host", "HOST or HOST:PORT (at most 45 chars, no spaces or quotes) or 'listen'",
			   o->node_host);
	if (o->instant) {
		if (have_db_opt) {
			fprintf(stderr, "kumasim: --instant takes no database (it is the old node that has "
					"none); drop --instant for a realistic node\n");
			return -1;
		}
		o->db.kind = DB_NONE;
	} else {
		if (o->api_key != NULL) {
			fprintf(stderr, "kumasim: --api-key is only for --instant: a real node checks no key "
					"value (any Authorization not starting with 'Bearer ' passes once the "
					"first user exists)\n");
			return -1;
		}
		if (o->db.kind == DB_NONE) {
			fprintf(stderr, "kumasim: a realistic node needs its database: --sqlite-path FILE or "
					"--db-host/--db-socket (or UPTIME_KUMA_DB_TYPE); --instant for the old "
					"node without one\n");
			return -1;
		}
		if (o->db.kind == DB_MARIADB && o->db.host == NULL && o->db.socket == NULL)
			o->db.host = "127.0.0.1";
	}
	return 0;
}

/* ============================== nodes ============================== */

static uint64_t splitmix(uint64_t x)
{
	x += 0x9E3779B97F4A7C15ull;
	x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
	x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
	return x ^ (x >> 31);
}

static void format_addr(const struct sim_opts *o, uint16_t port, char *out, size_t size)
{
	char ip[INET6_ADDRSTRLEN] = "?";

	if (o->addr.ss_family == AF_INET6) {
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)&o->addr)->sin6_addr, ip, sizeof(ip));
		snprintf(out, size, "[%s]:%u", ip, (unsigned)port);
	} else {
		inet_ntop(AF_INET, &((const struct sockaddr_in *)&o->addr)->sin_addr, ip, sizeof(ip));
		snprintf(out, size, "%s:%u", ip, (unsigned)port);
	}
}

static int cmp_id(const void *a, const void *b)
{
	return strcmp((*(struct node *const *)a)->id, (*(struct node *const *)b)->id);
}

static bool nodes_init(struct sim *s)
{
	const struct sim_opts *o = &s->opt;
	int64_t now = real_ms();

	size_t count = o->n_nodes > 0 ? o->n_nodes : 1;

	s->nodes = calloc(count, sizeof(*s->nodes));
	s->by_id = calloc(count, sizeof(*s->by_id));
	if (s->nodes == NULL || s->by_id == NULL)
		return false;
	s->n_nodes = count;
	for (size_t i = 0; i < s->n_nodes; i++) {
		struct node *n = &s->nodes[i];

		n->sim = s;
		n->index = (unsigned)i;
		n->listen_fd = -1;
		if (o->n_nodes > 0)
			snprintf(n->id, sizeof(n->id), "%s%zu", o->node_prefix, i + 1);
		else
			snprintf(n->id, sizeof(n->id), "%s", o->node_id);
		snprintf(n->name, sizeof(n->name), "%s",
			 o->node_name != NULL && o->n_nodes == 0 ? o->node_name : n->id);
		/* Primary: UPTIME_KUMA_PRIMARY=true (the first node of a --nodes process), or the
		 * id node1, as the real node decides who owns first-run setup. */
		n->primary = o->primary ? i == 0 : strcmp(n->id, "node1") == 0;
		atomic_init(&n->mode, o->mode);
		atomic_init(&n->slow_ms, o->slow_ms);
		atomic_init(&n->start_real_ms, now);
		n->skew_ms = o->skew_ms;
		n->rl.limit = o->rate_limit;
		n->rl.window_ms = o->rate_window_ms;
		n->proc.rng = splitmix(o->seed ^ splitmix(i + 1));
		n->proc.tl.max = o->timeline_cap;
		n->proc.tl.since_ms = now;
		s->by_id[i] = n;
	}
	qsort(s->by_id, s->n_nodes, sizeof(*s->by_id), cmp_id);
	for (size_t i = 1; i < s->n_nodes; i++)
		if (strcmp(s->by_id[i - 1]->id, s->by_id[i]->id) == 0)
			return false;
	return true;
}

/* After the sockets are open: what each node writes into node.host. */
static void nodes_set_hosts(struct sim *s)
{
	for (size_t i = 0; i < s->n_nodes; i++) {
		struct node *n = &s->nodes[i];
		if (s->opt.node_host == NULL)
			snprintf(n->host, sizeof(n->host), "127.0.0.1");
		else if (strcmp(s->opt.node_host, "listen") == 0)
			format_addr(&s->opt, n->port, n->host, sizeof(n->host));
		else
			snprintf(n->host, sizeof(n->host), "%s", s->opt.node_host);
	}
}

/* ============================== start-up and shutdown ============================== */

/* Written to a temporary name and renamed, so a reader never sees a half-written pid. */
static bool write_pidfile(const char *path)
{
	char tmp[PATH_MAX];
	FILE *f;
	int n = snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid());
	bool ok;

	if (n < 0 || (size_t)n >= sizeof(tmp))
		return false;
	f = fopen(tmp, "w");
	if (f == NULL)
		return false;
	ok = fprintf(f, "%ld\n", (long)getpid()) > 0;
	ok = (fclose(f) == 0) && ok;
	if (ok)
		ok = rename(tmp, path) == 0;
	if (!ok)
		unlink(tmp);
	return ok;
}

/* A thousand nodes need a thousand listening sockets plus their connections. */
static void raise_fd_limit(size_t n_nodes)
{
	struct rlimit rl;
	rlim_t want = (rlim_t)(4 * n_nodes + 1024);

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= want)
		return;
	rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > want ? want : rl.rlim_max;
	(void)setrlimit(RLIMIT_NOFILE, &rl);
}

static void shutdown_all(struct sim *s)
{
	http_stop_accepting(s);
	engine_stop(s);          /* runs in progress end unanswered, as in a dying process */
	db_pool_stop(s->pool);   /* queued work is dropped the same way */
	s->pool = NULL;
	db_pool_stop(s->health_pool);
	s->health_pool = NULL;
	http_shutdown(s);
	engine_free(s);
	for (int i = 0; i < 2; i++)
		if (s->wake_pipe[i] >= 0)
			close(s->wake_pipe[i]);
	pthread_mutex_destroy(&s->health_lock);
	pthread_mutex_destroy(&s->model_lock);
	pthread_mutex_destroy(&s->lock);
	if (s->opt.pidfile != NULL)
		unlink(s->opt.pidfile);
	free(s->by_id);
	free(s->nodes);
}

/* Runs on the main thread only; every other thread blocks these signals. */
static void wait_for_exit(struct sim *s, const sigset_t *set)
{
	for (;;) {
		int sig;

		if (sigwait(set, &sig) != 0)
			continue;
		if (sig == SIGUSR1 || sig == SIGUSR2) {
			for (size_t i = 0; i < s->n_nodes; i++)
				set_mode(s, &s->nodes[i], sig == SIGUSR1 ? MODE_503 : MODE_HEALTHY);
		} else {
			return;
		}
	}
}

static int fail_start(struct sim *s, const char *what, const char *detail)
{
	fprintf(stderr, "kumasim: %s: %s\n", what, detail);
	s->opt.pidfile = NULL;
	shutdown_all(s);
	return 1;
}

int main(int argc, char **argv)
{
	static struct sim sim; /* large and process-wide; static keeps it off the stack */
	struct sim *s = &sim;
	sigset_t set;
	char err[300];
	int rc;

	rc = parse_args(argc, argv, &s->opt);
	if (rc != 0)
		return rc > 0 ? 0 : 2;

	/* Block before any thread exists so only sigwait() in this thread sees them. */
	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	sigaddset(&set, SIGUSR2);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);

	s->start_ms = mono_ms();
	s->epfd = -1;
	s->wake_pipe[0] = s->wake_pipe[1] = -1;
	pthread_mutex_init(&s->lock, NULL);
	pthread_mutex_init(&s->model_lock, NULL);
	pthread_mutex_init(&s->health_lock, NULL);
	if (pipe2(s->wake_pipe, O_CLOEXEC | O_NONBLOCK) != 0 || !nodes_init(s))
		return fail_start(s, "initialisation failed", strerror(errno));
	raise_fd_limit(s->n_nodes);
	if (!http_listen(s, err, sizeof(err)))
		return fail_start(s, "cannot listen", err);
	nodes_set_hosts(s);
	for (size_t i = 0; i < s->n_nodes; i++)
		if (!build_node_responses(s, &s->nodes[i]))
			return fail_start(s, "initialisation failed", "out of memory");
	if (!s->opt.instant) {
		/* What a real node does before it serves: migrations, its row, its monitors. */
		if (!engine_boot(s, err, sizeof(err)))
			return fail_start(s, "database", err);
		s->pool = db_pool_start(&s->opt.db, s->opt.db_threads);
		s->health_pool = db_pool_start(&s->opt.db, 1);
		if (s->pool == NULL || s->health_pool == NULL || !engine_start(s))
			return fail_start(s, "initialisation failed", "cannot start threads");
	}
	if (!http_start(s))
		return fail_start(s, "cannot serve", strerror(errno));
	if (s->opt.pidfile != NULL && !write_pidfile(s->opt.pidfile))
		return fail_start(s, "cannot write the pidfile", strerror(errno));
	for (size_t i = 0; i < s->n_nodes; i++) {
		char where[INET6_ADDRSTRLEN + 16];
		format_addr(&s->opt, s->nodes[i].port, where, sizeof(where));
		printf("kumasim %s listening on %s\n", s->nodes[i].id, where);
	}
	fflush(stdout);
	logmsg(s, "%zu node(s), %s, rate limit %u", s->n_nodes,
	       s->opt.instant ? "instant" : "realistic", s->opt.rate_limit);

	wait_for_exit(s, &set);
	shutdown_all(s);
	return 0;
}
