module stellar.dev/bench

go 1.26.0

replace stellar.dev/api => ../api

require stellar.dev/testimages v0.0.0-00010101000000-000000000000

replace stellar.dev/testimages => ../testimages
