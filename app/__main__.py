"""``python -m app``: the command line (app/cli.py), once this Python is known to have the
service's packages.

Run with another Python (the system's, or a venv of another project) the command line would
end in a traceback, ``No module named 'alembic.config'`` at best: in the repository,
``alembic`` is the migrations folder, which Python takes for the package. This module
says how to run it instead. The standard library only, up to the check.
"""

from __future__ import annotations

import sys
from importlib.util import find_spec
from pathlib import Path

# What the command line imports first; alembic.config, not alembic, which the repository's
# alembic/ folder would stand in for.
REQUIRED = ("alembic.config", "fastapi", "pydantic_settings", "sqlalchemy", "uvicorn")
REPOSITORY = Path(__file__).resolve().parent.parent


def missing_packages() -> list[str]:
    missing = []
    for name in REQUIRED:
        try:
            found = find_spec(name)
        except (ImportError, ValueError):
            found = None
        if found is None:
            missing.append(name.split(".", 1)[0])
    return missing


def how_to_run(missing: list[str]) -> str:
    lines = [
        f"python -m app: this Python ({sys.executable}, {sys.version.split()[0]}) lacks the "
        f"service's packages (missing: {', '.join(missing)}).",
    ]
    shadow = sys.modules.get("alembic")
    if "alembic" in missing and shadow is not None and getattr(shadow, "__file__", None) is None:
        lines.append(
            "(Here 'alembic' is the repository's alembic/ folder of migrations, not the package.)"
        )
    if sys.version_info < (3, 11):  # noqa: UP036 (this may be any Python)
        lines.append("The service needs Python 3.11 or later.")
    created = (REPOSITORY / ".venv" / "bin" / "python").exists()
    lines += [
        f"Run it with the project's environment, in the repository ({REPOSITORY}):",
        "  make run                        "
        "(creates .venv on first use, then serves on http://127.0.0.1:8000)",
        "  .venv/bin/python -m app --help  (every command, "
        + ("with the .venv there)" if created else "once make run or make venv made .venv)"),
    ]
    return "\n".join(lines)


def run() -> int:
    missing = missing_packages()
    if missing:
        print(how_to_run(missing), file=sys.stderr)
        return 1
    from app.cli import main

    return main()


if __name__ == "__main__":
    sys.exit(run())
