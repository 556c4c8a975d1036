"""JWK -> PEM and JWS checks by the OpenSSL command line, Python standard
library only, so that tests verify our tokens with an implementation that
is not ours.

    import jwkpem
    jwk = jwkpem.find_jwk(jwks_json, kid)          # from GET /oauth2/jwks
    pem = jwkpem.jwk_to_pem(jwk)                   # SubjectPublicKeyInfo PEM
    ok, detail = jwkpem.openssl_verify(jwt, jwk)   # `openssl dgst -verify`
    jwkpem.assert_openssl_verifies(testcase, jwt, jwks_json)

RSA keys (kty RSA: n, e) and EC P-256 keys (kty EC, crv P-256: x, y) are
supported, i.e. RS256 and ES256. The SubjectPublicKeyInfo is built here
with a small DER encoder; ES256 signatures (R || S, RFC 7518 3.4) are
re-encoded as the DER ECDSA-Sig-Value that OpenSSL expects.
"""

import base64
import json
import os
import shutil
import subprocess
import tempfile

OID_RSA_ENCRYPTION = "1.2.840.113549.1.1.1"
OID_EC_PUBLIC_KEY = "1.2.840.10045.2.1"
OID_PRIME256V1 = "1.2.840.10045.3.1.7"


def b64url_decode(s):
    """Strict-enough base64url (no padding expected) -> bytes."""
    if isinstance(s, str):
        s = s.encode("ascii")
    if b"=" in s or b"+" in s or b"/" in s:
        raise ValueError("not base64url without padding: %r" % s[:40])
    return base64.urlsafe_b64decode(s + b"=" * (-len(s) % 4))


def b64url_encode(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode("ascii")


# -- DER ----------------------------------------------------------------------

def _der_len(n):
    if n < 0x80:
        return bytes([n])
    out = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(out)]) + out


def _tlv(tag, body):
    return bytes([tag]) + _der_len(len(body)) + body


def der_integer(value):
    """INTEGER from a non-negative int or big-endian unsigned bytes."""
    if isinstance(value, (bytes, bytearray)):
        value = int.from_bytes(value, "big")
    if value < 0:
        raise ValueError("negative INTEGER")
    body = value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")
    if body[0] & 0x80:
        body = b"\x00" + body
    return _tlv(0x02, body)


def der_sequence(*items):
    return _tlv(0x30, b"".join(items))


def der_bit_string(data):
    return _tlv(0x03, b"\x00" + data)


def der_null():
    return b"\x05\x00"


def der_oid(dotted):
    arcs = [int(a) for a in dotted.split(".")]
    body = bytearray([40 * arcs[0] + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body.extend(reversed(chunk))
    return _tlv(0x06, bytes(body))


# -- JWK ----------------------------------------------------------------------

def jwk_to_der(jwk):
    """SubjectPublicKeyInfo DER of a public RSA or EC P-256 JWK."""
    kty = jwk.get("kty")
    if kty == "RSA":
        n, e = b64url_decode(jwk["n"]), b64url_decode(jwk["e"])
        rsa_key = der_sequence(der_integer(n), der_integer(e))
        alg = der_sequence(der_oid(OID_RSA_ENCRYPTION), der_null())
        return der_sequence(alg, der_bit_string(rsa_key))
    if kty == "EC":
        if jwk.get("crv") != "P-256":
            raise ValueError("unsupported curve %r" % jwk.get("crv"))
        x, y = b64url_decode(jwk["x"]), b64url_decode(jwk["y"])
        if len(x) != 32 or len(y) != 32:
            raise ValueError("P-256 coordinates must be 32 bytes (got %d, %d)" % (len(x), len(y)))
        alg = der_sequence(der_oid(OID_EC_PUBLIC_KEY), der_oid(OID_PRIME256V1))
        return der_sequence(alg, der_bit_string(b"\x04" + x + y))
    raise ValueError("unsupported kty %r" % kty)


def jwk_to_pem(jwk):
    b64 = base64.b64encode(jwk_to_der(jwk)).decode("ascii")
    lines = [b64[i:i + 64] for i in range(0, len(b64), 64)]
    return "-----BEGIN PUBLIC KEY-----\n%s\n-----END PUBLIC KEY-----\n" % "\n".join(lines)


def find_jwk(jwks, kid):
    """The key with this kid in a JWKS document (dict or JSON text), or None."""
    if isinstance(jwks, (str, bytes)):
        jwks = json.loads(jwks)
    for k in jwks.get("keys") or []:
        if k.get("kid") == kid:
            return k
    return None


# -- JWS ----------------------------------------------------------------------

def jws_parts(jwt):
    """(header dict, payload dict, signing input bytes, signature bytes)."""
    h, p, s = jwt.split(".")
    return (json.loads(b64url_decode(h)), json.loads(b64url_decode(p)),
            ("%s.%s" % (h, p)).encode("ascii"), b64url_decode(s))


def es256_sig_to_der(sig):
    """R || S (64 bytes) -> DER ECDSA-Sig-Value."""
    if len(sig) != 64:
        raise ValueError("ES256 signature must be 64 bytes, got %d" % len(sig))
    return der_sequence(der_integer(sig[:32]), der_integer(sig[32:]))


def openssl_verify(jwt, jwk, openssl="openssl"):
    """Checks jwt's signature with `openssl dgst -sha256 -verify` against
    jwk. Returns (ok, detail) where detail is OpenSSL's output."""
    header, _, signing_input, sig = jws_parts(jwt)
    alg = header.get("alg")
    if alg == "ES256":
        sig = es256_sig_to_der(sig)
    elif alg != "RS256":
        return False, "unsupported alg %r" % alg
    d = tempfile.mkdtemp(prefix="jwkpem-")
    try:
        paths = {name: os.path.join(d, name) for name in ("pub.pem", "sig.bin", "data.bin")}
        with open(paths["pub.pem"], "w") as f:
            f.write(jwk_to_pem(jwk))
        with open(paths["sig.bin"], "wb") as f:
            f.write(sig)
        with open(paths["data.bin"], "wb") as f:
            f.write(signing_input)
        r = subprocess.run([openssl, "dgst", "-sha256", "-verify", paths["pub.pem"],
                            "-signature", paths["sig.bin"], paths["data.bin"]],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=60, stdin=subprocess.DEVNULL)
        out = r.stdout.strip()
        return r.returncode == 0 and "Verified OK" in out, out
    finally:
        shutil.rmtree(d, ignore_errors=True)


def openssl_pubkey_text(jwk, openssl="openssl"):
    """`openssl pkey -pubin -text` of the JWK's PEM (raises when OpenSSL
    cannot parse it)."""
    r = subprocess.run([openssl, "pkey", "-pubin", "-noout", "-text"], input=jwk_to_pem(jwk),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
    if r.returncode != 0:
        raise AssertionError("openssl cannot read the key: %s" % r.stderr)
    return r.stdout


def assert_openssl_verifies(testcase, jwt, jwks):
    """Fails testcase unless jwt's kid is in jwks and OpenSSL accepts the
    signature; then checks that OpenSSL refuses the same token with one
    signature bit flipped (so the check itself can fail)."""
    header = jws_parts(jwt)[0]
    jwk = find_jwk(jwks, header.get("kid"))
    testcase.assertIsNotNone(jwk, "kid %r not in the JWKS" % header.get("kid"))
    testcase.assertEqual(jwk.get("alg"), header.get("alg"))
    ok, detail = openssl_verify(jwt, jwk)
    testcase.assertTrue(ok, "openssl refused the signature: %s" % detail)
    h, p, s = jwt.split(".")
    raw = bytearray(b64url_decode(s))
    raw[len(raw) // 2] ^= 0x01
    ok, detail = openssl_verify("%s.%s.%s" % (h, p, b64url_encode(bytes(raw))), jwk)
    testcase.assertFalse(ok, "openssl accepted a tampered signature: %s" % detail)
    return jwk
