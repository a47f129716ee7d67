module stellar.dev/sctl

go 1.26.0

require stellar.dev/api v0.0.0-00010101000000-000000000000

require (
	github.com/inconshreveable/mousetrap v1.1.0 // indirect
	github.com/spf13/pflag v1.0.10 // indirect
)

replace stellar.dev/api => ../api

require (
	github.com/BurntSushi/toml v1.6.0
	github.com/spf13/cobra v1.10.2
	stellar.dev/daemon v0.0.0-00010101000000-000000000000
)

replace stellar.dev/daemon => ../daemon
