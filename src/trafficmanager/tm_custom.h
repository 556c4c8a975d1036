/*
 * tm_custom.h: custom rate-limit policies (the reference's "custom rules":
 * a Siddhi query and a key template), reduced to what apim enforces.
 *
 * apim does not run Siddhi. It reads the subset of the reference's
 * documented examples:
 *
 *   FROM RequestStream
 *   SELECT userId, ( userId == 'admin@carbon.super' ) AS isEligible ,
 *          str:concat('admin@carbon.super','') as throttleKey
 *   INSERT INTO EligibilityStream;
 *   FROM EligibilityStream[isEligible==true]#throttler:timeBatch(1 min)
 *   SELECT throttleKey, (count(userId) >= 5) as isThrottled, expiryTimeStamp
 *   group by throttleKey
 *   INSERT ALL EVENTS into ResultStream;
 *
 * - eligibility: the expression aliased isEligible, `true` or a conjunction
 *   (and) of `field == 'literal'` over the template variables;
 * - the window: #throttler:timeBatch(N unit), unit sec, min, hour, day,
 *   week, month (30 days) or year (365 days), singular or plural;
 * - the limit: (count(...) >= N) admits N requests a window, (count(...) > N)
 *   admits N + 1.
 * Anything else is refused with a message that says what is supported.
 *
 * The parsed form ("rule" in the data API's policies) is what the gateway
 * and the Traffic Manager read; only apimd parses Siddhi (this file, for
 * the Admin API's validation and the data API).
 */
#ifndef APIM_TM_CUSTOM_H
#define APIM_TM_CUSTOM_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "common/error.h"

#define TM_CUSTOM_MAX_CONDS 8
#define TM_CUSTOM_VALUE_MAX 256

/* the variables of key templates and eligibility conditions */
extern const char *const tm_custom_vars[];

typedef struct {
	int var;                          /* index in tm_custom_vars */
	char value[TM_CUSTOM_VALUE_MAX]; /* the literal */
} tm_custom_cond;

typedef struct {
	tm_custom_cond conds[TM_CUSTOM_MAX_CONDS]; /* all must hold; none: always */
	size_t nconds;
	int64_t limit;     /* requests admitted per window */
	int64_t window_ms; /* unitTime x unit */
} tm_custom_rule;

/* Reads query (borrowed) into *out; APIM_EINVAL with a message for the
 * user in err when it is outside the supported subset. */
apim_rc tm_custom_parse(const char *query, tm_custom_rule *out, char *err, size_t errlen);

/* Checks that every $token of a key template (segments separated by ':')
 * is one of tm_custom_vars; APIM_EINVAL with a message in err. */
apim_rc tm_custom_template_check(const char *tmpl, char *err, size_t errlen);

/* The data API's form of a rule with its key template:
 * {"conditions": [{"field", "value"}], "limit", "windowMs", "keyTemplate"}
 * (a new reference). */
json_t *tm_custom_rule_json(const tm_custom_rule *rule, const char *key_template);

#endif
