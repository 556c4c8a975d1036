/*
 * km_token.h: issuing, refreshing, introspecting and revoking tokens.
 *
 * Access tokens are JWTs (km_keys.h) with the reference's claims: iss,
 * sub, aud (= client_id), azp, client_id, scope, exp, iat, nbf, jti, aut
 * (APPLICATION or APPLICATION_USER). Every issued token is recorded
 * (km_token: jti, client_id, user, scope, expiry, refresh token hash,
 * state) so that introspection, revocation of a client's or a refresh
 * token's access tokens, and cleanup work. Revoking an access token
 * records its jti in am_revoked_jwt with its expiry under the change
 * sequence (db_change_record "revoked_jwt") so that gateways are told;
 * expired records are purged.
 */
#ifndef APIM_KM_TOKEN_H
#define APIM_KM_TOKEN_H

#include <jansson.h>
#include <stdint.h>

#include "common/arena.h"
#include "common/ctx.h"
#include "common/error.h"
#include "http/http.h"
#include "keymanager/km_client.h"

typedef struct km_issued {
	const char *access_token;  /* JWT */
	const char *refresh_token; /* NULL when none */
	const char *scope;         /* granted, space-separated ("" when none) */
	int64_t expires_in;
	const char *jti;
} km_issued;

/*
 * Issues an access token to client c for user (NULL: the application
 * itself, aut=APPLICATION) with the requested space-separated scopes
 * narrowed to what the client and the user's roles allow (scopes nobody
 * allows are dropped, as the reference does). validity 0 = the client's.
 * with_refresh adds a refresh token (never for client_credentials).
 * Used by the token endpoint and by the Developer Portal's generate-token.
 */
apim_rc km_token_issue(apim_ctx *ctx, arena *pool, const km_client *c, const char *user,
		       const char *scope, int64_t validity, int with_refresh, km_issued *out);

/*
 * The scopes that client c gets for user (NULL: an application token,
 * checked against the client owner's roles as the reference does) out of
 * the requested space-separated list: each must be allowed for the client
 * (c->scopes, when set) and, when it is an apim: scope, granted by the
 * user's roles; other scopes (API scopes) pass. "default" when nothing
 * remains. *granted is from pool.
 */
apim_rc km_token_scopes(apim_ctx *ctx, arena *pool, const km_client *c, const char *user,
			const char *requested, const char **granted);

/* Revokes the access token with this jti (expiring at exp_s). */
apim_rc km_token_revoke_jti(apim_ctx *ctx, const char *jti, int64_t exp_s);
/* Revokes every live token of a grant (the family: the first token's jti,
 * shared by the tokens refreshed from it). */
apim_rc km_token_revoke_family(apim_ctx *ctx, const char *family);
/* Revokes every live token of a client (client deleted or secret rotated). */
apim_rc km_token_revoke_client(apim_ctx *ctx, const char *client_id);
/* 1 when the jti is revoked (control-plane check on every bearer call). */
int km_token_is_revoked(apim_ctx *ctx, const char *jti);

/* Migrates the token tables and starts the writer of token rows. */
apim_rc km_token_migrate(apim_ctx *ctx);
/* Writes the rows still queued and stops the writer (before the databases
 * close). */
void km_token_shutdown(void);
/* Installs the bearer verifier (auth_set_bearer): a JWT of ours, unrevoked,
 * becomes a principal with the token's scopes. */
void km_token_install_bearer(apim_ctx *ctx);

/* Routes: /oauth2/token, authorize, introspect, revoke, userinfo. */
void km_token_routes(http_server *s);

#endif
