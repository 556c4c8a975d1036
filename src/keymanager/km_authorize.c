/*
 * km_authorize.c: the authorization endpoint of the authorization code
 * grant (RFC 6749 section 4.1) with PKCE S256 required (RFC 7636), its
 * server-rendered login and consent page, and the codes it hands out.
 *
 * Until the redirect URI is known to be the client's registered one,
 * errors are an HTML page (never a redirect: that would make us an open
 * redirector); afterwards they go back to the client as error=...&state=.
 *
 * The form is protected against cross-site submission and tampering by a
 * token bound to a browser cookie and to every parameter of the request:
 * ts.BASE64URL(HMAC-SHA256(process key, cookie, ts, parameters)), valid
 * for FORM_TTL_S. The key is per process: a form must be posted back to
 * the node that rendered it (sticky sessions behind a load balancer).
 *
 * Codes are 32 random bytes, stored as SHA-256, single use, valid for
 * keymanager.code_validity seconds.
 */
#include "keymanager/km_authorize.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "auth/auth_users.h"
#include "common/log.h"
#include "common/util.h"
#include "keymanager/km_token.h"
#include "store/db.h"

#define COOKIE_NAME "apim_authz"
#define FORM_TTL_S 900
#define CODE_BYTES 32

static pthread_once_t authz_once = PTHREAD_ONCE_INIT;
static unsigned char authz_key[32];

static void authz_key_init(void)
{
	apim_random(authz_key, sizeof(authz_key));
}

/* ------------------------------------------------------------ PKCE */

static void authz_b64url(const unsigned char *in, size_t n, char *out)
{
	char *b = apim_base64_encode(in, n);
	size_t j = 0;
	for (size_t i = 0; b != NULL && b[i] && b[i] != '='; i++)
		out[j++] = b[i] == '+' ? '-' : b[i] == '/' ? '_' : b[i];
	out[j] = '\0';
	free(b);
}

static int authz_unreserved(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '.' || c == '_' || c == '~';
}

int km_pkce_verify(const char *verifier, const char *challenge)
{
	if (verifier == NULL || challenge == NULL)
		return 0;
	size_t n = strlen(verifier);
	if (n < 43 || n > 128)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!authz_unreserved(verifier[i]))
			return 0;
	unsigned char md[32];
	unsigned int mdlen = 0;
	if (EVP_Digest(verifier, n, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen != 32)
		return 0;
	char enc[48];
	authz_b64url(md, sizeof(md), enc);
	return apim_ct_equal(enc, strlen(enc), challenge, strlen(challenge));
}

int km_pkce_challenge_valid(const char *s)
{
	if (s == NULL || strlen(s) != 43)
		return 0;
	for (const char *p = s; *p; p++)
		if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
		      (*p >= '0' && *p <= '9') || *p == '-' || *p == '_'))
			return 0;
	return 1;
}

/* ------------------------------------------------------------ codes */

apim_rc km_authorize_redeem(apim_ctx *ctx, arena *pool, const km_client *c, const char *code,
			    const char *redirect_uri, const char *verifier, const char **username,
			    const char **scope, const char **code_hash, const char **why)
{
	char hash[65];
	db_res *res = NULL, *upd = NULL;
	apim_rc rc;
	apim_sha256_hex(code, strlen(code), hash);
	*why = "The authorization code is invalid";
	rc = db_exec(ctx->apimgt, &res,
		     "SELECT client_id, username, redirect_uri, scope, code_challenge, method,"
		     " expires_ms, used, family FROM km_auth_code WHERE code_hash = ?",
		     DB_ARGS(hash));
	if (rc != APIM_OK)
		return rc;
	if (db_res_rows(res) == 0 || strcmp(db_res_get(res, 0, 0), c->client_id) != 0) {
		rc = APIM_EUNAUTH;
		goto out;
	}
	/* consume first: whatever fails below, the code is spent */
	int used = db_res_int(res, 0, 7) != 0;
	if (!used) {
		rc = db_exec(ctx->apimgt, &upd,
			     "UPDATE km_auth_code SET used = 1 WHERE code_hash = ? AND used = 0",
			     DB_ARGS(hash));
		if (rc != APIM_OK)
			goto out;
		used = db_res_changes(upd) != 1;
	}
	if (used) {
		/* RFC 6749 section 4.1.2: a code used twice takes down the
		 * tokens issued from it */
		const char *family = db_res_get(res, 0, 8);
		if (family != NULL)
			(void)km_token_revoke_family(ctx, family);
		log_warn("keymanager", "an authorization code of client %s was used twice",
			 c->client_id);
		*why = "The authorization code was already used";
		rc = APIM_EUNAUTH;
		goto out;
	}
	rc = APIM_EUNAUTH;
	if (db_res_int(res, 0, 6) <= apim_now_ms()) {
		*why = "The authorization code has expired";
		goto out;
	}
	const char *ruri = db_res_get(res, 0, 2);
	if (ruri != NULL && *ruri != '\0' &&
	    (redirect_uri == NULL || strcmp(redirect_uri, ruri) != 0)) {
		*why = "redirect_uri does not match the one of the authorization request";
		goto out;
	}
	if (strcmp(db_res_get(res, 0, 5), "S256") != 0 ||
	    !km_pkce_verify(verifier, db_res_get(res, 0, 4))) {
		*why = "The code_verifier does not match the code_challenge";
		goto out;
	}
	*username = arena_strdup(pool, db_res_get(res, 0, 1));
	*scope = arena_strdup(pool, db_res_get(res, 0, 3));
	*code_hash = arena_strdup(pool, hash);
	*why = NULL;
	rc = APIM_OK;
out:
	db_res_free(upd);
	db_res_free(res);
	return rc;
}

void km_authorize_link(apim_ctx *ctx, const char *code_hash, const char *family)
{
	if (db_exec(ctx->apimgt, NULL, "UPDATE km_auth_code SET family = ? WHERE code_hash = ?",
		    DB_ARGS(family, code_hash)) != APIM_OK)
		log_warn("keymanager", "could not link the tokens to their authorization code");
}

/* ------------------------------------------------------------ page */

typedef struct authz_req {
	const char *response_type, *client_id, *redirect_uri, *scope, *state, *challenge,
		*method;
	km_client c;
	const char *redirect; /* validated: redirect_uri or the registered one */
} authz_req;

/* Appends s HTML-escaped (text and attribute values). */
static void authz_esc(char **b, size_t *len, size_t *cap, const char *s)
{
	for (const char *p = s ? s : ""; *p; p++) {
		switch (*p) {
		case '&': http_buf_printf(b, len, cap, "&amp;"); break;
		case '<': http_buf_printf(b, len, cap, "&lt;"); break;
		case '>': http_buf_printf(b, len, cap, "&gt;"); break;
		case '"': http_buf_printf(b, len, cap, "&quot;"); break;
		case '\'': http_buf_printf(b, len, cap, "&#39;"); break;
		default: http_buf_printf(b, len, cap, "%c", *p); break;
		}
	}
}

static void authz_security_headers(http_req *r)
{
	http_set_header(r, "X-Frame-Options", "DENY");
	http_set_header(r, "Content-Security-Policy",
			"default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'");
	http_set_header(r, "X-Content-Type-Options", "nosniff");
	http_set_header(r, "Referrer-Policy", "no-referrer");
	http_set_header(r, "Cache-Control", "no-store");
	http_set_header(r, "Pragma", "no-cache");
}

static const char authz_head[] =
	"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
	"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
	"<title>%s</title><style>"
	"body{font-family:system-ui,sans-serif;max-width:30em;margin:3em auto;padding:0 1em;"
	"color:#222}h1{font-size:1.4em}label{display:block;margin-top:1em}"
	"input[type=text],input[type=password]{width:100%%;padding:.5em;box-sizing:border-box}"
	"button{margin:1.5em 1em 0 0;padding:.5em 1.5em}.err{color:#a00}"
	"code{background:#f3f3f3;padding:0 .2em}</style></head><body>\n";

static void authz_reply_html(http_req *r, int status, char *b, size_t len)
{
	http_reply_raw(r, status, "text/html; charset=utf-8", b ? b : "", b ? len : 0);
	free(b);
	authz_security_headers(r);
}

static void authz_error_page(http_req *r, const char *msg)
{
	char *b = NULL;
	size_t len = 0, cap = 0;
	http_buf_printf(&b, &len, &cap, authz_head, "Authorization failed");
	http_buf_printf(&b, &len, &cap, "<h1>Authorization failed</h1>\n<p class=\"err\">");
	authz_esc(&b, &len, &cap, msg);
	http_buf_printf(&b, &len, &cap, "</p>\n<p>Go back to the application and try again; "
			"if it keeps failing, tell its developers.</p>\n</body></html>\n");
	authz_reply_html(r, 400, b, len);
}

/* Appends s percent-encoded (everything but unreserved characters). */
static void authz_urlenc(char **b, size_t *len, size_t *cap, const char *s)
{
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (authz_unreserved((char)*p))
			http_buf_printf(b, len, cap, "%c", *p);
		else
			http_buf_printf(b, len, cap, "%%%02X", *p);
	}
}

/* 302 to the validated redirect URI with the given parameters
 * (name, value pairs, NULL values skipped, state appended). */
static void authz_redirect(http_req *r, const authz_req *q, const char *const *kv, size_t n)
{
	char *b = NULL;
	size_t len = 0, cap = 0;
	http_buf_printf(&b, &len, &cap, "%s", q->redirect);
	char sep = strchr(q->redirect, '?') ? '&' : '?';
	for (size_t i = 0; i + 1 < n; i += 2) {
		if (kv[i + 1] == NULL)
			continue;
		http_buf_printf(&b, &len, &cap, "%c%s=", sep, kv[i]);
		authz_urlenc(&b, &len, &cap, kv[i + 1]);
		sep = '&';
	}
	if (q->state != NULL) {
		http_buf_printf(&b, &len, &cap, "%cstate=", sep);
		authz_urlenc(&b, &len, &cap, q->state);
	}
	http_reply_empty(r, 302);
	http_set_header(r, "Location", b ? b : q->redirect);
	http_set_header(r, "Cache-Control", "no-store");
	http_set_header(r, "Pragma", "no-cache");
	http_set_header(r, "Referrer-Policy", "no-referrer");
	if (b != NULL) {
		OPENSSL_cleanse(b, len);
		free(b);
	}
}

static void authz_redirect_error(http_req *r, const authz_req *q, const char *error,
				 const char *desc)
{
	const char *kv[] = {"error", error, "error_description", desc};
	authz_redirect(r, q, kv, 4);
}

static const char *authz_p(http_req *r, const char *name, int post)
{
	return post ? http_form(r, name, NULL) : http_query(r, name);
}

/* Reads the request parameters (query for GET, form for POST). */
static void authz_read(http_req *r, authz_req *q, int post)
{
	q->response_type = authz_p(r, "response_type", post);
	q->client_id = authz_p(r, "client_id", post);
	q->redirect_uri = authz_p(r, "redirect_uri", post);
	q->scope = authz_p(r, "scope", post);
	q->state = authz_p(r, "state", post);
	q->challenge = authz_p(r, "code_challenge", post);
	q->method = authz_p(r, "code_challenge_method", post);
	if (q->redirect_uri != NULL && *q->redirect_uri == '\0')
		q->redirect_uri = NULL;
	if (q->state != NULL && *q->state == '\0')
		q->state = NULL;
}

/*
 * Validates the client and redirect URI (HTML error page when wrong), then
 * the rest (redirected error). 0 when the request may proceed; otherwise
 * the reply is made.
 */
static int authz_validate(http_req *r, authz_req *q)
{
	if (q->client_id == NULL || *q->client_id == '\0') {
		authz_error_page(r, "The request has no client_id.");
		return -1;
	}
	apim_rc rc = km_client_get(r->ctx, r->pool, q->client_id, &q->c);
	if (rc == APIM_ENOTFOUND) {
		authz_error_page(r, "The application (client_id) is not known here.");
		return -1;
	}
	if (rc != APIM_OK) {
		authz_error_page(r, "The server cannot check the application right now; retry "
				 "shortly.");
		return -1;
	}
	const char *cb = q->c.callback_url;
	if (cb == NULL || *cb == '\0') {
		authz_error_page(r, "The application has no registered redirect URI (callback "
				 "URL), so it cannot use this sign-in.");
		return -1;
	}
	if (q->redirect_uri != NULL && strcmp(q->redirect_uri, cb) != 0) {
		authz_error_page(r, "The redirect_uri does not match the application's registered "
				 "callback URL.");
		return -1;
	}
	q->redirect = cb;
	/* from here on errors go back to the client */
	if (q->response_type == NULL || strcmp(q->response_type, "code") != 0) {
		authz_redirect_error(r, q, "unsupported_response_type",
				     "Only response_type=code is supported");
		return -1;
	}
	if (!km_client_allows_grant(&q->c, "authorization_code")) {
		authz_redirect_error(r, q, "unauthorized_client",
				     "This client may not use the authorization_code grant");
		return -1;
	}
	if (q->challenge == NULL || *q->challenge == '\0') {
		authz_redirect_error(r, q, "invalid_request",
				     "code_challenge is required (PKCE with S256)");
		return -1;
	}
	if (q->method == NULL || strcmp(q->method, "S256") != 0) {
		authz_redirect_error(r, q, "invalid_request",
				     "code_challenge_method must be S256");
		return -1;
	}
	if (!km_pkce_challenge_valid(q->challenge)) {
		authz_redirect_error(r, q, "invalid_request",
				     "code_challenge must be BASE64URL(SHA256(code_verifier)): 43 "
				     "characters");
		return -1;
	}
	for (const unsigned char *p = (const unsigned char *)(q->scope ? q->scope : ""); *p;
	     p++) {
		if (*p != ' ' && (*p < 0x21 || *p == 0x22 || *p == 0x5c || *p > 0x7e)) {
			authz_redirect_error(r, q, "invalid_scope",
					     "The scope holds characters that RFC 6749 does not "
					     "allow");
			return -1;
		}
	}
	return 0;
}

/* The value of our cookie, or NULL. */
static const char *authz_cookie(http_req *r)
{
	const char *h = http_header(r, "Cookie");
	size_t n = strlen(COOKIE_NAME);
	for (const char *p = h; p != NULL && *p;) {
		while (*p == ' ' || *p == ';')
			p++;
		const char *e = strchr(p, ';');
		size_t len = e ? (size_t)(e - p) : strlen(p);
		if (len > n && strncmp(p, COOKIE_NAME "=", n + 1) == 0) {
			const char *v = arena_strndup(r->pool, p + n + 1, len - n - 1);
			size_t vl = strlen(v);
			if (vl < 32 || vl > 64)
				return NULL;
			for (const char *c = v; *c; c++)
				if (!authz_unreserved(*c))
					return NULL;
			return v;
		}
		p = e;
	}
	return NULL;
}

/* "ts.mac" for this cookie and request parameters at time ts. */
static char *authz_csrf(http_req *r, const authz_req *q, const char *cookie, long long ts)
{
	pthread_once(&authz_once, authz_key_init);
	const char *parts[] = {cookie, q->client_id, q->redirect_uri, q->scope,
			       q->state, q->challenge, q->method, q->response_type};
	char tsbuf[24];
	snprintf(tsbuf, sizeof(tsbuf), "%lld", ts);
	/* ts NUL then, per part, '1' value NUL or '0' NUL (absent differs
	 * from empty) */
	size_t len = strlen(tsbuf) + 1;
	for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++)
		len += 2 + (parts[i] ? strlen(parts[i]) : 0);
	char *msg = arena_alloc(r->pool, len), *m = msg;
	memcpy(m, tsbuf, strlen(tsbuf) + 1);
	m += strlen(tsbuf) + 1;
	for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
		*m++ = parts[i] ? '1' : '0';
		if (parts[i] != NULL) {
			memcpy(m, parts[i], strlen(parts[i]));
			m += strlen(parts[i]);
		}
		*m++ = '\0';
	}
	unsigned char mac[32];
	unsigned int maclen = sizeof(mac);
	if (HMAC(EVP_sha256(), authz_key, sizeof(authz_key), (const unsigned char *)msg, len, mac,
		 &maclen) == NULL)
		return NULL;
	char enc[48];
	authz_b64url(mac, sizeof(mac), enc);
	return arena_sprintf(r->pool, "%s.%s", tsbuf, enc);
}

static int authz_csrf_ok(http_req *r, const authz_req *q, const char *cookie, const char *token)
{
	if (cookie == NULL || token == NULL)
		return 0;
	char *end = NULL;
	long long ts = strtoll(token, &end, 10);
	long long now = (long long)(apim_now_ms() / 1000);
	if (end == token || *end != '.' || ts > now + 60 || now - ts > FORM_TTL_S)
		return 0;
	const char *want = authz_csrf(r, q, cookie, ts);
	return want != NULL && apim_ct_equal(want, strlen(want), token, strlen(token));
}

static void authz_hidden(char **b, size_t *len, size_t *cap, const char *name, const char *v)
{
	if (v == NULL)
		return;
	http_buf_printf(b, len, cap, "<input type=\"hidden\" name=\"%s\" value=\"", name);
	authz_esc(b, len, cap, v);
	http_buf_printf(b, len, cap, "\">\n");
}

/* Renders the login and consent form (status, optional error message). */
static void authz_form(http_req *r, const authz_req *q, int status, const char *error,
		       const char *username)
{
	const char *cookie = authz_cookie(r);
	if (cookie == NULL) {
		char v[48];
		apim_random_token(v, 32);
		cookie = arena_strdup(r->pool, v);
	}
	const char *csrf = authz_csrf(r, q, cookie, (long long)(apim_now_ms() / 1000));
	if (csrf == NULL) {
		authz_error_page(r, "The server could not prepare the sign-in form.");
		return;
	}
	char *b = NULL;
	size_t len = 0, cap = 0;
	http_buf_printf(&b, &len, &cap, authz_head, "Sign in");
	http_buf_printf(&b, &len, &cap, "<h1>Sign in</h1>\n<p><strong>");
	authz_esc(&b, &len, &cap, q->c.name ? q->c.name : q->c.client_id);
	http_buf_printf(&b, &len, &cap, "</strong> asks to act on your behalf");
	size_t n = 0;
	const char *s = q->scope ? q->scope : "";
	for (const char *p = s; *p;) {
		while (*p == ' ')
			p++;
		if (*p)
			n++;
		while (*p && *p != ' ')
			p++;
	}
	if (n > 0) {
		http_buf_printf(&b, &len, &cap, " with these permissions:</p>\n<ul>\n");
		for (const char *p = s; *p;) {
			while (*p == ' ')
				p++;
			const char *e = p;
			while (*e && *e != ' ')
				e++;
			if (e > p) {
				http_buf_printf(&b, &len, &cap, "<li><code>");
				authz_esc(&b, &len, &cap, arena_strndup(r->pool, p, (size_t)(e - p)));
				http_buf_printf(&b, &len, &cap, "</code></li>\n");
			}
			p = e;
		}
		http_buf_printf(&b, &len, &cap, "</ul>\n<p>You get only the permissions your "
				"roles allow.</p>\n");
	} else {
		http_buf_printf(&b, &len, &cap, ".</p>\n");
	}
	if (error != NULL) {
		http_buf_printf(&b, &len, &cap, "<p class=\"err\" role=\"alert\">");
		authz_esc(&b, &len, &cap, error);
		http_buf_printf(&b, &len, &cap, "</p>\n");
	}
	http_buf_printf(&b, &len, &cap, "<form method=\"post\" action=\"authorize\">\n");
	authz_hidden(&b, &len, &cap, "response_type", q->response_type);
	authz_hidden(&b, &len, &cap, "client_id", q->client_id);
	authz_hidden(&b, &len, &cap, "redirect_uri", q->redirect_uri);
	authz_hidden(&b, &len, &cap, "scope", q->scope);
	authz_hidden(&b, &len, &cap, "state", q->state);
	authz_hidden(&b, &len, &cap, "code_challenge", q->challenge);
	authz_hidden(&b, &len, &cap, "code_challenge_method", q->method);
	authz_hidden(&b, &len, &cap, "csrf_token", csrf);
	http_buf_printf(&b, &len, &cap,
			"<label for=\"username\">User name</label>\n"
			"<input type=\"text\" id=\"username\" name=\"username\" "
			"autocomplete=\"username\" required autofocus value=\"");
	authz_esc(&b, &len, &cap, username);
	http_buf_printf(&b, &len, &cap,
			"\">\n<label for=\"password\">Password</label>\n"
			"<input type=\"password\" id=\"password\" name=\"password\" "
			"autocomplete=\"current-password\" required>\n"
			"<button type=\"submit\" name=\"consent\" value=\"approve\">Approve</button>"
			"<button type=\"submit\" name=\"consent\" value=\"deny\" formnovalidate>"
			"Deny</button>\n</form>\n</body></html>\n");
	char *ck = arena_sprintf(r->pool, COOKIE_NAME "=%s; Path=/oauth2/authorize; HttpOnly; "
				 "SameSite=Strict%s", cookie,
				 *r->ctx->cfg->http_tls_cert ? "; Secure" : "");
	authz_reply_html(r, status, b, len);
	http_set_header(r, "Set-Cookie", ck);
}

/* GET /oauth2/authorize */
static void authz_get(http_req *r)
{
	authz_req q;
	memset(&q, 0, sizeof(q));
	authz_read(r, &q, 0);
	if (authz_validate(r, &q) != 0)
		return;
	authz_form(r, &q, 200, NULL, NULL);
}

/* Creates the code and redirects with it. */
static void authz_issue_code(http_req *r, const authz_req *q, const char *username)
{
	const char *granted = NULL;
	char code[CODE_BYTES * 4 / 3 + 4], hash[65], exp[24];
	apim_rc rc = km_token_scopes(r->ctx, r->pool, &q->c, username, q->scope, &granted);
	if (rc == APIM_OK) {
		apim_random_token(code, CODE_BYTES);
		apim_sha256_hex(code, strlen(code), hash);
		snprintf(exp, sizeof(exp), "%lld",
			 (long long)(apim_now_ms() + r->ctx->cfg->keymanager_code_validity * 1000));
		rc = db_exec(r->ctx->apimgt, NULL,
			     "INSERT INTO km_auth_code (code_hash, client_id, username, redirect_uri,"
			     " scope, code_challenge, method, expires_ms, used, family)"
			     " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, NULL)",
			     DB_ARGS(hash, q->c.client_id, username, q->redirect_uri, granted,
				     q->challenge, q->method, exp));
	}
	if (rc != APIM_OK) {
		authz_redirect_error(r, q, rc == APIM_EUNAVAIL ? "temporarily_unavailable"
							       : "server_error",
				     "The authorization server failed; retry shortly");
		return;
	}
	const char *kv[] = {"code", code};
	authz_redirect(r, q, kv, 2);
	OPENSSL_cleanse(code, sizeof(code));
}

/* POST /oauth2/authorize: the form comes back. */
static void authz_post(http_req *r)
{
	authz_req q;
	memset(&q, 0, sizeof(q));
	const char *ct = http_header(r, "Content-Type");
	if (ct == NULL || strncasecmp(ct, "application/x-www-form-urlencoded", 33) != 0) {
		authz_error_page(r, "The form must be sent as application/x-www-form-urlencoded.");
		return;
	}
	authz_read(r, &q, 1);
	if (authz_validate(r, &q) != 0)
		return;
	if (!authz_csrf_ok(r, &q, authz_cookie(r), http_form(r, "csrf_token", NULL))) {
		authz_error_page(r, "The sign-in form expired or was not sent from this page. Go "
				 "back to the application and start again.");
		return;
	}
	const char *consent = http_form(r, "consent", NULL);
	if (consent == NULL || strcmp(consent, "approve") != 0) {
		authz_redirect_error(r, &q, "access_denied", "The user denied the request");
		return;
	}
	const char *username = http_form(r, "username", NULL);
	const char *password = http_form(r, "password", NULL);
	if (username == NULL || *username == '\0' || password == NULL || *password == '\0') {
		authz_form(r, &q, 400, "Enter your user name and password.", username);
		return;
	}
	char *key = arena_sprintf(r->pool, "user:%s", username);
	if (km_limit_blocked(r->ctx, key)) {
		authz_form(r, &q, 429, "Too many failed sign-ins; wait a minute and try again.",
			   username);
		http_set_header(r, "Retry-After", "60");
		return;
	}
	auth_user u;
	apim_rc rc = auth_users_verify(r->ctx, r->pool, username, password, &u);
	if (rc == APIM_EUNAUTH || rc == APIM_ELOCKED) {
		km_limit_fail(r->ctx, key);
		authz_form(r, &q, 401, rc == APIM_ELOCKED
					       ? "The account is locked after repeated failed "
						 "sign-ins; try again later."
					       : "Wrong user name or password.",
			   username);
		return;
	}
	if (rc != APIM_OK) {
		authz_form(r, &q, 503, "The server cannot check your password right now; retry "
			   "shortly.", username);
		return;
	}
	authz_issue_code(r, &q, u.username);
}

static const http_route authz_routes[] = {
	{"GET", "/oauth2/authorize", authz_get, NULL, HTTP_OWN_AUTH | HTTP_RAW_BODY},
	{"POST", "/oauth2/authorize", authz_post, NULL, HTTP_OWN_AUTH | HTTP_RAW_BODY},
};

void km_authorize_routes(http_server *s)
{
	http_server_routes(s, authz_routes, sizeof(authz_routes) / sizeof(authz_routes[0]));
}
