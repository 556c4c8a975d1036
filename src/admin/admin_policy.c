/*
 * admin_policy.c: rate-limit policies of the Admin API, every level:
 * application, subscription, advanced (API/resource, with conditional
 * groups) and custom rules (Siddhi query + key template). Bodies are checked
 * against the reference's schemas (admin_schema tables below) and then for
 * what a table cannot say (IP ranges, key templates, matching sub-objects);
 * the stored document is the canonical rendering that GET returns.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "admin/admin.h"
#include "admin/admin_internal.h"
#include "admin/admin_schema.h"
#include "admin/admin_validate.h"
#include "common/util.h"
#include "publisher/publisher.h"
#include "store/store_policy.h"
#include "trafficmanager/tm_custom.h"

#define POLICY_NAME_MAX 60
#define ERRLEN 512

/* ------------------------------------------------------------- schemas */

static const char *const limit_types[] = {"REQUESTCOUNTLIMIT", "BANDWIDTHLIMIT",
					  "EVENTCOUNTLIMIT", NULL};
static const char *const data_units[] = {"KB", "MB", "GB", NULL};
static const char *const burst_units[] = {"sec", "min", NULL};
static const char *const billing_plans[] = {"FREE", "COMMERCIAL", NULL};
static const char *const permission_types[] = {"ALLOW", "DENY", NULL};
static const char *const monetization_plans[] = {"FIXEDRATE", "DYNAMICRATE", NULL};
static const char *const condition_types[] = {"IPCONDITION", "HEADERCONDITION",
					      "QUERYPARAMETERCONDITION", "JWTCLAIMSCONDITION",
					      NULL};
static const char *const ip_condition_types[] = {"IPSPECIFIC", "IPRANGE", NULL};

static const char *const type_application[] = {"ApplicationThrottlePolicy", NULL};
static const char *const type_subscription[] = {"SubscriptionThrottlePolicy", NULL};
static const char *const type_advanced[] = {"AdvancedThrottlePolicy", NULL};
static const char *const type_custom[] = {"CustomRule", NULL};

#define REQ SCHEMA_REQUIRED
#define NONEMPTY SCHEMA_NONEMPTY
#define POSITIVE .min = 1, .max = INT64_MAX
#define POSITIVE32 .min = 1, .max = INT32_MAX
#define NATURAL32 .min = 0, .max = INT32_MAX

static const schema_field request_count_fields[] = {
	{.name = "timeUnit", .type = SCHEMA_STRING, .flags = REQ, .enums = admin_time_units},
	{.name = "unitTime", .type = SCHEMA_INT, .flags = REQ, POSITIVE32},
	{.name = "requestCount", .type = SCHEMA_INT, .flags = REQ, POSITIVE},
	{.name = NULL},
};
static const schema_field bandwidth_fields[] = {
	{.name = "timeUnit", .type = SCHEMA_STRING, .flags = REQ, .enums = admin_time_units},
	{.name = "unitTime", .type = SCHEMA_INT, .flags = REQ, POSITIVE32},
	{.name = "dataAmount", .type = SCHEMA_INT, .flags = REQ, POSITIVE},
	{.name = "dataUnit", .type = SCHEMA_STRING, .flags = REQ, .enums = data_units},
	{.name = NULL},
};
static const schema_field event_count_fields[] = {
	{.name = "timeUnit", .type = SCHEMA_STRING, .flags = REQ, .enums = admin_time_units},
	{.name = "unitTime", .type = SCHEMA_INT, .flags = REQ, POSITIVE32},
	{.name = "eventCount", .type = SCHEMA_INT, .flags = REQ, POSITIVE},
	{.name = NULL},
};
static const schema_field limit_fields[] = {
	{.name = "type", .type = SCHEMA_STRING, .flags = REQ, .enums = limit_types},
	{.name = "requestCount", .type = SCHEMA_OBJECT, .flags = 0, .fields = request_count_fields},
	{.name = "bandwidth", .type = SCHEMA_OBJECT, .flags = 0, .fields = bandwidth_fields},
	{.name = "eventCount", .type = SCHEMA_OBJECT, .flags = 0, .fields = event_count_fields},
	{.name = NULL},
};
static const schema_field burst_fields[] = {
	{.name = "rateLimitCount", .type = SCHEMA_INT, .flags = 0, NATURAL32},
	{.name = "rateLimitTimeUnit", .type = SCHEMA_STRING, .flags = 0, .enums = burst_units},
	{.name = NULL},
};
static const schema_field attribute_fields[] = {
	{.name = "name", .type = SCHEMA_STRING, .flags = REQ | NONEMPTY, .max = 255},
	{.name = "value", .type = SCHEMA_STRING, .flags = REQ, .max = 1024},
	{.name = NULL},
};
static const schema_field permission_fields[] = {
	{.name = "permissionType", .type = SCHEMA_STRING, .flags = REQ, .enums = permission_types},
	{.name = "roles", .type = SCHEMA_ARRAY, .flags = REQ | NONEMPTY, .item = SCHEMA_STRING},
	{.name = NULL},
};
static const schema_field monetization_fields[] = {
	{.name = "monetizationPlan", .type = SCHEMA_STRING, .flags = 0, .enums = monetization_plans},
	{.name = "properties", .type = SCHEMA_MAP, .flags = 0},
	{.name = NULL},
};
static const schema_field header_cond_fields[] = {
	{.name = "headerName", .type = SCHEMA_STRING, .flags = REQ | NONEMPTY, .max = 256},
	{.name = "headerValue", .type = SCHEMA_STRING, .flags = REQ | NONEMPTY, .max = 1024},
	{.name = NULL},
};
static const schema_field query_cond_fields[] = {
	{.name = "parameterName", .type = SCHEMA_STRING, .flags = REQ | NONEMPTY, .max = 256},
	{.name = "parameterValue", .type = SCHEMA_STRING, .flags = REQ | NONEMPTY, .max = 1024},
	{.name = NULL},
};
static const schema_field jwt_cond_fields[] = {
	{.name = "claimUrl", .type = SCHEMA_STRING, .flags = REQ | NONEMPTY, .max = 1024},
	{.name = "attribute", .type = SCHEMA_STRING, .flags = REQ | NONEMPTY, .max = 1024},
	{.name = NULL},
};
static const schema_field ip_cond_fields[] = {
	{.name = "ipConditionType", .type = SCHEMA_STRING, .flags = REQ, .enums = ip_condition_types},
	{.name = "specificIP", .type = SCHEMA_STRING, .flags = 0},
	{.name = "startingIP", .type = SCHEMA_STRING, .flags = 0},
	{.name = "endingIP", .type = SCHEMA_STRING, .flags = 0},
	{.name = NULL},
};
static const schema_field condition_fields[] = {
	{.name = "type", .type = SCHEMA_STRING, .flags = REQ, .enums = condition_types},
	{.name = "invertCondition", .type = SCHEMA_BOOL, .flags = 0},
	{.name = "headerCondition", .type = SCHEMA_OBJECT, .flags = 0, .fields = header_cond_fields},
	{.name = "ipCondition", .type = SCHEMA_OBJECT, .flags = 0, .fields = ip_cond_fields},
	{.name = "jwtClaimsCondition", .type = SCHEMA_OBJECT, .flags = 0, .fields = jwt_cond_fields},
	{.name = "queryParameterCondition", .type = SCHEMA_OBJECT, .flags = 0, .fields = query_cond_fields},
	{.name = NULL},
};
static const schema_field group_fields[] = {
	{.name = "description", .type = SCHEMA_STRING, .flags = 0, .max = 1024},
	{.name = "conditions", .type = SCHEMA_ARRAY, .flags = REQ | NONEMPTY, .item = SCHEMA_OBJECT,
	 .fields = condition_fields},
	{.name = "limit", .type = SCHEMA_OBJECT, .flags = REQ, .fields = limit_fields},
	{.name = NULL},
};

#define BASE_FIELDS(types)                                                                 \
	{.name = "policyId", .type = SCHEMA_STRING, .flags = 0}, {.name = "policyName", .type = SCHEMA_STRING, .flags = 0},                  \
	{.name = "displayName", .type = SCHEMA_STRING, .flags = 0, .max = 512},                                    \
	{.name = "description", .type = SCHEMA_STRING, .flags = 0, .max = 1024}, {.name = "isDeployed", .type = SCHEMA_BOOL, .flags = 0},    \
	{.name = "type", .type = SCHEMA_STRING, .flags = 0, .enums = types}

static const schema_field application_fields[] = {
	BASE_FIELDS(type_application),
	{.name = "defaultLimit", .type = SCHEMA_OBJECT, .flags = REQ, .fields = limit_fields},
	{.name = "burstLimit", .type = SCHEMA_OBJECT, .flags = 0, .fields = burst_fields},
	{.name = NULL},
};
static const schema_field subscription_fields[] = {
	BASE_FIELDS(type_subscription),
	{.name = "graphQLMaxComplexity", .type = SCHEMA_INT, .flags = 0, NATURAL32},
	{.name = "graphQLMaxDepth", .type = SCHEMA_INT, .flags = 0, NATURAL32},
	{.name = "defaultLimit", .type = SCHEMA_OBJECT, .flags = REQ, .fields = limit_fields},
	{.name = "monetization", .type = SCHEMA_OBJECT, .flags = 0, .fields = monetization_fields},
	{.name = "rateLimitCount", .type = SCHEMA_INT, .flags = 0, NATURAL32},
	{.name = "rateLimitTimeUnit", .type = SCHEMA_STRING, .flags = 0, .enums = burst_units},
	{.name = "subscriberCount", .type = SCHEMA_INT, .flags = 0, NATURAL32},
	{.name = "customAttributes", .type = SCHEMA_ARRAY, .flags = 0, .item = SCHEMA_OBJECT, .fields = attribute_fields},
	{.name = "stopOnQuotaReach", .type = SCHEMA_BOOL, .flags = 0},
	{.name = "billingPlan", .type = SCHEMA_STRING, .flags = 0, .enums = billing_plans},
	{.name = "permissions", .type = SCHEMA_OBJECT, .flags = 0, .fields = permission_fields},
	{.name = NULL},
};
static const schema_field advanced_fields[] = {
	BASE_FIELDS(type_advanced),
	{.name = "defaultLimit", .type = SCHEMA_OBJECT, .flags = REQ, .fields = limit_fields},
	{.name = "conditionalGroups", .type = SCHEMA_ARRAY, .flags = 0, .item = SCHEMA_OBJECT, .fields = group_fields},
	{.name = NULL},
};
static const schema_field custom_fields[] = {
	BASE_FIELDS(type_custom),
	{.name = "siddhiQuery", .type = SCHEMA_STRING, .flags = REQ | NONEMPTY, .max = 65536},
	{.name = "keyTemplate", .type = SCHEMA_STRING, .flags = REQ | NONEMPTY, .max = 1024},
	{.name = NULL},
};

typedef struct level_info {
	const char *level;      /* path segment and store level */
	const char *type;       /* "type" of the rendering */
	const char *title;      /* for messages */
	const char *search;     /* type in /throttling/policies/search */
	const schema_field *fields;
} level_info;

static const level_info levels[] = {
	{"application", "ApplicationThrottlePolicy", "Application rate-limit policy", "app",
	 application_fields},
	{"subscription", "SubscriptionThrottlePolicy", "Subscription rate-limit policy", "sub",
	 subscription_fields},
	{"advanced", "AdvancedThrottlePolicy", "Advanced rate-limit policy", "api",
	 advanced_fields},
	{"custom", "CustomRule", "Custom rule", "global", custom_fields},
};
#define NLEVELS (sizeof(levels) / sizeof(levels[0]))

static const level_info *level_by_name(const char *name)
{
	for (size_t i = 0; i < NLEVELS; i++)
		if (strcmp(levels[i].level, name) == 0)
			return &levels[i];
	return NULL;
}

/* The level named by the route's template (".../policies/<level>..."). */
static const level_info *level_of(http_req *r)
{
	static const char key[] = "/throttling/policies/";
	const char *p = strstr(r->route->path, key);
	if (p == NULL)
		return NULL;
	p += sizeof(key) - 1;
	for (size_t i = 0; i < NLEVELS; i++) {
		size_t n = strlen(levels[i].level);
		if (strncmp(p, levels[i].level, n) == 0 && (p[n] == '\0' || p[n] == '/'))
			return &levels[i];
	}
	return NULL;
}

/* ----------------------------------------------------------- rendering */

static json_t *str_or_null(const char *s)
{
	return s ? json_string(s) : json_null();
}

/* {timeUnit, unitTime, <count field>[, dataUnit]} of a checked limit part. */
static json_t *render_limit_part(const json_t *in, const char *count_field, int bandwidth)
{
	json_t *o = json_object();
	json_object_set_new(o, "timeUnit", json_string(admin_json_str(in, "timeUnit")));
	json_object_set_new(o, "unitTime", json_integer(admin_json_int(in, "unitTime", 1)));
	json_object_set_new(o, count_field, json_integer(admin_json_int(in, count_field, 0)));
	if (bandwidth)
		json_object_set_new(o, "dataUnit", json_string(admin_json_str(in, "dataUnit")));
	return o;
}

/*
 * A ThrottleLimit: the part that type names must be present; the others are
 * rendered null (as the reference does), whatever was sent for them.
 */
static json_t *render_limit(arena *pool, const json_t *in, const char *where, char **msg)
{
	const char *type = admin_json_str(in, "type");
	const char *part = strcmp(type, "BANDWIDTHLIMIT") == 0	 ? "bandwidth"
			   : strcmp(type, "EVENTCOUNTLIMIT") == 0 ? "eventCount"
								  : "requestCount";
	json_t *pv = admin_json_get(in, part);
	if (pv == NULL) {
		*msg = arena_sprintf(pool, "'%s.%s' is required when '%s.type' is %s", where, part,
				     where, type);
		return NULL;
	}
	json_t *o = json_object();
	json_object_set_new(o, "type", json_string(type));
	json_object_set_new(o, "requestCount",
			    strcmp(part, "requestCount") == 0
				    ? render_limit_part(pv, "requestCount", 0)
				    : json_null());
	json_object_set_new(o, "bandwidth",
			    strcmp(part, "bandwidth") == 0 ? render_limit_part(pv, "dataAmount", 1)
							   : json_null());
	json_object_set_new(o, "eventCount",
			    strcmp(part, "eventCount") == 0 ? render_limit_part(pv, "eventCount", 0)
							    : json_null());
	return o;
}

/* rateLimitCount/rateLimitTimeUnit: a unit is needed when the count is on. */
static int check_burst(arena *pool, const json_t *in, const char *where, char **msg)
{
	int64_t count = admin_json_int(in, "rateLimitCount", 0);
	if (count > 0 && admin_json_str(in, "rateLimitTimeUnit") == NULL) {
		*msg = arena_sprintf(pool,
				     "'%srateLimitTimeUnit' is required when '%srateLimitCount' is "
				     "above 0: one of sec, min",
				     where, where);
		return -1;
	}
	return 0;
}

static json_t *render_condition(arena *pool, const json_t *in, const char *where, char **msg)
{
	static const struct {
		const char *type, *field;
	} parts[] = {
		{"HEADERCONDITION", "headerCondition"},
		{"IPCONDITION", "ipCondition"},
		{"JWTCLAIMSCONDITION", "jwtClaimsCondition"},
		{"QUERYPARAMETERCONDITION", "queryParameterCondition"},
	};
	const char *type = admin_json_str(in, "type");
	json_t *o = json_object();
	json_object_set_new(o, "type", json_string(type));
	json_object_set_new(o, "invertCondition",
			    json_boolean(admin_json_bool(in, "invertCondition", 0)));
	for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
		if (strcmp(parts[i].type, type) != 0) {
			json_object_set_new(o, parts[i].field, json_null());
			continue;
		}
		json_t *pv = admin_json_get(in, parts[i].field);
		if (pv == NULL) {
			*msg = arena_sprintf(pool, "'%s.%s' is required when '%s.type' is %s",
					     where, parts[i].field, where, type);
			json_decref(o);
			return NULL;
		}
		if (strcmp(type, "IPCONDITION") != 0) {
			json_object_set_new(o, parts[i].field, json_deep_copy(pv));
			continue;
		}
		char err[ERRLEN];
		const char *iptype = admin_json_str(pv, "ipConditionType");
		const char *spec = admin_json_str(pv, "specificIP");
		const char *start = admin_json_str(pv, "startingIP");
		const char *end = admin_json_str(pv, "endingIP");
		apim_rc rc;
		char *f1 = arena_sprintf(pool, "%s.ipCondition.%s", where,
					 strcmp(iptype, "IPSPECIFIC") == 0 ? "specificIP"
									  : "startingIP");
		char *f2 = arena_sprintf(pool, "%s.ipCondition.endingIP", where);
		if (strcmp(iptype, "IPSPECIFIC") == 0) {
			rc = admin_validate_ip(f1, spec, NULL, NULL, err, sizeof(err));
			start = end = NULL;
		} else {
			rc = admin_validate_ip_range(f1, start, f2, end, err, sizeof(err));
			spec = NULL;
		}
		if (rc != APIM_OK) {
			*msg = arena_strdup(pool, err);
			json_decref(o);
			return NULL;
		}
		json_object_set_new(o, "ipCondition",
				    json_pack("{s:s, s:o, s:o, s:o}", "ipConditionType", iptype,
					      "specificIP", str_or_null(spec), "startingIP",
					      str_or_null(start), "endingIP", str_or_null(end)));
	}
	return o;
}

static json_t *render_groups(arena *pool, const json_t *groups, char **msg)
{
	json_t *out = json_array();
	size_t i, j;
	json_t *g, *c;
	json_array_foreach(groups, i, g) {
		char *gw = arena_sprintf(pool, "conditionalGroups[%zu]", i);
		json_t *conds = json_array();
		json_t *og = json_object();
		json_object_set_new(og, "description",
				    json_string(admin_json_str(g, "description")
							? admin_json_str(g, "description")
							: ""));
		json_object_set_new(og, "conditions", conds);
		json_array_append_new(out, og);
		json_array_foreach(admin_json_get(g, "conditions"), j, c) {
			char *cw = arena_sprintf(pool, "%s.conditions[%zu]", gw, j);
			json_t *oc = render_condition(pool, c, cw, msg);
			if (oc == NULL)
				goto fail;
			json_array_append_new(conds, oc);
		}
		json_t *lim = render_limit(pool, admin_json_get(g, "limit"),
					   arena_sprintf(pool, "%s.limit", gw), msg);
		if (lim == NULL)
			goto fail;
		json_object_set_new(og, "limit", lim);
	}
	return out;
fail:
	json_decref(out);
	return NULL;
}

/* An empty rate-limit time unit means "none" (the reference's portal sends
 * "" with a zero count). */
static void drop_blank(json_t *obj, const char *key)
{
	const char *s = json_is_object(obj) ? json_string_value(json_object_get(obj, key)) : NULL;
	if (s != NULL && *s == '\0')
		json_object_del(obj, key);
}

/*
 * Checks body for level li and renders the stored/returned document with
 * the given id and name. NULL with *msg on a bad body.
 */
static json_t *policy_build(arena *pool, const level_info *li, json_t *body, const char *id,
			    const char *name, char **msg)
{
	drop_blank(body, "rateLimitTimeUnit");
	drop_blank(json_object_get(body, "burstLimit"), "rateLimitTimeUnit");
	if (admin_schema_check(pool, body, li->fields, "", msg) != APIM_OK)
		return NULL;
	char err[ERRLEN];
	if (admin_validate_name("policyName", name, POLICY_NAME_MAX, err, sizeof(err)) != APIM_OK) {
		*msg = arena_strdup(pool, err);
		return NULL;
	}
	const char *display = admin_json_str(body, "displayName");
	const char *desc = admin_json_str(body, "description");
	json_t *doc = json_object();
	json_object_set_new(doc, "policyId", json_string(id));
	json_object_set_new(doc, "policyName", json_string(name));
	json_object_set_new(doc, "displayName",
			    json_string(display && *display ? display : name));
	json_object_set_new(doc, "description", json_string(desc ? desc : ""));
	json_object_set_new(doc, "isDeployed", json_true());
	json_object_set_new(doc, "type", json_string(li->type));

	if (strcmp(li->level, "custom") == 0) {
		const char *tmpl = admin_json_str(body, "keyTemplate");
		if (admin_validate_key_template("keyTemplate", tmpl, err, sizeof(err)) != APIM_OK ||
		    tm_custom_template_check(tmpl, err, sizeof(err)) != APIM_OK) {
			*msg = arena_strdup(pool, err);
			goto fail;
		}
		/* the Siddhi subset apim enforces (trafficmanager/tm_custom.h) */
		tm_custom_rule rule;
		char qerr[2048];
		apim_rc qrc = tm_custom_parse(admin_json_str(body, "siddhiQuery"), &rule, qerr,
					      sizeof(qerr));
		if (qrc != APIM_OK) {
			*msg = arena_strdup(pool, qrc == APIM_ENOMEM ? "out of memory" : qerr);
			goto fail;
		}
		json_object_set_new(doc, "isDeployed",
				    json_boolean(admin_json_bool(body, "isDeployed", 1)));
		json_object_set_new(doc, "siddhiQuery",
				    json_string(admin_json_str(body, "siddhiQuery")));
		json_object_set_new(doc, "keyTemplate", json_string(tmpl));
		return doc;
	}

	json_t *lim = render_limit(pool, admin_json_get(body, "defaultLimit"), "defaultLimit", msg);
	if (lim == NULL)
		goto fail;

	if (strcmp(li->level, "application") == 0) {
		json_object_set_new(doc, "defaultLimit", lim);
		json_t *b = admin_json_get(body, "burstLimit");
		if (b != NULL && check_burst(pool, b, "burstLimit.", msg) != 0)
			goto fail;
		int64_t count = b ? admin_json_int(b, "rateLimitCount", 0) : 0;
		json_object_set_new(doc, "burstLimit",
				    json_pack("{s:I, s:o}", "rateLimitCount", (json_int_t)count,
					      "rateLimitTimeUnit",
					      str_or_null(count > 0 ? admin_json_str(
									      b, "rateLimitTimeUnit")
								    : NULL)));
	} else if (strcmp(li->level, "subscription") == 0) {
		if (check_burst(pool, body, "", msg) != 0) {
			json_decref(lim);
			goto fail;
		}
		int64_t count = admin_json_int(body, "rateLimitCount", 0);
		json_object_set_new(doc, "graphQLMaxComplexity",
				    json_integer(admin_json_int(body, "graphQLMaxComplexity", 0)));
		json_object_set_new(doc, "graphQLMaxDepth",
				    json_integer(admin_json_int(body, "graphQLMaxDepth", 0)));
		json_object_set_new(doc, "defaultLimit", lim);
		json_t *m = admin_json_get(body, "monetization");
		json_object_set_new(doc, "monetization", m ? json_deep_copy(m) : json_null());
		json_object_set_new(doc, "rateLimitCount", json_integer(count));
		json_object_set_new(doc, "rateLimitTimeUnit",
				    str_or_null(count > 0 ? admin_json_str(body, "rateLimitTimeUnit")
							  : NULL));
		json_object_set_new(doc, "subscriberCount",
				    json_integer(admin_json_int(body, "subscriberCount", 0)));
		json_t *attrs = admin_json_get(body, "customAttributes");
		json_object_set_new(doc, "customAttributes",
				    attrs ? json_deep_copy(attrs) : json_array());
		json_object_set_new(doc, "stopOnQuotaReach",
				    json_boolean(admin_json_bool(body, "stopOnQuotaReach", 1)));
		const char *plan = admin_json_str(body, "billingPlan");
		json_object_set_new(doc, "billingPlan", json_string(plan ? plan : "FREE"));
		json_t *perm = admin_json_get(body, "permissions");
		json_object_set_new(doc, "permissions", perm ? json_deep_copy(perm) : json_null());
	} else { /* advanced */
		json_object_set_new(doc, "defaultLimit", lim);
		json_t *groups = admin_json_get(body, "conditionalGroups");
		json_t *og = groups ? render_groups(pool, groups, msg) : json_array();
		if (og == NULL)
			goto fail;
		json_object_set_new(doc, "conditionalGroups", og);
	}
	return doc;
fail:
	json_decref(doc);
	return NULL;
}

/* ------------------------------------------------------------ handlers */

/* The stored document with the row's id and name (authoritative). */
static json_t *policy_render(const store_policy *p)
{
	json_t *doc = admin_doc_load(p->doc);
	if (doc == NULL)
		doc = json_object();
	json_object_set_new(doc, "policyId", json_string(p->id));
	json_object_set_new(doc, "policyName", json_string(p->name));
	return doc;
}

/* 404 for ids that are not UUIDs as for unknown ones. */
static apim_rc load(http_req *r, const level_info *li, const char *id, store_policy *p)
{
	apim_rc rc = apim_uuid_valid(id) ? store_policy_get(r->ctx->apimgt, r->pool, li->level, id, p)
					 : APIM_ENOTFOUND;
	if (rc != APIM_OK)
		http_reply_store_error(r, rc,
					arena_sprintf(r->pool, "%s '%s'", li->title, id));
	return rc;
}

void admin_policy_list(http_req *r)
{
	const level_info *li = level_of(r);
	int64_t limit, offset, total = 0;
	store_policy *ps = NULL;
	size_t n = 0;
	if (admin_paging(r, &limit, &offset) != 0)
		return;
	apim_rc rc = store_policy_list(r->ctx->apimgt, r->pool, li->level, offset, limit, &ps, &n,
				       &total);
	if (rc != APIM_OK) {
		http_reply_store_error(r, rc, "Policies");
		return;
	}
	json_t *list = json_array();
	for (size_t i = 0; i < n; i++)
		json_array_append_new(list, policy_render(&ps[i]));
	http_reply_list(r, list, total, limit, offset);
}

void admin_policy_create(http_req *r)
{
	const level_info *li = level_of(r);
	json_t *body = http_json_body(r, JSON_OBJECT);
	if (body == NULL)
		return;
	char *msg = NULL;
	json_t *name = json_object_get(body, "policyName");
	if (name == NULL || json_is_null(name)) {
		http_reply_error(r, 400, "'policyName' is required");
		return;
	}
	if (!json_is_string(name)) {
		http_reply_error(r, 400, "'policyName' must be a string");
		return;
	}
	char id[APIM_UUID_LEN + 1];
	apim_uuid(id);
	const char *pname = arena_strdup(r->pool, json_string_value(name));
	json_t *doc = policy_build(r->pool, li, body, id, pname, &msg);
	if (doc == NULL) {
		http_reply_error(r, 400, "%s", msg);
		return;
	}
	char *text = json_dumps(doc, JSON_COMPACT);
	int64_t now = apim_now_ms();
	store_policy p = {.id = id, .level = li->level, .name = pname, .doc = text,
			  .created_ms = now, .updated_ms = now};
	apim_rc rc = text ? store_policy_create(r->ctx->apimgt, &p) : APIM_ENOMEM;
	free(text);
	if (rc == APIM_ECONFLICT) {
		json_decref(doc);
		http_reply_error(r, 409,
				 "%s '%s' already exists; choose another policyName or update "
				 "that policy",
				 li->title, pname);
		return;
	}
	if (rc != APIM_OK) {
		json_decref(doc);
		http_reply_store_error(r, rc, "Policy");
		return;
	}
	http_set_header(r, "Location",
			arena_sprintf(r->pool, ADMIN_BASE "/throttling/policies/%s/%s", li->level,
				      id));
	http_reply_json(r, 201, doc);
}

void admin_policy_get(http_req *r)
{
	const level_info *li = level_of(r);
	store_policy p;
	if (load(r, li, http_param(r, "policyId"), &p) != APIM_OK)
		return;
	http_reply_json(r, 200, policy_render(&p));
}

void admin_policy_update(http_req *r)
{
	const level_info *li = level_of(r);
	store_policy p;
	json_t *body = http_json_body(r, JSON_OBJECT);
	if (body == NULL)
		return;
	if (load(r, li, http_param(r, "policyId"), &p) != APIM_OK)
		return;
	json_t *cur = policy_render(&p);
	int ok = http_check_if_match(r, cur);
	json_decref(cur);
	if (ok != 0)
		return;
	json_t *name = json_object_get(body, "policyName");
	if (name != NULL && !json_is_null(name) &&
	    (!json_is_string(name) || strcmp(json_string_value(name), p.name) != 0)) {
		http_reply_error(r, 400,
				 "'policyName' cannot be changed (the policy is '%s'); create a new "
				 "policy to use another name",
				 p.name);
		return;
	}
	json_t *id = json_object_get(body, "policyId");
	if (id != NULL && !json_is_null(id) &&
	    (!json_is_string(id) || strcmp(json_string_value(id), p.id) != 0)) {
		http_reply_error(r, 400,
				 "'policyId' in the body does not match the policy in the path "
				 "('%s')",
				 p.id);
		return;
	}
	char *msg = NULL;
	json_t *doc = policy_build(r->pool, li, body, p.id, p.name, &msg);
	if (doc == NULL) {
		http_reply_error(r, 400, "%s", msg);
		return;
	}
	char *text = json_dumps(doc, JSON_COMPACT);
	p.doc = text;
	p.updated_ms = apim_now_ms();
	apim_rc rc = text ? store_policy_update(r->ctx->apimgt, &p) : APIM_ENOMEM;
	free(text);
	if (rc != APIM_OK) {
		json_decref(doc);
		http_reply_store_error(r, rc,
					arena_sprintf(r->pool, "%s '%s'", li->title, p.id));
		return;
	}
	http_reply_json(r, 200, doc);
}

typedef struct usage_guard {
	apim_ctx *ctx;
	const char *level, *name;
	int64_t count;
	apim_rc rc;
} usage_guard;

/* Runs inside the delete's transaction: nothing may start using the policy
 * between the check and the delete on SQLite (write lock held). */
static apim_rc usage_check(void *arg)
{
	usage_guard *g = arg;
	g->rc = publisher_policy_usage(g->ctx, g->level, g->name, &g->count);
	if (g->rc != APIM_OK)
		return g->rc;
	return g->count > 0 ? APIM_ECONFLICT : APIM_OK;
}

static const char *usage_words(const char *level)
{
	if (strcmp(level, "application") == 0)
		return "application(s)";
	if (strcmp(level, "subscription") == 0)
		return "API(s) or subscription(s)";
	return "API(s) or API operation(s)";
}

void admin_policy_delete(http_req *r)
{
	const level_info *li = level_of(r);
	store_policy p;
	if (load(r, li, http_param(r, "policyId"), &p) != APIM_OK)
		return;
	if (strcmp(p.name, "Unlimited") == 0 && strcmp(li->level, "custom") != 0) {
		http_reply_error(r, 403,
				 "The %s policy 'Unlimited' is built in and cannot be deleted",
				 li->level);
		return;
	}
	usage_guard g = {.ctx = r->ctx, .level = li->level, .name = p.name};
	apim_rc rc = store_policy_delete(r->ctx->apimgt, li->level, p.id, usage_check, &g);
	if (rc == APIM_ECONFLICT && g.rc == APIM_OK) {
		http_reply_error(r, 409,
				 "%s '%s' is in use by %lld %s; move them to another policy before "
				 "deleting it",
				 li->title, p.name, (long long)g.count, usage_words(li->level));
		return;
	}
	if (rc != APIM_OK) {
		http_reply_store_error(r, rc, arena_sprintf(r->pool, "%s '%s'", li->title, p.id));
		return;
	}
	http_reply_empty(r, 200);
}

/*
 * GET /throttling/policies/search?query=type:app|sub|api|global: a summary
 * of the policies of every level (or of one), as the reference's search.
 */
void admin_policy_search(http_req *r)
{
	const char *q = http_query(r, "query");
	const level_info *only = NULL;
	if (q != NULL && *q != '\0') {
		const char *t = strncmp(q, "type:", 5) == 0 ? q + 5 : NULL;
		for (size_t i = 0; t != NULL && i < NLEVELS; i++)
			if (strcmp(t, levels[i].search) == 0 || strcmp(t, levels[i].level) == 0)
				only = &levels[i];
		if (only == NULL) {
			http_reply_error(r, 400,
					 "'query' must be type:app, type:sub, type:api or "
					 "type:global (got '%s')",
					 q);
			return;
		}
	}
	store_policy *ps = NULL;
	size_t n = 0;
	int64_t total = 0;
	apim_rc rc = store_policy_list(r->ctx->apimgt, r->pool, only ? only->level : NULL, 0,
				       INT32_MAX, &ps, &n, &total);
	if (rc != APIM_OK) {
		http_reply_store_error(r, rc, "Policies");
		return;
	}
	json_t *list = json_array();
	for (size_t i = 0; i < n; i++) {
		json_t *doc = policy_render(&ps[i]);
		const level_info *li = level_by_name(ps[i].level);
		json_array_append_new(
			list, json_pack("{s:s, s:s, s:s, s:O?, s:O?, s:b, s:s}", "policyId",
					ps[i].id, "uuid", ps[i].id, "policyName", ps[i].name,
					"displayName", json_object_get(doc, "displayName"),
					"description", json_object_get(doc, "description"),
					"isDeployed", !json_is_false(json_object_get(doc, "isDeployed")),
					"type", li ? li->search : ps[i].level));
		json_decref(doc);
	}
	http_reply_json(r, 200, json_pack("{s:I, s:o}", "count", (json_int_t)n, "list", list));
}

/* ------------------------------------------------------------- exports */

apim_rc admin_policy_exists(apim_ctx *ctx, const char *level, const char *name, int *exists)
{
	*exists = 0;
	if (ctx->apimgt == NULL || level == NULL || name == NULL)
		return APIM_EINVAL;
	return store_policy_exists(ctx->apimgt, level, name, exists);
}

/* ---------------------------------------------------------------- seed */

typedef struct default_policy {
	const char *level, *name, *desc;
	int64_t count; /* per one minute */
} default_policy;

#define UNLIMITED_COUNT 2147483647
static const default_policy default_policies[] = {
	{"application", "50PerMin", "Allows 50 request per minute", 50},
	{"application", "20PerMin", "Allows 20 request per minute", 20},
	{"application", "10PerMin", "Allows 10 request per minute", 10},
	{"application", "Unlimited", "Allows unlimited requests", UNLIMITED_COUNT},
	{"subscription", "Gold", "Allows 5000 requests per minute", 5000},
	{"subscription", "Silver", "Allows 2000 requests per minute", 2000},
	{"subscription", "Bronze", "Allows 1000 requests per minute", 1000},
	{"subscription", "Unauthenticated", "Allows 500 request(s) per minute", 500},
	{"subscription", "Unlimited", "Allows unlimited requests", UNLIMITED_COUNT},
	{"advanced", "50KPerMin", "Allows 50000 requests per minute", 50000},
	{"advanced", "20KPerMin", "Allows 20000 requests per minute", 20000},
	{"advanced", "10KPerMin", "Allows 10000 requests per minute", 10000},
	{"advanced", "Unlimited", "Allows unlimited requests", UNLIMITED_COUNT},
};
#define NDEFAULTS (sizeof(default_policies) / sizeof(default_policies[0]))

/* The defaults go through policy_build like any body, so that they are
 * rendered exactly as created ones. */
apim_rc admin_policy_seed(apim_ctx *ctx)
{
	arena *pool = arena_create(16384);
	store_policy ps[NDEFAULTS];
	char ids[NDEFAULTS][APIM_UUID_LEN + 1];
	char *texts[NDEFAULTS] = {0};
	apim_rc rc = APIM_OK;
	int64_t now = apim_now_ms();

	for (size_t i = 0; i < NDEFAULTS; i++) {
		const default_policy *dp = &default_policies[i];
		const level_info *li = level_by_name(dp->level);
		json_t *body = json_pack(
			"{s:s, s:s, s:s, s:{s:s, s:{s:s, s:i, s:I}}}", "policyName", dp->name,
			"displayName", dp->name, "description", dp->desc, "defaultLimit", "type",
			"REQUESTCOUNTLIMIT", "requestCount", "timeUnit", "min", "unitTime", 1,
			"requestCount", (json_int_t)dp->count);
		char *msg = NULL;
		apim_uuid(ids[i]);
		json_t *doc = body ? policy_build(pool, li, body, ids[i], dp->name, &msg) : NULL;
		json_decref(body);
		texts[i] = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
		json_decref(doc);
		if (texts[i] == NULL) {
			rc = APIM_EINTERNAL;
			goto out;
		}
		/* distinct times keep the reference's order in lists */
		ps[i] = (store_policy){.id = ids[i], .level = dp->level, .name = dp->name,
				       .doc = texts[i], .created_ms = now + (int64_t)i,
				       .updated_ms = now + (int64_t)i};
	}
	rc = store_policy_seed(ctx->apimgt, "default-policies", ps, NDEFAULTS);
out:
	for (size_t i = 0; i < NDEFAULTS; i++)
		free(texts[i]);
	arena_destroy(pool);
	return rc;
}
