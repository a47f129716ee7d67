package main

import (
	"bytes"
	"encoding/json"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"stellar.dev/api/netapi"
)

// depsAllowed reports whether package p (not from the standard library)
// may be linked into the plugin.
func depsAllowed(p string) bool {
	return p == "stellar.dev/stellar-cni-ipam" ||
		p == "stellar.dev/api" || strings.HasPrefix(p, "stellar.dev/api/") ||
		strings.HasPrefix(p, "github.com/containernetworking/cni/")
}

// TestDeps_onlyStdlibCNIAndAPI guards the plugin's imports: the standard
// library, CNI and stellar.dev/api, and nothing else (packages that CNI's
// own packages pull in are CNI's business, but none of ours may import them).
func TestDeps_onlyStdlibCNIAndAPI(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}|{{.Standard}}|{{join .Imports \",\"}}", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v: %s", err, out)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		parts := strings.SplitN(line, "|", 3)
		path, std, imports := parts[0], parts[1] == "true", parts[2]
		ours := path == "stellar.dev/stellar-cni-ipam" || strings.HasPrefix(path, "stellar.dev/")
		if std || !ours {
			continue
		}
		// One of ours: every import must be stdlib, CNI or api.
		for _, imp := range strings.Split(imports, ",") {
			if imp == "" || !strings.Contains(strings.SplitN(imp, "/", 2)[0], ".") {
				continue
			}
			if !depsAllowed(imp) {
				t.Errorf("%s imports %s: the plugin may import only the standard library, CNI and stellar.dev/api", path, imp)
			}
		}
	}
	// And the whole set: nothing beyond the standard library, CNI, api and
	// the two small modules CNI's skel needs itself.
	out, err = exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v: %s", err, out)
	}
	for _, p := range strings.Fields(string(out)) {
		if depsAllowed(p) || strings.HasPrefix(p, "golang.org/x/sys/") || strings.HasPrefix(p, "github.com/vishvananda/netns") {
			continue
		}
		t.Errorf("stellar-cni-ipam links %s: only the standard library, CNI and stellar.dev/api are allowed", p)
	}
}

// TestDeps_noHTTPStack: the plugin is exec'd at every container start and
// pays for what it links; net/http (with crypto/tls) doubled its size and
// its start-up (README, IPAM performance in stellar-netd's).
func TestDeps_noHTTPStack(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v: %s", err, out)
	}
	for _, p := range strings.Fields(string(out)) {
		switch p {
		case "net/http", "crypto/tls", "stellar.dev/api/client", "stellar.dev/api/errdefs", "stellar.dev/api/netapi":
			t.Errorf("stellar-cni-ipam links %s: it must call netd with its own small HTTP/1.1 request", p)
		}
	}
}

// build compiles the plugin into a temp dir.
func build(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "stellar-cni-ipam")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v: %s", err, out)
	}
	return bin
}

func runPlugin(t *testing.T, bin, cmd, conf string) ([]byte, error) {
	t.Helper()
	c := exec.Command(bin)
	c.Env = []string{"CNI_COMMAND=" + cmd, "CNI_CONTAINERID=ctr1", "CNI_NETNS=/nonexistent/netns", "CNI_IFNAME=eth0", "CNI_PATH=/nonexistent"}
	c.Stdin = strings.NewReader(conf)
	var out bytes.Buffer
	c.Stdout = &out
	err := c.Run()
	return out.Bytes(), err
}

func TestPlugin_netdDownFailsFastWithCNIError(t *testing.T) {
	bin := build(t)
	sock := filepath.Join(t.TempDir(), "netd.sock")
	conf := `{"cniVersion":"1.0.0","name":"stellar","type":"bridge","ipam":{"type":"stellar-cni-ipam","socket":"` + sock + `"}}`
	for _, cmd := range []string{"ADD", "DEL", "CHECK"} {
		t.Run(cmd, func(t *testing.T) {
			start := time.Now()
			out, err := runPlugin(t, bin, cmd, conf)
			if err == nil {
				t.Fatalf("%s succeeded with netd down: %s", cmd, out)
			}
			if time.Since(start) > 5*time.Second+2*time.Second {
				t.Fatalf("%s took %s with netd down", cmd, time.Since(start))
			}
			var e struct {
				Code uint   `json:"code"`
				Msg  string `json:"msg"`
			}
			if json.Unmarshal(out, &e) != nil || e.Code == 0 || !strings.Contains(string(out), "stellar-netd") {
				t.Fatalf("not a CNI error naming stellar-netd: %s", out)
			}
		})
	}
}

// fakeNetd answers allocate/release/check like netd would.
func fakeNetd(t *testing.T) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "netd.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	alloc := netapi.Allocation{ContainerID: "ctr1", IfName: "eth0", Address: "172.16.4.7/22", Gateway: "172.16.4.1", Subnet: "172.16.4.0/22", DNS: "169.254.53.53"}
	mux.HandleFunc("POST /v1/ipam/allocate", func(w http.ResponseWriter, r *http.Request) { json.NewEncoder(w).Encode(alloc) })
	mux.HandleFunc("POST /v1/ipam/check", func(w http.ResponseWriter, r *http.Request) { json.NewEncoder(w).Encode(alloc) })
	mux.HandleFunc("POST /v1/ipam/release", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(`{"released":[]}`)) })
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return sock
}

func TestPlugin_addResultPerVersion(t *testing.T) {
	bin := build(t)
	sock := fakeNetd(t)
	for _, v := range []string{"0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
		t.Run(v, func(t *testing.T) {
			conf := `{"cniVersion":"` + v + `","name":"stellar","type":"bridge","ipam":{"type":"stellar-cni-ipam","socket":"` + sock + `"}}`
			out, err := runPlugin(t, bin, "ADD", conf)
			if err != nil {
				t.Fatalf("ADD: %v: %s", err, out)
			}
			var compact bytes.Buffer
			if err := json.Compact(&compact, out); err != nil {
				t.Fatalf("result is not JSON: %s", out)
			}
			for _, want := range []string{`"cniVersion":"` + v + `"`, `"address":"172.16.4.7/22"`, `"gateway":"172.16.4.1"`, `"169.254.53.53"`, `"dst":"0.0.0.0/0"`} {
				if !strings.Contains(compact.String(), want) {
					t.Fatalf("result lacks %s: %s", want, out)
				}
			}
		})
	}
}

func TestParseConf_rejectsBadInput(t *testing.T) {
	for _, tc := range []struct{ name, conf string }{
		{"not json", `{`},
		{"relative socket", `{"cniVersion":"1.0.0","ipam":{"socket":"netd.sock"}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := parseConf([]byte(tc.conf)); err == nil {
				t.Fatal("accepted")
			}
		})
	}
	c, err := parseConf([]byte(`{"cniVersion":"1.0.0","ipam":{"type":"stellar-cni-ipam"}}`))
	if err != nil || c.IPAM.Socket != DefaultSocket {
		t.Fatalf("default socket: %+v %v", c, err)
	}
}

func FuzzParseConf(f *testing.F) {
	f.Add([]byte(`{"cniVersion":"1.0.0","ipam":{"socket":"/run/stellar/netd.sock"}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := parseConf(data)
		if err == nil && !strings.HasPrefix(c.IPAM.Socket, "/") {
			t.Fatalf("accepted socket %q", c.IPAM.Socket)
		}
	})
}
