/*
 * publisher_document.c: /apis/{apiId}/documents: an API's documents and
 * their content (shareddb, like the reference's registry).
 *
 * A document is metadata (name unique per API, type, sourceType, ...) plus
 * content: inline text or markdown, an uploaded file, or a URL. Content is
 * added with POST .../content as multipart (inlineContent or file) or as a
 * plain text body; GET .../content answers the text, the file, or 303 to the
 * URL.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "auth/auth.h"
#include "common/ctx.h"
#include "common/log.h"
#include "common/util.h"
#include "publisher/publisher_internal.h"
#include "store/store_document.h"

static const char *const doc_types[] = {"HOWTO",          "SAMPLES",  "PUBLIC_FORUM",
					"SUPPORT_FORUM",  "API_MESSAGE_FORMAT", "SWAGGER_DOC",
					"OTHER"};
static const char *const source_types[] = {"INLINE", "MARKDOWN", "URL", "FILE"};
static const char *const visibilities[] = {"OWNER_ONLY", "PRIVATE", "API_LEVEL"};

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

static const char *enum_value(const char *const *vals, size_t n, const char *s)
{
	for (size_t i = 0; i < n; i++)
		if (strcasecmp(vals[i], s) == 0)
			return vals[i];
	return NULL;
}

static json_t *doc_json(const store_document *d, int with_content)
{
	json_t *o = json_pack("{s:s, s:s, s:s, s:s?, s:s, s:s?, s:s?, s:s?, s:s?, s:s, s:o, s:s?, "
			      "s:o, s:s?}",
			      "documentId", d->id, "name", d->name, "type", d->type, "summary",
			      d->summary, "sourceType", d->source_type, "sourceUrl", d->source_url,
			      "fileName", d->file_name, "inlineContent",
			      with_content ? d->inline_content : NULL, "otherTypeName",
			      d->other_type_name, "visibility", d->visibility, "createdTime",
			      publisher_time_json(d->created_ms), "createdBy", d->created_by,
			      "lastUpdatedTime", publisher_time_json(d->updated_ms), "lastUpdatedBy",
			      d->updated_by);
	return o;
}

/*
 * Validates a document object into d (fields absent keep d's values, so an
 * update starts from the stored document). Answers 400 and returns -1 on
 * error.
 */
static int parse_doc(http_req *r, json_t *in, store_document *d, int update)
{
	const char *k;
	json_t *v;
	json_object_foreach(in, k, v) {
		int ro = strcmp(k, "documentId") == 0 || strcmp(k, "fileName") == 0 ||
			 strcmp(k, "createdTime") == 0 || strcmp(k, "createdBy") == 0 ||
			 strcmp(k, "lastUpdatedTime") == 0 || strcmp(k, "lastUpdatedBy") == 0;
		if (ro)
			continue;
		if (strcmp(k, "name") != 0 && strcmp(k, "type") != 0 && strcmp(k, "summary") != 0 &&
		    strcmp(k, "sourceType") != 0 && strcmp(k, "sourceUrl") != 0 &&
		    strcmp(k, "inlineContent") != 0 && strcmp(k, "otherTypeName") != 0 &&
		    strcmp(k, "visibility") != 0) {
			http_reply_error(r, 400, "Unknown field '%s' in the document: use name, type, "
						 "summary, sourceType, sourceUrl, inlineContent, "
						 "otherTypeName and visibility",
					 k);
			return -1;
		}
		if (json_is_null(v)) {
			if (strcmp(k, "summary") == 0)
				d->summary = NULL;
			else if (strcmp(k, "sourceUrl") == 0)
				d->source_url = NULL;
			else if (strcmp(k, "otherTypeName") == 0)
				d->other_type_name = NULL;
			else if (strcmp(k, "inlineContent") == 0)
				d->inline_content = NULL;
			continue;
		}
		if (!json_is_string(v)) {
			http_reply_error(r, 400, "Field '%s' of the document must be a string", k);
			return -1;
		}
		const char *s = arena_strdup(r->pool, json_string_value(v));
		if (strcmp(k, "name") == 0) {
			if (!update)
				d->name = s;
		} else if (strcmp(k, "type") == 0) {
			d->type = enum_value(doc_types, NELEM(doc_types), s);
			if (d->type == NULL) {
				http_reply_error(r, 400, "Document type '%s' is unknown: use HOWTO, "
							 "SAMPLES, PUBLIC_FORUM, SUPPORT_FORUM, "
							 "API_MESSAGE_FORMAT, SWAGGER_DOC or OTHER",
						 s);
				return -1;
			}
		} else if (strcmp(k, "sourceType") == 0) {
			d->source_type = enum_value(source_types, NELEM(source_types), s);
			if (d->source_type == NULL) {
				http_reply_error(r, 400, "Document sourceType '%s' is unknown: use "
							 "INLINE, MARKDOWN, URL or FILE",
						 s);
				return -1;
			}
		} else if (strcmp(k, "visibility") == 0) {
			d->visibility = enum_value(visibilities, NELEM(visibilities), s);
			if (d->visibility == NULL) {
				http_reply_error(r, 400, "Document visibility '%s' is unknown: use "
							 "OWNER_ONLY, PRIVATE or API_LEVEL",
						 s);
				return -1;
			}
		} else if (strcmp(k, "summary") == 0) {
			d->summary = s;
		} else if (strcmp(k, "sourceUrl") == 0) {
			d->source_url = *s ? s : NULL;
		} else if (strcmp(k, "otherTypeName") == 0) {
			d->other_type_name = *s ? s : NULL;
		} else {
			d->inline_content = s;
		}
	}
	if (d->name == NULL || *d->name == '\0' || strlen(d->name) > 60) {
		http_reply_error(r, 400, "The document needs a 'name' of 1 to 60 characters");
		return -1;
	}
	for (const char *p = d->name; *p; p++)
		if ((unsigned char)*p < 0x20) {
			http_reply_error(r, 400, "The document name must not contain control "
						 "characters");
			return -1;
		}
	if (d->type == NULL) {
		http_reply_error(r, 400, "The document needs a 'type': HOWTO, SAMPLES, PUBLIC_FORUM, "
					 "SUPPORT_FORUM, API_MESSAGE_FORMAT, SWAGGER_DOC or OTHER");
		return -1;
	}
	if (d->source_type == NULL) {
		http_reply_error(r, 400, "The document needs a 'sourceType': INLINE, MARKDOWN, URL or "
					 "FILE");
		return -1;
	}
	if (d->visibility == NULL)
		d->visibility = "API_LEVEL";
	if (strcmp(d->type, "OTHER") == 0 && (d->other_type_name == NULL || !*d->other_type_name)) {
		http_reply_error(r, 400, "'otherTypeName' is required when the document type is OTHER");
		return -1;
	}
	if (strcmp(d->type, "OTHER") != 0)
		d->other_type_name = NULL;
	if (d->summary != NULL && strlen(d->summary) > 32766) {
		http_reply_error(r, 400, "The document summary is longer than 32766 characters");
		return -1;
	}
	if (strcmp(d->source_type, "URL") == 0) {
		char err[256];
		if (d->source_url == NULL) {
			http_reply_error(r, 400, "'sourceUrl' is required when sourceType is URL");
			return -1;
		}
		if (publisher_dto_url(d->source_url, err, sizeof(err)) != 0) {
			http_reply_error(r, 400, "'sourceUrl' %s", err);
			return -1;
		}
		d->inline_content = NULL;
		d->file_name = d->file_type = d->file_content = NULL;
	} else {
		d->source_url = NULL;
	}
	if (strcmp(d->source_type, "FILE") == 0)
		d->inline_content = NULL;
	else
		d->file_name = d->file_type = d->file_content = NULL;
	return 0;
}

/* Loads the API and, for writes, checks the caller may change it. */
static int load_api(http_req *r, store_api *a, int write)
{
	if (publisher_load_api(r, http_param(r, "apiId"), a) != 0)
		return -1;
	if (write && publisher_require_modify(r, a, 0) != 0)
		return -1;
	return 0;
}

static int load_doc(http_req *r, const store_api *a, store_document *d)
{
	const char *id = http_param(r, "documentId");
	apim_rc rc = store_document_get(r->ctx->shared, r->pool, a->id, id, d);
	if (rc == APIM_ENOTFOUND) {
		http_reply_error(r, 404, "Document %s of API %s not found", id, a->id);
		return -1;
	}
	if (rc != APIM_OK) {
		http_reply_store_error(r, rc, "document");
		return -1;
	}
	return 0;
}

static void h_list(http_req *r)
{
	store_api a;
	int64_t limit, offset, total;
	store_document *docs;
	size_t n;
	if (load_api(r, &a, 0) != 0 || http_paging(r, &limit, &offset) != 0)
		return;
	apim_rc rc = store_document_list(r->ctx->shared, r->pool, a.id, offset, limit, &docs, &n,
					 &total);
	if (rc != APIM_OK) {
		http_reply_store_error(r, rc, "documents");
		return;
	}
	json_t *list = json_array();
	for (size_t i = 0; i < n; i++)
		json_array_append_new(list, doc_json(&docs[i], 0));
	http_reply_list(r, list, total, limit, offset);
}

static void h_create(http_req *r)
{
	store_api a;
	store_document d;
	if (load_api(r, &a, 1) != 0)
		return;
	json_t *in = http_json_body(r, JSON_OBJECT);
	if (in == NULL)
		return;
	memset(&d, 0, sizeof(d));
	if (parse_doc(r, in, &d, 0) != 0)
		return;
	apim_uuid(d.id);
	d.api_id = a.id;
	d.created_by = d.updated_by = r->who->username;
	d.created_ms = d.updated_ms = apim_now_ms();
	apim_rc rc = store_document_insert(r->ctx->shared, &d);
	if (rc == APIM_ECONFLICT) {
		http_reply_error(r, 409, "API %s already has a document named %s: choose another "
					 "name",
				 a.name, d.name);
		return;
	}
	if (rc != APIM_OK) {
		http_reply_store_error(r, rc, "document");
		return;
	}
	http_set_header(r, "Location",
			arena_sprintf(r->pool, PUB_BASE "/apis/%s/documents/%s", a.id, d.id));
	http_reply_json(r, 201, doc_json(&d, 1));
}

static void h_get(http_req *r)
{
	store_api a;
	store_document d;
	if (load_api(r, &a, 0) != 0 || load_doc(r, &a, &d) != 0)
		return;
	http_reply_json(r, 200, doc_json(&d, 1));
}

static void h_update(http_req *r)
{
	store_api a;
	store_document d;
	if (load_api(r, &a, 1) != 0 || load_doc(r, &a, &d) != 0)
		return;
	json_t *in = http_json_body(r, JSON_OBJECT);
	if (in == NULL)
		return;
	json_t *cur = doc_json(&d, 1);
	int ok = http_check_if_match(r, cur) == 0;
	json_decref(cur);
	if (!ok || parse_doc(r, in, &d, 1) != 0)
		return;
	d.updated_by = r->who->username;
	d.updated_ms = apim_now_ms();
	apim_rc rc = store_document_update(r->ctx->shared, &d);
	if (rc != APIM_OK) {
		http_reply_store_error(r, rc, "document");
		return;
	}
	http_reply_json(r, 200, doc_json(&d, 1));
}

static void h_delete(http_req *r)
{
	store_api a;
	store_document d;
	if (load_api(r, &a, 1) != 0 || load_doc(r, &a, &d) != 0)
		return;
	apim_rc rc = store_document_delete(r->ctx->shared, a.id, d.id);
	if (rc != APIM_OK) {
		http_reply_store_error(r, rc, "document");
		return;
	}
	http_reply_empty(r, 200);
}

static void h_get_content(http_req *r)
{
	store_api a;
	store_document d;
	if (load_api(r, &a, 0) != 0 || load_doc(r, &a, &d) != 0)
		return;
	if (strcmp(d.source_type, "URL") == 0) {
		http_set_header(r, "Location", d.source_url);
		http_reply_empty(r, 303);
		return;
	}
	if (strcmp(d.source_type, "FILE") == 0) {
		if (d.file_content == NULL) {
			http_reply_error(r, 404, "Document %s has no file yet: upload one with POST "
						 ".../content (multipart field 'file')",
					 d.name);
			return;
		}
		size_t len = 0;
		unsigned char *bytes =
			apim_base64_decode(d.file_content, strlen(d.file_content), &len);
		if (bytes == NULL) {
			http_reply_error(r, 500, "The stored file of document %s is unreadable", d.name);
			return;
		}
		char *disp = arena_sprintf(r->pool, "attachment; filename=\"%s\"",
					   d.file_name ? d.file_name : "document");
		http_set_header(r, "Content-Disposition", disp);
		http_reply_raw(r, 200, d.file_type ? d.file_type : "application/octet-stream",
			       (const char *)bytes, len);
		free(bytes);
		return;
	}
	if (d.inline_content == NULL) {
		http_reply_error(r, 404, "Document %s has no content yet: add it with POST .../content "
					 "(multipart field 'inlineContent')",
				 d.name);
		return;
	}
	http_reply_raw(r, 200, "text/plain", d.inline_content, strlen(d.inline_content));
}

/* A file name safe to echo in Content-Disposition. */
static const char *safe_file_name(arena *pool, const char *name)
{
	if (name == NULL || *name == '\0')
		return "document";
	const char *base = strrchr(name, '/');
	base = base ? base + 1 : name;
	const char *b2 = strrchr(base, '\\');
	base = b2 ? b2 + 1 : base;
	char *s = arena_strdup(pool, *base ? base : "document");
	for (char *p = s; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == '"' || *p == ';')
			*p = '_';
	if (strlen(s) > 255)
		s[255] = '\0';
	return s;
}

static void h_add_content(http_req *r)
{
	store_api a;
	store_document d;
	char err[256];
	if (load_api(r, &a, 1) != 0 || load_doc(r, &a, &d) != 0)
		return;
	const char *ct = http_header(r, "Content-Type");
	const char *inline_text = NULL;
	const publisher_part *file = NULL;
	if (publisher_multipart_is(ct)) {
		publisher_part *parts;
		size_t n;
		apim_rc rc = publisher_multipart_parse(r->pool, ct, r->body, r->body_len, &parts, &n,
						       err, sizeof(err));
		if (rc != APIM_OK) {
			http_reply_error(r, 400, "%s", err);
			return;
		}
		const publisher_part *ic = publisher_multipart_get(parts, n, "inlineContent");
		file = publisher_multipart_get(parts, n, "file");
		if (ic != NULL && file != NULL) {
			http_reply_error(r, 400, "Only one of 'file' and 'inlineContent' may be given");
			return;
		}
		if (ic == NULL && file == NULL) {
			http_reply_error(r, 400, "Either 'file' or 'inlineContent' must be given");
			return;
		}
		if (ic != NULL) {
			if (memchr(ic->data, '\0', ic->len) != NULL) {
				http_reply_error(r, 400, "'inlineContent' must be text");
				return;
			}
			inline_text = ic->data;
		}
	} else {
		if (r->body == NULL || r->body_len == 0) {
			http_reply_error(r, 400, "Send the content as multipart/form-data "
						 "('inlineContent' or 'file') or as a text body");
			return;
		}
		if (memchr(r->body, '\0', r->body_len) != NULL) {
			http_reply_error(r, 400, "A raw content body must be text; upload files as "
						 "multipart field 'file'");
			return;
		}
		inline_text = r->body;
	}
	if (strcmp(d.source_type, "URL") == 0) {
		http_reply_error(r, 400, "Document %s has sourceType URL: it has no content; change "
					 "its sourceUrl instead",
				 d.name);
		return;
	}
	if (file != NULL) {
		if (strcmp(d.source_type, "FILE") != 0) {
			http_reply_error(r, 400, "Document %s has sourceType %s, not FILE: send the "
						 "content as 'inlineContent'",
					 d.name, d.source_type);
			return;
		}
		char *b64 = apim_base64_encode(file->data, file->len);
		if (b64 == NULL) {
			http_reply_error(r, 500, "Out of memory");
			return;
		}
		d.file_content = arena_strdup(r->pool, b64);
		free(b64);
		d.file_name = safe_file_name(r->pool, file->filename);
		d.file_type = file->content_type ? file->content_type : "application/octet-stream";
	} else {
		if (strcmp(d.source_type, "FILE") == 0) {
			http_reply_error(r, 400, "Document %s has sourceType FILE: upload the content "
						 "as multipart field 'file'",
					 d.name);
			return;
		}
		d.inline_content = inline_text;
	}
	d.updated_by = r->who->username;
	d.updated_ms = apim_now_ms();
	apim_rc rc = store_document_update(r->ctx->shared, &d);
	if (rc != APIM_OK) {
		http_reply_store_error(r, rc, "document");
		return;
	}
	http_set_header(r, "Location",
			arena_sprintf(r->pool, PUB_BASE "/apis/%s/documents/%s/content", a.id, d.id));
	http_reply_json(r, 201, doc_json(&d, 0));
}

apim_rc publisher_document_delete_all(http_req *r, const char *api_id)
{
	return store_document_delete_all(r->ctx->shared, api_id);
}

apim_rc publisher_document_copy(http_req *r, const char *from_api, const char *to_api)
{
	store_document *docs;
	size_t n = 0;
	db *d = r->ctx->shared;
	apim_rc rc = store_document_list_full(d, r->pool, from_api, &docs, &n);
	for (size_t i = 0; rc == APIM_OK && i < n; i++) {
		apim_uuid(docs[i].id);
		docs[i].api_id = to_api;
		rc = store_document_insert(d, &docs[i]);
	}
	return rc;
}

static const http_route document_routes[] = {
	{"GET", PUB_BASE "/apis/{apiId}/documents", h_list, PUB_SCOPES_VIEW, 0},
	{"POST", PUB_BASE "/apis/{apiId}/documents", h_create, PUB_SCOPES_DOC_WRITE, 0},
	{"GET", PUB_BASE "/apis/{apiId}/documents/{documentId}", h_get, PUB_SCOPES_VIEW, 0},
	{"PUT", PUB_BASE "/apis/{apiId}/documents/{documentId}", h_update, PUB_SCOPES_DOC_WRITE, 0},
	{"DELETE", PUB_BASE "/apis/{apiId}/documents/{documentId}", h_delete, PUB_SCOPES_DOC_WRITE,
	 0},
	{"GET", PUB_BASE "/apis/{apiId}/documents/{documentId}/content", h_get_content,
	 PUB_SCOPES_VIEW, 0},
	{"POST", PUB_BASE "/apis/{apiId}/documents/{documentId}/content", h_add_content,
	 PUB_SCOPES_DOC_WRITE, HTTP_RAW_BODY},
};

void publisher_document_routes(http_server *s)
{
	http_server_routes(s, document_routes, sizeof(document_routes) / sizeof(document_routes[0]));
}
