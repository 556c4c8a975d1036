/*
 * store_application.h: the Developer Portal's writes and reads of
 * applications (am_application, created by the "subscriptions" migration
 * of store_subscription.c), their OAuth key mappings and their API keys in
 * apimgtdb (migration module "devportal-apps").
 *
 *   am_application_key_mapping  (id = keyMappingId, application_id,
 *                    consumer_key = the OAuth client id, key_type
 *                    PRODUCTION|SANDBOX, key_manager, create_mode
 *                    CREATED|MAPPED, state, properties JSON (the request's
 *                    additionalProperties), created_ms); one mapping per
 *                    application and key type, one application per client.
 *   am_api_key      (jti, application_id, key_type, key_name, issued_ms,
 *                    expiry_ms, revoked_ms NULL while live): the API keys
 *                    issued, so that they can be revoked one by one and all
 *                    together when their application is deleted.
 *
 * Every function runs one statement on the calling thread's connection;
 * callers that change several rows (and record the change sequence) wrap
 * them in db_begin/db_commit. Strings of results come from the given pool.
 */
#ifndef APIM_STORE_APPLICATION_H
#define APIM_STORE_APPLICATION_H

#include <stddef.h>
#include <stdint.h>

#include "common/arena.h"
#include "common/error.h"
#include "store/db.h"

typedef struct store_application {
	char id[37];
	const char *name;
	const char *owner;
	const char *tier;
	const char *status;      /* APPROVED */
	const char *token_type;  /* JWT */
	const char *description; /* may be NULL */
	const char *attributes;  /* JSON object text */
	const char *groups;      /* JSON array text */
	int64_t created_ms;
	int64_t updated_ms;
	int64_t subscription_count; /* read only: computed by get/list */
} store_application;

typedef struct store_application_query {
	const char *owner; /* NULL: every owner */
	const char *name;  /* NULL: any; else case-insensitive substring */
	const char *order_by; /* "name", "tier", "status" or "created_ms" */
	int desc;
	int64_t offset, limit;
} store_application_query;

/* Applies the "devportal-apps" migrations (after "subscriptions"). */
apim_rc store_application_migrate(db *d);

/* APIM_ECONFLICT when the owner already has an application of that name. */
apim_rc store_application_insert(db *d, const store_application *a);
/* Replaces name, tier, token_type, description, attributes, groups and
 * updated_ms of a->id. APIM_ECONFLICT (name taken), APIM_ENOTFOUND. */
apim_rc store_application_update(db *d, const store_application *a);
/* Deletes the application row only (callers delete its subscriptions,
 * mappings and API keys first, in the same transaction). */
apim_rc store_application_delete(db *d, const char *id);
apim_rc store_application_get(db *d, arena *pool, const char *id, store_application *out);
/*
 * Inside a transaction: takes the application's row lock (a no-op update),
 * so that writes hanging off an application (subscriptions, key mappings)
 * and its deletion serialise on PostgreSQL as they do on SQLite.
 * APIM_ENOTFOUND when the application is gone.
 */
apim_rc store_application_lock(db *d, const char *id);
apim_rc store_application_list(db *d, arena *pool, const store_application_query *q,
			       store_application **out, size_t *n, int64_t *total);

typedef struct store_app_key {
	char id[37]; /* keyMappingId */
	const char *application_id;
	const char *consumer_key;
	const char *key_type;
	const char *key_manager;
	const char *create_mode; /* CREATED or MAPPED */
	const char *state;       /* COMPLETED */
	const char *properties;  /* JSON object text */
	int64_t created_ms;
} store_app_key;

/* APIM_ECONFLICT when the application already has keys of that type, or
 * the client is already mapped to an application. */
apim_rc store_application_key_insert(db *d, const store_app_key *k);
/* The mapping id of application app_id (NULL: of any application). */
apim_rc store_application_key_get(db *d, arena *pool, const char *app_id, const char *id,
				  store_app_key *out);
apim_rc store_application_key_by_type(db *d, arena *pool, const char *app_id,
				      const char *key_type, store_app_key *out);
apim_rc store_application_key_by_client(db *d, arena *pool, const char *consumer_key,
					store_app_key *out);
/* The application's mappings, PRODUCTION first. */
apim_rc store_application_key_list(db *d, arena *pool, const char *app_id, store_app_key **out,
				   size_t *n);
apim_rc store_application_key_set_properties(db *d, const char *id, const char *properties);
apim_rc store_application_key_delete(db *d, const char *id);

typedef struct store_app_apikey {
	const char *jti;
	const char *application_id;
	const char *key_type;
	const char *key_name;
	int64_t issued_ms;
	int64_t expiry_ms;
	int64_t revoked_ms; /* 0 while live */
} store_app_apikey;

apim_rc store_application_apikey_insert(db *d, const store_app_apikey *k);
apim_rc store_application_apikey_get(db *d, arena *pool, const char *jti, store_app_apikey *out);
/* Marks the key revoked (once); APIM_ENOTFOUND when there is no such key. */
apim_rc store_application_apikey_revoke(db *d, const char *jti, int64_t revoked_ms);
/* The application's live (unrevoked, unexpired at now_ms) API keys. */
apim_rc store_application_apikey_live(db *d, arena *pool, const char *app_id, int64_t now_ms,
				      store_app_apikey **out, size_t *n);
/* Deletes every API key row of the application. */
apim_rc store_application_apikey_delete_all(db *d, const char *app_id);

#endif
