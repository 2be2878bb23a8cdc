"""TokenCodec.verify against python-jose's own jwt.decode.

The codec lets jose check the header's algorithm and the signature (jws.verify) and
checks the registered claims itself (exp, iat, nbf, iss, aud), which is half the cost of
jwt.decode on every authenticated request. Here both judge the same tokens: every
combination of good and bad registered claims, signatures and algorithms, signed with an
HMAC key and with an ES256 key. Where they may differ on purpose the codec is the
stricter one, tested at the end.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from jose import jwk, jwt

from app.core.config import Settings
from app.core.errors import InvalidToken, TokenExpired
from app.core.security import TokenCodec, new_jti
from tests.test_keys import private_pem, write

ISSUER = "userservice"
AUDIENCE = "userservice"
HMAC_KEY = "k" * 48
REQUIRED = {f"require_{claim}": True for claim in ("sub", "exp", "iat", "jti", "iss", "aud")}
_MISSING = object()

NOW = int(time.time())
# Far enough from now that the run's own duration never moves a token across a boundary.
EXP = [NOW + 3600, NOW - 3600, 1.0e11, _MISSING, None, "soon", [NOW + 3600]]
IAT = [NOW, NOW - 60.5, _MISSING, None, "x", {"t": 1}]
NBF = [_MISSING, NOW - 3600, NOW + 3600, "x"]
ISS = [ISSUER, "someone-else", _MISSING, [ISSUER], 7]
AUD = [AUDIENCE, [AUDIENCE, "other"], ["other"], "other", _MISSING, [AUDIENCE, 1], [], 7]


def codec_for(kind: str, tmp_path: Path) -> tuple[TokenCodec, Any, str]:
    """(codec, signing key, algorithm)."""
    if kind == "HS256":
        settings = Settings(_env_file=None, secret_key=HMAC_KEY)
        return TokenCodec(settings), HMAC_KEY, "HS256"
    pem = private_pem("ES256")
    settings = Settings(
        _env_file=None,
        jwt_algorithm="ES256",
        jwt_private_key_file=write(tmp_path / "es256.pem", pem),
    )
    return TokenCodec(settings), pem.decode(), "ES256"


def claims_with(exp: object, iat: object, nbf: object, iss: object, aud: object) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "sub": "42",
        "sid": uuid.uuid4().hex,
        "jti": uuid.uuid4().hex,
        "type": "access",
    }
    for name, value in (("exp", exp), ("iat", iat), ("nbf", nbf), ("iss", iss), ("aud", aud)):
        if value is not _MISSING:
            claims[name] = value
    return claims


def jose_accepts(token: str, key: Any, algorithm: str) -> bool:
    verify_key = key if algorithm == "HS256" else _public_of(key)
    try:
        jwt.decode(
            token,
            verify_key,
            algorithms=[algorithm],
            audience=AUDIENCE,
            issuer=ISSUER,
            options=REQUIRED,
        )
    except Exception:  # jose lets some malformed claims escape as TypeError and the like
        return False
    return True


def _public_of(private_pem_text: str) -> Any:
    return jwk.construct(private_pem_text, "ES256").public_key()


def _b64_json(value: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


def codec_accepts(codec: TokenCodec, token: str) -> bool:
    try:
        codec.verify(token, "access")
    except InvalidToken:
        return False
    return True


def sign(claims: dict[str, Any], key: Any, algorithm: str, codec: TokenCodec) -> str:
    kid = codec.public_jwks[0]["kid"] if codec.public_jwks else None
    headers = {"kid": kid} if kid else None
    return jwt.encode(claims, key, algorithm=algorithm, headers=headers)


@pytest.mark.parametrize("kind", ["HS256", "ES256"])
def test_codec_and_jose_agree_on_every_registered_claim_combination(
    kind: str, tmp_path: Path
) -> None:
    codec, key, algorithm = codec_for(kind, tmp_path)
    accepted = 0
    combinations = list(itertools.product(EXP, IAT, NBF, ISS, AUD))
    for exp, iat, nbf, iss, aud in combinations:
        token = sign(claims_with(exp, iat, nbf, iss, aud), key, algorithm, codec)
        ours = codec_accepts(codec, token)
        assert ours == jose_accepts(token, key, algorithm), (
            exp,
            iat,
            nbf,
            iss,
            aud,
            ours,
        )
        accepted += ours
    # Guards the comparison itself: some combinations pass, most do not.
    assert 0 < accepted < len(combinations) // 10


def codec_answer(codec: TokenCodec, token: str, kind: Any = "access") -> str:
    try:
        codec.verify(token, kind)
    except TokenExpired:
        return "token_expired"
    except InvalidToken:
        return "invalid_token"
    return "ok"


@pytest.mark.parametrize("kind", ["HS256", "ES256"])
def test_token_expired_only_when_exp_alone_is_wrong(kind: str, tmp_path: Path) -> None:
    """Over every combination of registered claims: `token_expired` exactly for the tokens
    jose accepts once their past ``exp`` is moved into the future (jose itself raises
    ExpiredSignatureError before checking iat, nbf, iss and aud)."""
    codec, key, algorithm = codec_for(kind, tmp_path)
    expired = 0
    for iat, nbf, iss, aud in itertools.product(IAT, NBF, ISS, AUD):
        past = sign(claims_with(NOW - 3600, iat, nbf, iss, aud), key, algorithm, codec)
        future = sign(claims_with(NOW + 3600, iat, nbf, iss, aud), key, algorithm, codec)
        answer = codec_answer(codec, past)
        if jose_accepts(future, key, algorithm):
            assert answer == "token_expired", (iat, nbf, iss, aud)
            expired += 1
        else:
            assert answer == "invalid_token", (iat, nbf, iss, aud)
    assert expired > 0


@pytest.mark.parametrize("kind", ["HS256", "ES256"])
def test_an_expired_token_that_is_also_forged_or_mistyped_is_invalid(
    kind: str, tmp_path: Path
) -> None:
    codec, key, algorithm = codec_for(kind, tmp_path)
    claims = claims_with(NOW - 3600, NOW - 7200, _MISSING, ISSUER, AUDIENCE)
    token = sign(claims, key, algorithm, codec)
    assert codec_answer(codec, token) == "token_expired"
    header, payload, signature = token.split(".")
    flipped = signature[:10] + ("A" if signature[10] != "A" else "B") + signature[11:]
    assert codec_answer(codec, f"{header}.{payload}.{flipped}") == "invalid_token"
    assert codec_answer(codec, f"{header}.{payload}.") == "invalid_token"
    # Signed with another key (for ES256: one whose kid is unknown here).
    (tmp_path / "other").mkdir()
    other_codec, other_key, _ = codec_for(kind, tmp_path / "other")
    if kind == "HS256":
        other_key = "x" * 48
    assert codec_answer(codec, sign(claims, other_key, algorithm, other_codec)) == "invalid_token"
    # With our kid, but another key's signature.
    assert codec_answer(codec, sign(claims, other_key, algorithm, codec)) == "invalid_token"
    assert codec_answer(codec, token, "refresh") == "invalid_token"
    for name, value in (("sub", "x"), ("sid", "nothex"), ("jti", ""), ("type", None)):
        changed = sign({**claims, name: value}, key, algorithm, codec)
        assert codec_answer(codec, changed) == "invalid_token", name


@pytest.mark.parametrize("kind", ["HS256", "ES256"])
def test_codec_and_jose_agree_on_signatures_and_algorithms(kind: str, tmp_path: Path) -> None:
    codec, key, algorithm = codec_for(kind, tmp_path)
    good = claims_with(NOW + 3600, NOW, _MISSING, ISSUER, AUDIENCE)
    token = sign(good, key, algorithm, codec)
    header, payload, signature = token.split(".")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    other_alg = "HS512" if algorithm == "HS256" else "ES384"
    variants = {
        "good": token,
        "tampered-signature": f"{header}.{payload}.{flipped}",
        "no-signature": f"{header}.{payload}.",
        "other-payload": ".".join(
            [header, sign({**good, "sub": "43"}, key, algorithm, codec).split(".")[1], signature]
        ),
        "alg-none": f"{_b64_json({'alg': 'none'})}.{payload}.",
        "two-parts": f"{header}.{payload}",
    }
    if algorithm == "HS256":
        variants["other-alg"] = jwt.encode(good, key, algorithm=other_alg)
    for name, variant in variants.items():
        ours = codec_accepts(codec, variant)
        assert ours == jose_accepts(variant, key, algorithm), name
        assert ours == (name == "good"), name


@pytest.mark.parametrize(
    ("claim", "value"),
    [
        # jose converts with int(): numeric strings and booleans pass there, not here.
        ("exp", str(NOW + 3600)),
        ("iat", str(NOW)),
        ("iat", True),
        ("nbf", str(NOW - 3600)),
        # Python's json reads these; they never compare as expired.
        ("exp", float("inf")),
        ("exp", float("nan")),
    ],
)
def test_the_codec_is_stricter_than_jose_on_dates(claim: str, value: object) -> None:
    codec, key, algorithm = codec_for("HS256", Path("."))
    claims = claims_with(NOW + 3600, NOW, _MISSING, ISSUER, AUDIENCE)
    claims[claim] = value
    assert not codec_accepts(codec, sign(claims, key, algorithm, codec))


def _signed_payload(payload: bytes, key: str = HMAC_KEY) -> str:
    """An HS256 token over any payload bytes, signed correctly (jose signs what it's given)."""
    header = _b64_json({"alg": "HS256", "typ": "JWT"})
    body = base64.urlsafe_b64encode(payload).rstrip(b"=").decode()
    signature = jwk.construct(key, "HS256").sign(f"{header}.{body}".encode())
    return f"{header}.{body}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


@pytest.mark.parametrize(
    "case",
    ["exp-huge-int", "iat-huge-int", "nbf-huge-int", "utf-16", "utf-8-bom", "deeply-nested"],
)
def test_odd_signed_payloads_are_refused_or_accepted_never_an_error(case: str) -> None:
    """Signed with our key, so only a key holder could send them; still never a 500."""
    codec, _, _ = codec_for("HS256", Path("."))
    good = claims_with(NOW + 3600, NOW, _MISSING, ISSUER, AUDIENCE)
    text = json.dumps(good)
    payloads = {
        "exp-huge-int": text.replace(f'"exp": {NOW + 3600}', '"exp": 1' + "0" * 400),
        "iat-huge-int": text.replace(f'"iat": {NOW}', '"iat": 1' + "0" * 400),
        "nbf-huge-int": json.dumps({**good, "nbf": 0}).replace('"nbf": 0', '"nbf": 1' + "0" * 400),
    }
    if case in payloads:
        payload = payloads[case].encode()
    elif case == "utf-16":
        payload = text.encode("utf-16")
    elif case == "utf-8-bom":
        payload = b"\xef\xbb\xbf" + text.encode()
    else:
        payload = b"[" * 5000 + b"]" * 5000
    accepted = codec_accepts(codec, _signed_payload(payload))  # raises on anything else
    # A date far in the future is a date; a not-before far in the future is not yet.
    assert accepted == (case in {"exp-huge-int", "iat-huge-int"})


def test_token_ids_are_random_hex_never_repeated_and_a_forked_child_draws_its_own() -> None:
    """new_jti hands out 16 bytes of a 4 KiB read of os.urandom at a time: across several
    reads no id repeats, and a forked child never gets the ids its parent will hand out."""
    ids = [new_jti() for _ in range(3 * 256 + 7)]
    assert len(set(ids)) == len(ids)
    assert all(len(jti) == 32 and int(jti, 16) >= 0 for jti in ids)
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: write its next ids and leave at once
        os.write(writer, "".join(new_jti() for _ in range(8)).encode())
        os._exit(0)
    os.close(writer)
    os.waitpid(pid, 0)
    with os.fdopen(reader) as pipe:
        child = pipe.read()
    child_ids = {child[i : i + 32] for i in range(0, len(child), 32)}
    parent_ids = {new_jti() for _ in range(8)}
    assert len(child_ids) == 8
    assert not child_ids & parent_ids
