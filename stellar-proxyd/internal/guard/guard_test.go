package guard

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestCheck_corpus(t *testing.T) {
	tests := []struct {
		name, head string
		bad        bool
	}{
		{"plain get", "GET / HTTP/1.1\r\nHost: a\r\n\r\n", false},
		{"content length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n", false},
		{"chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", false},
		{"cl and te", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", true},
		{"te and cl", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", true},
		{"duplicate cl same", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", true},
		{"duplicate cl differ", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", true},
		{"cl list", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n", true},
		{"cl sign", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", true},
		{"te gzip", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", true},
		{"te twice", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", true},
		{"te http10", "POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", true},
		{"obs-fold", "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n", true},
		{"obs-fold tab", "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n\tc\r\n\r\n", true},
		{"space before colon", "GET / HTTP/1.1\r\nHost: a\r\nContent-Length : 5\r\n\r\n", true},
		{"bare lf", "GET / HTTP/1.1\nHost: a\n\n", true},
		{"bad request line", "GET /  HTTP/1.1\r\nHost: a\r\n\r\n", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reason, _, _ := Check([]byte(tt.head))
			if (reason != "") != tt.bad {
				t.Fatalf("Check(%q) = %q, want bad=%v", tt.head, reason, tt.bad)
			}
		})
	}
}

// serve runs a real net/http server behind the guard on loopback.
func serve(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		ConnContext: WithConn,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b, err := io.ReadAll(r.Body)
			if err != nil {
				if FromContext(r.Context()).Bad() {
					w.Header().Set("Connection", "close")
					http.Error(w, "bad framing", http.StatusBadRequest)
					return
				}
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			fmt.Fprintf(w, "%s %s %d", r.Method, r.URL.Path, len(b))
		}),
	}
	go srv.Serve(Listener{l})
	t.Cleanup(func() { srv.Close() })
	return l.Addr().String()
}

// exchange sends raw and reads every response until the server closes.
func exchange(t *testing.T, addr, raw string) (statuses []int, closed bool) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	for {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			var ne net.Error
			if err == io.EOF || err == io.ErrUnexpectedEOF || (strings.Contains(err.Error(), "reset")) {
				return statuses, true
			}
			if errorsAs(err, &ne) && ne.Timeout() {
				return statuses, false
			}
			return statuses, true
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		statuses = append(statuses, resp.StatusCode)
		if resp.Close {
			// The server said it closes: check it does.
			_, err := br.ReadByte()
			return statuses, err != nil
		}
		if len(statuses) > 10 {
			return statuses, false
		}
	}
}

func errorsAs(err error, ne *net.Error) bool {
	n, ok := err.(net.Error)
	if ok {
		*ne = n
	}
	return ok
}

func TestConn_smugglingShapesAnswer400AndClose(t *testing.T) {
	addr := serve(t)
	tests := []struct {
		name string
		raw  string
		want []int
	}{
		{"cl te", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n", []int{400}},
		{"duplicate cl", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabcGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n", []int{400}},
		{"bad chunk size", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nabcde\r\n0\r\n\r\n", []int{400}},
		{"negative chunk size", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\nabcde\r\n0\r\n\r\n", []int{400}},
		{"chunk longer than size", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabcde\r\n0\r\n\r\n", []int{400}},
		{"obs-fold", "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n", []int{400}},
		{"second request smuggles", "GET /one HTTP/1.1\r\nHost: a\r\n\r\nPOST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", []int{200, 400}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, closed := exchange(t, addr, tt.raw)
			if fmt.Sprint(got) != fmt.Sprint(tt.want) || !closed {
				t.Fatalf("statuses %v closed %v, want %v and closed", got, closed, tt.want)
			}
		})
	}
}

func TestConn_keepAliveAndChunkedStillWork(t *testing.T) {
	addr := serve(t)
	raw := "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello" +
		"POST /b HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: 1\r\n\r\n" +
		"GET /c HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
	got, _ := exchange(t, addr, raw)
	if fmt.Sprint(got) != "[200 200 200]" {
		t.Fatalf("statuses %v, want three 200s", got)
	}
}

func TestConn_byteAtATime(t *testing.T) {
	addr := serve(t)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	raw := "POST /b HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
	for i := 0; i < len(raw); i++ {
		if _, err := c.Write([]byte{raw[i]}); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(b) != "POST /b 3" {
		t.Fatalf("got %d %q", resp.StatusCode, b)
	}
}

// pipeConn feeds fixed bytes to a Conn.
type pipeConn struct {
	net.Conn
	r io.Reader
}

func (p pipeConn) Read(b []byte) (int, error) { return p.r.Read(b) }

func FuzzConn(f *testing.F) {
	f.Add([]byte("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n"))
	f.Add([]byte("POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"))
	f.Add([]byte("GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\nxx"))
	f.Fuzz(func(t *testing.T, in []byte) {
		c := New(pipeConn{r: strings.NewReader(string(in))}, false)
		out, _ := io.ReadAll(io.LimitReader(readerFunc(c.Read), 1<<20))
		if !c.Bad() && c.Reason() == "" && string(out) != string(in) {
			t.Fatalf("accepted stream changed: %q -> %q", in, out)
		}
	})
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(b []byte) (int, error) { return f(b) }
