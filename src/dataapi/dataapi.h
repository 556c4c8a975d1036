/*
 * dataapi.h: the internal data API the gateways read, /internal/data/v1.
 *
 * Every route needs the header X-APIM-Gateway-Credential carrying the
 * gateway credential (gateway.credential, else <server.home>/
 * gateway-credential, generated mode 0600 at first start), compared in
 * constant time; anything else is 401 with the reference error body.
 *
 * GET /snapshot?gatewayLabel=Default is everything a gateway of that
 * environment needs, read in one read transaction together with the change
 * sequence it is consistent with ("seq"): a gateway loads it, then applies
 * events with a larger seq. Per-entity fetches (reference style, {count,
 * list}): /apis?gatewayLabel=&apiId=, /applications?id=,
 * /application-key-mappings?consumerKey=, /subscriptions?apiId=&appId=,
 * /throttling-policies, /block, /revokedjwt, /keymanagers; /sequence gives
 * the current {seq}. GET /changes?since=<seq>&gatewayLabel= is the delta
 * since seq (the current state of every API, application, key mapping,
 * subscription and revoked token that changed, or its deletion) with the
 * new seq, or {"full": true, "reason"} when only a snapshot can say it.
 */
#ifndef APIM_DATAAPI_H
#define APIM_DATAAPI_H

#include "common/ctx.h"
#include "common/error.h"
#include "http/http.h"

/* Loads or generates the gateway credential. Before dataapi_routes. */
apim_rc dataapi_init(apim_ctx *ctx);
void dataapi_routes(http_server *s);

#endif
