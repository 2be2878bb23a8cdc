"""``python -m app import-django``: the users of the replaced Django service, copied into
ours. A command-line subsystem, apart from the services that serve requests; its SQL is in
`app.repositories.user_import`."""

from app.django_import.importer import (
    DjangoImportError,
    ImportOptions,
    ImportReport,
    import_django_users,
)

__all__ = ["DjangoImportError", "ImportOptions", "ImportReport", "import_django_users"]
