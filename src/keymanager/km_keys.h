/*
 * km_keys.h: JWT signing keys and JWS.
 *
 * Keys (RS256: RSA 2048; ES256: P-256) are generated at first start, stored
 * in shareddb (km_signing_key) with the private key encrypted by the master
 * key (AES-256-GCM), and shared by every Key Manager node. Exactly one key
 * is active (signs); a rotated key stays published in the JWKS and usable
 * for verification until the last token it may have signed has expired.
 * Each node reloads the key set from shareddb when it meets an unknown kid
 * and at most every few seconds before signing, so a rotation on one node
 * reaches the others without a restart. Thread-safe.
 */
#ifndef APIM_KM_KEYS_H
#define APIM_KM_KEYS_H

#include <jansson.h>
#include <stdint.h>

#include "common/ctx.h"
#include "common/error.h"
#include "http/http.h"

/* Loads or generates the master key (cfg keymanager.master_key, else
 * <server.home>/master-key, 0600), migrates km_signing_key, and makes sure
 * an active key of cfg keymanager.signing_alg exists (two nodes starting at
 * once end with one active key). */
apim_rc km_keys_init(apim_ctx *ctx);
void km_keys_shutdown(void);

/* Signs claims (borrowed) as a compact JWS with the active key; header
 * {"alg","typ":"JWT","kid"}. *out is malloc'ed. */
apim_rc km_jwt_sign(apim_ctx *ctx, json_t *claims, char **out);

/*
 * Verifies a compact JWS signed by one of our keys: known kid, allowed alg
 * (never "none" or HMAC), valid signature, exp and nbf within leeway
 * seconds. On APIM_OK *claims is a new reference. APIM_EUNAUTH otherwise;
 * no detail leaks to the caller beyond a short reason in *why (static
 * string, may be NULL).
 */
apim_rc km_jwt_verify(apim_ctx *ctx, const char *jwt, int64_t leeway, json_t **claims,
		      const char **why);

/* {"keys":[...]} of every key still valid for verification (new ref). */
json_t *km_keys_jwks(apim_ctx *ctx);

/* Makes a new key of alg ("RS256"/"ES256") active; the old one retires
 * after max_validity_s (the longest token lifetime it may have signed). */
apim_rc km_keys_rotate(apim_ctx *ctx, const char *alg, int64_t max_validity_s,
		       char kid_out[64]);

/* `iss` of our tokens: keymanager.issuer, else
 * "<http|https>://<server.hostname>:<port>/oauth2/token" (https when
 * http.tls_cert is set). Borrowed, stable after km_keys_init. */
const char *km_issuer(apim_ctx *ctx);

/* Routes: /oauth2/jwks, discovery metadata (/.well-known/openid-configuration,
 * /oauth2/token/.well-known/openid-configuration,
 * /.well-known/oauth-authorization-server/oauth2/token), and the Admin
 * routes GET /api/am/admin/v4/signing-keys, POST .../signing-keys/rotate. */
void km_keys_routes(http_server *s);

#endif
