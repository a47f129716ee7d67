package main

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestBinary_linksNoTemplates guards stellar-appd's idle RSS (README.md,
// Memory): text/template (through golang.org/x/net/trace, which grpc links
// unless built with -tags grpcnotrace, as `make build` does) calls
// reflect.Value.MethodByName with a name known only at run time, so the
// linker must keep every exported method of every type in the binary:
// 3.3 MB more of stellar-appd, all of it mapped at start.
func TestBinary_linksNoTemplates(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("go tool not found: SKIPPED: %v", err)
	}
	out, err := exec.Command(goBin, "list", "-deps", "-tags", "grpcnotrace", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v: %s", err, out)
	}
	deps := strings.Fields(string(out))
	for _, bad := range []string{"text/template", "html/template", "golang.org/x/net/trace"} {
		if slices.Contains(deps, bad) {
			t.Errorf("stellar-appd links %s with -tags grpcnotrace: find what imports it (go list -deps -f '{{.ImportPath}}: {{.Imports}}') and drop it; it adds megabytes of resident memory", bad)
		}
	}
}
