// Package token encodes and parses Stellar join tokens: an id, a secret,
// the issuing node's peer-port address and the hash of the cluster CA.
// A token never carries the gossip key.
package token

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
)

// Prefix starts every token (format version 1).
const Prefix = "stl1."

// Token is a parsed join token.
type Token struct {
	// ID names the token in listings and revocations (8 hex).
	ID string
	// Secret is 32 random bytes.
	Secret []byte
	// Addr is host:port of the issuing node's peer port.
	Addr string
	// CAHash is the hex SHA-256 of the cluster CA certificate.
	CAHash string
}

// New makes a token with a fresh id and secret.
func New(addr, caHash string) (Token, error) {
	id := make([]byte, 4)
	sec := make([]byte, 32)
	if _, err := rand.Read(id); err != nil {
		return Token{}, fmt.Errorf("generate token id: %w", err)
	}
	if _, err := rand.Read(sec); err != nil {
		return Token{}, fmt.Errorf("generate token secret: %w", err)
	}
	return Token{ID: hex.EncodeToString(id), Secret: sec, Addr: addr, CAHash: caHash}, nil
}

// String encodes t: stl1.<id>.<secret b64url>.<addr b64url>.<ca hash>.
func (t Token) String() string {
	enc := base64.RawURLEncoding
	return Prefix + t.ID + "." + enc.EncodeToString(t.Secret) + "." + enc.EncodeToString([]byte(t.Addr)) + "." + t.CAHash
}

// Parse reads a token, saying what is wrong with a bad one.
func Parse(s string) (Token, error) {
	s = strings.TrimSpace(s)
	rest, ok := strings.CutPrefix(s, Prefix)
	if !ok {
		return Token{}, errors.New("token does not start with " + Prefix + " (is it a Stellar join token?)")
	}
	parts := strings.Split(rest, ".")
	if len(parts) != 4 {
		return Token{}, fmt.Errorf("token has %d fields, want 4 (id, secret, address, ca hash)", len(parts))
	}
	var t Token
	if len(parts[0]) != 8 || !isHex(parts[0]) {
		return Token{}, fmt.Errorf("token id %q is not 8 hex digits", parts[0])
	}
	t.ID = parts[0]
	enc := base64.RawURLEncoding
	sec, err := enc.DecodeString(parts[1])
	if err != nil || len(sec) != 32 {
		return Token{}, errors.New("token secret is not 32 bytes of base64url")
	}
	t.Secret = sec
	addr, err := enc.DecodeString(parts[2])
	if err != nil {
		return Token{}, errors.New("token address is not base64url")
	}
	host, port, err := net.SplitHostPort(string(addr))
	if err != nil || host == "" {
		return Token{}, fmt.Errorf("token address %q is not host:port", addr)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return Token{}, fmt.Errorf("token address %q has no valid port", addr)
	}
	t.Addr = string(addr)
	if len(parts[3]) != 64 || !isHex(parts[3]) {
		return Token{}, errors.New("token ca hash is not 64 hex digits")
	}
	t.CAHash = parts[3]
	return t, nil
}

func isHex(s string) bool {
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}
