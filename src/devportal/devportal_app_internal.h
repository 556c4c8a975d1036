/*
 * devportal_app_internal.h: what the application half of the Developer
 * Portal shares between its files (not an interface for other components).
 *
 *   devportal_app.c          /applications CRUD, routes, migrations, helpers
 *   devportal_keys.c         OAuth keys: generate-keys, oauth-keys, map-keys,
 *                            generate-token, regenerate-secret, clean-up
 *   devportal_apikey.c       API keys: generate and revoke
 *   devportal_subscription.c /subscriptions
 *
 * Ownership: a caller sees and changes only the applications they own
 * (admins, holders of apim:admin, see every one); anything else is 404, as
 * if it did not exist. Every change a gateway must enforce is recorded in
 * the change sequence in the transaction that makes it: ("application",
 * id), ("key_mapping", keyMappingId) and ("subscription", id). Such a
 * transaction first takes its application's row lock
 * (store_application_lock), so that deleting an application cannot miss a
 * subscription or key mapping added at the same moment on PostgreSQL.
 */
#ifndef APIM_DEVPORTAL_APP_INTERNAL_H
#define APIM_DEVPORTAL_APP_INTERNAL_H

#include <jansson.h>
#include <stdint.h>

#include "auth/auth.h"
#include "common/arena.h"
#include "common/error.h"
#include "http/http.h"
#include "devportal/devportal_internal.h"
#include "keymanager/km_client.h"
#include "store/store_application.h"

#define DP_BASE "/api/am/devportal/v3"

/* Route scopes (any one of them), as the reference's devportal-api.yaml. */
#define DP_SCOPES_APP "apim:subscribe apim:app_manage"
#define DP_SCOPES_APIKEY "apim:subscribe apim:app_manage apim:api_key"
#define DP_SCOPES_SUB "apim:subscribe apim:sub_manage"

/* The one Key Manager of this deployment (GET /key-managers). */
#define DP_KEY_MANAGER DEVPORTAL_KM_NAME

/* ---------- devportal_app.c ---------- */

/*
 * Loads the application id when the caller may see it (its owner, or an
 * admin). Otherwise answers 404 (400 when id is empty, 5xx on storage
 * errors) and returns -1.
 */
int devportal_app_load(http_req *r, const char *id, store_application *out);
/* 1 when the caller may see applications of owner. */
int devportal_app_visible(const principal *who, const char *owner);
/* Compact JSON text of v from pool. */
char *devportal_app_json_text(arena *pool, const json_t *v);
/* ms since the epoch as the decimal string the reference uses. */
json_t *devportal_app_time(int64_t ms);
/* The ApplicationInfo object of lists and subscriptions (new reference). */
json_t *devportal_app_info(const store_application *a);
/*
 * Inside the caller's transaction: db_change_record(entity, id, action)
 * with payload (stolen, may be NULL) as JSON text.
 */
apim_rc devportal_app_record(http_req *r, const char *entity, const char *id,
			     const char *action, json_t *payload);
/* The request's JSON object body; an absent or empty body is {} (for the
 * requests whose body the reference makes optional). NULL after answering
 * 400 for a malformed one. */
json_t *devportal_app_optional_body(http_req *r);

/* ---------- devportal_keys.c ---------- */

/*
 * The reference's ApplicationKey of mapping k; c is its OAuth client (NULL
 * when the client is gone), secret the consumer secret to show (NULL: not
 * shown), token an ApplicationToken object (stolen, NULL: null).
 */
json_t *devportal_keys_render(const store_app_key *k, const km_client *c, const char *secret,
			      json_t *token);
/* The change-sequence payload of a key mapping (new reference). */
json_t *devportal_keys_payload(const store_app_key *k);
/* After an application was renamed: renames the OAuth clients created for
 * it ("<owner>_<name>_<keyType>"). Best effort: failures are logged. */
void devportal_keys_app_renamed(http_req *r, const store_application *a);
void devportal_keys_routes(http_server *s);

/* ---------- devportal_apikey.c ---------- */

void devportal_apikey_routes(http_server *s);

/* ---------- devportal_subscription.c ---------- */

/* The change-sequence payload of a subscription (new reference). */
json_t *devportal_subscription_payload(const char *api_id, const char *app_id,
				       const char *tier, const char *status);
void devportal_subscription_routes(http_server *s);

#endif
