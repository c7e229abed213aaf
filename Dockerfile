# POD Engine container image.
#   docker build -t pod-engine .
#   docker run -d -p 3000:3000 -v pod-data:/data -e POD_API_KEY=... --stop-timeout 60 pod-engine
# or: docker compose -f docker-compose.pod-engine.yml up -d
#
# Inside a container the engine must bind 0.0.0.0 to be reachable, and it
# refuses to bind a non-loopback address unless POD_API_KEY is set (clients
# then send "Authorization: Bearer <key>"; /health stays open), or
# ALLOW_UNAUTHENTICATED=true says that anyone who can reach the port may use
# the API. Without either it exits at start-up saying so.
#
# Stopping: on SIGTERM the engine gives running jobs SHUTDOWN_GRACE_MS (30 s)
# to finish, longer than Docker's default 10 s before SIGKILL; stop with
# `docker stop -t 60` (compose sets stop_grace_period). Jobs cut off resume
# from their checkpoints at the next start either way.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# An unprivileged user; /data (the volume) is the only place it can write.
# Creating /data owned by it before VOLUME makes a new named volume inherit
# that ownership; a host directory bind-mounted there must be writable by
# uid 10001.
RUN groupadd --system --gid 10001 pod \
 && useradd --system --uid 10001 --gid pod --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin pod \
 && mkdir /data && chown pod:pod /data && chmod 0700 /data

WORKDIR /app

# Dependencies first: this layer is rebuilt only when requirements.txt changes.
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt

# The application, owned by root: the engine cannot modify its own code.
COPY . .

ENV HOST=0.0.0.0 \
    PORT=3000 \
    DATA_DIR=/data
VOLUME /data
EXPOSE 3000

# Numeric, so runtimes (Kubernetes runAsNonRoot) can tell it is not root.
USER 10001:10001

# /health answers 200 (healthy or degraded) or 503 (unhealthy) and needs no
# API key. The slim image has no curl: ask with Python. urlopen raises on 503
# and on a refused connection, so both exit non-zero.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '3000'), timeout=4)"]

CMD ["python", "podengine.py"]
