#!/bin/sh
# Builds dist/stellar_<version>_amd64.deb and dist/stellar-<version>.x86_64.rpm
# from the binaries in ./bin (`make build`), with nfpm (packaging/nfpm.yaml).
# Run from anywhere; `make packages` calls it. The version is ./VERSION.
#   BINDIR=DIR   take the binaries from DIR instead of ./bin
#   NFPM=CMD     nfpm command (default: go run of the pinned nfpm version)
#   DIST=DIR     write the packages to DIR instead of ./dist
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
cd "$repo"

# nfpm v2.45.2: the newest release whose dependencies all come from the Go
# module proxy (v2.46.0 and later need go.digitalxero.dev modules).
NFPM_VERSION=v2.45.2
NFPM=${NFPM:-go run github.com/goreleaser/nfpm/v2/cmd/nfpm@$NFPM_VERSION}
bindir=${BINDIR:-$repo/bin}
version=$(tr -d ' \n' <VERSION)
[ -n "$version" ] || { echo "build.sh: VERSION is empty" >&2; exit 1; }

bins="stellar-gossip stellar-netd stellar-dnsd stellar-proxyd stellar-appd stellar-cni-ipam sctl"
for b in $bins; do
	[ -x "$bindir/$b" ] || { echo "build.sh: $bindir/$b missing: run 'make build' first" >&2; exit 1; }
done

need() { # command package
	command -v "$1" >/dev/null 2>&1 && return 0
	echo "build.sh: installing $2"
	if [ -z "${APT_UPDATED:-}" ]; then apt-get -o DPkg::Lock::Timeout=600 update -qq >/dev/null; APT_UPDATED=1; fi
	DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq "$2" >/dev/null
}
need help2man help2man
need strip binutils
need gzip gzip

dist=${DIST:-$repo/dist}
stage=$repo/dist/stage
rm -rf "$stage"
mkdir -p "$stage/bin" "$stage/man/man1" "$stage/man/man5" "$stage/man/man8" "$stage/doc"

# --- binaries (stripped copies; ./bin stays as built) --------------------------
dynamic=""
for b in $bins; do
	cp "$bindir/$b" "$stage/bin/$b"
	strip --strip-unneeded "$stage/bin/$b" 2>/dev/null || true
	chmod 0755 "$stage/bin/$b"
	if readelf -l "$stage/bin/$b" 2>/dev/null | grep -q 'Requesting program interpreter'; then
		dynamic=yes
	fi
done
# cgo builds link glibc dynamically: depend on it then (static builds need nothing).
if [ -n "$dynamic" ]; then
	STELLAR_DEB_LIBC="libc6"
else
	STELLAR_DEB_LIBC=""
fi

# --- manual pages ---------------------------------------------------------------
date_s=$(git log -1 --format=%cd --date=format:'%B %Y' 2>/dev/null || date -u +'%B %Y')
manpage() { # binary section description
	b=$1 s=$2 d=$3 out="$stage/man/man$2/$1.$2"
	help=$(timeout 10 "$stage/bin/$b" --help 2>&1 </dev/null || true)
	if [ "$(printf '%s\n' "$help" | head -1)" = NAME ]; then
		# Stellar's --help is laid out as a manual page already.
		printf '%s\n' "$help" | awk -v title="$b" -v section="$s" -v date="$date_s" \
			-v source="Stellar $version" -v manual="Stellar" -f "$here/help2roff.awk" >"$out"
	elif ! timeout 30 help2man --no-info --section="$s" --version-option=version \
		--no-discard-stderr --name="$d" --source="Stellar $version" \
		--manual="Stellar" --output="$out" "$stage/bin/$b" >/dev/null 2>&1 \
		|| [ ! -s "$out" ]; then
		# No usable --help yet: a short page of our own.
		cat >"$out" <<EOF
.TH $(echo "$b" | tr '[:lower:]' '[:upper:]') $s "$date_s" "Stellar $version" "Stellar"
.SH NAME
$b \\- $d
.SH SYNOPSIS
.B $b
.RB [ \\-\\-config
.IR PATH ]
.br
.B $b
.RB ( version | config | \\-\\-help )
.SH DESCRIPTION
.B $b
is part of Stellar. Its configuration is
.IR /etc/stellar/stellar.toml ,
see
.BR stellar.toml (5).
.SH SEE ALSO
.BR stellar.toml (5),
.BR systemctl (1),
.BR journalctl (1)
EOF
	fi
	# help2man names the program after the staged path: keep only its name.
	sed -i "s#$stage/bin/##g" "$out"
	gzip -9n "$out"
}
manpage stellar-gossip 8 "Stellar membership and replicated cluster state daemon"
manpage stellar-netd 8 "Stellar node network daemon (subnet, bridge, routes, IPAM)"
manpage stellar-dnsd 8 "Stellar cluster DNS daemon"
manpage stellar-proxyd 8 "Stellar HTTP and HTTPS ingress proxy daemon"
manpage stellar-appd 8 "Stellar application daemon (placement, containers)"
manpage stellar-cni-ipam 8 "Stellar CNI IPAM plugin"
manpage sctl 1 "Stellar cluster control"

# stellar.toml(5): the documented default configuration itself.
{
	cat <<EOF
.TH STELLAR.TOML 5 "$date_s" "Stellar $version" "Stellar"
.SH NAME
stellar.toml \\- configuration of a Stellar node
.SH DESCRIPTION
Every Stellar daemon reads
.IR /etc/stellar/stellar.toml
(or the file named by
.B \\-\\-config
or
.BR STELLAR_CONFIG ).
Every key has a default; the file as shipped lists every key, commented out,
with its default and meaning:
.PP
.nf
EOF
	sed -e 's/\\/\\e/g' -e 's/^\./\\\&./' -e "s/^'/\\\\\&'/" "$here/files/stellar.toml"
	cat <<EOF
.fi
.SH FILES
.I /etc/stellar/stellar.toml
.SH SEE ALSO
.BR stellar-gossip (8),
.BR stellar-netd (8),
.BR stellar-dnsd (8),
.BR stellar-proxyd (8),
.BR stellar-appd (8),
.BR sctl (1)
EOF
} >"$stage/man/man5/stellar.toml.5"
gzip -9n "$stage/man/man5/stellar.toml.5"

# --- documentation ----------------------------------------------------------------
if [ -f "$repo/LICENSE" ]; then
	{ echo "Stellar: a masterless container cluster node."; echo; cat "$repo/LICENSE"; } >"$stage/doc/copyright"
else
	cp "$here/files/copyright" "$stage/doc/copyright"
fi
{
	echo "stellar ($version) unstable; urgency=medium"
	echo
	echo "  * Release $version."
	echo
	echo " -- Stellar developers <dev@stellar.dev>  $(git log -1 --format=%cD 2>/dev/null || date -uR)"
} | gzip -9n >"$stage/doc/changelog.gz"

# --- packages ----------------------------------------------------------------------
mkdir -p "$dist"
deb=$dist/stellar_${version}_amd64.deb
rpm=$dist/stellar-${version}.x86_64.rpm
rm -f "$deb" "$rpm"
export STELLAR_VERSION="$version" STELLAR_DEB_LIBC
$NFPM package --config packaging/nfpm.yaml --packager deb --target "$deb"
$NFPM package --config packaging/nfpm.yaml --packager rpm --target "$rpm"
ls -l "$deb" "$rpm"
