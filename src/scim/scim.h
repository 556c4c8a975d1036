/*
 * scim.h: SCIM 2.0 subset for users and roles (/scim2/Users, /scim2/Groups),
 * RFC 7643/7644 shapes, over auth_users.
 */
#ifndef APIM_SCIM_H
#define APIM_SCIM_H

#include "http/http.h"

void scim_routes(http_server *s);

#endif
