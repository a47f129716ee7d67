#!/bin/sh
# Checks Stellar's systemd units (run by `make test`):
#  1. `systemd-analyze verify` on every unit and the containerd drop-in, in a
#     throw-away root that holds the units, the binaries (from ./bin, or empty
#     placeholders when ./bin is not built) and Debian's own systemd units;
#  2. `systemd-analyze security --offline=true` on every service: exposure 2.0
#     or better, 5.0 or better for stellar-appd.service.
# Works without systemd as PID 1. Prints one line per unit, exits 1 on any
# violation.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
bindir=${BINDIR:-$repo/bin}

need() { # command package
	command -v "$1" >/dev/null 2>&1 && return 0
	echo "check.sh: installing $2 for $1"
	if [ -z "${APT_UPDATED:-}" ]; then apt-get -o DPkg::Lock::Timeout=600 update -qq >/dev/null; APT_UPDATED=1; fi
	DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq "$2" >/dev/null
}
need systemd-analyze systemd

fail=0 npass=0 nfail=0
tree=$(mktemp -d /tmp/stellar-units-check.XXXXXX)
trap 'rm -rf "$tree"' EXIT INT TERM

# --- the throw-away root ----------------------------------------------------
mkdir -p "$tree/lib/systemd/system" "$tree/etc/systemd/system" "$tree/usr/bin" "$tree/bin"
# Debian's own units (sysinit.target, sockets.target, multi-user.target, ...)
cp -a /lib/systemd/system/. "$tree/lib/systemd/system/"
cp -L /bin/sh "$tree/bin/sh"
if [ ! -e "$tree/lib/systemd/system/containerd.service" ]; then
	# containerd is not installed here: a placeholder with the same name, so
	# appd's ordering and the drop-in have something to attach to.
	printf '[Unit]\nDescription=containerd placeholder\n[Service]\nExecStart=/usr/bin/containerd\n' \
		>"$tree/lib/systemd/system/containerd.service"
fi
# containerd's binaries only need to exist for verify
for b in /usr/sbin/modprobe /usr/bin/containerd; do
	mkdir -p "$tree${b%/*}"; : >"$tree$b"; chmod 755 "$tree$b"
done
for b in stellar-gossip stellar-netd stellar-dnsd stellar-proxyd stellar-appd; do
	if [ -x "$bindir/$b" ]; then
		cp "$bindir/$b" "$tree/usr/bin/$b"
	else
		echo "note: $bindir/$b not built; verifying against an empty placeholder"
		: >"$tree/usr/bin/$b"; chmod 755 "$tree/usr/bin/$b"
	fi
done
units=$(cd "$here" && ls *.service *.socket *.target)
for u in $units; do cp "$here/$u" "$tree/lib/systemd/system/$u"; done
mkdir -p "$tree/lib/systemd/system/containerd.service.d"
cp "$here"/containerd.service.d/*.conf "$tree/lib/systemd/system/containerd.service.d/"

# --- 1. verify ---------------------------------------------------------------
# --man=no: the man pages are generated when packaging; packaging/check.sh
# verifies again with them in place.
for u in $units containerd.service; do
	out=$(systemd-analyze verify --man=no --root="$tree" "$tree/lib/systemd/system/$u" 2>&1) && rc=0 || rc=$?
	# Debian's own units may warn about themselves; only lines about a
	# Stellar unit (or the containerd drop-in) count.
	bad=$(printf '%s\n' "$out" | grep -E '(stellar|containerd)' || true)
	if [ "$rc" -ne 0 ] || [ -n "$bad" ]; then
		echo "FAIL verify   $u"
		printf '%s\n' "$out" | sed 's/^/    /'
		fail=1 nfail=$((nfail + 1))
	else
		echo "PASS verify   $u"; npass=$((npass + 1))
	fi
done

# --- 2. security ---------------------------------------------------------------
for u in $units; do
	case "$u" in
	*.service) ;;
	*) echo "n/a  security $u (not a service: nothing runs in it)"; continue ;;
	esac
	limit=2.0
	[ "$u" = stellar-appd.service ] && limit=5.0
	line=$(systemd-analyze security --offline=true --root="$tree" "$u" 2>&1 | grep 'Overall exposure level' || true)
	score=$(printf '%s\n' "$line" | sed -n 's/.*: \([0-9][0-9.]*\).*/\1/p')
	if [ -z "$score" ]; then
		echo "FAIL security $u: no score"; nfail=$((nfail + 1))
		systemd-analyze security --offline=true --root="$tree" "$u" 2>&1 | tail -5 | sed 's/^/    /'
		fail=1
	elif awk -v s="$score" -v l="$limit" 'BEGIN{exit !(s+0 <= l+0)}'; then
		echo "PASS security $u exposure $score (limit $limit)"; npass=$((npass + 1))
	else
		echo "FAIL security $u exposure $score (limit $limit)"; nfail=$((nfail + 1))
		fail=1
	fi
done

echo "$npass passed, $nfail failed"
[ "$fail" -eq 0 ]
