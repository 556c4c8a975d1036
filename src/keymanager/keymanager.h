/*
 * keymanager.h: the Key Manager, an OAuth 2.0 authorization server issuing
 * signed JWT access tokens (/oauth2/..., /client-registration/v0.17/register,
 * /.well-known/openid-configuration).
 */
#ifndef APIM_KEYMANAGER_H
#define APIM_KEYMANAGER_H

#include "common/ctx.h"
#include "common/error.h"
#include "http/http.h"

/* Migrations (apimgtdb: clients, tokens, revoked JWTs; shareddb: signing
 * keys), master key, signing keys, and the bearer verifier for every REST
 * API (auth_set_bearer). Call once at start, after the databases. */
apim_rc keymanager_init(apim_ctx *ctx);
void keymanager_routes(http_server *s);
void keymanager_shutdown(void);

#endif
