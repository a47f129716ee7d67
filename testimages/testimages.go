// Package testimages builds the OCI image archives Stellar's tests run
// (no registry is reachable from test machines): stellar.test/busybox, a
// static busybox with its applets, and stellar.test/httpd, a tiny static HTTP
// server. Both import with `ctr images import` and containerd's Go client.
package testimages

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"
)

// Image references written into the archives.
const (
	BusyboxRef = "stellar.test/busybox:latest"
	HTTPDRef   = "stellar.test/httpd:latest"
)

// Archive file names Build writes into its directory.
const (
	BusyboxFile = "busybox.tar"
	HTTPDFile   = "httpd.tar"
)

// Options says where the image contents come from.
type Options struct {
	// Busybox is a statically linked busybox; default /bin/busybox
	// (Debian's busybox-static).
	Busybox string
	// HTTPD is a prebuilt static httpd binary; when empty, Build compiles
	// testimages/httpd with the go tool (CGO_ENABLED=0).
	HTTPD string
}

// epoch is the timestamp of every file and image, so archives are reproducible.
var epoch = time.Unix(1700000000, 0).UTC()

const defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Build writes busybox.tar and httpd.tar into dir and returns their paths.
func Build(ctx context.Context, dir string, opts Options) (busybox, httpd string, err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", fmt.Errorf("make %s: %w", dir, err)
	}
	busybox = filepath.Join(dir, BusyboxFile)
	if err := writeFile(busybox, func(w io.Writer) error { return WriteBusybox(ctx, w, opts.Busybox) }); err != nil {
		return "", "", fmt.Errorf("build busybox image: %w", err)
	}
	bin := opts.HTTPD
	if bin == "" {
		tmp, err := os.MkdirTemp("", "stellar-httpd-")
		if err != nil {
			return "", "", err
		}
		defer os.RemoveAll(tmp)
		bin = filepath.Join(tmp, "httpd")
		if err := BuildHTTPDBinary(ctx, bin); err != nil {
			return "", "", err
		}
	}
	httpd = filepath.Join(dir, HTTPDFile)
	if err := writeFile(httpd, func(w io.Writer) error { return WriteHTTPD(w, bin) }); err != nil {
		return "", "", fmt.Errorf("build httpd image: %w", err)
	}
	return busybox, httpd, nil
}

func writeFile(path string, write func(io.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := write(f); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	return f.Close()
}

// BuildHTTPDBinary compiles testimages/httpd into out as a static binary.
// It needs the go tool and the package's source: next to this file when it
// exists, else stellar.dev/testimages/httpd from the current module or workspace.
func BuildHTTPDBinary(ctx context.Context, out string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-buildvcs=false", "-ldflags=-s -w", "-o", out, "stellar.dev/testimages/httpd")
	if _, file, _, ok := runtime.Caller(0); ok {
		if _, err := os.Stat(filepath.Join(filepath.Dir(file), "httpd", "main.go")); err == nil {
			cmd.Dir = filepath.Dir(file)
		}
	}
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build httpd: %w: %s", err, strings.TrimSpace(string(b)))
	}
	return nil
}

// WriteBusybox writes the stellar.test/busybox image archive to w.
func WriteBusybox(ctx context.Context, w io.Writer, busybox string) error {
	if busybox == "" {
		busybox = "/bin/busybox"
	}
	bin, err := os.ReadFile(busybox)
	if err != nil {
		return fmt.Errorf("read busybox (apt-get install busybox-static): %w", err)
	}
	list, err := exec.CommandContext(ctx, busybox, "--list").Output()
	if err != nil {
		return fmt.Errorf("list busybox applets: %w", err)
	}
	l := newLayer()
	baseFiles(l)
	l.file("bin/busybox", 0o755, bin)
	applets := strings.Fields(string(list))
	slices.Sort(applets)
	for _, a := range slices.Compact(applets) {
		if a == "busybox" || strings.Contains(a, "/") {
			continue
		}
		l.symlink("bin/"+a, "busybox")
	}
	l.symlink("sbin", "bin")
	l.dir("usr", 0o755)
	l.symlink("usr/bin", "../bin")
	l.symlink("usr/sbin", "../bin")
	layer, err := l.bytes()
	if err != nil {
		return err
	}
	cfg := imageConfig{Env: []string{defaultPath}, Cmd: []string{"/bin/sh"}, WorkingDir: "/"}
	return writeImage(w, BusyboxRef, cfg, layer)
}

// WriteHTTPD writes the stellar.test/httpd image archive, holding the static
// binary httpdBin as /httpd, to w.
func WriteHTTPD(w io.Writer, httpdBin string) error {
	bin, err := os.ReadFile(httpdBin)
	if err != nil {
		return fmt.Errorf("read httpd binary: %w", err)
	}
	l := newLayer()
	baseFiles(l)
	l.file("httpd", 0o755, bin)
	layer, err := l.bytes()
	if err != nil {
		return err
	}
	cfg := imageConfig{
		Env:          []string{defaultPath, "LISTEN=:8080"},
		Entrypoint:   []string{"/httpd"},
		WorkingDir:   "/",
		ExposedPorts: map[string]struct{}{"8080/tcp": {}},
	}
	return writeImage(w, HTTPDRef, cfg, layer)
}

// baseFiles adds what every image needs: users, hosts and the mount points.
func baseFiles(l *layer) {
	for _, d := range []string{"bin", "dev", "etc", "proc", "sys", "root", "var", "run"} {
		l.dir(d, 0o755)
	}
	l.dir("tmp", 0o1777)
	l.file("etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"))
	l.file("etc/group", 0o644, []byte("root:x:0:\nnogroup:x:65534:\n"))
	l.file("etc/hosts", 0o644, []byte("127.0.0.1\tlocalhost\n::1\tlocalhost\n"))
	l.file("etc/resolv.conf", 0o644, nil)
}

// layer is an uncompressed, reproducible tar layer.
type layer struct {
	buf bytes.Buffer
	tw  *tar.Writer
	err error
}

func newLayer() *layer {
	l := &layer{}
	l.tw = tar.NewWriter(&l.buf)
	return l
}

func (l *layer) write(h *tar.Header, data []byte) {
	if l.err != nil {
		return
	}
	h.ModTime, h.Format = epoch, tar.FormatPAX
	if l.err = l.tw.WriteHeader(h); l.err == nil && len(data) > 0 {
		_, l.err = l.tw.Write(data)
	}
}

func (l *layer) dir(name string, mode int64) {
	l.write(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode}, nil)
}

func (l *layer) file(name string, mode int64, data []byte) {
	l.write(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data))}, data)
}

func (l *layer) symlink(name, target string) {
	l.write(&tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777}, nil)
}

func (l *layer) bytes() ([]byte, error) {
	if l.err != nil {
		return nil, l.err
	}
	if err := l.tw.Close(); err != nil {
		return nil, err
	}
	return l.buf.Bytes(), nil
}

type imageConfig struct {
	Env          []string            `json:"Env,omitempty"`
	Entrypoint   []string            `json:"Entrypoint,omitempty"`
	Cmd          []string            `json:"Cmd,omitempty"`
	WorkingDir   string              `json:"WorkingDir,omitempty"`
	ExposedPorts map[string]struct{} `json:"ExposedPorts,omitempty"`
}

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Platform    *platform         `json:"platform,omitempty"`
}

type platform struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
}

// OCI media types.
const (
	MediaTypeIndex    = "application/vnd.oci.image.index.v1+json"
	MediaTypeManifest = "application/vnd.oci.image.manifest.v1+json"
	MediaTypeConfig   = "application/vnd.oci.image.config.v1+json"
	MediaTypeLayer    = "application/vnd.oci.image.layer.v1.tar"
)

func digest(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// writeImage writes an OCI image layout tar with one image of one layer.
func writeImage(w io.Writer, ref string, cfg imageConfig, layer []byte) error {
	layerDigest := digest(layer)
	config, err := json.Marshal(map[string]any{
		"created":      epoch.Format(time.RFC3339),
		"architecture": "amd64",
		"os":           "linux",
		"config":       cfg,
		"rootfs":       map[string]any{"type": "layers", "diff_ids": []string{layerDigest}},
		"history":      []map[string]any{{"created": epoch.Format(time.RFC3339), "created_by": "stellar.dev/testimages"}},
	})
	if err != nil {
		return err
	}
	manifest, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     MediaTypeManifest,
		"config":        descriptor{MediaType: MediaTypeConfig, Digest: digest(config), Size: int64(len(config))},
		"layers":        []descriptor{{MediaType: MediaTypeLayer, Digest: layerDigest, Size: int64(len(layer))}},
	})
	if err != nil {
		return err
	}
	tag := ref[strings.LastIndex(ref, ":")+1:]
	index, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     MediaTypeIndex,
		"manifests": []descriptor{{
			MediaType: MediaTypeManifest,
			Digest:    digest(manifest),
			Size:      int64(len(manifest)),
			Annotations: map[string]string{
				"io.containerd.image.name":          ref,
				"org.opencontainers.image.ref.name": tag,
			},
			Platform: &platform{Architecture: "amd64", OS: "linux"},
		}},
	})
	if err != nil {
		return err
	}
	tw := tar.NewWriter(w)
	add := func(name string, data []byte) error {
		h := &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(data)), ModTime: epoch, Format: tar.FormatPAX}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	for _, d := range []string{"blobs/", "blobs/sha256/"} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: 0o755, ModTime: epoch, Format: tar.FormatPAX}); err != nil {
			return err
		}
	}
	files := []struct {
		name string
		data []byte
	}{
		{"oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)},
		{"index.json", index},
		{blobPath(digest(config)), config},
		{blobPath(digest(manifest)), manifest},
		{blobPath(layerDigest), layer},
	}
	for _, f := range files {
		if err := add(f.name, f.data); err != nil {
			return fmt.Errorf("write %s: %w", f.name, err)
		}
	}
	return tw.Close()
}

func blobPath(d string) string { return "blobs/sha256/" + strings.TrimPrefix(d, "sha256:") }
