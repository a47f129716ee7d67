#!/bin/bash
# Stellar's demo: a 3-node cluster on this machine (lab/README.md), the test
# images imported on node1, an example app (3 instances of a tiny HTTP server
# behind web.example.test, plus a busybox service), and a tour of what runs.
# `make demo` runs it after `make deps build packages`; `make demo-down`
# removes the lab. Idempotent: run it again on a running lab and it only
# shows the state again (the app is updated in place, never duplicated).
#
# Needs root. Environment:
#   NODES=3                 how many nodes (at least 2)
#   DEMO_DIR=/var/tmp/stellar-demo   where the image archives and app spec go
#   DEMO_IMPORT_ALL=0       1 imports the images on every node; by default
#                           only node1 has them and the others fetch them
#                           from a peer over the peer port when they need them
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
cd "$repo"

NODES=${NODES:-3}
DEMO_DIR=${DEMO_DIR:-/var/tmp/stellar-demo}
DEMO_IMPORT_ALL=${DEMO_IMPORT_ALL:-0}
LAB=$repo/bin/stellar-lab
APP=example
HOST=web.example.test
started=$(date +%s)
problems=()

if [ "$(id -u)" != 0 ]; then
	echo "demo: needs root (network namespaces, systemd-nspawn, mounts)" >&2
	exit 1
fi
[ -x "$LAB" ] || { echo "demo: $LAB missing: run 'make build' first" >&2; exit 1; }
deb=$(ls -t dist/stellar_*_amd64.deb 2>/dev/null | head -n1)
[ -n "$deb" ] || { echo "demo: no dist/stellar_*_amd64.deb: run 'make packages' first" >&2; exit 1; }

bold= plain=
if [ -t 1 ]; then bold=$(tput bold 2>/dev/null || true) plain=$(tput sgr0 2>/dev/null || true); fi
step() { printf '\n%s==> %s%s\n' "$bold" "$*" "$plain"; }
# show prints a command the reader could type, then runs it.
show() {
	local a line=
	for a in "$@"; do
		if [[ $a =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then line+=" $a"; else line+=" '${a//\'/\'\\\'\'}'"; fi
	done
	printf '%s$%s%s\n' "$bold" "$line" "$plain"
	"$@"
}
# on runs a command on a lab node (or "client"), printed as the reader would type it.
on() { local n=$1; shift; show ./bin/stellar-lab exec "$n" -- "$@"; }
quiet() { local n=$1; shift; "$LAB" exec "$n" -- "$@"; }
problem() { echo "demo: PROBLEM: $*" >&2; problems+=("$*"); }
# wait_for TIMEOUT_S DESCRIPTION CMD...: polls CMD every 2 s until it succeeds.
wait_for() {
	local t=$1 what=$2; shift 2
	local end=$(($(date +%s) + t))
	while ! "$@" >/dev/null 2>&1; do
		if [ "$(date +%s)" -ge "$end" ]; then
			problem "$what: not within ${t}s"
			return 1
		fi
		sleep 2
	done
}

step "Building the test images (stellar.test/busybox, stellar.test/httpd)"
mkdir -p "$DEMO_DIR"
if [ ! -s "$DEMO_DIR/httpd.tar" ] || [ ! -s "$DEMO_DIR/busybox.tar" ]; then
	go run ./testimages/cmd/stellar-testimages --out "$DEMO_DIR" || { echo "demo: cannot build the test images" >&2; exit 1; }
fi
ls -l "$DEMO_DIR"/*.tar

step "Bringing up $NODES nodes with $(basename "$deb") (the first run builds the node rootfs: a few minutes)"
show ./bin/stellar-lab up -n "$NODES" --deb "$deb" || { echo "demo: stellar-lab up failed" >&2; exit 1; }
show ./bin/stellar-lab status

step "The cluster: the nodes found each other by gossip (no master); every node sees every node"
all_alive() {
	local out
	out=$(quiet node1 sctl cluster nodes 2>/dev/null) || return 1
	[ "$(grep -cw alive <<<"$out")" -ge "$NODES" ]
}
wait_for 120 "all $NODES nodes alive in 'sctl cluster nodes' on node1" all_alive
on node1 sctl cluster nodes

if [ "$DEMO_IMPORT_ALL" = 1 ]; then
	step "Importing the test images on every node (DEMO_IMPORT_ALL=1)"
else
	step "Importing the test images on node1 only (node2 and node3 fetch them from a peer over the peer port when an instance needs them)"
fi
import_on() {
	local n=$1 f
	for f in busybox httpd; do
		# The archive goes in through stdin; sctl reads it from a file in the node.
		"$LAB" exec "$n" -- sh -c "cat > /root/$f.tar" <"$DEMO_DIR/$f.tar" || return 1
		on "$n" sctl images import "/root/$f.tar" || return 1
	done
}
import_on node1 || problem "importing the images on node1 failed"
if [ "$DEMO_IMPORT_ALL" = 1 ]; then
	for i in $(seq 2 "$NODES"); do import_on "node$i" || problem "importing the images on node$i failed"; done
fi

step "Deploying the example app: 3 instances of a tiny web server and a busybox shell, placed across the nodes"
cat >"$DEMO_DIR/example.json" <<EOF
{
  "name": "$APP",
  "labels": ["env=demo"],
  "services": [
    {
      "name": "web",
      "image": "stellar.test/httpd:latest",
      "instances": 3,
      "process": {"env": ["TEXT=hello from the Stellar demo"]},
      "health": {"http": "/health", "port": 8080, "interval": "2s", "timeout": "1s", "retries": 3},
      "endpoints": [{"service": "web", "protocol": "http", "host": "$HOST", "port": 8080}]
    },
    {
      "name": "shell",
      "image": "stellar.test/busybox:latest",
      "instances": 1,
      "process": {"args": ["sh", "-c", "while true; do sleep 3600; done"]}
    }
  ]
}
EOF
cat "$DEMO_DIR/example.json"
"$LAB" exec node1 -- sh -c 'cat > /root/example.json' <"$DEMO_DIR/example.json"
if quiet node1 sctl apps inspect "$APP" >/dev/null 2>&1; then
	on node1 sctl apps update -f /root/example.json || problem "sctl apps update failed"
else
	on node1 sctl apps create -f /root/example.json || problem "sctl apps create failed"
fi

running() { # SERVICE COUNT: that many instances of SERVICE running and healthy
	local out
	out=$(quiet node1 sctl apps inspect "$APP" 2>/dev/null) || return 1
	[ "$(grep -cE "^ +[0-9]+\.$1\.$APP .* running +[0-9]+ +healthy" <<<"$out")" -ge "$2" ]
}
wait_for 180 "3 instances of web running" running web 3
wait_for 60 "1 instance of shell running" running shell 1
on node1 sctl apps inspect "$APP"

if [ "$DEMO_IMPORT_ALL" = 1 ]; then
	step "The images on each node"
else
	step "The images on each node (node1 imported them; the others fetched the ones their instances need from a peer)"
fi
for i in $(seq 1 "$NODES"); do
	on "node$i" sctl images list || problem "sctl images list on node$i failed"
done
if [ "$DEMO_IMPORT_ALL" != 1 ]; then
	for i in $(seq 2 "$NODES"); do
		echo "(stellar-appd on node$i, when an instance needed an image it did not have:)"
		on "node$i" journalctl --no-pager -o cat -u stellar-appd --grep 'image.*peer' | tail -n 4 || true
	done
fi

step "The cluster's DNS zone: records of every instance, written by the node that runs it"
on node1 sctl nameserver list

step "A DNS lookup of the web service from inside the busybox container (cluster DNS, the IPs of all 3 instances)"
shell_node=
for i in $(seq 1 "$NODES"); do
	if quiet "node$i" ctr -n stellar task ls 2>/dev/null | grep -q "^$APP.shell.0 .*RUNNING"; then shell_node=node$i; fi
done
if [ -z "$shell_node" ]; then
	problem "the shell instance runs nowhere: no DNS lookup from a container"
else
	echo "(the busybox instance runs on $shell_node)"
	on "$shell_node" ctr -n stellar task exec --exec-id "demo-dns-$$" "$APP.shell.0" \
		nslookup web.$APP.stellar 169.254.53.53 || problem "DNS lookup of web.$APP.stellar from $APP.shell.0 failed"
fi

step "Requests from the outside world (the client namespace) through stellar-proxyd on each node: every proxy reaches the instances on all nodes"
declare -A seen=()
for try in $(seq 1 6); do
	for i in $(seq 1 "$NODES"); do
		addr=10.77.0.$((10 + i))
		ans=$(quiet client curl -sf --max-time 5 -H "Host: $HOST" "http://$addr/" 2>/dev/null | head -n1)
		if [ -n "$ans" ]; then
			printf '  via node%s (%s): %s\n' "$i" "$addr" "$ans"
			seen[$ans]=1
		else
			printf '  via node%s (%s): no answer\n' "$i" "$addr"
		fi
	done
	[ "${#seen[@]}" -ge 3 ] && break
done
show ./bin/stellar-lab exec client -- curl -s -i -H "Host: $HOST" http://10.77.0.11/
echo "distinct instances that answered: ${#seen[@]}"
[ "${#seen[@]}" -ge 3 ] || problem "the proxy reached ${#seen[@]} of the 3 web instances"

step "The app's output in the journal (journalctl STELLAR_APP=$APP)"
for i in $(seq 1 "$NODES"); do
	# (the health checks' requests left out)
	on "node$i" journalctl --no-pager -n 40 STELLAR_APP="$APP" | grep -v 'path=/health' | tail -n 6 || true
done

elapsed=$(($(date +%s) - started))
step "Done in ${elapsed}s"
if [ "${#problems[@]}" -gt 0 ]; then
	echo "These steps did not work:"
	printf '  - %s\n' "${problems[@]}"
fi
cat <<EOF

What to try next:
  ./bin/stellar-lab exec node1 -- sctl apps scale $APP web 5      # more instances
  ./bin/stellar-lab exec client -- curl -s -H 'Host: $HOST' http://10.77.0.12/
  ./bin/stellar-lab exec node2 -- dig +short web.$APP.stellar @169.254.53.53
  ./bin/stellar-lab fault poweroff node3   # then watch 'sctl apps inspect $APP' on node1:
                                           # node3's instance moves after reschedule_after (60 s)
  ./bin/stellar-lab up -n $NODES                # boots node3 again, its disk as it was
  ./bin/stellar-lab fault partition node1  # node1 alone; 'fault heal' to undo
  ./bin/stellar-lab fault kill node2 stellar-gossip.service   # systemd restarts it
  ./bin/stellar-lab logs node1 stellar-appd
  ./bin/stellar-lab exec node1 -- bash     # a shell in a node
  lab/README.md                            # every command and fault of the lab
  make demo-down                           # remove the lab
EOF
[ "${#problems[@]}" -eq 0 ]
