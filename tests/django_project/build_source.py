"""Build the replaced service's database the way it was built: its migrations, ``create_user``.

Run in a subprocess with the database in the environment (see oldsite/settings.py)::

    DJANGO_SECRET_KEY=... DJANGO_DB_NAME=/tmp/old.db DJANGO_MEDIA_ROOT=/tmp/media \\
        python tests/django_project/build_source.py [--schema-only]

Prints JSON: ``{"table", "users": {username: {"id", "password", "hash"}}, "tokens": {...}}``.
"""

import io
import json
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "oldsite.settings")

import django

django.setup()

from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.test.utils import override_settings  # noqa: E402
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken  # noqa: E402

HASHERS = {
    "pbkdf2_default": "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    "pbkdf2_old": "users.hashers.LowIterationPBKDF2PasswordHasher",
    "argon2_user": "django.contrib.auth.hashers.Argon2PasswordHasher",
    "bcrypt_user": "django.contrib.auth.hashers.BCryptSHA256PasswordHasher",
    "scrypt_user": "django.contrib.auth.hashers.ScryptPasswordHasher",
}
FAST_HASHER = "users.hashers.LowIterationPBKDF2PasswordHasher"
NOT_AN_IMAGE = b"\x89PNG\r\n\x1a\n" + b"<script>not an image</script>"


def avatar_png():
    """A real 16x8 PNG carrying a text chunk (metadata the import must strip)."""
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "taken at home, 51.5N 0.1W")
    buffer = io.BytesIO()
    Image.new("RGB", (16, 8), (200, 30, 30)).save(buffer, "PNG", pnginfo=info)
    return buffer.getvalue()


def password_for(username):
    return f"old-{username}-Passw0rd!"


def create(username, hasher=FAST_HASHER, password="", **fields):
    """``create_user`` with ``hasher`` as the preferred (first) PASSWORD_HASHERS entry."""
    fields.setdefault("email", f"{username}@example.com")
    password = password_for(username) if password == "" else password
    with override_settings(PASSWORD_HASHERS=[hasher]):
        user = get_user_model().objects.create_user(username, password=password, **fields)
    return user


def build():
    call_command("migrate", verbosity=0, interactive=False)
    users = {}
    for username, hasher in HASHERS.items():
        users[username] = create(username, hasher, first_name=username.title(), last_name="Old")
    users["no_password"] = create("no_password", password=None)
    with override_settings(PASSWORD_HASHERS=[FAST_HASHER]):
        users["admin"] = get_user_model().objects.create_superuser(
            "admin", "admin@example.com", password_for("admin")
        )
    users["inactive"] = create("inactive", is_active=False)
    users["mixed_case"] = create("mixed_case", email="  Mixed.Case@EXAMPLE.com ")
    users["with_phone"] = create(
        "with_phone",
        number_phone="5551234567",
        last_login=datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC),
    )

    media = Path(settings.MEDIA_ROOT)
    (media / "avatars").mkdir(parents=True, exist_ok=True)
    (media / "avatars" / "face.png").write_bytes(avatar_png())
    (media / "avatars" / "fake.png").write_bytes(NOT_AN_IMAGE)
    users["with_avatar"] = create("with_avatar", avatar="avatars/face.png")
    users["fake_avatar"] = create("fake_avatar", avatar="avatars/fake.png")
    users["lost_avatar"] = create("lost_avatar", avatar="avatars/gone.jpg")

    holder = users["argon2_user"]
    expired = AccessToken.for_user(holder)
    expired.set_exp(from_time=datetime.now(UTC) - timedelta(hours=1), lifetime=timedelta(0))
    tokens = {
        "access": str(AccessToken.for_user(holder)),
        "refresh": str(RefreshToken.for_user(holder)),
        "expired": str(expired),
        "inactive_access": str(AccessToken.for_user(users["inactive"])),
    }
    return {
        "table": get_user_model()._meta.db_table,
        "users": {
            name: {
                "id": user.pk,
                "password": None if name == "no_password" else password_for(name),
                "hash": user.password,
            }
            for name, user in users.items()
        },
        "tokens": tokens,
    }


if __name__ == "__main__":
    if "--schema-only" in sys.argv:
        call_command("migrate", verbosity=0, interactive=False)
        print(json.dumps({"table": get_user_model()._meta.db_table}))
    else:
        print(json.dumps(build()))
