package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/serf/serf"

	"stellar.dev/api/errdefs"
	"stellar.dev/daemon/httpapi"
	"stellar.dev/stellar-gossip/pki"
	"stellar.dev/stellar-gossip/token"
)

// TokenInfo is one issued join token as listed (never its secret).
type TokenInfo struct {
	ID         string    `json:"id"`
	SecretHash string    `json:"secret_hash"`
	Created    time.Time `json:"created"`
	Expires    time.Time `json:"expires"`
	Uses       int       `json:"uses"` // allowed; 0 = unlimited
	Used       int       `json:"used"`
	Revoked    bool      `json:"revoked"`
}

// Status says whether the token can still be used.
func (t TokenInfo) Status(now time.Time) string {
	switch {
	case t.Revoked:
		return "revoked"
	case now.After(t.Expires):
		return "expired"
	case t.Uses > 0 && t.Used >= t.Uses:
		return "used up"
	}
	return "valid"
}

var tokensMu sync.Mutex

func (s *service) readTokens() ([]TokenInfo, error) {
	raw, err := os.ReadFile(filepath.Join(s.dir, "tokens.json"))
	if errors.Is(err, os.ErrNotExist) {
		return []TokenInfo{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read tokens: %w", err)
	}
	var ts []TokenInfo
	if err := json.Unmarshal(raw, &ts); err != nil {
		return nil, fmt.Errorf("read tokens: %w", err)
	}
	return ts, nil
}

func (s *service) writeTokens(ts []TokenInfo) error {
	raw, _ := json.MarshalIndent(ts, "", "  ")
	return writeSecret(filepath.Join(s.dir, "tokens.json"), raw)
}

func hashSecret(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// clusterRoutes registers the operator calls of sctl cluster.
func (s *service) clusterRoutes(mux *http.ServeMux) {
	mux.Handle("POST /v1/cluster/tokens", s.guard(s.handleTokenCreate))
	mux.Handle("GET /v1/cluster/tokens", s.guard(s.handleTokenList))
	mux.Handle("DELETE /v1/cluster/tokens/{id}", s.guard(s.handleTokenRevoke))
	mux.Handle("POST /v1/cluster/join", s.guard(s.handleJoin))
	mux.Handle("GET /v1/cluster/keys", s.guard(s.handleKeys))
	mux.Handle("POST /v1/cluster/keys/{op}", s.guard(s.handleKeyOp))
	mux.Handle("POST /v1/cluster/certs", s.guard(s.handleCertCreate))
}

// TokenRequest is the body of POST /v1/cluster/tokens.
type TokenRequest struct {
	TTL  string `json:"ttl"`
	Uses int    `json:"uses"`
}

// TokenResponse answers it.
type TokenResponse struct {
	Token   string    `json:"token"`
	ID      string    `json:"id"`
	Expires time.Time `json:"expires"`
	Uses    int       `json:"uses"`
}

func (s *service) handleTokenCreate(w http.ResponseWriter, r *http.Request) error {
	var req TokenRequest
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return err
	}
	ttl := 24 * time.Hour
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil || d < time.Second || d > 365*24*time.Hour {
			return errdefs.New(errdefs.ErrInvalidArgument, "ttl %q is not a duration between 1s and 8760h", req.TTL)
		}
		ttl = d
	}
	if req.Uses < 0 {
		return errdefs.New(errdefs.ErrInvalidArgument, "uses %d is negative (0 means unlimited)", req.Uses)
	}
	t, err := token.New(s.peerAddr, s.sec.ca().Hash())
	if err != nil {
		return err
	}
	now := time.Now().UTC()
	info := TokenInfo{ID: t.ID, SecretHash: hashSecret(t.Secret), Created: now, Expires: now.Add(ttl), Uses: req.Uses}
	tokensMu.Lock()
	defer tokensMu.Unlock()
	ts, err := s.readTokens()
	if err != nil {
		return err
	}
	if err := s.writeTokens(append(ts, info)); err != nil {
		return err
	}
	s.log.Info("join token created", "id", t.ID, "expires", info.Expires, "uses", req.Uses)
	writeJSON(w, TokenResponse{Token: t.String(), ID: t.ID, Expires: info.Expires, Uses: req.Uses})
	return nil
}

func (s *service) handleTokenList(w http.ResponseWriter, r *http.Request) error {
	tokensMu.Lock()
	ts, err := s.readTokens()
	tokensMu.Unlock()
	if err != nil {
		return err
	}
	type row struct {
		TokenInfo
		Status string `json:"status"`
	}
	out := []row{}
	for _, t := range ts {
		t2 := t
		t2.SecretHash = ""
		out = append(out, row{t2, t.Status(time.Now())})
	}
	writeJSON(w, out)
	return nil
}

func (s *service) handleTokenRevoke(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	tokensMu.Lock()
	defer tokensMu.Unlock()
	ts, err := s.readTokens()
	if err != nil {
		return err
	}
	for i := range ts {
		if ts[i].ID == id {
			ts[i].Revoked = true
			if err := s.writeTokens(ts); err != nil {
				return err
			}
			s.log.Info("join token revoked", "id", id)
			w.WriteHeader(http.StatusNoContent)
			return nil
		}
	}
	return errdefs.New(errdefs.ErrNotFound, "no token %q on this node (tokens are checked by the node that issued them)", id)
}

// joinReq is what a joining node sends to the peer port.
type joinReq struct {
	W       int    `json:"w"`
	TokenID string `json:"token_id"`
	Secret  string `json:"secret"` // base64; the channel is pinned to the CA hash
	Node    string `json:"node"`
	PubKey  string `json:"pubkey"` // PEM
}

// joinResp carries the cluster's secrets to a node with a valid token.
type joinResp struct {
	W       int      `json:"w"`
	CACert  string   `json:"ca_cert"`
	CAKey   string   `json:"ca_key"`
	Cert    string   `json:"cert"`
	Keyring []string `json:"keyring"` // base64, primary first
	Members []string `json:"members"` // serf host:port of alive members
}

var nodeNameRe = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// handlePeerJoin admits a node that proves it holds a valid token secret.
func (s *service) handlePeerJoin(w http.ResponseWriter, r *http.Request) error {
	var req joinReq
	if err := decodePeer(r, &req); err != nil {
		return err
	}
	refuse := func(format string, args ...any) error {
		err := errdefs.New(errdefs.ErrPermissionDenied, format, args...)
		s.log.Warn("join refused", "node", req.Node, "remote", r.RemoteAddr, "token", req.TokenID, "why", err.Error())
		return err
	}
	if !nodeNameRe.MatchString(req.Node) {
		return errdefs.New(errdefs.ErrInvalidArgument, "node name %q is not valid", req.Node)
	}
	pub, err := pki.ParsePublicKey([]byte(req.PubKey))
	if err != nil {
		return errdefs.New(errdefs.ErrInvalidArgument, "public key: %v", err)
	}
	secret, err := base64.StdEncoding.DecodeString(req.Secret)
	if err != nil {
		return errdefs.New(errdefs.ErrInvalidArgument, "secret is not base64")
	}
	tokensMu.Lock()
	defer tokensMu.Unlock()
	ts, err := s.readTokens()
	if err != nil {
		return err
	}
	idx := -1
	for i := range ts {
		if ts[i].ID == req.TokenID {
			idx = i
		}
	}
	if idx < 0 {
		return refuse("token %s is unknown to node %s", req.TokenID, s.cfg.Node.Name)
	}
	t := ts[idx]
	if subtle.ConstantTimeCompare([]byte(hashSecret(secret)), []byte(t.SecretHash)) != 1 {
		return refuse("token %s: wrong secret", req.TokenID)
	}
	if st := t.Status(time.Now()); st != "valid" {
		return refuse("token %s is %s", req.TokenID, st)
	}
	// Names are identities: a second host may not take an alive one (the
	// same host joining again is let through).
	remoteIP, _, _ := net.SplitHostPort(r.RemoteAddr)
	for _, m := range s.members() {
		if m.Name == req.Node && (m.Status == "alive" || m.Status == "suspect") && m.Addr != remoteIP {
			return refuse("node name %s is taken by an %s member at %s: give the new node another name", req.Node, m.Status, m.Addr)
		}
	}
	ca := s.sec.ca()
	cert, err := ca.Issue(req.Node, pki.RoleNode, pub, nodeCertTTL, time.Now(), nil)
	if err != nil {
		return err
	}
	ts[idx].Used++
	if err := s.writeTokens(ts); err != nil {
		return err
	}
	resp := joinResp{W: wireVersion, CACert: string(ca.CertPEM), CAKey: string(ca.KeyPEM), Cert: string(cert)}
	s.mu.Lock()
	keys := s.keyring.GetKeys()
	s.mu.Unlock()
	for _, k := range keys {
		resp.Keyring = append(resp.Keyring, base64.StdEncoding.EncodeToString(k))
	}
	for _, m := range s.members() {
		if m.Status == "alive" {
			resp.Members = append(resp.Members, net.JoinHostPort(m.Addr, strconv.Itoa(m.Port)))
		}
	}
	s.log.Info("node admitted", "node", req.Node, "remote", r.RemoteAddr, "token", req.TokenID)
	writeJSON(w, resp)
	return nil
}

// JoinRequest is the body of POST /v1/cluster/join.
type JoinRequest struct {
	Token string `json:"token"`
}

// handleJoin joins this node to the cluster a token names.
func (s *service) handleJoin(w http.ResponseWriter, r *http.Request) error {
	var req JoinRequest
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return err
	}
	t, err := token.Parse(req.Token)
	if err != nil {
		return errdefs.New(errdefs.ErrInvalidArgument, "%v", err)
	}
	n, err := s.join(r.Context(), t)
	if err != nil {
		s.log.Warn("join failed", "via", t.Addr, "token", t.ID, "err", err)
		return err
	}
	writeJSON(w, map[string]any{"joined": n, "via": t.Addr})
	return nil
}

func (s *service) join(ctx context.Context, t token.Token) (int, error) {
	key, keyPEM, err := pki.NewKey()
	if err != nil {
		return 0, err
	}
	pubPEM, err := pki.PublicKeyPEM(&key.PublicKey)
	if err != nil {
		return 0, err
	}
	pinned := &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, // pinned to the token's CA hash below
		VerifyConnection: func(cs tls.ConnectionState) error {
			for _, c := range cs.PeerCertificates[1:] {
				if pki.HashCert(c.Raw) == t.CAHash {
					p := x509.NewCertPool()
					p.AddCert(c)
					if _, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: p, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
						return fmt.Errorf("peer %s certificate does not chain to the pinned CA: %w", t.Addr, err)
					}
					return nil
				}
			}
			return fmt.Errorf("peer %s does not hold the CA the token names (hash %s...): refusing to send the secret", t.Addr, t.CAHash[:12])
		},
	}
	body, _ := json.Marshal(joinReq{W: wireVersion, TokenID: t.ID, Secret: base64.StdEncoding.EncodeToString(t.Secret), Node: s.cfg.Node.Name, PubKey: string(pubPEM)})
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: pinned, DisableKeepAlives: true}}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+t.Addr+"/v1/peer/join", bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	resp, err := hc.Do(hreq)
	if err != nil {
		return 0, errdefs.New(errdefs.ErrUnavailable, "contact %s: %v", t.Addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var b errdefs.Body
		_ = json.NewDecoder(resp.Body).Decode(&b)
		return 0, fmt.Errorf("join via %s: %w", t.Addr, errdefs.FromHTTP(resp.StatusCode, b))
	}
	var jr joinResp
	if err := json.NewDecoder(resp.Body).Decode(&jr); err != nil {
		return 0, fmt.Errorf("decode join answer: %w", err)
	}
	ca, err := pki.ParseCA([]byte(jr.CACert), []byte(jr.CAKey))
	if err != nil {
		return 0, err
	}
	if ca.Hash() != t.CAHash {
		return 0, errors.New("the CA received is not the one the token names")
	}
	var keys [][]byte
	for _, e := range jr.Keyring {
		k, err := base64.StdEncoding.DecodeString(e)
		if err != nil || (len(k) != 16 && len(k) != 24 && len(k) != 32) {
			return 0, errors.New("the keyring received holds a bad key")
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return 0, errors.New("the keyring received is empty")
	}
	if err := s.sec.install(ca, []byte(jr.Cert), keyPEM); err != nil {
		return 0, err
	}
	if err := s.installKeyring(keys); err != nil {
		return 0, err
	}
	s.mu.Lock()
	sf := s.serf
	s.mu.Unlock()
	// A few members are enough: gossip spreads the rest, and each join is a
	// full state exchange.
	mrand.Shuffle(len(jr.Members), func(i, j int) { jr.Members[i], jr.Members[j] = jr.Members[j], jr.Members[i] })
	var n int
	for i := 0; i < len(jr.Members) && n == 0; i += 3 {
		end := min(i+3, len(jr.Members))
		n, err = sf.Join(jr.Members[i:end], true)
	}
	if err != nil && n == 0 {
		return 0, errdefs.New(errdefs.ErrUnavailable, "credentials stored, but no member answered yet (it keeps trying): %v", err)
	}
	s.log.Info("joined the cluster", "via", t.Addr, "contacted", n, "ca_hash", ca.Hash())
	_ = s.publishFacts()
	select {
	case s.syncNow <- "":
	default:
	}
	return n, nil
}

// installKeyring makes keys (primary first) the live and stored keyring.
func (s *service) installKeyring(keys [][]byte) error {
	s.mu.Lock()
	kr := s.keyring
	s.mu.Unlock()
	for _, k := range keys {
		if err := kr.AddKey(k); err != nil {
			return fmt.Errorf("install gossip key: %w", err)
		}
	}
	if err := kr.UseKey(keys[0]); err != nil {
		return fmt.Errorf("use gossip key: %w", err)
	}
	for _, old := range kr.GetKeys() {
		keep := false
		for _, k := range keys {
			keep = keep || bytes.Equal(k, old)
		}
		if !keep {
			_ = kr.RemoveKey(old)
		}
	}
	return writeKeyring(s.dir, keys)
}

// KeysResult is the answer of the keyring calls: per-node results.
type KeysResult struct {
	Op       string            `json:"op"`
	Key      string            `json:"key,omitempty"`
	NumNodes int               `json:"num_nodes"`
	NumResp  int               `json:"num_resp"`
	NumErr   int               `json:"num_err"`
	Messages map[string]string `json:"messages,omitempty"`
	Keys     map[string]int    `json:"keys,omitempty"`
	Primary  map[string]int    `json:"primary,omitempty"`
}

func keysResult(op, key string, kr *serf.KeyResponse) KeysResult {
	return KeysResult{Op: op, Key: key, NumNodes: kr.NumNodes, NumResp: kr.NumResp, NumErr: kr.NumErr, Messages: kr.Messages, Keys: kr.Keys, Primary: kr.PrimaryKeys}
}

func (s *service) handleKeys(w http.ResponseWriter, r *http.Request) error {
	s.mu.Lock()
	sf := s.serf
	s.mu.Unlock()
	kr, err := sf.KeyManager().ListKeys()
	if err != nil && kr == nil {
		return errdefs.New(errdefs.ErrUnavailable, "list keys: %v", err)
	}
	writeJSON(w, keysResult("list", "", kr))
	return nil
}

// KeyRequest is the body of POST /v1/cluster/keys/{install,use,remove}.
type KeyRequest struct {
	// Key is base64 (16, 24 or 32 bytes); install without one makes a new key.
	Key string `json:"key"`
}

func (s *service) handleKeyOp(w http.ResponseWriter, r *http.Request) error {
	op := r.PathValue("op")
	var req KeyRequest
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return err
	}
	if req.Key == "" && op == "install" {
		k := make([]byte, 32)
		if _, err := rand.Read(k); err != nil {
			return err
		}
		req.Key = base64.StdEncoding.EncodeToString(k)
	}
	if k, err := base64.StdEncoding.DecodeString(req.Key); err != nil || (len(k) != 16 && len(k) != 24 && len(k) != 32) {
		return errdefs.New(errdefs.ErrInvalidArgument, "key is not 16, 24 or 32 bytes of base64")
	}
	s.mu.Lock()
	km := s.serf.KeyManager()
	s.mu.Unlock()
	var kr *serf.KeyResponse
	var err error
	switch op {
	case "install":
		kr, err = km.InstallKey(req.Key)
	case "use":
		kr, err = km.UseKey(req.Key)
	case "remove":
		kr, err = km.RemoveKey(req.Key)
	default:
		return errdefs.New(errdefs.ErrNotFound, "no key operation %q (install, use, remove)", op)
	}
	if kr == nil {
		return errdefs.New(errdefs.ErrUnavailable, "%s key: %v", op, err)
	}
	res := keysResult(op, req.Key, kr)
	if err != nil {
		s.log.Warn("key operation incomplete", "op", op, "errors", kr.NumErr, "err", err)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusMultiStatus)
		_ = json.NewEncoder(w).Encode(res)
		return nil
	}
	s.log.Info("key operation done", "op", op, "nodes", kr.NumResp)
	writeJSON(w, res)
	return nil
}

// CertRequest is the body of POST /v1/cluster/certs.
type CertRequest struct {
	Name string `json:"name"`
	Role string `json:"role"`
	TTL  string `json:"ttl"`
}

// CertResponse carries a new operator certificate.
type CertResponse struct {
	Cert   string    `json:"cert"`
	Key    string    `json:"key"`
	CA     string    `json:"ca"`
	Expire time.Time `json:"expires"`
}

func (s *service) handleCertCreate(w http.ResponseWriter, r *http.Request) error {
	var req CertRequest
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return err
	}
	if !nodeNameRe.MatchString(req.Name) {
		return errdefs.New(errdefs.ErrInvalidArgument, "name %q is not valid (lowercase letters, digits and '-')", req.Name)
	}
	if req.Role != pki.RoleAdmin && req.Role != pki.RoleRead {
		return errdefs.New(errdefs.ErrInvalidArgument, "role %q is not admin or read", req.Role)
	}
	ttl := 90 * 24 * time.Hour
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil || d < time.Second {
			return errdefs.New(errdefs.ErrInvalidArgument, "ttl %q is not a positive duration", req.TTL)
		}
		ttl = d
	}
	key, keyPEM, err := pki.NewKey()
	if err != nil {
		return err
	}
	ca := s.sec.ca()
	now := time.Now()
	cert, err := ca.Issue(req.Name, req.Role, &key.PublicKey, ttl, now, nil)
	if err != nil {
		return err
	}
	s.log.Info("operator certificate issued", "name", req.Name, "role", req.Role, "expires", now.Add(ttl))
	writeJSON(w, CertResponse{Cert: string(cert), Key: string(keyPEM), CA: string(ca.CertPEM), Expire: now.Add(ttl).UTC()})
	return nil
}

func (s *service) handleLeave(w http.ResponseWriter, r *http.Request) error {
	s.mu.Lock()
	sf := s.serf
	s.mu.Unlock()
	if err := sf.Leave(); err != nil {
		return fmt.Errorf("leave the cluster: %w", err)
	}
	s.log.Info("left the cluster")
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *service) handleRemove(w http.ResponseWriter, r *http.Request) error {
	node := r.PathValue("node")
	if node == s.cfg.Node.Name {
		return errdefs.New(errdefs.ErrInvalidArgument, "%s is this node: use sctl cluster leave", node)
	}
	for _, m := range s.members() {
		if m.Name == node && (m.Status == "alive" || m.Status == "suspect") {
			return errdefs.New(errdefs.ErrConflict, "%s is %s: stop it (or run sctl cluster leave on it) first", node, m.Status)
		}
	}
	s.mu.Lock()
	sf := s.serf
	s.mu.Unlock()
	if err := sf.RemoveFailedNodePrune(node); err != nil {
		return fmt.Errorf("remove %s: %w", node, err)
	}
	s.forget(node)
	n, err := s.st.DropOwner(node)
	if err != nil {
		return err
	}
	s.log.Info("node removed", "node", node, "keys_dropped", n)
	writeJSON(w, map[string]any{"removed": node, "keys_dropped": n})
	return nil
}
