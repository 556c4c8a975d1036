/*
 * http_ops.h: operational endpoints of every daemon: /health/live,
 * /health/ready (ready when both databases answer) and /metrics
 * (Prometheus text: requests by route and status, latency histogram, DB
 * pool state).
 */
#ifndef APIM_HTTP_OPS_H
#define APIM_HTTP_OPS_H

#include "http/http.h"

void http_ops_routes(http_server *s);

#endif
