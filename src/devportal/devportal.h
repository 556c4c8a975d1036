/*
 * devportal.h: Developer Portal v3 REST API (/api/am/devportal/v3) and
 * self sign-up (/api/identity/user/v1.0/me): discovery of published APIs,
 * applications, keys and tokens, API keys, subscriptions, ratings and
 * comments.
 */
#ifndef APIM_DEVPORTAL_H
#define APIM_DEVPORTAL_H

#include "common/ctx.h"
#include "common/error.h"
#include "http/http.h"

/* Applies the Developer Portal's migrations (apimgtdb and shareddb). */
apim_rc devportal_migrate(apim_ctx *ctx);
void devportal_routes(http_server *s);

#endif
