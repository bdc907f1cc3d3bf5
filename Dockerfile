# One image for every service; docker-compose.yml sets the command of each.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-create-home --home-dir /app app

WORKDIR /app

# The package (shared*, services*; tools/ runs on the host) with its dependencies pinned by the lock file.
COPY pyproject.toml requirements.lock ./
COPY shared/ shared/
COPY services/ services/
RUN pip install --no-cache-dir -c requirements.lock . \
    && rm -rf build ./*.egg-info

USER app

# Nothing special by default: docker-compose.yml runs `faststream run <module>:app` per service.
CMD ["faststream", "--help"]
