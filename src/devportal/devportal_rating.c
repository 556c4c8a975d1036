/*
 * devportal_rating.c: ratings and comments of the APIs a caller can see
 * (/api/am/devportal/v3/apis/{apiId}/{ratings,user-rating,comments}).
 *
 * A user rates an API 1 to 5, once (a new rating replaces the old one);
 * the API's avgRating is the mean of its ratings with one decimal, as a
 * string like the reference's. Comments are up to 512 characters; a
 * comment may reply to a root comment (?replyTo=). Reading is public for
 * visible APIs; writing needs apim:subscribe; a user edits and deletes only
 * their own comments (admins may delete any).
 *
 * Times of comments are ISO-8601 UTC strings ("2024-05-01T10:00:00.000Z").
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "auth/auth_users.h"
#include "common/log.h"
#include "common/util.h"
#include "devportal/devportal_internal.h"
#include "store/store_rating.h"

#define DP_BASE "/api/am/devportal/v3"
#define COMMENT_MAX 512
#define CATEGORY_MAX 64
#define REPLIES_SHOWN 25

apim_rc devportal_rating_migrate(apim_ctx *ctx)
{
	apim_rc rc = store_rating_migrate(ctx->shared);
	if (rc != APIM_OK)
		log_error("devportal", "ratings migration failed: %s", apim_strerror(rc));
	return rc;
}

/* Pagination object as http_reply_list renders it, for envelopes that carry
 * more than {count, list, pagination}. */
static json_t *rating_pagination(http_req *r, const char *path, int64_t total, int64_t limit,
				 int64_t offset)
{
	const char *next = "", *prev = "";
	if (offset + limit < total)
		next = arena_sprintf(r->pool, "%s?limit=%" PRId64 "&offset=%" PRId64, path, limit,
				     offset + limit);
	if (offset > 0)
		prev = arena_sprintf(r->pool, "%s?limit=%" PRId64 "&offset=%" PRId64, path, limit,
				     offset - limit < 0 ? 0 : offset - limit);
	return json_pack("{s:I, s:I, s:I, s:s, s:s}", "offset", (json_int_t)offset, "limit",
			 (json_int_t)limit, "total", (json_int_t)total, "next", next, "previous",
			 prev);
}

/* ---------- ratings ---------- */

static json_t *rating_json(const store_rating *rt)
{
	return json_pack("{s:s, s:s, s:s, s:i}", "ratingId", rt->id, "apiId", rt->api_id,
			 "ratedBy", rt->username, "rating", rt->rating);
}

static void h_ratings_list(http_req *r)
{
	store_api a;
	int64_t limit, offset, total = 0, count = 0, sum = 0;
	store_rating *rs;
	size_t n;
	if (http_paging(r, &limit, &offset) != 0)
		return;
	if (devportal_discovery_load_api(r, http_param(r, "apiId"), &a) != 0)
		return;
	db *d = r->ctx->shared;
	apim_rc rc = store_rating_list(d, r->pool, a.id, offset, limit, &rs, &n, &total);
	if (rc == APIM_OK)
		rc = store_rating_summary(d, a.id, &count, &sum);
	int user_rating = 0;
	if (rc == APIM_OK && r->who != NULL) {
		store_rating mine;
		rc = store_rating_get(d, r->pool, a.id, r->who->username, &mine);
		if (rc == APIM_OK)
			user_rating = mine.rating;
		else if (rc == APIM_ENOTFOUND)
			rc = APIM_OK;
	}
	if (rc != APIM_OK) {
		http_reply_store_error(r, rc, "ratings");
		return;
	}
	json_t *list = json_array();
	for (size_t i = 0; i < n; i++)
		json_array_append_new(list, rating_json(&rs[i]));
	char avg[32];
	snprintf(avg, sizeof(avg), "%.1f", count > 0 ? (double)sum / (double)count : 0.0);
	json_t *o = json_pack("{s:s, s:i, s:I, s:o, s:o}", "avgRating", avg, "userRating",
			      user_rating, "count", (json_int_t)n, "list", list, "pagination",
			      rating_pagination(r, r->path, total, limit, offset));
	http_reply_json(r, 200, o);
}

static void h_user_rating_get(http_req *r)
{
	store_api a;
	store_rating rt;
	if (devportal_discovery_load_api(r, http_param(r, "apiId"), &a) != 0)
		return;
	apim_rc rc = store_rating_get(r->ctx->shared, r->pool, a.id, r->who->username, &rt);
	if (rc == APIM_ENOTFOUND) {
		/* as the reference: not rated yet is a rating of 0, not an error */
		http_reply_json(r, 200, json_pack("{s:n, s:s, s:s, s:i}", "ratingId", "apiId", a.id,
						  "ratedBy", r->who->username, "rating", 0));
		return;
	}
	if (rc != APIM_OK) {
		http_reply_store_error(r, rc, "rating");
		return;
	}
	http_reply_json(r, 200, rating_json(&rt));
}

static void h_user_rating_put(http_req *r)
{
	store_api a;
	store_rating rt;
	if (devportal_discovery_load_api(r, http_param(r, "apiId"), &a) != 0)
		return;
	json_t *body = http_json_body(r, JSON_OBJECT);
	if (body == NULL)
		return;
	json_t *v = json_object_get(body, "rating");
	if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 5) {
		http_reply_error(r, 400, "'rating' must be an integer from 1 to 5");
		return;
	}
	apim_rc rc = store_rating_put(r->ctx->shared, r->pool, a.id, r->who->username,
				      (int)json_integer_value(v), &rt);
	if (rc != APIM_OK) {
		http_reply_store_error(r, rc, "rating");
		return;
	}
	http_reply_json(r, 200, rating_json(&rt));
}

static void h_user_rating_delete(http_req *r)
{
	store_api a;
	if (devportal_discovery_load_api(r, http_param(r, "apiId"), &a) != 0)
		return;
	apim_rc rc = store_rating_delete(r->ctx->shared, a.id, r->who->username);
	if (rc == APIM_ENOTFOUND) {
		http_reply_error(r, 404, "You have not rated API %s", a.id);
		return;
	}
	if (rc != APIM_OK) {
		http_reply_store_error(r, rc, "rating");
		return;
	}
	http_reply_empty(r, 200);
}

/* ---------- comments ---------- */

static json_t *comment_time(int64_t ms)
{
	char buf[40];
	apim_iso8601(ms, buf, sizeof(buf));
	return json_string(buf);
}

/* {firstName, lastName, fullName} of a commenter (nulls when unknown). */
static json_t *comment_commenter(http_req *r, const char *username)
{
	auth_user u;
	if (auth_users_get_by_name(r->ctx, r->pool, username, &u) != APIM_OK)
		return json_pack("{s:n, s:n, s:s}", "firstName", "lastName", "fullName", username);
	const char *full = u.given_name && u.family_name
				   ? arena_sprintf(r->pool, "%s %s", u.given_name, u.family_name)
				   : u.given_name ? u.given_name
				   : u.family_name ? u.family_name
						   : username;
	return json_pack("{s:s?, s:s?, s:s}", "firstName", u.given_name, "lastName", u.family_name,
			 "fullName", full);
}

static json_t *comment_json(http_req *r, const store_comment *c, int commenter)
{
	json_t *o = json_pack("{s:s, s:s, s:o, s:s, s:o, s:s, s:s?, s:s}", "id", c->id, "content",
			      c->content, "createdTime", comment_time(c->created_ms), "createdBy",
			      c->created_by, "updatedTime", comment_time(c->updated_ms), "category",
			      c->category, "parentCommentId", c->parent_id, "entryPoint",
			      c->entry_point);
	json_object_set_new(o, "commenterInfo",
			    commenter ? comment_commenter(r, c->created_by) : json_null());
	return o;
}

/* The replies to root comment c as a CommentList (the newest ones). */
static json_t *comment_replies(http_req *r, const store_comment *c, int commenter)
{
	store_comment *rs;
	size_t n = 0;
	int64_t total = 0;
	json_t *list = json_array();
	apim_rc rc = store_comment_list(r->ctx->shared, r->pool, c->api_id, c->id, 0,
					REPLIES_SHOWN, &rs, &n, &total);
	if (rc != APIM_OK)
		log_warn("devportal", "replies to comment %s unreadable: %s", c->id,
			 apim_strerror(rc));
	for (size_t i = 0; i < n; i++)
		json_array_append_new(list, comment_json(r, &rs[i], commenter));
	const char *path = arena_sprintf(r->pool, DP_BASE "/apis/%s/comments/%s/replies",
					 c->api_id, c->id);
	return json_pack("{s:I, s:o, s:o}", "count", (json_int_t)n, "list", list, "pagination",
			 rating_pagination(r, path, total, REPLIES_SHOWN, 0));
}

static int comment_flag(http_req *r, const char *name, int *out)
{
	const char *v = http_query(r, name);
	*out = 0;
	if (v == NULL || *v == '\0' || strcasecmp(v, "false") == 0)
		return 0;
	if (strcasecmp(v, "true") == 0) {
		*out = 1;
		return 0;
	}
	http_reply_error(r, 400, "Query parameter '%s' must be true or false, not '%s'", name, v);
	return -1;
}

/* Loads comment {commentId} of API a; -1 after answering 404. */
static int comment_load(http_req *r, const store_api *a, store_comment *c)
{
	const char *id = http_param(r, "commentId");
	apim_rc rc = apim_uuid_valid(id)
			     ? store_comment_get(r->ctx->shared, r->pool, a->id, id, c)
			     : APIM_ENOTFOUND;
	if (rc == APIM_ENOTFOUND) {
		http_reply_error(r, 404, "Comment %s of API %s not found", id ? id : "", a->id);
		return -1;
	}
	if (rc != APIM_OK) {
		http_reply_store_error(r, rc, "comment");
		return -1;
	}
	return 0;
}

/* Number of UTF-8 characters. */
static size_t comment_chars(const char *s)
{
	size_t n = 0;
	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
		if ((*p & 0xc0) != 0x80)
			n++;
	return n;
}

/*
 * Validates content and category of a comment body into *content and
 * *category (unchanged when absent and !required). -1 after answering 400.
 */
static int comment_parse(http_req *r, json_t *body, int required, const char **content,
			 const char **category)
{
	json_t *jc = json_object_get(body, "content"), *jcat = json_object_get(body, "category");
	if (jc != NULL && !json_is_null(jc)) {
		if (!json_is_string(jc)) {
			http_reply_error(r, 400, "'content' must be a string");
			return -1;
		}
		const char *s = json_string_value(jc);
		size_t n = comment_chars(s);
		int blank = 1;
		for (const char *p = s; *p; p++)
			if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r')
				blank = 0;
		if (n == 0 || blank || n > COMMENT_MAX) {
			http_reply_error(r, 400, "'content' must be 1 to %d characters (not only "
						 "spaces); it has %zu",
					 COMMENT_MAX, n);
			return -1;
		}
		*content = arena_strdup(r->pool, s);
	} else if (required) {
		http_reply_error(r, 400, "'content' is required: the text of the comment (1 to %d "
					 "characters)",
				 COMMENT_MAX);
		return -1;
	}
	if (jcat != NULL && !json_is_null(jcat)) {
		const char *s = json_string_value(jcat);
		if (s == NULL || *s == '\0' || strlen(s) > CATEGORY_MAX) {
			http_reply_error(r, 400, "'category' must be a string of 1 to %d characters "
						 "(default: general)",
					 CATEGORY_MAX);
			return -1;
		}
		for (const char *p = s; *p; p++)
			if ((unsigned char)*p < 0x20) {
				http_reply_error(r, 400, "'category' must not contain control "
							 "characters");
				return -1;
			}
		*category = arena_strdup(r->pool, s);
	}
	return 0;
}

static void h_comments_list(http_req *r)
{
	store_api a;
	int64_t limit, offset, total = 0;
	int commenter;
	store_comment *cs;
	size_t n;
	if (http_paging(r, &limit, &offset) != 0 ||
	    comment_flag(r, "includeCommenterInfo", &commenter) != 0)
		return;
	if (devportal_discovery_load_api(r, http_param(r, "apiId"), &a) != 0)
		return;
	apim_rc rc = store_comment_list(r->ctx->shared, r->pool, a.id, NULL, offset, limit, &cs, &n,
					&total);
	if (rc != APIM_OK) {
		http_reply_store_error(r, rc, "comments");
		return;
	}
	json_t *list = json_array();
	for (size_t i = 0; i < n; i++) {
		json_t *o = comment_json(r, &cs[i], commenter);
		json_object_set_new(o, "replies", comment_replies(r, &cs[i], commenter));
		json_array_append_new(list, o);
	}
	http_reply_list(r, list, total, limit, offset);
}

static void h_comment_replies(http_req *r)
{
	store_api a;
	store_comment c, *cs;
	int64_t limit, offset, total = 0;
	int commenter;
	size_t n;
	if (http_paging(r, &limit, &offset) != 0 ||
	    comment_flag(r, "includeCommenterInfo", &commenter) != 0)
		return;
	if (devportal_discovery_load_api(r, http_param(r, "apiId"), &a) != 0 ||
	    comment_load(r, &a, &c) != 0)
		return;
	apim_rc rc = store_comment_list(r->ctx->shared, r->pool, a.id, c.id, offset, limit, &cs, &n,
					&total);
	if (rc != APIM_OK) {
		http_reply_store_error(r, rc, "comments");
		return;
	}
	json_t *list = json_array();
	for (size_t i = 0; i < n; i++)
		json_array_append_new(list, comment_json(r, &cs[i], commenter));
	http_reply_list(r, list, total, limit, offset);
}

static void h_comment_get(http_req *r)
{
	store_api a;
	store_comment c;
	int commenter;
	if (comment_flag(r, "includeCommenterInfo", &commenter) != 0)
		return;
	if (devportal_discovery_load_api(r, http_param(r, "apiId"), &a) != 0 ||
	    comment_load(r, &a, &c) != 0)
		return;
	json_t *o = comment_json(r, &c, commenter);
	if (c.parent_id == NULL)
		json_object_set_new(o, "replies", comment_replies(r, &c, commenter));
	http_reply_json(r, 200, o);
}

static void h_comment_create(http_req *r)
{
	store_api a;
	store_comment c, parent;
	if (devportal_discovery_load_api(r, http_param(r, "apiId"), &a) != 0)
		return;
	json_t *body = http_json_body(r, JSON_OBJECT);
	if (body == NULL)
		return;
	memset(&c, 0, sizeof(c));
	c.category = "general";
	if (comment_parse(r, body, 1, &c.content, &c.category) != 0)
		return;
	const char *reply_to = http_query(r, "replyTo");
	if (reply_to != NULL && *reply_to != '\0') {
		apim_rc rc = apim_uuid_valid(reply_to)
				     ? store_comment_get(r->ctx->shared, r->pool, a.id, reply_to,
							 &parent)
				     : APIM_ENOTFOUND;
		if (rc == APIM_ENOTFOUND) {
			http_reply_error(r, 404, "Comment %s (replyTo) of API %s not found", reply_to,
					 a.id);
			return;
		}
		if (rc != APIM_OK) {
			http_reply_store_error(r, rc, "comment");
			return;
		}
		if (parent.parent_id != NULL) {
			http_reply_error(r, 400, "Comment %s is itself a reply: reply to comment %s "
						 "instead",
					 reply_to, parent.parent_id);
			return;
		}
		c.parent_id = parent.id;
	}
	apim_uuid(c.id);
	c.api_id = a.id;
	c.entry_point = "devPortal";
	c.created_by = r->who->username;
	c.created_ms = c.updated_ms = apim_now_ms();
	apim_rc rc = store_comment_insert(r->ctx->shared, &c);
	if (rc != APIM_OK) {
		http_reply_store_error(r, rc, "comment");
		return;
	}
	http_set_header(r, "Location",
			arena_sprintf(r->pool, DP_BASE "/apis/%s/comments/%s", a.id, c.id));
	http_reply_json(r, 201, comment_json(r, &c, 0));
}

static void h_comment_update(http_req *r)
{
	store_api a;
	store_comment c;
	if (devportal_discovery_load_api(r, http_param(r, "apiId"), &a) != 0 ||
	    comment_load(r, &a, &c) != 0)
		return;
	if (strcmp(c.created_by, r->who->username) != 0) {
		http_reply_error(r, 403, "You may edit only your own comments: comment %s was "
					 "written by %s",
				 c.id, c.created_by);
		return;
	}
	json_t *body = http_json_body(r, JSON_OBJECT);
	if (body == NULL)
		return;
	if (comment_parse(r, body, 0, &c.content, &c.category) != 0)
		return;
	c.updated_ms = apim_now_ms();
	apim_rc rc = store_comment_update(r->ctx->shared, &c);
	if (rc != APIM_OK) {
		http_reply_store_error(r, rc, "comment");
		return;
	}
	http_reply_json(r, 200, comment_json(r, &c, 0));
}

static void h_comment_delete(http_req *r)
{
	store_api a;
	store_comment c;
	if (devportal_discovery_load_api(r, http_param(r, "apiId"), &a) != 0 ||
	    comment_load(r, &a, &c) != 0)
		return;
	if (strcmp(c.created_by, r->who->username) != 0 && !principal_is_admin(r->who)) {
		http_reply_error(r, 403, "You may delete only your own comments: comment %s was "
					 "written by %s",
				 c.id, c.created_by);
		return;
	}
	apim_rc rc = store_comment_delete(r->ctx->shared, a.id, c.id);
	if (rc != APIM_OK) {
		http_reply_store_error(r, rc, "comment");
		return;
	}
	http_reply_empty(r, 200);
}

#define SUBSCRIBE "apim:subscribe"

static const http_route rating_routes[] = {
	{"GET", DP_BASE "/apis/{apiId}/ratings", h_ratings_list, NULL, HTTP_PUBLIC},
	{"GET", DP_BASE "/apis/{apiId}/user-rating", h_user_rating_get, SUBSCRIBE, 0},
	{"PUT", DP_BASE "/apis/{apiId}/user-rating", h_user_rating_put, SUBSCRIBE, 0},
	{"DELETE", DP_BASE "/apis/{apiId}/user-rating", h_user_rating_delete, SUBSCRIBE, 0},
	{"GET", DP_BASE "/apis/{apiId}/comments", h_comments_list, NULL, HTTP_PUBLIC},
	{"POST", DP_BASE "/apis/{apiId}/comments", h_comment_create, SUBSCRIBE, 0},
	{"GET", DP_BASE "/apis/{apiId}/comments/{commentId}", h_comment_get, NULL, HTTP_PUBLIC},
	{"PATCH", DP_BASE "/apis/{apiId}/comments/{commentId}", h_comment_update, SUBSCRIBE, 0},
	{"DELETE", DP_BASE "/apis/{apiId}/comments/{commentId}", h_comment_delete,
	 SUBSCRIBE " apim:admin", 0},
	{"GET", DP_BASE "/apis/{apiId}/comments/{commentId}/replies", h_comment_replies, NULL,
	 HTTP_PUBLIC},
};

void devportal_rating_routes(http_server *s)
{
	http_server_routes(s, rating_routes, sizeof(rating_routes) / sizeof(rating_routes[0]));
}
