/*
 * km_client.c: OAuth clients (apimgtdb km_oauth_client), client
 * authentication with its failure limiter, and the registration endpoints:
 * the reference's POST /client-registration/v0.17/register (apictl, the
 * portals), RFC 7591 POST /oauth2/register and RFC 7592 GET/PUT/DELETE
 * /oauth2/register/{client_id}.
 *
 * Secrets and registration access tokens are 32 random bytes (base64url),
 * shown once and stored as hex SHA-256; every comparison is constant time
 * and an unknown client id costs the same hashing as a known one.
 *
 * The limiter is the one piece of process state here: a fixed-size table
 * of failure counters per key (keyed SipHash of "client:<id>" or
 * "user:<name>"), one fixed one-minute window each, under a mutex. It is
 * per node: with N Key Manager nodes an attacker gets N times the limit.
 */
#include "keymanager/km_client.h"

#include <ctype.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "auth/auth.h"
#include "auth/auth_users.h"
#include "common/log.h"
#include "common/util.h"
#include "keymanager/km_token.h"
#include "store/db.h"

#define CLIENT_ID_BYTES 20 /* 27 base64url characters */
#define SECRET_BYTES 32    /* 43 base64url characters */
#define TOKEN_BUF 64
#define NAME_MAX_LEN 255
#define ID_MAX_LEN 255
#define URL_MAX_LEN 2048
#define SCOPES_MAX_LEN 4096
#define VALIDITY_MAX 31536000 /* one year, as keymanager.*_validity */

#define GRANTS_SUPPORTED "client_credentials, password, refresh_token, authorization_code"
#define AUTH_BASIC_METHOD "client_secret_basic"
#define AUTH_POST_METHOD "client_secret_post"
#define CARBON_SUPER "@carbon.super"

/* Canonical order of the grant types we implement. */
static const char *const grant_names[] = {
	"client_credentials", "password", "refresh_token", "authorization_code", NULL,
};

/* Compared against when the client id is unknown, so that both paths hash
 * and compare the same amount. */
static const char dummy_hash[] =
	"0000000000000000000000000000000000000000000000000000000000000000";

/* ---------- migrations ---------- */

static const char *const client_steps[] = {
	"CREATE TABLE km_oauth_client ("
	" client_id TEXT PRIMARY KEY,"
	" secret_hash TEXT NOT NULL,"
	" name TEXT NOT NULL,"
	" owner TEXT NOT NULL,"
	" grant_types TEXT NOT NULL,"
	" callback_url TEXT,"
	" scopes TEXT,"
	" access_validity BIGINT NOT NULL,"
	" refresh_validity BIGINT NOT NULL,"
	" app_id TEXT,"
	" key_type TEXT,"
	" registration_token_hash TEXT,"
	" auth_method TEXT,"
	" created_ms BIGINT NOT NULL,"
	" updated_ms BIGINT NOT NULL,"
	" UNIQUE (owner, name));"
	"CREATE INDEX km_oauth_client_app ON km_oauth_client (app_id);",
};

apim_rc km_client_migrate(apim_ctx *ctx)
{
	if (ctx->apimgt == NULL)
		return APIM_OK;
	return db_migrate(ctx->apimgt, "oauth-clients", client_steps,
			  sizeof(client_steps) / sizeof(client_steps[0]));
}

/* ---------- limiter ---------- */

#define LIMIT_SLOTS 4096
#define LIMIT_PROBE 8
#define LIMIT_WINDOW_MS 60000

typedef struct limit_slot {
	uint64_t h; /* 0: empty */
	int64_t start_ms;
	uint32_t count;
} limit_slot;

static struct {
	pthread_mutex_t mu;
	pthread_once_t once;
	unsigned char key[crypto_shorthash_KEYBYTES];
	limit_slot slots[LIMIT_SLOTS];
} km_limit = {.mu = PTHREAD_MUTEX_INITIALIZER, .once = PTHREAD_ONCE_INIT};

static void limit_init(void)
{
	if (sodium_init() < 0)
		abort();
	crypto_shorthash_keygen(km_limit.key);
}

static uint64_t limit_hash(const char *key)
{
	unsigned char out[crypto_shorthash_BYTES];
	pthread_once(&km_limit.once, limit_init);
	crypto_shorthash(out, (const unsigned char *)key, strlen(key), km_limit.key);
	uint64_t h = 0;
	for (size_t i = 0; i < sizeof(out); i++)
		h = h << 8 | out[i];
	return h == 0 ? 1 : h;
}

static int slot_stale(const limit_slot *s, int64_t now)
{
	return s->h == 0 || now - s->start_ms >= LIMIT_WINDOW_MS;
}

/*
 * The slot of h within its probe range, or with create a slot for it: an
 * empty or expired one first, else the one with the fewest failures, so
 * that a flood of distinct keys evicts its own kind and not a key that has
 * reached the limit. Caller holds the mutex.
 */
static limit_slot *limit_find(uint64_t h, int64_t now, int create)
{
	size_t base = (size_t)(h % LIMIT_SLOTS);
	limit_slot *victim = NULL;
	for (size_t i = 0; i < LIMIT_PROBE; i++) {
		limit_slot *s = &km_limit.slots[(base + i) % LIMIT_SLOTS];
		if (s->h == h)
			return s;
		if (!create)
			continue;
		if (victim == NULL)
			victim = s;
		else if (slot_stale(s, now) && !slot_stale(victim, now))
			victim = s;
		else if (!slot_stale(victim, now) && s->count < victim->count)
			victim = s;
	}
	if (victim != NULL) {
		victim->h = h;
		victim->start_ms = now;
		victim->count = 0;
	}
	return victim;
}

int km_limit_blocked(apim_ctx *ctx, const char *key)
{
	uint64_t h = limit_hash(key);
	int64_t now = apim_mono_ms();
	int64_t limit = ctx->cfg->keymanager_auth_failures_per_minute;
	pthread_mutex_lock(&km_limit.mu);
	limit_slot *s = limit_find(h, now, 0);
	int blocked = s != NULL && !slot_stale(s, now) && (int64_t)s->count >= limit;
	pthread_mutex_unlock(&km_limit.mu);
	return blocked;
}

void km_limit_fail(apim_ctx *ctx, const char *key)
{
	(void)ctx;
	uint64_t h = limit_hash(key);
	int64_t now = apim_mono_ms();
	pthread_mutex_lock(&km_limit.mu);
	limit_slot *s = limit_find(h, now, 1);
	if (now - s->start_ms >= LIMIT_WINDOW_MS) {
		s->start_ms = now;
		s->count = 0;
	}
	if (s->count < UINT32_MAX)
		s->count++;
	pthread_mutex_unlock(&km_limit.mu);
}

/* ---------- validation ---------- */

static int has_ctl(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return 1;
	return 0;
}

static int grant_known(const char *g, size_t n)
{
	for (size_t i = 0; grant_names[i]; i++)
		if (strlen(grant_names[i]) == n && memcmp(grant_names[i], g, n) == 0)
			return 1;
	return 0;
}

/* 1 when the space-separated list holds the word w. */
static int list_has(const char *list, const char *w)
{
	if (list == NULL)
		return 0;
	size_t wn = strlen(w);
	const char *s = list;
	while (*s) {
		while (*s == ' ' || *s == '\t')
			s++;
		const char *e = s;
		while (*e && *e != ' ' && *e != '\t')
			e++;
		if ((size_t)(e - s) == wn && memcmp(s, w, wn) == 0)
			return 1;
		s = e;
	}
	return 0;
}

/* The first grant type in the space-separated list that we do not
 * implement (from pool), or NULL. */
static const char *first_unknown_grant(arena *pool, const char *grants)
{
	const char *s = grants ? grants : "";
	while (*s) {
		while (*s == ' ' || *s == '\t')
			s++;
		const char *e = s;
		while (*e && *e != ' ' && *e != '\t')
			e++;
		if (e > s && !grant_known(s, (size_t)(e - s)))
			return arena_strndup(pool, s, (size_t)(e - s));
		s = e;
	}
	return NULL;
}

/* Canonical grant list (known types, canonical order, no duplicates) into
 * out (at least 80 bytes). */
static apim_rc grants_normalize(const char *in, char *out, size_t len, const char **why)
{
	out[0] = '\0';
	if (in == NULL || *in == '\0') {
		*why = "at least one grant type is needed (" GRANTS_SUPPORTED ")";
		return APIM_EINVAL;
	}
	const char *s = in;
	while (*s) {
		while (*s == ' ' || *s == '\t')
			s++;
		const char *e = s;
		while (*e && *e != ' ' && *e != '\t')
			e++;
		if (e > s && !grant_known(s, (size_t)(e - s))) {
			*why = "unsupported grant type: the supported ones are " GRANTS_SUPPORTED;
			return APIM_EINVAL;
		}
		s = e;
	}
	for (size_t i = 0; grant_names[i]; i++) {
		if (!list_has(in, grant_names[i]))
			continue;
		if (out[0])
			strncat(out, " ", len - strlen(out) - 1);
		strncat(out, grant_names[i], len - strlen(out) - 1);
	}
	if (out[0] == '\0') {
		*why = "at least one grant type is needed (" GRANTS_SUPPORTED ")";
		return APIM_EINVAL;
	}
	return APIM_OK;
}

/*
 * A redirect URI we accept: absolute http or https URL with a host, no
 * fragment, no user info, no spaces or control characters.
 */
static int redirect_valid(const char *u, const char **why)
{
	size_t n = strlen(u);
	const char *rest;
	if (n == 0 || n > URL_MAX_LEN) {
		*why = "the redirect URI must be an absolute http or https URL of at most 2048 "
		       "characters";
		return 0;
	}
	if (strncasecmp(u, "https://", 8) == 0)
		rest = u + 8;
	else if (strncasecmp(u, "http://", 7) == 0)
		rest = u + 7;
	else {
		*why = "the redirect URI must be an absolute http or https URL (e.g. "
		       "https://app.example.com/callback)";
		return 0;
	}
	for (const char *p = u; *p; p++) {
		if ((unsigned char)*p <= 0x20 || *p == 0x7f || *p == '"' || *p == '<' ||
		    *p == '>' || *p == '\\') {
			*why = "the redirect URI contains spaces or characters that must be "
			       "percent-encoded";
			return 0;
		}
		if (*p == '#') {
			*why = "the redirect URI must not contain a fragment ('#')";
			return 0;
		}
	}
	size_t alen = strcspn(rest, "/?");
	if (alen == 0) {
		*why = "the redirect URI has no host";
		return 0;
	}
	if (memchr(rest, '@', alen) != NULL) {
		*why = "the redirect URI must not contain user information ('user@host')";
		return 0;
	}
	const char *port = NULL;
	size_t hlen = alen;
	if (rest[0] == '[') {
		const char *close = memchr(rest, ']', alen);
		if (close == NULL) {
			*why = "the redirect URI has a malformed IPv6 host";
			return 0;
		}
		if ((size_t)(close - rest) + 1 < alen) {
			if (close[1] != ':') {
				*why = "the redirect URI has a malformed host";
				return 0;
			}
			port = close + 2;
		}
	} else {
		const char *colon = memchr(rest, ':', alen);
		if (colon != NULL) {
			port = colon + 1;
			hlen = (size_t)(colon - rest);
		}
		if (hlen == 0) {
			*why = "the redirect URI has no host";
			return 0;
		}
		for (size_t i = 0; i < hlen; i++) {
			unsigned char c = (unsigned char)rest[i];
			if (!isalnum(c) && c != '.' && c != '-' && c != '_' && c != '%') {
				*why = "the redirect URI has a malformed host";
				return 0;
			}
		}
	}
	if (port != NULL) {
		size_t plen = (size_t)(rest + alen - port);
		long v = 0;
		if (plen == 0 || plen > 5) {
			*why = "the redirect URI has a malformed port";
			return 0;
		}
		for (size_t i = 0; i < plen; i++) {
			if (!isdigit((unsigned char)port[i])) {
				*why = "the redirect URI has a malformed port";
				return 0;
			}
			v = v * 10 + (port[i] - '0');
		}
		if (v < 1 || v > 65535) {
			*why = "the redirect URI has a port outside 1-65535";
			return 0;
		}
	}
	return 1;
}

/* RFC 6749 §3.3 scope tokens, separated by single spaces, into pool. */
static apim_rc scopes_normalize(arena *pool, const char *in, const char **out, const char **why)
{
	*out = NULL;
	if (in == NULL)
		return APIM_OK;
	if (strlen(in) > SCOPES_MAX_LEN) {
		*why = "the scopes are longer than 4096 characters";
		return APIM_EINVAL;
	}
	char *buf = arena_alloc(pool, strlen(in) + 1);
	size_t o = 0;
	const char *s = in;
	while (*s) {
		while (*s == ' ')
			s++;
		const char *e = s;
		while (*e && *e != ' ')
			e++;
		for (const char *p = s; p < e; p++) {
			unsigned char c = (unsigned char)*p;
			if (c < 0x21 || c == 0x22 || c == 0x5c || c > 0x7e) {
				*why = "a scope contains a character RFC 6749 does not allow (quote, "
				       "backslash, control or non-ASCII)";
				return APIM_EINVAL;
			}
		}
		if (e > s) {
			if (o > 0)
				buf[o++] = ' ';
			memcpy(buf + o, s, (size_t)(e - s));
			o += (size_t)(e - s);
		}
		s = e;
	}
	buf[o] = '\0';
	*out = buf;
	return APIM_OK;
}

static int client_id_valid(const char *id)
{
	size_t n = strlen(id);
	if (n == 0 || n > ID_MAX_LEN)
		return 0;
	for (const char *p = id; *p; p++)
		if (!isalnum((unsigned char)*p) && *p != '-' && *p != '_' && *p != '.' && *p != '~')
			return 0;
	return 1;
}

static int name_valid(const char *s)
{
	return s != NULL && *s != '\0' && strlen(s) <= NAME_MAX_LEN && !has_ctl(s);
}

/* The fields km_client_create and update share. On APIM_OK grants holds the
 * canonical grant list and *scopes the normalised scopes (pool). */
static apim_rc check_fields(arena *pool, const km_client *c, char grants[96],
			    const char **scopes, const char **why)
{
	if (!name_valid(c->name)) {
		*why = "the client name must be 1 to 255 characters without control characters";
		return APIM_EINVAL;
	}
	apim_rc rc = grants_normalize(c->grant_types, grants, 96, why);
	if (rc != APIM_OK)
		return rc;
	if (c->callback_url != NULL && *c->callback_url != '\0') {
		if (strlen(c->callback_url) > URL_MAX_LEN || has_ctl(c->callback_url)) {
			*why = "the callback URL must be at most 2048 characters without control "
			       "characters";
			return APIM_EINVAL;
		}
		/* Only a client that redirects needs a well-formed URL; the
		 * reference's examples register "www.example.com" for password
		 * clients, and that keeps working. */
		if (list_has(grants, "authorization_code") && !redirect_valid(c->callback_url, why))
			return APIM_EINVAL;
	} else if (list_has(grants, "authorization_code")) {
		*why = "the authorization_code grant needs a callback (redirect) URL";
		return APIM_EINVAL;
	}
	rc = scopes_normalize(pool, c->scopes, scopes, why);
	if (rc != APIM_OK)
		return rc;
	if (c->access_validity < 0 || c->access_validity > VALIDITY_MAX ||
	    c->refresh_validity < 0 || c->refresh_validity > VALIDITY_MAX) {
		*why = "token validity periods must be 0 (the default) to 31536000 seconds";
		return APIM_EINVAL;
	}
	return APIM_OK;
}

/* ---------- rows ---------- */

#define CLIENT_COLS                                                                     \
	"client_id, secret_hash, name, owner, grant_types, callback_url, scopes, "      \
	"access_validity, refresh_validity, app_id, key_type, registration_token_hash, " \
	"auth_method, created_ms, updated_ms"

typedef struct client_row {
	km_client c;
	const char *secret_hash;
	const char *reg_hash; /* NULL: no registration access token */
	const char *endpoint_auth;
	int64_t updated_ms;
} client_row;

static const char *dup_or_null(arena *pool, const char *s)
{
	return s ? arena_strdup(pool, s) : NULL;
}

static void row_fill(arena *pool, const db_res *r, client_row *out)
{
	memset(out, 0, sizeof(*out));
	out->c.client_id = arena_strdup(pool, db_res_get(r, 0, 0));
	out->secret_hash = arena_strdup(pool, db_res_get(r, 0, 1) ? db_res_get(r, 0, 1) : "");
	out->c.name = arena_strdup(pool, db_res_get(r, 0, 2));
	out->c.owner = arena_strdup(pool, db_res_get(r, 0, 3));
	out->c.grant_types = arena_strdup(pool, db_res_get(r, 0, 4));
	out->c.callback_url = dup_or_null(pool, db_res_get(r, 0, 5));
	out->c.scopes = dup_or_null(pool, db_res_get(r, 0, 6));
	out->c.access_validity = db_res_int(r, 0, 7);
	out->c.refresh_validity = db_res_int(r, 0, 8);
	out->c.app_id = dup_or_null(pool, db_res_get(r, 0, 9));
	out->c.key_type = dup_or_null(pool, db_res_get(r, 0, 10));
	out->reg_hash = dup_or_null(pool, db_res_get(r, 0, 11));
	out->endpoint_auth = arena_strdup(pool, db_res_get(r, 0, 12) ? db_res_get(r, 0, 12)
								   : AUTH_BASIC_METHOD);
	out->c.created_ms = db_res_int(r, 0, 13);
	out->updated_ms = db_res_int(r, 0, 14);
}

static apim_rc row_get(apim_ctx *ctx, arena *pool, const char *sql, size_t n,
		       const char *const *args, client_row *out)
{
	db_res *r = NULL;
	apim_rc rc = db_exec(ctx->apimgt, &r, sql, n, args);
	if (rc != APIM_OK)
		return rc;
	if (db_res_rows(r) == 0)
		rc = APIM_ENOTFOUND;
	else
		row_fill(pool, r, out);
	db_res_free(r);
	return rc;
}

static apim_rc row_by_id(apim_ctx *ctx, arena *pool, const char *id, client_row *out)
{
	if (id == NULL || strlen(id) > ID_MAX_LEN)
		return APIM_ENOTFOUND;
	return row_get(ctx, pool, "SELECT " CLIENT_COLS " FROM km_oauth_client WHERE client_id = ?",
		       DB_ARGS(id), out);
}

static apim_rc row_by_name(apim_ctx *ctx, arena *pool, const char *owner, const char *name,
			   client_row *out)
{
	return row_get(ctx, pool,
		       "SELECT " CLIENT_COLS " FROM km_oauth_client WHERE owner = ? AND name = ?",
		       DB_ARGS(owner, name), out);
}

static void new_secret(char out[TOKEN_BUF], char hash[65])
{
	apim_random_token(out, SECRET_BYTES);
	apim_sha256_hex(out, strlen(out), hash);
}

static void i64s(char out[24], int64_t v)
{
	snprintf(out, 24, "%" PRId64, v);
}

/* ---------- internal interface ---------- */

/* km_client_create with the extras of RFC 7591: a registration access
 * token hash and the token endpoint auth method (both may be NULL). */
static apim_rc client_create(apim_ctx *ctx, arena *pool, const km_client *in, const char *reg_hash,
			     const char *endpoint_auth, km_client *out, const char **secret,
			     const char **why)
{
	const char *no_why;
	if (why == NULL)
		why = &no_why;
	*why = NULL;
	char grants[96];
	const char *scopes = NULL;
	apim_rc rc = check_fields(pool, in, grants, &scopes, why);
	if (rc != APIM_OK)
		return rc;
	if (in->owner == NULL || *in->owner == '\0' || strlen(in->owner) > NAME_MAX_LEN) {
		*why = "the client needs an owner (a user name)";
		return APIM_EINVAL;
	}
	if (in->key_type != NULL && strcmp(in->key_type, "PRODUCTION") != 0 &&
	    strcmp(in->key_type, "SANDBOX") != 0) {
		*why = "the key type must be PRODUCTION or SANDBOX";
		return APIM_EINVAL;
	}
	char idbuf[TOKEN_BUF];
	const char *id = in->client_id;
	if (id == NULL) {
		apim_random_token(idbuf, CLIENT_ID_BYTES);
		id = idbuf;
	} else if (!client_id_valid(id)) {
		*why = "the client id must be 1 to 255 letters, digits, '-', '_', '.' or '~'";
		return APIM_EINVAL;
	}
	char sec[TOKEN_BUF], hash[65];
	new_secret(sec, hash);
	int64_t now = apim_now_ms();
	char av[24], rv[24], cr[24];
	i64s(av, in->access_validity);
	i64s(rv, in->refresh_validity);
	i64s(cr, now);
	const char *cb = in->callback_url && *in->callback_url ? in->callback_url : NULL;
	const char *sc = scopes && *scopes ? scopes : NULL;
	rc = db_exec(ctx->apimgt, NULL,
		     "INSERT INTO km_oauth_client (" CLIENT_COLS ") VALUES "
		     "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
		     DB_ARGS(id, hash, in->name, in->owner, grants, cb, sc, av, rv, in->app_id,
			     in->key_type, reg_hash, endpoint_auth, cr, cr));
	if (rc == APIM_ECONFLICT) {
		/* Which constraint: the generated id colliding is 2^-160. */
		client_row old;
		if (row_by_name(ctx, pool, in->owner, in->name, &old) == APIM_OK)
			*why = "a client with this name already exists for this owner";
		else
			*why = "a client with this client id already exists";
	}
	if (rc != APIM_OK) {
		sodium_memzero(sec, sizeof(sec));
		return rc;
	}
	if (out != NULL) {
		memset(out, 0, sizeof(*out));
		out->client_id = arena_strdup(pool, id);
		out->name = arena_strdup(pool, in->name);
		out->owner = arena_strdup(pool, in->owner);
		out->grant_types = arena_strdup(pool, grants);
		out->callback_url = dup_or_null(pool, cb);
		out->scopes = dup_or_null(pool, sc);
		out->access_validity = in->access_validity;
		out->refresh_validity = in->refresh_validity;
		out->app_id = dup_or_null(pool, in->app_id);
		out->key_type = dup_or_null(pool, in->key_type);
		out->created_ms = now;
	}
	if (secret != NULL)
		*secret = arena_strdup(pool, sec);
	sodium_memzero(sec, sizeof(sec));
	log_info("keymanager", "OAuth client %s (\"%s\") created for %s", id, in->name, in->owner);
	return APIM_OK;
}

apim_rc km_client_create(apim_ctx *ctx, arena *pool, const km_client *in, km_client *out,
			 const char **secret, const char **why)
{
	return client_create(ctx, pool, in, NULL, NULL, out, secret, why);
}

apim_rc km_client_get(apim_ctx *ctx, arena *pool, const char *client_id, km_client *out)
{
	client_row row;
	apim_rc rc = row_by_id(ctx, pool, client_id, &row);
	if (rc == APIM_OK)
		*out = row.c;
	return rc;
}

/* km_client_update; endpoint_auth NULL keeps the stored one. */
static apim_rc client_update(apim_ctx *ctx, const km_client *in, const char *endpoint_auth,
			     const char **why)
{
	const char *no_why;
	if (why == NULL)
		why = &no_why;
	*why = NULL;
	arena *pool = arena_create(4096);
	client_row cur;
	apim_rc rc = row_by_id(ctx, pool, in->client_id, &cur);
	if (rc != APIM_OK)
		goto out;
	km_client next = *in;
	if (next.name == NULL)
		next.name = cur.c.name;
	if (next.grant_types == NULL)
		next.grant_types = cur.c.grant_types;
	char grants[96];
	const char *scopes = NULL;
	rc = check_fields(pool, &next, grants, &scopes, why);
	if (rc != APIM_OK)
		goto out;
	char av[24], rv[24], up[24];
	i64s(av, next.access_validity);
	i64s(rv, next.refresh_validity);
	i64s(up, apim_now_ms());
	const char *cb = next.callback_url && *next.callback_url ? next.callback_url : NULL;
	const char *sc = scopes && *scopes ? scopes : NULL;
	const char *am = endpoint_auth ? endpoint_auth : cur.endpoint_auth;
	db_res *r = NULL;
	rc = db_exec(ctx->apimgt, &r,
		     "UPDATE km_oauth_client SET name = ?, grant_types = ?, callback_url = ?, "
		     "scopes = ?, access_validity = ?, refresh_validity = ?, auth_method = ?, "
		     "updated_ms = ? WHERE client_id = ?",
		     DB_ARGS(next.name, grants, cb, sc, av, rv, am, up, in->client_id));
	if (rc == APIM_OK && db_res_changes(r) == 0)
		rc = APIM_ENOTFOUND;
	db_res_free(r);
	if (rc == APIM_ECONFLICT)
		*why = "a client with this name already exists for this owner";
out:
	arena_destroy(pool);
	return rc;
}

apim_rc km_client_update(apim_ctx *ctx, const km_client *in, const char **why)
{
	return client_update(ctx, in, NULL, why);
}

/* New secret without revoking tokens (the v0.17 re-registration). */
static apim_rc client_new_secret(apim_ctx *ctx, arena *pool, const char *client_id,
				 const char **secret)
{
	char sec[TOKEN_BUF], hash[65], up[24];
	new_secret(sec, hash);
	i64s(up, apim_now_ms());
	db_res *r = NULL;
	apim_rc rc = db_exec(ctx->apimgt, &r,
			     "UPDATE km_oauth_client SET secret_hash = ?, updated_ms = ? "
			     "WHERE client_id = ?",
			     DB_ARGS(hash, up, client_id));
	if (rc == APIM_OK && db_res_changes(r) == 0)
		rc = APIM_ENOTFOUND;
	db_res_free(r);
	if (rc == APIM_OK)
		*secret = arena_strdup(pool, sec);
	sodium_memzero(sec, sizeof(sec));
	return rc;
}

apim_rc km_client_regenerate_secret(apim_ctx *ctx, arena *pool, const char *client_id,
				    const char **secret)
{
	if (client_id == NULL || strlen(client_id) > ID_MAX_LEN)
		return APIM_ENOTFOUND;
	apim_rc rc = client_new_secret(ctx, pool, client_id, secret);
	if (rc != APIM_OK)
		return rc;
	log_info("keymanager", "OAuth client %s: secret regenerated", client_id);
	/* As the reference does: tokens got with the old secret stop working. */
	rc = km_token_revoke_client(ctx, client_id);
	if (rc != APIM_OK)
		log_error("keymanager", "OAuth client %s: secret regenerated but its tokens could "
			  "not be revoked: %s", client_id, apim_strerror(rc));
	return rc;
}

apim_rc km_client_delete(apim_ctx *ctx, const char *client_id)
{
	if (client_id == NULL || strlen(client_id) > ID_MAX_LEN)
		return APIM_ENOTFOUND;
	db_res *r = NULL;
	apim_rc rc = db_exec(ctx->apimgt, &r, "DELETE FROM km_oauth_client WHERE client_id = ?",
			     DB_ARGS(client_id));
	if (rc == APIM_OK && db_res_changes(r) == 0)
		rc = APIM_ENOTFOUND;
	db_res_free(r);
	if (rc != APIM_OK)
		return rc;
	log_info("keymanager", "OAuth client %s deleted", client_id);
	rc = km_token_revoke_client(ctx, client_id);
	if (rc != APIM_OK)
		log_error("keymanager", "OAuth client %s deleted but its tokens could not be "
			  "revoked: %s", client_id, apim_strerror(rc));
	return rc;
}

apim_rc km_client_authenticate(apim_ctx *ctx, arena *pool, const char *client_id,
			       const char *secret, km_client *out)
{
	if (client_id == NULL || *client_id == '\0' || strlen(client_id) > ID_MAX_LEN)
		return APIM_EUNAUTH;
	char *key = arena_sprintf(pool, "client:%s", client_id);
	if (km_limit_blocked(ctx, key))
		return APIM_ELOCKED;
	client_row row;
	apim_rc rc = row_by_id(ctx, pool, client_id, &row);
	if (rc != APIM_OK && rc != APIM_ENOTFOUND)
		return rc;
	int known = rc == APIM_OK;
	const char *stored = known ? row.secret_hash : dummy_hash;
	char hash[65];
	const char *s = secret ? secret : "";
	apim_sha256_hex(s, strlen(s), hash);
	int match = apim_ct_equal(hash, 64, stored, strlen(stored));
	if (!known || !match || secret == NULL || *secret == '\0') {
		km_limit_fail(ctx, key);
		return APIM_EUNAUTH;
	}
	*out = row.c;
	return APIM_OK;
}

int km_client_allows_grant(const km_client *c, const char *g)
{
	return c != NULL && g != NULL && *g != '\0' && list_has(c->grant_types, g);
}

/* ---------- HTTP: shared ---------- */

static const char *json_str(json_t *o, const char *k)
{
	json_t *v = json_object_get(o, k);
	return json_is_string(v) ? json_string_value(v) : NULL;
}

static void no_store(http_req *r)
{
	http_set_header(r, "Cache-Control", "no-store");
	http_set_header(r, "Pragma", "no-cache");
}

/* Error body of RFC 7591 §3.2.2 / RFC 6749 §5.2. */
static void oauth_error(http_req *r, int status, const char *error, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void oauth_error(http_req *r, int status, const char *error, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *desc = arena_vsprintf(r->pool, fmt, ap);
	va_end(ap);
	no_store(r);
	http_reply_json(r, status, json_pack("{s:s, s:s}", "error", error, "error_description",
					     desc));
}

/* The grant list as a JSON array. */
static json_t *grants_array(const char *grants)
{
	json_t *a = json_array();
	for (size_t i = 0; grant_names[i]; i++)
		if (list_has(grants, grant_names[i]))
			json_array_append_new(a, json_string(grant_names[i]));
	return a;
}

/* ---------- /client-registration/v0.17/register ---------- */

static json_t *v017_render(const km_client *c, const char *secret, int saas)
{
	json_t *js = json_pack("{s:s, s:s, s:s}", "grant_types", c->grant_types, "redirect_uris",
			       c->callback_url ? c->callback_url : "", "client_name", c->name);
	char *jstr = js ? json_dumps(js, JSON_COMPACT) : NULL;
	json_decref(js);
	json_t *o = json_object();
	json_object_set_new(o, "clientId", json_string(c->client_id));
	json_object_set_new(o, "clientName", json_string(c->name));
	json_object_set_new(o, "callBackURL",
			    c->callback_url ? json_string(c->callback_url) : json_null());
	json_object_set_new(o, "clientSecret", json_string(secret));
	json_object_set_new(o, "isSaasApplication", json_boolean(saas));
	json_object_set_new(o, "appOwner", json_string(c->owner));
	json_object_set_new(o, "jsonString", json_string(jstr ? jstr : "{}"));
	json_object_set_new(o, "jsonAppAttribute", json_string("{}"));
	json_object_set_new(o, "tokenType", json_null());
	free(jstr);
	return o;
}

/* The body's owner (reference user names may carry the super tenant's
 * "@carbon.super"), or the caller when absent. */
static const char *v017_owner(http_req *r, json_t *body)
{
	const char *owner = json_str(body, "owner");
	if (owner == NULL || *owner == '\0')
		return r->who->username;
	size_t n = strlen(owner), sn = strlen(CARBON_SUPER);
	if (n > sn && strcasecmp(owner + n - sn, CARBON_SUPER) == 0)
		return arena_strndup(r->pool, owner, n - sn);
	return owner;
}

static void v017_register(http_req *r)
{
	json_t *body = http_json_body(r, JSON_OBJECT);
	if (body == NULL)
		return;
	if (r->who == NULL || r->who->username == NULL) {
		http_reply_error(r, 401, "Authentication required: send the user's HTTP Basic "
				 "credentials");
		return;
	}
	static const char *const strings[] = {"clientName", "owner", "grantType", NULL};
	for (size_t i = 0; strings[i]; i++) {
		json_t *v = json_object_get(body, strings[i]);
		if (v != NULL && !json_is_string(v) && !json_is_null(v)) {
			http_reply_error(r, 400, "'%s' must be a string", strings[i]);
			return;
		}
	}
	json_t *cbv = json_object_get(body, "callbackUrl");
	if (cbv != NULL && !json_is_string(cbv) && !json_is_null(cbv)) {
		http_reply_error(r, 400, "'callbackUrl' must be a string");
		return;
	}
	json_t *saasv = json_object_get(body, "saasApp");
	if (saasv != NULL && !json_is_boolean(saasv) && !json_is_null(saasv)) {
		http_reply_error(r, 400, "'saasApp' must be true or false");
		return;
	}
	const char *name = json_str(body, "clientName");
	if (name == NULL || *name == '\0') {
		http_reply_error(r, 400, "'clientName' is required: the name of the client to "
				 "register (e.g. rest_api_publisher)");
		return;
	}
	const char *owner = v017_owner(r, body);
	const char *me = r->who->username;
	if (strcmp(owner, me) != 0) {
		if (!principal_is_admin(r->who)) {
			http_reply_error(r, 403, "You may register clients only for yourself ('%s'); "
					 "registering one for '%s' needs the apim:admin scope",
					 me, owner);
			return;
		}
		auth_user u;
		apim_rc urc = auth_users_get_by_name(r->ctx, r->pool, owner, &u);
		if (urc == APIM_ENOTFOUND) {
			http_reply_error(r, 400, "'owner': there is no user named '%s'", owner);
			return;
		}
		if (urc != APIM_OK) {
			http_reply_rc(r, urc, "The user store could not be read");
			return;
		}
	}
	const char *grants = json_str(body, "grantType");
	if (grants == NULL || *grants == '\0')
		grants = "client_credentials";
	const char *bad = first_unknown_grant(r->pool, grants);
	if (bad != NULL) {
		http_reply_error(r, 400, "'grantType': '%s' is not supported; the supported grant "
				 "types are " GRANTS_SUPPORTED, bad);
		return;
	}
	int saas = json_is_true(saasv);
	km_client in = {
		.name = name,
		.owner = owner,
		.grant_types = grants,
		.callback_url = json_str(body, "callbackUrl"),
	};
	km_client out;
	const char *secret = NULL, *why = NULL;
	apim_rc rc = km_client_create(r->ctx, r->pool, &in, &out, &secret, &why);
	if (rc == APIM_ECONFLICT) {
		/* The reference answers a repeated registration (apictl logs in
		 * every time) with the existing client. Its secret is stored
		 * hashed, so the client gets a new one. */
		client_row cur;
		rc = row_by_name(r->ctx, r->pool, owner, name, &cur);
		if (rc == APIM_OK && cur.c.app_id != NULL) {
			http_reply_error(r, 409, "The name '%s' belongs to the keys of a Developer "
					 "Portal application of '%s'; choose another clientName",
					 name, owner);
			return;
		}
		if (rc == APIM_OK) {
			km_client upd = cur.c;
			upd.grant_types = grants;
			upd.callback_url = in.callback_url;
			rc = km_client_update(r->ctx, &upd, &why);
		}
		if (rc == APIM_OK)
			rc = client_new_secret(r->ctx, r->pool, cur.c.client_id, &secret);
		if (rc == APIM_OK)
			rc = km_client_get(r->ctx, r->pool, cur.c.client_id, &out);
		if (rc == APIM_OK)
			log_info("keymanager", "OAuth client %s (\"%s\") of %s registered again: new "
				 "secret", out.client_id, out.name, out.owner);
	}
	if (rc == APIM_EINVAL) {
		http_reply_error(r, 400, "%s", why ? why : "invalid client");
		return;
	}
	if (rc == APIM_ENOTFOUND || rc == APIM_ECONFLICT) {
		/* deleted or renamed by someone else in between */
		http_reply_error(r, 409, "The client '%s' changed while it was registered; retry",
				 name);
		return;
	}
	if (rc != APIM_OK) {
		http_reply_rc(r, rc, "The client could not be registered");
		return;
	}
	no_store(r);
	http_reply_json(r, 200, v017_render(&out, secret, saas));
}

/* ---------- RFC 7591 / 7592 ---------- */

typedef struct dcr_meta {
	const char *name;     /* NULL: the client id */
	const char *redirect; /* NULL: none */
	char grants[96];
	const char *endpoint_auth;
	const char *scope; /* NULL: none */
} dcr_meta;

/* Where the endpoints are: as the discovery metadata says, before a
 * configured issuer's "/oauth2/token" (behind a proxy), else
 * <scheme>://<server.hostname>:<port>. */
static const char *base_url(http_req *r)
{
	const apim_config *cfg = r->ctx->cfg;
	const char *iss = cfg->keymanager_issuer, *suffix = "/oauth2/token";
	size_t n = iss ? strlen(iss) : 0, sl = strlen(suffix);
	if (n > sl && strcmp(iss + n - sl, suffix) == 0)
		return arena_strndup(r->pool, iss, n - sl);
	int tls = cfg->http_tls_cert && *cfg->http_tls_cert;
	return arena_sprintf(r->pool, "%s://%s:%d", tls ? "https" : "http", cfg->server_hostname,
			     r->ctx->port);
}

static json_t *dcr_render(http_req *r, const km_client *c, const char *endpoint_auth)
{
	json_t *o = json_object();
	json_object_set_new(o, "client_id", json_string(c->client_id));
	json_object_set_new(o, "client_id_issued_at", json_integer(c->created_ms / 1000));
	json_object_set_new(o, "client_secret_expires_at", json_integer(0));
	json_object_set_new(o, "client_name", json_string(c->name));
	json_t *ru = json_array();
	if (c->callback_url != NULL)
		json_array_append_new(ru, json_string(c->callback_url));
	json_object_set_new(o, "redirect_uris", ru);
	json_object_set_new(o, "grant_types", grants_array(c->grant_types));
	json_t *rt = json_array();
	if (list_has(c->grant_types, "authorization_code"))
		json_array_append_new(rt, json_string("code"));
	json_object_set_new(o, "response_types", rt);
	json_object_set_new(o, "token_endpoint_auth_method",
			    json_string(endpoint_auth ? endpoint_auth : AUTH_BASIC_METHOD));
	if (c->scopes != NULL && *c->scopes)
		json_object_set_new(o, "scope", json_string(c->scopes));
	json_object_set_new(o, "registration_client_uri",
			    json_string(arena_sprintf(r->pool, "%s/oauth2/register/%s",
						      base_url(r), c->client_id)));
	return o;
}

/* The JSON object of the body, or NULL after answering 400. */
static json_t *dcr_body(http_req *r)
{
	const char *ct = http_header(r, "Content-Type");
	if (ct != NULL && strstr(ct, "json") == NULL) {
		oauth_error(r, 400, "invalid_client_metadata",
			    "send the client metadata as application/json, not '%s'", ct);
		return NULL;
	}
	if (r->body == NULL || r->body_len == 0) {
		oauth_error(r, 400, "invalid_client_metadata",
			    "the request body is missing: send the client metadata as a JSON "
			    "object");
		return NULL;
	}
	json_error_t e;
	json_t *body = json_loadb(r->body, r->body_len, JSON_REJECT_DUPLICATES, &e);
	if (body == NULL || !json_is_object(body)) {
		json_decref(body);
		oauth_error(r, 400, "invalid_client_metadata",
			    "the request body must be a JSON object of client metadata");
		return NULL;
	}
	return body;
}

/* A string array field into out (pool, NULL-terminated); -1 after 400. */
static int str_array(http_req *r, json_t *body, const char *field, const char ***out,
		     size_t *n)
{
	*out = NULL;
	*n = 0;
	json_t *a = json_object_get(body, field);
	if (a == NULL || json_is_null(a))
		return 0;
	if (!json_is_array(a)) {
		oauth_error(r, 400, "invalid_client_metadata", "'%s' must be an array of strings",
			    field);
		return -1;
	}
	const char **v = arena_alloc(r->pool, (json_array_size(a) + 1) * sizeof(char *));
	size_t i;
	json_t *x;
	json_array_foreach(a, i, x) {
		if (!json_is_string(x)) {
			oauth_error(r, 400, "invalid_client_metadata",
				    "'%s' must be an array of strings", field);
			return -1;
		}
		v[i] = json_string_value(x);
	}
	*out = v;
	*n = json_array_size(a);
	return 0;
}

/* Client metadata of RFC 7591 §2 with our rules; -1 after answering 400. */
static int dcr_parse(http_req *r, json_t *body, dcr_meta *m)
{
	memset(m, 0, sizeof(*m));
	static const char *const strings[] = {"client_name", "token_endpoint_auth_method", "scope",
					      NULL};
	for (size_t i = 0; strings[i]; i++) {
		json_t *v = json_object_get(body, strings[i]);
		if (v != NULL && !json_is_string(v) && !json_is_null(v)) {
			oauth_error(r, 400, "invalid_client_metadata", "'%s' must be a string",
				    strings[i]);
			return -1;
		}
	}
	m->name = json_str(body, "client_name");
	if (m->name != NULL && !name_valid(m->name)) {
		oauth_error(r, 400, "invalid_client_metadata",
			    "'client_name' must be 1 to 255 characters without control characters");
		return -1;
	}
	const char **uris, **grants, **rtypes;
	size_t nuris, ngrants, nrtypes;
	if (str_array(r, body, "redirect_uris", &uris, &nuris) != 0 ||
	    str_array(r, body, "grant_types", &grants, &ngrants) != 0 ||
	    str_array(r, body, "response_types", &rtypes, &nrtypes) != 0)
		return -1;
	const char *why = NULL;
	for (size_t i = 0; i < nuris; i++) {
		if (!redirect_valid(uris[i], &why)) {
			oauth_error(r, 400, "invalid_redirect_uri", "'%s': %s", uris[i], why);
			return -1;
		}
	}
	if (nuris > 1) {
		oauth_error(r, 400, "invalid_redirect_uri",
			    "only one redirect URI per client is supported (got %zu)", nuris);
		return -1;
	}
	m->redirect = nuris == 1 ? uris[0] : NULL;
	/* RFC 7591 §2: grant_types defaults to authorization_code. */
	char *list = arena_strdup(r->pool, ngrants == 0 ? "authorization_code" : "");
	for (size_t i = 0; i < ngrants; i++) {
		if (strchr(grants[i], ' ') != NULL || !grant_known(grants[i], strlen(grants[i]))) {
			oauth_error(r, 400, "invalid_client_metadata",
				    "grant type '%s' is not supported; the supported ones are "
				    GRANTS_SUPPORTED, grants[i]);
			return -1;
		}
		list = arena_sprintf(r->pool, "%s %s", list, grants[i]);
	}
	if (grants_normalize(list, m->grants, sizeof(m->grants), &why) != APIM_OK) {
		oauth_error(r, 400, "invalid_client_metadata", "%s", why);
		return -1;
	}
	for (size_t i = 0; i < nrtypes; i++) {
		if (strcmp(rtypes[i], "code") != 0) {
			oauth_error(r, 400, "invalid_client_metadata",
				    "response type '%s' is not supported; the only one is 'code'",
				    rtypes[i]);
			return -1;
		}
	}
	if (list_has(m->grants, "authorization_code") && m->redirect == NULL) {
		oauth_error(r, 400, "invalid_redirect_uri",
			    "the authorization_code grant needs a redirect URI in 'redirect_uris'");
		return -1;
	}
	m->endpoint_auth = json_str(body, "token_endpoint_auth_method");
	if (m->endpoint_auth == NULL)
		m->endpoint_auth = AUTH_BASIC_METHOD;
	if (strcmp(m->endpoint_auth, AUTH_BASIC_METHOD) != 0 &&
	    strcmp(m->endpoint_auth, AUTH_POST_METHOD) != 0) {
		oauth_error(r, 400, "invalid_client_metadata",
			    "token_endpoint_auth_method '%s' is not supported; use "
			    AUTH_BASIC_METHOD " or " AUTH_POST_METHOD, m->endpoint_auth);
		return -1;
	}
	const char *scope = json_str(body, "scope");
	if (scopes_normalize(r->pool, scope, &m->scope, &why) != APIM_OK) {
		oauth_error(r, 400, "invalid_client_metadata", "'scope': %s", why);
		return -1;
	}
	return 0;
}

static void dcr_register(http_req *r)
{
	if (r->who == NULL || r->who->username == NULL) {
		http_set_header(r, "WWW-Authenticate", "Basic realm=\"apim\"");
		oauth_error(r, 401, "invalid_client",
			    "authentication required: register clients with a user's credentials");
		return;
	}
	json_t *body = dcr_body(r);
	if (body == NULL)
		return;
	/* m borrows strings from body */
	dcr_meta m;
	if (dcr_parse(r, body, &m) != 0) {
		json_decref(body);
		return;
	}

	char id[TOKEN_BUF], reg[TOKEN_BUF], reg_hash[65];
	apim_random_token(id, CLIENT_ID_BYTES);
	new_secret(reg, reg_hash);
	km_client in = {
		.client_id = id,
		.name = m.name ? m.name : id,
		.owner = r->who->username,
		.grant_types = m.grants,
		.callback_url = m.redirect,
		.scopes = m.scope,
	};
	km_client out;
	const char *secret = NULL, *why = NULL;
	apim_rc rc = client_create(r->ctx, r->pool, &in, reg_hash, m.endpoint_auth, &out, &secret,
				   &why);
	if (rc == APIM_ECONFLICT) {
		oauth_error(r, 400, "invalid_client_metadata",
			    "you already have a client named '%s'; choose another client_name",
			    in.name);
	} else if (rc == APIM_EINVAL) {
		oauth_error(r, 400, "invalid_client_metadata", "%s",
			    why ? why : "invalid client metadata");
	} else if (rc != APIM_OK) {
		http_reply_rc(r, rc, "The client could not be registered");
	} else {
		json_t *o = dcr_render(r, &out, m.endpoint_auth);
		json_object_set_new(o, "client_secret", json_string(secret));
		json_object_set_new(o, "registration_access_token", json_string(reg));
		no_store(r);
		http_reply_json(r, 201, o);
	}
	sodium_memzero(reg, sizeof(reg));
	json_decref(body);
}

static void bearer_denied(http_req *r, const char *desc)
{
	http_set_header(r, "WWW-Authenticate", "Bearer realm=\"apim\", error=\"invalid_token\"");
	oauth_error(r, 401, "invalid_token", "%s", desc);
}

/*
 * RFC 7592 access: the client's registration access token as a bearer
 * token, or the credentials (Basic or access token) of an apim:admin user.
 * An unknown client and a wrong token answer the same 401 (RFC 7592 §2).
 * 0 with *row filled when allowed; -1 after answering.
 */
static int dcr_access(http_req *r, client_row *row)
{
	const char *id = http_param(r, "client_id");
	const char *authz = http_header(r, "Authorization");
	if (authz == NULL) {
		bearer_denied(r, "send the registration access token as "
				 "'Authorization: Bearer <token>'");
		return -1;
	}
	apim_rc rc = row_by_id(r->ctx, r->pool, id, row);
	if (rc != APIM_OK && rc != APIM_ENOTFOUND) {
		http_reply_rc(r, rc, "The client could not be read");
		return -1;
	}
	int known = rc == APIM_OK;
	if (strncasecmp(authz, "Bearer ", 7) == 0 && strchr(authz + 7, '.') == NULL) {
		const char *tok = authz + 7;
		while (*tok == ' ')
			tok++;
		char hash[65];
		apim_sha256_hex(tok, strlen(tok), hash);
		const char *stored = known && row->reg_hash ? row->reg_hash : dummy_hash;
		int match = apim_ct_equal(hash, 64, stored, strlen(stored));
		if (!known || row->reg_hash == NULL || !match) {
			bearer_denied(r, "the registration access token is not valid for this "
					 "client");
			return -1;
		}
		return 0;
	}
	/* A user's credentials: only an administrator manages others' clients. */
	principal *p = NULL;
	rc = auth_authenticate(r, authz, &p);
	if (rc == APIM_EUNAVAIL) {
		http_reply_error(r, 503, "The user store is unavailable; retry shortly");
		return -1;
	}
	if (rc != APIM_OK) {
		if (!http_replied(r))
			bearer_denied(r, rc == APIM_ELOCKED
						 ? "the account is locked after repeated failed logins"
						 : "invalid credentials or registration access token");
		return -1;
	}
	if (!principal_is_admin(p)) {
		oauth_error(r, 403, "access_denied",
			    "managing this client needs its registration access token or the "
			    "apim:admin scope");
		return -1;
	}
	r->who = p;
	if (!known) {
		oauth_error(r, 404, "invalid_client", "there is no client '%s'", id ? id : "");
		return -1;
	}
	return 0;
}

static void dcr_get(http_req *r)
{
	client_row row;
	if (dcr_access(r, &row) != 0)
		return;
	no_store(r);
	http_reply_json(r, 200, dcr_render(r, &row.c, row.endpoint_auth));
}

static void dcr_put(http_req *r)
{
	client_row row;
	if (dcr_access(r, &row) != 0)
		return;
	json_t *body = dcr_body(r);
	if (body == NULL)
		return;
	static const char *const forbidden[] = {"registration_access_token",
						"registration_client_uri", "client_secret_expires_at",
						"client_id_issued_at", NULL};
	for (size_t i = 0; forbidden[i]; i++) {
		if (json_object_get(body, forbidden[i]) != NULL) {
			oauth_error(r, 400, "invalid_client_metadata",
				    "'%s' must not be sent in an update (RFC 7592 section 2.2)",
				    forbidden[i]);
			goto out;
		}
	}
	json_t *idv = json_object_get(body, "client_id");
	if (idv != NULL && (!json_is_string(idv) ||
			    strcmp(json_string_value(idv), row.c.client_id) != 0)) {
		oauth_error(r, 400, "invalid_client_metadata",
			    "'client_id' must be the id of the client being updated ('%s')",
			    row.c.client_id);
		goto out;
	}
	json_t *secv = json_object_get(body, "client_secret");
	if (secv != NULL) {
		const char *s = json_is_string(secv) ? json_string_value(secv) : "";
		char hash[65];
		apim_sha256_hex(s, strlen(s), hash);
		if (!apim_ct_equal(hash, 64, row.secret_hash, strlen(row.secret_hash))) {
			oauth_error(r, 400, "invalid_client_metadata",
				    "'client_secret' does not match the client's secret; leave it "
				    "out (secrets are regenerated, not set)");
			goto out;
		}
	}
	dcr_meta m;
	if (dcr_parse(r, body, &m) != 0)
		goto out;
	/* RFC 7592 §2.2: what is left out is removed (or back to its default). */
	km_client upd = row.c;
	upd.name = m.name ? m.name : row.c.client_id;
	upd.grant_types = m.grants;
	upd.callback_url = m.redirect;
	upd.scopes = m.scope;
	const char *why = NULL;
	apim_rc rc = client_update(r->ctx, &upd, m.endpoint_auth, &why);
	if (rc == APIM_EINVAL || rc == APIM_ECONFLICT) {
		oauth_error(r, 400, "invalid_client_metadata", "%s",
			    why ? why : "invalid client metadata");
		goto out;
	}
	if (rc == APIM_OK)
		rc = row_by_id(r->ctx, r->pool, row.c.client_id, &row);
	if (rc != APIM_OK) {
		http_reply_rc(r, rc, "The client could not be updated");
		goto out;
	}
	no_store(r);
	http_reply_json(r, 200, dcr_render(r, &row.c, row.endpoint_auth));
out:
	json_decref(body);
}

static void dcr_delete(http_req *r)
{
	client_row row;
	if (dcr_access(r, &row) != 0)
		return;
	apim_rc rc = km_client_delete(r->ctx, row.c.client_id);
	if (rc == APIM_ENOTFOUND) {
		bearer_denied(r, "the registration access token is not valid for this client");
		return;
	}
	if (rc != APIM_OK) {
		http_reply_rc(r, rc, "The client could not be deleted completely");
		return;
	}
	http_reply_empty(r, 204);
}

static const http_route client_route_table[] = {
	{"POST", "/client-registration/v0.17/register", v017_register, "", 0},
	{"POST", "/oauth2/register", dcr_register, "", HTTP_RAW_BODY},
	{"GET", "/oauth2/register/{client_id}", dcr_get, NULL, HTTP_OWN_AUTH},
	{"PUT", "/oauth2/register/{client_id}", dcr_put, NULL, HTTP_OWN_AUTH | HTTP_RAW_BODY},
	{"DELETE", "/oauth2/register/{client_id}", dcr_delete, NULL, HTTP_OWN_AUTH},
};

void km_client_routes(http_server *s)
{
	http_server_routes(s, client_route_table,
			   sizeof(client_route_table) / sizeof(client_route_table[0]));
}
