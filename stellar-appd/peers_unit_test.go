package main

import (
	"context"
	"reflect"
	"testing"

	"stellar.dev/api/appapi"
	"stellar.dev/api/gossipapi"
)

// TestPeers_holdersOrder: alive peers that publish the image come first,
// then every other alive or suspect peer; this node and failed or left
// members are never asked.
func TestPeers_holdersOrder(t *testing.T) {
	st := newFakeStore("n1", "n2", "n3", "n4", "n5", "n6")
	st.setStatus("n4", gossipapi.StatusFailed)
	st.setStatus("n5", gossipapi.StatusLeft)
	st.setStatus("n6", gossipapi.StatusSuspect)
	ctx := context.Background()
	has := appapi.NodeImages{Images: []appapi.ImageRef{{Name: "stellar.test/busybox:latest", Digest: "sha256:x"}}}
	for _, n := range []string{"n3", "n4"} {
		if _, err := st.Put(ctx, appapi.ImagesKey(n), has, ""); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name, ref string
		want      []holder
	}{
		{"publishedFirst", "stellar.test/busybox:latest", []holder{{"n3", "sha256:x"}, {node: "n2"}, {node: "n6"}}},
		{"nobodyPublishes", "stellar.test/httpd:latest", []holder{{node: "n2"}, {node: "n3"}, {node: "n6"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &peers{node: "n1", st: st}
			got, err := p.holders(ctx, tc.ref)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("holders = %v, want %v", got, tc.want)
			}
		})
	}
}
