/*
 * km_client.h: OAuth clients (apimgtdb km_oauth_client), the internal
 * interface the Developer Portal uses for application keys, and client
 * authentication.
 *
 * Client secrets are 32 random bytes (base64url), shown once on create and
 * regenerate, and stored as SHA-256 (high entropy makes a slow hash
 * unnecessary); comparison is constant time. Failed client
 * authentications are limited per client id (keymanager.auth_failures_per_minute).
 */
#ifndef APIM_KM_CLIENT_H
#define APIM_KM_CLIENT_H

#include <stdint.h>

#include "common/arena.h"
#include "common/ctx.h"
#include "common/error.h"
#include "http/http.h"

typedef struct km_client {
	const char *client_id;
	const char *name;         /* unique per owner */
	const char *owner;        /* username */
	const char *grant_types;  /* space-separated: client_credentials password refresh_token authorization_code */
	const char *callback_url; /* redirect URI; required for authorization_code */
	const char *scopes;       /* space-separated scopes the client may get; NULL/"" = any */
	int64_t access_validity;  /* seconds; 0 = keymanager.access_token_validity */
	int64_t refresh_validity; /* seconds; 0 = keymanager.refresh_token_validity */
	const char *app_id;       /* Developer Portal application id, or NULL */
	const char *key_type;     /* PRODUCTION or SANDBOX, or NULL */
	int64_t created_ms;
} km_client;

/* Validates and creates a client. client_id is generated when in->client_id
 * is NULL; *secret receives the secret (from pool) — the only time it is
 * visible. APIM_EINVAL with *why (static) on bad grant types/callback,
 * APIM_ECONFLICT on a duplicate client_id or owner+name. Grant types are
 * normalised (canonical order, no duplicates). With authorization_code the
 * callback must be an absolute http(s) URL without fragment; other clients
 * may keep any callback text (the reference's examples register
 * "www.example.com" for password clients). */
apim_rc km_client_create(apim_ctx *ctx, arena *pool, const km_client *in, km_client *out,
			 const char **secret, const char **why);
/* Fills *out (strings from pool); APIM_ENOTFOUND when there is none. */
apim_rc km_client_get(apim_ctx *ctx, arena *pool, const char *client_id, km_client *out);
/* Updates grant types, callback, scopes, validities and name of the client
 * in->client_id: those fields of in are its complete new state (get,
 * change, update), except that a NULL name or grant_types keeps the
 * current one; owner, app_id and key_type never change. APIM_EINVAL with
 * *why (static), APIM_ECONFLICT when the new name is taken for the owner,
 * APIM_ENOTFOUND. */
apim_rc km_client_update(apim_ctx *ctx, const km_client *in, const char **why);
/* New secret (from pool, shown once); the client's tokens are revoked, as
 * the reference does. APIM_ENOTFOUND when there is no such client. */
apim_rc km_client_regenerate_secret(apim_ctx *ctx, arena *pool, const char *client_id,
				    const char **secret);
/* Deletes the client and revokes every token issued to it (after the delete
 * committed; a failed revocation is logged and returned). */
apim_rc km_client_delete(apim_ctx *ctx, const char *client_id);

/*
 * Authenticates a client by id and secret. APIM_OK fills *out.
 * APIM_EUNAUTH when unknown or wrong (same timing), APIM_ELOCKED when
 * too many failures for this client id in the last minute.
 */
apim_rc km_client_authenticate(apim_ctx *ctx, arena *pool, const char *client_id,
			       const char *secret, km_client *out);

/* 1 when the client may use grant type g. */
int km_client_allows_grant(const km_client *c, const char *g);

/* Per-key failure limiter shared by client and user authentication:
 * km_limit_blocked() is 1 when key has reached the per-minute limit;
 * km_limit_fail() counts a failure. key is e.g. "client:<id>", "user:<name>". */
int km_limit_blocked(apim_ctx *ctx, const char *key);
void km_limit_fail(apim_ctx *ctx, const char *key);

apim_rc km_client_migrate(apim_ctx *ctx);

/* Routes: /client-registration/v0.17/register and /oauth2/register. */
void km_client_routes(http_server *s);

#endif
