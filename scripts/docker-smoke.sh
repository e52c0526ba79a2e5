#!/usr/bin/env bash
# The container image end to end, here: install Debian's docker.io if
# missing, start dockerd (these machines allow containers only host
# networking: --bridge=none --iptables=false), build gemma-rs:latest, run it
# with --network host on a loopback port with the real model mounted
# read-only and a read-only root filesystem, check /health and a completion,
# send SIGTERM (docker stop) and require exit code 0, print the image size.
#   scripts/docker-smoke.sh [MODEL.gguf]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
MODEL="${1:-$(scripts/fetch-model.sh)}"
MODEL="$(readlink -f "$MODEL")"
if ! command -v dockerd >/dev/null; then
  echo "installing Debian's docker.io..." >&2
  apt-get install -y -q docker.io >/dev/null
fi
if ! docker info >/dev/null 2>&1; then
  echo "starting dockerd..." >&2
  (dockerd --bridge=none --iptables=false >/tmp/dockerd.log 2>&1 &)
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker info >/dev/null 2>&1 || { echo "FAILED: dockerd did not start (see /tmp/dockerd.log)" >&2; exit 1; }
fi
scripts/docker-build.sh gemma-rs:latest
PORT=$(free_port)
NAME="gemma-smoke-$$"
trap 'docker rm -f "$NAME" >/dev/null 2>&1 || true' EXIT
docker run -d --name "$NAME" --network host --read-only \
  -v "$(dirname "$MODEL"):/models:ro" \
  -e GEMMA_MODEL="/models/$(basename "$MODEL")" -e GEMMA_HOST=127.0.0.1 -e AIP_HTTP_PORT="$PORT" \
  gemma-rs:latest --shutdown-grace 5 >/dev/null
wait_for_health "http://127.0.0.1:$PORT" 100 || { echo "FAILED: the container never became healthy" >&2; docker logs "$NAME" 2>&1 | tail -30 >&2 || true; exit 1; }
curl -fs "http://127.0.0.1:$PORT/health" >/dev/null || { echo "FAILED: /health"; docker logs "$NAME"; exit 1; }
echo "health: OK"
OUT=$(curl -fs "http://127.0.0.1:$PORT/v1/completions" -H 'content-type: application/json' \
  -d '{"prompt": "English: cat\nFrench: chat\nEnglish: house\nFrench:", "max_tokens": 4, "temperature": 0, "stop": ["\n"]}')
TEXT=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["choices"][0]["text"])' "$OUT")
echo "completion: '$TEXT'"
[ -n "$(echo "$TEXT" | tr -d ' ')" ] || { echo "FAILED: empty completion: $OUT"; exit 1; }
# DNS and TLS from inside the scratch image (static glibc, the copied CA
# bundle): `gemma pull default` as the Kubernetes init container runs it,
# into a tmpfs (skip with DOCKER_SMOKE_OFFLINE=1).
if [ "${DOCKER_SMOKE_OFFLINE:-0}" != 1 ]; then
  PULLED=$(docker run --rm --network host --read-only --tmpfs /data:uid=65532,gid=65532,size=1g \
    --entrypoint /usr/bin/gemma gemma-rs:latest pull default 2>/dev/null) || { echo "FAILED: gemma pull inside the image"; exit 1; }
  echo "pull inside the image (DNS + TLS + PyPI): $PULLED"
fi
USER_ID=$(docker inspect -f '{{.Config.User}}' "$NAME")
docker stop -t 20 "$NAME" >/dev/null
CODE=$(docker inspect -f '{{.State.ExitCode}}' "$NAME")
docker logs "$NAME" 2>&1 | tail -3
[ "$CODE" = 0 ] || { echo "FAILED: exit code $CODE after SIGTERM"; exit 1; }
echo "SIGTERM: exit code 0 (user $USER_ID)"
echo "image gemma-rs:latest: $(docker image inspect -f '{{.Size}}' gemma-rs:latest | awk '{printf "%.1f MB", $1/1e6}')"
echo "docker smoke OK"
