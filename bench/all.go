// Package bench lists Stellar's side-by-side benchmarks; `make bench` runs
// them all (cmd/stellar-bench) and writes RESULTS.md.
package bench

import (
	"stellar.dev/bench/apps"
	"stellar.dev/bench/dns"
	"stellar.dev/bench/footprint"
	"stellar.dev/bench/gossip"
	"stellar.dev/bench/harness"
	"stellar.dev/bench/netd"
	"stellar.dev/bench/proxy"
)

// All returns every benchmark, in report order.
func All() []harness.Benchmark {
	return []harness.Benchmark{
		footprint.Benchmark,
		netd.Benchmark,
		netd.DataPath,
		proxy.Benchmark,
		dns.Benchmark,
		gossip.Benchmark,
		apps.Benchmark,
	}
}
