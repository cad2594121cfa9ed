#!/usr/bin/env python3
"""Writes fuzz/seeds/<target>/: the inputs the tests send, one file each, named for what they
are. Run from the repository's root after `cargo build` (tokens come from `tessera token`,
signed with the published development key, valid until 2090):

    python3 fuzz/make_seeds.py
"""
import base64, hashlib, hmac, json, os, pathlib, shutil, struct, subprocess

ROOT = pathlib.Path(__file__).resolve().parent.parent
SEEDS = ROOT / "fuzz" / "seeds"


def write(target, name, data):
    folder = SEEDS / target
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data if isinstance(data, bytes) else data.encode())


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def frame(message, flag=0, length=None):
    return bytes([flag]) + struct.pack(">I", len(message) if length is None else length) + message


def field(number, value):
    """A length-delimited protobuf field."""
    return bytes([number << 3 | 2, len(value)]) + value


def token(*args):
    binary = ROOT / "target" / "debug" / "tessera"
    out = subprocess.run([str(binary), "token", "--ttl-secs", "2000000000", *args],
                         capture_output=True, text=True, check=True, cwd=ROOT)
    return out.stdout.strip()


if SEEDS.exists():
    shutil.rmtree(SEEDS)

# JSON bodies (tests/api/bad_input.rs, lifecycle and conformance).
for name, body in {
    "code": '{"code":"123456"}', "code-with-space": '{"code":"123 456"}',
    "empty-object": "{}", "empty": "", "blank": "  \n", "null-code": '{"code":null}',
    "numeric-code": '{"code":123456}', "unknown-fields": '{"code":"1","extra":{"a":[1,2.5e3,true]}}',
    "not-json": "code=123456", "array": "[]", "nested": "[" * 64 + "]" * 64,
    "long-code": json.dumps({"code": "1" * 201}), "escapes": '{"code":"\\u0031\\u0032\\ud83d\\ude00"}',
}.items():
    write("json_body", name, body)

# Authorization headers (tests/api/tokens.rs): tokens of the development key, HS256 with the
# fuzz targets' secret, alg none, crit, and headers that are not Bearer at all.
dev = token("--org", "acme", "--user", "alice", "--role", "otp.check", "--role", "otp.admin")
write("authorization", "dev-token", "Bearer " + dev)
claims = {"iss": "tessera-dev", "aud": "tessera", "sub": "alice", "exp": 3_800_000_000,
          "urn:zitadel:iam:user:resourceowner:id": "acme",
          "urn:zitadel:iam:org:project:roles": {"otp.check": {"acme": "acme.localhost"}}}
for name, header in {
    "hs256": {"alg": "HS256", "typ": "JWT"},
    "crit": {"alg": "HS256", "typ": "JWT", "crit": ["exp-policy"], "exp-policy": "strict"},
    "kid-unknown": {"alg": "HS256", "kid": "nobody"},
}.items():
    signing_input = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
    mac = hmac.new(b"fuzzing-hs256-secret", signing_input.encode(), hashlib.sha256).digest()
    write("authorization", name, "Bearer " + signing_input + "." + b64url(mac))
none = b64url(b'{"alg":"none"}') + "." + b64url(json.dumps(claims).encode()) + "."
write("authorization", "alg-none", "Bearer " + none)
for name, header in {"basic": "Basic YWxpY2U6c2VjcmV0", "bearer-empty": "Bearer ",
                     "three-dots": "Bearer a.b.c", "lowercase": "bearer " + dev,
                     "not-utf8": b"Bearer \xff\xfe"}.items():
    write("authorization", name, header)

# Claims (tests/api/helpers.rs Token::claims, tenancy and wire_edges).
write("claims", "full", json.dumps(claims))
write("claims", "no-roles", json.dumps({k: v for k, v in claims.items() if "roles" not in k}))
write("claims", "roles-odd", json.dumps({**claims, "urn:zitadel:iam:org:project:roles": {"otp.check": ["acme"], "x": 1}}))
write("claims", "long-subject", json.dumps({**claims, "sub": "u" * 201}))
write("claims", "control-character", json.dumps({**claims, "sub": "al\u0007ice"}))
write("claims", "not-an-object", "[1,2,3]")

# gRPC frames and messages (tests/api/wire_edges.rs, grpc_web.rs).
check = field(1, b"alice") + field(2, b"000000")
cases = {
    "check": frame(check), "empty-message": frame(b""), "empty-body": b"",
    "longer-than-body": frame(check, length=len(check) + 10),
    "shorter-than-body": frame(check, length=len(check) - 2),
    "two-frames": frame(check) + frame(check), "compressed": frame(check, flag=1),
    "flag-80": frame(check, flag=0x80), "flag-7f": frame(check, flag=0x7F),
    "invalid-varint": frame(b"\x12" + b"\xff" * 10 + b"\x01"),
    "invalid-utf8": frame(field(2, b"\xff\xfe")), "wrong-wire-type": frame(b"\x10\x01"),
}
for name, body in cases.items():
    write("grpc_frame", name, body)
    write("grpc_web", name, body)
    write("grpc_web", name + ".b64", base64.b64encode(body))
write("grpc_web", "not-base64", "!!!! not base64 ****")
write("grpc_web", "per-frame-padding", base64.b64encode(frame(check)) + base64.b64encode(frame(b"")))
for name in ["check", "invalid-varint", "invalid-utf8", "wrong-wire-type"]:
    write("protobuf", name, cases[name][5:])
write("protobuf", "verify", field(1, b"123456"))
write("protobuf", "unlock", field(1, b"69629023906488334"))
write("protobuf", "unknown-field", field(15, b"x") + check)

# Settings: key rings (src/seal.rs tests) and Redis seed lists (src/settings.rs tests).
key = base64.b64encode(bytes(range(32))).decode()
for name, ring in {
    "dev": "dev-2026:ZGV2ZWxvcG1lbnQtb25seS1zZWFsLWtleS0zMmJ5dGU=",
    "two-keys": f"new:{key},\nold:{base64.b64encode(bytes(32)).decode()}",
    "short-key": "k:AAAA", "no-id": ":" + key, "duplicate": f"a:{key},a:{key}", "empty": "",
    "one-url": "redis://127.0.0.1:6379", "urls": "redis://10.0.0.1:6379, rediss://user:pw@10.0.0.2:6380/0",
    "bad-url": "redis://[::1", "only-commas": ",,,",
}.items():
    write("settings", name, ring)

print(f"seeds written to {SEEDS.relative_to(ROOT)}:",
      {t.name: len(list(t.iterdir())) for t in sorted(SEEDS.iterdir())})
