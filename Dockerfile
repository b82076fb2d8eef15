# syntax=docker/dockerfile:1
# One image for every service of chat; the command picks which:
#   docker run chat:0.1.0 chat              (the default)
#   docker run chat:0.1.0 chat-scaler --redis redis://... --namespace ...
#   docker run chat:0.1.0 chat-dashboard --listen tcp:5000 ...
# Nothing secret is baked in: settings come from the environment at run time.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# Build: the pinned dependencies from requirements.lock (hashes checked), then
# the project itself as a wheel, into a virtualenv that the runtime copies.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/chat
WORKDIR /src
COPY requirements.lock ./
RUN /opt/chat/bin/pip install --require-hashes --no-deps -r requirements.lock
COPY pyproject.toml README.md ./
COPY chat ./chat
COPY client ./client
COPY twisted ./twisted
RUN /opt/chat/bin/pip install --no-deps --no-build-isolation . \
    && /opt/chat/bin/pip check \
    && /opt/chat/bin/python -m compileall -q /opt/chat/lib \
    && /opt/chat/bin/python -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))" \
    && /opt/chat/bin/twistd chat --help >/dev/null \
    && /opt/chat/bin/twistd chat-scaler --help >/dev/null \
    && /opt/chat/bin/twistd chat-dashboard --help >/dev/null

# Runtime: the virtualenv on a clean base, run by an unprivileged user.
FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 chat \
    && useradd --system --uid 10001 --gid chat --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin chat \
    && install -d -o chat -g chat -m 0750 /var/lib/chat
COPY --from=build /opt/chat /opt/chat
ENV PATH=/opt/chat/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# The embedded SQLite default keeps its data under ./chat-data; in Kubernetes
# the root filesystem is read-only and PostgreSQL is used instead.
WORKDIR /var/lib/chat
USER 10001:10001
# chat, its admin endpoint, the dashboard.
EXPOSE 30080 8080 5000
STOPSIGNAL SIGTERM
# twistd itself is PID 1, so SIGTERM reaches it and starts the drain; no
# pidfile, since the root filesystem may be read-only.
ENTRYPOINT ["twistd", "--nodaemon", "--pidfile="]
CMD ["chat"]
