"""Settings of the stand-in for the replaced service; the database comes from the environment."""

import os
from datetime import timedelta

SECRET_KEY = os.environ["DJANGO_SECRET_KEY"]
USE_TZ = True
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "rest_framework",
    "rest_framework_simplejwt",
    "users",
]
AUTH_USER_MODEL = "users.Users"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
MEDIA_ROOT = os.environ.get("DJANGO_MEDIA_ROOT", "")
# ImageField wants Pillow for upload validation; here avatars are only paths and files.
SILENCED_SYSTEM_CHECKS = ["fields.E210"]

if os.environ.get("DJANGO_DB_ENGINE") == "postgresql":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": os.environ["DJANGO_DB_NAME"],
            "HOST": os.environ.get("DJANGO_DB_HOST", "127.0.0.1"),
            "PORT": os.environ.get("DJANGO_DB_PORT", "5432"),
            "USER": os.environ.get("DJANGO_DB_USER", "postgres"),
            "PASSWORD": os.environ.get("DJANGO_DB_PASSWORD", ""),
        }
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get("DJANGO_DB_NAME", ":memory:"),
        }
    }

# Long enough for a whole test session to use the tokens build_source.py issues.
SIMPLE_JWT = {"ACCESS_TOKEN_LIFETIME": timedelta(hours=2)}
