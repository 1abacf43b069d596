# The benchmark app's front image (issue 13): the sandbox example's nginx front, plus an asset pipeline
# over the generated assets/ tree (bundled, minified, gzip -9, a content-hashed manifest), in a layer of
# its own that only a change of assets/ rebuilds.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
COPY assets/ /front/assets-src/
RUN python3 /front/assets-src/bundle.py /front/assets-src /front/bundle && rm -rf /front/assets-src
ARG REVISION=unknown
ARG VERSION=unknown
ENV APP_REVISION=${REVISION} \
    APP_VERSION=${VERSION} \
    PORT=8080
COPY front/ /front/src/
RUN sh /front/src/build.sh /front/src /front "${VERSION}" "${REVISION}" \
 && cp /front/src/nginx.conf /front/src/run.sh /front/ \
 && sed -e 's#@UPSTREAM@#tasks.phpha#' -e 's#@UPSTREAM_PORT@#8000#' -e 's#@PEERS@#tasks.web#' \
        -e 's#@PORT@#8080#' /front/nginx.conf > /tmp/nginx.conf \
 && mkdir -p /run/front && nginx -t -q -c /tmp/nginx.conf \
 && rm -rf /tmp/nginx.conf /run/front /front/src
WORKDIR /front
EXPOSE 8080
HEALTHCHECK --interval=2s --timeout=3s --start-period=10s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080 && printf 'GET /health HTTP/1.0\\r\\n\\r\\n' >&3 && read -r -t 2 status <&3 && [[ $status == *' 200 '* ]]"]
STOPSIGNAL SIGQUIT
CMD ["sh", "/front/run.sh"]
