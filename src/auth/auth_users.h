/*
 * auth_users.h: users, roles and role-to-scope mapping in shareddb.
 *
 * Passwords are argon2id (libsodium crypto_pwhash_str) with the configured
 * cost. Failed logins are counted per user; after security.lockout_attempts
 * failures in a row the account is locked for security.lockout_seconds.
 */
#ifndef APIM_AUTH_USERS_H
#define APIM_AUTH_USERS_H

#include <jansson.h>
#include <stdint.h>

#include "common/arena.h"
#include "common/ctx.h"
#include "common/error.h"

typedef struct auth_user {
	char id[37];
	const char *username;
	const char *given_name;
	const char *family_name;
	const char *email;
	const char *const *roles;
	size_t nroles;
	int64_t created_ms;
	int64_t modified_ms;
} auth_user;

/* Creates the shareddb tables, the reference roles with their scopes, and
 * the admin account when it does not exist yet. When the admin password is
 * generated, *generated receives it (malloc'ed) so the caller can print it
 * once; otherwise NULL. */
apim_rc auth_users_bootstrap(apim_ctx *ctx, char **generated);

/* Validates a password against the policy; NULL when fine, else a message. */
const char *auth_password_policy(const char *password);

/*
 * Verifies a username and password. APIM_OK fills *user (from pool).
 * APIM_EUNAUTH on a wrong user or password, APIM_ELOCKED when the account
 * is locked (also after this failure locked it).
 */
apim_rc auth_users_verify(apim_ctx *ctx, arena *pool, const char *username,
			  const char *password, auth_user *user);

/* Create: roles must all exist (APIM_EINVAL names the unknown one),
 * duplicate username is APIM_ECONFLICT. */
apim_rc auth_users_create(apim_ctx *ctx, arena *pool, const auth_user *in,
			  const char *password, auth_user *out);
apim_rc auth_users_get(apim_ctx *ctx, arena *pool, const char *id, auth_user *out);
apim_rc auth_users_get_by_name(apim_ctx *ctx, arena *pool, const char *username,
			       auth_user *out);
/* Lists users, optionally only the one named username_eq (NULL: all). */
apim_rc auth_users_list(apim_ctx *ctx, arena *pool, const char *username_eq, int64_t offset,
			int64_t limit, auth_user **out, size_t *n, int64_t *total);
/* Replaces the user's role set (all roles must exist). */
apim_rc auth_users_set_roles(apim_ctx *ctx, const char *id, const char *const *roles,
			     size_t nroles);
/* Updates profile fields (NULL = unchanged) and, when password != NULL, the
 * password (policy checked by the caller). */
apim_rc auth_users_update(apim_ctx *ctx, const char *id, const char *given_name,
			  const char *family_name, const char *email, const char *password);
apim_rc auth_users_delete(apim_ctx *ctx, const char *id);
/* Usernames of the given user ids, same order, NULL for ids that name no
 * user (array and strings from pool). */
apim_rc auth_users_names(apim_ctx *ctx, arena *pool, const char *const *ids, size_t n,
			 const char ***names);

typedef struct auth_role {
	char id[37];
	const char *name;
	const char *const *members; /* user ids */
	size_t nmembers;
} auth_role;

apim_rc auth_roles_list(apim_ctx *ctx, arena *pool, const char *name_eq, auth_role **out,
			size_t *n);
apim_rc auth_roles_get(apim_ctx *ctx, arena *pool, const char *id, auth_role *out);
apim_rc auth_roles_create(apim_ctx *ctx, arena *pool, const char *name, auth_role *out);
apim_rc auth_roles_delete(apim_ctx *ctx, const char *id);
/* Adds/removes members of a role by user id. */
apim_rc auth_roles_add_members(apim_ctx *ctx, const char *id, const char *const *users, size_t n);
apim_rc auth_roles_remove_members(apim_ctx *ctx, const char *id, const char *const *users,
				  size_t n);

/* Scopes the given roles grant (deduplicated, from pool). */
apim_rc auth_roles_scopes(apim_ctx *ctx, arena *pool, const char *const *roles, size_t nroles,
			  const char ***scopes, size_t *nscopes);

#endif
