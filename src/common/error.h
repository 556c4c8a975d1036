/*
 * error.h: the one status enum of apim.
 *
 * Every function that can fail returns an apim_rc. The codes come from one
 * X-macro so that the enum, the message table and the HTTP mapping cannot
 * drift apart. Codes are never renumbered: add new ones at the end.
 */
#ifndef APIM_ERROR_H
#define APIM_ERROR_H

/* X(name, value, http status, message) */
#define APIM_ERRNO_MAP(X)                                                  \
	X(OK, 0, 200, "success")                                            \
	X(EINVAL, 1, 400, "Bad Request")                                    \
	X(ENOTFOUND, 2, 404, "Not Found")                                   \
	X(ECONFLICT, 3, 409, "Conflict")                                    \
	X(EUNAUTH, 4, 401, "Unauthorized")                                  \
	X(EFORBIDDEN, 5, 403, "Forbidden")                                  \
	X(ETOOLARGE, 6, 413, "Payload Too Large")                           \
	X(ENOMEM, 7, 500, "Out of memory")                                  \
	X(EDB, 8, 500, "Database error")                                    \
	X(EUNAVAIL, 9, 503, "Service Unavailable")                          \
	X(EINTERNAL, 10, 500, "Internal Server Error")                      \
	X(EMETHOD, 11, 405, "Method Not Allowed")                           \
	X(EPRECOND, 12, 412, "Precondition Failed")                         \
	X(ELOCKED, 13, 401, "Account locked")                               \
	X(EMEDIA, 14, 415, "Unsupported Media Type")                        \
	X(EIO, 15, 500, "I/O error")                                        \
	X(ECONFIG, 16, 500, "Configuration error")                          \
	X(ENOTIMPL, 17, 501, "Not Implemented")

typedef enum {
#define APIM_X(name, value, status, msg) APIM_##name = value,
	APIM_ERRNO_MAP(APIM_X)
#undef APIM_X
} apim_rc;

/* Human-readable message of a status; never NULL. */
const char *apim_strerror(apim_rc rc);

/* HTTP status that the REST edge answers for a status. */
int apim_rc_http_status(apim_rc rc);

#endif
