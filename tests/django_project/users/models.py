"""The replaced service's user model, as it was."""

from django.contrib.auth.models import AbstractUser
from django.db import models


class Users(AbstractUser):
    email = models.EmailField(unique=True, max_length=200)
    first_name = models.CharField(max_length=200, blank=True)
    last_name = models.CharField(max_length=200, blank=True)
    number_phone = models.CharField(max_length=10, blank=True)
    avatar = models.ImageField(upload_to="avatars/", blank=True)
