/*
 * admin_validate.h: value checks of the Admin API that a schema table
 * cannot express: IP addresses and ranges, custom-rule key templates, time
 * units, names. Each returns APIM_OK, or APIM_EINVAL with a message in err
 * (a sentence naming `field` that says what to fix).
 */
#ifndef APIM_ADMIN_VALIDATE_H
#define APIM_ADMIN_VALIDATE_H

#include <stddef.h>

#include "common/error.h"

/* Time units of rate limits, NULL-terminated: sec, min, hour, day, week,
 * month, year. */
extern const char *const admin_time_units[];
/* Key-template tokens of custom rules, NULL-terminated ("$userId", ...);
 * "$customProperty.<name>" is accepted besides these. */
extern const char *const admin_key_template_tokens[];

/* The canonical spelling of a time unit (case-insensitive match), or NULL. */
const char *admin_validate_time_unit(const char *s);
/* Length of a time unit in seconds (month = 30 days, year = 365 days); 0
 * when unknown. */
long long admin_time_unit_seconds(const char *unit);

/* An IPv4 or IPv6 address. *family (AF_INET/AF_INET6) and addr (network
 * order, 4 or 16 bytes used) are filled when not NULL. */
apim_rc admin_validate_ip(const char *field, const char *s, int *family, unsigned char addr[16],
			  char *err, size_t errlen);
/* A range: both valid, the same family, start <= end. */
apim_rc admin_validate_ip_range(const char *start_field, const char *start,
				const char *end_field, const char *end, char *err, size_t errlen);
/* Canonical text of an address (inet_ntop of inet_pton) into out (>= 46 bytes). */
apim_rc admin_ip_canonical(const char *s, char *out, size_t outlen);

/* A custom rule's key template: ':'-separated segments, each a known $token,
 * $customProperty.<name>, or a literal of [A-Za-z0-9_.@-]. */
apim_rc admin_validate_key_template(const char *field, const char *s, char *err, size_t errlen);

/* Names of policies ([A-Za-z0-9_-], 1..max characters) and environments. */
apim_rc admin_validate_name(const char *field, const char *s, size_t max, char *err,
			    size_t errlen);

/* A host name or IP literal for a gateway virtual host. */
apim_rc admin_validate_host(const char *field, const char *s, char *err, size_t errlen);

#endif
