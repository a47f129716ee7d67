# %pre of the stellar package (RPM): the group that may use
# /run/stellar/*.sock and the unprivileged user of gossip, dnsd and proxyd.
getent group stellar >/dev/null || groupadd -r stellar
getent passwd stellar >/dev/null || \
	useradd -r -g stellar -d /nonexistent -M -s /sbin/nologin -c "Stellar daemons" stellar
exit 0
