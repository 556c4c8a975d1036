/*
 * http.c: routing, request lifecycle, replies and metrics of the control
 * plane's HTTP server on libmicrohttpd (internal epoll + thread pool).
 */
#include "http/http.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "auth/auth.h"
#include "common/log.h"
#include "common/util.h"

#define HTTP_MAX_SEGS 16
#define HTTP_MAX_HEADERS 16

typedef struct compiled_route {
	const http_route *route;
	size_t nseg;
	const char *seg[HTTP_MAX_SEGS]; /* literal text, or NULL for {param} */
	const char *pname[HTTP_MAX_SEGS];
	size_t nliteral;
	/* metrics: requests per counted_status slot (see status_slot) */
	uint64_t count[16];
} compiled_route;

/* Latency histogram buckets in seconds. */
static const double lat_bounds[] = {0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5};
#define NBOUNDS (sizeof(lat_bounds) / sizeof(lat_bounds[0]))

/* The statuses we count individually; the rest land in "other". */
static const int counted_status[] = {200, 201, 204, 304, 400, 401, 403, 404};

struct http_server {
	struct MHD_Daemon *daemon;
	http_server_opts opts;
	char *tls_cert_pem, *tls_key_pem;
	compiled_route *routes;
	size_t nroutes, caproutes;
	pthread_mutex_t mu; /* guards the metrics below */
	uint64_t unmatched[sizeof(counted_status) / sizeof(int) + 1];
	uint64_t lat_bucket[NBOUNDS];
	uint64_t lat_count;
	double lat_sum;
	uint64_t too_large;
};

typedef struct req_impl {
	http_server *srv;
	struct MHD_Connection *conn;
	compiled_route *croute;
	const char *pvals[HTTP_MAX_SEGS];
	char *body;
	size_t body_len, body_cap;
	int too_large;
	int64_t start_ms;
	json_t *json; /* parsed body, owned */
	/* response */
	int status;
	char *resp;
	size_t resp_len;
	const char *ctype;
	int replied;
	const char *hname[HTTP_MAX_HEADERS], *hval[HTTP_MAX_HEADERS];
	size_t nheaders;
} req_impl;

static req_impl *impl_of(http_req *r)
{
	return r->impl;
}

/* ---------- routes ---------- */

static void compile_route(compiled_route *c, const http_route *route)
{
	memset(c, 0, sizeof(*c));
	c->route = route;
	const char *p = route->path;
	while (*p == '/')
		p++;
	while (*p != '\0' && c->nseg < HTTP_MAX_SEGS) {
		const char *e = strchr(p, '/');
		size_t n = e ? (size_t)(e - p) : strlen(p);
		char *s = strndup(p, n);
		if (n >= 2 && s[0] == '{' && s[n - 1] == '}') {
			s[n - 1] = '\0';
			c->pname[c->nseg] = strdup(s + 1);
			free(s);
			c->seg[c->nseg] = NULL;
		} else {
			c->seg[c->nseg] = s;
			c->nliteral++;
		}
		c->nseg++;
		p += n;
		while (*p == '/')
			p++;
	}
}

void http_server_routes(http_server *s, const http_route *routes, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (s->nroutes == s->caproutes) {
			s->caproutes = s->caproutes ? s->caproutes * 2 : 64;
			s->routes = realloc(s->routes, s->caproutes * sizeof(*s->routes));
			if (s->routes == NULL)
				abort();
		}
		compile_route(&s->routes[s->nroutes++], &routes[i]);
	}
}

/* Splits the path into segments (pointers into a copy from pool). */
static size_t split_path(arena *pool, const char *path, char **segs)
{
	char *copy = arena_strdup(pool, path);
	size_t n = 0;
	char *p = copy;
	while (*p == '/')
		p++;
	while (*p != '\0') {
		if (n == HTTP_MAX_SEGS)
			return HTTP_MAX_SEGS + 1;
		segs[n++] = p;
		char *e = strchr(p, '/');
		if (e == NULL)
			break;
		*e = '\0';
		p = e + 1;
		/* A trailing slash is the same resource; an empty middle segment
		 * ("a//b") is not a route. */
		if (*p == '/')
			return HTTP_MAX_SEGS + 1;
	}
	return n;
}

/*
 * Finds the route for method+path: among routes whose template matches the
 * path, the one with most literal segments wins, so "/apis/copy-api" beats
 * "/apis/{apiId}". *path_matched is set when some route matches the path
 * with another method (405).
 */
static compiled_route *find_route(http_server *s, req_impl *ri, arena *pool, const char *method,
				  const char *path, int *path_matched)
{
	char *segs[HTTP_MAX_SEGS];
	size_t n = split_path(pool, path, segs);
	compiled_route *best = NULL;
	*path_matched = 0;
	if (n > HTTP_MAX_SEGS)
		return NULL;
	for (size_t i = 0; i < s->nroutes; i++) {
		compiled_route *c = &s->routes[i];
		if (c->nseg != n)
			continue;
		size_t j;
		for (j = 0; j < n; j++)
			if (c->seg[j] != NULL && strcmp(c->seg[j], segs[j]) != 0)
				break;
		if (j != n)
			continue;
		if (strcmp(c->route->method, method) != 0) {
			*path_matched = 1;
			continue;
		}
		if (best == NULL || c->nliteral > best->nliteral)
			best = c;
	}
	if (best != NULL)
		for (size_t j = 0; j < n; j++)
			ri->pvals[j] = best->seg[j] == NULL ? segs[j] : NULL;
	return best;
}

/* ---------- accessors ---------- */

const char *http_param(http_req *r, const char *name)
{
	req_impl *ri = impl_of(r);
	if (ri->croute == NULL)
		return NULL;
	for (size_t i = 0; i < ri->croute->nseg; i++)
		if (ri->croute->pname[i] != NULL && strcmp(ri->croute->pname[i], name) == 0)
			return ri->pvals[i];
	return NULL;
}

const char *http_query(http_req *r, const char *name)
{
	return MHD_lookup_connection_value(impl_of(r)->conn, MHD_GET_ARGUMENT_KIND, name);
}

const char *http_header(http_req *r, const char *name)
{
	return MHD_lookup_connection_value(impl_of(r)->conn, MHD_HEADER_KIND, name);
}

int http_replied(http_req *r)
{
	return impl_of(r)->replied;
}

void http_set_header(http_req *r, const char *name, const char *value)
{
	req_impl *ri = impl_of(r);
	for (size_t i = 0; i < ri->nheaders; i++) {
		if (strcasecmp(ri->hname[i], name) == 0) {
			ri->hval[i] = arena_strdup(r->pool, value);
			return;
		}
	}
	if (ri->nheaders < HTTP_MAX_HEADERS) {
		ri->hname[ri->nheaders] = arena_strdup(r->pool, name);
		ri->hval[ri->nheaders] = arena_strdup(r->pool, value);
		ri->nheaders++;
	}
}

/* ---------- replies ---------- */

void http_reply_raw(http_req *r, int status, const char *content_type, const char *body,
		    size_t len)
{
	req_impl *ri = impl_of(r);
	ri->status = status;
	ri->ctype = content_type ? arena_strdup(r->pool, content_type) : NULL;
	ri->resp = body ? arena_strndup(r->pool, body, len) : NULL;
	ri->resp_len = body ? len : 0;
	ri->replied = 1;
}

void http_reply_empty(http_req *r, int status)
{
	http_reply_raw(r, status, NULL, NULL, 0);
}

void http_reply_json(http_req *r, int status, json_t *body)
{
	char *s = json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY);
	json_decref(body);
	if (s == NULL) {
		http_reply_error(r, 500, "The response could not be encoded");
		return;
	}
	http_reply_raw(r, status, "application/json", s, strlen(s));
	free(s);
}

static const char *status_message(int status)
{
	switch (status) {
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 406: return "Not Acceptable";
	case 409: return "Conflict";
	case 412: return "Precondition Failed";
	case 413: return "Payload Too Large";
	case 415: return "Unsupported Media Type";
	case 429: return "Too Many Requests";
	case 501: return "Not Implemented";
	case 503: return "Service Unavailable";
	default: return status >= 500 ? "Internal Server Error" : "Error";
	}
}

static void reply_error_v(http_req *r, int status, const char *fmt, va_list ap)
{
	char *desc = arena_vsprintf(r->pool, fmt, ap);
	json_t *o = json_pack("{s:i, s:s, s:s, s:s, s:[]}", "code", status, "message",
			      status_message(status), "description", desc, "moreInfo", "", "error");
	http_reply_json(r, status, o);
}

void http_reply_error(http_req *r, int status, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	reply_error_v(r, status, fmt, ap);
	va_end(ap);
}

void http_reply_rc(http_req *r, apim_rc rc, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	reply_error_v(r, apim_rc_http_status(rc), fmt, ap);
	va_end(ap);
}

void http_reply_store_error(http_req *r, apim_rc rc, const char *what)
{
	switch (rc) {
	case APIM_ENOTFOUND:
		http_reply_error(r, 404, "%s not found", what);
		break;
	case APIM_ECONFLICT:
		http_reply_error(r, 409, "%s conflicts with an existing one (changed concurrently?); "
				 "reload and retry", what);
		break;
	case APIM_EUNAVAIL:
		http_reply_error(r, 503, "The database is unavailable; retry shortly");
		break;
	default:
		http_reply_error(r, apim_rc_http_status(rc) >= 500 ? apim_rc_http_status(rc) : 500,
				 "Storing or reading the %s failed (%s); see the server log", what,
				 apim_strerror(rc));
		break;
	}
}

void http_reply_list(http_req *r, json_t *list, int64_t total, int64_t limit, int64_t offset)
{
	json_t *pag = json_object();
	json_object_set_new(pag, "offset", json_integer(offset));
	json_object_set_new(pag, "limit", json_integer(limit));
	json_object_set_new(pag, "total", json_integer(total));
	const char *base = r->path;
	if (offset + limit < total)
		json_object_set_new(pag, "next",
				    json_string(arena_sprintf(r->pool, "%s?limit=%lld&offset=%lld", base,
							      (long long)limit,
							      (long long)(offset + limit))));
	else
		json_object_set_new(pag, "next", json_string(""));
	if (offset > 0) {
		int64_t prev = offset - limit < 0 ? 0 : offset - limit;
		json_object_set_new(pag, "previous",
				    json_string(arena_sprintf(r->pool, "%s?limit=%lld&offset=%lld", base,
							      (long long)limit, (long long)prev)));
	} else {
		json_object_set_new(pag, "previous", json_string(""));
	}
	json_t *o = json_object();
	json_object_set_new(o, "count", json_integer((json_int_t)json_array_size(list)));
	json_object_set_new(o, "list", list);
	json_object_set_new(o, "pagination", pag);
	http_reply_json(r, 200, o);
}

/* ---------- request bodies ---------- */

json_t *http_json_body(http_req *r, json_type want)
{
	req_impl *ri = impl_of(r);
	const char *what = want == JSON_ARRAY ? "a JSON array" : "a JSON object";
	if (ri->json == NULL) {
		const char *ct = http_header(r, "Content-Type");
		if (ct != NULL && strstr(ct, "json") == NULL) {
			http_reply_error(r, 415, "Content-Type '%s' is not supported: send %s as "
					 "application/json", ct, what);
			return NULL;
		}
		if (r->body == NULL || r->body_len == 0) {
			http_reply_error(r, 400, "The request body is missing: send %s", what);
			return NULL;
		}
		json_error_t e;
		ri->json = json_loadb(r->body, r->body_len, JSON_REJECT_DUPLICATES, &e);
		if (ri->json == NULL) {
			http_reply_error(r, 400, "Malformed JSON body at line %d, column %d: %s",
					 e.line, e.column, e.text);
			return NULL;
		}
	}
	if (json_typeof(ri->json) != want) {
		http_reply_error(r, 400, "The request body must be %s", what);
		return NULL;
	}
	return ri->json;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Decodes n bytes of form-urlencoded text into the pool ('+' is a space). */
static char *form_decode(arena *pool, const char *s, size_t n)
{
	char *out = arena_alloc(pool, n + 1);
	size_t j = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '+') {
			out[j++] = ' ';
		} else if (s[i] == '%' && i + 2 < n && hexval(s[i + 1]) >= 0 &&
			   hexval(s[i + 2]) >= 0) {
			out[j++] = (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
			i += 2;
		} else {
			out[j++] = s[i];
		}
	}
	out[j] = '\0';
	return out;
}

const char *http_form(http_req *r, const char *name, int *dup)
{
	const char *found = NULL;
	if (dup != NULL)
		*dup = 0;
	if (r->body == NULL)
		return NULL;
	size_t nlen = strlen(name);
	const char *p = r->body, *end = r->body + r->body_len;
	while (p < end) {
		const char *amp = memchr(p, '&', (size_t)(end - p));
		const char *fe = amp ? amp : end;
		const char *eq = memchr(p, '=', (size_t)(fe - p));
		const char *ke = eq ? eq : fe;
		char *key = form_decode(r->pool, p, (size_t)(ke - p));
		if (strlen(key) == nlen && memcmp(key, name, nlen) == 0) {
			if (found != NULL) {
				if (dup != NULL)
					*dup = 1;
			} else {
				found = eq ? form_decode(r->pool, eq + 1, (size_t)(fe - eq - 1)) : "";
			}
		}
		p = fe + 1;
	}
	return found;
}

int http_paging(http_req *r, int64_t *limit, int64_t *offset)
{
	const char *l = http_query(r, "limit"), *o = http_query(r, "offset");
	*limit = 25;
	*offset = 0;
	if (l != NULL && (apim_parse_i64(l, limit) != 0 || *limit < 1 || *limit > 1000)) {
		http_reply_error(r, 400, "Query parameter 'limit' must be an integer from 1 to 1000");
		return -1;
	}
	if (o != NULL && (apim_parse_i64(o, offset) != 0 || *offset < 0)) {
		http_reply_error(r, 400, "Query parameter 'offset' must be a non-negative integer");
		return -1;
	}
	return 0;
}

/* ---------- ETag ---------- */

static void etag_of(const char *body, size_t len, char out[40])
{
	char hex[65];
	apim_sha256_hex(body, len, hex);
	snprintf(out, 40, "\"%.32s\"", hex);
}

/* 1 when header (an If-Match/If-None-Match list) names etag or "*". */
static int etag_listed(const char *header, const char *etag)
{
	const char *p = header;
	while (*p) {
		while (*p == ' ' || *p == ',')
			p++;
		if (*p == '*')
			return 1;
		if (strncmp(p, "W/", 2) == 0)
			p += 2;
		const char *e = strchr(p, ',');
		size_t n = e ? (size_t)(e - p) : strlen(p);
		while (n > 0 && p[n - 1] == ' ')
			n--;
		if (n == strlen(etag) && strncmp(p, etag, n) == 0)
			return 1;
		if (e == NULL)
			break;
		p = e;
	}
	return 0;
}

int http_check_if_match(http_req *r, json_t *current)
{
	const char *im = http_header(r, "If-Match");
	if (im == NULL)
		return 0;
	char *s = json_dumps(current, JSON_COMPACT | JSON_ENCODE_ANY);
	char etag[40];
	etag_of(s ? s : "", s ? strlen(s) : 0, etag);
	free(s);
	if (etag_listed(im, etag))
		return 0;
	http_reply_error(r, 412, "If-Match %s does not match the current ETag %s: the resource "
			 "changed; GET it again and retry", im, etag);
	return -1;
}

/* ---------- metrics ---------- */

static size_t status_slot(int status)
{
	size_t n = sizeof(counted_status) / sizeof(int);
	for (size_t i = 0; i < n; i++)
		if (counted_status[i] == status)
			return i;
	return n;
}

static void record_metrics(http_server *s, req_impl *ri, double secs)
{
	pthread_mutex_lock(&s->mu);
	size_t slot = status_slot(ri->status);
	if (ri->croute != NULL) {
		ri->croute->count[slot]++;
	} else {
		s->unmatched[slot]++;
	}
	for (size_t i = 0; i < NBOUNDS; i++)
		if (secs <= lat_bounds[i])
			s->lat_bucket[i]++;
	s->lat_count++;
	s->lat_sum += secs;
	if (ri->too_large)
		s->too_large++;
	pthread_mutex_unlock(&s->mu);
}

void http_buf_printf(char **buf, size_t *len, size_t *cap, const char *fmt, ...)
{
	va_list ap;
	for (;;) {
		va_start(ap, fmt);
		int n = vsnprintf(*buf ? *buf + *len : NULL, *buf ? *cap - *len : 0, fmt, ap);
		va_end(ap);
		if (n < 0)
			return;
		if (*buf != NULL && *len + (size_t)n < *cap) {
			*len += (size_t)n;
			return;
		}
		size_t ncap = (*cap ? *cap * 2 : 4096) + (size_t)n;
		char *nb = realloc(*buf, ncap);
		if (nb == NULL)
			abort();
		*buf = nb;
		*cap = ncap;
	}
}

void http_server_metrics(http_server *s, char **buf, size_t *len, size_t *cap)
{
	size_t ns = sizeof(counted_status) / sizeof(int);
	pthread_mutex_lock(&s->mu);
	http_buf_printf(buf, len, cap,
		   "# HELP apim_http_requests_total HTTP requests by route and status.\n"
		   "# TYPE apim_http_requests_total counter\n");
	for (size_t i = 0; i < s->nroutes; i++) {
		for (size_t j = 0; j <= ns; j++) {
			if (s->routes[i].count[j] == 0)
				continue;
			char st[8];
			if (j < ns)
				snprintf(st, sizeof(st), "%d", counted_status[j]);
			else
				snprintf(st, sizeof(st), "other");
			http_buf_printf(buf, len, cap,
				   "apim_http_requests_total{method=\"%s\",route=\"%s\",status=\"%s\"} "
				   "%llu\n", s->routes[i].route->method, s->routes[i].route->path, st,
				   (unsigned long long)s->routes[i].count[j]);
		}
	}
	for (size_t j = 0; j <= ns; j++) {
		if (s->unmatched[j] == 0)
			continue;
		char st[8];
		if (j < ns)
			snprintf(st, sizeof(st), "%d", counted_status[j]);
		else
			snprintf(st, sizeof(st), "other");
		http_buf_printf(buf, len, cap,
			   "apim_http_requests_total{method=\"\",route=\"unmatched\",status=\"%s\"} "
			   "%llu\n", st, (unsigned long long)s->unmatched[j]);
	}
	http_buf_printf(buf, len, cap,
		   "# HELP apim_http_request_duration_seconds Time from request start to "
		   "response.\n# TYPE apim_http_request_duration_seconds histogram\n");
	for (size_t i = 0; i < NBOUNDS; i++)
		http_buf_printf(buf, len, cap, "apim_http_request_duration_seconds_bucket{le=\"%g\"} %llu\n",
			   lat_bounds[i], (unsigned long long)s->lat_bucket[i]);
	http_buf_printf(buf, len, cap,
		   "apim_http_request_duration_seconds_bucket{le=\"+Inf\"} %llu\n"
		   "apim_http_request_duration_seconds_sum %.6f\n"
		   "apim_http_request_duration_seconds_count %llu\n"
		   "# HELP apim_http_bodies_rejected_total Request bodies over http.max_body_kb.\n"
		   "# TYPE apim_http_bodies_rejected_total counter\n"
		   "apim_http_bodies_rejected_total %llu\n",
		   (unsigned long long)s->lat_count, s->lat_sum, (unsigned long long)s->lat_count,
		   (unsigned long long)s->too_large);
	pthread_mutex_unlock(&s->mu);
}

/* ---------- request lifecycle ---------- */

static void add_cors(http_server *s, struct MHD_Response *resp)
{
	const char *o = s->opts.cors_origins;
	if (o == NULL || *o == '\0')
		return;
	MHD_add_response_header(resp, "Access-Control-Allow-Origin", o);
	MHD_add_response_header(resp, "Access-Control-Allow-Methods",
				"GET, POST, PUT, PATCH, DELETE, OPTIONS");
	MHD_add_response_header(resp, "Access-Control-Allow-Headers",
				"Authorization, Content-Type, If-Match, If-None-Match, "
				"X-WSO2-Tenant, apikey");
	MHD_add_response_header(resp, "Access-Control-Expose-Headers", "ETag, Location");
}

static enum MHD_Result send_reply(http_server *s, http_req *r)
{
	req_impl *ri = impl_of(r);
	if (!ri->replied)
		http_reply_error(r, 500, "The handler produced no response");
	char etag[40] = "";
	int is_get = strcmp(r->method, "GET") == 0;
	if (is_get && ri->status >= 200 && ri->status < 300 && ri->resp != NULL) {
		etag_of(ri->resp, ri->resp_len, etag);
		const char *inm = http_header(r, "If-None-Match");
		if (inm != NULL && etag_listed(inm, etag)) {
			ri->status = 304;
			ri->resp = NULL;
			ri->resp_len = 0;
		}
	}
	struct MHD_Response *resp = MHD_create_response_from_buffer(
		ri->resp_len, ri->resp ? ri->resp : (char *)"", MHD_RESPMEM_MUST_COPY);
	if (resp == NULL)
		return MHD_NO;
	if (ri->ctype != NULL && ri->resp != NULL)
		MHD_add_response_header(resp, "Content-Type", ri->ctype);
	if (*etag)
		MHD_add_response_header(resp, "ETag", etag);
	for (size_t i = 0; i < ri->nheaders; i++)
		MHD_add_response_header(resp, ri->hname[i], ri->hval[i]);
	if (ri->status == 401 && MHD_get_response_header(resp, "WWW-Authenticate") == NULL)
		MHD_add_response_header(resp, "WWW-Authenticate", "Basic realm=\"apim\"");
	add_cors(s, resp);
	enum MHD_Result ret = MHD_queue_response(ri->conn, (unsigned)ri->status, resp);
	MHD_destroy_response(resp);
	return ret;
}

/* Authenticates and authorises the caller per the route; replies on failure. */
static int check_access(http_server *s, http_req *r)
{
	const char *authz = http_header(r, "Authorization");
	const http_route *route = r->route;
	if (route->flags & HTTP_OWN_AUTH)
		return 0;
	if (authz != NULL && s->opts.authenticate != NULL) {
		principal *p = NULL;
		apim_rc rc = s->opts.authenticate(r, authz, &p);
		if (rc == APIM_ELOCKED) {
			http_reply_error(r, 401, "The account is locked after repeated failed logins; "
					 "try again later");
			return -1;
		}
		if (rc == APIM_EUNAVAIL) {
			http_reply_error(r, 503, "The user store is unavailable; retry shortly");
			return -1;
		}
		if (rc != APIM_OK) {
			if (http_replied(r))
				return -1;
			http_reply_error(r, 401, "Invalid credentials: check the user name and "
					 "password (or token)");
			return -1;
		}
		r->who = p;
	}
	if (route->flags & (HTTP_PUBLIC | HTTP_OWN_AUTH))
		return 0;
	if (r->who == NULL) {
		http_reply_error(r, 401, "Authentication required: send HTTP Basic credentials "
				 "or a bearer token");
		return -1;
	}
	if (route->scopes != NULL && *route->scopes != '\0' &&
	    !principal_has_any_scope(r->who, route->scopes)) {
		http_reply_error(r, 403, "You are not authorised to %s %s: it needs one of the "
				 "scopes: %s", r->method, route->path, route->scopes);
		return -1;
	}
	return 0;
}

static void dispatch(http_server *s, http_req *r)
{
	req_impl *ri = impl_of(r);
	if (ri->too_large) {
		http_reply_error(r, 413, "The request body is larger than the limit of %zu bytes",
				 s->opts.max_body);
		return;
	}
	int path_matched = 0;
	ri->croute = find_route(s, ri, r->pool, r->method, r->path, &path_matched);
	if (ri->croute == NULL) {
		if (strcmp(r->method, "OPTIONS") == 0 && path_matched &&
		    s->opts.cors_origins && *s->opts.cors_origins) {
			http_reply_empty(r, 204);
			return;
		}
		if (path_matched)
			http_reply_error(r, 405, "Method %s is not allowed on %s", r->method, r->path);
		else
			http_reply_error(r, 404, "No resource matches %s %s", r->method, r->path);
		return;
	}
	r->route = ri->croute->route;
	if (check_access(s, r) != 0)
		return;
	r->route->handler(r);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
				  const char *method, const char *version, const char *upload,
				  size_t *upload_size, void **con_cls)
{
	(void)version;
	http_server *s = cls;
	http_req *r = *con_cls;
	if (r == NULL) {
		arena *pool = arena_create(8192);
		r = arena_alloc(pool, sizeof(*r));
		req_impl *ri = arena_alloc(pool, sizeof(*ri));
		r->pool = pool;
		r->impl = ri;
		r->ctx = s->opts.ctx;
		r->method = arena_strdup(pool, method);
		r->path = arena_strdup(pool, url);
		ri->srv = s;
		ri->conn = conn;
		ri->start_ms = apim_mono_ms();
		const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
		int64_t n;
		if (cl != NULL && apim_parse_i64(cl, &n) == 0 && n > (int64_t)s->opts.max_body)
			ri->too_large = 1;
		*con_cls = r;
		return MHD_YES;
	}
	req_impl *ri = impl_of(r);
	if (*upload_size > 0) {
		if (!ri->too_large) {
			size_t need = ri->body_len + *upload_size;
			if (need > s->opts.max_body) {
				ri->too_large = 1;
				free(ri->body);
				ri->body = NULL;
				ri->body_len = 0;
			} else {
				if (need + 1 > ri->body_cap) {
					size_t cap = ri->body_cap ? ri->body_cap : 4096;
					while (cap < need + 1)
						cap *= 2;
					char *nb = realloc(ri->body, cap);
					if (nb == NULL)
						return MHD_NO;
					ri->body = nb;
					ri->body_cap = cap;
				}
				memcpy(ri->body + ri->body_len, upload, *upload_size);
				ri->body_len = need;
				ri->body[need] = '\0';
			}
		}
		*upload_size = 0;
		return MHD_YES;
	}
	r->body = ri->body;
	r->body_len = ri->body_len;
	dispatch(s, r);
	enum MHD_Result ret = send_reply(s, r);
	double secs = (double)(apim_mono_ms() - ri->start_ms) / 1000.0;
	record_metrics(s, ri, secs);
	log_debug("http", "%s %s -> %d (%.1f ms)", r->method, r->path, ri->status, secs * 1000);
	return ret;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
			 enum MHD_RequestTerminationCode toe)
{
	(void)cls;
	(void)conn;
	(void)toe;
	http_req *r = *con_cls;
	if (r == NULL)
		return;
	req_impl *ri = impl_of(r);
	json_decref(ri->json);
	free(ri->body);
	arena_destroy(r->pool);
	*con_cls = NULL;
}

/* ---------- server ---------- */

apim_rc http_server_create(http_server **out, const http_server_opts *opts)
{
	http_server *s = calloc(1, sizeof(*s));
	if (s == NULL)
		return APIM_ENOMEM;
	s->opts = *opts;
	pthread_mutex_init(&s->mu, NULL);
	if (opts->tls_cert && *opts->tls_cert) {
		apim_rc rc = apim_read_file(opts->tls_cert, 1 << 20, &s->tls_cert_pem, NULL);
		if (rc == APIM_OK)
			rc = apim_read_file(opts->tls_key, 1 << 20, &s->tls_key_pem, NULL);
		if (rc != APIM_OK) {
			log_error("http", "cannot read TLS certificate or key (%s, %s): %s",
				  opts->tls_cert, opts->tls_key, apim_strerror(rc));
			http_server_destroy(s);
			return APIM_ECONFIG;
		}
	}
	*out = s;
	return APIM_OK;
}

apim_rc http_server_start(http_server *s)
{
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ITC |
			 MHD_USE_ERROR_LOG;
	struct sockaddr_in addr;
	memset(&addr, 0, sizeof(addr));
	addr.sin_family = AF_INET;
	addr.sin_port = htons((uint16_t)s->opts.port);
	if (inet_pton(AF_INET, s->opts.host, &addr.sin_addr) != 1) {
		log_error("http", "server.host '%s' is not an IPv4 address", s->opts.host);
		return APIM_ECONFIG;
	}
	if (s->tls_cert_pem != NULL)
		flags |= MHD_USE_TLS;
	struct MHD_OptionItem tls_opts[] = {
		{MHD_OPTION_HTTPS_MEM_CERT, 0, s->tls_cert_pem},
		{MHD_OPTION_HTTPS_MEM_KEY, 0, s->tls_key_pem},
		{MHD_OPTION_END, 0, NULL},
	};
	struct MHD_OptionItem no_opts[] = {{MHD_OPTION_END, 0, NULL}};
	s->daemon = MHD_start_daemon(
		flags, (uint16_t)s->opts.port, NULL, NULL, on_request, s,
		MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
		MHD_OPTION_THREAD_POOL_SIZE, (unsigned)s->opts.threads,
		MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
		MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)60,
		MHD_OPTION_CONNECTION_LIMIT, (unsigned)4096,
		MHD_OPTION_ARRAY, s->tls_cert_pem ? tls_opts : no_opts,
		MHD_OPTION_END);
	if (s->daemon == NULL) {
		log_error("http", "cannot listen on %s:%d (port in use, or bad TLS key/certificate?)",
			  s->opts.host, s->opts.port);
		return APIM_EIO;
	}
	return APIM_OK;
}

void http_server_stop(http_server *s)
{
	if (s->daemon == NULL)
		return;
	/* Stop accepting, then let open requests finish for up to 5 s. */
	MHD_quiesce_daemon(s->daemon);
	for (int i = 0; i < 100; i++) {
		const union MHD_DaemonInfo *info =
			MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
		if (info == NULL || info->num_connections == 0)
			break;
		usleep(50 * 1000);
	}
	MHD_stop_daemon(s->daemon);
	s->daemon = NULL;
}

void http_server_destroy(http_server *s)
{
	if (s == NULL)
		return;
	for (size_t i = 0; i < s->nroutes; i++) {
		for (size_t j = 0; j < s->routes[i].nseg; j++) {
			free((char *)s->routes[i].seg[j]);
			free((char *)s->routes[i].pname[j]);
		}
	}
	free(s->routes);
	free(s->tls_cert_pem);
	free(s->tls_key_pem);
	pthread_mutex_destroy(&s->mu);
	free(s);
}
