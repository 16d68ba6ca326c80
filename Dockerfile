# gar-proxy as a container: docker run -p 127.0.0.1:5000:5000 -v gar-cache:/cache \
#   -v $HOME/.config/gcloud:/home/proxy/.config/gcloud:ro gar-proxy
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY proxy ./proxy
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 proxy && mkdir /cache && chown proxy /cache
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER proxy
ENV GAR_PROXY_LISTEN=0.0.0.0:5000 \
    GAR_PROXY_CACHE_DIR=/cache \
    GAR_PROXY_LOG_FORMAT=json
VOLUME /cache
EXPOSE 5000
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:5000/healthz')"
ENTRYPOINT ["gar-proxy"]
CMD ["serve"]
