// Package pki is the cluster's certificate authority: it creates the CA,
// issues node and operator certificates (backdated for edge clocks), and
// reads back who a peer certificate names and which role it carries.
package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"
)

// Roles carried by certificates (in the subject's OrganizationalUnit).
const (
	RoleNode  = "node"
	RoleAdmin = "admin"
	RoleRead  = "read"
)

// ServerName is the DNS name every node certificate carries besides the
// node's own name; remote clients verify the peer port against it.
const ServerName = "stellar-peer"

// Backdate is how far certificates' start times are moved into the past,
// so nodes with slow clocks accept them.
const Backdate = 24 * time.Hour

// CA is the cluster's certificate authority.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
	// CertPEM and KeyPEM are the encoded forms kept on disk.
	CertPEM, KeyPEM []byte
}

// NewCA creates a CA valid for ten years.
func NewCA(cluster string, now time.Time) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate ca key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "stellar cluster CA " + cluster, Organization: []string{"stellar"}},
		NotBefore:             now.Add(-Backdate),
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("create ca certificate: %w", err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode ca key: %w", err)
	}
	return ParseCA(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}))
}

// ParseCA reads a CA from PEM.
func ParseCA(certPEM, keyPEM []byte) (*CA, error) {
	cert, err := ParseCert(certPEM)
	if err != nil {
		return nil, fmt.Errorf("read ca certificate: %w", err)
	}
	if !cert.IsCA {
		return nil, errors.New("read ca certificate: it is not a CA")
	}
	key, err := ParseKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("read ca key: %w", err)
	}
	return &CA{Cert: cert, Key: key, CertPEM: certPEM, KeyPEM: keyPEM}, nil
}

// Hash is the SHA-256 of the CA certificate, hex: what a join token pins.
func (ca *CA) Hash() string { return HashCert(ca.Cert.Raw) }

// HashCert hashes a DER certificate.
func HashCert(der []byte) string {
	h := sha256.Sum256(der)
	return hex.EncodeToString(h[:])
}

// Pool returns a pool holding only the CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// Issue signs a certificate for pub naming name with role, valid for ttl.
// Node certificates are usable by servers and clients; operator
// certificates only as clients.
func (ca *CA) Issue(name, role string, pub *ecdsa.PublicKey, ttl time.Duration, now time.Time, hosts []string) ([]byte, error) {
	switch role {
	case RoleNode, RoleAdmin, RoleRead:
	default:
		return nil, fmt.Errorf("role %q is not node, admin or read", role)
	}
	usage := []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	if role == RoleNode {
		usage = append(usage, x509.ExtKeyUsageServerAuth)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: name, OrganizationalUnit: []string{role}, Organization: []string{"stellar"}},
		NotBefore:    now.Add(-Backdate),
		NotAfter:     now.Add(ttl),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  usage,
		DNSNames:     []string{name},
	}
	if role == RoleNode {
		// Remote sctl checks the server against the CA under this one name:
		// it dials addresses, and knows no node names.
		tmpl.DNSNames = append(tmpl.DNSNames, ServerName)
	}
	_ = hosts
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("sign certificate for %s: %w", name, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

// NewKey creates a private key and its PEM.
func NewKey() (*ecdsa.PrivateKey, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key: %w", err)
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("encode key: %w", err)
	}
	return key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), nil
}

// ParseCert reads one PEM certificate.
func ParseCert(p []byte) (*x509.Certificate, error) {
	b, _ := pem.Decode(p)
	if b == nil || b.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM certificate")
	}
	return x509.ParseCertificate(b.Bytes)
}

// ParseKey reads one PEM EC private key.
func ParseKey(p []byte) (*ecdsa.PrivateKey, error) {
	b, _ := pem.Decode(p)
	if b == nil || b.Type != "EC PRIVATE KEY" {
		return nil, errors.New("no PEM EC private key")
	}
	return x509.ParseECPrivateKey(b.Bytes)
}

// ParsePublicKey reads a PEM public key (PKIX).
func ParsePublicKey(p []byte) (*ecdsa.PublicKey, error) {
	b, _ := pem.Decode(p)
	if b == nil || b.Type != "PUBLIC KEY" {
		return nil, errors.New("no PEM public key")
	}
	k, err := x509.ParsePKIXPublicKey(b.Bytes)
	if err != nil {
		return nil, err
	}
	ek, ok := k.(*ecdsa.PublicKey)
	if !ok {
		return nil, errors.New("public key is not ECDSA")
	}
	return ek, nil
}

// PublicKeyPEM encodes a public key.
func PublicKeyPEM(k *ecdsa.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(k)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

// Identity is who a verified peer certificate names.
type Identity struct {
	Name string
	Role string
}

func (i Identity) String() string { return i.Role + ":" + i.Name }

// IdentityOf reads the name and role of a verified certificate.
func IdentityOf(c *x509.Certificate) (Identity, error) {
	if len(c.Subject.OrganizationalUnit) != 1 {
		return Identity{}, errors.New("certificate carries no role")
	}
	role := c.Subject.OrganizationalUnit[0]
	switch role {
	case RoleNode, RoleAdmin, RoleRead:
	default:
		return Identity{}, fmt.Errorf("certificate role %q is unknown", role)
	}
	name := strings.TrimSpace(c.Subject.CommonName)
	if name == "" {
		return Identity{}, errors.New("certificate names nobody")
	}
	return Identity{Name: name, Role: role}, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		return big.NewInt(time.Now().UnixNano())
	}
	return n
}
