#!/bin/sh
# Checks the packages built by packaging/build.sh (run by `make test` after
# `make packages`): lintian on the .deb (no errors), the .deb's control data,
# the .rpm with rpm -qpi / -qpl / --scripts / --requires, the default config,
# and `systemd-analyze verify` of the units as the .deb installs them (with
# its man pages and binaries in place). Prints PASS/FAIL per check.
#   DIST=DIR   where the packages are (default ./dist)
set -u

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
cd "$repo"
version=$(tr -d ' \n' <VERSION)
dist=${DIST:-$repo/dist}
deb=$dist/stellar_${version}_amd64.deb
rpm=$dist/stellar-${version}.x86_64.rpm

need() { # command package
	command -v "$1" >/dev/null 2>&1 && return 0
	echo "check.sh: installing $2"
	if [ -z "${APT_UPDATED:-}" ]; then apt-get -o DPkg::Lock::Timeout=600 update -qq >/dev/null; APT_UPDATED=1; fi
	DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq "$2" >/dev/null
}
need lintian lintian
need rpm rpm
need systemd-analyze systemd
need man man-db

passed=0 failed=0
pass() { echo "PASS $*"; passed=$((passed + 1)); }
fail() { echo "FAIL $*"; failed=$((failed + 1)); }
has() { # text pattern -> 0 if a line of text matches the extended regexp
	printf '%s\n' "$1" | grep -qE -- "$2"
}

for f in "$deb" "$rpm"; do
	[ -f "$f" ] || { echo "check.sh: $f missing: run 'make packages' first"; exit 1; }
done

# --- .deb ----------------------------------------------------------------------------------
out=$(lintian --tag-display-limit 0 "$deb" 2>&1 | grep -v '^running with root privileges')
errs=$(printf '%s\n' "$out" | grep -c '^E:')
warns=$(printf '%s\n' "$out" | grep -c '^W:')
if [ "$errs" -eq 0 ]; then
	pass "lintian $(basename "$deb"): 0 errors, $warns warnings"
else
	fail "lintian $(basename "$deb"): $errs errors"
fi
[ -n "$out" ] && printf '%s\n' "$out" | sed 's/^/     /'

ctl=$(dpkg-deb -f "$deb")
for dep in containerd runc containernetworking-plugins; do
	has "$(dpkg-deb -f "$deb" Depends)" "(^|, )$dep(,| |$)" && pass "deb depends on $dep" || fail "deb does not depend on $dep"
done
[ "$(dpkg-deb -f "$deb" Version)" = "$version" ] && pass "deb version $version" || fail "deb version $(dpkg-deb -f "$deb" Version)"
[ "$(dpkg-deb -f "$deb" Architecture)" = amd64 ] && pass "deb architecture amd64" || fail "deb architecture"
conf=$(dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles 2>/dev/null)
has "$conf" '^/etc/stellar/stellar.toml$' && pass "deb conffile /etc/stellar/stellar.toml" || fail "deb conffiles: $conf"
for s in postinst prerm postrm; do
	dpkg-deb --ctrl-tarfile "$deb" | tar -t | grep -qx "./$s" && pass "deb has $s" || fail "deb lacks $s"
done

tree=$(mktemp -d /tmp/stellar-pkg-check.XXXXXX)
trap 'rm -rf "$tree"' EXIT INT TERM
dpkg-deb -x "$deb" "$tree"
deb_files="usr/bin/stellar-gossip usr/bin/stellar-netd usr/bin/stellar-dnsd usr/bin/stellar-proxyd usr/bin/stellar-appd usr/bin/sctl
usr/lib/cni/stellar-cni-ipam opt/cni/bin/stellar-cni-ipam etc/stellar/stellar.toml usr/lib/sysctl.d/60-stellar.conf
lib/systemd/system/stellar.target lib/systemd/system/containerd.service.d/50-stellar-journal.conf
usr/share/doc/stellar/copyright usr/share/doc/stellar/changelog.gz usr/share/man/man5/stellar.toml.5.gz usr/share/man/man1/sctl.1.gz"
for d in gossip netd dnsd proxyd appd; do
	deb_files="$deb_files lib/systemd/system/stellar-$d.service lib/systemd/system/stellar-$d.socket usr/share/man/man8/stellar-$d.8.gz"
done
deb_files="$deb_files lib/systemd/system/stellar-gossip-peer.socket lib/systemd/system/stellar-dnsd-dns.socket
lib/systemd/system/stellar-proxyd-http.socket lib/systemd/system/stellar-proxyd-https.socket"
missing=""
for f in $deb_files; do [ -e "$tree/$f" ] || [ -L "$tree/$f" ] || missing="$missing /$f"; done
[ -z "$missing" ] && pass "deb contents: $(echo $deb_files | wc -w) expected files" || fail "deb lacks:$missing"
[ "$(readlink "$tree/opt/cni/bin/stellar-cni-ipam")" = /usr/lib/cni/stellar-cni-ipam ] \
	&& pass "deb /opt/cni/bin/stellar-cni-ipam -> /usr/lib/cni/stellar-cni-ipam" || fail "deb /opt/cni/bin/stellar-cni-ipam link"
grep -qx 'net.ipv4.ip_forward = 1' "$tree/usr/lib/sysctl.d/60-stellar.conf" && pass "sysctl.d: net.ipv4.ip_forward = 1" || fail "sysctl.d file"

# the default config: every key commented out, every documented key present
cfg=$tree/etc/stellar/stellar.toml
active=$(grep -vE '^[[:space:]]*(#|$)' "$cfg" | grep -vE '^\[(node|gossip|network|dns|proxy|apps)\]$')
[ -z "$active" ] && pass "stellar.toml: only section headers are active, every key commented out" || fail "stellar.toml: active lines: $active"
missing=""
for k in node.name node.labels node.advertise node.run_dir node.state_dir node.metrics node.log_level \
	gossip.bind gossip.peer_api gossip.peers gossip.profile \
	network.subnet network.node_prefix network.bridge network.dns_address network.cni_conf_dir network.cni_bin_dirs \
	dns.domain dns.listen dns.upstream dns.upstream_resolv_conf dns.ttl \
	proxy.http proxy.https proxy.acme_directory proxy.acme_email proxy.health_interval \
	apps.containerd apps.namespace apps.snapshotter apps.runtime apps.reschedule_after; do
	sec=${k%%.*} key=${k#*.}
	awk -v s="[$sec]" -v k="$key" '$0==s{ins=1;next} /^\[/{ins=0} ins && index($0, "#" k " = ")==1{f=1} END{exit !f}' "$cfg" || missing="$missing $k"
done
[ -z "$missing" ] && pass "stellar.toml: all 32 keys documented in their sections" || fail "stellar.toml lacks:$missing"
# uncommented, the file must still be valid TOML with the right defaults (python's tomllib)
if command -v python3 >/dev/null 2>&1; then
	if py=$(sed -E 's/^#([a-z_]+ = )/\1/' "$cfg" | python3 -c '
import sys, tomllib
c = tomllib.loads(sys.stdin.read())
assert c["network"]["node_prefix"] == 22 and c["dns"]["listen"] == ["169.254.53.53:53"], c
assert c["network"]["cni_bin_dirs"] == ["/usr/lib/cni", "/opt/cni/bin"]
print(sum(len(v) for v in c.values()), "keys")' 2>&1); then
		pass "stellar.toml uncommented parses as TOML: $py"
	else
		fail "stellar.toml uncommented does not parse: $py"
	fi
fi

# units as installed by the .deb, with its man pages (systemd-analyze runs man)
mkdir -p "$tree/etc/systemd/system" "$tree/bin"
cp -a /lib/systemd/system/. "$tree/lib/systemd/system.tmp" 2>/dev/null
for f in "$tree"/lib/systemd/system.tmp/*; do
	b=$(basename "$f"); [ -e "$tree/lib/systemd/system/$b" ] || mv "$f" "$tree/lib/systemd/system/$b"
done
rm -rf "$tree/lib/systemd/system.tmp"
cp -L /bin/sh "$tree/bin/sh"
if [ ! -e "$tree/lib/systemd/system/containerd.service" ]; then
	printf '[Unit]\nDescription=containerd placeholder\n[Service]\nExecStart=/usr/bin/containerd\n' >"$tree/lib/systemd/system/containerd.service"
fi
for b in /usr/sbin/modprobe /usr/bin/containerd; do mkdir -p "$tree${b%/*}"; : >"$tree$b"; chmod 755 "$tree$b"; done
units=$(cd "$tree/lib/systemd/system" && ls stellar*)
vout=$(cd "$tree/lib/systemd/system" && MANPATH="$tree/usr/share/man:$(manpath 2>/dev/null)" \
	systemd-analyze verify --root="$tree" $units containerd.service 2>&1)
vbad=$(printf '%s\n' "$vout" | grep -E 'stellar|containerd')
[ -z "$vbad" ] && pass "systemd-analyze verify of the installed units, man pages included ($(echo $units | wc -w) units)" \
	|| { fail "systemd-analyze verify of the installed units"; printf '%s\n' "$vbad" | sed 's/^/     /'; }
for m in "$tree"/usr/share/man/man*/*.gz; do
	w=$(LC_ALL=C.UTF-8 MANROFFSEQ='' MANWIDTH=80 man --warnings -E UTF-8 -l -Tutf8 -Z "$m" 2>&1 >/dev/null)
	[ -z "$w" ] || { fail "man page $(basename "$m"): $w"; continue; }
done
pass "man pages render: $(ls "$tree"/usr/share/man/man*/*.gz | wc -l) pages"

# --- .rpm ----------------------------------------------------------------------------------
qi=$(rpm -qpi "$rpm" 2>/dev/null)
has "$qi" "^Name +: stellar$" && pass "rpm -qpi: Name stellar" || fail "rpm -qpi Name"
has "$qi" "^Version +: $version$" && pass "rpm -qpi: Version $version" || fail "rpm -qpi Version"
has "$qi" "^Architecture: x86_64$" && pass "rpm -qpi: Architecture x86_64" || fail "rpm -qpi Architecture"
has "$qi" "^Summary +: .+" && pass "rpm -qpi: Summary present" || fail "rpm -qpi Summary"
ql=$(rpm -qpl "$rpm" 2>/dev/null)
missing=""
for f in /usr/bin/stellar-gossip /usr/bin/stellar-netd /usr/bin/stellar-dnsd /usr/bin/stellar-proxyd /usr/bin/stellar-appd /usr/bin/sctl \
	/usr/lib/cni/stellar-cni-ipam /opt/cni/bin/stellar-cni-ipam /etc/stellar/stellar.toml /usr/lib/sysctl.d/60-stellar.conf \
	/usr/lib/systemd/system/stellar.target /usr/lib/systemd/system/containerd.service.d/50-stellar-journal.conf \
	/usr/lib/systemd/system/stellar-dnsd-dns.socket /usr/lib/systemd/system/stellar-gossip-peer.socket \
	/usr/lib/systemd/system/stellar-proxyd-http.socket /usr/lib/systemd/system/stellar-proxyd-https.socket \
	/usr/share/man/man8/stellar-netd.8.gz /usr/share/man/man5/stellar.toml.5.gz; do
	has "$ql" "^$f$" || missing="$missing $f"
done
for d in gossip netd dnsd proxyd appd; do
	has "$ql" "^/usr/lib/systemd/system/stellar-$d.service$" || missing="$missing stellar-$d.service"
	has "$ql" "^/usr/lib/systemd/system/stellar-$d.socket$" || missing="$missing stellar-$d.socket"
done
[ -z "$missing" ] && pass "rpm -qpl: $(printf '%s\n' "$ql" | wc -l) files, all expected present" || fail "rpm -qpl lacks:$missing"
has "$(rpm -qp --configfiles "$rpm" 2>/dev/null)" '^/etc/stellar/stellar.toml$' && pass "rpm config file /etc/stellar/stellar.toml" || fail "rpm config file"
rq=$(rpm -qp --requires "$rpm" 2>/dev/null)
for dep in containerd runc containernetworking-plugins; do
	has "$rq" "^$dep( |$)" && pass "rpm requires $dep" || fail "rpm does not require $dep"
done
sc=$(rpm -qp --scripts "$rpm" 2>/dev/null)
has "$sc" '^preinstall scriptlet' && has "$sc" 'groupadd -r stellar' && pass "rpm %pre creates the stellar group" || fail "rpm %pre group"
has "$sc" '^postinstall scriptlet' && has "$sc" 'systemctl daemon-reload' && has "$sc" 'systemctl enable stellar.target' \
	&& has "$sc" 'systemctl start stellar.target' && pass "rpm %post: daemon-reload, enable and start stellar.target" || fail "rpm %post"
has "$sc" '^preuninstall scriptlet' && has "$sc" 'disable --now stellar.target' && pass "rpm %preun: stop and disable on erase" || fail "rpm %preun"
has "$sc" '^postuninstall scriptlet' && has "$sc" 'try-restart stellar-gossip.service' && ! printf '%s\n' "$sc" | grep 'try-restart' | grep -q '\.socket' \
	&& pass "rpm %postun: try-restart of the services (never the sockets) on upgrade" || fail "rpm %postun"
if printf '%s\n' "$sc" | awk '/scriptlet \(using/{if(f)close(f); n++; f="'"$tree"'/s" n ".sh"; next} {print > f}' && \
	for f in "$tree"/s*.sh; do sh -n "$f" || exit 1; done; then
	pass "rpm scriptlets parse with sh -n"
else
	fail "rpm scriptlets: syntax error"
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
