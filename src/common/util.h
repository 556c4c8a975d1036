/*
 * util.h: small helpers shared by every component: identifiers, time,
 * randomness, constant-time comparison, base64, files.
 */
#ifndef APIM_UTIL_H
#define APIM_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

#define APIM_UUID_LEN 36

/* Random UUID v4 into out (37 bytes with the terminator). */
void apim_uuid(char out[APIM_UUID_LEN + 1]);
/* 1 when s is a canonical lower-case UUID. */
int apim_uuid_valid(const char *s);

int64_t apim_now_ms(void);          /* wall clock, ms since the epoch */
int64_t apim_mono_ms(void);         /* monotonic clock, ms */
/* Formats ms since epoch as ISO-8601 UTC into out (at least 32 bytes). */
void apim_iso8601(int64_t ms, char *out, size_t len);

/* Cryptographically random bytes (OpenSSL RAND_bytes); aborts on failure. */
void apim_random(void *buf, size_t n);
/* n random bytes encoded as base64url without padding, into out
 * (out must hold 4*n/3+4 bytes). */
void apim_random_token(char *out, size_t n);

/* Constant-time equality of two byte strings (length leaks, content not). */
int apim_ct_equal(const void *a, size_t alen, const void *b, size_t blen);

/* Base64 (standard alphabet, padded). Return the malloc'ed result or NULL
 * on bad input; *outlen receives the length. */
char *apim_base64_encode(const void *data, size_t len);
unsigned char *apim_base64_decode(const char *s, size_t len, size_t *outlen);

/* Hex of SHA-256 of data into out (65 bytes). */
void apim_sha256_hex(const void *data, size_t len, char out[65]);

/* Writes data to path atomically with the given mode (temp file + rename). */
apim_rc apim_write_file(const char *path, const void *data, size_t len, unsigned mode);
/* Reads a whole file (at most max bytes); malloc'ed, NUL-terminated. */
apim_rc apim_read_file(const char *path, size_t max, char **out, size_t *outlen);
/* mkdir -p with mode. */
apim_rc apim_mkdirs(const char *path, unsigned mode);

/* Parses a decimal int64 from a whole string; 0 on success. */
int apim_parse_i64(const char *s, int64_t *out);

#endif
