# %postun of the stellar package (RPM). $1: 0 = erased, 1 = upgraded.
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || :
fi
if [ "$1" -ge 1 ]; then
	# Upgrade: restart the running daemons with the new binaries; never the
	# sockets, which keep and queue connections meanwhile.
	if [ -d /run/systemd/system ]; then
		systemctl try-restart stellar-gossip.service stellar-netd.service stellar-dnsd.service \
			stellar-proxyd.service stellar-appd.service >/dev/null 2>&1 || :
	fi
fi
# RPM has no purge: /var/lib/stellar stays after an erase. To wipe a node
# completely, run `stellar-netd cleanup` before erasing the package, then
# `rm -rf /var/lib/stellar`.
exit 0
