// Package client is the HTTP/JSON client of every Stellar daemon API: over
// the daemon's Unix socket on this node, or relayed through a node's peer
// port with mutual TLS. Errors come back as errdefs kinds.
package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"stellar.dev/api"
	"stellar.dev/api/errdefs"
	"stellar.dev/api/stream"
)

// DefaultTimeout bounds a request that is not a stream.
const DefaultTimeout = 30 * time.Second

// Client talks to one daemon's API.
type Client struct {
	service string // binary name, for messages: "stellar-dnsd"
	where   string // socket path or remote address, for messages
	base    string // URL prefix of every path
	hc      *http.Client
	timeout time.Duration
}

// Unix returns a client for the daemon service (e.g. "stellar-dnsd")
// listening on the Unix socket path.
func Unix(service, path string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
		MaxIdleConns:    4,
		IdleConnTimeout: 30 * time.Second,
	}
	return &Client{service: service, where: path, base: "http://" + short(service), hc: &http.Client{Transport: tr}, timeout: DefaultTimeout}
}

// Remote returns a client for the daemon service on the node whose peer
// port is addr, relayed by that node's stellar-gossip: paths are sent as
// /v1/relay/<daemon>/<path>. tlsConf carries the operator certificate.
func Remote(service, addr string, tlsConf *tls.Config) *Client {
	tr := &http.Transport{TLSClientConfig: tlsConf, MaxIdleConns: 4, IdleConnTimeout: 30 * time.Second, ForceAttemptHTTP2: true}
	base := "https://" + addr + "/v1/relay/" + short(service)
	return &Client{service: service, where: addr, base: base, hc: &http.Client{Transport: tr}, timeout: DefaultTimeout}
}

// short turns "stellar-dnsd" into "dnsd".
func short(service string) string { return strings.TrimPrefix(service, "stellar-") }

// WithTimeout returns a copy of c whose non-stream requests are bounded by d
// (0: no bound beyond the context's).
func (c *Client) WithTimeout(d time.Duration) *Client {
	cc := *c
	cc.timeout = d
	return &cc
}

// Service returns the daemon's binary name.
func (c *Client) Service() string { return c.service }

// Request is one call.
type Request struct {
	Method string
	// Path starts with /v1/ and may carry a query.
	Path string
	// Header is added to the request (e.g. If-Match).
	Header http.Header
	// In is encoded as the JSON body when not nil; an io.Reader is sent as is.
	In any
	// Out receives the decoded JSON body when not nil.
	Out any
}

// Do sends a JSON request and decodes the JSON answer into out (if not nil).
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
	_, err := c.Call(ctx, Request{Method: method, Path: path, In: in, Out: out})
	return err
}

// Call sends req and returns the response headers.
func (c *Client) Call(ctx context.Context, req Request) (http.Header, error) {
	if c.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	resp, err := c.Open(ctx, req.Method, req.Path, req.Header, req.In)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if req.Out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.Header, nil
	}
	if w, ok := req.Out.(io.Writer); ok {
		if _, err := io.Copy(w, resp.Body); err != nil {
			return resp.Header, fmt.Errorf("read %s answer: %w", c.service, err)
		}
		return resp.Header, nil
	}
	if err := json.NewDecoder(resp.Body).Decode(req.Out); err != nil {
		return resp.Header, fmt.Errorf("decode %s answer to %s %s: %w", c.service, req.Method, req.Path, err)
	}
	return resp.Header, nil
}

// Open sends a request and returns the open response when its status is
// 2xx; the caller closes the body. Any other status becomes an errdefs error.
func (c *Client) Open(ctx context.Context, method, path string, hdr http.Header, in any) (*http.Response, error) {
	var body io.Reader
	isJSON := false
	switch v := in.(type) {
	case nil:
	case io.Reader:
		body = v
	default:
		b, err := json.Marshal(v)
		if err != nil {
			return nil, fmt.Errorf("encode request %s %s: %w", method, path, err)
		}
		body = bytes.NewReader(b)
		isJSON = true
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, fmt.Errorf("make request %s %s: %w", method, path, err)
	}
	for k, vs := range hdr {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	if isJSON {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set(api.WireHeader, strconv.Itoa(api.WireVersion))
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, c.connErr(err)
	}
	if v := resp.Header.Get(api.WireHeader); v != "" {
		if n, err := strconv.Atoi(v); err != nil || n != api.WireVersion {
			resp.Body.Close()
			return nil, errdefs.New(errdefs.ErrUnsupportedVersion, "%s speaks wire version %s, this client speaks %d: upgrade the older side", c.service, v, api.WireVersion)
		}
	}
	if resp.StatusCode/100 == 2 {
		return resp, nil
	}
	defer resp.Body.Close()
	var eb errdefs.Body
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if json.Unmarshal(raw, &eb) != nil || eb.Error.Code == "" {
		eb.Error.Message = strings.TrimSpace(string(raw))
	}
	return nil, errdefs.FromHTTP(resp.StatusCode, eb)
}

// connErr explains a transport error: a daemon that is not running is the
// common case and gets a message that says so.
func (c *Client) connErr(err error) error {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		inner := op.Err
		var se interface{ Unwrap() error }
		if errors.As(inner, &se) && se.Unwrap() != nil {
			inner = se.Unwrap()
		}
		return errdefs.New(errdefs.ErrUnavailable, "%s is not running: connect %s: %v", c.service, c.where, inner)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return errdefs.New(errdefs.ErrUnavailable, "%s did not answer in time (%s): %v", c.service, c.where, err)
	}
	return errdefs.New(errdefs.ErrUnavailable, "talk to %s at %s: %v", c.service, c.where, err)
}

// Watch opens an NDJSON stream at path and calls fn with each value until
// the stream ends, fn returns an error, or ctx is done. A stream that ends
// is io.EOF.
func (c *Client) Watch(ctx context.Context, path string, fn func(raw json.RawMessage) error) error {
	resp, err := c.Open(ctx, http.MethodGet, path, nil, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	r := stream.NewReader(resp.Body)
	for {
		var raw json.RawMessage
		if err := r.Next(&raw); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		if err := fn(raw); err != nil {
			return err
		}
	}
}
