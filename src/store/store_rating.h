/*
 * store_rating.h: the Developer Portal's API ratings and comments in
 * shareddb (migration module "devportal-ratings").
 *
 *   am_api_rating  (id, api_id, username, rating 1..5, created_ms,
 *                   updated_ms); one row per (api_id, username).
 *   am_api_comment (id, api_id, parent_id (NULL: a root comment, else the
 *                   comment it replies to), content, category, entry_point,
 *                   created_by, created_ms, updated_ms).
 *
 * Rows name users by username (as the reference's AM_API_RATINGS does by
 * subscriber) and APIs by id; there are no foreign keys across databases.
 * Every function runs one statement or a few on the calling thread's
 * connection. Strings of results come from the given pool.
 */
#ifndef APIM_STORE_RATING_H
#define APIM_STORE_RATING_H

#include <stddef.h>
#include <stdint.h>

#include "common/arena.h"
#include "common/error.h"
#include "store/db.h"

typedef struct store_rating {
	char id[37];
	const char *api_id;
	const char *username;
	int rating;
	int64_t created_ms;
	int64_t updated_ms;
} store_rating;

typedef struct store_comment {
	char id[37];
	const char *api_id;
	const char *parent_id; /* NULL for a root comment */
	const char *content;
	const char *category;
	const char *entry_point; /* "DEVPORTAL" */
	const char *created_by;
	int64_t created_ms;
	int64_t updated_ms;
} store_comment;

apim_rc store_rating_migrate(db *d);

/* Inserts the user's rating of the API or replaces it (the rating keeps its
 * id); *out (may be NULL) receives the stored row. */
apim_rc store_rating_put(db *d, arena *pool, const char *api_id, const char *username,
			 int rating, store_rating *out);
/* APIM_ENOTFOUND when the user has not rated the API. */
apim_rc store_rating_get(db *d, arena *pool, const char *api_id, const char *username,
			 store_rating *out);
apim_rc store_rating_delete(db *d, const char *api_id, const char *username);
/* The API's ratings, newest first. */
apim_rc store_rating_list(db *d, arena *pool, const char *api_id, int64_t offset, int64_t limit,
			  store_rating **out, size_t *n, int64_t *total);
/* Number and sum of the API's ratings (0 and 0 when none). */
apim_rc store_rating_summary(db *d, const char *api_id, int64_t *count, int64_t *sum);

apim_rc store_comment_insert(db *d, const store_comment *c);
/* APIM_ENOTFOUND unless the comment exists under that API. */
apim_rc store_comment_get(db *d, arena *pool, const char *api_id, const char *id,
			  store_comment *out);
/* Comments of the API replying to parent_id (NULL: the root comments),
 * newest first. */
apim_rc store_comment_list(db *d, arena *pool, const char *api_id, const char *parent_id,
			   int64_t offset, int64_t limit, store_comment **out, size_t *n,
			   int64_t *total);
/* Replaces content, category and updated_ms of (c->api_id, c->id). */
apim_rc store_comment_update(db *d, const store_comment *c);
/* Deletes the comment and the replies to it. APIM_ENOTFOUND when gone. */
apim_rc store_comment_delete(db *d, const char *api_id, const char *id);

/* Deletes every rating and comment of an API (after the API is deleted). */
apim_rc store_rating_delete_api(db *d, const char *api_id);

#endif
