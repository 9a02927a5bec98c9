/*
 * db_sqlite.c — kumasim's SQLite backend: the cluster file kumaguard's embedded store uses
 * (or a node's own kuma.db).
 *
 * Owns: one sqlite3 handle per connection and the SQL for it.  Must not: keep state between
 * calls or decide anything.  The tables are created with the same columns as kumaguard's
 * store_sqlite.c (plus Kuma's `user`), so whichever starts first makes a file the other
 * accepts.  Like Uptime Kuma on SQLite, the file is put in WAL mode.
 */
#include "db.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BUSY_TIMEOUT_MS 5000

static const char SCHEMA_SQL[] =
	"CREATE TABLE IF NOT EXISTS node ("
	" node_id VARCHAR(50) NOT NULL PRIMARY KEY,"
	" node_name VARCHAR(100) NOT NULL,"
	" location VARCHAR(100),"
	" hostname VARCHAR(255),"
	" host VARCHAR(45),"
	" status VARCHAR(20) DEFAULT 'online',"
	" active BOOLEAN DEFAULT 1,"
	" is_primary BOOLEAN DEFAULT 0,"
	" created_date DATETIME DEFAULT CURRENT_TIMESTAMP,"
	" modified_date DATETIME DEFAULT CURRENT_TIMESTAMP,"
	" last_seen DATETIME NULL);"
	"CREATE TABLE IF NOT EXISTS monitor ("
	" id INTEGER PRIMARY KEY AUTOINCREMENT,"
	" name VARCHAR(150),"
	" active BOOLEAN NOT NULL DEFAULT 1,"
	" user_id INTEGER,"
	" node_id VARCHAR(50) NULL,"
	" assigned_node VARCHAR(255) NULL);"
	"CREATE INDEX IF NOT EXISTS monitor_node_id ON monitor (node_id);"
	"CREATE INDEX IF NOT EXISTS monitor_assigned_node ON monitor (assigned_node);"
	"CREATE TABLE IF NOT EXISTS user ("
	" id INTEGER PRIMARY KEY AUTOINCREMENT,"
	" username VARCHAR(255) NOT NULL UNIQUE,"
	" password VARCHAR(255),"
	" active BOOLEAN NOT NULL DEFAULT 1);";

static int fail(sqlite3 *db, const char *what, char *err, size_t errlen)
{
	snprintf(err, errlen, "sqlite: %s: %s", what, db ? sqlite3_errmsg(db) : "no handle");
	return -1;
}

static int exec(sqlite3 *db, const char *sql, const char *what, char *err, size_t errlen)
{
	char *msg = NULL;

	if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
		snprintf(err, errlen, "sqlite: %s: %s", what, msg ? msg : sqlite3_errmsg(db));
		sqlite3_free(msg);
		return -1;
	}
	return 0;
}

static void *sq_open(const struct db_cfg *cfg, char *err, size_t errlen)
{
	sqlite3 *db = NULL;

	if (sqlite3_open_v2(cfg->sqlite_path, &db,
			    SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
			    NULL) != SQLITE_OK) {
		snprintf(err, errlen, "sqlite: open %s: %s", cfg->sqlite_path,
			 db ? sqlite3_errmsg(db) : "out of memory");
		sqlite3_close(db);
		return NULL;
	}
	sqlite3_busy_timeout(db, BUSY_TIMEOUT_MS);
	return db;
}

static void sq_close(void *impl)
{
	sqlite3_close(impl);
}

static int sq_ping(void *impl, char *err, size_t errlen)
{
	return exec(impl, "SELECT 1", "SELECT 1", err, errlen);
}

static int sq_prepare(void *impl, bool setup_done, char *err, size_t errlen)
{
	sqlite3 *db = impl;

	if (exec(db, "PRAGMA journal_mode = WAL", "journal mode", err, errlen) != 0 ||
	    exec(db, SCHEMA_SQL, "create tables", err, errlen) != 0)
		return -1;
	if (setup_done &&
	    exec(db, "INSERT INTO user (id, username, password, active) SELECT 1, 'admin', "
		     "'(set up by kumasim --setup-done)', 1 WHERE NOT EXISTS (SELECT 1 FROM user)",
		 "create the first user", err, errlen) != 0)
		return -1;
	return 0;
}

static int sq_register(void *impl, const struct node_reg *regs, size_t n, const char *utc_now,
		       char *err, size_t errlen)
{
	sqlite3 *db = impl;
	sqlite3_stmt *st = NULL;
	int rc = 0;

	if (exec(db, "BEGIN IMMEDIATE", "begin", err, errlen) != 0)
		return -1;
	if (sqlite3_prepare_v2(db,
			       "INSERT INTO node (node_id, node_name, host, status, is_primary,"
			       " last_seen, created_date, modified_date)"
			       " VALUES (?1, ?2, ?3, 'online', ?4, ?5, ?5, ?5)"
			       " ON CONFLICT (node_id) DO UPDATE SET node_name = excluded.node_name,"
			       " host = excluded.host, status = 'online',"
			       " is_primary = excluded.is_primary, last_seen = excluded.last_seen,"
			       " modified_date = excluded.modified_date",
			       -1, &st, NULL) != SQLITE_OK) {
		rc = fail(db, "register node", err, errlen);
		goto out;
	}
	for (size_t i = 0; i < n && rc == 0; i++) {
		sqlite3_bind_text(st, 1, regs[i].id, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, regs[i].name, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 3, regs[i].host, -1, SQLITE_STATIC);
		sqlite3_bind_int(st, 4, regs[i].primary ? 1 : 0);
		sqlite3_bind_text(st, 5, utc_now, -1, SQLITE_STATIC);
		if (sqlite3_step(st) != SQLITE_DONE)
			rc = fail(db, "register node", err, errlen);
		sqlite3_reset(st);
	}
out:
	sqlite3_finalize(st);
	if (rc == 0)
		return exec(db, "COMMIT", "commit", err, errlen);
	sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
	return rc;
}

static int sq_user_ok(void *impl, bool *ok, char *err, size_t errlen)
{
	sqlite3 *db = impl;
	sqlite3_stmt *st = NULL;
	int step;

	*ok = false;
	if (sqlite3_prepare_v2(db, "SELECT active FROM user WHERE id = 1", -1, &st, NULL) !=
	    SQLITE_OK) {
		/* No user table: nobody has set the node up. */
		if (strstr(sqlite3_errmsg(db), "no such table") != NULL)
			return 0;
		return fail(db, "read the first user", err, errlen);
	}
	step = sqlite3_step(st);
	if (step == SQLITE_ROW)
		*ok = sqlite3_column_int(st, 0) == 1;
	sqlite3_finalize(st);
	if (step != SQLITE_ROW && step != SQLITE_DONE)
		return fail(db, "read the first user", err, errlen);
	return 0;
}

static int sq_wanted(void *impl, const char *node_id, struct id_vec *out, char *err,
		     size_t errlen)
{
	sqlite3 *db = impl;
	sqlite3_stmt *st = NULL;
	int step;

	if (sqlite3_prepare_v2(db,
			       "SELECT id FROM monitor WHERE active = 1 AND"
			       " COALESCE(assigned_node, node_id) = ?1",
			       -1, &st, NULL) != SQLITE_OK)
		return fail(db, "read assignments", err, errlen);
	sqlite3_bind_text(st, 1, node_id, -1, SQLITE_STATIC);
	while ((step = sqlite3_step(st)) == SQLITE_ROW) {
		if (!id_vec_push(out, sqlite3_column_int64(st, 0))) {
			sqlite3_finalize(st);
			snprintf(err, errlen, "out of memory");
			return -1;
		}
	}
	sqlite3_finalize(st);
	if (step != SQLITE_DONE)
		return fail(db, "read assignments", err, errlen);
	return 0;
}

static int sq_wanted_all(void *impl, void (*fn)(void *arg, const char *node, int64_t id),
			 void *arg, char *err, size_t errlen)
{
	sqlite3 *db = impl;
	sqlite3_stmt *st = NULL;
	int step;

	if (sqlite3_prepare_v2(db,
			       "SELECT COALESCE(assigned_node, node_id), id FROM monitor"
			       " WHERE active = 1 AND COALESCE(assigned_node, node_id) IS NOT NULL",
			       -1, &st, NULL) != SQLITE_OK)
		return fail(db, "read assignments", err, errlen);
	while ((step = sqlite3_step(st)) == SQLITE_ROW)
		fn(arg, (const char *)sqlite3_column_text(st, 0), sqlite3_column_int64(st, 1));
	sqlite3_finalize(st);
	if (step != SQLITE_DONE)
		return fail(db, "read assignments", err, errlen);
	return 0;
}

const struct db_ops db_sqlite_ops = {
	.open = sq_open,
	.close = sq_close,
	.ping = sq_ping,
	.prepare = sq_prepare,
	.register_nodes = sq_register,
	.user_ok = sq_user_ok,
	.wanted = sq_wanted,
	.wanted_all = sq_wanted_all,
};
