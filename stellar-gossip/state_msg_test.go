package main

import (
	"strings"
	"testing"
)

func TestDecodeStateMsg(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"ok", `{"w":1,"from":"a","r":[{"k":"apps/x","v":1,"h":5,"n":"a"}]}`, ""},
		{"other version", `{"w":2,"from":"a","r":[]}`, "wire version 2"},
		{"empty", `{"w":1,"from":"a"}`, "carries nothing"},
		{"forged owner", `{"w":1,"from":"a","r":[{"k":"nodes/b/x","v":1,"h":5,"n":"a"}]}`, "written by a"},
		{"unknown field", `{"w":1,"from":"a","zz":1}`, "unknown field"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decodeStateMsg([]byte(tc.in))
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("decodeStateMsg = %v, want %q", err, tc.want)
			}
		})
	}
}

func FuzzDecodeStateMsg(f *testing.F) {
	f.Add([]byte(`{"w":1,"from":"a","r":[{"k":"apps/x","v":1,"h":5,"n":"a"}]}`))
	f.Add([]byte(`{"w":1,"from":"a","ref":{"k":"apps/x","h":5,"n":"a"}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeStateMsg(b)
		if err != nil {
			return
		}
		for _, r := range m.Records {
			if err := r.Validate(); err != nil {
				t.Fatalf("accepted an invalid record: %v", err)
			}
		}
	})
}
