# The benchmark app's image (issue 13): the sandbox example app's, plus the work a real app's build does.
# Layers from the least to the most often changed, so that a one-line change of app/ rebuilds only its own:
#   1. dependencies: pip from its own wheel (the base image has no pip), --no-index from vendor/wheels/
#   2. the vendored code, byte-compiled
#   3. the app (REVISION and VERSION are declared after the heavy steps: a new value would bust their cache)
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
COPY requirements.txt /tmp/deps/requirements.txt
COPY vendor/wheels/ /tmp/deps/wheels/
RUN python3 /tmp/deps/wheels/@PIP_WHEEL@/pip install --quiet --no-index --disable-pip-version-check \
      --root-user-action=ignore --find-links /tmp/deps/wheels --target /opt/deps -r /tmp/deps/requirements.txt \
 && PYTHONPATH=/opt/deps python3 -c "import django, numpy, pandas, sqlalchemy, boto3, lxml, PIL" \
 && rm -rf /tmp/deps
ENV PYTHONPATH=/opt/deps
COPY vendor/acme/ /app/vendor/acme/
RUN python3 -m compileall -q -j 0 /app/vendor
ARG REVISION=unknown
ARG VERSION=unknown
ENV APP_REVISION=${REVISION} \
    APP_VERSION=${VERSION} \
    PYTHONUNBUFFERED=1 \
    PORT=8000
COPY app/ /app/
COPY migrations/ /app/migrations/
RUN python3 -m compileall -q /app/server.py /app/migrate.py
WORKDIR /app
EXPOSE 8000
HEALTHCHECK --interval=2s --timeout=3s --start-period=20s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8000 && printf 'GET /health HTTP/1.0\\r\\n\\r\\n' >&3 && read -r -t 2 status <&3 && [[ $status == *' 200 '* ]]"]
STOPSIGNAL SIGTERM
CMD ["python3", "/app/server.py"]
