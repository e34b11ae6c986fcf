#!/usr/bin/env bash
# A local three-node tandem cluster on one PostgreSQL, for trying things out.
#
#   scripts/cluster-demo.sh                 PostgreSQL + 3 nodes; Ctrl-C stops all
#   scripts/cluster-demo.sh --postgres-only just the database (prints its URL)
#   NODES=5 scripts/cluster-demo.sh         another number of nodes
#   KEEP=1 scripts/cluster-demo.sh          keep the temporary folder afterwards
#
# Everything lives in one temporary folder: the database cluster (initdb,
# run as the unprivileged user "postgres" when started as root), the nodes'
# data folders and logs. Ports: PostgreSQL on a free port; node i listens on
# 127.0.0.1 with WebSockets on 7400+10i, the API on 7401+10i, the actor
# remote on 7402+10i and gossip on 7946+i (BASE_WS, BASE_GOSSIP override).
# Ctrl-C (or any exit) stops only the processes this script started.
set -euo pipefail
cd "$(dirname "$0")/.."

NODES=${NODES:-3}
BASE_WS=${BASE_WS:-7400}
BASE_GOSSIP=${BASE_GOSSIP:-7946}
pg_only=false
case "${1:-}" in
--postgres-only) pg_only=true ;;
"") ;;
*) echo "usage: $0 [--postgres-only]" >&2; exit 2 ;;
esac

say() { printf '%s\n' "$*" >&2; }
# nap sleeps in a way a signal interrupts at once (a trap waits for a
# foreground sleep to end).
nap() {
	sleep "$1" &
	wait $! || true
}
die() { say "cluster-demo: $*"; exit 1; }

for tool in curl base64 head; do
	command -v "$tool" >/dev/null || die "$tool is required"
done

# ---------------------------------------------------------------- cleanup
work=$(mktemp -d -t tandem-demo.XXXXXX)
node_pids=()
pg_started=false
as_pg=() # prefix that runs a command as the database's owner

cleanup() {
	local rc=$?
	# A child forked for a node (before it execs the binary) inherits these
	# traps: only the script itself cleans up.
	[[ $BASHPID == "$$" ]] || exit "$rc"
	trap - EXIT INT TERM
	local pids=() p
	for p in "${node_pids[@]}"; do
		[[ $p == - ]] || pids+=("$p") # "-": exited already
	done
	if ((${#pids[@]})); then
		say "stopping nodes: ${pids[*]}"
		kill -TERM "${pids[@]}" 2>/dev/null || true
		for _ in $(seq 1 100); do # up to 20 s for a graceful stop
			local alive=false
			for p in "${pids[@]}"; do
				kill -0 "$p" 2>/dev/null && alive=true
			done
			$alive || break
			sleep 0.2
		done
		kill -KILL "${pids[@]}" 2>/dev/null || true
		wait "${pids[@]}" 2>/dev/null || true
	fi
	if $pg_started; then
		say "stopping PostgreSQL"
		"${as_pg[@]}" "$pg_bin/pg_ctl" -D "$work/pg" -m fast -w stop >/dev/null 2>&1 || true
	fi
	if [[ ${KEEP:-} == 1 ]]; then
		say "kept $work"
	else
		rm -rf "$work"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- ports
# free_port prints a TCP port on 127.0.0.1 nobody listens on.
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() {
	local p
	for _ in $(seq 1 100); do
		p=$((20000 + RANDOM % 30000))
		port_busy "$p" || { echo "$p"; return; }
	done
	die "no free port found"
}

# ---------------------------------------------------------------- PostgreSQL
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
if [[ -z $pg_bin ]] && command -v initdb >/dev/null; then
	pg_bin=$(dirname "$(command -v initdb)")
fi
[[ -n $pg_bin && -x $pg_bin/initdb ]] || die "PostgreSQL server binaries not found (apt-get install postgresql)"

if [[ $(id -u) == 0 ]]; then
	# initdb and postgres refuse to run as root.
	id postgres >/dev/null 2>&1 || die "running as root needs the user 'postgres' to own the database"
	chown postgres "$work"
	as_pg=(runuser -u postgres --)
else
	as_pg=(env)
fi
pg_port=$(free_port)
"${as_pg[@]}" mkdir -p "$work/pg" "$work/pgsock"
"${as_pg[@]}" "$pg_bin/initdb" -D "$work/pg" -U postgres -A trust -E UTF8 --no-locale --no-sync >"$work/initdb.log" 2>&1 ||
	{ cat "$work/initdb.log" >&2; die "initdb failed"; }
"${as_pg[@]}" "$pg_bin/pg_ctl" -D "$work/pg" -l "$work/pg/postgres.log" -w -t 30 \
	-o "-c listen_addresses=127.0.0.1 -c port=$pg_port -c unix_socket_directories=$work/pgsock -c fsync=off" \
	start >/dev/null || { cat "$work/pg/postgres.log" >&2; die "PostgreSQL did not start"; }
pg_started=true
psql() { "${as_pg[@]}" "$pg_bin/psql" -h 127.0.0.1 -p "$pg_port" -U postgres -v ON_ERROR_STOP=1 -qAt "$@"; }
psql -c "CREATE ROLE tandem LOGIN" -c "CREATE DATABASE tandem OWNER tandem" >/dev/null
store="postgres://tandem@127.0.0.1:$pg_port/tandem?sslmode=disable"
say "PostgreSQL $(psql -c 'SHOW server_version') on 127.0.0.1:$pg_port (data $work/pg)"

if $pg_only; then
	echo
	echo "store URL:  $store"
	echo "psql:       $pg_bin/psql '$store'"
	echo
	echo "Ctrl-C stops it."
	while :; do nap 1; done
fi

# ---------------------------------------------------------------- nodes
say "building cmd/tandem"
mkdir -p tmp
printf '*\n' >tmp/.gitignore
go build -o tmp/tandem ./cmd/tandem
bin=$PWD/tmp/tandem

admin_key=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
jwt_secret=$(head -c 32 /dev/urandom | base64)
cluster_key=$(head -c 32 /dev/urandom | base64)

ws_port() { echo $((BASE_WS + 10 * $1)); }
api_port() { echo $((BASE_WS + 10 * $1 + 1)); }
remote_port() { echo $((BASE_WS + 10 * $1 + 2)); }
gossip_port() { echo $((BASE_GOSSIP + $1)); }

for ((i = 0; i < NODES; i++)); do
	for p in $(ws_port $i) $(api_port $i) $(remote_port $i) $(gossip_port $i); do
		port_busy "$p" && die "port $p is taken (set BASE_WS / BASE_GOSSIP)"
	done
done

for ((i = 0; i < NODES; i++)); do
	seeds=()
	for ((j = 0; j < NODES; j++)); do
		((j == i)) || seeds+=("127.0.0.1:$(gossip_port $j)")
	done
	seed_list=$(
		IFS=,
		echo "${seeds[*]}"
	)
	mkdir -p "$work/node$i"
	args=(
		--data-dir "$work/node$i"
		--ws-addr "127.0.0.1:$(ws_port $i)"
		--api-addr "127.0.0.1:$(api_port $i)"
		--remote-addr "127.0.0.1:$(remote_port $i)"
		--gossip-addr "127.0.0.1:$(gossip_port $i)"
		--seeds "$seed_list"
		--store "$store"
		--cluster-key "$cluster_key"
		--admin-key "$admin_key"
		--jwt-secret "$jwt_secret"
	)
	"$bin" "${args[@]}" >"$work/node$i.log" 2>&1 &
	node_pids+=($!)
done

say "waiting for the nodes to be ready"
for ((i = 0; i < NODES; i++)); do
	ready=false
	for _ in $(seq 1 150); do # 30 s
		if ! kill -0 "${node_pids[$i]}" 2>/dev/null; then
			tail -n 30 "$work/node$i.log" >&2
			die "node $i exited (log above: $work/node$i.log)"
		fi
		if curl -fsS -o /dev/null "http://127.0.0.1:$(api_port $i)/readyz" 2>/dev/null; then
			ready=true
			break
		fi
		sleep 0.2
	done
	$ready || { tail -n 30 "$work/node$i.log" >&2; die "node $i not ready within 30 s"; }
done

cat <<EOF

tandem cluster of $NODES nodes on PostgreSQL ($store)

EOF
for ((i = 0; i < NODES; i++)); do
	printf 'node %d  ws://127.0.0.1:%d/ws  http://127.0.0.1:%d  pid %d  log %s\n' \
		"$i" "$(ws_port $i)" "$(api_port $i)" "${node_pids[$i]}" "$work/node$i.log"
done
cat <<EOF

admin key:    $admin_key
cluster key:  $cluster_key

Mint a login token for user "alice" (any node answers):

  curl -s -H 'Authorization: Bearer $admin_key' \\
    -d '{"user_id":"alice","ttl_seconds":3600}' http://127.0.0.1:$(api_port 0)/v1/tokens

Go clients: client.Options{URLs: []string{$(
	for ((i = 0; i < NODES; i++)); do
		printf '"ws://127.0.0.1:%d/ws"' "$(ws_port $i)"
		((i + 1 < NODES)) && printf ', '
	done
)}, ...}

Ctrl-C stops the nodes and the database.
EOF

# Stay until Ctrl-C; say so if a node dies meanwhile.
while :; do
	for ((i = 0; i < NODES; i++)); do
		p=${node_pids[$i]}
		if [[ $p != - ]] && ! kill -0 "$p" 2>/dev/null; then
			say "node $i (pid $p) exited; see $work/node$i.log"
			node_pids[$i]=-
		fi
	done
	nap 1
done
