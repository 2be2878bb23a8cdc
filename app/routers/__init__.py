"""One module per resource. The API routers carry the full ``/api/v1`` prefix themselves, so
a matched route's ``path`` is the whole template (request logs and metrics label by it)."""

from fastapi.routing import APIRoute

API_PREFIX = "/api/v1"


def operation_id(route: APIRoute) -> str:
    """Handler names: unique, readable operationIds for generated clients. Given to every
    router (``generate_unique_id_function``): their routes are added to the app as they
    are (app/main.py's ``_include``), so the app's own default would not reach them."""
    return route.name
