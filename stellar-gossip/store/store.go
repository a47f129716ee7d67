// Package store is stellar-gossip's replicated key-value store on disk:
// records with hybrid-logical-clock versions, a local revision and its
// event history for watchers, tombstones, and the merge rule replication
// relies on (the highest version wins, ties broken by node name).
package store

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"stellar.dev/api/errdefs"
	"stellar.dev/api/gossipapi"
)

// MaxValue is the largest value a key may hold.
const MaxValue = 1 << 20

// MaxKey is the longest key.
const MaxKey = 256

// Buckets is the number of digest buckets keys are hashed into.
const Buckets = 64

var (
	bKV   = []byte("kv")
	bLog  = []byte("log")
	bMeta = []byte("meta")
	bGone = []byte("removed") // owner -> HLC at removal
)

var keyRe = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._:@=+-]*(/[A-Za-z0-9._:@=+-]+)*$`)

// ValidKey returns an invalid-argument error naming what is wrong with key.
func ValidKey(key string) error {
	switch {
	case key == "":
		return errdefs.New(errdefs.ErrInvalidArgument, "key is empty")
	case len(key) > MaxKey:
		return errdefs.New(errdefs.ErrInvalidArgument, "key %.40q... is longer than %d bytes", key, MaxKey)
	case !keyRe.MatchString(key):
		return errdefs.New(errdefs.ErrInvalidArgument, "key %q is not slash-separated segments of letters, digits and ._:@=+-", key)
	}
	for _, seg := range strings.Split(key, "/") {
		if seg == "." || seg == ".." {
			return errdefs.New(errdefs.ErrInvalidArgument, "key %q has a %q segment", key, seg)
		}
	}
	if strings.HasPrefix(key, "nodes/") && strings.Count(key, "/") < 2 {
		return errdefs.New(errdefs.ErrInvalidArgument, "node-owned key %q must be nodes/<node>/<name>", key)
	}
	return nil
}

// Owner returns the owning node of a node-owned key ("nodes/<node>/..."),
// or "" for a cluster key.
func Owner(key string) string {
	rest, ok := strings.CutPrefix(key, "nodes/")
	if !ok {
		return ""
	}
	n, _, ok := strings.Cut(rest, "/")
	if !ok {
		return ""
	}
	return n
}

// Record is one key as stored and as replicated.
type Record struct {
	Key   string          `json:"k"`
	Value json.RawMessage `json:"v,omitempty"`
	// HLC and Node are the version: the writer's clock and name.
	HLC  uint64 `json:"h"`
	Node string `json:"n"`
	// Seq is the owner's sequence number of a node-owned key.
	Seq uint64 `json:"s,omitempty"`
	// Deleted marks a tombstone.
	Deleted bool `json:"d,omitempty"`
	// Rev is this node's revision at which the record last changed (local).
	Rev uint64 `json:"r,omitempty"`
	// At is when this node stored the record, Unix seconds (local; ages
	// tombstones).
	At int64 `json:"a,omitempty"`
}

// Version is the record's version string, opaque to clients.
func (r Record) Version() string { return FormatVersion(r.HLC, r.Node) }

// FormatVersion renders a version.
func FormatVersion(hlc uint64, node string) string { return fmt.Sprintf("%016x.%s", hlc, node) }

// Newer reports whether version (h1, n1) beats (h2, n2).
func Newer(h1 uint64, n1 string, h2 uint64, n2 string) bool {
	if h1 != h2 {
		return h1 > h2
	}
	return n1 > n2
}

// Wire strips the local fields.
func (r Record) Wire() Record { r.Rev, r.At = 0, 0; return r }

// Validate checks a record received from a peer.
func (r Record) Validate() error {
	if err := ValidKey(r.Key); err != nil {
		return err
	}
	if r.Node == "" || len(r.Node) > 63 {
		return errdefs.New(errdefs.ErrInvalidArgument, "record %s has no valid writer", r.Key)
	}
	if o := Owner(r.Key); o != "" && o != r.Node {
		return errdefs.New(errdefs.ErrInvalidArgument, "record %s of %s was written by %s", r.Key, o, r.Node)
	}
	if len(r.Value) > MaxValue {
		return errdefs.New(errdefs.ErrInvalidArgument, "record %s value is larger than %d bytes", r.Key, MaxValue)
	}
	if !r.Deleted && !json.Valid(r.Value) {
		return errdefs.New(errdefs.ErrInvalidArgument, "record %s value is not JSON", r.Key)
	}
	return nil
}

// Options tune a store.
type Options struct {
	// History is how many events are kept for watchers.
	History int
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Store is the on-disk store of one node.
type Store struct {
	db    *bolt.DB
	self  string
	opt   Options
	clock *HLC

	mu      sync.Mutex
	rev     uint64
	seq     uint64
	oldest  uint64 // oldest revision kept in the log
	changed chan struct{}
	failed  map[string]bool
	// gen counts changes to the kv bucket; digest is Digest's result at
	// gen, nil when a change came after it. Member events and
	// anti-entropy ask for the digest far more often than keys change,
	// and computing it decodes every record.
	gen    uint64
	digest *digestCache
}

type digestCache struct {
	buckets [Buckets]uint64
	seqs    map[string]uint64
}

// kvChanged drops the cached digest; callers hold s.mu and are about to
// change the kv bucket.
func (s *Store) kvChanged() {
	s.gen++
	s.digest = nil
}

// Open opens (creating) the store at path for node self.
func Open(path, self string, opt Options) (*Store, error) {
	if opt.History <= 0 {
		opt.History = 10000
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create state dir: %w", err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 10 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open state %s: %w", path, err)
	}
	s := &Store{db: db, self: self, opt: opt, changed: make(chan struct{}), failed: map[string]bool{}}
	var hlc uint64
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bKV, bLog, bMeta, bGone} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		m := tx.Bucket(bMeta)
		s.rev = getU64(m, "rev")
		s.seq = getU64(m, "seq")
		hlc = getU64(m, "hlc")
		c := tx.Bucket(bLog).Cursor()
		if k, _ := c.First(); k != nil {
			s.oldest = binary.BigEndian.Uint64(k)
		} else {
			s.oldest = s.rev + 1
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("read state %s: %w", path, err)
	}
	s.clock = NewHLC(opt.Now, hlc)
	return s, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// Self is the node's name.
func (s *Store) Self() string { return s.self }

// Rev returns the current local revision.
func (s *Store) Rev() uint64 { s.mu.Lock(); defer s.mu.Unlock(); return s.rev }

// Seq returns this node's own write sequence.
func (s *Store) Seq() uint64 { s.mu.Lock(); defer s.mu.Unlock(); return s.seq }

// Oldest returns the oldest revision a watcher may resume from.
func (s *Store) Oldest() uint64 { s.mu.Lock(); defer s.mu.Unlock(); return s.oldest }

// Changed returns a channel closed at the next change.
func (s *Store) Changed() <-chan struct{} { s.mu.Lock(); defer s.mu.Unlock(); return s.changed }

// Clock returns the store's hybrid logical clock.
func (s *Store) Clock() *HLC { return s.clock }

func getU64(b *bolt.Bucket, k string) uint64 {
	v := b.Get([]byte(k))
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

func putU64(b *bolt.Bucket, k string, v uint64) error {
	var buf [8]byte
	binary.BigEndian.PutUint64(buf[:], v)
	return b.Put([]byte(k), buf[:])
}

func revKey(rev uint64) []byte {
	var buf [8]byte
	binary.BigEndian.PutUint64(buf[:], rev)
	return buf[:]
}

func getRec(b *bolt.Bucket, key string) (Record, bool, error) {
	v := b.Get([]byte(key))
	if v == nil {
		return Record{}, false, nil
	}
	var r Record
	if err := json.Unmarshal(v, &r); err != nil {
		return Record{}, false, fmt.Errorf("decode stored %s: %w", key, err)
	}
	return r, true, nil
}

// Entry converts a record to its API form.
func (s *Store) Entry(r Record) gossipapi.Entry {
	e := gossipapi.Entry{Key: r.Key, Value: r.Value, Version: r.Version(), Owner: Owner(r.Key), Rev: r.Rev}
	s.mu.Lock()
	e.OwnerFailed = e.Owner != "" && s.failed[e.Owner]
	s.mu.Unlock()
	return e
}

// Get returns the live record at key.
func (s *Store) Get(key string) (Record, error) {
	if err := ValidKey(key); err != nil {
		return Record{}, err
	}
	var r Record
	var ok bool
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		r, ok, err = getRec(tx.Bucket(bKV), key)
		return err
	})
	if err != nil {
		return Record{}, err
	}
	if !ok || r.Deleted {
		return Record{}, errdefs.New(errdefs.ErrNotFound, "key %s not found", key)
	}
	return r, nil
}

// List returns the live records under prefix and the revision read at.
func (s *Store) List(prefix string) (uint64, []Record, error) {
	var out []Record
	var rev uint64
	err := s.db.View(func(tx *bolt.Tx) error {
		rev = getU64(tx.Bucket(bMeta), "rev")
		c := tx.Bucket(bKV).Cursor()
		p := []byte(prefix)
		for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
			var r Record
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("decode stored %s: %w", k, err)
			}
			if !r.Deleted {
				out = append(out, r)
			}
		}
		return nil
	})
	return rev, out, err
}

// All returns every record, tombstones included.
func (s *Store) All() ([]Record, error) {
	var out []Record
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bKV).ForEach(func(k, v []byte) error {
			var r Record
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("decode stored %s: %w", k, err)
			}
			out = append(out, r)
			return nil
		})
	})
	return out, err
}

// Records returns the records (tombstones included) of keys that exist.
func (s *Store) Records(keys []string) ([]Record, error) {
	var out []Record
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bKV)
		for _, k := range keys {
			r, ok, err := getRec(b, k)
			if err != nil {
				return err
			}
			if ok {
				out = append(out, r.Wire())
			}
		}
		return nil
	})
	return out, err
}

// Put writes key locally. ifMatch, when set, must be the current version
// ("0" means the key must not exist). Node-owned keys of other nodes are
// refused.
func (s *Store) Put(key string, value json.RawMessage, ifMatch string) (Record, error) {
	if err := ValidKey(key); err != nil {
		return Record{}, err
	}
	if len(value) > MaxValue {
		return Record{}, errdefs.New(errdefs.ErrInvalidArgument, "value of %s is larger than %d bytes", key, MaxValue)
	}
	if !json.Valid(value) {
		return Record{}, errdefs.New(errdefs.ErrInvalidArgument, "value of %s is not a JSON document", key)
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, value); err != nil {
		return Record{}, errdefs.New(errdefs.ErrInvalidArgument, "value of %s: %v", key, err)
	}
	return s.local(key, buf.Bytes(), false, ifMatch)
}

// Delete writes a tombstone for key locally.
func (s *Store) Delete(key, ifMatch string) (Record, error) {
	if err := ValidKey(key); err != nil {
		return Record{}, err
	}
	return s.local(key, nil, true, ifMatch)
}

func (s *Store) local(key string, value json.RawMessage, del bool, ifMatch string) (Record, error) {
	if o := Owner(key); o != "" && o != s.self {
		return Record{}, errdefs.New(errdefs.ErrPermissionDenied, "key %s belongs to node %s: only it writes under nodes/%s/", key, o, o)
	}
	s.mu.Lock()
	s.kvChanged()
	defer s.mu.Unlock()
	var out Record
	err := s.db.Update(func(tx *bolt.Tx) error {
		kv := tx.Bucket(bKV)
		cur, ok, err := getRec(kv, key)
		if err != nil {
			return err
		}
		live := ok && !cur.Deleted
		switch {
		case ifMatch == "":
		case ifMatch == "0" && live:
			return errdefs.New(errdefs.ErrConflict, "key %s exists (version %s)", key, cur.Version())
		case ifMatch == "0":
		case !live:
			return errdefs.New(errdefs.ErrConflict, "key %s does not exist; If-Match %s is stale", key, ifMatch)
		case cur.Version() != ifMatch:
			return errdefs.New(errdefs.ErrConflict, "key %s moved on to version %s; If-Match %s is stale", key, cur.Version(), ifMatch)
		}
		if del && !live {
			return errdefs.New(errdefs.ErrNotFound, "key %s not found", key)
		}
		h := s.clock.Now()
		if ok && !Newer(h, s.self, cur.HLC, cur.Node) {
			// A peer's clock ran ahead: observe it and tick past it.
			s.clock.Observe(cur.HLC)
			h = s.clock.Now()
		}
		r := Record{Key: key, Value: value, HLC: h, Node: s.self, Deleted: del}
		if Owner(key) != "" {
			s.seq++
			r.Seq = s.seq
			if err := putU64(tx.Bucket(bMeta), "seq", s.seq); err != nil {
				return err
			}
		}
		out, err = s.store(tx, r)
		return err
	})
	if err != nil {
		return Record{}, err
	}
	s.notify()
	return out, nil
}

// store writes r (already decided to win) with a new revision and its
// event; callers hold s.mu.
func (s *Store) store(tx *bolt.Tx, r Record) (Record, error) {
	s.rev++
	r.Rev = s.rev
	r.At = s.opt.Now().Unix()
	raw, err := json.Marshal(r)
	if err != nil {
		return Record{}, err
	}
	if err := tx.Bucket(bKV).Put([]byte(r.Key), raw); err != nil {
		return Record{}, fmt.Errorf("store %s: %w", r.Key, err)
	}
	ev := gossipapi.Event{Type: gossipapi.EventPut, Rev: r.Rev}
	e := gossipapi.Entry{Key: r.Key, Value: r.Value, Version: r.Version(), Owner: Owner(r.Key), Rev: r.Rev, OwnerFailed: s.failed[Owner(r.Key)]}
	if r.Deleted {
		ev.Type = gossipapi.EventDelete
		e.Value = nil
	}
	ev.Entry = &e
	if err := s.logEvent(tx, ev); err != nil {
		return Record{}, err
	}
	if err := putU64(tx.Bucket(bMeta), "hlc", s.clock.Last()); err != nil {
		return Record{}, err
	}
	return r, nil
}

func (s *Store) logEvent(tx *bolt.Tx, ev gossipapi.Event) error {
	raw, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	lb := tx.Bucket(bLog)
	if err := lb.Put(revKey(ev.Rev), raw); err != nil {
		return fmt.Errorf("log revision %d: %w", ev.Rev, err)
	}
	if err := putU64(tx.Bucket(bMeta), "rev", s.rev); err != nil {
		return err
	}
	for s.rev-s.oldest+1 > uint64(s.opt.History) {
		if err := lb.Delete(revKey(s.oldest)); err != nil {
			return err
		}
		s.oldest++
	}
	return nil
}

func (s *Store) notify() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// Merge applies records received from peers: each wins if its version is
// newer than the stored one. It returns the records that changed the store.
func (s *Store) Merge(recs []Record) ([]Record, error) {
	s.mu.Lock()
	s.kvChanged()
	defer s.mu.Unlock()
	var won []Record
	err := s.db.Update(func(tx *bolt.Tx) error {
		kv := tx.Bucket(bKV)
		gone := tx.Bucket(bGone)
		for _, r := range recs {
			if err := r.Validate(); err != nil {
				return err
			}
			s.clock.Observe(r.HLC)
			o := Owner(r.Key)
			if o != "" {
				if rm := getU64(gone, o); rm != 0 && r.HLC < rm {
					continue // written before its owner was removed
				}
				if o == s.self && r.Seq > s.seq {
					// Our own key from before we lost our state: number on from it.
					s.seq = r.Seq
					if err := putU64(tx.Bucket(bMeta), "seq", s.seq); err != nil {
						return err
					}
				}
			}
			cur, ok, err := getRec(kv, r.Key)
			if err != nil {
				return err
			}
			if ok && !Newer(r.HLC, r.Node, cur.HLC, cur.Node) {
				continue
			}
			if ok && cur.Deleted && r.Deleted {
				// Both tombstones: keep the newer one quietly (no event).
				r.Rev, r.At = cur.Rev, cur.At
				raw, _ := json.Marshal(r)
				if err := kv.Put([]byte(r.Key), raw); err != nil {
					return err
				}
				continue
			}
			if !ok && r.Deleted {
				// A tombstone for a key never seen: keep it so the delete
				// wins over older copies, without an event.
				r.At = s.opt.Now().Unix()
				raw, _ := json.Marshal(r)
				if err := kv.Put([]byte(r.Key), raw); err != nil {
					return err
				}
				continue
			}
			st, err := s.store(tx, r.Wire())
			if err != nil {
				return err
			}
			won = append(won, st)
		}
		return putU64(tx.Bucket(bMeta), "hlc", s.clock.Last())
	})
	if err != nil {
		return nil, err
	}
	if len(won) > 0 {
		s.notify()
	}
	return won, nil
}

// Events returns the logged events with revision >= from (at most max).
// It fails with errdefs.ErrGone when from is older than the kept history.
func (s *Store) Events(from uint64, max int) ([]gossipapi.Event, error) {
	s.mu.Lock()
	oldest := s.oldest
	s.mu.Unlock()
	if from < oldest {
		return nil, errdefs.New(errdefs.ErrGone, "revision %d is older than the kept history (oldest %d): list again", from, oldest)
	}
	var out []gossipapi.Event
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bLog).Cursor()
		for k, v := c.Seek(revKey(from)); k != nil && len(out) < max; k, v = c.Next() {
			var ev gossipapi.Event
			if err := json.Unmarshal(v, &ev); err != nil {
				return fmt.Errorf("decode event %d: %w", binary.BigEndian.Uint64(k), err)
			}
			out = append(out, ev)
		}
		return nil
	})
	return out, err
}

// SetFailed marks owner's keys as belonging to a failed node (or clears
// the mark), logging a flag event per key.
func (s *Store) SetFailed(owner string, failed bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failed[owner] == failed {
		return nil
	}
	if failed {
		s.failed[owner] = true
	} else {
		delete(s.failed, owner)
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		c := tx.Bucket(bKV).Cursor()
		p := []byte("nodes/" + owner + "/")
		for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
			var r Record
			if err := json.Unmarshal(v, &r); err != nil || r.Deleted {
				continue
			}
			s.rev++
			e := gossipapi.Entry{Key: r.Key, Value: r.Value, Version: r.Version(), Owner: owner, Rev: r.Rev, OwnerFailed: failed}
			if err := s.logEvent(tx, gossipapi.Event{Type: gossipapi.EventFlag, Entry: &e, Rev: s.rev}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	s.notify()
	return nil
}

// Failed reports whether owner is marked failed.
func (s *Store) Failed(owner string) bool { s.mu.Lock(); defer s.mu.Unlock(); return s.failed[owner] }

// DropOwner removes every key of owner (reaped or removed) and refuses
// its keys written before now from then on.
func (s *Store) DropOwner(owner string) (int, error) {
	if owner == s.self {
		return 0, errdefs.New(errdefs.ErrInvalidArgument, "this node's own keys cannot be dropped")
	}
	s.mu.Lock()
	s.kvChanged()
	defer s.mu.Unlock()
	n := 0
	err := s.db.Update(func(tx *bolt.Tx) error {
		if err := putU64(tx.Bucket(bGone), owner, s.clock.Now()); err != nil {
			return err
		}
		kv := tx.Bucket(bKV)
		c := kv.Cursor()
		p := []byte("nodes/" + owner + "/")
		var keys [][]byte
		for k, _ := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, _ = c.Next() {
			keys = append(keys, append([]byte(nil), k...))
		}
		for _, k := range keys {
			r, ok, err := getRec(kv, string(k))
			if err != nil {
				return err
			}
			if err := kv.Delete(k); err != nil {
				return err
			}
			if ok && !r.Deleted {
				n++
				s.rev++
				e := gossipapi.Entry{Key: r.Key, Owner: owner, Rev: s.rev}
				if err := s.logEvent(tx, gossipapi.Event{Type: gossipapi.EventDelete, Entry: &e, Rev: s.rev}); err != nil {
					return err
				}
			}
		}
		return putU64(tx.Bucket(bMeta), "hlc", s.clock.Last())
	})
	if err != nil {
		return 0, err
	}
	delete(s.failed, owner)
	s.notify()
	return n, nil
}

// Removed reports whether owner was removed (its older keys are refused).
func (s *Store) Removed(owner string) bool {
	var rm uint64
	_ = s.db.View(func(tx *bolt.Tx) error { rm = getU64(tx.Bucket(bGone), owner); return nil })
	return rm != 0
}

// GC drops tombstones stored longer ago than keep.
func (s *Store) GC(keep time.Duration) (int, error) {
	limit := s.opt.Now().Add(-keep).Unix()
	s.mu.Lock()
	s.kvChanged()
	defer s.mu.Unlock()
	n := 0
	err := s.db.Update(func(tx *bolt.Tx) error {
		kv := tx.Bucket(bKV)
		var dead [][]byte
		err := kv.ForEach(func(k, v []byte) error {
			var r Record
			if err := json.Unmarshal(v, &r); err != nil {
				return nil
			}
			if r.Deleted && r.At < limit {
				dead = append(dead, append([]byte(nil), k...))
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range dead {
			if err := kv.Delete(k); err != nil {
				return err
			}
		}
		n = len(dead)
		return nil
	})
	return n, err
}

// DropClusterKeys removes every cluster key (not node-owned), tombstones
// included: a node out of contact longer than the tombstone lifetime
// resyncs them in full, so a delete it missed never comes back.
func (s *Store) DropClusterKeys() (int, error) {
	s.mu.Lock()
	s.kvChanged()
	defer s.mu.Unlock()
	n := 0
	err := s.db.Update(func(tx *bolt.Tx) error {
		kv := tx.Bucket(bKV)
		var keys []Record
		err := kv.ForEach(func(k, v []byte) error {
			if Owner(string(k)) != "" {
				return nil
			}
			var r Record
			if err := json.Unmarshal(v, &r); err != nil {
				return nil
			}
			keys = append(keys, r)
			return nil
		})
		if err != nil {
			return err
		}
		for _, r := range keys {
			if err := kv.Delete([]byte(r.Key)); err != nil {
				return err
			}
			if !r.Deleted {
				n++
				s.rev++
				e := gossipapi.Entry{Key: r.Key, Rev: s.rev}
				if err := s.logEvent(tx, gossipapi.Event{Type: gossipapi.EventDelete, Entry: &e, Rev: s.rev}); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	s.notify()
	return n, nil
}

// Meta reads a small persisted value of the daemon ("last_sync").
func (s *Store) Meta(name string) uint64 {
	var v uint64
	_ = s.db.View(func(tx *bolt.Tx) error { v = getU64(tx.Bucket(bMeta), "x."+name); return nil })
	return v
}

// SetMeta persists a small value.
func (s *Store) SetMeta(name string, v uint64) error {
	return s.db.Update(func(tx *bolt.Tx) error { return putU64(tx.Bucket(bMeta), "x."+name, v) })
}

// Summary is one key's version in a digest exchange.
type Summary struct {
	Key     string `json:"k"`
	HLC     uint64 `json:"h"`
	Node    string `json:"n"`
	Deleted bool   `json:"d,omitempty"`
}

// BucketOf returns the digest bucket of key.
func BucketOf(key string) int {
	h := fnv.New32a()
	h.Write([]byte(key))
	return int(h.Sum32() % Buckets)
}

// Digest returns one hash per bucket over every key's version, and the
// highest owner sequence seen per owner.
func (s *Store) Digest() ([Buckets]uint64, map[string]uint64, error) {
	s.mu.Lock()
	gen, c := s.gen, s.digest
	s.mu.Unlock()
	if c != nil {
		return c.buckets, maps.Clone(c.seqs), nil
	}
	recs, err := s.All()
	if err != nil {
		return [Buckets]uint64{}, nil, err
	}
	d, seqs := digestOf(recs)
	s.mu.Lock()
	if s.gen == gen {
		// Nothing changed while it was computed: keep it.
		s.digest = &digestCache{buckets: d, seqs: maps.Clone(seqs)}
	}
	s.mu.Unlock()
	return d, seqs, nil
}

// digestOf computes the digest of recs: per bucket, the XOR of a hash of
// each key's version; per owner, the highest sequence.
func digestOf(recs []Record) ([Buckets]uint64, map[string]uint64) {
	var d [Buckets]uint64
	seqs := map[string]uint64{}
	for _, r := range recs {
		h := fnv.New64a()
		fmt.Fprintf(h, "%s\x00%d\x00%s\x00%t", r.Key, r.HLC, r.Node, r.Deleted)
		d[BucketOf(r.Key)] ^= h.Sum64()
		if o := Owner(r.Key); o != "" && r.Seq > seqs[o] {
			seqs[o] = r.Seq
		}
	}
	return d, seqs
}

// Summaries returns the versions of every key in the given buckets.
func (s *Store) Summaries(buckets []int) ([]Summary, error) {
	want := map[int]bool{}
	for _, b := range buckets {
		want[b] = true
	}
	recs, err := s.All()
	if err != nil {
		return nil, err
	}
	var out []Summary
	for _, r := range recs {
		if want[BucketOf(r.Key)] {
			out = append(out, Summary{Key: r.Key, HLC: r.HLC, Node: r.Node, Deleted: r.Deleted})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

// Diff compares the peer's summaries of some buckets with ours: keys the
// peer has newer (to pull) and our records newer than the peer's (to push).
func (s *Store) Diff(buckets []int, theirs []Summary) (pull []string, push []Record, err error) {
	mine, err := s.Summaries(buckets)
	if err != nil {
		return nil, nil, err
	}
	m := map[string]Summary{}
	for _, x := range mine {
		m[x.Key] = x
	}
	t := map[string]bool{}
	var pushKeys []string
	for _, x := range theirs {
		t[x.Key] = true
		my, ok := m[x.Key]
		switch {
		case !ok || Newer(x.HLC, x.Node, my.HLC, my.Node):
			pull = append(pull, x.Key)
		case Newer(my.HLC, my.Node, x.HLC, x.Node):
			pushKeys = append(pushKeys, x.Key)
		}
	}
	for _, x := range mine {
		if !t[x.Key] {
			pushKeys = append(pushKeys, x.Key)
		}
	}
	push, err = s.Records(pushKeys)
	return pull, push, err
}
