/*
 * auth.h: principals, scopes, and request authentication.
 *
 * A principal is who is calling (user, roles) and what they may do
 * (scopes). Basic credentials resolve to the user's roles' scopes; bearer
 * tokens (Key Manager, next issue) will resolve to the token's scopes
 * through the same auth_authenticate hook, so route checks never care how
 * the caller authenticated.
 */
#ifndef APIM_AUTH_H
#define APIM_AUTH_H

#include <stddef.h>

#include "common/ctx.h"
#include "common/error.h"
#include "http/http.h"

typedef enum { AUTH_BASIC = 1, AUTH_BEARER = 2 } auth_method;

typedef struct principal {
	const char *username;
	const char *user_id;
	const char *const *roles;
	size_t nroles;
	const char *const *scopes;
	size_t nscopes;
	auth_method method;
	const char *client_id; /* bearer tokens only */
} principal;

/* The role names of the reference. */
#define ROLE_ADMIN "admin"
#define ROLE_CREATOR "Internal/creator"
#define ROLE_PUBLISHER "Internal/publisher"
#define ROLE_SUBSCRIBER "Internal/subscriber"
#define ROLE_EVERYONE "Internal/everyone"

int principal_has_scope(const principal *p, const char *scope);
/* 1 when p holds at least one of the space-separated scopes. */
int principal_has_any_scope(const principal *p, const char *scopes);
int principal_has_role(const principal *p, const char *role);
int principal_is_admin(const principal *p); /* holds apim:admin */

/* The http_authenticator installed in the control plane's server. */
apim_rc auth_authenticate(http_req *r, const char *authorization, principal **out);

/* Bearer-token verifier (installed by the Key Manager): resolves a token to
 * a principal from r->pool, APIM_EUNAUTH when invalid. */
typedef apim_rc (*auth_bearer_fn)(http_req *r, const char *token, principal **out);
void auth_set_bearer(auth_bearer_fn fn);

/* Initialises the credential cache (from cfg). Call once at start. */
apim_rc auth_init(apim_ctx *ctx);
void auth_shutdown(void);
/* Forgets every cached verified credential (after any user change). */
void auth_cache_flush(void);

#endif
