# pennybot: `pennybot serve` on a slim Python base, as a numeric non-root user.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DATABASE_URL=sqlite:////data/pennybot.db

WORKDIR /app
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY budget ./budget
COPY providers ./providers
COPY supabase ./supabase
RUN pip install --no-cache-dir . \
    && mkdir -p /data /home/app/.cache \
    && chown -R 10001:10001 /data /home/app

ENV HOME=/home/app
USER 10001
VOLUME ["/data"]
EXPOSE 8080
CMD ["pennybot", "serve", "--host", "0.0.0.0", "--port", "8080"]
