module stellar.dev/testimages

go 1.26.0
