from django.contrib.auth.hashers import PBKDF2PasswordHasher


class LowIterationPBKDF2PasswordHasher(PBKDF2PasswordHasher):
    """pbkdf2_sha256 with an old, low iteration count (hashes made years ago look like this)."""

    iterations = 36_000
