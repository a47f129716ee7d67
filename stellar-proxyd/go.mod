module stellar.dev/stellar-proxyd

go 1.26.0

require stellar.dev/api v0.0.0-00010101000000-000000000000

replace stellar.dev/api => ../api

require (
	golang.org/x/crypto v0.57.0
	golang.org/x/net v0.59.0
	stellar.dev/daemon v0.0.0-00010101000000-000000000000
)

require (
	github.com/BurntSushi/toml v1.6.0 // indirect
	github.com/coreos/go-systemd/v22 v22.7.0 // indirect
	golang.org/x/sys v0.48.0 // indirect
	golang.org/x/text v0.42.0 // indirect
)

replace stellar.dev/daemon => ../daemon
