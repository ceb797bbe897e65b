# petfabric's image for docker users: the three programs, static, on distroless static as the
# non-root user 65532. `make image` builds the same image without a daemon (hack/image: the
# same binaries at the same paths, the same user, no entrypoint — the chart names the program
# in each container's command:). Build with
#
#	docker build --build-arg VERSION=$(git describe --tags --always --dirty) -t ghcr.io/petfabric/petfabric:dev .
#
# The node DaemonSet runs this image as root through its securityContext (iSCSI, mounts).
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=devel
RUN CGO_ENABLED=0 GOOS=linux go build -trimpath -buildvcs=false \
      -ldflags "-s -w -X github.com/petfabric/petfabric/pkg/version.Version=${VERSION}" \
      -o /out/ ./cmd/webhook ./cmd/extender ./cmd/flex

FROM gcr.io/distroless/static:nonroot
ARG VERSION=devel
LABEL org.opencontainers.image.title="petfabric" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="https://github.com/petfabric/petfabric"
COPY --from=build /out/webhook /out/extender /out/flex /usr/local/bin/
USER 65532:65532
