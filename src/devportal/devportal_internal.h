/*
 * devportal_internal.h: how the Developer Portal's parts fit together.
 *
 * devportal_discovery.c (+ _signup, _rating): sign-up, API discovery,
 *   documents, OpenAPI, tags, ratings, comments, reference lists.
 * devportal_app.c (+ _keys, _apikey, _subscription): applications, OAuth
 *   keys and tokens (through km_client.h / km_token.h), API keys,
 *   subscriptions.
 */
#ifndef APIM_DEVPORTAL_INTERNAL_H
#define APIM_DEVPORTAL_INTERNAL_H

#include <jansson.h>

#include "auth/auth.h"
#include "common/ctx.h"
#include "common/error.h"
#include "http/http.h"
#include "store/store_api.h"

apim_rc devportal_discovery_migrate(apim_ctx *ctx);
void devportal_discovery_routes(http_server *s);

apim_rc devportal_app_migrate(apim_ctx *ctx);
void devportal_app_routes(http_server *s);

/*
 * 1 when the caller (NULL: anonymous) may see the API in the Developer
 * Portal: its lifecycle state is PUBLISHED, PROTOTYPED or DEPRECATED, and
 * its visibility is PUBLIC, or PRIVATE and the caller is authenticated, or
 * RESTRICTED to a role the caller holds (roles compare without case;
 * Internal/everyone means every authenticated caller), or the caller is an
 * admin (apim:admin or the admin role). api is the Publisher's stored API
 * document with lifeCycleStatus (publisher_api_render's output).
 */
int devportal_api_visible(const principal *who, json_t *api);

/* ---------- devportal_discovery.c, for the other parts ---------- */

/* The one Key Manager GET /key-managers lists. */
#define DEVPORTAL_KM_NAME "Resident Key Manager"
#define DEVPORTAL_KM_ID "4a8b7c2e-5f3d-4e6a-9b1c-0d2e3f4a5b6c"

/*
 * Loads the API id when r->who may see it (devportal_api_visible): 0 with
 * *out filled (strings from r->pool), else answers 404 "API <id> not found"
 * (the same for unknown and invisible APIs) or 503/500 and returns -1.
 */
int devportal_discovery_load_api(http_req *r, const char *id, store_api *out);

/* devportal_signup.c: POST /api/identity/user/v1.0/me. */
void devportal_signup_routes(http_server *s);
/* devportal_rating.c: ratings and comments of APIs. */
apim_rc devportal_rating_migrate(apim_ctx *ctx);
void devportal_rating_routes(http_server *s);

#endif
