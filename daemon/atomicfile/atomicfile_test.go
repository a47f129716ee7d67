package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWrite(t *testing.T) {
	tests := []struct {
		name    string
		old     string // "" = no file before
		data    string
		perm    os.FileMode
		missing bool // the directory does not exist
	}{
		{name: "new file", data: "a", perm: 0o600},
		{name: "replaces content", old: "old content, longer", data: "new", perm: 0o644},
		{name: "empty content", old: "x", data: "", perm: 0o600},
		{name: "missing directory fails and leaves nothing", data: "a", perm: 0o600, missing: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if tc.missing {
				dir = filepath.Join(dir, "absent")
			}
			path := filepath.Join(dir, "f.json")
			if tc.old != "" {
				if err := os.WriteFile(path, []byte(tc.old), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			err := Write(path, []byte(tc.data), tc.perm)
			if tc.missing {
				if err == nil {
					t.Fatal("no error for a missing directory")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(path)
			if err != nil || string(got) != tc.data {
				t.Fatalf("content %q (%v), want %q", got, err, tc.data)
			}
			if fi, _ := os.Stat(path); fi.Mode().Perm() != tc.perm {
				t.Fatalf("mode %v, want %v", fi.Mode().Perm(), tc.perm)
			}
			if es, _ := os.ReadDir(dir); len(es) != 1 {
				t.Fatalf("directory holds %d entries, want only the file", len(es))
			}
		})
	}
}
