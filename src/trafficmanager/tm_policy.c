/*
 * tm_policy.c: rate limits from the control plane's policies (see
 * tm_policy.h).
 */
#include "trafficmanager/tm_policy.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
	char *level;
	char *name;
	tm_limit def;     /* def.amount == 0: unlimited */
	tm_limit *groups; /* conditional groups of an advanced policy */
	size_t ngroups;
} tm_policy;

struct tm_policies {
	tm_policy *list; /* sorted by level, then name */
	size_t n;
};

static int64_t tm_unit_ms(const char *unit)
{
	static const struct {
		const char *name;
		int64_t ms;
	} units[] = {{"sec", 1000},         {"min", 60000},           {"hour", 3600000},
		     {"day", 86400000},     {"week", 604800000},      {"month", 2592000000LL},
		     {"year", 31536000000LL}};
	for (size_t i = 0; unit != NULL && i < sizeof(units) / sizeof(units[0]); i++)
		if (strcmp(unit, units[i].name) == 0)
			return units[i].ms;
	return 0;
}

int tm_limit_parse(json_t *limit, tm_limit *out)
{
	memset(out, 0, sizeof(*out));
	const char *type = json_string_value(json_object_get(limit, "type"));
	json_t *part;
	int64_t amount, mult = 1;
	if (type == NULL)
		return 0;
	if (strcmp(type, "REQUESTCOUNTLIMIT") == 0) {
		part = json_object_get(limit, "requestCount");
		amount = json_integer_value(json_object_get(part, "requestCount"));
	} else if (strcmp(type, "EVENTCOUNTLIMIT") == 0) {
		part = json_object_get(limit, "eventCount");
		amount = json_integer_value(json_object_get(part, "eventCount"));
	} else if (strcmp(type, "BANDWIDTHLIMIT") == 0) {
		part = json_object_get(limit, "bandwidth");
		amount = json_integer_value(json_object_get(part, "dataAmount"));
		const char *du = json_string_value(json_object_get(part, "dataUnit"));
		mult = du == NULL                ? 0
		       : strcmp(du, "KB") == 0 ? 1024
		       : strcmp(du, "MB") == 0 ? 1024 * 1024
		       : strcmp(du, "GB") == 0 ? 1024 * 1024 * 1024
					       : 0;
		out->bandwidth = 1;
	} else {
		return 0;
	}
	int64_t unit_ms = tm_unit_ms(json_string_value(json_object_get(part, "timeUnit")));
	int64_t unit_time = json_integer_value(json_object_get(part, "unitTime"));
	if (amount <= 0 || mult == 0 || unit_ms == 0 || unit_time <= 0 ||
	    amount > INT64_MAX / mult || unit_time > INT64_MAX / unit_ms)
		return 0;
	if (!out->bandwidth && amount >= INT32_MAX)
		return 0; /* "Unlimited" (the reference stores 2147483647) */
	out->amount = amount * mult;
	out->window_ms = unit_time * unit_ms;
	return 1;
}

/* A custom policy's parsed rule ({"limit", "windowMs", ...}, see
 * tm_custom.h); 0 when absent (not deployed, or a query apim cannot read). */
static int tm_rule_limit(json_t *rule, tm_limit *out)
{
	memset(out, 0, sizeof(*out));
	int64_t limit = json_integer_value(json_object_get(rule, "limit"));
	int64_t window_ms = json_integer_value(json_object_get(rule, "windowMs"));
	if (limit <= 0 || window_ms <= 0)
		return 0;
	out->amount = limit;
	out->window_ms = window_ms;
	return 1;
}

static int tm_policy_cmp(const void *a, const void *b)
{
	const tm_policy *x = a, *y = b;
	int c = strcmp(x->level, y->level);
	return c != 0 ? c : strcmp(x->name, y->name);
}

void tm_policies_free(tm_policies *t)
{
	if (t == NULL)
		return;
	for (size_t i = 0; i < t->n; i++) {
		free(t->list[i].level);
		free(t->list[i].name);
		free(t->list[i].groups);
	}
	free(t->list);
	free(t);
}

apim_rc tm_policies_build(json_t *list, tm_policies **out, size_t *skipped)
{
	*out = NULL;
	if (skipped != NULL)
		*skipped = 0;
	if (!json_is_array(list))
		return APIM_EINVAL;
	tm_policies *t = calloc(1, sizeof(*t));
	if (t == NULL)
		return APIM_ENOMEM;
	t->list = calloc(json_array_size(list) + 1, sizeof(tm_policy));
	if (t->list == NULL) {
		free(t);
		return APIM_ENOMEM;
	}
	size_t i;
	json_t *p;
	json_array_foreach(list, i, p)
	{
		const char *level = json_string_value(json_object_get(p, "level"));
		const char *name = json_string_value(json_object_get(p, "name"));
		json_t *doc = json_object_get(p, "doc");
		tm_policy pol = {0};
		if (level == NULL || name == NULL || !json_is_object(doc)) {
			if (skipped != NULL)
				(*skipped)++;
			continue;
		}
		int limited = strcmp(level, "custom") == 0
				      ? tm_rule_limit(json_object_get(p, "rule"), &pol.def)
				      : tm_limit_parse(json_object_get(doc, "defaultLimit"), &pol.def);
		json_t *groups = json_object_get(doc, "conditionalGroups");
		size_t ng = strcmp(level, "advanced") == 0 ? json_array_size(groups) : 0;
		if (ng > 0) {
			pol.groups = calloc(ng, sizeof(tm_limit));
			if (pol.groups == NULL)
				goto nomem;
			pol.ngroups = ng;
			for (size_t g = 0; g < ng; g++)
				if (tm_limit_parse(json_object_get(json_array_get(groups, g), "limit"),
						   &pol.groups[g]))
					limited = 1;
		}
		if (!limited) {
			free(pol.groups); /* unlimited (or unreadable): nothing to count */
			if (skipped != NULL)
				(*skipped)++;
			continue;
		}
		pol.level = strdup(level);
		pol.name = strdup(name);
		if (pol.level == NULL || pol.name == NULL) {
			free(pol.level);
			free(pol.name);
			free(pol.groups);
			goto nomem;
		}
		t->list[t->n++] = pol;
	}
	qsort(t->list, t->n, sizeof(tm_policy), tm_policy_cmp);
	*out = t;
	return APIM_OK;
nomem:
	tm_policies_free(t);
	return APIM_ENOMEM;
}

int tm_policies_find(const tm_policies *t, const char *level, const char *name, int group,
		     tm_limit *out)
{
	if (t == NULL || level == NULL || name == NULL)
		return 0;
	tm_policy key = {.level = (char *)level, .name = (char *)name};
	const tm_policy *p = bsearch(&key, t->list, t->n, sizeof(tm_policy), tm_policy_cmp);
	if (p == NULL)
		return 0;
	const tm_limit *l = &p->def;
	if (group >= 0) {
		if ((size_t)group >= p->ngroups)
			return 0;
		l = &p->groups[group];
	}
	if (l->amount <= 0)
		return 0;
	*out = *l;
	return 1;
}

size_t tm_policies_count(const tm_policies *t)
{
	return t != NULL ? t->n : 0;
}
