/*
 * publisher_openapi.c: the API's OpenAPI 3 definition.
 *
 * GET /apis/{apiId}/swagger answers the stored definition kept in step with
 * the API (paths rebuilt from the operations, keeping what the stored
 * definition said about each operation; info, scopes and x-wso2-*
 * extensions from the API), or one generated from the API when none was
 * stored. PUT replaces the definition and re-derives the operations (and
 * scopes) from its paths; POST /apis/import-openapi creates an API from a
 * definition plus additionalProperties.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "auth/auth.h"
#include "common/ctx.h"
#include "common/log.h"
#include "publisher/publisher_internal.h"

static const char *const oas_methods[] = {"get", "post", "put", "patch", "delete", "head",
					  "options"};

static const char *x_auth_type(const char *auth)
{
	if (strcmp(auth, "Any") == 0)
		return "Application & Application User";
	return auth;
}

/* x-wso2-production-endpoints / sandbox from endpointConfig. */
static json_t *wso2_endpoints(const json_t *ep, const char *which, const char *fo_key)
{
	json_t *e = json_object_get(ep, which);
	if (e == NULL)
		return NULL;
	const char *type = json_string_value(json_object_get(ep, "endpoint_type"));
	json_t *urls = json_array();
	if (json_is_array(e)) {
		size_t i;
		json_t *x;
		json_array_foreach(e, i, x)
			json_array_append(urls, json_object_get(x, "url"));
	} else {
		json_array_append(urls, json_object_get(e, "url"));
	}
	if (type != NULL && strcmp(type, "failover") == 0) {
		size_t i;
		json_t *x;
		json_array_foreach(json_object_get(ep, fo_key), i, x)
			json_array_append(urls, json_object_get(x, "url"));
	}
	const char *t = type == NULL ? "http"
			: strcmp(type, "load_balance") == 0 ? "loadbalance"
			: strcmp(type, "failover") == 0 ? "failover"
							: "http";
	return json_pack("{s:o, s:s}", "urls", urls, "type", t);
}

/* Path parameters of a template, as OpenAPI parameter objects. */
static json_t *path_params(const char *target)
{
	json_t *a = json_array();
	const char *p = target;
	while ((p = strchr(p, '{')) != NULL) {
		const char *e = strchr(p, '}');
		if (e == NULL)
			break;
		char name[64];
		size_t n = (size_t)(e - p - 1);
		if (n >= sizeof(name))
			n = sizeof(name) - 1;
		memcpy(name, p + 1, n);
		name[n] = '\0';
		json_array_append_new(a, json_pack("{s:s, s:s, s:b, s:s, s:b, s:{s:s}}", "name",
						   name, "in", "path", "required", 1, "style",
						   "simple", "explode", 0, "schema", "type",
						   "string"));
		p = e + 1;
	}
	return a;
}

json_t *publisher_openapi_for(const store_api *a, const json_t *doc)
{
	json_t *o = a->swagger ? publisher_json_parse(a->swagger) : NULL;
	json_t *old_paths = NULL;
	if (!json_is_object(o)) {
		json_decref(o);
		o = json_object();
	}
	if (!json_is_string(json_object_get(o, "openapi")))
		json_object_set_new(o, "openapi", json_string("3.0.1"));
	json_t *info = json_object_get(o, "info");
	if (!json_is_object(info)) {
		info = json_object();
		json_object_set_new(o, "info", info);
	}
	json_object_set_new(info, "title", json_string(a->name));
	json_object_set_new(info, "version", json_string(a->version));
	const char *desc = json_string_value(json_object_get(doc, "description"));
	if (desc != NULL && json_object_get(info, "description") == NULL)
		json_object_set_new(info, "description", json_string(desc));
	if (!json_is_array(json_object_get(o, "servers")))
		json_object_set_new(o, "servers", json_pack("[{s:s}]", "url", "/"));
	if (json_object_get(o, "security") == NULL)
		json_object_set_new(o, "security", json_pack("[{s:[]}]", "default"));

	old_paths = json_object_get(o, "paths");
	json_incref(old_paths);
	json_t *paths = json_object();
	size_t i;
	json_t *op;
	json_array_foreach(json_object_get(doc, "operations"), i, op) {
		const char *target = json_string_value(json_object_get(op, "target"));
		const char *verb = json_string_value(json_object_get(op, "verb"));
		char method[16];
		size_t k;
		for (k = 0; verb[k] && k < sizeof(method) - 1; k++)
			method[k] = (char)tolower((unsigned char)verb[k]);
		method[k] = '\0';
		json_t *old_pi = json_object_get(old_paths, target);
		json_t *pi = json_object_get(paths, target);
		if (pi == NULL) {
			pi = json_object();
			const char *key;
			json_t *v;
			/* keep path-level fields (parameters, summary, ...) */
			json_object_foreach(old_pi, key, v) {
				int is_method = 0;
				for (size_t m = 0; m < sizeof(oas_methods) / sizeof(oas_methods[0]); m++)
					if (strcmp(key, oas_methods[m]) == 0)
						is_method = 1;
				if (!is_method && strcmp(key, "trace") != 0)
					json_object_set(pi, key, v);
			}
			json_object_set_new(paths, target, pi);
		}
		json_t *old_op = json_object_get(old_pi, method);
		json_t *oo = json_is_object(old_op) ? json_deep_copy(old_op) : json_object();
		if (json_object_get(oo, "responses") == NULL)
			json_object_set_new(oo, "responses",
					    json_pack("{s:{s:s}}", "200", "description", "OK"));
		if (!json_is_object(old_op) && strchr(target, '{') != NULL &&
		    json_object_get(pi, "parameters") == NULL)
			json_object_set_new(oo, "parameters", path_params(target));
		json_t *scopes = json_deep_copy(json_object_get(op, "scopes"));
		json_object_set_new(oo, "security",
				    json_pack("[{s:o}]", "default", scopes ? scopes : json_array()));
		json_object_set_new(oo, "x-auth-type",
				    json_string(x_auth_type(
					    json_string_value(json_object_get(op, "authType")))));
		json_object_set(oo, "x-throttling-tier", json_object_get(op, "throttlingPolicy"));
		json_object_set_new(pi, method, oo);
	}
	json_decref(old_paths);
	json_object_set_new(o, "paths", paths);

	/* components.securitySchemes.default: the API's scopes */
	json_t *comp = json_object_get(o, "components");
	if (!json_is_object(comp)) {
		comp = json_object();
		json_object_set_new(o, "components", comp);
	}
	json_t *schemes = json_object_get(comp, "securitySchemes");
	if (!json_is_object(schemes)) {
		schemes = json_object();
		json_object_set_new(comp, "securitySchemes", schemes);
	}
	json_t *sc_obj = json_object(), *bindings = json_object();
	json_t *s;
	json_array_foreach(json_object_get(doc, "scopes"), i, s) {
		json_t *sc = json_object_get(s, "scope");
		const char *name = json_string_value(json_object_get(sc, "name"));
		const char *d = json_string_value(json_object_get(sc, "description"));
		json_object_set_new(sc_obj, name, json_string(d ? d : ""));
		char roles[1024] = "";
		size_t used = 0, j;
		json_t *b;
		json_array_foreach(json_object_get(sc, "bindings"), j, b) {
			int w = snprintf(roles + used, sizeof(roles) - used, "%s%s", used ? "," : "",
					 json_string_value(b));
			if (w > 0 && (size_t)w < sizeof(roles) - used)
				used += (size_t)w;
		}
		json_object_set_new(bindings, name, json_string(roles));
	}
	json_object_set_new(schemes, "default",
			    json_pack("{s:s, s:{s:{s:s, s:o, s:o}}}", "type", "oauth2", "flows",
				      "implicit", "authorizationUrl", "https://test.com", "scopes",
				      sc_obj, "x-scopes-bindings", bindings));

	/* the gateway-facing extensions */
	json_object_set_new(o, "x-wso2-auth-header",
			    json_string(json_string_value(json_object_get(doc, "authorizationHeader"))
						? json_string_value(
							  json_object_get(doc, "authorizationHeader"))
						: "Authorization"));
	json_object_set_new(o, "x-wso2-cors", json_deep_copy(json_object_get(doc, "corsConfiguration")));
	json_t *ep = json_object_get(doc, "endpointConfig");
	json_t *pe = wso2_endpoints(ep, "production_endpoints", "production_failovers");
	json_t *se = wso2_endpoints(ep, "sandbox_endpoints", "sandbox_failovers");
	if (pe)
		json_object_set_new(o, "x-wso2-production-endpoints", pe);
	else
		json_object_del(o, "x-wso2-production-endpoints");
	if (se)
		json_object_set_new(o, "x-wso2-sandbox-endpoints", se);
	else
		json_object_del(o, "x-wso2-sandbox-endpoints");
	json_object_set_new(o, "x-wso2-basePath", json_string(a->full_context));
	json_object_set_new(o, "x-wso2-transports",
			    json_deep_copy(json_object_get(doc, "transport")));
	const char *apip = json_string_value(json_object_get(doc, "apiThrottlingPolicy"));
	if (apip != NULL)
		json_object_set_new(o, "x-throttling-tier", json_string(apip));
	else
		json_object_del(o, "x-throttling-tier");
	return o;
}

apim_rc publisher_openapi_parse(const char *text, size_t len, json_t **out, char *err,
				size_t errlen)
{
	json_t *o = NULL;
	*out = NULL;
	size_t i = 0;
	if (len >= 3 && (unsigned char)text[0] == 0xEF && (unsigned char)text[1] == 0xBB &&
	    (unsigned char)text[2] == 0xBF)
		i = 3; /* UTF-8 byte order mark */
	while (i < len && isspace((unsigned char)text[i]))
		i++;
	if (i == len) {
		snprintf(err, errlen, "The API definition is empty");
		return APIM_EINVAL;
	}
	if (text[i] == '{') {
		json_error_t e;
		o = json_loadb(text + i, len - i, 0, &e);
		if (o == NULL) {
			snprintf(err, errlen, "The API definition is not valid JSON (line %d, column "
					      "%d: %s)",
				 e.line, e.column, e.text);
			return APIM_EINVAL;
		}
	} else {
		char yerr[256];
		apim_rc rc = publisher_yaml_to_json(text + i, len - i, &o, yerr, sizeof(yerr));
		if (rc != APIM_OK) {
			snprintf(err, errlen, "The API definition is neither JSON nor valid YAML: %s",
				 yerr);
			return rc == APIM_ENOMEM ? rc : APIM_EINVAL;
		}
	}
	if (!json_is_object(o)) {
		json_decref(o);
		snprintf(err, errlen, "The API definition must be an object with openapi, info and "
				      "paths");
		return APIM_EINVAL;
	}
	const char *ver = json_string_value(json_object_get(o, "openapi"));
	if (ver == NULL) {
		int swagger2 = json_object_get(o, "swagger") != NULL;
		json_decref(o);
		snprintf(err, errlen, swagger2 ? "Swagger 2.0 definitions are not supported: convert "
						 "the definition to OpenAPI 3 (openapi: 3.0.x)"
					       : "The API definition has no 'openapi' version: only "
						 "OpenAPI 3 (openapi: 3.0.x or 3.1.x) is supported");
		return APIM_EINVAL;
	}
	if (strncmp(ver, "3.", 2) != 0) {
		snprintf(err, errlen, "OpenAPI version %s is not supported: use 3.0.x or 3.1.x", ver);
		json_decref(o);
		return APIM_EINVAL;
	}
	if (!json_is_object(json_object_get(o, "info"))) {
		json_decref(o);
		snprintf(err, errlen, "The API definition has no 'info' object");
		return APIM_EINVAL;
	}
	if (!json_is_object(json_object_get(o, "paths"))) {
		json_decref(o);
		snprintf(err, errlen, "The API definition has no 'paths' object");
		return APIM_EINVAL;
	}
	*out = o;
	return APIM_OK;
}

/* The API scopes an oauth2 security scheme declares. */
static void scheme_scopes(json_t *scheme, json_t *out)
{
	const char *flow_name;
	json_t *flow;
	json_t *bindings = json_object_get(scheme, "x-scopes-bindings");
	json_object_foreach(json_object_get(scheme, "flows"), flow_name, flow) {
		const char *name;
		json_t *d;
		json_t *fb = json_object_get(flow, "x-scopes-bindings");
		json_object_foreach(json_object_get(flow, "scopes"), name, d) {
			size_t i;
			json_t *x;
			int dup = 0;
			json_array_foreach(out, i, x)
				if (strcmp(json_string_value(json_object_get(
						   json_object_get(x, "scope"), "name")),
					   name) == 0)
					dup = 1;
			if (dup)
				continue;
			json_t *roles = json_array();
			json_t *b = json_object_get(fb ? fb : bindings, name);
			if (json_is_string(b)) {
				char *copy = strdup(json_string_value(b)), *save = NULL;
				for (char *t = copy ? strtok_r(copy, ",", &save) : NULL; t;
				     t = strtok_r(NULL, ",", &save)) {
					while (*t == ' ')
						t++;
					if (*t)
						json_array_append_new(roles, json_string(t));
				}
				free(copy);
			} else if (json_is_array(b)) {
				size_t j;
				json_t *y;
				json_array_foreach(b, j, y)
					if (json_is_string(y))
						json_array_append(roles, y);
			}
			json_array_append_new(
				out, json_pack("{s:{s:s, s:s, s:s, s:o}, s:b}", "scope", "name", name,
					       "displayName", name, "description",
					       json_is_string(d) ? json_string_value(d) : "",
					       "bindings", roles, "shared", 0));
		}
	}
}

static int declared(json_t *scopes, const char *name)
{
	size_t i;
	json_t *x;
	json_array_foreach(scopes, i, x)
		if (strcmp(json_string_value(json_object_get(json_object_get(x, "scope"), "name")),
			   name) == 0)
			return 1;
	return 0;
}

apim_rc publisher_openapi_operations(const json_t *oas, json_t **ops_out, json_t **scopes_out,
				     char *err, size_t errlen)
{
	json_t *ops = json_array(), *scopes = json_array();
	const char *sname;
	json_t *scheme;
	json_object_foreach(json_object_get(json_object_get(oas, "components"), "securitySchemes"),
			    sname, scheme) {
		const char *type = json_string_value(json_object_get(scheme, "type"));
		if (type != NULL && strcmp(type, "oauth2") == 0)
			scheme_scopes(scheme, scopes);
	}
	const char *path;
	json_t *pi;
	json_object_foreach(json_object_get(oas, "paths"), path, pi) {
		if (!json_is_object(pi)) {
			snprintf(err, errlen, "paths.%s must be an object", path);
			goto bad;
		}
		for (size_t m = 0; m < sizeof(oas_methods) / sizeof(oas_methods[0]); m++) {
			json_t *oo = json_object_get(pi, oas_methods[m]);
			if (oo == NULL)
				continue;
			char verb[16];
			size_t k;
			for (k = 0; oas_methods[m][k]; k++)
				verb[k] = (char)toupper((unsigned char)oas_methods[m][k]);
			verb[k] = '\0';
			if (!json_is_object(oo)) {
				snprintf(err, errlen, "paths.%s.%s must be an object", path,
					 oas_methods[m]);
				goto bad;
			}
			json_t *op = json_pack("{s:s, s:s}", "target", path, "verb", verb);
			json_t *xa = json_object_get(oo, "x-auth-type");
			if (json_is_string(xa)) {
				const char *at = publisher_dto_auth_type(json_string_value(xa));
				if (at == NULL) {
					snprintf(err, errlen, "x-auth-type '%s' of %s %s is unknown: use "
							      "Application & Application User, "
							      "Application, Application User or None",
						 json_string_value(xa), verb, path);
					json_decref(op);
					goto bad;
				}
				json_object_set_new(op, "authType", json_string(at));
			}
			json_t *xt = json_object_get(oo, "x-throttling-tier");
			if (json_is_string(xt))
				json_object_set(op, "throttlingPolicy", xt);
			json_t *opscopes = json_array();
			size_t i;
			json_t *req;
			json_array_foreach(json_object_get(oo, "security"), i, req) {
				const char *scheme_name;
				json_t *list;
				json_object_foreach(req, scheme_name, list) {
					size_t j;
					json_t *s;
					json_array_foreach(list, j, s) {
						const char *name = json_string_value(s);
						if (name == NULL)
							continue;
						if (!declared(scopes, name)) {
							snprintf(err, errlen,
								 "%s %s requires scope %s, which no "
								 "oauth2 security scheme in "
								 "components.securitySchemes declares",
								 verb, path, name);
							json_decref(opscopes);
							json_decref(op);
							goto bad;
						}
						json_array_append(opscopes, s);
					}
				}
			}
			json_object_set_new(op, "scopes", opscopes);
			json_array_append_new(ops, op);
		}
	}
	*ops_out = ops;
	*scopes_out = scopes;
	return APIM_OK;
bad:
	json_decref(ops);
	json_decref(scopes);
	return APIM_EINVAL;
}

/* ---------- handlers ---------- */

static void h_get(http_req *r)
{
	store_api a;
	if (publisher_load_api(r, http_param(r, "apiId"), &a) != 0)
		return;
	json_t *doc = publisher_json_parse(a.doc);
	json_t *o = publisher_openapi_for(&a, doc);
	json_decref(doc);
	http_reply_json(r, 200, o);
}

/*
 * The definition text of a request: the multipart field (field, or "file"),
 * or the raw body. Answers 400/415 and returns NULL when there is none.
 */
static const char *definition_text(http_req *r, const char *field, size_t *len,
				   publisher_part **parts, size_t *nparts)
{
	const char *ct = http_header(r, "Content-Type");
	char err[256];
	*parts = NULL;
	*nparts = 0;
	if (publisher_multipart_is(ct)) {
		apim_rc rc = publisher_multipart_parse(r->pool, ct, r->body, r->body_len, parts,
						       nparts, err, sizeof(err));
		if (rc != APIM_OK) {
			http_reply_error(r, rc == APIM_EMEDIA ? 415 : 400, "%s", err);
			return NULL;
		}
		const publisher_part *p = publisher_multipart_get(*parts, *nparts, field);
		if (p == NULL)
			p = publisher_multipart_get(*parts, *nparts, "file");
		if (p == NULL)
			p = publisher_multipart_get(*parts, *nparts, "inlineAPIDefinition");
		if (p == NULL) {
			if (publisher_multipart_get(*parts, *nparts, "url") != NULL)
				http_reply_error(r, 400, "Fetching a definition from 'url' is not "
							 "supported: upload it as '%s' or 'file'",
						 field);
			else
				http_reply_error(r, 400, "The form has no '%s' (or 'file') field with "
							 "the OpenAPI definition",
						 field);
			return NULL;
		}
		*len = p->len;
		return p->data;
	}
	if (r->body == NULL || r->body_len == 0) {
		http_reply_error(r, 400, "The request has no OpenAPI definition: send it as the "
					 "multipart field '%s' or as the JSON/YAML body",
				 field);
		return NULL;
	}
	*len = r->body_len;
	return r->body;
}

static void h_put(http_req *r)
{
	store_api a;
	char err[512];
	size_t len = 0, nparts;
	publisher_part *parts;
	if (publisher_load_api(r, http_param(r, "apiId"), &a) != 0)
		return;
	if (publisher_require_modify(r, &a, 0) != 0)
		return;
	json_t *base = publisher_json_parse(a.doc);
	json_t *cur = publisher_openapi_for(&a, base);
	int ok = http_check_if_match(r, cur) == 0;
	json_decref(cur);
	if (!ok) {
		json_decref(base);
		return;
	}
	const char *text = definition_text(r, "apiDefinition", &len, &parts, &nparts);
	if (text == NULL) {
		json_decref(base);
		return;
	}
	json_t *oas = NULL, *ops = NULL, *scopes = NULL, *doc = NULL;
	apim_rc rc = publisher_openapi_parse(text, len, &oas, err, sizeof(err));
	if (rc == APIM_OK)
		rc = publisher_openapi_operations(oas, &ops, &scopes, err, sizeof(err));
	if (rc != APIM_OK) {
		json_decref(oas);
		json_decref(base);
		http_reply_error(r, 400, "%s", err);
		return;
	}
	json_t *in = json_object();
	json_object_set_new(in, "operations", ops);
	if (json_array_size(scopes) > 0 ||
	    json_object_get(json_object_get(oas, "components"), "securitySchemes") != NULL)
		json_object_set_new(in, "scopes", scopes);
	else
		json_decref(scopes);
	rc = publisher_dto_api(in, base, &doc, err, sizeof(err));
	json_decref(in);
	json_decref(base);
	if (rc != APIM_OK) {
		json_decref(oas);
		http_reply_error(r, 400, "The definition does not make a valid API: %s", err);
		return;
	}
	const char *swagger = publisher_json_text(r->pool, oas);
	json_decref(oas);
	if (publisher_api_save(r, &a, doc, swagger) != 0)
		return;
	json_t *d2 = publisher_json_parse(a.doc);
	json_t *o = publisher_openapi_for(&a, d2);
	json_decref(d2);
	http_reply_json(r, 200, o);
}

/* A production endpoint from the definition's first absolute server URL. */
static json_t *endpoint_from_servers(const json_t *oas)
{
	const char *url = json_string_value(
		json_object_get(json_array_get(json_object_get(oas, "servers"), 0), "url"));
	char err[128];
	if (url == NULL || publisher_dto_url(url, err, sizeof(err)) != 0 || strchr(url, '{'))
		return NULL;
	return json_pack("{s:s, s:{s:s}}", "endpoint_type", "http", "production_endpoints", "url",
			 url);
}

static void h_import(http_req *r)
{
	char err[512];
	size_t len = 0, nparts;
	publisher_part *parts;
	const char *ct = http_header(r, "Content-Type");
	if (!publisher_multipart_is(ct)) {
		http_reply_error(r, 415, "Send multipart/form-data with the definition as 'file' (or "
					 "'inlineAPIDefinition') and the API as 'additionalProperties'");
		return;
	}
	const char *text = definition_text(r, "file", &len, &parts, &nparts);
	if (text == NULL)
		return;
	json_t *oas = NULL, *ops = NULL, *scopes = NULL, *in = NULL;
	apim_rc rc = publisher_openapi_parse(text, len, &oas, err, sizeof(err));
	if (rc == APIM_OK)
		rc = publisher_openapi_operations(oas, &ops, &scopes, err, sizeof(err));
	if (rc != APIM_OK) {
		json_decref(oas);
		http_reply_error(r, 400, "%s", err);
		return;
	}
	const publisher_part *ap = publisher_multipart_get(parts, nparts, "additionalProperties");
	if (ap != NULL) {
		json_error_t e;
		in = json_loadb(ap->data, ap->len, JSON_REJECT_DUPLICATES, &e);
		if (!json_is_object(in)) {
			http_reply_error(r, 400, "'additionalProperties' must be a JSON object (the "
						 "API's name, version, context, endpointConfig, ...)%s%s",
					 in ? "" : ": ", in ? "" : e.text);
			json_decref(in);
			in = NULL;
			goto out;
		}
	} else {
		in = json_object();
	}
	json_t *info = json_object_get(oas, "info");
	if (json_object_get(in, "name") == NULL && json_is_string(json_object_get(info, "title")))
		json_object_set(in, "name", json_object_get(info, "title"));
	if (json_object_get(in, "version") == NULL) {
		json_t *v = json_object_get(info, "version");
		if (json_is_string(v))
			json_object_set(in, "version", v);
		else if (json_is_number(v)) {
			char buf[32];
			snprintf(buf, sizeof(buf), "%g", json_number_value(v));
			json_object_set_new(in, "version", json_string(buf));
		}
	}
	if (json_object_get(in, "description") == NULL &&
	    json_is_string(json_object_get(info, "description")))
		json_object_set(in, "description", json_object_get(info, "description"));
	if (json_object_get(in, "context") == NULL) {
		http_reply_error(r, 400, "'additionalProperties' must give the API's context (and "
					 "name and version when the definition's info lacks them)");
		goto out;
	}
	if (json_object_get(in, "operations") == NULL ||
	    json_array_size(json_object_get(in, "operations")) == 0)
		json_object_set(in, "operations", ops);
	if (json_object_get(in, "scopes") == NULL)
		json_object_set(in, "scopes", scopes);
	if (json_object_get(in, "endpointConfig") == NULL) {
		json_t *ep = endpoint_from_servers(oas);
		if (ep != NULL)
			json_object_set_new(in, "endpointConfig", ep);
	}
	publisher_api_create(r, in, publisher_json_text(r->pool, oas));
out:
	json_decref(in);
	json_decref(ops);
	json_decref(scopes);
	json_decref(oas);
}

static const http_route openapi_routes[] = {
	{"GET", PUB_BASE "/apis/{apiId}/swagger", h_get, PUB_SCOPES_VIEW, 0},
	{"PUT", PUB_BASE "/apis/{apiId}/swagger", h_put, PUB_SCOPES_CREATE, HTTP_RAW_BODY},
	{"POST", PUB_BASE "/apis/import-openapi", h_import, PUB_SCOPES_CREATE, HTTP_RAW_BODY},
};

void publisher_openapi_routes(http_server *s)
{
	http_server_routes(s, openapi_routes, sizeof(openapi_routes) / sizeof(openapi_routes[0]));
}
