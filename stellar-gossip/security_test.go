package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"stellar.dev/api/client"
	"stellar.dev/api/errdefs"
	"stellar.dev/daemon/daemontest"
	"stellar.dev/stellar-gossip/pki"
	"stellar.dev/stellar-gossip/token"
)

func TestJoin_refusedTokens(t *testing.T) {
	needRoot(t)
	bin := daemontest.Build(t, "stellar.dev/stellar-gossip")
	a := newTestNode(t, bin, "ta", "127.0.3.21", "")
	b := newTestNode(t, bin, "tb", "127.0.3.22", "")
	other := newTestNode(t, bin, "tc", "127.0.3.23", "")

	expired := a.token(t, "1s", 0)
	revoked := a.token(t, "1h", 0)
	once := a.token(t, "1h", 1)
	if err := a.raw.Do(context.Background(), http.MethodDelete, "/v1/cluster/tokens/"+revoked.ID, nil, nil); err != nil {
		t.Fatal(err)
	}
	good, err := token.Parse(a.token(t, "1h", 0).Token)
	if err != nil {
		t.Fatal(err)
	}
	wrongSecret := good
	wrongSecret.Secret = make([]byte, 32)
	wrongCA := good
	wrongCA.CAHash = strings.Repeat("ab", 32)
	// A token of another cluster pointed at this one's address.
	foreign, _ := token.Parse(other.token(t, "1h", 0).Token)
	foreign.Addr = good.Addr
	time.Sleep(1500 * time.Millisecond) // let the 1s token expire

	for _, tc := range []struct {
		name, tok string
		want      error
		logged    string
	}{
		{"expired", expired.Token, errdefs.ErrPermissionDenied, "is expired"},
		{"revoked", revoked.Token, errdefs.ErrPermissionDenied, "is revoked"},
		{"wrong secret", wrongSecret.String(), errdefs.ErrPermissionDenied, "wrong secret"},
		{"wrong ca hash", wrongCA.String(), errdefs.ErrUnavailable, ""},
		{"foreign cluster", foreign.String(), errdefs.ErrUnavailable, ""},
		{"garbage", "stl1.nope", errdefs.ErrInvalidArgument, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := b.join(tc.tok)
			if !errors.Is(err, tc.want) {
				t.Fatalf("join with %s token: %v, want %v", tc.name, err, tc.want)
			}
			if tc.logged != "" {
				eventually(t, 10*time.Second, "the issuing node logs "+tc.logged, func() error {
					if !strings.Contains(a.out.String(), tc.logged) {
						return errors.New("not logged")
					}
					return nil
				})
			}
		})
	}
	t.Run("usedUp", func(t *testing.T) {
		if err := b.join(once.Token); err != nil {
			t.Fatalf("first use: %v", err)
		}
		if err := other.join(once.Token); !errors.Is(err, errdefs.ErrPermissionDenied) {
			t.Fatalf("second use of a one-use token: %v", err)
		}
	})
}

// operatorClient dials the peer port like remote sctl does.
func operatorClient(t *testing.T, n *testNode, name, role, ttl string) (*tls.Config, CertResponse) {
	var cr CertResponse
	if err := n.raw.Do(context.Background(), http.MethodPost, "/v1/cluster/certs", CertRequest{Name: name, Role: role, TTL: ttl}, &cr); err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair([]byte(cr.Cert), []byte(cr.Key))
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13, ServerName: pki.ServerName}, cr
}

func TestPeerPort_certificateMatrix(t *testing.T) {
	needRoot(t)
	bin := daemontest.Build(t, "stellar.dev/stellar-gossip")
	a := newTestNode(t, bin, "pa", "127.0.3.31", "")
	stranger := newTestNode(t, bin, "pb", "127.0.3.32", "")
	ctx := context.Background()
	addr := "127.0.3.31:7947"

	pool := x509.NewCertPool()
	admin, cr := operatorClient(t, a, "alice", "admin", "")
	pool.AppendCertsFromPEM([]byte(cr.CA))
	admin.RootCAs = pool
	read, _ := operatorClient(t, a, "bob", "read", "")
	read.RootCAs = pool
	expired, _ := operatorClient(t, a, "carol", "admin", "1s")
	expired.RootCAs = pool
	foreign, _ := operatorClient(t, stranger, "mallory", "admin", "")
	foreign.RootCAs = pool
	none := &tls.Config{RootCAs: pool, ServerName: pki.ServerName, MinVersion: tls.VersionTLS13}
	time.Sleep(1500 * time.Millisecond)

	for _, tc := range []struct {
		name   string
		tc     *tls.Config
		method string
		want   error
	}{
		{"admin reads", admin, http.MethodGet, nil},
		{"admin writes", admin, http.MethodPut, nil},
		{"read reads", read, http.MethodGet, nil},
		{"read may not write", read, http.MethodPut, errdefs.ErrPermissionDenied},
		{"no certificate", none, http.MethodGet, errdefs.ErrPermissionDenied},
		{"expired certificate", expired, http.MethodGet, errdefs.ErrPermissionDenied},
		{"another cluster's CA", foreign, http.MethodGet, errdefs.ErrPermissionDenied},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := client.Remote("stellar-gossip", addr, tc.tc).WithTimeout(10 * time.Second)
			var err error
			if tc.method == http.MethodGet {
				err = c.Do(ctx, http.MethodGet, "/v1/members", nil, nil)
			} else {
				err = c.Do(ctx, http.MethodPut, "/v1/state/apps/remote", map[string]string{"by": "remote"}, nil)
			}
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("%s: got %v, want %v", tc.name, err, tc.want)
			}
		})
	}
	t.Run("operators may not call node endpoints", func(t *testing.T) {
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: admin}}
		resp, err := hc.Post("https://"+addr+"/v1/peer/digest", "application/json", strings.NewReader(`{"w":1}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Fatalf("admin on /v1/peer/digest: %d, want 403", resp.StatusCode)
		}
	})
	t.Run("relay refuses calls off the allowlist", func(t *testing.T) {
		c := client.Remote("stellar-gossip", addr, admin).WithTimeout(10 * time.Second)
		err := c.Do(ctx, http.MethodPost, "/v1/cluster/tokens", map[string]any{}, nil)
		if !errors.Is(err, errdefs.ErrPermissionDenied) {
			t.Fatalf("token creation over the peer port: %v, want permission denied", err)
		}
	})
	eventually(t, 10*time.Second, "calls logged with the caller", func() error {
		if !strings.Contains(a.out.String(), "caller=admin:alice") {
			return errors.New("no caller=admin:alice in the log")
		}
		return nil
	})
}

func TestReplication_withoutUserEvents(t *testing.T) {
	needRoot(t)
	bin := daemontest.Build(t, "stellar.dev/stellar-gossip")
	const iv = 2 * time.Second
	extra := fmt.Sprintf("user_events = false\nanti_entropy = %q", iv.String())
	var nodes []*testNode
	for i := 1; i <= 3; i++ {
		nodes = append(nodes, newTestNode(t, bin, fmt.Sprintf("u%d", i), fmt.Sprintf("127.0.3.4%d", i), extra))
	}
	tok := nodes[0].token(t, "1h", 0)
	for _, n := range nodes[1:] {
		if err := n.join(tok.Token); err != nil {
			t.Fatal(err)
		}
	}
	allSee(t, nodes, 60*time.Second, map[string]string{"u1": "alive", "u2": "alive", "u3": "alive"})
	ctx := context.Background()
	for i, n := range nodes {
		if _, err := n.g.Put(ctx, fmt.Sprintf("apps/u%d", i), i, ""); err != nil {
			t.Fatal(err)
		}
	}
	big := strings.Repeat("x", 4000) // too large for a user event even with them on
	if _, err := nodes[2].g.Put(ctx, "apps/big", big, ""); err != nil {
		t.Fatal(err)
	}
	// Anti-entropy alone must carry every write. With jitter a round comes
	// every 1-3 s per node; the bound here is generous for a loaded machine.
	eventually(t, 60*time.Second, "convergence by anti-entropy alone", func() error {
		if err := converged(nodes, "apps/"); err != nil {
			return err
		}
		l, err := nodes[0].g.List(ctx, "apps/")
		if err != nil || len(l.Entries) != 4 {
			return fmt.Errorf("u1 has %d of 4 keys (%v)", len(l.Entries), err)
		}
		return nil
	})
}
