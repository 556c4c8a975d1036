/*
 * ctx.h: the one documented server context of apimd.
 *
 * Created by main before any server starts, read-only afterwards (the
 * pointers never change while requests run), handed to every handler as
 * r->ctx.
 */
#ifndef APIM_CTX_H
#define APIM_CTX_H

#include <stdint.h>

#include "common/config.h"

struct db;
struct http_server;

typedef struct apim_ctx {
	const apim_config *cfg;
	struct db *apimgt; /* apimgtdb; NULL on profiles that have none */
	struct db *shared; /* shareddb; NULL on profiles that have none */
	struct http_server *http;
	const char *profile;
	int64_t started_ms;
	int port; /* control-plane port after the offset */
} apim_ctx;

#endif
