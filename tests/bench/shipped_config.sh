# shellcheck shell=bash
# Sourced by the bench scripts and scripts/pgo: config/sophia.yaml as
# shipped, for a run outside the tree. Quiet (log level error), its
# memory index in INDEX_DIR, and PLUGIN_DIR as the plugin path (a copied
# build is not in the tree it was built in, so it would not find its
# bundled plugins by itself), made absolute: the config's own paths are
# taken from the config file's directory.
#
#   bench_shipped_config ROOT PLUGIN_DIR INDEX_DIR >sophia.yaml
bench_shipped_config() {
  sed -e "s|index_path: [^ ]*|index_path: $3/memory.index|" \
      -e '/^log:/,/level:/s/level: info/level: error/' \
      -e "s|^  # path:\$|  path: [\"$(realpath -m "$2")\"]|" \
      -e '/^  path: \[/{n;/^  #   - /d}' \
      "$1/config/sophia.yaml"
}

# A daemon running that config, on PORT, past the cluster's first seconds
# (cluster.c: a node just joined publishes through Redis and tells every
# cache put to other nodes until it knows it is alone, then a 5 s grace),
# as a daemon that has been up a while runs.
#
#   bench_wait_settled PORT
bench_wait_settled() {
  for _ in $(seq 300); do
    curl -s "http://127.0.0.1:$1/api/stats" | grep -q '"alone": *true' && break
    sleep 0.2
  done
  sleep 6
}
