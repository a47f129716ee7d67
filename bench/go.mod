module stellar.dev/bench

go 1.26.0

replace stellar.dev/api => ../api
