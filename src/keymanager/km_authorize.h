/*
 * km_authorize.h: the authorization endpoint (GET/POST /oauth2/authorize,
 * server-rendered login and consent page), authorization codes
 * (apimgtdb km_auth_code, created by km_token_migrate) and PKCE (RFC 7636,
 * S256 only). Internal to the Key Manager: km_token.c redeems codes.
 */
#ifndef APIM_KM_AUTHORIZE_H
#define APIM_KM_AUTHORIZE_H

#include "common/arena.h"
#include "common/ctx.h"
#include "common/error.h"
#include "http/http.h"
#include "keymanager/km_client.h"

/* 1 when verifier is a valid RFC 7636 code_verifier (43-128 characters of
 * [A-Za-z0-9-._~]) and BASE64URL(SHA256(verifier)) equals challenge
 * (compared in constant time); 0 otherwise. */
int km_pkce_verify(const char *verifier, const char *challenge);
/* 1 when s has the shape of an S256 code_challenge (43 base64url chars). */
int km_pkce_challenge_valid(const char *s);

/*
 * Redeems an authorization code for client c: the code is consumed (single
 * use) and must not be expired; redirect_uri must equal the one of the
 * authorization request when that request carried one; verifier must
 * match the code's PKCE challenge. APIM_OK fills *username and *scope
 * (from pool) and *code_hash (to link the tokens issued, see
 * km_authorize_link). APIM_EUNAUTH (with *why, static) when the code is
 * unknown, used, expired, another client's, or fails a check; a reused
 * code also revokes the tokens issued from it.
 */
apim_rc km_authorize_redeem(apim_ctx *ctx, arena *pool, const km_client *c, const char *code,
			    const char *redirect_uri, const char *verifier, const char **username,
			    const char **scope, const char **code_hash, const char **why);
/* Records that the token family (first jti) was issued from the code. */
void km_authorize_link(apim_ctx *ctx, const char *code_hash, const char *family);

/* GET and POST /oauth2/authorize. */
void km_authorize_routes(http_server *s);

#endif
