"""Avatar upload, replacement, removal and serving; refused files leave no trace."""

from __future__ import annotations

import asyncio
import io
import os
import random
import re
import struct
import warnings
import zlib
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from PIL import ExifTags, Image

from app.core.errors import InvalidImage
from app.core.images import reencode
from app.dependencies import SessionDep
from app.models import User
from app.resources import resources_of
from tests.conftest import PASSWORD, access_token, add_user, bearer, media_files, state

PROFILE = "/api/v1/users/profile"
AVATAR = f"{PROFILE}/avatar"
AVATAR_URL = re.compile(r"/media/avatars/[0-9a-f]{32}\.(png|jpg|webp)")


def png(
    size: tuple[int, int] = (64, 48), mode: str = "RGBA", color: Any = (200, 30, 30, 128)
) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, "PNG")
    return buffer.getvalue()


def jpeg_with_gps(size: tuple[int, int] = (64, 48)) -> bytes:
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "SpyCam"
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = (48.0, 51.0, 29.0)
    gps[ExifTags.GPS.GPSLongitudeRef] = "E"
    gps[ExifTags.GPS.GPSLongitude] = (2.0, 17.0, 40.0)
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 120, 200)).save(buffer, "JPEG", exif=exif, comment=b"secret")
    return buffer.getvalue()


def webp(size: tuple[int, int] = (40, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGBA", size, (0, 255, 0, 100)).save(buffer, "WEBP")
    return buffer.getvalue()


def gif() -> bytes:
    buffer = io.BytesIO()
    Image.new("P", (8, 8)).save(buffer, "GIF")
    return buffer.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_declaring(width: int, height: int) -> bytes:
    """A valid PNG signature and header declaring a huge image, with almost no pixel data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + png_chunk(b"IEND", b"")
    )


def upload_files(data: bytes, filename: str = "me.png", content_type: str = "image/png") -> Any:
    return {"file": (filename, data, content_type)}


async def put_avatar(
    client: httpx.AsyncClient, token: str, data: bytes, **kwargs: str
) -> httpx.Response:
    return await client.put(AVATAR, files=upload_files(data, **kwargs), headers=bearer(token))


@pytest.fixture
async def token(app: FastAPI) -> str:
    await add_user(app)
    return await access_token(app)


def stored(app: FastAPI, url: str) -> bytes:
    root: Path = resources_of(app).settings.media_root
    return (root / url.removeprefix("/media/")).read_bytes()


async def test_upload_png_then_serve_it(
    client: httpx.AsyncClient, app: FastAPI, token: str
) -> None:
    response = await put_avatar(client, token, png())
    assert response.status_code == 200, response.text
    url = response.json()["avatar"]
    assert AVATAR_URL.fullmatch(url)
    assert url.endswith(".png")
    profile = await client.get("/api/v1/users/profile", headers=bearer(token))
    assert profile.json()["avatar"] == url

    served = await client.get(url)
    assert served.status_code == 200
    assert served.headers["content-type"] == "image/png"
    assert served.headers["x-content-type-options"] == "nosniff"
    with Image.open(io.BytesIO(served.content)) as image:
        assert image.format == "PNG"
        assert image.size == (64, 48)
        assert image.mode == "RGBA"
    assert list(media_files(app)) == [url.removeprefix("/media/")]


async def test_jpeg_is_reencoded_without_exif_gps_or_trailing_bytes(
    client: httpx.AsyncClient, app: FastAPI, token: str
) -> None:
    original = jpeg_with_gps() + b"<script>alert(1)</script>TRAILING"
    with Image.open(io.BytesIO(original)) as image:
        assert image.getexif().get_ifd(ExifTags.IFD.GPSInfo)  # the test image has GPS
    response = await put_avatar(
        client, token, original, filename="../../evil.php", content_type="text/html"
    )
    assert response.status_code == 200, response.text
    url = response.json()["avatar"]
    assert AVATAR_URL.fullmatch(url)
    assert url.endswith(".jpg")
    assert "evil" not in url
    content = stored(app, url)
    assert b"TRAILING" not in content
    assert b"script" not in content
    assert b"Exif" not in content
    assert b"SpyCam" not in content
    assert b"secret" not in content
    assert content.endswith(b"\xff\xd9")  # ends at the JPEG end-of-image marker
    with Image.open(io.BytesIO(content)) as image:
        assert image.format == "JPEG"
        assert not image.getexif()
        assert "exif" not in image.info
        assert "comment" not in image.info
    served = await client.get(url)
    assert served.headers["content-type"] == "image/jpeg"
    assert served.headers["x-content-type-options"] == "nosniff"


async def test_webp_upload(client: httpx.AsyncClient, app: FastAPI, token: str) -> None:
    response = await put_avatar(client, token, webp(), filename="a.webp", content_type="image/webp")
    assert response.status_code == 200, response.text
    url = response.json()["avatar"]
    assert url.endswith(".webp")
    served = await client.get(url)
    assert served.headers["content-type"] == "image/webp"
    with Image.open(io.BytesIO(served.content)) as image:
        assert image.format == "WEBP"
        assert image.size == (40, 40)


async def test_type_comes_from_the_content_not_the_name_or_content_type(
    client: httpx.AsyncClient, token: str
) -> None:
    response = await put_avatar(
        client, token, png(), filename="picture.svg", content_type="image/svg+xml"
    )
    assert response.status_code == 200
    assert response.json()["avatar"].endswith(".png")


async def test_exif_orientation_is_applied_before_it_is_stripped(
    client: httpx.AsyncClient, app: FastAPI, token: str
) -> None:
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6  # rotated 90 degrees
    buffer = io.BytesIO()
    Image.new("RGB", (60, 20), "white").save(buffer, "JPEG", exif=exif)
    response = await put_avatar(client, token, buffer.getvalue())
    assert response.status_code == 200
    with Image.open(io.BytesIO(stored(app, response.json()["avatar"]))) as image:
        assert image.size == (20, 60)


async def test_replacing_the_avatar_removes_the_old_file(
    client: httpx.AsyncClient, app: FastAPI, token: str
) -> None:
    first = (await put_avatar(client, token, png())).json()["avatar"]
    second = (await put_avatar(client, token, jpeg_with_gps())).json()["avatar"]
    assert first != second
    assert list(media_files(app)) == [second.removeprefix("/media/")]
    assert (await client.get(first)).status_code == 404
    assert (await client.get(second)).status_code == 200


async def test_delete_avatar(client: httpx.AsyncClient, app: FastAPI, token: str) -> None:
    url = (await put_avatar(client, token, png())).json()["avatar"]
    response = await client.delete(AVATAR, headers=bearer(token))
    assert response.status_code == 200
    assert response.json()["avatar"] is None
    assert media_files(app) == {}
    assert (await client.get(url)).status_code == 404
    again = await client.delete(AVATAR, headers=bearer(token))
    assert again.status_code == 200
    assert again.json()["avatar"] is None


async def test_deleting_the_account_removes_the_avatar(
    client: httpx.AsyncClient, app: FastAPI, token: str
) -> None:
    await put_avatar(client, token, png())
    response = await client.request(
        "DELETE",
        "/api/v1/users/profile",
        json={"current_password": PASSWORD},
        headers=bearer(token),
    )
    assert response.status_code == 204
    assert media_files(app) == {}


async def test_an_avatar_larger_than_max_body_bytes_is_accepted(
    client: httpx.AsyncClient, app: FastAPI, token: str
) -> None:
    """The avatar route has its own body allowance (AVATAR_MAX_BYTES + framing)."""
    noise = Image.frombytes("RGB", (700, 600), os.urandom(700 * 600 * 3))
    buffer = io.BytesIO()
    noise.save(buffer, "PNG")
    data = buffer.getvalue()
    assert (
        resources_of(app).settings.max_body_bytes
        < len(data)
        <= resources_of(app).settings.avatar_max_bytes
    )
    response = await put_avatar(client, token, data)
    assert response.status_code == 200, response.text


def refused_uploads() -> dict[str, tuple[bytes, str, str]]:
    """name: (content, expected error type, filename)."""
    real_png = png()
    jpeg = jpeg_with_gps()
    return {
        "empty": (b"", "empty_file", "a.png"),
        "text": (b"hello, I am not an image\n", "invalid_image_type", "a.png"),
        "svg": (
            b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
            "invalid_image_type",
            "a.svg",
        ),
        "html": (b"<!doctype html><script>alert(1)</script>", "invalid_image_type", "a.png"),
        "gif": (gif(), "invalid_image_type", "a.gif"),
        "truncated-png": (real_png[: len(real_png) // 2], "invalid_image", "a.png"),
        "truncated-jpeg": (jpeg[: len(jpeg) // 2], "invalid_image", "a.jpg"),
        "png-cut-in-its-header": (real_png[:40], "invalid_image_type", "a.png"),
        "bomb-declared-100000x100000": (
            png_declaring(100_000, 100_000),
            "image_too_large",
            "a.png",
        ),
        "bomb-declared-4097x4096": (png_declaring(4097, 4096), "image_too_large", "a.png"),
        "bomb-real-4097x4096": (png((4097, 4096), "L", 0), "image_too_large", "a.png"),
    }


def refusal(response: httpx.Response) -> str | None:
    """The error type of a 422 with the usual body for a refused file, else None."""
    if response.status_code != 422:
        return None
    match response.json():
        case {
            "code": "validation_error",
            "detail": [{"type": str(error_type), "loc": ["body", "file"], "msg": str(msg)}],
        } if msg:
            return error_type
    return None


@pytest.mark.parametrize("case", list(refused_uploads()))
async def test_refused_files_are_422_and_leave_everything_as_it_was(
    client: httpx.AsyncClient, app: FastAPI, token: str, case: str
) -> None:
    content, error_type, filename = refused_uploads()[case]
    old = (await put_avatar(client, token, png())).json()["avatar"]
    before = await state(app)
    response = await put_avatar(client, token, content, filename=filename)
    assert refusal(response) == error_type, response.text
    assert await state(app) == before
    assert (await client.get(old)).status_code == 200  # the old avatar is intact


@pytest.mark.parametrize(
    ("kwargs", "statuses"),
    [
        # Not multipart: refused for its media type (app.routers.content_type).
        ({"json": {"file": "aGVsbG8="}}, {415}),
        ({"data": {"file": "not a file"}}, {415}),
        ({"files": {"other": ("a.png", png(), "image/png")}}, {400, 422}),
        (
            {"content": b"", "headers": {"content-type": "multipart/form-data; boundary=x"}},
            {400, 422},
        ),
    ],
)
async def test_missing_file_field_is_refused(
    client: httpx.AsyncClient,
    app: FastAPI,
    token: str,
    kwargs: dict[str, Any],
    statuses: set[int],
) -> None:
    before = await state(app)
    headers = {**bearer(token), **kwargs.pop("headers", {})}
    response = await client.put(AVATAR, headers=headers, **kwargs)
    assert response.status_code in statuses, response.text
    assert await state(app) == before


async def test_file_over_avatar_max_bytes_is_413(
    client: httpx.AsyncClient, app: FastAPI, token: str
) -> None:
    old = (await put_avatar(client, token, png())).json()["avatar"]
    before = await state(app)
    limit = resources_of(app).settings.avatar_max_bytes
    data = png() + b"\x00" * (limit + 1 - len(png()))
    response = await put_avatar(client, token, data)
    assert response.status_code == 413
    assert response.json() == {
        "detail": f"The file exceeds {limit} bytes",
        "code": "file_too_large",
    }
    assert await state(app) == before
    assert (await client.get(old)).status_code == 200


async def test_file_at_avatar_max_bytes_is_read(
    client: httpx.AsyncClient, app: FastAPI, token: str
) -> None:
    limit = resources_of(app).settings.avatar_max_bytes
    data = png() + b"\x00" * (limit - len(png()))  # trailing bytes are dropped on re-encoding
    response = await put_avatar(client, token, data)
    assert response.status_code == 200
    assert len(stored(app, response.json()["avatar"])) < 10_000


async def test_request_far_over_the_limit_is_413_before_it_is_read(
    client: httpx.AsyncClient, app: FastAPI, token: str
) -> None:
    before = await state(app)
    data = b"\x00" * (resources_of(app).settings.avatar_max_bytes + 64 * 1024)
    response = await put_avatar(client, token, data)
    assert response.status_code == 413
    assert response.json()["code"] == "request_too_large"
    assert await state(app) == before


async def test_other_routes_keep_max_body_bytes(client: httpx.AsyncClient, token: str) -> None:
    response = await client.patch(
        "/api/v1/users/profile",
        content=b"{" + b" " * (1024 * 1024 + 10) + b"}",
        headers={**bearer(token), "content-type": "application/json"},
    )
    assert response.status_code == 413


@pytest.mark.parametrize(
    "path",
    [
        "/media/avatars/0123456789abcdef0123456789abcdef.png",
        "/media/avatars/",
        "/media/../userservice.db",
        "/media/%2e%2e/%2e%2e/etc/passwd",
        "/media/avatars/..%2f..%2fsecret.png",
        "/media/.upload-123.tmp",
        "/media/unused-key",
    ],
)
async def test_unknown_or_unsafe_media_paths_are_404(
    client: httpx.AsyncClient, app: FastAPI, token: str, path: str
) -> None:
    await put_avatar(client, token, png())
    root = resources_of(app).settings.media_root
    (root.parent / "secret.png").write_bytes(png())
    response = await client.get(path)
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_a_declared_bomb_is_refused_before_decoding() -> None:
    """Decoding this file would fail as truncated: the size check must answer first."""
    with pytest.raises(InvalidImage) as excinfo:
        reencode(png_declaring(5000, 5000), max_pixels=4096 * 4096)
    assert excinfo.value.problems[0][0] == "image_too_large"
    with pytest.raises(InvalidImage) as excinfo:
        reencode(png_declaring(64, 64), max_pixels=4096 * 4096)
    assert excinfo.value.problems[0][0] == "invalid_image"  # within the limit: decoded, fails


async def test_a_new_file_is_removed_when_the_commit_fails(fresh_app: FastAPI) -> None:
    """The session's rollback callbacks also run when the commit itself fails."""
    from app.core.db import after_commit, after_rollback

    events: list[str] = []

    async def failing_commit(db: SessionDep) -> None:
        async def on_commit() -> None:
            events.append("commit")

        async def on_rollback() -> None:
            events.append("rollback")

        after_commit(db, on_commit)
        after_rollback(db, on_rollback)
        db.add(User(username="x", email="x@example.com", password=None))  # NOT NULL

    async def good_commit(db: SessionDep) -> None:
        async def on_commit() -> None:
            events.append("commit")

        after_commit(db, on_commit)

    fresh_app.add_api_route("/fail-commit", failing_commit, methods=["POST"])
    fresh_app.add_api_route("/good-commit", good_commit, methods=["POST"])
    transport = httpx.ASGITransport(app=fresh_app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.post("/fail-commit")).status_code == 500
        assert events == ["rollback"]
        assert (await client.post("/good-commit")).status_code == 200
        assert events == ["rollback", "commit"]


async def test_concurrent_uploads_leave_only_the_current_file(
    client: httpx.AsyncClient, app: FastAPI, token: str
) -> None:
    await put_avatar(client, token, png())
    responses = await asyncio.gather(*(put_avatar(client, token, png()) for _ in range(5)))
    assert all(response.status_code == 200 for response in responses)
    profile = await client.get("/api/v1/users/profile", headers=bearer(token))
    assert list(media_files(app)) == [profile.json()["avatar"].removeprefix("/media/")]


# Every format Pillow writes on this machine. A PNG, JPEG or WebP (an MPO is a JPEG with
# extra frames) is stored as one clean frame of PNG, JPEG or WebP; anything else is refused.

# Pillow's stubs for these formats save only through a handler the application installs.
CANNOT_ENCODE = {"BUFR", "GRIB", "HDF5", "WMF"}
STORED_AS = {"PNG": "PNG", "JPEG": "JPEG", "MPO": "JPEG", "WEBP": "WEBP"}
REFUSED = "refused: invalid_image_type"


def encoded(image: Image.Image, image_format: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, image_format, **options)
    return buffer.getvalue()


def still(image_format: str) -> bytes:
    """A small image in ``image_format``, from the first mode its encoder takes."""
    for mode in ("RGB", "1", "P"):
        try:
            with warnings.catch_warnings():  # IM: "deprecated and will be removed"
                warnings.simplefilter("ignore", DeprecationWarning)
                return encoded(Image.new(mode, (20, 12), 1), image_format)
        except (OSError, ValueError):  # the encoder does not take this mode
            continue
    raise AssertionError(f"Pillow cannot write a small {image_format} image")


def animation(image_format: str) -> bytes:
    """Three frames, red first, in ``image_format``."""
    red, green, blue = (Image.new("RGB", (20, 12), c) for c in ("red", "lime", "blue"))
    return encoded(red, image_format, save_all=True, append_images=[green, blue])


PNG_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
PNG_KEY = {0: b"\x00\x00", 2: b"\x00" * 6, 3: b"\x00\x80"}  # tRNS: colour 0 is transparent


def png_raw(depth: int, colour_type: int, key: bool) -> bytes:
    """A 5x3 PNG of any bit depth and colour type (Pillow writes only some), optionally with
    a transparent colour; its first pixel is that colour (all zero bits), the second is not."""
    pixel_bits = depth * PNG_CHANNELS[colour_type]
    if pixel_bits < 8:
        start = bytes([((1 << depth) - 1) << (8 - 2 * depth)])
    else:
        start = b"\x00" * (pixel_bits // 8) + b"\xff" * (pixel_bits // 8)
    rest = bytes((x * 37 + 11) % 256 for x in range((5 * pixel_bits + 7) // 8 - len(start)))
    chunks = png_chunk(b"IHDR", struct.pack(">IIBBBBB", 5, 3, depth, colour_type, 0, 0, 0))
    if colour_type == 3:
        chunks += png_chunk(b"PLTE", bytes(range(256)) * 3)
    if key:
        chunks += png_chunk(b"tRNS", PNG_KEY[colour_type])
    chunks += png_chunk(b"IDAT", zlib.compress((b"\x00" + start + rest) * 3))
    return b"\x89PNG\r\n\x1a\n" + chunks + png_chunk(b"IEND", b"")


def png_variants() -> dict[str, bytes]:
    return {
        f"PNG {depth}-bit colour type {colour_type}{' tRNS' * key}": png_raw(
            depth, colour_type, key
        )
        for colour_type, depths in PNG_DEPTHS.items()
        for depth in depths
        for key in (False, True)
        if colour_type in PNG_KEY or not key
    }


def image_samples() -> dict[str, tuple[bytes, str]]:
    """name: (file, the Pillow format it is stored as, or REFUSED)."""
    Image.init()  # imports every plugin: until then Image.SAVE has only the common ones
    samples = {
        f"{image_format} still": (still(image_format), STORED_AS.get(image_format, REFUSED))
        for image_format in sorted(set(Image.SAVE) - CANNOT_ENCODE)
    }
    for image_format in sorted(Image.SAVE_ALL):  # APNG, animated GIF and WebP, TIFF pages...
        samples[f"{image_format} 3 frames"] = (
            animation(image_format),
            STORED_AS.get(image_format, REFUSED),
        )
    samples |= {name: (data, "PNG") for name, data in png_variants().items()}
    for mode in ("1", "L", "RGB", "CMYK", "YCbCr"):
        samples[f"JPEG from {mode}"] = (encoded(Image.new(mode, (20, 12), 1), "JPEG"), "JPEG")
    for mode in ("RGB", "RGBA"):
        for lossless in (False, True):
            webp_file = encoded(Image.new(mode, (20, 12)), "WEBP", lossless=lossless)
            samples[f"WebP {mode} lossless={lossless}"] = (webp_file, "WEBP")
    return samples


def stored_image(data: bytes) -> str:
    """A stored avatar's Pillow format, followed by anything wrong with it."""
    with Image.open(io.BytesIO(data)) as image:
        frames = getattr(image, "n_frames", 1)
        description = [str(image.format)]
    if frames != 1:
        description.append(f"{frames} frames")
    description += [
        f"{marker!r} chunk" for marker in (b"acTL", b"ANIM", b"MPF\x00") if marker in data
    ]
    return " ".join(description)


def outcome(data: bytes) -> str:
    """What ``reencode`` makes of ``data``: the stored format, a refusal, or the exception."""
    try:
        image = reencode(data, max_pixels=4096 * 4096)
    except InvalidImage as exc:
        return f"refused: {exc.problems[0][0]}"
    except Exception as exc:  # the contract is broken: show which input and what
        return f"raised {exc!r}"
    return stored_image(image.data)


@pytest.mark.filterwarnings("ignore::UserWarning:PIL")  # about the damaged files
def test_reencode_stores_every_format_cleanly_or_raises_invalid_image() -> None:
    samples = image_samples()
    assert {"PNG", "JPEG", "WEBP", "MPO", "GIF", "TIFF", "BMP", "ICO"} <= set(Image.SAVE)
    for image_format in CANNOT_ENCODE:  # the formats left out cannot be written at all
        with pytest.raises(OSError, match="save handler not installed"):
            encoded(Image.new("RGB", (20, 12)), image_format)
    for name in ("PNG 3 frames", "WEBP 3 frames", "MPO 3 frames", "GIF 3 frames"):
        with Image.open(io.BytesIO(samples[name][0])) as image:
            assert getattr(image, "n_frames", 1) == 3, name
    with Image.open(io.BytesIO(samples["MPO 3 frames"][0]), formats=["JPEG"]) as image:
        assert image.format == "MPO"  # what reencode's JPEG decoder makes of it

    outcomes = {name: outcome(data) for name, (data, _) in samples.items()}
    assert outcomes == {name: expected for name, (_, expected) in samples.items()}
    for name in ("PNG 3 frames", "WEBP 3 frames", "MPO 3 frames"):
        with Image.open(io.BytesIO(reencode(samples[name][0], 4096 * 4096).data)) as image:
            red, green, blue = image.convert("RGB").tobytes()[:3]  # the first pixel
            assert red > 200, name  # the first frame, red
            assert max(green, blue) < 60, name

    damaged = {}
    rng = random.Random(8)
    for name, (data, _) in samples.items():
        for cut in range(1, 8):
            damaged[f"{name} cut at {cut}/8"] = data[: len(data) * cut // 8]
        for flip in range(8):
            corrupt = bytearray(data)
            for position in rng.sample(range(len(data)), k=max(1, len(data) // 100)):
                corrupt[position] ^= 1 << rng.randrange(8)
            damaged[f"{name} flipped {flip}"] = bytes(corrupt)
    raised = {name: outcome(data) for name, data in damaged.items()}
    raised = {name: result for name, result in raised.items() if result.startswith("raised")}
    assert raised == {}


def test_every_png_mode_keeps_its_pixels_and_transparency() -> None:
    """Palette, 1/2/4/16-bit, grey with alpha, colour keys (tRNS): stored losslessly."""
    changed = {}
    for name, data in png_variants().items():
        with Image.open(io.BytesIO(data)) as source:
            expected = source.convert("RGBA").tobytes()
            if source.mode == "I;16" and "transparency" in source.info:
                continue  # keeps its 16 bits, loses its colour key (see KEYED_TO_ALPHA)
        with Image.open(io.BytesIO(reencode(data, 4096 * 4096).data)) as result:
            if result.convert("RGBA").tobytes() != expected:
                changed[name] = result.mode
    assert changed == {}


async def test_every_format_pillow_writes_is_stored_cleanly_or_refused(
    client: httpx.AsyncClient, app: FastAPI, token: str
) -> None:
    """Through the app: 200 and one clean frame of PNG, JPEG or WebP, or the usual 422 with
    nothing changed; never a 500."""
    samples = image_samples()
    outcomes = {}
    for name, (data, _) in samples.items():
        before = await state(app)
        response = await put_avatar(
            client, token, data, filename="avatar", content_type="application/octet-stream"
        )
        if response.status_code == 200:
            outcomes[name] = stored_image(stored(app, response.json()["avatar"]))
        elif error_type := refusal(response):
            outcomes[name] = f"refused: {error_type}"
            assert await state(app) == before, name
        else:
            outcomes[name] = f"{response.status_code} {response.text[:200]}"
    assert outcomes == {name: expected for name, (_, expected) in samples.items()}
