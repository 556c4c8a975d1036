#include "admin/admin_schema.h"

#include <ctype.h>
#include <inttypes.h>
#include <string.h>
#include <strings.h>

char *admin_schema_join(arena *pool, const char *const *list)
{
	size_t n = 1;
	for (size_t i = 0; list[i] != NULL; i++)
		n += strlen(list[i]) + 2;
	char *out = arena_alloc(pool, n), *p = out;
	for (size_t i = 0; list[i] != NULL; i++) {
		if (i > 0) {
			memcpy(p, ", ", 2);
			p += 2;
		}
		size_t l = strlen(list[i]);
		memcpy(p, list[i], l);
		p += l;
	}
	*p = '\0';
	return out;
}

static char *field_names(arena *pool, const schema_field *fields)
{
	size_t n = 0;
	while (fields[n].name != NULL)
		n++;
	const char **names = arena_alloc(pool, (n + 1) * sizeof(*names));
	for (size_t i = 0; i < n; i++)
		names[i] = fields[i].name;
	return admin_schema_join(pool, names);
}

static const char *type_name(schema_type t)
{
	switch (t) {
	case SCHEMA_STRING: return "a string";
	case SCHEMA_INT: return "an integer";
	case SCHEMA_BOOL: return "a boolean (true or false)";
	case SCHEMA_OBJECT: return "an object";
	case SCHEMA_ARRAY: return "an array";
	case SCHEMA_MAP: return "an object of string values";
	case SCHEMA_ANY: return "a value";
	}
	return "a value";
}

static int blank(const char *s)
{
	for (; *s; s++)
		if (!isspace((unsigned char)*s))
			return 0;
	return 1;
}

static apim_rc check_value(arena *pool, json_t *parent, const char *key, size_t index,
			   json_t *v, const schema_field *f, schema_type t, const char *where,
			   char **msg);

static apim_rc check_string(arena *pool, json_t *parent, const char *key, size_t index,
			    json_t *v, const schema_field *f, const char *where, char **msg)
{
	const char *s = json_string_value(v);
	if ((f->flags & SCHEMA_NONEMPTY) && blank(s)) {
		*msg = arena_sprintf(pool, "'%s' must not be empty", where);
		return APIM_EINVAL;
	}
	if (f->max > 0 && (int64_t)strlen(s) > f->max) {
		*msg = arena_sprintf(pool, "'%s' is too long: at most %" PRId64 " characters",
				     where, f->max);
		return APIM_EINVAL;
	}
	if (f->enums == NULL)
		return APIM_OK;
	for (size_t i = 0; f->enums[i] != NULL; i++) {
		if (strcasecmp(s, f->enums[i]) != 0)
			continue;
		if (strcmp(s, f->enums[i]) != 0) {
			/* canonical spelling, so that later code may strcmp */
			json_t *c = json_string(f->enums[i]);
			if (json_is_array(parent))
				json_array_set_new(parent, index, c);
			else
				json_object_set_new(parent, key, c);
		}
		return APIM_OK;
	}
	*msg = arena_sprintf(pool, "'%s' must be one of: %s (got '%s')", where,
			     admin_schema_join(pool, f->enums), s);
	return APIM_EINVAL;
}

static apim_rc check_value(arena *pool, json_t *parent, const char *key, size_t index,
			   json_t *v, const schema_field *f, schema_type t, const char *where,
			   char **msg)
{
	switch (t) {
	case SCHEMA_ANY:
		return APIM_OK;
	case SCHEMA_STRING:
		if (!json_is_string(v))
			break;
		return check_string(pool, parent, key, index, v, f, where, msg);
	case SCHEMA_INT:
		if (!json_is_integer(v)) {
			/* 5.0 is still an integer to a script that computed it */
			if (!json_is_real(v))
				break;
			double d = json_real_value(v);
			/* range first: converting an out-of-range double is undefined */
			if (!(d > -9.2e18 && d < 9.2e18) || d != (double)(int64_t)d)
				break;
			json_t *iv = json_integer((json_int_t)d);
			if (json_is_array(parent))
				json_array_set_new(parent, index, iv);
			else
				json_object_set_new(parent, key, iv);
			v = iv;
		}
		if (f->min < f->max) {
			int64_t i = (int64_t)json_integer_value(v);
			if (i < f->min || i > f->max) {
				*msg = arena_sprintf(pool,
						     "'%s' must be between %" PRId64 " and %" PRId64
						     " (got %" PRId64 ")",
						     where, f->min, f->max, i);
				return APIM_EINVAL;
			}
		}
		return APIM_OK;
	case SCHEMA_BOOL:
		if (!json_is_boolean(v))
			break;
		return APIM_OK;
	case SCHEMA_OBJECT:
		if (!json_is_object(v))
			break;
		return admin_schema_check(pool, v, f->fields, where, msg);
	case SCHEMA_MAP: {
		if (!json_is_object(v))
			break;
		const char *k;
		json_t *mv;
		json_object_foreach(v, k, mv) {
			if (!json_is_string(mv) && !json_is_null(mv)) {
				*msg = arena_sprintf(pool, "'%s.%s' must be a string", where, k);
				return APIM_EINVAL;
			}
		}
		return APIM_OK;
	}
	case SCHEMA_ARRAY: {
		if (!json_is_array(v))
			break;
		if ((f->flags & SCHEMA_NONEMPTY) && json_array_size(v) == 0) {
			*msg = arena_sprintf(pool, "'%s' must have at least one item", where);
			return APIM_EINVAL;
		}
		size_t i;
		json_t *item;
		json_array_foreach(v, i, item) {
			char *iw = arena_sprintf(pool, "%s[%zu]", where, i);
			if (json_is_null(item)) {
				*msg = arena_sprintf(pool, "'%s' must not be null", iw);
				return APIM_EINVAL;
			}
			schema_field itf = *f;
			itf.flags &= ~(unsigned)SCHEMA_NONEMPTY;
			if (f->item == SCHEMA_STRING)
				itf.flags |= f->flags & SCHEMA_NONEMPTY;
			apim_rc rc = check_value(pool, v, NULL, i, item, &itf, f->item, iw, msg);
			if (rc != APIM_OK)
				return rc;
		}
		return APIM_OK;
	}
	}
	*msg = arena_sprintf(pool, "'%s' must be %s", where, type_name(t));
	return APIM_EINVAL;
}

apim_rc admin_schema_check(arena *pool, json_t *obj, const schema_field *fields,
			   const char *path, char **msg)
{
	const char *key;
	json_t *v;
	void *tmp;

	json_object_foreach_safe(obj, tmp, key, v) {
		const schema_field *f = NULL;
		for (size_t i = 0; fields[i].name != NULL; i++)
			if (strcmp(fields[i].name, key) == 0)
				f = &fields[i];
		if (f == NULL) {
			if (*path)
				*msg = arena_sprintf(pool, "Unknown field '%s.%s'; '%s' takes: %s",
						     path, key, path, field_names(pool, fields));
			else
				*msg = arena_sprintf(pool, "Unknown field '%s'; allowed fields: %s",
						     key, field_names(pool, fields));
			return APIM_EINVAL;
		}
	}
	for (size_t i = 0; fields[i].name != NULL; i++) {
		const schema_field *f = &fields[i];
		char *where = *path ? arena_sprintf(pool, "%s.%s", path, f->name)
				    : arena_strdup(pool, f->name);
		v = json_object_get(obj, f->name);
		if (v == NULL || json_is_null(v)) {
			if (f->flags & SCHEMA_REQUIRED) {
				*msg = arena_sprintf(pool, "'%s' is required", where);
				return APIM_EINVAL;
			}
			continue;
		}
		apim_rc rc = check_value(pool, obj, f->name, 0, v, f, f->type, where, msg);
		if (rc != APIM_OK)
			return rc;
	}
	return APIM_OK;
}

json_t *admin_json_get(const json_t *obj, const char *key)
{
	json_t *v = json_object_get(obj, key);
	return v == NULL || json_is_null(v) ? NULL : v;
}

const char *admin_json_str(const json_t *obj, const char *key)
{
	return json_string_value(admin_json_get(obj, key));
}

int64_t admin_json_int(const json_t *obj, const char *key, int64_t def)
{
	json_t *v = admin_json_get(obj, key);
	return json_is_integer(v) ? (int64_t)json_integer_value(v) : def;
}

int admin_json_bool(const json_t *obj, const char *key, int def)
{
	json_t *v = admin_json_get(obj, key);
	return json_is_boolean(v) ? json_is_true(v) : def;
}
