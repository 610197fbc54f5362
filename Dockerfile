# syntax=docker/dockerfile:1
# billingd: a static binary on distroless, running as a non-root user.
#
#   make docker        # docker build --build-arg COMMIT=<git commit> -t billingd:<commit> .
#   docker run -p 50051:50051 -v billingd-data:/data --stop-timeout 30 \
#     -e STRIPE_SECRET_KEY -e BILLING_AUTH_TOKENS billingd:<commit>
#
# The image listens on 0.0.0.0:50051, and billingd refuses to serve a
# non-loopback address without caller authentication: give it tokens
# (BILLING_AUTH_TOKENS=caller:token,... or BILLINGD_AUTH_TOKENS_FILE on a
# mounted secret) or mutual TLS. Docker stops containers after 10 s by
# default; billingd drains for BILLINGD_SHUTDOWN_GRACE (20 s), hence
# --stop-timeout 30. One process owns a database (bbolt file lock): never
# share /data between two containers.
# In production pin both base images by digest (FROM image:tag@sha256:...).

ARG GO_VERSION=1.26

FROM golang:${GO_VERSION} AS build
WORKDIR /src
# Modules first, so this layer is reused until go.mod or go.sum change.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG VERSION=dev
ARG COMMIT=unknown
# Static (no cgo), no local paths in the binary (-trimpath), stamped for
# `billingd version`. .git is not in the build context, so the commit comes
# from the build argument rather than Go's VCS stamping.
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -trimpath -buildvcs=false \
      -ldflags "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT}" \
      -o /out/billingd ./cmd/billingd \
 && mkdir -p /out/data

# static-debian12: CA certificates and tzdata, no libc, no shell. nonroot: uid 65532.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/billingd /usr/local/bin/billingd
# The database directory, owned by the user the image runs as.
COPY --from=build --chown=65532:65532 /out/data /data
USER 65532:65532
ENV BILLINGD_LISTEN=0.0.0.0:50051 \
    BILLINGD_DB=/data/billingd.db
VOLUME ["/data"]
EXPOSE 50051
# Asks grpc.health.v1 about billing.v1.BillingService on 127.0.0.1 at the port
# of BILLINGD_LISTEN; health answers without caller tokens. With
# BILLINGD_TLS_CERT set the probe speaks TLS and accepts only that
# certificate; with BILLINGD_TLS_CLIENT_CA (mutual TLS) also set
# BILLINGD_HEALTHCHECK_CLIENT_CERT and BILLINGD_HEALTHCHECK_CLIENT_KEY to a
# client certificate that CA issued.
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/billingd", "healthcheck", "--timeout", "3s"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/billingd"]
CMD ["serve"]
