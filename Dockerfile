# The slim proxy image: the core only (no torch), in front of a vLLM or other upstream. The
# offline tools (trainer/, evaluation/) stay out: `conscience` says which package they need.
# Installed in place (editable) so that the Alembic migrations beside the package are found,
# with exactly the versions of requirements.lock.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md alembic.ini requirements.lock ./
COPY service ./service
COPY conscience_cli ./conscience_cli
COPY migrations ./migrations
RUN pip install --no-cache-dir --constraint requirements.lock pip \
    && pip install --no-cache-dir --constraint requirements.lock -e . \
    && groupadd --gid 10001 conscience \
    && useradd --uid 10001 --gid 10001 --home-dir /var/lib/conscience --no-create-home conscience \
    && mkdir -p /var/lib/conscience/db /var/lib/conscience/spool \
    && chown -R 10001:10001 /var/lib/conscience
# Numeric, so that Kubernetes' runAsNonRoot can check it without reading /etc/passwd.
USER 10001:10001
WORKDIR /var/lib/conscience
# The SQLite database (when no PostgreSQL URL is set) and the spool that holds records while
# the database is down: both must outlive the container.
VOLUME ["/var/lib/conscience/db", "/var/lib/conscience/spool"]
ENV CONSCIENCE_SERVING__HOST=0.0.0.0 \
    CONSCIENCE_SERVING__PORT=8000 \
    CONSCIENCE_STORE__DB_URL=sqlite+aiosqlite:////var/lib/conscience/db/conscience.db \
    CONSCIENCE_STORE__SPOOL_PATH=/var/lib/conscience/spool/conscience-spool.jsonl
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD python -c "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status != 200)"
ENTRYPOINT ["conscience", "serve"]
