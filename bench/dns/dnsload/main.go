// Command dnsload measures DNS latency percentiles (dnsperf 2.10 reports
// only the mean): it keeps a fixed number of queries outstanding over UDP,
// for a time, and prints the rate and the latency percentiles as
// "qps=... p50_ms=... p99_ms=... lost=...".
package main

import (
	"bufio"
	"encoding/binary"
	"flag"
	"fmt"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

func main() {
	server := flag.String("s", "127.0.0.1:53", "server host:port")
	data := flag.String("d", "", "query file: \"name TYPE\" per line (A, AAAA, TXT, SRV)")
	dur := flag.Duration("l", 5*time.Second, "how long to run")
	outstanding := flag.Int("q", 10, "queries outstanding (one socket each)")
	flag.Parse()
	queries, err := load(*data)
	if err != nil {
		fmt.Fprintln(os.Stderr, "dnsload:", err)
		os.Exit(2)
	}
	var mu sync.Mutex
	var lats []time.Duration
	lost := 0
	deadline := time.Now().Add(*dur)
	var wg sync.WaitGroup
	for w := 0; w < *outstanding; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			c, err := net.Dial("udp", *server)
			if err != nil {
				fmt.Fprintln(os.Stderr, "dnsload:", err)
				os.Exit(2)
			}
			defer c.Close()
			buf := make([]byte, 4096)
			qbuf := make([]byte, 0, 512)
			var mine []time.Duration
			myLost := 0
			for i := w; time.Now().Before(deadline); i += *outstanding {
				q := append(qbuf[:0], queries[i%len(queries)]...)
				id := uint16(i)
				binary.BigEndian.PutUint16(q, id)
				start := time.Now()
				if _, err := c.Write(q); err != nil {
					myLost++
					continue
				}
				_ = c.SetReadDeadline(start.Add(time.Second))
				for {
					n, err := c.Read(buf)
					if err != nil {
						myLost++
						break
					}
					if n >= 2 && binary.BigEndian.Uint16(buf) == id {
						mine = append(mine, time.Since(start))
						break
					}
				}
			}
			mu.Lock()
			lats = append(lats, mine...)
			lost += myLost
			mu.Unlock()
		}(w)
	}
	wg.Wait()
	sort.Slice(lats, func(i, j int) bool { return lats[i] < lats[j] })
	pct := func(p float64) float64 {
		if len(lats) == 0 {
			return 0
		}
		return float64(lats[int(p*float64(len(lats)-1))].Microseconds()) / 1000
	}
	fmt.Printf("qps=%.0f p50_ms=%.3f p99_ms=%.3f lost=%d\n", float64(len(lats))/dur.Seconds(), pct(0.50), pct(0.99), lost)
	// The distribution, for the report's CDF: 200 evenly spaced quantiles.
	qs := make([]string, 0, 200)
	for i := 0; i < 200 && len(lats) > 0; i++ {
		qs = append(qs, strconv.FormatFloat(pct(float64(i)/199), 'f', 3, 64))
	}
	fmt.Printf("cdf_ms=%s\n", strings.Join(qs, ","))
}

var types = map[string]uint16{"A": 1, "AAAA": 28, "TXT": 16, "SRV": 33, "MX": 15}

// load reads the query file and packs each query.
func load(path string) ([][]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out [][]byte
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) != 2 {
			continue
		}
		t, ok := types[strings.ToUpper(fs[1])]
		if !ok {
			return nil, fmt.Errorf("query type %q not supported", fs[1])
		}
		out = append(out, pack(fs[0], t))
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s has no queries", path)
	}
	return out, sc.Err()
}

func pack(name string, qtype uint16) []byte {
	b := make([]byte, 12, 64)
	binary.BigEndian.PutUint16(b[2:], 0x0100) // RD
	binary.BigEndian.PutUint16(b[4:], 1)
	for _, l := range strings.Split(strings.TrimSuffix(name, "."), ".") {
		b = append(b, byte(len(l)))
		b = append(b, l...)
	}
	b = append(b, 0, byte(qtype>>8), byte(qtype), 0, 1)
	return b
}
