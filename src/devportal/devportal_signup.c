/*
 * devportal_signup.c: self sign-up, POST /api/identity/user/v1.0/me, in
 * the shape of the reference's (WSO2 Identity Server's) self-registration
 * API:
 *
 *   {"user": {"username": "kim", "realm": "PRIMARY", "password": "...",
 *             "claims": [{"uri": "http://wso2.org/claims/givenname",
 *                         "value": "Kim"}, ...]},
 *    "properties": []}
 *
 * The new user holds Internal/subscriber and Internal/everyone. The
 * reference answers a bare 201 (account confirmation is off in API-M); we
 * answer 201 with a summary of the account: {id, username, realm, roles,
 * claims, message}. Claims other than given name, last name and e-mail
 * address are accepted and ignored, as are properties. Off when
 * devportal.self_signup is false (403).
 */
#include <string.h>
#include <strings.h>

#include "auth/auth.h"
#include "auth/auth_users.h"
#include "common/log.h"
#include "devportal/devportal_internal.h"

#define CLAIM_BASE "http://wso2.org/claims/"
#define CLAIM_MAX 255

/* 3 to 100 characters of [A-Za-z0-9._@-]: safe in Basic credentials, URLs
 * and logs. NULL when fine, else why not. */
static const char *signup_username_problem(const char *u)
{
	size_t n = strlen(u);
	if (n < 3 || n > 100)
		return "must be 3 to 100 characters long";
	for (const char *p = u; *p; p++) {
		char c = *p;
		int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
			 c == '.' || c == '_' || c == '@' || c == '-';
		if (!ok)
			return "may contain only letters, digits and . _ @ -";
	}
	return NULL;
}

static int signup_has_ctl(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return 1;
	return 0;
}

/* Reads the claims array into the profile fields; -1 after answering 400. */
static int signup_claims(http_req *r, json_t *claims, auth_user *u)
{
	size_t i;
	json_t *c;
	if (claims == NULL || json_is_null(claims))
		return 0;
	if (!json_is_array(claims)) {
		http_reply_error(r, 400, "'user.claims' must be an array of {\"uri\": ..., "
					 "\"value\": ...}");
		return -1;
	}
	json_array_foreach(claims, i, c) {
		const char *uri = json_string_value(json_object_get(c, "uri"));
		json_t *jv = json_object_get(c, "value");
		if (!json_is_object(c) || uri == NULL) {
			http_reply_error(r, 400, "'user.claims[%zu]' must be an object with a string "
						 "'uri' and 'value'",
					 i);
			return -1;
		}
		if (jv != NULL && !json_is_null(jv) && !json_is_string(jv)) {
			http_reply_error(r, 400, "The value of claim %s must be a string", uri);
			return -1;
		}
		const char *v = json_string_value(jv);
		const char **field = NULL;
		if (strcmp(uri, CLAIM_BASE "givenname") == 0)
			field = &u->given_name;
		else if (strcmp(uri, CLAIM_BASE "lastname") == 0)
			field = &u->family_name;
		else if (strcmp(uri, CLAIM_BASE "emailaddress") == 0)
			field = &u->email;
		if (field == NULL || v == NULL || *v == '\0')
			continue; /* other claims (mobile, ...) are not kept */
		if (strlen(v) > CLAIM_MAX || signup_has_ctl(v)) {
			http_reply_error(r, 400, "The value of claim %s must be at most %d characters "
						 "without control characters",
					 uri, CLAIM_MAX);
			return -1;
		}
		if (field == &u->email) {
			const char *at = strchr(v, '@');
			if (at == NULL || at == v || at[1] == '\0' || strchr(v, ' ') != NULL) {
				http_reply_error(r, 400, "'%s' is not an e-mail address (claim %s)", v,
						 uri);
				return -1;
			}
		}
		*field = arena_strdup(r->pool, v);
	}
	return 0;
}

static void h_signup(http_req *r)
{
	static const char *const roles[] = {ROLE_SUBSCRIBER, ROLE_EVERYONE};
	if (!r->ctx->cfg->devportal_self_signup) {
		http_reply_error(r, 403, "Self sign-up is disabled on this server: ask an "
					 "administrator to create your account (or set [devportal] "
					 "self_signup = true)");
		return;
	}
	json_t *body = http_json_body(r, JSON_OBJECT);
	if (body == NULL)
		return;
	json_t *user = json_object_get(body, "user");
	if (!json_is_object(user)) {
		http_reply_error(r, 400, "'user' is required: {\"user\": {\"username\": ..., "
					 "\"password\": ..., \"claims\": [...]}, \"properties\": []}");
		return;
	}
	json_t *ju = json_object_get(user, "username"), *jp = json_object_get(user, "password");
	json_t *jr = json_object_get(user, "realm");
	if (!json_is_string(ju) || *json_string_value(ju) == '\0') {
		http_reply_error(r, 400, "'user.username' is required (a string)");
		return;
	}
	const char *username = json_string_value(ju);
	const char *why = signup_username_problem(username);
	if (why != NULL) {
		http_reply_error(r, 400, "The username '%s' is not allowed: it %s", username, why);
		return;
	}
	if (jr != NULL && !json_is_null(jr) &&
	    (!json_is_string(jr) || (*json_string_value(jr) != '\0' &&
				     strcasecmp(json_string_value(jr), "PRIMARY") != 0))) {
		http_reply_error(r, 400, "Unknown user store (realm) '%s': only PRIMARY exists",
				 json_is_string(jr) ? json_string_value(jr) : "?");
		return;
	}
	if (!json_is_string(jp) || *json_string_value(jp) == '\0') {
		http_reply_error(r, 400, "'user.password' is required (a string)");
		return;
	}
	const char *password = json_string_value(jp);
	const char *weak = auth_password_policy(password);
	if (weak != NULL) {
		http_reply_error(r, 400, "%s", weak);
		return;
	}
	json_t *props = json_object_get(body, "properties");
	if (props != NULL && !json_is_null(props) && !json_is_array(props)) {
		http_reply_error(r, 400, "'properties' must be an array of {\"key\", \"value\"}");
		return;
	}
	auth_user in, out;
	memset(&in, 0, sizeof(in));
	in.username = username;
	in.roles = roles;
	in.nroles = sizeof(roles) / sizeof(roles[0]);
	if (signup_claims(r, json_object_get(user, "claims"), &in) != 0)
		return;
	apim_rc rc = auth_users_create(r->ctx, r->pool, &in, password, &out);
	if (rc == APIM_ECONFLICT) {
		http_reply_error(r, 409, "A user named '%s' already exists: choose another username",
				 username);
		return;
	}
	if (rc != APIM_OK) {
		log_error("devportal", "sign-up of '%s' failed: %s", username, apim_strerror(rc));
		http_reply_store_error(r, rc == APIM_EINVAL ? APIM_EINTERNAL : rc, "user");
		return;
	}
	log_info("devportal", "user '%s' signed up", out.username);
	json_t *rl = json_array();
	for (size_t i = 0; i < out.nroles; i++)
		json_array_append_new(rl, json_string(out.roles[i]));
	json_t *claims = json_array();
	const struct {
		const char *uri, *value;
	} kept[] = {{CLAIM_BASE "givenname", out.given_name},
		    {CLAIM_BASE "lastname", out.family_name},
		    {CLAIM_BASE "emailaddress", out.email}};
	for (size_t i = 0; i < sizeof(kept) / sizeof(kept[0]); i++)
		if (kept[i].value != NULL && *kept[i].value != '\0')
			json_array_append_new(claims, json_pack("{s:s, s:s}", "uri", kept[i].uri,
								"value", kept[i].value));
	http_reply_json(r, 201,
			json_pack("{s:s, s:s, s:s, s:o, s:o, s:s}", "id", out.id, "username",
				  out.username, "realm", "PRIMARY", "roles", rl, "claims", claims,
				  "message", "User signed up; sign in with the username and password"));
}

static const http_route signup_routes[] = {
	{"POST", "/api/identity/user/v1.0/me", h_signup, NULL, HTTP_PUBLIC},
};

void devportal_signup_routes(http_server *s)
{
	http_server_routes(s, signup_routes, sizeof(signup_routes) / sizeof(signup_routes[0]));
}
