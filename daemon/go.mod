module stellar.dev/daemon

go 1.26.0

require (
	github.com/BurntSushi/toml v1.6.0
	github.com/coreos/go-systemd/v22 v22.7.0
	golang.org/x/sys v0.48.0
	stellar.dev/api v0.0.0-00010101000000-000000000000
)

replace stellar.dev/api => ../api
