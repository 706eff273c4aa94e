# The slim proxy image: the core only (no torch), in front of a vLLM or other upstream.
# Installed in place (editable) so that the Alembic migrations beside the package are found.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY service ./service
COPY trainer ./trainer
COPY migrations ./migrations
RUN pip install --no-cache-dir -e . \
    && useradd --create-home --uid 10001 conscience
USER conscience
WORKDIR /home/conscience
ENV CONSCIENCE_HOST=0.0.0.0 \
    CONSCIENCE_PORT=8000 \
    CONSCIENCE_DB_URL=sqlite+aiosqlite:////home/conscience/conscience.db \
    CONSCIENCE_SPOOL_PATH=/home/conscience/conscience-spool.jsonl
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD python -c "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status != 200)"
ENTRYPOINT ["conscience", "serve"]
