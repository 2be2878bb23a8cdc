"""One module per resource. The API routers carry the full ``/api/v1`` prefix themselves, so
a matched route's ``path`` is the whole template (request logs and metrics label by it)."""

API_PREFIX = "/api/v1"
