# A container image for deploys that are not Heroku: one image, every Procfile role.
#   docker build -t tradepipe .
#   docker run --env-file .env -p 5000:5000 tradepipe web      (any Procfile process type)
# compose.yaml runs the whole system from it. Runtime dependencies only (requirements.txt,
# hash-pinned), no compilers, a non-root user.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PORT=5000

RUN useradd --create-home --uid 10001 app
WORKDIR /app

COPY requirements.txt .
RUN pip install --require-hashes -r requirements.txt

COPY --chown=app:app . .
USER app

EXPOSE 5000
ENTRYPOINT ["bin/run-process"]
CMD ["web"]
