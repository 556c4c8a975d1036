/*
 * store_document.h: API documents in shareddb (migration module
 * "publisher-documents"), like the reference's registry resources.
 *
 *   am_api_document (id, api_id, name, type, other_type_name, summary,
 *                    source_type, source_url, visibility, inline_content,
 *                    file_name, file_type, file_content (base64),
 *                    created_by, created_ms, updated_by, updated_ms);
 *                    name unique per API.
 */
#ifndef APIM_STORE_DOCUMENT_H
#define APIM_STORE_DOCUMENT_H

#include <stddef.h>
#include <stdint.h>

#include "common/arena.h"
#include "common/error.h"
#include "store/db.h"

typedef struct store_document {
	char id[37];
	const char *api_id;
	const char *name;
	const char *type;
	const char *other_type_name;
	const char *summary;
	const char *source_type;
	const char *source_url;
	const char *visibility;
	const char *inline_content;
	const char *file_name;
	const char *file_type;
	const char *file_content; /* base64 */
	const char *created_by;
	int64_t created_ms;
	const char *updated_by;
	int64_t updated_ms;
} store_document;

apim_rc store_document_migrate(db *d);

/* APIM_ECONFLICT when the API already has a document of that name. */
apim_rc store_document_insert(db *d, const store_document *doc);
/* Replaces every column but id, api_id, created_*. */
apim_rc store_document_update(db *d, const store_document *doc);
apim_rc store_document_get(db *d, arena *pool, const char *api_id, const char *id,
			   store_document *out);
/* Documents of an API by name, without their content. */
apim_rc store_document_list(db *d, arena *pool, const char *api_id, int64_t offset,
			    int64_t limit, store_document **out, size_t *n, int64_t *total);
/* Every document of the API, content included (for copying). */
apim_rc store_document_list_full(db *d, arena *pool, const char *api_id, store_document **out,
				 size_t *n);
apim_rc store_document_delete(db *d, const char *api_id, const char *id);
apim_rc store_document_delete_all(db *d, const char *api_id);

#endif
