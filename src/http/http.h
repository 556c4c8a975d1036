/*
 * http.h: the control plane's HTTP layer on libmicrohttpd.
 *
 * libmicrohttpd runs its internal epoll thread with a pool of worker
 * threads; handlers run on those pool threads and may block on the
 * database. Routing is a table of (method, path template with {param},
 * handler, required scopes). Every request gets an arena (req->pool) freed
 * when the response is queued; everything hanging off the request is
 * borrowed from it.
 *
 * Errors always use the reference body {code, message, description,
 * moreInfo, error[]} where code is the HTTP status; lists use
 * {count, list, pagination{offset, limit, total, next, previous}}.
 */
#ifndef APIM_HTTP_H
#define APIM_HTTP_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "common/arena.h"
#include "common/error.h"

struct apim_ctx;
struct principal;
typedef struct http_server http_server;
typedef struct http_req http_req;

typedef void (*http_handler)(http_req *r);

/* Route flags. */
#define HTTP_PUBLIC 0x1   /* no authentication needed (credentials still read if sent) */
#define HTTP_RAW_BODY 0x2 /* body is not JSON (form, text, YAML): no JSON parsing */
/* The handler reads Authorization itself (OAuth client credentials): the
 * layer neither authenticates nor rejects it. Implies HTTP_PUBLIC. */
#define HTTP_OWN_AUTH 0x4

typedef struct http_route {
	const char *method; /* "GET", "POST", ... */
	const char *path;   /* "/api/am/publisher/v4/apis/{apiId}" */
	http_handler handler;
	/* Space-separated scopes; the caller needs any one of them. NULL or ""
	 * with HTTP_PUBLIC unset: any authenticated caller. */
	const char *scopes;
	unsigned flags;
} http_route;

/*
 * Authenticates the Authorization header value (never NULL: callers pass
 * only present headers). On APIM_OK *out is a principal allocated from
 * r->pool. APIM_EUNAUTH/ELOCKED/EUNAVAIL are answered by the layer.
 * Installed by the auth module; the Key Manager adds bearer support later
 * behind the same hook.
 */
typedef apim_rc (*http_authenticator)(http_req *r, const char *authorization,
				      struct principal **out);

typedef struct http_server_opts {
	const char *host;
	int port;
	int threads;
	size_t max_body;       /* bytes */
	const char *tls_cert;  /* PEM file or NULL/"" */
	const char *tls_key;   /* PEM file or NULL/"" */
	const char *cors_origins; /* "" disables CORS */
	struct apim_ctx *ctx;  /* handed to handlers as r->ctx */
	http_authenticator authenticate;
} http_server_opts;

apim_rc http_server_create(http_server **out, const http_server_opts *opts);
/* Adds routes (the array must outlive the server). Before start only. */
void http_server_routes(http_server *s, const http_route *routes, size_t n);
apim_rc http_server_start(http_server *s);
/* Stops accepting, finishes in-flight requests, joins threads. */
void http_server_stop(http_server *s);
void http_server_destroy(http_server *s);
/* Prometheus text of the HTTP metrics into out (malloc'ed, appended). */
void http_server_metrics(http_server *s, char **buf, size_t *len, size_t *cap);
/* Appends formatted text to a growable buffer (*buf may start NULL). */
void http_buf_printf(char **buf, size_t *len, size_t *cap, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

struct http_req {
	arena *pool;
	struct apim_ctx *ctx;
	const char *method;
	const char *path; /* decoded path, no query string */
	const char *body; /* NUL-terminated copy of the body, or NULL */
	size_t body_len;
	const http_route *route;
	struct principal *who; /* NULL when anonymous */
	void *impl;           /* layer-private */
};

/* Path parameter by template name, query parameter, header (any case).
 * NULL when absent. Borrowed. */
const char *http_param(http_req *r, const char *name);
const char *http_query(http_req *r, const char *name);
const char *http_header(http_req *r, const char *name);

/*
 * The body parsed as JSON of the given type (JSON_OBJECT or JSON_ARRAY).
 * On a missing or malformed body, or the wrong type, answers 400 with what
 * is wrong and returns NULL. The value is owned by the request.
 */
json_t *http_json_body(http_req *r, json_type want);

/* Decoded value of field name in an application/x-www-form-urlencoded body
 * (r->body), from r->pool; NULL when absent. Repeated fields: the first.
 * *dup (may be NULL) is set to 1 when the field appears more than once. */
const char *http_form(http_req *r, const char *name, int *dup);

/* Parses limit (default 25, 1..1000) and offset (default 0); on bad values
 * answers 400 and returns -1. */
int http_paging(http_req *r, int64_t *limit, int64_t *offset);

/* Responses. Each call replaces any earlier one. json bodies are stolen. */
void http_reply_json(http_req *r, int status, json_t *body);
void http_reply_raw(http_req *r, int status, const char *content_type, const char *body,
		    size_t len);
void http_reply_empty(http_req *r, int status);
/* List envelope; list is stolen; total is the count before paging. */
void http_reply_list(http_req *r, json_t *list, int64_t total, int64_t limit, int64_t offset);
/* Reference error body with HTTP status and a description that says what
 * to fix. */
void http_reply_error(http_req *r, int status, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Same, the status taken from rc (apim_rc_http_status). */
void http_reply_rc(http_req *r, apim_rc rc, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* The answer to a failed store call about `what` ("API", "Application"...):
 * 404, 409, 503 or 500 with a description. */
void http_reply_store_error(http_req *r, apim_rc rc, const char *what);
void http_set_header(http_req *r, const char *name, const char *value);
int http_replied(http_req *r);

/*
 * ETag support: the ETag of a GET is a hash of its JSON body, set by the
 * layer on every 2xx GET response (and If-None-Match answers 304). Before a
 * PUT changes a resource, a handler passes the resource's current JSON
 * representation (as GET would render it): when the request carries
 * If-Match that does not match, this answers 412 and returns -1.
 */
int http_check_if_match(http_req *r, json_t *current);

#endif
