# syntax=docker/dockerfile:1
# Build: docker build -t userservice .
# Run:   docker run -e SECRET_KEY=... -e DATABASE_URL=... -e EMAIL_BACKEND=smtp -e SMTP_HOST=... \
#          -e EMAIL_FROM=... -p 8000:8000 userservice   (or -e EMAIL_BACKEND=off: no email)

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/venv
COPY pyproject.toml constraints.txt README.md ./
COPY app ./app
RUN /opt/venv/bin/pip install --no-compile -c constraints.txt .

FROM python:3.11-slim AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ENVIRONMENT=production \
    PORT=8000
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-create-home --home-dir /srv app \
    && mkdir -p /srv/media \
    && chown app:app /srv/media
COPY --from=build /opt/venv /opt/venv
WORKDIR /srv
COPY alembic.ini ./
COPY alembic ./alembic
COPY app ./app
# Avatars (MEDIA_ROOT=./media): mount a volume here to keep them across containers.
VOLUME ["/srv/media"]
USER 10001:10001
EXPOSE 8000
# `serve` applies migrations first, then runs uvicorn on $PORT.
CMD ["sh", "-c", "exec python -m app serve --host 0.0.0.0 --port \"$PORT\""]
