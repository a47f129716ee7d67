# %post of the stellar package (RPM). $1: 1 = install, 2 = upgrade.
install -d -m 0755 /var/lib/stellar
/usr/lib/systemd/systemd-sysctl /usr/lib/sysctl.d/60-stellar.conf >/dev/null 2>&1 || :
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || :
fi
if [ "$1" -eq 1 ]; then
	# First install: enable stellar.target and, through its Also=, every
	# service and socket; start the node.
	systemctl enable stellar.target >/dev/null 2>&1 || :
	if [ -d /run/systemd/system ]; then
		systemctl start stellar.target >/dev/null 2>&1 || :
	fi
fi
exit 0
