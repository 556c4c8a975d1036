#include "common/util.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

void apim_random(void *buf, size_t n)
{
	if (RAND_bytes(buf, (int)n) != 1) {
		fputs("apim: RAND_bytes failed\n", stderr);
		abort();
	}
}

void apim_uuid(char out[APIM_UUID_LEN + 1])
{
	unsigned char b[16];
	apim_random(b, sizeof(b));
	b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
	b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
	snprintf(out, APIM_UUID_LEN + 1,
		 "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
		 b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
		 b[14], b[15]);
}

int apim_uuid_valid(const char *s)
{
	if (s == NULL || strlen(s) != APIM_UUID_LEN)
		return 0;
	for (int i = 0; i < APIM_UUID_LEN; i++) {
		char c = s[i];
		if (i == 8 || i == 13 || i == 18 || i == 23) {
			if (c != '-')
				return 0;
		} else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
			return 0;
		}
	}
	return 1;
}

int64_t apim_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t apim_mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void apim_iso8601(int64_t ms, char *out, size_t len)
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;
	gmtime_r(&t, &tm);
	size_t n = strftime(out, len, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out + n, len - n, ".%03dZ", (int)(ms % 1000));
}

void apim_random_token(char *out, size_t n)
{
	unsigned char buf[128];
	if (n > sizeof(buf))
		n = sizeof(buf);
	apim_random(buf, n);
	char *b = apim_base64_encode(buf, n);
	size_t j = 0;
	for (size_t i = 0; b[i] && b[i] != '='; i++)
		out[j++] = b[i] == '+' ? '-' : b[i] == '/' ? '_' : b[i];
	out[j] = '\0';
	free(b);
}

int apim_ct_equal(const void *a, size_t alen, const void *b, size_t blen)
{
	if (alen != blen)
		return 0;
	return CRYPTO_memcmp(a, b, alen) == 0;
}

char *apim_base64_encode(const void *data, size_t len)
{
	size_t outlen = 4 * ((len + 2) / 3) + 1;
	char *out = malloc(outlen);
	if (out == NULL)
		return NULL;
	EVP_EncodeBlock((unsigned char *)out, data, (int)len);
	return out;
}

unsigned char *apim_base64_decode(const char *s, size_t len, size_t *outlen)
{
	if (len % 4 != 0)
		return NULL;
	unsigned char *out = malloc(len / 4 * 3 + 1);
	if (out == NULL)
		return NULL;
	int n = EVP_DecodeBlock(out, (const unsigned char *)s, (int)len);
	if (n < 0) {
		free(out);
		return NULL;
	}
	/* EVP_DecodeBlock counts padding as zero bytes. */
	if (len >= 1 && s[len - 1] == '=')
		n--;
	if (len >= 2 && s[len - 2] == '=')
		n--;
	*outlen = (size_t)n;
	out[n] = '\0';
	return out;
}

void apim_sha256_hex(const void *data, size_t len, char out[65])
{
	unsigned char md[SHA256_DIGEST_LENGTH];
	SHA256(data, len, md);
	for (int i = 0; i < SHA256_DIGEST_LENGTH; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
}

apim_rc apim_write_file(const char *path, const void *data, size_t len, unsigned mode)
{
	char tmp[4096];
	if (snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof(tmp))
		return APIM_EINVAL;
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	if (fd < 0)
		return APIM_EIO;
	const char *p = data;
	size_t left = len;
	while (left > 0) {
		ssize_t w = write(fd, p, left);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			close(fd);
			unlink(tmp);
			return APIM_EIO;
		}
		p += w;
		left -= (size_t)w;
	}
	if (fchmod(fd, mode) != 0 || fsync(fd) != 0 || close(fd) != 0) {
		unlink(tmp);
		return APIM_EIO;
	}
	if (rename(tmp, path) != 0) {
		unlink(tmp);
		return APIM_EIO;
	}
	return APIM_OK;
}

apim_rc apim_read_file(const char *path, size_t max, char **out, size_t *outlen)
{
	FILE *f = fopen(path, "rb");
	if (f == NULL)
		return errno == ENOENT ? APIM_ENOTFOUND : APIM_EIO;
	size_t cap = 4096, len = 0;
	char *buf = malloc(cap);
	if (buf == NULL) {
		fclose(f);
		return APIM_ENOMEM;
	}
	for (;;) {
		if (len + 1 >= cap) {
			if (cap > max) {
				free(buf);
				fclose(f);
				return APIM_ETOOLARGE;
			}
			cap *= 2;
			char *nb = realloc(buf, cap);
			if (nb == NULL) {
				free(buf);
				fclose(f);
				return APIM_ENOMEM;
			}
			buf = nb;
		}
		size_t r = fread(buf + len, 1, cap - len - 1, f);
		if (r == 0)
			break;
		len += r;
	}
	int err = ferror(f);
	fclose(f);
	if (err || len > max) {
		free(buf);
		return err ? APIM_EIO : APIM_ETOOLARGE;
	}
	buf[len] = '\0';
	*out = buf;
	if (outlen)
		*outlen = len;
	return APIM_OK;
}

apim_rc apim_mkdirs(const char *path, unsigned mode)
{
	char buf[4096];
	size_t n = strlen(path);
	if (n == 0 || n >= sizeof(buf))
		return APIM_EINVAL;
	memcpy(buf, path, n + 1);
	for (size_t i = 1; i <= n; i++) {
		if (buf[i] == '/' || buf[i] == '\0') {
			char c = buf[i];
			buf[i] = '\0';
			if (mkdir(buf, mode) != 0 && errno != EEXIST)
				return APIM_EIO;
			buf[i] = c;
		}
	}
	return APIM_OK;
}

int apim_parse_i64(const char *s, int64_t *out)
{
	if (s == NULL || *s == '\0')
		return -1;
	char *end;
	errno = 0;
	long long v = strtoll(s, &end, 10);
	if (errno != 0 || *end != '\0')
		return -1;
	*out = v;
	return 0;
}
