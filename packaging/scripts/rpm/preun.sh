# %preun of the stellar package (RPM). $1: 0 = erase, 1 = upgrade.
if [ "$1" -eq 0 ]; then
	# Erase: stop and disable every daemon and socket. Containers keep
	# running (they belong to containerd); /var/lib/stellar is kept.
	systemctl disable --now stellar.target >/dev/null 2>&1 || :
	if [ -d /run/systemd/system ]; then
		systemctl stop stellar-gossip.service stellar-netd.service stellar-dnsd.service \
			stellar-proxyd.service stellar-appd.service \
			stellar-gossip.socket stellar-gossip-peer.socket stellar-netd.socket \
			stellar-dnsd.socket stellar-dnsd-dns.socket stellar-proxyd.socket \
			stellar-proxyd-http.socket stellar-proxyd-https.socket stellar-appd.socket \
			>/dev/null 2>&1 || :
	fi
fi
exit 0
