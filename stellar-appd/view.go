package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"stellar.dev/api/appapi"
	"stellar.dev/api/gossipapi"
	"stellar.dev/daemon/atomicfile"
	"stellar.dev/stellar-appd/internal/placement"
)

// store is what appd needs of stellar-gossip (gossipapi.Client has it).
type store interface {
	Members(ctx context.Context) ([]gossipapi.Member, error)
	Get(ctx context.Context, key string) (gossipapi.Entry, error)
	List(ctx context.Context, prefix string) (gossipapi.List, error)
	Put(ctx context.Context, key string, value any, ifMatch string) (gossipapi.PutResult, error)
	Delete(ctx context.Context, key, ifMatch string) error
}

// app is one stored app with its version.
type app struct {
	appapi.Record
	Version string
}

// view is the cluster as read from the store in one pass.
type view struct {
	members   []gossipapi.Member
	apps      map[string]app
	schedule  map[string]string            // node -> cordon/drain
	declined  map[string]map[string]string // node -> "<app>/<service>" -> spec hash
	instances map[string]appapi.Instance   // key -> instance (all nodes)
	failed    map[string]bool              // owners marked failed
}

func loadView(ctx context.Context, st store) (*view, error) {
	v := &view{apps: map[string]app{}, schedule: map[string]string{}, declined: map[string]map[string]string{}, instances: map[string]appapi.Instance{}, failed: map[string]bool{}}
	ms, err := st.Members(ctx)
	if err != nil {
		return nil, err
	}
	v.members = ms
	apps, err := st.List(ctx, appapi.AppsPrefix)
	if err != nil {
		return nil, err
	}
	for _, e := range apps.Entries {
		var r appapi.Record
		if len(e.Value) == 0 || json.Unmarshal(e.Value, &r) != nil || r.Spec.Name == "" {
			continue
		}
		v.apps[r.Spec.Name] = app{Record: r, Version: e.Version}
	}
	sched, err := st.List(ctx, appapi.SchedulePrefix)
	if err != nil {
		return nil, err
	}
	for _, e := range sched.Entries {
		var s appapi.Schedule
		if json.Unmarshal(e.Value, &s) == nil {
			v.schedule[strings.TrimPrefix(e.Key, appapi.SchedulePrefix)] = s.State
		}
	}
	nodes, err := st.List(ctx, appapi.NodesPrefix)
	if err != nil {
		return nil, err
	}
	for _, e := range nodes.Entries {
		node, kind, rest, ok := appapi.ParseNodeKey(e.Key)
		if !ok {
			continue
		}
		if e.OwnerFailed {
			v.failed[node] = true
		}
		switch kind {
		case "instances":
			var in appapi.Instance
			if _, _, _, _, ok := appapi.ParseInstanceKey(e.Key); ok && json.Unmarshal(e.Value, &in) == nil {
				v.instances[e.Key] = in
			}
		case "declined":
			var d appapi.Decline
			if len(rest) == 2 && json.Unmarshal(e.Value, &d) == nil {
				if v.declined[node] == nil {
					v.declined[node] = map[string]string{}
				}
				v.declined[node][rest[0]+"/"+rest[1]] = d.SpecHash
			}
		}
	}
	return v, nil
}

// memberClock remembers, across passes, when members failed and came back,
// to damp churn: a failed node keeps its instances for reschedule_after, a
// returning node gets them back once it has been alive as long. It is kept
// in appd's state dir (path), so a restart of appd (or a reboot) does not
// count a node that failed long ago as freshly failed: that would make it
// eligible again for reschedule_after and move instances onto it and back.
type memberClock struct {
	failedSince map[string]time.Time
	aliveSince  map[string]time.Time
	wasFailed   map[string]bool

	path  string // "" keeps it in memory only
	dirty bool
}

// clockFile is the persisted form of a memberClock.
type clockFile struct {
	Format      int                  `json:"format"`
	FailedSince map[string]time.Time `json:"failed_since"`
	AliveSince  map[string]time.Time `json:"alive_since"`
	WasFailed   map[string]bool      `json:"was_failed"`
}

func newMemberClock() *memberClock {
	return &memberClock{failedSince: map[string]time.Time{}, aliveSince: map[string]time.Time{}, wasFailed: map[string]bool{}}
}

// loadMemberClock reads the clock kept at path; a missing file is a new
// clock. An unreadable one is reported and replaced by a new clock: the
// damping then starts over, as on a first start.
func loadMemberClock(path string) (*memberClock, error) {
	mc := newMemberClock()
	mc.path = path
	raw, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return mc, nil
	}
	if err != nil {
		return mc, fmt.Errorf("read member clock: %w", err)
	}
	var f clockFile
	if err := json.Unmarshal(raw, &f); err != nil {
		return mc, fmt.Errorf("decode member clock %s: %w", path, err)
	}
	if f.Format != 1 {
		return mc, fmt.Errorf("member clock %s has format %d, this appd reads 1", path, f.Format)
	}
	for k, v := range f.FailedSince {
		mc.failedSince[k] = v
	}
	for k, v := range f.AliveSince {
		mc.aliveSince[k] = v
	}
	for k, v := range f.WasFailed {
		mc.wasFailed[k] = v
	}
	return mc, nil
}

// save writes the clock when it changed (temp file, fsync, rename).
func (mc *memberClock) save() error {
	if mc.path == "" || !mc.dirty {
		return nil
	}
	raw, err := json.Marshal(clockFile{Format: 1, FailedSince: mc.failedSince, AliveSince: mc.aliveSince, WasFailed: mc.wasFailed})
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(mc.path), 0o700); err != nil {
		return fmt.Errorf("save member clock: %w", err)
	}
	if err := atomicfile.Write(mc.path, raw, 0o600); err != nil {
		return fmt.Errorf("save member clock: %w", err)
	}
	mc.dirty = false
	return nil
}

// nodes returns the placement view of the members at now.
func (mc *memberClock) nodes(v *view, self string, now time.Time, after time.Duration) []placement.Node {
	var out []placement.Node
	seenSelf := false
	for _, m := range v.members {
		n := placement.Node{Name: m.Name, Labels: m.Labels}
		switch m.Status {
		case gossipapi.StatusAlive, gossipapi.StatusSuspect:
			if _, ok := mc.failedSince[m.Name]; ok {
				delete(mc.failedSince, m.Name)
				mc.dirty = true
			}
			if _, ok := mc.aliveSince[m.Name]; !ok {
				mc.aliveSince[m.Name] = now
				mc.dirty = true
			}
			n.Eligible = !mc.wasFailed[m.Name] || now.Sub(mc.aliveSince[m.Name]) >= after
			if n.Eligible && mc.wasFailed[m.Name] {
				delete(mc.wasFailed, m.Name)
				mc.dirty = true
			}
		case gossipapi.StatusFailed:
			if _, ok := mc.aliveSince[m.Name]; ok {
				delete(mc.aliveSince, m.Name)
				mc.dirty = true
			}
			if _, ok := mc.failedSince[m.Name]; !ok {
				mc.failedSince[m.Name] = now
				mc.dirty = true
			}
			if !mc.wasFailed[m.Name] {
				mc.wasFailed[m.Name] = true
				mc.dirty = true
			}
			n.Eligible = now.Sub(mc.failedSince[m.Name]) < after
		default: // left: gone on purpose
			n.Eligible = false
		}
		if m.Name == self {
			seenSelf = true
			n.Eligible = true
		}
		if v.schedule[m.Name] != appapi.Schedulable {
			n.Eligible = false
		}
		if d := v.declined[m.Name]; len(d) > 0 {
			n.Declined = map[string]bool{}
			for k := range d {
				n.Declined[k] = true
			}
		}
		out = append(out, n)
	}
	if !seenSelf {
		out = append(out, placement.Node{Name: self, Eligible: v.schedule[self] == appapi.Schedulable, Declined: boolSet(v.declined[self])})
	}
	return out
}

func boolSet(m map[string]string) map[string]bool {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]bool, len(m))
	for k := range m {
		out[k] = true
	}
	return out
}

func describe(err error) string {
	if err == nil {
		return ""
	}
	return fmt.Sprint(err)
}
