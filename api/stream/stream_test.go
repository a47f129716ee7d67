package stream

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestStream_roundTrip(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	for i := range 3 {
		if err := w.Send(map[string]int{"n": i}); err != nil {
			t.Fatal(err)
		}
	}
	r := NewReader(&buf)
	for i := range 3 {
		var v map[string]int
		if err := r.Next(&v); err != nil {
			t.Fatal(err)
		}
		if v["n"] != i {
			t.Fatalf("value %d = %v", i, v)
		}
	}
	var v any
	if err := r.Next(&v); !errors.Is(err, io.EOF) {
		t.Fatalf("want EOF, got %v", err)
	}
}

func TestReader_badLine(t *testing.T) {
	r := NewReader(strings.NewReader("{\"a\":1}\n\nnot json\n"))
	var v any
	if err := r.Next(&v); err != nil {
		t.Fatal(err)
	}
	if err := r.Next(&v); err == nil {
		t.Fatal("want a decode error")
	}
}
