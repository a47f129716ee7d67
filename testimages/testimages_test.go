package testimages_test

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"stellar.dev/testimages"
)

// readArchive returns the files of an image archive by name.
func readArchive(t *testing.T, path string) map[string][]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	files := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files
		}
		if err != nil {
			t.Fatalf("read %s: %v", path, err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		files[h.Name] = b
	}
}

func buildImages(t *testing.T) (busybox, httpd string) {
	t.Helper()
	if _, err := os.Stat("/bin/busybox"); err != nil {
		t.Skip("SKIP: /bin/busybox missing: apt-get install busybox-static")
	}
	bb, hd, err := testimages.Build(context.Background(), t.TempDir(), testimages.Options{})
	if err != nil {
		t.Fatalf("build: %v", err)
	}
	return bb, hd
}

func TestArchiveLayout(t *testing.T) {
	busybox, httpd := buildImages(t)
	tests := []struct {
		path, ref, mustHave string
	}{
		{busybox, testimages.BusyboxRef, "bin/sh"},
		{busybox, testimages.BusyboxRef, "bin/nslookup"},
		{httpd, testimages.HTTPDRef, "httpd"},
	}
	for _, tt := range tests {
		t.Run(filepath.Base(tt.path)+"/"+tt.mustHave, func(t *testing.T) {
			files := readArchive(t, tt.path)
			if string(files["oci-layout"]) != `{"imageLayoutVersion":"1.0.0"}` {
				t.Errorf("oci-layout = %q", files["oci-layout"])
			}
			for name, b := range files {
				hexd, ok := strings.CutPrefix(name, "blobs/sha256/")
				if !ok || hexd == "" {
					continue
				}
				sum := sha256.Sum256(b)
				if hex.EncodeToString(sum[:]) != hexd {
					t.Errorf("blob %s has digest %x", name, sum)
				}
			}
			var index struct {
				Manifests []struct {
					Digest      string            `json:"digest"`
					Annotations map[string]string `json:"annotations"`
				} `json:"manifests"`
			}
			if err := json.Unmarshal(files["index.json"], &index); err != nil {
				t.Fatalf("index.json: %v", err)
			}
			if len(index.Manifests) != 1 || index.Manifests[0].Annotations["io.containerd.image.name"] != tt.ref {
				t.Fatalf("index.json = %s, want one manifest named %s", files["index.json"], tt.ref)
			}
			var manifest struct {
				Layers []struct{ Digest string } `json:"layers"`
			}
			if err := json.Unmarshal(files["blobs/sha256/"+strings.TrimPrefix(index.Manifests[0].Digest, "sha256:")], &manifest); err != nil {
				t.Fatalf("manifest: %v", err)
			}
			if len(manifest.Layers) != 1 {
				t.Fatalf("manifest has %d layers, want 1", len(manifest.Layers))
			}
			layer := files["blobs/sha256/"+strings.TrimPrefix(manifest.Layers[0].Digest, "sha256:")]
			tr := tar.NewReader(strings.NewReader(string(layer)))
			found := false
			for {
				h, err := tr.Next()
				if err != nil {
					break
				}
				found = found || h.Name == tt.mustHave
			}
			if !found {
				t.Errorf("layer lacks %s", tt.mustHave)
			}
		})
	}
}

func TestReproducible(t *testing.T) {
	a, _ := buildImages(t)
	b, _ := buildImages(t)
	ab, _ := os.ReadFile(a)
	bb, _ := os.ReadFile(b)
	if sha256.Sum256(ab) != sha256.Sum256(bb) {
		t.Error("two builds of the busybox archive differ")
	}
}

// needContainerd skips, loudly, unless the test can run containerd.
func needContainerd(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "SKIP: importing and running the test images needs root (containerd, runc)")
		t.Skip("needs root")
	}
	for _, tool := range []string{"containerd", "ctr", "runc"} {
		if _, err := exec.LookPath(tool); err != nil {
			fmt.Fprintf(os.Stderr, "SKIP: %s missing: apt-get install containerd runc\n", tool)
			t.Skipf("%s missing", tool)
		}
	}
}

// startContainerd runs a containerd of the test's own (root, state and
// socket under a temp dir) and returns its socket.
func startContainerd(t *testing.T) string {
	t.Helper()
	needContainerd(t)

	// Short path: unix socket paths are limited to 108 bytes.
	dir, err := os.MkdirTemp("", "ctd-")
	if err != nil {
		t.Fatal(err)
	}
	// containerd's shims keep a few things under /run/containerd whatever
	// the state dir; remove what this test made there.
	var made []string
	for _, d := range []string{"/run/containerd", "/run/containerd/runc", "/run/containerd/s", "/run/containerd/fifo"} {
		if _, err := os.Stat(d); err != nil {
			made = append(made, d)
		}
	}
	t.Cleanup(func() {
		_ = os.Remove("/run/containerd/runc/stellar-test")
		for i := len(made) - 1; i >= 0; i-- {
			_ = os.Remove(made[i]) // only if empty
		}
	})
	sock := filepath.Join(dir, "c.sock")
	config := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = %q
[ttrpc]
  address = %q
[debug]
  address = ""
[metrics]
  address = ""
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), sock, sock+".ttrpc")
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "containerd.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("containerd", "--config", filepath.Join(dir, "config.toml"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start containerd: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		logf.Close()
		if b, _ := exec.Command("sh", "-c", "grep ' "+dir+"' /proc/self/mounts | cut -d' ' -f2").Output(); len(b) > 0 {
			for _, m := range strings.Fields(string(b)) {
				_ = exec.Command("umount", "-l", m).Run()
			}
		}
		os.RemoveAll(dir)
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := ctr(sock, "version"); err == nil {
			return sock
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(logf.Name())
			t.Fatalf("containerd did not come up:\n%s", b)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func ctr(sock string, args ...string) (string, error) {
	out, err := exec.Command("ctr", append([]string{"--address", sock, "-n", "stellar-test"}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ctr %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

func TestImportAndRun(t *testing.T) {
	needContainerd(t)
	busybox, httpd := buildImages(t)
	sock := startContainerd(t)
	for _, f := range []string{busybox, httpd} {
		if _, err := ctr(sock, "images", "import", f); err != nil {
			t.Fatalf("import: %v", err)
		}
	}
	out, err := ctr(sock, "images", "ls", "-q")
	if err != nil {
		t.Fatal(err)
	}
	for _, ref := range []string{testimages.BusyboxRef, testimages.HTTPDRef} {
		if !strings.Contains(out, ref) {
			t.Fatalf("images ls = %q, want %s", out, ref)
		}
	}

	t.Run("busybox", func(t *testing.T) {
		out, err := ctr(sock, "run", "--rm", testimages.BusyboxRef, "bb1", "sh", "-c", "echo hello; ls /bin/wget; hostname")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, "hello") || !strings.Contains(out, "/bin/wget") {
			t.Fatalf("output = %q", out)
		}
	})

	t.Run("httpd", func(t *testing.T) {
		// Host networking on a loopback port: the test only talks to loopback.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		if _, err := ctr(sock, "run", "-d", "--net-host", testimages.HTTPDRef, "web1", "/httpd", "--listen", addr, "--text", "stellar test"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_, _ = ctr(sock, "task", "kill", "-s", "KILL", "web1")
			time.Sleep(200 * time.Millisecond)
			_, _ = ctr(sock, "task", "delete", "-f", "web1")
			_, _ = ctr(sock, "containers", "delete", "web1")
		})
		var body string
		deadline := time.Now().Add(10 * time.Second)
		for {
			resp, err := http.Get("http://" + addr + "/")
			if err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				body = string(b)
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("GET /: %v", err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		host, _ := os.Hostname()
		if !strings.Contains(body, "stellar test") || !strings.HasPrefix(body, host+"\n") {
			t.Fatalf("GET / = %q, want hostname %q and the text", body, host)
		}
		resp, err := http.Get("http://" + addr + "/health")
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET /health: %v %v", resp, err)
		}
		resp.Body.Close()
		if out, err := ctr(sock, "task", "exec", "--exec-id", "probe", "web1", "/httpd", "probe", "http://"+addr+"/health"); err != nil {
			t.Fatalf("httpd probe: %v: %s", err, out)
		}
	})
}
