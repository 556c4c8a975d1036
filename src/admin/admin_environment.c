/*
 * admin_environment.c: gateway environments (where API revisions are
 * deployed) with their virtual hosts. "Default" is created at first start,
 * read-only, with the gateway's ports after server.port_offset.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "admin/admin.h"
#include "admin/admin_internal.h"
#include "admin/admin_schema.h"
#include "admin/admin_validate.h"
#include "common/util.h"
#include "publisher/publisher.h"
#include "store/store_environment.h"

#define ERRLEN 512
#define ENV_NAME_MAX 255

static const char *const providers[] = {"wso2", NULL};
static const char *const env_types[] = {"hybrid", "production", "sandbox", NULL};
static const char *const gateway_types[] = {"Regular", NULL};
static const char *const permission_types[] = {"PUBLIC", "ALLOW", "DENY", NULL};

#define PORT .min = 1, .max = 65535
static const schema_field vhost_fields[] = {
	{.name = "host", .type = SCHEMA_STRING, .flags = SCHEMA_REQUIRED | SCHEMA_NONEMPTY},
	{.name = "httpContext", .type = SCHEMA_STRING, .flags = 0, .max = 255},
	{.name = "httpPort", .type = SCHEMA_INT, .flags = 0, PORT},
	{.name = "httpsPort", .type = SCHEMA_INT, .flags = 0, PORT},
	{.name = "wsPort", .type = SCHEMA_INT, .flags = 0, PORT},
	{.name = "wssPort", .type = SCHEMA_INT, .flags = 0, PORT},
	{.name = "websubHttpPort", .type = SCHEMA_INT, .flags = 0, PORT},
	{.name = "websubHttpsPort", .type = SCHEMA_INT, .flags = 0, PORT},
	{.name = NULL},
};
static const schema_field property_fields[] = {
	{.name = "key", .type = SCHEMA_STRING, .flags = SCHEMA_REQUIRED | SCHEMA_NONEMPTY, .max = 255},
	{.name = "value", .type = SCHEMA_STRING, .flags = 0, .max = 4096},
	{.name = NULL},
};
static const schema_field permission_fields[] = {
	{.name = "permissionType", .type = SCHEMA_STRING, .flags = SCHEMA_REQUIRED, .enums = permission_types},
	{.name = "roles", .type = SCHEMA_ARRAY, .flags = 0, .item = SCHEMA_STRING},
	{.name = NULL},
};
static const schema_field env_fields[] = {
	{.name = "id", .type = SCHEMA_STRING, .flags = 0},
	{.name = "name", .type = SCHEMA_STRING, .flags = SCHEMA_REQUIRED},
	{.name = "displayName", .type = SCHEMA_STRING, .flags = 0, .max = 255},
	{.name = "description", .type = SCHEMA_STRING, .flags = 0, .max = 1024},
	{.name = "provider", .type = SCHEMA_STRING, .flags = 0, .enums = providers},
	{.name = "type", .type = SCHEMA_STRING, .flags = 0, .enums = env_types},
	{.name = "gatewayType", .type = SCHEMA_STRING, .flags = 0, .enums = gateway_types},
	{.name = "isReadOnly", .type = SCHEMA_BOOL, .flags = 0},
	{.name = "vhosts", .type = SCHEMA_ARRAY, .flags = SCHEMA_REQUIRED | SCHEMA_NONEMPTY, .item = SCHEMA_OBJECT,
	 .fields = vhost_fields},
	{.name = "endpointURIs", .type = SCHEMA_ARRAY, .flags = 0, .item = SCHEMA_ANY},
	{.name = "additionalProperties", .type = SCHEMA_ARRAY, .flags = 0, .item = SCHEMA_OBJECT, .fields = property_fields},
	{.name = "permissions", .type = SCHEMA_OBJECT, .flags = 0, .fields = permission_fields},
	{.name = NULL},
};

/* The reference gateway's ports, shifted like every port by the offset. */
static const struct {
	const char *field;
	int port;
} default_ports[] = {
	{"httpPort", 8280},       {"httpsPort", 8243},      {"wsPort", 9099},
	{"wssPort", 8099},        {"websubHttpPort", 9021}, {"websubHttpsPort", 8021},
};

static json_t *render_vhosts(arena *pool, const apim_config *cfg, const json_t *in, char **msg)
{
	json_t *out = json_array();
	size_t i;
	json_t *v;
	char err[ERRLEN];
	json_array_foreach(in, i, v) {
		const char *host = admin_json_str(v, "host");
		char *where = arena_sprintf(pool, "vhosts[%zu].host", i);
		if (admin_validate_host(where, host, err, sizeof(err)) != APIM_OK) {
			*msg = arena_strdup(pool, err);
			goto fail;
		}
		for (size_t j = 0; j < i; j++) {
			if (strcasecmp(host, admin_json_str(json_array_get(in, j), "host")) == 0) {
				*msg = arena_sprintf(pool,
						     "'%s': host '%s' appears twice; each virtual host "
						     "needs its own host name",
						     where, host);
				goto fail;
			}
		}
		const char *ctx = admin_json_str(v, "httpContext");
		if (ctx == NULL)
			ctx = "";
		for (const char *p = ctx; *p; p++) {
			if (isspace((unsigned char)*p) || *p == '?' || *p == '#') {
				*msg = arena_sprintf(pool,
						     "'vhosts[%zu].httpContext' must be a path without "
						     "spaces, '?' or '#' (got '%s')",
						     i, ctx);
				goto fail;
			}
		}
		json_t *o = json_object();
		json_object_set_new(o, "host", json_string(host));
		json_object_set_new(o, "httpContext", json_string(ctx));
		for (size_t k = 0; k < sizeof(default_ports) / sizeof(default_ports[0]); k++) {
			int64_t def = default_ports[k].port + (cfg ? cfg->server_port_offset : 0);
			json_object_set_new(o, default_ports[k].field,
					    json_integer(admin_json_int(v, default_ports[k].field,
									def)));
		}
		json_array_append_new(out, o);
	}
	return out;
fail:
	json_decref(out);
	return NULL;
}

/* Checks body and renders the environment document. */
static json_t *env_build(arena *pool, const apim_config *cfg, json_t *body, const char *id,
			 const char *name, int read_only, char **msg)
{
	if (admin_schema_check(pool, body, env_fields, "", msg) != APIM_OK)
		return NULL;
	char err[ERRLEN];
	if (admin_validate_name("name", name, ENV_NAME_MAX, err, sizeof(err)) != APIM_OK) {
		*msg = arena_strdup(pool, err);
		return NULL;
	}
	json_t *vh = render_vhosts(pool, cfg, admin_json_get(body, "vhosts"), msg);
	if (vh == NULL)
		return NULL;
	const char *display = admin_json_str(body, "displayName");
	const char *desc = admin_json_str(body, "description");
	const char *provider = admin_json_str(body, "provider");
	const char *type = admin_json_str(body, "type");
	const char *gwtype = admin_json_str(body, "gatewayType");

	json_t *props = json_array();
	size_t i;
	json_t *p;
	json_array_foreach(admin_json_get(body, "additionalProperties"), i, p) {
		const char *v = admin_json_str(p, "value");
		json_array_append_new(props, json_pack("{s:s, s:s}", "key", admin_json_str(p, "key"),
						       "value", v ? v : ""));
	}
	json_t *perm = admin_json_get(body, "permissions");
	const char *ptype = perm ? admin_json_str(perm, "permissionType") : "PUBLIC";
	json_t *roles = perm ? admin_json_get(perm, "roles") : NULL;
	if (strcmp(ptype, "PUBLIC") != 0 && json_array_size(roles) == 0) {
		*msg = arena_sprintf(pool, "'permissions.roles' must name at least one role when "
					   "'permissions.permissionType' is %s",
				     ptype);
		json_decref(vh);
		json_decref(props);
		return NULL;
	}
	return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:b, s:o, s:o, s:{s:s, s:o}}", "id",
			 id, "name", name, "displayName", display && *display ? display : name,
			 "provider", provider ? provider : "wso2", "type", type ? type : "hybrid",
			 "gatewayType", gwtype ? gwtype : "Regular", "description",
			 desc ? desc : "", "isReadOnly", read_only, "vhosts", vh,
			 "additionalProperties", props, "permissions", "permissionType", ptype,
			 "roles", roles ? json_deep_copy(roles) : json_array());
}

static json_t *env_render(const store_environment *e)
{
	json_t *doc = admin_doc_load(e->doc);
	if (doc == NULL)
		doc = json_object();
	json_object_set_new(doc, "id", json_string(e->id));
	json_object_set_new(doc, "name", json_string(e->name));
	json_object_set_new(doc, "isReadOnly", json_boolean(e->read_only));
	return doc;
}

static apim_rc load(http_req *r, const char *id, store_environment *e)
{
	apim_rc rc = apim_uuid_valid(id) ? store_environment_get(r->ctx->apimgt, r->pool, id, e)
					 : APIM_ENOTFOUND;
	if (rc != APIM_OK)
		http_reply_store_error(r, rc,
					arena_sprintf(r->pool, "Gateway environment '%s'", id));
	return rc;
}

void admin_environment_list(http_req *r)
{
	int64_t limit, offset, total = 0;
	store_environment *es = NULL;
	size_t n = 0;
	if (admin_paging(r, &limit, &offset) != 0)
		return;
	apim_rc rc = store_environment_list(r->ctx->apimgt, r->pool, offset, limit, &es, &n, &total);
	if (rc != APIM_OK) {
		http_reply_store_error(r, rc, "Gateway environments");
		return;
	}
	json_t *list = json_array();
	for (size_t i = 0; i < n; i++)
		json_array_append_new(list, env_render(&es[i]));
	http_reply_list(r, list, total, limit, offset);
}

void admin_environment_create(http_req *r)
{
	json_t *body = http_json_body(r, JSON_OBJECT);
	if (body == NULL)
		return;
	json_t *name = json_object_get(body, "name");
	if (name == NULL || json_is_null(name)) {
		http_reply_error(r, 400, "'name' is required");
		return;
	}
	if (!json_is_string(name)) {
		http_reply_error(r, 400, "'name' must be a string");
		return;
	}
	const char *ename = arena_strdup(r->pool, json_string_value(name));
	char id[APIM_UUID_LEN + 1], *msg = NULL;
	apim_uuid(id);
	json_t *doc = env_build(r->pool, r->ctx->cfg, body, id, ename, 0, &msg);
	if (doc == NULL) {
		http_reply_error(r, 400, "%s", msg);
		return;
	}
	char *text = json_dumps(doc, JSON_COMPACT);
	int64_t now = apim_now_ms();
	store_environment e = {.id = id, .name = ename, .read_only = 0, .doc = text,
			       .created_ms = now, .updated_ms = now};
	apim_rc rc = text ? store_environment_create(r->ctx->apimgt, &e) : APIM_ENOMEM;
	free(text);
	if (rc != APIM_OK) {
		json_decref(doc);
		if (rc == APIM_ECONFLICT)
			http_reply_error(r, 409,
					 "A gateway environment named '%s' already exists; choose "
					 "another name",
					 ename);
		else
			http_reply_store_error(r, rc, "Gateway environment");
		return;
	}
	http_set_header(r, "Location", arena_sprintf(r->pool, ADMIN_BASE "/environments/%s", id));
	http_reply_json(r, 201, doc);
}

void admin_environment_get(http_req *r)
{
	store_environment e;
	if (load(r, http_param(r, "environmentId"), &e) != APIM_OK)
		return;
	http_reply_json(r, 200, env_render(&e));
}

void admin_environment_update(http_req *r)
{
	json_t *body = http_json_body(r, JSON_OBJECT);
	if (body == NULL)
		return;
	store_environment e;
	if (load(r, http_param(r, "environmentId"), &e) != APIM_OK)
		return;
	if (e.read_only) {
		http_reply_error(r, 403,
				 "The gateway environment '%s' is read-only: it is defined by the "
				 "server and cannot be changed",
				 e.name);
		return;
	}
	json_t *cur = env_render(&e);
	int ok = http_check_if_match(r, cur);
	json_decref(cur);
	if (ok != 0)
		return;
	json_t *name = json_object_get(body, "name");
	if (name != NULL && !json_is_null(name) &&
	    (!json_is_string(name) || strcmp(json_string_value(name), e.name) != 0)) {
		http_reply_error(r, 400,
				 "'name' cannot be changed (the environment is '%s'); change "
				 "displayName instead",
				 e.name);
		return;
	}
	if (name == NULL || json_is_null(name))
		json_object_set_new(body, "name", json_string(e.name));
	const char *bid = admin_json_str(body, "id");
	if (bid != NULL && strcmp(bid, e.id) != 0) {
		http_reply_error(r, 400,
				 "'id' in the body does not match the environment in the path ('%s')",
				 e.id);
		return;
	}
	char *msg = NULL;
	json_t *doc = env_build(r->pool, r->ctx->cfg, body, e.id, e.name, 0, &msg);
	if (doc == NULL) {
		http_reply_error(r, 400, "%s", msg);
		return;
	}
	char *text = json_dumps(doc, JSON_COMPACT);
	e.doc = text;
	e.updated_ms = apim_now_ms();
	apim_rc rc = text ? store_environment_update(r->ctx->apimgt, &e) : APIM_ENOMEM;
	free(text);
	if (rc != APIM_OK) {
		json_decref(doc);
		http_reply_store_error(r, rc,
					arena_sprintf(r->pool, "Gateway environment '%s'", e.id));
		return;
	}
	http_reply_json(r, 200, doc);
}

typedef struct usage_guard {
	apim_ctx *ctx;
	const char *name;
	int64_t count;
	apim_rc rc;
} usage_guard;

static apim_rc usage_check(void *arg)
{
	usage_guard *g = arg;
	g->rc = publisher_environment_usage(g->ctx, g->name, &g->count);
	if (g->rc != APIM_OK)
		return g->rc;
	return g->count > 0 ? APIM_ECONFLICT : APIM_OK;
}

void admin_environment_delete(http_req *r)
{
	store_environment e;
	if (load(r, http_param(r, "environmentId"), &e) != APIM_OK)
		return;
	if (e.read_only) {
		http_reply_error(r, 403,
				 "The gateway environment '%s' is read-only: it is defined by the "
				 "server and cannot be deleted",
				 e.name);
		return;
	}
	usage_guard g = {.ctx = r->ctx, .name = e.name};
	apim_rc rc = store_environment_delete(r->ctx->apimgt, e.id, usage_check, &g);
	if (rc == APIM_ECONFLICT && g.rc == APIM_OK) {
		http_reply_error(r, 409,
				 "Gateway environment '%s' has %lld API revision deployment(s); "
				 "undeploy them before deleting it",
				 e.name, (long long)g.count);
		return;
	}
	if (rc != APIM_OK) {
		http_reply_store_error(r, rc,
					arena_sprintf(r->pool, "Gateway environment '%s'", e.id));
		return;
	}
	http_reply_empty(r, 200);
}

apim_rc admin_environment_exists(apim_ctx *ctx, const char *name, int *exists)
{
	*exists = 0;
	if (ctx->apimgt == NULL || name == NULL)
		return APIM_EINVAL;
	arena *pool = arena_create(1024);
	store_environment e;
	apim_rc rc = store_environment_get_by_name(ctx->apimgt, pool, name, &e);
	arena_destroy(pool);
	if (rc == APIM_ENOTFOUND)
		return APIM_OK;
	if (rc == APIM_OK)
		*exists = 1;
	return rc;
}

apim_rc admin_environment_seed(apim_ctx *ctx)
{
	arena *pool = arena_create(4096);
	char id[APIM_UUID_LEN + 1], *msg = NULL, *text = NULL;
	apim_rc rc = APIM_EINTERNAL;
	apim_uuid(id);
	json_t *body = json_pack(
		"{s:s, s:s, s:s, s:s, s:[{s:s, s:s}]}", "name", "Default", "displayName", "Default",
		"type", "hybrid", "description",
		"This is a hybrid gateway that handles both production and sandbox token traffic.",
		"vhosts", "host",
		ctx->cfg && ctx->cfg->server_hostname ? ctx->cfg->server_hostname : "localhost",
		"httpContext", "");
	json_t *doc = body ? env_build(pool, ctx->cfg, body, id, "Default", 1, &msg) : NULL;
	json_decref(body);
	text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
	json_decref(doc);
	if (text != NULL) {
		int64_t now = apim_now_ms();
		store_environment e = {.id = id, .name = "Default", .read_only = 1, .doc = text,
				       .created_ms = now, .updated_ms = now};
		rc = store_environment_seed(ctx->apimgt, "default-environment", &e);
	}
	free(text);
	arena_destroy(pool);
	return rc;
}
