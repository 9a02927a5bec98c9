/*
 * db_mariadb.c — kumasim's MariaDB backend: the database the cluster's nodes share.
 *
 * Owns: one libmariadb connection per db_conn and the SQL for it.  Must not: keep state
 * between calls, reconnect by itself (the pool opens a new connection after a failure), or
 * put the password in an error message.
 *
 * The session time zone is left as the server's, on purpose: a real node writes last_seen as a
 * UTC string, which a server whose time zone is not UTC stores off by the offset.  Table
 * definitions match kumaguard's store_mariadb.c (--init-schema) plus Kuma's `user` table.
 */
#include "db.h"

#include <mysql.h>
#include <mysqld_error.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const SCHEMA[] = {
	"CREATE TABLE IF NOT EXISTS node ("
	" node_id VARCHAR(50) NOT NULL PRIMARY KEY,"
	" node_name VARCHAR(100) NOT NULL,"
	" location VARCHAR(100) NULL,"
	" hostname VARCHAR(255) NULL,"
	" host VARCHAR(45) NULL,"
	" status VARCHAR(20) DEFAULT 'online',"
	" active BOOLEAN DEFAULT 1,"
	" is_primary BOOLEAN DEFAULT 0,"
	" created_date TIMESTAMP NULL DEFAULT CURRENT_TIMESTAMP,"
	" modified_date TIMESTAMP NULL DEFAULT CURRENT_TIMESTAMP,"
	" last_seen TIMESTAMP NULL DEFAULT NULL) ENGINE=InnoDB",
	"CREATE TABLE IF NOT EXISTS monitor ("
	" id INT NOT NULL AUTO_INCREMENT PRIMARY KEY,"
	" name VARCHAR(150) NULL,"
	" active BOOLEAN NOT NULL DEFAULT 1,"
	" user_id INT NULL,"
	" node_id VARCHAR(50) NULL,"
	" assigned_node VARCHAR(255) NULL,"
	" KEY monitor_node_id (node_id),"
	" KEY monitor_assigned_node (assigned_node)) ENGINE=InnoDB",
	"CREATE TABLE IF NOT EXISTS `user` ("
	" id INT NOT NULL AUTO_INCREMENT PRIMARY KEY,"
	" username VARCHAR(255) NOT NULL,"
	" password VARCHAR(255) NULL,"
	" active BOOLEAN NOT NULL DEFAULT 1,"
	" UNIQUE KEY user_username (username)) ENGINE=InnoDB",
};

static int fail(MYSQL *db, const char *what, char *err, size_t errlen)
{
	snprintf(err, errlen, "mariadb: %s: %s (error %u)", what, mysql_error(db), mysql_errno(db));
	return -1;
}

static void *my_open(const struct db_cfg *cfg, char *err, size_t errlen)
{
	MYSQL *db = mysql_init(NULL);
	unsigned t = cfg->timeout_s;
	my_bool no = 0;

	if (db == NULL) {
		snprintf(err, errlen, "mariadb: out of memory");
		return NULL;
	}
	mysql_options(db, MYSQL_OPT_CONNECT_TIMEOUT, &t);
	mysql_options(db, MYSQL_OPT_READ_TIMEOUT, &t);
	mysql_options(db, MYSQL_OPT_WRITE_TIMEOUT, &t);
	mysql_options(db, MYSQL_OPT_RECONNECT, &no);
	mysql_options(db, MYSQL_SET_CHARSET_NAME, "utf8mb4");
	if (mysql_real_connect(db, cfg->socket ? NULL : cfg->host, cfg->user, cfg->password,
			       cfg->name, cfg->port, cfg->socket, 0) == NULL) {
		if (cfg->socket)
			snprintf(err, errlen, "mariadb: connect to socket %s as %s: %s", cfg->socket,
				 cfg->user ? cfg->user : "(default)", mysql_error(db));
		else
			snprintf(err, errlen, "mariadb: connect to %s:%u as %s: %s",
				 cfg->host ? cfg->host : "localhost", cfg->port,
				 cfg->user ? cfg->user : "(default)", mysql_error(db));
		mysql_close(db);
		return NULL;
	}
	if (mysql_autocommit(db, 1) != 0) {
		fail(db, "autocommit", err, errlen);
		mysql_close(db);
		return NULL;
	}
	return db;
}

static void my_close(void *impl)
{
	mysql_close(impl);
}

static int run(MYSQL *db, const char *sql, const char *what, char *err, size_t errlen)
{
	MYSQL_RES *r;

	if (mysql_real_query(db, sql, strlen(sql)) != 0)
		return fail(db, what, err, errlen);
	r = mysql_store_result(db);
	if (r != NULL)
		mysql_free_result(r);
	else if (mysql_field_count(db) != 0)
		return fail(db, what, err, errlen);
	return 0;
}

static int my_ping(void *impl, char *err, size_t errlen)
{
	return run(impl, "SELECT 1", "SELECT 1", err, errlen);
}

static int my_prepare(void *impl, bool setup_done, char *err, size_t errlen)
{
	MYSQL *db = impl;

	for (size_t i = 0; i < sizeof(SCHEMA) / sizeof(SCHEMA[0]); i++)
		if (run(db, SCHEMA[i], "create tables", err, errlen) != 0)
			return -1;
	if (setup_done &&
	    run(db, "INSERT INTO `user` (id, username, password, active) SELECT 1, 'admin', "
		    "'(set up by kumasim --setup-done)', 1 FROM DUAL WHERE NOT EXISTS "
		    "(SELECT 1 FROM `user`)",
		"create the first user", err, errlen) != 0)
		return -1;
	return 0;
}

/* Values are node ids, names and hosts, already limited to a safe alphabet by the caller;
 * they are escaped anyway. */
static bool append_quoted(MYSQL *db, char *buf, size_t size, size_t *len, const char *v)
{
	size_t vl = strlen(v);

	if (*len + 2 * vl + 3 >= size)
		return false;
	buf[(*len)++] = '\'';
	*len += mysql_real_escape_string(db, buf + *len, v, (unsigned long)vl);
	buf[(*len)++] = '\'';
	buf[*len] = '\0';
	return true;
}

static int my_register(void *impl, const struct node_reg *regs, size_t n, const char *utc_now,
		       char *err, size_t errlen)
{
	MYSQL *db = impl;
	char sql[2048];

	for (size_t i = 0; i < n; i++) {
		size_t len = (size_t)snprintf(sql, sizeof(sql),
					      "INSERT INTO node (node_id, node_name, host, status,"
					      " is_primary, last_seen) VALUES (");
		bool ok = append_quoted(db, sql, sizeof(sql), &len, regs[i].id);
		ok = ok && len + 1 < sizeof(sql);
		if (ok)
			sql[len++] = ',';
		ok = ok && append_quoted(db, sql, sizeof(sql), &len, regs[i].name);
		ok = ok && len + 1 < sizeof(sql);
		if (ok)
			sql[len++] = ',';
		ok = ok && append_quoted(db, sql, sizeof(sql), &len, regs[i].host);
		if (ok) {
			int k = snprintf(sql + len, sizeof(sql) - len,
					 ", 'online', %d, '%s') ON DUPLICATE KEY UPDATE"
					 " node_name = VALUES(node_name), host = VALUES(host),"
					 " status = 'online', is_primary = VALUES(is_primary),"
					 " last_seen = VALUES(last_seen), modified_date = NOW()",
					 regs[i].primary ? 1 : 0, utc_now);
			ok = k > 0 && (size_t)k < sizeof(sql) - len;
		}
		if (!ok) {
			snprintf(err, errlen, "register node %s: statement too long", regs[i].id);
			return -1;
		}
		if (run(db, sql, "register node", err, errlen) != 0)
			return -1;
	}
	return 0;
}

static int my_user_ok(void *impl, bool *ok, char *err, size_t errlen)
{
	MYSQL *db = impl;
	MYSQL_RES *r;
	MYSQL_ROW row;
	static const char sql[] = "SELECT active FROM `user` WHERE id = 1";

	*ok = false;
	if (mysql_real_query(db, sql, sizeof(sql) - 1) != 0) {
		if (mysql_errno(db) == ER_NO_SUCH_TABLE)
			return 0; /* nobody has set the node up */
		return fail(db, "read the first user", err, errlen);
	}
	r = mysql_store_result(db);
	if (r == NULL)
		return fail(db, "read the first user", err, errlen);
	row = mysql_fetch_row(r);
	*ok = row != NULL && row[0] != NULL && strcmp(row[0], "1") == 0;
	mysql_free_result(r);
	return 0;
}

static int my_wanted(void *impl, const char *node_id, struct id_vec *out, char *err,
		     size_t errlen)
{
	MYSQL *db = impl;
	MYSQL_RES *r;
	MYSQL_ROW row;
	char sql[512];
	size_t len = (size_t)snprintf(sql, sizeof(sql),
				      "SELECT id FROM monitor WHERE active = 1 AND"
				      " COALESCE(assigned_node, node_id) = ");

	if (!append_quoted(db, sql, sizeof(sql), &len, node_id)) {
		snprintf(err, errlen, "node id too long");
		return -1;
	}
	if (mysql_real_query(db, sql, len) != 0)
		return fail(db, "read assignments", err, errlen);
	r = mysql_use_result(db);
	if (r == NULL)
		return fail(db, "read assignments", err, errlen);
	while ((row = mysql_fetch_row(r)) != NULL) {
		if (row[0] != NULL && !id_vec_push(out, strtoll(row[0], NULL, 10))) {
			mysql_free_result(r);
			snprintf(err, errlen, "out of memory");
			return -1;
		}
	}
	if (mysql_errno(db) != 0) {
		mysql_free_result(r);
		return fail(db, "read assignments", err, errlen);
	}
	mysql_free_result(r);
	return 0;
}

static int my_wanted_all(void *impl, void (*fn)(void *arg, const char *node, int64_t id),
			 void *arg, char *err, size_t errlen)
{
	MYSQL *db = impl;
	MYSQL_RES *r;
	MYSQL_ROW row;
	static const char sql[] =
		"SELECT COALESCE(assigned_node, node_id), id FROM monitor"
		" WHERE active = 1 AND COALESCE(assigned_node, node_id) IS NOT NULL";

	if (mysql_real_query(db, sql, sizeof(sql) - 1) != 0)
		return fail(db, "read assignments", err, errlen);
	r = mysql_use_result(db);
	if (r == NULL)
		return fail(db, "read assignments", err, errlen);
	while ((row = mysql_fetch_row(r)) != NULL)
		if (row[0] != NULL && row[1] != NULL)
			fn(arg, row[0], strtoll(row[1], NULL, 10));
	if (mysql_errno(db) != 0) {
		mysql_free_result(r);
		return fail(db, "read assignments", err, errlen);
	}
	mysql_free_result(r);
	return 0;
}

const struct db_ops db_mariadb_ops = {
	.open = my_open,
	.close = my_close,
	.ping = my_ping,
	.prepare = my_prepare,
	.register_nodes = my_register,
	.user_ok = my_user_ok,
	.wanted = my_wanted,
	.wanted_all = my_wanted_all,
};
