// Package acme obtains and renews the certificates of TLS hosts as a
// cluster job: for each host exactly one node (rendezvous hashing over the
// alive members) places the order; the account, challenge answers,
// certificates and keys live in cluster keys, so whichever node the CA or
// a client reaches answers the challenge and terminates TLS.
//
// Cluster keys: acme/account (Account), acme/challenges/<token>
// (proxyapi.Challenge, HTTP-01), acme/alpn/<host> (proxyapi.Certificate,
// the TLS-ALPN-01 certificate), acme/certs/<host> (proxyapi.Certificate).
package acme

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"sync"
	"time"

	"golang.org/x/crypto/acme"

	"stellar.dev/api/errdefs"
	"stellar.dev/api/gossipapi"
	"stellar.dev/api/proxyapi"
)

// Key prefixes.
const (
	AccountKey      = "acme/account"
	ChallengePrefix = "acme/challenges/"
	ALPNPrefix      = "acme/alpn/"
	CertPrefix      = "acme/certs/"
)

// Challenge types, in order of preference.
const (
	HTTP01    = "http-01"
	TLSALPN01 = "tls-alpn-01"
)

// Store is the part of the gossip client the manager uses.
type Store interface {
	Get(ctx context.Context, key string) (gossipapi.Entry, error)
	Put(ctx context.Context, key string, value any, ifMatch string) (gossipapi.PutResult, error)
	Delete(ctx context.Context, key, ifMatch string) error
	Members(ctx context.Context) ([]gossipapi.Member, error)
}

// Account is the value of acme/account: one ACME account for the cluster.
type Account struct {
	Directory string `json:"directory"`
	Email     string `json:"email"`
	KeyPEM    string `json:"key_pem"`
}

// Config of the manager.
type Config struct {
	// Directory is the ACME directory URL.
	Directory string
	// Email is the account's contact ("" = none).
	Email string
	// Node is this node's name.
	Node string
	// Check is the longest time between two looks at the certificates.
	Check time.Duration
	// HTTPClient talks to the CA (nil: http.DefaultClient).
	HTTPClient *http.Client
}

// Sources tell the manager what the proxy serves.
type Sources struct {
	// Hosts returns the TLS hosts of the routing table.
	Hosts func() []string
	// Certificate returns the certificate served for host, or nil.
	Certificate func(host string) *tls.Certificate
	// Serving reports whether the local proxy answers the HTTP-01 token
	// (or, with token "", the TLS-ALPN-01 certificate of host).
	Serving func(host, token string) bool
}

// Manager orders and renews certificates.
type Manager struct {
	cfg   Config
	store Store
	src   Sources
	log   *slog.Logger
	kick  chan struct{}

	mu    sync.Mutex
	fails map[string]failure
	// renew is when a certificate this node stored is due: the proxy's
	// table may not hold it yet when the next pass runs.
	renew map[string]time.Time
}

type failure struct {
	n    int
	next time.Time
}

// New returns a manager; Run does the work.
func New(cfg Config, store Store, src Sources, log *slog.Logger) *Manager {
	if cfg.Check <= 0 {
		cfg.Check = time.Minute
	}
	return &Manager{cfg: cfg, store: store, src: src, log: log.With("part", "acme"), kick: make(chan struct{}, 1), fails: map[string]failure{}, renew: map[string]time.Time{}}
}

// Kick makes the manager look at the hosts now (the table changed).
func (m *Manager) Kick() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// Owner returns the node that orders host's certificate: the highest
// SHA-256(host, node) among nodes (rendezvous hashing).
func Owner(host string, nodes []string) string {
	best, bestH := "", uint64(0)
	for _, n := range nodes {
		h := sha256.Sum256([]byte(host + "\x00" + n))
		v := binary.BigEndian.Uint64(h[:8])
		if best == "" || v > bestH || (v == bestH && n < best) {
			best, bestH = n, v
		}
	}
	return best
}

// renewAt is when a certificate should be renewed: a third of its
// lifetime before it expires.
func renewAt(c *tls.Certificate) time.Time {
	leaf := c.Leaf
	if leaf == nil && len(c.Certificate) > 0 {
		leaf, _ = x509.ParseCertificate(c.Certificate[0])
	}
	if leaf == nil {
		return time.Time{}
	}
	life := leaf.NotAfter.Sub(leaf.NotBefore)
	return leaf.NotAfter.Add(-life / 3)
}

// Run looks at the hosts on every kick and at least every Check, until
// ctx is done.
func (m *Manager) Run(ctx context.Context) {
	for {
		wait := m.pass(ctx)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-m.kick:
		case <-t.C:
		}
		t.Stop()
	}
}

// pass orders what this node owns and needs; it returns when to look again.
func (m *Manager) pass(ctx context.Context) time.Duration {
	next := m.cfg.Check
	hosts := m.src.Hosts()
	if len(hosts) == 0 {
		return next
	}
	members, err := m.store.Members(ctx)
	if err != nil {
		m.log.Debug("list members", "err", err)
		return min(next, 5*time.Second)
	}
	var alive []string
	for _, mb := range members {
		if mb.Status == gossipapi.StatusAlive {
			alive = append(alive, mb.Name)
		}
	}
	sort.Strings(alive)
	for _, host := range hosts {
		m.mu.Lock()
		at := m.renew[host]
		m.mu.Unlock()
		if c := m.src.Certificate(host); c != nil {
			if r := renewAt(c); r.After(at) {
				at = r
			}
		}
		if d := time.Until(at); d > 0 {
			next = min(next, d+time.Second)
			continue
		}
		if Owner(host, alive) != m.cfg.Node {
			continue
		}
		m.mu.Lock()
		f := m.fails[host]
		m.mu.Unlock()
		if d := time.Until(f.next); d > 0 {
			next = min(next, d)
			continue
		}
		challenge := HTTP01
		if f.n%2 == 1 {
			challenge = TLSALPN01 // alternate after a failure
		}
		if err := m.order(ctx, host, challenge); err != nil {
			if ctx.Err() != nil {
				return next
			}
			back := min(2*time.Second<<min(f.n, 11), time.Hour)
			m.mu.Lock()
			m.fails[host] = failure{n: f.n + 1, next: time.Now().Add(back)}
			m.mu.Unlock()
			m.log.Warn("acme order failed", "host", host, "challenge", challenge, "retry_in", back, "err", err)
			next = min(next, back)
			continue
		}
		m.mu.Lock()
		delete(m.fails, host)
		m.mu.Unlock()
	}
	return next
}

// account loads the cluster's account, or makes and registers one.
func (m *Manager) account(ctx context.Context) (*acme.Client, error) {
	cl := &acme.Client{DirectoryURL: m.cfg.Directory, HTTPClient: m.cfg.HTTPClient, UserAgent: "stellar-proxyd"}
	e, err := m.store.Get(ctx, AccountKey)
	if err == nil {
		var a Account
		if err := json.Unmarshal(e.Value, &a); err == nil && a.Directory == m.cfg.Directory {
			if k, err := parseKey(a.KeyPEM); err == nil {
				cl.Key = k
				return cl, nil
			}
		}
	} else if !errors.Is(err, errdefs.ErrNotFound) {
		return nil, fmt.Errorf("read acme account: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("make account key: %w", err)
	}
	cl.Key = key
	acct := &acme.Account{}
	if m.cfg.Email != "" {
		acct.Contact = []string{"mailto:" + m.cfg.Email}
	}
	if _, err := cl.Register(ctx, acct, acme.AcceptTOS); err != nil && !errors.Is(err, acme.ErrAccountAlreadyExists) {
		return nil, fmt.Errorf("register acme account at %s: %w", m.cfg.Directory, err)
	}
	kp, err := keyPEM(key)
	if err != nil {
		return nil, err
	}
	if _, err := m.store.Put(ctx, AccountKey, Account{Directory: m.cfg.Directory, Email: m.cfg.Email, KeyPEM: kp}, ""); err != nil {
		return nil, fmt.Errorf("store acme account: %w", err)
	}
	m.log.Info("acme account registered", "directory", m.cfg.Directory)
	return cl, nil
}

// order gets a certificate for host with the given challenge type.
func (m *Manager) order(ctx context.Context, host, challenge string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cl, err := m.account(ctx)
	if err != nil {
		return err
	}
	m.log.Info("acme order placed", "host", host, "challenge", challenge, "node", m.cfg.Node)
	o, err := cl.AuthorizeOrder(ctx, acme.DomainIDs(host))
	if err != nil {
		return fmt.Errorf("authorize order for %s: %w", host, err)
	}
	for _, u := range o.AuthzURLs {
		if err := m.authorize(ctx, cl, u, host, challenge); err != nil {
			return err
		}
	}
	ready, err := cl.WaitOrder(ctx, o.URI)
	if err != nil {
		return fmt.Errorf("wait for order of %s: %w", host, err)
	}
	finalize := ready.FinalizeURL
	if finalize == "" {
		finalize = o.FinalizeURL
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("make key for %s: %w", host, err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: []string{host}}, key)
	if err != nil {
		return fmt.Errorf("make csr for %s: %w", host, err)
	}
	ders, _, err := cl.CreateOrderCert(ctx, finalize, csr, true)
	if err != nil {
		// A CA may answer the finalize with a "processing" order and no
		// Location (pebble does); x/crypto/acme then polls an empty URL.
		// Wait on the order URL we know and fetch the certificate.
		done, werr := cl.WaitOrder(ctx, o.URI)
		if werr != nil || done.Status != acme.StatusValid || done.CertURL == "" {
			return fmt.Errorf("finalize order of %s: %w", host, err)
		}
		if ders, err = cl.FetchCert(ctx, done.CertURL, true); err != nil {
			return fmt.Errorf("fetch certificate of %s: %w", host, err)
		}
	}
	if len(ders) == 0 {
		return fmt.Errorf("finalize order of %s: the CA sent no certificate", host)
	}
	var chain []byte
	for _, d := range ders {
		chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: d})...)
	}
	leaf, err := x509.ParseCertificate(ders[0])
	if err != nil {
		return fmt.Errorf("read certificate of %s: %w", host, err)
	}
	kp, err := keyPEM(key)
	if err != nil {
		return err
	}
	c := proxyapi.Certificate{Host: host, CertPEM: string(chain), KeyPEM: kp, NotAfter: leaf.NotAfter}
	if _, err := m.store.Put(ctx, CertPrefix+host, c, ""); err != nil {
		return fmt.Errorf("store certificate of %s: %w", host, err)
	}
	m.mu.Lock()
	m.renew[host] = leaf.NotAfter.Add(-leaf.NotAfter.Sub(leaf.NotBefore) / 3)
	m.mu.Unlock()
	m.log.Info("acme certificate stored", "host", host, "not_after", leaf.NotAfter, "serial", leaf.SerialNumber.String())
	return nil
}

func (m *Manager) authorize(ctx context.Context, cl *acme.Client, url, host, want string) error {
	z, err := cl.GetAuthorization(ctx, url)
	if err != nil {
		return fmt.Errorf("read authorization of %s: %w", host, err)
	}
	if z.Status == acme.StatusValid {
		return nil
	}
	var chal *acme.Challenge
	for _, c := range z.Challenges {
		if c.Type == want {
			chal = c
		}
	}
	if chal == nil {
		return fmt.Errorf("the CA offers no %s challenge for %s", want, host)
	}
	var cleanup func()
	switch want {
	case HTTP01:
		ka, err := cl.HTTP01ChallengeResponse(chal.Token)
		if err != nil {
			return fmt.Errorf("answer http-01 for %s: %w", host, err)
		}
		key := ChallengePrefix + chal.Token
		if _, err := m.store.Put(ctx, key, proxyapi.Challenge{Token: chal.Token, KeyAuth: ka}, ""); err != nil {
			return fmt.Errorf("store http-01 answer for %s: %w", host, err)
		}
		cleanup = func() { _ = m.store.Delete(context.WithoutCancel(ctx), key, "") }
		if err := m.waitServing(ctx, host, chal.Token); err != nil {
			cleanup()
			return err
		}
	case TLSALPN01:
		cert, err := cl.TLSALPN01ChallengeCert(chal.Token, host)
		if err != nil {
			return fmt.Errorf("make tls-alpn-01 certificate for %s: %w", host, err)
		}
		c, err := certPEM(cert)
		if err != nil {
			return err
		}
		c.Host = host
		key := ALPNPrefix + host
		if _, err := m.store.Put(ctx, key, c, ""); err != nil {
			return fmt.Errorf("store tls-alpn-01 certificate for %s: %w", host, err)
		}
		cleanup = func() { _ = m.store.Delete(context.WithoutCancel(ctx), key, "") }
		if err := m.waitServing(ctx, host, ""); err != nil {
			cleanup()
			return err
		}
	}
	defer cleanup()
	if _, err := cl.Accept(ctx, chal); err != nil {
		return fmt.Errorf("accept %s challenge for %s: %w", want, host, err)
	}
	if _, err := cl.WaitAuthorization(ctx, z.URI); err != nil {
		return fmt.Errorf("wait for %s authorization of %s: %w", want, host, err)
	}
	return nil
}

// waitServing waits until the local proxy serves the answer, then gives
// replication a moment to carry it to the other nodes.
func (m *Manager) waitServing(ctx context.Context, host, token string) error {
	deadline := time.Now().Add(30 * time.Second)
	for !m.src.Serving(host, token) {
		if time.Now().After(deadline) {
			return fmt.Errorf("challenge answer for %s not served within 30s", host)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(time.Second):
	}
	return nil
}

func keyPEM(k crypto.Signer) (string, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return "", fmt.Errorf("encode key: %w", err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})), nil
}

func parseKey(s string) (crypto.Signer, error) {
	b, _ := pem.Decode([]byte(s))
	if b == nil {
		return nil, errors.New("no PEM block in key")
	}
	k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse key: %w", err)
	}
	s2, ok := k.(crypto.Signer)
	if !ok {
		return nil, errors.New("key cannot sign")
	}
	return s2, nil
}

func certPEM(c tls.Certificate) (proxyapi.Certificate, error) {
	var chain []byte
	for _, d := range c.Certificate {
		chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: d})...)
	}
	signer, ok := c.PrivateKey.(crypto.Signer)
	if !ok {
		return proxyapi.Certificate{}, errors.New("challenge certificate key cannot sign")
	}
	kp, err := keyPEM(signer)
	if err != nil {
		return proxyapi.Certificate{}, err
	}
	return proxyapi.Certificate{CertPEM: string(chain), KeyPEM: kp}, nil
}
