/*
 * auth_users.c: users, roles and the role-to-scope mapping in shareddb.
 *
 * Tables (module "users"): um_user, um_role, um_user_role (user id, role
 * id) and um_role_scope (role name, scope; keyed by name like the
 * reference's tenant-conf role mapping, so it survives a role being
 * re-created). Every change that touches more than one row runs in one
 * transaction; every change to a user or role flushes the verified
 * credential cache of auth.c so it takes effect on the next request.
 */
#include "auth/auth_users.h"

#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/auth.h"
#include "common/log.h"
#include "common/util.h"
#include "store/db.h"

/* Fixed ids of the reference roles, so the seed is plain SQL. */
#define ROLE_ID_ADMIN "00000000-0000-4000-8000-000000000001"

/* Step i is schema version i+1; append new steps, never edit old ones. */
static const char *const users_steps[] = {
	/* 1: tables */
	"CREATE TABLE um_user ("
	" id TEXT PRIMARY KEY,"
	" username TEXT NOT NULL UNIQUE,"
	" password_hash TEXT NOT NULL,"
	" given_name TEXT,"
	" family_name TEXT,"
	" email TEXT,"
	" failed_attempts INTEGER NOT NULL DEFAULT 0,"
	" locked_until_ms BIGINT NOT NULL DEFAULT 0,"
	" created_ms BIGINT NOT NULL,"
	" modified_ms BIGINT NOT NULL);"
	"CREATE TABLE um_role ("
	" id TEXT PRIMARY KEY,"
	" name TEXT NOT NULL UNIQUE,"
	" created_ms BIGINT NOT NULL);"
	"CREATE TABLE um_user_role ("
	" user_id TEXT NOT NULL,"
	" role_id TEXT NOT NULL,"
	" PRIMARY KEY (user_id, role_id));"
	"CREATE INDEX um_user_role_by_role ON um_user_role (role_id);"
	"CREATE TABLE um_role_scope ("
	" role_name TEXT NOT NULL,"
	" scope TEXT NOT NULL,"
	" PRIMARY KEY (role_name, scope))",
	/* 2: the reference roles (created_ms 0: they exist since the start) and
	 * the reference's role-to-scope mapping (tenant-conf RESTAPIScopes). */
	"INSERT INTO um_role (id, name, created_ms) VALUES"
	" ('" ROLE_ID_ADMIN "', 'admin', 0),"
	" ('00000000-0000-4000-8000-000000000002', 'Internal/creator', 0),"
	" ('00000000-0000-4000-8000-000000000003', 'Internal/publisher', 0),"
	" ('00000000-0000-4000-8000-000000000004', 'Internal/subscriber', 0),"
	" ('00000000-0000-4000-8000-000000000005', 'Internal/everyone', 0),"
	" ('00000000-0000-4000-8000-000000000006', 'Internal/devops', 0),"
	" ('00000000-0000-4000-8000-000000000007', 'Internal/observer', 0);"
	"INSERT INTO um_role_scope (role_name, scope) VALUES"
	"('admin', 'apim:api_view'),"
	"('admin', 'apim:api_create'),"
	"('admin', 'apim:api_publish'),"
	"('admin', 'apim:api_delete'),"
	"('admin', 'apim:api_manage'),"
	"('admin', 'apim:api_import_export'),"
	"('admin', 'apim:api_generate_key'),"
	"('admin', 'apim:api_product_import_export'),"
	"('admin', 'apim:document_create'),"
	"('admin', 'apim:document_manage'),"
	"('admin', 'apim:subscribe'),"
	"('admin', 'apim:app_manage'),"
	"('admin', 'apim:sub_manage'),"
	"('admin', 'apim:subscription_view'),"
	"('admin', 'apim:subscription_block'),"
	"('admin', 'apim:admin'),"
	"('admin', 'apim:tier_view'),"
	"('admin', 'apim:tier_manage'),"
	"('admin', 'apim:admin_tier_view'),"
	"('admin', 'apim:bl_view'),"
	"('admin', 'apim:bl_manage'),"
	"('admin', 'apim:environment_read'),"
	"('admin', 'apim:environment_manage'),"
	"('admin', 'apim:api_key'),"
	"('admin', 'apim:shared_scope_manage'),"
	"('admin', 'apim:mediation_policy_view'),"
	"('admin', 'apim:mediation_policy_manage'),"
	"('admin', 'apim:client_certificates_view'),"
	"('admin', 'apim:app_import_export'),"
	"('admin', 'apim:keymanagers_manage'),"
	"('admin', 'apim:role_manage'),"
	"('admin', 'apim:scope_manage'),"
	"('admin', 'apim:monetization_usage_publish'),"
	"('admin', 'apim:threat_protection_policy_manage'),"
	"('admin', 'apim:policies_import_export'),"
	"('admin', 'apim:admin_operations'),"
	"('admin', 'apim:admin_settings'),"
	"('admin', 'apim:tenantInfo'),"
	"('Internal/creator', 'apim:api_view'),"
	"('Internal/creator', 'apim:api_create'),"
	"('Internal/creator', 'apim:api_delete'),"
	"('Internal/creator', 'apim:api_generate_key'),"
	"('Internal/creator', 'apim:document_create'),"
	"('Internal/creator', 'apim:document_manage'),"
	"('Internal/creator', 'apim:tier_view'),"
	"('Internal/creator', 'apim:subscription_view'),"
	"('Internal/creator', 'apim:shared_scope_manage'),"
	"('Internal/creator', 'apim:mediation_policy_view'),"
	"('Internal/creator', 'apim:mediation_policy_manage'),"
	"('Internal/creator', 'apim:client_certificates_view'),"
	"('Internal/creator', 'apim:api_import_export'),"
	"('Internal/publisher', 'apim:api_view'),"
	"('Internal/publisher', 'apim:api_publish'),"
	"('Internal/publisher', 'apim:api_generate_key'),"
	"('Internal/publisher', 'apim:tier_view'),"
	"('Internal/publisher', 'apim:sub_manage'),"
	"('Internal/publisher', 'apim:subscription_view'),"
	"('Internal/publisher', 'apim:subscription_block'),"
	"('Internal/publisher', 'apim:mediation_policy_view'),"
	"('Internal/publisher', 'apim:client_certificates_view'),"
	"('Internal/subscriber', 'apim:subscribe'),"
	"('Internal/subscriber', 'apim:app_manage'),"
	"('Internal/subscriber', 'apim:api_key'),"
	"('Internal/subscriber', 'apim:app_import_export'),"
	"('Internal/observer', 'apim:api_view'),"
	"('Internal/observer', 'apim:tier_view'),"
	"('Internal/devops', 'apim:api_view'),"
	"('Internal/devops', 'apim:subscribe'),"
	"('Internal/devops', 'apim:app_manage')"
};

#define USER_COLS "id, username, given_name, family_name, email, created_ms, modified_ms"

/* Hash of a dummy password, computed once with the configured cost, that an
 * unknown username is verified against so that it costs one argon2
 * verification like a known one (no user enumeration by timing). */
static pthread_mutex_t users_dummy_mu = PTHREAD_MUTEX_INITIALIZER;
static char users_dummy_hash[crypto_pwhash_STRBYTES];

static void users_i64(char *buf, size_t len, int64_t v)
{
	snprintf(buf, len, "%lld", (long long)v);
}

/* Hashes password with the configured argon2id cost into out. */
static apim_rc users_hash(const apim_ctx *ctx, const char *password,
			  char out[crypto_pwhash_STRBYTES])
{
	unsigned long long ops = (unsigned long long)ctx->cfg->security_argon2_opslimit;
	size_t mem = (size_t)ctx->cfg->security_argon2_memlimit_kb * 1024;
	if (crypto_pwhash_str_alg(out, password, strlen(password), ops, mem,
				  crypto_pwhash_ALG_ARGON2ID13) != 0) {
		log_error("auth", "argon2id hashing failed (out of memory?)");
		return APIM_ENOMEM;
	}
	return APIM_OK;
}

static const char *users_dummy(const apim_ctx *ctx)
{
	pthread_mutex_lock(&users_dummy_mu);
	if (users_dummy_hash[0] == '\0' &&
	    users_hash(ctx, "apim-dummy-password-never-matches", users_dummy_hash) != APIM_OK)
		users_dummy_hash[0] = '\0';
	pthread_mutex_unlock(&users_dummy_mu);
	return users_dummy_hash;
}

const char *auth_password_policy(const char *password)
{
	static const char msg[] =
		"The password must be 8 to 256 characters long and contain at least 3 of these "
		"4 kinds of characters: lower-case letters, upper-case letters, digits, symbols.";
	if (password == NULL)
		return msg;
	size_t chars = 0;
	int lower = 0, upper = 0, digit = 0, symbol = 0;
	for (const unsigned char *p = (const unsigned char *)password; *p; p++) {
		if ((*p & 0xc0) != 0x80)
			chars++; /* count UTF-8 characters, not bytes */
		if (*p >= 'a' && *p <= 'z')
			lower = 1;
		else if (*p >= 'A' && *p <= 'Z')
			upper = 1;
		else if (*p >= '0' && *p <= '9')
			digit = 1;
		else
			symbol = 1;
	}
	if (chars < 8 || chars > 256 || lower + upper + digit + symbol < 3)
		return msg;
	return NULL;
}

static const char *users_dup(arena *pool, const char *s)
{
	return s != NULL ? arena_strdup(pool, s) : NULL;
}

static void users_from_row(arena *pool, const db_res *res, size_t row, auth_user *u)
{
	memset(u, 0, sizeof(*u));
	const char *id = db_res_get(res, row, 0);
	snprintf(u->id, sizeof(u->id), "%s", id != NULL ? id : "");
	u->username = users_dup(pool, db_res_get(res, row, 1));
	u->given_name = users_dup(pool, db_res_get(res, row, 2));
	u->family_name = users_dup(pool, db_res_get(res, row, 3));
	u->email = users_dup(pool, db_res_get(res, row, 4));
	u->created_ms = db_res_int(res, row, 5);
	u->modified_ms = db_res_int(res, row, 6);
}

static apim_rc users_load_roles(apim_ctx *ctx, arena *pool, auth_user *u)
{
	db_res *res = NULL;
	apim_rc rc = db_exec(ctx->shared, &res,
			     "SELECT r.name FROM um_user_role ur JOIN um_role r ON r.id = ur.role_id"
			     " WHERE ur.user_id = ? ORDER BY r.name",
			     DB_ARGS(u->id));
	if (rc != APIM_OK)
		return rc;
	size_t n = db_res_rows(res);
	const char **roles = arena_alloc(pool, (n + 1) * sizeof(*roles));
	for (size_t i = 0; i < n; i++)
		roles[i] = arena_strdup(pool, db_res_get(res, i, 0));
	u->roles = roles;
	u->nroles = n;
	db_res_free(res);
	return APIM_OK;
}

/*
 * Resolves role names to ids (duplicates dropped) into *ids (from pool).
 * APIM_EINVAL when a role does not exist (logged with its name).
 */
static apim_rc users_role_ids(apim_ctx *ctx, arena *pool, const char *const *roles, size_t n,
			      const char ***ids, size_t *nids)
{
	const char **out = arena_alloc(pool, (n + 1) * sizeof(*out));
	size_t k = 0;
	for (size_t i = 0; i < n; i++) {
		if (roles[i] == NULL)
			return APIM_EINVAL;
		db_res *res = NULL;
		apim_rc rc = db_exec(ctx->shared, &res, "SELECT id FROM um_role WHERE name = ?",
				     DB_ARGS(roles[i]));
		if (rc != APIM_OK)
			return rc;
		if (db_res_rows(res) == 0) {
			db_res_free(res);
			log_debug("auth", "role '%s' does not exist", roles[i]);
			return APIM_EINVAL;
		}
		const char *id = db_res_get(res, 0, 0);
		int dup = 0;
		for (size_t j = 0; j < k; j++)
			dup |= strcmp(out[j], id) == 0;
		if (!dup)
			out[k++] = arena_strdup(pool, id);
		db_res_free(res);
	}
	*ids = out;
	*nids = k;
	return APIM_OK;
}

/* Inserts the user with its role ids in one transaction. */
static apim_rc users_insert(apim_ctx *ctx, const char *id, const char *username,
			    const char *hash, const char *given, const char *family,
			    const char *email, const char *const *role_ids, size_t nids)
{
	char now[24];
	users_i64(now, sizeof(now), apim_now_ms());
	apim_rc rc = db_begin(ctx->shared);
	if (rc != APIM_OK)
		return rc;
	rc = db_exec(ctx->shared, NULL,
		     "INSERT INTO um_user (id, username, password_hash, given_name, family_name,"
		     " email, failed_attempts, locked_until_ms, created_ms, modified_ms)"
		     " VALUES (?, ?, ?, ?, ?, ?, 0, 0, ?, ?)",
		     DB_ARGS(id, username, hash, given, family, email, now, now));
	for (size_t i = 0; rc == APIM_OK && i < nids; i++)
		rc = db_exec(ctx->shared, NULL,
			     "INSERT INTO um_user_role (user_id, role_id) VALUES (?, ?)",
			     DB_ARGS(id, role_ids[i]));
	if (rc == APIM_OK)
		rc = db_commit(ctx->shared);
	if (rc != APIM_OK)
		db_rollback(ctx->shared);
	return rc;
}

/* Creates the admin account unless it exists; see auth_users_bootstrap. */
static apim_rc users_bootstrap_admin(apim_ctx *ctx, char **generated)
{
	const apim_config *cfg = ctx->cfg;
	db_res *res = NULL;
	char hash[crypto_pwhash_STRBYTES];
	char pw[64];
	apim_rc rc = db_exec(ctx->shared, &res, "SELECT id FROM um_user WHERE username = ?",
			     DB_ARGS(cfg->admin_username));
	if (rc != APIM_OK)
		return rc;
	if (db_res_rows(res) > 0) {
		/* The admin always holds the admin role (it cannot be removed
		 * through the API; this repairs a database edited by hand). */
		char id[APIM_UUID_LEN + 1];
		snprintf(id, sizeof(id), "%s", db_res_get(res, 0, 0));
		db_res_free(res);
		return db_exec(ctx->shared, NULL,
			       "INSERT INTO um_user_role (user_id, role_id) VALUES (?, ?)"
			       " ON CONFLICT DO NOTHING",
			       DB_ARGS(id, ROLE_ID_ADMIN));
	}
	db_res_free(res);

	int gen = *cfg->admin_password == '\0';
	if (gen) {
		/* 18 random bytes are 24 base64url characters; draw again in the
		 * rare case they miss the password policy. */
		do
			apim_random_token(pw, 18);
		while (auth_password_policy(pw) != NULL);
	} else {
		pw[0] = '\0';
	}
	const char *password = gen ? pw : cfg->admin_password;
	rc = users_hash(ctx, password, hash);
	if (rc != APIM_OK)
		goto out;
	char id[APIM_UUID_LEN + 1];
	apim_uuid(id);
	const char *admin_role = ROLE_ID_ADMIN;
	rc = users_insert(ctx, id, cfg->admin_username, hash, NULL, NULL, NULL, &admin_role, 1);
	if (rc == APIM_ECONFLICT) {
		/* Another node starting at the same time created it first. */
		log_info("auth", "admin account '%s' was created by another node",
			 cfg->admin_username);
		rc = APIM_OK;
		goto out;
	}
	if (rc != APIM_OK)
		goto out;
	log_info("auth", "created the admin account '%s'", cfg->admin_username);
	if (gen) {
		char path[4096], line[80];
		snprintf(path, sizeof(path), "%s/admin-password", cfg->server_home);
		int len = snprintf(line, sizeof(line), "%s\n", pw);
		if (apim_write_file(path, line, (size_t)len, 0600) != APIM_OK)
			log_warn("auth", "cannot write %s: the generated admin password is only "
					 "shown on the console", path);
		sodium_memzero(line, sizeof(line));
		*generated = strdup(pw);
		if (*generated == NULL)
			rc = APIM_ENOMEM;
	}
out:
	sodium_memzero(pw, sizeof(pw));
	sodium_memzero(hash, sizeof(hash));
	return rc;
}

apim_rc auth_users_bootstrap(apim_ctx *ctx, char **generated)
{
	*generated = NULL;
	apim_rc rc = db_migrate(ctx->shared, "users", users_steps,
				sizeof(users_steps) / sizeof(users_steps[0]));
	if (rc != APIM_OK)
		return rc;
	if (users_dummy(ctx)[0] == '\0')
		return APIM_ENOMEM;
	return users_bootstrap_admin(ctx, generated);
}

/*
 * Counts one failed login atomically; locks the account when this failure
 * reaches security.lockout_attempts (and starts the count again, so the
 * user gets a full set of attempts when the lock expires).
 */
static apim_rc users_failed(apim_ctx *ctx, const char *id, const char *username)
{
	const apim_config *cfg = ctx->cfg;
	char attempts[24], until[24], now[24];
	int64_t now_ms = apim_now_ms();
	users_i64(attempts, sizeof(attempts), cfg->security_lockout_attempts);
	users_i64(until, sizeof(until), now_ms + cfg->security_lockout_seconds * 1000);
	users_i64(now, sizeof(now), now_ms);
	db_res *res = NULL;
	apim_rc rc = db_exec(
		ctx->shared, &res,
		"UPDATE um_user SET"
		" failed_attempts = CASE WHEN failed_attempts + 1 >= CAST(? AS INTEGER) THEN 0"
		"  ELSE failed_attempts + 1 END,"
		" locked_until_ms = CASE WHEN failed_attempts + 1 >= CAST(? AS INTEGER)"
		"  THEN CAST(? AS BIGINT) ELSE locked_until_ms END"
		" WHERE id = ? AND locked_until_ms <= CAST(? AS BIGINT)"
		" RETURNING locked_until_ms",
		DB_ARGS(attempts, attempts, until, id, now));
	if (rc != APIM_OK)
		return rc;
	/* No row: another request locked the account meanwhile. */
	int locked = db_res_rows(res) == 0 || db_res_int(res, 0, 0) > now_ms;
	db_res_free(res);
	if (locked) {
		log_info("auth", "account '%s' locked for %lld s after %lld failed logins", username,
			 (long long)cfg->security_lockout_seconds,
			 (long long)cfg->security_lockout_attempts);
		return APIM_ELOCKED;
	}
	return APIM_EUNAUTH;
}

apim_rc auth_users_verify(apim_ctx *ctx, arena *pool, const char *username,
			  const char *password, auth_user *user)
{
	db_res *res = NULL;
	apim_rc rc;
	char id[APIM_UUID_LEN + 1];
	if (username == NULL || password == NULL)
		return APIM_EUNAUTH;
	rc = db_exec(ctx->shared, &res,
		     "SELECT id, password_hash, failed_attempts, locked_until_ms FROM um_user"
		     " WHERE username = ?",
		     DB_ARGS(username));
	if (rc != APIM_OK)
		return rc;
	if (db_res_rows(res) == 0) {
		db_res_free(res);
		if (crypto_pwhash_str_verify(users_dummy(ctx), password, strlen(password)) == 0)
			log_debug("auth", "the dummy password was used"); /* harmless */
		return APIM_EUNAUTH;
	}
	snprintf(id, sizeof(id), "%s", db_res_get(res, 0, 0));
	const char *hash = db_res_get(res, 0, 1);
	int64_t failed = db_res_int(res, 0, 2), locked_until = db_res_int(res, 0, 3);
	if (locked_until > apim_now_ms()) {
		db_res_free(res);
		return APIM_ELOCKED;
	}
	int ok = hash != NULL &&
		 crypto_pwhash_str_verify(hash, password, strlen(password)) == 0;
	int rehash = ok && crypto_pwhash_str_needs_rehash(
				   hash, (unsigned long long)ctx->cfg->security_argon2_opslimit,
				   (size_t)ctx->cfg->security_argon2_memlimit_kb * 1024) != 0;
	db_res_free(res);
	if (!ok)
		return users_failed(ctx, id, username);
	if (failed != 0 || locked_until != 0) {
		rc = db_exec(ctx->shared, NULL,
			     "UPDATE um_user SET failed_attempts = 0, locked_until_ms = 0 WHERE id = ?",
			     DB_ARGS(id));
		if (rc != APIM_OK)
			return rc;
	}
	if (rehash) {
		/* The configured cost changed: upgrade the stored hash now that
		 * the password is known. Best effort. */
		char h[crypto_pwhash_STRBYTES];
		if (users_hash(ctx, password, h) == APIM_OK)
			(void)db_exec(ctx->shared, NULL,
				      "UPDATE um_user SET password_hash = ? WHERE id = ?",
				      DB_ARGS(h, id));
		sodium_memzero(h, sizeof(h));
	}
	if (user == NULL)
		return APIM_OK;
	return auth_users_get(ctx, pool, id, user);
}

apim_rc auth_users_create(apim_ctx *ctx, arena *pool, const auth_user *in,
			  const char *password, auth_user *out)
{
	static const char *const everyone[] = {ROLE_EVERYONE};
	const char *const *roles = in->roles;
	size_t nroles = in->nroles;
	const char **ids = NULL;
	size_t nids = 0;
	char hash[crypto_pwhash_STRBYTES];
	char id[APIM_UUID_LEN + 1];
	arena *tmp = arena_create(1024);
	apim_rc rc = APIM_EINVAL;

	if (in->username == NULL || *in->username == '\0' || password == NULL)
		goto out;
	if (nroles == 0) {
		roles = everyone;
		nroles = 1;
	}
	rc = users_role_ids(ctx, tmp, roles, nroles, &ids, &nids);
	if (rc != APIM_OK)
		goto out;
	rc = users_hash(ctx, password, hash);
	if (rc != APIM_OK)
		goto out;
	apim_uuid(id);
	rc = users_insert(ctx, id, in->username, hash, in->given_name, in->family_name,
			  in->email, ids, nids);
	sodium_memzero(hash, sizeof(hash));
	if (rc != APIM_OK)
		goto out;
	if (out != NULL)
		rc = auth_users_get(ctx, pool, id, out);
out:
	arena_destroy(tmp);
	return rc;
}

apim_rc auth_users_get(apim_ctx *ctx, arena *pool, const char *id, auth_user *out)
{
	db_res *res = NULL;
	if (id == NULL || !apim_uuid_valid(id))
		return APIM_ENOTFOUND;
	apim_rc rc = db_exec(ctx->shared, &res, "SELECT " USER_COLS " FROM um_user WHERE id = ?",
			     DB_ARGS(id));
	if (rc != APIM_OK)
		return rc;
	if (db_res_rows(res) == 0) {
		db_res_free(res);
		return APIM_ENOTFOUND;
	}
	users_from_row(pool, res, 0, out);
	db_res_free(res);
	return users_load_roles(ctx, pool, out);
}

apim_rc auth_users_get_by_name(apim_ctx *ctx, arena *pool, const char *username,
			       auth_user *out)
{
	db_res *res = NULL;
	if (username == NULL)
		return APIM_ENOTFOUND;
	apim_rc rc = db_exec(ctx->shared, &res,
			     "SELECT " USER_COLS " FROM um_user WHERE username = ?",
			     DB_ARGS(username));
	if (rc != APIM_OK)
		return rc;
	if (db_res_rows(res) == 0) {
		db_res_free(res);
		return APIM_ENOTFOUND;
	}
	users_from_row(pool, res, 0, out);
	db_res_free(res);
	return users_load_roles(ctx, pool, out);
}

apim_rc auth_users_list(apim_ctx *ctx, arena *pool, const char *username_eq, int64_t offset,
			int64_t limit, auth_user **out, size_t *n, int64_t *total)
{
	db_res *res = NULL;
	char off[24], lim[24];
	apim_rc rc;
	*out = NULL;
	*n = 0;
	*total = 0;
	if (offset < 0)
		offset = 0;
	if (limit < 0)
		limit = INT32_MAX;
	users_i64(off, sizeof(off), offset);
	users_i64(lim, sizeof(lim), limit);
	if (username_eq != NULL)
		rc = db_exec(ctx->shared, &res, "SELECT COUNT(*) FROM um_user WHERE username = ?",
			     DB_ARGS(username_eq));
	else
		rc = db_exec(ctx->shared, &res, "SELECT COUNT(*) FROM um_user", DB_NOARGS);
	if (rc != APIM_OK)
		return rc;
	*total = db_res_int(res, 0, 0);
	db_res_free(res);
	res = NULL;
	if (limit == 0 || *total == 0)
		return APIM_OK;
	if (username_eq != NULL)
		rc = db_exec(ctx->shared, &res,
			     "SELECT " USER_COLS " FROM um_user WHERE username = ? ORDER BY username"
			     " LIMIT CAST(? AS BIGINT) OFFSET CAST(? AS BIGINT)",
			     DB_ARGS(username_eq, lim, off));
	else
		rc = db_exec(ctx->shared, &res,
			     "SELECT " USER_COLS " FROM um_user ORDER BY username"
			     " LIMIT CAST(? AS BIGINT) OFFSET CAST(? AS BIGINT)",
			     DB_ARGS(lim, off));
	if (rc != APIM_OK)
		return rc;
	size_t rows = db_res_rows(res);
	auth_user *users = arena_alloc(pool, (rows + 1) * sizeof(*users));
	for (size_t i = 0; i < rows; i++)
		users_from_row(pool, res, i, &users[i]);
	db_res_free(res);
	for (size_t i = 0; i < rows; i++) {
		rc = users_load_roles(ctx, pool, &users[i]);
		if (rc != APIM_OK)
			return rc;
	}
	*out = users;
	*n = rows;
	return APIM_OK;
}

static int users_is_admin_name(const apim_ctx *ctx, const char *username)
{
	return username != NULL && strcmp(username, ctx->cfg->admin_username) == 0;
}

/* The username of user id (from pool), or APIM_ENOTFOUND. */
static apim_rc users_name_of(apim_ctx *ctx, arena *pool, const char *id, const char **name)
{
	db_res *res = NULL;
	if (id == NULL || !apim_uuid_valid(id))
		return APIM_ENOTFOUND;
	apim_rc rc = db_exec(ctx->shared, &res, "SELECT username FROM um_user WHERE id = ?",
			     DB_ARGS(id));
	if (rc != APIM_OK)
		return rc;
	if (db_res_rows(res) == 0)
		rc = APIM_ENOTFOUND;
	else
		*name = arena_strdup(pool, db_res_get(res, 0, 0));
	db_res_free(res);
	return rc;
}

apim_rc auth_users_set_roles(apim_ctx *ctx, const char *id, const char *const *roles,
			     size_t nroles)
{
	arena *tmp = arena_create(1024);
	const char *name = NULL;
	const char **ids = NULL;
	size_t nids = 0;
	char now[24];
	apim_rc rc = users_name_of(ctx, tmp, id, &name);
	if (rc != APIM_OK)
		goto out;
	if (users_is_admin_name(ctx, name)) {
		int keeps = 0;
		for (size_t i = 0; i < nroles; i++)
			keeps |= roles[i] != NULL && strcmp(roles[i], ROLE_ADMIN) == 0;
		if (!keeps) {
			rc = APIM_EFORBIDDEN;
			goto out;
		}
	}
	rc = users_role_ids(ctx, tmp, roles, nroles, &ids, &nids);
	if (rc != APIM_OK)
		goto out;
	users_i64(now, sizeof(now), apim_now_ms());
	rc = db_begin(ctx->shared);
	if (rc != APIM_OK)
		goto out;
	rc = db_exec(ctx->shared, NULL, "DELETE FROM um_user_role WHERE user_id = ?", DB_ARGS(id));
	for (size_t i = 0; rc == APIM_OK && i < nids; i++)
		rc = db_exec(ctx->shared, NULL,
			     "INSERT INTO um_user_role (user_id, role_id) VALUES (?, ?)",
			     DB_ARGS(id, ids[i]));
	if (rc == APIM_OK)
		rc = db_exec(ctx->shared, NULL, "UPDATE um_user SET modified_ms = ? WHERE id = ?",
			     DB_ARGS(now, id));
	if (rc == APIM_OK)
		rc = db_commit(ctx->shared);
	if (rc != APIM_OK)
		db_rollback(ctx->shared);
	else
		auth_cache_flush();
out:
	arena_destroy(tmp);
	return rc;
}

apim_rc auth_users_update(apim_ctx *ctx, const char *id, const char *given_name,
			  const char *family_name, const char *email, const char *password)
{
	char hash[crypto_pwhash_STRBYTES];
	char now[24];
	db_res *res = NULL;
	apim_rc rc;
	if (id == NULL || !apim_uuid_valid(id))
		return APIM_ENOTFOUND;
	if (password != NULL) {
		rc = users_hash(ctx, password, hash);
		if (rc != APIM_OK)
			return rc;
	}
	users_i64(now, sizeof(now), apim_now_ms());
	rc = db_begin(ctx->shared);
	if (rc != APIM_OK)
		goto out;
	rc = db_exec(ctx->shared, &res,
		     "UPDATE um_user SET given_name = COALESCE(?, given_name),"
		     " family_name = COALESCE(?, family_name), email = COALESCE(?, email),"
		     " modified_ms = CAST(? AS BIGINT) WHERE id = ?",
		     DB_ARGS(given_name, family_name, email, now, id));
	if (rc == APIM_OK && db_res_changes(res) == 0)
		rc = APIM_ENOTFOUND;
	db_res_free(res);
	/* A new password also lifts a lockout: the administrator has just
	 * handed the user a known credential. */
	if (rc == APIM_OK && password != NULL)
		rc = db_exec(ctx->shared, NULL,
			     "UPDATE um_user SET password_hash = ?, failed_attempts = 0,"
			     " locked_until_ms = 0 WHERE id = ?",
			     DB_ARGS(hash, id));
	if (rc == APIM_OK)
		rc = db_commit(ctx->shared);
	if (rc != APIM_OK)
		db_rollback(ctx->shared);
	else
		auth_cache_flush();
out:
	if (password != NULL)
		sodium_memzero(hash, sizeof(hash));
	return rc;
}

apim_rc auth_users_delete(apim_ctx *ctx, const char *id)
{
	arena *tmp = arena_create(256);
	const char *name = NULL;
	apim_rc rc = users_name_of(ctx, tmp, id, &name);
	if (rc != APIM_OK)
		goto out;
	if (users_is_admin_name(ctx, name)) {
		rc = APIM_EFORBIDDEN;
		goto out;
	}
	rc = db_begin(ctx->shared);
	if (rc != APIM_OK)
		goto out;
	rc = db_exec(ctx->shared, NULL, "DELETE FROM um_user_role WHERE user_id = ?", DB_ARGS(id));
	if (rc == APIM_OK)
		rc = db_exec(ctx->shared, NULL, "DELETE FROM um_user WHERE id = ?", DB_ARGS(id));
	if (rc == APIM_OK)
		rc = db_commit(ctx->shared);
	if (rc != APIM_OK)
		db_rollback(ctx->shared);
	else
		auth_cache_flush();
out:
	arena_destroy(tmp);
	return rc;
}

/* Fills the members of roles[0..n) from one query over the memberships. */
static apim_rc roles_load_members(apim_ctx *ctx, arena *pool, auth_role *roles, size_t n)
{
	db_res *res = NULL;
	apim_rc rc;
	if (n == 1)
		rc = db_exec(ctx->shared, &res,
			     "SELECT role_id, user_id FROM um_user_role WHERE role_id = ?"
			     " ORDER BY user_id",
			     DB_ARGS(roles[0].id));
	else
		rc = db_exec(ctx->shared, &res,
			     "SELECT role_id, user_id FROM um_user_role ORDER BY role_id, user_id",
			     DB_NOARGS);
	if (rc != APIM_OK)
		return rc;
	size_t rows = db_res_rows(res);
	for (size_t i = 0; i < n; i++) {
		size_t cnt = 0;
		for (size_t j = 0; j < rows; j++)
			cnt += strcmp(db_res_get(res, j, 0), roles[i].id) == 0;
		const char **m = arena_alloc(pool, (cnt + 1) * sizeof(*m));
		size_t k = 0;
		for (size_t j = 0; j < rows; j++)
			if (strcmp(db_res_get(res, j, 0), roles[i].id) == 0)
				m[k++] = arena_strdup(pool, db_res_get(res, j, 1));
		roles[i].members = m;
		roles[i].nmembers = k;
	}
	db_res_free(res);
	return APIM_OK;
}

apim_rc auth_roles_list(apim_ctx *ctx, arena *pool, const char *name_eq, auth_role **out,
			size_t *n)
{
	db_res *res = NULL;
	apim_rc rc;
	*out = NULL;
	*n = 0;
	if (name_eq != NULL)
		rc = db_exec(ctx->shared, &res, "SELECT id, name FROM um_role WHERE name = ?",
			     DB_ARGS(name_eq));
	else
		rc = db_exec(ctx->shared, &res, "SELECT id, name FROM um_role ORDER BY name",
			     DB_NOARGS);
	if (rc != APIM_OK)
		return rc;
	size_t rows = db_res_rows(res);
	auth_role *roles = arena_alloc(pool, (rows + 1) * sizeof(*roles));
	for (size_t i = 0; i < rows; i++) {
		snprintf(roles[i].id, sizeof(roles[i].id), "%s", db_res_get(res, i, 0));
		roles[i].name = arena_strdup(pool, db_res_get(res, i, 1));
	}
	db_res_free(res);
	if (rows > 0) {
		rc = roles_load_members(ctx, pool, roles, rows);
		if (rc != APIM_OK)
			return rc;
	}
	*out = roles;
	*n = rows;
	return APIM_OK;
}

apim_rc auth_roles_get(apim_ctx *ctx, arena *pool, const char *id, auth_role *out)
{
	db_res *res = NULL;
	if (id == NULL || !apim_uuid_valid(id))
		return APIM_ENOTFOUND;
	apim_rc rc = db_exec(ctx->shared, &res, "SELECT id, name FROM um_role WHERE id = ?",
			     DB_ARGS(id));
	if (rc != APIM_OK)
		return rc;
	if (db_res_rows(res) == 0) {
		db_res_free(res);
		return APIM_ENOTFOUND;
	}
	memset(out, 0, sizeof(*out));
	snprintf(out->id, sizeof(out->id), "%s", db_res_get(res, 0, 0));
	out->name = arena_strdup(pool, db_res_get(res, 0, 1));
	db_res_free(res);
	return roles_load_members(ctx, pool, out, 1);
}

apim_rc auth_roles_create(apim_ctx *ctx, arena *pool, const char *name, auth_role *out)
{
	char id[APIM_UUID_LEN + 1], now[24];
	if (name == NULL || *name == '\0')
		return APIM_EINVAL;
	apim_uuid(id);
	users_i64(now, sizeof(now), apim_now_ms());
	apim_rc rc = db_exec(ctx->shared, NULL,
			     "INSERT INTO um_role (id, name, created_ms) VALUES (?, ?, ?)",
			     DB_ARGS(id, name, now));
	if (rc != APIM_OK)
		return rc;
	if (out == NULL)
		return APIM_OK;
	return auth_roles_get(ctx, pool, id, out);
}

/* The name of role id (from pool), or APIM_ENOTFOUND. */
static apim_rc roles_name_of(apim_ctx *ctx, arena *pool, const char *id, const char **name)
{
	db_res *res = NULL;
	if (id == NULL || !apim_uuid_valid(id))
		return APIM_ENOTFOUND;
	apim_rc rc = db_exec(ctx->shared, &res, "SELECT name FROM um_role WHERE id = ?",
			     DB_ARGS(id));
	if (rc != APIM_OK)
		return rc;
	if (db_res_rows(res) == 0)
		rc = APIM_ENOTFOUND;
	else
		*name = arena_strdup(pool, db_res_get(res, 0, 0));
	db_res_free(res);
	return rc;
}

apim_rc auth_roles_delete(apim_ctx *ctx, const char *id)
{
	arena *tmp = arena_create(256);
	const char *name = NULL;
	apim_rc rc = roles_name_of(ctx, tmp, id, &name);
	if (rc != APIM_OK)
		goto out;
	/* The administrator's role and the implicit role of every user stay. */
	if (strcmp(name, ROLE_ADMIN) == 0 || strcmp(name, ROLE_EVERYONE) == 0) {
		rc = APIM_EFORBIDDEN;
		goto out;
	}
	rc = db_begin(ctx->shared);
	if (rc != APIM_OK)
		goto out;
	rc = db_exec(ctx->shared, NULL, "DELETE FROM um_user_role WHERE role_id = ?", DB_ARGS(id));
	if (rc == APIM_OK)
		rc = db_exec(ctx->shared, NULL, "DELETE FROM um_role WHERE id = ?", DB_ARGS(id));
	if (rc == APIM_OK)
		rc = db_commit(ctx->shared);
	if (rc != APIM_OK)
		db_rollback(ctx->shared);
	else
		auth_cache_flush();
out:
	arena_destroy(tmp);
	return rc;
}

apim_rc auth_roles_add_members(apim_ctx *ctx, const char *id, const char *const *users, size_t n)
{
	arena *tmp = arena_create(256);
	const char *name = NULL;
	apim_rc rc = roles_name_of(ctx, tmp, id, &name);
	if (rc != APIM_OK)
		goto out;
	for (size_t i = 0; i < n; i++) {
		const char *uname = NULL;
		rc = users_name_of(ctx, tmp, users[i], &uname);
		if (rc == APIM_ENOTFOUND)
			rc = APIM_EINVAL;
		if (rc != APIM_OK)
			goto out;
	}
	rc = db_begin(ctx->shared);
	if (rc != APIM_OK)
		goto out;
	for (size_t i = 0; rc == APIM_OK && i < n; i++)
		rc = db_exec(ctx->shared, NULL,
			     "INSERT INTO um_user_role (user_id, role_id) VALUES (?, ?)"
			     " ON CONFLICT DO NOTHING",
			     DB_ARGS(users[i], id));
	if (rc == APIM_OK)
		rc = db_commit(ctx->shared);
	if (rc != APIM_OK)
		db_rollback(ctx->shared);
	else
		auth_cache_flush();
out:
	arena_destroy(tmp);
	return rc;
}

apim_rc auth_roles_remove_members(apim_ctx *ctx, const char *id, const char *const *users,
				  size_t n)
{
	arena *tmp = arena_create(256);
	const char *name = NULL;
	apim_rc rc = roles_name_of(ctx, tmp, id, &name);
	if (rc != APIM_OK)
		goto out;
	if (strcmp(name, ROLE_ADMIN) == 0) {
		for (size_t i = 0; i < n; i++) {
			const char *uname = NULL;
			if (users_name_of(ctx, tmp, users[i], &uname) == APIM_OK &&
			    users_is_admin_name(ctx, uname)) {
				rc = APIM_EFORBIDDEN;
				goto out;
			}
		}
	}
	rc = db_begin(ctx->shared);
	if (rc != APIM_OK)
		goto out;
	for (size_t i = 0; rc == APIM_OK && i < n; i++)
		rc = db_exec(ctx->shared, NULL,
			     "DELETE FROM um_user_role WHERE user_id = ? AND role_id = ?",
			     DB_ARGS(users[i], id));
	if (rc == APIM_OK)
		rc = db_commit(ctx->shared);
	if (rc != APIM_OK)
		db_rollback(ctx->shared);
	else
		auth_cache_flush();
out:
	arena_destroy(tmp);
	return rc;
}

apim_rc auth_roles_scopes(apim_ctx *ctx, arena *pool, const char *const *roles, size_t nroles,
			  const char ***scopes, size_t *nscopes)
{
	*scopes = arena_alloc(pool, sizeof(**scopes));
	*nscopes = 0;
	if (nroles == 0)
		return APIM_OK;
	/* "... IN (?, ?, ?)" */
	size_t len = 128 + nroles * 3;
	char *sql = arena_alloc(pool, len);
	size_t k = (size_t)snprintf(sql, len,
				    "SELECT DISTINCT scope FROM um_role_scope WHERE role_name IN (");
	for (size_t i = 0; i < nroles; i++)
		k += (size_t)snprintf(sql + k, len - k, i == 0 ? "?" : ",?");
	snprintf(sql + k, len - k, ") ORDER BY scope");
	db_res *res = NULL;
	apim_rc rc = db_exec(ctx->shared, &res, sql, nroles, roles);
	if (rc != APIM_OK)
		return rc;
	size_t rows = db_res_rows(res);
	const char **out = arena_alloc(pool, (rows + 1) * sizeof(*out));
	for (size_t i = 0; i < rows; i++)
		out[i] = arena_strdup(pool, db_res_get(res, i, 0));
	db_res_free(res);
	*scopes = out;
	*nscopes = rows;
	return APIM_OK;
}

apim_rc auth_users_names(apim_ctx *ctx, arena *pool, const char *const *ids, size_t n,
			 const char ***names)
{
	enum { CHUNK = 100 };
	const char **out = arena_alloc(pool, (n + 1) * sizeof(*out));
	char sql[128 + CHUNK * 2];
	*names = out;
	for (size_t base = 0; base < n; base += CHUNK) {
		size_t m = n - base < CHUNK ? n - base : CHUNK;
		size_t k = (size_t)snprintf(sql, sizeof(sql),
					    "SELECT id, username FROM um_user WHERE id IN (");
		for (size_t i = 0; i < m; i++)
			k += (size_t)snprintf(sql + k, sizeof(sql) - k, i == 0 ? "?" : ",?");
		snprintf(sql + k, sizeof(sql) - k, ")");
		db_res *res = NULL;
		apim_rc rc = db_exec(ctx->shared, &res, sql, m, ids + base);
		if (rc != APIM_OK)
			return rc;
		for (size_t j = 0; j < db_res_rows(res); j++) {
			const char *id = db_res_get(res, j, 0);
			for (size_t i = base; i < base + m; i++)
				if (out[i] == NULL && ids[i] != NULL && strcmp(ids[i], id) == 0)
					out[i] = arena_strdup(pool, db_res_get(res, j, 1));
		}
		db_res_free(res);
	}
	return APIM_OK;
}
