/*
 * tm_policy.h: the rate limits of the Traffic Manager, from the policies
 * the control plane serves at /internal/data/v1/throttling-policies.
 *
 * A limit is found by the policy's level ("application", "subscription",
 * "advanced", "custom") and name, and for an advanced policy by the index
 * of the conditional group the gateway matched (-1: the default limit).
 * A table is immutable once built; the Traffic Manager swaps in a new one
 * when policies change.
 */
#ifndef APIM_TM_POLICY_H
#define APIM_TM_POLICY_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "common/error.h"

typedef struct tm_policies tm_policies;

typedef struct {
	int64_t amount;    /* requests, events or bytes per window */
	int64_t window_ms; /* the window: unitTime x timeUnit */
	int bandwidth;     /* amount is bytes */
} tm_limit;

/* Builds a table from the data API's list (borrowed). Policies that are
 * unlimited or that cannot be read are left out (counted in *skipped when
 * not NULL). APIM_EINVAL when list is not an array. */
apim_rc tm_policies_build(json_t *list, tm_policies **out, size_t *skipped);
void tm_policies_free(tm_policies *t);

/* The limit of a policy; 0 when the table has no (limited) such policy.
 * group: index of an advanced policy's conditional group, -1 for its
 * default limit (ignored for other levels). */
int tm_policies_find(const tm_policies *t, const char *level, const char *name, int group,
		     tm_limit *out);

size_t tm_policies_count(const tm_policies *t);

/* Reads a limit object of the Admin API ({type, requestCount|bandwidth|
 * eventCount: {timeUnit, unitTime, ...}}); 0 when unlimited or invalid. */
int tm_limit_parse(json_t *limit, tm_limit *out);

#endif
