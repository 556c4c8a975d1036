/*
 * auth.c: request authentication (HTTP Basic now, bearer tokens through a
 * hook), principals, and a cache of verified Basic credentials so that
 * argon2id runs once per client and period, not per request.
 *
 * The cache key is HMAC-SHA256(process-random key, "user:password"): the
 * password is never stored, and a hit needs the exact credential. Entries
 * expire after security.auth_cache_seconds and the whole cache is flushed
 * on any user or role change (auth_cache_flush).
 */
#include "auth/auth.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "auth/auth_users.h"
#include "common/log.h"
#include "common/util.h"

#define CACHE_SLOTS 1024
#define MAX_AUTH_HEADER 4096

typedef struct cache_entry {
	unsigned char key[32];
	int used;
	int64_t expires_ms;
	char *username, *user_id;
	char **roles, **scopes;
	size_t nroles, nscopes;
} cache_entry;

static struct {
	pthread_mutex_t mu;
	unsigned char hmac_key[32];
	cache_entry slots[CACHE_SLOTS];
	int64_t ttl_ms;
	apim_ctx *ctx;
	auth_bearer_fn bearer;
} auth_state = {.mu = PTHREAD_MUTEX_INITIALIZER};

int principal_has_scope(const principal *p, const char *scope)
{
	if (p == NULL)
		return 0;
	for (size_t i = 0; i < p->nscopes; i++)
		if (strcmp(p->scopes[i], scope) == 0)
			return 1;
	return 0;
}

int principal_has_any_scope(const principal *p, const char *scopes)
{
	if (p == NULL || scopes == NULL)
		return 0;
	const char *s = scopes;
	while (*s) {
		while (*s == ' ')
			s++;
		const char *e = s;
		while (*e && *e != ' ')
			e++;
		size_t n = (size_t)(e - s);
		for (size_t i = 0; n > 0 && i < p->nscopes; i++)
			if (strlen(p->scopes[i]) == n && memcmp(p->scopes[i], s, n) == 0)
				return 1;
		s = e;
	}
	return 0;
}

int principal_has_role(const principal *p, const char *role)
{
	if (p == NULL)
		return 0;
	for (size_t i = 0; i < p->nroles; i++)
		if (strcmp(p->roles[i], role) == 0)
			return 1;
	return 0;
}

int principal_is_admin(const principal *p)
{
	return principal_has_scope(p, "apim:admin");
}

void auth_set_bearer(auth_bearer_fn fn)
{
	auth_state.bearer = fn;
}

static void entry_clear(cache_entry *e)
{
	free(e->username);
	free(e->user_id);
	for (size_t i = 0; i < e->nroles; i++)
		free(e->roles[i]);
	for (size_t i = 0; i < e->nscopes; i++)
		free(e->scopes[i]);
	free(e->roles);
	free(e->scopes);
	memset(e, 0, sizeof(*e));
}

void auth_cache_flush(void)
{
	pthread_mutex_lock(&auth_state.mu);
	for (size_t i = 0; i < CACHE_SLOTS; i++)
		if (auth_state.slots[i].used)
			entry_clear(&auth_state.slots[i]);
	pthread_mutex_unlock(&auth_state.mu);
}

apim_rc auth_init(apim_ctx *ctx)
{
	auth_state.ctx = ctx;
	auth_state.ttl_ms = ctx->cfg->security_auth_cache_seconds * 1000;
	apim_random(auth_state.hmac_key, sizeof(auth_state.hmac_key));
	return APIM_OK;
}

void auth_shutdown(void)
{
	auth_cache_flush();
}

static const char *const *pool_strv(arena *pool, char *const *v, size_t n)
{
	const char **out = arena_alloc(pool, (n + 1) * sizeof(char *));
	for (size_t i = 0; i < n; i++)
		out[i] = arena_strdup(pool, v[i]);
	return out;
}

static char **heap_strv(const char *const *v, size_t n)
{
	char **out = calloc(n + 1, sizeof(char *));
	if (out == NULL)
		return NULL;
	for (size_t i = 0; i < n; i++)
		out[i] = strdup(v[i]);
	return out;
}

/* Looks the credential up; on a hit fills *out from pool. */
static int cache_get(const unsigned char key[32], arena *pool, principal *out)
{
	if (auth_state.ttl_ms <= 0)
		return 0;
	int hit = 0;
	size_t slot = (size_t)(key[0] | key[1] << 8) % CACHE_SLOTS;
	pthread_mutex_lock(&auth_state.mu);
	cache_entry *e = &auth_state.slots[slot];
	if (e->used && apim_ct_equal(e->key, 32, key, 32)) {
		if (e->expires_ms > apim_mono_ms()) {
			out->username = arena_strdup(pool, e->username);
			out->user_id = arena_strdup(pool, e->user_id);
			out->roles = pool_strv(pool, e->roles, e->nroles);
			out->nroles = e->nroles;
			out->scopes = pool_strv(pool, e->scopes, e->nscopes);
			out->nscopes = e->nscopes;
			hit = 1;
		} else {
			entry_clear(e);
		}
	}
	pthread_mutex_unlock(&auth_state.mu);
	return hit;
}

static void cache_put(const unsigned char key[32], const principal *p)
{
	if (auth_state.ttl_ms <= 0)
		return;
	size_t slot = (size_t)(key[0] | key[1] << 8) % CACHE_SLOTS;
	pthread_mutex_lock(&auth_state.mu);
	cache_entry *e = &auth_state.slots[slot];
	if (e->used)
		entry_clear(e);
	memcpy(e->key, key, 32);
	e->username = strdup(p->username);
	e->user_id = strdup(p->user_id);
	e->roles = heap_strv(p->roles, p->nroles);
	e->nroles = p->nroles;
	e->scopes = heap_strv(p->scopes, p->nscopes);
	e->nscopes = p->nscopes;
	e->expires_ms = apim_mono_ms() + auth_state.ttl_ms;
	e->used = e->username && e->user_id && e->roles && e->scopes;
	if (!e->used)
		entry_clear(e);
	pthread_mutex_unlock(&auth_state.mu);
}

static apim_rc auth_basic(http_req *r, const char *b64, principal **out)
{
	size_t len = strlen(b64);
	while (len > 0 && b64[len - 1] == ' ')
		len--;
	size_t dlen = 0;
	unsigned char *dec = apim_base64_decode(b64, len, &dlen);
	if (dec == NULL)
		return APIM_EUNAUTH;
	char *colon = memchr(dec, ':', dlen);
	if (colon == NULL || colon == (char *)dec || memchr(dec, '\0', dlen) != NULL) {
		OPENSSL_cleanse(dec, dlen);
		free(dec);
		return APIM_EUNAUTH;
	}
	unsigned char key[32];
	unsigned int klen = sizeof(key);
	HMAC(EVP_sha256(), auth_state.hmac_key, sizeof(auth_state.hmac_key), dec, dlen, key,
	     &klen);
	*colon = '\0';
	const char *user = (const char *)dec, *pass = colon + 1;

	principal *p = arena_alloc(r->pool, sizeof(*p));
	p->method = AUTH_BASIC;
	apim_rc rc = APIM_OK;
	if (cache_get(key, r->pool, p))
		goto out;

	auth_user u;
	rc = auth_users_verify(auth_state.ctx, r->pool, user, pass, &u);
	if (rc == APIM_ELOCKED) {
		/* Entries made before the lock must not outlive it. */
		auth_cache_flush();
		goto out;
	}
	if (rc != APIM_OK)
		goto out;
	const char **scopes = NULL;
	size_t nscopes = 0;
	rc = auth_roles_scopes(auth_state.ctx, r->pool, u.roles, u.nroles, &scopes, &nscopes);
	if (rc != APIM_OK)
		goto out;
	p->username = u.username;
	p->user_id = arena_strdup(r->pool, u.id);
	p->roles = u.roles;
	p->nroles = u.nroles;
	p->scopes = scopes;
	p->nscopes = nscopes;
	cache_put(key, p);
out:
	OPENSSL_cleanse(dec, dlen);
	free(dec);
	if (rc == APIM_OK)
		*out = p;
	return rc;
}

apim_rc auth_authenticate(http_req *r, const char *authorization, principal **out)
{
	if (strlen(authorization) > MAX_AUTH_HEADER)
		return APIM_EUNAUTH;
	if (strncasecmp(authorization, "Basic ", 6) == 0)
		return auth_basic(r, authorization + 6, out);
	if (strncasecmp(authorization, "Bearer ", 7) == 0) {
		if (auth_state.bearer == NULL) {
			http_reply_error(r, 401, "Bearer tokens are not accepted yet: use HTTP Basic "
					 "credentials");
			return APIM_EUNAUTH;
		}
		return auth_state.bearer(r, authorization + 7, out);
	}
	return APIM_EUNAUTH;
}
