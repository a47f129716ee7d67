// Package h1 serves the HTTP/1 connections of the plain listener in their
// own goroutine: request heads the lean path can take (GET, HEAD, OPTIONS,
// DELETE without a body, origin-form target, no Upgrade, Expect, Trailer or
// Transfer-Encoding) are parsed from a pooled buffer and answered without
// net/http's server; any other request hands the connection, with the bytes
// already read, to net/http's server for good.
package h1

import (
	"bytes"
	"net/http"
	"net/url"

	"stellar.dev/stellar-proxyd/internal/guard"
)

// parser turns request heads into a reused *http.Request. It owns the
// request's header map and value slices, reused from one request to the
// next on a connection.
type parser struct {
	scratch []byte   // the head with canonical header names
	vals    []string // backing store of the header map's value slices
	url     url.URL
}

// headEnd returns the length of the head at the start of b (through the
// empty line ending it: "\n\r\n" or "\n\n"), or -1 when b holds no whole
// head.
func headEnd(b []byte) int {
	for i := 0; i < len(b); {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			return -1
		}
		i += j + 1
		if i < len(b) && b[i] == '\n' {
			return i + 1
		}
		if i+1 < len(b) && b[i] == '\r' && b[i+1] == '\n' {
			return i + 2
		}
	}
	return -1
}

// parse fills req from head (a whole head, request line through the empty
// line) and reports whether the loop may serve it. false means: hand the
// request to net/http's server, which answers it (or refuses it) as it
// always did; that is also the answer for every head the request guard
// refuses, so refusals stay byte for byte those of net/http behind the
// guard.
func (p *parser) parse(head []byte, req *http.Request) bool {
	if reason, _, _ := guard.Check(head); reason != "" {
		return false
	}
	// The guard checked: every line ends in CRLF, names are tokens, no
	// obs-fold, no NUL or CR in values, at most one Content-Length and
	// Transfer-Encoding, not both.
	p.scratch = append(p.scratch[:0], head...)
	b := p.scratch[:len(p.scratch)-2] // without the empty line
	i := bytes.IndexByte(b, '\n')
	line := b[:i-1]
	b = b[i+1:]
	sp1 := bytes.IndexByte(line, ' ')
	method := line[:sp1]
	rest := line[sp1+1:]
	sp2 := bytes.IndexByte(rest, ' ')
	target, proto := rest[:sp2], rest[sp2+1:]
	if string(proto) != "HTTP/1.1" || len(target) == 0 || target[0] != '/' {
		return false
	}
	switch string(method) {
	case http.MethodGet:
		req.Method = http.MethodGet
	case http.MethodHead:
		req.Method = http.MethodHead
	case http.MethodOptions:
		req.Method = http.MethodOptions
	case http.MethodDelete:
		req.Method = http.MethodDelete
	default:
		return false
	}
	for _, c := range target {
		if c <= ' ' || c >= 0x7f || c == '#' {
			return false // net/http decides on these
		}
	}
	// One string for the whole head: every header value, the target and
	// the host are slices of it.
	for k := b; len(k) > 0; {
		j := bytes.IndexByte(k, '\n')
		canonical(k[:bytes.IndexByte(k, ':')])
		k = k[j+1:]
	}
	s := string(b)
	off := 0
	hdr := req.Header
	clear(hdr)
	p.vals = p.vals[:0]
	hosts := 0
	req.Close = false
	for off < len(s) {
		j := off + indexByte(s[off:], '\n')
		l := s[off : j-1]
		off = j + 1
		colon := indexByte(l, ':')
		k, v := l[:colon], trim(l[colon+1:])
		for i := 0; i < len(v); i++ {
			if c := v[i]; c < ' ' && c != '\t' || c == 0x7f {
				return false // net/http refuses control characters
			}
		}
		switch k {
		case "Host":
			hosts++
			if hosts > 1 || !validHost(v) {
				return false
			}
			req.Host = v
			continue
		case "Content-Length":
			if v != "0" {
				return false
			}
		case "Transfer-Encoding", "Upgrade", "Expect", "Trailer", "Pragma":
			// Bodies, protocol switches, 100-continue and trailers are
			// net/http's; so is Pragma, which it rewrites into
			// Cache-Control.
			return false
		case "Connection":
			if hasToken(v, "close") {
				req.Close = true
			}
		}
		vv := hdr[k]
		if vv == nil {
			n := len(p.vals)
			p.vals = append(p.vals, v)
			hdr[k] = p.vals[n : n+1 : n+1]
		} else {
			hdr[k] = append(vv, v)
		}
	}
	if hosts != 1 {
		return false
	}
	req.RequestURI = string(target)
	u := &p.url
	*u = url.URL{}
	if simplePath(target) {
		path, query, _ := cut(req.RequestURI, '?')
		u.Path, u.RawQuery = path, query
		u.ForceQuery = query == "" && len(path) < len(req.RequestURI)
	} else {
		pu, err := url.ParseRequestURI(req.RequestURI)
		if err != nil {
			return false
		}
		*u = *pu
	}
	req.URL = u
	return true
}

// canonical rewrites a header name in place into its canonical form, as
// textproto.CanonicalMIMEHeaderKey does for names made of token bytes.
func canonical(k []byte) {
	upper := true
	for i, c := range k {
		if upper && 'a' <= c && c <= 'z' {
			k[i] = c - ('a' - 'A')
		} else if !upper && 'A' <= c && c <= 'Z' {
			k[i] = c + ('a' - 'A')
		}
		upper = c == '-'
	}
}

// simplePath reports whether target needs no unescaping: the path is the
// target up to '?' as it is.
func simplePath(target []byte) bool {
	for _, c := range target {
		if c == '%' || c == '\\' {
			return false
		}
	}
	return true
}

// validHost accepts the host[:port] shapes the lean loop serves; any other
// Host is left to net/http's own check.
func validHost(h string) bool {
	if h == "" {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '-' || c == ':' || c == '[' || c == ']' || c == '_') {
			return false
		}
	}
	return true
}

func indexByte(s string, c byte) int {
	for i := 0; i < len(s); i++ {
		if s[i] == c {
			return i
		}
	}
	return -1
}

func cut(s string, c byte) (before, after string, found bool) {
	if i := indexByte(s, c); i >= 0 {
		return s[:i], s[i+1:], true
	}
	return s, "", false
}

// trim drops leading and trailing spaces and tabs, as net/textproto does.
func trim(s string) string {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

// hasToken reports whether the comma-separated list v names tok (ASCII
// case-insensitive).
func hasToken(v, tok string) bool {
	for v != "" {
		var t string
		t, v, _ = cut(v, ',')
		t = trim(t)
		if len(t) == len(tok) && equalFold(t, tok) {
			return true
		}
	}
	return false
}

func equalFold(a, b string) bool {
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
