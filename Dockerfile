# gar-proxy's container image. Build it with scripts/build-image.sh: it makes the base
# image (scripts/base-image.sh: Debian 12 + python3 by mmdebstrap, `docker import`ed as
# debian-python:bookworm, no Docker Hub) and the wheelhouse (build/wheelhouse, on the
# host), then runs `docker build --network=none`: nothing is downloaded during the build.
# Any Debian 12 image with python3 and python3-venv works as BASE_IMAGE.
#
# Run it (the cache on a volume; the key file readable by uid 10001, see deploy/README.md;
# published on the host's loopback only, so anonymous access is safe: see below):
#   sudo install -o 10001 -g 10001 -m 0600 key.json /etc/gar-proxy/key.json
#   docker run -d --name gar-proxy -p 127.0.0.1:5000:5000 -v gar-cache:/cache \
#     -v /etc/gar-proxy/key.json:/run/secrets/gar-key.json:ro \
#     -e GOOGLE_APPLICATION_CREDENTIALS=/run/secrets/gar-key.json \
#     -e GAR_PROXY_ACCESS_ANONYMOUS=true gar-proxy:latest
#
# Settings come from GAR_PROXY_* variables or a TOML file named by GAR_PROXY_CONFIG, not
# from `serve --listen`: the HEALTHCHECK (`gar-proxy healthcheck`) reads the same settings
# to find the port, and speaks TLS when tls.cert_file is set.

ARG BASE_IMAGE=debian-python:bookworm

FROM ${BASE_IMAGE} AS build
COPY build/wheelhouse /tmp/wheelhouse
# pip and setuptools only install; the running proxy never needs them.
RUN python3 -m venv /opt/gar-proxy \
    && /opt/gar-proxy/bin/pip install --no-index --find-links=/tmp/wheelhouse \
        --no-cache-dir --disable-pip-version-check gar-proxy \
    && /opt/gar-proxy/bin/pip uninstall --yes --quiet pip setuptools

FROM ${BASE_IMAGE}
# A fixed numeric uid, so that Kubernetes' runAsNonRoot can check it and a host can
# chown the credentials file to it. The image also runs as any other uid (OpenShift's
# arbitrary uids): nothing below needs a passwd entry.
RUN useradd --system --uid 10001 --user-group --home-dir /home/gar-proxy --create-home \
        --shell /usr/sbin/nologin gar-proxy \
    && install -d -o 10001 -g 10001 -m 0750 /cache
COPY --from=build /opt/gar-proxy /opt/gar-proxy
# 0.0.0.0 inside the container, so that `docker run -p` can publish the port; publish
# it on the host's loopback (-p 127.0.0.1:5000:5000) unless clients elsewhere need it.
# gar-proxy refuses a non-loopback bind without client auth: whoever runs the image
# sets access.htpasswd_file / access.tokens_file, or GAR_PROXY_ACCESS_ANONYMOUS=true
# when only trusted clients can reach the port (as the recipes in deploy/ do).
ENV PATH=/opt/gar-proxy/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/home/gar-proxy \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GAR_PROXY_SERVER_LISTEN=0.0.0.0:5000 \
    GAR_PROXY_CACHE_DIR=/cache \
    GAR_PROXY_SERVER_LOG_FORMAT=json
USER 10001:10001
VOLUME /cache
EXPOSE 5000
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["gar-proxy", "healthcheck"]
ENTRYPOINT ["gar-proxy"]
CMD ["serve"]
