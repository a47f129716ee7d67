package main

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"

	"stellar.dev/api"
	"stellar.dev/api/gossipapi"
	"stellar.dev/api/stream"
)

// fakeGossip serves the state part of gossip.sock from memory: list, get,
// put, delete and watch. It stands in for stellar-gossip in the proxy's
// tests of its own logic.
type fakeGossip struct {
	mu      sync.Mutex
	rev     uint64
	entries map[string]gossipapi.Entry
	changed chan struct{} // closed and replaced on each change
	events  []gossipapi.Event
}

func startFakeGossip(t *testing.T, socket string) *fakeGossip {
	t.Helper()
	g := &fakeGossip{entries: map[string]gossipapi.Entry{}, changed: make(chan struct{})}
	l, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/state", func(w http.ResponseWriter, r *http.Request) {
		prefix := r.URL.Query().Get("prefix")
		g.mu.Lock()
		l := gossipapi.List{Rev: g.rev, Entries: []gossipapi.Entry{}}
		for k, e := range g.entries {
			if strings.HasPrefix(k, prefix) {
				l.Entries = append(l.Entries, e)
			}
		}
		g.mu.Unlock()
		writeJSON(w, l)
	})
	mux.HandleFunc("GET /v1/state/{key...}", func(w http.ResponseWriter, r *http.Request) {
		g.mu.Lock()
		e, ok := g.entries[r.PathValue("key")]
		g.mu.Unlock()
		if !ok {
			w.Header().Set(api.WireHeader, strconv.Itoa(api.WireVersion))
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, `{"error":{"code":"not_found","message":"no such key"}}`)
			return
		}
		writeJSON(w, e)
	})
	mux.HandleFunc("PUT /v1/state/{key...}", func(w http.ResponseWriter, r *http.Request) {
		raw, _ := io.ReadAll(r.Body)
		e := g.put(r.PathValue("key"), string(raw), false)
		writeJSON(w, gossipapi.PutResult{Key: e.Key, Version: e.Version, Rev: e.Rev})
	})
	mux.HandleFunc("GET /v1/watch", func(w http.ResponseWriter, r *http.Request) {
		rev, _ := strconv.ParseUint(r.URL.Query().Get("rev"), 10, 64)
		w.Header().Set(api.WireHeader, strconv.Itoa(api.WireVersion))
		w.Header().Set("Content-Type", "application/x-ndjson")
		sw := stream.NewWriter(w)
		w.(http.Flusher).Flush()
		sent := 0
		for {
			g.mu.Lock()
			evs := g.events
			ch := g.changed
			g.mu.Unlock()
			for ; sent < len(evs); sent++ {
				if evs[sent].Rev < rev {
					continue
				}
				if err := sw.Send(evs[sent]); err != nil {
					return
				}
			}
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-ch:
			}
		}
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return g
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set(api.WireHeader, strconv.Itoa(api.WireVersion))
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

// put stores value (JSON text) at key.
func (g *fakeGossip) put(key, value string, ownerFailed bool) gossipapi.Entry {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.rev++
	e := gossipapi.Entry{Key: key, Value: json.RawMessage(value), Version: strconv.FormatUint(g.rev, 10), Rev: g.rev, OwnerFailed: ownerFailed}
	if strings.HasPrefix(key, "nodes/") {
		e.Owner = strings.Split(key, "/")[1]
	}
	g.entries[key] = e
	g.events = append(g.events, gossipapi.Event{Type: gossipapi.EventPut, Entry: &e, Rev: g.rev})
	close(g.changed)
	g.changed = make(chan struct{})
	return e
}

func (g *fakeGossip) putJSON(key string, v any) {
	raw, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	g.put(key, string(raw), false)
}

func (g *fakeGossip) delete(key string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.rev++
	delete(g.entries, key)
	g.events = append(g.events, gossipapi.Event{Type: gossipapi.EventDelete, Entry: &gossipapi.Entry{Key: key, Rev: g.rev}, Rev: g.rev})
	close(g.changed)
	g.changed = make(chan struct{})
}
