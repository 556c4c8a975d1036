/*
 * admin_schema.h: declarative checks of JSON request bodies.
 *
 * A body is described by a table of fields (name, type, flags, allowed
 * values, nested fields, bounds), like the OpenAPI schemas of the reference.
 * admin_schema_check walks a body against such a table and reports the first
 * problem as a message that names the field by its full path
 * ("conditionalGroups[0].limit.requestCount.timeUnit") and says what is
 * allowed: unknown fields, wrong JSON types, values outside an enumeration,
 * integers out of range, strings too long, missing required fields.
 *
 * JSON null is accepted wherever a field is optional and means "absent", so
 * that a body read back from GET (which renders absent parts as null, as the
 * reference does) can be sent again with PUT.
 *
 * Enumerations match without regard to case; the body is rewritten to the
 * table's spelling, so later code can compare with strcmp.
 */
#ifndef APIM_ADMIN_SCHEMA_H
#define APIM_ADMIN_SCHEMA_H

#include <jansson.h>
#include <stdint.h>

#include "common/arena.h"
#include "common/error.h"

typedef enum {
	SCHEMA_STRING,
	SCHEMA_INT,
	SCHEMA_BOOL,
	SCHEMA_OBJECT, /* members in .fields */
	SCHEMA_ARRAY,  /* items of type .item; objects' members in .fields */
	SCHEMA_MAP,    /* object of string values, any keys */
	SCHEMA_ANY,    /* not checked here */
} schema_type;

#define SCHEMA_REQUIRED 0x1 /* must be present and not null */
#define SCHEMA_NONEMPTY 0x2 /* strings: not empty after trimming; arrays: >= 1 item */

typedef struct schema_field {
	const char *name; /* NULL ends a table */
	schema_type type;
	unsigned flags;
	const char *const *enums; /* SCHEMA_STRING: allowed values, NULL-terminated */
	const struct schema_field *fields; /* SCHEMA_OBJECT, SCHEMA_ARRAY of objects */
	schema_type item;                  /* SCHEMA_ARRAY: item type */
	int64_t min, max; /* SCHEMA_INT: bounds when min < max; SCHEMA_STRING: max length when > 0 */
} schema_field;

/*
 * Checks obj (a JSON object) against fields. path is the prefix for
 * messages ("" at the top). On failure returns APIM_EINVAL with *msg set to
 * a sentence allocated from pool. obj may be modified (enum spellings).
 */
apim_rc admin_schema_check(arena *pool, json_t *obj, const schema_field *fields,
			   const char *path, char **msg);

/* "a, b, c" of a NULL-terminated list, from pool. */
char *admin_schema_join(arena *pool, const char *const *list);

/* Accessors that treat null and absence alike. Borrowed. */
const char *admin_json_str(const json_t *obj, const char *key); /* NULL when absent */
int64_t admin_json_int(const json_t *obj, const char *key, int64_t def);
int admin_json_bool(const json_t *obj, const char *key, int def);
json_t *admin_json_get(const json_t *obj, const char *key); /* NULL when absent or null */

#endif
