package acme

import (
	"fmt"
	"testing"
)

func TestOwner_sameAnswerInAnyOrderAndFewMovesWhenANodeLeaves(t *testing.T) {
	nodes := []string{"n1", "n2", "n3", "n4", "n5"}
	reversed := []string{"n5", "n4", "n3", "n2", "n1"}
	moved, counts := 0, map[string]int{}
	for i := 0; i < 1000; i++ {
		host := fmt.Sprintf("h%d.example.com", i)
		o := Owner(host, nodes)
		if o != Owner(host, reversed) {
			t.Fatalf("owner of %s depends on the order of nodes", host)
		}
		counts[o]++
		// Without n5, only n5's hosts move.
		if o2 := Owner(host, nodes[:4]); o2 != o {
			moved++
			if o != "n5" {
				t.Fatalf("%s moved from %s to %s when n5 left", host, o, o2)
			}
		}
	}
	for _, n := range nodes {
		if counts[n] < 120 || counts[n] > 280 {
			t.Errorf("node %s owns %d of 1000 hosts, want about 200", n, counts[n])
		}
	}
	if moved != counts["n5"] {
		t.Errorf("moved %d, want %d", moved, counts["n5"])
	}
	if Owner("h", nil) != "" {
		t.Error("owner among no nodes")
	}
}
