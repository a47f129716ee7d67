package netapi

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDeps_apiIsStdlibOnly guards the api module: it imports only the
// standard library (the CNI plugin links it and must stay tiny).
func TestDeps_apiIsStdlibOnly(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", "stellar.dev/api/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v: %s", err, out)
	}
	for _, p := range strings.Fields(string(out)) {
		if p == "stellar.dev/api" || strings.HasPrefix(p, "stellar.dev/api/") {
			continue
		}
		t.Errorf("the api module links %s: it may import only the standard library", p)
	}
}
