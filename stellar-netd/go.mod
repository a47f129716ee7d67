module stellar.dev/stellar-netd

go 1.26.0

require stellar.dev/api v0.0.0-00010101000000-000000000000

replace stellar.dev/api => ../api

require stellar.dev/daemon v0.0.0-00010101000000-000000000000

replace stellar.dev/daemon => ../daemon
