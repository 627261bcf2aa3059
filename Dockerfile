# One image for migrations, workers and the CLI. On Linux, PyPI's torch wheel carries CUDA, so the
# same image serves the GPU worker.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY ynet_db ynet_db
COPY migrations migrations
COPY workers workers
RUN pip install --no-cache-dir .
ENTRYPOINT ["ynet-db"]
