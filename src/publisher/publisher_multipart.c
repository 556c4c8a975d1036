/*
 * publisher_multipart.c: a small, bounded multipart/form-data parser
 * (RFC 7578) for the Publisher's uploads: OpenAPI definitions, document
 * content. The whole body is already in memory (bounded by
 * http.max_body_kb); parts are copied into the request's pool.
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "publisher/publisher_internal.h"

#define MP_MAX_PARTS 32
#define MP_MAX_HEADERS 8192
#define MP_MAX_BOUNDARY 200

static apim_rc mp_fail(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static apim_rc mp_fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return APIM_EINVAL;
}

int publisher_multipart_is(const char *content_type)
{
	if (content_type == NULL)
		return 0;
	while (*content_type == ' ')
		content_type++;
	return strncasecmp(content_type, "multipart/form-data", 19) == 0;
}

/* Finds parameter name (e.g. "boundary") in a header value's ";"-separated
 * parameters; copies its (unquoted) value into out. 0 when found. */
static int header_param(const char *v, const char *name, char *out, size_t outlen)
{
	size_t nl = strlen(name);
	const char *p = v;
	while ((p = strchr(p, ';')) != NULL) {
		p++;
		while (*p == ' ' || *p == '\t')
			p++;
		if (strncasecmp(p, name, nl) != 0 || p[nl] != '=')
			continue;
		p += nl + 1;
		size_t o = 0;
		if (*p == '"') {
			p++;
			while (*p && *p != '"' && o + 1 < outlen) {
				if (*p == '\\' && p[1])
					p++;
				out[o++] = *p++;
			}
			if (*p != '"')
				return -1;
		} else {
			while (*p && *p != ';' && *p != ' ' && *p != '\t' && o + 1 < outlen)
				out[o++] = *p++;
		}
		out[o] = '\0';
		return 0;
	}
	return -1;
}

static const char *find_bytes(const char *hay, size_t hlen, const char *needle, size_t nlen)
{
	if (nlen == 0 || hlen < nlen)
		return NULL;
	const char *end = hay + hlen - nlen;
	for (const char *p = hay; p <= end; p++) {
		p = memchr(p, needle[0], (size_t)(end - p) + 1);
		if (p == NULL)
			return NULL;
		if (memcmp(p, needle, nlen) == 0)
			return p;
	}
	return NULL;
}

/* Parses one part's header block [h, he) into part. */
static apim_rc part_headers(arena *pool, const char *h, const char *he, publisher_part *part,
			    char *err, size_t errlen)
{
	while (h < he) {
		const char *eol = find_bytes(h, (size_t)(he - h), "\n", 1);
		const char *le = eol ? eol : he;
		size_t n = (size_t)(le - h);
		if (n > 0 && h[n - 1] == '\r')
			n--;
		char *line = arena_strndup(pool, h, n);
		h = eol ? eol + 1 : he;
		char *colon = strchr(line, ':');
		if (colon == NULL)
			continue;
		*colon = '\0';
		char *val = colon + 1;
		while (*val == ' ' || *val == '\t')
			val++;
		if (strcasecmp(line, "Content-Disposition") == 0) {
			char buf[1024];
			if (strncasecmp(val, "form-data", 9) != 0)
				return mp_fail(err, errlen, "multipart part is not form-data");
			if (header_param(val, "name", buf, sizeof(buf)) == 0)
				part->name = arena_strdup(pool, buf);
			if (header_param(val, "filename", buf, sizeof(buf)) == 0)
				part->filename = arena_strdup(pool, buf);
		} else if (strcasecmp(line, "Content-Type") == 0) {
			part->content_type = arena_strdup(pool, val);
		}
	}
	if (part->name == NULL)
		return mp_fail(err, errlen, "a multipart part has no Content-Disposition name");
	return APIM_OK;
}

apim_rc publisher_multipart_parse(arena *pool, const char *content_type, const char *body,
				  size_t len, publisher_part **parts, size_t *n, char *err,
				  size_t errlen)
{
	char boundary[MP_MAX_BOUNDARY + 1];
	*parts = NULL;
	*n = 0;
	if (!publisher_multipart_is(content_type)) {
		snprintf(err, errlen, "Content-Type must be multipart/form-data");
		return APIM_EMEDIA;
	}
	if (header_param(content_type, "boundary", boundary, sizeof(boundary)) != 0 ||
	    boundary[0] == '\0' || strlen(boundary) > 70)
		return mp_fail(err, errlen, "multipart/form-data needs a boundary parameter of 1 to "
					    "70 characters");
	if (body == NULL)
		return mp_fail(err, errlen, "the multipart body is empty");
	char delim[MP_MAX_BOUNDARY + 8];
	int dl = snprintf(delim, sizeof(delim), "--%s", boundary);
	publisher_part *out = arena_alloc(pool, MP_MAX_PARTS * sizeof(*out));
	size_t count = 0;

	/* the first delimiter: at the start or after a preamble line */
	const char *p = find_bytes(body, len, delim, (size_t)dl);
	const char *end = body + len;
	if (p == NULL || (p != body && p[-1] != '\n'))
		return mp_fail(err, errlen, "the multipart body does not start with its boundary");
	for (;;) {
		p += dl;
		if (end - p >= 2 && p[0] == '-' && p[1] == '-')
			break; /* closing delimiter */
		while (p < end && (*p == ' ' || *p == '\t'))
			p++;
		if (end - p >= 2 && p[0] == '\r' && p[1] == '\n')
			p += 2;
		else if (p < end && *p == '\n')
			p++;
		else
			return mp_fail(err, errlen, "malformed multipart delimiter line");
		/* headers end at an empty line */
		const char *hend = find_bytes(p, (size_t)(end - p), "\r\n\r\n", 4);
		size_t skip = 4;
		const char *hend2 = find_bytes(p, (size_t)(end - p), "\n\n", 2);
		if (hend == NULL || (hend2 != NULL && hend2 < hend)) {
			hend = hend2;
			skip = 2;
		}
		if (hend == NULL) {
			/* a part with no headers at all starts with the empty line */
			if (end - p >= 2 && p[0] == '\r' && p[1] == '\n')
				hend = p, skip = 2;
			else
				return mp_fail(err, errlen, "a multipart part has no header end");
		}
		if (hend - p > MP_MAX_HEADERS)
			return mp_fail(err, errlen, "a multipart part's headers exceed %d bytes",
				       MP_MAX_HEADERS);
		if (count == MP_MAX_PARTS)
			return mp_fail(err, errlen, "more than %d multipart parts", MP_MAX_PARTS);
		publisher_part *part = &out[count];
		memset(part, 0, sizeof(*part));
		apim_rc rc = part_headers(pool, p, hend, part, err, errlen);
		if (rc != APIM_OK)
			return rc;
		const char *data = hend + skip;
		/* the data ends before CRLF + delimiter */
		const char *q = data;
		const char *next = NULL;
		while (q < end) {
			const char *cand = find_bytes(q, (size_t)(end - q), delim, (size_t)dl);
			if (cand == NULL)
				break;
			if (cand > data && cand[-1] == '\n') {
				next = cand;
				break;
			}
			if (cand == data) { /* empty part without a line break */
				next = cand;
				break;
			}
			q = cand + 1;
		}
		if (next == NULL)
			return mp_fail(err, errlen, "the multipart body is not terminated by its "
						    "closing boundary");
		const char *dend = next;
		if (dend > data && dend[-1] == '\n')
			dend--;
		if (dend > data && dend[-1] == '\r')
			dend--;
		part->len = (size_t)(dend - data);
		part->data = arena_strndup(pool, data, part->len);
		count++;
		p = next;
	}
	*parts = out;
	*n = count;
	return APIM_OK;
}

const publisher_part *publisher_multipart_get(const publisher_part *parts, size_t n,
					      const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(parts[i].name, name) == 0)
			return &parts[i];
	return NULL;
}
