package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"stellar.dev/api/errdefs"
	"stellar.dev/api/gossipapi"
	"stellar.dev/api/stream"
	"stellar.dev/daemon/httpapi"
	"stellar.dev/stellar-gossip/store"
)

// routes registers the local API on gossip.sock.
func (s *service) routes(mux *http.ServeMux) {
	mux.Handle("GET /v1/members", s.guard(s.handleMembers))
	mux.Handle("GET /v1/state", s.guard(s.handleList))
	mux.Handle("GET /v1/state/{key...}", s.guard(s.handleGet))
	mux.Handle("PUT /v1/state/{key...}", s.guard(s.handlePut))
	mux.Handle("DELETE /v1/state/{key...}", s.guard(s.handleDelete))
	mux.Handle("GET /v1/watch", s.guard(s.handleWatch))
	mux.Handle("PUT /v1/tags/subnet", s.guard(s.handleSubnet))
	mux.Handle("GET /v1/cluster/info", s.guard(s.handleInfo))
	mux.Handle("POST /v1/cluster/leave", s.guard(s.handleLeave))
	mux.Handle("POST /v1/cluster/remove/{node}", s.guard(s.handleRemove))
	mux.Handle("GET /v1/cluster/backup", s.guard(s.handleBackup))
	mux.Handle("POST /v1/cluster/restore", s.guard(s.handleRestore))
	s.clusterRoutes(mux)
	s.outboundRoutes(mux)
}

func (s *service) handleMembers(w http.ResponseWriter, r *http.Request) error {
	httpapi.WriteJSON(w, http.StatusOK, s.decoratedMembers())
	return nil
}

func (s *service) handleList(w http.ResponseWriter, r *http.Request) error {
	prefix := r.URL.Query().Get("prefix")
	if len(prefix) > store.MaxKey {
		return errdefs.New(errdefs.ErrInvalidArgument, "prefix is longer than %d bytes", store.MaxKey)
	}
	rev, recs, err := s.st.List(prefix)
	if err != nil {
		return fmt.Errorf("list %s: %w", prefix, err)
	}
	l := gossipapi.List{Rev: rev, Entries: make([]gossipapi.Entry, 0, len(recs))}
	for _, rec := range recs {
		l.Entries = append(l.Entries, s.st.Entry(rec))
	}
	httpapi.WriteJSON(w, http.StatusOK, l)
	return nil
}

func (s *service) handleGet(w http.ResponseWriter, r *http.Request) error {
	rec, err := s.st.Get(r.PathValue("key"))
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, s.st.Entry(rec))
	return nil
}

func (s *service) handlePut(w http.ResponseWriter, r *http.Request) error {
	key := r.PathValue("key")
	if err := store.ValidKey(key); err != nil {
		return err
	}
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, store.MaxValue+1))
	if err != nil {
		return errdefs.New(errdefs.ErrInvalidArgument, "read value of %s: %v (at most %d bytes)", key, err, store.MaxValue)
	}
	rec, err := s.st.Put(key, body, r.Header.Get("If-Match"))
	if err != nil {
		return err
	}
	s.published(rec)
	httpapi.WriteJSON(w, http.StatusOK, gossipapi.PutResult{Key: key, Version: rec.Version(), Rev: rec.Rev})
	return nil
}

func (s *service) handleDelete(w http.ResponseWriter, r *http.Request) error {
	rec, err := s.st.Delete(r.PathValue("key"), r.Header.Get("If-Match"))
	if err != nil {
		return err
	}
	s.published(rec)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// handleWatch streams state events (and member events with members=true)
// as NDJSON.
func (s *service) handleWatch(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	prefix := q.Get("prefix")
	var from uint64
	if v := q.Get("rev"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return errdefs.New(errdefs.ErrInvalidArgument, "rev %q is not a revision number", v)
		}
		from = n
	}
	members := false
	if v := q.Get("members"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return errdefs.New(errdefs.ErrInvalidArgument, "members %q is not true or false", v)
		}
		members = b
	}
	if from == 0 {
		from = s.st.Rev() + 1
	}
	if from < s.st.Oldest() {
		return errdefs.New(errdefs.ErrGone, "revision %d is older than the kept history (oldest %d): list again", from, s.st.Oldest())
	}
	memberSeq := s.hub.seq()
	sw := stream.NewWriter(w)
	w.WriteHeader(http.StatusOK)
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
	ctx := r.Context()
	keepalive := time.NewTicker(30 * time.Second)
	defer keepalive.Stop()
	for {
		changed := s.st.Changed()
		mchanged := s.hub.changed()
		evs, err := s.st.Events(from, 512)
		if err != nil {
			return nil // fell behind the history mid-stream: end it; the client resumes and gets 410
		}
		for _, ev := range evs {
			from = ev.Rev + 1
			if ev.Entry != nil && !strings.HasPrefix(ev.Entry.Key, prefix) {
				continue
			}
			if err := sw.Send(ev); err != nil {
				return nil
			}
		}
		if members {
			var mevs []gossipapi.Member
			mevs, memberSeq = s.hub.since(memberSeq)
			for i := range mevs {
				if err := sw.Send(gossipapi.Event{Type: gossipapi.EventMember, Member: &mevs[i]}); err != nil {
					return nil
				}
			}
		}
		if len(evs) == 512 {
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		case <-mchanged:
		case <-keepalive.C:
			// An empty line keeps proxies and idle timers from closing the stream.
			if _, err := w.Write([]byte("\n")); err != nil {
				return nil
			}
			if f, ok := w.(http.Flusher); ok {
				f.Flush()
			}
		}
	}
}

func (s *service) handleSubnet(w http.ResponseWriter, r *http.Request) error {
	var t gossipapi.SubnetTag
	if err := httpapi.DecodeJSON(r, &t); err != nil {
		return err
	}
	if t.Subnet != "" {
		p, err := netip.ParsePrefix(t.Subnet)
		if err != nil || p.Masked() != p {
			return errdefs.New(errdefs.ErrInvalidArgument, "subnet %q is not a network in CIDR form", t.Subnet)
		}
	}
	if err := s.setTag(tagSubnet, t.Subnet); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// Backup is the document of GET /v1/cluster/backup: every cluster key.
type Backup struct {
	Format  int            `json:"format"`
	Node    string         `json:"node"`
	Taken   time.Time      `json:"taken"`
	Records []store.Record `json:"records"`
}

func (s *service) handleBackup(w http.ResponseWriter, r *http.Request) error {
	recs, err := s.st.All()
	if err != nil {
		return fmt.Errorf("read state for backup: %w", err)
	}
	b := Backup{Format: 1, Node: s.cfg.Node.Name, Taken: time.Now().UTC(), Records: []store.Record{}}
	for _, rec := range recs {
		if store.Owner(rec.Key) == "" && !rec.Deleted {
			b.Records = append(b.Records, rec.Wire())
		}
	}
	httpapi.WriteJSON(w, http.StatusOK, b)
	return nil
}

// handleRestore writes every cluster key of a backup as a new local write,
// so it wins over what the cluster holds and replicates everywhere.
func (s *service) handleRestore(w http.ResponseWriter, r *http.Request) error {
	var b Backup
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, 256<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&b); err != nil {
		return errdefs.New(errdefs.ErrInvalidArgument, "decode backup: %v", err)
	}
	if b.Format != 1 {
		return errdefs.New(errdefs.ErrInvalidArgument, "backup format %d is not 1", b.Format)
	}
	for _, rec := range b.Records {
		if store.Owner(rec.Key) != "" {
			return errdefs.New(errdefs.ErrInvalidArgument, "backup holds node-owned key %s: only cluster keys are restored", rec.Key)
		}
		if err := rec.Validate(); err != nil {
			return fmt.Errorf("check backup: %w", err)
		}
	}
	n := 0
	for _, rec := range b.Records {
		out, err := s.st.Put(rec.Key, rec.Value, "")
		if err != nil {
			return fmt.Errorf("restore %s: %w", rec.Key, err)
		}
		s.published(out)
		n++
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]int{"restored": n})
	return nil
}
