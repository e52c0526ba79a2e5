# gemma-rs serving image: one static binary on an empty base (nothing to pull).
# Build it with scripts/docker-build.sh, which compiles the static binary and
# stages the build context (the binary, the CA bundle, a passwd line):
#   scripts/docker-build.sh            # -> gemma-rs:latest
# Run (the model from a mounted volume, the HF cache, or a Hub id):
#   docker run --network host -v ~/.cache/gemma-rs/models:/models:ro \
#     -e GEMMA_MODEL=/models/gemma-3-270m-q4_k_m.gguf -e GEMMA_PORT=8080 gemma-rs:latest
#   docker run ... -v hf-cache:/data -e GEMMA_MODEL=google/gemma-3-270m-it -e HF_TOKEN=... gemma-rs:latest
# Vertex AI: AIP_HTTP_PORT (and AIP_PREDICT_ROUTE / AIP_HEALTH_ROUTE) are honored.
FROM scratch
COPY gemma /usr/bin/gemma
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY passwd /etc/passwd
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    HOME=/data \
    GEMMA_CACHE=/data/gemma-rs \
    HF_HOME=/data/huggingface \
    GEMMA_HOST=0.0.0.0 \
    GEMMA_PORT=8080
# A non-root user (nobody-like, uid 65532, as distroless images use).
USER 65532:65532
EXPOSE 8080
# SIGTERM drains: /health turns 503, in-flight requests finish (--shutdown-grace).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/gemma", "serve"]
