package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"time"

	"stellar.dev/api"
)

// The wire codes of netd's error bodies ({"error":{"code":...}}) the
// plugin acts on; see stellar.dev/api/errdefs.
const (
	codeUnavailable     = "unavailable"
	codeInvalidArgument = "invalid_argument"
	codeNotFound        = "not_found"
	codeConflict        = "conflict"
	codeUnsupported     = "unsupported_version"
	codeInternal        = "internal"
)

// maxAnswer bounds an answer of netd (a GC or list of a full /22 is a few
// hundred KB).
const maxAnswer = 8 << 20

// netdError is an error of a call to netd: its wire code and message.
type netdError struct {
	code string
	msg  string
}

func (e *netdError) Error() string { return e.msg }

// codeOf returns the wire code of err ("internal" when it has none).
func codeOf(err error) string {
	var ne *netdError
	if errors.As(err, &ne) {
		return ne.code
	}
	return codeInternal
}

// statusCodes maps an HTTP status without a wire code back to one, as
// errdefs.FromHTTP does.
var statusCodes = map[int]string{
	400: codeInvalidArgument, 404: codeNotFound, 409: "already_exists", 412: codeConflict,
	503: codeUnavailable, 507: "resource_exhausted", 403: "permission_denied", 410: "gone",
}

// netdClient makes one HTTP/1.1 request per call to stellar-netd's socket,
// by hand, in blocking system calls on the calling goroutine. The plugin
// is a new process for every CNI call, so what it links and starts is paid
// at every container start: net/http (with crypto/tls) was half the
// binary and its transport ran the call on three goroutines through the
// network poller. See the README's IPAM performance section.
type netdClient struct {
	// socket is netd's API socket.
	socket string
	// timeout bounds the whole call: connect, request and answer.
	timeout time.Duration
}

// call sends method path with in as its JSON body (none when nil) and
// decodes the JSON answer into out (when not nil). Every failure is a
// *netdError; a netd that is down or slow is codeUnavailable.
func (c netdClient) call(method, path string, in, out any) error {
	deadline := time.Now().Add(c.timeout)
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return &netdError{codeInternal, fmt.Sprintf("encode request %s %s: %v", method, path, err)}
		}
	}
	var req bytes.Buffer
	fmt.Fprintf(&req, "%s %s HTTP/1.1\r\nHost: netd\r\n%s: %d\r\nConnection: close\r\n", method, path, api.WireHeader, api.WireVersion)
	if in != nil {
		fmt.Fprintf(&req, "Content-Type: application/json\r\nContent-Length: %d\r\n", len(body))
	}
	req.WriteString("\r\n")
	req.Write(body)

	fd, err := c.connect(deadline)
	if err != nil {
		return err
	}
	defer syscall.Close(fd)
	if err := c.writeAll(fd, req.Bytes(), deadline); err != nil {
		return err
	}
	status, hdr, answer, err := c.readAnswer(fd, deadline)
	if err != nil {
		return err
	}
	if v := hdr["stellar-wire-version"]; v != "" && v != strconv.Itoa(api.WireVersion) {
		return &netdError{codeUnsupported, fmt.Sprintf("stellar-netd speaks wire version %s, this client speaks %d: upgrade the older side", v, api.WireVersion)}
	}
	if status/100 != 2 {
		return answerError(status, answer)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(answer, out); err != nil {
		return &netdError{codeInternal, fmt.Sprintf("decode stellar-netd answer to %s %s: %v", method, path, err)}
	}
	return nil
}

// answerError turns an error answer into a *netdError: the body's code
// wins, then the status.
func answerError(status int, answer []byte) error {
	var b struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(answer, &b) != nil || b.Error.Code == "" {
		b.Error.Message = strings.TrimSpace(string(answer))
		b.Error.Code = statusCodes[status]
		if b.Error.Code == "" {
			b.Error.Code = codeInternal
			b.Error.Message = fmt.Sprintf("unexpected status %d: %s", status, b.Error.Message)
		}
	}
	if b.Error.Message == "" {
		b.Error.Message = fmt.Sprintf("stellar-netd answered status %d", status)
	}
	return &netdError{b.Error.Code, b.Error.Message}
}

// unavailable is the error of a netd that is down or does not answer.
func (c netdClient) unavailable(format string, args ...any) error {
	return &netdError{codeUnavailable, fmt.Sprintf(format, args...)}
}

// setTimeout bounds the next blocking system calls on fd by what is left
// until deadline.
func (c netdClient) setTimeout(fd, opt int, deadline time.Time) error {
	left := time.Until(deadline)
	if left <= 0 {
		return c.unavailable("stellar-netd did not answer in time (%s, %s)", c.socket, c.timeout)
	}
	tv := syscall.NsecToTimeval(int64(left))
	if tv.Sec == 0 && tv.Usec == 0 {
		tv.Usec = 1 // 0 would mean no timeout
	}
	if err := syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, opt, &tv); err != nil {
		return &netdError{codeInternal, fmt.Sprintf("set socket timeout: %v", err)}
	}
	return nil
}

// connect opens a connection to the socket. connect(2) on a Unix socket
// blocks only while netd's accept queue is full, bounded by SO_SNDTIMEO.
func (c netdClient) connect(deadline time.Time) (int, error) {
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, c.unavailable("talk to stellar-netd at %s: make a socket: %v", c.socket, err)
	}
	if err := c.setTimeout(fd, syscall.SO_SNDTIMEO, deadline); err != nil {
		syscall.Close(fd)
		return -1, err
	}
	for {
		err = syscall.Connect(fd, &syscall.SockaddrUnix{Name: c.socket})
		if err == syscall.EINTR && time.Now().Before(deadline) {
			continue // a signal; the socket is still unconnected
		}
		break
	}
	switch {
	case err == nil, err == syscall.EISCONN:
		return fd, nil
	case err == syscall.EAGAIN, err == syscall.EINTR:
		syscall.Close(fd)
		return -1, c.unavailable("stellar-netd did not accept the connection in time (%s, %s)", c.socket, c.timeout)
	default:
		syscall.Close(fd)
		return -1, c.unavailable("stellar-netd is not running: connect %s: %v", c.socket, err)
	}
}

func (c netdClient) writeAll(fd int, b []byte, deadline time.Time) error {
	for len(b) > 0 {
		n, err := syscall.Write(fd, b)
		if err == syscall.EINTR && time.Now().Before(deadline) {
			continue
		}
		if err == syscall.EAGAIN {
			return c.unavailable("stellar-netd did not read the request in time (%s, %s)", c.socket, c.timeout)
		}
		if err != nil {
			return c.unavailable("talk to stellar-netd at %s: send the request: %v", c.socket, err)
		}
		b = b[n:]
	}
	return nil
}

// readAnswer reads the whole answer: the status, the headers (lower-case
// names) and the body (chunked or not).
func (c netdClient) readAnswer(fd int, deadline time.Time) (int, map[string]string, []byte, error) {
	buf := make([]byte, 0, 4096)
	headEnd, bodyLen := -1, -1
	for {
		if headEnd >= 0 && bodyLen >= 0 && len(buf)-headEnd >= bodyLen {
			break
		}
		if len(buf) > maxAnswer {
			return 0, nil, nil, &netdError{codeInternal, fmt.Sprintf("stellar-netd's answer is larger than %d bytes", maxAnswer)}
		}
		if err := c.setTimeout(fd, syscall.SO_RCVTIMEO, deadline); err != nil {
			return 0, nil, nil, err
		}
		if cap(buf)-len(buf) < 4096 {
			nb := make([]byte, len(buf), 2*cap(buf))
			copy(nb, buf)
			buf = nb
		}
		n, err := syscall.Read(fd, buf[len(buf):cap(buf)])
		if err == syscall.EINTR {
			continue
		}
		if err == syscall.EAGAIN {
			return 0, nil, nil, c.unavailable("stellar-netd did not answer in time (%s, %s)", c.socket, c.timeout)
		}
		if err != nil {
			return 0, nil, nil, c.unavailable("talk to stellar-netd at %s: read the answer: %v", c.socket, err)
		}
		if n == 0 {
			break // netd closed the connection: the answer is complete
		}
		buf = buf[:len(buf)+n]
		if headEnd < 0 {
			if i := bytes.Index(buf, []byte("\r\n\r\n")); i >= 0 {
				headEnd = i + 4
				if _, hdr, err := parseHead(buf[:i]); err == nil {
					if cl, err := strconv.Atoi(hdr["content-length"]); err == nil && cl >= 0 && hdr["transfer-encoding"] == "" {
						bodyLen = cl
					}
				}
			}
		}
	}
	if headEnd < 0 {
		return 0, nil, nil, c.unavailable("talk to stellar-netd at %s: the answer ended before its headers (%d bytes)", c.socket, len(buf))
	}
	status, hdr, err := parseHead(buf[:headEnd-4])
	if err != nil {
		return 0, nil, nil, &netdError{codeInternal, fmt.Sprintf("read stellar-netd's answer: %v", err)}
	}
	body := buf[headEnd:]
	switch {
	case strings.EqualFold(hdr["transfer-encoding"], "chunked"):
		if body, err = dechunk(body); err != nil {
			return 0, nil, nil, &netdError{codeInternal, fmt.Sprintf("read stellar-netd's answer: %v", err)}
		}
	case bodyLen >= 0:
		if len(body) < bodyLen {
			return 0, nil, nil, c.unavailable("talk to stellar-netd at %s: the answer ended after %d of %d bytes", c.socket, len(body), bodyLen)
		}
		body = body[:bodyLen]
	}
	return status, hdr, body, nil
}

// parseHead parses an answer's status line and headers (without the
// blank line that ends them).
func parseHead(head []byte) (int, map[string]string, error) {
	lines := strings.Split(string(head), "\r\n")
	f := strings.SplitN(lines[0], " ", 3)
	if len(f) < 2 || !strings.HasPrefix(f[0], "HTTP/1.") {
		return 0, nil, fmt.Errorf("bad status line %q", lines[0])
	}
	status, err := strconv.Atoi(f[1])
	if err != nil || status < 100 || status > 999 {
		return 0, nil, fmt.Errorf("bad status line %q", lines[0])
	}
	hdr := map[string]string{}
	for _, l := range lines[1:] {
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			return 0, nil, fmt.Errorf("bad header line %q", l)
		}
		hdr[strings.ToLower(strings.TrimSpace(k))] = strings.TrimSpace(v)
	}
	return status, hdr, nil
}

// dechunk decodes a chunked body.
func dechunk(b []byte) ([]byte, error) {
	var out []byte
	for {
		i := bytes.Index(b, []byte("\r\n"))
		if i < 0 {
			return nil, errors.New("chunked body ends inside a chunk size")
		}
		sz := string(b[:i])
		if j := strings.IndexByte(sz, ';'); j >= 0 {
			sz = sz[:j]
		}
		n, err := strconv.ParseUint(strings.TrimSpace(sz), 16, 31)
		if err != nil {
			return nil, fmt.Errorf("bad chunk size %q", b[:i])
		}
		b = b[i+2:]
		if n == 0 {
			return out, nil
		}
		if uint64(len(b)) < n+2 {
			return nil, errors.New("chunked body ends inside a chunk")
		}
		out = append(out, b[:n]...)
		b = b[n+2:]
	}
}
