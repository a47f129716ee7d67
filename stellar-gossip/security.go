package main

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"time"

	"stellar.dev/daemon/atomicfile"
	"stellar.dev/stellar-gossip/pki"
)

// nodeCertTTL is how long a node certificate is valid.
const nodeCertTTL = 5 * 365 * 24 * time.Hour

// security holds the cluster CA, this node's certificate and the files
// they live in. The CA and the certificate are swapped whole when the node
// joins another cluster.
type security struct {
	dir  string
	name string

	mu   sync.RWMutex
	caV  *pki.CA
	cert tls.Certificate
}

// writeSecret writes a file 0600 atomically.
func writeSecret(path string, data []byte) error {
	return atomicfile.Write(path, data, 0o600)
}

// loadSecurity reads the CA and node certificate, creating a new cluster
// (CA and gossip key) on the very first start.
func loadSecurity(dir, name string, log *slog.Logger) (*security, error) {
	s := &security{dir: dir, name: name}
	caCrt, err1 := os.ReadFile(filepath.Join(dir, "ca.crt"))
	caKey, err2 := os.ReadFile(filepath.Join(dir, "ca.key"))
	if errors.Is(err1, os.ErrNotExist) && errors.Is(err2, os.ErrNotExist) {
		ca, err := pki.NewCA(name, time.Now())
		if err != nil {
			return nil, err
		}
		if err := writeSecret(filepath.Join(dir, "ca.key"), ca.KeyPEM); err != nil {
			return nil, err
		}
		if err := writeSecret(filepath.Join(dir, "ca.crt"), ca.CertPEM); err != nil {
			return nil, err
		}
		caCrt, caKey = ca.CertPEM, ca.KeyPEM
		log.Info("created a new cluster: cluster CA and gossip key", "ca_hash", ca.Hash())
	} else if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("read cluster CA in %s: %w", dir, errors.Join(err1, err2))
	}
	ca, err := pki.ParseCA(caCrt, caKey)
	if err != nil {
		return nil, fmt.Errorf("read cluster CA in %s: %w", dir, err)
	}
	s.caV = ca
	if _, err := os.Stat(filepath.Join(dir, "keyring.json")); errors.Is(err, os.ErrNotExist) {
		k := make([]byte, 32)
		if _, err := rand.Read(k); err != nil {
			return nil, fmt.Errorf("generate gossip key: %w", err)
		}
		if err := writeKeyring(dir, [][]byte{k}); err != nil {
			return nil, err
		}
	}
	if err := s.loadNodeCert(); err != nil {
		return nil, err
	}
	return s, nil
}

// loadNodeCert reads node.crt/node.key, issuing a new one from the CA when
// missing, from another CA or for another name.
func (s *security) loadNodeCert() error {
	crt, _ := os.ReadFile(filepath.Join(s.dir, "node.crt"))
	key, _ := os.ReadFile(filepath.Join(s.dir, "node.key"))
	if c, err := tls.X509KeyPair(crt, key); err == nil {
		leaf, err := x509.ParseCertificate(c.Certificate[0])
		if err == nil && leaf.Subject.CommonName == s.name && slices.Contains(leaf.DNSNames, pki.ServerName) && leaf.CheckSignatureFrom(s.caV.Cert) == nil && time.Now().Before(leaf.NotAfter.Add(-30*24*time.Hour)) {
			c.Leaf = leaf
			c.Certificate = append(c.Certificate, s.caV.Cert.Raw)
			s.cert = c
			return nil
		}
	}
	k, kpem, err := pki.NewKey()
	if err != nil {
		return err
	}
	cpem, err := s.caV.Issue(s.name, pki.RoleNode, &k.PublicKey, nodeCertTTL, time.Now(), nil)
	if err != nil {
		return err
	}
	return s.install(s.caV, cpem, kpem)
}

// install stores a CA (its key may be nil-PEM'd as it came) and a node
// certificate and switches to them.
func (s *security) install(ca *pki.CA, certPEM, keyPEM []byte) error {
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return fmt.Errorf("read node certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		return fmt.Errorf("read node certificate: %w", err)
	}
	if err := leaf.CheckSignatureFrom(ca.Cert); err != nil {
		return fmt.Errorf("node certificate is not signed by the cluster CA: %w", err)
	}
	c.Leaf = leaf
	c.Certificate = append(c.Certificate, ca.Cert.Raw)
	for _, f := range []struct {
		name string
		data []byte
	}{{"ca.key", ca.KeyPEM}, {"ca.crt", ca.CertPEM}, {"node.key", keyPEM}, {"node.crt", certPEM}} {
		if err := writeSecret(filepath.Join(s.dir, f.name), f.data); err != nil {
			return err
		}
	}
	s.mu.Lock()
	s.caV, s.cert = ca, c
	s.mu.Unlock()
	return nil
}

func (s *security) ca() *pki.CA { s.mu.RLock(); defer s.mu.RUnlock(); return s.caV }

func (s *security) nodeCert() *tls.Certificate {
	s.mu.RLock()
	defer s.mu.RUnlock()
	c := s.cert
	return &c
}

// verify checks a peer's certificate chain against the cluster CA and
// returns who it names.
func (s *security) verify(chain []*x509.Certificate) (pki.Identity, error) {
	if len(chain) == 0 {
		return pki.Identity{}, errors.New("no client certificate")
	}
	ca := s.ca()
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{Roots: ca.Pool(), Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return pki.Identity{}, fmt.Errorf("certificate of %q: %w", chain[0].Subject.CommonName, err)
	}
	return pki.IdentityOf(chain[0])
}

// serverTLS is the peer port's TLS: our node certificate; client
// certificates are requested and checked per request (joins come without).
func (s *security) serverTLS() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS13,
		ClientAuth:     tls.RequestClientCert,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return s.nodeCert(), nil },
		NextProtos:     []string{"http/1.1"},
	}
}

// clientTLS is how this node dials peers: its node certificate, and the
// server must hold a node certificate of the cluster CA.
func (s *security) clientTLS() *tls.Config {
	return &tls.Config{
		MinVersion:           tls.VersionTLS13,
		InsecureSkipVerify:   true, // verified below against the current CA; names are node names, not hosts
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return s.nodeCert(), nil },
		VerifyConnection: func(cs tls.ConnectionState) error {
			id, err := s.verify(cs.PeerCertificates)
			if err != nil {
				return fmt.Errorf("peer port server: %w", err)
			}
			if id.Role != pki.RoleNode {
				return fmt.Errorf("peer port server %s is not a node", id.Name)
			}
			return nil
		},
	}
}

func newTLSListener(l net.Listener, s *security) net.Listener {
	return tls.NewListener(keepAliveListener{l}, s.serverTLS())
}

// peerKeepAlive is the TCP keepalive period of peer-port connections, both
// ways: clients keep them 5 min between anti-entropy rounds.
const peerKeepAlive = 3 * time.Minute

// keepAliveListener sets peerKeepAlive on accepted TCP connections (Go's
// default probes every 15 s).
type keepAliveListener struct{ net.Listener }

func (l keepAliveListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok && err == nil {
		_ = tc.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true, Idle: peerKeepAlive, Interval: peerKeepAlive, Count: 3})
	}
	return c, err
}

// Keyring file: serf's format, a JSON list of base64 keys, primary first.
func readKeyring(dir string) ([][]byte, error) {
	raw, err := os.ReadFile(filepath.Join(dir, "keyring.json"))
	if err != nil {
		return nil, fmt.Errorf("read gossip keyring: %w", err)
	}
	var enc []string
	if err := json.Unmarshal(raw, &enc); err != nil {
		return nil, fmt.Errorf("read gossip keyring: %w", err)
	}
	if len(enc) == 0 {
		return nil, errors.New("read gossip keyring: it holds no key")
	}
	keys := make([][]byte, 0, len(enc))
	for _, e := range enc {
		k, err := base64.StdEncoding.DecodeString(e)
		if err != nil || (len(k) != 16 && len(k) != 24 && len(k) != 32) {
			return nil, errors.New("read gossip keyring: a key is not 16, 24 or 32 bytes of base64")
		}
		keys = append(keys, k)
	}
	return keys, nil
}

func writeKeyring(dir string, keys [][]byte) error {
	enc := make([]string, len(keys))
	for i, k := range keys {
		enc[i] = base64.StdEncoding.EncodeToString(k)
	}
	raw, _ := json.Marshal(enc)
	return writeSecret(filepath.Join(dir, "keyring.json"), raw)
}

// keyDigest is a short digest of the set of keys held (not which is primary).
func keyDigest(keys [][]byte) string {
	enc := make([]string, len(keys))
	for i, k := range keys {
		enc[i] = base64.StdEncoding.EncodeToString(k)
	}
	sort.Strings(enc)
	h := sha256.New()
	for _, e := range enc {
		h.Write([]byte(e))
	}
	return hex.EncodeToString(h.Sum(nil))[:8]
}

func (s *service) keyDigestLocked() string {
	if s.keyring == nil {
		return ""
	}
	return keyDigest(s.keyring.GetKeys())
}
