# The local cluster topology as shell functions (sourced by scripts/cluster and
# scripts/faults): redis-server, a MongoDB-wire server, N chatd nodes, nginx in front.
#
#   cluster_start N      starts everything in the background (state in $CLUSTER_DIR)
#   node_stop I SIGNAL   stops node I (1-based) with SIGKILL or SIGTERM (waits for it)
#   node_start I         starts node I again on its port
#   redis_stop / redis_start, mongo_stop / mongo_start
#   cluster_stop         stops everything (also on exit)
#
# nginx listens on $CLUSTER_PORT (default 8080); node i on CLUSTER_PORT + i; Redis on
# $CLUSTER_PORT + 310; SecantusDB ($MONGO_SERVER) on $CLUSTER_PORT + 19000 (unless
# MONGODB_URI is set).

CLUSTER_PORT=${CLUSTER_PORT:-8080}
CLUSTER_DIR=${CLUSTER_DIR:-$(pwd)/data/cluster}
CHATD_BIN=${CHATD_BIN:-target/release/chatd}
# The MongoDB stand-in: the Rust build of SecantusDB when installed (much faster), else the
# Python one from PyPI. Either is replaced by MONGODB_URI (e.g. a real mongod).
MONGO_SERVER=${MONGO_SERVER:-$(command -v secantusd-rs || echo secantusd-py)}
declare -a NODE_PIDS=()
REDIS_PID="" MONGO_PID="" NGINX_PID=""

wait_port() {
  for _ in $(seq 1 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on port $1; see $CLUSTER_DIR/logs" >&2
  return 1
}

redis_port() { echo $((CLUSTER_PORT + 310)); }
mongo_port() { echo $((CLUSTER_PORT + 19000)); }
node_port() { echo $((CLUSTER_PORT + $1)); }

redis_start() {
  redis-server --port "$(redis_port)" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$CLUSTER_DIR/redis" >>"$CLUSTER_DIR/logs/redis.log" 2>&1 &
  REDIS_PID=$!
  wait_port "$(redis_port)"
}

redis_stop() { kill -KILL "$REDIS_PID" 2>/dev/null; wait "$REDIS_PID" 2>/dev/null || true; REDIS_PID=""; }

mongo_start() {
  [[ -n "${MONGODB_URI_EXTERNAL:-}" ]] && return 0
  # --sync-on-commit: acknowledged writes survive a stop, as with mongod's journal.
  "$MONGO_SERVER" --port "$(mongo_port)" --storage-path "$CLUSTER_DIR/mongo" --log-level WARNING \
    --sync-on-commit >>"$CLUSTER_DIR/logs/mongo.log" 2>&1 &
  MONGO_PID=$!
  wait_port "$(mongo_port)"
}

mongo_stop() { kill -TERM "$MONGO_PID" 2>/dev/null; wait "$MONGO_PID" 2>/dev/null || true; MONGO_PID=""; }

node_start() {
  local i=$1
  CHATD__SERVER__PORT=$(node_port "$i") \
  CHATD__SERVER__NODE_ID=node$i \
  CHATD__STORE__KIND=mongodb \
  CHATD__STORE__MONGODB_URI=$CLUSTER_MONGODB_URI \
  CHATD__BUS__KIND=redis \
  CHATD__BUS__REDIS_URL=redis://127.0.0.1:$(redis_port) \
    "$CHATD_BIN" >>"$CLUSTER_DIR/logs/node$i.log" 2>&1 &
  NODE_PIDS[i]=$!
  wait_port "$(node_port "$i")"
}

node_stop() {
  local i=$1 signal=${2:-TERM}
  kill -"$signal" "${NODE_PIDS[i]}" 2>/dev/null
  wait "${NODE_PIDS[i]}" 2>/dev/null || true
  NODE_PIDS[i]=""
}

cluster_start() {
  local nodes=$1
  mkdir -p "$CLUSTER_DIR"/{redis,mongo,nginx,logs}
  trap cluster_stop EXIT
  trap 'exit 130' INT TERM
  redis_start
  if [[ -n "${MONGODB_URI:-}" ]]; then
    MONGODB_URI_EXTERNAL=$MONGODB_URI
    CLUSTER_MONGODB_URI=$MONGODB_URI
  else
    mongo_start
    CLUSTER_MONGODB_URI="mongodb://127.0.0.1:$(mongo_port)/?directConnection=true"
  fi
  local upstreams=""
  for i in $(seq 1 "$nodes"); do
    node_start "$i"
    upstreams+="        server 127.0.0.1:$(node_port "$i") max_fails=1 fail_timeout=2s;"$'\n'
  done
  local conf
  conf=$(<scripts/lib/nginx-local.conf.template)
  conf=${conf//'{{PREFIX}}'/$CLUSTER_DIR/nginx}
  conf=${conf//'{{LISTEN}}'/$CLUSTER_PORT}
  conf=${conf//'{{UPSTREAMS}}'/$upstreams}
  printf '%s\n' "$conf" >"$CLUSTER_DIR/nginx/nginx.conf"
  nginx -p "$CLUSTER_DIR/nginx" -c "$CLUSTER_DIR/nginx/nginx.conf" >>"$CLUSTER_DIR/logs/nginx.log" 2>&1 &
  NGINX_PID=$!
  wait_port "$CLUSTER_PORT"
}

cluster_stop() {
  trap - EXIT
  local pids=("${NODE_PIDS[@]}" "$NGINX_PID" "$REDIS_PID" "$MONGO_PID")
  # A node may be gone already (drained, killed): that is not a failure.
  for pid in "${pids[@]}"; do [[ -n "$pid" ]] && { kill "$pid" 2>/dev/null || true; }; done
  wait 2>/dev/null
  return 0
}
