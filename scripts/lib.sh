# Helpers the scripts source (`. scripts/lib.sh`).

# free_port: a free TCP port on 127.0.0.1.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# wait_for_health URL [TRIES=150]: poll URL/health every 0.2 s; status 0 once it answers 200.
wait_for_health() {
  local tries="${2:-150}"
  for _ in $(seq 1 "$tries"); do
    curl -fs "$1/health" >/dev/null && return 0
    sleep 0.2
  done
  return 1
}
