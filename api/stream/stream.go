// Package stream reads and writes NDJSON streams: one JSON value a line
// over one long HTTP response, as every Stellar watch endpoint serves.
package stream

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
)

// ContentType is the media type of an NDJSON stream.
const ContentType = "application/x-ndjson"

// MaxLine is the largest line a Reader accepts.
const MaxLine = 16 << 20

// Writer writes values to an NDJSON stream and flushes each one, so the
// reader sees it at once.
type Writer struct {
	w   io.Writer
	f   http.Flusher
	enc *json.Encoder
}

// NewWriter returns a Writer on w. When w is an http.ResponseWriter it sets
// the content type and flushes after every value.
func NewWriter(w io.Writer) *Writer {
	sw := &Writer{w: w, enc: json.NewEncoder(w)}
	if rw, ok := w.(http.ResponseWriter); ok {
		rw.Header().Set("Content-Type", ContentType)
	}
	if f, ok := w.(http.Flusher); ok {
		sw.f = f
	}
	return sw
}

// Send writes v as one line and flushes it.
func (s *Writer) Send(v any) error {
	if err := s.enc.Encode(v); err != nil {
		return fmt.Errorf("write stream value: %w", err)
	}
	if s.f != nil {
		s.f.Flush()
	}
	return nil
}

// Reader reads values from an NDJSON stream.
type Reader struct {
	sc *bufio.Scanner
}

// NewReader returns a Reader on r.
func NewReader(r io.Reader) *Reader {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), MaxLine)
	return &Reader{sc: sc}
}

// Next decodes the next value into v. It returns io.EOF at the end of the
// stream. Blank lines are skipped.
func (s *Reader) Next(v any) error {
	for s.sc.Scan() {
		line := s.sc.Bytes()
		if len(line) == 0 {
			continue
		}
		if err := json.Unmarshal(line, v); err != nil {
			return fmt.Errorf("decode stream value: %w", err)
		}
		return nil
	}
	if err := s.sc.Err(); err != nil {
		return fmt.Errorf("read stream: %w", err)
	}
	return io.EOF
}
