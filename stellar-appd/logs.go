package main

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"sort"
	"sync"
	"time"

	"stellar.dev/api/appapi"
)

// clusterLogs gathers the output of the app's instances on every node that
// publishes one (and this node): each node's appd is asked for its own
// lines (local=true) through the peer port. Without follow the lines are
// sorted by time; with follow they are passed on as they come.
func (s *service) clusterLogs(w http.ResponseWriter, r *http.Request, name, svc string, follow bool, since time.Time) error {
	ctx := r.Context()
	nodes := map[string]bool{s.node: true}
	if ins, err := s.instancesOf(ctx, name); err == nil {
		for _, in := range ins {
			nodes[in.Node] = true
		}
	}
	q := r.URL.Query()
	q.Set("local", "true")
	sub := "/v1/apps/" + url.PathEscape(name) + "/logs?" + q.Encode()

	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	var mu sync.Mutex
	var kept []appapi.LogLine
	emit := func(l appapi.LogLine) error {
		mu.Lock()
		defer mu.Unlock()
		if !follow {
			kept = append(kept, l)
			return nil
		}
		if err := enc.Encode(l); err != nil {
			return err
		}
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
		return nil
	}
	var wg sync.WaitGroup
	for n := range nodes {
		wg.Add(1)
		go func(n string) {
			defer wg.Done()
			if err := s.nodeLogs(ctx, n, sub, func(ctx context.Context, emit func(appapi.LogLine) error) error {
				return s.localLogs(ctx, name, svc, follow, since, emit)
			}, emit); err != nil && ctx.Err() == nil {
				s.env.Log.Warn("read logs of a node", "app", name, "node", n, "err", err)
				_ = emit(appapi.LogLine{Time: time.Now().UTC(), Node: n, Stream: "error", Message: "logs of node " + n + " unavailable: " + err.Error()})
			}
		}(n)
	}
	wg.Wait()
	if !follow {
		sort.SliceStable(kept, func(i, j int) bool { return kept[i].Time.Before(kept[j].Time) })
		for _, l := range kept {
			if err := enc.Encode(l); err != nil {
				return nil
			}
		}
	}
	return nil
}

// nodeLogs reads one node's lines: this node's directly, others' through
// gossip's outbound relay.
func (s *service) nodeLogs(ctx context.Context, node, sub string, local func(context.Context, func(appapi.LogLine) error) error, emit func(appapi.LogLine) error) error {
	if node == s.node {
		return local(ctx, func(l appapi.LogLine) error {
			l.Node = s.node
			return emit(l)
		})
	}
	resp, err := s.peers.raw.Open(ctx, http.MethodGet, relayPath(node, sub), nil, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		if len(sc.Bytes()) == 0 {
			continue
		}
		var l appapi.LogLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			continue
		}
		if l.Node == "" {
			l.Node = node
		}
		if err := emit(l); err != nil {
			return err
		}
	}
	return sc.Err()
}
