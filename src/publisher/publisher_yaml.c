/*
 * publisher_yaml.c: YAML to JSON for API definitions, on libyaml's document
 * loader.
 *
 * Plain scalars resolve as YAML 1.2's core schema does (null, booleans,
 * integers, floats, else strings); quoted scalars and scalars tagged !!str
 * stay strings; mapping keys are always strings. Aliases point to shared
 * nodes, so a small document can expand enormously ("billion laughs"): the
 * conversion stops after MAX_NODES values or MAX_DEPTH levels.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "publisher/publisher_internal.h"

#define MAX_NODES 200000
#define MAX_DEPTH 64

typedef struct conv {
	yaml_document_t *doc;
	size_t budget;
	char *err;
	size_t errlen;
} conv;

static int is_int(const char *s)
{
	if (*s == '-' || *s == '+')
		s++;
	if (*s == '\0')
		return 0;
	for (; *s; s++)
		if (*s < '0' || *s > '9')
			return 0;
	return 1;
}

static int is_float(const char *s)
{
	int digits = 0;
	if (*s == '-' || *s == '+')
		s++;
	while (*s >= '0' && *s <= '9')
		s++, digits++;
	if (*s == '.') {
		s++;
		while (*s >= '0' && *s <= '9')
			s++, digits++;
	}
	if (!digits)
		return 0;
	if (*s == 'e' || *s == 'E') {
		s++;
		if (*s == '-' || *s == '+')
			s++;
		if (!(*s >= '0' && *s <= '9'))
			return 0;
		while (*s >= '0' && *s <= '9')
			s++;
	}
	return *s == '\0';
}

static json_t *scalar(yaml_node_t *n)
{
	const char *s = (const char *)n->data.scalar.value;
	size_t len = n->data.scalar.length;
	const char *tag = (const char *)n->tag;
	if (n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE ||
	    (tag != NULL && strcmp(tag, YAML_STR_TAG) == 0))
		return json_stringn(s, len);
	if (len == 0 || strcmp(s, "~") == 0 || strcmp(s, "null") == 0 || strcmp(s, "Null") == 0 ||
	    strcmp(s, "NULL") == 0)
		return json_null();
	if (strcmp(s, "true") == 0 || strcmp(s, "True") == 0 || strcmp(s, "TRUE") == 0)
		return json_true();
	if (strcmp(s, "false") == 0 || strcmp(s, "False") == 0 || strcmp(s, "FALSE") == 0)
		return json_false();
	if (is_int(s)) {
		errno = 0;
		long long v = strtoll(s, NULL, 10);
		if (errno == 0)
			return json_integer(v);
		return json_stringn(s, len);
	}
	if (is_float(s))
		return json_real(strtod(s, NULL));
	return json_stringn(s, len);
}

static json_t *convert(conv *c, yaml_node_t *n, int depth)
{
	if (n == NULL)
		return json_null();
	if (c->budget == 0) {
		snprintf(c->err, c->errlen, "the YAML document expands to more than %d values "
					    "(aliases?)",
			 MAX_NODES);
		return NULL;
	}
	c->budget--;
	if (depth > MAX_DEPTH) {
		snprintf(c->err, c->errlen, "the YAML document nests deeper than %d levels",
			 MAX_DEPTH);
		return NULL;
	}
	switch (n->type) {
	case YAML_SCALAR_NODE:
		return scalar(n);
	case YAML_SEQUENCE_NODE: {
		json_t *a = json_array();
		for (yaml_node_item_t *it = n->data.sequence.items.start;
		     it < n->data.sequence.items.top; it++) {
			json_t *v = convert(c, yaml_document_get_node(c->doc, *it), depth + 1);
			if (v == NULL) {
				json_decref(a);
				return NULL;
			}
			json_array_append_new(a, v);
		}
		return a;
	}
	case YAML_MAPPING_NODE: {
		json_t *o = json_object();
		for (yaml_node_pair_t *pr = n->data.mapping.pairs.start;
		     pr < n->data.mapping.pairs.top; pr++) {
			yaml_node_t *k = yaml_document_get_node(c->doc, pr->key);
			if (k == NULL || k->type != YAML_SCALAR_NODE) {
				snprintf(c->err, c->errlen, "a YAML mapping key is not a plain value "
							    "(line %zu)",
					 k ? k->start_mark.line + 1 : 0);
				json_decref(o);
				return NULL;
			}
			json_t *v = convert(c, yaml_document_get_node(c->doc, pr->value), depth + 1);
			if (v == NULL) {
				json_decref(o);
				return NULL;
			}
			char *key = strndup((const char *)k->data.scalar.value, k->data.scalar.length);
			if (key == NULL) {
				json_decref(v);
				json_decref(o);
				return NULL;
			}
			json_object_set_new(o, key, v);
			free(key);
		}
		return o;
	}
	default:
		return json_null();
	}
}

apim_rc publisher_yaml_to_json(const char *text, size_t len, json_t **out, char *err,
			       size_t errlen)
{
	yaml_parser_t parser;
	yaml_document_t doc;
	*out = NULL;
	if (!yaml_parser_initialize(&parser)) {
		snprintf(err, errlen, "the YAML parser could not start");
		return APIM_ENOMEM;
	}
	yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
	if (!yaml_parser_load(&parser, &doc)) {
		snprintf(err, errlen, "malformed YAML at line %zu, column %zu: %s",
			 parser.problem_mark.line + 1, parser.problem_mark.column + 1,
			 parser.problem ? parser.problem : "syntax error");
		yaml_parser_delete(&parser);
		return APIM_EINVAL;
	}
	apim_rc rc = APIM_OK;
	yaml_node_t *root = yaml_document_get_root_node(&doc);
	if (root == NULL) {
		snprintf(err, errlen, "the YAML document is empty");
		rc = APIM_EINVAL;
	} else {
		conv c = {.doc = &doc, .budget = MAX_NODES, .err = err, .errlen = errlen};
		*out = convert(&c, root, 0);
		if (*out == NULL)
			rc = APIM_EINVAL;
	}
	yaml_document_delete(&doc);
	yaml_parser_delete(&parser);
	return rc;
}
