#!/bin/bash
# Install test of the stellar .deb, done as a new user would, on a node booted
# with real systemd (run by `make test` after `make packages`; needs root).
#
# Boots one node with the lab (bin/stellar-lab up -n 1 --no-stellar), copies
# dist/stellar_<version>_amd64.deb in, and checks: apt-get install, enable
# --now, sockets and services, socket activation (DNS and API), status,
# journald fields, restart of dnsd under queries, the watchdog, reload, remove
# and purge. Prints PASS/FAIL/SKIP per step and "N passed, N failed" at the end.
#
# The test needs the lab to itself: if nodes are already up or their disks
# are kept (someone else's lab), it refuses to touch them unless LAB_TAKEOVER=1 (the default under CI,
# where a lab left by an earlier step is taken down). It takes down only a lab
# it brought up itself (KEEP=1 leaves the node up for a look).
#   DEB=PATH          the package (default: dist/stellar_$(cat VERSION)_amd64.deb)
#   DRIVER=nspawn     use a private throw-away node instead of stellar-lab
#                     (own network namespace and overlay over the lab's rootfs;
#                     for working on this test while the lab is busy)
#   STRICT_DNS=1      a DNS server that never answers is a failure, not a skip
set -u

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
cd "$repo"
version=$(tr -d ' \n' <VERSION)
DEB=${DEB:-dist/stellar_${version}_amd64.deb}
DRIVER=${DRIVER:-lab}
LAB=${LAB:-$repo/bin/stellar-lab}
NODE=node1
DNS=169.254.53.53

passed=0 failed=0 skipped=0
pass() { echo "PASS $*"; passed=$((passed + 1)); }
fail() { echo "FAIL $*"; failed=$((failed + 1)); }
skip() { echo "SKIP $*"; skipped=$((skipped + 1)); }
info() { echo "     $*"; }
finish() {
	echo "$passed passed, $failed failed, $skipped skipped"
	[ "$failed" -eq 0 ]
	exit $?
}

if [ "$(id -u)" != 0 ]; then
	echo "SKIP install test: needs root (it boots a node with systemd-nspawn)"
	echo "0 passed, 0 failed, 1 skipped"
	exit 0
fi
[ -f "$DEB" ] || { echo "install-test.sh: $DEB missing: run 'make packages' first"; exit 1; }

# --- node drivers: up, x (run in node), copyin, down ---------------------------------
case "$DRIVER" in
lab)
	[ -x "$LAB" ] || { echo "install-test.sh: $LAB missing: run 'make build' first"; exit 1; }
	# nodes up, or disks kept by `stellar-lab down --keep-disks`: someone's lab
	if [ -n "$("$LAB" status 2>/dev/null | tail -n +2 | grep -v '^[[:space:]]*$')" ] \
		|| [ -n "$(ls -A /var/lib/stellar-lab/nodes 2>/dev/null)" ]; then
		if [ "${LAB_TAKEOVER:-${CI:-}}" = 1 ] || [ "${LAB_TAKEOVER:-${CI:-}}" = true ]; then
			echo "== the lab is up: taking it down first (LAB_TAKEOVER/CI)"
			"$LAB" down >/dev/null 2>&1
		else
			echo "install-test.sh: the lab is in use (nodes up or kept disks); not touching it."
			echo "  Run it again when the lab is down, with LAB_TAKEOVER=1 to take it over,"
			echo "  or with DRIVER=nspawn to use a private node."
			exit 1
		fi
	fi
	up() { "$LAB" up -n 1 --no-stellar; }
	x() { "$LAB" exec "$NODE" -- "$@"; }
	down() { "$LAB" down >/dev/null 2>&1; }
	reboot_node() { "$LAB" fault poweroff "$NODE" && "$LAB" up -n 1 --no-stellar; }
	;;
nspawn)
	W=/var/tmp/stellar-install-test
	NS=stellar-install-test
	up() {
		down
		rootfs=$("$LAB" rootfs | tail -1) || return 1
		[ -d "$rootfs" ] || { echo "no rootfs: $rootfs"; return 1; }
		mkdir -p $W/upper $W/work $W/root $W/containerd
		mount -t overlay overlay -o "lowerdir=$rootfs,upperdir=$W/upper,workdir=$W/work" $W/root || return 1
		ip netns add $NS && ip -n $NS link set lo up || return 1
		boot
	}
	boot() {
		SYSTEMD_SECCOMP=0 SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=0 SYSTEMD_NSPAWN_API_VFS_WRITABLE=1 \
			setsid systemd-nspawn -D $W/root --boot --register=no --keep-unit --machine=$NS \
			--capability=all --console=read-only --link-journal=no --resolv-conf=off \
			--timezone=off --network-namespace-path=/run/netns/$NS \
			--bind=$W/containerd:/var/lib/containerd >$W/console.log 2>&1 </dev/null &
		echo $! >$W/nspawn.pid
		disown $! 2>/dev/null
		for _ in $(seq 400); do
			init=$(ps -o pid= --ppid "$(cat $W/nspawn.pid)" 2>/dev/null | head -1 | tr -d ' ')
			if [ -n "$init" ]; then
				echo "$init" >$W/init.pid
				s=$(x systemctl is-system-running 2>/dev/null)
				case "$s" in running|degraded) return 0 ;; esac
			fi
			sleep 0.3
		done
		echo "node did not boot"; return 1
	}
	x() {
		nsenter -t "$(cat $W/init.pid)" -a -- env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
			HOME=/root LANG=C.UTF-8 SYSTEMD_PAGER=cat "$@"
	}
	reboot_node() { poweroff; boot; }
	down() {
		poweroff
		mountpoint -q $W/root 2>/dev/null && umount -l $W/root
		ip netns del $NS 2>/dev/null
		rm -rf $W/upper $W/work $W/containerd
	}
	poweroff() {
		if [ -f $W/nspawn.pid ]; then
			# kill the whole tree: nspawn, the node's systemd and all below it
			p="$(cat $W/nspawn.pid) $(cat $W/init.pid 2>/dev/null)"
			pids=$p
			todo=$p
			while [ -n "$todo" ]; do
				kids=$(for q in $todo; do ps -o pid= --ppid "$q" 2>/dev/null; done | tr -d ' ')
				pids="$pids $kids"; todo=$kids
			done
			kill -9 $pids 2>/dev/null
			sleep 0.5
			rm -f $W/nspawn.pid $W/init.pid
		fi
	}
	;;
*) echo "install-test.sh: unknown DRIVER $DRIVER"; exit 1 ;;
esac
copyin() { x sh -c "cat >'$2'" <"$1"; }
xq() { x "$@" >/dev/null 2>&1 </dev/null; }

trap 'echo interrupted; exit 1' INT TERM

SERVICES="stellar-gossip stellar-netd stellar-dnsd stellar-proxyd stellar-appd"
SOCKETS="stellar-gossip stellar-gossip-peer stellar-netd stellar-dnsd stellar-dnsd-dns stellar-proxyd stellar-proxyd-http stellar-proxyd-https stellar-appd"
APIS="gossip netd dnsd proxyd appd"

echo "== booting a node ($DRIVER)"
# from here on the node is ours: take it down at exit
if [ -z "${KEEP:-}" ]; then trap 'down' EXIT; fi
if ! up >/tmp/stellar-install-test-up.log 2>&1; then
	fail "boot node: $(tail -5 /tmp/stellar-install-test-up.log)"
	finish
fi
pass "boot node with systemd: $(x systemctl is-system-running </dev/null)"

# --- install ----------------------------------------------------------------------------
deb_in=/root/$(basename "$DEB")
copyin "$DEB" "$deb_in"
if out=$(x env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$deb_in" </dev/null 2>&1); then
	pass "apt-get install ./$(basename "$DEB")"
else
	fail "apt-get install ./$(basename "$DEB")"; printf '%s\n' "$out" | tail -15 | sed 's/^/     /'
	finish
fi
if out=$(x systemctl enable --now stellar.target </dev/null 2>&1); then
	pass "systemctl enable --now stellar.target"
else
	fail "systemctl enable --now stellar.target: $out"
fi
[ "$(x systemctl is-enabled stellar.target </dev/null)" = enabled ] && pass "stellar.target enabled (starts at boot)" || fail "stellar.target not enabled"
for s in $SERVICES; do
	e=$(x systemctl is-enabled $s.service </dev/null)
	[ "$e" = enabled ] || fail "$s.service is-enabled: $e"
done

# wait for every service to be up (Type=notify: active means READY=1 was sent)
wait_active() { # unit [seconds]
	for _ in $(seq $(( ${2:-30} * 2 ))); do
		[ "$(x systemctl is-active "$1" </dev/null)" = active ] && return 0
		sleep 0.5
	done
	return 1
}
for s in $SERVICES; do wait_active $s.service 30; done

# --- sockets and services ----------------------------------------------------------------
for s in $SOCKETS; do
	st=$(x systemctl is-active $s.socket </dev/null)
	[ "$st" = active ] && pass "socket $s.socket $st" || fail "socket $s.socket $st"
done
listen=$(x ss -lnxtuH </dev/null 2>&1)
for a in /run/stellar/gossip.sock /run/stellar/netd.sock /run/stellar/dnsd.sock /run/stellar/proxyd.sock \
	/run/stellar/appd.sock ":7947 " ":80 " ":443 " "$DNS:53 "; do
	n=$(printf '%s\n' "$listen" | grep -cF -- "$a")
	[ "$n" -ge 1 ] && pass "listening on ${a% } ($n)" || fail "nothing listens on ${a% }"
done
n=$(printf '%s\n' "$listen" | grep -F "$DNS:53 " | grep -c '^udp')
[ "$n" -ge 1 ] && pass "DNS socket has UDP" || fail "DNS socket has no UDP"
for a in $APIS; do
	m=$(x stat -c '%a %U:%G' /run/stellar/$a.sock </dev/null 2>&1)
	[ "$m" = "660 root:stellar" ] && pass "/run/stellar/$a.sock mode $m" || fail "/run/stellar/$a.sock mode $m (want 660 root:stellar)"
done
for s in $SERVICES; do
	st=$(x systemctl is-active $s.service </dev/null)
	[ "$st" = active ] && pass "service $s.service $st" || {
		fail "service $s.service $st"
		x journalctl -u $s.service -n 15 --no-pager </dev/null | sed 's/^/     /'
	}
done
for a in $APIS; do
	code=$(x curl -s -o /dev/null -w '%{http_code}' --max-time 5 --unix-socket /run/stellar/$a.sock http://$a/v1/health </dev/null)
	[ "$code" = 200 ] && pass "GET /v1/health on $a.sock: $code" || fail "GET /v1/health on $a.sock: $code"
done
# who runs as whom (the hardening as shipped)
for s in $SERVICES; do
	pid=$(x systemctl show -P MainPID $s.service </dev/null)
	[ "${pid:-0}" -gt 0 ] 2>/dev/null || continue
	info "$s: $(x sh -c "grep -E '^(Uid|CapEff|Seccomp|NoNewPrivs):' /proc/$pid/status | tr -s '\t ' ' ' | tr '\n' ' '" </dev/null)"
done

# --- stellar-netd's host networking (inside its sandbox) ---------------------------------------
# A lone node claims its subnet after netd's grace period (30 s).
for _ in $(seq 60); do
	x ip -4 addr show dev lo </dev/null | grep -q "inet $DNS/" && break
	sleep 1
done
if x ip -4 addr show dev lo </dev/null | grep -q "inet $DNS/"; then
	pass "stellar-netd put $DNS on lo"
	br=$(x ip -4 -br addr show dev stellar0 </dev/null 2>/dev/null | tr -s ' ')
	[ -n "$br" ] && pass "stellar-netd made the bridge: $br" || fail "stellar-netd: no bridge stellar0"
	c=$(x sh -c 'ls /etc/cni/net.d/' </dev/null 2>/dev/null | tr '\n' ' ')
	[ -n "$c" ] && pass "stellar-netd wrote the CNI config: /etc/cni/net.d/$c" || fail "stellar-netd: no CNI config in /etc/cni/net.d"
	t=$(x nft list tables </dev/null 2>/dev/null | grep -c stellar)
	[ "$t" -ge 1 ] && pass "stellar-netd's nftables table present" || fail "stellar-netd: no nftables table"
	[ "$(x cat /proc/sys/net/ipv4/ip_forward </dev/null)" = 1 ] && pass "IPv4 forwarding on" || fail "IPv4 forwarding off"
	netd_made=yes
else
	fail "stellar-netd did not put $DNS on lo within 60 s; the test adds it to go on"
	x journalctl -u stellar-netd.service -n 10 --no-pager </dev/null | sed 's/^/     /'
	xq ip addr add $DNS/32 dev lo
	netd_made=""
fi

# --- socket activation --------------------------------------------------------------------
dnsq() { # [dig options...] -> prints rcode or nothing
	x dig +tries=1 +time=3 "$@" @$DNS </dev/null 2>/dev/null | sed -n 's/.*status: \([A-Z]*\).*/\1/p' | head -1
}
x systemctl stop stellar-dnsd.service </dev/null 2>/dev/null
st=$(x systemctl is-active stellar-dnsd.service </dev/null); sst=$(x systemctl is-active stellar-dnsd-dns.socket </dev/null)
[ "$st" = inactive ] && [ "$sst" = active ] && pass "stop stellar-dnsd.service: service $st, socket $sst" || fail "stop stellar-dnsd.service: service $st, socket $sst"
rc=$(dnsq +retry=2 web.example.stellar A)
if wait_active stellar-dnsd.service 15; then
	pass "a DNS query started stellar-dnsd.service through its socket"
else
	fail "a DNS query did not start stellar-dnsd.service"
fi
dns_answers=""
if [ -n "$rc" ]; then
	dns_answers=yes; pass "dnsd answered the query that woke it: status $rc"
else
	rc=$(dnsq web.example.stellar A)
	if [ -n "$rc" ]; then dns_answers=yes; pass "dnsd answers after activation: status $rc (the first query was lost)"
	elif [ -n "${STRICT_DNS:-}" ]; then fail "dnsd does not answer DNS queries"
	else skip "dnsd does not answer DNS queries yet (activation itself checked above)"
	fi
fi
x systemctl stop stellar-gossip.service </dev/null 2>/dev/null
code=$(x curl -s -o /dev/null -w '%{http_code}' --max-time 20 --unix-socket /run/stellar/gossip.sock http://gossip/v1/health </dev/null)
st=$(x systemctl is-active stellar-gossip.service </dev/null)
{ [ "$st" = active ] || [ "$st" = activating ]; } && [ "$code" != 000 ] \
	&& pass "stopped stellar-gossip started again by a connection to gossip.sock (first answer: HTTP $code, service $st)" \
	|| fail "connection to gossip.sock after stop: HTTP $code, service $st"
for _ in $(seq 60); do
	[ "$code" = 200 ] && [ "$st" = active ] && break
	sleep 0.5
	code=$(x curl -s -o /dev/null -w '%{http_code}' --max-time 5 --unix-socket /run/stellar/gossip.sock http://gossip/v1/health </dev/null)
	st=$(x systemctl is-active stellar-gossip.service </dev/null)
done
[ "$code" = 200 ] && [ "$st" = active ] && pass "stellar-gossip active and healthy again after activation" \
	|| fail "stellar-gossip after activation: health $code, service $st"

# --- status and journal ---------------------------------------------------------------------
if out=$(x systemctl status --no-pager stellar.target $(for s in $SERVICES; do echo $s.service; done) </dev/null 2>&1); then
	pass "systemctl status: stellar.target and every service active"
else
	fail "systemctl status"; printf '%s\n' "$out" | grep -E 'Active:|●' | sed 's/^/     /'
fi
failed_units=$(x systemctl list-units --failed --no-legend --plain </dev/null | grep stellar)
[ -z "$failed_units" ] && pass "no failed stellar unit" || fail "failed units: $failed_units"
x journalctl -u stellar-gossip.service -o json --no-pager </dev/null >/tmp/stellar-install-test-journal.json 2>/dev/null
fields=$(python3 - /tmp/stellar-install-test-journal.json <<'EOF'
import json, sys
std = {"MESSAGE", "PRIORITY", "SYSLOG_IDENTIFIER", "SYSLOG_FACILITY", "SYSLOG_PID",
       "SYSLOG_TIMESTAMP", "SYSLOG_RAW", "CODE_FILE", "CODE_LINE", "CODE_FUNC", "ERRNO",
       "MESSAGE_ID", "INVOCATION_ID", "USER_INVOCATION_ID", "UNIT", "USER_UNIT",
       "JOB_ID", "JOB_TYPE", "JOB_RESULT", "TID", "DOCUMENTATION", "INVOCATION_ID"}
n, own = 0, set()
for line in open(sys.argv[1]):
    try:
        e = json.loads(line)
    except ValueError:
        continue
    if e.get("_PID") == "1" or e.get("SYSLOG_IDENTIFIER") == "systemd":
        continue  # systemd's own messages about the unit
    n += 1
    own |= {k for k in e if not k.startswith("_") and k not in std}
print(n, " ".join(sorted(own)))
EOF
)
nent=${fields%% *}; own=${fields#* }; [ "$own" = "$nent" ] && own=""
if [ "${nent:-0}" -gt 0 ] && [ -n "$own" ]; then
	pass "journalctl -u stellar-gossip -o json: $nent entries, structured fields: $own"
elif [ "${nent:-0}" -gt 0 ]; then
	fail "journalctl -u stellar-gossip -o json: $nent entries but no structured fields beyond MESSAGE/PRIORITY"
else
	fail "journalctl -u stellar-gossip -o json: no entries from the daemon"
fi

# --- reload ---------------------------------------------------------------------------------
pid=$(x systemctl show -P MainPID stellar-dnsd.service </dev/null)
if x systemctl reload stellar-dnsd.service </dev/null && [ "$(x systemctl is-active stellar-dnsd.service </dev/null)" = active ] \
	&& [ "$(x systemctl show -P MainPID stellar-dnsd.service </dev/null)" = "$pid" ]; then
	pass "systemctl reload stellar-dnsd (SIGHUP, same PID, active)"
else
	fail "systemctl reload stellar-dnsd"
fi

# --- restart dnsd while queries run ------------------------------------------------------------
if [ -n "$dns_answers" ]; then
	# 150 UDP and 30 TCP queries, one at a time, over about 6 s; the restart
	# happens in the middle. Each line of the log is one query's status.
	x sh -c "rm -f /tmp/q.log; (for i in \$(seq 150); do dig +tries=1 +time=3 @$DNS q\$i.restart.stellar A | grep -o 'status: [A-Z]*' || echo LOST; [ \$((i % 5)) = 0 ] && { dig +tcp +tries=1 +time=3 @$DNS t\$i.restart.stellar A | grep -o 'status: [A-Z]*' || echo LOST-TCP; }; sleep 0.03; done) >/tmp/q.log 2>&1 &" </dev/null
	sleep 2
	x systemctl restart stellar-dnsd.service </dev/null
	info "restarted stellar-dnsd (new PID $(x systemctl show -P MainPID stellar-dnsd.service </dev/null))"
	for _ in $(seq 60); do
		[ "$(x sh -c 'wc -l </tmp/q.log' </dev/null)" -ge 180 ] && break
		sleep 0.5
	done
	total=$(x sh -c 'wc -l </tmp/q.log' </dev/null); lost=$(x sh -c 'grep -c LOST /tmp/q.log' </dev/null)
	[ "$total" -ge 180 ] && [ "$lost" = 0 ] && pass "restart of stellar-dnsd during $total queries: none lost" \
		|| fail "restart of stellar-dnsd during queries: $lost of $total lost"
else
	skip "restart of stellar-dnsd under queries: dnsd does not answer yet"
	x systemctl restart stellar-dnsd.service </dev/null
	[ "$(x systemctl is-active stellar-dnsd.service </dev/null)" = active ] && pass "systemctl restart stellar-dnsd: active" || fail "systemctl restart stellar-dnsd"
fi

# --- watchdog ----------------------------------------------------------------------------------
w=stellar-proxyd.service
pid=$(x systemctl show -P MainPID $w </dev/null); nr=$(x systemctl show -P NRestarts $w </dev/null)
wd=$(x systemctl show -P WatchdogUSec $w </dev/null)
x kill -STOP "$pid" </dev/null
info "kill -STOP $pid ($w, WatchdogSec=$wd)"
ok=""
for _ in $(seq 90); do
	sleep 1
	np=$(x systemctl show -P MainPID $w </dev/null)
	if [ "$np" != "$pid" ] && [ "${np:-0}" != 0 ] && [ "$(x systemctl is-active $w </dev/null)" = active ]; then ok=yes; break; fi
done
nnr=$(x systemctl show -P NRestarts $w </dev/null)
if [ -n "$ok" ] && x journalctl -u $w --no-pager </dev/null | grep -qi 'watchdog timeout'; then
	pass "watchdog: $w stopped with SIGSTOP was killed and restarted (PID $pid -> $np, NRestarts $nr -> $nnr)"
else
	fail "watchdog: $w not restarted after SIGSTOP (PID $pid -> $np)"
	x journalctl -u $w -n 10 --no-pager </dev/null | sed 's/^/     /'
fi

# --- a real container through appd, under appd's sandbox ------------------------------------------
ctask() { x ctr -n stellar tasks ls </dev/null 2>/dev/null | awk '$1 ~ /^web\.httpd\./ && $3 == "RUNNING" {print $2; exit}'; }
imgdir=$(mktemp -d /tmp/stellar-install-test-img.XXXXXX)
cpid=""
if (cd "$repo/testimages" && go run ./cmd/stellar-testimages --out "$imgdir") >"$imgdir/build.log" 2>&1; then
	copyin "$imgdir/httpd.tar" /root/httpd.tar
	printf '%s\n' '{"name": "web", "services": [{"name": "httpd", "image": "stellar.test/httpd:latest", "instances": 1,' \
		'"network": false, "process": {"args": ["/httpd", "--listen", "127.0.0.1:8080"]},' \
		'"health": {"http": "/health", "port": 8080, "interval": "2s"}}]}' >"$imgdir/app.json"
	copyin "$imgdir/app.json" /root/app.json
	ic=$(x curl -s -o /dev/null -w '%{http_code}' -m 60 --unix-socket /run/stellar/appd.sock -X POST --data-binary @/root/httpd.tar http://appd/v1/images/import </dev/null)
	ac=$(x curl -s -o /dev/null -w '%{http_code}' -m 30 --unix-socket /run/stellar/appd.sock -X POST -H 'Content-Type: application/json' --data-binary @/root/app.json http://appd/v1/apps </dev/null)
	if [ "$ic" != 200 ] || [ "${ac#2}" = "$ac" ]; then
		skip "appd container: image import HTTP $ic, app create HTTP $ac (API not ready?)"
	else
		for _ in $(seq 60); do
			cpid=$(ctask)
			[ -n "$cpid" ] && [ "$(x curl -s -m 2 http://127.0.0.1:8080/health </dev/null)" = ok ] && break
			sleep 1
		done
		if [ -n "$cpid" ]; then
			pass "appd (sandboxed) imported an image and runs a container: web.httpd, PID $cpid, /health ok"
		else
			fail "appd did not get a container running within 60 s"
			x journalctl -u stellar-appd.service -n 10 --no-pager </dev/null | sed 's/^/     /'
		fi
	fi
else
	skip "appd container: could not build the test image ($(tail -1 "$imgdir/build.log"))"
fi
rm -rf "$imgdir"
jlines() { x journalctl STELLAR_APP=web --no-pager -o cat </dev/null 2>/dev/null | wc -l; }
if [ -n "$cpid" ]; then
	n_before=$(jlines)
	x systemctl stop stellar-appd.service </dev/null 2>/dev/null
	sleep 2
	[ "$(ctask)" = "$cpid" ] && pass "systemctl stop stellar-appd: the container keeps running (PID $cpid)" \
		|| fail "systemctl stop stellar-appd: container PID $cpid gone ($(ctask))"
	x systemctl start stellar-appd.service </dev/null
	sleep 2
	[ "$(ctask)" = "$cpid" ] && [ "$(x systemctl is-active stellar-appd.service </dev/null)" = active ] \
		&& pass "stellar-appd started again: same container (PID $cpid)" || fail "after appd start: container $(ctask), appd $(x systemctl is-active stellar-appd.service </dev/null)"
	# The container's output: journald files it under containerd's unit (the
	# log driver is containerd's child) with Stellar's fields; it keeps
	# flowing across appd's restart (appd's health checks make the server log).
	n=0
	for _ in $(seq 20); do n=$(jlines); [ "$n" -gt "$n_before" ] && break; sleep 1; done
	[ "$n_before" -gt 0 ] && [ "$n" -gt "$n_before" ] \
		&& pass "container output in the journal: journalctl STELLAR_APP=web ($n_before lines before appd's restart, $n after)" \
		|| fail "container output under journalctl STELLAR_APP=web: $n_before lines before appd's restart, $n after"
	entry=$(x journalctl STELLAR_APP=web -n 1 -o export --no-pager </dev/null 2>/dev/null)
	miss=""
	for f in STELLAR_SERVICE=httpd STELLAR_INSTANCE=[0-9]*\.httpd\.web CONTAINER_ID= SYSLOG_IDENTIFIER=web.httpd _SYSTEMD_UNIT=containerd.service; do
		printf '%s\n' "$entry" | grep -q "^$f" || miss="$miss $f"
	done
	[ -z "$miss" ] && pass "journal fields of container output: STELLAR_APP, STELLAR_SERVICE, STELLAR_INSTANCE, CONTAINER_ID, SYSLOG_IDENTIFIER=web.httpd, under containerd.service" \
		|| fail "journal entry of container output lacks:$miss"
	burst=$(x systemctl show -P LogRateLimitBurst containerd.service </dev/null 2>/dev/null)
	[ "$burst" = 100000 ] && pass "containerd's journald rate limit raised by Stellar's drop-in (LogRateLimitBurst=$burst)" \
		|| fail "containerd's LogRateLimitBurst is '$burst', not the drop-in's 100000"
	nl=$(x sctl apps logs web </dev/null 2>/dev/null | wc -l)
	[ "$nl" -gt 0 ] && pass "sctl apps logs web: $nl lines" || fail "sctl apps logs web printed nothing"
fi

# --- upgrade path: services restart, sockets stay ---------------------------------------------
sock_ts() { for s in $SOCKETS; do x systemctl show -P ActiveEnterTimestampMonotonic $s.socket </dev/null; done | tr '\n' ' '; }
svc_pids() { for s in $SERVICES; do x systemctl show -P MainPID $s.service </dev/null; done | tr '\n' ' '; }
before_ts=$(sock_ts); before_pids=$(svc_pids)
if out=$(x env DEBIAN_FRONTEND=noninteractive dpkg -i "$deb_in" </dev/null 2>&1); then
	for s in $SERVICES; do wait_active $s.service 30; done
	after_ts=$(sock_ts); after_pids=$(svc_pids)
	same=0; for p in $after_pids; do case " $before_pids " in *" $p "*) same=$((same + 1)) ;; esac; done
	if [ "$before_ts" = "$after_ts" ] && [ "$same" = 0 ]; then
		pass "upgrade (dpkg -i over the installed package): every service restarted, no socket restarted"
	else
		fail "upgrade: sockets kept: $([ "$before_ts" = "$after_ts" ] && echo yes || echo no), services not restarted: $same"
	fi
	if [ -n "$cpid" ]; then
		[ "$(ctask)" = "$cpid" ] && pass "upgrade: the container kept running (PID $cpid)" || fail "upgrade: container PID $cpid gone"
	fi
else
	fail "upgrade (dpkg -i over the installed package)"; printf '%s\n' "$out" | tail -10 | sed 's/^/     /'
fi

# --- reboot: everything comes back by itself --------------------------------------------------
if reboot_node >/tmp/stellar-install-test-up.log 2>&1; then
	down_units=""
	for s in $SERVICES; do wait_active $s.service 60 || down_units="$down_units $s.service"; done
	for s in $SOCKETS; do [ "$(x systemctl is-active $s.socket </dev/null)" = active ] || down_units="$down_units $s.socket"; done
	[ "$(x systemctl is-active stellar.target </dev/null)" = active ] || down_units="$down_units stellar.target"
	[ -z "$down_units" ] && pass "after a power cycle of the node: stellar.target, every service and socket active" \
		|| fail "after a power cycle, not active:$down_units"
else
	fail "power cycle of the node: $(tail -3 /tmp/stellar-install-test-up.log)"
fi

# --- remove and purge ------------------------------------------------------------------------------
if out=$(x env DEBIAN_FRONTEND=noninteractive apt-get remove -y stellar </dev/null 2>&1); then
	pass "apt-get remove stellar"
else
	fail "apt-get remove stellar"; printf '%s\n' "$out" | tail -10 | sed 's/^/     /'
fi
running=""
for u in $(for s in $SERVICES; do echo $s.service; done; for s in $SOCKETS; do echo $s.socket; done); do
	st=$(x systemctl is-active $u </dev/null)
	[ "$st" = active ] || [ "$st" = activating ] && running="$running $u"
done
[ -z "$running" ] && pass "after remove: every service and socket stopped" || fail "after remove, still running:$running"
listen=$(x ss -lnxtuH </dev/null 2>&1)
if printf '%s\n' "$listen" | grep -qE '/run/stellar/|:7947 |:80 |:443 |169\.254\.53\.53:53 '; then
	fail "after remove, something still listens: $(printf '%s\n' "$listen" | grep -E '/run/stellar/|:7947 |:80 |:443 |169\.254\.53\.53:53 ' | tr -s ' ' | head -3)"
else
	pass "after remove: nothing listens on Stellar's sockets and ports"
fi
x test -d /var/lib/stellar </dev/null && pass "after remove: /var/lib/stellar kept ($(x ls /var/lib/stellar </dev/null | tr '\n' ' '))" \
	|| fail "after remove: /var/lib/stellar is gone"
x test -f /etc/stellar/stellar.toml </dev/null && pass "after remove: /etc/stellar/stellar.toml kept (conffile)" || fail "after remove: conffile gone"

# --- reinstall after remove: enabled and started again -------------------------------------------
if out=$(x env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$deb_in" </dev/null 2>&1); then
	down_units=""
	for s in $SERVICES; do wait_active $s.service 30 || down_units="$down_units $s"; done
	[ -z "$down_units" ] && [ "$(x systemctl is-enabled stellar.target </dev/null)" = enabled ] \
		&& pass "reinstall after remove: stellar.target enabled, every service active again" \
		|| fail "reinstall after remove: not active:$down_units, target $(x systemctl is-enabled stellar.target </dev/null)"
else
	fail "reinstall after remove"; printf '%s\n' "$out" | tail -10 | sed 's/^/     /'
fi

# purge straight from the installed state (prerm remove, then postrm purge)
if out=$(x env DEBIAN_FRONTEND=noninteractive apt-get purge -y stellar </dev/null 2>&1); then
	pass "apt-get purge stellar"
else
	fail "apt-get purge stellar"; printf '%s\n' "$out" | tail -10 | sed 's/^/     /'
fi
x test -e /var/lib/stellar </dev/null && fail "after purge: /var/lib/stellar still there" || pass "after purge: /var/lib/stellar removed"
x test -e /etc/stellar </dev/null && fail "after purge: /etc/stellar still there" || pass "after purge: /etc/stellar removed"
st=$(x dpkg-query -W -f='${db:Status-Status}' stellar </dev/null 2>/dev/null)
[ "$st" = not-installed ] || [ -z "$st" ] && pass "after purge: dpkg knows no stellar" || fail "after purge: dpkg status $st"
left=""
x ip link show stellar0 </dev/null >/dev/null 2>&1 && left="$left bridge-stellar0"
x ip -4 addr show dev lo </dev/null | grep -q "inet $DNS/" && left="$left $DNS-on-lo"
x nft list tables </dev/null 2>/dev/null | grep -q stellar && left="$left nftables-table"
[ -n "$(x sh -c 'ls /etc/cni/net.d/ 2>/dev/null | grep -i stellar' </dev/null)" ] && left="$left cni-config"
if [ -z "$left" ]; then
	pass "after purge: stellar-netd cleanup left no bridge, DNS address, nftables table or CNI config${netd_made:+ (all were there before)}"
else
	fail "after purge, left behind:$left"
fi
x ls /etc/systemd/system/stellar.target.wants /etc/systemd/system/sockets.target.wants </dev/null 2>/dev/null | grep -q stellar \
	&& fail "after purge: enablement links left" || pass "after purge: no enablement links left"

finish
