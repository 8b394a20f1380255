# Starts one release-built embedded node for a benchmark (sourced): a fresh SQLite file,
# logs at warn, the given CHATD__* settings. Sets NODE_PID and NODE_URL; stops it on exit.
start_bench_node() {
  local port=$1
  BENCH_DIR=$(mktemp -d)
  ulimit -n 65536 2>/dev/null || true
  cargo build --release --locked --workspace --bins >/dev/null
  CHATD__SERVER__PORT=$port CHATD__STORE__SQLITE_PATH=$BENCH_DIR/chatd.db CHATD__LOG__LEVEL=warn \
    target/release/chatd >"$BENCH_DIR/server.log" 2>&1 &
  NODE_PID=$!
  NODE_URL=http://127.0.0.1:$port
  trap 'kill $NODE_PID 2>/dev/null; wait $NODE_PID 2>/dev/null; rm -rf "$BENCH_DIR"' EXIT
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0; sleep 0.1; done
  echo "the node did not start; see $BENCH_DIR/server.log" >&2
  return 1
}
